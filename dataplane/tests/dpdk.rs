//! The DPDK port (feature `dpdk`) on DPDK's own ring and null PMDs, without PCI or huge pages: the golden table
//! through `net_ring` ports leaves byte-identical to the in-memory ports' run; starting, stopping and restarting a
//! device with workers in between gives every mbuf back to its pool; two pinned workers each own one queue of a
//! multi-queue device configured for RSS.
#![cfg(feature = "dpdk")]

mod golden_support;

use edgelb_dataplane::packet::PacketBuf;
use edgelb_dataplane::pipeline::TableSizes;
use edgelb_dataplane::port::dpdk::{DeviceConfig, DpdkDevice, DpdkError, Eal, EalConfig, Mempool, RingPair};
use edgelb_dataplane::port::mem;
use edgelb_dataplane::snapshot::{ConfigBuilder, ConfigHandle};
use edgelb_dataplane::worker::{self, Polling, WorkerSetup, Workers};
use golden_support::{load, model};
use std::time::{Duration, Instant};

fn eal() -> &'static Eal {
    // net_null0: a multi-queue device with RSS (it receives endless 64-byte frames from the pool).
    Eal::init(&EalConfig::no_hardware(&["net_null0"])).expect("EAL starts without PCI and huge pages")
}

const SIZES: TableSizes = TableSizes { flows_v4: 4096, flows_v6: 4096, affinity: 1024, fragments: 256 };

/// Every golden case through a worker on two `net_ring` ports and through a worker on two in-memory ports, side by
/// side: same verdicts, same bytes on the same port, in the same order.
#[test]
fn golden_table_through_net_ring_ports_matches_the_in_memory_ports() {
    let eal = eal();
    let g = load();
    let mut builder = ConfigBuilder::new();
    let (cfg_a, _) = builder.build(&model(&g.config, "A")).unwrap();
    let (cfg_b, _) = builder.build(&model(&g.config, "B")).unwrap();
    let handle = ConfigHandle::new(cfg_a.clone());
    let pool = Mempool::create(eal, 2048, 0, None).unwrap();
    let rings = [RingPair::create(eal, "gold_r0", 256).unwrap(), RingPair::create(eal, "gold_r1", 256).unwrap()];
    let mut devs = Vec::new();
    for r in &rings {
        devs.push(DpdkDevice::open(eal, &r.name, pool, &DeviceConfig::default()).unwrap());
    }
    let mut dw = worker::single(devs.iter().map(|d| d.queue(0).unwrap()).collect(), SIZES);
    let (m0, peer0) = mem::pair("m0", 64);
    let (m1, peer1) = mem::pair("m1", 64);
    let peers = [peer0, peer1];
    let mut mw = worker::single(vec![m0, m1], SIZES);
    let before = pool.avail();
    let (mut compared, mut slow) = (0, 0);
    for c in &g.cases {
        let name = c["name"].as_str().unwrap();
        handle.publish(if c["config"] == "A" { cfg_a.clone() } else { cfg_b.clone() });
        let input = &g.inputs[c["input"].as_u64().unwrap() as usize];
        let port = c["in_port"].as_u64().unwrap() as usize;
        assert!(peers[port].inject_bytes(input));
        let mut one = vec![pool.alloc_from(input).expect("mbuf")];
        assert_eq!(rings[port].inject(&mut one), 1);
        assert_eq!(mw.poll(&handle), 1, "{name}");
        assert_eq!(dw.poll(&handle), 1, "{name}");
        let out_port = c["verdict"].as_str().unwrap().strip_prefix("tx:").map(|p| p.parse::<usize>().unwrap());
        for (p, peer) in peers.iter().enumerate() {
            let want: Vec<Vec<u8>> = std::iter::from_fn(|| peer.collect()).map(|b| b.data().to_vec()).collect();
            let got: Vec<Vec<u8>> = rings[p].collect(64).iter().map(|m| m.data().to_vec()).collect();
            assert_eq!(got, want, "{name}: port {p} output differs between net_ring and in-memory ports");
            if out_port == Some(p) {
                let scapy = &g.expected[c["expected"].as_u64().unwrap() as usize];
                assert_eq!(got.first(), Some(scapy), "{name}: port {p} output differs from scapy's");
            }
            compared += got.len();
        }
        match (mw.slow_path_pop(), dw.slow_path_pop()) {
            (Some((mp, mb)), Some((dp, db))) => {
                assert_eq!((mp, mb.data()), (dp, db.data()), "{name}: slow-path hand-off differs");
                slow += 1;
            }
            (None, None) => {}
            (m, d) => panic!("{name}: slow path in-memory {:?} vs DPDK {:?}", m.is_some(), d.is_some()),
        }
    }
    assert!(compared >= 20, "only {compared} frames compared");
    assert!(slow > 0);
    assert_eq!(mw.pipeline.counters, dw.pipeline.counters, "pipeline counters differ");
    // Everything forwarded or dropped went back to the pool (the ring ports hold nothing).
    drop(dw);
    assert_eq!(pool.avail(), before, "mbufs leaked through the golden run");
}

/// A device is started, fed by a pinned worker thread, stopped and restarted three times in one process; after each
/// cycle the pool is full again. Stopping while a worker holds a queue is refused.
#[test]
fn start_stop_restart_returns_every_mbuf() {
    let eal = eal();
    let g = load();
    let mut builder = ConfigBuilder::new();
    let (cfg, _) = builder.build(&model(&g.config, "A")).unwrap();
    let handle = ConfigHandle::new(cfg);
    const N: u32 = 4096;
    let pool = Mempool::create(eal, N, 64, None).unwrap();
    assert_eq!(pool.avail(), N);
    let ring = RingPair::create(eal, "cycle_r0", 1024).unwrap();
    let mut dev = DpdkDevice::open(eal, &ring.name, pool, &DeviceConfig::default()).unwrap();
    assert!(dev.queue(1).is_none(), "one queue configured");
    // Inputs of every kind in the table: forwarded, dropped and slow-path ones, on port 0.
    let inputs: Vec<&Vec<u8>> = g
        .cases
        .iter()
        .filter(|c| c["in_port"] == 0 && c["config"] == "A")
        .map(|c| &g.inputs[c["input"].as_u64().unwrap() as usize])
        .collect();
    assert!(inputs.len() >= 10);
    let mut total_sent = 0u64;
    for cycle in 0..3 {
        dev.start().unwrap();
        let workers = Workers::spawn(
            vec![WorkerSetup {
                worker: 0,
                core: Some(0),
                ports: vec![dev.queue(0).unwrap()],
                sizes: SIZES,
                polling: Polling::Busy,
                new_flow_limit: 0,
            }],
            handle.clone(),
            256,
            256,
        );
        assert!(matches!(dev.stop(), Err(DpdkError::State(..))), "stop must wait for the workers");
        let mut sent = 0u64;
        for round in 0..20 {
            let mut batch: Vec<_> = inputs.iter().map(|b| pool.alloc_from(b).expect("mbuf")).collect();
            let n = batch.len();
            let mut left = batch.len();
            let deadline = Instant::now() + Duration::from_secs(5);
            while left > 0 {
                left -= ring.inject(&mut batch);
                assert!(Instant::now() < deadline, "cycle {cycle} round {round}: ring stays full");
            }
            sent += n as u64;
            // Keep what the worker transmits moving, as a NIC would.
            drop(ring.collect(1024));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while ring.rx_pending() > 0 && Instant::now() < deadline {
            drop(ring.collect(1024));
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        let (ports, totals) = workers.stop_with_totals();
        assert_eq!(totals.rx, sent, "cycle {cycle}: the worker received every packet");
        total_sent += sent;
        assert!(totals.tx > 0, "cycle {cycle}: nothing forwarded");
        drop(ports);
        dev.stop().unwrap();
        drop(ring.collect(4096));
        ring.drain_rx();
        assert_eq!(pool.avail(), N, "cycle {cycle}: {} mbufs not returned", N - pool.avail());
    }
    let st = dev.stats();
    assert_eq!(st.rx_packets, total_sent, "device counters: {st:?}");
}

/// Bad names and sizes are errors that name the problem, not crashes.
#[test]
fn bad_requests_are_errors() {
    let eal = eal();
    let pool = Mempool::create(eal, 64, 0, None).unwrap();
    let e = DpdkDevice::open(eal, "0000:99:00.0", pool, &DeviceConfig::default()).unwrap_err();
    assert!(matches!(e, DpdkError::NoPort(..)), "{e}");
    assert!(e.to_string().contains("0000:99:00.0"), "{e}");
    assert!(Mempool::create(eal, 0, 0, None).is_err());
    let ring = RingPair::create(eal, "bad_r0", 64).unwrap();
    let e = DpdkDevice::open(eal, &ring.name, pool, &DeviceConfig { queues: 0, ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("queues"), "{e}");
    let e = DpdkDevice::open(eal, &ring.name, pool, &DeviceConfig { queues: 64, ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("queues"), "{e}");
    assert!(RingPair::create(eal, "bad_r1", 100).is_err(), "ring depth must be a power of two");
    let other = EalConfig::no_hardware(&["net_null1"]);
    assert!(matches!(Eal::init(&other), Err(DpdkError::EalAgain(_))));
}

/// A device with one queue pair per worker and RSS (the null PMD accepts the symmetric key): two pinned workers
/// each poll their own queue; every frame received is accounted for (forwarded, dropped under a reason, or handed to
/// the slow path), and closing the device gives the pool back its mbufs.
#[test]
fn two_workers_own_one_queue_each_of_a_multi_queue_device() {
    let eal = eal();
    let g = load();
    let (cfg, _) = ConfigBuilder::new().build(&model(&g.config, "A")).unwrap();
    let handle = ConfigHandle::new(cfg);
    const N: u32 = 8192;
    let pool = Mempool::create(eal, N, 128, None).unwrap();
    let cfg = DeviceConfig { queues: 2, rx_desc: 512, tx_desc: 512, ..Default::default() };
    let dev = DpdkDevice::open(eal, "net_null0", pool, &cfg).unwrap();
    assert!(dev.queue(2).is_none());
    let setups = (0..2u16)
        .map(|w| WorkerSetup {
            worker: w,
            core: Some(usize::from(w)),
            ports: vec![dev.queue(w).unwrap()],
            sizes: SIZES,
            polling: Polling::Busy,
            new_flow_limit: 0,
        })
        .collect();
    let workers = Workers::spawn(setups, handle, 256, 256);
    std::thread::sleep(Duration::from_millis(300));
    let per_worker: Vec<u64> = workers.stats.iter().map(|s| s.lock().unwrap().counters.rx).collect();
    let (ports, totals) = workers.stop_with_totals();
    assert!(per_worker.iter().all(|&rx| rx > 0), "each worker polls its own queue: {per_worker:?}");
    let accounted = totals.tx + totals.dropped_total() + totals.slowpath + totals.held;
    assert_eq!(accounted, totals.rx, "every received frame accounted for: {totals:?}");
    let st = dev.stats();
    assert!(st.rx_packets >= totals.rx, "device counted {st:?}, workers {}", totals.rx);
    drop(ports);
    drop(dev);
    assert_eq!(pool.avail(), N, "mbufs left out of the pool after close");
}
