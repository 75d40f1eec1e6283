//! BFD sessions on sockets (RFC 5881, single hop): a [`Hub`] receives every control packet on UDP port 3784 (IPv4
//! and IPv6, each datagram's TTL checked to be 255), counts what it refuses by reason, and hands the rest to the
//! session they name (by Your Discriminator, or by source address before the peer knows ours). Each session is a task
//! ([`spawn`]) with its own socket (a source port from 49152 to 65535, TTL 255) that runs [`super::bfd::Session`]'s
//! timers and reports its status; a failure (Up to Down for any reason but the peer's administrative down, RFC 5882
//! section 3.2) increments a counter the BGP session watches and drops at once.

use super::bfd::{self, Packet, Refused, Session, State, Timers};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One session's state as reported (API, `edgelbctl peer list`, metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// Our state.
    pub state: State,
    /// The peer's state as last heard.
    pub remote_state: State,
    /// Our diagnostic code (why the session last went down).
    pub diag: u8,
    /// Times the session came Up.
    pub up_count: u64,
    /// Times it failed (went down from Up, not by the peer's choice): each one dropped the BGP session.
    pub failures: u64,
    /// Control packets received and used.
    pub packets_in: u64,
    /// Control packets sent.
    pub packets_out: u64,
    /// The detection time in force, milliseconds.
    pub detection_ms: u64,
    /// When the state last changed.
    pub changed_at: Option<SystemTime>,
}

struct Entry {
    disc: u32,
    peer: IpAddr,
    inbox: mpsc::Sender<Packet>,
}

/// The receiving side shared by all sessions, and the drop counters.
pub struct Hub {
    sessions: Mutex<Vec<Entry>>,
    dropped: [AtomicU64; Refused::ALL.len()],
    next_disc: AtomicU32,
    rx_tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("dropped", &self.dropped()).finish()
    }
}

fn rx_socket(v6: bool, port: u16) -> std::io::Result<UdpSocket> {
    let domain = if v6 { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let any: IpAddr = if v6 {
        s.set_only_v6(true)?;
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    s.set_reuse_address(true)?;
    crate::os::ask_for_ttl(&s, v6)?;
    s.bind(&SocketAddr::new(any, port).into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

impl Hub {
    /// Listen on `port` (3784; tests may pick another) for IPv4 and IPv6 control packets.
    ///
    /// # Errors
    /// A socket cannot be bound (the port is taken, or no permission).
    pub fn start(port: u16) -> std::io::Result<Arc<Self>> {
        let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.subsec_nanos());
        let hub = Arc::new(Self {
            sessions: Mutex::new(Vec::new()),
            dropped: Default::default(),
            next_disc: AtomicU32::new(seed | 1),
            rx_tasks: Mutex::new(Vec::new()),
        });
        let v4 = rx_socket(false, port)?;
        let v6 = rx_socket(true, port);
        let mut tasks = vec![tokio::spawn(receive(hub.clone(), v4))];
        match v6 {
            Ok(v6) => tasks.push(tokio::spawn(receive(hub.clone(), v6))),
            // A host without IPv6 still runs BFD over IPv4.
            Err(e) => tracing::warn!("BFD: no IPv6 socket on port {port}: {e}"),
        }
        if let Ok(mut g) = hub.rx_tasks.lock() {
            *g = tasks;
        }
        Ok(hub)
    }

    /// Packets refused so far, by reason.
    pub fn dropped(&self) -> Vec<(&'static str, u64)> {
        Refused::ALL.iter().zip(&self.dropped).map(|(r, n)| (r.as_str(), n.load(Ordering::Relaxed))).collect()
    }

    fn count(&self, r: Refused) {
        if let Some(i) = Refused::ALL.iter().position(|x| *x == r) {
            self.dropped[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The session a packet from `from` belongs to.
    fn route(&self, from: IpAddr, p: &Packet) -> Result<mpsc::Sender<Packet>, Refused> {
        let g = self.sessions.lock().map_err(|_| Refused::UnknownSession)?;
        let e =
            if p.your_disc != 0 { g.iter().find(|e| e.disc == p.your_disc) } else { g.iter().find(|e| e.peer == from) };
        e.map(|e| e.inbox.clone()).ok_or(Refused::UnknownSession)
    }

    /// Check and hand over one datagram.
    fn deliver(&self, from: IpAddr, ttl: Option<u8>, bytes: &[u8]) {
        let r = if ttl != Some(bfd::TTL) {
            Err(Refused::Ttl)
        } else {
            Packet::parse(bytes).and_then(|p| self.route(from.to_canonical(), &p).map(|to| (to, p)))
        };
        match r {
            // A session that does not keep up loses the packet; the next one carries the same state.
            Ok((to, p)) => drop(to.try_send(p)),
            Err(e) => self.count(e),
        }
    }

    /// Stop receiving.
    pub fn stop(&self) {
        if let Ok(g) = self.rx_tasks.lock() {
            for t in g.iter() {
                t.abort();
            }
        }
    }
}

async fn receive(hub: Arc<Hub>, sock: UdpSocket) {
    let mut buf = [0u8; 512];
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        match sock.try_io(tokio::io::Interest::READABLE, || crate::os::recv_with_ttl(&sock, &mut buf)) {
            Ok((n, from, ttl)) => hub.deliver(from.ip(), ttl, &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::warn!("BFD: receive: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A running session.
#[derive(Debug)]
pub struct Link {
    /// Its status.
    pub status: Arc<Mutex<LinkStatus>>,
    /// Failures so far (Up to Down, not by the peer's choice): the BGP session drops on each change.
    pub failures: watch::Receiver<u64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Link {
    /// Say AdminDown to the peer (so it does not count our leaving as a failure) and end the task.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }

    /// End the task without a word (a crash, as the peer sees it).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// A socket for one session's packets: a source port in 49152..=65535 (RFC 5881 section 4), TTL 255.
fn tx_socket(peer: IpAddr, source: Option<IpAddr>, seed: u32) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(SocketAddr::new(peer, 0));
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if peer.is_ipv4() {
        s.set_ttl(u32::from(bfd::TTL))?;
    } else {
        s.set_unicast_hops_v6(u32::from(bfd::TTL))?;
    }
    let local =
        source.unwrap_or(if peer.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() });
    let mut last = None;
    for i in 0..64u32 {
        let port = 49152 + ((seed.wrapping_mul(2_654_435_761).wrapping_add(i * 7919)) % 16384) as u16;
        match s.bind(&SocketAddr::new(local, port).into()) {
            Ok(()) => {
                s.set_nonblocking(true)?;
                return UdpSocket::from_std(s.into());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free source port")))
}

/// Start a session with `peer` (from `source`, or the kernel's choice).
///
/// # Errors
/// No socket could be bound.
pub fn spawn(hub: &Arc<Hub>, peer: IpAddr, source: Option<IpAddr>, timers: Timers) -> std::io::Result<Link> {
    let peer = peer.to_canonical();
    let disc = hub.next_disc.fetch_add(1, Ordering::Relaxed).max(1);
    let sock = tx_socket(peer, source, disc)?;
    let (inbox, rx) = mpsc::channel(16);
    if let Ok(mut g) = hub.sessions.lock() {
        g.push(Entry { disc, peer, inbox });
    }
    let status = Arc::new(Mutex::new(LinkStatus::default()));
    let (fail_tx, failures) = watch::channel(0);
    let (stop, stop_rx) = watch::channel(false);
    let run =
        Runner { hub: hub.clone(), session: Session::new(timers, disc), sock, peer, status: status.clone(), fail_tx };
    let task = tokio::spawn(run.run(rx, stop_rx));
    Ok(Link { status, failures, stop, task })
}

struct Runner {
    hub: Arc<Hub>,
    session: Session,
    sock: UdpSocket,
    peer: IpAddr,
    status: Arc<Mutex<LinkStatus>>,
    fail_tx: watch::Sender<u64>,
}

impl Runner {
    async fn send(&self, fin: bool) {
        let b = self.session.packet(fin).encode();
        // A send that fails (no route, link down) is what BFD is there to notice on the other side; nothing to do.
        if self.sock.send_to(&b, SocketAddr::new(self.peer, bfd::PORT)).await.is_ok() {
            if let Ok(mut st) = self.status.lock() {
                st.packets_out += 1;
            }
        }
    }

    fn record(&self, t: Option<bfd::Transition>) {
        let Ok(mut st) = self.status.lock() else { return };
        st.state = self.session.state();
        st.remote_state = self.session.remote_state();
        st.diag = self.session.diag();
        st.detection_ms = self.session.detection_time().as_millis() as u64;
        let Some((from, to, diag)) = t else { return };
        st.changed_at = Some(SystemTime::now());
        if to == State::Up {
            st.up_count += 1;
        }
        let by_peer = self.session.remote_state() == State::AdminDown;
        let failed = from == State::Up && to == State::Down && !by_peer;
        if failed {
            st.failures += 1;
            self.fail_tx.send_modify(|n| *n += 1);
        }
        let why = bfd::diag::name(diag);
        if failed {
            tracing::warn!(peer = %self.peer, "BFD: {from:?} → {to:?} ({why})");
        } else {
            tracing::info!(peer = %self.peer, "BFD: {from:?} → {to:?} ({why})");
        }
    }

    async fn run(mut self, mut inbox: mpsc::Receiver<Packet>, mut stop: watch::Receiver<bool>) {
        let mut rng = self.session.local_disc() | 1;
        let mut next_tx = Instant::now();
        self.record(None);
        loop {
            let deadline = self.session.deadline().map(Instant::from_std);
            tokio::select! {
                p = inbox.recv() => {
                    let Some(p) = p else { return };
                    match self.session.receive(&p, std::time::Instant::now()) {
                        Ok(r) => {
                            if let Ok(mut st) = self.status.lock() {
                                st.packets_in += 1;
                            }
                            if r.send_final {
                                self.send(true).await;
                            }
                            if r.transition.is_some() {
                                self.send(false).await;
                                next_tx = Instant::now();
                            }
                            self.record(r.transition);
                        }
                        Err(e) => self.hub.count(e),
                    }
                }
                _ = tokio::time::sleep_until(next_tx) => {
                    let every = match self.session.tx_interval() {
                        Some(i) => {
                            self.send(false).await;
                            i
                        }
                        None => Duration::from_secs(1),
                    };
                    // xorshift32: enough for jitter.
                    rng ^= rng << 13;
                    rng ^= rng >> 17;
                    rng ^= rng << 5;
                    next_tx = Instant::now() + self.session.jittered(every, rng);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let t = self.session.expire(std::time::Instant::now());
                    if t.is_some() {
                        self.send(false).await;
                    }
                    self.record(t);
                }
                _ = stop.changed() => break,
            }
        }
        // Leaving: AdminDown, said a few times so that a lost packet does not turn it into a failure at the peer.
        let t = self.session.admin_down();
        self.record(t);
        for _ in 0..3 {
            self.send(false).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Ok(mut g) = self.hub.sessions.lock() {
            g.retain(|e| e.disc != self.session.local_disc());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Timers = Timers { min_tx_us: 20_000, min_rx_us: 20_000, multiplier: 3 };

    /// A session through real sockets on loopback, its peer played by hand (the session sends to port 3784, which
    /// the test does not hold; the peer's packets go to the hub on a spare port): Up on the peer's Init, staying Up
    /// while it hears the peer, a failure once the peer falls silent for the detection time, and refused packets
    /// counted by reason.
    #[tokio::test]
    async fn a_session_comes_up_stays_up_and_fails_when_the_peer_falls_silent() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let hub = Hub::start(port).unwrap();
        let link = spawn(&hub, IpAddr::V4(Ipv4Addr::LOCALHOST), None, FAST).unwrap();
        let disc = hub.sessions.lock().unwrap()[0].disc;
        let me = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        me.set_ttl(255).unwrap();
        let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let hello = Packet {
            state: State::Init,
            detect_mult: 3,
            my_disc: 0xabcd,
            your_disc: disc,
            desired_min_tx_us: 20_000,
            required_min_rx_us: 20_000,
            ..Default::default()
        };
        let status = link.status.clone();
        let state = || status.lock().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        while state().state != State::Up {
            assert!(Instant::now() < deadline, "never Up: {:?}", state());
            me.send_to(&hello.encode(), to).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Heard every 10 ms for 300 ms (five detection times): no failure.
        for _ in 0..30 {
            me.send_to(&hello.encode(), to).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!((state().state, state().failures, state().detection_ms), (State::Up, 0, 60));
        let mut failures = link.failures.clone();
        let t0 = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), failures.changed()).await.unwrap().unwrap();
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(40) && took <= Duration::from_millis(500), "{took:?}");
        let st = state();
        assert_eq!((st.state, st.diag, st.failures, st.up_count), (State::Down, bfd::diag::DETECTION_EXPIRED, 1, 1));
        assert!(st.packets_in >= 31 && st.packets_out >= 2, "{st:?}");
        // Refused packets are counted by reason, and change nothing.
        let low = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        low.set_ttl(64).unwrap();
        low.send_to(&hello.encode(), to).await.unwrap();
        me.send_to(&Packet { your_disc: disc ^ 0xffff, ..hello }.encode(), to).await.unwrap();
        me.send_to(&hello.encode()[..20], to).await.unwrap();
        let counted = Instant::now() + Duration::from_secs(2);
        let get = |r: &str| hub.dropped().iter().find(|(x, _)| *x == r).map_or(0, |x| x.1);
        while (get("ttl"), get("unknown_session"), get("length")) != (1, 1, 1) {
            assert!(Instant::now() < counted, "{:?}", hub.dropped());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(state().state, State::Down);
        link.stop().await;
        assert_eq!(state().state, State::AdminDown);
        assert!(hub.sessions.lock().unwrap().is_empty(), "a stopped session leaves the hub");
        hub.stop();
    }
}
