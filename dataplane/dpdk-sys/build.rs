//! Generate the bindings against the system libdpdk (found with pkg-config) and build the inline-function shim.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/wrapper.h");
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let lib = match pkg_config::Config::new().atleast_version("21.11").probe("libdpdk") {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "\nerror: the `dpdk` feature needs libdpdk (>= 21.11) and its pkg-config file.\n\
                 On Debian 12: apt-get install -y dpdk-dev libdpdk-dev clang libclang-dev pkg-config\n\
                 (or set PKG_CONFIG_PATH to the directory holding libdpdk.pc).\n\
                 pkg-config said: {e}\n"
            );
            std::process::exit(1);
        }
    };
    let args = cflags();
    let mut cc = cc::Build::new();
    cc.file("src/shim.c").include("src").warnings(true).opt_level(3);
    for a in &args {
        cc.flag(a);
    }
    cc.compile("edgelb_dpdk_shim");
    let bindings = bindings(&args);
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    bindings.write_to_file(out.join("bindings.rs")).expect("write bindings.rs");
    // The ring PMD's constructor (`rte_eth_from_rings`) is not in libdpdk's pkg-config link line.
    println!("cargo:rustc-link-lib=dylib=rte_net_ring");
    for p in &lib.link_paths {
        println!("cargo:rustc-link-search=native={}", p.display());
    }
}

/// DPDK's cflags, `-include rte_config.h` and `-march=...` among them; clang and cc both need them.
fn cflags() -> Vec<String> {
    let cflags = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut args: Vec<String> = Vec::new();
    let mut it = cflags.iter();
    while let Some(a) = it.next() {
        if a == "-include" {
            if let Some(f) = it.next() {
                args.push("-include".into());
                args.push(f.clone());
            }
        } else {
            args.push(a.clone());
        }
    }

    args
}

/// The bindings: only what the crate wraps (EAL, mempools, ethdev, rings, the shim).
fn bindings(args: &[String]) -> bindgen::Bindings {
    bindgen::Builder::default()
        .header("src/wrapper.h")
        .clang_args(args.iter().map(String::as_str))
        .clang_arg("-Isrc")
        .allowlist_function("rte_eal_.*")
        .allowlist_function("rte_thread_register")
        .allowlist_function("rte_thread_unregister")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_pktmbuf_free_bulk")
        .allowlist_function("rte_mempool_(free|avail_count|in_use_count|lookup)")
        .allowlist_function("rte_eth_(dev_.*|rx_queue_setup|tx_queue_setup|promiscuous_.*|macaddr_get|link_get_nowait|stats_get|stats_reset|xstats_get|xstats_get_names|from_rings|find_next_owned_by|dev_count_avail|tx_done_cleanup)")
        .allowlist_function("rte_ring_(create|free|lookup)")
        .allowlist_function("edgelb_.*")
        .allowlist_var("RTE_ETH_.*")
        .allowlist_var("RTE_MBUF_DEFAULT_.*")
        .allowlist_var("RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RING_F_.*")
        .allowlist_var("SOCKET_ID_ANY")
        .allowlist_var("RTE_MAX_ETHPORTS")
        .allowlist_var("RTE_ETHER_ADDR_LEN")
        .allowlist_var("RTE_ETH_XSTATS_NAME_SIZE")
        .allowlist_type("rte_eth_.*")
        .allowlist_type("rte_mbuf")
        .opaque_type("rte_mempool")
        .opaque_type("rte_ring")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .generate()
        .unwrap_or_else(|e| {
            eprintln!("\nerror: bindgen could not parse the DPDK headers ({e}); is libclang-dev installed?\n");
            std::process::exit(1);
        })
}
