//! `VirtualMachineInstance`, its spec (also the VM template's spec) and the helpers the engine uses
//! to read the TPM/EFI intent.

use serde::{Deserialize, Serialize};

use super::domain::DomainSpec;
use super::volume::Volume;
use crate::meta::{Extra, ObjectMeta};

/// `kubevirt.io/v1` VirtualMachineInstance: one running incarnation of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstance {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VirtualMachineInstanceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.VirtualMachineInstanceTemplateSpec` (the VM's `spec.template`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceTemplateSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    #[serde(default)]
    pub spec: VirtualMachineInstanceSpec,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.VirtualMachineInstanceSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceSpec {
    #[serde(default)]
    pub domain: DomainSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_strategy: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// What kind of vTPM a VM gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpmMode {
    /// No TPM (`tpm` absent or `enabled: false`).
    None,
    /// `tpm: {}`: state lives in the runtime dir and is gone at stop (model tpm-tis).
    Ephemeral,
    /// `tpm: {persistent: true}`: state lives in backend storage (model tpm-crb).
    Persistent,
}

/// The EFI settings a VM boots with, defaults resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EfiMode {
    /// `secureBoot`, true unless set to false.
    pub secure_boot: bool,
    /// `persistent`: the VARS file lives in backend storage.
    pub persistent: bool,
}

impl VirtualMachineInstanceSpec {
    /// The volumes, empty when none are listed.
    pub fn volumes(&self) -> &[Volume] {
        self.volumes.as_deref().unwrap_or(&[])
    }

    /// The vTPM the VM gets.
    pub fn tpm_mode(&self) -> TpmMode {
        match &self.domain.devices.tpm {
            None => TpmMode::None,
            Some(tpm) if tpm.enabled == Some(false) => TpmMode::None,
            Some(tpm) if tpm.persistent == Some(true) => TpmMode::Persistent,
            Some(_) => TpmMode::Ephemeral,
        }
    }

    /// The EFI settings, or `None` when the VM boots with BIOS.
    pub fn efi_mode(&self) -> Option<EfiMode> {
        let efi = self
            .domain
            .firmware
            .as_ref()?
            .bootloader
            .as_ref()?
            .efi
            .as_ref()?;
        Some(EfiMode {
            secure_boot: efi.secure_boot.unwrap_or(true),
            persistent: efi.persistent.unwrap_or(false),
        })
    }

    /// Whether SMM is on (`features.smm` present and not `enabled: false`).
    pub fn smm_enabled(&self) -> bool {
        self.domain
            .features
            .as_ref()
            .and_then(|f| f.smm.as_ref())
            .is_some_and(|smm| smm.is_enabled())
    }

    /// Whether the VM needs a backend-storage volume (persistent TPM or persistent EFI VARS).
    pub fn needs_backend_storage(&self) -> bool {
        self.tpm_mode() == TpmMode::Persistent || self.efi_mode().is_some_and(|efi| efi.persistent)
    }

    /// The stable firmware UUID, if assigned.
    pub fn firmware_uuid(&self) -> Option<&str> {
        self.domain.firmware.as_ref()?.uuid.as_deref()
    }
}
