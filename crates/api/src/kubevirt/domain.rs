//! The domain of a VirtualMachineInstance: resources, CPU, memory, machine, firmware, features and
//! devices (disks, interfaces, TPM).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::kubevirt::hyperv::{Clock, FeatureHyperv};
use crate::meta::Extra;
use crate::quantity::Quantity;

/// `v1.DomainSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<Clock>,
    #[serde(default)]
    pub devices: Devices,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.ResourceRequirements` (requests and limits by resource name: `memory`, `cpu`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, Quantity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, Quantity>>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ResourceRequirements {
    /// `requests[name]`, if set.
    pub fn request(&self, name: &str) -> Option<&Quantity> {
        self.requests.as_ref()?.get(name)
    }

    /// `limits[name]`, if set.
    pub fn limit(&self, name: &str) -> Option<&Quantity> {
        self.limits.as_ref()?.get(name)
    }
}

/// `v1.CPU`: topology and model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.Memory`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<Quantity>,
    /// `hugepages` (kept as written; only its presence matters to admission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<serde_json::Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.Machine`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.Firmware`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Firmware {
    /// The SMBIOS UUID; also keys the persistent TPM state (`swtpm/<uuid>/`). Set once, never changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<Bootloader>,
    /// `kernelBoot` (kept as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_boot: Option<serde_json::Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.Bootloader`: BIOS or EFI, mutually exclusive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bootloader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios: Option<Bios>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efi: Option<Efi>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.BIOS`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bios {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_serial: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.EFI`: `secureBoot` (true when absent) and `persistent` (VARS kept in backend storage).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Efi {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.Features` (`smm`, `acpi`, `hyperv`; the others are kept as written).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smm: Option<FeatureState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acpi: Option<FeatureState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperv: Option<FeatureHyperv>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.FeatureState`: present means enabled unless `enabled: false`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl FeatureState {
    /// Whether the feature is on: present and not `enabled: false`.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

/// `v1.Devices`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Devices {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<Disk>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<Interface>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Tpm>,
    /// Whether a graphics device (and VNC) is attached; KubeVirt's default is yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoattach_graphics_device: Option<bool>,
    /// Input devices (KubeVirt allows only `type: tablet`, bus `usb` or `virtio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<Input>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.Input`: a pointing device the guest sees (a tablet: absolute coordinates, so a VNC
/// viewer's pointer and the guest's stay together).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    #[serde(default)]
    pub name: String,
    /// `tablet` (the only type KubeVirt accepts).
    #[serde(default, rename = "type")]
    pub input_type: String,
    /// `usb` (the default when empty) or `virtio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Devices {
    /// Whether a graphics device is attached (KubeVirt's `autoattachGraphicsDevice`, default true).
    pub fn graphics_attached(&self) -> bool {
        self.autoattach_graphics_device.unwrap_or(true)
    }

    /// The input devices, empty when none are listed.
    pub fn inputs(&self) -> &[Input] {
        self.inputs.as_deref().unwrap_or(&[])
    }

    /// The disks, empty when none are listed.
    pub fn disks(&self) -> &[Disk] {
        self.disks.as_deref().unwrap_or(&[])
    }

    /// The interfaces, empty when none are listed.
    pub fn interfaces(&self) -> &[Interface] {
        self.interfaces.as_deref().unwrap_or(&[])
    }
}

/// `v1.Disk`: one of `disk`, `cdrom`, `lun` (none means `disk`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdrom: Option<DiskTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lun: Option<DiskTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Disk {
    /// The target kind (`"disk"`, `"cdrom"`, `"lun"`) and its settings, the first one set.
    pub fn target(&self) -> Option<(&'static str, &DiskTarget)> {
        if let Some(t) = &self.disk {
            Some(("disk", t))
        } else if let Some(t) = &self.lun {
            Some(("lun", t))
        } else {
            self.cdrom.as_ref().map(|t| ("cdrom", t))
        }
    }
}

/// Settings of a disk/cdrom/lun target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// KubeVirt spells this one in lower case: `readonly`.
    #[serde(rename = "readonly", default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// A CD-ROM's tray: `open` or `closed` (KubeVirt's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tray: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.Interface` (the binding method, e.g. `masquerade: {}`, is kept in `extra`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<u32>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.TPMDevice`: `{}` ephemeral, `persistent: true` kept in backend storage, `enabled: false` none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tpm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}
