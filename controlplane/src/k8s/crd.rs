//! edgelb's custom resources (`edgelb.io/v1alpha1`, cluster-scoped): `VIPPool` (addresses for Services), `BGPPeer`
//! (one `[[bgp.peer]]`), `L2Announcement` (one `[[vrrp]]` virtual router). Their manifests in
//! `configs/kubernetes/crds/` are generated from these types by `edgelb crds --out DIR`, never written by hand; a
//! test compares them. Each resource's `status` carries two conditions, written only by the holder of the status
//! Lease: `Accepted` (the spec is valid and its name clashes with no file entry) and `Programmed` (this appliance
//! runs it), each with a CamelCase reason and a message.

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The API group.
pub const GROUP: &str = "edgelb.io";

fn yes() -> bool {
    true
}

/// A `VIPPool`: addresses Services of our class may get, like a `[[kubernetes.pool]]`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "edgelb.io",
    version = "v1alpha1",
    kind = "VIPPool",
    plural = "vippools",
    shortname = "vipp",
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VIPPoolSpec {
    /// Address ranges: `198.19.0.0/28`, `198.19.0.10-198.19.0.20` or one address; IPv4 and IPv6 may mix.
    pub addresses: Vec<String>,
    /// Namespaces whose Services may use the pool (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Labels a Service must carry to use the pool (empty: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// Allocate from this pool to Services that ask for no address (false: only requested addresses).
    #[serde(default = "yes")]
    pub auto_assign: bool,
}

/// `matchLabels`, the part of a Kubernetes label selector edgelb uses.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Every label must be present with this value.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// A `BGPPeer`: every key of a `[[bgp.peer]]`, in camelCase, and the appliances it applies to.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[kube(
    group = "edgelb.io",
    version = "v1alpha1",
    kind = "BGPPeer",
    plural = "bgppeers",
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.address"}"#,
    printcolumn = r#"{"name":"ASN","type":"integer","jsonPath":".spec.remoteAs"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].reason"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// The peer's address.
    pub address: String,
    /// Its AS.
    pub remote_as: u32,
    /// TCP port (absent: 179).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Our source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Hold time, seconds (absent: 90; 0: none; otherwise at least 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<u32>,
    /// Connect retry, seconds (absent: 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_retry: Option<u32>,
    /// TTL (absent: 1 for eBGP, 64 for iBGP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multihop_ttl: Option<u32>,
    /// TCP MD5 key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Next hop for IPv4 routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_v4: Option<String>,
    /// Next hop for IPv6 routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_v6: Option<String>,
    /// MULTI_EXIT_DISC to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub med: Option<u32>,
    /// LOCAL_PREF to send (iBGP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Communities, `ASN:VALUE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// Large communities, `ASN:DATA1:DATA2`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub large_communities: Vec<String>,
    /// Graceful-restart time to advertise, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<u32>,
    /// Wait for the peer to connect.
    #[serde(default)]
    pub passive: bool,
    /// BFD with the peer (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<Bfd>,
    /// The appliances that run this peer: `matchLabels` against `[kubernetes] node_labels` (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
}

/// BFD timers (absent fields: 300 ms, 300 ms, 3).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bfd {
    /// Desired minimum transmit interval, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tx_ms: Option<u32>,
    /// Required minimum receive interval, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rx_ms: Option<u32>,
    /// Detection multiplier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<u32>,
}

/// An `L2Announcement`: a VRRPv3 virtual router, every key of a `[[vrrp]]`, in camelCase.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "edgelb.io",
    version = "v1alpha1",
    kind = "L2Announcement",
    plural = "l2announcements",
    status = "ResourceStatus",
    printcolumn = r#"{"name":"VRID","type":"integer","jsonPath":".spec.vrid"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].reason"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct L2AnnouncementSpec {
    /// The `[[port]]` it runs on, by name.
    pub port: String,
    /// Virtual router id, 1 to 255.
    pub vrid: u32,
    /// Priority, 1 to 254 (absent: 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Advertisement interval, ms, in steps of 10 (absent: 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advert_interval_ms: Option<u32>,
    /// Take over from a lower-priority master (absent: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempt: Option<bool>,
    /// Delay before preempting after start, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempt_delay_ms: Option<u32>,
    /// The VIPs it owns, all of one family.
    pub vips: Vec<String>,
    /// Gratuitous ARPs / unsolicited NAs per VIP on becoming Master (absent: 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garp_count: Option<u32>,
    /// Between them, ms (absent: 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garp_interval_ms: Option<u32>,
    /// Priority lost while a VIP has no healthy backend (absent: 254).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_penalty: Option<u32>,
    /// Answer from the virtual router MAC.
    #[serde(default)]
    pub virtual_mac: bool,
    /// The appliances that run this router: `matchLabels` against `[kubernetes] node_labels` (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
}

/// The status of each of edgelb's resources.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// `Accepted` and `Programmed`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One condition, as Kubernetes writes them (`metav1.Condition`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Accepted` or `Programmed`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// For people.
    pub message: String,
    /// The spec generation this condition was computed from.
    #[serde(default)]
    pub observed_generation: i64,
    /// When `status` last changed (RFC 3339).
    #[serde(default)]
    pub last_transition_time: String,
}

/// Does a node selector (absent: all) admit an appliance with these labels?
pub fn selects(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    sel.is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The manifests, one file name and YAML text each, as `edgelb crds` writes them.
///
/// # Panics
/// Never for these types (their schemas always serialise).
pub fn manifests() -> Vec<(&'static str, String)> {
    let header =
        "# Generated by `edgelb crds --out configs/kubernetes/crds` from controlplane/src/k8s/crd.rs: do not edit.\n";
    let one = |crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        format!("{header}{}", serde_yaml::to_string(&crd).expect("a CRD serialises"))
    };
    vec![
        ("vippools.edgelb.io.yaml", one(VIPPool::crd())),
        ("bgppeers.edgelb.io.yaml", one(BGPPeer::crd())),
        ("l2announcements.edgelb.io.yaml", one(L2Announcement::crd())),
    ]
}

#[cfg(test)]
mod tests {
    /// The manifests in `configs/kubernetes/crds/` are what `edgelb crds` writes from the types: edited by hand or
    /// left behind a type change, this fails and names the command.
    #[test]
    fn committed_manifests_are_the_generated_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/kubernetes/crds");
        for (name, text) in super::manifests() {
            let on_disk = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert!(
                on_disk == text,
                "configs/kubernetes/crds/{name} differs from the types: run `edgelb crds --out configs/kubernetes/crds`"
            );
        }
        let files = std::fs::read_dir(&dir).map(Iterator::count).unwrap_or(0);
        assert_eq!(files, super::manifests().len(), "a file in configs/kubernetes/crds that no type generates");
    }
}
