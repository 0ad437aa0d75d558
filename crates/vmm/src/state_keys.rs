//! Encryption at rest of one VM's persistent state, on top of `ferrovirt_keys`: which data key
//! (DEK) unlocks a volume, how the TPM state and the VARS file are read and written through it,
//! and the one way out in plain text ([`plain_state_for_export`]).
//!
//! - The DEK's wrapped record lives in the volume (`meta/ferrovirt/state-key.json`), so it is
//!   recorded with every generation and snapshot beside the files it unlocks.
//! - The TPM state is encrypted by swtpm itself (AES-256-CBC + HMAC) with the DEK.
//! - The VARS file in the volume is sealed (AES-256-GCM, `ferrovirt_keys::sealed`); QEMU gets a
//!   plain copy in the run's private runtime dir, which the engine seals back into the volume
//!   while the VM runs ([`VarsSync`]) and at the stop.
//! - A plain state (from before encryption, or from `--state-encryption none`) is encrypted at the
//!   next start, after the before-start generation recorded it as it was.
//! - A missing or wrong key fails closed: nothing is written, and the error says which key, where
//!   and how to fix it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ferrovirt_keys::{DataKey, KeyError, Keyring, WrappedKey, sealed};
use ferrovirt_storage::StateVolume;
use ferrovirt_tpm::StateKey;
use zeroize::Zeroizing;

/// The purpose sealed VARS files are bound to.
pub const VARS_PURPOSE: &str = "uefi-vars";
/// Logical name of the wrapped-key record in a generation or snapshot.
pub const STATE_KEY: &str = "state-key";
/// How often a running VM's plain VARS copy is compared with what was last sealed.
pub const VARS_SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// A VM's state cannot be opened or written with its key.
#[derive(Debug, thiserror::Error)]
pub enum StateKeyError {
    /// The data key cannot be unwrapped (missing or wrong KEK, damaged record, KMS failure).
    #[error("the VM {vm}'s state is encrypted and its data key cannot be unlocked: {source}")]
    Unlock {
        vm: String,
        #[source]
        source: Box<KeyError>,
    },
    /// A sealed VARS file does not open with the VM's key.
    #[error(
        "the VM {vm}'s UEFI variable store {path} cannot be decrypted: {source}. It was not \
         changed; roll back to a good generation (`ferrovirt state list {vm}`) or restore the \
         key record that belongs to it"
    )]
    Vars {
        vm: String,
        path: PathBuf,
        #[source]
        source: sealed::SealError,
    },
    /// A file is encrypted but the volume has no key record.
    #[error(
        "{path} is encrypted, but the volume has no key record ({record}); restore the record \
         from the generation or snapshot the state came from. Nothing was changed"
    )]
    NoRecord { path: PathBuf, record: PathBuf },
    /// Reading or writing a file failed.
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// The record's path in `volume`.
pub fn record_path(volume: &StateVolume) -> PathBuf {
    WrappedKey::path_in(&volume.meta_dir())
}

/// The volume's data key: unwrapped from its record; `None` when the volume has no record (a
/// plain state). Never creates one.
pub fn unlock(
    vm: &str,
    volume: &StateVolume,
    keyring: &Keyring,
) -> Result<Option<DataKey>, StateKeyError> {
    unlock_record(vm, &record_path(volume), keyring)
}

/// The data key of the record at `path` (a volume's, or a snapshot's or generation's copy);
/// `None` when there is no record there.
pub fn unlock_record(
    vm: &str,
    path: &Path,
    keyring: &Keyring,
) -> Result<Option<DataKey>, StateKeyError> {
    let unlock_error = |source| StateKeyError::Unlock {
        vm: vm.to_owned(),
        source: Box::new(source),
    };
    let Some(record) = WrappedKey::read(path).map_err(unlock_error)? else {
        return Ok(None);
    };
    keyring
        .unwrap(&record, path)
        .map(Some)
        .map_err(unlock_error)
}

/// The volume's data key; a new one (its record written crash-safely first) when it has none
/// and the keyring encrypts. `None`: the state stays plain (`--state-encryption none`).
pub fn unlock_or_create(
    vm: &str,
    volume: &StateVolume,
    keyring: &Keyring,
) -> Result<Option<DataKey>, StateKeyError> {
    if let Some(key) = unlock(vm, volume, keyring)? {
        return Ok(Some(key));
    }
    if !keyring.encrypts() {
        return Ok(None);
    }
    let unlock_error = |source| StateKeyError::Unlock {
        vm: vm.to_owned(),
        source: Box::new(source),
    };
    let (key, record) = keyring.new_data_key().map_err(unlock_error)?;
    record.write(&record_path(volume)).map_err(unlock_error)?;
    tracing::info!(vm, data_key = %key.id(), "created the data key of the VM's state");
    Ok(Some(key))
}

/// swtpm's key for the TPM state.
pub fn tpm_key(key: &DataKey) -> StateKey {
    StateKey::new(*key.as_bytes())
}

/// The swtpm key a TPM state file needs: `Some` when it is encrypted (an error without a data
/// key), `None` when it is plain.
pub fn tpm_key_for(
    state_file: &Path,
    key: Option<&DataKey>,
    record: &Path,
) -> Result<Option<StateKey>, StateKeyError> {
    match (tpm_state_is_encrypted(state_file), key) {
        (false, _) => Ok(None),
        (true, Some(key)) => Ok(Some(tpm_key(key))),
        (true, None) => Err(StateKeyError::NoRecord {
            path: state_file.to_path_buf(),
            record: record.to_path_buf(),
        }),
    }
}

/// Whether a TPM state file is encrypted (swtpm's encrypted header; a missing file is not).
pub fn tpm_state_is_encrypted(state_file: &Path) -> bool {
    let mut header = [0u8; 6];
    match std::fs::File::open(state_file) {
        Ok(mut file) => {
            use std::io::Read;
            file.read_exact(&mut header).is_ok() && ferrovirt_tpm::is_encrypted_state(&header)
        }
        Err(_) => false,
    }
}

/// The plain content of a VARS file at rest: opened with the key when sealed, as it is when
/// plain (an error when sealed and there is no key).
pub fn read_vars(
    vm: &str,
    path: &Path,
    key: Option<&DataKey>,
    record: &Path,
) -> Result<Zeroizing<Vec<u8>>, StateKeyError> {
    let bytes = std::fs::read(path).map_err(|e| StateKeyError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !sealed::is_sealed(&bytes) {
        return Ok(Zeroizing::new(bytes));
    }
    let Some(key) = key else {
        return Err(StateKeyError::NoRecord {
            path: path.to_path_buf(),
            record: record.to_path_buf(),
        });
    };
    sealed::open(key, VARS_PURPOSE, &bytes).map_err(|source| StateKeyError::Vars {
        vm: vm.to_owned(),
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a VARS file at rest crash-safely: sealed with the key, plain without one.
pub fn write_vars(path: &Path, key: Option<&DataKey>, plain: &[u8]) -> Result<(), StateKeyError> {
    let io = |reason: String| StateKeyError::Io {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = match key {
        Some(key) => sealed::seal(key, VARS_PURPOSE, plain).map_err(|e| io(e.to_string()))?,
        None => plain.to_vec(),
    };
    ferrovirt_storage::atomic::write_file(path, &bytes, 0o600).map_err(|e| io(e.to_string()))
}

/// Whether a VARS file at rest is sealed.
pub fn vars_is_sealed(path: &Path) -> bool {
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| {
            use std::io::Read;
            f.read_exact(&mut magic)
        })
        .is_ok()
        && sealed::is_sealed(&magic)
}

/// Keeps the sealed VARS in the volume up to date with the plain copy QEMU writes in the runtime
/// dir: [`VarsSync::sync`] seals it again when its size or mtime changed since the last seal, and
/// [`VarsSync::seal_if_changed`] (the stop's last seal) only when its content differs from what the
/// sealed file holds.
#[derive(Debug)]
pub struct VarsSync {
    /// The plain copy in the runtime dir.
    pub plain: PathBuf,
    /// The sealed file in the volume.
    pub sealed: PathBuf,
    key: DataKey,
    last: Option<(u64, SystemTime)>,
    /// What the sealed file holds, when known.
    sealed_content: SealedContent,
}

/// What a sync knows of the plain content its sealed file holds.
#[derive(Debug)]
enum SealedContent {
    /// Nothing: the stop seals whatever the plain copy holds.
    Unknown,
    /// The bytes the start gave QEMU, not yet digested (the digest is taken off the start's
    /// critical path, by [`VarsSync::learn_sealed_content`]).
    Bytes(Zeroizing<Vec<u8>>),
    /// The SHA-256 of the plain bytes last sealed.
    Digest([u8; 32]),
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

impl VarsSync {
    /// A sync of `plain` into `sealed`, which hold the same content now (not known to this sync:
    /// its first seal always writes).
    pub fn new(plain: PathBuf, sealed: PathBuf, key: DataKey) -> Self {
        let last = stamp(&plain);
        Self {
            plain,
            sealed,
            key,
            last,
            sealed_content: SealedContent::Unknown,
        }
    }

    /// A sync of `plain` into `sealed`, which both hold `content` now (the plain bytes the start
    /// opened from the sealed file and wrote for QEMU): a stop that finds the plain copy still
    /// holding them writes nothing.
    pub fn with_content(
        plain: PathBuf,
        sealed: PathBuf,
        key: DataKey,
        content: Zeroizing<Vec<u8>>,
    ) -> Self {
        Self {
            sealed_content: SealedContent::Bytes(content),
            ..Self::new(plain, sealed, key)
        }
    }

    /// Digests the content handed over at the start (kept as bytes until then); cheap after.
    pub fn learn_sealed_content(&mut self) {
        if let SealedContent::Bytes(bytes) = &self.sealed_content {
            self.sealed_content = SealedContent::Digest(digest(bytes));
        }
    }

    /// Seals the plain copy into the volume if it changed; `true` when it wrote.
    pub fn sync(&mut self) -> Result<bool, StateKeyError> {
        let now = stamp(&self.plain);
        if now.is_none() || now == self.last {
            return Ok(false);
        }
        self.seal_now()?;
        self.last = now;
        Ok(true)
    }

    /// Seals the plain copy into the volume now.
    pub fn seal_now(&mut self) -> Result<(), StateKeyError> {
        let plain = self.read_plain()?;
        let content = digest(&plain);
        self.seal(&plain, content)
    }

    /// Seals the plain copy into the volume unless the sealed file is known to hold its content
    /// already (then it was written crash-safely, synced, before); `true` when it wrote. The
    /// stop's last seal: a run that changed no variable since the last seal writes nothing.
    pub fn seal_if_changed(&mut self) -> Result<bool, StateKeyError> {
        let plain = self.read_plain()?;
        self.learn_sealed_content();
        let content = digest(&plain);
        if let SealedContent::Digest(sealed) = &self.sealed_content
            && *sealed == content
        {
            return Ok(false);
        }
        self.seal(&plain, content)?;
        Ok(true)
    }

    fn read_plain(&self) -> Result<Zeroizing<Vec<u8>>, StateKeyError> {
        Ok(Zeroizing::new(std::fs::read(&self.plain).map_err(|e| {
            StateKeyError::Io {
                path: self.plain.clone(),
                reason: e.to_string(),
            }
        })?))
    }

    fn seal(&mut self, plain: &[u8], content: [u8; 32]) -> Result<(), StateKeyError> {
        // Forgotten first: if the write fails half-way, the sealed file's content is not known.
        self.sealed_content = SealedContent::Unknown;
        write_vars(&self.sealed, Some(&self.key), plain)?;
        self.sealed_content = SealedContent::Digest(content);
        self.last = stamp(&self.plain);
        Ok(())
    }
}

fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// A VM's state in plain text, for an export to an authorised user (a KubeVirt volume holds
/// plain state): the TPM state file (`tpm2-00.permall`) and the VARS file. This is the one
/// function through which other code reads a persistent state decrypted. The TPM state is
/// re-encrypted to plain through swtpm in a private (0700) dir under `scratch` (removed before
/// this returns; nothing is written next to the encrypted state), the VARS opened in memory.
/// A field is `Some` only for a file that is encrypted at rest: a plain file is served as it is.
pub struct PlainState {
    pub tpm_state: Option<Zeroizing<Vec<u8>>>,
    pub vars: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for PlainState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainState")
            .field("tpm_state", &self.tpm_state.as_ref().map(|b| b.len()))
            .field("vars", &self.vars.as_ref().map(|b| b.len()))
            .finish()
    }
}

/// The state files an export reads: a volume's own, or a snapshot's copies of them.
#[derive(Debug, Clone, Copy)]
pub struct ExportedStateFiles<'a> {
    /// The wrapped data key's record (`meta/ferrovirt/state-key.json`, or a snapshot's
    /// `state-key` copy).
    pub record: &'a Path,
    /// The TPM state file (`tpm2-00.permall`, or a snapshot's `tpm-state`), if there is one.
    pub tpm_state: Option<&'a Path>,
    /// The VARS file at rest, if there is one.
    pub vars: Option<&'a Path>,
}

/// See [`PlainState`]. The data key is unlocked only when a file is encrypted (a plain state
/// exports without any key); a missing or wrong key fails closed. Nothing at rest is changed.
pub fn plain_state_for_export(
    vm: &str,
    files: ExportedStateFiles<'_>,
    keyring: &Keyring,
    scratch: &Path,
) -> Result<PlainState, crate::state::StateFault> {
    let tpm_file = files.tpm_state.filter(|f| f.is_file());
    let vars_file = files.vars.filter(|f| f.is_file());
    let tpm_encrypted = tpm_file.is_some_and(tpm_state_is_encrypted);
    let vars_sealed = vars_file.is_some_and(vars_is_sealed);
    if !tpm_encrypted && !vars_sealed {
        return Ok(PlainState {
            tpm_state: None,
            vars: None,
        });
    }
    let key = unlock_record(vm, files.record, keyring)?;
    let tpm_state = match tpm_file.filter(|_| tpm_encrypted) {
        Some(file) => Some(plain_tpm_state(
            vm,
            file,
            key.as_ref(),
            files.record,
            scratch,
        )?),
        None => None,
    };
    let vars = match vars_file.filter(|_| vars_sealed) {
        Some(path) => Some(read_vars(vm, path, key.as_ref(), files.record)?),
        None => None,
    };
    Ok(PlainState { tpm_state, vars })
}

/// The plain bytes of an encrypted TPM state file, through swtpm in a private scratch dir. A
/// volume's `tpm2-00.permall` is read in its own dir (so a suspended TPM's volatile state there is
/// refused); a file under another name (a snapshot's copy) is copied into the scratch dir first.
fn plain_tpm_state(
    vm: &str,
    file: &Path,
    key: Option<&DataKey>,
    record: &Path,
    scratch: &Path,
) -> Result<Zeroizing<Vec<u8>>, crate::state::StateFault> {
    let unusable = |source| crate::state::StateFault::TpmUnusable {
        source,
        vm: vm.to_owned(),
        generation: None,
    };
    let state_key = tpm_key_for(file, key, record)?;
    let work = private_scratch(scratch)?;
    let in_place = file.file_name() == Some(std::ffi::OsStr::new(ferrovirt_tpm::STATE_FILE));
    let dir = match file.parent() {
        Some(parent) if in_place => parent.to_path_buf(),
        _ => {
            let copy_dir = work.path().join("state");
            let bytes = Zeroizing::new(std::fs::read(file).map_err(|e| StateKeyError::Io {
                path: file.to_path_buf(),
                reason: e.to_string(),
            })?);
            ferrovirt_storage::atomic::create_dir_private(&copy_dir).map_err(|e| {
                StateKeyError::Io {
                    path: copy_dir.clone(),
                    reason: e.to_string(),
                }
            })?;
            let copy = copy_dir.join(ferrovirt_tpm::STATE_FILE);
            ferrovirt_storage::atomic::write_file(&copy, &bytes, 0o600).map_err(|e| {
                StateKeyError::Io {
                    path: copy.clone(),
                    reason: e.to_string(),
                }
            })?;
            copy_dir
        }
    };
    let plain =
        ferrovirt_tpm::reencrypt_state(&dir, state_key.as_ref(), None, &work.path().join("tpm"))
            .map_err(unusable)?;
    Ok(Zeroizing::new(plain))
}

/// A private (0700) scratch dir under `base`, removed on drop.
pub fn private_scratch(base: &Path) -> Result<tempfile::TempDir, StateKeyError> {
    let io = |reason: String| StateKeyError::Io {
        path: base.to_path_buf(),
        reason,
    };
    ferrovirt_storage::atomic::create_dir_private(base).map_err(|e| io(e.to_string()))?;
    tempfile::Builder::new()
        .prefix(".ferrovirt-keys-")
        .tempdir_in(base)
        .map_err(|e| io(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// A runtime dir with a plain copy and a volume file sealed from the same bytes.
    fn setup(content: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf, DataKey) {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("VARS.fd");
        let sealed = dir.path().join("vm_VARS.fd");
        let key = DataKey::generate().unwrap();
        std::fs::write(&plain, content).unwrap();
        write_vars(&sealed, Some(&key), content).unwrap();
        (dir, plain, sealed, key)
    }

    fn opened(sealed: &Path, key: &DataKey) -> Vec<u8> {
        sealed::open(key, VARS_PURPOSE, &std::fs::read(sealed).unwrap())
            .unwrap()
            .to_vec()
    }

    /// The sealed file's identity: an atomic write replaces it with a new inode.
    fn inode(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn a_stop_that_changed_no_variable_writes_nothing() {
        let content = vec![0x5a; 64 * 1024];
        let (_dir, plain, sealed, key) = setup(&content);
        let before = inode(&sealed);
        let mut sync =
            VarsSync::with_content(plain, sealed.clone(), key.clone(), Zeroizing::new(content));
        sync.learn_sealed_content();
        assert!(!sync.seal_if_changed().unwrap());
        assert_eq!(inode(&sealed), before, "the sealed file was rewritten");
    }

    #[test]
    fn a_stop_seals_changed_variables_even_before_the_content_was_digested() {
        let content = vec![0x5a; 64 * 1024];
        let (_dir, plain, sealed, key) = setup(&content);
        let mut sync = VarsSync::with_content(
            plain.clone(),
            sealed.clone(),
            key.clone(),
            Zeroizing::new(content),
        );
        // Same size, one byte changed: what an mtime check in the same clock tick would miss.
        let mut changed = std::fs::read(&plain).unwrap();
        changed[4096] = 0xa5;
        std::fs::write(&plain, &changed).unwrap();
        assert!(sync.seal_if_changed().unwrap());
        assert_eq!(opened(&sealed, &key), changed);
        // Sealed now: the next stop has nothing to write.
        let after = inode(&sealed);
        assert!(!sync.seal_if_changed().unwrap());
        assert_eq!(inode(&sealed), after);
    }

    #[test]
    fn a_sync_that_does_not_know_the_sealed_content_always_seals_at_the_stop() {
        let content = vec![0x11; 4096];
        let (_dir, plain, sealed, key) = setup(&content);
        let before = inode(&sealed);
        let mut sync = VarsSync::new(plain, sealed.clone(), key.clone());
        assert!(sync.seal_if_changed().unwrap());
        assert_ne!(inode(&sealed), before);
        assert_eq!(opened(&sealed, &key), content);
    }

    #[test]
    fn a_periodic_seal_is_remembered_by_the_stop() {
        let (_dir, plain, sealed, key) = setup(&[0x22; 4096]);
        let mut sync = VarsSync::new(plain.clone(), sealed.clone(), key.clone());
        std::fs::write(&plain, [0x33; 8192]).unwrap();
        assert!(sync.sync().unwrap());
        assert_eq!(opened(&sealed, &key), vec![0x33; 8192]);
        let after = inode(&sealed);
        assert!(!sync.seal_if_changed().unwrap());
        assert_eq!(inode(&sealed), after);
    }
}
