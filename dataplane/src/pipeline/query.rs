//! Introspection for operators: where a flow goes, the tracked flows page by page, and how many there are in each
//! state (what a drain waits for). Changes nothing.

use super::*;

/// A flow as an operator names it (client to VIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    /// Client address.
    pub src: std::net::IpAddr,
    /// VIP.
    pub dst: std::net::IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Client port.
    pub sport: u16,
    /// VIP port.
    pub dport: u16,
}

/// The answer to "where does this flow go?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowQuery {
    /// Stable id of the backend.
    pub backend: u32,
    /// True when the flow is tracked (the answer comes from the flow table), false when Maglev/affinity would decide.
    pub tracked: bool,
    /// Where Maglev would send it without any state (an appliance that never saw the flow, with no flow sync): the
    /// backend a failover without replication gives it. `None` when the service has no active backend.
    pub fresh: Option<u32>,
}

/// Which tracked flows a listing wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// Only flows to this VIP (16-byte form), protocol and port (0: any port).
    pub service: Option<([u8; 16], u8, u16)>,
    /// Only flows scheduled to this backend (stable id).
    pub backend: Option<u32>,
}

/// One tracked flow, as a listing shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    /// Client address.
    pub client: std::net::IpAddr,
    /// Client port.
    pub client_port: u16,
    /// VIP.
    pub vip: std::net::IpAddr,
    /// VIP port.
    pub vip_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Backend (stable id).
    pub backend: u32,
    /// Milliseconds until it expires unless traffic refreshes it.
    pub expires_in_ms: u32,
    /// Connection state.
    pub state: FlowState,
}

/// Where a flow listing continues: family (false IPv4, true IPv6) and slot.
pub type FlowCursor = (bool, u32);

/// Live tracked flows by state (both families), counted by [`Pipeline::census`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCensus {
    /// TCP, handshake completed, no FIN or RST seen.
    pub established: u64,
    /// TCP, half-open.
    pub half_open: u64,
    /// TCP, a FIN or RST seen.
    pub closing: u64,
    /// UDP.
    pub udp: u64,
    /// Other protocols with ports.
    pub other: u64,
}

impl FlowCensus {
    /// Add another count.
    pub fn add(&mut self, o: &FlowCensus) {
        self.established += o.established;
        self.half_open += o.half_open;
        self.closing += o.closing;
        self.udp += o.udp;
        self.other += o.other;
    }

    /// Flows a drain waits for: established TCP and every UDP or other flow still tracked (they have no end but
    /// their idle timeout). Half-open and closing TCP flows end on their own and are not waited for.
    pub fn in_use(&self) -> u64 {
        self.established + self.udp + self.other
    }
}

impl Pipeline {
    /// Count the live flows of up to `scan` slots from `from` into `out`; where to continue (`None`: both tables
    /// done). Changes nothing.
    pub fn census(&self, from: FlowCursor, scan: u32, now: u32, out: &mut FlowCensus) -> Option<FlowCursor> {
        fn visit<K: FamilyKey>(t: &FlowTable<K>, from: u32, scan: u32, now: u32, out: &mut FlowCensus) -> Option<u32> {
            t.for_each_live_in(from, scan, now, |_, e| match FlowState::from_u8(e.state) {
                FlowState::Established => out.established += 1,
                FlowState::Syn => out.half_open += 1,
                FlowState::Closing => out.closing += 1,
                FlowState::Udp => out.udp += 1,
                FlowState::Other => out.other += 1,
            })
        }
        let (v6, slot) = from;
        if !v6 {
            Some(visit(&self.ct.v4, slot, scan, now, out).map_or((true, 0), |s| (false, s)))
        } else {
            visit(&self.ct.v6, slot, scan, now, out).map(|s| (true, s))
        }
    }

    /// Append to `out` the live flows matching `filter`, scanning at most `scan` slots from `from`, stopping early once
    /// `out` holds `max`. Returns where to continue (`None`: both tables done). Changes nothing.
    pub fn list_flows(
        &self,
        from: FlowCursor,
        scan: u32,
        now: u32,
        filter: &FlowFilter,
        out: &mut Vec<FlowInfo>,
        max: usize,
    ) -> Option<FlowCursor> {
        #[allow(clippy::too_many_arguments)]
        fn visit<K: FamilyKey>(
            t: &FlowTable<K>,
            v4: bool,
            from: u32,
            scan: u32,
            now: u32,
            filter: &FlowFilter,
            out: &mut Vec<FlowInfo>,
            max: usize,
        ) -> Option<u32> {
            let mut resume = None;
            let next = t.for_each_live_in(from, scan, now, |slot, e| {
                if resume.is_some() {
                    return;
                }
                if let Some((vip, proto, port)) = filter.service {
                    if e.key.dst16() != vip || e.key.proto() != proto || (port != 0 && e.key.dport() != port) {
                        return;
                    }
                }
                if filter.backend.is_some_and(|b| b != e.value) {
                    return;
                }
                if out.len() >= max {
                    resume = Some(slot);
                    return;
                }
                out.push(FlowInfo {
                    client: crate::snapshot::addr_from16(e.key.src16(), v4),
                    client_port: e.key.sport(),
                    vip: crate::snapshot::addr_from16(e.key.dst16(), v4),
                    vip_port: e.key.dport(),
                    proto: e.key.proto(),
                    backend: e.value,
                    expires_in_ms: e.expires.wrapping_sub(now),
                    state: FlowState::from_u8(e.state),
                });
            });
            resume.or(next)
        }
        let (v6, slot) = from;
        if !v6 {
            match visit(&self.ct.v4, true, slot, scan, now, filter, out, max) {
                Some(s) => Some((false, s)),
                None => Some((true, 0)),
            }
        } else {
            visit(&self.ct.v6, false, slot, scan, now, filter, out, max).map(|s| (true, s))
        }
    }

    /// Where would this flow (client -> VIP) go now, and is it tracked? Same code as the packet path; changes nothing.
    pub fn query(&self, cfg: &DataplaneConfig, t: &Tuple, now: u32) -> Option<FlowQuery> {
        let Tuple { src, dst, proto, sport, dport } = *t;
        let (s, d) = (crate::snapshot::addr16(src), crate::snapshot::addr16(dst));
        let si = cfg.service_for(&d, proto, dport)?;
        let svc = cfg.service(si)?;
        let (tracked, h) = if src.is_ipv4() {
            let k = KeyV4::make(&s, &d, sport, dport, proto);
            (self.ct.v4.peek(&k, now).map(|e| e.value), k.hash())
        } else {
            let k = KeyV6::make(&s, &d, sport, dport, proto);
            (self.ct.v6.peek(&k, now).map(|e| e.value), k.hash())
        };
        let fresh = svc.maglev_backend(if svc.affinity_ms > 0 { affinity_hash(&s, svc.id) } else { h });
        if let Some(b) = tracked {
            return Some(FlowQuery { backend: b, tracked: true, fresh });
        }
        if svc.affinity_ms > 0 {
            let k = AffinityKey { client: s, service: svc.id };
            if let Some(e) = self.affinity.peek(&k, now) {
                return Some(FlowQuery { backend: e.value, tracked: false, fresh });
            }
        }
        Some(FlowQuery { backend: fresh?, tracked: false, fresh })
    }
}
