//! edgelb's custom resources end to end (root, network namespaces, the in-repo API server emulator, kubectl, BIRD):
//! the generated CRDs are applied with kubectl, then a `VIPPool` (IPv4 and IPv6), two `BGPPeer`s (one selecting this
//! appliance by its labels, one not), two `L2Announcement`s (an IPv4 and an IPv6 virtual router) and a `VIPPool`
//! named like a file pool. The appliance follows: dual-stack Services get addresses from the pool, the peer's
//! session comes up and BIRD learns the VIPs of both families, the routers run and become Master, and each
//! resource's status says Accepted / Programmed with the reason (the clash as NameConflict). Shrinking the pool moves
//! only the Service whose address left it; deleting the peer ends its session; deleting a router stops it.

use edgelb_testkit::daemon::Edgelbd;
use edgelb_testkit::kube::{emulator, kubeconfig};
use edgelb_testkit::netns::{require_root, Lab};
use edgelb_testkit::peers::Bird;
use std::process::Command;
use std::time::{Duration, Instant};

const EDGELBD: &str = env!("CARGO_BIN_EXE_edgelbd");
const EDGELBCTL: &str = env!("CARGO_BIN_EXE_edgelbctl");
const APISERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/apiserver.py");
const CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/kubernetes/crds");
const API: &str = "http://127.0.0.1:50081";

const RESOURCES: &str = r#"apiVersion: edgelb.io/v1alpha1
kind: VIPPool
metadata:
  name: edge
spec:
  addresses: ["198.19.0.1-198.19.0.7", "2001:db8:100::1-2001:db8:100::7"]
---
apiVersion: edgelb.io/v1alpha1
kind: VIPPool
metadata:
  name: lab
spec:
  addresses: ["198.19.5.0/28"]
---
apiVersion: edgelb.io/v1alpha1
kind: BGPPeer
metadata:
  name: tor
spec:
  address: 198.18.255.2
  remoteAs: 65000
  holdTime: 9
  connectRetry: 1
  nextHopV6: "2001:db8:ff::1"
  communities: ["65001:42"]
  nodeSelector:
    matchLabels: {site: a}
---
apiVersion: edgelb.io/v1alpha1
kind: BGPPeer
metadata:
  name: elsewhere
spec:
  address: 198.18.255.6
  remoteAs: 65000
  nodeSelector:
    matchLabels: {site: b}
---
apiVersion: edgelb.io/v1alpha1
kind: L2Announcement
metadata:
  name: front
spec:
  port: lb0
  vrid: 7
  advertIntervalMs: 100
  vips: ["198.19.1.1"]
---
apiVersion: edgelb.io/v1alpha1
kind: L2Announcement
metadata:
  name: front6
spec:
  port: lb0
  vrid: 7
  advertIntervalMs: 100
  vips: ["2001:db8:101::1"]
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: default
spec:
  type: LoadBalancer
  loadBalancerClass: edgelb.io/lb
  ports:
  - {port: 443, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: LoadBalancer
  loadBalancerClass: edgelb.io/lb
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  ports:
  - {port: 80, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-1
  namespace: default
  labels: {kubernetes.io/service-name: api}
addressType: IPv4
ports: [{port: 8443, protocol: TCP}]
endpoints: [{addresses: ["198.18.0.20"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-4
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{port: 8080, protocol: TCP}]
endpoints: [{addresses: ["198.18.0.20"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-6
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv6
ports: [{port: 8080, protocol: TCP}]
endpoints: [{addresses: ["2001:db8::20"]}]
"#;

fn wait_for(what: &str, secs: u64, f: impl Fn() -> String, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let out = f();
        if ok(&out) {
            return out;
        }
        assert!(Instant::now() < deadline, "never saw {what}; last:\n{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn custom_resources_drive_pools_peers_and_routers() {
    require_root();
    let mut lab = Lab::new("crds");
    let (lb, rt, cl) = (lab.ns("lb"), lab.ns("rt"), lab.ns("cl"));
    lab.veth(&lb, "lb0", &cl, "cl0");
    lab.veth(&lb, "up0", &rt, "up1");
    lab.ip(&cl, "addr add 198.18.0.10/24 dev cl0");
    lab.ip(&cl, "addr add 2001:db8::10/64 dev cl0 nodad");
    lab.ip(&lb, "addr add 198.18.255.1/30 dev up0");
    lab.ip(&rt, "addr add 198.18.255.2/30 dev up1");
    lab.ip(&lb, "addr add 2001:db8:ff::1/64 dev up0 nodad");
    lab.ip(&rt, "addr add 2001:db8:ff::2/64 dev up1 nodad");
    let dir = std::env::temp_dir().join(format!("edgelb-crds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    lab.own_file(dir.clone());
    let bird = Bird::start(
        &rt,
        &dir.join("bird"),
        "router id 198.18.255.2;\nprotocol device { }\nprotocol bgp edge {\n  local 198.18.255.2 as 65000;\n  \
         neighbor 198.18.255.1 as 65001;\n  passive on;\n  hold time 9;\n  \
         ipv4 { import all; export none; };\n  ipv6 { import all; export none; };\n}\n",
    );
    let _emu = emulator(APISERVER, &lb, 18091, None);
    let kc = dir.join("kubeconfig");
    std::fs::write(&kc, kubeconfig("http://127.0.0.1:18091")).unwrap();
    let cfg = dir.join("edgelbd.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[[port]]
name = "lb0"
driver = "afpacket"
addresses = ["198.18.0.1/24", "2001:db8::1/64"]
frames = 256

[api]
listen = "127.0.0.1:50081"

[bgp]
local_as = 65001
router_id = "198.18.255.1"

[[neighbor]]
address = "198.18.0.20"
mac = "02:00:00:00:00:20"

[[neighbor]]
address = "2001:db8::20"
mac = "02:00:00:00:00:20"

[kubernetes]
kubeconfig = "{}"
identity = "edge-1"
lease_duration = 6
node_labels = {{ site = "a" }}

[[kubernetes.pool]]
name = "lab"
addresses = ["198.19.9.0/28"]
namespaces = ["elsewhere"]
"#,
            kc.display()
        ),
    )
    .unwrap();
    let log = dir.join("edgelbd.log");
    let _d = Edgelbd::new(EDGELBD, &lb, &cfg).spawn(&log);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let kubectl = |args: &[&str]| -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", &lb, "kubectl", "--kubeconfig"])
            .arg(&kc)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let ctl = |args: &[&str]| -> String {
        let o = Command::new("ip").args(["netns", "exec", &lb, EDGELBCTL, "--addr", API]).args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let condition = |kind: &str, name: &str, type_: &str| {
        let path = format!("jsonpath={{.status.conditions[?(@.type==\"{type_}\")].status}}/{{.status.conditions[?(@.type==\"{type_}\")].reason}}");
        kubectl(&["get", kind, name, "-o", &path])
    };

    println!("{}", kubectl(&["apply", "--validate=false", "-f", CRDS]));
    let res = dir.join("resources.yaml");
    std::fs::write(&res, RESOURCES).unwrap();
    println!("{}", kubectl(&["apply", "--validate=false", "-f", res.to_str().unwrap()]));

    // Services get addresses from the VIPPool, in name order; the file's pool admits neither.
    let svc = |name: &str| kubectl(&["get", "svc", name, "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"]);
    let api = wait_for("api's VIP", 20, || svc("api"), |s| !s.is_empty());
    let web = wait_for("web's VIPs", 5, || svc("web"), |s| s.contains(' '));
    println!("api: {api}; web: {web}\nedgelbd:\n{}", logged());
    assert_eq!(api, "198.19.0.1");
    assert_eq!(web, "198.19.0.2 2001:db8:100::1");

    // The BGPPeer selecting this appliance: BIRD learns every VIP, both families, with the peer's attributes.
    let r = bird.wait_routes("the VIPs over the BGPPeer's session", 20, |r| {
        r.contains("198.19.0.1/32") && r.contains("198.19.0.2/32") && r.contains("2001:db8:100::1/128")
    });
    assert!(r.contains("(65001,42)") && r.contains("BGP.next_hop: 2001:db8:ff::1"), "{r}");
    let peers = ctl(&["peer", "list"]);
    println!("edgelbctl peer list:\n{peers}");
    assert!(peers.contains("tor") && !peers.contains("elsewhere"), "{peers}");

    // The virtual routers run, alone on the segment: Master in both families.
    let vrrp = wait_for(
        "both L2Announcement routers Master",
        10,
        || ctl(&["vrrp", "list"]),
        |v| v.lines().filter(|l| (l.contains("front") || l.contains("front6")) && l.contains("Master")).count() == 2,
    );
    println!("edgelbctl vrrp list:\n{vrrp}");

    // Each resource's status, written by the Lease holder.
    let want = [
        ("vippool", "edge", "Accepted", "True/Accepted"),
        ("vippool", "edge", "Programmed", "True/InUse"),
        ("vippool", "lab", "Accepted", "False/NameConflict"),
        ("bgppeer", "tor", "Programmed", "True/Configured"),
        ("bgppeer", "elsewhere", "Accepted", "True/Accepted"),
        ("bgppeer", "elsewhere", "Programmed", "False/NotSelected"),
        ("l2announcement", "front", "Programmed", "True/Running"),
        ("l2announcement", "front6", "Programmed", "True/Running"),
    ];
    for (kind, name, type_, expected) in want {
        wait_for(&format!("{kind} {name} {type_} {expected}"), 10, || condition(kind, name, type_), |s| s == expected);
    }
    println!("{}", kubectl(&["get", "vippools,bgppeers,l2announcements"]));
    let lab_msg = kubectl(&["get", "vippool", "lab", "-o", "jsonpath={.status.conditions[0].message}"]);
    assert!(lab_msg.contains("config file has a pool named \"lab\""), "{lab_msg}");

    // Shrink the pool: 198.19.0.1 leaves it. Only api moves; web keeps both addresses.
    kubectl(&[
        "patch",
        "vippool",
        "edge",
        "--type=merge",
        "-p",
        r#"{"spec":{"addresses":["198.19.0.2-198.19.0.7","2001:db8:100::1-2001:db8:100::7"]}}"#,
    ]);
    let api = wait_for("api moved", 10, || svc("api"), |s| s != "198.19.0.1");
    assert_eq!(api, "198.19.0.3");
    assert_eq!(svc("web"), "198.19.0.2 2001:db8:100::1", "web's addresses stayed in the pool and stay");
    bird.wait_routes("198.19.0.1 withdrawn, 198.19.0.3 announced", 10, |r| {
        !r.contains("198.19.0.1/32") && r.contains("198.19.0.3/32") && r.contains("2001:db8:100::1/128")
    });
    wait_for(
        "observedGeneration 2",
        10,
        || kubectl(&["get", "vippool", "edge", "-o", "jsonpath={.status.conditions[0].observedGeneration}"]),
        |g| g == "2",
    );

    // Delete the peer: its session ends and BIRD drops the routes.
    kubectl(&["delete", "bgppeer", "tor"]);
    bird.wait_routes("no routes once the BGPPeer is deleted", 10, |r| !r.contains("198.19.0.2/32"));
    wait_for("tor gone from edgelbctl peer list", 5, || ctl(&["peer", "list"]), |p| !p.contains("tor"));

    // Delete a router: it stops, the other runs on.
    kubectl(&["delete", "l2announcement", "front"]);
    let v = wait_for(
        "front stopped",
        5,
        || ctl(&["vrrp", "list"]),
        |v| !v.lines().any(|l| l.contains("front ")) && v.contains("front6"),
    );
    println!("after deleting front:\n{v}");
    assert!(logged().contains("BGP peer removed (BGPPeer resource)"), "{}", logged());
}
