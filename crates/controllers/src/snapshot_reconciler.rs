//! The VirtualMachineSnapshot reconciler (KubeVirt's snapshot controller), a pure function of
//! (snapshot, world) returning [`Action`]s:
//!
//! - a new snapshot gets KubeVirt's finalizer `snapshot.kubevirt.io/vmsnapshot-protection` and,
//!   unless `deletionPolicy: Retain`, its VM as owner (ferrovirt's retention: the GC deletes the
//!   snapshots of a deleted VM), then `phase: InProgress`;
//! - in progress: a running VM is snapshotted online, a stopped one offline
//!   ([`Action::TakeSnapshot`]); a VM starting or stopping is waited for; past `failureDeadline`
//!   (default 5 m) or without its VM the snapshot fails;
//! - online with the guest agent connected, the guest's file systems are frozen around the copy
//!   (indications `Online` + `GuestAgent`; without an agent `Online` + `NoGuestAgent`,
//!   crash-consistent). A failed freeze is KubeVirt's: the snapshot stays in progress "In error
//!   state" with `status.error` and the indication `QuiesceFailed` (kept once set), and is tried
//!   again every [`QUIESCE_RETRY`] until its `failureDeadline`;
//! - the job's outcome becomes ferrovirt's annotations (size, duration, pause), then the
//!   VirtualMachineSnapshotContent, KubeVirt's status (`phase`, `readyToUse`, `creationTime`,
//!   `indications`, `snapshotVolumes`, conditions) and an Event;
//! - a snapshot being deleted: its data is deleted (not with `Retain`), then the finalizer
//!   removed; the content goes with it through its owner reference (kept with `Retain`).

use std::time::Duration;

use ferrovirt_api::snapshot::{
    DEFAULT_FAILURE_DEADLINE_SECONDS, DURATION_ANNOTATION, FROZEN_ANNOTATION, PAUSE_ANNOTATION,
    SIZE_ANNOTATION, indication, parse_go_duration,
};
use ferrovirt_resources::{VM_SNAPSHOT_CONTENTS, VM_SNAPSHOTS};
use serde_json::{Value, json};

use crate::action::{Action, Key};
use crate::events::EventType;
use crate::jobs::{JobOutcome, SnapshotSummary};
use crate::world::{RunPhase, RunView};

/// KubeVirt's finalizer on a VirtualMachineSnapshot.
pub const SNAPSHOT_FINALIZER: &str = "snapshot.kubevirt.io/vmsnapshot-protection";
/// How long a snapshot whose freeze failed waits before it is tried again.
pub const QUIESCE_RETRY: Duration = Duration::from_secs(5);
/// KubeVirt's message for a snapshot past its deadline.
pub const DEADLINE_EXCEEDED: &str = "snapshot deadline exceeded";

/// The name of a snapshot's content (and of its data directory), as KubeVirt names it.
pub fn content_name(snapshot_uid: &str) -> String {
    format!("vmsnapshot-content-{snapshot_uid}")
}

/// What a snapshot's reconcile reads besides the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotWorld<'a> {
    /// The source VirtualMachine, if it exists.
    pub vm: Option<&'a Value>,
    /// The engine's run of that VM.
    pub run: Option<&'a RunView>,
    /// The VirtualMachineSnapshotContent exists.
    pub content_exists: bool,
    /// The outcome of this snapshot's job, when one ran.
    pub job: Option<&'a JobOutcome>,
    pub now_unix: i64,
}

fn text<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn condition(type_: &str, status: bool, reason: &str, now: &str) -> Value {
    json!({"type": type_, "status": if status { "True" } else { "False" },
        "lastTransitionTime": now, "reason": reason})
}

fn conditions(progressing: (bool, &str), ready: (bool, &str), now: &str) -> Value {
    json!([
        condition("Progressing", progressing.0, progressing.1, now),
        condition("Ready", ready.0, ready.1, now),
    ])
}

fn with_status(snapshot: &Value, status: Value) -> Action {
    let mut object = snapshot.clone();
    object["status"] = status;
    Action::UpdateStatus {
        resource: VM_SNAPSHOTS,
        object,
    }
}

fn failed(snapshot: &Value, message: &str, now: &str) -> Vec<Action> {
    let mut status = snapshot.get("status").cloned().unwrap_or_else(|| json!({}));
    status["phase"] = json!("Failed");
    status["readyToUse"] = json!(false);
    status["error"] = json!({"time": now, "message": message});
    let mut conds = conditions((false, "Failed"), (false, "Not ready"), now);
    if let Some(list) = conds.as_array_mut() {
        let mut failure = condition("Failure", true, "Failed", now);
        failure["message"] = json!(message);
        list.push(failure);
    }
    status["conditions"] = conds;
    vec![
        with_status(snapshot, status),
        Action::event(
            snapshot,
            EventType::Warning,
            "VirtualMachineSnapshotFailed",
            message,
        ),
    ]
}

fn retained(snapshot: &Value) -> bool {
    text(snapshot, "/spec/deletionPolicy") == "Retain"
}

fn has_finalizer(snapshot: &Value) -> bool {
    snapshot
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|v| v == SNAPSHOT_FINALIZER))
}

/// The deadline of a snapshot in seconds after its creation.
fn deadline_seconds(snapshot: &Value) -> u64 {
    snapshot
        .pointer("/spec/failureDeadline")
        .and_then(Value::as_str)
        .and_then(parse_go_duration)
        .map(|d| d.as_secs())
        .unwrap_or(DEFAULT_FAILURE_DEADLINE_SECONDS)
}

/// Reconciles one VirtualMachineSnapshot.
pub fn reconcile_snapshot(snapshot: &Value, world: &SnapshotWorld<'_>) -> Vec<Action> {
    let now = ferrovirt_store::format_rfc3339(world.now_unix);
    let ns = text(snapshot, "/metadata/namespace");
    let name = text(snapshot, "/metadata/name");
    let uid = text(snapshot, "/metadata/uid");
    let key = Key::snapshot(ns, name);
    let content = content_name(uid);
    let phase = text(snapshot, "/status/phase");

    if snapshot.pointer("/metadata/deletionTimestamp").is_some() {
        if !has_finalizer(snapshot) {
            return Vec::new();
        }
        let mut actions = Vec::new();
        if !retained(snapshot) {
            actions.push(Action::DeleteSnapshotData {
                content: content.clone(),
            });
        }
        let mut object = snapshot.clone();
        if let Some(list) = object
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            list.retain(|f| f != SNAPSHOT_FINALIZER);
        }
        actions.push(Action::Update {
            resource: VM_SNAPSHOTS,
            object,
        });
        return actions;
    }

    if !has_finalizer(snapshot) {
        let mut object = snapshot.clone();
        let finalizers = object["metadata"]
            .as_object_mut()
            .map(|m| m.entry("finalizers").or_insert_with(|| json!([])));
        if let Some(Value::Array(list)) = finalizers {
            list.push(json!(SNAPSHOT_FINALIZER));
        }
        if let Some(vm) = world.vm
            && !retained(snapshot)
        {
            let owner = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "name": text(vm, "/metadata/name"), "uid": text(vm, "/metadata/uid"),
                "blockOwnerDeletion": false});
            let owners = object["metadata"]
                .as_object_mut()
                .map(|m| m.entry("ownerReferences").or_insert_with(|| json!([])));
            if let Some(Value::Array(list)) = owners {
                list.push(owner);
            }
        }
        return vec![Action::Update {
            resource: VM_SNAPSHOTS,
            object,
        }];
    }

    match phase {
        "Succeeded" | "Failed" => {
            return match world.job {
                Some(_) => vec![Action::ForgetJob { key }],
                None => Vec::new(),
            };
        }
        "InProgress" => {}
        _ => {
            let status = json!({
                "phase": "InProgress",
                "readyToUse": false,
                "sourceUID": world.vm.map(|vm| text(vm, "/metadata/uid")).unwrap_or(""),
                "conditions": conditions((true, "Source not locked"), (false, "Not ready"), &now),
            });
            return vec![with_status(snapshot, status)];
        }
    }

    match world.job {
        Some(JobOutcome::Snapshot(Ok(summary))) => succeeded(snapshot, summary, world, &now),
        Some(JobOutcome::Snapshot(Err(message))) => {
            let mut actions = failed(snapshot, message, &now);
            actions.push(Action::ForgetJob { key });
            actions
        }
        Some(JobOutcome::QuiesceFailed(message)) => quiesce_failed(snapshot, message, key, &now),
        Some(JobOutcome::Restore(_)) => vec![Action::ForgetJob { key }],
        None => in_progress(snapshot, world, key, content, &now),
    }
}

fn in_progress(
    snapshot: &Value,
    world: &SnapshotWorld<'_>,
    key: Key,
    content: String,
    now: &str,
) -> Vec<Action> {
    let created =
        ferrovirt_resources::time::parse_rfc3339(text(snapshot, "/metadata/creationTimestamp"));
    let deadline = i64::try_from(deadline_seconds(snapshot)).unwrap_or(i64::MAX);
    if let Some(created) = created
        && world.now_unix > created.saturating_add(deadline)
    {
        return failed(snapshot, DEADLINE_EXCEEDED, now);
    }
    let vm_name = text(snapshot, "/spec/source/name");
    let Some(vm) = world.vm else {
        return failed(
            snapshot,
            &format!("VirtualMachine {vm_name:?} does not exist"),
            now,
        );
    };
    // After a failed freeze: wait out the retry interval (an update of the status reconciles
    // again at once).
    if let Some(failed_at) = snapshot
        .pointer("/status/error/time")
        .and_then(Value::as_str)
        .and_then(ferrovirt_resources::time::parse_rfc3339)
        && has_indication(snapshot, indication::QUIESCE_FAILED)
    {
        let retry = i64::try_from(QUIESCE_RETRY.as_secs()).unwrap_or(i64::MAX);
        let wait = failed_at
            .saturating_add(retry)
            .saturating_sub(world.now_unix);
        if wait > 0 {
            return vec![Action::Requeue {
                key,
                after: Duration::from_secs(wait.unsigned_abs()),
            }];
        }
    }
    match world.run.map(|r| (&r.phase, r.stopping)) {
        None | Some((RunPhase::Ended(_), _)) => vec![Action::TakeSnapshot {
            key,
            vm: vm.clone(),
            content,
            online: false,
            freeze: false,
        }],
        Some((RunPhase::Running { guest, .. }, false)) => vec![Action::TakeSnapshot {
            key,
            vm: vm.clone(),
            content,
            online: true,
            freeze: guest.is_some(),
        }],
        // Starting or stopping: take it once the VM is up or down.
        Some(_) => vec![Action::Requeue {
            key,
            after: Duration::from_secs(1),
        }],
    }
}

fn has_indication(snapshot: &Value, wanted: &str) -> bool {
    snapshot
        .pointer("/status/indications")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|i| i == wanted))
}

/// The freeze through the guest agent failed: KubeVirt keeps the snapshot in progress "In error
/// state", with the error and the indications `GuestAgent`, `Online`, `QuiesceFailed`, and
/// tries again (until the deadline fails it).
fn quiesce_failed(snapshot: &Value, message: &str, key: Key, now: &str) -> Vec<Action> {
    let mut status = snapshot.get("status").cloned().unwrap_or_else(|| json!({}));
    status["phase"] = json!("InProgress");
    status["readyToUse"] = json!(false);
    status["error"] = json!({"time": now, "message": message});
    status["indications"] = json!([
        indication::GUEST_AGENT,
        indication::ONLINE,
        indication::QUIESCE_FAILED
    ]);
    status["conditions"] = conditions((false, "In error state"), (false, "Not ready"), now);
    vec![
        with_status(snapshot, status),
        Action::event(
            snapshot,
            EventType::Warning,
            "VirtualMachineSnapshotQuiesceFailed",
            &format!(
                "{message}; the snapshot is tried again in {} s until its failureDeadline",
                QUIESCE_RETRY.as_secs()
            ),
        ),
        Action::ForgetJob { key: key.clone() },
        Action::Requeue {
            key,
            after: QUIESCE_RETRY,
        },
    ]
}

fn succeeded(
    snapshot: &Value,
    summary: &SnapshotSummary,
    world: &SnapshotWorld<'_>,
    now: &str,
) -> Vec<Action> {
    let ns = text(snapshot, "/metadata/namespace");
    let name = text(snapshot, "/metadata/name");
    let uid = text(snapshot, "/metadata/uid");
    let content = content_name(uid);
    // First the annotations (a write of the object), then the status (a write of the status).
    if snapshot
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(SIZE_ANNOTATION))
        .is_none()
    {
        let mut object = snapshot.clone();
        let annotations = object["metadata"]
            .as_object_mut()
            .map(|m| m.entry("annotations").or_insert_with(|| json!({})));
        if let Some(Value::Object(map)) = annotations {
            map.insert(
                SIZE_ANNOTATION.into(),
                json!(summary.size_bytes.to_string()),
            );
            map.insert(
                DURATION_ANNOTATION.into(),
                json!(summary.duration_ms.to_string()),
            );
            if let Some(pause) = summary.pause_ms {
                map.insert(PAUSE_ANNOTATION.into(), json!(pause.to_string()));
            }
            if let Some(frozen) = summary.frozen_ms {
                map.insert(FROZEN_ANNOTATION.into(), json!(frozen.to_string()));
            }
        }
        return vec![Action::Update {
            resource: VM_SNAPSHOTS,
            object,
        }];
    }
    let created = ferrovirt_store::format_rfc3339(summary.created_unix);
    let mut actions = Vec::new();
    if !world.content_exists {
        let vm = world.vm.cloned().unwrap_or(Value::Null);
        let mut owners = Vec::new();
        if !retained(snapshot) {
            owners.push(json!({"apiVersion": "snapshot.kubevirt.io/v1beta1",
                "kind": "VirtualMachineSnapshot", "name": name, "uid": uid,
                "controller": true, "blockOwnerDeletion": true}));
        }
        let backups: Vec<Value> = summary
            .included
            .iter()
            .map(|volume| {
                let claim = vm
                    .pointer("/spec/template/spec/volumes")
                    .and_then(Value::as_array)
                    .and_then(|v| v.iter().find(|v| v["name"] == json!(volume)))
                    .and_then(|v| v.pointer("/persistentVolumeClaim/claimName"))
                    .cloned()
                    .unwrap_or(Value::Null);
                json!({"volumeName": volume,
                    "persistentVolumeClaim": {"metadata": {"name": claim, "namespace": ns}},
                    "volumeSnapshotName": format!("vmsnapshot-{uid}-volume-{volume}")})
            })
            .collect();
        actions.push(Action::Create {
            resource: VM_SNAPSHOT_CONTENTS,
            object: json!({
                "apiVersion": "snapshot.kubevirt.io/v1beta1",
                "kind": "VirtualMachineSnapshotContent",
                "metadata": {"name": content, "namespace": ns, "ownerReferences": owners},
                "spec": {
                    "virtualMachineSnapshotName": name,
                    "source": {"virtualMachine": {
                        "metadata": {
                            "name": vm.pointer("/metadata/name"),
                            "namespace": vm.pointer("/metadata/namespace"),
                            "uid": vm.pointer("/metadata/uid"),
                            "labels": vm.pointer("/metadata/labels"),
                            "annotations": vm.pointer("/metadata/annotations"),
                        },
                        "spec": vm.get("spec"),
                    }},
                    "volumeBackups": backups,
                },
                "status": {"creationTime": created, "readyToUse": true},
            }),
        });
    }
    let mut indications = Vec::new();
    let mut source_indications = Vec::new();
    if summary.online {
        indications.push(indication::ONLINE);
        source_indications.push(json!({"indication": indication::ONLINE, "message": format!(
            "the VM was running: its vCPUs were paused for {} ms while the disks, VARS and TPM state were copied",
            summary.pause_ms.unwrap_or(0))}));
        match summary.frozen_ms {
            Some(frozen) => {
                indications.push(indication::GUEST_AGENT);
                source_indications.push(json!({"indication": indication::GUEST_AGENT,
                    "message": format!("the guest agent froze the guest's file systems for {frozen} ms around the copy: the snapshot is file-system consistent")}));
            }
            None => {
                indications.push(indication::NO_GUEST_AGENT);
                source_indications.push(json!({"indication": indication::NO_GUEST_AGENT,
                    "message": "no guest agent: the guest's file systems were not frozen, the snapshot is crash-consistent"}));
            }
        }
        // KubeVirt keeps QuiesceFailed once a freeze failed, also when a later one succeeded.
        if has_indication(snapshot, indication::QUIESCE_FAILED) {
            indications.push(indication::QUIESCE_FAILED);
            source_indications.push(json!({"indication": indication::QUIESCE_FAILED,
                "message": "an earlier freeze through the guest agent failed; the snapshot was taken on a later try"}));
        }
    }
    let mut excluded: Vec<&str> = summary.excluded.iter().map(|(v, _)| v.as_str()).collect();
    excluded.sort_unstable();
    let mut status = snapshot.get("status").cloned().unwrap_or_else(|| json!({}));
    status["phase"] = json!("Succeeded");
    status["readyToUse"] = json!(true);
    if let Some(map) = status.as_object_mut() {
        map.remove("error");
    }
    status["creationTime"] = json!(created);
    status["virtualMachineSnapshotContentName"] = json!(content);
    status["indications"] = json!(indications);
    status["sourceIndications"] = json!(source_indications);
    status["snapshotVolumes"] =
        json!({"includedVolumes": summary.included, "excludedVolumes": excluded});
    status["conditions"] = conditions(
        (false, "Operation complete"),
        (true, "Operation complete"),
        now,
    );
    actions.push(with_status(snapshot, status));
    let state = match (summary.has_tpm, summary.has_vars) {
        (true, true) => "TPM state and UEFI variables",
        (true, false) => "TPM state",
        (false, true) => "UEFI variables",
        (false, false) => "no persistent TPM/EFI state",
    };
    let mut message = format!(
        "Snapshot of VirtualMachine {} taken {} in {} ms ({state}, {} bytes)",
        text(snapshot, "/spec/source/name"),
        if summary.online { "online" } else { "offline" },
        summary.duration_ms,
        summary.size_bytes
    );
    if let Some(pause) = summary.pause_ms {
        message.push_str(&format!("; vCPUs paused {pause} ms"));
    }
    if summary.online {
        match summary.frozen_ms {
            Some(frozen) => message.push_str(&format!(
                "; file systems frozen {frozen} ms through the guest agent"
            )),
            None => message.push_str("; no guest agent: crash-consistent"),
        }
    }
    for (volume, reason) in &summary.excluded {
        message.push_str(&format!("; volume {volume} excluded: {reason}"));
    }
    actions.push(Action::event(
        snapshot,
        EventType::Normal,
        "SuccessfulVirtualMachineSnapshotCreate",
        &message,
    ));
    actions.push(Action::ForgetJob {
        key: Key::snapshot(ns, name),
    });
    actions
}
