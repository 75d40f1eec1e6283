//! edgelb dataplane: the sans-I/O packet pipeline and the poll loop that drives it.
//!
//! Layout: [`wire`] header views; [`lb`] Maglev, connection tracking and the service snapshot; [`forward`]
//! rewrite actions; [`pipeline`] one packet's fate; [`port`] the `Port` trait and its backends; [`worker`] one
//! pinned core. Unsafe code is confined to [`mem`] (huge-page backed tables, prefetch), [`port::afpacket`] and
//! [`port::afxdp`] (kernel rings) and `port::dpdk` (the DPDK boundary); everything else is safe Rust.
#![deny(unsafe_code)]

pub mod config;
pub mod forward;
pub mod lb;
pub mod mem;
pub mod packet;
pub mod pipeline;
pub mod port;
pub mod slowpath;
pub mod wire;
pub mod worker;
