//! Flow replication between appliances (what IPVS's sync daemon and conntrackd do): a worker that records a new flow
//! puts a [`FlowRecord`] on its outbound queue (bounded, lock-free, never allocating; a full queue is counted), and
//! [`Pipeline::install_replica`] installs a peer's record as an entry this worker did not create. The record names
//! its backend by address and port, as backend ids differ between appliances; a flow that reaches this appliance
//! later (the router moved it) then keeps the backend the other appliance chose, even a draining one that Maglev
//! no longer lists. The transport (batching, authentication, rate) lives in the control plane.

use super::*;
use crossbeam_queue::ArrayQueue;
use std::sync::Arc;

/// One replicated flow: its key, its backend (address and port) and its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    /// IPv4 (addresses in mapped 16-byte form) or IPv6.
    pub v4: bool,
    /// IP protocol.
    pub proto: u8,
    /// [`FlowState`] as stored.
    pub state: u8,
    /// Client address.
    pub src: [u8; 16],
    /// VIP.
    pub dst: [u8; 16],
    /// Client port.
    pub sport: u16,
    /// VIP port.
    pub dport: u16,
    /// Backend address.
    pub backend: [u8; 16],
    /// Backend port.
    pub backend_port: u16,
}

/// Why a replica was not installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No service here on the record's VIP, protocol and port.
    NoService,
    /// The service here has no backend with the record's address and port, or it is down.
    NoBackend,
    /// A full-NAT service: its flows' source ports are the appliance's own, so they are not replicated.
    FullNat,
    /// The flow is tracked here already (this appliance's own choice stands).
    Known,
    /// The table had no room.
    Full,
}

/// A worker's outbound queue of new flows.
pub type ReplicaQueue = Arc<ArrayQueue<FlowRecord>>;

impl Pipeline {
    /// Put every new flow this worker records, and every change of a tracked flow's state, on `q` (`None`:
    /// replication off, the default).
    pub fn set_replica_out(&mut self, q: Option<ReplicaQueue>) {
        self.replica_out = q;
    }

    /// Queue a new flow for the peers (no allocation; a full queue is counted).
    #[inline]
    pub(super) fn replicate<K: FamilyKey>(&mut self, key: &K, b: &Backend, state: FlowState) {
        let Some(q) = &self.replica_out else { return };
        let r = FlowRecord {
            v4: b.v4,
            proto: key.proto(),
            state: state as u8,
            src: key.src16(),
            dst: key.dst16(),
            sport: key.sport(),
            dport: key.dport(),
            backend: b.addr,
            backend_port: b.port,
        };
        if q.push(r).is_ok() {
            self.counters.replicas_queued += 1;
        } else {
            self.counters.replicas_queue_full += 1;
        }
    }

    /// Install a peer's flow as an entry of this worker's table (and its reverse index for NAT), unless the flow is
    /// tracked here already. `now` is the worker's tick.
    ///
    /// # Errors
    /// [`Refused`]: nothing was installed.
    pub fn install_replica(&mut self, cfg: &DataplaneConfig, r: &FlowRecord, now: u32) -> Result<(), Refused> {
        let res = if r.v4 { self.install::<KeyV4>(cfg, r, now) } else { self.install::<KeyV6>(cfg, r, now) };
        match res {
            Ok(()) => self.counters.replicas_installed += 1,
            Err(_) => self.counters.replicas_refused += 1,
        }
        res
    }

    fn install<K: FamilyKey>(&mut self, cfg: &DataplaneConfig, r: &FlowRecord, now: u32) -> Result<(), Refused> {
        // The service on the VIP's port, else an all-ports one (port 0).
        let si = match (cfg.classify(&r.dst, r.proto, r.dport), cfg.classify(&r.dst, r.proto, 0)) {
            (Classified::Service(si), _) | (_, Classified::Service(si)) => si,
            _ => return Err(Refused::NoService),
        };
        self.install_in::<K>(cfg, &cfg.services[si as usize], r, now)
    }

    fn install_in<K: FamilyKey>(
        &mut self,
        cfg: &DataplaneConfig,
        svc: &Service,
        r: &FlowRecord,
        now: u32,
    ) -> Result<(), Refused> {
        if svc.mode == Mode::FullNat {
            return Err(Refused::FullNat);
        }
        let b = svc
            .backend_ids
            .iter()
            .filter_map(|id| cfg.backend(*id))
            .find(|b| b.addr == r.backend && b.port == r.backend_port && b.state != BackendState::Down)
            .ok_or(Refused::NoBackend)?;
        let key = K::make(&r.src, &r.dst, r.sport, r.dport, r.proto);
        let h = key.hash();
        let state = FlowState::from_u8(r.state);
        let table = K::table(&mut self.ct);
        if let Lookup::Hit(slot, e) = table.lookup(&key, h, now) {
            // Known here: the same backend's changed state is taken (it established, or closes), any other record
            // leaves this appliance's choice alone.
            if e.value == b.id && e.state != state as u8 {
                table.touch(slot, state as u8, now.wrapping_add(state.timeout_ms(cfg)));
                return Ok(());
            }
            return Err(Refused::Known);
        }
        let e = Entry::new(now.wrapping_add(state.timeout_ms(cfg)), b.id, 0, state as u8, 0);
        let (slot, displaced) = table.insert(key, h, now, e, evictable).map_err(|_| Refused::Full)?;
        if let Some(d) = displaced {
            forget(&mut self.backend_stats, d.value);
        }
        if svc.mode.is_nat() {
            let rk = reverse_key::<K>(cfg, svc, b, &key, 0);
            if table.link_reverse(slot, rk.hash()).is_err() {
                table.remove_slot(slot);
                return Err(Refused::Full);
            }
        }
        if let Some(c) = self.backend_stats.get_mut(b.id as usize) {
            c.active_flows += 1;
        }
        Ok(())
    }
}
