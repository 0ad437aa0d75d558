//! The bytes of a volume export (KubeVirt's VirtualMachineExport) and of its import.
//!
//! - [`ExportTree`]: the files one exported volume is made of, as relative paths (a filesystem
//!   volume walked from its root, `lost+found` left out as KubeVirt's export server does, or a
//!   tree put together from snapshot files), with a stable [`ExportTree::etag`] so a resumed
//!   download can tell whether it still reads the same content.
//! - [`open_entry`]: **the one place** an export reads the content of an entry: a file of the
//!   volume as it is on disk ([`open_for_export`]), or content the caller put in its place with
//!   [`ExportTree::replace_content`] (the plain TPM state and VARS of a state encrypted at rest,
//!   decrypted by the API server, which owns the keys; this crate never sees a key). Such
//!   content is held in memory only ([`ExportBytes`], wiped when the last response using it
//!   ends), never written anywhere.
//! - The formats KubeVirt's export server serves: the file as it is (`raw`), gzip
//!   ([`write_gzip`]) and a gzipped tar of the volume ([`ExportTree::write_tar_gz`], entries
//!   `./`, `./meta/`, `./swtpm/<uuid>/tpm2/tpm2-00.permall`, ... as `tar -C <volume> -c .`
//!   names them). Both are deterministic (fixed gzip header, the files' own mtimes and modes,
//!   owner 0:0), so the bytes at an offset are the same in every response and a download can
//!   resume with an HTTP Range. Output goes to a `Write`; nothing buffers a whole volume.
//! - [`unpack_archive`]: the import side of `tar.gz`: regular files and directories only, each
//!   path beneath the target (no `..`, no absolute path, no links), files written with
//!   [`crate::atomic`] (temp + fsync + rename + fsync dir).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::atomic::{self, AtomicError};

/// Entries KubeVirt's export server leaves out of a volume (`excludeMap`).
pub const EXCLUDED: &[&str] = &["lost+found"];

/// Largest file an archive being imported may hold (a state volume holds KiBs; a disk image
/// belongs in a `raw`/`gzip` import, not in an archive).
pub const MAX_ARCHIVE_FILE_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// Why an export or import could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{path} is a symbolic link or special file; an export holds only regular files and directories"
    )]
    NotRegular { path: PathBuf },
    #[error("the archive entry {entry:?} is not allowed: {reason}")]
    BadEntry { entry: String, reason: String },
    #[error(transparent)]
    Atomic(#[from] AtomicError),
    #[error("writing the export stream failed: {0}")]
    Stream(io::Error),
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ExportError + use<'a> {
    move |source| ExportError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Content an export serves from memory instead of a file (a decrypted state file): shared by
/// the responses that use it, wiped when the last one drops it. Its `Debug` shows the length only.
#[derive(Clone, PartialEq, Eq)]
pub struct ExportBytes(Arc<Zeroizing<Vec<u8>>>);

impl ExportBytes {
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(Arc::new(bytes))
    }

    pub fn as_slice(&self) -> &[u8] {
        self.0.as_slice()
    }

    pub fn len(&self) -> u64 {
        self.0.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for ExportBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExportBytes({} bytes)", self.0.len())
    }
}

/// A reader of [`ExportBytes`] (owned, so it can be boxed as `'static`).
struct BytesReader {
    data: ExportBytes,
    position: usize,
}

impl Read for BytesReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = self.data.as_slice().get(self.position..).unwrap_or(&[]);
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.position += n;
        Ok(n)
    }
}

/// What an entry of an export is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A regular file read from `source` (through [`open_for_export`]).
    File {
        source: PathBuf,
        size: u64,
    },
    /// A file whose content is served from memory (see [`ExportTree::replace_content`]).
    Memory {
        data: ExportBytes,
    },
}

impl EntryKind {
    /// The bytes of a file's content (`None` for a directory).
    pub fn size(&self) -> Option<u64> {
        match self {
            EntryKind::Dir => None,
            EntryKind::File { size, .. } => Some(*size),
            EntryKind::Memory { data } => Some(data.len()),
        }
    }
}

/// One entry of an export: its path relative to the volume root (`meta`, `nvram/vm_VARS.fd`,
/// `""` for the root itself), its mode bits and mtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub mtime: u64,
}

impl ExportEntry {
    /// The name a tar made with `tar -C <volume> -c .` gives it (`./`, `./meta/`, `./a/b`).
    pub fn tar_name(&self) -> String {
        match (&self.kind, self.path.as_str()) {
            (EntryKind::Dir, "") => "./".to_owned(),
            (EntryKind::Dir, path) => format!("./{path}/"),
            (EntryKind::File { .. } | EntryKind::Memory { .. }, path) => format!("./{path}"),
        }
    }
}

/// The entries of one exported volume, parents before children, sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportTree {
    entries: Vec<ExportEntry>,
}

impl ExportTree {
    /// The tree of a filesystem volume rooted at `root` (symbolic links and special files are
    /// refused, `lost+found` is left out).
    pub fn of_directory(root: &Path) -> Result<Self, ExportError> {
        let meta = fs::symlink_metadata(root).map_err(io_error("read", root))?;
        if !meta.is_dir() {
            return Err(ExportError::NotRegular {
                path: root.to_path_buf(),
            });
        }
        let mut entries = vec![ExportEntry {
            path: String::new(),
            kind: EntryKind::Dir,
            mode: meta.mode() & 0o7777,
            mtime: mtime_of(&meta),
        }];
        walk(root, "", &mut entries)?;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Self { entries })
    }

    /// A tree made of files taken from elsewhere (a snapshot's data): `(relative path, source
    /// file)`; the directories above them are added (0700, or 0711 for `swtpm/<uuid>` as libvirt
    /// makes it).
    pub fn from_files(files: &[(String, PathBuf)]) -> Result<Self, ExportError> {
        let mut entries: Vec<ExportEntry> = Vec::new();
        let mut newest = 0;
        for (path, source) in files {
            let meta = fs::metadata(source).map_err(io_error("read", source))?;
            if !meta.is_file() {
                return Err(ExportError::NotRegular {
                    path: source.clone(),
                });
            }
            newest = newest.max(mtime_of(&meta));
            entries.push(ExportEntry {
                path: path.clone(),
                kind: EntryKind::File {
                    source: source.clone(),
                    size: meta.len(),
                },
                mode: meta.mode() & 0o7777,
                mtime: mtime_of(&meta),
            });
        }
        let mut dirs: Vec<String> = vec![String::new()];
        for (path, _) in files {
            let mut parent = Path::new(path).parent();
            while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
                let text = dir.to_string_lossy().into_owned();
                if !dirs.contains(&text) {
                    dirs.push(text);
                }
                parent = dir.parent();
            }
        }
        for dir in dirs {
            let swtpm_uuid = dir.starts_with("swtpm/") && dir.matches('/').count() == 1;
            entries.push(ExportEntry {
                mode: if swtpm_uuid { 0o711 } else { 0o700 },
                path: dir,
                kind: EntryKind::Dir,
                mtime: newest,
            });
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Self { entries })
    }

    pub fn entries(&self) -> &[ExportEntry] {
        &self.entries
    }

    /// The entry at a relative path (`""` is the root).
    pub fn find(&self, path: &str) -> Option<&ExportEntry> {
        let path = path.trim_matches('/');
        self.entries.iter().find(|e| e.path == path)
    }

    /// Serves `data` as the content of the file at `path` (its mode and mtime kept): how the
    /// caller puts the plain content of a file encrypted at rest in its place. `false` (nothing
    /// changed) when there is no file at `path`.
    pub fn replace_content(&mut self, path: &str, data: ExportBytes) -> bool {
        let path = path.trim_matches('/');
        match self.entries.iter_mut().find(|e| e.path == path) {
            Some(entry) if entry.kind != EntryKind::Dir => {
                entry.kind = EntryKind::Memory { data };
                true
            }
            _ => false,
        }
    }

    /// Leaves the file at `path` out of the export (e.g. a key record that means nothing off
    /// this host); `false` when there is no file at `path`.
    pub fn remove_file(&mut self, path: &str) -> bool {
        let path = path.trim_matches('/');
        let before = self.entries.len();
        self.entries
            .retain(|e| e.path != path || e.kind == EntryKind::Dir);
        self.entries.len() != before
    }

    /// The tree of one file entry alone (what `dir/` serves for a file), `None` for a directory
    /// or a path that is not there.
    pub fn single_file(&self, path: &str) -> Option<ExportTree> {
        let entry = self.find(path)?;
        (entry.kind != EntryKind::Dir).then(|| ExportTree {
            entries: vec![entry.clone()],
        })
    }

    /// The direct children of a directory entry.
    pub fn children<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = &'a ExportEntry> + 'a {
        let dir = dir.trim_matches('/');
        self.entries.iter().filter(move |e| {
            !e.path.is_empty()
                && match Path::new(&e.path).parent() {
                    Some(parent) => parent.to_string_lossy() == dir,
                    None => dir.is_empty(),
                }
        })
    }

    /// A digest of what the tree holds (paths, kinds, sizes, modes, mtimes, and the content of
    /// what is served from memory): equal digests mean the generated formats have the same bytes.
    pub fn etag(&self) -> String {
        let mut hash = Sha256::new();
        for e in &self.entries {
            let size = e.kind.size().unwrap_or(u64::MAX);
            hash.update(e.path.as_bytes());
            hash.update([0]);
            hash.update(size.to_le_bytes());
            hash.update(e.mode.to_le_bytes());
            hash.update(e.mtime.to_le_bytes());
            if let EntryKind::Memory { data } = &e.kind {
                hash.update(b"memory");
                hash.update(Sha256::digest(data.as_slice()));
            }
        }
        let digest = hash.finalize();
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("\"{hex}\"")
    }

    /// The bytes of the files.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().filter_map(|e| e.kind.size()).sum()
    }

    /// Writes the tree as a gzipped tar (KubeVirt's `tar.gz` format) to `out`.
    pub fn write_tar_gz<W: Write>(&self, out: W) -> Result<W, ExportError> {
        let gzip = GzEncoder::new(out, Compression::fast());
        let mut tar = tar::Builder::new(gzip);
        tar.mode(tar::HeaderMode::Deterministic);
        for entry in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(entry.mode);
            header.set_mtime(entry.mtime);
            header.set_uid(0);
            header.set_gid(0);
            let name = entry.tar_name();
            match open_entry(entry)? {
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    append_named(&mut tar, &mut header, &name, io::empty())?;
                }
                Some((size, reader)) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(size);
                    append_named(&mut tar, &mut header, &name, reader.take(size))?;
                }
            }
        }
        let gzip = tar.into_inner().map_err(ExportError::Stream)?;
        gzip.finish().map_err(ExportError::Stream)
    }
}

/// Appends an entry under exactly `name` (`./meta/`, as `tar -c .` writes it: the tar crate's
/// own path setter drops the `./`); a name longer than the header's 100 bytes goes through the
/// crate's GNU long-name entry (then without the `./`, which tar readers treat the same).
fn append_named<W: Write, R: Read>(
    tar: &mut tar::Builder<W>,
    header: &mut tar::Header,
    name: &str,
    data: R,
) -> Result<(), ExportError> {
    let bytes = name.as_bytes();
    if bytes.len() < 100 {
        let raw = header.as_mut_bytes();
        raw[..100].fill(0);
        raw[..bytes.len()].copy_from_slice(bytes);
        header.set_cksum();
        tar.append(header, data).map_err(ExportError::Stream)
    } else {
        tar.append_data(header, name, data)
            .map_err(ExportError::Stream)
    }
}

fn mtime_of(meta: &fs::Metadata) -> u64 {
    u64::try_from(meta.mtime()).unwrap_or(0)
}

fn walk(root: &Path, prefix: &str, entries: &mut Vec<ExportEntry>) -> Result<(), ExportError> {
    let dir = if prefix.is_empty() {
        root.to_path_buf()
    } else {
        root.join(prefix)
    };
    let mut names = Vec::new();
    for item in fs::read_dir(&dir).map_err(io_error("list", &dir))? {
        let item = item.map_err(io_error("list", &dir))?;
        names.push(item.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    for name in names {
        if prefix.is_empty() && EXCLUDED.contains(&name.as_str()) {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).map_err(io_error("read", &path))?;
        if meta.is_dir() {
            entries.push(ExportEntry {
                path: rel.clone(),
                kind: EntryKind::Dir,
                mode: meta.mode() & 0o7777,
                mtime: mtime_of(&meta),
            });
            walk(root, &rel, entries)?;
        } else if meta.is_file() {
            entries.push(ExportEntry {
                path: rel,
                kind: EntryKind::File {
                    source: path,
                    size: meta.len(),
                },
                mode: meta.mode() & 0o7777,
                mtime: mtime_of(&meta),
            });
        } else if name == ".lock" {
            // swtpm's lock file is a regular 0-byte file; anything else special is refused.
            continue;
        } else {
            return Err(ExportError::NotRegular { path });
        }
    }
    Ok(())
}

/// A file's content for an export: its size and a reader of exactly its bytes.
pub type Content = (u64, Box<dyn Read + Send>);

/// The content of an entry: its size and a reader of exactly its bytes (`None` for a directory).
/// **Every read of an export's content goes through here**: a file of the volume through
/// [`open_for_export`], a replaced content from memory.
pub fn open_entry(entry: &ExportEntry) -> Result<Option<Content>, ExportError> {
    match &entry.kind {
        EntryKind::Dir => Ok(None),
        EntryKind::File { source, .. } => open_for_export(source).map(Some),
        EntryKind::Memory { data } => Ok(Some((
            data.len(),
            Box::new(BytesReader {
                data: data.clone(),
                position: 0,
            }),
        ))),
    }
}

/// Opens a file of a volume for export as it is on disk: its size and a reader of exactly its
/// content (through [`open_entry`], which serves replaced content instead where there is some).
pub fn open_for_export(path: &Path) -> Result<Content, ExportError> {
    let file = fs::File::open(path).map_err(io_error("open", path))?;
    let meta = file.metadata().map_err(io_error("read", path))?;
    if !meta.is_file() {
        return Err(ExportError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    Ok((meta.len(), Box::new(file)))
}

/// Writes the file at `source` gzipped (KubeVirt's `gzip` format, `disk.img.gz`) to `out`.
pub fn write_gzip<W: Write>(source: &Path, out: W) -> Result<W, ExportError> {
    let (size, reader) = open_for_export(source)?;
    let mut gzip = GzEncoder::new(out, Compression::fast());
    io::copy(&mut reader.take(size), &mut gzip).map_err(ExportError::Stream)?;
    gzip.finish().map_err(ExportError::Stream)
}

/// Writes a file entry's content as it is (what `dir/` serves for a file) to `out`.
pub fn write_entry<W: Write>(entry: &ExportEntry, mut out: W) -> Result<W, ExportError> {
    let Some((size, reader)) = open_entry(entry)? else {
        return Err(ExportError::NotRegular {
            path: PathBuf::from(&entry.path),
        });
    };
    io::copy(&mut reader.take(size), &mut out).map_err(ExportError::Stream)?;
    Ok(out)
}

/// Writes the file at `source` as it is (`raw`) to `out`.
pub fn write_raw<W: Write>(source: &Path, mut out: W) -> Result<W, ExportError> {
    let (size, reader) = open_for_export(source)?;
    io::copy(&mut reader.take(size), &mut out).map_err(ExportError::Stream)?;
    Ok(out)
}

/// A writer that drops the first `skip` bytes written to it and passes on at most `take` bytes
/// after them (then refuses more: the producer stops early): an HTTP Range over a generated
/// stream.
pub struct RangeWriter<W: Write> {
    inner: W,
    skip: u64,
    take: Option<u64>,
}

/// What a [`RangeWriter`] returns once its range is complete.
pub const RANGE_COMPLETE: &str = "range complete";

impl<W: Write> RangeWriter<W> {
    pub fn new(inner: W, skip: u64, take: Option<u64>) -> Self {
        Self { inner, skip, take }
    }

    /// The writer it passes bytes to.
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// True when the range has been written whole (the producer may stop).
    pub fn is_complete(&self) -> bool {
        self.take == Some(0)
    }
}

impl<W: Write> Write for RangeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut data = buf;
        if self.skip > 0 {
            let dropped = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(data.len());
            self.skip -= dropped as u64;
            data = &data[dropped..];
        }
        if let Some(left) = self.take {
            if left == 0 && !data.is_empty() {
                return Err(io::Error::other(RANGE_COMPLETE));
            }
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
            data = &data[..n];
            self.take = Some(left - n as u64);
        }
        self.inner.write_all(data)?;
        if self.is_complete() {
            // The producer is stopped by the next write's error and the writer chain dropped
            // with it: what a buffering writer below still holds must go out now (a closed
            // Range's body was cut short by up to a buffer's worth, and HTTP/2 clients saw the
            // stream end before its Content-Length).
            self.inner.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod range_writer_tests {
    use super::*;

    #[test]
    fn a_complete_range_is_flushed_before_the_producer_is_stopped() {
        let mut writer = RangeWriter::new(io::BufWriter::new(Vec::new()), 2, Some(3));
        writer.write_all(b"abcd").unwrap();
        assert!(!writer.is_complete());
        writer.write_all(b"efgh").unwrap();
        assert!(writer.is_complete());
        let err = writer.write_all(b"ij").unwrap_err();
        assert_eq!(err.to_string(), RANGE_COMPLETE);
        // Nothing flushes the chain after this (the producer returns the error): the range
        // must already be below the buffer.
        assert_eq!(writer.into_inner().get_ref().as_slice(), b"cde");
    }
}

/// True when an error only says that a [`RangeWriter`]'s range is complete.
pub fn is_range_complete(error: &ExportError) -> bool {
    match error {
        ExportError::Stream(e) => e.to_string() == RANGE_COMPLETE,
        _ => false,
    }
}

/// A reader of the decompressed bytes of a gzip stream (an export's `gzip` format).
pub fn gunzip<R: Read>(reader: R) -> impl Read {
    flate2::read::GzDecoder::new(reader)
}

/// What [`unpack_archive`] wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub files: Vec<String>,
    pub bytes: u64,
}

/// A relative path of an archive entry, checked to stay beneath the target: `./a/b` -> `a/b`.
fn entry_path(name: &str) -> Result<PathBuf, ExportError> {
    let bad = |reason: &str| ExportError::BadEntry {
        entry: name.to_owned(),
        reason: reason.to_owned(),
    };
    let mut clean = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => clean.push(part),
            Component::ParentDir => return Err(bad("a path with `..` would leave the volume")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad("an absolute path would leave the volume"));
            }
        }
    }
    Ok(clean)
}

/// The file an import under way keeps in its volume ([`begin_import`]); a volume holding it
/// was left by an import that failed or was interrupted (a crash), and holds no usable data.
pub const IMPORT_MARKER: &str = ".ferrovirt-import-incomplete";

/// Marks `volume` (an empty directory) as being filled by an import: written (fsynced) before
/// the first byte of the import, removed by [`finish_import`] after the last.
pub fn begin_import(volume: &Path) -> Result<(), ExportError> {
    atomic::write_file(&volume.join(IMPORT_MARKER), b"", 0o600)?;
    Ok(())
}

/// The import into `volume` is complete: its marker is removed (and the removal made durable).
pub fn finish_import(volume: &Path) -> Result<(), ExportError> {
    let marker = volume.join(IMPORT_MARKER);
    fs::remove_file(&marker).map_err(io_error("remove", &marker))?;
    atomic::fsync_dir(volume)?;
    Ok(())
}

/// Whether `volume` holds what a failed or interrupted import left.
pub fn import_incomplete(volume: &Path) -> bool {
    volume.join(IMPORT_MARKER).exists()
}

/// Removes everything a failed or interrupted import left in `volume` (its marker last), so
/// the volume is empty again and the import can be repeated.
pub fn abandon_import(volume: &Path) -> Result<(), ExportError> {
    let entries = fs::read_dir(volume).map_err(io_error("read", volume))?;
    for entry in entries {
        let entry = entry.map_err(io_error("read", volume))?;
        if entry.file_name() == IMPORT_MARKER {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(io_error("remove", &path))?;
    }
    atomic::fsync_dir(volume)?;
    finish_import(volume)
}

/// Unpacks a gzipped tar (an export's `tar.gz`) into the directory `target` (which must exist):
/// directories (made private, 0711 kept for `swtpm/<uuid>`) and regular files (written
/// atomically with their mode); any other entry type (links, devices) is refused, and so is a
/// path that leaves `target`.
pub fn unpack_archive(reader: impl Read, target: &Path) -> Result<Unpacked, ExportError> {
    let gzip = flate2::read::GzDecoder::new(reader);
    let mut archive = tar::Archive::new(gzip);
    let mut unpacked = Unpacked::default();
    let entries = archive
        .entries()
        .map_err(io_error("read the archive for", target))?;
    for entry in entries {
        let mut entry = entry.map_err(io_error("read the archive for", target))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = entry_path(&name)?;
        let mode = entry.header().mode().unwrap_or(0o600) & 0o7777;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                if rel.as_os_str().is_empty() {
                    continue;
                }
                let dir = target.join(&rel);
                let mode = if mode == 0o711 { 0o711 } else { 0o700 };
                atomic::create_dir_with_mode(&dir, mode)?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
                    .map_err(io_error("set the mode of", &dir))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().unwrap_or(0);
                if size > MAX_ARCHIVE_FILE_BYTES {
                    return Err(ExportError::BadEntry {
                        entry: name,
                        reason: format!("{size} bytes is more than a state volume holds"),
                    });
                }
                let path = target.join(&rel);
                if let Some(parent) = path.parent() {
                    atomic::create_dir_private(parent)?;
                }
                crate::failpoints::hit("import.write-file").map_err(io_error("write", &path))?;
                let mut written = 0;
                atomic::write_file_with(&path, mode & 0o777, |file| {
                    written = io::copy(&mut entry, file)?;
                    Ok(())
                })?;
                unpacked.bytes += written;
                unpacked.files.push(rel.to_string_lossy().into_owned());
            }
            other => {
                return Err(ExportError::BadEntry {
                    entry: name,
                    reason: format!(
                        "entries of type {other:?} are not imported (only files and directories)"
                    ),
                });
            }
        }
    }
    Ok(unpacked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("meta")).unwrap();
        fs::create_dir_all(root.join("swtpm/0f0e/tpm2")).unwrap();
        fs::set_permissions(root.join("swtpm/0f0e"), fs::Permissions::from_mode(0o711)).unwrap();
        fs::create_dir_all(root.join("swtpm-localca")).unwrap();
        fs::create_dir_all(root.join("nvram")).unwrap();
        fs::create_dir_all(root.join("lost+found")).unwrap();
        fs::write(root.join("swtpm/0f0e/tpm2/tpm2-00.permall"), b"tpm state").unwrap();
        fs::write(root.join("swtpm/0f0e/tpm2/.lock"), b"").unwrap();
        fs::write(root.join("swtpm-localca/signkey.pem"), b"key").unwrap();
        fs::write(root.join("nvram/vm_VARS.fd"), vec![7u8; 4096]).unwrap();
        dir
    }

    #[test]
    fn tree_names_as_kubevirt_tar_and_skips_lost_found() {
        let dir = volume();
        let tree = ExportTree::of_directory(dir.path()).unwrap();
        let names: Vec<String> = tree.entries().iter().map(ExportEntry::tar_name).collect();
        assert_eq!(
            names,
            [
                "./",
                "./meta/",
                "./nvram/",
                "./nvram/vm_VARS.fd",
                "./swtpm/",
                "./swtpm-localca/",
                "./swtpm-localca/signkey.pem",
                "./swtpm/0f0e/",
                "./swtpm/0f0e/tpm2/",
                "./swtpm/0f0e/tpm2/.lock",
                "./swtpm/0f0e/tpm2/tpm2-00.permall",
            ]
        );
        assert_eq!(tree.children("swtpm").count(), 1);
        assert_eq!(tree.children("").count(), 4);
    }

    #[test]
    fn tar_gz_is_deterministic_and_unpacks_to_the_same_files() {
        let dir = volume();
        let tree = ExportTree::of_directory(dir.path()).unwrap();
        let first = tree.write_tar_gz(Vec::new()).unwrap();
        let second = tree.write_tar_gz(Vec::new()).unwrap();
        assert_eq!(first, second);
        assert_eq!(
            tree.etag(),
            ExportTree::of_directory(dir.path()).unwrap().etag()
        );
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(first.as_slice()));
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect();
        assert_eq!(names[..3], ["./", "./meta/", "./nvram/"]);
        assert!(names.contains(&"./swtpm/0f0e/tpm2/tpm2-00.permall".to_owned()));
        let target = tempfile::tempdir().unwrap();
        let unpacked = unpack_archive(first.as_slice(), target.path()).unwrap();
        assert_eq!(unpacked.bytes, 9 + 3 + 4096);
        assert_eq!(
            fs::read(target.path().join("swtpm/0f0e/tpm2/tpm2-00.permall")).unwrap(),
            b"tpm state"
        );
        let mode = fs::metadata(target.path().join("swtpm/0f0e"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o711);
        assert_eq!(
            fs::read(target.path().join("nvram/vm_VARS.fd"))
                .unwrap()
                .len(),
            4096
        );
    }

    #[test]
    fn a_range_of_a_generated_stream_is_its_suffix() {
        let dir = volume();
        let tree = ExportTree::of_directory(dir.path()).unwrap();
        let whole = tree.write_tar_gz(Vec::new()).unwrap();
        let mut part = Vec::new();
        let result = tree.write_tar_gz(RangeWriter::new(&mut part, 100, None));
        assert!(result.is_ok());
        assert_eq!(part, whole[100..]);
        let mut middle = Vec::new();
        let result = tree.write_tar_gz(RangeWriter::new(&mut middle, 10, Some(20)));
        if let Err(error) = result {
            assert!(is_range_complete(&error), "{error}");
        }
        assert_eq!(middle, whole[10..30]);
    }

    #[test]
    fn replaced_content_is_served_from_memory_and_the_files_stay() {
        let dir = volume();
        fs::create_dir_all(dir.path().join("meta/ferrovirt")).unwrap();
        fs::write(dir.path().join("meta/ferrovirt/state-key.json"), b"{}").unwrap();
        let mut tree = ExportTree::of_directory(dir.path()).unwrap();
        let before = tree.etag();
        let permall = "swtpm/0f0e/tpm2/tpm2-00.permall";
        let plain = ExportBytes::new(Zeroizing::new(b"plain tpm state!".to_vec()));
        assert!(tree.replace_content(permall, plain.clone()));
        assert!(!tree.replace_content("swtpm", plain.clone()));
        assert!(!tree.replace_content("nope", plain));
        assert!(tree.remove_file("meta/ferrovirt/state-key.json"));
        assert!(!tree.remove_file("meta/ferrovirt"));
        assert_ne!(tree.etag(), before);
        let packed = tree.write_tar_gz(Vec::new()).unwrap();
        let target = tempfile::tempdir().unwrap();
        unpack_archive(packed.as_slice(), target.path()).unwrap();
        assert_eq!(
            fs::read(target.path().join(permall)).unwrap(),
            b"plain tpm state!"
        );
        assert!(!target.path().join("meta/ferrovirt/state-key.json").exists());
        assert!(target.path().join("meta/ferrovirt").is_dir());
        // The volume's own files are untouched.
        assert_eq!(fs::read(dir.path().join(permall)).unwrap(), b"tpm state");
        assert!(dir.path().join("meta/ferrovirt/state-key.json").exists());
        let single = tree.single_file(permall).unwrap();
        assert_eq!(single.total_bytes(), 16);
        let served = write_entry(&single.entries()[0], Vec::new()).unwrap();
        assert_eq!(served, b"plain tpm state!");
        assert!(tree.single_file("swtpm").is_none());
        assert!(format!("{:?}", single).contains("ExportBytes(16 bytes)"));
    }

    #[test]
    fn archives_leaving_the_volume_are_refused() {
        for name in ["../evil", "/etc/passwd"] {
            let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
            let mut header = tar::Header::new_gnu();
            header.set_size(1);
            header.set_mode(0o600);
            header.set_entry_type(tar::EntryType::Regular);
            {
                let bytes = header.as_mut_bytes();
                bytes[..name.len()].copy_from_slice(name.as_bytes());
            }
            header.set_cksum();
            builder.append(&header, &b"x"[..]).unwrap();
            let data = builder.into_inner().unwrap().finish().unwrap();
            let target = tempfile::tempdir().unwrap();
            let error = unpack_archive(data.as_slice(), target.path()).unwrap_err();
            assert!(
                matches!(error, ExportError::BadEntry { .. }),
                "{name}: {error}"
            );
        }
    }

    #[test]
    fn gzip_roundtrip() {
        let dir = volume();
        let source = dir.path().join("nvram/vm_VARS.fd");
        let packed = write_gzip(&source, Vec::new()).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(packed.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, fs::read(&source).unwrap());
        assert_eq!(write_raw(&source, Vec::new()).unwrap(), out);
    }
}
