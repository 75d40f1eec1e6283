//! Checks of a kernel-backed port (AF_PACKET, AF_XDP, DPDK on a veth): frames received from and transmitted to the
//! kernel on the other side of a [`crate::netns::Lab::port_peer`] pair.

use crate::netns::in_netns;
use edgelb_dataplane::packet::{MemBuf, PacketBuf};
use edgelb_dataplane::port::{Burst, Port};
use edgelb_dataplane::wire::build::{frame, Segment};
use edgelb_dataplane::wire::ethernet::{ethertype, parse_l2};
use edgelb_dataplane::wire::ipv4::Ipv4Packet;
use edgelb_dataplane::wire::proto;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// Receive until `want` UDP datagrams to `dport` arrived or 5 s passed; returns (count, VLAN IDs seen).
pub fn receive<P: Port<Buf = MemBuf>>(port: &mut P, dport: u16, want: usize) -> (usize, Vec<Option<u16>>) {
    let mut got = 0;
    let mut vlans = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut burst = Burst::new();
    while got < want && Instant::now() < deadline {
        if port.rx_burst(&mut burst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        for b in burst.drain(..) {
            let d = b.data();
            if let Ok(l2) = parse_l2(d) {
                if l2.ethertype == ethertype::IPV4 {
                    if let Ok(ip) = Ipv4Packet::new_checked(&d[l2.l3_offset..]) {
                        let p = ip.payload();
                        if ip.protocol() == proto::UDP && p.len() >= 4 && u16::from_be_bytes([p[2], p[3]]) == dport {
                            got += 1;
                            vlans.push(l2.inner_vid());
                        }
                    }
                }
            }
            port.free(b);
        }
    }
    (got, vlans)
}

/// Transmit one UDP frame from 198.18.0.2:5000 (`port_mac`, the port's side) to 198.18.0.1:7777 (`peer_mac`, a
/// kernel socket in namespace `peer_ns`) and check the socket receives its payload and source.
pub fn transmit_to_kernel<P: Port<Buf = MemBuf>>(port: &mut P, peer_ns: &str, peer_mac: [u8; 6], port_mac: [u8; 6]) {
    let rx = in_netns(peer_ns, || UdpSocket::bind("198.18.0.1:7777").unwrap());
    rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 128];
    let seg = Segment {
        src: "198.18.0.2".parse().unwrap(),
        dst: "198.18.0.1".parse().unwrap(),
        proto: proto::UDP,
        sport: 5000,
        dport: 7777,
        tcp_flags: 0,
        payload: b"from the port",
        ttl: 64,
    };
    let n = frame(&mut buf, peer_mac, port_mac, &seg).unwrap();
    let mut out: Burst<MemBuf> = Burst::new();
    out.push(MemBuf::from_slice(&buf[..n]));
    assert_eq!(port.tx_burst(&mut out), 1);
    let mut got = [0u8; 64];
    let (len, from) = rx.recv_from(&mut got).expect("the transmitted frame reached the kernel socket");
    assert_eq!(&got[..len], b"from the port");
    assert_eq!(from, "198.18.0.2:5000".parse().unwrap());
}
