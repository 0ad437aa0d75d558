//! CD-ROM drives, as libvirt gives them to QEMU for a KubeVirt `cdrom` disk: the image as a
//! read-only `raw` (or qcow2) block node, and an `ide-cd` on a port of q35's built-in AHCI
//! controller (`ide.0` .. `ide.5`, shared with SATA hard disks) or a `scsi-cd` on the
//! `virtio-scsi-pci` controller `scsi0`. `bootOrder` becomes the drive's `bootindex`.
//! (`tray: open` is kept in the spec only: libvirt starts a drive with its tray closed and only
//! reports later tray moves, and so does ferrovirt.)

use crate::machine::DiskBus;

/// The ports of q35's built-in AHCI controller (ICH9: six).
pub const SATA_PORTS: u32 = 6;

/// Why a CD-ROM drive cannot be attached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdromError {
    #[error(
        "disk {disk}: a CD-ROM cannot be on the virtio bus (KubeVirt: \"Bus type virtio is invalid for CD-ROM device\"); use sata or scsi"
    )]
    VirtioBus { disk: String },
}

/// The `-device` value of a CD-ROM drive whose block node is `node` (without serial/bootindex).
pub fn device(disk: &str, bus: DiskBus, node: &str, sata_port: u32) -> Result<String, CdromError> {
    match bus {
        DiskBus::Sata => Ok(format!(
            "ide-cd,bus=ide.{sata_port},drive={node}-format,id={node}"
        )),
        DiskBus::Scsi => Ok(format!("scsi-cd,bus=scsi0.0,drive={node}-format,id={node}")),
        DiskBus::Virtio => Err(CdromError::VirtioBus {
            disk: disk.to_string(),
        }),
    }
}
