//! KubeVirt's export server, behind the export proxy's paths (`export_path`): the volumes of a
//! VirtualMachineExport as `raw` (`disk.img`), `gzip` (`disk.img.gz`), `tar.gz` (`disk.tar.gz`)
//! and `dir/` (a listing and each file), and the manifests `all` and `secret`.
//!
//! A request is answered only with the export's token (`x-kubevirt-export-token` header or query
//! parameter, compared in constant time with the `token` of the Secret the export names), never
//! with the API's own credentials; an export past its TTL is refused (410), and the source is
//! checked again at every request (a VM started since the export became Ready is refused with
//! KubeVirt's "is running" message). Files are streamed from a blocking task through a bounded
//! channel (no whole-volume buffering); `Range` (one range) and `If-Range` with the volume's ETag
//! let a broken download resume. All bytes come through `ferrovirt_storage::export`.
//!
//! A backend-storage volume (of a VM or a snapshot) is exported as KubeVirt holds it: plain. A
//! TPM state and a VARS file encrypted at rest are decrypted with the VM's data key
//! (`ferrovirt_vmm::state_keys::plain_state_for_export`: the TPM state through swtpm in a
//! private scratch dir of the runtime base, removed afterwards; the VARS in memory) and served
//! from memory in place of the files; the wrapped key record (`meta/ferrovirt/state-key.json`,
//! meaningless off this host) is left out. The state at rest is never changed. A key that cannot
//! be unlocked fails the request (409) and serves nothing.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ferrovirt_api::export as api;
use ferrovirt_resources::export::{
    ExportedVolume, ObjectsLookup, SourceState, VolumeContent, as_list, expires_unix,
    header_secret, manifests_all, resolve,
};
use ferrovirt_resources::{PVCS, SECRETS, VM_EXPORTS};
use ferrovirt_storage::export::{
    EntryKind, ExportBytes, ExportEntry, ExportError, ExportTree, RangeWriter, is_range_complete,
    write_entry, write_gzip, write_raw,
};
use ferrovirt_store::{ListOptions, Selector, Store};
use serde_json::Value;

use crate::app::AppState;
use crate::error::ApiError;
use crate::export_path::{ExportFile, ExportResource, ExportTarget};
use crate::request::ApiRequest;

/// Chunks handed from the blocking producer to the response body.
const CHUNK: usize = 256 * 1024;

/// What a request resolved to.
enum Prepared {
    /// A small document (a manifest, a directory listing).
    Document {
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// A stream of a volume's bytes.
    Stream(Stream),
}

/// The bytes of one volume in one format.
#[derive(Clone)]
enum Source {
    Raw(PathBuf),
    Gzip(PathBuf),
    Archive(ExportTree),
    /// One file of a `dir/` export (on disk, or decrypted content in memory).
    Entry(ExportEntry),
}

struct Stream {
    source: Source,
    etag: String,
    /// Known for raw files; counted for generated formats when a range needs it.
    length: Option<u64>,
    content_type: &'static str,
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(401, "Unauthorized", message)
}

/// Constant-time comparison of two tokens (length differences are not hidden; KubeVirt's
/// `subtle.ConstantTimeCompare` does not hide them either).
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of the export's Secret.
fn expected_token(store: &Store, export: &Value) -> Result<Vec<u8>, ApiError> {
    let ns = export
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = export
        .pointer("/status/tokenSecretRef")
        .or_else(|| export.pointer("/spec/tokenSecretRef"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            unauthorized("this export has no token Secret yet; wait for it to be Ready")
        })?;
    let secret = store
        .get(&SECRETS.store_kind(), Some(ns), name)
        .map_err(|_| unauthorized("the export's token Secret is missing"))?;
    let encoded = secret
        .pointer(&format!("/data/{}", api::SECRET_TOKEN_KEY))
        .and_then(Value::as_str)
        .ok_or_else(|| unauthorized("the export's token Secret has no `token` key"))?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| unauthorized("the export's token Secret is not valid base64"))
}

/// The export, checked: present, not expired, the token right, Ready.
fn admitted_export(
    store: &Store,
    target: &ExportTarget,
    token: Option<&str>,
) -> Result<Value, ApiError> {
    let export = store
        .get(
            &VM_EXPORTS.store_kind(),
            Some(&target.namespace),
            &target.name,
        )
        .map_err(|_| {
            ApiError::object_not_found("virtualmachineexports.export.kubevirt.io", &target.name)
        })?;
    let now = ferrovirt_resources::time::now_unix();
    if let Some(expires) = expires_unix(&export)
        && now >= expires
    {
        return Err(ApiError::new(
            410,
            "Expired",
            format!(
                "VirtualMachineExport {}/{} expired at {} (its ttlDuration); create a new export",
                target.namespace,
                target.name,
                ferrovirt_store::format_rfc3339(expires)
            ),
        ));
    }
    let Some(token) = token else {
        return Err(unauthorized(&format!(
            "an export is opened only with its token: send it in the {} header or query \
             parameter (the `token` of the Secret named in status.tokenSecretRef)",
            api::TOKEN_HEADER
        )));
    };
    if !same_token(token.as_bytes(), &expected_token(store, &export)?) {
        return Err(unauthorized(&format!(
            "the {} does not match the export's token",
            api::TOKEN_HEADER
        )));
    }
    if export.pointer("/status/phase").and_then(Value::as_str) != Some("Ready") {
        let message = export
            .pointer("/status/conditions/0/message")
            .and_then(Value::as_str)
            .unwrap_or("the export is not Ready yet");
        return Err(ApiError::conflict(format!(
            "VirtualMachineExport {}/{} is not Ready: {message}",
            target.namespace, target.name
        )));
    }
    Ok(export)
}

/// The export's source as it is now (a VM started since is refused).
fn current_source(
    store: &Store,
    data_dir: &std::path::Path,
    export: &Value,
) -> Result<(Vec<ExportedVolume>, Option<Value>), ApiError> {
    let get = |resource: &ferrovirt_resources::ResourceDef, ns: &str, name: &str| {
        store.get(&resource.store_kind(), Some(ns), name).ok()
    };
    let backend = |ns: &str, vm: &str| -> Vec<Value> {
        let Ok(selector) = Selector::parse(&format!(
            "{}={vm}",
            ferrovirt_storage::backend::PVC_LABEL_KEY
        )) else {
            return Vec::new();
        };
        store
            .list(
                &PVCS.store_kind(),
                &ListOptions {
                    namespace: Some(ns.to_owned()),
                    label_selector: selector,
                    ..ListOptions::default()
                },
            )
            .map(|list| list.items)
            .unwrap_or_default()
    };
    let lookup = ObjectsLookup {
        get: &get,
        backend_pvcs: &backend,
        data_dir,
    };
    match resolve(export, &lookup) {
        SourceState::Ready { volumes, vm } => Ok((volumes, vm)),
        SourceState::NotReady { message, .. } => Err(ApiError::conflict(message)),
    }
}

/// The export's server URL + prefix and CA, from its status links.
fn link_base(export: &Value, link: &str) -> Result<(String, String), ApiError> {
    let link_value = export
        .pointer(&format!("/status/links/{link}"))
        .ok_or_else(|| ApiError::not_found(format!("the export has no {link} links")))?;
    let cert = link_value
        .get("cert")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let url = link_value
        .pointer("/manifests/0/url")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::not_found("this export has no manifests (its source is a PVC)"))?;
    let base = url
        .strip_suffix(&format!("/{link}/manifests/all"))
        .unwrap_or(url)
        .to_owned();
    Ok((base, cert))
}

fn yaml_documents(items: &[Value]) -> Result<Vec<u8>, ApiError> {
    let mut out = String::new();
    for item in items {
        let text = serde_saphyr::to_string(item)
            .map_err(|e| ApiError::internal(format!("cannot render YAML: {e}")))?;
        out.push_str(&text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("---\n");
    }
    Ok(out.into_bytes())
}

fn document(items: Vec<Value>, yaml: bool) -> Result<Prepared, ApiError> {
    if yaml {
        return Ok(Prepared::Document {
            content_type: "application/yaml",
            body: yaml_documents(&items)?,
        });
    }
    let body = serde_json::to_vec_pretty(&as_list(items))
        .map_err(|e| ApiError::internal(format!("cannot render JSON: {e}")))?;
    Ok(Prepared::Document {
        content_type: "application/json",
        body,
    })
}

/// The HTML listing of a directory, as Go's `http.FileServer` (KubeVirt's `dir` format) gives.
fn listing(tree: &ExportTree, dir: &str) -> Vec<u8> {
    let mut html = String::from(
        "<!doctype html>\n<meta name=\"viewport\" content=\"width=device-width\">\n<pre>\n",
    );
    for child in tree.children(dir) {
        let name = child.path.rsplit('/').next().unwrap_or(&child.path);
        let shown = match child.kind {
            EntryKind::Dir => format!("{name}/"),
            EntryKind::File { .. } | EntryKind::Memory { .. } => name.to_owned(),
        };
        html.push_str(&format!("<a href=\"{shown}\">{shown}</a>\n"));
    }
    html.push_str("</pre>\n");
    html.into_bytes()
}

/// Works out what to send (blocking: the store and the volume are read).
fn prepare(
    store: &Store,
    data_dir: &std::path::Path,
    target: &ExportTarget,
    token: Option<&str>,
    yaml: bool,
) -> Result<Prepared, ApiError> {
    let export = admitted_export(store, target, token)?;
    let Some(resource) = &target.resource else {
        return Err(ApiError::not_found(
            "the export server serves volumes/<name>/{disk.img,disk.img.gz,disk.tar.gz,dir/} and \
             {internal,external}/manifests/{all,secret}",
        ));
    };
    match resource {
        ExportResource::Manifests { link, secret: true } => {
            let token = token.unwrap_or("");
            let _ = link_base(&export, link)?;
            document(vec![header_secret(&target.name, None, token)], yaml)
        }
        ExportResource::Manifests {
            link,
            secret: false,
        } => {
            let (base, cert) = link_base(&export, link)?;
            let (volumes, vm) = current_source(store, data_dir, &export)?;
            let Some(vm) = vm else {
                return Err(ApiError::not_found("a PVC export has no manifests"));
            };
            document(
                manifests_all(&target.name, &base, &cert, &vm, &volumes),
                yaml,
            )
        }
        ExportResource::Volume { volume, file } => {
            let (volumes, vm) = current_source(store, data_dir, &export)?;
            let Some(exported) = volumes.iter().find(|v| v.name == *volume) else {
                return Err(ApiError::not_found(format!(
                    "the export has no volume {volume:?}; its volumes are in status.links"
                )));
            };
            if !exported.content.formats().contains(&file.format()) {
                return Err(ApiError::not_found(format!(
                    "volume {volume:?} is not served as {}; its formats: {}",
                    file.format(),
                    exported.content.formats().join(", ")
                )));
            }
            let vm_name = vm
                .as_ref()
                .and_then(|vm| vm.pointer("/metadata/name"))
                .and_then(Value::as_str)
                .unwrap_or(&target.name);
            volume_bytes(data_dir, &exported.content, file, vm_name)
        }
    }
}

fn storage_error(error: ExportError) -> ApiError {
    ApiError::internal(format!("cannot read the volume: {error}"))
}

/// Where a backend-storage volume's state files are, to decrypt them for the export: the key
/// record, and `(path in the export, file)` of each state file.
struct StateFiles {
    vm: String,
    record: PathBuf,
    tpm: Vec<(String, PathBuf)>,
    vars: Vec<(String, PathBuf)>,
}

impl StateFiles {
    /// The state files of a volume's tree: `swtpm/<uuid>/tpm2/tpm2-00.permall` and
    /// `nvram/<name>_VARS.fd`.
    fn of_volume(vm: &str, root: &std::path::Path, tree: &ExportTree) -> Self {
        use ferrovirt_storage::backend::{
            META_DIR, NVRAM_DIR, NVRAM_SUFFIX, SWTPM_DIR, TPM2_DIR, TPM2_STATE_FILE,
        };
        let mut files = StateFiles {
            vm: vm.to_owned(),
            record: root.join(META_DIR).join(ferrovirt_keys::STATE_KEY_FILE),
            tpm: Vec::new(),
            vars: Vec::new(),
        };
        for entry in tree.entries() {
            let EntryKind::File { source, .. } = &entry.kind else {
                continue;
            };
            let parts: Vec<&str> = entry.path.split('/').collect();
            match parts.as_slice() {
                [swtpm, _, tpm2, state]
                    if *swtpm == SWTPM_DIR && *tpm2 == TPM2_DIR && *state == TPM2_STATE_FILE =>
                {
                    files.tpm.push((entry.path.clone(), source.clone()));
                }
                [nvram, name] if *nvram == NVRAM_DIR && name.ends_with(NVRAM_SUFFIX) => {
                    files.vars.push((entry.path.clone(), source.clone()));
                }
                _ => {}
            }
        }
        files
    }
}

/// Replaces the state files of `tree` that are encrypted at rest with their plain content
/// (only `only`, when given: the one file a `dir/` request reads). Blocking: swtpm runs.
fn decrypt_state(
    data_dir: &std::path::Path,
    tree: &mut ExportTree,
    files: &StateFiles,
    only: Option<&str>,
) -> Result<(), ApiError> {
    let wanted = |path: &str| only.is_none_or(|only| only.trim_matches('/') == path);
    let tpm: Vec<_> = files.tpm.iter().filter(|(p, _)| wanted(p)).collect();
    let vars: Vec<_> = files.vars.iter().filter(|(p, _)| wanted(p)).collect();
    if tpm.is_empty() && vars.is_empty() {
        return Ok(());
    }
    let keyring = ferrovirt_keys::Keyring::for_data_dir(data_dir).map_err(|e| {
        ApiError::conflict(format!(
            "the VM {}'s state is encrypted at rest and the host's keys cannot be read: {e}",
            files.vm
        ))
    })?;
    let scratch = ferrovirt_vmm::engine::prepare_runtime_base(data_dir)
        .map_err(|e| ApiError::internal(format!("cannot prepare a private scratch dir: {e}")))?
        .join("export");
    let pairs = tpm
        .iter()
        .map(|t| (Some(*t), None))
        .chain(vars.iter().map(|v| (None, Some(*v))));
    for (tpm, vars) in pairs {
        let plain = ferrovirt_vmm::state_keys::plain_state_for_export(
            &files.vm,
            ferrovirt_vmm::state_keys::ExportedStateFiles {
                record: &files.record,
                tpm_state: tpm.map(|(_, f)| f.as_path()),
                vars: vars.map(|(_, f)| f.as_path()),
            },
            &keyring,
            &scratch,
        )
        .map_err(|e| match e {
            ferrovirt_vmm::state::StateFault::Key(_) => {
                ApiError::conflict(format!("cannot export the state: {e}"))
            }
            e => ApiError::internal(format!("cannot export the state: {e}")),
        })?;
        if let (Some((path, _)), Some(bytes)) = (tpm, plain.tpm_state) {
            tree.replace_content(path, ExportBytes::new(bytes));
        }
        if let (Some((path, _)), Some(bytes)) = (vars, plain.vars) {
            tree.replace_content(path, ExportBytes::new(bytes));
        }
    }
    Ok(())
}

/// The stream (or listing) of one volume in one format.
fn volume_bytes(
    data_dir: &std::path::Path,
    content: &VolumeContent,
    file: &ExportFile,
    vm_name: &str,
) -> Result<Prepared, ApiError> {
    let volumes = data_dir.join("volumes");
    let snapshots = ferrovirt_storage::SnapshotStore::new(data_dir);
    let safe = |name: &str| -> Result<PathBuf, ApiError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(ApiError::internal(format!("bad volume name {name:?}")));
        }
        Ok(volumes.join(name))
    };
    let image = |path: PathBuf| -> Result<Prepared, ApiError> {
        let tree = ExportTree::from_files(&[("disk.img".to_owned(), path.clone())])
            .map_err(storage_error)?;
        let size = tree.total_bytes();
        let (source, length, content_type) = match file {
            ExportFile::Gzip => (Source::Gzip(path), None, "application/gzip"),
            _ => (Source::Raw(path), Some(size), "application/octet-stream"),
        };
        Ok(Prepared::Stream(Stream {
            source,
            etag: tree.etag(),
            length,
            content_type,
        }))
    };
    let (mut tree, state_files) = match content {
        VolumeContent::DiskImage { volume } => return image(safe(volume)?.join("disk.img")),
        VolumeContent::SnapshotDisk { content, disk } => {
            return image(snapshots.file_path(content, &format!("disk-{disk}")));
        }
        VolumeContent::Files { volume } => {
            let root = safe(volume)?;
            let mut tree = ExportTree::of_directory(&root).map_err(storage_error)?;
            // The wrapped data key means nothing off this host (and the exported state is plain).
            tree.remove_file(&format!(
                "{}/{}",
                ferrovirt_storage::backend::META_DIR,
                ferrovirt_keys::STATE_KEY_FILE
            ));
            let files = StateFiles::of_volume(vm_name, &root, &tree);
            (tree, files)
        }
        VolumeContent::SnapshotState {
            content,
            vm_name,
            uuid,
        } => {
            let mut files = Vec::new();
            let mut state = StateFiles {
                vm: vm_name.clone(),
                record: snapshots.file_path(content, ferrovirt_vmm::state_keys::STATE_KEY),
                tpm: Vec::new(),
                vars: Vec::new(),
            };
            let tpm = snapshots.file_path(content, "tpm-state");
            if tpm.is_file() {
                let path = format!("swtpm/{uuid}/tpm2/tpm2-00.permall");
                files.push((path.clone(), tpm.clone()));
                state.tpm.push((path, tpm));
            }
            let vars = snapshots.file_path(content, "vars");
            if vars.is_file() {
                let path = format!("nvram/{vm_name}_VARS.fd");
                files.push((path.clone(), vars.clone()));
                state.vars.push((path, vars));
            }
            (
                ExportTree::from_files(&files).map_err(storage_error)?,
                state,
            )
        }
    };
    match file {
        ExportFile::Dir(path) => {
            let Some(entry) = tree.find(path) else {
                return Err(ApiError::not_found(format!("no {path:?} in the volume")));
            };
            if entry.kind == EntryKind::Dir {
                return Ok(Prepared::Document {
                    content_type: "text/html; charset=utf-8",
                    body: listing(&tree, path),
                });
            }
            decrypt_state(data_dir, &mut tree, &state_files, Some(path))?;
            let Some(single) = tree.single_file(path) else {
                return Err(ApiError::not_found(format!("no {path:?} in the volume")));
            };
            let Some(entry) = single.entries().first().cloned() else {
                return Err(ApiError::not_found(format!("no {path:?} in the volume")));
            };
            Ok(Prepared::Stream(Stream {
                etag: single.etag(),
                length: entry.kind.size(),
                source: Source::Entry(entry),
                content_type: "application/octet-stream",
            }))
        }
        _ => {
            decrypt_state(data_dir, &mut tree, &state_files, None)?;
            Ok(Prepared::Stream(Stream {
                etag: tree.etag(),
                source: Source::Archive(tree),
                length: None,
                content_type: "application/gzip",
            }))
        }
    }
}

/// Sends the producer's bytes into the response body, `CHUNK` at a time; a closed body (the
/// client went away) stops the producer.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, io::Error>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Writes a source (all of it, or a range of it) to `out`.
fn produce<W: Write>(source: &Source, out: W) -> Result<W, ExportError> {
    match source {
        Source::Raw(path) => write_raw(path, out),
        Source::Gzip(path) => write_gzip(path, out),
        Source::Archive(tree) => tree.write_tar_gz(out),
        Source::Entry(entry) => write_entry(entry, out),
    }
}

/// Counts the bytes a generated format has (for a Range's `Content-Range`), remembered per
/// ETag so a resumed download does not generate everything twice more.
fn generated_length(source: &Source, etag: &str) -> Result<u64, ExportError> {
    static LENGTHS: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    let lengths = LENGTHS.get_or_init(|| Mutex::new(HashMap::new()));
    if let Ok(known) = lengths.lock()
        && let Some(length) = known.get(etag)
    {
        return Ok(*length);
    }
    struct Counter(u64);
    impl Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let length = produce(source, Counter(0))?.0;
    if let Ok(mut known) = lengths.lock() {
        if known.len() > 256 {
            known.clear();
        }
        known.insert(etag.to_owned(), length);
    }
    Ok(length)
}

/// `bytes=START-` or `bytes=START-END` (one range); `None` for anything else (served whole).
fn parse_range(range: &str) -> Option<(u64, Option<u64>)> {
    let spec = range.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => None,
        end => Some(end.parse().ok()?),
    };
    match end {
        Some(end) if end < start => None,
        end => Some((start, end)),
    }
}

fn header(value: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(value).ok()
}

/// Answers with the stream, whole or the asked range.
async fn stream_response(stream: Stream, request: &ApiRequest) -> Response {
    let head = request.method == Method::HEAD;
    let wanted = request.range.as_deref().and_then(parse_range).filter(|_| {
        request
            .if_range
            .as_deref()
            .is_none_or(|tag| tag.trim() == stream.etag)
    });
    let Stream {
        source,
        etag,
        length,
        content_type,
    } = stream;
    let mut range = None;
    let mut total = length;
    if let Some((start, end)) = wanted {
        let total_now = match total {
            Some(t) => t,
            None => {
                let (source, etag) = (source.clone(), etag.clone());
                match tokio::task::spawn_blocking(move || generated_length(&source, &etag)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => return storage_error(e).into_response(),
                    Err(e) => {
                        return ApiError::internal(format!("export task failed: {e}"))
                            .into_response();
                    }
                }
            }
        };
        total = Some(total_now);
        if start >= total_now {
            let mut response = ApiError::new(
                416,
                "RequestedRangeNotSatisfiable",
                format!("the range starts at {start}, past the end ({total_now} bytes)"),
            )
            .into_response();
            if let Some(v) = header(&format!("bytes */{total_now}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return response;
        }
        let end = end.map_or(total_now - 1, |e| e.min(total_now - 1));
        range = Some((start, end));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(4);
    let mut response = if head {
        Response::new(Body::empty())
    } else {
        let producer_source = source.clone();
        let skip_take = range.map(|(start, end)| (start, end - start + 1));
        tokio::task::spawn_blocking(move || {
            let writer = ChannelWriter {
                tx: tx.clone(),
                buffer: Vec::with_capacity(CHUNK),
            };
            let result = match skip_take {
                Some((skip, take)) => {
                    produce(&producer_source, RangeWriter::new(writer, skip, Some(take)))
                        .map(RangeWriter::into_inner)
                }
                None => produce(&producer_source, writer),
            };
            match result {
                Ok(mut writer) => {
                    let _ = writer.flush();
                }
                Err(error) if is_range_complete(&error) => {}
                Err(error) => {
                    tracing::warn!(%error, "export stream ended early");
                    let _ = tx.blocking_send(Err(io::Error::other(error.to_string())));
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Response::new(Body::from_stream(stream))
    };
    let headers = response.headers_mut();
    if let Some(v) = header(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Some(v) = header(&etag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    match (range, total) {
        (Some((start, end)), Some(total)) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let headers = response.headers_mut();
            if let Some(v) = header(&format!("bytes {start}-{end}/{total}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            if let Some(v) = header(&(end - start + 1).to_string()) {
                headers.insert(header::CONTENT_LENGTH, v);
            }
        }
        (None, Some(total)) => {
            if let Some(v) = header(&total.to_string()) {
                response.headers_mut().insert(header::CONTENT_LENGTH, v);
            }
        }
        _ => {}
    }
    response
}

/// `GET`/`HEAD` of an export path.
pub async fn serve(app: &AppState, request: &ApiRequest, target: &ExportTarget) -> Response {
    if request.method != Method::GET && request.method != Method::HEAD {
        return ApiError::method_not_allowed(format!(
            "the export server only answers GET and HEAD (got {})",
            request.method
        ))
        .into_response();
    }
    let store = app.store.clone();
    let data_dir = app.data_dir.clone();
    let target = target.clone();
    let token = request.export_token.as_ref().map(|t| t.0.clone());
    let yaml = request.accepted.yaml && !request.accepted.json;
    let prepared = tokio::task::spawn_blocking(move || {
        prepare(&store, &data_dir, &target, token.as_deref(), yaml)
    })
    .await;
    match prepared {
        Ok(Ok(Prepared::Document { content_type, body })) => {
            let mut response = Response::new(Body::from(body));
            if let Some(v) = header(content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            response
        }
        Ok(Ok(Prepared::Stream(stream))) => stream_response(stream, request).await,
        Ok(Err(error)) => error.into_response(),
        Err(error) => ApiError::internal(format!("export task failed: {error}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=100-"), Some((100, None)));
        assert_eq!(parse_range("bytes=0-9"), Some((0, Some(9))));
        assert_eq!(parse_range("bytes=9-0"), None);
        assert_eq!(parse_range("bytes=0-1,5-6"), None);
        assert_eq!(parse_range("items=0-1"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abc", b"abd"));
        assert!(!same_token(b"abc", b"abcd"));
    }
}
