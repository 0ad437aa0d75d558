//! The local key-encryption keys: `<data-dir>/state-keys/kek-<n>.key`, 32 random bytes each,
//! 0600 in a 0700 dir, created at first use; the highest `n` is the current one. Older ones stay
//! (data keys wrapped by them still need them) until no record names them.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::data_key::{DataKey, KEY_BYTES};
use crate::error::KeyError;

/// The dir in the data dir that holds the local KEKs.
pub const KEK_DIR: &str = "state-keys";

/// The local KEKs of one data dir.
#[derive(Debug, Clone)]
pub struct LocalKeks {
    dir: PathBuf,
}

impl LocalKeks {
    /// The KEKs of `data_dir`.
    pub fn of_data_dir(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join(KEK_DIR),
        }
    }

    /// The dir of the key files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of KEK `version`.
    pub fn file(&self, version: u32) -> PathBuf {
        self.dir.join(format!("kek-{version}.key"))
    }

    /// The KEK id records carry for `version`.
    pub fn id(version: u32) -> String {
        format!("local-{version}")
    }

    /// The version in a KEK id (`local-3` -> 3).
    pub fn version_of(id: &str) -> Option<u32> {
        id.strip_prefix("local-")?.parse().ok()
    }

    fn versions(&self) -> Result<Vec<u32>, KeyError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir, e)),
        };
        let mut versions: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("kek-")?
                    .strip_suffix(".key")?
                    .parse()
                    .ok()
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// The current KEK (the highest version), created (version 1) at first use.
    pub fn current(&self) -> Result<(u32, DataKey), KeyError> {
        match self.versions()?.last() {
            Some(&version) => Ok((version, self.get(version)?)),
            None => {
                let version = self.create_next()?;
                Ok((version, self.get(version)?))
            }
        }
    }

    /// KEK `version`.
    pub fn get(&self, version: u32) -> Result<DataKey, KeyError> {
        let path = self.file(version);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => zeroize::Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::KekMissing {
                    kek_id: Self::id(version),
                    path,
                });
            }
            Err(e) => return Err(io(&path, e)),
        };
        DataKey::from_bytes(&bytes).map_err(|_| KeyError::Malformed {
            path: path.clone(),
            reason: format!(
                "a local key-encryption key must be exactly {KEY_BYTES} bytes, found {}; put the \
                 original file back from a backup",
                bytes.len()
            ),
        })
    }

    /// Makes a new KEK with the next version (it becomes the current one) and returns its version.
    /// Never replaces an existing file: two callers racing for the same version both end up with
    /// the one that was linked first.
    pub fn create_next(&self) -> Result<u32, KeyError> {
        ferrovirt_storage::atomic::create_dir_private(&self.dir).map_err(|e| KeyError::Io {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        let version = self.versions()?.last().map_or(1, |v| v + 1);
        let key = DataKey::generate()?;
        let target = self.file(version);
        let tmp = self
            .dir
            .join(format!(".kek-{version}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(key.as_bytes())?;
            file.sync_all()
        };
        let result = write().and_then(|()| match std::fs::hard_link(&tmp, &target) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        });
        let _ = std::fs::remove_file(&tmp);
        result.map_err(|e| io(&target, e))?;
        ferrovirt_storage::atomic::fsync_dir(&self.dir).map_err(|e| KeyError::Io {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        Ok(version)
    }
}

fn io(path: &Path, e: std::io::Error) -> KeyError {
    KeyError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_rotated() {
        let data = tempfile::tempdir().unwrap();
        let keks = LocalKeks::of_data_dir(data.path());
        let (v1, k1) = keks.current().unwrap();
        assert_eq!(v1, 1);
        let mode = std::fs::metadata(keks.file(1))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(keks.dir()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(keks.current().unwrap().1.as_bytes(), k1.as_bytes());
        assert_eq!(keks.create_next().unwrap(), 2);
        let (v2, k2) = keks.current().unwrap();
        assert_eq!(v2, 2);
        assert_ne!(k1.as_bytes(), k2.as_bytes());
        assert_eq!(keks.get(1).unwrap().as_bytes(), k1.as_bytes());
        assert!(matches!(keks.get(9), Err(KeyError::KekMissing { .. })));
        assert_eq!(LocalKeks::version_of(&LocalKeks::id(7)), Some(7));
    }
}
