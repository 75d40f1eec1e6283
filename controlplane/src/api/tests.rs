//! The API over an in-process store: validation names the field and applies nothing; versions; conveniences.

use super::server::Api;
use crate::store::{Store, StoreEvent};
use edgelb_api::v1;
use edgelb_api::v1::load_balancer_server::LoadBalancer;
use edgelb_dataplane::model::{InterfaceSpec, Model, Timeouts};
use std::sync::Arc;
use tonic::{Code, Request};

fn base() -> Model {
    Model {
        interfaces: vec![InterfaceSpec {
            port: 0,
            mac: [2, 0, 0, 0, 1, 0],
            addrs: vec![("198.18.0.1".parse().unwrap(), 24), ("2001:db8::1".parse().unwrap(), 64)],
            mtu: 1500,
        }],
        fullnat_sources: vec!["198.18.0.1".parse().unwrap()],
        fullnat_ports: (20000, 59999),
        tunnel_sources: vec![("198.18.3.0".parse().unwrap(), 24)],
        timeouts: Timeouts::default(),
        ..Model::default()
    }
}

fn svc(vip: &str, port: u32, backends: &[&str]) -> v1::Service {
    v1::Service {
        vip: vip.into(),
        protocol: v1::Protocol::Tcp as i32,
        port,
        mode: v1::Mode::Nat as i32,
        backends: backends
            .iter()
            .map(|a| v1::Backend { address: (*a).into(), port: 8080, weight: 1, state: 0 })
            .collect(),
        ..Default::default()
    }
}

fn api() -> (Api, Arc<Store>) {
    let store = Store::new(base()).unwrap();
    (Api::new(store.clone()), store)
}

async fn apply(
    api: &Api,
    upserts: Vec<v1::Service>,
    deletes: Vec<v1::ServiceKey>,
) -> Result<v1::ApplyServicesResponse, tonic::Status> {
    api.apply_services(Request::new(v1::ApplyServicesRequest { upserts, deletes, dry_run: false, expected_version: 0 }))
        .await
        .map(|r| r.into_inner())
}

fn key(vip: &str, port: u32) -> v1::ServiceKey {
    v1::ServiceKey { vip: vip.into(), protocol: v1::Protocol::Tcp as i32, port, all_ports: false }
}

#[tokio::test]
async fn bad_input_is_rejected_naming_the_field_and_nothing_is_applied() {
    let (api, store) = api();
    // One good service in force, so conflicts with it can be tried too.
    apply(&api, vec![svc("198.19.0.1", 80, &["198.18.0.10"])], vec![]).await.unwrap();
    let good = || svc("198.19.0.2", 80, &["198.18.0.10", "198.18.0.11"]);
    type Edit = Box<dyn Fn(&mut Vec<v1::Service>, &mut Vec<v1::ServiceKey>)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("bad VIP", Box::new(|u, _| u[0].vip = "198.19.0.300".into()), "upserts[0].vip"),
        ("empty VIP", Box::new(|u, _| u[0].vip = String::new()), "upserts[0].vip"),
        ("multicast VIP", Box::new(|u, _| u[0].vip = "224.0.0.1".into()), "upserts[0].vip"),
        ("loopback VIP", Box::new(|u, _| u[0].vip = "127.0.0.1".into()), "upserts[0].vip"),
        ("VIP is an appliance address", Box::new(|u, _| u[0].vip = "198.18.0.1".into()), "upserts[0].vip"),
        ("no protocol", Box::new(|u, _| u[0].protocol = 0), "upserts[0].protocol"),
        ("unknown protocol", Box::new(|u, _| u[0].protocol = 99), "upserts[0].protocol"),
        ("port 0", Box::new(|u, _| u[0].port = 0), "upserts[0].port"),
        ("port above 65535", Box::new(|u, _| u[0].port = 70000), "upserts[0].port"),
        ("port and all_ports", Box::new(|u, _| u[0].all_ports = true), "upserts[0].port"),
        ("no mode", Box::new(|u, _| u[0].mode = 0), "upserts[0].mode"),
        ("unknown mode", Box::new(|u, _| u[0].mode = 42), "upserts[0].mode"),
        (
            "bad backend address",
            Box::new(|u, _| u[0].backends[0].address = "nope".into()),
            "upserts[0].backends[0].address",
        ),
        ("backend port above 65535", Box::new(|u, _| u[0].backends[1].port = 65536), "upserts[0].backends[1].port"),
        ("weight above 65535", Box::new(|u, _| u[0].backends[1].weight = 70000), "upserts[0].backends[1].weight"),
        ("unknown backend state", Box::new(|u, _| u[0].backends[0].state = 9), "upserts[0].backends[0].state"),
        (
            "duplicate backend",
            Box::new(|u, _| u[0].backends[1].address = "198.18.0.10".into()),
            "upserts[0].backends[1].address",
        ),
        (
            "IPv4 VIP, IPv6 backend",
            Box::new(|u, _| u[0].backends[0].address = "2001:db8::10".into()),
            "upserts[0].backends[0].address",
        ),
        ("Maglev size not prime", Box::new(|u, _| u[0].maglev_size = 1000), "upserts[0].maglev_size"),
        ("affinity above a day", Box::new(|u, _| u[0].affinity_timeout_s = 86_401), "upserts[0].affinity_timeout_s"),
        ("GUE port above 65535", Box::new(|u, _| u[0].gue_port = 70000), "upserts[0].gue_port"),
        (
            "full-NAT without a source of the family",
            Box::new(|u, _| {
                u[0].vip = "2001:db8:100::1".into();
                u[0].mode = v1::Mode::Fullnat as i32;
                for b in &mut u[0].backends {
                    b.address = b.address.replace("198.18.0.", "2001:db8::");
                }
            }),
            "upserts[0].mode",
        ),
        ("DSR changing the port", Box::new(|u, _| u[0].mode = v1::Mode::DsrL2 as i32), "upserts[0].backends[0].port"),
        (
            "same service twice in a batch",
            Box::new(|u, _| {
                let again = u[0].clone();
                u.push(again)
            }),
            "upserts[1]",
        ),
        (
            "second upsert bad, first good",
            Box::new(|u, _| {
                let mut bad = svc("198.19.0.3", 80, &["198.18.0.12"]);
                bad.backends[0].weight = 100_000;
                u.push(bad)
            }),
            "upserts[1].backends[0].weight",
        ),
        ("upsert and delete of one service", Box::new(|_, d| d.push(key("198.19.0.2", 80))), "upserts[0]"),
        (
            "delete listed twice",
            Box::new(|_, d| {
                d.push(key("198.19.0.1", 80));
                d.push(key("198.19.0.1", 80))
            }),
            "deletes[1]",
        ),
        ("delete with a bad key", Box::new(|_, d| d.push(key("198.19.0.1", 0))), "deletes[0].port"),
    ];
    assert!(cases.len() >= 20);
    let before = store.services();
    for (name, edit, field) in &cases {
        let (mut u, mut d) = (vec![good()], vec![]);
        edit(&mut u, &mut d);
        let e = apply(&api, u, d).await.expect_err(name);
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
        assert!(e.message().starts_with(&format!("{field}:")), "{name}: want field {field}, got {:?}", e.message());
        assert_eq!(store.services(), before, "{name}: something was applied");
    }
    // A delete of a service that does not exist is NOT_FOUND, also naming the entry.
    let e = apply(&api, vec![], vec![key("198.19.9.9", 80)]).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().starts_with("deletes[0]"), "{e:?}");
    assert_eq!(store.services(), before);
}

#[tokio::test]
async fn versions_dry_run_and_conflicting_clients() {
    let (api, store) = api();
    let mut events = store.subscribe();
    let v0 = store.version();
    let req = |expected: u64, dry: bool, s: v1::Service| v1::ApplyServicesRequest {
        upserts: vec![s],
        deletes: vec![],
        dry_run: dry,
        expected_version: expected,
    };
    // Dry run: reports the new table's slots, changes nothing.
    let r = api.apply_services(Request::new(req(v0, true, svc("198.19.0.1", 80, &["198.18.0.10"])))).await.unwrap();
    let r = r.into_inner();
    assert!(!r.applied && r.version == v0 + 1);
    assert_eq!(r.slots_moved.len(), 1);
    assert_eq!(r.slots_moved[0].moved, r.slots_moved[0].table_size);
    assert_eq!(store.version(), v0);
    assert!(store.services().1.is_empty());
    // Two clients read version v0 and apply against it: one wins, the other gets FAILED_PRECONDITION.
    let a = api.apply_services(Request::new(req(v0, false, svc("198.19.0.1", 80, &["198.18.0.10"]))));
    let b = api.apply_services(Request::new(req(v0, false, svc("198.19.0.2", 80, &["198.18.0.11"]))));
    let (a, b) = tokio::join!(a, b);
    let (won, lost) = match (a, b) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w.into_inner(), l),
        other => panic!("exactly one must win: {other:?}"),
    };
    assert_eq!(won.version, v0 + 1);
    assert_eq!(lost.code(), Code::FailedPrecondition, "{lost:?}");
    assert_eq!(store.services().1.len(), 1);
    match events.try_recv().unwrap() {
        StoreEvent::Applied { version, source, moved } => {
            assert_eq!((version, source, moved.len()), (v0 + 1, "api", 1));
        }
        other => panic!("{other:?}"),
    }
    // Adding a backend moves about half the slots of a 1-backend table, and the response says so.
    let list = api.list_services(Request::new(v1::ListServicesRequest {})).await.unwrap().into_inner();
    let k = v1::ServiceKey {
        vip: list.services[0].vip.clone(),
        protocol: list.services[0].protocol,
        port: 80,
        all_ports: false,
    };
    let add = v1::BackendRequest {
        service: Some(k.clone()),
        backend: Some(v1::Backend { address: "198.18.0.20".into(), port: 8080, weight: 1, state: 0 }),
        expected_version: list.version,
    };
    let r = api.add_backend(Request::new(add.clone())).await.unwrap().into_inner();
    let (moved, size) = (r.slots_moved[0].moved, r.slots_moved[0].table_size);
    assert!((0.4..=0.61).contains(&(f64::from(moved) / f64::from(size))), "{moved} of {size} slots moved");
    assert_eq!(r.version, list.version + 1);
    // Stale version for a convenience call too.
    let e = api.add_backend(Request::new(add)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // Drain, weight, remove; each visible in GetService.
    let mut req = v1::BackendRequest {
        service: Some(k.clone()),
        backend: Some(v1::Backend { address: "198.18.0.20".into(), port: 8080, weight: 7, state: 0 }),
        expected_version: 0,
    };
    api.set_backend_weight(Request::new(req.clone())).await.unwrap();
    api.drain_backend(Request::new(req.clone())).await.unwrap();
    let s = api.get_service(Request::new(v1::GetServiceRequest { key: Some(k.clone()) })).await.unwrap().into_inner();
    let b = s.backends.iter().find(|b| b.address == "198.18.0.20").unwrap();
    assert_eq!((b.weight, b.state), (7, v1::BackendState::Draining as i32));
    api.remove_backend(Request::new(req.clone())).await.unwrap();
    let e = api.remove_backend(Request::new(req.clone())).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    req.service = Some(key("198.19.7.7", 80));
    assert_eq!(api.add_backend(Request::new(req)).await.unwrap_err().code(), Code::NotFound);
}

/// A BGP peer given by the file and the same peer given by the API come out the same, or fail on the same field: one
/// validation, one set of defaults. (The API used to read `hold_time = 0` as 90 s where the file meant no hold timer,
/// accept an empty password the file refused, and clamp what the file passed through.)
#[test]
fn the_file_and_the_api_agree_on_bgp_peers() {
    let router_id = std::net::Ipv4Addr::new(198, 18, 0, 1);
    // (TOML lines of one [[bgp.peer]], the same peer as an API message)
    let base = v1::PeerConfig { address: "198.18.0.2".into(), remote_as: 65001, ..Default::default() };
    let cases: Vec<(&str, v1::PeerConfig)> = vec![
        ("", base.clone()),
        ("hold_time = 0", v1::PeerConfig { hold_time: Some(0), ..base.clone() }),
        ("hold_time = 2", v1::PeerConfig { hold_time: Some(2), ..base.clone() }),
        ("hold_time = 30", v1::PeerConfig { hold_time: Some(30), ..base.clone() }),
        ("password = \"\"", v1::PeerConfig { password: Some(String::new()), ..base.clone() }),
        ("password = \"s3cret\"", v1::PeerConfig { password: Some("s3cret".into()), ..base.clone() }),
        ("connect_retry = 0", v1::PeerConfig { connect_retry: Some(0), ..base.clone() }),
        ("connect_retry = 7200", v1::PeerConfig { connect_retry: Some(7200), ..base.clone() }),
        ("multihop_ttl = 300", v1::PeerConfig { multihop_ttl: Some(300), ..base.clone() }),
        ("graceful_restart = 5000", v1::PeerConfig { graceful_restart: Some(5000), ..base.clone() }),
        ("graceful_restart = 120", v1::PeerConfig { graceful_restart: Some(120), ..base.clone() }),
        ("port = 70000", v1::PeerConfig { port: Some(70000), ..base.clone() }),
        ("bfd = {}", v1::PeerConfig { bfd: Some(v1::BfdConfig::default()), ..base.clone() }),
        (
            "bfd = { min_tx_ms = 100, min_rx_ms = 50, multiplier = 5 }",
            v1::PeerConfig {
                bfd: Some(v1::BfdConfig { min_tx_ms: Some(100), min_rx_ms: Some(50), multiplier: Some(5) }),
                ..base.clone()
            },
        ),
        (
            "bfd = { multiplier = 0 }",
            v1::PeerConfig { bfd: Some(v1::BfdConfig { multiplier: Some(0), ..Default::default() }), ..base.clone() },
        ),
        (
            "bfd = { min_rx_ms = 5 }",
            v1::PeerConfig { bfd: Some(v1::BfdConfig { min_rx_ms: Some(5), ..Default::default() }), ..base.clone() },
        ),
        (
            "communities = [\"65000:1\", \"x\"]",
            v1::PeerConfig { communities: vec!["65000:1".into(), "x".into()], ..base.clone() },
        ),
    ];
    for (toml_lines, msg) in cases {
        let text = format!(
            "[[port]]\nname = \"lb0\"\ndriver = \"afpacket\"\naddresses = [\"198.18.0.1/24\"]\n\n[bgp]\nlocal_as = 65000\nrouter_id = \"198.18.0.1\"\n\n\
             [[bgp.peer]]\naddress = \"198.18.0.2\"\nremote_as = 65001\n{toml_lines}\n"
        );
        let file = crate::config::parse(&text).map(|l| l.bgp_peers.into_iter().next().expect("one peer"));
        let api = super::server::peer_in(&msg, 65000, router_id);
        match (file, api) {
            (Ok(f), Ok(a)) => assert_eq!(f, a, "{toml_lines}"),
            (Err(f), Err(a)) => {
                let field = f.field.strip_prefix("bgp.peer[0].").unwrap_or(&f.field).to_string();
                assert!(a.message().starts_with(&format!("{field}: ")), "{toml_lines}: file {f}, API {}", a.message());
            }
            (f, a) => panic!("{toml_lines}: the file says {f:?}, the API says {a:?}"),
        }
    }
}
