//! Forwarding actions: in-place rewrites of a parsed packet.
//!
//! [`nat`] rewrites addresses and ports with incremental checksum updates (RFC 1624); [`tunnel`] prepends IPIP or
//! GUE headers; [`icmp`] answers echo requests, translates ICMP errors and builds fragmentation-needed /
//! packet-too-big messages; [`l2`] writes Ethernet addresses. Every function works on byte offsets the pipeline
//! already validated, and reports a [`crate::pipeline::DropReason`] rather than panicking when room runs out.

pub mod icmp;
pub mod l2;
pub mod nat;
pub mod tunnel;
