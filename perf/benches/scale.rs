//! The control plane at scale: 10 000 NAT services of 3 backends each applied from empty through the [`Store`] (what
//! the gRPC API and Kubernetes sync call), then 1 000 single-service changes — a backend added, one drained, one
//! removed, in turn, each to a different service — with a real worker polling an in-memory port. Printed per step:
//! the call's time (validate, build, publish) and the time until every worker uses the new snapshot, p50/p99/max over
//! the changes, and the process's resident memory before and after (`VmRSS`).
//!
//! `cargo bench -p edgelb-perf --bench scale` (add `-- --services N` to change the count); `cargo test --benches`
//! runs 300 services and 30 changes to check that it works.

use edgelb_controlplane::store::{Batch, Store};
use edgelb_dataplane::model::{BackendSpec, BackendState, Mode, ServiceSpec};
use edgelb_dataplane::pipeline::TableSizes;
use edgelb_dataplane::port::mem;
use edgelb_dataplane::worker::{Polling, WorkerSetup, WorkerView, Workers};
use edgelb_perf::{rss_kib, Scenario};
use hdrhistogram::Histogram;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// Wait (bounded) until every worker uses `generation`; the time it took.
fn settle(view: &WorkerView, generation: u64) -> Duration {
    let t = Instant::now();
    while !view.all_use(generation) {
        assert!(t.elapsed() < Duration::from_secs(30), "workers did not take generation {generation} in 30 s");
        std::thread::yield_now();
    }
    t.elapsed()
}

#[derive(Clone, Copy, Debug)]
enum Change {
    Add,
    Drain,
    Remove,
}

/// Change `s` (one service of 3 or 4 backends): add a fourth backend (from 198.18.3.210-249, outside the
/// scenario's backend addresses), drain the first (or make it active again),
/// remove the fourth.
fn change(s: &mut ServiceSpec, c: Change, i: usize) {
    match c {
        Change::Add => s.backends.push(BackendSpec {
            addr: IpAddr::V4(Ipv4Addr::new(198, 18, 3, 210 + (i % 40) as u8)),
            port: 8080,
            weight: 1,
            state: BackendState::Active,
        }),
        Change::Drain => {
            let b = &mut s.backends[0];
            b.state = if b.state == BackendState::Active { BackendState::Draining } else { BackendState::Active };
        }
        Change::Remove => {
            s.backends.pop();
        }
    }
}

struct Figures {
    call: Histogram<u64>,
    lag: Histogram<u64>,
}

impl Figures {
    fn new() -> Self {
        let h = || Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).expect("histogram bounds");
        Figures { call: h(), lag: h() }
    }

    fn row(&self, what: &str) {
        let ms = |v: u64| v as f64 / 1e6;
        let q = |h: &Histogram<u64>, x: f64| ms(h.value_at_quantile(x));
        println!(
            "{what:<28} {:>6} | call p50 {:>8.3} ms p99 {:>8.3} ms max {:>8.3} ms | until all workers use it p50 {:>7.3} ms p99 {:>7.3} ms",
            self.call.len(),
            q(&self.call, 0.5),
            q(&self.call, 0.99),
            ms(self.call.max()),
            q(&self.lag, 0.5),
            q(&self.lag, 0.99),
        );
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().collect();
    let services = args
        .iter()
        .position(|a| a == "--services")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 10_000 } else { 300 });
    let changes = if bench { 1000 } else { 30 };
    let sc = Scenario { mode: Mode::Nat, v6: false, backends: 400, size: 64 };
    let rss0 = rss_kib();
    let store = Store::new(sc.appliance()).expect("the appliance model is valid");
    let (port, _peer) = mem::pair("m", 64);
    let sizes = TableSizes { flows_v4: 4096, flows_v6: 1024, affinity: 1024, fragments: 1024 };
    let core = core_affinity::get_core_ids().unwrap_or_default().last().map(|c| c.id);
    let workers = Workers::spawn(
        vec![WorkerSetup { worker: 0, core, ports: vec![port], sizes, polling: Polling::Busy, new_flow_limit: 0 }],
        store.handle(),
        256,
        256,
    );
    let view = workers.view();
    store.attach_workers(view.clone());
    let rss_empty = rss_kib();

    let mut specs: Vec<ServiceSpec> = (0..services).map(|i| sc.service(i, 3)).collect();
    let t0 = Instant::now();
    let a = store.apply(&Batch { upserts: specs.clone(), ..Default::default() }, "api").expect("apply all");
    let call = t0.elapsed();
    let lag = settle(&view, a.generation);
    let rss_full = rss_kib();
    let table_slots: usize = store.snapshot().services.iter().map(|s| s.maglev.size()).sum();

    let mut by_kind = [Figures::new(), Figures::new(), Figures::new()];
    let mut all = Figures::new();
    let kinds = [Change::Add, Change::Drain, Change::Remove];
    let mut moved_rows = 0usize;
    for i in 0..changes {
        let k = i % 3;
        // A different service for each add/drain/remove triple, spread over the set.
        let si = (i / 3 * 7919) % services;
        change(&mut specs[si], kinds[k], i);
        let batch = Batch { upserts: vec![specs[si].clone()], ..Default::default() };
        let t = Instant::now();
        let a = store.apply(&batch, "api").expect("apply one");
        let call = t.elapsed().as_nanos() as u64;
        let lag = settle(&view, a.generation).as_nanos().max(1) as u64;
        moved_rows += a.moved.len();
        for f in [&mut by_kind[k], &mut all] {
            let _ = f.call.record(call.max(1));
            let _ = f.lag.record(lag);
        }
    }
    let _ = workers.stop();
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "control plane at scale: {services} NAT services of 3 backends, one worker; Maglev tables {} slots in all \
         ({:.1} per service)",
        table_slots,
        table_slots as f64 / services as f64
    );
    println!(
        "apply {services} services from empty: call {:.1} ms, until all workers use it {:.3} ms",
        call.as_secs_f64() * 1e3,
        lag.as_secs_f64() * 1e3
    );
    for (k, f) in by_kind.iter().enumerate() {
        f.row(&format!("one backend {:?}", kinds[k]).to_lowercase());
    }
    all.row("every change");
    println!(
        "slots-moved rows reported per change: {:.2} (only the services whose table was rebuilt)",
        moved_rows as f64 / changes as f64
    );
    println!(
        "resident memory: {:.1} MiB at start, {:.1} MiB with the store and worker, {:.1} MiB with {services} services \
         ({:.1} KiB per service)",
        mib(rss0),
        mib(rss_empty),
        mib(rss_full),
        (rss_full.saturating_sub(rss_empty)) as f64 / services as f64
    );
}
