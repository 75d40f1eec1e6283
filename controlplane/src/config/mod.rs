//! The appliance config file (TOML), parsed into the one validated [`Model`] the dataplane builds snapshots from.
//!
//! Every table rejects unknown keys. Every error names the field and the line: TOML syntax and type errors carry the
//! parser's position; addresses, prefixes and MACs are parsed with the line of their value; the dataplane's
//! validation ([`edgelb_dataplane::model::validate`]) runs last, and its field paths are rewritten into the file's
//! own names (`service[2].backend[0].weight`) with the line of the table they belong to.
//!
//! ```toml
//! gateways = ["198.18.0.254"]
//!
//! [[port]]
//! name = "lb0"                 # interface
//! driver = "afpacket"
//! addresses = ["198.18.0.1/24"]
//!
//! [[service]]
//! vip = "198.19.0.1"
//! protocol = "tcp"
//! port = 80
//! mode = "nat"
//! [[service.backend]]
//! address = "198.18.2.10"
//! port = 8080
//! ```
//! `configs/edgelb.toml` documents every key.

use edgelb_dataplane::model::{
    validate, BackendSpec, BackendState, ConfigError, HealthKind, HealthSpec, InterfaceSpec, Mode, Model, Protocol,
    ServiceSpec, Step, Timeouts,
};
use edgelb_dataplane::path;
use edgelb_dataplane::wire::ethernet::Mac;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::Path;
use toml::Spanned;

/// A config-file error: where, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{field}: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct FileError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Field path in the file's names, e.g. `service[0].backend[1].weight`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Kernel or user-space driver of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// Linux packet socket with mapped rings.
    Afpacket,
    /// XDP socket on queue 0 (copy mode): one worker per interface.
    Afxdp,
    /// A DPDK ethdev: an SR-IOV VF bound to vfio-pci (`pci`) or a DPDK virtual device (`vdev`); one queue pair per
    /// worker. Needs an `edgelbd` built with the `dpdk` feature.
    Dpdk,
}

/// A port as the daemon opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Interface name.
    pub name: String,
    /// Driver.
    pub driver: Driver,
    /// MAC from the file; `None`: the daemon reads the interface's own.
    pub mac: Option<Mac>,
    /// Ring size (frames; RX/TX descriptors for DPDK).
    pub frames: u32,
    /// DPDK: the VF's PCI address.
    pub pci: Option<String>,
    /// DPDK: a virtual device (`net_af_xdp0,iface=veth0`); its ethdev is the part before the first comma.
    pub vdev: Option<String>,
    /// DPDK: a VF to prepare (settings over netlink, vfio-pci) at start; its PCI address becomes `pci`.
    pub vf: Option<(String, crate::sriov::VfSettings)>,
    /// MTU.
    pub mtu: u16,
}

impl PortSpec {
    /// The DPDK ethdev name: the PCI address, or the vdev's name.
    pub fn dpdk_name(&self) -> Option<&str> {
        self.pci.as_deref().or_else(|| self.vdev.as_deref().map(|v| v.split(',').next().unwrap_or(v)))
    }
}

/// DPDK EAL settings (`[dpdk]`), used when any port has `driver = "dpdk"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkSettings {
    /// Run without huge pages (test machines); production uses huge pages.
    #[serde(default)]
    pub no_huge: bool,
    /// Memory to reserve, in MiB (`-m`).
    #[serde(default)]
    pub memory_mb: Option<u32>,
    /// The hugetlbfs mount (`--huge-dir`); EAL runs `--in-memory` so nothing stays behind in it.
    #[serde(default)]
    pub huge_dir: Option<String>,
    /// Mbufs per worker pool.
    #[serde(default = "default_mbufs")]
    pub mbufs: u32,
    /// EAL log levels (`--log-level`), e.g. `["error", "pmd.net.af_xdp:error"]`.
    #[serde(default)]
    pub log_levels: Vec<String>,
    /// Further EAL arguments.
    #[serde(default)]
    pub eal_args: Vec<String>,
}

fn default_mbufs() -> u32 {
    16384
}

impl Default for DpdkSettings {
    fn default() -> Self {
        Self {
            no_huge: false,
            memory_mb: None,
            huge_dir: None,
            mbufs: default_mbufs(),
            log_levels: Vec::new(),
            eal_args: Vec::new(),
        }
    }
}

/// A loaded config file: the dataplane model plus what the daemon needs to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The validated model (interfaces carry the MAC from the file, or all-zero until the daemon fills it in).
    pub model: Model,
    /// Ports in port-index order.
    pub ports: Vec<PortSpec>,
    /// Cores to pin one worker each to (empty: one unpinned worker).
    pub cores: Vec<usize>,
    /// Each worker's table sizes (`[workers] flows_v4`, `flows_v6`; the rest default).
    pub tables: edgelb_dataplane::pipeline::TableSizes,
    /// How the workers wait when idle (`[workers] polling`, `max_sleep_us`; default busy; adaptive sleeps up to
    /// 200 µs unless told).
    pub polling: edgelb_dataplane::worker::Polling,
    /// New flows a second each worker admits while saturated (`[workers] new_flow_limit`; 0, the default: no limit).
    pub new_flow_limit: u32,
    /// EAL settings (defaults when the file has no `[dpdk]`).
    pub dpdk: DpdkSettings,
    /// Where the gRPC API listens (`None`: disabled). Default 127.0.0.1:50051.
    pub api: Option<crate::config::Listen>,
    /// TLS (and mTLS for mutating calls) of the API.
    pub api_tls: Option<crate::config::TlsFiles>,
    /// Where Prometheus metrics are served (`None`: disabled). Default [`DEFAULT_METRICS`].
    pub metrics: Option<std::net::SocketAddr>,
    /// BGP peers to announce VIPs to (empty: no BGP).
    pub bgp_peers: Vec<crate::bgp::session::PeerConfig>,
    /// Port the speaker accepts peers' connections on (0: active opening only).
    pub bgp_listen_port: u16,
    /// The speaker's AS and router id, when the file has a `[bgp]` section.
    pub bgp: Option<(u32, std::net::Ipv4Addr)>,
    /// Kubernetes sync, when the file has a `[kubernetes]` section.
    pub kubernetes: Option<KubernetesConfig>,
    /// Timers of the learnt-neighbour table (`[neighbor_table]`).
    pub neighbor_timers: edgelb_dataplane::slowpath::neigh::Timers,
    /// VRRP virtual routers (`[[vrrp]]`).
    pub vrrp: Vec<edgelb_dataplane::slowpath::vrrp::RouterSpec>,
    /// Flow replication with peer appliances (`[replication]`).
    pub replication: Option<ReplicationConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    gateways: Vec<Spanned<String>>,
    #[serde(default, rename = "port")]
    ports: Vec<Spanned<PortSection>>,
    #[serde(default)]
    workers: WorkersSection,
    #[serde(default)]
    dpdk: Option<Spanned<DpdkSettings>>,
    #[serde(default)]
    api: Option<Spanned<ApiSection>>,
    #[serde(default)]
    metrics: Option<Spanned<MetricsSection>>,
    #[serde(default)]
    bgp: Option<Spanned<BgpSection>>,
    #[serde(default)]
    kubernetes: Option<Spanned<KubernetesSection>>,
    #[serde(default)]
    timeouts: TimeoutsSection,
    #[serde(default)]
    fullnat: Option<Spanned<FullNatSection>>,
    #[serde(default)]
    tunnel: Option<TunnelSection>,
    #[serde(default, rename = "neighbor")]
    neighbors: Vec<Spanned<NeighborSection>>,
    #[serde(default)]
    neighbor_table: Option<Spanned<NeighborTableSection>>,
    #[serde(default, rename = "service")]
    services: Vec<Spanned<ServiceSection>>,
    #[serde(default)]
    vrrp: Vec<Spanned<vrrp::VrrpSection>>,
    #[serde(default)]
    replication: Option<Spanned<ReplicationSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicationSection {
    listen: Spanned<String>,
    peers: Vec<Spanned<String>>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_file: Option<String>,
    #[serde(default = "default_replication_rate")]
    rate: u32,
}

fn default_replication_rate() -> u32 {
    100_000
}

/// `[replication]`: new flows sent to the peer appliances, theirs installed here (see
/// `controlplane::ha::replicate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// UDP address to receive the peers' flows on (and send from).
    pub listen: std::net::SocketAddr,
    /// The peer appliances' addresses.
    pub peers: Vec<std::net::SocketAddr>,
    /// The shared secret the datagrams are authenticated with (at least 16 bytes).
    pub secret: Vec<u8>,
    /// Records sent per second at most.
    pub rate: u32,
}

fn replication(lines: &Lines<'_>, r: &Spanned<ReplicationSection>) -> Result<ReplicationConfig, FileError> {
    let rs = r.get_ref();
    let sock = |s: &Spanned<String>, field: String| {
        s.get_ref().trim().parse::<std::net::SocketAddr>().map_err(|_| {
            lines.err(s, field, format!("{:?} is not ADDRESS:PORT ([2001:db8::1]:7946 for IPv6)", s.get_ref()))
        })
    };
    let listen = sock(&rs.listen, "replication.listen".into())?;
    let peers = rs
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| sock(p, format!("replication.peers[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    if peers.is_empty() {
        return Err(lines.err(r, "replication.peers".into(), "at least one peer appliance"));
    }
    let secret = match (&rs.secret, &rs.secret_file) {
        (Some(s), None) => s.as_bytes().to_vec(),
        (None, Some(f)) => std::fs::read(f)
            .map(|mut b| {
                while b.last().is_some_and(u8::is_ascii_whitespace) {
                    b.pop();
                }
                b
            })
            .map_err(|e| lines.err(r, "replication.secret_file".into(), format!("{f}: {e}")))?,
        _ => return Err(lines.err(r, "replication.secret".into(), "give secret or secret_file (one of them)")),
    };
    if secret.len() < 16 {
        return Err(lines.err(r, "replication.secret".into(), format!("{} bytes: at least 16", secret.len())));
    }
    if !(100..=10_000_000).contains(&rs.rate) {
        return Err(lines.err(
            r,
            "replication.rate".into(),
            format!("{}: 100 to 10000000 records per second", rs.rate),
        ));
    }
    Ok(ReplicationConfig { listen, peers, secret, rate: rs.rate })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortSection {
    name: String,
    driver: Driver,
    #[serde(default)]
    mac: Option<Spanned<String>>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    #[serde(default = "default_mtu")]
    mtu: u16,
    #[serde(default = "default_frames")]
    frames: u32,
    #[serde(default)]
    pci: Option<Spanned<String>>,
    #[serde(default)]
    vdev: Option<Spanned<String>>,
    #[serde(default)]
    vf: Option<Spanned<VfSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VfSection {
    pf: String,
    index: u32,
    #[serde(default)]
    mac: Option<Spanned<String>>,
    #[serde(default)]
    vlan: Option<u16>,
    #[serde(default)]
    trust: Option<bool>,
    #[serde(default)]
    spoof_check: Option<bool>,
    #[serde(default)]
    max_rate: Option<u32>,
}

/// `DDDD:BB:DD.F` with hex digits (the domain may be left out).
fn is_pci_address(s: &str) -> bool {
    let hex = |x: &str, n: usize| x.len() == n && x.bytes().all(|b| b.is_ascii_hexdigit());
    let (rest, func) = match s.rsplit_once('.') {
        Some(x) => x,
        None => return false,
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let ok_bdf = |b: &str, d: &str| hex(b, 2) && hex(d, 2) && func.len() == 1 && func.as_bytes()[0].is_ascii_digit();
    match parts.as_slice() {
        [dom, b, d] => hex(dom, 4) && ok_bdf(b, d),
        [b, d] => ok_bdf(b, d),
        _ => false,
    }
}

fn default_mtu() -> u16 {
    1500
}
fn default_frames() -> u32 {
    2048
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    unix: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    tls: Option<TlsSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: String,
    key: String,
    #[serde(default)]
    client_ca: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NeighborTableSection {
    reachable_ms: Option<u64>,
    probe_ms: Option<u64>,
    probes: Option<u8>,
}

/// `[neighbor_table]` into timers: every bound named in the error.
fn neighbor_timers(
    lines: &Lines<'_>,
    s: Option<&Spanned<NeighborTableSection>>,
) -> Result<edgelb_dataplane::slowpath::neigh::Timers, FileError> {
    use std::time::Duration;
    let mut t = edgelb_dataplane::slowpath::neigh::Timers::default();
    let Some(s) = s else { return Ok(t) };
    let n = s.get_ref();
    if let Some(p) = n.probe_ms {
        if !(10..=60_000).contains(&p) {
            return Err(lines.err(s, "neighbor_table.probe_ms".into(), format!("{p} is not between 10 and 60000")));
        }
        t.probe = Duration::from_millis(p);
    }
    if let Some(r) = n.reachable_ms {
        if !(100..=3_600_000).contains(&r) || Duration::from_millis(r) < t.probe {
            return Err(lines.err(
                s,
                "neighbor_table.reachable_ms".into(),
                format!("{r} is not between probe_ms ({} ms, at least 100) and 3600000", t.probe.as_millis()),
            ));
        }
        t.reachable = Duration::from_millis(r);
    }
    if let Some(k) = n.probes {
        if !(1..=10).contains(&k) {
            return Err(lines.err(s, "neighbor_table.probes".into(), format!("{k} is not between 1 and 10")));
        }
        t.probes = k;
    }
    Ok(t)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default = "yes")]
    enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BgpSection {
    local_as: u32,
    router_id: Spanned<String>,
    #[serde(default = "bgp_port")]
    listen_port: u16,
    #[serde(default, rename = "peer")]
    peers: Vec<Spanned<PeerSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerSection {
    #[serde(default)]
    name: Option<String>,
    address: Spanned<String>,
    remote_as: u32,
    #[serde(default)]
    port: Option<u32>,
    #[serde(default)]
    source: Option<Spanned<String>>,
    #[serde(default)]
    hold_time: Option<u32>,
    #[serde(default)]
    connect_retry: Option<u32>,
    #[serde(default)]
    multihop_ttl: Option<u32>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    next_hop_v4: Option<Spanned<String>>,
    #[serde(default)]
    next_hop_v6: Option<Spanned<String>>,
    #[serde(default)]
    med: Option<u32>,
    #[serde(default)]
    local_pref: Option<u32>,
    #[serde(default)]
    communities: Vec<Spanned<String>>,
    #[serde(default)]
    large_communities: Vec<Spanned<String>>,
    #[serde(default)]
    graceful_restart: Option<u32>,
    #[serde(default)]
    passive: bool,
    #[serde(default)]
    bfd: Option<BfdSection>,
}

/// `bfd = { min_tx_ms = 100, min_rx_ms = 100, multiplier = 3 }` in a `[[bgp.peer]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BfdSection {
    #[serde(default)]
    min_tx_ms: Option<u32>,
    #[serde(default)]
    min_rx_ms: Option<u32>,
    #[serde(default)]
    multiplier: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KubernetesSection {
    #[serde(default)]
    kubeconfig: Option<String>,
    #[serde(default = "default_class")]
    class: String,
    #[serde(default)]
    classless: bool,
    #[serde(default)]
    default_mode: Option<Spanned<String>>,
    #[serde(default)]
    identity: Option<String>,
    #[serde(default = "default_lease_ns")]
    lease_namespace: String,
    #[serde(default = "default_lease_name")]
    lease_name: String,
    #[serde(default = "default_lease_duration")]
    lease_duration: i32,
    #[serde(default)]
    vip_leases: bool,
    #[serde(default, rename = "pool")]
    pools: Vec<Spanned<PoolSection>>,
    #[serde(default)]
    node_labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolSection {
    name: String,
    addresses: Vec<Spanned<String>>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    selector: std::collections::BTreeMap<String, String>,
    #[serde(default = "yes")]
    auto_assign: bool,
}

fn default_class() -> String {
    "edgelb.io/lb".into()
}
fn default_lease_ns() -> String {
    "kube-system".into()
}
fn default_lease_name() -> String {
    "edgelb-status".into()
}
fn default_lease_duration() -> i32 {
    15
}

/// Kubernetes sync settings from `[kubernetes]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// Kubeconfig file (`None`: in-cluster or `KUBECONFIG`).
    pub kubeconfig: Option<String>,
    /// Mapping and allocation settings.
    pub settings: crate::k8s::Settings,
    /// Leader election.
    pub lease: crate::k8s::controller::LeaseSettings,
    /// L2 ownership of each Kubernetes VIP by a Lease of its own (`vip_leases = true`).
    pub vip_leases: bool,
    /// This appliance's labels, which the `nodeSelector` of a BGPPeer or L2Announcement resource matches.
    pub node_labels: std::collections::BTreeMap<String, String>,
}

fn bgp_port() -> u16 {
    crate::bgp::peer::DEFAULT_PORT
}

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address (default 127.0.0.1:50051).
    Tcp(std::net::SocketAddr),
    /// A unix socket path.
    Unix(std::path::PathBuf),
}

impl Default for Listen {
    fn default() -> Self {
        Listen::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 50051)))
    }
}

/// TLS for the API: the server's certificate and key, and optionally a CA whose signed client certificates are
/// required for mutating calls (mTLS). All PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain.
    pub cert: std::path::PathBuf,
    /// Server private key.
    pub key: std::path::PathBuf,
    /// CA of the clients allowed to change the configuration.
    pub client_ca: Option<std::path::PathBuf>,
}

/// Where `/metrics` is served unless the file says otherwise.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9917";

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkersSection {
    #[serde(default)]
    cores: Vec<usize>,
    #[serde(default)]
    flows_v4: Option<usize>,
    #[serde(default)]
    flows_v6: Option<usize>,
    #[serde(default)]
    polling: Option<String>,
    #[serde(default)]
    max_sleep_us: Option<u32>,
    #[serde(default)]
    new_flow_limit: Option<u32>,
}

/// `[workers] polling` ("busy", the default, or "adaptive") and `max_sleep_us` (adaptive only, 1 to 10000; 200).
fn polling(w: &WorkersSection) -> Result<edgelb_dataplane::worker::Polling, FileError> {
    use edgelb_dataplane::worker::Polling;
    let err = |field: &str, message: String| FileError { line: None, field: format!("workers.{field}"), message };
    match (w.polling.as_deref().unwrap_or("busy"), w.max_sleep_us) {
        ("busy", None) => Ok(Polling::Busy),
        ("busy", Some(_)) => Err(err("max_sleep_us", "only with polling = \"adaptive\"".into())),
        ("adaptive", None) => Ok(Polling::Adaptive { max_sleep_us: Polling::DEFAULT_MAX_SLEEP_US }),
        ("adaptive", Some(us)) if (1..=10_000).contains(&us) => Ok(Polling::Adaptive { max_sleep_us: us }),
        ("adaptive", Some(us)) => Err(err("max_sleep_us", format!("{us}: 1 to 10000 microseconds"))),
        (other, _) => Err(err("polling", format!("{other:?}: \"busy\" or \"adaptive\""))),
    }
}

/// The largest `[workers] new_flow_limit`: more new flows a second than one core can record is no limit at all.
const MAX_NEW_FLOW_LIMIT: u32 = 100_000_000;

/// The largest flow table a worker may have (entries; a NAT flow takes two).
const MAX_FLOWS: usize = 1 << 26;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutsSection {
    tcp_syn: Option<u32>,
    tcp_established: Option<u32>,
    tcp_closing: Option<u32>,
    udp: Option<u32>,
    fragment: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullNatSection {
    sources: Vec<Spanned<String>>,
    ports: [u16; 2],
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TunnelSection {
    sources: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NeighborSection {
    address: Spanned<String>,
    mac: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSection {
    vip: Spanned<String>,
    protocol: Spanned<String>,
    port: Option<u16>,
    mode: Spanned<String>,
    affinity_timeout: Option<u32>,
    maglev_size: Option<u32>,
    gue_port: Option<u16>,
    #[serde(default, rename = "backend")]
    backends: Vec<Spanned<BackendSection>>,
    #[serde(default)]
    health: Option<Spanned<HealthSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthSection {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    expect: Option<u16>,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    interval_ms: Option<u32>,
    #[serde(default)]
    timeout_ms: Option<u32>,
    #[serde(default)]
    rise: Option<u32>,
    #[serde(default)]
    fall: Option<u32>,
    #[serde(default)]
    keep_flows: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendSection {
    address: Spanned<String>,
    #[serde(default)]
    port: u16,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    state: Option<Spanned<String>>,
}

fn default_weight() -> u32 {
    1
}

struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn at(&self, offset: usize) -> usize {
        self.0.as_bytes()[..offset.min(self.0.len())].iter().filter(|&&b| b == b'\n').count() + 1
    }
    fn err<T>(&self, s: &Spanned<T>, field: String, message: impl Into<String>) -> FileError {
        FileError { line: Some(self.at(s.span().start)), field, message: message.into() }
    }
}

fn parse_ip(lines: &Lines<'_>, s: &Spanned<String>, field: String) -> Result<IpAddr, FileError> {
    s.get_ref().trim().parse().map_err(|_| lines.err(s, field, format!("{:?} is not an IP address", s.get_ref())))
}

fn parse_prefix(lines: &Lines<'_>, s: &Spanned<String>, field: String) -> Result<(IpAddr, u8), FileError> {
    let bad = || lines.err(s, field.clone(), format!("{:?} is not ADDRESS/PREFIX_LENGTH", s.get_ref()));
    let (a, l) = s.get_ref().split_once('/').ok_or_else(bad)?;
    Ok((a.trim().parse().map_err(|_| bad())?, l.trim().parse().map_err(|_| bad())?))
}

fn parse_mac(lines: &Lines<'_>, s: &Spanned<String>, field: String) -> Result<Mac, FileError> {
    let bad = || lines.err(s, field.clone(), format!("{:?} is not a MAC address like 02:00:00:00:00:01", s.get_ref()));
    let parts: Vec<&str> = s.get_ref().split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

/// Read and parse a config file.
///
/// # Errors
/// [`FileError`] naming the file's problem (an unreadable file has no line).
pub fn load(path: &Path) -> Result<Loaded, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        line: None,
        field: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&text)
}

/// Parse and validate config text.
///
/// # Errors
/// [`FileError`] naming the field and line of the first problem.
pub fn parse(text: &str) -> Result<Loaded, FileError> {
    let lines = Lines(text);
    let file: File = toml::from_str(text).map_err(|e| FileError {
        line: e.span().map(|s| lines.at(s.start)),
        field: "toml".into(),
        message: e.message().to_string(),
    })?;
    let mut model = Model::default();
    let ports = ports(&lines, &file, &mut model)?;
    addressing(&lines, &file, &mut model)?;
    for (si, s) in file.services.iter().enumerate() {
        model.services.push(service(&lines, si, s)?);
    }
    if file.workers.cores.len() > 1 {
        if let Some((i, p)) = file.ports.iter().enumerate().find(|(_, p)| p.get_ref().driver == Driver::Afxdp) {
            return Err(lines.err(
                p,
                format!("port[{i}].driver"),
                "afxdp ports use one queue, so one worker: list at most one core in [workers] or use afpacket",
            ));
        }
    }
    let mut tables = edgelb_dataplane::pipeline::TableSizes::default();
    for (key, given, slot) in [
        ("flows_v4", file.workers.flows_v4, &mut tables.flows_v4),
        ("flows_v6", file.workers.flows_v6, &mut tables.flows_v6),
    ] {
        match given {
            Some(n) if !(1024..=MAX_FLOWS).contains(&n) => {
                let message = format!("{n}: 1024 to {MAX_FLOWS} entries");
                return Err(FileError { line: None, field: format!("workers.{key}"), message });
            }
            Some(n) => *slot = n,
            None => {}
        }
    }
    let polling = polling(&file.workers)?;
    let new_flow_limit = match file.workers.new_flow_limit {
        Some(n) if n > MAX_NEW_FLOW_LIMIT => {
            let message = format!("{n}: 0 (no limit) to {MAX_NEW_FLOW_LIMIT} new flows a second per worker");
            return Err(FileError { line: None, field: "workers.new_flow_limit".into(), message });
        }
        n => n.unwrap_or(0),
    };
    // The interfaces' MACs may be unknown until the daemon reads them; validation does not look at MACs.
    validate(&model).map_err(|e| locate(&lines, &file, e))?;
    let dpdk = match &file.dpdk {
        Some(d) if d.get_ref().mbufs < 1024 => {
            return Err(lines.err(d, "dpdk.mbufs".into(), "at least 1024 mbufs per worker pool"))
        }
        Some(d) => d.get_ref().clone(),
        None => DpdkSettings::default(),
    };
    let (api, api_tls, metrics) = listeners(&lines, &file)?;
    let neighbor_timers = neighbor_timers(&lines, file.neighbor_table.as_ref())?;
    let vrrp = vrrp::routers(&lines, &file)?;
    let replication = file.replication.as_ref().map(|r| replication(&lines, r)).transpose()?;
    let kubernetes = file.kubernetes.as_ref().map(|k| kubernetes(&lines, k)).transpose()?;
    let bgp_listen_port = file.bgp.as_ref().map_or(0, |b| b.get_ref().listen_port);
    let (bgp, bgp_peers) = match &file.bgp {
        Some(b) => {
            let (speaker, peers) = bgp(&lines, b)?;
            (Some(speaker), peers)
        }
        None => (None, Vec::new()),
    };
    Ok(Loaded {
        model,
        ports,
        cores: file.workers.cores,
        tables,
        polling,
        new_flow_limit,
        dpdk,
        api,
        api_tls,
        metrics,
        bgp_peers,
        bgp_listen_port,
        bgp,
        kubernetes,
        neighbor_timers,
        vrrp,
        replication,
    })
}

/// `[api]` and `[metrics]`: where the API (and with which TLS files) and `/metrics` listen; `None` when disabled.
#[allow(clippy::type_complexity)]
fn listeners(
    lines: &Lines<'_>,
    file: &File,
) -> Result<(Option<Listen>, Option<TlsFiles>, Option<std::net::SocketAddr>), FileError> {
    let api =
        match &file.api {
            None => Some(crate::config::Listen::default()),
            Some(a) if !a.get_ref().enabled => None,
            Some(a) => match (&a.get_ref().listen, &a.get_ref().unix) {
                (Some(l), None) => Some(crate::config::Listen::Tcp(l.get_ref().trim().parse().map_err(|_| {
                    lines.err(l, "api.listen".into(), format!("{:?} is not ADDRESS:PORT", l.get_ref()))
                })?)),
                (None, Some(u)) => Some(crate::config::Listen::Unix(u.into())),
                (None, None) => Some(crate::config::Listen::default()),
                (Some(_), Some(_)) => return Err(lines.err(a, "api".into(), "give listen or unix, not both")),
            },
        };
    let metrics =
        match file.metrics.as_ref().map(|m| m.get_ref()) {
            Some(m) if !m.enabled => None,
            Some(MetricsSection { listen: Some(l), .. }) => Some(l.get_ref().trim().parse().map_err(|_| {
                lines.err(l, "metrics.listen".into(), format!("{:?} is not ADDRESS:PORT", l.get_ref()))
            })?),
            _ => DEFAULT_METRICS.parse().ok(),
        };
    let api_tls = file.api.as_ref().and_then(|a| a.get_ref().tls.as_ref()).map(|t| crate::config::TlsFiles {
        cert: t.cert.clone().into(),
        key: t.key.clone().into(),
        client_ca: t.client_ca.clone().map(Into::into),
    });
    Ok((api, api_tls, metrics))
}

/// `[[port]]` tables: the ports to open, and the model's interfaces (one per port, in order).
fn ports(lines: &Lines<'_>, file: &File, model: &mut Model) -> Result<Vec<PortSpec>, FileError> {
    let mut ports = Vec::new();
    for (i, p) in file.ports.iter().enumerate() {
        let sec = p.get_ref();
        let f = |x: &str| format!("port[{i}].{x}");
        let mac = sec.mac.as_ref().map(|m| parse_mac(lines, m, f("mac"))).transpose()?;
        let addrs =
            sec.addresses.iter().map(|a| parse_prefix(lines, a, f("addresses"))).collect::<Result<Vec<_>, _>>()?;
        if ports.iter().any(|x: &PortSpec| x.name == sec.name) {
            return Err(lines.err(p, f("name"), format!("interface {:?} listed twice", sec.name)));
        }
        device(lines, file, i, p)?;
        ports.push(PortSpec {
            name: sec.name.clone(),
            driver: sec.driver,
            mac,
            frames: sec.frames,
            pci: sec.pci.as_ref().map(|x| x.get_ref().clone()),
            vdev: sec.vdev.as_ref().map(|x| x.get_ref().clone()),
            vf: match &sec.vf {
                Some(v) => {
                    let vs = v.get_ref();
                    let mac = vs.mac.as_ref().map(|m| parse_mac(lines, m, f("vf.mac"))).transpose()?;
                    Some((
                        vs.pf.clone(),
                        crate::sriov::VfSettings {
                            vf: vs.index,
                            mac,
                            vlan: vs.vlan.map(|v| (v, 0)),
                            trust: vs.trust,
                            spoof_check: vs.spoof_check,
                            rate: vs.max_rate.map(|r| (0, r)),
                        },
                    ))
                }
                None => None,
            },
            mtu: sec.mtu,
        });
        model.interfaces.push(InterfaceSpec { port: i as u16, mac: mac.unwrap_or([0; 6]), addrs, mtu: sec.mtu });
    }
    Ok(ports)
}

/// A port's device: pci, vdev or vf for DPDK ports only (one of them), and no mixing of DPDK and kernel ports.
fn device(lines: &Lines<'_>, file: &File, i: usize, p: &Spanned<PortSection>) -> Result<(), FileError> {
    let sec = p.get_ref();
    let f = |x: &str| format!("port[{i}].{x}");
    if let Some(v) = &sec.vf {
        if sec.driver != Driver::Dpdk {
            return Err(lines.err(v, f("vf"), "vf is for driver = \"dpdk\" only"));
        }
        if sec.pci.is_some() || sec.vdev.is_some() {
            return Err(lines.err(v, f("vf"), "give one of pci, vdev or vf"));
        }
        if v.get_ref().vlan.is_some_and(|x| x > 4094) {
            return Err(lines.err(v, f("vf.vlan"), "VLAN id 0..=4094"));
        }
    }
    match (sec.driver, &sec.pci, &sec.vdev) {
        (Driver::Dpdk, None, None) if sec.vf.is_some() => {}
        (Driver::Dpdk, None, None) => {
            return Err(lines.err(
                p,
                f("driver"),
                "a dpdk port needs `pci = \"DDDD:BB:DD.F\"`, `vdev = \"...\"` or `vf = { pf, index }`",
            ))
        }
        (Driver::Dpdk, Some(_), Some(v)) => return Err(lines.err(v, f("vdev"), "give pci or vdev, not both")),
        (Driver::Dpdk, Some(a), None) if !is_pci_address(a.get_ref()) => {
            return Err(lines.err(a, f("pci"), format!("{:?}: expected a PCI address like 0000:3b:02.1", a.get_ref())))
        }
        (Driver::Dpdk, None, Some(v)) if v.get_ref().split(',').next().is_none_or(|n| n.trim().is_empty()) => {
            return Err(lines.err(v, f("vdev"), "empty device name"))
        }
        (Driver::Afpacket | Driver::Afxdp, Some(a), _) => {
            return Err(lines.err(a, f("pci"), "pci is for driver = \"dpdk\" only"))
        }
        (Driver::Afpacket | Driver::Afxdp, None, Some(v)) => {
            return Err(lines.err(v, f("vdev"), "vdev is for driver = \"dpdk\" only"))
        }
        _ => {}
    }
    if sec.driver == Driver::Dpdk && file.ports.iter().any(|q| q.get_ref().driver != Driver::Dpdk) {
        return Err(lines.err(
            p,
            f("driver"),
            "dpdk and kernel ports cannot be mixed in one appliance: give every port driver = \"dpdk\" (a kernel \
             interface can join as vdev = \"net_af_xdp0,iface=NAME\")",
        ));
    }
    Ok(())
}

/// `gateways`, `[[neighbor]]`, `[fullnat]`, `[tunnel]` and `[timeouts]` into the model.
fn addressing(lines: &Lines<'_>, file: &File, model: &mut Model) -> Result<(), FileError> {
    model.gateways =
        file.gateways.iter().map(|g| parse_ip(lines, g, "gateways".into())).collect::<Result<Vec<_>, _>>()?;
    for (i, n) in file.neighbors.iter().enumerate() {
        let n = n.get_ref();
        let a = parse_ip(lines, &n.address, format!("neighbor[{i}].address"))?;
        let m = parse_mac(lines, &n.mac, format!("neighbor[{i}].mac"))?;
        model.neighbours.push((a, m));
    }
    if let Some(fnat) = &file.fullnat {
        let sec = fnat.get_ref();
        model.fullnat_sources =
            sec.sources.iter().map(|s| parse_ip(lines, s, "fullnat.sources".into())).collect::<Result<_, _>>()?;
        model.fullnat_ports = (sec.ports[0], sec.ports[1]);
    }
    if let Some(t) = &file.tunnel {
        model.tunnel_sources =
            t.sources.iter().map(|s| parse_prefix(lines, s, "tunnel.sources".into())).collect::<Result<_, _>>()?;
    }
    let d = Timeouts::default();
    let t = &file.timeouts;
    model.timeouts = Timeouts {
        tcp_syn: t.tcp_syn.unwrap_or(d.tcp_syn),
        tcp_established: t.tcp_established.unwrap_or(d.tcp_established),
        tcp_closing: t.tcp_closing.unwrap_or(d.tcp_closing),
        udp: t.udp.unwrap_or(d.udp),
        fragment: t.fragment.unwrap_or(d.fragment),
    };
    Ok(())
}

/// One `[[service]]` table with its backends and health check.
fn service(lines: &Lines<'_>, si: usize, s: &Spanned<ServiceSection>) -> Result<ServiceSpec, FileError> {
    let sec = s.get_ref();
    let f = |x: &str| format!("service[{si}].{x}");
    let vip = parse_ip(lines, &sec.vip, f("vip"))?;
    let protocol = match sec.protocol.get_ref().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            return Err(lines.err(&sec.protocol, f("protocol"), format!("{other:?}: expected \"tcp\" or \"udp\"")))
        }
    };
    let mode: Mode = sec.mode.get_ref().parse().map_err(|e: ConfigError| lines.err(&sec.mode, f("mode"), e.message))?;
    let mut backends = Vec::new();
    for (bi, b) in sec.backends.iter().enumerate() {
        let bs = b.get_ref();
        let g = |x: &str| format!("service[{si}].backend[{bi}].{x}");
        let state = match bs.state.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "active")) => BackendState::Active,
            Some((_, "draining")) => BackendState::Draining,
            Some((_, "down")) => BackendState::Down,
            Some((sp, other)) => {
                return Err(lines.err(sp, g("state"), format!("{other:?}: expected active, draining or down")))
            }
        };
        backends.push(BackendSpec {
            addr: parse_ip(lines, &bs.address, g("address"))?,
            port: bs.port,
            weight: bs.weight,
            state,
        });
    }
    let mut spec = ServiceSpec::new(vip, protocol, sec.port, mode, backends);
    spec.affinity_timeout_s = sec.affinity_timeout;
    spec.maglev_size = sec.maglev_size;
    if let Some(g) = sec.gue_port {
        spec.gue_port = g;
    }
    if let Some(h) = &sec.health {
        let hs = h.get_ref();
        let kind = match hs.kind.get_ref().as_str() {
            "tcp" => HealthKind::Tcp,
            "http" => HealthKind::Http {
                path: hs.path.clone().unwrap_or_else(|| HealthSpec::DEFAULT_HTTP_PATH.into()),
                expect_status: hs.expect.unwrap_or(HealthSpec::DEFAULT_HTTP_STATUS),
            },
            other => {
                return Err(lines.err(&hs.kind, f("health.type"), format!("{other:?}: expected \"tcp\" or \"http\"")))
            }
        };
        spec.health = Some(HealthSpec {
            kind,
            port: hs.port,
            interval_ms: hs.interval_ms.unwrap_or(HealthSpec::DEFAULT_INTERVAL_MS),
            timeout_ms: hs.timeout_ms.unwrap_or(HealthSpec::DEFAULT_TIMEOUT_MS),
            rise: hs.rise.unwrap_or(HealthSpec::DEFAULT_RISE),
            fall: hs.fall.unwrap_or(HealthSpec::DEFAULT_FALL),
            keep_flows: hs.keep_flows,
        });
    }
    Ok(spec)
}

/// The `[kubernetes]` table.
fn kubernetes(lines: &Lines<'_>, k: &Spanned<KubernetesSection>) -> Result<KubernetesConfig, FileError> {
    let ks = k.get_ref();
    let default_mode = match &ks.default_mode {
        Some(m) => {
            m.get_ref().parse().map_err(|e: ConfigError| lines.err(m, "kubernetes.default_mode".into(), e.message))?
        }
        None => Mode::Nat,
    };
    if !(5..=300).contains(&ks.lease_duration) {
        return Err(lines.err(k, "kubernetes.lease_duration".into(), "5..=300 seconds"));
    }
    let mut pools = Vec::new();
    for (i, p) in ks.pools.iter().enumerate() {
        let ps = p.get_ref();
        let mut ranges = Vec::new();
        for a in &ps.addresses {
            ranges.push(
                crate::k8s::parse_range(a.get_ref())
                    .map_err(|e| lines.err(a, format!("kubernetes.pool[{i}].addresses"), e))?,
            );
        }
        if ranges.is_empty() {
            return Err(lines.err(p, format!("kubernetes.pool[{i}].addresses"), "at least one range"));
        }
        pools.push(crate::k8s::Pool {
            name: ps.name.clone(),
            ranges,
            namespaces: ps.namespaces.clone(),
            selector: ps.selector.clone(),
            auto_assign: ps.auto_assign,
        });
    }
    let identity = ks.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "edgelb".into())
    });
    Ok(KubernetesConfig {
        kubeconfig: ks.kubeconfig.clone(),
        settings: crate::k8s::Settings { class: ks.class.clone(), classless: ks.classless, default_mode, pools },
        lease: crate::k8s::controller::LeaseSettings {
            namespace: ks.lease_namespace.clone(),
            name: ks.lease_name.clone(),
            identity,
            duration_s: ks.lease_duration,
        },
        vip_leases: ks.vip_leases,
        node_labels: ks.node_labels.clone(),
    })
}

/// The `[bgp]` table: the speaker's AS and identifier, and its peers.
fn bgp(
    lines: &Lines<'_>,
    b: &Spanned<BgpSection>,
) -> Result<((u32, std::net::Ipv4Addr), Vec<crate::bgp::session::PeerConfig>), FileError> {
    let mut bgp_peers = Vec::new();
    let bs = b.get_ref();
    let router_id: std::net::Ipv4Addr = bs.router_id.get_ref().trim().parse().map_err(|_| {
        lines.err(&bs.router_id, "bgp.router_id".into(), format!("{:?} is not an IPv4 address", bs.router_id.get_ref()))
    })?;
    if bs.local_as == 0 {
        return Err(lines.err(b, "bgp.local_as".into(), "AS 0 is reserved"));
    }
    for (i, p) in bs.peers.iter().enumerate() {
        let ps = p.get_ref();
        let text = |s: &Option<Spanned<String>>| s.as_ref().map(|s| s.get_ref().clone());
        let spec = crate::bgp::peer::PeerSpec {
            name: ps.name.clone(),
            address: ps.address.get_ref().clone(),
            remote_as: ps.remote_as,
            port: ps.port,
            source: text(&ps.source),
            hold_time: ps.hold_time,
            connect_retry: ps.connect_retry,
            multihop_ttl: ps.multihop_ttl,
            password: ps.password.clone(),
            next_hop_v4: text(&ps.next_hop_v4),
            next_hop_v6: text(&ps.next_hop_v6),
            med: ps.med,
            local_pref: ps.local_pref,
            communities: ps.communities.iter().map(|c| c.get_ref().clone()).collect(),
            large_communities: ps.large_communities.iter().map(|c| c.get_ref().clone()).collect(),
            graceful_restart: ps.graceful_restart,
            passive: ps.passive,
            bfd: ps.bfd.as_ref().map(|b| crate::bgp::peer::BfdSpec {
                min_tx_ms: b.min_tx_ms,
                min_rx_ms: b.min_rx_ms,
                multiplier: b.multiplier,
            }),
        };
        let peer = crate::bgp::peer::validate(&spec, bs.local_as, router_id).map_err(|e| {
            // At the line of the value where the file keeps one, else at the peer's table.
            let indexed = |list: &[Spanned<String>], name: &str| {
                e.path.index_after(name).and_then(|n| list.get(n)).map(|s| s.span())
            };
            let span = match e.path.steps().first() {
                Some(Step::Field("address")) => Some(ps.address.span()),
                Some(Step::Field("source")) => ps.source.as_ref().map(|s| s.span()),
                Some(Step::Field("next_hop_v4")) => ps.next_hop_v4.as_ref().map(|s| s.span()),
                Some(Step::Field("next_hop_v6")) => ps.next_hop_v6.as_ref().map(|s| s.span()),
                _ => indexed(&ps.communities, "communities")
                    .or_else(|| indexed(&ps.large_communities, "large_communities")),
            }
            .unwrap_or_else(|| p.span());
            FileError {
                line: Some(lines.at(span.start)),
                field: path!(bgp.peer[i]).render(NAMES) + "." + &e.path.render(NAMES),
                message: e.message,
            }
        })?;
        bgp_peers.push(peer);
    }
    Ok(((bs.local_as, router_id), bgp_peers))
}

/// The model's field names the file spells differently, for [`edgelb_dataplane::model::FieldPath::render`].
const NAMES: &[(&str, &str)] = &[
    ("services", "service"),
    ("backends", "backend"),
    ("interfaces", "port"),
    ("fullnat_sources", "fullnat.sources"),
    ("fullnat_ports", "fullnat.ports"),
    ("tunnel_sources", "tunnel.sources"),
    ("expect_status", "expect"),
];

/// A model validation error in the file's names, at the line of the table it points into.
fn locate(lines: &Lines<'_>, file: &File, e: ConfigError) -> FileError {
    let at = |span: std::ops::Range<usize>| Some(lines.at(span.start));
    let line = match e.path.steps() {
        [Step::Field("services"), Step::Index(si), rest @ ..] => file.services.get(*si).and_then(|s| {
            let backend = e.path.index_after("backends").and_then(|bi| s.get_ref().backends.get(bi));
            match (backend, rest.first(), &s.get_ref().health) {
                (Some(b), ..) => at(b.span()),
                (None, Some(Step::Field("health")), Some(h)) => at(h.span()),
                _ => at(s.span()),
            }
        }),
        [Step::Field("interfaces"), Step::Index(pi), ..] => file.ports.get(*pi).and_then(|p| at(p.span())),
        [Step::Field("fullnat_sources" | "fullnat_ports"), ..] => file.fullnat.as_ref().and_then(|f| at(f.span())),
        _ => None,
    };
    FileError { line, field: e.path.render(NAMES), message: e.message }
}

#[cfg(test)]
mod tests;
pub mod vrrp;
