//! Real TCP through the dataplane: a client namespace, the appliance namespace (a worker on three AF_PACKET ports)
//! and two backend namespaces running TCP and UDP servers. Kernel stacks on both ends; NAT, full-NAT and DSR-L2;
//! 100 TCP connections, 20 UDP request/responses and a ping to the VIP per mode. The neighbours are static (the slow
//! path that resolves them is still to come).
//!
//! ```text
//!  cl (198.18.0.10) ─ cl0 ═ lb0 ─┐             ┌─ lb1 ═ be0 ─ be1 ns (198.18.2.10:8080)
//!                                appliance ns ──┤
//!                                (VIP 198.19.0.1:80, NAT)  └─ lb2 ═ be0 ─ be2 ns (198.18.2.20:8080)
//! ```

use edgelb_dataplane::model::{BackendSpec, BackendState, InterfaceSpec, Mode, Model, Protocol, ServiceSpec};
use edgelb_dataplane::pipeline::TableSizes;
use edgelb_dataplane::port::afpacket::{AfPacketConfig, AfPacketPort};
use edgelb_dataplane::port::afxdp::AfXdpPort;
use edgelb_dataplane::port::{buf_pool, BufPool, Port, BURST};
use edgelb_dataplane::snapshot::{ConfigBuilder, ConfigHandle};
use edgelb_dataplane::worker::{Polling, WorkerSetup, Workers};
use edgelb_testkit::netns::{in_netns, require_root, Lab};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A TCP server in namespace `ns` on `addr` answering each connection with "<name> <client address>\n", until `stop`.
fn server(ns: &str, addr: &'static str, name: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    let listener = in_netns(ns, move || TcpListener::bind(addr).unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut served = 0;
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false).unwrap();
                    let _ = s.write_all(format!("{name} {}\n", peer.ip()).as_bytes());
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        served
    })
}

/// A UDP server in `ns` answering every datagram with `name`, until `stop`.
fn udp_echo(ns: &str, addr: &'static str, name: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let sock = in_netns(ns, move || UdpSocket::bind(addr).unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(name.as_bytes(), peer);
            }
        }
    })
}

fn afpacket(ifname: &str, pool: BufPool) -> AfPacketPort {
    AfPacketPort::open(ifname, AfPacketConfig { frames: 256, pool: Some(pool), ..Default::default() }).unwrap()
}

fn afxdp(ifname: &str, pool: BufPool) -> AfXdpPort {
    AfXdpPort::open_with_pool(ifname, pool).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn nat_carries_real_tcp_connections() {
    carry_real_tcp(Mode::Nat, "198.18.0.10", afpacket);
}

/// The same over AF_XDP ports (copy mode, our XDP program on each appliance interface).
#[test]
fn nat_over_af_xdp_carries_real_tcp_connections() {
    carry_real_tcp(Mode::Nat, "198.18.0.10", afxdp);
}

/// Full-NAT: the backends see the appliance's source address, and their replies (to that address, through either
/// port) are translated back.
#[test]
fn fullnat_carries_real_tcp_connections() {
    carry_real_tcp(Mode::FullNat, "198.18.2.1", afpacket);
}

/// DSR L2: the appliance only rewrites the destination MAC; the backends hold the VIP on `lo` and answer the client
/// directly over their own link to it (the appliance never sees a reply).
#[test]
fn dsr_l2_carries_real_tcp_connections() {
    carry_real_tcp(Mode::DsrL2, "198.18.0.10", afpacket);
}

fn carry_real_tcp<P: Port + 'static>(mode: Mode, backend_sees: &str, open: fn(&str, BufPool) -> P)
where
    P::Buf: 'static,
{
    require_root();
    let tag = match mode {
        Mode::Nat => "nat",
        Mode::FullNat => "fnat",
        _ => "dsr",
    };
    let kind = std::any::type_name::<P>().rsplit("::").next().unwrap_or("port").to_lowercase();
    let mut lab = Lab::new(&format!("{tag}{}", &kind[..4.min(kind.len())]));
    let (cl, lb, be1, be2) = (lab.ns("cl"), lab.ns("lb"), lab.ns("be1"), lab.ns("be2"));
    lab.veth(&cl, "cl0", &lb, "lb0");
    lab.veth(&lb, "lb1", &be1, "be0");
    lab.veth(&lb, "lb2", &be2, "be0");
    let (lb0, lb1, lb2) = (lab.mac(&lb, "lb0"), lab.mac(&lb, "lb1"), lab.mac(&lb, "lb2"));
    let (cl0, b1, b2) = (lab.mac(&cl, "cl0"), lab.mac(&be1, "be0"), lab.mac(&be2, "be0"));
    lab.ip(&cl, "addr add 198.18.0.10/24 dev cl0");
    lab.ip(&cl, "route add 198.19.0.0/24 via 198.18.0.1 dev cl0");
    lab.neigh(&cl, "198.18.0.1", "cl0", lb0);
    for (ns, addr, gw, mac) in
        [(&be1, "198.18.2.10/28", "198.18.2.1", lb1), (&be2, "198.18.2.20/28", "198.18.2.17", lb2)]
    {
        lab.ip(ns, &format!("addr add {addr} dev be0"));
        lab.ip(ns, &format!("route add default via {gw} dev be0"));
        lab.neigh(ns, gw, "be0", mac);
    }

    let dsr = mode == Mode::DsrL2;
    if dsr {
        // Return path: a direct link from each backend to the client; the VIP on the backends' loopback.
        lab.sysctl(&cl, "net.ipv4.conf.all.rp_filter", "0");
        lab.sysctl(&cl, "net.ipv4.conf.default.rp_filter", "0");
        for (i, ns) in [&be1, &be2].into_iter().enumerate() {
            let c_if = format!("ret{}", i + 1);
            lab.veth(ns, "ret0", &cl, &c_if);
            lab.sysctl(&cl, &format!("net.ipv4.conf.{c_if}.rp_filter"), "0");
            let c_mac = lab.mac(&cl, &c_if);
            lab.ip(ns, "addr add 198.19.0.1/32 dev lo");
            lab.sysctl(ns, "net.ipv4.conf.all.arp_ignore", "1");
            lab.sysctl(ns, "net.ipv4.conf.all.arp_announce", "2");
            lab.ip(ns, "route add 198.18.0.10/32 dev ret0");
            lab.neigh(ns, "198.18.0.10", "ret0", c_mac);
        }
    }
    let vip: IpAddr = "198.19.0.1".parse().unwrap();
    let bport = if dsr { 0 } else { 8080 };
    let backend =
        |a: &str| BackendSpec { addr: a.parse().unwrap(), port: bport, weight: 1, state: BackendState::Active };
    let ubport = if dsr { 0 } else { 5353 };
    let ubackend =
        |a: &str| BackendSpec { addr: a.parse().unwrap(), port: ubport, weight: 1, state: BackendState::Active };
    let model = Model {
        services: vec![
            ServiceSpec::new(vip, Protocol::Tcp, Some(80), mode, vec![backend("198.18.2.10"), backend("198.18.2.20")]),
            ServiceSpec::new(
                vip,
                Protocol::Udp,
                Some(53),
                mode,
                vec![ubackend("198.18.2.10"), ubackend("198.18.2.20")],
            ),
        ],
        interfaces: vec![
            InterfaceSpec { port: 0, mac: lb0, addrs: vec![("198.18.0.1".parse().unwrap(), 24)], mtu: 1500 },
            InterfaceSpec { port: 1, mac: lb1, addrs: vec![("198.18.2.1".parse().unwrap(), 28)], mtu: 1500 },
            InterfaceSpec { port: 2, mac: lb2, addrs: vec![("198.18.2.17".parse().unwrap(), 28)], mtu: 1500 },
        ],
        neighbours: vec![
            ("198.18.0.10".parse().unwrap(), cl0),
            ("198.18.2.10".parse().unwrap(), b1),
            ("198.18.2.20".parse().unwrap(), b2),
        ],
        fullnat_sources: vec!["198.18.2.1".parse().unwrap()],
        fullnat_ports: (20000, 29999),
        ..Model::default()
    };
    let (cfg, _) = ConfigBuilder::new().build(&model).expect("lab config is valid");
    let pool = buf_pool(3 * 2048 + 2 * BURST);
    let ports = in_netns(&lb, move || ["lb0", "lb1", "lb2"].iter().map(|i| open(i, pool.clone())).collect::<Vec<_>>());
    let sizes = TableSizes { flows_v4: 4096, flows_v6: 64, affinity: 64, fragments: 64 };
    let workers = Workers::spawn(
        vec![WorkerSetup { worker: 0, core: None, ports, sizes, polling: Polling::Busy, new_flow_limit: 0 }],
        ConfigHandle::new(cfg),
        64,
        64,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (a1, a2) = if dsr { ("198.19.0.1:80", "198.19.0.1:80") } else { ("198.18.2.10:8080", "198.18.2.20:8080") };
    let servers = [server(&be1, a1, "be1", stop.clone()), server(&be2, a2, "be2", stop.clone())];

    // 100 connections, each a fresh TCP handshake through the VIP, bounded in time (2 s each) and stopped after
    // three failures, so a broken path fails in seconds.
    let results: Vec<Result<(String, u16), String>> = in_netns(&cl, || {
        let mut out = Vec::new();
        for _ in 0..100 {
            let r = (|| {
                let mut s =
                    TcpStream::connect_timeout(&SocketAddr::from(([198, 19, 0, 1], 80)), Duration::from_secs(2))
                        .map_err(|e| format!("connect: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
                let mut text = String::new();
                s.read_to_string(&mut text).map_err(|e| format!("read: {e}"))?;
                Ok((text, port))
            })();
            out.push(r);
            if out.iter().filter(|r| r.is_err()).count() >= 3 {
                break;
            }
        }
        out
    });
    // UDP through the VIP: echo servers answer "<name>"; every reply comes back from VIP:53.
    let (u1, u2) = if dsr { ("198.19.0.1:53", "198.19.0.1:53") } else { ("198.18.2.10:5353", "198.18.2.20:5353") };
    let echoes = [udp_echo(&be1, u1, "be1", stop.clone()), udp_echo(&be2, u2, "be2", stop.clone())];
    let udp: Vec<Result<(String, SocketAddr, u16), String>> = in_netns(&cl, || {
        (0..20u16)
            .map(|i| {
                let s = UdpSocket::bind("198.18.0.10:0").map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                s.send_to(&i.to_be_bytes(), "198.19.0.1:53").map_err(|e| format!("send: {e}"))?;
                let mut buf = [0u8; 64];
                let (n, from) = s.recv_from(&mut buf).map_err(|e| format!("no UDP reply: {e}"))?;
                let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
                Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from, port))
            })
            .collect()
    });
    // ICMP echo to the VIP, answered by the appliance itself.
    let ping = Command::new("ip")
        .args(["netns", "exec", &cl, "ping", "-c", "3", "-i", "0.2", "-W", "1", "198.19.0.1"])
        .output();
    stop.store(true, Ordering::Relaxed);
    for e in echoes {
        e.join().unwrap();
    }
    for r in &udp {
        let (body, from, _) = r.as_ref().unwrap_or_else(|e| panic!("{mode:?}: UDP through the VIP: {e}"));
        assert!(body == "be1" || body == "be2", "{body}");
        assert_eq!(*from, "198.19.0.1:53".parse::<SocketAddr>().unwrap(), "{mode:?}: the reply comes from the VIP");
    }
    let ping = ping.expect("ping runs");
    assert!(ping.status.success(), "{mode:?}: ping to the VIP: {}", String::from_utf8_lossy(&ping.stdout));
    let served: Vec<u32> = servers.into_iter().map(|t| t.join().unwrap()).collect();
    let (_ports, total) = workers.stop_with_totals();

    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty() && results.len() == 100,
        "{} of 100 connections failed: {:?}; appliance counters {total:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let mut per_backend: HashMap<String, u32> = HashMap::new();
    for (r, _) in results.iter().flatten() {
        let mut it = r.split_whitespace();
        let (name, peer) = (it.next().unwrap().to_string(), it.next().unwrap());
        assert_eq!(peer, backend_sees, "{mode:?}: the address the backend sees");
        *per_backend.entry(name).or_default() += 1;
    }
    assert_eq!(served.iter().sum::<u32>(), 100);
    assert!(per_backend.values().all(|&n| n >= 25), "both backends take a share: {per_backend:?}");
    assert_eq!(per_backend.len(), 2);
    // One new flow per distinct client 5-tuple: a UDP socket that happens to get a port an earlier one had (random
    // ephemeral ports: ~0.7 % per run of 20) rightly continues that flow.
    let tcp_ports: std::collections::HashSet<u16> = results.iter().flatten().map(|(_, p)| *p).collect();
    let udp_ports: std::collections::HashSet<u16> = udp.iter().flatten().map(|(_, _, p)| *p).collect();
    assert_eq!(
        total.new_flows,
        (tcp_ports.len() + udp_ports.len()) as u64,
        "{} distinct TCP and {} distinct UDP client ports: {total:?}",
        tcp_ports.len(),
        udp_ports.len()
    );
    assert!(tcp_ports.len() == 100 && udp_ports.len() >= 18, "{} {}", tcp_ports.len(), udp_ports.len());
    assert_eq!(total.icmp_echo, 3, "the appliance answered the pings: {total:?}");
    if dsr {
        assert_eq!(total.replies, 0, "DSR replies bypass the appliance: {total:?}");
    } else {
        assert!(total.replies >= 200, "SYN-ACK and data back through the appliance: {total:?}");
    }
}
