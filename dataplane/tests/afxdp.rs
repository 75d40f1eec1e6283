//! The AF_XDP port against the real kernel: namespaces `a` and `b` joined by a veth pair; the port owns queue 0 of
//! `vb` (copy mode, our XDP program attached). Kernel traffic from `a` is received, and a frame the port transmits
//! is delivered to a kernel UDP socket in `a`.

use edgelb_dataplane::port::afxdp::AfXdpPort;
use edgelb_dataplane::port::Port;
use edgelb_testkit::kernel_ports::{receive, transmit_to_kernel};
use edgelb_testkit::netns::{in_netns, require_root, Lab};
use std::net::UdpSocket;

#[test]
fn afxdp_port_receives_and_transmits_on_veth() {
    require_root();
    let mut lab = Lab::new("axdp");
    let (a, b, va_mac, vb_mac) = lab.port_peer();

    let bname = b.clone();
    let mut port = in_netns(&bname, || AfXdpPort::open("vb").unwrap_or_else(|e| panic!("{e}")));
    assert!(in_netns(&b, || AfXdpPort::open("nope0").is_err()));

    // Receive: 300 datagrams sent by the kernel in `a`.
    let sock = in_netns(&a, || UdpSocket::bind("198.18.0.1:0").unwrap());
    for i in 0..300u32 {
        sock.send_to(&i.to_be_bytes(), "198.18.0.2:9999").unwrap();
    }
    let (got, vlans) = receive(&mut port, 9999, 300);
    assert_eq!(got, 300, "every datagram reached the port");
    assert!(vlans.iter().all(Option::is_none));

    // Transmit: a frame built here, delivered to a kernel socket in `a`.
    transmit_to_kernel(&mut port, &a, va_mac, vb_mac);
    let s = port.stats();
    assert_eq!(s.tx_packets, 1);
    assert!(s.rx_packets >= 300);
}
