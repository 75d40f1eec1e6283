//! Real routing daemons as peers in a namespace, each killed and its files removed on drop: BIRD 2 (Debian `bird2`)
//! driven through its control socket, FRR's `bgpd` (Debian `frr`) through `vtysh`, GoBGP (Debian `gobgpd`) through
//! its gRPC API and the `gobgp` client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A BIRD 2 daemon in a namespace, with its control socket; killed and its files removed on drop.
#[derive(Debug)]
pub struct Bird {
    /// Read once BIRD is up: a test that removes its directory first must not leave BIRD running.
    pid: Option<String>,
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
        let deadline = Instant::now() + Duration::from_secs(2);
        let pid = loop {
            match std::fs::read_to_string(&pidfile) {
                Ok(p) if !p.trim().is_empty() => break Some(p.trim().to_string()),
                _ if Instant::now() > deadline => break None,
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        Bird { pid, pidfile, sock, dir: dir.to_path_buf() }
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
        let pid = self.pid.clone().or_else(|| std::fs::read_to_string(&self.pidfile).ok());
        if let Some(pid) = pid {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// FRR's `bgpd` alone (no zebra, no kernel routes) in a namespace, its vty socket and files in a directory.
#[derive(Debug)]
pub struct Frr {
    child: Child,
    dir: PathBuf,
}

impl Frr {
    /// Start `bgpd` in `ns` with configuration `conf` (bgpd.conf syntax), its files in `dir`.
    ///
    /// # Panics
    /// When `bgpd` cannot start (FRR not installed).
    pub fn start(ns: &str, dir: &Path, conf: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let c = dir.join("bgpd.conf");
        std::fs::write(&c, conf).unwrap();
        // The files readable to FRR's own user, which bgpd switches to.
        let _ = Command::new("chmod").args(["-R", "a+rwx"]).arg(dir).status();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "/usr/lib/frr/bgpd", "-Z", "-n", "-S", "-f"])
            .arg(&c)
            .arg("-i")
            .arg(dir.join("bgpd.pid"))
            .arg("--vty_socket")
            .arg(dir)
            .arg("-z")
            .arg(dir.join("zserv.api"))
            .args(["-P", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("FRR bgpd (Debian frr)");
        Frr { child, dir: dir.to_path_buf() }
    }

    /// `vtysh -c cmd` output.
    pub fn vtysh(&self, cmd: &str) -> String {
        let o = Command::new("vtysh").arg("--vty_socket").arg(&self.dir).args(["-c", cmd]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        // bgpd's own scratch directory.
        let _ = std::fs::remove_dir_all("/var/tmp/frr");
    }
}

/// `gobgpd` in a namespace, its gRPC API on loopback inside the namespace.
#[derive(Debug)]
pub struct Gobgp {
    child: Child,
    ns: String,
    api: String,
    dir: PathBuf,
}

impl Gobgp {
    /// Start `gobgpd` in `ns` with configuration `conf` (its TOML), its API on `127.0.0.1:api_port`.
    ///
    /// # Panics
    /// When `gobgpd` cannot start (not installed).
    pub fn start(ns: &str, dir: &Path, conf: &str, api_port: u16) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let c = dir.join("gobgpd.toml");
        std::fs::write(&c, conf).unwrap();
        let api = format!("127.0.0.1:{api_port}");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "gobgpd", "-f"])
            .arg(&c)
            .args(["--api-hosts", &api])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gobgpd (Debian gobgpd)");
        Gobgp { child, ns: ns.to_string(), api: api_port.to_string(), dir: dir.to_path_buf() }
    }

    /// The global RIB of one family (`ipv4`, `ipv6`) as `gobgp global rib -j` prints it.
    pub fn rib(&self, family: &str) -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.ns, "gobgp", "-u", "127.0.0.1", "-p", &self.api])
            .args(["global", "rib", "-a", family, "-j"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Gobgp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
