//! The router in-process (no socket, no controllers): discovery, create/get/table, Status errors,
//! OpenAPI v3 with the `fieldValidation` parameter kubectl looks for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ferrovirt_apiserver::{AppState, router};
use ferrovirt_store::{Store, StoreOptions};

/// A fresh store with the defaults `ferrovirt serve` seeds.
fn open_store(dir: &std::path::Path) -> Result<Store, ferrovirt_store::StoreError> {
    let store = Store::open(dir.join("ferrovirt.db"), StoreOptions::default())?;
    ferrovirt_resources::cluster::seed_defaults(&store)?;
    Ok(store)
}
use serde_json::{Value, json};
use tower::ServiceExt;

async fn call(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
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

#[tokio::test]
async fn discovery_crud_tables_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).unwrap();
    let app = router(AppState::new(store, dir.path().to_path_buf()));

    let (code, core) = call(&app, get("/api/v1")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "events" && r["shortNames"] == json!(["ev"]))
    );
    let (_, groups) = call(&app, get("/apis")).await;
    assert_eq!(groups["kind"], "APIGroupList");
    let (_, v3) = call(&app, get("/openapi/v3/apis/kubevirt.io/v1")).await;
    let patch =
        &v3["paths"]["/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "VirtualMachine"
    );
    assert!(
        patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation")
    );

    // The embedded defaults exist.
    let (code, kv) = call(
        &app,
        get("/apis/kubevirt.io/v1/namespaces/kubevirt/kubevirts/kubevirt"),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(kv.to_string().contains("VMPersistentState"));

    let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"generateName": "gen-"},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}}}});
    let request = Request::post("/apis/kubevirt.io/v1/namespaces/default/virtualmachines")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&vm).unwrap()))
        .unwrap();
    let (code, created) = call(&app, request).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let name = created["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("gen-"));

    let request = Request::get("/apis/kubevirt.io/v1/namespaces/default/virtualmachines")
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Body::empty())
        .unwrap();
    let (_, table) = call(&app, request).await;
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["rows"][0]["cells"][0], name.as_str());

    let (code, list) = call(
        &app,
        get(&format!(
            "/apis/kubevirt.io/v1/virtualmachines?fieldSelector=metadata.name%3D{name}"
        )),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["kind"], "VirtualMachineList");

    let (code, status) = call(
        &app,
        get("/apis/kubevirt.io/v1/namespaces/default/virtualmachines/nope"),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["details"]["kind"], "virtualmachines");
    let (code, _) = call(&app, get("/nothing/here")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let request = Request::delete("/apis/kubevirt.io/v1/namespaces/default/virtualmachines/nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, request).await.0, StatusCode::NOT_FOUND);
    let request = Request::post("/apis/kubevirt.io/v1/namespaces/default/virtualmachines/x")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, request).await.0, StatusCode::METHOD_NOT_ALLOWED);
}
