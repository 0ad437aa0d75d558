//! A stopped VM's UEFI variables (issue 15): read, and changed offline in its persistent VARS
//! file with `ferrovirt_firmware::VariableStore`. A change is refused while the VM's QEMU or
//! swtpm runs on this host (the firmware owns the file then), records a state generation first
//! (so `ferrovirt state rollback` undoes it), and says which PCRs the next boot measures
//! differently (`boot_guard`'s table: PK, KEK, db, dbx and the Secure Boot variables -> PCR7;
//! other variables measure nothing the firmware seals to, except boot entries in PCR1).

use std::path::{Path, PathBuf};

use ferrovirt_firmware::vars::{
    EFI_GLOBAL_VARIABLE_GUID, EFI_IMAGE_SECURITY_DATABASE_GUID, EfiGuid,
};
use ferrovirt_firmware::{
    Architecture, DEFAULT_SEARCH_DIRS, FirmwareRequest, VariableStore, VarsWriteError,
    load_descriptors, select_uefi,
};
use ferrovirt_storage::GenerationId;

use crate::engine::{
    EngineError, VmPlan, generations_dir, offline_state_plan, vm_processes_running,
};
use crate::state::FirmwarePlan;

/// Why a VM's UEFI variables cannot be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum EfiVarsError {
    /// The VM keeps no VARS file.
    #[error(
        "VirtualMachine {name} has no persistent UEFI variables: set \
         spec.template.spec.domain.firmware.bootloader.efi.persistent: true"
    )]
    NotPersistent { name: String },
    /// The VM never started, so its VARS file does not exist yet.
    #[error(
        "VirtualMachine {name} has no VARS file yet (it is copied from the firmware's template at \
         the first start); start it once"
    )]
    NoVarsFile { name: String },
    /// The VM runs.
    #[error(
        "VirtualMachine {name} is running ({what} alive on this host); stop it before changing its \
         UEFI variables (the firmware owns the VARS file while it runs)"
    )]
    Running { name: String, what: &'static str },
    #[error(transparent)]
    Vars(#[from] VarsWriteError),
    /// The firmware's VARS template cannot be found or copied.
    #[error("cannot reset the UEFI variables of {name} to the firmware's template: {reason}")]
    Template { name: String, reason: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The VARS file is encrypted and cannot be opened with the VM's key.
    #[error(transparent)]
    Keys(Box<crate::state_keys::StateKeyError>),
}

impl From<crate::state_keys::StateKeyError> for EfiVarsError {
    fn from(e: crate::state_keys::StateKeyError) -> Self {
        Self::Keys(Box::new(e))
    }
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfiVarsChange {
    /// The generation that keeps the state before the change.
    pub generation: GenerationId,
    /// The PCRs the next boot measures differently (empty: none the firmware seals to).
    pub pcrs: Vec<u8>,
}

/// The PCRs a change of variable `name`/`vendor` affects (TCG PC Client: PCR7 holds the Secure
/// Boot policy, PCR1 the boot configuration variables).
pub fn pcrs_of(name: &str, vendor: &EfiGuid) -> Vec<u8> {
    let secure_boot_policy = (*vendor == EFI_GLOBAL_VARIABLE_GUID
        && matches!(name, "PK" | "KEK" | "SecureBoot"))
        || (*vendor == EFI_IMAGE_SECURITY_DATABASE_GUID && matches!(name, "db" | "dbx"));
    let boot_configuration = *vendor == EFI_GLOBAL_VARIABLE_GUID
        && (name == "BootOrder"
            || (name.len() == 8
                && name.starts_with("Boot")
                && name[4..].chars().all(|c| c.is_ascii_hexdigit())));
    if secure_boot_policy {
        vec![7]
    } else if boot_configuration {
        vec![1]
    } else {
        Vec::new()
    }
}

fn vars_file(plan: &VmPlan) -> Result<PathBuf, EfiVarsError> {
    if !matches!(
        plan.firmware,
        FirmwarePlan::Uefi {
            persistent: true,
            ..
        }
    ) {
        return Err(EfiVarsError::NotPersistent {
            name: plan.name.clone(),
        });
    }
    let volume = plan
        .state_volume
        .as_deref()
        .ok_or_else(|| EfiVarsError::NoVarsFile {
            name: plan.name.clone(),
        })?;
    let path = ferrovirt_storage::StateVolume::open(volume)
        .and_then(|v| v.nvram_file(&plan.name))
        .map_err(|_| EfiVarsError::NoVarsFile {
            name: plan.name.clone(),
        })?;
    if !path.is_file() {
        return Err(EfiVarsError::NoVarsFile {
            name: plan.name.clone(),
        });
    }
    Ok(path)
}

/// A VM's VARS file at rest with the data key that opens it (`None`: a plain file).
struct VarsAtRest {
    path: PathBuf,
    key: Option<ferrovirt_keys::DataKey>,
    record: PathBuf,
}

impl VarsAtRest {
    fn open(data_dir: &Path, plan: &VmPlan) -> Result<Self, EfiVarsError> {
        let path = vars_file(plan)?;
        let volume = plan
            .state_volume
            .as_deref()
            .and_then(|v| ferrovirt_storage::StateVolume::open(v).ok())
            .ok_or_else(|| EfiVarsError::NoVarsFile {
                name: plan.name.clone(),
            })?;
        let keyring = ferrovirt_keys::Keyring::for_data_dir(data_dir).map_err(EngineError::from)?;
        let key = crate::state_keys::unlock(&plan.name, &volume, &keyring)?;
        Ok(Self {
            path,
            key,
            record: crate::state_keys::record_path(&volume),
        })
    }

    /// The variables, decrypted in memory.
    fn store(&self, vm: &str) -> Result<VariableStore, EfiVarsError> {
        let plain = crate::state_keys::read_vars(vm, &self.path, self.key.as_ref(), &self.record)?;
        Ok(VariableStore::parse(&self.path, plain.to_vec())?)
    }

    /// Writes `plain` back crash-safely, sealed when the file is encrypted.
    fn write(&self, plain: &[u8]) -> Result<(), EfiVarsError> {
        Ok(crate::state_keys::write_vars(
            &self.path,
            self.key.as_ref(),
            plain,
        )?)
    }
}

/// The VM's variables as its VARS file holds them (also while it runs: the last sealed or
/// flushed state), decrypted in memory with the VM's key when the file is encrypted.
pub fn read(data_dir: &Path, plan: &VmPlan) -> Result<VariableStore, EfiVarsError> {
    VarsAtRest::open(data_dir, plan)?.store(&plan.name)
}

/// Changes the variables of a stopped VM: `change` edits the store and returns the PCRs it
/// affects; a generation is recorded before the file is rewritten.
pub fn change(
    data_dir: &Path,
    plan: &VmPlan,
    note: &str,
    change: impl FnOnce(&mut VariableStore) -> Result<Vec<u8>, EfiVarsError>,
) -> Result<EfiVarsChange, EfiVarsError> {
    let at_rest = VarsAtRest::open(data_dir, plan)?;
    ensure_stopped(data_dir, plan)?;
    let mut store = at_rest.store(&plan.name)?;
    let mut pcrs = change(&mut store)?;
    // Encode first: a change that does not fit records no generation.
    let bytes = zeroize::Zeroizing::new(store.to_bytes()?);
    let scratch = data_dir.join("run");
    let generations = generations_dir(data_dir, plan)?;
    let keyring = ferrovirt_keys::Keyring::for_data_dir(data_dir).map_err(EngineError::from)?;
    let (generation, _) = crate::state::record_before_change(
        &offline_state_plan(plan, &scratch, generations.as_deref(), &keyring),
        note,
    )
    .map_err(EngineError::from)?;
    at_rest.write(&bytes)?;
    pcrs.sort_unstable();
    pcrs.dedup();
    Ok(EfiVarsChange { generation, pcrs })
}

/// Refuses while the VM's QEMU or swtpm runs on this host (whatever the API status says).
fn ensure_stopped(data_dir: &Path, plan: &VmPlan) -> Result<(), EfiVarsError> {
    let running = vm_processes_running(data_dir, &plan.uuid)?;
    if running.any_running() {
        return Err(EfiVarsError::Running {
            name: plan.name.clone(),
            what: running.what(),
        });
    }
    Ok(())
}

/// Puts the firmware's VARS template back, as the first start copied it (the template of the
/// firmware the engine chooses for this VM: with or without Secure Boot and enrolled keys): every
/// variable the guest or `efi vars` wrote, the boot entries and the keys go back. A generation is
/// recorded first. Changes PCR1 (boot entries) and PCR7 (Secure Boot keys).
pub fn reset(data_dir: &Path, plan: &VmPlan) -> Result<EfiVarsChange, EfiVarsError> {
    let at_rest = VarsAtRest::open(data_dir, plan)?;
    let secure_boot = matches!(
        plan.firmware,
        FirmwarePlan::Uefi {
            secure_boot: true,
            ..
        }
    );
    ensure_stopped(data_dir, plan)?;
    let template_error = |reason: String| EfiVarsError::Template {
        name: plan.name.clone(),
        reason,
    };
    let loaded =
        load_descriptors(&DEFAULT_SEARCH_DIRS).map_err(|e| template_error(e.to_string()))?;
    let selected = select_uefi(
        &loaded.descriptors,
        &FirmwareRequest {
            secure_boot,
            arch: Architecture::X86_64,
            machine: "q35".into(),
        },
    )
    .map_err(|e| template_error(e.to_string()))?;
    let scratch = data_dir.join("run");
    let generations = generations_dir(data_dir, plan)?;
    let note = format!(
        "before resetting the UEFI variables to {}",
        selected.vars_template.display()
    );
    let template =
        std::fs::read(&selected.vars_template).map_err(|e| template_error(e.to_string()))?;
    let keyring = ferrovirt_keys::Keyring::for_data_dir(data_dir).map_err(EngineError::from)?;
    let (generation, _) = crate::state::record_before_change(
        &offline_state_plan(plan, &scratch, generations.as_deref(), &keyring),
        &note,
    )
    .map_err(EngineError::from)?;
    at_rest.write(&template)?;
    Ok(EfiVarsChange {
        generation,
        pcrs: vec![1, 7],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_boot_keys_are_pcr7_boot_entries_pcr1() {
        assert_eq!(pcrs_of("db", &EFI_IMAGE_SECURITY_DATABASE_GUID), [7]);
        assert_eq!(pcrs_of("PK", &EFI_GLOBAL_VARIABLE_GUID), [7]);
        assert_eq!(pcrs_of("Boot0001", &EFI_GLOBAL_VARIABLE_GUID), [1]);
        assert_eq!(pcrs_of("BootOrder", &EFI_GLOBAL_VARIABLE_GUID), [1]);
        assert!(pcrs_of("BootXYZW", &EFI_GLOBAL_VARIABLE_GUID).is_empty());
        assert!(pcrs_of("db", &EFI_GLOBAL_VARIABLE_GUID).is_empty());
    }
}
