//! What a delete request does to other objects before it returns: `propagationPolicy=Orphan`
//! strips the owner reference from the dependents, and deleting a Namespace deletes everything in
//! it (their own dependents follow through the garbage collector of the controllers).

use ferrovirt_resources::{ALL, store_kind_of};
use ferrovirt_store::{ListOptions, Preconditions, Store, StoreError};
use serde_json::Value;

/// Removes the owner reference to `owner_uid` from every dependent (propagationPolicy=Orphan).
pub fn orphan_dependents(store: &Store, owner_uid: &str) -> Result<(), StoreError> {
    for dependent in store.list_dependents(owner_uid)? {
        let kind = store_kind_of(&dependent.group, &dependent.resource);
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
