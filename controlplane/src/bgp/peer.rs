//! A BGP peer as the config file or the API gives it, and the one validation both use: the same defaults, the same
//! rules and the same error (a field name the caller renders in its own terms: `bgp.peer[0].hold_time` at a line of
//! the file, `hold_time: ...` in an API status).

use super::session::PeerConfig;
use edgelb_dataplane::model::{ConfigError, FieldPath};
use std::net::{IpAddr, Ipv4Addr};

/// BGP's port.
pub const DEFAULT_PORT: u16 = 179;
/// Hold time proposed when none is given, seconds (RFC 4271 section 10 suggests 90).
pub const DEFAULT_HOLD_TIME: u16 = 90;
/// Seconds between connection attempts when none is given.
pub const DEFAULT_CONNECT_RETRY: u16 = 5;
/// Longest connect-retry interval accepted, seconds.
pub const MAX_CONNECT_RETRY: u32 = 3600;
/// Longest graceful-restart time, seconds: the capability's field is 12 bits (RFC 4724 section 3).
pub const MAX_GRACEFUL_RESTART: u32 = 4095;
/// Longest TCP MD5 key (RFC 2385, as Linux's TCP_MD5SIG_MAXKEYLEN).
pub const MAX_PASSWORD_LEN: usize = 80;
/// BFD intervals when `bfd = {}` leaves them out, milliseconds (FRR's default; a failure noticed in under a second).
pub const DEFAULT_BFD_INTERVAL_MS: u32 = 300;
/// Default BFD detection multiplier.
pub const DEFAULT_BFD_MULTIPLIER: u32 = 3;
/// Shortest BFD interval accepted, milliseconds (a control-plane task's timers, not a hardware offload).
pub const MIN_BFD_INTERVAL_MS: u32 = 10;
/// Longest BFD interval accepted, milliseconds.
pub const MAX_BFD_INTERVAL_MS: u32 = 60_000;

/// BFD for a peer before validation (`None`: the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BfdSpec {
    /// Desired minimum transmit interval once Up, milliseconds.
    pub min_tx_ms: Option<u32>,
    /// Required minimum receive interval, milliseconds.
    pub min_rx_ms: Option<u32>,
    /// Detection time multiplier.
    pub multiplier: Option<u32>,
}

/// A peer before validation. `None` means "not given": the defaults above apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSpec {
    /// Name for logs, status and removal (default: the address).
    pub name: Option<String>,
    /// Peer address.
    pub address: String,
    /// Peer AS.
    pub remote_as: u32,
    /// Peer TCP port.
    pub port: Option<u32>,
    /// Source address of the session.
    pub source: Option<String>,
    /// Hold time to propose: 0 (no hold timer, no keepalives) or at least 3 seconds.
    pub hold_time: Option<u32>,
    /// Seconds between connection attempts.
    pub connect_retry: Option<u32>,
    /// eBGP multihop TTL.
    pub multihop_ttl: Option<u32>,
    /// TCP MD5 key.
    pub password: Option<String>,
    /// Next hop for IPv4 routes.
    pub next_hop_v4: Option<String>,
    /// Next hop for IPv6 routes.
    pub next_hop_v6: Option<String>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP).
    pub local_pref: Option<u32>,
    /// Communities, `ASN:VALUE`.
    pub communities: Vec<String>,
    /// Large communities, `ASN:DATA1:DATA2`.
    pub large_communities: Vec<String>,
    /// Graceful-restart time to advertise.
    pub graceful_restart: Option<u32>,
    /// Wait for the peer to connect.
    pub passive: bool,
    /// Run a BFD session with the peer (RFC 5880/5881); its failure drops the BGP session at once.
    pub bfd: Option<BfdSpec>,
}

/// What is wrong with a peer, the path relative to the peer (e.g. `communities[1]`): the model's [`ConfigError`],
/// which the file and the API render in their own terms.
pub type PeerError = ConfigError;

fn err(field: &'static str, message: impl Into<String>) -> PeerError {
    ConfigError::new(FieldPath::default().field(field), message)
}

fn ip(field: &'static str, s: &str) -> Result<IpAddr, PeerError> {
    s.trim().parse().map_err(|_| err(field, format!("{s:?} is not an IP address")))
}

fn ranged(field: &'static str, v: Option<u32>, default: u16, lo: u32, hi: u32, what: &str) -> Result<u16, PeerError> {
    match v {
        None => Ok(default),
        Some(x) if (lo..=hi).contains(&x) => Ok(x as u16),
        Some(x) => Err(err(field, format!("{x}: {what}"))),
    }
}

/// An optional address that must be of one family (`pick` returns `None` for the other).
fn of_family<T>(field: &'static str, s: Option<&str>, pick: fn(IpAddr) -> Option<T>) -> Result<Option<T>, PeerError> {
    let Some(s) = s else { return Ok(None) };
    let fam = if field.ends_with("v4") { "an IPv4 address" } else { "an IPv6 address" };
    pick(ip(field, s)?).map(Some).ok_or_else(|| err(field, fam))
}

/// Every item of a list parsed, the first that does not parse named by its index.
fn listed<T>(
    field: &'static str,
    items: &[String],
    parse: fn(&str) -> Option<T>,
    what: &str,
) -> Result<Vec<T>, PeerError> {
    items
        .iter()
        .enumerate()
        .map(|(i, c)| {
            parse(c)
                .ok_or_else(|| ConfigError::new(FieldPath::default().field(field).index(i), format!("{c:?} {what}")))
        })
        .collect()
}

/// BFD's timers from its spec; errors name `bfd.<field>`.
fn bfd_timers(b: &BfdSpec) -> Result<crate::ha::bfd::Timers, PeerError> {
    let field = |f: &'static str, m: String| ConfigError::new(FieldPath::default().field("bfd").field(f), m);
    let ms = |f: &'static str, v: Option<u32>| match v.unwrap_or(DEFAULT_BFD_INTERVAL_MS) {
        x @ MIN_BFD_INTERVAL_MS..=MAX_BFD_INTERVAL_MS => Ok(x * 1000),
        x => Err(field(f, format!("{x}: {MIN_BFD_INTERVAL_MS} to {MAX_BFD_INTERVAL_MS} milliseconds"))),
    };
    let multiplier = match b.multiplier.unwrap_or(DEFAULT_BFD_MULTIPLIER) {
        m @ 1..=255 => m as u8,
        m => return Err(field("multiplier", format!("{m}: 1 to 255"))),
    };
    Ok(crate::ha::bfd::Timers {
        min_tx_us: ms("min_tx_ms", b.min_tx_ms)?,
        min_rx_us: ms("min_rx_ms", b.min_rx_ms)?,
        multiplier,
    })
}

/// Validate a peer of the speaker with AS `local_as` and identifier `router_id`.
pub fn validate(spec: &PeerSpec, local_as: u32, router_id: Ipv4Addr) -> Result<PeerConfig, PeerError> {
    if spec.address.trim().is_empty() {
        return Err(err("address", "required"));
    }
    let address = ip("address", &spec.address)?;
    if spec.remote_as == 0 {
        return Err(err("remote_as", "AS 0 is reserved"));
    }
    let port = ranged("port", spec.port, DEFAULT_PORT, 1, 65535, "not a port (1 to 65535)")?;
    let hold_time = match spec.hold_time {
        Some(1 | 2) => {
            return Err(err(
                "hold_time",
                format!("{}: 0 (no hold timer) or 3 to 65535 seconds", spec.hold_time.unwrap_or(0)),
            ))
        }
        h => ranged("hold_time", h, DEFAULT_HOLD_TIME, 0, 65535, "0 (no hold timer) or 3 to 65535 seconds")?,
    };
    let connect_retry = ranged(
        "connect_retry",
        spec.connect_retry,
        DEFAULT_CONNECT_RETRY,
        1,
        MAX_CONNECT_RETRY,
        &format!("1 to {MAX_CONNECT_RETRY} seconds"),
    )?;
    let ttl = match spec.multihop_ttl {
        None => None,
        Some(t @ 1..=255) => Some(t as u8),
        Some(t) => return Err(err("multihop_ttl", format!("{t}: 1 to 255"))),
    };
    if let Some(pw) = &spec.password {
        if pw.is_empty() || pw.len() > MAX_PASSWORD_LEN {
            return Err(err("password", format!("1 to {MAX_PASSWORD_LEN} characters (TCP MD5 key)")));
        }
    }
    let source = spec.source.as_deref().map(|s| ip("source", s)).transpose()?;
    let next_hop_v4 = of_family("next_hop_v4", spec.next_hop_v4.as_deref(), |a| match a {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    })?;
    let next_hop_v6 = of_family("next_hop_v6", spec.next_hop_v6.as_deref(), |a| match a {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    })?;
    let communities =
        listed("communities", &spec.communities, super::parse_community, "is not ASN:VALUE (16 bits each)")?;
    let large_communities = listed(
        "large_communities",
        &spec.large_communities,
        super::parse_large_community,
        "is not ASN:DATA1:DATA2 (32 bits each)",
    )?;
    let graceful_restart = match spec.graceful_restart {
        None => None,
        Some(t) if t <= MAX_GRACEFUL_RESTART => Some(t as u16),
        Some(t) => return Err(err("graceful_restart", format!("{t}: at most {MAX_GRACEFUL_RESTART} seconds"))),
    };
    let bfd = spec.bfd.as_ref().map(bfd_timers).transpose()?;
    Ok(PeerConfig {
        name: spec.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| address.to_string()),
        address,
        port,
        remote_as: spec.remote_as,
        local_as,
        router_id,
        source,
        hold_time,
        connect_retry,
        ttl,
        password: spec.password.clone(),
        next_hop_v4,
        next_hop_v6,
        med: spec.med,
        local_pref: spec.local_pref,
        communities,
        large_communities,
        graceful_restart,
        passive: spec.passive,
        bfd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PeerSpec {
        PeerSpec { address: "198.18.0.2".into(), remote_as: 65001, ..Default::default() }
    }

    fn check(s: PeerSpec) -> Result<PeerConfig, PeerError> {
        validate(&s, 65000, Ipv4Addr::new(198, 18, 0, 1))
    }

    #[test]
    fn defaults_in_one_place() {
        let p = check(spec()).unwrap();
        assert_eq!((p.port, p.hold_time, p.connect_retry, p.ttl), (179, 90, 5, None));
        assert_eq!((p.name.as_str(), p.password, p.graceful_restart), ("198.18.0.2", None, None));
    }

    #[test]
    fn hold_time_zero_means_no_hold_timer_and_one_or_two_are_refused() {
        assert_eq!(check(PeerSpec { hold_time: Some(0), ..spec() }).unwrap().hold_time, 0);
        assert_eq!(check(PeerSpec { hold_time: Some(3), ..spec() }).unwrap().hold_time, 3);
        for h in [1, 2, 65536] {
            assert_eq!(
                check(PeerSpec { hold_time: Some(h), ..spec() }).unwrap_err().path.to_string(),
                "hold_time",
                "{h}"
            );
        }
    }

    #[test]
    fn every_rule_names_its_field() {
        let cases: Vec<(PeerSpec, &str)> = vec![
            (PeerSpec { address: String::new(), ..spec() }, "address"),
            (PeerSpec { address: "nope".into(), ..spec() }, "address"),
            (PeerSpec { remote_as: 0, ..spec() }, "remote_as"),
            (PeerSpec { port: Some(0), ..spec() }, "port"),
            (PeerSpec { port: Some(65536), ..spec() }, "port"),
            (PeerSpec { connect_retry: Some(0), ..spec() }, "connect_retry"),
            (PeerSpec { connect_retry: Some(3601), ..spec() }, "connect_retry"),
            (PeerSpec { multihop_ttl: Some(0), ..spec() }, "multihop_ttl"),
            (PeerSpec { multihop_ttl: Some(256), ..spec() }, "multihop_ttl"),
            (PeerSpec { password: Some(String::new()), ..spec() }, "password"),
            (PeerSpec { password: Some("x".repeat(81)), ..spec() }, "password"),
            (PeerSpec { source: Some("x".into()), ..spec() }, "source"),
            (PeerSpec { next_hop_v4: Some("2001:db8::1".into()), ..spec() }, "next_hop_v4"),
            (PeerSpec { next_hop_v6: Some("198.18.0.1".into()), ..spec() }, "next_hop_v6"),
            (PeerSpec { communities: vec!["1:2".into(), "1:x".into()], ..spec() }, "communities[1]"),
            (PeerSpec { large_communities: vec!["1:2".into()], ..spec() }, "large_communities[0]"),
            (PeerSpec { graceful_restart: Some(4096), ..spec() }, "graceful_restart"),
        ];
        for (s, field) in cases {
            assert_eq!(check(s.clone()).unwrap_err().path.to_string(), field, "{s:?}");
        }
        assert_eq!(check(PeerSpec { password: Some("x".repeat(80)), ..spec() }).unwrap().password.unwrap().len(), 80);
        assert_eq!(check(PeerSpec { graceful_restart: Some(4095), ..spec() }).unwrap().graceful_restart, Some(4095));
    }

    #[test]
    fn bfd_defaults_and_rules() {
        let with = |b: BfdSpec| check(PeerSpec { bfd: Some(b), ..spec() });
        assert_eq!(check(spec()).unwrap().bfd, None);
        let t = with(BfdSpec::default()).unwrap().bfd.unwrap();
        assert_eq!((t.min_tx_us, t.min_rx_us, t.multiplier), (300_000, 300_000, 3));
        let t =
            with(BfdSpec { min_tx_ms: Some(100), min_rx_ms: Some(10), multiplier: Some(255) }).unwrap().bfd.unwrap();
        assert_eq!((t.min_tx_us, t.min_rx_us, t.multiplier), (100_000, 10_000, 255));
        for (b, field) in [
            (BfdSpec { min_tx_ms: Some(9), ..Default::default() }, "bfd.min_tx_ms"),
            (BfdSpec { min_rx_ms: Some(60_001), ..Default::default() }, "bfd.min_rx_ms"),
            (BfdSpec { multiplier: Some(0), ..Default::default() }, "bfd.multiplier"),
            (BfdSpec { multiplier: Some(256), ..Default::default() }, "bfd.multiplier"),
        ] {
            assert_eq!(with(b).unwrap_err().path.to_string(), field, "{b:?}");
        }
    }
}
