//! The state of a VM run: its TPM state and its UEFI variables (VARS).
//!
//! Persistent state lives in the VM's backend-storage volume (KubeVirt's layout, see
//! `ferrovirt_storage::backend`); ephemeral state lives in the run's runtime dir and dies with it.
//! Around every run of a VM with persistent state:
//!
//! - before the start ([`prepare`]): a state file that a generation says existed but is gone is an
//!   error, never a fresh TPM; if the files are byte-identical to the generation recorded when the
//!   VM last stopped cleanly, they were checked then and the start goes ahead at once; otherwise
//!   swtpm must be able to read the TPM state and the VARS file must have the template's size and a
//!   valid header, and the state is recorded as a new generation before QEMU may touch it;
//!   what does not exist yet is created (TPM manufactured with its EK certificate, VARS copied from
//!   the firmware's template);
//! - after the stop ([`finish`]): the files are fsynced, checked (swtpm reads the TPM state, the
//!   VARS file has the template's size and a valid variable store header) and recorded as the
//!   `after-stop` generation; when the run succeeded ([`RunOutcome`]), the generation it started
//!   from becomes the volume's known-good generation, which pruning never removes.
//!
//! With encryption at rest (`crate::state_keys`) the TPM state is swtpm-encrypted and the VARS
//! sealed under the VM's data key; checks read them through the key, QEMU gets a plain VARS copy
//! in the runtime dir, and a plain state is encrypted at its next start.
//!
//! Generations live outside the volume (`<data>/state-generations/<volume>/`) and are what
//! [`rollback`] puts back.

use std::fs::File;
use std::path::{Path, PathBuf};

use ferrovirt_firmware::{
    Architecture, FirmwareDescriptor, FirmwareRequest, SelectError, VarsError, prepare_vars,
    select_uefi,
};
use ferrovirt_keys::{DataKey, Keyring};
use ferrovirt_storage::generations::{EntryKind, GenerationReason, sha256_file};
use ferrovirt_storage::{
    BackendError, GenerationError, GenerationId, Generations, StateVolume, VmUuid,
};
use ferrovirt_tpm::{
    CheckOptions, ManufactureError, ManufactureReport, ManufactureRequest, StateError, StateKey,
    VmId, check_state_with, manufacture,
};

use crate::state_keys::{self, STATE_KEY, StateKeyError, VarsSync};

use crate::machine::{Firmware, TpmModel};

/// Logical name of the TPM state file in a generation.
pub const TPM_STATE: &str = "tpm-state";
/// Logical name of the VARS file in a generation.
pub const VARS: &str = "vars";
/// Good generations kept per volume (generations recorded by a rollback are never pruned).
pub const KEEP_GENERATIONS: usize = 3;

/// What kind of TPM a VM has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpmPlan {
    None,
    /// `tpm: {}`: state in the runtime dir, gone at stop; `tpm-tis`.
    Ephemeral,
    /// `tpm: {persistent: true}`: state in the backend-storage volume; `tpm-crb`.
    Persistent,
}

impl TpmPlan {
    /// The device model KubeVirt uses: `tpm-crb` for a persistent TPM, `tpm-tis` otherwise.
    pub fn model(self) -> Option<TpmModel> {
        match self {
            TpmPlan::None => None,
            TpmPlan::Ephemeral => Some(TpmModel::Tis),
            TpmPlan::Persistent => Some(TpmModel::Crb),
        }
    }
}

/// What firmware a VM boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirmwarePlan {
    Bios,
    Uefi { secure_boot: bool, persistent: bool },
}

/// A start found the VM's volume empty (new, or re-created after the PVC was deleted) while the
/// VM has state generations: the last good generation was put into the volume instead of
/// manufacturing a fresh TPM. The controller reports it as the Event `StateRestored`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredState {
    /// The generation restored.
    pub generation: GenerationId,
    /// Why that generation was recorded (`after-stop`, `before-start`, ...).
    pub reason: GenerationReason,
    /// The generation that keeps what the empty volume held before (nothing of the state).
    pub pre_restore: GenerationId,
    /// The logical names restored (`tpm-state`, `vars`).
    pub restored: Vec<String>,
}

impl RestoredState {
    /// The message of the `StateRestored` Event.
    pub fn message(&self, volume: &Path) -> String {
        format!(
            "The backend-storage volume {} held no TPM/EFI state, but the VM has state generations: restored generation {} ({}) instead of creating a new TPM",
            volume.display(),
            self.generation.0,
            self.restored.join(", ")
        )
    }
}

/// How a run ended, for the known-good generation.
///
/// A run **succeeded** when all of these hold: this manager started it (so its start state is
/// known, [`PreparedState::started_from`]) and QMP reported `running` after `cont` (a start only
/// returns then); QEMU exited with status 0 after a SHUTDOWN (the guest powered off, or a stop the
/// manager asked for ended with ACPI powerdown or QMP `quit`), not by a signal, SIGKILL or a
/// non-zero status; and swtpm exited with status 0. A run adopted from an earlier manager is not
/// judged (its start state is not known for sure). The state the run started from was then
/// usable by the firmware and the guest: it becomes the known-good generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunOutcome {
    /// [`PreparedState::started_from`] of the run.
    pub started_from: Option<GenerationId>,
    /// Whether the run succeeded (see above).
    pub succeeded: bool,
}

/// Everything [`prepare`] needs to know about one VM run.
#[derive(Debug, Clone)]
pub struct StatePlan<'a> {
    pub vm_name: &'a str,
    pub vm_uuid: &'a VmUuid,
    pub tpm: TpmPlan,
    pub firmware: FirmwarePlan,
    /// The backend-storage volume; required when the TPM or the EFI is persistent.
    pub volume: Option<&'a Path>,
    /// Where this volume's generations live; required with `volume`.
    pub generations_dir: Option<&'a Path>,
    /// The run's runtime dir (ephemeral state and scratch space).
    pub runtime_dir: &'a Path,
    /// The local CA that signs the EK certificates of ephemeral TPMs (kept across runs so that
    /// every ephemeral TPM does not pay for a new CA).
    pub ephemeral_localca_dir: &'a Path,
    pub descriptors: &'a [FirmwareDescriptor],
    /// The data dir's key providers (encryption at rest).
    pub keyring: &'a Keyring,
    /// TPMs manufactured ahead of need: a first start takes one if there is one.
    pub tpm_pool: Option<&'a crate::tpm_pool::PoolService>,
}

/// The state a run will use, ready for QEMU and swtpm.
#[derive(Debug)]
pub struct PreparedState {
    pub firmware: Firmware,
    /// The firmware needs SMM (Secure Boot firmware).
    pub requires_smm: bool,
    /// swtpm's `--tpmstate dir=`.
    pub tpm_state_dir: Option<PathBuf>,
    pub tpm_model: Option<TpmModel>,
    /// The generation recorded before this start (`None` when the state was unchanged since the
    /// last clean stop, whose generation then stands).
    pub recorded: Option<GenerationId>,
    /// The generation holding exactly the state this run starts from: `recorded`, or the
    /// `after-stop` generation the state was found identical to (`None` without persistent
    /// state). A successful run makes it the known-good generation.
    pub started_from: Option<GenerationId>,
    /// Set when a TPM was manufactured for this run.
    pub manufactured: Option<ManufactureReport>,
    /// Set when the volume was empty and the last good generation was restored into it.
    pub restored: Option<RestoredState>,
    /// Things a user should know (e.g. the state changed while the VM was stopped).
    pub warnings: Vec<String>,
    /// swtpm's key for an encrypted persistent TPM state.
    pub tpm_key: Option<StateKey>,
    /// For sealed persistent VARS: QEMU's plain copy in the runtime dir and the sealed file.
    pub vars_sync: Option<VarsSync>,
    /// The state was plain and was encrypted by this start.
    pub encrypted_now: bool,
}

/// Why the state of a VM cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFault {
    #[error(
        "the VM's {what} is missing at {path}, but generation {generation} holds a copy of it; \
         ferrovirt does not replace a lost state with a fresh one (a new TPM would lock sealed disks \
         out). Roll back with `ferrovirt state rollback {vm} --generation {}`", generation.0
    )]
    Missing {
        what: &'static str,
        path: PathBuf,
        vm: String,
        generation: GenerationId,
    },
    #[error(
        "the VM's TPM state cannot be used: {source}. {}",
        rollback_hint(vm, *generation)
    )]
    TpmUnusable {
        #[source]
        source: StateError,
        vm: String,
        generation: Option<GenerationId>,
    },
    #[error("the VM's UEFI variables cannot be used: {source}. {}", rollback_hint(vm, *generation))]
    VarsUnusable {
        #[source]
        source: VarsError,
        vm: String,
        generation: Option<GenerationId>,
    },
    #[error(
        "the VM's backend-storage volume {volume} holds no TPM/EFI state, but the VM has state \
         generations in {generations} and none of them verifies; ferrovirt does not replace a lost \
         state with a fresh one. List them with `ferrovirt state list {vm}` and roll one back with \
         `ferrovirt state rollback {vm} --generation N` (or purge them deliberately)"
    )]
    NoGoodGeneration {
        vm: String,
        volume: PathBuf,
        generations: PathBuf,
    },
    #[error(
        "the VM {vm} cannot receive a live migration: its backend-storage volume already holds \
         state ({path}); a migration never overwrites a state. Receive into a VM whose \
         backend-storage PVC is new (delete the PVC of this one, its state generations stay)"
    )]
    IncomingNotEmpty { vm: String, path: PathBuf },
    #[error(
        "spec.template.spec.domain: a persistent TPM or EFI needs a backend-storage volume, and \
         none was given (this is a bug in the caller)"
    )]
    NoVolume,
    #[error("backend-storage volume: {0}")]
    Volume(#[from] BackendError),
    #[error(transparent)]
    Key(#[from] StateKeyError),
    #[error("state generations: {0}")]
    Generations(#[from] GenerationError),
    #[error("manufacturing the TPM: {0}")]
    Manufacture(#[from] ManufactureError),
    #[error("choosing the UEFI firmware: {0}")]
    Firmware(#[from] SelectError),
    #[error("preparing the UEFI variables: {0}")]
    PrepareVars(#[from] ferrovirt_firmware::PrepareError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn rollback_hint(vm: &str, generation: Option<GenerationId>) -> String {
    match generation {
        Some(g) => format!(
            "The state was left as it is. The last good copy is generation {g}: roll back with \
             `ferrovirt state rollback {vm} --generation {}`",
            g.0
        ),
        None => "The state was left as it is; no earlier generation exists to roll back to".into(),
    }
}

/// Where the persistent files of a VM are.
struct PersistentFiles {
    volume: StateVolume,
    generations: Generations,
    tpm_file: Option<PathBuf>,
    vars_file: Option<PathBuf>,
    /// The wrapped data key's record (`meta/ferrovirt/state-key.json`).
    key_record: PathBuf,
}

impl PersistentFiles {
    fn open(plan: &StatePlan<'_>) -> Result<Option<Self>, StateFault> {
        let efi_persistent = matches!(
            plan.firmware,
            FirmwarePlan::Uefi {
                persistent: true,
                ..
            }
        );
        let tpm_persistent = plan.tpm == TpmPlan::Persistent;
        if !efi_persistent && !tpm_persistent {
            return Ok(None);
        }
        let (Some(volume_dir), Some(generations_dir)) = (plan.volume, plan.generations_dir) else {
            return Err(StateFault::NoVolume);
        };
        let volume = StateVolume::open(volume_dir)?;
        volume.ensure_layout(plan.vm_name, plan.vm_uuid)?;
        let tpm_file = tpm_persistent.then(|| volume.tpm_state_file(plan.vm_uuid));
        let vars_file = if efi_persistent {
            Some(volume.nvram_file(plan.vm_name)?)
        } else {
            None
        };
        let generations =
            Generations::new(generations_dir).with_vm_uuid(plan.vm_uuid.as_str().to_string());
        Ok(Some(Self {
            key_record: state_keys::record_path(&volume),
            volume,
            generations,
            tpm_file,
            vars_file,
        }))
    }

    /// The state files (TPM, VARS).
    fn state_sources(&self) -> Vec<(&'static str, &Path)> {
        let mut sources = Vec::new();
        if let Some(tpm) = &self.tpm_file {
            sources.push((TPM_STATE, tpm.as_path()));
        }
        if let Some(vars) = &self.vars_file {
            sources.push((VARS, vars.as_path()));
        }
        sources
    }

    /// What a generation records: the state files and the wrapped key that unlocks them.
    fn sources(&self) -> Vec<(&'static str, &Path)> {
        let mut sources = self.state_sources();
        sources.push((STATE_KEY, self.key_record.as_path()));
        sources
    }

    /// The targets of a restore of generation `manifest`: what it recorded (older generations
    /// have no key record).
    fn restore_targets(
        &self,
        manifest: &ferrovirt_storage::Manifest,
    ) -> Vec<(&'static str, &Path)> {
        self.sources()
            .into_iter()
            .filter(|(logical, _)| manifest.entry(logical).is_some())
            .collect()
    }
}

/// Prepares the TPM state and the VARS of a run (see the module docs).
/// Writes QEMU's plain working copy of a sealed VARS into the run's private runtime dir (mode
/// 0600, the dir 0700). Not fsynced: it is no state of its own (the sealed file
/// is, and the sync task and the stop seal what QEMU changed in it from the page cache); after a
/// host crash it is gone with the QEMU that used it. An fsync here cost a start 1-3 ms.
fn write_runtime_copy(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

pub fn prepare(plan: &StatePlan<'_>) -> Result<PreparedState, StateFault> {
    let vm = plan.vm_name.to_string();
    let persistent = PersistentFiles::open(plan)?;
    let mut warnings = Vec::new();
    let mut recorded = None;
    let mut started_from = None;
    let mut manufactured = None;
    let mut restored = None;
    let mut data_key: Option<DataKey> = None;
    let mut encrypted_now = false;

    let selected = match plan.firmware {
        FirmwarePlan::Bios => None,
        FirmwarePlan::Uefi { secure_boot, .. } => Some(select_uefi(
            plan.descriptors,
            &FirmwareRequest {
                secure_boot,
                arch: Architecture::X86_64,
                machine: "q35".into(),
            },
        )?),
    };

    if let Some(files) = &persistent {
        // A rollback or restore that a crash interrupted is completed first: the state is then
        // wholly the generation it was restoring, never half old, half restored.
        if let Some(done) = files.generations.finish_interrupted_restore()? {
            tracing::warn!(
                vm,
                generation = done.restored.0,
                pre_restore = done.pre_restore.0,
                "completed a state restore that was interrupted (the replaced state is kept as the pre-restore generation)"
            );
            warnings.push(format!(
                "a restore of state generation {} was interrupted; it was completed before this \
                 start (the state it replaced is kept as generation {})",
                done.restored, done.pre_restore
            ));
        }
        restored = restore_into_empty_volume(files, &vm)?;
        let history = files.generations.list()?;
        let manifests: Vec<_> = history
            .iter()
            .filter_map(|g| g.manifest.as_ref().ok())
            .collect();
        // A state that a generation holds must not have vanished.
        for (logical, path) in files.state_sources() {
            if path.exists() {
                continue;
            }
            let had_it = manifests.iter().rev().find(|m| {
                m.entry(logical)
                    .is_some_and(|entry| entry.kind == EntryKind::File)
            });
            if let Some(manifest) = had_it {
                return Err(StateFault::Missing {
                    what: if logical == TPM_STATE {
                        "TPM state"
                    } else {
                        "UEFI variable store (VARS)"
                    },
                    path: path.to_path_buf(),
                    vm,
                    generation: manifest.id,
                });
            }
        }
        // Only an error message needs the last good generation: look it up (which re-hashes
        // generations) on that path alone, not on every start.
        let last_good = || files.generations.latest_good().ok().flatten();
        let unchanged_since_stop = match manifests.last() {
            Some(last) if last.reason == GenerationReason::AfterStop => {
                same_as_recorded(&files.sources(), last)?
            }
            _ => false,
        };
        failpoint("state.prepare.before-check", files.volume.root())?;
        // The data key of an encrypted state (fails closed: nothing below runs without it).
        data_key = state_keys::unlock(&vm, &files.volume, plan.keyring)?;
        if !unchanged_since_stop {
            if matches!(manifests.last(), Some(last) if last.reason == GenerationReason::AfterStop)
            {
                warnings.push(format!(
                    "the state in {} changed while the VM was stopped; it was checked again and \
                     the copy taken at the last stop is kept as a generation",
                    files.volume.root().display()
                ));
            }
            if let Some(tpm) = &files.tpm_file
                && tpm.exists()
            {
                let key = state_keys::tpm_key_for(tpm, data_key.as_ref(), &files.key_record)?;
                check_tpm(tpm, key).map_err(|source| StateFault::TpmUnusable {
                    source,
                    vm: vm.clone(),
                    generation: last_good(),
                })?;
            }
            if let (Some(vars), Some(fw)) = (&files.vars_file, &selected)
                && vars.exists()
            {
                let plain = state_keys::read_vars(&vm, vars, data_key.as_ref(), &files.key_record)?;
                check_vars_plain(vars, &plain, &fw.vars_template).map_err(|source| {
                    StateFault::VarsUnusable {
                        source,
                        vm: vm.clone(),
                        generation: last_good(),
                    }
                })?;
            }
        }
        // A first start with nothing in the volume yet: a TPM out of the pool, if there is
        // one (a sealed one brings its data key, whose record is written before its state).
        if data_key.is_none()
            && let (Some(pool), Some(tpm)) = (plan.tpm_pool, &files.tpm_file)
            && !tpm.exists()
            && !state_keys::record_path(&files.volume).exists()
        {
            manufactured = personalize_pooled(plan, pool, files);
        }
        // A first start, or a plain state under an encrypting keyring: a new data key (its
        // record is written before anything is encrypted with it).
        if data_key.is_none() {
            data_key = state_keys::unlock_or_create(&vm, &files.volume, plan.keyring)?;
        }
        // First start: create what does not exist yet.
        if let Some(tpm) = &files.tpm_file
            && !tpm.exists()
        {
            let report = manufacture_tpm(
                plan,
                &files.volume.tpm_state_dir(plan.vm_uuid),
                &files.volume.localca_dir(),
                data_key.as_ref().map(state_keys::tpm_key),
            )?;
            manufactured = Some(report);
        }
        let mut created_vars = false;
        if let (Some(vars), Some(fw)) = (&files.vars_file, &selected)
            && !vars.exists()
        {
            match &data_key {
                Some(key) => {
                    let template = read_template(&fw.vars_template)?;
                    state_keys::write_vars(vars, Some(key), &template)?;
                }
                None => {
                    prepare_vars(&fw.vars_template, vars)?;
                }
            }
            created_vars = true;
        }
        if unchanged_since_stop {
            started_from = manifests.last().map(|m| m.id);
        }
        if !unchanged_since_stop || manufactured.is_some() || created_vars {
            failpoint("state.prepare.before-record", files.generations.dir())?;
            let id = files
                .generations
                .record(&files.sources(), GenerationReason::BeforeStart)?;
            files.generations.prune(KEEP_GENERATIONS)?;
            recorded = Some(id);
            started_from = Some(id);
        }
        // A plain state under a key: encrypted now, after a generation keeps it as it was.
        if let Some(key) = &data_key {
            encrypted_now = encrypt_plain_files(plan, files, key)?;
            if encrypted_now {
                warnings.push(format!(
                    "the VM's state in {} was not encrypted; it is encrypted at rest from now on \
                     (data key {}); the generations recorded before keep the plain copy until \
                     they are pruned",
                    files.volume.root().display(),
                    key.id()
                ));
            }
        }
    }

    // Ephemeral parts, fresh for every run.
    let tpm_state_dir = match plan.tpm {
        TpmPlan::None => None,
        TpmPlan::Persistent => persistent
            .as_ref()
            .map(|files| files.volume.tpm_state_dir(plan.vm_uuid)),
        TpmPlan::Ephemeral => {
            let dir = plan.runtime_dir.join("tpm");
            create_private_dir(&dir)?;
            let pooled = plan
                .tpm_pool
                .and_then(|pool| personalize_ephemeral(plan, pool, &dir));
            manufactured = Some(match pooled {
                Some(report) => report,
                None => manufacture_tpm(plan, &dir, plan.ephemeral_localca_dir, None)?,
            });
            Some(dir)
        }
    };
    let mut vars_sync = None;
    let firmware = match (&selected, plan.firmware) {
        (Some(fw), FirmwarePlan::Uefi { persistent: p, .. }) => {
            let vars = match persistent.as_ref().and_then(|f| f.vars_file.clone()) {
                Some(vars) if p => match (&data_key, persistent.as_ref()) {
                    // Sealed at rest: QEMU gets a plain copy in the private runtime dir.
                    (Some(key), Some(files)) => {
                        let plain =
                            state_keys::read_vars(&vm, &vars, Some(key), &files.key_record)?;
                        let runtime_vars = plan.runtime_dir.join("VARS.fd");
                        write_runtime_copy(&runtime_vars, &plain).map_err(|source| {
                            StateFault::Io {
                                path: runtime_vars.clone(),
                                source,
                            }
                        })?;
                        vars_sync = Some(VarsSync::with_content(
                            runtime_vars.clone(),
                            vars,
                            key.clone(),
                            plain,
                        ));
                        runtime_vars
                    }
                    _ => vars,
                },
                _ => {
                    let vars = plan.runtime_dir.join("VARS.fd");
                    prepare_vars(&fw.vars_template, &vars)?;
                    vars
                }
            };
            Firmware::Uefi {
                code: fw.code.clone(),
                vars,
                secure_boot: fw.secure_boot,
            }
        }
        _ => Firmware::Bios,
    };
    Ok(PreparedState {
        requires_smm: selected.as_ref().is_some_and(|fw| fw.requires_smm),
        firmware,
        tpm_state_dir,
        tpm_model: plan.tpm.model(),
        recorded,
        started_from,
        manufactured,
        restored,
        warnings,
        tpm_key: match plan.tpm {
            TpmPlan::Persistent => data_key.as_ref().map(state_keys::tpm_key),
            _ => None,
        },
        vars_sync,
        encrypted_now,
    })
}

/// Prepares the state of the destination of a live migration (`crate::migration`): the TPM
/// state and the VARS arrive from the source, so nothing is manufactured, restored or recorded
/// here. The backend-storage volume must hold no TPM state or VARS yet (a migration never
/// overwrites a state: the receiving VM's volume is new); its layout and the data key (a new one
/// under this host's keyring, so the arriving state is encrypted under this host's key) are
/// created, the TPM state dir is left empty for swtpm to fill from the stream, and QEMU gets a
/// VARS of the firmware's template that the source's mirror overwrites. A sealed VARS is only
/// written to the volume once the state has arrived ([`record_arrival`]).
pub fn prepare_incoming(plan: &StatePlan<'_>) -> Result<PreparedState, StateFault> {
    let persistent = PersistentFiles::open(plan)?;
    let selected = match plan.firmware {
        FirmwarePlan::Bios => None,
        FirmwarePlan::Uefi { secure_boot, .. } => Some(select_uefi(
            plan.descriptors,
            &FirmwareRequest {
                secure_boot,
                arch: Architecture::X86_64,
                machine: "q35".into(),
            },
        )?),
    };
    let mut data_key = None;
    if let Some(files) = &persistent {
        if let Some((_, path)) = files.state_sources().into_iter().find(|(_, p)| p.exists()) {
            return Err(StateFault::IncomingNotEmpty {
                vm: plan.vm_name.to_owned(),
                path: path.to_path_buf(),
            });
        }
        data_key = state_keys::unlock_or_create(plan.vm_name, &files.volume, plan.keyring)?;
    }
    let tpm_state_dir = match (plan.tpm, &persistent) {
        (TpmPlan::None, _) => None,
        (TpmPlan::Persistent, Some(files)) => {
            let dir = files.volume.tpm_state_dir(plan.vm_uuid);
            create_private_dir(&dir)?;
            Some(dir)
        }
        (TpmPlan::Persistent, None) => return Err(StateFault::NoVolume),
        (TpmPlan::Ephemeral, _) => {
            let dir = plan.runtime_dir.join("tpm");
            create_private_dir(&dir)?;
            Some(dir)
        }
    };
    let mut vars_sync = None;
    let firmware = match (&selected, plan.firmware) {
        (Some(fw), FirmwarePlan::Uefi { persistent: p, .. }) => {
            let volume_vars = persistent.as_ref().and_then(|f| f.vars_file.clone());
            let vars = match (volume_vars, &data_key) {
                (Some(sealed), Some(key)) if p => {
                    let plain = plan.runtime_dir.join("VARS.fd");
                    prepare_vars(&fw.vars_template, &plain)?;
                    vars_sync = Some(VarsSync::new(plain.clone(), sealed, key.clone()));
                    plain
                }
                (Some(volume_vars), None) if p => {
                    prepare_vars(&fw.vars_template, &volume_vars)?;
                    volume_vars
                }
                _ => {
                    let vars = plan.runtime_dir.join("VARS.fd");
                    prepare_vars(&fw.vars_template, &vars)?;
                    vars
                }
            };
            Firmware::Uefi {
                code: fw.code.clone(),
                vars,
                secure_boot: fw.secure_boot,
            }
        }
        _ => Firmware::Bios,
    };
    Ok(PreparedState {
        requires_smm: selected.as_ref().is_some_and(|fw| fw.requires_smm),
        firmware,
        tpm_state_dir,
        tpm_model: plan.tpm.model(),
        recorded: None,
        started_from: None,
        manufactured: None,
        restored: None,
        warnings: Vec::new(),
        tpm_key: match plan.tpm {
            TpmPlan::Persistent => data_key.as_ref().map(state_keys::tpm_key),
            _ => None,
        },
        vars_sync,
        encrypted_now: false,
    })
}

/// The destination of a live migration, once the state has arrived (the guest still paused):
/// makes the persistent state durable and records it as the destination's first generation
/// (`note` says where it came from). `None` without persistent state.
pub fn record_arrival(
    plan: &StatePlan<'_>,
    note: &str,
) -> Result<Option<GenerationId>, StateFault> {
    let Some(files) = PersistentFiles::open(plan)? else {
        return Ok(None);
    };
    for (_, path) in files.sources() {
        sync_file_and_dir(path)?;
    }
    let id = files.generations.record(
        &files.sources(),
        GenerationReason::Other {
            note: note.to_owned(),
        },
    )?;
    files.generations.prune(KEEP_GENERATIONS)?;
    Ok(Some(id))
}

/// A failed incoming migration: removes what the stream wrote into the (empty before) volume:
/// the TPM state files and the VARS, and the generation [`record_arrival`] made of them
/// (`arrived`), so that no later start here begins from a state the source went on to change
/// (the source resumed its guest). The data key's record stays (harmless, reused next time).
pub fn discard_incoming(plan: &StatePlan<'_>, arrived: Option<GenerationId>) {
    let Ok(Some(files)) = PersistentFiles::open(plan) else {
        return;
    };
    if let Some(id) = arrived
        && let Err(e) = files.generations.delete(id)
    {
        tracing::warn!(vm = plan.vm_name, generation = id.0, error = %e, "could not remove the generation of a failed incoming migration");
    }
    if let Some(tpm) = &files.tpm_file
        && let Some(dir) = tpm.parent()
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(vars) = &files.vars_file {
        let _ = std::fs::remove_file(vars);
    }
}

/// Encrypts what is still plain in the volume under `key` (the TPM state through swtpm, in a
/// private scratch dir of the runtime dir; the VARS sealed). Each file is written crash-safely;
/// a crash in between leaves one encrypted and one plain file, and the next start finishes.
fn encrypt_plain_files(
    plan: &StatePlan<'_>,
    files: &PersistentFiles,
    key: &DataKey,
) -> Result<bool, StateFault> {
    let mut changed = false;
    if let Some(tpm) = &files.tpm_file
        && tpm.exists()
        && state_keys::tpm_key_for(tpm, None, &files.key_record).is_ok()
    {
        let dir = files.volume.tpm_state_dir(plan.vm_uuid);
        let work = state_keys::private_scratch(&plan.runtime_dir.join("tmp"))?;
        let encrypted = ferrovirt_tpm::reencrypt_state(
            &dir,
            None,
            Some(&state_keys::tpm_key(key)),
            work.path(),
        )
        .map_err(|source| StateFault::TpmUnusable {
            source,
            vm: plan.vm_name.to_owned(),
            generation: files.generations.latest_good().ok().flatten(),
        })?;
        ferrovirt_storage::atomic::write_file(tpm, &encrypted, 0o600).map_err(|e| {
            StateFault::Io {
                path: tpm.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        changed = true;
    }
    if let Some(vars) = &files.vars_file
        && vars.exists()
        && !state_keys::vars_is_sealed(vars)
    {
        let plain = state_keys::read_vars(plan.vm_name, vars, None, &files.key_record)?;
        state_keys::write_vars(vars, Some(key), &plain)?;
        changed = true;
    }
    Ok(changed)
}

fn read_template(template: &Path) -> Result<Vec<u8>, StateFault> {
    let bytes = std::fs::read(template).map_err(|source| StateFault::Io {
        path: template.to_path_buf(),
        source,
    })?;
    ferrovirt_firmware::vars::check_vars_bytes(template, &bytes, None).map_err(|source| {
        StateFault::VarsUnusable {
            source,
            vm: String::new(),
            generation: None,
        }
    })?;
    Ok(bytes)
}

/// Checks a VARS image (plain, possibly decrypted in memory) against the template's size.
fn check_vars_plain(path: &Path, plain: &[u8], template: &Path) -> Result<(), VarsError> {
    let template_size = std::fs::metadata(template).map(|m| m.len()).ok();
    ferrovirt_firmware::vars::check_vars_bytes(
        path,
        plain,
        template_size.map(|size| (size, template)),
    )
    .map(|_| ())
}

/// A volume that holds none of the VM's state files (new, or re-created after its PVC was
/// deleted) while the VM has generations: restore the newest generation that verifies and holds
/// a state file (never a `pre-restore` one, which is a state someone rolled away from). No
/// generation at all: a first start (`None`); generations but none usable: an error, never a
/// fresh TPM.
fn restore_into_empty_volume(
    files: &PersistentFiles,
    vm: &str,
) -> Result<Option<RestoredState>, StateFault> {
    let sources = files.sources();
    if files.state_sources().iter().any(|(_, path)| path.exists()) {
        return Ok(None);
    }
    let history = files.generations.list()?;
    let held_state = |m: &ferrovirt_storage::Manifest| {
        sources.iter().any(|(logical, _)| {
            m.entry(logical)
                .is_some_and(|entry| entry.kind == EntryKind::File)
        })
    };
    if !history
        .iter()
        .filter_map(|g| g.manifest.as_ref().ok())
        .any(held_state)
    {
        return Ok(None);
    }
    for info in history.iter().rev() {
        let Ok(manifest) = files.generations.verify(info.id) else {
            continue;
        };
        if matches!(manifest.reason, GenerationReason::PreRestore { .. }) || !held_state(&manifest)
        {
            continue;
        }
        let targets: Vec<(&str, &Path)> = sources
            .iter()
            .filter(|(logical, _)| manifest.entry(logical).is_some())
            .copied()
            .collect();
        let outcome = files.generations.restore(info.id, &targets)?;
        tracing::info!(
            vm,
            generation = info.id.0,
            "restored the last good state generation into an empty backend-storage volume"
        );
        return Ok(Some(RestoredState {
            generation: info.id,
            reason: manifest.reason,
            pre_restore: outcome.pre_restore,
            restored: targets.iter().map(|(n, _)| (*n).to_owned()).collect(),
        }));
    }
    Err(StateFault::NoGoodGeneration {
        vm: vm.to_owned(),
        volume: files.volume.root().to_path_buf(),
        generations: files.generations.dir().to_path_buf(),
    })
}

/// After QEMU and swtpm exited: makes the persistent state durable (every state file and its
/// directory fsynced), nothing more; [`finish`] checks and records it.
pub fn make_durable(plan: &StatePlan<'_>) -> Result<(), StateFault> {
    let Some(files) = PersistentFiles::open(plan)? else {
        return Ok(());
    };
    for (_, path) in files.sources() {
        sync_file_and_dir(path)?;
    }
    Ok(())
}

/// After QEMU and swtpm exited: makes the persistent state durable (again, cheap, when
/// [`make_durable`] ran first), checks it (the TPM state with swtpm, the VARS file against the
/// firmware's template), and records it as the `after-stop` generation; when the run succeeded,
/// marks the generation it started from known-good. Returns the `after-stop` generation (`None`
/// without persistent state).
pub fn finish(
    plan: &StatePlan<'_>,
    outcome: RunOutcome,
) -> Result<Option<GenerationId>, StateFault> {
    let Some(files) = PersistentFiles::open(plan)? else {
        return Ok(None);
    };
    let started = std::time::Instant::now();
    for (_, path) in files.sources() {
        sync_file_and_dir(path)?;
    }
    let durable = started.elapsed();
    failpoint("state.finish.before-check", files.volume.root())?;
    let data_key = state_keys::unlock(plan.vm_name, &files.volume, plan.keyring)?;
    if let Some(tpm) = &files.tpm_file {
        let key = state_keys::tpm_key_for(tpm, data_key.as_ref(), &files.key_record)?;
        check_tpm(tpm, key).map_err(|source| StateFault::TpmUnusable {
            source,
            vm: plan.vm_name.to_string(),
            generation: files.generations.latest_good().ok().flatten(),
        })?;
    }
    if let (Some(vars), FirmwarePlan::Uefi { secure_boot, .. }) = (&files.vars_file, plan.firmware)
        && vars.exists()
    {
        let firmware = select_uefi(
            plan.descriptors,
            &FirmwareRequest {
                secure_boot,
                arch: Architecture::X86_64,
                machine: "q35".into(),
            },
        )?;
        let plain =
            state_keys::read_vars(plan.vm_name, vars, data_key.as_ref(), &files.key_record)?;
        check_vars_plain(vars, &plain, &firmware.vars_template).map_err(|source| {
            StateFault::VarsUnusable {
                source,
                vm: plan.vm_name.to_string(),
                generation: files.generations.latest_good().ok().flatten(),
            }
        })?;
    }
    let checked = started.elapsed();
    failpoint("state.finish.before-record", files.generations.dir())?;
    let id = files
        .generations
        .record(&files.sources(), GenerationReason::AfterStop)?;
    failpoint("state.finish.after-record", files.generations.dir())?;
    let recorded = started.elapsed();
    if outcome.succeeded
        && let Some(good) = outcome.started_from
    {
        // The stop is durable already; a failed mark only leaves the older known-good in place.
        if let Err(e) = files.generations.mark_known_good(good) {
            tracing::warn!(vm = plan.vm_name, generation = good.0, error = %e,
                "could not mark the generation this successful run started from as known-good");
        }
    }
    files.generations.prune(KEEP_GENERATIONS)?;
    // Where the time after a stop goes (the benchmark's "stop -> durable" figure).
    tracing::debug!(
        vm = plan.vm_name,
        durable_us = durable.as_micros() as u64,
        check_us = (checked - durable).as_micros() as u64,
        record_us = (recorded - checked).as_micros() as u64,
        prune_us = (started.elapsed() - recorded).as_micros() as u64,
        "after-stop state durable, checked and recorded"
    );
    Ok(Some(id))
}

/// A fault point (`ferrovirt_storage::failpoints`; nothing without the feature).
fn failpoint(name: &'static str, path: &Path) -> Result<(), StateFault> {
    ferrovirt_storage::failpoints::hit(name).map_err(|source| StateFault::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Puts generation `id` of a stopped VM's persistent state back (the state it replaces is kept as
/// a `pre-restore` generation).
pub fn rollback(plan: &StatePlan<'_>, id: GenerationId) -> Result<GenerationId, StateFault> {
    let Some(files) = PersistentFiles::open(plan)? else {
        return Err(StateFault::NoVolume);
    };
    let manifest = files.generations.verify(id)?;
    let outcome = files
        .generations
        .restore(id, &files.restore_targets(&manifest))?;
    Ok(outcome.pre_restore)
}

/// Records the persistent state as a generation before an offline change (`note` says which)
/// and returns it with the VARS file (`None` when the EFI is not persistent).
pub fn record_before_change(
    plan: &StatePlan<'_>,
    note: &str,
) -> Result<(GenerationId, Option<PathBuf>), StateFault> {
    let Some(files) = PersistentFiles::open(plan)? else {
        return Err(StateFault::NoVolume);
    };
    let id = files.generations.record(
        &files.sources(),
        GenerationReason::Other {
            note: note.to_owned(),
        },
    )?;
    Ok((id, files.vars_file.clone()))
}

/// The generations of a VM's persistent state, oldest first.
pub fn generations(
    plan: &StatePlan<'_>,
) -> Result<Vec<ferrovirt_storage::GenerationInfo>, StateFault> {
    match PersistentFiles::open(plan)? {
        Some(files) => Ok(files.generations.list()?),
        None => Ok(Vec::new()),
    }
}

fn same_as_recorded(
    sources: &[(&str, &Path)],
    manifest: &ferrovirt_storage::Manifest,
) -> Result<bool, StateFault> {
    for (logical, path) in sources {
        let Some(entry) = manifest.entry(logical) else {
            return Ok(false);
        };
        match (entry.kind, path.exists()) {
            (EntryKind::Absent, false) => continue,
            (EntryKind::File, true) => {
                let Some(recorded) = entry.files.first() else {
                    return Ok(false);
                };
                let (size, digest) =
                    sha256_file(path).map_err(|e| StateFault::Generations(e.into()))?;
                if size != recorded.size || digest != recorded.sha256 {
                    return Ok(false);
                }
            }
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// Checks that swtpm can read the state. The check's private copy and its sockets live in the
/// system temp dir: a unix socket path holds at most 107 bytes, which a deep data dir would exceed.
fn check_tpm(state_file: &Path, key: Option<StateKey>) -> Result<(), StateError> {
    let dir = state_file.parent().unwrap_or(Path::new("."));
    let mut options = CheckOptions::default();
    options.state_key = key;
    check_state_with(dir, &options).map(|_| ())
}

fn manufacture_tpm(
    plan: &StatePlan<'_>,
    state_dir: &Path,
    localca_dir: &Path,
    state_key: Option<StateKey>,
) -> Result<ManufactureReport, StateFault> {
    let vm_id = VmId::new(plan.vm_name, plan.vm_uuid.as_str())?;
    let tmp = plan.runtime_dir.join("tmp");
    create_private_dir(&tmp)?;
    let mut request = ManufactureRequest::new(state_dir, localca_dir, vm_id, &tmp);
    request.options.state_key = state_key;
    let report = manufacture(&request)?;
    tracing::info!(
        vm = plan.vm_name,
        duration_ms = report.duration.as_millis() as u64,
        "manufactured TPM"
    );
    Ok(report)
}

/// A persistent TPM out of the pool, made this VM's (`None`, logged, when the pool has none or
/// the personalization fails: the caller then manufactures).
fn personalize_pooled(
    plan: &StatePlan<'_>,
    pool: &crate::tpm_pool::PoolService,
    files: &PersistentFiles,
) -> Option<ManufactureReport> {
    let record_path = state_keys::record_path(&files.volume);
    let claim = pool.claim_persistent(&record_path)?;
    let state_key = match &claim.key {
        Some((key, record)) => {
            // The record first: a state is never on disk without the key that opens it.
            if let Err(error) = record.write(&record_path) {
                tracing::warn!(vm = plan.vm_name, %error, "cannot keep a pooled TPM's data key; manufacturing instead");
                return None;
            }
            Some(state_keys::tpm_key(key))
        }
        None => None,
    };
    let state_dir = files.volume.tpm_state_dir(plan.vm_uuid);
    personalize(
        plan,
        claim.tpm,
        &state_dir,
        &files.volume.localca_dir(),
        state_key,
    )
}

/// An ephemeral TPM out of the pool (signed by the ephemeral CA).
fn personalize_ephemeral(
    plan: &StatePlan<'_>,
    pool: &crate::tpm_pool::PoolService,
    dir: &Path,
) -> Option<ManufactureReport> {
    let tpm = pool.claim_ephemeral()?;
    personalize(plan, tpm, dir, plan.ephemeral_localca_dir, None)
}

fn personalize(
    plan: &StatePlan<'_>,
    tpm: ferrovirt_tpm::ClaimedTpm,
    state_dir: &Path,
    localca_dir: &Path,
    state_key: Option<StateKey>,
) -> Option<ManufactureReport> {
    let vm_id = VmId::new(plan.vm_name, plan.vm_uuid.as_str()).ok()?;
    let tmp = plan.runtime_dir.join("tmp");
    create_private_dir(&tmp).ok()?;
    let mut request = ManufactureRequest::new(state_dir, localca_dir, vm_id, &tmp);
    request.options.state_key = state_key;
    match tpm.personalize_into(&request) {
        Ok(report) => {
            tracing::info!(
                vm = plan.vm_name,
                duration_ms = report.duration.as_millis() as u64,
                "took a pooled TPM"
            );
            Some(report)
        }
        Err(error) => {
            tracing::warn!(vm = plan.vm_name, %error, "a pooled TPM could not be made this VM's; manufacturing instead");
            None
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StateFault> {
    ferrovirt_storage::atomic::create_dir_private(dir).map_err(|e| StateFault::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

fn sync_file_and_dir(path: &Path) -> Result<(), StateFault> {
    let io = |source| StateFault::Io {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        return Ok(());
    }
    File::open(path).and_then(|f| f.sync_all()).map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}
