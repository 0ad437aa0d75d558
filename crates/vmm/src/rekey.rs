//! `ferrovirt state rekey`: rotating the keys of a stopped VM's encrypted state.
//!
//! - Always: the data key (DEK) is wrapped again under the provider's current KEK (after
//!   `--new-kek`, a new local KEK version; after switching `--state-encryption` to another
//!   provider, that provider's key), so an old KEK can be retired.
//! - `--rotate-dek`: a new DEK; the TPM state is re-encrypted through swtpm (state blobs moved
//!   from an swtpm with the old key to one with the new key, in a private scratch dir) and the
//!   VARS sealed again. The files are written one after the other, each crash-safely; a
//!   generation recorded first (old key record + old files) is the way back if the host crashes
//!   in between (the next start then fails closed and names it).
//!
//! The state after the rekey is recorded as a generation as well. Refused while the VM's QEMU or
//! swtpm runs.

use std::path::Path;

use ferrovirt_keys::{DataKey, Keyring, WrappedKey};
use ferrovirt_storage::{GenerationId, StateVolume};

use crate::engine::{
    EngineError, VmPlan, generations_dir, offline_state_plan, vm_processes_running,
};
use crate::state::{FirmwarePlan, StateFault, TpmPlan};
use crate::state_keys::{self, StateKeyError};

/// What to rotate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RekeyOptions {
    /// Make a new local KEK version first (local provider only).
    pub new_kek: bool,
    /// Give the VM a new data key and re-encrypt its state with it.
    pub rotate_dek: bool,
}

/// What a rekey did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyReport {
    /// The generation holding the state and key record before the rekey.
    pub generation: GenerationId,
    pub old_kek: String,
    pub new_kek: String,
    pub old_data_key: String,
    pub new_data_key: String,
}

/// Why a rekey was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    #[error(
        "VirtualMachine {name} is running ({what} alive on this host); stop it before rotating its keys"
    )]
    Running { name: String, what: &'static str },
    #[error(
        "VirtualMachine {name}'s state is not encrypted (no key record in {record}); it is \
         encrypted at its next start when the server runs with --state-encryption local or exec"
    )]
    NotEncrypted {
        name: String,
        record: std::path::PathBuf,
    },
    #[error("VirtualMachine {name} keeps no persistent TPM or EFI state")]
    NoState { name: String },
    #[error(
        "--new-kek makes a new local key-encryption key, but the server uses --state-encryption \
         {setting}; rotate the KMS key in the KMS instead (a rekey re-wraps under its current key)"
    )]
    NotLocal { setting: String },
    #[error(transparent)]
    Keys(Box<StateKeyError>),
    #[error(transparent)]
    Key(Box<ferrovirt_keys::KeyError>),
    #[error(transparent)]
    State(Box<StateFault>),
    #[error(transparent)]
    Engine(Box<EngineError>),
}

impl From<StateKeyError> for RekeyError {
    fn from(e: StateKeyError) -> Self {
        Self::Keys(Box::new(e))
    }
}

impl From<ferrovirt_keys::KeyError> for RekeyError {
    fn from(e: ferrovirt_keys::KeyError) -> Self {
        Self::Key(Box::new(e))
    }
}

impl From<StateFault> for RekeyError {
    fn from(e: StateFault) -> Self {
        Self::State(Box::new(e))
    }
}

impl From<EngineError> for RekeyError {
    fn from(e: EngineError) -> Self {
        Self::Engine(Box::new(e))
    }
}

/// Rotates the keys of the stopped VM of `plan` (see the module docs).
pub fn rekey(
    data_dir: &Path,
    plan: &VmPlan,
    options: RekeyOptions,
) -> Result<RekeyReport, RekeyError> {
    let running = vm_processes_running(data_dir, &plan.uuid)?;
    if running.any_running() {
        return Err(RekeyError::Running {
            name: plan.name.clone(),
            what: running.what(),
        });
    }
    let no_state = || RekeyError::NoState {
        name: plan.name.clone(),
    };
    let volume = StateVolume::open(plan.state_volume.as_deref().ok_or_else(no_state)?)
        .map_err(|_| no_state())?;
    let keyring = Keyring::for_data_dir(data_dir)?;
    let record_path = state_keys::record_path(&volume);
    let Some(old_record) = WrappedKey::read(&record_path)? else {
        return Err(RekeyError::NotEncrypted {
            name: plan.name.clone(),
            record: record_path,
        });
    };
    // Fails closed before anything changes.
    let old_key = keyring.unwrap(&old_record, &record_path)?;
    if options.new_kek {
        if !matches!(
            keyring.setting(),
            ferrovirt_keys::EncryptionSetting::Local | ferrovirt_keys::EncryptionSetting::None
        ) {
            return Err(RekeyError::NotLocal {
                setting: keyring.setting().to_string(),
            });
        }
        keyring.local().create_next()?;
    }
    let scratch = data_dir.join("run");
    let generations = generations_dir(data_dir, plan)?;
    let (generation, vars) = crate::state::record_before_change(
        &offline_state_plan(plan, &scratch, generations.as_deref(), &keyring),
        "before rotating the state keys",
    )?;
    let new_key = if options.rotate_dek {
        let new_key = DataKey::generate()?;
        reencrypt_files(plan, &volume, vars.as_deref(), &old_key, &new_key, &scratch)?;
        new_key
    } else {
        old_key.clone()
    };
    let new_record = keyring.wrap(&new_key)?;
    new_record.write(&record_path)?;
    // The rekeyed state is a generation too: a volume lost from now on comes back with the new
    // keys (the one before the rekey still needs the old KEK).
    crate::state::record_before_change(
        &offline_state_plan(plan, &scratch, generations.as_deref(), &keyring),
        "after rotating the state keys",
    )?;
    tracing::info!(
        vm = %plan.name,
        old_kek = %old_record.kek_id,
        new_kek = %new_record.kek_id,
        old_data_key = %old_key.id(),
        new_data_key = %new_key.id(),
        "rotated the state keys"
    );
    Ok(RekeyReport {
        generation,
        old_kek: old_record.kek_id,
        new_kek: new_record.kek_id,
        old_data_key: old_key.id().0,
        new_data_key: new_key.id().0,
    })
}

fn reencrypt_files(
    plan: &VmPlan,
    volume: &StateVolume,
    vars: Option<&Path>,
    old_key: &DataKey,
    new_key: &DataKey,
    scratch: &Path,
) -> Result<(), RekeyError> {
    let record = state_keys::record_path(volume);
    // Everything is computed before the first write.
    let tpm = if plan.tpm == TpmPlan::Persistent && volume.has_tpm_state(&plan.uuid) {
        let file = volume.tpm_state_file(&plan.uuid);
        let from = state_keys::tpm_key_for(&file, Some(old_key), &record)?;
        let work = state_keys::private_scratch(scratch)?;
        let bytes = ferrovirt_tpm::reencrypt_state(
            &volume.tpm_state_dir(&plan.uuid),
            from.as_ref(),
            Some(&state_keys::tpm_key(new_key)),
            work.path(),
        )
        .map_err(|source| StateFault::TpmUnusable {
            source,
            vm: plan.name.clone(),
            generation: None,
        })?;
        Some((file, bytes))
    } else {
        None
    };
    let efi_persistent = matches!(
        plan.firmware,
        FirmwarePlan::Uefi {
            persistent: true,
            ..
        }
    );
    let vars = match vars {
        Some(path) if efi_persistent && path.exists() => {
            let plain = state_keys::read_vars(&plan.name, path, Some(old_key), &record)?;
            Some((path, plain))
        }
        _ => None,
    };
    if let Some((file, bytes)) = tpm {
        ferrovirt_storage::atomic::write_file(&file, &bytes, 0o600).map_err(|e| {
            StateKeyError::Io {
                path: file.clone(),
                reason: e.to_string(),
            }
        })?;
    }
    if let Some((path, plain)) = vars {
        state_keys::write_vars(path, Some(new_key), &plain)?;
    }
    Ok(())
}
