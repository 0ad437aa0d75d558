//! Opening `hostDisk` files beneath their allowed root, with no window between the check and the
//! use: the root directory is opened, the path is resolved beneath it with `openat2(2)` and
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` (a symlink or `..` that leads out of the root fails
//! with `EXDEV`), the file's type is read from the opened descriptor (device nodes only where the
//! root allows them), and QEMU gets that very descriptor through an fd set (`-add-fd`,
//! `/dev/fdset/N`), never the path. `DiskOrCreate` creates the file beneath the root too (0600).
//!
//! The lexical rules (absolute, no `.`/`..`, under a root) are `ferrovirt_api`'s
//! [`HostPathPolicy`]; [`check_host_disk_paths`] adds the resolution on the host for admission.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use ferrovirt_api::kubevirt::VirtualMachineInstanceSpec;
use ferrovirt_api::status::{CauseType, StatusCause};
pub use ferrovirt_api::validation::host_paths::{
    AllowedRoot, HostPathError as LexicalError, HostPathPolicy, host_path_message,
};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Why a host path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HostPathFault {
    #[error("{}", host_path_message(.0))]
    Lexical(LexicalError),
    #[error(
        "{path:?} leads out of its allowed root {root} (through a symbolic link or '..'); use \
         the file's real path under the root, or copy the image into the root"
    )]
    Escapes { path: String, root: PathBuf },
    #[error(
        "{path:?} is a device node; device nodes are refused unless the root allows them \
         ({root} does not)"
    )]
    Device { path: String, root: PathBuf },
    #[error("{path:?} is a {kind}, not a disk image file")]
    NotAFile { path: String, kind: &'static str },
    #[error("{path:?} does not exist; create it, or use `type: DiskOrCreate` with a capacity")]
    Missing { path: String },
    #[error("{path:?} changed while it was being opened; try again")]
    Changed { path: String },
    #[error("cannot {action} {path:?}: {errno}")]
    Io {
        action: &'static str,
        path: String,
        errno: Errno,
    },
}

/// An opened host disk file.
#[derive(Debug)]
pub struct OpenedHostFile {
    /// The path as the spec names it.
    pub path: String,
    /// Opened read-only.
    pub read_only: OwnedFd,
    /// Opened read-write (`None` for a read-only disk).
    pub read_write: Option<OwnedFd>,
    pub is_device: bool,
}

fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::Directory => "directory",
        FileType::Fifo => "named pipe",
        FileType::Socket => "socket",
        FileType::Symlink => "symbolic link",
        _ => "special file",
    }
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

fn open_root(root: &AllowedRoot, path: &str) -> Result<OwnedFd, HostPathFault> {
    rustix::fs::open(
        &root.path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| HostPathFault::Io {
        action: "open the allowed root of",
        path: path.to_owned(),
        errno,
    })
}

fn beneath(
    root_fd: &OwnedFd,
    root: &AllowedRoot,
    path: &str,
    relative: &Path,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, HostPathFault> {
    rustix::fs::openat2(
        root_fd,
        relative,
        flags | OFlags::CLOEXEC,
        mode,
        resolve_flags(),
    )
    .map_err(|errno| match errno {
        Errno::XDEV | Errno::LOOP => HostPathFault::Escapes {
            path: path.to_owned(),
            root: root.path.clone(),
        },
        Errno::NOENT => HostPathFault::Missing {
            path: path.to_owned(),
        },
        errno => HostPathFault::Io {
            action: "open",
            path: path.to_owned(),
            errno,
        },
    })
}

/// Resolves `path` beneath its root without opening the file for I/O (an `O_PATH` descriptor:
/// no side effects even on a device node) and checks its type. Returns the root and the type.
pub fn probe(
    policy: &HostPathPolicy,
    path: &str,
) -> Result<(AllowedRoot, FileType), HostPathFault> {
    let (root, relative) = policy.locate(path).map_err(HostPathFault::Lexical)?;
    let root_fd = open_root(root, path)?;
    let fd = beneath(&root_fd, root, path, &relative, OFlags::PATH, Mode::empty())?;
    let kind = file_type(&fd, path)?;
    check_kind(root, path, kind)?;
    Ok((root.clone(), kind))
}

fn file_type(fd: &impl AsFd, path: &str) -> Result<FileType, HostPathFault> {
    rustix::fs::fstat(fd)
        .map(|st| FileType::from_raw_mode(st.st_mode))
        .map_err(|errno| HostPathFault::Io {
            action: "stat",
            path: path.to_owned(),
            errno,
        })
}

fn identity(fd: &impl AsFd, path: &str) -> Result<(u64, u64), HostPathFault> {
    rustix::fs::fstat(fd)
        .map(|st| (st.st_dev, st.st_ino))
        .map_err(|errno| HostPathFault::Io {
            action: "stat",
            path: path.to_owned(),
            errno,
        })
}

fn check_kind(root: &AllowedRoot, path: &str, kind: FileType) -> Result<(), HostPathFault> {
    match kind {
        FileType::RegularFile => Ok(()),
        FileType::BlockDevice | FileType::CharacterDevice if root.allow_devices => Ok(()),
        FileType::BlockDevice | FileType::CharacterDevice => Err(HostPathFault::Device {
            path: path.to_owned(),
            root: root.path.clone(),
        }),
        other => Err(HostPathFault::NotAFile {
            path: path.to_owned(),
            kind: kind_name(other),
        }),
    }
}

/// Opens a host disk beneath its root: read-only, and read-write too unless `read_only`. With
/// `create_with_capacity`, a missing file is created beneath the root (mode 0600, sparse, that
/// many bytes). Every descriptor is checked to be the file the first resolution found.
pub fn open_host_disk(
    policy: &HostPathPolicy,
    path: &str,
    read_only: bool,
    create_with_capacity: Option<u64>,
) -> Result<OpenedHostFile, HostPathFault> {
    let (root, relative) = policy.locate(path).map_err(HostPathFault::Lexical)?;
    let root_fd = open_root(root, path)?;
    let probed = match beneath(&root_fd, root, path, &relative, OFlags::PATH, Mode::empty()) {
        Err(HostPathFault::Missing { .. }) if create_with_capacity.is_some() => {
            let created = beneath(
                &root_fd,
                root,
                path,
                &relative,
                OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
                Mode::from_raw_mode(0o600),
            )?;
            rustix::fs::ftruncate(&created, create_with_capacity.unwrap_or(0)).map_err(
                |errno| HostPathFault::Io {
                    action: "size",
                    path: path.to_owned(),
                    errno,
                },
            )?;
            created
        }
        other => other?,
    };
    let kind = file_type(&probed, path)?;
    check_kind(root, path, kind)?;
    let expected = identity(&probed, path)?;
    let open = |flags: OFlags| -> Result<OwnedFd, HostPathFault> {
        let fd = beneath(
            &root_fd,
            root,
            path,
            &relative,
            flags | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        if identity(&fd, path)? != expected {
            return Err(HostPathFault::Changed {
                path: path.to_owned(),
            });
        }
        // QEMU does its own blocking I/O on the descriptor.
        let flags = rustix::fs::fcntl_getfl(&fd).map_err(|errno| HostPathFault::Io {
            action: "read the flags of",
            path: path.to_owned(),
            errno,
        })?;
        rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(|errno| {
            HostPathFault::Io {
                action: "set the flags of",
                path: path.to_owned(),
                errno,
            }
        })?;
        Ok(fd)
    };
    Ok(OpenedHostFile {
        path: path.to_owned(),
        read_only: open(OFlags::RDONLY)?,
        read_write: if read_only {
            None
        } else {
            Some(open(OFlags::RDWR)?)
        },
        is_device: kind != FileType::RegularFile,
    })
}

/// The admission check on the host: for each `hostDisk` of an instance spec at `spec_path`, the
/// lexical rules and, when the file exists, its resolution beneath the root (a symlink out of the
/// root or a device node is refused); causes name `<spec_path>.volumes[N].hostDisk.path`. A
/// missing file is left to the start (`DiskOrCreate` creates it).
pub fn check_host_disk_paths(
    spec_path: &str,
    spec: &VirtualMachineInstanceSpec,
    policy: &HostPathPolicy,
) -> Vec<StatusCause> {
    spec.volumes()
        .iter()
        .enumerate()
        .filter_map(|(index, volume)| {
            let host_disk = volume.host_disk.as_ref()?;
            if host_disk.path.is_empty() {
                return None;
            }
            match probe(policy, &host_disk.path) {
                Ok(_) | Err(HostPathFault::Missing { .. }) => None,
                Err(fault) => Some(StatusCause::new(
                    CauseType::FieldValueInvalid,
                    format!("{spec_path}.volumes[{index}].hostDisk.path"),
                    fault.to_string(),
                )),
            }
        })
        .collect()
}

/// Whether `path` is what QEMU is given for a disk opened by [`open_host_disk`].
pub fn is_fdset_path(path: &Path) -> bool {
    path.starts_with("/dev/fdset")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
        policy: HostPathPolicy,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("images");
        let outside = tmp.path().join("secret");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(&outside, b"not yours").unwrap();
        std::fs::write(root.join("disk.img"), b"QFI\xfbrest").unwrap();
        let policy = HostPathPolicy {
            roots: vec![AllowedRoot::files(&root)],
        };
        Fixture {
            _tmp: tmp,
            root,
            outside,
            policy,
        }
    }

    fn p(path: &Path) -> String {
        path.display().to_string()
    }

    #[test]
    fn a_file_under_the_root_is_opened_both_ways() {
        let f = fixture();
        let opened = open_host_disk(&f.policy, &p(&f.root.join("disk.img")), false, None).unwrap();
        assert!(!opened.is_device);
        let mut magic = [0u8; 4];
        rustix::io::pread(&opened.read_only, &mut magic, 0).unwrap();
        assert_eq!(&magic, b"QFI\xfb");
        let rw = opened.read_write.unwrap();
        let flags = rustix::fs::fcntl_getfl(&rw).unwrap();
        assert!(flags.contains(OFlags::RDWR) && !flags.contains(OFlags::NONBLOCK));
        assert!(
            open_host_disk(&f.policy, &p(&f.root.join("disk.img")), true, None)
                .unwrap()
                .read_write
                .is_none()
        );
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let f = fixture();
        std::os::unix::fs::symlink(&f.outside, f.root.join("escape.img")).unwrap();
        std::os::unix::fs::symlink("../../secret", f.root.join("sub/relative.img")).unwrap();
        std::os::unix::fs::symlink(&f.outside, f.root.join("sub/dir-link")).unwrap();
        for name in ["escape.img", "sub/relative.img"] {
            let path = p(&f.root.join(name));
            let err = open_host_disk(&f.policy, &path, false, None).unwrap_err();
            assert!(
                matches!(err, HostPathFault::Escapes { .. }),
                "{name}: {err}"
            );
            assert!(
                err.to_string().contains("leads out of its allowed root"),
                "{err}"
            );
            assert!(matches!(
                probe(&f.policy, &path),
                Err(HostPathFault::Escapes { .. })
            ));
        }
        // A symlink to a file inside the root stays beneath it: fine.
        std::os::unix::fs::symlink("disk.img", f.root.join("alias.img")).unwrap();
        open_host_disk(&f.policy, &p(&f.root.join("alias.img")), true, None).unwrap();
        assert_eq!(std::fs::read(&f.outside).unwrap(), b"not yours");
    }

    #[test]
    fn device_nodes_need_a_root_that_allows_them() {
        let tmp = tempfile::tempdir().unwrap();
        // /dev/null as a "disk": refused under a files-only root, accepted where devices are.
        let files = HostPathPolicy {
            roots: vec![AllowedRoot::files("/dev")],
        };
        let err = open_host_disk(&files, "/dev/null", true, None).unwrap_err();
        assert!(matches!(err, HostPathFault::Device { .. }), "{err}");
        let devices = HostPathPolicy {
            roots: vec![AllowedRoot {
                path: "/dev".into(),
                allow_devices: true,
            }],
        };
        assert!(
            open_host_disk(&devices, "/dev/null", true, None)
                .unwrap()
                .is_device
        );
        // Directories and pipes are not disks.
        let dirs = HostPathPolicy {
            roots: vec![AllowedRoot::files(tmp.path())],
        };
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        let err = open_host_disk(&dirs, &p(&tmp.path().join("d")), true, None).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn disk_or_create_creates_beneath_the_root_only() {
        let f = fixture();
        let path = f.root.join("sub/new.img");
        let opened = open_host_disk(&f.policy, &p(&path), false, Some(1 << 20)).unwrap();
        drop(opened);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 1 << 20);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Creating through a directory symlink that leads out of the root is refused.
        std::os::unix::fs::symlink(f.outside.parent().unwrap(), f.root.join("out")).unwrap();
        let err = open_host_disk(
            &f.policy,
            &p(&f.root.join("out/evil.img")),
            false,
            Some(4096),
        )
        .unwrap_err();
        assert!(matches!(err, HostPathFault::Escapes { .. }), "{err}");
        assert!(!f.outside.parent().unwrap().join("evil.img").exists());
        // A missing file without DiskOrCreate names the fix.
        let err = open_host_disk(&f.policy, &p(&f.root.join("nope.img")), false, None).unwrap_err();
        assert!(err.to_string().contains("DiskOrCreate"), "{err}");
    }
}
