//! VIP announcement over BGP: an embedded announce-only speaker. [`wire`] is the message codec, [`session`] one
//! peer's state machine, [`speaker`] the policy (which VIPs) and the peers.

pub mod md5;
pub mod session;
pub mod speaker;
pub mod wire;

/// A community written `ASN:VALUE` (16 bits each).
pub fn parse_community(s: &str) -> Option<u32> {
    let (a, v) = s.split_once(':')?;
    let (a, v): (u16, u16) = (a.trim().parse().ok()?, v.trim().parse().ok()?);
    Some((u32::from(a) << 16) | u32::from(v))
}

/// A large community written `ASN:DATA1:DATA2` (32 bits each).
pub fn parse_large_community(s: &str) -> Option<(u32, u32, u32)> {
    let v: Vec<u32> = s.split(':').map(|x| x.trim().parse().ok()).collect::<Option<_>>()?;
    match v.as_slice() {
        [g, a, b] => Some((*g, *a, *b)),
        _ => None,
    }
}

/// Requests to the running speaker from the API: add a peer, remove one by name.
#[derive(Debug)]
pub enum PeerOp {
    /// Start a session with this peer.
    Add(session::PeerConfig, tokio::sync::oneshot::Sender<Result<(), String>>),
    /// End the session with the peer of this name.
    Remove(String, tokio::sync::oneshot::Sender<Result<(), String>>),
}
