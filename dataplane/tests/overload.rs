//! The new-flow limit while a worker is saturated (`admission.rs`), through a real worker loop over memory ports:
//! a flood of new flows (SYNs) mixed with the packets of tracked flows, injected faster than the worker takes them, so
//! its polls come back full. Both families; a NAT service (which the fast path serves) and a full-NAT one (which it
//! does not); the fast path on and off. Every established packet must be forwarded, the SYNs beyond the limit dropped
//! and counted as `overload`, what was admitted within the token bucket, and nothing limited once the worker keeps up.

use edgelb_dataplane::packet::PacketBuf;
use edgelb_dataplane::pipeline::{DropReason, TableSizes};
use edgelb_dataplane::port::mem::{self, MemPeer};
use edgelb_dataplane::port::BURST;
use edgelb_dataplane::snapshot::{ConfigBuilder, ConfigHandle};
use edgelb_dataplane::worker::{single, Worker};
use edgelb_testkit::models;
use edgelb_testkit::packets::{self as pk, proto, Craft};
use std::net::IpAddr;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
/// Established flows before the flood.
const FLOWS: u16 = 64;
/// Bursts of the flood: each half established ACKs, half SYNs of new flows.
const ROUNDS: u16 = 64;
/// The limit under test: new flows a second (a bucket of 10 at 1000/s, then 1 a millisecond).
const LIMIT: u32 = 1000;

struct Lab {
    worker: Worker<mem::MemPort>,
    handle: ConfigHandle,
    peers: [MemPeer; 2],
    vip: IpAddr,
    client: IpAddr,
}

impl Lab {
    fn new(vip: &str, fast_path: bool) -> Self {
        let (cfg, _) = ConfigBuilder::new().build(&models::every_mode(251)).unwrap();
        let (p0, peer0) = mem::pair("p0", 8192);
        let (p1, peer1) = mem::pair("p1", 8192);
        let sizes = TableSizes { flows_v4: 8192, flows_v6: 8192, affinity: 256, fragments: 256 };
        let mut worker = single(vec![p0, p1], sizes);
        worker.pipeline.set_fast_path(fast_path);
        let vip: IpAddr = vip.parse().unwrap();
        let client: IpAddr = if vip.is_ipv4() { "198.18.0.10" } else { "2001:db8::10" }.parse().unwrap();
        Self { worker, handle: ConfigHandle::new(cfg), peers: [peer0, peer1], vip, client }
    }

    fn frame(&self, sport: u16, flags: u8) -> Vec<u8> {
        Craft::new(self.client, self.vip, proto::TCP, pk::tcp(sport, 80, flags, b"")).build()
    }

    fn inject(&self, frames: &[Vec<u8>]) {
        for f in frames {
            assert!(self.peers[0].inject_bytes(f), "the port's ring holds the whole flood");
        }
    }

    /// Poll until the port is drained and a few polls found nothing; the TCP flags of every transmitted frame,
    /// each checked as a valid frame.
    fn drain(&mut self) -> Vec<u8> {
        let mut empty = 0;
        while empty < 4 {
            if self.worker.poll(&self.handle) == 0 {
                empty += 1;
            }
        }
        let mut flags = Vec::new();
        for peer in &self.peers {
            while let Some(b) = peer.collect() {
                let seen = pk::check_frame(b.data()).unwrap_or_else(|e| panic!("transmitted frame: {e}"));
                assert_eq!(seen.proto, proto::TCP);
                let l4 = b.data().len() - pk::ip_of(b.data()).len() + if seen.src.is_ipv4() { 20 } else { 40 };
                flags.push(b.data()[l4 + 13]);
            }
        }
        flags
    }
}

/// What a flood did: (established ACKs forwarded, SYNs forwarded, SYNs dropped as overload, new flows admitted
/// while saturated at most).
fn flood(vip: &str, fast_path: bool, limit: u32) -> (usize, usize, u64, u64) {
    let mut lab = Lab::new(vip, fast_path);
    // Open the flows in bursts the worker keeps up with: no limit applies.
    lab.worker.pipeline.set_new_flow_limit(limit);
    for half in [0, FLOWS / 2] {
        let syns: Vec<_> = (half..half + FLOWS / 2).map(|i| lab.frame(10_000 + i, SYN)).collect();
        lab.inject(&syns);
        assert_eq!(lab.drain().len(), usize::from(FLOWS / 2), "{vip}: the opening SYNs are forwarded");
        let acks: Vec<_> = (half..half + FLOWS / 2).map(|i| lab.frame(10_000 + i, ACK)).collect();
        lab.inject(&acks);
        assert_eq!(lab.drain().len(), usize::from(FLOWS / 2));
    }
    let c = &lab.worker.pipeline.counters;
    assert_eq!((c.new_flows, c.dropped(DropReason::Overload), c.saturated_polls), (u64::from(FLOWS), 0, 0));
    // The flood: every burst half ACKs of the tracked flows, half SYNs of new ones, interleaved.
    let half = BURST as u16 / 2;
    let mut frames = Vec::new();
    for r in 0..ROUNDS {
        for j in 0..half {
            frames.push(lab.frame(10_000 + (r * half + j) % FLOWS, ACK));
            frames.push(lab.frame(30_000 + r * half + j, SYN));
        }
    }
    lab.inject(&frames);
    let t0 = lab.worker.now_ms();
    let flags = lab.drain();
    let ms = u64::from(lab.worker.now_ms() - t0);
    let acks = flags.iter().filter(|&&f| f == ACK).count();
    let syns = flags.iter().filter(|&&f| f == SYN).count();
    assert_eq!(acks + syns, flags.len(), "{vip}: only the flood's packets were transmitted");
    let c = lab.worker.pipeline.counters.clone();
    assert_eq!(c.new_flows, u64::from(FLOWS) + syns as u64, "{vip}: no established packet became a new flow");
    assert_eq!((c.rescheduled, c.midflow_pickups), (0, 0), "{vip}");
    let refused = c.dropped(DropReason::Overload);
    assert_eq!(syns as u64 + refused, u64::from(ROUNDS * half), "{vip}: every SYN forwarded or counted");
    assert_eq!(c.dropped_total(), refused, "{vip}: no other drop");
    if limit > 0 {
        assert!(c.saturated_polls > 0, "{vip}: the flood saturated the worker");
    }
    // Before the worker counts as saturated (4 full polls, judged after each) its SYNs pass: 4 × half a burst; then
    // the bucket (10 ms of the limit) and a token a millisecond, the clock read before and after.
    let bound = 4 * u64::from(half) + u64::from(limit) / 100 + (ms + 1) * u64::from(limit) / 1000;
    // Once the worker keeps up again, new flows pass without limit.
    let after: Vec<_> = (0..8).map(|i| lab.frame(50_000 + i, SYN)).collect();
    lab.inject(&after);
    assert_eq!(lab.drain(), vec![SYN; 8], "{vip}: new flows pass once the flood is over");
    assert_eq!(lab.worker.pipeline.counters.dropped(DropReason::Overload), refused);
    (acks, syns, refused, bound)
}

#[test]
fn a_flood_of_new_flows_is_limited_and_established_flows_keep_going() {
    for vip in ["198.19.0.1", "198.19.0.2", "2001:db8:100::1", "2001:db8:100::2"] {
        for fast_path in [true, false] {
            let (acks, syns, refused, bound) = flood(vip, fast_path, LIMIT);
            let what = format!("{vip}, fast path {fast_path}");
            assert_eq!(acks, usize::from(ROUNDS) * BURST / 2, "{what}: every established packet forwarded");
            assert!(refused > 0, "{what}: the limit refused new flows");
            assert!(syns as u64 <= bound, "{what}: {syns} SYNs admitted, at most {bound} allowed");
        }
    }
}

#[test]
fn without_a_limit_every_new_flow_is_recorded() {
    for vip in ["198.19.0.1", "2001:db8:100::1"] {
        let (acks, syns, refused, _) = flood(vip, true, 0);
        assert_eq!(
            (acks, syns, refused),
            (usize::from(ROUNDS) * BURST / 2, usize::from(ROUNDS) * BURST / 2, 0),
            "{vip}"
        );
    }
}
