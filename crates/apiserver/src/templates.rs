//! Harvester's template bookkeeping, done where Harvester's controllers do it: a new
//! VirtualMachineTemplateVersion gets `status.version` (one more than the template's highest
//! version) and the `assigned` condition; its template must exist in the version's namespace; the
//! template's `status.latestVersion` / `status.defaultVersion` follow, and a template without a
//! default version gets the first version as its default.

use ferrovirt_api::harvester::split_id;
use ferrovirt_store::{ListOptions, Store, StoreError};
use serde_json::{Value, json};

use crate::error::ApiError;
use ferrovirt_resources::{TEMPLATE_VERSIONS, TEMPLATES};

/// The `(namespace, name)` of the template a version names in `spec.templateId`.
fn template_of(version: &Value) -> Option<(String, String)> {
    let namespace = version
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let id = version
        .pointer("/spec/templateId")
        .and_then(Value::as_str)?;
    split_id(id, namespace).map(|(ns, name)| (ns.to_owned(), name.to_owned()))
}

fn version_number(version: &Value) -> i64 {
    version
        .pointer("/status/version")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// The versions of template `namespace/name`.
fn versions_of(store: &Store, namespace: &str, name: &str) -> Result<Vec<Value>, StoreError> {
    let list = store.list(
        &TEMPLATE_VERSIONS.store_kind(),
        &ListOptions {
            namespace: Some(namespace.to_owned()),
            ..ListOptions::default()
        },
    )?;
    Ok(list
        .items
        .into_iter()
        .filter(|v| template_of(v).is_some_and(|(ns, n)| ns == namespace && n == name))
        .collect())
}

/// Before a version is created: checks that its template exists and assigns `status.version`.
/// The outer `Err` is a store failure, the inner one the 422 to answer.
pub fn assign_version(
    store: &Store,
    version: &mut Value,
) -> Result<Result<(), ApiError>, StoreError> {
    let Some((namespace, name)) = template_of(version) else {
        return Ok(Ok(()));
    };
    match store.get(&TEMPLATES.store_kind(), Some(&namespace), &name) {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => {
            let message = format!(
                "Invalid value: \"{namespace}/{name}\": VirtualMachineTemplate {name} not found in namespace {namespace}; create the template first"
            );
            return Ok(Err(ApiError {
                details: Some(json!({"kind": TEMPLATE_VERSIONS.kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": message, "field": "spec.templateId"}]})),
                ..ApiError::invalid(format!(
                    "{} is invalid: spec.templateId: {message}",
                    TEMPLATE_VERSIONS.kind
                ))
            }));
        }
        Err(e) => return Err(e),
    }
    let next = versions_of(store, &namespace, &name)?
        .iter()
        .map(version_number)
        .max()
        .unwrap_or(0)
        + 1;
    version["status"] = json!({
        "version": next,
        "conditions": [{"type": "assigned", "status": "True",
            "lastUpdateTime": ferrovirt_store::now_rfc3339()}],
    });
    Ok(Ok(()))
}

/// After a version was created or deleted, or a template changed: the template's status (and
/// its default version when it has none) follow its versions. Errors are logged, never fatal:
/// the next change repairs the status.
pub fn sync_template(store: &Store, namespace: &str, name: &str) {
    if let Err(e) = try_sync_template(store, namespace, name) {
        tracing::warn!(template = %format!("{namespace}/{name}"), error = %e, "could not update the template status");
    }
}

fn try_sync_template(store: &Store, namespace: &str, name: &str) -> Result<(), StoreError> {
    let kind = TEMPLATES.store_kind();
    let mut template = match store.get(&kind, Some(namespace), name) {
        Ok(t) => t,
        Err(StoreError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut versions = versions_of(store, namespace, name)?;
    versions.sort_by_key(version_number);
    let default_id = template
        .pointer("/spec/defaultVersionId")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if default_id.is_empty()
        && let Some(first) = versions.first()
        && let Some(first_name) = first.pointer("/metadata/name").and_then(Value::as_str)
    {
        template["spec"]["defaultVersionId"] = json!(format!("{namespace}/{first_name}"));
        template = store.update(&kind, template)?;
    }
    let default_id = template
        .pointer("/spec/defaultVersionId")
        .and_then(Value::as_str)
        .unwrap_or("");
    let default_version = versions
        .iter()
        .find(|v| {
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .and_then(|n| {
                    split_id(default_id, namespace).map(|(ns, d)| ns == namespace && d == n)
                })
                .unwrap_or(false)
        })
        .map(version_number);
    let latest = versions.last().map(version_number);
    let mut status = serde_json::Map::new();
    if let Some(d) = default_version {
        status.insert("defaultVersion".into(), json!(d));
    }
    if let Some(l) = latest {
        status.insert("latestVersion".into(), json!(l));
    }
    let status = Value::Object(status);
    if template.get("status").unwrap_or(&Value::Null) != &status
        && !(status.as_object().is_some_and(|m| m.is_empty()) && template.get("status").is_none())
    {
        template["status"] = status;
        store.update_status(&kind, template)?;
    }
    Ok(())
}

/// The template a stored version belongs to, to sync after the version changed.
pub fn template_key(version: &Value) -> Option<(String, String)> {
    template_of(version)
}
