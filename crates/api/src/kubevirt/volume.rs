//! `v1.Volume`: the sources ferrovirt acts on are typed; the others are kept as written (their
//! presence still counts for "exactly one source type").

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::meta::Extra;
use crate::quantity::Quantity;

/// `v1.Volume`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_disk: Option<HostDiskSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_disk: Option<EmptyDiskSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_disk: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init_no_cloud: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init_config_drive: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<Value>,
    #[serde(
        rename = "downwardAPI",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub downward_api: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downward_metrics: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_dump: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysprep: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_path: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Volume {
    /// How many volume source types are set (KubeVirt requires exactly one).
    pub fn source_count(&self) -> usize {
        [
            self.persistent_volume_claim.is_some(),
            self.host_disk.is_some(),
            self.empty_disk.is_some(),
            self.container_disk.is_some(),
            self.cloud_init_no_cloud.is_some(),
            self.cloud_init_config_drive.is_some(),
            self.data_volume.is_some(),
            self.ephemeral.is_some(),
            self.config_map.is_some(),
            self.secret.is_some(),
            self.service_account.is_some(),
            self.downward_api.is_some(),
            self.downward_metrics.is_some(),
            self.memory_dump.is_some(),
            self.sysprep.is_some(),
            self.container_path.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }
}

/// `v1.PersistentVolumeClaimVolumeSource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaimSource {
    #[serde(default)]
    pub claim_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.HostDisk`: a disk image file on the host (`type: Disk` or `DiskOrCreate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostDiskSource {
    #[serde(default)]
    pub path: String,
    #[serde(rename = "type", default)]
    pub disk_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.EmptyDiskSource`: a sparse scratch disk of `capacity`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDiskSource {
    pub capacity: Quantity,
    #[serde(flatten)]
    pub extra: Extra,
}
