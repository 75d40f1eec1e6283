//! `edgelb-gen`: a paced batch traffic generator for veth labs (`perf/kernel-compare`). It transmits prebuilt UDP
//! frames with 18 bytes of payload (60 bytes over IPv4, 80 over IPv6), `--flows` source ports round robin, in bursts through an AF_XDP socket on `--iface` (the
//! dataplane's own AF_XDP port, copy mode on veth), at `--rate` packets per second for `--seconds`, pinned to
//! `--core`. Prints one JSON line: packets handed to the kernel, seconds, the rate achieved and the port's TX
//! errors. What the kernel then drops is for the caller to read from the interfaces' counters.
#![deny(unsafe_code)]

use clap::Parser;
use edgelb_dataplane::port::afxdp::AfXdpPort;
use edgelb_dataplane::port::{buf_pool, Burst, Port};
use edgelb_dataplane::wire::build::{frame, Segment};
use edgelb_dataplane::wire::proto;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "edgelb-gen", about = "Paced AF_XDP batch UDP generator for veth labs")]
struct Args {
    /// Interface to transmit on (in the caller's network namespace).
    #[arg(long)]
    iface: String,
    /// Destination MAC (the next hop's), aa:bb:cc:dd:ee:ff.
    #[arg(long)]
    dst_mac: String,
    /// Source MAC.
    #[arg(long)]
    src_mac: String,
    /// Source address, IPv4 or IPv6.
    #[arg(long)]
    src: IpAddr,
    /// Destination address (the VIP), of the source's family.
    #[arg(long)]
    dst: IpAddr,
    /// Destination UDP port.
    #[arg(long, default_value_t = 80)]
    dport: u16,
    /// Flows (distinct source ports from 1024), 1 to 60000.
    #[arg(long, default_value_t = 1000)]
    flows: u16,
    /// Packets per second offered (1000 to 50000000).
    #[arg(long)]
    rate: u64,
    /// Seconds to send (0.1 to 600).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Core to pin to.
    #[arg(long)]
    core: Option<usize>,
}

fn mac(s: &str) -> Result<[u8; 6], String> {
    let v: Vec<u8> =
        s.split(':').map(|x| u8::from_str_radix(x, 16)).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    v.try_into().map_err(|_| format!("{s}: not a MAC"))
}

edgelb_cpu::check_before_main!();

fn main() {
    let a = Args::parse();
    if let Err(e) = run(&a) {
        eprintln!("edgelb-gen: {e}");
        std::process::exit(1);
    }
}

fn run(a: &Args) -> Result<(), String> {
    if !(1..=60000).contains(&a.flows) || !(1000..=50_000_000).contains(&a.rate) || !(0.1..=600.0).contains(&a.seconds)
    {
        return Err("--flows 1..60000, --rate 1000..50000000, --seconds 0.1..600".into());
    }
    if a.src.is_ipv4() != a.dst.is_ipv4() {
        return Err(format!("--src {} and --dst {} are of different families", a.src, a.dst));
    }
    let (dst_mac, src_mac) = (mac(&a.dst_mac)?, mac(&a.src_mac)?);
    let frames: Vec<Vec<u8>> = (0..a.flows)
        .map(|i| {
            let mut buf = vec![0u8; 128];
            let seg = Segment {
                src: a.src,
                dst: a.dst,
                proto: proto::UDP,
                sport: 1024 + i,
                dport: a.dport,
                tcp_flags: 0,
                payload: &[0x5a; 18],
                ttl: 64,
            };
            let n = frame(&mut buf, dst_mac, src_mac, &seg).ok_or("frame")?;
            buf.truncate(n);
            Ok(buf)
        })
        .collect::<Result<_, String>>()?;
    if let Some(c) = a.core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            return Err(format!("cannot pin to core {c}"));
        }
    }
    let pool = buf_pool(4096);
    let mut port = AfXdpPort::open_with_pool(&a.iface, pool.clone()).map_err(|e| e.to_string())?;
    let mut burst: Burst<edgelb_dataplane::packet::MemBuf> = Burst::new();
    let (mut sent, mut next) = (0u64, 0usize);
    let t0 = Instant::now();
    let end = Duration::from_secs_f64(a.seconds);
    loop {
        let el = t0.elapsed();
        if el >= end {
            break;
        }
        let due = (el.as_secs_f64() * a.rate as f64) as u64;
        while burst.len() < burst.capacity() && sent + (burst.len() as u64) < due {
            let mut b = pool.pop().unwrap_or_default();
            b.fill(&frames[next]);
            next = (next + 1) % frames.len();
            if burst.try_push(b).is_err() {
                break;
            }
        }
        if burst.is_empty() {
            // Ahead of schedule: sleep rather than spin, so this core's CPU time is the sending alone.
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        sent += port.tx_burst(&mut burst) as u64;
    }
    for b in burst.drain(..) {
        port.free(b);
    }
    // Let the kernel drain the TX ring before the socket closes.
    std::thread::sleep(Duration::from_millis(200));
    let secs = t0.elapsed().as_secs_f64().min(a.seconds);
    let st = port.stats();
    println!(
        "{{\"sent\": {sent}, \"seconds\": {secs:.3}, \"rate\": {:.0}, \"tx_errors\": {}}}",
        sent as f64 / secs,
        st.tx_dropped
    );
    Ok(())
}
