//! CDI's DataVolume controller and the VM's side of DataVolumes as plain functions: given a
//! DataVolume, its PVC and the importer's run, the actions (a table); a VM's
//! `dataVolumeTemplates` created and owned, and the VM waiting (`Provisioning`,
//! `DataVolumeError`) until its DataVolumes have succeeded.

// Test helpers outside #[test] fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use ferrovirt_controllers::action::Action;
use ferrovirt_controllers::datavolume_reconciler::{
    DataVolumeWorld, ImportView, JobSource, reconcile_data_volume,
};
use ferrovirt_controllers::vm_reconciler::reconcile_vm;
use ferrovirt_controllers::world::VmWorld;
use serde_json::{Value, json};

const NOW: i64 = 1_800_000_000;

fn dv(source: Value, status: Option<Value>) -> Value {
    let mut dv = json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "disk", "namespace": "d", "uid": "dv-uid"},
        "spec": {"source": source, "storage": {"resources": {"requests": {"storage": "1Gi"}}}},
    });
    if let Some(status) = status {
        dv["status"] = status;
    }
    dv
}

fn http() -> Value {
    json!({"http": {"url": "http://127.0.0.1:1/disk.qcow2.gz"}})
}

fn pvc(bound: bool, pod_phase: Option<&str>, message: Option<&str>) -> Value {
    let mut annotations = json!({"cdi.kubevirt.io/createdForDataVolume": "dv-uid"});
    if let Some(phase) = pod_phase {
        annotations["cdi.kubevirt.io/storage.pod.phase"] = json!(phase);
    }
    if let Some(message) = message {
        annotations["cdi.kubevirt.io/storage.condition.running.message"] = json!(message);
    }
    json!({
        "metadata": {"name": "disk", "namespace": "d", "uid": "pvc-uid", "annotations": annotations},
        "spec": {"volumeName": if bound { "pvc-pvc-uid" } else { "" }},
        "status": {"phase": if bound { "Bound" } else { "Pending" }},
    })
}

/// One line per action.
fn describe(action: &Action) -> String {
    match action {
        Action::Create { resource, object } => {
            format!("create {} {}", resource.plural, object["metadata"]["name"])
        }
        Action::CreateAndRecord {
            resource,
            reason,
            object,
            ..
        } => format!(
            "create {} {} +event {reason}",
            resource.plural, object["metadata"]["name"]
        ),
        Action::Update { resource, object } => format!(
            "update {} pod.phase={}",
            resource.plural, object["metadata"]["annotations"]["cdi.kubevirt.io/storage.pod.phase"]
        ),
        Action::UpdateStatus { resource, object } if resource.plural == "datavolumes" => format!(
            "dv status {} {} restarts={}",
            object["status"]["phase"],
            object["status"]["progress"],
            object["status"]["restartCount"]
        ),
        Action::UpdateStatus { object, .. } => {
            format!("vm status {}", object["status"]["printableStatus"])
        }
        Action::Event {
            reason, message, ..
        } => format!("event {reason}: {message}"),
        Action::Requeue { after, .. } => format!("requeue after {}s", after.as_secs()),
        Action::StartImport { job, .. } => format!(
            "start import {} into {} bytes={}",
            match &job.source {
                JobSource::Http(h) => h.url.clone(),
                JobSource::Blank => "blank".into(),
                JobSource::Clone { volume } => format!("clone of {volume}"),
            },
            job.volume,
            job.image_bytes
        ),
        Action::ForgetImport { .. } => "forget import".into(),
        other => format!("{other:?}"),
    }
}

fn run(dv: &Value, pvc: Option<&Value>, import: Option<&ImportView>) -> Vec<String> {
    let world = DataVolumeWorld {
        pvc,
        source_pvc: None,
        import,
        now_unix: NOW,
    };
    reconcile_data_volume(dv, &world)
        .iter()
        .map(describe)
        .collect()
}

const GIB: u64 = 1024 * 1024 * 1024;

#[test]
fn import_table() {
    let bound = pvc(true, None, None);
    let in_progress = json!({"phase": "ImportInProgress", "progress": "12.00%", "restartCount": 0});
    type Case = (
        &'static str,
        Value,
        Option<Value>,
        Option<ImportView>,
        Vec<String>,
    );
    let cases: Vec<Case> = vec![
        (
            "new: the PVC, Pending",
            dv(http(), None),
            None,
            None,
            vec![
                "create persistentvolumeclaims \"disk\"".into(),
                "dv status \"Pending\" \"N/A\" restarts=0".into(),
            ],
        ),
        (
            "PVC not bound yet: Pending",
            dv(http(), Some(json!({"phase": "Pending"}))),
            Some(pvc(false, None, None)),
            None,
            vec!["dv status \"Pending\" \"N/A\" restarts=0".into()],
        ),
        (
            "bound: the importer starts",
            dv(http(), Some(json!({"phase": "Pending"}))),
            Some(bound.clone()),
            None,
            vec![
                format!("start import http://127.0.0.1:1/disk.qcow2.gz into pvc-pvc-uid bytes={GIB}"),
                "event ImportScheduled: Import into disk scheduled".into(),
                "dv status \"ImportScheduled\" \"N/A\" restarts=0".into(),
            ],
        ),
        (
            "running: progress, requeued for the next",
            dv(http(), Some(json!({"phase": "ImportScheduled"}))),
            Some(bound.clone()),
            Some(ImportView::Running { percent: Some(45.2) }),
            vec![
                "event ImportInProgress: Import into disk in progress".into(),
                "dv status \"ImportInProgress\" \"45.20%\" restarts=0".into(),
                "requeue after 1s".into(),
            ],
        ),
        (
            "finished: recorded on the PVC first",
            dv(http(), Some(in_progress.clone())),
            Some(bound.clone()),
            Some(ImportView::Finished(Ok("read".into()))),
            vec!["update persistentvolumeclaims pod.phase=\"Succeeded\"".into()],
        ),
        (
            "failed run: recorded on the PVC with its message",
            dv(http(), Some(in_progress.clone())),
            Some(bound.clone()),
            Some(ImportView::Finished(Err("checksum mismatch".into()))),
            vec!["update persistentvolumeclaims pod.phase=\"Failed\"".into()],
        ),
        (
            "PVC says Succeeded: Succeeded, Event, run forgotten",
            dv(http(), Some(in_progress.clone())),
            Some(pvc(true, Some("Succeeded"), None)),
            Some(ImportView::Finished(Ok("read".into()))),
            vec![
                "event ImportSucceeded: Successfully imported into PVC disk".into(),
                "dv status \"Succeeded\" \"100.0%\" restarts=0".into(),
                "forget import".into(),
            ],
        ),
        (
            "PVC says Failed: Failed with the message",
            dv(http(), Some(in_progress.clone())),
            Some(pvc(true, Some("Failed"), Some("the download is truncated: 10 of 20 bytes arrived"))),
            None,
            vec![
                "event ImportFailed: Failed to import into PVC disk: the download is truncated: 10 of 20 bytes arrived".into(),
                "dv status \"Failed\" \"12.00%\" restarts=0".into(),
            ],
        ),
        (
            "interrupted by a server restart: starts again, one restart more",
            dv(http(), Some(in_progress.clone())),
            Some(bound.clone()),
            None,
            vec![
                format!("start import http://127.0.0.1:1/disk.qcow2.gz into pvc-pvc-uid bytes={GIB}"),
                "event ImportScheduled: Import into disk scheduled".into(),
                "dv status \"ImportScheduled\" \"N/A\" restarts=1".into(),
            ],
        ),
        (
            "upload: UploadReady once bound",
            dv(json!({"upload": {}}), Some(json!({"phase": "Pending"}))),
            Some(bound.clone()),
            None,
            vec![
                "event UploadReady: Upload into disk ready".into(),
                "dv status \"UploadReady\" \"N/A\" restarts=0".into(),
            ],
        ),
        (
            "blank: the importer makes an empty image",
            dv(json!({"blank": {}}), Some(json!({"phase": "Pending"}))),
            Some(bound.clone()),
            None,
            vec![
                format!("start import blank into pvc-pvc-uid bytes={GIB}"),
                "event ImportScheduled: Import into disk scheduled".into(),
                "dv status \"ImportScheduled\" \"N/A\" restarts=0".into(),
            ],
        ),
        (
            "registry: not on one host, Failed naming the field",
            dv(json!({"registry": {"url": "docker://x"}}), None),
            None,
            None,
            vec![
                "event ImportFailed: Failed to import into PVC disk: spec.source.registry: registry sources are not supported by ferrovirt (a single host has no registry/object-store/oVirt/VMware importer); use source.http (a URL), source.upload (ferrovirt image-upload), source.blank or source.pvc".into(),
                "dv status \"Failed\" \"N/A\" restarts=0".into(),
            ],
        ),
    ];
    for (name, dv, pvc, import, expected) in cases {
        assert_eq!(run(&dv, pvc.as_ref(), import.as_ref()), expected, "{name}");
    }
}

#[test]
fn the_pvc_is_cdis() {
    let actions = reconcile_data_volume(
        &dv(http(), None),
        &DataVolumeWorld {
            now_unix: NOW,
            ..DataVolumeWorld::default()
        },
    );
    let Action::Create { object: pvc, .. } = &actions[0] else {
        panic!("{actions:?}")
    };
    // spec.storage's 1Gi grown by CDI's 6 % filesystem overhead, to a MiB.
    let size: u64 = pvc["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        size as f64 >= GIB as f64 / 0.94 && size.is_multiple_of(1024 * 1024),
        "{size}"
    );
    assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(pvc["metadata"]["ownerReferences"][0]["kind"], "DataVolume");
    assert_eq!(pvc["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        pvc["metadata"]["annotations"]["cdi.kubevirt.io/storage.import.endpoint"],
        "http://127.0.0.1:1/disk.qcow2.gz"
    );
    assert_eq!(
        pvc["metadata"]["labels"]["app"],
        "containerized-data-importer"
    );
}

#[test]
fn clone_waits_for_its_source() {
    let clone = dv(
        json!({"pvc": {"namespace": "d", "name": "golden"}}),
        Some(json!({"phase": "Pending"})),
    );
    let bound = pvc(true, None, None);
    let unfilled_source = json!({"metadata": {"name": "golden", "annotations": {"cdi.kubevirt.io/storage.pod.phase": "Running"}},
        "spec": {"volumeName": "pvc-golden"}, "status": {"phase": "Bound"}});
    let world = |source: Option<&Value>| {
        reconcile_data_volume(
            &clone,
            &DataVolumeWorld {
                pvc: Some(&bound),
                source_pvc: source,
                import: None,
                now_unix: NOW,
            },
        )
        .iter()
        .map(describe)
        .collect::<Vec<_>>()
    };
    let waiting = world(Some(&unfilled_source));
    assert_eq!(
        waiting[1],
        "dv status \"CloneScheduled\" \"N/A\" restarts=0"
    );
    assert_eq!(waiting[2], "requeue after 2s");
    let mut filled = unfilled_source.clone();
    filled["metadata"]["annotations"]["cdi.kubevirt.io/storage.pod.phase"] = json!("Succeeded");
    let started = world(Some(&filled));
    assert_eq!(
        started[0],
        format!("start import clone of pvc-golden into pvc-pvc-uid bytes={GIB}")
    );
    assert_eq!(
        started[1],
        "event CloneScheduled: Cloning from disk scheduled"
    );
}

/// KubeVirt's `vm-alpine-datavolume` example (examples/vm-alpine-datavolume.yaml).
fn alpine_vm() -> Value {
    let yaml = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  labels:
    kubevirt.io/vm: vm-alpine-datavolume
  name: vm-alpine-datavolume
  namespace: d
  uid: vm-uid
spec:
  dataVolumeTemplates:
  - metadata:
      creationTimestamp: null
      name: alpine-dv
    spec:
      pvc:
        accessModes:
        - ReadWriteOnce
        resources:
          requests:
            storage: 2Gi
        storageClassName: local
      source:
        registry:
          url: "docker://registry:5000/kubevirt/alpine-container-disk-demo:devel"
  runStrategy: Always
  template:
    metadata:
      labels:
        kubevirt.io/vm: vm-alpine-datavolume
    spec:
      domain:
        devices:
          disks:
          - disk:
              bus: virtio
            name: datavolumedisk1
        resources:
          requests:
            memory: 128Mi
      terminationGracePeriodSeconds: 0
      volumes:
      - dataVolume:
          name: alpine-dv
        name: datavolumedisk1
"#;
    let values = ferrovirt_api::parse::parse_values(yaml.as_bytes(), "t").unwrap();
    values.into_iter().next().unwrap()
}

fn vm_world<'a>(dvs: &'a [Arc<Value>], classes: &'a [Arc<Value>]) -> VmWorld<'a> {
    VmWorld {
        run: None,
        backend_pvcs: &[],
        kubevirt: None,
        storage_classes: classes,
        now_unix: NOW,
        node_name: "node1",
        references: Default::default(),
        data_volumes: dvs,
    }
}

#[test]
fn vm_creates_and_owns_its_data_volume_templates_and_waits_for_them() {
    let vm = alpine_vm();
    let actions = reconcile_vm(&vm, None, &vm_world(&[], &[]));
    assert_eq!(
        actions.iter().map(describe).collect::<Vec<_>>(),
        vec!["create datavolumes \"alpine-dv\" +event SuccessfulDataVolumeCreate"]
    );
    let Action::CreateAndRecord {
        object: created, ..
    } = &actions[0]
    else {
        panic!()
    };
    assert_eq!(created["apiVersion"], "cdi.kubevirt.io/v1beta1");
    assert_eq!(created["metadata"]["namespace"], "d");
    assert_eq!(
        created["metadata"]["ownerReferences"],
        json!([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "vm-alpine-datavolume",
            "uid": "vm-uid", "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(
        created["spec"]["pvc"]["resources"]["requests"]["storage"],
        "2Gi"
    );
    assert!(created["metadata"].get("creationTimestamp").is_none());

    // The DataVolume exists and is importing: no VMI, Provisioning.
    let mut importing = created.clone();
    importing["status"] = json!({"phase": "ImportInProgress"});
    let dvs = [Arc::new(importing)];
    let actions: Vec<String> = reconcile_vm(&vm, None, &vm_world(&dvs, &[]))
        .iter()
        .map(describe)
        .collect();
    assert_eq!(actions, vec!["vm status \"Provisioning\""]);

    // Failed: DataVolumeError, with the DataVolume's message in the condition.
    let mut failed = created.clone();
    failed["status"] = json!({"phase": "Failed", "conditions": [{"type": "Running", "status": "False", "message": "spec.source.registry: not supported"}]});
    let dvs = [Arc::new(failed)];
    let actions = reconcile_vm(&vm, None, &vm_world(&dvs, &[]));
    let Action::UpdateStatus { object, .. } = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(object["status"]["printableStatus"], "DataVolumeError");
    let condition = object["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DataVolumesReady")
        .unwrap();
    assert_eq!(condition["status"], "False");
    assert_eq!(
        condition["message"],
        "DataVolume alpine-dv failed: spec.source.registry: not supported"
    );

    // Succeeded: the VMI is created.
    let mut done = created.clone();
    done["status"] = json!({"phase": "Succeeded"});
    let dvs = [Arc::new(done)];
    let actions: Vec<String> = reconcile_vm(&vm, None, &vm_world(&dvs, &[]))
        .iter()
        .map(describe)
        .collect();
    assert!(
        actions
            .iter()
            .any(|a| a.starts_with("create virtualmachineinstances")),
        "{actions:?}"
    );
}
