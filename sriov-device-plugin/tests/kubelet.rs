//! The plugin against a fake kubelet (the `Registration` service on `kubelet.sock` in a temp dir) over a fake sysfs:
//! registration, ListAndWatch with health flips, GetPreferredAllocation and Allocate over the plugin's socket (Allocate
//! also from Python's grpcio, a client nobody here wrote), re-registration after a kubelet restart wipes the
//! directory, and configuration reloads that add resources and move VFs without handing out an allocated one twice.

mod common;

use common::kubelet::{start_kubelet, FakeKubelet};
use common::FakeSysfs;
use sriov_device_plugin::plugin::{self, unix_channel};
use sriov_device_plugin::v1beta1 as api;
use sriov_device_plugin::v1beta1::device_plugin_client::DevicePluginClient;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

async fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const CONFIG: &str = r#"{"resourceList": [
  {"resourceName": "dpdk_vf", "resourcePrefix": "edgelb.io", "selectors": [{"drivers": ["vfio-pci"], "pfNames": ["ens1f0#0-2"]}]}
]}"#;

fn python() -> PathBuf {
    let venv = std::env::var("EDGELB_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/venv"));
    venv.join("bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_registers_serves_watches_and_survives_kubelet_restarts_and_reloads() {
    // The plugin's log, shown with --nocapture.
    let _ = tracing_subscriber::fmt().with_target(false).with_ansi(false).with_test_writer().try_init();
    let fs = FakeSysfs::standard();
    let dir = tempfile::tempdir().unwrap();
    let kdir = dir.path().join("device-plugins");
    std::fs::create_dir_all(&kdir).unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, CONFIG).unwrap();
    let kubelet = FakeKubelet::default();
    let kt = start_kubelet(&kdir, kubelet.clone());
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let manager = tokio::spawn(plugin::run(cfg.clone(), fs.root.clone(), kdir.clone(), reload_rx, stop_rx));

    // Registration.
    let reg = wait_for("registration", 5, || kubelet.registered.lock().unwrap().first().cloned()).await;
    assert_eq!((reg.resource_name.as_str(), reg.version.as_str()), ("edgelb.io/dpdk_vf", "v1beta1"));
    assert!(reg.options.as_ref().is_some_and(|o| o.get_preferred_allocation_available));
    let sock = kdir.join(&reg.endpoint);
    assert!(sock.exists(), "{}", sock.display());
    let mut c = DevicePluginClient::new(unix_channel(&sock).await.unwrap());
    let opts = c.get_device_plugin_options(api::Empty {}).await.unwrap().into_inner();
    assert!(opts.get_preferred_allocation_available && !opts.pre_start_required);

    // ListAndWatch: three healthy VFs on NUMA 0; a driver change and a PF link down arrive within 2 s.
    let mut watch = c.list_and_watch(api::Empty {}).await.unwrap().into_inner();
    let first = watch.next().await.unwrap().unwrap();
    let ids: Vec<&str> = first.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2"]);
    assert!(first.devices.iter().all(|d| d.health == "Healthy" && d.topology.as_ref().unwrap().nodes[0].id == 0));
    let t0 = Instant::now();
    fs.set_driver("0000:3b:02.1", Some("iavf"));
    let next =
        tokio::time::timeout(Duration::from_secs(2), watch.next()).await.expect("update within 2 s").unwrap().unwrap();
    let h: Vec<(&str, &str)> = next.devices.iter().map(|d| (d.id.as_str(), d.health.as_str())).collect();
    assert!(h.contains(&("0000:3b:02.1", "Unhealthy")), "{h:?} after {:?}", t0.elapsed());
    fs.set_driver("0000:3b:02.1", Some("vfio-pci"));
    fs.set_operstate("0000:3b:00.0", "ens1f0", "down");
    let all_down = loop {
        let m = tokio::time::timeout(Duration::from_secs(2), watch.next())
            .await
            .expect("update within 2 s")
            .unwrap()
            .unwrap();
        if m.devices.iter().all(|d| d.health == "Unhealthy") {
            break m;
        }
    };
    assert_eq!(all_down.devices.len(), 3);
    fs.set_operstate("0000:3b:00.0", "ens1f0", "up");
    loop {
        let m = tokio::time::timeout(Duration::from_secs(2), watch.next())
            .await
            .expect("update within 2 s")
            .unwrap()
            .unwrap();
        if m.devices.iter().all(|d| d.health == "Healthy") {
            break;
        }
    }

    // Preferred allocation and Allocate over the socket.
    let pref = c
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: ids.iter().map(|s| s.to_string()).collect(),
                must_include_device_i_ds: vec![],
                allocation_size: 2,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pref.container_responses[0].device_i_ds.len(), 2);
    let alloc = c
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest { devices_ids: vec!["0000:3b:02.0".into()] }],
        })
        .await
        .unwrap()
        .into_inner();
    let r = &alloc.container_responses[0];
    println!("Allocate response: {r:#?}");
    assert_eq!(r.envs["PCIDEVICE_EDGELB_IO_DPDK_VF"], "0000:3b:02.0");
    assert!(r.envs["PCIDEVICE_EDGELB_IO_DPDK_VF_INFO"].contains("/dev/vfio/40"));
    let paths: Vec<&str> = r.devices.iter().map(|d| d.host_path.as_str()).collect();
    assert_eq!(paths, ["/dev/vfio/vfio", "/dev/vfio/40"]);
    let e = c
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest { devices_ids: vec!["0000:af:02.0".into()] }],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // Python's grpcio allocates through the plugin's socket, discovering the service by reflection.
    let py = python();
    if py.exists() {
        let script = r#"
import sys, grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
ch = grpc.insecure_channel("unix://" + sys.argv[1], options=[("grpc.default_authority", "localhost")])
grpc.channel_ready_future(ch).result(timeout=5)
pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(ch))
m = pool.FindServiceByName("v1beta1.DevicePlugin").FindMethodByName("Allocate")
Req, Resp = message_factory.GetMessageClass(m.input_type), message_factory.GetMessageClass(m.output_type)
call = ch.unary_unary("/v1beta1.DevicePlugin/Allocate", request_serializer=Req.SerializeToString, response_deserializer=Resp.FromString)
r = call(Req(container_requests=[{"devices_ids": ["0000:3b:02.2"]}]), timeout=5)
env = dict(r.container_responses[0].envs)
assert env["PCIDEVICE_EDGELB_IO_DPDK_VF"] == "0000:3b:02.2", env
print("python allocate ok", sorted(env))
"#;
        let out = std::process::Command::new(&py).arg("-c").arg(script).arg(&sock).output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        panic!("{} missing: scripts/test.sh makes the venv with grpcio and grpcio-reflection", py.display());
    }

    // Kubelet restart: it wipes the directory (our socket goes) and comes back; we register again within 5 s.
    println!("-- simulated kubelet restart --");
    kt.abort();
    for e in std::fs::read_dir(&kdir).unwrap().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    let kubelet2 = FakeKubelet::default();
    let _kt2 = start_kubelet(&kdir, kubelet2.clone());
    let t0 = Instant::now();
    let again = wait_for("re-registration", 5, || kubelet2.registered.lock().unwrap().first().cloned()).await;
    println!("re-registered after {:?}", t0.elapsed());
    assert_eq!(again.resource_name, "edgelb.io/dpdk_vf");
    assert!(kdir.join(&again.endpoint).exists());

    // Reload: a second resource for the rest of ens1f0 (VF 0-3 by its PF), which must not offer the allocated VFs
    // 0000:3b:02.0 and .2; the first resource narrows to VF 1 only but keeps what it allocated.
    std::fs::write(
        &cfg,
        r#"{"resourceList": [
  {"resourceName": "dpdk_vf", "resourcePrefix": "edgelb.io", "selectors": [{"pfNames": ["ens1f0#1"]}]},
  {"resourceName": "more_vf", "resourcePrefix": "edgelb.io", "selectors": [{"rootDevices": ["0000:3b:00.0"]}]}
]}"#,
    )
    .unwrap();
    reload_tx.send(()).await.unwrap();
    let more = wait_for("the new resource registered", 5, || {
        kubelet2.registered.lock().unwrap().iter().find(|r| r.resource_name == "edgelb.io/more_vf").cloned()
    })
    .await;
    let mut mc = DevicePluginClient::new(unix_channel(&kdir.join(&more.endpoint)).await.unwrap());
    let l = mc.list_and_watch(api::Empty {}).await.unwrap().into_inner().next().await.unwrap().unwrap();
    let more_ids: Vec<&str> = l.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(more_ids, ["0000:3b:02.3"], "allocated VFs are not handed out by another resource");
    let mut c = DevicePluginClient::new(unix_channel(&kdir.join(&again.endpoint)).await.unwrap());
    let l = c.list_and_watch(api::Empty {}).await.unwrap().into_inner().next().await.unwrap().unwrap();
    let mine: Vec<&str> = l.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(mine, ["0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2"], "the first resource keeps what it allocated");

    let _ = stop_tx.send(true);
    manager.await.unwrap().unwrap();
    assert!(!kdir.join(&again.endpoint).exists(), "sockets removed at stop");
}

#[test]
fn pools_keep_allocated_vfs_with_their_resource() {
    let fs = FakeSysfs::standard();
    let vfs = sriov_device_plugin::sysfs::discover(&fs.root);
    let cfg = sriov_device_plugin::config::parse(CONFIG).unwrap();
    let alloc = std::collections::HashMap::from([(
        "edgelb.io/other".to_string(),
        std::collections::HashSet::from(["0000:3b:02.1".to_string()]),
    )]);
    let p = plugin::pools(&cfg, &vfs, &alloc);
    let ids: Vec<&str> = p[0].iter().map(|v| v.pci.as_str()).collect();
    assert_eq!(ids, ["0000:3b:02.0", "0000:3b:02.2"], "a VF allocated by another resource is withheld");
}
