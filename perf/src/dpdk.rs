//! `edgelb-perf --port dpdk`: one pinned worker on a DPDK `net_ring` port (EAL without PCI or huge pages), fed
//! batches of pre-filled mbufs, against `dpdk-testpmd` forwarding on `net_ring` vdevs on the same core in the same
//! run.
//!
//! Each round fills [`BATCH`] mbufs from the templates and queues them on the port's RX ring (untimed, the work a
//! NIC's DMA does), then times the worker until it has received them all and flushed what it sends; the transmitted
//! mbufs are taken off the TX ring and freed untimed. The flows are opened first with SYNs, untimed. Only
//! established-flow packets (`--new-percent` 0) are measured here.
//!
//! testpmd runs in `5tswap` (swap MACs, addresses and ports: the least an L4 forwarder does) and `io` (forward
//! untouched) modes, one forwarding core (the worker's), `--tx-first` bursts circulating through two ring ports. It
//! touches a few dozen packets that stay in cache and looks nothing up, so the ratio bounds what a port costs us, not
//! how a load balancer compares with a reflector.

use crate::Args;
use edgelb_dataplane::packet::PacketBuf;
use edgelb_dataplane::pipeline::{DropReason, TableSizes};
use edgelb_dataplane::port::dpdk::{DeviceConfig, DpdkDevice, DpdkPort, Eal, EalConfig, Mbuf, Mempool, RingPair};
use edgelb_dataplane::snapshot::{ConfigBuilder, ConfigHandle};
use edgelb_dataplane::worker::{Worker, WorkerStats};
use edgelb_perf::{Scenario, Templates};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Mbufs per round: a typical RX ring, so the mbufs recycle through the pool's per-lcore cache as a NIC's would.
pub const BATCH: usize = 1024;

fn fill(pool: &Mempool, t: &Templates, from: usize, n: usize) -> Result<Vec<Mbuf>, String> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let mut m = pool.alloc_from(t.get((from + i) % t.len())).ok_or("mbuf pool exhausted")?;
        if !m.set_len(t.frame_len()) {
            return Err("frame longer than the mbuf".into());
        }
        v.push(m);
    }
    Ok(v)
}

/// Result of one harness run.
#[derive(Debug)]
pub struct Figures {
    /// Packets measured.
    pub packets: u64,
    /// Seconds inside the timed regions.
    pub secs: f64,
    /// Packets transmitted in the timed rounds.
    pub tx: u64,
}

/// Run the harness; prints the figures and the testpmd comparison.
///
/// # Errors
/// A message when EAL, the pool, the port or testpmd fail, or when packets were not forwarded.
pub fn run(a: &Args) -> Result<(), String> {
    if a.cores != 1 || a.cross || a.new_percent != 0 {
        return Err("--port dpdk measures one core, established flows: drop --cores/--cross/--new".into());
    }
    let eal = Eal::init(&eal_config(a)).map_err(|e| e.to_string())?;
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    let core = ids.last().map(|c| c.id);
    if let Some(c) = core {
        core_affinity::set_for_current(core_affinity::CoreId { id: c });
    }
    let (f, drops) = measure(a, eal)?;
    let tp_secs = a.seconds.clamp(2.0, 10.0);
    let core_id = core.unwrap_or(0);
    let five = testpmd("5tswap", core_id, tp_secs, a.huge_dir.as_deref());
    let io = testpmd("io", core_id, tp_secs, a.huge_dir.as_deref());
    report(a, core, &f, &drops, &five, &io);
    Ok(())
}

/// Without huge pages by default (any machine); `--huge-dir` uses a hugetlbfs mount (EAL `--in-memory`).
fn eal_config(a: &Args) -> EalConfig {
    match &a.huge_dir {
        Some(d) => EalConfig {
            huge_dir: Some(d.clone()),
            memory_mb: Some(512),
            log_levels: vec!["error".into()],
            ..EalConfig::default()
        },
        None => EalConfig::no_hardware(&[]),
    }
}

/// The worker on its ring port, and what feeds it.
struct Rig {
    handle: ConfigHandle,
    pool: Mempool,
    ring: RingPair,
}

impl Rig {
    /// One round: queue a batch from `t` (at `from`) untimed, time the worker until it has received and flushed
    /// them, take what it sent off the TX ring. Returns the packets sent and the seconds (0 when not `timed`).
    fn round(&self, w: &mut Worker<DpdkPort>, t: &Templates, from: usize, timed: bool) -> Result<(usize, f64), String> {
        let n = BATCH.min(t.len());
        let mut batch = fill(&self.pool, t, from, n)?;
        if self.ring.inject(&mut batch) != n {
            return Err("RX ring full".into());
        }
        let t0 = Instant::now();
        let mut got = 0;
        while got < n {
            got += w.poll(&self.handle);
        }
        w.flush();
        let secs = t0.elapsed().as_secs_f64();
        let sent = self.ring.collect(2 * BATCH).len();
        Ok((sent, if timed { secs } else { 0.0 }))
    }
}

/// Open the flows untimed, then time established packets for `--seconds`. Returns the figures and the drops by
/// reason.
fn measure(a: &Args, eal: &'static Eal) -> Result<(Figures, Vec<String>), String> {
    let sc = Scenario { mode: a.mode.lb(), v6: a.v6, backends: a.backends, size: a.size };
    let (cfg, _) = ConfigBuilder::new().build(&sc.model()).map_err(|e| format!("scenario config rejected: {e}"))?;
    let pool = Mempool::create(eal, 3 * BATCH as u32, 256, None).map_err(|e| e.to_string())?;
    let ring = RingPair::create(eal, "perf", 2 * BATCH as u32).map_err(|e| e.to_string())?;
    let rig = Rig { handle: ConfigHandle::new(cfg), pool, ring };
    let dev = DpdkDevice::open(eal, &rig.ring.name, pool, &DeviceConfig::default()).map_err(|e| e.to_string())?;
    let port = dev.queue(0).ok_or("no queue 0")?;
    let sizes = if a.v6 {
        TableSizes { flows_v4: 1024, flows_v6: a.flows, affinity: 1024, fragments: 1024 }
    } else {
        TableSizes { flows_v4: a.flows, flows_v6: 1024, affinity: 1024, fragments: 1024 }
    };
    let inboxes = vec![Arc::new(crossbeam_queue::ArrayQueue::new(1024))];
    let slow = Arc::new(crossbeam_queue::ArrayQueue::new(1024));
    let published = Arc::new(Mutex::new(WorkerStats::new_for(0)));
    let mut w = Worker::new(0, 1, sizes, vec![port], inboxes, slow, published.clone());
    let (syn, ack) = sc.templates(a.flows, 0, 1);
    let (syn, ack) = (syn.shuffled(), ack.shuffled());
    // Open every flow (untimed).
    let mut from = 0;
    while from < syn.len() {
        rig.round(&mut w, &syn, from, false)?;
        from += BATCH;
    }
    let t = w.pipeline.table_stats();
    let opened = if a.v6 { t.1.inserts } else { t.0.inserts };
    if opened < a.flows as u64 - a.flows as u64 / 1000 {
        return Err(format!("warm-up opened {opened} flows, not {}", a.flows));
    }
    w.reset_measurement();
    let rx0 = w.pipeline.counters.rx;
    let mut f = Figures { packets: 0, secs: 0.0, tx: 0 };
    let mut from = 0;
    while f.secs < a.seconds {
        let (sent, secs) = rig.round(&mut w, &ack, from, true)?;
        from = (from + BATCH) % ack.len();
        f.secs += secs;
        f.tx += sent as u64;
    }
    f.packets = w.pipeline.counters.rx - rx0;
    let c = &w.pipeline.counters;
    let drops: Vec<String> =
        DropReason::all().filter(|d| c.dropped(*d) > 0).map(|d| format!("{} {}", d.name(), c.dropped(d))).collect();
    if f.tx < f.packets - f.packets / 1000 {
        return Err(format!("only {} of {} packets were forwarded (drops: {drops:?})", f.tx, f.packets));
    }
    drop(w);
    drop(dev);
    Ok((f, drops))
}

/// Print the figures beside testpmd's (text, or one JSON object with `--json`).
fn report(
    a: &Args,
    core: Option<usize>,
    f: &Figures,
    drops: &[String],
    five: &Result<f64, String>,
    io: &Result<f64, String>,
) {
    let ours = f.packets as f64 / f.secs / 1e6;
    let fmt = |r: &Result<f64, String>| match r {
        Ok(v) => format!("{v:.2} Mpps ({:.1} ns/packet)", 1e3 / v),
        Err(e) => format!("not measured: {e}"),
    };
    let ratio = |r: &Result<f64, String>| r.as_ref().map(|v| format!("{:.3}", ours / v)).unwrap_or_else(|_| "-".into());
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "port": "dpdk net_ring", "mode": a.mode.name(), "family": if a.v6 {"ipv6"} else {"ipv4"},
                "flows": a.flows, "core": core, "packets": f.packets, "seconds": f.secs, "mpps": ours,
                "ns_per_packet": f.secs * 1e9 / f.packets as f64, "drops": drops,
                "testpmd_5tswap_mpps": five.as_ref().ok(), "testpmd_io_mpps": io.as_ref().ok(),
                "ratio_5tswap": five.as_ref().ok().map(|v| ours / v), "ratio_io": io.as_ref().ok().map(|v| ours / v),
            })
        );
        return;
    }
    println!(
        "edgelb-perf --port dpdk: {} {}, {} flows, one worker on core {:?}, net_ring port, {} mbufs per round, {}",
        a.mode.name(),
        if a.v6 { "IPv6" } else { "IPv4" },
        a.flows,
        core,
        BATCH,
        a.huge_dir.as_ref().map_or("no huge pages".to_string(), |d| format!("huge pages in {d}"))
    );
    println!(
        "  edgelb          {:>8.2} Mpps ({:.1} ns/packet; {} packets in {:.2} s timed; drops: {})",
        ours,
        f.secs * 1e9 / f.packets as f64,
        f.packets,
        f.secs,
        if drops.is_empty() { "none".into() } else { drops.join(", ") }
    );
    println!("  testpmd 5tswap  {}   ours/testpmd = {}", fmt(five), ratio(five));
    println!("  testpmd io      {}   ours/testpmd = {}", fmt(io), ratio(io));
}

/// Run `dpdk-testpmd` in `mode` on two `net_ring` vdevs with one forwarding lcore on `core` for `secs`, and return
/// the median of its per-second forwarding rate (both ports' RX summed).
fn testpmd(mode: &str, core: usize, secs: f64, huge_dir: Option<&str>) -> Result<f64, String> {
    let main = if core == 0 { 1 } else { 0 };
    let memory: Vec<String> = match huge_dir {
        Some(d) => vec![format!("--huge-dir={d}"), "--in-memory".into()],
        None => vec!["--no-huge".into(), "--no-shconf".into()],
    };
    let out = Command::new("timeout")
        .args(["-s", "INT", &format!("{}", secs.ceil() as u64 + 2), "dpdk-testpmd"])
        .args(["-l", &format!("{main},{core}"), "--main-lcore", &main.to_string()])
        .args(&memory)
        .args(["--no-pci", "-m", "512", "--no-telemetry", "--log-level=error"])
        .args(["--vdev=net_ring0", "--vdev=net_ring1", "--"])
        .args([&format!("--forward-mode={mode}"), "--tx-first", "--total-num-mbufs=16384", "--nb-cores=1"])
        .arg("--stats-period=1")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("dpdk-testpmd: {e} (apt-get install dpdk)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pps: Vec<f64> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Rx-pps:"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    // Two ports per period; periods that forwarded nothing (start-up) are left out.
    let mut per: Vec<f64> = pps.chunks_exact(2).map(|c| c[0] + c[1]).filter(|&v| v > 0.0).collect();
    if per.is_empty() {
        return Err(format!("no forwarding figures in its output ({} lines)", text.lines().count()));
    }
    per.sort_by(f64::total_cmp);
    Ok(per[per.len() / 2] / 1e6)
}
