//! The failover drill of `tests/failover.rs` and `edgelb lab --ha`, on network namespaces: two appliances A and B in
//! front of three backends, a client behind a router, and one of two ways to own the VIPs ([`Mode`]):
//! - **DSR**: the router runs BIRD (Debian `bird2`) with ECMP (`merge paths`) toward A and B, each announcing a
//!   dual-stack VIP over BGP with BFD (200 ms × 3); the backends share the appliances' segment and hold the VIPs on
//!   their loopback (DSR-L2: replies go from the backends to the router).
//! - **NAT with VRRP on both sides**: A (priority 150) and B (100) run four VRRPv3 virtual routers at 100 ms: the
//!   VIPs on the router's segment and, on a second segment, the gateway addresses the backends route through, so
//!   requests and NAT replies both pass the Master. The router reaches the VIPs on-link (ARP / NDP answered by the
//!   Master from the virtual router MAC).
//!
//! Established flows time out after 5 s here, so a peer's copy of a flow that never passes it lives only by flow
//! replication's periodic re-send (every third of that).
//!
//! 50 long-lived TCP connections (25 per family) each send a line every 100 ms and check the answer comes from the
//! backend they started on; a new connection opens every 100 ms. Steps: (a) both appliances up; (b) one backend (be1)
//! drains on both; (c) A is SIGKILLed; (d) A returns (its drain kept in its state file). [`Report`] has each step's
//! figures: connections broken (apart from those on the drained backend, counted on their own), the longest stall a
//! client saw, new-connection failures; and the times B took to take A's traffic and A to take its share back.

use crate::daemon::Edgelbd;
use crate::netns::{in_netns, Lab, Reaped};
use crate::peers::Bird;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const VIP4: &str = "198.19.0.1";
const VIP6: &str = "2001:db8:100::1";

/// How to run edgelbd and edgelbctl: a program and the arguments that come first (`edgelb daemon`, `edgelb ctl`).
#[derive(Debug, Clone, Copy)]
pub struct Programs<'a> {
    /// edgelbd.
    pub edgelbd: (&'a str, &'a [&'a str]),
    /// edgelbctl.
    pub edgelbctl: (&'a str, &'a [&'a str]),
}

/// How the appliances own the VIPs, and which way the backends' replies go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// BGP (ECMP, BFD) toward both appliances; DSR-L2 backends answer the router directly.
    Dsr,
    /// VRRP on the router's side (VIPs) and the backends' side (their gateway); NAT through the Master.
    NatVrrp,
}

impl Mode {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dsr => "DSR-L2, BGP ECMP + BFD",
            Self::NatVrrp => "NAT, VRRP on both sides",
        }
    }
}

/// What the drill measured.
#[derive(Debug)]
pub struct Report {
    /// The mode it ran in.
    pub mode: Mode,
    /// How the router reached the VIPs with both appliances up (its ECMP routes; or the virtual routers' states).
    pub routes: String,
    /// Long-lived connections per backend.
    pub spread: std::collections::BTreeMap<String, usize>,
    /// Packets A and B received in step (a).
    pub rx: (u64, u64),
    /// New connections that reached the drained backend after its drain (from 300 ms on).
    pub new_to_drained: usize,
    /// The four steps.
    pub steps: [Step; 4],
    /// From the kill until B had A's share: BIRD dropped A's routes (DSR), B was Master of all four (NAT).
    pub withdrawn_after: Duration,
    /// From A's restart until it had its share again: its routes back in ECMP (DSR), Master again (NAT).
    pub back_after: Duration,
    /// The longest stall after the kill: how long until the flows A carried flowed through B.
    pub kill_to_traffic: Duration,
    /// Each broken connection: family, backend, when, why.
    pub broken: Vec<String>,
    /// Long-lived connections on a backend that stayed (not be1) which Maglev's table without be1 sends elsewhere:
    /// each breaks if it changes appliance without its state (B answered `edgelbctl flow query` for each after the
    /// drain; its `fresh` pick is what an appliance that never saw the flow chooses). Maglev keeps most of a
    /// remaining backend's slots when one leaves, not all.
    pub would_move: usize,
    /// The appliances' log lines about replication and BGP sessions.
    pub log: String,
    /// B's replication lines of `/metrics` at the end (`edgelb_replication_*`, `edgelb_flows_replicas_*`).
    pub replication_metrics: String,
}

impl Report {
    /// The figures as a table.
    pub fn table(&self) -> String {
        let mut t = String::from(
            "step                 broken  broken on be1 (drained)  broken, moved by Maglev  longest stall  new connections failed\n",
        );
        for s in &self.steps {
            t += &format!(
                "{:<20} {:>6}  {:>23}  {:>23}  {:>10.0} ms  {:>3} of {}\n",
                s.name,
                s.broken.0,
                s.broken.1,
                s.moved,
                s.stall.as_secs_f64() * 1000.0,
                s.new_failed.0,
                s.new_failed.1
            );
        }
        let (gone, back) = match self.mode {
            Mode::Dsr => ("BIRD dropped its routes", "A back in ECMP"),
            Mode::NatVrrp => ("B Master of the VIPs and gateways", "A Master again"),
        };
        t += &format!(
            "A killed: {gone} after {} ms; traffic through B after at most {} ms; {back} after {} ms\n",
            self.withdrawn_after.as_millis(),
            self.kill_to_traffic.as_millis(),
            self.back_after.as_millis()
        );
        t += &format!(
            "(a) long-lived connections per backend: {:?}; packets received by A {}, by B {}\n",
            self.spread, self.rx.0, self.rx.1
        );
        t += &format!(
            "(b) after the drain Maglev sends {} of the connections on be2 and be3 elsewhere ('moved by Maglev' if they change appliance without their state)\n",
            self.would_move
        );
        t
    }
}

/// Long-lived connections per family.
const LONG: usize = 25;

/// The `[replication]` table toward `peer` from the uplink address `local`, if any.
fn replication(local: &str, peer: Option<&str>) -> String {
    peer.map_or_else(String::new, |peer| {
        format!(
            "\n[replication]\nlisten = \"{local}:7946\"\npeers = [\"{peer}:7946\"]\nsecret = \"drill-secret-0123456789\"\n"
        )
    })
}

/// The two services (one VIP per family, TCP port 80) in `mode`, each with three backends on `net4` and `net6`
/// (prefixes the backends' numbers 11 to 13 complete); and established flows that time out after 5 s, so that a peer
/// appliance's copy of a flow that never passes it lives only by the periodic re-send of flow replication.
fn services(mode: &str, net4: &str, net6: &str) -> String {
    let backends = |net: &str| -> String {
        (1..=3).map(|i| format!("\n[[service.backend]]\naddress = \"{net}1{i}\"\nport = 80\n")).collect()
    };
    let service = |vip: &str, net: &str| {
        format!("\n[[service]]\nvip = \"{vip}\"\nprotocol = \"tcp\"\nport = 80\nmode = \"{mode}\"\n{}", backends(net))
    };
    format!("\n[timeouts]\ntcp_established = 5\n{}{}", service(VIP4, net4), service(VIP6, net6))
}

/// An appliance's config in NAT mode with VRRP: its front (the router's segment) and back (the backends') addresses,
/// its VRRP priority, its uplink (flow replication goes over it).
fn config_nat(front: (&str, &str), back: (&str, &str), priority: u8, up: &str, api: u16, peer: Option<&str>) -> String {
    let router = |name: &str, port: &str, vrid: u8, vip: &str| {
        format!(
            "\n[[vrrp]]\nname = \"{name}\"\nport = \"{port}\"\nvrid = {vrid}\npriority = {priority}\n\
             advert_interval_ms = 100\nvirtual_mac = true\nvips = [\"{vip}\"]\n"
        )
    };
    format!(
        r#"gateways = ["198.18.0.1", "2001:db8::1"]

[[port]]
name = "lb0"
driver = "afpacket"
addresses = ["{f4}/24", "{f6}/64"]
frames = 1024

[[port]]
name = "lb1"
driver = "afpacket"
addresses = ["{b4}/24", "{b6}/64"]
frames = 1024

[api]
listen = "127.0.0.1:{api}"
{services}{r4}{r6}{g4}{g6}{replication}"#,
        f4 = front.0,
        f6 = front.1,
        b4 = back.0,
        b6 = back.1,
        services = services("nat", "198.18.2.", "2001:db8:2::"),
        r4 = router("front4", "lb0", 51, VIP4),
        r6 = router("front6", "lb0", 52, VIP6),
        g4 = router("gw4", "lb1", 61, GW4),
        g6 = router("gw6", "lb1", 62, GW6),
        replication = replication(up, peer),
    )
}

/// The backends' gateway addresses in NAT mode, owned by the VRRP Master.
const GW4: &str = "198.18.2.254";
const GW6: &str = "2001:db8:2::fe";

/// An appliance's config in DSR mode: its segment addresses (the routes' next hops), its uplink to the router.
fn config_dsr(name: &str, seg: (&str, &str), up: (&str, &str), api: u16, peer: Option<&str>) -> String {
    format!(
        r#"[[port]]
name = "lb0"
driver = "afpacket"
addresses = ["{s4}/24", "{s6}/64"]
frames = 1024

[api]
listen = "127.0.0.1:{api}"

[bgp]
local_as = 65001
router_id = "{local}"

[[bgp.peer]]
name = "rt-{name}"
address = "{peer}"
remote_as = 65000
hold_time = 9
connect_retry = 1
next_hop_v4 = "{s4}"
next_hop_v6 = "{s6}"
bfd = {{ min_tx_ms = 200, min_rx_ms = 200, multiplier = 3 }}
{services}{replication}"#,
        s4 = seg.0,
        s6 = seg.1,
        local = up.0,
        peer = up.1,
        services = services("dsr_l2", "198.18.0.", "2001:db8::"),
        replication = replication(up.0, peer),
    )
}

/// A backend: one dual-stack listener on :80 answering each line `n` with `NAME n`.
fn backend(ns: &str, name: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let l = in_netns(ns, || TcpListener::bind("[::]:80").unwrap());
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((s, _)) => {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                        let mut w = s.try_clone().unwrap();
                        let mut r = BufReader::new(s);
                        let mut line = String::new();
                        while !stop.load(Ordering::Relaxed) {
                            line.clear();
                            match r.read_line(&mut line) {
                                Ok(0) => break,
                                Ok(_) => {
                                    if w.write_all(format!("{name} {}", line).as_bytes()).is_err() {
                                        break;
                                    }
                                }
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                                Err(_) => break,
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// What one long-lived connection saw.
#[derive(Debug, Default, Clone)]
struct Conn {
    family: &'static str,
    /// The backend of its first answer.
    backend: String,
    /// Times of its answers.
    answers: Vec<Instant>,
    /// When it broke, and why (an error, a timeout, another backend answering).
    broken: Option<(Instant, String)>,
    /// Its client port.
    port: u16,
    /// The backend Maglev picks for it without state, once be1 drained (asked of B).
    fresh: String,
}

fn vip_addr(fam6: bool) -> SocketAddr {
    if fam6 { format!("[{VIP6}]:80") } else { format!("{VIP4}:80") }.parse().unwrap()
}

/// One exchange: send `n`, read the answer; the answering backend.
fn ask(s: &mut BufReader<TcpStream>, n: u64) -> Result<String, String> {
    s.get_mut().write_all(format!("{n}\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    match s.read_line(&mut line) {
        Ok(0) => Err("closed".into()),
        Ok(_) => {
            let (who, seq) = line.trim().split_once(' ').ok_or("garbled")?;
            if seq != n.to_string() {
                return Err(format!("answer {seq} for {n}"));
            }
            Ok(who.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A long-lived connection from the client: a line every 100 ms until `stop` (at most three minutes).
fn long_lived(cl: &str, fam6: bool, stop: Arc<AtomicBool>) -> (Arc<Mutex<Conn>>, std::thread::JoinHandle<()>) {
    let family = if fam6 { "IPv6" } else { "IPv4" };
    let conn = Arc::new(Mutex::new(Conn { family, ..Conn::default() }));
    let c = conn.clone();
    let cl = cl.to_string();
    let t = std::thread::spawn(move || {
        let s = in_netns(&cl, move || TcpStream::connect_timeout(&vip_addr(fam6), Duration::from_secs(3)));
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                c.lock().unwrap().broken = Some((Instant::now(), format!("connect: {e}")));
                return;
            }
        };
        // A stall longer than this is a broken connection.
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.lock().unwrap().port = s.local_addr().map_or(0, |a| a.port());
        let mut s = BufReader::new(s);
        let end = Instant::now() + Duration::from_secs(180);
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            n += 1;
            let r = ask(&mut s, n);
            let mut g = c.lock().unwrap();
            match r {
                Ok(who) if g.backend.is_empty() || g.backend == who => {
                    g.backend = who;
                    g.answers.push(Instant::now());
                }
                Ok(who) => {
                    g.broken = Some((Instant::now(), format!("answered by {who}, not {}", g.backend)));
                    return;
                }
                Err(e) => {
                    g.broken = Some((Instant::now(), e));
                    return;
                }
            }
            drop(g);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    (conn, t)
}

/// New connections, one every 100 ms alternating families: (when, family, the backend or the error).
type NewConns = Arc<Mutex<Vec<(Instant, &'static str, Result<String, String>)>>>;

fn new_connections(cl: &str, stop: Arc<AtomicBool>) -> (NewConns, std::thread::JoinHandle<()>) {
    let out: NewConns = Arc::default();
    let o = out.clone();
    let cl = cl.to_string();
    let t = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(180);
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            let fam6 = i % 2 == 1;
            i += 1;
            let at = Instant::now();
            let r = in_netns(&cl, move || -> Result<String, String> {
                let s =
                    TcpStream::connect_timeout(&vip_addr(fam6), Duration::from_secs(1)).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                ask(&mut BufReader::new(s), 1)
            });
            o.lock().unwrap().push((at, if fam6 { "IPv6" } else { "IPv4" }, r));
            std::thread::sleep(Duration::from_millis(100).saturating_sub(at.elapsed()));
        }
    });
    (out, t)
}

/// One step's figures.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: &'static str,
    /// Long-lived connections broken in the step: on other backends (Maglev keeping them there), on the drained one.
    pub broken: (usize, usize),
    /// Long-lived connections broken in the step on other backends that Maglev without be1 sends elsewhere.
    pub moved: usize,
    /// The longest gap between two answers on one connection (or from the step's start to its first answer).
    pub stall: Duration,
    /// New connections that failed, of those started.
    pub new_failed: (usize, usize),
}

fn step(
    name: &'static str,
    conns: &[Arc<Mutex<Conn>>],
    news: &NewConns,
    from: Instant,
    to: Instant,
    drained: &str,
) -> Step {
    let mut broken = (0, 0);
    let mut moved = 0;
    let mut stall = Duration::ZERO;
    for c in conns {
        let c = c.lock().unwrap();
        if let Some((at, _)) = &c.broken {
            if *at >= from && *at < to {
                if c.backend == drained {
                    broken.1 += 1
                } else if c.fresh != c.backend {
                    moved += 1
                } else {
                    broken.0 += 1
                }
            }
            continue;
        }
        let mut last = from;
        for a in c.answers.iter().filter(|a| **a >= from && **a < to) {
            stall = stall.max(a.duration_since(last));
            last = *a;
        }
    }
    let news = news.lock().unwrap();
    let in_step: Vec<_> = news.iter().filter(|(at, _, _)| *at >= from && *at < to).collect();
    let failed = in_step.iter().filter(|(_, _, r)| r.is_err()).count();
    Step { name, broken, moved, stall, new_failed: (failed, in_step.len()) }
}

impl Programs<'_> {
    fn ctl(&self, ns: &str, api: u16, args: &[&str]) -> Result<String, String> {
        let o = Command::new("ip")
            .args(["netns", "exec", ns, self.edgelbctl.0])
            .args(self.edgelbctl.1)
            .args(["--addr", &format!("http://127.0.0.1:{api}")])
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", self.edgelbctl.0))?;
        if !o.status.success() {
            return Err(format!("edgelbctl {args:?}: {}", String::from_utf8_lossy(&o.stderr)));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    fn rx(&self, ns: &str, api: u16) -> Result<u64, String> {
        let v: serde_json::Value =
            serde_json::from_str(&self.ctl(ns, api, &["-o", "json", "stats"])?).map_err(|e| e.to_string())?;
        Ok(v["rx"].as_u64().unwrap_or(0))
    }

    /// How many of an appliance's virtual routers are Master (`None` while it does not answer).
    fn masters(&self, ns: &str, api: u16) -> Option<usize> {
        let v: serde_json::Value =
            self.ctl(ns, api, &["-o", "json", "vrrp", "list"]).ok().and_then(|t| serde_json::from_str(&t).ok())?;
        Some(v["routers"].as_array()?.iter().filter(|r| r["state"] == "Master").count())
    }
}

/// Wait (bounded) until `ok`; `what` and `detail` (called once, at the timeout) name it in the error.
fn wait_until(what: &str, secs: u64, ok: impl Fn() -> bool, detail: impl Fn() -> String) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        if Instant::now() > deadline {
            return Err(format!("never {what} within {secs} s:\n{}", detail()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Run the drill in `lab` in `mode` (root; BIRD installed for DSR); everything it starts stops when it returns.
///
/// # Errors
/// A step that could not be set up or did not happen in time (the routes or the virtual routers never converged, a
/// connection never answered, edgelbctl refused).
pub fn run(lab: &mut Lab, p: &Programs<'_>, mode: Mode, replication: bool) -> Result<Report, String> {
    let dir = std::env::temp_dir().join(format!("edgelb-{}-drill", lab.prefix()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    lab.own_file(dir.clone());
    drill(lab, p, mode, replication, &dir).map_err(|e| {
        let mut e = e;
        for n in ["a", "b"] {
            let log = std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            e += &format!("\n{}'s log (last lines):\n", n.to_uppercase());
            for l in tail.into_iter().rev() {
                e += l;
                e.push('\n');
            }
        }
        e
    })
}

fn drill(
    lab: &mut Lab,
    p: &Programs<'_>,
    mode: Mode,
    replication: bool,
    dir: &std::path::Path,
) -> Result<Report, String> {
    let (cl, rt, a, b) = (lab.ns("cl"), lab.ns("rt"), lab.ns("a"), lab.ns("b"));
    let bes: Vec<String> = (1..=3).map(|i| lab.ns(&format!("be{i}"))).collect();
    // The router: a leg to the client, a bridge for the appliances' segment (br0), an uplink to each appliance. In
    // NAT mode a second bridge (br1, no address of the router's) is the backends' segment.
    lab.veth(&cl, "cl0", &rt, "rc0");
    lab.ip(&cl, "addr add 198.18.10.10/24 dev cl0");
    lab.ip(&cl, "addr add 2001:db8:10::10/64 dev cl0 nodad");
    lab.ip(&cl, "route add default via 198.18.10.1");
    lab.ip(&cl, "-6 route add default via 2001:db8:10::1");
    lab.ip(&rt, "addr add 198.18.10.1/24 dev rc0");
    lab.ip(&rt, "addr add 2001:db8:10::1/64 dev rc0 nodad");
    lab.ip(&rt, "link add br0 type bridge mcast_snooping 0");
    lab.ip(&rt, "link set br0 up");
    lab.ip(&rt, "addr add 198.18.0.1/24 dev br0");
    lab.ip(&rt, "addr add 2001:db8::1/64 dev br0 nodad");
    for (ns, leg) in [(&a, "pa"), (&b, "pb")] {
        lab.veth(ns, "lb0", &rt, leg);
        lab.ip(&rt, &format!("link set {leg} master br0"));
    }
    let nat = mode == Mode::NatVrrp;
    if nat {
        lab.ip(&rt, "link add br1 type bridge mcast_snooping 0");
        lab.ip(&rt, "link set br1 up");
        for (ns, leg) in [(&a, "qa"), (&b, "qb")] {
            lab.veth(ns, "lb1", &rt, leg);
            lab.ip(&rt, &format!("link set {leg} master br1"));
        }
        // The VIPs are on the appliances' segment: resolved there, answered by the Master.
        lab.ip(&rt, &format!("route add {VIP4}/32 dev br0"));
        lab.ip(&rt, &format!("-6 route add {VIP6}/128 dev br0"));
    }
    for (i, be) in bes.iter().enumerate() {
        let leg = format!("pbe{}", i + 1);
        lab.veth(be, "be0", &rt, &leg);
        lab.ip(&rt, &format!("link set {leg} master {}", if nat { "br1" } else { "br0" }));
        if nat {
            lab.ip(be, &format!("addr add 198.18.2.1{}/24 dev be0", i + 1));
            lab.ip(be, &format!("addr add 2001:db8:2::1{}/64 dev be0 nodad", i + 1));
            lab.ip(be, &format!("route add default via {GW4}"));
            lab.ip(be, &format!("-6 route add default via {GW6}"));
        } else {
            lab.ip(be, &format!("addr add 198.18.0.1{}/24 dev be0", i + 1));
            lab.ip(be, &format!("addr add 2001:db8::1{}/64 dev be0 nodad", i + 1));
            lab.ip(be, &format!("addr add {VIP4}/32 dev lo"));
            lab.ip(be, &format!("addr add {VIP6}/128 dev lo"));
            lab.ip(be, "route add default via 198.18.0.1");
            lab.ip(be, "-6 route add default via 2001:db8::1");
        }
    }
    lab.veth(&a, "up0", &rt, "upa");
    lab.veth(&b, "up0", &rt, "upb");
    lab.ip(&a, "addr add 198.18.255.1/30 dev up0");
    lab.ip(&rt, "addr add 198.18.255.2/30 dev upa");
    lab.ip(&b, "addr add 198.18.255.5/30 dev up0");
    lab.ip(&rt, "addr add 198.18.255.6/30 dev upb");
    // The appliances reach each other through the router (flow replication).
    lab.ip(&a, "route add 198.18.255.4/30 via 198.18.255.2");
    lab.ip(&b, "route add 198.18.255.0/30 via 198.18.255.6");
    for (k, v) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv4.fib_multipath_hash_policy", "1"),
        ("net.ipv6.fib_multipath_hash_policy", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
    ] {
        lab.sysctl(&rt, k, v);
    }
    let bird = (!nat).then(|| {
        Bird::start(
            &rt,
            &dir.join("bird"),
            "router id 198.18.255.2;\nprotocol device { }\n\
             protocol kernel k4 { ipv4 { export all; }; merge paths on; }\n\
             protocol kernel k6 { ipv6 { export all; }; merge paths on; }\n\
             protocol bfd {\n  interface \"upa\" { min rx interval 200 ms; min tx interval 200 ms; multiplier 3; };\n  \
             interface \"upb\" { min rx interval 200 ms; min tx interval 200 ms; multiplier 3; };\n}\n\
             protocol bgp a {\n  local 198.18.255.2 as 65000;\n  neighbor 198.18.255.1 as 65001;\n  passive on;\n  \
             hold time 9;\n  bfd on;\n  ipv4 { import all; export none; };\n  ipv6 { import all; export none; };\n}\n\
             protocol bgp b {\n  local 198.18.255.6 as 65000;\n  neighbor 198.18.255.5 as 65001;\n  passive on;\n  \
             hold time 9;\n  bfd on;\n  ipv4 { import all; export none; };\n  ipv6 { import all; export none; };\n}\n",
        )
    });
    let stop = Arc::new(AtomicBool::new(false));
    let _servers: Vec<_> =
        bes.iter().zip(["be1", "be2", "be3"]).map(|(ns, name)| backend(ns, name, stop.clone())).collect();
    let (cfg_a, cfg_b) = (dir.join("a.toml"), dir.join("b.toml"));
    let (api_a, api_b) = (50093, 50094);
    let (text_a, text_b) = match mode {
        Mode::Dsr => (
            config_dsr(
                "a",
                ("198.18.0.2", "2001:db8::2"),
                ("198.18.255.1", "198.18.255.2"),
                api_a,
                replication.then_some("198.18.255.5"),
            ),
            config_dsr(
                "b",
                ("198.18.0.3", "2001:db8::3"),
                ("198.18.255.5", "198.18.255.6"),
                api_b,
                replication.then_some("198.18.255.1"),
            ),
        ),
        Mode::NatVrrp => (
            config_nat(
                ("198.18.0.2", "2001:db8::2"),
                ("198.18.2.2", "2001:db8:2::2"),
                150,
                "198.18.255.1",
                api_a,
                replication.then_some("198.18.255.5"),
            ),
            config_nat(
                ("198.18.0.3", "2001:db8::3"),
                ("198.18.2.3", "2001:db8:2::3"),
                100,
                "198.18.255.5",
                api_b,
                replication.then_some("198.18.255.1"),
            ),
        ),
    };
    std::fs::write(&cfg_a, text_a).map_err(|e| e.to_string())?;
    std::fs::write(&cfg_b, text_b).map_err(|e| e.to_string())?;
    let state_a = dir.join("a.state");
    let state_a = state_a.to_str().unwrap();
    let mut args_a = p.edgelbd.1.to_vec();
    args_a.extend(["--state", state_a]);
    let start_a = || Edgelbd::new(p.edgelbd.0, &a, &cfg_a).args(&args_a).spawn(&dir.join("a.log"));
    let mut da: Option<Reaped> = Some(start_a());
    let _db = Edgelbd::new(p.edgelbd.0, &b, &cfg_b).args(p.edgelbd.1).spawn(&dir.join("b.log"));
    let show = |fam: &str, vip: &str| {
        let o = Command::new("ip").args(["netns", "exec", &rt, "ip", fam, "route", "show", vip]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Who carries the VIPs: with both up, with A gone, with A back (DSR: both in ECMP; NAT: A Master of all four
    // virtual routers and B of none).
    let ecmp = || {
        bird.as_ref().is_some_and(|b| b.show("show route all").contains("198.19.0.1/32"))
            && show("-4", VIP4).matches("nexthop").count() == 2
            && show("-6", VIP6).matches("nexthop").count() == 2
    };
    let a_leads = || p.masters(&a, api_a) == Some(4) && p.masters(&b, api_b) == Some(0);
    let both_up = || if nat { a_leads() } else { ecmp() };
    let a_gone = || if nat { p.masters(&b, api_b) == Some(4) } else { !ecmp() };
    let state = || match &bird {
        Some(bird) => bird.show("show route all"),
        None => format!(
            "A: {}B: {}",
            p.ctl(&a, api_a, &["vrrp", "list"]).unwrap_or_else(|e| e),
            p.ctl(&b, api_b, &["vrrp", "list"]).unwrap_or_else(|e| e)
        ),
    };
    let what_up = if nat { "A Master of the VIPs and gateways, B Backup" } else { "both appliances' routes in ECMP" };
    wait_until(what_up, 30, both_up, state)?;
    let routes = if nat { state() } else { format!("{}{}", show("-4", VIP4), show("-6", VIP6)) };

    // (a) Both up: connections spread over both appliances (DSR) or pass A (NAT). New connections start first (the
    // router's first packets toward each next hop wait for its neighbour resolution); the step starts once every
    // long-lived connection has had an answer.
    let (rx_a0, rx_b0) = (p.rx(&a, api_a)?, p.rx(&b, api_b)?);
    let (news, news_t) = new_connections(&cl, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let mut conns = Vec::new();
    let mut threads = Vec::new();
    for i in 0..2 * LONG {
        let (c, t) = long_lived(&cl, i % 2 == 1, stop.clone());
        conns.push(c);
        threads.push(t);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while conns.iter().any(|c| c.lock().unwrap().answers.is_empty() && c.lock().unwrap().broken.is_none()) {
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            return Err("not every long-lived connection got an answer within 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let set_up_broken: Vec<String> =
        conns.iter().filter_map(|c| c.lock().unwrap().broken.clone().map(|b| b.1)).collect();
    if !set_up_broken.is_empty() {
        stop.store(true, Ordering::Relaxed);
        return Err(format!("connections failed to set up: {set_up_broken:?}"));
    }
    let t_a = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let per_backend = |conns: &[Arc<Mutex<Conn>>]| {
        let mut m = std::collections::BTreeMap::<String, usize>::new();
        for c in conns {
            *m.entry(c.lock().unwrap().backend.clone()).or_default() += 1;
        }
        m
    };
    let spread = per_backend(&conns);
    let (rx_a, rx_b) = (p.rx(&a, api_a)? - rx_a0, p.rx(&b, api_b)? - rx_b0);

    // (b) Drain be1 on both appliances (A keeps it in its state file, for its return).
    let t_b = Instant::now();
    let (be1_4, be1_6) =
        if nat { ("198.18.2.11:80", "[2001:db8:2::11]:80") } else { ("198.18.0.11:80", "[2001:db8::11]:80") };
    for (ns, api) in [(&a, api_a), (&b, api_b)] {
        p.ctl(ns, api, &["backend", "drain", &format!("{VIP4}:80/tcp"), be1_4])?;
        p.ctl(ns, api, &["backend", "drain", &format!("[{VIP6}]:80/tcp"), be1_6])?;
    }
    // Where each connection goes on an appliance without its state, now that be1 left Maglev's table.
    std::thread::scope(|sc| -> Result<(), String> {
        let asked = sc.spawn(|| -> Result<(), String> {
            for c in &conns {
                let (fam6, port) = {
                    let g = c.lock().unwrap();
                    (g.family == "IPv6", g.port)
                };
                let (client, svc) = if fam6 {
                    (format!("[2001:db8:10::10]:{port}"), format!("[{VIP6}]:80/tcp"))
                } else {
                    (format!("198.18.10.10:{port}"), format!("{VIP4}:80/tcp"))
                };
                let v: serde_json::Value =
                    serde_json::from_str(&p.ctl(&b, api_b, &["-o", "json", "flow", "query", &client, &svc])?)
                        .map_err(|e| e.to_string())?;
                // be1 .. be3 end in 11 .. 13 in both families.
                let fresh = v["fresh_backend"].as_str().unwrap_or_default();
                let d = fresh.chars().last().ok_or(format!("B has no Maglev pick for {client}: {v}"))?;
                c.lock().unwrap().fresh = format!("be{d}");
            }
            Ok(())
        });
        std::thread::sleep(Duration::from_secs(3));
        asked.join().map_err(|_| "the flow queries failed".to_string())?
    })?;
    let would_move = conns
        .iter()
        .filter(|c| {
            let c = c.lock().unwrap();
            c.backend != "be1" && c.fresh != c.backend
        })
        .count();
    let after_drain: Vec<_> =
        news.lock().unwrap().iter().filter(|(at, _, _)| *at > t_b + Duration::from_millis(300)).cloned().collect();
    let to_be1 = after_drain.iter().filter(|(_, _, r)| r.as_deref() == Ok("be1")).count();

    // (c) SIGKILL A.
    let t_c = Instant::now();
    if let Some(mut d) = da.take() {
        let _ = d.0.kill();
        let _ = d.0.wait();
    }
    let what_gone = if nat { "B Master of all four virtual routers" } else { "A's routes gone" };
    wait_until(what_gone, 10, a_gone, state)?;
    let detected = t_c.elapsed();
    std::thread::sleep(Duration::from_secs(4));

    // (d) A returns (its drain of be1 kept in its state file): the flows that move back keep their backend.
    let t_d = Instant::now();
    let _a_again = start_a();
    if let Err(e) = wait_until(if nat { "A Master again" } else { "A back in ECMP" }, 30, both_up, state) {
        stop.store(true, Ordering::Relaxed);
        let session = bird.as_ref().map_or_else(String::new, |b| b.show("show protocols all a"));
        return Err(format!("{e}\n{session}"));
    }
    let back = t_d.elapsed();
    std::thread::sleep(Duration::from_secs(4));
    let t_end = Instant::now();
    // B's replication counters as Prometheus scrapes them (the metrics listener's default, in B's namespace).
    let replication_metrics = in_netns(&b, || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&"127.0.0.1:9917".parse().unwrap(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n")?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut s, &mut text)?;
        Ok(text)
    })
    .map_err(|e| format!("B's /metrics: {e}"))?
    .lines()
    .filter(|l| l.starts_with("edgelb_replication") || l.starts_with("edgelb_flows_replicas"))
    .map(|l| format!("{l}\n"))
    .collect();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = news_t.join();

    let steps = [
        step(if nat { "(a) A Master" } else { "(a) both announce" }, &conns, &news, t_a, t_b, "be1"),
        step("(b) be1 drains", &conns, &news, t_b, t_c, "be1"),
        step("(c) A killed", &conns, &news, t_c, t_d, "be1"),
        step("(d) A returns", &conns, &news, t_d, t_end, "be1"),
    ];
    let mut broken = Vec::new();
    for c in &conns {
        let c = c.lock().map_err(|_| "a client thread failed")?;
        if let Some((at, why)) = &c.broken {
            broken.push(format!(
                "{} :{} on {} (Maglev without state: {}) at +{} ms: {why}",
                c.family,
                c.port,
                c.backend,
                c.fresh,
                at.duration_since(t_a).as_millis()
            ));
        }
    }
    let kill_to_traffic = steps[2].stall;
    let mut log = String::new();
    for n in ["a", "b"] {
        for l in std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default().lines() {
            if ["replication", "peer appliance", "BGP session established", "VRRP"].iter().any(|w| l.contains(w)) {
                log += &format!("{n}: {l}\n");
            }
        }
    }
    Ok(Report {
        mode,
        log,
        routes,
        spread,
        rx: (rx_a, rx_b),
        new_to_drained: to_be1,
        steps,
        withdrawn_after: detected,
        back_after: back,
        kill_to_traffic,
        broken,
        would_move,
        replication_metrics,
    })
}
