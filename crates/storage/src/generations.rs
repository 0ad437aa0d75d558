//! Crash-safe state generations: numbered, verified copies of a VM's state (the TPM state
//! directory and the VARS file) to roll back to. This is what makes "never lose TPM state" true.
//!
//! Layout of a generations directory (kept OUTSIDE the state volume, so the volume stays
//! byte-compatible with KubeVirt; e.g. `<data>/state-generations/<volume-name>/`):
//!
//! ```text
//! .lock                      flock(2) taken by every mutating operation
//! known-good.json            the last known-good generation (never pruned), see below
//! 0000000007/manifest.json   what was copied: per source kind, files with size + sha256
//! 0000000007/data/<logical>  a copied file, or a directory of copied files
//! .0000000008.tmp-<pid>-<n>/ a generation being built (garbage after a crash; pruned)
//! ```
//!
//! A generation is built in a hidden temporary directory, every file and directory is fsynced,
//! `manifest.json` is written last, and the directory is renamed into place (`RENAME_NOREPLACE`)
//! and the parent fsynced. A generation directory with a numeric name is therefore always
//! complete. [`Generations::verify`] re-hashes every file against the manifest.
//!
//! [`Generations::restore`] never destroys the current state: it first records it as a new
//! `pre-restore` generation (which [`Generations::prune`] never deletes), then replaces each
//! target crash-safely (files by temp+rename, directories by [`atomic::replace_dir`]).
//!
//! **Known-good.** [`Generations::mark_known_good`] names the generation a run started from once
//! that run succeeded (the engine decides what success is: `ferrovirt_vmm::state::finish`).
//! [`Generations::prune`] never removes it, however many generations a crash-looping VM records
//! after it, so `ferrovirt state rollback` can always return to it.
//!
//! **Deduplication.** A record whose sources are byte-identical to the newest generation (same
//! logical names, kinds, modes, sizes and sha256) with the same reason returns that generation
//! instead of storing a second one. With another reason (an `after-stop` equal to the
//! `before-start` of the same run, a `pre-restore`) a new generation is written, because those
//! kinds carry meaning for the start's fast path and for restores, but its files are hard links to
//! the newest generation's identical files: the bytes are stored once. Generation files are never
//! written in place (only created by temp + rename), so a link shares an immutable file.
//!
//! Record and restore only while the VM is stopped: a file that changes during the copy would be
//! recorded in an inconsistent state (the manifest hash would still match the copy).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::{self, AtomicError, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, ctx};

/// Number of good generations kept by default.
pub const DEFAULT_KEEP: usize = 3;
/// Name of the manifest file inside a generation directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Version of the manifest format written by this code.
pub const MANIFEST_FORMAT: u32 = 1;
const DATA_DIR: &str = "data";
const LOCK_FILE: &str = ".lock";
/// The file naming the last known-good generation.
pub const KNOWN_GOOD_FILE: &str = "known-good.json";
/// The journal of a restore under way (`Generations::restore`): written after the `pre-restore`
/// generation is recorded and before the first target is replaced, removed after the last one.
/// Found later, the restore was interrupted (a crash): `Generations::finish_interrupted_restore`
/// completes it, so the state is never left half old, half restored.
pub const RESTORE_JOURNAL_FILE: &str = "restore-in-progress.json";
const ID_DIGITS: usize = 10;

/// Errors of the generation store.
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    // Whoever reports a generation store's error names it ("state generations: ..."): here it
    // would say so twice.
    #[error(transparent)]
    Fs(#[from] AtomicError),
    #[error(
        "invalid logical name {name:?}: use 1-64 characters from [A-Za-z0-9._-], not starting \
         with '.', each name once per generation (e.g. \"tpm\", \"vars\")"
    )]
    InvalidLogicalName { name: String },
    #[error(
        "source {path} ({logical_name}) contains {entry}, which is not a regular file; only flat \
         directories of regular files can be recorded; remove it from the state directory"
    )]
    UnsupportedSource {
        logical_name: String,
        path: PathBuf,
        entry: PathBuf,
    },
    #[error(
        "generation {id} does not exist in {dir}; list the generations to pick an existing one"
    )]
    NotFound { id: GenerationId, dir: PathBuf },
    #[error(
        "manifest {path} is unreadable: {problem}; this generation cannot be trusted, roll back to \
         another generation"
    )]
    BadManifest { path: PathBuf, problem: String },
    #[error(
        "generation {id} in {dir} is corrupt: {}; do not restore it, roll back to an older \
         generation instead",
        problems.join("; ")
    )]
    Corrupt {
        id: GenerationId,
        dir: PathBuf,
        problems: Vec<String>,
    },
    #[error(
        "generation {id} has no state named {logical_name:?} (it has: {available}); pass targets \
         whose logical names were recorded"
    )]
    UnknownTarget {
        id: GenerationId,
        logical_name: String,
        available: String,
    },
    #[error(
        "restored {path} does not match generation {id} after the copy (sha256 {found}, expected \
         {expected}); the state before the restore is kept in generation {pre_restore}"
    )]
    RestoreMismatch {
        id: GenerationId,
        pre_restore: GenerationId,
        path: PathBuf,
        found: String,
        expected: String,
    },
}

/// Number of a generation; higher is newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GenerationId(pub u64);

impl GenerationId {
    fn dir_name(self) -> String {
        format!("{:0width$}", self.0, width = ID_DIGITS)
    }

    fn from_dir_name(name: &str) -> Option<Self> {
        if name.len() == ID_DIGITS && name.bytes().all(|b| b.is_ascii_digit()) {
            name.parse().ok().map(GenerationId)
        } else {
            None
        }
    }
}

impl std::fmt::Display for GenerationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why a generation was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GenerationReason {
    /// The state as it was before a VM start.
    BeforeStart,
    /// The state as a VM left it when it stopped (swtpm and QEMU exited, files fsynced). A start
    /// compares the state against this digest to catch changes made while the VM was stopped.
    AfterStop,
    /// The state that a restore replaced. Never pruned.
    PreRestore { restoring: GenerationId },
    /// Anything else, described by the caller.
    Other { note: String },
}

/// What a recorded source was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A regular file, stored at `data/<logical>`.
    File,
    /// A flat directory of regular files, stored at `data/<logical>/`.
    Dir,
    /// The source did not exist when recorded; restoring removes the target.
    Absent,
}

/// One copied file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to the generation directory (`data/...`).
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub mode: u32,
}

/// One recorded source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub logical_name: String,
    /// Where the source was when recorded (informational).
    pub original_path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits of the source (file or directory); none when absent.
    pub mode: Option<u32>,
    pub files: Vec<ManifestFile>,
}

/// `manifest.json` of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: GenerationId,
    pub created_unix_secs: u64,
    pub reason: GenerationReason,
    pub vm_uuid: Option<String>,
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// The recorded source with this logical name.
    pub fn entry(&self, logical_name: &str) -> Option<&ManifestEntry> {
        self.entries.iter().find(|e| e.logical_name == logical_name)
    }

    fn logical_names(&self) -> String {
        let names: Vec<&str> = self
            .entries
            .iter()
            .map(|e| e.logical_name.as_str())
            .collect();
        names.join(", ")
    }

    /// Total bytes of all copied files.
    pub fn total_bytes(&self) -> u64 {
        self.entries
            .iter()
            .flat_map(|e| e.files.iter())
            .map(|f| f.size)
            .sum()
    }
}

/// A generation as found on disk.
#[derive(Debug, Clone)]
pub struct GenerationInfo {
    pub id: GenerationId,
    pub dir: PathBuf,
    /// The parsed manifest, or why it could not be read.
    pub manifest: Result<Manifest, String>,
}

/// Result of a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreOutcome {
    pub restored: GenerationId,
    /// Where the state that was replaced is kept.
    pub pre_restore: GenerationId,
}

/// `restore-in-progress.json`: what an interrupted restore was doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestoreJournal {
    restoring: GenerationId,
    pre_restore: GenerationId,
    /// `(logical_name, path)` of every target.
    targets: Vec<(String, PathBuf)>,
}

/// Result of a prune.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: Vec<GenerationId>,
    pub kept: Vec<GenerationId>,
    pub stale_temp_removed: usize,
}

/// `known-good.json`: the generation a successful run started from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnownGood {
    pub generation: GenerationId,
    pub marked_unix_secs: u64,
}

/// The generations of one state volume.
#[derive(Debug, Clone)]
pub struct Generations {
    dir: PathBuf,
    vm_uuid: Option<String>,
}

pub(crate) struct DirLock {
    _file: File,
}

pub(crate) fn lock_dir(dir: &Path) -> Result<DirLock, GenerationError> {
    atomic::create_dir_private(dir)?;
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(PRIVATE_FILE_MODE)
        .open(&path)
        .map_err(ctx("open lock file", &path))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
        AtomicError::io(
            "lock",
            &path,
            io::Error::from_raw_os_error(e.raw_os_error()),
        )
    })?;
    Ok(DirLock { _file: file })
}

fn validate_logical_name(name: &str) -> Result<(), GenerationError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(GenerationError::InvalidLogicalName {
            name: name.to_owned(),
        })
    }
}

fn validate_unique_names<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), GenerationError> {
    let mut seen = BTreeSet::new();
    for name in names {
        validate_logical_name(name)?;
        if !seen.insert(name) {
            return Err(GenerationError::InvalidLogicalName {
                name: name.to_owned(),
            });
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 and size of a file.
pub fn sha256_file(path: &Path) -> Result<(u64, String), AtomicError> {
    let mut file = File::open(path).map_err(ctx("open for hashing", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(ctx("read for hashing", path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex(&hasher.finalize())))
}

/// Crash-safely copies `src` to `dst` with `mode`, returning size and sha256 of what was copied.
fn copy_hashed(src: &Path, dst: &Path, mode: u32) -> Result<(u64, String), AtomicError> {
    let mut input = File::open(src).map_err(ctx("open source file", src))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    atomic::write_file_with(dst, mode, |out| {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            size += n as u64;
        }
    })?;
    Ok((size, hex(&hasher.finalize())))
}

fn mode_of(meta: &fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

fn relative_is_safe(path: &str) -> bool {
    let p = Path::new(path);
    p.components().count() > 0 && p.components().all(|c| matches!(c, Component::Normal(_)))
}

fn now_unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Generations {
    /// Generations stored in `dir` (created 0700 on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Generations {
            dir: dir.into(),
            vm_uuid: None,
        }
    }

    /// Records `vm_uuid` in every manifest written from now on.
    pub fn with_vm_uuid(mut self, vm_uuid: impl Into<String>) -> Self {
        self.vm_uuid = Some(vm_uuid.into());
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn generation_dir(&self, id: GenerationId) -> PathBuf {
        self.dir.join(id.dir_name())
    }

    fn ids(&self) -> Result<Vec<GenerationId>, GenerationError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AtomicError::io("list directory", &self.dir, e).into()),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(ctx("list directory", &self.dir))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(GenerationId::from_dir_name)
            {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Copies the sources into a new generation and returns its id. Each source is
    /// `(logical_name, path)`; a path may be a regular file, a flat directory of regular files, or
    /// missing (recorded as absent). The new generation is verified before returning.
    pub fn record(
        &self,
        sources: &[(&str, &Path)],
        reason: GenerationReason,
    ) -> Result<GenerationId, GenerationError> {
        validate_unique_names(sources.iter().map(|(n, _)| *n))?;
        let _lock = lock_dir(&self.dir)?;
        self.record_locked(sources, reason)
    }

    fn record_locked(
        &self,
        sources: &[(&str, &Path)],
        reason: GenerationReason,
    ) -> Result<GenerationId, GenerationError> {
        let newest = self.ids()?.last().copied();
        let previous = match newest {
            Some(id) => self
                .verify(id)
                .ok()
                .map(|manifest| (self.generation_dir(id), manifest)),
            None => None,
        };
        if let Some((_, manifest)) = &previous
            && manifest.reason == reason
        {
            let scanned = sources
                .iter()
                .map(|(logical_name, path)| scan_source(logical_name, path))
                .collect::<Result<Option<Vec<_>>, _>>()?;
            if scanned.is_some_and(|scanned| same_content(&scanned, &manifest.entries)) {
                return Ok(manifest.id);
            }
        }
        let id = GenerationId(newest.map_or(1, |last| last.0 + 1));
        let tmp = atomic::temp_sibling(&self.dir, &id.dir_name().into());
        let previous = previous
            .as_ref()
            .map(|(dir, manifest)| (dir.as_path(), manifest));
        let built = self.build_generation(&tmp, id, sources, reason, previous);
        if let Err(e) = built {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        crate::failpoints::hit("generations.record.before-rename")
            .map_err(|e| AtomicError::io("rename into place", &tmp, e))?;
        let final_dir = self.generation_dir(id);
        let renamed = rustix::fs::renameat_with(
            rustix::fs::CWD,
            &tmp,
            rustix::fs::CWD,
            &final_dir,
            rustix::fs::RenameFlags::NOREPLACE,
        );
        if let Err(errno) = renamed {
            let _ = fs::remove_dir_all(&tmp);
            return Err(AtomicError::io(
                "rename generation into place as",
                &final_dir,
                io::Error::from_raw_os_error(errno.raw_os_error()),
            )
            .into());
        }
        atomic::fsync_dir(&self.dir)?;
        crate::failpoints::hit("generations.record.after-rename")
            .map_err(|e| AtomicError::io("verify", &final_dir, e))?;
        self.verify(id)?;
        Ok(id)
    }

    fn build_generation(
        &self,
        tmp: &Path,
        id: GenerationId,
        sources: &[(&str, &Path)],
        reason: GenerationReason,
        previous: Option<(&Path, &Manifest)>,
    ) -> Result<(), GenerationError> {
        fs::create_dir(tmp).map_err(ctx("create directory", tmp))?;
        fs::set_permissions(tmp, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
            .map_err(ctx("set permissions of", tmp))?;
        let data = tmp.join(DATA_DIR);
        atomic::create_dir_private(&data)?;
        let mut entries = Vec::new();
        for (logical_name, path) in sources {
            entries.push(copy_source(&data, logical_name, path, previous)?);
            crate::failpoints::hit("generations.record.copy")
                .map_err(|e| AtomicError::io("copy into a generation", path, e))?;
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            id,
            created_unix_secs: now_unix_secs(),
            reason,
            vm_uuid: self.vm_uuid.clone(),
            entries,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| AtomicError::io("serialize manifest for", tmp, io::Error::other(e)))?;
        atomic::write_file(&tmp.join(MANIFEST_FILE), &json, PRIVATE_FILE_MODE)?;
        atomic::fsync_dir(&data)?;
        atomic::fsync_dir(tmp)?;
        Ok(())
    }

    /// Reads a generation's manifest.
    pub fn manifest(&self, id: GenerationId) -> Result<Manifest, GenerationError> {
        let dir = self.generation_dir(id);
        if !dir.is_dir() {
            return Err(GenerationError::NotFound {
                id,
                dir: self.dir.clone(),
            });
        }
        read_manifest(&dir.join(MANIFEST_FILE))
    }

    /// All generations, oldest first.
    pub fn list(&self) -> Result<Vec<GenerationInfo>, GenerationError> {
        let mut infos = Vec::new();
        for id in self.ids()? {
            let dir = self.generation_dir(id);
            let manifest = read_manifest(&dir.join(MANIFEST_FILE)).map_err(|e| e.to_string());
            infos.push(GenerationInfo { id, dir, manifest });
        }
        Ok(infos)
    }

    /// Checks every file of a generation against its manifest (presence, size, sha256).
    pub fn verify(&self, id: GenerationId) -> Result<Manifest, GenerationError> {
        let manifest = self.manifest(id)?;
        let dir = self.generation_dir(id);
        let mut problems = Vec::new();
        if manifest.id != id {
            problems.push(format!("manifest says it is generation {}", manifest.id));
        }
        for entry in &manifest.entries {
            for file in &entry.files {
                if !relative_is_safe(&file.path) {
                    problems.push(format!("unsafe path {:?} in manifest", file.path));
                    continue;
                }
                let path = dir.join(&file.path);
                match sha256_file(&path) {
                    Err(e) => problems.push(format!("{}: {e}", file.path)),
                    Ok((size, _)) if size != file.size => problems.push(format!(
                        "{} is {size} bytes, manifest says {}",
                        file.path, file.size
                    )),
                    Ok((_, sha)) if sha != file.sha256 => problems.push(format!(
                        "{} has sha256 {sha}, manifest says {}",
                        file.path, file.sha256
                    )),
                    Ok(_) => {}
                }
            }
        }
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(GenerationError::Corrupt { id, dir, problems })
        }
    }

    /// The newest generation that verifies, if any.
    pub fn latest_good(&self) -> Result<Option<GenerationId>, GenerationError> {
        for id in self.ids()?.into_iter().rev() {
            if self.verify(id).is_ok() {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Puts the state of generation `id` back at `targets` (`(logical_name, path)`; a subset of the
    /// recorded names is fine). The current state at the targets is first recorded as a new
    /// `pre-restore` generation, so nothing is ever lost. Refuses a generation that does not verify.
    pub fn restore(
        &self,
        id: GenerationId,
        targets: &[(&str, &Path)],
    ) -> Result<RestoreOutcome, GenerationError> {
        validate_unique_names(targets.iter().map(|(n, _)| *n))?;
        let _lock = lock_dir(&self.dir)?;
        let manifest = self.verify(id)?;
        let mut plan = Vec::new();
        for (logical_name, target) in targets {
            let entry =
                manifest
                    .entry(logical_name)
                    .ok_or_else(|| GenerationError::UnknownTarget {
                        id,
                        logical_name: (*logical_name).to_owned(),
                        available: manifest.logical_names(),
                    })?;
            plan.push((entry, *target));
        }
        self.finish_interrupted_restore_locked()?;
        let pre_restore =
            self.record_locked(targets, GenerationReason::PreRestore { restoring: id })?;
        let journal = RestoreJournal {
            restoring: id,
            pre_restore,
            targets: targets
                .iter()
                .map(|(n, p)| ((*n).to_owned(), p.to_path_buf()))
                .collect(),
        };
        let journal_path = self.dir.join(RESTORE_JOURNAL_FILE);
        let json = serde_json::to_vec_pretty(&journal)
            .map_err(|e| AtomicError::io("serialize", &journal_path, io::Error::other(e)))?;
        atomic::write_file(&journal_path, &json, PRIVATE_FILE_MODE)?;
        let gen_dir = self.generation_dir(id);
        let replaced = crate::failpoints::hit("generations.restore.before-replace")
            .map_err(|e| GenerationError::from(AtomicError::io("restore from", &self.dir, e)))
            .and_then(|()| {
                for (entry, target) in &plan {
                    restore_entry(&gen_dir, entry, target, id, pre_restore)?;
                    crate::failpoints::hit("generations.restore.between-targets")
                        .map_err(|e| AtomicError::io("restore", target, e))?;
                }
                Ok(())
            });
        if let Err(error) = replaced {
            // A failed (not crashed) restore puts the state it was replacing back, so the
            // state is never half restored; if even that fails, the journal stays and the next
            // start completes the restore.
            if self.put_back(pre_restore, targets).is_ok() {
                self.remove_restore_journal()?;
            }
            return Err(error);
        }
        self.remove_restore_journal()?;
        Ok(RestoreOutcome {
            restored: id,
            pre_restore,
        })
    }

    /// Completes a restore that a crash interrupted (its journal, [`RESTORE_JOURNAL_FILE`], is
    /// still there): every target is put back from the generation being restored, so the state is
    /// wholly the restored one (the state it replaced is in the journal's `pre-restore`
    /// generation). When that generation no longer verifies, the `pre-restore` one is put back
    /// instead. `Ok(None)` when no restore was interrupted. Every start of a VM calls this first.
    pub fn finish_interrupted_restore(&self) -> Result<Option<RestoreOutcome>, GenerationError> {
        if !self.dir.join(RESTORE_JOURNAL_FILE).exists() {
            return Ok(None);
        }
        let _lock = lock_dir(&self.dir)?;
        self.finish_interrupted_restore_locked()
    }

    fn finish_interrupted_restore_locked(&self) -> Result<Option<RestoreOutcome>, GenerationError> {
        let path = self.dir.join(RESTORE_JOURNAL_FILE);
        let bytes = match atomic::read_file(&path) {
            Ok(bytes) => bytes,
            Err(AtomicError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let journal: RestoreJournal =
            serde_json::from_slice(&bytes).map_err(|e| GenerationError::BadManifest {
                path: path.clone(),
                problem: format!(
                    "{e} (the journal of an interrupted restore; the state it replaced is in the \
                     newest pre-restore generation: `ferrovirt state rollback` to it)"
                ),
            })?;
        // The generation being restored, or (when it does not verify) the state it replaced.
        let (id, manifest) = match self.verify(journal.restoring) {
            Ok(m) => (journal.restoring, m),
            Err(_) => (journal.pre_restore, self.verify(journal.pre_restore)?),
        };
        let gen_dir = self.generation_dir(id);
        for (logical_name, target) in &journal.targets {
            let entry =
                manifest
                    .entry(logical_name)
                    .ok_or_else(|| GenerationError::UnknownTarget {
                        id,
                        logical_name: logical_name.clone(),
                        available: manifest.logical_names(),
                    })?;
            restore_entry(&gen_dir, entry, target, id, journal.pre_restore)?;
        }
        self.remove_restore_journal()?;
        Ok(Some(RestoreOutcome {
            restored: id,
            pre_restore: journal.pre_restore,
        }))
    }

    /// Puts generation `id` back at `targets` without recording anything (the undo of a failed
    /// restore).
    fn put_back(&self, id: GenerationId, targets: &[(&str, &Path)]) -> Result<(), GenerationError> {
        let manifest = self.verify(id)?;
        let gen_dir = self.generation_dir(id);
        for (logical_name, target) in targets {
            if let Some(entry) = manifest.entry(logical_name) {
                restore_entry(&gen_dir, entry, target, id, id)?;
            }
        }
        Ok(())
    }

    fn remove_restore_journal(&self) -> Result<(), GenerationError> {
        let path = self.dir.join(RESTORE_JOURNAL_FILE);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(AtomicError::io("remove", &path, e).into()),
        }
        atomic::fsync_dir(&self.dir)?;
        Ok(())
    }

    /// Names generation `id` (which must verify) as the last known-good state: the state a run
    /// started from when that run succeeded. [`Self::prune`] never removes it.
    pub fn mark_known_good(&self, id: GenerationId) -> Result<(), GenerationError> {
        let _lock = lock_dir(&self.dir)?;
        self.verify(id)?;
        let record = KnownGood {
            generation: id,
            marked_unix_secs: now_unix_secs(),
        };
        let path = self.dir.join(KNOWN_GOOD_FILE);
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| AtomicError::io("serialize", &path, io::Error::other(e)))?;
        crate::failpoints::hit("generations.mark-known-good")
            .map_err(|e| AtomicError::io("write", &path, e))?;
        atomic::write_file(&path, &json, PRIVATE_FILE_MODE)?;
        Ok(())
    }

    /// The last known-good generation, when one is marked and still exists. An unreadable
    /// `known-good.json` counts as none (pruning then keeps the newest good generations only).
    pub fn known_good(&self) -> Option<GenerationId> {
        let bytes = atomic::read_file(&self.dir.join(KNOWN_GOOD_FILE)).ok()?;
        let record: KnownGood = serde_json::from_slice(&bytes).ok()?;
        self.generation_dir(record.generation)
            .is_dir()
            .then_some(record.generation)
    }

    /// Deletes old generations: walking from the newest, the first `keep` generations that verify
    /// are kept, and so is everything newer than the oldest of them; older generations are removed,
    /// except `pre-restore` generations and the known-good generation
    /// ([`Self::mark_known_good`]), which are never pruned. `keep` below 1 counts as 1.
    /// Leftovers of interrupted records are removed too.
    pub fn prune(&self, keep: usize) -> Result<PruneReport, GenerationError> {
        let keep = keep.max(1);
        let _lock = lock_dir(&self.dir)?;
        crate::failpoints::hit("generations.prune")
            .map_err(|e| AtomicError::io("prune generations in", &self.dir, e))?;
        let known_good = self.known_good();
        let mut report = PruneReport {
            stale_temp_removed: atomic::remove_stale_temp_files(&self.dir)?,
            ..PruneReport::default()
        };
        let mut good = 0usize;
        for id in self.ids()?.into_iter().rev() {
            let verified = self.verify(id);
            let is_pre_restore = matches!(
                &verified,
                Ok(m) if matches!(m.reason, GenerationReason::PreRestore { .. })
            ) || self
                .manifest(id)
                .is_ok_and(|m| matches!(m.reason, GenerationReason::PreRestore { .. }));
            if good >= keep && !is_pre_restore && known_good != Some(id) {
                self.remove_generation(id)?;
                report.removed.push(id);
                continue;
            }
            if verified.is_ok() {
                good += 1;
            }
            report.kept.push(id);
        }
        report.kept.reverse();
        report.removed.reverse();
        Ok(report)
    }

    /// Deletes one generation (explicitly; e.g. a pre-restore generation no longer wanted).
    pub fn delete(&self, id: GenerationId) -> Result<(), GenerationError> {
        let _lock = lock_dir(&self.dir)?;
        if !self.generation_dir(id).is_dir() {
            return Err(GenerationError::NotFound {
                id,
                dir: self.dir.clone(),
            });
        }
        self.remove_generation(id)
    }

    fn remove_generation(&self, id: GenerationId) -> Result<(), GenerationError> {
        // Rename first so a half-removed generation never carries a numeric name.
        let dir = self.generation_dir(id);
        let doomed = atomic::temp_sibling(&self.dir, &id.dir_name().into());
        fs::rename(&dir, &doomed).map_err(ctx("move generation aside for removal", &dir))?;
        atomic::fsync_dir(&self.dir)?;
        crate::failpoints::hit("generations.prune.remove")
            .map_err(|e| AtomicError::io("remove generation", &doomed, e))?;
        fs::remove_dir_all(&doomed).map_err(ctx("remove generation", &doomed))?;
        atomic::fsync_dir(&self.dir)?;
        Ok(())
    }
}

fn read_manifest(path: &Path) -> Result<Manifest, GenerationError> {
    let bytes = atomic::read_file(path).map_err(|e| GenerationError::BadManifest {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| GenerationError::BadManifest {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

fn copy_source(
    data: &Path,
    logical_name: &str,
    path: &Path,
    previous: Option<(&Path, &Manifest)>,
) -> Result<ManifestEntry, GenerationError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(ManifestEntry {
                logical_name: logical_name.to_owned(),
                original_path: path.to_path_buf(),
                kind: EntryKind::Absent,
                mode: None,
                files: Vec::new(),
            });
        }
        Err(e) => return Err(AtomicError::io("stat", path, e).into()),
    };
    let unsupported = |entry: PathBuf| GenerationError::UnsupportedSource {
        logical_name: logical_name.to_owned(),
        path: path.to_path_buf(),
        entry,
    };
    if meta.is_file() {
        let rel = format!("{DATA_DIR}/{logical_name}");
        let (size, sha256) = copy_or_link(
            path,
            &data.join(logical_name),
            &rel,
            mode_of(&meta),
            previous,
        )?;
        return Ok(ManifestEntry {
            logical_name: logical_name.to_owned(),
            original_path: path.to_path_buf(),
            kind: EntryKind::File,
            mode: Some(mode_of(&meta)),
            files: vec![ManifestFile {
                path: rel,
                size,
                sha256,
                mode: mode_of(&meta),
            }],
        });
    }
    if !meta.is_dir() {
        return Err(unsupported(path.to_path_buf()));
    }
    let dst = data.join(logical_name);
    atomic::create_dir_private(&dst)?;
    let mut names = Vec::new();
    for entry in fs::read_dir(path).map_err(ctx("list directory", path))? {
        let entry = entry.map_err(ctx("list directory", path))?;
        let kind = entry.file_type().map_err(ctx("stat", &entry.path()))?;
        let name = entry.file_name();
        match name.to_str() {
            Some(n) if kind.is_file() && relative_is_safe(n) => names.push(n.to_owned()),
            _ => return Err(unsupported(entry.path())),
        }
    }
    names.sort();
    let mut files = Vec::new();
    for name in names {
        let src = path.join(&name);
        let mode = mode_of(&fs::metadata(&src).map_err(ctx("stat", &src))?);
        let rel = format!("{DATA_DIR}/{logical_name}/{name}");
        let (size, sha256) = copy_or_link(&src, &dst.join(&name), &rel, mode, previous)?;
        files.push(ManifestFile {
            path: rel,
            size,
            sha256,
            mode,
        });
    }
    atomic::fsync_dir(&dst)?;
    Ok(ManifestEntry {
        logical_name: logical_name.to_owned(),
        original_path: path.to_path_buf(),
        kind: EntryKind::Dir,
        mode: Some(mode_of(&meta)),
        files,
    })
}

/// Copies `src` to `dst`, or hard-links the previous generation's file at the same relative
/// path `rel` when it has the same size, sha256 and mode (the bytes are then stored once).
fn copy_or_link(
    src: &Path,
    dst: &Path,
    rel: &str,
    mode: u32,
    previous: Option<(&Path, &Manifest)>,
) -> Result<(u64, String), AtomicError> {
    let same = previous.and_then(|(dir, manifest)| {
        manifest
            .entries
            .iter()
            .flat_map(|e| e.files.iter())
            .find(|f| f.path == rel && f.mode == mode)
            .map(|f| (dir.join(&f.path), f))
    });
    if let Some((linked, recorded)) = same {
        let (size, sha256) = sha256_file(src)?;
        if size == recorded.size && sha256 == recorded.sha256 && fs::hard_link(&linked, dst).is_ok()
        {
            return Ok((size, sha256));
        }
    }
    copy_hashed(src, dst, mode)
}

/// What `copy_source` would record for a source, without copying (hashes only); `None` for a
/// source `copy_source` refuses.
fn scan_source(logical_name: &str, path: &Path) -> Result<Option<ManifestEntry>, GenerationError> {
    let absent = || ManifestEntry {
        logical_name: logical_name.to_owned(),
        original_path: path.to_path_buf(),
        kind: EntryKind::Absent,
        mode: None,
        files: Vec::new(),
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(absent())),
        Err(e) => return Err(AtomicError::io("stat", path, e).into()),
    };
    let file_of = |src: &Path, rel: String| -> Result<ManifestFile, GenerationError> {
        let mode = mode_of(&fs::metadata(src).map_err(ctx("stat", src))?);
        let (size, sha256) = sha256_file(src)?;
        Ok(ManifestFile {
            path: rel,
            size,
            sha256,
            mode,
        })
    };
    let (kind, files) = if meta.is_file() {
        (
            EntryKind::File,
            vec![file_of(path, format!("{DATA_DIR}/{logical_name}"))?],
        )
    } else if meta.is_dir() {
        let mut names = Vec::new();
        for entry in fs::read_dir(path).map_err(ctx("list directory", path))? {
            let entry = entry.map_err(ctx("list directory", path))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        let mut files = Vec::new();
        for name in names {
            let src = path.join(&name);
            if !fs::symlink_metadata(&src).is_ok_and(|m| m.is_file()) {
                return Ok(None);
            }
            files.push(file_of(&src, format!("{DATA_DIR}/{logical_name}/{name}"))?);
        }
        (EntryKind::Dir, files)
    } else {
        return Ok(None);
    };
    Ok(Some(ManifestEntry {
        logical_name: logical_name.to_owned(),
        original_path: path.to_path_buf(),
        kind,
        mode: Some(mode_of(&meta)),
        files,
    }))
}

/// Whether scanned sources hold exactly what a generation recorded (where they were is not
/// compared: a store moved with its VM still holds the same state).
fn same_content(scanned: &[ManifestEntry], recorded: &[ManifestEntry]) -> bool {
    scanned.len() == recorded.len()
        && scanned.iter().zip(recorded).all(|(a, b)| {
            a.logical_name == b.logical_name
                && a.kind == b.kind
                && a.mode == b.mode
                && a.files == b.files
        })
}

fn check_restored(
    path: &Path,
    expected: &ManifestFile,
    id: GenerationId,
    pre_restore: GenerationId,
) -> Result<(), GenerationError> {
    let (_, found) = sha256_file(path)?;
    if found == expected.sha256 {
        Ok(())
    } else {
        Err(GenerationError::RestoreMismatch {
            id,
            pre_restore,
            path: path.to_path_buf(),
            found,
            expected: expected.sha256.clone(),
        })
    }
}

fn ensure_parent(target: &Path) -> Result<PathBuf, GenerationError> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    atomic::create_dir_private(&parent)?;
    Ok(parent)
}

fn restore_entry(
    gen_dir: &Path,
    entry: &ManifestEntry,
    target: &Path,
    id: GenerationId,
    pre_restore: GenerationId,
) -> Result<(), GenerationError> {
    let parent = ensure_parent(target)?;
    match entry.kind {
        EntryKind::File => {
            for file in &entry.files {
                atomic::copy_file(&gen_dir.join(&file.path), target, file.mode)?;
                check_restored(target, file, id, pre_restore)?;
            }
        }
        EntryKind::Dir => {
            let name = target
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_else(|| entry.logical_name.clone().into());
            let tmp = atomic::temp_sibling(&parent, &name);
            fs::create_dir(&tmp).map_err(ctx("create directory", &tmp))?;
            let mode = entry.mode.unwrap_or(PRIVATE_DIR_MODE);
            fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
                .map_err(ctx("set permissions of", &tmp))?;
            for file in &entry.files {
                let Some(file_name) = Path::new(&file.path).file_name() else {
                    continue;
                };
                let dst = tmp.join(file_name);
                atomic::copy_file(&gen_dir.join(&file.path), &dst, file.mode)?;
                check_restored(&dst, file, id, pre_restore)?;
            }
            atomic::replace_dir(&tmp, target)?;
        }
        EntryKind::Absent => match fs::symlink_metadata(target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(AtomicError::io("stat", target, e).into()),
            // The current content is safe in the pre-restore generation.
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(target).map_err(ctx("remove", target))?;
                atomic::fsync_dir(&parent)?;
            }
            Ok(_) => {
                fs::remove_file(target).map_err(ctx("remove", target))?;
                atomic::fsync_dir(&parent)?;
            }
        },
    }
    Ok(())
}

/// Moves a volume's whole directory into `archive_dir` instead of deleting it (used when
/// persistence is switched off: KubeVirt deletes the PVC, ferrovirt keeps a recoverable copy).
/// Returns the archived path `<archive_dir>/<volume-dir-name>.retired-<unix-secs>[-n]`.
/// A rename when on the same filesystem; otherwise a full fsynced copy, then the original is removed.
pub fn retire(volume_dir: &Path, archive_dir: &Path) -> Result<PathBuf, GenerationError> {
    let meta = fs::symlink_metadata(volume_dir).map_err(ctx("stat volume", volume_dir))?;
    if !meta.is_dir() {
        return Err(AtomicError::NotADirectory {
            path: volume_dir.to_path_buf(),
        }
        .into());
    }
    let name = volume_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| AtomicError::NoParent {
            path: volume_dir.to_path_buf(),
        })?;
    atomic::create_dir_private(archive_dir)?;
    let stamp = now_unix_secs();
    let mut archived = archive_dir.join(format!("{name}.retired-{stamp}"));
    let mut n = 1;
    while archived.exists() {
        archived = archive_dir.join(format!("{name}.retired-{stamp}-{n}"));
        n += 1;
    }
    let parent = volume_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    crate::failpoints::hit("generations.retire")
        .map_err(|e| AtomicError::io("move volume to archive", volume_dir, e))?;
    match fs::rename(volume_dir, &archived) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            let tmp = atomic::temp_sibling(archive_dir, &name.clone().into());
            atomic::copy_tree(volume_dir, &tmp)?;
            fs::rename(&tmp, &archived).map_err(ctx("rename archive into place as", &archived))?;
            atomic::fsync_dir(archive_dir)?;
            fs::remove_dir_all(volume_dir).map_err(ctx("remove retired volume", volume_dir))?;
        }
        Err(e) => return Err(AtomicError::io("move volume to archive", volume_dir, e).into()),
    }
    atomic::fsync_dir(archive_dir)?;
    atomic::fsync_dir(&parent)?;
    Ok(archived)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    struct Fixture {
        _tmp: tempfile::TempDir,
        gens: Generations,
        tpm_dir: PathBuf,
        vars: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        let tpm_dir = vol.join("swtpm/uuid/tpm2");
        fs::create_dir_all(&tpm_dir).unwrap();
        fs::set_permissions(&tpm_dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::create_dir_all(vol.join("nvram")).unwrap();
        let vars = vol.join("nvram/vm_VARS.fd");
        let gens = Generations::new(tmp.path().join("generations/vol")).with_vm_uuid("uuid");
        Fixture {
            _tmp: tmp,
            gens,
            tpm_dir,
            vars,
        }
    }

    impl Fixture {
        fn sources(&self) -> [(&'static str, &Path); 2] {
            [
                ("tpm", self.tpm_dir.as_path()),
                ("vars", self.vars.as_path()),
            ]
        }
        fn write_state(&self, tpm: &[u8], vars: &[u8]) {
            fs::write(self.tpm_dir.join("tpm2-00.permall"), tpm).unwrap();
            fs::write(self.tpm_dir.join(".lock"), b"").unwrap();
            fs::write(&self.vars, vars).unwrap();
        }
    }

    #[test]
    fn record_list_verify() {
        let f = fixture();
        f.write_state(b"tpm-v1", b"vars-v1");
        let id = f
            .gens
            .record(&f.sources(), GenerationReason::BeforeStart)
            .unwrap();
        assert_eq!(id, GenerationId(1));
        let list = f.gens.list().unwrap();
        assert_eq!(list.len(), 1);
        let m = list[0].manifest.as_ref().unwrap();
        assert_eq!(m.vm_uuid.as_deref(), Some("uuid"));
        assert_eq!(m.reason, GenerationReason::BeforeStart);
        assert_eq!(m.entries[0].kind, EntryKind::Dir);
        assert_eq!(m.entries[0].mode, Some(0o700));
        assert_eq!(m.entries[0].files.len(), 2);
        assert_eq!(m.entries[1].kind, EntryKind::File);
        assert_eq!(m.total_bytes(), 13);
        // sha256("vars-v1")
        assert_eq!(m.entries[1].files[0].sha256.len(), 64);
        f.gens.verify(id).unwrap();
        let dir = f.gens.dir().join("0000000001");
        let mode = fs::metadata(dir.join(MANIFEST_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        // The same bytes for the same reason are not stored twice.
        assert_eq!(
            f.gens
                .record(&f.sources(), GenerationReason::BeforeStart)
                .unwrap(),
            GenerationId(1)
        );
        f.write_state(b"tpm-v2", b"vars-v1");
        assert_eq!(
            f.gens
                .record(&f.sources(), GenerationReason::BeforeStart)
                .unwrap(),
            GenerationId(2)
        );
    }

    #[test]
    fn corrupted_file_is_detected_by_verify() {
        let f = fixture();
        f.write_state(b"tpm-v1", b"vars-v1");
        let id = f
            .gens
            .record(&f.sources(), GenerationReason::BeforeStart)
            .unwrap();
        let copied = f.gens.dir().join("0000000001/data/tpm/tpm2-00.permall");
        fs::write(&copied, b"tpm-v2").unwrap(); // same size, different bytes
        let err = f.gens.verify(id).unwrap_err();
        match &err {
            GenerationError::Corrupt { problems, .. } => {
                assert_eq!(problems.len(), 1);
                assert!(
                    problems[0].contains("data/tpm/tpm2-00.permall has sha256"),
                    "{err}"
                );
            }
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("roll back to an older generation"));
        // Truncation and deletion too.
        fs::write(&copied, b"t").unwrap();
        assert!(
            f.gens
                .verify(id)
                .unwrap_err()
                .to_string()
                .contains("is 1 bytes, manifest says 6")
        );
        fs::remove_file(&copied).unwrap();
        assert!(matches!(
            f.gens.verify(id),
            Err(GenerationError::Corrupt { .. })
        ));
        // And restore refuses it, leaving the live state alone.
        f.write_state(b"live", b"live-vars");
        assert!(f.gens.restore(id, &f.sources()).is_err());
        assert_eq!(fs::read(&f.vars).unwrap(), b"live-vars");
        assert_eq!(f.gens.latest_good().unwrap(), None);
    }

    #[test]
    fn broken_manifest_is_reported() {
        let f = fixture();
        f.write_state(b"a", b"b");
        let id = f
            .gens
            .record(&f.sources(), GenerationReason::BeforeStart)
            .unwrap();
        fs::write(f.gens.dir().join("0000000001/manifest.json"), b"{not json").unwrap();
        assert!(matches!(
            f.gens.verify(id),
            Err(GenerationError::BadManifest { .. })
        ));
        assert!(f.gens.list().unwrap()[0].manifest.is_err());
    }

    #[test]
    fn an_interrupted_restore_is_completed_never_left_half_done() {
        let f = fixture();
        f.write_state(b"tpm-v1", b"vars-v1");
        let g1 = f
            .gens
            .record(&f.sources(), GenerationReason::AfterStop)
            .unwrap();
        f.write_state(b"tpm-v2", b"vars-v2");
        // What a crash between the two targets of a restore of g1 leaves: the pre-restore
        // generation, the journal, the VARS restored and the TPM state not yet.
        let pre = f
            .gens
            .record(&f.sources(), GenerationReason::PreRestore { restoring: g1 })
            .unwrap();
        let journal = RestoreJournal {
            restoring: g1,
            pre_restore: pre,
            targets: f
                .sources()
                .iter()
                .map(|(n, p)| ((*n).to_owned(), p.to_path_buf()))
                .collect(),
        };
        fs::write(
            f.gens.dir().join(RESTORE_JOURNAL_FILE),
            serde_json::to_vec(&journal).unwrap(),
        )
        .unwrap();
        fs::write(&f.vars, b"vars-v1").unwrap();
        let done = f.gens.finish_interrupted_restore().unwrap().unwrap();
        assert_eq!((done.restored, done.pre_restore), (g1, pre));
        assert_eq!(fs::read(&f.vars).unwrap(), b"vars-v1");
        assert_eq!(
            fs::read(f.tpm_dir.join("tpm2-00.permall")).unwrap(),
            b"tpm-v1"
        );
        assert!(!f.gens.dir().join(RESTORE_JOURNAL_FILE).exists());
        assert_eq!(f.gens.finish_interrupted_restore().unwrap(), None);
        // The state it replaced is still there.
        f.gens.verify(pre).unwrap();
    }

    #[test]
    fn a_failed_restore_puts_the_replaced_state_back() {
        let f = fixture();
        f.write_state(b"tpm-v1", b"vars-v1");
        let g1 = f
            .gens
            .record(&f.sources(), GenerationReason::AfterStop)
            .unwrap();
        f.write_state(b"tpm-v2", b"vars-v2");
        // An I/O error after the first target was replaced.
        crate::failpoints::configure("generations.restore.between-targets", "1*return(eio)").ok();
        let result = f.gens.restore(g1, &f.sources());
        crate::failpoints::clear("generations.restore.between-targets");
        if crate::failpoints::compiled_in() {
            assert!(result.is_err());
            assert_eq!(fs::read(&f.vars).unwrap(), b"vars-v2");
            assert_eq!(
                fs::read(f.tpm_dir.join("tpm2-00.permall")).unwrap(),
                b"tpm-v2"
            );
            assert!(!f.gens.dir().join(RESTORE_JOURNAL_FILE).exists());
        } else {
            result.unwrap();
        }
    }

    #[test]
    fn restore_moves_current_state_aside_first() {
        let f = fixture();
        f.write_state(b"tpm-v1", b"vars-v1");
        let g1 = f
            .gens
            .record(&f.sources(), GenerationReason::BeforeStart)
            .unwrap();
        // The VM runs and (say) the state gets damaged.
        f.write_state(b"tpm-BROKEN", b"vars-BROKEN");
        fs::write(f.tpm_dir.join("extra"), b"x").unwrap();
        let outcome = f.gens.restore(g1, &f.sources()).unwrap();
        assert_eq!(outcome.restored, g1);
        assert_eq!(outcome.pre_restore, GenerationId(2));
        assert_eq!(
            fs::read(f.tpm_dir.join("tpm2-00.permall")).unwrap(),
            b"tpm-v1"
        );
        assert!(!f.tpm_dir.join("extra").exists());
        assert_eq!(fs::read(&f.vars).unwrap(), b"vars-v1");
        let mode = fs::metadata(&f.tpm_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // The broken state is kept, and can itself be restored.
        let pre = f.gens.verify(outcome.pre_restore).unwrap();
        assert_eq!(pre.reason, GenerationReason::PreRestore { restoring: g1 });
        f.gens.restore(outcome.pre_restore, &f.sources()).unwrap();
        assert_eq!(fs::read(&f.vars).unwrap(), b"vars-BROKEN");
        assert_eq!(fs::read(f.tpm_dir.join("extra")).unwrap(), b"x");
    }

    #[test]
    fn restore_of_absent_source_removes_target_but_keeps_copy() {
        let f = fixture();
        // First start: no VARS yet.
        let g1 = f
            .gens
            .record(&f.sources(), GenerationReason::BeforeStart)
            .unwrap();
        assert_eq!(
            f.gens.manifest(g1).unwrap().entries[1].kind,
            EntryKind::Absent
        );
        fs::write(&f.vars, b"written by the guest").unwrap();
        let out = f.gens.restore(g1, &[("vars", f.vars.as_path())]).unwrap();
        assert!(!f.vars.exists());
        let pre = f.gens.manifest(out.pre_restore).unwrap();
        assert_eq!(pre.entries.len(), 1);
        assert_eq!(pre.entries[0].files[0].size, 20);
    }

    #[test]
    fn restore_unknown_target_changes_nothing() {
        let f = fixture();
        f.write_state(b"a", b"b");
        let g1 = f
            .gens
            .record(&[("vars", f.vars.as_path())], GenerationReason::BeforeStart)
            .unwrap();
        let err = f.gens.restore(g1, &f.sources()).unwrap_err();
        assert!(err.to_string().contains("no state named \"tpm\""), "{err}");
        assert_eq!(f.gens.list().unwrap().len(), 1);
    }

    #[test]
    fn invalid_names_and_sources_are_refused() {
        let f = fixture();
        f.write_state(b"a", b"b");
        for bad in ["", "../x", ".hidden", "a/b"] {
            assert!(matches!(
                f.gens
                    .record(&[(bad, f.vars.as_path())], GenerationReason::BeforeStart),
                Err(GenerationError::InvalidLogicalName { .. })
            ));
        }
        assert!(
            f.gens
                .record(
                    &[("a", f.vars.as_path()), ("a", f.vars.as_path())],
                    GenerationReason::BeforeStart
                )
                .is_err()
        );
        fs::create_dir(f.tpm_dir.join("subdir")).unwrap();
        let err = f
            .gens
            .record(&f.sources(), GenerationReason::BeforeStart)
            .unwrap_err();
        assert!(
            matches!(err, GenerationError::UnsupportedSource { .. }),
            "{err}"
        );
        // A failed record leaves no generation and no temp dir behind.
        assert!(f.gens.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(f.gens.dir()).unwrap().count(), 1); // only .lock
    }

    #[test]
    fn prune_keeps_last_good_and_pre_restore() {
        let f = fixture();
        let mut ids = Vec::new();
        for i in 0..5 {
            f.write_state(format!("tpm{i}").as_bytes(), b"v");
            ids.push(
                f.gens
                    .record(&f.sources(), GenerationReason::BeforeStart)
                    .unwrap(),
            );
        }
        // #2 is restored (creating pre-restore #6), then two more starts (#7, #8).
        let out = f.gens.restore(ids[1], &f.sources()).unwrap();
        for i in 0..2 {
            f.write_state(format!("after-restore{i}").as_bytes(), b"v");
            ids.push(
                f.gens
                    .record(&f.sources(), GenerationReason::BeforeStart)
                    .unwrap(),
            );
        }
        // Corrupt #7: it does not count as good. (Its `vars` is a hard link shared with the
        // identical generations around it: corrupt this copy alone, not the shared inode.)
        let vars7 = f.gens.dir().join("0000000007/data/vars");
        fs::remove_file(&vars7).unwrap();
        fs::write(&vars7, b"X").unwrap();
        // A leftover of a crashed record.
        fs::create_dir(f.gens.dir().join(".0000000009.tmp-1-1")).unwrap();
        let report = f.gens.prune(3).unwrap();
        let kept: Vec<u64> = report.kept.iter().map(|g| g.0).collect();
        let removed: Vec<u64> = report.removed.iter().map(|g| g.0).collect();
        // Good from newest: 8, 6(pre-restore, good), 5 -> cutoff; 7 corrupt but newer: kept.
        assert_eq!(kept, vec![5, 6, 7, 8]);
        assert_eq!(removed, vec![1, 2, 3, 4]);
        assert_eq!(report.stale_temp_removed, 1);
        assert_eq!(out.pre_restore, GenerationId(6));
        let on_disk: Vec<u64> = f.gens.list().unwrap().iter().map(|g| g.id.0).collect();
        assert_eq!(on_disk, vec![5, 6, 7, 8]);
        // Pre-restore generations survive even a keep of 1; corrupt #7 is older than good #8.
        let report = f.gens.prune(1).unwrap();
        let kept: Vec<u64> = report.kept.iter().map(|g| g.0).collect();
        assert_eq!(kept, vec![6, 8]);
        f.gens.delete(GenerationId(6)).unwrap();
        assert!(matches!(
            f.gens.delete(GenerationId(6)),
            Err(GenerationError::NotFound { .. })
        ));
    }

    #[test]
    fn identical_state_is_stored_once() {
        use std::os::unix::fs::MetadataExt;
        let f = fixture();
        f.write_state(b"tpm", b"vars");
        let first = f
            .gens
            .record(&f.sources(), GenerationReason::AfterStop)
            .unwrap();
        // Same bytes, same kind: the same generation.
        let again = f
            .gens
            .record(&f.sources(), GenerationReason::AfterStop)
            .unwrap();
        assert_eq!(again, first);
        assert_eq!(f.gens.list().unwrap().len(), 1);
        // Same bytes, another kind: a generation of its own whose files share the inodes.
        let before_start = f
            .gens
            .record(&f.sources(), GenerationReason::BeforeStart)
            .unwrap();
        assert_ne!(before_start, first);
        assert_eq!(
            f.gens.manifest(before_start).unwrap().reason,
            GenerationReason::BeforeStart
        );
        let inode = |id: GenerationId| {
            fs::metadata(f.gens.dir().join(id.dir_name()).join("data/vars"))
                .unwrap()
                .ino()
        };
        assert_eq!(inode(first), inode(before_start));
        // Pruning one leaves the other whole.
        f.gens.delete(first).unwrap();
        f.gens.verify(before_start).unwrap();
        // A changed file is copied, the unchanged one still linked.
        f.write_state(b"tpm", b"vars2");
        let changed = f
            .gens
            .record(&f.sources(), GenerationReason::AfterStop)
            .unwrap();
        assert_ne!(inode(changed), inode(before_start));
        let tpm_inode = |id: GenerationId| {
            fs::metadata(
                f.gens
                    .dir()
                    .join(id.dir_name())
                    .join("data/tpm/tpm2-00.permall"),
            )
            .unwrap()
            .ino()
        };
        assert_eq!(tpm_inode(changed), tpm_inode(before_start));
        f.gens.verify(changed).unwrap();
    }

    #[test]
    fn a_crash_loop_cannot_push_out_the_known_good_state() {
        let f = fixture();
        f.write_state(b"good-tpm", b"good-vars");
        let good = f
            .gens
            .record(&f.sources(), GenerationReason::AfterStop)
            .unwrap();
        f.gens.mark_known_good(good).unwrap();
        assert_eq!(f.gens.known_good(), Some(good));
        // Many failing runs, each leaving a different state behind.
        for i in 0..25 {
            f.write_state(format!("bad-tpm-{i}").as_bytes(), b"good-vars");
            f.gens
                .record(&f.sources(), GenerationReason::BeforeStart)
                .unwrap();
            f.write_state(format!("worse-tpm-{i}").as_bytes(), b"good-vars");
            f.gens
                .record(&f.sources(), GenerationReason::AfterStop)
                .unwrap();
            f.gens.prune(3).unwrap();
        }
        let ids: Vec<GenerationId> = f.gens.list().unwrap().iter().map(|g| g.id).collect();
        assert_eq!(ids.len(), 4, "{ids:?}");
        assert_eq!(ids[0], good);
        f.gens.restore(good, &f.sources()).unwrap();
        assert_eq!(
            fs::read(f.tpm_dir.join("tpm2-00.permall")).unwrap(),
            b"good-tpm"
        );
        // Marking a generation that does not exist is refused and changes nothing.
        assert!(f.gens.mark_known_good(GenerationId(999)).is_err());
        assert_eq!(f.gens.known_good(), Some(good));
    }

    #[test]
    fn retire_moves_volume_to_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("volumes/persistent-state-for-vm-abcde");
        fs::create_dir_all(vol.join("swtpm")).unwrap();
        fs::write(vol.join("swtpm/state"), b"tpm").unwrap();
        let archive = tmp.path().join("retired");
        let a1 = retire(&vol, &archive).unwrap();
        assert!(!vol.exists());
        assert_eq!(fs::read(a1.join("swtpm/state")).unwrap(), b"tpm");
        assert!(
            a1.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("persistent-state-for-vm-abcde.retired-")
        );
        fs::create_dir_all(&vol).unwrap();
        let a2 = retire(&vol, &archive).unwrap();
        assert_ne!(a1, a2);
        assert!(retire(&vol, &archive).is_err());
    }

    fn file_name_strategy() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._-]{0,12}"
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn record_restore_roundtrips_arbitrary_contents(
            dir_files in proptest::collection::btree_map(file_name_strategy(), proptest::collection::vec(any::<u8>(), 0..2048), 0..5),
            vars in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4096)),
            garbage in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let f = fixture();
            for (name, data) in &dir_files {
                fs::write(f.tpm_dir.join(name), data).unwrap();
            }
            if let Some(v) = &vars {
                fs::write(&f.vars, v).unwrap();
            }
            let id = f.gens.record(&f.sources(), GenerationReason::BeforeStart).unwrap();
            // Damage everything.
            fs::remove_dir_all(&f.tpm_dir).unwrap();
            fs::create_dir_all(&f.tpm_dir).unwrap();
            fs::write(f.tpm_dir.join("garbage"), &garbage).unwrap();
            fs::write(&f.vars, &garbage).unwrap();
            f.gens.restore(id, &f.sources()).unwrap();
            let mut restored = BTreeMap::new();
            for e in fs::read_dir(&f.tpm_dir).unwrap() {
                let e = e.unwrap();
                restored.insert(e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap());
            }
            prop_assert_eq!(restored, dir_files);
            prop_assert_eq!(fs::read(&f.vars).ok(), vars);
        }
    }
}
