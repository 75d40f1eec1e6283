//! Kubernetes-driven L2 ownership (root, network namespaces, the in-repo API server emulator): two appliances with
//! `vip_leases = true` on one bridged segment, a dual-stack DSR-L2 Service with one backend. The first appliance takes
//! both VIPs' Leases and alone answers ARP and NDP for them; killing it moves both to the other within the Lease
//! duration plus a second: the client's neighbour entries move with the gratuitous ARP / unsolicited NA, a UDP probe
//! every 10 ms to each VIP resumes (the stalls are printed) and an open TCP connection to each carries on (picked up
//! mid-flow, the same backend).

use edgelb_testkit::daemon::Edgelbd;
use edgelb_testkit::kube::emulator;
use edgelb_testkit::netns::{in_netns, mac_text, require_root, Lab};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EDGELBD: &str = env!("CARGO_BIN_EXE_edgelbd");
const LEASE_DURATION: u64 = 5;

const MANIFESTS: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  annotations:
    edgelb.io/mode: dsr_l2
    edgelb.io/loadBalancerIPs: 198.19.0.1,2001:db8:100::1
spec:
  type: LoadBalancer
  loadBalancerClass: edgelb.io/lb
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: 80
  - name: probe
    port: 53
    protocol: UDP
    targetPort: 53
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 80
  protocol: TCP
- name: probe
  port: 53
  protocol: UDP
endpoints:
- addresses: ["198.18.0.20"]
  conditions: {ready: true, serving: true, terminating: false}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-2
  namespace: default
  labels:
    kubernetes.io/service-name: web
addressType: IPv6
ports:
- name: http
  port: 80
  protocol: TCP
- name: probe
  port: 53
  protocol: UDP
endpoints:
- addresses: ["2001:db8::20"]
  conditions: {ready: true, serving: true, terminating: false}
"#;

/// The two VIPs, their Leases and how the client's neighbour table names them.
const VIPS: [(&str, &str); 2] =
    [("198.19.0.1", "edgelb-vip-198-19-0-1"), ("2001:db8:100::1", "edgelb-vip-2001-db8-100--1")];

fn temp(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The backend: the VIPs on its loopback (DSR), a TCP server answering each line with `be`, a UDP echo; dual-stack
/// sockets.
fn backend(be: &str, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let tcp = in_netns(be, || TcpListener::bind("[::]:80").unwrap());
    tcp.set_nonblocking(true).unwrap();
    let udp = in_netns(be, || UdpSocket::bind("[::]:53").unwrap());
    udp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let s1 = stop.clone();
    let t1 = std::thread::spawn(move || {
        let mut conns = Vec::new();
        while !s1.load(Ordering::Relaxed) {
            if let Ok((c, _)) = tcp.accept() {
                let s = s1.clone();
                conns.push(std::thread::spawn(move || {
                    c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                    let mut r = BufReader::new(c.try_clone().unwrap());
                    let mut w = c;
                    let mut line = String::new();
                    while !s.load(Ordering::Relaxed) {
                        match r.read_line(&mut line) {
                            Ok(0) => return,
                            Ok(_) => {
                                if w.write_all(b"be\n").is_err() {
                                    return;
                                }
                                line.clear();
                            }
                            Err(_) => {}
                        }
                    }
                }));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for c in conns {
            let _ = c.join();
        }
    });
    let t2 = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        }
    });
    vec![t1, t2]
}

fn holder(mg: &str, kubeconfig: &std::path::Path, lease: &str) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", mg, "kubectl", "--kubeconfig"])
        .arg(kubeconfig)
        .args(["get", "--raw", &format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease}")])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["spec"]["holderIdentity"].as_str().unwrap_or("").to_string()
}

/// The client's neighbour entry for a VIP (its MAC, empty when none).
fn client_sees(lab: &Lab, cl: &str, vip: &str) -> String {
    lab.ip(cl, &format!("neigh show {vip}"))
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or("")
        .into()
}

/// A UDP probe every 10 ms to `vip`:53 from the client; answer times recorded until `stop`.
fn probe(
    cl: &str,
    vip: &'static str,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<Instant>>>, std::thread::JoinHandle<()>) {
    let answers: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let a = answers.clone();
    let sock = in_netns(cl, || UdpSocket::bind("[::]:0").unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
    let to: SocketAddr =
        if vip.contains(':') { format!("[{vip}]:53") } else { format!("[::ffff:{vip}]:53") }.parse().unwrap();
    let t = std::thread::spawn(move || {
        let (mut next, end) = (Instant::now(), Instant::now() + Duration::from_secs(120));
        let mut buf = [0u8; 16];
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            if Instant::now() >= next {
                let _ = sock.send_to(b"probe", to);
                next += Duration::from_millis(10);
            }
            if sock.recv_from(&mut buf).is_ok() {
                a.lock().unwrap().push(Instant::now());
            }
        }
    });
    (answers, t)
}

/// The longest gap between answers after `since`.
fn stall(answers: &Mutex<Vec<Instant>>, since: Instant) -> Duration {
    let a = answers.lock().unwrap();
    let mut last = since;
    let mut worst = Duration::ZERO;
    for t in a.iter().filter(|t| **t >= since) {
        worst = worst.max(t.duration_since(last));
        last = *t;
    }
    worst
}

#[test]
fn killing_the_lease_holder_moves_the_vip_and_connections_resume() {
    require_root();
    let mut lab = Lab::new("vipl");
    let (mg, sw, cl, a, b, be) = (lab.ns("mg"), lab.ns("sw"), lab.ns("cl"), lab.ns("a"), lab.ns("b"), lab.ns("be"));
    lab.veth(&mg, "mga", &a, "m0");
    lab.veth(&mg, "mgb", &b, "m0");
    lab.ip(&mg, "addr add 198.18.254.1/30 dev mga");
    lab.ip(&a, "addr add 198.18.254.2/30 dev m0");
    lab.ip(&mg, "addr add 198.18.254.5/30 dev mgb");
    lab.ip(&b, "addr add 198.18.254.6/30 dev m0");
    lab.ip(&sw, "link add br0 type bridge");
    lab.ip(&sw, "link set br0 up");
    for (ns, inner, outer) in [(&cl, "cl0", "s-cl"), (&a, "lb0", "s-a"), (&b, "lb0", "s-b"), (&be, "be0", "s-be")] {
        lab.veth(ns, inner, &sw, outer);
        lab.ip(&sw, &format!("link set {outer} master br0"));
    }
    lab.ip(&cl, "addr add 198.18.0.10/24 dev cl0");
    lab.ip(&cl, "route add 198.19.0.0/24 dev cl0");
    lab.ip(&cl, "addr add 2001:db8::10/64 dev cl0 nodad");
    lab.ip(&cl, "-6 route add 2001:db8:100::/64 dev cl0");
    lab.ip(&be, "addr add 198.18.0.20/24 dev be0");
    lab.ip(&be, "addr add 198.19.0.1/32 dev lo");
    lab.ip(&be, "addr add 2001:db8::20/64 dev be0 nodad");
    // On loopback: Linux answers NS only for addresses of the interface asked, so the VIP stays the appliances'.
    lab.ip(&be, "addr add 2001:db8:100::1/128 dev lo");
    lab.sysctl(&be, "net.ipv4.conf.all.arp_ignore", "1");
    lab.sysctl(&be, "net.ipv4.conf.all.arp_announce", "2");
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = backend(&be, stop.clone());
    let dir = std::env::temp_dir().join(format!("edgelb-vipl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _emu =
        emulator(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/apiserver.py"), &mg, 18083, Some("0.0.0.0"));
    let kubeconfig = |name: &str, server: &str| {
        temp(&dir, &format!("{name}.kubeconfig"), &edgelb_testkit::kube::kubeconfig(&format!("http://{server}:18083")))
    };
    let km = kubeconfig("mg", "127.0.0.1");
    let start = |ns: &str, name: &str, server: &str, addr: &str, addr6: &str| {
        let kc = kubeconfig(name, server);
        let cfg = temp(
            &dir,
            &format!("{name}.toml"),
            &format!(
                "[[port]]\nname = \"lb0\"\ndriver = \"afpacket\"\naddresses = [\"{addr}/24\", \"{addr6}/64\"]\nframes = 256\n\n\
                 [api]\nenabled = false\n\n\
                 [kubernetes]\nkubeconfig = \"{}\"\nidentity = \"{name}\"\nlease_duration = {LEASE_DURATION}\n\
                 vip_leases = true\n\n[[kubernetes.pool]]\nname = \"lab\"\naddresses = [\"198.19.0.0/28\", \"2001:db8:100::/120\"]\n",
                kc.display()
            ),
        );
        Edgelbd::new(EDGELBD, ns, &cfg).spawn(&dir.join(format!("{name}.log")))
    };
    let mut da = start(&a, "a", "198.18.254.1", "198.18.0.1", "2001:db8::1");
    let manifests = temp(&dir, "web.yaml", MANIFESTS);
    let o = Command::new("ip")
        .args(["netns", "exec", &mg, "kubectl", "--kubeconfig"])
        .arg(&km)
        .args(["apply", "--validate=false", "-f"])
        .arg(&manifests)
        .output()
        .unwrap();
    assert!(o.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&o.stderr));
    let read = |n: &str| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
    // a, alone so far, takes each VIP's Lease.
    let deadline = Instant::now() + Duration::from_secs(20);
    let holders: Vec<String> = VIPS
        .iter()
        .map(|(_, lease)| loop {
            let h = holder(&mg, &km, lease);
            if !h.is_empty() {
                break h;
            }
            assert!(Instant::now() < deadline, "nobody took {lease}:\na:\n{}\nb:\n{}", read("a"), read("b"));
            std::thread::sleep(Duration::from_millis(100));
        })
        .collect();
    // a alone took both; b starts now as the standby of both.
    assert_eq!(holders, ["a", "a"]);
    let mut db = start(&b, "b", "198.18.254.5", "198.18.0.2", "2001:db8::2");
    std::thread::sleep(Duration::from_secs(1));
    let mac_of = |n: &str| mac_text(lab.mac(if n == "a" { &a } else { &b }, "lb0"));
    // The client reaches the backend through each VIP's holder alone, and keeps a connection open on each.
    let ask = |c: &mut TcpStream| -> Result<(), String> {
        c.write_all(b"ping\n").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 3];
        c.read_exact(&mut buf).map_err(|e| e.to_string())?;
        (&buf == b"be\n").then_some(()).ok_or_else(|| format!("{buf:?}"))
    };
    let mut conns = Vec::new();
    for ((vip, _), h) in VIPS.iter().zip(&holders) {
        let to: SocketAddr =
            if vip.contains(':') { format!("[{vip}]:80") } else { format!("{vip}:80") }.parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut c = loop {
            if let Ok(c) = in_netns(&cl, move || TcpStream::connect_timeout(&to, Duration::from_millis(500))) {
                break c;
            }
            assert!(Instant::now() < deadline, "{vip} never answered:\na:\n{}\nb:\n{}", read("a"), read("b"));
            std::thread::sleep(Duration::from_millis(100));
        };
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        ask(&mut c).unwrap();
        assert_eq!(client_sees(&lab, &cl, vip), mac_of(h), "the client resolved {vip} to its Lease holder {h}");
        conns.push(c);
    }
    let (p4, t4) = probe(&cl, VIPS[0].0, stop.clone());
    let (p6, t6) = probe(&cl, VIPS[1].0, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    assert!(p4.lock().unwrap().len() > 20 && p6.lock().unwrap().len() > 20, "UDP probes through the holders");
    // Kill the holder: both VIPs move to the other.
    let first = holders[0].clone();
    let other = if first == "a" { "b" } else { "a" };
    let killed = Instant::now();
    let dead = if first == "a" { &mut da } else { &mut db };
    let _ = dead.0.kill();
    let _ = dead.0.wait();
    let mut moved = Vec::new();
    for ((vip, lease), h) in VIPS.iter().zip(&holders) {
        let deadline = killed + Duration::from_secs(LEASE_DURATION + 5);
        while client_sees(&lab, &cl, vip) != mac_of(other) {
            assert!(Instant::now() < deadline, "the client never saw {vip} move to {other}:\n{}", read(other));
            std::thread::sleep(Duration::from_millis(20));
        }
        moved.push(if *h == first { Some(killed.elapsed()) } else { None });
        assert_eq!(holder(&mg, &km, lease), other);
    }
    std::thread::sleep(Duration::from_millis(500));
    let stalls = [stall(&p4, killed), stall(&p6, killed)];
    // The open connections carry on through the other appliance (TCP retransmits at its own pace).
    let resumed: Vec<Result<(), String>> = conns.iter_mut().map(ask).collect();
    let resumed_after = killed.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in [t4, t6].into_iter().chain(threads.drain(..)) {
        t.join().unwrap();
    }
    drop(conns);
    println!("VIP Leases held by {holders:?}; {first} killed; Lease duration {LEASE_DURATION} s:");
    for (i, (vip, _)) in VIPS.iter().enumerate() {
        match moved[i] {
            Some(m) => {
                println!("  {vip}: the client's neighbour entry moved to {other} after {m:?} (gratuitous ARP / NA)")
            }
            None => println!("  {vip}: held by {other} all along"),
        }
        println!(
            "  {vip}: longest UDP stall (probes every 10 ms) {:?}; TCP connection after {resumed_after:?}: {:?}",
            stalls[i], resumed[i]
        );
    }
    let bound = Duration::from_secs(LEASE_DURATION + 1);
    for (i, (vip, _)) in VIPS.iter().enumerate() {
        assert!(resumed[i].is_ok(), "{vip}: the TCP connection broke: {:?}\n{other}:\n{}", resumed[i], read(other));
        assert!(stalls[i] <= bound, "{vip}: a stall of {:?}, more than {bound:?}", stalls[i]);
        assert!(moved[i].is_none_or(|m| m <= bound), "{vip}: moved after {:?}", moved[i]);
    }
    assert!(read(other).contains("VIP Lease held: answering and announcing the VIP"), "{}", read(other));
    // a comes back as the standby; b drains (SIGTERM): it releases its Leases at once and a takes both VIPs.
    da = start(&a, "a2", "198.18.254.1", "198.18.0.1", "2001:db8::1");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(VIPS.map(|(_, l)| holder(&mg, &km, l)), ["b", "b"], "b kept both while a started");
    let drained = Instant::now();
    // SAFETY: kill(2) on our child (`ip netns exec` execs edgelbd in place), not yet reaped.
    assert_eq!(unsafe { libc::kill(db.0.id() as i32, libc::SIGTERM) }, 0);
    for (vip, _) in VIPS {
        let deadline = drained + Duration::from_secs(LEASE_DURATION);
        while client_sees(&lab, &cl, vip) != mac_of("a") {
            assert!(Instant::now() < deadline, "{vip} did not move back to a on b's drain:\nb:\n{}", read("b"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let handed = drained.elapsed();
    println!("  b drained (SIGTERM): both VIPs answered by a after {handed:?}");
    assert!(
        handed < Duration::from_secs(2),
        "a drain hands the VIPs over at once, not at the Lease's expiry: {handed:?}"
    );
    assert!(read("b").contains("draining: VIP Leases released"), "{}", read("b"));
    let _ = db.0.kill();
    let _ = da.0.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
