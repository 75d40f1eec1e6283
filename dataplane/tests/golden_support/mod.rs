//! The golden table's loader, shared by the test binaries that replay it (`golden.rs`, `dpdk.rs`).

use edgelb_dataplane::model::{BackendSpec, BackendState, InterfaceSpec, Mode, Model, Protocol, ServiceSpec, Timeouts};
use edgelb_dataplane::port::pcap::read_all;
use serde_json::Value;
use std::net::IpAddr;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    v.try_into().unwrap()
}

fn cidr(s: &str) -> (IpAddr, u8) {
    let (a, l) = s.split_once('/').unwrap();
    (a.parse().unwrap(), l.parse().unwrap())
}

pub fn model(cfg: &Value, phase: &str) -> Model {
    let services = cfg["configs"][phase]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let backends = s["backends"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| BackendSpec {
                    addr: b["addr"].as_str().unwrap().parse().unwrap(),
                    port: b["port"].as_u64().unwrap() as u16,
                    weight: b["weight"].as_u64().unwrap() as u32,
                    state: match b["state"].as_str().unwrap() {
                        "active" => BackendState::Active,
                        "draining" => BackendState::Draining,
                        _ => BackendState::Down,
                    },
                })
                .collect();
            let proto = if s["protocol"] == "tcp" { Protocol::Tcp } else { Protocol::Udp };
            let mode: Mode = s["mode"].as_str().unwrap().parse().unwrap();
            let mut spec = ServiceSpec::new(
                s["vip"].as_str().unwrap().parse().unwrap(),
                proto,
                s["port"].as_u64().map(|p| p as u16),
                mode,
                backends,
            );
            spec.affinity_timeout_s = s.get("affinity_timeout_s").and_then(Value::as_u64).map(|x| x as u32);
            if let Some(p) = s.get("gue_port").and_then(Value::as_u64) {
                spec.gue_port = p as u16;
            }
            spec
        })
        .collect();
    Model {
        services,
        interfaces: cfg["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| InterfaceSpec {
                port: i["port"].as_u64().unwrap() as u16,
                mac: mac(i["mac"].as_str().unwrap()),
                addrs: i["addrs"].as_array().unwrap().iter().map(|a| cidr(a.as_str().unwrap())).collect(),
                mtu: i["mtu"].as_u64().unwrap() as u16,
            })
            .collect(),
        gateways: cfg["gateways"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().parse().unwrap()).collect(),
        neighbours: cfg["neighbours"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n[0].as_str().unwrap().parse().unwrap(), mac(n[1].as_str().unwrap())))
            .collect(),
        fullnat_sources: cfg["fullnat_sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().parse().unwrap())
            .collect(),
        fullnat_ports: (
            cfg["fullnat_ports"][0].as_u64().unwrap() as u16,
            cfg["fullnat_ports"][1].as_u64().unwrap() as u16,
        ),
        tunnel_sources: cfg["tunnel_sources"].as_array().unwrap().iter().map(|t| cidr(t.as_str().unwrap())).collect(),
        timeouts: Timeouts::default(),
        draining: false,
    }
}

pub struct Golden {
    pub cases: Vec<Value>,
    pub inputs: Vec<Vec<u8>>,
    pub expected: Vec<Vec<u8>>,
    pub config: Value,
}

pub fn load() -> Golden {
    let d = dir();
    Golden {
        cases: serde_json::from_str::<Vec<Value>>(&std::fs::read_to_string(d.join("cases.json")).unwrap()).unwrap(),
        inputs: read_all(&d.join("input.pcap")).unwrap(),
        expected: read_all(&d.join("expected.pcap")).unwrap(),
        config: serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap(),
    }
}
