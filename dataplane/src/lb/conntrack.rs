//! Per-worker flow table of fixed capacity, allocated once (on huge pages when available, see [`crate::mem`]),
//! with an optional reverse index for NAT replies.
//!
//! **Forward table.** Set-associative with two choices. A key's 64-bit hash picks two candidate buckets
//! (multiply-shift range reduction of the hash and of a remix of it) and a 16-bit signature. Each bucket has one
//! 64-byte *meta* line — the [`WAYS`] slots' signatures, expiry ticks, states and flags — and the slots' keys and
//! values apart. A lookup reads the meta line (signature and expiry) and then only the slot whose signature matches; an
//! insert chooses its victim from the two meta lines alone; the sweep reads meta lines only. Insertion takes a free
//! slot in the emptier of the two buckets (power of two choices); when both are full, an expired slot, then the
//! evictable slot that expires soonest, then a depth-1 cuckoo move (one resident moves to its own other bucket). While
//! the table holds fewer entries than it was made for, the move comes before the eviction. Measured on 1 M random keys
//! the first overflow comes at 91 % of capacity (test `nominal_size_fits`), so a table made for N flows (capacity
//! 1.125 N) holds N, evictable ones included (test `holds_its_nominal_size_of_evictable_flows_then_evicts`).
//!
//! **Reverse index.** A reply (backend to client, or to the full-NAT source) is found through an index of 8-byte
//! slots — a 32-bit fingerprint of the reply 5-tuple's hash and the forward slot — 8 to a 64-byte bucket, two
//! choices again, the second derived from the fingerprint (partial-key cuckoo hashing) so fingerprints can move.
//! The caller verifies a candidate against the forward entry (the index stores no key). The forward slot records its
//! index position, so whatever frees an entry (expiry, eviction, removal, sweep) unlinks it, and a cuckoo move of
//! either side rewrites the link: the only holder of a slot number across packets is the index, and it stays right.
//!
//! **Shared addresses.** An IPv6 key's destination is a VIP, one of few that many flows share: a slot names it by a
//! 16-bit number in the table's list of them ([`FlowKey::shared`]), so an IPv6 slot stores 24 bytes of key instead
//! of 38. A lookup finds the number first (a destination without one is in no slot); an insert takes one, counted
//! per slot; entries come back with their whole key. At most [`FlowTable::shared_capacity`] destinations are named at
//! once; a new flow to one more is refused and counted.
//!
//! Time is a `u32` tick of milliseconds since the worker started, compared with wrapping arithmetic; the worker's
//! incremental [`FlowTable::sweep`] visits every bucket far more often than the 24-day wrap, and timeouts are
//! limited to [`MAX_TIMEOUT_MS`].
//!
//! Live established flows are never evicted for new ones: a SYN flood that fills the table costs new flows their
//! tracking (they are still forwarded by Maglev), not the old flows their backend. Every outcome is counted in
//! [`TableStats`]. [`FlowTable::prefetch_sigs`] and [`FlowTable::prefetch_entries`] let a burst issue its cache
//! misses together before processing.

use crate::mem::{Backing, HugeArray};

/// Slots per bucket.
pub const WAYS: usize = 8;

/// Every slot of a bucket, as the mask [`FlowTable::insert`]'s `evictable` returns: tables whose entries may all be
/// evicted (fragments, affinity).
pub const EVERY_SLOT: u32 = (1 << WAYS) - 1;
/// Longest timeout the tick arithmetic supports safely (7 days).
pub const MAX_TIMEOUT_MS: u32 = 7 * 24 * 3600 * 1000;
const NO_REV: u32 = u32::MAX;
/// No slot: what [`Ahead::Miss`] holds when no entry will be displaced (or none was looked for).
pub const NO_SLOT: u32 = u32::MAX;

/// What stage 2 of a forward lookup found in the meta lines ([`FlowTable::prefetch_entries_in`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ahead {
    /// A signature matches: its entries are prefetched. The first matching slot (the first bucket's before the
    /// second's), where the key most likely is ([`FlowTable::live_at`]), or [`NO_SLOT`].
    Match(u32),
    /// None does, the lookup will miss: the slot a new flow's insert is expected to displace, or [`NO_SLOT`].
    Miss(u32),
}

/// A flow-table key: fixed size, comparable, hashable with the stable hash.
pub trait FlowKey: Copy + Eq + std::fmt::Debug {
    /// The all-zero key used for empty slots.
    const EMPTY: Self;
    /// Stable 64-bit hash of the key.
    fn hash(&self) -> u64;
    /// The key as a slot stores it: the key itself, or (see [`FlowKey::shared`]) the key with its shared address
    /// replaced by its number in the table's list of shared addresses.
    type Stored: Copy + Eq + std::fmt::Debug;
    /// The stored form of a free slot.
    const STORED_EMPTY: Self::Stored;
    /// The 16-byte address that many keys share (an IPv6 flow's VIP), kept once in the table and named in the slot
    /// by a 16-bit number; `None` for a key stored whole.
    fn shared(&self) -> Option<&[u8; 16]>;
    /// The stored form, `id` being the shared address's number (ignored for a key stored whole).
    fn store(&self, id: u16) -> Self::Stored;
    /// The shared address's number in a stored key.
    fn stored_id(s: &Self::Stored) -> Option<u16>;
    /// The key back from its stored form and the shared address.
    fn load(s: &Self::Stored, addr: &[u8; 16]) -> Self;
}

/// The stored-form items of [`FlowKey`] for a key a slot stores whole (no shared address).
#[macro_export]
macro_rules! stored_whole {
    () => {
        type Stored = Self;
        const STORED_EMPTY: Self = Self::EMPTY;
        #[inline(always)]
        fn shared(&self) -> Option<&[u8; 16]> {
            None
        }
        #[inline(always)]
        fn store(&self, _id: u16) -> Self {
            *self
        }
        #[inline(always)]
        fn stored_id(_s: &Self) -> Option<u16> {
            None
        }
        #[inline(always)]
        fn load(s: &Self, _addr: &[u8; 16]) -> Self {
            *s
        }
    };
}

/// The keys' shared addresses of one table, each with the number of slots naming it: fixed arrays allocated with the
/// table (none for keys stored whole), an open-addressing index (linear probing) at most half full, and no allocation
/// afterwards. An address the last slot stops naming leaves the index at once (backward-shift deletion) and its number
/// goes back to the free ones: every operation costs a probe sequence, never a pass over the whole list.
struct Addresses {
    addrs: Vec<[u8; 16]>,
    refs: Vec<u32>,
    /// Number + 1 of the address at each position, 0 for none.
    index: Vec<u16>,
    shift: u32,
    /// Numbers handed out so far (below it: in `addrs`), and numbers free for reuse.
    used: usize,
    /// Entries in the index.
    placed: usize,
    free: Vec<u16>,
}

/// Most shared addresses a table names at once (see [`FlowTable::shared_capacity`]).
pub const MAX_SHARED: usize = 65_535;

impl Addresses {
    fn new(cap: usize) -> Self {
        let cap = cap.min(MAX_SHARED);
        let size = if cap == 0 { 0 } else { (2 * cap).next_power_of_two() };
        Addresses {
            addrs: vec![[0; 16]; cap],
            refs: vec![0; cap],
            index: vec![0; size],
            shift: 64 - size.max(1).trailing_zeros(),
            used: 0,
            placed: 0,
            free: Vec::with_capacity(cap),
        }
    }

    fn bytes(&self) -> usize {
        self.addrs.len() * 16 + self.refs.len() * 4 + self.index.len() * 2 + self.free.capacity() * 2
    }

    #[inline(always)]
    fn home(&self, a: &[u8; 16]) -> usize {
        let x = u128::from_ne_bytes(*a);
        let f = (x as u64) ^ ((x >> 64) as u64).rotate_left(29);
        (f.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    /// The number of `a`, if some slot names it.
    #[inline(always)]
    fn find(&self, a: &[u8; 16]) -> Option<u16> {
        let mask = self.index.len().checked_sub(1)?;
        let mut i = self.home(a);
        loop {
            let n = *self.index.get(i)?;
            if n == 0 {
                return None;
            }
            if self.addrs.get(usize::from(n - 1)) == Some(a) {
                return Some(n - 1);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline(always)]
    fn addr(&self, id: u16) -> &[u8; 16] {
        self.addrs.get(usize::from(id)).unwrap_or(&[0; 16])
    }

    /// Name `a` once more: its number, a new one if needed; `None` when every number is named.
    fn acquire(&mut self, a: &[u8; 16]) -> Option<u16> {
        let id = match self.find(a) {
            Some(id) => id,
            None => {
                let id = match self.free.pop() {
                    Some(id) => id,
                    None if self.used < self.addrs.len() => {
                        self.used += 1;
                        (self.used - 1) as u16
                    }
                    None => return None,
                };
                self.addrs[usize::from(id)] = *a;
                if !self.place(id) {
                    self.free.push(id);
                    return None;
                }
                id
            }
        };
        self.refs[usize::from(id)] += 1;
        Some(id)
    }

    /// Put `id` in the index; `false` (never, while every number is placed once) when the index would be more
    /// than half full, so that every probe meets an empty position.
    fn place(&mut self, id: u16) -> bool {
        if 2 * (self.placed + 1) > self.index.len() {
            return false;
        }
        let mask = self.index.len() - 1;
        let mut i = self.home(&self.addrs[usize::from(id)]);
        while self.index[i] != 0 {
            i = (i + 1) & mask;
        }
        self.index[i] = id + 1;
        self.placed += 1;
        true
    }

    /// One slot less names `id`; named by none, it leaves the index and its number is free.
    #[inline]
    fn release(&mut self, id: u16) {
        let Some(r) = self.refs.get_mut(usize::from(id)) else { return };
        if *r == 0 {
            return;
        }
        *r -= 1;
        if *r == 0 {
            self.unplace(id);
            self.free.push(id);
        }
    }

    /// Take `id` out of the index, moving back the entries after it that its place kept from their home.
    fn unplace(&mut self, id: u16) {
        let mask = self.index.len() - 1;
        let mut i = self.home(&self.addrs[usize::from(id)]);
        while self.index[i] != id + 1 {
            if self.index[i] == 0 {
                return;
            }
            i = (i + 1) & mask;
        }
        self.index[i] = 0;
        self.placed -= 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let n = self.index[j];
            if n == 0 {
                return;
            }
            // The entry at j may fill the hole at i unless its home lies cyclically in (i, j].
            let h = self.home(&self.addrs[usize::from(n - 1)]);
            let stays = if i <= j { i < h && h <= j } else { i < h || h <= j };
            if !stays {
                self.index[i] = n;
                self.index[j] = 0;
                i = j;
            }
        }
    }
}

/// One entry, as the caller sees it (a copy). `value`, `aux`, `state` and `flags` are the caller's; `state` 0 is
/// reserved for free slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<K> {
    /// The key.
    pub key: K,
    /// Tick at which the entry expires.
    pub expires: u32,
    /// Caller data (backend id).
    pub value: u32,
    /// Caller data (full-NAT source port).
    pub aux: u16,
    /// Caller state, not 0.
    pub state: u8,
    /// Caller flags.
    pub flags: u8,
}

impl<K: FlowKey> Entry<K> {
    /// A new entry with the caller's fields (the key is set by [`FlowTable::insert`]).
    pub fn new(expires: u32, value: u32, aux: u16, state: u8, flags: u8) -> Self {
        Entry { key: K::EMPTY, expires, value, aux, state, flags }
    }
}

/// What a slot stores besides its meta: the key, the caller's value and aux, and the reverse-index link. In this
/// order a 14-byte IPv4 key makes a 24-byte slot and a 38-byte IPv6 key a 48-byte one, without padding.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Slot<S> {
    key: S,
    aux: u16,
    value: u32,
    rev: u32,
}

#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Bucket<S> {
    slots: [Slot<S>; WAYS],
}

/// Signatures (0: free), expiry ticks, states and the caller's flags of one bucket's slots: one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Meta {
    sig: [u16; WAYS],
    expires: [u32; WAYS],
    state: [u8; WAYS],
    flags: [u8; WAYS],
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct RevBucket {
    fp: [u32; WAYS],
    slot: [u32; WAYS],
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
    /// Inserts refused because both buckets held only live, protected entries.
    pub insert_failed: u64,
    /// Entries removed on purpose.
    pub removed: u64,
    /// Live entries now (expired-but-not-yet-swept entries count until reclaimed).
    pub occupied: u64,
    /// Reverse-index links refused because both index buckets were full.
    pub reverse_failed: u64,
    /// Entries or index fingerprints moved to their other bucket to make room.
    pub moved: u64,
    /// Inserts refused because the table already names all the shared addresses (IPv6 VIPs) it can.
    pub addresses_full: u64,
}

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The buckets hold only live protected entries.
    BucketFull,
    /// The table already names all the shared addresses it can and this key's is another.
    AddressesFull,
}

/// Result of [`FlowTable::lookup`].
#[derive(Debug, Clone, Copy)]
pub enum Lookup<K> {
    /// A live entry (a copy) and its slot; change it with [`FlowTable::touch`] or [`FlowTable::update`].
    Hit(u32, Entry<K>),
    /// Nothing live; the matching entry if it had just expired (it has been reclaimed).
    Miss(Option<Entry<K>>),
}

/// Result of [`FlowTable::probe_in`].
#[derive(Debug, Clone, Copy)]
pub enum Probe<K> {
    /// A live entry (a copy) and its slot.
    Live(u32, Entry<K>),
    /// The key's entry has expired (or the buckets given are not the table's): [`FlowTable::lookup`] decides.
    Expired,
    /// No entry for the key: a lookup would miss and reclaim nothing.
    Absent,
}

/// A fixed-capacity flow table.
pub struct FlowTable<K: FlowKey> {
    meta: HugeArray<Meta>,
    buckets: HugeArray<Bucket<K::Stored>>,
    addrs: Addresses,
    nbuckets: u64,
    /// The flows the table was made for: below, an insert moves an entry before it evicts one.
    nominal: u64,
    rev: Option<HugeArray<RevBucket>>,
    nrev: u64,
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

/// A slot's signature: the hash's low 16 bits (0 marks a free slot). The buckets come from its high bits (`range`),
/// so the signature must not: from bits 48 to 63, every entry whose first bucket is this one shared it once a table
/// had 2^16 buckets (half a million flows), and a lookup compared the full keys of about half a bucket.
#[inline(always)]
fn sig_of(h: u64) -> u16 {
    h as u16 | 1
}

/// The first way holding `key` among those whose signature is `sig`.
#[inline(always)]
fn first_match<S: PartialEq>(sigs: &[u16; WAYS], slots: &[Slot<S>; WAYS], sig: u16, key: &S) -> Option<usize> {
    let mut hits = crate::mem::eq_mask_u16x8(sigs, sig);
    while hits != 0 {
        let w = hits.trailing_zeros() as usize % WAYS;
        if slots[w].key == *key {
            return Some(w);
        }
        hits &= hits - 1;
    }
    None
}

#[inline(always)]
fn fp_of(h: u64) -> u32 {
    (h >> 16) as u32 | 1
}

#[inline(always)]
fn range(h: u64, n: u64) -> usize {
    ((u128::from(h) * u128::from(n)) >> 64) as usize
}

#[inline(always)]
fn remix(h: u64) -> u64 {
    h.rotate_left(32).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[inline(always)]
fn split(slot: u32) -> (usize, usize) {
    (slot as usize / WAYS, slot as usize % WAYS)
}

impl<K: FlowKey> FlowTable<K> {
    /// A table able to hold `flows` entries (rounded up to whole buckets, plus 1/8 headroom: two choices and cuckoo
    /// moves fill to 91 % before the first overflow).
    ///
    /// # Panics
    /// When memory cannot be had (start-up only).
    pub fn new(flows: usize) -> Self {
        let want = flows.max(WAYS) + flows / 8;
        let nbuckets = want.div_ceil(WAYS);
        let free = Slot { key: K::STORED_EMPTY, aux: 0, value: 0, rev: NO_REV };
        // Destinations are VIPs, far fewer than flows: one number for every 8 slots, at least 256 (a small table: one
        // more than its slots, as an insert names its address before it evicts the entry whose place it takes), at
        // most MAX_SHARED.
        let slots = nbuckets * WAYS;
        let shared = if K::EMPTY.shared().is_some() { (slots / 8).max(256).min(slots + 1) } else { 0 };
        Self {
            meta: HugeArray::new(
                nbuckets,
                Meta { sig: [0; WAYS], expires: [0; WAYS], state: [0; WAYS], flags: [0; WAYS] },
            ),
            buckets: HugeArray::new(nbuckets, Bucket { slots: [free; WAYS] }),
            addrs: Addresses::new(shared),
            nbuckets: nbuckets as u64,
            nominal: flows as u64,
            rev: None,
            nrev: 0,
            stats: TableStats::default(),
            sweep_at: 0,
        }
    }

    /// The same, with a reverse index of 11/8 slots per table slot: a table filled to the last slot fills its index
    /// to 73 %, so it takes a link for every slot (test `index_outlasts_its_table`) and seldom needs a cuckoo move to
    /// do so. At 9/8 (91 % full) a fifth of the links into a full table moved a resident (40 529 of 200 000 new
    /// flows, `edgelb-perf --mode nat --flows 10000 --new` under callgrind; 1 030 at 11/8), each move reading a
    /// random index line and writing the moved entry's slot: new NAT flows ran 2.54 against 3.23 Mpps (median of
    /// five interleaved runs, `--flows 1000000 --new`). It costs 2.25 bytes a flow.
    pub fn with_reverse(flows: usize) -> Self {
        let t = Self::new(flows);
        let n = (t.nbuckets as usize * 11).div_ceil(8);
        t.with_index(n)
    }

    fn with_index(mut self, n: usize) -> Self {
        self.rev = Some(HugeArray::new(n, RevBucket { fp: [0; WAYS], slot: [0; WAYS] }));
        self.nrev = n as u64;
        self
    }

    /// Slots in the table.
    pub fn capacity(&self) -> usize {
        self.nbuckets as usize * WAYS
    }

    /// Shared addresses (IPv6 VIPs) the table names at once: one for every 8 slots, at least 256 (or one more than
    /// the slots), at most [`MAX_SHARED`]; 0 for keys stored whole. A new flow to one more is refused and counted in
    /// [`TableStats::addresses_full`].
    pub fn shared_capacity(&self) -> usize {
        self.addrs.addrs.len()
    }

    /// Bytes per slot: (meta line share + slot, reverse-index slot). The index has 11/8 slots per table slot.
    pub fn bytes_per_slot() -> (usize, usize) {
        (
            (std::mem::size_of::<Meta>() + std::mem::size_of::<Bucket<K::Stored>>()) / WAYS,
            std::mem::size_of::<RevBucket>() / WAYS,
        )
    }

    /// Total bytes allocated (index and shared addresses included).
    pub fn bytes(&self) -> usize {
        self.meta.bytes() + self.buckets.bytes() + self.rev.as_ref().map_or(0, |r| r.bytes()) + self.addrs.bytes()
    }

    /// Whether the table is too large to stay in a core's cache, so that prefetching what recording a new flow
    /// reads pays for computing it: above 1 MiB of buckets. New flows with that prefetch against without it
    /// (`edgelb-perf --mode nat --new`, AMD EPYC VM, 1 MiB of level-2 cache): 16 % slower at 10 000 flows (0.36 MiB),
    /// even at 30 000 (1.1 MiB), 20 % faster at 100 000, 39 % at 1 000 000.
    #[inline(always)]
    pub fn beyond_cache(&self) -> bool {
        self.nbuckets as usize * (std::mem::size_of::<Meta>() + std::mem::size_of::<Bucket<K::Stored>>()) > 1 << 20
    }

    /// The stored form of `key` for a lookup: `None` when its shared address is named by no slot (so no slot holds
    /// it).
    #[inline(always)]
    fn stored(&self, key: &K) -> Option<K::Stored> {
        match key.shared() {
            None => Some(key.store(0)),
            Some(a) => self.addrs.find(a).map(|id| key.store(id)),
        }
    }

    #[inline(always)]
    fn load(&self, s: &K::Stored) -> K {
        K::load(s, K::stored_id(s).map_or(&[0; 16], |id| self.addrs.addr(id)))
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
        range(h, self.nbuckets)
    }

    #[inline(always)]
    fn alt_bucket_of(&self, h: u64) -> usize {
        range(remix(h), self.nbuckets)
    }

    /// The first reverse-index bucket of reply hash `rh`, from bits the fingerprint does not use.
    #[inline(always)]
    fn rev_bucket(&self, rh: u64) -> usize {
        range(rh.rotate_right(16), self.nrev)
    }

    /// The other reverse-index bucket of a fingerprint in bucket `ri` (partial-key cuckoo hashing: computable from
    /// the index slot alone, so fingerprints can move without their key). `h(fp) - ri` modulo the bucket count is its
    /// own inverse, so any count works, not only powers of two.
    #[inline(always)]
    fn rev_alt(&self, ri: usize, fp: u32) -> usize {
        let h = range(crate::lb::hash::fmix64(u64::from(fp)), self.nrev);
        if h >= ri {
            h - ri
        } else {
            h + self.nrev as usize - ri
        }
    }

    #[inline(always)]
    fn entry_at(&self, bi: usize, w: usize) -> Entry<K> {
        let m = &self.meta.as_slice()[bi];
        let s = &self.buckets.as_slice()[bi].slots[w];
        Entry {
            key: self.load(&s.key),
            expires: m.expires[w],
            value: s.value,
            aux: s.aux,
            state: m.state[w],
            flags: m.flags[w],
        }
    }

    /// The two candidate buckets of hash `h` (equal when both choices fall on one): computed once a packet, in
    /// stage 1, and handed to [`FlowTable::prefetch_entries_in`] and [`FlowTable::find_live_in`].
    #[inline(always)]
    pub fn buckets_of(&self, h: u64) -> [usize; 2] {
        [self.bucket_of(h), self.alt_bucket_of(h)]
    }

    /// Stage 1 of a burst's prefetch for a forward lookup: both candidate meta lines of hash `h`.
    #[inline(always)]
    pub fn prefetch_sigs(&self, h: u64) {
        self.prefetch_sigs_in(self.buckets_of(h));
    }

    /// [`FlowTable::prefetch_sigs`] for the buckets [`FlowTable::buckets_of`] gave.
    #[inline(always)]
    pub fn prefetch_sigs_in(&self, b: [usize; 2]) {
        for bi in b {
            if let Some(m) = self.meta.as_slice().get(bi) {
                crate::mem::prefetch(m);
            }
        }
    }

    /// Stage 2 for a forward lookup: read the (now cached) meta lines and prefetch the slots whose signature
    /// matches.
    #[inline(always)]
    pub fn prefetch_entries(&self, h: u64) {
        let _ = self.prefetch_entries_in(h, self.buckets_of(h));
    }

    /// [`FlowTable::prefetch_entries`] for hash `h` in the buckets [`FlowTable::buckets_of`] gave for it.
    /// [`Ahead::Miss`] when no signature matches: the lookup will miss, and in a table beyond the cache the entry an
    /// insert would displace is prefetched instead (its slot in the answer, for [`FlowTable::prefetch_victim_link`]).
    #[inline(always)]
    pub fn prefetch_entries_in(&self, h: u64, b: [usize; 2]) -> Ahead {
        let sig = sig_of(h);
        let meta = self.meta.as_slice();
        let (Some(m1), Some(m2)) = (meta.get(b[0]), meta.get(b[1])) else { return Ahead::Match(NO_SLOT) };
        let hits = [crate::mem::eq_mask_u16x8(&m1.sig, sig), crate::mem::eq_mask_u16x8(&m2.sig, sig)];
        if hits[0] | hits[1] == 0 {
            let victim = if self.beyond_cache() { self.prefetch_victim(b, [m1, m2]) } else { NO_SLOT };
            return Ahead::Miss(victim);
        }
        let first = if hits[0] != 0 { (b[0], hits[0]) } else { (b[1], hits[1]) };
        let first = (first.0 * WAYS + first.1.trailing_zeros() as usize % WAYS) as u32;
        for (bi, mut hits) in b.into_iter().zip(hits) {
            let Some(b) = self.buckets.as_slice().get(bi) else { continue };
            while hits != 0 {
                let slot = &b.slots[hits.trailing_zeros() as usize % WAYS];
                hits &= hits - 1;
                crate::mem::prefetch(&slot.key);
                crate::mem::prefetch(&slot.rev);
            }
        }
        Ahead::Match(first)
    }

    /// A lookup that will miss in buckets `b1`, `b2` (meta lines `ma`, `mb`): where [`FlowTable::insert`] would put
    /// a new flow if both are full (the entry that expires soonest; insert's protection from eviction and its
    /// preference for the first expired slot aside), so that reading the entry it displaces does not wait for
    /// memory; that slot, or [`NO_SLOT`]. A free slot is only written: nothing to fetch.
    #[inline(never)]
    fn prefetch_victim(&self, [b1, b2]: [usize; 2], [ma, mb]: [&Meta; 2]) -> u32 {
        if crate::mem::eq_mask_u16x8(&ma.sig, 0) | crate::mem::eq_mask_u16x8(&mb.sig, 0) != 0 {
            return NO_SLOT;
        }
        // Live entries expire within MAX_TIMEOUT_MS (< 2^30) of now, as does this one: a reference 2^30 before it
        // orders them as now would.
        let r = ma.expires[0].wrapping_sub(1 << 30);
        let Some(at) = crate::mem::soonest_lane_u32x16(&ma.expires, &mb.expires, r, u32::MAX) else { return NO_SLOT };
        let bi = if at < WAYS { b1 } else { b2 };
        let Some(b) = self.buckets.as_slice().get(bi) else { return NO_SLOT };
        let slot = &b.slots[at % WAYS];
        crate::mem::prefetch(&slot.key);
        crate::mem::prefetch(&slot.rev);
        (bi * WAYS + at % WAYS) as u32
    }

    /// Between stage 2 and stage 3 of a new flow whose insert will displace the entry in `victim` (what
    /// [`FlowTable::prefetch_entries_in`] answered; [`NO_SLOT`] for none): that entry's reverse-index line, which the
    /// insert clears. Its slot was prefetched at stage 2, so reading its link should not wait for memory. Only a
    /// hint: a wrong slot costs a line.
    #[inline(always)]
    pub fn prefetch_victim_link(&self, victim: u32) {
        let (bi, w) = (victim as usize / WAYS, victim as usize % WAYS);
        let Some(b) = self.buckets.as_slice().get(bi) else { return };
        let pos = b.slots[w].rev;
        if pos == NO_REV {
            return;
        }
        if let Some(line) = self.rev.as_ref().and_then(|r| r.as_slice().get(pos as usize / WAYS)) {
            crate::mem::prefetch(line);
        }
    }

    /// Stage 1 for a reverse lookup: both reverse-index buckets of reply hash `rh`.
    #[inline(always)]
    pub fn prefetch_reverse(&self, rh: u64) {
        if let Some(r) = &self.rev {
            let ri = self.rev_bucket(rh);
            crate::mem::prefetch(&r.as_slice()[ri]);
            crate::mem::prefetch(&r.as_slice()[self.rev_alt(ri, fp_of(rh))]);
        }
    }

    /// Stage 2 for a reverse lookup: follow the (now cached) index to the candidate forward slots and prefetch their
    /// meta lines and slots.
    #[inline(always)]
    pub fn prefetch_reverse_entries(&self, rh: u64) {
        let Some(rev) = &self.rev else { return };
        let fp = fp_of(rh);
        let r1 = self.rev_bucket(rh);
        for ri in [r1, self.rev_alt(r1, fp)] {
            let r = &rev.as_slice()[ri];
            for (f, slot) in r.fp.iter().zip(r.slot.iter()) {
                if *f == fp {
                    let (bi, w) = split(*slot);
                    if let (Some(m), Some(b)) = (self.meta.as_slice().get(bi), self.buckets.as_slice().get(bi)) {
                        crate::mem::prefetch(m);
                        crate::mem::prefetch(&b.slots[w].key);
                        crate::mem::prefetch(&b.slots[w].rev);
                    }
                }
            }
        }
    }

    /// Remove the reverse-index slot at `pos`.
    #[inline]
    fn unlink(&mut self, pos: u32) {
        if pos == NO_REV {
            return;
        }
        if let Some(b) = self.rev.as_mut().and_then(|r| r.as_mut_slice().get_mut(pos as usize / WAYS)) {
            b.fp[pos as usize % WAYS] = 0;
        }
    }

    /// Free slot (bi, w), unlinking its reverse-index slot; returns what it held.
    #[inline]
    fn clear(&mut self, bi: usize, w: usize) -> Entry<K> {
        let old = self.entry_at(bi, w);
        let rev = self.buckets.as_slice()[bi].slots[w].rev;
        if let Some(id) = K::stored_id(&self.buckets.as_slice()[bi].slots[w].key) {
            self.addrs.release(id);
        }
        let m = &mut self.meta.as_mut_slice()[bi];
        m.sig[w] = 0;
        m.state[w] = 0;
        self.buckets.as_mut_slice()[bi].slots[w].rev = NO_REV;
        self.unlink(rev);
        old
    }

    /// Search one bucket; an expired match is reclaimed into `expired`.
    #[inline(always)]
    fn find_in(
        &mut self,
        bi: usize,
        key: &K::Stored,
        sig: u16,
        now: u32,
        expired: &mut Option<Entry<K>>,
    ) -> Option<usize> {
        let m = &self.meta.as_slice()[bi];
        let b = &self.buckets.as_slice()[bi];
        let w = first_match(&m.sig, &b.slots, sig, key)?;
        if live(m.expires[w], now) {
            return Some(w);
        }
        *expired = Some(self.clear(bi, w));
        self.stats.expired += 1;
        self.stats.occupied -= 1;
        None
    }

    /// Find a live entry. `h` must be `key.hash()` (passed in so a miss-then-insert hashes once).
    /// An expired match is reclaimed and returned in [`Lookup::Miss`] so the caller can account for it.
    #[inline]
    pub fn lookup(&mut self, key: &K, h: u64, now: u32) -> Lookup<K> {
        let sig = sig_of(h);
        let mut expired = None;
        let mut hit = None;
        if let Some(key) = self.stored(key) {
            let b1 = self.bucket_of(h);
            hit = self.find_in(b1, &key, sig, now, &mut expired).map(|w| (b1, w));
            if hit.is_none() && expired.is_none() {
                let b2 = self.alt_bucket_of(h);
                if b2 != b1 {
                    hit = self.find_in(b2, &key, sig, now, &mut expired).map(|w| (b2, w));
                }
            }
        }
        match hit {
            Some((bi, w)) => {
                self.stats.hits += 1;
                Lookup::Hit((bi * WAYS + w) as u32, self.entry_at(bi, w))
            }
            None => {
                self.stats.misses += 1;
                Lookup::Miss(expired)
            }
        }
    }

    /// A live entry for `key`, read only: nothing reclaimed, nothing counted. The fast path looks first and commits
    /// with [`FlowTable::count_hit`]; anything else (a miss, an expired match) goes to [`FlowTable::lookup`], which
    /// then counts it once. Probes as `lookup` does: an expired match in the first bucket ends the search.
    #[inline(always)]
    pub fn find_live(&self, key: &K, h: u64, now: u32) -> Option<(u32, Entry<K>)> {
        self.find_live_in(key, h, self.buckets_of(h), now)
    }

    /// [`FlowTable::find_live`] in the buckets [`FlowTable::buckets_of`] gave for `h`.
    #[inline(always)]
    pub fn find_live_in(&self, key: &K, h: u64, b: [usize; 2], now: u32) -> Option<(u32, Entry<K>)> {
        match self.probe_in(key, h, b, now) {
            Probe::Live(slot, e) => Some((slot, e)),
            Probe::Expired | Probe::Absent => None,
        }
    }

    /// The live entry for `key` if it is in `slot` (the slot [`Ahead::Match`] named), read only: then what
    /// [`FlowTable::find_live_in`] would answer, since a key is in one slot at most (every insert follows a miss, and a
    /// cuckoo move takes its entry along). `None` says nothing: the key may be elsewhere, or expired, so ask
    /// [`FlowTable::find_live_in`]. Any slot number is safe ([`NO_SLOT`], one out of range: `None`). `h` must be
    /// `key.hash()`.
    #[inline(always)]
    pub fn live_at(&self, key: &K, h: u64, slot: u32, now: u32) -> Option<(u32, Entry<K>)> {
        let (bi, w) = split(slot);
        let (m, b) = (self.meta.as_slice().get(bi)?, self.buckets.as_slice().get(bi)?);
        // A free slot's signature is 0, never a hash's (`sig_of` sets the low bit).
        if m.sig[w] != sig_of(h) || b.slots[w].key != self.stored(key)? || !live(m.expires[w], now) {
            return None;
        }
        Some((slot, self.entry_at(bi, w)))
    }

    /// What [`FlowTable::lookup`] would find for `key` in the buckets [`FlowTable::buckets_of`] gave for `h`, read
    /// only: nothing reclaimed, nothing counted. [`Probe::Absent`] is the miss that reclaims nothing, after which
    /// [`FlowTable::count_miss`] and [`FlowTable::insert`] do what `lookup` and `insert` would.
    #[inline(always)]
    pub fn probe_in(&self, key: &K, h: u64, [b1, b2]: [usize; 2], now: u32) -> Probe<K> {
        // A key that cannot be stored (its shared address has no number) is in no slot.
        let Some(key) = &self.stored(key) else { return Probe::Absent };
        let sig = sig_of(h);
        for bi in [b1, b2] {
            let (Some(m), Some(b)) = (self.meta.as_slice().get(bi), self.buckets.as_slice().get(bi)) else {
                return Probe::Expired;
            };
            if let Some(w) = first_match(&m.sig, &b.slots, sig, key) {
                if live(m.expires[w], now) {
                    return Probe::Live((bi * WAYS + w) as u32, self.entry_at(bi, w));
                }
                return Probe::Expired;
            }
            if b2 == b1 {
                break;
            }
        }
        Probe::Absent
    }

    /// Whether [`FlowTable::probe_in`] would answer [`Probe::Absent`]: when neither bucket holds the key's signature,
    /// the common case of a new flow, the meta lines alone answer.
    #[inline(always)]
    pub fn absent_in(&self, key: &K, h: u64, b: [usize; 2], now: u32) -> bool {
        let sig = sig_of(h);
        let meta = self.meta.as_slice();
        let (Some(m1), Some(m2)) = (meta.get(b[0]), meta.get(b[1])) else { return false };
        if crate::mem::eq_mask_u16x8(&m1.sig, sig) | crate::mem::eq_mask_u16x8(&m2.sig, sig) == 0 {
            return true;
        }
        matches!(self.probe_in(key, h, b, now), Probe::Absent)
    }

    /// Count a miss found by [`FlowTable::probe_in`] ([`Probe::Absent`]) and acted on.
    #[inline(always)]
    pub fn count_miss(&mut self) {
        self.stats.misses += 1;
    }

    /// Count a hit found by [`FlowTable::find_live`] and used.
    #[inline(always)]
    pub fn count_hit(&mut self) {
        self.stats.hits += 1;
    }

    /// The entry in `slot`, if occupied (live or not).
    #[inline]
    pub fn get(&self, slot: u32) -> Option<Entry<K>> {
        let (bi, w) = split(slot);
        (self.meta.as_slice().get(bi)?.sig[w] != 0).then(|| self.entry_at(bi, w))
    }

    /// Set the state and expiry of an occupied slot (the per-packet refresh: one meta-line write).
    #[inline]
    pub fn touch(&mut self, slot: u32, state: u8, expires: u32) {
        let (bi, w) = split(slot);
        if let Some(m) = self.meta.as_mut_slice().get_mut(bi) {
            if m.sig[w] != 0 && state != 0 {
                m.state[w] = state;
                m.expires[w] = expires;
            }
        }
    }

    /// Set the caller's value and aux of an occupied slot.
    #[inline]
    pub fn update(&mut self, slot: u32, value: u32, aux: u16) {
        let (bi, w) = split(slot);
        if self.meta.as_slice().get(bi).is_some_and(|m| m.sig[w] != 0) {
            let s = &mut self.buckets.as_mut_slice()[bi].slots[w];
            s.value = value;
            s.aux = aux;
        }
    }

    /// Insert a new entry for `key` (the caller has just missed on it). `evictable(states)` says which live entries of
    /// a bucket may be evicted to make room, as a mask of its slots (bit `w` for slot `w`) from their states. Returns
    /// the slot and the entry displaced (expired or evicted), if any.
    ///
    /// # Errors
    /// [`InsertError::BucketFull`] when every slot of both buckets is live and protected and no resident can move.
    #[inline]
    pub fn insert(
        &mut self,
        key: K,
        h: u64,
        now: u32,
        e: Entry<K>,
        evictable: impl Fn(&[u8; WAYS]) -> u32,
    ) -> Result<(u32, Option<Entry<K>>), InsertError> {
        self.insert_in(key, h, self.buckets_of(h), now, e, evictable)
    }

    /// [`FlowTable::insert`] in the buckets [`FlowTable::buckets_of`] gave for `h`.
    ///
    /// # Errors
    /// As [`FlowTable::insert`].
    #[inline]
    pub fn insert_in(
        &mut self,
        key: K,
        h: u64,
        buckets: [usize; 2],
        now: u32,
        e: Entry<K>,
        evictable: impl Fn(&[u8; WAYS]) -> u32,
    ) -> Result<(u32, Option<Entry<K>>), InsertError> {
        let mut out = None;
        let slot = self.insert_with(key, h, buckets, now, e, evictable, |d| out = Some(d))?;
        Ok((slot, out))
    }

    /// [`FlowTable::insert_in`] that hands the entry it displaces to `displaced` (called at most once) and returns the
    /// slot alone: the new-flow path's form. Its caller reads only the displaced entry's value, so the entry is not
    /// returned through memory (about 16 instructions a new flow).
    ///
    /// # Errors
    /// As [`FlowTable::insert`].
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn insert_with(
        &mut self,
        key: K,
        h: u64,
        [b1, b2]: [usize; 2],
        now: u32,
        e: Entry<K>,
        evictable: impl Fn(&[u8; WAYS]) -> u32,
        displaced: impl FnOnce(Entry<K>),
    ) -> Result<u32, InsertError> {
        debug_assert!(e.state != 0);
        if b1.max(b2) >= self.nbuckets as usize {
            // Not buckets of this table (a caller's bug): refused, as a table with no room refuses.
            self.stats.insert_failed += 1;
            return Err(InsertError::BucketFull);
        }
        // The destination's number, taken before the slot is chosen (and given back if none is).
        let held = match key.shared() {
            None => None,
            Some(a) => match self.addrs.acquire(a) {
                Some(id) => Some(id),
                None => {
                    self.stats.insert_failed += 1;
                    self.stats.addresses_full += 1;
                    return Err(InsertError::AddressesFull);
                }
            },
        };
        // Free slots as masks: the emptier bucket takes the entry, in its first free slot.
        let free = |t: &Self, bi: usize| crate::mem::eq_mask_u16x8(&t.meta.as_slice()[bi].sig, 0);
        let (m1, m2) = (free(self, b1), if b2 == b1 { 0 } else { free(self, b2) });
        // rank: 0 free, 1 expired, 2 evictable (soonest expiry first), 3 freed by a cuckoo move.
        let mut pick: Option<(usize, usize, u8)> = None;
        if m1 | m2 != 0 {
            let (bi, m) = if m2.count_ones() > m1.count_ones() { (b2, m2) } else { (b1, m1) };
            pick = Some((bi, m.trailing_zeros() as usize, 0));
        }
        // Every slot of both buckets taken: the first expired slot; else the evictable entry that expires soonest (the
        // first of equals), never a protected one; else a depth-1 cuckoo move. While the table holds fewer entries than
        // it was made for, the move comes before the eviction: a table made for N flows so holds N before it evicts a
        // live half-open flow (at 1 M flows the fill evicted 0.8 % of them, whose packets then came back as new flows;
        // a full-NAT flow loses its reply's way). Beyond N (a flood), eviction comes first: a move hashes the
        // residents' keys and reads their other buckets.
        let below = self.stats.occupied < self.nominal;
        // Masks and minima without branches: this runs for every new flow while the table is full (a flood), where a
        // compare and branch a slot cost about 250 instructions a flow, and a branch-free score a slot about 190.
        let soonest = |ma: &Meta, mb: &Meta| {
            let lanes = evictable(&ma.state) | evictable(&mb.state) << WAYS;
            crate::mem::soonest_lane_u32x16(&ma.expires, &mb.expires, now, lanes)
                .map(|at| (if at < WAYS { b1 } else { b2 }, at % WAYS, 2))
        };
        if pick.is_none() {
            let (ma, mb) = (&self.meta.as_slice()[b1], &self.meta.as_slice()[b2]);
            let due =
                crate::mem::due_mask_u32x8(&ma.expires, now) | crate::mem::due_mask_u32x8(&mb.expires, now) << WAYS;
            pick = if due != 0 {
                let at = due.trailing_zeros() as usize;
                Some((if at < WAYS { b1 } else { b2 }, at % WAYS, 1))
            } else if below {
                None
            } else {
                soonest(ma, mb)
            };
        }
        if pick.is_none() {
            pick = self.make_room(b1).or_else(|| self.make_room(b2)).map(|(bi, w)| (bi, w, 3));
        }
        if pick.is_none() && below {
            pick = soonest(&self.meta.as_slice()[b1], &self.meta.as_slice()[b2]);
        }
        let Some((bi, w, rank)) = pick else {
            if let Some(id) = held {
                self.addrs.release(id);
            }
            self.stats.insert_failed += 1;
            return Err(InsertError::BucketFull);
        };
        match rank {
            0 | 3 => self.stats.occupied += 1,
            1 => {
                self.stats.expired += 1;
                displaced(self.clear(bi, w));
            }
            _ => {
                self.stats.evicted += 1;
                displaced(self.clear(bi, w));
            }
        }
        self.buckets.as_mut_slice()[bi].slots[w] =
            Slot { key: key.store(held.unwrap_or(0)), aux: e.aux, value: e.value, rev: NO_REV };
        let m = &mut self.meta.as_mut_slice()[bi];
        m.sig[w] = sig_of(h);
        m.expires[w] = e.expires;
        m.state[w] = e.state;
        m.flags[w] = e.flags;
        self.stats.inserts += 1;
        Ok((bi * WAYS + w) as u32)
    }

    /// Depth-1 cuckoo move: free a slot in full bucket `bi` by moving one of its entries to that entry's other
    /// candidate bucket, if that one has room. The moved entry's reverse-index link follows it.
    fn make_room(&mut self, bi: usize) -> Option<(usize, usize)> {
        for w in 0..WAYS {
            let x = self.buckets.as_slice()[bi].slots[w];
            let hx = self.load(&x.key).hash();
            let (p, a) = (self.bucket_of(hx), self.alt_bucket_of(hx));
            let other = if p == bi { a } else { p };
            if other == bi {
                continue;
            }
            let Some(ow) = self.meta.as_slice()[other].sig.iter().position(|&s| s == 0) else { continue };
            let m = self.meta.as_slice()[bi];
            self.buckets.as_mut_slice()[other].slots[ow] = x;
            let om = &mut self.meta.as_mut_slice()[other];
            om.sig[ow] = m.sig[w];
            om.expires[ow] = m.expires[w];
            om.state[ow] = m.state[w];
            om.flags[ow] = m.flags[w];
            if x.rev != NO_REV {
                if let Some(rb) = self.rev.as_mut().and_then(|r| r.as_mut_slice().get_mut(x.rev as usize / WAYS)) {
                    rb.slot[x.rev as usize % WAYS] = (other * WAYS + ow) as u32;
                }
            }
            self.buckets.as_mut_slice()[bi].slots[w].rev = NO_REV;
            let m = &mut self.meta.as_mut_slice()[bi];
            m.sig[w] = 0;
            m.state[w] = 0;
            self.stats.moved += 1;
            return Some((bi, w));
        }
        None
    }

    /// Index the entry in `slot` under the reply-direction hash `rh`: a free slot in the emptier of its two index
    /// buckets, else after moving one resident fingerprint to its other bucket. A link the slot had is removed.
    ///
    /// # Errors
    /// [`InsertError::BucketFull`] when both index buckets are full (or the table has no index, or `slot` is free).
    pub fn link_reverse(&mut self, slot: u32, rh: u64) -> Result<(), InsertError> {
        let (bi, w) = split(slot);
        let occupied = self.meta.as_slice().get(bi).is_some_and(|m| m.sig[w] != 0);
        if !occupied {
            self.stats.reverse_failed += 1;
            return Err(InsertError::BucketFull);
        }
        let old = self.buckets.as_slice()[bi].slots[w].rev;
        self.link_in(bi, w, rh, old)
    }

    /// [`FlowTable::link_reverse`] for the slot [`FlowTable::insert_in`] has just returned: occupied, and linked to
    /// nothing yet (an insert writes `NO_REV`), so neither is looked at again.
    ///
    /// # Errors
    /// As [`FlowTable::link_reverse`].
    #[inline]
    pub fn link_inserted(&mut self, slot: u32, rh: u64) -> Result<(), InsertError> {
        let (bi, w) = split(slot);
        debug_assert!(self.meta.as_slice()[bi].sig[w] != 0 && self.buckets.as_slice()[bi].slots[w].rev == NO_REV);
        self.link_in(bi, w, rh, NO_REV)
    }

    /// Link occupied slot (`bi`, `w`) under `rh`, then unlink `old`, the index slot it had ([`NO_REV`]: none).
    #[inline(always)]
    fn link_in(&mut self, bi: usize, w: usize, rh: u64, old: u32) -> Result<(), InsertError> {
        let Some(rev) = self.rev.as_ref() else {
            self.stats.reverse_failed += 1;
            return Err(InsertError::BucketFull);
        };
        let fp = fp_of(rh);
        let r1 = self.rev_bucket(rh);
        let r2 = self.rev_alt(r1, fp);
        // Free index slots as masks: the emptier bucket takes the link, in its first free slot. (Through `rev`, not
        // `Option::map_or` on it: that closure was compiled out of line, a call for each bucket.)
        let free = |ri: usize| crate::mem::eq_mask_u32x8(&rev.as_slice()[ri].fp, 0);
        let (m1, m2) = (free(r1), free(r2));
        let target = if m1 | m2 == 0 {
            self.rev_make_room(r1).or_else(|| self.rev_make_room(r2))
        } else {
            let (ri, m) = if m2.count_ones() > m1.count_ones() { (r2, m2) } else { (r1, m1) };
            Some((ri, m.trailing_zeros() as usize))
        };
        let Some((ri, rw)) = target else {
            self.stats.reverse_failed += 1;
            return Err(InsertError::BucketFull);
        };
        self.unlink(old);
        if let Some(r) = self.rev.as_mut() {
            let b = &mut r.as_mut_slice()[ri];
            b.fp[rw] = fp;
            b.slot[rw] = (bi * WAYS + w) as u32;
        }
        self.buckets.as_mut_slice()[bi].slots[w].rev = (ri * WAYS + rw) as u32;
        Ok(())
    }

    /// Free an index slot in full bucket `ri` by moving a fingerprint to its other bucket; the forward slot's link
    /// follows.
    fn rev_make_room(&mut self, ri: usize) -> Option<(usize, usize)> {
        for rw in 0..WAYS {
            let (fp, fslot) = {
                let b = &self.rev.as_ref()?.as_slice()[ri];
                (b.fp[rw], b.slot[rw])
            };
            let alt = self.rev_alt(ri, fp);
            if alt == ri {
                continue;
            }
            let r = self.rev.as_mut()?;
            let Some(aw) = r.as_slice()[alt].fp.iter().position(|&f| f == 0) else { continue };
            r.as_mut_slice()[alt].fp[aw] = fp;
            r.as_mut_slice()[alt].slot[aw] = fslot;
            r.as_mut_slice()[ri].fp[rw] = 0;
            let (fb, fw) = split(fslot);
            if let Some(b) = self.buckets.as_mut_slice().get_mut(fb) {
                b.slots[fw].rev = (alt * WAYS + aw) as u32;
            }
            self.stats.moved += 1;
            return Some((ri, rw));
        }
        None
    }

    /// The slot and entry of the live entry indexed under reply hash `rh` that `verify` accepts.
    #[inline]
    pub fn lookup_reverse(&self, rh: u64, now: u32, verify: impl Fn(&Entry<K>) -> bool) -> Option<(u32, Entry<K>)> {
        let rev = self.rev.as_ref()?;
        let fp = fp_of(rh);
        let r1 = self.rev_bucket(rh);
        let r2 = self.rev_alt(r1, fp);
        for ri in [r1, r2] {
            let r = &rev.as_slice()[ri];
            let mut hits = crate::mem::eq_mask_u32x8(&r.fp, fp);
            while hits != 0 {
                let rw = hits.trailing_zeros() as usize;
                hits &= hits - 1;
                let slot = r.slot[rw];
                let (bi, w) = split(slot);
                let (Some(m), Some(b)) = (self.meta.as_slice().get(bi), self.buckets.as_slice().get(bi)) else {
                    continue;
                };
                if m.sig[w] == 0 || b.slots[w].rev != (ri * WAYS + rw) as u32 || !live(m.expires[w], now) {
                    continue;
                }
                let e = self.entry_at(bi, w);
                if verify(&e) {
                    return Some((slot, e));
                }
            }
            if r2 == r1 {
                break;
            }
        }
        None
    }

    /// Free `slot` (and its reverse-index slot), returning what it held.
    pub fn remove_slot(&mut self, slot: u32) -> Option<Entry<K>> {
        let (bi, w) = split(slot);
        if self.meta.as_slice().get(bi).is_some_and(|m| m.sig[w] != 0) {
            self.stats.removed += 1;
            self.stats.occupied -= 1;
            return Some(self.clear(bi, w));
        }
        None
    }

    /// Visit the next `nbuckets` buckets (round robin), reclaiming expired entries and reporting each one reclaimed.
    /// Reads only meta lines, and a slot only when it expired.
    pub fn sweep(&mut self, nbuckets: usize, now: u32, mut on_expire: impl FnMut(&Entry<K>)) {
        let total = self.nbuckets as usize;
        for _ in 0..nbuckets.min(total) {
            let bi = self.sweep_at;
            self.sweep_at = if bi + 1 == total { 0 } else { bi + 1 };
            for w in 0..WAYS {
                let m = &self.meta.as_slice()[bi];
                if m.sig[w] != 0 && !live(m.expires[w], now) {
                    let old = self.clear(bi, w);
                    on_expire(&old);
                    self.stats.expired += 1;
                    self.stats.occupied -= 1;
                }
            }
        }
    }

    /// Visit every entry live at `now`, with its slot. For queries and tests, not the hot path.
    pub fn for_each_live(&self, now: u32, mut f: impl FnMut(u32, &Entry<K>)) {
        for (bi, m) in self.meta.as_slice().iter().enumerate() {
            for w in 0..WAYS {
                if m.sig[w] != 0 && live(m.expires[w], now) {
                    f((bi * WAYS + w) as u32, &self.entry_at(bi, w));
                }
            }
        }
    }

    /// Visit the entries live at `now` in at most `max_slots` slots from slot `from` (a cursor over the whole table,
    /// for paging through it without stalling the worker). Returns where to continue, or `None` at the end.
    pub fn for_each_live_in(
        &self,
        from: u32,
        max_slots: u32,
        now: u32,
        mut f: impl FnMut(u32, &Entry<K>),
    ) -> Option<u32> {
        let meta = self.meta.as_slice();
        let first = from as usize / WAYS;
        let last = (first + (max_slots as usize).div_ceil(WAYS).max(1)).min(meta.len());
        for (bi, m) in meta.iter().enumerate().take(last).skip(first) {
            for w in 0..WAYS {
                let slot = (bi * WAYS + w) as u32;
                if slot >= from && m.sig[w] != 0 && live(m.expires[w], now) {
                    f(slot, &self.entry_at(bi, w));
                }
            }
        }
        (last < meta.len()).then_some((last * WAYS) as u32)
    }

    /// Read-only lookup without touching counters or reclaiming (for "is this flow tracked?" queries).
    pub fn peek(&self, key: &K, now: u32) -> Option<Entry<K>> {
        let h = key.hash();
        let key = &self.stored(key)?;
        let sig = sig_of(h);
        [self.bucket_of(h), self.alt_bucket_of(h)].into_iter().find_map(|bi| {
            let m = &self.meta.as_slice()[bi];
            let b = &self.buckets.as_slice()[bi];
            (0..WAYS)
                .find(|&w| m.sig[w] == sig && b.slots[w].key == *key && live(m.expires[w], now))
                .map(|w| self.entry_at(bi, w))
        })
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
        crate::stored_whole!();
        fn hash(&self) -> u64 {
            crate::lb::hash::fmix64(self.0 ^ 0x1234_5678)
        }
    }

    const SYN: u8 = 1;
    const EST: u8 = 2;
    fn e(state: u8, expires: u32, value: u32) -> Entry<K> {
        Entry::new(expires, value, 0, state, 0)
    }
    /// The slots of a bucket whose state is `SYN`: the tests' evictable entries.
    fn half_open(s: &[u8; WAYS]) -> u32 {
        s.iter().enumerate().fold(0, |m, (w, &x)| m | u32::from(x == SYN) << w)
    }

    /// Keys that share a first bucket must not share a signature more often than chance (1 in 2^15), in a table of
    /// any size: a table of 2^17 buckets (about a million flows) has its buckets from the hash's top 17 bits.
    #[test]
    fn signatures_do_not_repeat_the_bucket() {
        let n = 1u64 << 17;
        let mut same = 0;
        for i in 0..100_000u64 {
            let h = crate::lb::hash::fmix64(i);
            // Another hash in the same first bucket: the same top 17 bits, the rest from another key.
            let h2 = (h & !((1u64 << 47) - 1)) | (crate::lb::hash::fmix64(i ^ 0xdead_beef) & ((1u64 << 47) - 1));
            assert_eq!(range(h, n), range(h2, n));
            same += u32::from(sig_of(h) == sig_of(h2));
        }
        // Chance gives about 3 of 100 000.
        assert!(same < 100, "{same} of 100 000 pairs in one bucket share a signature");
    }

    /// Stage 2 says whether a lookup will hit: true for every key the table holds, false (but for a signature shared
    /// by chance) for keys it does not, whose stage 2 then prefetches the entry an insert would displace (a table
    /// beyond the cache, filled until inserts fail, so that most buckets are full).
    #[test]
    fn stage_two_tells_a_miss() {
        let mut t = FlowTable::<K>::new(40_000);
        assert!(t.beyond_cache());
        let mut held = Vec::new();
        for i in 1..60_000u64 {
            let k = K(i);
            if t.insert(k, k.hash(), 0, e(EST, 1000 + i as u32, 1), |_| 0).is_ok() {
                held.push(k);
            }
        }
        assert!(held.len() * 20 > t.capacity() * 19, "{} of {} slots taken", held.len(), t.capacity());
        // A held key's match names its own slot (where a lookup finds it now: cuckoo moves shift entries) unless a
        // signature shared by chance comes first in its buckets.
        let mut own = 0;
        for k in &held {
            let Ahead::Match(named) = t.prefetch_entries_in(k.hash(), t.buckets_of(k.hash())) else {
                panic!("{k:?} is held, stage 2 says a miss");
            };
            own += usize::from(Some(named) == t.find_live(k, k.hash(), 0).map(|(slot, _)| slot));
        }
        assert!(own * 100 > held.len() * 99, "{own} of {} held keys' own slots named", held.len());
        let ahead = |t: &FlowTable<K>, k: &K| t.prefetch_entries_in(k.hash(), t.buckets_of(k.hash()));
        let absent = (100_000..110_000u64).map(K).filter(|k| matches!(ahead(&t, k), Ahead::Match(_)));
        assert!(absent.count() < 100, "absent keys taken for held ones");
        // The slot a miss names is the one the insert then displaces (every slot evictable, no entry expired, all
        // expiries distinct): the reverse-index line prefetched for it is the one the insert clears.
        let (mut named, mut full) = (0, 0);
        for i in 200_000..201_000u64 {
            let k = K(i);
            let Ahead::Miss(victim) = ahead(&t, &k) else { continue };
            let (slot, displaced) = t.insert(k, k.hash(), 0, e(EST, 100_000 + i as u32, 1), |_| EVERY_SLOT).unwrap();
            if displaced.is_some() {
                full += 1;
                assert_eq!(victim, slot, "{k:?}: stage 2 named slot {victim}, the insert displaced slot {slot}");
                named += 1;
            } else {
                assert_eq!(victim, NO_SLOT, "{k:?}: a free slot, yet stage 2 named one to displace");
            }
        }
        assert!(full > 500 && named == full, "{named} of {full} displacing inserts named at stage 2");
    }

    /// `live_at` answers only what `find_live_in` would: asked for a key at every slot of its two buckets and at slots
    /// out of range, it finds the key at its own slot while the entry is live, and nowhere else.
    #[test]
    fn live_at_agrees_with_find_live() {
        let mut t = FlowTable::<K>::new(2000);
        let mut keys = Vec::new();
        for i in 1..3000u64 {
            let k = K(i);
            if t.insert(k, k.hash(), 0, e(EST, 100 + (i % 50) as u32, 1), |_| 0).is_ok() {
                keys.push(k);
            }
        }
        keys.extend([K(10_000), K(10_001)]);
        let (now, cap) = (125, t.capacity() as u32);
        let (mut found, mut expired) = (0, 0);
        for k in &keys {
            let h = k.hash();
            let b = t.buckets_of(h);
            let want = t.find_live_in(k, h, b, now);
            let mut slots: Vec<u32> = b.iter().flat_map(|&bi| (0..WAYS).map(move |w| (bi * WAYS + w) as u32)).collect();
            slots.extend([cap - 1, cap, cap + 7, NO_SLOT]);
            for s in slots {
                if let Some(got) = t.live_at(k, h, s, now) {
                    assert_eq!(Some(got), want, "{k:?} at slot {s}");
                    found += 1;
                }
            }
            match want {
                Some((s, _)) => assert!(t.live_at(k, h, s, now).is_some(), "{k:?} live in slot {s}, not found there"),
                None => expired += 1,
            }
        }
        assert!(found > 1000 && expired > 1000, "{found} found, {expired} expired or absent");
    }

    /// The link prefetch takes any slot number stage 2 might hand it, in range or not, linked or not.
    #[test]
    fn victim_link_prefetch_takes_any_slot() {
        let mut t = FlowTable::<K>::with_reverse(1000);
        let k = K(7);
        let (slot, _) = t.insert(k, k.hash(), 0, e(EST, 100, 1), half_open).unwrap();
        t.link_reverse(slot, 12345).unwrap();
        let cap = t.capacity() as u32;
        for v in [slot, slot + 1, 0, cap - 1, cap, cap + 1, NO_SLOT - 1, NO_SLOT] {
            t.prefetch_victim_link(v);
        }
        assert_eq!(t.stats().inserts, 1);
    }

    #[test]
    fn insert_lookup_expire() {
        let mut t = FlowTable::<K>::new(1000);
        let k = K(42);
        assert!(matches!(t.lookup(&k, k.hash(), 0), Lookup::Miss(None)));
        let (slot, displaced) = t.insert(k, k.hash(), 0, e(EST, 100, 7), half_open).unwrap();
        assert!(displaced.is_none());
        let Lookup::Hit(s2, got) = t.lookup(&k, k.hash(), 50) else { panic!("miss") };
        assert_eq!(t.get(s2), Some(got));
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
    fn reverse_index_follows_its_entry() {
        let mut t = FlowTable::<K>::with_reverse(1000);
        let k = K(5);
        let (slot, _) = t.insert(k, k.hash(), 0, e(EST, 100, 9), half_open).unwrap();
        let rh = 0xdead_beef_1234_5678;
        t.link_reverse(slot, rh).unwrap();
        assert_eq!(t.lookup_reverse(rh, 10, |x| x.value == 9).map(|(s, _)| s), Some(slot));
        assert_eq!(t.lookup_reverse(rh, 10, |x| x.value == 8), None, "verification is the caller's");
        assert_eq!(t.lookup_reverse(rh ^ 1 << 40, 10, |_| true), None);
        // Expiry through lookup unlinks the index slot.
        assert!(matches!(t.lookup(&k, k.hash(), 100), Lookup::Miss(Some(_))));
        assert_eq!(t.lookup_reverse(rh, 10, |_| true), None);
        // A new entry reusing the slot is not reachable through the old index slot.
        let k2 = K(6);
        let (slot2, _) = t.insert(k2, k2.hash(), 200, e(EST, 300, 1), half_open).unwrap();
        assert_eq!(t.lookup_reverse(rh, 210, |_| true), None);
        t.link_reverse(slot2, rh).unwrap();
        t.remove_slot(slot2);
        assert_eq!(t.lookup_reverse(rh, 210, |_| true), None);
    }

    /// Entries whose replies share a hash (so a fingerprint and a bucket) are told apart by the caller's check alone:
    /// each is found, whichever place in the index it holds, in both of its candidate buckets.
    #[test]
    fn reverse_lookup_examines_every_matching_fingerprint() {
        let mut t = FlowTable::<K>::with_reverse(1000);
        let rh = 0x0123_4567_89ab_cdef;
        let slots: Vec<u32> = (0..12u32)
            .map(|i| {
                let k = K(100 + u64::from(i));
                let (slot, _) = t.insert(k, k.hash(), 0, e(EST, 100, i), half_open).unwrap();
                t.link_reverse(slot, rh).unwrap();
                slot
            })
            .collect();
        for (i, &slot) in slots.iter().enumerate() {
            assert_eq!(t.lookup_reverse(rh, 10, |x| x.value == i as u32).map(|(s, _)| s), Some(slot), "entry {i}");
        }
        assert_eq!(t.lookup_reverse(rh, 10, |x| x.value == 99), None);
    }

    #[test]
    fn layout_is_compact() {
        assert_eq!(std::mem::size_of::<Meta>(), 64);
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

    /// A full table gives up the evictable entry of the new key's buckets that expires soonest, never a protected
    /// one, also when the clock and the expiries wrap past zero.
    #[test]
    fn eviction_takes_what_expires_soonest() {
        for now in [5u32, u32::MAX - 100] {
            let mut t = FlowTable::<K>::new(16);
            // Keys whose two buckets are the first two: every insert sees the same 16 slots.
            let pair = |k: &K| {
                let (a, b) = (t.bucket_of(k.hash()), t.alt_bucket_of(k.hash()));
                (a.min(b), a.max(b)) == (0, 1)
            };
            let both: Vec<K> = (1..100_000).map(K).filter(pair).take(32).collect();
            assert_eq!(both.len(), 32);
            let mut keys = both.into_iter();
            // Expiries now+5 .. now+80 in a scrambled order; the soonest of all is protected (established).
            let order: Vec<u32> = (0..16).map(|i| (i * 7) % 16 + 1).collect();
            for (i, &o) in order.iter().enumerate() {
                let k = keys.next().unwrap();
                let state = if o == 1 { EST } else { SYN };
                t.insert(k, k.hash(), now, e(state, now.wrapping_add(5 * o), i as u32), half_open).unwrap();
            }
            assert_eq!(t.stats().evicted, 0);
            let mut evicted = Vec::new();
            for _ in 0..15 {
                let k = keys.next().unwrap();
                let (_, out) = t.insert(k, k.hash(), now, e(EST, now.wrapping_add(1000), 99), half_open).unwrap();
                evicted.push(out.map(|x| order[x.value as usize]));
            }
            // Soonest first, the protected one (1) skipped; then only protected entries are left.
            assert_eq!(evicted, (2..=16).map(Some).collect::<Vec<_>>(), "now {now}");
            let k = keys.next().unwrap();
            let refused = t.insert(k, k.hash(), now, e(SYN, now.wrapping_add(5), 0), half_open);
            assert_eq!(refused.err(), Some(InsertError::BucketFull));
        }
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
            let mut live_now = 0u64;
            t.for_each_live(now, |_, e| {
                assert_ne!(e.state, 0);
                live_now += 1;
            });
            prop_assert_eq!(live_now, model.values().filter(|(exp, _)| now < *exp).count() as u64);
            t.sweep(usize::MAX, now + 1000, |_| {});
            prop_assert_eq!(t.stats().occupied, 0);
        }
    }
}
#[cfg(test)]
mod fill {
    use super::*;
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct K(u64);
    impl FlowKey for K {
        const EMPTY: Self = K(0);
        crate::stored_whole!();
        fn hash(&self) -> u64 {
            crate::lb::hash::fmix64(self.0)
        }
    }

    /// A table kept full by evictions (every insert evicts once the table is full) still has an index slot for every
    /// entry: the index has 11/8 slots per table slot (9/8 did too, filled to 91 %). (116 500 flows make
    /// 16 383 buckets: an index rounded up to a power of two had one slot per table slot there, and failed.)
    #[test]
    fn index_outlasts_its_table() {
        for n in [20_000usize, 116_500, 123_457] {
            let mut t = FlowTable::<K>::with_reverse(n);
            let cap = t.capacity() as u64;
            for i in 1..=3 * cap {
                let k = K(i);
                let (slot, _) = t.insert(k, k.hash(), 0, Entry::new(1000, i as u32, 0, 1, 0), |_| EVERY_SLOT).unwrap();
                t.link_reverse(slot, !k.hash()).expect("index fits");
            }
            let s = t.stats();
            assert!(s.evicted > cap, "{n}: the table never filled ({} evictions)", s.evicted);
            assert!(s.occupied * 1000 >= cap * 999, "{n}: {} of {cap} slots occupied", s.occupied);
            assert_eq!(s.reverse_failed, 0);
            let (fwd, rev) = (t.meta.bytes() + t.buckets.bytes(), t.rev.as_ref().map_or(0, |r| r.bytes()));
            println!("{n} flows: {:.1} + {:.1} bytes per flow", fwd as f64 / n as f64, rev as f64 / n as f64);
        }
    }

    /// Buckets that are not the table's (a caller's bug) refuse the insert and count it, never index out of range;
    /// the table's own buckets take it.
    #[test]
    fn insert_in_foreign_buckets_is_refused() {
        let mut t = FlowTable::<K>::with_reverse(1000);
        let n = t.nbuckets as usize;
        let k = K(7);
        let e = Entry::new(1000, 1, 0, 1, 0);
        for b in [[n, 0], [0, n], [usize::MAX, usize::MAX]] {
            assert_eq!(t.insert_in(k, k.hash(), b, 0, e, |_| EVERY_SLOT).unwrap_err(), InsertError::BucketFull);
        }
        assert_eq!(t.stats().insert_failed, 3);
        assert_eq!(t.stats().occupied, 0);
        let (slot, _) = t.insert_in(k, k.hash(), t.buckets_of(k.hash()), 0, e, |_| EVERY_SLOT).unwrap();
        assert_eq!(t.find_live(&k, k.hash(), 0).map(|(s, _)| s), Some(slot));
    }

    /// A table made for N flows holds N evictable (half-open) ones without evicting any: below its nominal size an
    /// insert moves an entry to make room before it evicts one. Beyond N, as under a flood, it evicts and moves no
    /// more.
    #[test]
    fn holds_its_nominal_size_of_evictable_flows_then_evicts() {
        let n = 200_000u64;
        let mut t = FlowTable::<K>::with_reverse(n as usize);
        for i in 1..=n {
            let k = K(i);
            let (slot, _) =
                t.insert(k, k.hash(), 0, Entry::new(1000, i as u32, 0, 1, 0), |_| EVERY_SLOT).expect("fits");
            t.link_reverse(slot, !k.hash()).expect("index fits");
        }
        assert_eq!((t.stats().evicted, t.stats().insert_failed, t.stats().occupied), (0, 0, n));
        assert!(t.stats().moved > 0, "the fill should have needed cuckoo moves");
        for i in (1..=n).step_by(97) {
            let k = K(i);
            let Lookup::Hit(slot, e) = t.lookup(&k, k.hash(), 1) else { panic!("{i} lost") };
            assert_eq!(e.value, i as u32);
            assert_eq!(t.lookup_reverse(!k.hash(), 1, |e| e.value == i as u32).map(|(s, _)| s), Some(slot));
        }
        let moved = t.stats().moved;
        for i in n + 1..=n + n / 10 {
            let k = K(i);
            t.insert(k, k.hash(), 0, Entry::new(1000, i as u32, 0, 1, 0), |_| EVERY_SLOT).expect("an eviction");
        }
        assert!(t.stats().evicted > 0, "{:?}", t.stats());
        assert_eq!(t.stats().moved, moved, "beyond its nominal size the table evicts instead of moving");
    }

    /// A table made for N flows takes N protected (never evictable) entries without a failure, thanks to two
    /// choices plus cuckoo moves; and moved entries stay reachable through their reverse index.
    #[test]
    fn nominal_size_fits() {
        let n = 200_000usize;
        let mut t = FlowTable::<K>::with_reverse(n);
        for i in 1..=n as u64 {
            let k = K(i);
            let (slot, _) = t.insert(k, k.hash(), 0, Entry::new(1000, i as u32, 0, 2, 0), |_| 0).expect("fits");
            t.link_reverse(slot, !k.hash()).expect("index fits");
        }
        assert_eq!(t.stats().insert_failed, 0);
        assert!(t.stats().moved > 0, "the fill should have needed cuckoo moves");
        for i in (1..=n as u64).step_by(97) {
            let k = K(i);
            let Lookup::Hit(slot, e) = t.lookup(&k, k.hash(), 1) else { panic!("{i} lost") };
            let e = &e;
            assert_eq!(e.value, i as u32);
            assert_eq!(t.lookup_reverse(!k.hash(), 1, |e| e.value == i as u32).map(|(s, _)| s), Some(slot));
        }
    }
}
