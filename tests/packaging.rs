//! Packaging for a host: `configs/systemd/edgelbd.service` passes `systemd-analyze verify` without a word (systemd
//! only warns about keys it does not know, so any output fails the test), with `ExecStart` pointing at the edgelbd this
//! build made; a copy with a key systemd does not know is caught the same way, so the check can fail. And edgelbd runs
//! as the unit runs it: not root, with only the unit's capabilities, it opens its AF_PACKET port, answers ARP and
//! forwards a connection (root to set up the namespaces).

use edgelb_testkit::netns::{in_netns, require_root, Lab};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const EDGELBD: &str = env!("CARGO_BIN_EXE_edgelbd");
const UNIT: &str = include_str!("../configs/systemd/edgelbd.service");

/// `systemd-analyze verify` of `text` as `name`: its exit status and everything it printed.
fn verify(name: &str, text: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("edgelb-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let o =
        Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze (Debian systemd)");
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.success(), said)
}

#[test]
fn the_edgelbd_unit_verifies_cleanly_and_a_bad_one_does_not() {
    assert!(UNIT.contains("ExecStart=/usr/local/bin/edgelbd "), "the unit starts /usr/local/bin/edgelbd");
    let unit = UNIT.replace("/usr/local/bin/edgelbd", EDGELBD);
    let (ok, said) = verify("edgelbd.service", &unit);
    assert!(ok && said.trim().is_empty(), "systemd-analyze verify: {said}");
    for key in ["ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "LimitMEMLOCK=infinity", "CPUAffinity="] {
        assert!(unit.contains(key), "the unit sets {key}");
    }
    let bad = unit.replace("Restart=on-failure", "Restart=on-failure\nRestartOften=yes");
    let (_, said) = verify("edgelbd.service", &bad);
    assert!(said.contains("RestartOften"), "a key systemd does not know is reported: {said:?}");
}

/// The unit's capabilities, as `setpriv` wants them.
fn unit_caps() -> String {
    let line = UNIT.lines().find_map(|l| l.strip_prefix("AmbientCapabilities=")).expect("AmbientCapabilities");
    line.split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn edgelbd_forwards_as_an_unprivileged_user_with_the_units_capabilities() {
    require_root();
    let mut lab = Lab::new("caps");
    let (cl, lb, be) = (lab.ns("cl"), lab.ns("lb"), lab.ns("be"));
    lab.veth(&cl, "cl0", &lb, "lb0");
    lab.veth(&lb, "lb1", &be, "be0");
    lab.ip(&cl, "addr add 198.18.0.10/24 dev cl0");
    lab.ip(&cl, "route add 198.19.0.0/24 dev cl0");
    lab.ip(&be, "addr add 198.18.2.10/24 dev be0");
    lab.ip(&be, "route add default via 198.18.2.1 dev be0");
    let server = in_netns(&be, || TcpListener::bind("198.18.2.10:8080").unwrap());
    let serve = std::thread::spawn(move || {
        server.set_nonblocking(false).unwrap();
        if let Ok((mut c, _)) = server.accept() {
            let _ = c.write_all(b"be\n");
        }
    });
    let dir = std::env::temp_dir().join(format!("edgelb-caps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("edgelb.toml");
    std::fs::write(
        &cfg,
        "[[port]]\nname = \"lb0\"\ndriver = \"afpacket\"\naddresses = [\"198.18.0.1/24\"]\nframes = 256\n\n\
         [[port]]\nname = \"lb1\"\ndriver = \"afpacket\"\naddresses = [\"198.18.2.1/24\"]\nframes = 256\n\n\
         [api]\nenabled = false\n\n[metrics]\nenabled = false\n\n\
         [[service]]\nvip = \"198.19.0.1\"\nprotocol = \"tcp\"\nport = 80\nmode = \"nat\"\n\n\
         [[service.backend]]\naddress = \"198.18.2.10\"\nport = 8080\n",
    )
    .unwrap();
    // nobody (65534), no supplementary groups, only the unit's capabilities (inheritable and ambient, so they
    // survive the exec), no new privileges: as systemd starts it.
    let caps = unit_caps();
    let log = dir.join("edgelbd.log");
    let mut d = edgelb_testkit::netns::Reaped(
        Command::new("ip")
            .args(["netns", "exec", &lb, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(format!("--inh-caps=-all,{caps}"))
            .arg(format!("--ambient-caps=-all,{caps}"))
            .arg(format!("--bounding-set=-all,{caps}"))
            .args(["--no-new-privs", EDGELBD, "--config"])
            .arg(&cfg)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("setpriv (util-linux)"),
    );
    let to: SocketAddr = "198.19.0.1:80".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let answer = loop {
        let r = in_netns(&cl, move || -> Result<String, String> {
            let mut c = TcpStream::connect_timeout(&to, Duration::from_millis(500)).map_err(|e| e.to_string())?;
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut s = String::new();
            c.read_to_string(&mut s).map_err(|e| e.to_string())?;
            Ok(s)
        });
        match r {
            Ok(s) => break s,
            Err(e) => {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(d.0.try_wait().unwrap().is_none(), "edgelbd exited as an unprivileged user:\n{log}");
                assert!(Instant::now() < deadline, "no connection through the VIP ({e}):\n{log}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(answer, "be\n");
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.0.id())).unwrap_or_default();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default().to_string();
    assert!(uid.split_whitespace().nth(1) == Some("65534"), "edgelbd ran as nobody: {uid}");
    let _ = d.0.kill();
    serve.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
