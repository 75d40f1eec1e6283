//! Discovery, selectors, VF ranges, NUMA-aware preferred allocation, health and the allocation response over a fake
//! sysfs tree (two PFs × four VFs, Intel on vfio-pci on NUMA 0, Mellanox on mlx5_core on NUMA 1).

mod common;

use common::FakeSysfs;
use sriov_device_plugin::config::parse;
use sriov_device_plugin::sysfs::{allocation, assign, discover, env_name, health, preferred};

#[test]
fn discovery_reads_what_the_kernel_shows() {
    let fs = FakeSysfs::standard();
    let vfs = discover(&fs.root);
    assert_eq!(vfs.len(), 8);
    let v = &vfs[1];
    assert_eq!((v.pci.as_str(), v.vendor.as_str(), v.device.as_str()), ("0000:3b:02.1", "8086", "154c"));
    assert_eq!((v.driver.as_deref(), v.numa, v.iommu_group.as_deref()), (Some("vfio-pci"), Some(0), Some("41")));
    assert_eq!(
        (v.pf.as_str(), v.pf_names.clone(), v.index, v.pf_up),
        ("0000:3b:00.0", vec!["ens1f0".to_string()], Some(1), true)
    );
    assert_eq!(v.link_type.as_deref(), Some("ether"));
    assert_eq!(vfs[4].driver.as_deref(), Some("mlx5_core"));
    // A missing tree is an empty list, not an error.
    assert!(discover(std::path::Path::new("/nonexistent")).is_empty());
}

#[test]
fn selectors_ranges_and_first_match() {
    let fs = FakeSysfs::standard();
    let vfs = discover(&fs.root);
    let c = parse(
        r#"{"resourceList": [
            {"resourceName": "dpdk", "resourcePrefix": "edgelb.io",
             "selectors": [{"vendors": ["8086"], "drivers": ["vfio-pci"], "pfNames": ["ens1f0#0,2-3"]}]},
            {"resourceName": "intel_rest", "resourcePrefix": "edgelb.io", "selectors": {"vendors": ["8086"]}},
            {"resourceName": "mlx", "resourcePrefix": "edgelb.io",
             "selectors": [{"rootDevices": ["0000:af:00.0#1-2"]}, {"devices": ["101e"], "linkTypes": ["infiniband"]}]},
            {"resourceName": "by_address", "resourcePrefix": "edgelb.io", "selectors": {"pciAddresses": ["0000:af:02.3"]}}
        ]}"#,
    )
    .unwrap();
    let pools = assign(&c.resource_list, &vfs);
    let ids = |i: usize| pools[i].iter().map(|v| v.pci.clone()).collect::<Vec<_>>();
    assert_eq!(ids(0), ["0000:3b:02.0", "0000:3b:02.2", "0000:3b:02.3"]);
    assert_eq!(ids(1), ["0000:3b:02.1"], "first match wins: VF 1 is left to the second resource");
    assert_eq!(ids(2), ["0000:af:02.1", "0000:af:02.2"], "link type ether does not match infiniband");
    assert_eq!(ids(3), ["0000:af:02.3"]);
}

#[test]
fn preferred_allocation_keeps_to_one_numa_node_then_spreads_over_pfs() {
    let fs = FakeSysfs::standard();
    let all = discover(&fs.root);
    let ids: Vec<String> = all.iter().map(|v| v.pci.clone()).collect();
    // Three of eight: all from one node (both nodes have four; the first wins), one per PF round.
    let p = preferred(&all, &ids, &[], 3);
    assert_eq!(p.len(), 3);
    let nodes: std::collections::HashSet<_> =
        p.iter().map(|id| all.iter().find(|v| &v.pci == id).unwrap().numa).collect();
    assert_eq!(nodes.len(), 1, "{p:?}");
    // A must-include device pins the node.
    let p = preferred(&all, &ids, &["0000:af:02.3".to_string()], 2);
    assert_eq!(p[0], "0000:af:02.3");
    assert!(p.iter().all(|id| id.starts_with("0000:af")), "{p:?}");
    // More than one node holds: the rest come from the other.
    assert_eq!(preferred(&all, &ids, &[], 6).len(), 6);
    // Devices not in the pool are never offered.
    assert!(preferred(&all[..2], &ids, &[], 4).len() <= 2);
}

#[test]
fn health_follows_driver_pf_link_and_presence() {
    let fs = FakeSysfs::standard();
    let before = discover(&fs.root);
    let find = |vfs: &[sriov_device_plugin::sysfs::Vf], id: &str| vfs.iter().find(|v| v.pci == id).cloned();
    let v = find(&before, "0000:3b:02.0").unwrap();
    assert!(health(&v, find(&discover(&fs.root), "0000:3b:02.0").as_ref()).is_ok());
    fs.set_driver("0000:3b:02.0", Some("iavf"));
    let e = health(&v, find(&discover(&fs.root), "0000:3b:02.0").as_ref()).unwrap_err();
    assert!(e.contains("driver changed"), "{e}");
    fs.set_driver("0000:3b:02.0", Some("vfio-pci"));
    fs.set_operstate("0000:3b:00.0", "ens1f0", "down");
    let e = health(&v, find(&discover(&fs.root), "0000:3b:02.0").as_ref()).unwrap_err();
    assert!(e.contains("link down"), "{e}");
    fs.set_operstate("0000:3b:00.0", "ens1f0", "up");
    fs.remove("0000:3b:02.0");
    let e = health(&v, find(&discover(&fs.root), "0000:3b:02.0").as_ref()).unwrap_err();
    assert!(e.contains("disappeared"), "{e}");
}

#[test]
fn allocation_gives_pci_addresses_info_and_vfio_devices() {
    let fs = FakeSysfs::standard();
    let all = discover(&fs.root);
    assert_eq!(env_name("edgelb.io", "sriov_vf"), "PCIDEVICE_EDGELB_IO_SRIOV_VF");
    let ids = vec!["0000:3b:02.1".to_string(), "0000:3b:02.2".to_string()];
    let (env, nodes) = allocation("edgelb.io", "sriov_vf", &all, &ids).unwrap();
    assert_eq!(env["PCIDEVICE_EDGELB_IO_SRIOV_VF"], "0000:3b:02.1,0000:3b:02.2");
    let info: serde_json::Value = serde_json::from_str(&env["PCIDEVICE_EDGELB_IO_SRIOV_VF_INFO"]).unwrap();
    assert_eq!(info["0000:3b:02.2"]["vfio"]["dev-mount"], "/dev/vfio/42");
    let paths: Vec<&str> = nodes.iter().map(|n| n.host_path.as_str()).collect();
    assert_eq!(paths, ["/dev/vfio/vfio", "/dev/vfio/41", "/dev/vfio/42"]);
    // A netdevice-bound VF has no vfio nodes.
    let (_, nodes) = allocation("edgelb.io", "mlx", &all, &["0000:af:02.0".to_string()]).unwrap();
    assert!(nodes.is_empty());
    assert!(allocation("edgelb.io", "x", &all, &["0000:99:00.0".to_string()]).is_err());
}

/// The ConfigMap in `configs/kubernetes/` holds a configuration this plugin accepts.
#[test]
fn the_shipped_configmap_parses() {
    let y =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/kubernetes/sriov-device-plugin.yaml"))
            .unwrap();
    let start = y.find("config.json: |").expect("config.json in the ConfigMap");
    let body: String = y[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let c = parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(sriov_device_plugin::config::full_name(&c.resource_list[0]), "edgelb.io/dpdk_vf");
}
