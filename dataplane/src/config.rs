//! The validated service model and the immutable [`DataplaneConfig`] snapshot that workers read.
//!
//! The control plane (config file, gRPC, Kubernetes) produces a [`Model`]; [`ConfigBuilder::build`] validates it into
//! typed values, builds one Maglev table per service and resolves next hops, all off the hot path. The result is
//! published through [`ConfigHandle`] (an `arc-swap`); a worker loads it once per burst.
//!
//! Services and backends keep **stable ids** across builds (keyed by VIP/protocol/port and backend address/port), so
//! a flow tracked under one snapshot finds its backend in the next. Ids are never reused within a process.

use crate::lb::maglev::{self, MaglevBackend, MaglevTable};
use crate::wire::ethernet::Mac;
use crate::wire::proto;
use arc_swap::ArcSwap;
use rustc_hash::{FxHashMap, FxHashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Index of a port within a worker's port list.
pub type PortId = u16;

/// How a VIP's packets reach a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Destination rewritten to the backend; replies pass back through the appliance, source restored to the VIP.
    Nat,
    /// Destination and source rewritten (source to an appliance address and port); replies reversed.
    FullNat,
    /// Packet unchanged but for the destination MAC; the backend holds the VIP on a loopback and answers directly.
    DsrL2,
    /// Packet encapsulated in IP (4in4, 6in6; RFC 2003, RFC 2473) to the backend, which answers directly.
    Ipip,
    /// Packet encapsulated in UDP with a GUE header to the backend, which answers directly.
    Gue,
}

impl Mode {
    /// True for modes whose replies come back through the appliance.
    pub fn is_nat(self) -> bool {
        matches!(self, Mode::Nat | Mode::FullNat)
    }
    /// Config name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Nat => "nat",
            Mode::FullNat => "fullnat",
            Mode::DsrL2 => "dsr_l2",
            Mode::Ipip => "ipip",
            Mode::Gue => "gue",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Ok(match s {
            "nat" => Mode::Nat,
            "fullnat" => Mode::FullNat,
            "dsr_l2" => Mode::DsrL2,
            "ipip" => Mode::Ipip,
            "gue" => Mode::Gue,
            _ => {
                return Err(ConfigError::new(
                    "mode",
                    format!("unknown mode {s:?}; expected nat, fullnat, dsr_l2, ipip or gue"),
                ))
            }
        })
    }
}

/// Transport protocol of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => proto::TCP,
            Protocol::Udp => proto::UDP,
        }
    }
}

/// Backend administrative / health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// In the Maglev table.
    Active,
    /// Out of the table; flows already tracked to it keep going to it.
    Draining,
    /// Out of the table; tracked flows are rescheduled.
    Down,
}

/// One backend of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Address.
    pub addr: IpAddr,
    /// Port; 0 keeps the client's destination port (required for all-ports VIPs).
    pub port: u16,
    /// Relative weight, 1 to 65535.
    pub weight: u32,
    /// State.
    pub state: BackendState,
}

/// One VIP service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// VIP address.
    pub vip: IpAddr,
    /// Protocol.
    pub protocol: Protocol,
    /// Port; `None` for all ports.
    pub port: Option<u16>,
    /// Forwarding mode.
    pub mode: Mode,
    /// ClientIP affinity timeout in seconds (Kubernetes `sessionAffinityConfig.clientIP.timeoutSeconds`);
    /// `None` for plain Maglev over the 5-tuple.
    pub affinity_timeout_s: Option<u32>,
    /// Maglev table size (a prime).
    pub maglev_size: u32,
    /// Destination UDP port of GUE encapsulation.
    pub gue_port: u16,
    /// Backends.
    pub backends: Vec<BackendSpec>,
    /// Health checking of the backends (done by the control plane; the dataplane sees only backend states).
    pub health: Option<HealthSpec>,
}

/// How the control plane probes a service's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// A TCP connection is accepted.
    Tcp,
    /// `GET path` over HTTP/1.0 answers with this status.
    Http {
        /// Request path, starting with `/`.
        path: String,
        /// Expected status code.
        expect_status: u16,
    },
}

/// A health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    /// Probe.
    pub kind: HealthKind,
    /// Port to probe; 0: the backend's port.
    pub port: u16,
    /// Milliseconds between probes.
    pub interval_ms: u32,
    /// Milliseconds a probe may take.
    pub timeout_ms: u32,
    /// Consecutive successes that bring a failed backend back.
    pub rise: u32,
    /// Consecutive failures that take a backend out.
    pub fall: u32,
    /// The service's policy for a failed backend's tracked flows: keep them on it (true: the backend drains) or
    /// reschedule them (false: the backend is down).
    pub keep_flows: bool,
}

impl HealthSpec {
    /// Milliseconds between probes unless given (the config file and the API both use these).
    pub const DEFAULT_INTERVAL_MS: u32 = 2000;
    /// Milliseconds a probe may take unless given.
    pub const DEFAULT_TIMEOUT_MS: u32 = 1000;
    /// Successes that bring a failed backend back unless given.
    pub const DEFAULT_RISE: u32 = 2;
    /// Failures that take a backend out unless given.
    pub const DEFAULT_FALL: u32 = 3;
    /// HTTP path unless given.
    pub const DEFAULT_HTTP_PATH: &'static str = "/";
    /// HTTP status expected unless given.
    pub const DEFAULT_HTTP_STATUS: u16 = 200;
}

impl ServiceSpec {
    /// A service with defaults: Maglev 65537, no affinity, GUE port 6080.
    pub fn new(vip: IpAddr, protocol: Protocol, port: Option<u16>, mode: Mode, backends: Vec<BackendSpec>) -> Self {
        Self {
            vip,
            protocol,
            port,
            mode,
            affinity_timeout_s: None,
            maglev_size: maglev::DEFAULT_TABLE_SIZE,
            gue_port: crate::wire::gue::DEFAULT_PORT,
            backends,
            health: None,
        }
    }
}

/// One interface (port) of the appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSpec {
    /// Port index.
    pub port: PortId,
    /// The port's MAC.
    pub mac: Mac,
    /// Addresses with prefix length; they are the appliance's own (slow path) and define on-link subnets.
    pub addrs: Vec<(IpAddr, u8)>,
    /// IP MTU.
    pub mtu: u16,
}

/// Flow-state timeouts in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after SYN (or an unconfirmed mid-flow pick-up), before the handshake completes.
    pub tcp_syn: u32,
    /// TCP established.
    pub tcp_established: u32,
    /// TCP after FIN or RST.
    pub tcp_closing: u32,
    /// UDP.
    pub udp: u32,
    /// Fragment table entries.
    pub fragment: u32,
}

impl Timeouts {
    /// The same timeouts in milliseconds (what workers compare with their millisecond clock).
    pub fn in_ms(&self) -> Self {
        let ms = |s: u32| s.saturating_mul(1000);
        Self {
            tcp_syn: ms(self.tcp_syn),
            tcp_established: ms(self.tcp_established),
            tcp_closing: ms(self.tcp_closing),
            udp: ms(self.udp),
            fragment: ms(self.fragment),
        }
    }
}

impl Default for Timeouts {
    /// IPVS-like defaults (ipvsadm --set 900 120 300), shorter for half-open flows.
    fn default() -> Self {
        Self { tcp_syn: 30, tcp_established: 900, tcp_closing: 120, udp: 300, fragment: 5 }
    }
}

/// Everything the dataplane needs, as the control plane states it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Model {
    /// Services.
    pub services: Vec<ServiceSpec>,
    /// Interfaces.
    pub interfaces: Vec<InterfaceSpec>,
    /// Default gateways (at most one per family).
    pub gateways: Vec<IpAddr>,
    /// Static or resolved neighbours.
    pub neighbours: Vec<(IpAddr, Mac)>,
    /// Full-NAT source addresses (at most one per family); must be own addresses.
    pub fullnat_sources: Vec<IpAddr>,
    /// Full-NAT source port range, shared out among workers.
    pub fullnat_ports: (u16, u16),
    /// Tunnel outer source prefix per family (address, prefix length); the host bits carry a per-flow hash.
    pub tunnel_sources: Vec<(IpAddr, u8)>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Draining the appliance: tracked flows keep going, new flows are refused (counted `draining`).
    pub draining: bool,
}

/// A validation error naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// Path of the offending field, e.g. `services[2].backends[0].weight`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl ConfigError {
    /// Build an error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

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
    /// Maglev table over the active backends.
    pub maglev: MaglevTable,
    /// Backend id of each Maglev backend index.
    pub maglev_ids: Vec<u32>,
    /// Ids of all backends (any state), for stats.
    pub backend_ids: Vec<u32>,
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
    /// VIP addresses; the value's bit 0 / bit 1 say an all-ports TCP / UDP service exists on the address.
    vip_addrs: FxHashMap<[u8; 16], u8>,
    own_addrs: FxHashSet<[u8; 16]>,
    /// Interfaces.
    pub interfaces: Vec<InterfaceSpec>,
    connected: Vec<([u8; 16], u8, PortId)>,
    gateway_v4: Option<[u8; 16]>,
    gateway_v6: Option<[u8; 16]>,
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

fn prefix_match(a: &[u8; 16], p: &[u8; 16], plen16: u8) -> bool {
    let full = usize::from(plen16 / 8);
    if a[..full] != p[..full] {
        return false;
    }
    let rem = plen16 % 8;
    rem == 0 || (a[full] ^ p[full]) & (0xffu8 << (8 - rem)) == 0
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
        let Some(&all) = self.vip_addrs.get(dst) else { return Classified::NotVip };
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
    /// True when `a` is a VIP address (of any service).
    #[inline]
    pub fn is_vip(&self, a: &[u8; 16]) -> bool {
        self.vip_addrs.contains_key(a)
    }
    /// True when `a` is one of the appliance's own addresses.
    #[inline]
    pub fn is_own(&self, a: &[u8; 16]) -> bool {
        self.own_addrs.contains(a)
    }
    /// The backend with a stable id.
    #[inline]
    pub fn backend(&self, id: u32) -> Option<&Backend> {
        self.backends.get(id as usize).and_then(Option::as_ref)
    }
    /// Next hop toward `dst` at packet time: on-link neighbour, else the gateway of its family.
    pub fn route(&self, dst: &[u8; 16], v4: bool) -> Option<NextHop> {
        let (port, via) = self.route_via(dst, v4)?;
        let mac = *self.neighbours.get(&via)?;
        let itf = self.interfaces.iter().find(|i| i.port == port)?;
        Some(NextHop { port, mac, src_mac: itf.mac, mtu: itf.mtu })
    }
    /// The egress port toward `dst` and the address whose MAC the frame needs (`dst` itself when on-link, else the
    /// family's gateway), whether that MAC is known or not.
    pub fn route_via(&self, dst: &[u8; 16], v4: bool) -> Option<(PortId, [u8; 16])> {
        match self.connected.iter().find(|(p, l, _)| prefix_match(dst, p, *l)) {
            Some(&(_, _, port)) => Some((port, *dst)),
            None => {
                let gw = if v4 { self.gateway_v4 } else { self.gateway_v6 }?;
                let port = self.connected.iter().find(|(p, l, _)| prefix_match(&gw, p, *l))?.2;
                Some((port, gw))
            }
        }
    }
    /// True when `a` lies in a connected subnet.
    pub fn is_on_link(&self, a: &[u8; 16]) -> bool {
        self.connected.iter().any(|(p, l, _)| prefix_match(a, p, *l))
    }
    /// MAC and MTU of a port.
    pub fn interface(&self, port: PortId) -> Option<&InterfaceSpec> {
        self.interfaces.iter().find(|i| i.port == port)
    }
}

/// Builds snapshots and keeps the stable ids between builds. Cloning it gives a scratch builder for dry runs.
#[derive(Debug, Default, Clone)]
pub struct ConfigBuilder {
    service_ids: FxHashMap<([u8; 16], u8, u16), u32>,
    backend_ids: FxHashMap<(u32, [u8; 18]), u32>,
    next_service: u32,
    next_backend: u32,
    generation: u64,
    prev: Option<Arc<DataplaneConfig>>,
}

fn field_err<T>(field: String, msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::new(field, msg))
}

impl ConfigBuilder {
    /// A builder with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validate `model` and build the next snapshot, reporting Maglev slot movement per service.
    /// Nothing changes in the builder when validation fails.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first offending field.
    pub fn build(&mut self, model: &Model) -> Result<(Arc<DataplaneConfig>, Vec<SlotsMoved>), ConfigError> {
        validate(model)?;
        let t = &model.timeouts;
        let mut cfg = DataplaneConfig {
            generation: self.generation + 1,
            services: Vec::with_capacity(model.services.len()),
            backends: Vec::new(),
            vips: FxHashMap::default(),
            vip_addrs: FxHashMap::default(),
            own_addrs: FxHashSet::default(),
            interfaces: model.interfaces.clone(),
            connected: Vec::new(),
            gateway_v4: None,
            gateway_v6: None,
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
        };
        for itf in &model.interfaces {
            for (a, plen) in &itf.addrs {
                cfg.own_addrs.insert(addr16(*a));
                let plen16 = if a.is_ipv4() { plen + 96 } else { *plen };
                cfg.connected.push((addr16(*a), plen16, itf.port));
            }
        }
        for g in &model.gateways {
            match g {
                IpAddr::V4(_) => cfg.gateway_v4 = Some(addr16(*g)),
                IpAddr::V6(_) => cfg.gateway_v6 = Some(addr16(*g)),
            }
        }
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
        // Ids: computed into scratch maps so a failure below leaves the builder untouched.
        let mut service_ids = self.service_ids.clone();
        let mut backend_ids = self.backend_ids.clone();
        let (mut next_s, mut next_b) = (self.next_service, self.next_backend);
        let mut moved = Vec::new();
        let mut backends: Vec<Backend> = Vec::new();
        for (si, s) in model.services.iter().enumerate() {
            let vip = addr16(s.vip);
            let proto = s.protocol.number();
            let port = s.port.unwrap_or(0);
            let sid = *service_ids.entry((vip, proto, port)).or_insert_with(|| {
                next_s += 1;
                next_s - 1
            });
            let mut mb = Vec::new();
            let mut mb_ids = Vec::new();
            let mut all_ids = Vec::new();
            let mut id_of_key: FxHashMap<[u8; 18], u32> = FxHashMap::default();
            for b in &s.backends {
                let key = maglev::backend_key(b.addr, b.port);
                let bid = *backend_ids.entry((sid, key)).or_insert_with(|| {
                    next_b += 1;
                    next_b - 1
                });
                all_ids.push(bid);
                id_of_key.insert(key, bid);
                let a16 = addr16(b.addr);
                let next_hop = cfg.route(&a16, b.addr.is_ipv4());
                if s.mode == Mode::DsrL2 && !cfg.is_on_link(&a16) {
                    return field_err(
                        format!("services[{si}].backends"),
                        format!("dsr_l2 backend {} is not on-link (in no interface subnet)", b.addr),
                    );
                }
                backends.push(Backend {
                    id: bid,
                    service: si as u32,
                    addr: a16,
                    v4: b.addr.is_ipv4(),
                    port: b.port,
                    state: b.state,
                    next_hop,
                });
                if b.state == BackendState::Active {
                    mb.push(MaglevBackend { key, weight: b.weight });
                }
            }
            let table = maglev::build(&mb, s.maglev_size)
                .map_err(|e| ConfigError::new(format!("services[{si}]"), e.to_string()))?;
            for x in table.backends() {
                mb_ids.push(id_of_key.get(&x.key).copied().unwrap_or(u32::MAX));
            }
            let prev_table =
                self.prev.as_ref().and_then(|p| p.services.iter().find(|ps| ps.id == sid)).map(|ps| &ps.maglev);
            moved.push(SlotsMoved {
                vip: s.vip,
                proto,
                port,
                moved: match prev_table {
                    Some(pt) => table.moved_from(pt),
                    None => table.size(),
                },
            });
            cfg.vips.insert((vip, proto, port), si as u32);
            let bit = match (port, s.protocol) {
                (0, Protocol::Tcp) => 1,
                (0, Protocol::Udp) => 2,
                _ => 0,
            };
            *cfg.vip_addrs.entry(vip).or_insert(0) |= bit;
            cfg.services.push(Service {
                id: sid,
                vip,
                v4: s.vip.is_ipv4(),
                proto,
                port,
                mode: s.mode,
                affinity_ms: s.affinity_timeout_s.unwrap_or(0).saturating_mul(1000),
                gue_port: s.gue_port,
                maglev: table,
                maglev_ids: mb_ids,
                backend_ids: all_ids,
            });
        }
        cfg.backend_id_limit = next_b;
        cfg.service_id_limit = next_s;
        cfg.backends = vec![None; next_b as usize];
        for b in backends {
            let id = b.id as usize;
            cfg.backends[id] = Some(b);
        }
        self.service_ids = service_ids;
        self.backend_ids = backend_ids;
        self.next_service = next_s;
        self.next_backend = next_b;
        self.generation += 1;
        let cfg = Arc::new(cfg);
        self.prev = Some(cfg.clone());
        Ok((cfg, moved))
    }
}

/// Validate a model; the error names the field.
///
/// # Errors
/// A [`ConfigError`] naming the first offending field.
pub fn validate(m: &Model) -> Result<(), ConfigError> {
    let mut seen = FxHashSet::default();
    let own: FxHashSet<IpAddr> = m.interfaces.iter().flat_map(|i| i.addrs.iter().map(|(a, _)| *a)).collect();
    let mut ports = FxHashSet::default();
    for (ii, itf) in m.interfaces.iter().enumerate() {
        if !ports.insert(itf.port) {
            return field_err(format!("interfaces[{ii}].port"), format!("port {} listed twice", itf.port));
        }
        if !(576..=9216).contains(&itf.mtu) {
            return field_err(format!("interfaces[{ii}].mtu"), format!("mtu {} outside 576..=9216", itf.mtu));
        }
        for (ai, (a, plen)) in itf.addrs.iter().enumerate() {
            let max = if a.is_ipv4() { 32 } else { 128 };
            if *plen > max || *plen == 0 {
                return field_err(
                    format!("interfaces[{ii}].addrs[{ai}]"),
                    format!("prefix length {plen} outside 1..={max}"),
                );
            }
        }
    }
    let (lo, hi) = m.fullnat_ports;
    if m.services.iter().any(|s| s.mode == Mode::FullNat) && (lo == 0 || hi < lo || hi - lo < 63) {
        return field_err(
            "fullnat_ports".into(),
            format!("range {lo}..={hi} must be non-empty, start above 0 and hold at least 64 ports"),
        );
    }
    for (i, s) in m.fullnat_sources.iter().enumerate() {
        if !own.contains(s) {
            return field_err(format!("fullnat_sources[{i}]"), format!("{s} is not an address of any interface"));
        }
    }
    for (i, (a, plen)) in m.tunnel_sources.iter().enumerate() {
        let max = if a.is_ipv4() { 32 } else { 128 };
        if *plen > max {
            return field_err(format!("tunnel_sources[{i}]"), format!("prefix length {plen} above {max}"));
        }
    }
    let t = &m.timeouts;
    for (name, v) in [
        ("tcp_syn", t.tcp_syn),
        ("tcp_established", t.tcp_established),
        ("tcp_closing", t.tcp_closing),
        ("udp", t.udp),
        ("fragment", t.fragment),
    ] {
        if v == 0 || u64::from(v) * 1000 > u64::from(crate::lb::conntrack::MAX_TIMEOUT_MS) {
            return field_err(format!("timeouts.{name}"), format!("{v} s outside 1..=604800"));
        }
    }
    for (si, s) in m.services.iter().enumerate() {
        let f = |x: &str| format!("services[{si}].{x}");
        if s.vip.is_unspecified() || s.vip.is_multicast() || s.vip.is_loopback() {
            return field_err(f("vip"), format!("{} is not a unicast address", s.vip));
        }
        if let IpAddr::V4(v) = s.vip {
            if v.is_broadcast() {
                return field_err(f("vip"), "broadcast address");
            }
        }
        if s.port == Some(0) {
            return field_err(f("port"), "port 0; omit the port for an all-ports service");
        }
        if !seen.insert((s.vip, s.protocol, s.port)) {
            return field_err(f("vip"), format!("duplicate VIP {} {:?} port {:?}", s.vip, s.protocol, s.port));
        }
        if own.contains(&s.vip) {
            return field_err(f("vip"), format!("{} is an interface address of the appliance", s.vip));
        }
        if !maglev::is_prime(s.maglev_size) || s.maglev_size > maglev::MAX_TABLE_SIZE || s.maglev_size < 3 {
            return field_err(
                f("maglev_size"),
                format!("{} must be a prime up to {}", s.maglev_size, maglev::MAX_TABLE_SIZE),
            );
        }
        if s.backends.len() > (s.maglev_size as usize).min(maglev::MAX_BACKENDS) {
            return field_err(f("backends"), format!("{} backends exceed the Maglev table size", s.backends.len()));
        }
        if let Some(a) = s.affinity_timeout_s {
            if a == 0 || a > 86_400 {
                return field_err(f("affinity_timeout_s"), format!("{a} outside 1..=86400 (Kubernetes' maximum)"));
            }
        }
        if s.mode == Mode::Gue && s.gue_port == 0 {
            return field_err(f("gue_port"), "port 0");
        }
        if matches!(s.mode, Mode::Ipip | Mode::Gue)
            && !m.tunnel_sources.iter().any(|(a, _)| a.is_ipv4() == s.vip.is_ipv4())
        {
            return field_err(
                f("mode"),
                format!("{} needs a tunnel_sources prefix of the VIP's family ({})", s.mode.name(), s.vip),
            );
        }
        if s.mode == Mode::FullNat {
            let have = m.fullnat_sources.iter().any(|a| a.is_ipv4() == s.vip.is_ipv4());
            if !have {
                return field_err(
                    f("mode"),
                    format!("fullnat needs a fullnat_sources address of the VIP's family ({})", s.vip),
                );
            }
        }
        if let Some(h) = &s.health {
            if !(100..=3_600_000).contains(&h.interval_ms) {
                return field_err(f("health.interval_ms"), format!("{} outside 100..=3600000", h.interval_ms));
            }
            if h.timeout_ms < 10 || h.timeout_ms > h.interval_ms {
                return field_err(f("health.timeout_ms"), format!("{} outside 10..=interval_ms", h.timeout_ms));
            }
            if !(1..=100).contains(&h.rise) {
                return field_err(f("health.rise"), format!("{} outside 1..=100", h.rise));
            }
            if !(1..=100).contains(&h.fall) {
                return field_err(f("health.fall"), format!("{} outside 1..=100", h.fall));
            }
            if let HealthKind::Http { path, expect_status } = &h.kind {
                if !path.starts_with('/') || path.len() > 1024 || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    return field_err(
                        f("health.path"),
                        format!("{path:?}: an absolute path without spaces or controls"),
                    );
                }
                if !(100..=599).contains(expect_status) {
                    return field_err(f("health.expect_status"), format!("{expect_status} is not an HTTP status"));
                }
            }
            if h.port == 0 && s.backends.iter().any(|b| b.port == 0) && s.port.is_none() {
                return field_err(f("health.port"), "backends keep the client's port: give the port to probe");
            }
        }
        let mut bseen = FxHashSet::default();
        for (bi, b) in s.backends.iter().enumerate() {
            let g = |x: &str| format!("services[{si}].backends[{bi}].{x}");
            if b.addr.is_unspecified() || b.addr.is_multicast() {
                return field_err(g("addr"), format!("{} is not a unicast address", b.addr));
            }
            if b.addr.is_ipv4() != s.vip.is_ipv4() {
                return field_err(g("addr"), format!("{} and VIP {} are of different families", b.addr, s.vip));
            }
            if b.weight == 0 || b.weight > maglev::MAX_WEIGHT {
                return field_err(g("weight"), format!("{} outside 1..={}", b.weight, maglev::MAX_WEIGHT));
            }
            if s.port.is_none() && b.port != 0 {
                return field_err(g("port"), "an all-ports service keeps the client's port: backend port must be 0");
            }
            if matches!(s.mode, Mode::DsrL2 | Mode::Ipip | Mode::Gue) && b.port != 0 && Some(b.port) != s.port {
                return field_err(
                    g("port"),
                    format!("{} mode cannot change the port: use 0 or the VIP's port", s.mode.name()),
                );
            }
            if !bseen.insert((b.addr, b.port)) {
                return field_err(g("addr"), format!("duplicate backend {}:{}", b.addr, b.port));
            }
        }
    }
    Ok(())
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
