//! The informer cache: the controllers' read-only view of the objects of one resource, kept
//! current by a reflector (client-go's shared informer, kube-runtime's `reflector`).
//!
//! [`Informer::spawn`] starts a task that lists the resource through the [`ObjectClient`], then
//! watches from the list's resourceVersion (no gap, no repeat), and applies each change to an
//! in-memory map `(namespace, name) -> object` plus an owner index (owner uid -> dependents)
//! for the garbage collector. The map keeps each object as its compact JSON text and reads parse
//! it again: a parsed `Value` holds several times the memory of its text (10,000 VMs: ~40 MB
//! against ~10 MB), and a reconcile reads a few objects, not thousands. When the watch fails or ends (the store dropped events for a slow
//! reader, the version was compacted away, a connection closed), it lists again and turns the
//! difference into events; between failed attempts it backs off from 100 ms to 30 s.
//!
//! Reads ([`Informer::get`], [`Informer::list`], [`Informer::by_owner_uid`]) are synchronous and
//! take a short read lock: call them from async code or from a blocking reconcile alike. Each
//! read returns a fresh copy: treat it as read-only and write through the client.
//!
//! Controllers learn of changes through [`Informer::subscribe`]: an unbounded channel of
//! [`CacheEvent`]s that starts with every cached object as `Added` and then carries each change
//! in order, so a handler that turns events into work-queue keys misses nothing. A blocking
//! caller that waits for its own write to reach the cache uses [`Informer::wait_until`] (woken
//! by each change, no polling).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use ferrovirt_resources::ResourceDef;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::client::{ClientError, EventKind, ObjectClient, ObjectEvent, VersionedList};

/// The first wait before listing again after a failed or ended watch.
const RELIST_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest wait before listing again.
const RELIST_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where an object is: its namespace (`""` for cluster-scoped objects) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object, from `metadata.namespace` and `metadata.name`.
    pub fn of(object: &Value) -> Self {
        Self::new(
            metadata_str(object, "namespace"),
            metadata_str(object, "name"),
        )
    }
}

/// One change of the cache, in the order the cache applied it.
#[derive(Debug, Clone)]
pub struct CacheEvent {
    /// `Added` for an object the cache did not have, `Modified` for a new version of one it
    /// had, `Deleted` for one that is gone.
    pub kind: EventKind,
    /// The object now (for `Deleted`: its last state).
    pub object: Arc<Value>,
    /// The cached version before the change (`None` for `Added`): a handler can compare owner
    /// references or labels of the two, as client-go's `UpdateFunc(old, new)`.
    pub old: Option<Arc<Value>>,
}

impl CacheEvent {
    /// Where the changed object is.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::of(&self.object)
    }
}

/// The informer of one resource. Clones share the cache; the reflector task stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Informer {
    inner: Arc<Inner>,
}

struct Inner {
    resource: ResourceDef,
    shared: Arc<Shared>,
    reflector: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reflector.abort();
    }
}

/// What the reflector task and the readers share.
struct Shared {
    index: RwLock<Index>,
    /// `true` once the first list is in the cache.
    synced: watch::Sender<bool>,
    /// How many times the index changed (a list or a watch event applied), and the condition
    /// blocking waiters in [`Informer::wait_changed`] sleep on.
    changes: Mutex<u64>,
    changed: Condvar,
}

/// One cached object: its JSON text and what the index and the label filter read without
/// parsing it.
struct Entry {
    json: Box<str>,
    resource_version: Box<str>,
    labels: Vec<(Box<str>, Box<str>)>,
    /// The uids in `metadata.ownerReferences`.
    owners: Vec<String>,
}

impl Entry {
    fn of(object: &Value) -> Self {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(key, value)| Some((key.as_str().into(), value.as_str()?.into())))
            .collect();
        Self {
            // Serializing a `Value` cannot fail (string keys, finite numbers).
            json: serde_json::to_string(object).unwrap_or_default().into(),
            resource_version: metadata_str(object, "resourceVersion").into(),
            labels,
            owners: owner_uids(object).collect(),
        }
    }

    /// The object, parsed again (`Value::Null` if the text were ever not JSON, which the
    /// serialization in [`Entry::of`] rules out).
    fn object(&self) -> Arc<Value> {
        Arc::new(serde_json::from_str(&self.json).unwrap_or_else(|error| {
            tracing::error!(%error, "informer: a cached object is not JSON");
            Value::Null
        }))
    }

    fn same_version(&self, object: &Value) -> bool {
        !self.resource_version.is_empty()
            && *self.resource_version == *metadata_str(object, "resourceVersion")
    }

    fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        labels.iter().all(|(key, value)| {
            self.labels
                .iter()
                .any(|(own_key, own_value)| **own_key == **key && **own_value == **value)
        })
    }
}

#[derive(Default)]
struct Index {
    objects: BTreeMap<ObjectKey, Entry>,
    /// Owner uid -> the keys of the objects whose `ownerReferences` name it.
    by_owner: HashMap<String, BTreeSet<ObjectKey>>,
    subscribers: Vec<mpsc::UnboundedSender<CacheEvent>>,
}

impl Informer {
    /// Starts the reflector of `resource` (all namespaces) on the current tokio runtime (like
    /// `tokio::spawn`, it panics outside one).
    pub fn spawn(client: Arc<dyn ObjectClient>, resource: ResourceDef) -> Self {
        let shared = Arc::new(Shared {
            index: RwLock::new(Index::default()),
            synced: watch::Sender::new(false),
            changes: Mutex::new(0),
            changed: Condvar::new(),
        });
        let reflector = tokio::spawn(reflect(client, resource, shared.clone()));
        Self {
            inner: Arc::new(Inner {
                resource,
                shared,
                reflector,
            }),
        }
    }

    /// The resource this informer caches.
    pub fn resource(&self) -> &ResourceDef {
        &self.inner.resource
    }

    /// Whether the first list has reached the cache (until then reads may miss objects).
    pub fn has_synced(&self) -> bool {
        *self.inner.shared.synced.borrow()
    }

    /// Waits until the first list has reached the cache.
    pub async fn wait_synced(&self) {
        let mut synced = self.inner.shared.synced.subscribe();
        // The sender lives in `shared`, which `self` keeps alive: the wait cannot fail.
        let _ = synced.wait_for(|synced| *synced).await;
    }

    /// The cached object (`namespace`: `None` or `""` for a cluster-scoped resource).
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<Value>> {
        let key = ObjectKey::new(namespace.unwrap_or(""), name);
        self.read().objects.get(&key).map(Entry::object)
    }

    /// The cached objects in `namespace` (`None`: all) whose labels include every
    /// `(key, value)` pair of `labels` (empty: all), ordered by namespace and name.
    pub fn list(&self, namespace: Option<&str>, labels: &[(&str, &str)]) -> Vec<Arc<Value>> {
        let index = self.read();
        let matches = |entry: &&Entry| entry.has_labels(labels);
        match namespace {
            Some(namespace) => index
                .objects
                .range(ObjectKey::new(namespace, "")..)
                .take_while(|(key, _)| key.namespace == namespace)
                .map(|(_, entry)| entry)
                .filter(matches)
                .map(Entry::object)
                .collect(),
            None => index
                .objects
                .values()
                .filter(matches)
                .map(Entry::object)
                .collect(),
        }
    }

    /// The keys of every cached object, ordered (what a periodic resync enqueues).
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.read().objects.keys().cloned().collect()
    }

    /// The cached objects whose `metadata.ownerReferences` name the owner `uid`.
    pub fn by_owner_uid(&self, uid: &str) -> Vec<Arc<Value>> {
        let index = self.read();
        index
            .by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|key| index.objects.get(key).map(Entry::object))
            .collect()
    }

    /// A channel of the cache's changes: first every cached object as `Added`, then each
    /// change as the cache applies it. Unbounded, so a slow reader loses nothing; drop the
    /// receiver to unsubscribe.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<CacheEvent> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut index = self.inner.shared.write();
        for entry in index.objects.values() {
            let _ = sender.send(CacheEvent {
                kind: EventKind::Added,
                object: entry.object(),
                old: None,
            });
        }
        index.subscribers.push(sender);
        receiver
    }

    /// Blocks the calling thread (never call it on an async task) until `ready` says yes, looked
    /// at now and after each change the cache applies, or until `deadline`; whether it said yes.
    pub fn wait_until(&self, deadline: Instant, mut ready: impl FnMut(&Informer) -> bool) -> bool {
        loop {
            // The count first: a change between it and the look wakes the wait at once.
            let seen = *self.inner.shared.lock_changes();
            if ready(self) {
                return true;
            }
            if !self.wait_changed(seen, deadline) {
                return false;
            }
        }
    }

    /// Waits until the cache has applied a change after the count `seen`, or `deadline` has
    /// passed; whether it changed.
    fn wait_changed(&self, seen: u64, deadline: Instant) -> bool {
        let shared = &self.inner.shared;
        let mut changes = shared.lock_changes();
        while *changes == seen {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            changes = shared
                .changed
                .wait_timeout(changes, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.inner.shared.read()
    }
}

impl Shared {
    // No code of a caller runs under these locks and every change of the index is whole
    // before anything could panic, so a poisoned lock still guards a usable index.
    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, u64> {
        self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a change of the index (after it is in place) and wakes the blocking waiters.
    fn changed(&self) {
        *self.lock_changes() += 1;
        self.changed.notify_all();
    }
}

/// The reflector: list, watch from the list's version, apply; list again when the watch ends.
async fn reflect(client: Arc<dyn ObjectClient>, resource: ResourceDef, shared: Arc<Shared>) {
    let mut backoff = RELIST_BACKOFF_BASE;
    loop {
        let outcome = list_then_watch(&client, &resource, &shared).await;
        if outcome.applied_events {
            backoff = RELIST_BACKOFF_BASE;
        }
        match outcome.error {
            Some(error) => tracing::warn!(
                resource = resource.plural, %error, retry_in = ?backoff, "informer: listing again"
            ),
            None => tracing::debug!(
                resource = resource.plural, retry_in = ?backoff, "informer: watch ended; listing again"
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RELIST_BACKOFF_MAX);
    }
}

/// How one list-and-watch round ended.
struct Outcome {
    /// Whether the watch delivered anything (a healthy round: the backoff starts over).
    applied_events: bool,
    /// `None` when the watch stream simply ended.
    error: Option<ClientError>,
}

impl Outcome {
    fn failed(error: ClientError) -> Self {
        Self {
            applied_events: false,
            error: Some(error),
        }
    }
}

async fn list_then_watch(
    client: &Arc<dyn ObjectClient>,
    resource: &ResourceDef,
    shared: &Shared,
) -> Outcome {
    let list = {
        let (client, resource) = (client.clone(), *resource);
        tokio::task::spawn_blocking(move || client.list_with_version(&resource)).await
    };
    let list = match list {
        Ok(Ok(list)) => list,
        Ok(Err(error)) => return Outcome::failed(error),
        Err(join) => return Outcome::failed(ClientError::Other(format!("list task: {join}"))),
    };
    let VersionedList {
        items,
        resource_version,
    } = list;
    shared.write().replace(items);
    shared.changed();
    shared.synced.send_replace(true);

    let watch = {
        let (client, resource) = (client.clone(), *resource);
        tokio::task::spawn_blocking(move || client.watch_from(&resource, &resource_version)).await
    };
    let mut watch = match watch {
        Ok(Ok(watch)) => watch,
        Ok(Err(error)) => return Outcome::failed(error),
        Err(join) => return Outcome::failed(ClientError::Other(format!("watch task: {join}"))),
    };
    let mut applied_events = false;
    while let Some(item) = watch.next().await {
        match item {
            Ok(event) => {
                shared.write().apply(event);
                shared.changed();
                applied_events = true;
            }
            Err(error) => {
                return Outcome {
                    applied_events,
                    error: Some(error),
                };
            }
        }
    }
    Outcome {
        applied_events,
        error: None,
    }
}

impl Index {
    /// Replaces the cache with a fresh list; the differences become events.
    fn replace(&mut self, items: Vec<Value>) {
        let mut fresh: BTreeMap<ObjectKey, Value> = items
            .into_iter()
            .map(|object| (ObjectKey::of(&object), object))
            .collect();
        let mut events = Vec::new();
        let mut kept = BTreeMap::new();
        for (key, old) in std::mem::take(&mut self.objects) {
            match fresh.remove(&key) {
                None => events.push(CacheEvent {
                    kind: EventKind::Deleted,
                    object: old.object(),
                    old: Some(old.object()),
                }),
                Some(new) if old.same_version(&new) => {
                    kept.insert(key, old);
                }
                Some(new) => {
                    let entry = Entry::of(&new);
                    events.push(CacheEvent {
                        kind: EventKind::Modified,
                        object: Arc::new(new),
                        old: Some(old.object()),
                    });
                    kept.insert(key, entry);
                }
            }
        }
        for (key, new) in fresh {
            kept.insert(key, Entry::of(&new));
            events.push(CacheEvent {
                kind: EventKind::Added,
                object: Arc::new(new),
                old: None,
            });
        }
        self.objects = kept;
        self.by_owner.clear();
        for (key, entry) in &self.objects {
            for uid in &entry.owners {
                self.by_owner
                    .entry(uid.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        for event in events {
            self.publish(event);
        }
    }

    /// Applies one watch event.
    fn apply(&mut self, event: ObjectEvent) {
        let key = ObjectKey::of(&event.object);
        let object = Arc::new(event.object);
        let entry = Entry::of(&object);
        let owners = entry.owners.clone();
        let old = match event.kind {
            EventKind::Deleted => self.objects.remove(&key),
            EventKind::Added | EventKind::Modified => self.objects.insert(key.clone(), entry),
        };
        if let Some(old) = &old {
            self.unindex_owners(&key, &old.owners);
        }
        let kind = match (event.kind, &old) {
            (EventKind::Deleted, _) => EventKind::Deleted,
            // The watch repeated what the list had (a store watch from version 0 replays
            // every object as ADDED).
            (_, Some(old)) if old.same_version(&object) => {
                self.index_owners(&key, &owners);
                return;
            }
            (_, Some(_)) => EventKind::Modified,
            (_, None) => EventKind::Added,
        };
        if kind != EventKind::Deleted {
            self.index_owners(&key, &owners);
        }
        if self.subscribers.is_empty() {
            return;
        }
        let old = old.map(|old| old.object());
        self.publish(CacheEvent { kind, object, old });
    }

    fn index_owners(&mut self, key: &ObjectKey, owners: &[String]) {
        for uid in owners {
            self.by_owner
                .entry(uid.clone())
                .or_default()
                .insert(key.clone());
        }
    }

    fn unindex_owners(&mut self, key: &ObjectKey, owners: &[String]) {
        for uid in owners {
            if let Some(keys) = self.by_owner.get_mut(uid) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_owner.remove(uid);
                }
            }
        }
    }

    /// Sends the event to every subscriber; forgets those that dropped their receiver.
    fn publish(&mut self, event: CacheEvent) {
        self.subscribers
            .retain(|subscriber| subscriber.send(event.clone()).is_ok());
    }
}

fn metadata_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The uids in `metadata.ownerReferences`.
fn owner_uids(object: &Value) -> impl Iterator<Item = String> + '_ {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|reference| reference.get("uid").and_then(Value::as_str))
        .filter(|uid| !uid.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_resources::{PVCS, VMS};
    use ferrovirt_store::{Preconditions, Store, StoreOptions};
    use serde_json::json;

    const WAIT: Duration = Duration::from_secs(10);

    fn open_store(options: StoreOptions) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db"), options).unwrap();
        (dir, store)
    }

    fn pvc(name: &str, labels: Value, owners: &[&str]) -> Value {
        let refs: Vec<Value> = owners
            .iter()
            .map(|uid| {
                json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "name": "vm", "uid": uid})
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default", "labels": labels,
                "ownerReferences": refs},
            "spec": {}})
    }

    fn vm(namespace: &str, name: &str, labels: Value) -> Value {
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {}})
    }

    fn names(objects: &[Arc<Value>]) -> Vec<String> {
        objects
            .iter()
            .map(|o| metadata_str(o, "name").to_owned())
            .collect()
    }

    /// Reads cache events until `done` holds for the informer; returns every event up to then.
    async fn settle(
        informer: &Informer,
        events: &mut mpsc::UnboundedReceiver<CacheEvent>,
        done: impl Fn(&Informer) -> bool,
    ) -> Vec<CacheEvent> {
        let mut seen = Vec::new();
        tokio::time::timeout(WAIT, async {
            while !done(informer) {
                match events.recv().await {
                    Some(event) => seen.push(event),
                    None => break,
                }
            }
        })
        .await
        .unwrap();
        assert!(done(informer), "the cache did not settle; events: {seen:?}");
        // The cache publishes under the lock it changes under: the events that led to the
        // state just checked are all in the channel already.
        while let Ok(event) = events.try_recv() {
            seen.push(event);
        }
        seen
    }

    fn event_summary(events: &[CacheEvent]) -> Vec<(EventKind, String)> {
        events
            .iter()
            .map(|e| (e.kind, metadata_str(&e.object, "name").to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn objects_created_before_the_informer_are_listed() {
        let (_dir, store) = open_store(StoreOptions::default());
        store
            .create(&VMS.store_kind(), vm("default", "a", json!({})))
            .unwrap();
        store
            .create(&VMS.store_kind(), vm("other", "b", json!({})))
            .unwrap();
        let informer = Informer::spawn(Arc::new(store), VMS);
        tokio::time::timeout(WAIT, informer.wait_synced())
            .await
            .unwrap();
        assert!(informer.has_synced());
        assert_eq!(names(&informer.list(None, &[])), ["a", "b"]);
        assert_eq!(
            informer.keys(),
            [ObjectKey::new("default", "a"), ObjectKey::new("other", "b")]
        );
        let a = informer.get(Some("default"), "a").unwrap();
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        assert!(informer.get(Some("other"), "a").is_none());
        let mut events = informer.subscribe();
        let replay = [events.recv().await.unwrap(), events.recv().await.unwrap()];
        assert_eq!(
            event_summary(&replay),
            [
                (EventKind::Added, "a".into()),
                (EventKind::Added, "b".into())
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocking_waiter_is_woken_by_the_change_it_waits_for() {
        let (_dir, store) = open_store(StoreOptions::default());
        let store = Arc::new(store);
        let informer = Informer::spawn(store.clone(), VMS);
        tokio::time::timeout(WAIT, informer.wait_synced())
            .await
            .unwrap();
        let has_a = |informer: &Informer| informer.get(Some("default"), "a").is_some();
        // Nothing changes: the wait ends at its deadline and says so.
        let before = *informer.inner.shared.lock_changes();
        assert!(!informer.wait_until(Instant::now() + Duration::from_millis(20), has_a));
        assert_eq!(*informer.inner.shared.lock_changes(), before);
        // A write by another thread wakes a waiter whose deadline is far away, and the cache
        // holds the write when it wakes.
        let waiter = {
            let informer = informer.clone();
            std::thread::spawn(move || informer.wait_until(Instant::now() + WAIT, has_a))
        };
        store
            .create(&VMS.store_kind(), vm("default", "a", json!({})))
            .unwrap();
        let woken = tokio::task::spawn_blocking(move || waiter.join().unwrap())
            .await
            .unwrap();
        assert!(
            woken,
            "the waiter reached its deadline without seeing the write"
        );
        assert!(*informer.inner.shared.lock_changes() > before);
    }

    #[tokio::test]
    async fn creates_updates_and_deletes_after_the_list_reach_the_cache_and_subscribers() {
        let (_dir, store) = open_store(StoreOptions::default());
        let kind = VMS.store_kind();
        store
            .create(&kind, vm("default", "old", json!({})))
            .unwrap();
        let informer = Informer::spawn(Arc::new(store.clone()), VMS);
        tokio::time::timeout(WAIT, informer.wait_synced())
            .await
            .unwrap();
        let mut events = informer.subscribe();
        assert_eq!(events.recv().await.map(|e| e.kind), Some(EventKind::Added));

        store
            .create(&kind, vm("default", "new", json!({})))
            .unwrap();
        let mut updated = store.get(&kind, Some("default"), "old").unwrap();
        updated["metadata"]["labels"] = json!({"tier": "gold"});
        store.update(&kind, updated).unwrap();
        store
            .delete(&kind, Some("default"), "new", &Preconditions::default())
            .unwrap();

        let seen = settle(&informer, &mut events, |i| {
            i.get(Some("default"), "new").is_none()
                && i.get(Some("default"), "old")
                    .is_some_and(|o| o["metadata"]["labels"]["tier"] == "gold")
        })
        .await;
        assert_eq!(
            event_summary(&seen),
            [
                (EventKind::Added, "new".into()),
                (EventKind::Modified, "old".into()),
                (EventKind::Deleted, "new".into()),
            ]
        );
        let modified = &seen[1];
        assert_eq!(
            modified.old.as_ref().unwrap()["metadata"]["labels"],
            json!({})
        );
        assert_eq!(modified.key(), ObjectKey::new("default", "old"));
        assert_eq!(names(&informer.list(None, &[])), ["old"]);
    }

    #[tokio::test]
    async fn the_owner_index_follows_owner_references_as_they_change() {
        let (_dir, store) = open_store(StoreOptions::default());
        let kind = PVCS.store_kind();
        store
            .create(&kind, pvc("p1", json!({}), &["uid-1"]))
            .unwrap();
        store
            .create(&kind, pvc("p2", json!({}), &["uid-1", "uid-2"]))
            .unwrap();
        store.create(&kind, pvc("p3", json!({}), &[])).unwrap();
        let informer = Informer::spawn(Arc::new(store.clone()), PVCS);
        tokio::time::timeout(WAIT, informer.wait_synced())
            .await
            .unwrap();
        let mut events = informer.subscribe();
        assert_eq!(names(&informer.by_owner_uid("uid-1")), ["p1", "p2"]);
        assert_eq!(names(&informer.by_owner_uid("uid-2")), ["p2"]);
        assert!(informer.by_owner_uid("uid-3").is_empty());

        // p1 moves from uid-1 to uid-3; p3 gains uid-2; p2 loses its references.
        let set_owners = |name: &str, owners: &[&str]| {
            let mut object = store.get(&kind, Some("default"), name).unwrap();
            object["metadata"]["ownerReferences"] =
                pvc(name, json!({}), owners)["metadata"]["ownerReferences"].clone();
            store.update(&kind, object).unwrap();
        };
        set_owners("p1", &["uid-3"]);
        set_owners("p3", &["uid-2"]);
        set_owners("p2", &[]);
        settle(&informer, &mut events, |i| {
            names(&i.by_owner_uid("uid-1")).is_empty()
                && names(&i.by_owner_uid("uid-2")) == ["p3"]
                && names(&i.by_owner_uid("uid-3")) == ["p1"]
        })
        .await;

        store
            .delete(&kind, Some("default"), "p1", &Preconditions::default())
            .unwrap();
        settle(&informer, &mut events, |i| {
            i.by_owner_uid("uid-3").is_empty()
        })
        .await;
    }

    #[tokio::test]
    async fn list_filters_by_namespace_and_labels() {
        let (_dir, store) = open_store(StoreOptions::default());
        let kind = VMS.store_kind();
        for (ns, name, labels) in [
            ("default", "web-1", json!({"app": "web", "tier": "front"})),
            ("default", "web-2", json!({"app": "web", "tier": "back"})),
            ("default", "db", json!({"app": "db"})),
            ("other", "web-3", json!({"app": "web", "tier": "front"})),
            ("other", "bare", json!(null)),
        ] {
            store.create(&kind, vm(ns, name, labels)).unwrap();
        }
        let informer = Informer::spawn(Arc::new(store), VMS);
        tokio::time::timeout(WAIT, informer.wait_synced())
            .await
            .unwrap();
        let list = |ns, labels: &[(&str, &str)]| names(&informer.list(ns, labels));
        assert_eq!(list(None, &[("app", "web")]), ["web-1", "web-2", "web-3"]);
        assert_eq!(list(Some("default"), &[("app", "web")]), ["web-1", "web-2"]);
        assert_eq!(
            list(None, &[("app", "web"), ("tier", "front")]),
            ["web-1", "web-3"]
        );
        assert_eq!(list(Some("other"), &[]), ["bare", "web-3"]);
        assert!(list(Some("default"), &[("app", "nope")]).is_empty());
        assert!(list(Some("missing"), &[]).is_empty());
    }

    /// The store ends a watch that falls more than `watch_buffer` events behind (410
    /// "Expired"). The writes below run without yielding on a single-threaded runtime, so the
    /// reflector cannot keep up: the events of most of them are lost to the watch, and only a
    /// new list can bring the cache up to date (including a delete it never saw).
    #[tokio::test(flavor = "current_thread")]
    async fn a_watch_that_falls_behind_and_ends_is_followed_by_a_list() {
        let options = StoreOptions {
            watch_buffer: 2,
            ..StoreOptions::default()
        };
        let (_dir, store) = open_store(options);
        let kind = VMS.store_kind();
        store
            .create(&kind, vm("default", "doomed", json!({})))
            .unwrap();
        let informer = Informer::spawn(Arc::new(store.clone()), VMS);
        tokio::time::timeout(WAIT, informer.wait_synced())
            .await
            .unwrap();
        let mut events = informer.subscribe();
        assert_eq!(events.recv().await.map(|e| e.kind), Some(EventKind::Added));
        // A change that arrives proves the reflector's watch is open.
        store
            .create(&kind, vm("default", "probe", json!({})))
            .unwrap();
        settle(&informer, &mut events, |i| {
            i.get(Some("default"), "probe").is_some()
        })
        .await;
        store
            .delete(&kind, Some("default"), "doomed", &Preconditions::default())
            .unwrap();
        for i in 0..20 {
            store
                .create(&kind, vm("default", &format!("vm-{i:02}"), json!({})))
                .unwrap();
        }
        let seen = settle(&informer, &mut events, |i| {
            i.list(None, &[]).len() == 21 && i.get(Some("default"), "doomed").is_none()
        })
        .await;
        let deleted: Vec<_> = seen
            .iter()
            .filter(|e| e.kind == EventKind::Deleted)
            .map(|e| metadata_str(&e.object, "name"))
            .collect();
        assert_eq!(deleted, ["doomed"]);
        let added = seen.iter().filter(|e| e.kind == EventKind::Added).count();
        assert_eq!(added, 20, "every object announced once: {seen:?}");
    }

    #[tokio::test]
    async fn dropping_the_informer_stops_its_reflector() {
        let (_dir, store) = open_store(StoreOptions::default());
        let informer = Informer::spawn(Arc::new(store), VMS);
        tokio::time::timeout(WAIT, informer.wait_synced())
            .await
            .unwrap();
        let mut events = informer.subscribe();
        drop(informer);
        // The reflector task held the only sender: the channel closes once it is aborted.
        let closed = tokio::time::timeout(WAIT, events.recv()).await.unwrap();
        assert!(closed.is_none());
    }
}
