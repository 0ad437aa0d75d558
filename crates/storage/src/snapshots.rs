//! The data of VM snapshots: one directory per snapshot under `<data-dir>/snapshots/<name>/`
//! (`name` is the VirtualMachineSnapshotContent's), holding `manifest.json` (the VM object as it
//! was, each file with its size and sha256, the volumes left out and why) and `data/<logical>`
//! (the TPM state, the VARS file, disk images).
//!
//! A snapshot is published atomically or not at all: it is built in a temporary directory beside
//! its final place (`.<name>.tmp-*`), every file and directory fsynced, then renamed into place
//! and the parent fsynced. A crash or an error leaves at most a temporary directory, which the
//! next take (or [`SnapshotStore::remove_stale`]) deletes; a published snapshot is never partial.
//! Space is checked before anything is written: the sum of the files' sizes (plus a reserve) must
//! be free on the filesystem of the store, even when reflinks would make the copy nearly free.
//! Files are reflinked (`FICLONE`) when the filesystem can (btrfs, XFS), copied otherwise.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::atomic::{self, AtomicError, PRIVATE_FILE_MODE, ctx};
use crate::generations::{lock_dir, sha256_file};

/// The directory of the snapshot store under the data dir.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// The manifest of a snapshot.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The directory of a snapshot's files.
pub const DATA_DIR: &str = "data";
/// Free space kept on top of the snapshot's size (the manifest, directory blocks, other writers).
pub const SPACE_RESERVE_BYTES: u64 = 4 * 1024 * 1024;
const FORMAT: u32 = 1;

/// Why a snapshot could not be taken, read, verified or deleted.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotStoreError {
    #[error(transparent)]
    Io(#[from] AtomicError),
    #[error(
        "not enough space for the snapshot in {dir}: it needs {needed} bytes (with a {SPACE_RESERVE_BYTES}-byte reserve), {available} are free; free space there or delete old snapshots (`ferrovirt get vmsnapshot` shows their size)"
    )]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error(
        "invalid snapshot name {name:?}: use lower-case letters, digits, '-' and '.' (at most 253 characters)"
    )]
    InvalidName { name: String },
    #[error(
        "invalid logical file name {name:?} in a snapshot: use letters, digits, '.', '_' and '-', unique, at most 64 characters"
    )]
    InvalidLogicalName { name: String },
    #[error("snapshot {name} does not exist in {dir}")]
    NotFound { name: String, dir: PathBuf },
    #[error("the manifest {path} of a snapshot cannot be read: {message}")]
    BadManifest { path: PathBuf, message: String },
    #[error(
        "snapshot {name} is damaged: {path} has sha256 {found} ({found_size} bytes) but the snapshot recorded {expected} ({expected_size} bytes); it cannot be restored"
    )]
    Corrupt {
        name: String,
        path: PathBuf,
        found: String,
        found_size: u64,
        expected: String,
        expected_size: u64,
    },
    #[error("snapshot {name} has no file {logical} (it holds: {available})")]
    NoSuchFile {
        name: String,
        logical: String,
        available: String,
    },
}

/// How a file got into the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyMethod {
    /// A reflink (`FICLONE`): shares the blocks until either side writes.
    Reflink,
    /// A byte copy.
    Copy,
}

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// `tpm-state`, `vars`, `disk-<volume>`, ...
    pub logical_name: String,
    /// Where the file was taken from (informational).
    pub original_path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub mode: u32,
    pub method: CopyMethod,
}

/// A volume of the VM that the snapshot does not hold, and why (KubeVirt's `excludedVolumes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcludedVolume {
    pub volume: String,
    pub reason: String,
}

/// `manifest.json` of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    pub format: u32,
    pub name: String,
    pub created_unix_secs: u64,
    /// The VirtualMachine object as it was.
    pub vm: Value,
    pub files: Vec<SnapshotFile>,
    pub excluded: Vec<ExcludedVolume>,
    /// Taken while the VM ran (its vCPUs paused for `pause_ms`).
    pub online: bool,
    pub pause_ms: Option<u64>,
}

impl SnapshotManifest {
    /// The file with this logical name.
    pub fn file(&self, logical_name: &str) -> Option<&SnapshotFile> {
        self.files.iter().find(|f| f.logical_name == logical_name)
    }

    /// The bytes the snapshot's files hold.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// What to put into a snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotRequest<'a> {
    pub vm: &'a Value,
    /// `(logical name, source path)`; every source must be a regular file.
    pub files: Vec<(String, PathBuf)>,
    pub excluded: Vec<ExcludedVolume>,
    pub online: bool,
}

/// A snapshot whose files are copied but not yet published: [`StagedSnapshot::publish`] makes it
/// visible; dropping it removes the copies. Lets an online snapshot resume the VM between the
/// copy (while paused) and hashing + publishing (after).
pub struct StagedSnapshot<'s> {
    store: &'s SnapshotStore,
    name: String,
    temp: PathBuf,
    request_vm: Value,
    copied: Vec<(String, PathBuf, u32, CopyMethod)>,
    excluded: Vec<ExcludedVolume>,
    online: bool,
    published: bool,
}

/// The snapshot store of one data dir.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    root: PathBuf,
}

fn validate_name(name: &str) -> Result<(), SnapshotStoreError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(SnapshotStoreError::InvalidName {
            name: name.to_owned(),
        })
    }
}

fn validate_logical_names(files: &[(String, PathBuf)]) -> Result<(), SnapshotStoreError> {
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in files {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
            && seen.insert(name.as_str());
        if !ok {
            return Err(SnapshotStoreError::InvalidLogicalName { name: name.clone() });
        }
    }
    Ok(())
}

fn now_unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`.
pub fn available_bytes(dir: &Path) -> Result<u64, AtomicError> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| {
        AtomicError::io(
            "statvfs",
            dir,
            io::Error::from_raw_os_error(e.raw_os_error()),
        )
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Puts a copy of `src` at the new file `dst` (mode `mode`): a reflink when the filesystem
/// supports it, else a byte copy; fsynced either way.
pub fn clone_or_copy(src: &Path, dst: &Path, mode: u32) -> Result<CopyMethod, AtomicError> {
    let mut input = File::open(src).map_err(ctx("open source file", src))?;
    let meta = input.metadata().map_err(ctx("stat source file", src))?;
    if !meta.is_file() {
        return Err(AtomicError::UnsupportedFileType {
            path: src.to_path_buf(),
        });
    }
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dst)
        .map_err(ctx("create snapshot file", dst))?;
    output
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(ctx("set permissions of", dst))?;
    let method = match rustix::fs::ioctl_ficlone(&output, &input) {
        Ok(()) => CopyMethod::Reflink,
        Err(_) => {
            io::copy(&mut input, &mut output).map_err(ctx("copy into", dst))?;
            CopyMethod::Copy
        }
    };
    output.sync_all().map_err(ctx("fsync", dst))?;
    Ok(method)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl SnapshotStore {
    /// The store of `data_dir` (`<data_dir>/snapshots`, created 0700 on first write).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join(SNAPSHOTS_DIR),
        }
    }

    /// A store at `root` itself (tests, other layouts).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a published snapshot.
    pub fn dir_of(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Whether the snapshot `name` is published.
    pub fn exists(&self, name: &str) -> bool {
        self.dir_of(name).join(MANIFEST_FILE).is_file()
    }

    /// Copies the files (reflink or copy) into a temporary directory, after checking space.
    /// Nothing is visible until [`StagedSnapshot::publish`].
    pub fn stage(
        &self,
        name: &str,
        request: &SnapshotRequest<'_>,
    ) -> Result<StagedSnapshot<'_>, SnapshotStoreError> {
        validate_name(name)?;
        validate_logical_names(&request.files)?;
        atomic::create_dir_private(&self.root)?;
        let mut needed = SPACE_RESERVE_BYTES;
        let mut modes = Vec::new();
        for (_, path) in &request.files {
            let meta = fs::metadata(path).map_err(ctx("stat", path))?;
            if !meta.is_file() {
                return Err(AtomicError::UnsupportedFileType { path: path.clone() }.into());
            }
            needed = needed.saturating_add(meta.len());
            modes.push(meta.permissions().mode() & 0o7777);
        }
        let available = available_bytes(&self.root)?;
        if needed > available {
            return Err(SnapshotStoreError::NoSpace {
                dir: self.root.clone(),
                needed,
                available,
            });
        }
        let temp = self.root.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut staged = StagedSnapshot {
            store: self,
            name: name.to_owned(),
            temp: temp.clone(),
            request_vm: request.vm.clone(),
            copied: Vec::new(),
            excluded: request.excluded.clone(),
            online: request.online,
            published: false,
        };
        let data = temp.join(DATA_DIR);
        fs::create_dir(&temp).map_err(ctx("create directory", &temp))?;
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o700))
            .map_err(ctx("set permissions of", &temp))?;
        fs::create_dir(&data).map_err(ctx("create directory", &data))?;
        for ((logical, path), mode) in request.files.iter().zip(modes) {
            let method = clone_or_copy(path, &data.join(logical), mode)?;
            staged
                .copied
                .push((logical.clone(), path.clone(), mode, method));
        }
        Ok(staged)
    }

    /// Takes a snapshot in one go: [`Self::stage`] then [`StagedSnapshot::publish`]. A snapshot
    /// already published under `name` is returned as it is (a retried take changes nothing).
    pub fn take(
        &self,
        name: &str,
        request: &SnapshotRequest<'_>,
    ) -> Result<SnapshotManifest, SnapshotStoreError> {
        if self.exists(name) {
            return self.manifest(name);
        }
        self.stage(name, request)?.publish(None)
    }

    /// The manifest of a published snapshot.
    pub fn manifest(&self, name: &str) -> Result<SnapshotManifest, SnapshotStoreError> {
        validate_name(name)?;
        let path = self.dir_of(name).join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SnapshotStoreError::NotFound {
                    name: name.to_owned(),
                    dir: self.root.clone(),
                });
            }
            Err(e) => return Err(AtomicError::io("read", &path, e).into()),
        };
        serde_json::from_slice(&bytes).map_err(|e| SnapshotStoreError::BadManifest {
            path,
            message: e.to_string(),
        })
    }

    /// The path of a snapshot's file (not verified; see [`Self::verify`]).
    pub fn file_path(&self, name: &str, logical_name: &str) -> PathBuf {
        self.dir_of(name).join(DATA_DIR).join(logical_name)
    }

    /// Checks every file of a snapshot against its recorded size and sha256.
    pub fn verify(&self, name: &str) -> Result<SnapshotManifest, SnapshotStoreError> {
        let manifest = self.manifest(name)?;
        for file in &manifest.files {
            let path = self.file_path(name, &file.logical_name);
            let (size, sha256) = sha256_file(&path)?;
            if size != file.size || sha256 != file.sha256 {
                return Err(SnapshotStoreError::Corrupt {
                    name: name.to_owned(),
                    path,
                    found: sha256,
                    found_size: size,
                    expected: file.sha256.clone(),
                    expected_size: file.size,
                });
            }
        }
        Ok(manifest)
    }

    /// Deletes a snapshot (its directory is renamed aside first, so it vanishes atomically).
    /// Returns false when there was none.
    pub fn delete(&self, name: &str) -> Result<bool, SnapshotStoreError> {
        validate_name(name)?;
        let dir = self.dir_of(name);
        if !dir.exists() {
            return Ok(false);
        }
        let aside = self.root.join(format!(
            ".{name}.tmp-deleting-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::rename(&dir, &aside).map_err(ctx("move aside for deletion", &dir))?;
        atomic::fsync_dir(&self.root)?;
        fs::remove_dir_all(&aside).map_err(ctx("remove", &aside))?;
        Ok(true)
    }

    /// Removes what interrupted takes and deletions left behind.
    pub fn remove_stale(&self) -> Result<usize, SnapshotStoreError> {
        if !self.root.is_dir() {
            return Ok(0);
        }
        let _lock = lock_dir(&self.root).map_err(|e| match e {
            crate::GenerationError::Fs(io) => SnapshotStoreError::Io(io),
            other => SnapshotStoreError::Io(AtomicError::io(
                "lock",
                &self.root,
                io::Error::other(other.to_string()),
            )),
        })?;
        Ok(atomic::remove_stale_temp_files(&self.root)?)
    }
}

impl StagedSnapshot<'_> {
    /// Hashes the copies, writes the manifest and renames the snapshot into place (fsyncing
    /// every step). `pause_ms` is recorded for an online snapshot.
    pub fn publish(
        mut self,
        pause_ms: Option<u64>,
    ) -> Result<SnapshotManifest, SnapshotStoreError> {
        let data = self.temp.join(DATA_DIR);
        let mut files = Vec::new();
        for (logical, original, mode, method) in &self.copied {
            let (size, sha256) = sha256_file(&data.join(logical))?;
            files.push(SnapshotFile {
                logical_name: logical.clone(),
                original_path: original.clone(),
                size,
                sha256,
                mode: *mode,
                method: *method,
            });
        }
        let manifest = SnapshotManifest {
            format: FORMAT,
            name: self.name.clone(),
            created_unix_secs: now_unix_secs(),
            vm: self.request_vm.clone(),
            files,
            excluded: self.excluded.clone(),
            online: self.online,
            pause_ms,
        };
        let bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| AtomicError::io("encode manifest for", &self.temp, io::Error::other(e)))?;
        atomic::fsync_dir(&data)?;
        atomic::write_file(&self.temp.join(MANIFEST_FILE), &bytes, PRIVATE_FILE_MODE)?;
        atomic::fsync_dir(&self.temp)?;
        let final_dir = self.store.dir_of(&self.name);
        crate::failpoints::hit("snapshots.publish.before-rename")
            .map_err(|e| AtomicError::io("publish snapshot from", &self.temp, e))?;
        fs::rename(&self.temp, &final_dir).map_err(ctx("publish snapshot as", &final_dir))?;
        self.published = true;
        atomic::fsync_dir(&self.store.root)?;
        Ok(manifest)
    }
}

impl Drop for StagedSnapshot<'_> {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_dir_all(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(dir: &Path) -> (Value, Vec<(String, PathBuf)>) {
        fs::write(dir.join("tpm"), b"tpm state").unwrap();
        fs::write(dir.join("vars"), vec![7u8; 4096]).unwrap();
        (
            json!({"metadata": {"name": "vm"}}),
            vec![
                ("tpm-state".into(), dir.join("tpm")),
                ("vars".into(), dir.join("vars")),
            ],
        )
    }

    #[test]
    fn takes_verifies_and_deletes_atomically() {
        let src = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(data.path());
        let (vm, files) = request(src.path());
        let req = SnapshotRequest {
            vm: &vm,
            files,
            excluded: vec![ExcludedVolume {
                volume: "host".into(),
                reason: "hostDisk".into(),
            }],
            online: false,
        };
        let manifest = store.take("vmsnapshot-content-1", &req).unwrap();
        assert_eq!(manifest.total_bytes(), 9 + 4096);
        assert_eq!(manifest.vm, vm);
        assert!(store.exists("vmsnapshot-content-1"));
        assert_eq!(store.verify("vmsnapshot-content-1").unwrap(), manifest);
        // The source changing later does not change the snapshot.
        fs::write(src.path().join("tpm"), b"later").unwrap();
        let copy = store.file_path("vmsnapshot-content-1", "tpm-state");
        assert_eq!(fs::read(&copy).unwrap(), b"tpm state");
        // A retried take returns the published one unchanged.
        assert_eq!(store.take("vmsnapshot-content-1", &req).unwrap(), manifest);
        // Nothing temporary is left.
        let names: Vec<String> = fs::read_dir(store.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".lock"))
            .collect();
        assert_eq!(names, ["vmsnapshot-content-1"]);

        // A flipped byte is caught.
        fs::write(&copy, b"tpm statf").unwrap();
        let err = store.verify("vmsnapshot-content-1").unwrap_err();
        assert!(matches!(err, SnapshotStoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("cannot be restored"));

        assert!(store.delete("vmsnapshot-content-1").unwrap());
        assert!(!store.exists("vmsnapshot-content-1"));
        assert!(!store.delete("vmsnapshot-content-1").unwrap());
    }

    #[test]
    fn a_failed_stage_leaves_nothing_and_stale_temps_are_removed() {
        let src = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(data.path());
        let (vm, mut files) = request(src.path());
        files.push(("disk-gone".into(), src.path().join("missing")));
        let req = SnapshotRequest {
            vm: &vm,
            files,
            excluded: Vec::new(),
            online: false,
        };
        assert!(store.take("s", &req).is_err());
        assert!(!store.exists("s"));
        // A staged snapshot dropped before publishing (an error or a crash mid-way) is removed.
        let (vm, files) = request(src.path());
        let req = SnapshotRequest {
            vm: &vm,
            files,
            excluded: Vec::new(),
            online: true,
        };
        let staged = store.stage("s", &req).unwrap();
        assert!(!store.exists("s"));
        drop(staged);
        assert_eq!(
            fs::read_dir(store.root()).unwrap().count(),
            0,
            "nothing left behind"
        );
        // What a killed process leaves (a temp dir) is cleaned up.
        fs::create_dir_all(store.root().join(".s.tmp-1-0/data")).unwrap();
        assert_eq!(store.remove_stale().unwrap(), 1);
        let staged = store.stage("s", &req).unwrap();
        let manifest = staged.publish(Some(12)).unwrap();
        assert_eq!(manifest.pause_ms, Some(12));
        assert!(manifest.online);
    }

    #[test]
    fn refuses_when_space_is_short_before_writing() {
        let src = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(data.path());
        let free = available_bytes(data.path()).unwrap();
        // A sparse file larger than the free space: its apparent size counts.
        let big = src.path().join("big");
        let file = File::create(&big).unwrap();
        file.set_len(free + 1024 * 1024 * 1024).unwrap();
        let vm = json!({});
        let req = SnapshotRequest {
            vm: &vm,
            files: vec![("disk-root".into(), big)],
            excluded: Vec::new(),
            online: false,
        };
        let err = store.take("s", &req).unwrap_err();
        assert!(matches!(err, SnapshotStoreError::NoSpace { .. }), "{err}");
        assert!(err.to_string().contains("delete old snapshots"));
        assert_eq!(fs::read_dir(store.root()).unwrap().count(), 0);
    }

    #[test]
    fn names_are_checked() {
        let data = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(data.path());
        assert!(matches!(
            store.manifest("../x"),
            Err(SnapshotStoreError::InvalidName { .. })
        ));
        let vm = json!({});
        let req = SnapshotRequest {
            vm: &vm,
            files: vec![("../etc".into(), PathBuf::from("/etc/hostname"))],
            excluded: Vec::new(),
            online: false,
        };
        assert!(matches!(
            store.take("s", &req),
            Err(SnapshotStoreError::InvalidLogicalName { .. })
        ));
    }
}
