//! `ferrovirt migrate NAME --to KUBECONFIG` with nothing prepared on the destination: the source
//! server is the orchestrator KubeVirt's decentralized migration leaves to the user. The CLI
//! writes host b's kubeconfig into host a's Secret for that host (labelled as a destination the
//! web UI offers) and a sending VMIM with `migration.ferrovirt.io/prepare-destination`; host a's
//! server creates the receiving VM (`runStrategy: WaitAsReceiver`, the run strategy kept in
//! `kubevirt.io/restore-run-strategy`) and the receiving VMIM on host b, then migrates.
//!
//! The VM is the reliability tests' firmware-only VM (persistent TPM and Secure Boot VARS, no
//! disk: nothing to boot, so the test costs seconds of TCG, not minutes). Checked: both VMIMs
//! `Succeeded`, the VM runs on host b with its own run strategy (`Manual`), host a's copy is
//! retired (VM and PVC deleted, its state generations kept for the retention), host b's state verifies against its first generation after a stop, and both hosts
//! show the same EK certificates. A migration to a host that has a VM of that name which does
//! not wait fails before anything moves, the VM running on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
#[path = "support/state_check.rs"]
mod state_check;

use std::time::{Duration, Instant};

use serde_json::Value;
use server::netns::TestNetwork;
use server::{Server, manifest, object, text};
use state_check::{check_states, firmware_only_vm_yaml, generation_stores};

const VM: &str = "roamer";

fn vmi_phase(server: &Server) -> String {
    text(&object(server, "vmi", VM), "/status/phase")
}

fn ek(server: &Server) -> Value {
    let out = server.cli_ok(&["tpm", "ek", VM, "-o", "json"]);
    serde_json::from_str(&out).unwrap()
}

fn migrate(source: &Server, dest: &Server) -> std::process::Output {
    let kubeconfig = dest.kubeconfig();
    source.cli(&[
        "migrate",
        VM,
        "--to",
        kubeconfig.to_str().unwrap(),
        "--timeout",
        "5m",
    ])
}

#[test]
fn migrate_creates_the_receiver_on_the_destination_and_moves_the_vm() {
    let network = TestNetwork::create(2);
    let a = Server::start_in(&network.hosts[0], true, &[]);
    let b = Server::start_in(&network.hosts[1], true, &[]);

    // The VM runs on host a.
    let vm = manifest(&a, "vm.yaml", &firmware_only_vm_yaml(VM));
    a.kubectl_ok(&["apply", "-f", vm.to_str().unwrap()]);
    a.cli_ok(&["start", VM]);
    a.wait_for("the VM to run on host a", Duration::from_secs(120), || {
        (vmi_phase(&a) == "Running").then_some(())
    });
    // Its EK certificates (the VM is running: `tpm ek` reads the volume's copies).
    let ek_a = ek(&a);

    // A host b with a VM of that name which does not wait for a migration: refused before
    // anything moves (the CLI's own check), and by the source server when asked directly.
    let blocker = manifest(&b, "blocker.yaml", &firmware_only_vm_yaml(VM));
    b.kubectl_ok(&["apply", "-f", blocker.to_str().unwrap()]);
    let out = migrate(&a, &b);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("has a VirtualMachine default/roamer already"),
        "{stderr}"
    );
    let secret_name = ferrovirt_resources::migration::destination_secret_name(&b.url());
    let refused_id = "refused-1";
    let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": secret_name},
        "stringData": {"kubeconfig": std::fs::read_to_string(b.kubeconfig()).unwrap()}});
    let secret = manifest(&a, "secret.json", &secret.to_string());
    a.kubectl_ok(&["apply", "-f", secret.to_str().unwrap()]);
    let refused = ferrovirt_resources::migration::sending_migration(
        "default",
        VM,
        refused_id,
        &b.url(),
        &secret_name,
    );
    let refused = manifest(&a, "refused.json", &refused.to_string());
    a.kubectl_ok(&["apply", "-f", refused.to_str().unwrap()]);
    let failed = a.wait_for(
        "the refused migration to fail",
        Duration::from_secs(120),
        || {
            let vmim = object(&a, "vmim", &format!("{refused_id}-out"));
            (text(&vmim, "/status/phase") == "Failed").then_some(vmim)
        },
    );
    let reason = text(
        &object(&a, "vmi", VM),
        "/status/migrationState/failureReason",
    );
    assert!(
        reason.contains("does not wait for a migration") && reason.contains("keeps running"),
        "{reason:?}\n{:?}",
        failed
    );
    assert_eq!(vmi_phase(&a), "Running");
    assert!(
        object(&b, "vmim", &format!("{refused_id}-in")).is_none(),
        "nothing was written on host b"
    );
    b.kubectl_ok(&["delete", "vm", VM]);

    // The migration, with nothing prepared on host b.
    let started = Instant::now();
    let out = migrate(&a, &b);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!(
        "ferrovirt migrate ({:?}):\n{stderr}{stdout}",
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "ferrovirt migrate failed: {stderr}{stdout}\nhost a:\n{}\nhost b:\n{}",
        a.log_digest(),
        b.log_digest()
    );
    assert!(stdout.contains("migrated to"), "{stdout}");

    // Host b: the receiver the source server made, now running with the VM's own strategy.
    b.wait_for("the VM to run on host b", Duration::from_secs(60), || {
        let vm = object(&b, "vm", VM);
        (text(&vm, "/spec/runStrategy") == "Manual" && vmi_phase(&b) == "Running").then_some(())
    });
    let vmims = b.kubectl_ok(&["get", "vmim", "-o", "json"]);
    let vmims: Value = serde_json::from_str(&vmims).unwrap();
    let received = vmims["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m.pointer("/spec/receive/migrationID").is_some())
        .expect("a receiving VMIM on host b");
    assert_eq!(received["status"]["phase"], "Succeeded");
    // Host a: its copy retired (the VM and its backend-storage PVC deleted there once its VMI
    // ended, its state generations kept for the state retention), its Secret for host b kept
    // for the next migration (and the UI's list).
    a.wait_for(
        "the VM to be retired on host a",
        Duration::from_secs(120),
        || {
            let pvcs = a.kubectl_ok(&["get", "pvc", "-o", "name"]);
            (object(&a, "vm", VM).is_none()
                && object(&a, "vmi", VM).is_none()
                && pvcs.trim().is_empty())
            .then_some(())
        },
    );
    let kept = generation_stores(&a.data_dir());
    assert_eq!(kept.len(), 1, "{kept:?}");
    let generations = ferrovirt_storage::Generations::new(&kept[0]);
    let list = generations.list().unwrap();
    assert!(!list.is_empty(), "host a keeps its state generations");
    for info in &list {
        generations.verify(info.id).unwrap();
    }
    let events = a.kubectl_ok(&["get", "events"]);
    assert!(events.contains("Migrated"), "{events}");
    let secret = object(&a, "secret", &secret_name);
    assert_eq!(
        text(
            &secret,
            "/metadata/labels/migration.ferrovirt.io~1destination"
        ),
        "true"
    );
    // A second migration of the VM from host a: there is none any more.
    let again = migrate(&a, &b);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Stopped on host b: its state is the one recorded, and its EK certificates are host a's.
    b.cli_ok(&["stop", VM]);
    b.wait_for("the VM to stop on host b", Duration::from_secs(120), || {
        let vm = object(&b, "vm", VM);
        (text(&vm, "/status/printableStatus") == "Stopped" && object(&b, "vmi", VM).is_none())
            .then_some(())
    });
    let problems = check_states(&b.data_dir());
    assert!(problems.is_empty(), "{problems:?}");
    let ek_b = ek(&b);
    assert_eq!(
        ek_a["certificates"], ek_b["certificates"],
        "the EK certificates moved with the VM"
    );
}
