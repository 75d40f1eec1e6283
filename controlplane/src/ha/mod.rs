//! High availability between appliances: [`bfd`] (fast failure detection for BGP peers, RFC 5880/5881) as a
//! sans-I/O state machine, and [`bfd_link`], its sockets and timers.

pub mod bfd;
pub mod bfd_link;
pub mod replicate;
