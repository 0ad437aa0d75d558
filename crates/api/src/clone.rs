//! KubeVirt's `clone.kubevirt.io/v1beta1` VirtualMachineClone: copy a VM (or a snapshot of one)
//! into a new VM, with KubeVirt's label/annotation filters, new MAC addresses and SMBIOS serial.
//! ferrovirt adds the identity policy of the persistent TPM and UEFI variables as annotations on
//! the clone object ([`TPM_POLICY_ANNOTATION`], [`EFI_POLICY_ANNOTATION`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::{Extra, ObjectMeta};
use crate::snapshot::{Condition, TypedLocalObjectReference};

/// The API group of the clone kind.
pub const CLONE_GROUP: &str = "clone.kubevirt.io";
/// The `apiVersion` of the clone kind.
pub const CLONE_API_VERSION: &str = "clone.kubevirt.io/v1beta1";
/// `copy` (default): the clone gets the same TPM contents (sealed secrets, BitLocker unlock);
/// `fresh`: a newly manufactured TPM with its own EK certificate (golden images).
pub const TPM_POLICY_ANNOTATION: &str = "clone.ferrovirt.io/tpm";
/// `copy` (default): the clone gets the same UEFI variables; `reset`: the firmware's template.
pub const EFI_POLICY_ANNOTATION: &str = "clone.ferrovirt.io/efi";

/// What a clone's TPM starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TpmClonePolicy {
    #[default]
    Copy,
    Fresh,
}

/// What a clone's UEFI variables start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EfiClonePolicy {
    #[default]
    Copy,
    Reset,
}

impl TpmClonePolicy {
    /// Parses the annotation's value (`None` for anything but `copy`/`fresh`).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "copy" => Some(Self::Copy),
            "fresh" => Some(Self::Fresh),
            _ => None,
        }
    }
}

impl EfiClonePolicy {
    /// Parses the annotation's value (`None` for anything but `copy`/`reset`).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "copy" => Some(Self::Copy),
            "reset" => Some(Self::Reset),
            _ => None,
        }
    }
}

/// `clone.kubevirt.io/v1beta1` VirtualMachineClone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineClone {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VirtualMachineCloneSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VirtualMachineCloneStatus>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl VirtualMachineClone {
    /// The TPM policy from the annotation (default copy); `Err` with the value when unknown.
    pub fn tpm_policy(&self) -> Result<TpmClonePolicy, String> {
        match self.metadata.annotation(TPM_POLICY_ANNOTATION) {
            None => Ok(TpmClonePolicy::Copy),
            Some(v) => TpmClonePolicy::parse(v).ok_or_else(|| v.to_owned()),
        }
    }

    /// The EFI policy from the annotation (default copy); `Err` with the value when unknown.
    pub fn efi_policy(&self) -> Result<EfiClonePolicy, String> {
        match self.metadata.annotation(EFI_POLICY_ANNOTATION) {
            None => Ok(EfiClonePolicy::Copy),
            Some(v) => EfiClonePolicy::parse(v).ok_or_else(|| v.to_owned()),
        }
    }
}

/// `spec.template`: filters for the labels and annotations of the VMI template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineCloneTemplateFilters {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotation_filters: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_filters: Vec<String>,
}

/// `spec` of a VirtualMachineClone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineCloneSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TypedLocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TypedLocalObjectReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotation_filters: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_filters: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<VirtualMachineCloneTemplateFilters>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub new_mac_addresses: BTreeMap<String, String>,
    #[serde(
        default,
        rename = "newSMBiosSerial",
        skip_serializing_if = "Option::is_none"
    )]
    pub new_smbios_serial: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status.phase` of a clone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClonePhase {
    SnapshotInProgress,
    CreatingTargetVM,
    RestoreInProgress,
    Succeeded,
    Failed,
    Unknown,
}

/// `status` of a VirtualMachineClone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineCloneStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClonePhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// KubeVirt's label/annotation filter: `*` matches every key, `prefix*` keys starting with the
/// prefix, `!filter` excludes what it matches; later filters win. No filters keep every key.
pub fn filter_keys(map: &BTreeMap<String, String>, filters: &[String]) -> BTreeMap<String, String> {
    if filters.is_empty() {
        return map.clone();
    }
    map.iter()
        .filter(|(key, _)| {
            let mut keep = false;
            for filter in filters {
                let (negated, pattern) = match filter.strip_prefix('!') {
                    Some(p) => (true, p),
                    None => (false, filter.as_str()),
                };
                let matches = match pattern.strip_suffix('*') {
                    Some(prefix) => key.starts_with(prefix),
                    None => key.as_str() == pattern,
                };
                if matches {
                    keep = !negated;
                }
            }
            keep
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn clones_round_trip_and_read_the_identity_policy() {
        let raw = json!({"apiVersion": CLONE_API_VERSION, "kind": "VirtualMachineClone",
            "metadata": {"name": "c", "annotations": {TPM_POLICY_ANNOTATION: "fresh"}},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "a"},
                "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "b"},
                "labelFilters": ["*", "!app"], "newMacAddresses": {"default": "02:00:00:00:00:01"},
                "newSMBiosSerial": "s-1", "volumeNamePolicy": "RandomizeNames"},
            "status": {"phase": "Succeeded", "targetName": "b"}});
        let typed: VirtualMachineClone = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(typed.tpm_policy(), Ok(TpmClonePolicy::Fresh));
        assert_eq!(typed.efi_policy(), Ok(EfiClonePolicy::Copy));
        assert_eq!(typed.spec.new_smbios_serial.as_deref(), Some("s-1"));
        assert_eq!(serde_json::to_value(&typed).unwrap(), raw);
    }

    #[test]
    fn filters_as_kubevirt() {
        let map: BTreeMap<String, String> = [("app", "1"), ("team/a", "2"), ("team/b", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(filter_keys(&map, &[]).len(), 3);
        let keys = |f: &[&str]| {
            let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
            filter_keys(&map, &f).into_keys().collect::<Vec<_>>()
        };
        assert_eq!(keys(&["*", "!team/*"]), ["app"]);
        assert_eq!(keys(&["team/*", "!team/b"]), ["team/a"]);
        assert_eq!(keys(&["!app"]), Vec::<String>::new());
    }
}
