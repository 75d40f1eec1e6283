//! The API's changes laid over the config file: they survive a reload of the file (`Store::replace`, what SIGHUP
//! does) and, kept in a state file, a restart; `service list` says where each service comes from; an empty batch
//! changes nothing.

use edgelb_controlplane::state::{self, Loaded};
use edgelb_controlplane::store::{key_of, Batch, Store};
use edgelb_dataplane::model::{BackendSpec, BackendState, Mode, Protocol, ServiceSpec};
use edgelb_testkit::models::every_mode;

fn api_service() -> ServiceSpec {
    let b = BackendSpec { addr: "198.18.2.77".parse().unwrap(), port: 8080, weight: 1, state: BackendState::Active };
    ServiceSpec::new("198.19.9.9".parse().unwrap(), Protocol::Tcp, Some(80), Mode::Nat, vec![b])
}

#[test]
fn api_changes_survive_a_reload_and_a_restart_with_a_state_file() {
    let file = every_mode(1009);
    let gone = key_of(&file.services[0]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgelbd.state");
    let store = Store::new(file.clone()).unwrap();
    store.attach_state(path.clone(), Default::default()).unwrap();
    let batch = Batch { upserts: vec![api_service()], deletes: vec![gone], ..Default::default() };
    assert!(store.apply(&batch, "api").unwrap().applied);
    let keys = |s: &Store| s.services().1.iter().map(key_of).collect::<Vec<_>>();
    let added = key_of(&api_service());
    assert_eq!((store.source_of(&added), store.source_of(&key_of(&file.services[1]))), ("api", "file"));
    // SIGHUP with the same file: the API's changes stay.
    store.replace(file.clone(), "file").unwrap();
    assert!(keys(&store).contains(&added) && !keys(&store).contains(&gone), "{:?}", keys(&store));
    // A restart: a new store on the file, the state file laid over it.
    let o = match state::load(&path).unwrap() {
        Loaded::Good(o) => o,
        other => panic!("{other:?}"),
    };
    let again = Store::new(file.clone()).unwrap();
    again.attach_state(path.clone(), o).unwrap();
    assert_eq!(keys(&again), keys(&store));
    // An empty batch: accepted, nothing changes, no new version.
    let v = again.version();
    let a = again.apply(&Batch::default(), "api").unwrap();
    assert_eq!((a.applied, a.version, again.version()), (false, v, v));
}

#[test]
fn without_a_state_file_the_api_changes_still_survive_a_reload() {
    let file = every_mode(1009);
    let store = Store::new(file.clone()).unwrap();
    store.apply(&Batch { upserts: vec![api_service()], ..Default::default() }, "api").unwrap();
    store.replace(file, "file").unwrap();
    assert!(store.services().1.iter().any(|s| key_of(s) == key_of(&api_service())));
}
