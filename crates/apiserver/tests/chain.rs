//! Every path passes the chain: a stage sees (and can refuse) the REST API, the subresources
//! (console WebSocket, serial-log, state generations and rollback, start), discovery, OpenAPI,
//! health checks and the web UI's files, with Kubernetes' request attributes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ferrovirt_apiserver::error::ApiError;
use ferrovirt_apiserver::{ApiRequest, AppState, Chain, Stage, UserInfo, router};
use ferrovirt_store::{Store, StoreOptions};
use tower::ServiceExt;

/// What the stage saw: (verb, apiGroup, resource, subresource, namespace, name, path, user, status).
type Seen = Vec<(
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    u16,
)>;

/// Sets a user (as an authentication stage would), refuses `DELETE` with 403 (as authorization
/// would) and records every outcome (as the audit log would).
struct Recorder {
    seen: Arc<Mutex<Seen>>,
}

impl Stage for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn admit(&self, request: &mut ApiRequest) -> Result<(), ApiError> {
        request.user = Some(UserInfo {
            name: "alice".into(),
            ..UserInfo::default()
        });
        if request.attributes.verb == "delete" {
            return Err(ApiError::new(403, "Forbidden", "deletes are refused here"));
        }
        Ok(())
    }

    fn completed(&self, request: &ApiRequest, status: StatusCode, _: Duration) {
        let a = &request.attributes;
        self.seen.lock().unwrap().push((
            a.verb.clone(),
            a.api_group.clone(),
            a.resource.clone(),
            a.subresource.clone(),
            a.namespace.clone(),
            a.name.clone(),
            a.path.clone(),
            request
                .user
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_default(),
            status.as_u16(),
        ));
    }
}

#[tokio::test]
async fn every_route_passes_the_stages() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("ferrovirt.db"), StoreOptions::default()).unwrap();
    ferrovirt_resources::cluster::seed_defaults(&store).unwrap();
    let seen = Arc::new(Mutex::new(Seen::new()));
    let chain = Chain::new(vec![Arc::new(Recorder { seen: seen.clone() })]);
    assert_eq!(chain.names(), ["recorder", "request-log"]);
    let app = router(AppState::with_chain(
        store,
        dir.path().to_path_buf(),
        chain,
        ferrovirt_apiserver::security::PolicyHandle::default(),
    ));
    let sub = "/apis/subresources.kubevirt.io/v1/namespaces/default";
    let requests = [
        ("GET", "/api/v1/namespaces".to_owned()),
        ("DELETE", "/api/v1/namespaces/default".to_owned()),
        ("GET", format!("{sub}/virtualmachineinstances/vm1/console")),
        ("GET", format!("{sub}/virtualmachines/vm1/serial-log")),
        ("GET", format!("{sub}/virtualmachines/vm1/stategenerations")),
        ("PUT", format!("{sub}/virtualmachines/vm1/staterollback")),
        ("PUT", format!("{sub}/virtualmachines/vm1/start")),
        ("GET", "/apis".to_owned()),
        ("GET", "/openapi/v3".to_owned()),
        ("GET", "/healthz".to_owned()),
        ("GET", "/".to_owned()),
        (
            "GET",
            "/apis/subresources.kubevirt.io/v1/deletedvmstates".to_owned(),
        ),
        ("GET", format!("{sub}/deletedvmstates")),
        (
            "DELETE",
            format!("{sub}/deletedvmstates/2b7d1f0e-6c1a-4f0e-9d7e-3a4b5c6d7e8f"),
        ),
        ("DELETE", format!("{sub}/deletedvmstates")),
        (
            "GET",
            format!("{sub}/virtualmachineinstances/vm1/guestosinfo"),
        ),
    ];
    for (method, uri) in &requests {
        let request = Request::builder()
            .method(*method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(request).await.unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), requests.len(), "{seen:#?}");
    for ((method, uri), row) in requests.iter().zip(seen.iter()) {
        assert_eq!(&row.6, uri, "{method} {uri}");
        assert_eq!(row.7, "alice", "{method} {uri}");
    }
    let row = |i: usize| {
        let r = &seen[i];
        (
            r.0.as_str(),
            r.1.as_str(),
            r.2.as_str(),
            r.3.as_str(),
            r.4.as_str(),
            r.5.as_str(),
            r.8,
        )
    };
    assert_eq!(row(0), ("list", "", "namespaces", "", "", "", 200));
    assert_eq!(
        row(1),
        ("delete", "", "namespaces", "", "default", "default", 403)
    );
    assert_eq!(
        row(2),
        (
            "get",
            "subresources.kubevirt.io",
            "virtualmachineinstances",
            "console",
            "default",
            "vm1",
            400
        )
    );
    assert_eq!(row(3).3, "serial-log");
    assert_eq!(row(4).3, "stategenerations");
    assert_eq!(
        row(5),
        (
            "update",
            "subresources.kubevirt.io",
            "virtualmachines",
            "staterollback",
            "default",
            "vm1",
            400
        )
    );
    assert_eq!(
        row(6),
        (
            "update",
            "subresources.kubevirt.io",
            "virtualmachines",
            "start",
            "default",
            "vm1",
            404
        )
    );
    for i in 7..=10 {
        assert_eq!(row(i).0, "get");
        assert_eq!(row(i).2, "", "non-resource URL {}", seen[i].6);
        assert_eq!(row(i).6, 200, "{}", seen[i].6);
    }
    // The kept state of deleted VMs: a resource of subresources.kubevirt.io RBAC can name.
    let group = "subresources.kubevirt.io";
    assert_eq!(row(11), ("list", group, "deletedvmstates", "", "", "", 200));
    assert_eq!(
        row(12),
        ("list", group, "deletedvmstates", "", "default", "", 200)
    );
    assert_eq!(
        row(13),
        (
            "delete",
            group,
            "deletedvmstates",
            "",
            "default",
            "2b7d1f0e-6c1a-4f0e-9d7e-3a4b5c6d7e8f",
            403
        )
    );
    assert_eq!(
        row(14),
        (
            "deletecollection",
            group,
            "deletedvmstates",
            "",
            "default",
            "",
            200
        )
    );
    // What the guest agent reports: a subresource RBAC names (in kubevirt.io:view); no VMI here.
    assert_eq!(
        row(15),
        (
            "get",
            group,
            "virtualmachineinstances",
            "guestosinfo",
            "default",
            "vm1",
            404
        )
    );
}
