//! Harvester's `harvesterhci.io/v1beta1` VM templates: a [`VirtualMachineTemplate`] (name,
//! description, the id of its default version) and its numbered
//! [`VirtualMachineTemplateVersion`]s, each holding a VirtualMachine's metadata and spec under
//! `spec.vm`. Same field names as Harvester's CRDs; unknown fields are kept in `extra`.

use serde::{Deserialize, Serialize};

use crate::kubevirt::VirtualMachineSpec;
use crate::meta::{Extra, ObjectMeta};

/// The API group of Harvester's types.
pub const HARVESTER_GROUP: &str = "harvesterhci.io";
/// The `apiVersion` of the template kinds.
pub const HARVESTER_API_VERSION: &str = "harvesterhci.io/v1beta1";
/// Annotation Harvester puts on a VM created from a template version (`ns/version`).
pub const TEMPLATE_VERSION_ANNOTATION: &str = "harvesterhci.io/vmTemplateVersion";

/// `harvesterhci.io/v1beta1` VirtualMachineTemplate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineTemplate {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VirtualMachineTemplateSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VirtualMachineTemplateStatus>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec` of a VirtualMachineTemplate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineTemplateSpec {
    /// `"<namespace>/<version name>"` of the default version (may be empty).
    #[serde(default, rename = "defaultVersionId")]
    pub default_version_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status` of a VirtualMachineTemplate: version numbers of the default and the latest version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineTemplateStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_version: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `harvesterhci.io/v1beta1` VirtualMachineTemplateVersion.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineTemplateVersion {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VirtualMachineTemplateVersionSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VirtualMachineTemplateVersionStatus>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec` of a VirtualMachineTemplateVersion.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineTemplateVersionSpec {
    /// `"<namespace>/<template name>"` of the template this version belongs to.
    #[serde(default, rename = "templateId")]
    pub template_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VirtualMachineSourceSpec>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.vm` of a version: the metadata (labels, annotations) and spec of the VMs it creates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSourceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    #[serde(default)]
    pub spec: VirtualMachineSpec,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status` of a version: its number within the template, assigned by the server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineTemplateVersionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<serde_json::Value>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Splits a Harvester object id `"namespace/name"`; a bare `"name"` is in `default_namespace`.
/// `None` when empty or with more than one `/`.
pub fn split_id<'a>(id: &'a str, default_namespace: &'a str) -> Option<(&'a str, &'a str)> {
    let (namespace, name) = match id.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (default_namespace, id),
    };
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_keep_unknown_fields_and_round_trip() {
        let raw = json!({"apiVersion": HARVESTER_API_VERSION, "kind": "VirtualMachineTemplateVersion",
            "metadata": {"generateName": "win-", "namespace": "default"},
            "spec": {"templateId": "default/win", "imageId": "x", "keyPairIds": ["k"],
                "vm": {"metadata": {"labels": {"a": "b"}}, "spec": {"runStrategy": "Halted",
                    "template": {"spec": {"domain": {"devices": {"tpm": {"persistent": true}}}}}}}},
            "status": {"version": 3, "future": 1}});
        let typed: VirtualMachineTemplateVersion = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(typed.spec.template_id, "default/win");
        assert_eq!(typed.status.as_ref().unwrap().version, Some(3));
        assert_eq!(serde_json::to_value(&typed).unwrap(), raw);
    }

    #[test]
    fn ids() {
        assert_eq!(split_id("ns/t", "default"), Some(("ns", "t")));
        assert_eq!(split_id("t", "default"), Some(("default", "t")));
        assert_eq!(split_id("", "default"), None);
        assert_eq!(split_id("a/b/c", "default"), None);
        assert_eq!(split_id("/b", "default"), None);
    }
}
