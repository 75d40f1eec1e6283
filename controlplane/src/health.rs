//! Backend health checks: TCP connect or HTTP GET per backend of every service that asks for them, at the service's
//! interval and timeout, with rise/fall counts. A backend that fails `fall` probes in a row leaves the Maglev table
//! (its tracked flows follow the service's policy: rescheduled, or kept while it drains); `rise` good probes in a row
//! bring it back. Every transition goes through the [`Store`] (a new snapshot, an event) and is logged.
//!
//! Probes go out through the host's own network stack (the management side), not through the dataplane.

use crate::store::{key_of, show_key, BackendKey, Store};
use edgelb_dataplane::model::{BackendState, HealthKind, HealthSpec};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// One probe: `Ok(())` when the backend answered as expected, else why not.
pub async fn probe(kind: &HealthKind, to: SocketAddr, timeout: Duration) -> Result<(), String> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(to).await.map_err(|e| format!("connect: {e}"))?;
        let HealthKind::Http { path, expect_status } = kind else { return Ok(()) };
        let host = match to {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        let req =
            format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: edgelb-health\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        let mut buf = [0u8; 512];
        let mut n = 0;
        while n < buf.len() {
            let got = s.read(&mut buf[n..]).await.map_err(|e| format!("read: {e}"))?;
            if got == 0 || buf[..n + got].windows(2).any(|w| w == b"\r\n") {
                n += got;
                break;
            }
            n += got;
        }
        let line = String::from_utf8_lossy(&buf[..n]);
        let line = line.lines().next().unwrap_or("");
        let status: Option<u16> = line
            .strip_prefix("HTTP/1.")
            .and_then(|r| r.get(2..))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|c| c.parse().ok());
        match status {
            Some(c) if c == *expect_status => Ok(()),
            Some(c) => Err(format!("HTTP status {c}, expected {expect_status}")),
            None => Err(format!("not an HTTP answer: {line:?}")),
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// Probe one backend forever, reporting transitions to the store.
async fn check(store: Arc<Store>, b: BackendKey, spec: HealthSpec, to: SocketAddr) {
    let mut healthy = true;
    let (mut good, mut bad) = (0u32, 0u32);
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(spec.interval_ms)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let r = probe(&spec.kind, to, Duration::from_millis(u64::from(spec.timeout_ms))).await;
        let reason = match &r {
            Ok(()) => {
                good += 1;
                bad = 0;
                format!("{good} good probes in a row")
            }
            Err(e) => {
                bad += 1;
                good = 0;
                format!("{e} ({bad} failed probes in a row)")
            }
        };
        let flip = (healthy && bad >= spec.fall) || (!healthy && good >= spec.rise);
        if !flip {
            continue;
        }
        healthy = !healthy;
        let what = format!("backend {}:{} of {}", b.1, b.2, show_key(&b.0));
        match store.set_health(b, healthy, spec.keep_flows, &reason) {
            Ok(generation) if healthy => tracing::info!(generation, "{what} is healthy again: {reason}"),
            Ok(generation) => tracing::warn!(generation, "{what} failed its health check: {reason}"),
            Err(e) => tracing::error!("{what}: health change not applied: {e}"),
        }
    }
}

/// Keep one checking task per checked backend, following the model as it changes; runs until dropped/aborted.
pub async fn run(store: Arc<Store>) {
    let mut tasks: HashMap<BackendKey, (HealthSpec, SocketAddr, JoinHandle<()>)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let (_, services) = store.services();
        let mut want: HashMap<BackendKey, (HealthSpec, SocketAddr)> = HashMap::new();
        for s in &services {
            let Some(h) = &s.health else { continue };
            for b in &s.backends {
                // An administratively down backend is not probed; a draining one still is.
                if b.state == BackendState::Down {
                    continue;
                }
                let port = if h.port != 0 {
                    h.port
                } else if b.port != 0 {
                    b.port
                } else {
                    s.port.unwrap_or(0)
                };
                if port == 0 {
                    continue;
                }
                want.insert((key_of(s), b.addr, b.port), (h.clone(), SocketAddr::new(b.addr, port)));
            }
        }
        tasks.retain(|k, (spec, to, task)| {
            let keep = want.get(k).is_some_and(|(s, t)| s == spec && t == to);
            if !keep {
                task.abort();
            }
            keep
        });
        if let Err(e) = store.retain_health(|k| tasks.contains_key(k) || want.contains_key(k)) {
            tracing::error!("health state not pruned: {e}");
        }
        for (k, (spec, to)) in want {
            if tasks.contains_key(&k) {
                continue;
            }
            // A restarted check starts from healthy: forget a failure recorded under an older spec.
            if store.unhealthy().contains(&k) {
                let _ = store.set_health(k, true, spec.keep_flows, "health check changed");
            }
            let task = tokio::spawn(check(store.clone(), k, spec.clone(), to));
            tasks.insert(k, (spec, to, task));
        }
    }
}
