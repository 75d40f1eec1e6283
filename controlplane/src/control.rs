//! The control plane's wiring: [`ControlPlane::start`] runs health checks, Kubernetes sync, the BGP speaker (with
//! peers added and removed through the API), `/metrics` and the gRPC API on a thread and runtime of their own (two
//! threads: they never compete with the workers' cores beyond that), all over the one [`Store`].

use crate::bgp::session::{PeerConfig, State};
use crate::bgp::speaker::Speaker;
use crate::bgp::PeerOp;
use crate::config::{KubernetesConfig, Listen, TlsFiles};
use crate::store::{Store, StoreEvent};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// What the control plane serves besides health checks.
#[derive(Debug)]
pub struct ControlSettings {
    /// Where the gRPC API listens (`None`: no API).
    pub listen: Option<Listen>,
    /// The API's TLS files.
    pub tls: Option<TlsFiles>,
    /// Where `/metrics` is served (`None`: not served).
    pub metrics: Option<SocketAddr>,
    /// BGP peers from the config file.
    pub peers: Vec<PeerConfig>,
    /// Port the speaker listens on for passive sessions.
    pub bgp_listen_port: u16,
    /// The speaker's AS and identifier (`None`: no BGP).
    pub bgp: Option<(u32, Ipv4Addr)>,
    /// Kubernetes sync (`None`: off).
    pub kubernetes: Option<KubernetesConfig>,
    /// True while the appliance drains: routes carry GRACEFUL_SHUTDOWN.
    pub graceful_shutdown: watch::Receiver<bool>,
}

/// The running control plane; [`ControlPlane::stop`] ends it cleanly (VIPs withdrawn, sessions closed with a Cease).
#[derive(Debug)]
pub struct ControlPlane {
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// The speaker, shared by the peer-operation task, the status poller and the final stop.
type SharedSpeaker = Arc<Mutex<Option<Speaker>>>;

impl ControlPlane {
    /// Start it; returns once the API listens (and `/metrics`, and the Kubernetes client is made), or the reason it
    /// cannot.
    pub fn start(store: Arc<Store>, settings: ControlSettings) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("edgelb-ctl")
            .enable_all()
            .build()
            .map_err(|e| format!("control-plane runtime: {e}"))?;
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("edgelb-ctl".into())
            .spawn(move || rt.block_on(run(store, settings, stop_rx, ready_tx)))
            .map_err(|e| format!("control-plane thread: {e}"))?;
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Self { stop, thread }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("API did not start within 10 s".into()),
        }
    }

    /// Stop and wait for the control plane's thread.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

async fn run(
    store: Arc<Store>,
    s: ControlSettings,
    stop: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let health = tokio::spawn(crate::health::run(store.clone()));
    let (k8s_stop, k8s_stop_rx) = watch::channel(false);
    let mut vip_leases = None;
    let k8s = match s.kubernetes {
        Some(k) => match kube_client(&k).await {
            Ok(c) => {
                if k.vip_leases {
                    store.enable_vip_leases();
                    let (l, st, stop) = (k.lease.clone(), store.clone(), k8s_stop_rx.clone());
                    vip_leases = Some(tokio::spawn(crate::k8s::vip_leases::run(c.clone(), st, l, stop)));
                }
                Some(tokio::spawn(crate::k8s::controller::run(
                    c,
                    store.clone(),
                    k.settings,
                    k.lease,
                    k.node_labels,
                    k8s_stop_rx,
                )))
            }
            Err(e) => {
                let _ = ready.send(Err(format!("Kubernetes client: {e}")));
                return;
            }
        },
        None => None,
    };
    let speaker: SharedSpeaker = Arc::new(Mutex::new(s.bgp.map(|_| start_speaker(&store, s.peers, s.bgp_listen_port))));
    if let Some((asn, router_id)) = s.bgp {
        let (ops_tx, ops) = mpsc::channel(8);
        store.attach_speaker(asn, router_id, ops_tx);
        tokio::spawn(peer_ops(speaker.clone(), store.clone(), ops));
    }
    tokio::spawn(poll_speaker(speaker.clone(), store.clone(), s.graceful_shutdown));
    let sampler = tokio::spawn(sample_drops(store.clone()));
    let metrics = match s.metrics {
        Some(addr) => match start_metrics(&store, addr).await {
            Ok(task) => Some(task),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        },
        None => None,
    };
    serve_api(store, s.listen, s.tls, stop, ready).await;
    health.abort();
    sampler.abort();
    let _ = k8s_stop.send(true);
    if let Some(k) = k8s {
        let _ = tokio::time::timeout(Duration::from_secs(2), k).await;
    }
    // The VIP Leases held are released (deleted), so another appliance answers for them at once.
    if let Some(v) = vip_leases {
        let _ = tokio::time::timeout(Duration::from_secs(2), v).await;
    }
    // Clean stop: withdraw every VIP and close the sessions with a Cease.
    if let Some(sp) = speaker.lock().await.take() {
        sp.stop().await;
    }
    if let Some(m) = metrics {
        m.abort();
    }
}

/// The Kubernetes client: from the configured kubeconfig, else in-cluster or `KUBECONFIG`.
async fn kube_client(k: &KubernetesConfig) -> Result<kube::Client, String> {
    let config = match &k.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| format!("{path}: {e}"))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| e.to_string())?
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// The BGP speaker; its peers' transitions become events and log lines.
fn start_speaker(store: &Arc<Store>, peers: Vec<PeerConfig>, listen_port: u16) -> Speaker {
    let sp = Speaker::start(store.clone(), peers, listen_port);
    let mut transitions = sp.transitions.subscribe();
    let st = store.clone();
    tokio::spawn(async move {
        while let Ok((peer, state, err)) = transitions.recv().await {
            let reason = err.unwrap_or_default();
            if state == State::Established {
                info!(peer = %peer, "BGP session established");
            } else if !reason.is_empty() {
                warn!(peer = %peer, state = ?state, "BGP: {reason}");
            }
            st.announce(StoreEvent::PeerState { peer, state: format!("{state:?}"), reason });
        }
    });
    sp
}

/// Peers added and removed through the API, each answered with its result once the store lists the peers as they
/// are now (so the API's answer shows the change without waiting for the status poll).
async fn peer_ops(speaker: SharedSpeaker, store: Arc<Store>, mut ops: mpsc::Receiver<PeerOp>) {
    while let Some(op) = ops.recv().await {
        let mut g = speaker.lock().await;
        let Some(sp) = g.as_mut() else { break };
        match op {
            PeerOp::Add(p, reply) => {
                let name = p.name.clone();
                let r = sp.add_peer(p);
                if r.is_ok() {
                    info!(peer = %name, "BGP peer added through the API");
                    store.set_peers(sp.status());
                }
                let _ = reply.send(r);
            }
            PeerOp::Remove(name, reply) => {
                let r = sp.remove_peer(&name).await;
                if r.is_ok() {
                    info!(peer = %name, "BGP peer removed through the API");
                    store.set_peers(sp.status());
                }
                let _ = reply.send(r);
            }
        }
    }
}

/// The speaker's status (and BFD's drop counts) into the store every 500 ms (for the API and `/metrics`), and the drain's GRACEFUL_SHUTDOWN to the speaker.
async fn poll_speaker(speaker: SharedSpeaker, store: Arc<Store>, mut graceful_shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = graceful_shutdown.changed() => {
                if r.is_err() {
                    break;
                }
                if let Some(sp) = speaker.lock().await.as_ref() {
                    sp.graceful_shutdown(*graceful_shutdown.borrow());
                }
            }
        }
        if let Some(sp) = speaker.lock().await.as_ref() {
            store.set_peers(sp.status());
            store.set_bfd_dropped(sp.bfd_dropped());
        }
    }
}

/// Every 5 s, the drop counters' totals (and untracked packets, a full flow table's sign) into the store, so
/// `edgelbctl doctor` can say what was dropped in the last minute.
async fn sample_drops(store: Arc<Store>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let totals = crate::stats::drop_totals(&crate::stats::stats(&store));
        store.sample_drops(std::time::Instant::now(), totals);
    }
}

/// `/metrics`, once it listens.
async fn start_metrics(store: &Arc<Store>, addr: SocketAddr) -> Result<JoinHandle<Result<(), String>>, String> {
    let (up_tx, up_rx) = oneshot::channel();
    let task = tokio::spawn(crate::metrics::serve(store.clone(), addr, move || {
        let _ = up_tx.send(());
    }));
    if up_rx.await.is_ok() {
        return Ok(task);
    }
    Err(match task.await {
        Ok(Err(e)) => e,
        _ => format!("metrics on {addr} did not start"),
    })
}

/// The gRPC API until `stop` (without an API, just wait for `stop`); readiness or the failure goes to `ready`.
async fn serve_api(
    store: Arc<Store>,
    listen: Option<Listen>,
    tls: Option<TlsFiles>,
    stop: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let shutdown = async move {
        let _ = stop.await;
    };
    let Some(listen) = listen else {
        let _ = ready.send(Ok(()));
        shutdown.await;
        return;
    };
    let up = ready.clone();
    let r = crate::api::server::serve_ready(store, listen, tls, shutdown, move || {
        let _ = up.send(Ok(()));
    })
    .await;
    if let Err(e) = r {
        let _ = ready.send(Err(e.clone()));
        error!("API stopped: {e}");
    }
}
