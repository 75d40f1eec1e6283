//! Fuzz the whole pipeline: any bytes, on either port, through one long-lived pipeline (so state — flows, replies,
//! fragments — builds up across inputs). Invariants checked on every input:
//! - nothing panics;
//! - every packet gets exactly one verdict (rx equals tx + slow path + hand-off + drops);
//! - every transmitted frame passes `edgelb_testkit::models::check_transmitted`: it parses with an independent parser
//!   (etherparse) and its lengths agree, its checksums verify when the input's did, it fits the MTU, and it goes only
//!   to a neighbour or back to the sender.
//!
//! Mutated bytes rarely keep valid checksums, so this target mostly exercises the parsers; `craft` (built packets)
//! is the one that reaches the deep paths.
#![no_main]

use edgelb_dataplane::snapshot::{ConfigBuilder, DataplaneConfig};
use edgelb_dataplane::packet::{MemBuf, PacketBuf};
use edgelb_dataplane::pipeline::{Pipeline, TableSizes, Verdict};
use edgelb_testkit::models;
use edgelb_testkit::packets::{check_frame, ip_of};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

struct State {
    cfg: Arc<DataplaneConfig>,
    pipeline: Pipeline,
    now: u32,
}

fn state() -> &'static Mutex<State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(|| {
        let (cfg, _) = ConfigBuilder::new().build(&models::every_mode(251)).expect("fuzz model is valid");
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
    // As a worker does between bursts: reclaim expired entries.
    s.pipeline.housekeeping(64, now);
    let c = &s.pipeline.counters;
    assert_eq!(
        c.rx,
        c.tx + c.slowpath + c.handoff + c.held + c.dropped_total(),
        "a packet without exactly one verdict"
    );
    if let Verdict::Tx(port) = v {
        assert!(port <= 1, "transmit to a port that does not exist: {port}");
        // The sender, when the input parses at all (etherparse, not our views).
        let sender = check_frame(frame).ok().map(|s| s.src).or_else(|| sender_of(frame));
        if let Err(e) = models::check_transmitted(b.data(), frame, sender) {
            panic!("{e}");
        }
    }
});

/// The IP source address of a frame whose headers are there, even if its checksums are not right.
fn sender_of(frame: &[u8]) -> Option<IpAddr> {
    let ip = ip_of(frame);
    match ip.first()? >> 4 {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(ip.get(12..16)?).ok()?)),
        6 => Some(IpAddr::from(<[u8; 16]>::try_from(ip.get(8..24)?).ok()?)),
        _ => None,
    }
}
