//! The only way the controllers reach objects: a narrow client trait, [`ObjectClient`], with the
//! verbs a Kubernetes client has (get, list, list of names, watch, create, update, update of the
//! status subresource, delete). `ferrovirt serve` hands the controllers the store itself, which
//! implements it in-process (below).
//!
//! This is the seam where a Kubernetes client could drive the same controllers against a real
//! cluster: an implementation over kube-rs' `Api<DynamicObject>` maps each method to
//! `Api::get`, `list` (with `ListParams::labels`), `list_metadata`, `watch` (from the list's
//! resourceVersion), `create`, `replace`, `replace_status` and `delete`, and kube's
//! `ErrorResponse` codes 404/409 to [`ClientError::NotFound`]/[`ClientError::Conflict`] (409 with
//! reason `AlreadyExists` to [`ClientError::AlreadyExists`]). Nothing else of the controllers
//! would change: they never see the store, SQLite or HTTP.
//!
//! The informers ([`crate::cache`]) need a list and a watch without a gap between them:
//! [`ObjectClient::list_with_version`] returns the resourceVersion the list was read at and
//! [`ObjectClient::watch_from`] starts from it, as a Kubernetes reflector does.

use std::pin::Pin;

use ferrovirt_resources::ResourceDef;
use ferrovirt_store::{
    ListOptions, Preconditions, Selector, Store, StoreError, Watch, WatchEventType, WatchOptions,
    parse_resource_version,
};
use futures_util::Stream;
use serde_json::Value;

/// Why a client call failed, in the terms a Kubernetes client has.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// 404: the object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 409 `AlreadyExists`: create of a name that is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// 409 `Conflict`: the object changed since it was read (resourceVersion), retry from a
    /// fresh read.
    #[error("{0}")]
    Conflict(String),
    /// Anything else (invalid object, storage failure, ...).
    #[error("{0}")]
    Other(String),
}

impl From<StoreError> for ClientError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { .. } => Self::NotFound(error.to_string()),
            StoreError::AlreadyExists { .. } => Self::AlreadyExists(error.to_string()),
            StoreError::Conflict { .. } => Self::Conflict(error.to_string()),
            other => Self::Other(other.to_string()),
        }
    }
}

/// Added, modified or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One change seen by a watch.
#[derive(Debug, Clone)]
pub struct ObjectEvent {
    pub kind: EventKind,
    pub object: Value,
}

/// The changes of one resource from the moment the watch was opened.
pub type ObjectWatch = Pin<Box<dyn Stream<Item = Result<ObjectEvent, ClientError>> + Send>>;

/// Every object of a resource, with the resourceVersion the list was read at (Kubernetes'
/// `List.metadata.resourceVersion`): a watch from there misses nothing and repeats nothing.
#[derive(Debug, Clone, Default)]
pub struct VersionedList {
    pub items: Vec<Value>,
    /// Opaque, as in Kubernetes: only ever handed back to [`ObjectClient::watch_from`].
    pub resource_version: String,
}

/// What the controllers may do with objects. Calls block (run them off the async threads);
/// `watch` and `watch_from` return an async stream.
///
/// With kube-rs (`Api<DynamicObject>` for the resource, all namespaces), the list-then-watch
/// pair maps to: [`ObjectClient::list_with_version`] = `Api::list(&ListParams::default())`,
/// taking `items` and `metadata.resource_version`; [`ObjectClient::watch_from`] =
/// `Api::watch(&WatchParams::default().allow_bookmarks(), resource_version)`, mapping
/// `WatchEvent::Added/Modified/Deleted` to [`ObjectEvent`], skipping `Bookmark`, and
/// `WatchEvent::Error` (410 Gone when the version is too old) to a [`ClientError`] item, on
/// which the informer lists again (kube-runtime's `watcher` does the same).
pub trait ObjectClient: Send + Sync + 'static {
    fn get(
        &self,
        resource: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ClientError>;

    /// Objects in `namespace` (all namespaces: `None`) matching a label selector
    /// (`key=value,...`; `None`: all).
    fn list(
        &self,
        resource: &ResourceDef,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Vec<Value>, ClientError>;

    /// `(namespace, name)` of every object (Kubernetes' metadata-only list): what a resync
    /// enqueues, without reading whole objects.
    fn list_names(&self, resource: &ResourceDef) -> Result<Vec<(String, String)>, ClientError>;

    /// Changes from now on.
    fn watch(&self, resource: &ResourceDef) -> Result<ObjectWatch, ClientError>;

    /// Every object of the resource (all namespaces) and the resourceVersion of that list.
    fn list_with_version(&self, resource: &ResourceDef) -> Result<VersionedList, ClientError>;

    /// The changes after `resource_version` (from [`ObjectClient::list_with_version`]), then
    /// live ones. Fails, or ends the stream with an error, when that version is no longer
    /// available (Kubernetes' 410 Gone): list again.
    fn watch_from(
        &self,
        resource: &ResourceDef,
        resource_version: &str,
    ) -> Result<ObjectWatch, ClientError>;

    fn create(&self, resource: &ResourceDef, object: Value) -> Result<Value, ClientError>;

    /// Replaces the object (not its status); fails with `Conflict` if it changed since read.
    fn update(&self, resource: &ResourceDef, object: Value) -> Result<Value, ClientError>;

    /// Replaces the status subresource only.
    fn update_status(&self, resource: &ResourceDef, object: Value) -> Result<Value, ClientError>;

    /// Deletes (or, with finalizers, marks for deletion).
    fn delete(
        &self,
        resource: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), ClientError>;
}

/// `Ok(None)` for a missing object.
pub fn optional(result: Result<Value, ClientError>) -> Result<Option<Value>, ClientError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(ClientError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A store watch as an [`ObjectWatch`] stream.
fn object_watch(watch: Watch) -> ObjectWatch {
    Box::pin(futures_util::stream::unfold(
        watch,
        |mut watch| async move {
            let next = watch.next().await?;
            let item = next.map_err(ClientError::from).map(|event| ObjectEvent {
                kind: match event.event_type {
                    WatchEventType::Added => EventKind::Added,
                    WatchEventType::Modified => EventKind::Modified,
                    WatchEventType::Deleted => EventKind::Deleted,
                },
                object: event.object,
            });
            Some((item, watch))
        },
    ))
}

/// The store, in-process.
impl ObjectClient for Store {
    fn get(
        &self,
        resource: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ClientError> {
        Ok(Store::get(self, &resource.store_kind(), namespace, name)?)
    }

    fn list(
        &self,
        resource: &ResourceDef,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Vec<Value>, ClientError> {
        let label_selector = match label_selector {
            Some(text) => Selector::parse(text)
                .map_err(|e| ClientError::Other(format!("label selector {text:?}: {e}")))?,
            None => Selector::everything(),
        };
        let options = ListOptions {
            namespace: namespace.map(str::to_owned),
            label_selector,
            ..ListOptions::default()
        };
        Ok(Store::list(self, &resource.store_kind(), &options)?.items)
    }

    fn list_names(&self, resource: &ResourceDef) -> Result<Vec<(String, String)>, ClientError> {
        Ok(self.list_keys(&resource.store_kind())?)
    }

    fn watch(&self, resource: &ResourceDef) -> Result<ObjectWatch, ClientError> {
        let options = WatchOptions {
            resource_version: Some(self.current_resource_version().max(1)),
            ..WatchOptions::default()
        };
        let watch = Store::watch(self, &resource.store_kind(), options)?;
        Ok(object_watch(watch))
    }

    fn list_with_version(&self, resource: &ResourceDef) -> Result<VersionedList, ClientError> {
        let list = Store::list(self, &resource.store_kind(), &ListOptions::default())?;
        Ok(VersionedList {
            items: list.items,
            resource_version: list.resource_version.to_string(),
        })
    }

    fn watch_from(
        &self,
        resource: &ResourceDef,
        resource_version: &str,
    ) -> Result<ObjectWatch, ClientError> {
        let options = WatchOptions {
            resource_version: Some(parse_resource_version(resource_version)?),
            ..WatchOptions::default()
        };
        let watch = Store::watch(self, &resource.store_kind(), options)?;
        Ok(object_watch(watch))
    }

    fn create(&self, resource: &ResourceDef, object: Value) -> Result<Value, ClientError> {
        Ok(Store::create(self, &resource.store_kind(), object)?)
    }

    fn update(&self, resource: &ResourceDef, object: Value) -> Result<Value, ClientError> {
        Ok(Store::update(self, &resource.store_kind(), object)?)
    }

    fn update_status(&self, resource: &ResourceDef, object: Value) -> Result<Value, ClientError> {
        Ok(Store::update_status(self, &resource.store_kind(), object)?)
    }

    fn delete(
        &self,
        resource: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), ClientError> {
        Store::delete(
            self,
            &resource.store_kind(),
            namespace,
            name,
            &Preconditions::default(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_resources::VMS;
    use ferrovirt_store::{PRUNE_INTERVAL, StoreOptions};
    use futures_util::StreamExt;
    use serde_json::json;

    fn vm(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": {}})
    }

    fn open(options: StoreOptions) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db"), options).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_watch_from_the_lists_version_sees_every_later_change_and_nothing_earlier() {
        let (_dir, store) = open(StoreOptions::default());
        let client: &dyn ObjectClient = &store;
        client.create(&VMS, vm("before")).unwrap();
        let list = client.list_with_version(&VMS).unwrap();
        assert_eq!(list.items.len(), 1);
        assert_eq!(list.resource_version, "1");
        // Written after the list, before the watch opens: the gap a reflector must not have.
        client.create(&VMS, vm("between")).unwrap();
        let mut watch = client.watch_from(&VMS, &list.resource_version).unwrap();
        client.delete(&VMS, Some("default"), "before").unwrap();
        let mut seen = Vec::new();
        for _ in 0..2 {
            let event = watch.next().await.unwrap().unwrap();
            seen.push((event.kind, event.object["metadata"]["name"].clone()));
        }
        assert_eq!(
            seen,
            [
                (EventKind::Added, json!("between")),
                (EventKind::Deleted, json!("before"))
            ]
        );
    }

    #[test]
    fn a_watch_from_a_version_the_log_no_longer_holds_fails() {
        let (_dir, store) = open(StoreOptions {
            event_log_retention: 1,
            ..StoreOptions::default()
        });
        let client: &dyn ObjectClient = &store;
        for i in 0..=PRUNE_INTERVAL {
            client.create(&VMS, vm(&format!("vm-{i}"))).unwrap();
        }
        let error = client.watch_from(&VMS, "1").err().unwrap();
        assert!(error.to_string().contains("too old"), "{error}");
        let error = client.watch_from(&VMS, "x").err().unwrap();
        assert!(error.to_string().contains("resourceVersion"), "{error}");
    }
}
