//! A VirtualMachine's UEFI variables over the API (issue 15), on its persistent VARS file:
//!
//! - `GET .../virtualmachines/NAME/efivars`: `{"kind": "EFIVariableList", "items": [{"id":
//!   "NAME-GUID", "name", "guid", "attributes", "size", "data" (hex)}]}` (readable while the VM
//!   runs: the file as the firmware last flushed it);
//! - `GET .../efivars/NAME-GUID`: one of them;
//! - `PUT .../efivars/NAME-GUID` with `{"data": "<hex>", "attributes": N}` (attributes default to
//!   the variable's, else NV+BS+RT = 7) sets it; `DELETE .../efivars/NAME-GUID` deletes it. Both
//!   only while the VM is stopped (409 otherwise), record a state generation first, and answer
//!   `{"kind": "EFIVariableChange", "generation", "pcrs", "message"}` naming the PCRs the next
//!   boot measures differently.
//!
//! - `DELETE .../efivars` puts the firmware's VARS template back (same rules; PCR1 and PCR7).
//!
//! Request attributes (for RBAC): subresource `efivars` of `virtualmachines` in
//! `subresources.kubevirt.io`; verbs `get` (view), `update` and `delete` (edit, admin).

use axum::Json;
use axum::response::{IntoResponse, Response};
use ferrovirt_vmm::efi_vars::{self, EfiVarsError, pcrs_of};
use ferrovirt_vmm::firmware::{EfiGuid, EfiVariable, StoredVariable, vars_write::ATTR_DEFAULT};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::ApiError;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `NAME-GUID` -> (name, guid): the GUID is the last 36 characters.
pub fn parse_id(id: &str) -> Result<(String, EfiGuid), ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "{id:?} is not NAME-GUID (e.g. SecureBootEnable-f0a30bc7-af08-4556-99c4-001009c93a44)"
        ))
    };
    let split = id.len().checked_sub(37).ok_or_else(bad)?;
    let (name, rest) = id.split_at(split);
    let guid = rest.strip_prefix('-').ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    Ok((name.to_owned(), EfiGuid::parse(guid).ok_or_else(bad)?))
}

fn item(stored: &StoredVariable) -> Value {
    let v = &stored.variable;
    json!({
        "id": format!("{}-{}", v.name, v.vendor),
        "name": v.name,
        "guid": v.vendor.to_string(),
        "attributes": v.attributes,
        "size": v.data.len(),
        "data": hex(&v.data),
    })
}

fn error(e: EfiVarsError) -> ApiError {
    match e {
        EfiVarsError::Running { .. } | EfiVarsError::Keys(_) => ApiError::conflict(e.to_string()),
        EfiVarsError::NotPersistent { .. } | EfiVarsError::NoVarsFile { .. } => {
            ApiError::not_found(e.to_string())
        }
        EfiVarsError::Vars(ferrovirt_vmm::firmware::VarsWriteError::InvalidVariable { .. }) => {
            ApiError::invalid(e.to_string())
        }
        other => ApiError::internal(other.to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("UEFI variables task failed: {e}")))?
}

/// `GET .../efivars` (`id: None`) or `GET .../efivars/NAME-GUID`.
pub async fn get(state: &AppState, namespace: &str, name: &str, id: Option<&str>) -> Response {
    let wanted = match id.map(parse_id).transpose() {
        Ok(wanted) => wanted,
        Err(e) => return e.into_response(),
    };
    let plan = match crate::state_api::state_plan(state, namespace, name).await {
        Ok(plan) => plan,
        Err(e) => return e.into_response(),
    };
    let vm = name.to_owned();
    let data_dir = state.data_dir.clone();
    let found = blocking(move || {
        let store = efi_vars::read(&data_dir, &plan).map_err(error)?;
        match wanted {
            None => Ok(json!({
                "kind": "EFIVariableList",
                "apiVersion": "subresources.kubevirt.io/v1",
                "stateEncryption": crate::tpm_api::encryption(plan.state_volume.as_deref()),
                "items": store.variables().map(item).collect::<Vec<_>>(),
            })),
            Some((var, guid)) => store.get(&var, &guid).map(item).ok_or_else(|| {
                ApiError::not_found(format!(
                    "VirtualMachine {vm} has no UEFI variable {var}-{guid}"
                ))
            }),
        }
    })
    .await;
    match found {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `PUT .../efivars/NAME-GUID` (`body: Some`) or `DELETE` (`body: None`).
pub async fn change(
    state: &AppState,
    namespace: &str,
    name: &str,
    id: &str,
    body: Option<&[u8]>,
) -> Response {
    let (var, guid) = match parse_id(id) {
        Ok(parsed) => parsed,
        Err(e) => return e.into_response(),
    };
    let wanted = match body.map(parse_put).transpose() {
        Ok(wanted) => wanted,
        Err(e) => return e.into_response(),
    };
    let plan = match crate::state_api::state_plan(state, namespace, name).await {
        Ok(plan) => plan,
        Err(e) => return e.into_response(),
    };
    let data_dir = state.data_dir.clone();
    let vm = name.to_owned();
    let done = blocking(move || {
        let note = match &wanted {
            Some(_) => format!("before setting UEFI variable {var}-{guid}"),
            None => format!("before deleting UEFI variable {var}-{guid}"),
        };
        let mut missing = false;
        let changed = efi_vars::change(&data_dir, &plan, &note, |store| {
            match wanted {
                Some((data, attributes)) => {
                    let attributes = attributes
                        .or_else(|| store.get(&var, &guid).map(|v| v.variable.attributes))
                        .unwrap_or(ATTR_DEFAULT);
                    store.set(EfiVariable {
                        name: var.clone(),
                        vendor: guid,
                        attributes,
                        data,
                    })?;
                }
                None => missing = !store.delete(&var, &guid),
            }
            Ok(pcrs_of(&var, &guid))
        });
        match changed {
            Ok(_) if missing => Err(ApiError::not_found(format!(
                "VirtualMachine {vm} has no UEFI variable {var}-{guid}"
            ))),
            Ok(change) => Ok(json!({
                "kind": "EFIVariableChange",
                "apiVersion": "subresources.kubevirt.io/v1",
                "generation": change.generation.0,
                "pcrs": change.pcrs,
                "message": change_message(&var, &change.pcrs, change.generation.0),
            })),
            Err(e) => Err(error(e)),
        }
    })
    .await;
    match done {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `PUT .../efivars` with `{"enroll": "microsoft-2023"}`: appends Microsoft's 2023 KEK and db
/// certificates (`ferrovirt_firmware::microsoft_2023`) that the VM's KEK and db do not hold yet.
pub async fn enroll(state: &AppState, namespace: &str, name: &str, body: &[u8]) -> Response {
    let wanted = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| b.get("enroll").and_then(Value::as_str).map(str::to_owned));
    if wanted.as_deref() != Some("microsoft-2023") {
        return ApiError::bad_request(
            "the body must be {\"enroll\": \"microsoft-2023\"} (the only certificate set there is)",
        )
        .into_response();
    }
    let plan = match crate::state_api::state_plan(state, namespace, name).await {
        Ok(plan) => plan,
        Err(e) => return e.into_response(),
    };
    let data_dir = state.data_dir.clone();
    let done = blocking(move || {
        let mut added = Vec::new();
        let changed = efi_vars::change(
            &data_dir,
            &plan,
            "before enrolling Microsoft's 2023 Secure Boot certificates",
            |store| {
                added = ferrovirt_vmm::firmware::microsoft_2023::enroll(store)?;
                Ok(vec![7])
            },
        )
        .map_err(error)?;
        Ok(json!({
            "kind": "EFIVariableChange",
            "apiVersion": "subresources.kubevirt.io/v1",
            "generation": changed.generation.0,
            "pcrs": changed.pcrs,
            "added": added,
            "message": format!(
                "{}; the Secure Boot keys (PCR7) change: suspend BitLocker (or other disk encryption sealed to PCR7) in the guest before its next start. The variables before are kept as generation {} (undo: ferrovirt state rollback)",
                if added.is_empty() {
                    "KEK and db already hold Microsoft's 2023 certificates".to_owned()
                } else {
                    format!("added {}", added.join(", "))
                },
                changed.generation.0
            ),
        }))
    })
    .await;
    match done {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `DELETE .../efivars`: the firmware's template back.
pub async fn reset(state: &AppState, namespace: &str, name: &str) -> Response {
    let plan = match crate::state_api::state_plan(state, namespace, name).await {
        Ok(plan) => plan,
        Err(e) => return e.into_response(),
    };
    let data_dir = state.data_dir.clone();
    let done = blocking(move || match efi_vars::reset(&data_dir, &plan) {
        Ok(change) => Ok(json!({
            "kind": "EFIVariableChange",
            "apiVersion": "subresources.kubevirt.io/v1",
            "generation": change.generation.0,
            "pcrs": change.pcrs,
            "message": change_message(
                "store (reset to the firmware's template)",
                &change.pcrs,
                change.generation.0
            ),
        })),
        Err(e) => Err(error(e)),
    })
    .await;
    match done {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn change_message(var: &str, pcrs: &[u8], generation: u64) -> String {
    let undo = format!("`ferrovirt state rollback` to generation {generation} undoes it");
    if pcrs.is_empty() {
        format!("UEFI variable {var} changed; no PCR the firmware measures changes; {undo}")
    } else {
        let list: Vec<String> = pcrs.iter().map(|p| format!("PCR{p}")).collect();
        format!(
            "UEFI variable {var} changed; the next boot measures different values into {}: \
             suspend BitLocker before starting the VM; {undo}",
            list.join(", ")
        )
    }
}

fn parse_put(body: &[u8]) -> Result<(Vec<u8>, Option<u32>), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body must be JSON: {e}")))?;
    let data = value
        .get("data")
        .and_then(Value::as_str)
        .and_then(unhex)
        .ok_or_else(|| {
            ApiError::invalid("data: required, the variable's bytes as hex digits (e.g. \"01\")")
        })?;
    let attributes = match value.get("attributes") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|a| u32::try_from(a).ok())
                .ok_or_else(|| ApiError::invalid("attributes: a number such as 7 (NV+BS+RT)"))?,
        ),
    };
    Ok((data, attributes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_at_the_guid() {
        let (name, guid) = parse_id("Ferro-Var-3f1a2b3c-4d5e-4f60-8192-a3b4c5d6e7f8").unwrap();
        assert_eq!(name, "Ferro-Var");
        assert_eq!(guid.to_string(), "3f1a2b3c-4d5e-4f60-8192-a3b4c5d6e7f8");
        assert!(parse_id("-3f1a2b3c-4d5e-4f60-8192-a3b4c5d6e7f8").is_err());
        assert!(parse_id("short").is_err());
        assert_eq!(unhex("0aFF"), Some(vec![10, 255]));
        assert_eq!(unhex("0"), None);
    }
}
