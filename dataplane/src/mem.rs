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
        }
    }
}
