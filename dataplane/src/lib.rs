//! edgelb dataplane: the sans-I/O packet pipeline and the poll loop that drives it.
//!
//! Layout: [`wire`] header views; [`lb`] Maglev and connection tracking; [`model`] the service model and its one
//! validation; [`snapshot`] what workers read, built from a valid model; [`forward`] rewrite actions; [`pipeline`]
//! one packet's fate; [`slowpath`] ARP/NDP/ICMP and neighbour resolution; [`port`] the `Port` trait and its
//! backends; [`worker`] one pinned core. Unsafe code is confined to [`mem`] (huge-page backed tables, prefetch), [`port::afpacket`] and
//! [`port::afxdp`] (kernel rings) and `port::dpdk` (the DPDK boundary); everything else is safe Rust.
#![deny(unsafe_code)]

pub mod forward;
pub mod lb;
pub mod mem;
pub mod model;
pub mod packet;
pub mod pipeline;
pub mod port;
pub mod slowpath;
pub mod snapshot;
pub mod wire;
pub mod worker;

/// A deterministic xorshift64 stream for the crate's randomised tests (the same cases every run).
#[cfg(test)]
pub(crate) fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
