//! The management API end to end, against a running `edgelbd` (AF_PACKET port in its own network namespace, API on
//! that namespace's loopback): Python's `grpcio` (reflection, health, dynamic messages) as a client nobody here wrote,
//! and `edgelbctl` for every command, including errors and a change visible to the workers as soon as it returns;
//! `/metrics` scraped with curl and parsed by the Prometheus Python parser.

use edgelb_testkit::daemon::Edgelbd;
use edgelb_testkit::netns::{require_root, Lab};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EDGELBD: &str = env!("CARGO_BIN_EXE_edgelbd");
const EDGELBCTL: &str = env!("CARGO_BIN_EXE_edgelbctl");
const API: &str = "127.0.0.1:50071";

fn python() -> PathBuf {
    let venv = std::env::var("EDGELB_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/venv"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} missing: scripts/test.sh makes the venv with grpcio, grpcio-reflection and grpcio-health-checking",
        py.display()
    );
    py
}

fn ctl(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns, EDGELBCTL, "--addr", &format!("http://{API}")])
        .args(args)
        .output()
        .unwrap()
}

fn ok(ns: &str, args: &[&str]) -> String {
    let o = ctl(ns, args);
    assert!(o.status.success(), "edgelbctl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(ns: &str, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--output", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(ns, &a)).unwrap()
}

#[test]
fn api_end_to_end_with_grpcio_and_edgelbctl() {
    require_root();
    let mut lab = Lab::new("api");
    let (cl, lb) = (lab.ns("cl"), lab.ns("lb"));
    lab.veth(&cl, "cl0", &lb, "lb0");
    let dir = std::env::temp_dir().join(format!("edgelb-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("api.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[[port]]
name = "lb0"
driver = "afpacket"
addresses = ["198.18.0.1/24"]
frames = 256

[api]
listen = "{API}"

[[neighbor]]
address = "198.18.0.10"
mac = "02:00:00:00:00:0a"

[[service]]
vip = "198.19.0.1"
protocol = "tcp"
port = 80
mode = "nat"

[[service.backend]]
address = "198.18.0.10"
port = 8080
"#
        ),
    )
    .unwrap();
    let log = dir.join("edgelbd.log");
    let mut daemon = Edgelbd::new(EDGELBD, &lb, &cfg).spawn(&log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctl(&lb, &["service", "list"]).status.success() {
        assert!(daemon.0.try_wait().unwrap().is_none(), "edgelbd exited:\n{}", read_log());
        assert!(Instant::now() < deadline, "API never answered:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // The Python client.
    let py = Command::new("ip")
        .args(["netns", "exec", &lb])
        .arg(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/api_client.py"))
        .arg(API)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&py.stdout);
    assert!(py.status.success(), "python grpcio client failed:\n{out}\n{}", String::from_utf8_lossy(&py.stderr));
    assert!(out.contains("all checks passed"), "{out}");

    // edgelbctl: list (the file's service and the Python client's two).
    let list = json(&lb, &["service", "list"]);
    let names: Vec<&str> =
        list["services"].as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(names, ["198.19.0.1:80/tcp", "198.19.7.1:80/tcp", "198.19.7.1:443/tcp"], "{list}");
    let v = list["version"].as_u64().unwrap();

    // apply -f with the config file's own [[service]] syntax; dry run first.
    let file = dir.join("svc.toml");
    std::fs::write(
        &file,
        "[[service]]\nvip = \"198.19.0.2\"\nprotocol = \"udp\"\nport = 53\nmode = \"dsr_l2\"\n\n[[service.backend]]\naddress = \"198.18.0.10\"\nport = 53\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let dry = json(&lb, &["service", "apply", "-f", f, "--dry-run"]);
    assert_eq!((dry["applied"].as_bool(), dry["version"].as_u64()), (Some(false), Some(v + 1)), "{dry}");
    let r = json(&lb, &["service", "apply", "-f", f, "--expected-version", &v.to_string()]);
    assert_eq!((r["applied"].as_bool(), r["version"].as_u64()), (Some(true), Some(v + 1)), "{r}");
    // Visible to the workers when the call has returned: the owning worker answers for the new VIP at once.
    let q = json(&lb, &["flow", "query", "198.18.0.50:40000", "198.19.0.2:53/udp"]);
    assert_eq!(
        (q["matched"].as_bool(), q["backend"].as_str(), q["tracked"].as_bool()),
        (Some(true), Some("198.18.0.10"), Some(false)),
        "{q}"
    );
    // A stale version is refused (exit 1, FailedPrecondition).
    let o = ctl(&lb, &["service", "apply", "-f", f, "--expected-version", &v.to_string()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("FailedPrecondition"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A bad file names the field and line, and nothing is sent.
    std::fs::write(&file, "[[service]]\nvip = \"198.19.0.300\"\nprotocol = \"tcp\"\nport = 80\nmode = \"nat\"\n")
        .unwrap();
    let o = ctl(&lb, &["service", "apply", "-f", f]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("line 2: service[0].vip"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Backends: add, weight, drain, remove; each visible in the list.
    ok(&lb, &["backend", "add", "198.19.0.1:80/tcp", "198.18.0.11:8080", "--weight", "3"]);
    ok(&lb, &["backend", "weight", "198.19.0.1:80/tcp", "198.18.0.11:8080", "5"]);
    ok(&lb, &["backend", "drain", "198.19.0.1:80/tcp", "198.18.0.10:8080"]);
    let list = json(&lb, &["service", "list"]);
    let s = list["services"].as_array().unwrap().iter().find(|s| s["service"] == "198.19.0.1:80/tcp").unwrap();
    let b: Vec<(String, u64, String)> = s["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                b["weight"].as_u64().unwrap(),
                b["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(b, [("198.18.0.10".into(), 1, "draining".into()), ("198.18.0.11".into(), 5, "active".into())]);
    // A draining backend takes no new flows: the query says the new backend.
    let q = json(&lb, &["flow", "query", "198.18.0.50:40001", "198.19.0.1:80/tcp"]);
    assert_eq!(q["backend"], "198.18.0.11", "{q}");
    ok(&lb, &["backend", "remove", "198.19.0.1:80/tcp", "198.18.0.10:8080"]);
    let o = ctl(&lb, &["backend", "remove", "198.19.0.1:80/tcp", "198.18.0.10:8080"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("NotFound"), "{}", String::from_utf8_lossy(&o.stderr));
    ok(&lb, &["service", "delete", "198.19.0.2:53/udp"]);

    // Stats: the ipvsadm-like table names every service and its backends.
    let t = ok(&lb, &["stats"]);
    assert!(
        t.contains("LocalAddress:Port") && t.contains("198.19.7.1:443") && t.contains("-> 198.18.0.11:8080"),
        "{t}"
    );
    let st = json(&lb, &["stats"]);
    assert!(st["workers"].as_array().is_some_and(|w| !w.is_empty()), "{st}");
    // Every counter the dataplane keeps reaches the operator, by its metric name.
    let names: Vec<&str> = edgelb_dataplane::pipeline::Counters::INFO.iter().map(|c| c.name).collect();
    for n in &names {
        assert!(st["counters"][n].is_u64(), "stats has no counter {n}: {st}");
    }
    assert!(t.contains("counters: ") && t.contains("handoff_packets ") && t.contains("flows_rescheduled "), "{t}");

    // Tracked flows: SYNs from a client namespace (the backend's MAC answers nobody, so they stay half-open).
    lab.ip(&cl, "addr add 198.18.0.50/24 dev cl0");
    lab.ip(&cl, "route add 198.19.0.0/24 dev cl0");
    edgelb_testkit::netns::in_netns(&cl, || {
        for _ in 0..5 {
            let _ = std::net::TcpStream::connect_timeout(&"198.19.0.1:80".parse().unwrap(), Duration::from_millis(300));
        }
    });
    let flows = json(&lb, &["flow", "list", "198.19.0.1:80/tcp"]);
    let flows = flows.as_array().unwrap();
    assert!(flows.len() >= 5, "{flows:?}");
    // The stats count them as active on their backend (workers publish every 100 ms).
    std::thread::sleep(Duration::from_millis(300));
    let st = json(&lb, &["stats"]);
    let active = st["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == "198.18.0.11" && b["port"] == 8080 && b["service"] == "198.19.0.1:80/tcp")
        .and_then(|b| b["active_flows"].as_u64());
    assert!(active.is_some_and(|n| n >= 5), "active flows on 198.18.0.11:8080: {active:?}\n{st}");
    assert!(
        flows.iter().all(|f| f["client"].as_str().unwrap().starts_with("198.18.0.50:")
            && f["backend"] == "198.18.0.11:8080"
            && f["state"] == "syn"),
        "{flows:?}"
    );
    let two = json(&lb, &["flow", "list", "--limit", "2"]);
    assert_eq!(two.as_array().unwrap().len(), 2, "{two}");
    let none = json(&lb, &["flow", "list", "198.19.7.1:80/tcp"]);
    assert_eq!(none.as_array().unwrap().len(), 0, "{none}");
    let by_backend = json(&lb, &["flow", "list", "198.19.0.1:80/tcp", "--backend", "198.18.0.11:8080"]);
    assert_eq!(by_backend.as_array().unwrap().len(), flows.len());
    let q = json(&lb, &["flow", "query", flows[0]["client"].as_str().unwrap(), "198.19.0.1:80/tcp"]);
    assert_eq!((q["tracked"].as_bool(), q["backend"].as_str()), (Some(true), Some("198.18.0.11")), "{q}");
    assert_eq!(q["fresh_backend"].as_str(), Some("198.18.0.11"), "one backend: Maglev without state picks it too: {q}");
    println!("{}", ok(&lb, &["flow", "list"]));

    // Ports: the file's one port, named, with the SYNs counted.
    let ports = json(&lb, &["port", "list"]);
    let p = &ports.as_array().unwrap()[0];
    assert_eq!(
        (p["name"].as_str(), p["driver"].as_str(), p["addresses"][0].as_str()),
        (Some("lb0"), Some("afpacket"), Some("198.18.0.1/24")),
        "{ports}"
    );
    assert!(p["rx_packets"].as_u64().unwrap() >= 5, "{ports}");

    // /metrics, parsed by the Prometheus project's Python parser.
    let version = json(&lb, &["service", "list"])["version"].as_u64().unwrap();
    let m = Command::new("ip")
        .args(["netns", "exec", &lb, "curl", "-sS", "--max-time", "5", "http://127.0.0.1:9917/metrics"])
        .output()
        .unwrap();
    assert!(m.status.success(), "curl /metrics: {}", String::from_utf8_lossy(&m.stderr));
    let mut check = Command::new(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/metrics_check.py"))
        .arg(version.to_string())
        .args(&names)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), &m.stdout).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "metrics check: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&m.stdout)
    );

    // Events: a watcher sees the next change.
    let mut watcher = Command::new("ip")
        .args(["netns", "exec", &lb, EDGELBCTL, "--addr", &format!("http://{API}"), "events"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    ok(&lb, &["backend", "add", "198.19.0.1:80/tcp", "198.18.0.12:8080"]);
    std::thread::sleep(Duration::from_millis(300));
    let _ = watcher.kill();
    let mut ev = String::new();
    watcher.stdout.take().unwrap().read_to_string(&mut ev).unwrap();
    let _ = watcher.wait();
    assert!(ev.contains("\"event\":\"config_applied\"") && ev.contains("\"source\":\"api\""), "events: {ev:?}");

    // Usage errors exit 2.
    assert_eq!(ctl(&lb, &["service", "delete", "nonsense"]).status.code(), Some(2));
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
