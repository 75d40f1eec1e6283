//! VIP announcement over BGP: an embedded announce-only speaker. [`wire`] is the message codec, [`fsm`] a session's
//! decisions (unit-tested without sockets), [`session`] one peer's state machine as a task, [`speaker`] the policy
//! (which VIPs) and the peers, [`peer`] the one validation of a peer's settings.

pub mod fsm;
pub mod md5;
pub mod peer;
pub mod session;
pub mod speaker;
/// The message codec, a crate of its own (no runtime) so that it is fuzzed without the control plane.
pub use edgelb_bgp_codec as wire;
pub use edgelb_bgp_codec::{parse_community, parse_large_community};

/// Requests to the running speaker from the API: add a peer, remove one by name.
#[derive(Debug)]
pub enum PeerOp {
    /// Start a session with this peer.
    Add(session::PeerConfig, tokio::sync::oneshot::Sender<Result<(), String>>),
    /// End the session with the peer of this name.
    Remove(String, tokio::sync::oneshot::Sender<Result<(), String>>),
}
