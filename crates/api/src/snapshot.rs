//! KubeVirt's `snapshot.kubevirt.io/v1beta1` kinds: [`VirtualMachineSnapshot`] (what to snapshot
//! and how it went), [`VirtualMachineSnapshotContent`] (the VM as it was, and the volumes the
//! snapshot holds) and [`VirtualMachineRestore`] (put a snapshot back into a VM, the same or a new
//! one). Same field names as KubeVirt's `api/snapshot/v1beta1`; unknown fields are kept in `extra`.

use serde::{Deserialize, Serialize};

use crate::kubevirt::VirtualMachineSpec;
use crate::meta::{Extra, ObjectMeta};

/// The API group of the snapshot kinds.
pub const SNAPSHOT_GROUP: &str = "snapshot.kubevirt.io";
/// The `apiVersion` of the snapshot kinds.
pub const SNAPSHOT_API_VERSION: &str = "snapshot.kubevirt.io/v1beta1";
/// ferrovirt's annotation on a snapshot: the bytes its data takes on disk (`get vmsnapshot` SIZE).
pub const SIZE_ANNOTATION: &str = "snapshot.ferrovirt.io/size-bytes";
/// ferrovirt's annotation on an online snapshot: how long the vCPUs were paused, in ms.
pub const PAUSE_ANNOTATION: &str = "snapshot.ferrovirt.io/pause-ms";
/// ferrovirt's annotation: how long taking the snapshot took, in ms.
pub const DURATION_ANNOTATION: &str = "snapshot.ferrovirt.io/duration-ms";
/// ferrovirt's annotation on an online snapshot taken through the guest agent: how long the
/// guest's file systems were frozen (`guest-fsfreeze-freeze` to `guest-fsfreeze-thaw`), in ms.
pub const FROZEN_ANNOTATION: &str = "snapshot.ferrovirt.io/frozen-ms";
/// KubeVirt's `DefaultFailureDeadline`: a snapshot not done after this long is Failed.
pub const DEFAULT_FAILURE_DEADLINE_SECONDS: u64 = 5 * 60;

/// `corev1.TypedLocalObjectReference`: `apiGroup`, `kind`, `name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypedLocalObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

/// `snapshot.kubevirt.io/v1beta1` VirtualMachineSnapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshot {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VirtualMachineSnapshotSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VirtualMachineSnapshotStatus>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// What happens to the snapshot's content when the snapshot is deleted (`spec.deletionPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeletionPolicy {
    Delete,
    Retain,
}

/// `spec` of a VirtualMachineSnapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotSpec {
    #[serde(default)]
    pub source: TypedLocalObjectReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// A Go duration (`5m`, `30s`, `1h30m`); KubeVirt's default is 5 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_deadline: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status.phase` of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotPhase {
    InProgress,
    Succeeded,
    Failed,
    Deleting,
    Unknown,
}

/// `status.indications`: the state of the VM when the snapshot was taken.
pub mod indication {
    pub const ONLINE: &str = "Online";
    pub const NO_GUEST_AGENT: &str = "NoGuestAgent";
    pub const GUEST_AGENT: &str = "GuestAgent";
    /// The guest agent was connected but freezing the guest's file systems failed.
    pub const QUIESCE_FAILED: &str = "QuiesceFailed";
    pub const PAUSED: &str = "Paused";
}

/// `status.sourceIndications[]`: an indication with its explanation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceIndication {
    pub indication: String,
    #[serde(default)]
    pub message: String,
}

/// `status` of a VirtualMachineSnapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotStatus {
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "sourceUID")]
    pub source_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_snapshot_content_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SnapshotPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indications: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_indications: Vec<SourceIndication>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_volumes: Option<SnapshotVolumesLists>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status.snapshotVolumes`: the volumes in the snapshot and those left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotVolumesLists {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_volumes: Vec<String>,
}

/// `status.error`: the last error of a snapshot or restore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One of `status.conditions` (`Ready`, `Progressing`, `Failure`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `"True"`, `"False"` or `"Unknown"`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Condition {
    /// A condition with `status` `"True"` or `"False"`.
    pub fn new(type_: &str, status: bool, reason: &str, message: &str, now: &str) -> Self {
        Self {
            type_: type_.to_owned(),
            status: if status { "True" } else { "False" }.to_owned(),
            last_probe_time: None,
            last_transition_time: Some(now.to_owned()),
            reason: reason.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// `snapshot.kubevirt.io/v1beta1` VirtualMachineSnapshotContent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotContent {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VirtualMachineSnapshotContentSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VirtualMachineSnapshotContentStatus>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec` of a VirtualMachineSnapshotContent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotContentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_snapshot_name: Option<String>,
    #[serde(default)]
    pub source: SourceSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_backups: Vec<VolumeBackup>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.source`: the VM as it was when the snapshot was taken.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine: Option<SnapshotVirtualMachine>,
}

/// The VM inside a snapshot content: metadata and spec (status kept as written).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotVirtualMachine {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VirtualMachineSpec,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.volumeBackups[]`: one volume held by the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBackup {
    pub volume_name: String,
    /// The PVC as it was (metadata + spec), kept as written.
    #[serde(default)]
    pub persistent_volume_claim: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_name: Option<String>,
}

/// `status` of a VirtualMachineSnapshotContent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotContentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `snapshot.kubevirt.io/v1beta1` VirtualMachineRestore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineRestore {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VirtualMachineRestoreSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VirtualMachineRestoreStatus>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec` of a VirtualMachineRestore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineRestoreSpec {
    #[serde(default)]
    pub target: TypedLocalObjectReference,
    #[serde(default)]
    pub virtual_machine_snapshot_name: String,
    /// `StopTarget`, `WaitGracePeriod` (default), `FailImmediate`, `WaitEventually`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_readiness_policy: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status` of a VirtualMachineRestore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineRestoreStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restores: Vec<VolumeRestore>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_data_volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status.restores[]`: one restored volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRestore {
    pub volume_name: String,
    #[serde(rename = "persistentVolumeClaim")]
    pub persistent_volume_claim_name: String,
    pub volume_snapshot_name: String,
}

/// Parses the Go duration KubeVirt's `failureDeadline` is written in (`1h2m3s`, `90s`, `5m`,
/// `1.5h`). `None` when it is not one.
pub fn parse_go_duration(text: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(std::time::Duration::ZERO);
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += number * factor;
        rest = &rest[unit_end..];
    }
    Some(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snapshots_round_trip_and_keep_unknown_fields() {
        let raw = json!({"apiVersion": SNAPSHOT_API_VERSION, "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "s", "namespace": "default"},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"},
                "deletionPolicy": "Retain", "failureDeadline": "1m", "snapshotMode": "Direct"},
            "status": {"sourceUID": "u", "phase": "Succeeded", "readyToUse": true,
                "indications": ["Online", "NoGuestAgent"],
                "snapshotVolumes": {"includedVolumes": ["root"], "excludedVolumes": ["host"]},
                "conditions": [{"type": "Ready", "status": "True", "reason": "Operation complete"}]}});
        let typed: VirtualMachineSnapshot = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(typed.spec.deletion_policy, Some(DeletionPolicy::Retain));
        let status = typed.status.as_ref().unwrap();
        assert_eq!(status.phase, Some(SnapshotPhase::Succeeded));
        assert_eq!(status.source_uid.as_deref(), Some("u"));
        assert_eq!(serde_json::to_value(&typed).unwrap(), raw);
    }

    #[test]
    fn restores_round_trip() {
        let raw = json!({"apiVersion": SNAPSHOT_API_VERSION, "kind": "VirtualMachineRestore",
            "metadata": {"name": "r"},
            "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"},
                "virtualMachineSnapshotName": "s"},
            "status": {"complete": true, "restoreTime": "2026-01-01T00:00:00Z",
                "restores": [{"volumeName": "root", "persistentVolumeClaim": "p",
                    "volumeSnapshotName": "vs"}]}});
        let typed: VirtualMachineRestore = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(typed.spec.virtual_machine_snapshot_name, "s");
        assert_eq!(serde_json::to_value(&typed).unwrap(), raw);
    }

    #[test]
    fn go_durations() {
        use std::time::Duration;
        assert_eq!(parse_go_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
