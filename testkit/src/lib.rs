//! Test support for edgelb: used by tests and fuzz targets, and by `edgelb lab` for its namespaces (never by edgelbd).
//!
//! - [`netns`]: the one namespace [`netns::Lab`] (namespaces, veth pairs, processes and files removed on drop),
//!   [`netns::Reaped`], [`netns::in_netns`], [`netns::require_root`].
//! - [`daemon`]: edgelbd started in a namespace ([`daemon::Edgelbd`]) and a bounded wait for what it logs.
//! - [`kube`]: the Kubernetes API server emulator in a namespace, and a kubeconfig for it.
//! - [`peers`]: BIRD as a BGP peer in a namespace. [`kernel_ports`]: frames to and from a kernel-backed port.
//! - [`packets`]: [`packets::Craft`] builds a frame from every field a hostile sender controls (VLAN tags, IPv4
//!   options, IPv6 extension headers, fragment fields, a transport message cut anywhere, Ethernet padding) and fixes
//!   lengths and checksums so it passes the appliance's checksum gates; [`packets::check_frame`] checks a frame the
//!   appliance transmitted with an independent parser (`etherparse`, not the appliance's own views).
//! - [`models`]: operator models on the lab addressing plan (clients 198.18.0.0/24 and 2001:db8::/64, appliance
//!   198.18.1.0/24 and 2001:db8:1::/64, backends 198.18.2.0/24 and 2001:db8:2::/64, VIPs 198.19.0.0/24 and
//!   2001:db8:100::/64).
// Unsafe code only in `netns` (geteuid, setns), which allows it for itself.
#![deny(unsafe_code)]

pub mod daemon;
pub mod drill;
pub mod kernel_ports;
pub mod kube;
pub mod models;
pub mod netns;
pub mod packets;
pub mod peers;
