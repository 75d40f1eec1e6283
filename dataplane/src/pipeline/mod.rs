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
//! own address, NDP or VRRP -> SlowPath;   anything else -> Drop(NotForUs)
//! ```
//!
//! **Fast path** (`fast.rs`): a client packet (IPv4 or IPv6) of a tracked NAT or DSR-L2 flow, or the first packet of
//! a new one, is recognised from its bytes in stage 1 and finished in stage 3 without the general machinery; anything
//! it cannot finish goes down the general path unchanged. Same bytes, verdicts and counters either way (tested packet by packet).
//!
//! **New-flow limit** (`admission.rs`, off unless set): while the worker's polls come back full, new flows beyond a
//! rate are dropped as [`DropReason::Overload`], SYNs in stage 1 before their lookup, so a flood of new flows cannot
//! take the core from the tracked ones.
//!
//! **Flow ownership** (one owner per flow, both directions) is a pure function of the packet, see `Pipeline::owner`:
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

mod admission;
mod counters;
mod fast;
mod icmp;
mod keys;
mod parse;
mod query;
pub mod replicate;
mod reply;
mod schedule;
mod state;

use admission::Admission;
pub use counters::{Counters, DropReason, ObjCounters};
pub use fast::Victim;
pub use keys::{FamilyKey, FlowTables};
pub use parse::Parsed;
pub use query::{FlowCensus, FlowCursor, FlowFilter, FlowInfo, FlowQuery, Tuple};
pub use schedule::owner_of_client;
pub use state::FlowState;

use fast::*;
use icmp::*;
use parse::*;
use reply::*;
use schedule::*;
use state::*;

use crate::forward::icmp as ficmp;
use crate::forward::l2::set_macs;
use crate::forward::nat::{self, Rewrite};
use crate::forward::tunnel::{self, Encap};
use crate::forward::L4Header;
use crate::lb::conntrack::{Ahead, Entry, FlowKey, FlowTable, InsertError, Lookup, TableStats};
use crate::lb::flow::{mapped, AffinityKey, FragKey, KeyV4, KeyV6};
use crate::lb::hash::fmix64;
use crate::model::{BackendState, Mode, PortId};
use crate::packet::PacketBuf;
use crate::snapshot::{Backend, Classified, DataplaneConfig, NextHop, Service};
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
    /// New flows go here for the peer appliances (`None`: replication off).
    replica_out: Option<replicate::ReplicaQueue>,
    /// The periodic re-send of tracked flows to the peers.
    refresh: replicate::Refresh,
    /// Whether established flows take the fast path (see `fast.rs`); off only to compare against it.
    fast_path: bool,
    /// New flows while the worker is saturated (see `admission.rs`); the worker reports its polls to it.
    admission: Admission,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("worker", &self.worker).field("counters", &self.counters).finish()
    }
}

type PResult<T> = Result<T, DropReason>;

fn forget(stats: &mut [ObjCounters], backend: u32) {
    if let Some(c) = stats.get_mut(backend as usize) {
        c.active_flows -= 1;
    }
}

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
            replica_out: None,
            refresh: replicate::Refresh::default(),
            fast_path: true,
            admission: Admission::default(),
        }
    }

    /// New flows a second this worker admits while saturated (0, the default: no limit). See `admission.rs`.
    pub fn set_new_flow_limit(&mut self, limit: u32) {
        self.admission = Admission::new(limit);
    }

    /// A poll at `now` (ms) of the worker's ports received `received` packets, and `full` whole bursts in a row from
    /// one port (more packets were waiting after each; the most of any port; 0: none was full). Full bursts in a row
    /// make the worker saturated, for [`Pipeline::set_new_flow_limit`].
    #[inline]
    pub fn observe_poll(&mut self, received: usize, full: u32, now: u32) {
        if received == 0 {
            self.admission.idle();
            return;
        }
        self.admission.observe(full, now);
        if self.admission.saturated() {
            self.counters.saturated_polls += 1;
        }
    }

    /// Turn the established fast path off or on (on by default). Its result is the general path's; this exists
    /// to compare the two (tests, `edgelb-perf --no-fast-path`).
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path = on;
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

    /// Process one packet received on `in_port` at tick `now` (milliseconds): [`Pipeline::parse`] then
    /// [`Pipeline::process_parsed`].
    #[inline]
    pub fn process<B: PacketBuf>(&mut self, cfg: &DataplaneConfig, in_port: PortId, pkt: &mut B, now: u32) -> Verdict {
        let parsed = self.parse(cfg, pkt.data());
        self.process_parsed(cfg, in_port, pkt, now, &parsed)
    }

    /// Stage 3: finish a packet [`Pipeline::parse`] parsed (the buffer must be the one parsed, unchanged).
    #[inline]
    pub fn process_parsed<B: PacketBuf>(
        &mut self,
        cfg: &DataplaneConfig,
        in_port: PortId,
        pkt: &mut B,
        now: u32,
        parsed: &Parsed,
    ) -> Verdict {
        self.counters.rx += 1;
        // The common record first, with a test of its own rather than a jump through the match's table.
        if let Stage1::Fast(f) = &parsed.0 {
            let v = self.fast_or_general(cfg, in_port, pkt, now, f, false);
            self.count(v);
            return v;
        }
        let v = match &parsed.0 {
            Stage1::Full(Ok(p)) => self.process_inner(cfg, in_port, pkt, now, p).unwrap_or_else(Verdict::Drop),
            // Taken above; the match must still name it.
            Stage1::Fast(f) => self.fast_or_general(cfg, in_port, pkt, now, f, false),
            Stage1::Fast6(f) => self.fast_or_general(cfg, in_port, pkt, now, f, false),
            Stage1::Reply(f) => self.fast_or_general(cfg, in_port, pkt, now, f, true),
            Stage1::Reply6(f) => self.fast_or_general(cfg, in_port, pkt, now, f, true),
            Stage1::Full(Err(d)) => d.verdict(),
        };
        self.count(v);
        v
    }

    /// Stage 3 of a packet whose verdict stage 1 decided ([`Parsed::decided`]): counted as
    /// [`Pipeline::process_parsed`] counts it, the buffer untouched.
    #[inline]
    pub fn finish_decided(&mut self, v: Verdict) {
        self.counters.rx += 1;
        self.count(v);
    }

    #[inline(always)]
    fn count(&mut self, v: Verdict) {
        match v {
            Verdict::Tx(_) => self.counters.tx += 1,
            Verdict::SlowPath => self.counters.slowpath += 1,
            Verdict::Drop(r) => self.counters.drops[r.index()] += 1,
            Verdict::Handoff(_) => self.counters.handoff += 1,
            Verdict::Resolve(_) => self.counters.held += 1,
        }
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
        p: &Pkt,
    ) -> PResult<Verdict> {
        let mut p = *p;
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
        self.follow_fragments(cfg, &mut p, now)?;
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
            if !cfg.unowned_vips.is_empty() && cfg.unowned_vips.contains(&p.dst) {
                self.counters.not_owner += 1;
            }
            let svc = cfg.service(si).ok_or(DropReason::NoService)?;
            return self.for_service(cfg, svc, in_port, pkt, &p, now, bytes);
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
        if cfg.is_own(&p.dst)
            || (p.proto == crate::slowpath::vrrp::PROTO && crate::slowpath::vrrp::is_group(&p.dst, p.v4))
        {
            return Ok(Verdict::SlowPath);
        }
        Err(DropReason::NotForUs)
    }

    /// Fragments: a first fragment records its ports; a later one takes them from it (or is dropped when it carries
    /// a transport protocol with ports and its first fragment was not seen).
    #[inline(always)]
    fn follow_fragments(&mut self, cfg: &DataplaneConfig, p: &mut Pkt, now: u32) -> PResult<()> {
        match p.frag {
            Frag::No => {}
            Frag::First(ident) => {
                let k = FragKey { src: p.src, dst: p.dst, ident, proto: p.proto };
                let h = k.hash();
                let ports = (u32::from(p.sport) << 16) | u32::from(p.dport);
                let e = Entry::new(now.wrapping_add(cfg.timeouts_ms.fragment), ports, 0, 1, 0);
                match self.frags.lookup(&k, h, now) {
                    Lookup::Hit(slot, _) => {
                        self.frags.update(slot, ports, 0);
                        self.frags.touch(slot, 1, e.expires);
                    }
                    Lookup::Miss(_) => {
                        let _ = self.frags.insert(k, h, now, e, |_| crate::lb::conntrack::EVERY_SLOT);
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
        Ok(())
    }

    /// A packet for service `svc`: schedule it to a backend, count it, rewrite it for the service's mode.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn for_service<B: PacketBuf>(
        &mut self,
        cfg: &DataplaneConfig,
        svc: &Service,
        in_port: PortId,
        pkt: &mut B,
        p: &Pkt,
        now: u32,
        bytes: u64,
    ) -> PResult<Verdict> {
        if p.ttl <= 1 {
            return Err(DropReason::TtlExpired);
        }
        let (bid, snat_port) =
            if p.v4 { self.schedule::<KeyV4>(cfg, svc, p, now)? } else { self.schedule::<KeyV6>(cfg, svc, p, now)? };
        let b = cfg.backend(bid).ok_or(DropReason::NoBackend)?;
        self.count_forwarded(bid, svc.id, bytes);
        self.act(cfg, svc, b, snat_port, in_port, pkt, p)
    }

    /// A client packet of `bytes` forwarded to backend `bid` of service `svc_id`: their packet and byte counters.
    #[inline(always)]
    fn count_forwarded(&mut self, bid: u32, svc_id: u32, bytes: u64) {
        self.count_objects(bid, svc_id, |c| {
            c.packets += 1;
            c.bytes += bytes;
        });
    }

    /// [`Pipeline::count_new_flow`] and [`Pipeline::count_forwarded`] in one, each object's counters found once: the
    /// first packet of a new flow to backend `bid` of service `svc_id`, forwarded.
    #[inline(always)]
    fn count_new_forwarded(&mut self, bid: u32, svc_id: u32, bytes: u64) {
        self.counters.new_flows += 1;
        self.count_objects(bid, svc_id, |c| {
            c.new_flows += 1;
            c.packets += 1;
            c.bytes += bytes;
        });
    }

    /// `count` applied to the counters of backend `bid` and of service `svc_id` (those that exist).
    #[inline(always)]
    fn count_objects(&mut self, bid: u32, svc_id: u32, count: impl Fn(&mut ObjCounters)) {
        if let Some(c) = self.backend_stats.get_mut(bid as usize) {
            count(c);
        }
        if let Some(c) = self.service_stats.get_mut(svc_id as usize) {
            count(c);
        }
    }
}
