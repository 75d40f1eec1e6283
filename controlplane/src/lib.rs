//! edgelb control plane: config files, the management API (gRPC) over the one validated model; health checks,
//! Kubernetes sync, BGP announcement and SR-IOV VF binding arrive with their issues.
// The only unsafe code is the TCP MD5 socket option (`bgp::md5`), which allows it for itself.
#![deny(unsafe_code)]

pub mod api;
pub mod bgp;
pub mod config;
pub mod health;
pub mod metrics;
