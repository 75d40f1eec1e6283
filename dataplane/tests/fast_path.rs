//! The established fast path (IPv4 and IPv6) against the general path: the same packets, snapshots and clock through two
//! pipelines, one with the fast path and one without, must give the same verdicts and bytes after every packet and
//! the same counters, table statistics, per-object counters and flow listings throughout. The traffic is built
//! valid (every mode, both families, TCP flag sequences, replies) and then varied where the fast path decides: TTL,
//! DF and size against the MTU, padding, VLAN tags, IP options, fragments, header bytes flipped, unknown ports,
//! backends down, draining, unresolved next hops, expiry, a saturated worker's new-flow limit, and two workers
//! (hand-offs). New flows are recorded on either path. The same traffic through a
//! worker, in full bursts, must give what one packet at a time gives: the burst's stage-1 records are kept in a small
//! ring while the packets ahead are parsed and prefetched.

use edgelb_dataplane::model::{BackendState, Mode, Model, Protocol};
use edgelb_dataplane::packet::{MemBuf, PacketBuf};
use edgelb_dataplane::pipeline::{Counters, DropReason, FlowFilter, FlowInfo, Pipeline, TableSizes};
use edgelb_dataplane::port::{mem, BURST};
use edgelb_dataplane::snapshot::{ConfigBuilder, ConfigHandle, DataplaneConfig};
use edgelb_dataplane::wire::ParseError;
use edgelb_dataplane::worker::{Worker, WorkerStats, CHAIN};
use edgelb_testkit::models::{self, SERVICES};
use edgelb_testkit::packets::{self as pk, proto, Craft};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn pipelines(worker: u16, nworkers: u16, cfg: &DataplaneConfig) -> (Pipeline, Pipeline) {
    let sizes = TableSizes { flows_v4: 2048, flows_v6: 2048, affinity: 256, fragments: 256 };
    let mut fast = Pipeline::new(worker, nworkers, sizes);
    let mut general = Pipeline::new(worker, nworkers, sizes);
    general.set_fast_path(false);
    fast.sync(cfg);
    general.sync(cfg);
    (fast, general)
}

fn flows(p: &Pipeline, now: u32) -> Vec<FlowInfo> {
    let mut out = Vec::new();
    let mut at = Some((false, 0));
    while let Some(from) = at {
        at = p.list_flows(from, 1 << 16, now, &FlowFilter::default(), &mut out, usize::MAX);
    }
    out
}

/// Everything but the fast path's own counter must agree.
fn same_state(fast: &Pipeline, general: &Pipeline, now: u32, step: usize) {
    let mut c = fast.counters.clone();
    c.fast_path = 0;
    assert_eq!(c, general.counters, "counters after packet {step}");
    assert_eq!(fast.table_stats(), general.table_stats(), "table statistics after packet {step}");
    assert_eq!(fast.backend_stats, general.backend_stats, "backend counters after packet {step}");
    assert_eq!(fast.service_stats, general.service_stats, "service counters after packet {step}");
    assert_eq!(flows(fast, now), flows(general, now), "flows after packet {step}");
}

/// One model variation per phase (phase 6 is the VIP owned elsewhere, set on the builder): what the fast path must notice and leave to the general path.
fn model_for(phase: usize) -> Model {
    let mut m = models::every_mode(251);
    match phase % 7 {
        1 => {
            m.services[0].backends[0].state = BackendState::Down;
            m.services[8].backends[0].state = BackendState::Down;
        }
        2 => m.services[0].backends[1].state = BackendState::Draining,
        3 => m.interfaces[1].mtu = 600,
        4 => {
            // The NAT and DSR backends' MACs unknown: their packets wait for resolution.
            let gone: Vec<IpAddr> = ["198.18.2.10", "198.18.2.12", "2001:db8:2::10", "2001:db8:2::12"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect();
            m.neighbours.retain(|(a, _)| !gone.contains(a));
        }
        5 => m.draining = true,
        _ => {}
    }
    m
}

fn frame(r: &mut Rng, clients: u64, family: Option<bool>) -> (Vec<u8>, u16) {
    // Half the packets go to the NAT and DSR-L2 services with a port, which the fast path serves; `family` keeps to
    // one address family (`Some(true)`: IPv4).
    let of_family = |s: &&models::ServiceRow| family.is_none_or(|v4| v4 != s.0.contains(':'));
    let fast_rows: Vec<_> =
        SERVICES.iter().filter(of_family).filter(|s| s.2.is_some() && matches!(s.3, Mode::Nat | Mode::DsrL2)).collect();
    let rows: Vec<_> = SERVICES.iter().filter(of_family).collect();
    let row = if r.chance(50) {
        *fast_rows[r.below(fast_rows.len() as u64) as usize]
    } else {
        *rows[r.below(rows.len() as u64) as usize]
    };
    let (vip, prot, port, mode, backends) = row;
    let v4 = !vip.contains(':');
    let c = r.below(clients);
    let client: IpAddr = if v4 {
        IpAddr::from([198, 18, 0, 10 + c as u8])
    } else {
        format!("2001:db8::{:x}", 0x10 + c).parse().unwrap()
    };
    let vip: IpAddr = vip.parse().unwrap();
    let p = if prot == Protocol::Tcp { proto::TCP } else { proto::UDP };
    let sport = 40000 + r.below(4) as u16;
    let mut dport = port.unwrap_or(1000 + r.below(3) as u16);
    if r.chance(3) {
        dport = dport.wrapping_add(1);
    }
    let flags = [0x02, 0x10, 0x18, 0x10, 0x18, 0x11, 0x04, 0x12, 0x10, 0x18][r.below(10) as usize];
    let len = if r.chance(8) { 560 + r.below(1000) as usize } else { r.below(64) as usize };
    let payload = vec![0x5a; len];
    let l4 =
        |sp: u16, dp: u16| if p == proto::TCP { pk::tcp(sp, dp, flags, &payload) } else { pk::udp(sp, dp, &payload) };
    let mut port_in = 0;
    let mut cr = if mode == Mode::Nat && r.chance(15) {
        // A reply from the backend (right or wrong port).
        let (b, bp) = backends[r.below(backends.len() as u64) as usize];
        port_in = 1;
        let bp = if bp == 0 { dport } else { bp };
        Craft::new(b.parse().unwrap(), client, p, l4(bp, sport))
    } else {
        Craft::new(client, vip, p, l4(sport, dport))
    };
    cr.df = r.chance(50);
    if r.chance(5) {
        cr.ttl = 1 + r.below(2) as u8;
    }
    if r.chance(5) {
        cr.pad_to = 60 + r.below(40) as usize;
    }
    if r.chance(3) {
        cr.vlans = vec![100];
    }
    if r.chance(3) && v4 {
        cr.ip_options = vec![1, 1, 1, 1];
    }
    if r.chance(3) && !v4 {
        // A destination-options header (PadN): the fast path leaves extension headers to the general path.
        cr.ext_headers = vec![(60, vec![1, 4, 0, 0, 0, 0])];
    }
    if r.chance(3) {
        cr.frag = Some((r.below(2) as u16 * 3, r.chance(50)));
    }
    let mut f = cr.build();
    if r.chance(10) {
        // A header byte flipped: IP (its checksum then fails, or not where the fast path reads no checksum), or
        // transport (the data offset, flags, the UDP length).
        let at = 12 + r.below(48) as usize;
        if at < f.len() {
            f[at] ^= 1 << r.below(8);
        }
    }
    if r.chance(2) {
        f.truncate(r.below(f.len() as u64) as usize);
    }
    (f, port_in)
}

fn run(seed: u64, worker: u16, nworkers: u16, packets: usize, family: Option<bool>) -> u64 {
    run_counted(seed, worker, nworkers, packets, family, 0).0
}

/// [`run`] with a new-flow limit of `limit` a second (0: none) on both pipelines, and every poll full, so that both
/// are saturated from the fifth packet on and admit or refuse new flows from the same tokens. Returns what took the
/// fast path and the fast pipeline's counters.
fn run_counted(
    seed: u64,
    worker: u16,
    nworkers: u16,
    packets: usize,
    family: Option<bool>,
    limit: u32,
) -> (u64, Counters) {
    let mut r = Rng(seed);
    let mut builder = ConfigBuilder::new();
    let mut cfg: Arc<DataplaneConfig> = builder.build(&model_for(0)).unwrap().0;
    let (mut fast, mut general) = pipelines(worker, nworkers, &cfg);
    fast.set_new_flow_limit(limit);
    general.set_new_flow_limit(limit);
    let mut now = 1u32;
    for step in 0..packets {
        if step % 2000 == 1999 {
            let phase = step / 2000 + 1;
            // Phase 6: the NAT VIP owned by another appliance (forwarded, counted).
            let unowned: Vec<IpAddr> = if phase % 7 == 6 {
                vec!["198.19.0.1".parse().unwrap(), "2001:db8:100::1".parse().unwrap()]
            } else {
                vec![]
            };
            builder.set_unowned(unowned);
            cfg = builder.build(&model_for(phase)).unwrap().0;
            fast.sync(&cfg);
            general.sync(&cfg);
        }
        now = now.wrapping_add(if r.below(2000) == 0 { 400_000 + r.below(600_000) as u32 } else { r.below(20) as u32 });
        if step % 500 == 0 {
            fast.housekeeping(64, now);
            general.housekeeping(64, now);
        }
        if limit > 0 {
            fast.observe_poll(1, 1, now);
            general.observe_poll(1, 1, now);
        }
        let (f, port) = frame(&mut r, 24, family);
        let (mut a, mut b) = (MemBuf::from_slice(&f), MemBuf::from_slice(&f));
        let va = fast.process(&cfg, port, &mut a, now);
        let vb = general.process(&cfg, port, &mut b, now);
        assert_eq!(va, vb, "verdict of packet {step}: {f:02x?}");
        assert_eq!(a.data(), b.data(), "bytes of packet {step}");
        assert_eq!(fast.resolve, general.resolve, "next hop to resolve, packet {step}");
        if step % 250 == 0 {
            same_state(&fast, &general, now, step);
        }
    }
    same_state(&fast, &general, now, packets);
    assert_eq!(general.counters.fast_path, 0, "the general pipeline never takes the fast path");
    (fast.counters.fast_path, fast.counters.clone())
}

#[test]
fn fast_path_matches_the_general_path() {
    let n = 24_000;
    let took = run(0x5eed_f00d_1234_5678, 0, 1, n, None);
    // Most traffic is hostile or new here; the fast path must still carry a good share of it, or this proves nothing.
    assert!(took > n as u64 / 10, "only {took} of {n} packets took the fast path");
    eprintln!("{took} of {n} packets took the fast path");
}

#[test]
fn fast_path_matches_the_general_path_with_two_workers() {
    for worker in 0..2 {
        let took = run(0x0123_4567_89ab_cdef ^ u64::from(worker), worker, 2, 12_000, None);
        assert!(took > 400, "worker {worker}: only {took} packets took the fast path");
    }
}

/// A saturated worker with a new-flow limit admits and refuses the same new flows on either path (the fast path asks
/// the limit once, when nothing else can send the packet to the general path).
#[test]
fn fast_path_matches_the_general_path_under_a_new_flow_limit() {
    let n = 12_000;
    for (seed, limit) in [(0x11f1_a7ed, 20), (0x22f2_b8ee, 50)] {
        let (took, c) = run_counted(seed, 0, 1, n, None, limit);
        assert!(took > n as u64 / 10, "limit {limit}: only {took} of {n} packets took the fast path");
        // Both outcomes happen, or the comparison proves nothing about the limit.
        let refused = c.dropped(DropReason::Overload);
        assert!(refused > 100 && c.new_flows > 20, "limit {limit}: {refused} refused, {} admitted", c.new_flows);
        eprintln!("limit {limit}: {refused} new flows refused, {} admitted, {took} fast", c.new_flows);
    }
}

/// Each family alone, so neither hides behind the other's share of the fast path.
#[test]
fn fast_path_matches_the_general_path_in_each_family() {
    for (v4, name) in [(true, "IPv4"), (false, "IPv6")] {
        let n = 12_000;
        let took = run(0x7a11_0ffa_5700 ^ u64::from(v4), 0, 1, n, Some(v4));
        assert!(took > n as u64 / 10, "{name}: only {took} of {n} packets took the fast path");
        eprintln!("{name}: {took} of {n} packets took the fast path");
    }
}

/// Every client packet of a tracked, established NAT or DSR-L2 flow takes the fast path, wherever the flow table put
/// the flow (most of 1000 flows in a table made for 2048 sit in their second bucket or were moved there): the fast
/// path's counter grows by exactly one a packet, in both families. The comparisons above cannot see a fast path that
/// misses, because the general path then gives the same result.
#[test]
fn every_established_packet_takes_the_fast_path() {
    let (cfg, _) = ConfigBuilder::new().build(&model_for(0)).unwrap();
    for (vip, mode) in [
        ("198.19.0.1", Mode::Nat),
        ("198.19.0.3", Mode::DsrL2),
        ("2001:db8:100::1", Mode::Nat),
        ("2001:db8:100::3", Mode::DsrL2),
    ] {
        let (mut fast, _) = pipelines(0, 1, &cfg);
        let vip: IpAddr = vip.parse().unwrap();
        let flows = 1000u16;
        let client = |i: u16| -> IpAddr {
            if vip.is_ipv4() {
                IpAddr::from([198, 18, (i >> 8) as u8, i as u8])
            } else {
                format!("2001:db8::{i:x}").parse().unwrap()
            }
        };
        let send = |p: &mut Pipeline, i: u16, flags: u8, now: u32| {
            let f = Craft::new(client(i), vip, proto::TCP, pk::tcp(30000 + i, 80, flags, b"x")).build();
            let mut b = MemBuf::from_slice(&f);
            p.process(&cfg, 0, &mut b, now)
        };
        // Opened: a SYN (a new flow, recorded on the fast path too), then the client's ACK.
        for i in 0..flows {
            for flags in [0x02, 0x10] {
                let v = send(&mut fast, i, flags, 1);
                assert!(matches!(v, edgelb_dataplane::pipeline::Verdict::Tx(_)), "{vip} {mode:?} flow {i}: {v:?}");
            }
        }
        let tracked = if vip.is_ipv4() { fast.table_stats().0 } else { fast.table_stats().1 };
        assert_eq!(tracked.occupied, u64::from(flows), "{vip}: every flow tracked");
        assert_eq!(fast.counters.new_flows, u64::from(flows), "{vip}: new flows");
        assert_eq!(fast.counters.fast_path, 2 * u64::from(flows), "{vip} {mode:?}: opening packets on the fast path");
        let before = fast.counters.fast_path;
        for i in 0..flows {
            let v = send(&mut fast, i, 0x18, 2);
            assert!(matches!(v, edgelb_dataplane::pipeline::Verdict::Tx(_)), "{vip} {mode:?} flow {i}: {v:?}");
        }
        assert_eq!(
            fast.counters.fast_path - before,
            u64::from(flows),
            "{vip} {mode:?}: packets that took the fast path"
        );
    }
}

/// A snapshot whose service indices are out of range (a snapshot-builder bug; no packet can cause it) costs counted
/// drops or a new choice of backend, never a worker panic, on the fast and the general path alike, in both families.
#[test]
fn a_broken_service_index_is_not_a_panic() {
    let (cfg, _) = ConfigBuilder::new().build(&model_for(0)).unwrap();
    let mut no_services = (*cfg).clone();
    no_services.services.clear();
    let mut foreign = (*cfg).clone();
    for b in foreign.backends.iter_mut().flatten() {
        b.service = u32::MAX;
    }
    for vip in ["198.19.0.1", "198.19.0.3", "2001:db8:100::1", "2001:db8:100::3"] {
        let vip: IpAddr = vip.parse().unwrap();
        let client: IpAddr = if vip.is_ipv4() { "198.18.0.7".parse().unwrap() } else { "2001:db8::7".parse().unwrap() };
        let send = |p: &mut Pipeline, c: &DataplaneConfig, sport: u16, flags: u8, now: u32| {
            let f = Craft::new(client, vip, proto::TCP, pk::tcp(sport, 80, flags, b"x")).build();
            p.process(c, 0, &mut MemBuf::from_slice(&f), now)
        };
        let (mut fast, mut general) = pipelines(0, 1, &cfg);
        for p in [&mut fast, &mut general] {
            for flags in [0x02, 0x10] {
                let v = send(p, &cfg, 40000, flags, 1);
                assert!(matches!(v, edgelb_dataplane::pipeline::Verdict::Tx(_)), "{vip}: opening: {v:?}");
            }
            // The established flow and a new one, against a snapshot without its services: dropped as no service.
            for sport in [40000, 40001] {
                let v = send(p, &no_services, sport, 0x18, 2);
                assert!(
                    v == edgelb_dataplane::pipeline::Verdict::Drop(edgelb_dataplane::pipeline::DropReason::NoService),
                    "{vip} port {sport}: {v:?}"
                );
            }
        }
        // Backends that name no service: the tracked flow's backend no longer serves it, and both paths agree on
        // what happens instead.
        for sport in [40000, 40002] {
            let a = send(&mut fast, &foreign, sport, 0x18, 3);
            let b = send(&mut general, &foreign, sport, 0x18, 3);
            assert_eq!(a, b, "{vip} port {sport}");
        }
        same_state(&fast, &general, 3, 0);
    }
}

/// The addresses and ports of an untagged IPv4 or IPv6 frame with TCP or UDP: (src, dst, sport, dport).
fn tuple_of(f: &[u8]) -> (IpAddr, IpAddr, u16, u16) {
    let (src, dst, l4): (IpAddr, IpAddr, usize) = if f[12..14] == [0x08, 0x00] {
        let a = |o: usize| IpAddr::from([f[o], f[o + 1], f[o + 2], f[o + 3]]);
        (a(26), a(30), 14 + usize::from(f[14] & 0x0f) * 4)
    } else {
        let a = |o: usize| IpAddr::from(<[u8; 16]>::try_from(&f[o..o + 16]).unwrap());
        (a(22), a(38), 54)
    };
    (src, dst, u16::from_be_bytes([f[l4], f[l4 + 1]]), u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]))
}

/// The replies to `flows` flows of each NAT and full-NAT service in the list (TCP and UDP, both families), opened on
/// worker `worker` of `nworkers`, through a pipeline with the fast path and one without: verdicts and bytes must
/// agree for every packet, and counters, table statistics and flows after each service. The replies are built from
/// the translated packets the pipeline sent, so each names its flow exactly (a full-NAT reply goes to the source
/// address and port the flow was given). Returns, per service, the replies forwarded and those that took the fast
/// path.
fn replies(worker: u16, nworkers: u16, flows: u16) -> Vec<(String, u64, u64)> {
    use edgelb_dataplane::pipeline::Verdict;
    let (cfg, _) = ConfigBuilder::new().build(&model_for(0)).unwrap();
    let mut out = Vec::new();
    for (vip_s, p, port) in [
        ("198.19.0.1", proto::TCP, 80),
        ("198.19.0.2", proto::TCP, 80),
        ("198.19.0.8", proto::UDP, 53),
        ("2001:db8:100::1", proto::TCP, 80),
        ("2001:db8:100::2", proto::TCP, 80),
        ("2001:db8:100::6", proto::UDP, 53),
    ] {
        let (mut fast, mut general) = pipelines(worker, nworkers, &cfg);
        let nat = SERVICES.iter().any(|s| s.0 == vip_s && s.3 == Mode::Nat);
        let vip: IpAddr = vip_s.parse().unwrap();
        let client = |i: u16| -> IpAddr {
            if vip.is_ipv4() {
                IpAddr::from([198, 18, 8 + (i >> 8) as u8, i as u8])
            } else {
                format!("2001:db8::1:{i:x}").parse().unwrap()
            }
        };
        let l4 = |sp: u16, dp: u16, flags: u8| {
            if p == proto::TCP {
                pk::tcp(sp, dp, flags, b"x")
            } else {
                pk::udp(sp, dp, b"x")
            }
        };
        let both = |fast: &mut Pipeline, general: &mut Pipeline, f: &[u8], port: u16, now: u32, what: &str| {
            let (mut a, mut b) = (MemBuf::from_slice(f), MemBuf::from_slice(f));
            let va = fast.process(&cfg, port, &mut a, now);
            let vb = general.process(&cfg, port, &mut b, now);
            assert_eq!(va, vb, "{what}");
            assert_eq!(a.data(), b.data(), "{what}: bytes");
            (va, a.data().to_vec())
        };
        let mut sent_replies = Vec::new();
        for i in 0..flows {
            let what = format!("{vip} flow {i}");
            let f = Craft::new(client(i), vip, p, l4(30000 + i, port, 0x02)).build();
            let (v, sent) = both(&mut fast, &mut general, &f, 0, 1, &what);
            if !matches!(v, Verdict::Tx(_)) {
                assert!(matches!(v, Verdict::Handoff(_)) && nworkers > 1, "{what}: {v:?}");
                continue;
            }
            let (s, d, sp, dp) = tuple_of(&sent);
            // NAT keeps the client's address; full-NAT sends from the appliance's source address.
            assert_eq!(s == client(i), nat, "{what}: source {s}");
            sent_replies.push((i, Craft::new(d, s, p, l4(dp, sp, 0x12)).build()));
        }
        let before = fast.counters.fast_path;
        let mut forwarded = 0;
        for (i, f) in &sent_replies {
            let what = format!("{vip} reply {i}");
            let (v, out) = both(&mut fast, &mut general, f, 1, 2, &what);
            match v {
                Verdict::Tx(_) => {
                    forwarded += 1;
                    assert_eq!(tuple_of(&out), (vip, client(*i), port, 30000 + i), "{what}");
                }
                // A full-NAT reply belongs to the worker that owns its source port, not the client's.
                v => assert!(matches!(v, Verdict::Handoff(_)) && nworkers > 1 && !nat, "{what}: {v:?}"),
            }
        }
        assert_eq!(fast.counters.replies, forwarded, "{vip}: replies counted");
        same_state(&fast, &general, 2, 0);
        out.push((vip_s.to_string(), forwarded, fast.counters.fast_path - before));
    }
    out
}

/// Every backend reply of a tracked NAT or full-NAT flow takes the fast reply path: its counter grows by exactly one
/// a reply. The comparisons cannot see a fast path that misses, because the general path then gives the same result.
#[test]
fn every_reply_takes_the_fast_path() {
    for (vip, forwarded, fast) in replies(0, 1, 500) {
        assert_eq!((forwarded, fast), (500, 500), "{vip}: replies forwarded, and of them on the fast path");
    }
}

/// With two workers, each takes the replies it owns on the fast path (NAT: the client's worker; full-NAT: the worker
/// of the source port the flow was given) and hands the rest off, as the general path does.
#[test]
fn every_owned_reply_takes_the_fast_path_with_two_workers() {
    for worker in 0..2 {
        for (vip, forwarded, fast) in replies(worker, 2, 400) {
            assert!(forwarded > 0, "worker {worker}, {vip}: no reply forwarded");
            assert_eq!(fast, forwarded, "worker {worker}, {vip}: replies forwarded, and of them on the fast path");
        }
    }
}

/// The table sizes of the worker tests below: flow tables beyond the cache (`FlowTable::beyond_cache`), so that stage 2
/// prefetches for new flows too.
const WORKER_SIZES: TableSizes = TableSizes { flows_v4: 40_000, flows_v6: 40_000, affinity: 256, fragments: 256 };

/// The snapshot of the worker tests, a pipeline on it to compare with, and worker 0 of 1 on `ports` with the stats it
/// publishes.
type Inbox = Arc<crossbeam_queue::ArrayQueue<(u16, MemBuf)>>;

fn worker_and_reference(
    ports: Vec<mem::MemPort>,
) -> (Arc<DataplaneConfig>, Pipeline, Worker<mem::MemPort>, Arc<Mutex<WorkerStats>>, Inbox) {
    worker_and_reference_sized(ports, WORKER_SIZES)
}

fn worker_and_reference_sized(
    ports: Vec<mem::MemPort>,
    sizes: TableSizes,
) -> (Arc<DataplaneConfig>, Pipeline, Worker<mem::MemPort>, Arc<Mutex<WorkerStats>>, Inbox) {
    let (cfg, _) = ConfigBuilder::new().build(&model_for(0)).unwrap();
    let mut one = Pipeline::new(0, 1, sizes);
    one.sync(&cfg);
    let published = Arc::new(Mutex::new(WorkerStats::new_for(0)));
    let inbox = Arc::new(crossbeam_queue::ArrayQueue::new(64));
    let slow = Arc::new(crossbeam_queue::ArrayQueue::new(64 * BURST));
    let w = Worker::new(0, 1, sizes, ports, vec![inbox.clone()], slow, published.clone());
    (cfg, one, w, published, inbox)
}

/// A worker finishes a burst's packets from records kept in a ring while the packets ahead of them are parsed in
/// stage 1 and have their entries prefetched in stage 2; packets stage 1 decides (drops) take no place in it. The
/// hostile mix of [`frame`], both families, is sent to a worker in full bursts, and one packet at a time through a
/// pipeline in the worker's order (each poll a run of full bursts from port 0, then from port 1): each port must send
/// the same packets, byte for byte and in the same order, and the counters must agree.
#[test]
fn bursts_through_a_worker_match_one_packet_at_a_time() {
    let one = bursts_against_one_at_a_time(0xb0b5_7ac0_0000_0001, WORKER_SIZES, 24);
    let packets = BURST as u64 * 120;
    // The mix must exercise what the ring holds: fast packets, general ones and packets decided in stage 1.
    assert!(one.counters.fast_path > packets / 10, "fast path: {}", one.counters.fast_path);
    assert!(one.counters.tx > one.counters.fast_path + packets / 10, "general path: {}", one.counters.tx);
    // Parse errors are decided in stage 1 and take no place in the ring.
    let decided: u64 = one.counters.drops[..ParseError::ALL.len()].iter().sum();
    assert!(decided > packets / 100, "decided in stage 1: {decided}");
}

/// The same with flow tables of 24 slots and 200 clients, so that nearly every new flow displaces one: which one
/// depends on the entries' expiry, so the worker's clock is held at 0, where the pipeline runs.
#[test]
fn bursts_through_a_worker_with_full_tables_match_one_packet_at_a_time() {
    let sizes = TableSizes { flows_v4: 16, flows_v6: 16, affinity: 16, fragments: 16 };
    let one = bursts_against_one_at_a_time(0xf011_7ab1_e000_0001, sizes, 200);
    let (v4, v6) = one.table_stats();
    assert!(v4.evicted > 20 && v6.evicted > 20, "evictions: {} and {}", v4.evicted, v6.evicted);
}

/// New NAT flows in tables beyond the cache and full, so that stage 2 names the entry each new flow displaces and the
/// worker prefetches that entry's reverse-index line two packets before the insert clears it (a table of 1 MiB or
/// less takes no such prefetch): SYNs of distinct clients to the NAT services with a port and no affinity, IPv4 and
/// IPv6 in turn, an eighth more than the tables hold, and backends' replies to flows opened a while before. What the
/// worker sends and counts must be what one packet at a time gives.
#[test]
fn bursts_through_a_worker_with_large_full_tables_match_one_packet_at_a_time() {
    let sizes = TableSizes { flows_v4: 36_000, flows_v6: 36_000, affinity: 16, fragments: 16 };
    // 198.19.0.7 is the service with affinity, whose new flows take the general path.
    let nat = |v4: bool| -> Vec<&models::ServiceRow> {
        SERVICES
            .iter()
            .filter(|s| s.2.is_some() && s.3 == Mode::Nat && s.0 != "198.19.0.7" && v4 != s.0.contains(':'))
            .collect()
    };
    let (nat4, nat6) = (nat(true), nat(false));
    assert!(!nat4.is_empty() && !nat6.is_empty(), "NAT services with a port in both families");
    // Clients from 198.19.64.0 and 2001:db8:5::, which the model gives nothing else.
    let client = |i: u32, v4: bool| -> IpAddr {
        if v4 {
            IpAddr::from([198, 19, 64 + (i >> 8) as u8, i as u8])
        } else {
            format!("2001:db8:5::{i:x}").parse().unwrap()
        }
    };
    // A service row's protocol, its port, and a transport header of it.
    let l4 = |row: &models::ServiceRow, sp: u16, dp: u16, flags: u8| -> (u8, Vec<u8>) {
        if row.1 == Protocol::Tcp {
            (proto::TCP, pk::tcp(sp, dp, flags, &[]))
        } else {
            (proto::UDP, pk::udp(sp, dp, &[]))
        }
    };
    let mut arriving: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut r = Rng(0x1a49_e7ab_1e00_0001);
    for i in 0..46_000u32 {
        for v4 in [true, false] {
            let rows = if v4 { &nat4 } else { &nat6 };
            let row = rows[i as usize % rows.len()];
            let vport = row.2.unwrap_or(80);
            let (p, seg) = l4(row, 40000, vport, 0x02);
            arriving[0].push(Craft::new(client(i, v4), row.0.parse().unwrap(), p, seg).build());
            if i % 16 == 15 {
                // A backend's reply to a flow opened a while before (displaced since, or not): the reverse index.
                // On port 0 too, in line with the SYNs (the worker takes a burst from each port in turn).
                let back = i - 1 - r.below(u64::from(i.min(3000))) as u32;
                let row = rows[back as usize % rows.len()];
                let (b, bp) = row.4[r.below(row.4.len() as u64) as usize];
                let bp = if bp == 0 { row.2.unwrap_or(80) } else { bp };
                let (p, seg) = l4(row, bp, 40000, 0x12);
                arriving[0].push(Craft::new(b.parse().unwrap(), client(back, v4), p, seg).build());
            }
        }
    }
    let one = bursts_of_against_one_at_a_time(&arriving, sizes);
    let (v4, v6) = one.table_stats();
    assert!(v4.evicted > 3_000 && v6.evicted > 3_000, "evictions: {} and {}", v4.evicted, v6.evicted);
    assert!(one.counters.replies > 3_000, "replies translated: {}", one.counters.replies);
}

/// The hostile mix of [`frame`] from `clients` clients, both families, through a worker with tables of `sizes` in
/// full bursts, its clock held at 0, and through a pipeline one packet at a time in the worker's order, at 0: the same
/// packets out of each port, byte for byte and in order, and the same counters. Returns the pipeline.
fn bursts_against_one_at_a_time(seed: u64, sizes: TableSizes, clients: u64) -> Pipeline {
    let mut r = Rng(seed);
    let mut arriving: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..BURST * 120 {
        let (f, port) = frame(&mut r, clients, None);
        arriving[usize::from(port)].push(f);
    }
    bursts_of_against_one_at_a_time(&arriving, sizes)
}

/// [`bursts_against_one_at_a_time`] of the frames `arriving` on ports 0 and 1.
fn bursts_of_against_one_at_a_time(arriving: &[Vec<Vec<u8>>; 2], sizes: TableSizes) -> Pipeline {
    let packets = arriving[0].len() + arriving[1].len();
    let (p0, peer0) = mem::pair("p0", packets);
    let (p1, peer1) = mem::pair("p1", packets);
    let (cfg, mut one, mut w, published, _) = worker_and_reference_sized(vec![p0, p1], sizes);
    w.set_epoch(std::time::Instant::now() + std::time::Duration::from_secs(3600));
    // One packet at a time, in the worker's order: each poll takes a run of bursts from port 0, then one from port 1,
    // each run full bursts up to `CHAIN` of them (all frames wait in the rings, so every burst but a port's last is
    // full).
    let mut sent: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let run = CHAIN * BURST;
    for k in 0..packets.div_ceil(run) {
        for (port, frames) in arriving.iter().enumerate() {
            for f in frames.iter().skip(k * run).take(run) {
                let mut b = MemBuf::from_slice(f);
                // At 0, where the worker's clock is held.
                if let edgelb_dataplane::pipeline::Verdict::Tx(out) = one.process(&cfg, port as u16, &mut b, 0) {
                    sent[usize::from(out)].push(b.data().to_vec());
                }
            }
        }
    }
    for (frames, peer) in arriving.iter().zip([&peer0, &peer1]) {
        for f in frames {
            assert!(peer.inject_bytes(f), "ring full");
        }
    }
    let handle = ConfigHandle::new(cfg);
    let mut polled = 0;
    while polled < packets {
        let n = w.poll(&handle);
        assert!(n > 0, "the worker stopped after {polled} of {packets} packets");
        polled += n;
    }
    for (i, peer) in [&peer0, &peer1].into_iter().enumerate() {
        port_sent(peer, &sent[i], i);
    }
    w.publish();
    let stats = published.lock().unwrap();
    assert_eq!(stats.counters, one.counters, "counters");
    one
}

/// What a worker cannot send is counted, never lost silently: packets routed to a port the worker does not have
/// (the model has two, the worker one) are dropped as `no_route`, and packets its port refuses (the peer's transmit
/// ring full, never collected) as `tx_full`. Everything received is sent or counted, and the port sends what the
/// same packets through a pipeline send to it, up to the ring's depth.
#[test]
fn a_worker_counts_what_it_cannot_send() {
    use edgelb_dataplane::pipeline::{DropReason, Verdict};
    let mut r = Rng(0x5e9d_0000_7a11_0001);
    let depth = BURST;
    let (p0, peer0) = mem::pair("p0", depth);
    let (cfg, mut one, mut w, published, _) = worker_and_reference(vec![p0]);
    let handle = ConfigHandle::new(cfg.clone());
    let (mut to_port0, mut to_port1) = (Vec::new(), 0u64);
    for _ in 0..80 {
        for _ in 0..BURST {
            // All in on port 0; the clients' packets leave by port 1, the replies by port 0.
            let (f, _) = frame(&mut r, 24, None);
            let mut b = MemBuf::from_slice(&f);
            match one.process(&cfg, 0, &mut b, 0) {
                Verdict::Tx(0) => to_port0.push(b.data().to_vec()),
                Verdict::Tx(_) => to_port1 += 1,
                _ => {}
            }
            assert!(peer0.inject_bytes(&f), "receive ring full");
        }
        while w.poll(&handle) > 0 {}
    }
    w.publish();
    let c = published.lock().unwrap().counters.clone();
    let mut sent = Vec::new();
    while let Some(b) = peer0.collect() {
        sent.push(b.data().to_vec());
    }
    assert!(to_port1 > 100 && to_port0.len() > depth, "the mix must reach both ports: {to_port1}, {}", to_port0.len());
    assert_eq!(sent, to_port0[..depth], "port 0 sends the first packets for it until its ring is full");
    let drops = |d: DropReason| c.drops[d.index()] - one.counters.drops[d.index()];
    assert_eq!(drops(DropReason::NoRoute), to_port1, "packets for the port the worker lacks");
    assert_eq!(drops(DropReason::TxFull), (to_port0.len() - depth) as u64, "packets the full ring refused");
    assert_eq!(c.rx, one.counters.rx);
}

/// The packets port `port` sent (collected from its `peer`) are `want`, byte for byte and in order.
fn port_sent(peer: &mem::MemPeer, want: &[Vec<u8>], port: usize) {
    let mut sent = Vec::new();
    while let Some(b) = peer.collect() {
        sent.push(b.data().to_vec());
    }
    assert_eq!(sent.len(), want.len(), "packets sent by port {port}");
    for (k, (a, b)) in sent.iter().zip(want).enumerate() {
        assert_eq!(a, b, "packet {k} sent by port {port}");
    }
}

/// A worker's outgoing burst for a port holds one receive burst: a poll that first finishes a burst of hand-offs for a
/// port and then a port's burst for the same one fills it before the first flush. The full burst is sent, and the
/// packet that found it full joins the next one: every packet leaves, in order, and nothing is counted as refused.
#[test]
fn a_full_outgoing_burst_is_sent_before_the_next_packet_joins_it() {
    use edgelb_dataplane::pipeline::{DropReason, Verdict};
    let (p0, peer0) = mem::pair("p0", 4 * BURST);
    let (p1, peer1) = mem::pair("p1", 4 * BURST);
    let (cfg, mut one, mut w, published, inbox) = worker_and_reference(vec![p0, p1]);
    // SYNs of new flows from clients (port 0) to the IPv4 NAT service, which leave towards its backends by port 1.
    let (vip, _, port, mode, _) = SERVICES[0];
    assert_eq!(mode, Mode::Nat);
    let syn = |k: usize| {
        let client = IpAddr::from([198, 18, 0, 10 + (k % 100) as u8]);
        Craft::new(client, vip.parse().unwrap(), proto::TCP, pk::tcp(40000 + k as u16, port.unwrap(), 0x02, &[]))
            .build()
    };
    let frames: Vec<Vec<u8>> = (0..2 * BURST).map(syn).collect();
    // The first burst arrives handed off from another worker, the second on port 0.
    let mut want = Vec::new();
    for (k, f) in frames.iter().enumerate() {
        let mut b = MemBuf::from_slice(f);
        assert_eq!(one.process(&cfg, 0, &mut b, 0), Verdict::Tx(1), "reference, packet {k}");
        want.push(b.data().to_vec());
        if k < BURST {
            assert!(inbox.push((0, MemBuf::from_slice(f))).is_ok(), "inbox full");
        } else {
            assert!(peer0.inject_bytes(f), "receive ring full");
        }
    }
    let handle = ConfigHandle::new(cfg);
    assert_eq!(w.poll(&handle), 2 * BURST, "one poll takes the hand-offs and the port's burst");
    port_sent(&peer1, &want, 1);
    w.publish();
    let c = published.lock().unwrap().counters.clone();
    assert_eq!(c.drops[DropReason::TxFull.index()], 0, "nothing refused");
    assert_eq!(c, one.counters, "counters");
}

/// A poll runs a port's full bursts through one prefetch window, [`CHAIN`] of them at most, and stops at the first
/// that is not full: 3.5 bursts waiting are one poll, `CHAIN + 2` full bursts two. Flows of both families open in
/// one burst and go on in the next (a SYN, then its ACK two packets later), so records cross the bursts' edges in the
/// window. The second run begins with a burst stage 1 drops whole (IPv4 frames of IP version 6), which leaves the
/// window empty when the next burst comes. The port sends what one packet at a time through a pipeline sends, in
/// order, with the same counters, and the worker counts the bursts it ran.
#[test]
fn a_poll_runs_a_ports_full_bursts_through_one_window() {
    use edgelb_dataplane::pipeline::Verdict;
    let (p0, peer0) = mem::pair("p0", 16 * BURST);
    let (p1, peer1) = mem::pair("p1", 16 * BURST);
    let (cfg, mut one, mut w, published, _) = worker_and_reference(vec![p0, p1]);
    let nat: Vec<_> = SERVICES.iter().filter(|s| s.3 == Mode::Nat && s.1 == Protocol::Tcp && s.2.is_some()).collect();
    let v6 = nat.iter().position(|s| s.0.contains(':')).expect("an IPv6 NAT service");
    let (v4, v6) = (nat[0], nat[v6]);
    // Packet `i` of a stream from `first`: two SYNs of new flows, then the ACK of the first of them.
    let frame = |first: usize, i: usize| {
        let k = first + i - i % 3 + if i % 3 == 2 { 0 } else { i % 3 };
        let (vip, _, port, _, _) = if k.is_multiple_of(2) { v4 } else { v6 };
        let vip: IpAddr = vip.parse().unwrap();
        let client = if vip.is_ipv4() {
            IpAddr::from([198, 18, 1 + (k / 200) as u8, (k % 200) as u8 + 10])
        } else {
            IpAddr::from([0x2001, 0xdb8, 1, 0, 0, 0, (k / 200) as u16, (k % 200) as u16 + 10])
        };
        let flags = if i % 3 == 2 { 0x10 } else { 0x02 };
        Craft::new(client, vip, proto::TCP, pk::tcp(40000 + (k % 1000) as u16, port.unwrap(), flags, &[])).build()
    };
    let handle = ConfigHandle::new(cfg.clone());
    let mut want = Vec::new();
    let mut send = |frames: Vec<Vec<u8>>| {
        for (k, f) in frames.iter().enumerate() {
            let mut b = MemBuf::from_slice(f);
            match one.process(&cfg, 0, &mut b, 0) {
                Verdict::Tx(1) => want.push(b.data().to_vec()),
                Verdict::Drop(DropReason::Parse(ParseError::BadVersion)) => assert_eq!(f[14], 0x65, "packet {k}"),
                v => panic!("reference, packet {k}: {v:?}"),
            }
            assert!(peer0.inject_bytes(f), "receive ring full");
        }
    };
    let bursts = |w: &mut Worker<mem::MemPort>| {
        w.publish();
        published.lock().unwrap().bursts
    };
    let first = 3 * BURST + BURST / 2;
    send((0..first).map(|i| frame(0, i)).collect());
    assert_eq!(w.poll(&handle), first, "one poll runs the full bursts and the half one after them");
    assert_eq!(bursts(&mut w), 4);
    let broken = |i: usize| {
        let mut f = frame(first, 6 * i);
        f[14] = 0x65;
        f
    };
    send((0..BURST).map(broken).chain((0..(CHAIN + 1) * BURST).map(|i| frame(first + 6 * BURST, i))).collect());
    assert_eq!(w.poll(&handle), CHAIN * BURST, "a poll runs CHAIN full bursts at most");
    assert_eq!(w.poll(&handle), 2 * BURST, "then the rest");
    assert_eq!(w.poll(&handle), 0);
    assert_eq!(bursts(&mut w), 4 + CHAIN as u64 + 2);
    port_sent(&peer1, &want, 1);
    let c = published.lock().unwrap().counters.clone();
    assert!(c.fast_path > want.len() as u64 / 2, "the fast path took them: {}", c.fast_path);
    assert_eq!(c, one.counters, "counters");
}

/// The flow tables' clock runs from the worker's epoch: flows a worker opens, in both families, are live at that
/// clock's present and expire within their state's timeout of it. (A clock that stood still would record them as
/// expiring near the epoch.)
#[test]
fn a_worker_records_flows_on_its_own_clock() {
    let (p0, peer0) = mem::pair("p0", 4 * BURST);
    let (p1, _peer1) = mem::pair("p1", 4 * BURST);
    let (cfg, _, mut w, _, _) = worker_and_reference(vec![p0, p1]);
    let epoch = std::time::Instant::now() - std::time::Duration::from_secs(1000);
    w.set_epoch(epoch);
    let nat: Vec<_> = SERVICES.iter().filter(|s| s.3 == Mode::Nat && s.1 == Protocol::Tcp && s.2.is_some()).collect();
    for (vip, _, port, _, _) in &nat {
        let vip: IpAddr = vip.parse().unwrap();
        let client: IpAddr = if vip.is_ipv4() { "198.18.0.10" } else { "2001:db8::10" }.parse().unwrap();
        assert!(
            peer0.inject_bytes(&Craft::new(client, vip, proto::TCP, pk::tcp(40000, port.unwrap(), 0x02, &[])).build())
        );
    }
    let handle = ConfigHandle::new(cfg);
    assert_eq!(w.poll(&handle), nat.len());
    let now = epoch.elapsed().as_millis() as u32;
    let listed = flows(&w.pipeline, now);
    assert_eq!(listed.len(), nat.len(), "flows live at the worker's clock: {listed:?}");
    assert!(listed.iter().any(|f| f.client.is_ipv4()) && listed.iter().any(|f| f.client.is_ipv6()), "both families");
    for f in &listed {
        // A SYN's half-open timeout is seconds, far below the 1000 s the clock has run.
        assert!(f.expires_in_ms > 0 && f.expires_in_ms < 600_000, "{f:?}");
    }
}
