//! The snapshot and restore reconcilers as plain functions: given a snapshot or restore and a
//! world, the actions they return (tables). No store, no engine.

use ferrovirt_controllers::action::Action;
use ferrovirt_controllers::jobs::{JobOutcome, RestoreSummary, SnapshotSummary};
use ferrovirt_controllers::restore_reconciler::{
    CREATED_BY_ANNOTATION, RestoreWorld, new_vm_from_snapshot, reconcile_restore,
    restore_claim_name,
};
use ferrovirt_controllers::snapshot_reconciler::{
    DEADLINE_EXCEEDED, SNAPSHOT_FINALIZER, SnapshotWorld, reconcile_snapshot,
};
use ferrovirt_controllers::world::{GuestReport, RunOutcome, RunPhase, RunView};
use serde_json::{Value, json};

const NOW: i64 = 1_800_000_000;

fn describe(action: &Action) -> String {
    match action {
        Action::Create { resource, object } => {
            format!("create {} {}", resource.plural, object["metadata"]["name"])
        }
        Action::CreateAndRecord {
            resource, reason, ..
        } => format!("create {} +event {reason}", resource.plural),
        Action::Update { resource, object } => format!(
            "update {} finalizers={} owners={}",
            resource.plural,
            object["metadata"]["finalizers"],
            object["metadata"]["ownerReferences"]
                .as_array()
                .map_or(0, Vec::len)
        ),
        Action::UpdateStatus { resource, object } => format!(
            "{} status phase={} ready={} complete={}",
            resource.plural,
            object["status"]["phase"],
            object["status"]["readyToUse"],
            object["status"]["complete"]
        ),
        Action::Event { reason, .. } => format!("event {reason}"),
        Action::Delete { resource, name, .. } => format!("delete {} {name}", resource.plural),
        Action::Requeue { after, .. } => format!("requeue {}s", after.as_secs()),
        Action::TakeSnapshot {
            content,
            online,
            freeze,
            ..
        } => format!("take {content} online={online} freeze={freeze}"),
        Action::RestoreSnapshot {
            content, policy, ..
        } => format!(
            "restore {content} tpm={} efi={}",
            policy.copy_tpm, policy.copy_efi
        ),
        Action::DeleteSnapshotData { content } => format!("delete data {content}"),
        Action::ForgetJob { .. } => "forget job".into(),
        Action::StartImport { job, .. } => format!("start import {}", job.name),
        Action::ForgetImport { .. } => "forget import".into(),
        other => format!("{other:?}"),
    }
}

fn describe_all(actions: &[Action]) -> Vec<String> {
    actions.iter().map(describe).collect()
}

fn vm(strategy: &str) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "vm", "namespace": "d", "uid": "vm-uid"},
        "spec": {"runStrategy": strategy, "template": {"metadata": {"labels": {"app": "x", "team/a": "1"}},
            "spec": {"domain": {
            "firmware": {"uuid": "11111111-1111-4111-8111-111111111111", "serial": "s-old",
                "bootloader": {"efi": {"persistent": true}}},
            "devices": {"tpm": {"persistent": true},
                "interfaces": [{"name": "default", "masquerade": {}, "macAddress": "52:54:00:00:00:01"},
                    {"name": "second", "masquerade": {}}]}}}}}})
}

fn snapshot(phase: Option<&str>, finalizer: bool, extra: Value) -> Value {
    let mut s = json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
        "metadata": {"name": "s", "namespace": "d", "uid": "snap-uid",
            "creationTimestamp": ferrovirt_store::format_rfc3339(NOW - 10)},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}}});
    if finalizer {
        s["metadata"]["finalizers"] = json!([SNAPSHOT_FINALIZER]);
    }
    if let Some(phase) = phase {
        s["status"] = json!({"phase": phase});
    }
    if let (Some(target), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            target.insert(k.clone(), v.clone());
        }
    }
    s
}

fn running() -> RunView {
    RunView {
        vmi_uid: "vmi".into(),
        phase: RunPhase::Running {
            adopted: false,
            reported: true,
            restored: None,
            guest: None,
            trust: Default::default(),
        },
        stopping: false,
    }
}

fn ended() -> RunView {
    RunView {
        vmi_uid: "vmi".into(),
        phase: RunPhase::Ended(RunOutcome::succeeded("done")),
        stopping: false,
    }
}

fn summary(online: bool) -> SnapshotSummary {
    SnapshotSummary {
        size_bytes: 546_816,
        duration_ms: 40,
        pause_ms: online.then_some(12),
        online,
        included: vec![],
        excluded: vec![("boot".into(), "hostDisk".into())],
        created_unix: NOW,
        has_tpm: true,
        has_vars: true,
        frozen_ms: None,
    }
}

fn with_agent() -> RunView {
    let mut run = running();
    if let RunPhase::Running { guest, .. } = &mut run.phase {
        *guest = Some(std::sync::Arc::new(GuestReport::default()));
    }
    run
}

/// A snapshot in progress whose freeze failed `ago` seconds before NOW.
fn quiesce_failed_status(ago: i64) -> Value {
    json!({"status": {"phase": "InProgress", "readyToUse": false,
        "indications": ["GuestAgent", "Online", "QuiesceFailed"],
        "error": {"time": ferrovirt_store::format_rfc3339(NOW - ago), "message": "Failed freezing vm"}}})
}

#[test]
fn snapshot_table() {
    let the_vm = vm("Manual");
    let ok = JobOutcome::Snapshot(Ok(summary(false)));
    let ok_online = JobOutcome::Snapshot(Ok(summary(true)));
    let failed = JobOutcome::Snapshot(Err("failed to take the snapshot: not enough space".into()));
    let quiesce = JobOutcome::QuiesceFailed(
        "failed freezing the guest's file systems through the guest agent: fsfreeze".into(),
    );
    let agent_up = with_agent();
    let sized = json!({"metadata": {"name": "s", "namespace": "d", "uid": "snap-uid",
        "finalizers": [SNAPSHOT_FINALIZER],
        "annotations": {"snapshot.ferrovirt.io/size-bytes": "546816"}}});
    let deleting = json!({"metadata": {"name": "s", "namespace": "d", "uid": "snap-uid",
        "finalizers": [SNAPSHOT_FINALIZER], "deletionTimestamp": "2027-01-01T00:00:00Z"}});
    let retained_deleting = json!({"metadata": {"name": "s", "namespace": "d", "uid": "snap-uid",
        "finalizers": [SNAPSHOT_FINALIZER], "deletionTimestamp": "2027-01-01T00:00:00Z"},
        "spec": {"deletionPolicy": "Retain", "source": {"kind": "VirtualMachine", "name": "vm"}}});
    let old = json!({"metadata": {"name": "s", "namespace": "d", "uid": "snap-uid",
        "finalizers": [SNAPSHOT_FINALIZER], "creationTimestamp": ferrovirt_store::format_rfc3339(NOW - 301)}});
    let (run_up, run_over) = (running(), ended());
    let starting = RunView {
        phase: RunPhase::Starting,
        ..running()
    };
    type Row<'a> = (
        &'a str,
        Value,
        Option<&'a Value>,
        Option<&'a RunView>,
        bool,
        Option<&'a JobOutcome>,
        Vec<&'a str>,
    );
    let table: Vec<Row> = vec![
        (
            "new: finalizer + VM as owner",
            snapshot(None, false, json!({})),
            Some(&the_vm),
            None,
            false,
            None,
            vec![
                "update virtualmachinesnapshots finalizers=[\"snapshot.kubevirt.io/vmsnapshot-protection\"] owners=1",
            ],
        ),
        (
            "then InProgress",
            snapshot(None, true, json!({})),
            Some(&the_vm),
            None,
            false,
            None,
            vec!["virtualmachinesnapshots status phase=\"InProgress\" ready=false complete=null"],
        ),
        (
            "stopped VM: offline",
            snapshot(Some("InProgress"), true, json!({})),
            Some(&the_vm),
            Some(&run_over),
            false,
            None,
            vec!["take vmsnapshot-content-snap-uid online=false freeze=false"],
        ),
        (
            "never started: offline",
            snapshot(Some("InProgress"), true, json!({})),
            Some(&the_vm),
            None,
            false,
            None,
            vec!["take vmsnapshot-content-snap-uid online=false freeze=false"],
        ),
        (
            "running VM: online",
            snapshot(Some("InProgress"), true, json!({})),
            Some(&the_vm),
            Some(&run_up),
            false,
            None,
            vec!["take vmsnapshot-content-snap-uid online=true freeze=false"],
        ),
        (
            "running VM with its guest agent: online, frozen",
            snapshot(Some("InProgress"), true, json!({})),
            Some(&the_vm),
            Some(&agent_up),
            false,
            None,
            vec!["take vmsnapshot-content-snap-uid online=true freeze=true"],
        ),
        (
            "freeze failed: in error state, tried again (KubeVirt's QuiesceFailed)",
            snapshot(Some("InProgress"), true, json!({})),
            Some(&the_vm),
            Some(&agent_up),
            false,
            Some(&quiesce),
            vec![
                "virtualmachinesnapshots status phase=\"InProgress\" ready=false complete=null",
                "event VirtualMachineSnapshotQuiesceFailed",
                "forget job",
                "requeue 5s",
            ],
        ),
        (
            "freeze failed 2 s ago: wait",
            snapshot(Some("InProgress"), true, quiesce_failed_status(2)),
            Some(&the_vm),
            Some(&agent_up),
            false,
            None,
            vec!["requeue 3s"],
        ),
        (
            "freeze failed 6 s ago: try again",
            snapshot(Some("InProgress"), true, quiesce_failed_status(6)),
            Some(&the_vm),
            Some(&agent_up),
            false,
            None,
            vec!["take vmsnapshot-content-snap-uid online=true freeze=true"],
        ),
        (
            "starting VM: wait",
            snapshot(Some("InProgress"), true, json!({})),
            Some(&the_vm),
            Some(&starting),
            false,
            None,
            vec!["requeue 1s"],
        ),
        (
            "no VM: failed",
            snapshot(Some("InProgress"), true, json!({})),
            None,
            None,
            false,
            None,
            vec![
                "virtualmachinesnapshots status phase=\"Failed\" ready=false complete=null",
                "event VirtualMachineSnapshotFailed",
            ],
        ),
        (
            "taken: annotations first",
            snapshot(Some("InProgress"), true, json!({})),
            Some(&the_vm),
            None,
            false,
            Some(&ok),
            vec![
                "update virtualmachinesnapshots finalizers=[\"snapshot.kubevirt.io/vmsnapshot-protection\"] owners=0",
            ],
        ),
        (
            "then content, status, Event",
            snapshot(Some("InProgress"), true, sized.clone()),
            Some(&the_vm),
            None,
            false,
            Some(&ok),
            vec![
                "create virtualmachinesnapshotcontents \"vmsnapshot-content-snap-uid\"",
                "virtualmachinesnapshots status phase=\"Succeeded\" ready=true complete=null",
                "event SuccessfulVirtualMachineSnapshotCreate",
                "forget job",
            ],
        ),
        (
            "content exists: not created twice",
            snapshot(Some("InProgress"), true, sized.clone()),
            Some(&the_vm),
            None,
            true,
            Some(&ok_online),
            vec![
                "virtualmachinesnapshots status phase=\"Succeeded\" ready=true complete=null",
                "event SuccessfulVirtualMachineSnapshotCreate",
                "forget job",
            ],
        ),
        (
            "job failed",
            snapshot(Some("InProgress"), true, json!({})),
            Some(&the_vm),
            None,
            false,
            Some(&failed),
            vec![
                "virtualmachinesnapshots status phase=\"Failed\" ready=false complete=null",
                "event VirtualMachineSnapshotFailed",
                "forget job",
            ],
        ),
        (
            "deadline passed",
            snapshot(Some("InProgress"), true, old),
            Some(&the_vm),
            None,
            false,
            None,
            vec![
                "virtualmachinesnapshots status phase=\"Failed\" ready=false complete=null",
                "event VirtualMachineSnapshotFailed",
            ],
        ),
        (
            "done: nothing",
            snapshot(Some("Succeeded"), true, json!({})),
            Some(&the_vm),
            None,
            true,
            None,
            vec![],
        ),
        (
            "deleted: data, then finalizer",
            snapshot(Some("Succeeded"), true, deleting),
            Some(&the_vm),
            None,
            true,
            None,
            vec![
                "delete data vmsnapshot-content-snap-uid",
                "update virtualmachinesnapshots finalizers=[] owners=0",
            ],
        ),
        (
            "deleted with Retain: data kept",
            snapshot(Some("Succeeded"), true, retained_deleting),
            Some(&the_vm),
            None,
            true,
            None,
            vec!["update virtualmachinesnapshots finalizers=[] owners=0"],
        ),
    ];
    for (what, object, vm, run, content_exists, job, expected) in table {
        let world = SnapshotWorld {
            vm,
            run,
            content_exists,
            job,
            now_unix: NOW,
        };
        assert_eq!(
            describe_all(&reconcile_snapshot(&object, &world)),
            expected,
            "{what}"
        );
    }
}

#[test]
fn snapshot_status_is_kubevirts() {
    let the_vm = vm("Manual");
    let sized = json!({"metadata": {"name": "s", "namespace": "d", "uid": "snap-uid",
        "finalizers": [SNAPSHOT_FINALIZER],
        "annotations": {"snapshot.ferrovirt.io/size-bytes": "546816"}}});
    let job = JobOutcome::Snapshot(Ok(summary(true)));
    let world = SnapshotWorld {
        vm: Some(&the_vm),
        run: None,
        content_exists: false,
        job: Some(&job),
        now_unix: NOW,
    };
    let actions = reconcile_snapshot(&snapshot(Some("InProgress"), true, sized), &world);
    let Action::UpdateStatus { object, .. } = &actions[1] else {
        panic!("{actions:?}")
    };
    let status = &object["status"];
    assert_eq!(status["indications"], json!(["Online", "NoGuestAgent"]));
    assert_eq!(
        status["snapshotVolumes"]["excludedVolumes"],
        json!(["boot"])
    );
    assert_eq!(
        status["virtualMachineSnapshotContentName"],
        "vmsnapshot-content-snap-uid"
    );
    assert_eq!(status["creationTime"], ferrovirt_store::format_rfc3339(NOW));
    let types: Vec<(&str, &str)> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(types, [("Progressing", "False"), ("Ready", "True")]);
    let Action::Create {
        object: content, ..
    } = &actions[0]
    else {
        panic!()
    };
    assert_eq!(
        content["metadata"]["ownerReferences"][0]["kind"],
        "VirtualMachineSnapshot"
    );
    assert_eq!(
        content["spec"]["source"]["virtualMachine"]["spec"]["template"]["spec"]["domain"]["firmware"]
            ["uuid"],
        "11111111-1111-4111-8111-111111111111"
    );
    let Action::Event { message, .. } = &actions[2] else {
        panic!()
    };
    assert!(
        message.contains("online") && message.contains("paused 12 ms"),
        "{message}"
    );
    assert!(
        message.contains("volume boot excluded: hostDisk"),
        "{message}"
    );
    assert!(
        message.contains("no guest agent: crash-consistent"),
        "{message}"
    );
    // The deadline message is KubeVirt's.
    assert_eq!(DEADLINE_EXCEEDED, "snapshot deadline exceeded");
}

#[test]
fn frozen_snapshot_indications_are_kubevirts() {
    let the_vm = vm("Manual");
    let frozen = SnapshotSummary {
        frozen_ms: Some(42),
        ..summary(true)
    };
    let job = JobOutcome::Snapshot(Ok(frozen));
    let world = SnapshotWorld {
        vm: Some(&the_vm),
        run: None,
        content_exists: true,
        job: Some(&job),
        now_unix: NOW,
    };
    // The annotations first: the frozen time is one of them.
    let actions = reconcile_snapshot(&snapshot(Some("InProgress"), true, json!({})), &world);
    let Action::Update { object, .. } = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(
        object["metadata"]["annotations"]["snapshot.ferrovirt.io/frozen-ms"],
        "42"
    );
    let annotations = json!({"snapshot.ferrovirt.io/size-bytes": "546816",
        "snapshot.ferrovirt.io/frozen-ms": "42"});
    let mut sized = snapshot(Some("InProgress"), true, json!({}));
    sized["metadata"]["annotations"] = annotations.clone();
    let actions = reconcile_snapshot(&sized, &world);
    let Action::UpdateStatus { object, .. } = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(
        object["status"]["indications"],
        json!(["Online", "GuestAgent"])
    );
    let Action::Event { message, .. } = &actions[1] else {
        panic!("{actions:?}")
    };
    assert!(
        message.contains("file systems frozen 42 ms through the guest agent"),
        "{message}"
    );
    // A freeze that failed before and succeeded on a later try: QuiesceFailed stays, the error
    // goes (KubeVirt keeps the indication).
    let mut retried = snapshot(Some("InProgress"), true, quiesce_failed_status(6));
    retried["metadata"]["annotations"] = annotations;
    let actions = reconcile_snapshot(&retried, &world);
    let Action::UpdateStatus { object, .. } = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(
        object["status"]["indications"],
        json!(["Online", "GuestAgent", "QuiesceFailed"])
    );
    assert_eq!(object["status"]["phase"], "Succeeded");
    assert!(object["status"].get("error").is_none());
}

#[test]
fn failed_freeze_keeps_the_snapshot_in_progress_with_the_error() {
    let the_vm = vm("Manual");
    let job = JobOutcome::QuiesceFailed("failed freezing the guest's file systems".into());
    let run = with_agent();
    let world = SnapshotWorld {
        vm: Some(&the_vm),
        run: Some(&run),
        content_exists: false,
        job: Some(&job),
        now_unix: NOW,
    };
    let actions = reconcile_snapshot(&snapshot(Some("InProgress"), true, json!({})), &world);
    let Action::UpdateStatus { object, .. } = &actions[0] else {
        panic!("{actions:?}")
    };
    let status = &object["status"];
    assert_eq!(
        status["indications"],
        json!(["GuestAgent", "Online", "QuiesceFailed"])
    );
    assert_eq!(
        status["error"]["message"],
        "failed freezing the guest's file systems"
    );
    assert_eq!(status["conditions"][0]["reason"], "In error state");
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["readyToUse"], false);
    // Past the deadline the snapshot fails as any other.
    let mut late = snapshot(Some("InProgress"), true, quiesce_failed_status(6));
    late["metadata"]["creationTimestamp"] = json!(ferrovirt_store::format_rfc3339(NOW - 301));
    let world = SnapshotWorld { job: None, ..world };
    let actions = reconcile_snapshot(&late, &world);
    assert_eq!(
        describe_all(&actions),
        [
            "virtualmachinesnapshots status phase=\"Failed\" ready=false complete=null",
            "event VirtualMachineSnapshotFailed"
        ]
    );
}

fn ready_snapshot() -> Value {
    json!({"metadata": {"name": "s", "namespace": "d", "uid": "snap-uid"},
        "status": {"readyToUse": true, "sourceUID": "vm-uid",
            "virtualMachineSnapshotContentName": "vmsnapshot-content-snap-uid"}})
}

fn content() -> Value {
    json!({"metadata": {"name": "vmsnapshot-content-snap-uid", "namespace": "d"},
        "spec": {"source": {"virtualMachine": vm("Always")}}})
}

fn restore(target: &str, annotations: Value) -> Value {
    json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
        "metadata": {"name": "r", "namespace": "d", "uid": "restore-uid", "annotations": annotations},
        "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": target},
            "virtualMachineSnapshotName": "s"}})
}

#[test]
fn restore_table() {
    let (snap, cont) = (ready_snapshot(), content());
    let not_ready = json!({"metadata": {"name": "s"}, "status": {"readyToUse": false}});
    let halted = vm("Halted");
    let manual = vm("Manual");
    let always = vm("Always");
    let mut running_true = vm("Halted");
    running_true["spec"] = json!({"running": true});
    let mut other = vm("Halted");
    other["metadata"]["uid"] = json!("other-uid");
    let mut created = vm("Halted");
    created["metadata"]["uid"] = json!("new-uid");
    created["metadata"]["name"] = json!("new");
    created["metadata"]["annotations"] = json!({CREATED_BY_ANNOTATION: "restore-uid"});
    let done = JobOutcome::Restore(Ok(RestoreSummary {
        imported_generation: Some(4),
        pre_restore_generation: Some(5),
        disks: vec![],
    }));
    let broken = JobOutcome::Restore(Err(
        "failed to restore the snapshot: snapshot x is damaged".into()
    ));
    let (run_up, run_over) = (running(), ended());
    let fresh = json!({"clone.ferrovirt.io/tpm": "fresh", "clone.ferrovirt.io/efi": "reset"});
    type Row<'a> = (
        &'a str,
        Value,
        Option<&'a Value>,
        Option<&'a Value>,
        Option<&'a RunView>,
        Option<&'a JobOutcome>,
        Vec<&'a str>,
    );
    let table: Vec<Row> = vec![
        (
            "snapshot not ready: wait",
            restore("vm", json!({})),
            Some(&not_ready),
            Some(&halted),
            None,
            None,
            vec![
                "virtualmachinerestores status phase=null ready=null complete=false",
                "requeue 2s",
            ],
        ),
        (
            "same VM, Halted: restore",
            restore("vm", json!({})),
            Some(&snap),
            Some(&halted),
            None,
            None,
            vec!["restore vmsnapshot-content-snap-uid tpm=true efi=true"],
        ),
        (
            "same VM, Manual and stopped: restore",
            restore("vm", json!({})),
            Some(&snap),
            Some(&manual),
            Some(&run_over),
            None,
            vec!["restore vmsnapshot-content-snap-uid tpm=true efi=true"],
        ),
        (
            "same VM, Manual, running: wait",
            restore("vm", json!({})),
            Some(&snap),
            Some(&manual),
            Some(&run_up),
            None,
            vec![
                "virtualmachinerestores status phase=null ready=null complete=false",
                "requeue 1s",
            ],
        ),
        (
            "same VM, Always: KubeVirt's refusal",
            restore("vm", json!({})),
            Some(&snap),
            Some(&always),
            None,
            None,
            vec![
                "virtualmachinerestores status phase=null ready=null complete=false",
                "event VirtualMachineRestoreError",
            ],
        ),
        (
            "running: true: KubeVirt's refusal",
            restore("vm", json!({})),
            Some(&snap),
            Some(&running_true),
            None,
            None,
            vec![
                "virtualmachinerestores status phase=null ready=null complete=false",
                "event VirtualMachineRestoreError",
            ],
        ),
        (
            "another existing VM: refused",
            restore("vm", json!({})),
            Some(&snap),
            Some(&other),
            None,
            None,
            vec![
                "virtualmachinerestores status phase=null ready=null complete=false",
                "event VirtualMachineRestoreError",
            ],
        ),
        (
            "new VM: created",
            restore("new", json!({})),
            Some(&snap),
            None,
            None,
            None,
            vec!["create virtualmachines +event VirtualMachineCreated"],
        ),
        (
            "new VM created by us: restore with the policy",
            restore("new", fresh.clone()),
            Some(&snap),
            Some(&created),
            None,
            None,
            vec!["restore vmsnapshot-content-snap-uid tpm=false efi=false"],
        ),
        (
            "done: VM updated, complete, Event",
            restore("vm", json!({})),
            Some(&snap),
            Some(&halted),
            None,
            Some(&done),
            vec![
                "update virtualmachines finalizers=null owners=0",
                "virtualmachinerestores status phase=null ready=null complete=true",
                "event VirtualMachineRestoreComplete",
                "forget job",
            ],
        ),
        (
            "job failed",
            restore("vm", json!({})),
            Some(&snap),
            Some(&halted),
            None,
            Some(&broken),
            vec![
                "virtualmachinerestores status phase=null ready=null complete=false",
                "event VirtualMachineRestoreError",
                "forget job",
            ],
        ),
    ];
    for (what, object, snapshot, target, run, job, expected) in table {
        let world = RestoreWorld {
            snapshot,
            content: Some(&cont),
            target,
            run,
            job,
            claims: &[],
            now_unix: NOW,
        };
        assert_eq!(
            describe_all(&reconcile_restore(&object, &world)),
            expected,
            "{what}"
        );
    }
    // A new VM from a snapshot of a VM with PVC disks gets new PVCs (KubeVirt's restore PVCs).
    let mut with_pvc = content();
    with_pvc["spec"]["source"]["virtualMachine"]["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]);
    let source_pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "d", "uid": "data-uid"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}},
            "storageClassName": "local-path", "volumeMode": "Filesystem", "volumeName": "pvc-data-uid"},
        "status": {"phase": "Bound"}});
    let claims = [source_pvc.clone()];
    let world = RestoreWorld {
        snapshot: Some(&snap),
        content: Some(&with_pvc),
        target: None,
        run: None,
        job: None,
        claims: &claims,
        now_unix: NOW,
    };
    let actions = reconcile_restore(&restore("new", json!({})), &world);
    assert_eq!(
        describe_all(&actions),
        ["create virtualmachines +event VirtualMachineCreated"]
    );
    let Action::CreateAndRecord { object: new_vm, .. } = &actions[0] else {
        panic!()
    };
    assert_eq!(
        new_vm["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "restore-restore-uid-data"
    );
    assert_eq!(
        restore_claim_name("restore-uid", "data"),
        "restore-restore-uid-data"
    );
    // The new VM exists: its PVC is created (the source's size, class, modes; owned by the VM).
    let mut new_vm = new_vm.clone();
    new_vm["metadata"]["uid"] = json!("new-uid");
    let world = RestoreWorld {
        target: Some(&new_vm),
        ..world
    };
    let actions = reconcile_restore(&restore("new", json!({})), &world);
    assert_eq!(
        describe_all(&actions),
        [
            "create persistentvolumeclaims \"restore-restore-uid-data\"",
            "virtualmachinerestores status phase=null ready=null complete=false",
            "requeue 1s"
        ]
    );
    let Action::Create { object: pvc, .. } = &actions[0] else {
        panic!()
    };
    assert_eq!(
        pvc["spec"],
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}},
            "storageClassName": "local-path", "volumeMode": "Filesystem"})
    );
    assert_eq!(
        pvc["metadata"]["ownerReferences"],
        json!([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "new",
            "uid": "new-uid", "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(
        pvc["metadata"]["labels"]["restore.kubevirt.io/source-vm-name"],
        "vm"
    );
    assert_eq!(
        pvc["metadata"]["annotations"]["restore.kubevirt.io/name"],
        "r"
    );
    let Action::UpdateStatus { object, .. } = &actions[1] else {
        panic!()
    };
    assert_eq!(
        object["status"]["conditions"][0]["message"],
        "waiting for PersistentVolumeClaim restore-restore-uid-data to be Bound"
    );
    // Created, not bound yet: wait (no second create).
    let mut new_pvc = pvc.clone();
    new_pvc["status"] = json!({"phase": "Pending"});
    let claims = [source_pvc.clone(), new_pvc.clone()];
    let world = RestoreWorld {
        claims: &claims,
        ..world
    };
    assert_eq!(
        describe_all(&reconcile_restore(&restore("new", json!({})), &world)),
        [
            "virtualmachinerestores status phase=null ready=null complete=false",
            "requeue 1s"
        ]
    );
    // Bound: the snapshot is restored into it (the disk image copied into the new PVC).
    new_pvc["status"] = json!({"phase": "Bound"});
    let claims = [source_pvc.clone(), new_pvc];
    let world = RestoreWorld {
        claims: &claims,
        ..world
    };
    assert_eq!(
        describe_all(&reconcile_restore(&restore("new", json!({})), &world)),
        ["restore vmsnapshot-content-snap-uid tpm=true efi=true"]
    );
    // Done: status.restores names the new PVC.
    let restored = JobOutcome::Restore(Ok(RestoreSummary {
        imported_generation: None,
        pre_restore_generation: None,
        disks: vec!["data".into()],
    }));
    let world = RestoreWorld {
        job: Some(&restored),
        ..world
    };
    let actions = reconcile_restore(&restore("new", json!({})), &world);
    let status = actions
        .iter()
        .find_map(|a| match a {
            Action::UpdateStatus { object, .. } => Some(object["status"].clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        status["restores"][0]["persistentVolumeClaim"], "restore-restore-uid-data",
        "{status}"
    );
    // The source PVC is gone before the new one was made: nothing to copy its size from.
    let world = RestoreWorld {
        claims: &[],
        job: None,
        ..world
    };
    let actions = reconcile_restore(&restore("new", json!({})), &world);
    assert_eq!(
        describe_all(&actions),
        [
            "virtualmachinerestores status phase=null ready=null complete=false",
            "event VirtualMachineRestoreError"
        ]
    );

    // KubeVirt's messages.
    let world = RestoreWorld {
        snapshot: Some(&snap),
        content: Some(&cont),
        target: Some(&running_true),
        run: None,
        job: None,
        claims: &[],
        now_unix: NOW,
    };
    let actions = reconcile_restore(&restore("vm", json!({})), &world);
    let Action::UpdateStatus { object, .. } = &actions[0] else {
        panic!()
    };
    assert_eq!(
        object["status"]["conditions"][0]["message"],
        "VirtualMachine \"vm\" is not stopped"
    );
    let world = RestoreWorld {
        target: Some(&always),
        ..world
    };
    let actions = reconcile_restore(&restore("vm", json!({})), &world);
    let Action::UpdateStatus { object, .. } = &actions[0] else {
        panic!()
    };
    assert_eq!(
        object["status"]["conditions"][0]["message"],
        "VirtualMachine \"vm\" run strategy has to be Halted"
    );
    // A status already saying so is not written again.
    let actions = reconcile_restore(object, &world);
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn a_restored_or_cloned_vm_gets_a_new_identity() {
    let source = vm("Always");
    let plain = new_vm_from_snapshot(&restore("new", json!({})), &source);
    let firmware = &plain["spec"]["template"]["spec"]["domain"]["firmware"];
    assert_eq!(plain["metadata"]["name"], "new");
    assert_ne!(firmware["uuid"], "11111111-1111-4111-8111-111111111111");
    assert_ne!(firmware["serial"], "s-old");
    assert_eq!(plain["spec"]["runStrategy"], "Halted");
    assert_eq!(
        plain["metadata"]["annotations"][CREATED_BY_ANNOTATION],
        "restore-uid"
    );
    let interfaces = &plain["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"];
    let mac = interfaces[0]["macAddress"].as_str().unwrap();
    assert_ne!(mac, "52:54:00:00:00:01");
    assert!(mac.starts_with("02:") && mac.len() == 17, "{mac}");
    assert!(
        interfaces[1].get("macAddress").is_none(),
        "no MAC is invented where none was set"
    );

    let clone = new_vm_from_snapshot(
        &restore(
            "c",
            json!({"clone.ferrovirt.io/new-mac-addresses": "{\"default\": \"02:aa:bb:cc:dd:ee\"}",
                "clone.ferrovirt.io/new-smbios-serial": "serial-7",
                "clone.ferrovirt.io/template-label-filters": "[\"*\", \"!team/*\"]"}),
        ),
        &source,
    );
    assert_eq!(
        clone["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"],
        "02:aa:bb:cc:dd:ee"
    );
    assert_eq!(
        clone["spec"]["template"]["spec"]["domain"]["firmware"]["serial"],
        "serial-7"
    );
    assert_eq!(
        clone["spec"]["template"]["metadata"]["labels"],
        json!({"app": "x"})
    );
}

fn clone(phase: Option<&str>, source_kind: &str) -> Value {
    let mut c = json!({"apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone",
        "metadata": {"name": "c", "namespace": "d", "uid": "clone-uid",
            "annotations": {"clone.ferrovirt.io/tpm": "fresh"}},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": source_kind,
                "name": if source_kind == "VirtualMachine" { "vm" } else { "s" }},
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "new"},
            "newMacAddresses": {"default": "02:00:00:00:00:09"}, "labelFilters": ["*"]}});
    if let Some(phase) = phase {
        c["status"] = json!({"phase": phase});
    }
    c
}

#[test]
fn clone_table() {
    use ferrovirt_controllers::clone_reconciler::{CloneWorld, reconcile_clone};
    let ready = json!({"metadata": {"name": "tmp-snapshot-clone-uid"}, "status": {"readyToUse": true, "phase": "Succeeded"}});
    let taking =
        json!({"metadata": {"name": "tmp-snapshot-clone-uid"}, "status": {"phase": "InProgress"}});
    let broken = json!({"metadata": {"name": "tmp-snapshot-clone-uid"},
        "status": {"phase": "Failed", "error": {"message": "not enough space"}}});
    let complete =
        json!({"metadata": {"name": "tmp-restore-clone-uid"}, "status": {"complete": true}});
    let refused = json!({"metadata": {"name": "tmp-restore-clone-uid"}, "status": {"complete": false,
        "conditions": [{"type": "Failure", "status": "True", "message": "damaged"}]}});
    type Row<'a> = (
        &'a str,
        Value,
        Option<&'a Value>,
        Option<&'a Value>,
        bool,
        Vec<&'a str>,
    );
    let table: Vec<Row> = vec![
        (
            "new, from a VM: its snapshot",
            clone(None, "VirtualMachine"),
            None,
            None,
            false,
            vec![
                "create virtualmachinesnapshots \"tmp-snapshot-clone-uid\"",
                "virtualmachineclones status phase=\"SnapshotInProgress\" ready=null complete=null",
            ],
        ),
        (
            "new, from a snapshot: none created",
            clone(None, "VirtualMachineSnapshot"),
            None,
            None,
            false,
            vec![
                "virtualmachineclones status phase=\"SnapshotInProgress\" ready=null complete=null",
            ],
        ),
        (
            "target exists: failed",
            clone(None, "VirtualMachine"),
            None,
            None,
            true,
            vec![
                "virtualmachineclones status phase=\"Failed\" ready=null complete=null",
                "event CloneFailed",
            ],
        ),
        (
            "snapshot in progress: wait",
            clone(Some("SnapshotInProgress"), "VirtualMachine"),
            Some(&taking),
            None,
            false,
            vec![],
        ),
        (
            "snapshot failed",
            clone(Some("SnapshotInProgress"), "VirtualMachine"),
            Some(&broken),
            None,
            false,
            vec![
                "virtualmachineclones status phase=\"Failed\" ready=null complete=null",
                "event CloneFailed",
            ],
        ),
        (
            "snapshot ready: the restore",
            clone(Some("SnapshotInProgress"), "VirtualMachine"),
            Some(&ready),
            None,
            false,
            vec![
                "create virtualmachinerestores \"tmp-restore-clone-uid\"",
                "virtualmachineclones status phase=\"RestoreInProgress\" ready=null complete=null",
            ],
        ),
        (
            "restore complete: clean up, Succeeded",
            clone(Some("RestoreInProgress"), "VirtualMachine"),
            Some(&ready),
            Some(&complete),
            true,
            vec![
                "delete virtualmachinerestores tmp-restore-clone-uid",
                "delete virtualmachinesnapshots tmp-snapshot-clone-uid",
                "virtualmachineclones status phase=\"Succeeded\" ready=null complete=null",
                "event CloneSucceeded",
            ],
        ),
        (
            "restore failed",
            clone(Some("RestoreInProgress"), "VirtualMachine"),
            Some(&ready),
            Some(&refused),
            true,
            vec![
                "virtualmachineclones status phase=\"Failed\" ready=null complete=null",
                "event CloneFailed",
            ],
        ),
        (
            "done: nothing",
            clone(Some("Succeeded"), "VirtualMachine"),
            None,
            None,
            true,
            vec![],
        ),
    ];
    for (what, object, snapshot, restore, target_exists, expected) in table {
        let world = CloneWorld {
            snapshot,
            restore,
            target_exists,
            now_unix: NOW,
        };
        assert_eq!(
            describe_all(&reconcile_clone(&object, &world)),
            expected,
            "{what}"
        );
    }
    // The restore carries the policy and the clone's settings.
    let world = CloneWorld {
        snapshot: Some(&ready),
        restore: None,
        target_exists: false,
        now_unix: NOW,
    };
    let actions = reconcile_clone(&clone(Some("SnapshotInProgress"), "VirtualMachine"), &world);
    let Action::Create { object, .. } = &actions[0] else {
        panic!()
    };
    let annotations = &object["metadata"]["annotations"];
    assert_eq!(annotations["clone.ferrovirt.io/tpm"], "fresh");
    assert_eq!(
        annotations["clone.ferrovirt.io/new-mac-addresses"],
        "{\"default\":\"02:00:00:00:00:09\"}"
    );
    assert_eq!(annotations["clone.ferrovirt.io/label-filters"], "[\"*\"]");
    assert_eq!(object["spec"]["target"]["name"], "new");
    let policy = ferrovirt_controllers::restore_reconciler::state_policy(object);
    assert!(!policy.copy_tpm && policy.copy_efi);
}
