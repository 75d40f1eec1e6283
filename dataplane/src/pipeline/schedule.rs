//! New and tracked flows to VIPs: affinity and Maglev picks, full-NAT source ports, the per-mode rewrite and the
//! next hop.

use super::*;

/// The Maglev hash of a client address for a service with source affinity: every flow of the client picks alike.
pub(super) fn affinity_hash(client: &[u8; 16], service: u32) -> u64 {
    fmix64(u64::from_le_bytes(client[8..16].try_into().unwrap_or([0; 8])) ^ u64::from(service))
}

/// A SYN alone on a closing TCP entry: the client opens a new flow on the same 5-tuple.
#[inline(always)]
pub(super) fn new_syn(state: FlowState, tcp: bool, flags: u8) -> bool {
    tcp && state == FlowState::Closing && flags & (tcpf::SYN | tcpf::ACK) == tcpf::SYN
}

/// Whether a tracked entry still serves a client packet of service `svc`: `Some((next state, its backend))` while
/// the backend is up and still the service's and the packet does not open a new flow ([`new_syn`]); `None`: schedule
/// it anew.
#[inline(always)]
pub(super) fn keeps<'a, K>(
    cfg: &'a DataplaneConfig,
    svc: &Service,
    e: &Entry<K>,
    tcp: bool,
    flags: u8,
) -> Option<(FlowState, &'a Backend)> {
    let b = cfg.backend(e.value).filter(|b| b.state != BackendState::Down && cfg.serves(b, svc.id))?;
    let state = FlowState::from_u8(e.state);
    if new_syn(state, tcp, flags) {
        return None;
    }
    Some((if tcp { state.next_tcp(flags, Direction::FromClient) } else { state }, b))
}

/// The worker (of `nworkers`) that owns the flows of a client address (16-byte form): the rule the pipeline's
/// hand-off follows, exposed so generators and RSS set-up can agree with it.
pub fn owner_of_client(a: &[u8; 16], nworkers: u16) -> u16 {
    let (hi, lo) = a.split_at(8);
    let w = u64::from_le_bytes(hi.try_into().unwrap_or([0; 8]))
        ^ u64::from_le_bytes(lo.try_into().unwrap_or([0; 8])).rotate_left(29);
    ((u128::from(fmix64(w)) * u128::from(nworkers.max(1))) >> 64) as u16
}

pub(super) fn snat_addr(cfg: &DataplaneConfig, v4: bool) -> Option<[u8; 16]> {
    if v4 {
        cfg.snat_v4.map(mapped)
    } else {
        cfg.snat_v6
    }
}

/// The full-NAT source address of a service's flows (`None` for other modes).
pub(super) fn svc_snat(cfg: &DataplaneConfig, svc: &Service, v4: bool) -> Option<[u8; 16]> {
    if svc.mode == Mode::FullNat {
        snat_addr(cfg, v4)
    } else {
        None
    }
}

/// The tunnel a service's mode adds, if any.
pub(super) fn encap_of(svc: &Service) -> Option<Encap> {
    match svc.mode {
        Mode::Ipip => Some(Encap::Ipip),
        Mode::Gue => Some(Encap::Gue(svc.gue_port)),
        _ => None,
    }
}

/// A NAT or full-NAT flow's client-to-backend rewrite: the destination becomes the backend (and its port, when it
/// has one); with full-NAT the source becomes the appliance's address `snat` and the flow's port. A reply, and an
/// ICMP error's quoted packet, is this rewrite mirrored.
pub(super) fn forward_rewrite<'a>(
    svc: &Service,
    b: &'a Backend,
    snat: Option<&'a [u8; 16]>,
    snat_port: u16,
    p: &Pkt,
) -> Rewrite<'a> {
    Rewrite {
        dst: Some(p.addr(&b.addr)),
        dport: if b.port == 0 { None } else { Some(b.port) },
        src: snat.map(|a| p.addr(a)),
        sport: if svc.mode == Mode::FullNat { Some(snat_port) } else { None },
    }
}

/// The verdict of a packet bound for `nh`: sent, or held until its MAC resolves.
pub(super) fn sent(nh: NextHop, held: bool) -> Verdict {
    if held {
        Verdict::Resolve(nh.port)
    } else {
        Verdict::Tx(nh.port)
    }
}

pub(super) fn snat_owner(cfg: &DataplaneConfig, nworkers: u16, port: u16) -> u16 {
    let (lo, hi) = cfg.snat_ports;
    let span = (u32::from(hi.saturating_sub(lo)) + 1) / u32::from(nworkers.max(1));
    if span == 0 || port < lo {
        return 0;
    }
    ((u32::from(port - lo) / span) as u16).min(nworkers - 1)
}

/// The reply-direction key of a forward flow.
pub(super) fn reverse_key<K: FamilyKey>(
    cfg: &DataplaneConfig,
    svc: &Service,
    b: &Backend,
    fwd: &K,
    snat_port: u16,
) -> K {
    let bport = if b.port == 0 { fwd.dport() } else { b.port };
    if svc.mode == Mode::FullNat {
        let s = snat_addr(cfg, svc.v4).unwrap_or([0; 16]);
        K::make(&b.addr, &s, bport, snat_port, svc.proto)
    } else {
        K::make(&b.addr, &fwd.src16(), bport, fwd.sport(), svc.proto)
    }
}

/// A free full-NAT source port from this worker's share of the range: one whose reply key (backend, source address,
/// backend port, this port) is not in use. Probes are independent per flow — start and stride come from the flow's
/// hash — so collisions do not cluster the way a shared sequential cursor made them (that cursor failed 2 of 1 M
/// allocations at 24 % occupancy in the benchmark; independent probes fail with probability occupancy^32).
#[allow(clippy::too_many_arguments)]
pub(super) fn alloc_snat_port<K: FamilyKey>(
    table: &FlowTable<K>,
    cfg: &DataplaneConfig,
    svc: &Service,
    b: &Backend,
    fwd: &K,
    h: u64,
    worker: u16,
    nworkers: u16,
    now: u32,
) -> PResult<u16> {
    let (lo, hi) = cfg.snat_ports;
    let span = ((u64::from(hi.saturating_sub(lo)) + 1) / u64::from(nworkers.max(1))).max(1);
    let base = u64::from(lo) + span * u64::from(worker);
    let mut off = (h >> 16) % span;
    let step = if span > 1 { 1 + (h >> 40) % (span - 1) } else { 0 };
    for _ in 0..SNAT_PROBES {
        let port = (base + off) as u16;
        off = (off + step) % span;
        let rk = reverse_key::<K>(cfg, svc, b, fwd, port);
        let (src, dst) = (rk.src16(), rk.dst16());
        if table
            .lookup_reverse(rk.hash(), now, |f| reply_matches(cfg, f, &src, &dst, rk.sport(), rk.dport(), svc.v4))
            .is_none()
        {
            return Ok(port);
        }
    }
    Err(DropReason::SnatExhausted)
}

/// Full-NAT source ports tried per new flow.
pub(super) const SNAT_PROBES: usize = 32;

pub(super) fn tunnel_src(cfg: &DataplaneConfig, v4: bool, h: u64) -> Option<[u8; 16]> {
    if v4 {
        let (base, mask) = cfg.tunnel_v4?;
        let a = (u32::from_be_bytes(base) & !mask) | ((h as u32) & mask);
        Some(mapped(a.to_be_bytes()))
    } else {
        let (base, mask) = cfg.tunnel_v6?;
        let mut a = base;
        let low = (u32::from_be_bytes([a[12], a[13], a[14], a[15]]) & !mask) | ((h as u32) & mask);
        a[12..].copy_from_slice(&low.to_be_bytes());
        Some(a)
    }
}

impl Pipeline {
    /// Pick (or recall) the backend of a VIP flow. Returns the backend id and, for full-NAT, the source port.
    pub(super) fn schedule<K: FamilyKey>(
        &mut self,
        cfg: &DataplaneConfig,
        svc: &Service,
        p: &Pkt,
        now: u32,
    ) -> PResult<(u32, u16)> {
        let key = K::make(&p.src, &p.dst, p.sport, p.dport, p.proto);
        let h = if p.hash != 0 { p.hash } else { key.hash() };
        let tcp = p.proto == proto::TCP;
        match K::table(&mut self.ct).lookup(&key, h, now) {
            Lookup::Hit(slot, e) => {
                if let Some((next, _)) = keeps(cfg, svc, &e, tcp, p.tcp_flags) {
                    self.refresh_tracked(cfg, &key, slot, &e, next, now);
                    return Ok((e.value, e.aux));
                }
                K::table(&mut self.ct).remove_slot(slot);
                forget(&mut self.backend_stats, e.value);
                if !new_syn(FlowState::from_u8(e.state), tcp, p.tcp_flags) {
                    self.counters.rescheduled += 1;
                }
            }
            Lookup::Miss(Some(old)) => forget(&mut self.backend_stats, old.value),
            Lookup::Miss(None) => {}
        }
        // A new flow.
        if cfg.draining {
            return Err(DropReason::Draining);
        }
        if !self.admission.admit() {
            return Err(DropReason::Overload);
        }
        let bid = self.pick(cfg, svc, p, h, now)?;
        let b = cfg.backend(bid).ok_or(DropReason::NoBackend)?;
        self.count_new_flow(bid, svc.id);
        if tcp && p.tcp_flags & tcpf::RST != 0 {
            self.counters.untracked += 1;
            return if svc.mode == Mode::FullNat { Err(DropReason::FullNatNoState) } else { Ok((bid, 0)) };
        }
        if tcp && p.tcp_flags & (tcpf::SYN | tcpf::ACK) != tcpf::SYN {
            self.counters.midflow_pickups += 1;
        }
        let buckets = K::table_ref(&self.ct).buckets_of(h);
        let snat_port = self.record::<K>(cfg, svc, b, key, h, buckets, 0, p.proto, p.tcp_flags, now)?;
        Ok((bid, snat_port))
    }

    /// A new flow of service `svc_id` scheduled to backend `bid`: the new-flow counters.
    #[inline(always)]
    pub(super) fn count_new_flow(&mut self, bid: u32, svc_id: u32) {
        self.counters.new_flows += 1;
        self.count_objects(bid, svc_id, |c| c.new_flows += 1);
    }

    /// A client packet on a tracked entry that [`keeps`] it: the entry takes the next state and its timeout, and a
    /// changed state (established, closing) reaches the peers too, with its longer or shorter timeout.
    #[inline(always)]
    pub(super) fn refresh_tracked<K: FamilyKey>(
        &mut self,
        cfg: &DataplaneConfig,
        key: &K,
        slot: u32,
        e: &Entry<K>,
        next: FlowState,
        now: u32,
    ) {
        K::table(&mut self.ct).touch(slot, next as u8, now.wrapping_add(next.timeout_ms(cfg)));
        // Stored state bytes are always a state's own value (every write is `state as u8`).
        if next as u8 != e.state && e.flags & F_FULLNAT == 0 {
            if let Some(b) = cfg.backend(e.value) {
                self.replicate(key, b, next);
            }
        }
    }

    /// Record a new flow to backend `b` (and, for NAT modes, its reverse index); returns the full-NAT source port.
    /// A flow the table cannot hold is forwarded untracked, except in full-NAT, which needs its state. `reply_hash`:
    /// the reply key's hash when the caller has it already (a NAT flow: no full-NAT source port goes into it), or 0.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn record<K: FamilyKey>(
        &mut self,
        cfg: &DataplaneConfig,
        svc: &Service,
        b: &Backend,
        key: K,
        h: u64,
        buckets: [usize; 2],
        reply_hash: u64,
        proto: u8,
        tcp_flags: u8,
        now: u32,
    ) -> PResult<u16> {
        let bid = b.id;
        let state = FlowState::first(proto, tcp_flags);
        let expires = now.wrapping_add(state.timeout_ms(cfg));
        let fullnat = svc.mode == Mode::FullNat;
        let table = K::table(&mut self.ct);
        let snat_port = if fullnat {
            alloc_snat_port::<K>(table, cfg, svc, b, &key, h, self.worker, self.nworkers, now)?
        } else {
            0
        };
        let flags = if fullnat { F_FULLNAT } else { 0 };
        let fwd = Entry::new(expires, bid, snat_port, state as u8, flags);
        if !fullnat {
            self.replicate(&key, b, state);
        }
        let (table, stats) = (K::table(&mut self.ct), &mut self.backend_stats);
        match table.insert_with(key, h, buckets, now, fwd, evictable, |d| forget(stats, d.value)) {
            Ok(slot) => {
                if let Some(c) = self.backend_stats.get_mut(bid as usize) {
                    c.active_flows += 1;
                }
                if svc.mode.is_nat() {
                    let rh = match reply_hash {
                        0 => reverse_key::<K>(cfg, svc, b, &key, snat_port).hash(),
                        rh => rh,
                    };
                    if table.link_inserted(slot, rh).is_err() {
                        // Without its reverse index the flow cannot get replies: undo, forward untracked.
                        table.remove_slot(slot);
                        forget(&mut self.backend_stats, bid);
                        self.counters.untracked += 1;
                        if fullnat {
                            return Err(DropReason::SnatExhausted);
                        }
                    }
                }
            }
            Err(e) => {
                self.counters.untracked += 1;
                if e == InsertError::AddressesFull {
                    self.counters.untracked_destinations += 1;
                }
                if fullnat {
                    // A full-NAT flow without state would get a different source port on its next packet.
                    return Err(DropReason::SnatExhausted);
                }
            }
        }
        Ok(snat_port)
    }

    /// Affinity, then Maglev. Only active backends are picked.
    pub(super) fn pick(&mut self, cfg: &DataplaneConfig, svc: &Service, p: &Pkt, h: u64, now: u32) -> PResult<u32> {
        if svc.affinity_ms > 0 {
            let k = AffinityKey { client: p.src, service: svc.id };
            let ah = k.hash();
            if let Lookup::Hit(slot, e) = self.affinity.lookup(&k, ah, now) {
                if cfg.backend(e.value).is_some_and(|b| b.state == BackendState::Active && cfg.serves(b, svc.id)) {
                    self.affinity.touch(slot, e.state, now.wrapping_add(svc.affinity_ms));
                    return Ok(e.value);
                }
            }
            let bid = svc.maglev_backend(affinity_hash(&p.src, svc.id)).ok_or(DropReason::NoBackend)?;
            let e = Entry::new(now.wrapping_add(svc.affinity_ms), bid, 0, 1, 0);
            let _ = self.affinity.insert(k, ah, now, e, |_| crate::lb::conntrack::EVERY_SLOT);
            return Ok(bid);
        }
        svc.maglev_backend(h).ok_or(DropReason::NoBackend)
    }

    /// Rewrite and address a VIP packet toward its backend.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn act<B: PacketBuf>(
        &mut self,
        cfg: &DataplaneConfig,
        svc: &Service,
        b: &Backend,
        snat_port: u16,
        in_port: PortId,
        pkt: &mut B,
        p: &Pkt,
    ) -> PResult<Verdict> {
        let (nh, held) = self.route_to(cfg, b, p.v4)?;
        let encap = encap_of(svc);
        if let Some(v) = self.too_big(pkt, p, encap.map_or(0, |e| tunnel::overhead(e, p.v4)), nh.mtu, in_port)? {
            return Ok(v);
        }
        let ip_len = if p.v4 { crate::wire::ipv4::MIN_HEADER_LEN } else { crate::wire::ipv6::HEADER_LEN };
        if svc.mode == Mode::Nat && p.l4.is_some_and(|h| h.offset() == p.l3 + ip_len) {
            // IPv4 without options, IPv6 without extension headers: TTL or hop limit, address, port and checksums in
            // one pass (the same bytes).
            let d = pkt.data_mut();
            if !nat::dnat(d, p.l3, p.v4, p.proto, &b.addr, (b.port != 0).then_some(b.port)) {
                return Err(ParseError::Truncated.into());
            }
            set_macs(d, nh.mac, nh.src_mac);
            return Ok(sent(nh, held));
        }
        nat::decrement_ttl(pkt.data_mut(), p.l3, p.v4);
        match (svc.mode, encap) {
            (Mode::Nat | Mode::FullNat, _) => {
                let d = pkt.data_mut();
                let snat = svc_snat(cfg, svc, p.v4);
                if !nat::apply(d, p.l3, p.l4, p.v4, &forward_rewrite(svc, b, snat.as_ref(), snat_port, p)) {
                    return Err(ParseError::Truncated.into());
                }
                set_macs(d, nh.mac, nh.src_mac);
            }
            (_, Some(encap)) => self.encap_to(cfg, pkt, p, b, encap, &nh)?,
            (_, None) => set_macs(pkt.data_mut(), nh.mac, nh.src_mac),
        }
        Ok(sent(nh, held))
    }

    /// A backend's next hop: its own (resolved at build time), or the route's; `true` when its MAC is still unknown
    /// (the packet is held until it resolves).
    pub(super) fn route_to(&mut self, cfg: &DataplaneConfig, b: &Backend, v4: bool) -> PResult<(NextHop, bool)> {
        match b.next_hop {
            Some(nh) => Ok((nh, false)),
            None => self.next_hop(cfg, &b.addr, v4),
        }
    }

    /// The next hop toward `dst`; when its MAC is not known yet, one without a MAC (`true`), its address left in
    /// [`Pipeline::resolve`] for the slow path.
    pub(super) fn next_hop(&mut self, cfg: &DataplaneConfig, dst: &[u8; 16], v4: bool) -> PResult<(NextHop, bool)> {
        if let Some(nh) = cfg.route(dst, v4) {
            return Ok((nh, false));
        }
        let (port, via) = cfg.route_via(dst, v4).ok_or(DropReason::NoRoute)?;
        let itf = cfg.interface(port).ok_or(DropReason::NoRoute)?;
        self.resolve = Some((via, v4));
        Ok((NextHop { port, mac: [0; 6], src_mac: itf.mac, mtu: itf.mtu }, true))
    }

    /// A packet that would leave bigger than `mtu` with `over` bytes added: IPv4 without DF is dropped (the
    /// appliance does not fragment); otherwise the packet becomes a fragmentation-needed / packet-too-big message to
    /// its sender, out of `in_port` (`Some(verdict)`). `None`: it fits.
    pub(super) fn too_big<B: PacketBuf>(
        &mut self,
        pkt: &mut B,
        p: &Pkt,
        over: usize,
        mtu: u16,
        in_port: PortId,
    ) -> PResult<Option<Verdict>> {
        let ip_len = p.end - p.l3;
        if ip_len + over <= usize::from(mtu) {
            return Ok(None);
        }
        if p.v4 && !p.df {
            return Err(DropReason::TooBig);
        }
        // RFC 1191 §4 / RFC 4443 §3.2: the MTU the sender may use; never below the protocol minimum.
        let min = if p.v4 { 68 } else { 1280 };
        let advertised = (usize::from(mtu).saturating_sub(over)).max(min) as u16;
        if !ficmp::too_big(pkt, p.l3, p.v4, advertised) {
            return Err(DropReason::NoHeadroom);
        }
        self.counters.icmp_too_big_sent += 1;
        Ok(Some(Verdict::Tx(in_port)))
    }

    pub(super) fn encap_to<B: PacketBuf>(
        &self,
        cfg: &DataplaneConfig,
        pkt: &mut B,
        p: &Pkt,
        b: &Backend,
        encap: Encap,
        nh: &crate::snapshot::NextHop,
    ) -> PResult<()> {
        // `p.hash` is the 5-tuple hash once known (0 for traffic without ports).
        let h = if p.hash != 0 { p.hash } else { p.tuple_hash() };
        let src = tunnel_src(cfg, p.v4, h).ok_or(DropReason::NoRoute)?;
        if !tunnel::encapsulate(pkt, p.l3, p.v4, encap, p.addr(&src), p.addr(&b.addr), h) {
            return Err(DropReason::NoHeadroom);
        }
        set_macs(pkt.data_mut(), nh.mac, nh.src_mac);
        Ok(())
    }
}
