//! The established fast path, both families: most packets an appliance forwards are client packets of flows it
//! already tracks, and they need little of the general machinery. Stage 1 ([`Pipeline::parse`]) tries
//! [`Pipeline::parse_fast`] first; stage 3 tries [`Pipeline::finish_fast`], which either forwards the packet or
//! changes nothing and hands it to the general path ([`Fast::pkt`] builds the general path's view of it without
//! parsing again).
//!
//! What qualifies, decided from the bytes and the snapshot alone: an untagged frame; IPv4 with a header without
//! options, not a fragment, its header checksum good, or IPv6 with TCP or UDP right after the fixed header; TTL or
//! hop limit above 1; TCP or UDP with a sound header; to a service with its own port in NAT or DSR-L2 mode, owned by
//! this worker. What finishes fast besides: a live tracked entry that [`keeps`] the packet, a backend whose next hop
//! is resolved, and a packet that fits that hop's MTU. A packet whose key is in no slot opens a new flow there too
//! ([`Pipeline::finish_new`]: no source affinity, not draining, no TCP reset); an expired entry, a backend gone and
//! a SYN on a closing flow are the general path's.
//!
//! Replies take a fast path of their own: a packet that qualifies as above but goes to no VIP address at all, owned
//! by this worker, is a reply candidate ([`Pipeline::reply_key`]); its 5-tuple's reverse-index bucket is prefetched in
//! stage 1 and the forward entries it points to in stage 2. [`Pipeline::finish_reply`] translates it back to the
//! client when a reverse entry matches, the client's next hop is resolved and the packet fits that hop's MTU.
//!
//! The result is the general path's, byte for byte and counter for counter: the tests in `tests/fast_path.rs` run
//! the same packets through both and compare buffers, verdicts, counters, table statistics and the flows listed.

use super::*;
use crate::lb::conntrack::NO_SLOT;

/// [`Fast::slot`] of a packet whose signature stage 2 found in neither bucket: a new flow, unless an earlier packet
/// of the burst recorded it since, which [`FlowTable::absent_in`] tells before the lookup is skipped. No table has
/// this many slots.
const MISSED: u32 = NO_SLOT - 1;

/// IP header offset in a fast packet (untagged Ethernet).
const L3: usize = crate::wire::ethernet::HEADER_LEN;

/// What differs between the families on the fast path.
pub(super) trait FastFamily: FamilyKey {
    /// IPv4?
    const V4: bool;
    /// Transport header offset (IPv4 without options; IPv6 without extension headers).
    const L4: usize;
    /// Offset of the TTL or hop limit.
    const TTL_AT: usize;
    /// Write stage 1's record of a fast packet of this family to `out` (in place: a record is never copied).
    fn stage1(out: &mut Stage1, f: Fast<Self>)
    where
        Self: Sized;
    /// Write stage 1's record of a fast reply candidate of this family to `out`.
    fn reply_stage1(out: &mut Stage1, f: Fast<Self>)
    where
        Self: Sized;
}

impl FastFamily for KeyV4 {
    const V4: bool = true;
    const L4: usize = L3 + crate::wire::ipv4::MIN_HEADER_LEN;
    const TTL_AT: usize = L3 + 8;
    #[inline(always)]
    fn stage1(out: &mut Stage1, f: Fast<Self>) {
        *out = Stage1::Fast(f);
    }
    #[inline(always)]
    fn reply_stage1(out: &mut Stage1, f: Fast<Self>) {
        *out = Stage1::Reply(f);
    }
}

impl FastFamily for KeyV6 {
    const V4: bool = false;
    const L4: usize = L3 + crate::wire::ipv6::HEADER_LEN;
    const TTL_AT: usize = L3 + 7;
    #[inline(always)]
    fn stage1(out: &mut Stage1, f: Fast<Self>) {
        *out = Stage1::Fast6(f);
    }
    #[inline(always)]
    fn reply_stage1(out: &mut Stage1, f: Fast<Self>) {
        *out = Stage1::Reply6(f);
    }
}

/// The flow-table slot a new flow's insert is expected to displace, found at stage 2 ([`Pipeline::prefetch_entries`])
/// and kept by the worker's window until [`Pipeline::prefetch_link`]: a slot number and its family in one word
/// (the top bit set for IPv6), or [`Victim::NONE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Victim(u32);

impl Victim {
    /// No displaced entry expected (or none worth fetching).
    pub const NONE: Victim = Victim(u32::MAX);
    const V6: u32 = 1 << 31;

    /// Slot `slot` of family `K`'s table. A slot number the 31 low bits cannot hold is no victim, nor is the
    /// largest they can (with the IPv6 bit it would read as `NONE`).
    #[inline(always)]
    fn of<K: FastFamily>(slot: u32) -> Victim {
        if slot >= Self::V6 - 1 {
            return Self::NONE;
        }
        Victim(if K::V4 { slot } else { slot | Self::V6 })
    }

    /// The slot and whether it is IPv4's.
    #[inline(always)]
    pub(super) fn get(self) -> Option<(u32, bool)> {
        (self != Self::NONE).then_some((self.0 & !Self::V6, self.0 & Self::V6 == 0))
    }
}

impl Default for Victim {
    fn default() -> Self {
        Self::NONE
    }
}

/// What stage 1 learnt of a packet the fast path may finish.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fast<K> {
    key: K,
    hash: u64,
    /// The flow table's two candidate buckets for `hash` ([`FlowTable::buckets_of`]), computed once (unused by a
    /// reply candidate, which is found through the reverse index).
    buckets: [usize; 2],
    /// Index of the service in the snapshot (unused by a reply candidate).
    svc: u32,
    /// What stage 2 saw: the first slot whose signature matched ([`Ahead::Match`]), where stage 3 looks first
    /// ([`FlowTable::live_at`]), or [`MISSED`] when none did; [`NO_SLOT`] until then, and for a reply candidate.
    slot: u32,
    /// End of the IP packet in the buffer.
    end: u16,
    tcp_flags: u8,
    df: bool,
    /// The hash of a new NAT flow's reply key, as stage 2 found it for a table beyond the cache
    /// ([`Pipeline::prefetch_new_nat`]), so that stage 3 computes it once; 0 when stage 2 did not (or the hash is 0,
    /// which stage 3 then computes again).
    reply_hash: u64,
}

impl<K: FastFamily> Fast<K> {
    /// The general path's view of the packet, as [`parse_v4`] or [`parse_v6`] and [`Pipeline::parse`] make it, with
    /// `class` what [`DataplaneConfig::classify`] makes of it.
    pub(super) fn pkt(&self, data: &[u8], class: Classified) -> Pkt {
        let end = usize::from(self.end);
        let proto = self.key.proto();
        Pkt {
            l3: L3,
            v4: K::V4,
            l4: L4Header::check(data, K::L4, end, proto),
            end,
            proto,
            src: self.key.src16(),
            dst: self.key.dst16(),
            sport: self.key.sport(),
            dport: self.key.dport(),
            tcp_flags: self.tcp_flags,
            icmp_type: 0,
            frag: Frag::No,
            df: self.df,
            ttl: data.get(K::TTL_AT).copied().unwrap_or(0),
            hash: self.hash,
            class,
        }
    }
}

/// The transport checks of the general parser for a TCP or UDP header at `l4` of a segment `seg` bytes long: the
/// TCP flags (0 for UDP), or `None` when the general path must look (and count) instead.
#[inline(always)]
fn transport(d: &[u8], l4: usize, seg: usize, proto: u8) -> Option<u8> {
    match proto {
        proto::TCP => {
            let t = d.get(l4..l4 + crate::wire::tcp::MIN_HEADER_LEN)?;
            let hl = usize::from(t[12] >> 4) * 4;
            (seg >= hl && hl >= crate::wire::tcp::MIN_HEADER_LEN).then_some(t[13])
        }
        proto::UDP => {
            let l = usize::from(get_u16(d.get(l4..l4 + crate::wire::udp::HEADER_LEN)?, 4));
            (l >= crate::wire::udp::HEADER_LEN && l <= seg).then_some(0)
        }
        _ => None,
    }
}

/// Trim a committed fast packet's buffer to the end of its IP packet (Ethernet padding must not travel into a longer
/// rewrite); the buffer's length before, for the byte counters.
#[inline(always)]
fn trim_to<B: PacketBuf>(pkt: &mut B, end: usize) -> u64 {
    let bytes = pkt.data_len();
    if end < bytes {
        pkt.set_len(end);
    }
    bytes as u64
}

/// The rewrite of a committed fast packet of a NAT or DSR-L2 service toward backend `b` by next hop `nh`: address,
/// port, checksums and TTL (NAT) or TTL alone (DSR-L2), then the MACs. False for a buffer too short for it.
#[inline(always)]
fn rewrite_to<K: FastFamily>(d: &mut [u8], mode: Mode, proto: u8, b: &Backend, nh: &NextHop) -> bool {
    let done = match (mode, &b.dnat) {
        (Mode::Nat, Some(r)) => nat::dnat_by(d, L3, K::V4, proto, r),
        (Mode::Nat, None) => nat::dnat(d, L3, K::V4, proto, &b.addr, (b.port != 0).then_some(b.port)),
        _ => nat::decrement_ttl(d, L3, K::V4),
    };
    if done {
        set_macs(d, nh.mac, nh.src_mac);
    }
    done
}

impl Pipeline {
    /// Stage 1 for a packet the fast path may finish (see the module documentation): its key, hashed, the meta lines
    /// it will read prefetched, its record written to `out`. `None`: `out` untouched, parse it in full.
    #[inline(always)]
    pub(super) fn parse_fast(&self, cfg: &DataplaneConfig, d: &[u8], out: &mut Stage1) -> Option<()> {
        if !self.fast_path {
            return None;
        }
        match get_u16(d.get(..L3)?, 12) {
            ethertype::IPV4 => self.parse_fast_v4(cfg, d, out),
            ethertype::IPV6 => self.parse_fast_v6(cfg, d, out),
            _ => None,
        }
    }

    #[inline(always)]
    fn parse_fast_v4(&self, cfg: &DataplaneConfig, d: &[u8], out: &mut Stage1) -> Option<()> {
        const L4: usize = <KeyV4 as FastFamily>::L4;
        let h = d.get(..L4)?;
        if h[L3] != 0x45 {
            return None;
        }
        let total = usize::from(get_u16(h, L3 + 2));
        let end = L3 + total;
        // Not a fragment (MF clear, offset 0), TTL above 1 (the general path counts the expiry).
        if end > d.len() || get_u16(h, L3 + 6) & 0x3fff != 0 || h[L3 + 8] <= 1 {
            return None;
        }
        let seg = total.checked_sub(crate::wire::ipv4::MIN_HEADER_LEN)?;
        let proto = h[L3 + 9];
        let tcp_flags = transport(d, L4, seg, proto)?;
        if !checksum::header_ok_v4(h[L3..L4].try_into().ok()?) {
            return None;
        }
        let dst = [h[L3 + 16], h[L3 + 17], h[L3 + 18], h[L3 + 19]];
        let dport = get_u16(d, L4 + 2);
        let key =
            KeyV4 { src: [h[L3 + 12], h[L3 + 13], h[L3 + 14], h[L3 + 15]], dst, sport: get_u16(d, L4), dport, proto };
        let df = get_u16(h, L3 + 6) & 0x4000 != 0;
        let Some(si) = cfg.service_v4(dst, proto, dport) else {
            return self.reply_key(cfg, key, end, tcp_flags, df, out);
        };
        if cfg.snat_v4 == Some(dst) {
            return None;
        }
        self.fast_key(cfg, key, si, end, tcp_flags, df, out)
    }

    #[inline(always)]
    fn parse_fast_v6(&self, cfg: &DataplaneConfig, d: &[u8], out: &mut Stage1) -> Option<()> {
        const L4: usize = <KeyV6 as FastFamily>::L4;
        let h = d.get(..L4)?;
        let seg = usize::from(get_u16(h, L3 + 4));
        let end = L4 + seg;
        // Version 6, TCP or UDP right after the fixed header (no extension headers), hop limit above 1.
        if h[L3] >> 4 != 6 || end > d.len() || h[L3 + 7] <= 1 {
            return None;
        }
        let proto = h[L3 + 6];
        let tcp_flags = transport(d, L4, seg, proto)?;
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&h[L3 + 24..L3 + 40]);
        let dport = get_u16(d, L4 + 2);
        let mut src = [0u8; 16];
        src.copy_from_slice(&h[L3 + 8..L3 + 24]);
        let Some(si) = cfg.service_v6(&dst, proto, dport) else {
            if crate::lb::flow::is_mapped(&src) || crate::lb::flow::is_mapped(&dst) {
                return None; // dropped by the general path
            }
            let key = KeyV6 { src, dst, sport: get_u16(d, L4), dport, proto };
            return self.reply_key(cfg, key, end, tcp_flags, true, out);
        };
        if cfg.snat_v6 == Some(dst) {
            return None;
        }
        if crate::lb::flow::is_mapped(&src) || crate::lb::flow::is_mapped(&dst) {
            return None; // dropped by the general path
        }
        let key = KeyV6 { src, dst, sport: get_u16(d, L4), dport, proto };
        self.fast_key(cfg, key, si, end, tcp_flags, true, out)
    }

    /// The checks both families share once the key is known: the service's mode, the worker that owns the flow; a SYN
    /// the saturated worker refuses ([`Pipeline::refuses`]) is dropped here, before its lookup; then the hash and the
    /// prefetch of its meta lines.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn fast_key<K: FastFamily>(
        &self,
        cfg: &DataplaneConfig,
        key: K,
        si: u32,
        end: usize,
        tcp_flags: u8,
        df: bool,
        out: &mut Stage1,
    ) -> Option<()> {
        if !matches!(cfg.services.get(si as usize)?.mode, Mode::Nat | Mode::DsrL2)
            || (self.nworkers > 1 && owner_of_client(&key.src16(), self.nworkers) != self.worker)
        {
            return None;
        }
        if self.refuses(key.proto(), tcp_flags) {
            *out = Stage1::Full(Err(DropReason::Overload.into()));
            return Some(());
        }
        let hash = key.hash();
        let t = K::table_ref(&self.ct);
        let buckets = t.buckets_of(hash);
        t.prefetch_sigs_in(buckets);
        let f = Fast { key, hash, buckets, svc: si, slot: NO_SLOT, end: end as u16, tcp_flags, df, reply_hash: 0 };
        K::stage1(out, f);
        Some(())
    }

    /// Stage 2 of a fast packet: the entries its signature matches (the first one's slot kept in its record), or,
    /// for a lookup that will miss in a table beyond the cache, what recording the new flow will touch (see
    /// [`Pipeline::prefetch_new_nat`]).
    #[inline(always)]
    pub(super) fn prefetch_fast<K: FastFamily>(&self, cfg: &DataplaneConfig, f: &mut Fast<K>) -> Victim {
        let t = K::table_ref(&self.ct);
        match t.prefetch_entries_in(f.hash, f.buckets) {
            Ahead::Match(slot) => {
                f.slot = slot;
                Victim::NONE
            }
            Ahead::Miss(victim) => {
                f.slot = MISSED;
                if t.beyond_cache() {
                    self.prefetch_new_nat(cfg, f, victim)
                } else {
                    Victim::NONE
                }
            }
        }
    }

    /// Stage 2 of a fast packet whose lookup will miss, a new flow: to a NAT service, its reply is linked in the
    /// reverse index once Maglev has chosen the backend. The same choice made now fetches the index buckets the link
    /// will write. (Full-NAT's reply key needs the source port the flow is given later; affinity's choice reads a
    /// table of its own.) The reply key's hash is kept in the record ([`Fast::reply_hash`]): stage 3 runs in the same
    /// burst, under the same snapshot, and would only compute it again.
    ///
    /// The entry the insert will displace (`victim`, whose slot the table prefetched) is the answer: its reverse
    /// link, which the insert clears, is fetched two packets later ([`Pipeline::prefetch_link`]). Only for a new NAT
    /// flow: where services are DSR-L2, displaced entries have no link, and reading the slot to learn that would
    /// only wait for memory.
    #[inline(never)]
    fn prefetch_new_nat<K: FastFamily>(&self, cfg: &DataplaneConfig, f: &mut Fast<K>, victim: u32) -> Victim {
        let Some(svc) = cfg.services.get(f.svc as usize) else { return Victim::NONE };
        if svc.mode != Mode::Nat || svc.affinity_ms > 0 {
            return Victim::NONE;
        }
        if let Some(b) = svc.maglev_backend(f.hash).and_then(|id| cfg.backend(id)) {
            f.reply_hash = reverse_key::<K>(cfg, svc, b, &f.key, 0).hash();
            K::table_ref(&self.ct).prefetch_reverse(f.reply_hash);
        }
        Victim::of::<K>(victim)
    }

    /// Stage 3 of a fast packet (`reply` false) or a reply candidate (`reply` true, a constant at each call site):
    /// finished fast, or by the general path from the view [`Fast::pkt`] gives it.
    #[inline(always)]
    pub(super) fn fast_or_general<K: FastFamily, B: PacketBuf>(
        &mut self,
        cfg: &DataplaneConfig,
        in_port: PortId,
        pkt: &mut B,
        now: u32,
        f: &Fast<K>,
        reply: bool,
    ) -> Verdict {
        let done = if reply { self.finish_reply(cfg, pkt, now, f) } else { self.finish_fast(cfg, pkt, now, f) };
        if let Some(v) = done {
            return v;
        }
        let p = f.pkt(pkt.data(), if reply { Classified::NotVip } else { Classified::Service(f.svc) });
        self.process_inner(cfg, in_port, pkt, now, &p).unwrap_or_else(Verdict::Drop)
    }

    /// Forward a fast packet, or change nothing and return `None` for the general path. The entry is looked for
    /// first in the slot stage 2 saw its signature in, then in its buckets.
    #[inline(always)]
    pub(super) fn finish_fast<K: FastFamily, B: PacketBuf>(
        &mut self,
        cfg: &DataplaneConfig,
        pkt: &mut B,
        now: u32,
        f: &Fast<K>,
    ) -> Option<Verdict> {
        let svc = cfg.services.get(f.svc as usize)?;
        let t = K::table_ref(&self.ct);
        let mut found = t.live_at(&f.key, f.hash, f.slot, now);
        if found.is_none() {
            if f.slot == MISSED && t.absent_in(&f.key, f.hash, f.buckets, now) {
                return self.finish_new(cfg, svc, pkt, now, f, true);
            }
            found = t.find_live_in(&f.key, f.hash, f.buckets, now);
        }
        let Some((slot, e)) = found else {
            return self.finish_new(cfg, svc, pkt, now, f, false);
        };
        let (next, b) = keeps(cfg, svc, &e, f.key.proto() == proto::TCP, f.tcp_flags)?;
        let nh = b.next_hop?;
        let end = usize::from(f.end);
        if end - L3 > usize::from(nh.mtu) {
            return None;
        }
        // Committed: from here the packet is forwarded, as the general path would.
        let bytes = trim_to(pkt, end);
        if !rewrite_to::<K>(pkt.data_mut(), svc.mode, f.key.proto(), b, &nh) {
            // Unreachable for a buffer stage 1 accepted; counted as the general path counts a short buffer.
            return Some(Verdict::Drop(ParseError::Truncated.into()));
        }
        K::table(&mut self.ct).count_hit();
        self.counters.fast_path += 1;
        self.refresh_tracked(cfg, &f.key, slot, &e, next, now);
        self.count_unowned(cfg, &f.key);
        self.count_forwarded(e.value, svc.id, bytes);
        Some(Verdict::Tx(nh.port))
    }

    /// A packet to a VIP that another appliance owns (VRRP backup) is forwarded all the same, and counted.
    #[inline(always)]
    fn count_unowned<K: FastFamily>(&mut self, cfg: &DataplaneConfig, key: &K) {
        if !cfg.unowned_vips.is_empty() && cfg.unowned_vips.contains(&key.dst16()) {
            self.counters.not_owner += 1;
        }
    }

    /// Record and forward the first packet of a new flow of a fast packet (its key in no slot), as the general path
    /// would: a NAT or DSR-L2 service without source affinity, not draining, the packet no TCP reset, Maglev's backend
    /// resolved and the packet within its next hop's MTU. Otherwise change nothing and return `None`. The new-flow
    /// limit is asked last, once nothing else can send the packet to the general path, so a token is spent once.
    /// `absent`: the caller has just seen [`FlowTable::absent_in`] answer true.
    #[inline(never)]
    fn finish_new<K: FastFamily, B: PacketBuf>(
        &mut self,
        cfg: &DataplaneConfig,
        svc: &Service,
        pkt: &mut B,
        now: u32,
        f: &Fast<K>,
        absent: bool,
    ) -> Option<Verdict> {
        if !absent && !K::table_ref(&self.ct).absent_in(&f.key, f.hash, f.buckets, now) {
            return None;
        }
        let proto = f.key.proto();
        let tcp = proto == proto::TCP;
        if svc.affinity_ms > 0 || cfg.draining || (tcp && f.tcp_flags & tcpf::RST != 0) {
            return None;
        }
        let b = cfg.backend(svc.maglev_backend(f.hash)?)?;
        let nh = b.next_hop?;
        let end = usize::from(f.end);
        if end - L3 > usize::from(nh.mtu) {
            return None;
        }
        // Committed: from here the packet is the general path's new flow, counted as it counts one.
        let bytes = trim_to(pkt, end);
        K::table(&mut self.ct).count_miss();
        self.count_unowned(cfg, &f.key);
        if !self.admission.admit() {
            return Some(Verdict::Drop(DropReason::Overload));
        }
        self.count_new_forwarded(b.id, svc.id, bytes);
        if tcp && f.tcp_flags & (tcpf::SYN | tcpf::ACK) != tcpf::SYN {
            self.counters.midflow_pickups += 1;
        }
        // NAT and DSR-L2 flows are forwarded even when the table cannot hold them (counted as untracked).
        let _ = self.record::<K>(cfg, svc, b, f.key, f.hash, f.buckets, f.reply_hash, proto, f.tcp_flags, now);
        if !rewrite_to::<K>(pkt.data_mut(), svc.mode, proto, b, &nh) {
            // Unreachable for a buffer stage 1 accepted; counted as the general path counts a short buffer.
            return Some(Verdict::Drop(ParseError::Truncated.into()));
        }
        self.counters.fast_path += 1;
        Some(Verdict::Tx(nh.port))
    }

    /// Stage 1 of a packet to no VIP that may be a backend's reply: to an address that is no VIP's at all, owned by
    /// this worker as the general path decides ([`Pipeline::owner`]: the full-NAT source port's worker, or the
    /// client's). The 5-tuple's hash is the reverse index's key; its bucket is prefetched and the record written to
    /// `out`. `None`: `out` untouched, parse it in full.
    #[inline(never)]
    fn reply_key<K: FastFamily>(
        &self,
        cfg: &DataplaneConfig,
        key: K,
        end: usize,
        tcp_flags: u8,
        df: bool,
        out: &mut Stage1,
    ) -> Option<()> {
        let dst = key.dst16();
        if cfg.is_vip(&dst) {
            return None;
        }
        if self.nworkers > 1 {
            let owner = if snat_addr(cfg, K::V4) == Some(dst) {
                snat_owner(cfg, self.nworkers, key.dport())
            } else {
                owner_of_client(&dst, self.nworkers)
            };
            if owner != self.worker {
                return None;
            }
        }
        let hash = key.hash();
        K::table_ref(&self.ct).prefetch_reverse(hash);
        let (svc, slot) = (u32::MAX, NO_SLOT);
        let f = Fast { key, hash, buckets: [0; 2], svc, slot, end: end as u16, tcp_flags, df, reply_hash: 0 };
        K::reply_stage1(out, f);
        Some(())
    }

    /// Stage 2 of a reply candidate: the forward entries its reverse-index bucket points to.
    #[inline(always)]
    pub(super) fn prefetch_reply<K: FastFamily>(&self, f: &Fast<K>) {
        K::table_ref(&self.ct).prefetch_reverse_entries(f.hash);
    }

    /// Translate a backend's reply back to its client, as [`Pipeline::reply`] does, when its flow is tracked, the
    /// client's next hop resolved and the packet fits that hop's MTU; otherwise change nothing and return `None`.
    #[inline(never)]
    fn finish_reply<K: FastFamily, B: PacketBuf>(
        &mut self,
        cfg: &DataplaneConfig,
        pkt: &mut B,
        now: u32,
        f: &Fast<K>,
    ) -> Option<Verdict> {
        let (src, dst, sport, dport) = (f.key.src16(), f.key.dst16(), f.key.sport(), f.key.dport());
        let (slot, e) = K::table_ref(&self.ct)
            .lookup_reverse(f.hash, now, |e| reply_matches(cfg, e, &src, &dst, sport, dport, K::V4))?;
        let client = e.key.src16();
        let nh = cfg.route(&client, K::V4)?;
        let end = usize::from(f.end);
        if end - L3 > usize::from(nh.mtu) {
            return None;
        }
        // Committed: from here the reply is forwarded, as the general path would.
        if end < pkt.data_len() {
            pkt.set_len(end);
        }
        let proto = f.key.proto();
        let (state, expires) = reply_state(cfg, &e, proto, f.tcp_flags, now);
        K::table(&mut self.ct).touch(slot, state, expires);
        let vip = e.key.dst16();
        let at = if K::V4 { 12 } else { 0 };
        let d = pkt.data_mut();
        if !nat::translate(d, L3, K::V4, proto, &reply_rewrite(&e, &vip[at..], &client[at..])) {
            // Unreachable for a buffer stage 1 accepted; counted as the general path counts a short buffer.
            return Some(Verdict::Drop(ParseError::Truncated.into()));
        }
        set_macs(d, nh.mac, nh.src_mac);
        self.counters.replies += 1;
        self.counters.fast_path += 1;
        Some(Verdict::Tx(nh.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A victim keeps its slot and family through the window's word; a slot the family bit would hide is none.
    #[test]
    fn a_victim_keeps_slot_and_family() {
        for slot in [0u32, 1, 7, 12_345, (1 << 31) - 2] {
            assert_eq!(Victim::of::<KeyV4>(slot).get(), Some((slot, true)));
            assert_eq!(Victim::of::<KeyV6>(slot).get(), Some((slot, false)));
        }
        for slot in [(1u32 << 31) - 1, 1 << 31, NO_SLOT - 1, NO_SLOT] {
            assert_eq!(Victim::of::<KeyV4>(slot), Victim::NONE);
            assert_eq!(Victim::of::<KeyV6>(slot), Victim::NONE);
        }
        assert_eq!(Victim::NONE.get(), None);
        assert_eq!(Victim::default(), Victim::NONE);
    }
}
