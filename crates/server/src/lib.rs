//! `ferrovirt serve`: the Kubernetes-style REST API (axum) over the store, admission through the
//! api crate, and the level-triggered controllers that turn VirtualMachines into running VMs through
//! the vmm crate.
//!
//! Modules: [`route`] (URL -> resource), [`api`] (REST handlers and watch), [`discovery`]
//! (incl. the OpenAPI v3 documents kubectl reads to leave validation to the server),
//! [`admission`], [`strict`] (unknown fields, `fieldValidation=Strict`), [`patch`], [`table`],
//! [`http`], [`protobuf`] (`kubectl create namespace`), [`error`] (Status objects), [`gc`] (owner
//! references, namespace deletion), [`events`], [`console`] (WebSocket serial console),
//! [`serial_log`] (the serial output of the current or last run), [`state_api`] (state
//! generations and rollback),
//! [`templates`] (Harvester template version numbering), [`ui`] (the embedded web UI at `/`),
//! [`controllers`].
//!
//! Entry point: [`serve`] with a [`ServeConfig`]; [`router`] builds the HTTP router alone (tests).

pub mod admission;
pub mod api;
pub mod console;
pub mod controllers;
pub mod discovery;
pub mod error;
pub mod events;
pub mod gc;
pub mod http;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod route;
pub mod serial_log;
pub mod state_api;
pub mod strict;
pub mod table;
pub mod templates;
pub mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{any, get};
use ferrovirt_api::config::{default_kubevirt, default_storage_class};
use ferrovirt_store::{Store, StoreError, StoreOptions};
use serde_json::json;

use crate::resources::{KUBEVIRTS, NAMESPACES, STORAGE_CLASSES};

/// The database file in the data dir.
pub const DATABASE_FILE: &str = "ferrovirt.db";

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub data_dir: PathBuf,
}

/// What `ferrovirt serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Run the controllers and the engine (tests of the API alone switch them off).
    pub controllers: bool,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the engine could not start: {0}")]
    Engine(#[from] ferrovirt_vmm::engine::EngineError),
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// The HTTP router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/version", get(|| async { axum::Json(discovery::version()) }))
        .route("/version/", get(|| async { axum::Json(discovery::version()) }))
        .route("/api", get(|| async { axum::Json(discovery::core_versions()) }))
        .route("/api/", get(|| async { axum::Json(discovery::core_versions()) }))
        .route("/apis", get(|| async { axum::Json(discovery::group_list()) }))
        .route("/apis/", get(|| async { axum::Json(discovery::group_list()) }))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(|| async { axum::Json(discovery::openapi_v3_root()) }))
        .route("/openapi/v3/{*path}", get(openapi_v3))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances/{name}/console",
            get(console::handler),
        )
        .route("/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}/serial-log", get(serial_log::handler))
        .route(
            "/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}/stategenerations",
            get(state_api::list),
        )
        .route(
            "/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}/staterollback",
            axum::routing::put(state_api::rollback),
        )
        .route("/api/{*rest}", any(api::core))
        .route("/apis/{*rest}", any(api::groups))
        .fallback(ui::fallback)
        .with_state(state)
}

async fn openapi_v3(
    axum::extract::Path(path): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match discovery::openapi_v3_group_version(&path) {
        Some(doc) => axum::Json(doc).into_response(),
        None => {
            error::ApiError::not_found(format!("no OpenAPI v3 document for {path}")).into_response()
        }
    }
}

/// OpenAPI v2 as JSON (kubectl asks for protobuf, which is not served: 406, and it uses v3).
async fn openapi_v2(headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    let accepts_json = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("json") || v.contains("*/*"));
    if !headers.contains_key(axum::http::header::ACCEPT) || accepts_json {
        return openapi_v2_json().await;
    }
    error::ApiError::new(
        406,
        "NotAcceptable",
        "only application/json is served for /openapi/v2",
    )
    .into_response()
}

async fn openapi_v2_json() -> axum::response::Response {
    static DOC: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let bytes =
        DOC.get_or_init(|| serde_json::to_vec(&discovery::openapi_v2()).unwrap_or_default());
    http::bytes_response(StatusCode::OK, bytes.clone())
}

/// Opens the store in `data_dir` and creates the embedded defaults on first run: the KubeVirt CR
/// (VMPersistentState and HostDisk gates), the `local-path` StorageClass, namespaces `default`
/// and `kubevirt`.
pub fn open_store(data_dir: &std::path::Path) -> Result<Store, ServeError> {
    std::fs::create_dir_all(data_dir).map_err(|source| ServeError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let store = Store::open(data_dir.join(DATABASE_FILE), StoreOptions::default())?;
    let create_if_missing =
        |kind: &ferrovirt_store::ResourceKind, object: serde_json::Value| match store
            .create(kind, object)
        {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        };
    for ns in ["default", "kubevirt"] {
        create_if_missing(
            &NAMESPACES.store_kind(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}}),
        )?;
    }
    // The defaults are created only once: an admin may edit or delete them afterwards.
    let seeded = store
        .get(&NAMESPACES.store_kind(), None, "kubevirt")
        .ok()
        .and_then(|ns| {
            ns.pointer("/metadata/annotations/ferrovirt.io~1defaults-created")
                .cloned()
        })
        .is_some();
    if !seeded {
        if let Ok(kv) = serde_json::to_value(default_kubevirt()) {
            create_if_missing(&KUBEVIRTS.store_kind(), kv)?;
        }
        if let Ok(sc) = serde_json::to_value(default_storage_class()) {
            create_if_missing(&STORAGE_CLASSES.store_kind(), sc)?;
        }
        let mut ns = store.get(&NAMESPACES.store_kind(), None, "kubevirt")?;
        ns["metadata"]["annotations"] = json!({"ferrovirt.io/defaults-created": "true"});
        store.update(&NAMESPACES.store_kind(), ns)?;
    }
    Ok(store)
}

/// Runs the server until SIGTERM/SIGINT. Running VMs are left running (they are adopted by the
/// next `serve`).
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let store = open_store(&config.data_dir)?;
    let state = AppState {
        store: store.clone(),
        data_dir: config.data_dir.clone(),
    };
    gc::spawn(store.clone());
    if config.controllers {
        controllers::spawn(store.clone(), config.data_dir.clone()).await?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(config.listen);
    if !local.ip().is_loopback() {
        tracing::warn!(listen = %local, "listening beyond loopback: the API has no authentication; anyone who reaches this address controls the VMs");
    }
    tracing::info!(listen = %local, data_dir = %config.data_dir.display(), "ferrovirt API server ready");
    let server = axum::serve(listener, router(state));
    tokio::select! {
        result = server => result.map_err(ServeError::Http)?,
        () = shutdown_signal() => {
            tracing::info!("shutting down; running VMs keep running and are adopted by the next start");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
