//! End-to-end through the `ferrovirt` CLI as a client of `ferrovirt serve` with the real engine:
//! the test guest (persistent TPM + EFI, runStrategy Manual) is applied, started, watched on its
//! console, powers itself off (VMI Succeeded, VM Stopped), shows the same report through `logs`,
//! and on its second start reads back the TPM secret and EFI variable its first boot wrote.
//! Deleting the VM removes its backend-storage PVC. Two guest boots (~20 s each under TCG).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
#[path = "support/mod.rs"]
mod support;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use server::{Server, manifest};
use support::guest::{GuestReport, image_in_data_dir, plain_image};

/// The demo VM, its disk the guest image placed under the server's allowed root
/// `<data>/images` (a hostDisk elsewhere is refused).
fn vm_manifest(server: &Server, name: &str) -> String {
    let image = image_in_data_dir(&server.data_dir(), &plain_image());
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/demo-vm.yaml"
    ))
    .unwrap();
    example
        .replace("name: demo", &format!("name: {name}"))
        .replace("guest: 256Mi", "guest: 384Mi")
        .replace("GUEST_IMAGE", &image.display().to_string())
}

fn object(server: &Server, kind: &str, name: &str) -> Option<Value> {
    let out = server.cli(&["get", kind, name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn vm_status(server: &Server, name: &str) -> String {
    object(server, "vm", name)
        .and_then(|vm| vm["status"]["printableStatus"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn vmi_phase(server: &Server, name: &str) -> String {
    object(server, "vmi", name)
        .and_then(|vmi| vmi["status"]["phase"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Waits until the guest has powered off: VMI Succeeded and VM Stopped.
fn wait_powered_off(server: &Server, name: &str) {
    server.wait_for(
        "the guest to power off (VMI Succeeded, VM Stopped)",
        Duration::from_secs(180),
        || {
            (vmi_phase(server, name) == "Succeeded" && vm_status(server, name) == "Stopped")
                .then_some(())
        },
    );
}

fn assert_clean(report: &GuestReport, output: &str) {
    assert!(report.done, "incomplete guest report:\n{output}");
    assert!(
        report.errors.is_empty(),
        "guest errors: {:?}",
        report.errors
    );
}

#[test]
fn guest_boot_cli_apply_start_console_logs_restart_delete() {
    let server = Server::start(true);
    let name = format!("cli-{}", server.port);
    let path = manifest(&server, "vm.yaml", &vm_manifest(&server, &name));
    let path = path.to_str().unwrap();

    assert_eq!(
        server.cli_ok(&["apply", "-f", path]),
        format!("virtualmachine.kubevirt.io/{name} created\n")
    );
    let table = server.cli_ok(&["get", "vms"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(table.starts_with("NAME "), "{table}");
    assert!(row.contains("Stopped"), "{table}");
    let yaml = server.cli_ok(&["get", "vm", &name, "-o", "yaml"]);
    assert!(
        yaml.contains("runStrategy: Manual") && yaml.contains("persistent: true"),
        "{yaml}"
    );

    // The console waits for the instance, then shows the guest until it powers off.
    let mut console = server
        .cli_cmd(&["console", &name, "--timeout", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        server.cli_ok(&["start", &name]),
        format!("VM {name} was scheduled to start\n")
    );
    let mut console_out = String::new();
    console
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut console_out)
        .unwrap();
    let status = console.wait().unwrap();
    let mut console_err = String::new();
    console
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut console_err)
        .unwrap();
    eprintln!(
        "first boot: start -> console closed in {:?}",
        started.elapsed()
    );
    assert!(
        status.success(),
        "console failed: {console_err}\n{}",
        server.log()
    );
    assert!(
        console_err.contains(&format!("Successfully connected to {name} console")),
        "{console_err}"
    );
    let first = GuestReport::parse_last_boot(&console_out);
    assert_clean(&first, &console_out);
    assert_eq!(first.get("tpm"), Some("present"));
    assert_eq!(first.get("tpm-secret"), Some("absent"));
    let secret = first.get("tpm-secret-written").unwrap().to_owned();
    let efivar = first.get("efivar-written").unwrap().to_owned();

    // The guest powered itself off: the controller records it as a finished run.
    wait_powered_off(&server, &name);
    let describe = server.cli_ok(&["describe", "vm", &name]);
    assert!(
        describe.contains("TPM:            persistent"),
        "{describe}"
    );
    assert!(
        describe.contains("Firmware:       EFI (persistent VARS"),
        "{describe}"
    );
    assert!(
        describe.contains(&format!("PVC persistent-state-for-{name}"))
            && describe.contains("Bound"),
        "{describe}"
    );

    // logs: the same report from the serial log.
    let logs = server.cli_ok(&["logs", &name]);
    let from_log = GuestReport::parse_last_boot(&logs);
    assert_eq!(from_log.get("tpm-secret-written"), Some(secret.as_str()));
    assert_eq!(GuestReport::count_boots(&logs), 1);
    let tail = server.cli_ok(&["logs", &name, "--tail", "1"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");

    // Second boot: the TPM secret and the EFI variable of the first boot are still there.
    server.cli_ok(&["start", &name]);
    server.wait_for("the second run", Duration::from_secs(60), || {
        matches!(vmi_phase(&server, &name).as_str(), "Running").then_some(())
    });
    let followed = server.cli_ok(&["logs", &name, "-f"]);
    wait_powered_off(&server, &name);
    // `logs` shows the current or last run; `--all-runs` every run of the VM.
    assert_eq!(GuestReport::count_boots(&followed), 1, "{followed}");
    let all = server.cli_ok(&["logs", &name, "--all-runs"]);
    assert_eq!(GuestReport::count_boots(&all), 2, "{all}");
    let second = GuestReport::parse_last_boot(&followed);
    assert_clean(&second, &followed);
    assert_eq!(second.get("tpm-secret"), Some(secret.as_str()));
    assert_eq!(second.get("efivar"), Some(efivar.as_str()));

    // Delete: the backend-storage PVC and its volume go with the VM.
    let pvc_prefix = format!("persistent-state-for-{name}");
    assert!(server.cli_ok(&["get", "pvc"]).contains(&pvc_prefix));
    assert_eq!(
        server.cli_ok(&["delete", "vm", &name]),
        format!("virtualmachine.kubevirt.io \"{name}\" deleted\n")
    );
    server.wait_for("the PVC to be deleted", Duration::from_secs(30), || {
        let out = server.cli(&["get", "pvc"]);
        (!String::from_utf8_lossy(&out.stdout).contains(&pvc_prefix)).then_some(())
    });
    let volumes = std::fs::read_dir(server.data_dir().join("volumes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(volumes, 0, "a volume is left behind");
    assert!(!server.log().contains("panicked"));
}
