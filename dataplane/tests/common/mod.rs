//! Test support: network namespaces and veth pairs made by the test, removed when the `Lab` drops (also when the
//! test fails). Addresses inside them come from 198.18.0.0/15 and 2001:db8::/32 only.
#![allow(dead_code)]

use edgelb_dataplane::packet::{MemBuf, PacketBuf};
use edgelb_dataplane::port::{Burst, Port};
use edgelb_dataplane::wire::build::{frame, Segment};
use edgelb_dataplane::wire::ethernet::{ethertype, parse_l2};
use edgelb_dataplane::wire::ipv4::Ipv4Packet;
use edgelb_dataplane::wire::proto;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Fail with a clear message unless running as root (namespaces need CAP_SYS_ADMIN; CI runs as root).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(uid, 0, "this test builds network namespaces and needs root (scripts/test.sh runs as root in CI)");
}

/// A child process (a daemon, a server, a peer) killed and reaped when the test ends, also on failure.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Namespaces created by one test.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Lab {
    /// A lab whose namespace names start with `elb-<tag>-<pid>`.
    pub fn new(tag: &str) -> Self {
        Self { prefix: format!("elb-{tag}-{}", std::process::id()), namespaces: Vec::new() }
    }

    /// Create namespace `<prefix>-<name>` with loopback up; returns its full name.
    pub fn ns(&mut self, name: &str) -> String {
        let full = format!("{}-{name}", self.prefix);
        run(&["ip", "netns", "add", &full]);
        self.namespaces.push(full.clone());
        run(&["ip", "-n", &full, "link", "set", "lo", "up"]);
        full
    }

    /// A veth pair `a_if` (in `a`) <-> `b_if` (in `b`), both up.
    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        run(&["ip", "-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b]);
        run(&["ip", "-n", a, "link", "set", a_if, "up"]);
        run(&["ip", "-n", b, "link", "set", b_if, "up"]);
    }

    /// Run `ip -n <ns> <args...>`.
    pub fn ip(&self, ns: &str, args: &str) -> String {
        let mut v = vec!["ip", "-n", ns];
        v.extend(args.split_whitespace());
        run(&v)
    }

    /// Set a sysctl inside a namespace.
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        run(&["ip", "netns", "exec", ns, "sh", "-c", &format!("echo {value} > {path}")]);
    }

    /// A static neighbour entry in `ns`: `addr` is at `mac` on `dev`.
    pub fn neigh(&self, ns: &str, addr: &str, dev: &str, mac: [u8; 6]) {
        let m = mac.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":");
        self.ip(ns, &format!("neigh add {addr} lladdr {m} dev {dev}"));
    }

    /// The kernel-port tests' set-up: namespace `a` holds `va` (198.18.0.1/24, with 198.18.0.2 a static neighbour
    /// at `vb`'s MAC), its veth peer `vb` in namespace `b` is where the port under test opens.
    /// Returns (a, b, MAC of va, MAC of vb).
    pub fn port_peer(&mut self) -> (String, String, [u8; 6], [u8; 6]) {
        let a = self.ns("a");
        let b = self.ns("b");
        self.veth(&a, "va", &b, "vb");
        self.ip(&a, "addr add 198.18.0.1/24 dev va");
        let (va_mac, vb_mac) = (self.mac(&a, "va"), self.mac(&b, "vb"));
        self.neigh(&a, "198.18.0.2", "va", vb_mac);
        (a, b, va_mac, vb_mac)
    }

    /// MAC address of an interface in a namespace.
    pub fn mac(&self, ns: &str, ifname: &str) -> [u8; 6] {
        let s = run(&["ip", "netns", "exec", ns, "cat", &format!("/sys/class/net/{ifname}/address")]);
        let v: Vec<u8> = s.trim().split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
        v.try_into().unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// Run `f` on a thread that has entered namespace `ns`. Sockets it creates stay in that namespace wherever they are
/// used afterwards.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        use std::os::fd::AsRawFd;
        // SAFETY: `file` is an open namespace file; setns only changes this thread's network namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns({path}): {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

/// Receive until `want` UDP datagrams to `dport` arrived or 5 s passed; returns (count, VLAN IDs seen).
pub fn receive<P: Port<Buf = MemBuf>>(port: &mut P, dport: u16, want: usize) -> (usize, Vec<Option<u16>>) {
    let mut got = 0;
    let mut vlans = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut burst = Burst::new();
    while got < want && Instant::now() < deadline {
        if port.rx_burst(&mut burst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        for b in burst.drain(..) {
            let d = b.data();
            if let Ok(l2) = parse_l2(d) {
                if l2.ethertype == ethertype::IPV4 {
                    if let Ok(ip) = Ipv4Packet::new_checked(&d[l2.l3_offset..]) {
                        let p = ip.payload();
                        if ip.protocol() == proto::UDP && p.len() >= 4 && u16::from_be_bytes([p[2], p[3]]) == dport {
                            got += 1;
                            vlans.push(l2.inner_vid());
                        }
                    }
                }
            }
            port.free(b);
        }
    }
    (got, vlans)
}

/// Transmit one UDP frame from 198.18.0.2:5000 (`port_mac`, the port's side) to 198.18.0.1:7777 (`peer_mac`, a
/// kernel socket in namespace `peer_ns`) and check the socket receives its payload and source.
pub fn transmit_to_kernel<P: Port<Buf = MemBuf>>(port: &mut P, peer_ns: &str, peer_mac: [u8; 6], port_mac: [u8; 6]) {
    let rx = in_netns(peer_ns, || UdpSocket::bind("198.18.0.1:7777").unwrap());
    rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 128];
    let seg = Segment {
        src: "198.18.0.2".parse().unwrap(),
        dst: "198.18.0.1".parse().unwrap(),
        proto: proto::UDP,
        sport: 5000,
        dport: 7777,
        tcp_flags: 0,
        payload: b"from the port",
        ttl: 64,
    };
    let n = frame(&mut buf, peer_mac, port_mac, &seg).unwrap();
    let mut out: Burst<MemBuf> = Burst::new();
    out.push(MemBuf::from_slice(&buf[..n]));
    assert_eq!(port.tx_burst(&mut out), 1);
    let mut got = [0u8; 64];
    let (len, from) = rx.recv_from(&mut got).expect("the transmitted frame reached the kernel socket");
    assert_eq!(&got[..len], b"from the port");
    assert_eq!(from, "198.18.0.2:5000".parse().unwrap());
}

/// A BIRD 2 daemon in a namespace, with its control socket; killed and its files removed on drop.
pub struct Bird {
    pidfile: PathBuf,
    sock: PathBuf,
    dir: PathBuf,
}

impl Bird {
    /// Start `bird` in `ns` with configuration `conf`, its files in `dir`.
    pub fn start(ns: &str, dir: &Path, conf: &str) -> Self {
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

    /// `birdc` output of a command.
    pub fn show(&self, what: &str) -> String {
        let out = Command::new("birdc").arg("-s").arg(&self.sock).args(what.split_whitespace()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait (bounded) until `show route all` satisfies `ok`; returns the last output.
    pub fn wait_routes(&self, what: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
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
