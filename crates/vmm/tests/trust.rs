//! Trust at start (issue 15) with real QEMU, swtpm and OVMF (no guest OS): the start reports the
//! EK certificates' fingerprints, equal to what the offline EK read returns, and the PCR guard
//! flags a start whose firmware or Secure Boot differs from the last stop's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use ferrovirt_storage::VmUuid;
use ferrovirt_vmm::engine::{Engine, VmPlan};
use ferrovirt_vmm::state::{FirmwarePlan, TpmPlan};

const UUID: &str = "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d";

fn plan(data: &Path, secure_boot: bool) -> VmPlan {
    let volume = data.join("volumes/persistent-state-for-vm1-trust");
    if !volume.exists() {
        ferrovirt_storage::LocalPathProvisioner::new(data.join("volumes"))
            .unwrap()
            .create_volume("persistent-state-for-vm1-trust")
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
            secure_boot,
            persistent: true,
        },
        smm: false,
        hyperv: None,
        tpm: TpmPlan::Persistent,
        disks: vec![],
        nics: vec![],
        display: Default::default(),
        state_volume: Some(volume),
        legacy_generations_dir: Some(data.join("state-generations/persistent-state-for-vm1-trust")),
        grace: Duration::from_millis(300),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn start_reports_ek_fingerprints_and_the_pcr_guard_flags_a_firmware_change() {
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::new(data.path()).await.unwrap();

    // First start: manufactured; fingerprints from swtpm_setup's files; nothing recorded yet.
    let running = engine.start(plan(data.path(), false)).await.unwrap();
    let ek = running
        .notes
        .ek
        .clone()
        .expect("fingerprints at the first start");
    assert!(running.notes.pcrs_will_change.is_none());
    engine.stop(&running).await.unwrap();
    let volume = data.path().join("volumes/persistent-state-for-vm1-trust");
    assert!(volume.join("meta/ferrovirt/boot-profile.json").is_file());

    // The offline read (what the tpm/ek subresource returns) shows the same certificates.
    let creds = ferrovirt_vmm::ek::ek_credentials(
        "vm1",
        &VmUuid::parse(UUID).unwrap(),
        TpmPlan::Persistent,
        Some(&volume),
        &ferrovirt_keys::Keyring::for_data_dir(data.path()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        ek.rsa.as_deref(),
        Some(
            creds.certificates[0]
                .certificate
                .sha256
                .to_string()
                .as_str()
        )
    );
    assert_eq!(
        ek.ecc.as_deref(),
        Some(
            creds.certificates[1]
                .certificate
                .sha256
                .to_string()
                .as_str()
        )
    );
    assert!(
        creds
            .certificates
            .iter()
            .all(|c| c.chain_verification.is_ok())
    );

    // What the notes cost a start (reported, not asserted: a debug build on a shared host).
    let firmware = ferrovirt_vmm::machine::Firmware::Uefi {
        code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
        vars: volume.join("nvram/vm1_VARS.fd"),
        secure_boot: false,
    };
    let machine = ferrovirt_vmm::machine::MachineType::Q35 { smm: false };
    let mut took = Vec::new();
    for _ in 0..9 {
        let started = std::time::Instant::now();
        let _ = ferrovirt_vmm::boot_guard::profile_of(&firmware, &machine, None);
        let _ = ferrovirt_vmm::ek::fingerprints_at_start(
            "vm1",
            &VmUuid::parse(UUID).unwrap(),
            TpmPlan::Persistent,
            Some(&volume),
            None,
            None,
        );
        took.push(started.elapsed());
    }
    took.sort();
    eprintln!(
        "start notes (boot profile + EK fingerprints from the kept copies): median {:?}",
        took[4]
    );

    // Same firmware again: nothing to warn about; the fingerprints come from the kept copies.
    let running = engine.start(plan(data.path(), false)).await.unwrap();
    assert!(running.notes.pcrs_will_change.is_none());
    assert_eq!(running.notes.ek.as_ref(), Some(&ek));
    engine.stop(&running).await.unwrap();

    // Secure Boot switched on: another CODE file, SMM, Secure Boot -> PCR0, PCR1, PCR7.
    let running = engine.start(plan(data.path(), true)).await.unwrap();
    let change = running
        .notes
        .pcrs_will_change
        .clone()
        .expect("a firmware change is flagged");
    engine.stop(&running).await.unwrap();
    let what: Vec<&str> = change.changes.iter().map(|c| c.what.as_str()).collect();
    assert!(what.contains(&"firmware code"), "{what:?}");
    assert!(what.contains(&"Secure Boot"), "{what:?}");
    assert_eq!(change.pcrs(), [0, 1, 7]);
    assert!(change.message().contains("Suspend BitLocker"));

    // That stop recorded the new profile: the next start is quiet again.
    let running = engine.start(plan(data.path(), true)).await.unwrap();
    assert!(running.notes.pcrs_will_change.is_none());
    engine.stop(&running).await.unwrap();

    // A lost copy of the certificates is read again out of NV memory.
    std::fs::remove_dir_all(volume.join("meta/ferrovirt/ek")).unwrap();
    let running = engine.start(plan(data.path(), true)).await.unwrap();
    assert_eq!(running.notes.ek.as_ref(), Some(&ek));
    engine.stop(&running).await.unwrap();
}
