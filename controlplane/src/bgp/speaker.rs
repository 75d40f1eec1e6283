//! The announce policy and the peers: a VIP is announced (as a /32 or /128) while at least one of its services has a
//! backend in the Maglev table (active and passing its health check), and withdrawn otherwise; draining the node tags
//! every route GRACEFUL_SHUTDOWN (RFC 8326) before the withdrawal that stopping brings.

use super::session::{self, PeerConfig, Routes, Status, Transition};
use crate::api::store::Store;
use edgelb_dataplane::config::{BackendState, DataplaneConfig};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// The routes a snapshot calls for.
pub fn routes_of(cfg: &DataplaneConfig) -> BTreeSet<(IpAddr, u8)> {
    let mut out = BTreeSet::new();
    for s in &cfg.services {
        let up = s.backend_ids.iter().filter_map(|id| cfg.backend(*id)).any(|b| b.state == BackendState::Active);
        if up {
            let vip = edgelb_dataplane::config::addr_from16(s.vip, s.v4);
            out.insert((vip, if s.v4 { 32 } else { 128 }));
        }
    }
    out
}

/// A running speaker: its peers' tasks and status.
#[derive(Debug)]
pub struct Speaker {
    routes: watch::Sender<Routes>,
    stop: watch::Sender<bool>,
    peers: Vec<(String, Arc<Mutex<Status>>, JoinHandle<()>)>,
    follower: JoinHandle<()>,
    listener: Option<JoinHandle<()>>,
    /// Peer state changes.
    pub transitions: broadcast::Sender<Transition>,
}

impl Speaker {
    /// Start one task per peer, announcing what the store's snapshots call for (checked every 100 ms), and a listener
    /// on `listen_port` (0: none) handing each configured peer's connections to its task; others are closed.
    pub fn start(store: Arc<Store>, peers: Vec<PeerConfig>, listen_port: u16) -> Self {
        let first = Routes { prefixes: routes_of(&store.snapshot()), graceful_shutdown: false };
        let (routes, rx) = watch::channel(first);
        let (stop, stop_rx) = watch::channel(false);
        let transitions = broadcast::channel(256).0;
        let mut routes_to: Vec<(IpAddr, tokio::sync::mpsc::Sender<tokio::net::TcpStream>)> = Vec::new();
        let mut keys: Vec<(IpAddr, String)> = Vec::new();
        let peers: Vec<_> = peers
            .into_iter()
            .map(|p| {
                let status = Arc::new(Mutex::new(Status::default()));
                let name = p.name.clone();
                let (in_tx, in_rx) = tokio::sync::mpsc::channel(2);
                routes_to.push((p.address, in_tx));
                if let Some(k) = &p.password {
                    keys.push((p.address, k.clone()));
                }
                let t = tokio::spawn(session::run(
                    p,
                    rx.clone(),
                    stop_rx.clone(),
                    in_rx,
                    status.clone(),
                    transitions.clone(),
                ));
                (name, status, t)
            })
            .collect();
        let listener = (listen_port != 0).then(|| tokio::spawn(listen(listen_port, routes_to, keys)));
        let tx = routes.clone();
        let follower = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut generation = 0;
            loop {
                tick.tick().await;
                let cfg = store.snapshot();
                if cfg.generation == generation {
                    continue;
                }
                generation = cfg.generation;
                let prefixes = routes_of(&cfg);
                tx.send_if_modified(|r| {
                    let changed = r.prefixes != prefixes;
                    r.prefixes = prefixes;
                    changed
                });
            }
        });
        Self { routes, stop, peers, follower, listener, transitions }
    }

    /// Tag every announcement GRACEFUL_SHUTDOWN (the node is draining), or stop tagging.
    pub fn graceful_shutdown(&self, on: bool) {
        self.routes.send_if_modified(|r| {
            let changed = r.graceful_shutdown != on;
            r.graceful_shutdown = on;
            changed
        });
    }

    /// Each peer's name and status.
    pub fn status(&self) -> Vec<(String, Status)> {
        self.peers.iter().map(|(n, s, _)| (n.clone(), s.lock().map(|g| g.clone()).unwrap_or_default())).collect()
    }

    /// Withdraw everything, close every session with a Cease, and wait (bounded) for the peers' tasks.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.follower.abort();
        if let Some(l) = &self.listener {
            l.abort();
        }
        for (_, _, t) in self.peers {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
    }

    /// End every session abruptly, without withdrawing or a NOTIFICATION (what a crash looks like to peers; graceful
    /// restart keeps our routes at them until we come back).
    pub fn abort(self) {
        self.follower.abort();
        if let Some(l) = &self.listener {
            l.abort();
        }
        for (_, _, t) in self.peers {
            t.abort();
        }
    }
}

/// Accept BGP connections (IPv4 and IPv6 on one socket) and hand each to the task of the peer it comes from; MD5 keys
/// are installed on the listener per peer, as the kernel needs them before the SYN arrives.
async fn listen(
    port: u16,
    peers: Vec<(IpAddr, tokio::sync::mpsc::Sender<tokio::net::TcpStream>)>,
    keys: Vec<(IpAddr, String)>,
) {
    let bind = || -> std::io::Result<tokio::net::TcpListener> {
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        s.set_only_v6(false)?;
        s.set_reuse_address(true)?;
        for (a, k) in &keys {
            let a = match a {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                v6 => *v6,
            };
            super::md5::set(&s, std::net::SocketAddr::new(a, 0), k.as_bytes())?;
        }
        s.bind(&std::net::SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port).into())?;
        s.listen(16)?;
        s.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(std::net::TcpListener::from(s))
    };
    let l = match bind() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("BGP: cannot listen on port {port}: {e}; peers must be reached by active opening");
            return;
        }
    };
    loop {
        let Ok((c, from)) = l.accept().await else { continue };
        let ip = match from.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match peers.iter().find(|(a, _)| *a == ip) {
            Some((_, tx)) => {
                if tx.try_send(c).is_err() {
                    tracing::warn!(peer = %ip, "BGP: connection refused, the peer's task is busy");
                }
            }
            None => tracing::warn!(from = %ip, "BGP: connection from an unconfigured address closed"),
        }
    }
}
