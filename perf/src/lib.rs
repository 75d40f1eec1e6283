//! edgelb benchmark support: scenarios (a VIP in one mode with backends, and the traffic toward it) and a
//! [`ReplayPort`] that feeds a worker pre-built packets as fast as it can take them.
//!
//! The replay port copies each packet's first 64 bytes from a flat template array into a recycled buffer (what a
//! NIC's DMA would have written) and sets the frame length; it counts and recycles what the worker transmits. No
//! allocation after start-up.
#![forbid(unsafe_code)]

use edgelb_dataplane::model::{BackendSpec, BackendState, InterfaceSpec, Mode, Model, Protocol, ServiceSpec, Timeouts};
use edgelb_dataplane::packet::{MemBuf, PacketBuf};
use edgelb_dataplane::pipeline::owner_of_client;
use edgelb_dataplane::port::{Burst, Port, PortStats};
use edgelb_dataplane::wire::build::{frame, Segment};
use edgelb_dataplane::wire::proto;
use edgelb_dataplane::wire::tcp::flags;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Bytes of each template kept: all headers (IPv6 + TCP is 74 bytes); the rest of a larger frame is whatever the
/// recycled buffer holds (payload is never read).
pub const STRIDE: usize = 96;
/// Appliance port MAC.
pub const PORT_MAC: [[u8; 6]; 1] = [[2, 0, 0, 0, 1, 0]];
/// The client-side router's MAC.
pub const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

/// The full-NAT source ports of the scenario's one source address per family.
pub const FULLNAT_PORTS: (u16, u16) = (1024, 65535);

/// A benchmark scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Forwarding mode of the VIP.
    pub mode: Mode,
    /// IPv6 instead of IPv4.
    pub v6: bool,
    /// Backends behind the VIP.
    pub backends: usize,
    /// Frame size in bytes (64 to 1500).
    pub size: usize,
}

impl Scenario {
    /// The VIP.
    pub fn vip(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1))
        }
    }

    fn backend(&self, i: usize) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, (i >> 16) as u16, i as u16 + 16))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 18, 2 + (i / 200) as u8, (i % 200) as u8 + 10))
        }
    }

    /// The appliance model: two ports (clients on 0, backends on 1), every neighbour resolved.
    pub fn model(&self) -> Model {
        let backends: Vec<BackendSpec> = (0..self.backends)
            .map(|i| BackendSpec {
                addr: self.backend(i),
                port: if matches!(self.mode, Mode::Nat | Mode::FullNat) { 8080 } else { 0 },
                weight: 1,
                state: BackendState::Active,
            })
            .collect();
        let mut neighbours: Vec<(IpAddr, [u8; 6])> =
            (0..self.backends).map(|i| (self.backend(i), [2, 0, 0, 2, (i >> 8) as u8, i as u8])).collect();
        // Backends fit 198.18.2.0/23 (400 of them) and 2001:db8:2::/48.
        neighbours.push(("198.18.1.254".parse().unwrap(), GW_MAC));
        neighbours.push(("2001:db8:1::fe".parse().unwrap(), GW_MAC));
        let mut service = ServiceSpec::new(self.vip(), Protocol::Tcp, Some(80), self.mode, backends);
        // The size the figures have always been taken with, whatever the backend count would choose.
        service.maglev_size = Some(edgelb_dataplane::lb::maglev::DEFAULT_TABLE_SIZE);
        Model {
            services: vec![service],
            // One-armed: clients (via the router) and backends on the same port, so every buffer returns to the
            // port it came from.
            interfaces: vec![InterfaceSpec {
                port: 0,
                mac: PORT_MAC[0],
                addrs: vec![
                    ("198.18.1.1".parse().unwrap(), 24),
                    ("198.18.2.1".parse().unwrap(), 23),
                    ("2001:db8:1::1".parse().unwrap(), 64),
                    ("2001:db8:2::1".parse().unwrap(), 48),
                ],
                mtu: 9000,
            }],
            gateways: vec!["198.18.1.254".parse().unwrap(), "2001:db8:1::fe".parse().unwrap()],
            neighbours,
            fullnat_sources: vec!["198.18.2.1".parse().unwrap(), "2001:db8:2::1".parse().unwrap()],
            fullnat_ports: FULLNAT_PORTS,
            tunnel_sources: vec![("198.18.4.0".parse().unwrap(), 24), ("2001:db8:3::".parse().unwrap(), 120)],
            timeouts: Timeouts::default(),
            draining: false,
        }
    }

    /// The scenario's appliance (interfaces, neighbours, sources) without services.
    pub fn appliance(&self) -> Model {
        Model { services: Vec::new(), ..self.model() }
    }

    /// Service number `i` of a large service set: NAT, TCP port 80 on VIP 198.19.x.y (or 2001:db8:100::x), its
    /// `backends` backends on port 8080 drawn from the scenario's 400 backend addresses, each table sized from the
    /// backend count. Distinct for i < 65 000.
    pub fn service(&self, i: usize, backends: usize) -> ServiceSpec {
        let vip = if self.v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, (i >> 16) as u16, i as u16 + 1))
        } else {
            IpAddr::V4(Ipv4Addr::from(0xc613_0001u32 + i as u32))
        };
        let bs = (0..backends)
            .map(|j| BackendSpec {
                addr: self.backend((i * backends + j) % 400),
                port: 8080,
                weight: 1,
                state: BackendState::Active,
            })
            .collect();
        ServiceSpec::new(vip, Protocol::Tcp, Some(80), Mode::Nat, bs)
    }

    /// Client address number `i` (distinct for i < 2^24).
    pub fn client(&self, i: u32) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, (i >> 16) as u16, i as u16))
        } else {
            // 198.18.128.0/17: inside the lab range, clear of the appliance's subnets and the VIPs.
            let n = 0xc612_8000u32 + (i % 0x8000);
            IpAddr::V4(Ipv4Addr::from(n))
        }
    }

    /// Templates for `flows` flows owned by worker `core` of `ncores`: the same flows as SYNs (to open them) and as
    /// ACKs (established traffic).
    pub fn templates(&self, flows: usize, core: u16, ncores: u16) -> (Templates, Templates) {
        let headers = 14 + if self.v6 { 60 } else { 40 };
        let frame_len = self.size.max(headers);
        let mut syn = Templates::new(flows, frame_len);
        let mut ack = Templates::new(flows, frame_len);
        let payload = vec![0u8; frame_len - headers];
        let mut buf = vec![0u8; 2048];
        let mut made = 0usize;
        let mut i = 0u32;
        // 64 flows per client address, then the next address; IPv4 clients wrap every 0x8000 addresses, and each
        // wrap takes the next block of 64 source ports, so every flow is distinct up to 10 M and beyond.
        while made < flows {
            let c = self.client(i);
            let round = (i / 0x8000) as u16;
            i += 1;
            if owner_of_client(&edgelb_dataplane::snapshot::addr16(c), ncores) != core {
                continue;
            }
            for k in 0..64u16 {
                if made == flows {
                    break;
                }
                let port = 1024 + round * 64 + k;
                for (t, fl) in [(&mut syn, flags::SYN), (&mut ack, flags::ACK)] {
                    let seg = Segment {
                        src: c,
                        dst: self.vip(),
                        proto: proto::TCP,
                        sport: port,
                        dport: 80,
                        tcp_flags: fl,
                        payload: &payload,
                        ttl: 64,
                    };
                    let n = frame(&mut buf, PORT_MAC[0], GW_MAC, &seg).expect("template fits");
                    t.push(&buf[..n]);
                }
                made += 1;
            }
        }
        (syn, ack)
    }

    /// The backends' replies (ACKs) to the flows whose translated packets `sent` holds, as the worker transmitted
    /// them toward the backends: addresses and ports swapped, so each reply belongs to the tracked flow its packet
    /// opened. Packets that are not IP with TCP are skipped.
    pub fn replies(&self, sent: &Templates) -> Templates {
        let headers = 14 + if self.v6 { 60 } else { 40 };
        let frame_len = self.size.max(headers);
        let mut out = Templates::new(sent.len(), frame_len);
        let payload = vec![0u8; frame_len - headers];
        let mut buf = vec![0u8; 2048];
        for i in 0..sent.len() {
            let f = sent.get(i);
            let (src, dst, proto, l4) = match u16::from_be_bytes([f[12], f[13]]) {
                0x0800 => {
                    let a = |o: usize| IpAddr::V4(Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]));
                    (a(26), a(30), f[23], 14 + usize::from(f[14] & 0x0f) * 4)
                }
                0x86dd => {
                    let a = |o: usize| {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(&f[o..o + 16]);
                        IpAddr::V6(Ipv6Addr::from(b))
                    };
                    (a(22), a(38), f[20], 54)
                }
                _ => continue,
            };
            if proto != proto::TCP || l4 + 4 > f.len() {
                continue;
            }
            let seg = Segment {
                src: dst,
                dst: src,
                proto: proto::TCP,
                sport: u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]),
                dport: u16::from_be_bytes([f[l4], f[l4 + 1]]),
                tcp_flags: flags::ACK,
                payload: &payload,
                ttl: 64,
            };
            let n = frame(&mut buf, PORT_MAC[0], GW_MAC, &seg).expect("template fits");
            out.push(&buf[..n]);
        }
        out
    }
}

/// Pre-built packets, [`STRIDE`] bytes of headers each, all of one frame length.
#[derive(Debug, Clone)]
pub struct Templates {
    bytes: Vec<u8>,
    count: usize,
    frame_len: usize,
}

impl Templates {
    fn new(cap: usize, len: usize) -> Self {
        Self { bytes: Vec::with_capacity(cap * STRIDE), count: 0, frame_len: len }
    }
    fn push(&mut self, frame: &[u8]) {
        let n = frame.len().min(STRIDE);
        let at = self.bytes.len();
        self.bytes.resize(at + STRIDE, 0);
        self.bytes[at..at + n].copy_from_slice(&frame[..n]);
        self.count += 1;
    }
    /// Number of templates.
    pub fn len(&self) -> usize {
        self.count
    }
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Header bytes of template `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        &self.bytes[i * STRIDE..(i + 1) * STRIDE]
    }
    /// Frame length of every packet made from these templates.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }
    /// The templates in a random order (fixed seed), so flows arrive shuffled while the templates are read
    /// sequentially.
    pub fn shuffled(mut self) -> Self {
        let n = self.len();
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut tmp = [0u8; STRIDE];
        for i in (1..n).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let j = (s % (i as u64 + 1)) as usize;
            tmp.copy_from_slice(&self.bytes[i * STRIDE..(i + 1) * STRIDE]);
            self.bytes.copy_within(j * STRIDE..(j + 1) * STRIDE, i * STRIDE);
            self.bytes[j * STRIDE..(j + 1) * STRIDE].copy_from_slice(&tmp);
        }
        self
    }
}

/// A port that receives its templates in order, forever, and takes back what the worker transmits or drops.
/// [`ReplayPort::new`] shuffles the templates physically once, so flows arrive in random order while the port reads
/// its template memory sequentially, as a NIC would write fresh packets into buffers already in cache. That holds
/// while the templates fit the cache: at 1 M flows they are 96 MB, read from memory, and the floor costs about 8 ns a
/// packet more than at 10 k (perf/README.md, "What the memory system allows the established lookup"). Templates on
/// huge pages, read with a steady prefetch distance, take 8.5 ns off the established 1 M row and 5.3 off the 1 M floor
/// ("The replay port's template reads at 1 M flows"); measured and not kept, since it would move every 1 M row against
/// the earlier series.
#[derive(Debug)]
pub struct ReplayPort {
    templates: Templates,
    order: Vec<u32>,
    next: usize,
    pool: Vec<MemBuf>,
    stats: PortStats,
    /// From the second pass on, change every packet's source port with the pass number, so every packet opens a
    /// flow never seen before.
    pub new_flows: bool,
    pass: u16,
    /// Set with [`ReplayPort::capture`]: the headers of the first transmitted packets, up to its capacity.
    captured: Option<(Templates, usize)>,
}

impl ReplayPort {
    /// A port replaying `templates`, shuffled with a fixed seed.
    pub fn new(templates: Templates) -> Self {
        let templates = templates.shuffled();
        let n = templates.len();
        let order: Vec<u32> = (0..n as u32).collect();
        let pool = (0..256).map(|_| MemBuf::new()).collect();
        Self { templates, order, next: 0, pool, stats: PortStats::default(), new_flows: false, pass: 0, captured: None }
    }

    /// Keep the headers of the next `n` packets the worker transmits (what [`ReplayPort::captured`] returns).
    pub fn capture(&mut self, n: usize) {
        self.captured = Some((Templates::new(n, self.templates.frame_len), n));
    }

    /// The transmitted packets kept since [`ReplayPort::capture`].
    pub fn captured(&mut self) -> Option<Templates> {
        self.captured.take().map(|(t, _)| t)
    }

    /// A template set taking `new_percent` % of its templates from `syn` and the rest from `ack`. Replayed with
    /// [`ReplayPort::new_flows`] set, the SYNs open a flow never seen before on every pass; the ACKs keep replaying
    /// their established flows.
    pub fn mix(syn: &Templates, ack: &Templates, new_percent: u32) -> Templates {
        let mut t = Templates::new(syn.len(), syn.frame_len);
        for i in 0..syn.len() {
            // Spread the new-flow templates evenly: i * P / 100 steps up exactly P times in every 100.
            let is_new = (i as u64 * u64::from(new_percent) / 100) != ((i as u64 + 1) * u64::from(new_percent) / 100);
            t.push(if is_new { syn.get(i) } else { ack.get(i) });
        }
        t
    }

    /// Start at the second pass (the first replays templates unchanged).
    pub fn skip_pass(&mut self) {
        self.pass = self.pass.max(1);
    }
}

impl Port for ReplayPort {
    type Buf = MemBuf;

    #[inline]
    fn rx_burst(&mut self, out: &mut Burst<MemBuf>) -> usize {
        if self.templates.is_empty() {
            return 0;
        }
        let mut n = 0;
        while !out.is_full() {
            let Some(mut b) = self.pool.pop() else { break };
            let t = self.templates.get(self.order[self.next] as usize);
            b.fill(t);
            b.set_len(self.templates.frame_len);
            // TCP flags byte 13 of the header: only SYN templates become new flows.
            let syn_at = 14 + if b.data()[12] == 0x86 { 40 } else { 20 } + 13;
            if self.new_flows && self.pass > 0 && b.data().get(syn_at) == Some(&0x02) {
                // Source port (Ethernet 14 + IP header) takes the pass number: a never-seen flow. The TCP checksum
                // goes stale, which the pipeline does not verify (it updates it incrementally).
                let l4 = 14 + if b.data()[12] == 0x86 { 40 } else { 20 };
                let d = b.data_mut();
                let p = u16::from_be_bytes([d[l4], d[l4 + 1]]) ^ self.pass.wrapping_mul(0x9e37);
                d[l4..l4 + 2].copy_from_slice(&p.to_be_bytes());
            }
            self.next += 1;
            if self.next == self.order.len() {
                self.next = 0;
                self.pass = self.pass.wrapping_add(1);
            }
            out.push(b);
            n += 1;
        }
        self.stats.rx_packets += n as u64;
        n
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut Burst<MemBuf>) -> usize {
        let n = pkts.len();
        for b in pkts.drain(..) {
            self.stats.tx_bytes += b.data_len() as u64;
            if let Some((c, _)) = self.captured.as_mut().filter(|(c, n)| c.len() < *n) {
                c.push(b.data());
            }
            self.pool.push(b);
        }
        self.stats.tx_packets += n as u64;
        n
    }

    #[inline]
    fn free(&mut self, buf: MemBuf) {
        self.pool.push(buf);
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    fn name(&self) -> &str {
        "replay"
    }
}

/// Resident memory of this process in KiB (`VmRSS` of `/proc/self/status`; 0 where it cannot be read).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgelb_dataplane::wire::ipv4::Ipv4Packet;
    use std::collections::HashSet;

    /// Templates name distinct flows (past the client-address wrap), all owned by the worker they are for.
    #[test]
    fn templates_are_distinct_and_owned() {
        let sc = Scenario { mode: Mode::Nat, v6: false, backends: 4, size: 64 };
        // Worker 1 of 2 owns about half of the 0x8000 client addresses, 64 flows each: 1.1 M flows pass one wrap.
        let n = 1_100_000;
        for core in [1u16] {
            let (syn, ack) = sc.templates(n, core, 2);
            assert_eq!((syn.len(), ack.len()), (n, n));
            let mut seen = HashSet::new();
            for i in 0..n {
                let f = syn.get(i);
                let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
                let src = ip.src();
                assert_eq!(owner_of_client(&edgelb_dataplane::lb::flow::mapped(src), 2), core);
                let sport = u16::from_be_bytes([f[34], f[35]]);
                assert!(seen.insert((src, sport)), "flow {src:?}:{sport} repeated");
            }
        }
    }
}
