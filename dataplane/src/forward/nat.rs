//! Address and port rewriting with incremental checksum updates (RFC 1624): IPv4 header checksum, and the TCP/UDP
//! checksum over the pseudo-header (RFC 9293 §3.1, RFC 768, RFC 8200 §8.1). A UDP-over-IPv4 checksum of zero stays
//! zero (RFC 768: none was sent); a non-zero one that updates to zero is sent as 0xffff.
//!
//! Offsets (`l3`, `l4`) are the parser's: the IP header at `l3` and, for TCP/UDP, the full L4 header at `l4` are known
//! to be in bounds. Non-first fragments pass `l4 = None`: only the IP header changes (the L4 checksum lives in the
//! first fragment and was patched there).

use crate::wire::checksum::{udp_nonzero, update, update16};
use crate::wire::{get_u16, ipv4, ipv6, proto, set_u16, tcp, udp};

/// What to change. `None` leaves a field alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rewrite<'a> {
    /// New source address (4 or 16 bytes, matching the family).
    pub src: Option<&'a [u8]>,
    /// New destination address.
    pub dst: Option<&'a [u8]>,
    /// New source port.
    pub sport: Option<u16>,
    /// New destination port.
    pub dport: Option<u16>,
}

/// Apply `rw` to the packet whose IP header starts at `l3`.
#[inline]
pub fn apply(pkt: &mut [u8], l3: usize, l4: Option<usize>, v4: bool, l4proto: u8, rw: &Rewrite<'_>) {
    let (alen, src_off, dst_off) = if v4 {
        (4, l3 + ipv4::SRC_OFFSET, l3 + ipv4::DST_OFFSET)
    } else {
        (16, l3 + ipv6::SRC_OFFSET, l3 + ipv6::DST_OFFSET)
    };
    let l4csum = match (l4, l4proto) {
        (Some(o), proto::TCP) => Some(o + tcp::CHECKSUM_OFFSET),
        (Some(o), proto::UDP) => Some(o + udp::CHECKSUM_OFFSET),
        _ => None,
    };
    let udp_zero = l4proto == proto::UDP && v4 && l4csum.is_some_and(|c| get_u16(pkt, c) == 0);
    let mut ipc = if v4 { get_u16(pkt, l3 + ipv4::CHECKSUM_OFFSET) } else { 0 };
    let mut l4c = l4csum.map(|c| get_u16(pkt, c));
    for (off, new) in [(src_off, rw.src), (dst_off, rw.dst)] {
        let Some(new) = new else { continue };
        let new = &new[..alen];
        let old = &pkt[off..off + alen];
        if v4 {
            ipc = update(ipc, old, new);
        }
        if let Some(c) = l4c.as_mut() {
            *c = update(*c, old, new);
        }
        pkt[off..off + alen].copy_from_slice(new);
    }
    if let Some(o) = l4 {
        if matches!(l4proto, proto::TCP | proto::UDP) {
            for (at, new) in [(o, rw.sport), (o + 2, rw.dport)] {
                let Some(new) = new else { continue };
                let old = get_u16(pkt, at);
                if let Some(c) = l4c.as_mut() {
                    *c = update16(*c, old, new);
                }
                set_u16(pkt, at, new);
            }
        }
    }
    if v4 {
        set_u16(pkt, l3 + ipv4::CHECKSUM_OFFSET, ipc);
    }
    if let (Some(at), Some(c)) = (l4csum, l4c) {
        if !udp_zero {
            set_u16(pkt, at, if l4proto == proto::UDP { udp_nonzero(c) } else { c });
        }
    }
}

/// Decrement TTL / hop limit. Returns false (and changes nothing) when it would reach zero.
#[inline]
pub fn decrement_ttl(pkt: &mut [u8], l3: usize, v4: bool) -> bool {
    if v4 {
        let ttl = pkt[l3 + 8];
        if ttl <= 1 {
            return false;
        }
        let old = get_u16(pkt, l3 + 8);
        pkt[l3 + 8] = ttl - 1;
        let c = update16(get_u16(pkt, l3 + ipv4::CHECKSUM_OFFSET), old, get_u16(pkt, l3 + 8));
        set_u16(pkt, l3 + ipv4::CHECKSUM_OFFSET, c);
    } else {
        let hl = pkt[l3 + 7];
        if hl <= 1 {
            return false;
        }
        pkt[l3 + 7] = hl - 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::{checksum, finish, pseudo_v4, sum};

    fn tcp_v4() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 44, 0, 1, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 19, 0, 1, // IPv4
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0, // TCP SYN
            b'd', b'a', b't', b'a',
        ];
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let c = finish(sum(pseudo_v4([198, 18, 0, 1], [198, 19, 0, 1], 6, 24), &p[20..]));
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn tcp_ok(p: &[u8]) -> bool {
        let s: [u8; 4] = p[12..16].try_into().unwrap();
        let d: [u8; 4] = p[16..20].try_into().unwrap();
        checksum(&p[..20]) == 0 && finish(sum(pseudo_v4(s, d, 6, 24), &p[20..])) == 0
    }

    #[test]
    fn rewrite_keeps_checksums_valid() {
        let mut p = tcp_v4();
        assert!(tcp_ok(&p));
        let rw = Rewrite { dst: Some(&[198, 18, 2, 7]), dport: Some(8080), ..Default::default() };
        apply(&mut p, 0, Some(20), true, proto::TCP, &rw);
        assert_eq!(&p[16..20], &[198, 18, 2, 7]);
        assert_eq!(get_u16(&p, 22), 8080);
        assert!(tcp_ok(&p));
        let rw = Rewrite { src: Some(&[198, 18, 1, 1]), sport: Some(1024), ..Default::default() };
        apply(&mut p, 0, Some(20), true, proto::TCP, &rw);
        assert!(tcp_ok(&p));
        assert!(decrement_ttl(&mut p, 0, true));
        assert!(tcp_ok(&p));
        assert_eq!(p[8], 63);
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut p = tcp_v4();
        p[9] = 17;
        p[36..38].copy_from_slice(&[0, 0]); // TCP offset 16 is where UDP payload now lies; use UDP offset 6
        p[26..28].copy_from_slice(&[0, 0]);
        let rw = Rewrite { dst: Some(&[198, 18, 2, 7]), ..Default::default() };
        apply(&mut p, 0, Some(20), true, proto::UDP, &rw);
        assert_eq!(&p[26..28], &[0, 0]);
    }

    #[test]
    fn ttl_one_is_not_forwarded() {
        let mut p = tcp_v4();
        p[8] = 1;
        assert!(!decrement_ttl(&mut p, 0, true));
        assert_eq!(p[8], 1);
    }
}
