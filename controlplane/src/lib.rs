//! edgelb control plane: the [`store`] holding the one validated model and everything that changes or reads it — the
//! config file ([`config`]), the gRPC API ([`api`]), health checks ([`health`]), Kubernetes sync ([`k8s`]), BGP
//! announcement ([`bgp`]), `/metrics` ([`metrics`], over [`stats`]) — wired together by [`control::ControlPlane`];
//! SR-IOV VF preparation ([`sriov`]).
// Unsafe code only in `bgp::md5` (the TCP MD5 socket option) and `os` (if_nametoindex, recvmsg with the TTL), which
// allow it for themselves.
#![deny(unsafe_code)]

pub mod api;
pub mod bgp;
pub mod config;
pub mod control;
pub mod doctor;
pub mod ha;
pub mod health;
pub mod k8s;
pub mod metrics;
pub mod os;
pub mod sriov;
pub mod state;
pub mod stats;
pub mod store;
