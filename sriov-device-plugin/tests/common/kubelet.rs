//! A fake kubelet: the `Registration` service on `kubelet.sock` in a directory, recording what registers.

use sriov_device_plugin::v1beta1 as api;
use sriov_device_plugin::v1beta1::registration_server::{Registration, RegistrationServer};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What registered, in order.
#[derive(Clone, Default)]
pub struct FakeKubelet {
    /// The registrations.
    pub registered: Arc<Mutex<Vec<api::RegisterRequest>>>,
}

#[tonic::async_trait]
impl Registration for FakeKubelet {
    async fn register(
        &self,
        r: tonic::Request<api::RegisterRequest>,
    ) -> Result<tonic::Response<api::Empty>, tonic::Status> {
        let r = r.into_inner();
        if r.version != "v1beta1" {
            return Err(tonic::Status::invalid_argument("unsupported version"));
        }
        self.registered.lock().unwrap().push(r);
        Ok(tonic::Response::new(api::Empty {}))
    }
}

/// Serve `k` on `dir/kubelet.sock` (replacing a stale socket) until the task is aborted.
pub fn start_kubelet(dir: &Path, k: FakeKubelet) -> tokio::task::JoinHandle<()> {
    let path = dir.join("kubelet.sock");
    let _ = std::fs::remove_file(&path);
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(k))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(l))
            .await;
    })
}
