//! The one validated model behind the config file and the API, and the only place that builds dataplane snapshots.
//!
//! Every change — an API batch, a file reload, neighbours the slow path learnt, draining — goes through [`Store`]:
//! the model is changed on a copy, validated, built into a snapshot with slot movement, and only then published and
//! kept. A rejected change leaves the model, the version and the snapshot as they were. The version counts changes of
//! the service set (API applies and file reloads); optimistic concurrency compares against it.

use edgelb_dataplane::model::BackendState;
use edgelb_dataplane::model::{ConfigError, FieldPath, Model, Protocol, ServiceSpec, Step};
use edgelb_dataplane::path;
use edgelb_dataplane::snapshot::SlotsMoved;
use edgelb_dataplane::snapshot::{ConfigBuilder, ConfigHandle, DataplaneConfig};
use edgelb_dataplane::worker::WorkerView;
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::broadcast;

/// A service's identity: VIP, protocol, port (`None`: all ports).
pub type ServiceKey = (IpAddr, Protocol, Option<u16>);

/// The key of a service spec.
pub fn key_of(s: &ServiceSpec) -> ServiceKey {
    (s.vip, s.protocol, s.port)
}

/// Why a change was refused. Nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Bad input, naming the field in the batch's terms (e.g. `upserts[1].backends[0].weight`).
    #[error("{path}: {message}")]
    Invalid {
        /// Where the offending value is.
        path: FieldPath,
        /// What is wrong.
        message: String,
    },
    /// `expected_version` is not the current version.
    #[error("config version is {current}, not the expected {expected}: re-read and retry")]
    Stale {
        /// What the caller expected.
        expected: u64,
        /// What is in force.
        current: u64,
    },
    /// A named service or backend does not exist.
    #[error("{0}")]
    NotFound(String),
}

impl From<ConfigError> for StoreError {
    fn from(e: ConfigError) -> Self {
        StoreError::Invalid { path: e.path, message: e.message }
    }
}

/// One change of the service set.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Services to create or replace (by key).
    pub upserts: Vec<ServiceSpec>,
    /// Services to delete.
    pub deletes: Vec<ServiceKey>,
    /// Validate and report, change nothing.
    pub dry_run: bool,
    /// Refuse unless this is the current version (0: any).
    pub expected_version: u64,
}

/// What an accepted batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The version in force after the call (with `dry_run`, the version the batch would have made).
    pub version: u64,
    /// False for a dry run.
    pub applied: bool,
    /// Maglev slot movement per service of the new snapshot.
    pub moved: Vec<SlotsMoved>,
    /// Snapshot generation published (0 for a dry run).
    pub generation: u64,
}

/// A change the store announces to its watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A new version of the service set is in force.
    Applied {
        /// Version.
        version: u64,
        /// Who changed it: `api`, `file`.
        source: &'static str,
        /// Slot movement.
        moved: Vec<SlotsMoved>,
    },
    /// A backend's health changed.
    BackendHealth {
        /// Service.
        service: ServiceKey,
        /// Backend address and port.
        backend: (IpAddr, u16),
        /// Now healthy?
        healthy: bool,
        /// Why.
        reason: String,
    },
    /// Kubernetes sync said something about a Service (allocation failures, invalid Services).
    Kubernetes {
        /// `namespace/name`.
        service: String,
        /// Reason (e.g. `PoolExhausted`).
        reason: String,
        /// Message.
        message: String,
    },
    /// A BGP peer changed state.
    PeerState {
        /// Peer name.
        peer: String,
        /// New state.
        state: String,
        /// The error that caused it, if any.
        reason: String,
    },
    /// A VRRP virtual router changed state.
    VrrpState {
        /// Router name.
        router: String,
        /// New state.
        state: String,
        /// Why.
        reason: String,
    },
}

/// A backend of a service, as health checking names it.
pub type BackendKey = (ServiceKey, IpAddr, u16);

struct Inner {
    model: Model,
    learned: HashMap<IpAddr, [u8; 6]>,
    /// Backends whose health check fails, with the service's policy (true: keep their flows, i.e. drain).
    unhealthy: HashMap<BackendKey, bool>,
    /// Services from Kubernetes (the sync owns them; the file and the API own the model's).
    k8s: Vec<ServiceSpec>,
    builder: ConfigBuilder,
    version: u64,
}

/// The VRRP virtual routers as the daemon last reported them, and the advertisements refused by reason.
pub type VrrpReport = (Vec<edgelb_dataplane::slowpath::VrrpStatus>, Vec<(&'static str, u64)>);

/// A drain of the whole appliance: asked for, and once the daemon runs it, its progress.
#[derive(Debug, Clone, Default)]
pub struct DrainInfo {
    /// Asked for through the API and not yet taken by the daemon (the timeout asked for, if any).
    pub requested: Option<Option<Duration>>,
    /// The running drain.
    pub progress: Option<DrainProgress>,
}

/// A running drain as the daemon reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct DrainProgress {
    /// Since the drain started.
    pub elapsed: Duration,
    /// Its timeout.
    pub timeout: Duration,
    /// The last census of tracked flows.
    pub census: edgelb_dataplane::pipeline::FlowCensus,
}

/// Flow replication between appliances, as the daemon's replicator counts it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// Each peer, and whether it has sent its flows since this appliance started (answering its hello).
    pub peers: Vec<(String, bool)>,
    /// Flow records sent to the peers (each datagram goes to every peer).
    pub sent: u64,
    /// Records dropped before sending: more waiting than the bound while the rate held them back.
    pub dropped: u64,
    /// Records received from peers and handed to the workers.
    pub received: u64,
    /// Received records lost to a full worker queue.
    pub queue_full: u64,
    /// Datagrams accepted.
    pub accepted: u64,
    /// Datagrams refused, by reason (authentication, replay, length, ...; `stranger`: not from a peer).
    pub refused: Vec<(&'static str, u64)>,
    /// Bulk sends: every tracked flow sent to a peer that started.
    pub bulk_sends: u64,
}

/// The model, its version and the published snapshot.
pub struct Store {
    inner: Mutex<Inner>,
    handle: ConfigHandle,
    events: broadcast::Sender<StoreEvent>,
    workers: OnceLock<WorkerView>,
    ports: OnceLock<Vec<(String, String)>>,
    peers: Mutex<Vec<(String, crate::bgp::session::Status)>>,
    bfd_dropped: Mutex<Vec<(&'static str, u64)>>,
    replication: Mutex<Option<ReplicationStatus>>,
    drain: Mutex<DrainInfo>,
    vrrp: Mutex<VrrpReport>,
    apply_failures: std::sync::atomic::AtomicU64,
    /// The API's changes, laid over the file at every reload, and the state file keeping them for restarts
    /// (`--state`; none: they last until the process ends).
    state: Mutex<(Option<std::path::PathBuf>, crate::state::Overlay)>,
    vip_leases: Mutex<Option<std::collections::HashSet<IpAddr>>>,
    peer_ops: OnceLock<(u32, std::net::Ipv4Addr, tokio::sync::mpsc::Sender<crate::bgp::PeerOp>)>,
    k8s_status: Mutex<Option<K8sStatus>>,
    /// What L2Announcements are checked against: each port's name and whether it has an IPv4 address, and the
    /// file's virtual routers (set once by the daemon).
    vrrp_context: OnceLock<VrrpContext>,
    /// The virtual routers Kubernetes L2Announcements ask for, with a version the daemon follows.
    k8s_routers: Mutex<(u64, Vec<edgelb_dataplane::slowpath::vrrp::RouterSpec>)>,
    /// The last events, newest last, with when they happened (for `edgelbctl doctor`).
    recent: Mutex<std::collections::VecDeque<(std::time::SystemTime, StoreEvent)>>,
    /// Neighbour probes: the request the daemon has not taken yet, and the results of the latest one.
    probes: Mutex<Probes>,
    /// Drop counters sampled every few seconds over the last minute: when, and each reason's total then.
    drop_samples: Mutex<std::collections::VecDeque<DropSample>>,
}

/// Drop counters' totals by reason at one moment.
pub type DropSample = (std::time::Instant, Vec<(String, u64)>);

/// Events kept for `edgelbctl doctor`.
const RECENT_EVENTS: usize = 64;

/// A neighbour probe ([`Store::request_probe`]) and what answered it.
#[derive(Debug, Default)]
struct Probes {
    next_id: u64,
    asked: Option<(u64, Vec<IpAddr>)>,
    /// The id of the probe the results belong to, and each address with the MAC that answered.
    results: (u64, Vec<(IpAddr, Option<edgelb_dataplane::wire::ethernet::Mac>)>),
}

/// Ports (name, has an IPv4 address) and the file's virtual routers.
pub type VrrpContext = (Vec<(String, bool)>, Vec<edgelb_dataplane::slowpath::vrrp::RouterSpec>);

/// What the Kubernetes sync last reported, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct K8sStatus {
    /// Services watched (all, not only ours).
    pub services: usize,
    /// EndpointSlices watched.
    pub endpoint_slices: usize,
    /// Services of ours with an address.
    pub allocated: usize,
    /// Warnings of the last sync (allocation failures, invalid Services).
    pub failures: usize,
    /// Milliseconds from the first change seen to the dataplane snapshot in force, last sync.
    pub lag_ms: u64,
    /// This appliance holds the Lease (writes status and Events).
    pub leader: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("version", &self.version()).finish()
    }
}

/// How [`merge`] changed a model's services, so [`unmerge`] can take it back.
struct Merge {
    /// (index, previous spec) of each service an upsert replaced in place (indices before removals).
    replaced: Vec<(usize, ServiceSpec)>,
    /// (index, spec) of each deleted service, ascending.
    removed: Vec<(usize, ServiceSpec)>,
    /// New services appended at the end.
    appended: usize,
    /// Where each upsert landed in the merged list (service index → batch index), to name errors in the batch's terms.
    origin: FxHashMap<usize, usize>,
}

/// Apply a batch's deletes and upserts to `model` in place (an upsert replaces the service with its key where it is,
/// or is appended), copying only what the batch brings: one pass over the model, hash maps over the batch.
fn merge(model: &mut Model, batch: &Batch) -> Result<Merge, StoreError> {
    let mut upserts: FxHashMap<ServiceKey, usize> = FxHashMap::default();
    let deletes: FxHashMap<ServiceKey, usize> = batch.deletes.iter().enumerate().map(|(i, d)| (*d, i)).collect();
    for (i, u) in batch.upserts.iter().enumerate() {
        let k = key_of(u);
        if let Some(j) = upserts.insert(k, i) {
            return Err(StoreError::Invalid {
                path: path!(upserts[i]),
                message: format!("{} is also upserts[{j}]", show_key(&k)),
            });
        }
        if deletes.contains_key(&k) {
            return Err(StoreError::Invalid {
                path: path!(upserts[i]),
                message: format!("{} is also deleted in this batch", show_key(&k)),
            });
        }
    }
    let mut deleted: FxHashMap<ServiceKey, usize> = FxHashMap::default();
    for (i, d) in batch.deletes.iter().enumerate() {
        if deleted.insert(*d, i).is_some() {
            return Err(StoreError::Invalid { path: path!(deletes[i]), message: "listed twice".into() });
        }
    }
    // (model index, batch index) of upserts that replace a service, and model indices of deleted ones.
    let mut hits: Vec<(usize, usize)> = Vec::new();
    let mut gone: Vec<usize> = Vec::new();
    if !upserts.is_empty() || !deleted.is_empty() {
        for (mi, s) in model.services.iter().enumerate() {
            let k = key_of(s);
            if let Some(i) = upserts.remove(&k) {
                hits.push((mi, i));
            } else if deleted.remove(&k).is_some() {
                gone.push(mi);
            }
        }
    }
    if let Some(i) = deleted.values().min() {
        let d = &batch.deletes[*i];
        return Err(StoreError::NotFound(format!("deletes[{i}]: no service {}", show_key(d))));
    }
    let mut m = Merge {
        replaced: Vec::with_capacity(hits.len()),
        removed: Vec::new(),
        appended: 0,
        origin: FxHashMap::default(),
    };
    for &(mi, i) in &hits {
        m.replaced.push((mi, std::mem::replace(&mut model.services[mi], batch.upserts[i].clone())));
    }
    if !gone.is_empty() {
        let mut kept = Vec::with_capacity(model.services.len() - gone.len());
        let mut next = gone.iter().copied().peekable();
        for (mi, s) in std::mem::take(&mut model.services).into_iter().enumerate() {
            if next.next_if_eq(&mi).is_some() {
                m.removed.push((mi, s));
            } else {
                kept.push(s);
            }
        }
        model.services = kept;
    }
    for &(mi, i) in &hits {
        m.origin.insert(mi - gone.partition_point(|&g| g < mi), i);
    }
    // New services, in batch order.
    let mut new: Vec<usize> = upserts.into_values().collect();
    new.sort_unstable();
    m.appended = new.len();
    for i in new {
        m.origin.insert(model.services.len(), i);
        model.services.push(batch.upserts[i].clone());
    }
    Ok(m)
}

/// Take back what [`merge`] did.
fn unmerge(model: &mut Model, m: Merge) {
    let keep = model.services.len().saturating_sub(m.appended);
    model.services.truncate(keep);
    if !m.removed.is_empty() {
        let mut out = Vec::with_capacity(model.services.len() + m.removed.len());
        let mut rest = std::mem::take(&mut model.services).into_iter();
        let mut removed = m.removed.into_iter().peekable();
        loop {
            match removed.next_if(|(mi, _)| *mi == out.len()) {
                Some((_, s)) => out.push(s),
                None => match rest.next() {
                    Some(s) => out.push(s),
                    None => break,
                },
            }
        }
        // Removed services past the end of what is left (cannot remain, but never lose one).
        out.extend(removed.map(|(_, s)| s));
        model.services = out;
    }
    for (mi, s) in m.replaced {
        if let Some(x) = model.services.get_mut(mi) {
            *x = s;
        }
    }
}

/// What [`overlay`] added to or changed in a model, so [`strip`] can take it back.
struct Overlay {
    services: usize,
    neighbours: usize,
    states: Vec<(usize, usize, BackendState)>,
}

/// Turn the operator's model into the one the dataplane gets, in place: Kubernetes' services appended, learnt
/// neighbours added, failed backends taken out of the Maglev tables (down, or draining when the service keeps their
/// flows). [`strip`] takes it back.
fn overlay(
    m: &mut Model,
    learned: &HashMap<IpAddr, [u8; 6]>,
    unhealthy: &HashMap<BackendKey, bool>,
    k8s: &[ServiceSpec],
) -> Overlay {
    let o = Overlay { services: m.services.len(), neighbours: m.neighbours.len(), states: Vec::new() };
    let mut o = o;
    m.services.extend(k8s.iter().cloned());
    if !unhealthy.is_empty() {
        for (si, s) in m.services.iter_mut().enumerate() {
            let k = key_of(s);
            for (bi, b) in s.backends.iter_mut().enumerate() {
                if let Some(&keep) = unhealthy.get(&(k, b.addr, b.port)) {
                    let was = b.state;
                    if b.state == BackendState::Active {
                        b.state = if keep { BackendState::Draining } else { BackendState::Down };
                    } else if !keep {
                        b.state = BackendState::Down;
                    }
                    if b.state != was {
                        o.states.push((si, bi, was));
                    }
                }
            }
        }
    }
    let mut extra: Vec<(IpAddr, [u8; 6])> =
        learned.iter().filter(|(a, _)| !m.neighbours.iter().any(|(k, _)| k == *a)).map(|(a, mac)| (*a, *mac)).collect();
    extra.sort_unstable();
    m.neighbours.extend(extra);
    o
}

/// Take back what [`overlay`] did.
fn strip(m: &mut Model, o: Overlay) {
    for (si, bi, state) in o.states {
        if let Some(b) = m.services.get_mut(si).and_then(|s| s.backends.get_mut(bi)) {
            b.state = state;
        }
    }
    m.services.truncate(o.services);
    m.neighbours.truncate(o.neighbours);
}

/// Build `model` as the dataplane gets it ([`overlay`]), without copying it.
fn build_effective(
    builder: &mut ConfigBuilder,
    model: &mut Model,
    learned: &HashMap<IpAddr, [u8; 6]>,
    unhealthy: &HashMap<BackendKey, bool>,
    k8s: &[ServiceSpec],
) -> Result<(Arc<DataplaneConfig>, Vec<SlotsMoved>), ConfigError> {
    let o = overlay(model, learned, unhealthy, k8s);
    let built = builder.build(model);
    strip(model, o);
    built
}

impl Store {
    /// A store holding `model` as version 1, with its first snapshot published.
    ///
    /// # Errors
    /// The model's first validation error.
    pub fn new(model: Model) -> Result<Arc<Self>, StoreError> {
        let mut builder = ConfigBuilder::new();
        let (cfg, _) = builder.build(&model)?;
        Ok(Arc::new(Self {
            inner: Mutex::new(Inner {
                model,
                learned: HashMap::new(),
                unhealthy: HashMap::new(),
                k8s: Vec::new(),
                builder,
                version: 1,
            }),
            handle: ConfigHandle::new(cfg),
            events: broadcast::channel(1024).0,
            workers: OnceLock::new(),
            ports: OnceLock::new(),
            peers: Mutex::new(Vec::new()),
            bfd_dropped: Mutex::new(Vec::new()),
            replication: Mutex::new(None),
            drain: Mutex::new(DrainInfo::default()),
            vrrp: Mutex::new(VrrpReport::default()),
            apply_failures: std::sync::atomic::AtomicU64::new(0),
            state: Mutex::new((None, crate::state::Overlay::default())),
            vip_leases: Mutex::new(None),
            peer_ops: OnceLock::new(),
            k8s_status: Mutex::new(None),
            vrrp_context: OnceLock::new(),
            k8s_routers: Mutex::new((0, Vec::new())),
            recent: Mutex::new(std::collections::VecDeque::with_capacity(RECENT_EVENTS)),
            probes: Mutex::new(Probes::default()),
            drop_samples: Mutex::new(std::collections::VecDeque::new()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the model half-changed (changes are made on copies), so a
        // poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The handle workers load snapshots from.
    pub fn handle(&self) -> ConfigHandle {
        self.handle.clone()
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<DataplaneConfig> {
        Arc::clone(&self.handle.load())
    }

    /// Attach the running workers (stats, flow queries); once.
    pub fn attach_workers(&self, view: WorkerView) {
        let _ = self.workers.set(view);
    }

    /// Name and driver of each port, by index (the daemon sets them once it has opened the ports).
    pub fn set_port_names(&self, names: Vec<(String, String)>) {
        let _ = self.ports.set(names);
    }

    /// The BGP peers' status, as the speaker last reported it.
    pub fn set_peers(&self, p: Vec<(String, crate::bgp::session::Status)>) {
        if let Ok(mut g) = self.peers.lock() {
            *g = p;
        }
    }

    /// Configuration changes refused so far (API batches, file reloads, Kubernetes syncs).
    pub fn apply_failures(&self) -> u64 {
        self.apply_failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Kubernetes VIPs are owned by Lease from now on (`[kubernetes] vip_leases`): none is answered until held.
    pub fn enable_vip_leases(&self) {
        if let Ok(mut g) = self.vip_leases.lock() {
            g.get_or_insert_with(Default::default);
        }
    }

    /// The VIP Leases this appliance holds now.
    pub fn set_vip_leases_held(&self, held: std::collections::HashSet<IpAddr>) {
        if let Ok(mut g) = self.vip_leases.lock() {
            if let Some(h) = g.as_mut() {
                *h = held;
            }
        }
    }

    /// The VIPs of the Kubernetes Services in force.
    pub fn kubernetes_vips(&self) -> std::collections::HashSet<IpAddr> {
        self.lock().k8s.iter().map(|s| s.vip).collect()
    }

    /// With VIP Leases on: the VIPs they govern (every Kubernetes VIP) and those held here. `None`: off.
    pub fn vip_leases(&self) -> Option<(std::collections::HashSet<IpAddr>, std::collections::HashSet<IpAddr>)> {
        let held = self.vip_leases.lock().ok()?.clone()?;
        Some((self.kubernetes_vips(), held))
    }

    /// The daemon reports its VRRP routers.
    pub fn set_vrrp(&self, r: VrrpReport) {
        if let Ok(mut g) = self.vrrp.lock() {
            *g = r;
        }
    }

    /// The daemon says what virtual routers from Kubernetes are checked against (once, at start).
    pub fn set_vrrp_context(&self, c: VrrpContext) {
        let _ = self.vrrp_context.set(c);
    }

    /// Ports and the file's routers, once the daemon has said.
    pub fn vrrp_context(&self) -> Option<&VrrpContext> {
        self.vrrp_context.get()
    }

    /// The virtual routers Kubernetes asks for; the version moves only when they change.
    pub fn set_k8s_routers(&self, r: Vec<edgelb_dataplane::slowpath::vrrp::RouterSpec>) {
        if let Ok(mut g) = self.k8s_routers.lock() {
            if g.1 != r {
                *g = (g.0 + 1, r);
            }
        }
    }

    /// The virtual routers Kubernetes asks for, and their version.
    pub fn k8s_routers(&self) -> (u64, Vec<edgelb_dataplane::slowpath::vrrp::RouterSpec>) {
        self.k8s_routers.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// The VRRP routers as last reported.
    pub fn vrrp(&self) -> VrrpReport {
        self.vrrp.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Ask the daemon to drain the appliance (at most `timeout`; `None`: its own), as SIGTERM does. False when a
    /// drain was asked for or runs already.
    pub fn request_drain(&self, timeout: Option<Duration>) -> bool {
        let Ok(mut g) = self.drain.lock() else { return false };
        if g.requested.is_some() || g.progress.is_some() {
            return false;
        }
        g.requested = Some(timeout);
        true
    }

    /// The daemon takes a drain request (once), its timeout `None` when the caller gave none.
    pub fn take_drain_request(&self) -> Option<Option<Duration>> {
        self.drain.lock().ok().and_then(|mut g| g.requested.take())
    }

    /// The daemon reports where its drain stands.
    pub fn set_drain_progress(&self, p: DrainProgress) {
        if let Ok(mut g) = self.drain.lock() {
            g.requested = None;
            g.progress = Some(p);
        }
    }

    /// Where a drain stands.
    pub fn drain(&self) -> DrainInfo {
        self.drain.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// BFD control packets refused, by reason, as the speaker last reported them (empty without BFD).
    pub fn set_bfd_dropped(&self, d: Vec<(&'static str, u64)>) {
        if let Ok(mut g) = self.bfd_dropped.lock() {
            *g = d;
        }
    }

    /// Flow replication's counters, as the daemon last reported them (`None`: replication off).
    pub fn set_replication(&self, r: ReplicationStatus) {
        if let Ok(mut g) = self.replication.lock() {
            *g = Some(r);
        }
    }

    /// Flow replication's counters (`None`: replication off).
    pub fn replication(&self) -> Option<ReplicationStatus> {
        self.replication.lock().ok().and_then(|g| g.clone())
    }

    /// BFD control packets refused, by reason.
    pub fn bfd_dropped(&self) -> Vec<(&'static str, u64)> {
        self.bfd_dropped.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Connect the API's peer requests to the running speaker of AS `asn` with `router_id`.
    pub fn attach_speaker(
        &self,
        asn: u32,
        router_id: std::net::Ipv4Addr,
        ops: tokio::sync::mpsc::Sender<crate::bgp::PeerOp>,
    ) {
        let _ = self.peer_ops.set((asn, router_id, ops));
    }

    /// The speaker's AS, router id and request channel, when BGP runs.
    pub fn speaker(&self) -> Option<&(u32, std::net::Ipv4Addr, tokio::sync::mpsc::Sender<crate::bgp::PeerOp>)> {
        self.peer_ops.get()
    }

    /// Record the Kubernetes sync's state.
    pub fn set_k8s_status(&self, s: K8sStatus) {
        if let Ok(mut g) = self.k8s_status.lock() {
            *g = Some(s);
        }
    }

    /// The Kubernetes sync's state, when it runs.
    pub fn k8s_status(&self) -> Option<K8sStatus> {
        self.k8s_status.lock().ok().and_then(|g| *g)
    }

    /// The BGP peers' status.
    pub fn peers(&self) -> Vec<(String, crate::bgp::session::Status)> {
        self.peers.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Name and driver of each port, when known.
    pub fn port_names(&self) -> &[(String, String)] {
        self.ports.get().map_or(&[], Vec::as_slice)
    }

    /// The running workers, once attached.
    pub fn workers(&self) -> Option<&WorkerView> {
        self.workers.get()
    }

    /// Current version of the service set.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// A copy of the model (without learnt neighbours).
    pub fn model(&self) -> Model {
        self.lock().model.clone()
    }

    /// The services in force (the model's, then Kubernetes') and the version.
    pub fn services(&self) -> (u64, Vec<ServiceSpec>) {
        let g = self.lock();
        (g.version, g.model.services.iter().chain(&g.k8s).cloned().collect())
    }

    /// Replace the services that come from Kubernetes.
    ///
    /// # Errors
    /// The combined model's first validation error (e.g. a VIP the file or the API already uses); nothing changes.
    pub fn set_kubernetes(&self, services: Vec<ServiceSpec>) -> Result<Applied, StoreError> {
        let r = self.set_kubernetes_once(services);
        if r.is_err() {
            self.apply_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    /// [`Store::set_kubernetes`] itself; the wrapper counts failures.
    fn set_kubernetes_once(&self, services: Vec<ServiceSpec>) -> Result<Applied, StoreError> {
        let mut g = self.lock();
        if g.k8s == services {
            return Ok(Applied { version: g.version, applied: false, moved: Vec::new(), generation: 0 });
        }
        let i = &mut *g;
        let (cfg, moved) = build_effective(&mut i.builder, &mut i.model, &i.learned, &i.unhealthy, &services)?;
        g.k8s = services;
        Ok(self.commit(g, cfg, moved, "kubernetes"))
    }

    /// Watch changes.
    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    /// Announce an event (health checks use this).
    pub fn announce(&self, e: StoreEvent) {
        self.publish(e);
    }

    /// Send an event to the subscribers and keep it among the recent ones.
    fn publish(&self, e: StoreEvent) {
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == RECENT_EVENTS {
                r.pop_front();
            }
            r.push_back((std::time::SystemTime::now(), e.clone()));
        }
        let _ = self.events.send(e);
    }

    /// The last events (at most 64), oldest first.
    pub fn recent_events(&self) -> Vec<(std::time::SystemTime, StoreEvent)> {
        self.recent.lock().map(|r| r.iter().cloned().collect()).unwrap_or_default()
    }

    /// Ask the daemon to probe these addresses (ARP / neighbour solicitation, whatever the table holds); returns
    /// the probe's id for [`Store::probe_results`].
    pub fn request_probe(&self, addrs: Vec<IpAddr>) -> u64 {
        let Ok(mut p) = self.probes.lock() else { return 0 };
        p.next_id += 1;
        let id = p.next_id;
        p.asked = Some((id, addrs));
        id
    }

    /// The daemon takes the probe asked for.
    pub fn take_probe_request(&self) -> Option<(u64, Vec<IpAddr>)> {
        self.probes.lock().ok()?.asked.take()
    }

    /// The daemon reports what answered probe `id`.
    pub fn set_probe_results(&self, id: u64, r: Vec<(IpAddr, Option<edgelb_dataplane::wire::ethernet::Mac>)>) {
        if let Ok(mut p) = self.probes.lock() {
            p.results = (id, r);
        }
    }

    /// What answered probe `id` so far (`None`: the daemon has not sent it yet).
    pub fn probe_results(&self, id: u64) -> Option<Vec<(IpAddr, Option<edgelb_dataplane::wire::ethernet::Mac>)>> {
        let p = self.probes.lock().ok()?;
        (p.results.0 == id).then(|| p.results.1.clone())
    }

    /// Keep the drop counters' totals now (called every few seconds); samples older than 70 s go.
    pub fn sample_drops(&self, now: std::time::Instant, totals: Vec<(String, u64)>) {
        if let Ok(mut d) = self.drop_samples.lock() {
            while d.front().is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(70)) {
                d.pop_front();
            }
            d.push_back((now, totals));
        }
    }

    /// The oldest drop sample at most a minute old: when, and the totals then.
    pub fn drops_a_minute_ago(&self, now: std::time::Instant) -> Option<DropSample> {
        let d = self.drop_samples.lock().ok()?;
        d.iter().find(|(t, _)| now.duration_since(*t) <= Duration::from_secs(60)).cloned()
    }

    /// Apply a batch atomically. Field paths in errors name the batch: `upserts[i]...`, `deletes[i]`.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is applied.
    pub fn apply(&self, batch: &Batch, source: &'static str) -> Result<Applied, StoreError> {
        let r = self.apply_once(batch, source);
        match &r {
            Err(_) => {
                self.apply_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(a) if a.applied && source == "api" => self.keep(|o| {
                for u in &batch.upserts {
                    o.upsert(u);
                }
                for d in &batch.deletes {
                    o.delete(*d);
                }
            }),
            Ok(_) => {}
        }
        r
    }

    /// Record a change of the API's, and write the state file (if any) before this returns. A failed write leaves
    /// the change in force (and logged): it is lost only at the next restart.
    fn keep(&self, change: impl FnOnce(&mut crate::state::Overlay)) {
        let Ok(mut g) = self.state.lock() else { return };
        change(&mut g.1);
        if let Some(path) = &g.0 {
            if let Err(e) = crate::state::save(path, &g.1) {
                tracing::error!("the API's change is in force but not kept for restarts: {e}");
            }
        }
    }

    /// Keep the API's changes in `path` from now on, starting from `overlay` (what the file held), and lay them over
    /// the model in force.
    ///
    /// # Errors
    /// The model with the overlay does not build (the overlay is kept anyway, for the operator to fix).
    pub fn attach_state(&self, path: std::path::PathBuf, overlay: crate::state::Overlay) -> Result<(), StoreError> {
        let model = self.model();
        if let Ok(mut g) = self.state.lock() {
            *g = (Some(path), overlay);
        }
        self.replace(model, "state").map(|_| ())
    }

    /// The peers the API added and removed (those kept in the state file, at start).
    pub fn kept_peers(&self) -> (Vec<edgelb_api::v1::PeerConfig>, Vec<String>) {
        self.state.lock().map(|g| (g.1.peers_added.clone(), g.1.peers_removed.clone())).unwrap_or_default()
    }

    /// A peer the API added, kept for restarts.
    pub fn keep_peer_added(&self, p: &edgelb_api::v1::PeerConfig) {
        self.keep(|o| o.add_peer(p));
    }

    /// A peer the API removed, kept for restarts.
    pub fn keep_peer_removed(&self, name: &str) {
        self.keep(|o| o.remove_peer(name));
    }

    /// Where each service comes from: `api` (kept in the state), `kubernetes`, or `file`.
    pub fn source_of(&self, k: &ServiceKey) -> &'static str {
        if self.lock().k8s.iter().any(|s| key_of(s) == *k) {
            return "kubernetes";
        }
        let api = self.state.lock().ok().is_some_and(|g| g.1.services.iter().any(|(x, s)| x == k && s.is_some()));
        if api {
            "api"
        } else {
            "file"
        }
    }

    /// [`Store::apply`] itself; the wrapper counts failures.
    fn apply_once(&self, batch: &Batch, source: &'static str) -> Result<Applied, StoreError> {
        let mut g = self.lock();
        if batch.expected_version != 0 && batch.expected_version != g.version {
            return Err(StoreError::Stale { expected: batch.expected_version, current: g.version });
        }
        // Nothing to change: no new version, nothing published.
        if batch.upserts.is_empty() && batch.deletes.is_empty() {
            return Ok(Applied { version: g.version, applied: false, moved: Vec::new(), generation: 0 });
        }
        let i = &mut *g;
        let mut merge = merge(&mut i.model, batch)?;
        // A dry run builds in a scratch copy of the builder; either way the model is merged in place and, unless
        // the batch is applied, put back.
        let mut scratch = batch.dry_run.then(|| i.builder.clone());
        let builder = scratch.as_mut().unwrap_or(&mut i.builder);
        let built = build_effective(builder, &mut i.model, &i.learned, &i.unhealthy, &i.k8s);
        if batch.dry_run || built.is_err() {
            let origin = std::mem::take(&mut merge.origin);
            unmerge(&mut i.model, merge);
            let (_, moved) =
                built.map_err(|e| StoreError::Invalid { path: in_batch_terms(e.path, &origin), message: e.message })?;
            return Ok(Applied { version: g.version + 1, applied: false, moved, generation: 0 });
        }
        let (cfg, moved) = built?;
        Ok(self.commit(g, cfg, moved, source))
    }

    /// Publish a built snapshot, count a new version of the service set, announce it.
    fn commit(
        &self,
        mut g: MutexGuard<'_, Inner>,
        cfg: Arc<DataplaneConfig>,
        moved: Vec<SlotsMoved>,
        source: &'static str,
    ) -> Applied {
        let generation = cfg.generation;
        self.handle.publish(cfg);
        g.version += 1;
        let version = g.version;
        drop(g);
        self.publish(StoreEvent::Applied { version, source, moved: moved.clone() });
        Applied { version, applied: true, moved, generation }
    }

    /// Replace the whole model (a reloaded config file), keeping the draining state and learnt neighbours.
    ///
    /// # Errors
    /// The model's first validation error; nothing changes.
    pub fn replace(&self, mut model: Model, source: &'static str) -> Result<Applied, StoreError> {
        // The API's kept changes lie over the file's services (see `crate::state` for the precedence).
        if let Ok(g) = self.state.lock() {
            g.1.apply_to(&mut model);
        }
        let r = self.replace_once(model, source);
        if r.is_err() {
            self.apply_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    /// [`Store::replace`] itself; the wrapper counts failures.
    fn replace_once(&self, mut model: Model, source: &'static str) -> Result<Applied, StoreError> {
        let mut g = self.lock();
        model.draining = g.model.draining;
        let i = &mut *g;
        let (cfg, moved) = build_effective(&mut i.builder, &mut model, &i.learned, &i.unhealthy, &i.k8s)?;
        g.model = model;
        Ok(self.commit(g, cfg, moved, source))
    }

    /// Apply the slow path's neighbour changes (a MAC to use, or `None`: forget the address) and publish a snapshot
    /// with them. Static neighbours of the model win over learnt ones. Returns the generation.
    ///
    /// # Errors
    /// Should the model no longer build (it cannot: neighbours are not validated), the error.
    pub fn learn(&self, changes: impl IntoIterator<Item = (IpAddr, Option<[u8; 6]>)>) -> Result<u64, StoreError> {
        let mut g = self.lock();
        for (ip, mac) in changes {
            match mac {
                Some(mac) => g.learned.insert(ip, mac),
                None => g.learned.remove(&ip),
            };
        }
        let i = &mut *g;
        let (cfg, _) = build_effective(&mut i.builder, &mut i.model, &i.learned, &i.unhealthy, &i.k8s)?;
        let generation = cfg.generation;
        self.handle.publish(cfg);
        Ok(generation)
    }

    /// The VIPs another appliance owns now (VRRP, VIP Leases): their packets are still forwarded, and counted.
    ///
    /// # Errors
    /// Should the model no longer build, the error (nothing changes).
    pub fn set_unowned(&self, vips: &[IpAddr]) -> Result<u64, StoreError> {
        self.rebuild_with(|b| b.set_unowned(vips.iter().copied()))
    }

    /// Addresses of VRRP virtual routers that are not VIPs (gateways): ARP for them reaches the slow path.
    ///
    /// # Errors
    /// Should the model no longer build, the error (nothing changes).
    pub fn set_virtual_addrs(&self, addrs: &[IpAddr]) -> Result<u64, StoreError> {
        self.rebuild_with(|b| b.set_virtual_addrs(addrs.iter().copied()))
    }

    /// Change a setting of the builder (one it gives every snapshot), then build and publish.
    fn rebuild_with(&self, change: impl FnOnce(&mut ConfigBuilder)) -> Result<u64, StoreError> {
        let mut g = self.lock();
        let i = &mut *g;
        change(&mut i.builder);
        let (cfg, _) = build_effective(&mut i.builder, &mut i.model, &i.learned, &i.unhealthy, &i.k8s)?;
        let generation = cfg.generation;
        self.handle.publish(cfg);
        Ok(generation)
    }

    /// Whether the appliance drains.
    pub fn is_draining(&self) -> bool {
        self.lock().model.draining
    }

    /// Drain the appliance (refuse new flows) or stop draining.
    ///
    /// # Errors
    /// Should the model no longer build, the error.
    pub fn set_draining(&self, draining: bool) -> Result<u64, StoreError> {
        let mut g = self.lock();
        let i = &mut *g;
        let was = std::mem::replace(&mut i.model.draining, draining);
        let built = build_effective(&mut i.builder, &mut i.model, &i.learned, &i.unhealthy, &i.k8s);
        let (cfg, _) = built.inspect_err(|_| i.model.draining = was)?;
        let generation = cfg.generation;
        self.handle.publish(cfg);
        Ok(generation)
    }
}

impl Store {
    /// Record a health transition of a backend: rebuild and publish without it (or with it again), announce it.
    ///
    /// # Errors
    /// Should the model no longer build, the error (nothing changes).
    pub fn set_health(&self, b: BackendKey, healthy: bool, keep_flows: bool, reason: &str) -> Result<u64, StoreError> {
        let generation = self.update_health(|u| {
            if healthy {
                u.remove(&b);
            } else {
                u.insert(b, keep_flows);
            }
        })?;
        self.publish(StoreEvent::BackendHealth {
            service: b.0,
            backend: (b.1, b.2),
            healthy,
            reason: reason.to_string(),
        });
        Ok(generation)
    }

    /// Forget the health of backends no longer checked (removed, or their service's check removed).
    ///
    /// # Errors
    /// Should the model no longer build, the error.
    pub fn retain_health(&self, keep: impl Fn(&BackendKey) -> bool) -> Result<(), StoreError> {
        if self.lock().unhealthy.keys().all(&keep) {
            return Ok(());
        }
        self.update_health(|u| u.retain(|k, _| keep(k))).map(|_| ())
    }

    /// Change the set of failed backends with `f` and publish the result, under one lock (two health checks
    /// flipping at once cannot lose either). Returns the generation; nothing changes when the build fails.
    fn update_health(&self, f: impl FnOnce(&mut HashMap<BackendKey, bool>)) -> Result<u64, StoreError> {
        let mut g = self.lock();
        let mut unhealthy = g.unhealthy.clone();
        f(&mut unhealthy);
        let i = &mut *g;
        let (cfg, _) = build_effective(&mut i.builder, &mut i.model, &i.learned, &unhealthy, &i.k8s)?;
        let generation = cfg.generation;
        self.handle.publish(cfg);
        g.unhealthy = unhealthy;
        Ok(generation)
    }

    /// Backends whose health check fails now.
    pub fn unhealthy(&self) -> Vec<BackendKey> {
        self.lock().unhealthy.keys().copied().collect()
    }
}

/// `services[k]...` of the merged model in the batch's own terms: `upserts[i]...` when service k came from the batch.
fn in_batch_terms(path: FieldPath, origin: &FxHashMap<usize, usize>) -> FieldPath {
    match path.index_after("services").filter(|_| matches!(path.steps().first(), Some(Step::Field("services")))) {
        Some(k) => match origin.get(&k) {
            Some(&i) => {
                path.rebase(&[Step::Field("services"), Step::Index(k)], &[Step::Field("upserts"), Step::Index(i)])
            }
            None => path,
        },
        None => path,
    }
}

/// A service as edgelbctl writes it, in and out: `198.19.0.1:80/tcp`, `[2001:db8:100::1]:443/tcp`,
/// `198.19.0.1:*/udp` (all ports).
pub fn show_key(k: &ServiceKey) -> String {
    let p = match k.1 {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    let port = k.2.map_or_else(|| "*".to_string(), |port| port.to_string());
    match k.0 {
        IpAddr::V4(a) => format!("{a}:{port}/{p}"),
        IpAddr::V6(a) => format!("[{a}]:{port}/{p}"),
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn a_service_is_written_one_way() {
        let k = |a: &str, p: Protocol, port: Option<u16>| show_key(&(a.parse().unwrap(), p, port));
        assert_eq!(k("198.19.0.1", Protocol::Tcp, Some(80)), "198.19.0.1:80/tcp");
        assert_eq!(k("2001:db8:100::1", Protocol::Tcp, Some(443)), "[2001:db8:100::1]:443/tcp");
        assert_eq!(k("198.19.0.1", Protocol::Udp, None), "198.19.0.1:*/udp");
    }
}
