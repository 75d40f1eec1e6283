//! kubelet device plugin advertising SR-IOV VF pools: the common plugin's `resourceList` configuration
//! ([`config`]), discovery, selectors, health and allocation from sysfs ([`sysfs`]), and the kubelet device-plugin API
//! v1beta1 ([`v1beta1`], compiled from `proto/` with protox).
#![forbid(unsafe_code)]

pub mod config;
pub mod plugin;
pub mod sysfs;

/// The kubelet device-plugin API, v1beta1.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}

/// The encoded descriptor set of the device-plugin API (served by reflection for debugging clients).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/deviceplugin_descriptor.bin"));
