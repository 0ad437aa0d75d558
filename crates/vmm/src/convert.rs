//! From a KubeVirt VirtualMachineInstance spec (already defaulted and admitted) to a [`VmPlan`]:
//! what KubeVirt's virt-launcher converter does, for one host. What cannot run here (a
//! `containerDisk` from a registry, multus, a `dataVolume`, ...) is refused with the field path and
//! what to use instead.

use std::path::PathBuf;
use std::time::Duration;

use ferrovirt_api::kubevirt::vmi::{TpmMode, VirtualMachineInstanceSpec};
use ferrovirt_api::kubevirt::volume::Volume;
use ferrovirt_storage::VmUuid;

use crate::disks::{DiskPlan, DiskSource};
use crate::engine::VmPlan;
use crate::machine::DiskBus;
use crate::state::{FirmwarePlan, TpmPlan};

/// A part of the spec this host cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Unsupported {
    pub field: String,
    pub message: String,
}

/// Where the VM's objects and volumes are, for the conversion.
pub struct ConvertContext<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// `spec.template.spec` for a VM, `spec` for a VMI: prefixes field paths in errors.
    pub field_prefix: &'a str,
    /// The backend-storage volume and its generations dir, when the VM needs one.
    pub state_volume: Option<(PathBuf, PathBuf)>,
    /// Finds the directory of a `persistentVolumeClaim` volume (a local-path volume).
    pub claim_dir: &'a dyn Fn(&str) -> Option<PathBuf>,
    pub termination_grace_period_seconds: Option<u64>,
}

/// The default grace period of KubeVirt (`terminationGracePeriodSeconds`).
pub const DEFAULT_GRACE_SECONDS: u64 = 180;

/// Converts a VMI spec into a plan.
pub fn plan_from_spec(
    spec: &VirtualMachineInstanceSpec,
    ctx: &ConvertContext<'_>,
) -> Result<VmPlan, Unsupported> {
    let field = |rest: &str| format!("{}.{rest}", ctx.field_prefix);
    let unsupported = |rest: &str, message: &str| Unsupported {
        field: field(rest),
        message: message.to_string(),
    };
    let uuid_text = spec.firmware_uuid().ok_or_else(|| {
        unsupported(
            "domain.firmware.uuid",
            "the VM has no firmware UUID; it is assigned at create time (apply the VM again)",
        )
    })?;
    let uuid = VmUuid::parse(uuid_text)
        .map_err(|e| unsupported("domain.firmware.uuid", &e.to_string()))?;

    let cpu = spec.domain.cpu.as_ref();
    let vcpus = cpu
        .map(|c| c.cores.unwrap_or(1) * c.sockets.unwrap_or(1) * c.threads.unwrap_or(1))
        .unwrap_or(1)
        .max(1);
    let memory = spec
        .domain
        .memory
        .as_ref()
        .and_then(|m| m.guest.as_ref())
        .or_else(|| {
            spec.domain
                .resources
                .as_ref()
                .and_then(|r| r.request("memory"))
        })
        .ok_or_else(|| {
            unsupported(
                "domain.memory.guest",
                "no memory requested; set domain.memory.guest or domain.resources.requests.memory",
            )
        })?;
    let memory_bytes = memory
        .to_bytes()
        .map_err(|e| unsupported("domain.memory.guest", &e.to_string()))?;
    let memory_mib = memory_bytes.div_ceil(1024 * 1024).max(16);

    let firmware = match spec.efi_mode() {
        Some(efi) => FirmwarePlan::Uefi {
            secure_boot: efi.secure_boot,
            persistent: efi.persistent,
        },
        None => FirmwarePlan::Bios,
    };
    let tpm = match spec.tpm_mode() {
        TpmMode::None => TpmPlan::None,
        TpmMode::Ephemeral => TpmPlan::Ephemeral,
        TpmMode::Persistent => TpmPlan::Persistent,
    };

    let mut disks = Vec::new();
    for (index, disk) in spec.domain.devices.disks().iter().enumerate() {
        let disk_field = format!("domain.devices.disks[{index}]");
        let (volume_index, volume) = spec
            .volumes()
            .iter()
            .enumerate()
            .find(|(_, v)| v.name == disk.name)
            .ok_or_else(|| {
                unsupported(
                    &format!("{disk_field}.name"),
                    &format!("disk {:?} has no volume of that name", disk.name),
                )
            })?;
        let (bus, read_only) = match (&disk.disk, &disk.cdrom, &disk.lun) {
            (Some(target), None, None) => {
                let bus = match target.bus.as_deref().unwrap_or("virtio") {
                    "virtio" => DiskBus::Virtio,
                    "sata" => DiskBus::Sata,
                    "scsi" => DiskBus::Scsi,
                    other => {
                        return Err(unsupported(
                            &format!("{disk_field}.disk.bus"),
                            &format!(
                                "bus {other:?} is not supported by ferrovirt; use virtio, sata or scsi"
                            ),
                        ));
                    }
                };
                (bus, target.read_only.unwrap_or(false))
            }
            (None, None, None) => (DiskBus::Virtio, false),
            (_, Some(_), _) => {
                return Err(unsupported(
                    &format!("{disk_field}.cdrom"),
                    "CD-ROM drives are not supported by ferrovirt yet; attach the image as a disk",
                ));
            }
            _ => {
                return Err(unsupported(
                    &format!("{disk_field}.lun"),
                    "LUN passthrough is not supported on ferrovirt; attach the image as a disk",
                ));
            }
        };
        let source = disk_source(volume, &format!("volumes[{volume_index}]"), ctx)
            .map_err(|(rest, message)| unsupported(&rest, &message))?;
        disks.push(DiskPlan {
            name: disk.name.clone(),
            source,
            bus,
            read_only,
            boot_order: disk.boot_order,
            serial: disk.serial.clone(),
        });
    }

    let (state_volume, generations_dir) = match &ctx.state_volume {
        Some((volume, generations)) => (Some(volume.clone()), Some(generations.clone())),
        None => (None, None),
    };
    Ok(VmPlan {
        namespace: ctx.namespace.to_string(),
        name: ctx.name.to_string(),
        uuid,
        vcpus,
        memory_mib,
        firmware,
        smm: spec.smm_enabled(),
        tpm,
        disks,
        state_volume,
        generations_dir,
        grace: Duration::from_secs(
            ctx.termination_grace_period_seconds
                .unwrap_or(DEFAULT_GRACE_SECONDS),
        ),
    })
}

fn disk_source(
    volume: &Volume,
    field: &str,
    ctx: &ConvertContext<'_>,
) -> Result<DiskSource, (String, String)> {
    if let Some(host_disk) = &volume.host_disk {
        let capacity = match &host_disk.capacity {
            Some(q) => Some(
                q.to_bytes()
                    .map_err(|e| (format!("{field}.hostDisk.capacity"), e.to_string()))?,
            ),
            None => None,
        };
        return Ok(DiskSource::HostFile {
            path: PathBuf::from(&host_disk.path),
            create_with_capacity: (host_disk.disk_type == "DiskOrCreate")
                .then_some(capacity)
                .flatten(),
        });
    }
    if let Some(empty) = &volume.empty_disk {
        let capacity_bytes = empty
            .capacity
            .to_bytes()
            .map_err(|e| (format!("{field}.emptyDisk.capacity"), e.to_string()))?;
        return Ok(DiskSource::Empty { capacity_bytes });
    }
    if let Some(cloud_init) = &volume.cloud_init_no_cloud {
        let text = |key: &str| {
            cloud_init
                .get(key)
                .and_then(|v| v.as_str())
                .map(String::from)
        };
        for key in [
            "userDataBase64",
            "networkDataBase64",
            "secretRef",
            "networkDataSecretRef",
        ] {
            if cloud_init.get(key).is_some() {
                return Err((
                    format!("{field}.cloudInitNoCloud.{key}"),
                    format!(
                        "{key} is not supported by ferrovirt yet; put the data in userData / networkData"
                    ),
                ));
            }
        }
        return Ok(DiskSource::CloudInitNoCloud {
            user_data: text("userData"),
            network_data: text("networkData"),
        });
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        let dir = (ctx.claim_dir)(&claim.claim_name).ok_or_else(|| {
            (
                format!("{field}.persistentVolumeClaim.claimName"),
                format!(
                    "persistentvolumeclaims {:?} not found, or not bound to a local-path volume; \
                     create the PVC first",
                    claim.claim_name
                ),
            )
        })?;
        // KubeVirt's convention for a filesystem PVC: the image is `disk.img` inside it.
        return Ok(DiskSource::HostFile {
            path: dir.join("disk.img"),
            create_with_capacity: None,
        });
    }
    let (kind, hint) = if volume.container_disk.is_some() {
        (
            "containerDisk",
            "container disks are pulled from a registry, which a single ferrovirt host does not \
             use; put the image on the host and use a hostDisk volume (path: /path/to/image.qcow2, \
             type: Disk) instead",
        )
    } else if volume.data_volume.is_some() {
        (
            "dataVolume",
            "DataVolumes need CDI, which ferrovirt does not run; use a hostDisk or a \
             persistentVolumeClaim volume instead",
        )
    } else if volume.cloud_init_config_drive.is_some() {
        (
            "cloudInitConfigDrive",
            "config drives are not supported by ferrovirt yet; use cloudInitNoCloud instead",
        )
    } else if volume.ephemeral.is_some() {
        (
            "ephemeral",
            "ephemeral volumes are not supported by ferrovirt yet; use a hostDisk instead",
        )
    } else {
        (
            "",
            "this volume type cannot be attached as a disk on ferrovirt; use a hostDisk, \
             emptyDisk, cloudInitNoCloud or persistentVolumeClaim volume",
        )
    };
    let field = if kind.is_empty() {
        field.to_string()
    } else {
        format!("{field}.{kind}")
    };
    Err((field, hint.to_string()))
}
