//! `edgelbctl`: the command-line client of edgelbd's gRPC API.
//!
//! Commands and their options are clap's (`edgelbctl --help`, `edgelbctl COMMAND --help`; `edgelbctl completions
//! bash|zsh|fish|...` prints a completion script): service list/apply/delete, backend add/drain/remove/weight, flow
//! query/list, port list, peer list/add/remove, stats [--watch S], events. A service is written one way everywhere,
//! in and out: `VIP:PORT/PROTO` (`198.19.0.1:80/tcp`, `[2001:db8:100::1]:443/tcp`, `198.19.0.1:*/udp`).
//! Exit codes: 0 done, 1 the server refused (its message is printed), 2 usage or connection error.

/// `println!` that ends the program quietly (exit 0) when stdout's reader has gone (`edgelbctl ... | head`), as Unix
/// tools do, instead of panicking on the broken pipe.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use edgelb_api::v1;
use edgelb_api::v1::load_balancer_client::LoadBalancerClient;
use edgelb_controlplane::api::convert;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use tonic::transport::{Channel, Endpoint, Uri};

enum Fail {
    Usage(String),
    Connect(String),
    Server(Box<tonic::Status>),
    /// `doctor` found this many failing layers.
    Findings(usize),
}

impl From<tonic::Status> for Fail {
    fn from(s: tonic::Status) -> Self {
        Fail::Server(Box::new(s))
    }
}

fn usage(m: impl Into<String>) -> Fail {
    Fail::Usage(m.into())
}

/// `198.19.0.1:80/tcp`, `[2001:db8::1]:443/udp`, `198.19.0.1:*/tcp`.
fn parse_key(s: &str) -> Result<v1::ServiceKey, Fail> {
    let bad = || usage(format!("{s:?}: expected VIP:PORT/PROTO, e.g. 198.19.0.1:80/tcp or 198.19.0.1:*/udp"));
    let (addr, proto) = s.rsplit_once('/').ok_or_else(bad)?;
    let protocol = match proto {
        "tcp" => v1::Protocol::Tcp,
        "udp" => v1::Protocol::Udp,
        _ => return Err(bad()),
    } as i32;
    let (vip, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let vip = vip.trim_start_matches('[').trim_end_matches(']');
    let _: IpAddr = vip.parse().map_err(|_| bad())?;
    let (port, all_ports) =
        if port == "*" { (0, true) } else { (port.parse::<u16>().map_err(|_| bad())?.into(), false) };
    Ok(v1::ServiceKey { vip: vip.into(), protocol, port, all_ports })
}

fn proto_name(p: i32) -> &'static str {
    if p == v1::Protocol::Udp as i32 {
        "udp"
    } else {
        "tcp"
    }
}

fn show_key(vip: &str, proto: i32, port: u32) -> String {
    let vip = if vip.contains(':') { format!("[{vip}]") } else { vip.to_string() };
    let port = if port == 0 { "*".to_string() } else { port.to_string() };
    format!("{vip}:{port}/{}", proto_name(proto))
}

fn mode_name(m: i32) -> &'static str {
    match v1::Mode::try_from(m) {
        Ok(v1::Mode::Nat) => "nat",
        Ok(v1::Mode::Fullnat) => "fullnat",
        Ok(v1::Mode::DsrL2) => "dsr_l2",
        Ok(v1::Mode::Ipip) => "ipip",
        Ok(v1::Mode::Gue) => "gue",
        _ => "?",
    }
}

fn state_name(s: i32) -> &'static str {
    match v1::BackendState::try_from(s) {
        Ok(v1::BackendState::Active) => "active",
        Ok(v1::BackendState::Draining) => "draining",
        Ok(v1::BackendState::Down) => "down",
        Err(_) => "?",
    }
}

/// PEM files for TLS: the server's CA, and the client's certificate and key for mTLS.
#[derive(Default)]
struct Tls {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

async fn connect(addr: &str, unix: Option<&str>, tls: &Tls) -> Result<LoadBalancerClient<Channel>, Fail> {
    let channel = match unix {
        Some(path) => {
            let path = path.to_string();
            Endpoint::try_from("http://[::1]:50051")
                .map_err(|e| usage(e.to_string()))?
                .connect_with_connector(UnixConnector { path })
                .await
                .map_err(|e| Fail::Connect(format!("cannot connect to the unix socket: {e}")))?
        }
        None => {
            let mut ep = Endpoint::from_shared(addr.to_string()).map_err(|e| usage(format!("--addr {addr:?}: {e}")))?;
            if addr.starts_with("https://") {
                let read = |p: &str| std::fs::read(p).map_err(|e| usage(format!("{p}: {e}")));
                let mut cfg = tonic::transport::ClientTlsConfig::new();
                if let Some(ca) = &tls.ca {
                    cfg = cfg.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
                }
                match (&tls.cert, &tls.key) {
                    (Some(c), Some(k)) => cfg = cfg.identity(tonic::transport::Identity::from_pem(read(c)?, read(k)?)),
                    (None, None) => {}
                    _ => return Err(usage("--cert and --key go together")),
                }
                ep = ep.tls_config(cfg).map_err(|e| usage(format!("TLS: {e}")))?;
            }
            ep
        }
        .connect()
        .await
        .map_err(|e| Fail::Connect(format!("cannot connect to {addr}: {e} (is edgelbd running with its API on?)")))?,
    };
    Ok(LoadBalancerClient::new(channel))
}

/// A connector that dials a unix socket, whatever the URI says.
#[derive(Clone)]
struct UnixConnector {
    path: String,
}

impl tower_service::Service<Uri> for UnixConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move { tokio::net::UnixStream::connect(path).await.map(hyper_util::rt::TokioIo::new) })
    }
}

fn print_json(v: &serde_json::Value) {
    out!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn services_json(list: &v1::ListServicesResponse) -> serde_json::Value {
    serde_json::json!({
        "version": list.version,
        "services": list.services.iter().map(|s| serde_json::json!({
            "service": show_key(&s.vip, s.protocol, s.port),
            "mode": mode_name(s.mode),
            "affinity_timeout_s": s.affinity_timeout_s,
            "maglev_size": s.maglev_size,
            "table_size": s.table_size,
            "source": s.source,
            "backends": s.backends.iter().map(|b| serde_json::json!({
                "address": b.address, "port": b.port, "weight": b.weight, "state": state_name(b.state),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn applied_json(r: &v1::ApplyServicesResponse) -> serde_json::Value {
    serde_json::json!({
        "version": r.version,
        "applied": r.applied,
        "slots_moved": r.slots_moved.iter().map(|m| serde_json::json!({
            "service": show_key(&m.vip, m.protocol, m.port), "moved": m.moved, "table_size": m.table_size,
        })).collect::<Vec<_>>(),
    })
}

fn print_applied(r: &v1::ApplyServicesResponse, json: bool) {
    if json {
        print_json(&applied_json(r));
        return;
    }
    out!("{} version {}", if r.applied { "applied:" } else { "dry run: would make" }, r.version);
    for m in &r.slots_moved {
        out!("  {:<28} {:>8} of {:>8} Maglev slots moved", show_key(&m.vip, m.protocol, m.port), m.moved, m.table_size);
    }
}

fn stats_json(s: &v1::Stats) -> serde_json::Value {
    serde_json::json!({
        "version": s.version, "rx": s.rx, "tx": s.tx, "new_flows": s.new_flows, "replies": s.replies,
        "slowpath": s.slowpath,
        "counters": s.counters.iter().map(|c| (c.name.clone(), serde_json::json!(c.value))).collect::<serde_json::Map<_, _>>(),
        "drops": s.drops.iter().map(|d| (d.reason.clone(), serde_json::json!(d.packets))).collect::<serde_json::Map<_, _>>(),
        "services": s.services.iter().map(|x| serde_json::json!({
            "service": show_key(&x.vip, x.protocol, x.port), "packets": x.packets, "bytes": x.bytes,
            "new_flows": x.new_flows, "active_flows": x.active_flows,
        })).collect::<Vec<_>>(),
        "backends": s.backends.iter().map(|b| serde_json::json!({
            "service": show_key(&b.vip, b.protocol, b.port), "address": b.address, "port": b.backend_port,
            "packets": b.packets, "bytes": b.bytes, "new_flows": b.new_flows, "active_flows": b.active_flows,
        })).collect::<Vec<_>>(),
        "workers": s.workers.iter().map(|w| serde_json::json!({
            "worker": w.worker, "rx": w.rx, "tx": w.tx, "flows_v4": w.flows_v4, "flows_v6": w.flows_v6,
            "burst_ns_p50": w.burst_ns_p50, "burst_ns_p99": w.burst_ns_p99,
            "polls_saturated": w.polls_saturated, "overload_drops": w.overload_drops,
        })).collect::<Vec<_>>(),
    })
}

/// A table in the manner of `ipvsadm -Ln --stats`: each service, then its backends, with flows, packets and bytes.
fn print_stats(s: &v1::Stats) {
    out!(
        "edgelb config version {}: rx {} tx {} new flows {} replies {} slow path {}",
        s.version,
        s.rx,
        s.tx,
        s.new_flows,
        s.replies,
        s.slowpath
    );
    out!(
        "{:<6} {:<34} {:>10} {:>10} {:>12} {:>14}",
        "Prot",
        "LocalAddress:Port",
        "Conns",
        "ActiveConn",
        "InPkts",
        "InBytes"
    );
    out!("{:<6} {:<34}", "", "  -> RemoteAddress:Port");
    for x in &s.services {
        let k = show_key(&x.vip, x.protocol, x.port);
        let local = k.rsplit_once('/').map_or(k.clone(), |(a, _)| a.to_string());
        out!(
            "{:<6} {:<34} {:>10} {:>10} {:>12} {:>14}",
            proto_name(x.protocol).to_uppercase(),
            local,
            x.new_flows,
            x.active_flows,
            x.packets,
            x.bytes
        );
        for b in s.backends.iter().filter(|b| b.vip == x.vip && b.protocol == x.protocol && b.port == x.port) {
            let addr = if b.address.contains(':') { format!("[{}]", b.address) } else { b.address.clone() };
            let port = if b.backend_port == 0 { "*".to_string() } else { b.backend_port.to_string() };
            out!(
                "{:<6} {:<34} {:>10} {:>10} {:>12} {:>14}",
                "",
                format!("  -> {addr}:{port}"),
                b.new_flows,
                b.active_flows,
                b.packets,
                b.bytes
            );
        }
    }
    // The rest of the dataplane's counters (the first line has rx, tx, new flows, replies and slow path).
    let shown = ["packets_received", "packets_transmitted", "flows_new", "replies", "slowpath_packets"];
    let more: Vec<String> = s
        .counters
        .iter()
        .filter(|c| !shown.contains(&c.name.as_str()))
        .map(|c| format!("{} {}", c.name, c.value))
        .collect();
    if !more.is_empty() {
        out!("counters: {}", more.join(", "));
    }
    if !s.drops.is_empty() {
        let d: Vec<String> = s.drops.iter().map(|d| format!("{} {}", d.reason, d.packets)).collect();
        out!("drops: {}", d.join(", "));
    }
    for w in &s.workers {
        // Saturation only where it happened: most workers never are.
        let saturated = if w.polls_saturated > 0 || w.overload_drops > 0 {
            format!(" saturated polls {} refused new flows {}", w.polls_saturated, w.overload_drops)
        } else {
            String::new()
        };
        out!(
            "worker {}: rx {} tx {} flows {}+{} burst p50 {} ns p99 {} ns{saturated}",
            w.worker,
            w.rx,
            w.tx,
            w.flows_v4,
            w.flows_v6,
            w.burst_ns_p50,
            w.burst_ns_p99
        );
    }
}

/// `edgelbctl`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "edgelbctl",
    version,
    about = "The command-line client of edgelbd's gRPC API",
    after_help = "Services are written VIP:PORT/PROTO: 198.19.0.1:80/tcp, [2001:db8:100::1]:443/tcp, 198.19.0.1:*/udp \
                  (all ports).\nExit codes: 0 done, 1 the server refused (its message is printed), 2 usage or \
                  connection error."
)]
pub struct Cli {
    /// The API's address; https:// for TLS.
    #[arg(long, global = true, default_value = "http://127.0.0.1:50051", value_name = "URL")]
    addr: String,
    /// The API's unix socket, instead of --addr.
    #[arg(long, global = true, value_name = "PATH")]
    unix: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// CA certificate to verify the server with (https://).
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<String>,
    /// Client certificate for mTLS (with --key).
    #[arg(long, global = true, value_name = "FILE", requires = "key")]
    cert: Option<String>,
    /// Client key for mTLS (with --cert).
    #[arg(long, global = true, value_name = "FILE", requires = "cert")]
    key: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Services: list them, apply [[service]] tables from a file, delete one.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// A service's backends: add, drain, remove, weight.
    #[command(subcommand)]
    Backend(BackendCmd),
    /// Tracked flows: where one goes, or a listing.
    #[command(subcommand)]
    Flow(FlowCmd),
    /// The appliance's ports and their counters.
    #[command(subcommand)]
    Port(PortCmd),
    /// BGP peers: list, add, remove.
    #[command(subcommand)]
    Peer(PeerCmd),
    /// VRRP virtual routers: which VIPs this appliance owns on its segments.
    #[command(subcommand)]
    Vrrp(VrrpCmd),
    /// The dataplane's counters: per service and backend (as ipvsadm -Ln --stats), every packet counter, drops by
    /// reason, per worker.
    Stats {
        /// Print again every SECONDS (streamed by the API).
        #[arg(long, value_name = "SECONDS")]
        watch: Option<f64>,
    },
    /// Stream the appliance's events (config applied, backend health, Kubernetes, peers) as JSON lines.
    Events,
    /// The running configuration in the config file's own syntax.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Drain the whole appliance, as SIGTERM does: new flows refused, BGP routes tagged GRACEFUL_SHUTDOWN, and
    /// edgelbd exits once no established TCP, UDP or other flow is tracked (or at the timeout). Follows the drain
    /// until edgelbd has stopped, printing the flows it waits for.
    Drain {
        /// Seconds to wait for tracked flows at most (default: edgelbd's --drain-timeout).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u32>,
        /// Start the drain and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Walk a VIP's path (every VIP's when none is given) and judge each layer with its evidence: announcement
    /// (BGP sessions and what each peer was sent, VRRP, Leases), ARP/ND, the service, its backends (health, weights,
    /// Maglev share), their next hops (probed with ARP/ND against the MAC in use), the flow table, drops in the last
    /// minute, the last events. Exits 3 when a layer fails.
    Doctor {
        /// The VIP.
        vip: Option<String>,
        /// How long to wait for the next hops to answer the probe, ms.
        #[arg(long, default_value_t = 500, value_name = "MS")]
        probe_wait: u32,
    },
    /// Print a shell completion script for edgelbctl.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ServiceCmd {
    /// List the services and their backends.
    List,
    /// Apply [[service]] tables (the config file's syntax, checked by the same code) as upserts.
    Apply {
        /// The file.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
        /// Validate and report what would change, apply nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply only if the config version is still this (0: any).
        #[arg(long, default_value_t = 0, value_name = "N")]
        expected_version: u64,
    },
    /// Delete a service (PORT * deletes every port of the VIP and protocol).
    Delete {
        /// VIP:PORT/PROTO.
        #[arg(value_parser = service_key)]
        service: v1::ServiceKey,
    },
}

/// A service and one of its backends.
#[derive(Debug, Args)]
struct BackendArgs {
    /// VIP:PORT/PROTO.
    #[arg(value_parser = service_key)]
    service: v1::ServiceKey,
    /// ADDRESS:PORT.
    #[arg(value_parser = sock)]
    backend: SocketAddr,
    /// Weight (0: the default).
    #[arg(long, default_value_t = 0)]
    weight: u32,
}

#[derive(Debug, Subcommand)]
enum BackendCmd {
    /// Add a backend.
    Add(BackendArgs),
    /// Drain a backend: no new flows, its tracked flows stay.
    Drain(BackendArgs),
    /// Remove a backend.
    Remove(BackendArgs),
    /// Set a backend's weight.
    Weight {
        /// VIP:PORT/PROTO.
        #[arg(value_parser = service_key)]
        service: v1::ServiceKey,
        /// ADDRESS:PORT.
        #[arg(value_parser = sock)]
        backend: SocketAddr,
        /// The new weight.
        weight: u32,
    },
}

#[derive(Debug, Subcommand)]
enum FlowCmd {
    /// Where a client's flow to a service goes (tracked, or what Maglev/affinity would pick).
    Query {
        /// CLIENT:PORT.
        #[arg(value_parser = sock)]
        client: SocketAddr,
        /// VIP:PORT/PROTO.
        #[arg(value_parser = service_key)]
        service: v1::ServiceKey,
    },
    /// Tracked flows, paged through the API.
    List {
        /// Only flows of this service (VIP:PORT/PROTO).
        #[arg(value_parser = service_key)]
        service: Option<v1::ServiceKey>,
        /// Only flows to this backend (ADDRESS:PORT).
        #[arg(long, value_parser = sock, requires = "service")]
        backend: Option<SocketAddr>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
enum PortCmd {
    /// List the ports with their addresses and counters.
    List,
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Print the running services as `[[service]]` tables (what `service apply -f` and the config file take), the
    /// ports as comments, each service's source noted.
    Export,
}

#[derive(Debug, Subcommand)]
enum VrrpCmd {
    /// List the virtual routers: state, priority, master, VIPs, advertisements; and refused advertisements.
    List,
}

#[derive(Debug, Subcommand)]
enum PeerCmd {
    /// List the peers and their sessions.
    List,
    /// Add a peer (the config file's rules and defaults apply).
    Add(Box<PeerArgs>),
    /// Remove a peer by name.
    Remove {
        /// The peer's name.
        name: String,
    },
}

#[derive(Debug, Args)]
struct PeerArgs {
    /// The peer's address.
    address: String,
    /// The peer's AS.
    #[arg(long = "as", value_name = "ASN")]
    remote_as: u32,
    /// Name for status and removal (default: the address).
    #[arg(long)]
    name: Option<String>,
    /// TCP MD5 key.
    #[arg(long)]
    password: Option<String>,
    /// Wait for the peer to connect.
    #[arg(long)]
    passive: bool,
    /// Next hop for IPv4 routes.
    #[arg(long, value_name = "ADDRESS")]
    next_hop_v4: Option<String>,
    /// Next hop for IPv6 routes.
    #[arg(long, value_name = "ADDRESS")]
    next_hop_v6: Option<String>,
    /// A community to attach, ASN:VALUE (repeatable).
    #[arg(long = "community", value_name = "ASN:VALUE")]
    communities: Vec<String>,
    /// A large community to attach, ASN:DATA1:DATA2 (repeatable).
    #[arg(long = "large-community", value_name = "ASN:DATA1:DATA2")]
    large_communities: Vec<String>,
    /// Hold time to propose, seconds (0: no hold timer).
    #[arg(long, value_name = "SECONDS")]
    hold_time: Option<u32>,
    /// The peer's TCP port.
    #[arg(long)]
    port: Option<u32>,
    /// MULTI_EXIT_DISC to send.
    #[arg(long)]
    med: Option<u32>,
    /// Graceful-restart time to advertise, seconds.
    #[arg(long, value_name = "SECONDS")]
    graceful_restart: Option<u32>,
    /// Run BFD with the peer (300 ms x 3 unless the --bfd-* options say otherwise): a failure drops the session.
    #[arg(long)]
    bfd: bool,
    /// BFD desired minimum transmit interval, milliseconds (implies --bfd).
    #[arg(long, value_name = "MS")]
    bfd_min_tx: Option<u32>,
    /// BFD required minimum receive interval, milliseconds (implies --bfd).
    #[arg(long, value_name = "MS")]
    bfd_min_rx: Option<u32>,
    /// BFD detection multiplier (implies --bfd).
    #[arg(long, value_name = "N")]
    bfd_multiplier: Option<u32>,
}

/// `198.19.0.1:80/tcp`, `[2001:db8::1]:443/udp`, `198.19.0.1:*/tcp`.
fn service_key(s: &str) -> Result<v1::ServiceKey, String> {
    parse_key(s).map_err(|f| match f {
        Fail::Usage(m) => m,
        _ => format!("{s:?}: not a service"),
    })
}

fn sock(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("{s:?}: expected ADDRESS:PORT"))
}

type Client = LoadBalancerClient<Channel>;

async fn run(cli: Cli) -> Result<(), Fail> {
    let json = cli.output == Output::Json;
    if let Cmd::Completions { shell } = cli.cmd {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "edgelbctl", &mut script);
        out!("{}", String::from_utf8_lossy(&script).trim_end());
        return Ok(());
    }
    let tls = Tls { ca: cli.ca, cert: cli.cert, key: cli.key };
    let mut c = connect(&cli.addr, cli.unix.as_deref(), &tls).await?;
    match cli.cmd {
        Cmd::Service(op) => service(&mut c, op, json).await,
        Cmd::Backend(op) => backend(&mut c, op, json).await,
        Cmd::Flow(FlowCmd::Query { client, service }) => flow_query(&mut c, client, service, json).await,
        Cmd::Flow(FlowCmd::List { service, backend, limit }) => flow_list(&mut c, service, backend, limit, json).await,
        Cmd::Port(PortCmd::List) => port_list(&mut c, json).await,
        Cmd::Peer(op) => peer(&mut c, op, json).await,
        Cmd::Vrrp(VrrpCmd::List) => vrrp_list(&mut c, json).await,
        Cmd::Config(ConfigCmd::Export) => config_export(&mut c).await,
        Cmd::Stats { watch } => stats(&mut c, watch, json).await,
        Cmd::Events => events(&mut c).await,
        Cmd::Drain { timeout, no_wait } => drain(&mut c, timeout, no_wait, json).await,
        Cmd::Doctor { vip, probe_wait } => doctor(&mut c, vip, probe_wait, json).await,
        Cmd::Completions { .. } => Ok(()),
    }
}

async fn service(c: &mut Client, op: ServiceCmd, json: bool) -> Result<(), Fail> {
    let req = match op {
        ServiceCmd::List => return service_list(c, json).await,
        ServiceCmd::Apply { file, dry_run, expected_version } => {
            let text = std::fs::read_to_string(&file).map_err(|e| usage(format!("{file}: {e}")))?;
            // The same [[service]] tables as the config file, parsed by the same code: errors name field and line.
            let loaded = edgelb_controlplane::config::parse(&text).map_err(|e| usage(format!("{file}: {e}")))?;
            let upserts = loaded.model.services.iter().map(convert::service_out).collect();
            v1::ApplyServicesRequest { upserts, deletes: vec![], dry_run, expected_version }
        }
        ServiceCmd::Delete { service } => v1::ApplyServicesRequest { deletes: vec![service], ..Default::default() },
    };
    let r = c.apply_services(req).await?.into_inner();
    print_applied(&r, json);
    Ok(())
}

async fn service_list(c: &mut Client, json: bool) -> Result<(), Fail> {
    let r = c.list_services(v1::ListServicesRequest {}).await?.into_inner();
    if json {
        print_json(&services_json(&r));
    } else {
        out!("version {}", r.version);
        for s in &r.services {
            let aff =
                if s.affinity_timeout_s > 0 { format!(" affinity {}s", s.affinity_timeout_s) } else { String::new() };
            let auto = if s.maglev_size == 0 { " (auto)" } else { "" };
            out!(
                "{} {} maglev {}{auto}{aff} (from {})",
                show_key(&s.vip, s.protocol, s.port),
                mode_name(s.mode),
                s.table_size,
                if s.source.is_empty() { "?" } else { &s.source }
            );
            for b in &s.backends {
                out!("  -> {}:{} weight {} {}", b.address, b.port, b.weight, state_name(b.state));
            }
        }
    }
    Ok(())
}

async fn backend(c: &mut Client, op: BackendCmd, json: bool) -> Result<(), Fail> {
    let (service, b, weight) = match &op {
        BackendCmd::Add(a) | BackendCmd::Drain(a) | BackendCmd::Remove(a) => (a.service.clone(), a.backend, a.weight),
        BackendCmd::Weight { service, backend, weight } => (service.clone(), *backend, *weight),
    };
    let backend = v1::Backend { address: b.ip().to_string(), port: u32::from(b.port()), weight, state: 0 };
    let req = v1::BackendRequest { service: Some(service), backend: Some(backend), expected_version: 0 };
    let r = match op {
        BackendCmd::Add(_) => c.add_backend(req).await?,
        BackendCmd::Drain(_) => c.drain_backend(req).await?,
        BackendCmd::Remove(_) => c.remove_backend(req).await?,
        BackendCmd::Weight { .. } => c.set_backend_weight(req).await?,
    }
    .into_inner();
    print_applied(&r, json);
    Ok(())
}

async fn flow_query(c: &mut Client, client: SocketAddr, key: v1::ServiceKey, json: bool) -> Result<(), Fail> {
    let r = c
        .query_flow(v1::QueryFlowRequest {
            client: client.ip().to_string(),
            client_port: u32::from(client.port()),
            vip: key.vip.clone(),
            vip_port: key.port,
            protocol: key.protocol,
        })
        .await?
        .into_inner();
    if json {
        print_json(&serde_json::json!({
            "matched": r.matched, "backend": r.backend_address, "backend_port": r.backend_port,
            "tracked": r.tracked, "worker": r.worker,
            "fresh_backend": r.fresh_backend_address, "fresh_backend_port": r.fresh_backend_port,
        }));
    } else if r.matched {
        out!(
            "{client} -> {} goes to {}:{} ({}, worker {})",
            show_key(&key.vip, key.protocol, key.port),
            r.backend_address,
            r.backend_port,
            if r.tracked { "tracked flow" } else { "new flow: Maglev/affinity would pick it" },
            r.worker
        );
        if r.tracked && (&r.fresh_backend_address, r.fresh_backend_port) != (&r.backend_address, r.backend_port) {
            let to = if r.fresh_backend_address.is_empty() {
                "nowhere (no active backend)".to_string()
            } else {
                format!("{}:{}", r.fresh_backend_address, r.fresh_backend_port)
            };
            out!("  without this state (another appliance, no flow sync) Maglev would send it to {to}");
        }
    } else {
        out!("{client} -> {}: no service matches", show_key(&key.vip, key.protocol, key.port));
    }
    Ok(())
}

async fn flow_list(
    c: &mut Client,
    service: Option<v1::ServiceKey>,
    backend: Option<SocketAddr>,
    limit: usize,
    json: bool,
) -> Result<(), Fail> {
    let mut flows = Vec::new();
    let mut token = String::new();
    loop {
        let r = c
            .list_flows(v1::ListFlowsRequest {
                service: service.clone(),
                backend_address: backend.map(|b| b.ip().to_string()).unwrap_or_default(),
                backend_port: backend.map_or(0, |b| u32::from(b.port())),
                page_size: (limit - flows.len()).clamp(1, 1000) as u32,
                page_token: token,
            })
            .await?
            .into_inner();
        flows.extend(r.flows);
        token = r.next_page_token;
        if token.is_empty() || flows.len() >= limit {
            break;
        }
    }
    flows.truncate(limit);
    if json {
        print_json(&serde_json::json!(flows
            .iter()
            .map(|f| serde_json::json!({
                "client": format!("{}:{}", f.client, f.client_port),
                "service": show_key(&f.vip, f.protocol, f.vip_port),
                "backend": format!("{}:{}", f.backend_address, f.backend_port),
                "worker": f.worker, "state": f.state, "expires_in_ms": f.expires_in_ms,
            }))
            .collect::<Vec<_>>()));
    } else {
        out!(
            "{:<6} {:<28} {:<28} {:<28} {:>6} {:<12} {:>10}",
            "Prot",
            "Client",
            "Service",
            "Backend",
            "Worker",
            "State",
            "Expires"
        );
        for f in &flows {
            out!(
                "{:<6} {:<28} {:<28} {:<28} {:>6} {:<12} {:>9}s",
                proto_name(f.protocol).to_uppercase(),
                format!("{}:{}", f.client, f.client_port),
                show_key(&f.vip, f.protocol, f.vip_port),
                format!("{}:{}", f.backend_address, f.backend_port),
                f.worker,
                f.state,
                f.expires_in_ms / 1000
            );
        }
    }
    Ok(())
}

async fn config_export(c: &mut Client) -> Result<(), Fail> {
    let ports = c.list_ports(v1::ListPortsRequest {}).await?.into_inner().ports;
    let services = c.list_services(v1::ListServicesRequest {}).await?.into_inner();
    out!("{}", export_toml(&ports, &services));
    Ok(())
}

/// The services in the config file's syntax (TOML basic strings: the values are addresses, names and paths).
fn export_toml(ports: &[v1::Port], list: &v1::ListServicesResponse) -> String {
    use std::fmt::Write;
    let mut o = format!(
        "# edgelbctl config export, version {}: the running services as the config file writes them.\n\
         # Ports, [bgp], [kubernetes] and the other sections come from edgelbd's file unchanged; its ports now:\n",
        list.version
    );
    for p in ports {
        let _ = writeln!(o, "#   port {} {} ({}) {} mtu {}", p.index, p.name, p.driver, p.addresses.join(" "), p.mtu);
    }
    for s in &list.services {
        let proto = if s.protocol == v1::Protocol::Udp as i32 { "udp" } else { "tcp" };
        let _ = write!(o, "\n# from {}\n[[service]]\nvip = {:?}\nprotocol = \"{proto}\"\n", s.source, s.vip);
        if !s.all_ports {
            let _ = writeln!(o, "port = {}", s.port);
        }
        let _ = writeln!(o, "mode = \"{}\"", mode_name(s.mode));
        if s.affinity_timeout_s > 0 {
            let _ = writeln!(o, "affinity_timeout = {}", s.affinity_timeout_s);
        }
        if s.maglev_size > 0 {
            let _ = writeln!(o, "maglev_size = {}", s.maglev_size);
        }
        if s.mode == v1::Mode::Gue as i32 && s.gue_port != 0 {
            let _ = writeln!(o, "gue_port = {}", s.gue_port);
        }
        if let Some(h) = &s.health {
            let kind = if h.r#type == v1::HealthType::Http as i32 { "http" } else { "tcp" };
            let _ = write!(o, "\n[service.health]\ntype = \"{kind}\"\n");
            if kind == "http" {
                let _ = writeln!(o, "path = {:?}", h.path);
                if h.expect_status != 0 {
                    let _ = writeln!(o, "expect = {}", h.expect_status);
                }
            }
            for (k, v) in [
                ("port", h.port),
                ("interval_ms", h.interval_ms),
                ("timeout_ms", h.timeout_ms),
                ("rise", h.rise),
                ("fall", h.fall),
            ] {
                if v != 0 {
                    let _ = writeln!(o, "{k} = {v}");
                }
            }
            if h.keep_flows {
                let _ = writeln!(o, "keep_flows = true");
            }
        }
        for b in &s.backends {
            let _ = write!(o, "\n[[service.backend]]\naddress = {:?}\n", b.address);
            if b.port != 0 {
                let _ = writeln!(o, "port = {}", b.port);
            }
            let _ = writeln!(o, "weight = {}\nstate = \"{}\"", b.weight, state_name(b.state));
        }
    }
    o
}

/// `doctor [VIP]`: each VIP's findings, layer by layer; fails with the count of failing layers.
async fn doctor(c: &mut Client, vip: Option<String>, probe_wait: u32, json: bool) -> Result<(), Fail> {
    let vips = match vip {
        Some(v) => vec![v],
        None => {
            let r = c.list_services(v1::ListServicesRequest::default()).await?.into_inner();
            let mut v: Vec<String> = r.services.iter().map(|s| s.vip.clone()).collect();
            v.dedup();
            v
        }
    };
    let mut failing = 0;
    let mut all = Vec::new();
    for vip in vips {
        let d = c.diagnose(v1::DiagnoseRequest { vip, probe_wait_ms: probe_wait }).await?.into_inner();
        failing += d.findings.iter().filter(|f| f.verdict == "fail").count();
        if json {
            all.push(serde_json::json!({
                "vip": d.vip,
                "findings": d.findings.iter().map(|f| serde_json::json!({
                    "layer": f.layer, "verdict": f.verdict, "summary": f.summary, "evidence": f.evidence,
                })).collect::<Vec<_>>(),
            }));
            continue;
        }
        out!("{}", d.vip);
        for f in &d.findings {
            out!("  {:<13} {:<5} {}", f.layer, f.verdict.to_uppercase(), f.summary);
            for e in &f.evidence {
                out!("  {:<13} {:<5}   - {e}", "", "");
            }
        }
    }
    if json {
        print_json(&serde_json::json!({ "vips": all }));
    }
    if failing > 0 {
        return Err(Fail::Findings(failing));
    }
    Ok(())
}

async fn vrrp_list(c: &mut Client, json: bool) -> Result<(), Fail> {
    let r = c.list_vrrp(v1::ListVrrpRequest {}).await?.into_inner();
    if json {
        print_json(&serde_json::json!({
            "routers": r.routers.iter().map(|v| serde_json::json!({
                "name": v.name, "vrid": v.vrid, "port": v.port, "family": v.family, "state": v.state,
                "priority": v.priority, "effective_priority": v.effective_priority, "master": v.master,
                "vips": v.vips, "adverts_in": v.adverts_in, "adverts_out": v.adverts_out,
                "became_master": v.became_master, "transitions": v.transitions,
            })).collect::<Vec<_>>(),
            "refused": r.refused.iter().map(|d| (d.reason.clone(), d.packets)).collect::<std::collections::BTreeMap<_, _>>(),
        }));
    } else {
        for v in &r.routers {
            out!(
                "{:<16} vrid {:>3} port {} {} {:<7} priority {}/{} master {} vips [{}] adverts in/out {}/{} master {} times",
                v.name,
                v.vrid,
                v.port,
                v.family,
                v.state,
                v.effective_priority,
                v.priority,
                if v.master.is_empty() { "-" } else { &v.master },
                v.vips.join(" "),
                v.adverts_in,
                v.adverts_out,
                v.became_master
            );
        }
        let refused: Vec<String> =
            r.refused.iter().filter(|d| d.packets > 0).map(|d| format!("{}={}", d.reason, d.packets)).collect();
        if !refused.is_empty() {
            out!("refused adverts: {}", refused.join(" "));
        }
    }
    Ok(())
}

async fn port_list(c: &mut Client, json: bool) -> Result<(), Fail> {
    let r = c.list_ports(v1::ListPortsRequest {}).await?.into_inner();
    if json {
        print_json(&serde_json::json!(r
            .ports
            .iter()
            .map(|p| serde_json::json!({
                "index": p.index, "name": p.name, "driver": p.driver, "mac": p.mac, "addresses": p.addresses,
                "mtu": p.mtu, "rx_packets": p.rx_packets, "rx_bytes": p.rx_bytes, "tx_packets": p.tx_packets,
                "tx_bytes": p.tx_bytes, "rx_dropped": p.rx_dropped, "tx_dropped": p.tx_dropped,
            }))
            .collect::<Vec<_>>()));
    } else {
        for p in &r.ports {
            out!(
                "port {} {} ({}) {} mtu {} [{}]: rx {} pkts {} bytes, tx {} pkts {} bytes, dropped rx {} tx {}",
                p.index,
                p.name,
                p.driver,
                p.mac,
                p.mtu,
                p.addresses.join(" "),
                p.rx_packets,
                p.rx_bytes,
                p.tx_packets,
                p.tx_bytes,
                p.rx_dropped,
                p.tx_dropped
            );
        }
    }
    Ok(())
}

async fn peer(c: &mut Client, op: PeerCmd, json: bool) -> Result<(), Fail> {
    let r = match op {
        PeerCmd::Add(a) => {
            let bfd =
                (a.bfd || a.bfd_min_tx.is_some() || a.bfd_min_rx.is_some() || a.bfd_multiplier.is_some()).then_some(
                    v1::BfdConfig { min_tx_ms: a.bfd_min_tx, min_rx_ms: a.bfd_min_rx, multiplier: a.bfd_multiplier },
                );
            let p = v1::PeerConfig {
                address: a.address,
                remote_as: a.remote_as,
                name: a.name.unwrap_or_default(),
                password: a.password,
                passive: a.passive,
                next_hop_v4: a.next_hop_v4.unwrap_or_default(),
                next_hop_v6: a.next_hop_v6.unwrap_or_default(),
                communities: a.communities,
                large_communities: a.large_communities,
                hold_time: a.hold_time,
                port: a.port,
                med: a.med,
                graceful_restart: a.graceful_restart,
                bfd,
                ..Default::default()
            };
            c.add_peer(p).await?.into_inner()
        }
        PeerCmd::Remove { name } => c.remove_peer(v1::RemovePeerRequest { name }).await?.into_inner(),
        PeerCmd::List => c.list_peers(v1::ListPeersRequest {}).await?.into_inner(),
    };
    if json {
        print_json(&serde_json::json!(r
            .peers
            .iter()
            .map(|p| serde_json::json!({
                "name": p.name, "state": p.state, "uptime_s": p.uptime_s, "last_error": p.last_error,
                "msgs_in": p.msgs_in, "msgs_out": p.msgs_out, "prefixes_received": p.prefixes_received,
                "announced": p.announced, "established_count": p.established_count,
                "treat_as_withdraw": p.treat_as_withdraw,
                "bfd": p.bfd.as_ref().map(|b| serde_json::json!({
                    "state": b.state, "remote_state": b.remote_state, "diag": b.diag, "up_count": b.up_count,
                    "failures": b.failures, "detection_ms": b.detection_ms, "packets_in": b.packets_in,
                    "packets_out": b.packets_out,
                })),
            }))
            .collect::<Vec<_>>()));
    } else {
        for p in &r.peers {
            let bfd = p.bfd.as_ref().map_or_else(
                || "-".to_string(),
                |b| {
                    let why = if b.state == "Up" { String::new() } else { format!(" ({})", b.diag) };
                    format!("{} {}ms failures {}{why}", b.state, b.detection_ms, b.failures)
                },
            );
            out!(
                "{:<20} {:<12} up {:>6}s announced {:>4} received {:>4} treat-as-withdraw {:>3} msgs in/out {}/{} bfd {} {}",
                p.name,
                p.state,
                p.uptime_s,
                p.announced,
                p.prefixes_received,
                p.treat_as_withdraw,
                p.msgs_in,
                p.msgs_out,
                bfd,
                p.last_error
            );
        }
    }
    Ok(())
}

async fn stats(c: &mut Client, every: Option<f64>, json: bool) -> Result<(), Fail> {
    match every {
        None => {
            let s = c.get_stats(v1::GetStatsRequest {}).await?.into_inner();
            if json {
                print_json(&stats_json(&s));
            } else {
                print_stats(&s);
            }
        }
        Some(secs) => {
            let mut st =
                c.watch_stats(v1::WatchStatsRequest { interval_ms: (secs * 1000.0) as u32 }).await?.into_inner();
            while let Some(s) = st.message().await? {
                if json {
                    out!("{}", stats_json(&s));
                } else {
                    print_stats(&s);
                    out!();
                }
            }
        }
    }
    Ok(())
}

fn drain_json(d: &v1::DrainStatus) -> serde_json::Value {
    serde_json::json!({
        "requested": d.requested, "draining": d.draining, "elapsed_ms": d.elapsed_ms, "timeout_ms": d.timeout_ms,
        "established": d.established, "udp": d.udp, "other": d.other, "closing": d.closing, "half_open": d.half_open,
    })
}

async fn drain(c: &mut Client, timeout: Option<u32>, no_wait: bool, json: bool) -> Result<(), Fail> {
    let mut d = c.drain(v1::DrainRequest { timeout_s: timeout }).await?.into_inner();
    if no_wait {
        if json {
            print_json(&drain_json(&d));
        } else {
            out!("drain asked for");
        }
        return Ok(());
    }
    let mut shown = None;
    loop {
        let line = (d.draining, d.established, d.udp, d.other);
        if shown != Some(line) && d.draining {
            if json {
                out!("{}", drain_json(&d));
            } else {
                out!(
                    "draining {:.1}s of {}s: waiting for {} established, {} UDP, {} other ({} closing, {} half-open not waited for)",
                    d.elapsed_ms as f64 / 1000.0,
                    d.timeout_ms / 1000,
                    d.established,
                    d.udp,
                    d.other,
                    d.closing,
                    d.half_open
                );
            }
            shown = Some(line);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // The API goes away with edgelbd: the drain is over.
        match c.get_drain(v1::GetDrainRequest {}).await {
            Ok(r) => d = r.into_inner(),
            Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled) => {
                if json {
                    out!("{}", serde_json::json!({"stopped": true}));
                } else {
                    out!("drained: edgelbd stopped");
                }
                return Ok(());
            }
            Err(s) => return Err(s.into()),
        }
    }
}

async fn events(c: &mut Client) -> Result<(), Fail> {
    let mut st = c.watch_events(v1::WatchEventsRequest {}).await?.into_inner();
    while let Some(e) = st.message().await? {
        let v = match e.kind {
            Some(v1::event::Kind::ConfigApplied(a)) => serde_json::json!({
                "time_ms": e.time_ms, "event": "config_applied", "version": a.version, "source": a.source,
                "slots_moved": a.slots_moved.iter().map(|m| (show_key(&m.vip, m.protocol, m.port), m.moved)).collect::<Vec<_>>(),
            }),
            Some(v1::event::Kind::BackendHealth(h)) => serde_json::json!({
                "time_ms": e.time_ms, "event": "backend_health", "service": show_key(&h.vip, h.protocol, h.port),
                "backend": format!("{}:{}", h.address, h.backend_port), "healthy": h.healthy, "reason": h.reason,
            }),
            Some(v1::event::Kind::Kubernetes(k)) => serde_json::json!({
                "time_ms": e.time_ms, "event": "kubernetes", "service": k.service, "reason": k.reason,
                "message": k.message,
            }),
            Some(v1::event::Kind::PeerState(p)) => serde_json::json!({
                "time_ms": e.time_ms, "event": "peer_state", "peer": p.peer, "state": p.state, "reason": p.reason,
            }),
            Some(v1::event::Kind::VrrpState(v)) => serde_json::json!({
                "time_ms": e.time_ms, "event": "vrrp_state", "router": v.router, "state": v.state, "reason": v.reason,
            }),
            None => continue,
        };
        out!("{v}");
    }
    Ok(())
}

/// Run `edgelbctl` with `args` (without the program name): what `edgelbctl` and `edgelb ctl` do.
pub fn main_with(args: Vec<String>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("edgelbctl: {e}");
            return ExitCode::from(2);
        }
    };
    let mut argv = vec!["edgelbctl".to_string()];
    argv.extend(args);
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; usage errors print to stderr with code 2.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Connect(m)) => {
            eprintln!("edgelbctl: {m}");
            ExitCode::from(2)
        }
        Err(Fail::Usage(m)) => {
            eprintln!("edgelbctl: {m}");
            ExitCode::from(2)
        }
        Err(Fail::Findings(n)) => {
            eprintln!("edgelbctl: doctor: {n} layer(s) failing");
            ExitCode::from(3)
        }
        Err(Fail::Server(s)) => {
            eprintln!("edgelbctl: {:?}: {}", s.code(), s.message());
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgelb_controlplane::api::convert;
    use edgelb_dataplane::model::{HealthKind, HealthSpec};

    /// What `config export` prints is read back by the config file's own parser as the same services (every mode,
    /// both families, all ports, affinity, a fixed table size, HTTP health).
    #[test]
    fn an_export_reads_back_as_the_same_services() {
        let mut services = edgelb_testkit::models::every_mode(1009).services;
        services[0].affinity_timeout_s = Some(600);
        services[0].maglev_size = Some(2003);
        services[1].health = Some(HealthSpec {
            kind: HealthKind::Http { path: "/healthz".into(), expect_status: 204 },
            port: 9000,
            interval_ms: 500,
            timeout_ms: 200,
            rise: 2,
            fall: 3,
            keep_flows: true,
        });
        let list = v1::ListServicesResponse {
            version: 7,
            services: services
                .iter()
                .map(|s| v1::Service { source: "file".into(), ..convert::service_out(s) })
                .collect(),
        };
        let text = export_toml(&[], &list);
        // The sections full-NAT and the tunnels need come from the appliance's own file.
        let file = format!(
            "[[port]]\nname = \"p1\"\ndriver = \"afpacket\"\naddresses = [\"198.18.2.1/24\", \"2001:db8:2::1/64\"]\n\n\
             [fullnat]\nsources = [\"198.18.2.1\", \"2001:db8:2::1\"]\nports = [20000, 29999]\n\n\
             [tunnel]\nsources = [\"198.18.3.0/24\", \"2001:db8:3::/120\"]\n\n{text}"
        );
        let back = edgelb_controlplane::config::parse(&file).unwrap_or_else(|e| panic!("{e}\n{text}")).model.services;
        assert_eq!(back, services, "{text}");
    }
}
