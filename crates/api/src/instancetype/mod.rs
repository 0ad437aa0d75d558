//! `instancetype.kubevirt.io/v1beta1`: VirtualMachine(Cluster)Instancetype (the resources a VM
//! gets: guest vCPUs and memory) and VirtualMachine(Cluster)Preference (what a guest OS prefers:
//! firmware, TPM, disk bus, Hyper-V, clock, ...), the `spec.instancetype` / `spec.preference`
//! matchers of a VirtualMachine, and how both are applied to an instance spec as KubeVirt's
//! `pkg/instancetype` applies them ([`apply`]). The namespaced and cluster kinds share one type
//! each; `kind` tells them apart. Unknown fields are kept in `extra`.

pub mod apply;

use serde::{Deserialize, Serialize};

use crate::kubevirt::{Efi, FeatureHyperv, FeatureState, Timer, Tpm};
use crate::meta::{Extra, ObjectMeta};
use crate::quantity::Quantity;

/// The API group.
pub const GROUP: &str = "instancetype.kubevirt.io";
/// The `apiVersion` ferrovirt serves.
pub const API_VERSION: &str = "instancetype.kubevirt.io/v1beta1";
/// The served version (also the `<version>` part of a revision name).
pub const VERSION: &str = "v1beta1";

pub const INSTANCETYPE_KIND: &str = "VirtualMachineInstancetype";
pub const CLUSTER_INSTANCETYPE_KIND: &str = "VirtualMachineClusterInstancetype";
pub const PREFERENCE_KIND: &str = "VirtualMachinePreference";
pub const CLUSTER_PREFERENCE_KIND: &str = "VirtualMachineClusterPreference";

/// `VirtualMachineInstancetype` or `VirtualMachineClusterInstancetype`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstancetype {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: InstancetypeSpec,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1beta1.VirtualMachineInstancetypeSpec`: `cpu.guest` and `memory.guest` are required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancetypeSpec {
    #[serde(default)]
    pub cpu: CpuInstancetype,
    #[serde(default)]
    pub memory: MemoryInstancetype,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1beta1.CPUInstancetype`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuInstancetype {
    /// The number of vCPUs the guest sees (spread by the preference's `preferredCPUTopology`).
    #[serde(default)]
    pub guest: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1beta1.MemoryInstancetype`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryInstancetype {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<Quantity>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `VirtualMachinePreference` or `VirtualMachineClusterPreference`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachinePreference {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PreferenceSpec,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1beta1.VirtualMachinePreferenceSpec` (the parts ferrovirt applies; the rest is kept).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreferenceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuPreferences>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DevicePreferences>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeaturePreferences>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwarePreferences>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachinePreferences>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockPreferences>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_termination_grace_period_seconds: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1beta1.CPUPreferences`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuPreferences {
    /// `sockets` (the default), `cores`, `threads`, `spread`, `any` (and the deprecated
    /// `prefer*` spellings).
    #[serde(
        default,
        rename = "preferredCPUTopology",
        skip_serializing_if = "Option::is_none"
    )]
    pub preferred_cpu_topology: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1beta1.DevicePreferences`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicePreferences {
    #[serde(
        default,
        rename = "preferredTPM",
        skip_serializing_if = "Option::is_none"
    )]
    pub preferred_tpm: Option<Tpm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_disk_bus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_cdrom_bus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_interface_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_autoattach_graphics_device: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_autoattach_input_device: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1beta1.FeaturePreferences`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeaturePreferences {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_acpi: Option<FeatureState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_apic: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_hyperv: Option<FeatureHyperv>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_smm: Option<FeatureState>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1beta1.FirmwarePreferences`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirmwarePreferences {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_efi: Option<Efi>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_use_bios: Option<bool>,
    /// Deprecated in KubeVirt for `preferredEfi`; still applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_use_efi: Option<bool>,
    /// Deprecated in KubeVirt for `preferredEfi.secureBoot`; still applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_use_secure_boot: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1beta1.MachinePreferences`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachinePreferences {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_machine_type: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1beta1.ClockPreferences`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockPreferences {
    /// A `v1.ClockOffset` (`utc: {}` or `timezone: ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_clock_offset: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_timer: Option<Timer>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.InstancetypeMatcher` / `v1.PreferenceMatcher` of a VirtualMachine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Empty means the cluster kind, as in KubeVirt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A ControllerRevision holding the copy to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    /// Not supported by ferrovirt (refused at admission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infer_from_volume: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infer_from_volume_failure_policy: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Which of the two matchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatcherRole {
    Instancetype,
    Preference,
}

/// A matcher's kind resolved: the object's kind and whether it is cluster-scoped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferencedKind {
    pub kind: &'static str,
    pub cluster: bool,
}

impl MatcherRole {
    /// The field of the VM spec (`instancetype` or `preference`).
    pub fn field(self) -> &'static str {
        match self {
            MatcherRole::Instancetype => "instancetype",
            MatcherRole::Preference => "preference",
        }
    }

    /// The kinds a matcher of this role may name, namespaced first.
    pub fn kinds(self) -> [&'static str; 2] {
        match self {
            MatcherRole::Instancetype => [INSTANCETYPE_KIND, CLUSTER_INSTANCETYPE_KIND],
            MatcherRole::Preference => [PREFERENCE_KIND, CLUSTER_PREFERENCE_KIND],
        }
    }

    /// KubeVirt's reading of `kind`: the kind, its lower-case singular or plural; empty is the
    /// cluster kind. `None`: not a kind of this role.
    pub fn resolve(self, kind: Option<&str>) -> Option<ReferencedKind> {
        let [namespaced, cluster] = self.kinds();
        let text = kind.unwrap_or("").to_ascii_lowercase();
        let matches = |k: &str| {
            let lower = k.to_ascii_lowercase();
            text == lower || text == format!("{lower}s")
        };
        if text.is_empty() || matches(cluster) {
            Some(ReferencedKind {
                kind: cluster,
                cluster: true,
            })
        } else if matches(namespaced) {
            Some(ReferencedKind {
                kind: namespaced,
                cluster: false,
            })
        } else {
            None
        }
    }
}

/// The specs a VM's matchers point at, as found (by the API server in the store, by the VM
/// controller in its ControllerRevisions); an absent one was not found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReferencedSpecs {
    pub instancetype: Option<InstancetypeSpec>,
    pub preference: Option<PreferenceSpec>,
}

/// KubeVirt's ControllerRevision name for a VM's copy of an instancetype or preference
/// (`pkg/instancetype/revision.GenerateName`): `<vm>-<object>-<version>-<object uid>-<generation>`.
pub fn revision_name(
    vm_name: &str,
    object_name: &str,
    object_uid: &str,
    generation: i64,
) -> String {
    format!("{vm_name}-{object_name}-{VERSION}-{object_uid}-{generation}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_kinds_read_as_kubevirt_reads_them() {
        let role = MatcherRole::Preference;
        assert_eq!(role.resolve(None).unwrap().kind, CLUSTER_PREFERENCE_KIND);
        assert!(
            role.resolve(Some("virtualmachineclusterpreferences"))
                .unwrap()
                .cluster
        );
        assert!(
            !role
                .resolve(Some("VirtualMachinePreference"))
                .unwrap()
                .cluster
        );
        assert_eq!(role.resolve(Some("VirtualMachineInstancetype")), None);
        assert_eq!(
            revision_name("vm", "windows.11", "u-1", 2),
            "vm-windows.11-v1beta1-u-1-2"
        );
    }
}
