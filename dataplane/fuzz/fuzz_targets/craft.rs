//! Structure-aware fuzzing of the whole pipeline: the input drives a packet *builder* (`edgelb_testkit::packets::
//! Craft`), not the bytes of a frame, so lengths and checksums come out right and the packets pass the checksum gates
//! to reach the deep paths: IPv4 options, IPv6 extension headers, fragments (first, later, cut anywhere), VLAN tags,
//! transport messages from 0 bytes up, Ethernet padding or none, in every mode of both families, in every direction
//! — to a VIP, a NAT or full-NAT reply from the backend of a flow opened just before, an ICMP error quoting that flow,
//! an echo request.
//!
//! Checked for every transmitted frame, with an independent parser (etherparse): it parses, its lengths agree with
//! the frame, and when the input was valid its IPv4 header and TCP/UDP/ICMP checksums verify; it fits the egress MTU;
//! it goes only to a backend or gateway (address and MAC) or back to the sender. A NAT or full-NAT reply restores
//! exactly the client's view: VIP and service port as source, the client's address and port as destination.
//! Now and then a packet arrives while the pipeline counts as saturated, so the new-flow limit refuses new flows.
//! Every few million inputs the pipeline's counters are printed: they show which deep paths the run reached.
#![no_main]

use edgelb_dataplane::model::{Mode, Protocol};
use edgelb_dataplane::snapshot::{ConfigBuilder, DataplaneConfig};
use edgelb_dataplane::packet::{MemBuf, PacketBuf};
use edgelb_dataplane::pipeline::{DropReason, Pipeline, TableSizes, Verdict};
use edgelb_testkit::models::{self, SERVICES};
use edgelb_testkit::packets::{self as pk, proto, Craft};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

struct State {
    /// [`SERVICES`] with parsed VIPs.
    vips: Vec<IpAddr>,
    cfg: Arc<DataplaneConfig>,
    pipeline: Pipeline,
    now: u32,
    execs: u64,
}

fn state() -> &'static Mutex<State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(|| {
        let (cfg, _) = ConfigBuilder::new().build(&models::every_mode(251)).expect("fuzz model is valid");
        let mut pipeline =
            Pipeline::new(0, 1, TableSizes { flows_v4: 4096, flows_v6: 4096, affinity: 256, fragments: 256 });
        pipeline.sync(&cfg);
        // The new-flow limit on, so that inputs that saturate the pipeline (see below) reach its refusals.
        pipeline.set_new_flow_limit(1);
        let vips = SERVICES.iter().map(|r| r.0.parse().unwrap()).collect();
        Mutex::new(State { vips, cfg, pipeline, now: 1, execs: 0 })
    })
}

/// Reads the fuzzer's bytes as choices; zeros once they run out.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn bit(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

fn l4(p: u8, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    if p == proto::TCP {
        pk::tcp(sport, dport, flags, payload)
    } else {
        pk::udp(sport, dport, payload)
    }
}

fn tx(s: &mut State, port: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let cfg = s.cfg.clone();
    let mut b = MemBuf::from_slice(frame);
    let v = s.pipeline.process(&cfg, port, &mut b, s.now);
    (v, b.data().to_vec())
}

fuzz_target!(|data: &[u8]| {
    let mut c = Choices(data);
    let mut guard = state().lock().unwrap_or_else(|p| p.into_inner());
    let s = &mut *guard;
    s.execs += 1;
    s.now = s.now.wrapping_add(u32::from(c.u8()) * 13);
    // One input in 16 arrives while the worker's polls come back full: saturated, with a limit of one new flow a
    // second, so the flow opened below takes the token and a new flow after it is refused (a SYN in stage 1). The
    // others arrive after an empty poll, which ends it.
    let saturated = c.u8() % 16 == 15;
    if saturated {
        (0..4).for_each(|_| s.pipeline.observe_poll(32, 1, s.now));
    } else {
        s.pipeline.observe_poll(0, 0, s.now);
    }
    let si = usize::from(c.u8()) % SERVICES.len();
    let (_, prot, port, mode, _) = SERVICES[si];
    let vip = s.vips[si];
    let v4 = vip.is_ipv4();
    let pr = if prot == Protocol::Tcp { proto::TCP } else { proto::UDP };
    let dport = port.unwrap_or(c.u16());
    let ci = c.u16();
    let client: IpAddr = if v4 {
        IpAddr::from([198, 18, 0, (ci % 250) as u8 + 2])
    } else {
        IpAddr::from([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (ci >> 8) as u8, ci as u8 | 1])
    };
    let sport = c.u16() | 1;
    let dir = c.u8() % 4;

    // The flow the packet belongs to, opened cleanly (what a backend would see of it), unless the choice is to pick
    // a flow up mid-way.
    let opened = if c.u8() != 0xfd {
        let syn = Craft::new(client, vip, pr, l4(pr, sport, dport, 0x02, b"open")).build();
        let (v, out) = tx(s, 0, &syn);
        match v {
            Verdict::Tx(_) => {
                models::check_transmitted(&out, &syn, Some(client)).unwrap_or_else(|e| panic!("SYN: {e}"))
            }
            _ => None,
        }
    } else {
        None
    };

    // Up to 1 600 bytes, so tunnels overflow the MTU now and then.
    let payload_len = usize::from(c.u16() % 1600);
    let payload = c.bytes(payload_len.min(64));
    let payload: Vec<u8> = payload.iter().cycle().take(payload_len).copied().collect();
    let flags = c.u8();
    let mut craft = match dir {
        // Toward the VIP.
        0 => Craft::new(client, vip, pr, l4(pr, sport, dport, flags, &payload)),
        // The backend's reply.
        1 => {
            let Some(seen) = &opened else { return };
            let (src, dst, bsport, bdport) = match (mode, seen.ports) {
                (Mode::Nat | Mode::FullNat, Some((s_, d_))) => (seen.dst, seen.src, d_, s_),
                _ => (seen.dst, client, dport, sport),
            };
            Craft::new(src, dst, pr, l4(pr, bsport, bdport, flags, &payload))
        }
        // An ICMP error from the clients' gateway about the VIP's packet to the client.
        2 => {
            let quoted = Craft::new(vip, client, pr, l4(pr, dport, sport, flags, &payload)).build();
            let cut = usize::from(c.u8());
            let q = pk::ip_of(&quoted);
            let q = &q[..q.len().min(cut.max(1))];
            let mtu = c.bit().then_some(c.u16());
            let gw =
                if v4 { IpAddr::from([198, 18, 1, 254]) } else { IpAddr::from([0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xfe]) };
            Craft::new(gw, vip, if v4 { proto::ICMP } else { proto::ICMPV6 }, pk::icmp_error(v4, mtu, q))
        }
        // An echo request to the VIP.
        _ => Craft::new(
            client,
            vip,
            if v4 { proto::ICMP } else { proto::ICMPV6 },
            pk::echo_request(v4, sport, 1, &payload),
        ),
    };
    craft.vlans = (0..c.u8() % 4).map(|i| 100 + u16::from(i)).collect();
    let opts = usize::from(c.u8() % 48);
    if v4 {
        craft.ip_options = c.bytes(opts);
    } else {
        for _ in 0..(opts % 4) {
            let kind = [0u8, 43, 60, 60][usize::from(c.u8() % 4)];
            let len = usize::from(c.u8() % 24);
            craft.ext_headers.push((kind, c.bytes(len)));
        }
    }
    craft.frag = match c.u8() % 6 {
        1 => Some((0, true)),
        2 => Some((u16::from(c.u8()) & 0x1f, c.bit())),
        _ => None,
    };
    craft.ident = u32::from(c.u16());
    if c.bit() {
        craft.keep = Some(usize::from(c.u16()) % (craft.l4.len() + 1));
    }
    craft.pad_to = if c.bit() { 60 } else { usize::from(c.u8()) };
    craft.ttl = match c.u8() {
        1 => 0,
        2 => 1,
        3 => 2,
        _ => 64,
    };
    craft.df = c.bit();
    craft.raw_l4_checksum = c.u8() == 0xff;
    let in_port = if dir == 1 { 1 } else { 0 } ^ u16::from(c.u8() == 0xfe);
    let frame = craft.build();
    let (v, out) = tx(s, in_port, &frame);
    // As a worker does between bursts: reclaim expired entries (a table never swept would, after 2^31 ms of the
    // fuzzer's fast clock, see long-expired entries as live again under wrapping time).
    let now = s.now;
    s.pipeline.housekeeping(64, now);

    let cnt = &s.pipeline.counters;
    assert_eq!(
        cnt.rx,
        cnt.tx + cnt.slowpath + cnt.handoff + cnt.held + cnt.dropped_total(),
        "a packet without one verdict"
    );
    if let Verdict::Tx(p) = v {
        assert!(p <= 1, "transmit to a port that does not exist: {p}");
        let seen = models::check_transmitted(&out, &frame, Some(craft.src)).unwrap_or_else(|e| panic!("{e}"));
        // Only packets that carry their own ports: a later fragment takes them from the fragment table, keyed by
        // (source, destination, protocol, identification), which the fuzzer's idents may make collide with an
        // earlier input's flow, as a sender reusing an identification would.
        // And only the translated packet: an oversize reply becomes a packet-too-big to the backend instead.
        let own_ports = matches!(craft.frag, None | Some((0, _)));
        let translated = seen.as_ref().is_some_and(|x| x.proto == pr);
        if let (Some(seen), 1, Mode::Nat | Mode::FullNat, true, true) = (seen, dir, mode, own_ports, translated) {
            assert_eq!((seen.src, seen.dst), (vip, client), "a NAT reply must come from the VIP to the client");
            if let Some(ports) = seen.ports {
                assert_eq!(ports, (dport, sport), "a NAT reply must come from the service port to the client's");
            }
        }
    }
    if s.execs.is_power_of_two() && s.execs >= 1 << 16 || s.execs % 10_000_000 == 0 {
        let c = &s.pipeline.counters;
        let drops: Vec<String> =
            DropReason::all().filter(|d| c.dropped(*d) > 0).map(|d| format!("{}={}", d.name(), c.dropped(d))).collect();
        eprintln!(
            "craft: {} inputs: rx {} tx {} new_flows {} replies {} fragments_followed {} icmp_errors_steered {} \
             icmp_echo {} icmp_too_big_sent {} midflow_pickups {} untracked {} drops {}",
            s.execs,
            c.rx,
            c.tx,
            c.new_flows,
            c.replies,
            c.fragments_followed,
            c.icmp_errors_steered,
            c.icmp_echo,
            c.icmp_too_big_sent,
            c.midflow_pickups,
            c.untracked,
            drops.join(",")
        );
    }
});
