//! The emulated TPM's state outside of a running VM: manufacturing a persistent TPM 2.0 with
//! swtpm_setup and a per-volume local CA (EK and platform certificates), and checking, without
//! modifying it, that a TPM state can be read before a VM starts. Running swtpm for a VM is the
//! engine's job; this crate only runs swtpm offline on private copies. It also reads the TPM's
//! endorsement credentials (EK certificates, public keys, the local CA's chain) offline.
//! Encryption at rest is swtpm's own (`key`: the key reaches swtpm through a pipe, never a file);
//! `reencrypt` converts a state between keys (or from/to plain) on private copies. `pool` keeps
//! TPMs manufactured ahead of need and personalizes one for a VM at its first start.

pub mod check;
pub mod ctrl;
pub mod ek;
mod fsutil;
pub mod key;
pub mod localca;
pub mod manufacture;
mod offline;
pub mod pool;
mod process;
pub mod reencrypt;
pub mod socket;
pub mod tpm2;

pub use check::{
    CheckOptions, EkCertificate, EkKind, STATE_FILE, Sha256Digest, StateError, StateInfo,
    check_state, check_state_with, read_ek_certificates,
};
pub use ek::{CertificateInfo, EkCredential, EkCredentials, EkError, read_ek_credentials};
pub use key::{StateCipher, StateKey, is_encrypted_state};
pub use localca::{CaStatus, LocalCa, LocalCaError, PlatformInfo};
pub use manufacture::{
    EkCertificateFile, ManufactureError, ManufactureOptions, ManufactureOutcome, ManufactureReport,
    ManufactureRequest, RsaKeySize, VmId, manufacture,
};
pub use pool::{ClaimedTpm, PoolError, PoolKind, TpmPool};
pub use reencrypt::reencrypt_state;
