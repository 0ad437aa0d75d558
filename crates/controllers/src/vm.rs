//! VirtualMachine semantics as KubeVirt's virt-controller has them, as pure functions over stored
//! objects: the effective run strategy, what to do with the instance (create / delete / nothing),
//! and the VM's status (`printableStatus`, `ready`, `created`, conditions).

use serde_json::{Value, json};

pub use ferrovirt_resources::kubevirt::{
    VMI_FINALIZER, deleting, is_final, phase, run_strategy_of, vmi_is_active,
};

/// What the controller does with a VM's instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Nothing,
    /// Create a new VMI (none exists).
    CreateInstance,
    /// Delete the VMI (stop it, or clear a finished one before a restart).
    DeleteInstance,
    /// Drop the first `status.stateChangeRequests` entry (it is done).
    PopRequest,
}

/// The first pending state change request: (`Start`|`Stop`, uid).
pub fn first_request(vm: &Value) -> Option<(String, Option<String>)> {
    let first = vm.pointer("/status/stateChangeRequests/0")?;
    Some((
        first.get("action")?.as_str()?.to_owned(),
        first.get("uid").and_then(Value::as_str).map(str::to_owned),
    ))
}

/// Whether a finished VMI was the source of a live migration that has not failed: under way,
/// or succeeded (its `status.migrationState` has the destination's address, which only the
/// source side writes, and no `failed`). Its guest may run on the destination now (its QEMU here
/// can end after the switch-over, e.g. killed while it waited for the destination's word), so
/// the VM must not start it again here: two running copies of one TPM and disk. The migration
/// settles it: the guest runs there (this VM is halted and retired), or the migration fails and
/// the VM's run strategy applies again.
pub fn left_by_migration(vmi: &Value) -> bool {
    vmi.pointer("/status/migrationState").is_some_and(|state| {
        state.get("targetNodeAddress").is_some()
            && state.get("failed").and_then(Value::as_bool) != Some(true)
    })
}

/// KubeVirt's run-strategy semantics: what to do given the VM and its VMI.
pub fn decide(vm: &Value, vmi: Option<&Value>, backoff_active: bool) -> Decision {
    let vmi_uid = vmi.and_then(|v| v.pointer("/metadata/uid").and_then(Value::as_str));
    let vmi_deleting = vmi.is_some_and(deleting);
    if let Some((action, uid)) = first_request(vm) {
        return match (action.as_str(), vmi) {
            ("Stop", None) => Decision::PopRequest,
            ("Stop", Some(_)) if vmi_deleting => Decision::Nothing,
            ("Stop", Some(_)) if uid.is_some() && uid.as_deref() != vmi_uid => Decision::PopRequest,
            ("Stop", Some(_)) => Decision::DeleteInstance,
            ("Start", None) => Decision::CreateInstance,
            ("Start", Some(_)) if vmi_deleting => Decision::Nothing,
            ("Start", Some(v)) if is_final(v) && left_by_migration(v) => Decision::Nothing,
            ("Start", Some(v)) if is_final(v) => Decision::DeleteInstance,
            ("Start", Some(_)) => Decision::PopRequest,
            _ => Decision::PopRequest,
        };
    }
    let strategy = run_strategy_of(vm);
    match (strategy.as_str(), vmi) {
        (_, Some(_)) if vmi_deleting => Decision::Nothing,
        ("Halted", Some(_)) => Decision::DeleteInstance,
        (_, Some(v)) if is_final(v) && left_by_migration(v) => Decision::Nothing,
        ("Always", Some(v)) if is_final(v) => {
            if backoff_active {
                Decision::Nothing
            } else {
                Decision::DeleteInstance
            }
        }
        ("RerunOnFailure", Some(v)) if phase(v) == "Failed" => {
            if backoff_active {
                Decision::Nothing
            } else {
                Decision::DeleteInstance
            }
        }
        // KubeVirt's decentralized live migration: the receiving VM's instance waits for the
        // migration (created once; a finished receiver stays until the migration's take-over
        // changes the run strategy).
        ("WaitAsReceiver", None) => {
            if backoff_active {
                Decision::Nothing
            } else {
                Decision::CreateInstance
            }
        }
        ("Always" | "RerunOnFailure", None) => {
            if backoff_active {
                Decision::Nothing
            } else {
                Decision::CreateInstance
            }
        }
        _ => Decision::Nothing,
    }
}

/// KubeVirt's `printableStatus` of a VM.
pub fn printable_status(
    vm: &Value,
    vmi: Option<&Value>,
    backoff_active: bool,
    failure: Option<&CreateFailure>,
) -> &'static str {
    if deleting(vm) {
        return "Terminating";
    }
    match vmi {
        None if backoff_active => "CrashLoopBackOff",
        None => failure.map_or("Stopped", |f| f.printable_status),
        // KubeVirt's `Stopping`: the VMI is being deleted and has not ended yet. One that has
        // ended is `Stopped` while it waits for its finalizer (here: the after-stop record).
        Some(v) if deleting(v) && !is_final(v) => "Stopping",
        Some(v) => match phase(v) {
            "Running" => "Running",
            "Succeeded" => "Stopped",
            "Failed" if backoff_active => "CrashLoopBackOff",
            "Failed" => "Stopped",
            _ => "Starting",
        },
    }
}

/// Why a VM's instance could not be created: the printable status KubeVirt shows for it and the
/// message of the `Failure` condition and `FailedCreate` Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateFailure {
    /// The reason of the `Failure` condition and of the Warning Event (`FailedCreate`,
    /// `FailedFindPreference`, ...).
    pub reason: &'static str,
    pub printable_status: &'static str,
    pub message: String,
    /// The VM condition it shows as: `Failure` (`True`), or `DataVolumesReady` (`False`) while
    /// the VM waits for its DataVolumes.
    pub condition_type: &'static str,
}

impl CreateFailure {
    /// Missing storage for the backend-storage PVC (KubeVirt: `ErrorPvcNotFound`).
    pub fn storage(message: String) -> Self {
        Self {
            reason: "FailedCreate",
            printable_status: "ErrorPvcNotFound",
            message,
            condition_type: "Failure",
        }
    }

    /// A DataVolume the VM uses is not filled yet (KubeVirt: `Provisioning`).
    pub fn provisioning(message: String) -> Self {
        Self {
            reason: "NotAllDVsReady",
            printable_status: "Provisioning",
            message,
            condition_type: "DataVolumesReady",
        }
    }

    /// A DataVolume the VM uses has failed (KubeVirt: `DataVolumeError`).
    pub fn data_volume_error(message: String) -> Self {
        Self {
            reason: "DataVolumeError",
            printable_status: "DataVolumeError",
            message,
            condition_type: "DataVolumesReady",
        }
    }

    /// A spec no host here can run (KubeVirt: no node fits, `ErrorUnschedulable`).
    pub fn unrunnable(message: String) -> Self {
        Self {
            reason: "FailedCreate",
            printable_status: "ErrorUnschedulable",
            message,
            condition_type: "Failure",
        }
    }

    /// The VM's instancetype or preference cannot be found or recorded (KubeVirt's
    /// `FailedFindInstancetype`/`FailedFindPreference`); the VM stays stopped until it can.
    pub fn reference(reason: &'static str, message: String) -> Self {
        Self {
            reason,
            printable_status: "Stopped",
            message,
            condition_type: "Failure",
        }
    }
}

/// The condition type listing the fields ferrovirt accepts but does not act on.
pub const IGNORED_FIELDS_CONDITION: &str = "IgnoredFields";

/// The message naming fields ferrovirt accepts but does not act on (`None`: there are none).
pub fn ignored_fields_message(vm: &Value) -> Option<String> {
    let spec = vm.pointer("/spec/template/spec")?;
    let spec: ferrovirt_api::kubevirt::vmi::VirtualMachineInstanceSpec =
        serde_json::from_value(spec.clone()).ok()?;
    let fields = ferrovirt_vmm::ignored::ignored_fields(&spec, "spec.template.spec");
    (!fields.is_empty()).then(|| {
        format!(
            "ferrovirt does not act on these fields, which KubeVirt would: {}; the VM runs without \
             them (remove them to clear this condition)",
            fields.join(", ")
        )
    })
}

/// The Event reason and condition type of the PCR guard (`ferrovirt_vmm::boot_guard`).
pub const PCRS_WILL_CHANGE: &str = "PCRsWillChange";

/// The VM's new status (keeps `stateChangeRequests` and `startFailure` from `current`, `tpm`
/// unless the VMI has a newer one; mirrors the VMI's `PCRsWillChange` condition).
pub fn vm_status(
    vm: &Value,
    vmi: Option<&Value>,
    backoff_active: bool,
    failure: Option<&CreateFailure>,
    now: &str,
) -> Value {
    let current = vm.get("status").cloned().unwrap_or_else(|| json!({}));
    let ready = vmi.is_some_and(|v| phase(v) == "Running" && !deleting(v));
    let printable = printable_status(vm, vmi, backoff_active, failure);
    let previous_ready = current
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c.get("type") == Some(&json!("Ready"))))
        .cloned();
    let ready_text = if ready { "True" } else { "False" };
    let ready_condition = match previous_ready {
        Some(c) if c.get("status") == Some(&json!(ready_text)) => c,
        _ => {
            let mut c = json!({"type": "Ready", "status": ready_text, "lastProbeTime": null, "lastTransitionTime": now});
            if !ready {
                c["reason"] = json!(if vmi.is_some() {
                    "PodNotReady"
                } else {
                    "VMINotExists"
                });
                c["message"] = json!(if vmi.is_some() {
                    "VMI is not running"
                } else {
                    "VMI does not exist"
                });
            }
            c
        }
    };
    let mut conditions = vec![ready_condition];
    // As KubeVirt's VM controller mirrors VMI conditions: the PCR guard's, while the VMI lives.
    if let Some(pcrs) = vmi
        .and_then(|v| v.pointer("/status/conditions"))
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c.get("type") == Some(&json!(PCRS_WILL_CHANGE)))
        })
    {
        conditions.push(pcrs.clone());
    }
    // A condition that is still true with the same message keeps its transition time, so an
    // unchanged status is not written again.
    let unchanged = |kind: &str, message: &str| {
        current
            .get("conditions")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c.get("type") == Some(&json!(kind))))
            .filter(|c| c.get("message") == Some(&json!(message)))
            .cloned()
    };
    if let Some(failure) = failure {
        let kind = failure.condition_type;
        let status = if kind == "Failure" { "True" } else { "False" };
        conditions.push(unchanged(kind, &failure.message).unwrap_or_else(|| json!({"type": kind, "status": status, "reason": failure.reason, "message": failure.message, "lastProbeTime": null, "lastTransitionTime": now})));
    }
    if let Some(message) = ignored_fields_message(vm) {
        conditions.push(unchanged(IGNORED_FIELDS_CONDITION, &message).unwrap_or_else(|| json!({"type": IGNORED_FIELDS_CONDITION, "status": "True", "reason": "NotSupported", "message": message, "lastProbeTime": null, "lastTransitionTime": now})));
    }
    let mut status = json!({
        "printableStatus": printable,
        "ready": ready,
        "created": vmi.is_some(),
        "runStrategy": run_strategy_of(vm),
        "conditions": conditions,
        "observedGeneration": vm.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "desiredGeneration": vm.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
    });
    // The EK fingerprints of the last start stay after the VM stops (the TPM keeps its EK).
    if let Some(tpm) = vmi
        .and_then(|v| v.pointer("/status/tpm"))
        .or_else(|| current.get("tpm"))
    {
        status["tpm"] = tpm.clone();
    }
    for keep in [
        "stateChangeRequests",
        "startFailure",
        "volumeStatus",
        "instancetypeRef",
        "preferenceRef",
    ] {
        if let Some(value) = current.get(keep)
            && !(value.is_array() && value.as_array().is_some_and(Vec::is_empty))
        {
            status[keep] = value.clone();
        }
    }
    status
}

/// Whether two statuses differ in more than timestamps.
pub fn status_changed(old: Option<&Value>, new: &Value) -> bool {
    old != Some(new)
}

/// The names of the DataVolumes a VM uses: its `dataVolume` volumes, then its
/// `dataVolumeTemplates` (each name once).
pub fn data_volume_names(vm: &Value) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let volumes = vm
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/dataVolume/name").and_then(Value::as_str));
    let templates = vm
        .pointer("/spec/dataVolumeTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.pointer("/metadata/name").and_then(Value::as_str));
    for name in volumes.chain(templates) {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(spec: Value) -> Value {
        json!({"metadata": {"name": "vm", "generation": 1}, "spec": spec})
    }

    fn vmi(phase: &str) -> Value {
        json!({"metadata": {"name": "vm", "uid": "u1"}, "status": {"phase": phase}})
    }

    #[test]
    fn run_strategies() {
        assert_eq!(run_strategy_of(&vm(json!({"running": true}))), "Always");
        assert_eq!(run_strategy_of(&vm(json!({"running": false}))), "Halted");
        assert_eq!(run_strategy_of(&vm(json!({}))), "Halted");
        assert_eq!(
            run_strategy_of(&vm(json!({"runStrategy": "Manual"}))),
            "Manual"
        );
    }

    #[test]
    fn decisions_follow_kubevirt() {
        let always = vm(json!({"runStrategy": "Always"}));
        assert_eq!(decide(&always, None, false), Decision::CreateInstance);
        assert_eq!(decide(&always, None, true), Decision::Nothing);
        assert_eq!(
            decide(&always, Some(&vmi("Running")), false),
            Decision::Nothing
        );
        assert_eq!(
            decide(&always, Some(&vmi("Succeeded")), false),
            Decision::DeleteInstance
        );
        let halted = vm(json!({"runStrategy": "Halted"}));
        assert_eq!(
            decide(&halted, Some(&vmi("Running")), false),
            Decision::DeleteInstance
        );
        assert_eq!(decide(&halted, None, false), Decision::Nothing);
        let rerun = vm(json!({"runStrategy": "RerunOnFailure"}));
        assert_eq!(
            decide(&rerun, Some(&vmi("Succeeded")), false),
            Decision::Nothing
        );
        assert_eq!(
            decide(&rerun, Some(&vmi("Failed")), false),
            Decision::DeleteInstance
        );
        let manual = vm(json!({"runStrategy": "Manual"}));
        assert_eq!(decide(&manual, None, false), Decision::Nothing);
        assert_eq!(
            decide(&manual, Some(&vmi("Succeeded")), false),
            Decision::Nothing
        );
        let mut start = manual.clone();
        start["status"] = json!({"stateChangeRequests": [{"action": "Start"}]});
        assert_eq!(decide(&start, None, false), Decision::CreateInstance);
        assert_eq!(
            decide(&start, Some(&vmi("Running")), false),
            Decision::PopRequest
        );
        let mut stop = manual.clone();
        stop["status"] = json!({"stateChangeRequests": [{"action": "Stop", "uid": "u1"}]});
        assert_eq!(
            decide(&stop, Some(&vmi("Running")), false),
            Decision::DeleteInstance
        );
        assert_eq!(decide(&stop, None, false), Decision::PopRequest);
        // A receiver of a decentralized migration: its instance is created once and waits.
        let receiver = vm(json!({"runStrategy": "WaitAsReceiver"}));
        assert_eq!(decide(&receiver, None, false), Decision::CreateInstance);
        assert_eq!(decide(&receiver, None, true), Decision::Nothing);
        assert_eq!(
            decide(&receiver, Some(&vmi("WaitingForSync")), false),
            Decision::Nothing
        );
        assert_eq!(
            decide(&receiver, Some(&vmi("Failed")), false),
            Decision::Nothing
        );
    }

    #[test]
    fn a_vmi_that_ended_while_it_migrated_away_is_not_started_again() {
        let always = vm(json!({"runStrategy": "Always"}));
        let mut ended = vmi("Succeeded");
        // The source's QEMU ended while the migration was under way (after the switch-over the
        // guest may run on the destination): nothing until the migration settles.
        ended["status"]["migrationState"] =
            json!({"targetNodeAddress": "https://b:8443", "startTimestamp": "t"});
        assert!(left_by_migration(&ended));
        assert_eq!(decide(&always, Some(&ended), false), Decision::Nothing);
        let rerun = vm(json!({"runStrategy": "RerunOnFailure"}));
        let mut failed = ended.clone();
        failed["status"]["phase"] = json!("Failed");
        assert_eq!(decide(&rerun, Some(&failed), false), Decision::Nothing);
        let mut start = vm(json!({"runStrategy": "Manual"}));
        start["status"] = json!({"stateChangeRequests": [{"action": "Start"}]});
        assert_eq!(decide(&start, Some(&ended), false), Decision::Nothing);
        // Succeeded: still nothing (the migration halts and retires this VM).
        ended["status"]["migrationState"]["completed"] = json!(true);
        assert_eq!(decide(&always, Some(&ended), false), Decision::Nothing);
        // Halting it still deletes the finished VMI.
        let halted = vm(json!({"runStrategy": "Halted"}));
        assert_eq!(
            decide(&halted, Some(&ended), false),
            Decision::DeleteInstance
        );
        // Failed: the run strategy applies again (the guest did not move).
        ended["status"]["migrationState"]["failed"] = json!(true);
        assert!(!left_by_migration(&ended));
        assert_eq!(
            decide(&always, Some(&ended), false),
            Decision::DeleteInstance
        );
        // A receiver's state (written on the destination) never holds a VM back.
        let mut received = vmi("Failed");
        received["status"]["migrationState"] = json!({"targetNode": "b", "completed": true});
        assert!(!left_by_migration(&received));
        assert_eq!(
            decide(&always, Some(&received), false),
            Decision::DeleteInstance
        );
    }

    #[test]
    fn printable_statuses() {
        let v = vm(json!({"runStrategy": "Always"}));
        assert_eq!(printable_status(&v, None, false, None), "Stopped");
        assert_eq!(printable_status(&v, None, true, None), "CrashLoopBackOff");
        assert_eq!(
            printable_status(&v, Some(&vmi("Scheduled")), false, None),
            "Starting"
        );
        assert_eq!(
            printable_status(&v, Some(&vmi("Running")), false, None),
            "Running"
        );
        let mut stopping = vmi("Running");
        stopping["metadata"]["deletionTimestamp"] = json!("now");
        assert_eq!(
            printable_status(&v, Some(&stopping), false, None),
            "Stopping"
        );
        // KubeVirt: a VMI that has ended is Stopped while its deletion waits (here for the
        // after-stop record, issue 16's stop -> durable).
        let mut ended = vmi("Succeeded");
        ended["metadata"]["deletionTimestamp"] = json!("now");
        assert_eq!(printable_status(&v, Some(&ended), false, None), "Stopped");
        let status = vm_status(&v, Some(&vmi("Running")), false, None, "t");
        assert_eq!(status["ready"], true);
        assert_eq!(status["conditions"][0]["status"], "True");
    }
}
