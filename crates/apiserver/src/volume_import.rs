//! `PUT .../persistentvolumeclaims/NAME/volumeimport?format=tar.gz|gzip|raw`: ferrovirt's own
//! upload of an exported volume into a PVC (what `ferrovirt vmexport import` uses; CDI's upload
//! proxy plays this part in KubeVirt). The PVC must be Bound and its volume empty (an import
//! never overwrites data), and a backend-storage PVC (`persistent-state-for: <vm>`) is refused
//! while its VM runs. `tar.gz` is unpacked with `ferrovirt_storage::export::unpack_archive`
//! (files and directories only, nothing outside the volume, each file written atomically);
//! `gzip` and `raw` become the volume's `disk.img`. The body is streamed, never held whole.

use std::io::{self, Read};
use std::path::Path;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use ferrovirt_resources::{PVCS, VMIS};
use ferrovirt_storage::export::unpack_archive;
use ferrovirt_store::Store;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::encode::ok;
use crate::error::ApiError;
use crate::request::ApiRequest;

/// A blocking reader over the request body's chunks.
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, io::Error>>,
    current: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// The volume directory of a Bound PVC that may be filled now.
fn target_volume(
    store: &Store,
    data_dir: &Path,
    ns: &str,
    name: &str,
) -> Result<(std::path::PathBuf, Value), ApiError> {
    let pvc = store
        .get(&PVCS.store_kind(), Some(ns), name)
        .map_err(|_| ApiError::object_not_found("persistentvolumeclaims", name))?;
    let volume = pvc
        .pointer("/spec/volumeName")
        .and_then(Value::as_str)
        .filter(|_| pvc.pointer("/status/phase").and_then(Value::as_str) == Some("Bound"))
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "persistentvolumeclaim {ns}/{name} is not Bound yet; import once it is"
            ))
        })?;
    if volume.contains('/') || volume.starts_with('.') {
        return Err(ApiError::internal(format!("bad volume name {volume:?}")));
    }
    if let Some(vm) = pvc
        .pointer(&format!(
            "/metadata/labels/{}",
            ferrovirt_storage::backend::PVC_LABEL_KEY
        ))
        .and_then(Value::as_str)
        && let Ok(vmi) = store.get(&VMIS.store_kind(), Some(ns), vm)
        && !ferrovirt_resources::kubevirt::is_final(&vmi)
    {
        return Err(ApiError::conflict(format!(
            "persistentvolumeclaim {ns}/{name} holds the state of VirtualMachine {vm}, which is running; stop it first"
        )));
    }
    let dir = data_dir.join("volumes").join(volume);
    // What an import that failed or was interrupted (a crash) left is removed: the volume is
    // empty again and this import may fill it.
    if ferrovirt_storage::export::import_incomplete(&dir) {
        ferrovirt_storage::export::abandon_import(&dir).map_err(|e| {
            ApiError::internal(format!(
                "persistentvolumeclaim {ns}/{name} holds an incomplete import that could not be removed: {e}"
            ))
        })?;
        tracing::warn!(
            namespace = ns,
            pvc = name,
            "removed the files of an incomplete import"
        );
    }
    let mut entries = std::fs::read_dir(&dir).map_err(|e| {
        ApiError::internal(format!("cannot read the volume {}: {e}", dir.display()))
    })?;
    if entries.next().is_some() {
        return Err(ApiError::conflict(format!(
            "persistentvolumeclaim {ns}/{name} already holds data; an import only fills an empty \
             volume (delete and re-create the PVC to import again)"
        )));
    }
    Ok((dir, pvc))
}

/// The answer to a failed import: a storage fault is the server's (507 when the filesystem is
/// full, 500 otherwise), anything else is the body's (400).
fn import_error(
    format: &str,
    ns: &str,
    pvc: &str,
    error: &ferrovirt_storage::export::ExportError,
) -> ApiError {
    match ferrovirt_storage::atomic::storage_fault(error) {
        Some(fault) => {
            let full = ferrovirt_storage::atomic::is_full(&fault);
            let message = format!(
                "the {format} import into persistentvolumeclaim {ns}/{pvc} failed on the \
                 server's storage: {error}; what was written is removed, the volume is empty \
                 again: {} and import again",
                if full {
                    "free space on the volume's filesystem"
                } else {
                    "check the volume's filesystem and disk (dmesg)"
                }
            );
            if full {
                ApiError::new(507, "InsufficientStorage", message)
            } else {
                ApiError::internal(message)
            }
        }
        None => ApiError::bad_request(format!(
            "the {format} body could not be imported: {error}; what was written is removed, the \
             volume is empty again"
        )),
    }
}

/// Records a v1 Event about the PVC (CDI's reasons `ImportSucceeded` / `ErrImportFailed`).
fn record_event(store: &Store, pvc: &Value, warning: bool, reason: &str, message: &str) {
    let meta = |key: &str| {
        pvc.pointer(&format!("/metadata/{key}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let name = pvc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let now = ferrovirt_store::now_rfc3339();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": meta("namespace")},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "name": name,
            "namespace": meta("namespace"),
            "uid": meta("uid"),
            "resourceVersion": meta("resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": if warning { "Warning" } else { "Normal" },
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": "ferrovirt-apiserver", "host": "ferrovirt"},
        "reportingComponent": "ferrovirt-apiserver",
        "reportingInstance": "ferrovirt",
    });
    if let Err(error) = store.create(&ferrovirt_resources::EVENTS.store_kind(), event) {
        tracing::warn!(%error, "could not record an event");
    }
}

/// Handles one import.
pub async fn handler(
    app: &AppState,
    request: &ApiRequest,
    namespace: &str,
    name: &str,
    body: Body,
) -> Response {
    let format = request
        .params
        .get("format")
        .map_or("tar.gz", String::as_str)
        .to_owned();
    if !matches!(format.as_str(), "tar.gz" | "gzip" | "raw") {
        return ApiError::bad_request(format!(
            "format {format:?} is not one of tar.gz, gzip, raw (the export's formats of a volume)"
        ))
        .into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(8);
    let mut stream = body.into_data_stream();
    tokio::spawn(async move {
        while let Some(chunk) = stream.next().await {
            let item = chunk.map_err(io::Error::other);
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    let store = app.store.clone();
    let data_dir = app.data_dir.clone();
    let (ns, pvc) = (namespace.to_owned(), name.to_owned());
    let outcome = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let (dir, pvc_object) = target_volume(&store, &data_dir, &ns, &pvc)?;
        let mut reader = BodyReader {
            rx,
            current: Bytes::new(),
        };
        let imported = ferrovirt_storage::export::begin_import(&dir).and_then(|()| {
            let (files, bytes) = match format.as_str() {
                "tar.gz" => {
                    let unpacked = unpack_archive(&mut reader, &dir)?;
                    (unpacked.files, unpacked.bytes)
                }
                _ => {
                    let image = dir.join("disk.img");
                    ferrovirt_storage::failpoints::hit("import.write-file").map_err(|source| {
                        ferrovirt_storage::export::ExportError::Io {
                            action: "write",
                            path: image.clone(),
                            source,
                        }
                    })?;
                    let mut written = 0;
                    let gzip = format == "gzip";
                    ferrovirt_storage::atomic::write_file_with(&image, 0o600, |file| {
                        written = if gzip {
                            io::copy(&mut flate2_reader(&mut reader), file)?
                        } else {
                            io::copy(&mut reader, file)?
                        };
                        Ok(())
                    })?;
                    (vec!["disk.img".to_owned()], written)
                }
            };
            ferrovirt_storage::export::finish_import(&dir)?;
            Ok((files, bytes))
        });
        let (files, bytes) = match imported {
            Ok(done) => done,
            Err(error) => {
                let answer = import_error(&format, &ns, &pvc, &error);
                let mut message = answer.message.clone();
                if let Err(e) = ferrovirt_storage::export::abandon_import(&dir) {
                    message = format!(
                        "{message} (removing the partial import failed too: {e}; the next import removes it)"
                    );
                }
                record_event(&store, &pvc_object, true, "ErrImportFailed", &message);
                return Err(ApiError { message, ..answer });
            }
        };
        let message = format!(
            "imported {} file(s), {bytes} bytes, into persistentvolumeclaim {ns}/{pvc}",
            files.len()
        );
        record_event(&store, &pvc_object, false, "ImportSucceeded", &message);
        Ok(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Success",
            "message": message,
            "details": {"name": pvc, "kind": "persistentvolumeclaims", "causes": files.iter().map(|f| json!({"field": f})).collect::<Vec<_>>()},
        }))
    })
    .await;
    match outcome {
        Ok(Ok(status)) => ok(&status),
        Ok(Err(error)) => error.into_response(),
        Err(error) => ApiError::internal(format!("import task failed: {error}")).into_response(),
    }
}

fn flate2_reader<R: Read>(reader: R) -> impl Read {
    ferrovirt_storage::export::gunzip(reader)
}
