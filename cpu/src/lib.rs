//! The CPU features a build assumes, checked against the CPU it starts on.
//!
//! The workspace builds for `x86-64-v3` (`.cargo/config.toml`): AVX2, BMI1/2, LZCNT, MOVBE and FMA, which Intel CPUs
//! have since Haswell (2013) and AMD's since Excavator (2015). The compiler uses them anywhere, so on an older CPU a
//! binary would die of an illegal instruction at some arbitrary point; rustc's own `main` shim already uses AVX moves,
//! and an integer shift becomes BMI2's `shlx`. So the check is C compiled for the x86-64 baseline (`src/check.c`),
//! and [`check_before_main!`] puts it in the binary's `.init_array`, which the C library runs before `main`. It
//! compares the target features the build was compiled with (`CARGO_CFG_TARGET_FEATURE`, passed by `build.rs`) with
//! what the CPU reports (CPUID, and XCR0 for the registers the OS saves), and names what is missing, with the command
//! that builds for an older CPU. `tests/cpu_level.rs` runs the binaries under QEMU as a CPU without AVX.

/// The three CPUID words `src/check.c` reads (leaf 1 ECX, leaf 7 EBX, leaf 0x8000_0001 ECX) and XCR0.
pub type Report = ([u32; 3], u64);

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod ffi {
    use std::ffi::{c_char, c_int, CStr, CString};

    extern "C" {
        fn edgelb_cpu_words(words: *mut u32, xcr0: *mut u64);
        fn edgelb_cpu_lacking(
            required: *const c_char,
            words: *const u32,
            xcr0: u64,
            out: *mut c_char,
            cap: usize,
        ) -> usize;
        fn edgelb_cpu_required() -> *const c_char;
        /// The `.init_array` entry: exits with status 2 and the message when the CPU lacks a required feature.
        pub fn edgelb_cpu_check(argc: c_int, argv: *const *const c_char, envp: *const *const c_char);
    }

    pub fn report() -> super::Report {
        let (mut words, mut xcr0) = ([0u32; 3], 0u64);
        // SAFETY: the function writes three u32 to `words` and one u64 to `xcr0`, both valid for those writes.
        unsafe { edgelb_cpu_words(words.as_mut_ptr(), &mut xcr0) };
        (words, xcr0)
    }

    pub fn lacking(required: &str, (words, xcr0): super::Report) -> String {
        let Ok(required) = CString::new(required) else { return String::new() };
        let mut out = [0 as c_char; 512];
        // SAFETY: `required` is NUL-terminated, `words` holds the three words read, and the function writes at most
        // `out.len()` bytes to `out`, NUL included.
        unsafe { edgelb_cpu_lacking(required.as_ptr(), words.as_ptr(), xcr0, out.as_mut_ptr(), out.len()) };
        // SAFETY: the function NUL-terminates `out` within its capacity.
        unsafe { CStr::from_ptr(out.as_ptr()) }.to_string_lossy().into_owned()
    }

    pub fn required() -> String {
        // SAFETY: a C function without arguments or side effects.
        let p = unsafe { edgelb_cpu_required() };
        // SAFETY: it returns a pointer to a NUL-terminated string literal, which lives as long as the program.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

#[cfg(target_arch = "x86_64")]
pub use ffi::edgelb_cpu_check;

/// What this CPU reports ([`Report`]).
pub fn report() -> Report {
    #[cfg(target_arch = "x86_64")]
    return ffi::report();
    #[cfg(not(target_arch = "x86_64"))]
    ([0; 3], 0)
}

/// The features of `required` (comma-separated, as `rustc` names them) that a CPU reporting `report` lacks, joined
/// by ", ". Names the check does not know are not asked for.
pub fn lacking(required: &str, report: Report) -> String {
    #[cfg(target_arch = "x86_64")]
    return ffi::lacking(required, report);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (required, report);
        String::new()
    }
}

/// The target features this build was compiled with, comma-separated (from `CARGO_CFG_TARGET_FEATURE`).
pub fn required() -> String {
    #[cfg(target_arch = "x86_64")]
    return ffi::required();
    #[cfg(not(target_arch = "x86_64"))]
    String::new()
}

/// Check the CPU from the binary's `.init_array`, before rustc's `main` shim runs (see the crate's documentation):
/// `edgelb_cpu::check_before_main!();` at the top level of a binary crate. The message names the binary by its
/// `argv[0]`.
#[macro_export]
macro_rules! check_before_main {
    () => {
        // A function pointer in .init_array, which the C library calls with (argc, argv, envp) before `main`.
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        #[used]
        #[link_section = ".init_array"]
        static EDGELB_CPU_CHECK: unsafe extern "C" fn(
            ::std::ffi::c_int,
            *const *const ::std::ffi::c_char,
            *const *const ::std::ffi::c_char,
        ) = $crate::edgelb_cpu_check;
    };
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Every feature the check knows, and /proc/cpuinfo's name for it (the kernel's cpufeatures.h).
    const KNOWN: [(&str, &str); 20] = [
        ("sse3", "pni"),
        ("ssse3", "ssse3"),
        ("sse4.1", "sse4_1"),
        ("sse4.2", "sse4_2"),
        ("popcnt", "popcnt"),
        ("cmpxchg16b", "cx16"),
        ("avx", "avx"),
        ("avx2", "avx2"),
        ("bmi1", "bmi1"),
        ("bmi2", "bmi2"),
        ("lzcnt", "abm"),
        ("movbe", "movbe"),
        ("fma", "fma"),
        ("f16c", "f16c"),
        ("xsave", "xsave"),
        ("avx512f", "avx512f"),
        ("avx512bw", "avx512bw"),
        ("avx512cd", "avx512cd"),
        ("avx512dq", "avx512dq"),
        ("avx512vl", "avx512vl"),
    ];

    #[test]
    fn names_what_a_cpu_lacks() {
        // Westmere: SSE3 (bit 0), SSSE3 (9), CX16 (13), SSE4.1 (19), SSE4.2 (20), POPCNT (23); nothing in leaf 7.
        let westmere = [1 | 1 << 9 | 1 << 13 | 1 << 19 | 1 << 20 | 1 << 23, 0, 0];
        let v3 =
            "fxsr,sse,sse2,sse3,ssse3,sse4.1,sse4.2,popcnt,cmpxchg16b,avx,avx2,bmi1,bmi2,lzcnt,movbe,fma,f16c,xsave";
        assert_eq!(lacking(v3, (westmere, 0)), "avx, avx2, bmi1, bmi2, lzcnt, movbe, fma, f16c, xsave");
        assert_eq!(lacking("sse4.2,popcnt", (westmere, 0)), "");
        assert_eq!(lacking("sse4.2,popcnt", ([0; 3], 0)), "sse4.2, popcnt");
        // AVX reported by CPUID (bit 28) but its registers not saved by the OS (XCR0 without bits 1 and 2): lacking.
        let avx = [westmere[0] | 1 << 28 | 1 << 27, 0, 0];
        assert_eq!(lacking("avx", (avx, 0b1)), "avx");
        assert_eq!(lacking("avx", (avx, 0b111)), "");
        // Names it does not know (and a near miss of one it does) are not asked for.
        assert_eq!(lacking("fxsr,sse2,avx5,avx512", ([0; 3], 0)), "");
    }

    #[test]
    fn detection_agrees_with_the_kernels_cpu_flags() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo");
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("flags"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, f)| f.split_whitespace().collect())
            .expect("a flags line");
        let every: Vec<&str> = KNOWN.iter().map(|(f, _)| *f).collect();
        let absent: Vec<&str> = KNOWN.iter().filter(|(_, k)| !flags.contains(k)).map(|(f, _)| *f).collect();
        assert_eq!(lacking(&every.join(","), report()), absent.join(", "));
    }

    #[test]
    fn the_required_list_is_what_the_build_was_compiled_with() {
        let required = required();
        let listed = |f: &str| required.split(',').any(|x| x == f);
        assert!(listed("sse2"), "{required}");
        assert_eq!(listed("avx2"), cfg!(target_feature = "avx2"), "{required}");
        assert_eq!(listed("bmi2"), cfg!(target_feature = "bmi2"), "{required}");
        assert_eq!(listed("popcnt"), cfg!(target_feature = "popcnt"), "{required}");
    }

    #[test]
    fn this_cpu_runs_this_build() {
        // The test runs, so the CPU has what the build assumes, and the check must agree.
        assert_eq!(lacking(&required(), report()), "");
    }
}
