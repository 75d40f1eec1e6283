//! A port of any kernel driver, so one worker can own ports of different drivers.

use super::afpacket::AfPacketPort;
use super::afxdp::AfXdpPort;
use super::{Burst, Port, PortStats};
use crate::packet::MemBuf;

/// An AF_PACKET or AF_XDP port.
// One per port in a worker's port list, never moved on the packet path: the size difference between the variants
// costs nothing, while boxing the larger one would add a pointer chase to every burst.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyPort {
    /// Packet socket with mapped rings.
    AfPacket(AfPacketPort),
    /// XDP socket (copy mode).
    AfXdp(AfXdpPort),
}

impl Port for AnyPort {
    type Buf = MemBuf;

    #[inline]
    fn rx_burst(&mut self, out: &mut Burst<MemBuf>) -> usize {
        match self {
            AnyPort::AfPacket(p) => p.rx_burst(out),
            AnyPort::AfXdp(p) => p.rx_burst(out),
        }
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut Burst<MemBuf>) -> usize {
        match self {
            AnyPort::AfPacket(p) => p.tx_burst(pkts),
            AnyPort::AfXdp(p) => p.tx_burst(pkts),
        }
    }

    fn free(&mut self, buf: MemBuf) {
        match self {
            AnyPort::AfPacket(p) => p.free(buf),
            AnyPort::AfXdp(p) => p.free(buf),
        }
    }

    fn stats(&self) -> PortStats {
        match self {
            AnyPort::AfPacket(p) => p.stats(),
            AnyPort::AfXdp(p) => p.stats(),
        }
    }

    fn name(&self) -> &str {
        match self {
            AnyPort::AfPacket(p) => p.name(),
            AnyPort::AfXdp(p) => p.name(),
        }
    }
}
