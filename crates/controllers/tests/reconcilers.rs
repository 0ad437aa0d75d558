//! The VM and VMI reconcilers as plain functions: given objects and a world, the actions they
//! return (a table per reconciler). No store, no engine, no HTTP.

use std::sync::Arc;

use ferrovirt_controllers::action::{Action, Key};
use ferrovirt_controllers::vm_reconciler::reconcile_vm;
use ferrovirt_controllers::vmi_reconciler::reconcile_vmi;
use ferrovirt_controllers::world::{RunOutcome, RunPhase, RunView, VmWorld};
use serde_json::{Value, json};

const NOW: i64 = 1_800_000_000;

/// One line per action, the part a table can compare.
fn describe(action: &Action) -> String {
    match action {
        Action::Create { resource, object } => {
            format!("create {} {}", resource.plural, object["metadata"]["name"])
        }
        Action::CreateAndRecord {
            resource, reason, ..
        } => format!("create {} +event {reason}", resource.plural),
        Action::Update { resource, object } => format!(
            "update {} finalizers={}",
            resource.plural, object["metadata"]["finalizers"]
        ),
        Action::UpdateStatus { resource, object } => match resource.plural {
            "virtualmachineinstances" => format!("vmi status {}", object["status"]["phase"]),
            _ => format!(
                "vm status {} requests={} failures={}",
                object["status"]["printableStatus"],
                object["status"]["stateChangeRequests"],
                object["status"]["startFailure"]["consecutiveFailCount"]
            ),
        },
        Action::Delete { resource, name, .. } => format!("delete {} {name}", resource.plural),
        Action::Event { reason, .. } => format!("event {reason}"),
        Action::ProvisionVolume { volume } => format!("provision {volume}"),
        Action::DeleteVolume { volume } => format!("delete volume {volume}"),
        Action::RetireVolume { volume, .. } => format!("retire {volume}"),
        Action::StartEngine { adopt, .. } => format!("start engine adopt={adopt}"),
        Action::StopEngine { vmi_uid, .. } => format!("stop engine {vmi_uid}"),
        Action::MarkRunReported { .. } => "mark reported".into(),
        Action::ForgetRun { .. } => "forget run".into(),
        Action::Requeue { key, after } => format!("requeue {key:?} after {}s", after.as_secs()),
        Action::TakeSnapshot {
            content,
            online,
            freeze,
            ..
        } => format!("take snapshot {content} online={online} freeze={freeze}"),
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
    }
}

fn vm(spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "vm", "namespace": "d", "uid": "vm-uid", "generation": 1, "resourceVersion": "5"},
        "spec": spec,
        "status": status,
    })
}

fn template(persistent_tpm: bool) -> Value {
    let devices = if persistent_tpm {
        json!({"tpm": {"persistent": true}})
    } else {
        json!({})
    };
    json!({"spec": {"domain": {"devices": devices, "resources": {"requests": {"memory": "64Mi"}}}}})
}

fn vmi(phase: &str, persistent_tpm: bool) -> Value {
    let devices = if persistent_tpm {
        json!({"tpm": {"persistent": true}})
    } else {
        json!({})
    };
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "vm", "namespace": "d", "uid": "vmi-uid",
            "finalizers": ["foregroundDeleteVirtualMachine"],
            "ownerReferences": [{"kind": "VirtualMachine", "name": "vm", "uid": "vm-uid"}]},
        "spec": {"domain": {"devices": devices}},
        "status": {"phase": phase},
    })
}

fn deleting(mut object: Value) -> Value {
    object["metadata"]["deletionTimestamp"] = json!("2027-01-01T00:00:00Z");
    object
}

fn pvc(bound: bool) -> Value {
    let mut pvc = json!({"metadata": {"name": "persistent-state-for-vm-x1", "namespace": "d", "uid": "p1"},
        "spec": {}, "status": {"phase": "Pending"}});
    if bound {
        pvc["spec"]["volumeName"] = json!("pvc-p1");
        pvc["status"]["phase"] = json!("Bound");
    }
    pvc
}

fn default_class() -> Vec<Arc<Value>> {
    vec![Arc::new(
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local-path",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path"}),
    )]
}

fn run(phase: RunPhase, stopping: bool) -> RunView {
    RunView {
        vmi_uid: "vmi-uid".into(),
        phase,
        stopping,
    }
}

fn running(reported: bool, adopted: bool) -> RunPhase {
    RunPhase::Running {
        adopted,
        reported,
        restored: None,
        guest: None,
        trust: Default::default(),
    }
}

struct World {
    run: Option<RunView>,
    pvcs: Vec<Value>,
    classes: Vec<Arc<Value>>,
}

impl World {
    fn new(run: Option<RunView>, pvcs: Vec<Value>) -> Self {
        Self {
            run,
            pvcs,
            classes: default_class(),
        }
    }

    fn view(&self) -> VmWorld<'_> {
        VmWorld {
            run: self.run.as_ref(),
            backend_pvcs: &self.pvcs,
            kubevirt: None,
            storage_classes: &self.classes,
            now_unix: NOW,
            node_name: "node1",
            data_volumes: &[],
            references: Default::default(),
        }
    }
}

fn vmi_actions(vmi: Option<&Value>, world: &World) -> Vec<String> {
    reconcile_vmi("d", "vm", vmi, &world.view())
        .iter()
        .map(describe)
        .collect()
}

fn vm_actions(vm: &Value, vmi: Option<&Value>, world: &World) -> Vec<String> {
    reconcile_vm(vm, vmi, &world.view())
        .iter()
        .map(describe)
        .collect()
}

#[test]
fn vmi_reconcile_table() {
    let ended_ok = RunPhase::Ended(RunOutcome::succeeded("shut down"));
    let crashed = RunPhase::Ended(RunOutcome::failed("Crashed", "boom".into()));
    let ending_ok = RunPhase::Ending(RunOutcome::succeeded("shut down"));
    type VmiCase = (&'static str, Option<Value>, World, Vec<&'static str>);
    let cases: Vec<VmiCase> = vec![
        ("no VMI, no run", None, World::new(None, vec![]), vec![]),
        (
            "new VMI without backend storage: scheduled and started",
            Some(vmi("Pending", false)),
            World::new(None, vec![]),
            vec!["vmi status \"Scheduled\"", "start engine adopt=false"],
        ),
        (
            "persistent TPM, PVC not bound yet: wait",
            Some(vmi("Pending", true)),
            World::new(None, vec![pvc(false)]),
            vec![],
        ),
        (
            "persistent TPM, PVC missing, VM-owned: wait for the VM's reconcile",
            Some(vmi("Pending", true)),
            World::new(None, vec![]),
            vec![],
        ),
        (
            "persistent TPM, PVC bound: start",
            Some(vmi("Pending", true)),
            World::new(None, vec![pvc(true)]),
            vec!["vmi status \"Scheduled\"", "start engine adopt=false"],
        ),
        (
            "a VMI found Running without a run (server restart): adopt",
            Some(vmi("Running", false)),
            World::new(None, vec![]),
            vec!["start engine adopt=true"],
        ),
        (
            "starting: nothing yet",
            Some(vmi("Scheduled", false)),
            World::new(Some(run(RunPhase::Starting, false)), vec![]),
            vec![],
        ),
        (
            "running, not reported: Running, Started, reported",
            Some(vmi("Scheduled", false)),
            World::new(Some(run(running(false, false), false)), vec![]),
            vec!["vmi status \"Running\"", "event Started", "mark reported"],
        ),
        (
            "adopted, not reported: Adopted event only",
            Some(vmi("Running", false)),
            World::new(Some(run(running(false, true), false)), vec![]),
            vec!["event Adopted", "mark reported"],
        ),
        (
            "running and reported: nothing",
            Some(vmi("Running", false)),
            World::new(Some(run(running(true, false), false)), vec![]),
            vec![],
        ),
        (
            "deleted while running: graceful stop, once",
            Some(deleting(vmi("Running", false))),
            World::new(Some(run(running(true, false), false)), vec![]),
            vec!["stop engine vmi-uid", "event ShuttingDown"],
        ),
        (
            "deleted while stopping: nothing",
            Some(deleting(vmi("Running", false))),
            World::new(Some(run(running(true, false), true)), vec![]),
            vec![],
        ),
        (
            "deleted, no run: release the finalizer",
            Some(deleting(vmi("Succeeded", false))),
            World::new(None, vec![]),
            vec!["update virtualmachineinstances finalizers=[]"],
        ),
        (
            "run ended cleanly: Succeeded, forget, look at the PVCs again",
            Some(vmi("Running", true)),
            World::new(Some(run(ended_ok, false)), vec![pvc(true)]),
            vec![
                "vmi status \"Succeeded\"",
                "event Stopped",
                "forget run",
                "requeue Pvc { namespace: \"d\", name: \"persistent-state-for-vm-x1\" } after 0s",
            ],
        ),
        (
            "stopped, state durable, not yet recorded: Succeeded written, the run kept",
            Some(deleting(vmi("Running", true))),
            World::new(Some(run(ending_ok.clone(), true)), vec![pvc(true)]),
            vec!["vmi status \"Succeeded\"", "event Stopped"],
        ),
        (
            "stopped and written, the state not yet recorded: the VMI keeps its finalizer",
            Some(deleting({
                let mut v = vmi("Succeeded", true);
                v["status"]["reason"] = json!("Stopped");
                v
            })),
            World::new(Some(run(ending_ok.clone(), true)), vec![pvc(true)]),
            vec![],
        ),
        (
            "run crashed: Failed with a Warning",
            Some(vmi("Running", false)),
            World::new(Some(run(crashed.clone(), false)), vec![]),
            vec!["vmi status \"Failed\"", "event Crashed", "forget run"],
        ),
        (
            "run ended while its VMI's phase was patched to Succeeded: the outcome is still written",
            Some(vmi("Succeeded", false)),
            World::new(Some(run(crashed.clone(), false)), vec![]),
            vec!["vmi status \"Failed\"", "event Crashed", "forget run"],
        ),
        (
            "run ended and its outcome written already: forget only",
            Some({
                let mut v = vmi("Failed", false);
                v["status"]["reason"] = json!("Crashed");
                v
            }),
            World::new(Some(run(crashed.clone(), false)), vec![]),
            vec!["forget run"],
        ),
        (
            "run ended, VMI gone: forget",
            None,
            World::new(Some(run(crashed.clone(), false)), vec![]),
            vec!["forget run"],
        ),
        (
            "a new VMI while an older VMI's run is still going: wait",
            Some({
                let mut v = vmi("Pending", false);
                v["metadata"]["uid"] = json!("newer");
                v
            }),
            World::new(Some(run(running(true, false), true)), vec![]),
            vec![],
        ),
        (
            "final VMI without a run: nothing",
            Some(vmi("Failed", false)),
            World::new(None, vec![]),
            vec![],
        ),
    ];
    for (case, vmi, world, expected) in cases {
        assert_eq!(vmi_actions(vmi.as_ref(), &world), expected, "case: {case}");
    }
}

#[test]
fn a_vm_waits_while_a_data_volume_writes_its_backend_storage() {
    // The PVC of a DataVolume (a KubeVirt export's manifests bring a VM's state that way).
    let imported = |phase: Option<&str>| {
        let mut pvc = pvc(true);
        pvc["metadata"]["annotations"] = json!({"cdi.kubevirt.io/createdForDataVolume": "dv-uid"});
        if let Some(phase) = phase {
            pvc["metadata"]["annotations"]["cdi.kubevirt.io/storage.pod.phase"] = json!(phase);
            pvc["metadata"]["annotations"]["cdi.kubevirt.io/storage.condition.running.message"] =
                json!("HTTP 404");
        }
        pvc
    };
    let pending = vmi("Pending", true);
    for phase in [None, Some("Running")] {
        let world = World::new(None, vec![imported(phase)]);
        assert!(vmi_actions(Some(&pending), &world).is_empty(), "{phase:?}");
    }
    let done = World::new(None, vec![imported(Some("Succeeded"))]);
    assert_eq!(
        vmi_actions(Some(&pending), &done),
        ["vmi status \"Scheduled\"", "start engine adopt=false"]
    );
    let failed = World::new(None, vec![imported(Some("Failed"))]);
    let actions = reconcile_vmi("d", "vm", Some(&pending), &failed.view());
    assert_eq!(
        actions.iter().map(describe).collect::<Vec<_>>(),
        ["event FailedCreate", "vmi status \"Failed\""]
    );
    let Action::UpdateStatus { object, .. } = &actions[1] else {
        panic!("expected a status write")
    };
    let message = object["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("HTTP 404") && message.contains("re-create it"),
        "{message}"
    );
}

#[test]
fn standalone_vmi_needing_backend_storage_fails_with_reason() {
    let mut standalone = vmi("Pending", true);
    standalone["metadata"]["ownerReferences"] = json!([]);
    let actions = reconcile_vmi(
        "d",
        "vm",
        Some(&standalone),
        &World::new(None, vec![]).view(),
    );
    assert_eq!(
        actions.iter().map(describe).collect::<Vec<_>>(),
        ["event FailedCreate", "vmi status \"Failed\""]
    );
    let Action::UpdateStatus { object, .. } = &actions[1] else {
        panic!("expected a status write")
    };
    assert!(
        object["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("create it through a VirtualMachine")),
        "{object}"
    );
}

#[test]
fn vm_reconcile_table() {
    let always = json!({"runStrategy": "Always", "template": template(false)});
    let always_tpm = json!({"runStrategy": "Always", "template": template(true)});
    let halted = json!({"runStrategy": "Halted", "template": template(true)});
    let manual = json!({"runStrategy": "Manual", "template": template(false)});
    let retry_later = ferrovirt_store::format_rfc3339(NOW + 40);
    type VmCase = (&'static str, Value, Option<Value>, World, Vec<&'static str>);
    let cases: Vec<VmCase> = vec![
        (
            "Always, no VMI: create it",
            vm(always.clone(), json!({})),
            None,
            World::new(None, vec![]),
            vec!["create virtualmachineinstances +event SuccessfulCreate"],
        ),
        (
            "Always with a persistent TPM, no PVC: the PVC first, then the VMI",
            vm(always_tpm.clone(), json!({})),
            None,
            World::new(None, vec![]),
            vec![
                "create persistentvolumeclaims +event SuccessfulCreate",
                "create virtualmachineinstances +event SuccessfulCreate",
            ],
        ),
        (
            "Always with a persistent TPM and its PVC: only the VMI",
            vm(always_tpm.clone(), json!({})),
            None,
            World::new(None, vec![pvc(false)]),
            vec!["create virtualmachineinstances +event SuccessfulCreate"],
        ),
        (
            "persistence switched off: retire the volume, delete the PVC, create the VMI",
            vm(always.clone(), json!({})),
            None,
            World::new(None, vec![pvc(true)]),
            vec![
                "retire pvc-p1",
                "delete persistentvolumeclaims persistent-state-for-vm-x1",
                "create virtualmachineinstances +event SuccessfulCreate",
            ],
        ),
        (
            "Always, VMI running: the status says Running",
            vm(always.clone(), json!({})),
            Some(vmi("Running", false)),
            World::new(None, vec![]),
            vec!["vm status \"Running\" requests=null failures=null"],
        ),
        (
            "Halted, VMI running: delete it",
            vm(halted.clone(), json!({})),
            Some(vmi("Running", true)),
            World::new(None, vec![pvc(true)]),
            vec![
                "delete virtualmachineinstances vm",
                "event SuccessfulDelete",
            ],
        ),
        (
            "Always, VMI failed: record the failure (back-off), delete the VMI",
            vm(always.clone(), json!({})),
            Some(vmi("Failed", false)),
            World::new(None, vec![]),
            vec![
                "vm status null requests=null failures=1",
                "delete virtualmachineinstances vm",
                "event SuccessfulDelete",
            ],
        ),
        (
            "Always, in back-off, no VMI: wait and come back when it ends",
            vm(
                always.clone(),
                json!({"startFailure": {"consecutiveFailCount": 2, "lastFailedVMIUID": "x", "retryAfterTimestamp": retry_later}}),
            ),
            None,
            World::new(None, vec![]),
            vec![
                "requeue Vm { namespace: \"d\", name: \"vm\" } after 40s",
                "vm status \"CrashLoopBackOff\" requests=null failures=2",
            ],
        ),
        (
            "Manual with a Start request: create the VMI",
            vm(
                manual.clone(),
                json!({"stateChangeRequests": [{"action": "Start"}]}),
            ),
            None,
            World::new(None, vec![]),
            vec!["create virtualmachineinstances +event SuccessfulCreate"],
        ),
        (
            "Manual with a Start request and a running VMI: the request is done",
            vm(
                manual.clone(),
                json!({"stateChangeRequests": [{"action": "Start"}]}),
            ),
            Some(vmi("Running", false)),
            World::new(None, vec![]),
            vec!["vm status null requests=[] failures=null"],
        ),
        (
            "a VMI of an older VM of the same name is not this VM's",
            vm(manual.clone(), json!({})),
            Some({
                let mut v = vmi("Running", false);
                v["metadata"]["ownerReferences"][0]["uid"] = json!("older");
                v
            }),
            World::new(None, vec![]),
            vec!["vm status \"Stopped\" requests=null failures=null"],
        ),
        (
            "being deleted: only the status (Terminating)",
            deleting(vm(always.clone(), json!({}))),
            Some(vmi("Running", false)),
            World::new(None, vec![]),
            vec!["vm status \"Terminating\" requests=null failures=null"],
        ),
    ];
    for (case, vm, vmi, world, expected) in cases {
        assert_eq!(
            vm_actions(&vm, vmi.as_ref(), &world),
            expected,
            "case: {case}"
        );
    }
}

#[test]
fn no_storage_class_is_a_failed_create_in_the_status() {
    let vm = vm(
        json!({"runStrategy": "Always", "template": template(true)}),
        json!({}),
    );
    let mut world = World::new(None, vec![]);
    world.classes.clear();
    let actions = reconcile_vm(&vm, None, &world.view());
    assert_eq!(
        actions.iter().map(describe).collect::<Vec<_>>(),
        [
            "event FailedCreate",
            "vm status \"ErrorPvcNotFound\" requests=null failures=null"
        ]
    );
    let Action::UpdateStatus { object, .. } = &actions[1] else {
        panic!("expected a status write")
    };
    assert_eq!(
        object["status"]["conditions"][1]["message"],
        "no default storage class found"
    );
}

#[test]
fn a_current_status_is_not_written_again() {
    let world = World::new(None, vec![]);
    let stopped = vm(
        json!({"runStrategy": "Halted", "template": template(false)}),
        json!({}),
    );
    let first = reconcile_vm(&stopped, None, &world.view());
    let [Action::UpdateStatus { object, .. }] = first.as_slice() else {
        panic!("expected one status write, got {first:?}")
    };
    assert!(reconcile_vm(object, None, &world.view()).is_empty());
    let _ = Key::vm("d", "vm");
}

/// The guest agent's report reaches the VMI's status as virt-handler writes it; an agent that
/// stops answering takes the condition and the agent's fields away; an unchanged report writes
/// nothing.
#[test]
fn guest_agent_report_in_the_vmi_status() {
    use ferrovirt_vmm::agent::{GuestReport, IpAddress, NetworkInterface, OsInfo};
    let report = GuestReport {
        os: OsInfo {
            id: Some("debian".into()),
            pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
            kernel_release: Some("6.1.0-57-cloud-amd64".into()),
            ..Default::default()
        },
        interfaces: vec![
            NetworkInterface {
                name: "lo".into(),
                hardware_address: None,
                ip_addresses: vec![],
            },
            NetworkInterface {
                name: "eth0".into(),
                hardware_address: Some("52:54:00:12:34:56".into()),
                ip_addresses: vec![
                    IpAddress {
                        family: "ipv6".into(),
                        address: "fe80::1".into(),
                        prefix: 64,
                    },
                    IpAddress {
                        family: "ipv4".into(),
                        address: "192.0.2.10".into(),
                        prefix: 24,
                    },
                ],
            },
        ],
    };
    let with_guest = |guest: Option<Arc<GuestReport>>| {
        World::new(
            Some(run(
                RunPhase::Running {
                    adopted: false,
                    reported: true,
                    restored: None,
                    guest,
                    trust: Default::default(),
                },
                false,
            )),
            vec![],
        )
    };
    let world = with_guest(Some(Arc::new(report)));
    let actions = reconcile_vmi("d", "vm", Some(&vmi("Running", false)), &world.view());
    let [Action::UpdateStatus { object, .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    let status = &object["status"];
    assert_eq!(status["conditions"][0]["type"], "AgentConnected");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["guestOSInfo"]["id"], "debian");
    assert_eq!(
        status["guestOSInfo"]["kernelRelease"],
        "6.1.0-57-cloud-amd64"
    );
    assert_eq!(
        status["interfaces"],
        json!([{"name": "default", "interfaceName": "eth0", "mac": "52:54:00:12:34:56",
                "ipAddress": "192.0.2.10", "ipAddresses": ["fe80::1", "192.0.2.10"],
                "infoSource": "guest-agent"}])
    );
    // Written already: nothing to do.
    assert!(reconcile_vmi("d", "vm", Some(object), &world.view()).is_empty());
    // The agent went away.
    let gone = with_guest(None);
    let actions = reconcile_vmi("d", "vm", Some(object), &gone.view());
    let [Action::UpdateStatus { object, .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(object["status"]["conditions"], json!([]));
    assert!(object["status"].get("guestOSInfo").is_none());
    assert!(object["status"].get("interfaces").is_none());
}

/// A standalone VMI with fields ferrovirt does not act on says so in a Warning Event when it
/// starts; a VM's instance leaves that to the VM (its condition and Event).
#[test]
fn ignored_fields_of_a_standalone_vmi_are_an_event() {
    let mut standalone = vmi("Pending", false);
    standalone["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    standalone["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "node01"});
    let world = World::new(None, vec![]);
    let actions = reconcile_vmi("d", "vm", Some(&standalone), &world.view());
    assert_eq!(
        actions.iter().map(describe).collect::<Vec<_>>(),
        [
            "vmi status \"Scheduled\"",
            "event IgnoredFields",
            "start engine adopt=false"
        ]
    );
    let Action::Event { message, .. } = &actions[1] else {
        panic!()
    };
    assert!(message.contains("spec.nodeSelector"), "{message}");
    let mut owned = vmi("Pending", false);
    owned["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "node01"});
    assert_eq!(
        vmi_actions(Some(&owned), &world),
        ["vmi status \"Scheduled\"", "start engine adopt=false"]
    );
}

#[test]
fn a_start_that_changes_pcrs_warns_and_the_vm_status_shows_it_and_the_ek() {
    use ferrovirt_controllers::world::TrustNotes;
    use ferrovirt_vmm::ek::EkFingerprints;
    let trust = TrustNotes {
        ek: Some(EkFingerprints {
            rsa: Some("ab".repeat(32)),
            ecc: Some("cd".repeat(32)),
        }),
        pcrs_will_change: Some(
            "Since the last stop: firmware code (...). Suspend BitLocker".into(),
        ),
    };
    let phase = RunPhase::Running {
        adopted: false,
        reported: false,
        restored: None,
        guest: None,
        trust,
    };
    let world = World::new(Some(run(phase, false)), vec![pvc(true)]);
    let actions = reconcile_vmi("d", "vm", Some(&vmi("Scheduled", true)), &world.view());
    let lines: Vec<String> = actions.iter().map(describe).collect();
    assert_eq!(
        lines,
        [
            "vmi status \"Running\"",
            "event Started",
            "event PCRsWillChange",
            "mark reported"
        ]
    );
    let Action::UpdateStatus {
        object: running, ..
    } = &actions[0]
    else {
        panic!("{lines:?}")
    };
    assert_eq!(
        running["status"]["tpm"]["ekCertificateSHA256"]["rsa"],
        json!("ab".repeat(32))
    );
    let Action::Event { event_type, .. } = &actions[2] else {
        panic!("{lines:?}")
    };
    assert_eq!(format!("{event_type:?}"), "Warning");

    // The VM mirrors the condition while the VMI lives, and keeps the fingerprints after it.
    let status = ferrovirt_controllers::vm::vm_status(
        &vm(template(true), json!({})),
        Some(running),
        false,
        None,
        "2027-01-01T00:00:00Z",
    );
    let types: Vec<&Value> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["type"])
        .collect();
    assert_eq!(types, [&json!("Ready"), &json!("PCRsWillChange")]);
    let stopped = ferrovirt_controllers::vm::vm_status(
        &vm(template(true), status.clone()),
        None,
        false,
        None,
        "2027-01-01T00:00:00Z",
    );
    assert_eq!(stopped["tpm"], status["tpm"]);
    assert_eq!(stopped["conditions"].as_array().unwrap().len(), 1);
}

#[test]
fn a_migration_receiver_waits_for_the_migration_executor() {
    let mut receiver = vmi("Pending", false);
    receiver["metadata"]["annotations"] = json!({"kubevirt.io/create-migration-target": "true"});
    let world = World::new(None, vec![]);
    assert_eq!(
        vmi_actions(Some(&receiver), &world),
        vec!["vmi status \"WaitingForSync\""]
    );
    // The executor may have started the receiver before: it waits all the same.
    let starting = World::new(Some(run(RunPhase::Starting, false)), vec![]);
    assert_eq!(
        vmi_actions(Some(&receiver), &starting),
        vec!["vmi status \"WaitingForSync\""]
    );
    receiver["status"]["phase"] = json!("WaitingForSync");
    assert!(vmi_actions(Some(&receiver), &world).is_empty());
    assert!(vmi_actions(Some(&receiver), &starting).is_empty());
    // Once it ran (the migration arrived), a restarted manager adopts it as any run.
    receiver["status"]["phase"] = json!("Running");
    assert_eq!(
        vmi_actions(Some(&receiver), &world),
        vec!["start engine adopt=true"]
    );
    // The VM waiting as a receiver creates its instance marked as a migration target.
    let waiting = vm(
        json!({"runStrategy": "WaitAsReceiver", "template": template(false)}),
        json!({}),
    );
    let actions = reconcile_vm(&waiting, None, &world.view());
    let created = actions
        .iter()
        .find_map(|a| match a {
            Action::CreateAndRecord { object, .. } => Some(object.clone()),
            _ => None,
        })
        .expect("the receiving VMI is created");
    assert_eq!(
        created["metadata"]["annotations"]["kubevirt.io/create-migration-target"],
        "true"
    );
}
