//! Hostile input through the whole pipeline: frames built field by field (`edgelb_testkit::packets::Craft`) with
//! valid checksums, so they reach the deep paths, in every mode, both families, both directions. Every frame gets a
//! verdict without a panic; every transmitted frame passes an independent parser (`etherparse`) with correct lengths
//! and checksums, stays within the egress MTU, and goes only to a backend, a gateway or the sender; and the
//! appliance keeps forwarding afterwards.

use edgelb_dataplane::model::{Mode, Protocol};
use edgelb_dataplane::packet::{MemBuf, PacketBuf};
use edgelb_dataplane::pipeline::{DropReason, Pipeline, TableSizes, Verdict};
use edgelb_dataplane::snapshot::{ConfigBuilder, DataplaneConfig};
use edgelb_testkit::models::{self, ServiceRow, SERVICES};
use edgelb_testkit::packets::{self as pk, proto, Craft, Seen};
use std::net::IpAddr;
use std::sync::Arc;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn setup() -> (Arc<DataplaneConfig>, Pipeline) {
    let (cfg, _) = ConfigBuilder::new().build(&models::every_mode(251)).unwrap();
    let mut p = Pipeline::new(0, 1, TableSizes { flows_v4: 4096, flows_v6: 4096, affinity: 256, fragments: 256 });
    p.sync(&cfg);
    (cfg, p)
}

fn client(v4: bool, i: u16) -> IpAddr {
    if v4 {
        IpAddr::from([198, 18, 0, (10 + i % 200) as u8])
    } else {
        format!("2001:db8::{:x}", 0x10 + i).parse().unwrap()
    }
}

fn l4_of(proto_: u8, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    if proto_ == proto::TCP {
        pk::tcp(sport, dport, flags, payload)
    } else {
        pk::udp(sport, dport, payload)
    }
}

fn proto_of(p: Protocol) -> u8 {
    if p == Protocol::Tcp {
        proto::TCP
    } else {
        proto::UDP
    }
}

fn run(p: &mut Pipeline, cfg: &DataplaneConfig, port: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut b = MemBuf::from_slice(frame);
    let v = p.process(cfg, port, &mut b, 1);
    (v, b.data().to_vec())
}

fn check_tx(v: Verdict, out: &[u8], input: &[u8], sender: IpAddr) -> Option<Seen> {
    let Verdict::Tx(_) = v else { return None };
    models::check_transmitted(out, input, Some(sender)).unwrap_or_else(|e| panic!("{e}"))
}

/// Open a flow to `row` from `client:40000` and return what the backend received.
fn open(p: &mut Pipeline, cfg: &DataplaneConfig, row: &ServiceRow, c: IpAddr, sport: u16) -> Seen {
    let (vip, prot, port, _, _) = *row;
    let l4 = l4_of(proto_of(prot), sport, port.unwrap_or(9), SYN, b"hello");
    let f = Craft::new(c, vip.parse().unwrap(), proto_of(prot), l4).build();
    let (v, out) = run(p, cfg, 0, &f);
    check_tx(v, &out, &f, c).unwrap_or_else(|| panic!("opening a flow to {vip}: {v:?}"))
}

/// The frames of the report: a first fragment cut inside its transport header (with 40 bytes of IPv4 options, or
/// an IPv6 destination-options header), TCP and UDP, to every VIP: each is dropped as `fragment_too_short`, and
/// the next normal packet of each service is forwarded. Before the fix the first of them panicked in `nat::apply`.
#[test]
fn short_first_fragments_are_dropped_and_forwarding_goes_on() {
    let (cfg, mut p) = setup();
    for (i, row) in SERVICES.iter().enumerate() {
        let (vip, prot, port, _, _) = *row;
        let vip: IpAddr = vip.parse().unwrap();
        let pr = proto_of(prot);
        let hdr = if pr == proto::TCP { 20 } else { 8 };
        for keep in 0..hdr {
            for pad in [0, 60] {
                let c = client(vip.is_ipv4(), i as u16);
                let mut craft = Craft::new(c, vip, pr, l4_of(pr, 40000, port.unwrap_or(9), SYN, &[0x5a; 64]));
                if vip.is_ipv4() {
                    craft.ip_options = vec![0x01; 40];
                } else {
                    craft.ext_headers = vec![(60, vec![0x01; 38])];
                }
                craft.frag = Some((0, true));
                craft.keep = Some(keep);
                craft.pad_to = pad;
                let f = craft.build();
                if vip.is_ipv4() && keep == 14 && pad == 0 {
                    assert_eq!(f.len(), 88, "the reported 88-byte frame");
                }
                let (v, _) = run(&mut p, &cfg, 0, &f);
                assert_eq!(v, Verdict::Drop(DropReason::FragmentTooShort), "{vip} {pr} keep {keep} pad {pad}");
            }
        }
        let seen = open(&mut p, &cfg, row, client(vip.is_ipv4(), 300 + i as u16), 41000);
        assert!(!seen.fragment);
    }
    assert!(p.counters.dropped(DropReason::FragmentTooShort) > 0);
}

/// Every shape a sender controls, cut at every length, in both directions of every mode: no panic, and every
/// transmitted frame passes the independent check. Counts what reached the deep paths, so a sweep that silently
/// stopped reaching them fails.
#[test]
fn every_shape_every_cut_every_mode() {
    let (cfg, mut p) = setup();
    let mut tx = 0u32;
    let mut replies = 0u64;
    for (i, row) in SERVICES.iter().enumerate() {
        let (vip_s, prot, port, mode, _) = *row;
        let vip: IpAddr = vip_s.parse().unwrap();
        let v4 = vip.is_ipv4();
        let pr = proto_of(prot);
        let dport = port.unwrap_or(9);
        for shape in 0..24u16 {
            let c = client(v4, (i as u16) * 24 + shape);
            // The flow this shape attacks, opened cleanly; the backend's view of it.
            let seen = open(&mut p, &cfg, row, c, 30000 + shape);
            let (vlans, opts, frag) = (shape % 3, shape / 3 % 2 == 1, shape / 6 % 4);
            let (bsrc, bdst, bsport, bdport) = match (mode, seen.ports) {
                (Mode::Nat | Mode::FullNat, Some((s, d))) => (seen.dst, seen.src, d, s),
                _ => (seen.dst, c, dport, 30000 + shape),
            };
            let forward = Craft::new(c, vip, pr, l4_of(pr, 30000 + shape, dport, ACK, &[7; 40]));
            let reply = Craft::new(bsrc, bdst, pr, l4_of(pr, bsport, bdport, ACK, &[8; 40]));
            let mut error = Craft::new(
                if v4 { models::GW4 } else { models::GW6 }.parse().unwrap(),
                vip,
                if v4 { proto::ICMP } else { proto::ICMPV6 },
                pk::icmp_error(
                    v4,
                    None,
                    pk::ip_of(&Craft::new(vip, c, pr, l4_of(pr, dport, 30000 + shape, ACK, b"")).build()),
                ),
            );
            error.ttl = 30;
            for (dir, base) in [(0u8, forward), (1, reply), (2, error)] {
                let full = base.l4.len();
                // A well-formed pair: the first fragment (whole transport header, 24 bytes) and the rest.
                for (off, more) in [(0u16, true), (3, false)] {
                    let mut craft = base.clone();
                    craft.frag = Some((off, more));
                    craft.keep = more.then_some(24);
                    craft.ident = 0x8000_0000 | (u32::from(shape) << 8) | (i as u32) << 2 | u32::from(dir);
                    let f = craft.build();
                    let (v, out) = run(&mut p, &cfg, if dir == 1 { 1 } else { 0 }, &f);
                    if check_tx(v, &out, &f, craft.src).is_some() {
                        tx += 1;
                    }
                }
                for keep in (0..=full).step_by(3).chain([full]) {
                    let mut craft = base.clone();
                    craft.vlans = (0..vlans).map(|v| 100 + v).collect();
                    if opts {
                        if v4 {
                            craft.ip_options = vec![0x07, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0];
                        } else {
                            craft.ext_headers = vec![(0, vec![1, 4, 0, 0, 0, 0]), (60, vec![1, 2, 0, 0])];
                        }
                    }
                    match frag {
                        1 => craft.frag = Some((0, true)),
                        2 => craft.frag = Some((2, true)),
                        3 => craft.frag = Some((1, false)),
                        _ => {}
                    }
                    craft.keep = Some(keep);
                    craft.pad_to = if keep % 2 == 0 { 60 } else { 0 };
                    // Fragments of one flow share an identification; another flow's must differ (RFC 6864).
                    craft.ident = (u32::from(shape) << 8) | (i as u32) << 2 | u32::from(dir);
                    let f = craft.build();
                    let port_in = if dir == 1 { 1 } else { 0 };
                    let (v, out) = run(&mut p, &cfg, port_in, &f);
                    let sender = craft.src;
                    if let Some(s) = check_tx(v, &out, &f, sender) {
                        tx += 1;
                        // A reply restores exactly the client's view: from the VIP and its port, to the client.
                        if dir == 1 && matches!(mode, Mode::Nat | Mode::FullNat) {
                            assert_eq!((s.src, s.dst), (vip, c), "reply addresses");
                            if let Some(ports) = s.ports {
                                assert_eq!(ports, (dport, 30000 + shape), "reply ports");
                            }
                            replies += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(tx > 2000, "only {tx} frames were transmitted: the sweep no longer reaches the rewrites");
    assert!(replies > 300, "only {replies} replies were checked");
    let c = &p.counters;
    for (what, n) in [
        ("replies", c.replies),
        ("icmp errors steered", c.icmp_errors_steered),
        ("fragments followed", c.fragments_followed),
        ("short first fragments", c.dropped(DropReason::FragmentTooShort)),
        ("fragments without first", c.dropped(DropReason::FragmentNoFirst)),
    ] {
        assert!(n > 0, "the sweep never reached {what}: {c:?}");
    }
    println!("transmitted and checked {tx}, replies checked {replies}; counters {c:?}");
}

/// A packet bigger than the egress MTU never leaves (found by the `craft` fuzz target: NAT forwarded a 1 645-byte
/// frame; only tunnels were checked). Backend side MTU 1 400, client side 1 500: a 1 450-byte packet with DF (and
/// any IPv6 one) becomes fragmentation-needed / packet-too-big to its sender advertising 1 400; without DF it is
/// dropped as `too_big`; a backend's oversize reply is answered alike on its side.
#[test]
fn nothing_leaves_bigger_than_the_egress_mtu() {
    let mut model = models::every_mode(251);
    model.interfaces[1].mtu = 1400;
    let (cfg, _) = ConfigBuilder::new().build(&model).unwrap();
    let mut p = Pipeline::new(0, 1, TableSizes { flows_v4: 1024, flows_v6: 1024, affinity: 64, fragments: 64 });
    p.sync(&cfg);
    for (vip, c) in [("198.19.0.1", client(true, 1)), ("2001:db8:100::1", client(false, 1))] {
        let vip: IpAddr = vip.parse().unwrap();
        for df in [true, false] {
            let mut craft = Craft::new(c, vip, proto::TCP, pk::tcp(40000 + u16::from(df), 80, SYN, &[1; 1410]));
            craft.df = df;
            let f = craft.build();
            let (v, out) = run(&mut p, &cfg, 0, &f);
            if vip.is_ipv4() && !df {
                assert_eq!(v, Verdict::Drop(DropReason::TooBig));
                continue;
            }
            assert_eq!(v, Verdict::Tx(0), "{vip} df {df}: answered out of the ingress port");
            let seen = check_tx(v, &out, &f, c).unwrap();
            assert_eq!((seen.src, seen.dst, seen.quoted.map(|q| q.1)), (vip, c, Some(vip)));
            let l3 = out.len() - pk::ip_of(&out).len();
            let icmp = l3 + if vip.is_ipv4() { 20 } else { 40 };
            let mtu = if vip.is_ipv4() {
                u32::from(u16::from_be_bytes([out[icmp + 6], out[icmp + 7]]))
            } else {
                u32::from_be_bytes([out[icmp + 4], out[icmp + 5], out[icmp + 6], out[icmp + 7]])
            };
            assert_eq!(mtu, 1400, "the MTU advertised");
        }
        // A flow that fits, then the backend's oversize reply: a packet-too-big back to the backend, on port 1.
        let seen = {
            let f = Craft::new(c, vip, proto::TCP, pk::tcp(41000, 80, SYN, b"x")).build();
            let (v, out) = run(&mut p, &cfg, 0, &f);
            check_tx(v, &out, &f, c).unwrap()
        };
        let (bport, cport) = seen.ports.unwrap();
        for (size, port) in [(1400, 0), (1480, 1)] {
            let mut reply = Craft::new(seen.dst, c, proto::TCP, pk::tcp(cport, bport, ACK, &vec![2; size]));
            reply.df = true;
            let f = reply.build();
            let (v, out) = run(&mut p, &cfg, 1, &f);
            assert_eq!(v, Verdict::Tx(port), "{vip}: a {size}-byte reply: translated (0) or packet-too-big (1)");
            let s = check_tx(v, &out, &f, seen.dst).unwrap();
            assert_eq!(s.dst, if port == 0 { c } else { seen.dst });
        }
    }
    assert!(p.counters.icmp_too_big_sent >= 5, "{:?}", p.counters);
}

/// IPv6 packets from or to IPv4-mapped addresses (`::ffff:0:0/96`, allowed in no datagram by RFC 6890) are dropped
/// and counted. The tables hold IPv4 addresses in that form, so before the check a SYN to `::ffff:198.19.0.1` passed
/// for traffic to the IPv4 VIP 198.19.0.1 and went out as IPv6 toward its backend.
#[test]
fn ipv6_packets_with_ipv4_mapped_addresses_are_dropped() {
    let (cfg, mut p) = setup();
    let cases = [("2001:db8::10", "::ffff:198.19.0.1"), ("::ffff:198.18.0.10", "2001:db8:100::1")];
    for (src, dst) in cases {
        let (s, d): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let f = Craft::new(s, d, proto::TCP, pk::tcp(40000, 80, SYN, b"mapped")).build();
        let (v, _) = run(&mut p, &cfg, 0, &f);
        assert_eq!(v, Verdict::Drop(DropReason::MappedAddress), "{src} -> {dst}");
    }
    assert_eq!(p.counters.dropped(DropReason::MappedAddress), 2);
    // Forwarding goes on: an ordinary IPv6 SYN to the same VIP.
    open(&mut p, &cfg, &SERVICES[8], client(false, 1), 40001);
}

/// Set RFC 791's reserved flag (bit 0 of the flags) in an IPv4 frame and make its header checksum right again.
fn set_reserved_flag(f: &mut [u8]) {
    let l2 = f.len() - pk::ip_of(f).len();
    let hl = usize::from(f[l2] & 0xf) * 4;
    f[l2 + 6] |= 0x80;
    f[l2 + 10..l2 + 12].fill(0);
    let c = pk::internet_checksum(&[&f[l2..l2 + hl]]);
    f[l2 + 10..l2 + 12].copy_from_slice(&c.to_be_bytes());
}

/// IPv4 packets with the reserved flag set (a whole datagram, a first and a later fragment) to every IPv4 NAT
/// service: forwarded as any other, the flag carried on and the header checksum right. Found by the `process` fuzz
/// target: the independent checker rebuilt the header without the flag and called every such checksum wrong.
#[test]
fn the_reserved_flag_is_carried_with_a_right_checksum() {
    let (cfg, mut p) = setup();
    let mut forwarded = 0;
    for (i, row) in SERVICES.iter().enumerate() {
        let (vip, prot, port, mode, _) = *row;
        let vip: IpAddr = vip.parse().unwrap();
        if !vip.is_ipv4() || mode != Mode::Nat {
            continue;
        }
        let pr = proto_of(prot);
        let c = client(true, 400 + i as u16);
        let l4 = l4_of(pr, 42000, port.unwrap_or(9), SYN, &[0x5a; 64]);
        let whole = Craft::new(c, vip, pr, l4.clone());
        let mut first = whole.clone();
        first.ident = 0x4242;
        first.frag = Some((0, true));
        first.keep = Some(32);
        let mut later = first.clone();
        later.frag = Some((4, false));
        later.keep = None;
        for craft in [&whole, &first, &later] {
            let mut f = craft.build();
            set_reserved_flag(&mut f);
            pk::check_frame(&f).unwrap_or_else(|e| panic!("the input to {vip}: {e}"));
            let (v, out) = run(&mut p, &cfg, 0, &f);
            let seen = check_tx(v, &out, &f, c).unwrap_or_else(|| panic!("{vip} {:?}: {v:?}", craft.frag));
            assert_eq!(seen.fragment, craft.frag.is_some());
            let l2 = out.len() - pk::ip_of(&out).len();
            assert_eq!(out[l2 + 6] & 0x80, 0x80, "the reserved flag is carried on");
            forwarded += 1;
        }
    }
    assert_eq!(forwarded, 9, "three packets to each of the three IPv4 NAT services");
}
