//! The dataplane's stats as operators read them: summed over workers, named by VIP and backend. The API's `GetStats`
//! and `/metrics` both show this.

use crate::store::Store;
use edgelb_api::v1;
use edgelb_dataplane::pipeline::DropReason;
use edgelb_dataplane::snapshot::DataplaneConfig;
use edgelb_dataplane::worker::WorkerStats;
use std::net::IpAddr;

/// Stats of the running dataplane, summed over workers, named by VIP and backend.
pub fn stats(store: &Store) -> v1::Stats {
    let cfg = store.snapshot();
    let workers: Vec<WorkerStats> = store.workers().map(|w| w.snapshot()).unwrap_or_default();
    v1::Stats { config_apply_failures: store.apply_failures(), ..stats_of(store.version(), &cfg, &workers) }
}

/// Counters sampled beside the drops: packets forwarded untracked (a full flow table's sign), and those of them that
/// found the IPv6 table naming its most destinations.
pub const UNTRACKED: [&str; 2] = ["packets_untracked", "packets_untracked_ipv6_destinations"];

/// Drop totals by reason, and the [`UNTRACKED`] counters: what `edgelbctl doctor` compares over the last minute, and
/// what the control plane samples for it.
pub fn drop_totals(st: &v1::Stats) -> Vec<(String, u64)> {
    let mut t: Vec<(String, u64)> = st.drops.iter().map(|d| (d.reason.clone(), d.packets)).collect();
    t.extend(st.counters.iter().filter(|c| UNTRACKED.contains(&c.name.as_str())).map(|c| (c.name.clone(), c.value)));
    t
}

/// Packets, bytes, new flows and flows tracked now of one service or backend, summed over the workers.
fn sum<'a>(
    workers: &'a [WorkerStats],
    pick: impl Fn(&'a WorkerStats) -> Option<&'a edgelb_dataplane::pipeline::ObjCounters>,
) -> (u64, u64, u64, u64) {
    let (p, b, n, a) = workers
        .iter()
        .filter_map(pick)
        .fold((0, 0, 0, 0i64), |(p, b, n, a), c| (p + c.packets, b + c.bytes, n + c.new_flows, a + c.active_flows));
    (p, b, n, a.max(0) as u64)
}

fn stats_of(version: u64, cfg: &DataplaneConfig, workers: &[WorkerStats]) -> v1::Stats {
    let mut total = edgelb_dataplane::pipeline::Counters::default();
    for w in workers {
        total.add(&w.counters);
    }
    let ip = |a: &[u8; 16], v4: bool| -> String {
        if v4 {
            IpAddr::from([a[12], a[13], a[14], a[15]]).to_string()
        } else {
            IpAddr::from(*a).to_string()
        }
    };
    let proto = |p: u8| if p == 17 { v1::Protocol::Udp as i32 } else { v1::Protocol::Tcp as i32 };
    let mut services = Vec::new();
    for s in &cfg.services {
        let (packets, bytes, new_flows, active_flows) = sum(workers, |w| w.services.get(s.id as usize));
        services.push(v1::ServiceStats {
            vip: ip(&s.vip, s.v4),
            protocol: proto(s.proto),
            port: u32::from(s.port),
            packets,
            bytes,
            new_flows,
            active_flows,
        });
    }
    let mut backends = Vec::new();
    for b in cfg.backends.iter().flatten() {
        let Some(s) = cfg.services.get(b.service as usize) else { continue };
        let (packets, bytes, new_flows, active_flows) = sum(workers, |w| w.backends.get(b.id as usize));
        backends.push(v1::BackendStats {
            vip: ip(&s.vip, s.v4),
            protocol: proto(s.proto),
            port: u32::from(s.port),
            address: ip(&b.addr, b.v4),
            backend_port: u32::from(b.port),
            packets,
            bytes,
            new_flows,
            active_flows,
        });
    }
    v1::Stats {
        version,
        rx: total.rx,
        tx: total.tx,
        new_flows: total.new_flows,
        replies: total.replies,
        slowpath: total.slowpath,
        drops: DropReason::all()
            .filter(|d| total.dropped(*d) > 0)
            .map(|d| v1::DropCount { reason: d.name().into(), packets: total.dropped(d) })
            .collect(),
        counters: total.named().map(|(c, value)| v1::Counter { name: c.name.into(), value }).collect(),
        services,
        backends,
        config_apply_failures: 0,
        workers: workers
            .iter()
            .map(|w| v1::WorkerStats {
                worker: u32::from(w.worker),
                rx: w.counters.rx,
                tx: w.counters.tx,
                flows_v4: w.tables.0.occupied,
                flows_v6: w.tables.1.occupied,
                capacity_v4: w.capacity.0 as u64,
                capacity_v6: w.capacity.1 as u64,
                burst_ns_p50: w.burst_ns.value_at_quantile(0.5),
                burst_ns_p99: w.burst_ns.value_at_quantile(0.99),
                burst_ns_max: w.burst_ns.max(),
                stats_age_ms: w.published.map_or(u64::MAX, |t| t.elapsed().as_millis() as u64),
                busy_ns: w.busy_ns,
                idle_ns: w.idle_ns,
                sleep_ns: w.sleep_ns,
                polls_saturated: w.counters.saturated_polls,
                overload_drops: w.counters.dropped(DropReason::Overload),
            })
            .collect(),
    }
}
