//! The export server in-process (no socket, no controllers): VirtualMachineExport and Secret
//! served and admitted, the export paths through the chain's one entry, opened only by the
//! export token (header or query parameter; never the admin's bearer token), raw/gzip with
//! Range, an expired export refused, every export request in the audit log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ferrovirt_apiserver::router;
use ferrovirt_resources::{PVCS, VM_EXPORTS};
use ferrovirt_store::{Store, StoreOptions};
use serde_json::{Value, json};
use tower::ServiceExt;

const BASE: &str = "/api/export.kubevirt.io/v1beta1/namespaces/default/virtualmachineexports";
const TOKEN: &str = "0123456789abcdefABCD";

async fn raw(
    app: &axum::Router,
    request: Request<Body>,
) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec(), headers)
}

fn post(path: &str, body: &Value) -> Request<Body> {
    support::as_admin(
        Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    )
}

fn get_with(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::get(path);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(Body::empty()).unwrap()
}

/// A Bound PVC `disk` whose volume holds a 1 MiB `disk.img`; returns the image.
fn bound_pvc(store: &Store, dir: &std::path::Path) -> Vec<u8> {
    let pvc = store
        .create(
            &PVCS.store_kind(),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": "disk", "namespace": "default"},
                   "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pvc-1",
                            "resources": {"requests": {"storage": "1Gi"}}}}),
        )
        .unwrap();
    let mut bound = pvc;
    bound["status"] = json!({"phase": "Bound"});
    store.update_status(&PVCS.store_kind(), bound).unwrap();
    let volume = dir.join("volumes/pvc-1");
    std::fs::create_dir_all(&volume).unwrap();
    let image: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(volume.join("disk.img"), &image).unwrap();
    image
}

/// Marks an export Ready (the controller's part, not running here).
fn ready(store: &Store, name: &str) {
    let mut export = store
        .get(&VM_EXPORTS.store_kind(), Some("default"), name)
        .unwrap();
    export["status"] = json!({"phase": "Ready", "tokenSecretRef": "tok",
        "conditions": [{"type": "Ready", "status": "True", "reason": "PodReady"}]});
    store
        .update_status(&VM_EXPORTS.store_kind(), export)
        .unwrap();
}

#[tokio::test]
async fn export_paths_are_opened_by_the_export_token_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("ferrovirt.db"), StoreOptions::default()).unwrap();
    ferrovirt_resources::cluster::seed_defaults(&store).unwrap();
    let app = router(support::secured_state(store.clone(), dir.path()));

    // Discovery as KubeVirt's CRD.
    let (code, body, _) = raw(
        &app,
        support::as_admin(get_with("/apis/export.kubevirt.io/v1beta1", &[])),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["resources"][0]["name"], "virtualmachineexports");
    assert_eq!(
        list["resources"][0]["shortNames"],
        json!(["vmexport", "vmexports"])
    );
    assert_eq!(list["resources"][1]["name"], "virtualmachineexports/status");

    // KubeVirt's admitter messages.
    let exports = "/apis/export.kubevirt.io/v1beta1/namespaces/default/virtualmachineexports";
    let (code, body, _) = raw(
        &app,
        post(exports, &json!({"apiVersion": "export.kubevirt.io/v1beta1", "kind": "VirtualMachineExport",
            "metadata": {"name": "bad"}, "spec": {"source": {"kind": "VirtualMachine", "name": "vm"}}})),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(String::from_utf8_lossy(&body).contains("VM API group must be kubevirt.io"));

    let image = bound_pvc(&store, dir.path());
    let (code, _, _) = raw(
        &app,
        post(exports, &json!({"apiVersion": "export.kubevirt.io/v1beta1", "kind": "VirtualMachineExport",
            "metadata": {"name": "e"}, "spec": {"source": {"kind": "PersistentVolumeClaim", "name": "disk"},
            "tokenSecretRef": "tok"}})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    // A Secret's stringData is stored as base64 data, as kube-apiserver does.
    let (code, body, _) = raw(
        &app,
        post(
            "/api/v1/namespaces/default/secrets",
            &json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "tok"}, "stringData": {"token": TOKEN}}),
        ),
    )
    .await;
    assert_eq!(
        code,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let secret: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(secret["data"]["token"], "MDEyMzQ1Njc4OWFiY2RlZkFCQ0Q=");
    assert!(secret.get("stringData").is_none());

    let raw_path = format!("{BASE}/e/volumes/disk/disk.img");
    // Not Ready yet: 409 even with the token.
    let (code, _, _) = raw(
        &app,
        get_with(&raw_path, &[("x-kubevirt-export-token", TOKEN)]),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT);
    ready(&store, "e");

    // Refused: no token, a wrong one, the admin's bearer token alone.
    let (code, _, _) = raw(&app, get_with(&raw_path, &[])).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _, _) = raw(
        &app,
        get_with(
            &raw_path,
            &[("x-kubevirt-export-token", "AAAAAAAAAAAAAAAAAAAA")],
        ),
    )
    .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _, _) = raw(&app, support::as_admin(get_with(&raw_path, &[]))).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);

    // Opened: header or query parameter.
    let (code, body, headers) = raw(
        &app,
        get_with(&raw_path, &[("x-kubevirt-export-token", TOKEN)]),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body, image);
    assert_eq!(headers["accept-ranges"], "bytes");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (code, body, _) = raw(
        &app,
        get_with(&format!("{raw_path}?x-kubevirt-export-token={TOKEN}"), &[]),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body.len(), image.len());

    // Range (resume) with If-Range; a changed ETag gets the whole file.
    let (code, body, headers) = raw(
        &app,
        get_with(
            &raw_path,
            &[
                ("x-kubevirt-export-token", TOKEN),
                ("range", "bytes=1000-"),
                ("if-range", &etag),
            ],
        ),
    )
    .await;
    assert_eq!(code, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        headers["content-range"],
        format!("bytes 1000-{}/{}", image.len() - 1, image.len()).as_str()
    );
    assert_eq!(body, image[1000..]);
    let (code, body, _) = raw(
        &app,
        get_with(
            &raw_path,
            &[
                ("x-kubevirt-export-token", TOKEN),
                ("range", "bytes=1000-"),
                ("if-range", "\"other\""),
            ],
        ),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body.len(), image.len());

    // gzip, and a range of it (generated, counted for Content-Range).
    let gz_path = format!("{BASE}/e/volumes/disk/disk.img.gz");
    let (code, gz, _) = raw(
        &app,
        get_with(&gz_path, &[("x-kubevirt-export-token", TOKEN)]),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut unpacked)
        .unwrap();
    assert_eq!(unpacked, image);
    let (code, tail, headers) = raw(
        &app,
        get_with(
            &gz_path,
            &[("x-kubevirt-export-token", TOKEN), ("range", "bytes=10-")],
        ),
    )
    .await;
    assert_eq!(code, StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail, gz[10..]);
    assert_eq!(
        headers["content-range"],
        format!("bytes 10-{}/{}", gz.len() - 1, gz.len()).as_str()
    );

    // A PVC of a disk image has no tar.gz; unknown volumes and methods are refused.
    let (code, _, _) = raw(
        &app,
        get_with(
            &format!("{BASE}/e/volumes/disk/disk.tar.gz"),
            &[("x-kubevirt-export-token", TOKEN)],
        ),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _, _) = raw(
        &app,
        get_with(
            &format!("{BASE}/e/volumes/other/disk.img"),
            &[("x-kubevirt-export-token", TOKEN)],
        ),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _, _) = raw(
        &app,
        Request::delete(&raw_path)
            .header("x-kubevirt-export-token", TOKEN)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);

    // An export past its TTL is refused (410), token or not.
    let (code, _, _) = raw(
        &app,
        post(exports, &json!({"apiVersion": "export.kubevirt.io/v1beta1", "kind": "VirtualMachineExport",
            "metadata": {"name": "short"}, "spec": {"source": {"kind": "PersistentVolumeClaim", "name": "disk"},
            "tokenSecretRef": "tok", "ttlDuration": "1s"}})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    ready(&store, "short");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (code, body, _) = raw(
        &app,
        get_with(
            &format!("{BASE}/short/volumes/disk/disk.img"),
            &[("x-kubevirt-export-token", TOKEN)],
        ),
    )
    .await;
    assert_eq!(code, StatusCode::GONE, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("expired"));

    // Every export request is audited, refused or not.
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let lines = audit
        .lines()
        .filter(|l| l.contains("/virtualmachineexports/e/volumes/"))
        .count();
    assert!(lines >= 10, "{lines} export lines in\n{audit}");
    assert!(audit.contains("\"code\":401"));
}
