//! The pcap port end to end: a capture of client SYNs to a NAT VIP, replayed through a worker, comes out as a
//! capture of the same flows rewritten toward the backends.

use edgelb_dataplane::model::{BackendSpec, BackendState, InterfaceSpec, Mode, Model, Protocol, ServiceSpec};
use edgelb_dataplane::pipeline::TableSizes;
use edgelb_dataplane::port::pcap::{read_all, PcapPort};
use edgelb_dataplane::snapshot::{ConfigBuilder, ConfigHandle};
use edgelb_dataplane::wire::build::{frame, Segment};
use edgelb_dataplane::wire::ipv4::Ipv4Packet;
use edgelb_dataplane::wire::proto;
use edgelb_dataplane::wire::tcp::{flags, TcpPacket};
use edgelb_dataplane::worker;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;
use std::net::IpAddr;
use std::time::Duration;

#[test]
fn replay_a_capture_through_a_worker() {
    let dir = std::env::temp_dir().join(format!("edgelb-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join("in.pcap"), dir.join("out.pcap"));
    let vip: IpAddr = "198.19.0.1".parse().unwrap();
    let backends: Vec<IpAddr> = vec!["198.18.2.10".parse().unwrap(), "198.18.2.11".parse().unwrap()];
    {
        let f = std::fs::File::create(&input).unwrap();
        let mut w =
            PcapWriter::with_header(f, PcapHeader { datalink: DataLink::ETHERNET, ..Default::default() }).unwrap();
        let mut buf = [0u8; 128];
        for i in 0..100u16 {
            let seg = Segment {
                src: IpAddr::V4([198, 18, 0, 10].into()),
                dst: vip,
                proto: proto::TCP,
                sport: 10_000 + i,
                dport: 80,
                tcp_flags: flags::SYN,
                payload: b"",
                ttl: 64,
            };
            let n = frame(&mut buf, [2, 0, 0, 0, 1, 0], [2, 0, 0, 0, 0, 0xfe], &seg).unwrap();
            w.write_packet(&PcapPacket::new(Duration::from_micros(u64::from(i)), n as u32, &buf[..n])).unwrap();
        }
    }
    let model = Model {
        services: vec![ServiceSpec::new(
            vip,
            Protocol::Tcp,
            Some(80),
            Mode::Nat,
            backends
                .iter()
                .map(|&addr| BackendSpec { addr, port: 8080, weight: 1, state: BackendState::Active })
                .collect(),
        )],
        interfaces: vec![InterfaceSpec {
            port: 0,
            mac: [2, 0, 0, 0, 1, 0],
            addrs: vec![("198.18.2.1".parse().unwrap(), 24)],
            mtu: 1500,
        }],
        neighbours: backends.iter().map(|&a| (a, [2, 0, 0, 2, 0, 1])).collect(),
        ..Model::default()
    };
    let (cfg, _) = ConfigBuilder::new().build(&model).unwrap();
    let handle = ConfigHandle::new(cfg);
    let port = PcapPort::open(&input, &output).unwrap();
    let mut w = worker::single(vec![port], TableSizes { flows_v4: 1024, flows_v6: 64, affinity: 64, fragments: 64 });
    let mut done = 0;
    while done < 100 {
        let n = w.poll(&handle);
        assert!(n > 0, "the capture ran out after {done} packets");
        done += n;
    }
    drop(w); // flushes the output capture
    let out = read_all(&output).unwrap();
    assert_eq!(out.len(), 100);
    let mut per_backend = [0; 2];
    for (i, f) in out.iter().enumerate() {
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(t.src_port(), 10_000 + i as u16, "order kept");
        assert_eq!(t.dst_port(), 8080);
        let b = backends.iter().position(|&b| b == IpAddr::V4(ip.dst().into())).expect("sent to a backend");
        per_backend[b] += 1;
    }
    assert!(per_backend.iter().all(|&n| n > 20), "{per_backend:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
