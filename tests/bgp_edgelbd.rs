//! `edgelbd` announcing its VIPs to BIRD (root, network namespaces): the routes appear with the configured
//! attributes, the peer shows in `edgelbctl peer list` with its BFD session Up (from the file and from the API), removing and adding the peer through the API withdraws and
//! announces, SIGTERM (drain) first tags the routes GRACEFUL_SHUTDOWN, and the exit withdraws them.

use edgelb_testkit::daemon::Edgelbd;
use edgelb_testkit::netns::{require_root, Lab};
use edgelb_testkit::peers::Bird;
use std::process::Command;
use std::time::{Duration, Instant};

const EDGELBD: &str = env!("CARGO_BIN_EXE_edgelbd");
const EDGELBCTL: &str = env!("CARGO_BIN_EXE_edgelbctl");

#[test]
fn edgelbd_announces_drains_and_withdraws() {
    require_root();
    let mut lab = Lab::new("bgpd");
    let (lb, rt) = (lab.ns("lb"), lab.ns("rt"));
    lab.veth(&lb, "lb0", &rt, "rt0");
    lab.veth(&lb, "up0", &rt, "up1");
    lab.ip(&lb, "addr add 198.18.255.1/30 dev up0");
    lab.ip(&rt, "addr add 198.18.255.2/30 dev up1");
    let dir = std::env::temp_dir().join(format!("edgelb-bgpd-{}", std::process::id()));
    let bird = Bird::start(
        &rt,
        &dir.join("bird"),
        "router id 198.18.255.2;\nprotocol device { }\nprotocol bfd {\n  interface \"up1\" { min rx interval 100 ms; \
         min tx interval 100 ms; };\n}\nprotocol bgp edge {\n  local 198.18.255.2 as 65000;\n\
         neighbor 198.18.255.1 as 65001;\n  passive on;\n  hold time 9;\n  bfd on;\n  \
         ipv4 { import all; export none; };\n}\n",
    );
    let cfg = dir.join("edgelbd.toml");
    std::fs::write(
        &cfg,
        r#"[[port]]
name = "lb0"
driver = "afpacket"
addresses = ["198.18.0.1/24"]
frames = 256

[api]
listen = "127.0.0.1:50072"

[bgp]
local_as = 65001
router_id = "198.18.255.1"

[[bgp.peer]]
name = "tor"
address = "198.18.255.2"
remote_as = 65000
hold_time = 9
connect_retry = 1
communities = ["65001:100"]
large_communities = ["65001:7:7"]
bfd = { min_tx_ms = 100, min_rx_ms = 100 }

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
"#,
    )
    .unwrap();
    let mut d = Edgelbd::new(EDGELBD, &lb, &cfg).args(&["--drain-timeout", "3"]).spawn(&dir.join("edgelbd.log"));
    let r = bird.wait_routes("the VIP from edgelbd", 20, |r| r.contains("198.19.0.1/32"));
    assert!(
        r.contains("(65001,100)") && r.contains("(65001, 7, 7)") && r.contains("BGP.next_hop: 198.18.255.1"),
        "{r}"
    );
    // edgelbctl inside the appliance's namespace, against the daemon's API.
    let edgelbctl = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &lb, EDGELBCTL, "--addr", "http://127.0.0.1:50072"])
            .args(args)
            .output()
            .unwrap()
    };
    // The peer in the API.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = edgelbctl(&["--output", "json", "peer", "list"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if v[0]["state"] == "Established" && v[0]["announced"] == 1 && v[0]["bfd"]["state"] == "Up" {
            // Our detection time is BIRD's multiplier (its default, 5) times 100 ms.
            assert_eq!((&v[0]["name"], &v[0]["bfd"]["detection_ms"]), (&"tor".into(), &500.into()), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "peer list: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Peers through the API: removing the peer withdraws (a Cease after the withdrawal); adding it back announces.
    let ctl = |args: &[&str]| {
        let o = edgelbctl(&[&["--output", "json"], args].concat());
        assert!(o.status.success(), "edgelbctl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let left = ctl(&["peer", "remove", "tor"]);
    assert_eq!(left.as_array().map(Vec::len), Some(0), "{left}");
    bird.wait_routes("the withdrawal when the peer is removed", 10, |r| !r.contains("198.19.0.1/32"));
    let added = ctl(&[
        "peer",
        "add",
        "198.18.255.2",
        "--as",
        "65000",
        "--name",
        "tor-again",
        "--community",
        "65001:200",
        "--hold-time",
        "9",
        "--bfd-min-tx",
        "100",
    ]);
    assert_eq!(added[0]["name"], "tor-again", "{added}");
    let r = bird.wait_routes("the route from the peer added through the API", 20, |r| r.contains("198.19.0.1/32"));
    assert!(r.contains("(65001,200)"), "{r}");
    // BFD asked for through the API comes Up too, at both ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = ctl(&["peer", "list"]);
        if v[0]["bfd"]["state"] == "Up" {
            break;
        }
        assert!(Instant::now() < deadline, "BFD never Up for the API's peer: {v}\n{}", bird.show("show bfd sessions"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(bird.show("show bfd sessions").contains(" Up "), "{}", bird.show("show bfd sessions"));
    let bad = edgelbctl(&["peer", "add", "198.18.255.300", "--as", "1"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("address"), "{}", String::from_utf8_lossy(&bad.stderr));

    // SIGTERM: drain; the route is tagged GRACEFUL_SHUTDOWN while the daemon drains, then withdrawn at exit.
    // SAFETY: kill(2) on our child (`ip netns exec` execs edgelbd in place).
    assert_eq!(unsafe { libc::kill(d.0.id() as i32, libc::SIGTERM) }, 0);
    bird.wait_routes("GRACEFUL_SHUTDOWN while draining", 5, |r| r.contains("(65535,0)"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = d.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "edgelbd did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}: {}", std::fs::read_to_string(dir.join("edgelbd.log")).unwrap_or_default());
    bird.wait_routes("the withdrawal at exit", 5, |r| !r.contains("198.19.0.1/32"));
    drop(bird);
    let _ = std::fs::remove_dir_all(&dir);
}
