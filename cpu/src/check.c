/* Before main: refuse to start on a CPU that lacks a feature the Rust build assumes, with a message that names it.
 *
 * C, compiled for the x86-64 baseline, because Rust code of a build for x86-64-v3 uses AVX and BMI2 instructions
 * anywhere, rustc's own main shim and an integer shift included: such a check would die of the very illegal
 * instruction it is there to explain. The binary puts edgelb_cpu_check in its .init_array (check_before_main! in
 * lib.rs), which the C library runs before main. EDGELB_CPU_REQUIRED, from build.rs, lists the target features the
 * build was compiled with (CARGO_CFG_TARGET_FEATURE). */
#include <cpuid.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#ifndef EDGELB_CPU_REQUIRED
#define EDGELB_CPU_REQUIRED ""
#endif

/* Where CPUID reports a feature: leaf 1 ECX, leaf 7 (sub-leaf 0) EBX, leaf 0x80000001 ECX (Intel SDM vol. 2A,
 * CPUID; AMD APM vol. 3, appendix E). `state`: the XCR0 bits the OS must set for the feature's registers (SSE and
 * AVX state 0x6; with AVX-512's opmask and upper registers 0xe6). */
enum { LEAF1_ECX, LEAF7_EBX, EXT1_ECX, WORDS };

static const struct feature {
    const char *name; /* as rustc names it */
    uint8_t word, bit;
    uint8_t state;
} FEATURES[] = {
    {"sse3", LEAF1_ECX, 0, 0},       {"ssse3", LEAF1_ECX, 9, 0},      {"sse4.1", LEAF1_ECX, 19, 0},
    {"sse4.2", LEAF1_ECX, 20, 0},    {"popcnt", LEAF1_ECX, 23, 0},    {"cmpxchg16b", LEAF1_ECX, 13, 0},
    {"avx", LEAF1_ECX, 28, 0x6},     {"avx2", LEAF7_EBX, 5, 0x6},     {"bmi1", LEAF7_EBX, 3, 0},
    {"bmi2", LEAF7_EBX, 8, 0},       {"lzcnt", EXT1_ECX, 5, 0},       {"movbe", LEAF1_ECX, 22, 0},
    {"fma", LEAF1_ECX, 12, 0x6},     {"f16c", LEAF1_ECX, 29, 0x6},    {"xsave", LEAF1_ECX, 26, 0},
    {"avx512f", LEAF7_EBX, 16, 0xe6}, {"avx512bw", LEAF7_EBX, 30, 0xe6}, {"avx512cd", LEAF7_EBX, 28, 0xe6},
    {"avx512dq", LEAF7_EBX, 17, 0xe6}, {"avx512vl", LEAF7_EBX, 31, 0xe6},
};

/* What this CPU reports: the three CPUID words, and XCR0 (0 when the OS has not enabled XGETBV). */
void edgelb_cpu_words(uint32_t words[WORDS], uint64_t *xcr0) {
    unsigned a, b, c, d;
    unsigned max = __get_cpuid_max(0, 0), max_ext = __get_cpuid_max(0x80000000, 0);
    words[LEAF1_ECX] = words[LEAF7_EBX] = words[EXT1_ECX] = 0;
    *xcr0 = 0;
    if (max >= 1 && __get_cpuid(1, &a, &b, &c, &d)) {
        words[LEAF1_ECX] = c;
        if (c >> 27 & 1) { /* OSXSAVE: XGETBV is enabled */
            unsigned lo, hi;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            *xcr0 = (uint64_t)hi << 32 | lo;
        }
    }
    if (max >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        words[LEAF7_EBX] = b;
    }
    if (max_ext >= 0x80000001 && __get_cpuid(0x80000001, &a, &b, &c, &d))
        words[EXT1_ECX] = c;
}

/* Whether the comma-separated `list` holds `name`. */
static int listed(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, name, n) == 0)
            return 1;
        if (!end)
            break;
        p = end + 1;
    }
    return 0;
}

/* The features of `required` (comma-separated) that a CPU reporting `words` and `xcr0` lacks, written to `out`
 * (`cap` bytes, NUL-terminated, truncated if need be) separated by ", "; how many. */
size_t edgelb_cpu_lacking(const char *required, const uint32_t words[WORDS], uint64_t xcr0, char *out, size_t cap) {
    size_t count = 0, at = 0;
    if (cap)
        out[0] = 0;
    for (size_t i = 0; i < sizeof FEATURES / sizeof FEATURES[0]; i++) {
        const struct feature *f = &FEATURES[i];
        int has = (words[f->word] >> f->bit & 1) && (xcr0 & f->state) == f->state;
        if (has || !listed(required, f->name))
            continue;
        const char *parts[2] = {count ? ", " : "", f->name};
        for (int k = 0; k < 2; k++)
            for (const char *p = parts[k]; *p && at + 1 < cap; p++)
                out[at++] = *p;
        if (cap)
            out[at] = 0;
        count++;
    }
    return count;
}

/* The features this build requires, as build.rs found them. */
const char *edgelb_cpu_required(void) { return EDGELB_CPU_REQUIRED; }

static void say(const char *s) {
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(2, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* The .init_array entry: exit with status 2 and the message when this CPU lacks a required feature. */
void edgelb_cpu_check(int argc, char **argv, char **envp) {
    (void)envp;
    uint32_t words[WORDS];
    uint64_t xcr0;
    char lacking[256];
    edgelb_cpu_words(words, &xcr0);
    if (!edgelb_cpu_lacking(EDGELB_CPU_REQUIRED, words, xcr0, lacking, sizeof lacking))
        return;
    const char *program = argc > 0 && argv && argv[0] ? argv[0] : "edgelb";
    const char *slash = strrchr(program, '/');
    say(slash ? slash + 1 : program);
    say(": this build assumes CPU features this CPU lacks: ");
    say(lacking);
    say(". It was built for x86-64-v3 (.cargo/config.toml); for an older CPU, build with "
        "RUSTFLAGS=\"-C target-cpu=x86-64-v2\" (or \"-C target-cpu=native\" on the machine itself), which replaces "
        "that setting\n");
    _exit(2);
}
