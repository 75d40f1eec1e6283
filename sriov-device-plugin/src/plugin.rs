//! The device plugins (one per resource, each on its own unix socket in the kubelet's plugin directory) and the
//! manager that keeps them true: registration with the kubelet, health from sysfs every second (a change reaches
//! `ListAndWatch` at once), re-registration when the kubelet restarts (it wipes the directory, our socket goes), and
//! configuration reloads without a restart (resources appear, disappear or change membership; a VF already allocated
//! stays with the resource that handed it out and is never offered by another).
// tonic's signatures return `Status` (176 bytes) by value.
#![allow(clippy::result_large_err)]

use crate::config::{full_name, Config, Resource};
use crate::sysfs::{self, Vf};
use crate::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use crate::v1beta1::registration_client::RegistrationClient;
use crate::v1beta1::{self as api};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tracing::{error, info, warn};

/// The API version we speak.
pub const API_VERSION: &str = "v1beta1";

/// One resource's current pool, as its plugin serves it.
#[derive(Debug, Clone, Default)]
pub struct PoolState {
    /// The resource.
    pub prefix: String,
    /// Its name.
    pub name: String,
    /// Members with their health (`Err(reason)`: unhealthy).
    pub devices: Vec<(Vf, Result<(), String>)>,
}

impl PoolState {
    fn listing(&self) -> api::ListAndWatchResponse {
        api::ListAndWatchResponse {
            devices: self
                .devices
                .iter()
                .map(|(v, h)| api::Device {
                    id: v.pci.clone(),
                    health: if h.is_ok() { "Healthy" } else { "Unhealthy" }.into(),
                    topology: v.numa.map(|n| api::TopologyInfo { nodes: vec![api::NumaNode { id: n }] }),
                })
                .collect(),
        }
    }
}

/// Devices handed out by `Allocate`, by resource: they stay with it across reloads.
pub type Allocated = Arc<Mutex<HashMap<String, HashSet<String>>>>;

/// The gRPC service of one resource.
#[derive(Debug, Clone)]
pub struct Plugin {
    state: watch::Receiver<PoolState>,
    allocated: Allocated,
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Plugin {
    async fn get_device_plugin_options(
        &self,
        _r: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(api::DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }))
    }

    type ListAndWatchStream = Streamed<api::ListAndWatchResponse>;

    async fn list_and_watch(&self, _r: Request<api::Empty>) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let s = WatchStream::new(self.state.clone()).map(|p| Ok(p.listing()));
        Ok(Response::new(Box::pin(s)))
    }

    async fn get_preferred_allocation(
        &self,
        r: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let st = self.state.borrow().clone();
        let pool: Vec<Vf> = st.devices.iter().filter(|(_, h)| h.is_ok()).map(|(v, _)| v.clone()).collect();
        let container_responses = r
            .into_inner()
            .container_requests
            .iter()
            .map(|c| {
                let size = usize::try_from(c.allocation_size).unwrap_or(0);
                api::ContainerPreferredAllocationResponse {
                    device_i_ds: sysfs::preferred(&pool, &c.available_device_i_ds, &c.must_include_device_i_ds, size),
                }
            })
            .collect();
        Ok(Response::new(api::PreferredAllocationResponse { container_responses }))
    }

    async fn allocate(&self, r: Request<api::AllocateRequest>) -> Result<Response<api::AllocateResponse>, Status> {
        let st = self.state.borrow().clone();
        let pool: Vec<Vf> = st.devices.iter().map(|(v, _)| v.clone()).collect();
        let mut container_responses = Vec::new();
        for (i, c) in r.into_inner().container_requests.iter().enumerate() {
            if let Some((v, Err(why))) = st.devices.iter().find(|(v, h)| c.devices_ids.contains(&v.pci) && h.is_err()) {
                return Err(Status::failed_precondition(format!(
                    "container_requests[{i}]: {} is unhealthy: {why}",
                    v.pci
                )));
            }
            let (envs, nodes) = sysfs::allocation(&st.prefix, &st.name, &pool, &c.devices_ids)
                .map_err(|e| Status::invalid_argument(format!("container_requests[{i}]: {e}")))?;
            if let Ok(mut a) = self.allocated.lock() {
                a.entry(format!("{}/{}", st.prefix, st.name)).or_default().extend(c.devices_ids.iter().cloned());
            }
            info!(resource = %format!("{}/{}", st.prefix, st.name), devices = %c.devices_ids.join(","), "allocated");
            container_responses.push(api::ContainerAllocateResponse {
                envs: envs.into_iter().collect(),
                devices: nodes
                    .into_iter()
                    .map(|n| api::DeviceSpec {
                        container_path: n.container_path,
                        host_path: n.host_path,
                        permissions: "rw".into(),
                    })
                    .collect(),
                ..Default::default()
            });
        }
        Ok(Response::new(api::AllocateResponse { container_responses }))
    }

    async fn pre_start_container(
        &self,
        _r: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

/// A dial-a-unix-socket connector for tonic clients (the kubelet's socket).
#[derive(Clone, Debug)]
pub struct UnixConnector(pub PathBuf);

impl tower_service::Service<tonic::transport::Uri> for UnixConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: tonic::transport::Uri) -> Self::Future {
        let p = self.0.clone();
        Box::pin(async move { tokio::net::UnixStream::connect(p).await.map(hyper_util::rt::TokioIo::new) })
    }
}

/// A channel to a unix socket.
///
/// # Errors
/// Connecting failed.
pub async fn unix_channel(path: &Path) -> Result<tonic::transport::Channel, String> {
    tonic::transport::Endpoint::try_from("http://[::1]:0")
        .map_err(|e| e.to_string())?
        .connect_with_connector(UnixConnector(path.to_path_buf()))
        .await
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Register a resource's endpoint with the kubelet.
///
/// # Errors
/// The kubelet is unreachable or refused.
pub async fn register(plugin_dir: &Path, endpoint: &str, resource: &str) -> Result<(), String> {
    let ch = unix_channel(&plugin_dir.join("kubelet.sock")).await?;
    RegistrationClient::new(ch)
        .register(api::RegisterRequest {
            version: API_VERSION.into(),
            endpoint: endpoint.into(),
            resource_name: resource.into(),
            options: Some(api::DevicePluginOptions {
                pre_start_required: false,
                get_preferred_allocation_available: true,
            }),
        })
        .await
        .map_err(|s| format!("kubelet refused {resource}: {}", s.message()))?;
    Ok(())
}

/// One running resource: its socket, its state channel and server task.
struct Running {
    resource: Resource,
    endpoint: String,
    registered: bool,
    state: watch::Sender<PoolState>,
    server: tokio::task::JoinHandle<()>,
}

/// Socket file name of a resource's plugin.
pub fn endpoint_of(r: &Resource) -> String {
    format!("edgelb-{}-{}.sock", r.resource_prefix, r.resource_name).replace('/', "_")
}

async fn serve(dir: &Path, endpoint: &str, plugin: Plugin) -> Result<tokio::task::JoinHandle<()>, String> {
    let path = dir.join(endpoint);
    let _ = std::fs::remove_file(&path);
    let l = tokio::net::UnixListener::bind(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| e.to_string())?;
    Ok(tokio::spawn(async move {
        let r = tonic::transport::Server::builder()
            .add_service(reflection)
            .add_service(DevicePluginServer::new(plugin))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(l))
            .await;
        if let Err(e) = r {
            error!("plugin server stopped: {e}");
        }
    }))
}

/// Pools for `cfg` over `vfs`: first match wins, and an allocated VF stays with the resource that allocated it.
pub fn pools(cfg: &Config, vfs: &[Vf], allocated: &HashMap<String, HashSet<String>>) -> Vec<Vec<Vf>> {
    let mut out = sysfs::assign(&cfg.resource_list, vfs);
    for (i, r) in cfg.resource_list.iter().enumerate() {
        let me = full_name(r);
        out[i].retain(|v| allocated.iter().all(|(res, ids)| *res == me || !ids.contains(&v.pci)));
    }
    // A VF allocated by a resource that still exists is kept in it even when selectors moved it elsewhere.
    for (i, r) in cfg.resource_list.iter().enumerate() {
        if let Some(ids) = allocated.get(&full_name(r)) {
            for v in vfs {
                if ids.contains(&v.pci) && !out[i].iter().any(|x| x.pci == v.pci) {
                    out[i].push(v.clone());
                }
            }
        }
    }
    for p in &mut out {
        p.sort_by(|a, b| a.pci.cmp(&b.pci));
    }
    out
}

/// The manager: run until `stop` fires. `config` is re-read on SIGHUP (sent to `reload`) or when its file changes.
pub async fn run(
    config_path: PathBuf,
    sys_root: PathBuf,
    plugin_dir: PathBuf,
    mut reload: tokio::sync::mpsc::Receiver<()>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let read = |p: &Path| -> Result<Config, String> {
        let t = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        crate::config::parse(&t).map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut cfg = read(&config_path)?;
    let mut cfg_stamp = std::fs::metadata(&config_path).and_then(|m| m.modified()).ok();
    let allocated: Allocated = Arc::new(Mutex::new(HashMap::new()));
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    // Each device as first seen in its pool: the reference for health (driver it came with).
    let mut reference: HashMap<String, Vf> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = reload.recv() => cfg_stamp = None,
            _ = stop.changed() => break,
        }
        // Config reload: on SIGHUP or when the file changed.
        let mut reloaded = false;
        let stamp = std::fs::metadata(&config_path).and_then(|m| m.modified()).ok();
        if stamp != cfg_stamp {
            cfg_stamp = stamp;
            match read(&config_path) {
                Ok(c) if c != cfg || running.is_empty() => {
                    if !running.is_empty() {
                        info!(resources = c.resource_list.len(), "configuration reloaded");
                    }
                    cfg = c;
                    reloaded = true;
                }
                Ok(_) => {}
                Err(e) => error!("configuration not reloaded, keeping the running one: {e}"),
            }
        }
        let vfs = sysfs::discover(&sys_root);
        let alloc = allocated.lock().map(|a| a.clone()).unwrap_or_default();
        let pools = pools(&cfg, &vfs, &alloc);
        let wanted: HashSet<String> = cfg.resource_list.iter().map(full_name).collect();
        // Resources gone from the configuration: stop serving them.
        let gone: Vec<String> = running.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
        for k in gone {
            if let Some(r) = running.remove(&k) {
                r.server.abort();
                let _ = std::fs::remove_file(plugin_dir.join(&r.endpoint));
                info!(resource = %k, "resource removed");
            }
        }
        for (i, r) in cfg.resource_list.iter().enumerate() {
            let name = full_name(r);
            let devices: Vec<(Vf, Result<(), String>)> = pools[i]
                .iter()
                .map(|v| {
                    let first = reference.entry(v.pci.clone()).or_insert_with(|| v.clone());
                    (v.clone(), sysfs::health(first, Some(v)))
                })
                .collect();
            // Members that vanished from sysfs, or no longer match because their driver changed, stay listed as
            // unhealthy (until the configuration itself changes membership), so the kubelet learns of it.
            let mut devices = devices;
            if let (Some(run), false) = (running.get(&name), reloaded) {
                for (old, _) in &run.state.borrow().devices {
                    if !devices.iter().any(|(v, _)| v.pci == old.pci) {
                        let now = vfs.iter().find(|v| v.pci == old.pci);
                        let why = sysfs::health(reference.get(&old.pci).unwrap_or(old), now)
                            .err()
                            .unwrap_or_else(|| "no longer selected".into());
                        devices.push((old.clone(), Err(why)));
                    }
                }
                devices.sort_by(|a, b| a.0.pci.cmp(&b.0.pci));
            }
            let state = PoolState { prefix: r.resource_prefix.clone(), name: r.resource_name.clone(), devices };
            let endpoint = endpoint_of(r);
            let socket_gone = !plugin_dir.join(&endpoint).exists();
            match running.get_mut(&name) {
                Some(run) if !socket_gone && run.resource == *r => {
                    if !run.registered {
                        match register(&plugin_dir, &endpoint, &name).await {
                            Ok(()) => {
                                info!(resource = %name, endpoint = %endpoint, "registered with the kubelet");
                                run.registered = true;
                            }
                            Err(e) => warn!(resource = %name, "registration failed, retrying: {e}"),
                        }
                    }
                    run.state.send_if_modified(|s| {
                        let changed = s.listing() != state.listing();
                        if changed {
                            for ((v, h), _) in state.devices.iter().zip(0..) {
                                let before = s.devices.iter().find(|(x, _)| x.pci == v.pci).map(|(_, h)| h.is_ok());
                                if before != Some(h.is_ok()) {
                                    match h {
                                        Ok(()) => info!(resource = %name, device = %v.pci, "healthy"),
                                        Err(why) => warn!(resource = %name, device = %v.pci, "unhealthy: {why}"),
                                    }
                                }
                            }
                            *s = state.clone();
                        }
                        changed
                    });
                }
                other => {
                    // New resource, a changed one, or the kubelet wiped our socket (its restart): serve and register.
                    if let Some(old) = other {
                        old.server.abort();
                        if socket_gone {
                            info!(resource = %name, "plugin socket removed (kubelet restart?): serving and registering again");
                        }
                    }
                    let (tx, rx) = watch::channel(state);
                    let plugin = Plugin { state: rx, allocated: allocated.clone() };
                    match serve(&plugin_dir, &endpoint, plugin).await {
                        Ok(server) => {
                            let registered = match register(&plugin_dir, &endpoint, &name).await {
                                Ok(()) => {
                                    let n = tx.borrow().devices.len();
                                    info!(resource = %name, endpoint = %endpoint, devices = n, "registered with the kubelet");
                                    true
                                }
                                Err(e) => {
                                    warn!(resource = %name, "registration failed, retrying: {e}");
                                    false
                                }
                            };
                            running.insert(
                                name.clone(),
                                Running { resource: r.clone(), endpoint, registered, state: tx, server },
                            );
                        }
                        Err(e) => error!(resource = %name, "cannot serve: {e}"),
                    }
                }
            }
        }
    }
    for (_, r) in running {
        r.server.abort();
        let _ = std::fs::remove_file(plugin_dir.join(&r.endpoint));
    }
    Ok(())
}
