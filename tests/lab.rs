//! `edgelb lab` as a newcomer runs it: 300 HTTP requests per VIP (NAT, full-NAT, DSR-L2, in IPv4 and in IPv6, no
//! static neighbours on the appliance), each on a fresh TCP connection through the appliance; all succeed, the three
//! backends share each VIP within ±30 % of even, and the backends see the client's address in NAT and DSR, the
//! appliance's in full-NAT; one-way UDP at 20 000/s arrives. Nothing is left behind. `--keep` leaves a working lab
//! whose printed commands work as printed, and `edgelb lab-remove` removes all of it.

use std::process::Command;

/// The lab tests take turns: two labs' busy-polling daemons on two cores starve each other.
static ONE_LAB_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn lab_runs_three_modes_in_both_families_without_failures() {
    edgelb_testkit::netns::require_root();
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // Also 20 000 one-way UDP datagrams at 20 000/s through a UDP VIP: they all arrive (a per-port buffer pool once
    // starved the receiving port under one-way traffic and delivered about 10 %).
    let out = Command::new(env!("CARGO_BIN_EXE_edgelb"))
        .args(["lab", "--requests", "300", "--blast", "20000", "--rate", "20000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "edgelb lab failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("edgelb lab: 0 failed requests of 1800"), "{text}");
    for (vip, mode, seen) in [
        ("198.19.0.1", "nat", "198.18.0.10"),
        ("198.19.0.2", "fullnat", "198.18.2.1"),
        ("198.19.0.3", "dsr_l2", "198.18.0.10"),
        ("2001:db8:100::1", "nat", "2001:db8::10"),
        ("2001:db8:100::2", "fullnat", "2001:db8:2:1::1"),
        ("2001:db8:100::3", "dsr_l2", "2001:db8::10"),
    ] {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(vip))
            .unwrap_or_else(|| panic!("no row for {vip}:\n{text}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((cols[1], cols[2], cols[3]), (mode, "300", "0"), "{line}");
        // "be1: 104 (198.18.0.10)  be2: 98 (198.18.0.10)  be3: 98 (198.18.0.10)"
        let shares: Vec<(String, usize, String)> = cols[4..]
            .chunks(3)
            .map(|c| {
                (
                    c[0].trim_end_matches(':').to_string(),
                    c[1].parse().unwrap(),
                    c[2].trim_matches(['(', ')']).to_string(),
                )
            })
            .collect();
        assert_eq!(shares.len(), 3, "three backends answer {vip}: {line}");
        for (b, n, s) in &shares {
            assert!((70..=130).contains(n), "{vip}: {b} got {n} of 300 (even is 100 ± 30 %): {line}");
            assert_eq!(s, seen, "{vip}: the address {b} saw");
        }
    }
    let blast = text.lines().find(|l| l.starts_with("UDP blast")).unwrap_or_else(|| panic!("no blast line:\n{text}"));
    let delivered: u64 = blast
        .split("delivered ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(delivered >= 19_800, "one-way UDP through the appliance: {blast}");
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&left.stdout).contains("elb-lab-"), "the lab left namespaces behind");
}

/// `--keep`: the daemon keeps running, every command the lab prints works as printed (HTTP to an IPv4 and an IPv6
/// VIP, the appliance's stats through its API), and the printed remove command leaves no namespace, process or file.
#[test]
fn lab_keep_leaves_a_working_lab_and_its_remove_command_removes_it() {
    edgelb_testkit::netns::require_root();
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_edgelb")).args(["lab", "--requests", "5", "--keep"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "edgelb lab --keep failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let command = |label: &str| -> Vec<String> {
        let mut lines = text.lines().skip_while(|l| !l.trim_start().starts_with(label));
        let first = lines.next().unwrap_or_else(|| panic!("no {label} line:\n{text}"));
        let mut v = vec![first.trim_start().trim_start_matches(label).trim().to_string()];
        v.extend(lines.take_while(|l| l.starts_with("           ")).map(|l| l.trim().to_string()));
        v
    };
    let sh = |cmd: &str| Command::new("sh").args(["-c", cmd]).output().unwrap();
    let prefix = text.split("lab-remove ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string();
    let cleanup = Cleanup(prefix.clone());
    for try_cmd in command("try:") {
        let o = sh(&format!("{try_cmd} -m 5"));
        let body = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && body.starts_with("be"), "{try_cmd}: {body} {o:?}");
    }
    let stats = command("stats:").remove(0);
    let o = sh(&stats);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && table.contains("[2001:db8:100::1]:80") && table.contains("198.19.0.1:80"), "{table}");
    let remove = command("remove:").remove(0);
    let o = sh(&remove);
    assert!(o.status.success(), "{remove}: {o:?}");
    std::mem::forget(cleanup);
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&left.stdout).contains(&prefix), "namespaces left behind");
    let files: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(files.is_empty(), "files left behind: {files:?}");
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ps.stdout).contains("lab-server"), "backend servers left running");
}

/// Removes a kept lab if the test fails before its own remove command ran.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_edgelb")).args(["lab-remove", &self.0]).output();
    }
}
