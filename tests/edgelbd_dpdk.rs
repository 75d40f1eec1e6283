//! `edgelbd` on DPDK (feature `dpdk`): the appliance's ports are DPDK `net_af_xdp` vdevs on veth interfaces in its
//! network namespace, EAL without PCI or huge pages. Real HTTP: Python's `http.server` on two backends, `curl` as the
//! client, NAT mode, no static neighbours. Every request must succeed and both backends must serve.
#![cfg(feature = "dpdk")]

use edgelb_testkit::daemon::{wait_logged, Edgelbd};
use edgelb_testkit::netns::{interrupt_twice, require_root, Lab, Reaped};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EDGELBD: &str = env!("CARGO_BIN_EXE_edgelbd");

fn config() -> String {
    r#"[[port]]
name = "lb0"
driver = "dpdk"
vdev = "net_af_xdp0,iface=lb0"
addresses = ["198.18.0.1/24"]
frames = 512

[[port]]
name = "lb1"
driver = "dpdk"
vdev = "net_af_xdp1,iface=lb1"
addresses = ["198.18.2.1/24"]
frames = 512

[dpdk]
no_huge = true
memory_mb = 512
mbufs = 8192
log_levels = ["error", "pmd.net.af_xdp:error"]

[[service]]
vip = "198.19.0.1"
protocol = "tcp"
port = 80
mode = "nat"

[[service.backend]]
address = "198.18.2.10"
port = 8080

[[service.backend]]
address = "198.18.2.11"
port = 8080
"#
    .to_string()
}

fn curl(ns: &str, url: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "--max-time", "3", "--connect-timeout", "2", "--no-keepalive", url])
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[test]
fn edgelbd_on_dpdk_af_xdp_vdevs_serves_http() {
    require_root();
    let mut lab = Lab::new("dp");
    let (cl, lb, be) = (lab.ns("cl"), lab.ns("lb"), lab.ns("be"));
    lab.veth(&cl, "cl0", &lb, "lb0");
    lab.veth(&lb, "lb1", &be, "be0");
    lab.ip(&cl, "addr add 198.18.0.10/24 dev cl0");
    lab.ip(&cl, "route add 198.19.0.0/24 dev cl0");
    // Two backends on one namespace (two addresses), each a real HTTP server with its own document root.
    lab.ip(&be, "addr add 198.18.2.10/24 dev be0");
    lab.ip(&be, "addr add 198.18.2.11/24 dev be0");
    lab.ip(&be, "route add default via 198.18.2.1 dev be0");
    let dir = std::env::temp_dir().join(format!("edgelbd-dpdk-{}", std::process::id()));
    // Killed when the test ends (also on failure), before the lab's namespaces go.
    let mut procs: Vec<Reaped> = Vec::new();
    for (addr, name) in [("198.18.2.10", "be1"), ("198.18.2.11", "be2")] {
        let root = dir.join(name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("who"), format!("{name}\n")).unwrap();
        procs.push(Reaped(
            Command::new("ip")
                .args(["netns", "exec", &be, "python3", "-m", "http.server", "--bind", addr, "8080", "--directory"])
                .arg(&root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
    }
    let cfg = dir.join("dpdk.toml");
    std::fs::write(&cfg, config()).unwrap();
    let log_path = dir.join("edgelbd.log");
    procs.push(Edgelbd::new(EDGELBD, &lb, &cfg).spawn(&log_path));
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Bounded wait for both backend servers to listen, asked inside their own namespace. A first answer through the
    // appliance proves only one of them: a request Maglev sends to the other before its server has bound is refused
    // by the backend's kernel (curl: "Couldn't connect ... after 0 ms"), which says nothing about edgelbd.
    let deadline = Instant::now() + Duration::from_secs(20);
    for (addr, name) in [("198.18.2.10", "be1"), ("198.18.2.11", "be2")] {
        loop {
            match curl(&be, &format!("http://{addr}:8080/who")) {
                Ok(body) if body == name => break,
                Ok(body) => panic!("backend {addr} answered {body:?}, not {name:?}"),
                Err(e) if Instant::now() > deadline => panic!("backend {addr} never listened: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    // Bounded wait for the first answer through the appliance (EAL start, XDP program load).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match curl(&cl, "http://198.19.0.1/who") {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => panic!("edgelbd on DPDK never answered: {e}\nlog:\n{}", log()),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    let mut failed = Vec::new();
    const N: usize = 60;
    for i in 0..N {
        match curl(&cl, "http://198.19.0.1/who") {
            Ok(b) => *seen.entry(b).or_default() += 1,
            Err(e) => failed.push(format!("request {i}: {e}")),
        }
    }
    assert!(failed.is_empty(), "{} of {N} requests failed: {failed:?}\nlog:\n{}", failed.len(), log());
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), ["be1", "be2"], "both backends serve: {seen:?}");
    assert!(seen.values().all(|&n| n >= 10), "Maglev spreads new connections: {seen:?}");

    // A clean stop reports the DPDK ports' counters and gives every mbuf back.
    // `ip netns exec` execs edgelbd in place, so the child's pid is edgelbd's.
    let daemon = procs.last_mut().unwrap();
    let status = interrupt_twice(daemon, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("edgelbd did not stop; log:\n{}", log()));
    let text = log();
    assert!(status.success(), "exit {status:?}; log:\n{text}");
    assert!(text.contains("dpdk port started") && text.contains("dpdk port stopped"), "log:\n{text}");
    // The drivers' receive rings hold mbufs from start to close (net_af_xdp keeps its fill ring stocked); the
    // traffic must have taken none beyond that.
    let field = |line: &str, key: &str| -> u64 {
        line.split(key).nth(1).and_then(|x| x.split_whitespace().next()).and_then(|x| x.parse().ok()).unwrap_or(0)
    };
    let exit =
        text.lines().find(|l| l.contains("dpdk pool at exit")).unwrap_or_else(|| panic!("no pool line:\n{text}"));
    assert!(field(exit, "mbufs_free=") >= field(exit, "at_start="), "mbufs lost to traffic: {exit}");
    assert!(field(exit, "at_start=") > 0 && field(exit, " mbufs=") == 8192, "{exit}");
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A DPDK port whose name is no kernel interface (as a VF bound to vfio-pci has none) and that has no `mac =` in the
/// file takes its MAC from the device. edgelbd used to look the name up in `/sys/class/net` before it opened the DPDK
/// ports, and exit with code 2 before the device's MAC could be read.
#[test]
fn a_dpdk_port_without_a_kernel_interface_takes_the_device_mac() {
    require_root();
    let mut lab = Lab::new("dm");
    let lb = lab.ns("lb");
    let dir = std::env::temp_dir().join(format!("edgelbd-dpdk-mac-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("null.toml");
    // The first test's appliance on net_null vdevs: their names are no kernel interfaces, and no port has `mac =`.
    let text = config()
        .replace("name = \"lb0\"", "name = \"vf-no-netdev\"")
        .replace("vdev = \"net_af_xdp0,iface=lb0\"", "vdev = \"net_null0\"")
        .replace("vdev = \"net_af_xdp1,iface=lb1\"", "vdev = \"net_null1\"");
    assert!(text.contains("net_null0") && text.contains("net_null1") && !text.contains("mac ="), "{text}");
    std::fs::write(&cfg, text).unwrap();
    let log_path = dir.join("edgelbd.log");
    let mut daemon = Edgelbd::new(EDGELBD, &lb, &cfg).spawn(&log_path);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_logged(&mut daemon, &log_path, "edgelbd forwarding", 20).unwrap_or_else(|e| panic!("{e}"));
    let text = log();
    let started = text.lines().find(|l| l.contains("dpdk port started")).unwrap_or_else(|| panic!("{text}"));
    assert!(started.contains("vf-no-netdev") && started.contains("mac="), "{started}");
    assert!(!started.contains("mac=00:00:00:00:00:00"), "the device's MAC, not none: {started}");
    // `ip netns exec` execs edgelbd in place, so the child's pid is edgelbd's.
    let status = interrupt_twice(&mut daemon, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("edgelbd did not stop; log:\n{}", log()));
    assert!(status.success(), "exit {status:?}; log:\n{}", log());
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
