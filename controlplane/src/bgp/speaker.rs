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
    /// Peer state changes.
    pub transitions: broadcast::Sender<Transition>,
}

impl Speaker {
    /// Start one task per peer, announcing what the store's snapshots call for (checked every 100 ms).
    pub fn start(store: Arc<Store>, peers: Vec<PeerConfig>) -> Self {
        let first = Routes { prefixes: routes_of(&store.snapshot()), graceful_shutdown: false };
        let (routes, rx) = watch::channel(first);
        let (stop, stop_rx) = watch::channel(false);
        let transitions = broadcast::channel(256).0;
        let peers = peers
            .into_iter()
            .map(|p| {
                let status = Arc::new(Mutex::new(Status::default()));
                let name = p.name.clone();
                let t = tokio::spawn(session::run(p, rx.clone(), stop_rx.clone(), status.clone(), transitions.clone()));
                (name, status, t)
            })
            .collect();
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
        Self { routes, stop, peers, follower, transitions }
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
        for (_, _, t) in self.peers {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
    }

    /// End every session abruptly, without withdrawing or a NOTIFICATION (what a crash looks like to peers; graceful
    /// restart keeps our routes at them until we come back).
    pub fn abort(self) {
        self.follower.abort();
        for (_, _, t) in self.peers {
            t.abort();
        }
    }
}
