//! The wrapped data key of one VM, kept in its backend-storage volume
//! (`meta/ferrovirt/state-key.json`, 0600, written crash-safely), so that it travels with the
//! state it unlocks: state generations and snapshots copy it beside the TPM state and VARS.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::data_key::KeyId;
use crate::error::KeyError;

/// The record's path inside the volume's `meta/` dir.
pub const STATE_KEY_FILE: &str = "ferrovirt/state-key.json";

/// Which provider wrapped a data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// A local KEK file in the data dir (`state-keys/kek-<n>.key`).
    Local,
    /// An exec KMS plugin.
    Exec,
}

/// A data key wrapped by a KEK.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrappedKey {
    /// `keys.ferrovirt.io/v1`.
    pub api_version: String,
    /// `WrappedDataKey`.
    pub kind: String,
    /// Who wrapped it.
    pub provider: Provider,
    /// The KEK: `local-<n>`, or the plugin's `keyID`.
    #[serde(rename = "kekID")]
    pub kek_id: String,
    /// The data key's public name (checked after unwrapping).
    #[serde(rename = "dataKeyID")]
    pub data_key_id: KeyId,
    /// The wrapped key, base64.
    pub wrapped: String,
}

impl WrappedKey {
    pub(crate) fn new(
        provider: Provider,
        kek_id: String,
        data_key_id: KeyId,
        wrapped: &[u8],
    ) -> Self {
        Self {
            api_version: crate::plugin::API_VERSION.to_owned(),
            kind: "WrappedDataKey".to_owned(),
            provider,
            kek_id,
            data_key_id,
            wrapped: STANDARD.encode(wrapped),
        }
    }

    /// The wrapped bytes.
    pub(crate) fn wrapped_bytes(&self, path: &Path) -> Result<Vec<u8>, KeyError> {
        STANDARD
            .decode(&self.wrapped)
            .map_err(|e| KeyError::Malformed {
                path: path.to_path_buf(),
                reason: format!(
                    "wrapped is not base64 ({e}); restore the file from a snapshot or generation"
                ),
            })
    }

    /// The record's file in a volume whose `meta/` dir is `meta_dir`.
    pub fn path_in(meta_dir: &Path) -> PathBuf {
        meta_dir.join(STATE_KEY_FILE)
    }

    /// Reads the record at `path`; `None` when there is none (a plain state).
    pub fn read(path: &Path) -> Result<Option<Self>, KeyError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(KeyError::Io {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| KeyError::Malformed {
                path: path.to_path_buf(),
                reason: format!(
                    "not a WrappedDataKey record ({e}); restore it from a snapshot or generation"
                ),
            })
    }

    /// Writes the record at `path` crash-safely (0600; its dir is created 0700).
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        let io = |reason: String| KeyError::Io {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(dir) = path.parent() {
            ferrovirt_storage::atomic::create_dir_private(dir).map_err(|e| io(e.to_string()))?;
        }
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| io(e.to_string()))?;
        json.push(b'\n');
        ferrovirt_storage::atomic::write_file(path, &json, 0o600).map_err(|e| io(e.to_string()))
    }
}
