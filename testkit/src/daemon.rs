//! edgelbd in a namespace, as the end-to-end tests start it: [`Edgelbd`] says how (binary, namespace, config,
//! extra arguments and environment), [`Edgelbd::spawn`] starts it with its log in a file, [`Edgelbd::spawn_piped`]
//! with its log collected by a thread; [`wait_logged`] waits, bounded, for a line the daemon logs.
//!
//! The binary's path comes from the calling test (`env!("CARGO_BIN_EXE_edgelbd")`): only the crate that builds
//! edgelbd knows it.

use crate::netns::Reaped;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How to start one edgelbd.
#[derive(Debug, Clone)]
pub struct Edgelbd<'a> {
    bin: &'a str,
    ns: &'a str,
    config: &'a Path,
    args: Vec<&'a str>,
    env: Vec<(&'a str, &'a str)>,
}

impl<'a> Edgelbd<'a> {
    /// `bin --config config` inside namespace `ns`.
    pub fn new(bin: &'a str, ns: &'a str, config: &'a Path) -> Self {
        Edgelbd { bin, ns, config, args: Vec::new(), env: Vec::new() }
    }

    /// Extra arguments before `--config` (e.g. `["--drain-timeout", "3"]`).
    #[must_use]
    pub fn args(mut self, args: &[&'a str]) -> Self {
        self.args.extend_from_slice(args);
        self
    }

    /// An environment variable for the daemon (e.g. a test-only fault).
    #[must_use]
    pub fn env(mut self, key: &'a str, value: &'a str) -> Self {
        self.env.push((key, value));
        self
    }

    fn command(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns, self.bin]).args(&self.args).arg("--config").arg(self.config);
        c.envs(self.env.iter().copied()).stdout(Stdio::null());
        c
    }

    /// Start it with its log (stderr) written to `log`; killed and reaped when the result drops.
    ///
    /// # Panics
    /// When the log file cannot be made or the process cannot start (a broken test set-up).
    pub fn spawn(&self, log: &Path) -> Reaped {
        let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        Reaped(self.command().stderr(file).spawn().unwrap_or_else(|e| panic!("{}: {e}", self.bin)))
    }

    /// Start it with its log collected by a thread, which returns the whole log once the daemon exits.
    ///
    /// # Panics
    /// When the process cannot start.
    pub fn spawn_piped(&self) -> (Reaped, JoinHandle<String>) {
        let mut d =
            Reaped(self.command().stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{}: {e}", self.bin)));
        let mut stderr = d.0.stderr.take().expect("stderr is piped");
        let log = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        (d, log)
    }
}

/// The log file the config `cfg` gets next to it (`x.toml` → `x.log`).
pub fn log_beside(cfg: &Path) -> PathBuf {
    cfg.with_extension("log")
}

/// Wait at most `secs` until `log` holds `needle`, polling every 50 ms. Returns the log.
///
/// # Errors
/// The daemon exited first (its status and log), or the time ran out (the log).
pub fn wait_logged(daemon: &mut Reaped, log: &Path, needle: &str, secs: u64) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return Ok(text);
        }
        if let Ok(Some(s)) = daemon.0.try_wait() {
            return Err(format!("edgelbd exited with {s} before logging {needle:?}; log:\n{text}"));
        }
        if Instant::now() >= deadline {
            return Err(format!("edgelbd did not log {needle:?} within {secs} s; log:\n{text}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
