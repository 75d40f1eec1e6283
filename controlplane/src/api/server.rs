//! The gRPC service (`edgelb.v1.LoadBalancer`), the standard health service and server reflection, over TCP or a
//! unix socket.
// tonic's own signatures return `Status` (176 bytes) by value; helpers return what they return.
#![allow(clippy::result_large_err)]

use super::convert;
use crate::config::{Listen, TlsFiles};
use crate::stats::stats;
use crate::store::{key_of, Batch, Store, StoreError, StoreEvent};
use edgelb_api::v1;
use edgelb_api::v1::load_balancer_server::{LoadBalancer, LoadBalancerServer};
use edgelb_dataplane::model::{BackendState, Step};
use edgelb_dataplane::path;
use edgelb_dataplane::pipeline::{FlowFilter, Tuple};
use edgelb_dataplane::worker::WorkerStats;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

fn status(e: StoreError) -> Status {
    match &e {
        StoreError::Invalid { path, message } => {
            Status::invalid_argument(format!("{}: {message}", path.render(convert::NAMES)))
        }
        StoreError::Stale { .. } => Status::failed_precondition(e.to_string()),
        StoreError::NotFound(_) => Status::not_found(e.to_string()),
    }
}

/// The service implementation over a [`Store`].
#[derive(Debug, Clone)]
pub struct Api {
    store: Arc<Store>,
    require_client_cert: bool,
}

impl Api {
    /// An API over `store`; every caller may change the configuration.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store, require_client_cert: false }
    }

    /// An API that lets only callers with a verified client certificate (mTLS) change the configuration.
    pub fn with_client_certs(store: Arc<Store>) -> Self {
        Self { store, require_client_cert: true }
    }

    /// Mutating calls need a client certificate when mTLS is configured (the TLS layer has already verified it
    /// against the client CA; a certificate from another CA never gets this far).
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if self.require_client_cert && req.peer_certs().is_none_or(|c| c.is_empty()) {
            return Err(Status::unauthenticated(
                "changing the configuration needs a client certificate signed by the API's client CA",
            ));
        }
        Ok(())
    }

    fn applied(&self, a: crate::store::Applied) -> v1::ApplyServicesResponse {
        v1::ApplyServicesResponse { version: a.version, applied: a.applied, slots_moved: convert::moved_out(&a.moved) }
    }

    /// Change one backend of one service through the same batch path.
    fn backend_op(
        &self,
        r: v1::BackendRequest,
        op: fn(
            &mut Vec<edgelb_dataplane::model::BackendSpec>,
            edgelb_dataplane::model::BackendSpec,
        ) -> Result<(), Status>,
    ) -> Result<crate::store::Applied, Status> {
        let current = self.store.version();
        if r.expected_version != 0 && r.expected_version != current {
            return Err(status(StoreError::Stale { expected: r.expected_version, current }));
        }
        let k = convert::key(&r.service.unwrap_or_default(), &path!(service)).map_err(status)?;
        let b = convert::backend(&r.backend.unwrap_or_default(), &path!(backend)).map_err(status)?;
        let (_, services) = self.store.services();
        let Some(mut s) = services.into_iter().find(|s| key_of(s) == k) else {
            return Err(Status::not_found(format!("service: no service {}", crate::store::show_key(&k))));
        };
        op(&mut s.backends, b)?;
        let batch = Batch { upserts: vec![s], expected_version: r.expected_version, ..Default::default() };
        let a = self.store.apply(&batch, "api").map_err(|e| match e {
            StoreError::Invalid { path, message } => status(StoreError::Invalid {
                path: path.rebase(&[Step::Field("upserts"), Step::Index(0)], &[Step::Field("service")]),
                message,
            }),
            e => status(e),
        })?;
        Ok(a)
    }

    /// A backend convenience call: authorize, change the service's backend list with `op`, apply, settle.
    async fn backend(
        &self,
        req: Request<v1::BackendRequest>,
        op: fn(
            &mut Vec<edgelb_dataplane::model::BackendSpec>,
            edgelb_dataplane::model::BackendSpec,
        ) -> Result<(), Status>,
    ) -> Result<Response<v1::ApplyServicesResponse>, Status> {
        self.authorize(&req)?;
        let a = self.backend_op(req.into_inner(), op)?;
        Ok(self.settle(a).await)
    }

    /// Return only once every worker uses the snapshot an apply published (bounded: a stalled worker does not hold
    /// the caller beyond 100 ms, and is logged), so a change is in force on every worker when the call returns.
    async fn settle(&self, a: crate::store::Applied) -> Response<v1::ApplyServicesResponse> {
        if let (true, Some(w)) = (a.applied, self.store.workers()) {
            let (view, generation) = (w.clone(), a.generation);
            let wait = move || view.wait_all_use(generation, Duration::from_millis(100));
            if !tokio::task::spawn_blocking(wait).await.unwrap_or(false) {
                tracing::warn!(generation, "a worker has not taken the new snapshot within 100 ms");
            }
        }
        Response::new(self.applied(a))
    }
}

fn find(list: &[edgelb_dataplane::model::BackendSpec], b: &edgelb_dataplane::model::BackendSpec) -> Option<usize> {
    list.iter().position(|x| x.addr == b.addr && x.port == b.port)
}

/// A peer from the API, validated by the file's rules ([`crate::bgp::peer::validate`]); errors name the field.
pub fn peer_in(
    p: &v1::PeerConfig,
    asn: u32,
    router_id: std::net::Ipv4Addr,
) -> Result<crate::bgp::session::PeerConfig, Status> {
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let spec = crate::bgp::peer::PeerSpec {
        name: text(&p.name),
        address: p.address.clone(),
        remote_as: p.remote_as,
        port: p.port,
        source: text(&p.source),
        hold_time: p.hold_time,
        connect_retry: p.connect_retry,
        multihop_ttl: p.multihop_ttl,
        password: p.password.clone(),
        next_hop_v4: text(&p.next_hop_v4),
        next_hop_v6: text(&p.next_hop_v6),
        med: p.med,
        local_pref: p.local_pref,
        communities: p.communities.clone(),
        large_communities: p.large_communities.clone(),
        graceful_restart: p.graceful_restart,
        passive: p.passive,
        bfd: p.bfd.as_ref().map(|b| crate::bgp::peer::BfdSpec {
            min_tx_ms: b.min_tx_ms,
            min_rx_ms: b.min_rx_ms,
            multiplier: b.multiplier,
        }),
    };
    crate::bgp::peer::validate(&spec, asn, router_id).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn drain_status(d: &crate::store::DrainInfo) -> v1::DrainStatus {
    let p = d.progress.unwrap_or_default();
    v1::DrainStatus {
        requested: d.requested.is_some(),
        draining: d.progress.is_some(),
        elapsed_ms: p.elapsed.as_millis() as u64,
        timeout_ms: p.timeout.as_millis() as u64,
        established: p.census.established,
        udp: p.census.udp,
        other: p.census.other,
        closing: p.census.closing,
        half_open: p.census.half_open,
    }
}

fn absent(b: &edgelb_dataplane::model::BackendSpec) -> Status {
    Status::not_found(format!("backend {}:{} is not in the service", b.addr, b.port))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn event_out(e: StoreEvent) -> v1::Event {
    use v1::event::Kind;
    let kind = match e {
        StoreEvent::Applied { version, source, moved } => Kind::ConfigApplied(v1::ConfigApplied {
            version,
            source: source.into(),
            slots_moved: convert::moved_out(&moved),
        }),
        StoreEvent::BackendHealth { service, backend, healthy, reason } => Kind::BackendHealth(v1::BackendHealth {
            vip: service.0.to_string(),
            protocol: convert::protocol_out(service.1),
            port: u32::from(service.2.unwrap_or(0)),
            address: backend.0.to_string(),
            backend_port: u32::from(backend.1),
            healthy,
            reason,
        }),
        StoreEvent::PeerState { peer, state, reason } => Kind::PeerState(v1::PeerState { peer, state, reason }),
        StoreEvent::VrrpState { router, state, reason } => Kind::VrrpState(v1::VrrpState { router, state, reason }),
        StoreEvent::Kubernetes { service, reason, message } => {
            Kind::Kubernetes(v1::KubernetesEvent { service, reason, message })
        }
    };
    v1::Event { time_ms: now_ms(), kind: Some(kind) }
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl LoadBalancer for Api {
    async fn apply_services(
        &self,
        req: Request<v1::ApplyServicesRequest>,
    ) -> Result<Response<v1::ApplyServicesResponse>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        let upserts = r
            .upserts
            .iter()
            .enumerate()
            .map(|(i, s)| convert::service(s, &path!(upserts[i])))
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        let deletes = r
            .deletes
            .iter()
            .enumerate()
            .map(|(i, k)| convert::key(k, &path!(deletes[i])))
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        let batch = Batch { upserts, deletes, dry_run: r.dry_run, expected_version: r.expected_version };
        let a = self.store.apply(&batch, "api").map_err(status)?;
        Ok(self.settle(a).await)
    }

    async fn get_service(&self, req: Request<v1::GetServiceRequest>) -> Result<Response<v1::Service>, Status> {
        let k = convert::key(&req.into_inner().key.unwrap_or_default(), &path!(key)).map_err(status)?;
        let (_, services) = self.store.services();
        services
            .iter()
            .find(|s| key_of(s) == k)
            .map(|s| Response::new(v1::Service { source: self.store.source_of(&k).into(), ..convert::service_out(s) }))
            .ok_or_else(|| Status::not_found(format!("no service {}", crate::store::show_key(&k))))
    }

    async fn list_services(
        &self,
        _req: Request<v1::ListServicesRequest>,
    ) -> Result<Response<v1::ListServicesResponse>, Status> {
        let (version, services) = self.store.services();
        Ok(Response::new(v1::ListServicesResponse {
            version,
            services: services
                .iter()
                .map(|s| v1::Service { source: self.store.source_of(&key_of(s)).into(), ..convert::service_out(s) })
                .collect(),
        }))
    }

    async fn add_backend(
        &self,
        req: Request<v1::BackendRequest>,
    ) -> Result<Response<v1::ApplyServicesResponse>, Status> {
        self.backend(req, |list, b| {
            if find(list, &b).is_some() {
                return Err(Status::already_exists(format!("backend {}:{} is already in the service", b.addr, b.port)));
            }
            list.push(b);
            Ok(())
        })
        .await
    }

    async fn remove_backend(
        &self,
        req: Request<v1::BackendRequest>,
    ) -> Result<Response<v1::ApplyServicesResponse>, Status> {
        self.backend(req, |list, b| {
            let i = find(list, &b).ok_or_else(|| absent(&b))?;
            list.remove(i);
            Ok(())
        })
        .await
    }

    async fn drain_backend(
        &self,
        req: Request<v1::BackendRequest>,
    ) -> Result<Response<v1::ApplyServicesResponse>, Status> {
        self.backend(req, |list, b| {
            let i = find(list, &b).ok_or_else(|| absent(&b))?;
            list[i].state = BackendState::Draining;
            Ok(())
        })
        .await
    }

    async fn set_backend_weight(
        &self,
        req: Request<v1::BackendRequest>,
    ) -> Result<Response<v1::ApplyServicesResponse>, Status> {
        self.backend(req, |list, b| {
            let i = find(list, &b).ok_or_else(|| absent(&b))?;
            list[i].weight = b.weight;
            Ok(())
        })
        .await
    }

    async fn query_flow(&self, req: Request<v1::QueryFlowRequest>) -> Result<Response<v1::QueryFlowResponse>, Status> {
        let r = req.into_inner();
        let bad = |f: &str, m: String| Status::invalid_argument(format!("{f}: {m}"));
        let src: IpAddr =
            r.client.parse().map_err(|_| bad("client", format!("{:?} is not an IP address", r.client)))?;
        let dst: IpAddr = r.vip.parse().map_err(|_| bad("vip", format!("{:?} is not an IP address", r.vip)))?;
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(bad("client", "client and VIP must be of one family".into()));
        }
        let sport = u16::try_from(r.client_port).map_err(|_| bad("client_port", "above 65535".into()))?;
        let dport = u16::try_from(r.vip_port).map_err(|_| bad("vip_port", "above 65535".into()))?;
        let proto = convert::protocol(r.protocol, path!(protocol)).map_err(status)?;
        let t = Tuple { src, dst, proto: proto.number(), sport, dport };
        let Some(workers) = self.store.workers() else {
            return Err(Status::unavailable("the dataplane is not running"));
        };
        let w = workers.clone();
        let answer = tokio::task::spawn_blocking(move || w.query(t, Duration::from_millis(500)))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let cfg = self.store.snapshot();
        let (worker, q) = answer;
        let Some(q) = q else {
            return Ok(Response::new(v1::QueryFlowResponse {
                matched: false,
                worker: u32::from(worker),
                ..Default::default()
            }));
        };
        let Some(b) = cfg.backend(q.backend) else {
            return Ok(Response::new(v1::QueryFlowResponse {
                matched: false,
                worker: u32::from(worker),
                ..Default::default()
            }));
        };
        let addr = |b: &edgelb_dataplane::snapshot::Backend| {
            let a = if b.v4 {
                IpAddr::from([b.addr[12], b.addr[13], b.addr[14], b.addr[15]])
            } else {
                IpAddr::from(b.addr)
            };
            (a.to_string(), u32::from(if b.port == 0 { dport } else { b.port }))
        };
        let (backend_address, backend_port) = addr(b);
        let (fresh_backend_address, fresh_backend_port) =
            q.fresh.and_then(|id| cfg.backend(id)).map(addr).unwrap_or_default();
        Ok(Response::new(v1::QueryFlowResponse {
            matched: true,
            backend_address,
            backend_port,
            tracked: q.tracked,
            worker: u32::from(worker),
            fresh_backend_address,
            fresh_backend_port,
        }))
    }

    async fn list_flows(&self, req: Request<v1::ListFlowsRequest>) -> Result<Response<v1::ListFlowsResponse>, Status> {
        let r = req.into_inner();
        let cfg = self.store.snapshot();
        let mut filter = FlowFilter::default();
        let key = r.service.as_ref().map(|k| convert::key(k, &path!(service))).transpose().map_err(status)?;
        if let Some((vip, proto, port)) = key {
            filter.service = Some((edgelb_dataplane::snapshot::addr16(vip), proto.number(), port.unwrap_or(0)));
        }
        if !r.backend_address.is_empty() {
            let Some((vip, proto, port)) = key else {
                return Err(Status::invalid_argument("backend_address: a backend filter needs the service"));
            };
            let a: IpAddr = r.backend_address.parse().map_err(|_| {
                Status::invalid_argument(format!("backend_address: {:?} is not an IP address", r.backend_address))
            })?;
            let (v, a16) = (edgelb_dataplane::snapshot::addr16(vip), edgelb_dataplane::snapshot::addr16(a));
            let id = cfg.backends.iter().flatten().find(|b| {
                let s = &cfg.services[b.service as usize];
                s.vip == v
                    && s.proto == proto.number()
                    && s.port == port.unwrap_or(0)
                    && b.addr == a16
                    && u32::from(b.port) == r.backend_port
            });
            let Some(b) = id else {
                return Err(Status::not_found(format!(
                    "backend {}:{} is not in the service",
                    r.backend_address, r.backend_port
                )));
            };
            filter.backend = Some(b.id);
        }
        let page = match r.page_size {
            0 => 100,
            n @ 1..=10_000 => n as usize,
            n => return Err(Status::invalid_argument(format!("page_size: {n} outside 1..=10000"))),
        };
        let token = if r.page_token.is_empty() {
            None
        } else {
            let bad =
                || Status::invalid_argument(format!("page_token: {:?} is not a token this API gave", r.page_token));
            let p: Vec<&str> = r.page_token.split(':').collect();
            let [w, f, s] = p.as_slice() else { return Err(bad()) };
            Some((w.parse().map_err(|_| bad())?, (*f == "6", s.parse().map_err(|_| bad())?)))
        };
        let Some(workers) = self.store.workers() else {
            return Err(Status::unavailable("the dataplane is not running"));
        };
        let w = workers.clone();
        let (flows, next) =
            tokio::task::spawn_blocking(move || w.list_flows(filter, token, page, Duration::from_millis(500)))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::unavailable(e.to_string()))?;
        let flows = flows
            .into_iter()
            .map(|(w, f)| {
                let b = cfg.backend(f.backend);
                v1::Flow {
                    client: f.client.to_string(),
                    client_port: u32::from(f.client_port),
                    vip: f.vip.to_string(),
                    vip_port: u32::from(f.vip_port),
                    protocol: if f.proto == 17 { v1::Protocol::Udp as i32 } else { v1::Protocol::Tcp as i32 },
                    backend_address: b
                        .map(|b| edgelb_dataplane::snapshot::addr_from16(b.addr, b.v4).to_string())
                        .unwrap_or_default(),
                    backend_port: b.map_or(0, |b| u32::from(if b.port == 0 { f.vip_port } else { b.port })),
                    worker: u32::from(w),
                    expires_in_ms: f.expires_in_ms,
                    state: f.state.name().into(),
                }
            })
            .collect();
        let next_page_token =
            next.map(|(w, (v6, s))| format!("{w}:{}:{s}", if v6 { 6 } else { 4 })).unwrap_or_default();
        Ok(Response::new(v1::ListFlowsResponse { flows, next_page_token }))
    }

    async fn list_ports(&self, _req: Request<v1::ListPortsRequest>) -> Result<Response<v1::ListPortsResponse>, Status> {
        let model = self.store.model();
        let workers: Vec<WorkerStats> = self.store.workers().map(|w| w.snapshot()).unwrap_or_default();
        let names = self.store.port_names();
        let ports = model
            .interfaces
            .iter()
            .map(|i| {
                let mut p = v1::Port {
                    index: u32::from(i.port),
                    mac: i.mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
                    addresses: i.addrs.iter().map(|(a, l)| format!("{a}/{l}")).collect(),
                    mtu: u32::from(i.mtu),
                    ..Default::default()
                };
                if let Some((n, d)) = names.get(usize::from(i.port)) {
                    p.name = n.clone();
                    p.driver = d.clone();
                }
                for w in &workers {
                    if let Some(s) = w.ports.get(usize::from(i.port)) {
                        p.rx_packets += s.rx_packets;
                        p.rx_bytes += s.rx_bytes;
                        p.tx_packets += s.tx_packets;
                        p.tx_bytes += s.tx_bytes;
                        p.rx_dropped += s.rx_dropped;
                        p.tx_dropped += s.tx_dropped;
                    }
                }
                p
            })
            .collect();
        Ok(Response::new(v1::ListPortsResponse { ports }))
    }

    async fn add_peer(&self, req: Request<v1::PeerConfig>) -> Result<Response<v1::ListPeersResponse>, Status> {
        self.authorize(&req)?;
        let Some((asn, router_id, ops)) = self.store.speaker().cloned() else {
            return Err(Status::failed_precondition(
                "BGP is not configured: give [bgp] local_as and router_id in the config file",
            ));
        };
        let spec = req.into_inner();
        let p = peer_in(&spec, asn, router_id)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        ops.send(crate::bgp::PeerOp::Add(p, tx)).await.map_err(|_| Status::unavailable("the BGP speaker stopped"))?;
        rx.await.map_err(|_| Status::unavailable("the BGP speaker stopped"))?.map_err(Status::already_exists)?;
        self.store.keep_peer_added(&spec);
        self.list_peers(Request::new(v1::ListPeersRequest {})).await
    }

    async fn remove_peer(
        &self,
        req: Request<v1::RemovePeerRequest>,
    ) -> Result<Response<v1::ListPeersResponse>, Status> {
        self.authorize(&req)?;
        let Some((_, _, ops)) = self.store.speaker().cloned() else {
            return Err(Status::failed_precondition("BGP is not configured"));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let name = req.into_inner().name;
        ops.send(crate::bgp::PeerOp::Remove(name.clone(), tx))
            .await
            .map_err(|_| Status::unavailable("the BGP speaker stopped"))?;
        rx.await.map_err(|_| Status::unavailable("the BGP speaker stopped"))?.map_err(Status::not_found)?;
        self.store.keep_peer_removed(&name);
        self.list_peers(Request::new(v1::ListPeersRequest {})).await
    }

    async fn list_peers(&self, _req: Request<v1::ListPeersRequest>) -> Result<Response<v1::ListPeersResponse>, Status> {
        let peers = self
            .store
            .peers()
            .into_iter()
            .map(|(name, s)| v1::Peer {
                name,
                state: format!("{:?}", s.state),
                uptime_s: s.established_at.and_then(|t| t.elapsed().ok()).map_or(0, |d| d.as_secs()),
                last_error: s.last_error.unwrap_or_default(),
                msgs_in: s.msgs_in,
                msgs_out: s.msgs_out,
                prefixes_received: s.prefixes_received,
                announced: s.announced as u64,
                established_count: s.established_count,
                treat_as_withdraw: s.treat_as_withdraw,
                bfd: s.bfd.map(|b| v1::PeerBfd {
                    state: format!("{:?}", b.state),
                    remote_state: format!("{:?}", b.remote_state),
                    diag: crate::ha::bfd::diag::name(b.diag).into(),
                    up_count: b.up_count,
                    failures: b.failures,
                    detection_ms: b.detection_ms,
                    packets_in: b.packets_in,
                    packets_out: b.packets_out,
                }),
            })
            .collect();
        Ok(Response::new(v1::ListPeersResponse { peers }))
    }

    async fn drain(&self, req: Request<v1::DrainRequest>) -> Result<Response<v1::DrainStatus>, Status> {
        let timeout = req.get_ref().timeout_s.map(|s| std::time::Duration::from_secs(u64::from(s)));
        if self.store.request_drain(timeout) {
            tracing::info!(?timeout, "drain asked for through the API");
        }
        Ok(Response::new(drain_status(&self.store.drain())))
    }

    async fn list_vrrp(&self, _req: Request<v1::ListVrrpRequest>) -> Result<Response<v1::ListVrrpResponse>, Status> {
        let (routers, refused) = self.store.vrrp();
        let routers = routers
            .into_iter()
            .map(|r| v1::VirtualRouter {
                name: r.name,
                vrid: u32::from(r.vrid),
                port: u32::from(r.port),
                family: if r.v4 { "ipv4" } else { "ipv6" }.into(),
                state: format!("{:?}", r.state),
                priority: u32::from(r.priority),
                effective_priority: u32::from(r.effective_priority),
                master: r.master.map(|a| a.to_string()).unwrap_or_default(),
                vips: r.vips.iter().map(ToString::to_string).collect(),
                adverts_in: r.stats.adverts_in,
                adverts_out: r.stats.adverts_out,
                became_master: r.stats.became_master,
                transitions: r.stats.transitions,
            })
            .collect();
        let refused = refused.into_iter().map(|(r, n)| v1::DropCount { reason: r.into(), packets: n }).collect();
        Ok(Response::new(v1::ListVrrpResponse { routers, refused }))
    }

    async fn diagnose(&self, req: Request<v1::DiagnoseRequest>) -> Result<Response<v1::Diagnosis>, Status> {
        let r = req.into_inner();
        let vip: std::net::IpAddr = r
            .vip
            .trim()
            .parse()
            .map_err(|_| Status::invalid_argument(format!("vip: {:?} is not an IP address", r.vip)))?;
        let vip = vip.to_canonical();
        let wait = match r.probe_wait_ms {
            0 => std::time::Duration::from_millis(500),
            ms @ 1..=5_000 => std::time::Duration::from_millis(u64::from(ms)),
            ms => return Err(Status::invalid_argument(format!("probe_wait_ms: {ms}: at most 5000"))),
        };
        let facts = crate::doctor::gather(&self.store, vip, wait).await;
        Ok(Response::new(v1::Diagnosis { vip: vip.to_string(), findings: crate::doctor::judge(&facts) }))
    }

    async fn get_drain(&self, _req: Request<v1::GetDrainRequest>) -> Result<Response<v1::DrainStatus>, Status> {
        Ok(Response::new(drain_status(&self.store.drain())))
    }

    async fn get_stats(&self, _req: Request<v1::GetStatsRequest>) -> Result<Response<v1::Stats>, Status> {
        Ok(Response::new(stats(&self.store)))
    }

    type WatchStatsStream = Streamed<v1::Stats>;

    async fn watch_stats(
        &self,
        req: Request<v1::WatchStatsRequest>,
    ) -> Result<Response<Self::WatchStatsStream>, Status> {
        let ms = req.into_inner().interval_ms;
        if !(100..=60_000).contains(&ms) {
            return Err(Status::invalid_argument(format!("interval_ms: {ms} outside 100..=60000")));
        }
        let store = self.store.clone();
        let ticks =
            tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_millis(u64::from(ms))));
        Ok(Response::new(Box::pin(ticks.map(move |_| Ok(stats(&store))))))
    }

    type WatchEventsStream = Streamed<v1::Event>;

    async fn watch_events(
        &self,
        _req: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let rx = BroadcastStream::new(self.store.subscribe());
        // A watcher that falls more than the channel's depth behind misses events; it is told so.
        Ok(Response::new(Box::pin(rx.map(move |e| match e {
            Ok(e) => Ok(event_out(e)),
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                Err(Status::data_loss(format!("{n} events missed: the watcher fell behind")))
            }
        }))))
    }
}

/// Serve the API, health and reflection on `listen` until `shutdown` resolves.
///
/// # Errors
/// Binding or serving failed.
pub async fn serve(
    store: Arc<Store>,
    listen: Listen,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    serve_ready(store, listen, None, shutdown, || {}).await
}

/// As [`serve`], calling `ready` once the listener is bound (so callers can report a bind error before going on).
///
/// # Errors
/// Binding or serving failed.
pub async fn serve_ready(
    store: Arc<Store>,
    listen: Listen,
    tls: Option<TlsFiles>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(),
) -> Result<(), String> {
    let (mut reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<LoadBalancerServer<Api>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(edgelb_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(edgelb_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| format!("reflection: {e}"))?;
    let mut builder = tonic::transport::Server::builder();
    let mut api = Api::new(store);
    if let Some(t) = &tls {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("API TLS: {}: {e}", p.display()));
        let mut cfg = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(read(&t.cert)?, read(&t.key)?));
        if let Some(ca) = &t.client_ca {
            // Optional at the TLS layer so read-only calls work without one; mutating calls check it (authorize).
            cfg = cfg.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?)).client_auth_optional(true);
            api = Api::with_client_certs(api.store);
        }
        builder = builder.tls_config(cfg).map_err(|e| format!("API TLS: {e}"))?;
    }
    let router = builder
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(LoadBalancerServer::new(api));
    match listen {
        Listen::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("API listen on {addr}: {e}"))?;
            ready();
            router
                .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(l), shutdown)
                .await
                .map_err(|e| format!("API on {addr}: {e}"))
        }
        Listen::Unix(path) => {
            let _ = std::fs::remove_file(&path);
            let l =
                tokio::net::UnixListener::bind(&path).map_err(|e| format!("API listen on {}: {e}", path.display()))?;
            let r = router
                .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(l), shutdown)
                .await
                .map_err(|e| format!("API on {}: {e}", path.display()));
            let _ = std::fs::remove_file(&path);
            r
        }
    }
}
