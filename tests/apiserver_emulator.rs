//! The API server emulator itself (`tests/support/apiserver.py`): watch semantics the controller relies on and
//! kube-runtime only meets now and then — `410 Gone` for a resourceVersion older than its history, BOOKMARK events,
//! events after the version asked for, and optimistic concurrency on replace.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Emu(Child);
impl Drop for Emu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(args: &[&str]) -> (String, String) {
    let o = Command::new("curl").args(["-s", "--max-time", "6", "-w", "\n%{http_code}"]).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_string(), code.to_string())
}

#[test]
fn gone_bookmarks_and_conflicts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let mut e = Emu(Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/apiserver.py"))
        .args([port.as_str(), "--history", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let mut ready = String::new();
    BufReader::new(e.0.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let base = format!("http://127.0.0.1:{port}/api/v1/namespaces/default/services");
    let mut rvs = Vec::new();
    for i in 0..5 {
        let body = format!(
            r#"{{"metadata": {{"name": "s{i}"}}, "spec": {{"type": "LoadBalancer", "ports": [{{"port": 80}}]}}}}"#
        );
        let (out, code) = curl(&["-X", "POST", "-H", "Content-Type: application/json", "-d", &body, &base]);
        assert_eq!(code, "201", "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        rvs.push(v["metadata"]["resourceVersion"].as_str().unwrap().to_string());
    }
    // Older than the three events kept: 410 Gone with an Expired Status.
    let (out, code) = curl(&[&format!("{base}?watch=1&resourceVersion={}", rvs[0])]);
    assert_eq!(code, "410", "{out}");
    assert!(out.contains("\"reason\": \"Expired\""), "{out}");
    // From a recent version: only what came after it, then bookmarks while idle, until the timeout ends the stream.
    let (out, code) =
        curl(&[&format!("{base}?watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds=3", rvs[3])]);
    assert_eq!(code, "200");
    let events: Vec<serde_json::Value> =
        out.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "s4", "only events after the version asked for");
    assert!(events.iter().any(|e| e["type"] == "BOOKMARK"), "{out}");
    // Replace with a stale resourceVersion: 409 Conflict.
    let stale = format!(r#"{{"metadata": {{"name": "s1", "resourceVersion": "{}"}}, "spec": {{}}}}"#, rvs[0]);
    let (out, code) = curl(&["-X", "PUT", "-H", "Content-Type: application/json", "-d", &stale, &format!("{base}/s1")]);
    assert_eq!(code, "409", "{out}");
}
