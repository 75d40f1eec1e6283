//! API messages to and from the model. Errors name the field in the request's terms.

use crate::store::{ServiceKey, StoreError};
use edgelb_api::v1;
use edgelb_dataplane::model::{
    BackendSpec, BackendState, FieldPath, HealthKind, HealthSpec, Mode, Protocol, ServiceSpec,
};
use edgelb_dataplane::snapshot::SlotsMoved;
use std::net::IpAddr;

/// The model's field names the API spells differently, for [`FieldPath::render`].
pub const NAMES: &[(&str, &str)] = &[("addr", "address")];

fn bad(path: FieldPath, message: impl Into<String>) -> StoreError {
    StoreError::Invalid { path, message: message.into() }
}

fn ip(s: &str, field: FieldPath) -> Result<IpAddr, StoreError> {
    s.trim().parse().map_err(|_| bad(field, format!("{s:?} is not an IP address")))
}

fn port16(v: u32, field: FieldPath) -> Result<u16, StoreError> {
    u16::try_from(v).map_err(|_| bad(field, format!("{v} is not a port (0..=65535)")))
}

/// A protocol enum value.
pub fn protocol(v: i32, field: FieldPath) -> Result<Protocol, StoreError> {
    match v1::Protocol::try_from(v) {
        Ok(v1::Protocol::Tcp) => Ok(Protocol::Tcp),
        Ok(v1::Protocol::Udp) => Ok(Protocol::Udp),
        _ => Err(bad(field, format!("protocol {v}: expected PROTOCOL_TCP or PROTOCOL_UDP"))),
    }
}

/// Our protocol as the API's.
pub fn protocol_out(p: Protocol) -> i32 {
    match p {
        Protocol::Tcp => v1::Protocol::Tcp as i32,
        Protocol::Udp => v1::Protocol::Udp as i32,
    }
}

fn mode(v: i32, field: FieldPath) -> Result<Mode, StoreError> {
    match v1::Mode::try_from(v) {
        Ok(v1::Mode::Nat) => Ok(Mode::Nat),
        Ok(v1::Mode::Fullnat) => Ok(Mode::FullNat),
        Ok(v1::Mode::DsrL2) => Ok(Mode::DsrL2),
        Ok(v1::Mode::Ipip) => Ok(Mode::Ipip),
        Ok(v1::Mode::Gue) => Ok(Mode::Gue),
        _ => Err(bad(
            field,
            format!("mode {v}: expected one of MODE_NAT, MODE_FULLNAT, MODE_DSR_L2, MODE_IPIP, MODE_GUE"),
        )),
    }
}

fn mode_out(m: Mode) -> i32 {
    (match m {
        Mode::Nat => v1::Mode::Nat,
        Mode::FullNat => v1::Mode::Fullnat,
        Mode::DsrL2 => v1::Mode::DsrL2,
        Mode::Ipip => v1::Mode::Ipip,
        Mode::Gue => v1::Mode::Gue,
    }) as i32
}

fn svc_port(port: u32, all_ports: bool, f: &dyn Fn(&'static str) -> FieldPath) -> Result<Option<u16>, StoreError> {
    match (port, all_ports) {
        (0, true) => Ok(None),
        (0, false) => Err(bad(f("port"), "port 0: give a port 1..=65535, or all_ports for every port")),
        (_, true) => Err(bad(f("port"), format!("port {port} with all_ports: give one or the other"))),
        (p, false) => port16(p, f("port")).map(Some),
    }
}

/// A service key from the API.
pub fn key(k: &v1::ServiceKey, at: &FieldPath) -> Result<ServiceKey, StoreError> {
    let f = |x: &'static str| at.clone().field(x);
    Ok((ip(&k.vip, f("vip"))?, protocol(k.protocol, f("protocol"))?, svc_port(k.port, k.all_ports, &f)?))
}

/// A service key for the API.
pub fn key_out(k: &ServiceKey) -> v1::ServiceKey {
    v1::ServiceKey {
        vip: k.0.to_string(),
        protocol: protocol_out(k.1),
        port: u32::from(k.2.unwrap_or(0)),
        all_ports: k.2.is_none(),
    }
}

/// A backend from the API (`at` names it, e.g. `upserts[0].backends[2]`).
pub fn backend(b: &v1::Backend, at: &FieldPath) -> Result<BackendSpec, StoreError> {
    let f = |x: &'static str| at.clone().field(x);
    // Unset (0) is the default weight; the range is the model's rule (1..=65535), checked with the rest.
    let weight = if b.weight == 0 { 1 } else { b.weight };
    let state = match v1::BackendState::try_from(b.state) {
        Ok(v1::BackendState::Active) => BackendState::Active,
        Ok(v1::BackendState::Draining) => BackendState::Draining,
        Ok(v1::BackendState::Down) => BackendState::Down,
        Err(_) => return Err(bad(f("state"), format!("state {}: expected ACTIVE, DRAINING or DOWN", b.state))),
    };
    Ok(BackendSpec { addr: ip(&b.address, f("address"))?, port: port16(b.port, f("port"))?, weight, state })
}

/// A service from the API (`at` names it, e.g. `upserts[1]`).
pub fn service(s: &v1::Service, at: &FieldPath) -> Result<ServiceSpec, StoreError> {
    let f = |x: &'static str| at.clone().field(x);
    let vip = ip(&s.vip, f("vip"))?;
    let proto = protocol(s.protocol, f("protocol"))?;
    let port = svc_port(s.port, s.all_ports, &f)?;
    let m = mode(s.mode, f("mode"))?;
    let backends = s
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| backend(b, &at.clone().field("backends").index(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut spec = ServiceSpec::new(vip, proto, port, m, backends);
    spec.affinity_timeout_s = (s.affinity_timeout_s > 0).then_some(s.affinity_timeout_s);
    spec.maglev_size = (s.maglev_size != 0).then_some(s.maglev_size);
    if let Some(h) = &s.health {
        spec.health = Some(health(h, &f("health"))?);
    }
    if s.gue_port != 0 {
        spec.gue_port = port16(s.gue_port, f("gue_port"))?;
    }
    Ok(spec)
}

/// A health check from the API; zero fields take the defaults the file has ([`HealthSpec`]'s constants).
fn health(h: &v1::HealthCheck, at: &FieldPath) -> Result<HealthSpec, StoreError> {
    let f = |x: &'static str| at.clone().field(x);
    let kind = match v1::HealthType::try_from(h.r#type) {
        Ok(v1::HealthType::Tcp) => HealthKind::Tcp,
        Ok(v1::HealthType::Http) => HealthKind::Http {
            path: if h.path.is_empty() { HealthSpec::DEFAULT_HTTP_PATH.into() } else { h.path.clone() },
            expect_status: match h.expect_status {
                0 => HealthSpec::DEFAULT_HTTP_STATUS,
                s => u16::try_from(s).map_err(|_| bad(f("expect_status"), format!("{s} is not an HTTP status")))?,
            },
        },
        _ => return Err(bad(f("type"), format!("type {}: expected HEALTH_TYPE_TCP or HEALTH_TYPE_HTTP", h.r#type))),
    };
    let or = |v: u32, d: u32| if v == 0 { d } else { v };
    Ok(HealthSpec {
        kind,
        port: port16(h.port, f("port"))?,
        interval_ms: or(h.interval_ms, HealthSpec::DEFAULT_INTERVAL_MS),
        timeout_ms: or(h.timeout_ms, HealthSpec::DEFAULT_TIMEOUT_MS),
        rise: or(h.rise, HealthSpec::DEFAULT_RISE),
        fall: or(h.fall, HealthSpec::DEFAULT_FALL),
        keep_flows: h.keep_flows,
    })
}

fn health_out(h: &HealthSpec) -> v1::HealthCheck {
    let (t, path, expect_status) = match &h.kind {
        HealthKind::Tcp => (v1::HealthType::Tcp, String::new(), 0),
        HealthKind::Http { path, expect_status } => (v1::HealthType::Http, path.clone(), u32::from(*expect_status)),
    };
    v1::HealthCheck {
        r#type: t as i32,
        path,
        expect_status,
        port: u32::from(h.port),
        interval_ms: h.interval_ms,
        timeout_ms: h.timeout_ms,
        rise: h.rise,
        fall: h.fall,
        keep_flows: h.keep_flows,
    }
}

/// A service as the API shows it.
pub fn service_out(s: &ServiceSpec) -> v1::Service {
    v1::Service {
        vip: s.vip.to_string(),
        protocol: protocol_out(s.protocol),
        port: u32::from(s.port.unwrap_or(0)),
        all_ports: s.port.is_none(),
        mode: mode_out(s.mode),
        affinity_timeout_s: s.affinity_timeout_s.unwrap_or(0),
        maglev_size: s.maglev_size.unwrap_or(0),
        table_size: s.table_size(),
        gue_port: u32::from(s.gue_port),
        health: s.health.as_ref().map(health_out),
        backends: s
            .backends
            .iter()
            .map(|b| v1::Backend {
                address: b.addr.to_string(),
                port: u32::from(b.port),
                weight: b.weight,
                state: (match b.state {
                    BackendState::Active => v1::BackendState::Active,
                    BackendState::Draining => v1::BackendState::Draining,
                    BackendState::Down => v1::BackendState::Down,
                }) as i32,
            })
            .collect(),
        source: String::new(),
    }
}

/// Slot movement as the API shows it.
pub fn moved_out(m: &[SlotsMoved]) -> Vec<v1::SlotsMoved> {
    m.iter()
        .map(|x| v1::SlotsMoved {
            vip: x.vip.to_string(),
            protocol: if x.proto == 17 { v1::Protocol::Udp as i32 } else { v1::Protocol::Tcp as i32 },
            port: u32::from(x.port),
            moved: x.moved as u32,
            table_size: x.table_size as u32,
        })
        .collect()
}
