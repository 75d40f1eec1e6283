//! mTLS on the API, certificates made here with rcgen: over TLS a client without a certificate may read but not
//! change the configuration (UNAUTHENTICATED); one with a certificate from another CA is refused at the handshake;
//! one with a certificate signed by the configured client CA may apply.

use edgelb_api::v1;
use edgelb_api::v1::load_balancer_client::LoadBalancerClient;
use edgelb_controlplane::api::server::serve_ready;
use edgelb_controlplane::config::{Listen, TlsFiles};
use edgelb_controlplane::store::Store;
use edgelb_dataplane::model::{InterfaceSpec, Model};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::path::Path;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    Ca { cert: p.self_signed(&key).unwrap(), key }
}

/// A leaf certificate signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca, name: &str, client: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages =
        vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn client(
    port: u16,
    server_ca: &str,
    id: Option<&(String, String)>,
) -> Result<LoadBalancerClient<Channel>, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(server_ca)).domain_name("localhost");
    if let Some((c, k)) = id {
        tls = tls.identity(Identity::from_pem(c, k));
    }
    let ch = Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(LoadBalancerClient::new(ch))
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn batch() -> v1::ApplyServicesRequest {
    v1::ApplyServicesRequest {
        upserts: vec![v1::Service {
            vip: "198.19.0.1".into(),
            protocol: v1::Protocol::Tcp as i32,
            port: 80,
            mode: v1::Mode::Nat as i32,
            backends: vec![v1::Backend { address: "198.18.0.10".into(), port: 8080, weight: 1, state: 0 }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clients_with_a_certificate_from_the_client_ca_may_change_the_config() {
    let dir = std::env::temp_dir().join(format!("edgelb-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let server_ca = ca("edgelb test server CA");
    let client_ca = ca("edgelb test client CA");
    let other_ca = ca("someone else's CA");
    let (scert, skey) = leaf(&server_ca, "localhost", false);
    let good = leaf(&client_ca, "operator", true);
    let foreign = leaf(&other_ca, "intruder", true);
    let tls = TlsFiles {
        cert: write(&dir, "server.pem", &scert),
        key: write(&dir, "server.key", &skey),
        client_ca: Some(write(&dir, "client-ca.pem", &client_ca.cert.pem())),
    };
    let model = Model {
        interfaces: vec![InterfaceSpec {
            port: 0,
            mac: [2, 0, 0, 0, 0, 1],
            addrs: vec![("198.18.0.1".parse().unwrap(), 24)],
            mtu: 1500,
        }],
        ..Model::default()
    };
    let store = Store::new(model).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_ready(
        store.clone(),
        Listen::Tcp(([127, 0, 0, 1], port).into()),
        Some(tls),
        async move {
            let _ = stop_rx.await;
        },
        move || {
            let _ = ready_tx.send(());
        },
    ));
    ready_rx.await.expect("API started");
    let server_pem = server_ca.cert.pem();

    // No client certificate: reading works, changing is refused.
    let mut anon = client(port, &server_pem, None).await.unwrap();
    let list = anon.list_services(v1::ListServicesRequest {}).await.unwrap().into_inner();
    assert!(list.services.is_empty());
    let e = anon.apply_services(batch()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = anon
        .add_backend(v1::BackendRequest {
            service: Some(v1::ServiceKey { vip: "198.19.0.1".into(), protocol: 1, port: 80, all_ports: false }),
            backend: Some(v1::Backend { address: "198.18.0.11".into(), port: 8080, weight: 1, state: 0 }),
            expected_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // A certificate from another CA: the TLS handshake fails (the connection or the first call).
    match client(port, &server_pem, Some(&foreign)).await {
        Err(_) => {}
        Ok(mut c) => {
            assert!(c.list_services(v1::ListServicesRequest {}).await.is_err(), "a foreign certificate was accepted");
            assert!(c.apply_services(batch()).await.is_err(), "a foreign certificate changed the config");
        }
    }
    assert_eq!(store.services().1.len(), 0);

    // The operator's certificate: the change is applied.
    let mut op = client(port, &server_pem, Some(&good)).await.unwrap();
    let r = op.apply_services(batch()).await.unwrap().into_inner();
    assert!(r.applied);
    assert_eq!(store.services().1.len(), 1);

    // And plain-text clients get nowhere.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await;
    if let Ok(ch) = plain {
        assert!(LoadBalancerClient::new(ch).list_services(v1::ListServicesRequest {}).await.is_err());
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
}
