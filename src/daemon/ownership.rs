//! The daemon loop's side of VIP ownership. VRRP: the slow path runs the virtual routers; this follows the snapshots
//! for their health tracking, hands them over when a drain starts, and reports their state and transitions to the
//! store (API, events, `/metrics`). Kubernetes VIP Leases: the held set goes from the store to the slow path.

use super::DaemonError;
use edgelb_controlplane::store::{Store, StoreEvent};
use edgelb_dataplane::slowpath::vrrp::RouterSpec;
use edgelb_dataplane::slowpath::SlowPath;
use std::time::{Duration, Instant};
use tracing::info;

/// The VRRP routers' side of the daemon loop: the slow path learns every new snapshot (for health tracking), hands
/// its routers over when a drain starts, and reports their state and transitions to the store (API, events,
/// `/metrics`).
pub(super) struct Ownership {
    generation: u64,
    resigned: bool,
    next_report: Instant,
    /// The VIPs another appliance owns, as the snapshot has them.
    unowned: Vec<std::net::IpAddr>,
    /// The virtual routers' gateway addresses, as the snapshot has them.
    virtual_addrs: Vec<std::net::IpAddr>,
    /// The file's virtual routers; Kubernetes' (L2Announcements) run beside them.
    file_routers: Vec<RouterSpec>,
    /// The version of Kubernetes' routers running.
    k8s_version: u64,
}

impl Ownership {
    pub(super) fn start(slow: &mut SlowPath, store: &Store, routers: Vec<RouterSpec>) -> Result<Self, DaemonError> {
        let n = routers.len();
        slow.set_vrrp(routers.clone(), Instant::now()).map_err(|e| DaemonError::Config(format!("[[vrrp]]: {e}")))?;
        if n > 0 {
            info!(routers = n, "VRRP: virtual routers started in Backup");
        }
        let mut o = Self {
            generation: store.handle().load().generation,
            resigned: false,
            next_report: Instant::now(),
            unowned: Vec::new(),
            virtual_addrs: Vec::new(),
            file_routers: routers,
            k8s_version: 0,
        };
        o.follow_virtual(slow, store);
        Ok(o)
    }

    /// Gateway addresses of virtual routers into the snapshot, so that ARP for them reaches the slow path.
    fn follow_virtual(&mut self, slow: &SlowPath, store: &Store) {
        let v = slow.virtual_addrs();
        if v != self.virtual_addrs {
            match store.set_virtual_addrs(&v) {
                Ok(_) => self.virtual_addrs = v,
                Err(e) => tracing::error!("the snapshot with the VRRP gateway addresses did not build: {e}"),
            }
        }
    }

    pub(super) fn follow(
        &mut self,
        slow: &mut SlowPath,
        store: &Store,
        draining: bool,
        now: Instant,
        emit: &mut impl FnMut(u16, &[u8]),
    ) {
        let cfg = store.handle().load();
        if cfg.generation != self.generation {
            self.generation = cfg.generation;
            slow.update(&cfg);
            // New Kubernetes VIPs are governed by their Lease before any ARP for them is answered.
            follow_leases(slow, store, now);
            self.follow_virtual(slow, store);
        }
        self.follow_kubernetes(slow, store, draining, now, emit);
        if draining && !self.resigned {
            self.resigned = true;
            slow.vrrp_resign(now, emit);
        }
        let changes = slow.take_vrrp_transitions();
        for (router, (from, to, why)) in &changes {
            info!(router = %router, "VRRP: {from:?} → {to:?} ({why})");
            store.announce(StoreEvent::VrrpState {
                router: router.clone(),
                state: format!("{to:?}"),
                reason: (*why).to_string(),
            });
        }
        if !changes.is_empty() || now >= self.next_report {
            self.next_report = now + Duration::from_millis(100);
            store.set_vrrp((slow.vrrp_status(), slow.vrrp_refused()));
            follow_leases(slow, store, now);
            // The workers count packets to VIPs owned elsewhere (and still forward them).
            let unowned = slow.unowned_vips();
            if unowned != self.unowned {
                match store.set_unowned(&unowned) {
                    Ok(_) => self.unowned = unowned,
                    Err(e) => tracing::error!("the snapshot with the VIPs owned elsewhere did not build: {e}"),
                }
            }
        }
    }

    /// Kubernetes' virtual routers (L2Announcements) changed: run them beside the file's, an unchanged router
    /// undisturbed. Not while draining (the routers have resigned).
    fn follow_kubernetes(
        &mut self,
        slow: &mut SlowPath,
        store: &Store,
        draining: bool,
        now: Instant,
        emit: &mut impl FnMut(u16, &[u8]),
    ) {
        let (version, routers) = store.k8s_routers();
        if version == self.k8s_version || draining {
            return;
        }
        self.k8s_version = version;
        let n = routers.len();
        let all: Vec<RouterSpec> = self.file_routers.iter().cloned().chain(routers).collect();
        match slow.update_vrrp(all, now, emit) {
            Ok(()) => {
                info!(routers = n, "VRRP: the virtual routers of Kubernetes L2Announcements run");
                self.follow_virtual(slow, store);
            }
            Err(e) => tracing::error!("VRRP: the L2Announcements' routers were refused, the running ones kept: {e}"),
        }
    }
}

/// The VIP Leases held now into the slow path (which announces a VIP newly held), logged.
pub(super) fn follow_leases(slow: &mut SlowPath, store: &Store, now: Instant) {
    let (gained, lost) = slow.set_leased(store.vip_leases(), now);
    for v in gained {
        info!(vip = %v, "VIP Lease held: answering and announcing the VIP");
    }
    for v in lost {
        info!(vip = %v, "VIP Lease gone: the VIP is answered by its holder");
    }
}
