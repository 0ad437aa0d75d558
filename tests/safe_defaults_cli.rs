//! Safe by default, through the `ferrovirt` binary without booting a guest: `ferrovirt run`
//! refuses a hostDisk outside the allowed roots or reached through a symlink out of one (with the
//! field path and the roots), and the state generations of a deleted VM are listed
//! (`state list --deleted`) and removed only by an explicit purge of a deleted VM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use ferrovirt_storage::{VmIdentity, VmStateStore, VmUuid};

const BIN: &str = env!("CARGO_BIN_EXE_ferrovirt");
const UUID: &str = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

fn manifest(dir: &Path, disk: &Path) -> std::path::PathBuf {
    let path = dir.join("vm.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: hd
spec:
  runStrategy: Manual
  template:
    spec:
      terminationGracePeriodSeconds: 1
      domain:
        memory:
          guest: 64Mi
        devices:
          disks:
            - name: boot
              disk: {{bus: virtio}}
      volumes:
        - name: boot
          hostDisk:
            path: {}
            type: Disk
",
            disk.display()
        ),
    )
    .unwrap();
    path
}

fn run(args: &[&str], manifest: &Path, data: &Path) -> Output {
    Command::new(BIN)
        .args(["run", "--timeout", "2", "--quiet", "-f"])
        .arg(manifest)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn run_refuses_host_disks_outside_the_roots_and_through_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let outside = tmp.path().join("elsewhere/disk.img");
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    std::fs::write(&outside, vec![0u8; 4096]).unwrap();

    let out = run(&[], &manifest(tmp.path(), &outside), &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "The VirtualMachine \"hd\" is invalid: spec.template.spec.volumes[0].hostDisk.path: \
             \"{}\" is not under an allowed host-disk root (allowed roots: {}/images)",
            outside.display(),
            data.display()
        )),
        "{stderr}"
    );

    // Through a symlink in <data>/images that leads out of it: refused, with the field path.
    std::fs::create_dir_all(data.join("images")).unwrap();
    let link = data.join("images/link.img");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let out = run(&[], &manifest(tmp.path(), &link), &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("spec.template.spec.volumes[0].hostDisk.path: ")
            && stderr.contains("leads out of its allowed root"),
        "{stderr}"
    );

    // With its directory as a --host-disk-root, the same file passes admission (the run then
    // starts; --timeout stops it).
    let out = run(
        &[
            "--host-disk-root",
            outside.parent().unwrap().to_str().unwrap(),
        ],
        &manifest(tmp.path(), &outside),
        &data,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("hostDisk.path"), "{stderr}");
    assert!(stderr.contains("started hd"), "{stderr}");
}

#[test]
fn deleted_vms_state_is_listed_and_purged_only_explicitly() {
    let data = tempfile::tempdir().unwrap();
    let store = VmStateStore::new(data.path());
    let uuid = VmUuid::parse(UUID).unwrap();
    store
        .open_for_vm(
            &VmIdentity {
                namespace: "team-a".into(),
                name: "web".into(),
                uid: Some("uid-1".into()),
                uuid: uuid.clone(),
            },
            None,
        )
        .unwrap();
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(data.path())
            .output()
            .unwrap()
    };
    // The VM exists: nothing is listed as deleted, and a purge is refused.
    let listed = cli(&["state", "list", "--deleted"]);
    assert!(listed.status.success());
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(UUID));
    let refused = cli(&["state", "purge", "--uuid", UUID]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("which exists"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Deleted (what the server does when the VM goes): listed with its expiry, kept by
    // --expired until the retention passes, removed by an explicit purge.
    store.mark_deleted(&uuid, 1_700_000_000).unwrap();
    let listed = String::from_utf8_lossy(&cli(&["state", "list", "--deleted"]).stdout).into_owned();
    assert!(listed.contains(UUID), "{listed}");
    assert!(
        listed.contains("team-a") && listed.contains("web"),
        "{listed}"
    );
    assert!(listed.contains("2023-11-14T22:13:20Z"), "{listed}");
    assert!(
        listed.contains("2023-11-21T22:13:20Z"),
        "7 days later: {listed}"
    );
    let kept = cli(&[
        "state",
        "purge",
        "--expired",
        "--state-retention",
        "100000d",
    ]);
    assert!(kept.status.success());
    assert!(store.dir_for(&uuid).exists());
    let purged = cli(&["state", "purge", "--uuid", UUID]);
    assert!(
        purged.status.success(),
        "{}",
        String::from_utf8_lossy(&purged.stderr)
    );
    assert!(String::from_utf8_lossy(&purged.stdout).contains("team-a/web"));
    assert!(!store.dir_for(&uuid).exists());
}

/// KubeVirt's `vm-cirros-sata` example under `ferrovirt run`: its disk-less volumes get
/// KubeVirt's default disks, so the containerDisk is refused with its field path instead of a
/// VM running with no disk.
#[test]
fn run_refuses_the_cirros_sata_example_naming_its_container_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/api/tests/fixtures/kubevirt-examples/vm-cirros-sata.yaml");
    let out = run(&[], &example, &tmp.path().join("data"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("spec.template.spec.volumes[0].containerDisk: container disks are pulled"),
        "{stderr}"
    );
}
