//! Network namespaces, veth pairs and the processes and files that live in them, all removed when the [`Lab`] drops
//! (also when a test fails or the lab command is interrupted), unless [`Lab::keep`] was called. Addresses inside them
//! come from 198.18.0.0/15 and 2001:db8::/32 only. The tests and `edgelb lab` use this one `Lab`.
//!
//! Each operation has a fallible form (`try_*`, for the lab command, which reports errors) and a panicking one (for
//! tests, where a failed set-up is a failed test).
#![allow(unsafe_code)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Run a command; its stdout, or an error naming it with its stderr.
pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this process runs as root (namespaces need CAP_SYS_ADMIN).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fail with a clear message unless running as root (CI runs as root).
pub fn require_root() {
    assert!(is_root(), "this test builds network namespaces and needs root (scripts/test.sh runs as root in CI)");
}

/// A child process (a daemon, a server, a peer) killed and reaped when the test ends, also on failure.
#[derive(Debug)]
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stop a daemon at once, as an operator's second Ctrl-C does (SIGINT twice, 100 ms apart: the first starts edgelbd's
/// drain, the second ends it), and wait for it at most `within`; `None` if it is still running then (it is killed
/// when its [`Reaped`] drops).
pub fn interrupt_twice(daemon: &mut Reaped, within: Duration) -> Option<ExitStatus> {
    for i in 0..2 {
        if i == 1 {
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: kill(2) on our child's pid; it is not reaped before the wait below, so the pid is still ours.
        unsafe { libc::kill(daemon.0.id() as i32, libc::SIGINT) };
    }
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(s)) = daemon.0.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Namespaces, processes and files of one test or lab.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    files: Vec<PathBuf>,
    keep: bool,
}

impl Lab {
    /// A lab whose namespace names start with `elb-<tag>-<pid>`.
    pub fn new(tag: &str) -> Self {
        Self {
            prefix: format!("elb-{tag}-{}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
            files: Vec::new(),
            keep: false,
        }
    }

    /// The prefix of its namespace names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespaces made so far, in order.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Create namespace `<prefix>-<name>` with loopback up; returns its full name.
    pub fn try_ns(&mut self, name: &str) -> Result<String, String> {
        let full = format!("{}-{name}", self.prefix);
        run(&["ip", "netns", "add", &full])?;
        self.namespaces.push(full.clone());
        run(&["ip", "-n", &full, "link", "set", "lo", "up"])?;
        Ok(full)
    }

    /// [`Lab::try_ns`], panicking on failure.
    pub fn ns(&mut self, name: &str) -> String {
        self.try_ns(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A veth pair `a_if` (in `a`) <-> `b_if` (in `b`), both up.
    pub fn try_veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> Result<(), String> {
        run(&["ip", "-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b])?;
        run(&["ip", "-n", a, "link", "set", a_if, "up"])?;
        run(&["ip", "-n", b, "link", "set", b_if, "up"])?;
        Ok(())
    }

    /// [`Lab::try_veth`], panicking on failure.
    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        self.try_veth(a, a_if, b, b_if).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Run `ip -n <ns> <args...>`.
    pub fn try_ip(&self, ns: &str, args: &str) -> Result<String, String> {
        let mut v = vec!["ip", "-n", ns];
        v.extend(args.split_whitespace());
        run(&v)
    }

    /// [`Lab::try_ip`], panicking on failure.
    pub fn ip(&self, ns: &str, args: &str) -> String {
        self.try_ip(ns, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Set a sysctl inside a namespace.
    pub fn try_sysctl(&self, ns: &str, key: &str, value: &str) -> Result<(), String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        run(&["ip", "netns", "exec", ns, "sh", "-c", &format!("echo {value} > {path}")]).map(|_| ())
    }

    /// [`Lab::try_sysctl`], panicking on failure.
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) {
        self.try_sysctl(ns, key, value).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A static neighbour entry in `ns`: `addr` is at `mac` on `dev`.
    pub fn neigh(&self, ns: &str, addr: &str, dev: &str, mac: [u8; 6]) {
        self.ip(ns, &format!("neigh add {addr} lladdr {} dev {dev}", mac_text(mac)));
    }

    /// MAC address of an interface in a namespace.
    pub fn try_mac(&self, ns: &str, ifname: &str) -> Result<[u8; 6], String> {
        let s = run(&["ip", "netns", "exec", ns, "cat", &format!("/sys/class/net/{ifname}/address")])?;
        let v: Vec<u8> = s.trim().split(':').filter_map(|x| u8::from_str_radix(x, 16).ok()).collect();
        v.try_into().map_err(|_| format!("{ns}/{ifname}: unreadable MAC {s:?}"))
    }

    /// [`Lab::try_mac`], panicking on failure.
    pub fn mac(&self, ns: &str, ifname: &str) -> [u8; 6] {
        self.try_mac(ns, ifname).unwrap_or_else(|e| panic!("{e}"))
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

    /// A process the lab owns: killed and reaped when the lab goes. Returns its pid.
    pub fn adopt(&mut self, child: Child) -> u32 {
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// The owned process with this pid, to wait for or signal.
    pub fn child(&mut self, pid: u32) -> Option<&mut Child> {
        self.children.iter_mut().find(|c| c.id() == pid)
    }

    /// A file or directory the lab owns: removed (a directory with all it holds) when the lab goes.
    pub fn own_file(&mut self, path: PathBuf) {
        self.files.push(path);
    }

    /// Leave everything in place when the lab goes (`edgelb lab --keep`; `edgelb lab-remove PREFIX` removes it).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        for f in &self.files {
            if f.is_dir() {
                let _ = std::fs::remove_dir_all(f);
            } else {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(m: [u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
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
