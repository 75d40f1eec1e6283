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

/// Queue the long-lived flows (not full-NAT, not half-open or closing) among `scan` slots of `t` from `from`; where
/// to continue (`None`: the table's end).
fn queue_live<K: FamilyKey>(
    t: &FlowTable<K>,
    cfg: &DataplaneConfig,
    q: &ReplicaQueue,
    counters: &mut Counters,
    (from, scan, now): (u32, u32, u32),
) -> Option<u32> {
    t.for_each_live_in(from, scan, now, |_, e| {
        let s = FlowState::from_u8(e.state);
        if e.flags & F_FULLNAT != 0 || matches!(s, FlowState::Syn | FlowState::Closing) {
            return;
        }
        let Some(b) = cfg.backend(e.value) else { return };
        if q.push(FlowRecord::of(&e.key, b, e.state)).is_ok() {
            counters.replicas_refresh_queued += 1;
        } else {
            counters.replicas_queue_full += 1;
        }
    })
}

impl FlowRecord {
    /// The record of a tracked flow: its key, its backend, its state (as stored).
    pub(super) fn of<K: FamilyKey>(key: &K, b: &Backend, state: u8) -> Self {
        FlowRecord {
            v4: b.v4,
            proto: key.proto(),
            state,
            src: key.src16(),
            dst: key.dst16(),
            sport: key.sport(),
            dport: key.dport(),
            backend: b.addr,
            backend_port: b.port,
        }
    }
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

/// Most slots one [`Pipeline::refresh_replicas`] call visits (its cost between two bursts stays small).
pub const REFRESH_SLOTS: u64 = 1024;

/// Where the periodic re-send of a worker's flows stands.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Refresh {
    /// Tick the last pass started (the first starts one period after the worker did).
    started: u32,
    /// The next slot: (in the IPv6 table, slot).
    at: (bool, u32),
    /// A pass is under way.
    running: bool,
}

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
        if q.push(FlowRecord::of(key, b, state as u8)).is_ok() {
            self.counters.replicas_queued += 1;
        } else {
            self.counters.replicas_queue_full += 1;
        }
    }

    /// Re-send the long-lived flows this worker tracks (TCP established, UDP, other protocols; not full-NAT) once
    /// every third of the shorter of their timeouts, so a peer's copy of a flow that only passes this appliance
    /// never expires there while the flow runs. A pass over both tables is spread over half that period, at most
    /// [`REFRESH_SLOTS`] slots a call: call it from the worker's loop (it does nothing without replication).
    pub fn refresh_replicas(&mut self, cfg: &DataplaneConfig, now: u32) {
        let Some(q) = &self.replica_out else { return };
        let t = &cfg.timeouts_ms;
        let period = (t.tcp_established.min(t.udp) / 3).max(1000);
        let r = &mut self.refresh;
        if !r.running {
            if now.wrapping_sub(r.started) < period {
                return;
            }
            *r = Refresh { started: now, at: (false, 0), running: true };
        }
        // Where the pass should be by now: all slots after half the period.
        let (c4, c6) = (self.ct.v4.capacity() as u64, self.ct.v6.capacity() as u64);
        let elapsed = u64::from(now.wrapping_sub(r.started));
        let due = ((c4 + c6) * elapsed / u64::from(period / 2)).min(c4 + c6);
        let done = if r.at.0 { c4 + u64::from(r.at.1) } else { u64::from(r.at.1) };
        let scan = due.saturating_sub(done).min(REFRESH_SLOTS) as u32;
        if scan == 0 {
            return;
        }
        let (ct, counters, at) = (&self.ct, &mut self.counters, (r.at.1, scan, now));
        r.at = if !r.at.0 {
            queue_live(&ct.v4, cfg, q, counters, at).map_or((true, 0), |s| (false, s))
        } else {
            match queue_live(&ct.v6, cfg, q, counters, at) {
                Some(s) => (true, s),
                None => {
                    r.running = false;
                    (false, 0)
                }
            }
        };
    }

    /// Install a peer's flow as an entry of this worker's table (and its reverse index for NAT), unless the flow is
    /// tracked here already. `now` is the worker's tick.
    ///
    /// # Errors
    /// [`Refused`]: nothing was installed.
    pub fn install_replica(&mut self, cfg: &DataplaneConfig, r: &FlowRecord, now: u32) -> Result<(), Refused> {
        let res = if r.v4 { self.install::<KeyV4>(cfg, r, now) } else { self.install::<KeyV6>(cfg, r, now) };
        match res {
            Ok(true) => self.counters.replicas_installed += 1,
            Ok(false) => self.counters.replicas_refreshed += 1,
            Err(_) => self.counters.replicas_refused += 1,
        }
        res.map(|_| ())
    }

    /// `Ok(true)`: installed, or a known flow's state changed; `Ok(false)`: the same again (its expiry renewed).
    fn install<K: FamilyKey>(&mut self, cfg: &DataplaneConfig, r: &FlowRecord, now: u32) -> Result<bool, Refused> {
        // The service on the VIP's port, else an all-ports one (port 0).
        let si = match (cfg.classify(&r.dst, r.proto, r.dport), cfg.classify(&r.dst, r.proto, 0)) {
            (Classified::Service(si), _) | (_, Classified::Service(si)) => si,
            _ => return Err(Refused::NoService),
        };
        self.install_in::<K>(cfg, cfg.service(si).ok_or(Refused::NoService)?, r, now)
    }

    fn install_in<K: FamilyKey>(
        &mut self,
        cfg: &DataplaneConfig,
        svc: &Service,
        r: &FlowRecord,
        now: u32,
    ) -> Result<bool, Refused> {
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
            // Known here: the same backend's record is taken (a changed state: it established, or closes; the same
            // state: the periodic re-send, which keeps the entry alive here while the flow runs through the other
            // appliance), any other record leaves this appliance's choice alone.
            if e.value == b.id {
                table.touch(slot, state as u8, now.wrapping_add(state.timeout_ms(cfg)));
                return Ok(e.state != state as u8);
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
            if table.link_inserted(slot, rk.hash()).is_err() {
                table.remove_slot(slot);
                return Err(Refused::Full);
            }
        }
        if let Some(c) = self.backend_stats.get_mut(b.id as usize) {
            c.active_flows += 1;
        }
        Ok(true)
    }
}
