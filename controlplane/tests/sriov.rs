//! VF binding: the sysfs writes land in a fake tree as the kernel would see them, an already bound VF is left alone,
//! and missing prerequisites are named with their fix; the netlink VF request sent for a veth (no SR-IOV) in a test
//! namespace gets the kernel's refusal, reported clearly.

use edgelb_controlplane::sriov::{bind_vfio, driver_of, set_vf, unbind_vfio, VfSettings};
use std::os::unix::fs::symlink;
use std::path::Path;

/// A PF and one VF on `iavf`, with an IOMMU group; vfio-pci loaded when `vfio`.
fn tree(root: &Path, vfio: bool, group: bool) {
    let dev = root.join("bus/pci/devices/0000:3b:02.1");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("driver_override"), "\n").unwrap();
    for d in ["iavf"].into_iter().chain(vfio.then_some("vfio-pci")) {
        let p = root.join("bus/pci/drivers").join(d);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("bind"), "").unwrap();
        std::fs::write(p.join("unbind"), "").unwrap();
    }
    std::fs::write(root.join("bus/pci/drivers_probe"), "").unwrap();
    symlink(root.join("bus/pci/drivers/iavf"), dev.join("driver")).unwrap();
    if group {
        std::fs::create_dir_all(root.join("kernel/iommu_groups/41")).unwrap();
        symlink(root.join("kernel/iommu_groups/41"), dev.join("iommu_group")).unwrap();
    }
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap()
}

#[test]
fn binding_writes_what_the_kernel_expects_and_names_missing_prerequisites() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    tree(root, true, true);
    assert_eq!(driver_of(root, "0000:3b:02.1").as_deref(), Some("iavf"));
    let group = bind_vfio(root, "0000:3b:02.1").unwrap();
    assert_eq!(group, "41");
    assert_eq!(read(root, "bus/pci/devices/0000:3b:02.1/driver_override"), "vfio-pci");
    assert_eq!(read(root, "bus/pci/drivers/iavf/unbind"), "0000:3b:02.1");
    assert_eq!(read(root, "bus/pci/drivers/vfio-pci/bind"), "0000:3b:02.1");
    // The kernel would now show the VF on vfio-pci; binding again changes nothing.
    std::fs::remove_file(root.join("bus/pci/devices/0000:3b:02.1/driver")).unwrap();
    symlink(root.join("bus/pci/drivers/vfio-pci"), root.join("bus/pci/devices/0000:3b:02.1/driver")).unwrap();
    std::fs::write(root.join("bus/pci/drivers/vfio-pci/bind"), "").unwrap();
    bind_vfio(root, "0000:3b:02.1").unwrap();
    assert_eq!(read(root, "bus/pci/drivers/vfio-pci/bind"), "", "idempotent");
    // And back to the kernel driver.
    unbind_vfio(root, "0000:3b:02.1").unwrap();
    assert_eq!(read(root, "bus/pci/devices/0000:3b:02.1/driver_override"), "\n");
    assert_eq!(read(root, "bus/pci/drivers/vfio-pci/unbind"), "0000:3b:02.1");
    assert_eq!(read(root, "bus/pci/drivers_probe"), "0000:3b:02.1");

    let t = tempfile::tempdir().unwrap();
    tree(t.path(), true, false);
    let e = bind_vfio(t.path(), "0000:3b:02.1").unwrap_err();
    assert!(e.to_string().contains("no iommu_group") && e.to_string().contains("intel_iommu=on"), "{e}");
    let t = tempfile::tempdir().unwrap();
    tree(t.path(), false, true);
    let e = bind_vfio(t.path(), "0000:3b:02.1").unwrap_err();
    assert!(e.to_string().contains("modprobe vfio-pci"), "{e}");
    let e = bind_vfio(t.path(), "0000:99:00.0").unwrap_err();
    assert!(e.to_string().contains("no such PCI device"), "{e}");
}

#[test]
fn netlink_vf_request_on_a_veth_gets_the_kernels_refusal() {
    edgelb_testkit::netns::require_root();
    let mut lab = edgelb_testkit::netns::Lab::new("vf");
    let (a, b) = (lab.ns("a"), lab.ns("b"));
    lab.veth(&a, "pf0", &b, "peer0");
    let r = edgelb_testkit::netns::in_netns(&a, || {
        set_vf("pf0", &VfSettings { vf: 0, mac: Some([2, 0, 0, 0, 0x10, 0]), trust: Some(true), ..Default::default() })
    });
    let e = r.unwrap_err();
    println!("{e}");
    assert!(e.step.contains("set VF 0 on pf0"), "{e}");
    assert!(e.cause.contains("not supported") || e.cause.contains("Invalid argument"), "{e}");
    assert!(e.hint.is_some(), "{e}");
    let missing = edgelb_testkit::netns::in_netns(&a, || set_vf("nope0", &VfSettings::default())).unwrap_err();
    assert!(missing.to_string().contains("no such interface"), "{missing}");
}

#[test]
fn a_vf_is_found_by_pf_name_and_index() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    tree(root, true, true);
    std::fs::create_dir_all(root.join("bus/pci/devices/0000:3b:00.0")).unwrap();
    symlink(root.join("bus/pci/devices/0000:3b:02.1"), root.join("bus/pci/devices/0000:3b:00.0/virtfn1")).unwrap();
    std::fs::create_dir_all(root.join("class/net/ens1f0")).unwrap();
    symlink(root.join("bus/pci/devices/0000:3b:00.0"), root.join("class/net/ens1f0/device")).unwrap();
    assert_eq!(edgelb_controlplane::sriov::vf_pci(root, "ens1f0", 1).unwrap(), "0000:3b:02.1");
    let e = edgelb_controlplane::sriov::vf_pci(root, "ens1f0", 5).unwrap_err();
    assert!(e.to_string().contains("sriov_numvfs"), "{e}");
    assert!(edgelb_controlplane::sriov::vf_pci(root, "ens9f9", 0)
        .unwrap_err()
        .to_string()
        .contains("no such interface"));
    // Without settings, preparing is binding: the writes land as before and the address comes back.
    let pci = edgelb_controlplane::sriov::prepare(root, "ens1f0", &VfSettings { vf: 1, ..Default::default() }).unwrap();
    assert_eq!(pci, "0000:3b:02.1");
    assert_eq!(read(root, "bus/pci/drivers/vfio-pci/bind"), "0000:3b:02.1");
}
