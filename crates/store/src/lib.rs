//! The object store: Kubernetes-style objects (JSON) in one embedded SQLite file, with uid,
//! resourceVersion, generation, optimistic concurrency, finalizers and resumable watch streams.
//!
//! - [`Store`]: create / get / list / update / update_status / delete / watch / list_dependents.
//! - [`ResourceKind`]: which table-like collection an object belongs to.
//! - [`Selector`]: Kubernetes label selectors (parser + matcher).
//! - [`StoreError`]: errors with the Kubernetes API server's messages, HTTP codes and reasons.
//!
//! The API is synchronous (see the `store` module docs for why); from async code call it inside
//! `tokio::task::spawn_blocking`. Watches are read with `Watch::next().await`; to get a
//! `futures::Stream`, wrap it with `futures::stream::unfold(watch, |mut w| async move {
//! w.next().await.map(|event| (event, w)) })`. The store emits no BOOKMARK events; a server can
//! send them itself with [`Watch::resource_version`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ferrovirt_store::{ResourceKind, Store, StoreOptions, WatchEventType, WatchOptions};
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path().join("store.db"), StoreOptions::default())?;
//! let vms = ResourceKind::new("kubevirt.io", "virtualmachines", true);
//! let mut watch = store.watch(&vms, WatchOptions::default())?;
//!
//! let (s, kind) = (store.clone(), vms.clone());
//! let created = tokio::task::spawn_blocking(move || {
//!     s.create(&kind, serde_json::json!({
//!         "metadata": {"name": "vm1", "namespace": "default"}, "spec": {}
//!     }))
//! })
//! .await??;
//! assert_eq!(created["metadata"]["resourceVersion"], "1");
//!
//! let event = watch.next().await.ok_or("watch ended")??;
//! assert_eq!(event.event_type, WatchEventType::Added);
//! # Ok(())
//! # }
//! ```

mod batch;
mod error;
mod group_commit;
mod kind;
mod names;
pub mod retention;
mod schema;
pub mod selector;
mod store;
mod time;
mod watch;

pub use error::StoreError;
pub use kind::ResourceKind;
pub use names::generate_name;
pub use schema::{Durability, SCHEMA_VERSION};
pub use selector::{Operator, Requirement, Selector, SelectorParseError};
pub use store::{
    DeleteOutcome, ListOptions, ObjectList, PRUNE_INTERVAL, Preconditions, Store, StoreOptions,
    StoredObject, parse_resource_version,
};
pub use time::{format_rfc3339, now_rfc3339, parse_rfc3339};
pub use watch::{Watch, WatchEvent, WatchEventType, WatchOptions};
