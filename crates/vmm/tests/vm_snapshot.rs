//! Snapshots and restores of a VM's files without QEMU (offline): what a snapshot holds and
//! excludes, that a restore into the same VM puts the files back and keeps the replaced state as
//! a generation (undoable), that a damaged snapshot is refused before anything is written, that a
//! restore into a new VM lands in the new VM's generations only (its first start puts it in its
//! own volume), as the identity policy says, and that a running VM is not snapshotted offline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use ferrovirt_storage::generations::GenerationReason;
use ferrovirt_storage::{Generations, StateVolume, VmStateStore, VmUuid};
use ferrovirt_vmm::disks::{DiskPlan, DiskSource};
use ferrovirt_vmm::engine::VmPlan;
use ferrovirt_vmm::machine::{DiskBus, DiskMedia};
use ferrovirt_vmm::state::{FirmwarePlan, TpmPlan};
use ferrovirt_vmm::vm_snapshot::{
    SnapshotFault, StatePolicy, restore_state, snapshot_parts, take_offline,
};
use serde_json::json;

fn disk(name: &str, source: DiskSource) -> DiskPlan {
    DiskPlan {
        name: name.into(),
        source,
        bus: DiskBus::Virtio,
        read_only: false,
        boot_order: None,
        serial: None,
        media: DiskMedia::Disk,
    }
}

fn plan(data: &Path, name: &str, uuid: &str, uid: &str, with_volume: bool) -> VmPlan {
    let volume = data.join(format!("volumes/persistent-state-for-{name}"));
    if with_volume {
        std::fs::create_dir_all(&volume).unwrap();
    }
    let claim = data.join(format!("volumes/data-{name}"));
    std::fs::create_dir_all(&claim).unwrap();
    VmPlan {
        namespace: "default".into(),
        name: name.into(),
        vm_uid: Some(uid.into()),
        uuid: VmUuid::parse(uuid).unwrap(),
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
        disks: vec![
            disk(
                "root",
                DiskSource::ClaimImage {
                    path: claim.join("disk.img"),
                },
            ),
            disk(
                "iso",
                DiskSource::HostFile {
                    path: "/images/install.iso".into(),
                    create_with_capacity: None,
                },
            ),
            disk("scratch", DiskSource::Empty { capacity_bytes: 1 }),
        ],
        nics: vec![],
        display: Default::default(),
        state_volume: with_volume.then_some(volume),
        legacy_generations_dir: None,
        grace: Duration::from_millis(300),
    }
}

const UUID_A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const UUID_B: &str = "bbbbbbbb-0000-4000-8000-000000000002";

/// Writes the state files of `plan` (as a run would leave them) and its PVC disk image.
fn write_state(plan: &VmPlan, tpm: &[u8], vars: &[u8], disk: &[u8]) {
    let volume = StateVolume::open(plan.state_volume.as_ref().unwrap()).unwrap();
    volume.ensure_layout(&plan.name, &plan.uuid).unwrap();
    std::fs::write(volume.tpm_state_file(&plan.uuid), tpm).unwrap();
    std::fs::write(volume.nvram_file(&plan.name).unwrap(), vars).unwrap();
    let DiskSource::ClaimImage { path } = &plan.disks[0].source else {
        panic!()
    };
    std::fs::write(path, disk).unwrap();
}

fn read_state(plan: &VmPlan) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let volume = StateVolume::open(plan.state_volume.as_ref().unwrap()).unwrap();
    let DiskSource::ClaimImage { path } = &plan.disks[0].source else {
        panic!()
    };
    (
        std::fs::read(volume.tpm_state_file(&plan.uuid)).unwrap(),
        std::fs::read(volume.nvram_file(&plan.name).unwrap()).unwrap(),
        std::fs::read(path).unwrap(),
    )
}

#[test]
fn offline_snapshot_and_restores_into_the_same_and_a_new_vm() {
    let data = tempfile::tempdir().unwrap();
    let a = plan(data.path(), "a", UUID_A, "uid-a", true);
    write_state(&a, b"tpm v1", b"vars v1", b"disk v1");

    // What the snapshot holds and leaves out.
    let parts = snapshot_parts(&a).unwrap();
    let logical: Vec<&str> = parts.files.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(logical, ["tpm-state", "vars", "disk-root"]);
    assert_eq!(parts.included, ["root"]);
    let excluded: Vec<&str> = parts.excluded.iter().map(|e| e.volume.as_str()).collect();
    assert_eq!(excluded, ["iso", "scratch"]);
    assert!(parts.excluded[0].reason.contains("hostDisk"));

    let vm = json!({"metadata": {"name": "a"}});
    let taken = take_offline(data.path(), &a, "vmsnapshot-content-1", &vm).unwrap();
    assert!(!taken.manifest.online);
    assert_eq!(taken.manifest.total_bytes(), 6 + 7 + 7);

    // Later state; the restore puts v1 back and keeps v2 as a generation.
    write_state(&a, b"tpm v2", b"vars v2", b"disk v2");
    let report = restore_state(
        data.path(),
        &a,
        "vmsnapshot-content-1",
        StatePolicy::COPY_ALL,
    )
    .unwrap();
    assert_eq!(
        read_state(&a),
        (b"tpm v1".to_vec(), b"vars v1".to_vec(), b"disk v1".to_vec())
    );
    assert_eq!(report.disks, ["root"]);
    let generations = Generations::new(VmStateStore::new(data.path()).dir_for(&a.uuid));
    let pre = generations.manifest(report.pre_restore.unwrap()).unwrap();
    assert!(matches!(pre.reason, GenerationReason::PreRestore { .. }));
    // Undo: rolling back to the pre-restore generation gives v2's TPM state and VARS again.
    let volume = StateVolume::open(a.state_volume.as_ref().unwrap()).unwrap();
    let (tpm, vars) = (
        volume.tpm_state_file(&a.uuid),
        volume.nvram_file("a").unwrap(),
    );
    generations
        .restore(
            report.pre_restore.unwrap(),
            &[("tpm-state", tpm.as_path()), ("vars", vars.as_path())],
        )
        .unwrap();
    assert_eq!(std::fs::read(&tpm).unwrap(), b"tpm v2");
    assert_eq!(std::fs::read(&vars).unwrap(), b"vars v2");

    // A new VM without a volume yet, fresh TPM + copied VARS: only the VARS, in its own store.
    let b = plan(data.path(), "b", UUID_B, "uid-b", false);
    let report = restore_state(
        data.path(),
        &b,
        "vmsnapshot-content-1",
        StatePolicy {
            copy_tpm: false,
            copy_efi: true,
        },
    )
    .unwrap();
    assert_eq!(
        report.pre_restore, None,
        "no volume: its first start restores it"
    );
    let b_generations = Generations::new(VmStateStore::new(data.path()).dir_for(&b.uuid));
    let imported = b_generations.verify(report.imported.unwrap()).unwrap();
    assert!(imported.entry("vars").is_some());
    assert!(
        imported.entry("tpm-state").is_none(),
        "tpm: fresh copies no TPM state"
    );
    // The source's files are untouched by the new VM's restore (v2 after the undo above).
    assert_eq!(read_state(&a).0, b"tpm v2");
}

#[test]
fn a_damaged_snapshot_is_refused_before_anything_is_written() {
    let data = tempfile::tempdir().unwrap();
    let a = plan(data.path(), "a", UUID_A, "uid-a", true);
    write_state(&a, b"tpm v1", b"vars v1", b"disk v1");
    take_offline(data.path(), &a, "s", &json!({})).unwrap();
    write_state(&a, b"tpm v2", b"vars v2", b"disk v2");
    let copy = data.path().join("snapshots/s/data/tpm-state");
    std::fs::write(&copy, b"tpm vX").unwrap();
    let err = restore_state(data.path(), &a, "s", StatePolicy::COPY_ALL).unwrap_err();
    assert!(matches!(err, SnapshotFault::Store(_)), "{err}");
    assert!(err.to_string().contains("damaged"), "{err}");
    assert_eq!(
        read_state(&a),
        (b"tpm v2".to_vec(), b"vars v2".to_vec(), b"disk v2".to_vec())
    );
}
