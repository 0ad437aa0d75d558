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
//! - after the stop ([`finish`]): the files are fsynced, checked, and recorded as the `after-stop`
//!   generation.
//!
//! Generations live outside the volume (`<data>/state-generations/<volume>/`) and are what
//! [`rollback`] puts back.

use std::fs::File;
use std::path::{Path, PathBuf};

use ferrovirt_firmware::{
    Architecture, FirmwareDescriptor, FirmwareRequest, SelectError, VarsError, check_vars,
    prepare_vars, select_uefi,
};
use ferrovirt_storage::generations::{EntryKind, GenerationReason, sha256_file};
use ferrovirt_storage::{
    BackendError, GenerationError, GenerationId, Generations, StateVolume, VmUuid,
};
use ferrovirt_tpm::{
    CheckOptions, ManufactureError, ManufactureReport, ManufactureRequest, StateError, VmId,
    check_state_with, manufacture,
};

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
    /// Set when a TPM was manufactured for this run.
    pub manufactured: Option<ManufactureReport>,
    /// Set when the volume was empty and the last good generation was restored into it.
    pub restored: Option<RestoredState>,
    /// Things a user should know (e.g. the state changed while the VM was stopped).
    pub warnings: Vec<String>,
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
        "spec.template.spec.domain: a persistent TPM or EFI needs a backend-storage volume, and \
         none was given (this is a bug in the caller)"
    )]
    NoVolume,
    #[error("backend-storage volume: {0}")]
    Volume(#[from] BackendError),
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
            volume,
            generations,
            tpm_file,
            vars_file,
        }))
    }

    fn sources(&self) -> Vec<(&'static str, &Path)> {
        let mut sources = Vec::new();
        if let Some(tpm) = &self.tpm_file {
            sources.push((TPM_STATE, tpm.as_path()));
        }
        if let Some(vars) = &self.vars_file {
            sources.push((VARS, vars.as_path()));
        }
        sources
    }
}

/// Prepares the TPM state and the VARS of a run (see the module docs).
pub fn prepare(plan: &StatePlan<'_>) -> Result<PreparedState, StateFault> {
    let vm = plan.vm_name.to_string();
    let persistent = PersistentFiles::open(plan)?;
    let mut warnings = Vec::new();
    let mut recorded = None;
    let mut manufactured = None;
    let mut restored = None;

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
        restored = restore_into_empty_volume(files, &vm)?;
        let history = files.generations.list()?;
        let manifests: Vec<_> = history
            .iter()
            .filter_map(|g| g.manifest.as_ref().ok())
            .collect();
        // A state that a generation holds must not have vanished.
        for (logical, path) in files.sources() {
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
                check_tpm(tpm).map_err(|source| StateFault::TpmUnusable {
                    source,
                    vm: vm.clone(),
                    generation: last_good(),
                })?;
            }
            if let (Some(vars), Some(fw)) = (&files.vars_file, &selected)
                && vars.exists()
            {
                check_vars(vars, &fw.vars_template).map_err(|source| StateFault::VarsUnusable {
                    source,
                    vm: vm.clone(),
                    generation: last_good(),
                })?;
            }
        }
        // First start: create what does not exist yet.
        if let Some(tpm) = &files.tpm_file
            && !tpm.exists()
        {
            let report = manufacture_tpm(
                plan,
                &files.volume.tpm_state_dir(plan.vm_uuid),
                &files.volume.localca_dir(),
            )?;
            manufactured = Some(report);
        }
        let mut created_vars = false;
        if let (Some(vars), Some(fw)) = (&files.vars_file, &selected)
            && !vars.exists()
        {
            prepare_vars(&fw.vars_template, vars)?;
            created_vars = true;
        }
        if !unchanged_since_stop || manufactured.is_some() || created_vars {
            let id = files
                .generations
                .record(&files.sources(), GenerationReason::BeforeStart)?;
            files.generations.prune(KEEP_GENERATIONS)?;
            recorded = Some(id);
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
            manufactured = Some(manufacture_tpm(plan, &dir, plan.ephemeral_localca_dir)?);
            Some(dir)
        }
    };
    let firmware = match (&selected, plan.firmware) {
        (Some(fw), FirmwarePlan::Uefi { persistent: p, .. }) => {
            let vars = match persistent.as_ref().and_then(|f| f.vars_file.clone()) {
                Some(vars) if p => vars,
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
        manufactured,
        restored,
        warnings,
    })
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
    if sources.iter().any(|(_, path)| path.exists()) {
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

/// After QEMU and swtpm exited: makes the persistent state durable, checks it, and records it as
/// the `after-stop` generation. Returns that generation (`None` without persistent state).
pub fn finish(plan: &StatePlan<'_>) -> Result<Option<GenerationId>, StateFault> {
    let Some(files) = PersistentFiles::open(plan)? else {
        return Ok(None);
    };
    let started = std::time::Instant::now();
    for (_, path) in files.sources() {
        sync_file_and_dir(path)?;
    }
    let durable = started.elapsed();
    if let Some(tpm) = &files.tpm_file {
        check_tpm(tpm).map_err(|source| StateFault::TpmUnusable {
            source,
            vm: plan.vm_name.to_string(),
            generation: files.generations.latest_good().ok().flatten(),
        })?;
    }
    let checked = started.elapsed();
    let id = files
        .generations
        .record(&files.sources(), GenerationReason::AfterStop)?;
    let recorded = started.elapsed();
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

/// Puts generation `id` of a stopped VM's persistent state back (the state it replaces is kept as
/// a `pre-restore` generation).
pub fn rollback(plan: &StatePlan<'_>, id: GenerationId) -> Result<GenerationId, StateFault> {
    let Some(files) = PersistentFiles::open(plan)? else {
        return Err(StateFault::NoVolume);
    };
    let outcome = files.generations.restore(id, &files.sources())?;
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
fn check_tpm(state_file: &Path) -> Result<(), StateError> {
    let dir = state_file.parent().unwrap_or(Path::new("."));
    check_state_with(dir, &CheckOptions::default()).map(|_| ())
}

fn manufacture_tpm(
    plan: &StatePlan<'_>,
    state_dir: &Path,
    localca_dir: &Path,
) -> Result<ManufactureReport, StateFault> {
    let vm_id = VmId::new(plan.vm_name, plan.vm_uuid.as_str())?;
    let tmp = plan.runtime_dir.join("tmp");
    create_private_dir(&tmp)?;
    let report = manufacture(&ManufactureRequest::new(
        state_dir,
        localca_dir,
        vm_id,
        &tmp,
    ))?;
    tracing::info!(
        vm = plan.vm_name,
        duration_ms = report.duration.as_millis() as u64,
        "manufactured TPM"
    );
    Ok(report)
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
