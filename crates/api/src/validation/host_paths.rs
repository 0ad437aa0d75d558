//! Which host files a `hostDisk` volume may name: only paths under an allowed root (the server's
//! `<data-dir>/images` and each `--host-disk-root DIR`). This is the lexical admission check (an
//! absolute path without `.`/`..` components, under a root); the engine resolves the path again
//! when it opens the file, beneath the root's directory without following a symlink out of it
//! (`ferrovirt_vmm::hostpath`), and refuses device nodes unless the root allows them.

use std::path::{Component, Path, PathBuf};

use super::FieldPath;
use crate::kubevirt::VirtualMachineInstanceSpec;
use crate::status::{CauseType, StatusCause};

/// A directory under which `hostDisk` paths may lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedRoot {
    /// An absolute directory path (the engine opens it and resolves beneath it).
    pub path: PathBuf,
    /// Whether block and character device nodes under this root may be used as disks.
    pub allow_devices: bool,
}

impl AllowedRoot {
    /// A root for image files (no device nodes).
    pub fn files(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            allow_devices: false,
        }
    }
}

/// The allowed roots of `hostDisk` paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPathPolicy {
    pub roots: Vec<AllowedRoot>,
}

/// Why a host path is not acceptable (lexically).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPathError {
    #[error("{path:?} is not an absolute path")]
    NotAbsolute { path: String },
    #[error("{path:?} contains a '.' or '..' component; write the path without them")]
    NotNormal { path: String },
    #[error("{path:?} is not under an allowed host-disk root ({roots})")]
    OutsideRoots { path: String, roots: String },
}

impl HostPathPolicy {
    /// The server's policy: `<data-dir>/images` and each `--host-disk-root` (files only).
    pub fn for_data_dir(data_dir: &Path, extra_roots: &[PathBuf]) -> Self {
        let mut roots = vec![AllowedRoot::files(data_dir.join("images"))];
        roots.extend(extra_roots.iter().cloned().map(AllowedRoot::files));
        Self { roots }
    }

    /// The allowed roots, as a message lists them.
    pub fn describe_roots(&self) -> String {
        if self.roots.is_empty() {
            return "none are configured".into();
        }
        let roots: Vec<String> = self
            .roots
            .iter()
            .map(|r| {
                if r.allow_devices {
                    format!("{} (devices allowed)", r.path.display())
                } else {
                    r.path.display().to_string()
                }
            })
            .collect();
        format!("allowed roots: {}", roots.join(", "))
    }

    /// The root `path` lies under and the path relative to it (first matching root wins; a
    /// deeper root listed later is also tried, so the most specific root is chosen).
    pub fn locate(&self, path: &str) -> Result<(&AllowedRoot, PathBuf), HostPathError> {
        let candidate = Path::new(path);
        if !candidate.is_absolute() {
            return Err(HostPathError::NotAbsolute { path: path.into() });
        }
        if candidate
            .components()
            .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
            || path.contains("/./")
            || path.ends_with("/.")
        {
            return Err(HostPathError::NotNormal { path: path.into() });
        }
        self.roots
            .iter()
            .filter_map(|root| {
                candidate
                    .strip_prefix(&root.path)
                    .ok()
                    .filter(|rel| rel.components().next().is_some())
                    .map(|rel| (root, rel.to_path_buf()))
            })
            .max_by_key(|(root, _)| root.path.components().count())
            .ok_or_else(|| HostPathError::OutsideRoots {
                path: path.into(),
                roots: self.describe_roots(),
            })
    }
}

/// The message of a refused `hostDisk` path.
pub fn host_path_message(error: &HostPathError) -> String {
    match error {
        HostPathError::OutsideRoots { .. } => format!(
            "{error}; put the image under one of them, or start the server with \
             --host-disk-root DIR naming its directory"
        ),
        _ => error.to_string(),
    }
}

/// Checks every `hostDisk` path of an instance spec at `spec_path` (`spec.template.spec` for a
/// VM, `spec` for a VMI); causes name `<spec_path>.volumes[N].hostDisk.path`.
pub fn validate_host_disk_paths(
    spec_path: &str,
    spec: &VirtualMachineInstanceSpec,
    policy: &HostPathPolicy,
) -> Vec<StatusCause> {
    let base = FieldPath::new(spec_path).child("volumes");
    spec.volumes()
        .iter()
        .enumerate()
        .filter_map(|(index, volume)| {
            let host_disk = volume.host_disk.as_ref()?;
            if host_disk.path.is_empty() {
                return None; // "is required" is reported by the volume rules
            }
            let error = policy.locate(&host_disk.path).err()?;
            Some(StatusCause::new(
                CauseType::FieldValueInvalid,
                base.index(index).children(&["hostDisk", "path"]).as_str(),
                host_path_message(&error),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HostPathPolicy {
        HostPathPolicy {
            roots: vec![
                AllowedRoot::files("/var/lib/ferrovirt/images"),
                AllowedRoot {
                    path: "/dev/vg0".into(),
                    allow_devices: true,
                },
            ],
        }
    }

    #[test]
    fn paths_under_a_root_are_located() {
        let p = policy();
        let (root, rel) = p.locate("/var/lib/ferrovirt/images/a/disk.qcow2").unwrap();
        assert_eq!(root.path, Path::new("/var/lib/ferrovirt/images"));
        assert_eq!(rel, Path::new("a/disk.qcow2"));
        assert!(p.locate("/dev/vg0/lv1").unwrap().0.allow_devices);
    }

    #[test]
    fn paths_outside_relative_or_dotted_are_refused() {
        let p = policy();
        for (path, what) in [
            ("/etc/shadow", "not under an allowed host-disk root"),
            (
                "/var/lib/ferrovirt/images",
                "not under an allowed host-disk root",
            ),
            (
                "/var/lib/ferrovirt/imagesX/d",
                "not under an allowed host-disk root",
            ),
            ("images/disk.img", "not an absolute path"),
            (
                "/var/lib/ferrovirt/images/../../../etc/shadow",
                "'..' component",
            ),
            ("/var/lib/ferrovirt/images/./d", "'..' component"),
        ] {
            let err = p.locate(path).unwrap_err();
            assert!(err.to_string().contains(what), "{path}: {err}");
        }
        let message = host_path_message(&p.locate("/etc/shadow").unwrap_err());
        assert!(
            message
                .contains("allowed roots: /var/lib/ferrovirt/images, /dev/vg0 (devices allowed)"),
            "{message}"
        );
        assert!(message.contains("--host-disk-root"), "{message}");
        assert!(
            HostPathPolicy::default()
                .locate("/x/y")
                .unwrap_err()
                .to_string()
                .contains("none are configured")
        );
    }
}
