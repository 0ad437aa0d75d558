//! The VMI reconciler (virt-handler's part): a pure function of a VirtualMachineInstance, the
//! engine's run of it and the world, returning the [`Action`]s that bring the engine and the VMI's
//! status together: start the engine for a new VMI (once its backend storage is bound), adopt a
//! running one after a restart, write `Scheduled`/`Running`/`Succeeded`/`Failed` with their
//! Events as the run moves, stop the engine when the VMI is being deleted and release the VMI's
//! finalizer once the run is over.

use ferrovirt_api::cdi::annotations;
use ferrovirt_api::kubevirt::VirtualMachineInstanceSpec;
use ferrovirt_resources::VMIS;
use ferrovirt_resources::kubevirt::meta_str;
use serde_json::{Value, json};

use crate::action::{Action, Key};
use crate::events::EventType;
use crate::vm::{self, VMI_FINALIZER};
use crate::world::{GuestReport, RunOutcome, RunPhase, RunView, TrustNotes, VmWorld};

/// What to do for the VMI `namespace/name` (`vmi`: the stored VMI, if any).
pub fn reconcile_vmi(
    namespace: &str,
    name: &str,
    vmi: Option<&Value>,
    world: &VmWorld,
) -> Vec<Action> {
    let run = world.run;
    match run {
        Some(RunView {
            phase: RunPhase::Ended(outcome),
            vmi_uid,
            ..
        }) => return report_end(namespace, name, vmi, vmi_uid, outcome, world),
        // The VM ended and its state is durable: its end is written now (the VM reads
        // `Stopped`), the run is forgotten (and the VMI released) once the engine has checked
        // and recorded the state.
        Some(RunView {
            phase: RunPhase::Ending(outcome),
            vmi_uid,
            ..
        }) => return write_end(vmi, vmi_uid, outcome, world),
        _ => {}
    }
    let Some(vmi) = vmi else {
        return Vec::new();
    };
    let uid = meta_str(vmi, "uid");
    let own_run = run.filter(|r| r.vmi_uid == uid);
    if vm::deleting(vmi) {
        return match (run, own_run) {
            // The signal first, then its Event: the Event's write is not on the stop's path.
            (_, Some(r)) if matches!(r.phase, RunPhase::Running { .. }) && !r.stopping => vec![
                Action::StopEngine {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    vmi_uid: uid.to_owned(),
                },
                Action::event(
                    vmi,
                    EventType::Normal,
                    "ShuttingDown",
                    "Signaled Graceful Shutdown",
                ),
            ],
            (None, _) => release(vmi).into_iter().collect(),
            _ => Vec::new(), // the run is starting or stopping: looked at again when it moves
        };
    }
    match (run, own_run) {
        (_, Some(r)) => match &r.phase {
            RunPhase::Running {
                adopted,
                reported: false,
                restored,
                trust,
                ..
            } => report_running(
                namespace,
                name,
                vmi,
                *adopted,
                restored.as_deref(),
                trust,
                world,
            ),
            RunPhase::Running {
                reported: true,
                guest,
                ..
            } => report_guest(vmi, guest.as_deref(), world)
                .into_iter()
                .collect(),
            // A receiver whose incoming QEMU the migration executor started before this
            // reconcile saw the VMI: it waits for the migration all the same.
            RunPhase::Starting
                if is_migration_receiver(vmi) && matches!(vm::phase(vmi), "" | "Pending") =>
            {
                vec![set_phase(vmi, WAITING_FOR_SYNC, None, world)]
            }
            _ => Vec::new(),
        },
        (Some(_), None) => Vec::new(), // an older VMI's run is still ending
        (None, _) if vm::is_final(vmi) => Vec::new(),
        (None, _) => start(vmi, world),
    }
}

/// A VMI without a run: start it (or adopt it when it was already running).
fn start(vmi: &Value, world: &VmWorld) -> Vec<Action> {
    let adopt = vm::phase(vmi) == "Running";
    if !adopt && is_migration_receiver(vmi) {
        // The migration executor starts it (`MigrationWork::Receive`); until then it waits, in
        // KubeVirt's phase of a receiving VMI.
        if vm::phase(vmi) == WAITING_FOR_SYNC {
            return Vec::new();
        }
        return vec![set_phase(vmi, WAITING_FOR_SYNC, None, world)];
    }
    if needs_backend_storage(vmi) {
        match world.backend_pvc() {
            Some(pvc) if bound_volume(pvc).is_some() => match state_import(pvc) {
                StateImport::None | StateImport::Done => {}
                // Never start on a state a DataVolume is still writing (looked at again when
                // the PVC changes).
                StateImport::Running => return Vec::new(),
                StateImport::Failed(reason) => {
                    let message = format!(
                        "the backend-storage PVC {} was to be filled by its DataVolume, whose import failed ({reason}); fix the DataVolume's source and re-create it, then start the VM again",
                        meta_str(pvc, "name")
                    );
                    return vec![
                        Action::event(vmi, EventType::Warning, "FailedCreate", &message),
                        set_phase(vmi, "Failed", Some(("FailedCreate", &message)), world),
                    ];
                }
            },
            Some(_) => return Vec::new(), // looked at again when the PVC is bound
            None if owner_is_vm(vmi) => return Vec::new(), // the VM's reconcile creates it
            None => {
                let message = format!(
                    "VirtualMachineInstance {} needs backend storage (persistent TPM or EFI); create it through a VirtualMachine",
                    meta_str(vmi, "name")
                );
                return vec![
                    Action::event(vmi, EventType::Warning, "FailedCreate", &message),
                    set_phase(vmi, "Failed", Some(("FailedCreate", &message)), world),
                ];
            }
        }
    }
    let mut actions = Vec::new();
    if !adopt {
        actions.push(set_phase(vmi, "Scheduled", None, world));
        // A VM's instance is covered by the VM's condition and Event; a standalone VMI says it
        // here.
        if !owner_is_vm(vmi)
            && let Some(fields) = ignored_fields(vmi)
        {
            actions.push(Action::event(
                vmi,
                EventType::Warning,
                "IgnoredFields",
                &format!(
                    "ferrovirt does not act on these fields, which KubeVirt would: {fields}; the \
                     VirtualMachineInstance runs without them"
                ),
            ));
        }
    }
    actions.push(Action::StartEngine {
        vmi: vmi.clone(),
        adopt,
    });
    actions
}

/// KubeVirt's VMI phase of a receiver of a decentralized live migration.
pub const WAITING_FOR_SYNC: &str = "WaitingForSync";

/// Whether a VMI waits for an incoming live migration (`kubevirt.io/create-migration-target`).
pub fn is_migration_receiver(vmi: &Value) -> bool {
    vmi.pointer("/metadata/annotations")
        .and_then(|a| a.get(crate::migration_reconciler::CREATE_MIGRATION_TARGET))
        .and_then(Value::as_str)
        == Some("true")
}

/// The run is up: write `Running` and say so (once).
fn report_running(
    namespace: &str,
    name: &str,
    vmi: &Value,
    adopted: bool,
    restored: Option<&str>,
    trust: &TrustNotes,
    world: &VmWorld,
) -> Vec<Action> {
    let mut actions = Vec::new();
    if adopted {
        // A manager that ended between recording the run (run.json) and reporting it left the
        // VMI Scheduled while the guest runs: the adoption reports it (found by the crash matrix:
        // the VM stayed `Starting` with its guest running).
        if vm::phase(vmi) != "Running" {
            actions.push(set_phase(vmi, "Running", None, world));
        }
        actions.push(Action::event(
            vmi,
            EventType::Normal,
            "Adopted",
            "VirtualMachineInstance adopted after a ferrovirt restart.",
        ));
    } else {
        actions.push(with_trust(
            set_phase(vmi, "Running", None, world),
            trust,
            world,
        ));
        actions.push(Action::event(
            vmi,
            EventType::Normal,
            "Started",
            "VirtualMachineInstance started.",
        ));
        if let Some(message) = &trust.pcrs_will_change {
            actions.push(Action::event(
                vmi,
                EventType::Warning,
                vm::PCRS_WILL_CHANGE,
                message,
            ));
        }
        if let Some(message) = restored {
            actions.push(Action::event(
                vmi,
                EventType::Normal,
                "StateRestored",
                message,
            ));
        }
    }
    actions.push(Action::MarkRunReported {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    });
    actions
}

/// The fields of a VMI's spec ferrovirt accepts but does not act on, comma-separated.
fn ignored_fields(vmi: &Value) -> Option<String> {
    let spec: VirtualMachineInstanceSpec = serde_json::from_value(vmi.get("spec")?.clone()).ok()?;
    let fields = ferrovirt_vmm::ignored::ignored_fields(&spec, "spec");
    (!fields.is_empty()).then(|| fields.join(", "))
}

/// KubeVirt's condition type for a guest agent that answers.
pub const AGENT_CONNECTED: &str = "AgentConnected";

/// What the guest agent reports, in the VMI's status as virt-handler writes it: the
/// `AgentConnected` condition, `guestOSInfo`, and `interfaces` with the guest's addresses;
/// `None` when the status says so already.
fn report_guest(vmi: &Value, guest: Option<&GuestReport>, world: &VmWorld) -> Option<Action> {
    let current = vmi.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut status = current.clone();
    let conditions: Vec<Value> = current
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let had = conditions
        .iter()
        .find(|c| c.get("type") == Some(&json!(AGENT_CONNECTED)))
        .cloned();
    let mut conditions: Vec<Value> = conditions
        .into_iter()
        .filter(|c| c.get("type") != Some(&json!(AGENT_CONNECTED)))
        .collect();
    let obj = status.as_object_mut()?;
    match guest {
        Some(report) => {
            conditions.push(had.unwrap_or_else(|| {
                json!({"type": AGENT_CONNECTED, "status": "True", "lastProbeTime": null,
                       "lastTransitionTime": world.now_rfc3339()})
            }));
            obj.insert(
                "guestOSInfo".into(),
                ferrovirt_vmm::agent::os_info_json(&report.os),
            );
            obj.insert("interfaces".into(), json!(guest_interfaces(vmi, report)));
        }
        None => {
            obj.remove("guestOSInfo");
            obj.remove("interfaces");
        }
    }
    if !conditions.is_empty() || obj.contains_key("conditions") {
        obj.insert("conditions".into(), json!(conditions));
    }
    if status == current {
        return None;
    }
    let mut updated = vmi.clone();
    updated["status"] = status;
    Some(Action::UpdateStatus {
        resource: VMIS,
        object: updated,
    })
}

/// The guest's interfaces (loopback left out) as `status.interfaces` entries: `name` is the
/// spec's interface with the same MAC address, or the only one when there is one of each.
fn guest_interfaces(vmi: &Value, report: &GuestReport) -> Vec<Value> {
    let spec_interfaces: Vec<(String, Option<String>)> = match vmi
        .pointer("/spec/domain/devices/interfaces")
        .and_then(Value::as_array)
    {
        Some(list) if !list.is_empty() => list
            .iter()
            .map(|i| {
                (
                    meta_str_of(i, "name"),
                    i.get("macAddress")
                        .and_then(Value::as_str)
                        .map(str::to_lowercase),
                )
            })
            .collect(),
        _ => vec![("default".to_owned(), None)],
    };
    let guest: Vec<_> = report
        .interfaces
        .iter()
        .filter(|i| i.name != "lo")
        .collect();
    guest
        .iter()
        .map(|interface| {
            let mac = interface.hardware_address.as_deref().map(str::to_lowercase);
            let name = spec_interfaces
                .iter()
                .find(|(_, spec_mac)| spec_mac.is_some() && *spec_mac == mac)
                .or_else(|| {
                    (guest.len() == 1 && spec_interfaces.len() == 1).then(|| &spec_interfaces[0])
                })
                .map(|(name, _)| name.clone());
            let addresses: Vec<&str> = interface
                .ip_addresses
                .iter()
                .map(|a| a.address.as_str())
                .collect();
            let first = interface
                .ip_addresses
                .iter()
                .find(|a| a.family == "ipv4")
                .or_else(|| interface.ip_addresses.first())
                .map(|a| a.address.clone());
            let mut entry = json!({
                "interfaceName": interface.name,
                "ipAddresses": addresses,
                "infoSource": "guest-agent",
            });
            if let Some(name) = name {
                entry["name"] = json!(name);
            }
            if let Some(mac) = mac {
                entry["mac"] = json!(mac);
            }
            if let Some(first) = first {
                entry["ipAddress"] = json!(first);
            }
            entry
        })
        .collect()
}

fn meta_str_of(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A `Running` status update with what the start found about trust: `status.tpm.
/// ekCertificateSHA256` (`{rsa, ecc}`) and the condition `PCRsWillChange` (the VM controller
/// copies both into the VM's status).
fn with_trust(action: Action, trust: &TrustNotes, world: &VmWorld) -> Action {
    let Action::UpdateStatus {
        resource,
        mut object,
    } = action
    else {
        return action;
    };
    if let Some(ek) = &trust.ek {
        object["status"]["tpm"] = json!({"ekCertificateSHA256": {"rsa": ek.rsa, "ecc": ek.ecc}});
    }
    if let Some(message) = &trust.pcrs_will_change
        && let Some(conditions) = object
            .pointer_mut("/status/conditions")
            .and_then(Value::as_array_mut)
    {
        conditions.push(json!({
            "type": vm::PCRS_WILL_CHANGE,
            "status": "True",
            "reason": vm::PCRS_WILL_CHANGE,
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": world.now_rfc3339(),
        }));
    }
    Action::UpdateStatus { resource, object }
}

/// The run is over: write the VMI's final phase (if it is still the run's VMI), forget the run,
/// and look again at the VM's PVCs (a PVC deleted while the VM ran waits for it).
fn report_end(
    namespace: &str,
    name: &str,
    vmi: Option<&Value>,
    run_uid: &str,
    outcome: &RunOutcome,
    world: &VmWorld,
) -> Vec<Action> {
    let mut actions = write_end(vmi, run_uid, outcome, world);
    actions.push(Action::ForgetRun {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    });
    for pvc in world.backend_pvcs {
        actions.push(Action::Requeue {
            key: Key::pvc(namespace, meta_str(pvc, "name")),
            after: std::time::Duration::ZERO,
        });
    }
    actions
}

/// The run's end on its VMI: the final phase and its Event. The run's VMI gets the outcome even
/// if its phase was written by someone else meanwhile (a status patch cannot hide how the run
/// ended); once written it is not written again.
fn write_end(
    vmi: Option<&Value>,
    run_uid: &str,
    outcome: &RunOutcome,
    world: &VmWorld,
) -> Vec<Action> {
    let written = |v: &Value| {
        vm::phase(v) == outcome.phase
            && v.pointer("/status/reason").and_then(Value::as_str) == Some(outcome.reason)
    };
    let Some(vmi) = vmi.filter(|v| meta_str(v, "uid") == run_uid && !written(v)) else {
        return Vec::new();
    };
    let event_type = if outcome.phase == "Failed" {
        EventType::Warning
    } else {
        EventType::Normal
    };
    vec![
        set_phase(
            vmi,
            outcome.phase,
            Some((outcome.reason, &outcome.message)),
            world,
        ),
        Action::event(vmi, event_type, outcome.reason, &outcome.message),
    ]
}

/// Removes the VMI finalizer: the VMI disappears.
fn release(vmi: &Value) -> Option<Action> {
    let finalizers = vmi
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)?;
    if !finalizers.iter().any(|f| f.as_str() == Some(VMI_FINALIZER)) {
        return None;
    }
    let mut released = vmi.clone();
    if let Some(finalizers) = released
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        finalizers.retain(|f| f.as_str() != Some(VMI_FINALIZER));
    }
    Some(Action::Update {
        resource: VMIS,
        object: released,
    })
}

/// The VMI with a new phase, its Ready condition, node, reason and transition timestamp.
pub fn set_phase(
    vmi: &Value,
    phase: &str,
    reason: Option<(&str, &str)>,
    world: &VmWorld,
) -> Action {
    let now = world.now_rfc3339();
    let mut updated = vmi.clone();
    let mut status = vmi.get("status").cloned().unwrap_or_else(|| json!({}));
    status["phase"] = json!(phase);
    let ready = phase == "Running";
    status["conditions"] = json!([{"type": "Ready", "status": if ready { "True" } else { "False" },
        "lastProbeTime": null, "lastTransitionTime": now}]);
    if phase != "Pending" {
        status["nodeName"] = json!(world.node_name);
    }
    if let Some((reason, message)) = reason {
        status["reason"] = json!(reason);
        status["message"] = json!(message);
    }
    let transitions = status.as_object_mut().map(|s| {
        s.entry("phaseTransitionTimestamps")
            .or_insert_with(|| json!([]))
    });
    if let Some(Value::Array(list)) = transitions {
        list.push(json!({"phase": phase, "phaseTransitionTimestamp": now}));
    }
    if ready {
        status["volumeStatus"] = backend_volume_status(vmi, world);
    }
    updated["status"] = status;
    Action::UpdateStatus {
        resource: VMIS,
        object: updated,
    }
}

/// The VMI's `volumeStatus` entry for the backend storage.
fn backend_volume_status(vmi: &Value, world: &VmWorld) -> Value {
    match world.backend_pvc() {
        Some(pvc) if needs_backend_storage(vmi) => {
            let claim = meta_str(pvc, "name");
            json!([{
                "name": claim,
                "target": "",
                "phase": "Ready",
                "reason": "PVCReady",
                "persistentVolumeClaimInfo": {
                    "claimName": claim,
                    "accessModes": pvc.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
                    "capacity": pvc.pointer("/status/capacity").cloned().unwrap_or(json!({})),
                    "requests": pvc.pointer("/spec/resources/requests").cloned().unwrap_or(json!({})),
                    "volumeMode": "Filesystem",
                },
            }])
        }
        _ => json!([]),
    }
}

/// Whether the VMI keeps a persistent TPM or EFI (and so needs backend storage).
pub fn needs_backend_storage(vmi: &Value) -> bool {
    vmi.get("spec")
        .and_then(|spec| serde_json::from_value::<VirtualMachineInstanceSpec>(spec.clone()).ok())
        .is_some_and(|spec| spec.needs_backend_storage())
}

/// The local-path volume a PVC is bound to.
/// Whether a DataVolume writes a backend-storage PVC (a KubeVirt export's manifests `all` bring
/// the VM's state as a DataVolume labelled `persistent-state-for: <vm>`, whose PVC CDI labels
/// alike).
#[derive(Debug, PartialEq, Eq)]
enum StateImport {
    /// The PVC is not a DataVolume's.
    None,
    Running,
    Done,
    Failed(String),
}

fn state_import(pvc: &Value) -> StateImport {
    let annotation = |key: &str| {
        pvc.pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    };
    if annotation(annotations::CREATED_FOR_DV).is_none() {
        return StateImport::None;
    }
    match annotation(annotations::POD_PHASE) {
        Some("Succeeded") => StateImport::Done,
        Some("Failed") => StateImport::Failed(
            annotation(annotations::RUNNING_MESSAGE)
                .unwrap_or("no message")
                .to_owned(),
        ),
        _ => StateImport::Running,
    }
}

pub fn bound_volume(pvc: &Value) -> Option<&str> {
    pvc.pointer("/spec/volumeName")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
}

pub(crate) fn owner_is_vm(vmi: &Value) -> bool {
    vmi.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("kind") == Some(&json!("VirtualMachine")))
        })
}
