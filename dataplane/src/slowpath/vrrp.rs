//! VRRPv3 (RFC 5798) for the VIPs of a flat L2 segment: which appliance (or keepalived host) owns them. Sans-I/O:
//! the advertisement's codec ([`parse`], [`advert_frame`]) and one virtual router's state machine ([`Router`]) with
//! its timers, time passed in. The slow path feeds it the advertisements the workers hand over, asks it each poll
//! which adverts to send, and answers ARP and NDP for a router's VIPs only while it is Master (announcing them with
//! gratuitous ARP / unsolicited NA when it becomes Master).
//!
//! A virtual router is of one family: IPv4 adverts go to 224.0.0.18 from the port's IPv4 address, IPv6 adverts to
//! ff02::12 from the port's link-local address (EUI-64 of its MAC), both with TTL 255 and checked for it on receipt.
//! The frames leave from the port's own MAC (as keepalived without `use_vmac`).

use crate::model::PortId;
use crate::wire::checksum;
use crate::wire::ethernet::{ethertype, EthernetFrame, Mac, HEADER_LEN};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// VRRP's IP protocol number.
pub const PROTO: u8 = 112;
/// The IPv4 group adverts are sent to.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 group adverts are sent to.
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Length of the fixed part of an advertisement.
pub const HEADER: usize = 8;

/// Whether `dst` (16-byte form, IPv4 mapped) is VRRP's group of its family.
pub fn is_group(dst: &[u8; 16], v4: bool) -> bool {
    if v4 {
        dst[12..] == GROUP_V4.octets()
    } else {
        *dst == GROUP_V6.octets()
    }
}

/// Why an advertisement was not used: each is a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Shorter than its header and addresses, or not an IP packet we can read.
    Length,
    /// TTL or hop limit not 255.
    Ttl,
    /// Not version 3 or not an advertisement.
    Version,
    /// Checksum mismatch.
    Checksum,
    /// No virtual router of ours has this VRID on this port and family.
    UnknownRouter,
}

impl Refused {
    /// Every reason, for counters.
    pub const ALL: [Refused; 5] = [Self::Length, Self::Ttl, Self::Version, Self::Checksum, Self::UnknownRouter];

    /// The counter label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Length => "length",
            Self::Ttl => "ttl",
            Self::Version => "version",
            Self::Checksum => "checksum",
            Self::UnknownRouter => "unknown_router",
        }
    }
}

/// An advertisement's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advert {
    /// Virtual router id.
    pub vrid: u8,
    /// Sender's priority (0: the master is leaving).
    pub priority: u8,
    /// Maximum advertisement interval, centiseconds.
    pub interval_cs: u16,
    /// Number of addresses it carries.
    pub count: u8,
}

/// Decode an advertisement carried in an IP packet from `src` to `dst` (16-byte forms) with `ttl`; `v4` for IPv4.
///
/// # Errors
/// Why it is refused.
pub fn parse(vrrp: &[u8], src: &[u8; 16], dst: &[u8; 16], ttl: u8, v4: bool) -> Result<Advert, Refused> {
    if ttl != 255 {
        return Err(Refused::Ttl);
    }
    if vrrp.len() < HEADER {
        return Err(Refused::Length);
    }
    if vrrp[0] != 0x31 {
        return Err(Refused::Version);
    }
    let count = vrrp[3];
    let alen = if v4 { 4 } else { 16 };
    if vrrp.len() < HEADER + usize::from(count) * alen {
        return Err(Refused::Length);
    }
    if !checksum_ok(vrrp, src, dst, v4) {
        return Err(Refused::Checksum);
    }
    Ok(Advert { vrid: vrrp[1], priority: vrrp[2], interval_cs: u16::from_be_bytes([vrrp[4], vrrp[5]]) & 0x0fff, count })
}

fn pseudo(src: &[u8; 16], dst: &[u8; 16], len: usize, v4: bool) -> u64 {
    if v4 {
        let a = |x: &[u8; 16]| [x[12], x[13], x[14], x[15]];
        checksum::pseudo_v4(a(src), a(dst), PROTO, len as u16)
    } else {
        checksum::pseudo_v6(src, dst, PROTO, len as u32)
    }
}

/// The checksum covers the message and an IP pseudo-header, in both families (RFC 5798 section 5.2.8).
fn checksum_ok(vrrp: &[u8], src: &[u8; 16], dst: &[u8; 16], v4: bool) -> bool {
    checksum::finish(checksum::sum(pseudo(src, dst, vrrp.len(), v4), vrrp)) == 0
}

/// The IPv6 link-local address of a MAC (modified EUI-64, RFC 4291 appendix A).
pub fn link_local(mac: Mac) -> Ipv6Addr {
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]])
}

/// An Ethernet frame carrying an advertisement for `vips` (all of `src`'s family) from `src` at `mac`.
pub fn advert_frame(mac: Mac, src: IpAddr, vrid: u8, priority: u8, interval_cs: u16, vips: &[IpAddr]) -> Vec<u8> {
    let v4 = src.is_ipv4();
    let addrs: Vec<u8> = vips
        .iter()
        .filter(|a| a.is_ipv4() == v4)
        .flat_map(|a| match a {
            IpAddr::V4(x) => x.octets().to_vec(),
            IpAddr::V6(x) => x.octets().to_vec(),
        })
        .collect();
    let count = (addrs.len() / if v4 { 4 } else { 16 }) as u8;
    let mut vrrp = vec![0x31, vrid, priority, count];
    vrrp.extend_from_slice(&(interval_cs & 0x0fff).to_be_bytes());
    vrrp.extend_from_slice(&[0, 0]);
    vrrp.extend_from_slice(&addrs);
    let dst = if v4 { IpAddr::V4(GROUP_V4) } else { IpAddr::V6(GROUP_V6) };
    let c = checksum::finish(checksum::sum(
        pseudo(&crate::snapshot::addr16(src), &crate::snapshot::addr16(dst), vrrp.len(), v4),
        &vrrp,
    ));
    vrrp[6..8].copy_from_slice(&c.to_be_bytes());
    let (ip_len, et, dst_mac) = if v4 {
        (20, ethertype::IPV4, [0x01, 0x00, 0x5e, 0, 0, 0x12])
    } else {
        (40, ethertype::IPV6, [0x33, 0x33, 0, 0, 0, 0x12])
    };
    let mut f = vec![0u8; HEADER_LEN + ip_len + vrrp.len()];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst(dst_mac);
    e.set_src(mac);
    e.set_ethertype(et);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = crate::wire::ipv4::Ipv4Packet::new_unchecked(&mut f[HEADER_LEN..]);
            ip.set_version_and_header_len(20);
            ip.set_dscp_ecn(0xc0);
            ip.set_total_len((20 + vrrp.len()) as u16);
            ip.set_ident(0);
            ip.set_flags_frag(false, false, 0);
            ip.set_ttl(255);
            ip.set_protocol(PROTO);
            ip.set_src(s.octets());
            ip.set_dst(d.octets());
            ip.fill_checksum();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = crate::wire::ipv6::Ipv6Packet::new_unchecked(&mut f[HEADER_LEN..]);
            ip.set_ver_tc_flow(0xc0, 0);
            ip.set_payload_len(vrrp.len() as u16);
            ip.set_next_header(PROTO);
            ip.set_hop_limit(255);
            ip.set_src(s.octets());
            ip.set_dst(d.octets());
        }
        _ => {}
    }
    f[HEADER_LEN + ip_len..].copy_from_slice(&vrrp);
    f
}

/// One virtual router as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSpec {
    /// Name for status and logs.
    pub name: String,
    /// The port it runs on.
    pub port: PortId,
    /// Virtual router id, 1 to 255.
    pub vrid: u8,
    /// Priority, 1 to 254.
    pub priority: u8,
    /// Advertisement interval, centiseconds (1 to 4095).
    pub interval_cs: u16,
    /// Take over from a lower-priority master.
    pub preempt: bool,
    /// After start, how long a lower-priority master is tolerated before preempting.
    pub preempt_delay: Duration,
    /// The VIPs it owns, all of one family.
    pub vips: Vec<IpAddr>,
    /// Gratuitous ARPs / unsolicited NAs per VIP on becoming Master.
    pub garp_count: u8,
    /// Between them.
    pub garp_interval: Duration,
    /// Priority lost while one of its VIPs has no healthy backend (the result is at least 1).
    pub track_penalty: u8,
    /// Answer and announce from the virtual router MAC (00:00:5e:00:01:VRID for IPv4, 00:00:5e:00:02:VRID for IPv6,
    /// RFC 5798 section 7.3) instead of the port's own: the clients' neighbour entries need not change on a
    /// take-over, only the switches' forwarding tables.
    pub virtual_mac: bool,
}

/// The virtual router MAC of `vrid` (RFC 5798 section 7.3).
pub fn virtual_mac(vrid: u8, v4: bool) -> Mac {
    [0, 0, 0x5e, 0, if v4 { 1 } else { 2 }, vrid]
}

/// A virtual router's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// Not started, or stopped.
    #[default]
    Initialize,
    /// Another router is master; we answer nothing for the VIPs.
    Backup,
    /// We own the VIPs.
    Master,
}

/// A state change: from, to, and why.
pub type Transition = (State, State, &'static str);

/// A router's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Advertisements received and used.
    pub adverts_in: u64,
    /// Advertisements sent.
    pub adverts_out: u64,
    /// Times it became Master.
    pub became_master: u64,
    /// State changes.
    pub transitions: u64,
}

/// One virtual router (RFC 5798 section 6.4).
#[derive(Debug, Clone)]
pub struct Router {
    /// Its configuration.
    pub spec: RouterSpec,
    state: State,
    priority: u8,
    master_interval_cs: u16,
    down_at: Option<Instant>,
    advert_at: Option<Instant>,
    started: Instant,
    master: Option<IpAddr>,
    resigned: bool,
    /// Counters.
    pub stats: RouterStats,
}

fn cs(n: u32) -> Duration {
    Duration::from_millis(u64::from(n) * 10)
}

impl Router {
    /// A router in Initialize.
    pub fn new(spec: RouterSpec, now: Instant) -> Self {
        Self {
            priority: spec.priority,
            master_interval_cs: spec.interval_cs,
            spec,
            state: State::Initialize,
            down_at: None,
            advert_at: None,
            started: now,
            master: None,
            resigned: false,
            stats: RouterStats::default(),
        }
    }

    /// Its state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The priority it advertises now (after tracking, or 1 once it resigned).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The master's address as last heard (ours while Master).
    pub fn master(&self) -> Option<IpAddr> {
        self.master
    }

    /// Skew time (RFC 5798 section 6.1): lower priorities wait longer.
    fn skew(&self) -> Duration {
        cs((256 - u32::from(self.priority)) * u32::from(self.master_interval_cs) / 256)
    }

    /// Master down interval: three advertisement intervals and the skew.
    pub fn down_interval(&self) -> Duration {
        cs(3 * u32::from(self.master_interval_cs)) + self.skew()
    }

    fn set(&mut self, to: State, why: &'static str) -> Option<Transition> {
        let from = self.state;
        if from == to {
            return None;
        }
        self.state = to;
        self.stats.transitions += 1;
        if to == State::Master {
            self.stats.became_master += 1;
        }
        Some((from, to, why))
    }

    /// Start (RFC 5798 section 6.4.1): Backup, waiting the master down interval for a master's advertisement.
    pub fn start(&mut self, now: Instant) -> Option<Transition> {
        self.started = now;
        self.master_interval_cs = self.spec.interval_cs;
        self.down_at = Some(now + self.down_interval());
        self.advert_at = None;
        self.set(State::Backup, "started")
    }

    /// Whether a lower-priority master is to be preempted now.
    fn preempting(&self, now: Instant) -> bool {
        self.spec.preempt && !self.resigned && now.saturating_duration_since(self.started) >= self.spec.preempt_delay
    }

    /// An advertisement from `from`; `ours` is the address we advertise from (the tie-break of equal priorities).
    pub fn receive(&mut self, a: &Advert, from: IpAddr, ours: IpAddr, now: Instant) -> Option<Transition> {
        self.stats.adverts_in += 1;
        match self.state {
            State::Initialize => None,
            State::Backup => {
                if a.priority == 0 {
                    // The master leaves: take over after the skew time alone.
                    self.down_at = Some(now + self.skew());
                    self.master = None;
                } else if !self.preempting(now) || a.priority >= self.priority {
                    self.master_interval_cs = a.interval_cs.max(1);
                    self.down_at = Some(now + self.down_interval());
                    self.master = Some(from);
                }
                None
            }
            State::Master => {
                if a.priority == 0 {
                    self.advert_at = Some(now);
                    None
                } else if a.priority > self.priority || (a.priority == self.priority && higher(from, ours)) {
                    self.master_interval_cs = a.interval_cs.max(1);
                    self.down_at = Some(now + self.down_interval());
                    self.advert_at = None;
                    self.master = Some(from);
                    self.set(State::Backup, "a higher-priority master")
                } else {
                    None
                }
            }
        }
    }

    /// Timers at `now`: the transition, if any, and whether to send an advertisement now.
    pub fn poll(&mut self, now: Instant, ours: IpAddr) -> (Option<Transition>, bool) {
        match self.state {
            State::Backup if self.down_at.is_some_and(|d| now >= d) => {
                self.down_at = None;
                self.advert_at = Some(now + cs(u32::from(self.spec.interval_cs)));
                self.master = Some(ours);
                (self.set(State::Master, "no advertisement within the master down interval"), true)
            }
            State::Master if self.advert_at.is_none_or(|a| now >= a) => {
                self.advert_at = Some(now + cs(u32::from(self.spec.interval_cs)));
                (None, true)
            }
            _ => (None, false),
        }
    }

    /// The priority tracking asks for: the configured one, less the penalty while a VIP has no healthy backend.
    /// True when it changed (a Master then advertises at once, so a better backup preempts without waiting).
    pub fn track(&mut self, healthy: bool) -> bool {
        if self.resigned {
            return false;
        }
        let p = if healthy {
            self.spec.priority
        } else {
            self.spec.priority.saturating_sub(self.spec.track_penalty).max(1)
        };
        if p == self.priority {
            return false;
        }
        self.priority = p;
        if self.state == State::Master {
            self.advert_at = None;
        }
        true
    }

    /// Hand the VIPs over (the appliance drains): a Master says priority 0 (the caller sends the advert when this
    /// returns true) and becomes Backup; the router stays at priority 1 and preempts no one. Alone on the segment, it
    /// takes the VIPs back after the master down interval.
    pub fn resign(&mut self, now: Instant) -> (Option<Transition>, bool) {
        self.resigned = true;
        self.priority = 1;
        if self.state != State::Master {
            return (None, false);
        }
        self.down_at = Some(now + self.down_interval());
        self.advert_at = None;
        self.master = None;
        (self.set(State::Backup, "resigned (draining)"), true)
    }

    /// Stop: a Master's last advertisement has priority 0 (true: send it).
    pub fn stop(&mut self) -> (Option<Transition>, bool) {
        let was_master = self.state == State::Master;
        (self.set(State::Initialize, "stopped"), was_master)
    }
}

/// RFC 5798 section 6.4.3: on equal priority the larger primary address wins.
fn higher(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => u32::from(a) > u32::from(b),
        (IpAddr::V6(a), IpAddr::V6(b)) => u128::from(a) > u128::from(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [2, 0, 0, 0, 1, 0];

    fn spec(priority: u8) -> RouterSpec {
        RouterSpec {
            name: "front".into(),
            port: 0,
            vrid: 51,
            priority,
            interval_cs: 10,
            preempt: true,
            preempt_delay: Duration::ZERO,
            vips: vec!["198.19.0.1".parse().unwrap()],
            garp_count: 3,
            garp_interval: Duration::from_millis(100),
            track_penalty: 100,
            virtual_mac: false,
        }
    }

    fn advert(priority: u8) -> Advert {
        Advert { vrid: 51, priority, interval_cs: 10, count: 1 }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Decode a frame of ours as the slow path would.
    fn decode(f: &[u8]) -> Result<Advert, Refused> {
        let v4 = f[12..14] == [8, 0];
        let (src, dst, ttl, off) = if v4 {
            let m = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]).to_ipv6_mapped().octets();
            (m(26), m(30), f[22], 34)
        } else {
            (f[22..38].try_into().unwrap(), f[38..54].try_into().unwrap(), f[21], 54)
        };
        parse(&f[off..], &src, &dst, ttl, v4)
    }

    #[test]
    fn the_advert_layout_is_rfc_5798s_in_both_families() {
        let f = advert_frame(MAC, ip("198.18.0.1"), 51, 150, 10, &[ip("198.19.0.1"), ip("198.19.0.2")]);
        assert_eq!(&f[0..6], &[0x01, 0x00, 0x5e, 0, 0, 0x12]);
        assert_eq!((f[22], f[23]), (255, PROTO), "TTL 255, protocol 112");
        assert_eq!(&f[30..34], &[224, 0, 0, 18]);
        assert_eq!(&f[34..40], &[0x31, 51, 150, 2, 0, 10]);
        assert_eq!(&f[42..50], &[198, 19, 0, 1, 198, 19, 0, 2]);
        assert_eq!(decode(&f), Ok(Advert { vrid: 51, priority: 150, interval_cs: 10, count: 2 }));
        let ll = link_local(MAC);
        assert_eq!(ll, "fe80::ff:fe00:100".parse::<Ipv6Addr>().unwrap());
        let f = advert_frame(MAC, IpAddr::V6(ll), 52, 100, 100, &[ip("2001:db8:100::1")]);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 0x12]);
        assert_eq!((f[20], f[21]), (PROTO, 255));
        assert_eq!(decode(&f), Ok(Advert { vrid: 52, priority: 100, interval_cs: 100, count: 1 }));
    }

    #[test]
    fn bad_adverts_are_refused_with_their_reason() {
        let f = advert_frame(MAC, ip("198.18.0.1"), 51, 150, 10, &[ip("198.19.0.1")]);
        let with = |at: usize, v: u8| {
            let mut g = f.clone();
            g[at] = v;
            g
        };
        assert_eq!(decode(&with(22, 64)), Err(Refused::Ttl));
        assert_eq!(decode(&with(34, 0x21)), Err(Refused::Version), "VRRPv2");
        assert_eq!(decode(&with(36, 151)), Err(Refused::Checksum));
        assert_eq!(decode(&with(37, 9)), Err(Refused::Length), "nine addresses announced, one carried");
        assert_eq!(decode(&f[..40]), Err(Refused::Length));
    }

    #[test]
    fn alone_it_becomes_master_after_the_down_interval_and_advertises_each_interval() {
        let t = Instant::now();
        let mut r = Router::new(spec(150), t);
        assert_eq!(r.start(t), Some((State::Initialize, State::Backup, "started")));
        // 3 × 100 ms + (256 − 150) × 100 ms / 256 = 341 ms (centisecond steps: 340).
        assert_eq!(r.down_interval(), Duration::from_millis(340));
        let me = ip("198.18.0.1");
        assert_eq!(r.poll(t + Duration::from_millis(339), me), (None, false));
        let (tr, send) = r.poll(t + Duration::from_millis(340), me);
        assert_eq!((tr.map(|x| x.1), send), (Some(State::Master), true));
        assert_eq!(r.poll(t + Duration::from_millis(400), me), (None, false));
        assert_eq!(r.poll(t + Duration::from_millis(440), me), (None, true));
    }

    #[test]
    fn the_higher_priority_wins_and_preemption_takes_back() {
        let t = Instant::now();
        let (me, them) = (ip("198.18.0.1"), ip("198.18.0.2"));
        let mut r = Router::new(spec(100), t);
        r.start(t);
        // A master of 150 keeps us Backup, whatever the time.
        for i in 1..20 {
            assert_eq!(r.receive(&advert(150), them, me, t + Duration::from_millis(100 * i)), None);
            assert_eq!(r.poll(t + Duration::from_millis(100 * i), me).0, None);
        }
        assert_eq!((r.state(), r.master()), (State::Backup, Some(them)));
        // It leaves (priority 0): we take over after the skew time only (156 × 100 ms / 256 = 60 ms).
        let t1 = t + Duration::from_secs(2);
        r.receive(&advert(0), them, me, t1);
        assert_eq!(r.poll(t1 + Duration::from_millis(59), me).0, None);
        assert_eq!(r.poll(t1 + Duration::from_millis(60), me).0.map(|x| x.1), Some(State::Master));
        // A higher priority comes back: we yield at once.
        let back = r.receive(&advert(150), them, me, t1 + Duration::from_millis(100));
        assert_eq!(back, Some((State::Master, State::Backup, "a higher-priority master")));
        // A lower-priority master is preempted: its adverts do not hold our timer.
        let mut hi = Router::new(spec(150), t);
        hi.start(t);
        for i in 1..=3 {
            hi.receive(&advert(100), them, me, t + Duration::from_millis(100 * i));
        }
        assert_eq!(hi.poll(t + Duration::from_millis(340), me).0.map(|x| x.1), Some(State::Master));
        // Equal priority: the larger address stays master.
        assert_eq!(hi.receive(&advert(150), ip("198.18.0.0"), me, t + Duration::from_millis(400)), None);
        assert!(hi.receive(&advert(150), them, me, t + Duration::from_millis(500)).is_some());
    }

    #[test]
    fn without_preemption_or_within_the_delay_a_lower_master_is_kept() {
        let t = Instant::now();
        let (me, them) = (ip("198.18.0.1"), ip("198.18.0.2"));
        let mut r = Router::new(RouterSpec { preempt_delay: Duration::from_secs(1), ..spec(150) }, t);
        r.start(t);
        for i in 1..10 {
            r.receive(&advert(100), them, me, t + Duration::from_millis(100 * i));
            assert_eq!(r.poll(t + Duration::from_millis(100 * i), me).0, None, "within the preempt delay");
        }
        // Past the delay, the next down interval without a (higher) advert makes us master.
        let after = t + Duration::from_millis(1000);
        r.receive(&advert(100), them, me, after);
        assert_eq!(r.poll(after + Duration::from_millis(340), me).0.map(|x| x.1), Some(State::Master));
        let mut never = Router::new(RouterSpec { preempt: false, ..spec(150) }, t);
        never.start(t);
        for i in 1..50 {
            never.receive(&advert(100), them, me, t + Duration::from_millis(100 * i));
            assert_eq!(never.poll(t + Duration::from_millis(100 * i), me).0, None);
        }
    }

    #[test]
    fn tracking_and_resigning_lower_the_priority() {
        let t = Instant::now();
        let me = ip("198.18.0.1");
        let mut r = Router::new(spec(150), t);
        r.start(t);
        r.poll(t + Duration::from_secs(1), me);
        assert_eq!(r.state(), State::Master);
        assert!(r.track(false));
        assert_eq!(r.priority(), 50);
        assert_eq!(r.poll(t + Duration::from_millis(1001), me), (None, true), "advertised at once");
        assert!(!r.track(false));
        assert!(r.track(true));
        assert_eq!(r.priority(), 150);
        let (tr, send) = r.resign(t + Duration::from_secs(2));
        assert_eq!((tr.map(|x| x.1), send, r.priority()), (Some(State::Backup), true, 1));
        assert!(!r.track(true), "a resigned router stays at 1");
    }
}
