//! What edgelb's custom resources ([`super::crd`]) become: `VIPPool`s join the file's pools, `BGPPeer`s are run by
//! the speaker like the API's peers, `L2Announcement`s become VRRP routers in the store for the daemon's slow path.
//! Each resource gets its conditions here (pure functions, tested without a cluster); the controller applies the
//! result and, holding the status Lease, writes the conditions.

use super::crd::{BGPPeer, Condition, L2Announcement, L2AnnouncementSpec, ResourceStatus, VIPPool};
use super::Pool;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// The conditions of one resource: Accepted and Programmed, with reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The spec's generation.
    pub generation: i64,
    /// (status, reason, message) of `Accepted`.
    pub accepted: (bool, &'static str, String),
    /// (status, reason, message) of `Programmed`.
    pub programmed: (bool, &'static str, String),
}

impl Verdict {
    fn refused(generation: i64, reason: &'static str, message: String) -> Self {
        Verdict {
            generation,
            accepted: (false, reason, message),
            programmed: (false, "NotAccepted", "not programmed: the resource was not accepted".into()),
        }
    }

    fn ok(generation: i64, programmed: (bool, &'static str, String)) -> Self {
        Verdict { generation, accepted: (true, "Accepted", "valid, no name clash".into()), programmed }
    }

    /// The status to write: the conditions, each keeping its transition time from `current` while its status
    /// stays the same.
    pub fn status(&self, current: Option<&ResourceStatus>, now: &str) -> ResourceStatus {
        let cond = |type_: &str, (ok, reason, message): &(bool, &'static str, String)| {
            let status = if *ok { "True" } else { "False" }.to_string();
            let since = current
                .and_then(|c| c.conditions.iter().find(|c| c.type_ == type_ && c.status == status))
                .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
            Condition {
                type_: type_.into(),
                status,
                reason: (*reason).into(),
                message: message.clone(),
                observed_generation: self.generation,
                last_transition_time: since,
            }
        };
        ResourceStatus { conditions: vec![cond("Accepted", &self.accepted), cond("Programmed", &self.programmed)] }
    }

    /// Does `current` already say what this verdict says (transition times aside)?
    pub fn shown_in(&self, current: Option<&ResourceStatus>) -> bool {
        current.is_some_and(|c| {
            let want = self.status(Some(c), "");
            want.conditions.len() == c.conditions.len()
                && want.conditions.iter().zip(&c.conditions).all(|(a, b)| {
                    (&a.type_, &a.status, &a.reason, &a.message, a.observed_generation)
                        == (&b.type_, &b.status, &b.reason, &b.message, b.observed_generation)
                })
        })
    }
}

/// The pools of the `VIPPool`s that are valid and whose name no file pool has, and each one's verdict.
pub fn pools(objects: &[&VIPPool], file_pools: &[Pool]) -> (Vec<Pool>, BTreeMap<String, Verdict>) {
    let mut sorted: Vec<&&VIPPool> = objects.iter().collect();
    sorted.sort_by_key(|p| p.name_any());
    let mut out = Vec::new();
    let mut verdicts = BTreeMap::new();
    for p in sorted {
        let name = p.name_any();
        let generation = p.metadata.generation.unwrap_or(0);
        let v = if file_pools.iter().any(|f| f.name == name) {
            Verdict::refused(generation, "NameConflict", format!("the config file has a pool named {name:?} too"))
        } else {
            match p.spec.addresses.iter().map(|a| super::parse_range(a)).collect::<Result<Vec<_>, _>>() {
                Err(e) => Verdict::refused(generation, "Invalid", format!("spec.addresses: {e}")),
                Ok(r) if r.is_empty() => Verdict::refused(generation, "Invalid", "spec.addresses: at least one".into()),
                Ok(ranges) => {
                    out.push(Pool {
                        name: name.clone(),
                        ranges,
                        namespaces: p.spec.namespaces.clone(),
                        selector: p.spec.service_selector.clone().unwrap_or_default().match_labels,
                        auto_assign: p.spec.auto_assign,
                    });
                    Verdict::ok(generation, (true, "InUse", "addresses are allocated from it".into()))
                }
            }
        };
        verdicts.insert(name, v);
    }
    (out, verdicts)
}

/// A `BGPPeer`'s spec as the peer rules ([`crate::bgp::peer::validate`]) read it; its name is the resource's.
pub fn peer_spec(p: &BGPPeer) -> crate::bgp::peer::PeerSpec {
    let s = &p.spec;
    crate::bgp::peer::PeerSpec {
        name: Some(p.name_any()),
        address: s.address.clone(),
        remote_as: s.remote_as,
        port: s.port,
        source: s.source.clone(),
        hold_time: s.hold_time,
        connect_retry: s.connect_retry,
        multihop_ttl: s.multihop_ttl,
        password: s.password.clone(),
        next_hop_v4: s.next_hop_v4.clone(),
        next_hop_v6: s.next_hop_v6.clone(),
        med: s.med,
        local_pref: s.local_pref,
        communities: s.communities.clone(),
        large_communities: s.large_communities.clone(),
        graceful_restart: s.graceful_restart,
        passive: s.passive,
        bfd: s.bfd.as_ref().map(|b| crate::bgp::peer::BfdSpec {
            min_tx_ms: b.min_tx_ms,
            min_rx_ms: b.min_rx_ms,
            multiplier: b.multiplier,
        }),
    }
}

/// What to do with the `BGPPeer`s: the peers this appliance should run (name → validated config), and the verdict
/// of those it will not run. `others` are the names of the peers the file and the API gave the speaker; `bgp` the
/// speaker's AS and identifier (`None`: no `[bgp]`).
pub fn peers(
    objects: &[&BGPPeer],
    others: &[String],
    bgp: Option<(u32, std::net::Ipv4Addr)>,
    labels: &BTreeMap<String, String>,
) -> (BTreeMap<String, crate::bgp::session::PeerConfig>, BTreeMap<String, Verdict>) {
    let mut run = BTreeMap::new();
    let mut verdicts = BTreeMap::new();
    for p in objects {
        let name = p.name_any();
        let generation = p.metadata.generation.unwrap_or(0);
        if others.contains(&name) {
            let m = format!("a peer named {name:?} comes from the config file or the API");
            verdicts.insert(name, Verdict::refused(generation, "NameConflict", m));
            continue;
        }
        // Without [bgp] the rules still run, with a placeholder AS, so a bad spec is named either way.
        let (asn, id) = bgp.unwrap_or((64_512, std::net::Ipv4Addr::new(198, 18, 0, 1)));
        match crate::bgp::peer::validate(&peer_spec(p), asn, id) {
            Err(e) => {
                verdicts.insert(name, Verdict::refused(generation, "Invalid", e.to_string()));
            }
            Ok(_) if bgp.is_none() => {
                let m = "this appliance has no [bgp] local_as and router_id".to_string();
                verdicts.insert(name, Verdict::ok(generation, (false, "BGPNotConfigured", m)));
            }
            Ok(_) if !super::crd::selects(p.spec.node_selector.as_ref(), labels) => {
                let m = "spec.nodeSelector does not select this appliance".to_string();
                verdicts.insert(name, Verdict::ok(generation, (false, "NotSelected", m)));
            }
            Ok(cfg) => {
                run.insert(name, cfg);
            }
        }
    }
    (run, verdicts)
}

/// An `L2Announcement`'s spec as a `[[vrrp]]` table reads it.
pub fn vrrp_fields(s: &L2AnnouncementSpec) -> crate::config::vrrp::Fields {
    let d = crate::config::vrrp::Fields::default();
    crate::config::vrrp::Fields {
        port: s.port.clone(),
        vrid: s.vrid,
        priority: s.priority.unwrap_or(d.priority),
        advert_interval_ms: s.advert_interval_ms.unwrap_or(d.advert_interval_ms),
        preempt: s.preempt.unwrap_or(d.preempt),
        preempt_delay_ms: s.preempt_delay_ms.unwrap_or(d.preempt_delay_ms),
        garp_count: s.garp_count.unwrap_or(d.garp_count),
        garp_interval_ms: s.garp_interval_ms.unwrap_or(d.garp_interval_ms),
        track_penalty: s.track_penalty.unwrap_or(d.track_penalty),
        virtual_mac: s.virtual_mac,
    }
}

/// What to do with the `L2Announcement`s: the routers this appliance should run, and each resource's verdict
/// (Programmed while it runs here). `ports` names each port and says whether it has an IPv4 address; `file` are
/// the config file's routers, whose names, VRIDs and VIPs a resource may not take.
pub fn routers(
    objects: &[&L2Announcement],
    ports: &[(String, bool)],
    file: &[edgelb_dataplane::slowpath::vrrp::RouterSpec],
    labels: &BTreeMap<String, String>,
) -> (Vec<edgelb_dataplane::slowpath::vrrp::RouterSpec>, BTreeMap<String, Verdict>) {
    let mut sorted: Vec<&&L2Announcement> = objects.iter().collect();
    sorted.sort_by_key(|p| p.name_any());
    let mut taken: Vec<edgelb_dataplane::slowpath::vrrp::RouterSpec> = file.to_vec();
    let mut run = Vec::new();
    let mut verdicts = BTreeMap::new();
    for r in sorted {
        let name = r.name_any();
        let generation = r.metadata.generation.unwrap_or(0);
        if file.iter().any(|f| f.name == name) {
            let m = format!("the config file has a [[vrrp]] named {name:?} too");
            verdicts.insert(name, Verdict::refused(generation, "NameConflict", m));
            continue;
        }
        let vips: Result<Vec<std::net::IpAddr>, String> = r
            .spec
            .vips
            .iter()
            .enumerate()
            .map(|(j, a)| a.trim().parse().map_err(|_| format!("spec.vips[{j}]: {a:?} is not an IP address")))
            .collect();
        let spec = vips.and_then(|vips| {
            crate::config::vrrp::router(Some(&name), &vrrp_fields(&r.spec), vips, ports, &taken)
                .map_err(|(field, m)| format!("spec.{}: {m}", camel(field)))
        });
        match spec {
            Err(e) => {
                let reason = if e.contains("is taken") || e.contains("a VIP of virtual router") {
                    "Conflict"
                } else {
                    "Invalid"
                };
                verdicts.insert(name, Verdict::refused(generation, reason, e));
            }
            Ok(_) if !super::crd::selects(r.spec.node_selector.as_ref(), labels) => {
                let m = "spec.nodeSelector does not select this appliance".to_string();
                verdicts.insert(name, Verdict::ok(generation, (false, "NotSelected", m)));
            }
            Ok(spec) => {
                taken.push(spec.clone());
                run.push(spec);
                verdicts.insert(name, Verdict::ok(generation, (true, "Running", "the virtual router runs".into())));
            }
        }
    }
    (run, verdicts)
}

/// `advert_interval_ms` → `advertIntervalMs`.
fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::crd::{BGPPeerSpec, L2AnnouncementSpec, LabelSelector, VIPPoolSpec};

    fn pool(name: &str, addresses: &[&str]) -> VIPPool {
        let mut p = VIPPool::new(
            name,
            VIPPoolSpec {
                addresses: addresses.iter().map(|s| s.to_string()).collect(),
                namespaces: vec![],
                service_selector: None,
                auto_assign: true,
            },
        );
        p.metadata.generation = Some(3);
        p
    }

    fn file_pool(name: &str) -> Pool {
        Pool {
            name: name.into(),
            ranges: vec![super::super::parse_range("198.19.1.0/28").unwrap()],
            namespaces: vec![],
            selector: BTreeMap::new(),
            auto_assign: true,
        }
    }

    #[test]
    fn vip_pools_join_unless_invalid_or_named_like_a_file_pool() {
        let (a, b, c) = (pool("a", &["198.19.2.0/28"]), pool("lab", &["198.19.3.0/28"]), pool("c", &["nope"]));
        let (got, verdicts) = pools(&[&c, &b, &a], &[file_pool("lab")]);
        assert_eq!(got.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a"]);
        assert!(verdicts["a"].accepted.0);
        assert_eq!(verdicts["a"].programmed.1, "InUse");
        assert_eq!(verdicts["lab"].accepted.1, "NameConflict");
        assert_eq!(verdicts["c"].accepted.1, "Invalid");
        assert!(verdicts["c"].accepted.2.contains("spec.addresses"), "{:?}", verdicts["c"]);
        assert_eq!(verdicts["c"].generation, 3);
    }

    #[test]
    fn a_status_keeps_its_transition_time_while_the_condition_holds() {
        let v = Verdict::ok(1, (true, "InUse", "m".into()));
        let first = v.status(None, "2026-01-01T00:00:00Z");
        assert!(v.shown_in(Some(&first)));
        let again = v.status(Some(&first), "2026-01-02T00:00:00Z");
        assert_eq!(again, first);
        let refused = Verdict::refused(2, "Invalid", "x".into());
        assert!(!refused.shown_in(Some(&first)));
        let after = refused.status(Some(&first), "2026-01-03T00:00:00Z");
        assert_eq!(after.conditions[0].last_transition_time, "2026-01-03T00:00:00Z");
        assert_eq!(after.conditions[0].status, "False");
    }

    fn peer(name: &str, address: &str, sel: Option<(&str, &str)>) -> BGPPeer {
        BGPPeer::new(
            name,
            BGPPeerSpec {
                address: address.into(),
                remote_as: 65001,
                node_selector: sel.map(|(k, v)| LabelSelector { match_labels: [(k.into(), v.into())].into() }),
                ..Default::default()
            },
        )
    }

    #[test]
    fn bgp_peers_are_run_when_valid_selected_and_not_named_like_another() {
        let labels: BTreeMap<String, String> = [("site".to_string(), "a".to_string())].into();
        let bgp = Some((65000, std::net::Ipv4Addr::new(198, 18, 0, 1)));
        let (ok, other_site, clash, bad) = (
            peer("tor-1", "198.18.1.1", Some(("site", "a"))),
            peer("tor-2", "198.18.1.2", Some(("site", "b"))),
            peer("file-peer", "198.18.1.3", None),
            peer("bad", "not-an-address", None),
        );
        let all = [&ok, &other_site, &clash, &bad];
        let (run, verdicts) = peers(&all, &["file-peer".to_string()], bgp, &labels);
        assert_eq!(run.keys().collect::<Vec<_>>(), ["tor-1"]);
        assert_eq!(verdicts["tor-2"].programmed.1, "NotSelected");
        assert!(verdicts["tor-2"].accepted.0);
        assert_eq!(verdicts["file-peer"].accepted.1, "NameConflict");
        assert_eq!(verdicts["bad"].accepted.1, "Invalid");
        let (run, verdicts) = peers(&all, &[], None, &labels);
        assert!(run.is_empty());
        assert_eq!(verdicts["tor-1"].programmed.1, "BGPNotConfigured");
    }

    fn l2(name: &str, vrid: u32, vips: &[&str]) -> L2Announcement {
        L2Announcement::new(
            name,
            L2AnnouncementSpec {
                port: "lan".into(),
                vrid,
                priority: None,
                advert_interval_ms: Some(100),
                preempt: None,
                preempt_delay_ms: None,
                vips: vips.iter().map(|s| s.to_string()).collect(),
                garp_count: None,
                garp_interval_ms: None,
                track_penalty: None,
                virtual_mac: false,
                node_selector: None,
            },
        )
    }

    #[test]
    fn l2_announcements_are_checked_by_the_file_s_rules() {
        let ports = [("lan".to_string(), true)];
        let (a, b, c, d) = (
            l2("a", 7, &["198.19.0.1"]),
            l2("b", 7, &["198.19.0.2"]),
            l2("c", 8, &["2001:db8::1", "198.19.0.3"]),
            l2("d", 9, &["198.19.0.4"]),
        );
        let mut e = l2("e", 10, &["198.19.0.5"]);
        e.spec.advert_interval_ms = Some(15);
        let (run, verdicts) = routers(&[&a, &b, &c, &d, &e], &ports, &[], &BTreeMap::new());
        assert_eq!(run.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a", "d"]);
        assert_eq!(run[0].interval_cs, 10);
        assert_eq!(verdicts["b"].accepted.1, "Conflict", "{:?}", verdicts["b"]);
        assert_eq!(verdicts["c"].accepted.1, "Invalid");
        assert!(verdicts["e"].accepted.2.starts_with("spec.advertIntervalMs"), "{:?}", verdicts["e"]);
        // A resource may not take a file router's name or VRID.
        let (run, verdicts) = routers(&[&a, &b], &ports, &run[..1], &BTreeMap::new());
        assert!(run.is_empty(), "{run:?}");
        assert_eq!(verdicts["a"].accepted.1, "NameConflict");
        assert_eq!(verdicts["b"].accepted.1, "Conflict");
    }
}
