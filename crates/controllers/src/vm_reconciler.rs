//! The VM reconciler (virt-controller's part): a pure function of a VirtualMachine, its VMI and
//! the world, returning the [`Action`]s of KubeVirt's run-strategy semantics ([`crate::vm`]):
//! create the VMI (and the backend-storage PVC it needs first), delete it, pop a done state
//! change request, record a crash loop's back-off, and keep the VM's status current.

use std::time::Duration;

use ferrovirt_api::core::StorageClass;
use ferrovirt_api::defaults::apply_instance_spec_defaults;
use ferrovirt_api::instancetype::ReferencedSpecs;
use ferrovirt_api::instancetype::apply::{apply_to_instance_spec, set_default_network_interface};
use ferrovirt_api::kubevirt::VirtualMachine;
use ferrovirt_resources::kubevirt::meta_str;
use ferrovirt_resources::{DATA_VOLUMES, PVCS, VMIS, VMS};
use ferrovirt_storage::backend::{PVC_LABEL_KEY, PVC_SIZE, pvc_generate_name};
use ferrovirt_vmm::convert::{ConvertContext, plan_from_spec};
use serde_json::{Value, json};

use crate::action::{Action, Key};
use crate::events::EventType;
use crate::references::{ReferenceSync, sync_references};
use crate::storage::{PVC_PROTECTION, choose_storage_class};
use crate::vm::{self, CreateFailure, Decision, VMI_FINALIZER};
use crate::vmi_reconciler::bound_volume;
use crate::world::VmWorld;

/// ferrovirt's Event reason on a VM retired after it migrated to another host.
pub const MIGRATED: &str = "Migrated";

/// A VM that migrated to another host (the migration reconciler halted it and marked it
/// `migration.ferrovirt.io/migrated-to` once the destination confirmed the guest runs there) is
/// deleted once its VMI is gone: its run has ended and its stop recorded the last generation, so
/// nothing writes its volume any more. Its backend-storage PVC goes with it; its state
/// generations stay, kept as every deleted VM's for the state retention.
fn retire_migrated(vm: &Value, vmi: Option<&Value>) -> Option<Vec<Action>> {
    let to = vm
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ferrovirt_resources::migration::MIGRATED_TO))
        .and_then(Value::as_str)?;
    if vmi.is_some() || vm::run_strategy_of(vm) != "Halted" {
        return None;
    }
    Some(vec![
        Action::event(
            vm,
            EventType::Normal,
            MIGRATED,
            &format!(
                "The VM runs on {to} now. Its copy on this host is retired: the VM is deleted here, its state generations are kept for the state retention (ferrovirt state list --deleted)."
            ),
        ),
        Action::Delete {
            resource: VMS,
            namespace: Some(meta_str(vm, "namespace").to_owned()),
            name: meta_str(vm, "name").to_owned(),
        },
    ])
}

/// What to do for the VM (`vmi`: the VMI of the same name, whoever owns it).
pub fn reconcile_vm(vm: &Value, vmi: Option<&Value>, world: &VmWorld) -> Vec<Action> {
    if vm::deleting(vm) {
        return write_status(vm, vmi, false, None, world)
            .into_iter()
            .collect();
    }
    // A VMI of another (older) VM with the same name is not ours.
    let vmi = vmi.filter(|v| owned_by(v, meta_str(vm, "uid")));
    if let Some(actions) = retire_migrated(vm, vmi) {
        return actions;
    }
    let references = match sync_references(vm, world) {
        ReferenceSync::Record(actions) => return actions,
        ReferenceSync::Failed { reason, message } => {
            let failure = CreateFailure::reference(reason, message);
            if vmi.is_none() && matches!(vm::decide(vm, vmi, false), Decision::CreateInstance) {
                let status = write_status(vm, vmi, false, Some(&failure), world);
                let mut actions = Vec::new();
                if status.is_some() {
                    actions.push(Action::event(
                        vm,
                        EventType::Warning,
                        failure.reason,
                        &failure.message,
                    ));
                }
                actions.extend(status);
                return actions;
            }
            ReferencedSpecs::default()
        }
        ReferenceSync::Ready(specs) => *specs,
        ReferenceSync::Unreferenced => ReferencedSpecs::default(),
    };
    let backoff = backoff_remaining(vm, world.now_unix);
    // KubeVirt's `handleDataVolumes`: the VM's dataVolumeTemplates exist, owned by the VM,
    // whatever its run strategy.
    let mut actions = create_data_volumes(vm, world);
    if !actions.is_empty() {
        return actions;
    }
    if let Some(remaining) = backoff {
        actions.push(Action::Requeue {
            key: Key::vm(meta_str(vm, "namespace"), meta_str(vm, "name")),
            after: remaining + Duration::from_millis(100),
        });
    }
    match vm::decide(vm, vmi, backoff.is_some()) {
        Decision::Nothing => actions.extend(write_status(vm, vmi, backoff.is_some(), None, world)),
        Decision::PopRequest => {
            let mut updated = vm.clone();
            if let Some(list) = updated
                .pointer_mut("/status/stateChangeRequests")
                .and_then(Value::as_array_mut)
                && !list.is_empty()
            {
                list.remove(0);
            }
            actions.push(Action::UpdateStatus {
                resource: VMS,
                object: updated,
            });
        }
        Decision::DeleteInstance => {
            if let Some(vmi) = vmi {
                if vm::phase(vmi) == "Failed"
                    && let Some(noted) = note_start_failure(vm, vmi, world.now_unix)
                {
                    actions.push(noted);
                }
                actions.push(Action::Delete {
                    resource: VMIS,
                    namespace: Some(meta_str(vm, "namespace").to_owned()),
                    name: meta_str(vm, "name").to_owned(),
                });
                actions.push(Action::event(
                    vm,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!(
                        "Stopped the virtual machine by deleting the virtual machine instance {}",
                        meta_str(vmi, "uid")
                    ),
                ));
            }
        }
        Decision::CreateInstance if data_volumes_pending(vm, world).is_some() => {
            let failure = data_volumes_pending(vm, world);
            actions.extend(write_status(vm, vmi, false, failure.as_ref(), world));
        }
        Decision::CreateInstance => match create_instance(vm, &references, world) {
            Ok(created) => actions.extend(created),
            Err(failure) => {
                actions.push(Action::event(
                    vm,
                    EventType::Warning,
                    failure.reason,
                    &failure.message,
                ));
                actions.extend(write_status(vm, vmi, false, Some(&failure), world));
            }
        },
    }
    actions
}

/// The DataVolumes of the VM's `dataVolumeTemplates` that do not exist yet, created from the
/// templates with the VM as their controlling owner (KubeVirt's `SuccessfulDataVolumeCreate`).
fn create_data_volumes(vm: &Value, world: &VmWorld) -> Vec<Action> {
    let (ns, name) = (meta_str(vm, "namespace"), meta_str(vm, "name"));
    let mut actions = Vec::new();
    for template in vm
        .pointer("/spec/dataVolumeTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(dv_name) = template.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        if world
            .data_volumes
            .iter()
            .any(|dv| meta_str(dv, "name") == dv_name)
        {
            continue;
        }
        let mut metadata = template
            .get("metadata")
            .cloned()
            .unwrap_or_else(|| json!({}));
        if let Some(meta) = metadata.as_object_mut() {
            meta.remove("creationTimestamp");
            meta.insert("namespace".into(), json!(ns));
            meta.insert(
                "ownerReferences".into(),
                json!([{
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": name,
                    "uid": meta_str(vm, "uid"), "controller": true, "blockOwnerDeletion": true,
                }]),
            );
        }
        let dv = json!({
            "apiVersion": ferrovirt_api::cdi::CDI_API_VERSION,
            "kind": "DataVolume",
            "metadata": metadata,
            "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
        });
        actions.push(Action::CreateAndRecord {
            resource: DATA_VOLUMES,
            object: dv,
            involved: vm.clone(),
            reason: "SuccessfulDataVolumeCreate".into(),
            message: "Created DataVolume {name}".into(),
        });
    }
    actions
}

/// Why the VM's instance waits for its DataVolumes: one missing or still being filled
/// (`Provisioning`), or failed (`DataVolumeError`); `None` when all have `Succeeded`.
fn data_volumes_pending(vm: &Value, world: &VmWorld) -> Option<CreateFailure> {
    let mut waiting = Vec::new();
    for name in vm::data_volume_names(vm) {
        let dv = world
            .data_volumes
            .iter()
            .find(|dv| meta_str(dv, "name") == name);
        let phase = dv
            .and_then(|dv| dv.pointer("/status/phase"))
            .and_then(Value::as_str)
            .unwrap_or("");
        match phase {
            "Succeeded" => {}
            "Failed" => {
                let message = dv
                    .and_then(|dv| dv.pointer("/status/conditions"))
                    .and_then(Value::as_array)
                    .and_then(|c| c.iter().find(|c| c["type"] == "Running"))
                    .and_then(|c| c.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                return Some(CreateFailure::data_volume_error(format!(
                    "DataVolume {name} failed: {message}"
                )));
            }
            "" if dv.is_none() => waiting.push(format!("{name} (not found)")),
            other => waiting.push(format!("{name} ({other})")),
        }
    }
    (!waiting.is_empty()).then(|| {
        CreateFailure::provisioning(format!(
            "Not all of the VMI's DVs are ready: {}",
            waiting.join(", ")
        ))
    })
}

/// The VM's status as it should be, if it differs from the stored one.
fn write_status(
    vm: &Value,
    vmi: Option<&Value>,
    backoff: bool,
    failure: Option<&CreateFailure>,
    world: &VmWorld,
) -> Option<Action> {
    let mut status = vm::vm_status(vm, vmi, backoff, failure, &world.now_rfc3339());
    if vmi.is_some_and(|v| vm::phase(v) == "Running")
        && let Some(obj) = status.as_object_mut()
    {
        obj.remove("startFailure");
    }
    if let Some(volumes) = vmi.and_then(|v| v.pointer("/status/volumeStatus")) {
        status["volumeStatus"] = volumes.clone();
    }
    if vm.get("status") == Some(&status) {
        return None;
    }
    let mut updated = vm.clone();
    updated["status"] = status;
    Some(Action::UpdateStatus {
        resource: VMS,
        object: updated,
    })
}

/// Time left before a crash-looping VM may start again.
pub fn backoff_remaining(vm: &Value, now_unix: i64) -> Option<Duration> {
    let retry_after = vm
        .pointer("/status/startFailure/retryAfterTimestamp")
        .and_then(Value::as_str)
        .and_then(ferrovirt_resources::time::parse_rfc3339)?;
    (retry_after > now_unix).then(|| Duration::from_secs((retry_after - now_unix) as u64))
}

/// Records a failed run in `status.startFailure` (exponential back-off, as KubeVirt: 10 s
/// doubling up to 5 minutes); `None` if this VMI's failure is recorded already.
fn note_start_failure(vm: &Value, vmi: &Value, now_unix: i64) -> Option<Action> {
    let vmi_uid = meta_str(vmi, "uid");
    if vm
        .pointer("/status/startFailure/lastFailedVMIUID")
        .and_then(Value::as_str)
        == Some(vmi_uid)
    {
        return None;
    }
    let count = vm
        .pointer("/status/startFailure/consecutiveFailCount")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        + 1;
    let delay = (5u64 << count.min(6)).min(300);
    let retry = ferrovirt_store::format_rfc3339(now_unix + delay as i64);
    let mut updated = vm.clone();
    let status = updated
        .as_object_mut()
        .map(|o| o.entry("status").or_insert_with(|| json!({})));
    if let Some(status) = status {
        status["startFailure"] = json!({
            "consecutiveFailCount": count,
            "lastFailedVMIUID": vmi_uid,
            "retryAfterTimestamp": retry,
        });
    }
    Some(Action::UpdateStatus {
        resource: VMS,
        object: updated,
    })
}

/// The VMI of a VM, with its backend storage asked for first (or retired when no longer
/// wanted); `Err` says why it cannot be created. A spec this host cannot run (a `containerDisk`,
/// multus, ...) is refused here with its field path, before any VMI exists; fields it accepts
/// but does not act on are named in a Warning Event (and the VM's `IgnoredFields` condition).
fn create_instance(
    vm: &Value,
    references: &ReferencedSpecs,
    world: &VmWorld,
) -> Result<Vec<Action>, CreateFailure> {
    let typed: VirtualMachine = serde_json::from_value(vm.clone())
        .map_err(|e| CreateFailure::unrunnable(format!("the stored VM cannot be read: {e}")))?;
    let template = typed.spec.template.clone().unwrap_or_default();
    let mut spec = template.spec.clone();
    // KubeVirt's VM controller: the default pod interface is added, the instancetype and
    // preference (from the VM's revisions) are applied to the new VMI's spec, then the VMI
    // defaults. (Without references the engine attaches the default interface itself.)
    if references.instancetype.is_some() || references.preference.is_some() {
        set_default_network_interface(&mut spec);
    }
    let conflicts = apply_to_instance_spec(
        "spec.template.spec",
        references.instancetype.as_ref(),
        references.preference.as_ref(),
        &mut spec,
    );
    if !conflicts.is_empty() {
        let fields: Vec<&str> = conflicts.iter().map(|c| c.field.as_str()).collect();
        return Err(CreateFailure::unrunnable(format!(
            "VMI conflicts with instancetype spec in fields: [{}]",
            fields.join(", ")
        )));
    }
    apply_instance_spec_defaults(&mut spec);
    let (ns, name) = (meta_str(vm, "namespace"), meta_str(vm, "name"));
    check_runnable(&spec, ns, name)?;
    let mut actions = Vec::new();
    if let Some(message) = vm::ignored_fields_message(vm) {
        actions.push(Action::event(
            vm,
            EventType::Warning,
            "IgnoredFields",
            &message,
        ));
    }
    if spec.needs_backend_storage() {
        if world.backend_pvc().is_none() {
            actions.push(create_backend_pvc(vm, world).map_err(CreateFailure::storage)?);
        }
    } else if let Some(pvc) = world.backend_pvc() {
        if let Some(volume) = bound_volume(pvc) {
            actions.push(Action::RetireVolume {
                volume: volume.to_owned(),
                vm: vm.clone(),
                pvc_name: meta_str(pvc, "name").to_owned(),
            });
        }
        actions.push(Action::Delete {
            resource: PVCS,
            namespace: Some(ns.to_owned()),
            name: meta_str(pvc, "name").to_owned(),
        });
    }
    let template_meta = template.metadata.clone().unwrap_or_default();
    let mut labels = template_meta.labels.clone().unwrap_or_default();
    labels.insert("kubevirt.io/vm".into(), name.to_owned());
    let mut annotations = template_meta.annotations.clone().unwrap_or_default();
    if vm::run_strategy_of(vm) == crate::migration_reconciler::WAIT_AS_RECEIVER {
        annotations.insert(
            crate::migration_reconciler::CREATE_MIGRATION_TARGET.into(),
            "true".into(),
        );
    }
    let vmi = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": name,
                "uid": meta_str(vm, "uid"), "controller": true, "blockOwnerDeletion": true,
            }],
            "finalizers": [VMI_FINALIZER],
        },
        "spec": spec,
        "status": {"phase": "Pending"},
    });
    actions.push(Action::CreateAndRecord {
        resource: VMIS,
        object: vmi,
        involved: vm.clone(),
        reason: "SuccessfulCreate".into(),
        message: "Started the virtual machine by creating the new virtual machine instance {name}"
            .into(),
    });
    Ok(actions)
}

/// Whether the engine could run the (defaulted) template: the converter's verdict without the
/// host's volumes (a PVC is looked up when the VMI starts), with the VM's field paths.
fn check_runnable(
    spec: &ferrovirt_api::kubevirt::vmi::VirtualMachineInstanceSpec,
    namespace: &str,
    name: &str,
) -> Result<(), CreateFailure> {
    let any_claim = |_: &str| Some(std::path::PathBuf::new());
    let ctx = ConvertContext {
        namespace,
        name,
        field_prefix: "spec.template.spec",
        state_volume: None,
        claim_dir: &any_claim,
        termination_grace_period_seconds: None,
    };
    plan_from_spec(spec, &ctx).map(drop).map_err(|unsupported| {
        CreateFailure::unrunnable(format!(
            "The VirtualMachine {name:?} cannot run on this host: {unsupported}"
        ))
    })
}

/// The backend-storage PVC of a VM, in KubeVirt's storage class order.
fn create_backend_pvc(vm: &Value, world: &VmWorld) -> Result<Action, String> {
    let (ns, name) = (meta_str(vm, "namespace"), meta_str(vm, "name"));
    let cluster = ferrovirt_resources::cluster::config_of(world.kubevirt);
    let classes: Vec<StorageClass> = world
        .storage_classes
        .iter()
        .filter_map(|c| serde_json::from_value((**c).clone()).ok())
        .collect();
    let class = choose_storage_class(cluster.vm_state_storage_class.as_deref(), &classes)
        .map_err(|e| e.to_string())?;
    let pvc = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "generateName": pvc_generate_name(name),
            "namespace": ns,
            "labels": {PVC_LABEL_KEY: name},
            "ownerReferences": [{
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": name,
                "uid": meta_str(vm, "uid"), "controller": true, "blockOwnerDeletion": true,
            }],
            "finalizers": [PVC_PROTECTION],
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": PVC_SIZE}},
            "storageClassName": class,
            "volumeMode": "Filesystem",
        },
        "status": {"phase": "Pending"},
    });
    Ok(Action::CreateAndRecord {
        resource: PVCS,
        object: pvc,
        involved: vm.clone(),
        reason: "SuccessfulCreate".into(),
        message: "Created backend storage PVC {name} for the VM's persistent TPM/EFI state".into(),
    })
}

fn owned_by(vmi: &Value, vm_uid: &str) -> bool {
    vmi.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(vm_uid))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_that_migrated_away_is_retired_once_its_vmi_is_gone() {
        let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm", "namespace": "default", "uid": "u1",
                "annotations": {ferrovirt_resources::migration::MIGRATED_TO: "https://b:1"}},
            "spec": {"runStrategy": "Halted"}});
        let vmi = json!({"metadata": {"name": "vm", "namespace": "default",
            "ownerReferences": [{"uid": "u1", "kind": "VirtualMachine", "name": "vm"}]}});
        // Its VMI still ends (the stop records the last generation): nothing yet.
        assert_eq!(retire_migrated(&vm, Some(&vmi)), None);
        let actions = retire_migrated(&vm, None).unwrap();
        assert!(matches!(&actions[0], Action::Event { reason, message, .. }
            if reason == MIGRATED && message.contains("https://b:1")));
        assert!(matches!(&actions[1], Action::Delete { name, .. } if name == "vm"));
        // Started again by hand (not halted), or never migrated: left alone.
        let mut started = vm.clone();
        started["spec"]["runStrategy"] = json!("Always");
        assert_eq!(retire_migrated(&started, None), None);
        let plain = json!({"metadata": {"name": "vm"}, "spec": {"runStrategy": "Halted"}});
        assert_eq!(retire_migrated(&plain, None), None);
    }
}
