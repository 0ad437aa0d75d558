//! CDI's importer, for one host: fills a local-path volume from a DataVolume's source and
//! leaves exactly one thing behind, the whole raw `disk.img` (or, for `contentType: archive`, the
//! unpacked files), or nothing in use. A download is read once, counted for the progress,
//! hashed for the `checksum`, decompressed (`.gz` with flate2, `.xz` with xz2) when its magic says
//! so, written to a temporary file, its format taken from its magic ([`sniff`]), checked with
//! `qemu-img info -f FORMAT` (no backing file, no external data, no foreign extents: [`image`]),
//! converted to raw into another temporary file, synced and renamed over `disk.img`. A crash
//! leaves only temporary files, removed when the import starts again from the beginning.
//!
//! Modules: `sniff` (magic numbers; nothing else), `http` (ureq + rustls with the
//! certConfigMap's CA), `image` (qemu-img, publish), `archive` (tar with path checks); this file
//! holds the pipeline that uses them.

pub mod archive;
pub mod http;
pub mod image;
pub mod sniff;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ferrovirt_api::cdi::{Checksum, ChecksumAlgorithm};
use sha2::Digest;

pub use http::HttpRequest;
pub use sniff::{Format, sniff};

/// Why an import failed; the message is the DataVolume's condition message and Event.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Source(String),
    #[error("the download is truncated: {got} of {expected} bytes arrived")]
    Truncated { got: u64, expected: u64 },
    #[error("the download is truncated or damaged: {0}")]
    Damaged(String),
    #[error("checksum mismatch: expected {algorithm} {expected}, the data has {actual}")]
    ChecksumMismatch {
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Format(String),
    #[error(
        "Virtual image size {virtual_size} is larger than the reported available storage {available}. A larger PVC is required."
    )]
    TooLarge { virtual_size: u64, available: u64 },
    #[error("no space left on the volume: {0}")]
    NoSpace(String),
    #[error("{0}")]
    Tool(String),
    #[error("{0}")]
    Io(String),
}

impl ImportError {
    pub(crate) fn io(path: &Path, error: io::Error) -> Self {
        Self::Io(format!("{}: {error}", path.display()))
    }

    /// A write error: a full disk is [`ImportError::NoSpace`].
    pub(crate) fn from_write(path: &Path, error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::StorageFull || error.raw_os_error() == Some(28) {
            Self::NoSpace(format!("{}: {error}", path.display()))
        } else {
            Self::io(path, error)
        }
    }
}

/// Where the data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Http(HttpRequest),
    /// A file on this host: an upload's received bytes, or a clone's source image.
    File(PathBuf),
    /// A new empty (sparse) raw image.
    Blank,
}

/// Bytes read of the source, and how many there are (0: unknown), shared with whoever shows
/// the progress.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Percent done, `None` when the total is unknown.
    pub fn percent(&self) -> Option<f64> {
        let total = self.total.load(Ordering::Relaxed);
        (total > 0).then(|| (self.done() as f64 * 100.0 / total as f64).min(100.0))
    }
}

/// One import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub source: Source,
    /// The volume directory (`<data>/volumes/pvc-<uid>`).
    pub volume: PathBuf,
    /// The size `disk.img` gets at least, and the largest virtual size accepted (0: no limit).
    pub image_bytes: u64,
    /// `contentType: archive`.
    pub archive: bool,
    pub checksum: Option<Checksum>,
}

/// How an import went.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSummary {
    /// Bytes read from the source (before decompression).
    pub read_bytes: u64,
    /// The image's format (`None` for an archive or a blank image).
    pub format: Option<Format>,
    pub virtual_size: u64,
    pub seconds: f64,
}

impl ImportSummary {
    /// MB/s read from the source.
    pub fn throughput_mb_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.read_bytes as f64 / 1e6 / self.seconds
        } else {
            0.0
        }
    }
}

/// The temporary file a download is written to before its format is checked.
pub fn temp_download(volume: &Path) -> PathBuf {
    volume.join(".download.import-tmp")
}

/// Removes what an interrupted import left in `volume` (never `disk.img`).
pub fn remove_leftovers(volume: &Path) {
    let _ = std::fs::remove_file(temp_download(volume));
    let _ = std::fs::remove_file(image::temp_image(volume));
    if let Ok(entries) = std::fs::read_dir(volume) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".archive.tmp-")
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Md5 => Self::Md5(md5::Md5::new()),
            ChecksumAlgorithm::Sha1 => Self::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
            ChecksumAlgorithm::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Md5(h) => h.update(bytes),
            Self::Sha1(h) => h.update(bytes),
            Self::Sha256(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Self::Md5(h) => h.finalize().to_vec(),
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
            Self::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The source as read: counted into the progress and hashed.
struct Counted<R> {
    inner: R,
    progress: Arc<Progress>,
    hasher: Option<Hasher>,
    read: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.read += n as u64;
        self.progress.add(n as u64);
        Ok(n)
    }
}

/// Reads up to `limit` bytes (fewer only at the end of the stream).
fn read_head<R: Read + ?Sized>(reader: &mut R, limit: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(limit);
    reader.take(limit as u64).read_to_end(&mut head)?;
    Ok(head)
}

fn damaged(error: io::Error) -> ImportError {
    ImportError::Damaged(error.to_string())
}

/// Runs an import to its end. `progress` is updated as the source is read.
pub fn run(request: &ImportRequest, progress: Arc<Progress>) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    std::fs::create_dir_all(&request.volume).map_err(|e| ImportError::io(&request.volume, e))?;
    remove_leftovers(&request.volume);
    let (body, length): (Box<dyn Read + Send>, Option<u64>) = match &request.source {
        Source::Blank => return blank(request, started),
        Source::Http(http) => {
            let download = http::open(http)?;
            (download.body, download.length)
        }
        Source::File(path) => {
            let file = std::fs::File::open(path).map_err(|e| ImportError::io(path, e))?;
            let len = file.metadata().map(|m| m.len()).ok();
            (Box::new(file), len)
        }
    };
    progress.set_total(length.unwrap_or(0));
    let mut counted = Counted {
        inner: body,
        progress,
        hasher: request.checksum.as_ref().map(|c| Hasher::new(c.algorithm)),
        read: 0,
    };
    let result = decode_and_store(&mut counted, request);
    // Whatever the decoder left unread still counts for the checksum and the length.
    let drained = result
        .is_ok()
        .then(|| io::copy(&mut counted, &mut io::sink()));
    if let Some(Err(error)) = drained {
        remove_leftovers(&request.volume);
        return Err(damaged(error));
    }
    let stored = match result {
        Ok(stored) => stored,
        Err(error) => {
            remove_leftovers(&request.volume);
            return Err(match (error, length) {
                (ImportError::Damaged(_), Some(expected)) if counted.read < expected => {
                    ImportError::Truncated {
                        got: counted.read,
                        expected,
                    }
                }
                (error, _) => error,
            });
        }
    };
    if let Some(expected) = length
        && counted.read != expected
    {
        remove_leftovers(&request.volume);
        return Err(ImportError::Truncated {
            got: counted.read,
            expected,
        });
    }
    if let (Some(checksum), Some(hasher)) = (&request.checksum, counted.hasher.take()) {
        let actual = hasher.hex();
        if actual != checksum.hex {
            remove_leftovers(&request.volume);
            return Err(ImportError::ChecksumMismatch {
                algorithm: algorithm_name(checksum.algorithm),
                expected: checksum.hex.clone(),
                actual,
            });
        }
    }
    let summary = |format, virtual_size| ImportSummary {
        read_bytes: counted.read,
        format,
        virtual_size,
        seconds: started.elapsed().as_secs_f64(),
    };
    match stored {
        Stored::Archive => Ok(summary(None, 0)),
        Stored::Image { path, format } => {
            let published = check_and_publish(&path, format, request);
            if published.is_err() {
                remove_leftovers(&request.volume);
            }
            let info = published?;
            Ok(summary(Some(format), info.virtual_size))
        }
    }
}

fn algorithm_name(algorithm: ChecksumAlgorithm) -> &'static str {
    match algorithm {
        ChecksumAlgorithm::Md5 => "md5",
        ChecksumAlgorithm::Sha1 => "sha1",
        ChecksumAlgorithm::Sha256 => "sha256",
        ChecksumAlgorithm::Sha512 => "sha512",
    }
}

enum Stored {
    Image { path: PathBuf, format: Format },
    Archive,
}

/// Decompresses (by magic) and stores the stream: unpacked for an archive, else into the
/// temporary download file.
fn decode_and_store(reader: &mut dyn Read, request: &ImportRequest) -> Result<Stored, ImportError> {
    let head = read_head(reader, sniff::SNIFF_BYTES).map_err(damaged)?;
    let outer = sniff(&head);
    let chained = io::Cursor::new(head).chain(reader);
    let mut decoded: Box<dyn Read> = match outer {
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(chained)),
        Format::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(chained)),
        _ => Box::new(chained),
    };
    let inner_head = if outer.is_compression() {
        read_head(&mut decoded, sniff::SNIFF_BYTES).map_err(damaged)?
    } else {
        Vec::new()
    };
    let format = if outer.is_compression() {
        sniff(&inner_head)
    } else {
        outer
    };
    let mut stream = io::Cursor::new(inner_head).chain(decoded);
    if request.archive {
        if format != Format::Tar {
            return Err(ImportError::Format(format!(
                "contentType is archive but the data is not a tar archive (found {format:?}); \
                 give a .tar (optionally .gz or .xz) or leave contentType out for a disk image"
            )));
        }
        archive::unpack(&mut stream, &request.volume).map_err(|e| match e {
            ImportError::Format(m) if m.contains("truncated") || m.contains("damaged") => {
                ImportError::Damaged(m)
            }
            other => other,
        })?;
        return Ok(Stored::Archive);
    }
    match format {
        Format::Tar => {
            return Err(ImportError::Format(
                "the data is a tar archive, not a disk image; set contentType: archive to unpack \
                 it into the volume"
                    .into(),
            ));
        }
        Format::VmdkDescriptor => {
            return Err(ImportError::Format(
                "the data is a VMDK descriptor that names other files; import a monolithic \
                 (single-file) VMDK instead"
                    .into(),
            ));
        }
        _ => {}
    }
    let path = temp_download(&request.volume);
    let mut file = std::fs::File::create(&path).map_err(|e| ImportError::io(&path, e))?;
    copy_sparse(&mut stream, &mut file, &path)?;
    file.sync_all()
        .map_err(|e| ImportError::from_write(&path, e))?;
    Ok(Stored::Image { path, format })
}

/// Copies, seeking over blocks of zeros so that the file stays sparse.
fn copy_sparse(
    reader: &mut dyn Read,
    file: &mut std::fs::File,
    path: &Path,
) -> Result<(), ImportError> {
    use std::io::Seek;
    const BLOCK: usize = 1 << 20;
    let mut buffer = vec![0u8; BLOCK];
    let mut length: u64 = 0;
    loop {
        let mut filled = 0;
        while filled < BLOCK {
            match reader.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(damaged(e)),
            }
        }
        if filled == 0 {
            break;
        }
        let block = &buffer[..filled];
        if block.iter().all(|b| *b == 0) {
            file.seek(io::SeekFrom::Current(filled as i64))
                .map_err(|e| ImportError::io(path, e))?;
        } else {
            file.write_all(block)
                .map_err(|e| ImportError::from_write(path, e))?;
        }
        length += filled as u64;
        if filled < BLOCK {
            break;
        }
    }
    file.set_len(length)
        .map_err(|e| ImportError::from_write(path, e))?;
    Ok(())
}

fn check_and_publish(
    path: &Path,
    format: Format,
    request: &ImportRequest,
) -> Result<image::ImageInfo, ImportError> {
    let info = image::inspect(path, format)?;
    if request.image_bytes > 0 && info.virtual_size > request.image_bytes {
        return Err(ImportError::TooLarge {
            virtual_size: info.virtual_size,
            available: request.image_bytes,
        });
    }
    image::publish_raw(path, &info, &request.volume, request.image_bytes)?;
    Ok(info)
}

fn blank(request: &ImportRequest, started: Instant) -> Result<ImportSummary, ImportError> {
    let tmp = image::temp_image(&request.volume);
    let file = std::fs::File::create(&tmp).map_err(|e| ImportError::io(&tmp, e))?;
    file.set_len(request.image_bytes)
        .map_err(|e| ImportError::from_write(&tmp, e))?;
    file.sync_all()
        .map_err(|e| ImportError::from_write(&tmp, e))?;
    let image = request.volume.join(ferrovirt_api::cdi::DISK_IMAGE_NAME);
    std::fs::rename(&tmp, &image).map_err(|e| ImportError::io(&image, e))?;
    ferrovirt_storage::atomic::fsync_dir(&request.volume)
        .map_err(|e| ImportError::Io(e.to_string()))?;
    Ok(ImportSummary {
        read_bytes: 0,
        format: None,
        virtual_size: request.image_bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}
