//! The command line: help, usage errors and a bad configuration exit as documented (0, 2, 2).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sriov-device-plugin");

#[test]
fn help_usage_errors_and_a_bad_configuration_exit_as_documented() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--config", "--sys-root", "--plugin-dir", "--log-format"] {
        assert!(text.contains(flag), "--help lacks {flag}: {text}");
    }
    let missing = Command::new(BIN).output().unwrap();
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--config"), "{missing:?}");
    let bad_format = Command::new(BIN).args(["--config", "x.json", "--log-format", "xml"]).output().unwrap();
    assert_eq!(bad_format.status.code(), Some(2), "{bad_format:?}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, r#"{"resourceList": [{"resourceName": "vf", "deviceType": "gpu"}]}"#).unwrap();
    let bad = Command::new(BIN).arg("--config").arg(&cfg).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("config.json") && err.contains("deviceType"), "{err}");
}
