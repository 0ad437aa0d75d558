//! Snapshots of a VM's state and disks, and putting them back (KubeVirt's snapshot/restore, on one
//! host): what a snapshot holds ([`snapshot_parts`]: the persistent TPM state and VARS of the
//! backend-storage volume, the images of `persistentVolumeClaim` disks; `hostDisk`, `emptyDisk`
//! and cloud-init volumes are listed as excluded with the reason), an offline snapshot of a
//! stopped VM ([`take_offline`]), an online one of a running VM ([`take_online`]: with a
//! connected guest agent `guest-fsfreeze-freeze` first, QMP `stop`, reflink/copy while the vCPUs
//! are paused and QEMU has drained and flushed its I/O, `cont`, `guest-fsfreeze-thaw`, then hash
//! and publish), and restoring ([`restore_state`]): the snapshot's TPM state and VARS are
//! verified, imported as a state generation of the target VM, and put into its volume through
//! the generation rollback, so the state a restore replaces is itself kept as a `pre-restore`
//! generation (a restore is undoable with `ferrovirt state rollback`). A target whose volume does
//! not exist yet (a new VM, a clone) gets the generation only: its first start restores it into
//! the new, empty volume, under the directory of its own firmware UUID.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrovirt_storage::generations::GenerationReason;
use ferrovirt_storage::snapshots::{ExcludedVolume, SnapshotRequest};
use ferrovirt_storage::{
    GenerationId, Generations, SnapshotManifest, SnapshotStore, SnapshotStoreError, StateVolume,
};
use serde_json::Value;

use crate::agent::{self, AgentClient};
use crate::disks::DiskSource;
use crate::engine::{EngineError, RunningVm, VmPlan, generations_dir, vm_processes_running};
use crate::state::{FirmwarePlan, TPM_STATE, TpmPlan, VARS};
use crate::state_keys::STATE_KEY;

/// Logical name prefix of a disk image in a snapshot (`disk-<volume>`).
pub const DISK_PREFIX: &str = "disk-";

/// Why a snapshot or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFault {
    #[error(transparent)]
    Store(#[from] SnapshotStoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the state generations of the target VM: {0}")]
    Generations(#[from] ferrovirt_storage::GenerationError),
    #[error("the backend-storage volume: {0}")]
    Backend(#[from] ferrovirt_storage::BackendError),
    #[error(
        "VirtualMachine {name:?} is not stopped: its {what} still runs on this host; stop it and wait for it to be Stopped"
    )]
    Running { name: String, what: &'static str },
    #[error("QMP: {0}")]
    Qmp(#[from] crate::qmp::QmpError),
    #[error("disk {disk}: {message}")]
    Disk { disk: String, message: String },
    #[error(
        "VirtualMachine {name:?} began to stop as its online snapshot was to be taken; take the snapshot again once it is stopped (offline)"
    )]
    Stopping { name: String },
    #[error("{message}")]
    Plan { message: String },
    /// `guest-fsfreeze-freeze` failed (KubeVirt's `QuiesceFailed`): nothing was copied and the
    /// guest was thawed again.
    #[error("failed freezing the guest's file systems through the guest agent: {0}")]
    Freeze(crate::agent::AgentError),
    /// `guest-fsfreeze-thaw` failed after the copy: the snapshot was not published.
    #[error(
        "failed thawing the guest's file systems through the guest agent: {0}; they may still be frozen: run `guest-fsfreeze-thaw` through the agent or restart the VM"
    )]
    Thaw(crate::agent::AgentError),
}

/// How long a freeze or a thaw through the guest agent may take (KubeVirt waits minutes for a
/// freeze; qemu-ga answers in well under a second on an idle guest).
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a snapshot of a VM holds and leaves out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotParts {
    /// `(logical name, path)` of every file to copy.
    pub files: Vec<(String, PathBuf)>,
    /// The volumes held (KubeVirt's `includedVolumes`).
    pub included: Vec<String>,
    /// The volumes left out and why (KubeVirt's `excludedVolumes`; the reason goes to an Event).
    pub excluded: Vec<ExcludedVolume>,
}

/// The files of the VM's persistent state (TPM state, VARS) that exist now.
fn state_files(plan: &VmPlan) -> Result<Vec<(String, PathBuf)>, SnapshotFault> {
    let mut files = Vec::new();
    let Some(root) = plan.state_volume.as_deref().filter(|p| p.is_dir()) else {
        return Ok(files);
    };
    let volume = StateVolume::open(root)?;
    if plan.tpm == TpmPlan::Persistent {
        let tpm = volume.tpm_state_file(&plan.uuid);
        if tpm.is_file() {
            files.push((TPM_STATE.to_owned(), tpm));
        }
    }
    if matches!(
        plan.firmware,
        FirmwarePlan::Uefi {
            persistent: true,
            ..
        }
    ) {
        let vars = volume.nvram_file(&plan.name)?;
        if vars.is_file() {
            files.push((VARS.to_owned(), vars));
        }
    }
    // The wrapped data key travels with the encrypted files it unlocks.
    let record = crate::state_keys::record_path(&volume);
    if !files.is_empty() && record.is_file() {
        files.push((STATE_KEY.to_owned(), record));
    }
    Ok(files)
}

/// What a snapshot of this VM holds: its persistent state and the images of its PVC disks.
pub fn snapshot_parts(plan: &VmPlan) -> Result<SnapshotParts, SnapshotFault> {
    let mut parts = SnapshotParts {
        files: state_files(plan)?,
        ..SnapshotParts::default()
    };
    for disk in &plan.disks {
        let reason = match &disk.source {
            DiskSource::ClaimImage { path } => {
                if path.is_file() {
                    parts
                        .files
                        .push((format!("{DISK_PREFIX}{}", disk.name), path.clone()));
                    parts.included.push(disk.name.clone());
                    continue;
                }
                "the PVC holds no disk.img yet".to_owned()
            }
            DiskSource::HostFile { path, .. } => format!(
                "hostDisk {} is a file on the host that ferrovirt does not own; back it up yourself",
                path.display()
            ),
            DiskSource::Empty { .. } => "emptyDisk is created blank for every run".to_owned(),
            DiskSource::CloudInitNoCloud { .. } => {
                "cloudInitNoCloud is generated from the spec at every start".to_owned()
            }
        };
        parts.excluded.push(ExcludedVolume {
            volume: disk.name.clone(),
            reason,
        });
    }
    Ok(parts)
}

fn refuse_running(data_dir: &Path, plan: &VmPlan) -> Result<(), SnapshotFault> {
    let running = vm_processes_running(data_dir, &plan.uuid)?;
    if running.any_running() {
        return Err(SnapshotFault::Running {
            name: plan.name.clone(),
            what: running.what(),
        });
    }
    Ok(())
}

/// A snapshot taken, with how long it took.
#[derive(Debug, Clone)]
pub struct TakenSnapshot {
    pub manifest: SnapshotManifest,
    pub parts: SnapshotParts,
    /// From the start of the take to its publication.
    pub duration: Duration,
    /// How long the guest's file systems were frozen (`None`: not frozen through the agent).
    pub frozen: Option<Duration>,
}

/// Snapshots a stopped VM into the snapshot `name` (refused while its QEMU or swtpm runs).
pub fn take_offline(
    data_dir: &Path,
    plan: &VmPlan,
    name: &str,
    vm: &Value,
) -> Result<TakenSnapshot, SnapshotFault> {
    let started = Instant::now();
    refuse_running(data_dir, plan)?;
    let parts = snapshot_parts(plan)?;
    let manifest = SnapshotStore::new(data_dir).take(
        name,
        &SnapshotRequest {
            vm,
            files: parts.files.clone(),
            excluded: parts.excluded.clone(),
            online: false,
        },
    )?;
    Ok(TakenSnapshot {
        manifest,
        parts,
        duration: started.elapsed(),
        frozen: None,
    })
}

/// Snapshots a running VM: with `agent` (the socket of its connected guest agent) freezes the
/// guest's file systems first (`guest-fsfreeze-freeze`; a failure is [`SnapshotFault::Freeze`]
/// and nothing is copied), pauses its vCPUs (QMP `stop`, which drains and flushes QEMU's I/O),
/// reflinks or copies the disks, VARS and TPM state, resumes it (`cont`, also when the copy
/// failed), thaws the guest (`guest-fsfreeze-thaw`, whatever happened after the freeze), then
/// hashes and publishes. The pause is recorded in the manifest (`pause_ms`).
pub async fn take_online(
    data_dir: &Path,
    running: &RunningVm,
    name: &str,
    vm: &Value,
    agent: Option<&Path>,
) -> Result<TakenSnapshot, SnapshotFault> {
    let started = Instant::now();
    let store = SnapshotStore::new(data_dir);
    let parts = snapshot_parts(&running.plan)?;
    if store.exists(name) {
        return Ok(TakenSnapshot {
            manifest: store.manifest(name)?,
            parts,
            duration: started.elapsed(),
            frozen: None,
        });
    }
    let request = SnapshotRequest {
        vm,
        files: parts.files.clone(),
        excluded: parts.excluded.clone(),
        online: true,
    };
    let frozen_guest = match agent {
        Some(socket) => Some((socket, freeze(socket).await?)),
        None => None,
    };
    let frozen_at = Instant::now();
    let qmp = running.handle.qmp();
    let pause_started = Instant::now();
    let paused = qmp.stop().await;
    let staged = match paused {
        Ok(()) => {
            // Sealed VARS: the volume gets QEMU's current variables before the copy.
            if let Err(e) = running.seal_vars_now() {
                tracing::warn!(vm = %running.plan.name, "cannot seal the UEFI variables for the snapshot: {e}");
            }
            let staged = store.stage(name, &request);
            let resumed = qmp.cont().await;
            resumed.map(|()| staged)
        }
        Err(e) => Err(e),
    };
    let pause = pause_started.elapsed();
    let thawed = match frozen_guest {
        Some((socket, client)) => thaw(socket, client)
            .await
            .map(|_| Some(frozen_at.elapsed())),
        None => Ok(None),
    };
    let staged = staged??;
    let frozen = thawed?;
    let pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
    let manifest = staged.publish(Some(pause_ms))?;
    tracing::info!(
        vm = running.plan.name,
        snapshot = name,
        pause_us = pause.as_micros() as u64,
        frozen_ms = frozen.map(|f| f.as_millis() as u64),
        total_ms = started.elapsed().as_millis() as u64,
        "online snapshot taken"
    );
    Ok(TakenSnapshot {
        manifest,
        parts,
        duration: started.elapsed(),
        frozen,
    })
}

/// Freezes the guest's file systems through its agent; on a failed freeze it thaws whatever was
/// frozen (qemu-ga thaws on its own failures, this covers a lost reply).
async fn freeze(socket: &Path) -> Result<AgentClient, SnapshotFault> {
    let mut client = agent::connect(socket, FREEZE_TIMEOUT)
        .await
        .map_err(SnapshotFault::Freeze)?;
    match client.fsfreeze_freeze().await {
        Ok(count) => {
            tracing::debug!(file_systems = count, "guest file systems frozen");
            Ok(client)
        }
        Err(e) => {
            if let Err(thawed) = thaw(socket, client).await {
                tracing::warn!(%thawed, "thaw after a failed freeze failed");
            }
            Err(SnapshotFault::Freeze(e))
        }
    }
}

/// Thaws the guest's file systems, trying once more on a new (resynchronized) connection when
/// the first attempt fails.
async fn thaw(socket: &Path, mut client: AgentClient) -> Result<u64, SnapshotFault> {
    match client.fsfreeze_thaw().await {
        Ok(count) => Ok(count),
        Err(first) => {
            tracing::warn!(%first, "guest-fsfreeze-thaw failed; trying again");
            drop(client);
            let mut again = agent::connect(socket, FREEZE_TIMEOUT)
                .await
                .map_err(SnapshotFault::Thaw)?;
            again.fsfreeze_thaw().await.map_err(SnapshotFault::Thaw)
        }
    }
}

/// What a restore puts into the target VM's persistent state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatePolicy {
    /// Copy the snapshot's TPM state (`false`: the target manufactures a fresh TPM at its first
    /// start, with its own EK certificate).
    pub copy_tpm: bool,
    /// Copy the snapshot's VARS (`false`: the target starts from the firmware's VARS template).
    pub copy_efi: bool,
}

impl StatePolicy {
    pub const COPY_ALL: StatePolicy = StatePolicy {
        copy_tpm: true,
        copy_efi: true,
    };
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The generation of the target holding the snapshot's state (`None`: nothing to copy).
    pub imported: Option<GenerationId>,
    /// The generation keeping the state the restore replaced (`None` when the target had no
    /// volume yet: its first start restores `imported`).
    pub pre_restore: Option<GenerationId>,
    /// The PVC disks whose image was put back.
    pub disks: Vec<String>,
}

/// Restores the snapshot `name` into the stopped VM of `plan` (the same VM, or a new VM with its
/// own name and firmware UUID): verifies every file's sha256, imports the TPM state and VARS
/// allowed by `policy` as a generation of the target, rolls its volume back to that generation
/// when the volume exists (keeping what it replaced as a `pre-restore` generation), and puts the
/// images of the PVC disks the target shares with the snapshot back (each written to a temporary
/// file, fsynced and renamed over the image).
pub fn restore_state(
    data_dir: &Path,
    plan: &VmPlan,
    name: &str,
    policy: StatePolicy,
) -> Result<RestoreReport, SnapshotFault> {
    refuse_running(data_dir, plan)?;
    let store = SnapshotStore::new(data_dir);
    let manifest = store.verify(name)?;
    let mut report = RestoreReport {
        imported: None,
        pre_restore: None,
        disks: Vec::new(),
    };
    // The clone or restored VM gets the snapshot's wrapped data key with the encrypted files (a
    // byte copy of the same TPM: the same EK and sealed secrets); `state rekey --rotate-dek`
    // gives it a key of its own.
    let copies_state = policy.copy_tpm || policy.copy_efi;
    let wanted: Vec<(&str, PathBuf)> = [
        (TPM_STATE, policy.copy_tpm),
        (VARS, policy.copy_efi),
        (STATE_KEY, copies_state),
    ]
    .into_iter()
    .filter(|(logical, copy)| *copy && manifest.file(logical).is_some())
    .map(|(logical, _)| (logical, store.file_path(name, logical)))
    .collect();
    if !wanted.is_empty()
        && let Some(dir) = generations_dir(data_dir, plan)?
    {
        let generations = Generations::new(dir).with_vm_uuid(plan.uuid.as_str());
        let sources: Vec<(&str, &Path)> = wanted.iter().map(|(l, p)| (*l, p.as_path())).collect();
        let imported = generations.record(
            &sources,
            GenerationReason::Other {
                note: format!("snapshot {name}"),
            },
        )?;
        report.imported = Some(imported);
        let targets = state_targets(plan)?;
        let targets: Vec<(&str, &Path)> = targets
            .iter()
            .filter(|(logical, _)| wanted.iter().any(|(w, _)| w == logical))
            .map(|(l, p)| (*l, p.as_path()))
            .collect();
        if plan.state_volume.as_deref().is_some_and(Path::is_dir) && !targets.is_empty() {
            let outcome = generations.restore(imported, &targets)?;
            report.pre_restore = Some(outcome.pre_restore);
        }
    }
    for disk in &plan.disks {
        let DiskSource::ClaimImage { path } = &disk.source else {
            continue;
        };
        let logical = format!("{DISK_PREFIX}{}", disk.name);
        let Some(file) = manifest.file(&logical) else {
            continue;
        };
        let parent_ok = path.parent().is_some_and(Path::is_dir);
        if !parent_ok {
            return Err(SnapshotFault::Disk {
                disk: disk.name.clone(),
                message: format!(
                    "the volume of its PVC ({}) does not exist; bind the PVC first",
                    path.display()
                ),
            });
        }
        ferrovirt_storage::atomic::copy_file(&store.file_path(name, &logical), path, file.mode)
            .map_err(|e| SnapshotFault::Store(e.into()))?;
        report.disks.push(disk.name.clone());
    }
    Ok(report)
}

/// Where the target keeps its TPM state and VARS (in its volume, under its own firmware UUID).
fn state_targets(plan: &VmPlan) -> Result<Vec<(&'static str, PathBuf)>, SnapshotFault> {
    let Some(root) = plan.state_volume.as_deref().filter(|p| p.is_dir()) else {
        return Ok(Vec::new());
    };
    let volume = StateVolume::open(root)?;
    volume.ensure_layout(&plan.name, &plan.uuid)?;
    let mut targets = Vec::new();
    if plan.tpm == TpmPlan::Persistent {
        targets.push((TPM_STATE, volume.tpm_state_file(&plan.uuid)));
    }
    if matches!(
        plan.firmware,
        FirmwarePlan::Uefi {
            persistent: true,
            ..
        }
    ) {
        targets.push((VARS, volume.nvram_file(&plan.name)?));
    }
    targets.push((STATE_KEY, crate::state_keys::record_path(&volume)));
    Ok(targets)
}
