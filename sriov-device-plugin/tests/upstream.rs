//! A drop-in for the upstream SR-IOV network device plugin: a configuration written here in upstream's format with
//! every key upstream defines is accepted (those that apply to VFs acted on, the others named once with the reason),
//! keys nobody defines are still refused, upstream's flags work, pools that match no device are not registered, and a
//! VF whose driver changes moves to the pool that now selects it and back, listed in one pool at a time.

mod common;

use common::kubelet::{start_kubelet, FakeKubelet};
use common::FakeSysfs;
use sriov_device_plugin::config;
use sriov_device_plugin::plugin::{self, unix_channel};
use sriov_device_plugin::v1beta1 as api;
use sriov_device_plugin::v1beta1::device_plugin_client::DevicePluginClient;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// Every key of upstream's configuration, in its format (fixture written for these tests).
const EVERY_KEY: &str = r#"{
  "resourceList": [
    {
      "resourceName": "dpdk_vf",
      "resourcePrefix": "edgelb.io",
      "deviceType": "netDevice",
      "excludeTopology": true,
      "additionalInfo": {"*": {"note": "lab"}},
      "selectors": [{
        "vendors": ["8086"], "devices": ["154c"], "drivers": ["vfio-pci"], "pciAddresses": ["0000:3b:02.0"],
        "pfNames": ["ens1f0#0-3"], "rootDevices": ["0000:3b:00.0#0-3"], "linkTypes": ["ether"],
        "ddpProfiles": ["GTPv1-C/U IPv4/IPv6 payload"], "isRdma": false, "needVhostNet": true,
        "vdpaType": "vhost", "acpiIndexes": ["101"], "pKeys": ["0x7fff"], "auxTypes": ["sf"]
      }]
    },
    {"resourceName": "rdma_vf", "selectors": {"isRdma": true}},
    {"resourceName": "qat", "deviceType": "accelerator", "selectors": {"drivers": ["vfio-pci"]}},
    {"resourceName": "sf", "deviceType": "auxNetDevice", "selectors": {"auxTypes": ["sf"]}},
    {"resourceName": "everything"}
  ]
}"#;

#[test]
fn every_upstream_key_is_accepted_acted_on_or_named() {
    let c = config::parse_with(EVERY_KEY, "example.org").unwrap();
    let names: Vec<String> = c.resource_list.iter().map(config::full_name).collect();
    assert_eq!(
        names,
        ["edgelb.io/dpdk_vf", "example.org/rdma_vf", "example.org/qat", "example.org/sf", "example.org/everything"]
    );
    let w = config::warnings(&c).join("\n");
    for key in ["additionalInfo", "ddpProfiles", "vdpaType", "pKeys", "auxTypes", "\"accelerator\"", "\"auxNetDevice\""]
    {
        assert!(w.contains(key), "{key} named: {w}");
    }
    assert!(!w.contains("needVhostNet") && !w.contains("acpiIndexes") && !w.contains("isRdma"), "acted on: {w}");
    // Acted on: the ACPI index and RDMA select VFs; no selectors selects every VF.
    let fs = FakeSysfs::standard();
    std::fs::write(fs.root.join("bus/pci/devices/0000:3b:00.0/acpi_index"), "101\n").unwrap();
    std::fs::create_dir_all(fs.root.join("bus/pci/devices/0000:af:02.1/infiniband/mlx5_1")).unwrap();
    let vfs = sriov_device_plugin::sysfs::discover(&fs.root);
    let pools = plugin::pools(&c, &vfs, &Default::default());
    let ids = |i: usize| pools[i].iter().map(|v| v.pci.clone()).collect::<Vec<_>>();
    assert_eq!(ids(0), ["0000:3b:02.0"]);
    assert_eq!(ids(1), ["0000:af:02.1"], "isRdma: the VF with an RDMA device");
    assert!(ids(2).is_empty() && ids(3).is_empty(), "accelerator and auxNetDevice pools are not served");
    assert_eq!(ids(4).len(), 6, "no selectors: every VF no earlier pool took");
    // Keys nobody defines are still refused.
    let e = config::parse(&EVERY_KEY.replace("\"needVhostNet\"", "\"needVhostNetwork\"")).unwrap_err();
    assert!(e.0.contains("needVhostNetwork"), "{e}");
}

#[test]
fn upstreams_flags_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, r#"{"resourceList": [{"resourceName": "a", "selectors": {"drivers": ["nope"]}}]}"#).unwrap();
    let bin = env!("CARGO_BIN_EXE_sriov-device-plugin");
    // A bad file through -config-file is a usage error naming it (exit 2), as a good one is read (here the plugin
    // then starts and is stopped by the timeout).
    std::fs::write(dir.path().join("bad.json"), "{").unwrap();
    let o = std::process::Command::new(bin)
        .arg(format!("-config-file={}", dir.path().join("bad.json").display()))
        .args(["-resource-prefix", "example.org"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.json"));
    let o = std::process::Command::new("timeout")
        .args(["1", bin, "-config-file"])
        .arg(&cfg)
        .args(["-resource-prefix", "example.org", "--sys-root"])
        .arg(dir.path())
        .arg("--plugin-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(124), "ran until the timeout: {}", String::from_utf8_lossy(&o.stderr));
}

/// Two pools by driver on one PF, and one that matches nothing.
const BY_DRIVER: &str = r#"{"resourceList": [
  {"resourceName": "dpdk", "resourcePrefix": "edgelb.io", "selectors": {"drivers": ["vfio-pci"], "pfNames": ["ens1f0"]}},
  {"resourceName": "kernel", "resourcePrefix": "edgelb.io", "selectors": {"drivers": ["iavf"], "pfNames": ["ens1f0"]}},
  {"resourceName": "none", "resourcePrefix": "edgelb.io", "selectors": {"drivers": ["nothing-binds-this"]}}
]}"#;

/// The latest listing of a pool (waiting, bounded, for one that satisfies `ok`).
async fn listing(
    c: &mut tonic::Streaming<api::ListAndWatchResponse>,
    ok: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), c.next())
            .await
            .expect("a listing within 5 s")
            .unwrap()
            .unwrap();
        let l: Vec<(String, String)> = m.devices.iter().map(|d| (d.id.clone(), d.health.clone())).collect();
        if ok(&l) {
            return l;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vf_follows_its_driver_between_pools_and_back() {
    let fs = FakeSysfs::standard();
    let dir = tempfile::tempdir().unwrap();
    let kdir = dir.path().join("device-plugins");
    std::fs::create_dir_all(&kdir).unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, BY_DRIVER).unwrap();
    let kubelet = FakeKubelet::default();
    start_kubelet(&kdir, kubelet.clone());
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let manager = tokio::spawn(plugin::run(cfg, fs.root.clone(), kdir.clone(), reload_rx, stop_rx));
    let endpoint = |name: &str| -> Option<String> {
        kubelet.registered.lock().unwrap().iter().find(|r| r.resource_name == name).map(|r| r.endpoint.clone())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while endpoint("edgelb.io/dpdk").is_none() {
        assert!(Instant::now() < deadline, "dpdk registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut dpdk =
        DevicePluginClient::new(unix_channel(&kdir.join(endpoint("edgelb.io/dpdk").unwrap())).await.unwrap())
            .list_and_watch(api::Empty {})
            .await
            .unwrap()
            .into_inner();
    let all_four = |l: &[(String, String)]| l.len() == 4 && l.iter().all(|(_, h)| h == "Healthy");
    listing(&mut dpdk, all_four).await;
    // A VF goes to iavf: the kernel pool appears (it matched nothing so far, so was not registered) and lists it;
    // the dpdk pool no longer does.
    fs.set_driver("0000:3b:02.1", Some("iavf"));
    let l = listing(&mut dpdk, |l| l.len() == 3).await;
    assert!(l.iter().all(|(id, h)| id != "0000:3b:02.1" && h == "Healthy"), "{l:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while endpoint("edgelb.io/kernel").is_none() {
        assert!(Instant::now() < deadline, "the kernel pool registered once it has a device");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut kernel =
        DevicePluginClient::new(unix_channel(&kdir.join(endpoint("edgelb.io/kernel").unwrap())).await.unwrap())
            .list_and_watch(api::Empty {})
            .await
            .unwrap()
            .into_inner();
    let l = listing(&mut kernel, |l| l.len() == 1).await;
    assert_eq!(l, [("0000:3b:02.1".to_string(), "Healthy".to_string())]);
    // Back to vfio-pci: the dpdk pool has four healthy VFs again and the kernel pool none (not one stuck Unhealthy).
    fs.set_driver("0000:3b:02.1", Some("vfio-pci"));
    listing(&mut dpdk, all_four).await;
    let l = listing(&mut kernel, |l| l.is_empty()).await;
    assert!(l.is_empty());
    assert!(endpoint("edgelb.io/none").is_none(), "a pool that matches no device is not registered");
    let _ = stop_tx.send(true);
    manager.await.unwrap().unwrap();
}
