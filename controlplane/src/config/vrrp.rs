//! `[[vrrp]]`: VRRPv3 virtual routers deciding which appliance on a flat L2 segment owns some VIPs (see
//! `edgelb_dataplane::slowpath::vrrp`). Every bound is named in the error, at the line of the router's table.

use super::{parse_ip, File, FileError, Lines};
use edgelb_dataplane::slowpath::vrrp::RouterSpec;
use serde::Deserialize;
use std::net::IpAddr;
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

/// A virtual router's settings besides its name and VIPs: a `[[vrrp]]` table's keys, or an `L2Announcement`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The `[[port]]` name.
    pub port: String,
    /// 1 to 255.
    pub vrid: u32,
    /// 1 to 254.
    pub priority: u32,
    /// 10 to 40950 in steps of 10.
    pub advert_interval_ms: u32,
    /// Take over from a lower-priority master.
    pub preempt: bool,
    /// At most an hour.
    pub preempt_delay_ms: u32,
    /// 1 to 50.
    pub garp_count: u32,
    /// 10 to 10000.
    pub garp_interval_ms: u32,
    /// 0 to 255.
    pub track_penalty: u32,
    /// Answer from the virtual router MAC.
    pub virtual_mac: bool,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            port: String::new(),
            vrid: 0,
            priority: default_priority(),
            advert_interval_ms: default_interval(),
            preempt: true,
            preempt_delay_ms: 0,
            garp_count: default_garp_count(),
            garp_interval_ms: default_garp_interval(),
            track_penalty: default_penalty(),
            virtual_mac: false,
        }
    }
}

/// One virtual router checked by the file's rules: `ports` are the port names, each with whether it has an IPv4
/// address; `taken` the routers already accepted (a VRID per port and family, and a VIP, belong to one router).
/// `name` absent: `PORT-VRID-v4|v6`.
///
/// # Errors
/// The offending key (snake_case) and what is wrong with it.
pub fn router(
    name: Option<&str>,
    v: &Fields,
    vips: Vec<IpAddr>,
    ports: &[(String, bool)],
    taken: &[RouterSpec],
) -> Result<RouterSpec, (&'static str, String)> {
    let port =
        ports.iter().position(|(n, _)| *n == v.port).ok_or(("port", format!("{:?} is not a [[port]] name", v.port)))?;
    let vrid = u8::try_from(v.vrid).ok().filter(|x| *x >= 1).ok_or(("vrid", format!("{}: 1 to 255", v.vrid)))?;
    let priority = u8::try_from(v.priority).ok().filter(|p| (1..=254).contains(p)).ok_or_else(|| {
        ("priority", format!("{}: 1 to 254 (255 is an address owner's, which an appliance never is)", v.priority))
    })?;
    if !v.advert_interval_ms.is_multiple_of(10) || !(10..=40_950).contains(&v.advert_interval_ms) {
        return Err((
            "advert_interval_ms",
            format!("{}: 10 to 40950 in steps of 10 (VRRPv3 counts centiseconds)", v.advert_interval_ms),
        ));
    }
    let Some(first) = vips.first() else { return Err(("vips", "at least one VIP".into())) };
    let v4 = first.is_ipv4();
    if vips.iter().any(|a| a.is_ipv4() != v4) {
        return Err(("vips", "all of one family: VRRPv3 runs one virtual router per family".into()));
    }
    if !(1..=50).contains(&v.garp_count) {
        return Err(("garp_count", format!("{}: 1 to 50", v.garp_count)));
    }
    if !(10..=10_000).contains(&v.garp_interval_ms) {
        return Err(("garp_interval_ms", format!("{}: 10 to 10000", v.garp_interval_ms)));
    }
    if v.preempt_delay_ms > 3_600_000 {
        return Err(("preempt_delay_ms", format!("{}: at most 3600000", v.preempt_delay_ms)));
    }
    let track_penalty =
        u8::try_from(v.track_penalty).map_err(|_| ("track_penalty", format!("{}: 0 to 255", v.track_penalty)))?;
    if v4 && !ports[port].1 {
        return Err(("port", format!("{:?} has no IPv4 address to advertise from", v.port)));
    }
    if taken.iter().any(|o| o.port == port as u16 && o.vrid == vrid && o.vips[0].is_ipv4() == v4) {
        return Err(("vrid", format!("{vrid} is taken on port {:?} for this family", v.port)));
    }
    if let Some(o) = taken.iter().find(|o| o.vips.iter().any(|a| vips.contains(a))) {
        return Err(("vips", format!("a VIP of virtual router {:?} too", o.name)));
    }
    Ok(RouterSpec {
        name: name.map_or_else(|| format!("{}-{vrid}-{}", v.port, if v4 { "v4" } else { "v6" }), str::to_string),
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
    })
}

/// Each port's name and whether it has an IPv4 address.
pub(super) fn port_families(file: &File) -> Vec<(String, bool)> {
    file.ports
        .iter()
        .map(|p| {
            let p = p.get_ref();
            let v4 = p
                .addresses
                .iter()
                .any(|a| a.get_ref().split('/').next().is_some_and(|x| x.trim().parse::<std::net::Ipv4Addr>().is_ok()));
            (p.name.clone(), v4)
        })
        .collect()
}

/// The file's virtual routers.
pub(super) fn routers(lines: &Lines<'_>, file: &File) -> Result<Vec<RouterSpec>, FileError> {
    let ports = port_families(file);
    let mut out: Vec<RouterSpec> = Vec::new();
    for (i, s) in file.vrrp.iter().enumerate() {
        let v = s.get_ref();
        let vips = v
            .vips
            .iter()
            .enumerate()
            .map(|(j, a)| parse_ip(lines, a, format!("vrrp[{i}].vips[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let fields = Fields {
            port: v.port.clone(),
            vrid: v.vrid,
            priority: v.priority,
            advert_interval_ms: v.advert_interval_ms,
            preempt: v.preempt,
            preempt_delay_ms: v.preempt_delay_ms,
            garp_count: v.garp_count,
            garp_interval_ms: v.garp_interval_ms,
            track_penalty: v.track_penalty,
            virtual_mac: v.virtual_mac,
        };
        let r = router(v.name.as_deref(), &fields, vips, &ports, &out)
            .map_err(|(f, m)| lines.err(s, format!("vrrp[{i}].{f}"), m))?;
        out.push(r);
    }
    Ok(out)
}
