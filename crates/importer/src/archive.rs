//! `contentType: archive`: a tar unpacked into a filesystem volume (VM export's manifests bring
//! the backend-storage PVC, with the TPM state and VARS file, this way). File modes are kept;
//! an entry with an absolute path, a `..` component, or a link that points outside the volume
//! refuses the whole archive; devices and FIFOs are refused too. The archive is unpacked into a
//! temporary directory beside the volume's files and moved into place only when it was whole.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::ImportError;

/// Why an entry's path (or a link's target) is refused, `None` when it stays inside.
pub fn unsafe_entry_path(path: &Path) -> Option<&'static str> {
    let mut depth: usize = 0;
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return Some("an absolute path"),
            Component::ParentDir => {
                if depth == 0 {
                    return Some("a path that leaves the volume ('..')");
                }
                depth -= 1;
            }
            Component::CurDir => {}
            Component::Normal(_) => depth += 1,
        }
    }
    None
}

/// Whether a symbolic link at `entry` pointing to `target` stays inside the volume.
pub fn link_stays_inside(entry: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let parent = entry.parent().unwrap_or(Path::new(""));
    unsafe_entry_path(&parent.join(target)).is_none()
}

/// Unpacks `archive` into `volume` (a directory). Returns the number of entries unpacked.
pub fn unpack(archive: impl Read, volume: &Path) -> Result<u64, ImportError> {
    let staging = volume.join(format!(".archive.tmp-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| ImportError::io(&staging, e))?;
    }
    std::fs::create_dir(&staging).map_err(|e| ImportError::io(&staging, e))?;
    let result = unpack_into(archive, &staging).and_then(|count| {
        publish(&staging, volume)?;
        Ok(count)
    });
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn unpack_into(archive: impl Read, staging: &Path) -> Result<u64, ImportError> {
    let mut archive = tar::Archive::new(archive);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let entries = archive
        .entries()
        .map_err(|e| ImportError::Format(format!("the archive cannot be read as tar: {e}")))?;
    let mut count = 0;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            ImportError::Format(format!("the archive is damaged or truncated: {e}"))
        })?;
        let path: PathBuf = entry
            .path()
            .map_err(|e| ImportError::Format(format!("an archive entry has a bad path: {e}")))?
            .into_owned();
        if let Some(why) = unsafe_entry_path(&path) {
            return Err(ImportError::Format(format!(
                "archive entry {} is {why}; only paths inside the volume are unpacked",
                path.display()
            )));
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| ImportError::Format(format!("archive link {}: {e}", path.display())))?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let inside = if kind.is_symlink() {
                link_stays_inside(&path, &target)
            } else {
                unsafe_entry_path(&target).is_none()
            };
            if !inside {
                return Err(ImportError::Format(format!(
                    "archive link {} points to {}, outside the volume; links must stay inside it",
                    path.display(),
                    target.display()
                )));
            }
        } else if !(kind.is_file() || kind.is_dir() || kind.is_contiguous()) {
            if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
                continue;
            }
            return Err(ImportError::Format(format!(
                "archive entry {} is a device, FIFO or other special file, which is not unpacked",
                path.display()
            )));
        }
        let unpacked = entry
            .unpack_in(staging)
            .map_err(|e| ImportError::from_write(staging, e))?;
        if !unpacked {
            return Err(ImportError::Format(format!(
                "archive entry {} would be written outside the volume",
                path.display()
            )));
        }
        count += 1;
    }
    Ok(count)
}

/// Moves what the staging directory holds into the volume, then syncs the volume directory.
fn publish(staging: &Path, volume: &Path) -> Result<(), ImportError> {
    let entries = std::fs::read_dir(staging).map_err(|e| ImportError::io(staging, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ImportError::io(staging, e))?;
        let target = volume.join(entry.file_name());
        if target.is_dir() && !target.is_symlink() {
            std::fs::remove_dir_all(&target).map_err(|e| ImportError::io(&target, e))?;
        }
        std::fs::rename(entry.path(), &target).map_err(|e| ImportError::io(&target, e))?;
    }
    ferrovirt_storage::atomic::fsync_dir(volume).map_err(|e| ImportError::Io(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths() {
        assert_eq!(
            unsafe_entry_path(Path::new("swtpm/x/tpm2-00.permall")),
            None
        );
        assert!(unsafe_entry_path(Path::new("/etc/passwd")).is_some());
        assert!(unsafe_entry_path(Path::new("../x")).is_some());
        assert!(unsafe_entry_path(Path::new("a/../../x")).is_some());
        assert_eq!(unsafe_entry_path(Path::new("a/../x")), None);
        assert!(link_stays_inside(Path::new("a/l"), Path::new("../b")));
        assert!(!link_stays_inside(Path::new("a/l"), Path::new("../../b")));
        assert!(!link_stays_inside(Path::new("l"), Path::new("/etc")));
    }

    proptest! {
        /// A path accepted by the check never resolves (lexically) outside the volume.
        #[test]
        fn accepted_paths_stay_inside(parts in proptest::collection::vec(
            prop_oneof![Just("..".to_owned()), Just(".".to_owned()), "[a-z]{1,3}"], 0..8)) {
            let path: PathBuf = parts.iter().collect();
            if unsafe_entry_path(&path).is_none() {
                let mut depth: i64 = 0;
                for p in &parts {
                    match p.as_str() { ".." => depth -= 1, "." => {}, _ => depth += 1 }
                    prop_assert!(depth >= 0);
                }
            }
        }
    }
}
