//! The exec KMS plugin protocol, driven with a real plugin script (Python + openssl, as a KMS
//! bridge would be written): wrap, unwrap, a wrong KMS key, a failing and a silent plugin.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ferrovirt_keys::plugin::{ExecPlugin, PluginError};
use ferrovirt_keys::{EncryptionSetting, KeyError, Keyring, WrappedKey};

/// A KMS plugin: AES-256-CBC with openssl under a key file next to it; keyID = the key file's
/// name; refuses a keyID it does not have.
pub fn write_plugin(dir: &Path) -> PathBuf {
    let kms_key = dir.join("kms-key-1");
    std::fs::write(
        &kms_key,
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    )
    .unwrap();
    let script = dir.join("kms-plugin");
    std::fs::write(
        &script,
        format!(
            r#"#!/usr/bin/python3
import base64, json, subprocess, sys
DIR = {dir:?}
req = json.load(sys.stdin)
op = sys.argv[1]
assert req["apiVersion"] == "keys.ferrovirt.io/v1"
def run(args, data):
    return subprocess.run(["openssl", "enc", "-aes-256-cbc", "-pbkdf2", "-pass", "file:" + DIR + "/" + key_id] + args,
                          input=data, capture_output=True, check=True).stdout
if op == "encrypt":
    key_id = "kms-key-1"
    ct = run([], base64.b64decode(req["plaintext"]))
    print(json.dumps({{"apiVersion": "keys.ferrovirt.io/v1", "kind": "EncryptResponse", "keyID": key_id, "ciphertext": base64.b64encode(ct).decode()}}))
elif op == "decrypt":
    key_id = req["keyID"]
    import os
    if not os.path.exists(DIR + "/" + key_id):
        print("no such KMS key: " + key_id, file=sys.stderr); sys.exit(3)
    try:
        pt = run(["-d"], base64.b64decode(req["ciphertext"]))
    except subprocess.CalledProcessError:
        print("decryption failed", file=sys.stderr); sys.exit(4)
    print(json.dumps({{"apiVersion": "keys.ferrovirt.io/v1", "kind": "DecryptResponse", "plaintext": base64.b64encode(pt).decode()}}))
else:
    sys.exit(2)
"#,
            dir = dir.display().to_string()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    script
}

#[test]
fn exec_plugin_wraps_and_unwraps_and_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = write_plugin(dir.path());
    let keyring = Keyring::new(dir.path(), EncryptionSetting::Exec(plugin.clone()));
    let (dek, record) = keyring.new_data_key().unwrap();
    assert_eq!(record.kek_id, "kms-key-1");
    let path = dir.path().join("state-key.json");
    record.write(&path).unwrap();
    let read = WrappedKey::read(&path).unwrap().unwrap();
    assert_eq!(
        keyring.unwrap(&read, &path).unwrap().as_bytes(),
        dek.as_bytes()
    );
    // No local KEK was made for it.
    assert!(!keyring.local().dir().exists());

    // The KMS lost its key: the plugin's message reaches the user.
    let mut lost = read.clone();
    lost.kek_id = "kms-key-2".into();
    let err = keyring.unwrap(&lost, &path).unwrap_err();
    assert!(
        err.to_string().contains("no such KMS key: kms-key-2"),
        "{err}"
    );
    // Another ciphertext: the plugin refuses (padding), or what it returns is not the data key.
    let mut other = read.clone();
    other.wrapped = record.wrapped.chars().rev().collect();
    assert!(keyring.unwrap(&other, &path).is_err());
}

#[test]
fn exec_plugin_bad_answers() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        p
    };
    let garbage = write("garbage", "#!/bin/sh\ncat >/dev/null; echo not-json\n");
    let err = ExecPlugin::new(&garbage).encrypt(&[1; 32]).unwrap_err();
    assert!(matches!(err, PluginError::BadResponse { .. }), "{err}");
    let wrong_kind = write(
        "wrong-kind",
        "#!/bin/sh\ncat >/dev/null; echo '{\"apiVersion\":\"keys.ferrovirt.io/v1\",\"kind\":\"DecryptResponse\",\"plaintext\":\"AA==\"}'\n",
    );
    let err = ExecPlugin::new(&wrong_kind).encrypt(&[1; 32]).unwrap_err();
    assert!(err.to_string().contains("EncryptResponse"), "{err}");
    let failing = write("failing", "#!/bin/sh\necho 'KMS unreachable' >&2; exit 7\n");
    let err = ExecPlugin::new(&failing).encrypt(&[1; 32]).unwrap_err();
    assert!(err.to_string().contains("KMS unreachable"), "{err}");
    let missing = ExecPlugin::new(dir.path().join("nope"))
        .encrypt(&[1; 32])
        .unwrap_err();
    assert!(matches!(missing, PluginError::Spawn { .. }), "{missing}");
    let keyring = Keyring::new(dir.path(), EncryptionSetting::Exec(failing));
    assert!(matches!(keyring.new_data_key(), Err(KeyError::Plugin(_))));
}
