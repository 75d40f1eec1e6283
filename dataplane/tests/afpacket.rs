//! The AF_PACKET port against the real kernel: namespaces `a` and `b` joined by a veth pair; the port owns `vb`.
//! Kernel traffic from `a` is received (plain and VLAN-tagged, the tag restored in the frame), and a frame the port
//! transmits is delivered to a kernel UDP socket in `a`.

use edgelb_dataplane::packet::MemBuf;
use edgelb_dataplane::port::afpacket::{AfPacketConfig, AfPacketPort};
use edgelb_dataplane::port::{Burst, Port};
use edgelb_dataplane::wire::build::{frame, Segment};
use edgelb_dataplane::wire::proto;
use edgelb_testkit::kernel_ports::{receive, transmit_to_kernel};
use edgelb_testkit::netns::{in_netns, require_root, Lab};
use std::net::UdpSocket;

#[test]
fn afpacket_port_receives_and_transmits_on_veth() {
    require_root();
    let mut lab = Lab::new("afp");
    let (a, b, va_mac, vb_mac) = lab.port_peer();

    let bname = b.clone();
    let mut port =
        in_netns(&bname, || AfPacketPort::open("vb", AfPacketConfig { frames: 512, ..Default::default() }).unwrap());
    assert!(in_netns(&b, || AfPacketPort::open("nope0", AfPacketConfig::default()).is_err()));

    // Receive: 300 datagrams sent by the kernel in `a`.
    let sock = in_netns(&a, || UdpSocket::bind("198.18.0.1:0").unwrap());
    for i in 0..300u32 {
        sock.send_to(&i.to_be_bytes(), "198.18.0.2:9999").unwrap();
    }
    let (got, vlans) = receive(&mut port, 9999, 300);
    assert_eq!(got, 300, "every datagram reached the port");
    assert!(vlans.iter().all(Option::is_none));

    // Tagged frames (this kernel has no 802.1Q devices, so a second port on `va` sends them): the kernel may move
    // the tag into the ring header; the receiving port must put it back in the frame.
    let mut sender =
        in_netns(&a, || AfPacketPort::open("va", AfPacketConfig { frames: 64, ..Default::default() }).unwrap());
    let mut tagged: Burst<MemBuf> = Burst::new();
    for i in 0..20u16 {
        let mut buf = [0u8; 128];
        let seg = Segment {
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.18.0.2".parse().unwrap(),
            proto: proto::UDP,
            sport: 4000 + i,
            dport: 9998,
            tcp_flags: 0,
            payload: b"tagged",
            ttl: 64,
        };
        let n = frame(&mut buf, vb_mac, va_mac, &seg).unwrap();
        let mut f = buf[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 100]); // 802.1Q, PCP 0, VID 100
        f.extend_from_slice(&buf[12..n]);
        tagged.push(MemBuf::from_slice(&f));
    }
    assert_eq!(sender.tx_burst(&mut tagged), 20);
    let (got, vlans) = receive(&mut port, 9998, 20);
    assert_eq!(got, 20);
    assert!(vlans.iter().all(|v| *v == Some(100)), "{vlans:?}");

    // Transmit: a frame built here, delivered to a kernel socket in `a`.
    transmit_to_kernel(&mut port, &a, va_mac, vb_mac);
    let s = port.stats();
    assert_eq!(s.tx_packets, 1);
    assert!(s.rx_packets >= 320);
}
