//! The plugin's configuration: the `resourceList` JSON of the common SR-IOV network device plugin, every key it
//! defines accepted. Keys nobody defines are errors naming the key, line and column (serde's own message);
//! `selectors` may be one object or a list (first match wins). Keys that cannot apply here are accepted and named
//! once, with the reason, by [`warnings`].

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Resources to advertise.
    pub resource_list: Vec<Resource>,
}

/// One resource pool.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resource {
    /// Name within the prefix, e.g. `sriov_vf`.
    pub resource_name: String,
    /// Prefix, e.g. `edgelb.io` (default: `--resource-prefix`, itself `intel.com` by default, as the common plugin).
    #[serde(default)]
    pub resource_prefix: String,
    /// `netDevice` is served; `accelerator` and `auxNetDevice` are accepted and not served (see [`warnings`]).
    #[serde(default = "default_type")]
    pub device_type: String,
    /// Which VFs belong to the pool (absent: every VF, as upstream).
    #[serde(default, deserialize_with = "one_or_many")]
    pub selectors: Vec<Selector>,
    /// Leave the NUMA topology out of the devices listed to the kubelet.
    #[serde(default)]
    pub exclude_topology: bool,
    /// Upstream's extra information per device for the pod; accepted, not passed on here.
    #[serde(default)]
    pub additional_info: Option<serde_json::Value>,
}

/// The prefix of resources that name none, unless `--resource-prefix` says otherwise.
pub const DEFAULT_PREFIX: &str = "intel.com";
fn default_type() -> String {
    "netDevice".into()
}

/// A selector: every field given must match (any of its values); absent fields match everything.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// PCI vendor ids (hex, without 0x).
    #[serde(default)]
    pub vendors: Vec<String>,
    /// PCI device ids of the VFs (hex).
    #[serde(default)]
    pub devices: Vec<String>,
    /// Drivers the VFs are bound to (`vfio-pci`, `iavf`, ...).
    #[serde(default)]
    pub drivers: Vec<String>,
    /// VF PCI addresses.
    #[serde(default)]
    pub pci_addresses: Vec<String>,
    /// PF netdev names, optionally with VF index ranges: `ens1f0#0,2-5`.
    #[serde(default)]
    pub pf_names: Vec<String>,
    /// PF PCI addresses, optionally with VF index ranges: `0000:3b:00.0#0-3`.
    #[serde(default)]
    pub root_devices: Vec<String>,
    /// Link types of the PF (`ether`, `infiniband`).
    #[serde(default)]
    pub link_types: Vec<String>,
    /// Only VFs with an RDMA device.
    #[serde(default)]
    pub is_rdma: bool,
    /// Give the pod /dev/vhost-net and /dev/net/tun with its VFs.
    #[serde(default)]
    pub need_vhost_net: bool,
    /// The PF's ACPI index (`acpi_index` in sysfs).
    #[serde(default)]
    pub acpi_indexes: Vec<String>,
    /// Intel DDP profiles of the PF: accepted, not matched here (see [`warnings`]).
    #[serde(default)]
    pub ddp_profiles: Vec<String>,
    /// vDPA type: accepted, not matched here.
    #[serde(default)]
    pub vdpa_type: Option<String>,
    /// InfiniBand partition keys: accepted, not matched here.
    #[serde(default)]
    pub p_keys: Vec<String>,
    /// Auxiliary device types (`auxNetDevice` resources): accepted, not matched here.
    #[serde(default)]
    pub aux_types: Vec<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Selector>, D::Error> {
    // Read the value first and then each shape explicitly: an untagged enum would lose serde's field names in errors.
    let v = serde_json::Value::deserialize(d)?;
    match v {
        serde_json::Value::Array(_) => serde_json::from_value::<Vec<Selector>>(v).map_err(serde::de::Error::custom),
        serde_json::Value::Object(_) => {
            serde_json::from_value::<Selector>(v).map(|s| vec![s]).map_err(serde::de::Error::custom)
        }
        other => {
            Err(serde::de::Error::custom(format!("selectors: expected an object or a list of objects, found {other}")))
        }
    }
}

/// A configuration error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Parse and check a configuration.
///
/// # Errors
/// Syntax errors and unknown keys (with line and column), unsupported device types, bad names or ranges, duplicate
/// resources.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with(text, DEFAULT_PREFIX)
}

/// As [`parse`], resources without a `resourcePrefix` taking `prefix` (upstream's `-resource-prefix`).
///
/// # Errors
/// As [`parse`].
pub fn parse_with(text: &str, prefix: &str) -> Result<Config, ConfigError> {
    let mut c: Config = serde_json::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
    for r in &mut c.resource_list {
        if r.resource_prefix.is_empty() {
            r.resource_prefix = prefix.to_string();
        }
        // No selectors selects every device, as upstream.
        if r.selectors.is_empty() {
            r.selectors.push(Selector::default());
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, r) in c.resource_list.iter().enumerate() {
        let at = format!("resourceList[{i}]");
        if !matches!(r.device_type.as_str(), "netDevice" | "accelerator" | "auxNetDevice") {
            return Err(ConfigError(format!(
                "{at}.deviceType: {:?} is not a device type (netDevice, accelerator, auxNetDevice)",
                r.device_type
            )));
        }
        let ok_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if !ok_name(&r.resource_name) {
            return Err(ConfigError(format!(
                "{at}.resourceName: {:?}: letters, digits, '_', '-', '.'",
                r.resource_name
            )));
        }
        if !ok_name(&r.resource_prefix) {
            return Err(ConfigError(format!("{at}.resourcePrefix: {:?}: a DNS-like prefix", r.resource_prefix)));
        }
        if !seen.insert(full_name(r)) {
            return Err(ConfigError(format!("{at}: {} is listed twice", full_name(r))));
        }
        for (j, s) in r.selectors.iter().enumerate() {
            for (k, p) in s.pf_names.iter().chain(&s.root_devices).enumerate() {
                if let Some((_, ranges)) = p.split_once('#') {
                    parse_ranges(ranges)
                        .map_err(|e| ConfigError(format!("{at}.selectors[{j}] entry {k} {p:?}: {e}")))?;
                }
            }
        }
    }
    Ok(c)
}

/// What the configuration asks for that cannot apply here, one line each with the reason (logged once per load).
pub fn warnings(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in c.resource_list.iter().enumerate() {
        let at = format!("resourceList[{i}] ({})", full_name(r));
        if r.device_type != "netDevice" {
            out.push(format!(
                "{at}: deviceType {:?} is not served: this plugin hands out SR-IOV network VFs (netDevice)",
                r.device_type
            ));
            continue;
        }
        if r.additional_info.is_some() {
            out.push(format!("{at}.additionalInfo: not passed to pods by this plugin"));
        }
        for (j, s) in r.selectors.iter().enumerate() {
            let sel = format!("{at}.selectors[{j}]");
            if !s.ddp_profiles.is_empty() {
                out.push(format!("{sel}.ddpProfiles: not matched (reading a PF's DDP profile needs Intel's tools)"));
            }
            if s.vdpa_type.is_some() {
                out.push(format!("{sel}.vdpaType: not matched (vDPA devices are not handed out here)"));
            }
            if !s.p_keys.is_empty() {
                out.push(format!("{sel}.pKeys: not matched (InfiniBand partitions are not handed out here)"));
            }
            if !s.aux_types.is_empty() {
                out.push(format!("{sel}.auxTypes: not matched (auxiliary devices are not handed out here)"));
            }
        }
    }
    out
}

/// `prefix/name`.
pub fn full_name(r: &Resource) -> String {
    format!("{}/{}", r.resource_prefix, r.resource_name)
}

/// VF index ranges like `0,2-5`.
///
/// # Errors
/// A part that is not a number or an ascending range.
pub fn parse_ranges(s: &str) -> Result<Vec<(u32, u32)>, String> {
    s.split(',')
        .map(|p| {
            let p = p.trim();
            match p.split_once('-') {
                Some((a, b)) => {
                    let (a, b): (u32, u32) =
                        (a.parse().map_err(|_| format!("{p:?}"))?, b.parse().map_err(|_| format!("{p:?}"))?);
                    if a > b {
                        return Err(format!("range {p:?} runs backwards"));
                    }
                    Ok((a, b))
                }
                None => p.parse().map(|n| (n, n)).map_err(|_| format!("{p:?} is not a VF index")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_plugins_format_parses() {
        let c = parse(
            r#"{"resourceList": [
                {"resourceName": "vf_a", "resourcePrefix": "edgelb.io", "deviceType": "netDevice",
                 "selectors": {"vendors": ["8086"], "drivers": ["vfio-pci"], "pfNames": ["ens1f0#0,2-3"]}},
                {"resourceName": "vf_b", "selectors": [{"rootDevices": ["0000:3b:00.1#1-2"]}, {"linkTypes": ["ether"]}]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(full_name(&c.resource_list[0]), "edgelb.io/vf_a");
        assert_eq!(full_name(&c.resource_list[1]), "intel.com/vf_b");
        assert_eq!(c.resource_list[1].selectors.len(), 2);
        assert_eq!(parse_ranges("0,2-5").unwrap(), vec![(0, 0), (2, 5)]);
    }

    #[test]
    fn bad_configs_say_what_and_where() {
        let cases = [
            (
                r#"{"resourceList": [{"resourceName": "a", "selectors": {"vendor": ["8086"]}}]}"#,
                "unknown field `vendor`",
            ),
            (r#"{"resourceList": [{"resourceName": "a", "isRdma": true, "selectors": {}}]}"#, "unknown field `isRdma`"),
            (r#"{"resourceList": [{"resourceName": "a", "deviceType": "gpu", "selectors": {}}]}"#, "not a device type"),
            (r#"{"resourceList": [{"resourceName": "a", "selectors": {"isRDMA": true}}]}"#, "unknown field `isRDMA`"),
            (r#"{"resourceList": [{"resourceName": "a b", "selectors": {}}]}"#, "resourceName"),
            (r#"{"resourceList": [{"resourceName": "a", "selectors": {"pfNames": ["ens1f0#3-1"]}}]}"#, "backwards"),
            (
                r#"{"resourceList": [{"resourceName": "a", "selectors": {}}, {"resourceName": "a", "selectors": {}}]}"#,
                "twice",
            ),
            (r#"{"resourceList": [{"resourceName": "a", "selectors": 7}]}"#, "object or a list"),
            ("{\"resourceList\": [\n  {\"resourceName\": \"a\",, }]}", "line 2"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.0.contains(want), "{text}: {e}");
        }
    }
}
