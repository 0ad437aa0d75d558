//! The RBAC objects in the store and the policy in memory: the default ClusterRoles and
//! ClusterRoleBindings (Kubernetes' and KubeVirt's, `ferrovirt_auth::rbac::bootstrap`) are
//! created at every start when missing (Kubernetes re-creates deleted defaults the same way), and
//! a task fed by the store's watch of Role, ClusterRole, RoleBinding and ClusterRoleBinding
//! rebuilds the [`RbacPolicy`] and swaps it into the [`PolicyHandle`] the authorization stage
//! reads, so a `kubectl apply` of a binding takes effect for the next request.

use std::sync::Arc;

use ferrovirt_apiserver::security::PolicyHandle;
use ferrovirt_auth::RbacPolicy;
use ferrovirt_auth::rbac::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, bootstrap};
use ferrovirt_resources::catalogue::{
    CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES, RBAC, ROLE_BINDINGS, ROLES,
};
use ferrovirt_store::{ListOptions, Store, StoreError, WatchOptions};
use serde::de::DeserializeOwned;

/// Creates the default ClusterRoles and ClusterRoleBindings that are missing.
pub fn seed_defaults(store: &Store) -> Result<(), StoreError> {
    let create_if_missing =
        |kind: &ferrovirt_store::ResourceKind, object: serde_json::Value| match store
            .create(kind, object)
        {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        };
    for role in bootstrap::cluster_roles() {
        if let Ok(object) = serde_json::to_value(role) {
            create_if_missing(&CLUSTER_ROLES.store_kind(), object)?;
        }
    }
    for binding in bootstrap::cluster_role_bindings() {
        if let Ok(object) = serde_json::to_value(binding) {
            create_if_missing(&CLUSTER_ROLE_BINDINGS.store_kind(), object)?;
        }
    }
    Ok(())
}

/// Every object of one RBAC kind; an object that does not parse is left out (and logged), as an
/// RBAC object the evaluator cannot read grants nothing.
fn load<T: DeserializeOwned>(
    store: &Store,
    resource: &ferrovirt_resources::ResourceDef,
) -> Result<Vec<T>, StoreError> {
    let list = store.list(&resource.store_kind(), &ListOptions::default())?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|item| match serde_json::from_value(item) {
            Ok(object) => Some(object),
            Err(error) => {
                tracing::warn!(kind = resource.kind, %error, "RBAC object ignored: it does not parse");
                None
            }
        })
        .collect())
}

/// The policy the store's RBAC objects make.
pub fn policy_of(store: &Store) -> Result<RbacPolicy, StoreError> {
    Ok(RbacPolicy::new(
        load::<Role>(store, &ROLES)?,
        load::<ClusterRole>(store, &CLUSTER_ROLES)?,
        load::<RoleBinding>(store, &ROLE_BINDINGS)?,
        load::<ClusterRoleBinding>(store, &CLUSTER_ROLE_BINDINGS)?,
    ))
}

/// Puts the store's policy in force now, then keeps it current: one watch per RBAC kind wakes a
/// rebuild task (wake-ups coalesce; the rebuild reads the store off the async threads).
pub fn keep_policy_current(store: Store, handle: PolicyHandle) -> Result<(), StoreError> {
    handle.replace(policy_of(&store)?);
    let changed = Arc::new(tokio::sync::Notify::new());
    for resource in RBAC {
        let mut watch = store.watch(&resource.store_kind(), WatchOptions::default())?;
        let changed = changed.clone();
        tokio::spawn(async move {
            while let Some(event) = watch.next().await {
                if let Err(error) = event {
                    tracing::warn!(kind = resource.kind, %error, "RBAC watch failed");
                }
                changed.notify_one();
            }
        });
    }
    tokio::spawn(async move {
        loop {
            changed.notified().await;
            let store = store.clone();
            match tokio::task::spawn_blocking(move || policy_of(&store)).await {
                Ok(Ok(policy)) => handle.replace(policy),
                Ok(Err(error)) => tracing::error!(%error, "cannot reload the RBAC policy"),
                Err(error) => tracing::error!(%error, "the RBAC reload task failed"),
            }
        }
    });
    Ok(())
}
