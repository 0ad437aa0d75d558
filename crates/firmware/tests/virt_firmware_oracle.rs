//! Cross-checks `list_variables` against an independent parser: `virt-fw-vars` from the Python
//! `virt-firmware` package (PyPI). The tests fail when it is missing (scripts/setup.sh installs it
//! with `pip install virt-firmware`).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::Path;
use std::process::Command;

use ferrovirt_firmware::vars::{check_vars, list_variables};

const PLAIN: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// The oracle must be there: scripts/setup.sh installs it (`pip install virt-firmware`).
fn have_virt_fw_vars() -> bool {
    let found = Command::new("virt-fw-vars")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "virt-fw-vars is not installed: run scripts/setup.sh (or pip install virt-firmware)"
    );
    found
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// (name, guid, attributes, data hex) as virt-fw-vars sees them, sorted.
fn oracle(path: &Path, out_dir: &Path) -> Vec<(String, String, u64, String)> {
    let json_path = out_dir.join("vars.json");
    let status = Command::new("virt-fw-vars")
        .arg("--input")
        .arg(path)
        .arg("--output-json")
        .arg(&json_path)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let mut vars: Vec<_> = json["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                v["guid"].as_str().unwrap().to_owned(),
                v["attr"].as_u64().unwrap(),
                v["data"].as_str().unwrap().to_ascii_lowercase(),
            )
        })
        .collect();
    vars.sort();
    vars
}

fn ours(path: &Path) -> Vec<(String, String, u64, String)> {
    let mut vars: Vec<_> = list_variables(path)
        .unwrap()
        .into_iter()
        .map(|v| {
            (
                v.name,
                v.vendor.to_string(),
                u64::from(v.attributes),
                hex(&v.data),
            )
        })
        .collect();
    vars.sort();
    vars
}

#[test]
fn variables_match_virt_firmware() {
    if !have_virt_fw_vars() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for path in [PLAIN, MS] {
        let expected = oracle(Path::new(path), tmp.path());
        assert_eq!(ours(Path::new(path)), expected, "{path}");
    }
    assert_eq!(ours(Path::new(MS)).len(), 31);
}

#[test]
fn variable_written_by_another_tool_is_found() {
    if !have_virt_fw_vars() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("vm_VARS.fd");
    let status = Command::new("virt-fw-vars")
        .arg("--input")
        .arg(PLAIN)
        .arg("--set-shim-verbose")
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let info = check_vars(&out, Path::new(PLAIN)).unwrap();
    assert!(info.variable_count >= 1);
    let ours = ours(&out);
    assert!(
        ours.iter().any(|(name, guid, _, _)| name == "SHIM_VERBOSE"
            && guid == "605dab50-e046-4300-abb6-3dd810dd8b23"),
        "{ours:?}"
    );
    assert_eq!(ours, oracle(&out, tmp.path()));
}
