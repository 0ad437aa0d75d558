//! KubeVirt's `export.kubevirt.io/v1beta1` VirtualMachineExport: what to export (a VM, a
//! VirtualMachineSnapshot or a PVC), the Secret holding the token that opens the export's URLs,
//! how long the export lives (`ttlDuration`, KubeVirt's default 2 h), and the status KubeVirt's
//! export controller fills (phase, links with the certificate, per-volume formats and URLs, the
//! manifests, the VM's name, conditions). Same field names as KubeVirt's `api/export/v1beta1`;
//! unknown fields are kept in `extra`. Also KubeVirt's names around it (the token Secret's key,
//! the HTTP header, the URL paths of the export server).

use serde::{Deserialize, Serialize};

use crate::meta::{Extra, ObjectMeta};
use crate::snapshot::TypedLocalObjectReference;

/// The API group of VirtualMachineExport.
pub const EXPORT_GROUP: &str = "export.kubevirt.io";
/// The `apiVersion` of VirtualMachineExport.
pub const EXPORT_API_VERSION: &str = "export.kubevirt.io/v1beta1";
/// KubeVirt's `DefaultDurationTTL`: an export without `ttlDuration` is deleted 2 h after its
/// creation.
pub const DEFAULT_TTL_SECONDS: u64 = 2 * 60 * 60;
/// The header a client sends the token in (`x-kubevirt-export-token`), also accepted as the
/// query parameter of the same name.
pub const TOKEN_HEADER: &str = "x-kubevirt-export-token";
/// The key of the token in the token Secret's `data`.
pub const SECRET_TOKEN_KEY: &str = "token";
/// Length of a generated token (KubeVirt's `GenerateVMExportToken`: 20 alphanumerics).
pub const TOKEN_LENGTH: usize = 20;
/// The alphabet of generated tokens.
pub const TOKEN_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The Secret the controller creates when `spec.tokenSecretRef` is absent (KubeVirt's
/// `export-token-<export>`).
pub fn default_token_secret_name(export: &str) -> String {
    format!("export-token-{export}")
}

/// The Secret `virtctl vmexport create` creates and names in `spec.tokenSecretRef`.
pub fn virtctl_token_secret_name(export: &str) -> String {
    format!("secret-{export}")
}

/// The Secret with the header CDI sends (`manifests/secret`, `header-secret-<export>`).
pub fn header_secret_name(export: &str) -> String {
    format!("header-secret-{export}")
}

/// The ConfigMap with the export's CA certificate in the manifests (`export-ca-cm-<export>`).
pub fn ca_config_map_name(export: &str) -> String {
    format!("export-ca-cm-{export}")
}

/// `export.kubevirt.io/v1beta1` VirtualMachineExport.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineExport {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VirtualMachineExportSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VirtualMachineExportStatus>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec` of a VirtualMachineExport.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineExportSpec {
    #[serde(default)]
    pub source: TypedLocalObjectReference,
    /// The Secret whose `token` opens the export; the controller makes one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<String>,
    /// A Go duration (`2h`, `30m`); KubeVirt's default is 2 hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_duration: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportPhase {
    Pending,
    Ready,
    Terminated,
    Skipped,
}

/// `status` of a VirtualMachineExport.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineExportStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ExportPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<ExportLinks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_expiration_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ExportCondition>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status.links`: `internal` (inside the cluster) and `external` (through the proxy).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportLinks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal: Option<ExportLink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExportLink>,
}

/// One set of links: the CA certificate (PEM) that verifies the server, the volumes, the
/// manifests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportLink {
    #[serde(default)]
    pub cert: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ExportVolume>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<ExportManifest>,
}

/// A manifest URL of `type` `all` (the VM, DataVolumes, the CA ConfigMap) or
/// `auth-header-secret` (the Secret with the header CDI sends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportManifest {
    #[serde(rename = "type")]
    pub manifest_type: String,
    pub url: String,
}

/// One exported volume (named as its PVC) and the formats it is served in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportVolume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formats: Vec<ExportVolumeFormat>,
}

/// A format (`raw`, `gzip`, `dir`, `tar.gz`) and its URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportVolumeFormat {
    pub format: String,
    pub url: String,
}

/// A condition of an export (`Ready`, `PVCReady`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportCondition {
    #[serde(rename = "type")]
    pub condition_type: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The format names of `status.links.*.volumes[].formats[].format`.
pub mod format {
    /// The disk image as it is (`disk.img`).
    pub const RAW: &str = "raw";
    /// The disk image gzipped (`disk.img.gz`).
    pub const GZIP: &str = "gzip";
    /// The files of a filesystem volume, one URL each (`dir/`).
    pub const DIR: &str = "dir";
    /// The files of a filesystem volume as a gzipped tar (`disk.tar.gz`).
    pub const TAR_GZ: &str = "tar.gz";
}

/// The manifest types.
pub mod manifest {
    pub const ALL: &str = "all";
    pub const AUTH_HEADER: &str = "auth-header-secret";
}

/// KubeVirt's condition reasons and types.
pub mod reason {
    pub const READY: &str = "Ready";
    pub const PVC_READY: &str = "PVCReady";
    pub const INITIALIZING: &str = "Initializing";
    pub const IN_USE: &str = "InUse";
    pub const POD_READY: &str = "PodReady";
    pub const VM_NOT_FOUND: &str = "VMNotFound";
    pub const NO_VOLUME_VM: &str = "VMNoVolumes";
    pub const NO_VOLUME_SNAPSHOT: &str = "VMSnapshotNoVolumes";
    pub const VM_SNAPSHOT_NOT_FOUND: &str = "VMSnapshotNotFound";
    pub const PVC_NOT_FOUND: &str = "PVCNotFound";
    pub const PVC_BOUND: &str = "PVCBound";
    pub const PVC_PENDING: &str = "PVCPending";
    pub const VOLUMES_NOT_POPULATED: &str = "VolumesNotPopulated";
}

/// The URL paths of one export's server, as KubeVirt's export server lays them out below the
/// export proxy's `/api/export.kubevirt.io/v1beta1/namespaces/<ns>/virtualmachineexports/<name>`.
pub mod paths {
    /// The proxy's prefix of one export.
    pub fn export_base(namespace: &str, name: &str) -> String {
        format!(
            "/api/export.kubevirt.io/v1beta1/namespaces/{namespace}/virtualmachineexports/{name}"
        )
    }
    /// `/volumes/<pvc>/disk.img`.
    pub fn raw(volume: &str) -> String {
        format!("/volumes/{volume}/disk.img")
    }
    /// `/volumes/<pvc>/disk.img.gz`.
    pub fn gzip(volume: &str) -> String {
        format!("/volumes/{volume}/disk.img.gz")
    }
    /// `/volumes/<pvc>/disk.tar.gz`.
    pub fn archive(volume: &str) -> String {
        format!("/volumes/{volume}/disk.tar.gz")
    }
    /// `/volumes/<pvc>/dir/`.
    pub fn dir(volume: &str) -> String {
        format!("/volumes/{volume}/dir/")
    }
    /// `/internal/manifests/all`, `/external/manifests/all`.
    pub fn manifests_all(link: &str) -> String {
        format!("/{link}/manifests/all")
    }
    /// `/internal/manifests/secret`, `/external/manifests/secret`.
    pub fn manifests_secret(link: &str) -> String {
        format!("/{link}/manifests/secret")
    }
}

/// The source kinds an export accepts.
pub mod source_kind {
    pub const VM: &str = "VirtualMachine";
    pub const SNAPSHOT: &str = "VirtualMachineSnapshot";
    pub const PVC: &str = "PersistentVolumeClaim";
}
