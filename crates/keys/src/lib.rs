//! Keys for encryption at rest of a VM's persistent state: the per-VM data key (DEK, [`DataKey`])
//! that swtpm encrypts the TPM state with and that seals the UEFI variable store, the
//! key-encryption key (KEK) providers that wrap it ([`Keyring`]: a local key file in the data
//! dir, the default, or an external KMS through an exec plugin speaking JSON, [`plugin`]), the
//! wrapped DEK's record kept in the VM's backend-storage volume (`meta/ferrovirt/state-key.json`,
//! [`WrappedKey`]) and the authenticated file format of sealed files ([`sealed`], AES-256-GCM).
//! It never writes a plain state anywhere; callers decrypt into a VM's private runtime dir only.
//!
//! Layering: `sealed` and `wrap` (the crypto) know nothing of files; `local` (the KEK files),
//! `plugin` (the exec protocol) and `record` (the wrapped DEK on disk) build on them; `keyring`
//! (the configured provider) on all of them.

mod data_key;
mod error;
pub mod keyring;
pub mod local;
pub mod plugin;
pub mod record;
pub mod sealed;
mod wrap;

pub use data_key::{DataKey, KeyId};
pub use error::KeyError;
pub use keyring::{EncryptionSetting, Keyring, SETTING_FILE};
pub use record::{STATE_KEY_FILE, WrappedKey};
pub use sealed::SealError;
