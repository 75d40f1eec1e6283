//! What an operator sees when a binary meets a CPU older than its build assumes (`.cargo/config.toml`, the
//! edgelb-cpu crate, whose check runs before `main`): edgelbd and edgelb run under QEMU's user-mode emulator as a Westmere CPU (SSE4.2 and POPCNT,
//! no AVX) must say what is missing and exit with status 2, not die of an illegal instruction; as a CPU with
//! everything (`-cpu max`), the same command runs. Needs `qemu-x86_64` (Debian `qemu-user`).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EDGELBD: &str = env!("CARGO_BIN_EXE_edgelbd");
const EDGELB: &str = env!("CARGO_BIN_EXE_edgelb");

/// `program --version` under `qemu-x86_64 -cpu model`, killed after 60 s.
fn emulated(model: &str, program: &str) -> Output {
    let mut child = Command::new("qemu-x86_64")
        .args(["-cpu", model, program, "--version"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-x86_64 (Debian qemu-user)");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{program} under qemu -cpu {model} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn an_older_cpu_gets_a_message_naming_what_it_lacks_not_an_illegal_instruction() {
    // What QEMU's Westmere model reports: SSE3, SSSE3, CX16, SSE4.1, SSE4.2 and POPCNT; no OSXSAVE, nothing in leaf 7.
    let westmere = ([1 | 1 << 9 | 1 << 13 | 1 << 19 | 1 << 20 | 1 << 23, 0, 0], 0);
    let lacking = edgelb_cpu::lacking(&edgelb_cpu::required(), westmere);
    for (program, name) in [(EDGELBD, "edgelbd"), (EDGELB, "edgelb")] {
        let o = emulated("max", program);
        assert!(o.status.success(), "{name} under -cpu max: {:?} {}", o.status, String::from_utf8_lossy(&o.stderr));
        let o = emulated("Westmere", program);
        let said = String::from_utf8_lossy(&o.stderr);
        if lacking.is_empty() {
            // A build for x86-64-v2 or below: Westmere runs it.
            assert!(o.status.success(), "{name} under -cpu Westmere: {:?} {said}", o.status);
            continue;
        }
        assert_eq!(o.status.code(), Some(2), "{name} under -cpu Westmere: {:?} {said}", o.status);
        let want = format!("{name}: this build assumes CPU features this CPU lacks: {lacking}.");
        assert!(said.starts_with(&want), "{name} said {said:?}, expected it to start with {want:?}");
        assert!(said.contains("target-cpu=x86-64-v2"), "{said}");
        assert!(o.stdout.is_empty(), "{name} went on past the check: {}", String::from_utf8_lossy(&o.stdout));
    }
}
