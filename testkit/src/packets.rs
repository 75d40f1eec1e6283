//! Hand-made packets and an independent check of transmitted frames.
//!
//! [`Craft`] is a builder, not a parser: it writes whatever it is told (a 14-byte TCP header in a first fragment, 40
//! bytes of IPv4 options, three VLAN tags) and only fills in what a sender's stack would get right — IP lengths, the
//! IPv4 header checksum and the transport checksum over the whole transport message — so the frame reaches the deep
//! paths of the pipeline instead of dying at a checksum gate.
//!
//! [`check_frame`] parses a frame with `etherparse` and verifies what must hold for anything the appliance sends:
//! IP lengths consistent with the frame, the IPv4 header checksum, and the TCP/UDP/ICMP checksum of every
//! unfragmented packet, through IPIP and GUE (to [`GUE_PORT`]) tunnels too. `etherparse` has no `cfg(fuzzing)`
//! shortcut (smoltcp's `verify_checksum` returns true under `cargo fuzz`), so the checks hold in the fuzzer as well.

use etherparse::checksum::Sum16BitWords;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use std::net::IpAddr;

/// IP protocol numbers used here.
pub mod proto {
    /// ICMPv4.
    pub const ICMP: u8 = 1;
    /// IPv4 in IP.
    pub const IPIP: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 in IP.
    pub const IPV6: u8 = 41;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// The GUE port [`check_frame`] looks inside.
pub const GUE_PORT: u16 = 6080;

/// A frame to build. [`Craft::new`] gives a plain unfragmented packet; change fields, then [`Craft::build`].
#[derive(Debug, Clone)]
pub struct Craft {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// 802.1Q tags (VLAN ids), outermost first; any number (the appliance accepts two).
    pub vlans: Vec<u16>,
    /// Source address (its family decides the IP version).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TTL / hop limit.
    pub ttl: u8,
    /// IPv4 don't-fragment flag.
    pub df: bool,
    /// Fragment identification.
    pub ident: u32,
    /// IPv4 options, zero-padded to a multiple of 4 and cut at 40 bytes.
    pub ip_options: Vec<u8>,
    /// IPv6 extension headers before any fragment header: (header type, body after its first two bytes), each padded
    /// to a multiple of 8 bytes.
    pub ext_headers: Vec<(u8, Vec<u8>)>,
    /// A fragment: (offset in 8-byte units, more fragments). IPv6 gets a fragment header.
    pub frag: Option<(u16, bool)>,
    /// The transport protocol.
    pub proto: u8,
    /// The whole transport message (header and payload); its checksum field is filled in over all of it.
    pub l4: Vec<u8>,
    /// How many bytes of the transport message, from the fragment's offset, this packet carries (`None`: the rest).
    pub keep: Option<usize>,
    /// Zero-pad the frame to this length (Ethernet's 60-byte minimum, or more).
    pub pad_to: usize,
    /// Leave the transport checksum as `l4` has it.
    pub raw_l4_checksum: bool,
}

impl Craft {
    /// An unfragmented packet `src` → `dst` carrying `l4` of protocol `proto`.
    pub fn new(src: IpAddr, dst: IpAddr, proto: u8, l4: Vec<u8>) -> Self {
        Self {
            dst_mac: [2, 0, 0, 0, 1, 0],
            src_mac: [2, 0, 0, 0, 0, 0xfe],
            vlans: Vec::new(),
            src,
            dst,
            ttl: 64,
            df: false,
            ident: 0x1234,
            ip_options: Vec::new(),
            ext_headers: Vec::new(),
            frag: None,
            proto,
            l4,
            keep: None,
            pad_to: 0,
            raw_l4_checksum: false,
        }
    }

    /// The frame.
    pub fn build(&self) -> Vec<u8> {
        let mut l4 = self.l4.clone();
        if !self.raw_l4_checksum {
            fill_l4_checksum(&mut l4, self.proto, self.src, self.dst);
        }
        let from = self.frag.map_or(0, |(off, _)| usize::from(off) * 8).min(l4.len());
        let carried = &l4[from..];
        let carried = &carried[..self.keep.unwrap_or(carried.len()).min(carried.len())];
        let mut f = Vec::with_capacity(64 + carried.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for v in &self.vlans {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&(v & 0x0fff).to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&[0x08, 0x00]);
                let mut opts = self.ip_options.clone();
                opts.truncate(40);
                while opts.len() % 4 != 0 {
                    opts.push(0);
                }
                let hl = 20 + opts.len();
                let total = (hl + carried.len()).min(usize::from(u16::MAX)) as u16;
                let (off, more) = self.frag.unwrap_or((0, false));
                let flags_frag = (u16::from(self.df) << 14) | (u16::from(more) << 13) | (off & 0x1fff);
                let at = f.len();
                f.push(0x40 | (hl / 4) as u8);
                f.push(0);
                f.extend_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&(self.ident as u16).to_be_bytes());
                f.extend_from_slice(&flags_frag.to_be_bytes());
                f.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&opts);
                let c = internet_checksum(&[&f[at..at + hl]]);
                f[at + 10..at + 12].copy_from_slice(&c.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&[0x86, 0xdd]);
                let mut ext = Vec::new();
                let mut kinds: Vec<u8> = self.ext_headers.iter().map(|(k, _)| *k).collect();
                if self.frag.is_some() {
                    kinds.push(proto::FRAGMENT);
                }
                kinds.push(self.proto);
                for (i, (_, body)) in self.ext_headers.iter().enumerate() {
                    let mut h = vec![kinds[i + 1], 0];
                    h.extend_from_slice(body);
                    while h.len() < 8 || h.len() % 8 != 0 {
                        h.push(0);
                    }
                    h[1] = (h.len() / 8 - 1).min(255) as u8;
                    ext.extend_from_slice(&h);
                }
                if let Some((off, more)) = self.frag {
                    ext.push(self.proto);
                    ext.push(0);
                    ext.extend_from_slice(&((off << 3) | u16::from(more)).to_be_bytes());
                    ext.extend_from_slice(&self.ident.to_be_bytes());
                }
                let plen = (ext.len() + carried.len()).min(usize::from(u16::MAX)) as u16;
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&plen.to_be_bytes());
                f.push(kinds[0]);
                f.push(self.ttl);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&ext);
            }
            _ => panic!("Craft: source and destination of different families"),
        }
        f.extend_from_slice(carried);
        while f.len() < self.pad_to {
            f.push(0);
        }
        f
    }
}

/// A TCP segment: 20-byte header (no options), sequence 1, acknowledgement 1 when ACK is set, then `payload`.
pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1u32.to_be_bytes());
    if flags & 0x10 != 0 {
        t[8..12].copy_from_slice(&1u32.to_be_bytes());
    }
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(payload);
    t
}

/// A UDP datagram (its length field set).
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()).min(usize::from(u16::MAX)) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    u
}

/// An ICMP echo request (ICMPv4 type 8 or ICMPv6 type 128).
pub fn echo_request(v4: bool, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![if v4 { 8 } else { 128 }, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// An ICMP error quoting `quoted` (an IP packet, from its IP header on): destination unreachable / port unreachable
/// (ICMPv4 3/3, ICMPv6 1/4), or with `mtu` fragmentation needed (3/4) / packet too big (2/0).
pub fn icmp_error(v4: bool, mtu: Option<u16>, quoted: &[u8]) -> Vec<u8> {
    let (t, c) = match (v4, mtu) {
        (true, None) => (3, 3),
        (true, Some(_)) => (3, 4),
        (false, None) => (1, 4),
        (false, Some(_)) => (2, 0),
    };
    let mut m = vec![t, c, 0, 0, 0, 0, 0, 0];
    if let Some(mtu) = mtu {
        m[6..8].copy_from_slice(&mtu.to_be_bytes());
    }
    m.extend_from_slice(quoted);
    m
}

/// The IP packet of a frame (everything after the Ethernet header and its 802.1Q, 802.1ad or 0x9100 tags).
pub fn ip_of(frame: &[u8]) -> &[u8] {
    let mut at = 12;
    while frame.len() >= at + 2 && matches!([frame[at], frame[at + 1]], [0x81, 0x00] | [0x88, 0xa8] | [0x91, 0x00]) {
        at += 4;
    }
    &frame[(at + 2).min(frame.len())..]
}

/// RFC 1071 checksum over the concatenation of `parts` (each of even length but the last).
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut s = Sum16BitWords::new();
    for p in parts {
        s = s.add_slice(p);
    }
    s.ones_complement().to_be()
}

fn pseudo(src: IpAddr, dst: IpAddr, proto_: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, proto_]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            let o = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                IpAddr::V6(a) => a.octets(),
            };
            p.extend_from_slice(&o(src));
            p.extend_from_slice(&o(dst));
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto_]);
        }
    }
    p
}

fn fill_l4_checksum(l4: &mut [u8], proto_: u8, src: IpAddr, dst: IpAddr) {
    let at = match proto_ {
        proto::TCP => 16,
        proto::UDP => 6,
        proto::ICMP | proto::ICMPV6 => 2,
        _ => return,
    };
    if l4.len() < at + 2 {
        return;
    }
    l4[at..at + 2].copy_from_slice(&[0, 0]);
    let c = if proto_ == proto::ICMP {
        internet_checksum(&[l4])
    } else {
        internet_checksum(&[&pseudo(src, dst, proto_, l4.len()), l4])
    };
    let c = if proto_ == proto::UDP && c == 0 { 0xffff } else { c };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// What [`check_frame`] found in a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// IP source address.
    pub src: IpAddr,
    /// IP destination address.
    pub dst: IpAddr,
    /// Transport protocol (after extension headers).
    pub proto: u8,
    /// Ports of an unfragmented (or first-fragment) TCP/UDP packet.
    pub ports: Option<(u16, u16)>,
    /// A fragment (first or later).
    pub fragment: bool,
    /// Length of the frame.
    pub frame_len: usize,
    /// The packet inside an IPIP or GUE tunnel.
    pub inner: Option<Box<Seen>>,
    /// The packet quoted by an ICMP error: (source, destination, source port, destination port).
    pub quoted: Option<(IpAddr, IpAddr, u16, u16)>,
}

/// Parse and verify a transmitted frame (see the module documentation).
///
/// # Errors
/// A description of the first thing wrong.
pub fn check_frame(frame: &[u8]) -> Result<Seen, String> {
    let p = SlicedPacket::from_ethernet(frame).map_err(|e| format!("does not parse: {e}"))?;
    let dst_mac = match &p.link {
        Some(etherparse::LinkSlice::Ethernet2(e)) => e.destination(),
        _ => return Err("no Ethernet header".into()),
    };
    let l2 = frame.len() - ip_of(frame).len();
    let mut seen = check_ip(&p, &frame[l2..])?;
    seen.dst_mac = dst_mac;
    seen.frame_len = frame.len();
    Ok(seen)
}

/// The IP header's addresses, whether the packet is a fragment, and the length it declares (IPv4: its header
/// checksum checked).
fn ip_header(p: &SlicedPacket<'_>) -> Result<(IpAddr, IpAddr, bool, usize), String> {
    match &p.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            // Over the header's bytes as received (a right header sums to 0), not etherparse's
            // `calc_header_checksum`: its rebuilt header has no field for RFC 791's reserved flag, so every right
            // header carrying that bit came out wrong.
            if internet_checksum(&[h.slice()]) != 0 {
                return Err(format!("IPv4 header checksum {:#06x} is wrong", h.header_checksum()));
            }
            Ok((
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.is_payload_fragmented(),
                h.total_len() as usize,
            ))
        }
        Some(NetSlice::Ipv6(v6)) => {
            let h = v6.header();
            Ok((
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.is_payload_fragmented(),
                40 + h.payload_length() as usize,
            ))
        }
        _ => Err("neither IPv4 nor IPv6".into()),
    }
}

fn check_ip(p: &SlicedPacket<'_>, ip: &[u8]) -> Result<Seen, String> {
    let (src, dst, fragmented, declared) = ip_header(p)?;
    if declared != ip.len() {
        return Err(format!("IP length {declared} but {} bytes follow the L2 header", ip.len()));
    }
    let net = p.net.as_ref().ok_or("no IP")?;
    let (proto_, payload) = match net {
        NetSlice::Ipv4(v4) => (v4.payload().ip_number.0, v4.payload().payload),
        NetSlice::Ipv6(v6) => (v6.payload().ip_number.0, v6.payload().payload),
        NetSlice::Arp(_) => return Err("ARP".into()),
    };
    let mut seen = Seen {
        dst_mac: [0; 6],
        src,
        dst,
        proto: proto_,
        ports: None,
        fragment: fragmented,
        frame_len: 0,
        inner: None,
        quoted: None,
    };
    if !fragmented {
        check_transport(p, payload, &mut seen)?;
    }
    Ok(seen)
}

/// Check the transport header and checksum (and a GUE or IPIP packet's inner packet, an ICMP error's quote) into
/// `seen`.
fn check_transport(p: &SlicedPacket<'_>, payload: &[u8], seen: &mut Seen) -> Result<(), String> {
    let (src, dst, proto_) = (seen.src, seen.dst, seen.proto);
    let sum = |proto_: u8, msg: &[u8]| internet_checksum(&[&pseudo(src, dst, proto_, msg.len()), msg]);
    match (&p.transport, proto_) {
        (Some(TransportSlice::Tcp(t)), _) => {
            if sum(proto::TCP, payload) != 0 {
                return Err(format!("TCP checksum {:#06x} is wrong", t.checksum()));
            }
            seen.ports = Some((t.source_port(), t.destination_port()));
        }
        (Some(TransportSlice::Udp(u)), _) => {
            if u.length() as usize != payload.len() {
                return Err(format!("UDP length {} but {} bytes", u.length(), payload.len()));
            }
            let zero_ok = src.is_ipv4() && u.checksum() == 0;
            if !zero_ok && sum(proto::UDP, payload) != 0 {
                return Err(format!("UDP checksum {:#06x} is wrong", u.checksum()));
            }
            seen.ports = Some((u.source_port(), u.destination_port()));
            if u.destination_port() == GUE_PORT && payload.len() >= 12 {
                seen.inner = Some(Box::new(check_inner(&payload[12..])?));
            }
        }
        (Some(TransportSlice::Icmpv4(_)), _) => {
            if internet_checksum(&[payload]) != 0 {
                return Err("ICMPv4 checksum is wrong".into());
            }
            if matches!(payload[0], 3 | 11 | 12) {
                seen.quoted = quoted(&payload[8..]);
            }
        }
        (Some(TransportSlice::Icmpv6(_)), _) => {
            if sum(proto::ICMPV6, payload) != 0 {
                return Err("ICMPv6 checksum is wrong".into());
            }
            if payload[0] < 128 {
                seen.quoted = quoted(&payload[8..]);
            }
        }
        (None, proto::IPIP | proto::IPV6) => seen.inner = Some(Box::new(check_inner(payload)?)),
        (None, proto::TCP | proto::UDP | proto::ICMP | proto::ICMPV6) => {
            return Err(format!("protocol {proto_} but no transport header parses"))
        }
        _ => {}
    }
    Ok(())
}

fn check_inner(ip: &[u8]) -> Result<Seen, String> {
    let p = SlicedPacket::from_ip(ip).map_err(|e| format!("tunnelled packet does not parse: {e}"))?;
    check_ip(&p, ip).map_err(|e| format!("tunnelled packet: {e}"))
}

/// Addresses and ports of the packet an ICMP error quotes (its IP header and the first 4 transport bytes).
fn quoted(q: &[u8]) -> Option<(IpAddr, IpAddr, u16, u16)> {
    let (src, dst, hl) = match q.first()? >> 4 {
        4 if q.len() >= 20 => {
            let s: [u8; 4] = q[12..16].try_into().ok()?;
            let d: [u8; 4] = q[16..20].try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), usize::from(q[0] & 0xf) * 4)
        }
        6 if q.len() >= 40 => {
            let s: [u8; 16] = q[8..24].try_into().ok()?;
            let d: [u8; 16] = q[24..40].try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), 40)
        }
        _ => return None,
    };
    let ports = q.get(hl..hl + 4)?;
    Some((src, dst, u16::from_be_bytes([ports[0], ports[1]]), u16::from_be_bytes([ports[2], ports[3]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames the builder makes pass the checker, and the checker catches a flipped bit in each checksum (so it can
    /// fail).
    #[test]
    fn builder_and_checker_agree_and_the_checker_can_fail() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            Craft::new(v4("198.18.0.10"), v4("198.19.0.1"), proto::TCP, tcp(40000, 80, 0x02, b"hello")),
            Craft::new(v4("198.18.0.10"), v4("198.19.0.1"), proto::UDP, udp(40000, 53, b"q")),
            Craft::new(v4("198.18.0.10"), v4("198.19.0.1"), proto::ICMP, echo_request(true, 7, 1, b"ping")),
            Craft::new(v4("2001:db8::10"), v4("2001:db8:100::1"), proto::TCP, tcp(40000, 80, 0x02, b"x")),
            Craft::new(v4("2001:db8::10"), v4("2001:db8:100::1"), proto::ICMPV6, echo_request(false, 7, 1, b"p")),
        ];
        for c in &cases {
            let mut opts = c.clone();
            opts.vlans = vec![100];
            if c.src.is_ipv4() {
                opts.ip_options = vec![1, 1, 1, 1];
            } else {
                opts.ext_headers = vec![(60, vec![1, 4, 0, 0, 0, 0])];
            }
            for c in [c, &opts] {
                let f = c.build();
                let seen = check_frame(&f).unwrap_or_else(|e| panic!("{c:?}: {e}"));
                assert_eq!((seen.src, seen.dst, seen.proto), (c.src, c.dst, c.proto));
                // Flip a bit of the transport checksum, then of the IPv4 header checksum.
                let l2 = f.len() - ip_of(&f).len();
                let ip_hl = if c.src.is_ipv4() { usize::from(f[l2] & 0xf) * 4 } else { f.len() - l2 - c.l4.len() };
                let at = l2
                    + ip_hl
                    + if c.proto == proto::TCP {
                        16
                    } else if c.proto == proto::UDP {
                        6
                    } else {
                        2
                    };
                let mut bad = f.clone();
                bad[at] ^= 0x01;
                assert!(check_frame(&bad).is_err(), "a wrong transport checksum must fail: {c:?}");
                if c.src.is_ipv4() {
                    let mut bad = f.clone();
                    bad[l2 + 10] ^= 0x01;
                    assert!(check_frame(&bad).is_err(), "a wrong IPv4 header checksum must fail");
                    // RFC 791's reserved flag set, the checksum made right again (the sum's high byte gains 0x80,
                    // so the checksum, its complement, loses it, with the end-around borrow): still a right
                    // header. Set without the checksum's change, it must fail.
                    let mut evil = f.clone();
                    evil[l2 + 6] |= 0x80;
                    assert!(check_frame(&evil).is_err(), "the reserved flag without the checksum's change must fail");
                    let c = u16::from_be_bytes([f[l2 + 10], f[l2 + 11]]);
                    let (d, borrow) = c.overflowing_sub(0x8000);
                    evil[l2 + 10..l2 + 12].copy_from_slice(&d.wrapping_sub(u16::from(borrow)).to_be_bytes());
                    check_frame(&evil).unwrap_or_else(|e| panic!("the reserved flag with a right checksum: {e}"));
                }
                let mut long = f.clone();
                long.push(0);
                assert!(check_frame(&long).is_err(), "a frame longer than its IP packet must fail");
            }
        }
    }

    #[test]
    fn short_first_fragment_is_what_it_says() {
        let mut c = Craft::new(
            "198.18.0.10".parse().unwrap(),
            "198.19.0.1".parse().unwrap(),
            proto::TCP,
            tcp(40000, 80, 0x02, &[0; 64]),
        );
        c.ip_options = vec![0x01; 40];
        c.frag = Some((0, true));
        c.keep = Some(14);
        let f = c.build();
        assert_eq!(f.len(), 88, "the reported frame: 14 + 60 + 14 bytes");
        assert_eq!(internet_checksum(&[&f[14..74]]), 0, "valid IPv4 header checksum");
        assert!(check_frame(&f).is_ok_and(|s| s.fragment));
    }
}
