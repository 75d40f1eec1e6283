//! Golden packets through the whole pipeline: every step of `tests/golden/cases.json` runs, in order, through one
//! pipeline (state carries from step to step: handshakes, replies, fragments, config changes). Inputs and expected
//! outputs were produced by scapy (`tests/golden/make_golden.py`), an implementation independent of this code; the
//! comparison is byte for byte.
//!
//! The same table is also replayed through a worker and in-memory ports, so dispatch and transmit are covered too.

mod golden_support;

use edgelb_dataplane::packet::{MemBuf, PacketBuf};
use edgelb_dataplane::pipeline::{Pipeline, TableSizes, Verdict};
use edgelb_dataplane::port::mem;
use edgelb_dataplane::snapshot::{ConfigBuilder, ConfigHandle};
use edgelb_dataplane::worker;
use golden_support::{load, model};

fn verdict_name(v: Verdict) -> String {
    match v {
        Verdict::Tx(p) => format!("tx:{p}"),
        Verdict::SlowPath => "slowpath".into(),
        Verdict::Drop(r) => format!("drop:{}", r.name()),
        Verdict::Handoff(w) => format!("handoff:{w}"),
        Verdict::Resolve(p) => format!("resolve:{p}"),
    }
}

fn hexdiff(got: &[u8], want: &[u8]) -> String {
    let first = got.iter().zip(want.iter()).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    format!(
        "lengths got {} want {}; first difference at byte {first}\n got: {:02x?}\nwant: {:02x?}",
        got.len(),
        want.len(),
        &got[first.saturating_sub(4)..got.len().min(first + 24)],
        &want[first.saturating_sub(4)..want.len().min(first + 24)]
    )
}

#[test]
fn golden_table_through_the_pipeline() {
    let g = load();
    assert!(g.cases.len() >= 30, "the table must hold at least 30 cases");
    let mut builder = ConfigBuilder::new();
    let (cfg_a, _) = builder.build(&model(&g.config, "A")).expect("config A is valid");
    let (cfg_b, moved) = builder.build(&model(&g.config, "B")).expect("config B is valid");
    // Config B adds a backend to one service and drains another: those two services' tables changed.
    assert!(moved.iter().filter(|m| m.moved > 0).count() >= 1, "{moved:?}");
    let mut p = Pipeline::new(0, 1, TableSizes { flows_v4: 4096, flows_v6: 4096, affinity: 1024, fragments: 256 });
    let mut failures = Vec::new();
    let mut modes_seen = std::collections::BTreeSet::new();
    for (i, c) in g.cases.iter().enumerate() {
        let name = c["name"].as_str().unwrap();
        let cfg = if c["config"] == "A" { &cfg_a } else { &cfg_b };
        p.sync(cfg);
        let input = &g.inputs[c["input"].as_u64().unwrap() as usize];
        let mut b = MemBuf::from_slice(input);
        let v = p.process(cfg, c["in_port"].as_u64().unwrap() as u16, &mut b, 1000 + i as u32);
        let want_v = c["verdict"].as_str().unwrap();
        if verdict_name(v) != want_v {
            failures.push(format!("{name}: verdict {} want {want_v}", verdict_name(v)));
            continue;
        }
        if let Some(e) = c["expected"].as_u64() {
            let want = &g.expected[e as usize];
            if b.data() != &want[..] {
                failures.push(format!("{name}: output differs: {}", hexdiff(b.data(), want)));
            }
        }
        modes_seen.insert(name.split('_').take(2).collect::<Vec<_>>().join("_"));
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n{}",
        failures.len(),
        g.cases.len(),
        failures.join("\n")
    );
    for m in
        ["v4_nat", "v4_fullnat", "v4_dsr", "v4_ipip", "v4_gue", "v6_nat", "v6_fullnat", "v6_dsr", "v6_ipip", "v6_gue"]
    {
        assert!(modes_seen.contains(m), "no golden case for {m}");
    }
    // Every drop was counted under its reason; nothing else was dropped.
    let drops: u64 = g.cases.iter().filter(|c| c["verdict"].as_str().unwrap().starts_with("drop:")).count() as u64;
    assert_eq!(p.counters.dropped_total(), drops);
}

/// The same table through a worker with in-memory ports: what leaves each port, in order, is what scapy expects.
#[test]
fn golden_table_through_a_worker() {
    let g = load();
    let mut builder = ConfigBuilder::new();
    let (cfg_a, _) = builder.build(&model(&g.config, "A")).unwrap();
    let (cfg_b, _) = builder.build(&model(&g.config, "B")).unwrap();
    let handle = ConfigHandle::new(cfg_a.clone());
    let (p0, peer0) = mem::pair("p0", 64);
    let (p1, peer1) = mem::pair("p1", 64);
    let peers = [peer0, peer1];
    let mut w =
        worker::single(vec![p0, p1], TableSizes { flows_v4: 4096, flows_v6: 4096, affinity: 1024, fragments: 256 });
    let mut slow = 0;
    for c in &g.cases {
        handle.publish(if c["config"] == "A" { cfg_a.clone() } else { cfg_b.clone() });
        let input = &g.inputs[c["input"].as_u64().unwrap() as usize];
        let port = c["in_port"].as_u64().unwrap() as usize;
        assert!(peers[port].inject_bytes(input));
        assert_eq!(w.poll(&handle), 1);
        let want_v = c["verdict"].as_str().unwrap();
        if let Some(out_port) = want_v.strip_prefix("tx:") {
            let out_port: usize = out_port.parse().unwrap();
            let got = peers[out_port].collect().unwrap_or_else(|| panic!("{}: nothing on port {out_port}", c["name"]));
            let want = &g.expected[c["expected"].as_u64().unwrap() as usize];
            assert_eq!(got.data(), &want[..], "{}", c["name"]);
        }
        if want_v == "slowpath" {
            assert!(w.slow_path_pop().is_some(), "{}: not on the slow-path ring", c["name"]);
            slow += 1;
        }
        for p in &peers {
            assert!(p.collect().is_none(), "{}: unexpected extra output", c["name"]);
        }
    }
    assert!(slow > 0);
}
