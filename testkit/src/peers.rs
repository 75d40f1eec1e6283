//! Real routing daemons as peers in a namespace: BIRD 2 (Debian `bird2`), driven through its control socket.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A BIRD 2 daemon in a namespace, with its control socket; killed and its files removed on drop.
#[derive(Debug)]
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
