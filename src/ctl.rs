//! `edgelbctl`: the command-line client of edgelbd's gRPC API.
//!
//! ```text
//! edgelbctl [--addr http://127.0.0.1:50051 | --unix PATH] [--output table|json]
//!           [--ca FILE [--cert FILE --key FILE]] COMMAND        (https:// addresses: TLS, client certificate for mTLS)
//!   service list
//!   service apply -f FILE [--dry-run] [--expected-version N]   FILE: [[service]] tables as in the config file
//!   service delete VIP:PORT/PROTO                               PORT may be * (all ports); PROTO tcp or udp
//!   backend add|drain|remove VIP:PORT/PROTO ADDR:PORT [--weight N]
//!   backend weight VIP:PORT/PROTO ADDR:PORT N
//!   flow query CLIENT:PORT VIP:PORT/PROTO
//!   flow list [VIP:PORT/PROTO [--backend ADDR:PORT]] [--limit N]     tracked flows, paged through the API
//!   port list
//!   peer list | add ADDRESS --as N [--name NAME] [--password KEY] [--passive] [--next-hop-v4 A] [--next-hop-v6 A]
//!              [--community ASN:V]... [--large-community A:B:C]... [--hold-time S] | remove NAME
//!   stats [--watch SECONDS]
//!   events
//! ```
//! Exit codes: 0 done, 1 the server refused (its message is printed), 2 usage or connection error.

use edgelb_api::v1;
use edgelb_api::v1::load_balancer_client::LoadBalancerClient;
use edgelb_controlplane::api::convert;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use tonic::transport::{Channel, Endpoint, Uri};

const USAGE: &str =
    "usage: edgelbctl [--addr URL | --unix PATH] [--output table|json] [--ca FILE [--cert FILE --key FILE]] COMMAND
  service list
  service apply -f FILE [--dry-run] [--expected-version N]
  service delete VIP:PORT/PROTO
  backend add|drain|remove VIP:PORT/PROTO ADDR:PORT [--weight N]
  backend weight VIP:PORT/PROTO ADDR:PORT N
  flow query CLIENT:PORT VIP:PORT/PROTO
  flow list [VIP:PORT/PROTO [--backend ADDR:PORT]] [--limit N]
  port list
  peer list | add ADDRESS --as N [--name NAME] [--password KEY] [--passive] [--next-hop-v4 A] [--next-hop-v6 A]
             [--community ASN:V]... [--large-community A:B:C]... [--hold-time S] | remove NAME
  stats [--watch SECONDS]
  events";

enum Fail {
    Usage(String),
    Connect(String),
    Server(Box<tonic::Status>),
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

fn parse_sock(s: &str) -> Result<SocketAddr, Fail> {
    s.parse().map_err(|_| usage(format!("{s:?}: expected ADDRESS:PORT")))
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
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn services_json(list: &v1::ListServicesResponse) -> serde_json::Value {
    serde_json::json!({
        "version": list.version,
        "services": list.services.iter().map(|s| serde_json::json!({
            "service": show_key(&s.vip, s.protocol, s.port),
            "mode": mode_name(s.mode),
            "affinity_timeout_s": s.affinity_timeout_s,
            "maglev_size": s.maglev_size,
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
    println!("{} version {}", if r.applied { "applied:" } else { "dry run: would make" }, r.version);
    for m in &r.slots_moved {
        println!(
            "  {:<28} {:>8} of {:>8} Maglev slots moved",
            show_key(&m.vip, m.protocol, m.port),
            m.moved,
            m.table_size
        );
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
            "new_flows": x.new_flows,
        })).collect::<Vec<_>>(),
        "backends": s.backends.iter().map(|b| serde_json::json!({
            "service": show_key(&b.vip, b.protocol, b.port), "address": b.address, "port": b.backend_port,
            "packets": b.packets, "bytes": b.bytes, "new_flows": b.new_flows,
        })).collect::<Vec<_>>(),
        "workers": s.workers.iter().map(|w| serde_json::json!({
            "worker": w.worker, "rx": w.rx, "tx": w.tx, "flows_v4": w.flows_v4, "flows_v6": w.flows_v6,
            "burst_ns_p50": w.burst_ns_p50, "burst_ns_p99": w.burst_ns_p99,
        })).collect::<Vec<_>>(),
    })
}

/// A table in the manner of `ipvsadm -Ln --stats`: each service, then its backends, with flows, packets and bytes.
fn print_stats(s: &v1::Stats) {
    println!(
        "edgelb config version {}: rx {} tx {} new flows {} replies {} slow path {}",
        s.version, s.rx, s.tx, s.new_flows, s.replies, s.slowpath
    );
    println!("{:<6} {:<34} {:>10} {:>12} {:>14}", "Prot", "LocalAddress:Port", "Conns", "InPkts", "InBytes");
    println!("{:<6} {:<34}", "", "  -> RemoteAddress:Port");
    for x in &s.services {
        let k = show_key(&x.vip, x.protocol, x.port);
        let local = k.rsplit_once('/').map_or(k.clone(), |(a, _)| a.to_string());
        println!(
            "{:<6} {:<34} {:>10} {:>12} {:>14}",
            proto_name(x.protocol).to_uppercase(),
            local,
            x.new_flows,
            x.packets,
            x.bytes
        );
        for b in s.backends.iter().filter(|b| b.vip == x.vip && b.protocol == x.protocol && b.port == x.port) {
            let addr = if b.address.contains(':') { format!("[{}]", b.address) } else { b.address.clone() };
            let port = if b.backend_port == 0 { "*".to_string() } else { b.backend_port.to_string() };
            println!(
                "{:<6} {:<34} {:>10} {:>12} {:>14}",
                "",
                format!("  -> {addr}:{port}"),
                b.new_flows,
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
        println!("counters: {}", more.join(", "));
    }
    if !s.drops.is_empty() {
        let d: Vec<String> = s.drops.iter().map(|d| format!("{} {}", d.reason, d.packets)).collect();
        println!("drops: {}", d.join(", "));
    }
    for w in &s.workers {
        println!(
            "worker {}: rx {} tx {} flows {}+{} burst p50 {} ns p99 {} ns",
            w.worker, w.rx, w.tx, w.flows_v4, w.flows_v6, w.burst_ns_p50, w.burst_ns_p99
        );
    }
}

fn backend_arg(it: &mut std::vec::IntoIter<String>, weight: u32) -> Result<(v1::ServiceKey, v1::Backend), Fail> {
    let key = parse_key(&it.next().ok_or_else(|| usage("missing VIP:PORT/PROTO"))?)?;
    let b = parse_sock(&it.next().ok_or_else(|| usage("missing backend ADDR:PORT"))?)?;
    Ok((key, v1::Backend { address: b.ip().to_string(), port: u32::from(b.port()), weight, state: 0 }))
}

async fn run(argv: Vec<String>) -> Result<(), Fail> {
    let mut addr = "http://127.0.0.1:50051".to_string();
    let mut unix = None;
    let mut json = false;
    let mut tls = Tls::default();
    let mut rest = Vec::new();
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--addr" => addr = it.next().ok_or_else(|| usage("--addr needs a URL"))?,
            "--unix" => unix = Some(it.next().ok_or_else(|| usage("--unix needs a path"))?),
            "--ca" => tls.ca = Some(it.next().ok_or_else(|| usage("--ca needs a file"))?),
            "--cert" => tls.cert = Some(it.next().ok_or_else(|| usage("--cert needs a file"))?),
            "--key" => tls.key = Some(it.next().ok_or_else(|| usage("--key needs a file"))?),
            "--output" | "-o" => match it.next().as_deref() {
                Some("json") => json = true,
                Some("table") => json = false,
                other => return Err(usage(format!("--output takes table or json, not {other:?}"))),
            },
            "-h" | "--help" => return Err(usage("")),
            _ => rest.push(a),
        }
    }
    let mut it = rest.into_iter();
    let (noun, verb) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
    let mut c = connect(&addr, unix.as_deref(), &tls).await?;
    match (noun.as_str(), verb.as_str()) {
        ("service", "list") => {
            let r = c.list_services(v1::ListServicesRequest {}).await?.into_inner();
            if json {
                print_json(&services_json(&r));
            } else {
                println!("version {}", r.version);
                for s in &r.services {
                    let aff = if s.affinity_timeout_s > 0 {
                        format!(" affinity {}s", s.affinity_timeout_s)
                    } else {
                        String::new()
                    };
                    println!(
                        "{} {} maglev {}{aff}",
                        show_key(&s.vip, s.protocol, s.port),
                        mode_name(s.mode),
                        s.maglev_size
                    );
                    for b in &s.backends {
                        println!("  -> {}:{} weight {} {}", b.address, b.port, b.weight, state_name(b.state));
                    }
                }
            }
        }
        ("service", "apply") => {
            let (mut file, mut dry_run, mut expected_version) = (None, false, 0);
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-f" => file = it.next(),
                    "--dry-run" => dry_run = true,
                    "--expected-version" => {
                        expected_version = it
                            .next()
                            .and_then(|v| v.parse().ok())
                            .ok_or_else(|| usage("--expected-version takes a number"))?
                    }
                    other => return Err(usage(format!("unknown argument {other:?}"))),
                }
            }
            let file = file.ok_or_else(|| usage("service apply needs -f FILE"))?;
            let text = std::fs::read_to_string(&file).map_err(|e| usage(format!("{file}: {e}")))?;
            // The same [[service]] tables as the config file, parsed by the same code: errors name field and line.
            let loaded = edgelb_controlplane::config::parse(&text).map_err(|e| usage(format!("{file}: {e}")))?;
            let upserts = loaded.model.services.iter().map(convert::service_out).collect();
            let r = c
                .apply_services(v1::ApplyServicesRequest { upserts, deletes: vec![], dry_run, expected_version })
                .await?
                .into_inner();
            print_applied(&r, json);
        }
        ("service", "delete") => {
            let key = parse_key(&it.next().ok_or_else(|| usage("service delete needs VIP:PORT/PROTO"))?)?;
            let r = c
                .apply_services(v1::ApplyServicesRequest { deletes: vec![key], ..Default::default() })
                .await?
                .into_inner();
            print_applied(&r, json);
        }
        ("backend", op @ ("add" | "drain" | "remove" | "weight")) => {
            let mut weight = 0;
            let (key, mut b) = backend_arg(&mut it, 0)?;
            if op == "weight" {
                weight =
                    it.next().and_then(|w| w.parse().ok()).ok_or_else(|| usage("backend weight needs a weight"))?;
            }
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--weight" => {
                        weight =
                            it.next().and_then(|w| w.parse().ok()).ok_or_else(|| usage("--weight takes a number"))?
                    }
                    other => return Err(usage(format!("unknown argument {other:?}"))),
                }
            }
            b.weight = weight;
            let req = v1::BackendRequest { service: Some(key), backend: Some(b), expected_version: 0 };
            let r = match op {
                "add" => c.add_backend(req).await?,
                "drain" => c.drain_backend(req).await?,
                "remove" => c.remove_backend(req).await?,
                _ => c.set_backend_weight(req).await?,
            }
            .into_inner();
            print_applied(&r, json);
        }
        ("flow", "query") => {
            let client = parse_sock(&it.next().ok_or_else(|| usage("flow query needs CLIENT:PORT"))?)?;
            let key = parse_key(&it.next().ok_or_else(|| usage("flow query needs VIP:PORT/PROTO"))?)?;
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
                }));
            } else if r.matched {
                println!(
                    "{client} -> {} goes to {}:{} ({}, worker {})",
                    show_key(&key.vip, key.protocol, key.port),
                    r.backend_address,
                    r.backend_port,
                    if r.tracked { "tracked flow" } else { "new flow: Maglev/affinity would pick it" },
                    r.worker
                );
            } else {
                println!("{client} -> {}: no service matches", show_key(&key.vip, key.protocol, key.port));
            }
        }
        ("peer", op @ ("list" | "add" | "remove")) => {
            let r = match op {
                "add" => {
                    let mut p = v1::PeerConfig {
                        address: it.next().ok_or_else(|| usage("peer add needs the peer's ADDRESS"))?,
                        ..Default::default()
                    };
                    while let Some(a) = it.next() {
                        let mut val = || it.next().ok_or_else(|| usage(format!("{a} needs a value")));
                        let num = |v: String| v.parse::<u32>().map_err(|_| usage(format!("{a} takes a number")));
                        match a.as_str() {
                            "--as" => p.remote_as = num(val()?)?,
                            "--name" => p.name = val()?,
                            "--password" => p.password = Some(val()?),
                            "--passive" => p.passive = true,
                            "--next-hop-v4" => p.next_hop_v4 = val()?,
                            "--next-hop-v6" => p.next_hop_v6 = val()?,
                            "--community" => p.communities.push(val()?),
                            "--large-community" => p.large_communities.push(val()?),
                            "--hold-time" => p.hold_time = Some(num(val()?)?),
                            "--port" => p.port = Some(num(val()?)?),
                            "--med" => p.med = Some(num(val()?)?),
                            "--graceful-restart" => p.graceful_restart = Some(num(val()?)?),
                            other => return Err(usage(format!("unknown argument {other:?}"))),
                        }
                    }
                    c.add_peer(p).await?.into_inner()
                }
                "remove" => {
                    let name = it.next().ok_or_else(|| usage("peer remove needs the peer's NAME"))?;
                    c.remove_peer(v1::RemovePeerRequest { name }).await?.into_inner()
                }
                _ => c.list_peers(v1::ListPeersRequest {}).await?.into_inner(),
            };
            if json {
                print_json(&serde_json::json!(r
                    .peers
                    .iter()
                    .map(|p| serde_json::json!({
                        "name": p.name, "state": p.state, "uptime_s": p.uptime_s, "last_error": p.last_error,
                        "msgs_in": p.msgs_in, "msgs_out": p.msgs_out, "prefixes_received": p.prefixes_received,
                        "announced": p.announced, "established_count": p.established_count,
                    }))
                    .collect::<Vec<_>>()));
            } else {
                for p in &r.peers {
                    println!(
                        "{:<20} {:<12} up {:>6}s announced {:>4} received {:>4} msgs in/out {}/{} {}",
                        p.name,
                        p.state,
                        p.uptime_s,
                        p.announced,
                        p.prefixes_received,
                        p.msgs_in,
                        p.msgs_out,
                        p.last_error
                    );
                }
            }
        }
        ("port", "list") => {
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
                    println!(
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
        }
        ("flow", "list") => {
            let (mut service, mut backend, mut limit) = (None, None, 1000usize);
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--backend" => {
                        backend = Some(parse_sock(&it.next().ok_or_else(|| usage("--backend needs ADDR:PORT"))?)?)
                    }
                    "--limit" => {
                        limit = it.next().and_then(|v| v.parse().ok()).ok_or_else(|| usage("--limit takes a count"))?
                    }
                    k if service.is_none() => service = Some(parse_key(k)?),
                    other => return Err(usage(format!("unknown argument {other:?}"))),
                }
            }
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
                println!(
                    "{:<6} {:<28} {:<28} {:<28} {:>6} {:<12} {:>10}",
                    "Prot", "Client", "Service", "Backend", "Worker", "State", "Expires"
                );
                for f in &flows {
                    println!(
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
        }
        ("stats", watch) => {
            let every = match (watch, it.next()) {
                ("", _) => None,
                ("--watch", Some(s)) => Some(s.parse::<f64>().map_err(|_| usage("--watch takes seconds"))?),
                _ => return Err(usage("stats [--watch SECONDS]")),
            };
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
                    let mut st = c
                        .watch_stats(v1::WatchStatsRequest { interval_ms: (secs * 1000.0) as u32 })
                        .await?
                        .into_inner();
                    while let Some(s) = st.message().await? {
                        if json {
                            println!("{}", stats_json(&s));
                        } else {
                            print_stats(&s);
                            println!();
                        }
                    }
                }
            }
        }
        ("events", "") => {
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
                    None => continue,
                };
                println!("{v}");
            }
        }
        _ => return Err(usage(format!("unknown command {noun:?} {verb:?}"))),
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
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Connect(m)) => {
            eprintln!("edgelbctl: {m}");
            ExitCode::from(2)
        }
        Err(Fail::Usage(m)) => {
            if !m.is_empty() {
                eprintln!("edgelbctl: {m}");
            }
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
        Err(Fail::Server(s)) => {
            eprintln!("edgelbctl: {:?}: {}", s.code(), s.message());
            ExitCode::from(1)
        }
    }
}
