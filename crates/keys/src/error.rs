//! Why a key could not be made, wrapped, unwrapped or found.

use std::path::PathBuf;

/// A key operation failed. Every message says what, where and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The system's random source failed.
    #[error("the system's random number generator failed; no key was made")]
    Random,
    /// A key of the wrong size.
    #[error("a data key must be 32 bytes (AES-256), found {found}")]
    KeyLength {
        /// Bytes found.
        found: usize,
    },
    /// The KEK that wrapped a DEK is not where the provider keeps it.
    #[error(
        "the key-encryption key {kek_id} that wrapped this VM's data key is missing: {path} does \
         not exist. Put that file back from your backup of the data dir's state-keys/ (mode 0600), \
         or start the server with the provider that holds it (--state-encryption); the VM's state \
         was not changed"
    )]
    KekMissing {
        /// The KEK's id in the record.
        kek_id: String,
        /// Where the provider looked.
        path: PathBuf,
    },
    /// Unwrapping failed: the KEK is not the one that wrapped the DEK, or the record was changed.
    #[error(
        "cannot unwrap this VM's data key with the key-encryption key {kek_id} ({source_desc}): \
         wrong key or a damaged record {record}. Restore the right key (the data dir's \
         state-keys/ or the KMS plugin's key) or the record from a snapshot; the VM's state was \
         not changed"
    )]
    UnwrapFailed {
        /// The KEK's id.
        kek_id: String,
        /// Where the KEK came from.
        source_desc: String,
        /// The wrapped-key record.
        record: PathBuf,
    },
    /// The record names a provider this server is not configured with.
    #[error(
        "{record}: this VM's data key is wrapped by the {wanted} provider, but the server uses \
         {configured}; start it with --state-encryption {wanted_flag} (the state was not changed)"
    )]
    ProviderMismatch {
        /// The record.
        record: PathBuf,
        /// The provider in the record.
        wanted: String,
        /// What the flag should be.
        wanted_flag: String,
        /// The provider configured.
        configured: String,
    },
    /// A key file or record could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A file holds something that is not what it should be.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        reason: String,
    },
    /// The exec plugin failed.
    #[error(transparent)]
    Plugin(#[from] crate::plugin::PluginError),
}
