//! The router in-process (no socket, no controllers): discovery, create/get/table, Status errors,
//! OpenAPI v3 with the `fieldValidation` parameter kubectl looks for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
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

/// A request as the admin.
async fn call(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    call_as(app, support::as_admin(request)).await
}

/// A request with the credentials it carries (none: anonymous).
async fn call_as(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
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
    let app = router(support::secured_state(store, dir.path()));

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
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(call(&app, request).await.0, StatusCode::METHOD_NOT_ALLOWED);
}

/// The security stages in-process: anonymous 401 (kube-apiserver's Status), public health checks
/// and UI files (with the CSP), 415 for a write without a media type, 421 for a foreign Host, a
/// foreign Origin on the console refused, RBAC 403 with Kubernetes' message, the reviews, and
/// the audit log's lines.
#[tokio::test]
async fn security_stages_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).unwrap();
    let app = router(support::secured_state(store, dir.path()));
    let vms = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";

    let (code, status) = call_as(&app, get(vms)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"Unauthorized","reason":"Unauthorized","code":401})
    );
    assert_eq!(call_as(&app, get("/healthz")).await.0, StatusCode::OK);
    assert_eq!(
        call_as(&app, get("/version")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let response = app.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );

    let post = |content_type: Option<&str>| {
        let mut builder = Request::post(vms);
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        support::as_admin(builder.body(Body::from("{}")).unwrap())
    };
    let (code, status) = call_as(&app, post(None)).await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{status}");
    let (code, _) = call_as(&app, post(Some("text/plain"))).await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let foreign_host = Request::get(vms)
        .header("host", "evil.example:8443")
        .body(Body::empty())
        .unwrap();
    let (code, status) = call(&app, foreign_host).await;
    assert_eq!(code, StatusCode::MISDIRECTED_REQUEST, "{status}");
    let own_host = Request::get(vms)
        .header("host", "localhost:8443")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, own_host).await.0, StatusCode::OK);

    let console =
        "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/vm1/console";
    let websocket = |origin: &str| {
        Request::get(console)
            .header("host", "localhost:8443")
            .header("origin", origin)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Body::empty())
            .unwrap()
    };
    let (code, status) = call(&app, websocket("https://evil.example")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{status}");
    // The server's own origin passes the check (and then finds no such VMI).
    let (code, _) = call(&app, websocket("https://localhost:8443")).await;
    assert_ne!(code, StatusCode::FORBIDDEN);

    let review = json!({"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview",
        "spec":{"resourceAttributes":{"namespace":"default","verb":"create","group":"kubevirt.io","resource":"virtualmachines"}}});
    let request = Request::post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        .header("content-type", "application/json")
        .body(Body::from(review.to_string()))
        .unwrap();
    let (code, answer) = call(&app, request).await;
    assert_eq!(code, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["status"]["allowed"], true);
    let request = Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
        ))
        .unwrap();
    let (code, answer) = call(&app, request).await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(answer["status"]["userInfo"]["username"], "test-admin");

    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let events: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["verb"] == "create"
            && e["objectRef"]["resource"] == "virtualmachines"
            && e["user"]["username"] == "test-admin"
            && e["responseStatus"]["code"] == 415),
        "{audit}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["objectRef"]["subresource"] == "console"
                && e["responseStatus"]["code"] == 403),
        "{audit}"
    );
    // Reads are not audited.
    assert!(!events.iter().any(|e| e["verb"] == "list"), "{audit}");
}

/// A request with a JSON body of `content_type`.
fn with_body(method: &str, uri: &str, content_type: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// The `field`s of a Status's causes.
fn cause_fields(status: &Value) -> Vec<String> {
    status["details"]["causes"]
        .as_array()
        .map(|causes| {
            causes
                .iter()
                .filter_map(|c| c["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn firmware_uuids_stay_unique_and_patches_reach_the_object_or_its_status() {
    const VMS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";
    const UUID_FIELD: &str = "spec.template.spec.domain.firmware.uuid";
    let uuid = "5d307ca9-b3ef-428c-8861-06e72d69f223";
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).unwrap();
    let app = router(support::secured_state(store, dir.path()));
    let vm = |name: &str, firmware: Value| {
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
            "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {
                "firmware": firmware, "devices": {}, "memory": {"guest": "64Mi"}}}}}})
    };
    let json_type = "application/json";
    let merge = "application/merge-patch+json";

    // Two VMs with one explicit firmware UUID: the second is refused at the field, naming the first
    // (also when it spells the UUID in capitals).
    let (code, first) = call(
        &app,
        with_body("POST", VMS, json_type, &vm("first", json!({"uuid": uuid}))),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{first}");
    for spelled in [uuid.to_owned(), uuid.to_uppercase()] {
        let (code, refused) = call(
            &app,
            with_body(
                "POST",
                VMS,
                json_type,
                &vm("second", json!({"uuid": spelled})),
            ),
        )
        .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
        assert_eq!(refused["reason"], "Invalid");
        assert!(
            cause_fields(&refused).contains(&UUID_FIELD.to_owned()),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("VirtualMachine default/first"),
            "{refused}"
        );
    }
    // Without a UUID it gets its own generated one.
    let (code, second) = call(
        &app,
        with_body("POST", VMS, json_type, &vm("second", json!({}))),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{second}");
    let second_uuid = second["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second_uuid.to_lowercase(), uuid);

    // Taking the first VM's UUID on update is refused at the field as well.
    let mut taken = second.clone();
    taken["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"] = json!(uuid);
    let (code, refused) = call(
        &app,
        with_body("PUT", &format!("{VMS}/second"), json_type, &taken),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(
        cause_fields(&refused).contains(&UUID_FIELD.to_owned()),
        "{refused}"
    );

    // Updates of a VM that keeps its UUID go through: a PUT of the stored object, a PUT of the
    // manifest without the UUID (it is carried over), a merge patch.
    let mut labelled = first.clone();
    labelled["metadata"]["labels"] = json!({"kept": "uuid"});
    let (code, updated) = call(
        &app,
        with_body("PUT", &format!("{VMS}/first"), json_type, &labelled),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{updated}");
    let (code, reapplied) = call(
        &app,
        with_body(
            "PUT",
            &format!("{VMS}/first"),
            json_type,
            &vm("first", json!({})),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{reapplied}");
    assert_eq!(
        reapplied["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"],
        uuid
    );
    let (code, patched) = call(
        &app,
        with_body(
            "PATCH",
            &format!("{VMS}/first"),
            merge,
            &json!({"metadata": {"labels": {"patched": "yes"}}}),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{patched}");
    assert_eq!(patched["metadata"]["labels"]["patched"], "yes");
    // A patch that changes the UUID is refused: it is immutable once set.
    let (code, refused) = call(
        &app,
        with_body(
            "PATCH",
            &format!("{VMS}/first"),
            merge,
            &json!({"spec": {"template": {"spec": {"domain": {"firmware": {"uuid": second_uuid}}}}}}),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(
        cause_fields(&refused).contains(&UUID_FIELD.to_owned()),
        "{refused}"
    );

    // A strict object patch refuses an unknown field; a status patch (kubectl sends
    // fieldValidation=Strict) writes the status only, never the spec.
    let (code, refused) = call(
        &app,
        with_body(
            "PATCH",
            &format!("{VMS}/first?fieldValidation=Strict"),
            merge,
            &json!({"spec": {"notAField": 1}}),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("notAField"),
        "{refused}"
    );
    let (code, status_patched) = call(
        &app,
        with_body(
            "PATCH",
            &format!("{VMS}/first/status?fieldValidation=Strict"),
            merge,
            &json!({"spec": {"runStrategy": "Always"}, "status": {"printableStatus": "Stopped"}}),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{status_patched}");
    let (_, stored) = call(&app, get(&format!("{VMS}/first"))).await;
    assert_eq!(stored["status"]["printableStatus"], "Stopped");
    assert_eq!(stored["spec"]["runStrategy"], "Halted");
    assert_eq!(stored["metadata"]["labels"]["patched"], "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_stop_are_not_refused_while_the_status_changes() {
    const VM: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/busy";
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).unwrap();
    let app = router(support::secured_state(store.clone(), dir.path()));
    let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "busy"},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}}}});
    let (code, created) = call(
        &app,
        with_body(
            "POST",
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachines",
            "application/json",
            &vm,
        ),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");

    // A controller writing the VM's status all the time, as the VM controller does while a VM
    // starts and stops: each write is a new resourceVersion.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let kind = ferrovirt_resources::VMS.store_kind();
            let mut writes = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let mut current = store.get(&kind, Some("default"), "busy").unwrap();
                current["status"] =
                    json!({"printableStatus": "Stopped", "observedGeneration": writes});
                match store.update_status(&kind, current) {
                    Ok(_) => writes += 1,
                    Err(ferrovirt_store::StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
                // ~1000 writes a second, far more than the controllers write one VM's status;
                // without a pause this thread alone rewrites the VM every ~0.5 ms and a handler
                // can lose all of its 10 fresh reads in a row (seen once in CI's load).
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            writes
        })
    };
    let action = |name: &str| {
        support::as_admin(
            Request::put(format!(
                "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/busy/{name}"
            ))
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap(),
        )
    };
    let mut refused = Vec::new();
    for _ in 0..200 {
        for (name, strategy) in [("start", "Always"), ("stop", "Halted")] {
            let (code, body) = call_as(&app, action(name)).await;
            if code != StatusCode::ACCEPTED {
                refused.push(format!("{name}: {code} {body}"));
                continue;
            }
            let (_, stored) = call(&app, get(VM)).await;
            assert_eq!(stored["spec"]["runStrategy"], strategy);
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0, "the status writer never wrote");
    assert!(
        refused.is_empty(),
        "{} of 400 actions refused while the status changed ({writes} status writes): {:?}",
        refused.len(),
        &refused[..refused.len().min(3)]
    );
}

#[tokio::test]
async fn snapshots_restores_and_clones_are_served_admitted_and_immutable() {
    const SNAPSHOTS: &str =
        "/apis/snapshot.kubevirt.io/v1beta1/namespaces/default/virtualmachinesnapshots";
    const CLONES: &str = "/apis/clone.kubevirt.io/v1beta1/namespaces/default/virtualmachineclones";
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).unwrap();
    let app = router(support::secured_state(store, dir.path()));
    let json_type = "application/json";

    // Discovery: the groups, short names and status subresources, as KubeVirt's CRDs.
    let (_, list) = call(&app, get("/apis/snapshot.kubevirt.io/v1beta1")).await;
    let names: Vec<&str> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for name in [
        "virtualmachinesnapshots",
        "virtualmachinesnapshots/status",
        "virtualmachinesnapshotcontents",
        "virtualmachinerestores",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
    let (_, clones) = call(&app, get("/apis/clone.kubevirt.io/v1beta1")).await;
    assert_eq!(
        clones["resources"][0]["shortNames"],
        json!(["vmclone", "vmclones"])
    );
    let (code, _) = call(&app, get("/openapi/v3/apis/snapshot.kubevirt.io/v1beta1")).await;
    assert_eq!(code, StatusCode::OK);

    // KubeVirt's admitter: the source must be a kubevirt.io VirtualMachine.
    let snapshot = |source: Value| {
        json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "s"}, "spec": {"source": source}})
    };
    let (code, status) = call(
        &app,
        with_body(
            "POST",
            SNAPSHOTS,
            json_type,
            &snapshot(json!({"kind": "VirtualMachine", "name": "vm"})),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_eq!(cause_fields(&status), ["spec.source.apiGroup"]);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("missing apiGroup"),
        "{status}"
    );
    let good = snapshot(json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}));
    let (code, created) = call(&app, with_body("POST", SNAPSHOTS, json_type, &good)).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    // The spec never changes after creation.
    let mut changed = created.clone();
    changed["spec"]["source"]["name"] = json!("other");
    let (code, status) = call(
        &app,
        with_body("PUT", &format!("{SNAPSHOTS}/s"), json_type, &changed),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("spec in immutable after creation")
    );

    // KubeVirt's restore admitter: a target VM that starts by itself is refused.
    let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm"},
        "spec": {"running": true, "template": {"spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}}}});
    let (code, body) = call(
        &app,
        with_body(
            "POST",
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachines",
            json_type,
            &vm,
        ),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let restore = |target: &str| {
        json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
            "metadata": {"name": format!("r-{target}")},
            "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": target},
                "virtualMachineSnapshotName": "s"}})
    };
    const RESTORES: &str =
        "/apis/snapshot.kubevirt.io/v1beta1/namespaces/default/virtualmachinerestores";
    let (code, status) = call(&app, with_body("POST", RESTORES, json_type, &restore("vm"))).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_eq!(cause_fields(&status), ["spec.target"]);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("VirtualMachine \"vm\" is not stopped"),
        "{status}"
    );
    // A VM that does not exist yet is a new VM: accepted.
    let (code, _) = call(
        &app,
        with_body("POST", RESTORES, json_type, &restore("new-vm")),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);

    // A clone's identity policy is checked.
    let clone = json!({"apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone",
        "metadata": {"name": "c", "annotations": {"clone.ferrovirt.io/tpm": "new"}},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "a"},
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "b"}}});
    let (code, status) = call(&app, with_body("POST", CLONES, json_type, &clone)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_eq!(
        cause_fields(&status),
        ["metadata.annotations[clone.ferrovirt.io/tpm]"]
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("\"copy\", \"fresh\"")
    );
}
