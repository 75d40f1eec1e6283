//! Which VIPs the appliance answers ARP and NDP for: every VIP, except those of a VRRP virtual router
//! ([`super::vrrp`]) that is not Master here and those governed by a Kubernetes Lease (one per VIP) that another
//! appliance holds. A VIP that becomes ours is announced: [`LEASE_GARPS`] gratuitous ARPs / unsolicited NAs
//! [`LEASE_GARP_EVERY`] apart for a Lease, the router's own count for VRRP. The slow path runs the routers: advertisements in ([`SlowPath::handle`]
//! hands them here), adverts out and the master's gratuitous ARP / unsolicited NA on each poll, priority following
//! the VIPs' health, and the hand-over when the appliance drains.

use super::vrrp::{self, Refused, Router, RouterSpec, State, Transition};
use super::{announcement, SlowPath, VrrpIp};
use crate::model::PortId;
use crate::wire::ethernet::Mac;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Announcements of a VIP whose Lease this appliance took.
pub const LEASE_GARPS: u8 = 3;
/// Between them.
pub const LEASE_GARP_EVERY: Duration = Duration::from_millis(100);

/// VIPs owned by Lease: those the Leases govern, those held here, and the announcements still due.
#[derive(Debug, Default)]
pub(super) struct Leased {
    managed: HashSet<IpAddr>,
    held: HashSet<IpAddr>,
    garps: Vec<(IpAddr, u8, Instant)>,
}

/// A virtual router on one of the slow path's ports.
#[derive(Debug)]
pub(super) struct Run {
    router: Router,
    /// Index of its port in the slow path.
    pi: usize,
    /// The address its adverts come from.
    src: IpAddr,
    /// Announcements still to send after becoming Master, and when the next is due.
    garps: (u8, Instant),
}

/// A virtual router's state as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpStatus {
    /// Its name.
    pub name: String,
    /// Virtual router id.
    pub vrid: u8,
    /// The port it runs on.
    pub port: PortId,
    /// IPv4 (else IPv6).
    pub v4: bool,
    /// Its state.
    pub state: State,
    /// Configured priority.
    pub priority: u8,
    /// The priority it advertises now (tracking, draining).
    pub effective_priority: u8,
    /// The master's address as last heard (ours while Master).
    pub master: Option<IpAddr>,
    /// Its VIPs.
    pub vips: Vec<IpAddr>,
    /// Counters.
    pub stats: vrrp::RouterStats,
}

impl SlowPath {
    /// Run these virtual routers (replacing any), each starting in Backup.
    ///
    /// # Errors
    /// A router names a port the slow path does not have, has no VIP, mixes families, or has no address to advertise
    /// from (an IPv4 router on a port without an IPv4 address).
    pub fn set_vrrp(&mut self, specs: Vec<RouterSpec>, now: Instant) -> Result<(), String> {
        let placed = specs.iter().map(|s| self.vrrp_place(s)).collect::<Result<Vec<_>, _>>()?;
        self.vrrp = Vec::with_capacity(specs.len());
        for (s, (pi, src)) in specs.into_iter().zip(placed) {
            self.vrrp_start(s, pi, src, now);
        }
        Ok(())
    }

    /// Change the set of virtual routers while they run: a router whose spec is unchanged keeps its state, a removed
    /// Master's last advert says priority 0 (the backup takes over at once), a new one starts in Backup. Nothing
    /// changes when a spec is refused.
    ///
    /// # Errors
    /// As [`SlowPath::set_vrrp`].
    pub fn update_vrrp(
        &mut self,
        specs: Vec<RouterSpec>,
        now: Instant,
        out: &mut impl FnMut(PortId, &[u8]),
    ) -> Result<(), String> {
        // Every new spec checked before anything changes.
        let mut plan = Vec::with_capacity(specs.len());
        for s in specs {
            match self.vrrp.iter().position(|r| r.router.spec == s) {
                Some(i) => plan.push((s, Err(i))),
                None => {
                    let placed = self.vrrp_place(&s)?;
                    plan.push((s, Ok(placed)));
                }
            }
        }
        let kept: Vec<usize> = plan.iter().filter_map(|(_, p)| p.err()).collect();
        for i in (0..self.vrrp.len()).filter(|i| !kept.contains(i)) {
            let (t, send) = self.vrrp[i].router.stop();
            if let Some(t) = t {
                self.vrrp_transitions.push((self.vrrp[i].router.spec.name.clone(), t));
            }
            if send {
                self.vrrp_send(i, 0, out);
            }
        }
        let mut old: Vec<Option<Run>> = std::mem::take(&mut self.vrrp).into_iter().map(Some).collect();
        for (s, p) in plan {
            match p {
                Err(i) => {
                    if let Some(run) = old.get_mut(i).and_then(Option::take) {
                        self.vrrp.push(run);
                    }
                }
                Ok((pi, src)) => self.vrrp_start(s, pi, src, now),
            }
        }
        Ok(())
    }

    /// Where a router runs: its port index and the address it advertises from.
    fn vrrp_place(&self, s: &RouterSpec) -> Result<(usize, IpAddr), String> {
        let pi = self.ports.iter().position(|p| p.port == s.port).ok_or(format!("{}: no port {}", s.name, s.port))?;
        let v4 = s.vips.first().ok_or(format!("{}: no VIP", s.name))?.is_ipv4();
        if s.vips.iter().any(|a| a.is_ipv4() != v4) {
            return Err(format!("{}: IPv4 and IPv6 VIPs in one virtual router (VRRPv3 runs one per family)", s.name));
        }
        let src = if v4 {
            self.ports[pi]
                .addrs
                .iter()
                .map(|(a, _)| *a)
                .find(IpAddr::is_ipv4)
                .ok_or(format!("{}: port {} has no IPv4 address to advertise from", s.name, s.port))?
        } else {
            IpAddr::V6(vrrp::link_local(self.ports[pi].mac))
        };
        Ok((pi, src))
    }

    fn vrrp_start(&mut self, s: RouterSpec, pi: usize, src: IpAddr, now: Instant) {
        let mut router = Router::new(s, now);
        if let Some(t) = router.start(now) {
            self.vrrp_transitions.push((router.spec.name.clone(), t));
        }
        self.vrrp.push(Run { router, pi, src, garps: (0, now) });
    }

    /// The MAC an answer for `a` on port index `pi` gives: the virtual router MAC of the Master router holding it
    /// there with `virtual_mac`, else the port's own.
    pub(super) fn answer_mac(&self, pi: usize, a: &IpAddr) -> Mac {
        self.vrrp
            .iter()
            .find(|r| r.pi == pi && r.router.state() == State::Master && r.router.spec.vips.contains(a))
            .map_or(self.ports[pi].mac, |r| self.router_mac(r))
    }

    /// The MAC a router's frames come from.
    fn router_mac(&self, r: &Run) -> Mac {
        if r.router.spec.virtual_mac {
            vrrp::virtual_mac(r.router.spec.vrid, r.src.is_ipv4())
        } else {
            self.ports[r.pi].mac
        }
    }

    /// Whether `a` is an address of a virtual router (a VIP or, on the backends' side, the gateway they route through).
    pub fn is_virtual(&self, a: &IpAddr) -> bool {
        self.vrrp.iter().any(|r| r.router.spec.vips.contains(a))
    }

    /// The virtual routers' addresses that are not VIPs of the snapshot (gateways): ARP for them must reach the slow
    /// path.
    pub fn virtual_addrs(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .vrrp
            .iter()
            .flat_map(|r| r.router.spec.vips.iter().copied())
            .filter(|a| !self.is_service_vip(a))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn is_service_vip(&self, a: &IpAddr) -> bool {
        match a {
            IpAddr::V4(v) => self.vips4.contains(v),
            IpAddr::V6(v) => self.vips6.contains(v),
        }
    }

    /// Whether the appliance answers for `vip`: yes unless a virtual router holds it and none is Master here, or a
    /// Lease governs it and another appliance holds that.
    pub fn owns(&self, vip: &IpAddr) -> bool {
        if let Some(l) = &self.leased {
            if l.managed.contains(vip) && !l.held.contains(vip) {
                return false;
            }
        }
        let mut held = self.vrrp.iter().filter(|r| r.router.spec.vips.contains(vip)).peekable();
        held.peek().is_none() || held.any(|r| r.router.state() == State::Master)
    }

    /// The VIPs of the snapshot another appliance owns now, sorted.
    pub fn unowned_vips(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .vips4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.vips6.iter().map(|a| IpAddr::V6(*a)))
            .filter(|a| !self.owns(a))
            .collect();
        v.sort_unstable();
        v
    }

    /// The VIP Leases (`None`: not in use): the VIPs they govern and those held here. A VIP newly held is announced.
    /// Returns the VIPs gained and lost, for the log.
    pub fn set_leased(
        &mut self,
        leases: Option<(HashSet<IpAddr>, HashSet<IpAddr>)>,
        now: Instant,
    ) -> (Vec<IpAddr>, Vec<IpAddr>) {
        let Some((managed, held)) = leases else {
            self.leased = None;
            return (Vec::new(), Vec::new());
        };
        let l = self.leased.get_or_insert_with(Leased::default);
        let mut gained: Vec<IpAddr> = held.difference(&l.held).copied().collect();
        let mut lost: Vec<IpAddr> = l.held.difference(&held).copied().collect();
        gained.sort_unstable();
        lost.sort_unstable();
        l.garps.retain(|(v, _, _)| held.contains(v));
        l.garps.extend(gained.iter().map(|v| (*v, LEASE_GARPS, now)));
        (l.managed, l.held) = (managed, held);
        (gained, lost)
    }

    /// The announcements due for VIPs taken by Lease, on every port.
    pub(super) fn lease_poll(&mut self, now: Instant, out: &mut impl FnMut(PortId, &[u8])) {
        let Some(l) = self.leased.as_mut() else { return };
        for (vip, left, next) in &mut l.garps {
            if *left == 0 || now < *next {
                continue;
            }
            *left -= 1;
            *next = now + LEASE_GARP_EVERY;
            for p in &self.ports {
                out(p.port, &announcement(p.mac, *vip));
                self.stats.announcements += 1;
            }
        }
        l.garps.retain(|(_, left, _)| *left > 0);
    }

    /// An advertisement received on port index `pi`, its IP layer read by `vrrp_ip`.
    pub(super) fn vrrp_frame(&mut self, pi: usize, ip: Result<VrrpIp<'_>, Refused>, now: Instant) {
        match ip.and_then(|ip| self.vrrp_receive(pi, ip, now)) {
            Ok(()) => {}
            Err(r) => {
                if let Some(i) = Refused::ALL.iter().position(|x| *x == r) {
                    self.vrrp_refused[i] += 1;
                }
            }
        }
    }

    fn vrrp_receive(&mut self, pi: usize, ip: VrrpIp<'_>, now: Instant) -> Result<(), Refused> {
        let (v4, src, dst, ttl, payload) = ip;
        let advert = vrrp::parse(payload, &src, &dst, ttl, v4)?;
        let from = if v4 {
            IpAddr::V4(std::net::Ipv4Addr::new(src[12], src[13], src[14], src[15]))
        } else {
            IpAddr::V6(Ipv6Addr::from(src))
        };
        let run = self
            .vrrp
            .iter_mut()
            .find(|r| r.pi == pi && r.router.spec.vrid == advert.vrid && r.src.is_ipv4() == v4)
            .ok_or(Refused::UnknownRouter)?;
        if from == run.src {
            // Our own advert, looped back by the segment.
            return Ok(());
        }
        if let Some(t) = run.router.receive(&advert, from, run.src, now) {
            self.vrrp_transitions.push((run.router.spec.name.clone(), t));
        }
        Ok(())
    }

    /// The routers' timers: adverts, take-overs with their announcements, priority following the VIPs' health.
    pub(super) fn vrrp_poll(&mut self, now: Instant, out: &mut impl FnMut(PortId, &[u8])) {
        for i in 0..self.vrrp.len() {
            // Tracking looks at the router's VIPs only: a gateway address has no backends of its own.
            let healthy = self.vrrp[i]
                .router
                .spec
                .vips
                .iter()
                .filter(|v| self.is_service_vip(v))
                .all(|v| self.healthy_vips.contains(v));
            let r = &mut self.vrrp[i];
            r.router.track(healthy);
            let (t, send) = r.router.poll(now, r.src);
            if let Some(t) = t {
                if t.1 == State::Master {
                    r.garps = (r.router.spec.garp_count, now);
                }
                self.vrrp_transitions.push((r.router.spec.name.clone(), t));
            }
            if send {
                let priority = self.vrrp[i].router.priority();
                self.vrrp_send(i, priority, out);
            }
            self.vrrp_announce(i, now, out);
        }
    }

    fn vrrp_send(&mut self, i: usize, priority: u8, out: &mut impl FnMut(PortId, &[u8])) {
        let mac = self.router_mac(&self.vrrp[i]);
        let r = &mut self.vrrp[i];
        let s = &r.router.spec;
        out(self.ports[r.pi].port, &vrrp::advert_frame(mac, r.src, s.vrid, priority, s.interval_cs, &s.vips));
        r.router.stats.adverts_out += 1;
    }

    /// A new Master's gratuitous ARPs / unsolicited NAs, `garp_count` of them `garp_interval` apart.
    fn vrrp_announce(&mut self, i: usize, now: Instant, out: &mut impl FnMut(PortId, &[u8])) {
        let r = &mut self.vrrp[i];
        if r.garps.0 == 0 || now < r.garps.1 || r.router.state() != State::Master {
            return;
        }
        r.garps = (r.garps.0 - 1, now + r.router.spec.garp_interval);
        let r = &self.vrrp[i];
        let (port, mac) = (self.ports[r.pi].port, self.router_mac(r));
        for vip in &r.router.spec.vips {
            out(port, &announcement(mac, *vip));
            self.stats.announcements += 1;
        }
    }

    /// Hand every VIP over (the appliance drains): each Master says priority 0 and steps down to Backup at
    /// priority 1.
    pub fn vrrp_resign(&mut self, now: Instant, out: &mut impl FnMut(PortId, &[u8])) {
        for i in 0..self.vrrp.len() {
            let (t, send) = self.vrrp[i].router.resign(now);
            if let Some(t) = t {
                self.vrrp_transitions.push((self.vrrp[i].router.spec.name.clone(), t));
            }
            if send {
                self.vrrp_send(i, 0, out);
            }
        }
    }

    /// Stop every router; a Master's last advert says priority 0 so that the backup takes over at once.
    pub fn vrrp_stop(&mut self, out: &mut impl FnMut(PortId, &[u8])) {
        for i in 0..self.vrrp.len() {
            let (t, send) = self.vrrp[i].router.stop();
            if let Some(t) = t {
                self.vrrp_transitions.push((self.vrrp[i].router.spec.name.clone(), t));
            }
            if send {
                self.vrrp_send(i, 0, out);
            }
        }
    }

    /// The routers' states.
    pub fn vrrp_status(&self) -> Vec<VrrpStatus> {
        self.vrrp
            .iter()
            .map(|r| VrrpStatus {
                name: r.router.spec.name.clone(),
                vrid: r.router.spec.vrid,
                port: r.router.spec.port,
                v4: r.src.is_ipv4(),
                state: r.router.state(),
                priority: r.router.spec.priority,
                effective_priority: r.router.priority(),
                master: r.router.master(),
                vips: r.router.spec.vips.clone(),
                stats: r.router.stats,
            })
            .collect()
    }

    /// Advertisements refused, by reason.
    pub fn vrrp_refused(&self) -> Vec<(&'static str, u64)> {
        Refused::ALL.iter().zip(self.vrrp_refused).map(|(r, n)| (r.as_str(), n)).collect()
    }

    /// State changes since the last call, by router name.
    pub fn take_vrrp_transitions(&mut self) -> Vec<(String, Transition)> {
        std::mem::take(&mut self.vrrp_transitions)
    }
}
