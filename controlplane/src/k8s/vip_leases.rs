//! L2 ownership of Kubernetes VIPs by Lease, in the style of kube-vip: one `coordination.k8s.io/v1` Lease per VIP
//! (`edgelb-vip-198-19-0-1`), held by the one appliance that answers ARP/NDP for it. Each appliance tries for every
//! VIP of the Kubernetes Services four times a second and renews what it holds every third of the Lease duration,
//! so when a holder dies another takes its VIPs within the Lease duration and a quarter of a second; the slow path
//! then announces them (gratuitous ARP / unsolicited NA). The held set goes to the store; the daemon hands it to the
//! slow path. When the appliance drains, and on stop, the Leases held are deleted and no more are taken, so a drain
//! hands the VIPs over at once (the other appliance takes them on its next try) while tracked flows finish.

use super::controller::{lease_tick, LeaseSettings};
use crate::store::Store;
use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams};
use kube::Client;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How often the VIPs not held are tried.
const TRY_EVERY: Duration = Duration::from_millis(250);

/// The Lease of a VIP: a name Kubernetes accepts (lower-case alphanumerics and `-`).
pub fn lease_name(vip: IpAddr) -> String {
    format!("edgelb-vip-{}", vip.to_string().replace(['.', ':'], "-"))
}

/// Run until `stop` turns true; `base` gives the namespace, our identity and the duration (its name is ignored).
pub async fn run(client: Client, store: Arc<Store>, base: LeaseSettings, mut stop: tokio::sync::watch::Receiver<bool>) {
    let renew_every = Duration::from_secs(u64::try_from(base.duration_s / 3).unwrap_or(1).max(1));
    let duration = Duration::from_secs(u64::try_from(base.duration_s).unwrap_or(15));
    // VIP → when we last renewed its Lease.
    let mut held: HashMap<IpAddr, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(TRY_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if store.is_draining() {
            if !held.is_empty() {
                info!(vips = held.len(), "draining: VIP Leases released");
                store.set_vip_leases_held(Default::default());
                release(&client, &base.namespace, held.drain().map(|(v, _)| v)).await;
            }
            continue;
        }
        let vips = store.kubernetes_vips();
        held.retain(|v, _| vips.contains(v));
        for vip in vips {
            if held.get(&vip).is_some_and(|t| t.elapsed() < renew_every) {
                continue;
            }
            let l = LeaseSettings { name: lease_name(vip), ..base.clone() };
            match lease_tick(&client, &l, Utc::now()).await {
                Ok(true) => {
                    if held.insert(vip, Instant::now()).is_none() {
                        info!(vip = %vip, lease = %l.name, "VIP Lease taken: this appliance answers for the VIP");
                    }
                }
                Ok(false) => {
                    if held.remove(&vip).is_some() {
                        warn!(vip = %vip, lease = %l.name, "VIP Lease lost to another appliance");
                    }
                }
                // Unreachable API: what we hold stays ours until our last renewal expires, as at the other holders.
                Err(e) => {
                    if held.get(&vip).is_some_and(|t| t.elapsed() >= duration) {
                        held.remove(&vip);
                        warn!(vip = %vip, "VIP Lease expired while the Kubernetes API was unreachable: {e}");
                    }
                }
            }
        }
        store.set_vip_leases_held(held.keys().copied().collect());
    }
    store.set_vip_leases_held(Default::default());
    release(&client, &base.namespace, held.into_keys()).await;
}

/// Delete the Leases of these VIPs (ours), so another appliance takes them at once.
async fn release(client: &Client, namespace: &str, vips: impl Iterator<Item = IpAddr>) {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    for vip in vips {
        if let Err(e) = api.delete(&lease_name(vip), &DeleteParams::default()).await {
            warn!(vip = %vip, "VIP Lease not released: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lease_names_are_dns_labels() {
        assert_eq!(super::lease_name("198.19.0.1".parse().unwrap()), "edgelb-vip-198-19-0-1");
        assert_eq!(super::lease_name("2001:db8:100::1".parse().unwrap()), "edgelb-vip-2001-db8-100--1");
    }
}
