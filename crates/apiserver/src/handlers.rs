//! The REST handlers: get, list (label and field selectors, pagination, Table), watch (chunked
//! newline-delimited JSON, also as Table), create (generateName), update, patch, delete
//! (preconditions and propagation), and the KubeVirt VM subresources `start`/`stop`/`restart`.
//! They read the typed request ([`ApiRequest`]), never headers.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ferrovirt_resources::kubevirt::{run_strategy_of, vmi_is_active};
use ferrovirt_resources::{NAMESPACES, ResourceDef, TEMPLATE_VERSIONS, TEMPLATES, VMIS, VMS};
use ferrovirt_store::{
    DeleteOutcome, ListOptions, Preconditions, Selector, Store, StoreError, WatchEventType,
    WatchOptions, parse_resource_version,
};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::admission;
use crate::app::AppState;
use crate::encode::{bytes_response, json_response, ok};
use crate::error::{ApiError, ApiResult};
use crate::http::{self, FieldSelector};
use crate::patch::{self, PatchKind};
use crate::request::{ApiRequest, FieldValidation, Output, Params};
use crate::route::{Route, VmAction};
use crate::table;

/// Runs a store operation off the async threads.
pub async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
        .map_err(ApiError::from)
}

/// A request for a path under `/api/` or `/apis/`, after the chain's stages.
pub async fn handle(
    state: &AppState,
    request: &ApiRequest,
    route: Route,
    body: Body,
) -> ApiResult<Response> {
    let params = &request.params;
    let as_table = request.output == Output::Table;
    let status_subresource = matches!(route, Route::Status { .. });
    match (route, request.method.clone()) {
        (Route::GroupVersion { group, version }, Method::GET) => {
            Ok(ok(&crate::discovery::resource_list(&group, &version)))
        }
        (Route::Group { group }, Method::GET) => crate::discovery::group(&group)
            .map(|g| ok(&g))
            .ok_or_else(|| ApiError::not_found("no such group")),
        (
            Route::Collection {
                resource,
                namespace,
            },
            Method::GET,
        ) => {
            if request.attributes.verb == "watch" {
                let client =
                    crate::watch_limit::WatchClient::from_peer(request.connection.remote_addr);
                let permit = state.watches.acquire(client)?;
                watch(state, resource, namespace, params, as_table, permit).await
            } else {
                list(state, resource, namespace, params, as_table).await
            }
        }
        (
            Route::Collection {
                resource,
                namespace,
            },
            Method::POST,
        ) => {
            let bytes = http::read_body(body).await?;
            let content_type = request.content_type.as_str();
            let object = if content_type == crate::protobuf::MEDIA_TYPE && resource == NAMESPACES {
                crate::protobuf::decode_namespace(&bytes)?
            } else {
                http::decode_object(content_type, &bytes)?
            };
            check_strict(request, &resource, &object)?;
            let created = create(
                state,
                resource,
                namespace.as_deref(),
                object,
                request.dry_run,
            )
            .await?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (
            Route::Item {
                resource,
                namespace,
                name,
            },
            Method::GET,
        ) => {
            let object = get(state, resource, namespace.clone(), name).await?;
            if as_table {
                let rv = object
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                Ok(ok(&table::table(&resource, &[object], rv, None, true)))
            } else {
                Ok(ok(&object))
            }
        }
        (
            Route::Item {
                resource,
                namespace,
                name,
            },
            Method::PUT,
        ) => {
            let bytes = http::read_body(body).await?;
            let object = http::decode_object(&request.content_type, &bytes)?;
            check_strict(request, &resource, &object)?;
            let before = vm_before_update(state, resource, &namespace, &name).await;
            let updated = replace(
                state,
                resource,
                namespace,
                name,
                object,
                false,
                request.dry_run,
            )
            .await?;
            Ok(update_response(before.as_ref(), &updated))
        }
        (
            Route::Status {
                resource,
                namespace,
                name,
            },
            Method::PUT,
        ) => {
            let bytes = http::read_body(body).await?;
            let object = http::decode_object(&request.content_type, &bytes)?;
            Ok(ok(&replace(
                state,
                resource,
                namespace,
                name,
                object,
                true,
                request.dry_run,
            )
            .await?))
        }
        (
            Route::Status {
                resource,
                namespace,
                name,
            },
            Method::GET,
        ) => Ok(ok(&get(state, resource, namespace, name).await?)),
        (
            Route::Item {
                resource,
                namespace,
                name,
            }
            | Route::Status {
                resource,
                namespace,
                name,
            },
            Method::PATCH,
        ) => {
            let kind = PatchKind::from_content_type(&request.content_type)?;
            let bytes = http::read_body(body).await?;
            let before = if status_subresource {
                None
            } else {
                vm_before_update(state, resource, &namespace, &name).await
            };
            Ok(update_response(
                before.as_ref(),
                &patch_object(
                    state,
                    resource,
                    namespace,
                    name,
                    kind,
                    bytes,
                    WriteFlags {
                        status_only: status_subresource,
                        // Unknown fields are checked on the object, not on a status patch.
                        strict: !status_subresource
                            && request.field_validation == FieldValidation::Strict,
                        dry_run: request.dry_run,
                    },
                )
                .await?,
            ))
        }
        (
            Route::Item {
                resource,
                namespace,
                name,
            },
            Method::DELETE,
        ) => {
            let bytes = http::read_body(body).await?;
            delete(
                state,
                resource,
                namespace,
                name,
                params,
                request.dry_run,
                &bytes,
            )
            .await
        }
        (
            Route::VmAction {
                namespace,
                name,
                action,
            },
            Method::PUT,
        ) => {
            http::read_body(body).await?;
            vm_action(state, namespace, name, action).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (_, method) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

/// How a write is done.
#[derive(Debug, Clone, Copy)]
struct WriteFlags {
    /// Only `.status` is written (the status subresource).
    status_only: bool,
    /// Unknown fields are refused (`fieldValidation=Strict`).
    strict: bool,
    /// Admission only, nothing stored (`dryRun=All`).
    dry_run: bool,
}

fn check_strict(request: &ApiRequest, resource: &ResourceDef, object: &Value) -> ApiResult<()> {
    if request.field_validation == FieldValidation::Strict {
        reject_unknown_fields(resource, object)?;
    }
    Ok(())
}

/// 400 with Kubernetes' strict decoding message when the object has fields the schema lacks.
fn reject_unknown_fields(resource: &ResourceDef, object: &Value) -> ApiResult<()> {
    let unknown = crate::strict::unknown_fields(resource.kind, object);
    if unknown.is_empty() {
        return Ok(());
    }
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    Err(ApiError::bad_request(format!(
        "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
        resource.kind,
        resource.version,
        resource.kind,
        fields.join(", ")
    )))
}

/// One object.
pub async fn get(
    state: &AppState,
    resource: ResourceDef,
    namespace: Option<String>,
    name: String,
) -> ApiResult<Value> {
    blocking(&state.store, move |s| {
        s.get(&resource.store_kind(), namespace.as_deref(), &name)
    })
    .await
}

fn label_selector(params: &Params) -> ApiResult<Selector> {
    match params.get("labelSelector") {
        Some(text) if !text.is_empty() => Selector::parse(text)
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}"))),
        _ => Ok(Selector::everything()),
    }
}

fn field_selector(params: &Params) -> ApiResult<FieldSelector> {
    params
        .get("fieldSelector")
        .map(|f| FieldSelector::parse(f))
        .transpose()
        .map(Option::unwrap_or_default)
}

async fn list(
    state: &AppState,
    resource: ResourceDef,
    namespace: Option<String>,
    params: &Params,
    as_table: bool,
) -> ApiResult<Response> {
    let options = ListOptions {
        namespace,
        label_selector: label_selector(params)?,
        limit: params
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l: &usize| *l > 0),
        continue_token: params.get("continue").filter(|c| !c.is_empty()).cloned(),
    };
    let fields = field_selector(params)?;
    if fields.is_empty() {
        return if as_table {
            list_table(state, resource, options).await
        } else {
            list_json(state, resource, options).await
        };
    }
    let list = blocking(&state.store, move |s| {
        s.list_raw(&resource.store_kind(), &options)
    })
    .await?;
    let rv = list.resource_version.to_string();
    let mut metadata = json!({"resourceVersion": rv});
    if let Some(token) = &list.continue_token {
        metadata["continue"] = json!(token);
    }
    // A list a field selector filters (as a Table or not; the others were returned above).
    let objects: Vec<Value> = list
        .items
        .iter()
        .filter_map(|raw| serde_json::from_str(raw.get()).ok())
        .filter(|o| fields.matches(o))
        .collect();
    if as_table {
        return Ok(ok(&table::table(
            &resource,
            &objects,
            Some(rv),
            list.continue_token,
            true,
        )));
    }
    Ok(ok(
        &json!({"kind": resource.list_kind(), "apiVersion": resource.api_version(),
        "metadata": metadata, "items": objects}),
    ))
}

/// A plain JSON list, written in one buffer straight from the store's rows (no item is parsed
/// or allocated on its own): `{"kind":..,"apiVersion":..,"items":[..],"metadata":{..}}`.
/// `metadata` comes last because the resourceVersion is known only once the rows are read;
/// JSON objects are unordered, and clients (kubectl, client-go, kube-rs) decode by name.
async fn list_json(
    state: &AppState,
    resource: ResourceDef,
    options: ListOptions,
) -> ApiResult<Response> {
    let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut body = format!(
        "{{\"kind\":{},\"apiVersion\":{},\"items\":[",
        text(&resource.list_kind()),
        text(&resource.api_version())
    )
    .into_bytes();
    let (mut body, page) = blocking(&state.store, move |s| {
        let page = s.list_json_items(&resource.store_kind(), &options, &mut body)?;
        Ok((body, page))
    })
    .await?;
    let mut metadata = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(token) = &page.continue_token {
        metadata["continue"] = json!(token);
    }
    body.extend_from_slice(b"],\"metadata\":");
    body.extend_from_slice(metadata.to_string().as_bytes());
    body.push(b'}');
    Ok(bytes_response(StatusCode::OK, body))
}

/// A Table of a whole list (no field selector), built from the store's rows one at a time
/// ([`table::table_of_items`]): the items are read under the store's lock as for a JSON list (one
/// buffer of their text), then parsed, only as far as the columns read, outside of it.
async fn list_table(
    state: &AppState,
    resource: ResourceDef,
    options: ListOptions,
) -> ApiResult<Response> {
    let (items, page) = blocking(&state.store, move |s| {
        let mut items = Vec::new();
        let page = s.list_json_items(&resource.store_kind(), &options, &mut items)?;
        Ok((items, page))
    })
    .await?;
    let chunks = table::table_of_items(
        &resource,
        &items,
        Some(page.resource_version.to_string()),
        page.continue_token,
    )
    .map_err(|e| ApiError::internal(format!("a stored object is not JSON: {e}")))?;
    drop(items);
    let body = Body::from_stream(futures_util::stream::iter(
        chunks.map(|chunk| Ok::<Bytes, Infallible>(Bytes::from(chunk))),
    ));
    let mut response = Response::new(body);
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

async fn watch(
    state: &AppState,
    resource: ResourceDef,
    namespace: Option<String>,
    params: &Params,
    as_table: bool,
    permit: crate::watch_limit::WatchPermit,
) -> ApiResult<Response> {
    let resource_version = match params.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(parse_resource_version(rv).map_err(ApiError::from)?),
    };
    let options = WatchOptions {
        namespace,
        label_selector: label_selector(params)?,
        resource_version,
    };
    let fields = field_selector(params)?;
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let watch = blocking(&state.store, move |s| {
        s.watch(&resource.store_kind(), options)
    })
    .await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let stream =
        futures_util::stream::unfold((watch, true, false), move |(mut watch, first, done)| {
            let fields = fields.clone();
            // The slot is held as long as the stream lives.
            let _held = &permit;
            async move {
                if done {
                    return None;
                }
                loop {
                    let next = tokio::time::timeout_at(deadline, watch.next()).await;
                    let event = match next {
                        Err(_) | Ok(None) => return None,
                        Ok(Some(Err(error))) => {
                            let status = ApiError::from(error).to_status();
                            let line = json!({"type": "ERROR", "object": status});
                            return Some((line_bytes(&line), (watch, first, true)));
                        }
                        Ok(Some(Ok(event))) => event,
                    };
                    if !fields.matches(&event.object) {
                        continue;
                    }
                    let object = if as_table {
                        let rv = event
                            .object
                            .pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                        table::table(
                            &resource,
                            std::slice::from_ref(&event.object),
                            rv,
                            None,
                            first,
                        )
                    } else {
                        event.object
                    };
                    let kind = match event.event_type {
                        WatchEventType::Added => "ADDED",
                        WatchEventType::Modified => "MODIFIED",
                        WatchEventType::Deleted => "DELETED",
                    };
                    let line = json!({"type": kind, "object": object});
                    return Some((line_bytes(&line), (watch, false, false)));
                }
            }
        });
    let mut response = Response::new(Body::from_stream(stream.map(Ok::<Bytes, Infallible>)));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn line_bytes(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// Creates an object (admission included).
pub async fn create(
    state: &AppState,
    resource: ResourceDef,
    namespace: Option<&str>,
    mut object: Value,
    dry_run: bool,
) -> ApiResult<Value> {
    admission::check_type_and_namespace(&resource, namespace, &mut object)?;
    let meta = &object["metadata"];
    let has_name = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let has_generate = meta
        .get("generateName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !has_name && !has_generate {
        return Err(ApiError {
            details: Some(
                json!({"causes": [{"reason": "FieldValueRequired", "message": "Required value: name or generateName is required", "field": "metadata.name"}]}),
            ),
            ..ApiError::invalid(format!(
                "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                resource.kind
            ))
        });
    }
    let ns = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let host_paths = state.host_paths.clone();
    let vm_writes = state.vm_writes.clone();
    blocking(&state.store, move |s| {
        if let Some(ns) = &ns {
            s.get(&NAMESPACES.store_kind(), None, ns)?;
        }
        let _serialized = lock_vm_writes(&resource, &vm_writes);
        let cluster = admission::cluster_config(s);
        let owners = uuid_owners_for(&resource, s, &object, None);
        let references = references_for(&resource, s, &object);
        let inputs = admission::AdmissionInputs {
            cluster: &cluster,
            host_paths: &host_paths,
            firmware_uuids_in_use: &owners,
            references: &references,
        };
        let mut admitted = match admission::admit_create(&resource, object, &inputs) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        if resource == TEMPLATE_VERSIONS
            && let Err(e) = crate::templates::assign_version(s, &mut admitted)?
        {
            return Ok(Err(e));
        }
        if resource == ferrovirt_resources::VM_RESTORES
            && let Err(e) = admission::check_restore_target(s, &admitted)
        {
            return Ok(Err(e));
        }
        if dry_run {
            return Ok(Ok(admitted));
        }
        let created = s.create(&resource.store_kind(), admitted)?;
        sync_templates_after_write(s, &resource, &created);
        Ok(Ok(created))
    })
    .await?
}

/// Serializes the writes of VirtualMachines (admission of `firmware.uuid` uniqueness, then the
/// write): `None` for other resources.
fn lock_vm_writes<'a>(
    resource: &ResourceDef,
    vm_writes: &'a std::sync::Mutex<()>,
) -> Option<std::sync::MutexGuard<'a, ()>> {
    (*resource == VMS).then(|| {
        vm_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    })
}

/// The stored VMs' `firmware.uuid`s for the uniqueness rule, listed only when the write can bring
/// a UUID no stored VM had before: a VirtualMachine whose manifest names a `firmware.uuid` and is
/// new, or had another one (such an update is refused anyway: the UUID is immutable once set).
/// Every other write skips the listing of all VMs: a create without a UUID gets a fresh random one
/// from the defaults, an update without one keeps the stored one, an update naming the stored one
/// changes nothing. Other kinds have no such rule.
fn uuid_owners_for(
    resource: &ResourceDef,
    store: &Store,
    object: &Value,
    old: Option<&Value>,
) -> Vec<ferrovirt_api::validation::FirmwareUuidOwner> {
    fn uuid_of(vm: &Value) -> Option<&str> {
        vm.pointer("/spec/template/spec/domain/firmware/uuid")
            .and_then(Value::as_str)
            .filter(|uuid| !uuid.is_empty())
    }
    let named = uuid_of(object);
    if *resource == VMS && named.is_some() && named != old.and_then(uuid_of) {
        admission::firmware_uuid_owners(store)
    } else {
        Vec::new()
    }
}

/// The instancetype and preference a VirtualMachine refers to (none for other kinds).
fn references_for(
    resource: &ResourceDef,
    store: &Store,
    object: &Value,
) -> ferrovirt_api::instancetype::ReferencedSpecs {
    let refers = object.pointer("/spec/instancetype").is_some()
        || object.pointer("/spec/preference").is_some();
    if *resource == VMS && refers {
        ferrovirt_resources::instancetypes::find_referenced(store, object)
    } else {
        Default::default()
    }
}

/// Template bookkeeping after a template or a version was written or deleted.
fn sync_templates_after_write(store: &Store, resource: &ResourceDef, object: &Value) {
    let key = if *resource == TEMPLATE_VERSIONS {
        crate::templates::template_key(object)
    } else if *resource == TEMPLATES {
        let text = |p: &str| object.pointer(p).and_then(Value::as_str).map(str::to_owned);
        text("/metadata/namespace").zip(text("/metadata/name"))
    } else {
        None
    };
    if let Some((namespace, name)) = key {
        crate::templates::sync_template(store, &namespace, &name);
    }
}

/// A VirtualMachine as it was before an update (for [`update_response`]'s warnings); `None` for
/// other resources or when it cannot be read (the update then reports its own error).
async fn vm_before_update(
    state: &AppState,
    resource: ResourceDef,
    namespace: &Option<String>,
    name: &str,
) -> Option<Value> {
    if resource != VMS {
        return None;
    }
    get(state, resource, namespace.clone(), name.to_owned())
        .await
        .ok()
}

/// The updated object, with a `Warning` header when a VirtualMachine's update switches its TPM
/// interface (`admission::tpm_switch_warning`).
fn update_response(before: Option<&Value>, updated: &Value) -> Response {
    let warnings: Vec<String> = before
        .and_then(|old| admission::tpm_switch_warning(old, updated))
        .into_iter()
        .collect();
    crate::encode::with_warnings(ok(updated), &warnings)
}

/// Replaces an object (PUT), or only its status (`status_only`).
pub async fn replace(
    state: &AppState,
    resource: ResourceDef,
    namespace: Option<String>,
    name: String,
    mut object: Value,
    status_only: bool,
    dry_run: bool,
) -> ApiResult<Value> {
    admission::check_type_and_namespace(&resource, namespace.as_deref(), &mut object)?;
    match object.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n == name => {}
        None | Some("") => object["metadata"]["name"] = json!(name),
        Some(_) => {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
    }
    let host_paths = state.host_paths.clone();
    let vm_writes = state.vm_writes.clone();
    blocking(&state.store, move |s| {
        let kind = resource.store_kind();
        let _serialized = (!status_only).then(|| lock_vm_writes(&resource, &vm_writes));
        let old = s.get(&kind, namespace.as_deref(), &name)?;
        if status_only {
            if dry_run {
                return Ok(Ok(object));
            }
            return s.update_status(&kind, object).map(Ok);
        }
        let cluster = admission::cluster_config(s);
        let owners = uuid_owners_for(&resource, s, &object, Some(&old));
        let mut with_status = object.clone();
        if with_status.get("status").is_none()
            && let Some(status) = old.get("status")
        {
            with_status["status"] = status.clone();
        }
        let references = references_for(&resource, s, &with_status);
        let inputs = admission::AdmissionInputs {
            cluster: &cluster,
            host_paths: &host_paths,
            firmware_uuids_in_use: &owners,
            references: &references,
        };
        let admitted = match admission::admit_update(&resource, object, &old, &inputs) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        if dry_run {
            return Ok(Ok(admitted));
        }
        let updated = s.update(&kind, admitted)?;
        sync_templates_after_write(s, &resource, &updated);
        Ok(Ok(updated))
    })
    .await?
}

async fn patch_object(
    state: &AppState,
    resource: ResourceDef,
    namespace: Option<String>,
    name: String,
    kind: PatchKind,
    body: Vec<u8>,
    flags: WriteFlags,
) -> ApiResult<Value> {
    // A patch without its own resourceVersion is retried on conflicts with concurrent writers,
    // as the Kubernetes API server does.
    for _ in 0..5 {
        let current = get(state, resource, namespace.clone(), name.clone()).await?;
        let mut patched = current.clone();
        patch::apply(kind, &mut patched, &body)?;
        if flags.strict {
            reject_unknown_fields(&resource, &patched)?;
        }
        let pinned = patched.pointer("/metadata/resourceVersion")
            != current.pointer("/metadata/resourceVersion");
        match replace(
            state,
            resource,
            namespace.clone(),
            name.clone(),
            patched,
            flags.status_only,
            flags.dry_run,
        )
        .await
        {
            Err(e) if e.code == 409 && e.reason == "Conflict" && !pinned => continue,
            other => return other,
        }
    }
    Err(ApiError::conflict(format!(
        "Operation cannot be fulfilled on {} \"{name}\": too many concurrent writers; try again",
        resource.qualified()
    )))
}

async fn delete(
    state: &AppState,
    resource: ResourceDef,
    namespace: Option<String>,
    name: String,
    params: &Params,
    dry_run: bool,
    body: &[u8],
) -> ApiResult<Response> {
    let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the DeleteOptions body is not valid JSON: {e}"))
        })?
    };
    let propagation = params
        .get("propagationPolicy")
        .map(String::as_str)
        .or_else(|| options.get("propagationPolicy").and_then(Value::as_str))
        .unwrap_or("Background")
        .to_owned();
    if !matches!(propagation.as_str(), "Background" | "Foreground" | "Orphan") {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy {propagation:?} is not one of Background, Foreground, Orphan"
        )));
    }
    let preconditions = Preconditions {
        uid: options
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned),
        resource_version: options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(parse_resource_version)
            .transpose()?,
    };
    if dry_run {
        return Ok(ok(&get(state, resource, namespace, name).await?));
    }
    let outcome = blocking(&state.store, move |s| {
        let kind = resource.store_kind();
        if propagation == "Orphan" {
            let object = s.get(&kind, namespace.as_deref(), &name)?;
            if let Some(uid) = object.pointer("/metadata/uid").and_then(Value::as_str) {
                crate::cascade::orphan_dependents(s, uid)?;
            }
        }
        let outcome = s.delete(&kind, namespace.as_deref(), &name, &preconditions)?;
        if let DeleteOutcome::Deleted(object) = &outcome {
            sync_templates_after_write(s, &resource, object);
        }
        Ok(outcome)
    })
    .await?;
    if resource == NAMESPACES
        && let DeleteOutcome::Deleted(namespace) = &outcome
    {
        let ns = namespace
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        blocking(&state.store, move |s| {
            crate::cascade::delete_namespace_contents(s, &ns)
        })
        .await?;
    }
    Ok(match outcome {
        DeleteOutcome::Deleted(object) => ok(&object),
        DeleteOutcome::Finalizing(object) => json_response(StatusCode::ACCEPTED, &object),
    })
}

/// `start` / `stop` / `restart` as KubeVirt's virt-api does them: Always/Halted VMs get their
/// run strategy changed; Manual VMs get a `status.stateChangeRequests` entry; restart deletes the
/// running instance (the controller starts a new one).
async fn vm_action(
    state: &AppState,
    namespace: String,
    name: String,
    action: VmAction,
) -> ApiResult<()> {
    blocking(&state.store, move |s| {
        // The controllers write the VM's status at any time (a start makes several writes): an
        // action that meets a newer resourceVersion is decided again from a fresh read, as
        // KubeVirt's start/stop patches are not refused for a status written meanwhile.
        let mut attempts = 1;
        loop {
            match vm_action_once(s, &namespace, &name, action) {
                Err(StoreError::Conflict { .. }) if attempts < VM_ACTION_ATTEMPTS => attempts += 1,
                outcome => return outcome,
            }
        }
    })
    .await?
}

/// How often a VM action is tried against concurrent writers before the conflict is answered.
const VM_ACTION_ATTEMPTS: u32 = 10;

/// One attempt of a VM action from a fresh read: `Err(Conflict)` when the VM changed meanwhile.
fn vm_action_once(
    s: &Store,
    namespace: &str,
    name: &str,
    action: VmAction,
) -> Result<ApiResult<()>, StoreError> {
    let vm_kind = VMS.store_kind();
    let vm = s.get(&vm_kind, Some(namespace), name)?;
    let strategy = run_strategy_of(&vm);
    let vmi = s.get(&VMIS.store_kind(), Some(namespace), name).ok();
    let vmi_active = vmi.as_ref().is_some_and(vmi_is_active);
    let fail = |code: u16, msg: String| {
        Ok(Err(ApiError::new(
            code,
            if code == 409 {
                "Conflict"
            } else {
                "BadRequest"
            },
            msg,
        )))
    };
    match action {
        VmAction::Start => {
            if vmi_active {
                return fail(
                    409,
                    format!(
                        "Always does not support manual start requests: VM {name} is already running"
                    ),
                );
            }
            match strategy.as_str() {
                "Manual" => push_state_change(s, vm, &[("Start", None)])?,
                "Always" | "RerunOnFailure" => {
                    // Not running although it should: nothing to change, the controller starts it.
                }
                _ => set_run_strategy(s, vm, "Always")?,
            }
        }
        VmAction::Stop => {
            if !vmi_active && strategy != "Always" && strategy != "RerunOnFailure" {
                return fail(409, format!("VM {name} is not running"));
            }
            match strategy.as_str() {
                "Manual" => push_state_change(s, vm, &[("Stop", vmi.as_ref().and_then(uid_of))])?,
                _ => set_run_strategy(s, vm, "Halted")?,
            }
        }
        VmAction::Restart => {
            if !vmi_active {
                return fail(409, format!("VM {name} is not running"));
            }
            let vmi_uid = vmi.as_ref().and_then(uid_of);
            push_state_change(s, vm, &[("Stop", vmi_uid), ("Start", None)])?;
        }
    }
    Ok(Ok(()))
}

fn uid_of(object: &Value) -> Option<String> {
    object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn set_run_strategy(store: &Store, mut vm: Value, strategy: &str) -> Result<(), StoreError> {
    if let Some(spec) = vm.get_mut("spec").and_then(Value::as_object_mut) {
        if spec.contains_key("running") && !spec.contains_key("runStrategy") {
            spec.insert("running".into(), json!(strategy == "Always"));
        } else {
            spec.remove("running");
            spec.insert("runStrategy".into(), json!(strategy));
        }
    }
    store.update(&VMS.store_kind(), vm).map(drop)
}

fn push_state_change(
    store: &Store,
    mut vm: Value,
    requests: &[(&str, Option<String>)],
) -> Result<(), StoreError> {
    let status = vm
        .as_object_mut()
        .map(|o| o.entry("status").or_insert_with(|| json!({})));
    if let Some(status) = status {
        let list = status
            .as_object_mut()
            .map(|s| s.entry("stateChangeRequests").or_insert_with(|| json!([])));
        if let Some(Value::Array(list)) = list {
            for (action, uid) in requests {
                let mut request = json!({"action": action});
                if let Some(uid) = uid {
                    request["uid"] = json!(uid);
                }
                list.push(request);
            }
        }
    }
    store.update_status(&VMS.store_kind(), vm).map(drop)
}
