//! Internet checksum (RFC 1071): full computation, pseudo-headers (RFC 768, RFC 9293 §3.1, RFC 8200 §8.1) and
//! incremental update (RFC 1624 eqn. 3) for address and port rewrites.
//!
//! Sums are carried as `u32` accumulators of 16-bit big-endian words and folded at the end; none of these functions
//! panics for any input length (an odd trailing byte is padded with zero as RFC 1071 §4.1 says).

/// Add `data` to a running one's-complement accumulator.
#[inline]
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

/// Fold an accumulator to 16 bits and complement it: the value to store in a checksum field.
#[inline]
pub fn finish(acc: u64) -> u16 {
    // Four branch-free folds take any u64 down to 16 bits (64 -> 33 -> 17 -> 16 bits, plus a last carry).
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// The Internet checksum of `data`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(0, data))
}

/// Whether an IPv4 header without options carries a correct checksum: [`checksum`] of it is zero. The fast path's
/// check, in five native-endian loads and no folding. [`checksum`] is zero when the header's one's-complement sum
/// folds to 0xffff, that is when the plain sum `s` of its 16-bit words is a non-zero multiple of 0xffff (folding
/// keeps a sum's remainder mod 0xffff, and gives 0xffff, not 0, for a non-zero multiple). Mod 0xffff, 2^16 is 1, so
/// a 32-bit word counts as its two halves, and a byte-swapped 16-bit word as 256 times itself: with 256 prime to
/// 0xffff, the native-endian sum is a multiple exactly when the big-endian one is, and it is zero only when every
/// byte is.
#[inline(always)]
pub fn header_ok_v4(h: &[u8; 20]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let s = w(0) + w(4) + w(8) + w(12) + w(16);
    s != 0 && s % 0xffff == 0
}

/// Accumulator of the IPv4 pseudo-header (RFC 9293 §3.1).
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u64 {
    let acc = sum(0, &src);
    let acc = sum(acc, &dst);
    acc + u64::from(proto) + u64::from(len)
}

/// Accumulator of the IPv6 pseudo-header (RFC 8200 §8.1).
#[inline]
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], proto: u8, len: u32) -> u64 {
    let acc = sum(0, src);
    let acc = sum(acc, dst);
    acc + u64::from(len >> 16) + u64::from(len & 0xffff) + u64::from(proto)
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word changed from `old` to `new`. `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let acc = u64::from(!csum) + u64::from(!old) + u64::from(new);
    finish(acc)
}

/// RFC 1624 over a run of words: `old` and `new` must have the same length; an odd length is treated as padded with
/// a zero byte, which is exact for fields that start on an even offset (addresses, ports).
#[inline]
pub fn update(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    // ~old summed word by word equals the sum of (0xffff - w); add new words.
    let mut acc = u64::from(!csum);
    let mut i = 0;
    while i + 1 < old.len() && i + 1 < new.len() {
        acc += u64::from(!u16::from_be_bytes([old[i], old[i + 1]]));
        acc += u64::from(u16::from_be_bytes([new[i], new[i + 1]]));
        i += 2;
    }
    if i < old.len() && i < new.len() {
        acc += u64::from(!(u16::from(old[i]) << 8));
        acc += u64::from(u16::from(new[i]) << 8);
    }
    finish(acc)
}

/// A UDP checksum field of zero means "no checksum" over IPv4 (RFC 768); a computed zero is sent as `0xffff`.
#[inline]
pub fn udp_nonzero(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example: words 0001 f203 f4f5 f6f7 sum to ddf2 (before complement).
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0x12, 0x34, 0x56]), checksum(&[0x12, 0x34, 0x56, 0x00]));
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn known_ipv4_header() {
        // A header from the wild (Wikipedia "IPv4 header checksum" example): checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&h), 0);
    }

    #[test]
    fn incremental_matches_full() {
        let mut data: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        let c0 = checksum(&data);
        let old = [data[12], data[13], data[14], data[15]];
        let new = [198, 18, 2, 10];
        data[12..16].copy_from_slice(&new);
        assert_eq!(update(c0, &old, &new), checksum(&data));
        let c1 = checksum(&data);
        let old16 = u16::from_be_bytes([data[20], data[21]]);
        data[20..22].copy_from_slice(&8080u16.to_be_bytes());
        assert_eq!(update16(c1, old16, 8080), checksum(&data));
    }

    #[test]
    fn fold_handles_any_accumulator() {
        for acc in [0u64, 0xffff, 0x1_0000, 0xffff_ffff, 0x1_ffff_fffe, u64::MAX, 0x8000_0000_0000_ffff] {
            let mut slow = acc;
            while slow >> 16 != 0 {
                slow = (slow & 0xffff) + (slow >> 16);
            }
            assert_eq!(finish(acc), !(slow as u16), "{acc:#x}");
        }
    }

    #[test]
    fn header_ok_v4_is_a_zero_checksum() {
        // Headers with their checksum right, then each with one bit flipped, and a few edge cases: the fixed check
        // agrees with the general one every time.
        let mut seen = [0usize; 2];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut h = [0u8; 20];
            for b in &mut h {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            h[10..12].fill(0);
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            for flip in 0..=160 {
                let mut v = h;
                if flip < 160 {
                    v[flip / 8] ^= 1 << (flip % 8);
                }
                let ok = checksum(&v) == 0;
                assert_eq!(header_ok_v4(&v), ok, "{v:02x?}");
                seen[usize::from(ok)] += 1;
            }
        }
        // All zero (a sum of 0, no multiple that counts), all ones (ten times 0xffff), and a header whose
        // one's-complement sum is 0xffff with its checksum field 0 or 0xffff (the two forms of one's-complement zero).
        let mut edge = vec![[0u8; 20], [0xff; 20]];
        for c in [0u16, 0xffff] {
            let mut v = [0u8; 20];
            v[0] = 0x45;
            v[10..12].copy_from_slice(&c.to_be_bytes());
            v[18..20].copy_from_slice(&(0xffff_u16 - 0x4500).to_be_bytes());
            edge.push(v);
        }
        for v in &edge {
            assert_eq!(header_ok_v4(v), checksum(v) == 0, "{v:02x?}");
        }
        assert!(edge[2..].iter().all(header_ok_v4), "either form of a zero checksum field is right");
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
    }

    #[test]
    fn pseudo_header_v6_length_split() {
        let s = [0u8; 16];
        assert_eq!(pseudo_v6(&s, &s, 17, 0x1_0002), 1 + 2 + 17);
    }
}
