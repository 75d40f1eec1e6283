//! One BGP peer: the RFC 4271 finite-state machine as a task. Idle → Connect (active open, retried every
//! connect-retry interval) → OpenSent → OpenConfirm → Established, with the hold and keepalive timers negotiated in
//! OPEN. In Established it announces the current route set for every family both sides support (End-of-RIB after
//! the first full table), follows changes with UPDATEs, answers ROUTE-REFRESH by re-sending, counts what it receives,
//! and on shutdown withdraws (tagging GRACEFUL_SHUTDOWN first when asked) before a Cease NOTIFICATION. What each
//! message means and which UPDATEs to send is decided in [`super::fsm`], without sockets; this module does the I/O
//! and the timers.

use super::fsm;
use super::wire::{self, Afi, Capabilities, Open, Prefix};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// What to announce, as the speaker's policy computes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// Host routes of the VIPs to announce.
    pub prefixes: BTreeSet<Prefix>,
    /// Tag every route with GRACEFUL_SHUTDOWN (RFC 8326): the node is about to leave.
    pub graceful_shutdown: bool,
}

/// One peer's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Name for logs and status.
    pub name: String,
    /// Peer address.
    pub address: IpAddr,
    /// Peer TCP port (179).
    pub port: u16,
    /// Peer AS.
    pub remote_as: u32,
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Source address of the session (`None`: the kernel's choice).
    pub source: Option<IpAddr>,
    /// Proposed hold time, seconds (0 or 3..=65535).
    pub hold_time: u16,
    /// Seconds between connection attempts.
    pub connect_retry: u16,
    /// eBGP multihop: the TTL of our packets (`None`: 1 for eBGP, 64 for iBGP).
    pub ttl: Option<u8>,
    /// TCP MD5 signature key (RFC 2385).
    pub password: Option<String>,
    /// Next hop for IPv4 routes (`None`: the session's own address when IPv4).
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Next hop for IPv6 routes (`None`: the session's own address when IPv6).
    pub next_hop_v6: Option<Ipv6Addr>,
    /// MULTI_EXIT_DISC to send.
    pub med: Option<u32>,
    /// LOCAL_PREF to send (iBGP).
    pub local_pref: Option<u32>,
    /// Communities to attach.
    pub communities: Vec<u32>,
    /// Large communities to attach.
    pub large_communities: Vec<(u32, u32, u32)>,
    /// Graceful restart time to advertise (`None`: no GR capability).
    pub graceful_restart: Option<u16>,
    /// Only wait for the peer to connect (no active open).
    pub passive: bool,
    /// BFD with the peer (`None`: none): its failure drops the session at once.
    pub bfd: Option<crate::ha::bfd::Timers>,
}

/// FSM states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// Not trying.
    #[default]
    Idle,
    /// Connecting.
    Connect,
    /// Waiting for the connect-retry timer after a failure.
    Active,
    /// OPEN sent.
    OpenSent,
    /// OPEN received, waiting for KEEPALIVE.
    OpenConfirm,
    /// Up.
    Established,
}

/// A peer's state as reported.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Current state.
    pub state: State,
    /// When it entered Established (for uptime).
    pub established_at: Option<SystemTime>,
    /// The last error (connection, NOTIFICATION sent or received, hold timer).
    pub last_error: Option<String>,
    /// Messages received.
    pub msgs_in: u64,
    /// Messages sent.
    pub msgs_out: u64,
    /// Prefixes the peer announced to us (counted, never installed).
    pub prefixes_received: u64,
    /// Malformed attributes handled as treat-as-withdraw.
    pub treat_as_withdraw: u64,
    /// Times the session came up.
    pub established_count: u64,
    /// Prefixes announced now.
    pub announced: usize,
    /// The BFD session with the peer, when configured.
    pub bfd: Option<crate::ha::bfd_link::LinkStatus>,
}

/// Record state `s` (with error `e`, if any) in `st`; true when it is a transition to report. Established starts a
/// session afresh: the last error is cleared and the prefixes received count from zero (treat-as-withdraw stays a
/// running total).
fn enter(st: &mut Status, s: State, e: Option<String>) -> bool {
    if st.state == s && e.is_none() {
        return false;
    }
    st.state = s;
    if e.is_some() {
        st.last_error = e;
    }
    if s == State::Established {
        st.established_at = Some(SystemTime::now());
        st.established_count += 1;
        st.last_error = None;
        st.prefixes_received = 0;
    } else {
        st.established_at = None;
        st.announced = 0;
    }
    true
}

/// A state change, for events and logs.
pub type Transition = (String, State, Option<String>);

/// How long a stopping session waits for the peer to close the connection after our Cease (the speaker waits 3 s for
/// the whole task).
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Run one peer forever (until `stop` turns true: then withdraw, say goodbye, wait for the peer to close, return).
///
/// Connections the peer opens to us arrive on `incoming` (from the speaker's listener): in Idle/Connect/Active one is
/// taken as the session; during an OPEN exchange it is a collision, resolved by BGP identifier (RFC 4271 6.8); in
/// Established it is refused with Cease / connection collision resolution.
///
/// `bfd` counts the failures of the peer's BFD session: each one ends an established session at once, with Cease /
/// BFD Down (RFC 9384), instead of waiting for the hold timer.
pub async fn run(
    cfg: PeerConfig,
    mut routes: watch::Receiver<Routes>,
    mut stop: watch::Receiver<bool>,
    mut incoming: tokio::sync::mpsc::Receiver<TcpStream>,
    status: Arc<Mutex<Status>>,
    transitions: tokio::sync::broadcast::Sender<Transition>,
    mut bfd: Option<watch::Receiver<u64>>,
) {
    let set = |s: State, e: Option<String>| {
        if let Ok(mut st) = status.lock() {
            if enter(&mut st, s, e.clone()) {
                let _ = transitions.send((cfg.name.clone(), s, e));
            }
        }
    };
    let mut next: Option<TcpStream> = None;
    loop {
        if *stop.borrow() {
            set(State::Idle, None);
            return;
        }
        set(State::Connect, None);
        let stream = match next.take() {
            Some(s) => Ok(s),
            None if cfg.passive => tokio::select! {
                s = incoming.recv() => s.ok_or_else(|| "listener gone".to_string()),
                _ = stop.changed() => continue,
            },
            None => tokio::select! {
                s = connect(&cfg) => s.map_err(|e| format!("connect to {}:{}: {e}", cfg.address, cfg.port)),
                s = incoming.recv() => s.ok_or_else(|| "listener gone".to_string()),
                _ = stop.changed() => continue,
            },
        };
        let result = match stream {
            // A connection the peer opened gets the same options as one we open.
            Ok(stream) => match tune(socket2::SockRef::from(&stream), cfg.address.is_ipv4(), &cfg) {
                Ok(()) => {
                    let mut watch =
                        Watched { routes: &mut routes, stop: &mut stop, incoming: &mut incoming, bfd: bfd.as_mut() };
                    session(&cfg, stream, &mut watch, &status, &set).await
                }
                Err(e) => Err(format!("socket options: {e}")),
            },
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(Some(other)) => {
                // Collision resolved in favour of the other connection: carry on with it at once.
                next = Some(other);
                set(State::Active, Some("connection collision: continuing on the other connection".into()));
                continue;
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if *stop.borrow() {
            set(State::Idle, result.err());
            return;
        }
        set(State::Active, Some(result.err().unwrap_or_else(|| "session closed".into())));
        let wait = tokio::time::sleep(Duration::from_secs(u64::from(cfg.connect_retry.max(1))));
        tokio::select! {
            _ = wait => {}
            s = incoming.recv() => next = s,
            _ = stop.changed() => {}
        }
    }
}

/// The socket options every session's connection gets, whichever side opened it: the TTL (1 for eBGP unless
/// `multihop_ttl` says more, 64 for iBGP; on a dual-stack socket an IPv4 peer's packets take the IPv4 TTL) and no
/// Nagle delay, which would hold every second small UPDATE back for the peer's delayed ACK.
pub(crate) fn tune(sock: socket2::SockRef<'_>, v4: bool, cfg: &PeerConfig) -> std::io::Result<()> {
    let ebgp = cfg.remote_as != cfg.local_as;
    let ttl = u32::from(cfg.ttl.unwrap_or(if ebgp { 1 } else { 64 }));
    if v4 {
        sock.set_ttl(ttl)?;
    } else {
        sock.set_unicast_hops_v6(ttl)?;
    }
    sock.set_nodelay(true)
}

async fn connect(cfg: &PeerConfig) -> std::io::Result<TcpStream> {
    let to = SocketAddr::new(cfg.address, cfg.port);
    let sock =
        socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    tune(socket2::SockRef::from(&sock), to.is_ipv4(), cfg)?;
    if let Some(pw) = &cfg.password {
        super::md5::set(&sock, to, pw.as_bytes())?;
    }
    if let Some(src) = cfg.source {
        sock.bind(&SocketAddr::new(src, 0).into())?;
    }
    sock.set_nonblocking(true)?;
    let sock = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(sock));
    tokio::time::timeout(Duration::from_secs(10), sock.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 10 s"))?
}

/// Reads whole messages off a stream.
struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    async fn next(&mut self, s: &mut TcpStream) -> Result<Vec<u8>, String> {
        loop {
            match wire::frame(&self.buf) {
                Ok(Some(n)) => return Ok(self.buf.drain(..n).collect()),
                Ok(None) => {}
                Err(e) => return Err(format!("peer sent {e}")),
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("peer closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn send(s: &mut TcpStream, status: &Mutex<Status>, msg: &[u8]) -> Result<(), String> {
    s.write_all(msg).await.map_err(|e| format!("write: {e}"))?;
    if let Ok(mut st) = status.lock() {
        st.msgs_out += 1;
    }
    Ok(())
}

/// Send the refusal's NOTIFICATION (if it has one); the reason the session ends.
async fn end(s: &mut TcpStream, status: &Mutex<Status>, r: fsm::Refusal) -> String {
    if let Some((code, subcode, data)) = &r.notification {
        let _ = send(s, status, &wire::notification(*code, *subcode, data)).await;
    }
    r.reason
}

/// Refuse a connection with Cease / connection collision resolution.
async fn refuse(mut c: TcpStream) {
    let _ = c.write_all(&wire::notification(wire::notify::CEASE, wire::notify::CEASE_COLLISION, &[])).await;
    let _ = c.shutdown().await;
}

/// Count a message received.
fn count_in(status: &Mutex<Status>) {
    if let Ok(mut st) = status.lock() {
        st.msgs_in += 1;
    }
}

/// Our OPEN: both families, 4-byte AS, route refresh and, when configured, graceful restart.
fn our_open(cfg: &PeerConfig, status: &Mutex<Status>) -> Open {
    let families = vec![Afi::Ipv4, Afi::Ipv6];
    Open {
        asn: cfg.local_as,
        hold_time: cfg.hold_time,
        bgp_id: cfg.router_id,
        caps: Capabilities {
            families: families.clone(),
            as4: Some(cfg.local_as),
            route_refresh: true,
            // Restart State set on this process's first session (RFC 4724 4.1): the peer may hold our routes from
            // before a restart, and must not wait for our End-of-RIB before sending its own.
            graceful_restart: cfg.graceful_restart.map(|t| {
                let first = status.lock().map(|s| s.established_count == 0).unwrap_or(true);
                (t, first, families.iter().map(|f| (*f, true)).collect())
            }),
        },
    }
}

/// OpenSent: the peer's OPEN, under a large hold timer (4 minutes, RFC 4271 8.2.2). A connection from the peer
/// meanwhile is kept aside (returned) until we know its identifier; a second one is refused.
async fn await_open(
    s: &mut TcpStream,
    rd: &mut Reader,
    incoming: &mut tokio::sync::mpsc::Receiver<TcpStream>,
) -> Result<(Vec<u8>, Option<TcpStream>), String> {
    let mut pending: Option<TcpStream> = None;
    let open_wait = tokio::time::sleep(Duration::from_secs(240));
    tokio::pin!(open_wait);
    loop {
        tokio::select! {
            m = rd.next(s) => return Ok((m?, pending)),
            c = incoming.recv() => match (c, pending.is_some()) {
                (Some(c), false) => pending = Some(c),
                (Some(c), true) => refuse(c).await,
                (None, _) => {}
            },
            _ = &mut open_wait => return Err("no OPEN in 240 s".into()),
        }
    }
}

/// What a session waits on besides its connection.
struct Watched<'a> {
    routes: &'a mut watch::Receiver<Routes>,
    stop: &'a mut watch::Receiver<bool>,
    incoming: &'a mut tokio::sync::mpsc::Receiver<TcpStream>,
    bfd: Option<&'a mut watch::Receiver<u64>>,
}

/// One session on `s`. `Ok(Some(other))`: a collision was resolved in favour of `other`, which the caller continues
/// on; `Ok(None)`: closed cleanly on stop.
async fn session(
    cfg: &PeerConfig,
    mut s: TcpStream,
    w: &mut Watched<'_>,
    status: &Mutex<Status>,
    set: &(dyn Fn(State, Option<String>) + Sync),
) -> Result<Option<TcpStream>, String> {
    // An accepted connection on the dual-stack listener has an IPv4-mapped local address: the next hop is IPv4.
    let local = s.local_addr().map_err(|e| e.to_string())?.ip().to_canonical();
    send(&mut s, status, &wire::open(&our_open(cfg, status))).await?;
    set(State::OpenSent, None);
    let mut rd = Reader { buf: Vec::new() };
    let (m, pending) = await_open(&mut s, &mut rd, w.incoming).await?;
    count_in(status);
    let theirs = match fsm::check_open(cfg, wire::decode(&m)) {
        Ok(o) => o,
        Err(r) => return Err(end(&mut s, status, r).await),
    };
    // Collision (RFC 4271 6.8), now that the peer's identifier is known: with the lower identifier we give up the
    // current connection for the pending one; with the higher we refuse the pending one.
    if let Some(other) = pending {
        if fsm::yield_to_theirs(cfg.router_id, theirs.bgp_id) {
            let _ = send(&mut s, status, &wire::notification(wire::notify::CEASE, wire::notify::CEASE_COLLISION, &[]))
                .await;
            return Ok(Some(other));
        }
        refuse(other).await;
    }
    let agreed = fsm::negotiate(cfg, &theirs, local);
    // A family without a next hop (an IPv6 session and no next_hop_v4, or the reverse) is not announced: a route
    // without one would be malformed. Said in the status, not silently.
    if let Some(f) = agreed.missing_next_hop {
        if let Ok(mut st) = status.lock() {
            st.last_error = Some(format!(
                "{f:?} routes not announced: set next_hop_{} for this peer",
                if f == Afi::Ipv4 { "v4" } else { "v6" }
            ));
        }
    }
    send(&mut s, status, &wire::keepalive()).await?;
    set(State::OpenConfirm, None);
    let confirm_wait =
        if agreed.hold == 0 { Duration::from_secs(240) } else { Duration::from_secs(agreed.hold.into()) };
    let m = tokio::time::timeout(confirm_wait, rd.next(&mut s))
        .await
        .map_err(|_| "hold timer expired in OpenConfirm".to_string())??;
    count_in(status);
    if let Err(r) = fsm::check_confirm(wire::decode(&m)) {
        return Err(end(&mut s, status, r).await);
    }
    set(State::Established, None);
    let announcer = fsm::Announcer { cfg, local, families: &agreed.families };
    // Only failures from now on end this session.
    if let Some(b) = w.bfd.as_mut() {
        b.borrow_and_update();
    }
    let mut link = Link { s, rd, status };
    link.established(&announcer, &agreed, w).await
}

/// The next BFD failure (never, without BFD).
async fn bfd_failed(b: Option<&mut watch::Receiver<u64>>) -> Result<(), watch::error::RecvError> {
    match b {
        Some(b) => b.changed().await,
        None => std::future::pending().await,
    }
}

/// An established session's connection.
struct Link<'a> {
    s: TcpStream,
    rd: Reader,
    status: &'a Mutex<Status>,
}

impl Link<'_> {
    async fn send(&mut self, m: &[u8]) -> Result<(), String> {
        send(&mut self.s, self.status, m).await
    }

    fn set_announced(&self, n: usize) {
        if let Ok(mut st) = self.status.lock() {
            st.announced = n;
        }
    }

    /// Established: the full table and End-of-RIB per family, then updates as routes change, keepalives, the hold
    /// timer, and a clean withdrawal and Cease on stop (`Ok(None)`).
    async fn established(
        &mut self,
        announcer: &fsm::Announcer<'_>,
        agreed: &fsm::Negotiated,
        w: &mut Watched<'_>,
    ) -> Result<Option<TcpStream>, String> {
        let Watched { routes, stop, incoming, bfd } = w;
        let hold = agreed.hold;
        let hold_d = Duration::from_secs(u64::from(hold));
        let mut sent = announcer.restrict(&routes.borrow_and_update());
        for m in announcer.table(&sent) {
            self.send(&m).await?;
        }
        for afi in announcer.families {
            self.send(&wire::end_of_rib(*afi)).await?;
        }
        self.set_announced(sent.prefixes.len());
        let mut last_rx = Instant::now();
        let mut keepalive = tokio::time::interval(agreed.keepalive_every);
        keepalive.tick().await;
        loop {
            let hold_left = hold_d.saturating_sub(last_rx.elapsed());
            tokio::select! {
                m = self.rd.next(&mut self.s) => {
                    let m = m?;
                    last_rx = Instant::now();
                    count_in(self.status);
                    self.on_message(&m, announcer, &sent).await?;
                }
                c = incoming.recv() => {
                    if let Some(c) = c {
                        refuse(c).await;
                    }
                }
                _ = tokio::time::sleep(hold_left), if hold > 0 => {
                    let _ = self.send(&wire::notification(wire::notify::HOLD_EXPIRED, 0, &[])).await;
                    return Err(format!("hold timer expired ({hold} s without a message)"));
                }
                _ = keepalive.tick(), if hold > 0 => self.send(&wire::keepalive()).await?,
                r = bfd_failed(bfd.as_deref_mut()) => {
                    if r.is_err() {
                        // The BFD task ended (the peer is being removed): nothing more to watch.
                        *bfd = None;
                        continue;
                    }
                    let _ = self.send(&wire::notification(wire::notify::CEASE, wire::notify::CEASE_BFD_DOWN, &[])).await;
                    return Err("BFD session went down: the path to the peer failed".into());
                }
                r = routes.changed() => {
                    if r.is_err() {
                        return Err("route source gone".into());
                    }
                    // The watch's guard is a temporary: it is released before the first await below.
                    let (updates, now) = announcer.changes(&sent, &routes.borrow_and_update());
                    for m in updates {
                        self.send(&m).await?;
                    }
                    sent = now;
                    self.set_announced(sent.prefixes.len());
                }
                _ = stop.changed() => {
                    // Clean shutdown: withdraw everything, then Cease / administrative shutdown.
                    for m in announcer.withdraw_all(&sent) {
                        let _ = self.send(&m).await;
                    }
                    let bye = fsm::goodbye();
                    let _ = self.send(&bye).await;
                    let _ = self.s.shutdown().await;
                    self.wait_for_close().await;
                    return Ok(None);
                }
            }
        }
    }

    /// After our Cease: wait, at most [`CLOSE_WAIT`], for the peer to close its side, which it does once it has
    /// handled the Cease. Whatever the speaker does next (BFD's AdminDown to the peer) then reaches a peer whose
    /// session is already down. BIRD 2.0 reads BFD in a thread of its own: an AdminDown it hears before it has read
    /// the Cease ends the Established session as a BFD failure, and it then refuses the peer for a minute ("error
    /// wait").
    async fn wait_for_close(&mut self) {
        let mut buf = [0u8; 4096];
        let drain = async { while matches!(self.s.read(&mut buf).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(CLOSE_WAIT, drain).await;
    }

    /// A message in Established: count what it carries, answer a route refresh with the table, end on an error.
    async fn on_message(&mut self, m: &[u8], announcer: &fsm::Announcer<'_>, sent: &Routes) -> Result<(), String> {
        match fsm::on_established(wire::decode(m)) {
            fsm::Reaction::Nothing => {}
            fsm::Reaction::Received { announced, treat_as_withdraw } => {
                if let Ok(mut st) = self.status.lock() {
                    st.prefixes_received += announced as u64;
                    st.treat_as_withdraw += treat_as_withdraw as u64;
                }
            }
            fsm::Reaction::Refresh(afi) => {
                for m in announcer.table_of(sent, afi) {
                    self.send(&m).await?;
                }
            }
            fsm::Reaction::End(r) => return Err(end(&mut self.s, self.status, r).await),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(remote_as: u32, multihop: Option<u32>) -> PeerConfig {
        let spec = crate::bgp::peer::PeerSpec {
            address: "127.0.0.1".into(),
            remote_as,
            multihop_ttl: multihop,
            ..Default::default()
        };
        crate::bgp::peer::validate(&spec, 65000, Ipv4Addr::new(198, 18, 0, 1)).unwrap()
    }

    #[test]
    fn a_new_session_starts_without_the_last_error_or_the_old_counts() {
        let mut st = Status::default();
        assert!(enter(&mut st, State::Established, None));
        st.prefixes_received = 7;
        st.treat_as_withdraw = 2;
        assert!(enter(&mut st, State::Active, Some("hold timer expired".into())));
        assert_eq!(st.last_error.as_deref(), Some("hold timer expired"));
        assert!(!enter(&mut st, State::Active, None), "no change, nothing to report");
        assert!(enter(&mut st, State::Established, None));
        assert_eq!((st.last_error.as_deref(), st.prefixes_received, st.treat_as_withdraw), (None, 0, 2));
        assert_eq!(st.established_count, 2);
    }

    /// Stopping an Established session ends with the Cease, then waits for the peer to close the connection before
    /// the task returns (the speaker sends BFD's AdminDown only after that), and no longer than [`CLOSE_WAIT`] for a
    /// peer that never closes. A scripted peer on loopback, over IPv4 and IPv6.
    #[tokio::test]
    async fn stopping_waits_for_the_peer_to_close_after_the_cease() {
        for (addr, peer_closes) in [("127.0.0.1", true), ("127.0.0.1", false), ("::1", true)] {
            let l = tokio::net::TcpListener::bind((addr, 0)).await.unwrap();
            let mut cfg = peer(65001, None);
            cfg.address = addr.parse().unwrap();
            cfg.port = l.local_addr().unwrap().port();
            let (_routes_tx, routes) = watch::channel(Routes::default());
            let (stop_tx, stop) = watch::channel(false);
            let (_in_tx, incoming) = tokio::sync::mpsc::channel(1);
            let status = Arc::new(Mutex::new(Status::default()));
            let transitions = tokio::sync::broadcast::channel(16).0;
            let task = tokio::spawn(run(cfg, routes, stop, incoming, status.clone(), transitions, None));
            let (mut c, _) = tokio::time::timeout(Duration::from_secs(5), l.accept()).await.unwrap().unwrap();
            // The session's own reader, on the scripted peer's side.
            let mut rd = Reader { buf: Vec::new() };
            let mut next = async |c: &mut TcpStream| rd.next(c).await.ok().and_then(|m| wire::decode(&m).ok());
            let theirs = next(&mut c).await;
            assert!(matches!(theirs, Some(wire::Message::Open(_))), "{theirs:?}");
            let open = Open {
                asn: 65001,
                hold_time: 9,
                bgp_id: Ipv4Addr::new(198, 18, 0, 2),
                caps: Capabilities { families: vec![Afi::Ipv4], as4: Some(65001), ..Default::default() },
            };
            c.write_all(&wire::open(&open)).await.unwrap();
            c.write_all(&wire::keepalive()).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while status.lock().unwrap().state != State::Established {
                assert!(Instant::now() < deadline, "never Established: {:?}", status.lock().unwrap());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let stopped = Instant::now();
            stop_tx.send(true).unwrap();
            loop {
                match next(&mut c).await {
                    Some(wire::Message::Notification { code, .. }) => {
                        assert_eq!(code, wire::notify::CEASE);
                        break;
                    }
                    Some(_) => {}
                    None => panic!("the connection ended without a Cease"),
                }
            }
            // The peer takes its time to handle the Cease: the session must still be waiting for it.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!task.is_finished(), "the session ended before the peer closed the connection");
            if peer_closes {
                let closed = Instant::now();
                drop(c);
                tokio::time::timeout(Duration::from_secs(1), task).await.unwrap().unwrap();
                assert!(closed.elapsed() < Duration::from_millis(500), "{:?} after the close", closed.elapsed());
            } else {
                tokio::time::timeout(CLOSE_WAIT * 2, task).await.unwrap().unwrap();
                let took = stopped.elapsed();
                assert!(took >= CLOSE_WAIT && took < CLOSE_WAIT + Duration::from_secs(1), "{took:?}");
                drop(c);
            }
            assert_eq!(status.lock().unwrap().state, State::Idle);
        }
    }

    /// A connection the peer opened, accepted on the dual-stack listener from an IPv4 address, leaves with the eBGP
    /// TTL and without Nagle, as one we open does (read back from the kernel).
    #[tokio::test]
    async fn accepted_connections_get_the_ttl_and_no_nagle() {
        let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        for (remote_as, multihop, want) in [(65001, None, 1), (65001, Some(3), 3), (65000, None, 64)] {
            let client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            let cfg = peer(remote_as, multihop);
            let sock = socket2::SockRef::from(&accepted);
            assert!(!sock.nodelay().unwrap(), "a fresh accepted socket has Nagle on");
            tune(socket2::SockRef::from(&accepted), cfg.address.is_ipv4(), &cfg).unwrap();
            assert!(sock.nodelay().unwrap());
            assert_eq!(sock.ttl().unwrap(), want, "AS {remote_as}, multihop {multihop:?}");
            drop(client);
        }
    }
}
