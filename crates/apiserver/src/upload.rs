//! CDI's upload side on ferrovirt's own server: `UploadTokenRequest` (create only, answered with
//! `status.token`, never stored; RBAC's `create uploadtokenrequests.upload.cdi.kubevirt.io` is
//! what allows a user to upload) and the upload proxy's paths `/v1beta1/upload` (the image is
//! written, checked and published before the answer) and `/v1beta1/upload-async` (answered once
//! the bytes have arrived; the check and publish go on). The token names one PVC: it must be the
//! PVC of an `upload` DataVolume, bound, not yet filled.
//!
//! The bytes go to a temporary file in the PVC's volume; then the importer
//! (`ferrovirt_importer`: format by magic, qemu-img with `-f`, no backing files, atomic publish
//! of `disk.img`) runs on it, and the outcome is written to the PVC's annotations
//! (`cdi.kubevirt.io/storage.pod.phase` and the running condition's message), which the
//! DataVolume controller turns into the DataVolume's phase, conditions and Events, as CDI's
//! upload server pod does.
//!
//! Resume: an upload whose connection breaks keeps the bytes that arrived (synced, with their
//! count in a sidecar written crash-safely every [`SYNC_EVERY`] bytes and at the break) and the
//! DataVolume stays `UploadReady`. `HEAD` on the upload path (with the token) answers
//! `Upload-Offset: N`, the bytes kept; a `POST` with `Upload-Offset: N` appends from there (the
//! header of the IETF resumable-uploads draft). A `POST` without it starts from the first byte,
//! as CDI's upload proxy does. Only complete bodies are imported.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrovirt_api::cdi::{DataVolume, annotations};
use ferrovirt_resources::{DATA_VOLUMES, PVCS, time::now_unix};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::app::AppState;
use crate::encode::json_response;
use crate::error::{ApiError, ApiResult};
use crate::request::ApiRequest;

/// PVCs with an upload in progress (one at a time per PVC).
fn uploads_in_progress() -> &'static Mutex<HashSet<(String, String)>> {
    static IN_PROGRESS: std::sync::OnceLock<Mutex<HashSet<(String, String)>>> =
        std::sync::OnceLock::new();
    IN_PROGRESS.get_or_init(Mutex::default)
}

/// `POST .../namespaces/NS/uploadtokenrequests`: a token for the PVC `spec.pvcName`.
pub async fn token_request(
    state: &AppState,
    request: &ApiRequest,
    namespace: &str,
    body: Body,
) -> ApiResult<Response> {
    let bytes = crate::http::read_body(body).await?;
    let mut object = crate::http::decode_object(&request.content_type, &bytes)?;
    let typed = match ferrovirt_api::Object::from_value(object.clone(), "request body", 1) {
        Ok(ferrovirt_api::Object::UploadTokenRequest(r)) => r,
        Ok(other) => {
            return Err(ApiError::bad_request(format!(
                "expected an upload.cdi.kubevirt.io/v1beta1 UploadTokenRequest, got {}/{}",
                other.api_version(),
                other.kind()
            )));
        }
        Err(error) => return Err(ApiError::bad_request(error.to_string())),
    };
    let cluster = ferrovirt_api::ClusterConfig::default();
    let object_typed = ferrovirt_api::Object::UploadTokenRequest(typed.clone());
    if let Err(invalid) = ferrovirt_api::admit(
        &object_typed,
        &ferrovirt_api::AdmissionContext::create(&cluster),
    ) {
        return Err(ApiError::from(invalid));
    }
    let token = state
        .upload_tokens
        .issue(namespace, &typed.spec.pvc_name, now_unix());
    object["status"] = json!({ "token": token });
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("namespace".into(), json!(namespace));
    }
    Ok(json_response(StatusCode::CREATED, &object))
}

fn cdi_error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, message.into()).into_response()
}

/// The header of a resumed upload (and of the answer to `HEAD`): the bytes already received.
pub const UPLOAD_OFFSET: &str = "upload-offset";

/// How often the received bytes are synced and counted in the sidecar (a resume point).
const SYNC_EVERY: u64 = 64 * 1024 * 1024;

/// The bytes of an upload in progress or interrupted, in the PVC's volume.
const RECEIVED: &str = ".upload.import-tmp";
/// Their synced count (JSON `{"bytes": N}`), written crash-safely.
const RECEIVED_COUNT: &str = ".upload.received.json";

/// `POST /v1beta1/upload[-async]` with `Authorization: Bearer <upload token>`; `HEAD` answers
/// how many bytes an interrupted upload kept.
pub async fn upload(
    state: &AppState,
    request: &ApiRequest,
    asynchronous: bool,
    body: Body,
) -> Response {
    let method = &request.method;
    let head = *method == axum::http::Method::HEAD || *method == axum::http::Method::GET;
    if !head && *method != axum::http::Method::POST && *method != axum::http::Method::PUT {
        return cdi_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "uploads are POST (or PUT) requests; HEAD tells how many bytes a resumed upload \
             starts from",
        );
    }
    let Some(token) = request.bearer_token.as_ref() else {
        return cdi_error(
            StatusCode::UNAUTHORIZED,
            "missing upload token: send Authorization: Bearer <token of an UploadTokenRequest>",
        );
    };
    let claims = match state.upload_tokens.verify(&token.0, now_unix()) {
        Ok(claims) => claims,
        Err(error) => return cdi_error(StatusCode::UNAUTHORIZED, error.to_string()),
    };
    if head {
        return match upload_target(state, &claims.namespace, &claims.pvc).await {
            Ok((_, volume, _)) => {
                let kept = kept_bytes(&volume).await;
                (StatusCode::NO_CONTENT, [(UPLOAD_OFFSET, kept.to_string())]).into_response()
            }
            Err(response) => response,
        };
    }
    let resume_at = match request.upload_offset.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(offset)) => Some(offset),
        Some(Err(_)) => {
            return cdi_error(
                StatusCode::BAD_REQUEST,
                "the Upload-Offset header must be a number of bytes (the HEAD answer's)",
            );
        }
    };
    let key = (claims.namespace.clone(), claims.pvc.clone());
    {
        let mut in_progress = uploads_in_progress()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !in_progress.insert(key.clone()) {
            return cdi_error(
                StatusCode::CONFLICT,
                format!("an upload into {} is already in progress", claims.pvc),
            );
        }
    }
    let result = receive(
        state,
        &claims.namespace,
        &claims.pvc,
        asynchronous,
        resume_at,
        body,
    )
    .await;
    if !asynchronous || result.is_err() {
        uploads_in_progress()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key);
    }
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(response) => response,
    }
}

/// The bytes an interrupted upload kept (synced and counted), 0 when none.
async fn kept_bytes(volume: &Path) -> u64 {
    let Ok(text) = tokio::fs::read(volume.join(RECEIVED_COUNT)).await else {
        return 0;
    };
    let counted = serde_json::from_slice::<Value>(&text)
        .ok()
        .and_then(|v| v["bytes"].as_u64())
        .unwrap_or(0);
    let on_disk = tokio::fs::metadata(volume.join(RECEIVED))
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    // A count beyond what is on disk cannot be trusted: start again.
    if counted <= on_disk { counted } else { 0 }
}

/// Records `bytes` as the resume point (after they were synced).
async fn count_received(volume: &Path, bytes: u64) -> Result<(), String> {
    let path = volume.join(RECEIVED_COUNT);
    let text = json!({ "bytes": bytes }).to_string();
    tokio::task::spawn_blocking(move || {
        ferrovirt_storage::atomic::write_file(&path, text.as_bytes(), 0o600)
    })
    .await
    .map_err(|e| format!("cannot record the upload's progress: {e}"))?
    .map_err(|e| format!("cannot record the upload's progress: {e}"))
}

async fn forget_received(volume: &Path) {
    let _ = tokio::fs::remove_file(volume.join(RECEIVED)).await;
    let _ = tokio::fs::remove_file(volume.join(RECEIVED_COUNT)).await;
}

/// The PVC's volume directory, when the PVC is an upload target that is bound and not filled.
async fn upload_target(
    state: &AppState,
    ns: &str,
    pvc_name: &str,
) -> Result<(Value, PathBuf, DataVolume), Response> {
    let pvc = crate::handlers::get(state, PVCS, Some(ns.to_owned()), pvc_name.to_owned())
        .await
        .map_err(|_| {
            cdi_error(
                StatusCode::NOT_FOUND,
                format!("PVC {ns}/{pvc_name} not found"),
            )
        })?;
    let annotation = |key: &str| {
        pvc.pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if annotation(annotations::UPLOAD_REQUEST).is_none() {
        return Err(cdi_error(
            StatusCode::BAD_REQUEST,
            format!("PVC {pvc_name} is not an upload target (its DataVolume has no upload source)"),
        ));
    }
    if annotation(annotations::POD_PHASE).as_deref() == Some("Succeeded") {
        return Err(cdi_error(
            StatusCode::CONFLICT,
            format!("the upload into {pvc_name} has already completed"),
        ));
    }
    let volume = pvc
        .pointer("/spec/volumeName")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty());
    let bound = pvc.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
    let Some(volume) = volume.filter(|_| bound) else {
        return Err(cdi_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("PVC {pvc_name} is not bound yet; wait for the DataVolume's UploadReady phase"),
        ));
    };
    let dv = crate::handlers::get(
        state,
        DATA_VOLUMES,
        Some(ns.to_owned()),
        pvc_name.to_owned(),
    )
    .await
    .ok()
    .and_then(|v| serde_json::from_value::<DataVolume>(v).ok())
    .unwrap_or_default();
    let path = state.data_dir.join("volumes").join(volume);
    Ok((pvc, path, dv))
}

async fn receive(
    state: &AppState,
    ns: &str,
    pvc_name: &str,
    asynchronous: bool,
    resume_at: Option<u64>,
    body: Body,
) -> Result<(), Response> {
    let (_, volume, dv) = upload_target(state, ns, pvc_name).await?;
    let received = volume.join(RECEIVED);
    let start = match resume_at {
        None | Some(0) => 0,
        Some(offset) => {
            let kept = kept_bytes(&volume).await;
            if offset != kept {
                return Err((
                    StatusCode::CONFLICT,
                    [(UPLOAD_OFFSET, kept.to_string())],
                    format!(
                        "this upload can continue at byte {kept}, not at {offset}: ask again \
                         with HEAD and resume from its Upload-Offset"
                    ),
                )
                    .into_response());
            }
            offset
        }
    };
    set_phase(state, ns, pvc_name, "Running", None).await;
    match write_body(&volume, start, body).await {
        Ok(_) => {}
        Err(BodyError::Interrupted { kept, message }) => {
            // The DataVolume stays UploadReady: the client may resume from `kept`.
            let message = format!(
                "{message}; {kept} bytes are kept: run the upload again (ferrovirt image-upload \
                 --no-create) and it continues from there"
            );
            set_phase(state, ns, pvc_name, "Running", Some(&message)).await;
            return Err(cdi_error(StatusCode::BAD_REQUEST, message));
        }
        Err(BodyError::Failed(message)) => {
            forget_received(&volume).await;
            set_phase(state, ns, pvc_name, "Failed", Some(&message)).await;
            return Err(cdi_error(StatusCode::BAD_REQUEST, message));
        }
    }
    let state = state.clone();
    let (ns, pvc_name) = (ns.to_owned(), pvc_name.to_owned());
    let process = async move {
        let outcome = import(&received, &volume, &dv).await;
        forget_received(&volume).await;
        match &outcome {
            Ok(()) => set_phase(&state, &ns, &pvc_name, "Succeeded", None).await,
            Err(message) => set_phase(&state, &ns, &pvc_name, "Failed", Some(message)).await,
        }
        uploads_in_progress()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(ns, pvc_name));
        outcome
    };
    if asynchronous {
        tokio::spawn(process);
        return Ok(());
    }
    process
        .await
        .map_err(|message| cdi_error(StatusCode::BAD_REQUEST, message))
}

/// Why a body was not received whole.
enum BodyError {
    /// The connection broke: the synced bytes (`kept`) are a resume point.
    Interrupted { kept: u64, message: String },
    /// The bytes cannot be stored (no space, I/O error): nothing is kept.
    Failed(String),
}

/// Writes the body into the volume's [`RECEIVED`] from byte `start` (truncating what lies beyond
/// it), syncing and counting every [`SYNC_EVERY`] bytes; the total on success.
async fn write_body(volume: &Path, start: u64, body: Body) -> Result<u64, BodyError> {
    use tokio::io::AsyncSeekExt;
    let store = |e: std::io::Error| {
        BodyError::Failed(if e.raw_os_error() == Some(28) {
            format!("no space left on the volume: {e}")
        } else {
            format!("cannot store the upload: {e}")
        })
    };
    let path = volume.join(RECEIVED);
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(start == 0)
        .open(&path)
        .await
        .map_err(store)?;
    file.set_len(start).await.map_err(store)?;
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(store)?;
    if start == 0 {
        let _ = tokio::fs::remove_file(volume.join(RECEIVED_COUNT)).await;
    }
    let mut written = start;
    let mut counted = start;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                // Keep what arrived as a resume point (synced before it is counted).
                let kept = match file.sync_all().await {
                    Ok(()) => match count_received(volume, written).await {
                        Ok(()) => written,
                        Err(_) => counted,
                    },
                    Err(_) => counted,
                };
                return Err(BodyError::Interrupted {
                    kept,
                    message: format!("the upload was interrupted: {e}"),
                });
            }
        };
        file.write_all(&chunk).await.map_err(store)?;
        written += chunk.len() as u64;
        if written - counted >= SYNC_EVERY {
            file.sync_all().await.map_err(store)?;
            count_received(volume, written)
                .await
                .map_err(BodyError::Failed)?;
            counted = written;
        }
    }
    file.sync_all().await.map_err(store)?;
    Ok(written)
}

async fn import(received: &Path, volume: &Path, dv: &DataVolume) -> Result<(), String> {
    let request = ferrovirt_importer::ImportRequest {
        source: ferrovirt_importer::Source::File(received.to_owned()),
        volume: volume.to_owned(),
        image_bytes: dv.image_bytes(),
        archive: dv.is_archive(),
        checksum: None,
    };
    let progress: Arc<ferrovirt_importer::Progress> = ferrovirt_importer::Progress::new();
    tokio::task::spawn_blocking(move || ferrovirt_importer::run(&request, progress))
        .await
        .map_err(|e| format!("the upload's import task failed: {e}"))?
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Writes the upload's phase (and failure message) to the PVC's annotations, retrying on a
/// conflict with another writer.
async fn set_phase(state: &AppState, ns: &str, pvc_name: &str, phase: &str, message: Option<&str>) {
    for _ in 0..5 {
        let Ok(mut pvc) =
            crate::handlers::get(state, PVCS, Some(ns.to_owned()), pvc_name.to_owned()).await
        else {
            return;
        };
        let Some(meta) = pvc.get_mut("metadata").and_then(Value::as_object_mut) else {
            return;
        };
        let annotations_map = meta.entry("annotations").or_insert_with(|| json!({}));
        annotations_map[annotations::POD_PHASE] = json!(phase);
        match message {
            Some(m) => {
                annotations_map[annotations::RUNNING_MESSAGE] = json!(m);
                annotations_map[annotations::RUNNING_REASON] = json!("Error");
            }
            None => {
                if let Some(map) = annotations_map.as_object_mut() {
                    map.remove(annotations::RUNNING_MESSAGE);
                    map.remove(annotations::RUNNING_REASON);
                }
            }
        }
        let written =
            crate::handlers::blocking(&state.store, move |s| s.update(&PVCS.store_kind(), pvc))
                .await;
        if written.is_ok() {
            return;
        }
    }
    tracing::warn!(
        ns,
        pvc_name,
        phase,
        "cannot record the upload's phase on the PVC"
    );
}
