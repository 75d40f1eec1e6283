//! Kubernetes at scale: the in-repo API server emulator (`tests/support/apiserver.py`, on loopback) starts with N
//! LoadBalancer Services and their EndpointSlices (3 ready endpoints each); the controller (the one edgelbd runs,
//! holding the Lease, so it also writes every Service's status) syncs them into a store. Printed: the time from the
//! controller's start until every Service is programmed in the dataplane snapshot, then a burst of 1 000 endpoint
//! changes (one endpoint replaced in 1 000 slices, sent 16 at a time) and the time from its first request until all
//! are in force, and resident memory.
//!
//! `cargo bench -p edgelb-perf --bench k8s_scale` (`-- --services N` to change the count); `cargo test --benches`
//! runs 200 Services and 50 changes.

use edgelb_controlplane::k8s::controller::{run, LeaseSettings};
use edgelb_controlplane::k8s::{Pool, Settings};
use edgelb_controlplane::store::Store;
use edgelb_dataplane::model::Mode;
use edgelb_dataplane::snapshot::{addr_from16, DataplaneConfig};
use edgelb_perf::{rss_kib, Scenario};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Endpoint `j` of Service `i` (inside the scenario's backend subnet 198.18.2.0/23, below .210 of the second /24).
fn endpoint(i: usize, j: usize) -> Ipv4Addr {
    let n = (i * 3 + j) % 400;
    Ipv4Addr::new(198, 18, 2 + (n / 200) as u8, (n % 200) as u8 + 10)
}

/// The replacement endpoint of a changed Service: 198.18.3.210-249, used by no Service before.
fn replacement(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 3, 210 + (i % 40) as u8)
}

fn slice(i: usize, addrs: &[Ipv4Addr]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("s{i}-abc"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": format!("s{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": addrs.iter().map(|a| json!({"addresses": [a.to_string()], "conditions": {"ready": true}})).collect::<Vec<_>>(),
    })
}

fn objects(n: usize) -> Value {
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        out.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("s{i}"), "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
        }));
        out.push(slice(i, &[endpoint(i, 0), endpoint(i, 1), endpoint(i, 2)]));
    }
    Value::Array(out)
}

/// The emulator, killed on drop.
struct Emulator(Child);

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Services of the snapshot with a backend in `198.18.3.210-249` (the replacements).
fn replaced(c: &DataplaneConfig) -> usize {
    c.services
        .iter()
        .filter(|s| {
            s.backend_ids.iter().filter_map(|&id| c.backend(id)).any(|b| {
                matches!(addr_from16(b.addr, b.v4), IpAddr::V4(a) if a.octets()[2] == 3 && a.octets()[3] >= 210 && a.octets()[3] < 250)
            })
        })
        .count()
}

/// Wait (bounded) until `done` holds for the store's snapshot; the time it took.
async fn until(store: &Store, limit: Duration, done: impl Fn(&DataplaneConfig) -> bool) -> Duration {
    let t = Instant::now();
    while !done(&store.snapshot()) {
        assert!(t.elapsed() < limit, "not done in {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    t.elapsed()
}

/// The API server emulator seeded with `n` Services and their slices, on a port of its own.
fn start_emulator(n: usize) -> (Emulator, u16) {
    let dir = std::env::temp_dir().join(format!("edgelb-k8s-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let seed = dir.join("seed.json");
    std::fs::write(&seed, objects(n).to_string()).expect("seed file");
    let port = 18_600 + (std::process::id() % 1000) as u16;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/apiserver.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .args(["--history", "100000", "--seed"])
        .arg(&seed)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs the emulator");
    let mut ready = String::new();
    let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut ready);
    let emu = Emulator(child);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(ready.trim(), "ready", "the emulator did not start");

    (emu, port)
}

/// Wait (bounded) until every one of the `n` Services has its status written; the time it took.
async fn all_statuses_written(services: &Api<k8s_openapi::api::core::v1::Service>, n: usize) -> Duration {
    let t_status = Instant::now();
    loop {
        let list = services.list(&Default::default()).await.expect("list Services");
        let written = list.items.iter().filter(|s| {
            s.status
                .as_ref()
                .and_then(|st| st.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .is_some_and(|i| !i.is_empty())
        });
        if written.count() >= n {
            break;
        }
        assert!(t_status.elapsed() < Duration::from_secs(600), "statuses not written in 600 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    t_status.elapsed()
}

/// One endpoint of `changes` Services replaced, 16 requests in flight; the time the emulator took to answer all.
async fn send_burst(slices: &Api<EndpointSlice>, n: usize, changes: usize) -> Duration {
    let t1 = Instant::now();
    let sent: Vec<Result<EndpointSlice, kube::Error>> = futures::stream::iter(0..changes)
        .map(|k| {
            let i = k * (n / changes).max(1);
            let body = slice(i, &[endpoint(i, 0), endpoint(i, 1), replacement(i)]);
            let api = slices.clone();
            async move { api.patch(&format!("s{i}-abc"), &PatchParams::default(), &Patch::Merge(&body)).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let sending = t1.elapsed();
    let failed = sent.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 0, "endpoint changes refused by the emulator");
    sending
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let n: usize = args
        .iter()
        .position(|a| a == "--services")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 10_000 } else { 200 });
    let changes = if bench { 1000 } else { 50 }.min(n);
    let (_emu, port) = start_emulator(n);

    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let sc = Scenario { mode: Mode::Nat, v6: false, backends: 400, size: 64 };
    let rss0 = rss_kib();
    let store = Store::new(sc.appliance()).expect("appliance model");
    let settings = Settings {
        class: "edgelb".into(),
        classless: true,
        default_mode: Mode::Nat,
        pools: vec![Pool {
            name: "bench".into(),
            ranges: vec![("198.19.0.1".parse().unwrap(), "198.19.255.254".parse().unwrap())],
            namespaces: Vec::new(),
            selector: Default::default(),
            auto_assign: true,
        }],
    };
    let lease =
        LeaseSettings { namespace: "default".into(), name: "edgelb".into(), identity: "bench".into(), duration_s: 15 };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let t0 = Instant::now();
    let controller = tokio::spawn(run(client.clone(), store.clone(), settings, lease, Default::default(), stop_rx));
    let programmed = until(&store, Duration::from_secs(300), |c| c.services.len() >= n).await;
    let rss_programmed = rss_kib();

    // Steady state before the burst: every Service's status written by the Lease holder.
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), "default");
    let statuses = all_statuses_written(&services, n).await + programmed;

    // The burst: one endpoint of `changes` Services replaced, 16 requests in flight.
    let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
    let sending = send_burst(&slices, n, changes).await;
    let after_last = until(&store, Duration::from_secs(120), |c| replaced(c) >= changes).await;
    let in_force = after_last + sending;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    let mib = |k: u64| k as f64 / 1024.0;
    println!("Kubernetes at scale: {n} LoadBalancer Services with EndpointSlices (3 endpoints), emulator on loopback");
    println!(
        "from the controller's start to all {n} programmed: {:.3} s (the first list, allocation, sync, the store's build; \
         the Lease holder's status writes run beside it)",
        programmed.as_secs_f64()
    );
    println!(
        "every Service's status written by the Lease holder {:.3} s after the controller's start",
        statuses.as_secs_f64()
    );
    println!(
        "{changes} endpoint changes (16 in flight): the emulator took them in {:.3} s; all in force {:.3} s after the \
         first was sent, {:.3} s after the last was answered",
        sending.as_secs_f64(),
        in_force.as_secs_f64(),
        after_last.as_secs_f64()
    );
    println!(
        "resident memory: {:.1} MiB before the store, {:.1} MiB with {n} Services programmed; total {:.1} s",
        mib(rss0),
        mib(rss_programmed),
        t0.elapsed().as_secs_f64()
    );
}
