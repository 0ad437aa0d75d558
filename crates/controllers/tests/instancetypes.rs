//! The VM reconciler with instancetypes and preferences, as KubeVirt's VM controller: the
//! referenced object is copied into a ControllerRevision owned by the VM and recorded in the VM's
//! status; the VMI is built from that copy (instancetype applied, preference filling only what the
//! VM leaves unset), so a later change of the cluster preference does not change the VM; a
//! missing object is reported in a `Failure` condition and no VMI is created.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::sync::Arc;

use ferrovirt_controllers::action::Action;
use ferrovirt_controllers::vm_reconciler::reconcile_vm;
use ferrovirt_controllers::world::{VmReferences, VmWorld};
use serde_json::{Value, json};

fn vm(extra_spec: Value, status: Value) -> Value {
    let mut spec = json!({
        "runStrategy": "Always",
        "template": {"spec": {"domain": {
            "devices": {"disks": [{"name": "root"}], "interfaces": [{"name": "default", "masquerade": {}}]},
            "firmware": {"uuid": "6a1b2c3d-0000-4000-8000-000000000001"},
        }, "volumes": [{"name": "root", "emptyDisk": {"capacity": "1Gi"}}],
            "networks": [{"name": "default", "pod": {}}]}},
    });
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    // Memory comes from the instancetype when there is one (the VM may not set it then).
    if extra_spec.get("instancetype").is_none() {
        spec["template"]["spec"]["domain"]["memory"] = json!({"guest": "1Gi"});
    }
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "win", "namespace": "d", "uid": "vm-uid", "generation": 1},
        "spec": spec,
        "status": status,
    })
}

fn windows_11(generation: i64, tpm_persistent: bool) -> Value {
    json!({
        "apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachineClusterPreference",
        "metadata": {"name": "windows.11", "uid": "pref-uid", "generation": generation,
            "labels": {"instancetype.kubevirt.io/vendor": "kubevirt.io"}},
        "spec": {
            "cpu": {"preferredCPUTopology": "cores"},
            "devices": {"preferredDiskBus": "sata", "preferredInterfaceModel": "e1000e",
                "preferredTPM": {"persistent": tpm_persistent}},
            "features": {"preferredSmm": {}, "preferredHyperv": {"relaxed": {}, "vapic": {}}},
            "firmware": {"preferredEfi": {"persistent": true, "secureBoot": true}},
        },
    })
}

fn u1_large() -> Value {
    json!({
        "apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachineClusterInstancetype",
        "metadata": {"name": "u1.large", "uid": "it-uid", "generation": 1},
        "spec": {"cpu": {"guest": 2}, "memory": {"guest": "8Gi"}},
    })
}

fn reconcile(
    vm: &Value,
    instancetype: Option<&Value>,
    preference: Option<&Value>,
    revisions: &[Arc<Value>],
) -> Vec<Action> {
    let classes = vec![Arc::new(
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local-path",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path"}),
    )];
    let world = VmWorld {
        run: None,
        backend_pvcs: &[],
        kubevirt: None,
        storage_classes: &classes,
        now_unix: 1_800_000_000,
        node_name: "node1",
        data_volumes: &[],
        references: VmReferences {
            instancetype,
            preference,
            revisions,
        },
    };
    reconcile_vm(vm, None, &world)
}

/// The first reconcile stores the revisions and the status references; returns them.
fn record(
    vm: &Value,
    instancetype: Option<&Value>,
    preference: Option<&Value>,
) -> (Vec<Value>, Value) {
    let actions = reconcile(vm, instancetype, preference, &[]);
    let mut revisions = Vec::new();
    let mut updated = None;
    for action in actions {
        match action {
            Action::Create { resource, object } => {
                assert_eq!(resource.plural, "controllerrevisions");
                revisions.push(object);
            }
            Action::UpdateStatus { object, .. } => updated = Some(object),
            other => panic!("unexpected action {other:?}"),
        }
    }
    (
        revisions,
        updated.expect("the status references are recorded"),
    )
}

fn created_vmi(actions: &[Action]) -> Value {
    actions
        .iter()
        .find_map(|a| match a {
            Action::CreateAndRecord {
                resource, object, ..
            } if resource.plural == "virtualmachineinstances" => Some(object.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a VMI is created, but the actions are: {actions:#?}"))
}

#[test]
fn revision_is_stored_under_kubevirts_name_and_owned_by_the_vm() {
    let vm = vm(
        json!({"preference": {"kind": "VirtualMachineClusterPreference", "name": "windows.11"}}),
        json!({}),
    );
    let (revisions, updated) = record(&vm, None, Some(&windows_11(1, true)));
    assert_eq!(revisions.len(), 1);
    let revision = &revisions[0];
    assert_eq!(
        revision["metadata"]["name"],
        "win-windows.11-v1beta1-pref-uid-1"
    );
    assert_eq!(revision["metadata"]["namespace"], "d");
    assert_eq!(revision["metadata"]["ownerReferences"][0]["uid"], "vm-uid");
    assert_eq!(
        revision["metadata"]["ownerReferences"][0]["controller"],
        true
    );
    assert_eq!(
        revision["metadata"]["labels"]["instancetype.kubevirt.io/object-kind"],
        "VirtualMachineClusterPreference"
    );
    assert_eq!(revision["data"]["kind"], "VirtualMachineClusterPreference");
    assert!(revision["data"]["metadata"].get("labels").is_none());
    assert_eq!(
        updated["status"]["preferenceRef"],
        json!({"kind": "VirtualMachineClusterPreference", "name": "windows.11",
            "controllerRevisionRef": {"name": "win-windows.11-v1beta1-pref-uid-1"}})
    );
    // The VM's spec keeps the reference only.
    assert_eq!(updated["spec"], vm["spec"]);
}

#[test]
fn preference_fills_only_what_the_vm_leaves_unset() {
    let mut vm = vm(json!({"preference": {"name": "windows.11"}}), json!({}));
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["model"] = json!("virtio");
    let (revisions, updated) = record(&vm, None, Some(&windows_11(1, true)));
    let revisions: Vec<Arc<Value>> = revisions.into_iter().map(Arc::new).collect();
    let actions = reconcile(&updated, None, Some(&windows_11(1, true)), &revisions);
    let vmi = created_vmi(&actions);
    let domain = &vmi["spec"]["domain"];
    assert_eq!(
        domain["firmware"]["bootloader"]["efi"],
        json!({"persistent": true, "secureBoot": true})
    );
    assert_eq!(domain["devices"]["tpm"], json!({"persistent": true}));
    assert_eq!(domain["features"]["smm"]["enabled"], true);
    assert_eq!(domain["features"]["hyperv"]["relaxed"]["enabled"], true);
    assert_eq!(domain["features"]["hyperv"]["vapic"]["enabled"], true);
    assert_eq!(domain["devices"]["disks"][0]["disk"]["bus"], "sata");
    // Set by the VM: kept.
    assert_eq!(domain["devices"]["interfaces"][0]["model"], "virtio");
    assert_eq!(
        domain["firmware"]["uuid"],
        "6a1b2c3d-0000-4000-8000-000000000001"
    );
    // The persistent TPM and EFI need the backend-storage PVC first.
    assert!(actions.iter().any(|a| matches!(a,
        Action::CreateAndRecord { resource, .. } if resource.plural == "persistentvolumeclaims")));
}

#[test]
fn instancetype_sets_the_topology_by_the_preferred_cpu_topology() {
    let vm = vm(
        json!({"instancetype": {"name": "u1.large"}, "preference": {"name": "windows.11"}}),
        json!({}),
    );
    let (revisions, updated) = record(&vm, Some(&u1_large()), Some(&windows_11(1, true)));
    assert_eq!(revisions.len(), 2);
    assert_eq!(
        updated["status"]["instancetypeRef"]["controllerRevisionRef"]["name"],
        "win-u1.large-v1beta1-it-uid-1"
    );
    let revisions: Vec<Arc<Value>> = revisions.into_iter().map(Arc::new).collect();
    let vmi = created_vmi(&reconcile(
        &updated,
        Some(&u1_large()),
        Some(&windows_11(1, true)),
        &revisions,
    ));
    let domain = &vmi["spec"]["domain"];
    // windows.11 prefers cores: 2 vCPUs are 1 socket x 2 cores.
    assert_eq!(domain["cpu"]["sockets"], 1);
    assert_eq!(domain["cpu"]["cores"], 2);
    assert_eq!(domain["cpu"]["threads"], 1);
    assert_eq!(domain["memory"]["guest"], "8Gi");
}

#[test]
fn the_stored_revision_is_used_after_the_cluster_preference_changes() {
    let vm = vm(json!({"preference": {"name": "windows.11"}}), json!({}));
    let (revisions, updated) = record(&vm, None, Some(&windows_11(1, true)));
    let revisions: Vec<Arc<Value>> = revisions.into_iter().map(Arc::new).collect();
    // An admin edits the cluster preference: generation 2, TPM no longer persistent.
    let edited = windows_11(2, false);
    let actions = reconcile(&updated, None, Some(&edited), &revisions);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Create { .. })),
        "no new revision for an existing VM"
    );
    let vmi = created_vmi(&actions);
    assert_eq!(
        vmi["spec"]["domain"]["devices"]["tpm"],
        json!({"persistent": true})
    );
    // A new VM referring to it gets the edited copy.
    let mut other = vm.clone();
    other["metadata"]["name"] = json!("other");
    let (fresh, _) = record(&other, None, Some(&edited));
    assert_eq!(
        fresh[0]["metadata"]["name"],
        "other-windows.11-v1beta1-pref-uid-2"
    );
    assert_eq!(
        fresh[0]["data"]["spec"]["devices"]["preferredTPM"]["persistent"],
        false
    );
}

#[test]
fn a_missing_preference_is_reported_and_no_vmi_is_started() {
    let vm = vm(json!({"preference": {"name": "windows.12"}}), json!({}));
    let actions = reconcile(&vm, None, None, &[]);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::CreateAndRecord { .. } | Action::Create { .. }))
    );
    let status = actions
        .iter()
        .find_map(|a| match a {
            Action::UpdateStatus { object, .. } => Some(object["status"].clone()),
            _ => None,
        })
        .expect("the failure is written to the status");
    let failure = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failure")
        .expect("a Failure condition")
        .clone();
    assert_eq!(failure["reason"], "FailedFindPreference");
    assert_eq!(
        failure["message"],
        "virtualmachineclusterpreferences.instancetype.kubevirt.io \"windows.12\" not found"
    );
    assert_eq!(status["printableStatus"], "Stopped");
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Event { reason, .. } if reason == "FailedFindPreference"))
    );
    // Written once: the same failure again changes nothing.
    let mut again = vm.clone();
    again["status"] = status;
    assert!(reconcile(&again, None, None, &[]).is_empty());
}

#[test]
fn a_conflict_with_the_instancetype_is_not_started() {
    let mut vm = vm(json!({"instancetype": {"name": "u1.large"}}), json!({}));
    vm["spec"]["template"]["spec"]["domain"]["cpu"] = json!({"sockets": 4});
    let (revisions, updated) = record(&vm, Some(&u1_large()), None);
    let revisions: Vec<Arc<Value>> = revisions.into_iter().map(Arc::new).collect();
    let actions = reconcile(&updated, Some(&u1_large()), None, &revisions);
    assert!(actions.iter().any(|a| matches!(a, Action::Event { reason, message, .. }
        if reason == "FailedCreate"
            && message == "VMI conflicts with instancetype spec in fields: [spec.template.spec.domain.cpu.sockets]")));
}
