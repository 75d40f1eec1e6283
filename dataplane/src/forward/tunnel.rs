//! Tunnel encapsulation toward a backend: IPIP (IPv4-in-IPv4, RFC 2003; IPv6-in-IPv6, RFC 2473) and GUE variant 0
//! (draft-ietf-intarea-gue §3) over UDP.
//!
//! The outer header is inserted between the L2 header (VLAN tags kept) and the inner IP header, using the buffer's
//! headroom. Entropy for the receiver's RSS: the IPv4 outer source carries flow-hash bits in its host part
//! (configured prefix), the IPv6 outer header carries a flow label from the flow hash (RFC 6438), and GUE's UDP source
//! port comes from the flow hash in 49152–65535 (as RFC 8086 §3.2 does for GRE-in-UDP).

use crate::packet::PacketBuf;
use crate::wire::checksum::{finish, pseudo_v6, sum};
use crate::wire::{gue, ipv4, ipv6, proto, set_u16, udp};

/// Outer IPv4 header length.
pub const IPIP4_OVERHEAD: usize = ipv4::MIN_HEADER_LEN;
/// Outer IPv6 header length.
pub const IPIP6_OVERHEAD: usize = ipv6::HEADER_LEN;
/// GUE overhead over IPv4: outer IPv4 + UDP + GUE.
pub const GUE4_OVERHEAD: usize = ipv4::MIN_HEADER_LEN + udp::HEADER_LEN + gue::HEADER_LEN;
/// GUE overhead over IPv6.
pub const GUE6_OVERHEAD: usize = ipv6::HEADER_LEN + udp::HEADER_LEN + gue::HEADER_LEN;
/// Outer TTL / hop limit.
pub const OUTER_TTL: u8 = 64;

/// Encapsulation kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// IP in IP of the same family.
    Ipip,
    /// GUE to a UDP port.
    Gue(u16),
}

/// Outer header bytes `encap` adds for a family.
pub const fn overhead(encap: Encap, v4: bool) -> usize {
    match (encap, v4) {
        (Encap::Ipip, true) => IPIP4_OVERHEAD,
        (Encap::Ipip, false) => IPIP6_OVERHEAD,
        (Encap::Gue(_), true) => GUE4_OVERHEAD,
        (Encap::Gue(_), false) => GUE6_OVERHEAD,
    }
}

/// GUE source port from a flow hash.
#[inline]
pub fn entropy_port(h: u64) -> u16 {
    0xc000 | ((h >> 20) as u16 & 0x3fff)
}

/// Encapsulate the packet whose inner IP header starts at `l3` (after L2 and tags). `src`/`dst` are the outer
/// addresses (4 or 16 bytes). Returns false when the buffer has no headroom (nothing changed).
pub fn encapsulate<B: PacketBuf>(
    pkt: &mut B,
    l3: usize,
    v4: bool,
    encap: Encap,
    src: &[u8],
    dst: &[u8],
    h: u64,
) -> bool {
    let add = overhead(encap, v4);
    if !pkt.prepend(add) {
        return false;
    }
    let d = pkt.data_mut();
    d.copy_within(add..add + l3, 0);
    let inner = l3 + add;
    let inner_len = d.len() - inner;
    let (tos, df) = if v4 {
        (d[inner + 1], d[inner + 6] & 0x40 != 0)
    } else {
        let w = u32::from_be_bytes([d[inner], d[inner + 1], d[inner + 2], d[inner + 3]]);
        (((w >> 20) & 0xff) as u8, true)
    };
    let inner_proto = if v4 { proto::IPIP } else { proto::IPV6 };
    let (ip_len, outer_proto) = match encap {
        Encap::Ipip => (if v4 { IPIP4_OVERHEAD } else { IPIP6_OVERHEAD }, inner_proto),
        Encap::Gue(_) => (if v4 { ipv4::MIN_HEADER_LEN } else { ipv6::HEADER_LEN }, proto::UDP),
    };
    let payload_len = d.len() - l3 - ip_len;
    if v4 {
        let mut ip = ipv4::Ipv4Packet::new_unchecked(&mut d[l3..l3 + ip_len]);
        ip.set_version_and_header_len(ipv4::MIN_HEADER_LEN);
        ip.set_dscp_ecn(tos);
        ip.set_total_len((ip_len + payload_len) as u16);
        ip.set_ident(0);
        ip.set_flags_frag(df, false, 0);
        ip.set_ttl(OUTER_TTL);
        ip.set_protocol(outer_proto);
        ip.set_src([src[0], src[1], src[2], src[3]]);
        ip.set_dst([dst[0], dst[1], dst[2], dst[3]]);
        ip.fill_checksum();
    } else {
        let mut ip = ipv6::Ipv6Packet::new_unchecked(&mut d[l3..l3 + ip_len]);
        ip.set_ver_tc_flow(tos, (h as u32) & 0x000f_ffff);
        ip.set_payload_len(payload_len as u16);
        ip.set_next_header(outer_proto);
        ip.set_hop_limit(OUTER_TTL);
        let mut s = [0u8; 16];
        s.copy_from_slice(&src[..16]);
        let mut t = [0u8; 16];
        t.copy_from_slice(&dst[..16]);
        ip.set_src(s);
        ip.set_dst(t);
    }
    if let Encap::Gue(port) = encap {
        let u = l3 + ip_len;
        let ulen = (udp::HEADER_LEN + gue::HEADER_LEN + inner_len) as u16;
        set_u16(d, u, entropy_port(h));
        set_u16(d, u + 2, port);
        set_u16(d, u + 4, ulen);
        set_u16(d, u + 6, 0);
        gue::emit(&mut d[u + udp::HEADER_LEN..], inner_proto);
        if !v4 {
            // RFC 8200 §8.1: UDP over IPv6 needs a checksum (zero-checksum tunnels need RFC 6936 opt-in at the
            // receiver, which plain kernels do not give).
            let mut s = [0u8; 16];
            s.copy_from_slice(&src[..16]);
            let mut t = [0u8; 16];
            t.copy_from_slice(&dst[..16]);
            let c = finish(sum(pseudo_v6(&s, &t, proto::UDP, u32::from(ulen)), &d[u..]));
            set_u16(d, u + 6, crate::wire::checksum::udp_nonzero(c));
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::MemBuf;

    #[test]
    fn ipip4_layout() {
        let mut inner = vec![0u8; 14];
        inner.extend_from_slice(&[0x45, 0x10, 0, 20, 0, 0, 0x40, 0, 63, 17, 0, 0, 198, 18, 0, 1, 198, 19, 0, 1]);
        let mut b = MemBuf::from_slice(&inner);
        assert!(encapsulate(&mut b, 14, true, Encap::Ipip, &[198, 18, 1, 9], &[198, 18, 2, 1], 0));
        let d = b.data();
        assert_eq!(d.len(), 54);
        let o = ipv4::Ipv4Packet::new_checked(&d[14..]).unwrap();
        assert_eq!((o.protocol(), o.total_len(), o.dscp_ecn(), o.dont_frag(), o.ttl()), (4, 40, 0x10, true, 64));
        assert!(o.verify_checksum());
        assert_eq!(&d[34..38], &[0x45, 0x10, 0, 20]);
    }

    #[test]
    fn gue6_checksum_verifies() {
        let mut inner = vec![0u8; 14];
        let mut ip6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        ip6.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip6.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip6.extend_from_slice(&[0, 53, 0, 53, 0, 8, 0, 0]);
        inner.extend_from_slice(&ip6);
        let mut b = MemBuf::from_slice(&inner);
        let src = [0x20, 1, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        let dst = [0x20, 1, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(encapsulate(&mut b, 14, false, Encap::Gue(6080), &src, &dst, 0xabcdef));
        let d = b.data();
        let o = ipv6::Ipv6Packet::new_checked(&d[14..]).unwrap();
        assert_eq!(o.next_header(), proto::UDP);
        let u = &d[54..];
        assert_eq!(finish(sum(pseudo_v6(&src, &dst, 17, u.len() as u32), u)), 0);
        assert_eq!(&u[8..12], &[0, 41, 0, 0]);
        assert_eq!(o.flow_label(), 0xbcdef);
    }

    #[test]
    fn no_headroom_changes_nothing() {
        let mut b = MemBuf::from_slice(&[0u8; 34]);
        assert!(b.prepend(crate::packet::HEADROOM - 10));
        let before = b.data().to_vec();
        assert!(!encapsulate(&mut b, 14, true, Encap::Ipip, &[1; 4], &[2; 4], 0));
        assert_eq!(b.data(), &before[..]);
    }
}
