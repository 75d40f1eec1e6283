//! Incremental snapshot builds equal full ones. One builder lives through a random sequence of changes (services
//! added, removed and moved, backends added, removed, drained and reweighted, neighbours learnt and forgotten, and
//! changes that fail validation); after every step its snapshot must be what a fresh builder makes of the same model:
//! the same services in the same order with the same settings, each Maglev slot naming the same backend, the same
//! backends with the same states and next hops. Ids are compared only for stability: a service or backend that
//! stays keeps its id from one step to the next.

use edgelb_dataplane::lb::maglev;
use edgelb_dataplane::model::{BackendSpec, BackendState, Mode, Model, Protocol, ServiceSpec};
use edgelb_dataplane::snapshot::{addr_from16, Backend, ConfigBuilder, DataplaneConfig};
use edgelb_testkit::models::every_mode;
use proptest::prelude::*;
use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Debug, Clone)]
enum Op {
    /// Add service number `n` (a new VIP) with `backends` backends.
    AddService { n: u8, backends: u8 },
    /// Remove the service at this index (modulo the count).
    RemoveService(usize),
    /// Move the service at this index to the end of the list.
    MoveService(usize),
    /// Add backend number `n` to a service.
    AddBackend { service: usize, n: u8 },
    /// Remove a service's backend at this index.
    RemoveBackend { service: usize, backend: usize },
    /// Set a backend's state.
    State { service: usize, backend: usize, state: u8 },
    /// Set a backend's weight.
    Weight { service: usize, backend: usize, weight: u32 },
    /// Give neighbour `n` a new MAC, or forget it (the backend's next hop changes or goes).
    Neighbour { n: usize, mac: Option<u8> },
    /// Set an explicit Maglev size (or automatic) on a service.
    Size { service: usize, size: Option<u32> },
    /// A change that fails validation: a DSR-L2 backend off-link.
    Invalid { service: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..40, 0u8..5).prop_map(|(n, backends)| Op::AddService { n, backends }),
        any::<usize>().prop_map(Op::RemoveService),
        any::<usize>().prop_map(Op::MoveService),
        (any::<usize>(), 0u8..60).prop_map(|(service, n)| Op::AddBackend { service, n }),
        (any::<usize>(), any::<usize>()).prop_map(|(service, backend)| Op::RemoveBackend { service, backend }),
        (any::<usize>(), any::<usize>(), 0u8..3).prop_map(|(service, backend, state)| Op::State {
            service,
            backend,
            state
        }),
        (any::<usize>(), any::<usize>(), 1u32..5).prop_map(|(service, backend, weight)| Op::Weight {
            service,
            backend,
            weight
        }),
        (any::<usize>(), proptest::option::of(any::<u8>())).prop_map(|(n, mac)| Op::Neighbour { n, mac }),
        (any::<usize>(), proptest::option::of(prop_oneof![Just(251u32), Just(1009), Just(2003)]))
            .prop_map(|(service, size)| Op::Size { service, size }),
        any::<usize>().prop_map(|service| Op::Invalid { service }),
    ]
}

fn backend_addr(n: u8) -> IpAddr {
    format!("198.18.2.{}", 100 + n).parse().unwrap()
}

/// Apply `op` to `m`; `false` when it does not apply (an empty list).
fn apply(m: &mut Model, op: &Op) -> bool {
    let count = m.services.len();
    match *op {
        Op::AddService { n, backends } => {
            let vip: IpAddr = format!("198.19.1.{n}").parse().unwrap();
            if m.services.iter().any(|s| s.vip == vip) {
                return false;
            }
            let bs = (0..backends)
                .map(|b| BackendSpec { addr: backend_addr(b), port: 8080, weight: 1, state: BackendState::Active })
                .collect();
            m.services.push(ServiceSpec::new(vip, Protocol::Tcp, Some(80), Mode::Nat, bs));
        }
        _ if count == 0 => return false,
        Op::RemoveService(i) => {
            m.services.remove(i % count);
        }
        Op::MoveService(i) => {
            let s = m.services.remove(i % count);
            m.services.push(s);
        }
        Op::AddBackend { service, n } => {
            let s = &mut m.services[service % count];
            if s.mode == Mode::DsrL2 || s.backends.iter().any(|b| b.addr == backend_addr(n)) {
                return false;
            }
            let port = s.backends.first().map_or(8080, |b| b.port);
            s.backends.push(BackendSpec { addr: backend_addr(n), port, weight: 1, state: BackendState::Active });
        }
        Op::RemoveBackend { service, backend } => {
            let s = &mut m.services[service % count];
            if s.backends.is_empty() {
                return false;
            }
            let n = s.backends.len();
            s.backends.remove(backend % n);
        }
        Op::State { service, backend, state } => {
            let s = &mut m.services[service % count];
            let n = s.backends.len();
            let Some(b) = s.backends.get_mut(backend % n.max(1)) else { return false };
            b.state = [BackendState::Active, BackendState::Draining, BackendState::Down][state as usize];
        }
        Op::Weight { service, backend, weight } => {
            let s = &mut m.services[service % count];
            let n = s.backends.len();
            let Some(b) = s.backends.get_mut(backend % n.max(1)) else { return false };
            b.weight = weight;
        }
        Op::Neighbour { n, mac } => {
            let addr = m.neighbours.get(n % m.neighbours.len().max(1)).map(|x| x.0);
            let Some(addr) = addr else { return false };
            match mac {
                Some(x) => m.neighbours.iter_mut().filter(|x| x.0 == addr).for_each(|e| e.1 = [2, 0, 0, 9, 9, x]),
                None => m.neighbours.retain(|x| x.0 != addr),
            }
        }
        Op::Size { service, size } => m.services[service % count].maglev_size = size,
        Op::Invalid { service } => {
            let s = &mut m.services[service % count];
            s.mode = Mode::DsrL2;
            s.backends = vec![BackendSpec {
                addr: "198.18.200.1".parse().unwrap(),
                port: 0,
                weight: 1,
                state: BackendState::Active,
            }];
        }
    }
    true
}

/// A backend as the workers see it, without its id: address, port, state, next hop (port, MAC), service index.
fn seen(b: &Backend) -> String {
    let hop = b.next_hop.map(|h| (h.port, h.mac));
    format!("{} {} {:?} {:?} {}", addr_from16(b.addr, b.v4), b.port, b.state, hop, b.service)
}

/// One service as the workers see it, ids replaced by what they name.
struct Observed {
    settings: String,
    /// The backend (address, port) of each Maglev slot.
    slots: Vec<(IpAddr, u16)>,
    size: usize,
    backends: Vec<String>,
}

/// What the workers can observe of snapshot `c`.
fn observed(c: &DataplaneConfig) -> Vec<Observed> {
    c.services
        .iter()
        .enumerate()
        .map(|(si, s)| {
            assert_eq!(c.service_for(&s.vip, s.proto, s.port), Some(si as u32), "VIP lookup of service {si}");
            let settings =
                format!("{:?} {} {} {:?} {} {} {}", s.vip, s.proto, s.port, s.mode, s.affinity_ms, s.gue_port, s.v4);
            let named =
                |id: u32| c.backend(id).map(|b| (addr_from16(b.addr, b.v4), b.port)).expect("id names a backend");
            let slots = s.maglev.slots().iter().map(|&i| named(s.maglev_ids[i as usize])).collect();
            let backends = s.backend_ids.iter().map(|&id| seen(c.backend(id).unwrap())).collect();
            Observed { settings, slots, size: s.maglev.size(), backends }
        })
        .collect()
}

/// Ids by key: services by (VIP, protocol, port), backends by (service key, address, port).
fn ids(c: &DataplaneConfig) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for s in &c.services {
        let k = format!("{:?}/{}/{}", s.vip, s.proto, s.port);
        for &id in s.backend_ids.iter() {
            let b = c.backend(id).unwrap();
            out.insert(format!("{k} {:?}:{}", b.addr, b.port), id);
        }
        out.insert(k, s.id);
    }
    out
}

fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = every_mode(1009);
    let mut builder = ConfigBuilder::new();
    let (mut last, _) = builder.build(&model).unwrap();
    for (step, op) in ops.iter().enumerate() {
        let mut next = model.clone();
        if !apply(&mut next, op) {
            continue;
        }
        let Ok((cfg, moved)) = builder.build(&next) else {
            // Refused: the model stays, and the next build must still match a fresh one.
            prop_assert!(
                ConfigBuilder::new().build(&next).is_err(),
                "step {step} {op:?}: only the incremental build failed"
            );
            continue;
        };
        let (fresh, _) = ConfigBuilder::new().build(&next).unwrap();
        let (got, want) = (observed(&cfg), observed(&fresh));
        prop_assert_eq!(got.len(), want.len(), "step {} {:?}: service count", step, op);
        for (si, (g, w)) in got.iter().zip(&want).enumerate() {
            prop_assert_eq!(&g.settings, &w.settings, "step {} {:?}: service {} settings", step, op, si);
            prop_assert_eq!(&g.backends, &w.backends, "step {} {:?}: service {} backends", step, op, si);
            prop_assert_eq!(g.size, w.size, "step {} {:?}: service {} table size", step, op, si);
            let differ = g.slots.iter().zip(&w.slots).filter(|(a, b)| a != b).count();
            prop_assert_eq!(
                differ,
                0,
                "step {} {:?}: service {}: {} Maglev slots name other backends",
                step,
                op,
                si,
                differ
            );
        }
        for s in cfg.services.iter().filter(|s| !s.maglev.backends().is_empty()) {
            let full = maglev::build(s.maglev.backends(), s.maglev.size() as u32).unwrap();
            prop_assert_eq!(
                s.maglev.slots(),
                full.slots(),
                "step {} {:?}: a shared table differs from a full build",
                step,
                op
            );
        }
        let (before, after) = (ids(&last), ids(&cfg));
        for (k, id) in &after {
            if let Some(old) = before.get(k) {
                prop_assert_eq!(old, id, "step {} {:?}: {} changed id", step, op, k);
            }
        }
        for m in &moved {
            let s = cfg.services.iter().find(|s| addr_from16(s.vip, s.v4) == m.vip && s.port == m.port).unwrap();
            prop_assert_eq!(m.table_size, s.maglev.size());
        }
        model = next;
        last = cfg;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn incremental_builds_equal_full_builds(ops in proptest::collection::vec(op(), 1..40)) {
        check(&ops)?;
    }
}

/// A large service gaining backends (one, then two more with the largest weight) takes the path that follows Maglev's
/// chains instead of building (900 backends in 65 537 slots keep their rounds); the snapshot is still what a fresh
/// builder makes, slot for slot. In both families.
#[test]
fn a_large_service_gaining_backends_equals_a_full_build() {
    for (vip, prefix) in [("198.19.1.200", "198.18.2."), ("2001:db8:100::200", "2001:db8:2::")] {
        let backend = |i: u16, weight: u32| BackendSpec {
            addr: format!("{prefix}{}", 100 + i % 100).parse().unwrap(),
            port: 8000 + i / 100,
            weight,
            state: BackendState::Active,
        };
        let mut model = every_mode(1009);
        let bs = (0..900).map(|i| backend(i, 1 + u32::from(i % 3))).collect();
        model.services.push(ServiceSpec::new(vip.parse().unwrap(), Protocol::Tcp, Some(80), Mode::Nat, bs));
        let mut builder = ConfigBuilder::new();
        builder.build(&model).unwrap();
        for added in [vec![backend(900, 2)], vec![backend(901, 3), backend(902, 1)]] {
            model.services.last_mut().unwrap().backends.extend(added);
            let (cfg, moved) = builder.build(&model).unwrap();
            let (fresh, _) = ConfigBuilder::new().build(&model).unwrap();
            let (got, want) = (observed(&cfg), observed(&fresh));
            let (g, w) = (got.last().unwrap(), want.last().unwrap());
            assert_eq!(g.size, 65_537);
            assert_eq!(g.backends, w.backends);
            assert!(g.slots == w.slots, "{vip}: Maglev slots differ from a full build");
            assert_eq!(moved.len(), 1, "only the large service's table changed");
        }
    }
}
