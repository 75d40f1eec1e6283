//! Weighted Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016, §3.4, Pseudocode 1).
//!
//! [`build`] is a pure function of the backend *set*, their weights and the table size: backends are sorted by their
//! identity key first, so any order of input yields the same table, and every appliance given the same set builds the
//! same table. Each backend's permutation is `offset + j·skip (mod M)` with `offset = h1(key) mod M` and
//! `skip = h2(key) mod (M−1) + 1`; M is prime so every permutation visits every slot. Weights are honoured by turns:
//! in each round every backend earns its weight in credit and claims one slot per `max_weight` of credit, so its
//! share of slots converges to its share of the total weight.

use super::hash::hash_bytes;

/// Default table size (a prime, as the paper recommends M ≫ 100·N).
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
/// The table sizes chosen automatically ([`size_for`]): primes of about 1000 · 2^k, so a table holds at least 100
/// slots per backend (the paper's bound for a balance within about 1 %) and changes size only when the backend count
/// doubles past 10, 20, 40, ... (a new size moves every slot, so it should be rare), up to [`DEFAULT_TABLE_SIZE`].
pub const AUTO_SIZES: [u32; 7] = [1009, 2003, 4001, 8009, 16001, 32003, DEFAULT_TABLE_SIZE];

/// The table size for `backends` backends: the smallest of [`AUTO_SIZES`] of at least 100 slots per backend, or
/// [`DEFAULT_TABLE_SIZE`] for larger sets. A pure function of the count, so every appliance chooses the same.
pub fn size_for(backends: usize) -> u32 {
    let want = backends.max(1).saturating_mul(100);
    AUTO_SIZES.iter().copied().find(|&m| m as usize >= want).unwrap_or(DEFAULT_TABLE_SIZE)
}

/// Largest table size accepted.
pub const MAX_TABLE_SIZE: u32 = 16_777_259;
/// Most backends one table can index (slots hold `u16` indices).
pub const MAX_BACKENDS: usize = u16::MAX as usize;
/// Largest backend weight.
pub const MAX_WEIGHT: u32 = 65_535;

const SEED_OFFSET: u64 = 0x6d61_676c_6576_0001;
const SEED_SKIP: u64 = 0x6d61_676c_6576_0002;
const EMPTY: u16 = u16::MAX;

/// One backend as Maglev sees it: a stable identity (address and port bytes) and a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevBackend {
    /// Identity bytes: the backend's IPv6 (or IPv4-mapped) address followed by its port, big-endian.
    pub key: [u8; 18],
    /// Relative weight, 1 to [`MAX_WEIGHT`].
    pub weight: u32,
}

/// Why a table could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// Table size is not a prime within range.
    #[error("Maglev table size {0} must be a prime between 3 and {MAX_TABLE_SIZE}")]
    BadTableSize(u32),
    /// More backends than slots (or than the index type holds).
    #[error("{0} backends do not fit a Maglev table of size {1} (at most min(size, {MAX_BACKENDS}))")]
    TooManyBackends(usize, u32),
    /// A weight of zero or above the maximum.
    #[error("backend weight {0} must be between 1 and {MAX_WEIGHT}")]
    BadWeight(u32),
    /// The same backend identity twice.
    #[error("the same backend appears twice")]
    Duplicate,
}

/// A built lookup table: each slot holds an index into [`MaglevTable::backends`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevTable {
    slots: Box<[u16]>,
    backends: Vec<MaglevBackend>,
}

/// True when `n` is prime (trial division; used at configuration time only).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// Build the table for a backend set.
///
/// An empty set yields an empty table whose lookups return `None`.
///
/// # Errors
/// See [`MaglevError`].
pub fn build(backends: &[MaglevBackend], size: u32) -> Result<MaglevTable, MaglevError> {
    if !(3..=MAX_TABLE_SIZE).contains(&size) || !is_prime(size) {
        return Err(MaglevError::BadTableSize(size));
    }
    if backends.len() > MAX_BACKENDS.min(size as usize) {
        return Err(MaglevError::TooManyBackends(backends.len(), size));
    }
    let mut sorted: Vec<MaglevBackend> = backends.to_vec();
    sorted.sort_unstable_by_key(|b| b.key);
    if sorted.windows(2).any(|w| w[0].key == w[1].key) {
        return Err(MaglevError::Duplicate);
    }
    if let Some(b) = sorted.iter().find(|b| b.weight == 0 || b.weight > MAX_WEIGHT) {
        return Err(MaglevError::BadWeight(b.weight));
    }
    let m = size as usize;
    if sorted.is_empty() {
        return Ok(MaglevTable { slots: Box::new([]), backends: sorted });
    }
    let n = sorted.len();
    let mut pos = Vec::with_capacity(n);
    let mut skip = Vec::with_capacity(n);
    for b in &sorted {
        pos.push((hash_bytes(SEED_OFFSET, &b.key) % u64::from(size)) as usize);
        skip.push((hash_bytes(SEED_SKIP, &b.key) % u64::from(size - 1)) as usize + 1);
    }
    let wmax = sorted.iter().map(|b| b.weight).max().unwrap_or(1);
    let mut credit = vec![0u32; n];
    let mut slots = vec![EMPTY; m].into_boxed_slice();
    let mut filled = 0usize;
    'fill: loop {
        for i in 0..n {
            credit[i] += sorted[i].weight;
            while credit[i] >= wmax {
                credit[i] -= wmax;
                loop {
                    let c = pos[i];
                    pos[i] += skip[i];
                    if pos[i] >= m {
                        pos[i] -= m;
                    }
                    if slots[c] == EMPTY {
                        slots[c] = i as u16;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    Ok(MaglevTable { slots, backends: sorted })
}

impl MaglevTable {
    /// Table size M (0 for an empty table).
    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// The backends in canonical (sorted) order; slot values index this list.
    pub fn backends(&self) -> &[MaglevBackend] {
        &self.backends
    }

    /// The slot array.
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }

    /// Index (into [`MaglevTable::backends`]) of the backend for a flow hash; `None` when the table is empty.
    #[inline]
    pub fn lookup(&self, flow_hash: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        // Lemire's multiply-shift range reduction: no division on the hot path.
        let i = ((u128::from(flow_hash) * self.slots.len() as u128) >> 64) as usize;
        self.slots.get(i).map(|&s| usize::from(s))
    }

    /// Slots whose backend identity differs from `prev` (all slots when the sizes differ).
    pub fn moved_from(&self, prev: &MaglevTable) -> usize {
        if prev.size() != self.size() {
            return self.size().max(prev.size());
        }
        self.slots
            .iter()
            .zip(prev.slots.iter())
            .filter(|(a, b)| self.backends[usize::from(**a)].key != prev.backends[usize::from(**b)].key)
            .count()
    }

    /// Slots owned by each backend, in [`MaglevTable::backends`] order.
    pub fn slot_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.backends.len()];
        for &s in self.slots.iter() {
            c[usize::from(s)] += 1;
        }
        c
    }
}

/// Identity key of a backend address and port.
pub fn backend_key(addr: std::net::IpAddr, port: u16) -> [u8; 18] {
    let v6 = match addr {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
        std::net::IpAddr::V6(a) => a,
    };
    let mut k = [0u8; 18];
    k[..16].copy_from_slice(&v6.octets());
    k[16..].copy_from_slice(&port.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn automatic_sizes_are_primes_of_a_hundred_slots_per_backend() {
        assert!(AUTO_SIZES.windows(2).all(|w| w[0] < w[1]), "{AUTO_SIZES:?}");
        for m in AUTO_SIZES {
            assert!(is_prime(m), "{m}");
        }
        assert_eq!(size_for(0), 1009);
        assert_eq!(size_for(3), 1009);
        assert_eq!(size_for(10), 1009);
        assert_eq!(size_for(11), 2003);
        for n in 1..=655 {
            assert!(size_for(n) as usize >= 100 * n, "{n} backends: {}", size_for(n));
        }
        assert_eq!(size_for(656), DEFAULT_TABLE_SIZE);
        assert_eq!(size_for(MAX_BACKENDS), DEFAULT_TABLE_SIZE);
    }

    fn backends(n: usize) -> Vec<MaglevBackend> {
        (0..n)
            .map(|i| MaglevBackend {
                key: backend_key(IpAddr::V4(Ipv4Addr::new(198, 18, 2 + (i / 250) as u8, (i % 250) as u8 + 1)), 80),
                weight: 1,
            })
            .collect()
    }

    #[test]
    fn primes() {
        assert!(is_prime(65_537) && is_prime(655_373) && is_prime(3) && !is_prime(65_536) && !is_prime(1));
        assert_eq!(build(&backends(3), 65_536), Err(MaglevError::BadTableSize(65_536)));
    }

    #[test]
    fn rejects_bad_input() {
        let mut b = backends(2);
        b[1] = b[0];
        assert_eq!(build(&b, 7), Err(MaglevError::Duplicate));
        let mut b = backends(2);
        b[0].weight = 0;
        assert_eq!(build(&b, 7), Err(MaglevError::BadWeight(0)));
        assert_eq!(build(&backends(8), 7), Err(MaglevError::TooManyBackends(8, 7)));
    }

    #[test]
    fn empty_table() {
        let t = build(&[], DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(t.lookup(12345), None);
    }

    #[test]
    fn every_slot_filled_and_weights_honoured() {
        let mut b = backends(4);
        b[0].weight = 4;
        let t = build(&b, 65_537).unwrap();
        let c = t.slot_counts();
        assert_eq!(c.iter().sum::<usize>(), 65_537);
        let heavy = c[t.backends().iter().position(|x| x.weight == 4).unwrap()];
        // 4 of 7 weight units.
        let want = 65_537.0 * 4.0 / 7.0;
        assert!((heavy as f64 - want).abs() / want < 0.02, "heavy backend got {heavy}, want ≈{want}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Each backend's share is within 5 % (relative) of its weight share when M ≥ 100·N.
        #[test]
        fn balance(n in 2usize..60, weights in proptest::collection::vec(1u32..8, 60)) {
            let mut b = backends(n);
            for (x, w) in b.iter_mut().zip(weights.iter()) { x.weight = *w; }
            let m = 65_537;
            let t = build(&b, m).unwrap();
            let total: u32 = t.backends().iter().map(|x| x.weight).sum();
            for (x, got) in t.backends().iter().zip(t.slot_counts()) {
                let want = f64::from(m) * f64::from(x.weight) / f64::from(total);
                prop_assert!((got as f64 - want).abs() / want < 0.05, "weight {} got {} want {}", x.weight, got, want);
            }
        }

        /// Removing one of N backends moves close to 1/N of the slots (the removed backend's own, plus a little).
        #[test]
        fn minimal_disruption(n in 5usize..80, victim in 0usize..80) {
            let b = backends(n);
            let m = 65_537;
            let before = build(&b, m).unwrap();
            let mut less = b.clone();
            less.remove(victim % n);
            let after = build(&less, m).unwrap();
            let moved = after.moved_from(&before) as f64 / f64::from(m);
            let ideal = 1.0 / n as f64;
            prop_assert!(moved >= ideal * 0.9 && moved <= ideal * 1.6, "moved {moved:.4}, ideal {ideal:.4}");
        }

        /// The table does not depend on the order backends are given in.
        #[test]
        fn order_independent(n in 1usize..50, seed in any::<u64>()) {
            let b = backends(n);
            let mut shuffled = b.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(build(&b, 4099).unwrap(), build(&shuffled, 4099).unwrap());
        }
    }
}
