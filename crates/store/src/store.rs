//! The object store: create / get / list / update / update_status / delete / watch of
//! Kubernetes-style JSON objects in one SQLite file.
//!
//! Concurrency design: a synchronous API over one SQLite connection behind a `std::sync::Mutex`.
//! Async callers (axum handlers, controllers) wrap calls in `tokio::task::spawn_blocking`
//! ([`Store`] is a cheap `Clone`). Writes go through group commit ([`crate::group_commit`]):
//! a write that finds nobody writing commits alone, on its own thread, as before; writes that
//! arrive while a transaction is being committed queue up and the next one commits them all
//! together ([`crate::batch`]: one transaction; a failing write fails alone). Each caller returns only once its transaction is committed, so durability is
//! per write exactly what it was with a transaction per write; what is saved is a commit (WAL
//! frames, page writes, checkpoints) per write. One lock is held across "commit + assign
//! resourceVersions + broadcast", which gives watchers a gap-free, totally ordered event
//! sequence (a watch subscribes under the same lock, so nothing falls between its initial
//! list/replay and its live events). Reads share the lock: a 10,000-object list holds it for
//! ~20 ms; if that ever matters, a second read-only connection can serve get/list (WAL allows it).

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::{OptionalExtension, params};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::batch::{self, Counters, Job, Write, WriteTx, Written};
use crate::error::{SqliteContext, StoreError};
use crate::group_commit::GroupCommit;
use crate::kind::ResourceKind;
use crate::names::generate_name;
use crate::schema::{self, Durability};
use crate::selector::Selector;
use crate::time::now_rfc3339;
use crate::watch::{LogEvent, Watch, WatchEvent, WatchEventType, WatchFilter, WatchOptions};

/// Tuning knobs; `Default` is what `ferrovirt serve` uses.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// SQLite `synchronous` setting; see [`Durability`].
    pub durability: Durability,
    /// How many of the newest events the persistent log keeps for resuming watches
    /// (at least this many; pruning runs every [`PRUNE_INTERVAL`] writes).
    pub event_log_retention: u64,
    /// Capacity of the live broadcast channel: how far a watcher may fall behind before it gets
    /// [`StoreError::WatchLagged`].
    pub watch_buffer: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Normal,
            event_log_retention: 10_000,
            watch_buffer: 4096,
        }
    }
}

/// The event log is pruned once per this many writes.
pub const PRUNE_INTERVAL: u64 = 128;
/// Attempts to find a free name for `generateName`.
const GENERATE_NAME_ATTEMPTS: usize = 8;

/// Options of [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only this namespace (`None`: all namespaces, or a cluster-scoped kind).
    pub namespace: Option<String>,
    /// Only objects whose labels match (the default, empty selector matches all).
    pub label_selector: Selector,
    /// At most this many items; a `continue_token` in the result fetches the rest.
    pub limit: Option<usize>,
    /// The `continue_token` of the previous page. Pages are read from the current state (not a
    /// snapshot at the first page's resourceVersion, unlike etcd-backed Kubernetes).
    pub continue_token: Option<String>,
}

/// The result of [`Store::list`] (`T = Value`) and [`Store::list_raw`] (`T = Box<RawValue>`).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectList<T = Value> {
    /// Objects ordered by (namespace, name).
    pub items: Vec<T>,
    /// The store's resourceVersion at the time of the list (start a watch from here).
    pub resource_version: u64,
    /// Set when `limit` cut the list: pass it as `ListOptions::continue_token`.
    pub continue_token: Option<String>,
}

impl ObjectList<()> {
    /// The same page with these items.
    fn with_items<T>(self, items: Vec<T>) -> ObjectList<T> {
        ObjectList {
            items,
            resource_version: self.resource_version,
            continue_token: self.continue_token,
        }
    }
}

/// Conditions a delete must meet (`DeleteOptions.preconditions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<u64>,
}

/// What [`Store::delete`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteOutcome {
    /// The object is gone (a DELETED event was sent); its last state.
    Deleted(Value),
    /// The object has finalizers: it now carries `metadata.deletionTimestamp` and stays until an
    /// update empties `metadata.finalizers`.
    Finalizing(Value),
}

/// An object together with where it is stored (returned by uid-based lookups).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub group: String,
    pub resource: String,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    pub object: Value,
}

/// Handle to the store; clones share the same database and watch fan-out.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

struct Shared {
    path: PathBuf,
    /// Writes waiting for (or in) a group-commit batch.
    writes: GroupCommit<Job, Result<Written, StoreError>>,
    state: Mutex<State>,
    events: broadcast::Sender<Arc<LogEvent>>,
    options: StoreOptions,
}

struct State {
    conn: rusqlite::Connection,
    /// The newest committed resourceVersion.
    current_rv: u64,
    /// Events with rv <= this were pruned from the log.
    compacted_rv: u64,
    writes_since_prune: u64,
}

pub(crate) fn as_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

pub(crate) fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens or creates the store at `path` (e.g. `<data-dir>/store.db`).
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = schema::open(&path, options.durability)?;
        let read_meta = |key: &str| -> Result<u64, StoreError> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
                r.get::<_, i64>(0)
            })
            .during("reading the resourceVersion counter")
            .map(as_u64)
        };
        // The counter row is only written when the log is pruned; the newest logged event is
        // never pruned (retention >= 1), so it holds the newest resourceVersion.
        let newest_event: Option<i64> = conn
            .query_row("SELECT MAX(rv) FROM events", [], |r| r.get(0))
            .during("reading the newest event")?;
        let current_rv = read_meta("resource_version")?.max(newest_event.map_or(0, as_u64));
        let compacted_rv = read_meta("compacted_rv")?;
        let (events, _) = broadcast::channel(options.watch_buffer.max(1));
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                writes: GroupCommit::new(),
                state: Mutex::new(State {
                    conn,
                    current_rv,
                    compacted_rv,
                    writes_since_prune: 0,
                }),
                events,
                options,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The newest committed resourceVersion.
    pub fn current_resource_version(&self) -> u64 {
        self.lock().current_rv
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves no half-done transaction behind (rusqlite rolls
        // back on drop, the counters are only advanced after commit), so the state is usable.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates an object. Assigns `metadata.uid`, `resourceVersion`, `creationTimestamp`,
    /// `generation = 1`, and a name from `metadata.generateName` when `metadata.name` is empty.
    /// The namespace comes from `metadata.namespace` (required for namespaced kinds).
    pub fn create(&self, kind: &ResourceKind, mut object: Value) -> Result<Value, StoreError> {
        let meta = metadata_mut(&mut object)?;
        let namespace = object_namespace(kind, meta)?;
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(StoreError::invalid(
                "metadata.resourceVersion",
                "Invalid value: resourceVersion should not be set on objects to be created",
            ));
        }
        let explicit = meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let prefix = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        match (&explicit, &prefix) {
            (Some(name), _) => validate_path_segment("metadata.name", name)?,
            (None, Some(prefix)) => validate_path_segment("metadata.generateName", prefix)?,
            (None, None) => {
                return Err(StoreError::invalid(
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
        }
        let uid = uuid::Uuid::new_v4().to_string();
        let created = now_rfc3339();

        let kind = kind.clone();
        self.write(move |tx| {
            let name = match (explicit, prefix) {
                // A duplicate is caught by the primary key when inserting (saves a lookup).
                (Some(name), _) => name,
                (None, Some(prefix)) => {
                    let mut found = None;
                    let mut last = String::new();
                    for _ in 0..GENERATE_NAME_ATTEMPTS {
                        let candidate = generate_name(&prefix);
                        if !tx.exists(&kind, &namespace, &candidate)? {
                            found = Some(candidate);
                            break;
                        }
                        last = candidate;
                    }
                    found.ok_or_else(|| already_exists(&kind, &last))?
                }
                (None, None) => {
                    return Err(StoreError::invalid("metadata.name", "Required value"));
                }
            };

            let rv = tx.next_rv();
            let meta = metadata_mut(&mut object)?;
            meta.insert("name".into(), Value::String(name.clone()));
            if kind.namespaced {
                meta.insert("namespace".into(), Value::String(namespace.clone()));
            } else {
                meta.remove("namespace");
            }
            meta.insert("uid".into(), Value::String(uid.clone()));
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
            meta.insert("creationTimestamp".into(), Value::String(created));
            meta.insert("generation".into(), Value::from(1));
            meta.remove("deletionTimestamp");
            meta.remove("deletionGracePeriodSeconds");
            let owner_uids = Some(owner_uids(&object));
            let write = Write {
                kind: &kind,
                namespace: &namespace,
                name: &name,
                uid: &uid,
                event_type: WatchEventType::Added,
                object,
                prev_labels: None,
                owner_uids,
            };
            tx.record(write).map(Written::object)
        })
        .map(|written| written.object)
    }

    /// Runs a write through group commit ([`crate::group_commit`]): alone when nothing else is
    /// being written, or in one transaction with the writes that arrived meanwhile. Returns when
    /// the transaction holding it is committed (or the write failed).
    fn write(
        &self,
        job: impl FnOnce(&mut WriteTx<'_>) -> Result<Written, StoreError> + Send + 'static,
    ) -> Result<Written, StoreError> {
        self.shared.writes.submit(
            Box::new(job),
            |jobs| self.commit_batch(jobs),
            || Err(StoreError::WriteAbandoned),
        )
    }

    /// Commits a batch of writes in one transaction (see [`crate::batch`] for how a failing
    /// write fails alone);
    /// then advances the counters and broadcasts the events, still under the lock, so watchers
    /// see events in resourceVersion order and a watch subscribing meanwhile misses none.
    fn commit_batch(&self, jobs: Vec<Job>) -> Vec<Result<Written, StoreError>> {
        let count = jobs.len();
        let failed =
            |action: &'static str, error: &StoreError| -> Vec<Result<Written, StoreError>> {
                (0..count)
                    .map(|_| {
                        Err(StoreError::BatchFailed {
                            action,
                            detail: error.to_string(),
                        })
                    })
                    .collect()
            };
        let mut guard = self.lock();
        let state = &mut *guard;
        let counters = Counters {
            rv: state.current_rv,
            compacted_rv: state.compacted_rv,
            writes_since_prune: state.writes_since_prune,
        };
        let retention = self.shared.options.event_log_retention;
        let tx = match state.conn.transaction().during("starting a write") {
            Ok(tx) => tx,
            Err(error) => return failed("starting a write", &error),
        };
        let mut batch = WriteTx::new(&tx, counters, retention);
        let mut results = Vec::with_capacity(count);
        for job in jobs {
            match batch.run(job) {
                Ok(result) => results.push(result),
                // The transaction is rolled back when `tx` is dropped.
                Err(error) => return failed("writing a batch", &error),
            }
        }
        let (counters, events) = batch.finish();
        if results.iter().all(Result::is_err) {
            // Nothing to commit (rolled back on drop).
            return results;
        }
        if let Err(error) = tx.commit().during("committing a write") {
            return failed("committing a write", &error);
        }
        state.current_rv = counters.rv;
        state.compacted_rv = counters.compacted_rv;
        state.writes_since_prune = counters.writes_since_prune;
        for event in events {
            // No receivers is not an error: nobody watches.
            let _ = self.shared.events.send(event);
        }
        results
    }

    /// The object, or [`StoreError::NotFound`].
    pub fn get(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, StoreError> {
        let namespace = key_namespace(kind, namespace)?;
        let state = self.lock();
        batch::load(&state.conn, kind, &namespace, name)?
            .map(|(_, object)| object)
            .ok_or_else(|| not_found(kind, name))
    }

    /// Lists objects of a kind, ordered by (namespace, name), parsed into JSON values.
    /// Parsing dominates the cost (~5-10 µs per small object); the API server's list handler
    /// should use [`Store::list_raw`].
    pub fn list(
        &self,
        kind: &ResourceKind,
        options: &ListOptions,
    ) -> Result<ObjectList, StoreError> {
        let mut items = Vec::new();
        let page = self.list_with(kind, options, |text, name| {
            items.push(parse_object(text, kind, Some(name))?);
            Ok(())
        })?;
        Ok(page.with_items(items))
    }

    /// Like [`Store::list`], but the items are the stored JSON texts, unparsed (only checked to
    /// be JSON), ready to be embedded into a response with serde (`Vec<Box<RawValue>>`
    /// serializes as a JSON array). Label selectors are evaluated on the stored labels alone.
    pub fn list_raw(
        &self,
        kind: &ResourceKind,
        options: &ListOptions,
    ) -> Result<ObjectList<Box<RawValue>>, StoreError> {
        let mut items = Vec::new();
        let page = self.list_with(kind, options, |text, name| {
            let item =
                RawValue::from_string(text.to_string()).map_err(|source| StoreError::Corrupt {
                    what: format!("{} \"{name}\"", kind.qualified_name()),
                    source,
                })?;
            items.push(item);
            Ok(())
        })?;
        Ok(page.with_items(items))
    }

    /// Like [`Store::list_raw`], but the items are appended to `out` as the inside of a JSON
    /// array (`{..},{..}`), straight from SQLite's row buffers: no item is allocated, parsed or
    /// checked (the texts are the store's own `serde_json` output in a file only this process
    /// opens, 0600 and exclusively locked). What a list response of 10,000 objects needs.
    pub fn list_json_items(
        &self,
        kind: &ResourceKind,
        options: &ListOptions,
        out: &mut Vec<u8>,
    ) -> Result<ObjectList<()>, StoreError> {
        let mut first = true;
        self.list_with(kind, options, |text, _| {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(text.as_bytes());
            Ok(())
        })
    }

    /// The `(namespace, name)` of every object of a kind (namespace `""` when cluster-scoped),
    /// in list order, without reading the objects: what a controller's periodic resync needs
    /// (parsing 10,000 objects only to enqueue their names cost ~100 ms and ~100 MB each time).
    pub fn list_keys(&self, kind: &ResourceKind) -> Result<Vec<(String, String)>, StoreError> {
        let state = self.lock();
        let mut statement = state
            .conn
            .prepare_cached(
                "SELECT namespace, name FROM objects WHERE grp = ?1 AND resource = ?2
                 ORDER BY namespace, name",
            )
            .during("preparing a key list")?;
        let mut rows = statement
            .query(params![kind.group, kind.resource])
            .during("listing object keys")?;
        let mut keys = Vec::new();
        while let Some(row) = rows.next().during("listing object keys")? {
            keys.push((
                text_column(row, 0)?.to_string(),
                text_column(row, 1)?.to_string(),
            ));
        }
        Ok(keys)
    }

    /// Calls `each(object text, name)` for every listed object, in order; the result's `items`
    /// has one `()` per object.
    fn list_with(
        &self,
        kind: &ResourceKind,
        options: &ListOptions,
        mut each: impl FnMut(&str, &str) -> Result<(), StoreError>,
    ) -> Result<ObjectList<()>, StoreError> {
        let namespace = match options.namespace.as_deref() {
            None | Some("") => None,
            Some(ns) => Some(key_namespace(kind, Some(ns))?),
        };
        let (after_ns, after_name) = match options.continue_token.as_deref() {
            Some(token) => decode_continue(token)?,
            None => (String::new(), String::new()),
        };
        let limit = options.limit.filter(|l| *l > 0);
        let selector = &options.label_selector;
        let state = self.lock();
        let mut statement = state
            .conn
            .prepare_cached(
                "SELECT namespace, name, labels, data FROM objects
                 WHERE grp = ?1 AND resource = ?2 AND (?3 IS NULL OR namespace = ?3)
                   AND (namespace, name) > (?4, ?5)
                 ORDER BY namespace, name",
            )
            .during("preparing a list")?;
        let mut rows = statement
            .query(params![
                kind.group,
                kind.resource,
                namespace,
                after_ns,
                after_name
            ])
            .during("listing objects")?;
        let mut items = Vec::new();
        let mut last_key: Option<(String, String)> = None;
        let mut continue_token = None;
        while let Some(row) = rows.next().during("listing objects")? {
            let name = text_column(row, 1)?;
            if !selector.is_empty() {
                let labels = match row.get_ref(2).during("reading labels")?.as_str_or_null() {
                    Ok(Some(text)) => Some(parse_object(text, kind, Some(name))?),
                    _ => None,
                };
                if !selector.matches_labels(labels.as_ref()) {
                    continue;
                }
            }
            if limit.is_some_and(|l| items.len() >= l) {
                // One more match exists: the caller needs another page.
                if let Some((ns, name)) = &last_key {
                    continue_token = Some(encode_continue(ns, name));
                }
                break;
            }
            if limit.is_some() {
                last_key = Some((text_column(row, 0)?.to_string(), name.to_string()));
            }
            each(text_column(row, 3)?, name)?;
            items.push(());
        }
        Ok(ObjectList {
            items,
            resource_version: state.current_rv,
            continue_token,
        })
    }

    /// Replaces an object (PUT). `metadata.resourceVersion`, when set, must be the current one
    /// ([`StoreError::Conflict`] otherwise). Kept from the stored object: `uid`,
    /// `creationTimestamp`, `deletionTimestamp`, `deletionGracePeriodSeconds` and `.status`
    /// (status is written only by [`Store::update_status`], as with Kubernetes' status
    /// subresource). `generation` goes up by one when `.spec` changed. An update that leaves an
    /// object with `deletionTimestamp` without finalizers removes it (DELETED event).
    /// An update that changes nothing writes nothing and returns the stored object.
    pub fn update(&self, kind: &ResourceKind, object: Value) -> Result<Value, StoreError> {
        self.update_impl(kind, object, UpdateMode::Main)
    }

    /// Replaces only `.status` (PUT `.../status`); everything else is kept from the stored
    /// object. Same resourceVersion check as [`Store::update`]; `generation` is unchanged.
    pub fn update_status(&self, kind: &ResourceKind, object: Value) -> Result<Value, StoreError> {
        self.update_impl(kind, object, UpdateMode::Status)
    }

    fn update_impl(
        &self,
        kind: &ResourceKind,
        mut object: Value,
        mode: UpdateMode,
    ) -> Result<Value, StoreError> {
        let meta = metadata_mut(&mut object)?;
        let namespace = object_namespace(kind, meta)?;
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                StoreError::invalid("metadata.name", "Required value: name is required")
            })?;
        let requested_rv = match meta.get("resourceVersion").and_then(Value::as_str) {
            None | Some("") => None,
            Some(rv) => Some(parse_resource_version(rv).map_err(|_| {
                StoreError::invalid(
                    "metadata.resourceVersion",
                    format!("Invalid value: \"{rv}\": must be a resourceVersion the server returned (a decimal number)"),
                )
            })?),
        };

        let kind = kind.clone();
        self.write(move |tx| {
            let (current_rv, old) = tx
                .load(&kind, &namespace, &name)?
                .ok_or_else(|| not_found(&kind, &name))?;
            if requested_rv.is_some_and(|rv| rv != current_rv) {
                return Err(StoreError::Conflict {
                    resource: kind.qualified_name(),
                    name,
                    current_rv,
                });
            }
            let mut new = match mode {
                UpdateMode::Main => merge_main_update(&kind, &old, object, &namespace, &name)?,
                UpdateMode::Status => {
                    let mut new = old.clone();
                    set_or_remove(&mut new, "status", object.get("status").cloned());
                    new
                }
            };
            set_resource_version(&mut new, current_rv);
            if new == old {
                return Ok(Written::object(old));
            }
            let rv = tx.next_rv();
            set_resource_version(&mut new, rv);
            let uid = meta_str(&old, "uid").unwrap_or_default().to_string();
            let remove =
                new.pointer("/metadata/deletionTimestamp").is_some() && finalizers(&new).is_empty();
            let owner_uids = owner_uids(&new);
            let owner_uids = (owner_uids != crate::store::owner_uids(&old)).then_some(owner_uids);
            let write = Write {
                kind: &kind,
                namespace: &namespace,
                name: &name,
                uid: &uid,
                event_type: if remove {
                    WatchEventType::Deleted
                } else {
                    WatchEventType::Modified
                },
                prev_labels: old.pointer("/metadata/labels").cloned(),
                object: new,
                owner_uids,
            };
            tx.record(write).map(Written::object)
        })
        .map(|written| written.object)
    }

    /// Deletes an object. With `metadata.finalizers` it is only marked (`deletionTimestamp`,
    /// `deletionGracePeriodSeconds: 0`, generation + 1; MODIFIED event) and
    /// [`DeleteOutcome::Finalizing`] is returned; deleting an object already marked changes
    /// nothing.
    pub fn delete(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
        preconditions: &Preconditions,
    ) -> Result<DeleteOutcome, StoreError> {
        let namespace = key_namespace(kind, namespace)?;
        let kind = kind.clone();
        let name = name.to_string();
        let preconditions = preconditions.clone();
        let written = self.write(move |tx| {
            let (current_rv, old) = tx
                .load(&kind, &namespace, &name)?
                .ok_or_else(|| not_found(&kind, &name))?;
            let uid = meta_str(&old, "uid").unwrap_or_default().to_string();
            if let Some(want) = &preconditions.uid
                && *want != uid
            {
                return Err(StoreError::PreconditionFailed {
                    resource: kind.qualified_name(),
                    name: name.clone(),
                    detail: format!("UID in precondition: {want}, UID in object meta: {uid}"),
                });
            }
            if let Some(want) = preconditions.resource_version
                && want != current_rv
            {
                return Err(StoreError::PreconditionFailed {
                    resource: kind.qualified_name(),
                    name: name.clone(),
                    detail: format!(
                        "ResourceVersion in precondition: {want}, ResourceVersion in object meta: {current_rv}"
                    ),
                });
            }
            let rv = tx.next_rv();
            let mut new = old.clone();
            let finalizing = !finalizers(&old).is_empty();
            if finalizing {
                if old.pointer("/metadata/deletionTimestamp").is_some() {
                    return Ok(Written {
                        object: old,
                        finalizing: true,
                    });
                }
                let meta = metadata_mut(&mut new)?;
                let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(0);
                if generation > 0 {
                    meta.insert("generation".into(), Value::from(generation + 1));
                }
                meta.insert("deletionTimestamp".into(), Value::String(now_rfc3339()));
                meta.insert("deletionGracePeriodSeconds".into(), Value::from(0));
            }
            set_resource_version(&mut new, rv);
            let write = Write {
                kind: &kind,
                namespace: &namespace,
                name: &name,
                uid: &uid,
                event_type: if finalizing {
                    WatchEventType::Modified
                } else {
                    WatchEventType::Deleted
                },
                prev_labels: old.pointer("/metadata/labels").cloned(),
                object: new,
                owner_uids: None,
            };
            tx.record(write).map(|object| Written { object, finalizing })
        })?;
        Ok(if written.finalizing {
            DeleteOutcome::Finalizing(written.object)
        } else {
            DeleteOutcome::Deleted(written.object)
        })
    }

    /// Objects of any kind whose `metadata.ownerReferences` name `owner_uid`
    /// (for the garbage collector), ordered by (group, resource, namespace, name).
    pub fn list_dependents(&self, owner_uid: &str) -> Result<Vec<StoredObject>, StoreError> {
        let state = self.lock();
        let mut statement = state
            .conn
            .prepare_cached(
                "SELECT o.grp, o.resource, o.namespace, o.data
                 FROM owner_refs r JOIN objects o
                   ON o.grp = r.grp AND o.resource = r.resource
                  AND o.namespace = r.namespace AND o.name = r.name
                 WHERE r.owner_uid = ?1
                 ORDER BY o.grp, o.resource, o.namespace, o.name",
            )
            .during("preparing the dependents query")?;
        let rows = statement
            .query_map([owner_uid], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .during("listing dependents")?;
        let mut out = Vec::new();
        for row in rows {
            let (group, resource, namespace, data) = row.during("listing dependents")?;
            out.push(stored_object(group, resource, namespace, &data)?);
        }
        Ok(out)
    }

    /// The object with this `metadata.uid`, of any kind (the garbage collector asks whether an
    /// owner still exists).
    pub fn get_by_uid(&self, uid: &str) -> Result<Option<StoredObject>, StoreError> {
        let state = self.lock();
        let row = state
            .conn
            .prepare_cached("SELECT grp, resource, namespace, data FROM objects WHERE uid = ?1")
            .during("preparing a uid lookup")?
            .query_row([uid], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .optional()
            .during("looking up an object by uid")?;
        row.map(|(group, resource, namespace, data)| {
            stored_object(group, resource, namespace, &data)
        })
        .transpose()
    }

    /// Starts a watch; see [`WatchOptions`] for where it starts.
    pub fn watch(&self, kind: &ResourceKind, options: WatchOptions) -> Result<Watch, StoreError> {
        let namespace = match options.namespace.as_deref() {
            None | Some("") => None,
            Some(ns) => Some(key_namespace(kind, Some(ns))?),
        };
        let filter = WatchFilter {
            kind: kind.clone(),
            namespace,
            selector: options.label_selector,
        };
        let state = self.lock();
        // Subscribing under the lock: every event committed after this point reaches the
        // receiver, every event before it is in the backlog. No gap, no duplicate.
        let live = self.shared.events.subscribe();
        let start_rv = state.current_rv;
        let mut backlog = VecDeque::new();
        match options.resource_version.filter(|rv| *rv > 0) {
            None => {
                for object in state.list_all(&filter)? {
                    backlog.push_back(WatchEvent {
                        event_type: WatchEventType::Added,
                        object,
                    });
                }
            }
            Some(rv) => {
                if rv < state.compacted_rv {
                    return Err(StoreError::Expired {
                        requested: rv,
                        compacted: state.compacted_rv,
                    });
                }
                if rv > state.current_rv {
                    return Err(StoreError::TooLargeResourceVersion {
                        requested: rv,
                        current: state.current_rv,
                    });
                }
                for event in state.events_after(rv, &filter)? {
                    if let Some(out) = filter.translate(&event).transpose()? {
                        backlog.push_back(out);
                    }
                }
            }
        }
        drop(state);
        Ok(Watch::new(filter, backlog, live, start_rv))
    }
}

#[derive(Debug, Clone, Copy)]
enum UpdateMode {
    Main,
    Status,
}

impl State {
    /// Every current object matching the watch filter.
    fn list_all(&self, filter: &WatchFilter) -> Result<Vec<Value>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT name, data FROM objects
                 WHERE grp = ?1 AND resource = ?2 AND (?3 IS NULL OR namespace = ?3)
                 ORDER BY namespace, name",
            )
            .during("preparing a list")?;
        let mut rows = statement
            .query(params![
                filter.kind.group,
                filter.kind.resource,
                filter.namespace
            ])
            .during("listing objects")?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().during("listing objects")? {
            let text = text_column(row, 1)?;
            let object = parse_object(text, &filter.kind, None)?;
            if filter.selector.matches_object(&object) {
                out.push(object);
            }
        }
        Ok(out)
    }

    /// Logged events with rv > `after` for the filter's kind (and namespace), oldest first.
    fn events_after(&self, after: u64, filter: &WatchFilter) -> Result<Vec<LogEvent>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT rv, namespace, event_type, data, prev_labels FROM events
                 WHERE rv > ?1 AND grp = ?2 AND resource = ?3 AND (?4 IS NULL OR namespace = ?4)
                 ORDER BY rv",
            )
            .during("preparing the event log query")?;
        let rows = statement
            .query_map(
                params![
                    as_i64(after),
                    filter.kind.group,
                    filter.kind.resource,
                    filter.namespace
                ],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, Option<String>>(4)?,
                    ))
                },
            )
            .during("reading the event log")?;
        let mut out = Vec::new();
        for row in rows {
            let (rv, namespace, event_type, data, prev_labels) =
                row.during("reading the event log")?;
            let corrupt = |source| StoreError::Corrupt {
                what: format!("event {rv}"),
                source,
            };
            let event_type = WatchEventType::parse(&event_type).ok_or_else(|| {
                StoreError::invalid(
                    "events.event_type",
                    format!("event {rv} has unknown type {event_type:?}"),
                )
            })?;
            out.push(LogEvent {
                rv: as_u64(rv),
                group: filter.kind.group.clone(),
                resource: filter.kind.resource.clone(),
                namespace,
                event_type,
                data: data.into_boxed_str(),
                prev_labels: prev_labels
                    .map(|l| serde_json::from_str(&l).map_err(corrupt))
                    .transpose()?,
            });
        }
        Ok(out)
    }
}

/// Parses a resourceVersion string (`"123"`) as the store uses them.
pub fn parse_resource_version(rv: &str) -> Result<u64, StoreError> {
    rv.parse::<u64>().map_err(|_| {
        StoreError::invalid(
            "resourceVersion",
            format!("Invalid value: \"{rv}\": resourceVersion must be a decimal number returned by the server"),
        )
    })
}

/// A TEXT column borrowed from the row (no copy: lists parse straight from SQLite's buffer).
fn text_column<'r>(row: &'r rusqlite::Row<'_>, index: usize) -> Result<&'r str, StoreError> {
    let value = row.get_ref(index).during("reading a column")?;
    value.as_str().map_err(|e| StoreError::invalid(
        "objects.data",
        format!("a stored object is not text ({e}); the database file was modified by another program"),
    ))
}

fn not_found(kind: &ResourceKind, name: &str) -> StoreError {
    StoreError::NotFound {
        resource: kind.qualified_name(),
        name: name.to_string(),
    }
}

pub(crate) fn already_exists(kind: &ResourceKind, name: &str) -> StoreError {
    StoreError::AlreadyExists {
        resource: kind.qualified_name(),
        name: name.to_string(),
    }
}

pub(crate) fn parse_object(
    text: &str,
    kind: &ResourceKind,
    name: Option<&str>,
) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        what: format!("{} \"{}\"", kind.qualified_name(), name.unwrap_or("?")),
        source,
    })
}

fn stored_object(
    group: String,
    resource: String,
    namespace: String,
    data: &str,
) -> Result<StoredObject, StoreError> {
    let object = serde_json::from_str(data).map_err(|source| StoreError::Corrupt {
        what: format!("{resource}.{group} in namespace {namespace:?}"),
        source,
    })?;
    Ok(StoredObject {
        group,
        resource,
        namespace: (!namespace.is_empty()).then_some(namespace),
        object,
    })
}

/// `metadata` as a mutable map (created when absent).
fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, StoreError> {
    let map = object
        .as_object_mut()
        .ok_or_else(|| StoreError::invalid("", "the object must be a JSON object"))?;
    map.entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| StoreError::invalid("metadata", "Invalid value: metadata must be an object"))
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

fn set_resource_version(object: &mut Value, rv: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

fn set_or_remove(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(v) => {
                map.insert(field.to_string(), v);
            }
            None => {
                map.remove(field);
            }
        }
    }
}

fn finalizers(object: &Value) -> Vec<&str> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn owner_uids(object: &Value) -> BTreeSet<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .filter(|uid| !uid.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the object a main-resource update stores: the caller's object with the fields the
/// server owns carried over from the stored one.
fn merge_main_update(
    kind: &ResourceKind,
    old: &Value,
    mut new: Value,
    namespace: &str,
    name: &str,
) -> Result<Value, StoreError> {
    let old_meta = old.get("metadata").and_then(Value::as_object);
    let deleting = old_meta.is_some_and(|m| m.contains_key("deletionTimestamp"));
    if deleting {
        let before: BTreeSet<&str> = finalizers(old).into_iter().collect();
        let added: Vec<&str> = finalizers(&new)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(StoreError::invalid(
                "metadata.finalizers",
                format!(
                    "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                ),
            ));
        }
    }
    let spec_changed = old.get("spec") != new.get("spec");
    set_or_remove(&mut new, "status", old.get("status").cloned());
    let meta = metadata_mut(&mut new)?;
    meta.insert("name".into(), Value::String(name.to_string()));
    if kind.namespaced {
        meta.insert("namespace".into(), Value::String(namespace.to_string()));
    } else {
        meta.remove("namespace");
    }
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.and_then(|m| m.get(field)) {
            Some(v) => {
                meta.insert(field.to_string(), v.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
    if spec_changed {
        let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(0);
        meta.insert("generation".into(), Value::from(generation + 1));
    }
    Ok(new)
}

/// The namespace key of an object being written, from `metadata.namespace`.
fn object_namespace(kind: &ResourceKind, meta: &Map<String, Value>) -> Result<String, StoreError> {
    let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
    if kind.namespaced {
        if ns.is_empty() {
            return Err(StoreError::invalid(
                "metadata.namespace",
                format!(
                    "Required value: {} objects live in a namespace",
                    kind.qualified_name()
                ),
            ));
        }
        validate_path_segment("metadata.namespace", ns)?;
        Ok(ns.to_string())
    } else {
        // Kubernetes ignores metadata.namespace on cluster-scoped objects.
        Ok(String::new())
    }
}

/// The namespace key for get/delete/list/watch calls.
fn key_namespace(kind: &ResourceKind, namespace: Option<&str>) -> Result<String, StoreError> {
    match (kind.namespaced, namespace) {
        (true, Some(ns)) if !ns.is_empty() => Ok(ns.to_string()),
        (true, _) => Err(StoreError::invalid(
            "namespace",
            format!(
                "Required value: {} objects live in a namespace",
                kind.qualified_name()
            ),
        )),
        (false, None | Some("")) => Ok(String::new()),
        (false, Some(ns)) => Err(StoreError::invalid(
            "namespace",
            format!(
                "Invalid value: \"{ns}\": {} objects are cluster-scoped; ask without a namespace",
                kind.qualified_name()
            ),
        )),
    }
}

/// The rules every name must meet to be a URL path segment (Kubernetes'
/// `IsValidPathSegmentName`); kind-specific rules (DNS labels etc.) are admission's job.
fn validate_path_segment(field: &str, name: &str) -> Result<(), StoreError> {
    if name == "." || name == ".." {
        return Err(StoreError::invalid(
            field,
            format!("Invalid value: \"{name}\": may not be '.' or '..'"),
        ));
    }
    if let Some(c) = name.chars().find(|c| matches!(c, '/' | '%')) {
        return Err(StoreError::invalid(
            field,
            format!("Invalid value: \"{name}\": may not contain '{c}'"),
        ));
    }
    if name.len() > 253 {
        return Err(StoreError::invalid(
            field,
            format!("Invalid value: \"{name}\": must be no more than 253 characters"),
        ));
    }
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Continue tokens: hex of `namespace/name` of the last item returned (opaque to clients).
fn encode_continue(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
        .bytes()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

fn decode_continue(token: &str) -> Result<(String, String), StoreError> {
    let bad = || {
        StoreError::invalid(
            "continue",
            format!(
                "Invalid value: \"{token}\": continue key is not valid; use the token a list returned, or list again without it"
            ),
        )
    };
    let digit = |c: u8| {
        HEX.iter()
            .position(|h| *h == c)
            .and_then(|p| u8::try_from(p).ok())
    };
    let bytes = token.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(bad());
    }
    let mut raw = Vec::with_capacity(bytes.len() / 2);
    for pair in bytes.chunks(2) {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => raw.push(h << 4 | l),
            _ => return Err(bad()),
        }
    }
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (ns, name) = text.split_once('/').ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    Ok((ns.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vms() -> ResourceKind {
        ResourceKind::new("kubevirt.io", "virtualmachines", true)
    }

    fn vm(name: &str) -> Value {
        serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"runStrategy": "Halted"}
        })
    }

    fn rv_of(object: &Value) -> u64 {
        meta_str(object, "resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0)
    }

    /// A write a test thread makes.
    type Op<T> = Box<dyn FnOnce(&Store) -> T + Send>;

    /// Holds the store's lock so that the next write leads a batch that cannot start, lets
    /// `later` writes queue behind it, then releases: the queued writes form one batch.
    fn run_batched<T: Send + 'static>(
        store: &Store,
        first: impl FnOnce(&Store) -> T + Send + 'static,
        later: Vec<Op<T>>,
    ) -> (T, Vec<T>) {
        let held = store.lock();
        let spawn = |f: Op<T>| {
            let store = store.clone();
            std::thread::spawn(move || f(&store))
        };
        let first = spawn(Box::new(first));
        // The first write leads: it has taken itself off the queue and waits for the lock.
        while store.shared.writes.queue_state() != (0, true) {
            std::thread::yield_now();
        }
        let count = later.len();
        let mut handles = Vec::new();
        for f in later {
            handles.push(spawn(f));
            // One at a time, so the queue's order is the order given.
            while store.shared.writes.queue_state().0 != handles.len() {
                std::thread::yield_now();
            }
        }
        assert_eq!(store.shared.writes.queue_state(), (count, true));
        drop(held);
        let first = first.join().unwrap();
        let later = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (first, later)
    }

    #[test]
    fn a_failing_write_in_a_batch_fails_alone_and_resource_versions_stay_gap_free() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store.db"), StoreOptions::default()).unwrap();
        let seed = store.create(&vms(), vm("seed")).unwrap();
        assert_eq!(rv_of(&seed), 1);
        let mut watch = store
            .watch(
                &vms(),
                WatchOptions {
                    resource_version: Some(1),
                    ..WatchOptions::default()
                },
            )
            .unwrap();
        let stale = seed.clone();
        let mut changed = seed.clone();
        changed["spec"]["note"] = "first".into();
        let later: Vec<Op<Result<Value, StoreError>>> = vec![
            // ok: rv 3
            Box::new(move |s| s.update(&vms(), changed)),
            // conflict: its resourceVersion (1) was current when it was sent, but the update
            // before it in the same batch moved the object on
            Box::new(move |s| {
                let mut v = stale;
                v["spec"]["note"] = "stale".into();
                s.update(&vms(), v)
            }),
            // ok: rv 4
            Box::new(|s| s.create(&vms(), vm("b"))),
            // already exists: created by the first write of the batch before
            Box::new(|s| s.create(&vms(), vm("a"))),
            // not found: refused inside the batch
            Box::new(|s| s.update_status(&vms(), vm("missing"))),
            // ok: rv 5
            Box::new(|s| s.create(&vms(), vm("c"))),
        ];
        let (first, later) = run_batched(&store, |s| s.create(&vms(), vm("a")), later);
        assert_eq!(rv_of(&first.unwrap()), 2);
        let outcome: Vec<Result<u64, String>> = later
            .into_iter()
            .map(|r| r.map(|o| rv_of(&o)).map_err(|e| e.reason().to_string()))
            .collect();
        assert_eq!(
            outcome,
            vec![
                Ok(3),
                Err("Conflict".into()),
                Ok(4),
                Err("AlreadyExists".into()),
                Err("NotFound".into()),
                Ok(5)
            ]
        );
        assert_eq!(store.current_resource_version(), 5);
        let stored = store.get(&vms(), Some("default"), "seed").unwrap();
        assert_eq!(stored["spec"]["note"], "first");
        assert_eq!(rv_of(&stored), 3);
        // The watch saw every committed write once, in resourceVersion order.
        let mut seen = Vec::new();
        while let Some(event) = watch.try_next() {
            let event = event.unwrap();
            seen.push((
                rv_of(&event.object),
                meta_str(&event.object, "name").unwrap_or("").to_string(),
            ));
        }
        assert_eq!(
            seen,
            vec![
                (2, "a".to_string()),
                (3, "seed".to_string()),
                (4, "b".to_string()),
                (5, "c".to_string())
            ]
        );
        // The log (for resuming watches) holds the same, and a reopened store continues at 6.
        drop(store);
        let store = Store::open(dir.path().join("store.db"), StoreOptions::default()).unwrap();
        assert_eq!(store.current_resource_version(), 5);
        let created = store.create(&vms(), vm("d")).unwrap();
        assert_eq!(rv_of(&created), 6);
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = encode_continue("default", "vm-1");
        assert_eq!(
            decode_continue(&token).unwrap(),
            ("default".into(), "vm-1".into())
        );
        assert_eq!(
            decode_continue(&encode_continue("", "sc")).unwrap(),
            ("".into(), "sc".into())
        );
        for bad in ["zz", "abc", "", "2f"] {
            assert!(
                matches!(decode_continue(bad), Err(StoreError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn path_segment_rules() {
        assert!(validate_path_segment("metadata.name", "vm-1").is_ok());
        for bad in [".", "..", "a/b", "a%b"] {
            assert!(
                validate_path_segment("metadata.name", bad).is_err(),
                "{bad}"
            );
        }
    }
}
