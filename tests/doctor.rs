//! `edgelbctl doctor` against a running edgelbd (root, network namespaces): each failure the lab causes is named
//! by the layer it belongs to, in both address families — a backend whose health check fails ("backend down"), a
//! BGP peer nobody answers ("peer down"), a VIP without backends, a flow table filled by a burst of UDP flows
//! ("flow table full"), a static neighbour entry whose MAC is not the one the host answers ARP/ND from ("wrong
//! MAC") — while a healthy VIP passes every layer but the announcement, and the drops of the last minute name the
//! reason the lab provoked. The exit code is 3 when a layer fails.

use edgelb_testkit::daemon::Edgelbd;
use edgelb_testkit::netns::{in_netns, mac_text, require_root, Lab};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

const EDGELBD: &str = env!("CARGO_BIN_EXE_edgelbd");
const EDGELBCTL: &str = env!("CARGO_BIN_EXE_edgelbctl");
const API: &str = "http://127.0.0.1:50083";

/// One VIP's findings: layer → (verdict, summary, evidence).
type Findings = Vec<(String, String, String, Vec<String>)>;

fn doctor(lb: &str, vip: &str) -> (i32, Findings, String) {
    let o = Command::new("ip")
        .args(["netns", "exec", lb, EDGELBCTL, "--addr", API, "-o", "json", "doctor", vip])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("doctor {vip}: {e}: {}", String::from_utf8_lossy(&o.stderr)));
    let text = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_string();
    let findings = v["vips"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let ev = f["evidence"].as_array().unwrap().iter().map(text).collect();
            (text(&f["layer"]), text(&f["verdict"]), text(&f["summary"]), ev)
        })
        .collect();
    (o.status.code().unwrap_or(-1), findings, String::from_utf8_lossy(&o.stdout).into_owned())
}

fn layer<'a>(f: &'a Findings, name: &str) -> &'a (String, String, String, Vec<String>) {
    f.iter().find(|x| x.0 == name).unwrap_or_else(|| panic!("no {name} layer in {f:?}"))
}

/// The human form, for the log (and the README).
fn doctor_text(lb: &str, vip: &str) -> String {
    let o = Command::new("ip").args(["netns", "exec", lb, EDGELBCTL, "--addr", API, "doctor", vip]).output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn the_doctor_names_each_failure_in_both_families() {
    require_root();
    let mut lab = Lab::new("doct");
    let (lb, seg, rt) = (lab.ns("lb"), lab.ns("seg"), lab.ns("rt"));
    lab.veth(&lb, "lb0", &seg, "s0");
    lab.veth(&lb, "up0", &rt, "up1");
    // The segment: the client (.10) and the backends (.20, ::21) on one interface, so one MAC answers for all.
    for a in ["198.18.0.10/24", "198.18.0.20/24"] {
        lab.ip(&seg, &format!("addr add {a} dev s0"));
    }
    for a in ["2001:db8::10/64", "2001:db8::21/64"] {
        lab.ip(&seg, &format!("addr add {a} dev s0 nodad"));
    }
    lab.ip(&seg, "route add 198.19.0.0/16 via 198.18.0.1");
    lab.ip(&seg, "-6 route add 2001:db8:100::/48 via 2001:db8::1");
    lab.ip(&rt, "addr add 198.18.255.2/30 dev up1");
    lab.ip(&lb, "addr add 198.18.255.1/30 dev up0");
    let real = lab.mac(&seg, "s0");
    let dir = std::env::temp_dir().join(format!("edgelb-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    lab.own_file(dir.clone());
    let cfg = dir.join("edgelbd.toml");
    std::fs::write(
        &cfg,
        r#"[[port]]
name = "lb0"
driver = "afpacket"
addresses = ["198.18.0.1/24", "2001:db8::1/64"]
frames = 256

[workers]
flows_v4 = 1024

[api]
listen = "127.0.0.1:50083"

[bgp]
local_as = 65001
router_id = "198.18.255.1"

[[bgp.peer]]
name = "tor"
address = "198.18.255.2"
remote_as = 65000
connect_retry = 1

# A static entry with a MAC nobody has: 2001:db8::21 answers from the segment's own.
[[neighbor]]
address = "2001:db8::21"
mac = "02:00:00:00:00:99"

# Healthy: a backend that answers.
[[service]]
vip = "198.19.0.1"
protocol = "tcp"
port = 80
mode = "nat"

[[service.backend]]
address = "198.18.0.20"
port = 8080

# Backend down: its health check finds nothing listening.
[[service]]
vip = "198.19.0.2"
protocol = "tcp"
port = 80
mode = "nat"

[service.health]
type = "tcp"
interval_ms = 200
timeout_ms = 100
fall = 1
rise = 1

[[service.backend]]
address = "198.18.0.20"
port = 81

# The flow table: one UDP service that a burst of flows fills.
[[service]]
vip = "198.19.0.3"
protocol = "udp"
port = 53
mode = "nat"

[[service.backend]]
address = "198.18.0.20"
port = 5353

# Wrong MAC (IPv6): the static entry above.
[[service]]
vip = "2001:db8:100::1"
protocol = "tcp"
port = 80
mode = "nat"

[[service.backend]]
address = "2001:db8::21"
port = 8080

# Without backends (IPv6).
[[service]]
vip = "2001:db8:100::2"
protocol = "tcp"
port = 80
mode = "nat"
"#,
    )
    .unwrap();
    let _d = Edgelbd::new(EDGELBD, &lb, &cfg).spawn(&dir.join("edgelbd.log"));
    let _server = in_netns(&seg, || TcpListener::bind("198.18.0.20:8080").unwrap());
    // The API answers once edgelbd is up; the health check takes the :81 backend down within a second or two.
    let deadline = Instant::now() + Duration::from_secs(20);
    let down = loop {
        let o = Command::new("ip")
            .args(["netns", "exec", &lb, EDGELBCTL, "--addr", API, "-o", "json", "doctor", "198.19.0.2"])
            .output()
            .unwrap();
        if !o.stdout.is_empty() {
            let (_, f, _) = doctor(&lb, "198.19.0.2");
            if layer(&f, "backends").2.contains("backend down") {
                break f;
            }
        }
        assert!(Instant::now() < deadline, "the :81 backend never went down: {}", String::from_utf8_lossy(&o.stderr));
        std::thread::sleep(Duration::from_millis(300));
    };
    let b = layer(&down, "backends");
    assert_eq!(b.1, "fail", "{b:?}");
    assert!(b.3.iter().any(|e| e.contains("health check failing")), "the health check's reason is evidence: {b:?}");
    println!("doctor 198.19.0.2 (backend down):\n{}", doctor_text(&lb, "198.19.0.2"));

    // Some drops the lab provokes: UDP to a VIP port without a service.
    in_netns(&seg, || {
        let s = UdpSocket::bind("198.18.0.10:0").unwrap();
        for _ in 0..25 {
            s.send_to(b"x", "198.19.0.1:99").unwrap();
        }
    });

    // Healthy (IPv4): every layer on the appliance's side passes; the announcement fails, as the peer is down. The
    // workers publish their counters every 100 ms: wait for the provoked drops to show.
    let deadline = Instant::now() + Duration::from_secs(3);
    let (code, f) = loop {
        let (code, f, _) = doctor(&lb, "198.19.0.1");
        if layer(&f, "drops").2.contains("no_service") || Instant::now() > deadline {
            break (code, f);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for l in ["arp_nd", "service", "backends", "next_hops", "flow_table"] {
        assert_eq!(layer(&f, l).1, "ok", "{l}: {:?}", layer(&f, l));
    }
    let n = layer(&f, "next_hops");
    assert!(n.3[0].contains(&mac_text(real).to_lowercase()), "the probe heard the segment's MAC: {n:?}");
    let a = layer(&f, "announcement");
    assert_eq!(a.1, "fail");
    assert!(a.2.contains("peer down") && a.3.iter().any(|e| e.contains("BGP peer tor")), "{a:?}");
    assert_eq!(code, 3, "a failing layer makes the exit code 3");
    let d = layer(&f, "drops");
    assert!(d.2.contains("no_service") && d.1 == "warn", "the provoked drops are named: {d:?}");
    println!("doctor 198.19.0.1 (healthy, peer down):\n{}", doctor_text(&lb, "198.19.0.1"));

    // Wrong MAC (IPv6).
    let (_, f, _) = doctor(&lb, "2001:db8:100::1");
    let n = layer(&f, "next_hops");
    assert_eq!(n.1, "fail", "{n:?}");
    assert!(
        n.2.contains("wrong MAC") && n.2.contains(&mac_text(real).to_lowercase()) && n.2.contains("02:00:00:00:00:99"),
        "{n:?}"
    );
    println!("doctor 2001:db8:100::1 (wrong MAC):\n{}", doctor_text(&lb, "2001:db8:100::1"));

    // Without backends (IPv6).
    let (_, f, _) = doctor(&lb, "2001:db8:100::2");
    let b = layer(&f, "backends");
    assert!(b.1 == "fail" && b.2.contains("VIP without backends"), "{b:?}");
    assert!(layer(&f, "announcement").2.contains("not announced"), "{f:?}");

    // An address that is no VIP.
    let (_, f, _) = doctor(&lb, "198.19.9.9");
    assert!(layer(&f, "service").2.contains("no service on this VIP"), "{f:?}");

    // Flow table full: 1500 UDP flows, one entry each, for a table of 1152 entries.
    let (_, f, _) = doctor(&lb, "198.19.0.3");
    assert_eq!(layer(&f, "flow_table").1, "ok", "{f:?}");
    // A worker starved of its core (a loaded machine) loses some of a burst at its port, so up to four rounds of
    // 1500 flows are sent, each from new source ports, until the table shows full.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut next_round = Instant::now();
    let mut rounds = 0;
    let f = loop {
        if rounds < 4 && Instant::now() >= next_round {
            in_netns(&seg, || {
                for _ in 0..1500 {
                    let s = UdpSocket::bind("198.18.0.10:0").unwrap();
                    s.send_to(b"q", SocketAddr::from(([198, 19, 0, 3], 53))).unwrap();
                }
            });
            rounds += 1;
            next_round = Instant::now() + Duration::from_secs(3);
        }
        let (_, f, _) = doctor(&lb, "198.19.0.3");
        if layer(&f, "flow_table").1 == "fail" {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "the table never showed full after {rounds} rounds: {:?}",
            layer(&f, "flow_table")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let t = layer(&f, "flow_table");
    assert!(t.2.contains("flow table full"), "{t:?}");
    println!("doctor 198.19.0.3 (flow table full):\n{}", doctor_text(&lb, "198.19.0.3"));

    // Without a VIP: every VIP, each once.
    let o = Command::new("ip")
        .args(["netns", "exec", &lb, EDGELBCTL, "--addr", API, "-o", "json", "doctor"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let vips: Vec<&str> = v["vips"].as_array().unwrap().iter().filter_map(|x| x["vip"].as_str()).collect();
    assert_eq!(vips, ["198.19.0.1", "198.19.0.2", "198.19.0.3", "2001:db8:100::1", "2001:db8:100::2"]);
    assert_eq!(o.status.code(), Some(3));
}
