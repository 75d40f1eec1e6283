//! The in-repo Kubernetes API server emulator (`tests/support/apiserver.py`) as the end-to-end tests run it: started in
//! a namespace, waited for until it says `ready`, killed when dropped; and a kubeconfig that points at it.

use crate::netns::Reaped;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Start the emulator `script` in namespace `ns` on `port`, listening on `host` (loopback when `None`).
///
/// # Panics
/// When it cannot start or does not say `ready` (a broken test set-up).
pub fn emulator(script: &str, ns: &str, port: u16, host: Option<&str>) -> Reaped {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "python3", script, &port.to_string()]);
    if let Some(h) = host {
        c.args(["--host", h]);
    }
    let mut emu = Reaped(c.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("python3 and the emulator"));
    let mut ready = String::new();
    BufReader::new(emu.0.stdout.take().expect("stdout is piped")).read_line(&mut ready).expect("the emulator's output");
    assert_eq!(ready.trim(), "ready", "the emulator did not start");
    emu
}

/// A kubeconfig for `server` (e.g. `http://127.0.0.1:18081`), namespace `default`, no credentials.
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: emu\n  cluster:\n    server: {server}\n\
         contexts:\n- name: emu\n  context:\n    cluster: emu\n    user: u\n    namespace: default\n\
         current-context: emu\nusers:\n- name: u\n  user: {{}}\n"
    )
}
