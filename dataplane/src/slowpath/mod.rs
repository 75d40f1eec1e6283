//! The slow path: what the appliance answers for itself, off the workers' hot path.
//!
//! Workers hand it ARP frames, NDP messages and traffic for the appliance's own addresses (`Verdict::SlowPath`).
//! - **Own addresses** (a port's configured addresses): one `smoltcp` interface per port answers ARP, NDP and ICMP
//!   echo for them.
//! - **VIPs**: ARP requests for a VIP are answered here with the port's MAC (smoltcp interfaces hold at most 8
//!   addresses; an appliance holds many more VIPs), as are NDP solicitations for IPv6 VIPs. [`SlowPath::announce`]
//!   sends gratuitous ARP / unsolicited NA for every VIP. A VIP of a VRRP virtual router ([`vrrp`], run in
//!   `ownership`) is answered and announced only while that router is Master here.
//! - **Neighbours** ([`neigh`]): ARP and NDP for IPv4 and IPv6 alike. Mappings are believed as answers only when the
//!   appliance asked; claims (requests to our addresses and VIPs, gratuitous ARP, unsolicited NA) never replace a
//!   confirmed MAC unless the old one stays silent to unicast probes; confirmations age and are renewed by unicast.
//!   Next hops the dataplane needs ([`SlowPath::set_wanted`]) are asked for at once and then once a second (ARP
//!   broadcast, NS to the solicited-node group). [`SlowPath::take_changes`] hands the news to whoever rebuilds the
//!   snapshot.
//! - **Held packets** ([`SlowPath::hold`]): frames the workers rewrote for a next hop whose MAC is not known yet
//!   wait here (at most [`HOLD_PER_ADDRESS`] per address, [`HOLD_FOR`] long) while it is resolved, then leave with
//!   its MAC: the first SYN after a start and the packets after a restart are delayed by one exchange, not dropped.
//!
//! It runs on the daemon's thread, is driven by [`SlowPath::handle`] and [`SlowPath::poll`], and emits frames through
//! a callback; allocation here is fine (it is not the per-packet path of forwarded traffic).
//! IPv6: smoltcp answers NDP for the ports' own IPv6 addresses; solicitations for IPv6 VIPs are answered here and
//! unsolicited advertisements announce them.

pub mod neigh;
mod ownership;
pub mod vrrp;

pub use ownership::VrrpStatus;

use crate::model::{InterfaceSpec, PortId};
use crate::snapshot::DataplaneConfig;
use crate::wire::arp::{ArpPacket, OP_REPLY, OP_REQUEST};
use crate::wire::ethernet::{ethertype, parse_l2, EthernetFrame, Mac, BROADCAST, HEADER_LEN};
use neigh::{Action, Heard, NeighTable, Timers};
use smoltcp::iface::{Config as IfConfig, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// How often an unresolved next hop is asked for.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(1);
/// Packets held per unresolved next hop (the kernel's `unres_qlen` is 101 packets' worth of bytes; a few suffice
/// for the SYNs and first segments of the connections that find a next hop unresolved).
pub const HOLD_PER_ADDRESS: usize = 64;
/// Packets held in all.
pub const HOLD_TOTAL: usize = 4096;
/// How long a held packet waits for its next hop.
pub const HOLD_FOR: Duration = Duration::from_secs(3);

struct QueueDevice {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    mtu: usize,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.push_back(b);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _t: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((Rx(f), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _t: smoltcp::time::Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.mtu + HEADER_LEN;
        c
    }
}

struct PortSlow {
    port: PortId,
    mac: Mac,
    addrs: Vec<(IpAddr, u8)>,
    iface: Interface,
    dev: QueueDevice,
    sockets: SocketSet<'static>,
}

/// Counters of the slow path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowStats {
    /// Frames handed in by the workers.
    pub frames: u64,
    /// ARP requests and neighbour solicitations for VIPs answered.
    pub vip_arp_replies: u64,
    /// Frames smoltcp sent (answers for the appliance's own addresses).
    pub own_replies: u64,
    /// ARP requests and neighbour solicitations sent (to resolve, to confirm, to re-confirm).
    pub requests: u64,
    /// Packets held for a next hop's resolution.
    pub held: u64,
    /// Held packets sent on once their next hop was resolved.
    pub released: u64,
    /// Held packets dropped: their next hop stayed unresolved for [`HOLD_FOR`], or too many were waiting.
    pub held_dropped: u64,
    /// Gratuitous ARPs sent.
    pub announcements: u64,
    /// Frames on a port the slow path does not know.
    pub unknown_port: u64,
}

/// The appliance's slow path.
pub struct SlowPath {
    ports: Vec<PortSlow>,
    vips4: HashSet<Ipv4Addr>,
    vips6: HashSet<Ipv6Addr>,
    neigh: NeighTable,
    changes: Vec<(IpAddr, Option<Mac>)>,
    actions: Vec<Action>,
    held: HashMap<IpAddr, VecDeque<(PortId, Vec<u8>, Instant)>>,
    held_total: usize,
    releases: Vec<(PortId, Vec<u8>)>,
    wanted: Vec<IpAddr>,
    last_request: Option<Instant>,
    epoch: Instant,
    /// VRRP virtual routers (see [`ownership`]).
    vrrp: Vec<ownership::Run>,
    vrrp_refused: [u64; vrrp::Refused::ALL.len()],
    vrrp_transitions: Vec<(String, vrrp::Transition)>,
    /// VIPs with at least one active backend (VRRP tracking).
    healthy_vips: HashSet<IpAddr>,
    /// VIPs owned by Kubernetes Lease (`None`: not in use).
    leased: Option<ownership::Leased>,
    /// Addresses an operator asked about (`edgelbctl doctor`), each with the MAC that last answered and when.
    probes: HashMap<IpAddr, Option<(Mac, Instant)>>,
    /// Counters.
    pub stats: SlowStats,
}

impl std::fmt::Debug for SlowPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowPath").field("ports", &self.ports.len()).field("stats", &self.stats).finish()
    }
}

fn in_subnet(a: IpAddr, (p, l): (IpAddr, u8)) -> bool {
    match (a, p) {
        (IpAddr::V4(a), IpAddr::V4(p)) => {
            let m = if l == 0 { 0 } else { u32::MAX << (32 - u32::from(l.min(32))) };
            u32::from(a) & m == u32::from(p) & m
        }
        (IpAddr::V6(a), IpAddr::V6(p)) => {
            let m = if l == 0 { 0 } else { u128::MAX << (128 - u32::from(l.min(128))) };
            u128::from(a) & m == u128::from(p) & m
        }
        _ => false,
    }
}

fn port_slow(itf: &InterfaceSpec, now: smoltcp::time::Instant) -> PortSlow {
    let mut dev = QueueDevice { rx: VecDeque::new(), tx: VecDeque::new(), mtu: usize::from(itf.mtu) };
    let mut c = IfConfig::new(HardwareAddress::Ethernet(EthernetAddress(itf.mac)));
    c.random_seed = u64::from_le_bytes([itf.mac[0], itf.mac[1], itf.mac[2], itf.mac[3], itf.mac[4], itf.mac[5], 0, 1]);
    let mut iface = Interface::new(c, &mut dev, now);
    iface.update_ip_addrs(|a| {
        for (ip, l) in &itf.addrs {
            let _ = a.push(IpCidr::new(IpAddress::from(*ip), *l));
        }
        // A port with IPv6 has its link-local address too: routers solicit from theirs (Linux does, resolving a
        // global next hop), and the answer goes back on-link only when fe80::/64 is (a BGP next hop on this port
        // was otherwise never resolved).
        if itf.addrs.iter().any(|(a, _)| a.is_ipv6()) {
            let ll = IpAddress::Ipv6(vrrp::link_local(itf.mac));
            if !itf.addrs.iter().any(|(a, _)| IpAddress::from(*a) == ll) {
                let _ = a.push(IpCidr::new(ll, 64));
            }
        }
    });
    PortSlow { port: itf.port, mac: itf.mac, addrs: itf.addrs.clone(), iface, dev, sockets: SocketSet::new(vec![]) }
}

/// The IP layer of a VRRP advertisement: IPv4 (else IPv6), source and destination (16-byte form), TTL or hop limit,
/// and the VRRP message.
type VrrpIp<'a> = (bool, [u8; 16], [u8; 16], u8, &'a [u8]);

/// A frame's VRRP advertisement, read once: `None` when it is not one (IP protocol 112 to the family's group; no
/// IPv6 extension headers), an error when its IP header does not hold together.
fn vrrp_ip(frame: &[u8]) -> Option<Result<VrrpIp<'_>, vrrp::Refused>> {
    let l2 = parse_l2(frame).ok()?;
    let ip = &frame[l2.l3_offset..];
    let a16 = |o: usize| <[u8; 16]>::try_from(&ip[o..o + 16]).unwrap_or([0; 16]);
    match l2.ethertype {
        ethertype::IPV4 if ip.len() >= 20 && ip[9] == vrrp::PROTO && ip[16..20] == vrrp::GROUP_V4.octets() => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if ihl < 20 || total < ihl || total > ip.len() {
                return Some(Err(vrrp::Refused::Length));
            }
            let m = |o: usize| Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]).to_ipv6_mapped().octets();
            Some(Ok((true, m(12), m(16), ip[8], &ip[ihl..total])))
        }
        ethertype::IPV6 if ip.len() >= 40 && ip[6] == vrrp::PROTO && ip[24..40] == vrrp::GROUP_V6.octets() => {
            let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if 40 + len > ip.len() {
                return Some(Err(vrrp::Refused::Length));
            }
            Some(Ok((false, a16(8), a16(24), ip[7], &ip[40..40 + len])))
        }
        _ => None,
    }
}

/// A gratuitous ARP (IPv4) or unsolicited neighbour advertisement to all nodes (IPv6) saying `vip` is at `mac`.
fn announcement(mac: Mac, vip: IpAddr) -> Vec<u8> {
    match vip {
        IpAddr::V4(v) => arp_frame(BROADCAST, mac, OP_REQUEST, (mac, v), ([0; 6], v)),
        IpAddr::V6(v) => na_frame(mac, [0x33, 0x33, 0, 0, 0, 1], v, Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), false),
    }
}

/// An Ethernet/ARP frame.
fn arp_frame(dst: Mac, src: Mac, op: u16, sender: (Mac, Ipv4Addr), target: (Mac, Ipv4Addr)) -> Vec<u8> {
    let mut f = vec![0u8; HEADER_LEN + crate::wire::arp::LEN];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst(dst);
    e.set_src(src);
    e.set_ethertype(ethertype::ARP);
    let mut a = ArpPacket::new_unchecked(&mut f[HEADER_LEN..]);
    a.set_ethernet_ipv4();
    a.set_operation(op);
    a.set_sender(sender.0, sender.1.octets());
    a.set_target(target.0, target.1.octets());
    f
}

/// An Ethernet/IPv6 NDP message of 32 bytes (RFC 4861 §4.3, §4.4): ICMPv6 `kind` with `flags` in its first reserved
/// byte, `target`, and one link-layer address option of type `opt` carrying `src_mac`; hop limit 255.
#[allow(clippy::too_many_arguments)]
fn ndp_frame(
    kind: u8,
    flags: u8,
    opt: u8,
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
) -> Vec<u8> {
    let mut f = vec![0u8; HEADER_LEN + 40 + 32];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst(dst_mac);
    e.set_src(src_mac);
    e.set_ethertype(ethertype::IPV6);
    let mut ip = crate::wire::ipv6::Ipv6Packet::new_unchecked(&mut f[HEADER_LEN..]);
    ip.set_ver_tc_flow(0, 0);
    ip.set_payload_len(32);
    ip.set_next_header(crate::wire::proto::ICMPV6);
    ip.set_hop_limit(255);
    ip.set_src(src.octets());
    ip.set_dst(dst.octets());
    let icmp = &mut f[HEADER_LEN + 40..];
    icmp[0] = kind;
    icmp[4] = flags;
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = opt;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&src_mac);
    let acc = crate::wire::checksum::pseudo_v6(&src.octets(), &dst.octets(), crate::wire::proto::ICMPV6, 32);
    let c = crate::wire::checksum::finish(crate::wire::checksum::sum(acc, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    f
}

/// A neighbour advertisement for `target` at `src_mac`, from `target` to `dst`, override flag set, solicited flag as
/// given, with the target link-layer address option.
fn na_frame(src_mac: Mac, dst_mac: Mac, target: Ipv6Addr, dst: Ipv6Addr, solicited: bool) -> Vec<u8> {
    let flags = if solicited { 0x60 } else { 0x20 }; // S and O
    ndp_frame(136, flags, 2, src_mac, dst_mac, target, dst, target)
}

/// A neighbour solicitation for `target` from `src` (ours) with our link-layer address: to the solicited-node group
/// (RFC 4291 §2.7.1) to resolve, or unicast to `mac` to re-confirm.
fn ns_frame(src_mac: Mac, src: Ipv6Addr, target: Ipv6Addr, mac: Option<Mac>) -> Vec<u8> {
    let t = target.octets();
    let (dst, dst_mac) = match mac {
        Some(m) => (target, m),
        None => (
            Ipv6Addr::from([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15]]),
            [0x33, 0x33, 0xff, t[13], t[14], t[15]],
        ),
    };
    ndp_frame(135, 0, 1, src_mac, dst_mac, src, dst, target)
}

impl SlowPath {
    /// A slow path for the snapshot's interfaces and VIPs, with the default neighbour timers.
    pub fn new(cfg: &DataplaneConfig) -> Self {
        Self::with_timers(cfg, Timers::default())
    }

    /// A slow path with these neighbour timers.
    pub fn with_timers(cfg: &DataplaneConfig, timers: Timers) -> Self {
        let epoch = Instant::now();
        let now = smoltcp::time::Instant::from_millis(0);
        let mut s = Self {
            ports: cfg.interfaces.iter().map(|i| port_slow(i, now)).collect(),
            vips4: HashSet::new(),
            vips6: HashSet::new(),
            neigh: NeighTable::new(timers),
            changes: Vec::new(),
            actions: Vec::new(),
            held: HashMap::new(),
            held_total: 0,
            releases: Vec::new(),
            wanted: Vec::new(),
            last_request: None,
            epoch,
            vrrp: Vec::new(),
            vrrp_refused: [0; vrrp::Refused::ALL.len()],
            vrrp_transitions: Vec::new(),
            healthy_vips: HashSet::new(),
            leased: None,
            probes: HashMap::new(),
            stats: SlowStats::default(),
        };
        s.update(cfg);
        s
    }

    /// Take the VIPs of a new snapshot (interfaces are fixed for the daemon's lifetime).
    pub fn update(&mut self, cfg: &DataplaneConfig) {
        self.vips4 = cfg
            .services
            .iter()
            .filter(|s| s.v4)
            .map(|s| Ipv4Addr::new(s.vip[12], s.vip[13], s.vip[14], s.vip[15]))
            .collect();
        self.vips6 = cfg.services.iter().filter(|s| !s.v4).map(|s| Ipv6Addr::from(s.vip)).collect();
        self.healthy_vips = cfg
            .services
            .iter()
            .filter(|s| {
                s.backend_ids
                    .iter()
                    .filter_map(|id| cfg.backend(*id))
                    .any(|b| b.state == crate::model::BackendState::Active)
            })
            .map(|s| crate::snapshot::addr_from16(s.vip, s.v4))
            .collect();
    }

    /// Resolve `ip` now (a next hop a held packet waits for), unless it is known or was just asked for.
    pub fn want(&mut self, ip: IpAddr, now: Instant) {
        self.neigh.resolve(ip, now, &mut self.actions);
    }

    /// Next hops to resolve (asked for at the next poll, then once a second until known).
    pub fn set_wanted(&mut self, addrs: Vec<IpAddr>) {
        self.wanted = addrs;
        self.last_request = None;
    }

    /// Neighbour changes since the last call: a MAC to use from now on, or `None` when the address has none any more.
    pub fn take_changes(&mut self) -> Vec<(IpAddr, Option<Mac>)> {
        std::mem::take(&mut self.changes)
    }

    /// The MAC in use for `ip`.
    pub fn neighbour(&self, ip: &IpAddr) -> Option<Mac> {
        self.neigh.get(ip)
    }

    /// Ask who has each of `ips` (a broadcast ARP request or a multicast neighbour solicitation), whatever the
    /// neighbour table holds for them, static entries included: [`SlowPath::probed`] then says which MAC answered,
    /// so an operator can compare it with the MAC in use. Earlier probes are forgotten.
    pub fn probe(&mut self, ips: &[IpAddr], out: &mut impl FnMut(PortId, &[u8])) {
        self.probes = ips.iter().map(|ip| (*ip, None)).collect();
        for ip in ips {
            self.solicit(*ip, None, out);
        }
    }

    /// The addresses probed, each with the MAC that answered (or claimed it) since, and when.
    pub fn probed(&self) -> Vec<(IpAddr, Option<(Mac, Instant)>)> {
        let mut v: Vec<_> = self.probes.iter().map(|(a, m)| (*a, *m)).collect();
        v.sort_by_key(|(a, _)| *a);
        v
    }

    /// Counters of the neighbour table.
    pub fn neighbour_stats(&self) -> neigh::NeighStats {
        self.neigh.stats
    }

    /// Hold `frame` (rewritten, bound for `port`, its destination MAC to be filled in) until `via` is resolved; sent
    /// at once when it already is. Answers go to `out(port, frame)`.
    pub fn hold(&mut self, port: PortId, via: IpAddr, frame: &[u8], now: Instant, out: &mut impl FnMut(PortId, &[u8])) {
        self.stats.held += 1;
        if frame.len() < HEADER_LEN {
            self.stats.held_dropped += 1;
            return;
        }
        if let Some(mac) = self.neigh.get(&via) {
            let mut f = frame.to_vec();
            f[..6].copy_from_slice(&mac);
            self.stats.released += 1;
            out(port, &f);
            return;
        }
        let q = self.held.entry(via).or_default();
        if q.len() >= HOLD_PER_ADDRESS || self.held_total >= HOLD_TOTAL {
            self.stats.held_dropped += 1;
        } else {
            q.push_back((port, frame.to_vec(), now));
            self.held_total += 1;
        }
        self.neigh.resolve(via, now, &mut self.actions);
        self.act(now, out);
    }

    fn smoltcp_now(&self, now: Instant) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_millis(now.saturating_duration_since(self.epoch).as_millis() as i64)
    }

    fn is_ours(&self, ip: &IpAddr) -> bool {
        let vip = match ip {
            IpAddr::V4(a) => self.vips4.contains(a),
            IpAddr::V6(a) => self.vips6.contains(a),
        };
        vip || self.ports.iter().any(|p| p.addrs.iter().any(|(a, _)| a == ip))
    }

    /// `mac` heard for `ip` on port index `pi`: only addresses in that port's subnets, and never our own.
    fn heard(&mut self, pi: usize, ip: IpAddr, mac: Mac, how: Heard, now: Instant) {
        if !self.ports[pi].addrs.iter().any(|&p| in_subnet(ip, p)) || self.is_ours(&ip) {
            return;
        }
        if let Some(p) = self.probes.get_mut(&ip) {
            *p = Some((mac, now));
        }
        self.neigh.heard(ip, mac, how, now, &mut self.actions);
    }

    /// Carry out what the neighbour table asked for: requests and probes out, changes recorded, held packets
    /// released.
    fn act(&mut self, now: Instant, out: &mut impl FnMut(PortId, &[u8])) {
        for a in std::mem::take(&mut self.actions) {
            match a {
                Action::Ask(ip) => self.solicit(ip, None, out),
                Action::Probe(ip, mac) => self.solicit(ip, Some(mac), out),
                Action::Set(ip, mac) => {
                    self.changes.push((ip, Some(mac)));
                    if let Some(q) = self.held.remove(&ip) {
                        self.held_total -= q.len();
                        for (port, mut f, _) in q {
                            f[..6].copy_from_slice(&mac);
                            self.stats.released += 1;
                            self.releases.push((port, f));
                        }
                    }
                }
                Action::Forget(ip) => self.changes.push((ip, None)),
            }
        }
        for (port, f) in std::mem::take(&mut self.releases) {
            out(port, &f);
        }
        // Held packets whose next hop stayed silent.
        let before = self.held_total;
        self.held.retain(|_, q| {
            q.retain(|(_, _, at)| now.saturating_duration_since(*at) < HOLD_FOR);
            !q.is_empty()
        });
        self.held_total = self.held.values().map(VecDeque::len).sum();
        self.stats.held_dropped += (before - self.held_total) as u64;
    }

    /// Ask for `ip` on the port whose subnet holds it: ARP request (broadcast, or unicast to `mac`) or neighbour
    /// solicitation (to the solicited-node group, or unicast to `mac`), from the port's own address in that subnet.
    fn solicit(&mut self, ip: IpAddr, mac: Option<Mac>, out: &mut impl FnMut(PortId, &[u8])) {
        for p in &self.ports {
            let Some(&(own, _)) = p.addrs.iter().find(|&&(a, l)| in_subnet(ip, (a, l))) else { continue };
            let frame = match (ip, own) {
                (IpAddr::V4(target), IpAddr::V4(own)) => {
                    arp_frame(mac.unwrap_or(BROADCAST), p.mac, OP_REQUEST, (p.mac, own), ([0; 6], target))
                }
                (IpAddr::V6(target), IpAddr::V6(own)) => ns_frame(p.mac, own, target, mac),
                _ => continue,
            };
            out(p.port, &frame);
            self.stats.requests += 1;
            return;
        }
    }

    /// One frame the workers handed over, received on `port`. Answers go to `out(port, frame)`.
    pub fn handle(&mut self, port: PortId, frame: &[u8], now: Instant, out: &mut impl FnMut(PortId, &[u8])) {
        self.stats.frames += 1;
        let Some(pi) = self.ports.iter().position(|p| p.port == port) else {
            self.stats.unknown_port += 1;
            return;
        };
        if let Some(ip) = vrrp_ip(frame) {
            self.vrrp_frame(pi, ip, now);
            return;
        }
        if let Ok(l2) = parse_l2(frame) {
            if l2.ethertype == ethertype::ARP {
                if let Ok(a) = ArpPacket::new_checked(&frame[l2.l3_offset..]) {
                    let sender = Ipv4Addr::from(a.sender_ip());
                    let how = if a.operation() == OP_REPLY { Heard::Answer } else { Heard::Claim };
                    self.heard(pi, IpAddr::V4(sender), a.sender_mac(), how, now);
                    self.act(now, out);
                    let target = Ipv4Addr::from(a.target_ip());
                    let ours = self.vips4.contains(&target) || self.is_virtual(&IpAddr::V4(target));
                    if a.operation() == OP_REQUEST && ours && self.owns(&IpAddr::V4(target)) {
                        let mac = self.answer_mac(pi, &IpAddr::V4(target));
                        let reply = arp_frame(a.sender_mac(), mac, OP_REPLY, (mac, target), (a.sender_mac(), sender));
                        out(port, &reply);
                        self.stats.vip_arp_replies += 1;
                        return;
                    }
                }
            }
        }
        let answer = self.ndp(pi, frame, now);
        self.act(now, out);
        if let Some(na) = answer {
            out(port, &na);
            self.stats.vip_arp_replies += 1;
            return;
        }
        self.ports[pi].dev.rx.push_back(frame.to_vec());
        let t = self.smoltcp_now(now);
        let p = &mut self.ports[pi];
        p.iface.poll(t, &mut p.dev, &mut p.sockets);
        while let Some(f) = p.dev.tx.pop_front() {
            out(port, &f);
            self.stats.own_replies += 1;
        }
    }

    /// Periodic work: smoltcp timers, and ARP requests for wanted next hops not yet known.
    pub fn poll(&mut self, now: Instant, out: &mut impl FnMut(PortId, &[u8])) {
        let t = self.smoltcp_now(now);
        for p in &mut self.ports {
            p.iface.poll(t, &mut p.dev, &mut p.sockets);
            while let Some(f) = p.dev.tx.pop_front() {
                out(p.port, &f);
                self.stats.own_replies += 1;
            }
        }
        self.neigh.poll(now, &mut self.actions);
        if self.last_request.is_none_or(|l| now.saturating_duration_since(l) >= RESOLVE_EVERY) {
            self.last_request = Some(now);
            for ip in self.wanted.clone() {
                if self.neigh.get(&ip).is_none() {
                    self.neigh.resolve(ip, now, &mut self.actions);
                }
            }
        }
        self.act(now, out);
        self.vrrp_poll(now, out);
        self.lease_poll(now, out);
    }

    /// NDP: learn from solicitations aimed at our addresses and VIPs (claims) and advertisements (answers when
    /// solicited, else claims); answer a solicitation for a VIP with an advertisement.
    fn ndp(&mut self, pi: usize, frame: &[u8], now: Instant) -> Option<Vec<u8>> {
        let l2 = parse_l2(frame).ok()?;
        if l2.ethertype != ethertype::IPV6 {
            return None;
        }
        let ip = &frame[l2.l3_offset..];
        // RFC 4861 §7.1: hop limit 255, no extension headers between IPv6 and ICMPv6 here.
        if ip.len() < 40 + 24 || ip[6] != crate::wire::proto::ICMPV6 || ip[7] != 255 {
            return None;
        }
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
        let icmp = &ip[40..];
        let kind = icmp[0];
        let target = Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).ok()?);
        // Link-layer address options (RFC 4861 §4.6.1): type 1 source, type 2 target; length in 8-byte units.
        let mut lladdr = None;
        let mut o = 24;
        while o + 8 <= icmp.len() {
            let (t, len) = (icmp[o], usize::from(icmp[o + 1]) * 8);
            if len == 0 {
                break;
            }
            if (t == 1 || t == 2) && o + 8 <= icmp.len() {
                lladdr = Some([icmp[o + 2], icmp[o + 3], icmp[o + 4], icmp[o + 5], icmp[o + 6], icmp[o + 7]]);
            }
            o += len;
        }
        match kind {
            135 => {
                if let Some(mac) = lladdr {
                    if !src.is_unspecified() && self.is_ours(&IpAddr::V6(target)) {
                        self.heard(pi, IpAddr::V6(src), mac, Heard::Claim, now);
                    }
                }
                let ours = self.vips6.contains(&target) || self.is_virtual(&IpAddr::V6(target));
                if !ours || !self.owns(&IpAddr::V6(target)) {
                    return None;
                }
                let to_mac = lladdr.unwrap_or_else(|| {
                    let mut m = [0; 6];
                    m.copy_from_slice(&frame[6..12]);
                    m
                });
                let (dst, dst_mac) = if src.is_unspecified() {
                    (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), [0x33, 0x33, 0, 0, 0, 1])
                } else {
                    (src, to_mac)
                };
                let mac = self.answer_mac(pi, &IpAddr::V6(target));
                Some(na_frame(mac, dst_mac, target, dst, !src.is_unspecified()))
            }
            136 => {
                let solicited = icmp[4] & 0x40 != 0;
                // A solicited NA may leave out the target link-layer address when it answers a unicast NS (RFC 4861
                // §7.2.4, as Linux does); it then confirms the address it was sent from (§7.2.5).
                let mac = lladdr
                    .or_else(|| solicited.then(|| [frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]]));
                if let Some(mac) = mac {
                    let how = if solicited { Heard::Answer } else { Heard::Claim };
                    self.heard(pi, IpAddr::V6(target), mac, how, now);
                }
                None
            }
            _ => None,
        }
    }

    /// Gratuitous ARP for every IPv4 VIP and an unsolicited neighbour advertisement for every IPv6 VIP it owns (see
    /// [`SlowPath::owns`]), on every port (L2 mode: tell the segment where the VIPs are).
    pub fn announce(&mut self, out: &mut impl FnMut(PortId, &[u8])) {
        let mut vips: Vec<Ipv4Addr> = self.vips4.iter().copied().filter(|v| self.owns(&IpAddr::V4(*v))).collect();
        vips.sort_unstable();
        let mut vips6: Vec<Ipv6Addr> = self.vips6.iter().copied().filter(|v| self.owns(&IpAddr::V6(*v))).collect();
        vips6.sort_unstable();
        for p in &self.ports {
            for vip in vips.iter().map(|v| IpAddr::V4(*v)).chain(vips6.iter().map(|v| IpAddr::V6(*v))) {
                out(p.port, &announcement(p.mac, vip));
                self.stats.announcements += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackendSpec, BackendState, Mode, Model, Protocol, ServiceSpec};
    use crate::snapshot::ConfigBuilder;
    use crate::wire::icmp::IcmpPacket;
    use crate::wire::ipv4::Ipv4Packet;

    const PORT_MAC: Mac = [2, 0, 0, 0, 1, 0];
    const HOST_MAC: Mac = [2, 0, 0, 0, 0, 7];

    /// A slow path for one NAT service `vip` (backend `backend`) on port 0, which holds the two `addrs`.
    fn slow_with(vip: &str, backend: &str, addrs: [(&str, u8); 2]) -> SlowPath {
        let model = Model {
            services: vec![ServiceSpec::new(
                vip.parse().unwrap(),
                Protocol::Tcp,
                Some(80),
                Mode::Nat,
                vec![BackendSpec { addr: backend.parse().unwrap(), port: 80, weight: 1, state: BackendState::Active }],
            )],
            interfaces: vec![InterfaceSpec {
                port: 0,
                mac: PORT_MAC,
                addrs: addrs.iter().map(|(a, l)| (a.parse().unwrap(), *l)).collect(),
                mtu: 1500,
            }],
            ..Model::default()
        };
        let (cfg, _) = ConfigBuilder::new().build(&model).unwrap();
        SlowPath::new(&cfg)
    }

    fn slow() -> SlowPath {
        slow_with("198.19.0.1", "198.18.2.10", [("198.18.0.1", 24), ("198.18.2.1", 24)])
    }

    fn collect(s: &mut SlowPath, frame: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        s.handle(0, frame, Instant::now(), &mut |_, f| out.push(f.to_vec()));
        out
    }

    #[test]
    fn answers_arp_for_vips_and_own_addresses_and_learns() {
        let mut s = slow();
        let host: Ipv4Addr = "198.18.0.10".parse().unwrap();
        for target in ["198.19.0.1", "198.18.0.1"] {
            let req = arp_frame(BROADCAST, HOST_MAC, OP_REQUEST, (HOST_MAC, host), ([0; 6], target.parse().unwrap()));
            let out: Vec<Vec<u8>> = collect(&mut s, &req)
                .into_iter()
                .filter(|f| ArpPacket::new_checked(&f[14..]).is_ok_and(|a| a.operation() == OP_REPLY))
                .collect();
            assert_eq!(out.len(), 1, "ARP for {target} answered");
            let a = ArpPacket::new_checked(&out[0][14..]).unwrap();
            assert_eq!(a.operation(), OP_REPLY);
            assert_eq!(a.sender_mac(), PORT_MAC);
            assert_eq!(a.sender_ip(), target.parse::<Ipv4Addr>().unwrap().octets());
            assert_eq!(a.target_mac(), HOST_MAC);
            assert_eq!(&out[0][0..6], &HOST_MAC);
        }
        // Not ours: no answer.
        let req =
            arp_frame(BROADCAST, HOST_MAC, OP_REQUEST, (HOST_MAC, host), ([0; 6], "198.18.0.99".parse().unwrap()));
        assert!(collect(&mut s, &req).is_empty());
        assert_eq!(s.take_changes(), vec![(IpAddr::V4(host), Some(HOST_MAC))]);
        assert!(s.take_changes().is_empty(), "news are handed out once");
        assert!(!s.neigh.is_confirmed(&IpAddr::V4(host)), "a request is a claim, not an answer");
    }

    #[test]
    fn answers_ping_to_own_address() {
        let mut s = slow();
        let host: Ipv4Addr = "198.18.0.10".parse().unwrap();
        // smoltcp needs the host's MAC first (it learns it from the host's ARP request).
        let req = arp_frame(BROADCAST, HOST_MAC, OP_REQUEST, (HOST_MAC, host), ([0; 6], "198.18.0.1".parse().unwrap()));
        collect(&mut s, &req);
        let mut f = vec![0u8; 14 + 20 + 8 + 4];
        f[..6].copy_from_slice(&PORT_MAC);
        f[6..12].copy_from_slice(&HOST_MAC);
        f[12..14].copy_from_slice(&[8, 0]);
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_version_and_header_len(20);
        ip.set_total_len(32);
        ip.set_ttl(64);
        ip.set_protocol(1);
        ip.set_src(host.octets());
        ip.set_dst([198, 18, 0, 1]);
        ip.fill_checksum();
        f[34..42].copy_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        f[42..46].copy_from_slice(b"ping");
        let c = crate::wire::checksum::checksum(&f[34..]);
        f[36..38].copy_from_slice(&c.to_be_bytes());
        let out = collect(&mut s, &f);
        assert_eq!(out.len(), 1, "echo answered");
        let ip = Ipv4Packet::new_checked(&out[0][14..]).unwrap();
        assert_eq!((ip.src(), ip.dst()), ([198, 18, 0, 1], host.octets()));
        assert_eq!(IcmpPacket::new_checked(ip.payload()).unwrap().msg_type(), 0);
    }

    #[test]
    fn answers_ndp_for_ipv6_vips_and_learns() {
        let mut s = slow_with("2001:db8:100::1", "2001:db8:2::10", [("2001:db8:1::1", 64), ("2001:db8:2::1", 64)]);
        let host: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
        let vip: Ipv6Addr = "2001:db8:100::1".parse().unwrap();
        // A neighbour solicitation for the VIP, with the host's source link-layer option.
        let mut f = vec![0u8; 14 + 40 + 32];
        f[..6].copy_from_slice(&[0x33, 0x33, 0xff, 0, 0, 1]);
        f[6..12].copy_from_slice(&HOST_MAC);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        let mut ip = crate::wire::ipv6::Ipv6Packet::new_unchecked(&mut f[14..]);
        ip.set_ver_tc_flow(0, 0);
        ip.set_payload_len(32);
        ip.set_next_header(58);
        ip.set_hop_limit(255);
        ip.set_src(host.octets());
        ip.set_dst("ff02::1:ff00:1".parse::<Ipv6Addr>().unwrap().octets());
        f[54] = 135;
        f[62..78].copy_from_slice(&vip.octets());
        f[78..86].copy_from_slice(&[1, 1, 2, 0, 0, 0, 0, 7]);
        let out: Vec<Vec<u8>> = collect(&mut s, &f).into_iter().filter(|f| f[14 + 40] == 136).collect();
        assert_eq!(out.len(), 1, "the solicitation for the VIP is answered");
        let na = &out[0];
        assert_eq!((&na[0..6], &na[6..12]), (&HOST_MAC[..], &PORT_MAC[..]));
        let ip = crate::wire::ipv6::Ipv6Packet::new_checked(&na[14..]).unwrap();
        assert_eq!((ip.src(), ip.dst(), ip.hop_limit()), (vip.octets(), host.octets(), 255));
        let icmp = ip.payload();
        assert_eq!((icmp[0], icmp[4] & 0x60, &icmp[8..24]), (136, 0x60, &vip.octets()[..]));
        assert_eq!(&icmp[24..32], &[2, 1, 2, 0, 0, 0, 1, 0]);
        let acc = crate::wire::checksum::pseudo_v6(&vip.octets(), &host.octets(), 58, 32);
        assert_eq!(crate::wire::checksum::finish(crate::wire::checksum::sum(acc, icmp)), 0, "NA checksum");
        assert_eq!(s.take_changes(), vec![(IpAddr::V6(host), Some(HOST_MAC))]);
        let mut una = Vec::new();
        s.announce(&mut |_, f| una.push(f.to_vec()));
        assert_eq!(una.len(), 1);
        assert_eq!(&una[0][0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(una[0][14 + 40 + 4] & 0x60, 0x20, "unsolicited: override, not solicited");
    }

    #[test]
    fn resolves_wanted_next_hops_and_announces_vips() {
        let mut s = slow();
        s.set_wanted(vec!["198.18.2.10".parse().unwrap(), "198.19.200.1".parse().unwrap()]);
        let mut out = Vec::new();
        let t0 = Instant::now();
        s.poll(t0, &mut |p, f| out.push((p, f.to_vec())));
        let reqs: Vec<_> = out.iter().filter(|(_, f)| f[12..14] == [8, 6]).collect();
        assert_eq!(reqs.len(), 1, "one request, for the on-link backend only (198.19.200.1 is on no port subnet)");
        let a = ArpPacket::new_checked(&reqs[0].1[14..]).unwrap();
        assert_eq!((a.operation(), a.target_ip(), a.sender_ip()), (OP_REQUEST, [198, 18, 2, 10], [198, 18, 2, 1]));
        out.clear();
        s.poll(t0 + Duration::from_millis(100), &mut |p, f| out.push((p, f.to_vec())));
        assert!(out.is_empty(), "asked again only after {RESOLVE_EVERY:?}");
        // The backend answers: learnt, and no longer asked for.
        let be: Ipv4Addr = "198.18.2.10".parse().unwrap();
        let reply = arp_frame(
            PORT_MAC,
            [2, 0, 0, 2, 0, 10],
            OP_REPLY,
            ([2, 0, 0, 2, 0, 10], be),
            (PORT_MAC, [198, 18, 2, 1].into()),
        );
        collect(&mut s, &reply);
        assert_eq!(s.take_changes(), vec![(IpAddr::V4(be), Some([2, 0, 0, 2, 0, 10]))]);
        s.poll(t0 + Duration::from_secs(2), &mut |p, f| out.push((p, f.to_vec())));
        assert!(out.is_empty());
        let mut garp = Vec::new();
        s.announce(&mut |_, f| garp.push(f.to_vec()));
        assert_eq!(garp.len(), 1);
        let a = ArpPacket::new_checked(&garp[0][14..]).unwrap();
        assert_eq!((a.sender_ip(), a.target_ip(), &garp[0][0..6]), ([198, 19, 0, 1], [198, 19, 0, 1], &BROADCAST[..]));
    }

    /// IPv6 next hops are solicited like IPv4's: a neighbour solicitation to the solicited-node group from our own
    /// address with our link-layer address; the solicited advertisement sets the neighbour, and a held packet leaves
    /// with its MAC.
    #[test]
    fn solicits_ipv6_next_hops_and_releases_held_packets() {
        let mut s = slow_with("2001:db8:100::1", "2001:db8:2::10", [("2001:db8:1::1", 64), ("2001:db8:2::1", 64)]);
        let be: Ipv6Addr = "2001:db8:2::10".parse().unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut held = vec![0u8; 80];
        held[6..12].copy_from_slice(&PORT_MAC);
        s.hold(0, IpAddr::V6(be), &held, t0, &mut |p, f| out.push((p, f.to_vec())));
        assert_eq!(out.len(), 1, "one solicitation, nothing released yet");
        let ns = &out[0].1;
        assert_eq!(&ns[0..6], &[0x33, 0x33, 0xff, 0, 0, 0x10], "solicited-node MAC");
        let ip = crate::wire::ipv6::Ipv6Packet::new_checked(&ns[14..]).unwrap();
        let own: Ipv6Addr = "2001:db8:2::1".parse().unwrap();
        assert_eq!(
            (ip.src(), ip.dst(), ip.hop_limit()),
            (own.octets(), "ff02::1:ff00:10".parse::<Ipv6Addr>().unwrap().octets(), 255)
        );
        let icmp = ip.payload();
        assert_eq!((icmp[0], &icmp[8..24], &icmp[24..32]), (135, &be.octets()[..], &[1, 1, 2, 0, 0, 0, 1, 0][..]));
        let acc = crate::wire::checksum::pseudo_v6(&ip.src(), &ip.dst(), 58, 32);
        assert_eq!(crate::wire::checksum::finish(crate::wire::checksum::sum(acc, icmp)), 0, "NS checksum");
        // The backend's solicited advertisement.
        let bmac = [2, 0, 0, 2, 0, 0x10];
        let mut na = na_frame(bmac, PORT_MAC, be, own, true);
        na[6..12].copy_from_slice(&bmac);
        out.clear();
        s.handle(0, &na, t0 + Duration::from_millis(1), &mut |p, f| out.push((p, f.to_vec())));
        assert_eq!(out.len(), 1, "the held packet is released: {out:?}");
        assert_eq!(&out[0].1[0..6], &bmac, "with the backend's MAC");
        assert_eq!(s.take_changes(), vec![(IpAddr::V6(be), Some(bmac))]);
        assert!(s.neigh.is_confirmed(&IpAddr::V6(be)));
        assert_eq!((s.stats.held, s.stats.released, s.stats.held_dropped), (1, 1, 0));
    }

    /// The reported poisoning: a client known and confirmed, then one ARP request for the VIP naming the client's
    /// address at another MAC. The appliance answers for its VIP, probes the confirmed MAC by unicast, and keeps it.
    #[test]
    fn a_spoofed_arp_request_does_not_move_a_confirmed_client() {
        let mut s = slow();
        let host: Ipv4Addr = "198.18.0.10".parse().unwrap();
        let fake = [2, 0, 0, 0, 0, 0x10];
        let t0 = Instant::now();
        let vip: Ipv4Addr = "198.19.0.1".parse().unwrap();
        let mut out = Vec::new();
        let req = arp_frame(BROADCAST, HOST_MAC, OP_REQUEST, (HOST_MAC, host), ([0; 6], vip));
        s.handle(0, &req, t0, &mut |_, f| out.push(f.to_vec()));
        let reply = arp_frame(PORT_MAC, HOST_MAC, OP_REPLY, (HOST_MAC, host), (PORT_MAC, [198, 18, 0, 1].into()));
        s.handle(0, &reply, t0 + Duration::from_millis(1), &mut |_, f| out.push(f.to_vec()));
        assert!(s.neigh.is_confirmed(&IpAddr::V4(host)));
        assert_eq!(s.take_changes(), vec![(IpAddr::V4(host), Some(HOST_MAC))]);
        out.clear();
        let spoof = arp_frame(BROADCAST, fake, OP_REQUEST, (fake, host), ([0; 6], vip));
        s.handle(0, &spoof, t0 + Duration::from_secs(2), &mut |_, f| out.push(f.to_vec()));
        assert!(s.take_changes().is_empty(), "nothing changes");
        assert_eq!(s.neighbour(&IpAddr::V4(host)), Some(HOST_MAC));
        let probe = out.iter().find(|f| {
            f[0..6] == HOST_MAC && ArpPacket::new_checked(&f[14..]).is_ok_and(|a| a.operation() == OP_REQUEST)
        });
        assert!(probe.is_some(), "the confirmed MAC is probed by unicast: {out:?}");
        s.handle(0, &reply, t0 + Duration::from_millis(2001), &mut |_, _| {});
        assert_eq!((s.neighbour_stats().conflicts, s.neighbour_stats().refused), (1, 1));
    }

    /// Virtual router 51 on port 0 for `vip`, priority 100, adverts every 100 ms.
    fn router(vip: Ipv4Addr, garp_count: u8, virtual_mac: bool) -> vrrp::RouterSpec {
        vrrp::RouterSpec {
            name: "front".into(),
            port: 0,
            vrid: 51,
            priority: 100,
            interval_cs: 10,
            preempt: true,
            preempt_delay: Duration::ZERO,
            vips: vec![IpAddr::V4(vip)],
            garp_count,
            garp_interval: Duration::from_millis(100),
            track_penalty: 50,
            virtual_mac,
        }
    }

    /// VRRP ownership: a Backup answers no ARP for its VIP and announces nothing; a higher-priority master's adverts
    /// keep it so; once they stop it becomes Master after the down interval, advertises, sends its gratuitous ARPs
    /// and answers ARP. Bad adverts are counted by reason.
    #[test]
    fn a_vrrp_backup_answers_nothing_for_its_vip_until_it_is_master() {
        let mut s = slow();
        let vip: Ipv4Addr = "198.19.0.1".parse().unwrap();
        let t0 = Instant::now();
        s.set_vrrp(vec![router(vip, 2, false)], t0).unwrap();
        let host: Ipv4Addr = "198.18.0.10".parse().unwrap();
        let ask = |s: &mut SlowPath, at: Instant| {
            let mut out = Vec::new();
            let req = arp_frame(BROADCAST, HOST_MAC, OP_REQUEST, (HOST_MAC, host), ([0; 6], vip));
            s.handle(0, &req, at, &mut |_, f| out.push(f.to_vec()));
            out.iter().any(|f| ArpPacket::new_checked(&f[14..]).is_ok_and(|a| a.operation() == OP_REPLY))
        };
        assert!(!ask(&mut s, t0), "a Backup does not answer for its VIP");
        let mut out = Vec::new();
        s.announce(&mut |_, f| out.push(f.to_vec()));
        assert!(out.is_empty(), "nor announces it");
        // A master of priority 200 advertises every 100 ms for a second: we stay Backup.
        let theirs = vrrp::advert_frame(HOST_MAC, IpAddr::V4(host), 51, 200, 10, &[IpAddr::V4(vip)]);
        for i in 0..10 {
            let t = t0 + Duration::from_millis(100 * i);
            s.handle(0, &theirs, t, &mut |_, _| {});
            s.poll(t, &mut |_, _| {});
        }
        assert_eq!(s.vrrp_status()[0].state, vrrp::State::Backup);
        assert_eq!(s.vrrp_status()[0].master, Some(IpAddr::V4(host)));
        // It stops: 3 × 100 ms + 60 ms later we are Master, advertise and announce the VIP.
        let t = t0 + Duration::from_millis(900 + 360);
        let mut out = Vec::new();
        s.poll(t, &mut |_, f| out.push(f.to_vec()));
        assert_eq!(s.vrrp_status()[0].state, vrrp::State::Master);
        assert!(out.iter().any(|f| vrrp_ip(f).is_some()), "an advert");
        let garp = |f: &Vec<u8>| {
            ArpPacket::new_checked(&f[14..]).is_ok_and(|a| a.operation() == OP_REQUEST && a.target_ip() == vip.octets())
        };
        assert_eq!(out.iter().filter(|f| garp(f)).count(), 1, "the first gratuitous ARP at once");
        let mut later = Vec::new();
        s.poll(t + Duration::from_millis(100), &mut |_, f| later.push(f.to_vec()));
        assert_eq!(later.iter().filter(|f| garp(f)).count(), 1, "the second 100 ms later");
        assert!(ask(&mut s, t + Duration::from_millis(150)), "the Master answers for its VIP");
        let t = s.take_vrrp_transitions();
        assert_eq!(t.iter().map(|(_, t)| t.1).collect::<Vec<_>>(), vec![vrrp::State::Backup, vrrp::State::Master]);
        // A VRRPv2 advert and one with a bad checksum are counted, not used.
        let mut v2 = theirs.clone();
        v2[34] = 0x21;
        let mut bad = theirs.clone();
        bad[36] = 1;
        s.handle(0, &v2, t0, &mut |_, _| {});
        s.handle(0, &bad, t0, &mut |_, _| {});
        let refused = s.vrrp_refused();
        assert!(refused.contains(&("version", 1)) && refused.contains(&("checksum", 1)), "{refused:?}");
    }

    /// Routers changed while running (Kubernetes L2Announcements): an unchanged one keeps its Master state, a
    /// removed Master says priority 0 once, a new one starts in Backup, and a refused set changes nothing.
    #[test]
    fn vrrp_routers_change_while_running_without_disturbing_the_others() {
        let mut s = slow();
        let (a, b): (Ipv4Addr, Ipv4Addr) = ("198.19.0.1".parse().unwrap(), "198.19.0.2".parse().unwrap());
        let t0 = Instant::now();
        let ra = router(a, 1, false);
        let mut rb = router(b, 1, false);
        rb.name = "second".into();
        rb.vrid = 52;
        s.set_vrrp(vec![ra.clone()], t0).unwrap();
        let t1 = t0 + Duration::from_secs(1);
        s.poll(t1, &mut |_, _| {});
        assert_eq!(s.vrrp_status()[0].state, vrrp::State::Master);
        // Add `second`: `front` stays Master, `second` starts in Backup.
        let mut out = Vec::new();
        s.update_vrrp(vec![ra.clone(), rb.clone()], t1, &mut |_, f| out.push(f.to_vec())).unwrap();
        assert!(out.is_empty(), "nothing sent for an unchanged router");
        let st = s.vrrp_status();
        assert_eq!((st[0].state, st[1].state), (vrrp::State::Master, vrrp::State::Backup));
        // A refused set (no such port) changes nothing.
        let mut bad = rb.clone();
        bad.port = 9;
        assert!(s.update_vrrp(vec![bad], t1, &mut |_, _| {}).is_err());
        assert_eq!(s.vrrp_status().len(), 2);
        // Remove `front`: its last advert says priority 0.
        let mut out = Vec::new();
        s.update_vrrp(vec![rb], t1, &mut |_, f| out.push(f.to_vec())).unwrap();
        let adverts: Vec<_> = out.iter().filter_map(|f| vrrp_ip(f)).collect();
        assert_eq!(adverts.len(), 1, "one advert: {out:?}");
        assert_eq!(out[0][14 + 20 + 2], 0, "priority 0");
        assert_eq!(s.vrrp_status().iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["second"]);
    }

    /// A router resolving the appliance's own IPv6 port address (a BGP next hop) gets a neighbour advertisement.
    #[test]
    fn the_own_ipv6_port_address_is_answered() {
        let mut s = slow_with("2001:db8:100::1", "2001:db8:2::10", [("2001:db8::2", 64), ("2001:db8:2::1", 64)]);
        let own: Ipv6Addr = "2001:db8::2".parse().unwrap();
        // Linux solicits from its link-local address.
        let router: Ipv6Addr = "fe80::1".parse().unwrap();
        let ns = ns_frame(HOST_MAC, router, own, None);
        let out = collect(&mut s, &ns);
        let na = out.iter().find(|f| f.len() > 54 + 24 && f[12..14] == [0x86, 0xdd] && f[54] == 136);
        let na = na.unwrap_or_else(|| panic!("no NA for the own address: {out:?}"));
        assert_eq!(&na[54 + 8..54 + 24], &own.octets(), "the NA's target");
        assert_eq!(&na[0..6], &HOST_MAC, "sent to the router");
    }

    /// A probe asks for an address even when a static entry knows it, and reports who answered: here another MAC
    /// than the table's, which `edgelbctl doctor` calls a wrong MAC.
    #[test]
    fn a_probe_reports_the_mac_that_answers() {
        let mut s = slow();
        let host: Ipv4Addr = "198.18.0.10".parse().unwrap();
        let mut out = Vec::new();
        s.probe(&[IpAddr::V4(host)], &mut |_, f| out.push(f.to_vec()));
        let ask = ArpPacket::new_checked(&out[0][14..]).unwrap();
        assert_eq!((ask.operation(), ask.target_ip()), (OP_REQUEST, host.octets()), "an ARP request for the address");
        assert_eq!(s.probed(), vec![(IpAddr::V4(host), None)], "no answer yet");
        let real = [2, 0, 0, 0, 0, 0x42];
        let our_ip: Ipv4Addr = "198.18.0.1".parse().unwrap();
        let reply = arp_frame(PORT_MAC, real, OP_REPLY, (real, host), (PORT_MAC, our_ip));
        let t = Instant::now();
        s.handle(0, &reply, t, &mut |_, _| {});
        assert_eq!(s.probed(), vec![(IpAddr::V4(host), Some((real, t)))]);
    }

    /// Lease ownership: a VIP a Lease governs is answered only while held here; taking it announces it
    /// `LEASE_GARPS` times; losing it stops the answers.
    #[test]
    fn a_vip_governed_by_a_lease_is_answered_only_while_held() {
        let mut s = slow();
        let vip: Ipv4Addr = "198.19.0.1".parse().unwrap();
        let host: Ipv4Addr = "198.18.0.10".parse().unwrap();
        let t0 = Instant::now();
        let ask = |s: &mut SlowPath| {
            let req = arp_frame(BROADCAST, HOST_MAC, OP_REQUEST, (HOST_MAC, host), ([0; 6], vip));
            collect(s, &req).iter().any(|f| ArpPacket::new_checked(&f[14..]).is_ok_and(|a| a.operation() == OP_REPLY))
        };
        assert!(ask(&mut s), "without Leases every VIP is answered");
        let managed: HashSet<IpAddr> = [IpAddr::V4(vip)].into();
        s.set_leased(Some((managed.clone(), HashSet::new())), t0);
        assert!(!ask(&mut s), "governed by a Lease held elsewhere");
        let mut out = Vec::new();
        s.announce(&mut |_, f| out.push(f.to_vec()));
        assert!(out.is_empty());
        let (gained, _) = s.set_leased(Some((managed.clone(), managed.clone())), t0);
        assert_eq!(gained, vec![IpAddr::V4(vip)]);
        assert!(ask(&mut s), "held here");
        let garps = |s: &mut SlowPath, at: Instant| {
            let mut out = Vec::new();
            s.poll(at, &mut |_, f| out.push(f.to_vec()));
            out.iter().filter(|f| ArpPacket::new_checked(&f[14..]).is_ok_and(|a| a.sender_ip() == vip.octets())).count()
        };
        let n: usize = (0..5).map(|i| garps(&mut s, t0 + ownership::LEASE_GARP_EVERY * i)).sum();
        assert_eq!(n, usize::from(ownership::LEASE_GARPS));
        let (_, lost) = s.set_leased(Some((managed, HashSet::new())), t0);
        assert_eq!(lost, vec![IpAddr::V4(vip)]);
        assert!(!ask(&mut s));
    }

    /// With `virtual_mac` a Master answers, advertises and announces from 00:00:5e:00:01:VRID.
    #[test]
    fn a_master_with_the_virtual_mac_answers_from_it() {
        let mut s = slow();
        let vip: Ipv4Addr = "198.19.0.1".parse().unwrap();
        let t0 = Instant::now();
        s.set_vrrp(vec![router(vip, 1, true)], t0).unwrap();
        let vmac = [0, 0, 0x5e, 0, 1, 51];
        let mut out = Vec::new();
        s.poll(t0 + Duration::from_secs(1), &mut |_, f| out.push(f.to_vec()));
        assert_eq!(s.vrrp_status()[0].state, vrrp::State::Master);
        assert!(out.iter().all(|f| f[6..12] == vmac), "adverts and gratuitous ARPs from the virtual MAC");
        assert_eq!(out.len(), 2, "one advert, one gratuitous ARP");
        let host: Ipv4Addr = "198.18.0.10".parse().unwrap();
        let req = arp_frame(BROADCAST, HOST_MAC, OP_REQUEST, (HOST_MAC, host), ([0; 6], vip));
        let reply = collect(&mut s, &req)
            .into_iter()
            .find(|f| ArpPacket::new_checked(&f[14..]).is_ok_and(|a| a.operation() == OP_REPLY))
            .expect("answered");
        assert_eq!(ArpPacket::new_checked(&reply[14..]).unwrap().sender_mac(), vmac);
    }
}
