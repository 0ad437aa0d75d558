//! The persistent TPM/EFI state of a VM outlives its backend-storage PVC under `ferrovirt serve`
//! (real engine, the test guest; two boots of ~20 s under TCG): boot 1 writes a TPM secret and an
//! EFI variable; the PVC is deleted while the VM stays; the next start gets a new PVC, restores
//! the last state generation (Event `StateRestored`) and the guest reads back the same secret and
//! variable. While it runs, a rollback is refused with 409 even after the VMI's status was patched
//! to look finished (the guard asks the host). After the VM is deleted its generations are listed
//! by `ferrovirt state list --deleted` through the server and removed by `ferrovirt state purge`.
//! The state is encrypted at rest (the default): after boot 1 a bare swtpm refuses the TPM state
//! and the VARS file shows no variable name; `ferrovirt state rekey --new-kek --rotate-dek`
//! (through the server) and the removal of the old KEK leave boot 2 reading the same secret.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

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

fn backend_pvc(server: &Server, name: &str) -> Option<String> {
    let out = server.kubectl_ok(&[
        "get",
        "pvc",
        "-l",
        &format!("persistent-state-for={name}"),
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .and_then(|items| items.first())
        .and_then(|pvc| pvc["metadata"]["name"].as_str().map(str::to_owned))
}

fn events(server: &Server, name: &str) -> Vec<(String, String)> {
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
fn guest_boot_state_survives_pvc_deletion_and_deleted_vm_state_is_listed_and_purged() {
    let server = Server::start(true);
    let name = format!("keep-{}", server.port);
    let path = manifest(&server, "vm.yaml", &vm_manifest(&server, &name));
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    let vm = object(&server, "vm", &name).unwrap();
    let uuid = vm["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();

    // Boot 1 writes the TPM secret and the EFI variable.
    server.cli_ok(&["start", &name]);
    wait_powered_off(&server, &name);
    let first_log = server.cli_ok(&["logs", &name]);
    let first = GuestReport::parse_last_boot(&first_log);
    assert!(first.done && first.errors.is_empty(), "{first_log}");
    let secret = first.get("tpm-secret-written").unwrap().to_owned();
    let efivar = first.get("efivar-written").unwrap().to_owned();
    let first_pvc = backend_pvc(&server, &name).expect("a backend-storage PVC");

    // Encryption at rest (on by default): a bare swtpm refuses the TPM state, the VARS shows no
    // variable name, not even the one the guest wrote.
    let volume = volume_of(&server, &uuid);
    let tpm_dir = volume.join(format!("swtpm/{uuid}/tpm2"));
    let refusal = bare_swtpm_refuses(&tpm_dir);
    eprintln!("a bare swtpm on a copy of the state: {refusal}");
    let vars = std::fs::read(volume.join(format!("nvram/{name}_VARS.fd"))).unwrap();
    for variable in ["FerroTest", "BootOrder", "Boot0000"] {
        let utf16: Vec<u8> = variable.encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert!(
            !vars.windows(utf16.len()).any(|w| w == utf16.as_slice()),
            "{variable} is readable in the VARS at rest"
        );
    }
    // Rekey through the server: a new KEK and a new data key; the old KEK is then removed, so
    // the next boot can only read the state through the new keys.
    let rekeyed = server.cli_ok(&["state", "rekey", &name, "--new-kek", "--rotate-dek"]);
    eprintln!("{rekeyed}");
    assert!(rekeyed.contains("local-1 -> local-2"), "{rekeyed}");
    std::fs::remove_file(server.data_dir().join("state-keys/kek-1.key")).unwrap();

    // The PVC is deleted; the VM stays.
    server.kubectl_ok(&["delete", "pvc", &first_pvc, "--timeout=60s"]);
    server.wait_for("the PVC to go", Duration::from_secs(60), || {
        backend_pvc(&server, &name).is_none().then_some(())
    });
    assert!(object(&server, "vm", &name).is_some());

    // Boot 2: a new PVC, the last generation restored into it.
    server.cli_ok(&["start", &name]);
    server.wait_for("the second run", Duration::from_secs(120), || {
        (vmi_phase(&server, &name) == "Running").then_some(())
    });
    let second_pvc = backend_pvc(&server, &name).expect("a new backend-storage PVC");
    // The status says finished, the host says QEMU runs: the rollback is refused (409).
    server.kubectl_ok(&[
        "patch",
        "vmi",
        &name,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Succeeded"}}"#,
    ]);
    let refused = server.cli(&["state", "rollback", &name, "--generation", "1"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("Conflict") && stderr.contains("running"),
        "a 409 naming the running VM: {stderr}"
    );
    // The patched phase hides the run from the status: wait for the guest's report, then for
    // the controller's record of the run's end (its reason).
    let second_log = server.wait_for("the second boot's report", Duration::from_secs(240), || {
        let log = server.cli_ok(&["logs", &name]);
        GuestReport::parse_last_boot(&log).done.then_some(log)
    });
    server.wait_for("the run's end", Duration::from_secs(120), || {
        object(&server, "vmi", &name)
            .is_some_and(|vmi| vmi["status"]["reason"] == "Stopped")
            .then_some(())
    });
    let restored: Vec<_> = events(&server, &name)
        .into_iter()
        .filter(|(reason, _)| reason == "StateRestored")
        .collect();
    assert_eq!(restored.len(), 1, "{:?}", events(&server, &name));
    assert!(
        restored[0].1.contains("restored generation"),
        "{restored:?}"
    );
    let second = GuestReport::parse_last_boot(&second_log);
    assert!(second.done && second.errors.is_empty(), "{second_log}");
    assert_eq!(second.get("tpm-secret"), Some(secret.as_str()));
    assert_eq!(second.get("efivar"), Some(efivar.as_str()));
    eprintln!("PVC {first_pvc} deleted, {second_pvc} restored from the VM's generations");

    // The VM is deleted: its generations are kept, listed through the server, purged on demand.
    server.kubectl_ok(&["delete", "vm", &name, "--timeout=60s"]);
    let listed = server.wait_for(
        "the deleted VM's state to be listed",
        Duration::from_secs(30),
        || {
            let out = server.cli_ok(&["state", "list", "--deleted"]);
            out.contains(&uuid).then_some(out)
        },
    );
    let row = listed.lines().find(|l| l.contains(&uuid)).unwrap();
    assert!(row.contains(&name) && row.contains("default"), "{listed}");
    let store = server
        .data_dir()
        .join(format!("state-generations/vms/{uuid}"));
    assert!(store.is_dir());
    let purged = server.cli_ok(&["state", "purge", "--uuid", &uuid]);
    assert!(purged.contains(&name), "{purged}");
    assert!(!store.exists());
    assert!(
        !server
            .cli_ok(&["state", "list", "--deleted"])
            .contains(&uuid)
    );
    // Purging it again is a 404 naming the command that lists what is kept.
    let again = server.cli(&["state", "purge", "--uuid", &uuid]);
    assert!(!again.status.success());
    assert!(!server.log().contains("panicked"));
}

/// The backend-storage volume holding the TPM state of `uuid`.
fn volume_of(server: &Server, uuid: &str) -> std::path::PathBuf {
    std::fs::read_dir(server.data_dir().join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|v| v.join("swtpm").join(uuid).is_dir())
        .expect("the VM's volume")
}

/// Runs a bare swtpm (no key) on a private copy of the TPM state: it must refuse it. Returns
/// what it said.
fn bare_swtpm_refuses(tpm_dir: &std::path::Path) -> String {
    let said = match support::bare_swtpm::takes_state(&tpm_dir.join("tpm2-00.permall")) {
        Ok(()) => panic!("a bare swtpm accepted the encrypted TPM state"),
        Err(said) => said,
    };
    assert!(said.contains("Could not initialize libtpms"), "{said}");
    said.lines().next().unwrap_or_default().to_owned()
}
