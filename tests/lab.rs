//! `edgelb lab` as a newcomer runs it: 300 HTTP requests per VIP (NAT, full-NAT, DSR-L2), each on a fresh TCP
//! connection through the appliance; all succeed, the three backends share each VIP within ±30 % of even, and the
//! backends see the client's address in NAT and DSR, the appliance's in full-NAT; one-way UDP at 20 000/s arrives.
//! Nothing is left behind.

#[path = "../dataplane/tests/common/mod.rs"]
mod common;

use std::process::Command;

#[test]
fn lab_runs_three_modes_without_failures() {
    common::require_root();
    // Also 20 000 one-way UDP datagrams at 20 000/s through a UDP VIP: they all arrive (a per-port buffer pool once
    // starved the receiving port under one-way traffic and delivered about 10 %).
    let out = Command::new(env!("CARGO_BIN_EXE_edgelb"))
        .args(["lab", "--requests", "300", "--blast", "20000", "--rate", "20000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "edgelb lab failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("edgelb lab: 0 failed requests of 900"), "{text}");
    for (vip, mode, seen) in [
        ("198.19.0.1", "nat", "198.18.0.10"),
        ("198.19.0.2", "fullnat", "198.18.2.1"),
        ("198.19.0.3", "dsr_l2", "198.18.0.10"),
    ] {
        let line = text.lines().find(|l| l.starts_with(vip)).unwrap_or_else(|| panic!("no row for {vip}:\n{text}"));
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
