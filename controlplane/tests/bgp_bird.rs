//! The speaker against BIRD 2 in network namespaces (root): the session comes up, BIRD shows the IPv4 and IPv6 VIP
//! routes with our next hops, MED, communities and large communities; a VIP whose last backend fails its health is
//! withdrawn and comes back when it recovers; draining tags GRACEFUL_SHUTDOWN; stopping withdraws everything.

#[path = "../../dataplane/tests/common/mod.rs"]
mod common;

use common::{in_netns, require_root, Lab};
use edgelb_controlplane::api::store::{key_of, Store};
use edgelb_controlplane::bgp::session::{PeerConfig, State};
use edgelb_controlplane::bgp::speaker::Speaker;
use edgelb_dataplane::config::{BackendSpec, BackendState, InterfaceSpec, Mode, Model, Protocol, ServiceSpec};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Bird {
    pidfile: PathBuf,
    sock: PathBuf,
    dir: PathBuf,
}

impl Bird {
    fn start(ns: &str, dir: &Path, conf: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let (c, sock, pidfile) = (dir.join("bird.conf"), dir.join("bird.ctl"), dir.join("bird.pid"));
        std::fs::write(&c, conf).unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "bird", "-c"])
            .arg(&c)
            .arg("-s")
            .arg(&sock)
            .arg("-P")
            .arg(&pidfile)
            .output()
            .expect("bird (Debian bird2)");
        assert!(out.status.success(), "bird: {}", String::from_utf8_lossy(&out.stderr));
        Bird { pidfile, sock, dir: dir.to_path_buf() }
    }

    fn show(&self, what: &str) -> String {
        let out = Command::new("birdc").arg("-s").arg(&self.sock).args(what.split_whitespace()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait (bounded) until `show route all` satisfies `ok`; returns the last output.
    fn wait_routes(&self, what: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.show("show route all");
            if ok(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "BIRD never showed {what}:\n{r}\n{}",
                self.show("show protocols all edge")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pidfile) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
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
    let mut lab = Lab::new("bgp");
    let (sp, rt) = (lab.ns("sp"), lab.ns("rt"));
    lab.veth(&sp, "sp0", &rt, "rt0");
    lab.ip(&sp, "addr add 198.18.255.1/30 dev sp0");
    lab.ip(&rt, "addr add 198.18.255.2/30 dev rt0");
    lab.ip(&sp, "addr add 2001:db8:ff::1/64 dev sp0 nodad");
    lab.ip(&rt, "addr add 2001:db8:ff::2/64 dev rt0 nodad");
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
    let peer = PeerConfig {
        name: "bird".into(),
        address: "198.18.255.2".parse().unwrap(),
        port: 179,
        remote_as: 65000,
        local_as: 65001,
        router_id: "198.18.255.1".parse().unwrap(),
        source: None,
        hold_time: 9,
        connect_retry: 1,
        ttl: None,
        next_hop_v4: None,
        next_hop_v6: Some("2001:db8:ff::1".parse().unwrap()),
        med: Some(50),
        local_pref: None,
        communities: vec![(65001 << 16) | 100],
        large_communities: vec![(65001, 1, 1)],
        graceful_restart: None,
    };
    // The speaker runs on a runtime of its own inside the speaker's namespace; commands reach it over a channel.
    enum Cmd {
        Gshut,
        Stop,
    }
    let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<Cmd>();
    let (st_tx, st_rx) = std::sync::mpsc::channel();
    let s2 = store.clone();
    let sp2 = sp.clone();
    let speaker = std::thread::spawn(move || {
        in_netns(&sp2, move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let sp = Speaker::start(s2, vec![peer]);
                loop {
                    match cmd_rx.try_recv() {
                        Ok(Cmd::Gshut) => sp.graceful_shutdown(true),
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
    cmd_tx.send(Cmd::Gshut).unwrap();
    let r = bird.wait_routes("GRACEFUL_SHUTDOWN", 5, |r| r.matches("(65535,0)").count() >= 2);
    assert!(both(&r));
    // Status: established once, two prefixes announced.
    let status = st_rx.try_iter().last().expect("status");
    let (name, st) = &status[0];
    assert_eq!(
        (name.as_str(), st.state, st.established_count, st.announced),
        ("bird", State::Established, 1, 2),
        "{st:?}"
    );
    assert!(st.msgs_in >= 2 && st.msgs_out >= 4, "{st:?}");
    // Stopping withdraws everything and closes the session.
    cmd_tx.send(Cmd::Stop).unwrap();
    speaker.join().unwrap();
    bird.wait_routes("no routes after stop", 5, |r| !r.contains("198.19.0.1/32") && !r.contains("2001:db8:100::1/128"));
    let p = bird.show("show protocols all edge");
    assert!(
        p.contains("Administrative shutdown")
            || p.contains("Received: Administrative shutdown")
            || !p.contains("Established"),
        "{p}"
    );
}
