//! edgelb control plane: gRPC API server, config files, health checks, Kubernetes sync, BGP announcement and
//! SR-IOV VF binding.
//!
//! Empty on purpose: each part is its own issue. Nothing here pretends to work yet.
#![forbid(unsafe_code)]
