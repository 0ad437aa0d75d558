//! A guest installed from an ISO, the way Windows is: the test guest's unified kernel image is
//! put on an EFI system partition image, which becomes the El Torito EFI boot image of an ISO
//! built with xorriso. A VM with EFI, an ephemeral TPM and that ISO as its only disk, a `cdrom`
//! (sata, KubeVirt's default), boots from it through `ferrovirt serve` and prints its report.
//! One guest boot (~20 s under TCG).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use server::{Server, manifest};
use support::guest::{GuestReport, plain_image};

/// The byte offset of the guest image's EFI system partition (GPT partition 1 at sector 2048).
const ESP_OFFSET: &str = "@@1M";

fn run(tool: &str, args: &[&std::ffi::OsStr]) {
    let output = ferrovirt_testkit::host_tool(tool)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Builds `dir/ferro-guest.iso`: an ISO 9660 image whose El Torito catalog has one EFI entry,
/// a FAT image holding the guest's UKI as `\EFI\BOOT\BOOTX64.EFI`.
fn build_guest_iso(dir: &Path) -> PathBuf {
    let uki = dir.join("BOOTX64.EFI");
    let image = format!("{}{ESP_OFFSET}", plain_image().display());
    run(
        "mcopy",
        &[
            "-i".as_ref(),
            image.as_ref(),
            "::/EFI/BOOT/BOOTX64.EFI".as_ref(),
            uki.as_os_str(),
        ],
    );
    let uki_kib = std::fs::metadata(&uki).unwrap().len() / 1024;
    let root = dir.join("iso-root");
    std::fs::create_dir_all(&root).unwrap();
    let esp = root.join("efiboot.img");
    let esp_kib = (uki_kib * 5 / 4 + 1024).to_string();
    run(
        "mkfs.vfat",
        &[
            "-C".as_ref(),
            "-n".as_ref(),
            "FERRO-CD".as_ref(),
            esp.as_os_str(),
            esp_kib.as_ref(),
        ],
    );
    for dir in ["::/EFI", "::/EFI/BOOT"] {
        run("mmd", &["-i".as_ref(), esp.as_os_str(), dir.as_ref()]);
    }
    run(
        "mcopy",
        &[
            "-i".as_ref(),
            esp.as_os_str(),
            uki.as_os_str(),
            "::/EFI/BOOT/BOOTX64.EFI".as_ref(),
        ],
    );
    let iso = dir.join("ferro-guest.iso");
    run(
        "xorriso",
        &[
            "-as".as_ref(),
            "mkisofs".as_ref(),
            "-quiet".as_ref(),
            "-V".as_ref(),
            "FERRO_GUEST".as_ref(),
            "-e".as_ref(),
            "efiboot.img".as_ref(),
            "-no-emul-boot".as_ref(),
            "-o".as_ref(),
            iso.as_os_str(),
            root.as_os_str(),
        ],
    );
    iso
}

fn vm_manifest(name: &str, iso: &Path) -> String {
    format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: Manual
  template:
    spec:
      terminationGracePeriodSeconds: 30
      domain:
        memory:
          guest: 384Mi
        firmware:
          bootloader:
            efi:
              secureBoot: false
        devices:
          tpm: {{}}
          autoattachPodInterface: false
          disks:
            - name: installer
              cdrom: {{}}
              bootOrder: 1
      volumes:
        - name: installer
          hostDisk:
            path: {iso}
            type: Disk
"#,
        iso = iso.display()
    )
}

#[test]
fn guest_boot_from_a_cdrom_iso() {
    let server = Server::start(true);
    let images = server.data_dir().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let built = Instant::now();
    let iso = build_guest_iso(&images);
    eprintln!(
        "guest ISO built in {:?} ({} bytes)",
        built.elapsed(),
        std::fs::metadata(&iso).unwrap().len()
    );

    let name = format!("iso-{}", server.port);
    let path = manifest(&server, "vm.yaml", &vm_manifest(&name, &iso));
    server.cli_ok(&["apply", "-f", path.to_str().unwrap()]);
    let started = Instant::now();
    server.cli_ok(&["start", &name]);
    let logs = server.wait_for(
        "the guest booted from the ISO to print its report",
        Duration::from_secs(180),
        || {
            let out = server.cli(&["logs", &name]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            GuestReport::parse_last_boot(&text).done.then_some(text)
        },
    );
    eprintln!(
        "CD-ROM boot: start -> guest report done in {:?}",
        started.elapsed()
    );
    let report = GuestReport::parse_last_boot(&logs);
    assert!(
        report.errors.is_empty(),
        "guest errors: {:?}\n{logs}",
        report.errors
    );
    assert_eq!(report.get("tpm"), Some("present"), "{logs}");
    assert_eq!(report.get("secureboot"), Some("0"), "{logs}");

    // The VMI carries KubeVirt's CD-ROM defaults: sata, read-only, tray closed.
    let vmi = server.cli_ok(&["get", "vmi", &name, "-o", "json"]);
    let vmi: serde_json::Value = serde_json::from_str(&vmi).unwrap();
    assert_eq!(
        vmi["spec"]["domain"]["devices"]["disks"][0],
        serde_json::json!({"name": "installer", "bootOrder": 1,
                           "cdrom": {"bus": "sata", "readonly": true, "tray": "closed"}}),
        "{vmi}"
    );
}
