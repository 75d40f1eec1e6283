//! Mapping and allocation over objects written in the Kubernetes JSON wire format.

use super::*;
use serde_json::json;

fn svc(name: &str, extra: serde_json::Value) -> Service {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop", "labels": {"tier": "edge"}},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "edgelb.io/lb",
                 "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn slice(service: &str, family: &str, endpoints: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-abc"), "namespace": "shop", "labels": {"kubernetes.io/service-name": service}},
        "addressType": family,
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": endpoints
    }))
    .unwrap()
}

fn settings() -> Settings {
    Settings {
        class: "edgelb.io/lb".into(),
        classless: false,
        default_mode: Mode::Nat,
        pools: vec![
            Pool {
                name: "small".into(),
                ranges: vec![parse_range("198.19.0.10-198.19.0.11").unwrap()],
                namespaces: vec!["shop".into()],
                selector: BTreeMap::new(),
                auto_assign: true,
            },
            Pool {
                name: "wide".into(),
                ranges: vec![parse_range("198.19.1.0/24").unwrap(), parse_range("2001:db8:100::/120").unwrap()],
                namespaces: vec![],
                selector: BTreeMap::new(),
                auto_assign: true,
            },
        ],
    }
}

#[test]
fn ranges_parse_and_refuse_nonsense() {
    assert_eq!(parse_range("198.19.1.0/24").unwrap(), ("198.19.1.0".parse().unwrap(), "198.19.1.255".parse().unwrap()));
    assert_eq!(parse_range("2001:db8::/127").unwrap().1, "2001:db8::1".parse::<IpAddr>().unwrap());
    assert_eq!(parse_range("198.19.0.5").unwrap().0, parse_range("198.19.0.5").unwrap().1);
    for bad in ["198.19.0.9-198.19.0.1", "198.19.0.1-2001:db8::1", "198.19.0.0/33", "nope"] {
        assert!(parse_range(bad).is_err(), "{bad}");
    }
}

#[test]
fn services_map_to_vip_services_with_endpoint_states() {
    let s = svc(
        "web",
        json!({"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}},
               "metadata": {"annotations": {"edgelb.io/mode": "dsr_l2", "edgelb.io/weights": "198.18.3.5=3"}}}),
    );
    let sl = slice(
        "web",
        "IPv4",
        json!([
            {"addresses": ["198.18.3.5"], "conditions": {"ready": true, "serving": true, "terminating": false}},
            {"addresses": ["198.18.3.6"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["198.18.3.7"], "conditions": {"ready": false, "serving": false, "terminating": true}}
        ]),
    );
    let v6 = slice("web", "IPv6", json!([{"addresses": ["2001:db8:5::5"], "conditions": {"ready": true}}]));
    let vip: IpAddr = "198.19.1.1".parse().unwrap();
    let specs = service_specs(&s, &[&sl, &v6], &[vip], Mode::Nat).unwrap();
    assert_eq!(specs.len(), 1);
    let sp = &specs[0];
    assert_eq!(
        (sp.vip, sp.protocol, sp.port, sp.mode, sp.affinity_timeout_s),
        (vip, Protocol::Tcp, Some(80), Mode::DsrL2, Some(600))
    );
    let b: Vec<(String, u16, u32, BackendState)> =
        sp.backends.iter().map(|b| (b.addr.to_string(), b.port, b.weight, b.state)).collect();
    assert_eq!(
        b,
        [("198.18.3.5".into(), 8080, 3, BackendState::Active), ("198.18.3.6".into(), 8080, 1, BackendState::Draining)],
        "not serving: out; IPv6 endpoints: not for an IPv4 VIP"
    );
    // Full-NAT contradicts externalTrafficPolicy Local.
    let bad = svc(
        "x",
        json!({"spec": {"externalTrafficPolicy": "Local"}, "metadata": {"annotations": {"edgelb.io/mode": "fullnat"}}}),
    );
    assert!(service_specs(&bad, &[], &[vip], Mode::Nat).unwrap_err().contains("Local"));
    let bad = svc("y", json!({"metadata": {"annotations": {"edgelb.io/mode": "teleport"}}}));
    assert!(service_specs(&bad, &[], &[vip], Mode::Nat).unwrap_err().contains("edgelb.io/mode"));
}

#[test]
fn allocation_is_stable_honours_requests_and_says_why_not() {
    let st = settings();
    let a = svc("a", json!({}));
    let b = svc("b", json!({}));
    let c = svc("c", json!({}));
    let mut ev = Vec::new();
    let r = allocate(&[&a, &b, &c], &st, &mut ev);
    assert_eq!(r["shop/a"], ["198.19.0.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(r["shop/b"], ["198.19.0.11".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        r["shop/c"],
        ["198.19.1.1".parse::<IpAddr>().unwrap()],
        "small is full; the /24's network address is skipped"
    );
    // Restart with status recorded and `a` deleted: b and c keep theirs (no renumbering).
    let b2 = svc("b", json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.19.0.11"}]}}}));
    let c2 = svc("c", json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.19.1.1"}]}}}));
    let d = svc("d", json!({}));
    let r = allocate(&[&d, &c2, &b2], &st, &mut Vec::new());
    assert_eq!(r["shop/b"], ["198.19.0.11".parse::<IpAddr>().unwrap()]);
    assert_eq!(r["shop/c"], ["198.19.1.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(r["shop/d"], ["198.19.0.10".parse::<IpAddr>().unwrap()], "the freed address is reused");
    // Requests: honoured when allowed and free; refused with a reason otherwise.
    let req = svc("e", json!({"metadata": {"annotations": {"edgelb.io/loadBalancerIPs": "198.19.1.77"}}}));
    let taken = svc("f", json!({"spec": {"loadBalancerIP": "198.19.0.11"}}));
    let outside = svc("g", json!({"metadata": {"annotations": {"edgelb.io/loadBalancerIPs": "198.19.200.1"}}}));
    let mut ev = Vec::new();
    let r = allocate(&[&b2, &req, &taken, &outside], &st, &mut ev);
    assert_eq!(r["shop/e"], ["198.19.1.77".parse::<IpAddr>().unwrap()]);
    assert!(!r.contains_key("shop/f") && !r.contains_key("shop/g"));
    let reasons: Vec<(&str, &str)> = ev.iter().map(|e| (e.service.as_str(), e.reason)).collect();
    assert!(
        reasons.contains(&("shop/f", "AddressInUse")) && reasons.contains(&("shop/g", "AddressNotAllowed")),
        "{ev:?}"
    );
    // Dual stack, and a namespace no pool admits for IPv6... the wide pool admits all; exhaustion is reported.
    let ds = svc("h", json!({"spec": {"ipFamilies": ["IPv4", "IPv6"]}}));
    let r = allocate(&[&ds], &st, &mut Vec::new());
    assert_eq!(r["shop/h"].len(), 2);
    assert!(r["shop/h"][1].is_ipv6());
    let tiny = Settings {
        pools: vec![Pool {
            name: "one".into(),
            ranges: vec![parse_range("198.19.9.9").unwrap()],
            namespaces: vec![],
            selector: BTreeMap::new(),
            auto_assign: true,
        }],
        ..settings()
    };
    let mut ev = Vec::new();
    let r = allocate(&[&a, &b], &tiny, &mut ev);
    assert_eq!(r.len(), 1);
    assert!(
        ev.iter().any(|e| e.service == "shop/b" && e.reason == "PoolExhausted" && e.message.contains("one")),
        "{ev:?}"
    );
    let labelled = Settings {
        pools: vec![Pool { selector: BTreeMap::from([("tier".into(), "core".into())]), ..tiny.pools[0].clone() }],
        ..settings()
    };
    let mut ev = Vec::new();
    assert!(allocate(&[&a], &labelled, &mut ev).is_empty());
    assert_eq!(ev[0].reason, "NoPool");
}

#[test]
fn sync_takes_only_our_class_and_joins_slices_by_label() {
    let st = settings();
    let mine = svc("web", json!({}));
    let other = svc("other", json!({"spec": {"loadBalancerClass": "metallb"}}));
    let plain = svc("plain", json!({"spec": {"type": "ClusterIP"}}));
    let sl = slice("web", "IPv4", json!([{"addresses": ["198.18.3.5"], "conditions": {"ready": true}}]));
    let o = sync(&[mine, other, plain], &[sl], &st);
    assert_eq!(o.status.keys().collect::<Vec<_>>(), ["shop/web"]);
    assert_eq!(o.services.len(), 1);
    assert_eq!(o.services[0].backends.len(), 1);
    assert!(o.events.iter().all(|e| e.service == "shop/web"));
    // Class-less Services only when asked.
    let nocls = svc("nocls", json!({"spec": {"loadBalancerClass": null}}));
    assert!(sync(std::slice::from_ref(&nocls), &[], &st).status.is_empty());
    assert_eq!(sync(&[nocls], &[], &Settings { classless: true, ..st }).status.len(), 1);
}

/// A Syncer that remembers mapped Services gives, after every change, the outcome a sync from scratch gives: random
/// sequences of endpoint (IPv4 and IPv6 slices), annotation, port, class and family changes, deletions and
/// re-creations over a few dual-stack Services, each change bumping the object's resource version as the API server
/// does.
mod syncer_matches_sync {
    use super::*;
    use proptest::prelude::*;

    struct World {
        svcs: Vec<Option<Service>>,
        slices: Vec<Option<EndpointSlice>>,
        rv: u64,
    }

    impl World {
        fn bump(&mut self) -> String {
            self.rv += 1;
            self.rv.to_string()
        }

        fn service(&mut self, i: usize, variant: u8) -> Service {
            let ports = if variant & 1 == 0 {
                json!([{"name": "http", "protocol": "TCP", "port": 80}])
            } else {
                json!([{"name": "http", "protocol": "TCP", "port": 80}, {"name": "dns", "protocol": "UDP", "port": 53}])
            };
            let mode = if variant & 2 == 0 { "nat" } else { "dsr_l2" };
            let class = if variant & 4 == 0 { "edgelb.io/lb" } else { "other.io/lb" };
            // Dual-stack (an address of each family) unless bit 16 asks for IPv4 only.
            let families = if variant & 16 == 0 { json!(["IPv4", "IPv6"]) } else { json!(["IPv4"]) };
            let rv = self.bump();
            svc(
                &format!("s{i}"),
                json!({"metadata": {"resourceVersion": rv, "annotations": {"edgelb.io/mode": mode}},
                       "spec": {"ports": ports, "loadBalancerClass": class, "ipFamilies": families}}),
            )
        }

        /// Service `i`'s EndpointSlice of one family (`v6`), named apart from the other family's.
        fn slice(&mut self, i: usize, variant: u8, v6: bool) -> EndpointSlice {
            let n = 1 + usize::from(variant % 4);
            let eps: Vec<serde_json::Value> = (0..n)
                .map(|e| {
                    let ready = !(variant & 8 != 0 && e == 0);
                    let addr =
                        if v6 { format!("2001:db8:3:{i}::{}", 10 + e) } else { format!("198.18.{}.{}", 3 + i, 10 + e) };
                    json!({"addresses": [addr], "conditions": {"ready": ready}})
                })
                .collect();
            let mut sl = slice(&format!("s{i}"), if v6 { "IPv6" } else { "IPv4" }, json!(eps));
            if v6 {
                sl.metadata.name = Some(format!("s{i}-v6"));
            }
            sl.ports = Some(vec![
                serde_json::from_value(json!({"name": "http", "protocol": "TCP", "port": 8080})).unwrap(),
                serde_json::from_value(json!({"name": "dns", "protocol": "UDP", "port": 5353})).unwrap(),
            ]);
            sl.metadata.resource_version = Some(self.bump());
            sl
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn after_every_change(steps in proptest::collection::vec((0usize..5, 0u8..5, any::<u8>()), 1..40)) {
            let st = Settings { pools: vec![settings().pools[1].clone()], ..settings() };
            // Slices 0..5 are the Services' IPv4 ones, 5..10 their IPv6 ones.
            let mut w = World { svcs: vec![None; 5], slices: vec![None; 10], rv: 0 };
            for i in 0..5 {
                w.svcs[i] = Some(w.service(i, 0));
                w.slices[i] = Some(w.slice(i, 0, false));
                w.slices[5 + i] = Some(w.slice(i, 0, true));
            }
            let start_svcs: Vec<Service> = w.svcs.iter().flatten().cloned().collect();
            let start_slices: Vec<EndpointSlice> = w.slices.iter().flatten().cloned().collect();
            let start = sync(&start_svcs, &start_slices, &st);
            prop_assert!(
                start.services.iter().any(|s| s.vip.is_ipv6() && !s.backends.is_empty()),
                "IPv6 VIP services with backends to begin with: {:?}", start.services
            );
            let mut syncer = Syncer::default();
            for (i, action, variant) in steps {
                // Which family's slice a slice action touches.
                let (j, v6) = if variant & 32 == 0 { (i, false) } else { (5 + i, true) };
                match action {
                    0 => w.slices[j] = Some(w.slice(i, variant, v6)),
                    1 => w.svcs[i] = Some(w.service(i, variant)),
                    2 => w.svcs[i] = None,
                    3 => w.slices[j] = None,
                    _ => {
                        // An unchanged object seen again (a relist): same resource version, same result.
                    }
                }
                let svcs: Vec<Service> = w.svcs.iter().flatten().cloned().collect();
                let slices: Vec<EndpointSlice> = w.slices.iter().flatten().cloned().collect();
                let fresh = sync(&svcs, &slices, &st);
                let remembered = syncer.sync(&svcs, &slices, &st);
                prop_assert_eq!(remembered, fresh);
            }
        }
    }
}
