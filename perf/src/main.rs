//! `edgelb-perf`: the core-pinned throughput harness. N workers, one pinned core each, run the real worker loop
//! over [`ReplayPort`]s; each worker's flows are chosen so it owns them (no hand-off), or with `--cross` so that the
//! other worker owns them (every packet crosses the hand-off ring once: what steering by RSS saves). Prints Mpps per core,
//! ns per packet and per-burst latency percentiles; `--json` for machines.
//!
//! Options: `edgelb-perf --help`.
//! `--port dpdk` (built with `--features dpdk`) runs one worker on a DPDK `net_ring` port instead and compares it
//! with `dpdk-testpmd` on the same core (see `dpdk.rs`).
//! The flows are opened first (SYNs, untimed). Then `--new-percent P` of the measured packets are SYNs of flows never
//! seen before and the rest are established-flow packets (ACKs); `--new` is `--new-percent 100`, the default is 0.
#![deny(unsafe_code)]

use clap::{Parser, ValueEnum};
use edgelb_dataplane::lb::conntrack::TableStats;
use edgelb_dataplane::model::Mode;
use edgelb_dataplane::pipeline::{DropReason, TableSizes};
use edgelb_dataplane::snapshot::{ConfigBuilder, ConfigHandle};
use edgelb_dataplane::worker::{Worker, WorkerStats};
use edgelb_perf::{ReplayPort, Scenario};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

#[cfg(feature = "dpdk")]
mod dpdk;
mod plot;

/// `edgelb-perf`'s command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "edgelb-perf",
    version,
    about = "The core-pinned throughput harness: the real worker loop over replayed traffic, Mpps per core, ns per \
             packet, burst latency percentiles"
)]
pub(crate) struct Args {
    /// The port the worker polls: replayed memory, or a DPDK net_ring port compared with dpdk-testpmd (built with
    /// --features dpdk).
    #[arg(long, value_enum, default_value_t = PortKind::Mem)]
    port: PortKind,
    /// With --port dpdk: a hugetlbfs mount to use (default: no huge pages).
    #[arg(long, value_name = "DIR")]
    huge_dir: Option<String>,
    /// Forwarding mode: nat, fullnat, dsr_l2, ipip or gue; or floor: the same worker and replay port receive each
    /// (NAT-scenario) packet and send it back with its MACs swapped, no parsing or lookup (what the harness and the
    /// worker loop cost alone, to subtract).
    #[arg(long, default_value = "nat", value_parser = perf_mode)]
    mode: PerfMode,
    /// Flows in all (1000 to 10000000), split over the cores.
    #[arg(long, default_value_t = 1_000_000)]
    flows: usize,
    /// Workers, one pinned core each.
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// Frame size in bytes (64 to 1500).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    size: usize,
    /// Every measured packet a SYN of a new flow (--new-percent 100).
    #[arg(long, conflicts_with = "new_percent")]
    new: bool,
    /// Percent of the measured packets that are SYNs of new flows (0 to 100; the rest are established-flow ACKs).
    #[arg(long, default_value_t = 0, value_name = "P")]
    new_percent: u32,
    /// New flows a second the worker admits while saturated, as edgelbd's `[workers] new_flow_limit` (0, the default
    /// here: every new flow recorded, what --new measures). The replay port always fills its bursts, so the worker is
    /// saturated throughout the measured pass, as under a flood at line rate.
    #[arg(long, default_value_t = 0, value_name = "N")]
    new_flow_limit: u32,
    /// The backends' replies instead of the clients' packets: every measured packet an ACK from a backend to its
    /// client, on a flow the warm-up opened (nat and fullnat, whose replies return through the appliance). The flow
    /// tables are sized for twice --flows, so that the warm-up evicts none of the flows replied to.
    #[arg(long, conflicts_with_all = ["new", "new_percent", "cross"])]
    replies: bool,
    /// IPv6 flows.
    #[arg(long)]
    v6: bool,
    /// Backends of the VIP (1 to 400).
    #[arg(long, default_value_t = 64)]
    backends: usize,
    /// Measured seconds (0.1 to 600).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Instead of --seconds: stop after this many packets per worker (a fixed count, for instruction counts under
    /// callgrind: `valgrind --tool=callgrind --toggle-collect='*measured_polls*' edgelb-perf --packets N` counts the
    /// measured polls alone, warm-up and set-up excluded).
    #[arg(long, value_name = "N")]
    packets: Option<u64>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Each worker receives the other worker's flows, so every packet crosses the hand-off ring once.
    #[arg(long)]
    cross: bool,
    /// Flow replication on: each worker queues its new flows and state changes, and a thread (the daemon's part)
    /// takes them and encodes them into authenticated datagrams, as edgelbd sends them to its peers (not sent).
    /// Prints the records encoded per second and that thread's CPU time per record.
    #[arg(long)]
    replicate: bool,
    /// The established fast path off: every packet takes the general path (to compare the two in one run).
    #[arg(long)]
    no_fast_path: bool,
    /// Run the sweeps and write SVG charts to DIR instead of one measurement: Mpps against tracked flows per mode
    /// (--plot-flows), against cores, the burst-latency CDF, and the kernel comparison (--kernel-json). --seconds
    /// and --backends apply to every point.
    #[arg(long, value_name = "DIR")]
    plot: Option<String>,
    /// With --plot: the tracked-flow counts to sweep, comma-separated.
    #[arg(long, value_name = "LIST", default_value = "1000,10000,100000,1000000,10000000", value_delimiter = ',')]
    plot_flows: Vec<usize>,
    /// With --plot: the JSON perf/kernel-compare wrote, drawn as a fourth chart.
    #[arg(long, value_name = "FILE")]
    kernel_json: Option<String>,
}

/// A forwarding mode, or the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PerfMode {
    Lb(Mode),
    Floor,
}

impl PerfMode {
    /// The dataplane mode the traffic is built for (the floor replays NAT traffic).
    pub(crate) fn lb(self) -> Mode {
        match self {
            PerfMode::Lb(m) => m,
            PerfMode::Floor => Mode::Nat,
        }
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            PerfMode::Lb(m) => m.name(),
            PerfMode::Floor => "floor",
        }
    }
}

fn perf_mode(s: &str) -> Result<PerfMode, String> {
    if s == "floor" {
        return Ok(PerfMode::Floor);
    }
    s.parse::<Mode>().map(PerfMode::Lb).map_err(|e| format!("{e}, or floor"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PortKind {
    Mem,
    Dpdk,
}

impl Args {
    /// The ranges the harness supports.
    fn check(mut self) -> Result<Self, String> {
        if self.new {
            self.new_percent = 100;
        }
        if !(1_000..=10_000_000).contains(&self.flows) {
            return Err("--flows must be between 1000 and 10000000".into());
        }
        if !(64..=1500).contains(&self.size) {
            return Err("--size must be between 64 and 1500".into());
        }
        if self.new_percent > 100 {
            return Err("--new-percent takes 0 to 100".into());
        }
        if !(1..=400).contains(&self.backends) {
            return Err("--backends must be between 1 and 400".into());
        }
        if self.replies && (!matches!(self.mode, PerfMode::Lb(Mode::Nat | Mode::FullNat)) || self.port != PortKind::Mem)
        {
            return Err("--replies measures nat or fullnat on the memory replay port".into());
        }
        if self.mode == PerfMode::Floor && self.port != PortKind::Mem {
            return Err("--mode floor runs on the memory replay port only".into());
        }
        if self.cores == 0 || !(0.1..=600.0).contains(&self.seconds) {
            return Err("--cores must be at least 1 and --seconds between 0.1 and 600".into());
        }
        Ok(self)
    }
}

struct CoreResult {
    core: Option<usize>,
    packets: u64,
    secs: f64,
    stats: WorkerStats,
    /// The flow table's counters at the start of the measured pass (the warm-up's), to report the pass alone.
    table_before: TableStats,
    warmup_secs: f64,
    table_bytes: usize,
    backing: String,
}

edgelb_cpu::check_before_main!();

fn main() {
    let a = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            // --help and --version print to stdout and succeed; usage errors print to stderr with code 2.
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 })
        }
    };
    let a = match a.check() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("edgelb-perf: {e}");
            std::process::exit(2)
        }
    };
    if let Some(dir) = &a.plot {
        let base = vec!["--seconds".to_string(), a.seconds.to_string(), "--backends".into(), a.backends.to_string()];
        if let Err(e) = plot::run(dir, &base, &a.plot_flows, a.kernel_json.as_deref()) {
            eprintln!("edgelb-perf: --plot: {e}");
            std::process::exit(1);
        }
        return;
    }
    if a.port == PortKind::Dpdk {
        run_dpdk(&a);
        return;
    }
    let sc = Scenario { mode: a.mode.lb(), v6: a.v6, backends: a.backends, size: a.size };
    let (cfg, _) = match ConfigBuilder::new().build(&sc.model()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edgelb-perf: scenario config rejected: {e}");
            std::process::exit(1)
        }
    };
    let handle = ConfigHandle::new(cfg);
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    // Pin to the highest-numbered cores, leaving core 0 to the system where there is a choice.
    let cores: Vec<Option<usize>> =
        (0..a.cores).map(|i| ids.len().checked_sub(a.cores).map(|base| ids[(base + i) % ids.len()].id)).collect();
    let per_core = a.flows / a.cores;
    let n = a.cores as u16;
    let inboxes: Vec<_> = (0..n).map(|_| Arc::new(crossbeam_queue::ArrayQueue::new(1024))).collect();
    let barrier = Arc::new(Barrier::new(a.cores));
    // A reply to a flow the warm-up evicted has nothing to return to: with --replies the tables have room for twice
    // the flows, so the warm-up evicts none.
    let entries = if a.replies { per_core * 2 } else { per_core };
    let sizes = if a.v6 {
        TableSizes { flows_v4: 1024, flows_v6: entries, affinity: 1024, fragments: 1024 }
    } else {
        TableSizes { flows_v4: entries, flows_v6: 1024, affinity: 1024, fragments: 1024 }
    };
    let mut threads = Vec::new();
    // With a fixed packet count the queues hold every record (none lost however the threads are scheduled, as under
    // callgrind, which runs one thread at a time).
    let depth = a.packets.map_or(65_536, |p| (p as usize + per_core + per_core / 4).clamp(65_536, 1 << 22));
    let queues: Vec<_> = (0..n).map(|_| Arc::new(crossbeam_queue::ArrayQueue::new(depth))).collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let replicator = a.replicate.then(|| {
        let (q, done) = (queues.clone(), done.clone());
        std::thread::spawn(move || replicate_out(&q, &done))
    });
    for (w, core) in cores.iter().copied().enumerate() {
        let (handle, inboxes, barrier, a) = (handle.clone(), inboxes.clone(), barrier.clone(), a.clone());
        let replicas = a.replicate.then(|| queues[w].clone());
        let w = Measure { w, n, per_core, sizes, sc, a, replicas };
        threads.push(std::thread::spawn(move || measure(core, handle, inboxes, barrier, w)));
    }
    let results: Vec<CoreResult> = threads.into_iter().filter_map(|t| t.join().ok()).collect();
    done.store(true, std::sync::atomic::Ordering::Release);
    report(&a, &results);
    if let Some(t) = replicator {
        if let Ok((records, datagrams, cpu, secs)) = t.join() {
            let full: u64 = results.iter().map(|r| r.stats.counters.replicas_queue_full).sum();
            println!(
                "replication: {records} records in {datagrams} datagrams, {:.2} M records/s encoded, {:.0} ns CPU per record on the sending thread, {full} lost to full worker queues",
                records as f64 / secs / 1e6,
                if records > 0 { cpu * 1e9 / records as f64 } else { 0.0 }
            );
        }
    }
    // A figure for traffic that did not go through would be a lie: fail unless (nearly) every packet was forwarded.
    let (rx, tx): (u64, u64) =
        results.iter().fold((0, 0), |(r, t), c| (r + c.stats.counters.rx, t + c.stats.counters.tx));
    // With --cross, a worker's `rx` counts both what it received and what it was handed; each packet is transmitted
    // once, by its owner.
    let rx = if a.cross { rx / 2 } else { rx };
    // New flows the limit refused are dropped by design (--new-flow-limit), not lost.
    let refused: u64 = results.iter().map(|c| c.stats.counters.dropped(DropReason::Overload)).sum();
    if results.len() != a.cores || tx + refused < rx - rx / 1000 {
        eprintln!(
            "edgelb-perf: only {tx} of {rx} packets were forwarded ({refused} refused as overload); the figures above \
             do not measure forwarding"
        );
        std::process::exit(1);
    }
}

/// The daemon's side of flow replication, without the socket: take the workers' records and encode them into
/// authenticated datagrams, as fast as they come (no rate bound), until `done` and every queue is empty. Returns
/// (records, datagrams, this thread's CPU seconds, wall seconds). Not inlined, so callgrind can count it alone.
#[inline(never)]
fn replicate_out(
    queues: &[edgelb_dataplane::pipeline::replicate::ReplicaQueue],
    done: &std::sync::atomic::AtomicBool,
) -> (u64, u64, f64, f64) {
    use edgelb_controlplane::ha::replicate::{key, Outbox};
    let k = key(b"edgelb-perf replication key");
    let t0 = Instant::now();
    let mut out = Outbox::new(1, 10_000_000, 1 << 20, t0);
    let mut datagrams = 0u64;
    loop {
        let finished = done.load(std::sync::atomic::Ordering::Acquire);
        let mut any = false;
        for q in queues {
            while let Some(r) = q.pop() {
                out.push(r);
                any = true;
            }
        }
        datagrams += out.due(Instant::now(), &k).len() as u64;
        if finished && !any {
            break;
        }
        if !any {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    // What the rate still held back.
    loop {
        let d = out.due(Instant::now(), &k).len() as u64;
        if d == 0 {
            break;
        }
        datagrams += d;
    }
    (out.sent, datagrams, thread_cpu_seconds(), t0.elapsed().as_secs_f64())
}

/// CPU time of the calling thread (`/proc/thread-self/schedstat`: nanoseconds on a CPU); 0 when unreadable.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// What one measuring thread needs besides the shared handle, inboxes and barrier.
struct Measure {
    w: usize,
    n: u16,
    per_core: usize,
    sizes: TableSizes,
    sc: Scenario,
    a: Args,
    /// The worker's replication queue (`--replicate`).
    replicas: Option<edgelb_dataplane::pipeline::replicate::ReplicaQueue>,
}

/// One worker on `core`: open its flows (untimed), then poll the measured mix for `--seconds`.
fn measure(
    core: Option<usize>,
    handle: ConfigHandle,
    inboxes: Vec<Arc<crossbeam_queue::ArrayQueue<(u16, edgelb_dataplane::packet::MemBuf)>>>,
    barrier: Arc<Barrier>,
    m: Measure,
) -> CoreResult {
    let Measure { w, n, per_core, sizes, sc, a, replicas: m_replicas } = m;
    let pinned = core.filter(|&c| core_affinity::set_for_current(core_affinity::CoreId { id: c }));
    // --cross: each worker receives the other worker's flows, so every packet is handed off once.
    let owner = if a.cross { (w as u16 + 1) % n } else { w as u16 };
    let (syn, ack) = sc.templates(per_core, owner, n);
    let syn_copy = syn.clone();
    let published = Arc::new(Mutex::new(WorkerStats::new_for(w as u16)));
    let slow = Arc::new(crossbeam_queue::ArrayQueue::new(1024));
    let port = ReplayPort::new(syn);
    let mut worker = Worker::new(w as u16, n, sizes, vec![port], inboxes, slow, published.clone());
    if a.replies {
        // The translated SYNs tell which backend (and, in full-NAT, which source port) each flow has.
        worker.ports[0].capture(per_core);
    }
    if let Some(q) = &m_replicas {
        worker.pipeline.set_replica_out(Some(q.clone()));
    }
    let (table_bytes, backing) = worker.pipeline.table_memory();
    // Warm-up: open every flow once (SYNs), untimed.
    let t0 = Instant::now();
    let mut opened = 0usize;
    while opened < per_core {
        opened += worker.poll(&handle);
    }
    let warmup_secs = t0.elapsed().as_secs_f64();
    let opened = worker.pipeline.table_stats();
    let opened = if a.v6 { opened.1.inserts } else { opened.0.inserts };
    // Repeated templates would open far fewer flows; a handful of refused SYNs (counted drops) is traffic.
    // With --cross the flows open in the other worker's table.
    if !a.cross && opened < per_core as u64 - per_core as u64 / 1000 {
        let exhausted = worker.pipeline.counters.dropped(DropReason::SnatExhausted);
        let why = if exhausted > 0 {
            // One full-NAT source address per family: a reply tuple per backend and source port.
            format!(
                "full-NAT source ports ran out ({exhausted} SYNs dropped as snat_exhausted): {} backends × {} ports \
                 of one source address",
                a.backends,
                u32::from(edgelb_perf::FULLNAT_PORTS.1 - edgelb_perf::FULLNAT_PORTS.0) + 1
            )
        } else {
            "the templates repeat flows".to_string()
        };
        eprintln!("edgelb-perf: warm-up opened {opened} flows, not {per_core}: {why}");
        std::process::exit(1);
    }
    let c = &worker.pipeline.counters;
    let warm_drops: Vec<String> =
        DropReason::all().filter(|d| c.dropped(*d) > 0).map(|d| format!("{} {}", d.name(), c.dropped(d))).collect();
    if !warm_drops.is_empty() && !a.json {
        let t = worker.pipeline.table_stats();
        let t = if a.v6 { t.1 } else { t.0 };
        eprintln!(
            "edgelb-perf: worker {w} warm-up drops: {} (flow table: insert_failed {}, reverse_failed {})",
            warm_drops.join(", "),
            t.insert_failed,
            t.reverse_failed
        );
    }
    let traffic = match worker.ports[0].captured() {
        Some(sent) => {
            let replies = sc.replies(&sent);
            if replies.len() < per_core - per_core / 1000 {
                eprintln!("edgelb-perf: worker {w}: {} replies built for {per_core} flows", replies.len());
                std::process::exit(1);
            }
            replies
        }
        None => ReplayPort::mix(&syn_copy, &ack, a.new_percent),
    };
    let mut port = ReplayPort::new(traffic);
    port.new_flows = true;
    // The measured pass is the port's second: pass 0 would replay the flows just opened.
    port.skip_pass();
    worker.ports[0] = port;
    worker.reset_measurement();
    worker.floor = a.mode == PerfMode::Floor;
    worker.pipeline.set_fast_path(!a.no_fast_path);
    // After the warm-up, which opens every flow at full bursts too.
    worker.pipeline.set_new_flow_limit(a.new_flow_limit);
    let table_before = if a.v6 { worker.pipeline.table_stats().1 } else { worker.pipeline.table_stats().0 };
    barrier.wait();
    let t = Instant::now();
    let packets = measured_polls(&mut worker, &handle, Duration::from_secs_f64(a.seconds), a.packets);
    let secs = t.elapsed().as_secs_f64();
    worker.publish();
    let stats = published.lock().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone());
    // Count what was forwarded: with --cross a packet is processed twice (arrival, then its owner).
    let packets = if a.cross { stats.counters.tx } else { packets };
    CoreResult {
        core: pinned,
        packets,
        secs,
        stats,
        table_before,
        warmup_secs,
        table_bytes,
        backing: backing.to_string(),
    }
}

/// The measured polls: until `deadline` passed, or (with `count`) until `count` packets went through. Not inlined,
/// so callgrind can count it alone (`--toggle-collect='*measured_polls*'`).
#[inline(never)]
fn measured_polls(
    worker: &mut Worker<ReplayPort>,
    handle: &ConfigHandle,
    deadline: Duration,
    count: Option<u64>,
) -> u64 {
    let t = Instant::now();
    let mut packets = 0u64;
    match count {
        Some(n) => {
            while packets < n {
                packets += worker.poll(handle) as u64;
            }
        }
        None => loop {
            for _ in 0..64 {
                packets += worker.poll(handle) as u64;
            }
            if t.elapsed() >= deadline {
                break;
            }
        },
    }
    packets
}

#[cfg(feature = "dpdk")]
fn run_dpdk(a: &Args) {
    if let Err(e) = dpdk::run(a) {
        eprintln!("edgelb-perf --port dpdk: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(feature = "dpdk"))]
fn run_dpdk(_: &Args) {
    eprintln!("edgelb-perf: built without DPDK; cargo run --release -p edgelb-perf --features dpdk -- --port dpdk");
    std::process::exit(2);
}

/// One worker's figures as a JSON row (the `--json` output's `workers` and the table's source).
fn row(a: &Args, i: usize, r: &CoreResult) -> serde_json::Value {
    let mpps = r.packets as f64 / r.secs / 1e6;
    let h = &r.stats.burst_ns;
    let c = &r.stats.counters;
    let t = if a.v6 { r.stats.tables.1 } else { r.stats.tables.0 };
    // The table's counters of the measured pass alone (the warm-up opened the flows).
    let b = &r.table_before;
    let pass = |now: u64, before: u64| now.saturating_sub(before);
    let drops: serde_json::Map<String, serde_json::Value> = DropReason::all()
        .filter(|d| c.dropped(*d) > 0)
        .map(|d| (d.name().to_string(), serde_json::json!(c.dropped(d))))
        .collect();
    let cdf: Vec<(u64, f64)> = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0]
        .iter()
        .map(|&q| (h.value_at_quantile(q), q))
        .collect();
    serde_json::json!({
        "worker": i,
        "core": r.core,
        "packets": r.packets,
        "seconds": r.secs,
        "mpps": mpps,
        "ns_per_packet": r.secs * 1e9 / r.packets.max(1) as f64,
        "burst_ns": {"p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99),
                      "p999": h.value_at_quantile(0.999), "max": h.max(), "mean": h.mean()},
        "burst_cdf": cdf,
        "tracked_entries": t.occupied,
        "table_capacity": if a.v6 { r.stats.capacity.1 } else { r.stats.capacity.0 },
        "table_bytes": r.table_bytes,
        "table_memory": r.backing,
        "inserts": pass(t.inserts, b.inserts),
        "evicted": pass(t.evicted, b.evicted),
        "moved": pass(t.moved, b.moved),
        "insert_failed": pass(t.insert_failed, b.insert_failed),
        "new_flows": c.new_flows,
        "tx": c.tx,
        // Forwarded packets of tracked flows: all but the new flows' first packets.
        "established_mpps": c.tx.saturating_sub(c.new_flows) as f64 / r.secs / 1e6,
        "saturated_polls": c.saturated_polls,
        "drops": drops,
        "warmup_seconds": r.warmup_secs,
    })
}

fn report(a: &Args, rs: &[CoreResult]) {
    let total_pkts: u64 = rs.iter().map(|r| r.packets).sum();
    let rows: Vec<serde_json::Value> = rs.iter().enumerate().map(|(i, r)| row(a, i, r)).collect();
    let secs = rs.iter().map(|r| r.secs).fold(0.0, f64::max);
    let summary = serde_json::json!({
        "mode": a.mode.name(), "family": if a.v6 {"ipv6"} else {"ipv4"}, "flows": a.flows, "cores": a.cores,
        "size": a.size, "new_percent": a.new_percent, "replies": a.replies, "cross": a.cross, "backends": a.backends,
        "total_mpps": total_pkts as f64 / secs / 1e6, "workers": rows,
    });
    if a.json {
        println!("{summary}");
        return;
    }
    println!(
        "edgelb-perf: mode {} {} | {} flows | {} traffic | {}-byte frames | {} backends | {} core(s) | {:.1} s",
        a.mode.name(),
        if a.v6 { "IPv6" } else { "IPv4" },
        a.flows,
        if a.replies {
            "backends' reply".to_string()
        } else if a.new_percent == 0 {
            "established".to_string()
        } else {
            format!("{}% new-flow (SYN)", a.new_percent)
        },
        a.size,
        a.backends,
        a.cores,
        secs
    );
    println!(
        "{:>6} {:>5} {:>9} {:>8} {:>10} {:>10} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9}",
        "worker",
        "core",
        "Mpps",
        "ns/pkt",
        "burst p50",
        "burst p99",
        "p99.9",
        "tracked",
        "new",
        "evicted",
        "moved",
        "ins.fail"
    );
    // JSON numbers ignore a width; the table's columns need plain integers.
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    for r in &rows {
        println!(
            "{:>6} {:>5} {:>9.2} {:>8.1} {:>8}ns {:>8}ns {:>8}ns {:>11} {:>9} {:>9} {:>9} {:>9}",
            n(&r["worker"]),
            r["core"].as_u64().map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            r["mpps"].as_f64().unwrap_or(0.0),
            r["ns_per_packet"].as_f64().unwrap_or(0.0),
            n(&r["burst_ns"]["p50"]),
            n(&r["burst_ns"]["p99"]),
            n(&r["burst_ns"]["p999"]),
            n(&r["tracked_entries"]),
            n(&r["new_flows"]),
            n(&r["evicted"]),
            n(&r["moved"]),
            n(&r["insert_failed"]),
        );
    }
    println!("(new, evicted, moved, ins.fail: flows and flow-table entries of the measured pass alone)");
    let recorded: u64 = rows.iter().map(|r| n(&r["new_flows"])).sum();
    if a.new_percent == 0 && !a.replies && a.mode != PerfMode::Floor && recorded > 0 {
        // Every measured packet belongs to a flow the warm-up opened: a new flow here is one whose entry was lost.
        eprintln!(
            "edgelb-perf: {recorded} packets of established flows were recorded as new flows in the measured pass: \
             the entries the warm-up made for them were lost (evicted or refused), so these figures include new-flow work"
        );
    }
    println!("total: {:.2} Mpps", summary["total_mpps"].as_f64().unwrap_or(0.0));
    if a.new_percent > 0 {
        let sum = |f: &dyn Fn(&serde_json::Value) -> f64| rows.iter().map(f).sum::<f64>();
        let admitted = sum(&|r| r["new_flows"].as_f64().unwrap_or(0.0));
        let refused = sum(&|r| r["drops"]["overload"].as_f64().unwrap_or(0.0));
        println!(
            "new flows: {:.0} k/s recorded, {:.2} M/s refused as overload (--new-flow-limit {}); established packets \
             forwarded: {:.2} Mpps",
            admitted / secs / 1e3,
            refused / secs / 1e6,
            a.new_flow_limit,
            sum(&|r| r["established_mpps"].as_f64().unwrap_or(0.0)),
        );
    }
    let per_slot = if a.v6 {
        edgelb_dataplane::lb::conntrack::FlowTable::<edgelb_dataplane::lb::flow::KeyV6>::bytes_per_slot()
    } else {
        edgelb_dataplane::lb::conntrack::FlowTable::<edgelb_dataplane::lb::flow::KeyV4>::bytes_per_slot()
    };
    if let Some(r) = rows.first() {
        println!(
            "flow table: {} entries of capacity {} in {} MiB on {} ({} bytes per slot + {} per reverse-index slot); drops: {}",
            r["tracked_entries"],
            r["table_capacity"],
            r["table_bytes"].as_u64().unwrap_or(0) >> 20,
            r["table_memory"].as_str().unwrap_or("?"),
            per_slot.0,
            per_slot.1,
            if r["drops"].as_object().is_some_and(|m| m.is_empty()) {
                "none".to_string()
            } else {
                r["drops"].to_string()
            }
        );
    }
}
