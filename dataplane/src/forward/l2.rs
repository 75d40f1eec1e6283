//! Ethernet address rewriting (DSR L2 and every egress).

use crate::wire::ethernet::Mac;

/// Set destination and source MAC of the frame at the start of `pkt` (at least 12 bytes, checked by the parser; a
/// shorter buffer is left alone). Inlined: a call cost the fast path more than the four moves.
#[inline(always)]
pub fn set_macs(pkt: &mut [u8], dst: Mac, src: Mac) {
    if let Some((d, s)) = pkt.first_chunk_mut::<12>().map(|h| h.split_at_mut(6)) {
        d.copy_from_slice(&dst);
        s.copy_from_slice(&src);
    }
}

/// Swap destination and source MAC (replies out of the ingress port).
#[inline]
pub fn swap_macs(pkt: &mut [u8]) {
    let mut d = [0u8; 6];
    d.copy_from_slice(&pkt[0..6]);
    pkt.copy_within(6..12, 0);
    pkt[6..12].copy_from_slice(&d);
}
