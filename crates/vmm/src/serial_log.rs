//! The serial log of a VM (`<data>/logs/<vm-uuid>/serial.log`): QEMU appends the guest's console
//! output to it (`logfile=...,logappend=on`, a file opened `O_APPEND`), and a guest can write
//! without end. The log is capped: at every run start and, while the VM runs, every
//! [`CHECK_INTERVAL`], a log of [`MAX_BYTES`] or more is rotated to `serial.log.1` (the previous
//! `.1` is dropped). While QEMU holds the file the rotation copies it and truncates it in place
//! (QEMU's appends continue at the new end); bytes written between the copy and the truncation
//! are lost, at most what the guest writes in that instant. Files are 0600, the directory 0700.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Size at which a serial log is rotated.
pub const MAX_BYTES: u64 = 8 * 1024 * 1024;
/// How often a running VM's log size is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The line the engine writes into a VM's serial log before each run, so that a reader can show
/// the current or last run alone (`ferrovirt logs`).
pub const RUN_MARKER: &str = "[ferrovirt] run started";

/// `serial.log.1`: the rotated, older part of the log.
pub fn rotated_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Rotates `log` when it holds `max_bytes` or more: copies it to `serial.log.1` (crash-safely,
/// 0600) and truncates it in place. Returns whether it rotated.
pub fn rotate_if_over(log: &Path, max_bytes: u64) -> io::Result<bool> {
    let size = match std::fs::metadata(log) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if size < max_bytes {
        return Ok(false);
    }
    ferrovirt_storage::atomic::copy_file(log, &rotated_path(log), 0o600)
        .map_err(|e| io::Error::other(e.to_string()))?;
    OpenOptions::new().write(true).open(log)?.set_len(0)?;
    Ok(true)
}

/// Prepares the log for a new run: its directory 0700, the file 0600 (created before QEMU opens
/// it, so QEMU's own mode never applies), rotated when over `max_bytes`, and the run marker.
pub fn start_run(log: &Path, max_bytes: u64) -> io::Result<()> {
    if let Some(dir) = log.parent() {
        ferrovirt_storage::atomic::create_dir_private(dir)
            .map_err(|e| io::Error::other(e.to_string()))?;
    }
    rotate_if_over(log, max_bytes)?;
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut file: File = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)?;
    write!(file, "\r\n{RUN_MARKER} (unix time {seconds})\r\n")
}

/// Keeps rotating `log` while a VM runs (abort the task when the run ends).
pub fn spawn_cap(log: PathBuf, max_bytes: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(CHECK_INTERVAL).await;
            let path = log.clone();
            let rotated =
                tokio::task::spawn_blocking(move || rotate_if_over(&path, max_bytes)).await;
            match rotated {
                Ok(Ok(true)) => tracing::info!(log = %log.display(), "rotated the serial log"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(log = %log.display(), error = %e, "serial log cap"),
                Err(_) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn logs_are_private_and_rotate_at_the_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("logs/uuid/serial.log");
        start_run(&log, 64).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&log), 0o600);
        assert_eq!(mode(log.parent().unwrap()), 0o700);
        // A writer that keeps its O_APPEND descriptor (as QEMU does) across a rotation.
        let mut qemu = OpenOptions::new().append(true).open(&log).unwrap();
        qemu.write_all(&[b'a'; 100]).unwrap();
        assert!(rotate_if_over(&log, 64).unwrap());
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        let rotated = std::fs::read(rotated_path(&log)).unwrap();
        assert!(rotated.ends_with(&[b'a'; 100]));
        assert_eq!(mode(&rotated_path(&log)), 0o600);
        qemu.write_all(b"after").unwrap();
        assert_eq!(
            std::fs::read(&log).unwrap(),
            b"after",
            "appends continue at the start"
        );
        assert!(!rotate_if_over(&log, 64).unwrap());
        // The next run's start rotates too, keeping one older part.
        qemu.write_all(&[b'b'; 100]).unwrap();
        start_run(&log, 64).unwrap();
        assert!(
            std::fs::read(rotated_path(&log))
                .unwrap()
                .starts_with(b"after")
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains(RUN_MARKER), "{text}");
    }
}
