//! Crash-safe filesystem primitives.
//!
//! Every write follows the same recipe: write a temporary file in the *same directory* as the
//! target (so the rename cannot cross filesystems), `fsync` it, `rename` it over the target, then
//! `fsync` the directory so the rename itself is durable. After a crash a reader sees either the
//! complete old file or the complete new one, never a mix; at worst a stale `.*.tmp-*` file is
//! left behind, which [`remove_stale_temp_files`] cleans up.
//!
//! Whole directories are swapped with [`replace_dir`]; see its documentation for exactly what is
//! atomic.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode for state files (TPM state, VARS, manifests): owner read/write only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode for state and runtime directories: owner only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Marker in the names of temporary files and directories made by this module.
const TEMP_MARKER: &str = ".tmp-";

/// The OS error of a storage fault (no space, quota, I/O error, read-only filesystem) somewhere
/// in `error`'s chain of sources: the filesystem failed, not the input.
pub fn storage_fault(error: &(dyn std::error::Error + 'static)) -> Option<io::Error> {
    let faults = [
        rustix::io::Errno::NOSPC,
        rustix::io::Errno::DQUOT,
        rustix::io::Errno::IO,
        rustix::io::Errno::ROFS,
    ];
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
            .filter(|code| faults.iter().any(|f| f.raw_os_error() == *code))
        {
            return Some(io::Error::from_raw_os_error(code));
        }
        next = e.source();
    }
    None
}

/// Whether `error` says the filesystem is full (ENOSPC or EDQUOT).
pub fn is_full(error: &io::Error) -> bool {
    error.raw_os_error().is_some_and(|code| {
        code == rustix::io::Errno::NOSPC.raw_os_error()
            || code == rustix::io::Errno::DQUOT.raw_os_error()
    })
}

/// An I/O failure with the operation and the path it concerned.
#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    #[error("cannot {operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} has no parent directory or no file name; give a path like /dir/file (a crash-safe \
         write needs a sibling temporary file)"
    )]
    NoParent { path: PathBuf },
    #[error(
        "{path} exists but is not a directory; move it away or choose another path for the directory"
    )]
    NotADirectory { path: PathBuf },
    #[error(
        "{path} is a symbolic link or special file; only regular files and directories are copied \
         (state directories must not contain links)"
    )]
    UnsupportedFileType { path: PathBuf },
    #[error(
        "{path} belongs to uid {owner}, not to this process (uid {us}): ferrovirt keeps VM state \
         and secrets there, so it must own it; choose another directory or `chown` it"
    )]
    NotOurs { path: PathBuf, owner: u32, us: u32 },
}

impl AtomicError {
    pub(crate) fn io(operation: &'static str, path: &Path, source: io::Error) -> Self {
        AtomicError::Io {
            operation,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Builds a closure that wraps an [`io::Error`] with an operation and path.
pub(crate) fn ctx<'a>(
    operation: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> AtomicError + 'a {
    move |source| AtomicError::io(operation, path, source)
}

fn parent_and_name(path: &Path) -> Result<(PathBuf, OsString), AtomicError> {
    let name = path.file_name().ok_or_else(|| AtomicError::NoParent {
        path: path.to_path_buf(),
    })?;
    let parent = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
        Some(p) => p.to_path_buf(),
        None => {
            return Err(AtomicError::NoParent {
                path: path.to_path_buf(),
            });
        }
    };
    Ok((parent, name.to_os_string()))
}

/// A name for a temporary sibling of `name`: `.<name>.tmp-<pid>-<counter>`. Unique within this
/// process; `create_new` guards against other processes.
pub(crate) fn temp_sibling(parent: &Path, name: &OsString) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!("{TEMP_MARKER}{}-{n}", std::process::id()));
    parent.join(temp)
}

/// Returns true when `name` looks like a temporary file or directory of this module.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARKER)
}

/// `fsync` a directory, making renames and creations inside it durable.
pub fn fsync_dir(dir: &Path) -> Result<(), AtomicError> {
    let handle = File::open(dir).map_err(ctx("open directory for fsync", dir))?;
    handle.sync_all().map_err(ctx("fsync directory", dir))
}

/// `fsync` a regular file's data and metadata.
pub fn fsync_file(path: &Path) -> Result<(), AtomicError> {
    let handle = File::open(path).map_err(ctx("open file for fsync", path))?;
    handle.sync_all().map_err(ctx("fsync file", path))
}

/// Crash-safely replaces `path` with `bytes`, giving the file `mode` (e.g. `0o600`).
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AtomicError> {
    write_file_with(path, mode, |file| file.write_all(bytes))
}

/// Crash-safely replaces `path` with whatever `fill` writes into the temporary file.
///
/// If `fill` (or any later step before the rename) fails, the temporary file is removed and the
/// old `path` is untouched.
pub fn write_file_with<F>(path: &Path, mode: u32, fill: F) -> Result<(), AtomicError>
where
    F: FnOnce(&mut File) -> io::Result<()>,
{
    let (parent, name) = parent_and_name(path)?;
    let temp = temp_sibling(&parent, &name);
    let result = write_temp_then_rename(&temp, path, mode, fill);
    if result.is_err() {
        // Best effort: the temp file is garbage either way and never read.
        let _ = fs::remove_file(&temp);
        return result;
    }
    fsync_dir(&parent)
}

fn write_temp_then_rename<F>(
    temp: &Path,
    path: &Path,
    mode: u32,
    fill: F,
) -> Result<(), AtomicError>
where
    F: FnOnce(&mut File) -> io::Result<()>,
{
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(temp)
        .map_err(ctx("create temporary file", temp))?;
    // The umask may have masked bits off `mode`; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(ctx("set permissions of", temp))?;
    fill(&mut file).map_err(ctx("write temporary file", temp))?;
    file.flush().map_err(ctx("flush temporary file", temp))?;
    file.sync_all().map_err(ctx("fsync temporary file", temp))?;
    drop(file);
    fs::rename(temp, path).map_err(ctx("rename temporary file into place as", path))
}

/// Crash-safely copies `src` to `dst` (streamed, any size), giving `dst` the mode `mode`.
/// Returns the number of bytes copied.
pub fn copy_file(src: &Path, dst: &Path, mode: u32) -> Result<u64, AtomicError> {
    let mut input = File::open(src).map_err(ctx("open source file", src))?;
    let meta = input.metadata().map_err(ctx("stat source file", src))?;
    if !meta.is_file() {
        return Err(AtomicError::UnsupportedFileType {
            path: src.to_path_buf(),
        });
    }
    let mut copied = 0u64;
    write_file_with(dst, mode, |out| {
        copied = io::copy(&mut input, out)?;
        Ok(())
    })?;
    Ok(copied)
}

/// Reads a whole file, with the path in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>, AtomicError> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(ctx("read", path))?;
    Ok(buf)
}

/// Prepares a directory that only this process's user may enter (a data dir, a runtime base):
/// creates it 0700 when missing; an existing one must be a real directory (not a symlink) owned
/// by our effective uid, and a looser mode is tightened to 0700. Refuses a directory someone else
/// owns rather than trusting what it holds.
pub fn prepare_private_dir(path: &Path) -> Result<(), AtomicError> {
    use std::os::unix::fs::MetadataExt;
    create_dir_private(path)?;
    let meta = fs::symlink_metadata(path).map_err(ctx("stat", path))?;
    if !meta.is_dir() {
        return Err(AtomicError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    let us = rustix::process::geteuid().as_raw();
    if meta.uid() != us {
        return Err(AtomicError::NotOurs {
            path: path.to_path_buf(),
            owner: meta.uid(),
            us,
        });
    }
    if meta.permissions().mode() & 0o7777 != PRIVATE_DIR_MODE {
        fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
            .map_err(ctx("set permissions 0700 of", path))?;
    }
    Ok(())
}

/// Creates `path` as a directory with mode 0700 (if it does not exist yet) and fsyncs its parent.
/// Idempotent: an existing directory is accepted as is (its mode is not changed). Missing parents
/// are created too (0700 each).
pub fn create_dir_private(path: &Path) -> Result<(), AtomicError> {
    create_dir_with_mode(path, PRIVATE_DIR_MODE)
}

/// As [`create_dir_private`], with an explicit mode for a newly created `path`.
pub fn create_dir_with_mode(path: &Path, mode: u32) -> Result<(), AtomicError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(AtomicError::NotADirectory {
                path: path.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(AtomicError::io("stat", path, e)),
    }
    let (parent, _) = parent_and_name(path)?;
    if !parent.exists() {
        create_dir_private(&parent)?;
    }
    match fs::create_dir(path) {
        Ok(()) => {}
        // Lost a race with another creator: fine as long as it is a directory.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => return Ok(()),
        Err(e) => return Err(AtomicError::io("create directory", path, e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(ctx("set permissions of", path))?;
    fsync_dir(path)?;
    fsync_dir(&parent)
}

/// Swaps a fully built directory `tmp_dir` in as `final_dir`, then deletes the previous contents.
///
/// What is atomic:
/// - If `final_dir` does not exist, `tmp_dir` is renamed to it: one `rename(2)`, atomic.
/// - If it exists, both are exchanged with `renameat2(RENAME_EXCHANGE)`: one atomic step; at
///   every moment `final_dir` is either the complete old or the complete new directory. The old
///   contents end up under `tmp_dir`'s name and are then deleted (a crash during that deletion
///   leaves a stale temporary directory, never a damaged `final_dir`).
/// - If the filesystem does not support `RENAME_EXCHANGE`, the fallback renames `final_dir`
///   aside, renames `tmp_dir` in, and deletes the old copy: here a crash between the two renames
///   can leave `final_dir` missing (the old copy stays under `.<name>.tmp-old-*`, nothing is lost).
///
/// The caller must have fsynced the files inside `tmp_dir` (e.g. with [`write_file`] /
/// [`copy_file`], which do). Both must be in the same parent directory (or at least the same
/// filesystem).
pub fn replace_dir(tmp_dir: &Path, final_dir: &Path) -> Result<(), AtomicError> {
    let (parent, name) = parent_and_name(final_dir)?;
    if !tmp_dir.is_dir() {
        return Err(AtomicError::NotADirectory {
            path: tmp_dir.to_path_buf(),
        });
    }
    fsync_dir(tmp_dir)?;
    match fs::symlink_metadata(final_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::rename(tmp_dir, final_dir)
                .map_err(ctx("rename directory into place as", final_dir))?;
            return fsync_dir(&parent);
        }
        Err(e) => return Err(AtomicError::io("stat", final_dir, e)),
        Ok(meta) if !meta.is_dir() => {
            return Err(AtomicError::NotADirectory {
                path: final_dir.to_path_buf(),
            });
        }
        Ok(_) => {}
    }
    let exchanged = rustix::fs::renameat_with(
        rustix::fs::CWD,
        tmp_dir,
        rustix::fs::CWD,
        final_dir,
        rustix::fs::RenameFlags::EXCHANGE,
    );
    match exchanged {
        Ok(()) => {
            fsync_dir(&parent)?;
            // `tmp_dir` now holds the old contents.
            fs::remove_dir_all(tmp_dir).map_err(ctx("remove old directory", tmp_dir))?;
            fsync_dir(&parent)
        }
        Err(errno) if errno == rustix::io::Errno::INVAL || errno == rustix::io::Errno::NOSYS => {
            let mut old_name = OsString::from(".");
            old_name.push(&name);
            old_name.push(format!("{TEMP_MARKER}old-{}", std::process::id()));
            let old = parent.join(old_name);
            fs::rename(final_dir, &old).map_err(ctx("move old directory aside", final_dir))?;
            fs::rename(tmp_dir, final_dir)
                .map_err(ctx("rename directory into place as", final_dir))?;
            fsync_dir(&parent)?;
            fs::remove_dir_all(&old).map_err(ctx("remove old directory", &old))?;
            fsync_dir(&parent)
        }
        Err(errno) => Err(AtomicError::io(
            "exchange directories",
            final_dir,
            io::Error::from_raw_os_error(errno.raw_os_error()),
        )),
    }
}

/// Recursively copies directory `src` to a new directory `dst` (which must not exist), fsyncing
/// every file and directory. Regular files keep their permission bits; symbolic links and special
/// files are refused. Returns the number of bytes copied.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<u64, AtomicError> {
    let meta = fs::symlink_metadata(src).map_err(ctx("stat", src))?;
    if !meta.is_dir() {
        return Err(AtomicError::NotADirectory {
            path: src.to_path_buf(),
        });
    }
    fs::create_dir(dst).map_err(ctx("create directory", dst))?;
    fs::set_permissions(
        dst,
        fs::Permissions::from_mode(meta.permissions().mode() & 0o7777),
    )
    .map_err(ctx("set permissions of", dst))?;
    let mut total = 0u64;
    let entries = fs::read_dir(src).map_err(ctx("list directory", src))?;
    for entry in entries {
        let entry = entry.map_err(ctx("list directory", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let kind = entry.file_type().map_err(ctx("stat", &from))?;
        if kind.is_dir() {
            total += copy_tree(&from, &to)?;
        } else if kind.is_file() {
            let mode = entry
                .metadata()
                .map_err(ctx("stat", &from))?
                .permissions()
                .mode()
                & 0o7777;
            total += copy_file(&from, &to, mode)?;
        } else {
            return Err(AtomicError::UnsupportedFileType { path: from });
        }
    }
    fsync_dir(dst)?;
    Ok(total)
}

/// Removes temporary files and directories (`.*.tmp-*`) left in `dir` by a crash. Returns how
/// many were removed. Only call this while nothing else writes in `dir`.
pub fn remove_stale_temp_files(dir: &Path) -> Result<usize, AtomicError> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(AtomicError::io("list directory", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(ctx("list directory", dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !is_temp_name(&name) {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(ctx("stat", &path))?;
        if kind.is_dir() {
            fs::remove_dir_all(&path).map_err(ctx("remove stale temporary directory", &path))?;
        } else {
            fs::remove_file(&path).map_err(ctx("remove stale temporary file", &path))?;
        }
        removed += 1;
    }
    if removed > 0 {
        fsync_dir(dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dirs_are_created_tightened_or_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("a/data");
        prepare_private_dir(&data).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&data), 0o700);
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        prepare_private_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        // A symlink is not the directory itself.
        std::os::unix::fs::symlink(&data, tmp.path().join("link")).unwrap();
        assert!(prepare_private_dir(&tmp.path().join("link")).is_err());
        // Someone else's directory is refused (as root, make one owned by another uid).
        if rustix::process::geteuid().is_root() {
            let theirs = tmp.path().join("theirs");
            fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
            let err = prepare_private_dir(&theirs).unwrap_err();
            assert!(
                matches!(err, AtomicError::NotOurs { owner: 65534, .. }),
                "{err}"
            );
        }
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_file_creates_with_exact_mode_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        write_file(&path, b"hello", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(mode_of(&path), 0o600);
        write_file(&path, b"second version", 0o640).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second version");
        assert_eq!(mode_of(&path), 0o640);
        assert_eq!(names_in(dir.path()), vec!["state.bin"]);
    }

    #[test]
    fn failed_write_leaves_old_file_intact_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tpm2-00.permall");
        write_file(&path, b"precious old state", 0o600).unwrap();
        let result = write_file_with(&path, 0o600, |f| {
            f.write_all(b"half a new st")?;
            Err(io::Error::other("simulated crash: disk full"))
        });
        let err = result.unwrap_err();
        assert!(err.to_string().contains("simulated crash"), "{err}");
        assert!(err.to_string().contains(".tpm2-00.permall.tmp-"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"precious old state");
        assert_eq!(names_in(dir.path()), vec!["tpm2-00.permall"]);
    }

    #[test]
    fn write_into_missing_directory_fails_with_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("f");
        let err = write_file(&path, b"x", 0o600).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn copy_file_streams_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&src, &data).unwrap();
        let dst = dir.path().join("dst");
        let n = copy_file(&src, &dst, 0o600).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(fs::read(&dst).unwrap(), data);
        assert_eq!(mode_of(&dst), 0o600);
    }

    #[test]
    fn copy_file_from_missing_source_keeps_destination() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("dst");
        fs::write(&dst, b"keep me").unwrap();
        let err = copy_file(&dir.path().join("nope"), &dst, 0o600).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert_eq!(fs::read(&dst).unwrap(), b"keep me");
    }

    #[test]
    fn create_dir_private_is_0700_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b");
        create_dir_private(&path).unwrap();
        assert_eq!(mode_of(&path), 0o700);
        assert_eq!(mode_of(&dir.path().join("a")), 0o700);
        create_dir_private(&path).unwrap();
        fs::write(dir.path().join("file"), b"").unwrap();
        let err = create_dir_private(&dir.path().join("file")).unwrap_err();
        assert!(matches!(err, AtomicError::NotADirectory { .. }));
    }

    #[test]
    fn replace_dir_into_empty_and_over_existing() {
        let dir = tempfile::tempdir().unwrap();
        let final_dir = dir.path().join("tpm2");
        let tmp = dir.path().join(".tpm2.tmp-build");
        fs::create_dir(&tmp).unwrap();
        write_file(&tmp.join("a"), b"one", 0o600).unwrap();
        replace_dir(&tmp, &final_dir).unwrap();
        assert_eq!(fs::read(final_dir.join("a")).unwrap(), b"one");
        assert!(!tmp.exists());

        fs::create_dir(&tmp).unwrap();
        write_file(&tmp.join("b"), b"two", 0o600).unwrap();
        replace_dir(&tmp, &final_dir).unwrap();
        assert_eq!(names_in(&final_dir), vec!["b"]);
        assert_eq!(fs::read(final_dir.join("b")).unwrap(), b"two");
        assert!(!tmp.exists());
        assert_eq!(names_in(dir.path()), vec!["tpm2"]);
    }

    #[test]
    fn copy_tree_copies_nested_files_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("f"), b"1").unwrap();
        fs::set_permissions(src.join("f"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(src.join("sub").join("g"), b"22").unwrap();
        let dst = dir.path().join("dst");
        assert_eq!(copy_tree(&src, &dst).unwrap(), 3);
        assert_eq!(fs::read(dst.join("sub").join("g")).unwrap(), b"22");
        assert_eq!(mode_of(&dst.join("f")), 0o640);
    }

    #[test]
    fn copy_tree_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        let err = copy_tree(&src, &dir.path().join("dst")).unwrap_err();
        assert!(matches!(err, AtomicError::UnsupportedFileType { .. }));
    }

    #[test]
    fn stale_temp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".x.tmp-1-2"), b"junk").unwrap();
        fs::create_dir(dir.path().join(".y.tmp-old-3")).unwrap();
        fs::write(dir.path().join("keep"), b"k").unwrap();
        assert_eq!(remove_stale_temp_files(dir.path()).unwrap(), 2);
        assert_eq!(names_in(dir.path()), vec!["keep"]);
    }
}
