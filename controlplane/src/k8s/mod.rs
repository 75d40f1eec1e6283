//! Kubernetes sync, first part: the pure core the controller runs on each change. From Services of type
//! LoadBalancer (our class) and their EndpointSlices it computes the VIP services for the one model, the addresses to
//! write into each Service's status, and the Events to record. VIP allocation from the configured pools is stable:
//! an address a Service's status already records stays with it (restarts and other Services' deletion never move
//! it), a requested address (`edgelb.io/loadBalancerIPs` or `spec.loadBalancerIP`) is honoured when a permitted pool
//! holds it and nobody else has it, and everything else is allocated in a fixed order. The watchers, status writer
//! and leader election that drive it are the rest of the issue.

pub mod controller;
pub mod crd;
pub mod resources;
pub mod vip_leases;

use crate::store::ServiceKey;
use edgelb_dataplane::model::{BackendSpec, BackendState, Mode, Protocol, ServiceSpec};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

/// Annotation choosing the forwarding mode.
pub const MODE_ANNOTATION: &str = "edgelb.io/mode";
/// Annotation requesting addresses (comma-separated).
pub const IPS_ANNOTATION: &str = "edgelb.io/loadBalancerIPs";
/// Annotation giving endpoint weights: `198.18.3.5=3,198.18.3.6=1`.
pub const WEIGHTS_ANNOTATION: &str = "edgelb.io/weights";
/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// An address pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Name, for events.
    pub name: String,
    /// Address ranges (inclusive), one family each.
    pub ranges: Vec<(IpAddr, IpAddr)>,
    /// Namespaces allowed (empty: all).
    pub namespaces: Vec<String>,
    /// Labels a Service must carry (empty: any).
    pub selector: BTreeMap<String, String>,
    /// Allocate to Services that ask for no address (false: requested addresses only).
    pub auto_assign: bool,
}

/// Parse `198.19.0.0/24`, `198.19.0.10-198.19.0.20` or one address into an inclusive range.
///
/// # Errors
/// Malformed text, mixed families, a backwards range, a bad prefix length.
pub fn parse_range(s: &str) -> Result<(IpAddr, IpAddr), String> {
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let (a, b): (IpAddr, IpAddr) = (
            a.trim().parse().map_err(|_| format!("{s:?}: bad address"))?,
            b.trim().parse().map_err(|_| format!("{s:?}: bad address"))?,
        );
        if a.is_ipv4() != b.is_ipv4() || to_u128(a) > to_u128(b) {
            return Err(format!("{s:?}: a range of one family, low to high"));
        }
        return Ok((a, b));
    }
    if let Some((a, l)) = s.split_once('/') {
        let a: IpAddr = a.parse().map_err(|_| format!("{s:?}: bad address"))?;
        let bits = if a.is_ipv4() { 32 } else { 128 };
        let l: u32 = l.parse().ok().filter(|l| *l <= bits).ok_or_else(|| format!("{s:?}: bad prefix length"))?;
        let host = if l == bits { 0 } else { (1u128 << (bits - l)) - 1 };
        let base = to_u128(a) & !host;
        return Ok((from_u128(base, a.is_ipv4()), from_u128(base | host, a.is_ipv4())));
    }
    let a: IpAddr = s.parse().map_err(|_| format!("{s:?}: not an address, CIDR or range"))?;
    Ok((a, a))
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4((n as u32).into())
    } else {
        IpAddr::V6(n.into())
    }
}

impl Pool {
    fn contains(&self, a: IpAddr) -> bool {
        self.ranges
            .iter()
            .any(|(lo, hi)| lo.is_ipv4() == a.is_ipv4() && (to_u128(*lo)..=to_u128(*hi)).contains(&to_u128(a)))
    }
    fn permits(&self, svc: &Service) -> bool {
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let labels = svc.metadata.labels.clone().unwrap_or_default();
        (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == ns))
            && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
    /// The first free address of family `v4`, skipping network and broadcast addresses of IPv4 CIDRs wider than /31.
    fn first_free(&self, v4: bool, used: &HashMap<IpAddr, String>) -> Option<IpAddr> {
        for (lo, hi) in self.ranges.iter().filter(|(lo, _)| lo.is_ipv4() == v4) {
            let (l, h) = (to_u128(*lo), to_u128(*hi));
            // At most 65 536 candidates per range are tried: pools are address lists, not /64s to sweep.
            for n in l..=h.min(l + 65_535) {
                if v4 && h - l >= 3 && (n == l || n == h) && (l & 0xff == 0 || h & 0xff == 0xff) {
                    continue;
                }
                let a = from_u128(n, v4);
                if !used.contains_key(&a) {
                    return Some(a);
                }
            }
        }
        None
    }
}

/// `namespace/name`.
pub fn key(svc: &Service) -> String {
    format!("{}/{}", svc.metadata.namespace.as_deref().unwrap_or("default"), svc.metadata.name.as_deref().unwrap_or(""))
}

/// Is this Service ours: type LoadBalancer and our class (or class-less when we take those)?
pub fn ours(svc: &Service, class: &str, classless: bool) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() == Some("LoadBalancer")
        && match spec.load_balancer_class.as_deref() {
            Some(c) => c == class,
            None => classless,
        }
}

fn annotation<'a>(svc: &'a Service, k: &str) -> Option<&'a str> {
    svc.metadata.annotations.as_ref().and_then(|a| a.get(k)).map(String::as_str)
}

/// Addresses the Service asks for: the annotation, else `spec.loadBalancerIP`.
///
/// # Errors
/// An address that does not parse.
pub fn requested(svc: &Service) -> Result<Vec<IpAddr>, String> {
    let text = annotation(svc, IPS_ANNOTATION)
        .map(str::to_string)
        .or_else(|| svc.spec.as_ref().and_then(|s| s.load_balancer_ip.clone()).filter(|s| !s.is_empty()));
    match text {
        None => Ok(Vec::new()),
        Some(t) => t
            .split(',')
            .map(|a| a.trim().parse().map_err(|_| format!("{IPS_ANNOTATION}: {a:?} is not an IP address")))
            .collect(),
    }
}

/// Addresses the Service's status already records.
pub fn current(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.as_deref()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// Families the Service wants: `spec.ipFamilies` (IPv4 by default).
pub fn families(svc: &Service) -> Vec<bool> {
    let f: Vec<bool> =
        svc.spec.as_ref().and_then(|s| s.ip_families.clone()).unwrap_or_default().iter().map(|f| f != "IPv6").collect();
    if f.is_empty() {
        vec![true]
    } else {
        f
    }
}

/// An Event to record on a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `namespace/name` of the Service.
    pub service: String,
    /// `Normal` or `Warning`.
    pub kind: &'static str,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

/// What one sync computes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// VIP services for the model, in a stable order.
    pub services: Vec<ServiceSpec>,
    /// Addresses per Service (`namespace/name`) for `status.loadBalancer.ingress`.
    pub status: BTreeMap<String, Vec<IpAddr>>,
    /// Events to record.
    pub events: Vec<Event>,
}

/// Everything a sync needs besides the objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Our `loadBalancerClass`.
    pub class: String,
    /// Also take Services without a class.
    pub classless: bool,
    /// Mode when the Service has no `edgelb.io/mode`.
    pub default_mode: Mode,
    /// Address pools, in preference order.
    pub pools: Vec<Pool>,
}

fn ev(svc: &str, kind: &'static str, reason: &'static str, message: String) -> Event {
    Event { service: svc.to_string(), kind, reason, message }
}

/// Allocate addresses to every Service of ours: first keep what status records, then honour requests, then allocate,
/// each pass in `namespace/name` order so the result does not depend on the order objects arrived in.
pub fn allocate(services: &[&Service], s: &Settings, events: &mut Vec<Event>) -> BTreeMap<String, Vec<IpAddr>> {
    let mut sorted: Vec<&&Service> = services.iter().collect();
    sorted.sort_by_key(|x| key(x));
    let mut a = Allocation { s, used: HashMap::new(), out: BTreeMap::new(), events };
    // 1. Keep what status already records (when still allowed and requested, if a request exists).
    for svc in &sorted {
        a.keep(svc);
    }
    // 2. Requests, 3. new allocations: one address per wanted family.
    for svc in &sorted {
        let k = key(svc);
        match requested(svc) {
            Err(e) => a.events.push(ev(&k, "Warning", "InvalidRequest", e)),
            Ok(req) if !req.is_empty() => a.request(svc, &k, req),
            Ok(_) => {
                for v4 in families(svc) {
                    a.fresh(svc, &k, v4);
                }
            }
        }
    }
    a.out
}

/// One allocation round's state: which address went to which Service.
struct Allocation<'a> {
    s: &'a Settings,
    used: HashMap<IpAddr, String>,
    out: BTreeMap<String, Vec<IpAddr>>,
    events: &'a mut Vec<Event>,
}

impl Allocation<'_> {
    fn pool_for(&self, svc: &Service, a: IpAddr) -> Option<&Pool> {
        self.s.pools.iter().find(|p| p.permits(svc) && p.contains(a))
    }

    fn give(&mut self, k: &str, a: IpAddr) {
        self.used.insert(a, k.to_string());
        self.out.entry(k.to_string()).or_default().push(a);
    }

    fn has(&self, k: &str, pred: impl Fn(&IpAddr) -> bool) -> bool {
        self.out.get(k).is_some_and(|v| v.iter().any(pred))
    }

    fn keep(&mut self, svc: &Service) {
        let k = key(svc);
        let req = requested(svc).unwrap_or_default();
        for a in current(svc) {
            if self.pool_for(svc, a).is_some() && (req.is_empty() || req.contains(&a)) && !self.used.contains_key(&a) {
                self.give(&k, a);
            }
        }
    }

    fn request(&mut self, svc: &Service, k: &str, req: Vec<IpAddr>) {
        for a in req {
            if self.has(k, |x| *x == a) {
                continue;
            }
            let pool = self.pool_for(svc, a).map(|p| p.name.clone());
            let (kind, reason, message) = match (pool, self.used.get(&a)) {
                (None, _) => {
                    ("Warning", "AddressNotAllowed", format!("requested {a} is not in any pool this Service may use"))
                }
                (_, Some(owner)) => {
                    ("Warning", "AddressInUse", format!("requested {a} is already allocated to {owner}"))
                }
                (Some(p), None) => {
                    self.give(k, a);
                    ("Normal", "IPAllocated", format!("{a} from pool {p} (requested)"))
                }
            };
            self.events.push(ev(k, kind, reason, message));
        }
    }

    fn fresh(&mut self, svc: &Service, k: &str, v4: bool) {
        if self.has(k, |a| a.is_ipv4() == v4) {
            return;
        }
        let fam = if v4 { "IPv4" } else { "IPv6" };
        let s = self.s;
        let candidates: Vec<&Pool> = s
            .pools
            .iter()
            .filter(|p| p.auto_assign && p.permits(svc) && p.ranges.iter().any(|(lo, _)| lo.is_ipv4() == v4))
            .collect();
        if candidates.is_empty() {
            let msg = format!("no {fam} pool admits this Service (namespace and labels)");
            self.events.push(ev(k, "Warning", "NoPool", msg));
            return;
        }
        match candidates.iter().find_map(|p| p.first_free(v4, &self.used).map(|a| (p.name.clone(), a))) {
            Some((p, a)) => {
                self.give(k, a);
                self.events.push(ev(k, "Normal", "IPAllocated", format!("{a} from pool {p}")));
            }
            None => {
                let names = candidates.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
                self.events.push(ev(k, "Warning", "PoolExhausted", format!("no free {fam} address in {names}")));
            }
        }
    }
}

fn protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

/// An endpoint's state from its conditions: `ready` active, `serving` + `terminating` draining, others out.
fn endpoint_state(e: &k8s_openapi::api::discovery::v1::Endpoint) -> Option<BackendState> {
    let c = e.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    if ready && !terminating {
        Some(BackendState::Active)
    } else if serving {
        Some(BackendState::Draining)
    } else {
        None
    }
}

/// The backends of one VIP and Service port (named `port_name`, "" when unnamed): the endpoints of the VIP's family
/// in the slices, on the slice port of the same name and protocol, each address and port once, sorted.
fn backends_of(
    slices: &[&EndpointSlice],
    vip: IpAddr,
    port_name: &str,
    proto: Protocol,
    weights: &HashMap<IpAddr, u32>,
) -> Vec<BackendSpec> {
    let mut backends: Vec<BackendSpec> = Vec::new();
    for sl in slices {
        let fam_ok = match sl.address_type.as_str() {
            "IPv4" => vip.is_ipv4(),
            "IPv6" => vip.is_ipv6(),
            _ => false,
        };
        if !fam_ok {
            continue;
        }
        // The slice port with the Service port's name (both unnamed for a single-port Service).
        let Some(ep_port) = sl.ports.as_deref().unwrap_or_default().iter().find(|sp| {
            sp.name.as_deref().unwrap_or("") == port_name && protocol(sp.protocol.as_deref()) == Some(proto)
        }) else {
            continue;
        };
        let Some(target) = ep_port.port.and_then(|x| u16::try_from(x).ok()) else { continue };
        for e in &sl.endpoints {
            let Some(state) = endpoint_state(e) else { continue };
            for a in &e.addresses {
                let Ok(addr) = a.parse::<IpAddr>() else { continue };
                if addr.is_ipv4() != vip.is_ipv4() || backends.iter().any(|b| b.addr == addr && b.port == target) {
                    continue;
                }
                let weight = weights.get(&addr).copied().unwrap_or(1).clamp(1, 65_535);
                backends.push(BackendSpec { addr, port: target, weight, state });
            }
        }
    }
    backends.sort_by_key(|b| (b.addr, b.port));
    backends
}

/// The VIP services of one Service with addresses `vips`, from its EndpointSlices: per VIP and Service port, the
/// endpoints of the VIP's family on the matching port: `ready` active, `serving` + `terminating` draining, others out.
///
/// # Errors
/// A mode the annotation names that does not exist, or one that contradicts `externalTrafficPolicy: Local`.
pub fn service_specs(
    svc: &Service,
    slices: &[&EndpointSlice],
    vips: &[IpAddr],
    default_mode: Mode,
) -> Result<Vec<ServiceSpec>, String> {
    let spec = svc.spec.as_ref().ok_or("no spec")?;
    let mode = match annotation(svc, MODE_ANNOTATION) {
        Some(m) => m.parse::<Mode>().map_err(|e| format!("{MODE_ANNOTATION}: {}", e.message))?,
        None => default_mode,
    };
    if spec.external_traffic_policy.as_deref() == Some("Local") && mode == Mode::FullNat {
        return Err(
            "externalTrafficPolicy Local keeps the client address: full-NAT cannot; use nat, dsr_l2, ipip or gue"
                .into(),
        );
    }
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(10_800)
    });
    let weights: HashMap<IpAddr, u32> = annotation(svc, WEIGHTS_ANNOTATION)
        .map(|w| {
            w.split(',')
                .filter_map(|kv| {
                    let (a, n) = kv.split_once('=')?;
                    Some((a.trim().parse().ok()?, n.trim().parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for vip in vips {
        for p in spec.ports.as_deref().unwrap_or_default() {
            let Some(proto) = protocol(p.protocol.as_deref()) else { continue };
            let Ok(port) = u16::try_from(p.port) else { continue };
            let backends = backends_of(slices, *vip, p.name.as_deref().unwrap_or(""), proto, &weights);
            let mut s = ServiceSpec::new(*vip, proto, Some(port), mode, backends);
            s.affinity_timeout_s = affinity;
            out.push(s);
        }
    }
    Ok(out)
}

/// One sync over all objects: allocation, mapping, status and events.
pub fn sync(services: &[Service], slices: &[EndpointSlice], s: &Settings) -> Outcome {
    Syncer::default().sync(services, slices, s)
}

/// Syncs that remember each Service's VIP services with what they were computed from (the Service's and its
/// EndpointSlices' resource versions, its addresses), so a sync after a burst of watch events maps only the Services
/// the burst touched; allocation still looks at every Service, as one Service's address depends on the others'.
/// Objects without a resource version are mapped every time.
#[derive(Debug, Default)]
pub struct Syncer {
    settings: Option<Settings>,
    cache: HashMap<String, Cached>,
}

#[derive(Debug)]
struct Cached {
    inputs: Inputs,
    specs: Result<Vec<ServiceSpec>, String>,
}

/// What a Service's VIP services are computed from, besides the settings.
#[derive(Debug, PartialEq, Eq)]
struct Inputs {
    service: String,
    /// (name, resource version) of each EndpointSlice, in the order they are read.
    slices: Vec<(String, String)>,
    vips: Vec<IpAddr>,
}

impl Inputs {
    fn of(svc: &Service, slices: &[&EndpointSlice], vips: &[IpAddr]) -> Option<Self> {
        let version = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            Some((m.name.clone().unwrap_or_default(), m.resource_version.clone()?))
        };
        Some(Inputs {
            service: svc.metadata.resource_version.clone()?,
            slices: slices.iter().map(|sl| version(&sl.metadata)).collect::<Option<_>>()?,
            vips: vips.to_vec(),
        })
    }
}

impl Syncer {
    /// [`sync`], mapping again only the Services whose inputs changed since the last call.
    pub fn sync<S: Borrow<Service>, E: Borrow<EndpointSlice>>(
        &mut self,
        services: &[S],
        slices: &[E],
        s: &Settings,
    ) -> Outcome {
        if self.settings.as_ref() != Some(s) {
            self.cache.clear();
            self.settings = Some(s.clone());
        }
        let mine: Vec<&Service> =
            services.iter().map(Borrow::borrow).filter(|x| ours(x, &s.class, s.classless)).collect();
        let mut events = Vec::new();
        let status = allocate(&mine, s, &mut events);
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for sl in slices.iter().map(Borrow::borrow) {
            if let Some(name) = sl.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                let ns = sl.metadata.namespace.as_deref().unwrap_or("default");
                by_service.entry((ns, name.as_str())).or_default().push(sl);
            }
        }
        let mut out = Vec::new();
        let mut seen: HashSet<ServiceKey> = HashSet::new();
        let mut live: HashSet<String> = HashSet::with_capacity(mine.len());
        for svc in &mine {
            let k = key(svc);
            let Some(vips) = status.get(&k) else { continue };
            let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
            let name = svc.metadata.name.as_deref().unwrap_or_default();
            let slices = by_service.get(&(ns, name)).map(Vec::as_slice).unwrap_or_default();
            let Some(inputs) = Inputs::of(svc, slices, vips) else {
                // Not cacheable: mapped every time.
                let specs = service_specs(svc, slices, vips, s.default_mode);
                emit(&k, &specs, &mut out, &mut seen, &mut events);
                continue;
            };
            if self.cache.get(&k).is_none_or(|c| c.inputs != inputs) {
                let specs = service_specs(svc, slices, vips, s.default_mode);
                self.cache.insert(k.clone(), Cached { inputs, specs });
            }
            if let Some(c) = self.cache.get(&k) {
                emit(&k, &c.specs, &mut out, &mut seen, &mut events);
            }
            live.insert(k);
        }
        // Services gone, no longer ours or without addresses.
        self.cache.retain(|k, _| live.contains(k));
        Outcome { services: out, status, events }
    }
}

/// Add one Service's VIP services to `out` (each VIP service once), or its error to `events`.
fn emit(
    k: &str,
    specs: &Result<Vec<ServiceSpec>, String>,
    out: &mut Vec<ServiceSpec>,
    seen: &mut HashSet<ServiceKey>,
    events: &mut Vec<Event>,
) {
    match specs {
        Ok(specs) => {
            for sp in specs {
                if seen.insert(crate::store::key_of(sp)) {
                    out.push(sp.clone());
                }
            }
        }
        Err(e) => events.push(ev(k, "Warning", "InvalidService", e.clone())),
    }
}

#[cfg(test)]
mod tests;
