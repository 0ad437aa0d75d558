//! The garbage collector: when an object is deleted, the objects whose `ownerReferences` name it
//! (and no other live owner) are deleted too (Kubernetes' background propagation). Orphan
//! propagation strips the owner reference instead.

use ferrovirt_store::{
    ListOptions, Preconditions, ResourceKind, Store, StoreError, WatchEventType, WatchOptions,
};
use serde_json::Value;

use crate::resources::ALL;

/// Removes the owner reference to `owner_uid` from every dependent (propagationPolicy=Orphan).
pub fn orphan_dependents(store: &Store, owner_uid: &str) -> Result<(), StoreError> {
    for dependent in store.list_dependents(owner_uid)? {
        let kind = kind_of(&dependent.group, &dependent.resource);
        let mut object = dependent.object;
        if let Some(refs) = object
            .pointer_mut("/metadata/ownerReferences")
            .and_then(Value::as_array_mut)
        {
            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
        }
        store.update(&kind, object)?;
    }
    Ok(())
}

fn kind_of(group: &str, resource: &str) -> ResourceKind {
    let namespaced = ALL
        .iter()
        .find(|r| r.group == group && r.plural == resource)
        .is_none_or(|r| r.namespaced);
    ResourceKind::new(group, resource, namespaced)
}

/// Deletes the dependents of a deleted owner whose other owners (if any) are gone too.
pub fn collect_dependents(store: &Store, owner_uid: &str) -> Result<usize, StoreError> {
    let mut deleted = 0;
    for dependent in store.list_dependents(owner_uid)? {
        let owners: Vec<String> = dependent
            .object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter()
                    .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut alive = false;
        for uid in owners.iter().filter(|u| u.as_str() != owner_uid) {
            if store.get_by_uid(uid)?.is_some() {
                alive = true;
            }
        }
        if alive {
            continue;
        }
        let name = dependent
            .object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let kind = kind_of(&dependent.group, &dependent.resource);
        match store.delete(
            &kind,
            dependent.namespace.as_deref(),
            &name,
            &Preconditions::default(),
        ) {
            Ok(_) => {
                tracing::info!(owner = owner_uid, dependent = %format!("{kind}/{name}"), "garbage-collected a dependent");
                deleted += 1;
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Deletes every object in a deleted namespace (VMs first; their VMIs and PVCs follow through
/// their owner references and finalizers).
pub fn delete_namespace_contents(store: &Store, namespace: &str) -> Result<(), StoreError> {
    for resource in ALL.iter().filter(|r| r.namespaced) {
        let kind = resource.store_kind();
        let options = ListOptions {
            namespace: Some(namespace.to_owned()),
            ..ListOptions::default()
        };
        for object in store.list(&kind, &options)?.items {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            match store.delete(&kind, Some(namespace), name, &Preconditions::default()) {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Deletes objects whose owners are all gone (after a restart: deletions the collector missed).
pub fn sweep(store: &Store) -> Result<(), StoreError> {
    for resource in ALL {
        let kind = resource.store_kind();
        for object in store.list(&kind, &ListOptions::default())?.items {
            let Some(refs) = object
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
            else {
                continue;
            };
            if refs.is_empty() {
                continue;
            }
            let mut any_alive = false;
            for uid in refs
                .iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
            {
                if store.get_by_uid(uid)?.is_some() {
                    any_alive = true;
                }
            }
            if !any_alive {
                let name = object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let ns = object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str);
                match store.delete(&kind, ns, name, &Preconditions::default()) {
                    Ok(_) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// Runs the collector: one watch per kind, starting now; every DELETED object's dependents are
/// collected.
pub fn spawn(store: Store) {
    if let Err(error) = sweep(&store) {
        tracing::warn!(%error, "garbage collector sweep failed");
    }
    for resource in ALL {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                let options = WatchOptions {
                    resource_version: Some(store.current_resource_version().max(1)),
                    ..WatchOptions::default()
                };
                let mut watch = match store.watch(&resource.store_kind(), options) {
                    Ok(w) => w,
                    Err(error) => {
                        tracing::warn!(%error, "garbage collector watch failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                };
                while let Some(Ok(event)) = watch.next().await {
                    if event.event_type != WatchEventType::Deleted {
                        continue;
                    }
                    let Some(uid) = event
                        .object
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                    else {
                        continue;
                    };
                    let store = store.clone();
                    let result =
                        tokio::task::spawn_blocking(move || collect_dependents(&store, &uid)).await;
                    if let Ok(Err(error)) = result {
                        tracing::warn!(%error, "garbage collection failed");
                    }
                }
            }
        });
    }
}
