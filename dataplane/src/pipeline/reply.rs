//! NAT and full-NAT replies from backends: found through the reverse index and translated back to the client's view.

use super::*;

/// Does the forward entry `f` own the reply (src, dst, sport, dport)? The reverse index stores no key; this is the
/// check that makes a fingerprint match a real one.
pub(super) fn reply_matches<K: FamilyKey>(
    cfg: &DataplaneConfig,
    f: &Entry<K>,
    src: &[u8; 16],
    dst: &[u8; 16],
    sport: u16,
    dport: u16,
    v4: bool,
) -> bool {
    let Some(b) = cfg.backend(f.value) else { return false };
    let bport = if b.port == 0 { f.key.dport() } else { b.port };
    if b.addr != *src || bport != sport {
        return false;
    }
    if f.flags & F_FULLNAT != 0 {
        f.aux == dport && snat_addr(cfg, v4).is_some_and(|a| a == *dst)
    } else {
        f.key.src16() == *dst && f.key.sport() == dport
    }
}

/// What a reply does to its forward entry `f`: the flow's state as the backend's packet moves it (TCP) and the
/// expiry that state gives, for [`FlowTable::touch`].
#[inline(always)]
pub(super) fn reply_state<K: FamilyKey>(
    cfg: &DataplaneConfig,
    f: &Entry<K>,
    proto: u8,
    tcp_flags: u8,
    now: u32,
) -> (u8, u32) {
    let state = FlowState::from_u8(f.state);
    let state = if proto == proto::TCP { state.next_tcp(tcp_flags, Direction::FromBackend) } else { state };
    (state as u8, now.wrapping_add(state.timeout_ms(cfg)))
}

/// The rewrite that turns a reply to the forward entry `f` back into the client's view: from the VIP and its port,
/// and for full-NAT to the client's address and port. `vip` and `client` in the packet's family (4 or 16 bytes).
#[inline(always)]
pub(super) fn reply_rewrite<'a, K: FamilyKey>(f: &Entry<K>, vip: &'a [u8], client: &'a [u8]) -> Rewrite<'a> {
    let fullnat = f.flags & F_FULLNAT != 0;
    Rewrite {
        src: Some(vip),
        sport: Some(f.key.dport()),
        dst: fullnat.then_some(client),
        dport: fullnat.then(|| f.key.sport()),
    }
}

impl Pipeline {
    /// A NAT or full-NAT reply from a backend: `None` when no reverse entry matches.
    pub(super) fn reply<K: FamilyKey, B: PacketBuf>(
        &mut self,
        cfg: &DataplaneConfig,
        in_port: PortId,
        pkt: &mut B,
        p: &Pkt,
        now: u32,
    ) -> Option<PResult<Verdict>> {
        let rh = if p.hash != 0 { p.hash } else { K::make(&p.src, &p.dst, p.sport, p.dport, p.proto).hash() };
        let table = K::table(&mut self.ct);
        let (slot, f) =
            table.lookup_reverse(rh, now, |f| reply_matches(cfg, f, &p.src, &p.dst, p.sport, p.dport, p.v4))?;
        if p.ttl <= 1 {
            return Some(Err(DropReason::TtlExpired));
        }
        let (state, expires) = reply_state(cfg, &f, p.proto, p.tcp_flags, now);
        table.touch(slot, state, expires);
        let vip = f.key.dst16();
        let client = f.key.src16();
        let (nh, held) = match self.next_hop(cfg, &client, p.v4) {
            Ok(x) => x,
            Err(r) => return Some(Err(r)),
        };
        match self.too_big(pkt, p, 0, nh.mtu, in_port) {
            Ok(None) => {}
            Ok(Some(v)) => return Some(Ok(v)),
            Err(r) => return Some(Err(r)),
        }
        let d = pkt.data_mut();
        nat::decrement_ttl(d, p.l3, p.v4);
        if !nat::apply(d, p.l3, p.l4, p.v4, &reply_rewrite(&f, p.addr(&vip), p.addr(&client))) {
            return Some(Err(ParseError::Truncated.into()));
        }
        set_macs(d, nh.mac, nh.src_mac);
        self.counters.replies += 1;
        Some(Ok(if held { Verdict::Resolve(nh.port) } else { Verdict::Tx(nh.port) }))
    }
}
