//! edgelb control plane: config files, the management API (gRPC) over the one validated model; health checks,
//! Kubernetes sync, BGP announcement and SR-IOV VF binding arrive with their issues.
// Unsafe code only in `bgp::md5` (the TCP MD5 socket option) and `os` (if_nametoindex), which allow it for themselves.
#![deny(unsafe_code)]

pub mod api;
pub mod bgp;
pub mod config;
pub mod health;
pub mod k8s;
pub mod metrics;
pub mod os;
pub mod sriov;
pub mod stats;
pub mod store;
