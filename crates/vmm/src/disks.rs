//! Disks of a run, from the KubeVirt volume kinds that make sense on one host: a host file
//! (`hostDisk`, opened beneath an allowed root and handed to QEMU as an fd set, see
//! [`crate::hostpath`]), the image of a `persistentVolumeClaim` on a local-path volume, an
//! `emptyDisk` (a sparse raw file in the runtime dir, gone at stop, as in KubeVirt), and a
//! `cloudInitNoCloud` seed (a small FAT image labelled `cidata`, built with mtools).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferrovirt_storage::VmUuid;

use crate::hostpath::{HostPathFault, HostPathPolicy, open_host_disk};
use crate::machine::{Disk, DiskBus, DiskFormat, DiskMedia, FdSetEntry};

/// The first descriptor number QEMU gets for fd sets (3..63 are the network cards' sockets).
pub const FIRST_PASSED_FD: i32 = 64;

/// Where a disk's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// A `hostDisk` image file; raw or qcow2 (detected from its header). It must lie beneath an
    /// allowed root ([`HostPathPolicy`]). With a capacity, a missing file is created as a sparse
    /// raw image of that size (`DiskOrCreate`).
    HostFile {
        path: PathBuf,
        create_with_capacity: Option<u64>,
    },
    /// The image of a `persistentVolumeClaim` (`disk.img` in its local-path volume, which the
    /// engine provisioned).
    ClaimImage { path: PathBuf },
    /// A blank raw disk of this many bytes, created for the run.
    Empty { capacity_bytes: u64 },
    /// A NoCloud seed for cloud-init.
    CloudInitNoCloud {
        user_data: Option<String>,
        network_data: Option<String>,
    },
}

/// One disk of a VM plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPlan {
    /// The KubeVirt disk name.
    pub name: String,
    pub source: DiskSource,
    pub bus: DiskBus,
    pub read_only: bool,
    pub boot_order: Option<u32>,
    pub serial: Option<String>,
    /// Hard disk or CD-ROM (a CD-ROM's image is opened read-only).
    pub media: DiskMedia,
}

/// Why a disk could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(
        "disk {disk}: the host file {path} cannot be opened: {source}; check the volume's path \
         (for a hostDisk, `type: DiskOrCreate` creates it)"
    )]
    HostFile {
        disk: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("disk {disk}: creating {path}: {source}")]
    Create {
        disk: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("disk {disk}: building the cloud-init seed failed: {detail} (is `mtools` installed?)")]
    Seed { disk: String, detail: String },
    #[error("disk {disk}: hostDisk path {fault}")]
    HostPath {
        disk: String,
        #[source]
        fault: HostPathFault,
    },
}

/// The disks of a run, ready for QEMU: the disks, and the descriptors QEMU must inherit.
#[derive(Debug, Default)]
pub struct PreparedDisks {
    pub disks: Vec<Disk>,
    /// `-add-fd` entries for [`crate::machine::MachineConfig::fd_sets`].
    pub fd_sets: Vec<FdSetEntry>,
    /// `(descriptor number in QEMU, opened file)`, matching `fd_sets`.
    pub fds: Vec<(i32, OwnedFd)>,
}

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// Turns the plan's disks into QEMU disks, creating the per-run files in `runtime_dir`; host
/// disks are opened beneath their allowed root in `policy` and passed as fd sets.
pub fn prepare_disks(
    plans: &[DiskPlan],
    runtime_dir: &Path,
    vm_name: &str,
    vm_uuid: &VmUuid,
    policy: &HostPathPolicy,
) -> Result<PreparedDisks, DiskError> {
    let mut prepared = PreparedDisks::default();
    for plan in plans {
        let read_only = plan.read_only || plan.media == DiskMedia::Cdrom;
        let (path, format) = match &plan.source {
            DiskSource::HostFile {
                path,
                create_with_capacity,
            } => {
                let host_path = path.to_string_lossy();
                let opened = open_host_disk(policy, &host_path, read_only, *create_with_capacity)
                    .map_err(|fault| DiskError::HostPath {
                    disk: plan.name.clone(),
                    fault,
                })?;
                let mut magic = [0u8; 4];
                let read = rustix::io::pread(&opened.read_only, &mut magic, 0).map_err(|e| {
                    DiskError::HostFile {
                        disk: plan.name.clone(),
                        path: path.clone(),
                        source: e.into(),
                    }
                })?;
                let format = if read == 4 && &magic == QCOW2_MAGIC {
                    DiskFormat::Qcow2
                } else {
                    DiskFormat::Raw
                };
                let set = prepared.fd_sets.last().map_or(1, |entry| entry.set + 1);
                let descriptors = [("ro", Some(opened.read_only)), ("rw", opened.read_write)];
                for (access, fd) in descriptors {
                    let Some(fd) = fd else { continue };
                    let child_fd = FIRST_PASSED_FD
                        + i32::try_from(prepared.fds.len()).unwrap_or(i32::MAX - FIRST_PASSED_FD);
                    prepared.fd_sets.push(FdSetEntry {
                        set,
                        child_fd,
                        opaque: format!("disk-{}-{access}", plan.name),
                    });
                    prepared.fds.push((child_fd, fd));
                }
                (PathBuf::from(format!("/dev/fdset/{set}")), format)
            }
            DiskSource::ClaimImage { path } => (path.clone(), detect_format(&plan.name, path)?),
            DiskSource::Empty { capacity_bytes } => {
                let path = runtime_dir.join(format!("empty-{}.img", plan.name));
                create_sparse(&plan.name, &path, *capacity_bytes)?;
                (path, DiskFormat::Raw)
            }
            DiskSource::CloudInitNoCloud {
                user_data,
                network_data,
            } => {
                let path = runtime_dir.join(format!("cloudinit-{}.img", plan.name));
                build_nocloud_seed(
                    &plan.name,
                    &path,
                    vm_name,
                    vm_uuid,
                    user_data.as_deref(),
                    network_data.as_deref(),
                )?;
                (path, DiskFormat::Raw)
            }
        };
        prepared.disks.push(Disk {
            name: plan.name.clone(),
            path,
            format,
            bus: plan.bus,
            read_only,
            boot_order: plan.boot_order,
            serial: plan.serial.clone(),
            media: plan.media,
        });
    }
    Ok(prepared)
}

fn detect_format(disk: &str, path: &Path) -> Result<DiskFormat, DiskError> {
    let mut magic = [0u8; 4];
    let read = File::open(path).and_then(|mut f| {
        let n = f.read(&mut magic)?;
        Ok(n)
    });
    match read {
        Ok(4) if &magic == QCOW2_MAGIC => Ok(DiskFormat::Qcow2),
        Ok(_) => Ok(DiskFormat::Raw),
        Err(source) => Err(DiskError::HostFile {
            disk: disk.to_string(),
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn create_sparse(disk: &str, path: &Path, bytes: u64) -> Result<(), DiskError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|f| f.set_len(bytes))
        .map_err(|source| DiskError::Create {
            disk: disk.to_string(),
            path: path.to_path_buf(),
            source,
        })
}

/// A FAT image labelled `CIDATA` holding `meta-data`, `user-data` and `network-config`.
fn build_nocloud_seed(
    disk: &str,
    path: &Path,
    vm_name: &str,
    vm_uuid: &VmUuid,
    user_data: Option<&str>,
    network_data: Option<&str>,
) -> Result<(), DiskError> {
    let seed_err = |detail: String| DiskError::Seed {
        disk: disk.to_string(),
        detail,
    };
    let dir = path.with_extension("d");
    std::fs::create_dir_all(&dir).map_err(|e| seed_err(format!("{}: {e}", dir.display())))?;
    let meta = format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        vm_uuid.as_str(),
        vm_name
    );
    let mut files = vec![("meta-data", meta)];
    files.push(("user-data", user_data.unwrap_or("").to_string()));
    if let Some(network) = network_data {
        files.push(("network-config", network.to_string()));
    }
    create_sparse(disk, path, 2 * 1024 * 1024)?;
    run(Command::new("mformat")
        .arg("-i")
        .arg(path)
        .args(["-v", "CIDATA", "::"]))
    .map_err(seed_err)?;
    for (name, content) in files {
        let file = dir.join(name);
        std::fs::write(&file, content).map_err(|e| seed_err(format!("{}: {e}", file.display())))?;
        run(Command::new("mcopy")
            .arg("-i")
            .arg(path)
            .arg(&file)
            .arg(format!("::{name}")))
        .map_err(seed_err)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid() -> VmUuid {
        VmUuid::parse("0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d").unwrap()
    }

    #[test]
    fn detects_qcow2_and_raw() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.img");
        std::fs::write(&raw, [0u8; 512]).unwrap();
        let qcow = dir.path().join("q.qcow2");
        ferrovirt_testkit::run_host_tool(
            "qemu-img",
            [
                "create".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                "qcow2".as_ref(),
                qcow.as_os_str(),
                "1M".as_ref(),
            ],
        );
        assert_eq!(detect_format("d", &raw).unwrap(), DiskFormat::Raw);
        assert_eq!(detect_format("d", &qcow).unwrap(), DiskFormat::Qcow2);
        let missing = detect_format("d", &dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    #[test]
    fn empty_disk_is_sparse_and_sized() {
        let dir = tempfile::tempdir().unwrap();
        let plans = vec![DiskPlan {
            name: "scratch".into(),
            source: DiskSource::Empty {
                capacity_bytes: 64 << 20,
            },
            bus: DiskBus::Virtio,
            read_only: false,
            boot_order: None,
            serial: None,
            media: DiskMedia::Disk,
        }];
        let disks = prepare_disks(
            &plans,
            dir.path(),
            "vm",
            &uuid(),
            &HostPathPolicy::default(),
        )
        .unwrap()
        .disks;
        let meta = std::fs::metadata(&disks[0].path).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < 1 << 20, "not sparse");
    }

    #[test]
    fn nocloud_seed_has_label_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let plans = vec![DiskPlan {
            name: "cloudinit".into(),
            source: DiskSource::CloudInitNoCloud {
                user_data: Some("#cloud-config\npassword: x\n".into()),
                network_data: None,
            },
            bus: DiskBus::Virtio,
            read_only: false,
            boot_order: None,
            serial: None,
            media: DiskMedia::Disk,
        }];
        let disks = prepare_disks(
            &plans,
            dir.path(),
            "vm1",
            &uuid(),
            &HostPathPolicy::default(),
        )
        .unwrap()
        .disks;
        let out = Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&disks[0].path)
            .arg("::")
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("CIDATA"), "{listing}");
        assert!(listing.contains("meta-data"), "{listing}");
        assert!(listing.contains("user-data"), "{listing}");
        let meta = Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&disks[0].path)
            .arg("::meta-data")
            .output()
            .unwrap();
        let meta = String::from_utf8_lossy(&meta.stdout);
        assert!(meta.contains("instance-id: 0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"));
        assert!(meta.contains("local-hostname: vm1"));
    }
}
