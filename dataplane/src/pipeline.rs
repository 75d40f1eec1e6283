//! One packet's fate: parse once, classify, track, schedule, rewrite. Sans-I/O: bytes and `now` in, a
//! [`Verdict`] out, the buffer rewritten in place.
//!
//! ```text
//! parse L2 (VLANs) -> ARP: own/VIP target -> SlowPath
//! parse IP (+ ext headers, checksum) -> trim L2 padding -> owner worker? else Handoff
//! fragment: first -> remember ports; later -> ports from the fragment table
//! dst is a VIP:   ICMP echo -> reply; ICMP error -> steer to the flow's backend; TCP/UDP -> service
//!                 conntrack hit -> same backend; miss -> affinity / Maglev -> insert (reverse entry for NAT modes)
//!                 act: nat | fullnat | dsr_l2 | ipip | gue, TTL decremented, next-hop MACs
//! reverse entry:  NAT / full-NAT reply -> restore VIP (and client) -> route to the client
//! own address or NDP -> SlowPath;   anything else -> Drop(NotForUs)
//! ```
//!
//! **Flow ownership** (one owner per flow, both directions) is a pure function of the packet, see [`Pipeline::owner`]:
//! packets to a VIP belong to the worker chosen by a hash of the client (source) address; NAT replies to the worker of
//! their destination (the client); full-NAT replies to the worker whose source-port range holds their destination
//! port. Hashing on the client address alone keeps fragments (which carry no ports) with their flow.
//!
//! **TCP tracking**: a SYN creates a half-open entry; a non-SYN packet without state is picked up (after an
//! appliance fail-over the flow still reaches its Maglev backend) as half-open too, so an ACK flood cannot pin
//! the table. The client's ACK (or, in NAT modes, any backend reply but a SYN-ACK) makes it established; FIN or RST
//! makes it closing; a SYN on a closing entry starts a new flow. RSTs without state are forwarded untracked.
//!
//! Nothing here allocates, locks or panics on packet contents: every failure is a [`DropReason`] with a counter.

use crate::config::{Backend, BackendState, Classified, DataplaneConfig, Mode, NextHop, PortId, Service};
use crate::forward::icmp as ficmp;
use crate::forward::l2::set_macs;
use crate::forward::nat::{self, Rewrite};
use crate::forward::tunnel::{self, Encap};
use crate::forward::L4Header;
use crate::lb::conntrack::{Entry, FlowKey, FlowTable, Lookup, TableStats};
use crate::lb::flow::{mapped, AffinityKey, FragKey, KeyV4, KeyV6};
use crate::lb::hash::fmix64;
use crate::packet::PacketBuf;
use crate::wire::arp::ArpPacket;
use crate::wire::ethernet::{ethertype, parse_l2};
use crate::wire::icmp::{v4 as icmp4, v6 as icmp6, IcmpPacket};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::tcp::{flags as tcpf, TcpPacket};
use crate::wire::udp::UdpPacket;
use crate::wire::{checksum, get_u16, proto, ParseError};

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) buffer out of this port.
    Tx(PortId),
    /// Hand to the slow path (ARP, NDP, traffic for the appliance's own addresses).
    SlowPath,
    /// Drop, counted under the reason.
    Drop(DropReason),
    /// Another worker owns this flow: hand the buffer, unchanged, to it.
    Handoff(u16),
    /// Rewritten, bound for this port, but its next hop's MAC is not known yet: the slow path holds it (bounded),
    /// resolves the next hop ([`Pipeline::resolve`] names it) and sends it on, as the kernel's neighbour queue does.
    Resolve(PortId),
}

/// Why a packet was dropped. One counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A header failed to parse.
    Parse(ParseError),
    /// IPv4 header checksum wrong.
    BadIpChecksum,
    /// Neither IPv4, IPv6 nor ARP.
    UnknownEthertype,
    /// Not for a VIP, not a tracked reply, not for the appliance.
    NotForUs,
    /// For a VIP address, but no service on that protocol and port.
    NoService,
    /// The service has no active backend.
    NoBackend,
    /// TTL or hop limit would reach zero.
    TtlExpired,
    /// No next hop (no route or neighbour not yet resolved).
    NoRoute,
    /// An ICMP type the appliance does not handle for VIPs.
    IcmpUnsupported,
    /// An ICMP error about a flow that cannot be found or translated.
    IcmpErrorNoFlow,
    /// A non-first fragment whose first fragment was not seen.
    FragmentNoFirst,
    /// A first fragment too short to hold the transport ports.
    FragmentTooShort,
    /// No full-NAT source port free.
    SnatExhausted,
    /// A full-NAT packet that needs flow state there is none of (a RST for an unknown flow).
    FullNatNoState,
    /// An IPv4 packet without DF too big for the egress MTU, tunnel header included (the appliance does not
    /// fragment; with DF set, or over IPv6, the sender gets fragmentation-needed / packet-too-big instead).
    TooBig,
    /// The buffer has no room for the headers to add.
    NoHeadroom,
    /// The owning worker's hand-off ring was full.
    HandoffFull,
    /// The port's transmit ring was full.
    TxFull,
    /// The slow-path ring was full.
    SlowPathFull,
    /// A new flow while the appliance drains.
    Draining,
}

impl DropReason {
    /// Number of distinct reasons (size of the counter array).
    pub const COUNT: usize = ParseError::ALL.len() + 19;

    /// Every reason, in counter order.
    pub fn all() -> impl Iterator<Item = DropReason> {
        ParseError::ALL.into_iter().map(DropReason::Parse).chain([
            DropReason::BadIpChecksum,
            DropReason::UnknownEthertype,
            DropReason::NotForUs,
            DropReason::NoService,
            DropReason::NoBackend,
            DropReason::TtlExpired,
            DropReason::NoRoute,
            DropReason::IcmpUnsupported,
            DropReason::IcmpErrorNoFlow,
            DropReason::FragmentNoFirst,
            DropReason::FragmentTooShort,
            DropReason::SnatExhausted,
            DropReason::FullNatNoState,
            DropReason::TooBig,
            DropReason::NoHeadroom,
            DropReason::HandoffFull,
            DropReason::TxFull,
            DropReason::SlowPathFull,
            DropReason::Draining,
        ])
    }

    /// Counter index.
    pub fn index(self) -> usize {
        let n = ParseError::ALL.len();
        match self {
            DropReason::Parse(e) => ParseError::ALL.iter().position(|x| *x == e).unwrap_or(0),
            DropReason::BadIpChecksum => n,
            DropReason::UnknownEthertype => n + 1,
            DropReason::NotForUs => n + 2,
            DropReason::NoService => n + 3,
            DropReason::NoBackend => n + 4,
            DropReason::TtlExpired => n + 5,
            DropReason::NoRoute => n + 6,
            DropReason::IcmpUnsupported => n + 7,
            DropReason::IcmpErrorNoFlow => n + 8,
            DropReason::FragmentNoFirst => n + 9,
            DropReason::FragmentTooShort => n + 10,
            DropReason::SnatExhausted => n + 11,
            DropReason::FullNatNoState => n + 12,
            DropReason::TooBig => n + 13,
            DropReason::NoHeadroom => n + 14,
            DropReason::HandoffFull => n + 15,
            DropReason::TxFull => n + 16,
            DropReason::SlowPathFull => n + 17,
            DropReason::Draining => n + 18,
        }
    }

    /// Stable snake-case name for counter labels.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Parse(e) => e.name(),
            DropReason::BadIpChecksum => "bad_ip_checksum",
            DropReason::UnknownEthertype => "unknown_ethertype",
            DropReason::NotForUs => "not_for_us",
            DropReason::NoService => "no_service",
            DropReason::NoBackend => "no_backend",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::NoRoute => "no_route",
            DropReason::IcmpUnsupported => "icmp_unsupported",
            DropReason::IcmpErrorNoFlow => "icmp_error_no_flow",
            DropReason::FragmentNoFirst => "fragment_no_first",
            DropReason::FragmentTooShort => "fragment_too_short",
            DropReason::SnatExhausted => "snat_exhausted",
            DropReason::FullNatNoState => "fullnat_no_state",
            DropReason::TooBig => "too_big",
            DropReason::NoHeadroom => "no_headroom",
            DropReason::HandoffFull => "handoff_full",
            DropReason::TxFull => "tx_full",
            DropReason::SlowPathFull => "slowpath_full",
            DropReason::Draining => "draining",
        }
    }
}

impl From<ParseError> for DropReason {
    fn from(e: ParseError) -> Self {
        DropReason::Parse(e)
    }
}

/// Per-worker packet counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Packets processed.
    pub rx: u64,
    /// Verdicts `Tx`.
    pub tx: u64,
    /// Verdicts `SlowPath`.
    pub slowpath: u64,
    /// Verdicts `Handoff`.
    pub handoff: u64,
    /// Drops by [`DropReason::index`].
    pub drops: [u64; DropReason::COUNT],
    /// New flows scheduled.
    pub new_flows: u64,
    /// Tracked flows whose backend went down or away, rescheduled.
    pub rescheduled: u64,
    /// Non-SYN TCP packets without state, picked up.
    pub midflow_pickups: u64,
    /// Flows forwarded without tracking (table bucket full of protected flows, or RST without state).
    pub untracked: u64,
    /// NAT / full-NAT replies translated.
    pub replies: u64,
    /// Echo requests to VIPs answered.
    pub icmp_echo: u64,
    /// ICMP errors steered to a backend.
    pub icmp_errors_steered: u64,
    /// Fragmentation-needed / packet-too-big messages sent.
    pub icmp_too_big_sent: u64,
    /// Packets handed to the slow path to wait for their next hop's resolution (verdict `Resolve`).
    pub held: u64,
    /// Non-first fragments that followed their first fragment.
    pub fragments_followed: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            rx: 0,
            tx: 0,
            slowpath: 0,
            handoff: 0,
            drops: [0; DropReason::COUNT],
            new_flows: 0,
            rescheduled: 0,
            midflow_pickups: 0,
            untracked: 0,
            replies: 0,
            icmp_echo: 0,
            icmp_errors_steered: 0,
            icmp_too_big_sent: 0,
            held: 0,
            fragments_followed: 0,
        }
    }
}

impl Counters {
    /// Drops under one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }
    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Counters of one service or backend, indexed by its stable id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjCounters {
    /// Packets toward it (client direction).
    pub packets: u64,
    /// Bytes toward it (client direction, as received).
    pub bytes: u64,
    /// Flows scheduled to it.
    pub new_flows: u64,
    /// Tracked flows now. Kept per backend on the hot path; a service's is summed over its backends when the worker
    /// publishes.
    pub active_flows: i64,
}

/// Sizes of the per-worker tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    /// IPv4 flows (forward and reverse entries count separately).
    pub flows_v4: usize,
    /// IPv6 flows.
    pub flows_v6: usize,
    /// ClientIP affinity entries.
    pub affinity: usize,
    /// Fragment-table entries.
    pub fragments: usize,
}

impl Default for TableSizes {
    fn default() -> Self {
        Self { flows_v4: 1 << 20, flows_v6: 1 << 16, affinity: 1 << 16, fragments: 4096 }
    }
}

// Entry states.
const ST_SYN: u8 = 1;
const ST_EST: u8 = 2;
const ST_CLOSING: u8 = 3;
const ST_UDP: u8 = 4;
const ST_OTHER: u8 = 5;
// Entry flags.
const F_FULLNAT: u8 = 1;

fn evictable(state: u8) -> bool {
    matches!(state, ST_SYN | ST_CLOSING)
}

/// Timeout index for a state: syn, established, closing, udp.
fn timeout_ms(cfg: &DataplaneConfig, state: u8) -> u32 {
    match state {
        ST_SYN => cfg.timeouts_ms[0],
        ST_EST => cfg.timeouts_ms[1],
        ST_CLOSING => cfg.timeouts_ms[2],
        _ => cfg.timeouts_ms[3],
    }
}

fn tcp_next(state: u8, flags: u8) -> u8 {
    if flags & (tcpf::RST | tcpf::FIN) != 0 {
        ST_CLOSING
    } else if state == ST_SYN && flags & tcpf::ACK != 0 && flags & tcpf::SYN == 0 {
        ST_EST
    } else {
        state
    }
}

/// A flow-table key of one address family.
pub trait FamilyKey: FlowKey {
    /// Build from 16-byte (IPv4-mapped) addresses.
    fn make(src: &[u8; 16], dst: &[u8; 16], sport: u16, dport: u16, proto: u8) -> Self;
    /// Source address, 16-byte form.
    fn src16(&self) -> [u8; 16];
    /// Destination address, 16-byte form.
    fn dst16(&self) -> [u8; 16];
    /// Source port.
    fn sport(&self) -> u16;
    /// Destination port.
    fn dport(&self) -> u16;
    /// IP protocol.
    fn proto(&self) -> u8;
    /// This family's table.
    fn table(t: &mut FlowTables) -> &mut FlowTable<Self>;
}

/// The flow tables of both families.
#[derive(Debug)]
pub struct FlowTables {
    v4: FlowTable<KeyV4>,
    v6: FlowTable<KeyV6>,
}

impl FlowTables {
    /// Prefetch for a parsed packet: stage 1 (meta lines or index buckets) or stage 2 (entries). VIP traffic looks
    /// up the forward table; anything else may be a reply, found through the reverse index.
    #[inline(always)]
    fn prefetch(&self, p: &Pkt, stage2: bool) {
        fn go<K: FlowKey>(t: &FlowTable<K>, reverse: bool, stage2: bool, h: u64) {
            match (reverse, stage2) {
                (false, false) => t.prefetch_sigs(h),
                (false, true) => t.prefetch_entries(h),
                (true, false) => t.prefetch_reverse(h),
                (true, true) => t.prefetch_reverse_entries(h),
            }
        }
        let reverse = !matches!(p.class, Classified::Service(_));
        if p.v4 {
            go(&self.v4, reverse, stage2, p.hash);
        } else {
            go(&self.v6, reverse, stage2, p.hash);
        }
    }
}

impl FamilyKey for KeyV4 {
    #[inline(always)]
    fn make(src: &[u8; 16], dst: &[u8; 16], sport: u16, dport: u16, proto: u8) -> Self {
        KeyV4 {
            src: [src[12], src[13], src[14], src[15]],
            dst: [dst[12], dst[13], dst[14], dst[15]],
            sport,
            dport,
            proto,
        }
    }
    fn src16(&self) -> [u8; 16] {
        mapped(self.src)
    }
    fn dst16(&self) -> [u8; 16] {
        mapped(self.dst)
    }
    fn sport(&self) -> u16 {
        self.sport
    }
    fn dport(&self) -> u16 {
        self.dport
    }
    fn proto(&self) -> u8 {
        self.proto
    }
    fn table(t: &mut FlowTables) -> &mut FlowTable<Self> {
        &mut t.v4
    }
}

impl FamilyKey for KeyV6 {
    #[inline(always)]
    fn make(src: &[u8; 16], dst: &[u8; 16], sport: u16, dport: u16, proto: u8) -> Self {
        KeyV6 { src: *src, dst: *dst, sport, dport, proto }
    }
    fn src16(&self) -> [u8; 16] {
        self.src
    }
    fn dst16(&self) -> [u8; 16] {
        self.dst
    }
    fn sport(&self) -> u16 {
        self.sport
    }
    fn dport(&self) -> u16 {
        self.dport
    }
    fn proto(&self) -> u8 {
        self.proto
    }
    fn table(t: &mut FlowTables) -> &mut FlowTable<Self> {
        &mut t.v6
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frag {
    No,
    First(u32),
    Later(u32),
}

/// What parsing found, by value (no borrow of the buffer).
#[derive(Debug, Clone, Copy)]
struct Pkt {
    l3: usize,
    v4: bool,
    /// The TCP, UDP or ICMP header, proven whole (fixed part) by the parser; `None` in later fragments and for other
    /// protocols. Rewrites take this token, never a bare offset.
    l4: Option<L4Header>,
    /// End of the IP packet in the buffer.
    end: usize,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    icmp_type: u8,
    frag: Frag,
    df: bool,
    ttl: u8,
    /// Stable hash of the packet's own 5-tuple (0 until known: non-first fragments learn their ports later). It is
    /// the forward-flow hash of client traffic and the reverse-index hash of replies.
    hash: u64,
    /// What the destination is (decided at parse time, with the snapshot of the burst).
    class: Classified,
}

impl Pkt {
    fn addr<'a>(&self, a: &'a [u8; 16]) -> &'a [u8] {
        if self.v4 {
            &a[12..]
        } else {
            &a[..]
        }
    }
    fn is_icmp(&self) -> bool {
        (self.v4 && self.proto == proto::ICMP) || (!self.v4 && self.proto == proto::ICMPV6)
    }
    fn has_ports(&self) -> bool {
        matches!(self.proto, proto::TCP | proto::UDP)
    }
    /// Stable hash of the packet's own 5-tuple.
    fn tuple_hash(&self) -> u64 {
        if self.v4 {
            KeyV4::make(&self.src, &self.dst, self.sport, self.dport, self.proto).hash()
        } else {
            KeyV6::make(&self.src, &self.dst, self.sport, self.dport, self.proto).hash()
        }
    }
}

/// A packet after [`Pipeline::parse`]: its parsed headers, or its verdict already (ARP, malformed packets).
#[derive(Debug, Clone, Copy)]
pub struct Parsed(Result<Pkt, Done>);

impl Default for Parsed {
    fn default() -> Self {
        Parsed(Err(Done::Drop(DropReason::UnknownEthertype)))
    }
}

/// A packet whose fate parsing alone decided.
#[derive(Debug, Clone, Copy)]
enum Done {
    Verdict(Verdict),
    Drop(DropReason),
}

impl From<DropReason> for Done {
    fn from(r: DropReason) -> Self {
        Done::Drop(r)
    }
}

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
    /// Connection state (1 TCP half-open, 2 established, 3 closing, 4 UDP, 5 other).
    pub state: u8,
}

/// Where a flow listing continues: family (false IPv4, true IPv6) and slot.
pub type FlowCursor = (bool, u32);

/// Per-worker pipeline state.
pub struct Pipeline {
    /// This worker's index.
    pub worker: u16,
    /// Number of workers sharing the ports.
    pub nworkers: u16,
    ct: FlowTables,
    affinity: FlowTable<AffinityKey>,
    frags: FlowTable<FragKey>,
    /// Packet counters.
    pub counters: Counters,
    /// The next hop (16-byte form, IPv4?) of the last packet given [`Verdict::Resolve`]: the worker hands both to
    /// the slow path. A backend not yet resolved at start, or a client that has the VIP's MAC cached across an
    /// appliance restart and never ARPs, costs a wait for one ARP or NDP exchange instead of dropped packets.
    pub resolve: Option<([u8; 16], bool)>,
    /// Per-backend counters by stable id.
    pub backend_stats: Vec<ObjCounters>,
    /// Per-service counters by stable id.
    pub service_stats: Vec<ObjCounters>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("worker", &self.worker).field("counters", &self.counters).finish()
    }
}

type PResult<T> = Result<T, DropReason>;

impl Pipeline {
    /// A pipeline for worker `worker` of `nworkers`, its tables allocated now.
    pub fn new(worker: u16, nworkers: u16, sizes: TableSizes) -> Self {
        Self {
            worker,
            nworkers: nworkers.max(1),
            ct: FlowTables { v4: FlowTable::with_reverse(sizes.flows_v4), v6: FlowTable::with_reverse(sizes.flows_v6) },
            affinity: FlowTable::new(sizes.affinity),
            frags: FlowTable::new(sizes.fragments),
            counters: Counters::default(),
            resolve: None,
            backend_stats: Vec::new(),
            service_stats: Vec::new(),
        }
    }

    /// Flow-table memory: (bytes allocated in all tables, what backs the larger flow table).
    pub fn table_memory(&self) -> (usize, crate::mem::Backing) {
        let b = self.ct.v4.bytes() + self.ct.v6.bytes() + self.affinity.bytes() + self.frags.bytes();
        let big = if self.ct.v4.bytes() >= self.ct.v6.bytes() { self.ct.v4.backing() } else { self.ct.v6.backing() };
        (b, big)
    }

    /// Counters of the IPv4 and IPv6 flow tables.
    pub fn table_stats(&self) -> (TableStats, TableStats) {
        (*self.ct.v4.stats(), *self.ct.v6.stats())
    }

    /// Capacity of the IPv4 and IPv6 flow tables.
    pub fn table_capacity(&self) -> (usize, usize) {
        (self.ct.v4.capacity(), self.ct.v6.capacity())
    }

    /// Grow the per-object counters to the snapshot's id space. Call once per burst (allocates only when a new
    /// snapshot brought new ids).
    #[inline]
    pub fn sync(&mut self, cfg: &DataplaneConfig) {
        if self.backend_stats.len() < cfg.backend_id_limit as usize {
            self.backend_stats.resize(cfg.backend_id_limit as usize, ObjCounters::default());
        }
        if self.service_stats.len() < cfg.service_id_limit as usize {
            self.service_stats.resize(cfg.service_id_limit as usize, ObjCounters::default());
        }
    }

    /// Set each service's active-flow count to the sum over its backends (the hot path counts per backend only).
    pub fn sum_service_flows(&mut self, cfg: &DataplaneConfig) {
        for svc in &cfg.services {
            let n: i64 = svc
                .backend_ids
                .iter()
                .filter_map(|&b| self.backend_stats.get(b as usize))
                .map(|c| c.active_flows)
                .sum();
            if let Some(c) = self.service_stats.get_mut(svc.id as usize) {
                c.active_flows = n;
            }
        }
    }

    /// Reclaim expired entries from up to `buckets` buckets of each table, keeping active-flow counts right.
    pub fn housekeeping(&mut self, buckets: usize, now: u32) {
        let bs = &mut self.backend_stats;
        self.ct.v4.sweep(buckets, now, |e| forget(bs, e.value));
        self.ct.v6.sweep(buckets, now, |e| forget(bs, e.value));
        self.affinity.sweep(buckets, now, |_| {});
        self.frags.sweep(buckets, now, |_| {});
    }

    /// The worker that owns this packet's flow (see the module documentation). Cheap: no table lookups.
    fn owner(&self, cfg: &DataplaneConfig, p: &Pkt, data: &[u8]) -> u16 {
        let by_addr = |a: &[u8; 16]| owner_of_client(a, self.nworkers);
        if p.has_ports() && p.l4.is_some() && self.is_snat(cfg, p) {
            return snat_owner(cfg, self.nworkers, p.dport);
        }
        // Parse-time class: a later fragment may be reclassified from Service to VipAddress, never across NotVip.
        if p.class != Classified::NotVip {
            if p.is_icmp() && is_icmp_error(p) {
                if let Some(e) = p.l4.and_then(|h| embedded(data, h.offset() + 8, p.end, p.v4)) {
                    return by_addr(&e.dst);
                }
            }
            return by_addr(&p.src);
        }
        by_addr(&p.dst)
    }

    fn is_snat(&self, cfg: &DataplaneConfig, p: &Pkt) -> bool {
        if p.v4 {
            cfg.snat_v4.is_some_and(|a| p.dst[12..] == a)
        } else {
            cfg.snat_v6.is_some_and(|a| p.dst == a)
        }
    }

    /// Stage 1 of processing a burst: parse the packet (no change to it, no state touched), hash its own 5-tuple and
    /// prefetch the flow-table lines that hash will read. The 5-tuple is the forward key of client traffic and the
    /// reply key of NAT replies alike, so no classification is needed first. A worker parses its whole burst, then
    /// prefetches entries ([`Pipeline::prefetch_entries`]), then finishes each packet ([`Pipeline::process_parsed`]),
    /// so the burst's cache misses overlap instead of stalling one packet at a time.
    #[inline]
    pub fn parse(&self, cfg: &DataplaneConfig, data: &[u8]) -> Parsed {
        let l2 = match parse_l2(data) {
            Ok(l2) => l2,
            Err(e) => return Parsed(Err(DropReason::from(e).into())),
        };
        let l3 = l2.l3_offset;
        let r = match l2.ethertype {
            ethertype::ARP => match ArpPacket::new_checked(&data[l3..]) {
                Ok(arp) => {
                    let t = mapped(arp.target_ip());
                    Err(if cfg.is_vip(&t) || cfg.is_own(&t) {
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
        Parsed(r.map(|mut p| {
            p.class = cfg.classify(&p.dst, if p.has_ports() { p.proto } else { 0 }, p.dport);
            if p.has_ports() && !matches!(p.frag, Frag::Later(_)) {
                p.hash = p.tuple_hash();
                self.ct.prefetch(&p, false);
            }
            p
        }))
    }

    /// Stage 2: prefetch the flow-table entries whose signatures match (the meta lines are in cache by now).
    #[inline]
    pub fn prefetch_entries(&self, parsed: &Parsed) {
        if let Ok(p) = &parsed.0 {
            if p.hash != 0 {
                self.ct.prefetch(p, true);
            }
        }
    }

    /// Process one packet received on `in_port` at tick `now` (milliseconds): [`Pipeline::parse`] then
    /// [`Pipeline::process_parsed`].
    #[inline]
    pub fn process<B: PacketBuf>(&mut self, cfg: &DataplaneConfig, in_port: PortId, pkt: &mut B, now: u32) -> Verdict {
        let parsed = self.parse(cfg, pkt.data());
        self.process_parsed(cfg, in_port, pkt, now, parsed)
    }

    /// Stage 3: finish a packet [`Pipeline::parse`] parsed (the buffer must be the one parsed, unchanged).
    #[inline]
    pub fn process_parsed<B: PacketBuf>(
        &mut self,
        cfg: &DataplaneConfig,
        in_port: PortId,
        pkt: &mut B,
        now: u32,
        parsed: Parsed,
    ) -> Verdict {
        self.counters.rx += 1;
        let v = match parsed.0 {
            Ok(p) => match self.process_inner(cfg, in_port, pkt, now, p) {
                Ok(v) => v,
                Err(r) => Verdict::Drop(r),
            },
            Err(Done::Verdict(v)) => v,
            Err(Done::Drop(r)) => Verdict::Drop(r),
        };
        match v {
            Verdict::Tx(_) => self.counters.tx += 1,
            Verdict::SlowPath => self.counters.slowpath += 1,
            Verdict::Drop(r) => self.counters.drops[r.index()] += 1,
            Verdict::Handoff(_) => self.counters.handoff += 1,
            Verdict::Resolve(_) => self.counters.held += 1,
        }
        v
    }

    /// Count a drop decided outside `process` (full rings).
    pub fn count_drop(&mut self, r: DropReason) {
        self.counters.drops[r.index()] += 1;
    }

    fn process_inner<B: PacketBuf>(
        &mut self,
        cfg: &DataplaneConfig,
        in_port: PortId,
        pkt: &mut B,
        now: u32,
        mut p: Pkt,
    ) -> PResult<Verdict> {
        let data = pkt.data();
        let bytes = data.len() as u64;
        if p.end < data.len() {
            // Ethernet padding after the IP packet must not travel into a tunnel or a longer rewrite.
            pkt.set_len(p.end);
        }
        if self.nworkers > 1 {
            let o = self.owner(cfg, &p, pkt.data());
            if o != self.worker {
                return Ok(Verdict::Handoff(o));
            }
        }
        match p.frag {
            Frag::No => {}
            Frag::First(ident) => {
                let k = FragKey { src: p.src, dst: p.dst, ident, proto: p.proto };
                let h = k.hash();
                let ports = (u32::from(p.sport) << 16) | u32::from(p.dport);
                let e = Entry::new(now.wrapping_add(cfg.timeouts_ms[4]), ports, 0, 1, 0);
                match self.frags.lookup(&k, h, now) {
                    Lookup::Hit(slot, _) => {
                        self.frags.update(slot, ports, 0);
                        self.frags.touch(slot, 1, e.expires);
                    }
                    Lookup::Miss(_) => {
                        let _ = self.frags.insert(k, h, now, e, |_| true);
                    }
                }
            }
            Frag::Later(ident) => {
                let k = FragKey { src: p.src, dst: p.dst, ident, proto: p.proto };
                match self.frags.lookup(&k, k.hash(), now) {
                    Lookup::Hit(_, e) => {
                        p.sport = (e.value >> 16) as u16;
                        p.dport = e.value as u16;
                        p.hash = p.tuple_hash();
                        self.counters.fragments_followed += 1;
                    }
                    Lookup::Miss(_) => {
                        if p.has_ports() {
                            return Err(DropReason::FragmentNoFirst);
                        }
                    }
                }
            }
        }
        if p.is_icmp() && !p.v4 && p.l4.is_some() && icmp6::is_ndp(p.icmp_type) {
            return Ok(Verdict::SlowPath);
        }
        // Common case first: one hash-map probe finds the service of a VIP flow.
        // Classified at parse time; a later fragment learnt its ports since, so it is classified again.
        let class = if matches!(p.frag, Frag::Later(_)) {
            cfg.classify(&p.dst, if p.has_ports() { p.proto } else { 0 }, p.dport)
        } else {
            p.class
        };
        if class == Classified::VipAddress {
            if p.is_icmp() {
                return self.icmp_to_vip(cfg, in_port, pkt, &p, now);
            }
            return Err(DropReason::NoService);
        }
        if let Classified::Service(si) = class {
            let svc = &cfg.services[si as usize];
            if p.ttl <= 1 {
                return Err(DropReason::TtlExpired);
            }
            let (bid, snat_port) = if p.v4 {
                self.schedule::<KeyV4>(cfg, svc, &p, now)?
            } else {
                self.schedule::<KeyV6>(cfg, svc, &p, now)?
            };
            let b = cfg.backend(bid).ok_or(DropReason::NoBackend)?;
            if let Some(c) = self.backend_stats.get_mut(bid as usize) {
                c.packets += 1;
                c.bytes += bytes;
            }
            if let Some(c) = self.service_stats.get_mut(svc.id as usize) {
                c.packets += 1;
                c.bytes += bytes;
            }
            return self.act(cfg, svc, b, snat_port, in_port, pkt, &p);
        }
        if p.has_ports() {
            let r = if p.v4 {
                self.reply::<KeyV4, B>(cfg, in_port, pkt, &p, now)
            } else {
                self.reply::<KeyV6, B>(cfg, in_port, pkt, &p, now)
            };
            if let Some(v) = r {
                return v;
            }
        }
        if cfg.is_own(&p.dst) {
            return Ok(Verdict::SlowPath);
        }
        Err(DropReason::NotForUs)
    }

    /// Pick (or recall) the backend of a VIP flow. Returns the backend id and, for full-NAT, the source port.
    fn schedule<K: FamilyKey>(
        &mut self,
        cfg: &DataplaneConfig,
        svc: &Service,
        p: &Pkt,
        now: u32,
    ) -> PResult<(u32, u16)> {
        let key = K::make(&p.src, &p.dst, p.sport, p.dport, p.proto);
        let h = if p.hash != 0 { p.hash } else { key.hash() };
        let tcp = p.proto == proto::TCP;
        let table = K::table(&mut self.ct);
        match table.lookup(&key, h, now) {
            Lookup::Hit(slot, e) => {
                let ok = cfg
                    .backend(e.value)
                    .is_some_and(|b| b.state != BackendState::Down && cfg.services[b.service as usize].id == svc.id);
                let new_syn = tcp && e.state == ST_CLOSING && p.tcp_flags & (tcpf::SYN | tcpf::ACK) == tcpf::SYN;
                if ok && !new_syn {
                    let state = if tcp { tcp_next(e.state, p.tcp_flags) } else { e.state };
                    table.touch(slot, state, now.wrapping_add(timeout_ms(cfg, state)));
                    return Ok((e.value, e.aux));
                }
                let old = e;
                table.remove_slot(slot);
                forget(&mut self.backend_stats, old.value);
                if !new_syn {
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
        let bid = self.pick(cfg, svc, p, h, now)?;
        let b = cfg.backend(bid).ok_or(DropReason::NoBackend)?;
        self.counters.new_flows += 1;
        if let Some(c) = self.backend_stats.get_mut(bid as usize) {
            c.new_flows += 1;
        }
        if let Some(c) = self.service_stats.get_mut(svc.id as usize) {
            c.new_flows += 1;
        }
        if tcp && p.tcp_flags & tcpf::RST != 0 {
            self.counters.untracked += 1;
            return if svc.mode == Mode::FullNat { Err(DropReason::FullNatNoState) } else { Ok((bid, 0)) };
        }
        let state = if tcp {
            if p.tcp_flags & (tcpf::SYN | tcpf::ACK) != tcpf::SYN {
                self.counters.midflow_pickups += 1;
            }
            if p.tcp_flags & tcpf::FIN != 0 {
                ST_CLOSING
            } else {
                ST_SYN
            }
        } else if p.proto == proto::UDP {
            ST_UDP
        } else {
            ST_OTHER
        };
        let expires = now.wrapping_add(timeout_ms(cfg, state));
        let fullnat = svc.mode == Mode::FullNat;
        let table = K::table(&mut self.ct);
        let snat_port = if fullnat {
            alloc_snat_port::<K>(table, cfg, svc, b, &key, h, self.worker, self.nworkers, now)?
        } else {
            0
        };
        let flags = if fullnat { F_FULLNAT } else { 0 };
        let fwd = Entry::new(expires, bid, snat_port, state, flags);
        match table.insert(key, h, now, fwd, evictable) {
            Ok((slot, displaced)) => {
                if let Some(d) = displaced {
                    forget(&mut self.backend_stats, d.value);
                }
                if let Some(c) = self.backend_stats.get_mut(bid as usize) {
                    c.active_flows += 1;
                }
                if svc.mode.is_nat() {
                    let rk = reverse_key::<K>(cfg, svc, b, &key, snat_port);
                    if table.link_reverse(slot, rk.hash()).is_err() {
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
            Err(_) => {
                self.counters.untracked += 1;
                if fullnat {
                    // A full-NAT flow without state would get a different source port on its next packet.
                    return Err(DropReason::SnatExhausted);
                }
            }
        }
        Ok((bid, snat_port))
    }

    /// Affinity, then Maglev. Only active backends are picked.
    fn pick(&mut self, cfg: &DataplaneConfig, svc: &Service, p: &Pkt, h: u64, now: u32) -> PResult<u32> {
        if svc.affinity_ms > 0 {
            let k = AffinityKey { client: p.src, service: svc.id };
            let ah = k.hash();
            if let Lookup::Hit(slot, e) = self.affinity.lookup(&k, ah, now) {
                if cfg
                    .backend(e.value)
                    .is_some_and(|b| b.state == BackendState::Active && cfg.services[b.service as usize].id == svc.id)
                {
                    self.affinity.touch(slot, e.state, now.wrapping_add(svc.affinity_ms));
                    return Ok(e.value);
                }
            }
            let idx = svc.maglev.lookup(affinity_hash(&p.src, svc.id)).ok_or(DropReason::NoBackend)?;
            let bid = svc.maglev_ids[idx];
            let e = Entry::new(now.wrapping_add(svc.affinity_ms), bid, 0, 1, 0);
            let _ = self.affinity.insert(k, ah, now, e, |_| true);
            return Ok(bid);
        }
        let idx = svc.maglev.lookup(h).ok_or(DropReason::NoBackend)?;
        Ok(svc.maglev_ids[idx])
    }

    /// Rewrite and address a VIP packet toward its backend.
    #[allow(clippy::too_many_arguments)]
    fn act<B: PacketBuf>(
        &mut self,
        cfg: &DataplaneConfig,
        svc: &Service,
        b: &Backend,
        snat_port: u16,
        in_port: PortId,
        pkt: &mut B,
        p: &Pkt,
    ) -> PResult<Verdict> {
        let (nh, held) = match b.next_hop {
            Some(nh) => (nh, false),
            None => self.next_hop(cfg, &b.addr, p.v4)?,
        };
        let encap = match svc.mode {
            Mode::Ipip => Some(Encap::Ipip),
            Mode::Gue => Some(Encap::Gue(svc.gue_port)),
            _ => None,
        };
        if let Some(v) = self.too_big(pkt, p, encap.map_or(0, |e| tunnel::overhead(e, p.v4)), nh.mtu, in_port)? {
            return Ok(v);
        }
        match svc.mode {
            Mode::Nat | Mode::FullNat => {
                let d = pkt.data_mut();
                let bport = if b.port == 0 { None } else { Some(b.port) };
                let snat = if svc.mode == Mode::FullNat { snat_addr(cfg, p.v4) } else { None };
                let rw = Rewrite {
                    dst: Some(p.addr(&b.addr)),
                    dport: bport,
                    src: snat.as_ref().map(|a| p.addr(a)),
                    sport: if svc.mode == Mode::FullNat { Some(snat_port) } else { None },
                };
                nat::decrement_ttl(d, p.l3, p.v4);
                if !nat::apply(d, p.l3, p.l4, p.v4, &rw) {
                    return Err(ParseError::Truncated.into());
                }
                set_macs(d, nh.mac, nh.src_mac);
            }
            Mode::DsrL2 => {
                let d = pkt.data_mut();
                nat::decrement_ttl(d, p.l3, p.v4);
                set_macs(d, nh.mac, nh.src_mac);
            }
            Mode::Ipip | Mode::Gue => {
                nat::decrement_ttl(pkt.data_mut(), p.l3, p.v4);
                let encap = encap.ok_or(DropReason::NoRoute)?;
                self.encap_to(cfg, pkt, p, b, encap, &nh)?;
            }
        }
        Ok(if held { Verdict::Resolve(nh.port) } else { Verdict::Tx(nh.port) })
    }

    /// The next hop toward `dst`; when its MAC is not known yet, one without a MAC (`true`), its address left in
    /// [`Pipeline::resolve`] for the slow path.
    fn next_hop(&mut self, cfg: &DataplaneConfig, dst: &[u8; 16], v4: bool) -> PResult<(NextHop, bool)> {
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
    fn too_big<B: PacketBuf>(
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

    fn encap_to<B: PacketBuf>(
        &self,
        cfg: &DataplaneConfig,
        pkt: &mut B,
        p: &Pkt,
        b: &Backend,
        encap: Encap,
        nh: &crate::config::NextHop,
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

    /// ICMP to a VIP: echo answered, errors steered to the flow's backend, the rest dropped.
    fn icmp_to_vip<B: PacketBuf>(
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
        let svc = &cfg.services[si as usize];
        let (bid, snat_port, tracked) =
            if p.v4 { self.find_flow::<KeyV4>(svc, &e, now) } else { self.find_flow::<KeyV6>(svc, &e, now) }
                .ok_or(DropReason::IcmpErrorNoFlow)?;
        if svc.mode.is_nat() && !tracked {
            return Err(DropReason::IcmpErrorNoFlow);
        }
        let b = cfg.backend(bid).ok_or(DropReason::IcmpErrorNoFlow)?;
        let (nh, held) = match b.next_hop {
            Some(nh) => (nh, false),
            None => self.next_hop(cfg, &b.addr, p.v4)?,
        };
        // No ICMP error about an ICMP error (RFC 1812 §4.3.2.7): one that would not fit is dropped.
        let over = match svc.mode {
            Mode::Ipip => tunnel::overhead(Encap::Ipip, p.v4),
            Mode::Gue => tunnel::overhead(Encap::Gue(svc.gue_port), p.v4),
            _ => 0,
        };
        if p.end - p.l3 + over > usize::from(nh.mtu) {
            return Err(DropReason::TooBig);
        }
        match svc.mode {
            Mode::DsrL2 => {
                let d = pkt.data_mut();
                nat::decrement_ttl(d, p.l3, p.v4);
                set_macs(d, nh.mac, nh.src_mac);
            }
            Mode::Ipip | Mode::Gue => {
                let encap = if svc.mode == Mode::Ipip { Encap::Ipip } else { Encap::Gue(svc.gue_port) };
                nat::decrement_ttl(pkt.data_mut(), p.l3, p.v4);
                let flow =
                    Pkt { src: e.dst, dst: e.src, sport: e.dport, dport: e.sport, proto: e.proto, hash: 0, ..*p };
                self.encap_to(cfg, pkt, &flow, b, encap, &nh)?;
            }
            Mode::Nat | Mode::FullNat => {
                let d = pkt.data_mut();
                nat::decrement_ttl(d, p.l3, p.v4);
                let bport = if b.port == 0 { None } else { Some(b.port) };
                let baddr = p.addr(&b.addr);
                let snat = if svc.mode == Mode::FullNat { snat_addr(cfg, p.v4) } else { None };
                let outer = Rewrite { src: snat.as_ref().map(|a| p.addr(a)), dst: Some(baddr), ..Rewrite::default() };
                let inner = Rewrite {
                    src: Some(baddr),
                    sport: bport,
                    dst: snat.as_ref().map(|a| p.addr(a)),
                    dport: if svc.mode == Mode::FullNat { Some(snat_port) } else { None },
                };
                if !ficmp::translate_error(d, p.l3, l4, p.end, p.v4, &outer, e.l3, Some(e.l4), &inner) {
                    return Err(DropReason::IcmpErrorNoFlow);
                }
                set_macs(d, nh.mac, nh.src_mac);
            }
        }
        self.counters.icmp_errors_steered += 1;
        Ok(if held { Verdict::Resolve(nh.port) } else { Verdict::Tx(nh.port) })
    }

    /// The backend of the flow an embedded (VIP -> client) header belongs to: tracked, else by Maglev.
    fn find_flow<K: FamilyKey>(&mut self, svc: &Service, e: &Embedded, now: u32) -> Option<(u32, u16, bool)> {
        let key = K::make(&e.dst, &e.src, e.dport, e.sport, e.proto);
        let h = key.hash();
        let table = K::table(&mut self.ct);
        if let Lookup::Hit(_, x) = table.lookup(&key, h, now) {
            return Some((x.value, x.aux, true));
        }
        let idx = svc.maglev.lookup(h)?;
        Some((svc.maglev_ids[idx], 0, false))
    }

    /// A NAT or full-NAT reply from a backend: `None` when no reverse entry matches.
    fn reply<K: FamilyKey, B: PacketBuf>(
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
        let fullnat = f.flags & F_FULLNAT != 0;
        let state = if p.proto == proto::TCP {
            if p.tcp_flags & (tcpf::RST | tcpf::FIN) != 0 {
                ST_CLOSING
            } else if f.state == ST_SYN && p.tcp_flags & tcpf::SYN == 0 {
                ST_EST
            } else {
                f.state
            }
        } else {
            f.state
        };
        table.touch(slot, state, now.wrapping_add(timeout_ms(cfg, state)));
        let fkey = f.key;
        let vip = fkey.dst16();
        let client = fkey.src16();
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
        let rw = Rewrite {
            src: Some(p.addr(&vip)),
            sport: Some(fkey.dport()),
            dst: if fullnat { Some(p.addr(&client)) } else { None },
            dport: if fullnat { Some(fkey.sport()) } else { None },
        };
        if !nat::apply(d, p.l3, p.l4, p.v4, &rw) {
            return Some(Err(ParseError::Truncated.into()));
        }
        set_macs(d, nh.mac, nh.src_mac);
        self.counters.replies += 1;
        Some(Ok(if held { Verdict::Resolve(nh.port) } else { Verdict::Tx(nh.port) }))
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
                    client: crate::config::addr_from16(e.key.src16(), v4),
                    client_port: e.key.sport(),
                    vip: crate::config::addr_from16(e.key.dst16(), v4),
                    vip_port: e.key.dport(),
                    proto: e.key.proto(),
                    backend: e.value,
                    expires_in_ms: e.expires.wrapping_sub(now),
                    state: e.state,
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
        let (s, d) = (crate::config::addr16(src), crate::config::addr16(dst));
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

/// The Maglev hash of a client address for a service with source affinity: every flow of the client picks alike.
fn affinity_hash(client: &[u8; 16], service: u32) -> u64 {
    fmix64(u64::from_le_bytes(client[8..16].try_into().unwrap_or([0; 8])) ^ u64::from(service))
}

/// The worker (of `nworkers`) that owns the flows of a client address (16-byte form): the rule the pipeline's
/// hand-off follows, exposed so generators and RSS set-up can agree with it.
pub fn owner_of_client(a: &[u8; 16], nworkers: u16) -> u16 {
    let (hi, lo) = a.split_at(8);
    let w = u64::from_le_bytes(hi.try_into().unwrap_or([0; 8]))
        ^ u64::from_le_bytes(lo.try_into().unwrap_or([0; 8])).rotate_left(29);
    ((u128::from(fmix64(w)) * u128::from(nworkers.max(1))) >> 64) as u16
}

/// Does the forward entry `f` own the reply (src, dst, sport, dport)? The reverse index stores no key; this is the
/// check that makes a fingerprint match a real one.
fn reply_matches<K: FamilyKey>(
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

fn forget(stats: &mut [ObjCounters], backend: u32) {
    if let Some(c) = stats.get_mut(backend as usize) {
        c.active_flows -= 1;
    }
}

fn snat_addr(cfg: &DataplaneConfig, v4: bool) -> Option<[u8; 16]> {
    if v4 {
        cfg.snat_v4.map(mapped)
    } else {
        cfg.snat_v6
    }
}

fn snat_owner(cfg: &DataplaneConfig, nworkers: u16, port: u16) -> u16 {
    let (lo, hi) = cfg.snat_ports;
    let span = (u32::from(hi.saturating_sub(lo)) + 1) / u32::from(nworkers.max(1));
    if span == 0 || port < lo {
        return 0;
    }
    ((u32::from(port - lo) / span) as u16).min(nworkers - 1)
}

/// The reply-direction key of a forward flow.
fn reverse_key<K: FamilyKey>(cfg: &DataplaneConfig, svc: &Service, b: &Backend, fwd: &K, snat_port: u16) -> K {
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
fn alloc_snat_port<K: FamilyKey>(
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
const SNAT_PROBES: usize = 32;

fn tunnel_src(cfg: &DataplaneConfig, v4: bool, h: u64) -> Option<[u8; 16]> {
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

fn is_icmp_error(p: &Pkt) -> bool {
    if p.v4 {
        icmp4::is_error(p.icmp_type)
    } else {
        icmp6::is_error(p.icmp_type)
    }
}

/// The IP header and ports embedded in an ICMP error.
#[derive(Debug, Clone, Copy)]
struct Embedded {
    l3: usize,
    l4: usize,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    proto: u8,
}

/// Parse the embedded header of an ICMP error at `at..end` (truncated payloads allowed: only the header and the
/// ports must be there). Extension headers in an embedded IPv6 header are not followed.
fn embedded(d: &[u8], at: usize, end: usize, v4: bool) -> Option<Embedded> {
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

/// Parse the transport header at `off`. A first fragment must carry the whole header (RFC 8200 §4.5 requires it of
/// IPv6; RFC 1858 §3 names IPv4's tiny fragments an attack): the rewrites need its ports and its checksum field, so a
/// shorter one is dropped as [`DropReason::FragmentTooShort`] rather than given an `l4` they would trust.
fn parse_l4(data: &[u8], p: &mut Pkt, off: usize) -> PResult<()> {
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

fn parse_v4(data: &[u8], l3: usize) -> PResult<Pkt> {
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

fn parse_v6(data: &[u8], l3: usize) -> PResult<Pkt> {
    let ip = Ipv6Packet::new_checked(&data[l3..])?;
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
