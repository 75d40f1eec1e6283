//! The session's decisions without sockets or timers: what the peer's OPEN and its answer to ours mean, what both
//! sides agreed, what a message in Established asks of us, and which UPDATEs take the peer from the routes it has to
//! the routes it should have. [`super::session`] does the I/O around them; these are unit-tested here.

use super::session::{PeerConfig, Routes};
use super::wire::{self, Afi, Attributes, Message, Open, Prefix};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Prefixes per UPDATE.
const CHUNK: usize = 200;

/// Why a session ends, and the NOTIFICATION (code, subcode, data) to send first, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The NOTIFICATION to send (none when the peer sent one).
    pub notification: Option<(u8, u8, Vec<u8>)>,
    /// For the status and the log.
    pub reason: String,
}

fn refuse(code: u8, subcode: u8, reason: impl Into<String>) -> Refusal {
    Refusal { notification: Some((code, subcode, Vec::new())), reason: reason.into() }
}

fn undecodable(e: wire::Error, what: &str) -> Refusal {
    Refusal { reason: format!("{what}: {e}"), notification: Some((e.code, e.subcode, e.data)) }
}

fn their_notification(code: u8, subcode: u8, data: &[u8]) -> Refusal {
    let shutdown = code == wire::notify::CEASE
        && (subcode == wire::notify::CEASE_SHUTDOWN || subcode == wire::notify::CEASE_RESET);
    // A shutdown or reset carries its operator's words after a length octet (RFC 9003).
    let text = if shutdown {
        wire::shutdown_communication(data).map(|t| format!("\"{}\"", t.escape_debug())).unwrap_or_default().into()
    } else {
        String::from_utf8_lossy(data)
    };
    let reason = if text.is_empty() {
        format!("peer sent NOTIFICATION {code}/{subcode}")
    } else {
        format!("peer sent NOTIFICATION {code}/{subcode} {text}")
    };
    Refusal { notification: None, reason }
}

/// The Cease NOTIFICATION a stopping session ends with: administrative shutdown, saying why (RFC 9003).
pub fn goodbye() -> Vec<u8> {
    wire::cease_with_communication(wire::notify::CEASE_SHUTDOWN, "edgelb stopping")
}

/// OpenSent: the first message from the peer must be an OPEN from the configured AS with an identifier not ours.
pub fn check_open(cfg: &PeerConfig, m: Result<Message, wire::Error>) -> Result<Open, Refusal> {
    let theirs = match m {
        Ok(Message::Open(o)) => o,
        Ok(Message::Notification { code, subcode, data }) => return Err(their_notification(code, subcode, &data)),
        Ok(_) => return Err(refuse(wire::notify::FSM, 1, "peer did not start with OPEN")),
        Err(e) => return Err(undecodable(e, "bad OPEN")),
    };
    if theirs.asn != cfg.remote_as {
        let why = format!("peer AS {} is not the configured {}", theirs.asn, cfg.remote_as);
        return Err(refuse(wire::notify::OPEN, wire::notify::OPEN_PEER_AS, why));
    }
    if theirs.bgp_id == cfg.router_id {
        return Err(refuse(wire::notify::OPEN, wire::notify::OPEN_BGP_ID, "peer has our BGP identifier"));
    }
    Ok(theirs)
}

/// Connection collision (RFC 4271 6.8), once the peer's identifier is known: true when our current connection gives
/// way to the one the peer opened meanwhile (ours is the lower identifier), false when we keep ours.
pub fn yield_to_theirs(ours: Ipv4Addr, theirs: Ipv4Addr) -> bool {
    u32::from(ours) < u32::from(theirs)
}

/// What both sides agreed in their OPENs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Hold time, seconds (0: no hold timer and no keepalives).
    pub hold: u16,
    /// Keepalive interval (a third of the hold time, at least 1 s).
    pub keepalive_every: Duration,
    /// Families to announce: both sides do them and we have a next hop for them.
    pub families: Vec<Afi>,
    /// A family both sides do but we have no next hop for (said in the status, not announced).
    pub missing_next_hop: Option<Afi>,
}

/// The smaller hold time; the families both sides do (IPv4 unicast alone without any multiprotocol capability, RFC
/// 4760), less those we have no next hop for on a session whose local address is `local`.
pub fn negotiate(cfg: &PeerConfig, theirs: &Open, local: IpAddr) -> Negotiated {
    let hold = cfg.hold_time.min(theirs.hold_time);
    let ours = [Afi::Ipv4, Afi::Ipv6];
    let mut families: Vec<Afi> = if theirs.caps.families.is_empty() {
        vec![Afi::Ipv4]
    } else {
        ours.iter().copied().filter(|f| theirs.caps.families.contains(f)).collect()
    };
    let has_next_hop = |f: &Afi| match f {
        Afi::Ipv4 => cfg.next_hop_v4.is_some() || local.is_ipv4(),
        Afi::Ipv6 => cfg.next_hop_v6.is_some() || local.is_ipv6(),
    };
    let missing_next_hop = families.iter().copied().find(|f| !has_next_hop(f));
    families.retain(has_next_hop);
    Negotiated { hold, keepalive_every: Duration::from_secs(u64::from((hold / 3).max(1))), families, missing_next_hop }
}

/// OpenConfirm: the peer's answer to our KEEPALIVE must be a KEEPALIVE.
pub fn check_confirm(m: Result<Message, wire::Error>) -> Result<(), Refusal> {
    match m {
        Ok(Message::Keepalive) => Ok(()),
        Ok(Message::Notification { code, subcode, data }) => Err(their_notification(code, subcode, &data)),
        _ => Err(refuse(wire::notify::FSM, 2, "no KEEPALIVE after OPEN")),
    }
}

/// What a message received in Established asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    /// Nothing (a KEEPALIVE: the hold timer restarts anyway).
    Nothing,
    /// An UPDATE: counted, never installed.
    Received {
        /// Prefixes announced.
        announced: usize,
        /// Attributes treated as withdraw (RFC 7606).
        treat_as_withdraw: usize,
    },
    /// ROUTE-REFRESH for one family: send that family's table again (RFC 2918 §4; one we do not have is ignored).
    Refresh(Afi),
    /// The session ends.
    End(Refusal),
}

/// Established: the reaction to one received message.
pub fn on_established(m: Result<Message, wire::Error>) -> Reaction {
    match m {
        Ok(Message::Keepalive) => Reaction::Nothing,
        Ok(Message::Update { announced, treat_as_withdraw, .. }) => Reaction::Received { announced, treat_as_withdraw },
        Ok(Message::RouteRefresh(Some(afi))) => Reaction::Refresh(afi),
        // A family that is not IPv4 or IPv6 unicast: never advertised, so ignored (RFC 2918 §4).
        Ok(Message::RouteRefresh(None)) => Reaction::Nothing,
        Ok(Message::Notification { code, subcode, data }) => Reaction::End(their_notification(code, subcode, &data)),
        Ok(Message::Open(_)) => Reaction::End(refuse(wire::notify::FSM, 3, "OPEN in Established")),
        Err(e) => Reaction::End(undecodable(e, "bad message")),
    }
}

/// The path attributes of our routes of one family on a session whose local address is `local`.
pub fn attributes(cfg: &PeerConfig, local: IpAddr, afi: Afi, graceful_shutdown: bool) -> Attributes {
    let ebgp = cfg.remote_as != cfg.local_as;
    let mut communities = cfg.communities.clone();
    if graceful_shutdown {
        communities.push(wire::GRACEFUL_SHUTDOWN);
    }
    Attributes {
        as_path: if ebgp { vec![cfg.local_as] } else { Vec::new() },
        next_hop: match afi {
            Afi::Ipv4 => cfg.next_hop_v4.map(IpAddr::V4).or(local.is_ipv4().then_some(local)),
            Afi::Ipv6 => cfg.next_hop_v6.map(IpAddr::V6).or(local.is_ipv6().then_some(local)),
        },
        med: cfg.med,
        local_pref: if ebgp { None } else { Some(cfg.local_pref.unwrap_or(100)) },
        communities,
        large_communities: cfg.large_communities.clone(),
    }
}

/// The family of a prefix.
pub fn family_of(p: &Prefix) -> Afi {
    if p.0.is_ipv4() {
        Afi::Ipv4
    } else {
        Afi::Ipv6
    }
}

/// The session's announcing side: the peer's configuration, the session's local address and the families agreed.
#[derive(Debug, Clone)]
pub struct Announcer<'a> {
    /// The peer.
    pub cfg: &'a PeerConfig,
    /// The session's local address (the default next hop).
    pub local: IpAddr,
    /// Families agreed and announceable.
    pub families: &'a [Afi],
}

impl Announcer<'_> {
    fn of(&self, ps: &BTreeSet<Prefix>, afi: Afi) -> Vec<Prefix> {
        ps.iter().filter(|p| family_of(p) == afi).copied().collect()
    }

    fn announce(&self, out: &mut Vec<Vec<u8>>, afi: Afi, ps: &[Prefix], graceful_shutdown: bool) {
        for chunk in ps.chunks(CHUNK) {
            out.push(wire::announce(afi, chunk, &attributes(self.cfg, self.local, afi, graceful_shutdown)));
        }
    }

    /// The routes of `want` this session announces (its families only).
    pub fn restrict(&self, want: &Routes) -> Routes {
        Routes {
            prefixes: want.prefixes.iter().filter(|p| self.families.contains(&family_of(p))).copied().collect(),
            graceful_shutdown: want.graceful_shutdown,
        }
    }

    /// The whole table, as first sent.
    pub fn table(&self, routes: &Routes) -> Vec<Vec<u8>> {
        self.families.iter().flat_map(|&afi| self.table_of(routes, afi)).collect()
    }

    /// The table of one family, as a ROUTE-REFRESH for it asks; nothing when the session does not carry it.
    pub fn table_of(&self, routes: &Routes, afi: Afi) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if self.families.contains(&afi) {
            self.announce(&mut out, afi, &self.of(&routes.prefixes, afi), routes.graceful_shutdown);
        }
        out
    }

    /// The UPDATEs that take the peer from `sent` to `want` (restricted to this session's families), and what it
    /// then has: withdrawals of what went, announcements of what came (of everything when the graceful-shutdown tag
    /// changed).
    pub fn changes(&self, sent: &Routes, want: &Routes) -> (Vec<Vec<u8>>, Routes) {
        let want = self.restrict(want);
        let gone: BTreeSet<Prefix> = sent.prefixes.difference(&want.prefixes).copied().collect();
        let new: BTreeSet<Prefix> = if want.graceful_shutdown != sent.graceful_shutdown {
            want.prefixes.clone()
        } else {
            want.prefixes.difference(&sent.prefixes).copied().collect()
        };
        let mut out = Vec::new();
        for &afi in self.families {
            for chunk in self.of(&gone, afi).chunks(CHUNK) {
                out.push(wire::withdraw(afi, chunk));
            }
            self.announce(&mut out, afi, &self.of(&new, afi), want.graceful_shutdown);
        }
        (out, want)
    }

    /// Withdrawals of everything `sent` (a clean stop).
    pub fn withdraw_all(&self, sent: &Routes) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for &afi in self.families {
            for chunk in self.of(&sent.prefixes, afi).chunks(CHUNK) {
                out.push(wire::withdraw(afi, chunk));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::wire::Capabilities;

    fn cfg() -> PeerConfig {
        let spec = crate::bgp::peer::PeerSpec { address: "198.18.0.2".into(), remote_as: 65001, ..Default::default() };
        crate::bgp::peer::validate(&spec, 65000, Ipv4Addr::new(198, 18, 0, 1)).unwrap()
    }

    fn open(asn: u32, id: [u8; 4], hold: u16, families: Vec<Afi>) -> Open {
        Open {
            asn,
            hold_time: hold,
            bgp_id: Ipv4Addr::from(id),
            caps: Capabilities { families, as4: Some(asn), ..Default::default() },
        }
    }

    fn decode(msgs: &[Vec<u8>]) -> Vec<Message> {
        msgs.iter().map(|m| wire::decode(m).unwrap()).collect()
    }

    #[test]
    fn opens_are_checked_against_the_configuration() {
        let c = cfg();
        assert!(check_open(&c, Ok(Message::Open(open(65001, [198, 18, 0, 2], 90, vec![])))).is_ok());
        let wrong_as = check_open(&c, Ok(Message::Open(open(65002, [198, 18, 0, 2], 90, vec![])))).unwrap_err();
        assert_eq!(wrong_as.notification, Some((wire::notify::OPEN, wire::notify::OPEN_PEER_AS, vec![])));
        let our_id = check_open(&c, Ok(Message::Open(open(65001, [198, 18, 0, 1], 90, vec![])))).unwrap_err();
        assert_eq!(our_id.notification, Some((wire::notify::OPEN, wire::notify::OPEN_BGP_ID, vec![])));
        assert_eq!(
            check_open(&c, Ok(Message::Keepalive)).unwrap_err().notification,
            Some((wire::notify::FSM, 1, vec![]))
        );
        let theirs = check_open(&c, Ok(Message::Notification { code: 6, subcode: 2, data: vec![] })).unwrap_err();
        assert_eq!((theirs.notification, theirs.reason.as_str()), (None, "peer sent NOTIFICATION 6/2"));
    }

    #[test]
    fn the_lower_identifier_gives_way_in_a_collision() {
        assert!(yield_to_theirs(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)));
        assert!(!yield_to_theirs(Ipv4Addr::new(198, 18, 0, 3), Ipv4Addr::new(198, 18, 0, 2)));
    }

    #[test]
    fn negotiation_takes_the_smaller_hold_time_and_the_common_families_with_a_next_hop() {
        let c = cfg();
        let v4: IpAddr = "198.18.0.1".parse().unwrap();
        let n = negotiate(&c, &open(65001, [198, 18, 0, 2], 30, vec![Afi::Ipv4, Afi::Ipv6]), v4);
        assert_eq!((n.hold, n.keepalive_every), (30, Duration::from_secs(10)));
        // An IPv4 session without next_hop_v6: IPv6 is agreed but cannot be announced, and the status says so.
        assert_eq!((n.families, n.missing_next_hop), (vec![Afi::Ipv4], Some(Afi::Ipv6)));
        // No multiprotocol capability: IPv4 unicast only.
        assert_eq!(negotiate(&c, &open(65001, [198, 18, 0, 2], 90, vec![]), v4).families, vec![Afi::Ipv4]);
        // Hold time 0 on either side: no hold timer; keepalives are not sent (the interval is a floor only).
        let zero = negotiate(&c, &open(65001, [198, 18, 0, 2], 0, vec![Afi::Ipv4]), v4);
        assert_eq!(zero.hold, 0);
    }

    #[test]
    fn established_messages_have_their_reaction() {
        assert_eq!(on_established(Ok(Message::Keepalive)), Reaction::Nothing);
        assert_eq!(on_established(Ok(Message::RouteRefresh(Some(Afi::Ipv4)))), Reaction::Refresh(Afi::Ipv4));
        assert_eq!(on_established(Ok(Message::RouteRefresh(None))), Reaction::Nothing);
        // A Cease with a shutdown communication shows its text, not the length octet.
        let bye = Message::Notification { code: 6, subcode: 2, data: b"\x0fedgelb stopping".to_vec() };
        match on_established(Ok(bye)) {
            Reaction::End(r) => assert_eq!(r.reason, "peer sent NOTIFICATION 6/2 \"edgelb stopping\""),
            other => panic!("{other:?}"),
        }
        let upd = Message::Update { announced: 3, withdrawn: 1, treat_as_withdraw: 2, end_of_rib: None };
        assert_eq!(on_established(Ok(upd)), Reaction::Received { announced: 3, treat_as_withdraw: 2 });
        match on_established(Ok(Message::Open(open(65001, [1, 1, 1, 1], 90, vec![])))) {
            Reaction::End(r) => assert_eq!(r.notification, Some((wire::notify::FSM, 3, vec![]))),
            other => panic!("{other:?}"),
        }
        assert_eq!(check_confirm(Ok(Message::Keepalive)), Ok(()));
        assert_eq!(check_confirm(Ok(Message::RouteRefresh(None))).unwrap_err().notification, Some((5, 2, vec![])));
    }

    #[test]
    fn changes_withdraw_what_went_and_announce_what_came() {
        let c = cfg();
        let fams = [Afi::Ipv4];
        let a = Announcer { cfg: &c, local: "198.18.0.1".parse().unwrap(), families: &fams };
        let r = |ps: &[&str], gshut: bool| Routes {
            prefixes: ps
                .iter()
                .map(|p| (p.parse::<IpAddr>().unwrap(), if p.contains(':') { 128 } else { 32 }))
                .collect(),
            graceful_shutdown: gshut,
        };
        let sent = r(&["198.19.0.1", "198.19.0.2"], false);
        // 198.19.0.2 goes, 198.19.0.3 comes; the IPv6 VIP is not this session's family.
        let (msgs, now) = a.changes(&sent, &r(&["198.19.0.1", "198.19.0.3", "2001:db8:100::1"], false));
        assert_eq!(now, r(&["198.19.0.1", "198.19.0.3"], false));
        let kinds: Vec<(usize, usize)> = decode(&msgs)
            .into_iter()
            .map(|m| match m {
                Message::Update { announced, withdrawn, .. } => (announced, withdrawn),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, vec![(0, 1), (1, 0)]);
        // The graceful-shutdown tag changing re-announces everything.
        let (msgs, _) = a.changes(&now, &r(&["198.19.0.1", "198.19.0.3"], true));
        assert!(matches!(decode(&msgs)[..], [Message::Update { announced: 2, withdrawn: 0, .. }]), "{msgs:?}");
        // Nothing changed: nothing sent.
        assert!(a.changes(&now, &now).0.is_empty());
        assert!(matches!(decode(&a.withdraw_all(&now))[..], [Message::Update { withdrawn: 2, .. }]));
    }

    #[test]
    fn goodbye_is_a_cease_with_a_length_prefixed_communication() {
        let m = goodbye();
        assert_eq!(&m[19..], b"\x06\x02\x0fedgelb stopping");
    }

    #[test]
    fn route_refresh_resends_only_the_family_asked() {
        let c = cfg();
        let fams = [Afi::Ipv4, Afi::Ipv6];
        let a = Announcer { cfg: &c, local: "198.18.0.1".parse().unwrap(), families: &fams };
        let routes = Routes {
            prefixes: [("198.19.0.1".parse().unwrap(), 32), ("2001:db8:100::1".parse().unwrap(), 128)]
                .into_iter()
                .collect(),
            graceful_shutdown: false,
        };
        // Each UPDATE's family: IPv6 travels in MP_REACH (type 14), whose first two octets are the AFI.
        let family = |m: &[u8]| {
            let body = &m[19..];
            let wl = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let attrs = &body[4 + wl..];
            let mut i = 0;
            while i + 3 <= attrs.len() {
                let (flags, kind) = (attrs[i], attrs[i + 1]);
                let (len, hdr) = if flags & 0x10 != 0 {
                    (usize::from(u16::from_be_bytes([attrs[i + 2], attrs[i + 3]])), 4)
                } else {
                    (usize::from(attrs[i + 2]), 3)
                };
                if kind == 14 {
                    return u16::from_be_bytes([attrs[i + hdr], attrs[i + hdr + 1]]);
                }
                i += hdr + len;
            }
            1
        };
        let all: Vec<u16> = a.table(&routes).iter().map(|m| family(m)).collect();
        assert_eq!(all, vec![1, 2]);
        let v6: Vec<u16> = a.table_of(&routes, Afi::Ipv6).iter().map(|m| family(m)).collect();
        assert_eq!(v6, vec![2]);
        let v4: Vec<u16> = a.table_of(&routes, Afi::Ipv4).iter().map(|m| family(m)).collect();
        assert_eq!(v4, vec![1]);
        let only_v4 = Announcer { families: &fams[..1], ..a };
        assert!(only_v4.table_of(&routes, Afi::Ipv6).is_empty());
    }
}
