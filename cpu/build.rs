//! Compiles `src/check.c` for the x86-64 baseline with the target features this build assumes
//! (`CARGO_CFG_TARGET_FEATURE`, which follows `RUSTFLAGS` and `.cargo/config.toml`) as `EDGELB_CPU_REQUIRED`.

fn main() {
    println!("cargo:rerun-if-changed=src/check.c");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("x86_64") {
        return;
    }
    let required = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    cc::Build::new()
        .file("src/check.c")
        .inherit_rustflags(false)
        // Last on the command line, so CFLAGS cannot raise it: the check must run on any x86-64 CPU.
        .flag("-march=x86-64")
        .define("EDGELB_CPU_REQUIRED", format!("\"{required}\"").as_str())
        .compile("edgelb_cpu_check");
}
