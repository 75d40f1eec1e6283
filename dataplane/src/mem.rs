//! Large fixed arrays allocated once at start-up, on 2 MB huge pages when the system has them reserved.
//!
//! [`HugeArray::new`] tries, in order: hugetlbfs pages through `hugepage-rs` (needs `nr_hugepages` reserved),
//! transparent huge pages (anonymous `mmap` plus `madvise(MADV_HUGEPAGE)`, honoured when THP is `always` or
//! `madvise`), then ordinary pages. [`HugeArray::backing`] says which one it got, so the start-up log can tell the
//! operator. This is the only module of the crate with `unsafe` code.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::fmt;
use std::ptr::NonNull;

/// Hint the CPU to bring the cache line holding `r` into all cache levels. Never faults, changes nothing.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is part of SSE, which every x86_64 CPU has; it is a hint that cannot fault, and `r` is a
    // valid reference anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((r as *const T).cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// What memory backs a [`HugeArray`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Reserved hugetlbfs pages (`HugePages_Total` in /proc/meminfo).
    HugeTlb,
    /// Anonymous memory advised for transparent huge pages.
    TransparentHuge,
    /// Ordinary heap memory.
    Heap,
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backing::HugeTlb => "2 MB hugetlbfs pages",
            Backing::TransparentHuge => "transparent huge pages (madvise)",
            Backing::Heap => "ordinary pages",
        })
    }
}

/// Free 2 MB huge pages reported by /proc/meminfo (0 when unreadable or another default size).
fn free_hugepages_2m() -> usize {
    let Ok(s) = std::fs::read_to_string("/proc/meminfo") else { return 0 };
    let field = |name: &str| {
        s.lines().find_map(|l| l.strip_prefix(name)).and_then(|r| r.split_whitespace().next()?.parse::<usize>().ok())
    };
    match (field("Hugepagesize:"), field("HugePages_Free:")) {
        (Some(2048), Some(n)) => n,
        _ => 0,
    }
}

/// A fixed-length array of `T` that never reallocates.
pub struct HugeArray<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    layout: Layout,
    backing: Backing,
}

// SAFETY: HugeArray owns its allocation exclusively, like Box<[T]>; sending it moves that ownership.
unsafe impl<T: Copy + Send> Send for HugeArray<T> {}
// SAFETY: shared references only give out &[T], which is Sync when T is.
unsafe impl<T: Copy + Sync> Sync for HugeArray<T> {}

const TWO_MB: usize = 2 << 20;

impl<T: Copy> HugeArray<T> {
    /// Allocate `len` elements, each set to `fill`. Small arrays (under 2 MB) use the heap.
    ///
    /// # Panics
    /// When `len` is zero, the size overflows, or the system is out of memory (start-up only, never per packet).
    pub fn new(len: usize, fill: T) -> Self {
        assert!(len > 0 && std::mem::size_of::<T>() > 0, "HugeArray needs a non-zero size");
        let layout = Layout::array::<T>(len).expect("HugeArray size overflows");
        let (raw, backing) = Self::alloc(layout);
        let ptr = NonNull::new(raw.cast::<T>()).expect("out of memory allocating a fixed table");
        for i in 0..len {
            // SAFETY: `ptr` points to an allocation of `len` elements of `T` (Layout::array) and `i < len`, so the
            // offset stays inside it.
            let slot = unsafe { ptr.as_ptr().add(i) };
            // SAFETY: `slot` is in bounds and aligned for T; writing initialises it without reading the old bytes.
            unsafe { slot.write(fill) };
        }
        Self { ptr, len, layout, backing }
    }

    fn alloc(layout: Layout) -> (*mut u8, Backing) {
        let size = layout.size();
        if size >= TWO_MB && layout.align() <= TWO_MB {
            if free_hugepages_2m() * TWO_MB >= size {
                // SAFETY: layout has non-zero size (checked in `new`); hugepage_rs returns null on failure, and its
                // page-size lookup cannot panic because /proc/meminfo reported a 2048 kB Hugepagesize above.
                let p = unsafe { hugepage_rs::alloc(layout) };
                if !p.is_null() {
                    return (p, Backing::HugeTlb);
                }
            }
            let len = size.div_ceil(TWO_MB) * TWO_MB;
            // SAFETY: an anonymous private mapping with no address hint touches no existing memory.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                // SAFETY: `p..p+len` is the mapping just created; madvise only changes paging policy.
                let thp = unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) } == 0;
                if thp {
                    return (p.cast(), Backing::TransparentHuge);
                }
                // SAFETY: unmapping exactly the mapping created above, which nothing references yet.
                unsafe { libc::munmap(p, len) };
            }
        }
        // SAFETY: layout has non-zero size (checked in `new`).
        (unsafe { std::alloc::alloc(layout) }, Backing::Heap)
    }

    /// What memory backs the array.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.layout.size()
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `ptr` holds `len` initialised elements (written in `new`) and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The elements, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`; `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for HugeArray<T> {
    fn drop(&mut self) {
        let p = self.ptr.as_ptr().cast::<u8>();
        match self.backing {
            // SAFETY: allocated by hugepage_rs::alloc with this layout.
            Backing::HugeTlb => unsafe { hugepage_rs::dealloc(p, self.layout) },
            Backing::TransparentHuge => {
                let len = self.layout.size().div_ceil(TWO_MB) * TWO_MB;
                // SAFETY: `p..p+len` is the mapping created in `alloc`; no references outlive `self`.
                unsafe { libc::munmap(p.cast(), len) };
            }
            // SAFETY: allocated by std::alloc::alloc with this layout.
            Backing::Heap => unsafe { std::alloc::dealloc(p, self.layout) },
        }
    }
}

impl<T: Copy> fmt::Debug for HugeArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HugeArray").field("len", &self.len).field("backing", &self.backing).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large() {
        let mut a = HugeArray::new(10, 7u32);
        assert_eq!(a.backing(), Backing::Heap);
        a.as_mut_slice()[9] = 1;
        assert_eq!(a.as_slice().iter().sum::<u32>(), 64);
        let big = HugeArray::new((4 << 20) / 8, 3u64);
        assert_ne!(big.backing(), Backing::Heap, "a 4 MB array should get huge pages of some kind here");
        assert!(big.as_slice().iter().all(|&x| x == 3));
        assert_eq!(big.bytes(), 4 << 20);
    }
}

/// The lanes of `v` equal to `x`, as a bit mask (bit `i` for lane `i`): the flow table's signature match. One 16-byte
/// compare on x86_64 (SSE2, part of its baseline), a loop elsewhere.
#[inline(always)]
pub fn eq_mask_u16x8(v: &[u16; 8], x: u16) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi16, _mm_loadu_si128, _mm_movemask_epi8, _mm_packs_epi16, _mm_set1_epi16,
            _mm_setzero_si128,
        };
        // SAFETY: `v` is 16 readable bytes and the unaligned load has no alignment requirement; the intrinsics need
        // SSE2, part of the x86_64 baseline, so they are always available. One block: a load and four lane ops.
        // Each equal 16-bit lane is all ones (-1), which the signed pack keeps as one byte of all ones, so the byte
        // mask of the packed low half is the lane mask (the zero high half adds no bits).
        #[allow(clippy::multiple_unsafe_ops_per_block)]
        let eq = unsafe {
            let eq = _mm_cmpeq_epi16(_mm_loadu_si128(v.as_ptr().cast::<__m128i>()), _mm_set1_epi16(x as i16));
            _mm_movemask_epi8(_mm_packs_epi16(eq, _mm_setzero_si128()))
        };
        eq as u32
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        v.iter().enumerate().fold(0, |m, (i, s)| m | (u32::from(*s == x) << i))
    }
}

/// The lanes of `v` equal to `x`, as a bit mask (bit `i` for lane `i`): the reverse index's free slots. Two 16-byte
/// compares on x86_64 (SSE2), a loop elsewhere.
#[inline(always)]
pub fn eq_mask_u32x8(v: &[u32; 8], x: u32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_loadu_si128, _mm_movemask_ps, _mm_set1_epi32,
        };
        let p = v.as_ptr().cast::<__m128i>();
        // SAFETY: `v` is 32 readable bytes, so `p` and `p + 1` each start 16 of them; unaligned loads have no
        // alignment requirement; the intrinsics need SSE2, part of the x86_64 baseline. One 4-bit mask a half.
        #[allow(clippy::multiple_unsafe_ops_per_block)]
        let (lo, hi) = unsafe {
            let k = _mm_set1_epi32(x as i32);
            (
                _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(_mm_loadu_si128(p), k))),
                _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(_mm_loadu_si128(p.add(1)), k))),
            )
        };
        (lo as u32) | (hi as u32) << 4
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        v.iter().enumerate().fold(0, |m, (i, s)| m | (u32::from(*s == x) << i))
    }
}

/// The lanes of `v` equal to `x`, as a bit mask (bit `i` for lane `i`): a meta line's states of one kind. One 8-byte
/// compare on x86_64 (SSE2), a loop elsewhere.
#[inline(always)]
pub fn eq_mask_u8x8(v: &[u8; 8], x: u8) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_cvtsi64_si128, _mm_movemask_epi8, _mm_set1_epi8};
        // SAFETY: no memory is read (the 8 bytes come in a register); the intrinsics need SSE2, part of the x86_64
        // baseline. The high half of the vector is zero, so it matches only when `x` is 0: masked off below.
        #[allow(clippy::multiple_unsafe_ops_per_block)]
        let eq = unsafe {
            _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_cvtsi64_si128(i64::from_ne_bytes(*v)), _mm_set1_epi8(x as i8)))
        };
        eq as u32 & 0xff
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        v.iter().enumerate().fold(0, |m, (i, s)| m | (u32::from(*s == x) << i))
    }
}

/// The lanes of `v` that are due at `now` on a wrapping millisecond clock: bit `i` when `v[i] - now`, as i32, is 0
/// or less (the flow table's expired entries). Two 16-byte compares on x86_64 (SSE2), a loop elsewhere.
#[inline(always)]
pub fn due_mask_u32x8(v: &[u32; 8], now: u32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_castsi128_ps, _mm_cmpgt_epi32, _mm_loadu_si128, _mm_movemask_ps, _mm_set1_epi32,
            _mm_setzero_si128, _mm_sub_epi32,
        };
        let p = v.as_ptr().cast::<__m128i>();
        // SAFETY: `v` is 32 readable bytes, so `p` and `p + 1` each start 16 of them; unaligned loads have no
        // alignment requirement; the intrinsics need SSE2. A lane still to come has `v - now` above 0.
        #[allow(clippy::multiple_unsafe_ops_per_block)]
        let (lo, hi) = unsafe {
            let (n, z) = (_mm_set1_epi32(now as i32), _mm_setzero_si128());
            let live = |q: *const __m128i| {
                _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(_mm_sub_epi32(_mm_loadu_si128(q), n), z)))
            };
            (live(p), live(p.add(1)))
        };
        !((lo as u32) | (hi as u32) << 4) & 0xff
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        v.iter().enumerate().fold(0, |m, (i, e)| m | (u32::from(e.wrapping_sub(now) as i32 <= 0) << i))
    }
}

/// Among the lanes in `lanes` of the sixteen times `a` then `b`, the one whose `t - now`, as i32, is least: the first
/// such lane when several are equal; `None` when `lanes` is empty. The flow table's eviction choice (the live entry
/// that expires soonest). Branch-free on x86_64 (SSE2): four 4-lane minima, a horizontal one, then the first lane
/// equal to it; a loop elsewhere.
#[inline(always)]
pub fn soonest_lane_u32x16(a: &[u32; 8], b: &[u32; 8], now: u32, lanes: u32) -> Option<usize> {
    let lanes = lanes & 0xffff;
    if lanes == 0 {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_and_si128, _mm_andnot_si128, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_cmpgt_epi32,
            _mm_loadu_si128, _mm_movemask_ps, _mm_or_si128, _mm_set1_epi32, _mm_set_epi32, _mm_shuffle_epi32,
            _mm_sub_epi32,
        };
        let (pa, pb) = (a.as_ptr().cast::<__m128i>(), b.as_ptr().cast::<__m128i>());
        // SAFETY: `a` and `b` are 32 readable bytes each, so `pa`, `pa + 1`, `pb` and `pb + 1` each start 16 of
        // them; unaligned loads have no alignment requirement; the intrinsics need SSE2. Lanes outside `lanes` read
        // as i32::MAX, which loses every comparison but a tie, and ties are settled by `lanes` at the end.
        #[allow(clippy::multiple_unsafe_ops_per_block)]
        let eq = unsafe {
            let n = _mm_set1_epi32(now as i32);
            let (all, max) = (_mm_set1_epi32(lanes as i32), _mm_set1_epi32(i32::MAX));
            let left = |q: *const __m128i, first: i32| {
                let bit = _mm_set_epi32(8 << first, 4 << first, 2 << first, 1 << first);
                let take = _mm_cmpeq_epi32(_mm_and_si128(all, bit), bit);
                let t = _mm_sub_epi32(_mm_loadu_si128(q), n);
                _mm_or_si128(_mm_and_si128(take, t), _mm_andnot_si128(take, max))
            };
            let min = |x: __m128i, y: __m128i| {
                let gt = _mm_cmpgt_epi32(x, y);
                _mm_or_si128(_mm_and_si128(gt, y), _mm_andnot_si128(gt, x))
            };
            let v = [left(pa, 0), left(pa.add(1), 4), left(pb, 8), left(pb.add(1), 12)];
            let m = min(min(v[0], v[1]), min(v[2], v[3]));
            let m = min(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
            let m = min(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
            let at = |x: __m128i| _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(x, m))) as u32;
            at(v[0]) | at(v[1]) << 4 | at(v[2]) << 8 | at(v[3]) << 12
        };
        Some((eq & lanes).trailing_zeros() as usize)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (0..16)
            .filter(|i| lanes >> i & 1 == 1)
            .min_by_key(|&i| (if i < 8 { a[i] } else { b[i - 8] }).wrapping_sub(now) as i32)
    }
}

#[cfg(test)]
mod eq_mask_tests {
    /// Every lane pattern of a probe value among others: the SIMD mask equals the lane-by-lane one.
    #[test]
    fn eq_mask_matches_a_loop() {
        for pattern in 0u32..256 {
            let v: [u16; 8] = std::array::from_fn(|i| if pattern >> i & 1 == 1 { 0xbeef } else { (i as u16) * 77 + 1 });
            let want = v.iter().enumerate().fold(0, |m, (i, s)| m | (u32::from(*s == 0xbeef) << i));
            assert_eq!(super::eq_mask_u16x8(&v, 0xbeef), want, "pattern {pattern:08b}");
            let v: [u32; 8] = std::array::from_fn(|i| if pattern >> i & 1 == 1 { 0 } else { (i as u32) << 29 | 7 });
            let want = v.iter().enumerate().fold(0, |m, (i, s)| m | (u32::from(*s == 0) << i));
            assert_eq!(super::eq_mask_u32x8(&v, 0), want, "u32 pattern {pattern:08b}");
            for x in [0u8, 1, 3, 0xff] {
                let v: [u8; 8] = std::array::from_fn(|i| if pattern >> i & 1 == 1 { x } else { x ^ (1 + i as u8) });
                assert_eq!(super::eq_mask_u8x8(&v, x), pattern, "u8 pattern {pattern:08b}, {x}");
            }
        }
    }

    /// Times around `now` (wrapping the clock, far past and far ahead, equal ones): the due mask and the soonest lane
    /// equal a lane-by-lane loop, for every kind of lane set.
    #[test]
    fn due_and_soonest_match_a_loop() {
        let mut next = crate::xorshift(0x51f1_5eed_0bad_cafe);
        for case in 0..20_000 {
            let now = match case % 4 {
                0 => 0,
                1 => u32::MAX - (next() as u32 % 64),
                _ => next() as u32,
            };
            let mut time = || match next() % 6 {
                0 => now,
                1 => now.wrapping_add(1 + (next() as u32 % 8)),
                2 => now.wrapping_sub(next() as u32 % 8),
                3 => now.wrapping_add(i32::MAX as u32),
                4 => now.wrapping_add(i32::MAX as u32 + 1),
                _ => next() as u32,
            };
            let a: [u32; 8] = std::array::from_fn(|_| time());
            let b: [u32; 8] = std::array::from_fn(|_| time());
            let due = |v: &[u32; 8]| {
                v.iter().enumerate().fold(0, |m, (i, e)| m | (u32::from(e.wrapping_sub(now) as i32 <= 0) << i))
            };
            assert_eq!(super::due_mask_u32x8(&a, now), due(&a), "case {case}: {a:?} at {now}");
            let lanes = match case % 3 {
                0 => 0xffff,
                1 => next() as u32 & 0xffff,
                _ => 1 << (next() % 16),
            } | (next() as u32) << 16;
            let want = (0..16)
                .filter(|i| lanes >> i & 1 == 1)
                .map(|i| ((if i < 8 { a[i] } else { b[i - 8] }).wrapping_sub(now) as i32, i))
                .min()
                .map(|(_, i)| i);
            assert_eq!(
                super::soonest_lane_u32x16(&a, &b, now, lanes),
                want,
                "case {case}: {a:?} {b:?} at {now}, lanes {lanes:#x}"
            );
        }
        assert_eq!(super::soonest_lane_u32x16(&[0; 8], &[0; 8], 0, 0xffff_0000), None);
    }
}
