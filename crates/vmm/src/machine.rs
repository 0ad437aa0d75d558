//! The fully-resolved description of one VM run: what QEMU must emulate and where every file and
//! socket lives. Built by the caller (API types, firmware selection and TPM manufacture live
//! elsewhere); this crate only turns it into processes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::hyperv::Hyperv;

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The value of QEMU's `-accel`.
    pub fn as_qemu(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The QEMU machine type. Only q35 is supported (what KubeVirt uses on x86_64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MachineType {
    Q35 {
        /// System Management Mode; required for Secure Boot.
        smm: bool,
    },
}

/// Firmware the guest boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Firmware {
    /// QEMU's built-in SeaBIOS.
    Bios,
    /// OVMF: a read-only code image and this VM's own writable VARS file.
    Uefi {
        code: PathBuf,
        vars: PathBuf,
        secure_boot: bool,
    },
}

/// The TPM device model the guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TpmModel {
    Crb,
    Tis,
}

/// Connects the guest's TPM to an swtpm control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmAttachment {
    pub ctrl_socket: PathBuf,
    pub model: TpmModel,
}

/// Disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

/// Bus a disk is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    Virtio,
    Sata,
    Scsi,
}

/// What the guest sees on a disk's bus: a hard disk, or a CD-ROM drive (`ide-cd`/`scsi-cd`,
/// always read-only, as libvirt makes every cdrom).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskMedia {
    #[default]
    Disk,
    Cdrom,
}

/// One disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// QEMU id: letters, digits, `-`, `_`, `.`, starting with a letter (the KubeVirt disk name).
    pub name: String,
    pub path: PathBuf,
    pub format: DiskFormat,
    pub bus: DiskBus,
    pub read_only: bool,
    /// Boot order (QEMU `bootindex`); lower boots first.
    pub boot_order: Option<u32>,
    /// Serial number the guest sees.
    pub serial: Option<String>,
    /// Hard disk or CD-ROM.
    #[serde(default)]
    pub media: DiskMedia,
}

/// Network card model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    Virtio,
    E1000e,
}

/// One network card on the pod network: NAT to the host's network through its own passt process
/// (KubeVirt's passt binding; `crate::passt`), never through the host itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// QEMU id (the KubeVirt interface name).
    pub name: String,
    pub model: NicModel,
    /// `52:54:00:..` style; QEMU picks one when `None`.
    pub mac: Option<String>,
    /// Boot from this card (PXE); without it the card's option ROM is not loaded, so the
    /// firmware does not try to network-boot (as KubeVirt does).
    pub boot_order: Option<u32>,
    /// The guest's TCP ports reachable through `portforward` (KubeVirt's `interfaces[].ports`);
    /// empty: the well-known ports (`passt::DEFAULT_FORWARDED_TCP_PORTS`).
    #[serde(default)]
    pub forwarded_tcp_ports: Vec<u16>,
}

/// The serial console: a unix socket to attach to, and a log of everything the guest printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialConsole {
    pub socket: PathBuf,
    pub log_file: PathBuf,
}

/// The video device, as KubeVirt picks it on x86_64 (`AddGraphicsDevice`): `vga` (16 MiB of
/// VGA memory) for BIOS, `bochs` (a display without VGA compatibility) for EFI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoModel {
    Vga,
    Bochs,
}

/// The graphical console: a video device whose screen QEMU's VNC server shows on a unix socket
/// in the runtime dir (never a TCP port), and the QMP monitor the API server takes screenshots
/// through (separate from the engine's, so neither waits for the other).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graphics {
    pub video: VideoModel,
    pub vnc_socket: PathBuf,
    pub screen_qmp_socket: PathBuf,
}

/// The bus of a tablet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputBus {
    /// `usb-tablet` on a `qemu-xhci` controller.
    Usb,
    /// `virtio-tablet-pci`.
    Virtio,
}

/// A tablet (absolute pointer) the guest sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputDevice {
    /// QEMU id (the KubeVirt input name).
    pub name: String,
    pub bus: InputBus,
}

/// Everything QEMU needs for one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfig {
    /// Guest name (`-name guest=`); e.g. `namespace_vmname` as KubeVirt does.
    pub name: String,
    /// Firmware UUID (SMBIOS type 1), KubeVirt's `spec.domain.firmware.uuid`.
    pub uuid: String,
    /// SMBIOS type 1 serial number, KubeVirt's `spec.domain.firmware.serial`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smbios_serial: Option<String>,
    pub accel: Accel,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub machine: MachineType,
    pub firmware: Firmware,
    pub tpm: Option<TpmAttachment>,
    /// Hyper-V enlightenments on `-cpu` (`crate::hyperv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperv: Option<Hyperv>,
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub nics: Vec<Nic>,
    pub serial: SerialConsole,
    /// The display and its VNC server; `None`: no display at all (`autoattachGraphicsDevice:
    /// false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphics: Option<Graphics>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputDevice>,
    pub qmp_socket: PathBuf,
    /// The host end of the guest agent's virtio-serial channel (`org.qemu.guest_agent.0`), a
    /// unix socket QEMU listens on (0600 in the 0700 runtime dir); `None`: no channel (records
    /// of runs started before ferrovirt had it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_agent_socket: Option<PathBuf>,
    pub pid_file: PathBuf,
    /// QEMU binary; `qemu-system-x86_64` on PATH when `None`.
    #[serde(default)]
    pub qemu_binary: Option<PathBuf>,
    /// Descriptors QEMU inherits into fd sets (`-add-fd`): host disks opened beneath their
    /// allowed root, given to QEMU as `/dev/fdset/<set>` instead of a path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fd_sets: Vec<FdSetEntry>,
}

/// One descriptor of an fd set: `-add-fd fd=<child_fd>,set=<set>,opaque=<opaque>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdSetEntry {
    pub set: u32,
    /// The descriptor number in QEMU (the launcher maps the opened file there).
    pub child_fd: i32,
    /// A label QEMU shows in `query-fdsets` (no commas).
    pub opaque: String,
}

impl MachineConfig {
    /// The QEMU binary to run.
    pub fn qemu_binary(&self) -> PathBuf {
        self.qemu_binary
            .clone()
            .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"))
    }
}
