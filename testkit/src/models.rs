//! Operator models on the lab addressing plan, for pipeline tests and fuzz targets.

use crate::packets::{check_frame, ip_of, Seen};
use edgelb_dataplane::model::{BackendSpec, BackendState, InterfaceSpec, Mode, Model, Protocol, ServiceSpec, Timeouts};
use std::net::IpAddr;

/// The appliance's client-side port MAC (port 0).
pub const PORT0_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0];
/// The appliance's backend-side port MAC (port 1).
pub const PORT1_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
/// The IPv4 gateway toward the clients.
pub const GW4: &str = "198.18.1.254";
/// The IPv6 gateway toward the clients.
pub const GW6: &str = "2001:db8:1::fe";

/// One service of [`every_mode`]: VIP, protocol, port (None: all ports), mode, backends (address, port).
pub type ServiceRow = (&'static str, Protocol, Option<u16>, Mode, &'static [(&'static str, u16)]);

/// The services of [`every_mode`]: every forwarding mode in both families, TCP and UDP, one all-ports service and
/// one with client-address affinity (198.19.0.7).
pub const SERVICES: &[ServiceRow] = &[
    ("198.19.0.1", Protocol::Tcp, Some(80), Mode::Nat, &[("198.18.2.10", 8080), ("198.18.2.20", 8080)]),
    ("198.19.0.2", Protocol::Tcp, Some(80), Mode::FullNat, &[("198.18.2.11", 80)]),
    ("198.19.0.3", Protocol::Tcp, Some(80), Mode::DsrL2, &[("198.18.2.12", 0)]),
    ("198.19.0.4", Protocol::Tcp, Some(80), Mode::Ipip, &[("198.18.2.13", 0)]),
    ("198.19.0.5", Protocol::Udp, Some(53), Mode::Gue, &[("198.18.2.14", 0)]),
    ("198.19.0.6", Protocol::Udp, None, Mode::Nat, &[("198.18.2.15", 0)]),
    ("198.19.0.7", Protocol::Tcp, Some(443), Mode::Nat, &[("198.18.2.16", 443), ("198.18.2.17", 443)]),
    ("198.19.0.8", Protocol::Udp, Some(53), Mode::FullNat, &[("198.18.2.18", 5353)]),
    ("2001:db8:100::1", Protocol::Tcp, Some(80), Mode::Nat, &[("2001:db8:2::10", 8080)]),
    ("2001:db8:100::2", Protocol::Tcp, Some(80), Mode::FullNat, &[("2001:db8:2::11", 80)]),
    ("2001:db8:100::3", Protocol::Tcp, Some(80), Mode::DsrL2, &[("2001:db8:2::12", 0)]),
    ("2001:db8:100::4", Protocol::Tcp, Some(80), Mode::Ipip, &[("2001:db8:2::13", 0)]),
    ("2001:db8:100::5", Protocol::Udp, Some(53), Mode::Gue, &[("2001:db8:2::14", 0)]),
    ("2001:db8:100::6", Protocol::Udp, Some(53), Mode::Nat, &[("2001:db8:2::15", 5353)]),
];

/// The MAC [`every_mode`] gives neighbour `i` of [`neighbour_addrs`].
pub fn neighbour_mac(i: usize) -> [u8; 6] {
    [2, 0, 0, 0, 2, i as u8]
}

/// Every backend and both gateways: the neighbours [`every_mode`] knows statically.
pub fn neighbour_addrs() -> Vec<IpAddr> {
    neighbours().to_vec()
}

fn neighbours() -> &'static [IpAddr] {
    static N: std::sync::OnceLock<Vec<IpAddr>> = std::sync::OnceLock::new();
    N.get_or_init(|| {
        let mut v: Vec<IpAddr> = vec![GW4.parse().unwrap(), GW6.parse().unwrap()];
        for (_, _, _, _, bs) in SERVICES {
            for (a, _) in bs.iter() {
                let a: IpAddr = a.parse().unwrap();
                if !v.contains(&a) {
                    v.push(a);
                }
            }
        }
        v
    })
}

/// Two ports (clients on port 0 behind the gateways, backends on port 1), the [`SERVICES`] with Maglev tables of
/// `maglev_size` slots, static neighbours, full-NAT sources and tunnel prefixes for both families.
pub fn every_mode(maglev_size: u32) -> Model {
    let services = SERVICES
        .iter()
        .map(|&(vip, proto, port, mode, bs)| {
            let backends = bs
                .iter()
                .map(|&(a, p)| BackendSpec {
                    addr: a.parse().unwrap(),
                    port: p,
                    weight: 1,
                    state: BackendState::Active,
                })
                .collect();
            let mut s = ServiceSpec::new(vip.parse().unwrap(), proto, port, mode, backends);
            s.maglev_size = Some(maglev_size);
            if vip == "198.19.0.7" {
                s.affinity_timeout_s = Some(60);
            }
            s
        })
        .collect();
    Model {
        services,
        interfaces: vec![
            InterfaceSpec {
                port: 0,
                mac: PORT0_MAC,
                addrs: vec![("198.18.1.1".parse().unwrap(), 24), ("2001:db8:1::1".parse().unwrap(), 64)],
                mtu: 1500,
            },
            InterfaceSpec {
                port: 1,
                mac: PORT1_MAC,
                addrs: vec![("198.18.2.1".parse().unwrap(), 24), ("2001:db8:2::1".parse().unwrap(), 64)],
                mtu: 1500,
            },
        ],
        gateways: vec![GW4.parse().unwrap(), GW6.parse().unwrap()],
        neighbours: neighbour_addrs().into_iter().enumerate().map(|(i, a)| (a, neighbour_mac(i))).collect(),
        fullnat_sources: vec!["198.18.2.1".parse().unwrap(), "2001:db8:2::1".parse().unwrap()],
        fullnat_ports: (20000, 29999),
        tunnel_sources: vec![("198.18.3.0".parse().unwrap(), 24), ("2001:db8:3::".parse().unwrap(), 120)],
        timeouts: Timeouts::default(),
        draining: false,
    }
}

/// Check a frame the appliance transmitted for `input` (the frame it received, from `sender` when known), under
/// [`every_mode`]: it passes [`check_frame`] when the input did (the appliance does not verify transport checksums,
/// as IPVS and Katran do not: a wrong one received stays wrong, a right one must stay right), it fits the 1500-byte
/// MTU with its L2 header, and it goes to a neighbour (backend or gateway, by address and MAC, or by MAC alone for
/// DSR and client replies) or back to the sender. `Ok(None)`: the input was invalid and the output carries that on.
///
/// # Errors
/// What is wrong with the transmitted frame.
pub fn check_transmitted(out: &[u8], input: &[u8], sender: Option<IpAddr>) -> Result<Option<Seen>, String> {
    let seen = match check_frame(out) {
        Ok(s) => s,
        Err(e) if check_frame(input).is_ok() => return Err(format!("a valid frame was transmitted invalid: {e}")),
        // What an invalid input carries on: its transport checksum or UDP length, or the whole packet inside a
        // tunnel. Never an outer IP header fault: the appliance writes or checks every outer header it sends.
        Err(e)
            if e.starts_with("tunnelled packet")
                || e.starts_with("UDP length")
                || (e.contains("checksum") && e.ends_with("is wrong") && !e.starts_with("IPv4 header")) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(format!("transmitted frame fails the independent check: {e}")),
    };
    let l2 = out.len() - ip_of(out).len();
    if out.len() > 1500 + l2 {
        return Err(format!("a {}-byte frame exceeds the 1500-byte MTU", out.len()));
    }
    let neighbours = neighbours();
    let by_mac = (0..neighbours.len()).any(|i| seen.dst_mac == neighbour_mac(i));
    if !by_mac && Some(seen.dst) != sender {
        return Err(format!("a frame to {} at {:02x?}: neither a neighbour nor the sender", seen.dst, seen.dst_mac));
    }
    if let Some(i) = neighbours.iter().position(|a| *a == seen.dst) {
        if seen.dst_mac != neighbour_mac(i) && Some(seen.dst) != sender {
            return Err(format!("a frame to neighbour {} at another neighbour's MAC {:02x?}", seen.dst, seen.dst_mac));
        }
    }
    Ok(Some(seen))
}
