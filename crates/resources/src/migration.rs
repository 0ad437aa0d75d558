//! The objects of a live migration between two ferrovirt hosts that more than one side writes:
//! `ferrovirt migrate`, the web UI's "Migrate to host..." and the source's controller all use
//! these, so a receiving VM looks the same whoever asked for the migration.
//!
//! KubeVirt's decentralized live migration is two VirtualMachineInstanceMigrations, one per
//! cluster (`spec.sendTo` on the source, `spec.receive` on the destination), and a VM on the
//! destination with `runStrategy: WaitAsReceiver`; KubeVirt leaves the destination's objects to
//! "an orchestrator". In ferrovirt the source server is that orchestrator when its VMIM carries
//! [`PREPARE_DESTINATION`]: it writes [`receiver_vm`] and [`receiving_migration`] on the
//! destination, with the kubeconfig of the Secret named by [`DESTINATION_KUBECONFIG`].

use serde_json::{Value, json};

/// ferrovirt's annotation on a source VirtualMachineInstanceMigration: the name of a Secret in
/// its namespace whose [`KUBECONFIG_KEY`] holds a kubeconfig for the destination server.
pub const DESTINATION_KUBECONFIG: &str = "migration.ferrovirt.io/destination-kubeconfig-secret";
/// The key of that Secret holding the kubeconfig.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// ferrovirt's annotation on a source VMIM: `"true"` makes the source server create the
/// receiving VM and VMIM on the destination before it sends (what `ferrovirt migrate` and the
/// web UI ask for); without it they must exist there already (KubeVirt's own flow).
pub const PREPARE_DESTINATION: &str = "migration.ferrovirt.io/prepare-destination";
/// ferrovirt's label on a Secret holding a destination's kubeconfig that the web UI offers as a
/// host to migrate to (its value: `"true"`).
pub const DESTINATION_LABEL: &str = "migration.ferrovirt.io/destination";
/// ferrovirt's annotation on the source's VM after a migration the destination confirmed: the
/// URL of the host it runs on now. The VM reconciler retires such a VM (deletes it; its state
/// generations are kept for the state retention) once its VMI is gone.
pub const MIGRATED_TO: &str = "migration.ferrovirt.io/migrated-to";
/// KubeVirt's annotation on a receiving VM: the run strategy it takes once the migration has
/// arrived.
pub const RESTORE_RUN_STRATEGY: &str = "kubevirt.io/restore-run-strategy";
/// KubeVirt's run strategy of a VM that waits for a migration.
pub const WAIT_AS_RECEIVER: &str = "WaitAsReceiver";

/// The receiving VM for the destination: the source VM's spec, labels and annotations
/// (without ferrovirt's `migration.ferrovirt.io/` ones about the source's copy), waiting as a receiver with its run strategy kept for the
/// take-over (`Always` for a VM that had none, or `running: true`).
pub fn receiver_vm(source: &Value) -> Value {
    let text = |p: &str| source.pointer(p).and_then(Value::as_str).unwrap_or("");
    let strategy = match (
        source.pointer("/spec/runStrategy").and_then(Value::as_str),
        source.pointer("/spec/running").and_then(Value::as_bool),
    ) {
        (Some(s), _) if s != WAIT_AS_RECEIVER && s != "Halted" => s.to_owned(),
        _ => "Always".to_owned(),
    };
    let mut annotations = source
        .pointer("/metadata/annotations")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    if let Some(map) = annotations.as_object_mut() {
        // What the source's controllers keep about this host's copy.
        map.retain(|key, _| !key.starts_with("migration.ferrovirt.io/"));
    }
    annotations[RESTORE_RUN_STRATEGY] = json!(strategy);
    let mut spec = source.get("spec").cloned().unwrap_or_else(|| json!({}));
    if let Some(spec) = spec.as_object_mut() {
        spec.remove("running");
    }
    spec["runStrategy"] = json!(WAIT_AS_RECEIVER);
    let mut vm = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": text("/metadata/name"), "namespace": text("/metadata/namespace"),
            "annotations": annotations},
        "spec": spec,
    });
    if let Some(labels) = source.pointer("/metadata/labels") {
        vm["metadata"]["labels"] = labels.clone();
    }
    vm
}

/// The name of the destination's VMIM of migration `migration_id`.
pub fn receiving_migration_name(migration_id: &str) -> String {
    format!("{migration_id}-in")
}

/// The destination's VirtualMachineInstanceMigration (`spec.receive`) of migration
/// `migration_id` into the VMI `vmi` of namespace `namespace`.
pub fn receiving_migration(namespace: &str, vmi: &str, migration_id: &str) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": receiving_migration_name(migration_id), "namespace": namespace},
        "spec": {"vmiName": vmi, "receive": {"migrationID": migration_id}}})
}

/// The name of the Secret that keeps the kubeconfig for the destination server `server` (an
/// `https://HOST:PORT` URL): `migration-destination-` and the host and port in lower case with
/// every other character a `-` (a DNS-1123 name of at most 253 characters), so that migrating
/// to one host again reuses its Secret, and the web UI lists each host once.
pub fn destination_secret_name(server: &str) -> String {
    let host = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("");
    let mut name = String::from("migration-destination-");
    for c in host.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let mut name: String = name.chars().take(253).collect();
    while name.ends_with('-') {
        name.pop();
    }
    name
}

/// The Secret with the destination's kubeconfig (labelled as a destination the web UI offers).
pub fn destination_secret(namespace: &str, server: &str, kubeconfig: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": destination_secret_name(server), "namespace": namespace,
            "labels": {DESTINATION_LABEL: "true"},
            "annotations": {"migration.ferrovirt.io/server": server}},
        "stringData": {KUBECONFIG_KEY: kubeconfig}})
}

/// The source's VirtualMachineInstanceMigration (`spec.sendTo`) of migration `migration_id`
/// of the VMI `vmi` to the server `connect_url`, whose kubeconfig is in the Secret `secret`;
/// it asks this server to create the destination's objects too ([`PREPARE_DESTINATION`]).
pub fn sending_migration(
    namespace: &str,
    vmi: &str,
    migration_id: &str,
    connect_url: &str,
    secret: &str,
) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": format!("{migration_id}-out"), "namespace": namespace,
            "annotations": {DESTINATION_KUBECONFIG: secret, PREPARE_DESTINATION: "true"}},
        "spec": {"vmiName": vmi,
            "sendTo": {"migrationID": migration_id, "connectURL": connect_url}}})
}

/// Whether a source VMIM asks its server to create the destination's objects.
pub fn prepares_destination(vmim: &Value) -> bool {
    vmim.pointer("/metadata/annotations")
        .and_then(|a| a.get(PREPARE_DESTINATION))
        .and_then(Value::as_str)
        == Some("true")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_receiver_waits_and_keeps_the_run_strategy() {
        let source = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm", "namespace": "ns", "uid": "u", "resourceVersion": "9",
                "labels": {"app": "x"},
                "annotations": {"note": "kept",
                    "migration.ferrovirt.io/migrated-to": "https://a"}},
            "spec": {"running": true, "template": {"spec": {"domain": {}}}},
            "status": {"printableStatus": "Running"}});
        let receiver = receiver_vm(&source);
        assert_eq!(receiver["spec"]["runStrategy"], WAIT_AS_RECEIVER);
        assert!(receiver["spec"].get("running").is_none());
        let annotations = &receiver["metadata"]["annotations"];
        assert_eq!(annotations[RESTORE_RUN_STRATEGY], "Always");
        assert_eq!(annotations["note"], "kept");
        assert!(
            annotations
                .get("migration.ferrovirt.io/migrated-to")
                .is_none()
        );
        assert!(receiver.get("status").is_none());
        assert!(receiver["metadata"].get("uid").is_none());
        assert!(receiver["metadata"].get("resourceVersion").is_none());
        assert_eq!(receiver["metadata"]["labels"]["app"], "x");
        let manual = json!({"metadata": {"name": "vm"}, "spec": {"runStrategy": "Manual"}});
        assert_eq!(
            receiver_vm(&manual)["metadata"]["annotations"][RESTORE_RUN_STRATEGY],
            "Manual"
        );
    }

    #[test]
    fn the_receiving_migration_and_the_preparation_annotation() {
        let vmim = receiving_migration("ns", "vm", "vm-17");
        assert_eq!(vmim["metadata"]["name"], "vm-17-in");
        assert_eq!(vmim["spec"]["receive"]["migrationID"], "vm-17");
        assert_eq!(vmim["spec"]["vmiName"], "vm");
        assert!(prepares_destination(
            &json!({"metadata": {"annotations": {PREPARE_DESTINATION: "true"}}})
        ));
        assert!(!prepares_destination(
            &json!({"metadata": {"annotations": {PREPARE_DESTINATION: "yes"}}})
        ));
        assert!(!prepares_destination(&json!({"metadata": {}})));
        let out = sending_migration("ns", "vm", "vm-17", "https://b:8443", "s");
        assert_eq!(out["metadata"]["name"], "vm-17-out");
        assert!(prepares_destination(&out));
        assert_eq!(out["metadata"]["annotations"][DESTINATION_KUBECONFIG], "s");
        assert_eq!(out["spec"]["sendTo"]["connectURL"], "https://b:8443");
    }

    #[test]
    fn one_secret_name_per_destination_host() {
        assert_eq!(
            destination_secret_name("https://10.0.0.2:8443"),
            "migration-destination-10-0-0-2-8443"
        );
        assert_eq!(
            destination_secret_name("https://Host-B.example:443/prefix/"),
            "migration-destination-host-b-example-443"
        );
        assert_eq!(
            destination_secret_name("https://[fd00::2]:8443"),
            "migration-destination-fd00-2-8443"
        );
        let long = format!("https://{}.example", "a".repeat(400));
        let name = destination_secret_name(&long);
        assert!(name.len() <= 253 && !name.ends_with('-'));
        let secret = destination_secret("ns", "https://b:1", "kubeconfig text");
        assert_eq!(secret["metadata"]["labels"][DESTINATION_LABEL], "true");
        assert_eq!(secret["stringData"][KUBECONFIG_KEY], "kubeconfig text");
    }
}
