//! The local-path provisioner: every volume is a directory `<base_dir>/<volume-name>` (0700).
//!
//! Creation is idempotent. Deletion first renames the volume to a hidden temporary name and then
//! removes it, so a crash mid-delete never leaves a half-deleted directory under the live name
//! (the hidden leftover is cleaned by [`LocalPathProvisioner::remove_stale`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::{self, AtomicError, ctx};
use crate::names::{NameError, VolumeName};

/// Errors of the local-path provisioner.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("local-path volume storage: {0}")]
    Fs(#[from] AtomicError),
    #[error(
        "volume {name:?} does not exist under {base_dir}; create it first (create_volume) or check the name"
    )]
    NotFound { name: String, base_dir: PathBuf },
}

/// Hands out one private directory per volume under a base directory.
#[derive(Debug, Clone)]
pub struct LocalPathProvisioner {
    base_dir: PathBuf,
}

impl LocalPathProvisioner {
    /// Uses `base_dir` (created 0700 if missing) as the parent of all volume directories.
    pub fn new(base_dir: impl Into<PathBuf>) -> Result<Self, ProvisionError> {
        let base_dir = base_dir.into();
        atomic::create_dir_private(&base_dir)?;
        Ok(LocalPathProvisioner { base_dir })
    }

    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// The directory of a volume (whether or not it exists).
    pub fn volume_path(&self, volume_name: &str) -> Result<PathBuf, ProvisionError> {
        let name = VolumeName::new(volume_name)?;
        Ok(self.base_dir.join(name.as_str()))
    }

    /// Creates the volume directory (0700) if needed and returns its path. Idempotent.
    pub fn create_volume(&self, volume_name: &str) -> Result<PathBuf, ProvisionError> {
        let path = self.volume_path(volume_name)?;
        atomic::create_dir_private(&path)?;
        crate::failpoints::hit("volumes.create.after-mkdir")
            .map_err(ctx("provision the volume", &path))?;
        Ok(path)
    }

    /// Deletes a volume and everything in it. Returns `false` when it did not exist.
    pub fn delete_volume(&self, volume_name: &str) -> Result<bool, ProvisionError> {
        let path = self.volume_path(volume_name)?;
        if !path.exists() {
            return Ok(false);
        }
        let doomed = atomic::temp_sibling(&self.base_dir, &volume_name.into());
        fs::rename(&path, &doomed).map_err(ctx("move volume aside for deletion", &path))?;
        atomic::fsync_dir(&self.base_dir)?;
        crate::failpoints::hit("volumes.delete.after-move-aside")
            .map_err(ctx("delete the volume", &doomed))?;
        fs::remove_dir_all(&doomed).map_err(ctx("remove volume directory", &doomed))?;
        atomic::fsync_dir(&self.base_dir)?;
        Ok(true)
    }

    /// Returns the volume's path, or [`ProvisionError::NotFound`].
    pub fn existing_volume(&self, volume_name: &str) -> Result<PathBuf, ProvisionError> {
        let path = self.volume_path(volume_name)?;
        if path.is_dir() {
            Ok(path)
        } else {
            Err(ProvisionError::NotFound {
                name: volume_name.to_owned(),
                base_dir: self.base_dir.clone(),
            })
        }
    }

    /// Names of all volumes, sorted. Hidden leftovers and entries that are not valid volume
    /// directories are ignored.
    pub fn list_volumes(&self) -> Result<Vec<VolumeName>, ProvisionError> {
        let entries = match fs::read_dir(&self.base_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AtomicError::io("list directory", &self.base_dir, e).into()),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(ctx("list directory", &self.base_dir))?;
            let is_dir = entry
                .file_type()
                .map_err(ctx("stat", &entry.path()))?
                .is_dir();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let (true, Ok(name)) = (is_dir, VolumeName::new(&name)) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes leftovers of interrupted deletions. Call at startup.
    pub fn remove_stale(&self) -> Result<usize, ProvisionError> {
        Ok(atomic::remove_stale_temp_files(&self.base_dir)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_list_delete_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let prov = LocalPathProvisioner::new(dir.path().join("volumes")).unwrap();
        let a = prov
            .create_volume("persistent-state-for-vm1-abcde")
            .unwrap();
        assert!(a.is_dir());
        assert_eq!(
            fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::write(a.join("data"), b"x").unwrap();
        // Idempotent and keeps content.
        assert_eq!(
            prov.create_volume("persistent-state-for-vm1-abcde")
                .unwrap(),
            a
        );
        assert!(a.join("data").exists());
        prov.create_volume("b").unwrap();
        let names: Vec<String> = prov
            .list_volumes()
            .unwrap()
            .into_iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, vec!["b", "persistent-state-for-vm1-abcde"]);
        assert!(prov.delete_volume("b").unwrap());
        assert!(!prov.delete_volume("b").unwrap());
        assert_eq!(prov.list_volumes().unwrap().len(), 1);
        assert!(matches!(
            prov.existing_volume("b"),
            Err(ProvisionError::NotFound { .. })
        ));
        assert_eq!(
            prov.existing_volume("persistent-state-for-vm1-abcde")
                .unwrap(),
            a
        );
    }

    #[test]
    fn path_traversal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let prov = LocalPathProvisioner::new(dir.path()).unwrap();
        for bad in ["..", "../x", "a/b", ".hidden", "/etc"] {
            assert!(matches!(
                prov.create_volume(bad),
                Err(ProvisionError::InvalidName(_))
            ));
            assert!(prov.delete_volume(bad).is_err());
        }
    }

    #[test]
    fn list_ignores_leftovers_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let prov = LocalPathProvisioner::new(dir.path()).unwrap();
        prov.create_volume("v").unwrap();
        fs::create_dir(dir.path().join(".v.tmp-1-1")).unwrap();
        fs::write(dir.path().join("file"), b"").unwrap();
        fs::create_dir(dir.path().join("Upper")).unwrap();
        let names = prov.list_volumes().unwrap();
        assert_eq!(names.len(), 1);
        assert_eq!(prov.remove_stale().unwrap(), 1);
    }
}
