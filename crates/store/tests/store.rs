//! Integration tests of the object store through its public API, on real SQLite files.

// Test code: helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use ferrovirt_store::{
    DeleteOutcome, ListOptions, Preconditions, ResourceKind, Selector, Store, StoreError,
    StoreOptions, WatchEvent, WatchEventType, WatchOptions,
};
use serde_json::{Value, json};

fn vms() -> ResourceKind {
    ResourceKind::new("kubevirt.io", "virtualmachines", true)
}

fn pvcs() -> ResourceKind {
    ResourceKind::new("", "persistentvolumeclaims", true)
}

fn storage_classes() -> ResourceKind {
    ResourceKind::new("storage.k8s.io", "storageclasses", false)
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path().join("store.db"), StoreOptions::default()).unwrap()
}

fn vm(name: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"runStrategy": "Halted"}
    })
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap()
}

fn drain(watch: &mut ferrovirt_store::Watch) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    while let Some(event) = watch.try_next() {
        out.push(event.unwrap());
    }
    out
}

fn summary(events: &[WatchEvent]) -> Vec<(WatchEventType, String)> {
    events
        .iter()
        .map(|e| (e.event_type, name(&e.object).to_string()))
        .collect()
}

#[test]
fn crud_assigns_system_fields_and_uses_kubernetes_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let created = store.create(&vms(), vm("vm1")).unwrap();
    let meta = &created["metadata"];
    assert_eq!(meta["resourceVersion"], "1");
    assert_eq!(meta["generation"], 1);
    assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
    let ts = meta["creationTimestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
    assert_eq!(store.get(&vms(), Some("default"), "vm1").unwrap(), created);

    let err = store.create(&vms(), vm("vm1")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "virtualmachines.kubevirt.io \"vm1\" already exists"
    );
    assert_eq!(err.http_status(), 409);

    let err = store.get(&vms(), Some("default"), "nope").unwrap_err();
    assert_eq!(
        err.to_string(),
        "virtualmachines.kubevirt.io \"nope\" not found"
    );
    assert_eq!((err.http_status(), err.reason()), (404, "NotFound"));
    let err = store.get(&pvcs(), Some("default"), "nope").unwrap_err();
    assert_eq!(err.to_string(), "persistentvolumeclaims \"nope\" not found");

    let mut changed = created.clone();
    changed["spec"]["runStrategy"] = json!("Always");
    let updated = store.update(&vms(), changed).unwrap();
    assert_eq!(updated["metadata"]["resourceVersion"], "2");
    assert_eq!(updated["spec"]["runStrategy"], "Always");
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);

    let deleted = store
        .delete(&vms(), Some("default"), "vm1", &Preconditions::default())
        .unwrap();
    let DeleteOutcome::Deleted(last) = deleted else {
        panic!("expected removal, got {deleted:?}")
    };
    assert_eq!(last["metadata"]["resourceVersion"], "3");
    assert!(matches!(
        store.get(&vms(), Some("default"), "vm1"),
        Err(StoreError::NotFound { .. })
    ));
    // A new object with the old name is a new object: new uid.
    let again = store.create(&vms(), vm("vm1")).unwrap();
    assert_ne!(again["metadata"]["uid"], created["metadata"]["uid"]);
}

#[test]
fn create_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let cases = [
        (
            json!({"metadata": {"namespace": "default"}}),
            "metadata.name",
        ),
        (json!({"metadata": {"name": "x"}}), "metadata.namespace"),
        (
            json!({"metadata": {"name": "x", "namespace": "default", "resourceVersion": "5"}}),
            "metadata.resourceVersion",
        ),
        (
            json!({"metadata": {"name": "a/b", "namespace": "default"}}),
            "metadata.name",
        ),
        (json!({"metadata": "nope"}), "metadata"),
        (json!([1, 2]), ""),
    ];
    for (object, field) in cases {
        match store.create(&vms(), object.clone()) {
            Err(StoreError::Invalid { field: f, .. }) => assert_eq!(f, field, "{object}"),
            other => panic!("{object}: expected Invalid, got {other:?}"),
        }
    }
    assert_eq!(store.current_resource_version(), 0, "nothing was written");
}

#[test]
fn generate_name_appends_five_kubernetes_characters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut names = BTreeSet::new();
    for _ in 0..50 {
        let object = json!({"metadata": {"generateName": "persistent-state-for-vm1-", "namespace": "default"}});
        let created = store.create(&pvcs(), object).unwrap();
        let n = name(&created).to_string();
        let suffix = n.strip_prefix("persistent-state-for-vm1-").unwrap();
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
            "{n}"
        );
        names.insert(n);
    }
    assert_eq!(names.len(), 50);
}

#[test]
fn cluster_scoped_objects_have_no_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let sc = json!({"metadata": {"name": "local", "namespace": "ignored"}, "provisioner": "x"});
    let created = store.create(&storage_classes(), sc).unwrap();
    assert!(created["metadata"].get("namespace").is_none());
    assert_eq!(
        store.get(&storage_classes(), None, "local").unwrap(),
        created
    );
    assert!(matches!(
        store.get(&storage_classes(), Some("default"), "local"),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        store.get(&vms(), None, "vm1"),
        Err(StoreError::Invalid { .. })
    ));
}

#[test]
fn stale_resource_version_conflicts_and_exactly_one_of_two_writers_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let created = store.create(&vms(), vm("vm1")).unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = ["A", "B"]
        .into_iter()
        .map(|who| {
            let store = store.clone();
            let barrier = barrier.clone();
            let mut mine = created.clone();
            mine["spec"]["writer"] = json!(who);
            std::thread::spawn(move || {
                barrier.wait();
                store.update(&vms(), mine)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(
        loser.to_string(),
        "Operation cannot be fulfilled on virtualmachines.kubevirt.io \"vm1\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert!(matches!(loser, StoreError::Conflict { current_rv: 2, .. }));
    let stored = store.get(&vms(), Some("default"), "vm1").unwrap();
    let winner = results.iter().find_map(|r| r.as_ref().ok()).unwrap();
    assert_eq!(&stored, winner);

    // Without a resourceVersion the update is unconditional.
    let mut blind = vm("vm1");
    blind["spec"]["writer"] = json!("C");
    assert_eq!(store.update(&vms(), blind).unwrap()["spec"]["writer"], "C");
}

#[test]
fn generation_counts_spec_changes_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let v1 = store.create(&vms(), vm("vm1")).unwrap();

    let mut labels_only = v1.clone();
    labels_only["metadata"]["labels"]["tier"] = json!("gold");
    let v2 = store.update(&vms(), labels_only).unwrap();
    assert_eq!(v2["metadata"]["generation"], 1);
    assert_eq!(rv(&v2), 2);

    let mut with_status = v2.clone();
    with_status["status"] = json!({"printableStatus": "Stopped"});
    let v3 = store.update_status(&vms(), with_status).unwrap();
    assert_eq!(v3["metadata"]["generation"], 1);
    assert_eq!(v3["status"]["printableStatus"], "Stopped");

    // The main update keeps the status and ignores attempts to change it; spec bumps generation.
    let mut spec_change = v3.clone();
    spec_change["spec"]["runStrategy"] = json!("Always");
    spec_change.as_object_mut().unwrap().remove("status");
    spec_change["metadata"]["uid"] = json!("forged");
    spec_change["metadata"]["creationTimestamp"] = json!("1999-01-01T00:00:00Z");
    spec_change["metadata"]["generation"] = json!(77);
    let v4 = store.update(&vms(), spec_change).unwrap();
    assert_eq!(v4["metadata"]["generation"], 2);
    assert_eq!(v4["status"]["printableStatus"], "Stopped");
    assert_eq!(v4["metadata"]["uid"], v1["metadata"]["uid"]);
    assert_eq!(
        v4["metadata"]["creationTimestamp"],
        v1["metadata"]["creationTimestamp"]
    );

    // update_status ignores spec/metadata changes.
    let mut sneaky = v4.clone();
    sneaky["spec"]["runStrategy"] = json!("Halted");
    sneaky["metadata"]["labels"] = json!({});
    sneaky["status"]["printableStatus"] = json!("Running");
    let v5 = store.update_status(&vms(), sneaky).unwrap();
    assert_eq!(v5["spec"]["runStrategy"], "Always");
    assert_eq!(v5["metadata"]["labels"]["app"], "web");
    assert_eq!(v5["metadata"]["generation"], 2);

    // A no-op update writes nothing.
    let before = store.current_resource_version();
    let same = store.update(&vms(), v5.clone()).unwrap();
    assert_eq!(same, v5);
    assert_eq!(store.current_resource_version(), before);
}

#[test]
fn finalizers_delay_deletion_until_they_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut object = vm("vm1");
    object["metadata"]["finalizers"] = json!(["kubevirt.io/virtualMachineControllerFinalize"]);
    store.create(&vms(), object).unwrap();
    let mut watch = store
        .watch(
            &vms(),
            WatchOptions {
                resource_version: Some(1),
                ..Default::default()
            },
        )
        .unwrap();

    let outcome = store
        .delete(&vms(), Some("default"), "vm1", &Preconditions::default())
        .unwrap();
    let DeleteOutcome::Finalizing(marked) = outcome else {
        panic!("expected Finalizing, got {outcome:?}")
    };
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
    assert_eq!(
        marked["metadata"]["generation"], 2,
        "Kubernetes bumps generation when marking"
    );
    assert_eq!(store.get(&vms(), Some("default"), "vm1").unwrap(), marked);

    // Deleting again changes nothing.
    let again = store
        .delete(&vms(), Some("default"), "vm1", &Preconditions::default())
        .unwrap();
    assert_eq!(again, DeleteOutcome::Finalizing(marked.clone()));

    // No new finalizers on an object being deleted.
    let mut more = marked.clone();
    more["metadata"]["finalizers"] = json!(["kubevirt.io/virtualMachineControllerFinalize", "x/y"]);
    let err = store.update(&vms(), more).unwrap_err();
    assert!(err.to_string().contains("no new finalizers"), "{err}");

    // The deletionTimestamp cannot be removed by an update.
    let mut cleared = marked.clone();
    cleared["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("deletionTimestamp");
    cleared["metadata"]["labels"]["x"] = json!("y");
    let kept = store.update(&vms(), cleared).unwrap();
    assert_eq!(
        kept["metadata"]["deletionTimestamp"],
        marked["metadata"]["deletionTimestamp"]
    );

    let mut done = kept.clone();
    done["metadata"]["finalizers"] = json!([]);
    let last = store.update(&vms(), done).unwrap();
    assert!(matches!(
        store.get(&vms(), Some("default"), "vm1"),
        Err(StoreError::NotFound { .. })
    ));
    let events = drain(&mut watch);
    let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [
            WatchEventType::Modified,
            WatchEventType::Modified,
            WatchEventType::Deleted
        ]
    );
    assert_eq!(events[2].object, last);
}

#[test]
fn delete_preconditions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let created = store.create(&vms(), vm("vm1")).unwrap();
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    let wrong_uid = Preconditions {
        uid: Some("other".into()),
        resource_version: None,
    };
    let err = store
        .delete(&vms(), Some("default"), "vm1", &wrong_uid)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Operation cannot be fulfilled on virtualmachines.kubevirt.io \"vm1\": Precondition failed: UID in precondition: other, UID in object meta: {uid}"
        )
    );
    let wrong_rv = Preconditions {
        uid: None,
        resource_version: Some(9),
    };
    let err = store
        .delete(&vms(), Some("default"), "vm1", &wrong_rv)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("ResourceVersion in precondition: 9"),
        "{err}"
    );
    let right = Preconditions {
        uid: Some(uid),
        resource_version: Some(1),
    };
    assert!(matches!(
        store
            .delete(&vms(), Some("default"), "vm1", &right)
            .unwrap(),
        DeleteOutcome::Deleted(_)
    ));
}

#[test]
fn dependents_are_found_by_owner_uid() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let owner = store.create(&vms(), vm("vm1")).unwrap();
    let owner_uid = owner["metadata"]["uid"].as_str().unwrap().to_string();
    let pvc = |n: &str, uid: &str| {
        json!({"metadata": {"name": n, "namespace": "default",
            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                                 "name": "vm1", "uid": uid, "controller": true}]}})
    };
    store.create(&pvcs(), pvc("state-a", &owner_uid)).unwrap();
    store.create(&pvcs(), pvc("state-b", &owner_uid)).unwrap();
    let other = store.create(&pvcs(), pvc("other", "someone-else")).unwrap();

    let deps = store.list_dependents(&owner_uid).unwrap();
    let names: Vec<_> = deps.iter().map(|d| name(&d.object)).collect();
    assert_eq!(names, ["state-a", "state-b"]);
    assert_eq!(deps[0].group, "");
    assert_eq!(deps[0].resource, "persistentvolumeclaims");
    assert_eq!(deps[0].namespace.as_deref(), Some("default"));

    // Re-pointing an owner reference moves the dependent.
    let mut moved = other.clone();
    moved["metadata"]["ownerReferences"][0]["uid"] = json!(owner_uid.clone());
    store.update(&pvcs(), moved).unwrap();
    assert_eq!(store.list_dependents(&owner_uid).unwrap().len(), 3);
    assert!(store.list_dependents("someone-else").unwrap().is_empty());

    store
        .delete(
            &pvcs(),
            Some("default"),
            "state-a",
            &Preconditions::default(),
        )
        .unwrap();
    assert_eq!(store.list_dependents(&owner_uid).unwrap().len(), 2);

    let found = store.get_by_uid(&owner_uid).unwrap().unwrap();
    assert_eq!(found.object, owner);
    assert_eq!(found.resource, "virtualmachines");
    assert!(store.get_by_uid("missing").unwrap().is_none());
}

#[test]
fn list_filters_by_namespace_and_labels_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..10 {
        let mut object = vm(&format!("vm{i}"));
        object["metadata"]["namespace"] = json!(if i < 6 { "a" } else { "b" });
        object["metadata"]["labels"] = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
        store.create(&vms(), object).unwrap();
    }
    store
        .create(
            &pvcs(),
            json!({"metadata": {"name": "p", "namespace": "a"}}),
        )
        .unwrap();

    let all = store.list(&vms(), &ListOptions::default()).unwrap();
    assert_eq!(all.items.len(), 10);
    assert_eq!(all.resource_version, 11);
    assert!(all.continue_token.is_none());

    let in_a = ListOptions {
        namespace: Some("a".into()),
        ..Default::default()
    };
    assert_eq!(store.list(&vms(), &in_a).unwrap().items.len(), 6);

    let even = ListOptions {
        label_selector: Selector::parse("parity=even").unwrap(),
        ..Default::default()
    };
    let names: Vec<_> = store
        .list(&vms(), &even)
        .unwrap()
        .items
        .iter()
        .map(|o| name(o).to_string())
        .collect();
    assert_eq!(names, ["vm0", "vm2", "vm4", "vm6", "vm8"]);

    // Pages of 2 over the odd ones: 5 items -> 3 pages.
    let mut options = ListOptions {
        label_selector: Selector::parse("parity in (odd)").unwrap(),
        limit: Some(2),
        ..Default::default()
    };
    let mut pages = Vec::new();
    loop {
        let page = store.list(&vms(), &options).unwrap();
        pages.push(
            page.items
                .iter()
                .map(|o| name(o).to_string())
                .collect::<Vec<_>>(),
        );
        match page.continue_token {
            Some(token) => options.continue_token = Some(token),
            None => break,
        }
    }
    assert_eq!(pages, [vec!["vm1", "vm3"], vec!["vm5", "vm7"], vec!["vm9"]]);

    let bad = ListOptions {
        continue_token: Some("zz".into()),
        ..Default::default()
    };
    assert!(matches!(
        store.list(&vms(), &bad),
        Err(StoreError::Invalid { .. })
    ));
}

#[tokio::test]
async fn watch_from_zero_lists_current_state_then_follows_live() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create(&vms(), vm("vm1")).unwrap();
    store.create(&vms(), vm("vm2")).unwrap();
    store
        .create(
            &pvcs(),
            json!({"metadata": {"name": "p", "namespace": "default"}}),
        )
        .unwrap();
    let mut watch = store.watch(&vms(), WatchOptions::default()).unwrap();
    let writer = store.clone();
    tokio::task::spawn_blocking(move || {
        let current = writer.get(&vms(), Some("default"), "vm1").unwrap();
        let mut changed = current.clone();
        changed["spec"]["runStrategy"] = json!("Always");
        writer.update(&vms(), changed).unwrap();
        writer.create(&vms(), vm("vm3")).unwrap();
        writer
            .delete(&vms(), Some("default"), "vm2", &Preconditions::default())
            .unwrap();
    })
    .await
    .unwrap();
    let mut events = Vec::new();
    for _ in 0..5 {
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        events.push(next);
    }
    assert_eq!(
        summary(&events),
        [
            (WatchEventType::Added, "vm1".into()),
            (WatchEventType::Added, "vm2".into()),
            (WatchEventType::Modified, "vm1".into()),
            (WatchEventType::Added, "vm3".into()),
            (WatchEventType::Deleted, "vm2".into()),
        ]
    );
    assert_eq!(rv(&events[4].object), 6);
    let json = serde_json::to_value(&events[2]).unwrap();
    assert_eq!(json["type"], "MODIFIED");
    assert_eq!(json["object"]["spec"]["runStrategy"], "Always");
    assert!(watch.try_next().is_none());
}

#[test]
fn watch_from_a_past_resource_version_replays_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create(&vms(), vm("vm1")).unwrap();
    let after = store.current_resource_version();
    store.create(&vms(), vm("vm2")).unwrap();
    let mut other_ns = vm("vm3");
    other_ns["metadata"]["namespace"] = json!("prod");
    store.create(&vms(), other_ns).unwrap();
    store
        .delete(&vms(), Some("default"), "vm1", &Preconditions::default())
        .unwrap();

    let mut all = store
        .watch(
            &vms(),
            WatchOptions {
                resource_version: Some(after),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        summary(&drain(&mut all)),
        [
            (WatchEventType::Added, "vm2".into()),
            (WatchEventType::Added, "vm3".into()),
            (WatchEventType::Deleted, "vm1".into()),
        ]
    );
    let mut prod = store
        .watch(
            &vms(),
            WatchOptions {
                namespace: Some("prod".into()),
                resource_version: Some(after),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        summary(&drain(&mut prod)),
        [(WatchEventType::Added, "vm3".into())]
    );

    let current = store.current_resource_version();
    let err = store
        .watch(
            &vms(),
            WatchOptions {
                resource_version: Some(current + 5),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TooLargeResourceVersion { .. }),
        "{err}"
    );
}

#[test]
fn watch_from_a_pruned_resource_version_is_expired() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        event_log_retention: 10,
        ..Default::default()
    };
    let store = Store::open(dir.path().join("store.db"), options.clone()).unwrap();
    let first = store.create(&vms(), vm("vm0")).unwrap();
    for i in 1..300 {
        store.create(&vms(), vm(&format!("vm{i}"))).unwrap();
    }
    let err = store
        .watch(
            &vms(),
            WatchOptions {
                resource_version: Some(rv(&first)),
                ..Default::default()
            },
        )
        .unwrap_err();
    let StoreError::Expired {
        requested,
        compacted,
    } = err
    else {
        panic!("expected Expired, got {err}")
    };
    assert_eq!(requested, 1);
    assert!(compacted >= 256 - 10, "compacted {compacted}");
    assert_eq!(
        StoreError::Expired {
            requested,
            compacted
        }
        .to_string(),
        format!("too old resource version: 1 ({compacted})")
    );
    assert_eq!(
        StoreError::Expired {
            requested,
            compacted
        }
        .http_status(),
        410
    );
    // The recent past is still there: the last 10 writes replay.
    let mut recent = store
        .watch(
            &vms(),
            WatchOptions {
                resource_version: Some(290),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(drain(&mut recent).len(), 10);
    // Compaction survives a reopen.
    drop(store);
    let store = Store::open(dir.path().join("store.db"), options).unwrap();
    assert!(matches!(
        store.watch(
            &vms(),
            WatchOptions {
                resource_version: Some(1),
                ..Default::default()
            }
        ),
        Err(StoreError::Expired { .. })
    ));
}

#[test]
fn label_selector_watch_turns_modifications_into_added_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let created = store.create(&vms(), vm("vm1")).unwrap();
    let mut watch = store
        .watch(
            &vms(),
            WatchOptions {
                label_selector: Selector::parse("tier=gold").unwrap(),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(drain(&mut watch).is_empty());
    let mut gold = created.clone();
    gold["metadata"]["labels"]["tier"] = json!("gold");
    let gold = store.update(&vms(), gold).unwrap();
    let mut gold2 = gold.clone();
    gold2["spec"]["x"] = json!(1);
    let gold2 = store.update(&vms(), gold2).unwrap();
    let mut plain = gold2.clone();
    plain["metadata"]["labels"] = json!({});
    store.update(&vms(), plain).unwrap();
    store.create(&vms(), vm("vm2")).unwrap();
    assert_eq!(
        summary(&drain(&mut watch)),
        [
            (WatchEventType::Added, "vm1".into()),
            (WatchEventType::Modified, "vm1".into()),
            (WatchEventType::Deleted, "vm1".into()),
        ]
    );
}

#[test]
fn watch_resumes_from_the_persisted_log_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let resume_from;
    {
        let store = open(&dir);
        store.create(&vms(), vm("vm1")).unwrap();
        resume_from = store.current_resource_version();
        store.create(&vms(), vm("vm2")).unwrap();
        let current = store.get(&vms(), Some("default"), "vm1").unwrap();
        let mut changed = current.clone();
        changed["spec"]["runStrategy"] = json!("Always");
        store.update(&vms(), changed).unwrap();
    }
    let store = open(&dir);
    let mut watch = store
        .watch(
            &vms(),
            WatchOptions {
                resource_version: Some(resume_from),
                ..Default::default()
            },
        )
        .unwrap();
    store.create(&vms(), vm("vm3")).unwrap();
    let events = drain(&mut watch);
    assert_eq!(
        summary(&events),
        [
            (WatchEventType::Added, "vm2".into()),
            (WatchEventType::Modified, "vm1".into()),
            (WatchEventType::Added, "vm3".into()),
        ]
    );
    let rvs: Vec<u64> = events.iter().map(|e| rv(&e.object)).collect();
    assert_eq!(rvs, [2, 3, 4], "the counter continued after the reopen");
}

#[test]
fn a_lagging_watcher_gets_an_error_and_can_resume_without_losing_events() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        watch_buffer: 8,
        ..Default::default()
    };
    let store = Store::open(dir.path().join("store.db"), options).unwrap();
    let mut watch = store.watch(&vms(), WatchOptions::default()).unwrap();
    store.create(&vms(), vm("vm0")).unwrap();
    assert_eq!(
        watch.try_next().unwrap().unwrap().event_type,
        WatchEventType::Added
    );
    for i in 1..50 {
        store.create(&vms(), vm(&format!("vm{i}"))).unwrap();
    }
    let err = watch.try_next().unwrap().unwrap_err();
    let StoreError::WatchLagged {
        last_rv, skipped, ..
    } = err
    else {
        panic!("expected WatchLagged, got {err}")
    };
    assert_eq!(last_rv, 1);
    assert!(skipped > 0);
    assert!(watch.try_next().is_none(), "the lagged watch is over");
    let mut resumed = store
        .watch(
            &vms(),
            WatchOptions {
                resource_version: Some(last_rv),
                ..Default::default()
            },
        )
        .unwrap();
    let names: Vec<_> = drain(&mut resumed)
        .iter()
        .map(|e| name(&e.object).to_string())
        .collect();
    let expected: Vec<_> = (1..50).map(|i| format!("vm{i}")).collect();
    assert_eq!(names, expected);
}

#[test]
fn concurrent_writers_get_distinct_increasing_resource_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut watch = store.watch(&vms(), WatchOptions::default()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut rvs = Vec::new();
                for i in 0..100 {
                    let created = store.create(&vms(), vm(&format!("t{t}-{i}"))).unwrap();
                    let mut changed = created.clone();
                    changed["spec"]["i"] = json!(i);
                    let updated = store.update(&vms(), changed).unwrap();
                    rvs.push(rv(&created));
                    rvs.push(rv(&updated));
                }
                rvs
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=800).collect::<Vec<u64>>());
    assert_eq!(
        store
            .list(&vms(), &ListOptions::default())
            .unwrap()
            .items
            .len(),
        400
    );
    // The watch saw every write, in resourceVersion order.
    let seen: Vec<u64> = drain(&mut watch).iter().map(|e| rv(&e.object)).collect();
    assert_eq!(seen, (1..=800).collect::<Vec<u64>>());
}

#[test]
fn reopen_keeps_objects_and_continues_the_counter() {
    let dir = tempfile::tempdir().unwrap();
    let (first, uid) = {
        let store = open(&dir);
        for i in 0..20 {
            store.create(&vms(), vm(&format!("vm{i}"))).unwrap();
        }
        let first = store.get(&vms(), Some("default"), "vm0").unwrap();
        (first.clone(), first["metadata"]["uid"].clone())
    };
    let store = open(&dir);
    assert_eq!(store.current_resource_version(), 20);
    assert_eq!(store.get(&vms(), Some("default"), "vm0").unwrap(), first);
    assert_eq!(
        store
            .list(&vms(), &ListOptions::default())
            .unwrap()
            .items
            .len(),
        20
    );
    let next = store.create(&vms(), vm("vm20")).unwrap();
    assert_eq!(rv(&next), 21);
    assert_ne!(next["metadata"]["uid"], uid);
}

/// Runs only as the child of `objects_survive_a_crash_of_the_process`: writes, then aborts
/// without any cleanup (no destructors, no checkpoint, no close).
#[test]
#[ignore = "child process of objects_survive_a_crash_of_the_process"]
fn crash_child() {
    let Ok(path) = std::env::var("FERROVIRT_STORE_CRASH_DB") else {
        return;
    };
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    for i in 0..100 {
        store.create(&vms(), vm(&format!("vm{i}"))).unwrap();
    }
    std::process::abort();
}

#[test]
fn objects_survive_a_crash_of_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--ignored", "--nocapture"])
        .env("FERROVIRT_STORE_CRASH_DB", &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must have aborted");
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(store.current_resource_version(), 100);
    assert_eq!(
        store
            .list(&vms(), &ListOptions::default())
            .unwrap()
            .items
            .len(),
        100
    );
    let mut watch = store
        .watch(
            &vms(),
            WatchOptions {
                resource_version: Some(50),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(drain(&mut watch).len(), 50);
}

#[test]
fn list_keys_names_every_object_of_a_kind_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert!(store.list_keys(&vms()).unwrap().is_empty());
    store.create(&vms(), vm("b")).unwrap();
    store.create(&vms(), vm("a")).unwrap();
    let mut other = vm("c");
    other["metadata"]["namespace"] = json!("other");
    store.create(&vms(), other).unwrap();
    store
        .create(
            &storage_classes(),
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                   "metadata": {"name": "local"}}),
        )
        .unwrap();
    store
        .delete(&vms(), Some("default"), "b", &Preconditions::default())
        .unwrap();
    let keys = store.list_keys(&vms()).unwrap();
    assert_eq!(
        keys,
        [
            ("default".to_owned(), "a".to_owned()),
            ("other".to_owned(), "c".to_owned())
        ]
    );
    // The same names and order as a full list.
    let listed: Vec<(String, String)> = store
        .list(&vms(), &ListOptions::default())
        .unwrap()
        .items
        .iter()
        .map(|o| {
            (
                o["metadata"]["namespace"].as_str().unwrap().to_owned(),
                name(o).to_owned(),
            )
        })
        .collect();
    assert_eq!(keys, listed);
    assert_eq!(
        store.list_keys(&storage_classes()).unwrap(),
        [(String::new(), "local".to_owned())]
    );
}

#[test]
fn database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferrovirt.db");
    // A file left 0644 by an older version is tightened too.
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    store.create(&vms(), vm("a")).unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{:?}", entry.file_name());
        seen += 1;
    }
    assert!(seen >= 2, "the database and its WAL");
}

#[test]
fn many_concurrent_writers_of_every_kind_get_distinct_resource_versions_in_watch_order() {
    // 16 threads at once: group commit puts their writes into shared transactions. Each thread
    // creates its objects, updates them, writes their status, deletes half, and fights over one
    // shared object with stale resourceVersions (conflicts fail alone, retries succeed).
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let shared = store.create(&vms(), vm("shared")).unwrap();
    let mut watch = store
        .watch(
            &vms(),
            WatchOptions {
                resource_version: Some(rv(&shared)),
                ..WatchOptions::default()
            },
        )
        .unwrap();
    let threads = 16;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut written = Vec::new();
                let mut conflicts = 0;
                for i in 0..20 {
                    let name = format!("t{t}-{i}");
                    let created = store.create(&vms(), vm(&name)).unwrap();
                    let mut changed = created.clone();
                    changed["spec"]["i"] = json!(i);
                    let updated = store.update(&vms(), changed).unwrap();
                    assert!(rv(&updated) > rv(&created));
                    let mut status = updated.clone();
                    status["status"] = json!({"printableStatus": "Stopped"});
                    let with_status = store.update_status(&vms(), status).unwrap();
                    written.extend([rv(&created), rv(&updated), rv(&with_status)]);
                    if i % 2 == 0 {
                        match store
                            .delete(&vms(), Some("default"), &name, &Preconditions::default())
                            .unwrap()
                        {
                            DeleteOutcome::Deleted(gone) => written.push(rv(&gone)),
                            other => panic!("{other:?}"),
                        }
                    }
                    loop {
                        let mut current = store.get(&vms(), Some("default"), "shared").unwrap();
                        current["spec"]["last"] = json!(format!("{t}-{i}"));
                        match store.update(&vms(), current) {
                            Ok(done) => {
                                written.push(rv(&done));
                                break;
                            }
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(other) => panic!("{other}"),
                        }
                    }
                }
                (written, conflicts)
            })
        })
        .collect();
    let mut all = Vec::new();
    for handle in handles {
        let (written, _conflicts) = handle.join().unwrap();
        all.extend(written);
    }
    let first = rv(&shared) + 1;
    let count = all.len() as u64;
    all.sort_unstable();
    // Every successful write has its own resourceVersion, with no gap (failed writes take none).
    assert_eq!(all, (first..first + count).collect::<Vec<u64>>());
    assert_eq!(store.current_resource_version(), first + count - 1);
    // The watch saw each of them once, in resourceVersion order.
    let seen: Vec<u64> = drain(&mut watch).iter().map(|e| rv(&e.object)).collect();
    assert_eq!(seen, (first..first + count).collect::<Vec<u64>>());
    let left = store.list(&vms(), &ListOptions::default()).unwrap().items;
    assert_eq!(left.len(), 1 + threads * 10);
    // A watch resumed from the log replays the same sequence.
    let mut replay = store
        .watch(
            &vms(),
            WatchOptions {
                resource_version: Some(rv(&shared)),
                ..WatchOptions::default()
            },
        )
        .unwrap();
    let replayed: Vec<u64> = drain(&mut replay).iter().map(|e| rv(&e.object)).collect();
    assert_eq!(replayed, seen);
}

#[test]
fn list_json_items_writes_the_listed_objects_as_a_json_array_body() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..5 {
        store.create(&vms(), vm(&format!("vm{i}"))).unwrap();
    }
    for options in [
        ListOptions::default(),
        ListOptions {
            limit: Some(2),
            ..ListOptions::default()
        },
        ListOptions {
            label_selector: Selector::parse("app=none").unwrap(),
            ..ListOptions::default()
        },
    ] {
        let mut out = b"[".to_vec();
        let page = store.list_json_items(&vms(), &options, &mut out).unwrap();
        out.push(b']');
        let items: Vec<Value> = serde_json::from_slice(&out).unwrap();
        let expected = store.list(&vms(), &options).unwrap();
        assert_eq!(items, expected.items);
        assert_eq!(page.items.len(), items.len());
        assert_eq!(page.resource_version, expected.resource_version);
        assert_eq!(page.continue_token, expected.continue_token);
    }
}
