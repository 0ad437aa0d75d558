//! The garbage collector: when an object is deleted, the objects whose `ownerReferences` name it
//! (and no other live owner) are deleted too (Kubernetes' background propagation). Orphan
//! propagation and namespace deletion happen in the request that asks for them
//! (`ferrovirt_apiserver::cascade`). Works through the [`ObjectClient`] alone: dependents are
//! found by listing the served kinds in the owner's namespace, owners by name and uid.

use std::sync::Arc;

use ferrovirt_resources::kubevirt::meta_str;
use ferrovirt_resources::{ALL, ResourceDef};
use serde_json::Value;

use crate::client::{ClientError, EventKind, ObjectClient, optional};

/// The owner references of an object: (apiVersion, kind, name, uid).
fn owner_refs(object: &Value) -> Vec<(String, String, String, String)> {
    let text = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .map(|r| {
                    (
                        text(r, "apiVersion"),
                        text(r, "kind"),
                        text(r, "name"),
                        text(r, "uid"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The served resource of an owner reference.
fn resource_of(api_version: &str, kind: &str) -> Option<ResourceDef> {
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    ALL.into_iter().find(|r| r.group == group && r.kind == kind)
}

/// Whether the owner named by a reference of `dependent` still exists with that uid.
fn owner_alive(
    client: &dyn ObjectClient,
    dependent: &Value,
    (api_version, kind, name, uid): &(String, String, String, String),
) -> Result<bool, ClientError> {
    let Some(resource) = resource_of(api_version, kind) else {
        return Ok(false);
    };
    let namespace = resource
        .namespaced
        .then(|| meta_str(dependent, "namespace"));
    Ok(optional(client.get(&resource, namespace, name))?
        .is_some_and(|owner| meta_str(&owner, "uid") == uid))
}

fn delete(
    client: &dyn ObjectClient,
    resource: &ResourceDef,
    object: &Value,
) -> Result<(), ClientError> {
    let namespace = resource.namespaced.then(|| meta_str(object, "namespace"));
    match client.delete(resource, namespace, meta_str(object, "name")) {
        Ok(()) | Err(ClientError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the dependents of a deleted owner whose other owners (if any) are gone too.
pub fn collect_dependents(client: &dyn ObjectClient, owner: &Value) -> Result<usize, ClientError> {
    let owner_uid = meta_str(owner, "uid");
    let namespace = Some(meta_str(owner, "namespace")).filter(|n| !n.is_empty());
    let mut deleted = 0;
    for resource in ALL {
        let scope = if resource.namespaced { namespace } else { None };
        for dependent in client.list(&resource, scope, None)? {
            let refs = owner_refs(&dependent);
            if !refs.iter().any(|r| r.3 == owner_uid) {
                continue;
            }
            let mut alive = false;
            for r in refs.iter().filter(|r| r.3 != owner_uid) {
                alive |= owner_alive(client, &dependent, r)?;
            }
            if alive {
                continue;
            }
            delete(client, &resource, &dependent)?;
            tracing::info!(owner = owner_uid, dependent = %format!("{}/{}", resource.qualified(), meta_str(&dependent, "name")), "garbage-collected a dependent");
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Deletes objects whose owners are all gone (after a restart: deletions the collector missed).
pub fn sweep(client: &dyn ObjectClient) -> Result<(), ClientError> {
    for resource in ALL {
        for object in client.list(&resource, None, None)? {
            let refs = owner_refs(&object);
            if refs.is_empty() {
                continue;
            }
            let mut any_alive = false;
            for r in &refs {
                any_alive |= owner_alive(client, &object, r)?;
            }
            if !any_alive {
                delete(client, &resource, &object)?;
            }
        }
    }
    Ok(())
}

/// Runs the collector: one watch per kind, starting now; every deleted object's dependents are
/// collected.
pub fn spawn(client: Arc<dyn ObjectClient>) {
    if let Err(error) = sweep(&*client) {
        tracing::warn!(%error, "garbage collector sweep failed");
    }
    for resource in ALL {
        let client = client.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            loop {
                let mut watch = match client.watch(&resource) {
                    Ok(w) => w,
                    Err(error) => {
                        tracing::warn!(%error, "garbage collector watch failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                };
                while let Some(Ok(event)) = watch.next().await {
                    if event.kind != EventKind::Deleted {
                        continue;
                    }
                    let client = client.clone();
                    let result = tokio::task::spawn_blocking(move || {
                        collect_dependents(&*client, &event.object)
                    })
                    .await;
                    if let Ok(Err(error)) = result {
                        tracing::warn!(%error, "garbage collection failed");
                    }
                }
            }
        });
    }
}
