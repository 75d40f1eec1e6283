//! Packets to a VIP another appliance owns now (VRRP Backup here, or its Lease held elsewhere) are still forwarded, and
//! counted: a client with a stale neighbour entry is served, and the operator sees it happen.

use edgelb_dataplane::model::{BackendSpec, BackendState, InterfaceSpec, Mode, Model, Protocol, ServiceSpec};
use edgelb_dataplane::packet::MemBuf;
use edgelb_dataplane::pipeline::{Pipeline, TableSizes, Verdict};
use edgelb_dataplane::snapshot::ConfigBuilder;
use edgelb_dataplane::wire::build::{frame, Segment};
use edgelb_dataplane::wire::proto;
use edgelb_dataplane::wire::tcp::flags;
use std::net::IpAddr;

const PORT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0];
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

fn model() -> Model {
    let svc = |vip: &str, be: &str| {
        let b = BackendSpec { addr: be.parse().unwrap(), port: 8080, weight: 1, state: BackendState::Active };
        ServiceSpec::new(vip.parse().unwrap(), Protocol::Tcp, Some(80), Mode::Nat, vec![b])
    };
    Model {
        services: vec![svc("198.19.0.1", "198.18.2.10"), svc("2001:db8:100::1", "2001:db8:2::10")],
        interfaces: vec![InterfaceSpec {
            port: 0,
            mac: PORT_MAC,
            addrs: vec![("198.18.2.1".parse().unwrap(), 24), ("2001:db8:2::1".parse().unwrap(), 64)],
            mtu: 1500,
        }],
        neighbours: vec![
            ("198.18.2.10".parse().unwrap(), [2, 0, 0, 2, 0, 1]),
            ("2001:db8:2::10".parse().unwrap(), [2, 0, 0, 2, 0, 2]),
        ],
        ..Model::default()
    }
}

fn syn(src: &str, dst: &str) -> MemBuf {
    let mut buf = [0u8; 128];
    let seg = Segment {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto: proto::TCP,
        sport: 40000,
        dport: 80,
        tcp_flags: flags::SYN,
        payload: b"",
        ttl: 64,
    };
    let n = frame(&mut buf, PORT_MAC, GW_MAC, &seg).unwrap();
    MemBuf::from_slice(&buf[..n])
}

#[test]
fn packets_to_a_vip_owned_elsewhere_are_forwarded_and_counted_in_both_families() {
    let mut builder = ConfigBuilder::new();
    let (owned, _) = builder.build(&model()).unwrap();
    builder.set_unowned(["198.19.0.1".parse::<IpAddr>().unwrap(), "2001:db8:100::1".parse().unwrap()]);
    let (unowned, _) = builder.build(&model()).unwrap();
    let mut p = Pipeline::new(0, 1, TableSizes { flows_v4: 1024, flows_v6: 1024, affinity: 64, fragments: 64 });
    for (client, vip) in [("198.18.0.10", "198.19.0.1"), ("2001:db8::10", "2001:db8:100::1")] {
        p.sync(&owned);
        assert!(matches!(p.process(&owned, 0, &mut syn(client, vip), 1), Verdict::Tx(0)));
        assert_eq!(p.counters.not_owner, 0, "{vip} owned here: not counted");
        p.sync(&unowned);
        let v = p.process(&unowned, 0, &mut syn(client, vip), 2);
        assert!(matches!(v, Verdict::Tx(0)), "{vip}: still forwarded, got {v:?}");
        assert_eq!(p.counters.not_owner, 1, "{vip} owned elsewhere: counted");
        p.counters.not_owner = 0;
    }
}
