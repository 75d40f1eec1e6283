//! edgelb: an L4 load-balancer appliance for bare-metal Kubernetes edges.
//!
//! The root package carries the appliance binaries — `edgelbd` (the daemon, [`daemon`]), `edgelbctl` (the API's
//! client, [`ctl`]) and `edgelb` (operator commands: `edgelb lab`, `edgelb daemon`, `edgelb ctl`) — and the
//! end-to-end tests in `tests/`. The packet pipeline lives in
//! [`edgelb_dataplane`].
#![forbid(unsafe_code)]

pub mod ctl;
pub mod daemon;

pub use edgelb_dataplane as dataplane;
