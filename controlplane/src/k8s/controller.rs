//! The Kubernetes controller: watch Services and EndpointSlices (kube-runtime watchers and reflectors handle
//! reconnects, resource versions and re-lists), run [`super::sync`] on every change, hand the VIP services to the
//! store, and — only while holding the `coordination.k8s.io/v1` Lease — write `status.loadBalancer.ingress` and
//! record Events. Every appliance programs its dataplane from the same objects, so their Maglev tables agree; when the
//! API server is unreachable the store keeps the last state and the watchers catch up when it returns.

use super::crd::{BGPPeer, BGPPeerSpec, L2Announcement, ResourceStatus, VIPPool};
use super::resources::Verdict;
use super::Pool;
use super::{current, key, Event, Settings};
use crate::store::Store;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Client;
use kube::ResourceExt;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Lease settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Our identity (holderIdentity).
    pub identity: String,
    /// Seconds a holder keeps it without renewing.
    pub duration_s: i32,
}

/// Write a Service's `status.loadBalancer.ingress` (merge patch on the status subresource).
///
/// # Errors
/// The API server's refusal.
pub async fn write_status(client: &Client, namespace: &str, name: &str, ips: &[IpAddr]) -> Result<(), kube::Error> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let ingress: Vec<serde_json::Value> = ips.iter().map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"})).collect();
    let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Record an Event on a Service (core/v1 Events, which `kubectl describe` shows).
///
/// # Errors
/// The API server's refusal.
pub async fn record_event(client: &Client, svc: &Service, e: &Event, now: DateTime<Utc>) -> Result<(), kube::Error> {
    let ns = svc.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = svc.metadata.name.clone().unwrap_or_default();
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
    let ev: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}.{:x}", now.timestamp_nanos_opt().unwrap_or(0)), "namespace": ns},
        "involvedObject": {"kind": "Service", "apiVersion": "v1", "namespace": ns, "name": name,
                           "uid": svc.metadata.uid.clone().unwrap_or_default()},
        "reason": e.reason, "message": e.message, "type": e.kind,
        "source": {"component": "edgelb"}, "reportingComponent": "edgelb",
        "firstTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "lastTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "count": 1
    }))
    .map_err(kube::Error::SerdeError)?;
    api.create(&PostParams::default(), &ev).await?;
    Ok(())
}

fn micro(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One round of leader election: take the Lease when absent or expired, renew it when ours. True while we hold it.
///
/// # Errors
/// The API server is unreachable (a lost race for the Lease is `Ok(false)`, not an error).
pub async fn lease_tick(client: &Client, l: &LeaseSettings, now: DateTime<Utc>) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &l.namespace);
    let fresh = |transitions: i32, acquire: String, rv: Option<String>| -> Result<Lease, kube::Error> {
        serde_json::from_value(json!({
            "metadata": {"name": l.name, "namespace": l.namespace, "resourceVersion": rv},
            "spec": {"holderIdentity": l.identity, "leaseDurationSeconds": l.duration_s, "acquireTime": acquire,
                     "renewTime": micro(now), "leaseTransitions": transitions}
        }))
        .map_err(kube::Error::SerdeError)
    };
    let Some(cur) = api.get_opt(&l.name).await? else {
        return match api.create(&PostParams::default(), &fresh(0, micro(now), None)?).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = cur.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let renewed = spec.renew_time.as_ref().map(|t| t.0);
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(l.duration_s));
    let expired = renewed.is_none_or(|t| now.signed_duration_since(t).num_milliseconds() > duration * 1000);
    if holder != l.identity && !expired {
        return Ok(false);
    }
    let (transitions, acquire) = if holder == l.identity {
        (spec.lease_transitions.unwrap_or(0), spec.acquire_time.as_ref().map_or_else(|| micro(now), |t| micro(t.0)))
    } else {
        (spec.lease_transitions.unwrap_or(0) + 1, micro(now))
    };
    match api
        .replace(&l.name, &PostParams::default(), &fresh(transitions, acquire, cur.metadata.resource_version.clone())?)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// The controller's state between rounds: who writes status, what was already announced or recorded.
struct Controller {
    client: Client,
    store: Arc<Store>,
    settings: Settings,
    lease: LeaseSettings,
    /// The holder renews every third of the Lease duration.
    renew_every: Duration,
    last_renew: Option<std::time::Instant>,
    leader: bool,
    /// Warnings put on the gRPC event stream (every appliance).
    announced: HashSet<(String, &'static str, String)>,
    /// When the first change of the current batch was seen: the start of the sync lag.
    first_change: Option<std::time::Instant>,
    /// Maps again only the Services a burst touched.
    syncer: super::Syncer,
}

/// A burst of watch events ends when this long passes without one...
const QUIET: Duration = Duration::from_millis(20);
/// ...or this long after its first event, so a steady stream of changes still syncs several times a second.
const BURST: Duration = Duration::from_millis(250);

/// Take the further events of a burst (each one applied to the reflectors as it is taken) until `quiet` passes
/// without one or `burst` has passed. False when the stream ended.
pub async fn take_burst<S: futures::Stream<Item = ()> + Unpin>(
    changes: &mut S,
    quiet: Duration,
    burst: Duration,
) -> bool {
    let end = tokio::time::Instant::now() + burst;
    loop {
        let wait = quiet.min(end.saturating_duration_since(tokio::time::Instant::now()));
        if wait.is_zero() {
            return true;
        }
        match tokio::time::timeout(wait, changes.next()).await {
            Ok(Some(())) => {}
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// Run until `stop` fires. `labels` are this appliance's, which a resource's `nodeSelector` matches.
pub async fn run(
    client: Client,
    store: Arc<Store>,
    settings: Settings,
    lease: LeaseSettings,
    labels: BTreeMap<String, String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (res, res_changes) = Resources::watch(&client, settings.pools.clone(), labels);
    let mut res = res;
    let svc_api: Api<Service> = Api::all(client.clone());
    let es_api: Api<EndpointSlice> = Api::all(client.clone());
    let (svcs, svc_w) = reflector::store();
    let (slices, es_w) = reflector::store();
    let s1 =
        reflector(svc_w, watcher(svc_api, watcher::Config::default())).default_backoff().touched_objects().map(|_| ());
    let s2 = reflector(es_w, watcher(es_api, watcher::Config::default().labels(super::SERVICE_NAME_LABEL)))
        .default_backoff()
        .touched_objects()
        .map(|_| ());
    let mut changes = std::pin::pin!(futures::stream::select(futures::stream::select(s1, s2), res_changes));
    // A standby looks every second, so it takes over about one second after the Lease expires.
    let renew_every = Duration::from_secs(u64::try_from(lease.duration_s / 3).unwrap_or(5).max(1));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut c = Controller {
        client,
        store,
        settings,
        lease,
        renew_every,
        last_renew: None,
        leader: false,
        announced: HashSet::new(),
        first_change: None,
        syncer: super::Syncer::default(),
    };
    // The holder's writes run in their own task, so a sync never waits for them: it hands over its latest result
    // (an older one not yet taken is replaced) and goes on.
    let (to_writer, from_sync) = tokio::sync::watch::channel(None);
    let writer = tokio::spawn(Writer::new(c.client.clone(), c.settings.clone()).run(from_sync));
    let mut dirty = true;
    loop {
        tokio::select! {
            ch = changes.next() => {
                if ch.is_none() { break; }
                dirty = true;
                c.first_change.get_or_insert_with(std::time::Instant::now);
                // A burst of changes becomes one sync.
                if !take_burst(&mut changes, QUIET, BURST).await { break; }
            }
            _ = tick.tick() => dirty |= c.elect().await,
            _ = stop.changed() => break,
        }
        // The custom resources: every round (a second at the most), as a peer's or router's state moves on its own.
        if res.reconcile(&c.store, &mut c.settings).await {
            dirty = true;
        }
        if c.leader {
            res.write_status(&c.client).await;
        }
        if !dirty || svcs.is_empty() && slices.is_empty() {
            continue;
        }
        dirty = false;
        // The reflectors' own objects, shared, not copied.
        let all_svcs: Vec<Arc<Service>> = svcs.state();
        let all_slices: Vec<Arc<EndpointSlice>> = slices.state();
        let out = c.apply(&all_svcs, &all_slices);
        if c.leader {
            to_writer.send_replace(Some(Arc::new((all_svcs, out))));
        }
    }
    writer.abort();
}

/// What a sync hands the writer: the Services it saw and what it computed.
type Synced = Arc<(Vec<Arc<Service>>, super::Outcome)>;

/// Status writes in flight at once.
const WRITES_IN_FLIGHT: usize = 16;
/// A status written this long ago that still differs from what the sync wants is written again.
const REWRITE_AFTER: Duration = Duration::from_secs(5);

/// The Lease holder's writer: each Service's `status.loadBalancer.ingress` where it differs from what the sync
/// computed (and was not already written), and each Event once, [`WRITES_IN_FLIGHT`] requests at a time.
struct Writer {
    client: Client,
    settings: Settings,
    /// The ingress last written per Service and when, so a status is written once per change, not once per sync
    /// while the watch catches up; after [`REWRITE_AFTER`] a status that still differs is written again (another
    /// holder or a person may have changed it).
    written: HashMap<String, (Vec<IpAddr>, std::time::Instant)>,
    /// Events written to Kubernetes.
    recorded: HashSet<(String, &'static str, String)>,
}

impl Writer {
    fn new(client: Client, settings: Settings) -> Self {
        Writer { client, settings, written: HashMap::new(), recorded: HashSet::new() }
    }

    async fn run(mut self, mut from_sync: tokio::sync::watch::Receiver<Option<Synced>>) {
        while from_sync.changed().await.is_ok() {
            let Some(latest) = from_sync.borrow_and_update().clone() else { continue };
            self.write_back(&latest.0, &latest.1).await;
        }
    }

    async fn write_back(&mut self, svcs: &[Arc<Service>], out: &super::Outcome) {
        let mut todo = Vec::new();
        for svc in svcs.iter().filter(|s| super::ours(s, &self.settings.class, self.settings.classless)) {
            let k = key(svc);
            let want = out.status.get(&k).cloned().unwrap_or_default();
            let fresh = self.written.get(&k).is_some_and(|(w, t)| *w == want && t.elapsed() < REWRITE_AFTER);
            if current(svc) != want && !fresh {
                let ns = svc.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                let name = svc.metadata.name.clone().unwrap_or_default();
                todo.push((k, ns, name, want));
            }
        }
        let client = &self.client;
        let done: Vec<(String, Vec<IpAddr>, bool)> = futures::stream::iter(todo)
            .map(|(k, ns, name, want)| async move {
                let ok = match write_status(client, &ns, &name, &want).await {
                    Ok(()) => true,
                    Err(e) => {
                        warn!(service = %k, "status not written: {e}");
                        false
                    }
                };
                (k, want, ok)
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .collect()
            .await;
        for (k, want, ok) in done {
            if ok {
                self.written.insert(k, (want, std::time::Instant::now()));
            }
        }
        for e in &out.events {
            let k = (e.service.clone(), e.reason, e.message.clone());
            if self.recorded.contains(&k) {
                continue;
            }
            if let Some(svc) = svcs.iter().find(|s| key(s) == e.service) {
                match record_event(&self.client, svc, e, Utc::now()).await {
                    Ok(()) => {
                        self.recorded.insert(k);
                    }
                    Err(err) => warn!(service = %e.service, "event not recorded: {err}"),
                }
            }
        }
    }
}

impl Controller {
    /// One Lease round (skipped while our renewal is fresh). True when we became or stayed the holder, so the
    /// status is written again.
    async fn elect(&mut self) -> bool {
        if self.leader && self.last_renew.is_some_and(|t| t.elapsed() < self.renew_every) {
            return false;
        }
        match lease_tick(&self.client, &self.lease, Utc::now()).await {
            Ok(now_leader) => {
                if now_leader != self.leader {
                    info!(identity = %self.lease.identity, leader = now_leader, "Kubernetes status writer");
                }
                self.leader = now_leader;
                if now_leader {
                    self.last_renew = Some(std::time::Instant::now());
                }
                now_leader
            }
            Err(e) => {
                warn!("Kubernetes API unreachable, keeping the last state: {e}");
                self.leader = false;
                false
            }
        }
    }

    /// Sync the objects into services, hand them to the store, update the status the API shows and put new warnings
    /// on the event stream (on every appliance, once each).
    fn apply(&mut self, svcs: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> super::Outcome {
        let out = self.syncer.sync(svcs, slices, &self.settings);
        match self.store.set_kubernetes(out.services.clone()) {
            Ok(a) if a.applied => {
                info!(version = a.version, services = out.services.len(), "Kubernetes services applied")
            }
            Ok(_) => {}
            Err(e) => warn!("Kubernetes services rejected, keeping the last ones: {e}"),
        }
        let warnings: Vec<&Event> = out.events.iter().filter(|e| e.kind == "Warning").collect();
        self.store.set_k8s_status(crate::store::K8sStatus {
            services: svcs.len(),
            endpoint_slices: slices.len(),
            allocated: out.status.len(),
            failures: warnings.len(),
            lag_ms: self.first_change.take().map_or(0, |t| t.elapsed().as_millis() as u64),
            leader: self.leader,
        });
        for e in &warnings {
            if self.announced.insert((e.service.clone(), e.reason, e.message.clone())) {
                self.store.announce(crate::store::StoreEvent::Kubernetes {
                    service: e.service.clone(),
                    reason: e.reason.to_string(),
                    message: e.message.clone(),
                });
            }
        }
        out
    }
}

/// The custom resources as the controller follows them: reflector stores of the three kinds, what was handed to the
/// speaker and the store, and each resource's verdict for the status writer.
struct Resources {
    pools: reflector::Store<VIPPool>,
    peers: reflector::Store<BGPPeer>,
    l2: reflector::Store<L2Announcement>,
    file_pools: Vec<Pool>,
    labels: BTreeMap<String, String>,
    /// Peers from BGPPeers the speaker runs, with the spec they came from.
    running: BTreeMap<String, BGPPeerSpec>,
    /// BGPPeers the speaker refused (e.g. an address another peer has), with its reason.
    refused: BTreeMap<String, String>,
    /// Verdicts by (kind, name).
    verdicts: BTreeMap<(&'static str, String), Verdict>,
}

impl Resources {
    /// Reflectors for the three kinds; the stream yields on every change. Until the CRDs are installed the
    /// watchers retry with backoff.
    fn watch(
        client: &Client,
        file_pools: Vec<Pool>,
        labels: BTreeMap<String, String>,
    ) -> (Self, impl futures::Stream<Item = ()> + Send + Unpin) {
        let (pools, w1) = reflector::store();
        let (peers, w2) = reflector::store();
        let (l2, w3) = reflector::store();
        let cfg = watcher::Config::default;
        let s1 = reflector(w1, watcher(Api::<VIPPool>::all(client.clone()), cfg())).default_backoff();
        let s2 = reflector(w2, watcher(Api::<BGPPeer>::all(client.clone()), cfg())).default_backoff();
        let s3 = reflector(w3, watcher(Api::<L2Announcement>::all(client.clone()), cfg())).default_backoff();
        // A watch error (the CRDs not installed, the API server away) is no change: the watcher retries with
        // backoff, and nothing is synced for it.
        let changes = futures::stream::select(
            futures::stream::select(
                s1.touched_objects().filter_map(|r| futures::future::ready(r.ok().map(|_| ()))),
                s2.touched_objects().filter_map(|r| futures::future::ready(r.ok().map(|_| ()))),
            ),
            s3.touched_objects().filter_map(|r| futures::future::ready(r.ok().map(|_| ()))),
        );
        let r = Resources {
            pools,
            peers,
            l2,
            file_pools,
            labels,
            running: BTreeMap::new(),
            refused: BTreeMap::new(),
            verdicts: BTreeMap::new(),
        };
        (r, Box::pin(changes))
    }

    /// Pools into `settings` (true when they changed), peers to the speaker, routers to the store; the verdicts
    /// for the status writer.
    async fn reconcile(&mut self, store: &Store, settings: &mut Settings) -> bool {
        let mut verdicts = BTreeMap::new();
        // Pools.
        let objects = self.pools.state();
        let (crd_pools, v) =
            super::resources::pools(&objects.iter().map(AsRef::as_ref).collect::<Vec<_>>(), &self.file_pools);
        verdicts.extend(v.into_iter().map(|(n, v)| (("VIPPool", n), v)));
        let pools: Vec<Pool> = self.file_pools.iter().cloned().chain(crd_pools).collect();
        let pools_changed = settings.pools != pools;
        if pools_changed {
            info!(pools = pools.len(), "address pools changed (VIPPool resources)");
            settings.pools = pools;
        }
        // Peers.
        let objects = self.peers.state();
        let objs: Vec<&BGPPeer> = objects.iter().map(AsRef::as_ref).collect();
        let others: Vec<String> =
            store.peers().into_iter().map(|(n, _)| n).filter(|n| !self.running.contains_key(n)).collect();
        let speaker = store.speaker().cloned();
        let (want, v) = super::resources::peers(&objs, &others, speaker.as_ref().map(|s| (s.0, s.1)), &self.labels);
        verdicts.extend(v.into_iter().map(|(n, v)| (("BGPPeer", n), v)));
        if let Some((_, _, ops)) = speaker {
            let sessions: BTreeMap<String, String> =
                store.peers().into_iter().map(|(n, s)| (n, format!("{:?}", s.state))).collect();
            self.follow_peers(&ops, &objs, want, &mut verdicts, &sessions).await;
        }
        // Virtual routers.
        if let Some((ports, file)) = store.vrrp_context() {
            let objects = self.l2.state();
            let objs: Vec<&L2Announcement> = objects.iter().map(AsRef::as_ref).collect();
            let (routers, v) = super::resources::routers(&objs, ports, file, &self.labels);
            store.set_k8s_routers(routers);
            let running: Vec<String> = store.vrrp().0.into_iter().map(|r| r.name).collect();
            for (n, mut v) in v {
                if v.programmed.0 && !running.contains(&n) {
                    v.programmed = (false, "Pending", "waiting for the slow path to start the router".into());
                }
                verdicts.insert(("L2Announcement", n), v);
            }
        }
        self.verdicts = verdicts;
        pools_changed
    }

    /// Add, replace and remove the speaker's peers from BGPPeers so it runs `want`; each one's verdict.
    async fn follow_peers(
        &mut self,
        ops: &tokio::sync::mpsc::Sender<crate::bgp::PeerOp>,
        objs: &[&BGPPeer],
        want: BTreeMap<String, crate::bgp::session::PeerConfig>,
        verdicts: &mut BTreeMap<(&'static str, String), Verdict>,
        sessions: &BTreeMap<String, String>,
    ) {
        let spec_of = |n: &str| objs.iter().find(|o| o.name_any() == n).map(|o| o.spec.clone());
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(n, s)| !want.contains_key(*n) || spec_of(n).as_ref() != Some(*s))
            .map(|(n, _)| n.clone())
            .collect();
        for n in stale {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if ops.send(crate::bgp::PeerOp::Remove(n.clone(), tx)).await.is_ok() && rx.await.is_ok() {
                info!(peer = %n, "BGP peer removed (BGPPeer resource)");
            }
            self.running.remove(&n);
        }
        self.refused.retain(|n, _| want.contains_key(n));
        for (n, cfg) in want {
            let generation = objs.iter().find(|o| o.name_any() == n).and_then(|o| o.metadata.generation).unwrap_or(0);
            if !self.running.contains_key(&n) && !self.refused.contains_key(&n) {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let r = match ops.send(crate::bgp::PeerOp::Add(cfg, tx)).await {
                    Ok(()) => rx.await.unwrap_or_else(|_| Err("the BGP speaker stopped".into())),
                    Err(_) => Err("the BGP speaker stopped".into()),
                };
                match r {
                    Ok(()) => {
                        info!(peer = %n, "BGP peer added (BGPPeer resource)");
                        if let Some(s) = spec_of(&n) {
                            self.running.insert(n.clone(), s);
                        }
                    }
                    Err(e) => {
                        warn!(peer = %n, "BGPPeer refused by the speaker: {e}");
                        self.refused.insert(n.clone(), e);
                    }
                }
            }
            let v = match self.refused.get(&n) {
                Some(e) => Verdict {
                    generation,
                    accepted: (false, "Conflict", e.clone()),
                    programmed: (false, "NotAccepted", "not programmed: the resource was not accepted".into()),
                },
                None => {
                    let state = sessions.get(&n).map_or_else(
                        || "the speaker runs the session".to_string(),
                        |s| format!("the speaker runs the session, now {s}"),
                    );
                    Verdict {
                        generation,
                        accepted: (true, "Accepted", "valid, no name clash".into()),
                        programmed: (true, "Configured", state),
                    }
                }
            };
            verdicts.insert(("BGPPeer", n), v);
        }
    }

    /// As leader: each resource's status where it differs from its verdict.
    async fn write_status(&self, client: &Client) {
        let now = micro(Utc::now());
        let pools = self.pools.state();
        let peers = self.peers.state();
        let l2 = self.l2.state();
        for ((kind, name), v) in &self.verdicts {
            let current: Option<Option<ResourceStatus>> = match *kind {
                "VIPPool" => pools.iter().find(|o| o.name_any() == *name).map(|o| o.status.clone()),
                "BGPPeer" => peers.iter().find(|o| o.name_any() == *name).map(|o| o.status.clone()),
                _ => l2.iter().find(|o| o.name_any() == *name).map(|o| o.status.clone()),
            };
            let Some(current) = current else { continue };
            if v.shown_in(current.as_ref()) {
                continue;
            }
            let patch = json!({"status": v.status(current.as_ref(), &now)});
            let pp = PatchParams::default();
            let r = match *kind {
                "VIPPool" => {
                    Api::<VIPPool>::all(client.clone()).patch_status(name, &pp, &Patch::Merge(&patch)).await.map(|_| ())
                }
                "BGPPeer" => {
                    Api::<BGPPeer>::all(client.clone()).patch_status(name, &pp, &Patch::Merge(&patch)).await.map(|_| ())
                }
                _ => Api::<L2Announcement>::all(client.clone())
                    .patch_status(name, &pp, &Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
            };
            if let Err(e) = r {
                warn!(kind, name = %name, "status not written: {e}");
            }
        }
    }
}
