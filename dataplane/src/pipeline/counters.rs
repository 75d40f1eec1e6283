//! Drop reasons and packet counters: each kept once, named once, read by the worker, the API and `/metrics`.

use super::*;

/// `DropReason`, its counter order, names and help from one table; parse errors come first, in their own order.
macro_rules! drop_reasons {
    ($( $v:ident = $name:literal, $help:literal; )*) => {
        /// Why a packet was dropped. One counter each.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason {
            /// A header failed to parse.
            Parse(ParseError),
            $( #[doc = $help] $v, )*
        }

        /// The reasons after the parse errors, as a plain enum: its discriminant is the counter offset.
        #[derive(Clone, Copy)]
        enum Own {
            $( $v, )*
        }

        impl DropReason {
            const OWN: [DropReason; [$( $name ),*].len()] = [$( DropReason::$v ),*];

            /// Number of distinct reasons (size of the counter array).
            pub const COUNT: usize = ParseError::ALL.len() + Self::OWN.len();

            /// Every reason, in counter order.
            pub fn all() -> impl Iterator<Item = DropReason> {
                ParseError::ALL.into_iter().map(DropReason::Parse).chain(Self::OWN)
            }

            /// Counter index.
            pub fn index(self) -> usize {
                match self {
                    DropReason::Parse(e) => e as usize,
                    $( DropReason::$v => ParseError::ALL.len() + Own::$v as usize, )*
                }
            }

            /// Stable snake-case name for counter labels.
            pub fn name(self) -> &'static str {
                match self {
                    DropReason::Parse(e) => e.name(),
                    $( DropReason::$v => $name, )*
                }
            }

            /// One line saying what it means.
            pub fn help(self) -> &'static str {
                match self {
                    DropReason::Parse(e) => e.help(),
                    $( DropReason::$v => $help, )*
                }
            }
        }
    };
}

drop_reasons! {
    BadIpChecksum = "bad_ip_checksum", "IPv4 header checksum wrong.";
    UnknownEthertype = "unknown_ethertype", "Neither IPv4, IPv6 nor ARP.";
    NotForUs = "not_for_us", "Not for a VIP, not a tracked reply, not for the appliance.";
    NoService = "no_service", "For a VIP address, but no service on that protocol and port.";
    NoBackend = "no_backend", "The service has no active backend.";
    TtlExpired = "ttl_expired", "TTL or hop limit would reach zero.";
    NoRoute = "no_route", "No next hop: no connected network, gateway or static neighbour covers the destination.";
    IcmpUnsupported = "icmp_unsupported", "An ICMP type the appliance does not handle for VIPs.";
    IcmpErrorNoFlow = "icmp_error_no_flow", "An ICMP error about a flow that cannot be found or translated.";
    FragmentNoFirst = "fragment_no_first", "A non-first fragment whose first fragment was not seen.";
    FragmentTooShort = "fragment_too_short", "A first fragment too short to hold the whole transport header.";
    SnatExhausted = "snat_exhausted", "No full-NAT source port free.";
    FullNatNoState = "fullnat_no_state",
        "A full-NAT packet that needs flow state there is none of (a RST for an unknown flow).";
    TooBig = "too_big",
        "An IPv4 packet without DF too big for the egress MTU, tunnel header included (the appliance does not \
         fragment; with DF set, or over IPv6, the sender gets fragmentation-needed / packet-too-big instead).";
    NoHeadroom = "no_headroom", "The buffer has no room for the headers to add.";
    HandoffFull = "handoff_full", "The owning worker's hand-off ring was full.";
    TxFull = "tx_full", "The port's transmit ring was full.";
    SlowPathFull = "slowpath_full", "The slow-path ring was full.";
    Draining = "draining", "A new flow while the appliance drains.";
    Overload = "overload",
        "A new flow refused while the worker was saturated and its new-flow limit spent (`[workers] new_flow_limit`).";
    MappedAddress = "ipv4_mapped_address",
        "An IPv6 packet from or to an IPv4-mapped address (::ffff:0:0/96), which RFC 6890 allows in no datagram.";
}

impl From<ParseError> for DropReason {
    fn from(e: ParseError) -> Self {
        DropReason::Parse(e)
    }
}

/// A counter as operators see it: its metric name (`edgelb_` prefixed, `_total` suffixed in `/metrics`) and help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterInfo {
    /// Metric and `edgelbctl stats` name.
    pub name: &'static str,
    /// One line saying what it counts.
    pub help: &'static str,
}

/// `Counters`, its names and help, summing and listing from one table.
macro_rules! counters {
    ($( $f:ident = $name:literal, $help:literal; )*) => {
        /// Per-worker packet counters. Every one reaches operators: [`Counters::named`] lists them for the API's stats
        /// (`edgelbctl stats`) and `/metrics`.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Counters {
            $( #[doc = $help] pub $f: u64, )*
            /// Drops by [`DropReason::index`].
            pub drops: [u64; DropReason::COUNT],
        }

        impl Default for Counters {
            fn default() -> Self {
                Self { $( $f: 0, )* drops: [0; DropReason::COUNT] }
            }
        }

        impl Counters {
            /// Name and help of every counter, in listing order.
            pub const INFO: [CounterInfo; [$( $name ),*].len()] = [$( CounterInfo { name: $name, help: $help } ),*];

            /// Every counter with its value, in listing order (drops are listed by reason instead).
            pub fn named(&self) -> impl Iterator<Item = (&'static CounterInfo, u64)> {
                Self::INFO.iter().zip([$( self.$f ),*])
            }

            /// Add another worker's counters to these.
            pub fn add(&mut self, o: &Counters) {
                $( self.$f += o.$f; )*
                for (x, y) in self.drops.iter_mut().zip(o.drops.iter()) {
                    *x += y;
                }
            }
        }
    };
}

counters! {
    rx = "packets_received", "Packets the workers received.";
    tx = "packets_transmitted", "Packets the workers transmitted.";
    slowpath = "slowpath_packets", "Packets handed to the slow path (ARP, NDP, the appliance's own addresses).";
    handoff = "handoff_packets", "Packets handed to the worker that owns their flow.";
    held = "packets_held", "Packets held by the slow path until their next hop resolves.";
    fast_path = "packets_fast_path",
        "Packets forwarded by the established fast path (NAT and DSR-L2 client packets of tracked flows, and NAT and \
        full-NAT replies, both families).";
    new_flows = "flows_new", "Flows scheduled to a backend.";
    rescheduled = "flows_rescheduled", "Tracked flows whose backend went down or away, scheduled again.";
    midflow_pickups = "flows_midflow_pickups", "Non-SYN TCP packets without state, picked up as half-open flows.";
    untracked = "packets_untracked",
        "Packets forwarded without tracking (a bucket full of protected flows, a RST without state, or an IPv6 \
        destination the table cannot name: packets_untracked_ipv6_destinations).";
    untracked_destinations = "packets_untracked_ipv6_destinations",
        "Packets of new IPv6 flows forwarded without tracking: the IPv6 flow table names as many destinations (VIPs) \
        as it can, one for every 8 slots (at least 256, at most 65 535); a larger IPv6 flow table names more.";
    replies = "replies", "Reply packets (NAT, full-NAT) rewritten back to clients.";
    icmp_echo = "icmp_echo_replies", "Echo requests to VIPs answered.";
    icmp_errors_steered = "icmp_errors_steered", "ICMP errors about tracked flows steered to their backend.";
    icmp_too_big_sent = "icmp_too_big_sent", "Fragmentation-needed / packet-too-big messages sent to senders.";
    fragments_followed = "fragments_followed", "Non-first fragments that followed their first fragment.";
    replicas_queued = "flows_replicas_queued", "New flows queued for the peer appliances (flow replication).";
    replicas_queue_full = "flows_replicas_queue_full", "New flows not replicated: the outbound queue was full.";
    replicas_refresh_queued = "flows_replicas_refresh_queued",
        "Tracked flows queued again for the peers by the periodic re-send (keeps their copies alive).";
    replicas_installed = "flows_replicas_installed", "Flows a peer appliance replicated, installed here.";
    replicas_refreshed = "flows_replicas_refreshed",
        "A peer's flow tracked here already with the same backend and state (its periodic re-send): expiry renewed.";
    replicas_refused = "flows_replicas_refused",
        "Replicated flows not installed (no such service or backend here, full-NAT, known already, table full).";
    saturated_polls = "polls_saturated",
        "Polls that found the worker saturated (full receive bursts in a row): new flows are limited meanwhile.";
    not_owner = "vip_packets_not_owner",
        "Packets to a VIP another appliance owns now (VRRP Backup here, its Lease held elsewhere): forwarded, counted.";
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
