//! The objects of KubeVirt's decentralized live migration between two test hosts, as the
//! migration tests write them with kubectl: the receiving and the sending
//! VirtualMachineInstanceMigration, and the Secret on the source holding the destination's
//! kubeconfig (`migration.ferrovirt.io/destination-kubeconfig-secret`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

/// The Secret (on the source host) that [`send_vmim`] names.
pub const DESTINATION_SECRET: &str = "dest-kubeconfig";

/// A receiving VMIM (destination host) for the VMI `vmi`.
pub fn receive_vmim(name: &str, vmi: &str, migration_id: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstanceMigration\nmetadata:\n  name: {name}\nspec:\n  vmiName: {vmi}\n  receive: {{migrationID: {migration_id}}}\n"
    )
}

/// A sending VMIM (source host) for the VMI `vmi` to the server at `dest_url`, with the
/// destination's kubeconfig in the Secret [`DESTINATION_SECRET`].
pub fn send_vmim(name: &str, vmi: &str, migration_id: &str, dest_url: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstanceMigration\nmetadata:\n  name: {name}\n  annotations:\n    migration.ferrovirt.io/destination-kubeconfig-secret: {DESTINATION_SECRET}\nspec:\n  vmiName: {vmi}\n  sendTo: {{migrationID: {migration_id}, connectURL: \"{dest_url}\"}}\n"
    )
}

/// The Secret [`DESTINATION_SECRET`] as JSON (`kubectl create secret` sends protobuf, which the
/// server does not take), holding the kubeconfig `kubeconfig` (the destination's admin one).
pub fn destination_secret_json(kubeconfig: &str) -> String {
    serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": DESTINATION_SECRET}, "type": "Opaque",
        "stringData": {"kubeconfig": kubeconfig}})
    .to_string()
}
