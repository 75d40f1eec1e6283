//! The failover drill of `tests/failover.rs` and `edgelb lab --ha`, on network namespaces with BIRD (Debian
//! `bird2`): a router running BIRD with ECMP (`merge paths`) toward two appliances A and B, each announcing a
//! dual-stack VIP over BGP with BFD (200 ms × 3); a client behind the router; three backends on the appliances'
//! segment, each holding the VIPs on its loopback (DSR-L2: replies go from the backends to the router). 50
//! long-lived TCP connections (25 per family) each send a line every 100 ms and check the answer comes from the
//! backend they started on; a new connection opens every 100 ms. Steps: (a) both appliances announce; (b) one backend
//! (be1) drains on both; (c) A is SIGKILLed; (d) A returns (its drain kept in its state file). [`Report`] has each
//! step's figures: connections broken (apart from those on the drained backend, counted on their own), the longest
//! stall a client saw, new-connection failures; and the times the router took to drop and take back A's routes.

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

/// What the drill measured.
#[derive(Debug)]
pub struct Report {
    /// The router's routes to the VIPs with both appliances up.
    pub routes: String,
    /// Long-lived connections per backend.
    pub spread: std::collections::BTreeMap<String, usize>,
    /// Packets A and B received in step (a).
    pub rx: (u64, u64),
    /// New connections that reached the drained backend after its drain (from 300 ms on).
    pub new_to_drained: usize,
    /// The four steps.
    pub steps: [Step; 4],
    /// From the kill until BIRD dropped A's routes.
    pub withdrawn_after: Duration,
    /// From A's restart until its routes were back in ECMP.
    pub back_after: Duration,
    /// The longest stall after the kill: how long until the flows A carried flowed through B.
    pub kill_to_traffic: Duration,
    /// Each broken connection: family, backend, when, why.
    pub broken: Vec<String>,
    /// The appliances' log lines about replication and BGP sessions.
    pub log: String,
}

impl Report {
    /// The figures as a table.
    pub fn table(&self) -> String {
        let mut t = String::from(
            "step                 broken  broken on be1 (drained)  longest stall  new connections failed\n",
        );
        for s in &self.steps {
            t += &format!(
                "{:<20} {:>6}  {:>23}  {:>10.0} ms  {:>3} of {}\n",
                s.name,
                s.broken.0,
                s.broken.1,
                s.stall.as_secs_f64() * 1000.0,
                s.new_failed.0,
                s.new_failed.1
            );
        }
        t += &format!(
            "A killed: BIRD dropped its routes after {} ms; traffic through B after at most {} ms; A back in ECMP after {} ms\n",
            self.withdrawn_after.as_millis(),
            self.kill_to_traffic.as_millis(),
            self.back_after.as_millis()
        );
        t += &format!(
            "(a) long-lived connections per backend: {:?}; packets received by A {}, by B {}\n",
            self.spread, self.rx.0, self.rx.1
        );
        t
    }
}

/// Wait (bounded) until BIRD's routes satisfy `ok`.
fn wait_bird(bird: &Bird, what: &str, secs: u64, ok: impl Fn(&str) -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = bird.show("show route all");
        if ok(&r) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("BIRD never showed {what}:\n{r}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Long-lived connections per family.
const LONG: usize = 25;

/// An appliance's config: its segment addresses (the routes' next hops), its uplink to the router.
fn config(name: &str, seg: (&str, &str), up: (&str, &str), api: u16, replicate_to: Option<&str>) -> String {
    let replication = replicate_to.map_or_else(String::new, |peer| {
        format!(
            "\n[replication]\nlisten = \"{}:7946\"\npeers = [\"{peer}:7946\"]\nsecret = \"drill-secret-0123456789\"\n",
            up.0
        )
    });
    let backends = |fam6: bool| {
        (1..=3)
            .map(|i| {
                let a = if fam6 { format!("2001:db8::1{i}") } else { format!("198.18.0.1{i}") };
                format!("\n[[service.backend]]\naddress = \"{a}\"\nport = 80\n")
            })
            .collect::<String>()
    };
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

[[service]]
vip = "{VIP4}"
protocol = "tcp"
port = 80
mode = "dsr_l2"
{b4}
[[service]]
vip = "{VIP6}"
protocol = "tcp"
port = 80
mode = "dsr_l2"
{b6}{replication}"#,
        s4 = seg.0,
        s6 = seg.1,
        local = up.0,
        peer = up.1,
        b4 = backends(false),
        b6 = backends(true),
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
    /// Long-lived connections broken in the step: on other backends, on the drained one.
    pub broken: (usize, usize),
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
    let mut stall = Duration::ZERO;
    for c in conns {
        let c = c.lock().unwrap();
        if let Some((at, _)) = &c.broken {
            if *at >= from && *at < to {
                if c.backend == drained {
                    broken.1 += 1
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
    Step { name, broken, stall, new_failed: (failed, in_step.len()) }
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
}

/// Run the drill in `lab` (root; BIRD installed); everything it starts stops when it returns.
///
/// # Errors
/// A step that could not be set up or did not happen in time (the routes never converged, a connection never
/// answered, edgelbctl refused).
pub fn run(lab: &mut Lab, p: &Programs<'_>, replication: bool) -> Result<Report, String> {
    let (cl, rt, a, b) = (lab.ns("cl"), lab.ns("rt"), lab.ns("a"), lab.ns("b"));
    let bes: Vec<String> = (1..=3).map(|i| lab.ns(&format!("be{i}"))).collect();
    // The router: a leg to the client, a bridge for the segment, an uplink to each appliance.
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
    for (i, be) in bes.iter().enumerate() {
        let leg = format!("pbe{}", i + 1);
        lab.veth(be, "be0", &rt, &leg);
        lab.ip(&rt, &format!("link set {leg} master br0"));
        lab.ip(be, &format!("addr add 198.18.0.1{}/24 dev be0", i + 1));
        lab.ip(be, &format!("addr add 2001:db8::1{}/64 dev be0 nodad", i + 1));
        lab.ip(be, &format!("addr add {VIP4}/32 dev lo"));
        lab.ip(be, &format!("addr add {VIP6}/128 dev lo"));
        lab.ip(be, "route add default via 198.18.0.1");
        lab.ip(be, "-6 route add default via 2001:db8::1");
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
    let dir = std::env::temp_dir().join(format!("edgelb-{}-drill", lab.prefix()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    lab.own_file(dir.clone());
    let bird = Bird::start(
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
    );
    let stop = Arc::new(AtomicBool::new(false));
    let _servers: Vec<_> =
        bes.iter().zip(["be1", "be2", "be3"]).map(|(ns, name)| backend(ns, name, stop.clone())).collect();
    let (cfg_a, cfg_b) = (dir.join("a.toml"), dir.join("b.toml"));
    std::fs::write(
        &cfg_a,
        config(
            "a",
            ("198.18.0.2", "2001:db8::2"),
            ("198.18.255.1", "198.18.255.2"),
            50093,
            replication.then_some("198.18.255.5"),
        ),
    )
    .unwrap();
    std::fs::write(
        &cfg_b,
        config(
            "b",
            ("198.18.0.3", "2001:db8::3"),
            ("198.18.255.5", "198.18.255.6"),
            50094,
            replication.then_some("198.18.255.1"),
        ),
    )
    .unwrap();
    let state_a = dir.join("a.state");
    let state_a = state_a.to_str().unwrap();
    let mut args_a = p.edgelbd.1.to_vec();
    args_a.extend(["--state", state_a]);
    let start_a = || Edgelbd::new(p.edgelbd.0, &a, &cfg_a).args(&args_a).spawn(&dir.join("a.log"));
    let mut da: Option<Reaped> = Some(start_a());
    let _db = Edgelbd::new(p.edgelbd.0, &b, &cfg_b).args(p.edgelbd.1).spawn(&dir.join("b.log"));
    let ecmp = |r: &str| {
        let kernel = Command::new("ip").args(["netns", "exec", &rt, "ip", "route", "show", VIP4]).output().unwrap();
        let kernel6 =
            Command::new("ip").args(["netns", "exec", &rt, "ip", "-6", "route", "show", VIP6]).output().unwrap();
        let (k4, k6) = (String::from_utf8_lossy(&kernel.stdout), String::from_utf8_lossy(&kernel6.stdout));
        r.contains("198.19.0.1/32") && k4.matches("nexthop").count() == 2 && k6.matches("nexthop").count() == 2
    };
    wait_bird(&bird, "both appliances' routes, merged into ECMP", 30, ecmp)?;
    let show = |fam: &str, vip: &str| {
        let o = Command::new("ip").args(["netns", "exec", &rt, "ip", fam, "route", "show", vip]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let routes = format!("{}{}", show("-4", VIP4), show("-6", VIP6));

    // (a) Both announce: connections spread over both appliances. New connections start first (the router's first
    // packets toward each next hop wait for its neighbour resolution); the step starts once every long-lived
    // connection has had an answer.
    let (rx_a0, rx_b0) = (p.rx(&a, 50093)?, p.rx(&b, 50094)?);
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
    let (rx_a, rx_b) = (p.rx(&a, 50093)? - rx_a0, p.rx(&b, 50094)? - rx_b0);

    // (b) Drain be1 on both appliances (A keeps it in its state file, for its return).
    let t_b = Instant::now();
    for (ns, api) in [(&a, 50093), (&b, 50094)] {
        p.ctl(ns, api, &["backend", "drain", &format!("{VIP4}:80/tcp"), "198.18.0.11:80"])?;
        p.ctl(ns, api, &["backend", "drain", &format!("[{VIP6}]:80/tcp"), "[2001:db8::11]:80"])?;
    }
    std::thread::sleep(Duration::from_secs(3));
    let after_drain: Vec<_> =
        news.lock().unwrap().iter().filter(|(at, _, _)| *at > t_b + Duration::from_millis(300)).cloned().collect();
    let to_be1 = after_drain.iter().filter(|(_, _, r)| r.as_deref() == Ok("be1")).count();

    // (c) SIGKILL A.
    let t_c = Instant::now();
    if let Some(mut d) = da.take() {
        let _ = d.0.kill();
        let _ = d.0.wait();
    }
    wait_bird(&bird, "A's routes gone", 10, |r| !ecmp(r))?;
    let detected = t_c.elapsed();
    std::thread::sleep(Duration::from_secs(4));

    // (d) A returns (its drain of be1 kept in its state file): the flows that move back keep their backend.
    let t_d = Instant::now();
    let _a_again = start_a();
    if let Err(e) = wait_bird(&bird, "A back in ECMP", 30, ecmp) {
        let log = std::fs::read_to_string(dir.join("a.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        stop.store(true, Ordering::Relaxed);
        return Err(format!(
            "{e}\nBIRD's session with A:\n{}\nA's log (last lines):\n{}",
            bird.show("show protocols all a"),
            tail.join("\n")
        ));
    }
    let back = t_d.elapsed();
    std::thread::sleep(Duration::from_secs(4));
    let t_end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = news_t.join();

    let steps = [
        step("(a) both announce", &conns, &news, t_a, t_b, "be1"),
        step("(b) be1 drains", &conns, &news, t_b, t_c, "be1"),
        step("(c) A killed", &conns, &news, t_c, t_d, "be1"),
        step("(d) A returns", &conns, &news, t_d, t_end, "be1"),
    ];
    let mut broken = Vec::new();
    for c in &conns {
        let c = c.lock().map_err(|_| "a client thread failed")?;
        if let Some((at, why)) = &c.broken {
            broken.push(format!("{} on {} at +{} ms: {why}", c.family, c.backend, at.duration_since(t_a).as_millis()));
        }
    }
    let kill_to_traffic = steps[2].stall;
    let mut log = String::new();
    for n in ["a", "b"] {
        for l in std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default().lines() {
            if l.contains("replication") || l.contains("peer appliance") || l.contains("BGP session established") {
                log += &format!("{n}: {l}\n");
            }
        }
    }
    Ok(Report {
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
    })
}
