//! Snapshots and restores that carry the TPM and the UEFI variables, under `ferrovirt serve` with
//! the real engine and the counting test guest (one VM's life, five boots of ~20-40 s under TCG):
//!
//! 1. boot 1 writes a TPM secret S1 and an EFI variable E1; an offline VirtualMachineSnapshot
//!    `a` holds them (status, content, SIZE column, sha256 manifest under `<data>/snapshots`);
//! 2. the state is rolled back to the manufactured one (generation 1), so boot 2 writes S2/E2;
//!    while boot 2 runs an online snapshot `b` pauses the vCPUs, reports `Online`/`NoGuestAgent`
//!    and the pause, and the guest finishes its boot undisturbed;
//! 3. a snapshot refused for lack of space (a 2 MiB tmpfs on `<data>/snapshots`) fails with the
//!    reason, leaves nothing, and the VM stays intact;
//! 4. restoring `a` into the (stopped) VM: boot 3 reads S1/E1 again, and the replaced state is a
//!    generation (undoable);
//! 5. restoring `a` to a new VM `<name>-restored`: new firmware UUID and serial, its TPM state
//!    under that UUID, it reads S1/E1; `ferrovirt clone --tpm fresh --efi reset` gives a VM
//!    without the secret or the variable, with a TPM manufactured by its own local CA (its EK
//!    certificate is signed by another CA); `ferrovirt clone` (copy/copy) reads S1/E1; the old
//!    VM's state files are unchanged.
//!
//! 6. a killed server leaves at most a temporary directory, removed at its next start;
//! 7. deleting the VM deletes its snapshots and their data, except a `deletionPolicy: Retain` one.
//!
//! Prints the snapshot times (offline, online) and the pause.
//!
//! A second test (no boot) restores and clones a VM with a `persistentVolumeClaim` disk into new
//! VMs: each gets a new, Bound PVC (`restore-<restore uid>-<volume>`, owned by it) holding the
//! snapshot's bytes, and the source PVC stays as it is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use server::{Server, manifest};
use support::guest::{GuestReport, image_in_data_dir, plain_image};

fn vm_manifest(server: &Server, name: &str) -> String {
    let image = image_in_data_dir(&server.data_dir(), &plain_image());
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/demo-vm.yaml"
    ))
    .unwrap()
    .replace("name: demo", &format!("name: {name}"))
    .replace("guest: 256Mi", "guest: 384Mi")
    .replace("GUEST_IMAGE", &image.display().to_string())
}

fn object(server: &Server, kind: &str, name: &str) -> Option<Value> {
    let out = server.kubectl(&["get", kind, name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn vmi_phase(server: &Server, name: &str) -> String {
    object(server, "vmi", name)
        .and_then(|vmi| vmi["status"]["phase"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn vm_status(server: &Server, name: &str) -> String {
    object(server, "vm", name)
        .and_then(|vm| vm["status"]["printableStatus"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Starts the VM and waits for the guest to report and power off; returns that boot's report.
fn boot(server: &Server, name: &str) -> GuestReport {
    let before = GuestReport::count_boots(&String::from_utf8_lossy(
        &server.cli(&["logs", name, "--all-runs"]).stdout,
    ));
    server.cli_ok(&["start", name]);
    let log = server.wait_for("the guest's report", Duration::from_secs(300), || {
        let out = server.cli(&["logs", name, "--all-runs"]);
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        (GuestReport::count_boots(&log) > before && GuestReport::parse_last_boot(&log).done)
            .then_some(log)
    });
    wait_powered_off(server, name);
    let report = GuestReport::parse_last_boot(&log);
    assert!(report.errors.is_empty(), "{log}");
    report
}

fn wait_powered_off(server: &Server, name: &str) {
    server.wait_for(
        "the guest to power off (VMI Succeeded, VM Stopped)",
        Duration::from_secs(240),
        || {
            (vmi_phase(server, name) == "Succeeded" && vm_status(server, name) == "Stopped")
                .then_some(())
        },
    );
}

fn apply(server: &Server, file: &str, yaml: &str) {
    let path = manifest(server, file, yaml);
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
}

fn snapshot_yaml(name: &str, vm: &str) -> String {
    format!(
        "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineSnapshot\nmetadata:\n  name: {name}\nspec:\n  source:\n    apiGroup: kubevirt.io\n    kind: VirtualMachine\n    name: {vm}\n"
    )
}

fn restore_yaml(name: &str, target: &str, snapshot: &str, annotations: &str) -> String {
    format!(
        "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineRestore\nmetadata:\n  name: {name}\n{annotations}spec:\n  target:\n    apiGroup: kubevirt.io\n    kind: VirtualMachine\n    name: {target}\n  virtualMachineSnapshotName: {snapshot}\n"
    )
}

/// Waits for a snapshot to end (Succeeded or Failed) and returns it.
fn wait_snapshot(server: &Server, name: &str) -> Value {
    server.wait_for("the snapshot to end", Duration::from_secs(120), || {
        object(server, "vmsnapshot", name).filter(|s| {
            matches!(s["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                && (s["status"]["phase"] == "Failed"
                    || s["metadata"]["annotations"]["snapshot.ferrovirt.io/size-bytes"].is_string())
        })
    })
}

fn wait_restore(server: &Server, name: &str) -> Value {
    server.wait_for("the restore to complete", Duration::from_secs(120), || {
        object(server, "vmrestore", name).filter(|r| r["status"]["complete"] == true)
    })
}

fn uuid_of(vm: &Value) -> String {
    vm["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn digest(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned()
}

fn events_of(server: &Server, name: &str) -> Vec<(String, String)> {
    let out = server.kubectl_ok(&["get", "events", "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == name)
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_owned(),
                e["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn snapshots_and_restores_carry_the_tpm_and_the_efi_variables() {
    let server = Server::start(true);
    let name = format!("snap-{}", server.port);
    apply(&server, "vm.yaml", &vm_manifest(&server, &name));
    let vm = object(&server, "vm", &name).unwrap();
    let uuid = uuid_of(&vm);

    // 1. Boot 1 writes S1/E1; offline snapshot `a`.
    let first = boot(&server, &name);
    let s1 = first.get("tpm-secret-written").unwrap().to_owned();
    let e1 = first.get("efivar-written").unwrap().to_owned();
    let took = Instant::now();
    let said = server.cli_ok(&["snapshot", &name, "--name", "a"]);
    let offline_wall = took.elapsed();
    assert!(
        said.contains("VirtualMachineSnapshot a is ready") && said.contains("offline"),
        "{said}"
    );
    let a = wait_snapshot(&server, "a");
    assert_eq!(a["status"]["phase"], "Succeeded", "{a:#}");
    assert_eq!(a["status"]["readyToUse"], true);
    assert!(a["status"]["creationTime"].is_string());
    assert_eq!(a["status"]["sourceUID"], vm["metadata"]["uid"]);
    assert!(
        a["status"]["indications"]
            .as_array()
            .is_none_or(|i| i.is_empty()),
        "{a:#}"
    );
    assert_eq!(
        a["status"]["snapshotVolumes"]["excludedVolumes"],
        serde_json::json!(["boot"])
    );
    assert_eq!(a["metadata"]["ownerReferences"][0]["name"], name.as_str());
    let content = a["status"]["virtualMachineSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_owned();
    let content_object = object(&server, "vmsnapshotcontent", &content).unwrap();
    assert_eq!(content_object["status"]["readyToUse"], true);
    assert_eq!(
        uuid_of(&content_object["spec"]["source"]["virtualMachine"]),
        uuid
    );
    let manifest_path = server
        .data_dir()
        .join("snapshots")
        .join(&content)
        .join("manifest.json");
    let stored: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let logical: Vec<&str> = stored["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["logical_name"].as_str().unwrap())
        .collect();
    // With encryption at rest (the default) the wrapped data key travels with the state.
    assert_eq!(logical, ["tpm-state", "vars", "state-key"], "{stored:#}");
    let table = server.kubectl_ok(&["get", "vmsnapshot", "a"]);
    assert!(
        table.contains("SIZE") && table.contains("Succeeded"),
        "{table}"
    );
    let table = server.cli_ok(&["get", "vmsnapshot"]);
    assert!(
        table.contains("SIZE") && (table.contains("534") || table.contains("535")),
        "{table}"
    );
    let offline_ms = a["metadata"]["annotations"]["snapshot.ferrovirt.io/duration-ms"]
        .as_str()
        .unwrap()
        .to_owned();

    // 2. Back to the manufactured state (generation 1): boot 2 writes S2/E2; online snapshot `b`
    //    while it runs.
    server.cli_ok(&["state", "rollback", &name, "--generation", "1"]);
    server.cli_ok(&["start", &name]);
    server.wait_for("boot 2 to run", Duration::from_secs(120), || {
        (vmi_phase(&server, &name) == "Running").then_some(())
    });
    let took = Instant::now();
    apply(&server, "snap-b.yaml", &snapshot_yaml("b", &name));
    let b = wait_snapshot(&server, "b");
    let online_wall = took.elapsed();
    assert_eq!(b["status"]["phase"], "Succeeded", "{b:#}");
    assert_eq!(
        b["status"]["indications"],
        serde_json::json!(["Online", "NoGuestAgent"])
    );
    let pause_ms: u64 = b["metadata"]["annotations"]["snapshot.ferrovirt.io/pause-ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let online_ms = b["metadata"]["annotations"]["snapshot.ferrovirt.io/duration-ms"]
        .as_str()
        .unwrap()
        .to_owned();
    // The VM kept running through the snapshot and finishes its boot.
    let log = server.wait_for("boot 2's report", Duration::from_secs(300), || {
        let out = server.cli(&["logs", &name, "--all-runs"]);
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        (GuestReport::count_boots(&log) == 2 && GuestReport::parse_last_boot(&log).done)
            .then_some(log)
    });
    wait_powered_off(&server, &name);
    let second = GuestReport::parse_last_boot(&log);
    assert!(second.errors.is_empty(), "{log}");
    let s2 = second
        .get("tpm-secret-written")
        .expect("boot 2 wrote a new secret")
        .to_owned();
    let e2 = second.get("efivar-written").unwrap().to_owned();
    assert_ne!(s1, s2);
    assert_ne!(e1, e2);

    // 3. Not enough space: refused before writing, nothing left, the VM intact.
    let snapshots_dir = server.data_dir().join("snapshots");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&snapshots_dir)
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        apply(&server, "snap-full.yaml", &snapshot_yaml("full", &name));
        let full = wait_snapshot(&server, "full");
        let _ = std::process::Command::new("umount")
            .arg(&snapshots_dir)
            .status();
        assert_eq!(full["status"]["phase"], "Failed", "{full:#}");
        let message = full["status"]["error"]["message"].as_str().unwrap();
        assert!(message.contains("not enough space"), "{message}");
        assert_eq!(full["status"]["readyToUse"], false);
        assert!(
            events_of(&server, "full")
                .iter()
                .any(|(r, _)| r == "VirtualMachineSnapshotFailed")
        );
    } else {
        eprintln!("cannot mount a tmpfs here (not root?): the disk-full case is not checked");
    }

    // 4. Restore `a` into the stopped VM: boot 3 reads S1/E1 again.
    server.cli_ok(&["restore", &name, "--snapshot", "a"]);
    let restores: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "vmrestore", "-o", "json"])).unwrap();
    let ra = restores["items"][0].clone();
    assert_eq!(ra["status"]["complete"], true, "{ra:#}");
    assert!(ra["status"]["restoreTime"].is_string());
    let complete = events_of(&server, ra["metadata"]["name"].as_str().unwrap());
    let (_, message) = complete
        .iter()
        .find(|(r, _)| r == "VirtualMachineRestoreComplete")
        .unwrap_or_else(|| panic!("{complete:?}"));
    assert!(message.contains("ferrovirt state rollback"), "{message}");
    assert_eq!(uuid_of(&object(&server, "vm", &name).unwrap()), uuid);
    let third = boot(&server, &name);
    assert_eq!(
        third.get("tpm-secret"),
        Some(s1.as_str()),
        "the snapshot's secret"
    );
    assert_eq!(
        third.get("efivar"),
        Some(e1.as_str()),
        "the snapshot's variable"
    );

    // 5. Restore `a` to new VMs: a copy, and one with a fresh TPM and reset VARS.
    let old_volume = server.state_volume_dir(&name);
    let old_tpm = old_volume.join(format!("swtpm/{uuid}/tpm2/tpm2-00.permall"));
    let old_vars = old_volume.join(format!("nvram/{name}_VARS.fd"));
    let (old_tpm_digest, old_vars_digest) = (digest(&old_tpm), digest(&old_vars));
    let copy = format!("{name}-restored");
    let fresh = format!("{name}-fresh");
    let cloned = format!("{name}-clone");
    apply(
        &server,
        "restore-new.yaml",
        &restore_yaml("rnew", &copy, "a", ""),
    );
    wait_restore(&server, "rnew");
    let said = server.cli_ok(&["clone", &name, &fresh, "--tpm", "fresh", "--efi", "reset"]);
    assert!(said.contains("TPM fresh, UEFI variables reset"), "{said}");
    server.cli_ok(&["clone", &name, &cloned]);
    let clones = server.cli_ok(&["get", "vmclone"]);
    assert!(clones.matches("Succeeded").count() == 2, "{clones}");
    // The clones' temporary snapshots and restores are gone.
    let kept = if mounted { 3 } else { 2 };
    server.wait_for(
        "the clones' temporary snapshots to go",
        Duration::from_secs(30),
        || {
            let left: Value =
                serde_json::from_str(&server.kubectl_ok(&["get", "vmsnapshot", "-o", "json"]))
                    .unwrap();
            (left["items"].as_array().unwrap().len() == kept).then_some(())
        },
    );
    assert!(
        server
            .kubectl_ok(&["get", "vmrestore", "-o", "name"])
            .lines()
            .count()
            == 2,
        "only the two restores of this test are left"
    );
    let copy_vm = object(&server, "vm", &copy).unwrap();
    let copy_uuid = uuid_of(&copy_vm);
    assert_ne!(copy_uuid, uuid, "a new VM gets a new firmware UUID");
    assert_ne!(
        copy_vm["spec"]["template"]["spec"]["domain"]["firmware"]["serial"],
        vm["spec"]["template"]["spec"]["domain"]["firmware"]["serial"]
    );
    let restored = boot(&server, &copy);
    assert_eq!(restored.get("tpm-secret"), Some(s1.as_str()));
    assert_eq!(restored.get("efivar"), Some(e1.as_str()));
    let copy_volume = server.state_volume_dir(&copy);
    assert!(
        copy_volume
            .join(format!("swtpm/{copy_uuid}/tpm2/tpm2-00.permall"))
            .is_file(),
        "the TPM state lives under the new UUID"
    );
    assert!(!copy_volume.join(format!("swtpm/{uuid}")).exists());
    let fresh_boot = boot(&server, &fresh);
    assert_eq!(fresh_boot.get("tpm-secret"), Some("absent"));
    assert_eq!(fresh_boot.get("efivar"), Some("absent"));
    let fresh_volume = server.state_volume_dir(&fresh);
    let ca = |volume: &Path| {
        std::fs::read(volume.join("swtpm-localca/issuercert.pem")).unwrap_or_default()
    };
    assert_ne!(
        ca(&fresh_volume),
        ca(&old_volume),
        "a fresh TPM's EK certificate is issued by the new volume's own CA"
    );
    let clone_boot = boot(&server, &cloned);
    assert_eq!(
        clone_boot.get("tpm-secret"),
        Some(s1.as_str()),
        "tpm: copy keeps the secret"
    );
    assert_eq!(clone_boot.get("efivar"), Some(e1.as_str()));
    assert_ne!(uuid_of(&object(&server, "vm", &cloned).unwrap()), uuid);
    // The old VM is unchanged.
    assert_eq!(digest(&old_tpm), old_tpm_digest);
    assert_eq!(digest(&old_vars), old_vars_digest);

    // 6. A killed server leaves at most a temporary directory, removed at the next start; the
    //    published snapshots are intact.
    let mut server = server;
    server.kill();
    let leftover = snapshots_dir.join(".vmsnapshot-content-x.tmp-4242-0");
    std::fs::create_dir_all(leftover.join("data")).unwrap();
    std::fs::write(leftover.join("data/vars"), b"half").unwrap();
    server.spawn();
    server.wait_for(
        "the leftover to be removed",
        Duration::from_secs(30),
        || (!leftover.exists()).then_some(()),
    );
    assert!(manifest_path.is_file());
    assert_eq!(
        object(&server, "vmsnapshot", "a").unwrap()["status"]["readyToUse"],
        true
    );

    // 7. Retention: deleting the VM deletes its snapshots and their data, except `Retain`.
    server.cli_ok(&["snapshot", &name, "--name", "kept", "--retain"]);
    let kept = object(&server, "vmsnapshot", "kept").unwrap();
    let kept_content = kept["status"]["virtualMachineSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_owned();
    server.kubectl_ok(&["delete", "vm", &name, "--timeout=60s"]);
    server.wait_for("the VM's snapshots to go", Duration::from_secs(60), || {
        let names = server.kubectl_ok(&["get", "vmsnapshot", "-o", "name"]);
        (names.trim() == "virtualmachinesnapshot.snapshot.kubevirt.io/kept").then_some(())
    });
    server.wait_for("their data to go", Duration::from_secs(30), || {
        (!snapshots_dir.join(&content).exists()).then_some(())
    });
    assert!(
        snapshots_dir
            .join(&kept_content)
            .join("manifest.json")
            .is_file()
    );
    assert!(object(&server, "vmsnapshotcontent", &kept_content).is_some());
    assert!(!server.log().contains("panicked"));

    eprintln!(
        "snapshot offline: {offline_ms} ms in the engine ({} ms wall, API to readyToUse); online: {online_ms} ms in the engine ({} ms wall), vCPUs paused {pause_ms} ms",
        offline_wall.as_millis(),
        online_wall.as_millis()
    );
}

/// A restore into a new VM of a snapshot of a VM with a `persistentVolumeClaim` disk gives the new
/// VM a new PVC (KubeVirt's `restore-<restore uid>-<volume>`, the source's size and class, owned by
/// the new VM, Bound) holding the snapshot's bytes; the source PVC is untouched. No guest boots.
#[test]
fn a_restore_into_a_new_vm_gets_new_pvcs_with_the_snapshots_disks() {
    let server = Server::start(true);
    let name = format!("pvcvm-{}", server.port);
    let claim = format!("data-{}", server.port);
    apply(
        &server,
        "pvc.yaml",
        &format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {claim}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 64Mi\n"
        ),
    );
    let source_pvc = server.wait_for(
        "the source PVC to be Bound",
        Duration::from_secs(60),
        || object(&server, "pvc", &claim).filter(|p| p["status"]["phase"] == "Bound"),
    );
    let source_dir = server
        .data_dir()
        .join("volumes")
        .join(source_pvc["spec"]["volumeName"].as_str().unwrap());
    let bytes: Vec<u8> = (0..1_048_576u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(source_dir.join("disk.img"), &bytes).unwrap();
    let manifest = vm_manifest(&server, &name)
        .replace("runStrategy: Manual", "runStrategy: Halted")
        .replace(
            "      volumes:\n",
            &format!(
                "      volumes:\n        - name: data\n          persistentVolumeClaim:\n            claimName: {claim}\n"
            ),
        )
        .replace(
            "          disks:\n",
            "          disks:\n            - name: data\n              disk:\n                bus: virtio\n",
        );
    apply(&server, "vm.yaml", &manifest);
    apply(&server, "snapshot.yaml", &snapshot_yaml("withpvc", &name));
    let snapshot = wait_snapshot(&server, "withpvc");
    assert_eq!(snapshot["status"]["phase"], "Succeeded", "{snapshot}");
    assert!(
        snapshot["status"]["snapshotVolumes"]["includedVolumes"]
            .as_array()
            .unwrap()
            .contains(&Value::from("data")),
        "{snapshot}"
    );
    // The source disk changes after the snapshot: the new VM gets the snapshot's bytes.
    std::fs::write(source_dir.join("disk.img"), b"changed after the snapshot").unwrap();

    let copy = format!("pvccopy-{}", server.port);
    apply(
        &server,
        "restore.yaml",
        &restore_yaml("tonew", &copy, "withpvc", ""),
    );
    let restore = wait_restore(&server, "tonew");
    let new_claim = format!(
        "restore-{}-data",
        restore["metadata"]["uid"].as_str().unwrap()
    );
    let copy_vm = object(&server, "vm", &copy).unwrap();
    let volumes = copy_vm["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let data = volumes.iter().find(|v| v["name"] == "data").unwrap();
    assert_eq!(
        data["persistentVolumeClaim"]["claimName"],
        new_claim.as_str()
    );
    assert_eq!(
        restore["status"]["restores"][0]["persistentVolumeClaim"],
        new_claim.as_str(),
        "{restore}"
    );
    let pvc = object(&server, "pvc", &new_claim).expect("the new PVC exists");
    assert_eq!(pvc["status"]["phase"], "Bound", "{pvc}");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "64Mi");
    assert_eq!(
        pvc["metadata"]["ownerReferences"][0]["kind"],
        "VirtualMachine"
    );
    assert_eq!(pvc["metadata"]["ownerReferences"][0]["name"], copy.as_str());
    assert_eq!(
        pvc["metadata"]["ownerReferences"][0]["uid"],
        copy_vm["metadata"]["uid"]
    );
    let new_dir = server
        .data_dir()
        .join("volumes")
        .join(pvc["spec"]["volumeName"].as_str().unwrap());
    assert_ne!(new_dir, source_dir);
    assert!(
        std::fs::read(new_dir.join("disk.img")).unwrap() == bytes,
        "the snapshot's bytes"
    );
    assert_eq!(
        std::fs::read(source_dir.join("disk.img")).unwrap(),
        b"changed after the snapshot",
        "the source PVC is untouched"
    );

    // A clone of the VM (a temporary snapshot and restore) gets its own PVC too, with the source
    // disk as it is now.
    let cloned = format!("pvcclone-{}", server.port);
    server.cli_ok(&["clone", &name, &cloned]);
    let clone_vm = object(&server, "vm", &cloned).unwrap();
    let clone_claim = clone_vm["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "data")
        .unwrap()["persistentVolumeClaim"]["claimName"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        clone_claim.starts_with("restore-") && clone_claim.ends_with("-data"),
        "{clone_claim}"
    );
    let pvc = object(&server, "pvc", &clone_claim).expect("the clone's PVC exists");
    assert_eq!(pvc["status"]["phase"], "Bound", "{pvc}");
    assert_eq!(
        pvc["metadata"]["ownerReferences"][0]["uid"],
        clone_vm["metadata"]["uid"]
    );
    let clone_dir = server
        .data_dir()
        .join("volumes")
        .join(pvc["spec"]["volumeName"].as_str().unwrap());
    assert_eq!(
        std::fs::read(clone_dir.join("disk.img")).unwrap(),
        b"changed after the snapshot"
    );
    assert!(!server.log().contains("panicked"));
}
