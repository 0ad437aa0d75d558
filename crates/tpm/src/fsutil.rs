//! File-system helpers of this crate: private directories (0700) and private files (0600) through
//! `ferrovirt_storage::atomic` (temp file + fsync + rename + directory fsync), plus what only the
//! TPM code needs: an exclusive lock, a no-clobber atomic publish, scratch copies.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ferrovirt_storage::atomic;

/// Mode of every directory this crate creates.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every file this crate writes or adopts.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

fn into_io(error: ferrovirt_storage::AtomicError) -> io::Error {
    io::Error::other(error)
}

/// Creates `dir` (and missing parents) and sets the leaf to 0700 (also when it existed).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    atomic::create_dir_private(dir).map_err(into_io)?;
    fs::set_permissions(dir, Permissions::from_mode(PRIVATE_DIR_MODE))
}

/// fsyncs a directory so that renames/creations inside it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    atomic::fsync_dir(dir).map_err(into_io)
}

/// Writes `contents` to `path` crash-safely as a 0600 file: a reader sees either the old or the
/// new file.
pub fn write_private_file_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    atomic::write_file(path, contents, PRIVATE_FILE_MODE).map_err(into_io)
}

/// Writes a throwaway private file (0600, created new): no fsync, for scratch copies that are
/// deleted after use and never need to survive a crash.
pub fn write_private_scratch_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    file.write_all(contents)
}

/// An exclusive advisory lock on `path` (created 0600), held until the returned file is dropped.
pub fn lock_exclusive(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(file)
}

/// Publishes `staged` at `target` atomically without ever replacing an existing `target`
/// (hard link, then unlink of the staged name; both in the same file system), then fsyncs the
/// target's directory. Fails with `AlreadyExists` if `target` exists.
pub fn publish_no_clobber(staged: &Path, target: &Path) -> io::Result<()> {
    File::open(staged)?.sync_all()?;
    fs::hard_link(staged, target)?;
    fs::remove_file(staged)?;
    sync_dir(parent_of(target)?)
}

/// Sets 0600 on every regular file directly inside `dir` and fsyncs each of them and `dir`.
pub fn tighten_and_sync_files(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let path = entry.path();
            fs::set_permissions(&path, Permissions::from_mode(PRIVATE_FILE_MODE))?;
            File::open(&path)?.sync_all()?;
        }
    }
    sync_dir(dir)
}

fn parent_of(path: &Path) -> io::Result<&Path> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        _ => Ok(Path::new(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn atomic_write_is_private_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.conf");
        write_private_file_atomic(&p, b"one").unwrap();
        write_private_file_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn publish_never_clobbers() {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("staged");
        let target = dir.path().join("target");
        fs::write(&target, b"precious").unwrap();
        fs::write(&staged, b"new").unwrap();
        let err = publish_no_clobber(&staged, &target).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&target).unwrap(), b"precious");
    }

    #[test]
    fn private_dir_mode() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("x/y");
        create_private_dir(&d).unwrap();
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
    }
}
