//! The persistent-state generations of a VirtualMachine over the API (what `ferrovirt state`
//! calls when it talks to a server):
//!
//! - `GET  /apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachines/NAME/stategenerations`
//!   lists them, oldest first: `{"kind": "StateGenerationList", "items": [{"generation", "created",
//!   "reason", "files": [{"name", "kind", "size", "sha256"}]}]}`;
//! - `PUT  .../virtualmachines/NAME/staterollback` with `{"generation": N}` puts one back while the
//!   VM is stopped (409 while it runs) and answers with the generation that keeps the state it
//!   replaced. The guard is the host's: the VM's QEMU or swtpm alive (whatever the API status
//!   says) answers 409 Conflict.
//! - `GET  /apis/subresources.kubevirt.io/v1/namespaces/NS/deletedvmstates` (or without
//!   `namespaces/NS` for all) lists the state generations kept for deleted VMs:
//!   `{"kind": "DeletedVmStateList", "items": [{"uuid", "namespace", "name", "uid", "deleted",
//!   "expires", "generations", "bytes"}]}`; `GET .../deletedvmstates/UUID` one of them;
//! - `DELETE .../namespaces/NS/deletedvmstates/UUID` purges one now (409 while its VM exists),
//!   `DELETE .../namespaces/NS/deletedvmstates` the ones whose retention has passed.
//!
//! Request attributes (for RBAC): group `subresources.kubevirt.io`, resource `deletedvmstates`,
//! verbs `list`/`get`/`delete`/`deletecollection`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use ferrovirt_api::kubevirt::vm::VirtualMachine;
use ferrovirt_storage::vm_store::{StoredVmState, VmStoreError};
use ferrovirt_storage::{GenerationId, VmStateStore, VmUuid};
use ferrovirt_vmm::convert::{ConvertContext, plan_from_spec};
use ferrovirt_vmm::engine::{EngineError, VmPlan, rollback_state, state_generations};
use serde_json::{Value, json};

use ferrovirt_resources::VMS;
use ferrovirt_resources::cluster::find_backend_pvc;

use crate::app::AppState;
use crate::error::ApiError;

/// The plan of a VM, enough for its persistent state: names, UUID, persistence, its volume.
pub(crate) async fn state_plan(
    state: &AppState,
    namespace: &str,
    name: &str,
) -> Result<VmPlan, ApiError> {
    let object =
        crate::handlers::get(state, VMS, Some(namespace.to_owned()), name.to_owned()).await?;
    let vm_uid = object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let vm: VirtualMachine = serde_json::from_value(object).map_err(|e| {
        ApiError::internal(format!("the stored VirtualMachine cannot be read: {e}"))
    })?;
    let spec = vm
        .spec
        .template
        .as_ref()
        .map(|t| t.spec.clone())
        .ok_or_else(|| ApiError::invalid("spec.template: the VirtualMachine has no template"))?;
    if !spec.needs_backend_storage() {
        return Err(ApiError::not_found(format!(
            "VirtualMachine {name} keeps no persistent TPM or EFI state (no backend storage), so it has no state generations and no lasting EK"
        )));
    }
    let store = state.store.clone();
    let (ns, vm_name) = (namespace.to_owned(), name.to_owned());
    let pvc = tokio::task::spawn_blocking(move || find_backend_pvc(&store, &ns, &vm_name))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let volume = pvc
        .as_ref()
        .and_then(|p| p.pointer("/spec/volumeName"))
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "VirtualMachine {name} has no bound backend-storage PVC yet (it has not started)"
            ))
        })?
        .to_owned();
    let volume_dir = ferrovirt_storage::LocalPathProvisioner::new(state.data_dir.join("volumes"))
        .and_then(|p| p.volume_path(&volume))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let no_claims = |_: &str| None;
    let mut plan = plan_from_spec(
        &spec,
        &ConvertContext {
            namespace,
            name,
            field_prefix: "spec.template.spec",
            state_volume: Some((
                volume_dir,
                state.data_dir.join("state-generations").join(&volume),
            )),
            claim_dir: &no_claims,
            termination_grace_period_seconds: None,
        },
    )
    .or_else(|unsupported| {
        // Disks that cannot run here do not matter for the state: drop them and retry.
        let mut bare = spec.clone();
        bare.domain.devices.disks = None;
        bare.volumes = None;
        plan_from_spec(
            &bare,
            &ConvertContext {
                namespace,
                name,
                field_prefix: "spec.template.spec",
                state_volume: None,
                claim_dir: &no_claims,
                termination_grace_period_seconds: None,
            },
        )
        .map_err(|_| ApiError::invalid(unsupported.to_string()))
    })?;
    plan.vm_uid = vm_uid;
    Ok(plan)
}

/// `GET .../virtualmachines/NAME/stategenerations`.
pub async fn list(state: &AppState, namespace: &str, name: &str) -> Response {
    let plan = match state_plan(state, namespace, name).await {
        Ok(plan) => plan,
        Err(e) => return e.into_response(),
    };
    // May wait (milliseconds) for the check and record of the VM's last stop.
    let data_dir = state.data_dir.clone();
    let listed =
        match tokio::task::spawn_blocking(move || state_generations(&data_dir, &plan)).await {
            Ok(listed) => listed,
            Err(e) => return ApiError::internal(e.to_string()).into_response(),
        };
    match listed {
        Ok(generations) => {
            let items: Vec<Value> = generations
                .iter()
                .map(|info| match &info.manifest {
                    Ok(m) => json!({
                        "generation": info.id.0,
                        "created": m.created_unix_secs,
                        "reason": serde_json::to_value(&m.reason).ok()
                            .and_then(|r| r.get("kind").cloned()),
                        "files": m.entries.iter().map(|e| json!({
                            "name": e.logical_name,
                            "kind": serde_json::to_value(e.kind).ok(),
                            "size": e.files.first().map(|f| f.size),
                            "sha256": e.files.first().map(|f| f.sha256.clone()),
                        })).collect::<Vec<_>>(),
                    }),
                    Err(why) => json!({"generation": info.id.0, "error": why}),
                })
                .collect();
            Json(json!({"kind": "StateGenerationList", "apiVersion": "v1", "items": items}))
                .into_response()
        }
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

/// `PUT .../virtualmachines/NAME/staterollback` with `{"generation": N}`.
pub async fn rollback(state: &AppState, namespace: &str, name: &str, body: &[u8]) -> Response {
    let generation = match serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| b.get("generation").and_then(Value::as_u64))
    {
        Some(g) => GenerationId(g),
        None => {
            return ApiError::bad_request(
                "the body must be {\"generation\": N} with N from the stategenerations list",
            )
            .into_response();
        }
    };
    let plan = match state_plan(state, namespace, name).await {
        Ok(plan) => plan,
        Err(e) => return e.into_response(),
    };
    // The engine asks the host whether the VM's QEMU or swtpm runs: the API status could be
    // stale or written by anyone with access to it.
    let data_dir = state.data_dir.clone();
    let rolled =
        match tokio::task::spawn_blocking(move || rollback_state(&data_dir, &plan, generation))
            .await
        {
            Ok(rolled) => rolled,
            Err(e) => return ApiError::internal(e.to_string()).into_response(),
        };
    match rolled {
        Ok(kept) => Json(json!({
            "kind": "StateRollback",
            "apiVersion": "v1",
            "restored": generation.0,
            "preRestore": kept.0,
        }))
        .into_response(),
        Err(e @ EngineError::StillRunning { .. }) => {
            ApiError::conflict(e.to_string()).into_response()
        }
        Err(e) => ApiError::invalid(e.to_string()).into_response(),
    }
}

/// `PUT .../virtualmachines/NAME/staterekey` with `{"newKEK": bool, "rotateDataKey": bool}`:
/// re-wraps the VM's data key under the current KEK (a new local one with `newKEK`) and, with
/// `rotateDataKey`, re-encrypts its state under a new data key. 409 while the VM runs.
pub async fn rekey(state: &AppState, namespace: &str, name: &str, body: &[u8]) -> Response {
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(value @ Value::Object(_)) => value,
            _ => {
                return ApiError::bad_request(
                    "the body must be {\"newKEK\": true|false, \"rotateDataKey\": true|false}",
                )
                .into_response();
            }
        }
    };
    let flag = |field: &str| body.get(field).and_then(Value::as_bool).unwrap_or(false);
    let options = ferrovirt_vmm::rekey::RekeyOptions {
        new_kek: flag("newKEK"),
        rotate_dek: flag("rotateDataKey"),
    };
    let plan = match state_plan(state, namespace, name).await {
        Ok(plan) => plan,
        Err(e) => return e.into_response(),
    };
    let data_dir = state.data_dir.clone();
    let outcome =
        tokio::task::spawn_blocking(move || ferrovirt_vmm::rekey::rekey(&data_dir, &plan, options))
            .await;
    use ferrovirt_vmm::rekey::RekeyError;
    match outcome {
        Ok(Ok(report)) => Json(json!({
            "kind": "StateRekey",
            "apiVersion": "v1",
            "generation": report.generation.0,
            "oldKEK": report.old_kek,
            "newKEK": report.new_kek,
            "oldDataKeyID": report.old_data_key,
            "newDataKeyID": report.new_data_key,
        }))
        .into_response(),
        Ok(Err(e @ (RekeyError::Running { .. } | RekeyError::Keys(_) | RekeyError::Key(_)))) => {
            ApiError::conflict(e.to_string()).into_response()
        }
        Ok(Err(e @ RekeyError::NoState { .. })) => {
            ApiError::not_found(e.to_string()).into_response()
        }
        Ok(Err(e)) => ApiError::invalid(e.to_string()).into_response(),
        Err(e) => ApiError::internal(format!("rekey task failed: {e}")).into_response(),
    }
}

fn time_text(unix: u64) -> String {
    ferrovirt_store::format_rfc3339(i64::try_from(unix).unwrap_or(i64::MAX))
}

/// One deleted VM's kept state, as the API shows it.
fn deleted_item(store: &StoredVmState, retention: std::time::Duration) -> Value {
    let owner = store.owner.as_ref();
    json!({
        "uuid": store.uuid.as_str(),
        "namespace": owner.map(|o| o.namespace.as_str()),
        "name": owner.map(|o| o.name.as_str()),
        "uid": owner.and_then(|o| o.uid.as_deref()),
        "deleted": owner.and_then(|o| o.deleted_unix).map(time_text),
        "expires": store.expires_unix(retention).map(time_text),
        "generations": store.generations,
        "bytes": store.bytes,
    })
}

fn in_namespace(store: &StoredVmState, namespace: &str) -> bool {
    store
        .owner
        .as_ref()
        .is_some_and(|o| o.namespace == namespace)
}

async fn on_state_stores<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&VmStateStore) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = VmStateStore::new(&state.data_dir);
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::internal(format!("state store task failed: {e}")))?
}

fn store_error(error: VmStoreError) -> ApiError {
    match error {
        VmStoreError::NotFound { .. } => ApiError::not_found(error.to_string()),
        VmStoreError::NotDeleted { .. } => ApiError::conflict(error.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

fn deleted_vm_state_not_found(namespace: &str, uuid: &str) -> ApiError {
    ApiError::not_found(format!(
        "deletedvmstates.subresources.kubevirt.io \"{uuid}\" not found in namespace {namespace}: \
         no kept state of a deleted VM with that firmware UUID (see `ferrovirt state list --deleted`)"
    ))
}

/// `GET .../[namespaces/NS/]deletedvmstates`.
pub async fn list_deleted(state: &AppState, namespace: Option<&str>) -> Response {
    let retention = state.state_retention;
    let namespace = namespace.map(str::to_owned);
    let listed = on_state_stores(state, move |stores| {
        let deleted = stores.list_deleted().map_err(store_error)?;
        Ok(deleted
            .iter()
            .filter(|s| namespace.as_deref().is_none_or(|ns| in_namespace(s, ns)))
            .map(|s| deleted_item(s, retention))
            .collect::<Vec<_>>())
    })
    .await;
    match listed {
        Ok(items) => Json(json!({
            "kind": "DeletedVmStateList",
            "apiVersion": "subresources.kubevirt.io/v1",
            "retentionSeconds": retention.as_secs(),
            "items": items,
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The deleted VM's store `uuid` in `namespace`, or 404.
fn find_deleted(
    stores: &VmStateStore,
    namespace: &str,
    uuid: &str,
) -> Result<StoredVmState, ApiError> {
    let parsed = VmUuid::parse(uuid)
        .map_err(|e| ApiError::bad_request(format!("{uuid:?} is not a firmware UUID: {e}")))?;
    stores
        .list()
        .map_err(store_error)?
        .into_iter()
        .find(|s| s.uuid == parsed && in_namespace(s, namespace))
        .ok_or_else(|| deleted_vm_state_not_found(namespace, uuid))
}

/// `GET .../namespaces/NS/deletedvmstates/UUID`.
pub async fn get_deleted(state: &AppState, namespace: &str, uuid: &str) -> Response {
    let retention = state.state_retention;
    let (namespace, uuid) = (namespace.to_owned(), uuid.to_owned());
    let found = on_state_stores(state, move |stores| {
        let store = find_deleted(stores, &namespace, &uuid)?;
        if store
            .owner
            .as_ref()
            .is_some_and(|o| o.deleted_unix.is_none())
        {
            return Err(deleted_vm_state_not_found(&namespace, &uuid));
        }
        Ok(deleted_item(&store, retention))
    })
    .await;
    match found {
        Ok(item) => Json(item).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `DELETE .../namespaces/NS/deletedvmstates/UUID`: purges it now.
pub async fn purge(state: &AppState, namespace: &str, uuid: &str) -> Response {
    let (namespace, uuid) = (namespace.to_owned(), uuid.to_owned());
    let purged = on_state_stores(state, move |stores| {
        let store = find_deleted(stores, &namespace, &uuid)?;
        stores.purge(&store.uuid).map_err(store_error)
    })
    .await;
    match purged {
        Ok(owner) => Json(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Success",
            "details": {"name": owner.firmware_uuid, "group": "subresources.kubevirt.io",
                "kind": "deletedvmstates"},
            "message": format!(
                "purged the state generations of deleted VM {}/{} (firmware UUID {})",
                owner.namespace, owner.name, owner.firmware_uuid
            ),
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `DELETE .../namespaces/NS/deletedvmstates`: purges the ones whose retention has passed.
pub async fn purge_expired(state: &AppState, namespace: &str) -> Response {
    let retention = state.state_retention;
    let namespace = namespace.to_owned();
    let purged = on_state_stores(state, move |stores| {
        let now = u64::try_from(ferrovirt_resources::time::now_unix()).unwrap_or(0);
        let mut purged = Vec::new();
        for store in stores.list_deleted().map_err(store_error)? {
            if in_namespace(&store, &namespace)
                && store.expires_unix(retention).is_some_and(|at| at <= now)
            {
                let owner = stores.purge(&store.uuid).map_err(store_error)?;
                purged.push(
                    json!({"uuid": owner.firmware_uuid, "namespace": owner.namespace,
                    "name": owner.name}),
                );
            }
        }
        Ok(purged)
    })
    .await;
    match purged {
        Ok(items) => Json(json!({
            "kind": "DeletedVmStateList",
            "apiVersion": "subresources.kubevirt.io/v1",
            "items": items,
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}
