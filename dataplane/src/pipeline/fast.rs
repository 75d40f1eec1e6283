//! The established IPv4 fast path: most packets an appliance forwards are client packets of flows it already tracks,
//! and they need little of the general machinery. Stage 1 ([`Pipeline::parse`]) tries [`Pipeline::parse_fast`]
//! first; stage 3 tries [`Pipeline::finish_fast`], which either forwards the packet or changes nothing and hands it
//! to the general path ([`Fast::pkt`] builds the general path's view of it without parsing again).
//!
//! What qualifies, decided from the bytes and the snapshot alone: an untagged IPv4 frame, header without options,
//! not a fragment, header checksum good, TTL above 1, TCP or UDP with a sound header, to an IPv4 service with its own
//! port in NAT or DSR-L2 mode, owned by this worker. What finishes fast besides: a live tracked entry that
//! [`keeps`] the packet, a backend whose next hop is resolved, and a packet that fits that hop's MTU.
//!
//! The result is the general path's, byte for byte and counter for counter: the test
//! `fast_path_matches_the_general_path` runs the same packets through both and compares buffers, verdicts,
//! counters, table statistics and the flows listed.

use super::*;

/// IPv4 header offset in a fast packet (untagged Ethernet).
const L3: usize = crate::wire::ethernet::HEADER_LEN;
/// Transport header offset (IPv4 without options).
const L4: usize = L3 + crate::wire::ipv4::MIN_HEADER_LEN;

/// What stage 1 learnt of a packet the fast path may finish.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fast {
    key: KeyV4,
    hash: u64,
    /// Index of the service in the snapshot.
    svc: u32,
    /// End of the IP packet in the buffer.
    end: u16,
    tcp_flags: u8,
    df: bool,
}

impl Fast {
    /// The general path's view of the packet, as [`parse_v4`] and [`Pipeline::parse`] make it.
    pub(super) fn pkt(&self, data: &[u8]) -> Pkt {
        let end = usize::from(self.end);
        Pkt {
            l3: L3,
            v4: true,
            l4: L4Header::check(data, L4, end, self.key.proto),
            end,
            proto: self.key.proto,
            src: mapped(self.key.src),
            dst: mapped(self.key.dst),
            sport: self.key.sport,
            dport: self.key.dport,
            tcp_flags: self.tcp_flags,
            icmp_type: 0,
            frag: Frag::No,
            df: self.df,
            ttl: data.get(L3 + 8).copied().unwrap_or(0),
            hash: self.hash,
            class: Classified::Service(self.svc),
        }
    }
}

impl Pipeline {
    /// Stage 1 for a packet the fast path may finish (see the module documentation): its key, hashed, the meta lines
    /// it will read prefetched. `None`: parse it in full.
    #[inline(always)]
    pub(super) fn parse_fast(&self, cfg: &DataplaneConfig, d: &[u8]) -> Option<Fast> {
        if !self.fast_path {
            return None;
        }
        let h = d.get(..L4 + crate::wire::udp::HEADER_LEN)?;
        if get_u16(h, 12) != ethertype::IPV4 || h[L3] != 0x45 {
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
        let tcp_flags = match proto {
            proto::TCP => {
                let t = d.get(L4..L4 + crate::wire::tcp::MIN_HEADER_LEN)?;
                let hl = usize::from(t[12] >> 4) * 4;
                if seg < hl || hl < crate::wire::tcp::MIN_HEADER_LEN {
                    return None;
                }
                t[13]
            }
            proto::UDP => {
                let l = usize::from(get_u16(h, L4 + 4));
                if l < crate::wire::udp::HEADER_LEN || l > seg {
                    return None;
                }
                0
            }
            _ => return None,
        };
        if checksum::checksum(&h[L3..L4]) != 0 {
            return None;
        }
        let dst = [h[L3 + 16], h[L3 + 17], h[L3 + 18], h[L3 + 19]];
        let dport = get_u16(h, L4 + 2);
        let si = cfg.service_v4(dst, proto, dport)?;
        if !matches!(cfg.services.get(si as usize)?.mode, Mode::Nat | Mode::DsrL2) || cfg.snat_v4 == Some(dst) {
            return None;
        }
        let src = [h[L3 + 12], h[L3 + 13], h[L3 + 14], h[L3 + 15]];
        if self.nworkers > 1 && owner_of_client(&mapped(src), self.nworkers) != self.worker {
            return None;
        }
        let key = KeyV4 { src, dst, sport: get_u16(h, L4), dport, proto };
        let hash = key.hash();
        self.ct.v4.prefetch_sigs(hash);
        let df = get_u16(h, L3 + 6) & 0x4000 != 0;
        Some(Fast { key, hash, svc: si, end: end as u16, tcp_flags, df })
    }

    /// Stage 2 of a fast packet.
    #[inline(always)]
    pub(super) fn prefetch_fast(&self, f: &Fast) {
        self.ct.v4.prefetch_entries(f.hash);
    }

    /// Stage 3 of a fast packet: forward it, or change nothing and return `None` for the general path.
    #[inline(always)]
    pub(super) fn finish_fast<B: PacketBuf>(
        &mut self,
        cfg: &DataplaneConfig,
        pkt: &mut B,
        now: u32,
        f: &Fast,
    ) -> Option<Verdict> {
        let svc = cfg.services.get(f.svc as usize)?;
        let (slot, e) = self.ct.v4.find_live(&f.key, f.hash, now)?;
        let next = keeps(cfg, svc, &e, f.key.proto == proto::TCP, f.tcp_flags)?;
        let b = cfg.backend(e.value)?;
        let nh = b.next_hop?;
        let end = usize::from(f.end);
        if end - L3 > usize::from(nh.mtu) {
            return None;
        }
        // Committed: from here the packet is forwarded, as the general path would.
        let bytes = pkt.data().len() as u64;
        if end < pkt.data().len() {
            pkt.set_len(end);
        }
        let d = pkt.data_mut();
        let done = match svc.mode {
            Mode::Nat => {
                let a = [b.addr[12], b.addr[13], b.addr[14], b.addr[15]];
                nat::dnat_v4(d, L3, f.key.proto, a, (b.port != 0).then_some(b.port))
            }
            _ => nat::decrement_ttl(d, L3, true),
        };
        if !done {
            // Unreachable for a buffer stage 1 accepted; counted as the general path counts a short buffer.
            return Some(Verdict::Drop(ParseError::Truncated.into()));
        }
        set_macs(d, nh.mac, nh.src_mac);
        self.ct.v4.count_hit();
        self.counters.fast_path += 1;
        self.refresh_tracked(cfg, &f.key, slot, &e, next, now);
        if !cfg.unowned_vips.is_empty() && cfg.unowned_vips.contains(&mapped(f.key.dst)) {
            self.counters.not_owner += 1;
        }
        for c in [self.backend_stats.get_mut(e.value as usize), self.service_stats.get_mut(svc.id as usize)]
            .into_iter()
            .flatten()
        {
            c.packets += 1;
            c.bytes += bytes;
        }
        Some(Verdict::Tx(nh.port))
    }
}
