//! The VirtualMachineRestore reconciler (KubeVirt's restore controller), a pure function of
//! (restore, world) returning [`Action`]s:
//!
//! - it waits for the snapshot to be `readyToUse`;
//! - the target is the snapshot's own VM: KubeVirt's rule, the VM must be stopped (run strategy
//!   `Halted`, or `Manual` with nothing running; `Always`/`RerunOnFailure` are refused with
//!   KubeVirt's messages `VirtualMachine "x" is not stopped` / `... run strategy has to be
//!   Halted`), and its QEMU and swtpm gone (waited for); then [`Action::RestoreSnapshot`] (the replaced state
//!   is kept as a generation), then the VM's spec is set back to the snapshot's (its
//!   `firmware.uuid` and run strategy kept), `complete: true`, `restoreTime`, an Event;
//! - the target does not exist: a new VM is created from the snapshot ([`new_vm_from_snapshot`]:
//!   new name, new `firmware.uuid` and SMBIOS serial, new MAC addresses, `Halted` while its state
//!   is put in place, each `persistentVolumeClaim` volume pointing at a new PVC named as KubeVirt
//!   names restore PVCs, [`restore_claim_name`]); those PVCs are created (the source PVC's access
//!   modes, size, storage class and volume mode; owned by the new VM) and waited for until Bound;
//!   then it is restored like the same VM (the snapshot's disk images are copied into the new
//!   PVCs, its TPM state lands in the directory of its own UUID at its first start), then given
//!   the snapshot's run strategy;
//! - another existing VM is refused (ferrovirt, like KubeVirt, does not overwrite a different VM).
//!
//! A clone's restore carries the clone's identity policy and settings as annotations
//! (`clone.ferrovirt.io/tpm`, `.../efi`, [`NEW_MACS_ANNOTATION`], [`NEW_SERIAL_ANNOTATION`],
//! [`LABEL_FILTERS_ANNOTATION`], [`ANNOTATION_FILTERS_ANNOTATION`]).

use std::collections::BTreeMap;
use std::time::Duration;

use ferrovirt_api::clone::{
    EFI_POLICY_ANNOTATION, EfiClonePolicy, TPM_POLICY_ANNOTATION, TpmClonePolicy, filter_keys,
};
use ferrovirt_resources::{VM_RESTORES, VMS};
use ferrovirt_vmm::vm_snapshot::StatePolicy;
use serde_json::{Value, json};

use crate::action::{Action, Key};
use crate::events::EventType;
use crate::jobs::JobOutcome;
use crate::world::{RunPhase, RunView};

/// On a VM created by a restore: the uid of that restore (removed when it completes).
pub const CREATED_BY_ANNOTATION: &str = "restore.ferrovirt.io/created-by";
/// On a clone's restore: `{"interface": "mac"}` (the clone's `newMacAddresses`).
pub const NEW_MACS_ANNOTATION: &str = "clone.ferrovirt.io/new-mac-addresses";
/// On a clone's restore: the clone's `newSMBiosSerial`.
pub const NEW_SERIAL_ANNOTATION: &str = "clone.ferrovirt.io/new-smbios-serial";
/// On a clone's restore: the clone's `labelFilters` (JSON list).
pub const LABEL_FILTERS_ANNOTATION: &str = "clone.ferrovirt.io/label-filters";
/// On a clone's restore: the clone's `annotationFilters` (JSON list).
pub const ANNOTATION_FILTERS_ANNOTATION: &str = "clone.ferrovirt.io/annotation-filters";
/// On a clone's restore: the clone's `template.labelFilters` (JSON list).
pub const TEMPLATE_LABEL_FILTERS_ANNOTATION: &str = "clone.ferrovirt.io/template-label-filters";
/// On a clone's restore: the clone's `template.annotationFilters` (JSON list).
pub const TEMPLATE_ANNOTATION_FILTERS_ANNOTATION: &str =
    "clone.ferrovirt.io/template-annotation-filters";

/// KubeVirt's label on a PVC a restore created: the name of the snapshot's VM.
pub const RESTORE_SOURCE_NAME_LABEL: &str = "restore.kubevirt.io/source-vm-name";
/// KubeVirt's label on a PVC a restore created: the namespace of the snapshot's VM.
pub const RESTORE_SOURCE_NAMESPACE_LABEL: &str = "restore.kubevirt.io/source-vm-namespace";
/// KubeVirt's annotation on a PVC a restore created: the restore's name.
pub const RESTORE_NAME_ANNOTATION: &str = "restore.kubevirt.io/name";

/// KubeVirt's name of the PVC a restore into a new VM creates for the volume `volume`.
pub fn restore_claim_name(restore_uid: &str, volume: &str) -> String {
    format!("restore-{restore_uid}-{volume}")
}

/// `(volume name, claim name)` of a VM's `persistentVolumeClaim` volumes.
pub fn claim_volumes(vm: &Value) -> Vec<(String, String)> {
    vm.pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let claim = v.pointer("/persistentVolumeClaim/claimName")?.as_str()?;
            Some((text(v, "/name").to_owned(), claim.to_owned()))
        })
        .collect()
}

/// What a restore's reconcile reads besides the restore.
#[derive(Debug, Clone, Copy)]
pub struct RestoreWorld<'a> {
    pub snapshot: Option<&'a Value>,
    /// The snapshot's VirtualMachineSnapshotContent (the VM as it was).
    pub content: Option<&'a Value>,
    /// The target VirtualMachine, if it exists.
    pub target: Option<&'a Value>,
    /// The engine's run of the target.
    pub run: Option<&'a RunView>,
    pub job: Option<&'a JobOutcome>,
    /// The PVCs named by the `persistentVolumeClaim` volumes of the snapshot's VM and of the
    /// target (those that exist).
    pub claims: &'a [Value],
    pub now_unix: i64,
}

fn text<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn annotation<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn condition(type_: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": type_, "status": if status { "True" } else { "False" },
        "lastTransitionTime": now, "reason": reason, "message": message})
}

fn with_status(restore: &Value, status: Value) -> Action {
    let mut object = restore.clone();
    object["status"] = status;
    Action::UpdateStatus {
        resource: VM_RESTORES,
        object,
    }
}

/// Sets `Progressing`/`Ready` (and `Failure` when `failure`) with this message, unless the
/// status already says exactly that (no write loop).
fn waiting(restore: &Value, reason: &str, message: &str, failure: bool, now: &str) -> Vec<Action> {
    let already = restore
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["message"] == json!(message)));
    if already {
        return Vec::new();
    }
    let mut conditions = vec![
        condition("Progressing", !failure, reason, message, now),
        condition("Ready", false, reason, message, now),
    ];
    if failure {
        conditions.push(condition("Failure", true, reason, message, now));
    }
    let mut actions = vec![with_status(
        restore,
        json!({"complete": false, "conditions": conditions}),
    )];
    if failure {
        actions.push(Action::event(
            restore,
            EventType::Warning,
            "VirtualMachineRestoreError",
            message,
        ));
    }
    actions
}

/// The TPM/EFI policy of a restore (a clone's annotations; a plain restore copies both).
pub fn state_policy(restore: &Value) -> StatePolicy {
    let tpm = annotation(restore, TPM_POLICY_ANNOTATION)
        .and_then(TpmClonePolicy::parse)
        .unwrap_or_default();
    let efi = annotation(restore, EFI_POLICY_ANNOTATION)
        .and_then(EfiClonePolicy::parse)
        .unwrap_or_default();
    StatePolicy {
        copy_tpm: tpm == TpmClonePolicy::Copy,
        copy_efi: efi == EfiClonePolicy::Copy,
    }
}

/// A locally administered unicast MAC address from random bytes (`02:xx:xx:xx:xx:xx`).
pub fn new_mac_address() -> String {
    let hex: String = ferrovirt_api::defaults::new_uuid()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(10)
        .collect();
    let mut mac = String::from("02");
    for pair in hex.as_bytes().chunks(2) {
        mac.push(':');
        mac.push_str(std::str::from_utf8(pair).unwrap_or("00"));
    }
    mac
}

fn filters(restore: &Value, key: &str) -> Vec<String> {
    annotation(restore, key)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

fn filtered(map: Option<&Value>, filters: &[String]) -> Value {
    let map: BTreeMap<String, String> = map
        .cloned()
        .and_then(|m| serde_json::from_value(m).ok())
        .unwrap_or_default();
    json!(filter_keys(&map, filters))
}

fn find_claim<'a>(claims: &'a [Value], name: &str) -> Option<&'a Value> {
    claims.iter().find(|c| text(c, "/metadata/name") == name)
}

/// The new PVCs of a VM this restore created: creates the missing ones (a copy of the source
/// PVC's access modes, size, storage class and volume mode, owned by the new VM, KubeVirt's
/// restore labels) and waits until all are Bound. `None`: all are bound.
fn new_claims(
    restore: &Value,
    source_vm: &Value,
    target: &Value,
    world: &RestoreWorld<'_>,
    key: Key,
    now: &str,
) -> Option<Vec<Action>> {
    let ns = text(restore, "/metadata/namespace");
    let restore_uid = text(restore, "/metadata/uid");
    let source_claims = claim_volumes(source_vm);
    let mut actions = Vec::new();
    let mut pending = Vec::new();
    for (volume, claim) in claim_volumes(target) {
        if claim != restore_claim_name(restore_uid, &volume) {
            continue;
        }
        match find_claim(world.claims, &claim) {
            Some(pvc) if text(pvc, "/status/phase") == "Bound" => continue,
            Some(_) => pending.push(claim),
            None => {
                let source_claim = source_claims
                    .iter()
                    .find(|(v, _)| *v == volume)
                    .map(|(_, c)| c.as_str())
                    .unwrap_or("");
                let Some(source) = find_claim(world.claims, source_claim) else {
                    return Some(waiting(
                        restore,
                        "Failed",
                        &format!(
                            "PersistentVolumeClaim {source_claim:?} of the snapshot's VM (volume {volume:?}) does not exist: the new PVC {claim:?} copies its size, storage class and access modes; recreate it or restore into the snapshot's VM"
                        ),
                        true,
                        now,
                    ));
                };
                let mut spec = json!({
                    "accessModes": source.pointer("/spec/accessModes"),
                    "resources": {"requests": {"storage": source.pointer("/spec/resources/requests/storage")}},
                });
                for field in ["storageClassName", "volumeMode"] {
                    if let Some(value) = source.pointer(&format!("/spec/{field}")) {
                        spec[field] = value.clone();
                    }
                }
                actions.push(Action::Create {
                    resource: ferrovirt_resources::PVCS,
                    object: json!({
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "metadata": {
                            "name": claim,
                            "namespace": ns,
                            "labels": {
                                RESTORE_SOURCE_NAME_LABEL: text(source_vm, "/metadata/name"),
                                RESTORE_SOURCE_NAMESPACE_LABEL: ns,
                            },
                            "annotations": {RESTORE_NAME_ANNOTATION: text(restore, "/metadata/name")},
                            "ownerReferences": [{"apiVersion": "kubevirt.io/v1",
                                "kind": "VirtualMachine", "name": text(target, "/metadata/name"),
                                "uid": text(target, "/metadata/uid"), "controller": true,
                                "blockOwnerDeletion": true}],
                        },
                        "spec": spec,
                    }),
                });
                pending.push(claim);
            }
        }
    }
    if pending.is_empty() {
        return None;
    }
    actions.extend(waiting(
        restore,
        "Waiting",
        &format!(
            "waiting for PersistentVolumeClaim {} to be Bound",
            pending.join(", ")
        ),
        false,
        now,
    ));
    actions.push(Action::Requeue {
        key,
        after: Duration::from_secs(1),
    });
    Some(actions)
}

/// The VM a restore (or clone) creates from the snapshot's VM: the target's name, a new
/// `firmware.uuid` and SMBIOS serial (or the clone's `newSMBiosSerial`), new MAC addresses for
/// the interfaces that had one (or the clone's `newMacAddresses`), labels and annotations through
/// the clone's filters, `runStrategy: Halted` until its state is in place, and the restore's uid
/// in [`CREATED_BY_ANNOTATION`].
pub fn new_vm_from_snapshot(restore: &Value, source_vm: &Value) -> Value {
    let ns = text(restore, "/metadata/namespace");
    let target = text(restore, "/spec/target/name");
    let mut spec = source_vm.get("spec").cloned().unwrap_or_else(|| json!({}));
    if let Some(map) = spec.as_object_mut() {
        map.remove("running");
        map.insert("runStrategy".into(), json!("Halted"));
    }
    let new_macs: BTreeMap<String, String> = annotation(restore, NEW_MACS_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    if let Some(template_spec) = spec.pointer_mut("/template/spec") {
        let restore_uid = text(restore, "/metadata/uid");
        if let Some(volumes) = template_spec
            .get_mut("volumes")
            .and_then(Value::as_array_mut)
        {
            for volume in volumes {
                let name = text(volume, "/name").to_owned();
                if let Some(claim) = volume
                    .get_mut("persistentVolumeClaim")
                    .and_then(Value::as_object_mut)
                {
                    claim.insert(
                        "claimName".into(),
                        json!(restore_claim_name(restore_uid, &name)),
                    );
                }
            }
        }
        if let Some(firmware) = template_spec
            .pointer_mut("/domain/firmware")
            .and_then(Value::as_object_mut)
        {
            firmware.insert("uuid".into(), json!(ferrovirt_api::defaults::new_uuid()));
            let serial = annotation(restore, NEW_SERIAL_ANNOTATION)
                .map(str::to_owned)
                .unwrap_or_else(ferrovirt_api::defaults::new_uuid);
            firmware.insert("serial".into(), json!(serial));
        }
        if let Some(interfaces) = template_spec
            .pointer_mut("/domain/devices/interfaces")
            .and_then(Value::as_array_mut)
        {
            for interface in interfaces {
                let name = text(interface, "/name").to_owned();
                let had_mac = interface.get("macAddress").is_some();
                if let Some(mac) = new_macs.get(&name) {
                    interface["macAddress"] = json!(mac);
                } else if had_mac {
                    interface["macAddress"] = json!(new_mac_address());
                }
            }
        }
    }
    if let Some(template_meta) = spec.pointer_mut("/template/metadata")
        && let Some(meta) = template_meta.as_object_mut()
    {
        let labels = filtered(
            meta.get("labels"),
            &filters(restore, TEMPLATE_LABEL_FILTERS_ANNOTATION),
        );
        let annotations = filtered(
            meta.get("annotations"),
            &filters(restore, TEMPLATE_ANNOTATION_FILTERS_ANNOTATION),
        );
        meta.insert("labels".into(), labels);
        meta.insert("annotations".into(), annotations);
    }
    let labels = filtered(
        source_vm.pointer("/metadata/labels"),
        &filters(restore, LABEL_FILTERS_ANNOTATION),
    );
    let mut annotations = filtered(
        source_vm.pointer("/metadata/annotations"),
        &filters(restore, ANNOTATION_FILTERS_ANNOTATION),
    );
    annotations[CREATED_BY_ANNOTATION] = json!(text(restore, "/metadata/uid"));
    let mut vm = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": target, "namespace": ns, "labels": labels, "annotations": annotations},
        "spec": spec,
    });
    // KubeVirt's defaults, as the API server would apply them to a created VM.
    if let Ok(mut typed) =
        serde_json::from_value::<ferrovirt_api::kubevirt::VirtualMachine>(vm.clone())
    {
        ferrovirt_api::defaults::apply_vm_defaults(&mut typed);
        if let Ok(value) = serde_json::to_value(&typed) {
            vm = value;
        }
    }
    vm
}

/// The run strategy a VM's spec asks for (`running: true` reads as `Always`).
fn run_strategy(spec: &Value) -> String {
    match (
        spec.get("runStrategy").and_then(Value::as_str),
        spec.get("running"),
    ) {
        (Some(s), _) => s.to_owned(),
        (None, Some(Value::Bool(true))) => "Always".into(),
        _ => "Halted".into(),
    }
}

/// Reconciles one VirtualMachineRestore.
pub fn reconcile_restore(restore: &Value, world: &RestoreWorld<'_>) -> Vec<Action> {
    let now = ferrovirt_store::format_rfc3339(world.now_unix);
    let ns = text(restore, "/metadata/namespace");
    let name = text(restore, "/metadata/name");
    let key = Key::restore(ns, name);
    if restore.pointer("/status/complete") == Some(&json!(true))
        || restore.pointer("/metadata/deletionTimestamp").is_some()
    {
        return match world.job {
            Some(_) => vec![Action::ForgetJob { key }],
            None => Vec::new(),
        };
    }
    let snapshot_name = text(restore, "/spec/virtualMachineSnapshotName");
    let target_name = text(restore, "/spec/target/name");
    let (Some(snapshot), Some(content)) = (world.snapshot, world.content) else {
        let mut actions = waiting(
            restore,
            "Waiting",
            &format!("VirtualMachineSnapshot {snapshot_name:?} is not ready to use"),
            false,
            &now,
        );
        actions.push(Action::Requeue {
            key,
            after: Duration::from_secs(2),
        });
        return actions;
    };
    if snapshot.pointer("/status/readyToUse") != Some(&json!(true)) {
        let mut actions = waiting(
            restore,
            "Waiting",
            &format!("VirtualMachineSnapshot {snapshot_name:?} is not ready to use"),
            false,
            &now,
        );
        actions.push(Action::Requeue {
            key,
            after: Duration::from_secs(2),
        });
        return actions;
    }
    let source_vm = content
        .pointer("/spec/source/virtualMachine")
        .cloned()
        .unwrap_or(Value::Null);
    let content_name = text(content, "/metadata/name").to_owned();

    let Some(target) = world.target else {
        return vec![Action::CreateAndRecord {
            resource: VMS,
            object: new_vm_from_snapshot(restore, &source_vm),
            involved: restore.clone(),
            reason: "VirtualMachineCreated".into(),
            message: format!(
                "Created VirtualMachine {{name}} from VirtualMachineSnapshot {snapshot_name} (new firmware UUID, SMBIOS serial and MAC addresses)"
            ),
        }];
    };
    let target_uid = text(target, "/metadata/uid");
    let restore_uid = text(restore, "/metadata/uid");
    let same_vm = target_uid == text(snapshot, "/status/sourceUID") && !target_uid.is_empty();
    let created_by_us = annotation(target, CREATED_BY_ANNOTATION) == Some(restore_uid);
    if !same_vm && !created_by_us {
        return waiting(
            restore,
            "Failed",
            &format!(
                "VirtualMachine {target_name:?} exists and is not the source of VirtualMachineSnapshot {snapshot_name:?}; restore into the snapshot's VM or name a VirtualMachine that does not exist to create it"
            ),
            true,
            &now,
        );
    }
    let strategy = run_strategy(target.get("spec").unwrap_or(&Value::Null));
    // KubeVirt's rule: the target is stopped. `Halted`, or `Manual` with nothing running (a VM
    // the user stopped); a strategy that restarts the VM by itself is refused.
    if strategy != "Halted" && strategy != "Manual" {
        let message = if target.pointer("/spec/running") == Some(&json!(true)) {
            format!("VirtualMachine {target_name:?} is not stopped")
        } else {
            format!("VirtualMachine {target_name:?} run strategy has to be Halted")
        };
        return waiting(restore, "Failed", &message, true, &now);
    }
    if let Some(run) = world.run
        && !matches!(run.phase, RunPhase::Ended(_))
    {
        let mut actions = waiting(
            restore,
            "Waiting",
            &format!("VirtualMachine {target_name:?} is not stopped"),
            false,
            &now,
        );
        actions.push(Action::Requeue {
            key,
            after: Duration::from_secs(1),
        });
        return actions;
    }
    if created_by_us
        && !same_vm
        && !matches!(world.job, Some(JobOutcome::Restore(_)))
        && let Some(actions) = new_claims(restore, &source_vm, target, world, key.clone(), &now)
    {
        return actions;
    }
    match world.job {
        None | Some(JobOutcome::Snapshot(_) | JobOutcome::QuiesceFailed(_)) => {
            vec![Action::RestoreSnapshot {
                key,
                target: target.clone(),
                content: content_name,
                policy: state_policy(restore),
            }]
        }
        Some(JobOutcome::Restore(Err(message))) => {
            let mut actions = waiting(restore, "Failed", message, true, &now);
            actions.push(Action::ForgetJob { key });
            actions
        }
        Some(JobOutcome::Restore(Ok(summary))) => {
            let mut vm = target.clone();
            if same_vm {
                // The snapshot's spec, with this VM's identity and run strategy kept.
                let uuid = target
                    .pointer("/spec/template/spec/domain/firmware/uuid")
                    .cloned();
                let mut spec = source_vm.get("spec").cloned().unwrap_or_else(|| json!({}));
                if let Some(map) = spec.as_object_mut() {
                    map.remove("running");
                    map.insert("runStrategy".into(), json!(strategy));
                }
                if let (Some(uuid), Some(firmware)) = (
                    uuid,
                    spec.pointer_mut("/template/spec/domain/firmware")
                        .and_then(Value::as_object_mut),
                ) {
                    firmware.insert("uuid".into(), uuid);
                }
                vm["spec"] = spec;
            } else {
                let wanted = run_strategy(source_vm.get("spec").unwrap_or(&Value::Null));
                if let Some(spec) = vm.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("running");
                    spec.insert("runStrategy".into(), json!(wanted));
                }
                if let Some(annotations) = vm
                    .pointer_mut("/metadata/annotations")
                    .and_then(Value::as_object_mut)
                {
                    annotations.remove(CREATED_BY_ANNOTATION);
                }
            }
            let target_claims = claim_volumes(target);
            let restores: Vec<Value> = summary
                .disks
                .iter()
                .map(|volume| json!({"volumeName": volume,
                    "persistentVolumeClaim": target_claims.iter().find(|(v, _)| v == volume)
                        .map_or(volume.as_str(), |(_, claim)| claim.as_str()),
                    "volumeSnapshotName": format!("vmsnapshot-{}-volume-{volume}", text(snapshot, "/metadata/uid"))}))
                .collect();
            let mut message = format!(
                "Restored VirtualMachineSnapshot {snapshot_name} into VirtualMachine {target_name}"
            );
            if let Some(generation) = summary.pre_restore_generation {
                message.push_str(&format!(
                    "; the replaced TPM/EFI state is kept as generation {generation} (`ferrovirt state rollback {target_name} --generation {generation}` undoes the restore)"
                ));
            } else if summary.imported_generation.is_some() {
                message.push_str("; its TPM/EFI state is put in place at its first start");
            }
            vec![
                Action::Update {
                    resource: VMS,
                    object: vm,
                },
                with_status(
                    restore,
                    json!({
                        "complete": true,
                        "restoreTime": now,
                        "restores": restores,
                        "conditions": [
                            condition("Progressing", false, "Operation complete", "Operation complete", &now),
                            condition("Ready", true, "Operation complete", "Operation complete", &now),
                        ],
                    }),
                ),
                Action::event(
                    restore,
                    EventType::Normal,
                    "VirtualMachineRestoreComplete",
                    &message,
                ),
                Action::ForgetJob { key },
            ]
        }
    }
}
