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

use std::pin::Pin;

use ferrovirt_resources::ResourceDef;
use ferrovirt_store::{
    ListOptions, Preconditions, Selector, Store, StoreError, WatchEventType, WatchOptions,
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

/// What the controllers may do with objects. Calls block (run them off the async threads);
/// `watch` returns an async stream.
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
        Ok(Box::pin(futures_util::stream::unfold(
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
        )))
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
