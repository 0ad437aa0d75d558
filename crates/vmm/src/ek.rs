//! A VM's TPM endorsement credentials (issue 15, "EK access"): what the `tpm/ek` subresource
//! returns, and the EK certificates' fingerprints the VM status shows.
//!
//! The subresource reads the certificates out of the TPM's NV memory every time (an offline swtpm
//! on a copy of the state, `ferrovirt_tpm::ek`), so it shows what a guest's attestation would
//! present. The status needs the fingerprints at every start, where a swtpm run would cost
//! ~100 ms, so the engine keeps the certificates' DER in the volume, `meta/ferrovirt/ek/`
//! (beside KubeVirt's `meta/migrated`; the rest of the volume stays KubeVirt's layout): written
//! from what swtpm_setup wrote at manufacture, or, for a TPM manufactured before this existed,
//! read once out of NV memory. An EK certificate never changes after manufacture
//! (`--lock-nvram`); a state that was manufactured again overwrites the copies.

use std::path::{Path, PathBuf};

use ferrovirt_storage::{StateVolume, VmUuid};
/// What the API shows, re-exported so that callers need not depend on the tpm crate.
pub use ferrovirt_tpm::{CertificateInfo, EkCredentials, EkKind};
use ferrovirt_tpm::{EkError, ManufactureReport, Sha256Digest};

use crate::state::TpmPlan;

/// Where the copies of the EK certificates live, relative to the volume's `meta/`.
pub const EK_CACHE_DIR: &str = "ferrovirt/ek";

/// Why a VM's EK credentials cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum EkAccessError {
    /// The VM has no TPM, or an ephemeral one (a new EK at every start).
    #[error(
        "VirtualMachine {name} has {what}; only a persistent TPM \
         (spec.template.spec.domain.devices.tpm.persistent: true) keeps an EK across starts"
    )]
    NoPersistentTpm { name: String, what: &'static str },
    /// The TPM was never started, so it has no EK yet.
    #[error(
        "VirtualMachine {name} has no TPM state yet (it is manufactured at the first start); start it once"
    )]
    NotManufactured { name: String },
    /// The volume could not be opened.
    #[error("backend-storage volume {volume}: {reason}")]
    Volume { volume: PathBuf, reason: String },
    /// Reading the credentials failed.
    #[error(transparent)]
    Ek(#[from] EkError),
    /// The state is encrypted and its key cannot be unlocked.
    #[error(transparent)]
    Keys(#[from] crate::state_keys::StateKeyError),
}

/// The SHA-256 fingerprints of a TPM's EK certificates (lowercase hex of the DER's digest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EkFingerprints {
    pub rsa: Option<String>,
    pub ecc: Option<String>,
}

impl EkFingerprints {
    pub fn is_empty(&self) -> bool {
        self.rsa.is_none() && self.ecc.is_none()
    }
}

fn volume_of(
    name: &str,
    tpm: TpmPlan,
    volume: Option<&Path>,
) -> Result<StateVolume, EkAccessError> {
    let what = match tpm {
        TpmPlan::Persistent => None,
        TpmPlan::Ephemeral => Some("an ephemeral TPM"),
        TpmPlan::None => Some("no TPM"),
    };
    let volume = match (what, volume) {
        (None, Some(volume)) => volume,
        (Some(what), _) => {
            return Err(EkAccessError::NoPersistentTpm {
                name: name.to_owned(),
                what,
            });
        }
        (None, None) => {
            return Err(EkAccessError::NotManufactured {
                name: name.to_owned(),
            });
        }
    };
    StateVolume::open(volume).map_err(|e| EkAccessError::Volume {
        volume: volume.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads the EK credentials of a VM's persistent TPM offline (works while it is stopped).
pub fn ek_credentials(
    name: &str,
    uuid: &VmUuid,
    tpm: TpmPlan,
    volume: Option<&Path>,
    keyring: &ferrovirt_keys::Keyring,
) -> Result<EkCredentials, EkAccessError> {
    let volume = volume_of(name, tpm, volume)?;
    if !volume.has_tpm_state(uuid) {
        return Err(EkAccessError::NotManufactured {
            name: name.to_owned(),
        });
    }
    // An encrypted state is read by the throw-away swtpm with the VM's key (through a pipe).
    let data_key = crate::state_keys::unlock(name, &volume, keyring)?;
    let state_key = crate::state_keys::tpm_key_for(
        &volume.tpm_state_file(uuid),
        data_key.as_ref(),
        &crate::state_keys::record_path(&volume),
    )?;
    Ok(ferrovirt_tpm::read_ek_credentials(
        &volume.tpm_state_dir(uuid),
        &volume.localca_dir(),
        state_key,
    )?)
}

/// The fingerprints for the VM status at a start: from this start's manufacture, else from the
/// copies in the volume, else read once out of NV memory (and copied). `None` without a
/// persistent TPM state. Failures are logged, never fail the start.
pub fn fingerprints_at_start(
    name: &str,
    uuid: &VmUuid,
    tpm: TpmPlan,
    volume: Option<&Path>,
    manufactured: Option<&ManufactureReport>,
    state_key: Option<ferrovirt_tpm::StateKey>,
) -> Option<EkFingerprints> {
    let volume = volume_of(name, tpm, volume).ok()?;
    if !volume.has_tpm_state(uuid) {
        return None;
    }
    let cache = volume.meta_dir().join(EK_CACHE_DIR);
    let fresh: Option<Vec<(EkKind, Vec<u8>)>> = match manufactured {
        Some(report) if !report.ek_certificates.is_empty() => Some(
            report
                .ek_certificates
                .iter()
                .map(|f| (kind_of_file(&f.name), f.der.clone()))
                .collect(),
        ),
        _ => None,
    };
    let certs = match fresh {
        Some(certs) => {
            store_copies(&cache, &certs);
            certs
        }
        None => match read_copies(&cache) {
            Some(certs) => certs,
            None => {
                let from_nv = match ferrovirt_tpm::read_ek_certificates(
                    &volume.tpm_state_dir(uuid),
                    state_key,
                ) {
                    Ok(certs) => certs,
                    Err(e) => {
                        tracing::warn!(vm = name, "cannot read the EK certificates: {e}");
                        return None;
                    }
                };
                let certs: Vec<_> = from_nv.into_iter().map(|c| (c.kind, c.der)).collect();
                store_copies(&cache, &certs);
                certs
            }
        },
    };
    let mut prints = EkFingerprints::default();
    for (kind, der) in certs {
        let hex = Sha256Digest::of(&der).to_string();
        match kind {
            EkKind::Rsa => prints.rsa = Some(hex),
            EkKind::Ecc => prints.ecc = Some(hex),
        }
    }
    Some(prints).filter(|p| !p.is_empty())
}

/// swtpm_setup's file names: `ek-rsa2048.crt`, `ek-rsa3072.crt`, `ek-secp384r1.crt`.
fn kind_of_file(name: &str) -> EkKind {
    if name.starts_with("ek-rsa") {
        EkKind::Rsa
    } else {
        EkKind::Ecc
    }
}

fn file_of(kind: EkKind) -> &'static str {
    match kind {
        EkKind::Rsa => "ek-rsa.der",
        EkKind::Ecc => "ek-ecc.der",
    }
}

fn store_copies(dir: &Path, certs: &[(EkKind, Vec<u8>)]) {
    let result = ferrovirt_storage::atomic::create_dir_private(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            certs.iter().try_for_each(|(kind, der)| {
                ferrovirt_storage::atomic::write_file(&dir.join(file_of(*kind)), der, 0o600)
                    .map_err(|e| e.to_string())
            })
        });
    if let Err(e) = result {
        tracing::warn!(dir = %dir.display(), "cannot keep the EK certificates: {e}");
    }
}

fn read_copies(dir: &Path) -> Option<Vec<(EkKind, Vec<u8>)>> {
    let certs: Vec<_> = [EkKind::Rsa, EkKind::Ecc]
        .into_iter()
        .filter_map(|kind| {
            std::fs::read(dir.join(file_of(kind)))
                .ok()
                .filter(|der| ferrovirt_tpm::check::is_der_sequence(der))
                .map(|der| (kind, der))
        })
        .collect();
    Some(certs).filter(|c| !c.is_empty())
}
