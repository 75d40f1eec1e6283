//! The neighbour table: address → MAC for IPv4 (ARP) and IPv6 (NDP), learnt as the kernel's neighbour subsystem
//! does (RFC 4861 §7.3), and hard to poison.
//!
//! - **What is believed.** An *answer* (an ARP reply or a solicited NA) counts only while the appliance has asked for
//!   that address (within `probe × probes`); anything else is a *claim* (an ARP request or NS aimed at one of our
//!   addresses or VIPs, a gratuitous ARP, an unsolicited NA). A claim for an unknown address is used at once but is
//!   *unconfirmed*: the appliance asks for the address right away and the first answer confirms (or corrects) it.
//! - **A changed MAC is confirmed before it replaces a confirmed one.** A claim (or a stray answer) naming another MAC
//!   for a confirmed entry is counted as a conflict and the old MAC is probed by unicast; if it answers, the claim is
//!   refused and nothing changed; only if it stays silent for `probes` probes does the claimed MAC take over, itself
//!   unconfirmed until it answers. One spoofed frame therefore never moves a confirmed neighbour, and moves an
//!   unknown one for at most one round trip.
//! - **Aging.** A confirmation lasts `reachable`; then the entry is re-confirmed by unicast probes (one per `probe`),
//!   and removed when `probes` go unanswered.
//!
//! Sans-I/O: events and `now` in, [`Action`]s out (frames to send, entries to set or forget).

use crate::wire::ethernet::Mac;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Timers of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// How long a confirmation lasts before unicast re-confirmation (the kernel's `base_reachable_time`: 30 s).
    pub reachable: Duration,
    /// Time between probes, and the longest an unconfirmed claim waits for its answer (default 1 s).
    pub probe: Duration,
    /// Probes before giving up (default 3, as the kernel's `ucast_solicit`/`mcast_solicit`).
    pub probes: u8,
}

impl Default for Timers {
    fn default() -> Self {
        Self { reachable: Duration::from_secs(30), probe: Duration::from_secs(1), probes: 3 }
    }
}

/// How a mapping was heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// An ARP reply or a solicited neighbour advertisement.
    Answer,
    /// Anything else that names a mapping: an ARP request or NS to one of our addresses or VIPs, a gratuitous ARP,
    /// an unsolicited NA.
    Claim,
}

/// What the slow path must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ask the segment for `IpAddr` (ARP broadcast, or NS to the solicited-node group).
    Ask(IpAddr),
    /// Probe the neighbour at its MAC (unicast ARP request or NS).
    Probe(IpAddr, Mac),
    /// The dataplane should use this MAC for the address from now on.
    Set(IpAddr, Mac),
    /// The address has no MAC any more.
    Forget(IpAddr),
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NeighStats {
    /// Addresses learnt (first MAC).
    pub learnt: u64,
    /// MAC changes that took effect (confirmed by an answer, or the old MAC silent).
    pub changed: u64,
    /// Claims or answers naming another MAC than the entry's (each counted once per entry and claim).
    pub conflicts: u64,
    /// Conflicts the old MAC settled by answering: nothing changed.
    pub refused: u64,
    /// Entries confirmed by an answer.
    pub confirmed: u64,
    /// Entries removed when probes went unanswered.
    pub expired: u64,
    /// Broadcast / multicast requests sent.
    pub asked: u64,
    /// Unicast probes sent.
    pub probes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Heard in a claim, not yet answered for: asked `sent` times, last at `last`.
    Unconfirmed { last: Instant, sent: u8 },
    /// Answered for at `at`.
    Reachable { at: Instant },
    /// Being re-confirmed by unicast: `sent` probes, last at `last`.
    Probing { last: Instant, sent: u8 },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: Mac,
    state: State,
    /// Another MAC claimed for the address, waiting for the old one to answer or stay silent.
    claim: Option<Mac>,
}

/// The table (see the module documentation).
#[derive(Debug, Default)]
pub struct NeighTable {
    entries: HashMap<IpAddr, Entry>,
    asked: HashMap<IpAddr, Instant>,
    timers: Timers,
    /// Counters.
    pub stats: NeighStats,
}

impl NeighTable {
    /// An empty table with these timers.
    pub fn new(timers: Timers) -> Self {
        Self { timers, ..Self::default() }
    }

    /// The MAC in use for `ip`, confirmed or not.
    pub fn get(&self, ip: &IpAddr) -> Option<Mac> {
        self.entries.get(ip).map(|e| e.mac)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True while `ip`'s MAC has been answered for within `reachable`.
    pub fn is_confirmed(&self, ip: &IpAddr) -> bool {
        matches!(self.entries.get(ip), Some(Entry { state: State::Reachable { .. }, .. }))
    }

    fn asked_recently(&self, ip: &IpAddr, now: Instant) -> bool {
        let window = self.timers.probe * u32::from(self.timers.probes.max(1));
        self.asked.get(ip).is_some_and(|t| now.saturating_duration_since(*t) <= window)
    }

    fn ask(&mut self, ip: IpAddr, now: Instant, out: &mut Vec<Action>) {
        self.asked.insert(ip, now);
        self.stats.asked += 1;
        out.push(Action::Ask(ip));
    }

    fn probe(&mut self, ip: IpAddr, mac: Mac, now: Instant, out: &mut Vec<Action>) {
        self.asked.insert(ip, now);
        self.stats.probes += 1;
        out.push(Action::Probe(ip, mac));
    }

    /// Resolve `ip` now unless it is known or was asked for within `probe / 4` (a burst of held packets asks once).
    pub fn resolve(&mut self, ip: IpAddr, now: Instant, out: &mut Vec<Action>) {
        if self.entries.contains_key(&ip) {
            return;
        }
        if self.asked.get(&ip).is_some_and(|t| now.saturating_duration_since(*t) < self.timers.probe / 4) {
            return;
        }
        self.ask(ip, now, out);
    }

    /// `mac` was heard for `ip` (the caller checked that `ip` lies in one of the port's subnets and is not ours).
    pub fn heard(&mut self, ip: IpAddr, mac: Mac, how: Heard, now: Instant, out: &mut Vec<Action>) {
        if ip.is_unspecified() || ip.is_multicast() || mac == [0; 6] || mac[0] & 1 != 0 {
            return;
        }
        let answer = how == Heard::Answer && self.asked_recently(&ip, now);
        let Some(e) = self.entries.get(&ip).copied() else {
            self.entries.insert(
                ip,
                Entry {
                    mac,
                    state: if answer {
                        State::Reachable { at: now }
                    } else {
                        State::Unconfirmed { last: now, sent: 1 }
                    },
                    claim: None,
                },
            );
            self.stats.learnt += 1;
            out.push(Action::Set(ip, mac));
            if !answer {
                self.ask(ip, now, out);
            } else {
                self.stats.confirmed += 1;
            }
            return;
        };
        if e.mac == mac {
            if answer {
                if e.claim.is_some() {
                    self.stats.refused += 1;
                }
                self.stats.confirmed += 1;
                self.entries.insert(ip, Entry { mac, state: State::Reachable { at: now }, claim: None });
            }
            return;
        }
        // Another MAC than the entry's.
        if answer && matches!(e.state, State::Unconfirmed { .. }) {
            // We asked about an unconfirmed claim: the answer settles it.
            self.stats.changed += 1;
            self.stats.confirmed += 1;
            self.entries.insert(ip, Entry { mac, state: State::Reachable { at: now }, claim: None });
            out.push(Action::Set(ip, mac));
            return;
        }
        if e.claim != Some(mac) {
            self.stats.conflicts += 1;
        }
        let mut e = Entry { claim: Some(mac), ..e };
        match e.state {
            State::Reachable { .. } => {
                // Ask the confirmed owner first.
                e.state = State::Probing { last: now, sent: 1 };
                self.probe(ip, e.mac, now, out);
            }
            State::Unconfirmed { .. } => {
                if !self.asked_recently(&ip, now) {
                    self.ask(ip, now, out);
                }
            }
            State::Probing { .. } => {}
        }
        self.entries.insert(ip, e);
    }

    /// Timers: re-confirm entries whose confirmation aged, repeat unanswered requests and probes, give up on those
    /// that stay silent.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Action>) {
        let t = self.timers;
        let due = |last: Instant| now.saturating_duration_since(last) >= t.probe;
        let mut ips: Vec<IpAddr> = self.entries.keys().copied().collect();
        ips.sort_unstable();
        for ip in ips {
            let Some(e) = self.entries.get(&ip).copied() else { continue };
            match e.state {
                State::Reachable { at } if now.saturating_duration_since(at) >= t.reachable => {
                    self.entries.insert(ip, Entry { state: State::Probing { last: now, sent: 1 }, ..e });
                    self.probe(ip, e.mac, now, out);
                }
                State::Reachable { .. } => {}
                State::Unconfirmed { last, sent } if due(last) => {
                    if sent < t.probes {
                        self.entries.insert(ip, Entry { state: State::Unconfirmed { last: now, sent: sent + 1 }, ..e });
                        self.ask(ip, now, out);
                    } else {
                        self.entries.remove(&ip);
                        self.stats.expired += 1;
                        out.push(Action::Forget(ip));
                    }
                }
                State::Probing { last, sent } if due(last) => {
                    if sent < t.probes {
                        self.entries.insert(ip, Entry { state: State::Probing { last: now, sent: sent + 1 }, ..e });
                        self.probe(ip, e.mac, now, out);
                    } else if let Some(c) = e.claim {
                        // The old MAC stayed silent: the claimant takes over, unconfirmed until it answers.
                        self.stats.changed += 1;
                        self.entries.insert(
                            ip,
                            Entry { mac: c, state: State::Unconfirmed { last: now, sent: 1 }, claim: None },
                        );
                        out.push(Action::Set(ip, c));
                        self.ask(ip, now, out);
                    } else {
                        self.entries.remove(&ip);
                        self.stats.expired += 1;
                        out.push(Action::Forget(ip));
                    }
                }
                State::Unconfirmed { .. } | State::Probing { .. } => {}
            }
        }
        self.asked.retain(|_, at| now.saturating_duration_since(*at) <= t.probe * u32::from(t.probes.max(1)) * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: Mac = [2, 0, 0, 0, 0, 0x10];
    const FAKE: Mac = [2, 0, 0, 0, 0, 0xee];

    fn ip() -> IpAddr {
        "198.18.0.10".parse().unwrap()
    }

    fn t() -> NeighTable {
        NeighTable::new(Timers { reachable: Duration::from_secs(30), probe: Duration::from_millis(1000), probes: 3 })
    }

    /// The reported attack: a client known and confirmed, then one spoofed claim. Nothing changes; the old MAC is
    /// probed by unicast and its answer refuses the claim.
    #[test]
    fn one_spoofed_claim_never_moves_a_confirmed_neighbour() {
        let mut n = t();
        let t0 = Instant::now();
        let mut out = Vec::new();
        n.heard(ip(), REAL, Heard::Claim, t0, &mut out);
        assert_eq!(out, vec![Action::Set(ip(), REAL), Action::Ask(ip())], "used at once, asked about at once");
        out.clear();
        n.heard(ip(), REAL, Heard::Answer, t0 + Duration::from_millis(1), &mut out);
        assert!(n.is_confirmed(&ip()) && out.is_empty());
        n.heard(ip(), FAKE, Heard::Claim, t0 + Duration::from_secs(5), &mut out);
        assert_eq!(out, vec![Action::Probe(ip(), REAL)], "the confirmed owner is asked; nothing set");
        assert_eq!(n.get(&ip()), Some(REAL));
        out.clear();
        n.heard(ip(), REAL, Heard::Answer, t0 + Duration::from_millis(5001), &mut out);
        assert!(out.is_empty());
        assert_eq!((n.get(&ip()), n.stats.conflicts, n.stats.refused), (Some(REAL), 1, 1));
        // The spoofer may answer too: still not moved while the owner keeps answering.
        n.heard(ip(), FAKE, Heard::Answer, t0 + Duration::from_millis(5002), &mut out);
        n.heard(ip(), REAL, Heard::Answer, t0 + Duration::from_millis(5003), &mut out);
        assert_eq!(n.get(&ip()), Some(REAL));
    }

    /// A spoofed claim for an address the appliance does not know yet is used for at most one round trip: the real
    /// owner's answer to the request sent at once corrects it.
    #[test]
    fn a_spoofed_first_claim_lasts_one_round_trip() {
        let mut n = t();
        let t0 = Instant::now();
        let mut out = Vec::new();
        n.heard(ip(), FAKE, Heard::Claim, t0, &mut out);
        assert_eq!(out, vec![Action::Set(ip(), FAKE), Action::Ask(ip())]);
        out.clear();
        n.heard(ip(), REAL, Heard::Answer, t0 + Duration::from_millis(1), &mut out);
        assert_eq!(out, vec![Action::Set(ip(), REAL)]);
        assert!(n.is_confirmed(&ip()));
    }

    /// An answer nobody asked for is only a claim.
    #[test]
    fn unasked_answers_are_claims() {
        let mut n = t();
        let t0 = Instant::now();
        let mut out = Vec::new();
        n.heard(ip(), FAKE, Heard::Answer, t0, &mut out);
        assert!(!n.is_confirmed(&ip()), "not asked for: unconfirmed");
    }

    /// A host that really moved to another MAC: the old MAC stays silent through the probes, then the new one takes
    /// over (unconfirmed, asked about), and its answer confirms it.
    #[test]
    fn a_real_move_takes_over_once_the_old_mac_is_silent() {
        let mut n = t();
        let t0 = Instant::now();
        let mut out = Vec::new();
        n.heard(ip(), REAL, Heard::Claim, t0, &mut out);
        n.heard(ip(), REAL, Heard::Answer, t0, &mut out);
        out.clear();
        n.heard(ip(), FAKE, Heard::Claim, t0 + Duration::from_secs(1), &mut out);
        for s in 2..=4 {
            n.poll(t0 + Duration::from_secs(s), &mut out);
        }
        assert_eq!(n.get(&ip()), Some(FAKE), "after 3 silent probes: {out:?}");
        assert!(out.contains(&Action::Set(ip(), FAKE)) && out.contains(&Action::Ask(ip())));
        n.heard(ip(), FAKE, Heard::Answer, t0 + Duration::from_millis(4001), &mut out);
        assert!(n.is_confirmed(&ip()));
        assert_eq!((n.stats.changed, n.stats.conflicts), (1, 1));
    }

    /// Aging: a confirmation lasts `reachable`, then unicast probes; an answer confirms again, silence expires it.
    #[test]
    fn entries_age_into_probes_and_expire_when_silent() {
        let mut n = t();
        let t0 = Instant::now();
        let mut out = Vec::new();
        n.heard(ip(), REAL, Heard::Claim, t0, &mut out);
        n.heard(ip(), REAL, Heard::Answer, t0, &mut out);
        out.clear();
        n.poll(t0 + Duration::from_secs(29), &mut out);
        assert!(out.is_empty());
        n.poll(t0 + Duration::from_secs(30), &mut out);
        assert_eq!(out, vec![Action::Probe(ip(), REAL)]);
        n.heard(ip(), REAL, Heard::Answer, t0 + Duration::from_millis(30_001), &mut out);
        assert!(n.is_confirmed(&ip()));
        out.clear();
        for s in [60, 61, 62, 63, 64] {
            n.poll(t0 + Duration::from_secs(s), &mut out);
        }
        assert_eq!(out.last(), Some(&Action::Forget(ip())), "{out:?}");
        assert_eq!(n.get(&ip()), None);
        assert_eq!(n.stats.expired, 1);
    }
}
