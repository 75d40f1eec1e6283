//! Kubernetes-driven L2 ownership (root, network namespaces, the in-repo API server emulator): two appliances with
//! `vip_leases = true` on one bridged segment, a DSR-L2 Service with one backend. One appliance takes the VIP's Lease
//! and alone answers ARP for it; killing it moves the VIP to the other within the Lease duration plus a second: the
//! client's neighbour entry moves with the gratuitous ARP, a UDP probe every 10 ms resumes (the stall is printed) and
//! an open TCP connection carries on (picked up mid-flow, the same backend).

use edgelb_testkit::daemon::Edgelbd;
use edgelb_testkit::netns::{in_netns, mac_text, require_root, Lab, Reaped};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
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
    edgelb.io/loadBalancerIPs: 198.19.0.1
spec:
  type: LoadBalancer
  loadBalancerClass: edgelb.io/lb
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
"#;

fn temp(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The backend: the VIP on its loopback (DSR), a TCP server answering each line with `be`, a UDP echo.
fn backend(be: &str, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let tcp = in_netns(be, || TcpListener::bind("0.0.0.0:80").unwrap());
    tcp.set_nonblocking(true).unwrap();
    let udp = in_netns(be, || UdpSocket::bind("0.0.0.0:53").unwrap());
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

fn holder(mg: &str, kubeconfig: &std::path::Path) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", mg, "kubectl", "--kubeconfig"])
        .arg(kubeconfig)
        .args(["get", "--raw", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/edgelb-vip-198-19-0-1"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["spec"]["holderIdentity"].as_str().unwrap_or("").to_string()
}

/// The client's neighbour entry for the VIP (its MAC, empty when none).
fn client_sees(lab: &Lab, cl: &str) -> String {
    lab.ip(cl, "neigh show 198.19.0.1").split_whitespace().skip_while(|w| *w != "lladdr").nth(1).unwrap_or("").into()
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
    lab.ip(&be, "addr add 198.18.0.20/24 dev be0");
    lab.ip(&be, "addr add 198.19.0.1/32 dev lo");
    lab.sysctl(&be, "net.ipv4.conf.all.arp_ignore", "1");
    lab.sysctl(&be, "net.ipv4.conf.all.arp_announce", "2");
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = backend(&be, stop.clone());
    let dir = std::env::temp_dir().join(format!("edgelb-vipl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut emu = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &mg, "python3"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/apiserver.py"))
            .args(["18083", "--host", "0.0.0.0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut ready = String::new();
    BufReader::new(emu.0.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let kubeconfig = |name: &str, server: &str| {
        temp(
            &dir,
            &format!("{name}.kubeconfig"),
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: emu\n  cluster:\n    server: http://{server}:18083\n\
                 contexts:\n- name: emu\n  context:\n    cluster: emu\n    user: u\n    namespace: default\n\
                 current-context: emu\nusers:\n- name: u\n  user: {{}}\n"
            ),
        )
    };
    let km = kubeconfig("mg", "127.0.0.1");
    let start = |ns: &str, name: &str, server: &str, addr: &str| {
        let kc = kubeconfig(name, server);
        let cfg = temp(
            &dir,
            &format!("{name}.toml"),
            &format!(
                "[[port]]\nname = \"lb0\"\ndriver = \"afpacket\"\naddresses = [\"{addr}/24\"]\nframes = 256\n\n\
                 [api]\nenabled = false\n\n\
                 [kubernetes]\nkubeconfig = \"{}\"\nidentity = \"{name}\"\nlease_duration = {LEASE_DURATION}\n\
                 vip_leases = true\n\n[[kubernetes.pool]]\nname = \"lab\"\naddresses = [\"198.19.0.0/28\"]\n",
                kc.display()
            ),
        );
        Edgelbd::new(EDGELBD, ns, &cfg).spawn(&dir.join(format!("{name}.log")))
    };
    let mut da = start(&a, "a", "198.18.254.1", "198.18.0.1");
    let mut db = start(&b, "b", "198.18.254.5", "198.18.0.2");
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
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let h = holder(&mg, &km);
        if !h.is_empty() {
            break h;
        }
        assert!(Instant::now() < deadline, "nobody took the VIP's Lease:\na:\n{}\nb:\n{}", read("a"), read("b"));
        std::thread::sleep(Duration::from_millis(100));
    };
    let (first_ns, other, other_ns) = if first == "a" { (&a, "b", &b) } else { (&b, "a", &a) };
    // The client reaches the backend through the holder alone.
    let vip: SocketAddr = "198.19.0.1:80".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut conn = loop {
        let c = in_netns(&cl, move || TcpStream::connect_timeout(&vip, Duration::from_millis(500)));
        if let Ok(c) = c {
            break c;
        }
        assert!(Instant::now() < deadline, "the VIP never answered:\na:\n{}\nb:\n{}", read("a"), read("b"));
        std::thread::sleep(Duration::from_millis(100));
    };
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let ask = |c: &mut TcpStream| -> Result<(), String> {
        c.write_all(b"ping\n").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 3];
        c.read_exact(&mut buf).map_err(|e| e.to_string())?;
        (&buf == b"be\n").then_some(()).ok_or_else(|| format!("{buf:?}"))
    };
    ask(&mut conn).unwrap();
    let holder_mac = mac_text(lab.mac(first_ns, "lb0"));
    let other_mac = mac_text(lab.mac(other_ns, "lb0"));
    assert_eq!(client_sees(&lab, &cl), holder_mac, "the client resolved the VIP to the Lease holder");
    // A UDP probe every 10 ms, answers timed.
    let answers: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let probe = {
        let (answers, stop) = (answers.clone(), stop.clone());
        let sock = in_netns(&cl, || UdpSocket::bind("0.0.0.0:0").unwrap());
        sock.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
        std::thread::spawn(move || {
            let (mut next, end) = (Instant::now(), Instant::now() + Duration::from_secs(120));
            let mut buf = [0u8; 16];
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                if Instant::now() >= next {
                    let _ = sock.send_to(b"probe", "198.19.0.1:53");
                    next += Duration::from_millis(10);
                }
                if sock.recv_from(&mut buf).is_ok() {
                    answers.lock().unwrap().push(Instant::now());
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(answers.lock().unwrap().len() > 20, "UDP probes through the holder");
    // Kill the holder.
    let killed = Instant::now();
    let dead = if first == "a" { &mut da } else { &mut db };
    let _ = dead.0.kill();
    let _ = dead.0.wait();
    let deadline = killed + Duration::from_secs(LEASE_DURATION + 5);
    while client_sees(&lab, &cl) != other_mac {
        assert!(Instant::now() < deadline, "the client never saw the VIP move:\n{other}:\n{}", read(other));
        std::thread::sleep(Duration::from_millis(20));
    }
    let moved = killed.elapsed();
    let took_lease = holder(&mg, &km);
    std::thread::sleep(Duration::from_millis(500));
    let stall = {
        let a = answers.lock().unwrap();
        let mut last = killed;
        let mut worst = Duration::ZERO;
        for t in a.iter().filter(|t| **t >= killed) {
            worst = worst.max(t.duration_since(last));
            last = *t;
        }
        worst
    };
    // The open connection carries on through the other appliance (TCP retransmits at its own pace).
    let resumed = ask(&mut conn);
    let resumed_after = killed.elapsed();
    stop.store(true, Ordering::Relaxed);
    probe.join().unwrap();
    drop(conn);
    for t in threads.drain(..) {
        t.join().unwrap();
    }
    println!("VIP Lease held by {first}; {first} killed; Lease duration {LEASE_DURATION} s:");
    println!("  the client's neighbour entry moved to {other} after {moved:?} (gratuitous ARP)");
    println!("  longest UDP stall (probes every 10 ms): {stall:?}");
    println!("  the open TCP connection answered again {resumed_after:?} after the kill: {resumed:?}");
    assert_eq!(took_lease, other);
    assert!(resumed.is_ok(), "the TCP connection broke: {resumed:?}\n{other}:\n{}", read(other));
    let bound = Duration::from_secs(LEASE_DURATION + 1);
    assert!(moved <= bound && stall <= bound, "moved after {moved:?}, stall {stall:?}: more than {bound:?}");
    assert!(read(other).contains("VIP Lease held: answering and announcing the VIP"), "{}", read(other));
    let _ = db.0.kill();
    let _ = da.0.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
