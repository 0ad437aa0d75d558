//! Encryption at rest of the TPM state: the key swtpm needs to read an encrypted state.
//!
//! swtpm fails closed: without the key, or with a wrong one, it refuses the state ("Could not
//! find plain data" / "Verification of HMAC failed") and never rewrites it.

use std::path::PathBuf;

/// The cipher swtpm encrypts the state with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateCipher {
    /// AES-128-CBC: the key file holds 32 hex digits.
    Aes128Cbc,
    /// AES-256-CBC: the key file holds 64 hex digits.
    #[default]
    Aes256Cbc,
}

impl StateCipher {
    /// swtpm's name of the cipher (`mode=` / `--cipher`).
    pub fn swtpm_name(self) -> &'static str {
        match self {
            StateCipher::Aes128Cbc => "aes-128-cbc",
            StateCipher::Aes256Cbc => "aes-256-cbc",
        }
    }
}

/// A state encryption key stored in a file as hex digits (swtpm `format=hex`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKey {
    /// File holding the key as hex digits (0600, outside the state dir).
    pub file: PathBuf,
    /// Cipher the state is encrypted with.
    pub cipher: StateCipher,
}

impl StateKey {
    /// A key file for `cipher`.
    pub fn new(file: impl Into<PathBuf>, cipher: StateCipher) -> Self {
        Self {
            file: file.into(),
            cipher,
        }
    }

    /// The value of swtpm's `--key` option.
    pub fn swtpm_key_arg(&self) -> String {
        format!(
            "file={},mode={},format=hex,remove=false",
            self.file.display(),
            self.cipher.swtpm_name()
        )
    }

    /// swtpm_setup's options for this key.
    pub fn swtpm_setup_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--keyfile".into(),
            self.file.clone().into_os_string(),
            "--cipher".into(),
            self.cipher.swtpm_name().into(),
        ]
    }
}
