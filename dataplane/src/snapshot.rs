//! The immutable [`DataplaneConfig`] snapshot workers read, built from a valid [`Model`] and published.
//!
//! [`ConfigBuilder::build`] validates the model ([`crate::model::validate`]) into typed values, builds one Maglev
//! table per service and resolves next hops, all off the hot path. The result is published through
//! [`ConfigHandle`] (an `arc-swap`); a worker loads it once per burst.
//!
//! Services and backends keep **stable ids** across builds (keyed by VIP/protocol/port and backend address/port), so
//! a flow tracked under one snapshot finds its backend in the next. Ids are never reused within a process.

use crate::forward::nat::Dnat;
use crate::lb::maglev::{self, MaglevBackend, MaglevTable};
use crate::model::*;
use crate::wire::ethernet::Mac;
use arc_swap::ArcSwap;
use rustc_hash::{FxHashMap, FxHashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Next hop resolved at build time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// Egress port.
    pub port: PortId,
    /// Destination MAC.
    pub mac: Mac,
    /// Source MAC (the egress port's).
    pub src_mac: Mac,
    /// Egress IP MTU.
    pub mtu: u16,
}

/// A backend in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Stable id.
    pub id: u32,
    /// Index of its service in [`DataplaneConfig::services`].
    pub service: u32,
    /// Address as 16 bytes (IPv4 mapped).
    pub addr: [u8; 16],
    /// True when the address is IPv4.
    pub v4: bool,
    /// Port (0: keep the client's).
    pub port: u16,
    /// State.
    pub state: BackendState,
    /// Resolved next hop; `None` until the neighbour is known.
    pub next_hop: Option<NextHop>,
    /// A NAT service's rewrite toward this backend, its checksum deltas worked out once (the fast path's); `None`
    /// for other modes, and where the deltas wait for the packet (see [`Dnat::new`]).
    pub dnat: Option<Dnat>,
}

/// A service in the snapshot.
#[derive(Debug, Clone)]
pub struct Service {
    /// Stable id.
    pub id: u32,
    /// VIP as 16 bytes (IPv4 mapped).
    pub vip: [u8; 16],
    /// True for an IPv4 VIP.
    pub v4: bool,
    /// IP protocol number.
    pub proto: u8,
    /// Port (0: all ports).
    pub port: u16,
    /// Mode.
    pub mode: Mode,
    /// Affinity timeout in milliseconds, 0 for none.
    pub affinity_ms: u32,
    /// GUE destination port.
    pub gue_port: u16,
    /// Maglev table over the active backends; shared with the previous snapshot when they did not change.
    pub maglev: Arc<MaglevTable>,
    /// Backend id of each Maglev backend index (shared with the table).
    pub maglev_ids: Arc<[u32]>,
    /// Ids of all backends (any state), for stats.
    pub backend_ids: Arc<[u32]>,
}

impl Service {
    /// The backend Maglev gives flow hash `h` (its id); `None` when the table is empty.
    #[inline(always)]
    pub fn maglev_backend(&self, h: u64) -> Option<u32> {
        self.maglev.lookup(h).and_then(|i| self.maglev_ids.get(i).copied())
    }
}

/// Maglev slots that moved for one service in a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotsMoved {
    /// VIP.
    pub vip: IpAddr,
    /// Protocol number.
    pub proto: u8,
    /// Port (0: all).
    pub port: u16,
    /// Slots whose backend changed from the previous snapshot (table size for a new service).
    pub moved: usize,
    /// The new table's size.
    pub table_size: usize,
}

/// The key of an IPv4 service in [`DataplaneConfig::service_v4`]'s map: address, protocol and port in one word.
#[inline(always)]
fn v4_service_key(a: [u8; 4], proto: u8, port: u16) -> u64 {
    (u64::from(u32::from_be_bytes(a)) << 24) | (u64::from(proto) << 16) | u64::from(port)
}

/// The key of an IPv6 service in [`DataplaneConfig::service_v6`]'s map.
type V6ServiceKey = ([u8; 16], u8, u16);

/// A service key the fast path's index can place: folded to one word, then multiplied.
trait VipKey: Copy + Eq {
    fn fold(&self) -> u64;
}

impl VipKey for u64 {
    #[inline(always)]
    fn fold(&self) -> u64 {
        *self
    }
}

impl VipKey for u128 {
    #[inline(always)]
    fn fold(&self) -> u64 {
        (*self as u64) ^ ((*self >> 64) as u64).rotate_left(29)
    }
}

impl VipKey for V6ServiceKey {
    #[inline(always)]
    fn fold(&self) -> u64 {
        let a = u128::from_be_bytes(self.0);
        (a as u64)
            ^ ((a >> 64) as u64).rotate_left(29)
            ^ ((u64::from(self.1) << 16) | u64::from(self.2)).rotate_left(47)
    }
}

/// Services with their own port by address, protocol and port: open addressing with linear probing in a
/// power-of-two array at most half full, so a probe is a multiply, a shift and (nearly always) one compare; the
/// general map's hashing cost the fast path a hundred instructions a packet.
#[derive(Debug, Clone)]
struct VipIndex<K> {
    slots: Vec<Option<(K, u32)>>,
    shift: u32,
}

impl<K> Default for VipIndex<K> {
    fn default() -> Self {
        Self { slots: Vec::new(), shift: 63 }
    }
}

impl<K: VipKey> VipIndex<K> {
    fn with_room(n: usize) -> Self {
        let size = (2 * n).next_power_of_two().max(2);
        Self { slots: vec![None; size], shift: 64 - size.trailing_zeros() }
    }
    #[inline(always)]
    fn home(&self, k: &K) -> usize {
        (k.fold().wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }
    fn insert(&mut self, k: K, v: u32) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(&k);
        // At most half full: a free or matching slot is always found.
        while self.slots[i].is_some_and(|(sk, _)| sk != k) {
            i = (i + 1) & mask;
        }
        self.slots[i] = Some((k, v));
    }
    #[inline(always)]
    fn get(&self, k: &K) -> Option<u32> {
        let mask = self.slots.len().wrapping_sub(1);
        let mut i = self.home(k);
        loop {
            let (sk, v) = (*self.slots.get(i)?)?;
            if sk == *k {
                return Some(v);
            }
            i = (i + 1) & mask;
        }
    }
}

/// What [`DataplaneConfig::classify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// A service, by index.
    Service(u32),
    /// A VIP address, but no service on this protocol and port.
    VipAddress,
    /// Not a VIP address.
    NotVip,
}

/// The immutable snapshot workers read.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// Increases with every build.
    pub generation: u64,
    /// Services.
    pub services: Vec<Service>,
    /// Backends indexed by stable id (`None` for ids no longer in use).
    pub backends: Vec<Option<Backend>>,
    vips: FxHashMap<([u8; 16], u8, u16), u32>,
    /// The IPv4 services with their own port: the fast path's one-word probe.
    vips_v4: VipIndex<u64>,
    /// The IPv6 services with their own port, for the fast path.
    vips_v6: VipIndex<V6ServiceKey>,
    /// VIP addresses (16-byte form as one number); the value's bit 0 / bit 1 say an all-ports TCP / UDP service
    /// exists on the address.
    vip_addrs: VipIndex<u128>,
    own_addrs: FxHashSet<[u8; 16]>,
    /// Interfaces.
    pub interfaces: Vec<InterfaceSpec>,
    connected: Vec<Subnet>,
    gateway_v4: Option<[u8; 16]>,
    gateway_v6: Option<[u8; 16]>,
    /// The next hop through each family's gateway (IPv4, IPv6), resolved once when the snapshot is built: what
    /// [`Self::route`] gives for a destination in no connected subnet. `None` where the gateway is unset, off-link or
    /// its MAC unknown.
    gateway_hops: [Option<NextHop>; 2],
    neighbours: FxHashMap<[u8; 16], Mac>,
    /// Full-NAT IPv4 source.
    pub snat_v4: Option<[u8; 4]>,
    /// Full-NAT IPv6 source.
    pub snat_v6: Option<[u8; 16]>,
    /// Full-NAT port range.
    pub snat_ports: (u16, u16),
    /// Tunnel IPv4 source base and host mask.
    pub tunnel_v4: Option<([u8; 4], u32)>,
    /// Tunnel IPv6 source base and host mask over the last 32 bits.
    pub tunnel_v6: Option<([u8; 16], u32)>,
    /// Idle timeouts of tracked flows and fragments, in milliseconds ([`Timeouts::in_ms`]).
    pub timeouts_ms: Timeouts,
    /// Highest backend id + 1 (size for per-backend counters).
    pub backend_id_limit: u32,
    /// Highest service id + 1.
    pub service_id_limit: u32,
    /// Refuse new flows (the appliance is draining).
    pub draining: bool,
    /// VIPs another appliance owns now (VRRP Backup here, or their Lease held elsewhere), 16-byte form: packets that
    /// reach them anyway are forwarded and counted (`vip_packets_not_owner`).
    pub unowned_vips: FxHashSet<[u8; 16]>,
    /// Addresses of VRRP virtual routers that are not VIPs (the gateway backends route through), 16-byte form: ARP for
    /// them goes to the slow path, which answers while the router is Master.
    pub virtual_addrs: FxHashSet<[u8; 16]>,
}

/// 16-byte form of an address (IPv4 mapped).
pub fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

/// Back from the 16-byte form.
pub fn addr_from16(a: [u8; 16], v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

/// The mask of a prefix `plen16` bits long (IPv4 as mapped addresses, `plen16` = 96 + the IPv4 length). A length
/// past 128 asks for the whole address.
fn prefix_mask(plen16: u8) -> u128 {
    u128::MAX.checked_shl(128u32.saturating_sub(u32::from(plen16))).unwrap_or(0)
}

/// Whether `a` lies in the prefix `p`/`plen16`: one masked 128-bit compare.
#[cfg(test)]
fn prefix_match(a: &[u8; 16], p: &[u8; 16], plen16: u8) -> bool {
    Subnet::new(p, plen16, 0).holds(a)
}

/// A connected subnet, its mask computed once: a route's test is one masked compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Subnet {
    /// The network's address (its host bits clear).
    net: u128,
    mask: u128,
    /// The port it is on.
    port: PortId,
}

impl Subnet {
    fn new(addr: &[u8; 16], plen16: u8, port: PortId) -> Self {
        let mask = prefix_mask(plen16);
        Subnet { net: u128::from_be_bytes(*addr) & mask, mask, port }
    }
    /// Whether `a` lies in it.
    #[inline]
    fn holds(&self, a: &[u8; 16]) -> bool {
        u128::from_be_bytes(*a) & self.mask == self.net
    }
}

impl DataplaneConfig {
    /// Service index for a VIP packet: exact port first, then an all-ports service.
    #[inline]
    pub fn service_for(&self, dst: &[u8; 16], proto: u8, port: u16) -> Option<u32> {
        match self.classify(dst, proto, port) {
            Classified::Service(s) => Some(s),
            _ => None,
        }
    }
    /// What a destination is: a VIP service (one map probe for the common exact match), a VIP address without a
    /// service on this protocol and port, or not a VIP (two probes).
    #[inline]
    pub fn classify(&self, dst: &[u8; 16], proto: u8, port: u16) -> Classified {
        if let Some(&s) = self.vips.get(&(*dst, proto, port)) {
            return Classified::Service(s);
        }
        let Some(all) = self.vip_addrs.get(&u128::from_be_bytes(*dst)) else { return Classified::NotVip };
        let bit = match proto {
            crate::wire::proto::TCP => 1,
            crate::wire::proto::UDP => 2,
            _ => 0,
        };
        match self.vips.get(&(*dst, proto, 0)) {
            Some(&s) if all & bit != 0 => Classified::Service(s),
            _ => Classified::VipAddress,
        }
    }
    /// The IPv4 service on exactly this address, protocol and port (not an all-ports one): what [`Self::classify`]
    /// finds first for such a packet, in one probe of a word-keyed map.
    #[inline(always)]
    pub fn service_v4(&self, dst: [u8; 4], proto: u8, port: u16) -> Option<u32> {
        self.vips_v4.get(&v4_service_key(dst, proto, port))
    }
    /// The IPv6 service on exactly this address, protocol and port (see [`Self::service_v4`]).
    #[inline(always)]
    pub fn service_v6(&self, dst: &[u8; 16], proto: u8, port: u16) -> Option<u32> {
        self.vips_v6.get(&(*dst, proto, port))
    }
    /// True when `a` is a VIP address (of any service).
    #[inline]
    pub fn is_vip(&self, a: &[u8; 16]) -> bool {
        self.vip_addrs.get(&u128::from_be_bytes(*a)).is_some()
    }
    /// True when `a` is one of the appliance's own addresses.
    #[inline]
    pub fn is_own(&self, a: &[u8; 16]) -> bool {
        self.own_addrs.contains(a)
    }
    /// The service at an index of `services` (what the VIP table and a backend's `service` hold). In range by the
    /// snapshot's construction; `None` rather than a panic if a builder bug ever broke that.
    #[inline]
    pub fn service(&self, si: u32) -> Option<&Service> {
        self.services.get(si as usize)
    }
    /// Whether a backend belongs to the service with stable id `id`.
    #[inline]
    pub fn serves(&self, b: &Backend, id: u32) -> bool {
        self.service(b.service).is_some_and(|s| s.id == id)
    }
    /// The backend with a stable id.
    #[inline]
    pub fn backend(&self, id: u32) -> Option<&Backend> {
        self.backends.get(id as usize).and_then(Option::as_ref)
    }
    /// Next hop toward `dst` at packet time: on-link neighbour, else the gateway of its family (resolved when the
    /// snapshot was built).
    pub fn route(&self, dst: &[u8; 16], v4: bool) -> Option<NextHop> {
        match self.subnet_of(dst) {
            Some(n) => self.hop(n.port, dst),
            None => self.gateway_hops[usize::from(!v4)],
        }
    }
    /// The next hop out of `port` to the neighbour `via`, when its MAC is known.
    fn hop(&self, port: PortId, via: &[u8; 16]) -> Option<NextHop> {
        let mac = *self.neighbours.get(via)?;
        let itf = self.interfaces.iter().find(|i| i.port == port)?;
        Some(NextHop { port, mac, src_mac: itf.mac, mtu: itf.mtu })
    }
    /// Resolve the gateways' next hops ([`Self::gateway_hops`]) from the addressing.
    fn resolve_gateways(&mut self) {
        for (i, v4) in [(0, true), (1, false)] {
            self.gateway_hops[i] =
                (if v4 { self.gateway_v4 } else { self.gateway_v6 }).and_then(|gw| self.on_link_hop(&gw));
        }
    }
    /// The next hop to `a` when it lies in a connected subnet.
    fn on_link_hop(&self, a: &[u8; 16]) -> Option<NextHop> {
        self.hop(self.subnet_of(a)?.port, a)
    }
    /// The connected subnet `a` lies in (the first of the interfaces' order).
    #[inline]
    fn subnet_of(&self, a: &[u8; 16]) -> Option<&Subnet> {
        self.connected.iter().find(|n| n.holds(a))
    }
    /// The egress port toward `dst` and the address whose MAC the frame needs (`dst` itself when on-link, else the
    /// family's gateway), whether that MAC is known or not.
    pub fn route_via(&self, dst: &[u8; 16], v4: bool) -> Option<(PortId, [u8; 16])> {
        match self.subnet_of(dst) {
            Some(n) => Some((n.port, *dst)),
            None => {
                let gw = if v4 { self.gateway_v4 } else { self.gateway_v6 }?;
                let port = self.subnet_of(&gw)?.port;
                Some((port, gw))
            }
        }
    }
    /// Fill the VIP maps from the services.
    fn index_vips(&mut self) {
        let exact = |v4: bool| self.services.iter().filter(|s| s.v4 == v4 && s.port != 0).count();
        self.vips_v4 = VipIndex::with_room(exact(true));
        self.vips_v6 = VipIndex::with_room(exact(false));
        let mut addrs: FxHashMap<[u8; 16], u32> = FxHashMap::default();
        for (si, s) in self.services.iter().enumerate() {
            self.vips.insert((s.vip, s.proto, s.port), si as u32);
            if s.v4 && s.port != 0 {
                let a = [s.vip[12], s.vip[13], s.vip[14], s.vip[15]];
                self.vips_v4.insert(v4_service_key(a, s.proto, s.port), si as u32);
            } else if s.port != 0 {
                self.vips_v6.insert((s.vip, s.proto, s.port), si as u32);
            }
            let bit = match (s.port, s.proto) {
                (0, crate::wire::proto::TCP) => 1,
                (0, crate::wire::proto::UDP) => 2,
                _ => 0,
            };
            *addrs.entry(s.vip).or_insert(0) |= bit;
        }
        self.vip_addrs = VipIndex::with_room(addrs.len());
        for (a, bits) in addrs {
            self.vip_addrs.insert(u128::from_be_bytes(a), bits);
        }
    }
    /// True when `a` lies in a connected subnet.
    pub fn is_on_link(&self, a: &[u8; 16]) -> bool {
        self.subnet_of(a).is_some()
    }
    /// MAC and MTU of a port.
    pub fn interface(&self, port: PortId) -> Option<&InterfaceSpec> {
        self.interfaces.iter().find(|i| i.port == port)
    }
}

/// Builds snapshots and keeps the stable ids between builds. Cloning it gives a scratch builder for dry runs.
///
/// A build is incremental: a service whose spec equals the one it had in the previous build, with the same routing
/// (connected subnets, gateways, neighbours, interfaces), is carried over from the previous snapshot as it was (its
/// Maglev table shared, its backends copied) without looking up a single id; only the services that changed are
/// built. The result is the snapshot a build from scratch would give, with the same ids.
#[derive(Debug, Default, Clone)]
pub struct ConfigBuilder {
    ids: Ids,
    generation: u64,
    prev: Option<Arc<DataplaneConfig>>,
    /// The spec each service had in the previous build, by service id (`None`: not in it).
    specs: Vec<Option<ServiceSpec>>,
    /// VIPs another appliance owns now, given to every snapshot built.
    unowned: FxHashSet<[u8; 16]>,
    /// VRRP addresses that are not VIPs, given to every snapshot built.
    virtual_addrs: FxHashSet<[u8; 16]>,
}

impl ConfigBuilder {
    /// A builder with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// The VRRP virtual routers' addresses that are not VIPs (see [`DataplaneConfig::virtual_addrs`]), for the next
    /// builds.
    pub fn set_virtual_addrs(&mut self, addrs: impl IntoIterator<Item = IpAddr>) {
        self.virtual_addrs = addrs.into_iter().map(addr16).collect();
    }

    /// The VIPs another appliance owns now (see [`DataplaneConfig::unowned_vips`]), for the next builds.
    pub fn set_unowned(&mut self, vips: impl IntoIterator<Item = IpAddr>) {
        self.unowned = vips.into_iter().map(addr16).collect();
    }

    /// Validate `model` and build the next snapshot, reporting Maglev slot movement for each service whose table was
    /// built anew (new services, and those whose active backends, weights or table size changed); the others share
    /// the previous snapshot's table and are not listed.
    /// Nothing changes in the builder when validation fails.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first offending field.
    pub fn build(&mut self, model: &Model) -> Result<(Arc<DataplaneConfig>, Vec<SlotsMoved>), ConfigError> {
        let model = validate(model)?;
        let mark = self.ids.mark();
        let built = self.build_valid(&model);
        if built.is_err() {
            // Ids handed out by the failed build are taken back, so the builder is as it was.
            self.ids.rollback(mark);
        }
        built
    }

    fn build_valid(&mut self, model: &Valid<'_>) -> Result<(Arc<DataplaneConfig>, Vec<SlotsMoved>), ConfigError> {
        let mut cfg = base_config(model, self.generation + 1);
        cfg.unowned_vips.clone_from(&self.unowned);
        cfg.virtual_addrs.clone_from(&self.virtual_addrs);
        let prev = Previous::of(self.prev.as_deref(), &self.specs, &cfg);
        let mut moved = Vec::new();
        cfg.backends = vec![None; self.ids.next_backend as usize];
        // (service id, index in the model, changed) of every service.
        let mut present: Vec<(u32, usize, bool)> = Vec::with_capacity(model.services.len());
        // Every service at the index it had last time: the VIP maps are the previous ones.
        let mut same_keys = prev.cfg.is_some_and(|c| c.services.len() == model.services.len());
        for (si, s) in model.services.iter().enumerate() {
            let key = (addr16(s.vip), s.protocol.number(), s.port.unwrap_or(0));
            // The service at this index last time, when it has this key, has its id: no lookup.
            let sid = match prev.at(si).filter(|p| (p.vip, p.proto, p.port) == key) {
                Some(p) => p.id,
                None => {
                    same_keys = false;
                    self.ids.service(key)
                }
            };
            let same_spec = prev.same_spec(sid, s);
            let service = match prev.unchanged(sid, same_spec) {
                Some(p) => {
                    prev.carry_backends(p, si, &mut cfg.backends);
                    p.clone()
                }
                None => {
                    let (service, slots_moved) = build_service(&mut cfg, &mut self.ids, &prev, si, sid, s)?;
                    if let Some(n) = slots_moved {
                        let table_size = service.maglev.size();
                        moved.push(SlotsMoved { vip: s.vip, proto: key.1, port: key.2, moved: n, table_size });
                    }
                    service
                }
            };
            present.push((sid, si, !same_spec));
            cfg.services.push(service);
        }
        match prev.cfg.filter(|_| same_keys) {
            Some(p) => {
                (cfg.vips, cfg.vip_addrs) = (p.vips.clone(), p.vip_addrs.clone());
                (cfg.vips_v4, cfg.vips_v6) = (p.vips_v4.clone(), p.vips_v6.clone());
            }
            None => cfg.index_vips(),
        }
        cfg.backend_id_limit = self.ids.next_backend;
        cfg.service_id_limit = self.ids.next_service;
        cfg.backends.resize(self.ids.next_backend as usize, None);
        self.remember(model, &present);
        self.generation += 1;
        let cfg = Arc::new(cfg);
        self.prev = Some(cfg.clone());
        Ok((cfg, moved))
    }

    /// Keep this build's specs for the next: clone those that changed, drop those of services that are gone.
    fn remember(&mut self, model: &Valid<'_>, present: &[(u32, usize, bool)]) {
        self.specs.resize(self.ids.next_service as usize, None);
        let mut live = vec![false; self.specs.len()];
        for &(sid, si, changed) in present {
            live[sid as usize] = true;
            if changed {
                self.specs[sid as usize] = Some(model.services[si].clone());
            }
        }
        for (spec, live) in self.specs.iter_mut().zip(live) {
            if !live {
                *spec = None;
            }
        }
    }
}

/// Stable ids: a service keeps its id while its key (VIP, protocol, port) exists, a backend while its address and
/// port stay in that service; new ones count up.
#[derive(Debug, Default, Clone)]
struct Ids {
    services: FxHashMap<([u8; 16], u8, u16), u32>,
    backends: FxHashMap<(u32, [u8; 18]), u32>,
    next_service: u32,
    next_backend: u32,
}

impl Ids {
    fn service(&mut self, key: ([u8; 16], u8, u16)) -> u32 {
        *self.services.entry(key).or_insert_with(|| {
            self.next_service += 1;
            self.next_service - 1
        })
    }

    fn backend(&mut self, service: u32, key: [u8; 18]) -> u32 {
        *self.backends.entry((service, key)).or_insert_with(|| {
            self.next_backend += 1;
            self.next_backend - 1
        })
    }

    /// Where the counters stand, to [`Ids::rollback`] to.
    fn mark(&self) -> (u32, u32) {
        (self.next_service, self.next_backend)
    }

    /// Forget every id handed out since `mark`.
    fn rollback(&mut self, (services, backends): (u32, u32)) {
        if self.next_service != services {
            self.services.retain(|_, id| *id < services);
        }
        if self.next_backend != backends {
            self.backends.retain(|_, id| *id < backends);
        }
        (self.next_service, self.next_backend) = (services, backends);
    }
}

/// The previous snapshot's services by stable id, with the specs they were built from, so an unchanged service is
/// carried over and a service whose Maglev input did not change keeps its table.
struct Previous<'a> {
    cfg: Option<&'a DataplaneConfig>,
    specs: &'a [Option<ServiceSpec>],
    /// Index into `cfg.services` by service id (`u32::MAX`: none).
    index: Vec<u32>,
    /// Connected subnets, gateways, neighbours and interfaces are those of the previous snapshot, so its backends'
    /// next hops and on-link checks still hold.
    same_routing: bool,
}

impl<'a> Previous<'a> {
    fn of(cfg: Option<&'a DataplaneConfig>, specs: &'a [Option<ServiceSpec>], next: &DataplaneConfig) -> Self {
        let mut index = vec![u32::MAX; cfg.map_or(0, |c| c.service_id_limit as usize)];
        for (i, s) in cfg.map_or(&[][..], |c| &c.services[..]).iter().enumerate() {
            if let Some(x) = index.get_mut(s.id as usize) {
                *x = i as u32;
            }
        }
        let same_routing = cfg.is_some_and(|p| {
            p.connected == next.connected
                && p.gateway_v4 == next.gateway_v4
                && p.gateway_v6 == next.gateway_v6
                && p.interfaces == next.interfaces
                && p.neighbours == next.neighbours
        });
        Previous { cfg, specs, index, same_routing }
    }

    fn service(&self, id: u32) -> Option<&'a Service> {
        let i = *self.index.get(id as usize)?;
        self.cfg?.services.get(i as usize)
    }

    /// The previous snapshot's service at index `si`.
    fn at(&self, si: usize) -> Option<&'a Service> {
        self.cfg?.services.get(si)
    }

    /// True when service `id` had exactly `spec` in the previous build.
    fn same_spec(&self, id: u32, spec: &ServiceSpec) -> bool {
        self.specs.get(id as usize).and_then(Option::as_ref) == Some(spec)
    }

    /// The previous snapshot's service `id` when nothing it was built from changed (`same_spec`: its spec did not).
    fn unchanged(&self, id: u32, same_spec: bool) -> Option<&'a Service> {
        (self.same_routing && same_spec).then(|| self.service(id)).flatten()
    }

    /// Copy the backends of `p` (a previous service) into `out` (by id), now belonging to the service at index `si`.
    fn carry_backends(&self, p: &Service, si: usize, out: &mut Vec<Option<Backend>>) {
        let Some(cfg) = self.cfg else { return };
        for b in p.backend_ids.iter().filter_map(|&id| cfg.backend(id)) {
            put(out, Backend { service: si as u32, ..*b });
        }
    }
}

/// Service `si` (id `sid`) of the snapshot being built (`cfg` holds its addressing; its backends are put in
/// `cfg.backends`), with its Maglev table (the previous snapshot's when the active set, weights and size are the same) and
/// the slots that moved (`None` when the table is the previous one).
fn build_service(
    cfg: &mut DataplaneConfig,
    ids: &mut Ids,
    prev: &Previous<'_>,
    si: usize,
    sid: u32,
    s: &ServiceSpec,
) -> Result<(Service, Option<usize>), ConfigError> {
    let mut active: Vec<(MaglevBackend, u32)> = Vec::new();
    let mut all_ids = Vec::with_capacity(s.backends.len());
    for b in &s.backends {
        let key = maglev::backend_key(b.addr, b.port);
        let bid = ids.backend(sid, key);
        all_ids.push(bid);
        let a16 = addr16(b.addr);
        if s.mode == Mode::DsrL2 && !cfg.is_on_link(&a16) {
            return field_err(
                crate::path!(services[si].backends),
                format!("dsr_l2 backend {} is not on-link (in no interface subnet)", b.addr),
            );
        }
        let v4 = b.addr.is_ipv4();
        let next_hop = cfg.route(&a16, v4);
        // The model gives a service's backends its VIP's family.
        let dnat = (s.mode == Mode::Nat)
            .then(|| Dnat::new(v4, &addr16(s.vip), s.port.unwrap_or(0), &a16, (b.port != 0).then_some(b.port)))
            .flatten();
        put(
            &mut cfg.backends,
            Backend { id: bid, service: si as u32, addr: a16, v4, port: b.port, state: b.state, next_hop, dnat },
        );
        if b.state == BackendState::Active {
            active.push((MaglevBackend { key, weight: b.weight }, bid));
        }
    }
    // The table lists its backends sorted by key; their ids in the same order.
    active.sort_unstable_by_key(|(b, _)| b.key);
    let mb: Vec<MaglevBackend> = active.iter().map(|(b, _)| *b).collect();
    let size = s.table_size();
    let before = prev.service(sid);
    let same = before.filter(|p| p.maglev.backends() == &mb[..] && (mb.is_empty() || p.maglev.size() == size as usize));
    let (table, maglev_ids, moved) = match same {
        Some(p) => (p.maglev.clone(), p.maglev_ids.clone(), None),
        None => {
            // Backends only added: follow the chains they start where the previous table allows, else build.
            let grown = before
                .filter(|p| p.maglev.size() == size as usize)
                .and_then(|p| added_to(p.maglev.backends(), &mb).and_then(|added| p.maglev.with_added(&added)));
            let table = match grown {
                Some(t) => t,
                None => {
                    maglev::build(&mb, size).map_err(|e| ConfigError::new(crate::path!(services[si]), e.to_string()))?
                }
            };
            let ids: Arc<[u32]> = active.iter().map(|(_, id)| *id).collect();
            let moved = before.map_or(table.size(), |p| table.moved_from(&p.maglev));
            (Arc::new(table), ids, Some(moved))
        }
    };
    let service = Service {
        id: sid,
        vip: addr16(s.vip),
        v4: s.vip.is_ipv4(),
        proto: s.protocol.number(),
        port: s.port.unwrap_or(0),
        mode: s.mode,
        affinity_ms: s.affinity_timeout_s.unwrap_or(0).saturating_mul(1000),
        gue_port: s.gue_port,
        maglev: table,
        maglev_ids,
        backend_ids: all_ids.into(),
    };
    Ok((service, moved))
}

/// The backends of `now` that `before` lacks, when `now` holds every backend of `before` with the same weight (both
/// in key order); `None` otherwise.
fn added_to(before: &[MaglevBackend], now: &[MaglevBackend]) -> Option<Vec<MaglevBackend>> {
    if now.len() <= before.len() {
        return None;
    }
    let mut added = Vec::with_capacity(now.len() - before.len());
    let mut old = before.iter().peekable();
    for b in now {
        match old.peek() {
            Some(o) if o.key == b.key => {
                if o.weight != b.weight {
                    return None;
                }
                old.next();
            }
            _ => added.push(*b),
        }
    }
    old.peek().is_none().then_some(added)
}

/// Put `b` at its id in `backends`, growing it when the id is new.
fn put(backends: &mut Vec<Option<Backend>>, b: Backend) {
    let id = b.id as usize;
    if id >= backends.len() {
        backends.resize(id + 1, None);
    }
    backends[id] = Some(b);
}

/// A snapshot's addressing, before its services: own and connected addresses, gateways, full-NAT and tunnel
/// sources, neighbours, timeouts.
fn base_config(model: &Valid<'_>, generation: u64) -> DataplaneConfig {
    let t = &model.timeouts;
    let mut cfg = DataplaneConfig {
        generation,
        services: Vec::with_capacity(model.services.len()),
        backends: Vec::new(),
        vips: FxHashMap::default(),
        vips_v4: VipIndex::default(),
        vips_v6: VipIndex::default(),
        vip_addrs: VipIndex::default(),
        own_addrs: FxHashSet::default(),
        interfaces: model.interfaces.clone(),
        connected: Vec::new(),
        gateway_v4: None,
        gateway_v6: None,
        gateway_hops: [None; 2],
        neighbours: model.neighbours.iter().map(|(a, m)| (addr16(*a), *m)).collect(),
        snat_v4: None,
        snat_v6: None,
        snat_ports: model.fullnat_ports,
        tunnel_v4: None,
        tunnel_v6: None,
        timeouts_ms: t.in_ms(),
        backend_id_limit: 0,
        service_id_limit: 0,
        draining: model.draining,
        unowned_vips: FxHashSet::default(),
        virtual_addrs: FxHashSet::default(),
    };
    for itf in &model.interfaces {
        for (a, plen) in &itf.addrs {
            cfg.own_addrs.insert(addr16(*a));
            let plen16 = if a.is_ipv4() { plen + 96 } else { *plen };
            cfg.connected.push(Subnet::new(&addr16(*a), plen16, itf.port));
        }
    }
    for g in &model.gateways {
        match g {
            IpAddr::V4(_) => cfg.gateway_v4 = Some(addr16(*g)),
            IpAddr::V6(_) => cfg.gateway_v6 = Some(addr16(*g)),
        }
    }
    cfg.resolve_gateways();
    for s in &model.fullnat_sources {
        match s {
            IpAddr::V4(a) => cfg.snat_v4 = Some(a.octets()),
            IpAddr::V6(a) => cfg.snat_v6 = Some(a.octets()),
        }
    }
    for (a, plen) in &model.tunnel_sources {
        match a {
            IpAddr::V4(v) => {
                let host = if *plen >= 32 { 0 } else { u32::MAX >> plen };
                cfg.tunnel_v4 = Some((v.octets(), host));
            }
            IpAddr::V6(v) => {
                let host = if *plen >= 128 {
                    0
                } else if *plen <= 96 {
                    u32::MAX
                } else {
                    u32::MAX >> (plen - 96)
                };
                cfg.tunnel_v6 = Some((v.octets(), host));
            }
        }
    }
    cfg
}

/// The published snapshot. Cloning the handle shares it.
#[derive(Debug, Clone)]
pub struct ConfigHandle(Arc<ArcSwap<DataplaneConfig>>);

impl ConfigHandle {
    /// A handle holding `cfg`.
    pub fn new(cfg: Arc<DataplaneConfig>) -> Self {
        Self(Arc::new(ArcSwap::new(cfg)))
    }
    /// Publish a new snapshot; workers pick it up at their next burst.
    pub fn publish(&self, cfg: Arc<DataplaneConfig>) {
        self.0.store(cfg);
    }
    /// Load the current snapshot (cheap; once per burst).
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<DataplaneConfig>> {
        self.0.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address that differs from the prefix in bit `k` alone (0 the most significant) is inside it exactly when
    /// `k` is at or past the length, for every length 0 to 128; past 128 only the address itself is.
    #[test]
    fn prefix_match_is_bit_exact() {
        let bases =
            [[0u8; 16], [0xff; 16], addr16("198.18.2.1".parse().unwrap()), addr16("2001:db8::5".parse().unwrap())];
        for p in bases {
            for plen in 0..=255u8 {
                assert!(prefix_match(&p, &p, plen), "{p:?}/{plen}: itself");
                for k in 0..128u32 {
                    let a = (u128::from_be_bytes(p) ^ (1u128 << (127 - k))).to_be_bytes();
                    assert_eq!(prefix_match(&a, &p, plen), k >= u32::from(plen.min(128)), "{p:?}/{plen}, bit {k}");
                }
            }
        }
    }

    /// `route` with the gateways' hops resolved once gives what the full scan gives at packet time: the on-link
    /// neighbour, else the family's gateway through the port of its subnet, for gateways on and off link, with and
    /// without their MAC, both families.
    #[test]
    fn route_gives_what_the_scan_of_the_addressing_gives() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let (gw4, gw6) = (ip("198.18.1.254"), ip("2001:db8:1::fe"));
        let dsts = [
            "198.18.0.7",
            "198.18.1.254",
            "198.18.1.9",
            "198.19.5.5",
            "2001:db8:0::7",
            "2001:db8:1::fe",
            "2001:db8:1::9",
            "2001:db8:ff::1",
        ];
        let mut routed = [0usize; 2];
        for (gateways, known) in [
            (vec![gw4, gw6], vec![gw4, gw6]),
            (vec![gw4, gw6], vec![]),
            (vec![ip("198.19.9.1"), ip("2001:db8:9::1")], vec![ip("198.19.9.1"), ip("2001:db8:9::1")]),
            (vec![], vec![]),
        ] {
            let mut neighbours: Vec<(IpAddr, Mac)> =
                vec![(ip("198.18.0.7"), [2, 0, 0, 0, 0, 7]), (ip("2001:db8::7"), [2, 0, 0, 0, 6, 7])];
            neighbours.extend(known.iter().enumerate().map(|(i, a)| (*a, [2, 0, 0, 0, 1, i as u8])));
            let model = Model {
                interfaces: vec![
                    InterfaceSpec {
                        port: 0,
                        mac: [2, 0, 0, 0, 0, 1],
                        addrs: vec![(ip("198.18.0.1"), 24), (ip("2001:db8::1"), 64)],
                        mtu: 1500,
                    },
                    InterfaceSpec {
                        port: 1,
                        mac: [2, 0, 0, 0, 0, 2],
                        addrs: vec![(ip("198.18.1.1"), 24), (ip("2001:db8:1::1"), 64)],
                        mtu: 9000,
                    },
                ],
                gateways,
                neighbours,
                ..Model::default()
            };
            let cfg = base_config(&crate::model::validate(&model).unwrap(), 1);
            for d in dsts {
                let (a, v4) = (addr16(ip(d)), ip(d).is_ipv4());
                let want = cfg.route_via(&a, v4).and_then(|(port, via)| {
                    let mac = *cfg.neighbours.get(&via)?;
                    let itf = cfg.interfaces.iter().find(|i| i.port == port)?;
                    Some(NextHop { port, mac, src_mac: itf.mac, mtu: itf.mtu })
                });
                assert_eq!(cfg.route(&a, v4), want, "{d} with gateways {:?}, known {known:?}", model.gateways);
                if let Some(h) = want {
                    routed[usize::from(h.port)] += 1;
                }
            }
        }
        // Both ports carried routes: on-link to port 0, through the gateway to port 1.
        assert!(routed[0] >= 4 && routed[1] >= 4, "{routed:?}");
    }

    /// Every key inserted is found with its value, at every fill up to the planned size; keys never inserted are not.
    #[test]
    fn vip_index_finds_what_it_holds_only() {
        for n in [0usize, 1, 2, 3, 7, 64, 1000] {
            let mut ix = VipIndex::with_room(n);
            let mut ix6 = VipIndex::with_room(n);
            let key = |i: usize| v4_service_key([198, 19, (i >> 8) as u8, i as u8], 6, 80 + (i % 3) as u16);
            let key6 = |i: usize| {
                let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                a[14..].copy_from_slice(&(i as u16).to_be_bytes());
                (a, 17u8, 53 + (i % 2) as u16)
            };
            // Addresses, IPv4-mapped and IPv6 alternately (the VIP-address index).
            let mut ixa = VipIndex::with_room(n);
            let addr = |i: usize| -> u128 {
                let a = if i.is_multiple_of(2) {
                    format!("198.19.{}.{}", i >> 8 & 0xff, i & 0xff)
                } else {
                    format!("2001:db8::{i:x}")
                };
                u128::from_be_bytes(addr16(a.parse().unwrap()))
            };
            for i in 0..n {
                ix.insert(key(i), i as u32);
                ix6.insert(key6(i), i as u32);
                ixa.insert(addr(i), i as u32);
            }
            for i in 0..n {
                assert_eq!(ix.get(&key(i)), Some(i as u32), "n {n} key {i}");
                assert_eq!(ix6.get(&key6(i)), Some(i as u32), "n {n} IPv6 key {i}");
                assert_eq!(ixa.get(&addr(i)), Some(i as u32), "n {n} address {i}");
            }
            for i in n..n + 50 {
                assert_eq!(ix.get(&key(i)), None, "n {n} absent key {i}");
                assert_eq!(ix6.get(&key6(i)), None, "n {n} absent IPv6 key {i}");
                assert_eq!(ixa.get(&addr(i)), None, "n {n} absent address {i}");
            }
        }
        assert_eq!(VipIndex::default().get(&v4_service_key([198, 19, 0, 1], 6, 80)), None);
        assert_eq!(VipIndex::<u128>::default().get(&0), None);
    }
}
