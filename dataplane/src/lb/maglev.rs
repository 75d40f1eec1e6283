//! Weighted Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016, §3.4, Pseudocode 1).
//!
//! [`build`] is a pure function of the backend *set*, their weights and the table size: backends are sorted by their
//! identity key first, so any order of input yields the same table, and every appliance given the same set builds the
//! same table. Each backend's permutation is `offset + j·skip (mod M)` with `offset = h1(key) mod M` and
//! `skip = h2(key) mod (M−1) + 1`; M is prime so every permutation visits every slot. Weights are honoured by turns:
//! in each round every backend earns its weight in credit and claims one slot per `max_weight` of credit, so its
//! share of slots converges to its share of the total weight.
//!
//! Seen as a whole, the fill is a serial dictatorship: claims come in a fixed order (round, then backend key), and
//! each takes the first slot of its backend's permutation that no earlier claim took. Adding a backend inserts its
//! claims into that order; each inserted claim takes a slot from a later one, which takes the next free slot of its
//! own permutation from a later one still, and so on until the last claim of the fill is left without a slot.
//! [`MaglevTable::with_added`] follows those chains instead of filling the table again, for tables that keep the
//! round each slot was claimed in ([`keeps_rounds`]: large sets, where it pays); the result is the table [`build`]
//! gives for the larger set, slot for slot.
//!
//! The fill walks each permutation over a bitmap of taken slots (`Taken`): one slot at a time while at most a quarter
//! are taken, then four at a time. For the last free slots (fewer than `TAIL_FREE`) it finds each claim's slot by its
//! place in the claiming backend's permutation instead of walking to it.
//! [`build_by_walking`] is the plain walk it is tested against.

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

/// Tables of at most this many slots per backend keep the round each slot was claimed in (2 bytes a slot; a fill of
/// more than 65 536 rounds, which only weights far apart take, keeps none), so backends can be added by
/// [`MaglevTable::with_added`]. The chains an added backend starts grow with the slots per backend, and so does
/// their cost: adding one backend to 1000 in 65 537 slots (65 a backend) costs about two fifths of a build with equal
/// weights and a quarter with weights 1 to 4 (0.34 against 0.88 ms, 0.21 against 0.94 ms on the AMD EPYC VM,
/// `cargo bench -p edgelb-perf --bench dataplane -- maglev`); adding one to 100 (655 a backend) cost about eighteen
/// builds of the plain walk.
/// The automatic sizes give 100 to 200 slots a backend up to 655 backends, so only larger sets and explicit sizes
/// keep rounds.
pub const INCREMENTAL_MAX_SLOTS_PER_BACKEND: usize = 80;
/// Smaller tables build in microseconds: they keep no rounds.
pub const INCREMENTAL_MIN_SIZE: u32 = 2003;

/// True when a table of `size` slots over `backends` backends keeps its rounds for [`MaglevTable::with_added`].
pub fn keeps_rounds(size: u32, backends: usize) -> bool {
    size >= INCREMENTAL_MIN_SIZE && size as usize <= INCREMENTAL_MAX_SLOTS_PER_BACKEND.saturating_mul(backends)
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
    /// The round each slot was claimed in, for tables that [`keeps_rounds`] allows.
    rounds: Option<Box<[u16]>>,
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
    fill(backends, size, keeps_rounds(size, backends.len()))
}

/// [`build`], keeping the rounds when `keep_rounds`.
fn fill(backends: &[MaglevBackend], size: u32, keep_rounds: bool) -> Result<MaglevTable, MaglevError> {
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
        return Ok(MaglevTable { slots: Box::new([]), backends: sorted, rounds: None });
    }
    let n = sorted.len();
    let mut walks: Vec<Walk> = sorted
        .iter()
        .map(|b| {
            let (offset, skip) = permutation(&b.key, size);
            let times = |t: u64| (skip as u64 * t % m as u64) as usize;
            Walk { pos: offset, steps: [0, skip, times(2), times(3), times(4)], credit: 0, weight: b.weight }
        })
        .collect();
    let wmax = sorted.iter().map(|b| b.weight).max().unwrap_or(1);
    let mut slots = vec![0u16; m].into_boxed_slice();
    let mut taken = Taken::new(m);
    let mut rounds = keep_rounds.then(|| vec![0u16; m].into_boxed_slice());
    let mut free = m;
    // (Never in the tail: its list of free slots would miss the claim.)
    let early = (m - m / 4).max(TAIL_FREE);
    let mut tail: Option<Tail> = None;
    let mut round = 0u32;
    'fill: loop {
        for (i, w) in walks.iter_mut().enumerate() {
            w.credit += w.weight;
            while w.credit >= wmax {
                w.credit -= wmax;
                // While at most a quarter of the slots are taken, a permutation's next slot is free three times in
                // four or more: it is tested alone first, a branch the processor mostly predicts, before a group.
                let c = if free > early && taken.free(w.pos) == 1 {
                    let c = w.pos;
                    w.pos = add_mod(c, w.steps[1], m);
                    c
                } else if free > TAIL_FREE {
                    next_free(&taken, &mut w.pos, &w.steps)
                } else {
                    tail.get_or_insert_with(|| Tail::new(&taken, n)).claim(i, &mut w.pos, w.steps[1])
                };
                slots[c] = i as u16;
                taken.take(c);
                if let Some(r) = rounds.as_mut() {
                    r[c] = round as u16;
                }
                free -= 1;
                if free == 0 {
                    break 'fill;
                }
            }
        }
        round += 1;
        if round > u32::from(u16::MAX) {
            // Only weights far apart take this many rounds; such a table keeps none, and adding to it builds.
            rounds = None;
        }
    }
    Ok(MaglevTable { slots, backends: sorted, rounds })
}

/// One backend's place in a fill: where its permutation goes on from, its step times 0 to 4 (modulo the size, for
/// [`next_free`]), and its credit of turns.
struct Walk {
    pos: usize,
    steps: [usize; 5],
    credit: u32,
    weight: u32,
}

/// Below this many free slots a claim's slot is found among the free ones ([`Tail`]) instead of by walking the
/// backend's permutation: a walk costs about m / free probes, a search `free` modular products. Measured with
/// `cargo bench -p edgelb-perf --bench dataplane -- maglev/build`.
const TAIL_FREE: usize = 192;

/// `(a + b) mod m` for `a, b < m`: when `a + b < m` the subtraction wraps above it and `min` keeps the sum. Written
/// as `if a + b >= m { a + b - m } else { a + b }`, the walk of [`next_free`] built the default table in 1.9 ms
/// instead of 1.07 on the Xeon VM (one run, same binary otherwise): the compiler turned the comparison into a longer
/// chain on the step's critical path.
#[inline(always)]
fn add_mod(a: usize, b: usize, m: usize) -> usize {
    (a + b).wrapping_sub(m).min(a + b)
}

/// The first free slot on a permutation from `*pos` on; `*pos` moves past it. `steps` holds the permutation's step
/// times 0 to 4 (modulo the size): four slots are tested together, so the loop's exit, a branch the processor cannot
/// predict, is taken a quarter as often. The caller guarantees a free slot.
#[inline]
fn next_free(taken: &Taken, pos: &mut usize, steps: &[usize; 5]) -> usize {
    let m = taken.m;
    let add = |a: usize, b: usize| add_mod(a, b, m);
    let free = |z: usize| taken.free(z);
    let mut p = *pos;
    loop {
        let found = free(p) | free(p + steps[1]) << 1 | free(p + steps[2]) << 2 | free(p + steps[3]) << 3;
        if found != 0 {
            let c = add(p, steps[found.trailing_zeros() as usize & 3]);
            *pos = add(c, steps[1]);
            return c;
        }
        p = add(p, steps[4]);
    }
}

/// Which slots a fill has taken: one bit a slot, twice over (slot z at bits z and z + m), so a walk tests
/// `p + k·skip` for any `p, k·skip < m` without reducing the sum modulo m, and all of it (16 KiB for the default
/// size) stays within a level-1 cache. Probing the 128 KiB of slots instead, each reduced, built the default table
/// about 5 % slower.
struct Taken {
    bits: Vec<u64>,
    m: usize,
}

impl Taken {
    fn new(m: usize) -> Self {
        Taken { bits: vec![0; (2 * m).div_ceil(64)], m }
    }

    /// 1 when slot `z mod m` is free (`z < 2m`).
    #[inline(always)]
    fn free(&self, z: usize) -> u32 {
        (!(self.bits[z / 64] >> (z % 64)) & 1) as u32
    }

    fn take(&mut self, z: usize) {
        for b in [z, z + self.m] {
            self.bits[b / 64] |= 1 << (b % 64);
        }
    }

    /// The free slots, in order: whole words of taken slots are passed over.
    fn free_slots(&self) -> Vec<u32> {
        let mut free = Vec::new();
        for (w, &word) in self.bits.iter().enumerate() {
            let mut open = !word;
            while open != 0 {
                let z = w * 64 + open.trailing_zeros() as usize;
                if z >= self.m {
                    return free;
                }
                free.push(z as u32);
                open &= open - 1;
            }
        }
        free
    }
}

/// The last free slots of a fill, searched by their place in each permutation: slot `z` comes
/// `(z − pos)·skip⁻¹ mod m` steps after `pos`, so a claim takes the free slot it reaches in the fewest steps.
struct Tail {
    free: Vec<u32>,
    /// Each backend's step inverse modulo m, found when it first claims here (0: not yet).
    inverse: Vec<u32>,
    m: u64,
}

impl Tail {
    fn new(taken: &Taken, n: usize) -> Self {
        let free = taken.free_slots();
        Tail { free, inverse: vec![0; n], m: taken.m as u64 }
    }

    /// Backend `i`'s claim from `*pos` on; `*pos` moves past it.
    fn claim(&mut self, i: usize, pos: &mut usize, skip: usize) -> usize {
        let m = self.m;
        if self.inverse[i] == 0 {
            self.inverse[i] = inverse_mod(skip as u64, m) as u32;
        }
        let (inv, p) = (u64::from(self.inverse[i]), *pos as u64);
        let (mut best, mut at) = (u64::MAX, 0);
        for (k, &z) in self.free.iter().enumerate() {
            let z = u64::from(z);
            let steps = (if z >= p { z - p } else { z + m - p }) * inv % m;
            if steps < best {
                (best, at) = (steps, k);
            }
        }
        let c = self.free.swap_remove(at) as usize;
        *pos = add_mod(c, skip, m as usize);
        c
    }
}

/// `a⁻¹ mod m` for `0 < a < m`, m prime (extended Euclid).
fn inverse_mod(a: u64, m: u64) -> u64 {
    let (mut r0, mut r1) = (m as i64, a as i64);
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    t0.rem_euclid(m as i64) as u64
}

/// The table's slots as the paper's Pseudocode 1 fills them (with turns for weights), walking every permutation
/// probe by probe: the oracle [`build`] is tested against, slot for slot, and its baseline in
/// `cargo bench -p edgelb-perf --bench dataplane -- maglev`. Not for use outside tests and benchmarks.
#[doc(hidden)]
pub fn build_by_walking(backends: &[MaglevBackend], size: u32) -> Vec<u16> {
    let mut sorted = backends.to_vec();
    sorted.sort_unstable_by_key(|b| b.key);
    let m = size as usize;
    let perms: Vec<(usize, usize)> = sorted.iter().map(|b| permutation(&b.key, size)).collect();
    let mut next = vec![0usize; sorted.len()];
    let wmax = sorted.iter().map(|b| b.weight).max().unwrap_or(1);
    let mut credit = vec![0u32; sorted.len()];
    let mut slots = vec![EMPTY; m];
    let mut filled = 0;
    while filled < m && !sorted.is_empty() {
        for i in 0..sorted.len() {
            credit[i] += sorted[i].weight;
            while credit[i] >= wmax && filled < m {
                credit[i] -= wmax;
                let (offset, skip) = perms[i];
                loop {
                    let c = ((offset as u64 + next[i] as u64 * skip as u64) % m as u64) as usize;
                    next[i] += 1;
                    if slots[c] == EMPTY {
                        slots[c] = i as u16;
                        filled += 1;
                        break;
                    }
                }
            }
        }
    }
    slots
}

/// A backend's permutation: its first slot and its step.
fn permutation(key: &[u8; 18], size: u32) -> (usize, usize) {
    let offset = (hash_bytes(SEED_OFFSET, key) % u64::from(size)) as usize;
    let skip = (hash_bytes(SEED_SKIP, key) % u64::from(size - 1)) as usize + 1;
    (offset, skip)
}

/// True when a backend of weight `w` claims a slot in round `r` (at most one a round, as `w <= wmax`): its credit
/// after the round, `(r + 1)·w`, crosses one more multiple of `wmax` than after the round before.
fn claims_in(w: u32, wmax: u32, r: u32) -> bool {
    let (w, wmax, r) = (u64::from(w), u64::from(wmax), u64::from(r));
    (r + 1) * w / wmax > r * w / wmax
}

/// A claim's place in the fill order: its round, then its backend's index (the key order).
fn when(round: u32, index: u16) -> u64 {
    (u64::from(round) << 16) | u64::from(index)
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

    /// The table [`build`] gives for this table's backends and `added` together, found by following the chains the
    /// added backends' claims start (see the module documentation) instead of filling the table again.
    ///
    /// `None` when that does not apply, and the caller builds: a table without rounds (see [`keeps_rounds`]) or
    /// without backends, nothing added, an added weight of zero or above the largest present one (it would change
    /// every backend's turns), a backend already present or given twice, more backends than fit, or chains that
    /// cost more than a build would.
    pub fn with_added(&self, added: &[MaglevBackend]) -> Option<MaglevTable> {
        // About what a build costs (m·H(m) probes); past it, building is cheaper.
        let m = self.slots.len() as f64;
        self.with_added_within(added, (m * (m.ln() + 1.0)) as usize)
    }

    /// [`MaglevTable::with_added`], giving up after `budget` probes.
    fn with_added_within(&self, added: &[MaglevBackend], budget: usize) -> Option<MaglevTable> {
        let old_rounds = self.rounds.as_ref()?;
        let wmax = self.backends.iter().map(|b| b.weight).max()?;
        let m = self.slots.len();
        let n = self.backends.len() + added.len();
        if added.is_empty() || n > MAX_BACKENDS.min(m) || added.iter().any(|b| b.weight == 0 || b.weight > wmax) {
            return None;
        }
        let (backends, remap, is_added) = merged(&self.backends, added)?;
        let slots: Box<[u16]> = self.slots.iter().map(|&s| remap[usize::from(s)]).collect();
        let mut f = Refill::new(slots, old_rounds.clone(), &backends, budget)?;
        let mut round = 0u32;
        // The added backends' indices, in key order (so their claims of a round come in fill order).
        let added_at: Vec<usize> = (0..n).filter(|&k| is_added[k]).collect();
        // Where each added backend's permutation goes on from (its slot after its last claim).
        let mut cursor: Vec<Option<usize>> = vec![None; n];
        while when(round, 0) <= f.end {
            for &k in &added_at {
                let p = when(round, k as u16);
                if p > f.end {
                    break;
                }
                if !claims_in(backends[k].weight, wmax, round) {
                    continue;
                }
                // The added claim takes the first slot of its permutation still free at its turn: one a later
                // claim holds now.
                let from = cursor[k].unwrap_or_else(|| f.perm(k).offset);
                let mut x = f.next_free(k, from, true, p)?;
                cursor[k] = Some(f.perm(k).step(x));
                let mut q = f.time(x);
                f.set(x, p);
                // Each claim that lost its slot takes the next slot of its permutation still free at its turn, from
                // a later claim, until the last claim of the fill is left without one.
                while q != f.end {
                    let y = f.next_free(usize::from((q & 0xffff) as u16), x, false, q)?;
                    let next = f.time(y);
                    f.set(y, q);
                    (x, q) = (y, next);
                }
                // The fill now ends at the claim before the old last one (added claims count up to this one).
                f.drop_end();
                let (mut r, mut i) = ((f.end >> 16) as u32, (f.end & 0xffff) as usize);
                loop {
                    if i == 0 {
                        r = r.checked_sub(1)?;
                        i = n;
                    }
                    i -= 1;
                    let t = when(r, i as u16);
                    if claims_in(backends[i].weight, wmax, r) && (!is_added[i] || t <= p) {
                        f.end = t;
                        break;
                    }
                }
            }
            round += 1;
        }
        let Refill { slots, rounds, .. } = f;
        Some(MaglevTable { slots, backends, rounds: Some(rounds) })
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

/// `old` and `added` in one list in key order, with each old backend's new index and which ones are added; `None`
/// when a key appears twice.
fn merged(old: &[MaglevBackend], added: &[MaglevBackend]) -> Option<(Vec<MaglevBackend>, Vec<u16>, Vec<bool>)> {
    let mut add = added.to_vec();
    add.sort_unstable_by_key(|b| b.key);
    let n = old.len() + add.len();
    let (mut backends, mut remap, mut is_added) = (Vec::with_capacity(n), Vec::with_capacity(old.len()), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < add.len() {
        if j == add.len() || (i < old.len() && old[i].key < add[j].key) {
            remap.push(backends.len() as u16);
            backends.push(old[i]);
            is_added.push(false);
            i += 1;
        } else {
            if backends.last().is_some_and(|b: &MaglevBackend| b.key == add[j].key)
                || old.get(i).is_some_and(|b| b.key == add[j].key)
            {
                return None;
            }
            backends.push(add[j]);
            is_added.push(true);
            j += 1;
        }
    }
    Some((backends, remap, is_added))
}

/// A backend's permutation, with the inverse of its step to find a slot's position in it.
#[derive(Debug, Clone, Copy)]
struct Perm {
    offset: usize,
    skip: usize,
    inverse: u64,
    m: usize,
}

impl Perm {
    fn of(key: &[u8; 18], m: usize) -> Self {
        let (offset, skip) = permutation(key, m as u32);
        // m is prime: skip^(m-2) is skip's inverse modulo m.
        let (mut inverse, mut base, mut e) = (1u64, skip as u64, m as u64 - 2);
        while e > 0 {
            if e & 1 == 1 {
                inverse = inverse * base % m as u64;
            }
            base = base * base % m as u64;
            e >>= 1;
        }
        Perm { offset, skip, inverse, m }
    }

    fn step(&self, z: usize) -> usize {
        add_mod(z, self.skip, self.m)
    }

    /// Where slot `z` comes in this permutation.
    fn position(&self, z: usize) -> u64 {
        ((z + self.m - self.offset) % self.m) as u64 * self.inverse % self.m as u64
    }
}

/// A full table being changed claim by claim: every slot holds the claim (round, backend) that took it.
struct Refill<'a> {
    slots: Box<[u16]>,
    rounds: Box<[u16]>,
    backends: &'a [MaglevBackend],
    perms: Vec<Option<Perm>>,
    /// The last claim of the fill.
    end: u64,
    /// The claims from `late_from` on, by time, with their slots: late in the fill few slots are still free, and
    /// finding the next free one by position costs less than walking a permutation to it.
    late: Vec<(u64, u32)>,
    late_from: u64,
    /// Work left before giving up (a table that breaks the invariants yields `None`, never a hang).
    budget: usize,
}

impl<'a> Refill<'a> {
    fn new(slots: Box<[u16]>, rounds: Box<[u16]>, backends: &'a [MaglevBackend], budget: usize) -> Option<Self> {
        let m = slots.len();
        let last_round = *rounds.iter().max()?;
        let mut per_round = vec![0usize; last_round as usize + 1];
        for &r in rounds.iter() {
            per_round[r as usize] += 1;
        }
        // Enough late claims that walking is cheaper than listing before the window starts (m / free > free).
        let want = (m as f64).sqrt() as usize + 1;
        let (mut from_round, mut count) = (last_round, 0);
        loop {
            count += per_round[from_round as usize];
            if count >= want || from_round == 0 {
                break;
            }
            from_round -= 1;
        }
        let mut late: Vec<(u64, u32)> = Vec::with_capacity(count + 64);
        for (z, (&s, &r)) in slots.iter().zip(rounds.iter()).enumerate() {
            if r >= from_round {
                late.push((when(r.into(), s), z as u32));
            }
        }
        late.sort_unstable();
        let end = late.last()?.0;
        Some(Refill {
            slots,
            rounds,
            backends,
            perms: vec![None; backends.len()],
            end,
            late,
            late_from: when(from_round.into(), 0),
            budget,
        })
    }

    fn time(&self, z: usize) -> u64 {
        when(self.rounds[z].into(), self.slots[z])
    }

    fn perm(&mut self, b: usize) -> Perm {
        let m = self.slots.len();
        *self.perms[b].get_or_insert_with(|| Perm::of(&self.backends[b].key, m))
    }

    /// Slot `z` now belongs to claim `t`.
    fn set(&mut self, z: usize, t: u64) {
        // A refill's claims come no later than the old fill's last, so their rounds fit as the old ones did.
        (self.slots[z], self.rounds[z]) = ((t & 0xffff) as u16, (t >> 16) as u16);
        if t >= self.late_from {
            match self.late.binary_search_by_key(&t, |e| e.0) {
                Ok(i) => self.late[i].1 = z as u32,
                Err(i) => self.late.insert(i, (t, z as u32)),
            }
        }
    }

    /// The last claim has lost its slot.
    fn drop_end(&mut self) {
        if self.late.last().is_some_and(|e| e.0 == self.end) {
            self.late.pop();
        }
    }

    /// The first slot of backend `b`'s permutation from slot `from` on (`from` itself when `inclusive`) that a claim
    /// later than `t` holds.
    fn next_free(&mut self, b: usize, from: usize, inclusive: bool, t: u64) -> Option<usize> {
        let p = self.perm(b);
        if t >= self.late_from {
            let i = self.late.partition_point(|e| e.0 <= t);
            let free = self.late.len() - i;
            if free * free <= self.slots.len() {
                self.budget = self.budget.checked_sub(free + 1)?;
                let base = p.position(from);
                let mut best: Option<(u64, usize)> = None;
                for &(_, z) in &self.late[i..] {
                    let z = z as usize;
                    let at = p.position(z);
                    if (at > base || (inclusive && at == base)) && best.is_none_or(|(b, _)| at < b) && self.time(z) > t
                    {
                        best = Some((at, z));
                    }
                }
                return best.map(|(_, z)| z);
            }
        }
        let mut z = if inclusive { from } else { p.step(from) };
        while self.time(z) <= t {
            z = p.step(z);
            self.budget = self.budget.checked_sub(1)?;
        }
        Some(z)
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
    fn incremental_declines_what_it_cannot_follow() {
        let b = backends(30);
        let small = build(&b[..5], 1009).unwrap();
        assert_eq!(small.with_added(&b[5..6]), None, "small tables keep no rounds");
        let t = fill(&b[..26], 2003, true).unwrap();
        assert_eq!(t.with_added(&[]), None);
        assert_eq!(t.with_added(&b[3..4]), None, "already present");
        assert_eq!(t.with_added(&[b[27], b[27]]), None, "given twice");
        assert_eq!(t.with_added(&[MaglevBackend { weight: 2, ..b[27] }]), None, "heavier than any present");
        assert_eq!(t.with_added_within(&b[26..28], usize::MAX), Some(fill(&b[..28], 2003, true).unwrap()));
        // Where it pays, within the cost of a build: one backend added to a thousand.
        let b = backends(1001);
        let t = build(&b[..1000], DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(t.with_added(&b[1000..]), Some(build(&b, DEFAULT_TABLE_SIZE).unwrap()));
    }

    /// Rounds are kept in 16 bits. A fill of more rounds than that (one backend far heavier than the rest) keeps
    /// none, so adding to it builds; its slots are the plain walk's all the same.
    #[test]
    fn a_fill_of_more_rounds_than_fit_keeps_none() {
        let mut b = backends(101);
        b[0].weight = MAX_WEIGHT;
        // Every round claims one slot for the heavy backend and one in 65 535 rounds for each light one: about
        // 69 900 rounds fill 70 001 slots.
        let t = fill(&b[..100], 70_001, true).unwrap();
        assert!(t.rounds.is_none(), "69 900 rounds do not fit 16 bits");
        assert_eq!(t.slots(), &build_by_walking(&b[..100], 70_001)[..]);
        assert_eq!(t.with_added(&b[100..]), None);
        // Light backends that together weigh as much as the heavy one: half the rounds, kept, and followed.
        for x in &mut b[1..] {
            x.weight = 662;
        }
        let t = fill(&b[..100], 70_001, true).unwrap();
        let last = t.rounds.as_ref().map(|r| r.iter().copied().max().unwrap_or(0));
        assert!(last.is_some_and(|r| r > 30_000), "{last:?}");
        assert_eq!(t.with_added_within(&b[100..], usize::MAX), Some(fill(&b, 70_001, true).unwrap()));
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

        /// Adding backends to a table by following chains gives the table a build of the larger set gives, slot for
        /// slot and round for round, over a random sequence of additions (several at once too) and other changes
        /// (a removal or a heavier weight, which build afresh). Small tables, any slots per backend and no work limit:
        /// the chains, not the limit, are under test.
        #[test]
        fn incremental_equals_full(
            start in 1usize..40,
            size in prop_oneof![Just(1009u32), Just(2003)],
            weights in proptest::collection::vec(1u32..6, 120),
            steps in proptest::collection::vec((0usize..6, 1usize..4), 1..8),
        ) {
            let pool: Vec<MaglevBackend> =
                backends(120).into_iter().zip(weights).map(|(b, w)| MaglevBackend { weight: w, ..b }).collect();
            let mut set: Vec<MaglevBackend> = pool[..start].to_vec();
            let mut next = start;
            let mut table = fill(&set, size, true).unwrap();
            for (kind, count) in steps {
                if kind == 0 && set.len() > 1 {
                    set.remove(count % set.len());
                    table = fill(&set, size, true).unwrap();
                    continue;
                }
                let wmax = set.iter().map(|b| b.weight).max().unwrap();
                let added: Vec<MaglevBackend> = pool[next..(next + count).min(pool.len())]
                    .iter()
                    .map(|b| MaglevBackend { weight: if kind == 1 { wmax + 1 } else { b.weight.min(wmax) }, ..*b })
                    .collect();
                next += added.len();
                set.extend_from_slice(&added);
                let full = fill(&set, size, true).unwrap();
                match table.with_added_within(&added, usize::MAX) {
                    Some(t) => prop_assert_eq!(&t, &full),
                    None => prop_assert!(kind == 1 || added.is_empty(), "refused {} added of weight <= {}", count, wmax),
                }
                table = full;
            }
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

    fn digest(slots: &[u16]) -> u64 {
        slots.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &s| (h ^ u64::from(s)).wrapping_mul(0x0100_0000_01b3))
    }

    /// Every appliance, of any version, given the same set builds the same table: pinned for one weighted set in
    /// the default size (the digest of the table built before the fill's free-slot search was added).
    #[test]
    fn the_table_is_pinned() {
        let set: Vec<MaglevBackend> = backends(1000)
            .into_iter()
            .enumerate()
            .map(|(i, b)| MaglevBackend { weight: 1 + i as u32 % 4, ..b })
            .collect();
        let t = build(&set, DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(digest(t.slots()), 0xda93_7df3_0f33_5602);
        assert_eq!(t.slots(), &build_by_walking(&set, DEFAULT_TABLE_SIZE)[..]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The fill equals the plain walk for any set, weights and size: sizes below [`TAIL_FREE`] search free slots
        /// from the first claim, larger ones walk first and search at the end.
        #[test]
        fn fill_equals_the_plain_walk(
            size_pick in 0usize..7,
            n in 1usize..300,
            weights in proptest::collection::vec(1u32..9, 300),
        ) {
            let size = [3u32, 7, 101, 191, 193, 1009, 4099][size_pick];
            let n = n.min(size as usize);
            let set: Vec<MaglevBackend> =
                backends(n).into_iter().zip(&weights).map(|(b, &w)| MaglevBackend { weight: w, ..b }).collect();
            let t = build(&set, size).unwrap();
            prop_assert_eq!(t.slots(), &build_by_walking(&set, size)[..]);
        }
    }
}
