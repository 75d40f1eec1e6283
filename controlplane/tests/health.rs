//! Health checks against real servers on loopback, stopped and restarted: Python's `http.server` (HTTP GET with an
//! expected status) and a plain TCP listener (connect). Each backend leaves the snapshot's Maglev table when it fails
//! `fall` probes and comes back after `rise`, with an event for every transition.

use edgelb_controlplane::store::{Store, StoreEvent};
use edgelb_dataplane::model::{
    BackendSpec, BackendState, HealthKind, HealthSpec, InterfaceSpec, Mode, Model, Protocol, ServiceSpec,
};
use std::net::{IpAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::Receiver;

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_server(port: u16, dir: &std::path::Path) -> Server {
    let s = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    Server(s)
}

/// Wait (bounded) until something accepts on the port: the Python server takes a moment to start.
fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn model(http_port: u16, tcp_port: u16) -> Model {
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let be = |port| BackendSpec { addr: lo, port, weight: 1, state: BackendState::Active };
    let mut web =
        ServiceSpec::new("198.19.0.1".parse().unwrap(), Protocol::Tcp, Some(80), Mode::Nat, vec![be(http_port)]);
    web.health = Some(HealthSpec {
        kind: HealthKind::Http { path: "/healthz".into(), expect_status: 200 },
        port: 0,
        interval_ms: 100,
        timeout_ms: 100,
        rise: 2,
        fall: 2,
        keep_flows: false,
    });
    let mut db =
        ServiceSpec::new("198.19.0.2".parse().unwrap(), Protocol::Tcp, Some(5432), Mode::Nat, vec![be(tcp_port)]);
    db.health = Some(HealthSpec {
        kind: HealthKind::Tcp,
        port: 0,
        interval_ms: 100,
        timeout_ms: 100,
        rise: 2,
        fall: 2,
        keep_flows: true,
    });
    Model {
        interfaces: vec![InterfaceSpec {
            port: 0,
            mac: [2, 0, 0, 0, 0, 1],
            addrs: vec![("198.18.0.1".parse().unwrap(), 24)],
            mtu: 1500,
        }],
        services: vec![web, db],
        ..Model::default()
    }
}

/// The next health event within `secs`.
async fn next_health(rx: &mut Receiver<StoreEvent>, secs: u64) -> (u16, bool, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(StoreEvent::BackendHealth { backend, healthy, reason, .. })) => return (backend.1, healthy, reason),
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => panic!("event channel: {e}"),
            Err(_) => panic!("no health event within {secs} s"),
        }
    }
}

fn state_of(store: &Store, port: u16) -> BackendState {
    let cfg = store.snapshot();
    cfg.backends.iter().flatten().find(|b| b.port == port).map(|b| b.state).expect("backend in the snapshot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_leave_and_return_with_their_servers() {
    let dir = std::env::temp_dir().join(format!("edgelb-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("healthz"), "ok\n").unwrap();
    let (http_port, tcp_port) = (free_port(), free_port());
    let mut web = Some(http_server(http_port, &dir));
    let mut db = Some(TcpListener::bind(("127.0.0.1", tcp_port)).unwrap());
    wait_listening(http_port);
    let store: Arc<Store> = Store::new(model(http_port, tcp_port)).unwrap();
    let mut events = store.subscribe();
    let checker = tokio::spawn(edgelb_controlplane::health::run(store.clone()));
    // Both healthy from the start: a second of probes brings no event.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    if let Ok(e) = events.try_recv() {
        panic!("no transition while both servers answer, got {e:?}");
    }
    assert_eq!(state_of(&store, http_port), BackendState::Active);

    // Stop the HTTP server: the backend fails, is taken down (its service reschedules flows).
    drop(web.take());
    let (port, healthy, reason) = next_health(&mut events, 5).await;
    assert_eq!((port, healthy), (http_port, false), "{reason}");
    assert!(reason.contains("connect") || reason.contains("no answer"), "{reason}");
    assert_eq!(state_of(&store, http_port), BackendState::Down);
    // Start it again: it comes back after two good probes.
    web = Some(http_server(http_port, &dir));
    let (port, healthy, _) = next_health(&mut events, 10).await;
    assert_eq!((port, healthy), (http_port, true));
    assert_eq!(state_of(&store, http_port), BackendState::Active);
    // A wrong status is a failure too: the path now answers 404.
    std::fs::remove_file(dir.join("healthz")).unwrap();
    let (port, healthy, reason) = next_health(&mut events, 5).await;
    assert_eq!((port, healthy), (http_port, false));
    assert!(reason.contains("HTTP status 404"), "{reason}");
    std::fs::write(dir.join("healthz"), "ok\n").unwrap();
    let (port, healthy, _) = next_health(&mut events, 5).await;
    assert_eq!((port, healthy), (http_port, true));

    // The TCP backend: its service keeps flows, so a failed backend drains rather than goes down.
    drop(db.take());
    let (port, healthy, _) = next_health(&mut events, 5).await;
    assert_eq!((port, healthy), (tcp_port, false));
    assert_eq!(state_of(&store, tcp_port), BackendState::Draining);
    db = Some(TcpListener::bind(("127.0.0.1", tcp_port)).unwrap());
    let (port, healthy, _) = next_health(&mut events, 5).await;
    assert_eq!((port, healthy), (tcp_port, true));
    assert_eq!(state_of(&store, tcp_port), BackendState::Active);
    assert!(store.unhealthy().is_empty());
    checker.abort();
    drop((web, db));
    let _ = std::fs::remove_dir_all(&dir);
}
