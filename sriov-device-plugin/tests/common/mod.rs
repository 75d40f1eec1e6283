//! A fake sysfs tree in a temp dir, shaped as the kernel lays it out: `bus/pci/devices/<addr>` with `vendor`,
//! `device`, `numa_node`, `driver` and `iommu_group` links, `physfn` / `virtfnN` links between VFs and PFs, the PFs'
//! `sriov_numvfs`/`sriov_totalvfs` and `net/<name>/{operstate,type}`, and `bus/pci/drivers/<name>/` with `bind`,
//! `unbind` files and `drivers_probe`.
#![allow(dead_code)]

pub mod kubelet;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// The tree.
pub struct FakeSysfs {
    /// Its root (what the plugin is given instead of `/sys`).
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

/// One PF and its VFs.
pub struct Pf<'a> {
    /// PF PCI address.
    pub pci: &'a str,
    /// PF netdev name.
    pub name: &'a str,
    /// Vendor id.
    pub vendor: &'a str,
    /// VF device id.
    pub vf_device: &'a str,
    /// VF driver.
    pub driver: &'a str,
    /// NUMA node.
    pub numa: i64,
    /// Number of VFs; VF i gets address `<bus>:<dev>.<i>` from `vf_base` and IOMMU group `group_base + i`.
    pub vfs: u32,
    /// First VF address without the function, e.g. `0000:3b:02`.
    pub vf_base: &'a str,
    /// First IOMMU group.
    pub group_base: u32,
}

impl FakeSysfs {
    /// An empty tree.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("bus/pci/devices")).unwrap();
        std::fs::create_dir_all(root.join("kernel/iommu_groups")).unwrap();
        Self { root, _dir: dir }
    }

    fn dev(&self, pci: &str) -> PathBuf {
        self.root.join("bus/pci/devices").join(pci)
    }

    fn driver_dir(&self, d: &str) -> PathBuf {
        let p = self.root.join("bus/pci/drivers").join(d);
        std::fs::create_dir_all(&p).unwrap();
        for f in ["bind", "unbind", "new_id"] {
            let _ = std::fs::OpenOptions::new().create(true).append(true).open(p.join(f));
        }
        p
    }

    /// Add a PF with its VFs.
    pub fn add_pf(&self, pf: &Pf<'_>) {
        let d = self.dev(pf.pci);
        std::fs::create_dir_all(d.join("net").join(pf.name)).unwrap();
        std::fs::write(d.join("vendor"), format!("0x{}\n", pf.vendor)).unwrap();
        std::fs::write(d.join("sriov_totalvfs"), "64\n").unwrap();
        std::fs::write(d.join("sriov_numvfs"), format!("{}\n", pf.vfs)).unwrap();
        std::fs::write(d.join("net").join(pf.name).join("operstate"), "up\n").unwrap();
        std::fs::write(d.join("net").join(pf.name).join("type"), "1\n").unwrap();
        for i in 0..pf.vfs {
            let vf = format!("{}.{i}", pf.vf_base);
            let v = self.dev(&vf);
            std::fs::create_dir_all(&v).unwrap();
            std::fs::write(v.join("vendor"), format!("0x{}\n", pf.vendor)).unwrap();
            std::fs::write(v.join("device"), format!("0x{}\n", pf.vf_device)).unwrap();
            std::fs::write(v.join("numa_node"), format!("{}\n", pf.numa)).unwrap();
            std::fs::write(v.join("driver_override"), "\n").unwrap();
            symlink(format!("../{}", pf.pci), v.join("physfn")).unwrap();
            symlink(format!("../{vf}"), d.join(format!("virtfn{i}"))).unwrap();
            let g = self.root.join("kernel/iommu_groups").join((pf.group_base + i).to_string());
            std::fs::create_dir_all(&g).unwrap();
            symlink(&g, v.join("iommu_group")).unwrap();
            self.set_driver(&vf, Some(pf.driver));
        }
    }

    /// Bind a device to `driver` (or unbind it), as the kernel shows it: the `driver` link.
    pub fn set_driver(&self, pci: &str, driver: Option<&str>) {
        let link = self.dev(pci).join("driver");
        let _ = std::fs::remove_file(&link);
        if let Some(d) = driver {
            symlink(self.driver_dir(d), &link).unwrap();
        }
    }

    /// Set a PF netdev's operstate.
    pub fn set_operstate(&self, pf: &str, name: &str, state: &str) {
        std::fs::write(self.dev(pf).join("net").join(name).join("operstate"), format!("{state}\n")).unwrap();
    }

    /// Remove a device (as on VF deletion).
    pub fn remove(&self, pci: &str) {
        std::fs::remove_dir_all(self.dev(pci)).unwrap();
    }

    /// Contents of a file under the root.
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap_or_default()
    }

    /// The standard test tree: two PFs × four VFs, different vendors, drivers and NUMA nodes.
    pub fn standard() -> Self {
        let s = Self::new();
        s.add_pf(&Pf {
            pci: "0000:3b:00.0",
            name: "ens1f0",
            vendor: "8086",
            vf_device: "154c",
            driver: "vfio-pci",
            numa: 0,
            vfs: 4,
            vf_base: "0000:3b:02",
            group_base: 40,
        });
        s.add_pf(&Pf {
            pci: "0000:af:00.0",
            name: "ens2f0",
            vendor: "15b3",
            vf_device: "101e",
            driver: "mlx5_core",
            numa: 1,
            vfs: 4,
            vf_base: "0000:af:02",
            group_base: 80,
        });
        s
    }
}

/// Is `p` inside the tree?
pub fn inside(root: &Path, p: &Path) -> bool {
    p.starts_with(root)
}
