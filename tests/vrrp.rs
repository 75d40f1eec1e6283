//! VRRPv3 between edgelbd and keepalived (Debian `keepalived`, a real peer) on one bridged segment, IPv4 and IPv6 in
//! one test (root, network namespaces). edgelbd answers for the VIPs from the virtual router MACs (keepalived from
//! its interface's own). On the backends' side edgelbd runs two more virtual routers owning the
//! gateway addresses the backend routes through, so NAT replies find whichever appliance is Master. keepalived (priority 100) owns the VIPs alone; edgelbd (150, preempt) takes
//! them; killing edgelbd hands them back within the master down interval; edgelbd returning takes them back; a
//! SIGTERM drain hands them over at once (priority 0). keepalived's own log says each of its states. A client sends
//! a UDP probe to each VIP every 10 ms throughout and the longest stall of each step is printed; the one after the
//! kill (100 ms adverts) stays within 0.5 s.

use edgelb_testkit::daemon::Edgelbd;
use edgelb_testkit::netns::{in_netns, require_root, Lab, Reaped};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EDGELBD: &str = env!("CARGO_BIN_EXE_edgelbd");
const EDGELBCTL: &str = env!("CARGO_BIN_EXE_edgelbctl");
const VIP4: &str = "198.19.0.1";
const VIP6: &str = "2001:db8:100::1";

/// A UDP server answering `tag:` and the payload, in namespace `ns`, until `stop`.
fn echo(ns: &str, bind: &'static str, tag: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let sock = in_netns(ns, move || UdpSocket::bind(bind).unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let mut out = tag.as_bytes().to_vec();
                out.push(b':');
                out.extend_from_slice(&buf[..n]);
                let _ = sock.send_to(&out, from);
            }
        }
    })
}

/// Who answered each probe, and when.
type Answers = Arc<Mutex<Vec<(Instant, String)>>>;

/// A probe every 10 ms to `vip`:53 from the client; answers recorded with their arrival time, until `stop`.
fn probe(ns: &str, vip: &'static str, stop: Arc<AtomicBool>) -> (Answers, std::thread::JoinHandle<()>) {
    let answers: Answers = Arc::default();
    let bind = if vip.contains(':') { "[::]:0" } else { "0.0.0.0:0" };
    let sock = in_netns(ns, move || UdpSocket::bind(bind).unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
    let to: SocketAddr = if vip.contains(':') { format!("[{vip}]:53") } else { format!("{vip}:53") }.parse().unwrap();
    let a = answers.clone();
    let t = std::thread::spawn(move || {
        let mut next = Instant::now();
        let mut seq = 0u64;
        let mut buf = [0u8; 256];
        // Bounded: the test stops it; five minutes at most regardless.
        let end = Instant::now() + Duration::from_secs(300);
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            if Instant::now() >= next {
                let _ = sock.send_to(&seq.to_be_bytes(), to);
                seq += 1;
                next += Duration::from_millis(10);
            }
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                let who = String::from_utf8_lossy(&buf[..n]).split(':').next().unwrap_or_default().to_string();
                a.lock().unwrap().push((Instant::now(), who));
            }
        }
    });
    (answers, t)
}

/// Wait (bounded) until the last answer to `vip` came from `who`.
fn wait_answered_by(answers: &Answers, who: &str, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let last = answers.lock().unwrap().last().map(|(t, w)| (t.elapsed(), w.clone()));
        if let Some((age, w)) = &last {
            if w == who && *age < Duration::from_millis(100) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what}: answers never came from {who} (last {last:?})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The longest gap between answers from `since` until answers come from `to` again and keep coming for 200 ms.
fn stall(answers: &Answers, since: Instant, to: &str) -> Duration {
    let a = answers.lock().unwrap();
    let mut last = since;
    let mut worst = Duration::ZERO;
    for (t, who) in a.iter().filter(|(t, _)| *t >= since) {
        worst = worst.max(t.duration_since(last));
        last = *t;
        if who == to && t.duration_since(since) > Duration::from_secs(1) {
            break;
        }
    }
    worst
}

/// keepalived's log (its console output) contains `needle` `times` times or more, waited for (bounded).
fn wait_keepalived(log: &std::path::Path, needle: &str, times: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= times {
            return;
        }
        assert!(Instant::now() < deadline, "keepalived never logged {needle:?} {times} times:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn config() -> String {
    format!(
        r#"[[port]]
name = "lb0"
driver = "afpacket"
addresses = ["198.18.0.1/24", "2001:db8::1/64"]
frames = 256

[[port]]
name = "lb1"
driver = "afpacket"
addresses = ["198.18.2.1/24", "2001:db8:2::1/64"]
frames = 256

[api]
listen = "127.0.0.1:50076"

[[service]]
vip = "{VIP4}"
protocol = "udp"
port = 53
mode = "nat"

[[service.backend]]
address = "198.18.2.10"
port = 5353

[[service]]
vip = "{VIP6}"
protocol = "udp"
port = 53
mode = "nat"

[[service.backend]]
address = "2001:db8:2::10"
port = 5353

[[vrrp]]
name = "front4"
port = "lb0"
vrid = 51
priority = 150
advert_interval_ms = 100
vips = ["{VIP4}"]
virtual_mac = true

[[vrrp]]
name = "front6"
port = "lb0"
vrid = 52
priority = 150
advert_interval_ms = 100
vips = ["{VIP6}"]
virtual_mac = true

# The backends' side: the gateway they route through follows the Master (NAT replies come back through it).
[[vrrp]]
name = "gw4"
port = "lb1"
vrid = 61
priority = 150
advert_interval_ms = 100
vips = ["198.18.2.254"]

[[vrrp]]
name = "gw6"
port = "lb1"
vrid = 62
priority = 150
advert_interval_ms = 100
vips = ["2001:db8:2::fe"]
"#
    )
}

const KEEPALIVED: &str = r#"global_defs {
  router_id ka
  vrrp_version 3
}
vrrp_instance V4 {
  state BACKUP
  interface ka0
  virtual_router_id 51
  priority 100
  advert_int 0.1
  virtual_ipaddress {
    198.19.0.1/32
  }
}
vrrp_instance V6 {
  state BACKUP
  interface ka0
  virtual_router_id 52
  priority 100
  advert_int 0.1
  virtual_ipaddress {
    2001:db8:100::1/128
  }
}
"#;

fn edgelbctl_vrrp(lb: &str) -> serde_json::Value {
    let o = Command::new("ip")
        .args(["netns", "exec", lb, EDGELBCTL, "--addr", "http://127.0.0.1:50076", "--output", "json", "vrrp", "list"])
        .output()
        .unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or_default()
}

fn wait_edgelbd_master(lb: &str, secs: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = edgelbctl_vrrp(lb);
        let masters = v["routers"].as_array().map_or(0, |r| r.iter().filter(|r| r["state"] == "Master").count());
        if masters == 4 {
            return v;
        }
        assert!(Instant::now() < deadline, "edgelbd never Master of all four routers: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(d: &Reaped, sig: i32) {
    // SAFETY: kill(2) on our child (`ip netns exec` execs edgelbd in place), not yet reaped.
    assert_eq!(unsafe { libc::kill(d.0.id() as i32, sig) }, 0);
}

#[test]
fn edgelbd_and_keepalived_share_vips_over_vrrp_in_both_families() {
    require_root();
    let mut lab = Lab::new("vrrp");
    let (sw, cl, lb, ka, be) = (lab.ns("sw"), lab.ns("cl"), lab.ns("lb"), lab.ns("ka"), lab.ns("be"));
    lab.ip(&sw, "link add br0 type bridge");
    lab.ip(&sw, "link set br0 type bridge mcast_snooping 0");
    lab.ip(&sw, "link set br0 up");
    for (ns, inner, outer) in [(&cl, "cl0", "s-cl"), (&lb, "lb0", "s-lb"), (&ka, "ka0", "s-ka")] {
        lab.veth(ns, inner, &sw, outer);
        lab.ip(&sw, &format!("link set {outer} master br0"));
    }
    lab.veth(&lb, "lb1", &be, "be0");
    lab.ip(&cl, "addr add 198.18.0.10/24 dev cl0");
    lab.ip(&cl, "addr add 2001:db8::10/64 dev cl0 nodad");
    lab.ip(&cl, "route add 198.19.0.0/24 dev cl0");
    lab.ip(&cl, "-6 route add 2001:db8:100::/64 dev cl0");
    lab.ip(&ka, "addr add 198.18.0.2/24 dev ka0");
    lab.ip(&ka, "addr add 2001:db8::2/64 dev ka0 nodad");
    lab.ip(&be, "addr add 198.18.2.10/24 dev be0");
    lab.ip(&be, "addr add 2001:db8:2::10/64 dev be0 nodad");
    // The backend routes through the virtual routers' gateway addresses, not an address of edgelbd's own.
    lab.ip(&be, "route add default via 198.18.2.254 dev be0");
    lab.ip(&be, "-6 route add default via 2001:db8:2::fe dev be0");
    let stop = Arc::new(AtomicBool::new(false));
    // Dual-stack sockets: one per server answers both families.
    let mut threads = vec![echo(&be, "[::]:5353", "be", stop.clone()), echo(&ka, "[::]:53", "ka", stop.clone())];
    let dir = std::env::temp_dir().join(format!("edgelb-vrrp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // keepalived first, alone: Master of both.
    std::fs::write(dir.join("keepalived.conf"), KEEPALIVED).unwrap();
    let ka_log = dir.join("keepalived.log");
    let kd = Command::new("ip")
        .args(["netns", "exec", &ka, "keepalived", "--dont-fork", "--log-console", "--vrrp", "-f"])
        .arg(dir.join("keepalived.conf"))
        .arg("-p")
        .arg(dir.join("k.pid"))
        .arg("-r")
        .arg(dir.join("v.pid"))
        .stdout(std::fs::File::create(&ka_log).unwrap())
        .stderr(Stdio::from(std::fs::File::options().append(true).open(&ka_log).unwrap()))
        .spawn()
        .expect("keepalived (Debian keepalived)");
    lab.adopt(kd);
    wait_keepalived(&ka_log, "(V4) Entering MASTER STATE", 1, 15);
    wait_keepalived(&ka_log, "(V6) Entering MASTER STATE", 1, 15);
    let (a4, p4) = probe(&cl, VIP4, stop.clone());
    let (a6, p6) = probe(&cl, VIP6, stop.clone());
    threads.extend([p4, p6]);
    wait_answered_by(&a4, "ka", 10, "IPv4 through keepalived alone");
    wait_answered_by(&a6, "ka", 10, "IPv6 through keepalived alone");

    // edgelbd (150, preempt) takes both VIPs; keepalived says BACKUP.
    let cfg = dir.join("edgelbd.toml");
    std::fs::write(&cfg, config()).unwrap();
    let mut d = Edgelbd::new(EDGELBD, &lb, &cfg).args(&["--drain-timeout", "2"]).spawn(&dir.join("edgelbd-1.log"));
    let v = wait_edgelbd_master(&lb, 15);
    wait_keepalived(&ka_log, "(V4) Entering BACKUP STATE", 1, 5);
    wait_keepalived(&ka_log, "(V6) Entering BACKUP STATE", 1, 5);
    wait_answered_by(&a4, "be", 5, "IPv4 through edgelbd once it is Master");
    wait_answered_by(&a6, "be", 5, "IPv6 through edgelbd once it is Master");
    assert!(v["routers"][0]["master"] == "198.18.0.1" && v["routers"][0]["adverts_out"].as_u64() > Some(0), "{v}");
    // The backend resolves its gateways afresh, once the gratuitous ARPs / NAs are over (3 within 200 ms of becoming
    // Master): edgelbd, their Master, answers.
    std::thread::sleep(Duration::from_secs(1));
    lab.ip(&be, "-4 neigh flush dev be0");
    lab.ip(&be, "-6 neigh flush dev be0");
    std::thread::sleep(Duration::from_millis(300));
    wait_answered_by(&a4, "be", 5, "IPv4 NAT replies through the gateway resolved afresh");
    wait_answered_by(&a6, "be", 5, "IPv6 NAT replies through the gateway resolved afresh");
    // The client side runs with the virtual router MACs (vrid 51 and 52).
    for (vip, mac) in [(VIP4, "00:00:5e:00:01:33"), (VIP6, "00:00:5e:00:02:34")] {
        let n = lab.ip(&cl, &format!("neigh show {vip}"));
        assert!(n.contains(mac), "the client resolved {vip} to the virtual router MAC {mac}: {n}");
    }
    let lb1 = edgelb_testkit::netns::mac_text(lab.mac(&lb, "lb1"));
    for gw in ["198.18.2.254", "2001:db8:2::fe"] {
        let n = lab.ip(&be, &format!("neigh show {gw}"));
        assert!(n.contains(&lb1), "the backend resolved its gateway {gw} to edgelbd: {n}");
    }

    // Kill edgelbd (no goodbye): keepalived takes over after its master down interval; clients follow its GARP/NA.
    let killed = Instant::now();
    signal(&d, libc::SIGKILL);
    let _ = d.0.wait();
    wait_keepalived(&ka_log, "(V4) Entering MASTER STATE", 2, 5);
    wait_keepalived(&ka_log, "(V6) Entering MASTER STATE", 2, 5);
    wait_answered_by(&a4, "ka", 5, "IPv4 through keepalived after the kill");
    wait_answered_by(&a6, "ka", 5, "IPv6 through keepalived after the kill");
    std::thread::sleep(Duration::from_millis(300));
    let (k4, k6) = (stall(&a4, killed, "ka"), stall(&a6, killed, "ka"));

    // edgelbd returns: it preempts, keepalived goes back to BACKUP.
    d = Edgelbd::new(EDGELBD, &lb, &cfg).args(&["--drain-timeout", "2"]).spawn(&dir.join("edgelbd-2.log"));
    let back = Instant::now();
    wait_edgelbd_master(&lb, 15);
    wait_keepalived(&ka_log, "(V4) Entering BACKUP STATE", 2, 5);
    wait_keepalived(&ka_log, "(V6) Entering BACKUP STATE", 2, 5);
    wait_answered_by(&a4, "be", 5, "IPv4 through edgelbd again");
    wait_answered_by(&a6, "be", 5, "IPv6 through edgelbd again");
    std::thread::sleep(Duration::from_millis(300));
    let (b4, b6) = (stall(&a4, back, "be"), stall(&a6, back, "be"));

    // SIGTERM: the drain resigns (priority 0): keepalived is Master after its skew time alone.
    let drained = Instant::now();
    signal(&d, libc::SIGTERM);
    wait_keepalived(&ka_log, "(V4) Entering MASTER STATE", 3, 5);
    wait_keepalived(&ka_log, "(V6) Entering MASTER STATE", 3, 5);
    wait_answered_by(&a4, "ka", 5, "IPv4 through keepalived after the drain");
    wait_answered_by(&a6, "ka", 5, "IPv6 through keepalived after the drain");
    std::thread::sleep(Duration::from_millis(300));
    let (g4, g6) = (stall(&a4, drained, "ka"), stall(&a6, drained, "ka"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "edgelbd did not exit after its drain");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    println!("longest stall a client saw (IPv4 / IPv6), probes every 10 ms, adverts every 100 ms:");
    println!("  edgelbd killed, keepalived takes over:   {k4:?} / {k6:?}");
    println!("  edgelbd back, preempts keepalived:       {b4:?} / {b6:?}");
    println!("  edgelbd drains (priority 0), hands over: {g4:?} / {g6:?}");
    let log = std::fs::read_to_string(dir.join("edgelbd-2.log")).unwrap_or_default();
    assert!(log.contains("VRRP: Master → Backup (resigned (draining))"), "{log}");
    for (what, s) in [("kill", k4), ("kill", k6)] {
        assert!(s <= Duration::from_millis(500), "{what}: a stall of {s:?}");
    }
    for (what, s) in [("preemption", b4), ("preemption", b6), ("drain", g4), ("drain", g6)] {
        assert!(s <= Duration::from_millis(300), "{what}: a stall of {s:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
