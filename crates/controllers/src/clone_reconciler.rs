//! The VirtualMachineClone reconciler (KubeVirt's clone controller), a pure function of (clone,
//! world) returning [`Action`]s. As KubeVirt does, a clone is a snapshot and a restore to a new VM:
//!
//! - source a VM: a snapshot `tmp-snapshot-<clone uid>` of it is created (`SnapshotInProgress`);
//!   source a VirtualMachineSnapshot: that one is used;
//! - once the snapshot is ready: a restore `tmp-restore-<clone uid>` to the target (which must not
//!   exist) carrying the clone's identity policy (`clone.ferrovirt.io/tpm`, `.../efi`) and its
//!   `newMacAddresses`, `newSMBiosSerial` and label/annotation filters as annotations
//!   (`RestoreInProgress`); the restore creates the VM with a new firmware UUID;
//! - once the restore is complete: the temporary restore (and snapshot) are deleted, `Succeeded`.
//!
//! Unlike KubeVirt (`SourceVMWithBackendStorageInvalid`), a VM with a persistent TPM or UEFI
//! variables can be cloned.

use ferrovirt_api::clone::{EFI_POLICY_ANNOTATION, TPM_POLICY_ANNOTATION};
use ferrovirt_resources::{VM_CLONES, VM_RESTORES, VM_SNAPSHOTS};
use serde_json::{Value, json};

use crate::action::Action;
use crate::events::EventType;
use crate::restore_reconciler::{
    ANNOTATION_FILTERS_ANNOTATION, LABEL_FILTERS_ANNOTATION, NEW_MACS_ANNOTATION,
    NEW_SERIAL_ANNOTATION, TEMPLATE_ANNOTATION_FILTERS_ANNOTATION,
    TEMPLATE_LABEL_FILTERS_ANNOTATION,
};

/// What a clone's reconcile reads besides the clone.
#[derive(Debug, Clone, Copy)]
pub struct CloneWorld<'a> {
    /// The snapshot the clone uses (its own temporary one, or its source).
    pub snapshot: Option<&'a Value>,
    /// The clone's temporary restore.
    pub restore: Option<&'a Value>,
    /// The target VirtualMachine exists.
    pub target_exists: bool,
    pub now_unix: i64,
}

fn text<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The temporary snapshot of a clone whose source is a VM (KubeVirt's name).
pub fn tmp_snapshot_name(clone_uid: &str) -> String {
    format!("tmp-snapshot-{clone_uid}")
}

/// The temporary restore of a clone (KubeVirt's name).
pub fn tmp_restore_name(clone_uid: &str) -> String {
    format!("tmp-restore-{clone_uid}")
}

/// The snapshot a clone uses.
pub fn snapshot_name(clone: &Value) -> String {
    if text(clone, "/spec/source/kind") == "VirtualMachineSnapshot" {
        text(clone, "/spec/source/name").to_owned()
    } else {
        tmp_snapshot_name(text(clone, "/metadata/uid"))
    }
}

/// The VM a clone creates (`spec.target.name`, or `clone-<uid prefix>` as KubeVirt generates).
pub fn target_name(clone: &Value) -> String {
    match text(clone, "/spec/target/name") {
        "" => {
            let uid = text(clone, "/metadata/uid");
            format!("clone-{}", uid.get(..8).unwrap_or(uid))
        }
        name => name.to_owned(),
    }
}

fn status(clone: &Value, phase: &str, reason: &str, message: &str, now: &str) -> Action {
    let mut object = clone.clone();
    let mut status = object.get("status").cloned().unwrap_or_else(|| json!({}));
    status["phase"] = json!(phase);
    if status.get("creationTime").is_none() {
        status["creationTime"] = json!(now);
    }
    status["snapshotName"] = json!(snapshot_name(clone));
    status["targetName"] = json!(target_name(clone));
    if matches!(phase, "RestoreInProgress" | "Succeeded") {
        status["restoreName"] = json!(tmp_restore_name(text(clone, "/metadata/uid")));
    }
    let done = matches!(phase, "Succeeded" | "Failed");
    status["conditions"] = json!([
        {"type": "Progressing", "status": if done { "False" } else { "True" },
            "lastTransitionTime": now, "reason": reason, "message": message},
        {"type": "Ready", "status": if phase == "Succeeded" { "True" } else { "False" },
            "lastTransitionTime": now, "reason": reason, "message": message},
    ]);
    object["status"] = status;
    Action::UpdateStatus {
        resource: VM_CLONES,
        object,
    }
}

fn owner(clone: &Value) -> Value {
    json!([{"apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone",
        "name": text(clone, "/metadata/name"), "uid": text(clone, "/metadata/uid"),
        "controller": true, "blockOwnerDeletion": true}])
}

fn fail(clone: &Value, message: &str, now: &str) -> Vec<Action> {
    vec![
        status(clone, "Failed", "Failed", message, now),
        Action::event(clone, EventType::Warning, "CloneFailed", message),
    ]
}

/// The restore that carries the clone's policy and settings to the new VM.
fn restore_object(clone: &Value) -> Value {
    let uid = text(clone, "/metadata/uid");
    let mut annotations = serde_json::Map::new();
    for key in [TPM_POLICY_ANNOTATION, EFI_POLICY_ANNOTATION] {
        if let Some(v) = clone
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
        {
            annotations.insert(key.into(), v.clone());
        }
    }
    let as_json = |pointer: &str| clone.pointer(pointer).map(Value::to_string);
    for (key, pointer) in [
        (NEW_MACS_ANNOTATION, "/spec/newMacAddresses"),
        (LABEL_FILTERS_ANNOTATION, "/spec/labelFilters"),
        (ANNOTATION_FILTERS_ANNOTATION, "/spec/annotationFilters"),
        (
            TEMPLATE_LABEL_FILTERS_ANNOTATION,
            "/spec/template/labelFilters",
        ),
        (
            TEMPLATE_ANNOTATION_FILTERS_ANNOTATION,
            "/spec/template/annotationFilters",
        ),
    ] {
        if let Some(value) = as_json(pointer) {
            annotations.insert(key.into(), json!(value));
        }
    }
    if let Some(serial) = clone
        .pointer("/spec/newSMBiosSerial")
        .and_then(Value::as_str)
    {
        annotations.insert(NEW_SERIAL_ANNOTATION.into(), json!(serial));
    }
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1",
        "kind": "VirtualMachineRestore",
        "metadata": {"name": tmp_restore_name(uid), "namespace": text(clone, "/metadata/namespace"),
            "annotations": annotations, "ownerReferences": owner(clone)},
        "spec": {
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": target_name(clone)},
            "virtualMachineSnapshotName": snapshot_name(clone),
        },
    })
}

/// Reconciles one VirtualMachineClone.
pub fn reconcile_clone(clone: &Value, world: &CloneWorld<'_>) -> Vec<Action> {
    let now = ferrovirt_store::format_rfc3339(world.now_unix);
    let ns = text(clone, "/metadata/namespace");
    let uid = text(clone, "/metadata/uid");
    let own_snapshot = text(clone, "/spec/source/kind") == "VirtualMachine";
    match text(clone, "/status/phase") {
        "Succeeded" | "Failed" => Vec::new(),
        "" => {
            if world.target_exists {
                return fail(
                    clone,
                    &format!(
                        "VirtualMachine {:?} already exists; a clone creates a new VM: name one that does not exist",
                        target_name(clone)
                    ),
                    &now,
                );
            }
            let mut actions = Vec::new();
            if own_snapshot && world.snapshot.is_none() {
                actions.push(Action::Create {
                    resource: VM_SNAPSHOTS,
                    object: json!({
                        "apiVersion": "snapshot.kubevirt.io/v1beta1",
                        "kind": "VirtualMachineSnapshot",
                        "metadata": {"name": tmp_snapshot_name(uid), "namespace": ns,
                            "ownerReferences": owner(clone)},
                        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine",
                            "name": text(clone, "/spec/source/name")}},
                    }),
                });
            }
            actions.push(status(
                clone,
                "SnapshotInProgress",
                "SnapshotInProgress",
                "taking the source's snapshot",
                &now,
            ));
            actions
        }
        "SnapshotInProgress" => {
            let Some(snapshot) = world.snapshot else {
                return if own_snapshot {
                    Vec::new() // created, not in the cache yet
                } else {
                    fail(
                        clone,
                        &format!(
                            "VirtualMachineSnapshot {:?} does not exist",
                            snapshot_name(clone)
                        ),
                        &now,
                    )
                };
            };
            match text(snapshot, "/status/phase") {
                "Failed" => fail(
                    clone,
                    &format!(
                        "the snapshot failed: {}",
                        text(snapshot, "/status/error/message")
                    ),
                    &now,
                ),
                _ if snapshot.pointer("/status/readyToUse") == Some(&json!(true)) => {
                    let mut actions = Vec::new();
                    if world.restore.is_none() {
                        actions.push(Action::Create {
                            resource: VM_RESTORES,
                            object: restore_object(clone),
                        });
                    }
                    actions.push(status(
                        clone,
                        "RestoreInProgress",
                        "RestoreInProgress",
                        "creating the target VM from the snapshot",
                        &now,
                    ));
                    actions
                }
                _ => Vec::new(),
            }
        }
        "RestoreInProgress" => {
            let Some(restore) = world.restore else {
                return Vec::new();
            };
            if restore.pointer("/status/complete") == Some(&json!(true)) {
                let mut actions = vec![Action::Delete {
                    resource: VM_RESTORES,
                    namespace: Some(ns.to_owned()),
                    name: tmp_restore_name(uid),
                }];
                if own_snapshot {
                    actions.push(Action::Delete {
                        resource: VM_SNAPSHOTS,
                        namespace: Some(ns.to_owned()),
                        name: tmp_snapshot_name(uid),
                    });
                }
                let message = format!(
                    "VirtualMachine {} cloned from {} {}",
                    target_name(clone),
                    text(clone, "/spec/source/kind"),
                    text(clone, "/spec/source/name")
                );
                actions.push(status(clone, "Succeeded", "Succeeded", &message, &now));
                actions.push(Action::event(
                    clone,
                    EventType::Normal,
                    "CloneSucceeded",
                    &message,
                ));
                return actions;
            }
            let failure = restore
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| {
                    c.iter()
                        .find(|c| c["type"] == "Failure" && c["status"] == "True")
                })
                .and_then(|c| c["message"].as_str());
            match failure {
                Some(message) => fail(clone, &format!("the restore failed: {message}"), &now),
                None => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}
