//! ICMP the dataplane answers or rewrites itself.
//!
//! - Echo requests to a VIP are answered in place (RFC 792, RFC 4443 §4.2).
//! - ICMP errors about a VIP flow are translated so the backend that owns the flow recognises its own packet
//!   (outer destination and embedded header rewritten, checksums recomputed).
//! - When a tunnel would exceed the egress MTU, the packet is replaced by an ICMP fragmentation-needed (RFC 1191 §4)
//!   or packet-too-big (RFC 4443 §3.2) message to its sender, quoting as much of it as RFC 1812 §4.3.2.3 (576 bytes
//!   in all) and RFC 4443 §2.4(c) (1280 bytes in all) allow.
//!
//! Messages the appliance sends take the VIP as their source, so a client sees them come from the address it talked to.

use super::l2::swap_macs;
use super::nat::{self, Rewrite};
use super::L4Header;
use crate::packet::PacketBuf;
use crate::wire::checksum::{checksum, finish, pseudo_v6, sum, update16};
use crate::wire::icmp::{v4 as icmp4, v6 as icmp6};
use crate::wire::{get_u16, ipv4, ipv6, proto, set_u16};

/// Bytes of the offending packet quoted in an ICMPv4 error (576 − 20 − 8).
pub const QUOTE_V4: usize = 548;
/// Bytes quoted in an ICMPv6 error (1280 − 40 − 8).
pub const QUOTE_V6: usize = 1232;
/// TTL / hop limit of messages the appliance originates.
pub const TTL: u8 = 64;

/// Turn an echo request (ICMP header `l4`) into its reply in place: addresses and MACs swapped, type changed, TTL
/// reset. Returns false, changing nothing, when the buffer is shorter than the headers.
#[must_use]
pub fn echo_reply(pkt: &mut [u8], l3: usize, l4: L4Header, v4: bool) -> bool {
    let ip_len = if v4 { ipv4::MIN_HEADER_LEN } else { ipv6::HEADER_LEN };
    let l4 = l4.offset();
    if pkt.len() < (l3 + ip_len).max(l4 + 8).max(12) {
        return false;
    }
    swap_macs(pkt);
    if v4 {
        let mut s = [0u8; 4];
        s.copy_from_slice(&pkt[l3 + 12..l3 + 16]);
        pkt.copy_within(l3 + 16..l3 + 20, l3 + 12);
        pkt[l3 + 16..l3 + 20].copy_from_slice(&s);
        let old = get_u16(pkt, l3 + 8);
        pkt[l3 + 8] = TTL;
        let c = update16(get_u16(pkt, l3 + 10), old, get_u16(pkt, l3 + 8));
        set_u16(pkt, l3 + 10, c);
        let old = get_u16(pkt, l4);
        pkt[l4] = icmp4::ECHO_REPLY;
        let c = update16(get_u16(pkt, l4 + 2), old, get_u16(pkt, l4));
        set_u16(pkt, l4 + 2, c);
    } else {
        let mut s = [0u8; 16];
        s.copy_from_slice(&pkt[l3 + 8..l3 + 24]);
        pkt.copy_within(l3 + 24..l3 + 40, l3 + 8);
        pkt[l3 + 24..l3 + 40].copy_from_slice(&s);
        pkt[l3 + 7] = TTL;
        let old = get_u16(pkt, l4);
        pkt[l4] = icmp6::ECHO_REPLY;
        // The pseudo-header sum does not change when source and destination swap.
        let c = update16(get_u16(pkt, l4 + 2), old, get_u16(pkt, l4));
        set_u16(pkt, l4 + 2, c);
    }
    true
}

/// Replace the IP packet at `l3` with a fragmentation-needed / packet-too-big message to its sender advertising
/// `mtu`. The L2 header is kept with its MACs swapped (the reply leaves by the ingress port).
/// Returns false when the buffer is too small (nothing changed).
pub fn too_big<B: PacketBuf>(pkt: &mut B, l3: usize, v4: bool, mtu: u16) -> bool {
    let (hl, quote_max) = if v4 { (ipv4::MIN_HEADER_LEN, QUOTE_V4) } else { (ipv6::HEADER_LEN, QUOTE_V6) };
    let d = pkt.data();
    let Some(orig) = d.get(l3..).filter(|o| o.len() >= hl && l3 >= 12) else { return false };
    let q = orig.len().min(quote_max);
    let mut quote = [0u8; QUOTE_V6];
    quote[..q].copy_from_slice(&orig[..q]);
    let new_len = l3 + hl + 8 + q;
    if new_len > d.len() + pkt.tailroom() || !pkt.set_len(new_len) {
        return false;
    }
    let d = pkt.data_mut();
    swap_macs(d);
    let icmp_at = l3 + hl;
    if v4 {
        let (src, dst) = ([quote[16], quote[17], quote[18], quote[19]], [quote[12], quote[13], quote[14], quote[15]]);
        let mut ip = ipv4::Ipv4Packet::new_unchecked(&mut d[l3..icmp_at]);
        ip.set_version_and_header_len(hl);
        ip.set_dscp_ecn(0);
        ip.set_total_len((hl + 8 + q) as u16);
        ip.set_ident(0);
        ip.set_flags_frag(false, false, 0);
        ip.set_ttl(TTL);
        ip.set_protocol(proto::ICMP);
        ip.set_src(src);
        ip.set_dst(dst);
        ip.fill_checksum();
        d[icmp_at..icmp_at + 8].copy_from_slice(&[icmp4::DEST_UNREACH, icmp4::CODE_FRAG_NEEDED, 0, 0, 0, 0, 0, 0]);
        set_u16(d, icmp_at + 6, mtu);
        d[icmp_at + 8..icmp_at + 8 + q].copy_from_slice(&quote[..q]);
        let c = checksum(&d[icmp_at..]);
        set_u16(d, icmp_at + 2, c);
    } else {
        let mut src = [0u8; 16];
        src.copy_from_slice(&quote[24..40]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&quote[8..24]);
        let mut ip = ipv6::Ipv6Packet::new_unchecked(&mut d[l3..icmp_at]);
        ip.set_ver_tc_flow(0, 0);
        ip.set_payload_len((8 + q) as u16);
        ip.set_next_header(proto::ICMPV6);
        ip.set_hop_limit(TTL);
        ip.set_src(src);
        ip.set_dst(dst);
        d[icmp_at..icmp_at + 8].copy_from_slice(&[icmp6::PACKET_TOO_BIG, 0, 0, 0, 0, 0, 0, 0]);
        d[icmp_at + 4..icmp_at + 8].copy_from_slice(&u32::from(mtu).to_be_bytes());
        d[icmp_at + 8..icmp_at + 8 + q].copy_from_slice(&quote[..q]);
        let c = finish(sum(pseudo_v6(&src, &dst, proto::ICMPV6, (8 + q) as u32), &d[icmp_at..]));
        set_u16(d, icmp_at + 2, c);
    }
    true
}

/// Rewrite an ICMP error: the outer header by `outer`, the embedded header at `inner_l3` by `inner` (its ports
/// written directly when `inner_l4` is given), then the ICMP checksum recomputed over the whole message.
/// `icmp..end` is the ICMP message. Returns false, changing nothing, when the offsets do not fit the buffer (the
/// embedded header and its ports must lie before `end`).
#[allow(clippy::too_many_arguments)]
#[must_use]
pub fn translate_error(
    pkt: &mut [u8],
    l3: usize,
    icmp: L4Header,
    end: usize,
    v4: bool,
    outer: &Rewrite<'_>,
    inner_l3: usize,
    inner_l4: Option<usize>,
    inner: &Rewrite<'_>,
) -> bool {
    let icmp_at = icmp.offset();
    let ip_len = if v4 { ipv4::MIN_HEADER_LEN } else { ipv6::HEADER_LEN };
    if end > pkt.len()
        || icmp_at + 8 > end
        || l3 + ip_len > icmp_at
        || inner_l3 < icmp_at + 8
        || inner_l3 + ip_len > end
        || inner_l4.is_some_and(|o| o < inner_l3 + ip_len || o + 4 > end)
    {
        return false;
    }
    let inner_addrs = Rewrite { src: inner.src, dst: inner.dst, ..Rewrite::default() };
    if !nat::apply(pkt, l3, None, v4, outer) || !nat::apply(pkt, inner_l3, None, v4, &inner_addrs) {
        return false;
    }
    if let Some(o) = inner_l4 {
        if let Some(p) = inner.sport {
            set_u16(pkt, o, p);
        }
        if let Some(p) = inner.dport {
            set_u16(pkt, o + 2, p);
        }
    }
    set_u16(pkt, icmp_at + 2, 0);
    let c = if v4 {
        checksum(&pkt[icmp_at..end])
    } else {
        let mut s = [0u8; 16];
        s.copy_from_slice(&pkt[l3 + 8..l3 + 24]);
        let mut t = [0u8; 16];
        t.copy_from_slice(&pkt[l3 + 24..l3 + 40]);
        finish(sum(pseudo_v6(&s, &t, proto::ICMPV6, (end - icmp_at) as u32), &pkt[icmp_at..end]))
    };
    set_u16(pkt, icmp_at + 2, c);
    true
}
