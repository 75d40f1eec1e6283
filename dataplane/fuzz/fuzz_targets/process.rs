//! Fuzz the whole pipeline: any bytes, on either port, through one long-lived pipeline (so state — flows, replies,
//! fragments — builds up across inputs). Invariants checked on every input:
//! - nothing panics;
//! - every packet gets exactly one verdict (rx equals tx + slow path + hand-off + drops);
//! - a transmitted IPv4 packet still has a valid header checksum (rewrites keep checksums right), and a transmitted
//!   frame still parses as Ethernet.
#![no_main]

use edgelb_dataplane::config::{
    BackendSpec, BackendState, ConfigBuilder, DataplaneConfig, InterfaceSpec, Mode, Model, Protocol, ServiceSpec,
};
use edgelb_dataplane::packet::{MemBuf, PacketBuf};
use edgelb_dataplane::pipeline::{Pipeline, TableSizes, Verdict};
use edgelb_dataplane::wire::{checksum, ethernet};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex, OnceLock};

fn model() -> Model {
    let be = |a: &str, port| BackendSpec { addr: a.parse().unwrap(), port, weight: 1, state: BackendState::Active };
    let svc = |vip: &str, proto, port, mode, backends| ServiceSpec::new(vip.parse().unwrap(), proto, port, mode, backends);
    let mut affinity = svc("198.19.0.7", Protocol::Tcp, Some(443), Mode::Nat, vec![be("198.18.2.16", 443), be("198.18.2.17", 443)]);
    affinity.affinity_timeout_s = Some(60);
    Model {
        services: vec![
            svc("198.19.0.1", Protocol::Tcp, Some(80), Mode::Nat, vec![be("198.18.2.10", 8080), be("198.18.2.20", 8080)]),
            svc("198.19.0.2", Protocol::Tcp, Some(80), Mode::FullNat, vec![be("198.18.2.11", 80)]),
            svc("198.19.0.3", Protocol::Tcp, Some(80), Mode::DsrL2, vec![be("198.18.2.12", 0)]),
            svc("198.19.0.4", Protocol::Tcp, Some(80), Mode::Ipip, vec![be("198.18.2.13", 0)]),
            svc("198.19.0.5", Protocol::Udp, Some(53), Mode::Gue, vec![be("198.18.2.14", 0)]),
            svc("198.19.0.6", Protocol::Udp, None, Mode::Nat, vec![be("198.18.2.15", 0)]),
            affinity,
            svc("2001:db8:100::1", Protocol::Tcp, Some(80), Mode::Nat, vec![be("2001:db8:2::10", 8080)]),
            svc("2001:db8:100::2", Protocol::Tcp, Some(80), Mode::FullNat, vec![be("2001:db8:2::11", 80)]),
            svc("2001:db8:100::3", Protocol::Tcp, Some(80), Mode::DsrL2, vec![be("2001:db8:2::12", 0)]),
            svc("2001:db8:100::4", Protocol::Tcp, Some(80), Mode::Ipip, vec![be("2001:db8:2::13", 0)]),
            svc("2001:db8:100::5", Protocol::Udp, Some(53), Mode::Gue, vec![be("2001:db8:2::14", 0)]),
        ],
        interfaces: vec![
            InterfaceSpec {
                port: 0,
                mac: [2, 0, 0, 0, 1, 0],
                addrs: vec![("198.18.1.1".parse().unwrap(), 24), ("2001:db8:1::1".parse().unwrap(), 64)],
                mtu: 1500,
            },
            InterfaceSpec {
                port: 1,
                mac: [2, 0, 0, 0, 1, 1],
                addrs: vec![("198.18.2.1".parse().unwrap(), 24), ("2001:db8:2::1".parse().unwrap(), 64)],
                mtu: 1500,
            },
        ],
        gateways: vec!["198.18.1.254".parse().unwrap(), "2001:db8:1::fe".parse().unwrap()],
        neighbours: ["198.18.1.254", "2001:db8:1::fe", "198.18.2.10", "198.18.2.11", "198.18.2.12", "198.18.2.13",
            "198.18.2.14", "198.18.2.15", "198.18.2.16", "198.18.2.17", "198.18.2.20", "2001:db8:2::10",
            "2001:db8:2::11", "2001:db8:2::12", "2001:db8:2::13", "2001:db8:2::14"]
            .iter()
            .enumerate()
            .map(|(i, a)| (a.parse().unwrap(), [2, 0, 0, 0, 2, i as u8]))
            .collect(),
        fullnat_sources: vec!["198.18.2.1".parse().unwrap(), "2001:db8:2::1".parse().unwrap()],
        fullnat_ports: (20000, 29999),
        tunnel_sources: vec![("198.18.3.0".parse().unwrap(), 24), ("2001:db8:3::".parse().unwrap(), 120)],
        timeouts: Default::default(),
        draining: false,
    }
}

struct State {
    cfg: Arc<DataplaneConfig>,
    pipeline: Pipeline,
    now: u32,
}

fn state() -> &'static Mutex<State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(|| {
        let (cfg, _) = ConfigBuilder::new().build(&model()).expect("fuzz model is valid");
        let mut pipeline =
            Pipeline::new(0, 1, TableSizes { flows_v4: 4096, flows_v6: 4096, affinity: 256, fragments: 256 });
        pipeline.sync(&cfg);
        Mutex::new(State { cfg, pipeline, now: 1 })
    })
}

fuzz_target!(|data: &[u8]| {
    // First byte: ingress port and clock step; the rest is the frame.
    let Some((&ctl, frame)) = data.split_first() else { return };
    let mut s = state().lock().unwrap_or_else(|p| p.into_inner());
    s.now = s.now.wrapping_add(u32::from(ctl >> 1) * 37);
    let now = s.now;
    let cfg = s.cfg.clone();
    let mut b = MemBuf::from_slice(frame);
    let v = s.pipeline.process(&cfg, u16::from(ctl & 1), &mut b, now);
    let c = &s.pipeline.counters;
    assert_eq!(c.rx, c.tx + c.slowpath + c.handoff + c.dropped_total(), "a packet without exactly one verdict");
    if let Verdict::Tx(port) = v {
        assert!(port <= 1, "transmit to a port that does not exist: {port}");
        let out = b.data();
        let l2 = ethernet::parse_l2(out).expect("transmitted frame parses as Ethernet");
        if l2.ethertype == ethernet::ethertype::IPV4 {
            let ip = &out[l2.l3_offset..];
            let hl = usize::from(ip[0] & 0x0f) * 4;
            assert_eq!(checksum::checksum(&ip[..hl]), 0, "transmitted IPv4 header checksum is wrong");
        }
    }
});
