//! edgelb control plane: config files today; the gRPC API server, health checks, Kubernetes sync, BGP announcement
//! and SR-IOV VF binding arrive with their issues.
#![forbid(unsafe_code)]

pub mod config;
