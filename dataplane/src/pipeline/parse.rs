//! Parsing, once per packet: L2, IPv4 (options, fragments) or IPv6 (extension headers), the transport header; what
//! the packet is decided against the snapshot of the burst.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Frag {
    No,
    First(u32),
    Later(u32),
}

/// What parsing found, by value (no borrow of the buffer).
#[derive(Debug, Clone, Copy)]
pub(super) struct Pkt {
    pub(super) l3: usize,
    pub(super) v4: bool,
    /// The TCP, UDP or ICMP header, proven whole (fixed part) by the parser; `None` in later fragments and for other
    /// protocols. Rewrites take this token, never a bare offset.
    pub(super) l4: Option<L4Header>,
    /// End of the IP packet in the buffer.
    pub(super) end: usize,
    pub(super) proto: u8,
    pub(super) src: [u8; 16],
    pub(super) dst: [u8; 16],
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) tcp_flags: u8,
    pub(super) icmp_type: u8,
    pub(super) frag: Frag,
    pub(super) df: bool,
    pub(super) ttl: u8,
    /// Stable hash of the packet's own 5-tuple (0 until known: non-first fragments learn their ports later). It is
    /// the forward-flow hash of client traffic and the reverse-index hash of replies.
    pub(super) hash: u64,
    /// What the destination is (decided at parse time, with the snapshot of the burst).
    pub(super) class: Classified,
}

impl Pkt {
    pub(super) fn addr<'a>(&self, a: &'a [u8; 16]) -> &'a [u8] {
        if self.v4 {
            &a[12..]
        } else {
            &a[..]
        }
    }
    pub(super) fn is_icmp(&self) -> bool {
        (self.v4 && self.proto == proto::ICMP) || (!self.v4 && self.proto == proto::ICMPV6)
    }
    pub(super) fn has_ports(&self) -> bool {
        matches!(self.proto, proto::TCP | proto::UDP)
    }
    /// Stable hash of the packet's own 5-tuple.
    pub(super) fn tuple_hash(&self) -> u64 {
        if self.v4 {
            KeyV4::make(&self.src, &self.dst, self.sport, self.dport, self.proto).hash()
        } else {
            KeyV6::make(&self.src, &self.dst, self.sport, self.dport, self.proto).hash()
        }
    }
}

/// A packet after [`Pipeline::parse`]: what the fast path needs of it, its parsed headers, or its verdict already
/// (ARP, malformed packets).
#[derive(Debug, Clone, Copy)]
pub struct Parsed(pub(super) Stage1);

/// What stage 1 made of a packet.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stage1 {
    /// An IPv4 candidate for the fast path (see [`super::fast`]).
    Fast(Fast<KeyV4>),
    /// An IPv6 candidate for the fast path.
    Fast6(Fast<KeyV6>),
    /// An IPv4 candidate for the fast reply path: to no VIP, so perhaps a backend's NAT or full-NAT reply.
    Reply(Fast<KeyV4>),
    /// An IPv6 candidate for the fast reply path.
    Reply6(Fast<KeyV6>),
    /// Parsed in full, or decided.
    Full(Result<Pkt, Done>),
}

impl Parsed {
    /// The verdict, when parsing alone decided the packet (a drop, the slow path): stage 3 only counts it
    /// ([`Pipeline::finish_decided`]).
    #[inline(always)]
    pub fn decided(&self) -> Option<Verdict> {
        match self.0 {
            Stage1::Full(Err(d)) => Some(d.verdict()),
            _ => None,
        }
    }
}

impl Default for Parsed {
    fn default() -> Self {
        Parsed(Stage1::Full(Err(Done::Drop(DropReason::UnknownEthertype))))
    }
}

/// A packet whose fate parsing alone decided.
#[derive(Debug, Clone, Copy)]
pub(super) enum Done {
    Verdict(Verdict),
    Drop(DropReason),
}

impl Done {
    /// The packet's verdict.
    #[inline(always)]
    pub(super) fn verdict(self) -> Verdict {
        match self {
            Done::Verdict(v) => v,
            Done::Drop(r) => Verdict::Drop(r),
        }
    }
}

impl From<DropReason> for Done {
    fn from(r: DropReason) -> Self {
        Done::Drop(r)
    }
}

/// Parse the transport header at `off`. A first fragment must carry the whole header (RFC 8200 §4.5 requires it of
/// IPv6; RFC 1858 §3 names IPv4's tiny fragments an attack): the rewrites need its ports and its checksum field, so a
/// shorter one is dropped as [`DropReason::FragmentTooShort`] rather than given an `l4` they would trust.
pub(super) fn parse_l4(data: &[u8], p: &mut Pkt, off: usize) -> PResult<()> {
    let seg = data.get(off..p.end).ok_or(DropReason::Parse(ParseError::Truncated))?;
    let first_frag = matches!(p.frag, Frag::First(_));
    let short = |e: ParseError| if first_frag { DropReason::FragmentTooShort } else { DropReason::from(e) };
    match p.proto {
        proto::TCP => {
            let t = TcpPacket::new_checked(seg).map_err(short)?;
            p.tcp_flags = t.flags();
            p.sport = t.src_port();
            p.dport = t.dst_port();
        }
        proto::UDP => {
            // A first fragment's UDP length covers the whole datagram, not this fragment: check the header only.
            if first_frag {
                if seg.len() < crate::wire::udp::HEADER_LEN {
                    return Err(DropReason::FragmentTooShort);
                }
            } else {
                UdpPacket::new_checked(seg)?;
            }
            p.sport = get_u16(seg, 0);
            p.dport = get_u16(seg, 2);
        }
        proto::ICMP | proto::ICMPV6 => {
            let i = IcmpPacket::new_checked(seg).map_err(short)?;
            p.icmp_type = i.msg_type();
            p.sport = i.echo_ident();
        }
        _ => {}
    }
    p.l4 = L4Header::check(data, off, p.end, p.proto);
    Ok(())
}

pub(super) fn parse_v4(data: &[u8], l3: usize) -> PResult<Pkt> {
    let ip = Ipv4Packet::new_checked(&data[l3..])?;
    if checksum::checksum(&data[l3..l3 + ip.header_len()]) != 0 {
        return Err(DropReason::BadIpChecksum);
    }
    let frag = if !ip.is_fragment() {
        Frag::No
    } else if ip.frag_offset() == 0 {
        Frag::First(u32::from(ip.ident()))
    } else {
        Frag::Later(u32::from(ip.ident()))
    };
    let mut p = Pkt {
        l3,
        v4: true,
        l4: None,
        end: l3 + usize::from(ip.total_len()),
        proto: ip.protocol(),
        src: mapped(ip.src()),
        dst: mapped(ip.dst()),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        frag,
        df: ip.dont_frag(),
        ttl: ip.ttl(),
        hash: 0,
        class: Classified::NotVip,
    };
    if !matches!(frag, Frag::Later(_)) {
        parse_l4(data, &mut p, l3 + ip.header_len())?;
    }
    Ok(p)
}

pub(super) fn parse_v6(data: &[u8], l3: usize) -> PResult<Pkt> {
    let ip = Ipv6Packet::new_checked(&data[l3..])?;
    // The tables hold IPv4 addresses in this form: such an IPv6 packet would otherwise pass for IPv4 traffic.
    if crate::lb::flow::is_mapped(&ip.src()) || crate::lb::flow::is_mapped(&ip.dst()) {
        return Err(DropReason::MappedAddress);
    }
    let up = ip.walk()?;
    let frag = match up.frag {
        None => Frag::No,
        Some(f) if f.offset == 0 && !f.more => Frag::No, // atomic fragment (RFC 6946)
        Some(f) if f.offset == 0 => Frag::First(f.ident),
        Some(f) => Frag::Later(f.ident),
    };
    let mut p = Pkt {
        l3,
        v4: false,
        l4: None,
        end: l3 + ip.total_len(),
        proto: up.protocol,
        src: ip.src(),
        dst: ip.dst(),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        frag,
        df: true,
        ttl: ip.hop_limit(),
        hash: 0,
        class: Classified::NotVip,
    };
    if !matches!(frag, Frag::Later(_)) {
        parse_l4(data, &mut p, l3 + up.offset)?;
    }
    Ok(p)
}

impl Pipeline {
    /// Stage 1 of processing a burst: parse the packet (no change to it, no state touched), hash its own 5-tuple and
    /// prefetch the flow-table lines that hash will read. The 5-tuple is the forward key of client traffic and the
    /// reply key of NAT replies alike, so no classification is needed first. A worker parses its whole burst, then
    /// prefetches entries ([`Pipeline::prefetch_entries`]), then finishes each packet ([`Pipeline::process_parsed`]),
    /// so the burst's cache misses overlap instead of stalling one packet at a time.
    #[inline]
    pub fn parse(&self, cfg: &DataplaneConfig, data: &[u8]) -> Parsed {
        let mut p = Parsed::default();
        self.parse_into(cfg, data, &mut p);
        p
    }

    /// [`Pipeline::parse`] into `out`, where the record is to stay (a burst's window): written in place, never
    /// copied.
    #[inline(always)]
    pub fn parse_into(&self, cfg: &DataplaneConfig, data: &[u8], out: &mut Parsed) {
        if self.parse_fast(cfg, data, &mut out.0).is_none() {
            out.0 = Stage1::Full(self.parse_full(cfg, data));
        }
    }

    /// Stage 1 of the general path.
    #[inline(always)]
    fn parse_full(&self, cfg: &DataplaneConfig, data: &[u8]) -> Result<Pkt, Done> {
        let l2 = match parse_l2(data) {
            Ok(l2) => l2,
            Err(e) => return Err(DropReason::from(e).into()),
        };
        let l3 = l2.l3_offset;
        let r = match l2.ethertype {
            ethertype::ARP => match ArpPacket::new_checked(&data[l3..]) {
                Ok(arp) => {
                    let t = mapped(arp.target_ip());
                    Err(if cfg.is_vip(&t) || cfg.is_own(&t) || cfg.virtual_addrs.contains(&t) {
                        Done::Verdict(Verdict::SlowPath)
                    } else {
                        DropReason::NotForUs.into()
                    })
                }
                Err(e) => Err(DropReason::from(e).into()),
            },
            ethertype::IPV4 => parse_v4(data, l3).map_err(Done::from),
            ethertype::IPV6 => parse_v6(data, l3).map_err(Done::from),
            _ => Err(DropReason::UnknownEthertype.into()),
        };
        r.and_then(|mut p| {
            p.class = cfg.classify(&p.dst, if p.has_ports() { p.proto } else { 0 }, p.dport);
            if matches!(p.class, Classified::Service(_)) && self.refuses(p.proto, p.tcp_flags) {
                return Err(DropReason::Overload.into());
            }
            if p.has_ports() && !matches!(p.frag, Frag::Later(_)) {
                p.hash = p.tuple_hash();
                self.ct.prefetch(&p, false);
            }
            Ok(p)
        })
    }

    /// Whether stage 1 drops a packet to a service as [`DropReason::Overload`]: a TCP SYN (without ACK), while the
    /// worker is saturated and its new-flow limit spent (see `admission.rs`). Dropped before its lookup, it costs
    /// little more than its parse; a SYN of a flow tracked already is dropped too, and sent again by its client.
    #[inline(always)]
    pub(super) fn refuses(&self, proto: u8, tcp_flags: u8) -> bool {
        self.admission.refusing() && proto == proto::TCP && tcp_flags & (tcpf::SYN | tcpf::ACK) == tcpf::SYN
    }

    /// Stage 2: prefetch the flow-table entries whose signatures match (the meta lines are in cache by now), and keep
    /// in a fast packet's record the slot stage 3 looks in first, or that none matched; for a fast packet whose
    /// lookup will miss, what recording it as a new flow will read instead. The answer is the entry that insert is
    /// expected to displace, for [`Pipeline::prefetch_link`] two packets ahead of stage 3.
    #[inline(always)]
    pub fn prefetch_entries(&self, cfg: &DataplaneConfig, parsed: &mut Parsed) -> Victim {
        match &mut parsed.0 {
            Stage1::Fast(f) => return self.prefetch_fast(cfg, f),
            Stage1::Fast6(f) => return self.prefetch_fast(cfg, f),
            Stage1::Reply(f) => self.prefetch_reply(f),
            Stage1::Reply6(f) => self.prefetch_reply(f),
            Stage1::Full(Ok(p)) if p.hash != 0 => self.ct.prefetch(p, true),
            Stage1::Full(_) => {}
        }
        Victim::NONE
    }

    /// Between stages 2 and 3: the reverse-index line of the entry a new flow's insert will displace (what
    /// [`Pipeline::prefetch_entries`] answered), which the insert clears. Its slot was prefetched at stage 2. Out of
    /// line: the burst loop calls it only for a victim, and inlined it cost established packets 16 instructions.
    #[inline(never)]
    pub fn prefetch_link(&self, v: Victim) {
        if let Some((slot, v4)) = v.get() {
            if v4 {
                self.ct.v4.prefetch_victim_link(slot);
            } else {
                self.ct.v6.prefetch_victim_link(slot);
            }
        }
    }
}
