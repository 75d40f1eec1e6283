use super::*;
use edgelb_dataplane::model::HealthKind;

const EXAMPLE: &str = include_str!("../../../configs/edgelb.toml");

#[test]
fn example_config_loads() {
    let l = parse(EXAMPLE).unwrap();
    assert_eq!(l.ports.len(), 2);
    assert_eq!(l.ports[0].name, "lb0");
    assert_eq!(l.cores, vec![1]);
    assert_eq!(l.model.services.len(), 1);
    let s = &l.model.services[0];
    assert_eq!((s.mode, s.port, s.backends.len()), (Mode::Nat, Some(80), 2));
    assert_eq!(l.model.fullnat_ports, (20000, 59999));
    assert_eq!(l.model.neighbours.len(), 3);
    assert_eq!(l.model.timeouts.tcp_established, 900);
}

/// Replace the first occurrence of `from` in the example with `to`, parse, and expect an error naming `field` at
/// `line`.
fn expect(from: &str, to: &str, field: &str, line: usize) {
    assert!(EXAMPLE.contains(from), "example lacks {from:?}");
    let text = EXAMPLE.replacen(from, to, 1);
    let err = parse(&text).expect_err(&format!("{from:?} -> {to:?} should be rejected"));
    assert!(err.field.contains(field), "{from:?} -> {to:?}: got field {:?} ({err})", err.field);
    assert_eq!(err.line, Some(line), "{from:?} -> {to:?}: {err}");
    assert!(!err.message.is_empty());
}

fn line_of(needle: &str) -> usize {
    EXAMPLE.lines().position(|l| l.contains(needle)).expect(needle) + 1
}

#[test]
fn errors_name_field_and_line() {
    let vip = line_of("vip = \"198.19.0.1\"");
    expect("vip = \"198.19.0.1\"", "vip = \"198.19.0.1\"\ncolour = \"red\"", "toml", vip + 1);
    expect("vip = \"198.19.0.1\"", "vip = \"198.19.0.300\"", "service[0].vip", vip);
    expect("mode = \"nat\"", "mode = \"magic\"", "service[0].mode", line_of("mode = \"nat\""));
    expect("protocol = \"tcp\"", "protocol = \"sctp\"", "service[0].protocol", line_of("protocol = \"tcp\""));
    // Validation errors point at the table they belong to (its header or first key, as the parser spans it).
    expect("weight = 1 ", "weight = 0 ", "service[0].backend[0]", line_of("[[service.backend]]"));
    expect("state = \"active\"", "state = \"asleep\"", "service[0].backend[0].state", line_of("state = \"active\""));
    expect(
        "address = \"198.18.2.11\"\nmac",
        "address = \"nonsense\"\nmac",
        "neighbor[2].address",
        line_of("address = \"198.18.2.11\""),
    );
    expect(
        "mac = \"02:00:00:00:00:fe\"",
        "mac = \"02:00:00\"",
        "neighbor[0].mac",
        line_of("mac = \"02:00:00:00:00:fe\""),
    );
    expect(
        "addresses = [\"198.18.0.1/24\"]",
        "addresses = [\"198.18.0.1\"]",
        "port[0].addresses",
        line_of("addresses = [\"198.18.0.1/24\"]"),
    );
    expect("mtu = 1500", "mtu = 100", "port[0].mtu", line_of("[[port]]") + 1);
    expect("driver = \"afpacket\"  ", "driver = \"carrier-pigeon\"  ", "toml", line_of("driver = \"afpacket\""));
    expect("port = 80 ", "port = \"eighty\" ", "toml", line_of("port = 80 "));
    expect("sources = [\"198.18.2.1\"]", "sources = [\"198.18.9.9\"]", "fullnat.sources", line_of("[fullnat]"));
    // Duplicate VIP: a second [[service]] identical to the first.
    let dup = format!("{EXAMPLE}\n[[service]]\nvip = \"198.19.0.1\"\nprotocol = \"tcp\"\nport = 80\nmode = \"nat\"\n");
    let err = parse(&dup).unwrap_err();
    assert_eq!(err.field, "service[1].vip", "{err}");
    assert_eq!(err.line, Some(EXAMPLE.lines().count() + 2), "{err}");
}

#[test]
fn afxdp_needs_a_single_worker() {
    let one = EXAMPLE.replacen("driver = \"afpacket\"", "driver = \"afxdp\"", 1);
    assert_eq!(parse(&one).unwrap().ports[0].driver, Driver::Afxdp);
    let two = one.replace("cores = [1]", "cores = [0, 1]");
    let err = parse(&two).unwrap_err();
    assert_eq!(err.field, "port[0].driver", "{err}");
    assert!(err.message.contains("one worker"), "{err}");
}

#[test]
fn unreadable_file_is_named() {
    let err = load(Path::new("/nonexistent/edgelb.toml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/edgelb.toml"), "{err}");
    assert_eq!(err.line, None);
}

const DPDK_EXAMPLE: &str = include_str!("../../../configs/edgelb-dpdk.toml");

#[test]
fn dpdk_example_loads() {
    let l = parse(DPDK_EXAMPLE).unwrap();
    assert_eq!(l.ports.len(), 2);
    assert!(l.ports.iter().all(|p| p.driver == Driver::Dpdk));
    assert_eq!(l.ports[1].dpdk_name(), Some("0000:3b:02.1"));
    assert_eq!(l.cores, vec![2, 3], "dpdk ports take one queue pair per worker");
    assert_eq!(l.dpdk.huge_dir.as_deref(), Some("/mnt/huge"));
    assert_eq!((l.dpdk.mbufs, l.dpdk.no_huge), (16384, false));
    let v = DPDK_EXAMPLE.replacen("pci = \"0000:3b:02.0\"", "vdev = \"net_af_xdp0,iface=veth0\"", 1);
    assert_eq!(parse(&v).unwrap().ports[0].dpdk_name(), Some("net_af_xdp0"));
}

#[test]
fn dpdk_port_errors_name_the_field() {
    let cases = [
        ("pci = \"0000:3b:02.0\"", "", "port[0].driver", "needs"),
        ("pci = \"0000:3b:02.0\"", "pci = \"3b:02\"", "port[0].pci", "PCI address"),
        ("pci = \"0000:3b:02.0\"", "pci = \"0000:3b:02.0\"\nvdev = \"net_null0\"", "port[0].vdev", "not both"),
        ("pci = \"0000:3b:02.0\"", "vdev = \",iface=x\"", "port[0].vdev", "empty"),
        ("mbufs = 16384", "mbufs = 10", "dpdk.mbufs", "1024"),
        ("driver = \"dpdk\"\npci = \"0000:3b:02.1\"", "driver = \"afpacket\"", "port[0].driver", "mixed"),
    ];
    for (from, to, field, msg) in cases {
        assert!(DPDK_EXAMPLE.contains(from), "{from}");
        let err = parse(&DPDK_EXAMPLE.replacen(from, to, 1)).unwrap_err();
        assert_eq!(err.field, field, "{to}: {err}");
        assert!(err.message.contains(msg), "{to}: {err}");
        assert!(err.line.is_some(), "{err}");
    }
    let k = EXAMPLE.replacen("driver = \"afpacket\"", "driver = \"afpacket\"\npci = \"0000:3b:02.0\"", 1);
    assert_eq!(parse(&k).unwrap_err().field, "port[0].pci");
    let k = EXAMPLE.replacen("driver = \"afpacket\"", "driver = \"afpacket\"\nvdev = \"net_null0\"", 1);
    assert_eq!(parse(&k).unwrap_err().field, "port[0].vdev");
}

#[test]
fn health_and_api_sections() {
    let l = parse(EXAMPLE).unwrap();
    let h = l.model.services[0].health.as_ref().expect("the example checks its backends");
    assert_eq!(h.kind, HealthKind::Http { path: "/healthz".into(), expect_status: 200 });
    assert_eq!((h.interval_ms, h.timeout_ms, h.rise, h.fall, h.keep_flows), (2000, 1000, 2, 3, false));
    assert_eq!(l.api, Some(crate::config::Listen::Tcp("127.0.0.1:50051".parse().unwrap())));
    let cases = [
        ("type = \"http\"", "type = \"icmp\"", "service[0].health.type"),
        ("expect = 200", "expect = 700", "service[0].health.expect"),
        ("timeout_ms = 1000 ", "timeout_ms = 5000 ", "service[0].health.timeout_ms"),
        ("path = \"/healthz\"", "path = \"healthz now\"", "service[0].health.path"),
        ("listen = \"127.0.0.1:50051\"", "listen = \"localhost\"", "api.listen"),
    ];
    for (from, to, field) in cases {
        assert!(EXAMPLE.contains(from), "{from}");
        let err = parse(&EXAMPLE.replacen(from, to, 1)).unwrap_err();
        assert_eq!(err.field, field, "{to}: {err}");
        assert!(err.line.is_some(), "{err}");
    }
    let off = EXAMPLE.replacen("listen = \"127.0.0.1:50051\"", "enabled = false", 1);
    assert_eq!(parse(&off).unwrap().api, None);
}

#[test]
fn dpdk_port_by_pf_and_vf_index() {
    let v = DPDK_EXAMPLE.replacen(
        "pci = \"0000:3b:02.0\"",
        "vf = { pf = \"ens1f0\", index = 0, mac = \"02:00:00:00:10:00\", vlan = 100, trust = true, spoof_check = false, max_rate = 10000 }",
        1,
    );
    let l = parse(&v).unwrap();
    let (pf, s) = l.ports[0].vf.clone().unwrap();
    assert_eq!(pf, "ens1f0");
    assert_eq!(
        (s.vf, s.mac, s.vlan, s.trust, s.spoof_check, s.rate),
        (0, Some([2, 0, 0, 0, 0x10, 0]), Some((100, 0)), Some(true), Some(false), Some((0, 10000)))
    );
    let both = DPDK_EXAMPLE.replacen(
        "pci = \"0000:3b:02.0\"",
        "pci = \"0000:3b:02.0\"\nvf = { pf = \"ens1f0\", index = 0 }",
        1,
    );
    assert_eq!(parse(&both).unwrap_err().field, "port[0].vf");
    let vlan = v.replacen("vlan = 100", "vlan = 5000", 1);
    assert_eq!(parse(&vlan).unwrap_err().field, "port[0].vf.vlan");
}

#[test]
fn kubernetes_section() {
    let text = format!(
        "{EXAMPLE}\n[kubernetes]\nkubeconfig = \"/etc/edgelb/kubeconfig\"\nidentity = \"node-a\"\ndefault_mode = \"dsr_l2\"\n\n\
         [[kubernetes.pool]]\nname = \"public\"\naddresses = [\"198.19.1.0/24\", \"2001:db8:100::/120\"]\nnamespaces = [\"shop\"]\n\
         selector = {{ tier = \"edge\" }}\n"
    );
    let k = parse(&text).unwrap().kubernetes.unwrap();
    assert_eq!(
        (k.kubeconfig.as_deref(), k.lease.identity.as_str(), k.settings.default_mode),
        (Some("/etc/edgelb/kubeconfig"), "node-a", Mode::DsrL2)
    );
    assert_eq!(
        (k.settings.class.as_str(), k.lease.namespace.as_str(), k.lease.duration_s),
        ("edgelb.io/lb", "kube-system", 15)
    );
    assert_eq!(k.settings.pools[0].ranges.len(), 2);
    assert!(!k.vip_leases, "off unless asked for");
    let leased = text.replace("identity = \"node-a\"", "identity = \"node-a\"\nvip_leases = true");
    assert!(parse(&leased).unwrap().kubernetes.unwrap().vip_leases);
    let bad = text.replace("198.19.1.0/24", "198.19.1.0/40");
    let e = parse(&bad).unwrap_err();
    assert_eq!(e.field, "kubernetes.pool[0].addresses", "{e}");
    assert!(e.line.is_some());
    let bad = text.replace("dsr_l2", "warp");
    assert_eq!(parse(&bad).unwrap_err().field, "kubernetes.default_mode");
}

/// `[neighbor_table]`: the example's timers reach the loader, bad ones are refused naming the key and the table.
#[test]
fn neighbor_table_timers() {
    let l = parse(EXAMPLE).unwrap();
    let t = l.neighbor_timers;
    assert_eq!((t.reachable.as_millis(), t.probe.as_millis(), t.probes), (30_000, 1000, 3));
    let at = line_of("[neighbor_table]");
    expect("probes = 3 ", "probes = 0 ", "neighbor_table.probes", at);
    expect("probe_ms = 1000", "probe_ms = 5", "neighbor_table.probe_ms", at);
    expect("reachable_ms = 30000", "reachable_ms = 500", "neighbor_table.reachable_ms", at);
    let without = EXAMPLE.replace("reachable_ms = 30000", "");
    assert_eq!(parse(&without).unwrap().neighbor_timers.reachable.as_secs(), 30, "defaults fill what is left out");
}

/// `[[vrrp]]` routers: defaults, and each rule named with the router's index.
#[test]
fn vrrp_routers_and_their_rules() {
    let with = |extra: &str| parse(&format!("{EXAMPLE}\n[[vrrp]]\nport = \"lb0\"\nvrid = 51\n{extra}\n"));
    let l = with("vips = [\"198.19.0.1\"]\nadvert_interval_ms = 100").unwrap();
    let r = &l.vrrp[0];
    assert_eq!((r.name.as_str(), r.port, r.vrid, r.priority, r.interval_cs), ("lb0-51-v4", 0, 51, 100, 10));
    assert!(r.preempt && r.garp_count == 3 && r.track_penalty == 254);
    let v6 = with("vips = [\"2001:db8:100::1\"]\nname = \"six\"\npreempt_delay_ms = 2000").unwrap();
    assert_eq!((v6.vrrp[0].name.as_str(), v6.vrrp[0].preempt_delay.as_millis()), ("six", 2000));
    for (extra, field) in [
        ("vips = []", "vrrp[0].vips"),
        ("vips = [\"198.19.0.1\", \"2001:db8::1\"]", "vrrp[0].vips"),
        ("vips = [\"x\"]", "vrrp[0].vips[0]"),
        ("vips = [\"198.19.0.1\"]\npriority = 255", "vrrp[0].priority"),
        ("vips = [\"198.19.0.1\"]\nadvert_interval_ms = 105", "vrrp[0].advert_interval_ms"),
        ("vips = [\"198.19.0.1\"]\nadvert_interval_ms = 0", "vrrp[0].advert_interval_ms"),
        ("vips = [\"198.19.0.1\"]\ngarp_count = 0", "vrrp[0].garp_count"),
        ("vips = [\"198.19.0.1\"]\ntrack_penalty = 256", "vrrp[0].track_penalty"),
        ("vips = [\"198.19.0.1\"]\ncolour = 1", "toml"),
    ] {
        let e = with(extra).expect_err(extra);
        assert!(e.field.starts_with(field), "{extra}: {e}");
    }
    let e = parse(&format!("{EXAMPLE}\n[[vrrp]]\nport = \"eth9\"\nvrid = 1\nvips = [\"198.19.0.1\"]\n")).unwrap_err();
    assert_eq!(e.field, "vrrp[0].port", "{e}");
    let twice = "[[vrrp]]\nport = \"lb0\"\nvrid = 7\nvips = [\"198.19.0.1\"]\n[[vrrp]]\nport = \"lb0\"\nvrid = 7\nvips = [\"198.19.0.2\"]\n";
    assert_eq!(parse(&format!("{EXAMPLE}\n{twice}")).unwrap_err().field, "vrrp[1].vrid");
}

#[test]
fn flow_table_sizes_per_worker() {
    let d = edgelb_dataplane::pipeline::TableSizes::default();
    assert_eq!(parse(EXAMPLE).unwrap().tables, d);
    let small = EXAMPLE.replace("cores = [1]", "cores = [1]\nflows_v4 = 4096\nflows_v6 = 2048");
    let t = parse(&small).unwrap().tables;
    assert_eq!((t.flows_v4, t.flows_v6, t.affinity), (4096, 2048, d.affinity));
    let e = parse(&EXAMPLE.replace("cores = [1]", "cores = [1]\nflows_v4 = 100")).unwrap_err();
    assert_eq!(e.field, "workers.flows_v4");
    assert!(e.message.contains("1024 to"), "{}", e.message);
}

#[test]
fn at_most_seven_addresses_per_port() {
    let addrs = |n: usize| (1..=n).map(|i| format!("\"198.18.0.{i}/24\"")).collect::<Vec<_>>().join(", ");
    let seven = EXAMPLE.replace("addresses = [\"198.18.0.1/24\"]", &format!("addresses = [{}]", addrs(7)));
    assert_eq!(parse(&seven).unwrap().model.interfaces[0].addrs.len(), 7);
    let eight = EXAMPLE.replace("addresses = [\"198.18.0.1/24\"]", &format!("addresses = [{}]", addrs(8)));
    let e = parse(&eight).unwrap_err();
    assert!(e.message.contains("at most 7 per port"), "{e}");
}

#[test]
fn replication_section() {
    let with = |t: &str| format!("{EXAMPLE}\n[replication]\n{t}");
    let r = parse(&with("listen = \"198.18.255.1:7946\"\npeers = [\"198.18.255.5:7946\", \"[2001:db8::5]:7946\"]\nsecret = \"0123456789abcdef\"\n"))
        .unwrap()
        .replication
        .unwrap();
    assert_eq!((r.peers.len(), r.secret.len(), r.rate), (2, 16, 100_000));
    let e = parse(&with("listen = \"198.18.255.1:7946\"\npeers = [\"198.18.255.5:7946\"]\nsecret = \"short\"\n"))
        .unwrap_err();
    assert_eq!(e.field, "replication.secret");
    let e = parse(&with("listen = \"198.18.255.1\"\npeers = [\"198.18.255.5:7946\"]\nsecret = \"0123456789abcdef\"\n"))
        .unwrap_err();
    assert_eq!(e.field, "replication.listen");
    let e = parse(&with("listen = \"198.18.255.1:7946\"\npeers = []\nsecret = \"0123456789abcdef\"\n")).unwrap_err();
    assert_eq!(e.field, "replication.peers");
}

/// `[workers] polling`: busy by default, adaptive on request, the longest sleep bounded; each error names its key.
#[test]
fn worker_polling() {
    use edgelb_dataplane::worker::Polling;
    let with = |t: &str| parse(&EXAMPLE.replace("cores = [1]", &format!("cores = [1]\n{t}")));
    assert_eq!(with("").unwrap().polling, Polling::Busy);
    assert_eq!(with("polling = \"adaptive\"").unwrap().polling, Polling::Adaptive { max_sleep_us: 200 });
    assert_eq!(
        with("polling = \"adaptive\"\nmax_sleep_us = 50").unwrap().polling,
        Polling::Adaptive { max_sleep_us: 50 }
    );
    for (t, field) in [
        ("polling = \"interrupt\"", "workers.polling"),
        ("polling = \"busy\"\nmax_sleep_us = 50", "workers.max_sleep_us"),
        ("max_sleep_us = 0", "workers.max_sleep_us"),
        ("max_sleep_us = 20000", "workers.max_sleep_us"),
    ] {
        assert_eq!(with(t).unwrap_err().field, field, "{t}");
    }
}

/// `[workers] new_flow_limit`: off (0) by default, taken as given, bounded; a wrong value names its key.
#[test]
fn worker_new_flow_limit() {
    let with = |t: &str| parse(&EXAMPLE.replace("cores = [1]", &format!("cores = [1]\n{t}")));
    assert_eq!(with("").unwrap().new_flow_limit, 0);
    assert_eq!(with("new_flow_limit = 200000").unwrap().new_flow_limit, 200_000);
    assert_eq!(with("new_flow_limit = 0").unwrap().new_flow_limit, 0);
    assert_eq!(with("new_flow_limit = 100000001").unwrap_err().field, "workers.new_flow_limit");
    // A value that is no count at all: TOML's error, at the key's line.
    let text = EXAMPLE.replace("cores = [1]", "cores = [1]\nnew_flow_limit = -1");
    let line = text.lines().position(|l| l.starts_with("new_flow_limit")).map(|i| i + 1);
    assert_eq!(parse(&text).unwrap_err().line, line);
}
