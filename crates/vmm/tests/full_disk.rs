//! Issue 18, full disks and I/O errors, with the real engine (QEMU, swtpm, OVMF; firmware-only VM
//! with a persistent TPM and persistent Secure Boot VARS, no disk):
//!
//! - ENOSPC for real: the data dir is a small tmpfs mounted by the test (root only; skipped
//!   otherwise unless `FERROVIRT_REQUIRE_MOUNT=1`), filled to the last byte while the VM runs. The
//!   stop's record fails with an error naming the device and the file; the state the run left
//!   and every generation are intact; once space returns the VM starts and stops cleanly again.
//! - EIO and ENOSPC injected at the steps of a generation record, a prune and a rollback (fault
//!   points, build with `--features failpoints`): each fails with the I/O error and leaves the
//!   previous state and generations intact, and the next attempt succeeds.
//!
//! `FERROVIRT_RELIABILITY_REPORT_IO=FILE` receives one line per case for `scripts/reliability.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrovirt_storage::{Generations, VmUuid};
use ferrovirt_vmm::engine::{Engine, VmPlan};
use ferrovirt_vmm::state::{FirmwarePlan, TpmPlan};

const UUID: &str = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

fn plan(data: &Path) -> VmPlan {
    let volume = data.join("volumes/persistent-state-for-io-abcde");
    if !volume.exists() {
        ferrovirt_storage::LocalPathProvisioner::new(data.join("volumes"))
            .unwrap()
            .create_volume("persistent-state-for-io-abcde")
            .unwrap();
    }
    VmPlan {
        namespace: "default".into(),
        name: "io".into(),
        vm_uid: Some("uid-of-io".into()),
        uuid: VmUuid::parse(UUID).unwrap(),
        smbios_serial: None,
        vcpus: 1,
        memory_mib: 128,
        firmware: FirmwarePlan::Uefi {
            secure_boot: true,
            persistent: true,
        },
        smm: false,
        hyperv: None,
        tpm: TpmPlan::Persistent,
        disks: vec![],
        nics: vec![],
        display: Default::default(),
        state_volume: Some(volume),
        legacy_generations_dir: Some(data.join("state-generations/persistent-state-for-io-abcde")),
        grace: Duration::from_millis(300),
    }
}

fn state_files(data: &Path) -> Vec<PathBuf> {
    let volume = data.join("volumes/persistent-state-for-io-abcde");
    vec![
        volume.join(format!("swtpm/{UUID}/tpm2/tpm2-00.permall")),
        volume.join("nvram/io_VARS.fd"),
    ]
}

fn digests(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| ferrovirt_storage::generations::sha256_file(p).unwrap().1)
        .collect()
}

fn generations(data: &Path) -> Generations {
    Generations::new(
        ferrovirt_vmm::engine::generations_dir(data, &plan(data))
            .unwrap()
            .unwrap(),
    )
}

/// Ids of the generations, all of which must verify.
fn verified_ids(data: &Path) -> Vec<u64> {
    let gens = generations(data);
    gens.list()
        .unwrap()
        .iter()
        .map(|g| {
            gens.verify(g.id).unwrap();
            g.id.0
        })
        .collect()
}

fn report(line: &str) {
    eprintln!("io case: {line}");
    if let Ok(path) = std::env::var("FERROVIRT_RELIABILITY_REPORT_IO") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

/// Changes a UEFI variable offline (as `ferrovirt efi vars set` does), so that the next run's
/// state differs from every generation and its stop must write a new one (identical states are
/// not stored again).
fn change_vars(data: &Path, value: u8) {
    let vendor = ferrovirt_firmware::vars::EfiGuid::new(
        0x1f2e_3d4c,
        0x5b6a,
        0x4978,
        [0x86, 0x95, 0xa4, 0xb3, 0xc2, 0xd1, 0xe0, 0xff],
    );
    ferrovirt_vmm::efi_vars::change(data, &plan(data), "full-disk test", |store| {
        store.set(ferrovirt_firmware::EfiVariable {
            name: "FullDiskTest".into(),
            vendor,
            attributes: 0x7,
            data: vec![value; 32],
        })?;
        Ok(Vec::new())
    })
    .unwrap();
}

/// Whether a QEMU whose command line names `runtime` runs.
fn qemu_running(runtime: &Path) -> bool {
    let needle = runtime.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .any(|entry| {
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                return false;
            };
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&raw);
            cmdline.contains("qemu-system")
                && cmdline.contains(&needle)
                && !status
                    .lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn fill(dir: &Path) {
    let filler = dir.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    // The last pages (dd stops at the last whole block).
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=512", "oflag=append", "conv=notrunc"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_data_dir_fails_the_record_clearly_keeps_the_state_and_recovers() {
    let tmp = tempfile::Builder::new()
        .prefix("fvfull")
        .tempdir_in("/tmp")
        .unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    if !ferrovirt_storage::failpoints::compiled_in() {
        let required = std::env::var("FERROVIRT_REQUIRE_FAILPOINTS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "FERROVIRT_REQUIRE_FAILPOINTS=1 but the build has no fault points"
        );
        eprintln!("skipped: no fault points in this build (the disk is filled at one)");
        return;
    }
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=12m,mode=0700", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        let required = std::env::var("FERROVIRT_REQUIRE_MOUNT").is_ok_and(|v| v == "1");
        assert!(!required, "cannot mount a tmpfs (root needed)");
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let _mount = Mount(data.clone());
    let engine = Engine::new(&data).await.unwrap();
    // A good first run.
    let running = engine.start(plan(&data)).await.unwrap();
    engine.stop(&running).await.unwrap();
    let known_good = generations(&data).known_good();
    assert!(known_good.is_some());

    // The state changes, the VM starts, and the disk fills between QEMU's exit and the record
    // (QEMU and swtpm free what they held on the tmpfs when they exit): the stop holds at its
    // first fault point while a thread fills the disk as soon as QEMU is gone.
    change_vars(&data, 1);
    let running = engine.start(plan(&data)).await.unwrap();
    let before_ids = verified_ids(&data);
    let runtime = engine.runtime_path(&plan(&data).uuid);
    ferrovirt_storage::failpoints::configure("engine.finish.before-state", "1*return(hold)")
        .unwrap();
    let filler = data.join("filler");
    let filling = {
        let data = data.clone();
        std::thread::spawn(move || {
            while qemu_running(&runtime) {
                std::thread::sleep(Duration::from_millis(20));
            }
            fill(&data)
        })
    };
    let stopped = engine.stop(&running).await;
    ferrovirt_storage::failpoints::clear("engine.finish.before-state");
    filling.join().unwrap();
    let message = match &stopped {
        Ok(end) => panic!("the stop recorded a generation on a full disk: {end:?}"),
        Err(e) => e.to_string(),
    };
    assert!(
        message.contains("No space left on device") || message.contains("os error 28"),
        "{message}"
    );
    report(&format!("stop+record on a full tmpfs\tENOSPC\t{message}"));
    assert_eq!(verified_ids(&data), before_ids, "generations unchanged");
    assert_eq!(generations(&data).known_good(), known_good);
    for path in state_files(&data) {
        assert!(path.is_file(), "{} kept", path.display());
    }
    assert!(
        !engine.runtime_path(&plan(&data).uuid).exists(),
        "no runtime dir left to block the next start"
    );

    // Space returns: the VM starts (recording the state the failed stop left) and stops.
    std::fs::remove_file(filler).unwrap();
    let running = engine.start(plan(&data)).await.unwrap();
    let end = engine.stop(&running).await.unwrap();
    let after = generations(&data).verify(end.recorded.unwrap()).unwrap();
    let now = digests(&state_files(&data));
    let recorded: Vec<String> = ["tpm-state", "vars"]
        .iter()
        .map(|l| after.entry(l).unwrap().files[0].sha256.clone())
        .collect();
    assert_eq!(now, recorded);
    report("recovery after space returned\tENOSPC\tstart + stop + record ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_io_errors_leave_the_state_and_generations_intact() {
    if !ferrovirt_storage::failpoints::compiled_in() {
        let required = std::env::var("FERROVIRT_REQUIRE_FAILPOINTS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "FERROVIRT_REQUIRE_FAILPOINTS=1 but the build has no fault points"
        );
        eprintln!("skipped: no fault points in this build");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("fveio")
        .tempdir_in("/tmp")
        .unwrap();
    let data = tmp.path().join("data");
    let engine = Engine::new(&data).await.unwrap();
    let running = engine.start(plan(&data)).await.unwrap();
    engine.stop(&running).await.unwrap();

    for point in [
        "generations.record.copy",
        "generations.record.before-rename",
        "state.finish.before-record",
        "generations.prune",
    ] {
        for error in ["eio", "enospc"] {
            change_vars(&data, if error == "eio" { 2 } else { 3 });
            let running = engine.start(plan(&data)).await.unwrap();
            let ids = verified_ids(&data);
            ferrovirt_storage::failpoints::configure(point, &format!("1*return({error})")).unwrap();
            let result = engine.stop(&running).await;
            ferrovirt_storage::failpoints::clear(point);
            let message = result.map(|_| ()).unwrap_err().to_string();
            let expected = if error == "eio" {
                "os error 5"
            } else {
                "os error 28"
            };
            assert!(message.contains(expected), "{point} {error}: {message}");
            report(&format!("stop at {point}\t{error}\t{message}"));
            // A failed prune happens after the record: one more generation is fine; any other
            // failure records nothing.
            let now = verified_ids(&data);
            if point == "generations.prune" {
                assert!(ids.iter().all(|id| now.contains(id)), "{ids:?} -> {now:?}");
            } else {
                assert_eq!(now, ids, "{point} {error}: generations changed");
            }
            assert!(!engine.runtime_path(&plan(&data).uuid).exists());
            // The next run goes through.
            let running = engine.start(plan(&data)).await.unwrap();
            engine.stop(&running).await.unwrap();
        }
    }
    // A rollback that fails while replacing the state keeps the replaced state in its
    // pre-restore generation and the target generation intact.
    let ids = verified_ids(&data);
    let target = ferrovirt_storage::GenerationId(ids[0]);
    ferrovirt_storage::failpoints::configure("generations.restore.before-replace", "1*return(eio)")
        .unwrap();
    let failed = engine
        .rollback(&plan(&data), target)
        .unwrap_err()
        .to_string();
    ferrovirt_storage::failpoints::clear("generations.restore.before-replace");
    assert!(failed.contains("os error 5"), "{failed}");
    report(&format!("rollback before replace\teio\t{failed}"));
    verified_ids(&data);
    engine.rollback(&plan(&data), target).unwrap();
    let running = engine.start(plan(&data)).await.unwrap();
    engine.stop(&running).await.unwrap();
}
