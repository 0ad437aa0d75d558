//! Periodic housekeeping of `ferrovirt serve` (what kube-apiserver's `--event-ttl` and a
//! retention policy do): Events older than [`EVENT_TTL`] are deleted; the state-generation stores
//! of deleted VirtualMachines are marked deleted (kept for the retention) and purged once the
//! retention has passed. Each pass works on a listing; the selections are pure functions.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferrovirt_resources::kubevirt::meta_str;
use ferrovirt_resources::{EVENTS, VMS};
use ferrovirt_storage::backend::VmUuid;
use ferrovirt_storage::vm_store::{StoredVmState, VmStateStore};
pub use ferrovirt_store::retention::EVENT_TTL;
use ferrovirt_store::retention::expired_events;
use serde_json::Value;

use crate::client::{ClientError, ObjectClient};

/// How often the housekeeping runs.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);

/// The `(namespace, name)` of the Events to delete now.
pub fn events_to_delete(now_unix: i64, events: &[Value]) -> Vec<(String, String)> {
    expired_events(now_unix, events, EVENT_TTL)
}

/// Deletes the expired Events; returns how many.
pub fn delete_expired_events(
    client: &dyn ObjectClient,
    now_unix: i64,
) -> Result<usize, ClientError> {
    let events = client.list(&EVENTS, None, None)?;
    let mut deleted = 0;
    for (namespace, name) in events_to_delete(now_unix, &events) {
        match client.delete(&EVENTS, Some(&namespace), &name) {
            Ok(()) => deleted += 1,
            Err(ClientError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// The stores whose VirtualMachine is gone but which are not marked deleted yet (a deletion the
/// watch missed, e.g. while the server was down). A store belongs to a live VM when a stored VM
/// has its owner's `metadata.uid` (or, for a record without uid, its namespace and name).
pub fn stores_of_vanished_vms(stores: &[StoredVmState], vms: &[Value]) -> Vec<VmUuid> {
    let uids: HashSet<&str> = vms.iter().map(|vm| meta_str(vm, "uid")).collect();
    let names: HashSet<(&str, &str)> = vms
        .iter()
        .map(|vm| (meta_str(vm, "namespace"), meta_str(vm, "name")))
        .collect();
    stores
        .iter()
        .filter(|store| {
            let Some(owner) = &store.owner else {
                return false; // no record: nothing tells whose it is; left to an explicit purge
            };
            if owner.deleted_unix.is_some() {
                return false;
            }
            let alive = match &owner.uid {
                Some(uid) => uids.contains(uid.as_str()),
                None => names.contains(&(owner.namespace.as_str(), owner.name.as_str())),
            };
            !alive
        })
        .map(|store| store.uuid.clone())
        .collect()
}

/// The `firmware.uuid` of a deleted VirtualMachine (the name of its state store).
pub fn firmware_uuid_of(vm: &Value) -> Option<VmUuid> {
    vm.pointer("/spec/template/spec/domain/firmware/uuid")
        .and_then(Value::as_str)
        .and_then(|uuid| VmUuid::parse(uuid).ok())
}

/// Marks the state store of a deleted VM (its generations are kept for the retention).
pub fn mark_vm_state_deleted(data_dir: &Path, vm: &Value, now_unix: u64) {
    let Some(uuid) = firmware_uuid_of(vm) else {
        return;
    };
    match VmStateStore::new(data_dir).mark_deleted(&uuid, now_unix) {
        Ok(true) => tracing::info!(
            vm = meta_str(vm, "name"),
            uuid = uuid.as_str(),
            "the VM was deleted; its state generations are kept for the retention period"
        ),
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(%error, uuid = uuid.as_str(), "cannot mark the state of a deleted VM")
        }
    }
}

/// One pass over the state stores: marks the stores of vanished VMs, purges the expired ones.
pub fn sweep_vm_states(
    client: &dyn ObjectClient,
    data_dir: &Path,
    retention: Duration,
    now_unix: u64,
) -> Result<(), String> {
    let store = VmStateStore::new(data_dir);
    let stores = store.list().map_err(|e| e.to_string())?;
    if !stores.is_empty() {
        let vms = client.list(&VMS, None, None).map_err(|e| e.to_string())?;
        for uuid in stores_of_vanished_vms(&stores, &vms) {
            store
                .mark_deleted(&uuid, now_unix)
                .map_err(|e| e.to_string())?;
        }
    }
    for owner in store
        .purge_expired(now_unix, retention)
        .map_err(|e| e.to_string())?
    {
        tracing::info!(
            vm = %format!("{}/{}", owner.namespace, owner.name),
            uuid = owner.firmware_uuid,
            "purged the state generations of a VM deleted longer ago than the retention"
        );
    }
    Ok(())
}

/// Runs the housekeeping every [`HOUSEKEEPING_INTERVAL`] (the first pass at once).
pub fn spawn(client: Arc<dyn ObjectClient>, data_dir: PathBuf, retention: Duration) {
    tokio::spawn(async move {
        loop {
            let client = client.clone();
            let data_dir = data_dir.clone();
            let pass = tokio::task::spawn_blocking(move || {
                let now = ferrovirt_resources::time::now_unix();
                if let Err(error) = delete_expired_events(&*client, now) {
                    tracing::warn!(%error, "deleting expired Events failed");
                }
                let now = u64::try_from(now).unwrap_or(0);
                if let Err(error) = sweep_vm_states(&*client, &data_dir, retention, now) {
                    tracing::warn!(%error, "the state retention pass failed");
                }
            })
            .await;
            if let Err(error) = pass {
                tracing::error!(%error, "housekeeping panicked");
            }
            tokio::time::sleep(HOUSEKEEPING_INTERVAL).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_storage::vm_store::OwnerRecord;
    use ferrovirt_store::{Store, StoreOptions, format_rfc3339};
    use serde_json::json;

    fn event(name: &str, last: i64) -> Value {
        json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "default"},
            "involvedObject": {"kind": "VirtualMachine", "name": "vm1", "namespace": "default"},
            "reason": "Started", "message": "m", "type": "Normal",
            "lastTimestamp": format_rfc3339(last)})
    }

    #[test]
    fn events_past_the_ttl_are_deleted_from_the_store_and_fresh_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db"), StoreOptions::default()).unwrap();
        let now = 1_800_000_000;
        let client: &dyn ObjectClient = &store;
        client.create(&EVENTS, event("old", now - 3601)).unwrap();
        client.create(&EVENTS, event("fresh", now - 60)).unwrap();
        let listed = client.list(&EVENTS, None, None).unwrap();
        assert_eq!(
            events_to_delete(now, &listed),
            vec![("default".to_owned(), "old".to_owned())]
        );
        assert_eq!(delete_expired_events(client, now).unwrap(), 1);
        let left: Vec<_> = client
            .list(&EVENTS, None, None)
            .unwrap()
            .iter()
            .map(|e| meta_str(e, "name").to_owned())
            .collect();
        assert_eq!(left, ["fresh"]);
    }

    fn stored(uuid: &str, owner: Option<OwnerRecord>) -> StoredVmState {
        StoredVmState {
            uuid: VmUuid::parse(uuid).unwrap(),
            dir: PathBuf::from("/nonexistent"),
            owner,
            generations: 1,
            bytes: 0,
            newest_unix: None,
        }
    }

    fn owner(name: &str, uid: Option<&str>, deleted: Option<u64>) -> Option<OwnerRecord> {
        Some(OwnerRecord {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.map(str::to_owned),
            firmware_uuid: String::new(),
            deleted_unix: deleted,
        })
    }

    #[test]
    fn only_stores_whose_vm_is_gone_are_marked() {
        let a = "6a1b6c4e-8c4f-4a35-9c52-3f1d8d6f0a01";
        let b = "6a1b6c4e-8c4f-4a35-9c52-3f1d8d6f0a02";
        let c = "6a1b6c4e-8c4f-4a35-9c52-3f1d8d6f0a03";
        let d = "6a1b6c4e-8c4f-4a35-9c52-3f1d8d6f0a04";
        let e = "6a1b6c4e-8c4f-4a35-9c52-3f1d8d6f0a05";
        let stores = vec![
            stored(a, owner("live", Some("uid-live"), None)),
            // Same name, but the VM was recreated: another uid.
            stored(b, owner("live", Some("uid-old"), None)),
            stored(c, owner("gone", Some("uid-gone"), Some(5))),
            stored(d, None),
            stored(e, owner("byname", None, None)),
        ];
        let vms = vec![
            json!({"metadata": {"namespace": "default", "name": "live", "uid": "uid-live"}}),
            json!({"metadata": {"namespace": "default", "name": "byname", "uid": "x"}}),
        ];
        let marked: Vec<String> = stores_of_vanished_vms(&stores, &vms)
            .iter()
            .map(|u| u.as_str().to_owned())
            .collect();
        assert_eq!(marked, [b]);
    }
}
