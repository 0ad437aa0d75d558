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

/// Our writer -> virt-fw-vars: a set, a replaced and a deleted variable in both store kinds are
/// what virt-fw-vars reads back, and everything else is unchanged.
#[test]
fn variables_written_by_us_are_read_by_virt_firmware() {
    use ferrovirt_firmware::vars::{EFI_GLOBAL_VARIABLE_GUID, EfiGuid, EfiVariable};
    use ferrovirt_firmware::vars_write::{ATTR_DEFAULT, VariableStore};
    if !have_virt_fw_vars() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let test_guid = EfiGuid::new(
        0x3f1a2b3c,
        0x4d5e,
        0x4f60,
        [0x81, 0x92, 0xa3, 0xb4, 0xc5, 0xd6, 0xe7, 0xf8],
    );
    for template in [PLAIN, MS] {
        let mut store = VariableStore::open(Path::new(template)).unwrap();
        let before = ours(Path::new(template));
        // Add one (odd length: padding), replace one, delete one.
        store
            .set(EfiVariable {
                name: "FerrovirtTest".into(),
                vendor: test_guid,
                attributes: ATTR_DEFAULT,
                data: b"hello from ferrovirt".to_vec(),
            })
            .unwrap();
        // A variable added and deleted again leaves no trace.
        store
            .set(EfiVariable {
                name: "FerrovirtGone".into(),
                vendor: test_guid,
                attributes: ATTR_DEFAULT,
                data: vec![1, 2, 3, 4, 5],
            })
            .unwrap();
        assert!(store.delete("FerrovirtGone", &test_guid));
        assert!(!store.delete("NoSuchVariable", &EFI_GLOBAL_VARIABLE_GUID));
        // In a store with variables: replace the first one's data, delete the last one.
        let find = |store: &VariableStore, (name, guid): (&str, &str)| {
            store
                .variables()
                .find(|v| v.variable.name == name && v.variable.vendor.to_string() == guid)
                .unwrap()
                .variable
                .clone()
        };
        let victim = before.first().cloned();
        let deleted = before.last().cloned().filter(|_| before.len() >= 2);
        if let Some(victim) = &victim {
            let replaced = find(&store, (&victim.0, &victim.1));
            store
                .set(EfiVariable {
                    data: vec![7; 3],
                    ..replaced
                })
                .unwrap();
        }
        if let Some(deleted) = &deleted {
            let gone = find(&store, (&deleted.0, &deleted.1));
            assert!(store.delete(&gone.name, &gone.vendor));
        }

        let out = tmp.path().join("out_VARS.fd");
        store.write(&out).unwrap();
        assert_eq!(
            std::fs::metadata(&out).unwrap().len(),
            std::fs::metadata(template).unwrap().len()
        );
        check_vars(&out, Path::new(template)).unwrap();
        let mut expected: Vec<_> = before
            .iter()
            .filter(|v| deleted.as_ref() != Some(*v))
            .map(|v| {
                if victim.as_ref() == Some(v) {
                    (v.0.clone(), v.1.clone(), v.2, "070707".to_owned())
                } else {
                    v.clone()
                }
            })
            .collect();
        expected.push((
            "FerrovirtTest".into(),
            test_guid.to_string(),
            u64::from(ATTR_DEFAULT),
            hex(b"hello from ferrovirt"),
        ));
        expected.sort();
        assert_eq!(oracle(&out, tmp.path()), expected, "{template}");
        assert_eq!(ours(&out), expected, "{template}");
    }
}

/// virt-fw-vars -> our writer -> virt-fw-vars: keys enrolled by virt-fw-vars (PK, KEK, db with
/// their time stamps) survive our rewrite byte for byte in what virt-fw-vars reads.
#[test]
fn a_store_enrolled_by_virt_firmware_survives_our_rewrite() {
    use ferrovirt_firmware::vars::EfiVariable;
    use ferrovirt_firmware::vars_write::VariableStore;
    if !have_virt_fw_vars() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let enrolled = tmp.path().join("enrolled_VARS.fd");
    let status = Command::new("virt-fw-vars")
        .arg("--input")
        .arg(PLAIN)
        .arg("--enroll-generate")
        .arg("ferrovirt test")
        .arg("--output")
        .arg(&enrolled)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let theirs = oracle(&enrolled, tmp.path());
    assert!(theirs.iter().any(|v| v.0 == "PK"), "{theirs:?}");
    let mut store = VariableStore::open(&enrolled).unwrap();
    let pk_time = store
        .variables()
        .find(|v| v.variable.name == "PK")
        .unwrap()
        .timestamp;
    assert_ne!(pk_time, [0; 16], "virt-fw-vars stamps PK");
    // Rewrite with one extra variable; the keys and their time stamps are kept.
    let extra = EfiVariable {
        name: "Extra".into(),
        vendor: ferrovirt_firmware::vars::EFI_GLOBAL_VARIABLE_GUID,
        attributes: 0x7,
        data: vec![1],
    };
    store.set(extra).unwrap();
    let out = tmp.path().join("rewritten_VARS.fd");
    store.write(&out).unwrap();
    let again = VariableStore::open(&out).unwrap();
    assert_eq!(
        again
            .variables()
            .find(|v| v.variable.name == "PK")
            .unwrap()
            .timestamp,
        pk_time
    );
    let mut expected = theirs.clone();
    expected.push((
        "Extra".into(),
        "8be4df61-93ca-11d2-aa0d-00e098032b8c".into(),
        7,
        "01".into(),
    ));
    expected.sort();
    assert_eq!(oracle(&out, tmp.path()), expected);
}

/// Our EFI_SIGNATURE_LIST of one certificate is byte for byte what virt-fw-vars enrolls as PK.
#[test]
fn a_signature_list_matches_virt_firmware_enrollment() {
    use ferrovirt_firmware::vars::EfiGuid;
    use ferrovirt_firmware::vars_write::x509_signature_list;
    if !have_virt_fw_vars() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (key, cert) = (tmp.path().join("pk.key"), tmp.path().join("pk.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=ferrovirt test PK", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .unwrap()
        .stdout;
    let owner = "3f1a2b3c-4d5e-4f60-8192-a3b4c5d6e7f8";
    let out = tmp.path().join("pk_VARS.fd");
    let status = Command::new("virt-fw-vars")
        .arg("--input")
        .arg(PLAIN)
        .args(["--set-pk", owner])
        .arg(&cert)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let theirs = oracle(&out, tmp.path());
    let pk = theirs.iter().find(|v| v.0 == "PK").unwrap();
    assert_eq!(pk.2, 0x27, "PK's attributes");
    let ours = x509_signature_list(&EfiGuid::parse(owner).unwrap(), &der);
    assert_eq!(pk.3, hex(&ours));
}
