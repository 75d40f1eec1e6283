//! `edgelbctl doctor VIP`: one VIP's path, layer by layer, each with a verdict and the facts it was judged on. The
//! facts are gathered from the store ([`gather`], which also probes the backends' next hops with ARP / ND through
//! the daemon's slow path) and judged by pure functions ([`judge`]), so each named failure — backend down, peer
//! down, VIP without backends, flow table full, wrong MAC — has a unit test beside the end-to-end one.

use crate::stats::UNTRACKED;
use crate::store::{Store, StoreEvent};
use edgelb_api::v1;
use edgelb_dataplane::model::BackendState;
use edgelb_dataplane::snapshot::{addr16, addr_from16};
use edgelb_dataplane::wire::ethernet::Mac;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

/// A flow table this full (entries over capacity, the fullest worker) is called full...
const FULL: f64 = 0.90;
/// ...and this full, filling.
const FILLING: f64 = 0.75;

/// One backend as the doctor sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendFacts {
    /// Address and port.
    pub addr: IpAddr,
    /// Port (0: the client's).
    pub port: u16,
    /// Weight.
    pub weight: u32,
    /// The state configured.
    pub configured: BackendState,
    /// The state in force (a failing health check takes an active backend down).
    pub state: BackendState,
    /// Its share of the Maglev table, 0 to 1.
    pub share: f64,
    /// The last health event about it: (healthy, reason).
    pub health: Option<(bool, String)>,
    /// The next hop toward it (itself or the gateway), the MAC the table has for that hop, and whether that entry
    /// is static (the file's `[[neighbor]]`).
    pub next_hop: Option<(IpAddr, Option<Mac>, bool)>,
}

/// One service on the VIP.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceFacts {
    /// `tcp/80`, `udp/*`.
    pub name: String,
    /// Mode name.
    pub mode: &'static str,
    /// `file`, `api` or `kubernetes`.
    pub source: &'static str,
    /// Its backends.
    pub backends: Vec<BackendFacts>,
}

/// A BGP peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFacts {
    /// Name.
    pub name: String,
    /// Session state (`Established`, `Active`, ...).
    pub state: String,
    /// Its last error.
    pub last_error: Option<String>,
    /// Routes announced to it.
    pub announced: usize,
}

/// Everything the doctor judges.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Facts {
    /// The VIP.
    pub vip: Option<IpAddr>,
    /// Its services.
    pub services: Vec<ServiceFacts>,
    /// Every VIP configured (to name them when this one has no service).
    pub all_vips: Vec<IpAddr>,
    /// BGP peers (`None`: no `[bgp]`).
    pub peers: Option<Vec<PeerFacts>>,
    /// Whether the VIP is among the routes the speaker announces.
    pub announced: bool,
    /// VRRP routers holding the VIP: (name, state, master address).
    pub vrrp: Vec<(String, String, Option<IpAddr>)>,
    /// VIP Leases: (governed, held here); `None`: not in use.
    pub lease: Option<(bool, bool)>,
    /// Not owned elsewhere (VRRP Backup here, or its Lease held elsewhere).
    pub owned: bool,
    /// The ports' names and MACs ARP / ND answers come from.
    pub answer_macs: Vec<(String, Mac)>,
    /// What answered the probe: each next hop and the MAC (`None`: nothing within the wait).
    pub probed: Vec<(IpAddr, Option<Mac>)>,
    /// Per worker: entries and capacity of the VIP's family's flow table.
    pub tables: Vec<(u32, u64, u64)>,
    /// Drops in the window by reason (and `packets_untracked`), and the window's length.
    pub drops: Vec<(String, u64)>,
    /// The window the drops cover.
    pub window: Duration,
    /// The last events, newest last, each with its age.
    pub events: Vec<(Duration, String)>,
}

fn mac_text(m: &Mac) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn finding(layer: &str, verdict: &str, summary: String, evidence: Vec<String>) -> v1::Finding {
    v1::Finding { layer: layer.into(), verdict: verdict.into(), summary, evidence }
}

fn state_name(s: BackendState) -> &'static str {
    match s {
        BackendState::Active => "active",
        BackendState::Draining => "draining",
        BackendState::Down => "down",
    }
}

/// The verdicts, in the order a packet meets the layers.
pub fn judge(f: &Facts) -> Vec<v1::Finding> {
    vec![announcement(f), arp_nd(f), service(f), backends(f), next_hops(f), flow_table(f), drops(f), events(f)]
}

fn announcement(f: &Facts) -> v1::Finding {
    let mut ev = Vec::new();
    let mut verdict = "ok";
    let mut summary = Vec::new();
    let worse = |v: &'static str, verdict: &mut &'static str| {
        let rank = |x: &str| ["info", "ok", "warn", "fail"].iter().position(|y| *y == x).unwrap_or(0);
        if rank(v) > rank(verdict) {
            *verdict = v;
        }
    };
    if let Some(peers) = &f.peers {
        let up: Vec<&PeerFacts> = peers.iter().filter(|p| p.state == "Established").collect();
        for p in peers {
            let err = p.last_error.as_deref().map(|e| format!(", last error: {e}")).unwrap_or_default();
            let sent = if p.state == "Established" && f.announced {
                format!(", {} routes announced, this VIP among them", p.announced)
            } else if p.state == "Established" {
                format!(", {} routes announced, not this VIP", p.announced)
            } else {
                String::new()
            };
            ev.push(format!("BGP peer {}: {}{sent}{err}", p.name, p.state));
        }
        let down: Vec<&str> = peers.iter().filter(|p| p.state != "Established").map(|p| p.name.as_str()).collect();
        if peers.is_empty() {
            worse("warn", &mut verdict);
            summary.push("BGP has no peers: nobody learns the VIP's route".to_string());
        } else if up.is_empty() {
            worse("fail", &mut verdict);
            summary.push(format!("peer down: no BGP session is Established ({})", down.join(", ")));
        } else if !down.is_empty() {
            worse("warn", &mut verdict);
            summary.push(format!("peer down: {} ({} of {} Established)", down.join(", "), up.len(), peers.len()));
        }
        if !f.announced && !f.services.is_empty() {
            worse("fail", &mut verdict);
            summary.push("not announced: no service on it has an active backend".into());
        } else if f.announced && !up.is_empty() {
            summary.push(format!("announced to {} BGP peer(s)", up.len()));
        }
    }
    for (name, state, master) in &f.vrrp {
        let m = master.map(|m| format!(", master {m}")).unwrap_or_default();
        ev.push(format!("VRRP router {name}: {state}{m}"));
        if state != "Master" {
            worse("warn", &mut verdict);
            summary.push(format!("owned by another appliance: VRRP router {name} is {state} here"));
        } else {
            summary.push(format!("owned here: VRRP router {name} is Master"));
        }
    }
    if let Some((governed, held)) = f.lease {
        if governed {
            ev.push(format!("VIP Lease: {}", if held { "held here" } else { "held elsewhere" }));
            if !held {
                worse("warn", &mut verdict);
                summary.push("owned by another appliance: its VIP Lease is held elsewhere".into());
            }
        }
    }
    if f.peers.is_none() && f.vrrp.is_empty() && !f.lease.is_some_and(|l| l.0) {
        return finding(
            "announcement",
            "info",
            "no BGP, VRRP or Lease governs it: the VIP is answered by ARP/ND on its segment".into(),
            ev,
        );
    }
    finding("announcement", verdict, summary.join("; "), ev)
}

fn arp_nd(f: &Facts) -> v1::Finding {
    let ev: Vec<String> = f.answer_macs.iter().map(|(p, m)| format!("port {p}: {}", mac_text(m))).collect();
    if f.owned {
        let macs: Vec<String> = f.answer_macs.iter().map(|(_, m)| mac_text(m)).collect();
        finding("arp_nd", "ok", format!("answered here, from {}", macs.join(", ")), ev)
    } else {
        finding("arp_nd", "warn", "not answered here: another appliance owns the VIP now".into(), ev)
    }
}

fn service(f: &Facts) -> v1::Finding {
    if f.services.is_empty() {
        let known: Vec<String> = f.all_vips.iter().take(8).map(ToString::to_string).collect();
        let ev = vec![format!("VIPs configured: {}", if known.is_empty() { "none".into() } else { known.join(", ") })];
        return finding("service", "fail", "no service on this VIP".into(), ev);
    }
    let ev: Vec<String> = f
        .services
        .iter()
        .map(|s| format!("{} {} (from {}), {} backend(s)", s.name, s.mode, s.source, s.backends.len()))
        .collect();
    let names: Vec<&str> = f.services.iter().map(|s| s.name.as_str()).collect();
    finding("service", "ok", format!("{} service(s): {}", f.services.len(), names.join(", ")), ev)
}

fn backends(f: &Facts) -> v1::Finding {
    let mut ev = Vec::new();
    let mut fails = Vec::new();
    let mut warns = Vec::new();
    for s in &f.services {
        for b in &s.backends {
            let health = match &b.health {
                Some((false, why)) => format!(", health check failing: {why}"),
                Some((true, _)) => ", health check passing".into(),
                None => String::new(),
            };
            ev.push(format!(
                "{} {}:{} weight {} {}{}, Maglev share {:.1} %{health}",
                s.name,
                b.addr,
                b.port,
                b.weight,
                state_name(b.state),
                if b.state == b.configured {
                    String::new()
                } else {
                    format!(" (configured {})", state_name(b.configured))
                },
                b.share * 100.0
            ));
        }
        let down: Vec<String> = s
            .backends
            .iter()
            .filter(|b| b.state == BackendState::Down && b.configured != BackendState::Down)
            .map(|b| format!("{}:{}", b.addr, b.port))
            .collect();
        let active = s.backends.iter().filter(|b| b.state == BackendState::Active).count();
        if s.backends.is_empty() {
            fails.push(format!("VIP without backends: {} has none", s.name));
        } else if active == 0 && !down.is_empty() {
            fails.push(format!("backend down: {} has no active backend ({} down)", s.name, down.join(", ")));
        } else if active == 0 {
            fails.push(format!("{} has no active backend (every one drains or is set down)", s.name));
        } else if !down.is_empty() {
            warns.push(format!("backend down: {} ({} of {} active)", down.join(", "), active, s.backends.len()));
        }
    }
    if f.services.is_empty() {
        return finding("backends", "info", "no service, so no backends".into(), ev);
    }
    let (verdict, summary) = if !fails.is_empty() {
        ("fail", fails.into_iter().chain(warns).collect::<Vec<_>>().join("; "))
    } else if !warns.is_empty() {
        ("warn", warns.join("; "))
    } else {
        let n: usize = f.services.iter().map(|s| s.backends.len()).sum();
        ("ok", format!("{n} backend(s), all active"))
    };
    finding("backends", verdict, summary, ev)
}

fn next_hops(f: &Facts) -> v1::Finding {
    let mut ev = Vec::new();
    let mut fails = Vec::new();
    let mut warns = Vec::new();
    let mut seen = Vec::new();
    for b in f.services.iter().flat_map(|s| &s.backends).filter(|b| b.state != BackendState::Down) {
        let Some((hop, mac, is_static)) = b.next_hop else {
            fails.push(format!("no route to backend {}", b.addr));
            continue;
        };
        if seen.contains(&hop) {
            continue;
        }
        seen.push(hop);
        let kind = if is_static { "static" } else { "learnt" };
        let answered = f.probed.iter().find(|(a, _)| *a == hop).and_then(|(_, m)| *m);
        let via = if hop == b.addr { String::new() } else { format!(" (gateway toward {})", b.addr) };
        let heard =
            answered.map_or_else(|| "no answer to the probe".to_string(), |m| format!("{} answered", mac_text(&m)));
        match mac {
            None => {
                fails.push(format!("next hop unresolved: {hop}{via} has no MAC"));
                ev.push(format!("{hop}{via}: no MAC in the table; {heard}"));
            }
            Some(m) => {
                ev.push(format!("{hop}{via}: {} ({kind}); {heard}", mac_text(&m)));
                match answered {
                    Some(a) if a != m => fails.push(format!(
                        "wrong MAC: {hop} is at {} but the table sends to {} ({kind})",
                        mac_text(&a),
                        mac_text(&m)
                    )),
                    Some(_) => {}
                    None => warns.push(format!("{hop} did not answer ARP/ND")),
                }
            }
        }
    }
    if seen.is_empty() && fails.is_empty() {
        return finding("next_hops", "info", "no backend to reach".into(), ev);
    }
    let (verdict, summary) = if !fails.is_empty() {
        ("fail", fails.into_iter().chain(warns).collect::<Vec<_>>().join("; "))
    } else if !warns.is_empty() {
        ("warn", warns.join("; "))
    } else {
        ("ok", format!("{} next hop(s) answer from the MAC in use", seen.len()))
    };
    finding("next_hops", verdict, summary, ev)
}

fn flow_table(f: &Facts) -> v1::Finding {
    let fam = if f.vip.is_some_and(|v| v.is_ipv6()) { "IPv6" } else { "IPv4" };
    let ev: Vec<String> = f
        .tables
        .iter()
        .map(|(w, n, cap)| {
            format!("worker {w}: {n} of {cap} {fam} entries ({:.1} %)", *n as f64 * 100.0 / (*cap).max(1) as f64)
        })
        .collect();
    let count = |name: &str| f.drops.iter().find(|(r, _)| r == name).map_or(0, |(_, n)| *n);
    let (untracked, destinations) = (count(UNTRACKED[0]), count(UNTRACKED[1]));
    let mut ev = ev;
    if untracked > 0 {
        ev.push(format!("{untracked} packets forwarded untracked in the last {:.1} s", f.window.as_secs_f64()));
    }
    if destinations > 0 {
        // Not a full table: the IPv6 table names one destination (VIP) for every 8 of its slots.
        ev.push(format!("{destinations} of them new IPv6 flows to more VIPs than the IPv6 flow table can name"));
        return finding(
            "flow_table",
            "fail",
            "IPv6 flow table names its most destinations: more IPv6 VIPs with flows than one per 8 slots".into(),
            ev,
        );
    }
    let Some(&(w, n, cap)) =
        f.tables.iter().max_by(|a, b| (a.1 as f64 / a.2.max(1) as f64).total_cmp(&(b.1 as f64 / b.2.max(1) as f64)))
    else {
        return finding("flow_table", "info", "no worker reports".into(), ev);
    };
    let fill = n as f64 / cap.max(1) as f64;
    let pct = fill * 100.0;
    if fill >= FULL || (fill >= FILLING && untracked > 0) {
        finding("flow_table", "fail", format!("flow table full: worker {w} holds {n} of {cap} ({pct:.0} %)"), ev)
    } else if fill >= FILLING {
        finding("flow_table", "warn", format!("flow table filling: worker {w} at {pct:.0} %"), ev)
    } else {
        finding("flow_table", "ok", format!("at most {pct:.1} % full"), ev)
    }
}

fn drops(f: &Facts) -> v1::Finding {
    let mut d: Vec<&(String, u64)> =
        f.drops.iter().filter(|(r, n)| *n > 0 && !UNTRACKED.contains(&r.as_str())).collect();
    d.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let secs = format!("{:.1}", f.window.as_secs_f64());
    let ev: Vec<String> = d.iter().take(5).map(|(r, n)| format!("{r}: {n}")).collect();
    if d.is_empty() {
        return finding("drops", "ok", format!("no drops in the last {secs} s"), ev);
    }
    let total: u64 = d.iter().map(|(_, n)| n).sum();
    finding("drops", "warn", format!("{total} packets dropped in the last {secs} s, most as {}", d[0].0), ev)
}

fn events(f: &Facts) -> v1::Finding {
    let ev: Vec<String> =
        f.events.iter().rev().take(8).map(|(age, e)| format!("{} s ago: {e}", age.as_secs())).collect();
    finding("events", "info", format!("{} recent event(s), newest first", ev.len()), ev)
}

/// An event in one line.
pub fn describe(e: &StoreEvent) -> String {
    match e {
        StoreEvent::Applied { version, source, .. } => format!("configuration version {version} from {source}"),
        StoreEvent::BackendHealth { service, backend, healthy, reason } => format!(
            "backend {}:{} of {} {}: {reason}",
            backend.0,
            backend.1,
            service.0,
            if *healthy { "healthy" } else { "unhealthy" }
        ),
        StoreEvent::Kubernetes { service, reason, message } => format!("Kubernetes {service}: {reason}: {message}"),
        StoreEvent::PeerState { peer, state, reason } => {
            format!("BGP peer {peer} {state}{}", if reason.is_empty() { String::new() } else { format!(": {reason}") })
        }
        StoreEvent::VrrpState { router, state, reason } => format!("VRRP router {router} {state} ({reason})"),
    }
}

fn is_about(e: &StoreEvent, vip: IpAddr) -> bool {
    match e {
        StoreEvent::BackendHealth { service, .. } => service.0 == vip,
        _ => true,
    }
}

/// The facts about `vip` from the store; the backends' next hops are probed first and their answers awaited for
/// at most `wait`.
pub async fn gather(store: &Store, vip: IpAddr, wait: Duration) -> Facts {
    let cfg = store.snapshot();
    let model = store.model();
    let v16 = addr16(vip);
    let events = store.recent_events();
    let now = SystemTime::now();
    let statics: Vec<(IpAddr, Mac)> = model.neighbours.clone();
    let mut f = Facts { vip: Some(vip), ..Facts::default() };
    let mut hops = Vec::new();
    for s in cfg.services.iter().filter(|s| s.vip == v16) {
        let proto = match s.proto {
            edgelb_dataplane::wire::proto::TCP => "tcp",
            edgelb_dataplane::wire::proto::UDP => "udp",
            _ => "ip",
        };
        let name = if s.port == 0 { format!("{proto}/*") } else { format!("{proto}/{}", s.port) };
        let spec = model
            .services
            .iter()
            .find(|m| m.vip == vip && m.protocol.number() == s.proto && m.port.unwrap_or(0) == s.port);
        let counts = s.maglev.slot_counts();
        let size = s.maglev.size().max(1) as f64;
        let mut backends = Vec::new();
        for id in s.backend_ids.iter() {
            let Some(b) = cfg.backend(*id) else { continue };
            let addr = addr_from16(b.addr, b.v4);
            let share =
                s.maglev_ids.iter().position(|x| x == id).and_then(|i| counts.get(i)).map_or(0.0, |c| *c as f64 / size);
            let configured = spec
                .and_then(|m| m.backends.iter().find(|x| x.addr == addr && x.port == b.port))
                .map_or(b.state, |x| x.state);
            let health = events.iter().rev().find_map(|(_, e)| match e {
                StoreEvent::BackendHealth { service, backend, healthy, reason }
                    if service.0 == vip && backend.0 == addr && backend.1 == b.port =>
                {
                    Some((*healthy, reason.clone()))
                }
                _ => None,
            });
            let next_hop = cfg.route_via(&b.addr, b.v4).map(|(_, via)| {
                let hop = addr_from16(via, b.v4);
                let mac = cfg.route(&b.addr, b.v4).map(|n| n.mac);
                (hop, mac, statics.iter().any(|(a, _)| *a == hop))
            });
            if let Some((hop, _, _)) = next_hop {
                if !hops.contains(&hop) {
                    hops.push(hop);
                }
            }
            let weight = spec
                .and_then(|m| m.backends.iter().find(|x| x.addr == addr && x.port == b.port))
                .map_or(1, |x| x.weight);
            backends.push(BackendFacts {
                addr,
                port: b.port,
                weight,
                configured,
                state: b.state,
                share,
                health,
                next_hop,
            });
        }
        let source = spec.map_or("file", |m| store.source_of(&crate::store::key_of(m)));
        f.services.push(ServiceFacts { name, mode: s.mode.name(), source, backends });
    }
    let mut all: Vec<IpAddr> = cfg.services.iter().map(|s| addr_from16(s.vip, s.v4)).collect();
    all.dedup();
    f.all_vips = all;
    // The probe: sent by the daemon's slow path, answers collected until every hop answered or `wait` passed.
    if !hops.is_empty() {
        let id = store.request_probe(hops.clone());
        let deadline = Instant::now() + wait;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let r = store.probe_results(id);
            let done = r.as_ref().is_some_and(|r| r.iter().all(|(_, m)| m.is_some()));
            if done || Instant::now() >= deadline {
                f.probed = r.unwrap_or_else(|| hops.iter().map(|h| (*h, None)).collect());
                break;
            }
        }
    }
    f.peers = store.speaker().map(|_| {
        store
            .peers()
            .into_iter()
            .map(|(name, s)| PeerFacts {
                name,
                state: format!("{:?}", s.state),
                last_error: s.last_error.clone(),
                announced: s.announced,
            })
            .collect()
    });
    f.announced = crate::bgp::speaker::routes_of(&cfg).iter().any(|(a, _)| *a == vip);
    f.vrrp = store
        .vrrp()
        .0
        .into_iter()
        .filter(|r| r.vips.contains(&vip))
        .map(|r| (r.name, format!("{:?}", r.state), r.master))
        .collect();
    f.lease = store.vip_leases().map(|(governed, held)| (governed.contains(&vip), held.contains(&vip)));
    f.owned = !cfg.unowned_vips.contains(&v16);
    let names = store.port_names();
    f.answer_macs = cfg
        .interfaces
        .iter()
        .map(|i| {
            let n = names.get(usize::from(i.port)).map_or_else(|| format!("{}", i.port), |(n, _)| n.clone());
            (n, i.mac)
        })
        .collect();
    let stats = crate::stats::stats(store);
    f.tables =
        stats
            .workers
            .iter()
            .map(|w| {
                if vip.is_ipv4() {
                    (w.worker, w.flows_v4, w.capacity_v4)
                } else {
                    (w.worker, w.flows_v6, w.capacity_v6)
                }
            })
            .collect();
    let totals = crate::stats::drop_totals(&stats);
    let t = Instant::now();
    let (since, before) = store.drops_a_minute_ago(t).unwrap_or((t, Vec::new()));
    f.window = t.duration_since(since);
    f.drops = totals
        .into_iter()
        .map(|(r, n)| {
            let was = if f.window.is_zero() { 0 } else { before.iter().find(|(x, _)| *x == r).map_or(0, |(_, v)| *v) };
            (r, n.saturating_sub(was))
        })
        .collect();
    f.events = events
        .iter()
        .filter(|(_, e)| is_about(e, vip))
        .map(|(at, e)| (now.duration_since(*at).unwrap_or_default(), describe(e)))
        .collect();
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(addr: &str, state: BackendState, mac: Option<Mac>) -> BackendFacts {
        let addr: IpAddr = addr.parse().unwrap();
        BackendFacts {
            addr,
            port: 8080,
            weight: 1,
            configured: BackendState::Active,
            state,
            share: 1.0,
            health: None,
            next_hop: Some((addr, mac, true)),
        }
    }

    fn facts(backends: Vec<BackendFacts>) -> Facts {
        let vip: IpAddr = "198.19.0.1".parse().unwrap();
        Facts {
            vip: Some(vip),
            services: vec![ServiceFacts { name: "tcp/80".into(), mode: "nat", source: "file", backends }],
            all_vips: vec![vip],
            owned: true,
            announced: true,
            tables: vec![(0, 10, 1000)],
            ..Facts::default()
        }
    }

    fn verdict<'a>(fs: &'a [v1::Finding], layer: &str) -> &'a v1::Finding {
        fs.iter().find(|f| f.layer == layer).unwrap()
    }

    const MAC: Mac = [2, 0, 0, 0, 0, 0x20];

    #[test]
    fn a_healthy_path_is_ok_everywhere() {
        let mut f = facts(vec![be("198.18.0.20", BackendState::Active, Some(MAC))]);
        f.probed = vec![("198.18.0.20".parse().unwrap(), Some(MAC))];
        let fs = judge(&f);
        for layer in ["arp_nd", "service", "backends", "next_hops", "flow_table", "drops"] {
            assert_eq!(verdict(&fs, layer).verdict, "ok", "{:?}", verdict(&fs, layer));
        }
    }

    #[test]
    fn each_named_failure() {
        // Backend down.
        let mut down = be("198.18.0.20", BackendState::Down, Some(MAC));
        down.health = Some((false, "connect: refused".into()));
        let fs = judge(&facts(vec![down]));
        let b = verdict(&fs, "backends");
        assert_eq!(b.verdict, "fail");
        assert!(b.summary.contains("backend down") && b.evidence[0].contains("connect: refused"), "{b:?}");
        // VIP without backends.
        let b = judge(&facts(vec![]))[3].clone();
        assert!(b.summary.contains("VIP without backends"), "{b:?}");
        // Wrong MAC.
        let mut f = facts(vec![be("198.18.0.20", BackendState::Active, Some(MAC))]);
        f.probed = vec![("198.18.0.20".parse().unwrap(), Some([2, 0, 0, 0, 0, 0x99]))];
        let n = judge(&f)[4].clone();
        assert_eq!(n.verdict, "fail");
        assert!(n.summary.contains("wrong MAC") && n.summary.contains("02:00:00:00:00:99"), "{n:?}");
        // Flow table full, and filling with untracked packets.
        f.tables = vec![(0, 950, 1000)];
        assert!(judge(&f)[5].summary.contains("flow table full"));
        f.tables = vec![(0, 800, 1000)];
        assert_eq!(judge(&f)[5].verdict, "warn");
        f.drops = vec![("packets_untracked".into(), 5)];
        assert!(judge(&f)[5].summary.contains("flow table full"));
        // Untracked for want of IPv6 destination numbers, the table far from full: that cause, not a full table.
        f.tables = vec![(0, 100, 1000)];
        f.drops = vec![("packets_untracked".into(), 5), ("packets_untracked_ipv6_destinations".into(), 3)];
        let t = judge(&f)[5].clone();
        assert_eq!(t.verdict, "fail");
        assert!(t.summary.contains("names its most destinations") && t.evidence.iter().any(|e| e.starts_with("3 of")));
        assert_eq!(judge(&f)[6].verdict, "ok", "not drops: {:?}", judge(&f)[6]);
        // Peer down.
        f.peers = Some(vec![PeerFacts {
            name: "tor".into(),
            state: "Active".into(),
            last_error: Some("connection refused".into()),
            announced: 0,
        }]);
        let a = judge(&f)[0].clone();
        assert_eq!(a.verdict, "fail");
        assert!(a.summary.contains("peer down") && a.evidence[0].contains("connection refused"), "{a:?}");
        // No service.
        let mut none = facts(vec![]);
        none.services.clear();
        assert!(judge(&none)[2].summary.contains("no service on this VIP"));
    }
}
