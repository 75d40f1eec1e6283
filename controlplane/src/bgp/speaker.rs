//! The announce policy and the peers: a VIP is announced (as a /32 or /128) while at least one of its services has a
//! backend in the Maglev table (active and passing its health check), and withdrawn otherwise; draining the node tags
//! every route GRACEFUL_SHUTDOWN (RFC 8326) before the withdrawal that stopping brings.

use super::session::{self, PeerConfig, Routes, Status, Transition};
use crate::ha::bfd_link::{self, Hub, Link};
use crate::store::Store;
use edgelb_dataplane::model::BackendState;
use edgelb_dataplane::snapshot::DataplaneConfig;
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
            let vip = edgelb_dataplane::snapshot::addr_from16(s.vip, s.v4);
            out.insert((vip, if s.v4 { 32 } else { 128 }));
        }
    }
    out
}

/// Where the listener sends each peer's connections.
type Inboxes = Arc<Mutex<Vec<(IpAddr, tokio::sync::mpsc::Sender<tokio::net::TcpStream>)>>>;

struct PeerTask {
    cfg: PeerConfig,
    status: Arc<Mutex<Status>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    bfd: Option<Link>,
}

/// A running speaker: its peers' tasks and status.
pub struct Speaker {
    routes: watch::Sender<Routes>,
    peers: Vec<PeerTask>,
    inboxes: Inboxes,
    listener: Option<(Arc<tokio::net::TcpListener>, JoinHandle<()>)>,
    follower: JoinHandle<()>,
    /// BFD's receiving side, from the first peer with BFD on.
    bfd_hub: Option<Arc<Hub>>,
    /// Peer state changes.
    pub transitions: broadcast::Sender<Transition>,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker").field("peers", &self.peers.len()).finish()
    }
}

impl Speaker {
    /// Start one task per peer, announcing what the store's snapshots call for (checked every 100 ms), and a listener
    /// on `listen_port` (0: none) handing each configured peer's connections to its task; others are closed.
    pub fn start(store: Arc<Store>, peers: Vec<PeerConfig>, listen_port: u16) -> Self {
        let first = Routes { prefixes: routes_of(&store.snapshot()), graceful_shutdown: false };
        let (routes, _) = watch::channel(first);
        let transitions = broadcast::channel(256).0;
        let inboxes: Inboxes = Arc::new(Mutex::new(Vec::new()));
        let listener = (listen_port != 0)
            .then(|| match bind(listen_port) {
                Ok(l) => {
                    let l = Arc::new(l);
                    Some((l.clone(), tokio::spawn(accept(l, inboxes.clone()))))
                }
                Err(e) => {
                    tracing::error!(
                        "BGP: cannot listen on port {listen_port}: {e}; peers are reached by active opening"
                    );
                    None
                }
            })
            .flatten();
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
        let mut sp = Self { routes, peers: Vec::new(), inboxes, listener, follower, bfd_hub: None, transitions };
        for p in peers {
            if let Err(e) = sp.add_peer(p) {
                tracing::error!("BGP: {e}");
            }
        }
        sp
    }

    /// Start a session with one more peer.
    ///
    /// # Errors
    /// A peer of that name or address exists already, its MD5 key cannot be installed on the listener, or its BFD
    /// session has no socket (UDP port 3784 taken).
    pub fn add_peer(&mut self, p: PeerConfig) -> Result<(), String> {
        if self.peers.iter().any(|t| t.cfg.name == p.name || t.cfg.address == p.address) {
            return Err(format!("peer {} ({}) exists already", p.name, p.address));
        }
        let bfd = match p.bfd {
            Some(timers) => Some(self.bfd_link(&p, timers)?),
            None => None,
        };
        if let (Some(k), Some((l, _))) = (&p.password, &self.listener) {
            let a = match p.address {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                v6 => v6,
            };
            super::md5::set_on(&socket2::SockRef::from(l.as_ref()), std::net::SocketAddr::new(a, 0), k.as_bytes())
                .map_err(|e| format!("MD5 key for {} on the listener: {e}", p.address))?;
        }
        let status = Arc::new(Mutex::new(Status::default()));
        let (in_tx, in_rx) = tokio::sync::mpsc::channel(2);
        if let Ok(mut g) = self.inboxes.lock() {
            g.push((p.address, in_tx));
        }
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(session::run(
            p.clone(),
            self.routes.subscribe(),
            stop_rx,
            in_rx,
            status.clone(),
            self.transitions.clone(),
            bfd.as_ref().map(|l| l.failures.clone()),
        ));
        self.peers.push(PeerTask { cfg: p, status, stop, task, bfd });
        Ok(())
    }

    /// A BFD session with the peer, the receiving side started with the first.
    fn bfd_link(&mut self, p: &PeerConfig, timers: crate::ha::bfd::Timers) -> Result<Link, String> {
        let hub = match &self.bfd_hub {
            Some(h) => h.clone(),
            None => {
                let h = Hub::start(crate::ha::bfd::PORT)
                    .map_err(|e| format!("BFD for {}: UDP port {}: {e}", p.name, crate::ha::bfd::PORT))?;
                self.bfd_hub = Some(h.clone());
                h
            }
        };
        bfd_link::spawn(&hub, p.address, p.source, timers).map_err(|e| format!("BFD for {}: {e}", p.name))
    }

    /// BFD packets refused so far, by reason (empty without BFD).
    pub fn bfd_dropped(&self) -> Vec<(&'static str, u64)> {
        self.bfd_hub.as_ref().map(|h| h.dropped()).unwrap_or_default()
    }

    /// End the session with a peer (withdrawing our routes, then a Cease) and forget it.
    ///
    /// # Errors
    /// No peer of that name.
    pub async fn remove_peer(&mut self, name: &str) -> Result<(), String> {
        let i = self.peers.iter().position(|t| t.cfg.name == name).ok_or_else(|| format!("no peer {name:?}"))?;
        let t = self.peers.remove(i);
        if let Ok(mut g) = self.inboxes.lock() {
            g.retain(|(a, _)| *a != t.cfg.address);
        }
        let _ = t.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(3), t.task).await;
        // As in `stop`: the AdminDown after the peer has closed the BGP connection.
        if let Some(l) = t.bfd {
            l.stop().await;
        }
        Ok(())
    }

    /// The peers' configurations.
    pub fn peer_configs(&self) -> Vec<PeerConfig> {
        self.peers.iter().map(|t| t.cfg.clone()).collect()
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
        self.peers
            .iter()
            .map(|t| {
                let mut st = t.status.lock().map(|g| g.clone()).unwrap_or_default();
                st.bfd = t.bfd.as_ref().and_then(|l| l.status.lock().ok().map(|g| g.clone()));
                (t.cfg.name.clone(), st)
            })
            .collect()
    }

    /// Withdraw everything, close every session with a Cease, and wait (bounded) for the peers' tasks.
    pub async fn stop(self) {
        self.follower.abort();
        if let Some((_, l)) = &self.listener {
            l.abort();
        }
        for t in &self.peers {
            let _ = t.stop.send(true);
        }
        for t in self.peers {
            let _ = tokio::time::timeout(Duration::from_secs(3), t.task).await;
            // After the BGP session's Cease and the peer's close: BFD's AdminDown then tells the peer we left on
            // purpose, and cannot overtake the Cease (see `session::CLOSE_WAIT`).
            if let Some(l) = t.bfd {
                l.stop().await;
            }
        }
        if let Some(h) = self.bfd_hub {
            h.stop();
        }
    }

    /// End every session abruptly, without withdrawing or a NOTIFICATION (what a crash looks like to peers; graceful
    /// restart keeps our routes at them until we come back).
    pub fn abort(self) {
        self.follower.abort();
        if let Some((_, l)) = &self.listener {
            l.abort();
        }
        for t in self.peers {
            t.task.abort();
            if let Some(l) = t.bfd {
                l.abort();
            }
        }
        if let Some(h) = self.bfd_hub {
            h.stop();
        }
    }
}

/// A dual-stack listening socket for BGP.
fn bind(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_only_v6(false)?;
    s.set_reuse_address(true)?;
    s.bind(&std::net::SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port).into())?;
    s.listen(16)?;
    s.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(std::net::TcpListener::from(s))
}

/// Hand each accepted connection to the task of the peer it comes from; close the others.
async fn accept(l: Arc<tokio::net::TcpListener>, inboxes: Inboxes) {
    loop {
        let Ok((c, from)) = l.accept().await else { continue };
        let ip = from.ip().to_canonical();
        let tx = inboxes.lock().ok().and_then(|g| g.iter().find(|(a, _)| *a == ip).map(|(_, t)| t.clone()));
        match tx {
            Some(tx) => {
                if tx.try_send(c).is_err() {
                    tracing::warn!(peer = %ip, "BGP: connection refused, the peer's task is busy");
                }
            }
            None => tracing::warn!(from = %ip, "BGP: connection from an unconfigured address closed"),
        }
    }
}
