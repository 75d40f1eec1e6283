//! VIP announcement over BGP: an embedded announce-only speaker. [`wire`] is the message codec, [`session`] one
//! peer's state machine, [`speaker`] the policy (which VIPs) and the peers.

pub mod md5;
pub mod session;
pub mod speaker;
pub mod wire;
