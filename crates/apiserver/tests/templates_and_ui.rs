//! In-process router tests of Harvester's template kinds (discovery, version numbering, template
//! status, admission of the embedded VM under `spec.vm.spec`) and of the embedded web UI at `/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use ferrovirt_apiserver::router;
use ferrovirt_store::{Store, StoreOptions};

/// A fresh store with the defaults `ferrovirt serve` seeds.
fn open_store(dir: &std::path::Path) -> Result<Store, ferrovirt_store::StoreError> {
    let store = Store::open(dir.join("ferrovirt.db"), StoreOptions::default())?;
    ferrovirt_resources::cluster::seed_defaults(&store)?;
    Ok(store)
}
use serde_json::{Value, json};
use tower::ServiceExt;

const HV: &str = "/apis/harvesterhci.io/v1beta1/namespaces/default";

fn app() -> (tempfile::TempDir, axum::Router) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).unwrap();
    let app = router(support::secured_state(store, dir.path()));
    (dir, app)
}

async fn raw(
    app: &axum::Router,
    request: Request<Body>,
) -> (StatusCode, header::HeaderMap, Vec<u8>) {
    let response = app
        .clone()
        .oneshot(support::as_admin(request))
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, bytes.to_vec())
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(
            header::CONTENT_TYPE,
            if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            },
        )
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .unwrap();
    let (status, _, bytes) = raw(app, request).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn version(template_id: &str, tpm: Value) -> Value {
    json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "VirtualMachineTemplateVersion",
        "metadata": {"generateName": "win-"},
        "spec": {"templateId": template_id, "description": "d", "imageId": "kept",
            "vm": {"metadata": {"labels": {"os": "windows"}}, "spec": {"runStrategy": "Halted",
                "template": {"spec": {"domain": {"memory": {"guest": "1Gi"}, "devices": {"tpm": tpm}}}}}}}})
}

#[tokio::test]
async fn templates_are_served_numbered_and_admitted() {
    let (_dir, app) = app();
    let (code, list) = call(&app, "GET", "/apis/harvesterhci.io/v1beta1", None).await;
    assert_eq!(code, StatusCode::OK);
    let names: Vec<(Value, Value)> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].clone(), r["shortNames"].clone()))
        .collect();
    assert_eq!(
        names,
        [
            (
                json!("virtualmachinetemplates"),
                json!(["vmtemplate", "vmtemplates"])
            ),
            (
                json!("virtualmachinetemplateversions"),
                json!(["vmtemplateversion", "vmtemplateversions"])
            ),
        ]
    );

    // A version of a template that does not exist is refused at spec.templateId.
    let (code, status) = call(
        &app,
        "POST",
        &format!("{HV}/virtualmachinetemplateversions"),
        Some(version("default/win", json!({}))),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.templateId");

    let (code, _) = call(
        &app,
        "POST",
        &format!("{HV}/virtualmachinetemplates"),
        Some(json!({"metadata": {"name": "win"}, "spec": {"description": "Windows 11"}})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let mut created = Vec::new();
    for _ in 0..2 {
        let (code, v) = call(
            &app,
            "POST",
            &format!("{HV}/virtualmachinetemplateversions"),
            Some(version("default/win", json!({"persistent": true}))),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{v}");
        assert_eq!(v["spec"]["imageId"], "kept");
        assert_eq!(
            v["spec"]["vm"]["spec"]["template"]["spec"]["domain"]["devices"]["tpm"],
            json!({"persistent": true})
        );
        created.push(v);
    }
    assert_eq!(created[0]["status"]["version"], 1);
    assert_eq!(created[1]["status"]["version"], 2);
    let first = created[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let second = created[1]["metadata"]["name"].as_str().unwrap().to_owned();
    let (_, template) = call(
        &app,
        "GET",
        &format!("{HV}/virtualmachinetemplates/win"),
        None,
    )
    .await;
    assert_eq!(
        template["spec"]["defaultVersionId"],
        format!("default/{first}")
    );
    assert_eq!(
        template["status"],
        json!({"defaultVersion": 1, "latestVersion": 2})
    );

    // Picking another default (a merge patch, as the UI sends) updates the status.
    let (code, _) = call(
        &app,
        "PATCH",
        &format!("{HV}/virtualmachinetemplates/win"),
        Some(json!({"spec": {"defaultVersionId": format!("default/{second}")}})),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (_, template) = call(
        &app,
        "GET",
        &format!("{HV}/virtualmachinetemplates/win"),
        None,
    )
    .await;
    assert_eq!(template["status"]["defaultVersion"], 2);

    // The embedded VM gets KubeVirt's rules, with paths under spec.vm.spec.
    let (code, status) = call(
        &app,
        "POST",
        &format!("{HV}/virtualmachinetemplateversions"),
        Some(version("default/win", json!({"persistent": "yes"}))),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    let mut bad = version("default/win", json!({}));
    bad["spec"]["vm"]["spec"]["runStrategy"] = json!("Sometimes");
    let (code, status) = call(
        &app,
        "POST",
        &format!("{HV}/virtualmachinetemplateversions"),
        Some(bad),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.vm.spec.runStrategy"
    );

    // Deleting a version: the template's latest version follows.
    let (code, _) = call(
        &app,
        "DELETE",
        &format!("{HV}/virtualmachinetemplateversions/{second}"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (_, template) = call(
        &app,
        "GET",
        &format!("{HV}/virtualmachinetemplates/win"),
        None,
    )
    .await;
    assert_eq!(template["status"]["latestVersion"], 1);
}

#[tokio::test]
async fn the_ui_is_served_at_the_root_and_api_paths_stay_api() {
    let (_dir, app) = app();
    let page = |uri: &str, accept: &str| {
        Request::get(uri)
            .header(header::ACCEPT, accept)
            .body(Body::empty())
            .unwrap()
    };
    let (code, headers, body) = raw(&app, page("/", "text/html")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    assert!(String::from_utf8_lossy(&body).contains("<html"));
    // Whatever the embedded UI, its index names only files that are served, with long caching.
    let index = String::from_utf8_lossy(&body).into_owned();
    for asset in index.split('"').filter(|s| s.starts_with("/assets/")) {
        let (code, headers, _) = raw(&app, page(asset, "*/*")).await;
        assert_eq!(code, StatusCode::OK, "{asset}");
        assert!(
            headers[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
    }
    // A browser navigation to an app path gets the app; a missing asset and API paths get 404s.
    let (code, _, body) = raw(&app, page("/vms/default/x", "text/html,*/*")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body, raw(&app, page("/", "text/html")).await.2);
    let (code, _, _) = raw(&app, page("/assets/missing-123.js", "*/*")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _, body) = raw(&app, page("/apis/nothing.io/v1", "text/html")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["kind"],
        "Status"
    );
    let (code, _, _) = raw(&app, Request::post("/").body(Body::empty()).unwrap()).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}
