//! Address and port rewriting with incremental checksum updates (RFC 1624): IPv4 header checksum, and the TCP/UDP
//! checksum over the pseudo-header (RFC 9293 §3.1, RFC 768, RFC 8200 §8.1). A UDP-over-IPv4 checksum of zero stays
//! zero (RFC 768: none was sent); a non-zero one that updates to zero is sent as 0xffff.
//!
//! The IP header at `l3` is the parser's; the transport header comes as an [`L4Header`] token, which proves its fixed
//! part (ports and checksum field) is in the buffer. Non-first fragments pass `None`: only the IP header changes (the
//! L4 checksum lives in the first fragment and was patched there). A buffer too short for what the arguments claim
//! is refused (`false`, nothing changed), never indexed out of bounds.

use super::L4Header;
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

/// Apply `rw` to the packet whose IP header starts at `l3`, with its transport header `l4` (`None`: not in this
/// packet, or not one to rewrite). Returns false, changing nothing, when the buffer is shorter than the IP header or
/// the transport header's fixed part (a token checked against another buffer), or an address is of the wrong length.
#[inline]
#[must_use]
pub fn apply(pkt: &mut [u8], l3: usize, l4: Option<L4Header>, v4: bool, rw: &Rewrite<'_>) -> bool {
    let (ip_len, alen) = if v4 { (ipv4::MIN_HEADER_LEN, 4) } else { (ipv6::HEADER_LEN, 16) };
    let l4_fits = |h: L4Header| L4Header::fixed_len(h.protocol()).is_some_and(|n| pkt.len() >= h.offset() + n);
    if pkt.len() < l3 + ip_len
        || l4.is_some_and(|h| !l4_fits(h))
        || [rw.src, rw.dst].iter().flatten().any(|a| a.len() != alen)
    {
        return false;
    }
    let (l4, l4proto) = match l4 {
        Some(h) => (Some(h.offset()), h.protocol()),
        None => (None, 0),
    };
    if v4 {
        apply_v4(pkt, l3, l4, l4proto, rw);
    } else {
        apply_any(pkt, l3, l4, false, l4proto, rw);
    }
    true
}

/// One's-complement sum of `!old + new` over a 32-bit field: the RFC 1624 delta of changing it.
#[inline(always)]
fn delta32(old: u32, new: u32) -> u32 {
    (!old >> 16) + (!old & 0xffff) + (new >> 16) + (new & 0xffff)
}

/// Add a delta to a checksum field value (RFC 1624 eqn. 3: `HC' = ~(~HC + delta)`). A delta is a sum of 16-bit
/// words, a few dozen at most (two IPv6 addresses and two ports make 36), so it and `~HC` fit 32 bits with room to
/// spare, and two folds take any 32-bit sum to 16 bits exactly: the first leaves at most 0x1fffe, the second at most
/// 0xffff.
#[inline(always)]
fn apply_delta(csum: u16, delta: u32) -> u16 {
    let acc = u32::from(!csum) + delta;
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// IPv4 fast path: the address changes make one delta for both the IP header and the pseudo-header, the port
/// changes one more for the L4 checksum. Same results as [`apply_any`] (tested against it).
#[inline(always)]
fn apply_v4(pkt: &mut [u8], l3: usize, l4: Option<usize>, l4proto: u8, rw: &Rewrite<'_>) {
    let rd = |p: &[u8], at: usize| u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    let mut addr_delta = 0u32;
    for (off, new) in [(l3 + ipv4::SRC_OFFSET, rw.src), (l3 + ipv4::DST_OFFSET, rw.dst)] {
        if let Some(new) = new {
            let n = u32::from_be_bytes([new[0], new[1], new[2], new[3]]);
            addr_delta += delta32(rd(pkt, off), n);
            pkt[off..off + 4].copy_from_slice(&n.to_be_bytes());
        }
    }
    if addr_delta != 0 {
        let c = apply_delta(get_u16(pkt, l3 + ipv4::CHECKSUM_OFFSET), addr_delta);
        set_u16(pkt, l3 + ipv4::CHECKSUM_OFFSET, c);
    }
    let Some(o) = l4 else { return };
    let at = match l4proto {
        proto::TCP => o + tcp::CHECKSUM_OFFSET,
        proto::UDP => o + udp::CHECKSUM_OFFSET,
        _ => return,
    };
    let mut delta = addr_delta;
    for (pat, new) in [(o, rw.sport), (o + 2, rw.dport)] {
        if let Some(n) = new {
            let old = get_u16(pkt, pat);
            delta += u32::from(!old) + u32::from(n);
            set_u16(pkt, pat, n);
        }
    }
    let c = get_u16(pkt, at);
    if l4proto == proto::UDP && c == 0 {
        return; // no UDP checksum was sent (RFC 768)
    }
    let c = apply_delta(c, delta);
    set_u16(pkt, at, if l4proto == proto::UDP { udp_nonzero(c) } else { c });
}

/// The general path (IPv6, and the reference the IPv4 fast path is tested against).
#[inline]
fn apply_any(pkt: &mut [u8], l3: usize, l4: Option<usize>, v4: bool, l4proto: u8, rw: &Rewrite<'_>) {
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

/// A forwarded IPv4 packet's whole rewrite in one pass: TTL decremented, `rw` applied, each checksum updated once.
/// The same bytes as [`decrement_ttl`] then [`apply`] (tested against them; one's-complement deltas add in any
/// order). `false`, nothing changed, unless the buffer holds an IPv4 header without options at `l3`, a TTL above 1,
/// and the fixed TCP or UDP header (`l4proto`) right after it, and every address in `rw` is 4 bytes.
#[inline(always)]
#[must_use]
pub fn translate_v4(pkt: &mut [u8], l3: usize, l4proto: u8, rw: &Rewrite<'_>) -> bool {
    match l4proto {
        proto::TCP => translate_v4_in::<{ tcp::MIN_HEADER_LEN }, { tcp::CHECKSUM_OFFSET }>(pkt, l3, false, rw),
        proto::UDP => translate_v4_in::<{ udp::HEADER_LEN }, { udp::CHECKSUM_OFFSET }>(pkt, l3, true, rw),
        _ => false,
    }
}

/// [`translate_v4`] for a transport header of at least `L4` bytes with its checksum at `CSUM`: the headers as arrays
/// of their lengths, taken once, so that no byte written needs a bounds check of its own.
#[inline(always)]
fn translate_v4_in<const L4: usize, const CSUM: usize>(pkt: &mut [u8], l3: usize, udp: bool, rw: &Rewrite<'_>) -> bool {
    let Some((ip, l4)) = pkt.get_mut(l3..).and_then(|p| p.split_first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>()) else {
        return false;
    };
    let Some(l4) = l4.first_chunk_mut::<L4>() else { return false };
    let (Ok(src), Ok(dst)) = (sized::<4>(rw.src), sized::<4>(rw.dst)) else { return false };
    if ip[0] != 0x45 || ip[8] <= 1 {
        return false;
    }
    let word = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    // TTL and protocol share a word: one less TTL is 0x100 less.
    let old_ttl = word(ip, 8);
    ip[8] -= 1;
    // One 32-bit delta an address, shared by both checksums ([`swap`], as IPv6 uses, measured a few instructions
    // more on the established path).
    let mut addr = 0u32;
    for (at, new) in [(ipv4::SRC_OFFSET, src), (ipv4::DST_OFFSET, dst)] {
        if let Some(n) = new {
            addr += delta32(u32::from_be_bytes([ip[at], ip[at + 1], ip[at + 2], ip[at + 3]]), u32::from_be_bytes(*n));
            ip[at..at + 4].copy_from_slice(n);
        }
    }
    let c = apply_delta(word(ip, 10), u32::from(!old_ttl) + u32::from(old_ttl - 0x100) + addr);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    // `l4` reaches the checksum, past the ports: the chunk is always there.
    let delta = addr + l4.first_chunk_mut().map_or(0, |ports| ports_delta(ports, rw));
    let c = word(l4, CSUM);
    if udp && c == 0 {
        return true; // no UDP checksum was sent (RFC 768)
    }
    let c = apply_delta(c, delta);
    let c = if udp { udp_nonzero(c) } else { c };
    l4[CSUM..CSUM + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// An address of `rw` as an array of its family's length: `Err` when it has another length.
#[inline(always)]
fn sized<const N: usize>(a: Option<&[u8]>) -> Result<Option<&[u8; N]>, core::array::TryFromSliceError> {
    a.map(<&[u8; N]>::try_from).transpose()
}

/// Replace the ports `rw` names in the first four bytes of a transport header, `ports`: the checksum delta.
#[inline(always)]
fn ports_delta(ports: &mut [u8; 4], rw: &Rewrite<'_>) -> u32 {
    let mut delta = 0u32;
    if let Some(n) = rw.sport {
        delta += swap(ports, 0, &n.to_be_bytes());
    }
    if let Some(n) = rw.dport {
        delta += swap(ports, 2, &n.to_be_bytes());
    }
    delta
}

/// Replace the `N` bytes at `at` in `b` (`N` even) with `new`: the one's-complement delta of the change (RFC 1624).
#[inline(always)]
fn swap<const N: usize>(b: &mut [u8], at: usize, new: &[u8; N]) -> u32 {
    let mut delta = 0u32;
    if let Some(old) = b.get_mut(at..at + N) {
        for i in (0..N).step_by(2) {
            delta += u32::from(!u16::from_be_bytes([old[i], old[i + 1]]))
                + u32::from(u16::from_be_bytes([new[i], new[i + 1]]));
        }
        old.copy_from_slice(new);
    }
    delta
}

/// [`translate_v4`] for IPv6: hop limit decremented, `rw` applied, the TCP or UDP checksum updated once (IPv6 has no
/// header checksum, and a UDP checksum is never left out, RFC 8200 §8.1). The same bytes as [`decrement_ttl`] then
/// [`apply`] (tested against them). `false`, nothing changed, unless the buffer holds an IPv6 header at `l3` with a
/// hop limit above 1 and the fixed TCP or UDP header (`l4proto`) right after it, and every address in `rw` is 16
/// bytes.
#[inline(always)]
#[must_use]
pub fn translate_v6(pkt: &mut [u8], l3: usize, l4proto: u8, rw: &Rewrite<'_>) -> bool {
    let csum_off = match l4proto {
        proto::TCP if pkt.len() >= l3 + ipv6::HEADER_LEN + tcp::MIN_HEADER_LEN => tcp::CHECKSUM_OFFSET,
        proto::UDP => udp::CHECKSUM_OFFSET,
        _ => return false,
    };
    let Some((ip, l4)) = pkt.get_mut(l3..).and_then(|p| p.split_at_mut_checked(ipv6::HEADER_LEN)) else {
        return false;
    };
    let (Ok(ip), Some(l4)) = (<&mut [u8; 40]>::try_from(ip), l4.get_mut(..csum_off + 2)) else { return false };
    let (Ok(src), Ok(dst)) = (sized::<16>(rw.src), sized::<16>(rw.dst)) else { return false };
    if ip[0] >> 4 != 6 || ip[7] <= 1 {
        return false;
    }
    let word = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    ip[7] -= 1;
    let mut delta = 0u32;
    if let Some(n) = src {
        delta += swap(ip, ipv6::SRC_OFFSET, n);
    }
    if let Some(n) = dst {
        delta += swap(ip, ipv6::DST_OFFSET, n);
    }
    delta += l4.first_chunk_mut().map_or(0, |ports| ports_delta(ports, rw));
    let c = apply_delta(word(l4, csum_off), delta);
    let c = if l4proto == proto::UDP { udp_nonzero(c) } else { c };
    l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// [`translate_v4`] or [`translate_v6`] by family: a forwarded packet's one-pass rewrite, addresses in `rw` in the
/// packet's family (4 or 16 bytes).
#[inline(always)]
#[must_use]
pub fn translate(pkt: &mut [u8], l3: usize, v4: bool, l4proto: u8, rw: &Rewrite<'_>) -> bool {
    if v4 {
        translate_v4(pkt, l3, l4proto, rw)
    } else {
        translate_v6(pkt, l3, l4proto, rw)
    }
}

/// An established IPv4 packet's rewrite toward a NAT backend: [`translate_v4`] to `dst` (and `dport`, when given).
#[inline(always)]
#[must_use]
pub fn dnat_v4(pkt: &mut [u8], l3: usize, l4proto: u8, dst: [u8; 4], dport: Option<u16>) -> bool {
    translate_v4(pkt, l3, l4proto, &Rewrite { dst: Some(&dst), dport, ..Rewrite::default() })
}

/// [`dnat_v4`] for IPv6 ([`translate_v6`]).
#[inline(always)]
#[must_use]
pub fn dnat_v6(pkt: &mut [u8], l3: usize, l4proto: u8, dst: &[u8; 16], dport: Option<u16>) -> bool {
    translate_v6(pkt, l3, l4proto, &Rewrite { dst: Some(dst), dport, ..Rewrite::default() })
}

/// [`dnat_v4`] or [`dnat_v6`] by family, toward `dst` in the tables' 16-byte form (IPv4-mapped for IPv4): the one
/// place the general and the fast path choose between them.
#[inline(always)]
#[must_use]
pub fn dnat(pkt: &mut [u8], l3: usize, v4: bool, l4proto: u8, dst: &[u8; 16], dport: Option<u16>) -> bool {
    if v4 {
        dnat_v4(pkt, l3, l4proto, [dst[12], dst[13], dst[14], dst[15]], dport)
    } else {
        dnat_v6(pkt, l3, l4proto, dst, dport)
    }
}

/// A NAT backend's rewrite, worked out once when the snapshot is built: its service's VIP and port become the
/// backend's address and port, and the checksum deltas of that change (RFC 1624) are known before any packet. Each
/// delta is a sum of 16-bit words folded to 16 bits (zero only when the sum is), which leaves a checksum's update
/// exactly as the unfolded sum does: folding keeps the sum mod 0xffff and whether it is zero, and those decide the
/// update. So [`dnat_by`] writes the bytes [`dnat`] writes, with one fold a checksum, and the old address only
/// compared with the VIP, not summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dnat {
    /// IPv4 (else IPv6): both addresses' family.
    v4: bool,
    /// The old address (16-byte form): the packet's destination must be this for the deltas to hold.
    vip: [u8; 16],
    /// The new address.
    dst: [u8; 16],
    /// The old port (the service's), looked at only when the port changes.
    vport: u16,
    /// The new port, `None` to keep it.
    dport: Option<u16>,
    /// IPv4's header checksum: the TTL's word one less (0xfeff, see [`decrement_ttl`]) and the address.
    ip: u16,
    /// The transport checksum: the address (in the pseudo-header) and the port.
    l4: u16,
}

impl Dnat {
    /// The rewrite of `vip` and `vport` to `dst` and `dport` (`None`: the port stays), addresses in the tables'
    /// 16-byte form, both of family `v4`. `None` when its deltas cannot be known before the packet: a changed port
    /// of a service of every port (`vport` 0).
    pub fn new(v4: bool, vip: &[u8; 16], vport: u16, dst: &[u8; 16], dport: Option<u16>) -> Option<Self> {
        let at = if v4 { 12 } else { 0 };
        let mut addr = 0u32;
        for (o, n) in vip[at..].chunks_exact(2).zip(dst[at..].chunks_exact(2)) {
            addr += u32::from(!u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([n[0], n[1]]));
        }
        let port = match dport {
            Some(_) if vport == 0 => return None,
            Some(p) => u32::from(!vport) + u32::from(p),
            None => 0,
        };
        Some(Dnat { v4, vip: *vip, dst: *dst, vport, dport, ip: fold(0xfeff + addr), l4: fold(addr + port) })
    }
}

/// A sum of 16-bit words folded to 16 bits: the same mod 0xffff, zero only when the sum is (two folds take any sum
/// below 2^32 there; see [`apply_delta`]).
fn fold(x: u32) -> u16 {
    let x = (x & 0xffff) + (x >> 16);
    ((x & 0xffff) + (x >> 16)) as u16
}

/// [`apply_delta`] for a delta folded to 16 bits: `!csum + delta` is at most 0x1fffe, and one fold takes it to 16
/// bits exactly.
#[inline(always)]
fn apply_folded(csum: u16, delta: u16) -> u16 {
    let acc = u32::from(!csum) + u32::from(delta);
    !(((acc & 0xffff) + (acc >> 16)) as u16)
}

/// The rewrite `d` of a forwarded packet of family `v4` (TTL or hop limit decremented, as [`dnat`]): the bytes
/// [`dnat`] writes toward `d`'s address and port, and its refusals. A packet whose destination (or, when the port
/// changes, whose port) is not the one `d` was worked out from, or of the other family, takes [`dnat`] itself.
#[inline(always)]
#[must_use]
pub fn dnat_by(pkt: &mut [u8], l3: usize, v4: bool, l4proto: u8, d: &Dnat) -> bool {
    const TCP: (usize, usize) = (tcp::MIN_HEADER_LEN, tcp::CHECKSUM_OFFSET);
    const UDP: (usize, usize) = (udp::HEADER_LEN, udp::CHECKSUM_OFFSET);
    let done = match (v4 == d.v4, v4, l4proto) {
        (false, ..) => None,
        (_, true, proto::TCP) => dnat_by_in::<true, { TCP.0 }, { TCP.1 }>(pkt, l3, false, d),
        (_, true, proto::UDP) => dnat_by_in::<true, { UDP.0 }, { UDP.1 }>(pkt, l3, true, d),
        (_, false, proto::TCP) => dnat_by_in::<false, { TCP.0 }, { TCP.1 }>(pkt, l3, false, d),
        (_, false, proto::UDP) => dnat_by_in::<false, { UDP.0 }, { UDP.1 }>(pkt, l3, true, d),
        _ => None,
    };
    done.unwrap_or_else(|| dnat(pkt, l3, v4, l4proto, &d.dst, d.dport))
}

/// [`dnat_by`] for family `V4` and a transport header of `L4` bytes with its checksum at `CSUM` (as
/// [`translate_v4_in`] and [`translate_v6`], whose UDP checksum is never left out): `Some(false)` where [`dnat`]
/// refuses, `None` for a packet `d` was not worked out for.
#[inline(always)]
fn dnat_by_in<const V4: bool, const L4: usize, const CSUM: usize>(
    pkt: &mut [u8],
    l3: usize,
    udp: bool,
    d: &Dnat,
) -> Option<bool> {
    // The fixed IP header's length, the TTL's or hop limit's offset, the destination's, and where its address is in
    // the 16-byte form.
    let (hl, ttl, at, from) =
        if V4 { (ipv4::MIN_HEADER_LEN, 8, ipv4::DST_OFFSET, 12) } else { (ipv6::HEADER_LEN, 7, ipv6::DST_OFFSET, 0) };
    let Some((ip, l4)) = pkt.get_mut(l3..).and_then(|p| p.split_at_mut_checked(hl)) else {
        return Some(false);
    };
    let Some(l4) = l4.first_chunk_mut::<L4>() else { return Some(false) };
    let version_ok = if V4 { ip[0] == 0x45 } else { ip[0] >> 4 == 6 };
    if !version_ok || ip[ttl] <= 1 {
        return Some(false);
    }
    let (ports, _) = l4.split_first_chunk_mut::<4>()?;
    let n = 16 - from;
    if ip[at..at + n] != d.vip[from..] || !port_is(ports, d) {
        return None;
    }
    ip[ttl] -= 1;
    ip[at..at + n].copy_from_slice(&d.dst[from..]);
    if V4 {
        let c = apply_folded(u16::from_be_bytes([ip[10], ip[11]]), d.ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    if let Some(p) = d.dport {
        ports[2..].copy_from_slice(&p.to_be_bytes());
    }
    let c = u16::from_be_bytes([l4[CSUM], l4[CSUM + 1]]);
    if V4 && udp && c == 0 {
        return Some(true); // no UDP checksum was sent (RFC 768)
    }
    let c = apply_folded(c, d.l4);
    let c = if udp { udp_nonzero(c) } else { c };
    l4[CSUM..CSUM + 2].copy_from_slice(&c.to_be_bytes());
    Some(true)
}

/// Whether a transport header's ports (destination second) hold the one `d` changes from, when `d` changes it.
#[inline(always)]
fn port_is(ports: &[u8; 4], d: &Dnat) -> bool {
    d.dport.is_none() || u16::from_be_bytes([ports[2], ports[3]]) == d.vport
}

/// Decrement TTL / hop limit. Returns false (and changes nothing) when it would reach zero.
///
/// IPv4's header checksum follows RFC 1624 (eqn. 3, HC' = ~(~HC + ~m + m')) for the word holding the TTL, which
/// falls by 0x0100: ~m + m' is 0xfeff whatever the protocol byte beside it, so the sum is at most 0x1fefe and one
/// fold is exact. The same bytes as [`update16`] with the old and new word (tested over every TTL and checksum).
#[inline(always)]
pub fn decrement_ttl(pkt: &mut [u8], l3: usize, v4: bool) -> bool {
    if v4 {
        let Some(ip) = pkt.get_mut(l3..l3 + ipv4::MIN_HEADER_LEN) else { return false };
        let ttl = ip[8];
        if ttl <= 1 {
            return false;
        }
        ip[8] = ttl - 1;
        let acc = u32::from(!get_u16(ip, ipv4::CHECKSUM_OFFSET)) + 0xfeff;
        set_u16(ip, ipv4::CHECKSUM_OFFSET, !(((acc & 0xffff) + (acc >> 16)) as u16));
    } else {
        let Some(ip) = pkt.get_mut(l3..l3 + ipv6::HEADER_LEN) else { return false };
        let hl = ip[7];
        if hl <= 1 {
            return false;
        }
        ip[7] = hl - 1;
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
        let h = L4Header::check(&p, 20, 44, proto::TCP);
        assert!(apply(&mut p, 0, h, true, &rw));
        assert_eq!(&p[16..20], &[198, 18, 2, 7]);
        assert_eq!(get_u16(&p, 22), 8080);
        assert!(tcp_ok(&p));
        let rw = Rewrite { src: Some(&[198, 18, 1, 1]), sport: Some(1024), ..Default::default() };
        let h = L4Header::check(&p, 20, 44, proto::TCP);
        assert!(apply(&mut p, 0, h, true, &rw));
        assert!(tcp_ok(&p));
        assert!(decrement_ttl(&mut p, 0, true));
        assert!(tcp_ok(&p));
        assert_eq!(p[8], 63);
    }

    /// A rewrite of any shape drawn from `r`: each field set or left alone, as a reply's (source to the VIP and its
    /// port, for full-NAT the destination too) or a client packet's.
    fn any_rewrite<'a>(r: u64, src: &'a [u8], dst: &'a [u8]) -> Rewrite<'a> {
        Rewrite {
            src: (r & 1 != 0).then_some(src),
            dst: (r & 2 != 0).then_some(dst),
            sport: (r & 4 != 0).then_some((r >> 8) as u16),
            dport: (r & 8 != 0).then_some((r >> 24) as u16),
        }
    }

    /// `dnat_v4`, and `translate_v4` with any rewrite, against `decrement_ttl` + `apply` over many addresses, ports
    /// and checksums, TCP and UDP (UDP's zero checksum included): byte for byte the same.
    #[test]
    fn one_pass_rewrite_matches_the_general_rewrite() {
        let mut next = crate::xorshift(0x9e37_79b9_7f4a_7c15u64);
        for i in 0..20_000 {
            let mut p = tcp_v4();
            let r = next();
            p[8] = 2 + (r as u8 % 250);
            p[12..20].copy_from_slice(&(r >> 8).to_be_bytes());
            let udp = i % 2 == 1;
            if udp {
                p[9] = proto::UDP;
                p[24..26].copy_from_slice(&24u16.to_be_bytes());
            }
            p[10..12].copy_from_slice(&[0, 0]);
            let c = checksum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            let csum_at = if udp { 26 } else { 36 };
            let l4c = if i % 10 == 3 { 0 } else { next() as u16 };
            p[csum_at..csum_at + 2].copy_from_slice(&l4c.to_be_bytes());
            let dst = (next() as u32).to_be_bytes();
            let dport = (i % 3 != 0).then(|| next() as u16);
            let l4proto = if udp { proto::UDP } else { proto::TCP };
            let mut want = p.clone();
            assert!(decrement_ttl(&mut want, 0, true));
            let rw = Rewrite { dst: Some(&dst), dport, ..Default::default() };
            let h = L4Header::check(&want, 20, 44, l4proto);
            let mut general = want.clone();
            assert!(apply(&mut want, 0, h, true, &rw));
            let mut one = p.clone();
            assert!(dnat_v4(&mut one, 0, l4proto, dst, dport));
            assert_eq!(one, want, "case {i}");
            let src = (next() as u32).to_be_bytes();
            let rw = any_rewrite(next(), &src, &dst);
            assert!(apply(&mut general, 0, h, true, &rw));
            assert!(translate_v4(&mut p, 0, l4proto, &rw));
            assert_eq!(p, general, "case {i}, {rw:?}");
        }
        let mut p = tcp_v4();
        let before = p.clone();
        let long = Rewrite { src: Some(&[1; 16]), ..Default::default() };
        assert!(!translate_v4(&mut p, 0, proto::TCP, &long), "an address of the wrong length");
        assert_eq!(p, before);
        let mut short = tcp_v4();
        short.truncate(39);
        assert!(!dnat_v4(&mut short, 0, proto::TCP, [1, 2, 3, 4], None));
        let mut ttl1 = tcp_v4();
        ttl1[8] = 1;
        let before = ttl1.clone();
        assert!(!dnat_v4(&mut ttl1, 0, proto::TCP, [1, 2, 3, 4], None));
        assert_eq!(ttl1, before);
    }

    /// `dnat_v6`, and `translate_v6` with any rewrite, against `decrement_ttl` + `apply`, TCP and UDP (a zero UDP
    /// checksum included: IPv6 updates it).
    #[test]
    fn one_pass_rewrite_v6_matches_the_general_rewrite() {
        let mut next = crate::xorshift(0x2545_f491_4f6c_dd1du64);
        for i in 0..20_000 {
            let udp = i % 2 == 1;
            let l4proto = if udp { proto::UDP } else { proto::TCP };
            let mut p = vec![0u8; 40 + 24];
            p[0] = 0x60;
            p[4..6].copy_from_slice(&24u16.to_be_bytes());
            p[6] = l4proto;
            p[7] = 2 + (next() as u8 % 250);
            for c in p[8..40].chunks_mut(8) {
                c.copy_from_slice(&next().to_be_bytes());
            }
            p[40..44].copy_from_slice(&(next() as u32).to_be_bytes());
            let csum_at = if udp { 46 } else { 56 };
            let l4c = if i % 10 == 3 { 0 } else { next() as u16 };
            p[csum_at..csum_at + 2].copy_from_slice(&l4c.to_be_bytes());
            let mut dst = [0u8; 16];
            dst[..8].copy_from_slice(&next().to_be_bytes());
            dst[8..].copy_from_slice(&next().to_be_bytes());
            let dport = (i % 3 != 0).then(|| next() as u16);
            let mut want = p.clone();
            assert!(decrement_ttl(&mut want, 0, false));
            let rw = Rewrite { dst: Some(&dst), dport, ..Default::default() };
            let h = L4Header::check(&want, 40, 64, l4proto);
            let mut general = want.clone();
            assert!(apply(&mut want, 0, h, false, &rw));
            let mut one = p.clone();
            assert!(dnat_v6(&mut one, 0, l4proto, &dst, dport));
            assert_eq!(one, want, "case {i}");
            let mut src = [0u8; 16];
            src[..8].copy_from_slice(&next().to_be_bytes());
            src[8..].copy_from_slice(&next().to_be_bytes());
            let rw = any_rewrite(next(), &src, &dst);
            assert!(apply(&mut general, 0, h, false, &rw));
            assert!(translate_v6(&mut p, 0, l4proto, &rw));
            assert_eq!(p, general, "case {i}, {rw:?}");
        }
        let mut p = vec![0x60u8; 64];
        p[6] = proto::TCP;
        let before = p.clone();
        let short = Rewrite { dst: Some(&[1; 4]), ..Default::default() };
        assert!(!translate_v6(&mut p, 0, proto::TCP, &short), "an address of the wrong length");
        assert_eq!(p, before);
        let mut short = vec![0x60u8; 59];
        assert!(!dnat_v6(&mut short, 0, proto::TCP, &[1; 16], None));
    }

    /// A random packet of family `v4` and `l4proto` (checksums as `next` gives them: not necessarily right, as
    /// the rewrite updates whatever is there), to `dst` and `dport`.
    fn any_packet(next: &mut impl FnMut() -> u64, v4: bool, l4proto: u8, dst: &[u8; 16], dport: u16) -> Vec<u8> {
        let (l4, at) = if v4 { (20, 12) } else { (40, 0) };
        let mut p = vec![0u8; l4 + 24];
        for c in p.chunks_mut(8) {
            c.copy_from_slice(&next().to_be_bytes()[..c.len()]);
        }
        if v4 {
            p[0] = 0x45;
            p[8] = 2 + (p[8] % 250);
            p[9] = l4proto;
            p[16..20].copy_from_slice(&dst[12..]);
        } else {
            p[0] = 0x60;
            p[6] = l4proto;
            p[7] = 2 + (p[7] % 250);
            p[24..40].copy_from_slice(&dst[at..]);
        }
        p[l4 + 2..l4 + 4].copy_from_slice(&dport.to_be_bytes());
        p
    }

    /// `dnat_by` against `dnat`, byte for byte and refusal for refusal, both families, TCP and UDP: addresses and
    /// checksums at the one's-complement edges (0, 0xffff, and a checksum that updates to zero), a UDP-over-IPv4
    /// checksum of zero, ports kept and changed, and packets `Dnat` was not worked out for (another destination or
    /// port, the other family, a wrong version, TTL 1, short buffers), which take `dnat` itself.
    #[test]
    fn rewrite_by_worked_out_deltas_matches_dnat() {
        let mut next = crate::xorshift(0x6a09_e667_f3bc_c908u64);
        let mut counts = [0usize; 3];
        for i in 0..40_000u64 {
            let v4 = i % 2 == 0;
            let l4proto = if i % 4 < 2 { proto::TCP } else { proto::UDP };
            let at = if v4 { 12 } else { 0 };
            let addr = |next: &mut dyn FnMut() -> u64, kind: u64| {
                let mut a = [0u8; 16];
                match kind % 8 {
                    0 => a[at..].fill(0xff),
                    1 => {}
                    _ => {
                        a[..8].copy_from_slice(&next().to_be_bytes());
                        a[8..].copy_from_slice(&next().to_be_bytes());
                    }
                }
                if v4 {
                    a[..12].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
                }
                a
            };
            let vip = addr(&mut next, i / 4);
            let dst = addr(&mut next, i / 32 + 3);
            let vport = if i % 97 == 0 { 0 } else { next() as u16 };
            let dport = (i % 3 != 0).then(|| next() as u16);
            let Some(d) = Dnat::new(v4, &vip, vport, &dst, dport) else {
                assert!(vport == 0 && dport.is_some(), "case {i}");
                counts[0] += 1;
                continue;
            };
            // Mostly packets `d` was worked out for; some to another address or port.
            let to = if i % 11 == 5 { addr(&mut next, 2) } else { vip };
            let mut p = any_packet(&mut next, v4, l4proto, &to, if i % 11 == 6 { vport ^ 1 } else { vport });
            let (l4, ip_csum) = (if v4 { 20 } else { 40 }, 10);
            let csum_at = l4 + if l4proto == proto::UDP { 6 } else { 16 };
            let c = match i % 7 {
                0 => 0,
                1 => 0xffff,
                2 => d.l4,
                _ => next() as u16,
            };
            p[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
            if v4 && i % 5 == 0 {
                p[ip_csum..ip_csum + 2].copy_from_slice(&d.ip.to_be_bytes());
            }
            match i % 53 {
                0 => p[0] ^= 0x10,
                1 => p[if v4 { 8 } else { 7 }] = 1,
                2 => p.truncate(l4 + 7),
                _ => {}
            }
            let mut want = p.clone();
            let ok = dnat(&mut want, 0, v4, l4proto, &dst, dport);
            let mut got = p.clone();
            assert_eq!(dnat_by(&mut got, 0, v4, l4proto, &d), ok, "case {i}");
            assert_eq!(got, want, "case {i}");
            // The other family's packet, to the same words: `dnat` for it.
            let mut q = p.clone();
            let mut want = p.clone();
            assert_eq!(dnat_by(&mut q, 0, !v4, l4proto, &d), dnat(&mut want, 0, !v4, l4proto, &dst, dport), "case {i}");
            assert_eq!(q, want, "case {i}, the other family");
            counts[1 + usize::from(ok)] += 1;
        }
        assert!(counts.iter().all(|&n| n > 100), "{counts:?}");
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut p = tcp_v4();
        p[9] = 17;
        p[36..38].copy_from_slice(&[0, 0]); // TCP offset 16 is where UDP payload now lies; use UDP offset 6
        p[26..28].copy_from_slice(&[0, 0]);
        let rw = Rewrite { dst: Some(&[198, 18, 2, 7]), ..Default::default() };
        let h = L4Header::check(&p, 20, 44, proto::UDP);
        assert!(apply(&mut p, 0, h, true, &rw));
        assert_eq!(&p[26..28], &[0, 0]);
    }

    /// The IPv4 fast path and the general path agree on every combination of rewrites, for TCP and UDP, with and
    /// without an L4 header.
    #[test]
    fn v4_fast_path_matches_general_path() {
        let mut seed = 0x1234_5678_u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for round in 0..2000 {
            let mut p = tcp_v4();
            let proto_ = if round % 2 == 0 { proto::TCP } else { proto::UDP };
            p[9] = proto_;
            if proto_ == proto::UDP && round % 4 == 1 {
                p[26..28].copy_from_slice(&[0, 0]);
            }
            let (a, b) = (next().to_be_bytes(), next().to_be_bytes());
            let (x, y) = (next(), next());
            let rw = Rewrite {
                src: (x & 1 != 0).then_some(&a[..]),
                dst: (x & 2 != 0).then_some(&b[..]),
                sport: (x & 4 != 0).then_some(y as u16),
                dport: (x & 8 != 0).then_some((y >> 16) as u16),
            };
            let l4 = if x & 16 != 0 { L4Header::check(&p, 20, p.len(), proto_) } else { None };
            let mut fast = p.clone();
            assert!(apply(&mut fast, 0, l4, true, &rw));
            let mut slow = p.clone();
            apply_any(&mut slow, 0, l4.map(|h| h.offset()), true, if l4.is_some() { proto_ } else { 0 }, &rw);
            assert_eq!(fast, slow, "round {round}: {rw:?} l4 {l4:?}");
        }
    }

    /// A header token checked against a longer buffer, or an address of the wrong length, is refused: nothing
    /// changes and nothing panics (the shape of the short-first-fragment crash).
    #[test]
    fn short_buffers_are_refused_not_indexed() {
        let full = tcp_v4();
        let tok = L4Header::check(&full, 20, full.len(), proto::TCP).unwrap();
        for len in [0, 10, 19, 20, 34, 35, 39] {
            let mut p = full[..len].to_vec();
            let before = p.clone();
            let rw = Rewrite { dst: Some(&[198, 18, 2, 7]), dport: Some(8080), ..Default::default() };
            assert!(!apply(&mut p, 0, Some(tok), true, &rw), "len {len}");
            assert_eq!(p, before, "len {len}: nothing changed");
        }
        assert!(L4Header::check(&full[..34], 20, 34, proto::TCP).is_none(), "14 bytes of TCP is no TCP header");
        assert!(L4Header::check(&full, 20, 34, proto::TCP).is_none(), "the IP packet's end bounds the header");
        let mut p = full.clone();
        let rw = Rewrite { dst: Some(&[198, 18, 2]), ..Default::default() };
        assert!(!apply(&mut p, 0, Some(tok), true, &rw), "a 3-byte IPv4 address");
        assert_eq!(p, full);
    }

    /// The one-fold TTL update against the general RFC 1624 update of the same word, for every TTL that is
    /// decremented, protocol bytes of each kind and header checksums of every carry: byte for byte the same.
    #[test]
    fn ttl_update_matches_the_general_update() {
        let mut p = tcp_v4();
        // Every checksum for a few TTLs, and for every TTL a spread of checksums with the carry's edges.
        let edges = [0u16, 1, 0x00ff, 0x0100, 0x01ff, 0xfefe, 0xfeff, 0xff00, 0xfffe, 0xffff];
        let cases = [2u8, 3, 64, 128, 255]
            .into_iter()
            .flat_map(|ttl| (0..=u16::MAX).map(move |c| (ttl, c)))
            .chain((2..=255u8).flat_map(|ttl| (0..=u16::MAX).step_by(251).chain(edges).map(move |c| (ttl, c))));
        for (ttl, csum) in cases {
            for proto_ in [0u8, 6, 17, 0xff] {
                p[8] = ttl;
                p[9] = proto_;
                set_u16(&mut p, 10, csum);
                let old = get_u16(&p, 8);
                assert!(decrement_ttl(&mut p, 0, true));
                assert_eq!(p[8], ttl - 1);
                assert_eq!(p[9], proto_);
                let want = update16(csum, old, old - 0x100);
                assert_eq!(get_u16(&p, 10), want, "ttl {ttl} proto {proto_} checksum {csum:#06x}");
            }
        }
        let mut short = tcp_v4()[..19].to_vec();
        let before = short.clone();
        assert!(!decrement_ttl(&mut short, 0, true), "a header shorter than 20 bytes");
        assert_eq!(short, before);
    }

    /// IPv6: the hop limit falls by one and nothing else changes; a hop limit of 1, or a header shorter than 40
    /// bytes, is refused unchanged.
    #[test]
    fn hop_limit_decrement() {
        let mut h = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8].repeat(8));
        let before = h.clone();
        assert!(decrement_ttl(&mut h, 0, false));
        assert_eq!(h[7], 63);
        assert_eq!((&h[..7], &h[8..]), (&before[..7], &before[8..]));
        h[7] = 1;
        let one = h.clone();
        assert!(!decrement_ttl(&mut h, 0, false));
        assert_eq!(h, one);
        let mut short = before[..39].to_vec();
        assert!(!decrement_ttl(&mut short, 0, false));
        assert_eq!(short, before[..39]);
    }

    #[test]
    fn ttl_one_is_not_forwarded() {
        let mut p = tcp_v4();
        p[8] = 1;
        assert!(!decrement_ttl(&mut p, 0, true));
        assert_eq!(p[8], 1);
    }
}
