//! `configs/systemd/sriov-device-plugin.service` passes `systemd-analyze verify` without a word (systemd only warns
//! about keys it does not know, so any output fails the test), with `ExecStart` pointing at the plugin this build made;
//! a copy with a key systemd does not know is caught the same way.

use std::process::Command;

const PLUGIN: &str = env!("CARGO_BIN_EXE_sriov-device-plugin");
const UNIT: &str = include_str!("../../configs/systemd/sriov-device-plugin.service");

fn verify(text: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("edgelb-sriov-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sriov-device-plugin.service");
    std::fs::write(&path, text).unwrap();
    let o =
        Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze (Debian systemd)");
    let _ = std::fs::remove_dir_all(&dir);
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn the_unit_verifies_cleanly_and_a_bad_one_does_not() {
    assert!(UNIT.contains("ExecStart=/usr/local/bin/sriov-device-plugin "), "the unit starts the installed plugin");
    let unit = UNIT.replace("/usr/local/bin/sriov-device-plugin", PLUGIN);
    let (ok, said) = verify(&unit);
    assert!(ok && said.trim().is_empty(), "systemd-analyze verify: {said}");
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID") && unit.contains("Restart=on-failure"));
    let (_, said) = verify(&unit.replace("[Service]", "[Service]\nRestartOften=yes"));
    assert!(said.contains("RestartOften"), "a key systemd does not know is reported: {said:?}");
}
