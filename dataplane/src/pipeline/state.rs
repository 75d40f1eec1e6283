//! Tracked-flow state: what a flow-table entry records about its connection, how it moves on, and how long it lives
//! in each state.

use super::*;

/// The connection state of a tracked flow (stored in the flow-table entry as its `u8` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FlowState {
    /// TCP, half-open: a SYN (or a picked-up mid-flow packet) seen, no completed handshake yet. Evictable.
    Syn = 1,
    /// TCP, established.
    Established = 2,
    /// TCP, a FIN or RST seen. Evictable; a new SYN on it starts a new flow.
    Closing = 3,
    /// UDP.
    Udp = 4,
    /// Any other protocol with ports.
    Other = 5,
}

/// Which way a packet of a tracked flow travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// Client to VIP.
    FromClient,
    /// Backend to client (NAT and full-NAT replies).
    FromBackend,
}

impl FlowState {
    /// The state an entry's stored byte holds (unknown values read as `Other`).
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Syn,
            2 => Self::Established,
            3 => Self::Closing,
            4 => Self::Udp,
            _ => Self::Other,
        }
    }

    /// Stable lower-case name, as the API and `edgelbctl flows` print it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Syn => "syn",
            Self::Established => "established",
            Self::Closing => "closing",
            Self::Udp => "udp",
            Self::Other => "other",
        }
    }

    /// The state a new flow starts in, from its first packet.
    pub(super) fn first(proto_: u8, tcp_flags: u8) -> Self {
        match proto_ {
            proto::TCP if tcp_flags & tcpf::FIN != 0 => Self::Closing,
            proto::TCP => Self::Syn,
            proto::UDP => Self::Udp,
            _ => Self::Other,
        }
    }

    /// The TCP transition for a packet of this flow. FIN or RST either way closes. A half-open flow becomes
    /// established on the client's ACK (without SYN), or on any backend reply but a SYN-ACK (NAT modes see replies).
    pub(super) fn next_tcp(self, flags: u8, dir: Direction) -> Self {
        let opens = match dir {
            Direction::FromClient => flags & tcpf::ACK != 0 && flags & tcpf::SYN == 0,
            Direction::FromBackend => flags & tcpf::SYN == 0,
        };
        if flags & (tcpf::RST | tcpf::FIN) != 0 {
            Self::Closing
        } else if self == Self::Syn && opens {
            Self::Established
        } else {
            self
        }
    }

    /// The states a full bucket may give up for a new flow: half-open and closing flows only.
    const EVICTABLE: [Self; 2] = [Self::Syn, Self::Closing];

    /// Whether a full bucket may give this entry up for a new flow ([`Self::EVICTABLE`]).
    #[cfg(test)]
    fn evictable(self) -> bool {
        Self::EVICTABLE.contains(&self)
    }

    /// How long an entry in this state lives without traffic.
    pub(super) fn timeout_ms(self, cfg: &DataplaneConfig) -> u32 {
        let t = &cfg.timeouts_ms;
        match self {
            Self::Syn => t.tcp_syn,
            Self::Established => t.tcp_established,
            Self::Closing => t.tcp_closing,
            Self::Udp | Self::Other => t.udp,
        }
    }
}

/// Entry flag: a full-NAT flow (its reverse entry matches on the SNAT address and port).
pub(super) const F_FULLNAT: u8 = 1;

/// For the flow table's eviction callback, which sees a bucket's stored state bytes: the slots whose state is
/// evictable ([`FlowState::EVICTABLE`]), as a mask.
#[inline(always)]
pub(super) fn evictable(states: &[u8; crate::lb::conntrack::WAYS]) -> u32 {
    FlowState::EVICTABLE.iter().fold(0, |m, &s| m | crate::mem::eq_mask_u8x8(states, s as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_transitions_by_direction() {
        use Direction::*;
        let ack = tcpf::ACK;
        let synack = tcpf::SYN | tcpf::ACK;
        // The client's SYN-ACK-less ACK opens; its retransmitted SYN does not.
        assert_eq!(FlowState::Syn.next_tcp(ack, FromClient), FlowState::Established);
        assert_eq!(FlowState::Syn.next_tcp(tcpf::SYN, FromClient), FlowState::Syn);
        // A backend's SYN-ACK does not open; its first data (or bare ACK) does, with or without ACK set.
        assert_eq!(FlowState::Syn.next_tcp(synack, FromBackend), FlowState::Syn);
        assert_eq!(FlowState::Syn.next_tcp(tcpf::PSH, FromBackend), FlowState::Established);
        assert_eq!(FlowState::Syn.next_tcp(tcpf::PSH, FromClient), FlowState::Syn);
        // FIN or RST closes from any state, either way; nothing reopens a closing flow here.
        for s in [FlowState::Syn, FlowState::Established, FlowState::Closing] {
            for d in [FromClient, FromBackend] {
                assert_eq!(s.next_tcp(tcpf::FIN | tcpf::ACK, d), FlowState::Closing);
                assert_eq!(s.next_tcp(tcpf::RST, d), FlowState::Closing);
            }
        }
        assert_eq!(FlowState::Closing.next_tcp(ack, FromClient), FlowState::Closing);
    }

    /// The eviction callback's mask marks exactly the slots whose stored byte reads as an evictable state, for every
    /// byte value in every slot.
    #[test]
    fn evictable_mask_reads_each_stored_byte() {
        for v in 0..=255u8 {
            for w in 0..8 {
                let mut states = [FlowState::Established as u8; 8];
                states[w] = v;
                let want = u32::from(FlowState::from_u8(v).evictable()) << w;
                assert_eq!(evictable(&states), want, "byte {v} in slot {w}");
            }
        }
        let mixed = [1, 2, 3, 4, 5, 0, 3, 1];
        assert_eq!(evictable(&mixed), 0b1100_0101);
    }

    #[test]
    fn stored_byte_round_trips() {
        for s in [FlowState::Syn, FlowState::Established, FlowState::Closing, FlowState::Udp, FlowState::Other] {
            assert_eq!(FlowState::from_u8(s as u8), s);
        }
    }
}
