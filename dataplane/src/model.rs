//! The service model operators write (through the config file, the gRPC API or Kubernetes) and its one validation.
//!
//! A [`Model`] is plain data: services with their backends and health checks, interfaces, neighbours, timeouts.
//! [`validate`] is the one place each rule is checked, whichever way the model arrived; its [`ConfigError`] names
//! the field (`services[2].backends[0].weight`), and each caller renders that path in its own terms. Workers never
//! read a model: [`crate::snapshot::ConfigBuilder`] turns a valid one into the snapshot they read.

use crate::lb::maglev;
use crate::wire::ethernet::Mac;
use crate::wire::proto;
use rustc_hash::FxHashSet;
use std::net::IpAddr;

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
                    crate::path!(mode),
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
    /// Maglev table size (a prime); `None` chooses it from the backend count ([`ServiceSpec::table_size`]).
    pub maglev_size: Option<u32>,
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
    /// A service with defaults: Maglev table sized from the backend count, no affinity, GUE port 6080.
    pub fn new(vip: IpAddr, protocol: Protocol, port: Option<u16>, mode: Mode, backends: Vec<BackendSpec>) -> Self {
        Self {
            vip,
            protocol,
            port,
            mode,
            affinity_timeout_s: None,
            maglev_size: None,
            gue_port: crate::wire::gue::DEFAULT_PORT,
            backends,
            health: None,
        }
    }

    /// The Maglev table size this service gets: `maglev_size` when given, else [`maglev::size_for`] the number of
    /// backends in any state (so draining or failing a backend never resizes the table and moves every slot).
    pub fn table_size(&self) -> u32 {
        self.maglev_size.unwrap_or_else(|| maglev::size_for(self.backends.len()))
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

/// One step of a [`FieldPath`]: a named field or a list index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A field, by the model's name for it.
    Field(&'static str),
    /// A position in a list.
    Index(usize),
}

/// Where a value sits in an input, in the model's names: `services[2].backends[0].weight`. Built with [`crate::path!`];
/// each caller shows it in its own terms with [`FieldPath::render`], the one place names are translated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Step>);

impl FieldPath {
    /// A path of these steps.
    pub fn new(steps: Vec<Step>) -> Self {
        Self(steps)
    }

    /// This path and then a field.
    #[must_use]
    pub fn field(mut self, name: &'static str) -> Self {
        self.0.push(Step::Field(name));
        self
    }

    /// This path and then a list index.
    #[must_use]
    pub fn index(mut self, i: usize) -> Self {
        self.0.push(Step::Index(i));
        self
    }

    /// The steps, outermost first.
    pub fn steps(&self) -> &[Step] {
        &self.0
    }

    /// The index that follows the first field called `name`: 2 for `services` in `services[2].vip`.
    pub fn index_after(&self, name: &str) -> Option<usize> {
        self.0.windows(2).find_map(|w| match w {
            [Step::Field(f), Step::Index(i)] if *f == name => Some(*i),
            _ => None,
        })
    }

    /// The path with a leading `from` replaced by `to`; unchanged when it does not start with `from`.
    #[must_use]
    pub fn rebase(self, from: &[Step], to: &[Step]) -> Self {
        match self.0.strip_prefix(from) {
            Some(rest) => Self(to.iter().chain(rest).copied().collect()),
            None => self,
        }
    }

    /// The path in a caller's terms: each field listed in `names` as (model name, caller's name) is renamed, the rest
    /// keep the model's name. A caller's name may hold a dot (`fullnat_sources` is `fullnat.sources` in the file).
    pub fn render(&self, names: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for step in &self.0 {
            match step {
                Step::Field(f) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(names.iter().find(|(m, _)| m == f).map_or(*f, |(_, c)| *c));
                }
                Step::Index(i) => {
                    use std::fmt::Write;
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        out
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(&[]))
    }
}

/// A [`FieldPath`] written as it reads: `path!(services[si].backends[bi].weight)`, `path!(timeouts).field(name)`.
#[macro_export]
macro_rules! path {
    ($($name:ident $([$i:expr])*).+) => {
        $crate::model::FieldPath::new(vec![$($crate::model::Step::Field(stringify!($name)), $($crate::model::Step::Index($i),)*)+])
    };
}

/// A validation error naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Where the offending value is, e.g. `services[2].backends[0].weight`.
    pub path: FieldPath,
    /// What is wrong and what is expected.
    pub message: String,
}

impl ConfigError {
    /// Build an error.
    pub fn new(path: FieldPath, message: impl Into<String>) -> Self {
        Self { path, message: message.into() }
    }
}

pub(crate) fn field_err<T>(path: FieldPath, msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::new(path, msg))
}

/// A model that passed [`validate`]: only validation makes one, and only a valid model becomes a snapshot
/// ([`crate::snapshot::ConfigBuilder::build`] takes the model and validates it first).
#[derive(Debug, Clone, Copy)]
pub struct Valid<'a>(&'a Model);

impl std::ops::Deref for Valid<'_> {
    type Target = Model;
    fn deref(&self) -> &Model {
        self.0
    }
}

/// Validate a model; the error names the field.
///
/// # Errors
/// A [`ConfigError`] naming the first offending field.
pub fn validate(m: &Model) -> Result<Valid<'_>, ConfigError> {
    let own: FxHashSet<IpAddr> = m.interfaces.iter().flat_map(|i| i.addrs.iter().map(|(a, _)| *a)).collect();
    validate_interfaces(m)?;
    validate_addressing(m, &own)?;
    let mut seen = FxHashSet::default();
    for (si, s) in m.services.iter().enumerate() {
        validate_service(m, si, s, &own, &mut seen)?;
        if let Some(h) = &s.health {
            validate_health(si, s, h)?;
        }
        validate_backends(si, s)?;
    }
    Ok(Valid(m))
}

/// Interfaces: each port once, an MTU in 576..=9216, prefix lengths in range.
/// Addresses a port may have: the slow path's IP stack holds eight, one of them the IPv6 link-local address.
pub const MAX_PORT_ADDRS: usize = 7;

fn validate_interfaces(m: &Model) -> Result<(), ConfigError> {
    let mut ports = FxHashSet::default();
    for (ii, itf) in m.interfaces.iter().enumerate() {
        if !ports.insert(itf.port) {
            return field_err(path!(interfaces[ii].port), format!("port {} listed twice", itf.port));
        }
        if !(576..=9216).contains(&itf.mtu) {
            return field_err(path!(interfaces[ii].mtu), format!("mtu {} outside 576..=9216", itf.mtu));
        }
        if itf.addrs.len() > MAX_PORT_ADDRS {
            let n = itf.addrs.len();
            return field_err(
                path!(interfaces[ii].addrs[MAX_PORT_ADDRS]),
                format!("{n} addresses: at most {MAX_PORT_ADDRS} per port (the slow path adds an IPv6 link-local one)"),
            );
        }
        for (ai, (a, plen)) in itf.addrs.iter().enumerate() {
            let max = if a.is_ipv4() { 32 } else { 128 };
            if *plen > max || *plen == 0 {
                return field_err(path!(interfaces[ii].addrs[ai]), format!("prefix length {plen} outside 1..={max}"));
            }
        }
    }
    Ok(())
}

/// Full-NAT ports and sources (addresses of the appliance), tunnel source prefixes, timeouts.
fn validate_addressing(m: &Model, own: &FxHashSet<IpAddr>) -> Result<(), ConfigError> {
    let (lo, hi) = m.fullnat_ports;
    if m.services.iter().any(|s| s.mode == Mode::FullNat) && (lo == 0 || hi < lo || hi - lo < 63) {
        return field_err(
            path!(fullnat_ports),
            format!("range {lo}..={hi} must be non-empty, start above 0 and hold at least 64 ports"),
        );
    }
    for (i, s) in m.fullnat_sources.iter().enumerate() {
        if !own.contains(s) {
            return field_err(path!(fullnat_sources[i]), format!("{s} is not an address of any interface"));
        }
    }
    for (i, (a, plen)) in m.tunnel_sources.iter().enumerate() {
        let max = if a.is_ipv4() { 32 } else { 128 };
        if *plen > max {
            return field_err(path!(tunnel_sources[i]), format!("prefix length {plen} above {max}"));
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
            return field_err(path!(timeouts).field(name), format!("{v} s outside 1..=604800"));
        }
    }
    Ok(())
}

/// One service: a unicast VIP that is not the appliance's own, once per protocol and port; a prime Maglev size;
/// affinity, GUE port and what its mode needs.
fn validate_service(
    m: &Model,
    si: usize,
    s: &ServiceSpec,
    own: &FxHashSet<IpAddr>,
    seen: &mut FxHashSet<(IpAddr, Protocol, Option<u16>)>,
) -> Result<(), ConfigError> {
    let f = |x: &'static str| path!(services[si]).field(x);
    if s.vip.is_unspecified() || s.vip.is_multicast() || s.vip.is_loopback() {
        return field_err(f("vip"), format!("{} is not a unicast address", s.vip));
    }
    if let IpAddr::V4(v) = s.vip {
        if v.is_broadcast() {
            return field_err(f("vip"), "broadcast address");
        }
    }
    if is_v4_mapped(&s.vip) {
        return field_err(f("vip"), format!("{} is IPv4-mapped: write the IPv4 address", s.vip));
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
    if let Some(m) = s.maglev_size {
        if !maglev::is_prime(m) || !(3..=maglev::MAX_TABLE_SIZE).contains(&m) {
            return field_err(f("maglev_size"), format!("{m} must be a prime up to {}", maglev::MAX_TABLE_SIZE));
        }
    }
    if s.backends.len() > (s.table_size() as usize).min(maglev::MAX_BACKENDS) {
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
    if matches!(s.mode, Mode::Ipip | Mode::Gue) && !m.tunnel_sources.iter().any(|(a, _)| a.is_ipv4() == s.vip.is_ipv4())
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
    Ok(())
}

/// A service's health check.
fn validate_health(si: usize, s: &ServiceSpec, h: &HealthSpec) -> Result<(), ConfigError> {
    let f = |x: &'static str| path!(services[si].health).field(x);
    if !(100..=3_600_000).contains(&h.interval_ms) {
        return field_err(f("interval_ms"), format!("{} outside 100..=3600000", h.interval_ms));
    }
    if h.timeout_ms < 10 || h.timeout_ms > h.interval_ms {
        return field_err(f("timeout_ms"), format!("{} outside 10..=interval_ms", h.timeout_ms));
    }
    if !(1..=100).contains(&h.rise) {
        return field_err(f("rise"), format!("{} outside 1..=100", h.rise));
    }
    if !(1..=100).contains(&h.fall) {
        return field_err(f("fall"), format!("{} outside 1..=100", h.fall));
    }
    if let HealthKind::Http { path, expect_status } = &h.kind {
        if !path.starts_with('/') || path.len() > 1024 || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return field_err(f("path"), format!("{path:?}: an absolute path without spaces or controls"));
        }
        if !(100..=599).contains(expect_status) {
            return field_err(f("expect_status"), format!("{expect_status} is not an HTTP status"));
        }
    }
    if h.port == 0 && s.backends.iter().any(|b| b.port == 0) && s.port.is_none() {
        return field_err(f("port"), "backends keep the client's port: give the port to probe");
    }

    Ok(())
}

/// An IPv6 address in `::ffff:0:0/96`: never on the wire (RFC 6890), and the dataplane's form of IPv4 addresses, so a
/// VIP or backend written this way would be one of them in disguise.
fn is_v4_mapped(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(v) if crate::lb::flow::is_mapped(&v.octets()))
}

/// A service's backends: unicast, of the VIP's family, weights in range, ports the mode allows, each once.
fn validate_backends(si: usize, s: &ServiceSpec) -> Result<(), ConfigError> {
    let mut bseen = FxHashSet::default();
    for (bi, b) in s.backends.iter().enumerate() {
        let g = |x: &'static str| path!(services[si].backends[bi]).field(x);
        if b.addr.is_unspecified() || b.addr.is_multicast() {
            return field_err(g("addr"), format!("{} is not a unicast address", b.addr));
        }
        if is_v4_mapped(&b.addr) {
            return field_err(g("addr"), format!("{} is IPv4-mapped: write the IPv4 address", b.addr));
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
        // Up to 16 backends, a look back beats hashing; more, a set.
        let dup = if s.backends.len() <= 16 {
            s.backends[..bi].iter().any(|x| x.addr == b.addr && x.port == b.port)
        } else {
            !bseen.insert((b.addr, b.port))
        };
        if dup {
            return field_err(g("addr"), format!("duplicate backend {}:{}", b.addr, b.port));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{FieldPath, Step};

    #[test]
    fn a_path_renders_in_the_callers_names_and_rebases_only_its_own_prefix() {
        let si = 2;
        let p = crate::path!(services[si].backends[0].addr);
        assert_eq!(p.to_string(), "services[2].backends[0].addr");
        assert_eq!(p.render(&[("services", "service"), ("backends", "backend")]), "service[2].backend[0].addr");
        assert_eq!(
            crate::path!(fullnat_sources[1]).render(&[("fullnat_sources", "fullnat.sources")]),
            "fullnat.sources[1]"
        );
        assert_eq!(p.index_after("backends"), Some(0));
        assert_eq!(p.index_after("interfaces"), None);
        let from = [Step::Field("services"), Step::Index(2)];
        let to = [Step::Field("upserts"), Step::Index(0)];
        assert_eq!(p.clone().rebase(&from, &to).to_string(), "upserts[0].backends[0].addr");
        let other = crate::path!(services[3].vip);
        assert_eq!(other.clone().rebase(&from, &to), other);
        assert_eq!(FieldPath::default().field("timeouts").field("udp").to_string(), "timeouts.udp");
    }
}
