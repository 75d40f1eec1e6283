//! Dashboards and alerts against real tools: `promtool check rules` and `promtool test rules` on
//! `configs/prometheus/`; then a real Prometheus (Debian `prometheus`) scraping edgelbd in a lab (root, namespaces)
//! with a service and traffic, a BGP peer with BFD (BIRD), a VRRP router and the Kubernetes API emulator, so that
//! every family the dashboard reads exists. Every expression of the Grafana dashboard evaluates without error and
//! returns series; every rule expression evaluates without error.

use edgelb_testkit::daemon::Edgelbd;
use edgelb_testkit::kube::{emulator, kubeconfig};
use edgelb_testkit::netns::{in_netns, require_root, Lab, Reaped};
use edgelb_testkit::peers::Bird;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EDGELBD: &str = env!("CARGO_BIN_EXE_edgelbd");
const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/prometheus/edgelb.rules.yml");
const RULE_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/prometheus/edgelb.rules.test.yml");
const DASHBOARD: &str = include_str!("../configs/grafana/edgelb-dashboard.json");
const APISERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/apiserver.py");

fn promtool(args: &[&str]) -> (bool, String) {
    let o = Command::new("promtool").args(args).output().expect("promtool (Debian prometheus)");
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn the_rules_check_and_their_unit_tests_pass() {
    let (ok, out) = promtool(&["check", "rules", RULES]);
    assert!(ok && out.contains("SUCCESS"), "{out}");
    let (ok, out) = promtool(&["test", "rules", RULE_TESTS]);
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

/// Every PromQL expression of the dashboard.
fn dashboard_exprs() -> Vec<String> {
    let d: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    let exprs: Vec<String> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 15, "the dashboard has its panels: {exprs:?}");
    exprs
}

/// Every expression of the rules file (recording first), read from its YAML by line (no YAML crate here).
fn rule_exprs() -> Vec<(bool, String)> {
    let text = std::fs::read_to_string(RULES).unwrap();
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    let mut recording = false;
    while let Some(l) = lines.next() {
        let t = l.trim();
        if t.starts_with("- record:") {
            recording = true;
        } else if t.starts_with("- alert:") {
            recording = false;
        }
        if let Some(e) = t.strip_prefix("expr:") {
            let e = e.trim();
            if e == "|" {
                let mut block = String::new();
                while lines.peek().is_some_and(|n| n.starts_with("          ")) {
                    block.push_str(lines.next().unwrap().trim());
                    block.push(' ');
                }
                out.push((recording, block.trim().to_string()));
            } else {
                out.push((recording, e.to_string()));
            }
        }
    }
    out
}

/// Prometheus's answer to an instant query, from inside namespace `ns`.
fn query(ns: &str, expr: &str) -> serde_json::Value {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sG", "--max-time", "5", "http://127.0.0.1:19090/api/v1/query"])
        .args(["--data-urlencode", &format!("query={expr}")])
        .output()
        .unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or_default()
}

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: LoadBalancer
  loadBalancerClass: edgelb.io/lb
  ports:
  - name: http
    port: 80
    protocol: TCP
"#;

#[test]
fn a_real_prometheus_evaluates_every_dashboard_and_rule_expression() {
    require_root();
    let mut lab = Lab::new("prom");
    let (cl, lb, be, rt) = (lab.ns("cl"), lab.ns("lb"), lab.ns("be"), lab.ns("rt"));
    lab.veth(&cl, "cl0", &lb, "lb0");
    lab.veth(&lb, "lb1", &be, "be0");
    lab.veth(&lb, "up0", &rt, "up1");
    lab.ip(&cl, "addr add 198.18.0.10/24 dev cl0");
    lab.ip(&cl, "route add 198.19.0.0/24 dev cl0");
    lab.ip(&be, "addr add 198.18.2.10/24 dev be0");
    lab.ip(&be, "route add default via 198.18.2.1 dev be0");
    lab.ip(&lb, "addr add 198.18.255.1/30 dev up0");
    lab.ip(&rt, "addr add 198.18.255.2/30 dev up1");
    let dir = std::env::temp_dir().join(format!("edgelb-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bird = Bird::start(
        &rt,
        &dir.join("bird"),
        "router id 198.18.255.2;\nprotocol device { }\nprotocol bfd {\n  interface \"up1\" { min rx interval 100 ms; \
         min tx interval 100 ms; };\n}\nprotocol bgp edge {\n  local 198.18.255.2 as 65000;\n  \
         neighbor 198.18.255.1 as 65001;\n  passive on;\n  hold time 9;\n  bfd on;\n  \
         ipv4 { import all; export none; };\n}\n",
    );
    let server = in_netns(&be, || TcpListener::bind("198.18.2.10:8080").unwrap());
    server.set_nonblocking(true).unwrap();
    let _emu = emulator(APISERVER, &lb, 18084, None);
    let kc = dir.join("kubeconfig");
    std::fs::write(&kc, kubeconfig("http://127.0.0.1:18084")).unwrap();
    let cfg = dir.join("edgelb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[workers]\npolling = \"adaptive\"\n\n\
             [[port]]\nname = \"lb0\"\ndriver = \"afpacket\"\naddresses = [\"198.18.0.1/24\"]\nframes = 256\n\n\
             [[port]]\nname = \"lb1\"\ndriver = \"afpacket\"\naddresses = [\"198.18.2.1/24\"]\nframes = 256\n\n\
             [api]\nenabled = false\n\n[metrics]\nlisten = \"127.0.0.1:19100\"\n\n\
             [bgp]\nlocal_as = 65001\nrouter_id = \"198.18.255.1\"\n\n\
             [[bgp.peer]]\nname = \"tor\"\naddress = \"198.18.255.2\"\nremote_as = 65000\nhold_time = 9\n\
             connect_retry = 1\nbfd = {{ min_tx_ms = 100, min_rx_ms = 100 }}\n\n\
             [kubernetes]\nkubeconfig = \"{}\"\nidentity = \"edge-1\"\nlease_duration = 5\n\n\
             [[kubernetes.pool]]\nname = \"lab\"\naddresses = [\"198.19.1.0/28\"]\n\n\
             [[vrrp]]\nport = \"lb0\"\nvrid = 51\nadvert_interval_ms = 100\nvips = [\"198.19.0.1\"]\n\n\
             [[service]]\nvip = \"198.19.0.1\"\nprotocol = \"tcp\"\nport = 80\nmode = \"nat\"\n\n\
             [[service.backend]]\naddress = \"198.18.2.10\"\nport = 8080\n",
            kc.display()
        ),
    )
    .unwrap();
    let _d = Edgelbd::new(EDGELBD, &lb, &cfg).spawn(&dir.join("edgelbd.log"));
    let log = || std::fs::read_to_string(dir.join("edgelbd.log")).unwrap_or_default();
    let manifest = dir.join("svc.yaml");
    std::fs::write(&manifest, SERVICE).unwrap();
    let applied = Command::new("ip")
        .args(["netns", "exec", &lb, "kubectl", "--kubeconfig"])
        .arg(&kc)
        .args(["apply", "--validate=false", "-f"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    // Prometheus scrapes edgelbd every second and evaluates the rules every second.
    let prom_cfg = dir.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {RULES}\n\
             scrape_configs:\n  - job_name: edgelb\n    static_configs:\n      - targets: ['127.0.0.1:19100']\n"
        ),
    )
    .unwrap();
    let _prom = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &lb, "prometheus"])
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .args(["--web.listen-address=127.0.0.1:19090"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (Debian prometheus)"),
    );
    // Traffic: connections through the VIP (flows, service and backend counters) and UDP to a port without a
    // service (drops by reason), for a few seconds while Prometheus scrapes.
    let vip: SocketAddr = "198.19.0.1:80".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = 0;
    let exprs = dashboard_exprs();
    let rules = rule_exprs();
    let missing = loop {
        let _ = server.accept().map(|(mut c, _)| c.write_all(b"be\n"));
        if in_netns(&cl, move || TcpStream::connect_timeout(&vip, Duration::from_millis(300)).is_ok()) {
            done += 1;
        }
        in_netns(&cl, || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            let _ = s.send_to(b"x", "198.19.0.1:9");
        });
        let missing: Vec<String> = exprs
            .iter()
            .filter(|e| {
                let v = query(&lb, e);
                v["status"] != "success" || v["data"]["result"].as_array().is_none_or(|r| r.is_empty())
            })
            .cloned()
            .collect();
        if missing.is_empty() && done >= 5 {
            break missing;
        }
        if Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        missing.is_empty(),
        "dashboard expressions without series after 30 s: {missing:#?}\nedgelbd:\n{}\nBIRD: {}",
        log(),
        bird.show("show bfd sessions")
    );
    // The worker polls adaptively here: between the probes it slept, and busy, idle and asleep add up.
    let slept = query(&lb, "edgelb_worker_sleep_seconds_total > 0");
    assert!(slept["data"]["result"].as_array().is_some_and(|r| !r.is_empty()), "an adaptive worker sleeps: {slept}");
    for (recording, e) in &rules {
        let v = query(&lb, e);
        assert_eq!(v["status"], "success", "{e}: {v}");
        if *recording {
            assert!(v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()), "recording rule {e}: {v}");
        }
    }
    println!(
        "{} dashboard expressions and {} rule expressions evaluated by Prometheus; {done} connections through the VIP",
        exprs.len(),
        rules.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
