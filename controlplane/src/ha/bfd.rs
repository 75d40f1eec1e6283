//! Bidirectional Forwarding Detection (RFC 5880) for one single-hop session (RFC 5881) in asynchronous mode, without
//! sockets: the control packet's codec ([`Packet::parse`], [`Packet::encode`]) and a session's state machine
//! ([`Session`]): the three-way handshake Down → Init → Up, the detection timer, the poll sequence that follows a
//! change of our transmit interval, and the intervals to transmit at. Time is passed in, so tests drive it without
//! waiting. Demand mode, echo and authentication are not supported: a packet asking for them is refused with a reason.

use std::time::{Duration, Instant};

/// The UDP port of single-hop control packets (RFC 5881 section 4).
pub const PORT: u16 = 3784;
/// Length of a control packet without authentication.
pub const LEN: usize = 24;
/// The TTL (IPv4) or hop limit (IPv6) every single-hop packet is sent with and must arrive with (RFC 5881 section 5).
pub const TTL: u8 = 255;
/// Our transmit interval while the session is not Up, microseconds (at least one second, RFC 5880 section 6.8.3).
pub const SLOW_TX_US: u32 = 1_000_000;

/// Session states, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// Held down by its own side.
    AdminDown,
    /// No session.
    #[default]
    Down,
    /// The remote side is heard; waiting for it to hear us.
    Init,
    /// Both sides hear each other.
    Up,
}

impl State {
    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => Self::AdminDown,
            1 => Self::Down,
            2 => Self::Init,
            _ => Self::Up,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Self::AdminDown => 0,
            Self::Down => 1,
            Self::Init => 2,
            Self::Up => 3,
        }
    }
}

/// Diagnostic codes (RFC 5880 section 4.1): why the local side last left Up.
pub mod diag {
    /// No diagnostic.
    pub const NONE: u8 = 0;
    /// Control detection time expired.
    pub const DETECTION_EXPIRED: u8 = 1;
    /// Neighbor signaled session down.
    pub const NEIGHBOR_DOWN: u8 = 3;
    /// Administratively down.
    pub const ADMIN_DOWN: u8 = 7;

    /// The code's name, for status and logs.
    pub fn name(code: u8) -> &'static str {
        match code {
            0 => "none",
            1 => "control detection time expired",
            2 => "echo function failed",
            3 => "neighbor signaled session down",
            4 => "forwarding plane reset",
            5 => "path down",
            6 => "concatenated path down",
            7 => "administratively down",
            8 => "reverse concatenated path down",
            _ => "reserved",
        }
    }
}

/// Why a received packet was not used: each maps to a drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Shorter than 24 bytes, or its length field says more than arrived or less than 24.
    Length,
    /// Not version 1.
    Version,
    /// Detect Mult of zero.
    DetectMult,
    /// The Multipoint bit is set.
    Multipoint,
    /// My Discriminator of zero.
    MyDiscriminator,
    /// Authentication present: none is configured.
    Authenticated,
    /// Demand mode asked for: not supported.
    Demand,
    /// Your Discriminator is zero while the session is past Down.
    YourDiscriminatorZero,
    /// Your Discriminator names no session of ours.
    UnknownSession,
    /// TTL or hop limit below 255: not from a directly connected neighbour.
    Ttl,
}

impl Refused {
    /// Every reason, for counters.
    pub const ALL: [Refused; 10] = [
        Self::Length,
        Self::Version,
        Self::DetectMult,
        Self::Multipoint,
        Self::MyDiscriminator,
        Self::Authenticated,
        Self::Demand,
        Self::YourDiscriminatorZero,
        Self::UnknownSession,
        Self::Ttl,
    ];

    /// The counter label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Length => "length",
            Self::Version => "version",
            Self::DetectMult => "detect_mult",
            Self::Multipoint => "multipoint",
            Self::MyDiscriminator => "my_discriminator",
            Self::Authenticated => "authenticated",
            Self::Demand => "demand",
            Self::YourDiscriminatorZero => "your_discriminator_zero",
            Self::UnknownSession => "unknown_session",
            Self::Ttl => "ttl",
        }
    }
}

/// A control packet (RFC 5880 section 4.1), intervals in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Packet {
    /// Diagnostic code.
    pub diag: u8,
    /// The sender's state.
    pub state: State,
    /// Poll: the sender asks for a packet with Final.
    pub poll: bool,
    /// Final: the answer to a Poll.
    pub fin: bool,
    /// Control plane independent.
    pub cpi: bool,
    /// Demand mode.
    pub demand: bool,
    /// Detection time multiplier.
    pub detect_mult: u8,
    /// The sender's discriminator.
    pub my_disc: u32,
    /// The receiver's discriminator as the sender knows it (0: not yet).
    pub your_disc: u32,
    /// Desired minimum transmit interval.
    pub desired_min_tx_us: u32,
    /// Required minimum receive interval.
    pub required_min_rx_us: u32,
    /// Required minimum echo receive interval (0: no echo).
    pub required_min_echo_rx_us: u32,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Packet {
    /// Decode and check a control packet as RFC 5880 section 6.8.6 asks before any session is looked at.
    ///
    /// # Errors
    /// The reason the packet is discarded.
    pub fn parse(b: &[u8]) -> Result<Self, Refused> {
        if b.len() < LEN {
            return Err(Refused::Length);
        }
        if b[0] >> 5 != 1 {
            return Err(Refused::Version);
        }
        let len = usize::from(b[3]);
        if len < LEN || len > b.len() {
            return Err(Refused::Length);
        }
        let flags = b[1];
        if flags & 0x04 != 0 {
            return Err(Refused::Authenticated);
        }
        if b[2] == 0 {
            return Err(Refused::DetectMult);
        }
        if flags & 0x01 != 0 {
            return Err(Refused::Multipoint);
        }
        let my_disc = be32(b, 4);
        if my_disc == 0 {
            return Err(Refused::MyDiscriminator);
        }
        Ok(Self {
            diag: b[0] & 0x1f,
            state: State::from_bits(flags >> 6),
            poll: flags & 0x20 != 0,
            fin: flags & 0x10 != 0,
            cpi: flags & 0x08 != 0,
            demand: flags & 0x02 != 0,
            detect_mult: b[2],
            my_disc,
            your_disc: be32(b, 8),
            desired_min_tx_us: be32(b, 12),
            required_min_rx_us: be32(b, 16),
            required_min_echo_rx_us: be32(b, 20),
        })
    }

    /// The packet's 24 bytes.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (1 << 5) | (self.diag & 0x1f);
        b[1] = (self.state.bits() << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.fin) << 4)
            | (u8::from(self.cpi) << 3)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = LEN as u8;
        b[4..8].copy_from_slice(&self.my_disc.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_disc.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx_us.to_be_bytes());
        b
    }
}

/// A session's configured timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Desired minimum transmit interval once Up, microseconds.
    pub min_tx_us: u32,
    /// Required minimum receive interval, microseconds.
    pub min_rx_us: u32,
    /// Detection time multiplier.
    pub multiplier: u8,
}

/// A state change: from, to, and the diagnostic it leaves.
pub type Transition = (State, State, u8);

/// What handling a received packet asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Received {
    /// The packet had Poll: send one with Final at once (RFC 5880 section 6.8.7), outside the periodic schedule.
    pub send_final: bool,
    /// The state changed. A change also calls for a packet at once, so the peer learns it without waiting.
    pub transition: Option<Transition>,
}

/// One session's variables (RFC 5880 section 6.8.1) and the rules that change them.
#[derive(Debug, Clone)]
pub struct Session {
    timers: Timers,
    local_disc: u32,
    state: State,
    diag: u8,
    remote_disc: u32,
    remote_state: State,
    remote_min_rx_us: u32,
    remote_desired_tx_us: u32,
    remote_mult: u8,
    last_rx: Option<Instant>,
    polling: bool,
}

impl Session {
    /// A session in Down with local discriminator `local_disc` (non-zero, unique among ours).
    pub fn new(timers: Timers, local_disc: u32) -> Self {
        Self {
            timers,
            local_disc: local_disc.max(1),
            state: State::Down,
            diag: diag::NONE,
            remote_disc: 0,
            remote_state: State::Down,
            // RFC 5880 section 6.8.1: initialised to 1 (transmit until told otherwise).
            remote_min_rx_us: 1,
            remote_desired_tx_us: 0,
            remote_mult: 0,
            last_rx: None,
            polling: false,
        }
    }

    /// Our state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The peer's state as last heard.
    pub fn remote_state(&self) -> State {
        self.remote_state
    }

    /// Our diagnostic: why we last left Up.
    pub fn diag(&self) -> u8 {
        self.diag
    }

    /// Our discriminator.
    pub fn local_disc(&self) -> u32 {
        self.local_disc
    }

    /// Our desired minimum transmit interval: the configured one once Up, at least a second before.
    fn desired_tx_us(&self) -> u32 {
        if self.state == State::Up {
            self.timers.min_tx_us
        } else {
            self.timers.min_tx_us.max(SLOW_TX_US)
        }
    }

    /// The interval between periodic packets before jitter (the larger of what we want and what the peer can take);
    /// `None` while the peer asks for no packets at all (Required Min RX of zero).
    pub fn tx_interval(&self) -> Option<Duration> {
        if self.remote_min_rx_us == 0 && self.state != State::AdminDown {
            return None;
        }
        Some(Duration::from_micros(u64::from(self.desired_tx_us().max(self.remote_min_rx_us))))
    }

    /// The detection time in asynchronous mode: the peer's multiplier times the larger of our required receive
    /// interval and its desired transmit interval.
    pub fn detection_time(&self) -> Duration {
        let every = self.timers.min_rx_us.max(self.remote_desired_tx_us);
        Duration::from_micros(u64::from(every) * u64::from(self.remote_mult))
    }

    /// When the session goes Down for lack of packets (only in Init and Up).
    pub fn deadline(&self) -> Option<Instant> {
        match (self.state, self.last_rx) {
            (State::Init | State::Up, Some(t)) => Some(t + self.detection_time()),
            _ => None,
        }
    }

    fn become_(&mut self, to: State, why: u8) -> Option<Transition> {
        let from = self.state;
        if from == to {
            return None;
        }
        self.state = to;
        if to != State::Up {
            self.diag = why;
        }
        // Our desired transmit interval changes on entering or leaving Up: a poll sequence tells the peer.
        if (from == State::Up) != (to == State::Up) {
            self.polling = true;
        }
        Some((from, to, self.diag))
    }

    /// Handle a packet that [`Packet::parse`] accepted (RFC 5880 section 6.8.6).
    ///
    /// # Errors
    /// The packet is not for this session in its present state.
    pub fn receive(&mut self, p: &Packet, now: Instant) -> Result<Received, Refused> {
        if p.your_disc == 0 && !matches!(self.state, State::Down | State::AdminDown) {
            return Err(Refused::YourDiscriminatorZero);
        }
        if p.your_disc != 0 && p.your_disc != self.local_disc {
            return Err(Refused::UnknownSession);
        }
        if p.demand {
            return Err(Refused::Demand);
        }
        self.remote_disc = p.my_disc;
        self.remote_state = p.state;
        self.remote_min_rx_us = p.required_min_rx_us;
        self.remote_desired_tx_us = p.desired_min_tx_us;
        self.remote_mult = p.detect_mult;
        self.last_rx = Some(now);
        if p.fin {
            self.polling = false;
        }
        let send_final = p.poll;
        if self.state == State::AdminDown {
            return Ok(Received { send_final, transition: None });
        }
        let transition = match (self.state, p.state) {
            (State::Down, _) | (State::Init, _) | (State::Up, _) if p.state == State::AdminDown => {
                self.become_(State::Down, diag::NEIGHBOR_DOWN)
            }
            (State::Down, State::Down) => self.become_(State::Init, diag::NONE),
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => self.become_(State::Up, diag::NONE),
            (State::Up, State::Down) => self.become_(State::Down, diag::NEIGHBOR_DOWN),
            _ => None,
        };
        Ok(Received { send_final, transition })
    }

    /// At or after the deadline without a packet: Down with "control detection time expired", the peer forgotten.
    pub fn expire(&mut self, now: Instant) -> Option<Transition> {
        if self.deadline().is_none_or(|d| now < d) {
            return None;
        }
        self.remote_disc = 0;
        self.remote_state = State::Down;
        self.become_(State::Down, diag::DETECTION_EXPIRED)
    }

    /// Hold the session down (we are leaving): the next packets say AdminDown.
    pub fn admin_down(&mut self) -> Option<Transition> {
        self.become_(State::AdminDown, diag::ADMIN_DOWN)
    }

    /// The packet to send now; `fin` answers a Poll (and then carries no Poll of its own, RFC 5880 section 6.8.7).
    pub fn packet(&self, fin: bool) -> Packet {
        Packet {
            diag: self.diag,
            state: self.state,
            poll: self.polling && !fin,
            fin,
            cpi: false,
            demand: false,
            detect_mult: self.timers.multiplier,
            my_disc: self.local_disc,
            your_disc: self.remote_disc,
            desired_min_tx_us: self.desired_tx_us(),
            required_min_rx_us: self.timers.min_rx_us,
            required_min_echo_rx_us: 0,
        }
    }

    /// Jitter for the next periodic packet (RFC 5880 section 6.8.7): the interval less 0 to 25 % (10 to 25 % with a
    /// multiplier of 1), `r` a uniform random number.
    pub fn jittered(&self, interval: Duration, r: u32) -> Duration {
        let (lo, span) = if self.timers.multiplier == 1 { (10, 16) } else { (0, 26) };
        let less = lo + r % span;
        interval * (100 - less) / 100
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FAST: Timers = Timers { min_tx_us: 100_000, min_rx_us: 100_000, multiplier: 3 };

    fn pair() -> (Session, Session) {
        (Session::new(FAST, 0x1111), Session::new(FAST, 0x2222))
    }

    /// Deliver `from`'s packet to `to`.
    fn send(from: &Session, to: &mut Session, now: Instant) -> Received {
        let bytes = from.packet(false).encode();
        to.receive(&Packet::parse(&bytes).unwrap(), now).unwrap()
    }

    fn handshake(a: &mut Session, b: &mut Session, now: Instant) {
        send(a, b, now); // b: Down → Init
        send(b, a, now); // a: Down → Up (b said Init)
        send(a, b, now); // b: Init → Up
        assert_eq!((a.state(), b.state()), (State::Up, State::Up));
    }

    #[test]
    fn the_packet_layout_is_rfc_5880s() {
        let p = Packet {
            diag: diag::NEIGHBOR_DOWN,
            state: State::Up,
            poll: true,
            detect_mult: 3,
            my_disc: 0x0102_0304,
            your_disc: 0x0a0b_0c0d,
            desired_min_tx_us: 100_000,
            required_min_rx_us: 300_000,
            ..Default::default()
        };
        let b = p.encode();
        assert_eq!(&b[..4], &[0x23, 0xe0, 3, 24]);
        assert_eq!(&b[4..12], &[1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(&b[12..24], &[0, 1, 0x86, 0xa0, 0, 4, 0x93, 0xe0, 0, 0, 0, 0]);
        assert_eq!(Packet::parse(&b), Ok(p));
    }

    #[test]
    fn every_malformed_packet_is_refused_with_its_reason() {
        let good = Session::new(FAST, 7).packet(false).encode();
        let with = |at: usize, v: u8| {
            let mut b = good;
            b[at] = v;
            b
        };
        assert_eq!(Packet::parse(&good[..23]), Err(Refused::Length));
        assert_eq!(Packet::parse(&with(0, 0x40)), Err(Refused::Version));
        assert_eq!(Packet::parse(&with(3, 23)), Err(Refused::Length));
        assert_eq!(Packet::parse(&with(3, 25)), Err(Refused::Length), "more than arrived");
        assert_eq!(Packet::parse(&with(1, good[1] | 0x04)), Err(Refused::Authenticated));
        assert_eq!(Packet::parse(&with(2, 0)), Err(Refused::DetectMult));
        assert_eq!(Packet::parse(&with(1, good[1] | 0x01)), Err(Refused::Multipoint));
        let mut zero = good;
        zero[4..8].fill(0);
        assert_eq!(Packet::parse(&zero), Err(Refused::MyDiscriminator));
        let mut longer = good.to_vec();
        longer.extend_from_slice(&[0; 4]);
        longer[3] = 28;
        assert!(Packet::parse(&longer).is_ok(), "a longer length field within the datagram is accepted");
    }

    #[test]
    fn three_way_handshake_brings_both_up_and_the_fast_interval_with_a_poll() {
        let (mut a, mut b) = pair();
        let t = Instant::now();
        assert_eq!(a.tx_interval(), Some(Duration::from_secs(1)), "slow while Down");
        assert_eq!(send(&a, &mut b, t).transition, Some((State::Down, State::Init, 0)));
        assert_eq!(send(&b, &mut a, t).transition, Some((State::Down, State::Up, 0)));
        assert!(a.packet(false).poll, "a's transmit interval changed: poll");
        assert_eq!(a.packet(false).desired_min_tx_us, 100_000);
        assert_eq!(send(&a, &mut b, t).transition, Some((State::Init, State::Up, 0)));
        // b answers a's poll with Final; a's poll sequence ends.
        let fin = b.packet(true);
        assert!(fin.fin && !fin.poll);
        a.receive(&fin, t).unwrap();
        assert!(!a.packet(false).poll);
        // b still believes a sends at 1 s until a's next packet; then 100 ms each way.
        send(&a, &mut b, t);
        send(&b, &mut a, t);
        assert_eq!(a.tx_interval(), Some(Duration::from_millis(100)));
        assert_eq!(b.detection_time(), Duration::from_millis(300));
    }

    #[test]
    fn silence_for_the_detection_time_brings_the_session_down_and_forgets_the_peer() {
        let (mut a, mut b) = pair();
        let t = Instant::now();
        handshake(&mut a, &mut b, t);
        send(&b, &mut a, t);
        assert_eq!(a.detection_time(), Duration::from_millis(300));
        assert_eq!(a.expire(t + Duration::from_millis(299)), None);
        assert_eq!(a.expire(t + Duration::from_millis(300)), Some((State::Up, State::Down, diag::DETECTION_EXPIRED)));
        let p = a.packet(false);
        assert_eq!((p.state, p.your_disc, p.diag), (State::Down, 0, diag::DETECTION_EXPIRED));
        assert_eq!(a.deadline(), None, "no detection while Down");
        // a forgot b's discriminator: b, still Up, refuses a's packets and goes down by its own timer.
        assert_eq!(b.receive(&a.packet(false), t), Err(Refused::YourDiscriminatorZero));
        let later = t + Duration::from_millis(300);
        assert_eq!(b.expire(later), Some((State::Up, State::Down, diag::DETECTION_EXPIRED)));
        // And they come back.
        handshake(&mut a, &mut b, later);
    }

    #[test]
    fn the_peer_going_admin_down_brings_us_down_and_we_leave_with_admin_down() {
        let (mut a, mut b) = pair();
        let t = Instant::now();
        handshake(&mut a, &mut b, t);
        assert_eq!(b.admin_down(), Some((State::Up, State::AdminDown, diag::ADMIN_DOWN)));
        assert_eq!(b.packet(false).state, State::AdminDown);
        assert_eq!(send(&b, &mut a, t).transition, Some((State::Up, State::Down, diag::NEIGHBOR_DOWN)));
        // An AdminDown session ignores what it hears.
        assert_eq!(send(&a, &mut b, t).transition, None);
        assert_eq!(b.state(), State::AdminDown);
    }

    #[test]
    fn packets_for_another_session_or_without_our_discriminator_are_refused() {
        let (mut a, mut b) = pair();
        let t = Instant::now();
        handshake(&mut a, &mut b, t);
        let mut p = b.packet(false);
        p.your_disc = 0;
        assert_eq!(a.receive(&p, t), Err(Refused::YourDiscriminatorZero));
        p.your_disc = 0x9999;
        assert_eq!(a.receive(&p, t), Err(Refused::UnknownSession));
        p.your_disc = a.local_disc();
        p.demand = true;
        assert_eq!(a.receive(&p, t), Err(Refused::Demand));
        assert_eq!(a.state(), State::Up, "nothing refused changed the session");
    }

    #[test]
    fn a_poll_is_answered_and_a_peer_that_wants_no_packets_gets_none() {
        let (mut a, mut b) = pair();
        let t = Instant::now();
        handshake(&mut a, &mut b, t);
        let mut p = b.packet(false);
        p.poll = true;
        assert!(a.receive(&p, t).unwrap().send_final);
        p.poll = false;
        p.required_min_rx_us = 0;
        a.receive(&p, t).unwrap();
        assert_eq!(a.tx_interval(), None);
        p.required_min_rx_us = 500_000;
        a.receive(&p, t).unwrap();
        assert_eq!(a.tx_interval(), Some(Duration::from_millis(500)), "the peer's slower receive rate wins");
    }

    #[test]
    fn jitter_stays_within_rfc_bounds() {
        let s = Session::new(FAST, 1);
        let one = Session::new(Timers { multiplier: 1, ..FAST }, 1);
        let i = Duration::from_millis(100);
        for r in 0..100 {
            assert!((Duration::from_millis(75)..=i).contains(&s.jittered(i, r)));
            assert!((Duration::from_millis(75)..=Duration::from_millis(90)).contains(&one.jittered(i, r)));
        }
    }

    proptest! {
        /// Any bytes: a packet or a reason, never a panic; what parses encodes back to its first 24 bytes (bar
        /// ignored bits).
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Packet::parse(&b) {
                let e = p.encode();
                prop_assert_eq!(&e[4..24], &b[4..24]);
                prop_assert_eq!(Packet::parse(&e), Ok(p));
            }
        }

        /// Valid packets with any field varied never panic the session; only a peer in Init that names us (or no one
        /// yet) brings a Down session Up in one packet (RFC 5880 section 6.8.6).
        #[test]
        fn a_session_survives_any_valid_packet(state in 0u8..4, your in any::<u32>(), tx in any::<u32>(),
                                              rx in any::<u32>(), mult in 1u8..=255, flags in any::<u8>()) {
            let mut s = Session::new(FAST, 42);
            let mut b = Session::new(FAST, 7).packet(false).encode();
            b[1] = (state << 6) | (flags & 0x3a);
            b[2] = mult;
            b[8..12].copy_from_slice(&your.to_be_bytes());
            b[12..16].copy_from_slice(&tx.to_be_bytes());
            b[16..20].copy_from_slice(&rx.to_be_bytes());
            let t = Instant::now();
            if let Ok(p) = Packet::parse(&b) {
                let _ = s.receive(&p, t);
                if s.state() == State::Up {
                    prop_assert!(p.state == State::Init && (p.your_disc == 0 || p.your_disc == 42), "{:?}", p);
                }
                let _ = s.tx_interval();
                let _ = s.expire(t + Duration::from_secs(1 << 20));
            }
        }
    }
}
