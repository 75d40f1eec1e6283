//! Per-worker flow table of fixed capacity, allocated once (on huge pages when available, see [`crate::mem`]).
//!
//! Layout: set-associative. A key's 64-bit hash picks a bucket (multiply-shift range reduction) and a 16-bit
//! signature; a bucket holds [`WAYS`] signatures in its first 16 bytes followed by the entries, so a lookup reads the
//! signature line and then only the entry whose signature matches. Nothing is ever moved or rehashed, so an entry's
//! slot index is stable while it lives (reverse NAT entries point at their forward entry by slot).
//!
//! Time is a `u32` tick of milliseconds since the worker started, compared with wrapping arithmetic; the worker's
//! incremental [`FlowTable::sweep`] visits every bucket far more often than the 24-day wrap, and timeouts are
//! limited to [`MAX_TIMEOUT_MS`].
//!
//! Insertion takes, in order: a free slot, an expired slot, then — only for evictable states as the caller decides
//! (half-open and closing TCP) — the one expiring soonest. Live established flows are never evicted for new ones: a
//! SYN flood that fills the table costs new flows their tracking (they are still forwarded by Maglev), not the old
//! flows their backend. Every outcome is counted in [`TableStats`].

use crate::mem::{Backing, HugeArray};

/// Entries per bucket.
pub const WAYS: usize = 8;
/// Longest timeout the tick arithmetic supports safely (7 days).
pub const MAX_TIMEOUT_MS: u32 = 7 * 24 * 3600 * 1000;

/// A flow-table key: fixed size, comparable, hashable with the stable hash.
pub trait FlowKey: Copy + Eq + std::fmt::Debug {
    /// The all-zero key used for empty slots.
    const EMPTY: Self;
    /// Stable 64-bit hash of the key.
    fn hash(&self) -> u64;
}

/// One table entry. `value`, `aux`, `state` and `flags` are the caller's; `state == 0` means free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Entry<K> {
    /// The key.
    pub key: K,
    /// Tick at which the entry expires.
    pub expires: u32,
    /// Caller data (backend id, or the forward entry's slot for a reverse NAT entry).
    pub value: u32,
    /// Caller data (full-NAT source port).
    pub aux: u16,
    /// Caller state; 0 is reserved for free slots.
    pub state: u8,
    /// Caller flags.
    pub flags: u8,
}

impl<K: FlowKey> Entry<K> {
    const FREE: Self = Entry { key: K::EMPTY, expires: 0, value: 0, aux: 0, state: 0, flags: 0 };
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket<K> {
    sig: [u16; WAYS],
    entries: [Entry<K>; WAYS],
}

/// Counters of one table. Plain integers: the table belongs to one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing live.
    pub misses: u64,
    /// Entries created.
    pub inserts: u64,
    /// Entries found expired and reclaimed (by lookup, insert or sweep).
    pub expired: u64,
    /// Live evictable entries (half-open, closing) evicted to make room.
    pub evicted: u64,
    /// Inserts refused because the bucket was full of live, protected entries.
    pub insert_failed: u64,
    /// Entries removed on purpose.
    pub removed: u64,
    /// Live entries now (expired-but-not-yet-swept entries count until reclaimed).
    pub occupied: u64,
}

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The bucket holds only live protected entries.
    BucketFull,
}

/// Result of [`FlowTable::lookup`].
#[derive(Debug)]
pub enum Lookup<'a, K> {
    /// A live entry and its slot.
    Hit(u32, &'a mut Entry<K>),
    /// Nothing live; the matching entry if it had just expired (it has been reclaimed).
    Miss(Option<Entry<K>>),
}

/// A fixed-capacity flow table.
pub struct FlowTable<K: FlowKey> {
    buckets: HugeArray<Bucket<K>>,
    nbuckets: u64,
    stats: TableStats,
    sweep_at: usize,
}

impl<K: FlowKey> std::fmt::Debug for FlowTable<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable").field("capacity", &self.capacity()).field("stats", &self.stats).finish()
    }
}

#[inline(always)]
fn live(expires: u32, now: u32) -> bool {
    (expires.wrapping_sub(now) as i32) > 0
}

#[inline(always)]
fn sig_of(h: u64) -> u16 {
    (h >> 48) as u16 | 1
}

impl<K: FlowKey> FlowTable<K> {
    /// A table able to hold about `flows` entries (rounded up to whole buckets, plus 1/8 headroom so that a full
    /// table is not limited by its fullest bucket).
    ///
    /// # Panics
    /// When memory cannot be had (start-up only).
    pub fn new(flows: usize) -> Self {
        let want = flows.max(WAYS) + flows / 8;
        let nbuckets = want.div_ceil(WAYS);
        let empty = Bucket { sig: [0; WAYS], entries: [Entry::FREE; WAYS] };
        Self {
            buckets: HugeArray::new(nbuckets, empty),
            nbuckets: nbuckets as u64,
            stats: TableStats::default(),
            sweep_at: 0,
        }
    }

    /// Slots in the table.
    pub fn capacity(&self) -> usize {
        self.nbuckets as usize * WAYS
    }

    /// Bytes of table memory per slot (entry plus its share of the signature line and padding).
    pub fn bytes_per_slot() -> usize {
        std::mem::size_of::<Bucket<K>>() / WAYS
    }

    /// Total bytes allocated.
    pub fn bytes(&self) -> usize {
        self.buckets.bytes()
    }

    /// What memory backs the table.
    pub fn backing(&self) -> Backing {
        self.buckets.backing()
    }

    /// Counters.
    pub fn stats(&self) -> &TableStats {
        &self.stats
    }

    #[inline(always)]
    fn bucket_of(&self, h: u64) -> usize {
        ((u128::from(h) * u128::from(self.nbuckets)) >> 64) as usize
    }

    /// Find a live entry. `h` must be `key.hash()` (passed in so a miss-then-insert hashes once).
    /// An expired match is reclaimed and returned in [`Lookup::Miss`] so the caller can account for it.
    #[inline]
    pub fn lookup(&mut self, key: &K, h: u64, now: u32) -> Lookup<'_, K> {
        let bi = self.bucket_of(h);
        let sig = sig_of(h);
        let b = &mut self.buckets.as_mut_slice()[bi];
        let mut expired = None;
        for w in 0..WAYS {
            if b.sig[w] == sig && b.entries[w].key == *key {
                if live(b.entries[w].expires, now) {
                    self.stats.hits += 1;
                    return Lookup::Hit((bi * WAYS + w) as u32, &mut b.entries[w]);
                }
                expired = Some(b.entries[w]);
                b.sig[w] = 0;
                b.entries[w] = Entry::FREE;
                self.stats.expired += 1;
                self.stats.occupied -= 1;
                break;
            }
        }
        self.stats.misses += 1;
        Lookup::Miss(expired)
    }

    /// Insert a new entry for `key` (the caller has just missed on it). `evictable(state)` says which live states
    /// may be evicted to make room. Returns the slot and the entry displaced (expired or evicted), if any.
    ///
    /// # Errors
    /// [`InsertError::BucketFull`] when every slot is live and protected.
    #[inline]
    pub fn insert(
        &mut self,
        key: K,
        h: u64,
        now: u32,
        mut e: Entry<K>,
        evictable: impl Fn(u8) -> bool,
    ) -> Result<(u32, Option<Entry<K>>), InsertError> {
        debug_assert!(e.state != 0);
        e.key = key;
        let bi = self.bucket_of(h);
        let b = &mut self.buckets.as_mut_slice()[bi];
        let mut victim: Option<usize> = None;
        let mut victim_expires = 0u32;
        let mut reclaimed_expired = false;
        for w in 0..WAYS {
            if b.sig[w] == 0 {
                victim = Some(w);
                reclaimed_expired = false;
                break;
            }
            let x = &b.entries[w];
            if !live(x.expires, now) {
                if !reclaimed_expired {
                    victim = Some(w);
                    reclaimed_expired = true;
                }
            } else if !reclaimed_expired
                && evictable(x.state)
                && (victim.is_none() || (x.expires.wrapping_sub(victim_expires) as i32) < 0)
            {
                victim = Some(w);
                victim_expires = x.expires;
            }
        }
        let Some(w) = victim else {
            self.stats.insert_failed += 1;
            return Err(InsertError::BucketFull);
        };
        let displaced = if b.sig[w] == 0 {
            self.stats.occupied += 1;
            None
        } else {
            if reclaimed_expired {
                self.stats.expired += 1;
            } else {
                self.stats.evicted += 1;
            }
            Some(b.entries[w])
        };
        b.sig[w] = sig_of(h);
        b.entries[w] = e;
        self.stats.inserts += 1;
        Ok(((bi * WAYS + w) as u32, displaced))
    }

    /// The entry in `slot` if it is occupied (live or not).
    #[inline]
    pub fn slot_mut(&mut self, slot: u32) -> Option<&mut Entry<K>> {
        let (bi, w) = (slot as usize / WAYS, slot as usize % WAYS);
        let b = self.buckets.as_mut_slice().get_mut(bi)?;
        if b.sig[w] == 0 {
            None
        } else {
            Some(&mut b.entries[w])
        }
    }

    /// Free `slot`, returning what it held.
    pub fn remove_slot(&mut self, slot: u32) -> Option<Entry<K>> {
        let (bi, w) = (slot as usize / WAYS, slot as usize % WAYS);
        if let Some(b) = self.buckets.as_mut_slice().get_mut(bi) {
            if b.sig[w] != 0 {
                let old = b.entries[w];
                b.sig[w] = 0;
                b.entries[w] = Entry::FREE;
                self.stats.removed += 1;
                self.stats.occupied -= 1;
                return Some(old);
            }
        }
        None
    }

    /// Visit the next `nbuckets` buckets (round robin), reclaiming expired entries and reporting each one reclaimed.
    pub fn sweep(&mut self, nbuckets: usize, now: u32, mut on_expire: impl FnMut(&Entry<K>)) {
        let total = self.nbuckets as usize;
        for _ in 0..nbuckets.min(total) {
            let bi = self.sweep_at;
            self.sweep_at = if bi + 1 == total { 0 } else { bi + 1 };
            let b = &mut self.buckets.as_mut_slice()[bi];
            for w in 0..WAYS {
                if b.sig[w] != 0 && !live(b.entries[w].expires, now) {
                    on_expire(&b.entries[w]);
                    b.sig[w] = 0;
                    b.entries[w] = Entry::FREE;
                    self.stats.expired += 1;
                    self.stats.occupied -= 1;
                }
            }
        }
    }

    /// Visit every occupied entry (live at `now`), with its slot. For queries and tests, not the hot path.
    pub fn for_each_live(&self, now: u32, mut f: impl FnMut(u32, &Entry<K>)) {
        for (bi, b) in self.buckets.as_slice().iter().enumerate() {
            for w in 0..WAYS {
                if b.sig[w] != 0 && live(b.entries[w].expires, now) {
                    f((bi * WAYS + w) as u32, &b.entries[w]);
                }
            }
        }
    }

    /// Read-only lookup without touching counters or reclaiming (for "is this flow tracked?" queries).
    pub fn peek(&self, key: &K, now: u32) -> Option<&Entry<K>> {
        let h = key.hash();
        let b = &self.buckets.as_slice()[self.bucket_of(h)];
        let sig = sig_of(h);
        (0..WAYS)
            .map(|w| (b.sig[w], &b.entries[w]))
            .find(|(s, e)| *s == sig && e.key == *key && live(e.expires, now))
            .map(|(_, e)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct K(u64);
    impl FlowKey for K {
        const EMPTY: Self = K(0);
        fn hash(&self) -> u64 {
            crate::lb::hash::fmix64(self.0 ^ 0x1234_5678)
        }
    }

    const SYN: u8 = 1;
    const EST: u8 = 2;
    fn e(state: u8, expires: u32, value: u32) -> Entry<K> {
        Entry { key: K::EMPTY, expires, value, aux: 0, state, flags: 0 }
    }
    fn half_open(s: u8) -> bool {
        s == SYN
    }

    #[test]
    fn insert_lookup_expire() {
        let mut t = FlowTable::<K>::new(1000);
        let k = K(42);
        assert!(matches!(t.lookup(&k, k.hash(), 0), Lookup::Miss(None)));
        let (slot, displaced) = t.insert(k, k.hash(), 0, e(EST, 100, 7), half_open).unwrap();
        assert!(displaced.is_none());
        let Lookup::Hit(s2, got) = t.lookup(&k, k.hash(), 50) else { panic!("miss") };
        assert_eq!((s2, got.value), (slot, 7));
        let Lookup::Miss(Some(old)) = t.lookup(&k, k.hash(), 100) else { panic!("expires exactly at its tick") };
        assert_eq!(old.value, 7);
        let s = t.stats();
        assert_eq!((s.hits, s.misses, s.inserts, s.expired, s.occupied), (1, 2, 1, 1, 0));
    }

    #[test]
    fn wraparound_ticks() {
        let mut t = FlowTable::<K>::new(64);
        let k = K(1);
        let now = u32::MAX - 10;
        t.insert(k, k.hash(), now, e(EST, now.wrapping_add(100), 1), half_open).unwrap();
        assert!(matches!(t.lookup(&k, k.hash(), 50), Lookup::Hit(..)), "still live across the wrap");
        assert!(matches!(t.lookup(&k, k.hash(), 95), Lookup::Miss(Some(_))));
    }

    #[test]
    fn layout_is_compact() {
        assert_eq!(std::mem::size_of::<Bucket<K>>() % 64, 0);
    }

    /// Fill one bucket with established flows, then flood SYNs into it: none of the established flows is evicted,
    /// the SYNs evict each other, and the failures are counted.
    #[test]
    fn syn_flood_does_not_evict_established() {
        let mut t = FlowTable::<K>::new(WAYS - 1); // a single bucket
        assert_eq!(t.capacity(), WAYS);
        let mut est = vec![];
        let mut i = 1u64;
        while est.len() < t.capacity() - 2 {
            let k = K(i);
            t.insert(k, k.hash(), 0, e(EST, 1_000_000, i as u32), half_open).unwrap();
            est.push(k);
            i += 1;
        }
        let mut failed = 0;
        for j in 0..10_000u64 {
            let k = K(1 << 40 | j);
            if t.insert(k, k.hash(), 10, e(SYN, 5_000, 0), half_open).is_err() {
                failed += 1;
            }
        }
        for k in &est {
            assert!(matches!(t.lookup(k, k.hash(), 20), Lookup::Hit(..)), "established flow {k:?} was evicted");
        }
        assert!(failed > 0 || t.stats().evicted > 0);
        assert_eq!(t.stats().insert_failed, failed);
        assert!(t.stats().occupied as usize <= t.capacity());
    }

    #[test]
    fn expired_slots_are_reused_before_evicting() {
        let mut t = FlowTable::<K>::new(8);
        for i in 1..=(t.capacity() as u64) {
            let k = K(i);
            let _ = t.insert(k, k.hash(), 0, e(SYN, 10 + i as u32, 0), half_open);
        }
        let before = t.stats().evicted;
        let k = K(999);
        t.insert(k, k.hash(), 12, e(SYN, 100, 0), half_open).unwrap();
        let s = t.stats();
        assert_eq!(s.evicted, before, "an expired slot was available");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Against a model: an entry is found exactly while now < expires (unless evicted/failed to insert), and the
        /// occupancy counter equals the number of occupied slots.
        #[test]
        fn expiry_matches_model(ops in proptest::collection::vec((1u64..200, 1u32..50, 0u32..5), 1..300)) {
            let mut t = FlowTable::<K>::new(4096);
            let mut model = std::collections::HashMap::new();
            let mut now = 0u32;
            for (key, ttl, step) in ops {
                now += step;
                let k = K(key);
                let found = match t.lookup(&k, k.hash(), now) {
                    Lookup::Hit(_, e) => Some(e.value),
                    Lookup::Miss(_) => None,
                };
                let want = model.get(&key).filter(|(exp, _)| now < *exp).map(|(_, v)| *v);
                prop_assert_eq!(found, want);
                if found.is_none() {
                    t.insert(k, k.hash(), now, e(EST, now + ttl, now), half_open).unwrap();
                    model.insert(key, (now + ttl, now));
                }
            }
            let mut n = 0;
            t.for_each_live(0, |_, _| n += 1);
            t.sweep(usize::MAX, now + 1000, |_| {});
            prop_assert_eq!(t.stats().occupied, 0);
        }
    }
}
