//! Discovery of SR-IOV virtual functions from sysfs under a configurable root (default `/sys`), selector matching,
//! health, preferred allocation and the allocation response. Everything read from sysfs is untrusted: unreadable or
//! malformed files make a device unknown or unhealthy, never a panic.

use crate::config::{parse_ranges, Resource, Selector};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// One VF as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vf {
    /// PCI address, e.g. `0000:3b:02.1`.
    pub pci: String,
    /// Vendor id (hex, no 0x).
    pub vendor: String,
    /// Device id (hex, no 0x).
    pub device: String,
    /// Bound driver, if any.
    pub driver: Option<String>,
    /// NUMA node (`None` for -1 or unreadable).
    pub numa: Option<i64>,
    /// IOMMU group number.
    pub iommu_group: Option<String>,
    /// The PF's PCI address.
    pub pf: String,
    /// The PF's netdev names.
    pub pf_names: Vec<String>,
    /// This VF's index at its PF.
    pub index: Option<u32>,
    /// The PF's link is up (`operstate` of its netdevs: up or unknown).
    pub pf_up: bool,
    /// The PF's link type (`ether` for ARPHRD 1, `infiniband` for 32).
    pub link_type: Option<String>,
    /// The VF has an RDMA device (`infiniband/` under it).
    pub rdma: bool,
    /// The PF's ACPI index (`acpi_index`), if the firmware gives one.
    pub pf_acpi_index: Option<String>,
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn link_name(p: &Path) -> Option<String> {
    std::fs::read_link(p).ok().and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn hex(s: Option<String>) -> String {
    s.map(|v| v.trim_start_matches("0x").to_ascii_lowercase()).unwrap_or_default()
}

/// Every VF under `root/bus/pci/devices`.
pub fn discover(root: &Path) -> Vec<Vf> {
    let devs = root.join("bus/pci/devices");
    let Ok(rd) = std::fs::read_dir(&devs) else { return Vec::new() };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let d = e.path();
        let pci = e.file_name().to_string_lossy().into_owned();
        let Some(pf) = link_name(&d.join("physfn")) else { continue };
        let pfd = devs.join(&pf);
        let pf_names: Vec<String> = std::fs::read_dir(pfd.join("net"))
            .map(|r| r.flatten().map(|n| n.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let mut pf_names = pf_names;
        pf_names.sort();
        let index = std::fs::read_dir(&pfd).ok().and_then(|r| {
            r.flatten().find_map(|x| {
                let n = x.file_name().to_string_lossy().into_owned();
                let i: u32 = n.strip_prefix("virtfn")?.parse().ok()?;
                (link_name(&x.path()).as_deref() == Some(pci.as_str())).then_some(i)
            })
        });
        let state = |n: &String| read(&pfd.join("net").join(n).join("operstate"));
        let pf_up = !pf_names.is_empty()
            && pf_names.iter().all(|n| matches!(state(n).as_deref(), Some("up") | Some("unknown")));
        let link_type =
            pf_names.first().and_then(|n| read(&pfd.join("net").join(n).join("type"))).map(|t| match t.as_str() {
                "1" => "ether".to_string(),
                "32" => "infiniband".to_string(),
                other => other.to_string(),
            });
        out.push(Vf {
            vendor: hex(read(&d.join("vendor"))),
            device: hex(read(&d.join("device"))),
            driver: link_name(&d.join("driver")),
            numa: read(&d.join("numa_node")).and_then(|n| n.parse().ok()).filter(|n: &i64| *n >= 0),
            iommu_group: link_name(&d.join("iommu_group")),
            pf,
            pf_names,
            index,
            pf_up,
            link_type,
            rdma: d.join("infiniband").is_dir(),
            pf_acpi_index: read(&pfd.join("acpi_index")),
            pci,
        });
    }
    out.sort_by(|a, b| a.pci.cmp(&b.pci));
    out
}

fn in_ranges(spec: &str, index: Option<u32>) -> bool {
    match spec.split_once('#') {
        None => true,
        Some((_, r)) => match (parse_ranges(r), index) {
            (Ok(rs), Some(i)) => rs.iter().any(|(a, b)| (*a..=*b).contains(&i)),
            _ => false,
        },
    }
}

/// Does `s` select `v`?
pub fn matches(s: &Selector, v: &Vf) -> bool {
    let any = |list: &[String], f: &dyn Fn(&String) -> bool| list.is_empty() || list.iter().any(f);
    any(&s.vendors, &|x| x.trim_start_matches("0x").eq_ignore_ascii_case(&v.vendor))
        && any(&s.devices, &|x| x.trim_start_matches("0x").eq_ignore_ascii_case(&v.device))
        && any(&s.drivers, &|x| v.driver.as_deref() == Some(x.as_str()))
        && any(&s.pci_addresses, &|x| *x == v.pci)
        && any(&s.pf_names, &|x| {
            let name = x.split('#').next().unwrap_or("");
            v.pf_names.iter().any(|n| n == name) && in_ranges(x, v.index)
        })
        && any(&s.root_devices, &|x| x.split('#').next() == Some(v.pf.as_str()) && in_ranges(x, v.index))
        && any(&s.link_types, &|x| v.link_type.as_deref() == Some(x.as_str()))
        && (!s.is_rdma || v.rdma)
        && any(&s.acpi_indexes, &|x| v.pf_acpi_index.as_deref() == Some(x.as_str()))
}

/// The VFs of each resource (by index in `resources`): a VF belongs to the first resource with a selector that
/// matches it.
pub fn assign(resources: &[Resource], vfs: &[Vf]) -> Vec<Vec<Vf>> {
    let mut out = vec![Vec::new(); resources.len()];
    for v in vfs {
        // Only network VF resources are served (the others are named by `config::warnings`).
        let served = |r: &Resource| r.device_type == "netDevice";
        if let Some(i) = resources.iter().position(|r| served(r) && r.selectors.iter().any(|s| matches(s, v))) {
            out[i].push(v.clone());
        }
    }
    out
}

/// Health of a pool member now: present, on the driver it was found with, PF link up. Returns why not.
pub fn health(expected: &Vf, now: Option<&Vf>) -> Result<(), String> {
    let Some(v) = now else { return Err("VF disappeared".into()) };
    if v.driver != expected.driver {
        return Err(format!("driver changed from {:?} to {:?}", expected.driver, v.driver));
    }
    if !v.pf_up {
        return Err(format!("PF {} link down", v.pf_names.join(",")));
    }
    Ok(())
}

/// Pick `size` devices from `available` (all must be pool members), keeping `must` first: VFs on one NUMA node when
/// possible (the node with the most available), then spread over PFs round robin.
pub fn preferred(pool: &[Vf], available: &[String], must: &[String], size: usize) -> Vec<String> {
    let by_id: HashMap<&str, &Vf> = pool.iter().map(|v| (v.pci.as_str(), v)).collect();
    let mut chosen: Vec<String> = must.iter().filter(|m| by_id.contains_key(m.as_str())).cloned().collect();
    let cands: Vec<&Vf> =
        available.iter().filter(|a| !chosen.contains(a)).filter_map(|a| by_id.get(a.as_str()).copied()).collect();
    let mut per_numa: BTreeMap<Option<i64>, usize> = BTreeMap::new();
    for c in &cands {
        *per_numa.entry(c.numa).or_default() += 1;
    }
    // The must-include devices' node first, else the node with the most candidates.
    let must_node = chosen.first().and_then(|m| by_id.get(m.as_str())).map(|v| v.numa);
    let best = must_node.or_else(|| per_numa.iter().max_by_key(|(_, n)| **n).map(|(k, _)| *k)).flatten();
    // First the chosen node's VFs, then the rest; within each, round robin over PFs.
    let near: Vec<&Vf> = cands.iter().filter(|c| c.numa == best).copied().collect();
    let far: Vec<&Vf> = cands.iter().filter(|c| c.numa != best).copied().collect();
    for group in [near, far] {
        let mut by_pf: BTreeMap<&str, Vec<&Vf>> = BTreeMap::new();
        for v in &group {
            by_pf.entry(v.pf.as_str()).or_default().push(v);
        }
        let mut round = 0;
        while chosen.len() < size {
            let mut took = false;
            for list in by_pf.values() {
                if chosen.len() >= size {
                    break;
                }
                if let Some(v) = list.get(round) {
                    chosen.push(v.pci.clone());
                    took = true;
                }
            }
            if !took {
                break;
            }
            round += 1;
        }
    }
    chosen.truncate(size.max(must.len()));
    chosen
}

/// `PCIDEVICE_<PREFIX>_<NAME>` with `.` and `/` as `_`, upper-cased.
pub fn env_name(prefix: &str, name: &str) -> String {
    format!("PCIDEVICE_{}_{}", prefix, name).replace(['.', '/', '-'], "_").to_ascii_uppercase()
}

/// A device to put in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Path in the container.
    pub container_path: String,
    /// Path on the host.
    pub host_path: String,
}

/// Environment and device nodes for allocating `ids` of a pool.
///
/// # Errors
/// An id that is not in the pool.
pub fn allocation(
    prefix: &str,
    name: &str,
    pool: &[Vf],
    ids: &[String],
) -> Result<(BTreeMap<String, String>, Vec<DeviceNode>), String> {
    let by_id: HashMap<&str, &Vf> = pool.iter().map(|v| (v.pci.as_str(), v)).collect();
    let var = env_name(prefix, name);
    let mut info = serde_json::Map::new();
    let mut nodes = Vec::new();
    for id in ids {
        let v = by_id.get(id.as_str()).ok_or_else(|| format!("{id} is not a device of {prefix}/{name}"))?;
        let mut entry = serde_json::json!({"generic": {"deviceID": v.pci}});
        if v.driver.as_deref() == Some("vfio-pci") {
            if let Some(g) = &v.iommu_group {
                if nodes.is_empty() {
                    nodes.push(DeviceNode {
                        container_path: "/dev/vfio/vfio".into(),
                        host_path: "/dev/vfio/vfio".into(),
                    });
                }
                let p = format!("/dev/vfio/{g}");
                if !nodes.iter().any(|n| n.host_path == p) {
                    nodes.push(DeviceNode { container_path: p.clone(), host_path: p.clone() });
                }
                entry["vfio"] = serde_json::json!({"mount": "/dev/vfio/vfio", "dev-mount": p});
            }
        }
        info.insert(v.pci.clone(), entry);
    }
    let mut env = BTreeMap::new();
    env.insert(var.clone(), ids.join(","));
    env.insert(format!("{var}_INFO"), serde_json::Value::Object(info).to_string());
    Ok((env, nodes))
}

/// Default sysfs root.
pub fn default_root() -> PathBuf {
    PathBuf::from("/sys")
}
