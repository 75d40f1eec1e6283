//! One pinned core: receive a burst, run each packet through the [`Pipeline`], transmit in bursts, repeat.
//!
//! A worker owns its ports' queues, its flow-table shard, its buffers and its counters. Per poll it loads the
//! config snapshot once, drains its hand-off inbox (packets other workers received for flows it owns), polls its
//! ports (a port's full bursts run on, up to [`CHAIN`] of them), and sweeps a few flow-table buckets. Packets whose
//! flow another worker owns go to that worker's inbox — a bounded `crossbeam` ring; a full ring is a counted drop,
//! never a wait. Slow-path packets go to a bounded ring too. Counters are published to a shared [`WorkerStats`]
//! every [`PUBLISH_EVERY`] with `try_lock`, so the hot loop never blocks on a reader.

use crate::lb::conntrack::TableStats;
use crate::model::PortId;
use crate::packet::PacketBuf;
use crate::pipeline::replicate::ReplicaQueue;
use crate::pipeline::{
    Counters, DropReason, FlowCensus, FlowCursor, FlowFilter, FlowInfo, FlowQuery, ObjCounters, Parsed, Pipeline,
    TableSizes, Tuple, Verdict, Victim,
};
use crate::port::{Burst, Port, PortStats, BURST};
use crate::snapshot::{ConfigHandle, DataplaneConfig};
use arrayvec::ArrayVec;
use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a worker publishes its counters.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// Packets between parsing (meta-line prefetch) and entry prefetch in a burst. 6 rather than 4 since the burst loop got
/// cheaper: NAT with 1 M flows 8.33 -> 8.63 Mpps (`edgelb-perf --flows 1000000 --seconds 2`, AMD EPYC VM, 6 pairs,
/// each higher); 8 here (with 4 or 6 below) and 6 with 3 below measured lower than 6 with 4.
pub const AHEAD_META: usize = 6;
/// Packets between entry prefetch and processing.
pub const AHEAD_ENTRIES: usize = 4;
/// Packets between the prefetch of the reverse-index line a new flow's displaced entry links to and processing. The
/// displaced slot, which stage 2 prefetched, is read `AHEAD_ENTRIES - AHEAD_LINK` packets after that prefetch.
pub const AHEAD_LINK: usize = 2;
const _: () = assert!(AHEAD_LINK < AHEAD_ENTRIES);
/// Stage-1 records a burst keeps at once: a power of two above the window (`AHEAD_META + AHEAD_ENTRIES`) plus the
/// packet being finished. Records are written in place ([`Pipeline::parse_into`]) and never copied; the ring (16 of
/// 120 bytes) stays in L1.
const WINDOW: usize = 16;
const _: () = assert!(WINDOW.is_power_of_two() && WINDOW > AHEAD_META + AHEAD_ENTRIES);
/// Flow-table buckets swept per busy burst (per table).
pub const SWEEP_BUSY: usize = 2;
/// Flow-table buckets swept per idle poll (per table).
pub const SWEEP_IDLE: usize = 256;

/// Bursts of one port a poll runs through one prefetch window while each is full (`Worker::run_burst`). The
/// window starts empty once a run, its first packets waiting for their lookups with nothing to overlap them, and one
/// run of several bursts pays that once. 4 against 1: established NAT with 1 M flows +4.6 %, IPv6 +5.1 %, new NAT
/// flows +4.5 %, new DSR-L2 flows +4.4 %, 10 k flows (in cache) no change (`edgelb-perf --seconds 2`, seven
/// interleaved rounds, medians, Intel Xeon VM); 16 measured no better than 4. A poll so takes up to 256 packets from
/// one port before the next port's burst.
pub const CHAIN: usize = 4;

/// The packets of one run of [`Worker::run_burst`]: up to [`CHAIN`] bursts, each appended as it is received.
type Run<B> = ArrayVec<Option<Handoff<B>>, { CHAIN * BURST }>;

/// The stage-1 records of a run's window (see [`Worker::run_burst`]): `n` written so far, record `j` at
/// `recs[j % WINDOW]`.
#[derive(Default)]
struct Window {
    recs: [(usize, Parsed); WINDOW],
    /// What stage 2 answered for record `j`, at `victims[j % WINDOW]` ([`Pipeline::prefetch_link`]).
    victims: [Victim; WINDOW],
    n: usize,
}

impl Window {
    #[inline(always)]
    fn at(&self, j: usize) -> &(usize, Parsed) {
        &self.recs[j % WINDOW]
    }
    #[inline(always)]
    fn at_mut(&mut self, j: usize) -> &mut (usize, Parsed) {
        &mut self.recs[j % WINDOW]
    }
}

/// Where a run of [`Worker::run_burst`] takes more bursts from, and what it took.
struct Chain {
    /// The port (none: hand-offs, one burst only).
    port: Option<usize>,
    /// Bursts it may still receive.
    left: usize,
    /// Bursts run, the first included.
    bursts: usize,
    /// Packets received after the first burst.
    received: usize,
    /// Full bursts it ran (each but the last of a run is full).
    full: u32,
}

impl Chain {
    /// One burst of hand-offs: nothing more to receive.
    fn single() -> Self {
        Self { port: None, left: 0, bursts: 1, received: 0, full: 0 }
    }

    /// A run from port `pi`, whose first burst held `n` packets: more bursts while each is full, [`CHAIN`] at most.
    fn port(pi: usize, n: usize) -> Self {
        let full = n >= BURST;
        Self { port: Some(pi), left: if full { CHAIN - 1 } else { 0 }, bursts: 1, received: 0, full: u32::from(full) }
    }
}

/// A packet moving between workers or to the slow path, with the port it arrived on.
pub type Handoff<B> = (PortId, B);

/// What a worker publishes.
#[derive(Debug, Clone)]
pub struct WorkerStats {
    /// Worker index.
    pub worker: u16,
    /// Core it is pinned to, if pinning succeeded.
    pub core: Option<usize>,
    /// Pipeline counters.
    pub counters: Counters,
    /// Per-backend counters by stable id.
    pub backends: Vec<ObjCounters>,
    /// Per-service counters by stable id.
    pub services: Vec<ObjCounters>,
    /// IPv4 and IPv6 flow-table counters.
    pub tables: (TableStats, TableStats),
    /// Flow-table capacities (IPv4, IPv6).
    pub capacity: (usize, usize),
    /// Port counters, by port index.
    pub ports: Vec<PortStats>,
    /// Nanoseconds to process one non-empty burst (receive to transmit; a run of a port's full bursts counts as that
    /// many bursts of its mean time).
    pub burst_ns: Histogram<u64>,
    /// Bursts processed.
    pub bursts: u64,
    /// Nanoseconds in polls that found packets (receive, process, transmit).
    pub busy_ns: u64,
    /// Nanoseconds in polls that found none, sleeps included.
    pub idle_ns: u64,
    /// Nanoseconds asleep between polls ([`Polling::Adaptive`]), part of `idle_ns`.
    pub sleep_ns: u64,
    /// Config generation in use.
    pub generation: u64,
    /// When the worker last published these (every [`PUBLISH_EVERY`] while it runs, busy or idle): a stale time is a
    /// worker that stopped advancing.
    pub published: Option<Instant>,
}

impl WorkerStats {
    /// Empty stats for worker `worker`.
    pub fn new_for(worker: u16) -> Self {
        Self::new(worker)
    }

    fn new(worker: u16) -> Self {
        Self {
            worker,
            core: None,
            counters: Counters::default(),
            backends: Vec::new(),
            services: Vec::new(),
            tables: (TableStats::default(), TableStats::default()),
            capacity: (0, 0),
            ports: Vec::new(),
            burst_ns: new_histogram(),
            bursts: 0,
            busy_ns: 0,
            idle_ns: 0,
            sleep_ns: 0,
            generation: 0,
            published: None,
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 10 s at 3 significant digits; construction cannot fail with these bounds.
    Histogram::new_with_bounds(1, 10_000_000_000, 3).unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

/// Everything one worker needs.
pub struct WorkerSetup<P: Port> {
    /// Worker index.
    pub worker: u16,
    /// Core to pin to (`None`: not pinned).
    pub core: Option<usize>,
    /// The worker's ports (or its queues of shared ports), indexed by [`PortId`].
    pub ports: Vec<P>,
    /// Table sizes.
    pub sizes: TableSizes,
    /// How the worker polls when there is no traffic.
    pub polling: Polling,
    /// New flows a second the worker admits while saturated (0: no limit; see [`Pipeline::set_new_flow_limit`]).
    pub new_flow_limit: u32,
}

/// How a worker waits for packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polling {
    /// Poll without pause: the lowest latency, a whole core at 100 % even without traffic.
    Busy,
    /// Back off when idle (as VPP's adaptive mode and DPDK's l3fwd-power do): after [`Polling::SPIN_POLLS`] empty
    /// polls in a row the worker sleeps between polls, [`Polling::FIRST_SLEEP_US`] at first, doubling up to
    /// `max_sleep_us`; the first packet returns it to busy polling. A packet arriving during a sleep waits for its
    /// end (at most `max_sleep_us` plus the kernel's timer slack).
    Adaptive {
        /// The longest sleep, microseconds.
        max_sleep_us: u32,
    },
}

impl Default for Polling {
    /// Busy: an appliance's workers own their cores, and a sleeping worker adds its wake-up to the latency (on a
    /// VM, where an idle vCPU halts, milliseconds: `perf/polling.sh`).
    fn default() -> Self {
        Polling::Busy
    }
}

impl Polling {
    /// Empty polls in a row before the first sleep (tens of microseconds of spinning).
    pub const SPIN_POLLS: u32 = 1024;
    /// The first sleep, microseconds.
    pub const FIRST_SLEEP_US: u32 = 10;
    /// The default longest sleep, microseconds.
    pub const DEFAULT_MAX_SLEEP_US: u32 = 200;

    /// How long to sleep after `empty` empty polls in a row (`None`: poll again at once).
    pub fn backoff(self, empty: u32) -> Option<Duration> {
        let max = match self {
            Polling::Busy => return None,
            Polling::Adaptive { max_sleep_us } => max_sleep_us,
        };
        let past = empty.checked_sub(Self::SPIN_POLLS)?;
        let us = Self::FIRST_SLEEP_US.saturating_mul(1u32 << past.min(16)).min(max);
        Some(Duration::from_micros(u64::from(us)))
    }
}

impl<P: Port> std::fmt::Debug for WorkerSetup<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSetup").field("worker", &self.worker).field("core", &self.core).finish()
    }
}

/// A running set of workers.
pub struct Workers<P: Port> {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<P>>>,
    /// Published stats, one per worker.
    pub stats: Vec<Arc<Mutex<WorkerStats>>>,
    /// Slow-path ring: packets for the appliance itself.
    pub slow: Arc<ArrayQueue<Handoff<P::Buf>>>,
    /// Frames the slow path sends (ARP, NDP, ICMP answers): worker 0 transmits them on the port named.
    pub inject: Arc<ArrayQueue<Handoff<P::Buf>>>,
    /// Rewritten packets whose next hop's MAC is not known yet (verdict `Resolve`), for the slow path to hold until
    /// it resolves the next hop.
    pub held: HeldRing<P::Buf>,
    /// Per worker: the config generation it last loaded (written only when it changes).
    pub in_use: Vec<Arc<AtomicU64>>,
    signal: Arc<GenerationSignal>,
    queries: Vec<Arc<ArrayQueue<QueryRequest>>>,
    /// Per worker: its new flows (out) and the peers' flows for it to install (in); empty without replication.
    pub replicas: Vec<(ReplicaQueue, ReplicaQueue)>,
}

/// Wakes whoever waits for the workers to load a generation ([`WorkerView::wait_all_use`]). A worker takes the lock
/// only when its generation changes (once per config change, never per packet), so a waiter that checked under the
/// lock cannot miss the wake-up.
#[derive(Debug, Default)]
struct GenerationSignal {
    lock: Mutex<()>,
    changed: Condvar,
}

/// What the control plane sees of running workers (cheap to clone; outlives nothing it needs).
#[derive(Debug, Clone)]
pub struct WorkerView {
    /// Published stats, one per worker.
    pub stats: Vec<Arc<Mutex<WorkerStats>>>,
    in_use: Vec<Arc<AtomicU64>>,
    signal: Arc<GenerationSignal>,
    queries: Vec<Arc<ArrayQueue<QueryRequest>>>,
}

impl WorkerView {
    /// Ask the worker that owns `t` where the flow goes now and whether it tracks it; it answers between bursts.
    ///
    /// # Errors
    /// [`QueryError`] when its query ring is full or it does not answer within `timeout`.
    pub fn query(&self, t: Tuple, timeout: Duration) -> Result<(u16, Option<FlowQuery>), QueryError> {
        let n = self.queries.len() as u16;
        let w = crate::pipeline::owner_of_client(&crate::snapshot::addr16(t.src), n);
        let (tx, rx) = sync_channel(1);
        let Some(q) = self.queries.get(usize::from(w)) else { return Err(QueryError::Busy(w)) };
        q.push(QueryRequest::Query(t, tx)).map_err(|_| QueryError::Busy(w))?;
        rx.recv_timeout(timeout).map(|a| (w, a)).map_err(|_| QueryError::Timeout(w, timeout))
    }

    /// Up to `page` tracked flows matching `filter`, from `token` (`None`: the start), with the worker that tracks
    /// each, and the token of the next page (`None`: no more).
    ///
    /// # Errors
    /// [`QueryError`] when a worker does not answer within `timeout`.
    pub fn list_flows(
        &self,
        filter: FlowFilter,
        token: Option<FlowPageToken>,
        page: usize,
        timeout: Duration,
    ) -> Result<FlowPage, QueryError> {
        let (mut w, mut cursor) = token.unwrap_or((0, (false, 0)));
        let mut out = Vec::new();
        let page = page.max(1);
        while usize::from(w) < self.queries.len() {
            if out.len() >= page {
                return Ok((out, Some((w, cursor))));
            }
            let (tx, rx) = sync_channel(1);
            let q = &self.queries[usize::from(w)];
            q.push(QueryRequest::List(cursor, filter, page - out.len(), tx)).map_err(|_| QueryError::Busy(w))?;
            let (flows, next) = rx.recv_timeout(timeout).map_err(|_| QueryError::Timeout(w, timeout))?;
            out.extend(flows.into_iter().map(|f| (w, f)));
            match next {
                Some(c) => cursor = c,
                None => {
                    w += 1;
                    cursor = (false, 0);
                }
            }
        }
        Ok((out, None))
    }

    /// Live tracked flows of every worker, by state: each worker counts its own tables between bursts, a bounded
    /// slice per request.
    ///
    /// # Errors
    /// [`QueryError`] when a worker does not answer within `timeout`.
    pub fn census(&self, timeout: Duration) -> Result<FlowCensus, QueryError> {
        let mut total = FlowCensus::default();
        for (w, q) in self.queries.iter().enumerate() {
            let w = w as u16;
            let mut cursor = Some((false, 0));
            while let Some(c) = cursor {
                let (tx, rx) = sync_channel(1);
                q.push(QueryRequest::Census(c, tx)).map_err(|_| QueryError::Busy(w))?;
                let (part, next) = rx.recv_timeout(timeout).map_err(|_| QueryError::Timeout(w, timeout))?;
                total.add(&part);
                cursor = next;
            }
        }
        Ok(total)
    }

    /// Make worker `w` panic between bursts, as a bug would: for tests of what the daemon does when a worker dies.
    ///
    /// # Errors
    /// [`QueryError::Busy`] when the worker does not exist or its request ring is full.
    pub fn inject_fault(&self, w: u16) -> Result<(), QueryError> {
        let q = self.queries.get(usize::from(w)).ok_or(QueryError::Busy(w))?;
        q.push(QueryRequest::Fault).map_err(|_| QueryError::Busy(w))
    }

    /// True once every worker has loaded config generation `generation` (or a later one).
    pub fn all_use(&self, generation: u64) -> bool {
        self.in_use.iter().all(|g| g.load(Ordering::Acquire) >= generation)
    }

    /// Wait (blocking, at most `timeout`) until every worker has loaded `generation`; false if one has not by then.
    pub fn wait_all_use(&self, generation: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(mut guard) = self.signal.lock.lock() else { return self.all_use(generation) };
        loop {
            if self.all_use(generation) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = match self.signal.changed.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(_) => return self.all_use(generation),
            };
        }
    }

    /// The latest published stats of every worker.
    pub fn snapshot(&self) -> Vec<WorkerStats> {
        self.stats.iter().filter_map(|s| s.lock().ok().map(|g| g.clone())).collect()
    }
}

/// A request from the control plane, answered by the worker on its own thread between bursts (its tables are its
/// own: nothing else reads them).
enum QueryRequest {
    /// Where does this flow go, is it tracked?
    Query(Tuple, SyncSender<Option<FlowQuery>>),
    /// A page of tracked flows from a cursor.
    List(FlowCursor, FlowFilter, usize, SyncSender<(Vec<FlowInfo>, Option<FlowCursor>)>),
    /// Live flows by state, in a slice of the tables from a cursor.
    Census(FlowCursor, SyncSender<(FlowCensus, Option<FlowCursor>)>),
    /// Panic (fault injection for tests of the daemon's dead-worker handling; see [`WorkerView::inject_fault`]).
    Fault,
}

/// Flow-table slots a worker scans per listing request: a bounded pause (tens of microseconds) between bursts.
const LIST_SCAN_SLOTS: u32 = 16_384;

/// A packet waiting for its next hop's MAC: it leaves by `port` once `via` (16-byte form) is resolved.
#[derive(Debug)]
pub struct Held<B> {
    /// Egress port.
    pub port: PortId,
    /// The next hop to resolve.
    pub via: [u8; 16],
    /// IPv4 (else IPv6).
    pub v4: bool,
    /// The rewritten frame; its destination MAC is to be filled in.
    pub buf: B,
}

/// The ring of held packets from all workers to the slow path.
pub type HeldRing<B> = Arc<ArrayQueue<Held<B>>>;

/// Where a paged flow listing continues: worker and cursor in its tables.
pub type FlowPageToken = (u16, FlowCursor);

/// One page of a flow listing: (worker, flow) pairs and where the next page starts (`None`: no more).
pub type FlowPage = (Vec<(u16, FlowInfo)>, Option<FlowPageToken>);

/// Why a flow query got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The owning worker's query ring is full (too many concurrent queries).
    #[error("worker {0} is busy with other queries")]
    Busy(u16),
    /// The owning worker did not answer in time (stopped or stalled).
    #[error("worker {0} did not answer within {1:?}")]
    Timeout(u16, Duration),
}

impl<P: Port> std::fmt::Debug for Workers<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers").field("n", &self.threads.len()).finish()
    }
}

impl<P: Port + 'static> Workers<P>
where
    P::Buf: 'static,
{
    /// Start one thread per setup, pinned to its core, all reading `config`.
    ///
    /// # Panics
    /// When a thread cannot be spawned (start-up only).
    pub fn spawn(setups: Vec<WorkerSetup<P>>, config: ConfigHandle, handoff_depth: usize, slow_depth: usize) -> Self {
        Self::spawn_replicating(setups, config, handoff_depth, slow_depth, 0)
    }

    /// [`Workers::spawn`], each worker with an outbound queue of its new flows and an inbound queue of the peers'
    /// flows, `replica_depth` records each ([`Workers::replicas`]); 0: no flow replication.
    ///
    /// # Panics
    /// When a thread cannot be spawned (start-up only).
    pub fn spawn_replicating(
        setups: Vec<WorkerSetup<P>>,
        config: ConfigHandle,
        handoff_depth: usize,
        slow_depth: usize,
        replica_depth: usize,
    ) -> Self {
        let n = setups.len() as u16;
        let replicas: Vec<(ReplicaQueue, ReplicaQueue)> = if replica_depth == 0 {
            Vec::new()
        } else {
            (0..n)
                .map(|_| (Arc::new(ArrayQueue::new(replica_depth)), Arc::new(ArrayQueue::new(replica_depth))))
                .collect()
        };
        let inboxes: Vec<Arc<ArrayQueue<Handoff<P::Buf>>>> =
            (0..n).map(|_| Arc::new(ArrayQueue::new(handoff_depth.max(BURST)))).collect();
        let slow = Arc::new(ArrayQueue::new(slow_depth.max(1)));
        let inject = Arc::new(ArrayQueue::new(slow_depth.max(1)));
        let held = Arc::new(ArrayQueue::new(slow_depth.max(1)));
        let stop = Arc::new(AtomicBool::new(false));
        let mut stats = Vec::new();
        let mut threads = Vec::new();
        let mut in_use_all = Vec::new();
        let signal = Arc::new(GenerationSignal::default());
        let mut queries_all = Vec::new();
        for s in setups {
            let st = Arc::new(Mutex::new(WorkerStats::new(s.worker)));
            stats.push(st.clone());
            let in_use = Arc::new(AtomicU64::new(0));
            in_use_all.push(in_use.clone());
            let queries = Arc::new(ArrayQueue::new(16));
            queries_all.push(queries.clone());
            let (cfg, stop, inboxes, slow) = (config.clone(), stop.clone(), inboxes.clone(), slow.clone());
            let held_ring = held.clone();
            let signal = signal.clone();
            let inject = (s.worker == 0).then(|| inject.clone());
            let rq = replicas.get(usize::from(s.worker)).cloned();
            let t = std::thread::Builder::new()
                .name(format!("edgelb-w{}", s.worker))
                .spawn(move || {
                    let pinned = s.core.filter(|&c| core_affinity::set_for_current(core_affinity::CoreId { id: c }));
                    let mut s = s;
                    for p in &mut s.ports {
                        p.on_worker_thread();
                    }
                    let mut w = Worker::new(s.worker, n, s.sizes, s.ports, inboxes, slow, st);
                    w.core = pinned;
                    w.inject = inject;
                    w.in_use = Some((in_use, signal));
                    w.held = Some(held_ring);
                    w.queries = Some(queries);
                    w.polling = s.polling;
                    w.pipeline.set_new_flow_limit(s.new_flow_limit);
                    if let Some((out, inq)) = rq {
                        w.pipeline.set_replica_out(Some(out));
                        w.replicas_in = Some(inq);
                    }
                    w.run(&cfg, &stop);
                    w.ports
                })
                .expect("spawn worker thread");
            threads.push(t);
        }
        Self { stop, threads, stats, slow, inject, held, in_use: in_use_all, signal, queries: queries_all, replicas }
    }

    /// A handle on the running workers for the control plane: their stats, their config generations, flow queries.
    pub fn view(&self) -> WorkerView {
        WorkerView {
            stats: self.stats.clone(),
            in_use: self.in_use.clone(),
            signal: self.signal.clone(),
            queries: self.queries.clone(),
        }
    }

    /// The first worker whose thread has ended although nobody asked it to stop (it panicked, or returned): the
    /// daemon must not forward on without it.
    pub fn dead(&self) -> Option<u16> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        self.threads.iter().position(|t| t.is_finished()).map(|i| i as u16)
    }

    /// Ask every worker to stop, wait for them, and give back their ports.
    pub fn stop(self) -> Vec<Vec<P>> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().filter_map(|t| t.join().ok()).collect()
    }

    /// Stop the workers and return their ports with the final counters (published as each worker exits).
    pub fn stop_with_totals(self) -> (Vec<Vec<P>>, Counters) {
        let stats = self.stats.clone();
        let ports = self.stop();
        let mut t = Counters::default();
        for s in &stats {
            if let Ok(s) = s.lock() {
                t.add(&s.counters);
            }
        }
        (ports, t)
    }

    /// Sum of every worker's pipeline counters (as last published, at most [`PUBLISH_EVERY`] old).
    pub fn total(&self) -> Counters {
        let mut t = Counters::default();
        for s in &self.stats {
            if let Ok(s) = s.lock() {
                t.add(&s.counters);
            }
        }
        t
    }
}

/// One worker's state. Public so the benchmark harness and tests can drive it on the current thread.
pub struct Worker<P: Port> {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Ports by [`PortId`].
    pub ports: Vec<P>,
    inboxes: Vec<Arc<ArrayQueue<Handoff<P::Buf>>>>,
    slow: Arc<ArrayQueue<Handoff<P::Buf>>>,
    out: Vec<Burst<P::Buf>>,
    rx: Burst<P::Buf>,
    hist: Histogram<u64>,
    bursts: u64,
    published: Arc<Mutex<WorkerStats>>,
    last_publish: Instant,
    epoch: Instant,
    core: Option<usize>,
    generation: u64,
    inject: Option<Arc<ArrayQueue<Handoff<P::Buf>>>>,
    in_use: Option<(Arc<AtomicU64>, Arc<GenerationSignal>)>,
    queries: Option<Arc<ArrayQueue<QueryRequest>>>,
    held: Option<HeldRing<P::Buf>>,
    /// Flows the peer appliances replicated, to install between bursts.
    replicas_in: Option<ReplicaQueue>,
    /// How the worker waits when a poll finds no packets (see [`Polling`]).
    pub polling: Polling,
    /// The measurement floor (`edgelb-perf --mode floor`): every received packet goes back out of its port with its
    /// MACs swapped, without parsing or lookup — what receiving and transmitting alone cost. Never set by edgelbd.
    pub floor: bool,
    /// Time in polls with packets, in polls without (sleeps included), asleep: nanoseconds.
    busy_ns: u64,
    idle_ns: u64,
    sleep_ns: u64,
}

/// Replicated flows a worker installs per poll at most (so a peer's bulk send never stalls the packet path long).
const REPLICAS_PER_POLL: usize = 64;

impl<P: Port> std::fmt::Debug for Worker<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("pipeline", &self.pipeline).finish()
    }
}

impl<P: Port> Worker<P> {
    /// A worker; `inboxes[i]` is worker i's hand-off ring.
    pub fn new(
        worker: u16,
        nworkers: u16,
        sizes: TableSizes,
        ports: Vec<P>,
        inboxes: Vec<Arc<ArrayQueue<Handoff<P::Buf>>>>,
        slow: Arc<ArrayQueue<Handoff<P::Buf>>>,
        published: Arc<Mutex<WorkerStats>>,
    ) -> Self {
        let out = (0..ports.len()).map(|_| Burst::new()).collect();
        Self {
            pipeline: Pipeline::new(worker, nworkers, sizes),
            ports,
            inboxes,
            slow,
            out,
            rx: Burst::new(),
            hist: new_histogram(),
            bursts: 0,
            published,
            last_publish: Instant::now(),
            epoch: Instant::now(),
            core: None,
            generation: 0,
            inject: None,
            in_use: None,
            queries: None,
            held: None,
            replicas_in: None,
            polling: Polling::Busy,
            floor: false,
            busy_ns: 0,
            idle_ns: 0,
            sleep_ns: 0,
        }
    }

    /// Milliseconds since the worker started, or since the instant [`Worker::set_epoch`] gave (0 before it): the flow
    /// tables' clock.
    #[inline]
    pub fn now_ms(&self) -> u32 {
        self.ms_at(Instant::now())
    }

    /// The flow tables' clock at instant `t` (0 for any instant before the epoch).
    #[inline(always)]
    fn ms_at(&self, t: Instant) -> u32 {
        t.saturating_duration_since(self.epoch).as_millis() as u32
    }

    /// Count the flow tables' clock from `epoch` instead of the worker's start. A test sets it ahead of now to hold the
    /// clock at 0, as the pipeline it compares the worker with is driven.
    pub fn set_epoch(&mut self, epoch: Instant) {
        self.epoch = epoch;
    }

    fn run(&mut self, cfg: &ConfigHandle, stop: &AtomicBool) {
        let mut empty = 0u32;
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let n = self.poll(cfg);
            let now = Instant::now();
            let dt = now.duration_since(last).as_nanos() as u64;
            last = now;
            if n > 0 {
                self.busy_ns += dt;
                empty = 0;
                continue;
            }
            self.idle_ns += dt;
            empty = empty.saturating_add(1);
            match self.polling.backoff(empty) {
                Some(d) => {
                    std::thread::sleep(d);
                    self.sleep_ns += last.elapsed().as_nanos() as u64;
                }
                None => std::hint::spin_loop(),
            }
        }
        self.pipeline.sum_service_flows(&cfg.load());
        self.publish();
    }

    /// One pass: inbox, then every port once. Returns packets processed.
    pub fn poll(&mut self, handle: &ConfigHandle) -> usize {
        let cfg = handle.load();
        self.pipeline.sync(&cfg);
        // One reading of the clock (about 24 ns on the AMD EPYC VM) serves the flow tables' clock, the publish check
        // and, when nothing came before the ports, the first burst's start; each burst's end is the next one's start.
        let start = Instant::now();
        let now = self.ms_at(start);
        let mut quiet = true;
        if self.generation != cfg.generation {
            self.generation = cfg.generation;
            if let Some((g, signal)) = &self.in_use {
                g.store(cfg.generation, Ordering::Release);
                let _held = signal.lock.lock();
                signal.changed.notify_all();
            }
        }
        if let Some(q) = &self.queries {
            // The asker may have given up (timed out); then the answer has nowhere to go.
            let request = q.pop();
            quiet &= request.is_none();
            match request {
                Some(QueryRequest::Query(t, reply)) => {
                    let _ = reply.try_send(self.pipeline.query(&cfg, &t, now));
                }
                Some(QueryRequest::Fault) => panic!("fault injected: worker {} stops", self.pipeline.worker),
                Some(QueryRequest::List(from, filter, max, reply)) => {
                    // Allocates: a control-plane request, answered between bursts, never on the packet path.
                    let mut out = Vec::with_capacity(max.min(4096));
                    let next = self.pipeline.list_flows(from, LIST_SCAN_SLOTS, now, &filter, &mut out, max);
                    let _ = reply.try_send((out, next));
                }
                Some(QueryRequest::Census(from, reply)) => {
                    let mut c = FlowCensus::default();
                    let next = self.pipeline.census(from, LIST_SCAN_SLOTS, now, &mut c);
                    let _ = reply.try_send((c, next));
                }
                None => {}
            }
        }
        if let Some(q) = &self.replicas_in {
            for _ in 0..REPLICAS_PER_POLL {
                let Some(r) = q.pop() else { break };
                quiet = false;
                let _ = self.pipeline.install_replica(&cfg, &r, now);
            }
        }
        let mut total = 0;
        // Hand-offs from other workers: a burst at a time, through the same stages as a port's burst. The inbox is
        // borrowed, not cloned: an Arc clone per poll would bounce its refcount line between cores.
        let mut handed: Run<P::Buf> = Run::new();
        if let Some(inbox) = self.inboxes.get(usize::from(self.pipeline.worker)) {
            while handed.len() < BURST {
                let Some(x) = inbox.pop() else { break };
                handed.push(Some(x));
            }
        }
        if !handed.is_empty() {
            quiet = false;
            total += handed.len();
            self.run_burst(&cfg, now, &mut handed, &mut Chain::single());
        }
        // Frames from the slow path go out as they are.
        let mut injected: Burst<Handoff<P::Buf>> = Burst::new();
        if let Some(inject) = &self.inject {
            while !injected.is_full() {
                let Some(x) = inject.pop() else { break };
                injected.push(x);
            }
        }
        quiet &= injected.is_empty();
        for (port, b) in injected {
            self.dispatch(Verdict::Tx(port), port, b);
        }
        // A burst's time runs from the poll's start (or the previous burst's end), its receive included, to its flush.
        let mut t0 = quiet.then_some(start);
        // Whether the ports keep the worker saturated (for the new-flow limit): judged on this poll, applied from the
        // next.
        let (mut received, mut full, mut bursts) = (0, 0, 0);
        for pi in 0..self.ports.len() {
            let n = self.ports[pi].rx_burst(&mut self.rx);
            if n == 0 {
                continue;
            }
            let began = t0.unwrap_or_else(Instant::now);
            let mut pkts: Run<P::Buf> = self.rx.drain(..).map(|b| Some((pi as PortId, b))).collect();
            let mut chain = Chain::port(pi, n);
            self.run_burst(&cfg, now, &mut pkts, &mut chain);
            self.flush();
            let ended = Instant::now();
            // A run of several bursts counts as that many bursts of its mean time.
            let ns = ended.saturating_duration_since(began).as_nanos() as u64 / chain.bursts as u64;
            let _ = self.hist.record_n(ns, chain.bursts as u64);
            t0 = Some(ended);
            self.bursts += chain.bursts as u64;
            bursts += chain.bursts;
            received += n + chain.received;
            full = full.max(chain.full);
            total += n + chain.received;
        }
        self.flush();
        self.pipeline.observe_poll(received, full, now);
        // A busy poll sweeps for each burst it ran (a run of several bursts is one poll).
        self.pipeline.housekeeping(if total == 0 { SWEEP_IDLE } else { SWEEP_BUSY * bursts.max(1) }, now);
        self.pipeline.refresh_replicas(&cfg, now);
        if start.saturating_duration_since(self.last_publish) >= PUBLISH_EVERY {
            self.pipeline.sum_service_flows(&cfg);
            self.publish();
        }
        total
    }

    /// Run a burst through the pipeline with a sliding prefetch window: while packet `k` is finished, packet
    /// `k + AHEAD_ENTRIES` has its flow entries prefetched and packet `k + AHEAD_ENTRIES + AHEAD_META` is parsed (which
    /// prefetches its meta lines). A window, rather than prefetching the whole burst at once, keeps the outstanding
    /// misses within what the core can track (issuing 64 meta prefetches back to back lost most of them). A packet
    /// whose parse alone decides it (a drop, a SYN the new-flow limit refuses, ARP) is finished at once and takes no
    /// place in the window, so a flood of them does not shorten the look-ahead of the packets that need lookups.
    ///
    /// A port's full burst is followed by its next ones ([`Chain`], up to [`CHAIN`] bursts while each is full): when
    /// stage 1 runs out of packets, the port is asked again and the window slides on into the new packets, rather
    /// than finishing the burst's last packets and starting empty. The window's first packets have nothing to overlap
    /// their lookups with, so a run pays that once for up to [`CHAIN`] bursts. Packets leave as before: a port's
    /// outgoing burst is sent whenever it fills, and what is left at the run's end.
    fn run_burst(&mut self, cfg: &DataplaneConfig, now: u32, pkts: &mut Run<P::Buf>, chain: &mut Chain) {
        if self.floor {
            let mut from = 0;
            loop {
                for (port, mut b) in pkts[from..].iter_mut().filter_map(Option::take) {
                    if let Some(h) = b.data_mut().get_mut(..12) {
                        let (dst, src) = h.split_at_mut(6);
                        dst.swap_with_slice(src);
                    }
                    self.dispatch(Verdict::Tx(port), port, b);
                }
                from = pkts.len();
                if !self.receive_more(pkts, chain) {
                    return;
                }
            }
        }
        let ahead = AHEAD_META + AHEAD_ENTRIES;
        // The packets still to finish, in arrival order: records `k..n` of the ring (the packet's index in `pkts`, what
        // stage 1 made of it), record `j` at `j % WINDOW`.
        let mut ring = Window::default();
        let mut next = 0;
        self.stage1(cfg, pkts, &mut next, &mut ring, ahead, chain);
        for j in 0..ring.n.min(AHEAD_ENTRIES) {
            ring.victims[j % WINDOW] = self.pipeline.prefetch_entries(cfg, &mut ring.at_mut(j).1);
        }
        let mut k = 0;
        while k < ring.n {
            self.stage1(cfg, pkts, &mut next, &mut ring, k + ahead + 1, chain);
            let j = k + AHEAD_ENTRIES;
            if j < ring.n {
                ring.victims[j % WINDOW] = self.pipeline.prefetch_entries(cfg, &mut ring.at_mut(j).1);
            }
            let v = ring.victims[(k + AHEAD_LINK) % WINDOW];
            if k + AHEAD_LINK < ring.n && v != Victim::NONE {
                self.pipeline.prefetch_link(v);
            }
            let (i, p) = ring.at(k);
            k += 1;
            let Some((port, mut b)) = pkts[*i].take() else { continue };
            let v = self.pipeline.process_parsed(cfg, port, &mut b, now, p);
            self.dispatch(v, port, b);
        }
    }

    /// The chain's next burst, appended to `pkts`: false when the chain ends (its last burst was not full, it ran
    /// [`CHAIN`] bursts, or the port had nothing).
    #[inline(never)]
    fn receive_more(&mut self, pkts: &mut Run<P::Buf>, chain: &mut Chain) -> bool {
        let Some(pi) = chain.port.filter(|_| chain.left > 0) else { return false };
        chain.left -= 1;
        let n = self.ports[pi].rx_burst(&mut self.rx);
        if n < BURST {
            chain.left = 0;
        }
        if n == 0 {
            return false;
        }
        chain.bursts += 1;
        chain.received += n;
        chain.full += u32::from(n >= BURST);
        pkts.extend(self.rx.drain(..).map(|b| Some((pi as PortId, b))));
        true
    }

    /// Stage 1 for the run's next packets until `ring` holds `upto` records, receiving the chain's next bursts when
    /// those received so far end (and while it may); packets it decides are finished here.
    #[inline(always)]
    fn stage1(
        &mut self,
        cfg: &DataplaneConfig,
        pkts: &mut Run<P::Buf>,
        next: &mut usize,
        ring: &mut Window,
        upto: usize,
        chain: &mut Chain,
    ) {
        while ring.n < upto {
            let i = *next;
            let Some(slot) = pkts.get_mut(i) else {
                if chain.left > 0 && self.receive_more(pkts, chain) {
                    continue;
                }
                return;
            };
            *next += 1;
            let Some((_, b)) = slot else { continue };
            let r = ring.at_mut(ring.n);
            self.pipeline.parse_into(cfg, b.data(), &mut r.1);
            match r.1.decided() {
                None => {
                    r.0 = i;
                    ring.n += 1;
                }
                Some(v) => {
                    if let Some((port, b)) = slot.take() {
                        self.pipeline.finish_decided(v);
                        self.dispatch(v, port, b);
                    }
                }
            }
        }
    }

    /// Act on a packet's verdict. A packet to transmit joins its port's outgoing burst here, inlined into the burst
    /// loop, and a dropped one goes back to its port; the rest, and a full outgoing burst, take
    /// [`Worker::dispatch_rest`].
    #[inline(always)]
    fn dispatch(&mut self, v: Verdict, in_port: PortId, b: P::Buf) {
        match v {
            Verdict::Tx(p) => {
                if let Some(out) = self.out.get_mut(usize::from(p)) {
                    if let Err(e) = out.try_push(b) {
                        self.transmit_full(usize::from(p), e.element());
                    }
                    return;
                }
            }
            Verdict::Drop(_) => {
                if let Some(port) = self.ports.get_mut(usize::from(in_port)) {
                    port.free(b);
                    return;
                }
            }
            _ => {}
        }
        self.dispatch_rest(v, in_port, b);
    }

    /// A packet for port `pi`, whose outgoing burst is full: the burst is sent first.
    #[inline(never)]
    fn transmit_full(&mut self, pi: usize, b: P::Buf) {
        self.flush_port(pi);
        // After a flush the burst has room, or the port refused everything and the rest was freed.
        if let Err(e) = self.out[pi].try_push(b) {
            self.pipeline.count_drop(DropReason::TxFull);
            self.ports[pi].free(e.element());
        }
    }

    /// [`Worker::dispatch`] of every verdict but a transmit to a port the worker has and a drop of a packet from one
    /// (every worker has all the ports, so a handed-off packet's port is one too).
    #[inline(never)]
    fn dispatch_rest(&mut self, v: Verdict, in_port: PortId, b: P::Buf) {
        match v {
            Verdict::Tx(_) => {
                self.pipeline.count_drop(DropReason::NoRoute);
                self.ports[usize::from(in_port)].free(b);
            }
            Verdict::Drop(_) => self.ports[usize::from(in_port)].free(b),
            Verdict::Resolve(port) => {
                let Some((via, v4)) = self.pipeline.resolve.take() else {
                    self.pipeline.count_drop(DropReason::NoRoute);
                    self.ports[usize::from(in_port)].free(b);
                    return;
                };
                let pushed = match &self.held {
                    Some(q) => q.push(Held { port, via, v4, buf: b }).map_err(|h| h.buf),
                    None => Err(b),
                };
                if let Err(b) = pushed {
                    // Nobody holds packets (a bare worker) or the ring is full: dropped as unroutable.
                    self.pipeline.count_drop(DropReason::NoRoute);
                    self.ports[usize::from(in_port)].free(b);
                }
            }
            Verdict::SlowPath => {
                if let Err((_, b)) = self.slow.push((in_port, b)) {
                    self.pipeline.count_drop(DropReason::SlowPathFull);
                    self.ports[usize::from(in_port)].free(b);
                }
            }
            Verdict::Handoff(w) => match self.inboxes.get(usize::from(w)) {
                Some(q) => {
                    if let Err((_, b)) = q.push((in_port, b)) {
                        self.pipeline.count_drop(DropReason::HandoffFull);
                        self.ports[usize::from(in_port)].free(b);
                    }
                }
                None => {
                    self.pipeline.count_drop(DropReason::HandoffFull);
                    self.ports[usize::from(in_port)].free(b);
                }
            },
        }
    }

    fn flush_port(&mut self, pi: usize) {
        if self.out[pi].is_empty() {
            return;
        }
        self.ports[pi].tx_burst(&mut self.out[pi]);
        let left = self.out[pi].len();
        if left > 0 {
            for b in self.out[pi].drain(..) {
                self.pipeline.count_drop(DropReason::TxFull);
                self.ports[pi].free(b);
            }
        }
    }

    /// Transmit everything queued.
    pub fn flush(&mut self) {
        for pi in 0..self.out.len() {
            self.flush_port(pi);
        }
    }

    /// Copy counters to the shared stats (skipped if a reader holds the lock; tried again next time).
    pub fn publish(&mut self) {
        self.last_publish = Instant::now();
        let Ok(mut s) = self.published.try_lock() else { return };
        s.core = self.core;
        s.counters.clone_from(&self.pipeline.counters);
        s.backends.clone_from(&self.pipeline.backend_stats);
        s.services.clone_from(&self.pipeline.service_stats);
        s.tables = self.pipeline.table_stats();
        s.capacity = self.pipeline.table_capacity();
        s.ports.clear();
        s.ports.extend(self.ports.iter().map(|p| p.stats()));
        let _ = s.burst_ns.add(&self.hist);
        self.hist.reset();
        s.bursts = self.bursts;
        (s.busy_ns, s.idle_ns, s.sleep_ns) = (self.busy_ns, self.idle_ns, self.sleep_ns);
        s.generation = self.generation;
        s.published = Some(self.last_publish);
    }

    /// Start measuring afresh: zero the pipeline counters and the burst histogram (tables keep their flows).
    pub fn reset_measurement(&mut self) {
        self.pipeline.counters = Default::default();
        self.hist.reset();
        self.bursts = 0;
        if let Ok(mut s) = self.published.lock() {
            s.burst_ns.reset();
        }
    }
}

/// Helper for tests and tools: a worker set of one, driven on the calling thread.
pub fn single<P: Port>(ports: Vec<P>, sizes: TableSizes) -> Worker<P> {
    Worker::new(
        0,
        1,
        sizes,
        ports,
        vec![Arc::new(ArrayQueue::new(BURST))],
        Arc::new(ArrayQueue::new(1024)),
        Arc::new(Mutex::new(WorkerStats::new(0))),
    )
}

impl<P: Port> Worker<P> {
    /// Take one slow-path packet (tests and the slow-path thread).
    pub fn slow_path_pop(&self) -> Option<Handoff<P::Buf>> {
        self.slow.pop()
    }
}

#[cfg(test)]
mod polling_tests {
    use super::Polling;
    use std::time::Duration;

    /// Busy never sleeps; adaptive spins SPIN_POLLS empty polls, then sleeps 10 µs, doubling up to its bound.
    #[test]
    fn backoff() {
        assert_eq!(Polling::Busy.backoff(u32::MAX), None);
        let a = Polling::Adaptive { max_sleep_us: 200 };
        assert_eq!(a.backoff(Polling::SPIN_POLLS - 1), None);
        let us = |n: u32| a.backoff(Polling::SPIN_POLLS + n).map(|d| d.as_micros());
        assert_eq!(
            (us(0), us(1), us(2), us(4), us(5), us(1000)),
            (Some(10), Some(20), Some(40), Some(160), Some(200), Some(200))
        );
        assert_eq!(Polling::default().backoff(u32::MAX), None);
        let d = Polling::Adaptive { max_sleep_us: Polling::DEFAULT_MAX_SLEEP_US };
        assert_eq!(d.backoff(u32::MAX), Some(Duration::from_micros(200)));
    }
}
