//! Where a VM's state generations live: keyed by the VM, not by its volume, so that they outlive
//! the volume. Deleting a backend-storage PVC, switching persistence off (the volume is retired)
//! or losing the volume never deletes them; the next start restores the last good generation into
//! the new volume instead of manufacturing a fresh TPM (`ferrovirt_vmm::state`).
//!
//! Layout: `<data>/state-generations/vms/<firmware-uuid>/`, a [`Generations`] directory plus
//! `owner.json` ([`OwnerRecord`]: namespace, name, uid of the VM, and when it was deleted).
//! The firmware UUID is the key because it already names the TPM state inside the volume
//! (`swtpm/<uuid>/`) and is unique among VMs (admission refuses a duplicate).
//!
//! A deleted VM's generations are kept for a retention period ([`DEFAULT_RETENTION`], the server's
//! `--state-retention`) and removed by [`VmStateStore::purge_expired`] after it, or at once by an
//! explicit [`VmStateStore::purge`]; neither touches the generations of a VM that exists.
//! Generations of older versions (`<data>/state-generations/<volume-name>/`) are moved here on
//! first use.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::atomic::{self, AtomicError, PRIVATE_FILE_MODE, ctx};
use crate::backend::VmUuid;
use crate::generations::{GenerationError, Generations, lock_dir};

/// `<data>/state-generations`: every generation store of a data dir.
pub const STATE_GENERATIONS_DIR: &str = "state-generations";
/// `<data>/state-generations/vms`: the per-VM stores.
pub const VMS_DIR: &str = "vms";
/// The owner record inside a VM's store.
pub const OWNER_FILE: &str = "owner.json";
/// How long a deleted VM's generations are kept by default (7 days).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Errors of the per-VM generation stores.
#[derive(Debug, thiserror::Error)]
pub enum VmStoreError {
    #[error(transparent)]
    Generations(#[from] GenerationError),
    #[error("{0}")]
    Fs(#[from] AtomicError),
    #[error(
        "{path}: unreadable owner record: {problem}; move the file away to let the VM claim the store"
    )]
    BadOwner { path: PathBuf, problem: String },
    #[error("{message}")]
    OwnedByAnother {
        /// Who the store belongs to.
        owner: Box<OwnerRecord>,
        message: String,
    },
    #[error(
        "the state generations of firmware UUID {uuid} belong to VirtualMachine {namespace}/{name}, \
         which exists; only the generations of a deleted VM can be purged"
    )]
    NotDeleted {
        uuid: VmUuid,
        namespace: String,
        name: String,
    },
    #[error(
        "no state generations for firmware UUID {uuid} in {dir}; `ferrovirt state list --deleted` \
         lists the stores of deleted VMs"
    )]
    NotFound { uuid: VmUuid, dir: PathBuf },
}

/// Who a store belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRecord {
    pub namespace: String,
    pub name: String,
    /// `metadata.uid` of the VirtualMachine (`None` for `ferrovirt run`, which has no store).
    #[serde(default)]
    pub uid: Option<String>,
    pub firmware_uuid: String,
    /// When the VM was deleted (seconds since the epoch); `None` while it exists.
    #[serde(default)]
    pub deleted_unix: Option<u64>,
}

/// The VM a store is opened for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmIdentity {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub uuid: VmUuid,
}

/// One VM's store, as listed.
#[derive(Debug, Clone)]
pub struct StoredVmState {
    pub uuid: VmUuid,
    pub dir: PathBuf,
    /// `None` for a store without (readable) owner record.
    pub owner: Option<OwnerRecord>,
    pub generations: usize,
    pub bytes: u64,
    /// When the newest generation was recorded.
    pub newest_unix: Option<u64>,
}

impl StoredVmState {
    /// When a deleted VM's store may be purged (`None` while the VM exists).
    pub fn expires_unix(&self, retention: Duration) -> Option<u64> {
        self.owner
            .as_ref()?
            .deleted_unix
            .map(|at| at.saturating_add(retention.as_secs()))
    }
}

/// The per-VM generation stores of a data dir.
#[derive(Debug, Clone)]
pub struct VmStateStore {
    root: PathBuf,
}

fn read_owner(path: &Path) -> Result<Option<OwnerRecord>, VmStoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| VmStoreError::BadOwner {
                path: path.to_path_buf(),
                problem: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AtomicError::io("read owner record", path, e).into()),
    }
}

fn write_owner(path: &Path, owner: &OwnerRecord) -> Result<(), VmStoreError> {
    let bytes = serde_json::to_vec_pretty(owner)
        .map_err(|e| AtomicError::io("serialize owner record", path, io::Error::other(e)))?;
    atomic::write_file(path, &bytes, PRIVATE_FILE_MODE)?;
    Ok(())
}

fn has_generations(dir: &Path) -> Result<bool, VmStoreError> {
    Ok(!Generations::new(dir).list()?.is_empty())
}

impl VmStateStore {
    /// The stores of `data_dir` (`<data_dir>/state-generations/vms/`).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join(STATE_GENERATIONS_DIR).join(VMS_DIR),
        }
    }

    /// The store directory of a VM.
    pub fn dir_for(&self, uuid: &VmUuid) -> PathBuf {
        self.root.join(uuid.as_str())
    }

    /// Opens (creating) the store of `vm` and returns its directory. Generations an older version
    /// kept per volume in `legacy_dir` are moved in first. Refuses a store that another VM owns;
    /// the same namespace/name with another uid is the VM re-created (the store is claimed), and a
    /// VM re-created after deletion clears the deletion mark.
    pub fn open_for_vm(
        &self,
        vm: &VmIdentity,
        legacy_dir: Option<&Path>,
    ) -> Result<PathBuf, VmStoreError> {
        atomic::create_dir_private(&self.root)?;
        let dir = self.dir_for(&vm.uuid);
        if let Some(legacy) = legacy_dir
            && !dir.exists()
            && legacy.is_dir()
            && has_generations(legacy)?
        {
            fs::rename(legacy, &dir).map_err(ctx("move older generations into", &dir))?;
            atomic::fsync_dir(&self.root)?;
            if let Some(parent) = legacy.parent() {
                atomic::fsync_dir(parent)?;
            }
        }
        let _lock = lock_dir(&dir)?;
        let owner_path = dir.join(OWNER_FILE);
        let wanted = OwnerRecord {
            namespace: vm.namespace.clone(),
            name: vm.name.clone(),
            uid: vm.uid.clone(),
            firmware_uuid: vm.uuid.as_str().to_owned(),
            deleted_unix: None,
        };
        match read_owner(&owner_path)? {
            None => write_owner(&owner_path, &wanted)?,
            Some(owner) if owner.namespace == vm.namespace && owner.name == vm.name => {
                let uid = vm.uid.clone().or(owner.uid.clone());
                if owner.uid != uid || owner.deleted_unix.is_some() {
                    write_owner(&owner_path, &OwnerRecord { uid, ..wanted })?;
                }
            }
            Some(owner) => {
                let (deleted, hint) = match owner.deleted_unix {
                    Some(at) => (
                        format!(", deleted at unix time {at}"),
                        format!(
                            "Re-create the VM as {}/{} to get its state back, or purge it with \
                             `ferrovirt state purge --uuid {}`",
                            owner.namespace, owner.name, vm.uuid
                        ),
                    ),
                    None => (
                        String::new(),
                        "Give this VM another firmware.uuid (remove the field to get a generated \
                         one)"
                            .into(),
                    ),
                };
                let message = format!(
                    "the state generations of firmware UUID {} ({}) belong to VirtualMachine \
                     {}/{}{deleted}, not to {}/{}; two VMs cannot share a firmware UUID. {hint}",
                    vm.uuid,
                    dir.display(),
                    owner.namespace,
                    owner.name,
                    vm.namespace,
                    vm.name
                );
                return Err(VmStoreError::OwnedByAnother {
                    owner: Box::new(owner),
                    message,
                });
            }
        }
        Ok(dir)
    }

    /// Marks the store of a deleted VM (its generations are kept for the retention period).
    /// Returns false when the VM has no store.
    pub fn mark_deleted(&self, uuid: &VmUuid, now_unix: u64) -> Result<bool, VmStoreError> {
        let dir = self.dir_for(uuid);
        if !dir.is_dir() {
            return Ok(false);
        }
        let _lock = lock_dir(&dir)?;
        let path = dir.join(OWNER_FILE);
        let owner = read_owner(&path)?.unwrap_or_else(|| OwnerRecord {
            namespace: String::new(),
            name: String::new(),
            uid: None,
            firmware_uuid: uuid.as_str().to_owned(),
            deleted_unix: None,
        });
        if owner.deleted_unix.is_none() {
            write_owner(
                &path,
                &OwnerRecord {
                    deleted_unix: Some(now_unix),
                    ..owner
                },
            )?;
        }
        Ok(true)
    }

    /// Every store, sorted by UUID.
    pub fn list(&self) -> Result<Vec<StoredVmState>, VmStoreError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AtomicError::io("list directory", &self.root, e).into()),
        };
        let mut stores = Vec::new();
        for entry in entries {
            let entry = entry.map_err(ctx("list directory", &self.root))?;
            let Some(uuid) = entry
                .file_name()
                .to_str()
                .and_then(|n| VmUuid::parse(n).ok())
            else {
                continue;
            };
            let dir = entry.path();
            let owner = read_owner(&dir.join(OWNER_FILE)).ok().flatten();
            let generations = Generations::new(&dir).list()?;
            let manifests: Vec<_> = generations
                .iter()
                .filter_map(|g| g.manifest.as_ref().ok())
                .collect();
            stores.push(StoredVmState {
                uuid,
                owner,
                generations: generations.len(),
                bytes: manifests.iter().map(|m| m.total_bytes()).sum(),
                newest_unix: manifests.iter().map(|m| m.created_unix_secs).max(),
                dir,
            });
        }
        stores.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        Ok(stores)
    }

    /// The stores of deleted VMs.
    pub fn list_deleted(&self) -> Result<Vec<StoredVmState>, VmStoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|s| s.owner.as_ref().is_some_and(|o| o.deleted_unix.is_some()))
            .collect())
    }

    /// Removes the store of a deleted VM now (an explicit purge). Refuses the store of a VM that
    /// exists.
    pub fn purge(&self, uuid: &VmUuid) -> Result<OwnerRecord, VmStoreError> {
        let dir = self.dir_for(uuid);
        if !dir.is_dir() {
            return Err(VmStoreError::NotFound {
                uuid: uuid.clone(),
                dir,
            });
        }
        let owner = {
            let _lock = lock_dir(&dir)?;
            let owner = read_owner(&dir.join(OWNER_FILE))?;
            match owner {
                Some(owner) if owner.deleted_unix.is_some() => owner,
                Some(owner) => {
                    return Err(VmStoreError::NotDeleted {
                        uuid: uuid.clone(),
                        namespace: owner.namespace,
                        name: owner.name,
                    });
                }
                None => {
                    return Err(VmStoreError::NotDeleted {
                        uuid: uuid.clone(),
                        namespace: "?".into(),
                        name: "(no owner record)".into(),
                    });
                }
            }
        };
        // Rename first so a half-removed store never carries a UUID name.
        let doomed = atomic::temp_sibling(&self.root, &uuid.as_str().into());
        fs::rename(&dir, &doomed).map_err(ctx("move store aside for removal", &dir))?;
        atomic::fsync_dir(&self.root)?;
        fs::remove_dir_all(&doomed).map_err(ctx("remove store", &doomed))?;
        atomic::fsync_dir(&self.root)?;
        Ok(owner)
    }

    /// Purges the stores of VMs deleted more than `retention` before `now_unix`; returns their
    /// owners.
    pub fn purge_expired(
        &self,
        now_unix: u64,
        retention: Duration,
    ) -> Result<Vec<OwnerRecord>, VmStoreError> {
        let mut purged = Vec::new();
        for store in self.list_deleted()? {
            if store
                .expires_unix(retention)
                .is_some_and(|expires| expires <= now_unix)
            {
                purged.push(self.purge(&store.uuid)?);
            }
        }
        Ok(purged)
    }
}

/// Parses a retention such as `7d`, `36h`, `90m`, `3600s` or `1d12h` (Go's `168h0m0s` too).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration {text:?}: use a number with a unit d, h, m or s, e.g. 7d, 36h, 1d12h"
        )
    };
    let mut total = 0u64;
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(invalid()),
        };
        let value: u64 = digits.parse().map_err(|_| invalid())?;
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(invalid)?;
        digits.clear();
        any = true;
    }
    if !digits.is_empty() || !any {
        return Err(invalid());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generations::GenerationReason;

    const UUID: &str = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";

    fn vm(ns: &str, name: &str, uid: Option<&str>) -> VmIdentity {
        VmIdentity {
            namespace: ns.into(),
            name: name.into(),
            uid: uid.map(String::from),
            uuid: VmUuid::parse(UUID).unwrap(),
        }
    }

    fn record_one(dir: &Path, scratch: &Path) {
        let file = scratch.join("tpm");
        fs::write(&file, b"tpm-state").unwrap();
        Generations::new(dir)
            .record(&[("tpm-state", &file)], GenerationReason::AfterStop)
            .unwrap();
    }

    #[test]
    fn stores_are_keyed_by_vm_and_refuse_another_owner() {
        let data = tempfile::tempdir().unwrap();
        let store = VmStateStore::new(data.path());
        let dir = store.open_for_vm(&vm("ns", "a", Some("u1")), None).unwrap();
        assert_eq!(dir, data.path().join("state-generations/vms").join(UUID));
        record_one(&dir, data.path());
        // The same VM again, and the VM re-created under its name (new uid): same store.
        assert_eq!(
            store.open_for_vm(&vm("ns", "a", Some("u1")), None).unwrap(),
            dir
        );
        assert_eq!(
            store.open_for_vm(&vm("ns", "a", Some("u2")), None).unwrap(),
            dir
        );
        let owner = read_owner(&dir.join(OWNER_FILE)).unwrap().unwrap();
        assert_eq!(owner.uid.as_deref(), Some("u2"));
        // Another VM with the same firmware UUID is refused, naming the owner.
        let err = store.open_for_vm(&vm("ns", "b", None), None).unwrap_err();
        assert!(
            err.to_string().contains("belong to VirtualMachine ns/a"),
            "{err}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join(OWNER_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn deleted_vms_are_kept_for_the_retention_then_purged() {
        let data = tempfile::tempdir().unwrap();
        let store = VmStateStore::new(data.path());
        let uuid = VmUuid::parse(UUID).unwrap();
        let dir = store.open_for_vm(&vm("ns", "a", Some("u1")), None).unwrap();
        record_one(&dir, data.path());
        // An existing VM's generations are never purged.
        assert!(matches!(
            store.purge(&uuid),
            Err(VmStoreError::NotDeleted { .. })
        ));
        assert!(store.list_deleted().unwrap().is_empty());
        assert!(store.mark_deleted(&uuid, 1_000).unwrap());
        let deleted = store.list_deleted().unwrap();
        assert_eq!(deleted.len(), 1);
        assert_eq!(deleted[0].generations, 1);
        assert_eq!(deleted[0].bytes, 9);
        assert_eq!(
            deleted[0].expires_unix(DEFAULT_RETENTION),
            Some(1_000 + 604_800)
        );
        // Another VM cannot take them; the error says how to get them back or purge them.
        let err = store
            .open_for_vm(&vm("other", "b", None), None)
            .unwrap_err();
        assert!(
            err.to_string().contains("ferrovirt state purge --uuid"),
            "{err}"
        );
        // Not expired yet: kept.
        assert!(
            store
                .purge_expired(1_000 + 604_799, DEFAULT_RETENTION)
                .unwrap()
                .is_empty()
        );
        assert!(dir.is_dir());
        let purged = store
            .purge_expired(1_000 + 604_800, DEFAULT_RETENTION)
            .unwrap();
        assert_eq!(purged[0].name, "a");
        assert!(!dir.exists());
        assert!(matches!(
            store.purge(&uuid),
            Err(VmStoreError::NotFound { .. })
        ));
    }

    #[test]
    fn a_recreated_vm_clears_the_deletion_mark() {
        let data = tempfile::tempdir().unwrap();
        let store = VmStateStore::new(data.path());
        let uuid = VmUuid::parse(UUID).unwrap();
        store.open_for_vm(&vm("ns", "a", Some("u1")), None).unwrap();
        store.mark_deleted(&uuid, 5).unwrap();
        store.open_for_vm(&vm("ns", "a", Some("u2")), None).unwrap();
        assert!(store.list_deleted().unwrap().is_empty());
    }

    #[test]
    fn older_per_volume_generations_are_moved_in() {
        let data = tempfile::tempdir().unwrap();
        let legacy = data.path().join("state-generations/pvc-1234");
        record_one(&legacy, data.path());
        let store = VmStateStore::new(data.path());
        let dir = store
            .open_for_vm(&vm("ns", "a", None), Some(&legacy))
            .unwrap();
        assert!(!legacy.exists());
        assert_eq!(Generations::new(&dir).list().unwrap().len(), 1);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d").unwrap(), DEFAULT_RETENTION);
        assert_eq!(parse_duration("168h0m0s").unwrap(), DEFAULT_RETENTION);
        assert_eq!(parse_duration("1d12h").unwrap().as_secs(), 129_600);
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        for bad in ["", "7", "d", "7w", "-1d", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
