//! `kubevirt.io/v1` types: VirtualMachine, VirtualMachineInstance (its spec is also the VM's
//! template spec), the domain (cpu, memory, resources, firmware, features, devices), volumes, and the
//! KubeVirt cluster-configuration object. Every struct keeps unknown fields in `extra`.

pub mod domain;
pub mod hyperv;
pub mod kubevirt_cr;
pub mod vm;
pub mod vmi;
pub mod volume;

pub use domain::{
    Bios, Bootloader, Cpu, Devices, Disk, DiskTarget, DomainSpec, Efi, FeatureState, Features,
    Firmware, Input, Interface, Machine, Memory, ResourceRequirements, Tpm,
};
pub use hyperv::{
    Clock, FeatureHyperv, FeatureSpinlocks, FeatureVendorId, HypervTimer, SyNicTimer, Timer,
    TlbFlush,
};
pub use kubevirt_cr::{DeveloperConfiguration, KubeVirt, KubeVirtConfiguration, KubeVirtSpec};
pub use vm::{RunStrategy, VirtualMachine, VirtualMachineSpec};
pub use vmi::{
    EfiMode, TpmMode, VirtualMachineInstance, VirtualMachineInstanceSpec,
    VirtualMachineInstanceTemplateSpec,
};
pub use volume::{EmptyDiskSource, HostDiskSource, PersistentVolumeClaimSource, Volume};

/// The API group of KubeVirt's core types.
pub const GROUP: &str = "kubevirt.io";
/// The `apiVersion` ferrovirt writes.
pub const API_VERSION: &str = "kubevirt.io/v1";
/// Older `apiVersion` KubeVirt still serves with the same schema.
pub const API_VERSION_V1ALPHA3: &str = "kubevirt.io/v1alpha3";
