//! The engine with real QEMU, swtpm, swtpm_setup and OVMF (no guest OS: OVMF finds no disk): the
//! state lands in KubeVirt's volume layout, generations guard it, and a damaged or lost state
//! stops the start with a rollback path instead of becoming a fresh TPM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrovirt_storage::VmUuid;
use ferrovirt_vmm::engine::{Engine, EngineError, VmPlan};
use ferrovirt_vmm::state::{FirmwarePlan, StateFault, TpmPlan};

const UUID: &str = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";

fn plan(data: &Path, tpm: TpmPlan, firmware: FirmwarePlan) -> VmPlan {
    let persistent = tpm == TpmPlan::Persistent
        || matches!(
            firmware,
            FirmwarePlan::Uefi {
                persistent: true,
                ..
            }
        );
    if persistent {
        ferrovirt_storage::LocalPathProvisioner::new(data.join("volumes"))
            .unwrap()
            .create_volume("persistent-state-for-vm1-abcde")
            .unwrap();
    }
    VmPlan {
        namespace: "default".into(),
        name: "vm1".into(),
        vm_uid: Some("0c5e2a4e-uid-of-vm1".into()),
        uuid: VmUuid::parse(UUID).unwrap(),
        smbios_serial: None,
        vcpus: 1,
        memory_mib: 128,
        firmware,
        smm: false,
        hyperv: None,
        tpm,
        disks: vec![],
        nics: vec![],
        display: Default::default(),
        state_volume: persistent.then(|| data.join("volumes/persistent-state-for-vm1-abcde")),
        legacy_generations_dir: persistent
            .then(|| data.join("state-generations/persistent-state-for-vm1-abcde")),
        grace: Duration::from_millis(300),
    }
}

fn persistent_plan(data: &Path) -> VmPlan {
    plan(
        data,
        TpmPlan::Persistent,
        FirmwarePlan::Uefi {
            secure_boot: true,
            persistent: true,
        },
    )
}

fn volume(data: &Path) -> PathBuf {
    data.join("volumes/persistent-state-for-vm1-abcde")
}

fn tpm_file(data: &Path) -> PathBuf {
    volume(data).join(format!("swtpm/{UUID}/tpm2/tpm2-00.permall"))
}

fn vars_file(data: &Path) -> PathBuf {
    volume(data).join("nvram/vm1_VARS.fd")
}

async fn start_and_stop(engine: &Engine, plan: VmPlan) -> Result<Option<u64>, EngineError> {
    let running = engine.start(plan).await?;
    let recorded_before = running.state.as_ref().and_then(|s| s.recorded).map(|g| g.0);
    let end = engine.stop(&running).await?;
    assert!(end.recorded.is_some() == running.plan.needs_backend_storage());
    assert!(!engine.runtime_path(&running.plan.uuid).exists());
    Ok(recorded_before)
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_state_lands_in_kubevirt_layout_and_survives_restarts() {
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::new(data.path()).await.unwrap();

    // First start: TPM manufactured, VARS from the Secure Boot template, a generation recorded.
    let running = engine.start(persistent_plan(data.path())).await.unwrap();
    let state = running.state.as_ref().unwrap();
    assert!(state.manufactured.is_some());
    assert!(state.recorded.is_some());
    assert!(tpm_file(data.path()).is_file());
    assert_eq!(
        std::fs::metadata(vars_file(data.path())).unwrap().len(),
        // The 4M template, sealed at rest (encryption is on by default).
        540_672 + ferrovirt_keys::sealed::OVERHEAD as u64
    );
    for dir in ["meta", "swtpm-localca", "nvram", "swtpm"] {
        assert!(volume(data.path()).join(dir).is_dir(), "{dir} missing");
    }
    let tpm_before = std::fs::read(tpm_file(data.path())).unwrap();
    let end = engine.stop(&running).await.unwrap();
    assert!(end.recorded.is_some());

    // Second start: unchanged since the clean stop -> no new generation, same TPM (no manufacture).
    let running = engine.start(persistent_plan(data.path())).await.unwrap();
    let state = running.state.as_ref().unwrap();
    assert!(state.manufactured.is_none());
    assert!(
        state.recorded.is_none(),
        "unchanged state needs no new generation"
    );
    engine.stop(&running).await.unwrap();
    let tpm_after = std::fs::read(tpm_file(data.path())).unwrap();
    // swtpm rewrites its state, but the EK (and so the identity) is the same: compare the
    // certificate-bearing prefix size rather than bytes; the file must still be readable.
    assert!(tpm_after.len() >= tpm_before.len() / 2);
    check_encrypted_tpm(data.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_tpm_state_fails_the_start_and_rolls_back() {
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::new(data.path()).await.unwrap();
    start_and_stop(&engine, persistent_plan(data.path()))
        .await
        .unwrap();
    let good = std::fs::read(tpm_file(data.path())).unwrap();

    // Damage the header: swtpm refuses it, the start fails and names the rollback.
    let mut bad = good.clone();
    bad[8] ^= 0xff;
    std::fs::write(tpm_file(data.path()), &bad).unwrap();
    let error = match engine.start(persistent_plan(data.path())).await {
        Err(e) => e,
        Ok(_) => panic!("a corrupt TPM state must not start"),
    };
    let message = error.to_string();
    assert!(
        matches!(error, EngineError::State(StateFault::TpmUnusable { .. })),
        "{message}"
    );
    assert!(
        message.contains("ferrovirt state rollback vm1 --generation"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(tpm_file(data.path())).unwrap(),
        bad,
        "left as it was"
    );

    // Roll back to the last good generation and start again.
    let plan = persistent_plan(data.path());
    let generations = engine.generations(&plan).unwrap();
    let last = generations.last().unwrap().id;
    engine.rollback(&plan, last).unwrap();
    assert_eq!(std::fs::read(tpm_file(data.path())).unwrap(), good);
    start_and_stop(&engine, persistent_plan(data.path()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_state_is_never_replaced_by_a_fresh_tpm() {
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::new(data.path()).await.unwrap();
    start_and_stop(&engine, persistent_plan(data.path()))
        .await
        .unwrap();
    std::fs::remove_file(tpm_file(data.path())).unwrap();
    let error = match engine.start(persistent_plan(data.path())).await {
        Err(e) => e,
        Ok(_) => panic!("a lost TPM state must not be replaced"),
    };
    assert!(
        matches!(error, EngineError::State(StateFault::Missing { .. })),
        "{error}"
    );
    assert!(!tpm_file(data.path()).exists(), "no fresh TPM was made");

    std::fs::write(vars_file(data.path()), b"short").unwrap();
    let plan = persistent_plan(data.path());
    let last = engine.generations(&plan).unwrap().last().unwrap().id;
    engine.rollback(&plan, last).unwrap();
    assert!(tpm_file(data.path()).is_file());
    assert_eq!(
        std::fs::metadata(vars_file(data.path())).unwrap().len(),
        // The 4M template, sealed at rest (encryption is on by default).
        540_672 + ferrovirt_keys::sealed::OVERHEAD as u64
    );
    start_and_stop(&engine, persistent_plan(data.path()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_run_leaves_a_state_that_starts() {
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::new(data.path()).await.unwrap();
    let running = engine.start(persistent_plan(data.path())).await.unwrap();
    running.handle.kill();
    let end = engine.wait(&running).await.unwrap();
    assert!(
        matches!(
            end.exit.reason,
            ferrovirt_vmm::launcher::ExitReason::Killed { .. }
        ),
        "{:?}",
        end.exit
    );
    // The state swtpm left is still good and starts.
    start_and_stop(&engine, persistent_plan(data.path()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ephemeral_state_dies_with_the_run() {
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::new(data.path()).await.unwrap();
    let plan = plan(
        data.path(),
        TpmPlan::Ephemeral,
        FirmwarePlan::Uefi {
            secure_boot: false,
            persistent: false,
        },
    );
    assert!(!plan.needs_backend_storage());
    let running = engine.start(plan).await.unwrap();
    let runtime = engine.runtime_path(&running.plan.uuid);
    assert!(runtime.join("tpm/tpm2-00.permall").is_file());
    assert!(runtime.join("VARS.fd").is_file());
    engine.stop(&running).await.unwrap();
    assert!(!runtime.exists());
    assert!(!data.path().join("volumes").exists(), "no backend storage");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deep_data_dir_still_stops_cleanly() {
    // A unix socket path holds at most 107 bytes: with a data dir this deep, neither the run's
    // sockets nor the state check's may live under it (runtime dirs fall back to the temp dir).
    let base = tempfile::tempdir().unwrap();
    let data = base
        .path()
        .join("a-data-dir-deep-enough-that-sockets-below-it-would-not-fit");
    let engine = Engine::new(&data).await.unwrap();
    let running = engine.start(persistent_plan(&data)).await.unwrap();
    let runtime = engine.runtime_path(&running.plan.uuid);
    let end = engine.stop(&running).await.unwrap();
    assert!(end.recorded.is_some(), "after-stop generation recorded");
    assert!(!runtime.exists());
    assert!(!runtime.starts_with(&data));
    // Never a predictable name in a shared directory: as root /run/ferrovirt/<hash> (0700, ours).
    let base = runtime.parent().unwrap();
    if rustix::process::geteuid().is_root() {
        assert!(base.starts_with("/run/ferrovirt"), "{}", base.display());
    }
    for dir in [base, base.parent().unwrap()] {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::symlink_metadata(dir).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o700,
            "{}",
            dir.display()
        );
        assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn created_files_and_dirs_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let engine = Engine::new(&data).await.unwrap();
    start_and_stop(&engine, persistent_plan(&data))
        .await
        .unwrap();
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data dir is tightened to 0700");
    // Everything the engine created below the data dir: directories 0700 (libvirt's 0711 for
    // swtpm/<uuid>/ aside), files 0600.
    let mut stack = vec![data.clone()];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                let expected = if path.ends_with(UUID) && path.parent().unwrap().ends_with("swtpm")
                {
                    0o711
                } else {
                    0o700
                };
                assert_eq!(mode(&path), expected, "{}", path.display());
                stack.push(path);
            } else if path.ends_with("tpm2/.lock") {
                // swtpm's own empty lock file (0640), inside the 0700 tpm2/ directory.
                assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
            } else {
                assert_eq!(
                    mode(&path) & 0o077,
                    0,
                    "{} is {:o}",
                    path.display(),
                    mode(&path)
                );
                files += 1;
            }
        }
    }
    assert!(files > 10, "walked {files} files");
}

fn generation_digest(data: &Path, generation: u64, logical: &str) -> String {
    let store = data.join("state-generations/vms").join(UUID);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.join(format!("{generation:010}/manifest.json"))).unwrap(),
    )
    .unwrap();
    manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["logical_name"] == logical)
        .unwrap()["files"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_volume_gets_the_last_generation_back_instead_of_a_fresh_tpm() {
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::new(data.path()).await.unwrap();
    start_and_stop(&engine, persistent_plan(data.path()))
        .await
        .unwrap();
    let last = engine
        .generations(&persistent_plan(data.path()))
        .unwrap()
        .last()
        .unwrap()
        .id;
    let tpm_at_stop = std::fs::read(tpm_file(data.path())).unwrap();
    let vars_at_stop = std::fs::read(vars_file(data.path())).unwrap();

    // The PVC is deleted: its volume goes with it (as the storage controller deletes it); the
    // generations, kept per VM, stay.
    ferrovirt_storage::LocalPathProvisioner::new(data.path().join("volumes"))
        .unwrap()
        .delete_volume("persistent-state-for-vm1-abcde")
        .unwrap();
    assert!(!volume(data.path()).exists());
    assert!(
        data.path()
            .join("state-generations/vms")
            .join(UUID)
            .is_dir()
    );

    // The next start gets a new, empty volume: the last generation is restored into it.
    let running = engine.start(persistent_plan(data.path())).await.unwrap();
    let state = running.state.as_ref().unwrap();
    assert!(state.manufactured.is_none(), "no fresh TPM");
    let restored = state.restored.as_ref().expect("StateRestored outcome");
    assert_eq!(restored.generation, last);
    assert_eq!(restored.restored, ["tpm-state", "vars", "state-key"]);
    assert!(
        restored
            .message(&volume(data.path()))
            .contains(&format!("restored generation {}", last.0))
    );
    // What the VM started with is byte-identical to the last generation: the generation recorded
    // before this start has the digests of the state at the last stop.
    let before_start = state.recorded.expect("checked and recorded before start").0;
    for (logical, bytes) in [("tpm-state", &tpm_at_stop), ("vars", &vars_at_stop)] {
        assert_eq!(
            generation_digest(data.path(), before_start, logical),
            generation_digest(data.path(), last.0, logical),
            "{logical}"
        );
        assert_eq!(
            generation_digest(data.path(), last.0, logical),
            ferrovirt_storage::generations::sha256_file(&{
                let f = data.path().join(format!("{logical}.bin"));
                std::fs::write(&f, bytes).unwrap();
                f
            })
            .unwrap()
            .1
        );
    }
    engine.stop(&running).await.unwrap();
    check_encrypted_tpm(data.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_volume_without_a_good_generation_fails_naming_the_command() {
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::new(data.path()).await.unwrap();
    start_and_stop(&engine, persistent_plan(data.path()))
        .await
        .unwrap();
    // Every generation's copy of the TPM state is damaged, then the volume is lost.
    let store = data.path().join("state-generations/vms").join(UUID);
    for entry in std::fs::read_dir(&store).unwrap() {
        let copy = entry.unwrap().path().join("data/tpm-state");
        if copy.is_file() {
            std::fs::write(&copy, b"damaged").unwrap();
        }
    }
    std::fs::remove_dir_all(volume(data.path())).unwrap();
    let error = match engine.start(persistent_plan(data.path())).await {
        Err(e) => e,
        Ok(_) => panic!("no usable generation must not become a fresh TPM"),
    };
    assert!(
        matches!(
            error,
            EngineError::State(StateFault::NoGoodGeneration { .. })
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("ferrovirt state list vm1"),
        "{error}"
    );
    assert!(!tpm_file(data.path()).exists(), "no fresh TPM was made");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_asks_the_host_whether_the_vm_runs() {
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::new(data.path()).await.unwrap();
    let uuid = VmUuid::parse(UUID).unwrap();
    assert!(!engine.processes_running(&uuid).unwrap().any_running());
    let running = engine.start(persistent_plan(data.path())).await.unwrap();
    let seen = engine.processes_running(&uuid).unwrap();
    assert!(seen.qemu && seen.swtpm, "{seen:?}");
    let plan = persistent_plan(data.path());
    let first = engine.generations(&plan).unwrap()[0].id;
    let error = engine.rollback(&plan, first).unwrap_err();
    assert!(matches!(error, EngineError::StillRunning { .. }), "{error}");
    assert!(
        error.to_string().contains("QEMU and swtpm alive"),
        "{error}"
    );
    engine.stop(&running).await.unwrap();
    assert!(!engine.processes_running(&uuid).unwrap().any_running());
    engine.rollback(&plan, first).unwrap();
}

fn disk(name: &str, path: &Path, read_only: bool) -> ferrovirt_vmm::disks::DiskPlan {
    ferrovirt_vmm::disks::DiskPlan {
        name: name.into(),
        source: ferrovirt_vmm::disks::DiskSource::HostFile {
            path: path.to_path_buf(),
            create_with_capacity: None,
        },
        bus: ferrovirt_vmm::machine::DiskBus::Virtio,
        read_only,
        boot_order: None,
        serial: None,
        media: ferrovirt_vmm::machine::DiskMedia::Disk,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn host_disks_reach_qemu_as_descriptors_opened_beneath_their_root() {
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::new(data.path()).await.unwrap();
    let images = data.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let qcow = images.join("root.qcow2");
    ferrovirt_testkit::run_host_tool(
        "qemu-img",
        [
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            qcow.as_os_str(),
            "16M".as_ref(),
        ],
    );
    std::fs::write(images.join("seed.img"), vec![0u8; 1 << 20]).unwrap();

    let mut vm = plan(data.path(), TpmPlan::None, FirmwarePlan::Bios);
    vm.disks = vec![
        disk("seed", &images.join("seed.img"), true),
        disk("root", &qcow, false),
    ];
    let running = engine.start(vm).await.unwrap();
    let machine = &running.handle.record().machine;
    assert_eq!(machine.disks[0].path, Path::new("/dev/fdset/1"));
    assert_eq!(machine.disks[1].path, Path::new("/dev/fdset/2"));
    let sets: Vec<(u32, i32)> = machine
        .fd_sets
        .iter()
        .map(|e| (e.set, e.child_fd))
        .collect();
    let first = ferrovirt_vmm::disks::FIRST_PASSED_FD;
    assert_eq!(sets, [(1, first), (2, first + 1), (2, first + 2)]);
    // QEMU holds the descriptors we opened (qcow2 detected through the descriptor) and never
    // saw the paths.
    let fdsets = running
        .handle
        .qmp()
        .execute("query-fdsets", None)
        .await
        .unwrap();
    let mut opaque: Vec<String> = fdsets
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|set| set["fds"].as_array().unwrap().clone())
        .map(|fd| fd["opaque"].as_str().unwrap().to_owned())
        .collect();
    opaque.sort();
    assert_eq!(opaque, ["disk-root-ro", "disk-root-rw", "disk-seed-ro"]);
    let blocks = running
        .handle
        .qmp()
        .execute("query-named-block-nodes", None)
        .await
        .unwrap();
    let text = blocks.to_string();
    assert!(text.contains("\"drv\":\"qcow2\""), "{text}");
    assert!(!text.contains("root.qcow2"), "QEMU got a path: {text}");
    engine.stop(&running).await.unwrap();

    // A symlink out of the root is refused before anything starts.
    let outside = data.path().join("outside.img");
    std::fs::write(&outside, vec![0u8; 4096]).unwrap();
    std::os::unix::fs::symlink(&outside, images.join("link.img")).unwrap();
    let mut vm = plan(data.path(), TpmPlan::None, FirmwarePlan::Bios);
    vm.disks = vec![disk("root", &images.join("link.img"), false)];
    let error = match engine.start(vm).await {
        Err(e) => e,
        Ok(_) => panic!("a symlink out of the root must not start"),
    };
    let message = error.to_string();
    assert!(
        message.contains("leads out of its allowed root"),
        "{message}"
    );
    // A path outside every root is refused with the roots named.
    let mut vm = plan(data.path(), TpmPlan::None, FirmwarePlan::Bios);
    vm.disks = vec![disk("root", &outside, false)];
    let message = match engine.start(vm).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a path outside the roots must not start"),
    };
    assert!(
        message.contains(&format!("allowed roots: {}", images.display())),
        "{message}"
    );
}

/// Issue 18: a VM in a crash loop cannot push its last known-good state out. A clean run makes
/// the state it started from known-good; then every failing run (the state changed first, then
/// QEMU killed) records generations, pruned to three, and the known-good one survives all of
/// them; a rollback returns to it, byte for byte, and the VM starts from it.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_vm_keeps_its_known_good_state() {
    use ferrovirt_firmware::EfiVariable;
    use ferrovirt_firmware::vars::EfiGuid;
    use ferrovirt_storage::Generations;

    let data = tempfile::tempdir().unwrap();
    let engine = Engine::new(data.path()).await.unwrap();
    let plan = persistent_plan(data.path());
    let generations = Generations::new(
        ferrovirt_vmm::engine::generations_dir(data.path(), &plan)
            .unwrap()
            .unwrap(),
    );
    // The first run manufactures the TPM: its before-start generation is what it started from.
    let running = engine.start(plan.clone()).await.unwrap();
    let first = running.state.as_ref().unwrap().started_from.unwrap();
    let end = engine.stop(&running).await.unwrap();
    assert_eq!(generations.known_good(), Some(first), "{:?}", end.exit);
    // A second clean run starts from the first run's after-stop generation: that one is good now.
    let running = engine.start(plan.clone()).await.unwrap();
    let good = running.state.as_ref().unwrap().started_from.unwrap();
    assert_eq!(Some(good), end.recorded);
    let last_end = engine.stop(&running).await.unwrap();
    assert_eq!(generations.known_good(), Some(good));
    let good_manifest = generations.verify(good).unwrap();

    // What the crash loop must push out: every generation but the known-good one. (A stop
    // that changed nothing records the same content, so the last stop's generation may be
    // the known-good one itself.)
    let before_loop = generations
        .list()
        .unwrap()
        .iter()
        .map(|g| g.id.0)
        .max()
        .unwrap();
    let vendor = EfiGuid::new(
        0x6e5f_7a1b,
        0x2c3d,
        0x4e5f,
        [0x80, 0x91, 0xa2, 0xb3, 0xc4, 0xd5, 0xe6, 0xf7],
    );
    for i in 0u8..6 {
        ferrovirt_vmm::efi_vars::change(data.path(), &plan, "crash loop", |store| {
            store.set(EfiVariable {
                name: "CrashLoop".into(),
                vendor,
                attributes: 0x7,
                data: vec![i; 16],
            })?;
            Ok(Vec::new())
        })
        .unwrap();
        let running = engine.start(plan.clone()).await.unwrap();
        running.handle.kill();
        let end = engine.wait(&running).await.unwrap();
        assert!(end.recorded.is_some());
    }
    let ids: Vec<u64> = generations.list().unwrap().iter().map(|g| g.id.0).collect();
    assert!(ids.contains(&good.0), "known-good {good} pruned: {ids:?}");
    assert!(ids.len() <= 5, "pruned to 3 + known-good: {ids:?}");
    assert!(
        ids.iter().all(|id| *id == good.0 || *id > before_loop),
        "the crash loop pushed the other generations out: {ids:?} (known-good {good}, last before the loop {before_loop})"
    );
    assert!(
        last_end.recorded == Some(good) || !ids.contains(&last_end.recorded.unwrap().0),
        "{ids:?}"
    );
    assert_eq!(
        generations.known_good(),
        Some(good),
        "failing runs mark nothing"
    );

    // `ferrovirt state rollback` (the engine's rollback) returns to it, byte for byte.
    engine.rollback(&plan, good).unwrap();
    for (logical, path) in [
        ("tpm-state", tpm_file(data.path())),
        ("vars", vars_file(data.path())),
    ] {
        let recorded = &good_manifest.entry(logical).unwrap().files[0];
        let (_, sha) = ferrovirt_storage::generations::sha256_file(&path).unwrap();
        assert_eq!(sha, recorded.sha256, "{logical} after the rollback");
    }
    start_and_stop(&engine, plan).await.unwrap();
}

/// The VARS file is checked after a stop as the TPM state is: a VARS file damaged during the run
/// fails the stop's check (naming the rollback) and is not recorded as the after-stop state.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_vars_file_fails_the_check_after_the_stop() {
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::new(data.path()).await.unwrap();
    let plan = persistent_plan(data.path());
    let running = engine.start(plan.clone()).await.unwrap();
    let before: Vec<u64> = engine
        .generations(&plan)
        .unwrap()
        .iter()
        .map(|g| g.id.0)
        .collect();
    // With encryption at rest (the default) the run's VARS are its plain runtime copy, sealed
    // into the volume at the stop: damage that copy, as a failing write of QEMU's would.
    let plain_vars = engine.runtime_path(&plan.uuid).join("VARS.fd");
    let damaged = if plain_vars.exists() {
        plain_vars
    } else {
        vars_file(data.path())
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(damaged)
        .unwrap()
        .set_len(4096)
        .unwrap();
    running.handle.kill();
    let error = engine.wait(&running).await.unwrap_err();
    assert!(
        matches!(error, EngineError::State(StateFault::VarsUnusable { .. })),
        "{error}"
    );
    assert!(
        error.to_string().contains("ferrovirt state rollback"),
        "{error}"
    );
    let after: Vec<u64> = engine
        .generations(&plan)
        .unwrap()
        .iter()
        .map(|g| g.id.0)
        .collect();
    assert_eq!(before, after, "a damaged state is not recorded");
    assert!(!engine.runtime_path(&plan.uuid).exists());
}

/// swtpm reads the TPM state with the VM's data key (encryption at rest is on by default).
fn check_encrypted_tpm(data: &Path) {
    let tpm = tpm_file(data);
    let volume = ferrovirt_storage::StateVolume::open(volume(data)).unwrap();
    let keyring = ferrovirt_keys::Keyring::for_data_dir(data).unwrap();
    let key = ferrovirt_vmm::state_keys::unlock("vm1", &volume, &keyring)
        .unwrap()
        .expect("an encrypted state");
    let mut options = ferrovirt_tpm::CheckOptions::default();
    options.state_key = Some(ferrovirt_vmm::state_keys::tpm_key(&key));
    ferrovirt_tpm::check_state_with(tpm.parent().unwrap(), &options).unwrap();
    assert!(ferrovirt_tpm::check_state(tpm.parent().unwrap()).is_err());
}
