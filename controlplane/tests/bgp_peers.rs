//! The speaker against real BGP implementations in network namespaces (root), each peer in its own namespace on a
//! veth to the speaker's (198.18.255.0/30, 2001:db8:ff::/64), configured by files written here:
//! - BIRD 2: the IPv4 and IPv6 VIP routes with our next hops, MED, communities and large communities; a VIP whose
//!   last backend fails its health is withdrawn and comes back; draining tags GRACEFUL_SHUTDOWN; stopping withdraws.
//! - BIRD's BFD: a frozen peer drops the session within 0.5 s with BFD, in seconds with the hold timer alone.
//! - FRR bgpd and GoBGP: the session comes up and both routes are there with next hops and (large) communities.

use edgelb_controlplane::bgp::session::{PeerConfig, State};
use edgelb_controlplane::bgp::speaker::Speaker;
use edgelb_controlplane::store::{key_of, Store};
use edgelb_dataplane::model::{BackendSpec, BackendState, InterfaceSpec, Mode, Model, Protocol, ServiceSpec};
use edgelb_testkit::netns::{in_netns, require_root, Lab};
use edgelb_testkit::peers::{Bird, Frr, Gobgp};
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn peer_config(name: &str) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        address: "198.18.255.2".parse().unwrap(),
        port: 179,
        remote_as: 65000,
        local_as: 65001,
        router_id: "198.18.255.1".parse().unwrap(),
        source: None,
        hold_time: 9,
        connect_retry: 1,
        ttl: None,
        password: None,
        next_hop_v4: None,
        next_hop_v6: Some("2001:db8:ff::1".parse().unwrap()),
        med: Some(50),
        local_pref: None,
        communities: vec![(65001 << 16) | 100],
        large_communities: vec![(65001, 1, 1)],
        graceful_restart: None,
        passive: false,
        bfd: None,
    }
}

enum Cmd {
    Gshut,
    Stop,
    /// End the sessions without withdrawing or a NOTIFICATION (a crash, as the peer sees it).
    Abort,
}

/// A speaker on a runtime of its own inside namespace `ns`; commands reach it over a channel, its peers' status
/// comes back every 50 ms, and each peer state change at once with the time it happened.
struct Running {
    cmd: std::sync::mpsc::Sender<Cmd>,
    status: std::sync::mpsc::Receiver<Vec<(String, edgelb_controlplane::bgp::session::Status)>>,
    transitions: std::sync::mpsc::Receiver<(Instant, String, State, Option<String>)>,
    thread: std::thread::JoinHandle<()>,
}

fn run_speaker(ns: &str, store: Arc<Store>, peer: PeerConfig) -> Running {
    run_speakers(ns, store, vec![peer])
}

fn run_speakers(ns: &str, store: Arc<Store>, peers: Vec<PeerConfig>) -> Running {
    let (cmd, cmd_rx) = std::sync::mpsc::channel::<Cmd>();
    let (st_tx, status) = std::sync::mpsc::channel();
    let (tr_tx, transitions) = std::sync::mpsc::channel();
    let ns = ns.to_string();
    let thread = std::thread::spawn(move || {
        in_netns(&ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let sp = Speaker::start(store, peers, 179);
                let mut changes = sp.transitions.subscribe();
                tokio::spawn(async move {
                    while let Ok((peer, state, why)) = changes.recv().await {
                        let _ = tr_tx.send((Instant::now(), peer, state, why));
                    }
                });
                loop {
                    match cmd_rx.try_recv() {
                        Ok(Cmd::Gshut) => sp.graceful_shutdown(true),
                        Ok(Cmd::Abort) => {
                            sp.abort();
                            return;
                        }
                        Ok(Cmd::Stop) | Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                        Err(_) => {}
                    }
                    let _ = st_tx.send(sp.status());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                sp.stop().await;
            })
        })
    });
    Running { cmd, status, transitions, thread }
}

/// The speaker's and a router's namespaces, joined by a veth with both families.
fn pair(tag: &str) -> (Lab, String, String) {
    let mut lab = Lab::new(tag);
    let (sp, rt) = (lab.ns("sp"), lab.ns("rt"));
    lab.veth(&sp, "sp0", &rt, "rt0");
    lab.ip(&sp, "addr add 198.18.255.1/30 dev sp0");
    lab.ip(&rt, "addr add 198.18.255.2/30 dev rt0");
    lab.ip(&sp, "addr add 2001:db8:ff::1/64 dev sp0 nodad");
    lab.ip(&rt, "addr add 2001:db8:ff::2/64 dev rt0 nodad");
    (lab, sp, rt)
}

/// Run `cmd` until its output satisfies `ok` (bounded); returns that output.
fn wait_output(what: &str, secs: u64, cmd: impl Fn() -> String, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = cmd();
        if ok(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "never saw {what}; last output:\n{r}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn model() -> Model {
    let be = |a: &str| BackendSpec { addr: a.parse().unwrap(), port: 8080, weight: 1, state: BackendState::Active };
    Model {
        interfaces: vec![InterfaceSpec {
            port: 0,
            mac: [2, 0, 0, 0, 0, 1],
            addrs: vec![("198.18.0.1".parse().unwrap(), 24), ("2001:db8:1::1".parse().unwrap(), 64)],
            mtu: 1500,
        }],
        services: vec![
            ServiceSpec::new(
                "198.19.0.1".parse().unwrap(),
                Protocol::Tcp,
                Some(80),
                Mode::Nat,
                vec![be("198.18.0.10")],
            ),
            ServiceSpec::new(
                "2001:db8:100::1".parse().unwrap(),
                Protocol::Tcp,
                Some(80),
                Mode::Nat,
                vec![be("2001:db8:1::10")],
            ),
        ],
        ..Model::default()
    }
}

#[test]
fn bird_sees_the_vips_with_their_attributes_and_follows_health() {
    require_root();
    let (_lab, sp, rt) = pair("bgpb");
    let dir = std::env::temp_dir().join(format!("edgelb-bird-{}", std::process::id()));
    let bird = Bird::start(
        &rt,
        &dir,
        "router id 198.18.255.2;\n\
         protocol device { }\n\
         protocol bgp edge {\n  local 198.18.255.2 as 65000;\n  neighbor 198.18.255.1 as 65001;\n  passive on;\n  hold time 9;\n\
           ipv4 { import all; export none; };\n  ipv6 { import all; export none; };\n}\n",
    );
    let store: Arc<Store> = Store::new(model()).unwrap();
    let peer = peer_config("bird");
    let sp_run = run_speaker(&sp, store.clone(), peer);
    let both = |r: &str| r.contains("198.19.0.1/32") && r.contains("2001:db8:100::1/128");
    let r = bird.wait_routes("both VIP routes", 20, both);
    println!("BIRD's view:\n{r}");
    for want in [
        "BGP.next_hop: 198.18.255.1",
        "BGP.next_hop: 2001:db8:ff::1",
        "BGP.as_path: 65001",
        "BGP.med: 50",
        "BGP.community: (65001,100)",
        "BGP.large_community: (65001, 1, 1)",
    ] {
        assert!(r.contains(want), "{want} missing:\n{r}");
    }
    // The last backend of the IPv4 VIP fails its health check: withdrawn; the IPv6 VIP stays.
    let (_, services) = store.services();
    let k = key_of(&services[0]);
    let be: IpAddr = "198.18.0.10".parse().unwrap();
    store.set_health((k, be, 8080), false, false, "test").unwrap();
    bird.wait_routes("the IPv4 VIP withdrawn", 5, |r| {
        !r.contains("198.19.0.1/32") && r.contains("2001:db8:100::1/128")
    });
    store.set_health((k, be, 8080), true, false, "test").unwrap();
    bird.wait_routes("the IPv4 VIP back", 5, both);
    // Draining: every route tagged GRACEFUL_SHUTDOWN.
    sp_run.cmd.send(Cmd::Gshut).unwrap();
    let r = bird.wait_routes("GRACEFUL_SHUTDOWN", 5, |r| r.matches("(65535,0)").count() >= 2);
    assert!(both(&r));
    // Status: established once, two prefixes announced.
    let status = sp_run.status.try_iter().last().expect("status");
    let (name, st) = &status[0];
    assert_eq!(
        (name.as_str(), st.state, st.established_count, st.announced),
        ("bird", State::Established, 1, 2),
        "{st:?}"
    );
    assert!(st.msgs_in >= 2 && st.msgs_out >= 4, "{st:?}");
    // Stopping withdraws everything and closes the session.
    sp_run.cmd.send(Cmd::Stop).unwrap();
    sp_run.thread.join().unwrap();
    bird.wait_routes("no routes after stop", 5, |r| !r.contains("198.19.0.1/32") && !r.contains("2001:db8:100::1/128"));
    // The Cease carries its shutdown communication as RFC 9003 has it (a length octet, then the text): BIRD shows
    // the text as the session's message.
    wait_output(
        "BIRD showing our shutdown communication",
        5,
        || bird.show("show protocols all edge"),
        |p| {
            p.contains("Received: Administrative shutdown")
                && p.lines().any(|l| l.split_whitespace().eq(["Message:", "edgelb", "stopping"]))
        },
    );
}

#[test]
fn frr_bgpd_sees_both_vips_with_next_hops_and_communities() {
    require_root();
    let (_lab, sp, rt) = pair("bgpf");
    let dir = std::env::temp_dir().join(format!("edgelb-frr-{}", std::process::id()));
    let frr = Frr::start(
        &rt,
        &dir,
        "frr defaults traditional\nhostname rt\n!\nrouter bgp 65000\n bgp router-id 198.18.255.2\n no bgp ebgp-requires-policy\n\
         no bgp network import-check\n neighbor 198.18.255.1 remote-as 65001\n neighbor 198.18.255.1 passive\n\
         neighbor 198.18.255.1 timers 3 9\n address-family ipv4 unicast\n  neighbor 198.18.255.1 activate\n exit-address-family\n\
         address-family ipv6 unicast\n  neighbor 198.18.255.1 activate\n exit-address-family\n!\n",
    );
    let store: Arc<Store> = Store::new(model()).unwrap();
    let sp_run = run_speaker(&sp, store, peer_config("frr"));
    let vtysh = |c: &str| frr.vtysh(c);
    let v4 = wait_output(
        "198.19.0.1/32 at FRR",
        20,
        || vtysh("show bgp ipv4 unicast 198.19.0.1/32 json"),
        |r| r.contains("\"65001:100\""),
    );
    let v6 = wait_output(
        "2001:db8:100::1/128 at FRR",
        10,
        || vtysh("show bgp ipv6 unicast 2001:db8:100::1/128 json"),
        |r| r.contains("\"65001:100\""),
    );
    println!("FRR's view:\n{v4}\n{v6}");
    for (r, nh) in [(&v4, "198.18.255.1"), (&v6, "2001:db8:ff::1")] {
        for want in [nh, "\"65001:1:1\"", "\"metric\":50", "\"string\":\"65001\""] {
            assert!(r.contains(want), "{want} missing:\n{r}");
        }
    }
    sp_run.cmd.send(Cmd::Stop).unwrap();
    sp_run.thread.join().unwrap();
    wait_output("withdrawal at FRR", 10, || vtysh("show bgp ipv4 unicast json"), |r| !r.contains("198.19.0.1/32"));
}

#[test]
fn gobgp_sees_both_vips_with_next_hops_and_communities() {
    require_root();
    let (_lab, sp, rt) = pair("bgpg");
    let dir = std::env::temp_dir().join(format!("edgelb-gobgp-{}", std::process::id()));
    let gobgp = Gobgp::start(
        &rt,
        &dir,
        "[global.config]\n  as = 65000\n  router-id = \"198.18.255.2\"\n  port = 179\n\n[[neighbors]]\n  [neighbors.config]\n\
         neighbor-address = \"198.18.255.1\"\n    peer-as = 65001\n  [neighbors.transport.config]\n    passive-mode = true\n\
         [neighbors.timers.config]\n    hold-time = 9\n    keepalive-interval = 3\n  [[neighbors.afi-safis]]\n\
         [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n  [[neighbors.afi-safis]]\n\
         [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv6-unicast\"\n",
        50051,
    );
    let store: Arc<Store> = Store::new(model()).unwrap();
    let sp_run = run_speaker(&sp, store, peer_config("gobgp"));
    let rib = |fam: &str| gobgp.rib(fam);
    let v4 = wait_output("198.19.0.1/32 at GoBGP", 20, || rib("ipv4"), |r| r.contains("198.19.0.1/32"));
    let v6 = wait_output("2001:db8:100::1/128 at GoBGP", 10, || rib("ipv6"), |r| r.contains("2001:db8:100::1/128"));
    println!("GoBGP's view:\n{v4}\n{v6}");
    let community = ((65001u32 << 16) | 100).to_string();
    for (r, nh) in [(&v4, "198.18.255.1"), (&v6, "2001:db8:ff::1")] {
        for want in [nh, community.as_str(), "\"ASN\":65001,\"LocalData1\":1,\"LocalData2\":1", "\"metric\":50"] {
            assert!(r.contains(want), "{want} missing:\n{r}");
        }
    }
    sp_run.cmd.send(Cmd::Stop).unwrap();
    sp_run.thread.join().unwrap();
    wait_output("withdrawal at GoBGP", 10, || rib("ipv4"), |r| !r.contains("198.19.0.1/32"));
}

/// The peer's state as the speaker reports it, waiting (bounded) for `want`.
fn wait_state(run: &Running, secs: u64, want: State) -> Result<edgelb_controlplane::bgp::session::Status, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(s) = run.status.try_iter().last() {
            if s[0].1.state == want {
                return Ok(s[0].1.clone());
            }
            last = Some(s[0].1.clone());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("not {want:?} within {secs} s; last {last:?}"))
}

#[test]
fn md5_session_comes_up_with_the_right_password_only() {
    require_root();
    let (_lab, sp, rt) = pair("bgpm");
    let dir = std::env::temp_dir().join(format!("edgelb-bird-md5-{}", std::process::id()));
    let bird = Bird::start(
        &rt,
        &dir,
        "router id 198.18.255.2;\nprotocol device { }\nprotocol bgp edge {\n  local 198.18.255.2 as 65000;\n\
         neighbor 198.18.255.1 as 65001;\n  passive on;\n  hold time 9;\n  password \"edgelb-secret\";\n\
         ipv4 { import all; export none; };\n  ipv6 { import all; export none; };\n}\n",
    );
    let store: Arc<Store> = Store::new(model()).unwrap();
    // A wrong key: the peer's kernel drops our unsigned-as-it-expects segments; never Established.
    let wrong = PeerConfig { password: Some("not-the-secret".into()), ..peer_config("bird-md5") };
    let run = run_speaker(&sp, store.clone(), wrong);
    assert!(wait_state(&run, 5, State::Established).is_err(), "a session with the wrong MD5 key came up");
    assert!(!bird.show("show protocols edge").contains("Established"));
    run.cmd.send(Cmd::Stop).unwrap();
    run.thread.join().unwrap();
    // The right key: up, and the routes arrive.
    let right = PeerConfig { password: Some("edgelb-secret".into()), ..peer_config("bird-md5") };
    let run = run_speaker(&sp, store, right);
    wait_state(&run, 20, State::Established).unwrap();
    bird.wait_routes("routes over the signed session", 10, |r| r.contains("198.19.0.1/32"));
    assert!(bird.show("show protocols edge").contains("Established"));
    run.cmd.send(Cmd::Stop).unwrap();
    run.thread.join().unwrap();
}

#[test]
fn hold_timer_expires_when_the_peer_freezes_and_the_session_comes_back() {
    require_root();
    let (_lab, sp, rt) = pair("bgph");
    let dir = std::env::temp_dir().join(format!("edgelb-bird-hold-{}", std::process::id()));
    let bird = Bird::start(
        &rt,
        &dir,
        "router id 198.18.255.2;\nprotocol device { }\nprotocol bgp edge {\n  local 198.18.255.2 as 65000;\n\
         neighbor 198.18.255.1 as 65001;\n  passive on;\n  hold time 3;\n  error wait time 1, 2;\n\
         ipv4 { import all; export none; };\n}\n",
    );
    let store: Arc<Store> = Store::new(model()).unwrap();
    let run = run_speaker(&sp, store, PeerConfig { hold_time: 3, ..peer_config("bird-hold") });
    wait_state(&run, 20, State::Established).unwrap();
    bird.wait_routes("the route", 10, |r| r.contains("198.19.0.1/32"));
    // Freeze BIRD: its kernel still acknowledges TCP, but no KEEPALIVE comes; our hold timer (3 s) expires. (BIRD is
    // told to wait only a second after an error before it takes sessions again; its default is a minute.)
    let pid = std::fs::read_to_string(dir.join("bird.pid")).unwrap().trim().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        let s = run.status.try_iter().last();
        if let Some(s) = s.filter(|s| s[0].1.state != State::Established) {
            break s[0].1.last_error.clone().unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "the hold timer never expired");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    assert!(err.contains("hold timer expired"), "{err}");
    // The peer is back: reconnection and re-announcement.
    let st = wait_state(&run, 20, State::Established).unwrap();
    bird.wait_routes("the route again", 10, |r| r.contains("198.19.0.1/32"));
    assert!(st.established_count >= 2, "{st:?}");
    run.cmd.send(Cmd::Stop).unwrap();
    run.thread.join().unwrap();
}

/// BFD against BIRD's `protocol bfd` (100 ms × 3), IPv4 and IPv6, beside a peer on the hold timer alone (3 s):
/// BIRD freezes (SIGSTOP: its kernel still acknowledges TCP, so only BFD or the hold timer can tell), each BFD
/// session drops its BGP session within 0.5 s, the hold-timer-only session takes about 3 s; the figures are printed.
/// Once BIRD runs again every session comes back, BFD Up at both ends.
#[test]
fn bfd_drops_the_session_within_half_a_second_where_the_hold_timer_takes_seconds() {
    require_root();
    let (_lab, sp, rt) = pair("bfd");
    // A second IPv4 subnet on the same link for the peer without BFD (one peer per address).
    Command::new("ip")
        .args(["netns", "exec", &sp, "ip", "addr", "add", "198.18.254.1/24", "dev", "sp0"])
        .status()
        .unwrap();
    Command::new("ip")
        .args(["netns", "exec", &rt, "ip", "addr", "add", "198.18.254.2/24", "dev", "rt0"])
        .status()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("edgelb-bird-bfd-{}", std::process::id()));
    let bgp = |name: &str, local: &str, neighbor: &str, family: &str, bfd: &str| {
        format!(
            "protocol bgp {name} {{\n  local {local} as 65000;\n  neighbor {neighbor} as 65001;\n  passive on;\n  \
             hold time 3;\n  error wait time 1, 2;\n  {bfd}\n  {family} {{ import all; export none; }};\n}}\n"
        )
    };
    let conf = [
        "router id 198.18.255.2;\nprotocol device { }\n".to_string(),
        "protocol bfd {\n  interface \"rt0\" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };\n}\n"
            .to_string(),
        bgp("edge4", "198.18.255.2", "198.18.255.1", "ipv4", "bfd on;"),
        bgp("edge6", "2001:db8:ff::2", "2001:db8:ff::1", "ipv6", "bfd on;"),
        bgp("slow", "198.18.254.2", "198.18.254.1", "ipv4", ""),
    ]
    .concat();
    let bird = Bird::start(&rt, &dir, &conf);
    let fast = Some(edgelb_controlplane::ha::bfd::Timers { min_tx_us: 100_000, min_rx_us: 100_000, multiplier: 3 });
    let peers = vec![
        PeerConfig { hold_time: 3, bfd: fast, ..peer_config("bfd-v4") },
        PeerConfig { hold_time: 3, bfd: fast, address: "2001:db8:ff::2".parse().unwrap(), ..peer_config("bfd-v6") },
        PeerConfig { hold_time: 3, address: "198.18.254.2".parse().unwrap(), ..peer_config("hold-only") },
    ];
    let run = run_speakers(&sp, Store::new(model()).unwrap(), peers);
    // All three Established, both BFD sessions Up at our end and at BIRD's.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut s = Vec::new();
    loop {
        s = run.status.try_iter().last().unwrap_or(s);
        let bfd_up = |i: usize| s[i].1.bfd.as_ref().is_some_and(|b| b.state == edgelb_controlplane::ha::bfd::State::Up);
        if s.len() == 3 && s.iter().all(|(_, st)| st.state == State::Established) && bfd_up(0) && bfd_up(1) {
            assert!(s[2].1.bfd.is_none());
            break;
        }
        assert!(Instant::now() < deadline, "not all up: {s:#?}\n{}", bird.show("show bfd sessions"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let sessions = wait_output(
        "both BFD sessions Up at BIRD",
        10,
        || bird.show("show bfd sessions"),
        |o| o.matches(" Up ").count() == 2,
    );
    println!("BIRD's BFD sessions:\n{sessions}");
    let _ = run.transitions.try_iter().count();
    // Freeze BIRD.
    let pid: i32 = std::fs::read_to_string(dir.join("bird.pid")).unwrap().trim().parse().unwrap();
    let frozen = Instant::now();
    // SAFETY: kill(2) with a pid read from BIRD's pid file and a standard signal.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let mut down = std::collections::BTreeMap::new();
    while down.len() < 3 && frozen.elapsed() < Duration::from_secs(10) {
        if let Ok((at, peer, state, why)) = run.transitions.recv_timeout(Duration::from_millis(100)) {
            if state != State::Established && !down.contains_key(&peer) {
                down.insert(peer, (at.duration_since(frozen), why.unwrap_or_default()));
            }
        }
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    for (peer, (after, why)) in &down {
        println!("{peer}: session dropped {} ms after the peer froze ({why})", after.as_millis());
    }
    assert_eq!(down.len(), 3, "{down:?}");
    for p in ["bfd-v4", "bfd-v6"] {
        let (after, why) = &down[p];
        assert!(why.contains("BFD"), "{p}: {why}");
        assert!(*after <= Duration::from_millis(500), "{p}: BFD took {after:?}");
    }
    let (after, why) = &down["hold-only"];
    assert!(why.contains("hold timer expired"), "{why}");
    assert!(*after >= Duration::from_secs(1), "{after:?}");
    // BIRD runs again: every session comes back, BFD Up again. (BIRD's own detection timer, frozen with it, may
    // fire as it resumes and take the session down once more: a second failure is then correct.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut s = Vec::new();
    loop {
        s = run.status.try_iter().last().unwrap_or(s);
        let back = |i: usize| {
            s[i].1.bfd.as_ref().is_some_and(|b| {
                b.state == edgelb_controlplane::ha::bfd::State::Up && b.up_count >= 2 && b.failures >= 1
            })
        };
        if s.len() == 3 && s.iter().all(|(_, st)| st.state == State::Established) && back(0) && back(1) {
            break;
        }
        assert!(Instant::now() < deadline, "not all back: {s:#?}\n{}", bird.show("show bfd sessions"));
        std::thread::sleep(Duration::from_millis(100));
    }
    run.cmd.send(Cmd::Stop).unwrap();
    run.thread.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_speakers_give_bird_two_next_hops_for_one_vip() {
    require_root();
    let mut lab = Lab::new("bgpe");
    let (sp1, sp2, rt) = (lab.ns("sp1"), lab.ns("sp2"), lab.ns("rt"));
    lab.veth(&sp1, "sp0", &rt, "rt1");
    lab.veth(&sp2, "sp0", &rt, "rt2");
    lab.ip(&sp1, "addr add 198.18.255.1/30 dev sp0");
    lab.ip(&rt, "addr add 198.18.255.2/30 dev rt1");
    lab.ip(&sp2, "addr add 198.18.255.5/30 dev sp0");
    lab.ip(&rt, "addr add 198.18.255.6/30 dev rt2");
    let dir = std::env::temp_dir().join(format!("edgelb-bird-ecmp-{}", std::process::id()));
    // Multipath: BIRD merges the equal BGP paths into one route with two next hops in a kernel table of its own.
    let bird = Bird::start(
        &rt,
        &dir,
        "router id 198.18.255.2;\nprotocol device { }\n\
         protocol kernel kmultipath { ipv4 { export all; }; merge paths on; kernel table 100; }\n\
         template bgp edge { local as 65000; passive on; hold time 9; ipv4 { import all; export none; }; }\n\
         protocol bgp edge1 from edge { neighbor 198.18.255.1 as 65001; }\n\
         protocol bgp edge2 from edge { neighbor 198.18.255.5 as 65001; }\n",
    );
    let store: Arc<Store> = Store::new(model()).unwrap();
    let p1 = peer_config("edge1");
    let p2 = PeerConfig {
        name: "edge2".into(),
        address: "198.18.255.6".parse().unwrap(),
        router_id: "198.18.255.5".parse().unwrap(),
        ..peer_config("edge2")
    };
    let r1 = run_speaker(&sp1, store.clone(), p1);
    let r2 = run_speaker(&sp2, store, p2);
    let r = bird.wait_routes("two paths", 20, |r| {
        r.matches("198.18.255.1 on rt1").count() + r.matches("198.18.255.5 on rt2").count() >= 2
    });
    println!("BIRD's paths:\n{r}");
    let kernel = wait_output(
        "a multipath kernel route",
        10,
        || {
            let o = Command::new("ip").args(["-n", &rt, "route", "show", "table", "100"]).output().unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        },
        |k| {
            k.contains("198.19.0.1") && k.contains("nexthop via 198.18.255.1") && k.contains("nexthop via 198.18.255.5")
        },
    );
    println!("kernel table 100:\n{kernel}");
    for r in [r1, r2] {
        r.cmd.send(Cmd::Stop).unwrap();
        r.thread.join().unwrap();
    }
}

#[test]
fn graceful_restart_keeps_the_route_at_the_peer_until_we_are_back() {
    require_root();
    let (_lab, sp, rt) = pair("bgpr");
    let dir = std::env::temp_dir().join(format!("edgelb-bird-gr-{}", std::process::id()));
    let bird = Bird::start(
        &rt,
        &dir,
        "router id 198.18.255.2;\nprotocol device { }\nprotocol bgp edge {\n  local 198.18.255.2 as 65000;\n\
         neighbor 198.18.255.1 as 65001;\n  passive on;\n  hold time 9;\n  graceful restart on;\n\
         ipv4 { import all; export none; };\n  ipv6 { import all; export none; };\n}\n",
    );
    let store: Arc<Store> = Store::new(model()).unwrap();
    let gr = PeerConfig { graceful_restart: Some(60), ..peer_config("bird-gr") };
    let run = run_speaker(&sp, store.clone(), gr.clone());
    wait_state(&run, 20, State::Established).unwrap();
    bird.wait_routes("the route", 10, |r| r.contains("198.19.0.1/32"));
    // Our speaker dies without a word (no withdrawal, no NOTIFICATION): the GR-capable peer keeps the route.
    run.cmd.send(Cmd::Abort).unwrap();
    run.thread.join().unwrap();
    wait_output("the session down at BIRD", 10, || bird.show("show protocols edge"), |p| !p.contains("Established"));
    std::thread::sleep(Duration::from_secs(2));
    let held = bird.show("show route all");
    assert!(held.contains("198.19.0.1/32"), "the GR peer dropped our route during the restart:\n{held}");
    // Back: re-established, the route refreshed (no longer stale after our End-of-RIB).
    let run = run_speaker(&sp, store, gr);
    wait_state(&run, 20, State::Established).unwrap();
    let p = wait_output(
        "the session back at BIRD",
        10,
        || bird.show("show protocols all edge"),
        |p| p.contains("Established"),
    );
    assert!(p.contains("graceful restart") || p.contains("Graceful restart"), "{p}");
    let r = bird.show("show route all");
    assert!(r.contains("198.19.0.1/32") && !r.contains("stale"), "{r}");
    run.cmd.send(Cmd::Stop).unwrap();
    run.thread.join().unwrap();
}

#[test]
fn passive_opening_and_collisions_end_in_one_session() {
    require_root();
    // BIRD opens the connection; our side only listens.
    let (_lab, sp, rt) = pair("bgpp");
    let dir = std::env::temp_dir().join(format!("edgelb-bird-passive-{}", std::process::id()));
    let active_bird = "router id 198.18.255.2;\nprotocol device { }\nprotocol bgp edge {\n  local 198.18.255.2 as 65000;\n\
                       neighbor 198.18.255.1 as 65001;\n  hold time 9;\n  connect delay time 1;\n  connect retry time 2;\n\
                       ipv4 { import all; export none; };\n}\n";
    let bird = Bird::start(&rt, &dir, active_bird);
    let store: Arc<Store> = Store::new(model()).unwrap();
    let run = run_speaker(&sp, store.clone(), PeerConfig { passive: true, ..peer_config("bird-active") });
    wait_state(&run, 20, State::Established).unwrap();
    bird.wait_routes("the route over a connection BIRD opened", 10, |r| r.contains("198.19.0.1/32"));
    run.cmd.send(Cmd::Stop).unwrap();
    run.thread.join().unwrap();
    drop(bird);
    // Both sides open at once: the collision is resolved to one session, which stays up.
    let dir = std::env::temp_dir().join(format!("edgelb-bird-collide-{}", std::process::id()));
    let bird = Bird::start(&rt, &dir, active_bird);
    let run = run_speaker(&sp, store, peer_config("bird-both"));
    wait_state(&run, 30, State::Established).unwrap();
    bird.wait_routes("the route after the collision", 10, |r| r.contains("198.19.0.1/32"));
    std::thread::sleep(Duration::from_secs(3));
    let st = run.status.try_iter().last().unwrap();
    assert_eq!(st[0].1.state, State::Established, "{:?}", st[0].1);
    assert!(bird.show("show protocols edge").contains("Established"));
    run.cmd.send(Cmd::Stop).unwrap();
    run.thread.join().unwrap();
}
