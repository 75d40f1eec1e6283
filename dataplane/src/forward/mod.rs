//! Forwarding actions: in-place rewrites of a parsed packet.
//!
//! [`nat`] rewrites addresses and ports with incremental checksum updates (RFC 1624); [`tunnel`] prepends IPIP or
//! GUE headers; [`icmp`] answers echo requests, translates ICMP errors and builds fragmentation-needed /
//! packet-too-big messages; [`l2`] writes Ethernet addresses. Every function works on byte offsets the pipeline
//! already validated, and reports a [`crate::pipeline::DropReason`] rather than panicking when room runs out.
//!
//! The transport header is handed over as an [`L4Header`], a token only [`L4Header::check`] makes: it proves that the
//! fixed part of the header (TCP 20 bytes, UDP 8, ICMP 8: ports and checksum field included) lies in the buffer. A
//! rewrite that needs ports or the L4 checksum takes the token, never a bare offset, so a packet whose header is cut
//! short (a tiny first fragment) cannot reach it with an offset the rewrite would trust.

pub mod icmp;
pub mod l2;
pub mod nat;
pub mod tunnel;

use crate::wire::{icmp as wicmp, proto, tcp, udp};

/// A transport header proven whole by [`L4Header::check`]: the fixed part of a TCP, UDP or ICMP header at
/// [`L4Header::offset`] lies inside the buffer it was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4Header {
    off: usize,
    proto: u8,
}

impl L4Header {
    /// The fixed header length of `l4proto` (TCP 20, UDP 8, ICMP/ICMPv6 8); `None` for protocols the appliance does
    /// not rewrite.
    pub const fn fixed_len(l4proto: u8) -> Option<usize> {
        match l4proto {
            proto::TCP => Some(tcp::MIN_HEADER_LEN),
            proto::UDP => Some(udp::HEADER_LEN),
            proto::ICMP | proto::ICMPV6 => Some(wicmp::HEADER_LEN),
            _ => None,
        }
    }

    /// The token for the header of `l4proto` at `off` in `buf`, if its fixed part (up to `end`, the end of the IP
    /// packet) is there.
    #[inline]
    pub fn check(buf: &[u8], off: usize, end: usize, l4proto: u8) -> Option<Self> {
        let need = Self::fixed_len(l4proto)?;
        let end = end.min(buf.len());
        (off <= end && end - off >= need).then_some(Self { off, proto: l4proto })
    }

    /// Where the header starts.
    #[inline]
    pub const fn offset(self) -> usize {
        self.off
    }

    /// The IP protocol it was checked for.
    #[inline]
    pub const fn protocol(self) -> u8 {
        self.proto
    }
}
