//! Criterion micro-benchmarks: parsing, Maglev build and lookup, flow-table hit / miss / insert, bursts of lookups
//! through the worker's prefetch pipeline against the memory system's allowance for their lines, and the whole
//! pipeline per mode on an established flow (hot cache: the per-packet work without DRAM misses; `edgelb-perf`
//! measures the cold, many-flow case).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use edgelb_dataplane::lb::conntrack::{Ahead, Entry, FlowKey, FlowTable, Lookup, NO_SLOT};
use edgelb_dataplane::lb::flow::KeyV4;
use edgelb_dataplane::lb::maglev::{self, backend_key, MaglevBackend};
use edgelb_dataplane::mem::{prefetch, HugeArray};
use edgelb_dataplane::model::Mode;
use edgelb_dataplane::packet::{MemBuf, PacketBuf};
use edgelb_dataplane::pipeline::{Pipeline, TableSizes, Verdict};
use edgelb_dataplane::snapshot::ConfigBuilder;
use edgelb_dataplane::wire::ethernet::parse_l2;
use edgelb_dataplane::wire::ipv4::Ipv4Packet;
use edgelb_dataplane::wire::tcp::TcpPacket;
use edgelb_dataplane::worker::{AHEAD_ENTRIES, AHEAD_META};
use edgelb_perf::{Scenario, STRIDE};
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
    burst_lookups(c, "burst_lookup_1M", &t, n);
    let small = 10_000u32;
    let mut t = FlowTable::<KeyV4>::with_reverse(small as usize);
    for i in 0..small {
        let k = key(i);
        t.insert(k, k.hash(), 0, Entry::new(1 << 30, i, 0, 2, 0), |_| 0).unwrap();
    }
    burst_lookups(c, "burst_lookup_10k", &t, small);
}

/// A line of memory, for [`burst_lookups`]' model of the table.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u64; 8]);

/// What the memory system allows the established lookup, against what the table takes: bursts of 64 random keys of
/// `n` held, through the worker's pipeline (stage 1 [`AHEAD_META`] + [`AHEAD_ENTRIES`] packets ahead, stage 2
/// [`AHEAD_ENTRIES`] ahead), as
/// - `table`: the table's own stages (`prefetch_sigs_in`, `prefetch_entries_in`, `live_at`), every key a hit;
/// - `lines_3`: the same random lines and no work on them, in a region the table's size: both candidate meta lines at
///   stage 1, a slot line chosen from what they hold at stage 2, read at stage 3 (the table's layout);
/// - `lines_2`: both candidate buckets at stage 1, nothing at stage 2, each bucket one line with its keys beside their
///   metadata (what that layout would read: a 32-byte IPv4 slot, meta included, makes the same region).
///
/// Each also `+packets`: every burst first reads 96 bytes a packet in order from `n` × [`STRIDE`] bytes, as the replay
/// port copies its templates (a NIC's packets, where they come from memory); `packets` is that read alone.
/// Criterion's throughput is in packets.
fn burst_lookups(c: &mut Criterion, group: &str, t: &FlowTable<KeyV4>, n: u32) {
    const B: usize = 64;
    let (per_slot, _) = FlowTable::<KeyV4>::bytes_per_slot();
    let lines = t.capacity() * per_slot / 64;
    // Meta lines first, then three slot lines a bucket (8 slots of 24 bytes), as the table lays them out.
    let nbuckets = lines / 4;
    let mut region = HugeArray::new(lines, Line([0; 8]));
    for (i, l) in region.as_mut_slice().iter_mut().enumerate() {
        l.0[0] = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    let region = region.as_slice();
    let packets = vec![Line([1; 8]); n as usize * STRIDE / 64];
    let mut at = 0;
    // The burst's packet data, read once before its lookups.
    let mut receive = |on: bool| {
        let mut x = 0u64;
        for _ in 0..if on { B * STRIDE / 64 } else { 0 } {
            x = x.wrapping_add(packets[at].0[0]);
            at = (at + 1) % packets.len();
        }
        black_box(x);
    };
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(B as u64));
    let mut i = 0u32;
    let mut next_key = move || {
        i = i.wrapping_mul(1_664_525).wrapping_add(1_013_904_223) % n;
        key(i)
    };
    let (s1, s2) = (AHEAD_META + AHEAD_ENTRIES, AHEAD_ENTRIES);
    g.bench_function("packets", |b| b.iter(|| receive(true)));
    for with in [false, true] {
        g.bench_function(if with { "table+packets" } else { "table" }, |b| {
            let mut keys = [(key(0), 0u64, [0usize; 2], Ahead::Match(NO_SLOT)); B];
            b.iter(|| {
                receive(with);
                let mut hits = 0u32;
                for k in 0..B + s1 {
                    if k < B {
                        let key = next_key();
                        let h = key.hash();
                        let bk = t.buckets_of(h);
                        t.prefetch_sigs_in(bk);
                        keys[k] = (key, h, bk, Ahead::Match(NO_SLOT));
                    }
                    if let Some(j) = (k + s2).checked_sub(s1).filter(|j| *j < B) {
                        let (_, h, bk, _) = keys[j];
                        keys[j].3 = t.prefetch_entries_in(h, bk);
                    }
                    if let Some(j) = k.checked_sub(s1) {
                        let (key, h, bk, ahead) = keys[j];
                        let slot = if let Ahead::Match(s) = ahead { s } else { NO_SLOT };
                        let found = t.live_at(&key, h, slot, 1).or_else(|| t.find_live_in(&key, h, bk, 1));
                        hits += u32::from(found.is_some());
                    }
                }
                assert_eq!(hits, B as u32);
            })
        });
        for three in [true, false] {
            let name = format!("lines_{}{}", if three { 3 } else { 2 }, if with { "+packets" } else { "" });
            g.bench_function(name, |b| {
                let mut pending = [(0u64, [0usize; 2], 0usize); B];
                b.iter(|| {
                    receive(with);
                    let mut sum = 0u64;
                    for k in 0..B + s1 {
                        if k < B {
                            // The table's own two buckets; in the two-line layout, a line of each bucket's four.
                            let h = next_key().hash();
                            let bk = t.buckets_of(h);
                            let bk = if three {
                                bk
                            } else {
                                [bk[0] * 4 + (h >> 8) as usize % 4, bk[1] * 4 + (h >> 10) as usize % 4]
                            };
                            bk.iter().for_each(|l| prefetch(&region[*l]));
                            pending[k] = (h, bk, 0);
                        }
                        if let Some(j) = (k + s2).checked_sub(s1).filter(|j| *j < B && three) {
                            // The slot line depends on what both meta lines hold, as the signature match does.
                            let (h, bk, _) = pending[j];
                            let x = region[bk[0]].0[0] ^ region[bk[1]].0[0] ^ h;
                            let at = nbuckets + bk[(x & 1) as usize] * 3 + (x >> 1) as usize % 3;
                            prefetch(&region[at]);
                            pending[j].2 = at;
                        }
                        if let Some(j) = k.checked_sub(s1) {
                            let (_, bk, at) = pending[j];
                            let read = if three { region[at].0[0] } else { region[bk[0]].0[0] ^ region[bk[1]].0[0] };
                            sum = sum.wrapping_add(read);
                        }
                    }
                    black_box(sum)
                })
            });
        }
    }
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
