//! Prometheus metrics at `/metrics` (OpenMetrics text, encoded by `prometheus-client`; Prometheus scrapes it): the API's stats with
//! VIP and backend labels, drops by reason, flow-table occupancy and burst latency per worker, backend health and the
//! config version. Served by a small HTTP/1.1 responder on its own listener (GET /metrics; anything else 404).

use crate::stats::stats;
use crate::store::Store;
use edgelb_api::v1;
use edgelb_dataplane::pipeline::Counters;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Labels = Vec<(String, String)>;

fn counter(reg: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
    let f = Family::<Labels, Counter>::default();
    for (l, v) in rows {
        f.get_or_create(&l).inc_by(v);
    }
    reg.register(name, help, f);
}

fn counter_f64(reg: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, f64)>) {
    let f = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    for (l, v) in rows {
        f.get_or_create(&l).inc_by(v);
    }
    reg.register(name, help, f);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, i64)>) {
    let f = Family::<Labels, Gauge>::default();
    for (l, v) in rows {
        f.get_or_create(&l).set(v);
    }
    reg.register(name, help, f);
}

fn proto(p: i32) -> String {
    if p == v1::Protocol::Udp as i32 { "udp" } else { "tcp" }.into()
}

fn svc_labels(vip: &str, p: i32, port: u32) -> Labels {
    vec![("vip".into(), vip.into()), ("protocol".into(), proto(p)), ("port".into(), port.to_string())]
}

/// Per worker: flow-table entries and capacity by family, burst latency quantiles.
fn worker_gauges(reg: &mut Registry, workers: &[v1::WorkerStats]) {
    let w = |f: fn(&v1::WorkerStats) -> u64, fam: &'static str| -> Vec<(Labels, i64)> {
        workers
            .iter()
            .map(|x| (vec![("worker".into(), x.worker.to_string()), ("family".into(), fam.into())], f(x) as i64))
            .collect()
    };
    let mut entries = w(|x| x.flows_v4, "ipv4");
    entries.extend(w(|x| x.flows_v6, "ipv6"));
    gauge(reg, "flow_table_entries", "Tracked flows per worker", entries);
    let mut cap = w(|x| x.capacity_v4, "ipv4");
    cap.extend(w(|x| x.capacity_v6, "ipv6"));
    gauge(reg, "flow_table_capacity", "Flow-table slots per worker", cap);
    let mut lat = Vec::new();
    for x in workers {
        for (q, v) in [("0.5", x.burst_ns_p50), ("0.99", x.burst_ns_p99), ("1", x.burst_ns_max)] {
            lat.push((vec![("worker".into(), x.worker.to_string()), ("quantile".into(), q.into())], v as i64));
        }
    }
    gauge(reg, "burst_latency_nanoseconds", "Time to process one burst, by worker (last interval)", lat);
    let by_worker = |f: fn(&v1::WorkerStats) -> u64| -> Vec<(Labels, u64)> {
        workers.iter().map(|x| (vec![("worker".into(), x.worker.to_string())], f(x))).collect()
    };
    type Field = fn(&v1::WorkerStats) -> u64;
    let times: [(&str, &str, Field); 3] = [
        ("worker_busy_seconds", "Time in polls that found packets, by worker", |x| x.busy_ns),
        ("worker_idle_seconds", "Time in polls that found no packet, sleeps included, by worker", |x| x.idle_ns),
        ("worker_sleep_seconds", "Time asleep between polls (adaptive polling backing off), by worker", |x| x.sleep_ns),
    ];
    for (name, help, f) in times {
        counter_f64(reg, name, help, by_worker(f).into_iter().map(|(l, ns)| (l, ns as f64 / 1e9)).collect());
    }
    let counts: [(&str, &str, Field); 2] = [
        (
            "worker_polls_saturated",
            "Polls that found the worker saturated (full receive bursts in a row), by worker",
            |x| x.polls_saturated,
        ),
        (
            "worker_overload_drops",
            "New flows refused while the worker was saturated and its new-flow limit spent, by worker",
            |x| x.overload_drops,
        ),
    ];
    for (name, help, f) in counts {
        counter(reg, name, help, by_worker(f));
    }
    gauge(
        reg,
        "worker_stats_age_milliseconds",
        "Since the worker last published its stats (every 100 ms while it advances, busy or idle)",
        workers
            .iter()
            .map(|x| (vec![("worker".into(), x.worker.to_string())], x.stats_age_ms.min(i64::MAX as u64) as i64))
            .collect(),
    );
}

/// The Kubernetes sync's state.
fn kubernetes(reg: &mut Registry, k: &crate::store::K8sStatus) {
    let none = Labels::new;
    let kind = |k: &str| vec![("kind".to_string(), k.to_string())];
    gauge(
        reg,
        "kubernetes_objects",
        "Objects the Kubernetes sync watches",
        vec![(kind("services"), k.services as i64), (kind("endpointslices"), k.endpoint_slices as i64)],
    );
    gauge(reg, "kubernetes_services_allocated", "Services of ours with an address", vec![(none(), k.allocated as i64)]);
    gauge(
        reg,
        "kubernetes_sync_failures",
        "Warnings of the last sync (allocation failures, invalid Services)",
        vec![(none(), k.failures as i64)],
    );
    gauge(
        reg,
        "kubernetes_sync_lag_milliseconds",
        "First change seen to snapshot in force, last sync",
        vec![(none(), k.lag_ms as i64)],
    );
    gauge(reg, "kubernetes_leader", "1 while this appliance holds the Lease", vec![(none(), i64::from(k.leader))]);
}

/// Per BGP peer: whether it is Established, sessions it had, messages, prefixes either way, and malformed
/// attributes handled as treat-as-withdraw (RFC 7606).
fn bgp(reg: &mut Registry, peers: &[(String, crate::bgp::session::Status)]) {
    use crate::bgp::session::State;
    let peer = |n: &str| vec![("peer".to_string(), n.to_string())];
    let rows = |f: fn(&crate::bgp::session::Status) -> u64| -> Vec<(Labels, u64)> {
        peers.iter().map(|(n, st)| (peer(n), f(st))).collect()
    };
    gauge(
        reg,
        "bgp_peer_established",
        "1 while the session with the peer is Established",
        peers.iter().map(|(n, st)| (peer(n), i64::from(st.state == State::Established))).collect(),
    );
    counter(reg, "bgp_peer_sessions_established", "Times the session came up", rows(|st| st.established_count));
    counter(
        reg,
        "bgp_peer_treat_as_withdraw",
        "Malformed attributes handled as treat-as-withdraw",
        rows(|st| st.treat_as_withdraw),
    );
    let mut msgs = Vec::new();
    for (n, st) in peers {
        for (dir, v) in [("in", st.msgs_in), ("out", st.msgs_out)] {
            msgs.push((vec![("peer".to_string(), n.clone()), ("direction".to_string(), dir.to_string())], v));
        }
    }
    counter(reg, "bgp_peer_messages", "BGP messages, by peer and direction", msgs);
    let gauges = |f: fn(&crate::bgp::session::Status) -> u64| rows(f).into_iter().map(|(l, v)| (l, v as i64)).collect();
    gauge(
        reg,
        "bgp_peer_prefixes_received",
        "Prefixes the peer announces in this session",
        gauges(|st| st.prefixes_received),
    );
    gauge(reg, "bgp_peer_prefixes_announced", "Prefixes announced to the peer now", gauges(|st| st.announced as u64));
}

/// The metrics text now.
pub fn render(store: &Store) -> String {
    let s = stats(store);
    let mut reg = Registry::with_prefix("edgelb");
    let none = Labels::new;
    // Every dataplane counter under its own name and help (rx, tx, flows, replies, slow path, hand-offs, ...).
    for c in &s.counters {
        let help = Counters::INFO.iter().find(|i| i.name == c.name).map_or("", |i| i.help);
        counter(&mut reg, &c.name, help, vec![(none(), c.value)]);
    }
    counter(
        &mut reg,
        "drops",
        "Packets dropped, by reason",
        s.drops.iter().map(|d| (vec![("reason".into(), d.reason.clone())], d.packets)).collect(),
    );
    let svc = |f: fn(&v1::ServiceStats) -> u64| -> Vec<(Labels, u64)> {
        s.services.iter().map(|x| (svc_labels(&x.vip, x.protocol, x.port), f(x))).collect()
    };
    counter(&mut reg, "service_packets", "Packets toward a service (client direction)", svc(|x| x.packets));
    counter(&mut reg, "service_bytes", "Bytes toward a service (client direction)", svc(|x| x.bytes));
    counter(&mut reg, "service_flows_new", "Flows scheduled for a service", svc(|x| x.new_flows));
    let be_labels = |b: &v1::BackendStats| {
        let mut l = svc_labels(&b.vip, b.protocol, b.port);
        l.push(("backend".into(), format!("{}:{}", b.address, b.backend_port)));
        l
    };
    let be = |f: fn(&v1::BackendStats) -> u64| -> Vec<(Labels, u64)> {
        s.backends.iter().map(|b| (be_labels(b), f(b))).collect()
    };
    counter(&mut reg, "backend_packets", "Packets sent to a backend", be(|b| b.packets));
    counter(&mut reg, "backend_bytes", "Bytes sent to a backend", be(|b| b.bytes));
    counter(&mut reg, "backend_flows_new", "Flows scheduled to a backend", be(|b| b.new_flows));
    let active = |rows: Vec<(Labels, u64)>| rows.into_iter().map(|(l, v)| (l, v as i64)).collect();
    gauge(
        &mut reg,
        "service_flows_active",
        "Flows tracked to a service's backends now",
        active(svc(|x| x.active_flows)),
    );
    gauge(&mut reg, "backend_flows_active", "Flows tracked to a backend now", active(be(|b| b.active_flows)));
    let unhealthy = store.unhealthy();
    gauge(
        &mut reg,
        "backend_healthy",
        "1 while the backend passes its health check (or has none), 0 while it fails",
        s.backends
            .iter()
            .map(|b| {
                let bad = unhealthy.iter().any(|(k, a, p)| {
                    a.to_string() == b.address && u32::from(*p) == b.backend_port && k.0.to_string() == b.vip
                });
                (be_labels(b), i64::from(!bad))
            })
            .collect(),
    );
    worker_gauges(&mut reg, &s.workers);
    gauge(&mut reg, "config_version", "Version of the service set in force", vec![(none(), s.version as i64)]);
    counter(
        &mut reg,
        "config_apply_failures",
        "Configuration changes refused (API batches, file reloads, Kubernetes syncs)",
        vec![(none(), s.config_apply_failures)],
    );
    if let Some(k) = store.k8s_status() {
        kubernetes(&mut reg, &k);
    }
    let peers = store.peers();
    if !peers.is_empty() {
        bgp(&mut reg, &peers);
        bfd(&mut reg, &peers, &store.bfd_dropped());
    }
    let (routers, refused) = store.vrrp();
    if !routers.is_empty() {
        vrrp(&mut reg, &routers, &refused);
    }
    if let Some(r) = store.replication() {
        replication(&mut reg, &r);
    }
    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

/// Serve `/metrics` on `addr` until the task is dropped.
///
/// # Errors
/// The listener could not be bound.
pub async fn serve(store: Arc<Store>, addr: SocketAddr, ready: impl FnOnce()) -> Result<(), String> {
    let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("metrics listen on {addr}: {e}"))?;
    ready();
    loop {
        let Ok((mut s, _)) = l.accept().await else { continue };
        let store = store.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            // Read the request head (bounded); only the request line matters.
            let head = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while n < buf.len() {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            n += k;
                            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                    }
                }
            })
            .await;
            if head.is_err() {
                return;
            }
            let line = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string();
            let (code, ctype, body) = if line.starts_with("GET /metrics ") || line == "GET /metrics" {
                ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", render(&store))
            } else {
                ("404 Not Found", "text/plain", "only GET /metrics here\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}

/// Per BGP peer with BFD: whether its session is Up, the failures that dropped BGP sessions, the detection time;
/// and the control packets refused, by reason.
fn bfd(reg: &mut Registry, peers: &[(String, crate::bgp::session::Status)], dropped: &[(&'static str, u64)]) {
    use crate::ha::bfd::State;
    let with: Vec<_> = peers.iter().filter_map(|(n, st)| st.bfd.as_ref().map(|b| (n, b))).collect();
    if with.is_empty() {
        return;
    }
    let peer = |n: &str| vec![("peer".to_string(), n.to_string())];
    gauge(
        reg,
        "bfd_session_up",
        "1 while the BFD session with the BGP peer is Up",
        with.iter().map(|(n, b)| (peer(n), i64::from(b.state == State::Up))).collect(),
    );
    counter(
        reg,
        "bfd_session_failures",
        "Times the BFD session went down from Up, not by the peer's choice (each dropped the BGP session)",
        with.iter().map(|(n, b)| (peer(n), b.failures)).collect(),
    );
    gauge(
        reg,
        "bfd_detection_time_milliseconds",
        "The BFD detection time in force",
        with.iter().map(|(n, b)| (peer(n), b.detection_ms as i64)).collect(),
    );
    counter(
        reg,
        "bfd_dropped_packets",
        "BFD control packets refused, by reason",
        dropped.iter().map(|(r, v)| (vec![("reason".to_string(), (*r).to_string())], *v)).collect(),
    );
}

/// Flow replication between appliances: records each way, what was lost where, datagrams refused by reason, and per
/// peer whether it has sent its flows since this appliance started.
fn replication(reg: &mut Registry, r: &crate::store::ReplicationStatus) {
    let none = Vec::new;
    gauge(
        reg,
        "replication_peer_synced",
        "1 once the peer appliance has sent every flow it tracks since this one started (its bulk send ended)",
        r.peers.iter().map(|(p, s)| (vec![("peer".to_string(), p.clone())], i64::from(*s))).collect(),
    );
    counter(reg, "replication_records_sent", "Flow records sent to the peer appliances", vec![(none(), r.sent)]);
    counter(
        reg,
        "replication_records_dropped",
        "Flow records dropped before sending: more waiting than the bound while the rate held them back",
        vec![(none(), r.dropped)],
    );
    counter(
        reg,
        "replication_records_received",
        "Flow records received from peers and handed to the workers",
        vec![(none(), r.received)],
    );
    counter(
        reg,
        "replication_records_lost",
        "Received flow records lost to a full worker queue",
        vec![(none(), r.queue_full)],
    );
    counter(reg, "replication_datagrams_accepted", "Replication datagrams accepted", vec![(none(), r.accepted)]);
    counter(
        reg,
        "replication_datagrams_refused",
        "Replication datagrams refused, by reason (stranger: not from a configured peer)",
        r.refused.iter().map(|(k, v)| (vec![("reason".to_string(), (*k).to_string())], *v)).collect(),
    );
    counter(
        reg,
        "replication_bulk_sends",
        "Times every tracked flow was sent to a peer appliance that started",
        vec![(none(), r.bulk_sends)],
    );
}

/// Per VRRP virtual router: Master or not, the priority it advertises, state changes, adverts each way; and the
/// advertisements refused, by reason.
fn vrrp(reg: &mut Registry, routers: &[edgelb_dataplane::slowpath::VrrpStatus], refused: &[(&'static str, u64)]) {
    use edgelb_dataplane::slowpath::vrrp::State;
    let router = |n: &str| vec![("router".to_string(), n.to_string())];
    gauge(
        reg,
        "vrrp_master",
        "1 while this appliance is the virtual router's Master (owns its VIPs)",
        routers.iter().map(|r| (router(&r.name), i64::from(r.state == State::Master))).collect(),
    );
    gauge(
        reg,
        "vrrp_priority",
        "The priority advertised now (after health tracking and draining)",
        routers.iter().map(|r| (router(&r.name), i64::from(r.effective_priority))).collect(),
    );
    counter(
        reg,
        "vrrp_transitions",
        "State changes of the virtual router",
        routers.iter().map(|r| (router(&r.name), r.stats.transitions)).collect(),
    );
    let mut adverts = Vec::new();
    for r in routers {
        for (dir, v) in [("in", r.stats.adverts_in), ("out", r.stats.adverts_out)] {
            adverts.push((vec![("router".to_string(), r.name.clone()), ("direction".to_string(), dir.to_string())], v));
        }
    }
    counter(reg, "vrrp_adverts", "VRRP advertisements, by router and direction", adverts);
    counter(
        reg,
        "vrrp_refused_adverts",
        "VRRP advertisements refused, by reason",
        refused.iter().map(|(r, v)| (vec![("reason".to_string(), (*r).to_string())], *v)).collect(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::session::{State, Status};

    #[test]
    fn bgp_peers_show_state_and_treat_as_withdraw() {
        let store = Store::new(edgelb_testkit::models::every_mode(1009)).unwrap();
        assert!(!render(&store).contains("edgelb_bgp_"), "no peers, no BGP families");
        let up = Status {
            state: State::Established,
            treat_as_withdraw: 3,
            prefixes_received: 2,
            msgs_in: 9,
            ..Default::default()
        };
        store.set_peers(vec![("bird".into(), up), ("frr".into(), Status::default())]);
        let text = render(&store);
        for line in [
            "edgelb_bgp_peer_established{peer=\"bird\"} 1",
            "edgelb_bgp_peer_established{peer=\"frr\"} 0",
            "edgelb_bgp_peer_treat_as_withdraw_total{peer=\"bird\"} 3",
            "edgelb_bgp_peer_prefixes_received{peer=\"bird\"} 2",
            "edgelb_bgp_peer_messages_total{peer=\"bird\",direction=\"in\"} 9",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("edgelb_bfd_"), "no BFD, no BFD families");
    }

    #[test]
    fn bfd_sessions_and_refused_packets() {
        use crate::ha::bfd::State as Bfd;
        use crate::ha::bfd_link::LinkStatus;
        let store = Store::new(edgelb_testkit::models::every_mode(1009)).unwrap();
        let bfd = |state, failures| Some(LinkStatus { state, failures, detection_ms: 300, ..Default::default() });
        store.set_peers(vec![
            ("bird".into(), Status { bfd: bfd(Bfd::Up, 1), ..Default::default() }),
            ("frr".into(), Status { bfd: bfd(Bfd::Down, 0), ..Default::default() }),
            ("gobgp".into(), Status::default()),
        ]);
        store.set_bfd_dropped(vec![("ttl", 4), ("length", 0)]);
        let text = render(&store);
        for line in [
            "edgelb_bfd_session_up{peer=\"bird\"} 1",
            "edgelb_bfd_session_up{peer=\"frr\"} 0",
            "edgelb_bfd_session_failures_total{peer=\"bird\"} 1",
            "edgelb_bfd_detection_time_milliseconds{peer=\"frr\"} 300",
            "edgelb_bfd_dropped_packets_total{reason=\"ttl\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("peer=\"gobgp\"} 1") && !text.contains("edgelb_bfd_session_up{peer=\"gobgp\""));
    }

    #[test]
    fn replication_counters() {
        let store = Store::new(edgelb_testkit::models::every_mode(1009)).unwrap();
        assert!(!render(&store).contains("edgelb_replication"), "nothing without replication");
        store.set_replication(crate::store::ReplicationStatus {
            peers: vec![("198.18.255.5:7946".into(), true), ("198.18.255.9:7946".into(), false)],
            sent: 1200,
            dropped: 3,
            received: 800,
            queue_full: 2,
            accepted: 40,
            refused: vec![("authentication", 5), ("stranger", 7)],
            bulk_sends: 1,
        });
        let text = render(&store);
        for line in [
            "edgelb_replication_peer_synced{peer=\"198.18.255.5:7946\"} 1",
            "edgelb_replication_peer_synced{peer=\"198.18.255.9:7946\"} 0",
            "edgelb_replication_records_sent_total{} 1200",
            "edgelb_replication_records_dropped_total{} 3",
            "edgelb_replication_records_received_total{} 800",
            "edgelb_replication_records_lost_total{} 2",
            "edgelb_replication_datagrams_accepted_total{} 40",
            "edgelb_replication_datagrams_refused_total{reason=\"authentication\"} 5",
            "edgelb_replication_datagrams_refused_total{reason=\"stranger\"} 7",
            "edgelb_replication_bulk_sends_total{} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn vrrp_routers_and_refused_adverts() {
        use edgelb_dataplane::slowpath::{vrrp, VrrpStatus};
        let store = Store::new(edgelb_testkit::models::every_mode(1009)).unwrap();
        assert!(!render(&store).contains("edgelb_vrrp_"), "no routers, no VRRP families");
        let r = VrrpStatus {
            name: "front".into(),
            vrid: 51,
            port: 0,
            v4: true,
            state: vrrp::State::Master,
            priority: 150,
            effective_priority: 150,
            master: None,
            vips: vec![],
            stats: vrrp::RouterStats { adverts_in: 4, adverts_out: 9, became_master: 1, transitions: 2 },
        };
        store.set_vrrp((vec![r], vec![("ttl", 2)]));
        let text = render(&store);
        for line in [
            "edgelb_vrrp_master{router=\"front\"} 1",
            "edgelb_vrrp_priority{router=\"front\"} 150",
            "edgelb_vrrp_transitions_total{router=\"front\"} 2",
            "edgelb_vrrp_adverts_total{router=\"front\",direction=\"out\"} 9",
            "edgelb_vrrp_refused_adverts_total{reason=\"ttl\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }

    /// A refused change counts under `config_apply_failures`; an accepted one does not.
    #[test]
    fn refused_changes_are_counted() {
        let store = Store::new(edgelb_testkit::models::every_mode(1009)).unwrap();
        let stale = crate::store::Batch { expected_version: 999, ..Default::default() };
        assert!(store.apply(&stale, "api").is_err());
        assert!(store.apply(&crate::store::Batch::default(), "api").is_ok());
        let text = render(&store);
        assert!(text.lines().any(|l| l == "edgelb_config_apply_failures_total{} 1"), "{text}");
    }
}
