//! Building whole frames from parts: Ethernet + IPv4/IPv6 + TCP/UDP, checksums filled. For generators, tests and
//! tools; the pipeline itself only rewrites.

use super::checksum::{finish, pseudo_v4, pseudo_v6, sum, udp_nonzero};
use super::ethernet::{ethertype, EthernetFrame, Mac, HEADER_LEN};
use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;
use super::tcp::TcpPacket;
use super::{proto, set_u16};
use std::net::IpAddr;

/// A transport segment to build.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Protocol: TCP or UDP.
    pub proto: u8,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags (ignored for UDP).
    pub tcp_flags: u8,
    /// Payload.
    pub payload: &'a [u8],
    /// TTL / hop limit.
    pub ttl: u8,
}

/// Write an Ethernet frame carrying `seg` into `buf`; returns its length, or `None` if `buf` is too small or the
/// address families differ.
pub fn frame(buf: &mut [u8], dst_mac: Mac, src_mac: Mac, seg: &Segment<'_>) -> Option<usize> {
    let l4len = if seg.proto == proto::TCP { 20 } else { 8 } + seg.payload.len();
    let (iphl, et) = match (seg.src, seg.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (20, ethertype::IPV4),
        (IpAddr::V6(_), IpAddr::V6(_)) => (40, ethertype::IPV6),
        _ => return None,
    };
    let total = HEADER_LEN + iphl + l4len;
    if buf.len() < total || l4len > 65_000 {
        return None;
    }
    let buf = &mut buf[..total];
    let mut e = EthernetFrame::new_unchecked(&mut buf[..]);
    e.set_dst(dst_mac);
    e.set_src(src_mac);
    e.set_ethertype(et);
    let l4 = HEADER_LEN + iphl;
    buf[l4 + l4len - seg.payload.len()..].copy_from_slice(seg.payload);
    let acc = match (seg.src, seg.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = Ipv4Packet::new_unchecked(&mut buf[HEADER_LEN..]);
            ip.set_version_and_header_len(20);
            ip.set_dscp_ecn(0);
            ip.set_total_len((iphl + l4len) as u16);
            ip.set_ident(0);
            ip.set_flags_frag(true, false, 0);
            ip.set_ttl(seg.ttl);
            ip.set_protocol(seg.proto);
            ip.set_src(s.octets());
            ip.set_dst(d.octets());
            ip.fill_checksum();
            pseudo_v4(s.octets(), d.octets(), seg.proto, l4len as u16)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = Ipv6Packet::new_unchecked(&mut buf[HEADER_LEN..]);
            ip.set_ver_tc_flow(0, 0);
            ip.set_payload_len(l4len as u16);
            ip.set_next_header(seg.proto);
            ip.set_hop_limit(seg.ttl);
            ip.set_src(s.octets());
            ip.set_dst(d.octets());
            pseudo_v6(&s.octets(), &d.octets(), seg.proto, l4len as u32)
        }
        _ => return None,
    };
    if seg.proto == proto::TCP {
        let mut t = TcpPacket::new_unchecked(&mut buf[l4..]);
        t.set_src_port(seg.sport);
        t.set_dst_port(seg.dport);
        t.set_seq(1);
        t.set_ack(if seg.tcp_flags & super::tcp::flags::ACK != 0 { 1 } else { 0 });
        t.set_header_len_flags(20, seg.tcp_flags);
        t.set_window(65_535);
        t.set_checksum(0);
        t.set_urgent(0);
        let c = finish(sum(acc, &buf[l4..]));
        set_u16(buf, l4 + 16, c);
    } else {
        set_u16(buf, l4, seg.sport);
        set_u16(buf, l4 + 2, seg.dport);
        set_u16(buf, l4 + 4, l4len as u16);
        set_u16(buf, l4 + 6, 0);
        let c = udp_nonzero(finish(sum(acc, &buf[l4..])));
        set_u16(buf, l4 + 6, c);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::checksum;

    #[test]
    fn builds_valid_tcp_and_udp() {
        let mut b = [0u8; 128];
        let seg = Segment {
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.19.0.1".parse().unwrap(),
            proto: proto::TCP,
            sport: 1234,
            dport: 80,
            tcp_flags: 2,
            payload: b"hi",
            ttl: 64,
        };
        let n = frame(&mut b, [2; 6], [4; 6], &seg).unwrap();
        assert_eq!(n, 14 + 20 + 20 + 2);
        assert_eq!(checksum(&b[14..34]), 0);
        let acc = pseudo_v4([198, 18, 0, 1], [198, 19, 0, 1], 6, 22);
        assert_eq!(finish(sum(acc, &b[34..n])), 0);
        let seg6 = Segment {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            proto: proto::UDP,
            ..seg
        };
        let n = frame(&mut b, [2; 6], [4; 6], &seg6).unwrap();
        assert_eq!(n, 14 + 40 + 8 + 2);
        assert!(frame(&mut b[..20], [2; 6], [4; 6], &seg).is_none());
        let mixed = Segment { dst: "2001:db8::2".parse().unwrap(), ..seg };
        assert!(frame(&mut b, [2; 6], [4; 6], &mixed).is_none());
    }
}
