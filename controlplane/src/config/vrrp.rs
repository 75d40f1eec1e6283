//! `[[vrrp]]`: VRRPv3 virtual routers deciding which appliance on a flat L2 segment owns some VIPs (see
//! `edgelb_dataplane::slowpath::vrrp`). Every bound is named in the error, at the line of the router's table.

use super::{parse_ip, File, FileError, Lines, PortSection};
use edgelb_dataplane::slowpath::vrrp::RouterSpec;
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VrrpSection {
    #[serde(default)]
    name: Option<String>,
    port: String,
    vrid: u32,
    #[serde(default = "default_priority")]
    priority: u32,
    #[serde(default = "default_interval")]
    advert_interval_ms: u32,
    #[serde(default = "yes")]
    preempt: bool,
    #[serde(default)]
    preempt_delay_ms: u32,
    vips: Vec<Spanned<String>>,
    #[serde(default = "default_garp_count")]
    garp_count: u32,
    #[serde(default = "default_garp_interval")]
    garp_interval_ms: u32,
    #[serde(default = "default_penalty")]
    track_penalty: u32,
    #[serde(default)]
    virtual_mac: bool,
}

fn default_priority() -> u32 {
    100
}
fn default_interval() -> u32 {
    1000
}
fn yes() -> bool {
    true
}
fn default_garp_count() -> u32 {
    3
}
fn default_garp_interval() -> u32 {
    100
}
/// By default a router whose VIPs lost every healthy backend drops to priority 1: any healthy peer takes over.
fn default_penalty() -> u32 {
    254
}

/// The file's virtual routers.
pub(super) fn routers(lines: &Lines<'_>, file: &File) -> Result<Vec<RouterSpec>, FileError> {
    let mut out: Vec<RouterSpec> = Vec::new();
    for (i, s) in file.vrrp.iter().enumerate() {
        let v = s.get_ref();
        let err = |f: &str, m: String| lines.err(s, format!("vrrp[{i}].{f}"), m);
        let port = file
            .ports
            .iter()
            .position(|p: &Spanned<PortSection>| p.get_ref().name == v.port)
            .ok_or_else(|| err("port", format!("{:?} is not a [[port]] name", v.port)))?;
        let vrid = u8::try_from(v.vrid)
            .ok()
            .filter(|x| *x >= 1)
            .ok_or_else(|| err("vrid", format!("{}: 1 to 255", v.vrid)))?;
        let priority = u8::try_from(v.priority).ok().filter(|p| (1..=254).contains(p)).ok_or_else(|| {
            err(
                "priority",
                format!("{}: 1 to 254 (255 is an address owner's, which an appliance never is)", v.priority),
            )
        })?;
        if v.advert_interval_ms % 10 != 0 || !(10..=40_950).contains(&v.advert_interval_ms) {
            return Err(err(
                "advert_interval_ms",
                format!("{}: 10 to 40950 in steps of 10 (VRRPv3 counts centiseconds)", v.advert_interval_ms),
            ));
        }
        if v.vips.is_empty() {
            return Err(err("vips", "at least one VIP".into()));
        }
        let vips = v
            .vips
            .iter()
            .enumerate()
            .map(|(j, a)| parse_ip(lines, a, format!("vrrp[{i}].vips[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        if vips.iter().any(|a| a.is_ipv4() != vips[0].is_ipv4()) {
            return Err(err("vips", "all of one family: VRRPv3 runs one virtual router per family".into()));
        }
        if !(1..=50).contains(&v.garp_count) {
            return Err(err("garp_count", format!("{}: 1 to 50", v.garp_count)));
        }
        if !(10..=10_000).contains(&v.garp_interval_ms) {
            return Err(err("garp_interval_ms", format!("{}: 10 to 10000", v.garp_interval_ms)));
        }
        if v.preempt_delay_ms > 3_600_000 {
            return Err(err("preempt_delay_ms", format!("{}: at most 3600000", v.preempt_delay_ms)));
        }
        let track_penalty = u8::try_from(v.track_penalty)
            .map_err(|_| err("track_penalty", format!("{}: 0 to 255", v.track_penalty)))?;
        let v4 = vips[0].is_ipv4();
        let has_v4 = file.ports[port]
            .get_ref()
            .addresses
            .iter()
            .any(|a| a.get_ref().split('/').next().is_some_and(|x| x.trim().parse::<std::net::Ipv4Addr>().is_ok()));
        if v4 && !has_v4 {
            return Err(err("port", format!("{:?} has no IPv4 address to advertise from", v.port)));
        }
        if out.iter().any(|o| o.port == port as u16 && o.vrid == vrid && o.vips[0].is_ipv4() == v4) {
            return Err(err("vrid", format!("{vrid} is taken on port {:?} for this family", v.port)));
        }
        if let Some(o) = out.iter().find(|o| o.vips.iter().any(|a| vips.contains(a))) {
            return Err(err("vips", format!("a VIP of virtual router {:?} too", o.name)));
        }
        out.push(RouterSpec {
            name: v.name.clone().unwrap_or_else(|| format!("{}-{vrid}-{}", v.port, if v4 { "v4" } else { "v6" })),
            port: port as u16,
            vrid,
            priority,
            interval_cs: (v.advert_interval_ms / 10) as u16,
            preempt: v.preempt,
            preempt_delay: Duration::from_millis(u64::from(v.preempt_delay_ms)),
            vips,
            garp_count: v.garp_count as u8,
            garp_interval: Duration::from_millis(u64::from(v.garp_interval_ms)),
            track_penalty,
            virtual_mac: v.virtual_mac,
        });
    }
    Ok(out)
}
