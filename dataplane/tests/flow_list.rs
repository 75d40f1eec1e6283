//! Listing tracked flows through running workers: pages cover every flow once, filters by service and backend
//! partition them, a query on a listed flow says it is tracked, and the census counts them by state. The workers answer between bursts.

use edgelb_dataplane::model::{BackendSpec, BackendState, InterfaceSpec, Mode, Model, Protocol, ServiceSpec, Timeouts};
use edgelb_dataplane::pipeline::{FlowFilter, TableSizes, Tuple};
use edgelb_dataplane::port::mem;
use edgelb_dataplane::snapshot::{addr16, ConfigBuilder, ConfigHandle};
use edgelb_dataplane::wire::build::{frame, Segment};
use edgelb_dataplane::wire::proto;
use edgelb_dataplane::wire::tcp::flags;
use edgelb_dataplane::worker::{Polling, WorkerSetup, Workers};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const PORT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0];
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

fn model() -> Model {
    let be = |i: u8| BackendSpec {
        addr: IpAddr::V4(Ipv4Addr::new(198, 18, 2, 10 + i)),
        port: 8080,
        weight: 1,
        state: BackendState::Active,
    };
    let mut neighbours: Vec<(IpAddr, [u8; 6])> =
        (0..4).map(|i| (IpAddr::V4(Ipv4Addr::new(198, 18, 2, 10 + i)), [2, 0, 0, 2, 0, i])).collect();
    neighbours.push(("198.18.1.254".parse().unwrap(), GW_MAC));
    Model {
        services: vec![
            ServiceSpec::new(
                "198.19.0.1".parse().unwrap(),
                Protocol::Tcp,
                Some(80),
                Mode::Nat,
                (0..4).map(be).collect(),
            ),
            ServiceSpec::new("198.19.0.2".parse().unwrap(), Protocol::Tcp, Some(80), Mode::Nat, vec![be(0)]),
        ],
        interfaces: vec![InterfaceSpec {
            port: 0,
            mac: PORT_MAC,
            addrs: vec![("198.18.1.1".parse().unwrap(), 24), ("198.18.2.1".parse().unwrap(), 24)],
            mtu: 1500,
        }],
        gateways: vec!["198.18.1.254".parse().unwrap()],
        neighbours,
        timeouts: Timeouts::default(),
        ..Model::default()
    }
}

#[test]
fn pages_cover_every_tracked_flow_once_and_filters_partition_them() {
    let (cfg, _) = ConfigBuilder::new().build(&model()).unwrap();
    let handle = ConfigHandle::new(cfg);
    let sizes = TableSizes { flows_v4: 65_536, flows_v6: 1024, affinity: 1024, fragments: 256 };
    let (p0, peer0) = mem::pair("w0", 1024);
    let (p1, peer1) = mem::pair("w1", 1024);
    let workers = Workers::spawn(
        vec![
            WorkerSetup { worker: 0, core: None, ports: vec![p0], sizes, polling: Polling::Busy, new_flow_limit: 0 },
            WorkerSetup { worker: 1, core: None, ports: vec![p1], sizes, polling: Polling::Busy, new_flow_limit: 0 },
        ],
        handle,
        1024,
        256,
    );
    // 600 SYNs from distinct clients: 500 to the first VIP, 100 to the second, split over both workers' ports.
    let send = |range: std::ops::Range<u32>, tcp_flags: u8| {
        let mut buf = [0u8; 128];
        let mut sent = 0;
        for i in range {
            let vip: IpAddr = if i < 500 { "198.19.0.1" } else { "198.19.0.2" }.parse().unwrap();
            let seg = Segment {
                src: IpAddr::V4(Ipv4Addr::from(0xc612_8000 + i)),
                dst: vip,
                proto: proto::TCP,
                sport: 10_000 + i as u16,
                dport: 80,
                tcp_flags,
                payload: &[],
                ttl: 64,
            };
            let n = frame(&mut buf, PORT_MAC, GW_MAC, &seg).unwrap();
            let peer = if i % 2 == 0 { &peer0 } else { &peer1 };
            let deadline = Instant::now() + Duration::from_secs(5);
            while !peer.inject_bytes(&buf[..n]) {
                assert!(Instant::now() < deadline, "port ring stays full");
                while peer0.collect().is_some() || peer1.collect().is_some() {}
            }
            sent += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = 0;
        while out < sent {
            assert!(Instant::now() < deadline, "only {out} of {sent} packets forwarded");
            while peer0.collect().is_some() {
                out += 1;
            }
            while peer1.collect().is_some() {
                out += 1;
            }
        }
    };
    send(0..600, flags::SYN);
    let view = workers.view();
    let t = Duration::from_secs(2);
    // Every flow, 64 a page.
    let (mut all, mut token, mut pages) = (Vec::new(), None, 0);
    loop {
        let (page, next) = view.list_flows(FlowFilter::default(), token, 64, t).unwrap();
        assert!(page.len() <= 64);
        pages += 1;
        all.extend(page);
        match next {
            Some(n) => token = Some(n),
            None => break,
        }
    }
    assert_eq!(all.len(), 600, "{pages} pages");
    let distinct: HashSet<_> = all.iter().map(|(_, f)| (f.client, f.client_port)).collect();
    assert_eq!(distinct.len(), 600, "a flow listed twice");
    assert!(pages >= 10);
    for (w, f) in &all {
        assert_eq!((f.vip_port, f.proto), (80, proto::TCP));
        assert!(f.expires_in_ms > 0);
        // Each flow is listed by the worker that owns it: the owner answers the query and tracks it.
        let (qw, q) = view
            .query(Tuple { src: f.client, dst: f.vip, proto: f.proto, sport: f.client_port, dport: 80 }, t)
            .unwrap();
        assert_eq!(qw, *w);
        assert_eq!(q.map(|q| (q.backend, q.tracked)), Some((f.backend, true)));
    }
    // By service: 500 and 100.
    let svc = |vip: &str| FlowFilter { service: Some((addr16(vip.parse().unwrap()), proto::TCP, 80)), backend: None };
    assert_eq!(view.list_flows(svc("198.19.0.1"), None, 10_000, t).unwrap().0.len(), 500);
    assert_eq!(view.list_flows(svc("198.19.0.2"), None, 10_000, t).unwrap().0.len(), 100);
    assert_eq!(view.list_flows(svc("198.19.0.3"), None, 10_000, t).unwrap().0.len(), 0);
    // By backend: the first VIP's four backends partition its 500 flows.
    let ids: HashSet<u32> =
        all.iter().filter(|(_, f)| f.vip == "198.19.0.1".parse::<IpAddr>().unwrap()).map(|(_, f)| f.backend).collect();
    assert_eq!(ids.len(), 4, "Maglev spread 500 flows over all four backends");
    let mut total = 0;
    for id in ids {
        let f = FlowFilter { service: svc("198.19.0.1").service, backend: Some(id) };
        let n = view.list_flows(f, None, 10_000, t).unwrap().0.len();
        assert!(n > 50, "backend {id}: {n} flows");
        total += n;
    }
    assert_eq!(total, 500);
    // The census counts by state: all half-open; then 100 clients ACK (established), 50 others FIN (closing).
    let c = view.census(t).unwrap();
    assert_eq!((c.half_open, c.established, c.closing, c.in_use()), (600, 0, 0, 0), "{c:?}");
    send(0..100, flags::ACK);
    send(100..150, flags::FIN | flags::ACK);
    let c = view.census(t).unwrap();
    assert_eq!((c.half_open, c.established, c.closing, c.udp, c.in_use()), (450, 100, 50, 0, 100), "{c:?}");
    let _ = workers.stop();
}

/// `WorkerView::wait_all_use` returns as soon as every worker took a new snapshot (woken by the worker, not by
/// polling), and gives up at its timeout for a generation nobody has.
#[test]
fn waiting_for_a_generation_wakes_when_every_worker_has_it() {
    let mut builder = ConfigBuilder::new();
    let (cfg, _) = builder.build(&model()).unwrap();
    let handle = ConfigHandle::new(cfg);
    let sizes = TableSizes { flows_v4: 1024, flows_v6: 1024, affinity: 1024, fragments: 256 };
    let (p0, _peer0) = mem::pair("w0", 64);
    let (p1, _peer1) = mem::pair("w1", 64);
    let workers = Workers::spawn(
        vec![
            WorkerSetup { worker: 0, core: None, ports: vec![p0], sizes, polling: Polling::Busy, new_flow_limit: 0 },
            WorkerSetup { worker: 1, core: None, ports: vec![p1], sizes, polling: Polling::Busy, new_flow_limit: 0 },
        ],
        handle.clone(),
        64,
        64,
    );
    let view = workers.view();
    let (next, _) = builder.build(&model()).unwrap();
    let generation = next.generation;
    assert!(!view.all_use(generation));
    handle.publish(next);
    let t = Instant::now();
    assert!(view.wait_all_use(generation, Duration::from_secs(20)), "both workers load the new snapshot");
    let took = t.elapsed();
    // Woken by the workers, not by the timeout (they load the snapshot within a burst or so).
    assert!(took < Duration::from_secs(10), "waited {took:?}: the workers' wake-up did not come");
    let t = Instant::now();
    assert!(!view.wait_all_use(generation + 1, Duration::from_millis(50)), "no worker has a later generation");
    assert!(t.elapsed() >= Duration::from_millis(50));
    println!("both workers on generation {generation} after {took:?}");
    drop(workers.stop());
}
