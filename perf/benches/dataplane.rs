//! Criterion micro-benchmarks: parsing, Maglev build and lookup, flow-table hit / miss / insert, and the whole
//! pipeline per mode on an established flow (hot cache: the per-packet work without DRAM misses; `edgelb-perf`
//! measures the cold, many-flow case).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use edgelb_dataplane::lb::conntrack::{Entry, FlowKey, FlowTable, Lookup};
use edgelb_dataplane::lb::flow::KeyV4;
use edgelb_dataplane::lb::maglev::{self, backend_key, MaglevBackend};
use edgelb_dataplane::model::Mode;
use edgelb_dataplane::packet::{MemBuf, PacketBuf};
use edgelb_dataplane::pipeline::{Pipeline, TableSizes, Verdict};
use edgelb_dataplane::snapshot::ConfigBuilder;
use edgelb_dataplane::wire::ethernet::parse_l2;
use edgelb_dataplane::wire::ipv4::Ipv4Packet;
use edgelb_dataplane::wire::tcp::TcpPacket;
use edgelb_perf::Scenario;
use std::net::{IpAddr, Ipv4Addr};

fn parse(c: &mut Criterion) {
    let sc = Scenario { mode: Mode::Nat, v6: false, backends: 4, size: 64 };
    let (_, ack) = sc.templates(16, 0, 1);
    let frame = ack.get(0).to_vec();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("eth_ipv4_tcp", |b| {
        b.iter(|| {
            let d = black_box(&frame[..]);
            let l2 = parse_l2(d).unwrap();
            let ip = Ipv4Packet::new_checked(&d[l2.l3_offset..]).unwrap();
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            black_box((ip.src(), ip.dst(), t.src_port(), t.dst_port(), t.flags()))
        })
    });
    g.finish();
}

fn maglev_benches(c: &mut Criterion) {
    let backends: Vec<MaglevBackend> = (0..1000u32)
        .map(|i| MaglevBackend { key: backend_key(IpAddr::V4(Ipv4Addr::from(0xc612_0200 + i)), 80), weight: 1 + i % 4 })
        .collect();
    let mut g = c.benchmark_group("maglev");
    g.sample_size(20);
    g.bench_function("build_n1000_m65537", |b| b.iter(|| maglev::build(black_box(&backends), 65_537).unwrap()));
    // The same table walked probe by probe, as the paper's pseudocode reads: the baseline in the same run.
    g.bench_function("build_by_walking_n1000_m65537", |b| {
        b.iter(|| maglev::build_by_walking(black_box(&backends), 65_537))
    });
    g.bench_function("build_n100_m65537", |b| b.iter(|| maglev::build(black_box(&backends[..100]), 65_537).unwrap()));
    // One backend added to a thousand: following the chains it starts (`with_added`, the same table) against a
    // build of the 1001, for equal weights and for weights 1 to 4.
    for (name, weighted) in [("equal", false), ("weighted", true)] {
        let set: Vec<MaglevBackend> = (0..1001u32)
            .map(|i| MaglevBackend {
                key: backend_key(IpAddr::V4(Ipv4Addr::from(0xc612_0200 + i)), 80),
                weight: if weighted { 1 + i % 4 } else { 1 },
            })
            .collect();
        let before = maglev::build(&set[..1000], 65_537).unwrap();
        let applies = before.with_added(&set[1000..]).is_some();
        println!(
            "maglev add_one_{name}_n1000_m65537: incremental {}",
            if applies { "applies" } else { "declines (builds)" }
        );
        g.bench_function(format!("build_{name}_n1001_m65537"), |b| {
            b.iter(|| maglev::build(black_box(&set), 65_537).unwrap())
        });
        g.bench_function(format!("add_one_{name}_n1000_m65537"), |b| {
            b.iter(|| {
                before.with_added(black_box(&set[1000..])).unwrap_or_else(|| maglev::build(&set, 65_537).unwrap())
            })
        });
    }
    let t = maglev::build(&backends, 65_537).unwrap();
    g.throughput(Throughput::Elements(1));
    let mut h = 0x1234_5678_9abc_def0u64;
    g.bench_function("lookup", |b| {
        b.iter(|| {
            h = h.wrapping_mul(6364136223846793005).wrapping_add(1);
            black_box(t.lookup(h))
        })
    });
    g.finish();
}

fn key(i: u32) -> KeyV4 {
    KeyV4 { src: (0xc612_8000 + (i >> 10)).to_be_bytes(), dst: [198, 19, 0, 1], sport: i as u16, dport: 80, proto: 6 }
}

fn conntrack(c: &mut Criterion) {
    let n = 1_000_000u32;
    let mut t = FlowTable::<KeyV4>::with_reverse(n as usize);
    for i in 0..n {
        let k = key(i);
        t.insert(k, k.hash(), 0, Entry::new(1 << 30, i, 0, 2, 0), |_| 0).unwrap();
    }
    let mut g = c.benchmark_group("conntrack_1M");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u32;
    g.bench_function("hit_random", |b| {
        b.iter(|| {
            i = i.wrapping_mul(1_664_525).wrapping_add(1_013_904_223) % n;
            let k = key(i);
            matches!(t.lookup(&k, k.hash(), 1), Lookup::Hit(..))
        })
    });
    g.bench_function("miss", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let k = key(n + i);
            matches!(t.lookup(&k, k.hash(), 1), Lookup::Hit(..))
        })
    });
    g.bench_function("insert_then_remove", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let k = key(n + (i % 100_000));
            if let Ok((slot, _)) = t.insert(k, k.hash(), 1, Entry::new(1 << 30, 0, 0, 1, 0), |_| 0) {
                t.remove_slot(slot);
            }
        })
    });
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline_established");
    g.throughput(Throughput::Elements(1));
    for mode in [Mode::Nat, Mode::FullNat, Mode::DsrL2, Mode::Ipip, Mode::Gue] {
        let sc = Scenario { mode, v6: false, backends: 16, size: 64 };
        let (cfg, _) = ConfigBuilder::new().build(&sc.model()).unwrap();
        let (syn, ack) = sc.templates(1, 0, 1);
        let mut p = Pipeline::new(0, 1, TableSizes { flows_v4: 1024, flows_v6: 64, affinity: 64, fragments: 64 });
        p.sync(&cfg);
        let mut b0 = MemBuf::from_slice(syn.get(0));
        b0.set_len(64);
        assert!(matches!(p.process(&cfg, 0, &mut b0, 1), Verdict::Tx(_)));
        let mut frame = MemBuf::from_slice(ack.get(0));
        frame.set_len(64);
        g.bench_function(mode.name(), |b| {
            b.iter_batched_ref(|| frame.clone(), |buf| black_box(p.process(&cfg, 0, buf, 2)), BatchSize::SmallInput)
        });
    }
    g.finish();
}

criterion_group!(benches, parse, maglev_benches, conntrack, pipeline);
criterion_main!(benches);
