//! The failover drill (root, network namespaces, BIRD): a router running BIRD with ECMP (`merge paths`) toward two
//! appliances A and B, each announcing a dual-stack VIP over BGP with BFD (100 ms × 3); a client behind the router;
//! three backends on the appliances' segment, each holding the VIPs on its loopback (DSR-L2: replies go from the
//! backends to the router). 50 long-lived TCP connections (25 per family) each send a line every 100 ms and check
//! the answer comes from the backend they started on; a new connection opens every 100 ms. Steps: (a) both
//! appliances announce and traffic spreads over both; (b) one backend drains on both appliances: its connections go
//! on, new ones avoid it; (c) A is SIGKILLed: BFD tells BIRD, the router moves A's flows to B, and B picks them up
//! mid-flow, each to the backend Maglev gave it on A; (d) A returns: the flows that move back keep their backend.
//! Per step the test prints: connections broken (those on the drained backend apart), the longest stall a client
//! saw, new-connection failures, and after the kill the time until the moved flows flowed again. Without flow-state
//! sync between the appliances a connection on the drained backend that changes appliance has no state there and
//! Maglev (which no longer lists the drained backend) sends it elsewhere: those are counted and printed, not
//! asserted.

use edgelb_testkit::drill::{self, Programs};
use edgelb_testkit::netns::{require_root, Lab};
use std::time::Duration;

const EDGELBD: &str = env!("CARGO_BIN_EXE_edgelbd");
const EDGELBCTL: &str = env!("CARGO_BIN_EXE_edgelbctl");

/// One drill at a time: each runs two busy-polling appliances and a hundred client and server threads, and two at
/// once on a 2-core machine starve BFD and the BGP sessions.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn drill(tag: &str, replication: bool) -> drill::Report {
    require_root();
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut lab = Lab::new(tag);
    let p = Programs { edgelbd: (EDGELBD, &[]), edgelbctl: (EDGELBCTL, &[]) };
    let r = drill::run(&mut lab, &p, replication).unwrap_or_else(|e| panic!("the drill: {e}"));
    println!(
        "flow replication {}\nthe router's routes:\n{}\n{}",
        if replication { "on" } else { "off" },
        r.routes,
        r.table()
    );
    for b in &r.broken {
        println!("broken: {b}");
    }
    println!("{}", r.log);
    let (rx_a, rx_b) = r.rx;
    assert!(rx_a > 100 && rx_b > 100, "ECMP spreads the flows over both appliances: A {rx_a}, B {rx_b}");
    assert_eq!(r.new_to_drained, 0, "new connections avoid the drained backend");
    for s in &r.steps {
        assert_eq!(s.broken.0, 0, "{}: connections on backends that did not drain broke", s.name);
    }
    assert!(r.kill_to_traffic < Duration::from_secs(2), "the flows moved to B within 2 s: {:?}", r.kill_to_traffic);
    r
}

/// Without flow replication: connections on backends that did not drain survive the kill and the return (Maglev
/// alone); those on the drained backend that change appliance are counted (printed, not asserted).
#[test]
fn losing_an_appliance_under_load_in_dsr_mode() {
    drill("fail", false);
}

/// With flow replication between A and B: not one connection breaks, those on the drained backend included.
#[test]
fn losing_an_appliance_with_flow_replication_breaks_nothing() {
    let r = drill("frep", true);
    for s in &r.steps {
        assert_eq!(s.broken.1, 0, "{}: connections on the drained backend broke despite replication", s.name);
    }
}
