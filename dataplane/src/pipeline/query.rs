//! Introspection for operators: where a flow goes, and the tracked flows page by page. Changes nothing.

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

impl Pipeline {
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
        let svc = &cfg.services[si as usize];
        let (tracked, h) = if src.is_ipv4() {
            let k = KeyV4::make(&s, &d, sport, dport, proto);
            (self.ct.v4.peek(&k, now).map(|e| e.value), k.hash())
        } else {
            let k = KeyV6::make(&s, &d, sport, dport, proto);
            (self.ct.v6.peek(&k, now).map(|e| e.value), k.hash())
        };
        if let Some(b) = tracked {
            return Some(FlowQuery { backend: b, tracked: true });
        }
        let idx = if svc.affinity_ms > 0 {
            let k = AffinityKey { client: s, service: svc.id };
            if let Some(e) = self.affinity.peek(&k, now) {
                return Some(FlowQuery { backend: e.value, tracked: false });
            }
            svc.maglev.lookup(affinity_hash(&s, svc.id))?
        } else {
            svc.maglev.lookup(h)?
        };
        Some(FlowQuery { backend: svc.maglev_ids[idx], tracked: false })
    }
}
