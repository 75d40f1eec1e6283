//! ICMP to VIPs: echo answered, errors about tracked flows steered to their backend (or translated back to the
//! client), packet-too-big and fragmentation-needed sent.

use super::*;

pub(super) fn is_icmp_error(p: &Pkt) -> bool {
    if p.v4 {
        icmp4::is_error(p.icmp_type)
    } else {
        icmp6::is_error(p.icmp_type)
    }
}

/// The IP header and ports embedded in an ICMP error.
#[derive(Debug, Clone, Copy)]
pub(super) struct Embedded {
    pub(super) l3: usize,
    pub(super) l4: usize,
    pub(super) src: [u8; 16],
    pub(super) dst: [u8; 16],
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) proto: u8,
}

/// Parse the embedded header of an ICMP error at `at..end` (truncated payloads allowed: only the header and the
/// ports must be there). Extension headers in an embedded IPv6 header are not followed.
pub(super) fn embedded(d: &[u8], at: usize, end: usize, v4: bool) -> Option<Embedded> {
    let b = d.get(at..end)?;
    let (hl, proto_, src, dst) = if v4 {
        if b.len() < 20 || b[0] >> 4 != 4 {
            return None;
        }
        let hl = usize::from(b[0] & 0xf) * 4;
        (hl, b[9], mapped([b[12], b[13], b[14], b[15]]), mapped([b[16], b[17], b[18], b[19]]))
    } else {
        if b.len() < 40 || b[0] >> 4 != 6 {
            return None;
        }
        let mut s = [0u8; 16];
        s.copy_from_slice(&b[8..24]);
        let mut t = [0u8; 16];
        t.copy_from_slice(&b[24..40]);
        (40, b[6], s, t)
    };
    if hl < 20 || b.len() < hl + 4 || !matches!(proto_, proto::TCP | proto::UDP) {
        return None;
    }
    Some(Embedded { l3: at, l4: at + hl, src, dst, sport: get_u16(b, hl), dport: get_u16(b, hl + 2), proto: proto_ })
}

impl Pipeline {
    /// ICMP to a VIP: echo answered, errors steered to the flow's backend, the rest dropped.
    pub(super) fn icmp_to_vip<B: PacketBuf>(
        &mut self,
        cfg: &DataplaneConfig,
        in_port: PortId,
        pkt: &mut B,
        p: &Pkt,
        now: u32,
    ) -> PResult<Verdict> {
        let l4 = p.l4.ok_or(DropReason::IcmpUnsupported)?;
        let echo = if p.v4 { icmp4::ECHO_REQUEST } else { icmp6::ECHO_REQUEST };
        if p.icmp_type == echo && p.frag == Frag::No {
            // The reply leaves by the ingress port at the request's size.
            let mtu = cfg.interfaces.iter().find(|i| i.port == in_port).map_or(u16::MAX, |i| i.mtu);
            if p.end - p.l3 > usize::from(mtu) {
                return Err(DropReason::TooBig);
            }
            if !ficmp::echo_reply(pkt.data_mut(), p.l3, l4, p.v4) {
                return Err(ParseError::Truncated.into());
            }
            self.counters.icmp_echo += 1;
            return Ok(Verdict::Tx(in_port));
        }
        if !is_icmp_error(p) || p.frag != Frag::No {
            return Err(DropReason::IcmpUnsupported);
        }
        if p.ttl <= 1 {
            return Err(DropReason::TtlExpired);
        }
        let e = embedded(pkt.data(), l4.offset() + 8, p.end, p.v4).ok_or(DropReason::IcmpErrorNoFlow)?;
        // The embedded packet went VIP -> client: the flow is client -> VIP.
        let si = cfg.service_for(&e.src, e.proto, e.sport).ok_or(DropReason::IcmpErrorNoFlow)?;
        let svc = cfg.service(si).ok_or(DropReason::IcmpErrorNoFlow)?;
        let (bid, snat_port, tracked) =
            if p.v4 { self.find_flow::<KeyV4>(svc, &e, now) } else { self.find_flow::<KeyV6>(svc, &e, now) }
                .ok_or(DropReason::IcmpErrorNoFlow)?;
        if svc.mode.is_nat() && !tracked {
            return Err(DropReason::IcmpErrorNoFlow);
        }
        let b = cfg.backend(bid).ok_or(DropReason::IcmpErrorNoFlow)?;
        let (nh, held) = self.route_to(cfg, b, p.v4)?;
        let encap = encap_of(svc);
        // No ICMP error about an ICMP error (RFC 1812 §4.3.2.7): one that would not fit is dropped.
        if p.end - p.l3 + encap.map_or(0, |e| tunnel::overhead(e, p.v4)) > usize::from(nh.mtu) {
            return Err(DropReason::TooBig);
        }
        nat::decrement_ttl(pkt.data_mut(), p.l3, p.v4);
        match (svc.mode, encap) {
            (Mode::Nat | Mode::FullNat, _) => {
                let d = pkt.data_mut();
                let snat = svc_snat(cfg, svc, p.v4);
                // The error travels backend-ward like the flow; the packet it quotes went backend -> client, so it
                // is translated with the flow's rewrite mirrored.
                let fwd = forward_rewrite(svc, b, snat.as_ref(), snat_port, p);
                let outer = Rewrite { src: fwd.src, dst: fwd.dst, ..Rewrite::default() };
                let inner = Rewrite { src: fwd.dst, sport: fwd.dport, dst: fwd.src, dport: fwd.sport };
                if !ficmp::translate_error(d, p.l3, l4, p.end, p.v4, &outer, e.l3, Some(e.l4), &inner) {
                    return Err(DropReason::IcmpErrorNoFlow);
                }
                set_macs(d, nh.mac, nh.src_mac);
            }
            (_, Some(encap)) => {
                let flow =
                    Pkt { src: e.dst, dst: e.src, sport: e.dport, dport: e.sport, proto: e.proto, hash: 0, ..*p };
                self.encap_to(cfg, pkt, &flow, b, encap, &nh)?;
            }
            (_, None) => set_macs(pkt.data_mut(), nh.mac, nh.src_mac),
        }
        self.counters.icmp_errors_steered += 1;
        Ok(sent(nh, held))
    }

    /// The backend of the flow an embedded (VIP -> client) header belongs to: tracked, else by Maglev.
    pub(super) fn find_flow<K: FamilyKey>(
        &mut self,
        svc: &Service,
        e: &Embedded,
        now: u32,
    ) -> Option<(u32, u16, bool)> {
        let key = K::make(&e.dst, &e.src, e.dport, e.sport, e.proto);
        let h = key.hash();
        let table = K::table(&mut self.ct);
        if let Lookup::Hit(_, x) = table.lookup(&key, h, now) {
            return Some((x.value, x.aux, true));
        }
        Some((svc.maglev_backend(h)?, 0, false))
    }
}
