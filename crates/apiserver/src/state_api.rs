//! The persistent-state generations of a VirtualMachine over the API (what `ferrovirt state`
//! calls when it talks to a server):
//!
//! - `GET  /apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachines/NAME/stategenerations`
//!   lists them, oldest first: `{"kind": "StateGenerationList", "items": [{"generation", "created",
//!   "reason", "files": [{"name", "kind", "size", "sha256"}]}]}`;
//! - `PUT  .../virtualmachines/NAME/staterollback` with `{"generation": N}` puts one back while the
//!   VM is stopped (409 while it runs) and answers with the generation that keeps the state it
//!   replaced.

use axum::Json;
use axum::response::{IntoResponse, Response};
use ferrovirt_api::kubevirt::vm::VirtualMachine;
use ferrovirt_storage::GenerationId;
use ferrovirt_vmm::convert::{ConvertContext, plan_from_spec};
use ferrovirt_vmm::engine::{VmPlan, rollback_state, state_generations};
use serde_json::{Value, json};

use ferrovirt_resources::cluster::find_backend_pvc;
use ferrovirt_resources::kubevirt::vmi_is_active;
use ferrovirt_resources::{VMIS, VMS};

use crate::app::AppState;
use crate::error::ApiError;

/// The plan of a VM, enough for its persistent state: names, UUID, persistence, its volume.
async fn state_plan(state: &AppState, namespace: &str, name: &str) -> Result<VmPlan, ApiError> {
    let object =
        crate::handlers::get(state, VMS, Some(namespace.to_owned()), name.to_owned()).await?;
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
            "VirtualMachine {name} keeps no persistent TPM or EFI state, so it has no state generations"
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
    plan_from_spec(
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
    })
}

/// `GET .../virtualmachines/NAME/stategenerations`.
pub async fn list(state: &AppState, namespace: &str, name: &str) -> Response {
    let plan = match state_plan(state, namespace, name).await {
        Ok(plan) => plan,
        Err(e) => return e.into_response(),
    };
    match state_generations(&state.data_dir, &plan) {
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
    let running = crate::handlers::get(state, VMIS, Some(namespace.to_owned()), name.to_owned())
        .await
        .is_ok_and(|vmi| vmi_is_active(&vmi));
    if running {
        return ApiError::conflict(format!(
            "VirtualMachine {name} is running: stop it before rolling its state back"
        ))
        .into_response();
    }
    match rollback_state(&state.data_dir, &plan, generation) {
        Ok(kept) => Json(json!({
            "kind": "StateRollback",
            "apiVersion": "v1",
            "restored": generation.0,
            "preRestore": kept.0,
        }))
        .into_response(),
        Err(e) => ApiError::invalid(e.to_string()).into_response(),
    }
}
