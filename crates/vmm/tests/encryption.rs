//! Encryption at rest with real QEMU, swtpm and OVMF (firmware only, no guest OS): what is on
//! disk cannot be read without the VM's key, a wrong or missing key fails closed and leaves every
//! file as it was, the VARS QEMU changes while running reaches the volume sealed within seconds,
//! a rekey (new KEK and new data key) keeps the TPM's content, and a plain state from before is
//! encrypted at its next start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrovirt_keys::{EncryptionSetting, Keyring, WrappedKey};
use ferrovirt_storage::VmUuid;
use ferrovirt_vmm::engine::{Engine, VmPlan};
use ferrovirt_vmm::state::{FirmwarePlan, TpmPlan};
use sha2::{Digest, Sha256};

const UUID: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

fn plan(data: &Path) -> VmPlan {
    let volume = data.join("volumes/persistent-state-for-vm1-crypt");
    if !volume.exists() {
        ferrovirt_storage::LocalPathProvisioner::new(data.join("volumes"))
            .unwrap()
            .create_volume("persistent-state-for-vm1-crypt")
            .unwrap();
    }
    VmPlan {
        namespace: "default".into(),
        name: "vm1".into(),
        vm_uid: Some("uid-of-vm1".into()),
        uuid: VmUuid::parse(UUID).unwrap(),
        smbios_serial: None,
        vcpus: 1,
        memory_mib: 128,
        firmware: FirmwarePlan::Uefi {
            secure_boot: false,
            persistent: true,
        },
        smm: false,
        hyperv: None,
        tpm: TpmPlan::Persistent,
        disks: vec![],
        nics: vec![],
        display: Default::default(),
        state_volume: Some(volume),
        legacy_generations_dir: None,
        grace: Duration::from_millis(300),
    }
}

struct Files {
    tpm_dir: PathBuf,
    tpm: PathBuf,
    vars: PathBuf,
    record: PathBuf,
}

fn files(data: &Path) -> Files {
    let volume = data.join("volumes/persistent-state-for-vm1-crypt");
    let tpm_dir = volume.join(format!("swtpm/{UUID}/tpm2"));
    Files {
        tpm: tpm_dir.join("tpm2-00.permall"),
        tpm_dir,
        vars: volume.join("nvram/vm1_VARS.fd"),
        record: volume.join("meta/ferrovirt/state-key.json"),
    }
}

fn digests(f: &Files) -> Vec<String> {
    [&f.tpm, &f.vars, &f.record]
        .iter()
        .map(|p| format!("{:x}", Sha256::digest(std::fs::read(p).unwrap())))
        .collect()
}

fn utf16(name: &str) -> Vec<u8> {
    name.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The VARS at rest, opened with the VM's key.
fn open_vars(data: &Path, f: &Files) -> Vec<u8> {
    let keyring = Keyring::for_data_dir(data).unwrap();
    let record = WrappedKey::read(&f.record).unwrap().unwrap();
    let key = keyring.unwrap(&record, &f.record).unwrap();
    ferrovirt_keys::sealed::open(&key, "uefi-vars", &std::fs::read(&f.vars).unwrap())
        .unwrap()
        .to_vec()
}

async fn ek_fingerprint(engine: &Engine, data: &Path) -> String {
    let running = engine.start(plan(data)).await.unwrap();
    engine.stop(&running).await.unwrap();
    let creds = ferrovirt_vmm::ek::ek_credentials(
        "vm1",
        &VmUuid::parse(UUID).unwrap(),
        TpmPlan::Persistent,
        plan(data).state_volume.as_deref(),
        &Keyring::for_data_dir(data).unwrap(),
    )
    .unwrap();
    creds.certificates[0].certificate.sha256.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn state_at_rest_is_encrypted_synced_fails_closed_and_rekeys() {
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::new(data.path()).await.unwrap();
    let f = files(data.path());

    // First start: a data key, its record, a local KEK (0600) and an encrypted TPM.
    let running = engine.start(plan(data.path())).await.unwrap();
    let runtime = engine.runtime_path(&VmUuid::parse(UUID).unwrap());
    let plain_vars = runtime.join("VARS.fd");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&plain_vars).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let kek = data.path().join("state-keys/kek-1.key");
    assert_eq!(
        std::fs::metadata(&kek).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(f.record.is_file());

    // What QEMU writes into its plain copy reaches the sealed file in the volume while it runs.
    let mut store = ferrovirt_vmm::firmware::VariableStore::parse(
        &plain_vars,
        std::fs::read(&plain_vars).unwrap(),
    )
    .unwrap();
    let vendor =
        ferrovirt_vmm::firmware::vars::EfiGuid::parse("8be4df61-93ca-11d2-aa0d-00e098032b8c")
            .unwrap();
    store
        .set(ferrovirt_vmm::firmware::vars::EfiVariable {
            name: "FerrovirtSyncProbe".into(),
            vendor,
            attributes: 7,
            data: b"written while running".to_vec(),
        })
        .unwrap();
    let sealed_before = std::fs::read(&f.vars).unwrap();
    std::fs::write(&plain_vars, store.to_bytes().unwrap()).unwrap();
    // The firmware keeps running and may write its own variables into the plain copy after ours
    // (QEMU writes back the flash blocks it changed), so what must hold is: the sealed file is
    // sealed again after our write, and it holds what the plain copy holds.
    let deadline = std::time::Instant::now()
        + ferrovirt_vmm::state_keys::VARS_SYNC_INTERVAL * 5
        + Duration::from_secs(5);
    loop {
        let sealed_now = std::fs::read(&f.vars).unwrap();
        if sealed_now != sealed_before
            && open_vars(data.path(), &f) == std::fs::read(&plain_vars).unwrap()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the plain VARS copy was not sealed into the volume while the VM ran"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    engine.stop(&running).await.unwrap();
    assert!(
        !runtime.exists(),
        "the plain copy goes with the runtime dir"
    );

    // On disk: a bare swtpm refuses the TPM state; the VARS shows no variable name.
    assert!(ferrovirt_tpm::is_encrypted_state(
        &std::fs::read(&f.tpm).unwrap()
    ));
    let bare = ferrovirt_tpm::check_state(&f.tpm_dir).unwrap_err();
    eprintln!("bare swtpm: {bare}");
    let at_rest = std::fs::read(&f.vars).unwrap();
    let store = ferrovirt_vmm::efi_vars::read(data.path(), &plan(data.path())).unwrap();
    let names: Vec<String> = store.variables().map(|v| v.variable.name.clone()).collect();
    eprintln!("variables after a firmware run: {names:?}");
    assert!(names.iter().any(|n| n == "FerrovirtSyncProbe"), "{names:?}");
    for name in &names {
        assert!(!contains(&at_rest, &utf16(name)), "{name} readable at rest");
    }
    // The generations keep it encrypted too.
    let generations = data.path().join(format!("state-generations/vms/{UUID}"));
    let mut generation_files = 0;
    for entry in walk(&generations) {
        let bytes = std::fs::read(&entry).unwrap();
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("tpm-state") || name.contains("permall") {
            assert!(
                ferrovirt_tpm::is_encrypted_state(&bytes),
                "{}",
                entry.display()
            );
            generation_files += 1;
        }
        assert!(
            !contains(&bytes, &utf16("FerrovirtSyncProbe")),
            "{}",
            entry.display()
        );
    }
    assert!(generation_files > 0, "no TPM state in the generations");
    let ek_before = ek_fingerprint(&engine, data.path()).await;

    // A wrong KEK: the start fails closed, naming the key file; nothing changes.
    let good_kek = std::fs::read(&kek).unwrap();
    let before = digests(&f);
    std::fs::write(&kek, [0x5a; 32]).unwrap();
    let err = engine
        .start(plan(data.path()))
        .await
        .err()
        .expect("a wrong key must fail")
        .to_string();
    eprintln!("wrong key: {err}");
    assert!(
        err.contains("kek-1.key") && err.contains("not changed"),
        "{err}"
    );
    assert_eq!(digests(&f), before);
    // A missing KEK: the same, with how to fix it.
    std::fs::remove_file(&kek).unwrap();
    let err = engine
        .start(plan(data.path()))
        .await
        .err()
        .expect("a missing key must fail")
        .to_string();
    eprintln!("missing key: {err}");
    assert!(
        err.contains("does not exist") && err.contains("backup"),
        "{err}"
    );
    assert_eq!(digests(&f), before);
    std::fs::write(&kek, &good_kek).unwrap();
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Rekey: a new local KEK and a new data key; the TPM keeps its EK, the VARS its variables.
    let old_record = WrappedKey::read(&f.record).unwrap().unwrap();
    let report = ferrovirt_vmm::rekey::rekey(
        data.path(),
        &plan(data.path()),
        ferrovirt_vmm::rekey::RekeyOptions {
            new_kek: true,
            rotate_dek: true,
        },
    )
    .unwrap();
    let new_record = WrappedKey::read(&f.record).unwrap().unwrap();
    assert_eq!(report.old_kek, "local-1");
    assert_eq!(new_record.kek_id, "local-2");
    assert_ne!(new_record.data_key_id, old_record.data_key_id);
    assert!(contains(
        &open_vars(data.path(), &f),
        &utf16("FerrovirtSyncProbe")
    ));
    assert_eq!(ek_fingerprint(&engine, data.path()).await, ek_before);
    // The old KEK is no longer needed by this VM.
    std::fs::remove_file(&kek).unwrap();
    assert_eq!(ek_fingerprint(&engine, data.path()).await, ek_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_state_is_encrypted_at_its_next_start() {
    let data = tempfile::tempdir().unwrap();
    let f = files(data.path());
    Keyring::record(data.path(), EncryptionSetting::None).unwrap();
    let engine = Engine::new(data.path()).await.unwrap();
    let running = engine.start(plan(data.path())).await.unwrap();
    engine.stop(&running).await.unwrap();
    assert!(!ferrovirt_tpm::is_encrypted_state(
        &std::fs::read(&f.tpm).unwrap()
    ));
    assert!(ferrovirt_tpm::check_state(&f.tpm_dir).is_ok());
    assert!(!f.record.exists());
    // A variable set offline into the plain VARS.
    ferrovirt_vmm::efi_vars::change(data.path(), &plan(data.path()), "test", |store| {
        store.set(ferrovirt_vmm::firmware::vars::EfiVariable {
            name: "FerrovirtPlainProbe".into(),
            vendor: ferrovirt_vmm::firmware::vars::EfiGuid::parse(
                "8be4df61-93ca-11d2-aa0d-00e098032b8c",
            )
            .unwrap(),
            attributes: 7,
            data: b"before encryption".to_vec(),
        })?;
        Ok(Vec::new())
    })
    .unwrap();
    assert!(contains(
        &std::fs::read(&f.vars).unwrap(),
        &utf16("FerrovirtPlainProbe")
    ));
    let plain_ek = ferrovirt_vmm::ek::ek_credentials(
        "vm1",
        &VmUuid::parse(UUID).unwrap(),
        TpmPlan::Persistent,
        plan(data.path()).state_volume.as_deref(),
        &Keyring::for_data_dir(data.path()).unwrap(),
    )
    .unwrap()
    .certificates[0]
        .certificate
        .sha256
        .to_string();

    // The server restarts with encryption on (the default): the next start encrypts.
    Keyring::record(data.path(), EncryptionSetting::Local).unwrap();
    let engine = Engine::new(data.path()).await.unwrap();
    let running = engine.start(plan(data.path())).await.unwrap();
    let state = running.state.as_ref().unwrap();
    assert!(state.encrypted_now, "{:?}", state.warnings);
    engine.stop(&running).await.unwrap();
    assert!(ferrovirt_tpm::is_encrypted_state(
        &std::fs::read(&f.tpm).unwrap()
    ));
    assert!(ferrovirt_tpm::check_state(&f.tpm_dir).is_err());
    assert!(!contains(
        &std::fs::read(&f.vars).unwrap(),
        &utf16("FerrovirtPlainProbe")
    ));
    let store = ferrovirt_vmm::efi_vars::read(data.path(), &plan(data.path())).unwrap();
    assert!(
        store
            .variables()
            .any(|v| v.variable.name == "FerrovirtPlainProbe")
    );
    assert_eq!(ek_fingerprint(&engine, data.path()).await, plain_ek);

    // The one way out in plain text (export): equal to what swtpm reads with the key.
    let volume =
        ferrovirt_storage::StateVolume::open(plan(data.path()).state_volume.unwrap()).unwrap();
    let scratch = data.path().join("run");
    let record = ferrovirt_vmm::state_keys::record_path(&volume);
    let tpm_before = std::fs::read(&f.tpm).unwrap();
    let vars_before = std::fs::read(&f.vars).unwrap();
    let plain = ferrovirt_vmm::state_keys::plain_state_for_export(
        "vm1",
        ferrovirt_vmm::state_keys::ExportedStateFiles {
            record: &record,
            tpm_state: Some(&f.tpm),
            vars: Some(&f.vars),
        },
        &Keyring::for_data_dir(data.path()).unwrap(),
        &scratch,
    )
    .unwrap();
    assert!(!ferrovirt_tpm::is_encrypted_state(
        plain.tpm_state.as_ref().unwrap()
    ));
    assert!(contains(
        plain.vars.as_ref().unwrap(),
        &utf16("FerrovirtPlainProbe")
    ));
    // A copy under another name (a snapshot's `tpm-state`) decrypts the same; nothing at rest
    // changed, and the scratch dir holds nothing afterwards.
    let copy = data.path().join("tpm-state");
    std::fs::copy(&f.tpm, &copy).unwrap();
    let from_copy = ferrovirt_vmm::state_keys::plain_state_for_export(
        "vm1",
        ferrovirt_vmm::state_keys::ExportedStateFiles {
            record: &record,
            tpm_state: Some(&copy),
            vars: None,
        },
        &Keyring::for_data_dir(data.path()).unwrap(),
        &scratch,
    )
    .unwrap();
    assert_eq!(from_copy.tpm_state, plain.tpm_state);
    assert!(from_copy.vars.is_none());
    assert_eq!(std::fs::read(&f.tpm).unwrap(), tpm_before);
    assert_eq!(std::fs::read(&f.vars).unwrap(), vars_before);
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".ferrovirt-keys-")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Without the key (the KEK file gone) nothing is decrypted.
    let keks = data.path().join("state-keys");
    let hidden = data.path().join("state-keys.hidden");
    std::fs::rename(&keks, &hidden).unwrap();
    let refused = ferrovirt_vmm::state_keys::plain_state_for_export(
        "vm1",
        ferrovirt_vmm::state_keys::ExportedStateFiles {
            record: &record,
            tpm_state: Some(&f.tpm),
            vars: Some(&f.vars),
        },
        &Keyring::for_data_dir(data.path()).unwrap(),
        &scratch,
    );
    assert!(
        matches!(refused, Err(ferrovirt_vmm::state::StateFault::Key(_))),
        "{refused:?}"
    );
    std::fs::rename(&hidden, &keks).unwrap();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}
