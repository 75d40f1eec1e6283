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
    /// Leave the NUMA topology out of the listing (`excludeTopology`).
    pub exclude_topology: bool,
    /// Give pods /dev/vhost-net and /dev/net/tun with their VFs (`needVhostNet`).
    pub vhost_net: bool,
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
                    topology: v
                        .numa
                        .filter(|_| !self.exclude_topology)
                        .map(|n| api::TopologyInfo { nodes: vec![api::NumaNode { id: n }] }),
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
            let mut devices: Vec<api::DeviceSpec> = nodes
                .into_iter()
                .map(|n| api::DeviceSpec {
                    container_path: n.container_path,
                    host_path: n.host_path,
                    permissions: "rw".into(),
                })
                .collect();
            if st.vhost_net {
                for d in ["/dev/vhost-net", "/dev/net/tun"] {
                    devices.push(api::DeviceSpec {
                        container_path: d.into(),
                        host_path: d.into(),
                        permissions: "rw".into(),
                    });
                }
            }
            container_responses.push(api::ContainerAllocateResponse {
                envs: envs.into_iter().collect(),
                devices,
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
    reload: tokio::sync::mpsc::Receiver<()>,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    run_with_prefix(config_path, sys_root, plugin_dir, crate::config::DEFAULT_PREFIX.into(), reload, stop).await
}

/// As [`run`], resources that name no prefix taking `prefix` (upstream's `-resource-prefix`).
///
/// # Errors
/// The configuration cannot be read at start.
pub async fn run_with_prefix(
    config_path: PathBuf,
    sys_root: PathBuf,
    plugin_dir: PathBuf,
    prefix: String,
    mut reload: tokio::sync::mpsc::Receiver<()>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let cfg = read_config(&config_path, &prefix)?;
    for w in crate::config::warnings(&cfg) {
        warn!("{w}");
    }
    let cfg_stamp = std::fs::metadata(&config_path).and_then(|m| m.modified()).ok();
    let mut m = Manager {
        config_path,
        prefix,
        sys_root,
        plugin_dir,
        cfg,
        cfg_stamp,
        allocated: Arc::new(Mutex::new(HashMap::new())),
        running: BTreeMap::new(),
        reference: HashMap::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = reload.recv() => m.cfg_stamp = None,
            _ = stop.changed() => break,
        }
        m.round().await;
    }
    for (_, r) in m.running {
        r.server.abort();
        let _ = std::fs::remove_file(m.plugin_dir.join(&r.endpoint));
    }
    Ok(())
}

fn read_config(p: &Path, prefix: &str) -> Result<Config, String> {
    let t = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    crate::config::parse_with(&t, prefix).map_err(|e| format!("{}: {e}", p.display()))
}

/// What the manager keeps between rounds.
struct Manager {
    config_path: PathBuf,
    /// Prefix of resources that name none.
    prefix: String,
    sys_root: PathBuf,
    plugin_dir: PathBuf,
    cfg: Config,
    /// Modification time of the configuration file when last read (None: read it again).
    cfg_stamp: Option<std::time::SystemTime>,
    allocated: Allocated,
    running: BTreeMap<String, Running>,
    /// Each device as first seen in a pool (by pool and PCI address): the reference for its health there (the driver
    /// it came with).
    reference: HashMap<(String, String), Vf>,
}

impl Manager {
    /// One round: reload the configuration if it changed, discover the VFs, and bring each resource's server and
    /// device list up to date.
    async fn round(&mut self) {
        let reloaded = self.reload();
        let vfs = sysfs::discover(&self.sys_root);
        let alloc = self.allocated.lock().map(|a| a.clone()).unwrap_or_default();
        let pools = pools(&self.cfg, &vfs, &alloc);
        let wanted: HashSet<String> = self.cfg.resource_list.iter().map(full_name).collect();
        // Resources gone from the configuration: stop serving them.
        let gone: Vec<String> = self.running.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
        for k in gone {
            if let Some(r) = self.running.remove(&k) {
                r.server.abort();
                let _ = std::fs::remove_file(self.plugin_dir.join(&r.endpoint));
                info!(resource = %k, "resource removed");
            }
        }
        // Every device some pool holds this round: a device that moved to another pool is listed there alone.
        let claimed: HashSet<String> = pools.iter().flatten().map(|v| v.pci.clone()).collect();
        for (i, r) in self.cfg.resource_list.clone().iter().enumerate() {
            let name = full_name(r);
            if r.device_type != "netDevice" {
                continue;
            }
            let devices = self.devices(&name, &pools[i], &vfs, &claimed, reloaded);
            // As upstream: a pool that matches no device is not registered (until one appears).
            if devices.is_empty() && !self.running.contains_key(&name) {
                continue;
            }
            let state = PoolState {
                prefix: r.resource_prefix.clone(),
                name: r.resource_name.clone(),
                devices,
                exclude_topology: r.exclude_topology,
                vhost_net: r.selectors.iter().any(|s| s.need_vhost_net),
            };
            let endpoint = endpoint_of(r);
            let socket_gone = !self.plugin_dir.join(&endpoint).exists();
            match self.running.get_mut(&name) {
                Some(run) if !socket_gone && run.resource == *r => {
                    if !run.registered {
                        run.registered = try_register(&self.plugin_dir, &endpoint, &name, None).await;
                    }
                    publish(run, &name, state);
                }
                other => {
                    // New resource, a changed one, or the kubelet wiped our socket (its restart): serve and register.
                    if let Some(old) = other {
                        old.server.abort();
                        if socket_gone {
                            info!(resource = %name, "plugin socket removed (kubelet restart?): serving and registering again");
                        }
                    }
                    self.start(r, name, endpoint, state).await;
                }
            }
        }
    }

    /// Re-read the configuration on SIGHUP or when the file changed; true when a new one is in force.
    fn reload(&mut self) -> bool {
        let stamp = std::fs::metadata(&self.config_path).and_then(|m| m.modified()).ok();
        if stamp == self.cfg_stamp {
            return false;
        }
        self.cfg_stamp = stamp;
        match read_config(&self.config_path, &self.prefix) {
            Ok(c) if c != self.cfg || self.running.is_empty() => {
                if !self.running.is_empty() {
                    info!(resources = c.resource_list.len(), "configuration reloaded");
                    for w in crate::config::warnings(&c) {
                        warn!("{w}");
                    }
                }
                self.cfg = c;
                true
            }
            Ok(_) => false,
            Err(e) => {
                error!("configuration not reloaded, keeping the running one: {e}");
                false
            }
        }
    }

    /// A pool's devices with their health. Members that vanished from sysfs, or no longer match because their driver
    /// changed, stay listed as unhealthy (until the configuration itself changes membership), so the kubelet learns
    /// of it.
    fn devices(
        &mut self,
        name: &str,
        pool: &[Vf],
        vfs: &[Vf],
        claimed: &HashSet<String>,
        reloaded: bool,
    ) -> Vec<(Vf, Result<(), String>)> {
        let mut devices: Vec<(Vf, Result<(), String>)> = pool
            .iter()
            .map(|v| {
                let first = self.reference.entry((name.to_string(), v.pci.clone())).or_insert_with(|| v.clone());
                (v.clone(), sysfs::health(first, Some(v)))
            })
            .collect();
        if let (Some(run), false) = (self.running.get(name), reloaded) {
            for (old, _) in &run.state.borrow().devices {
                // A device another pool holds now has moved there: it is no longer listed here. One that vanished
                // or that no pool selects stays, unhealthy, so the kubelet learns of it.
                if devices.iter().any(|(v, _)| v.pci == old.pci) || claimed.contains(&old.pci) {
                    continue;
                }
                let now = vfs.iter().find(|v| v.pci == old.pci);
                let reference = self.reference.get(&(name.to_string(), old.pci.clone())).unwrap_or(old);
                let why = sysfs::health(reference, now).err().unwrap_or_else(|| "no longer selected".into());
                devices.push((old.clone(), Err(why)));
            }
            devices.sort_by(|a, b| a.0.pci.cmp(&b.0.pci));
        }
        devices
    }

    /// Serve resource `r` on a new socket and register it with the kubelet.
    async fn start(&mut self, r: &Resource, name: String, endpoint: String, state: PoolState) {
        let n = state.devices.len();
        let (tx, rx) = watch::channel(state);
        let plugin = Plugin { state: rx, allocated: self.allocated.clone() };
        match serve(&self.plugin_dir, &endpoint, plugin).await {
            Ok(server) => {
                let registered = try_register(&self.plugin_dir, &endpoint, &name, Some(n)).await;
                self.running.insert(name, Running { resource: r.clone(), endpoint, registered, state: tx, server });
            }
            Err(e) => error!(resource = %name, "cannot serve: {e}"),
        }
    }
}

/// Register with the kubelet, logging the outcome; true when registered (else retried next round).
async fn try_register(plugin_dir: &Path, endpoint: &str, name: &str, devices: Option<usize>) -> bool {
    match register(plugin_dir, endpoint, name).await {
        Ok(()) => {
            match devices {
                Some(n) => info!(resource = %name, endpoint = %endpoint, devices = n, "registered with the kubelet"),
                None => info!(resource = %name, endpoint = %endpoint, "registered with the kubelet"),
            }
            true
        }
        Err(e) => {
            warn!(resource = %name, "registration failed, retrying: {e}");
            false
        }
    }
}

/// Hand a resource's new device list to its server (and so to ListAndWatch), logging health changes.
fn publish(run: &Running, name: &str, state: PoolState) {
    run.state.send_if_modified(|s| {
        let changed = s.listing() != state.listing();
        if changed {
            for (v, h) in &state.devices {
                let before = s.devices.iter().find(|(x, _)| x.pci == v.pci).map(|(_, h)| h.is_ok());
                if before != Some(h.is_ok()) {
                    match h {
                        Ok(()) => info!(resource = %name, device = %v.pci, "healthy"),
                        Err(why) => warn!(resource = %name, device = %v.pci, "unhealthy: {why}"),
                    }
                }
            }
            *s = state;
        }
        changed
    });
}
