//! Pipeline behaviour that a single golden packet cannot show: snapshots swapped under tracked flows, affinity,
//! flow ownership across workers (pipeline level and real threads), SYN floods against a full table, expiry, and
//! configuration errors. Packets are built with `wire::build` and checked by parsing them back.

use edgelb_dataplane::model::{BackendSpec, BackendState, InterfaceSpec, Mode, Model, Protocol, ServiceSpec, Timeouts};
use edgelb_dataplane::packet::{MemBuf, PacketBuf};
use edgelb_dataplane::pipeline::{owner_of_client, DropReason, Pipeline, TableSizes, Tuple, Verdict};
use edgelb_dataplane::port::mem;
use edgelb_dataplane::snapshot::{addr16, ConfigBuilder, ConfigHandle, DataplaneConfig};
use edgelb_dataplane::wire::build::{frame, Segment};
use edgelb_dataplane::wire::ipv4::Ipv4Packet;
use edgelb_dataplane::wire::tcp::{flags, TcpPacket};
use edgelb_dataplane::wire::{checksum, proto};
use edgelb_dataplane::worker::{Polling, WorkerSetup, Workers};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PORT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0];
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const VIP: &str = "198.19.0.1";

fn backend(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 2, 10 + i))
}

fn model(mode: Mode, backends: &[(u8, BackendState)], affinity: Option<u32>) -> Model {
    let mut s = ServiceSpec::new(
        VIP.parse().unwrap(),
        Protocol::Tcp,
        Some(80),
        mode,
        backends.iter().map(|&(i, state)| BackendSpec { addr: backend(i), port: 8080, weight: 1, state }).collect(),
    );
    s.affinity_timeout_s = affinity;
    let mut neighbours: Vec<(IpAddr, [u8; 6])> = (0..32).map(|i| (backend(i), [2, 0, 0, 2, 0, i])).collect();
    neighbours.push(("198.18.1.254".parse().unwrap(), GW_MAC));
    Model {
        services: vec![s],
        interfaces: vec![InterfaceSpec {
            port: 0,
            mac: PORT_MAC,
            addrs: vec![("198.18.1.1".parse().unwrap(), 24), ("198.18.2.1".parse().unwrap(), 24)],
            mtu: 1500,
        }],
        gateways: vec!["198.18.1.254".parse().unwrap()],
        neighbours,
        fullnat_sources: vec!["198.18.2.1".parse().unwrap()],
        fullnat_ports: (20000, 29999),
        tunnel_sources: vec![],
        timeouts: Timeouts::default(),
        draining: false,
    }
}

fn active(n: u8) -> Vec<(u8, BackendState)> {
    (0..n).map(|i| (i, BackendState::Active)).collect()
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc612_8000 + i))
}

fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, fl: u8) -> MemBuf {
    let mut buf = [0u8; 128];
    let seg = Segment { src, dst, proto: proto::TCP, sport, dport, tcp_flags: fl, payload: b"", ttl: 64 };
    let n = frame(&mut buf, PORT_MAC, GW_MAC, &seg).unwrap();
    MemBuf::from_slice(&buf[..n])
}

/// Destination address and port of a transmitted IPv4/TCP frame, checksums verified.
fn dest(b: &MemBuf) -> (IpAddr, u16) {
    let ip = Ipv4Packet::new_checked(&b.data()[14..]).unwrap();
    assert!(ip.verify_checksum());
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    let acc = checksum::pseudo_v4(ip.src(), ip.dst(), proto::TCP, ip.payload().len() as u16);
    assert_eq!(checksum::finish(checksum::sum(acc, ip.payload())), 0, "TCP checksum");
    (IpAddr::V4(ip.dst().into()), t.dst_port())
}

fn pipeline() -> Pipeline {
    Pipeline::new(0, 1, TableSizes { flows_v4: 100_000, flows_v6: 64, affinity: 4096, fragments: 64 })
}

fn send(p: &mut Pipeline, cfg: &DataplaneConfig, b: &mut MemBuf, now: u32) -> Verdict {
    p.sync(cfg);
    p.process(cfg, 0, b, now)
}

/// Tracked flows keep their backend across a snapshot that adds a backend; new flows follow the new table, which
/// moved close to 1/(N+1) of its slots.
#[test]
fn snapshot_swap_keeps_tracked_flows() {
    let mut builder = ConfigBuilder::new();
    let (a, _) = builder.build(&model(Mode::Nat, &active(4), None)).unwrap();
    let mut p = pipeline();
    let mut first = HashMap::new();
    for i in 0..2000 {
        let mut b = tcp(client(i), 1000, VIP.parse().unwrap(), 80, flags::SYN);
        assert_eq!(send(&mut p, &a, &mut b, 1), Verdict::Tx(0));
        first.insert(i, dest(&b).0);
    }
    let (b_cfg, moved) = builder.build(&model(Mode::Nat, &active(5), None)).unwrap();
    let frac = moved[0].moved as f64 / moved[0].table_size as f64;
    assert!((0.15..0.25).contains(&frac), "adding 1 backend to 4 moved {frac:.3} of the slots, want ≈ 0.2");
    let mut moved_new = 0;
    for i in 0..2000 {
        let mut b = tcp(client(i), 1000, VIP.parse().unwrap(), 80, flags::ACK);
        assert_eq!(send(&mut p, &b_cfg, &mut b, 2), Verdict::Tx(0));
        assert_eq!(dest(&b).0, first[&i], "tracked flow {i} changed backend after the swap");
        let mut n = tcp(client(i), 2000, VIP.parse().unwrap(), 80, flags::SYN);
        send(&mut p, &b_cfg, &mut n, 2);
        if dest(&n).0 == backend(4) {
            moved_new += 1;
        }
    }
    assert!(moved_new > 250, "new flows should reach the added backend: {moved_new} of 2000");
    assert_eq!(p.counters.rescheduled, 0);
}

/// Draining keeps tracked flows; Down reschedules them to an active backend.
#[test]
fn draining_and_down() {
    let mut builder = ConfigBuilder::new();
    let (a, _) = builder.build(&model(Mode::Nat, &active(2), None)).unwrap();
    let mut p = pipeline();
    let mut on_b0 = vec![];
    for i in 0..200 {
        let mut b = tcp(client(i), 1000, VIP.parse().unwrap(), 80, flags::SYN);
        send(&mut p, &a, &mut b, 1);
        if dest(&b).0 == backend(0) {
            on_b0.push(i);
        }
    }
    assert!(!on_b0.is_empty());
    let (drain, _) =
        builder.build(&model(Mode::Nat, &[(0, BackendState::Draining), (1, BackendState::Active)], None)).unwrap();
    for &i in &on_b0 {
        let mut b = tcp(client(i), 1000, VIP.parse().unwrap(), 80, flags::ACK);
        send(&mut p, &drain, &mut b, 2);
        assert_eq!(dest(&b).0, backend(0), "a draining backend keeps its flows");
        let mut n = tcp(client(i), 3000, VIP.parse().unwrap(), 80, flags::SYN);
        send(&mut p, &drain, &mut n, 2);
        assert_eq!(dest(&n).0, backend(1), "a draining backend takes no new flows");
        // The query names both: the tracked backend, and where Maglev sends the flow without this state (what an
        // appliance without flow sync does with it after a failover).
        let t = Tuple { src: client(i), dst: VIP.parse().unwrap(), proto: proto::TCP, sport: 1000, dport: 80 };
        let q = p.query(&drain, &t, 2).unwrap();
        let addr = |id: Option<u32>| {
            let b = drain.backend(id?)?;
            Some(IpAddr::V4(Ipv4Addr::new(b.addr[12], b.addr[13], b.addr[14], b.addr[15])))
        };
        assert!(q.tracked);
        assert_eq!((addr(Some(q.backend)), addr(q.fresh)), (Some(backend(0)), Some(backend(1))), "{q:?}");
    }
    let (down, _) =
        builder.build(&model(Mode::Nat, &[(0, BackendState::Down), (1, BackendState::Active)], None)).unwrap();
    for &i in &on_b0 {
        let mut b = tcp(client(i), 1000, VIP.parse().unwrap(), 80, flags::ACK);
        send(&mut p, &down, &mut b, 3);
        assert_eq!(dest(&b).0, backend(1), "flows of a down backend are rescheduled");
    }
    assert_eq!(p.counters.rescheduled, on_b0.len() as u64);
    assert_eq!(p.backend_stats[0].active_flows, 0, "rescheduled flows left backend 0");
    p.sum_service_flows(&down);
    let svc = down.services[0].id as usize;
    assert_eq!(p.service_stats[svc].active_flows, p.backend_stats[1].active_flows);
    // 200 first flows plus one more per backend-0 client opened while draining: all tracked, all on backend 1 now.
    assert_eq!(p.service_stats[svc].active_flows, 200 + on_b0.len() as i64);
}

/// ClientIP affinity: every connection of one client reaches one backend; clients spread over all backends.
#[test]
fn client_ip_affinity() {
    let (cfg, _) = ConfigBuilder::new().build(&model(Mode::Nat, &active(4), Some(600))).unwrap();
    let mut p = pipeline();
    let mut per_backend: HashMap<IpAddr, u32> = HashMap::new();
    for c in 0..400 {
        let mut seen = None;
        for port in 0..5 {
            let mut b = tcp(client(c), 40000 + port, VIP.parse().unwrap(), 80, flags::SYN);
            send(&mut p, &cfg, &mut b, 1);
            let d = dest(&b).0;
            assert!(seen.is_none_or(|s| s == d), "client {c} reached two backends");
            seen = Some(d);
        }
        *per_backend.entry(seen.unwrap()).or_default() += 1;
    }
    assert_eq!(per_backend.len(), 4, "{per_backend:?}");
    assert!(per_backend.values().all(|&n| n > 50), "{per_backend:?}");
    // The query API answers the same without changing anything.
    let q = p.query(
        &cfg,
        &Tuple { src: client(7), dst: VIP.parse().unwrap(), proto: proto::TCP, sport: 40000, dport: 80 },
        2,
    );
    let q = q.unwrap();
    assert!(q.tracked);
    let mut b = tcp(client(7), 40001, VIP.parse().unwrap(), 80, flags::ACK);
    send(&mut p, &cfg, &mut b, 2);
    assert_eq!(
        Some(dest(&b).0),
        cfg.backend(q.backend).map(|b| IpAddr::V4(Ipv4Addr::new(b.addr[12], b.addr[13], b.addr[14], b.addr[15])))
    );
}

/// Two pipelines as two workers: each packet is processed by the owner of its flow, the other hands it off;
/// NAT replies and full-NAT replies find the same owner as their flow.
#[test]
fn flow_ownership_both_directions() {
    for mode in [Mode::Nat, Mode::FullNat] {
        let (cfg, _) = ConfigBuilder::new().build(&model(mode, &active(3), None)).unwrap();
        let mut w = [
            Pipeline::new(0, 2, TableSizes { flows_v4: 4096, flows_v6: 64, affinity: 64, fragments: 64 }),
            Pipeline::new(1, 2, TableSizes { flows_v4: 4096, flows_v6: 64, affinity: 64, fragments: 64 }),
        ];
        w[0].sync(&cfg);
        w[1].sync(&cfg);
        let mut handoffs = 0;
        for i in 0..200u32 {
            let c = client(i);
            // The client's SYN arrives at worker 1 (as if the NIC put it there).
            let mut b = tcp(c, 5000, VIP.parse().unwrap(), 80, flags::SYN);
            let mut v = w[1].process(&cfg, 0, &mut b, 1);
            if let Verdict::Handoff(o) = v {
                handoffs += 1;
                assert_eq!(o, 0);
                v = w[0].process(&cfg, 0, &mut b, 1);
            }
            assert_eq!(v, Verdict::Tx(0), "{mode:?} flow {i}");
            let owner = owner_of_client(&addr16(c), 2);
            let ip = Ipv4Packet::new_checked(&b.data()[14..]).unwrap();
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            // The backend's reply, arriving at the worker that does not own the flow.
            let reply_src = IpAddr::V4(ip.dst().into());
            let reply_dst = IpAddr::V4(ip.src().into());
            let mut r = tcp(reply_src, t.dst_port(), reply_dst, t.src_port(), flags::SYN | flags::ACK);
            let other = 1 - owner as usize;
            let v = w[other].process(&cfg, 0, &mut r, 2);
            assert_eq!(v, Verdict::Handoff(owner), "{mode:?}: the reply must go to the flow's owner");
            let v = w[owner as usize].process(&cfg, 0, &mut r, 2);
            assert_eq!(v, Verdict::Tx(0));
            let ip = Ipv4Packet::new_checked(&r.data()[14..]).unwrap();
            assert_eq!(IpAddr::V4(ip.src().into()), VIP.parse::<IpAddr>().unwrap());
            assert_eq!(IpAddr::V4(ip.dst().into()), c);
        }
        assert!(handoffs > 50 && handoffs < 150, "{mode:?}: about half the flows belong to worker 0: {handoffs}");
    }
}

/// Real threads: two pinned workers with their own in-memory ports. Packets injected at worker 1 for flows that
/// worker 0 owns cross the hand-off ring and leave through worker 0's port.
#[test]
fn workers_hand_off_across_threads() {
    let (cfg, _) = ConfigBuilder::new().build(&model(Mode::Nat, &active(3), None)).unwrap();
    let handle = ConfigHandle::new(cfg);
    let (p0, peer0) = mem::pair("w0", 1024);
    let (p1, peer1) = mem::pair("w1", 1024);
    let sizes = TableSizes { flows_v4: 4096, flows_v6: 64, affinity: 64, fragments: 64 };
    let workers = Workers::spawn(
        vec![
            WorkerSetup { worker: 0, core: Some(0), ports: vec![p0], sizes, polling: Polling::Busy, new_flow_limit: 0 },
            WorkerSetup { worker: 1, core: Some(1), ports: vec![p1], sizes, polling: Polling::Busy, new_flow_limit: 0 },
        ],
        handle,
        1024,
        64,
    );
    let mut want = [0usize; 2];
    let mut sent = 0;
    for i in 0..500u32 {
        let c = client(i);
        want[owner_of_client(&addr16(c), 2) as usize] += 1;
        assert!(peer1.inject(tcp(c, 7000, VIP.parse().unwrap(), 80, flags::SYN)).is_ok());
        sent += 1;
    }
    let mut got = [0usize; 2];
    let deadline = Instant::now() + Duration::from_secs(10);
    while got[0] + got[1] < sent && Instant::now() < deadline {
        for (i, peer) in [&peer0, &peer1].into_iter().enumerate() {
            while let Some(b) = peer.collect() {
                let (d, port) = dest(&b);
                assert_eq!(port, 8080);
                assert!(d != VIP.parse::<IpAddr>().unwrap());
                got[i] += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (_ports, total) = workers.stop_with_totals();
    assert_eq!(got, want, "each flow leaves by its owner's port");
    assert_eq!(total.handoff as usize, want[0], "every flow of worker 0 was handed off once");
    assert_eq!(total.tx as usize, sent);
}

/// A SYN flood against a table full of established flows: the established flows keep their backends, the flood is
/// still forwarded (untracked once the table is full), and the failures are counted.
#[test]
fn syn_flood_spares_established_flows() {
    // Established flows get the *shorter* timeout here, so "evict what expires soonest" alone would pick them: only
    // their protected state can save them.
    let mut m = model(Mode::Nat, &active(8), None);
    m.timeouts = Timeouts { tcp_syn: 60, tcp_established: 40, ..Timeouts::default() };
    let (cfg, _) = ConfigBuilder::new().build(&m).unwrap();
    let mut p = Pipeline::new(0, 1, TableSizes { flows_v4: 2000, flows_v6: 64, affinity: 64, fragments: 64 });
    p.sync(&cfg);
    let cap = p.table_capacity().0;
    let mut est = HashMap::new();
    // Established flows: SYN, then ACK, then the backend's reply (which confirms the flow).
    let mut i = 0u32;
    while est.len() < cap * 85 / 100 {
        let mut b = tcp(client(i), 1000, VIP.parse().unwrap(), 80, flags::SYN);
        if p.process(&cfg, 0, &mut b, 1) == Verdict::Tx(0) {
            let d = dest(&b).0;
            let mut a = tcp(client(i), 1000, VIP.parse().unwrap(), 80, flags::ACK);
            p.process(&cfg, 0, &mut a, 1);
            est.insert(i, d);
        }
        i += 1;
    }
    let before = p.table_stats().0;
    assert_eq!(before.insert_failed, 0);
    // The flood: 50 000 SYNs from spoofed sources.
    for j in 0..50_000u32 {
        let mut b = tcp(client(1_000_000 + j), (j % 60000) as u16 + 1, VIP.parse().unwrap(), 80, flags::SYN);
        assert_eq!(p.process(&cfg, 0, &mut b, 2), Verdict::Tx(0), "flood packets are still forwarded");
    }
    let after = p.table_stats().0;
    assert!(after.evicted + after.insert_failed > 0, "the flood filled the table: {after:?}");
    // Maglev would send an evicted flow to the same backend while the backend set is unchanged, so check that every
    // established flow is still *tracked*: no new flow may be scheduled for them.
    let new_before = p.counters.new_flows;
    for (i, d) in &est {
        let mut b = tcp(client(*i), 1000, VIP.parse().unwrap(), 80, flags::ACK);
        assert_eq!(p.process(&cfg, 0, &mut b, 3), Verdict::Tx(0));
        assert_eq!(dest(&b).0, *d, "established flow {i} lost its backend to the flood");
    }
    assert_eq!(p.counters.new_flows, new_before, "established flows were evicted by the flood");
    assert_eq!(p.counters.untracked, after.insert_failed);
    assert_eq!(p.counters.dropped_total(), 0);
}

/// More IPv6 VIPs with live flows than the IPv6 flow table can name (one destination for every 8 of its slots, at
/// least 256): a new flow to one more is still forwarded, untracked, and counted as such apart from a full table.
/// Flows to the VIPs it names stay tracked, and once their flows are gone the table names new VIPs again.
#[test]
fn ipv6_destinations_beyond_the_table_are_counted() {
    let mut m = model(Mode::Nat, &active(1), None);
    let be: IpAddr = "2001:db8:2::10".parse().unwrap();
    m.interfaces[0].addrs.push(("2001:db8:2::1".parse().unwrap(), 64));
    m.neighbours.push((be, [2, 0, 0, 3, 0, 1]));
    let vip = |i: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, i + 1));
    let spec = BackendSpec { addr: be, port: 8080, weight: 1, state: BackendState::Active };
    m.services =
        (0..300).map(|i| ServiceSpec::new(vip(i), Protocol::Tcp, Some(80), Mode::Nat, vec![spec.clone()])).collect();
    m.timeouts = Timeouts { tcp_syn: 2, tcp_established: 5, tcp_closing: 1, udp: 5, fragment: 1 };
    let (cfg, _) = ConfigBuilder::new().build(&m).unwrap();
    let mut p = Pipeline::new(0, 1, TableSizes { flows_v4: 64, flows_v6: 1024, affinity: 64, fragments: 64 });
    p.sync(&cfg);
    assert!(p.table_capacity().1 >= 1024, "room for every flow: only the destinations run out");
    // One client, a source port per flow: replies from the one backend tell the flows apart by it.
    let cl: IpAddr = "2001:db8:1::5".parse().unwrap();
    let mut tracked = 0;
    for i in 0..300 {
        let mut b = tcp(cl, 1000 + i, vip(i), 80, flags::SYN);
        assert_eq!(p.process(&cfg, 0, &mut b, 1), Verdict::Tx(0), "flow to VIP {i} forwarded");
        if p.counters.untracked_destinations == 0 {
            tracked += 1;
        }
    }
    let v6 = p.table_stats().1;
    assert!((256..300).contains(&tracked), "{tracked} VIPs named: {v6:?}, capacity {:?}", p.table_capacity());
    assert_eq!(v6.inserts, tracked, "{v6:?}");
    assert_eq!(p.counters.untracked_destinations, 300 - tracked);
    assert_eq!((p.counters.untracked, v6.addresses_full), (300 - tracked, 300 - tracked));
    assert_eq!(p.counters.dropped_total(), 0);
    // A named VIP's flow is still tracked: its next packet is no new flow.
    let new_flows = p.counters.new_flows;
    let mut b = tcp(cl, 1000, vip(0), 80, flags::ACK);
    assert_eq!(p.process(&cfg, 0, &mut b, 2), Verdict::Tx(0));
    assert_eq!(p.counters.new_flows, new_flows);
    // Once the flows expire and the sweep forgets them, the table names the last VIP.
    let later = 10_000;
    p.housekeeping(usize::MAX, later);
    assert_eq!(p.table_stats().1.occupied, 0);
    let mut b = tcp(cl, 1299, vip(299), 80, flags::SYN);
    assert_eq!(p.process(&cfg, 0, &mut b, later), Verdict::Tx(0));
    assert_eq!(p.counters.untracked_destinations, 300 - tracked, "VIP 299 is named now");
    assert_eq!(p.table_stats().1.inserts, tracked + 1);
}

/// A flow that times out is forgotten: the sweep reclaims it and corrects the backend's active-flow count; its next
/// packet is a new (mid-flow) flow.
#[test]
fn expiry_and_active_flow_accounting() {
    let mut m = model(Mode::Nat, &active(1), None);
    m.timeouts = Timeouts { tcp_syn: 2, tcp_established: 5, tcp_closing: 1, udp: 5, fragment: 1 };
    let (cfg, _) = ConfigBuilder::new().build(&m).unwrap();
    let mut p = pipeline();
    for i in 0..100 {
        let mut b = tcp(client(i), 1000, VIP.parse().unwrap(), 80, flags::SYN);
        send(&mut p, &cfg, &mut b, 1_000);
    }
    assert_eq!(p.backend_stats[0].active_flows, 100);
    p.housekeeping(usize::MAX, 2_500);
    assert_eq!(p.backend_stats[0].active_flows, 100, "SYN timeout is 2 s");
    p.housekeeping(usize::MAX, 3_001);
    assert_eq!(p.backend_stats[0].active_flows, 0);
    assert_eq!(p.table_stats().0.occupied, 0);
    let mut b = tcp(client(0), 1000, VIP.parse().unwrap(), 80, flags::ACK);
    send(&mut p, &cfg, &mut b, 3_002);
    assert_eq!(p.counters.midflow_pickups, 1);
    assert_eq!(p.counters.new_flows, 101);
}

/// A backend's active-flow count follows the table when new flows displace entries: a flow the insert evicts or
/// finds expired leaves its backend's count, the one recorded joins its own. In each family, through a table of a
/// few hundred slots, rounds of SYNs from new clients fill it and evict half-open flows, then, past the SYN timeout,
/// reclaim expired ones. After each round the counts summed over the backends equal the table's occupied slots.
#[test]
fn active_flows_follow_displaced_entries() {
    let mut m = model(Mode::Nat, &active(4), None);
    m.timeouts = Timeouts { tcp_syn: 2, ..Timeouts::default() };
    let be6 = |i: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10 + i));
    m.interfaces[0].addrs.push(("2001:db8:2::1".parse().unwrap(), 64));
    m.neighbours.extend((0..4).map(|i| (be6(i), [2, 0, 0, 3, 0, i as u8])));
    let vip6: IpAddr = "2001:db8:100::1".parse().unwrap();
    let backends = (0..4).map(|i| BackendSpec { addr: be6(i), port: 8080, weight: 1, state: BackendState::Active });
    m.services.push(ServiceSpec::new(vip6, Protocol::Tcp, Some(80), Mode::Nat, backends.collect()));
    let (cfg, _) = ConfigBuilder::new().build(&m).unwrap();
    for v6 in [false, true] {
        let sizes = TableSizes { flows_v4: 256, flows_v6: 256, affinity: 64, fragments: 64 };
        let mut p = Pipeline::new(0, 1, sizes);
        p.sync(&cfg);
        let vip = if v6 { vip6 } else { VIP.parse().unwrap() };
        let from = |i: u32| match v6 {
            true => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, (i >> 16) as u16, i as u16)),
            false => client(i),
        };
        let table = |p: &Pipeline| if v6 { p.table_stats().1 } else { p.table_stats().0 };
        let mut next = 0u32;
        for (round, now) in [1u32, 2, 5_000, 5_001].into_iter().enumerate() {
            for _ in 0..1000 {
                let mut b = tcp(from(next), 1000, vip, 80, flags::SYN);
                assert_eq!(p.process(&cfg, 0, &mut b, now), Verdict::Tx(0), "IPv6 {v6}, round {round}, client {next}");
                next += 1;
            }
            let t = table(&p);
            let active: i64 = p.backend_stats.iter().map(|c| c.active_flows).sum();
            assert_eq!(active, t.occupied as i64, "IPv6 {v6}, round {round}: {t:?}");
        }
        let t = table(&p);
        assert!(t.evicted > 0 && t.expired > 0, "IPv6 {v6}: the rounds should both evict and reclaim: {t:?}");
    }
}

/// Full-NAT gives each flow its own source port from the worker's range; replies to an unknown port are not
/// translated.
#[test]
fn fullnat_ports_are_distinct() {
    let (cfg, _) = ConfigBuilder::new().build(&model(Mode::FullNat, &active(1), None)).unwrap();
    let mut p = pipeline();
    let mut ports = std::collections::HashSet::new();
    for i in 0..1000 {
        let mut b = tcp(client(i % 10), 1000 + (i / 10) as u16, VIP.parse().unwrap(), 80, flags::SYN);
        assert_eq!(send(&mut p, &cfg, &mut b, 1), Verdict::Tx(0));
        let ip = Ipv4Packet::new_checked(&b.data()[14..]).unwrap();
        assert_eq!(ip.src(), [198, 18, 2, 1]);
        let sport = TcpPacket::new_checked(ip.payload()).unwrap().src_port();
        assert!((20000..=29999).contains(&sport));
        assert!(ports.insert(sport), "source port {sport} given twice");
    }
    let mut r = tcp(backend(0), 8080, "198.18.2.1".parse().unwrap(), 29999, flags::ACK);
    assert_eq!(send(&mut p, &cfg, &mut r, 2), Verdict::SlowPath, "no flow owns that port: for the host");
}

/// Configuration errors name the field; a rejected build leaves the builder's ids untouched.
#[test]
fn validation_names_the_field() {
    let base = model(Mode::Nat, &active(2), None);
    type Mutator = Box<dyn Fn(&mut Model)>;
    let cases: Vec<(&str, Mutator)> = vec![
        ("services[0].backends[0].weight", Box::new(|m| m.services[0].backends[0].weight = 0)),
        ("services[0].backends[1].weight", Box::new(|m| m.services[0].backends[1].weight = 70_000)),
        ("services[0].port", Box::new(|m| m.services[0].port = Some(0))),
        ("services[0].vip", Box::new(|m| m.services[0].vip = "0.0.0.0".parse().unwrap())),
        ("services[0].vip", Box::new(|m| m.services[0].vip = "224.0.0.1".parse().unwrap())),
        ("services[0].vip", Box::new(|m| m.services[0].vip = "198.18.1.1".parse().unwrap())),
        ("services[0].vip", Box::new(|m| m.services[0].vip = "::ffff:198.19.0.9".parse().unwrap())),
        (
            "services[0].backends[0].addr",
            Box::new(|m| {
                m.services[0].vip = "2001:db8:100::9".parse().unwrap();
                m.services[0].backends[0].addr = "::ffff:198.18.2.9".parse().unwrap();
            }),
        ),
        ("services[1].vip", Box::new(|m| m.services.push(m.services[0].clone()))),
        ("services[0].backends[0].addr", Box::new(|m| m.services[0].backends[0].addr = "2001:db8::1".parse().unwrap())),
        ("services[0].backends[1].addr", Box::new(|m| m.services[0].backends[1] = m.services[0].backends[0].clone())),
        ("services[0].maglev_size", Box::new(|m| m.services[0].maglev_size = Some(65_536))),
        ("services[0].affinity_timeout_s", Box::new(|m| m.services[0].affinity_timeout_s = Some(0))),
        ("services[0].mode", Box::new(|m| m.services[0].mode = Mode::Ipip)),
        (
            "services[0].mode",
            Box::new(|m| {
                m.services[0].mode = Mode::FullNat;
                m.fullnat_sources.clear();
            }),
        ),
        ("services[0].backends[0].port", Box::new(|m| m.services[0].port = None)),
        ("services[0].backends[0].port", Box::new(|m| m.services[0].mode = Mode::DsrL2)),
        (
            "fullnat_ports",
            Box::new(|m| {
                m.services[0].mode = Mode::FullNat;
                m.fullnat_ports = (2000, 1000);
            }),
        ),
        ("fullnat_sources[0]", Box::new(|m| m.fullnat_sources = vec!["198.18.9.9".parse().unwrap()])),
        ("interfaces[0].mtu", Box::new(|m| m.interfaces[0].mtu = 100)),
        ("interfaces[0].addrs[0]", Box::new(|m| m.interfaces[0].addrs[0].1 = 33)),
        ("timeouts.tcp_established", Box::new(|m| m.timeouts.tcp_established = 0)),
        ("timeouts.udp", Box::new(|m| m.timeouts.udp = 30 * 86_400)),
        (
            "services[0].backends",
            Box::new(|m| {
                m.services[0].mode = Mode::DsrL2;
                for b in &mut m.services[0].backends {
                    b.port = 0;
                }
                m.services[0].backends[0].addr = "198.18.7.7".parse().unwrap();
            }),
        ),
    ];
    let mut builder = ConfigBuilder::new();
    let (good, _) = builder.build(&base).unwrap();
    for (field, mutate) in &cases {
        let mut m = base.clone();
        mutate(&mut m);
        let err = builder.build(&m).expect_err(field);
        assert_eq!(err.path.to_string(), *field, "{err}");
        assert!(!err.message.is_empty());
    }
    let (again, _) = builder.build(&base).unwrap();
    assert_eq!(again.generation, good.generation + 1, "failed builds do not advance the generation");
    assert_eq!(again.services[0].maglev_ids, good.services[0].maglev_ids, "ids are stable");
    assert!(cases.len() >= 20);
}

/// Any bytes, and any single-byte corruption of valid packets, get exactly one verdict and never a panic.
mod robustness {
    use super::*;
    use proptest::prelude::*;

    fn shared() -> (Arc<DataplaneConfig>, Vec<Vec<u8>>) {
        let (cfg, _) = ConfigBuilder::new().build(&model(Mode::Nat, &active(3), Some(60))).unwrap();
        let seeds = vec![
            tcp(client(1), 1000, VIP.parse().unwrap(), 80, flags::SYN).data().to_vec(),
            tcp(backend(0), 8080, client(1), 1000, flags::ACK).data().to_vec(),
            tcp(client(2), 1000, "198.18.1.1".parse().unwrap(), 22, flags::SYN).data().to_vec(),
        ];
        (cfg, seeds)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (cfg, _) = shared();
            let mut p = Pipeline::new(0, 1, TableSizes { flows_v4: 64, flows_v6: 64, affinity: 64, fragments: 64 });
            p.sync(&cfg);
            let mut b = MemBuf::from_slice(&bytes);
            let _ = p.process(&cfg, 0, &mut b, 1);
            let c = &p.counters;
            prop_assert_eq!(c.rx, c.tx + c.slowpath + c.handoff + c.held + c.dropped_total());
        }

        #[test]
        fn corrupted_valid_packets(which in 0usize..3, at in 0usize..60, xor in 1u8..=255, cut in 0usize..60) {
            let (cfg, seeds) = shared();
            let mut p = Pipeline::new(0, 1, TableSizes { flows_v4: 64, flows_v6: 64, affinity: 64, fragments: 64 });
            p.sync(&cfg);
            let mut f = seeds[which].clone();
            let at = at % f.len();
            f[at] ^= xor;
            f.truncate(f.len() - cut.min(f.len()));
            let mut b = MemBuf::from_slice(&f);
            let v = p.process(&cfg, 0, &mut b, 1);
            if let Verdict::Tx(_) = v {
                let ip = Ipv4Packet::new_checked(&b.data()[14..]).unwrap();
                prop_assert!(ip.verify_checksum());
            }
            if let Verdict::Drop(r) = v {
                prop_assert!(DropReason::all().any(|x| x == r));
            }
            let c = &p.counters;
            prop_assert_eq!(c.rx, c.tx + c.slowpath + c.handoff + c.held + c.dropped_total());
        }
    }
}

/// A draining appliance keeps its tracked flows and refuses new ones, counting them.
#[test]
fn draining_appliance_refuses_new_flows_only() {
    let mut builder = ConfigBuilder::new();
    let mut m = model(Mode::Nat, &active(2), None);
    let (cfg, _) = builder.build(&m).unwrap();
    let mut p = pipeline();
    let mut b = tcp(client(1), 1000, VIP.parse().unwrap(), 80, flags::SYN);
    assert_eq!(send(&mut p, &cfg, &mut b, 1), Verdict::Tx(0));
    m.draining = true;
    let (drain, _) = builder.build(&m).unwrap();
    let mut a = tcp(client(1), 1000, VIP.parse().unwrap(), 80, flags::ACK);
    assert_eq!(send(&mut p, &drain, &mut a, 2), Verdict::Tx(0), "the tracked flow goes on");
    let mut n = tcp(client(2), 1000, VIP.parse().unwrap(), 80, flags::SYN);
    assert_eq!(send(&mut p, &drain, &mut n, 2), Verdict::Drop(DropReason::Draining));
    assert_eq!(p.counters.dropped(DropReason::Draining), 1);
}

/// Flow replication: appliance A records flows and queues them; B installs them. After a backend drains (on both),
/// B sends the mid-flow packets of A's flows to the backend A chose — the drained one included — where a B without
/// the replicas reschedules the drained backend's flows by Maglev, which no longer lists it. Full-NAT flows are
/// not replicated; a replica for a flow B already tracks leaves B's choice alone.
#[test]
fn replicated_flows_keep_their_backend_on_another_appliance() {
    use edgelb_dataplane::pipeline::replicate::Refused;
    let mut builder = ConfigBuilder::new();
    let (cfg, _) = builder.build(&model(Mode::Nat, &active(3), None)).unwrap();
    let q = Arc::new(crossbeam_queue::ArrayQueue::new(4096));
    let mut a = pipeline();
    a.set_replica_out(Some(q.clone()));
    let mut chosen = HashMap::new();
    for i in 0..300 {
        let mut b = tcp(client(i), 1000, VIP.parse().unwrap(), 80, flags::SYN);
        assert_eq!(send(&mut a, &cfg, &mut b, 1), Verdict::Tx(0));
        chosen.insert(i, dest(&b).0);
    }
    assert_eq!(q.len(), 300, "one record per new flow");
    assert_eq!(a.counters.replicas_queued, 300);
    // Backend 0 drains on both appliances.
    let mut drained = active(3);
    drained[0].1 = BackendState::Draining;
    let (cfg2, _) = ConfigBuilder::new().build(&model(Mode::Nat, &drained, None)).unwrap();
    let mut b_with = pipeline();
    let mut b_without = pipeline();
    b_with.sync(&cfg2);
    while let Some(r) = q.pop() {
        b_with.install_replica(&cfg2, &r, 2).unwrap();
    }
    assert_eq!(b_with.counters.replicas_installed, 300);
    let (mut kept, mut lost, mut on_drained) = (0, 0, 0);
    for i in 0..300 {
        let mut w = tcp(client(i), 1000, VIP.parse().unwrap(), 80, flags::ACK);
        assert_eq!(send(&mut b_with, &cfg2, &mut w, 3), Verdict::Tx(0));
        assert_eq!(dest(&w).0, chosen[&i], "flow {i} kept its backend on the other appliance");
        let mut wo = tcp(client(i), 1000, VIP.parse().unwrap(), 80, flags::ACK);
        send(&mut b_without, &cfg2, &mut wo, 3);
        if chosen[&i] == backend(0) {
            on_drained += 1;
            if dest(&wo).0 == backend(0) {
                kept += 1
            } else {
                lost += 1
            }
        }
    }
    assert!(on_drained > 50, "{on_drained} flows on the drained backend");
    assert_eq!((kept, lost), (0, on_drained), "without replicas every flow of the drained backend moves");
    assert_eq!(b_with.counters.midflow_pickups, 0, "no pick-up: the flows were known");
    // A replica of a flow B tracks already is refused; so is one for a service B lacks.
    let other = (0..3).map(backend).find(|b| *b != chosen[&0]).unwrap();
    let r = edgelb_dataplane::pipeline::replicate::FlowRecord {
        v4: true,
        proto: proto::TCP,
        state: 2,
        src: addr16(client(0)),
        dst: addr16(VIP.parse().unwrap()),
        sport: 1000,
        dport: 80,
        backend: addr16(other),
        backend_port: 8080,
    };
    assert_eq!(b_with.install_replica(&cfg2, &r, 4), Err(Refused::Known));
    assert_eq!(
        b_with.install_replica(&cfg2, &edgelb_dataplane::pipeline::replicate::FlowRecord { dport: 81, ..r }, 4),
        Err(Refused::NoService)
    );
    // Full-NAT flows are not replicated.
    let (fcfg, _) = ConfigBuilder::new().build(&model(Mode::FullNat, &active(3), None)).unwrap();
    let mut f = pipeline();
    let fq = Arc::new(crossbeam_queue::ArrayQueue::new(16));
    f.set_replica_out(Some(fq.clone()));
    let mut b = tcp(client(7), 1000, VIP.parse().unwrap(), 80, flags::SYN);
    send(&mut f, &fcfg, &mut b, 1);
    assert!(fq.is_empty());
}

/// The periodic re-send: A queues each long-lived flow it tracks again once a third of the shorter timeout has
/// passed (here 100 s of 300 s UDP and 900 s TCP established), spread over the following 50 s; B renews its copy's
/// expiry, so a flow that only passes A stays known to B for as long as it runs. A B that took the records once
/// forgets the flows when their timeout passes.
#[test]
fn replicated_flows_are_sent_again_while_they_live() {
    let (cfg, _) = ConfigBuilder::new().build(&model(Mode::Nat, &active(3), None)).unwrap();
    let q = Arc::new(crossbeam_queue::ArrayQueue::new(4096));
    let mut a = pipeline();
    a.set_replica_out(Some(q.clone()));
    for i in 0..300 {
        let mut b = tcp(client(i), 1000, VIP.parse().unwrap(), 80, flags::SYN);
        assert_eq!(send(&mut a, &cfg, &mut b, 1), Verdict::Tx(0));
        let mut b = tcp(client(i), 1000, VIP.parse().unwrap(), 80, flags::ACK);
        assert_eq!(send(&mut a, &cfg, &mut b, 1), Verdict::Tx(0));
    }
    // A half-open flow is not sent again (its timeout is short; the peer has its SYN's record).
    let mut half = tcp(client(999), 1000, VIP.parse().unwrap(), 80, flags::SYN);
    send(&mut a, &cfg, &mut half, 1);
    let (mut b_renewed, mut b_once) = (pipeline(), pipeline());
    b_renewed.sync(&cfg);
    b_once.sync(&cfg);
    while let Some(r) = q.pop() {
        b_renewed.install_replica(&cfg, &r, 2).unwrap();
        b_once.install_replica(&cfg, &r, 2).unwrap();
    }
    // Within the first period nothing is sent again; at its end the pass starts, paced: none at once.
    for now in [2, 50_000, 99_999, 100_001] {
        a.refresh_replicas(&cfg, now);
    }
    assert_eq!(q.len(), 0, "nothing re-sent before the period or at the pass's first tick");
    // 10 s into the pass a fifth of the slots is due, at most 1024 a call.
    a.refresh_replicas(&cfg, 110_001);
    assert!(a.counters.replicas_refresh_queued <= 1024, "{}", a.counters.replicas_refresh_queued);
    for _ in 0..200 {
        a.refresh_replicas(&cfg, 150_002);
    }
    assert_eq!(a.counters.replicas_refresh_queued, 300, "each established flow once, the half-open one not");
    assert_eq!(q.len(), 300);
    while let Some(r) = q.pop() {
        b_renewed.install_replica(&cfg, &r, 150_003).unwrap();
    }
    assert_eq!(b_renewed.counters.replicas_refreshed, 300);
    // Past the first records' expiry (tick 2 + 900 s): B renewed still knows every flow, B once none.
    let now = 2 + 900_000 + 1;
    let (mut known, mut forgotten) = (0, 0);
    for i in 0..300 {
        let t = Tuple { src: client(i), dst: VIP.parse().unwrap(), proto: proto::TCP, sport: 1000, dport: 80 };
        known += usize::from(b_renewed.query(&cfg, &t, now).unwrap().tracked);
        forgotten += usize::from(!b_once.query(&cfg, &t, now).unwrap().tracked);
    }
    assert_eq!((known, forgotten), (300, 300));
    // The next pass starts a period after this one did (tick 100 001).
    a.refresh_replicas(&cfg, 200_000);
    a.refresh_replicas(&cfg, 200_001);
    assert_eq!(a.counters.replicas_refresh_queued, 300);
    for _ in 0..200 {
        a.refresh_replicas(&cfg, 250_003);
    }
    assert_eq!(a.counters.replicas_refresh_queued, 600);
}
