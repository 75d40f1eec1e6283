//! Preparing SR-IOV VFs for DPDK on the node: set each VF's MAC, VLAN, trust, spoof checking and rate on its PF over
//! rtnetlink (`RTM_SETLINK` with `IFLA_VFINFO_LIST`, built and checked with `netlink-packet-route`), then bind it to
//! `vfio-pci` through `driver_override`, `unbind`, `bind` (and give it back with `drivers_probe`). Idempotent: a VF
//! already on vfio-pci is left alone. Every failure names the step and what to do about it. The resulting PCI
//! addresses are the DPDK port's allow-list.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::link::{
    LinkAttribute, LinkMessage, LinkVfInfo, VfInfo, VfInfoMac, VfInfoRate, VfInfoSpoofCheck, VfInfoTrust, VfInfoVlan,
};
use netlink_packet_route::RouteNetlinkMessage;
use std::path::Path;

/// What to set on one VF.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VfSettings {
    /// VF index on its PF.
    pub vf: u32,
    /// MAC address.
    pub mac: Option<[u8; 6]>,
    /// VLAN id (0: none) and QoS.
    pub vlan: Option<(u16, u8)>,
    /// Trusted (may set promiscuous / multicast).
    pub trust: Option<bool>,
    /// Spoof checking.
    pub spoof_check: Option<bool>,
    /// Minimum and maximum TX rate in Mbit/s (0: no limit).
    pub rate: Option<(u32, u32)>,
}

/// A step that failed, with the kernel's answer and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {cause}{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct BindError {
    /// What was being done, e.g. `set VF 2 on ens1f0` or `bind 0000:3b:02.1 to vfio-pci`.
    pub step: String,
    /// The error.
    pub cause: String,
    /// What to do.
    pub hint: Option<&'static str>,
}

fn fail(step: impl Into<String>, cause: impl std::fmt::Display, hint: Option<&'static str>) -> BindError {
    BindError { step: step.into(), cause: cause.to_string(), hint }
}

/// The `RTM_SETLINK` request that applies `s` to the PF with interface index `pf_index`.
pub fn set_vf_message(pf_index: u32, s: &VfSettings) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut info = Vec::new();
    if let Some(m) = s.mac {
        info.push(VfInfo::Mac(VfInfoMac::new(s.vf, &m)));
    }
    if let Some((vlan, qos)) = s.vlan {
        info.push(VfInfo::Vlan(VfInfoVlan::new(s.vf, u32::from(vlan), u32::from(qos))));
    }
    if let Some(t) = s.trust {
        info.push(VfInfo::Trust(VfInfoTrust::new(s.vf, t)));
    }
    if let Some(c) = s.spoof_check {
        info.push(VfInfo::SpoofCheck(VfInfoSpoofCheck::new(s.vf, c)));
    }
    if let Some((min, max)) = s.rate {
        info.push(VfInfo::Rate(VfInfoRate::new(s.vf, min, max)));
    }
    let mut link = LinkMessage::default();
    link.header.index = pf_index;
    link.attributes.push(LinkAttribute::VfInfoList(vec![LinkVfInfo(info)]));
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 1;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(RouteNetlinkMessage::SetLink(link)));
    msg.finalize();
    msg
}

fn ifindex(name: &str) -> Result<u32, BindError> {
    crate::os::if_index(name)
        .ok_or_else(|| fail(format!("find PF {name}"), "no such interface", Some("check the PF name with `ip link`")))
}

/// Apply `s` to VF `s.vf` of the PF named `pf` (in this network namespace), waiting for the kernel's answer.
///
/// # Errors
/// [`BindError`] naming the step; the kernel's refusal as its errno text with a hint (e.g. not a PF: no SR-IOV).
pub fn set_vf(pf: &str, s: &VfSettings) -> Result<(), BindError> {
    let step = format!("set VF {} on {pf}", s.vf);
    let index = ifindex(pf)?;
    let msg = set_vf_message(index, s);
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE).map_err(|e| fail(&step, e, None))?;
    sock.bind_auto().map_err(|e| fail(&step, e, None))?;
    sock.connect(&netlink_sys::SocketAddr::new(0, 0)).map_err(|e| fail(&step, e, None))?;
    sock.send(&buf, 0).map_err(|e| fail(&step, e, None))?;
    let mut rx = vec![0u8; 8192];
    let n = sock.recv(&mut &mut rx[..], 0).map_err(|e| fail(&step, e, None))?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[..n])
        .map_err(|e| fail(&step, format!("{e:?}"), None))?;
    match reply.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(()),
            Some(code) => {
                let err = std::io::Error::from_raw_os_error(-code.get());
                let hint = match -code.get() {
                    libc::EOPNOTSUPP | libc::EINVAL => {
                        Some("the interface is not an SR-IOV PF, or its driver cannot set this")
                    }
                    libc::ERANGE => Some("no such VF index: check sriov_numvfs"),
                    libc::EPERM => Some("needs CAP_NET_ADMIN (root)"),
                    _ => None,
                };
                Err(fail(step, err, hint))
            }
        },
        other => Err(fail(step, format!("unexpected answer {other:?}"), None)),
    }
}

/// The PCI address of VF `index` of the PF netdev `pf`: `class/net/<pf>/device/virtfn<index>` under `root`.
///
/// # Errors
/// [`BindError`] when the PF or the VF does not exist (with the command that creates VFs).
pub fn vf_pci(root: &Path, pf: &str, index: u32) -> Result<String, BindError> {
    let dev = root.join("class/net").join(pf).join("device");
    if !dev.exists() {
        return Err(fail(format!("find PF {pf}"), "no such interface", Some("check the PF name with `ip link`")));
    }
    std::fs::read_link(dev.join(format!("virtfn{index}")))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| {
            fail(
                format!("find VF {index} of {pf}"),
                "no such VF",
                Some("create VFs first: echo N > /sys/class/net/PF/device/sriov_numvfs"),
            )
        })
}

/// Prepare VF `s.vf` of `pf` for DPDK: settings over netlink, then vfio-pci. Returns its PCI address.
///
/// # Errors
/// [`BindError`] naming the step.
pub fn prepare(root: &Path, pf: &str, s: &VfSettings) -> Result<String, BindError> {
    let pci = vf_pci(root, pf, s.vf)?;
    if s.mac.is_some() || s.vlan.is_some() || s.trust.is_some() || s.spoof_check.is_some() || s.rate.is_some() {
        set_vf(pf, s)?;
    }
    bind_vfio(root, &pci)?;
    Ok(pci)
}

/// The driver a PCI device is bound to (under `root`, normally `/sys`).
pub fn driver_of(root: &Path, pci: &str) -> Option<String> {
    std::fs::read_link(root.join("bus/pci/devices").join(pci).join("driver"))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn write(path: &Path, value: &str, step: &str, hint: Option<&'static str>) -> Result<(), BindError> {
    std::fs::write(path, value).map_err(|e| fail(format!("{step}: write {value:?} to {}", path.display()), e, hint))
}

/// Bind the VF at `pci` to vfio-pci: `driver_override`, unbind from its driver, bind. Nothing to do when it is
/// already there. Returns its IOMMU group.
///
/// # Errors
/// [`BindError`]: no IOMMU group (the IOMMU is off), vfio-pci not loaded, or a write the kernel refused.
pub fn bind_vfio(root: &Path, pci: &str) -> Result<String, BindError> {
    let dev = root.join("bus/pci/devices").join(pci);
    let step = format!("bind {pci} to vfio-pci");
    if !dev.exists() {
        return Err(fail(
            step,
            "no such PCI device",
            Some("check the address with `lspci -D`, and sriov_numvfs on the PF"),
        ));
    }
    let group = std::fs::read_link(dev.join("iommu_group"))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| {
            fail(
                &step,
                "no iommu_group",
                Some("enable the IOMMU: intel_iommu=on or amd_iommu=on on the kernel command line"),
            )
        })?;
    if driver_of(root, pci).as_deref() == Some("vfio-pci") {
        return Ok(group);
    }
    let vfio = root.join("bus/pci/drivers/vfio-pci");
    if !vfio.exists() {
        return Err(fail(step, "the vfio-pci driver is not loaded", Some("modprobe vfio-pci")));
    }
    write(&dev.join("driver_override"), "vfio-pci", &step, None)?;
    if driver_of(root, pci).is_some() {
        write(&dev.join("driver/unbind"), pci, &step, Some("is the VF in use?"))?;
    }
    write(&vfio.join("bind"), pci, &step, Some("check dmesg for vfio errors"))?;
    Ok(group)
}

/// Give a VF back to its kernel driver: clear `driver_override`, unbind from vfio-pci, `drivers_probe`.
///
/// # Errors
/// [`BindError`] naming the write the kernel refused.
pub fn unbind_vfio(root: &Path, pci: &str) -> Result<(), BindError> {
    let dev = root.join("bus/pci/devices").join(pci);
    let step = format!("return {pci} to its kernel driver");
    write(&dev.join("driver_override"), "\n", &step, None)?;
    if driver_of(root, pci).as_deref() == Some("vfio-pci") {
        write(&root.join("bus/pci/drivers/vfio-pci/unbind"), pci, &step, None)?;
    }
    write(&root.join("bus/pci/drivers_probe"), pci, &step, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vf_settings_round_trip_through_the_parser() {
        let s = VfSettings {
            vf: 2,
            mac: Some([2, 0, 0, 0, 0x10, 2]),
            vlan: Some((100, 0)),
            trust: Some(true),
            spoof_check: Some(false),
            rate: Some((0, 10_000)),
        };
        let msg = set_vf_message(7, &s);
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::SetLink(link)) = back.payload else {
            panic!("not RTM_SETLINK: {back:?}")
        };
        assert_eq!(link.header.index, 7);
        let Some(LinkAttribute::VfInfoList(list)) = link.attributes.first() else { panic!("{link:?}") };
        let info = &list[0].0;
        assert!(info.contains(&VfInfo::Mac(VfInfoMac::new(2, &[2, 0, 0, 0, 0x10, 2]))), "{info:?}");
        assert!(info.contains(&VfInfo::Vlan(VfInfoVlan::new(2, 100, 0))), "{info:?}");
        assert!(info.contains(&VfInfo::Trust(VfInfoTrust::new(2, true))), "{info:?}");
        assert!(info.contains(&VfInfo::SpoofCheck(VfInfoSpoofCheck::new(2, false))), "{info:?}");
        assert!(info.contains(&VfInfo::Rate(VfInfoRate::new(2, 0, 10_000))), "{info:?}");
        assert_eq!(back.header.flags, NLM_F_REQUEST | NLM_F_ACK);
    }
}
