//! From an API apply's return until every worker uses the new snapshot: median and p99 over 1,000 applies (20 under
//! `cargo test --benches`, which checks that the benchmark runs).
//!
//! A real [`Store`] (the one the gRPC service calls) over the benchmark scenario (one NAT VIP, 64 backends, Maglev
//! 65537), real pinned workers polling in-memory ports. Each apply changes one backend's weight, so every apply
//! rebuilds the Maglev table. Measured per apply: how long the call took (validate, build, publish) and how long after
//! it returned the last worker loaded the new generation (`WorkerView::all_use`). Run twice: one worker on its own
//! core (the applying thread on another), and one worker per core (workers and the applier share the cores).

use edgelb_controlplane::store::{Batch, Store};
use edgelb_dataplane::model::Mode;
use edgelb_dataplane::pipeline::TableSizes;
use edgelb_dataplane::port::mem;
use edgelb_dataplane::worker::{Polling, WorkerSetup, Workers};
use edgelb_perf::Scenario;
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Applies per run under `cargo bench`; `cargo test --benches` (no `--bench` flag) runs a few, like criterion's test
/// mode, to check the benchmark works.
const APPLIES: usize = 1000;
const APPLIES_TEST_MODE: usize = 20;

fn run(workers_n: usize, cores: &[core_affinity::CoreId], applies: usize) {
    let sc = Scenario { mode: Mode::Nat, v6: false, backends: 64, size: 64 };
    let store = Store::new(sc.model()).expect("scenario model is valid");
    let sizes = TableSizes { flows_v4: 4096, flows_v6: 1024, affinity: 1024, fragments: 1024 };
    let mut peers = Vec::new();
    let setups = (0..workers_n)
        .map(|w| {
            let (port, peer) = mem::pair("m", 64);
            peers.push(peer);
            // One worker: the last core, leaving the first to the applying thread. Several: one per core.
            let core = if workers_n == 1 { cores.last() } else { cores.get(w % cores.len().max(1)) }.map(|c| c.id);
            WorkerSetup { worker: w as u16, core, ports: vec![port], sizes, polling: Polling::Busy, new_flow_limit: 0 }
        })
        .collect();
    let workers = Workers::spawn(setups, store.handle(), 256, 256);
    let view = workers.view();
    store.attach_workers(view.clone());
    if workers_n == 1 {
        if let Some(c) = cores.first() {
            core_affinity::set_for_current(*c);
        }
    }
    let mut call = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds");
    let mut lag = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds");
    let (_, services) = store.services();
    let mut svc = services[0].clone();
    for i in 0..applies {
        svc.backends[0].weight = 1 + (i as u32 % 2);
        let batch = Batch { upserts: vec![svc.clone()], ..Default::default() };
        let t0 = Instant::now();
        let a = store.apply(&batch, "api").expect("apply");
        let returned = Instant::now();
        let deadline = returned + Duration::from_secs(5);
        while !view.all_use(a.generation) {
            assert!(Instant::now() < deadline, "workers did not take generation {} in 5 s", a.generation);
            // Yield, not spin: with a worker per core the applier shares a core with one, which must get to run.
            std::thread::yield_now();
        }
        let seen = Instant::now();
        let _ = call.record((returned - t0).as_nanos() as u64);
        let _ = lag.record((seen - returned).as_nanos().max(1) as u64);
    }
    let _ = workers.stop();
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "apply latency, {workers_n} worker(s), {applies} applies (64 backends, Maglev 65537): \
         call p50 {:.1} us p99 {:.1} us; return -> all workers on the new snapshot p50 {:.2} us p99 {:.2} us max {:.2} us",
        us(&call, 0.5),
        us(&call, 0.99),
        us(&lag, 0.5),
        us(&lag, 0.99),
        lag.max() as f64 / 1000.0
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not (test mode: a short run).
    let applies = if std::env::args().any(|a| a == "--bench") { APPLIES } else { APPLIES_TEST_MODE };
    // Read before any pinning: the list is this thread's affinity mask.
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    run(1, &cores, applies);
    if cores.len() > 1 {
        run(cores.len(), &cores, applies);
    }
}
