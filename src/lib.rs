//! edgelb: an L4 load-balancer appliance for bare-metal Kubernetes edges.
//!
//! The root package carries the appliance binaries (`edgelbd`, `edgelbctl`, arriving with later issues) and the
//! end-to-end tests in `tests/`. The packet pipeline lives in [`edgelb_dataplane`].
#![forbid(unsafe_code)]

pub use edgelb_dataplane as dataplane;
