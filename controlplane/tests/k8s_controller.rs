//! The controller's requests, checked with kube's mock-service pattern (`tower-test`): the exact method, path and body
//! of the status patch, the Event, and each Lease step (create when absent, renew when ours, keep off while another
//! holder is fresh, take over once it expired), and how watch events are gathered into bursts.

use chrono::{TimeZone, Utc};
use edgelb_controlplane::k8s::controller::{lease_tick, record_event, write_status, LeaseSettings};
use edgelb_controlplane::k8s::Event;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "default"), handle)
}

/// The next request: method, path, JSON body; answered with `status` and `reply`.
async fn expect(h: &mut Handle, status: StatusCode, reply: Value) -> (Method, String, Value) {
    let (req, send) = h.next_request().await.expect("a request");
    let (m, p) = (req.method().clone(), req.uri().path().to_string());
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    send.send_response(
        Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap(),
    );
    (m, p, body)
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

#[tokio::test]
async fn status_is_a_merge_patch_on_the_status_subresource() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        expect(
            &mut h,
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"}}),
        )
        .await
    });
    write_status(&client, "shop", "web", &["198.19.1.1".parse().unwrap(), "2001:db8:100::1".parse().unwrap()])
        .await
        .unwrap();
    let (m, p, body) = server.await.unwrap();
    assert_eq!((m, p.as_str()), (Method::PATCH, "/api/v1/namespaces/shop/services/web/status"));
    assert_eq!(
        body,
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.19.1.1", "ipMode": "VIP"}, {"ip": "2001:db8:100::1", "ipMode": "VIP"}]}}})
    );
}

#[tokio::test]
async fn events_name_the_service_reason_and_message() {
    let (client, mut h) = mock();
    let svc: k8s_openapi::api::core::v1::Service =
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "shop", "uid": "u-1"}})).unwrap();
    let e = Event {
        service: "shop/web".into(),
        kind: "Warning",
        reason: "PoolExhausted",
        message: "no free IPv4 address in small".into(),
    };
    let server = tokio::spawn(async move {
        expect(&mut h, StatusCode::CREATED, json!({"metadata": {"name": "x"}, "involvedObject": {}})).await
    });
    record_event(&client, &svc, &e, Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap()).await.unwrap();
    let (m, p, body) = server.await.unwrap();
    assert_eq!((m, p.as_str()), (Method::POST, "/api/v1/namespaces/shop/events"));
    assert_eq!(
        body["involvedObject"],
        json!({"kind": "Service", "apiVersion": "v1", "namespace": "shop", "name": "web", "uid": "u-1"})
    );
    assert_eq!((body["reason"].as_str(), body["type"].as_str()), (Some("PoolExhausted"), Some("Warning")));
    assert_eq!(body["message"], "no free IPv4 address in small");
    assert_eq!(body["firstTimestamp"], "2026-11-29T10:00:00Z");
}

fn lease(holder: &str, renew: &str, rv: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "edgelb", "namespace": "kube-system", "resourceVersion": rv},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew,
                    "acquireTime": "2026-11-29T09:00:00.000000Z", "leaseTransitions": 2}})
}

#[tokio::test]
async fn leader_election_steps() {
    let l = LeaseSettings {
        namespace: "kube-system".into(),
        name: "edgelb".into(),
        identity: "node-a".into(),
        duration_s: 15,
    };
    let now = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 30).unwrap();
    let path = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/edgelb";

    // Absent: GET 404, then create with us as holder.
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let a = expect(&mut h, StatusCode::NOT_FOUND, not_found()).await;
        let b = expect(&mut h, StatusCode::CREATED, lease("node-a", "2026-11-29T10:00:30.000000Z", "1")).await;
        (a, b)
    });
    assert!(lease_tick(&client, &l, now).await.unwrap());
    let ((m1, p1, _), (m2, p2, body)) = server.await.unwrap();
    assert_eq!((m1, p1.as_str()), (Method::GET, path));
    assert_eq!((m2, p2.as_str()), (Method::POST, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"));
    assert_eq!(body["spec"]["holderIdentity"], "node-a");
    assert_eq!(body["spec"]["renewTime"], "2026-11-29T10:00:30.000000Z");

    // Ours: renewed with a replace carrying the resourceVersion (optimistic concurrency).
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let _ = expect(&mut h, StatusCode::OK, lease("node-a", "2026-11-29T10:00:20.000000Z", "7")).await;
        expect(&mut h, StatusCode::OK, lease("node-a", "2026-11-29T10:00:30.000000Z", "8")).await
    });
    assert!(lease_tick(&client, &l, now).await.unwrap());
    let (m, p, body) = server.await.unwrap();
    assert_eq!((m, p.as_str()), (Method::PUT, path));
    assert_eq!(
        (body["metadata"]["resourceVersion"].as_str(), body["spec"]["leaseTransitions"].as_i64()),
        (Some("7"), Some(2))
    );

    // Another holder renewed 10 s ago (duration 15 s): we keep off and write nothing.
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let _ = expect(&mut h, StatusCode::OK, lease("node-b", "2026-11-29T10:00:20.000000Z", "9")).await;
        h
    });
    assert!(!lease_tick(&client, &l, now).await.unwrap());
    let mut h = server.await.unwrap();
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(100), h.next_request()).await.is_err(),
        "no write while the holder is fresh"
    );

    // Expired (renewed 30 s ago): taken over, transitions + 1; a lost race (409) is not leadership.
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let _ = expect(&mut h, StatusCode::OK, lease("node-b", "2026-11-29T10:00:00.000000Z", "9")).await;
        expect(&mut h, StatusCode::OK, lease("node-a", "2026-11-29T10:00:30.000000Z", "10")).await
    });
    assert!(lease_tick(&client, &l, now).await.unwrap());
    let (_, _, body) = server.await.unwrap();
    assert_eq!(
        (body["spec"]["holderIdentity"].as_str(), body["spec"]["leaseTransitions"].as_i64()),
        (Some("node-a"), Some(3))
    );
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let _ = expect(&mut h, StatusCode::OK, lease("node-b", "2026-11-29T10:00:00.000000Z", "9")).await;
        let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"});
        expect(&mut h, StatusCode::CONFLICT, conflict).await
    });
    assert!(!lease_tick(&client, &l, now).await.unwrap());
    server.await.unwrap();
}

/// The watch the controller runs: a LIST, then a WATCH from the list's resourceVersion with bookmarks, whose events
/// reach the stream.
#[tokio::test]
async fn services_are_listed_then_watched_from_the_list_version() {
    use futures::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    let (client, mut h) = mock();
    let api: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::all(client);
    let server = tokio::spawn(async move {
        let (req, send) = h.next_request().await.expect("list");
        let list = (req.method().clone(), req.uri().path().to_string(), req.uri().query().unwrap_or("").to_string());
        let body =
            json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "41"}, "items": []});
        send.send_response(Response::builder().body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap());
        let (req, send) = h.next_request().await.expect("watch");
        let watch = (req.method().clone(), req.uri().path().to_string(), req.uri().query().unwrap_or("").to_string());
        let ev = json!({"type": "ADDED", "object": {"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "42"}}});
        send.send_response(Response::builder().body(Body::from(format!("{ev}\n").into_bytes())).unwrap());
        (list, watch)
    });
    let mut s = std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
    let first =
        tokio::time::timeout(std::time::Duration::from_secs(5), s.next()).await.expect("an object").unwrap().unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("web"));
    let ((m1, p1, q1), (m2, p2, q2)) = server.await.unwrap();
    assert_eq!((m1, p1.as_str()), (Method::GET, "/api/v1/services"));
    assert!(!q1.contains("watch"), "{q1}");
    assert_eq!((m2, p2.as_str()), (Method::GET, "/api/v1/services"));
    assert!(
        q2.contains("watch=true") && q2.contains("resourceVersion=41") && q2.contains("allowWatchBookmarks=true"),
        "{q2}"
    );
}

#[tokio::test]
async fn a_burst_of_watch_events_is_taken_whole_and_a_steady_stream_is_cut() {
    use edgelb_controlplane::k8s::controller::take_burst;
    use std::time::{Duration, Instant};
    let (quiet, burst) = (Duration::from_millis(20), Duration::from_millis(250));
    // 1 000 events queued at once: all are taken in one burst, well before the burst's limit.
    let (tx, mut rx) = futures::channel::mpsc::unbounded::<()>();
    for _ in 0..1000 {
        tx.unbounded_send(()).unwrap();
    }
    let t = Instant::now();
    assert!(take_burst(&mut rx, quiet, burst).await);
    assert!(t.elapsed() < burst, "a queued burst took {:?}", t.elapsed());
    assert!(rx.try_recv().is_err(), "events were left for later syncs");
    // An event every 5 ms without end: the burst is cut at its limit.
    let feeder = tokio::spawn(async move {
        while tx.unbounded_send(()).is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let t = Instant::now();
    assert!(take_burst(&mut rx, quiet, burst).await);
    let took = t.elapsed();
    assert!(took >= burst && took < burst * 4, "a steady stream was cut after {took:?}");
    // The stream ends: false.
    feeder.abort();
    let _ = feeder.await;
    assert!(!take_burst(&mut rx, quiet, burst).await);
}
