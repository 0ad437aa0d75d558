//! End-to-end: the test guest (built from Debian packages by guest/build.sh) boots through OVMF
//! from a disk under `ferrovirt run` with real QEMU, swtpm and OVMF, seals a secret in the TPM and
//! writes an EFI variable on its first boot, and reports on the next boot what survived.
//! Each boot costs ~20 s under TCG: the tests here are few and run one at a time (nextest group
//! `guest-boot`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::guest::{GuestReport, plain_image, secure_boot_image};

struct Vm {
    data_dir: tempfile::TempDir,
    manifest: PathBuf,
    name: &'static str,
    image_root: PathBuf,
}

impl Vm {
    fn new(name: &'static str, image: &Path, tpm: &str, efi: &str) -> Vm {
        let data_dir = tempfile::tempdir().unwrap();
        let manifest = data_dir.path().join("vm.yaml");
        let yaml = format!(
            "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: Manual
  template:
    spec:
      terminationGracePeriodSeconds: 5
      domain:
        memory:
          guest: 384Mi
        features:
          smm: {{}}
        firmware:
          bootloader:
            efi: {efi}
        devices:
          tpm: {tpm}
          disks:
            - name: boot
              disk:
                bus: virtio
                readonly: true
      volumes:
        - name: boot
          hostDisk:
            path: {image}
            type: Disk
",
            image = image.display()
        );
        std::fs::write(&manifest, yaml).unwrap();
        Vm {
            data_dir,
            manifest,
            name,
            // The guest image lies outside the data dir: its directory is an allowed root.
            image_root: image.parent().unwrap().to_path_buf(),
        }
    }

    fn data(&self) -> &Path {
        self.data_dir.path()
    }

    /// One boot: `ferrovirt run` until the guest powers off; returns what the guest reported.
    fn boot(&self) -> GuestReport {
        let output = Command::new(env!("CARGO_BIN_EXE_ferrovirt"))
            .args(["run", "--timeout", "150", "-f"])
            .arg(&self.manifest)
            .arg("--data-dir")
            .arg(self.data())
            .arg("--host-disk-root")
            .arg(&self.image_root)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "ferrovirt run failed ({:?}):\n{stderr}\n{stdout}",
            output.status
        );
        assert!(
            stderr.contains("guest powered off"),
            "the guest did not power off by itself:\n{stderr}\n{stdout}"
        );
        let report = GuestReport::parse_last_boot(&stdout);
        assert!(report.done, "incomplete guest report:\n{stdout}");
        assert!(
            report.errors.is_empty(),
            "guest errors: {:?}",
            report.errors
        );
        report
    }

    fn volume(&self) -> PathBuf {
        self.data()
            .join("volumes")
            .join(format!("persistent-state-for-{}", self.name))
    }
}

#[test]
fn guest_boot_persistent_tpm_and_efi_survive_a_restart() {
    let vm = Vm::new(
        "persist",
        &plain_image(),
        "{persistent: true}",
        "{secureBoot: false, persistent: true}",
    );
    let first = vm.boot();
    assert_eq!(first.get("tpm"), Some("present"));
    assert_eq!(first.get("tpm-secret"), Some("absent"));
    assert_eq!(first.get("efivar"), Some("absent"));
    let secret = first.get("tpm-secret-written").unwrap().to_string();
    let efivar = first.get("efivar-written").unwrap().to_string();
    // The EK certificate written by swtpm_setup with the volume's own CA is in the TPM's NV.
    let ek: usize = first.get("ek-cert").unwrap().parse().unwrap();
    assert!(ek > 500, "EK certificate of {ek} bytes");

    let second = vm.boot();
    assert_eq!(second.get("tpm-secret"), Some(secret.as_str()));
    assert_eq!(second.get("efivar"), Some(efivar.as_str()));
    assert_eq!(second.get("tpm-secret-written"), None);
    assert_eq!(second.get("efivar-written"), None);

    // KubeVirt's backend-storage layout, keyed by the VM's stable firmware UUID.
    let volume = vm.volume();
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(vm.data().join("local/default/persist.json")).unwrap(),
    )
    .unwrap();
    let uuid = record["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"]
        .as_str()
        .unwrap();
    assert!(volume.join("meta").is_dir());
    assert!(
        volume
            .join(format!("swtpm/{uuid}/tpm2/tpm2-00.permall"))
            .is_file()
    );
    assert!(volume.join("swtpm-localca/issuercert.pem").is_file());
    // The 4M VARS template, sealed at rest (encryption is on by default: the FVSEALD1 header,
    // the data key's id and nonce, and the GCM tag add 44 bytes); no variable name readable.
    let vars = std::fs::read(volume.join("nvram/persist_VARS.fd")).unwrap();
    assert_eq!(vars.len(), 540_672 + 44);
    assert!(vars.starts_with(b"FVSEALD1"));
    let name: Vec<u8> = "FerroTest"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    assert!(!vars.windows(name.len()).any(|w| w == name.as_slice()));
    assert!(volume.join("meta/ferrovirt/state-key.json").is_file());
}

#[test]
fn guest_boot_ephemeral_tpm_and_efi_are_gone_after_a_restart() {
    let vm = Vm::new("ephemeral", &plain_image(), "{}", "{secureBoot: false}");
    let first = vm.boot();
    assert_eq!(first.get("tpm"), Some("present"));
    assert!(first.get("tpm-secret-written").is_some());
    assert!(first.get("efivar-written").is_some());
    let second = vm.boot();
    assert_eq!(second.get("tpm-secret"), Some("absent"));
    assert_eq!(second.get("efivar"), Some("absent"));
    assert!(
        !vm.data()
            .join("volumes/persistent-state-for-ephemeral")
            .exists()
    );
}

#[test]
fn guest_boot_secure_boot_is_on_and_its_vars_persist() {
    let vm = Vm::new(
        "secure",
        &secure_boot_image(),
        "{persistent: true}",
        "{secureBoot: true, persistent: true}",
    );
    let first = vm.boot();
    assert_eq!(first.get("secureboot"), Some("1"));
    let efivar = first.get("efivar-written").unwrap().to_string();
    let secret = first.get("tpm-secret-written").unwrap().to_string();
    let second = vm.boot();
    assert_eq!(second.get("secureboot"), Some("1"));
    assert_eq!(second.get("efivar"), Some(efivar.as_str()));
    assert_eq!(second.get("tpm-secret"), Some(secret.as_str()));
}
