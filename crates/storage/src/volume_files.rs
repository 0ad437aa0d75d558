//! The files of a backend-storage volume that a live migration carries beside QEMU's streams.
//!
//! QEMU's migration stream carries the vTPM's state (swtpm's state blobs) and the block mirror
//! carries the VARS; the rest of the volume is files no QEMU knows: `meta/` (KubeVirt's markers,
//! ferrovirt's copies of the EK certificates and the boot profile) and `swtpm-localca/` (the local
//! CA that issued this TPM's EK certificates, which the `tpm/ek` view verifies them against).
//! The source packs them ([`pack`]: a gzipped tar, made as an export makes one), the destination
//! unpacks them into a staging dir of the receiver's runtime dir ([`stage`]) and moves them into
//! its volume once the migration has arrived ([`install`]).
//!
//! Host-local files never travel: the caller names them in `keep_local` (the data-key record in
//! `meta/`, wrapped by each host's own key-encryption key), and [`install`] never writes them,
//! whatever a source sent.

use std::fs;
use std::path::{Path, PathBuf};

use crate::atomic;
use crate::backend::{META_DIR, SWTPM_LOCALCA_DIR};
use crate::export::{self, ExportError, ExportTree};

/// The staging dir's name in the receiver's runtime dir.
pub const STAGING_DIR: &str = "incoming-volume";
/// The most bytes a packed set of files may have (a CA and a few certificates are KiBs).
pub const MAX_PACKED_BYTES: usize = 4 << 20;

/// The top-level dirs of a volume whose files travel this way.
const CARRIED: &[&str] = &[META_DIR, SWTPM_LOCALCA_DIR];

/// Whether the file at `path` (relative to the volume root) travels.
fn carried(path: &str, keep_local: &[&str]) -> bool {
    let top = path.split('/').next().unwrap_or_default();
    CARRIED.contains(&top) && path.contains('/') && !keep_local.contains(&path)
}

/// The regular files of `tree` that travel (see [`carried`]).
fn carried_files<'a>(
    tree: &'a ExportTree,
    keep_local: &'a [&str],
) -> impl Iterator<Item = &'a export::ExportEntry> + 'a {
    tree.entries()
        .iter()
        .filter(move |e| e.kind.size().is_some() && carried(&e.path, keep_local))
}

/// The carried files of the volume at `root` as a gzipped tar (`./meta/...`,
/// `./swtpm-localca/...`), without the files named in `keep_local`.
pub fn pack(root: &Path, keep_local: &[&str]) -> Result<Vec<u8>, ExportError> {
    let tree = ExportTree::of_directory(root)?;
    let files: Vec<(String, PathBuf)> = carried_files(&tree, keep_local)
        .map(|e| (e.path.clone(), root.join(&e.path)))
        .collect();
    let packed = ExportTree::from_files(&files)?.write_tar_gz(Vec::new())?;
    if packed.len() > MAX_PACKED_BYTES {
        return Err(ExportError::BadEntry {
            entry: root.display().to_string(),
            reason: format!(
                "its meta/ and swtpm-localca/ pack to {} bytes, more than the {MAX_PACKED_BYTES} a state volume's files may have",
                packed.len()
            ),
        });
    }
    Ok(packed)
}

/// Unpacks `packed` into `runtime_dir/incoming-volume/` (replacing what an earlier attempt
/// left); returns the relative paths of the files.
pub fn stage(packed: &[u8], runtime_dir: &Path) -> Result<Vec<String>, ExportError> {
    let staging = runtime_dir.join(STAGING_DIR);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|source| ExportError::Io {
            action: "remove",
            path: staging.clone(),
            source,
        })?;
    }
    atomic::create_dir_private(&staging)?;
    Ok(export::unpack_archive(packed, &staging)?.files)
}

/// Moves the staged files of `runtime_dir` into the volume at `root`, each written crash-safely
/// (temp file, fsync, rename, fsync of the dir), only under `meta/` and `swtpm-localca/` and never
/// a file named in `keep_local`; returns the relative paths written. Nothing staged: nothing to do.
pub fn install(
    runtime_dir: &Path,
    root: &Path,
    keep_local: &[&str],
) -> Result<Vec<String>, ExportError> {
    let staging = runtime_dir.join(STAGING_DIR);
    if !staging.is_dir() {
        return Ok(Vec::new());
    }
    let tree = ExportTree::of_directory(&staging)?;
    let mut written = Vec::new();
    for entry in carried_files(&tree, keep_local) {
        let target = root.join(&entry.path);
        if let Some(parent) = target.parent() {
            atomic::create_dir_private(parent)?;
        }
        atomic::copy_file(&staging.join(&entry.path), &target, entry.mode & 0o777)?;
        written.push(entry.path.clone());
    }
    Ok(written)
}

/// Removes the carried files from the volume at `root` (a failed incoming migration: the volume
/// held nothing before), except those named in `keep_local`.
pub fn remove_installed(root: &Path, keep_local: &[&str]) {
    let Ok(tree) = ExportTree::of_directory(root) else {
        return;
    };
    for entry in carried_files(&tree, keep_local) {
        let _ = fs::remove_file(root.join(&entry.path));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const KEY: &str = "meta/state-key.json";

    fn source() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("meta/ferrovirt/ek")).unwrap();
        fs::create_dir_all(root.join("swtpm/0f0e/tpm2")).unwrap();
        fs::create_dir_all(root.join("swtpm-localca")).unwrap();
        fs::create_dir_all(root.join("nvram")).unwrap();
        fs::write(root.join("meta/ferrovirt/ek/rsa.der"), b"ek cert").unwrap();
        fs::write(root.join(KEY), b"wrapped by host a").unwrap();
        fs::write(root.join("swtpm/0f0e/tpm2/tpm2-00.permall"), b"tpm state").unwrap();
        fs::write(root.join("swtpm-localca/signkey.pem"), b"ca key").unwrap();
        fs::write(root.join("nvram/vm_VARS.fd"), b"vars").unwrap();
        dir
    }

    #[test]
    fn meta_and_the_local_ca_travel_but_not_the_key_record_or_the_streamed_state() {
        let from = source();
        let packed = pack(from.path(), &[KEY]).unwrap();
        let runtime = tempfile::tempdir().unwrap();
        let mut staged = stage(&packed, runtime.path()).unwrap();
        staged.sort();
        assert_eq!(
            staged,
            ["meta/ferrovirt/ek/rsa.der", "swtpm-localca/signkey.pem"]
        );
        let to = tempfile::tempdir().unwrap();
        fs::create_dir_all(to.path().join("meta")).unwrap();
        fs::write(to.path().join(KEY), b"wrapped by host b").unwrap();
        let written = install(runtime.path(), to.path(), &[KEY]).unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(
            fs::read(to.path().join("swtpm-localca/signkey.pem")).unwrap(),
            b"ca key"
        );
        assert_eq!(
            fs::read(to.path().join("meta/ferrovirt/ek/rsa.der")).unwrap(),
            b"ek cert"
        );
        assert_eq!(fs::read(to.path().join(KEY)).unwrap(), b"wrapped by host b");
        assert!(!to.path().join("swtpm").exists());
        assert!(!to.path().join("nvram").exists());

        remove_installed(to.path(), &[KEY]);
        assert!(!to.path().join("swtpm-localca/signkey.pem").exists());
        assert!(!to.path().join("meta/ferrovirt/ek/rsa.der").exists());
        assert_eq!(fs::read(to.path().join(KEY)).unwrap(), b"wrapped by host b");
    }

    #[test]
    fn a_key_record_a_source_sends_anyway_is_never_installed() {
        let from = source();
        let packed = pack(from.path(), &[]).unwrap();
        let runtime = tempfile::tempdir().unwrap();
        assert!(
            stage(&packed, runtime.path())
                .unwrap()
                .contains(&KEY.to_owned())
        );
        let to = tempfile::tempdir().unwrap();
        fs::create_dir_all(to.path().join("meta")).unwrap();
        fs::write(to.path().join(KEY), b"wrapped by host b").unwrap();
        install(runtime.path(), to.path(), &[KEY]).unwrap();
        assert_eq!(fs::read(to.path().join(KEY)).unwrap(), b"wrapped by host b");
    }

    #[test]
    fn nothing_staged_installs_nothing() {
        let runtime = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        assert!(
            install(runtime.path(), to.path(), &[KEY])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn staging_again_replaces_an_earlier_attempt() {
        let from = source();
        let runtime = tempfile::tempdir().unwrap();
        fs::create_dir_all(runtime.path().join(STAGING_DIR).join("meta")).unwrap();
        fs::write(runtime.path().join(STAGING_DIR).join("meta/stale"), b"x").unwrap();
        stage(&pack(from.path(), &[KEY]).unwrap(), runtime.path()).unwrap();
        assert!(!runtime.path().join(STAGING_DIR).join("meta/stale").exists());
    }
}
