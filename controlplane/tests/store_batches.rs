//! The store merges batches in place and puts the model back when a batch is refused or only a dry run. Random
//! batches (upserts of known and new services, deletes of known and unknown ones, the same key twice, invalid specs,
//! dry runs) go to a store and to a plain reference merge; after each, the store's model must be the reference's
//! when the batch was valid and applied, and exactly what it was (order included) otherwise. A valid batch is
//! never refused; an empty one is accepted and changes nothing.

use edgelb_controlplane::store::{key_of, Batch, ServiceKey, Store};
use edgelb_dataplane::model::{BackendSpec, BackendState, Mode, Model, Protocol, ServiceSpec};
use edgelb_dataplane::snapshot::ConfigBuilder;
use edgelb_testkit::models::every_mode;
use proptest::prelude::*;
use std::net::IpAddr;

fn service(n: u8, backends: u8, valid: bool) -> ServiceSpec {
    let vip: IpAddr = format!("198.19.2.{n}").parse().unwrap();
    let bs = (0..backends)
        .map(|b| BackendSpec {
            addr: format!("198.18.2.{}", 100 + b).parse().unwrap(),
            port: 8080,
            // Weight 0 is refused by validation.
            weight: u32::from(valid),
            state: BackendState::Active,
        })
        .collect();
    ServiceSpec::new(vip, Protocol::Tcp, Some(80), Mode::Nat, bs)
}

#[derive(Debug, Clone)]
struct Spec {
    upserts: Vec<(u8, u8, bool)>,
    deletes: Vec<u8>,
    dry_run: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        proptest::collection::vec((0u8..12, 0u8..4, proptest::bool::weighted(0.9)), 0..4),
        proptest::collection::vec(0u8..12, 0..3),
        proptest::bool::weighted(0.15),
    )
        .prop_map(|(upserts, deletes, dry_run)| Spec { upserts, deletes, dry_run })
}

fn key(n: u8) -> ServiceKey {
    (format!("198.19.2.{n}").parse().unwrap(), Protocol::Tcp, Some(80))
}

/// The batch applied the plain way: `None` when it is malformed (a key twice, upserted and deleted, an unknown
/// delete) or the result does not build.
fn reference(model: &Model, b: &Batch) -> Option<Model> {
    let mut keys: Vec<ServiceKey> = b.upserts.iter().map(key_of).chain(b.deletes.iter().copied()).collect();
    let n = keys.len();
    keys.sort_by_key(|k| format!("{k:?}"));
    keys.dedup();
    if keys.len() != n {
        return None;
    }
    let mut m = model.clone();
    for d in &b.deletes {
        let i = m.services.iter().position(|s| key_of(s) == *d)?;
        m.services.remove(i);
    }
    for u in &b.upserts {
        match m.services.iter().position(|s| key_of(s) == key_of(u)) {
            Some(i) => m.services[i] = u.clone(),
            None => m.services.push(u.clone()),
        }
    }
    ConfigBuilder::new().build(&m).ok()?;
    Some(m)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn refused_and_dry_run_batches_leave_the_model_as_it_was(batches in proptest::collection::vec(spec(), 1..25)) {
        let store = Store::new(every_mode(1009)).unwrap();
        for (step, s) in batches.iter().enumerate() {
            let before = store.model();
            let batch = Batch {
                upserts: s.upserts.iter().map(|&(n, b, valid)| service(n, b, valid)).collect(),
                deletes: s.deletes.iter().map(|&n| key(n)).collect(),
                dry_run: s.dry_run,
                expected_version: 0,
            };
            let want = reference(&before, &batch);
            let got = store.apply(&batch, "test");
            let after = store.model();
            match (&want, &got) {
                (Some(m), Ok(a)) if !s.dry_run => {
                    // An empty batch is a no-op: accepted, not applied (no new version).
                    let empty = batch.upserts.is_empty() && batch.deletes.is_empty();
                    prop_assert_eq!(a.applied, !empty);
                    prop_assert_eq!(&after.services, &m.services, "step {}: {:?}", step, s);
                }
                (Some(_), Ok(a)) => {
                    prop_assert!(!a.applied);
                    prop_assert_eq!(&after.services, &before.services, "step {}: dry run changed the model", step);
                }
                (Some(_), Err(e)) => prop_assert!(false, "step {}: a valid batch {:?} was refused: {}", step, s, e),
                (None, Ok(_)) => prop_assert!(false, "step {}: an invalid batch {:?} was accepted", step, s),
                (None, Err(_)) => {
                    prop_assert_eq!(&after.services, &before.services, "step {}: refused {:?} changed the model", step, s);
                }
            }
            prop_assert_eq!(store.snapshot().services.len(), store.model().services.len());
        }
    }
}
