//! `instancetype.kubevirt.io/v1beta1` through the router in-process (no socket, no
//! controllers): the seeded common-instancetypes objects, discovery with KubeVirt's short names,
//! strict field validation against KubeVirt's schema, NAME/AGE tables, the conflicts a VM's
//! template has with its instancetype (KubeVirt's message and field path), and seeding that never
//! overwrites an admin's edit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ferrovirt_apiserver::router;
use ferrovirt_store::{Store, StoreOptions};
use serde_json::{Value, json};
use tower::ServiceExt;

const GROUP: &str = "/apis/instancetype.kubevirt.io/v1beta1";

async fn call(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app
        .clone()
        .oneshot(support::as_admin(request))
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn send(method: &str, uri: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

#[tokio::test]
async fn served_seeded_validated_and_applied_at_admission() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("ferrovirt.db"), StoreOptions::default()).unwrap();
    ferrovirt_resources::cluster::seed_defaults(&store).unwrap();
    let app = router(support::secured_state(store.clone(), dir.path()));

    // Discovery: the four kinds with KubeVirt's short names and scopes.
    let (code, list) = call(&app, get(GROUP)).await;
    assert_eq!(code, StatusCode::OK);
    let resource = |name: &str| {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {list}"))
    };
    assert_eq!(
        resource("virtualmachineclusterpreferences")["shortNames"],
        json!(["vmcp", "vmcps"])
    );
    assert_eq!(
        resource("virtualmachineclusterinstancetypes")["shortNames"],
        json!([
            "vmclusterinstancetype",
            "vmclusterinstancetypes",
            "vmcf",
            "vmcfs"
        ])
    );
    assert_eq!(
        resource("virtualmachinepreferences")["namespaced"],
        json!(true)
    );
    let (code, _) = call(
        &app,
        get("/apis/apps/v1/namespaces/default/controllerrevisions"),
    )
    .await;
    assert_eq!(code, StatusCode::OK);

    // The seeded Windows 11 preference: EFI + Secure Boot + SMM + persistent TPM + Hyper-V.
    let (code, win11) = call(
        &app,
        get(&format!(
            "{GROUP}/virtualmachineclusterpreferences/windows.11"
        )),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{win11}");
    assert_eq!(
        win11["spec"]["firmware"]["preferredEfi"],
        json!({"persistent": true, "secureBoot": true})
    );
    assert_eq!(
        win11["spec"]["devices"]["preferredTPM"],
        json!({"persistent": true})
    );
    assert_eq!(win11["spec"]["features"]["preferredSmm"], json!({}));
    assert_eq!(
        win11["spec"]["features"]["preferredHyperv"]["spinlocks"]["spinlocks"],
        8191
    );
    let (code, _) = call(
        &app,
        get(&format!(
            "{GROUP}/virtualmachineclusterpreferences/windows.2k22"
        )),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (code, u1) = call(
        &app,
        get(&format!(
            "{GROUP}/virtualmachineclusterinstancetypes/u1.medium"
        )),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        u1["spec"],
        json!({"cpu": {"guest": 1}, "memory": {"guest": "4Gi"}})
    );

    // Table: NAME, AGE (KubeVirt's CRDs declare no printer columns).
    let request = Request::get(format!("{GROUP}/virtualmachineclusterpreferences"))
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Body::empty())
        .unwrap();
    let (_, table) = call(&app, request).await;
    let names: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Name", "Age"]);

    // Strict field validation with KubeVirt's schema; a required field is named.
    let typo = json!({"apiVersion": "instancetype.kubevirt.io/v1beta1",
        "kind": "VirtualMachinePreference", "metadata": {"name": "p"},
        "spec": {"firmware": {"preferedEfi": {}}}});
    let (code, status) = call(
        &app,
        send(
            "POST",
            &format!("{GROUP}/namespaces/default/virtualmachinepreferences?fieldValidation=Strict"),
            &typo,
        ),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("spec.firmware.preferedEfi")
    );
    let no_memory = json!({"apiVersion": "instancetype.kubevirt.io/v1beta1",
        "kind": "VirtualMachineInstancetype", "metadata": {"name": "small"},
        "spec": {"cpu": {"guest": 1}}});
    let (code, status) = call(
        &app,
        send(
            "POST",
            &format!("{GROUP}/namespaces/default/virtualmachineinstancetypes"),
            &no_memory,
        ),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.memory.guest");

    // A VM setting what its instancetype sets: KubeVirt's conflict, with the field path.
    let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "win"},
        "spec": {"runStrategy": "Halted",
            "instancetype": {"name": "u1.medium"},
            "preference": {"kind": "VirtualMachineClusterPreference", "name": "windows.11"},
            "template": {"spec": {"domain": {"devices": {},
                "memory": {"guest": "1Gi"}}}}}});
    let (code, status) = call(
        &app,
        send(
            "POST",
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachines",
            &vm,
        ),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_eq!(
        status["details"]["causes"],
        json!([{"reason": "FieldValueInvalid",
            "message": "VM field(s) spec.template.spec.domain.memory.guest conflicts with selected instance type",
            "field": "spec.template.spec.domain.memory.guest"}])
    );
    // Without it the VM is stored with its references only.
    let mut fine = vm.clone();
    fine["spec"]["template"]["spec"]["domain"] = json!({"devices": {}});
    let (code, created) = call(
        &app,
        send(
            "POST",
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachines",
            &fine,
        ),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["spec"]["preference"],
        json!({"kind": "VirtualMachineClusterPreference", "name": "windows.11"})
    );
    assert!(
        created
            .pointer("/spec/template/spec/domain/firmware/bootloader")
            .is_none()
    );
    // inferFromVolume is refused with the field path.
    let mut infer = fine.clone();
    infer["metadata"]["name"] = json!("infer");
    infer["spec"]["instancetype"] = json!({"inferFromVolume": "root"});
    let (code, status) = call(
        &app,
        send(
            "POST",
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachines",
            &infer,
        ),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.instancetype.inferFromVolume"
    );

    // An admin's edit of a seeded preference survives the next start's seeding.
    let mut edited = win11.clone();
    edited["spec"]["devices"]["preferredDiskBus"] = json!("virtio");
    let (code, _) = call(
        &app,
        send(
            "PUT",
            &format!("{GROUP}/virtualmachineclusterpreferences/windows.11"),
            &edited,
        ),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    ferrovirt_resources::cluster::seed_defaults(&store).unwrap();
    let (_, after) = call(
        &app,
        get(&format!(
            "{GROUP}/virtualmachineclusterpreferences/windows.11"
        )),
    )
    .await;
    assert_eq!(after["spec"]["devices"]["preferredDiskBus"], "virtio");
}
