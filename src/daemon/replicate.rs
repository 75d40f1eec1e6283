//! The daemon loop's side of flow replication (`[replication]`): the workers' new flows go to the peer appliances in
//! authenticated, rate-bounded UDP datagrams ([`edgelb_controlplane::ha::replicate`]); the peers' flows go to the
//! worker that owns each (by client address, the hand-off rule) to install. At start this appliance says hello to
//! its peers (again every second until each has sent its flows and an end of bulk), and a hello from a peer — a peer
//! that started — is answered with every flow tracked here, so an appliance that comes back knows the flows the
//! router may give it; it waits for that (at most 2 s) before it announces its VIPs.
//! All of it runs off the packet path, on the daemon's thread, non-blocking.

use edgelb_controlplane::config::ReplicationConfig;
use edgelb_controlplane::ha::replicate::{key, Inbox, Message, Outbox};
use edgelb_controlplane::store::Store;
use edgelb_dataplane::pipeline::replicate::{FlowRecord, ReplicaQueue};
use edgelb_dataplane::pipeline::{owner_of_client, FlowFilter};
use edgelb_dataplane::snapshot::addr16;
use edgelb_dataplane::worker::WorkerView;
use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Records each worker queue holds.
pub(super) const QUEUE_DEPTH: usize = 16_384;
/// Records waiting to be sent at most.
const OUTBOX_BOUND: usize = 1 << 20;

pub(super) struct Replicator {
    sock: UdpSocket,
    peers: Vec<SocketAddr>,
    key: ring::hmac::Key,
    outbox: Outbox,
    inbox: Inbox,
    /// Peers whose bulk send (the answer to our hello) has ended.
    bulk_from: HashSet<SocketAddr>,
    next_hello: Instant,
    /// When the counters next go to the store (`/metrics`).
    next_status: Instant,
    /// Flows received, by the worker queue they went to; dropped when that queue was full.
    pub(super) received: u64,
    pub(super) queue_full: u64,
    /// Bulk sends answered (hellos from peers).
    pub(super) bulk: u64,
    /// Datagrams from addresses that are not peers (dropped unread).
    strangers: u64,
    buf: Vec<u8>,
}

impl Replicator {
    pub(super) fn start(c: &ReplicationConfig) -> Result<Self, String> {
        let sock = UdpSocket::bind(c.listen).map_err(|e| format!("[replication] listen {}: {e}", c.listen))?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut seed = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).map_err(|_| "no randomness")?;
        let now = Instant::now();
        info!(listen = %c.listen, peers = ?c.peers, rate = c.rate, "flow replication on");
        Ok(Replicator {
            sock,
            peers: c.peers.clone(),
            key: key(&c.secret),
            outbox: Outbox::new(u64::from_be_bytes(seed), c.rate, OUTBOX_BOUND, now),
            inbox: Inbox::default(),
            bulk_from: HashSet::new(),
            next_hello: now,
            next_status: now,
            received: 0,
            queue_full: 0,
            bulk: 0,
            strangers: 0,
            buf: vec![0; 2048],
        })
    }

    /// One round: hellos, the workers' new flows out, the peers' datagrams in.
    pub(super) fn pump(
        &mut self,
        queues: &[(ReplicaQueue, ReplicaQueue)],
        view: &WorkerView,
        store: &Store,
        now: Instant,
    ) {
        if now >= self.next_status {
            self.next_status = now + Duration::from_secs(1);
            store.set_replication(self.status());
        }
        if now >= self.next_hello && !self.synced() {
            self.next_hello = now + Duration::from_secs(1);
            let seq = self.outbox.next_seq();
            let hello =
                edgelb_controlplane::ha::replicate::encode(&Message::Hello, self.outbox.sender(), seq, &self.key);
            for p in self.peers.iter().filter(|p| !self.bulk_from.contains(p)) {
                let _ = self.sock.send_to(&hello, p);
            }
        }
        for (out, _) in queues {
            while let Some(r) = out.pop() {
                self.outbox.push(r);
            }
        }
        for d in self.outbox.due(now, &self.key) {
            for p in &self.peers {
                // A full socket buffer loses this datagram for this peer; the rate bound keeps that rare.
                let _ = self.sock.send_to(&d, p);
            }
        }
        // At most 256 datagrams a round, so a flood never starves the loop.
        for _ in 0..256 {
            let (n, from) = match self.sock.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(_) => break,
            };
            if !self.peers.contains(&from) {
                // Only the configured peers: anything else is counted and dropped unread.
                self.strangers += 1;
                continue;
            }
            match self.inbox.accept(&self.buf[..n], &self.key) {
                Ok((_, Message::Flows(records))) => {
                    for r in records {
                        self.received += 1;
                        let w = usize::from(owner_of_client(&r.src, queues.len() as u16));
                        if queues.get(w).is_none_or(|(_, inq)| inq.push(r).is_err()) {
                            self.queue_full += 1;
                        }
                    }
                }
                Ok((_, Message::Hello)) => {
                    self.bulk += 1;
                    let n = self.send_all(view, store);
                    self.outbox.push_end();
                    info!(peer = %from, flows = n, "a peer appliance started: sending it every flow tracked here");
                }
                Ok((_, Message::BulkEnd)) => {
                    if self.bulk_from.insert(from) {
                        info!(peer = %from, received = self.received, "flow replication: the peer's flows are here");
                    }
                }
                Err(e) => warn!(peer = %from, reason = e.name(), "replication datagram refused"),
            }
        }
    }

    /// Queue every flow the workers track (not full-NAT ones) for the peers. Returns how many.
    fn send_all(&mut self, view: &WorkerView, store: &Store) -> usize {
        let cfg = store.snapshot();
        let mut token = None;
        let mut n = 0;
        loop {
            let page = match view.list_flows(FlowFilter::default(), token, 4096, Duration::from_millis(500)) {
                Ok(p) => p,
                Err(e) => {
                    warn!("listing the flows for a peer failed: {e:?}");
                    return n;
                }
            };
            for (_, f) in &page.0 {
                let Some(b) = cfg.backend(f.backend) else { continue };
                let svc = &cfg.services[b.service as usize];
                if svc.mode == edgelb_dataplane::model::Mode::FullNat {
                    continue;
                }
                self.outbox.push(FlowRecord {
                    v4: f.client.is_ipv4(),
                    proto: f.proto,
                    state: f.state as u8,
                    src: addr16(f.client),
                    dst: addr16(f.vip),
                    sport: f.client_port,
                    dport: f.vip_port,
                    backend: b.addr,
                    backend_port: b.port,
                });
                n += 1;
            }
            match page.1 {
                Some(t) => token = Some(t),
                None => return n,
            }
        }
    }

    /// Every peer has sent the flows it tracks (answering our hello).
    pub(super) fn synced(&self) -> bool {
        self.peers.iter().all(|p| self.bulk_from.contains(p))
    }

    /// Before the VIPs are announced: take the peers' flows, at most `wait` (a peer that is down does not answer).
    pub(super) fn sync_before_announcing(
        &mut self,
        queues: &[(ReplicaQueue, ReplicaQueue)],
        view: &WorkerView,
        store: &Store,
        wait: Duration,
    ) {
        let t0 = Instant::now();
        while !self.synced() && t0.elapsed() < wait {
            self.pump(queues, view, store, Instant::now());
            std::thread::sleep(Duration::from_millis(2));
        }
        // The workers install what came (each drains its queue between bursts): wait until they have.
        let deadline = Instant::now() + Duration::from_millis(500);
        while queues.iter().any(|(_, inq)| !inq.is_empty()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if self.synced() {
            info!(
                flows = self.received,
                ms = t0.elapsed().as_millis() as u64,
                "flow replication: synced with every peer before announcing"
            );
        } else {
            warn!(
                waited_ms = wait.as_millis() as u64,
                "flow replication: not every peer answered (down, or not started yet); announcing anyway"
            );
        }
    }

    /// The counters for `/metrics`.
    pub(super) fn status(&self) -> edgelb_controlplane::store::ReplicationStatus {
        let mut refused: Vec<(&'static str, u64)> =
            edgelb_controlplane::ha::replicate::Refused::ALL.iter().map(|r| r.name()).zip(self.inbox.refused).collect();
        refused.push(("stranger", self.strangers));
        edgelb_controlplane::store::ReplicationStatus {
            peers: self.peers.iter().map(|p| (p.to_string(), self.bulk_from.contains(p))).collect(),
            sent: self.outbox.sent,
            dropped: self.outbox.dropped,
            received: self.received,
            queue_full: self.queue_full,
            accepted: self.inbox.accepted,
            refused,
            bulk_sends: self.bulk,
        }
    }

    /// A line for the log at stop.
    pub(super) fn summary(&self) -> String {
        let st = self.status();
        let refused: Vec<String> = st.refused.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{r} {n}")).collect();
        format!(
            "sent {} flows ({} dropped at the bound), received {} ({} lost to full worker queues), {} datagrams accepted, refused: {}, bulk sends {}",
            st.sent,
            st.dropped,
            st.received,
            st.queue_full,
            st.accepted,
            if refused.is_empty() { "none".into() } else { refused.join(", ") },
            st.bulk_sends
        )
    }
}
