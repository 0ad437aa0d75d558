//! CDI's `cdi.kubevirt.io/v1beta1` [`DataVolume`] (a PVC and how to fill it: an HTTP import, an
//! upload, a blank image or a clone of another PVC) and `upload.cdi.kubevirt.io/v1beta1`
//! [`UploadTokenRequest`] (a token that lets one client upload into one PVC). Same field names as
//! CDI's `pkg/apis/core/v1beta1` and `pkg/apis/upload/v1beta1`; unknown fields are kept in
//! `extra`. The phases, condition types, reasons and messages are CDI's datavolume controller's.

use serde::{Deserialize, Serialize};

use crate::core::PersistentVolumeClaimSpec;
use crate::meta::{Extra, ObjectMeta};

/// CDI's API group.
pub const CDI_GROUP: &str = "cdi.kubevirt.io";
/// The `apiVersion` of a DataVolume.
pub const CDI_API_VERSION: &str = "cdi.kubevirt.io/v1beta1";
/// CDI's upload API group.
pub const UPLOAD_GROUP: &str = "upload.cdi.kubevirt.io";
/// The `apiVersion` of an UploadTokenRequest.
pub const UPLOAD_API_VERSION: &str = "upload.cdi.kubevirt.io/v1beta1";
/// The image file inside a filesystem PVC (CDI's `DiskImageName`, KubeVirt reads it).
pub const DISK_IMAGE_NAME: &str = "disk.img";
/// CDI's `DefaultGlobalOverhead`: the share of a filesystem volume kept free for the file
/// system, so a `spec.storage` request of S gets a PVC of S / (1 - 0.06).
pub const DEFAULT_FILESYSTEM_OVERHEAD: f64 = 0.06;

/// CDI's upload proxy paths (`pkg/common`): synchronous, asynchronous and form uploads.
pub const UPLOAD_PATH_SYNC: &str = "/v1beta1/upload";
pub const UPLOAD_PATH_ASYNC: &str = "/v1beta1/upload-async";
pub const UPLOAD_FORM_PATH_SYNC: &str = "/v1beta1/upload-form";
pub const UPLOAD_FORM_PATH_ASYNC: &str = "/v1beta1/upload-form-async";

/// CDI's annotations on the PVC of a DataVolume (`pkg/controller/common`).
pub mod annotations {
    /// The phase of the pod filling the PVC (here: ferrovirt's importer): `Running`,
    /// `Succeeded`, `Failed`.
    pub const POD_PHASE: &str = "cdi.kubevirt.io/storage.pod.phase";
    /// Why the importer's last run failed (CDI: the running condition's message).
    pub const RUNNING_MESSAGE: &str = "cdi.kubevirt.io/storage.condition.running.message";
    /// Why the importer's last run failed (CDI: the running condition's reason).
    pub const RUNNING_REASON: &str = "cdi.kubevirt.io/storage.condition.running.reason";
    /// The restarts of the importer (CDI: `cdi.kubevirt.io/storage.pod.restarts`).
    pub const POD_RESTARTS: &str = "cdi.kubevirt.io/storage.pod.restarts";
    /// `kubevirt` or `archive`.
    pub const CONTENT_TYPE: &str = "cdi.kubevirt.io/storage.contentType";
    /// The import source kind: `http`, `upload`, `blank`, `none`.
    pub const SOURCE: &str = "cdi.kubevirt.io/storage.import.source";
    /// The URL of an http import.
    pub const ENDPOINT: &str = "cdi.kubevirt.io/storage.import.endpoint";
    /// Set on the PVC of an upload DataVolume.
    pub const UPLOAD_REQUEST: &str = "cdi.kubevirt.io/storage.upload.target";
    /// The DataVolume that made the PVC.
    pub const CREATED_FOR_DV: &str = "cdi.kubevirt.io/createdForDataVolume";
}

/// A DataVolume's phase (CDI's `DataVolumePhase`; the ones ferrovirt writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataVolumePhase {
    Pending,
    PVCBound,
    ImportScheduled,
    ImportInProgress,
    CloneScheduled,
    CloneInProgress,
    UploadScheduled,
    UploadReady,
    Succeeded,
    Failed,
    Unknown,
    Paused,
}

impl DataVolumePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::PVCBound => "PVCBound",
            Self::ImportScheduled => "ImportScheduled",
            Self::ImportInProgress => "ImportInProgress",
            Self::CloneScheduled => "CloneScheduled",
            Self::CloneInProgress => "CloneInProgress",
            Self::UploadScheduled => "UploadScheduled",
            Self::UploadReady => "UploadReady",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
            Self::Paused => "Paused",
        }
    }
}

/// CDI's event reasons and messages (`pkg/controller/datavolume`).
pub mod reasons {
    pub const IMPORT_SCHEDULED: &str = "ImportScheduled";
    pub const IMPORT_IN_PROGRESS: &str = "ImportInProgress";
    pub const IMPORT_FAILED: &str = "ImportFailed";
    pub const IMPORT_SUCCEEDED: &str = "ImportSucceeded";
    pub const UPLOAD_READY: &str = "UploadReady";
    pub const UPLOAD_FAILED: &str = "UploadFailed";
    pub const UPLOAD_SUCCEEDED: &str = "UploadSucceeded";
    pub const CLONE_SCHEDULED: &str = "CloneScheduled";
    pub const CLONE_IN_PROGRESS: &str = "CloneInProgress";
    pub const CLONE_FAILED: &str = "CloneFailed";
    pub const CLONE_SUCCEEDED: &str = "CloneSucceeded";
    /// CDI's `ErrClaimNotValid`-family reason for a source that is not there yet.
    pub const CLONE_WITHOUT_SOURCE: &str = "CloneWithoutSource";
    pub const BOUND: &str = "Bound";
    pub const PENDING: &str = "Pending";
    pub const CLAIM_PENDING: &str = "Pending";
    pub const POD_RUNNING: &str = "Pod is running";
    pub const COMPLETED: &str = "Completed";
    pub const ERROR: &str = "Error";

    pub fn import_scheduled(pvc: &str) -> String {
        format!("Import into {pvc} scheduled")
    }
    pub fn import_in_progress(pvc: &str) -> String {
        format!("Import into {pvc} in progress")
    }
    pub fn import_failed(pvc: &str) -> String {
        format!("Failed to import into PVC {pvc}")
    }
    pub fn import_succeeded(pvc: &str) -> String {
        format!("Successfully imported into PVC {pvc}")
    }
    pub fn upload_ready(pvc: &str) -> String {
        format!("Upload into {pvc} ready")
    }
    pub fn upload_failed(pvc: &str) -> String {
        format!("Upload into {pvc} failed")
    }
    pub fn upload_succeeded(pvc: &str) -> String {
        format!("Successfully uploaded into {pvc}")
    }
    pub fn clone_scheduled(pvc: &str) -> String {
        format!("Cloning from {pvc} scheduled")
    }
    pub fn clone_in_progress(source: &str, target: &str) -> String {
        format!("Cloning from {source} into {target} in progress")
    }
    pub fn clone_succeeded(source: &str, target: &str) -> String {
        format!("Successfully cloned from {source} into {target}")
    }
    pub fn clone_failed(source: &str, target: &str) -> String {
        format!("Cloning from {source} into {target} failed")
    }
    pub fn bound(pvc: &str) -> String {
        format!("PVC {pvc} Bound")
    }
    pub fn pending(pvc: &str) -> String {
        format!("PVC {pvc} Pending")
    }
}

/// `cdi.kubevirt.io/v1beta1` DataVolume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolume {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: DataVolumeSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec` of a DataVolume (and of a VM's `dataVolumeTemplates[].spec`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DataVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PersistentVolumeClaimSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<PersistentVolumeClaimSpec>,
    /// `kubevirt` (the default: a disk image) or `archive` (a tar unpacked into the volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.source`: exactly one of these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blank: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imageio: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vddk: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<serde_json::Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl DataVolumeSource {
    /// The names of the sources that are set, in CDI's field order.
    pub fn set_sources(&self) -> Vec<&'static str> {
        [
            ("http", self.http.is_some()),
            ("s3", self.s3.is_some()),
            ("gcs", self.gcs.is_some()),
            ("registry", self.registry.is_some()),
            ("pvc", self.pvc.is_some()),
            ("upload", self.upload.is_some()),
            ("blank", self.blank.is_some()),
            ("imageio", self.imageio.is_some()),
            ("vddk", self.vddk.is_some()),
            ("snapshot", self.snapshot.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// `source.http`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpSource {
    #[serde(default)]
    pub url: String,
    /// A Secret with `accessKeyId` and `secretKey` (basic authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
    /// A ConfigMap whose `ca.pem` holds the CA certificates that sign the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_config_map: Option<String>,
    /// Header lines (`Name: value`) sent with the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_headers: Vec<String>,
    /// Secrets each of whose values is a header line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_extra_headers: Vec<String>,
    /// `algorithm:hex`, algorithm one of md5, sha1, sha256, sha512 (CDI's format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `source.pvc`: the PVC to clone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PvcSource {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A checksum algorithm CDI accepts in `source.http.checksum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl ChecksumAlgorithm {
    /// Hex digits of a digest.
    pub fn hex_len(self) -> usize {
        match self {
            Self::Md5 => 32,
            Self::Sha1 => 40,
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }
}

/// A parsed `algorithm:hex` checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    /// Lower-case hex.
    pub hex: String,
}

impl Checksum {
    /// Parses CDI's `algorithm:hash` format.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((algorithm, hex)) = text.split_once(':') else {
            return Err(format!(
                "checksum must be in format 'algorithm:hash', got {text:?}"
            ));
        };
        let algorithm = match algorithm.to_ascii_lowercase().as_str() {
            "md5" => ChecksumAlgorithm::Md5,
            "sha1" => ChecksumAlgorithm::Sha1,
            "sha256" => ChecksumAlgorithm::Sha256,
            "sha512" => ChecksumAlgorithm::Sha512,
            other => {
                return Err(format!(
                    "unsupported checksum algorithm {other:?}, supported: md5, sha1, sha256, sha512"
                ));
            }
        };
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "invalid {} hash {hex:?}: expected {} hex digits",
                text.split(':').next().unwrap_or(""),
                algorithm.hex_len()
            ));
        }
        Ok(Self {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }
}

impl DataVolume {
    /// The PVC spec the DataVolume asks for (`spec.pvc`, else `spec.storage`).
    pub fn claim_spec(&self) -> Option<&PersistentVolumeClaimSpec> {
        self.spec.pvc.as_ref().or(self.spec.storage.as_ref())
    }

    /// The storage request (`resources.requests.storage`) in bytes, 0 when unset or bad.
    pub fn requested_bytes(&self) -> u64 {
        self.claim_spec()
            .and_then(|c| c.resources.as_ref())
            .and_then(|r| r.request("storage"))
            .and_then(|q| q.to_bytes().ok())
            .unwrap_or(0)
    }

    /// The size of the PVC made for it: `spec.pvc`'s request as asked; `spec.storage`'s grown by
    /// CDI's filesystem overhead ([`claim_bytes`]).
    pub fn claim_request_bytes(&self) -> u64 {
        claim_bytes(self.requested_bytes(), self.spec.pvc.is_none())
    }

    /// The size `disk.img` gets: `spec.storage`'s request (the PVC holds the overhead beside
    /// it); `spec.pvc`'s request less the overhead, rounded down to a MiB.
    pub fn image_bytes(&self) -> u64 {
        let requested = self.requested_bytes();
        if self.spec.pvc.is_none() {
            return requested;
        }
        const MIB: u64 = 1024 * 1024;
        let usable = (requested as f64 * (1.0 - DEFAULT_FILESYSTEM_OVERHEAD)) as u64;
        (usable / MIB * MIB).max(MIB.min(requested))
    }

    /// `contentType: archive`.
    pub fn is_archive(&self) -> bool {
        self.spec.content_type.as_deref() == Some("archive")
    }
}

/// The size a PVC of a DataVolume gets: `spec.pvc` as asked; `spec.storage` grown by CDI's
/// filesystem overhead (`requested / (1 - overhead)`, rounded up to a MiB), so the image of the
/// requested size fits beside the file system's own data.
pub fn claim_bytes(requested: u64, with_overhead: bool) -> u64 {
    if !with_overhead {
        return requested;
    }
    let grown = (requested as f64 / (1.0 - DEFAULT_FILESYSTEM_OVERHEAD)).ceil() as u64;
    const MIB: u64 = 1024 * 1024;
    grown.div_ceil(MIB) * MIB
}

/// `upload.cdi.kubevirt.io/v1beta1` UploadTokenRequest: not stored; a create answers it with
/// `status.token`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadTokenRequest {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: UploadTokenRequestSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UploadTokenRequestStatus>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadTokenRequestSpec {
    #[serde(default)]
    pub pvc_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadTokenRequestStatus {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_parse_as_cdi_writes_them() {
        let sha = format!("sha256:{}", "A".repeat(64));
        let parsed = Checksum::parse(&sha).unwrap();
        assert_eq!(parsed.algorithm, ChecksumAlgorithm::Sha256);
        assert_eq!(parsed.hex, "a".repeat(64));
        assert!(Checksum::parse("sha256:abc").is_err());
        assert!(Checksum::parse("crc32:00000000").is_err());
        assert!(Checksum::parse("nohash").is_err());
    }

    #[test]
    fn storage_gets_the_filesystem_overhead() {
        let gib = 1024 * 1024 * 1024;
        assert_eq!(claim_bytes(gib, false), gib);
        let grown = claim_bytes(gib, true);
        assert!(grown > gib && grown as f64 >= gib as f64 / 0.94);
        assert_eq!(grown % (1024 * 1024), 0);
    }
}
