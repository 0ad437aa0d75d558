//! The object store: Kubernetes-style objects (JSON) in one embedded SQLite file, with uid,
//! resourceVersion, generation, optimistic concurrency, finalizers and resumable watch streams.
//!
//! - [`Store`]: create / get / list / update / update_status / delete / watch / list_dependents.
//! - [`ResourceKind`]: which table-like collection an object belongs to.
//! - [`Selector`]: Kubernetes label selectors (parser + matcher).
//! - [`StoreError`]: errors with the Kubernetes API server's messages, HTTP codes and reasons.
//!
//! The API is synchronous (see the `store` module docs for why); from async code call it inside
//! `tokio::task::spawn_blocking`. Watches are read with `Watch::next().await`.

mod error;
mod kind;
mod names;
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
pub use time::{format_rfc3339, now_rfc3339};
pub use watch::{Watch, WatchEvent, WatchEventType, WatchOptions};
