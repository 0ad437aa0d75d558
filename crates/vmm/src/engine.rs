//! The engine: one call to start a VM from a resolved [`VmPlan`], one to wait for its end, one to
//! adopt the runs a previous manager left running. It ties the state preparation ([`crate::state`])
//! to the launcher ([`crate::launcher`]).
//!
//! Data dir layout it owns (see ARCHITECTURE.md):
//! `run/<vm-uuid>/` (the runtime dir of the current run), `logs/<vm-uuid>/serial.log` (the serial
//! output of every run, appended), `localca-ephemeral/` (the CA of ephemeral TPMs).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrovirt_firmware::{DEFAULT_SEARCH_DIRS, FirmwareDescriptor, load_descriptors};
use ferrovirt_keys::Keyring;
use ferrovirt_storage::{VmIdentity, VmStateStore, VmStoreError, VmUuid};

use crate::disks::{DiskError, DiskPlan, prepare_disks};
use crate::hostpath::HostPathPolicy;
use crate::hyperv::Hyperv;
use crate::kvm::probe_accelerator;
use crate::launcher::{LaunchError, SwtpmConfig, VmExit, VmHandle};
use crate::machine::{Accel, MachineConfig, MachineType, Nic, SerialConsole, TpmAttachment};
use crate::runtime::{MAX_SOCKET_PATH, RuntimeDir, RuntimeError};
use crate::state::{FirmwarePlan, PreparedState, StateFault, StatePlan, TpmPlan};

mod incoming;

/// A VM run, resolved from the API object (see `crate::convert`): everything is decided.
#[derive(Debug, Clone)]
pub struct VmPlan {
    pub namespace: String,
    pub name: String,
    /// The VirtualMachine's `metadata.uid` (recorded as the owner of its state generations);
    /// `None` for `ferrovirt run`.
    pub vm_uid: Option<String>,
    /// The stable `firmware.uuid`: names the runtime dir, the TPM state dir and the VM's state
    /// generations (`<data>/state-generations/vms/<uuid>/`).
    pub uuid: VmUuid,
    /// KubeVirt's `firmware.serial`: the SMBIOS system serial number (type 1) the guest reads.
    pub smbios_serial: Option<String>,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub firmware: FirmwarePlan,
    /// `domain.features.smm` enabled (Secure Boot firmware turns it on regardless).
    pub smm: bool,
    /// Hyper-V enlightenments (`domain.features.hyperv`, `clock.timer.hyperv`).
    pub hyperv: Option<Hyperv>,
    pub tpm: TpmPlan,
    pub disks: Vec<DiskPlan>,
    /// Network cards (NAT through one passt each, KubeVirt's masquerade binding).
    pub nics: Vec<Nic>,
    /// The video device (VNC) and tablets (`crate::display`).
    pub display: crate::display::DisplayPlan,
    /// The backend-storage volume (a directory), when the TPM or EFI is persistent.
    pub state_volume: Option<PathBuf>,
    /// Where versions before the per-VM stores kept this volume's generations
    /// (`<data>/state-generations/<volume>/`); moved into the VM's store on first use.
    pub legacy_generations_dir: Option<PathBuf>,
    /// `terminationGracePeriodSeconds`.
    pub grace: Duration,
}

impl VmPlan {
    /// Whether this VM keeps state in backend storage.
    pub fn needs_backend_storage(&self) -> bool {
        self.tpm == TpmPlan::Persistent
            || matches!(
                self.firmware,
                FirmwarePlan::Uefi {
                    persistent: true,
                    ..
                }
            )
    }
}

/// Why a VM could not be started or finished.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateFault),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the VM {name} is already running (runtime dir {dir}); stop it first or adopt the run")]
    AlreadyRunning { name: String, dir: PathBuf },
    #[error("state generations: {0}")]
    StateStore(#[from] VmStoreError),
    #[error("state encryption: {0}")]
    Keys(#[from] ferrovirt_keys::KeyError),
    #[error("live migration: {0}")]
    Migration(#[from] crate::migration::MigrationError),
    #[error("live migration: the backend-storage volume's meta/ and swtpm-localca/: {0}")]
    VolumeFiles(#[from] ferrovirt_storage::export::ExportError),
    #[error(
        "the VM {name} is running ({what} alive on this host); stop it before rolling its state back"
    )]
    StillRunning { name: String, what: &'static str },
}

/// The engine of one data dir.
#[derive(Debug)]
pub struct Engine {
    data_dir: PathBuf,
    /// Where runtime dirs live (see [`runtime_base`]).
    run_base: PathBuf,
    ephemeral_localca: PathBuf,
    accel: Accel,
    descriptors: Vec<FirmwareDescriptor>,
    /// Where `hostDisk` files may lie (by default `<data>/images` only).
    host_paths: HostPathPolicy,
    /// The key providers of the data dir (encryption at rest, `serve --state-encryption`).
    keyring: Keyring,
    /// TPMs manufactured ahead of need (`serve --tpm-pool-size`).
    tpm_pool: Option<std::sync::Arc<crate::tpm_pool::PoolService>>,
}

/// A started VM and what its start did.
pub struct RunningVm {
    pub plan: VmPlan,
    pub handle: VmHandle,
    pub state: Option<PreparedState>,
    /// What this start found out about the TPM's trust (empty for an adopted run).
    pub notes: StartNotes,
    /// Sealed VARS: keeps the volume's sealed file up to date with QEMU's plain copy.
    vars_sync: Option<VarsSyncTask>,
}

impl RunningVm {
    /// Seals the VARS QEMU wrote into the volume now (a snapshot of the running VM copies it).
    pub fn seal_vars_now(&self) -> Result<(), crate::state_keys::StateKeyError> {
        match &self.vars_sync {
            Some(task) => match task.sync.lock() {
                Ok(mut sync) => sync.seal_now(),
                Err(_) => Ok(()),
            },
            None => Ok(()),
        }
    }
}

/// The task that seals a running VM's VARS into its volume whenever QEMU changed it (every
/// [`crate::state_keys::VARS_SYNC_INTERVAL`]), so that a host crash loses at most the last
/// seconds of changes; the stop seals once more.
struct VarsSyncTask {
    sync: std::sync::Arc<std::sync::Mutex<crate::state_keys::VarsSync>>,
    task: tokio::task::JoinHandle<()>,
}

impl VarsSyncTask {
    fn spawn(vm: String, sync: crate::state_keys::VarsSync) -> Self {
        let sync = std::sync::Arc::new(std::sync::Mutex::new(sync));
        let shared = sync.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::state_keys::VARS_SYNC_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let shared = shared.clone();
                let outcome = tokio::task::spawn_blocking(move || match shared.lock() {
                    Ok(mut sync) => {
                        // The first tick comes at once: what the volume holds is digested
                        // here, not on the start's path.
                        sync.learn_sealed_content();
                        sync.sync()
                    }
                    Err(_) => Ok(false),
                })
                .await;
                match outcome {
                    Ok(Ok(true)) => tracing::debug!(vm, "sealed the changed UEFI variables"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::warn!(vm, "cannot seal the UEFI variables: {e}"),
                    Err(_) => return,
                }
            }
        });
        Self { sync, task }
    }

    /// Stops the task and seals one last time (QEMU has exited) if the variables changed since
    /// the last seal; `true` when it wrote.
    fn finish(&self) -> Result<bool, crate::state_keys::StateKeyError> {
        self.task.abort();
        match self.sync.lock() {
            Ok(mut sync) => sync.seal_if_changed(),
            Err(_) => Ok(false),
        }
    }
}

/// What a start tells the controllers about trust: the EK certificates' fingerprints (for the VM
/// status) and, when the boot measurements will differ from the last run's, what changed
/// (`PCRsWillChange`).
#[derive(Debug, Clone, Default)]
pub struct StartNotes {
    pub ek: Option<crate::ek::EkFingerprints>,
    pub pcrs_will_change: Option<crate::boot_guard::PcrChange>,
}

impl StartNotes {
    /// The notes of a start whose state is prepared (`volume`: the backend-storage volume).
    fn of_start(
        plan: &VmPlan,
        state: &PreparedState,
        machine: &MachineConfig,
        runtime: &Path,
    ) -> Self {
        let ek = crate::ek::fingerprints_at_start(
            &plan.name,
            &plan.uuid,
            plan.tpm,
            plan.state_volume.as_deref(),
            state.manufactured.as_ref(),
            state.tpm_key.clone(),
        );
        let pcrs_will_change = plan.state_volume.as_deref().and_then(|volume| {
            let coming =
                crate::boot_guard::profile_of(&machine.firmware, &machine.machine, state.tpm_model);
            crate::boot_guard::at_start(volume, runtime, &coming)
        });
        Self {
            ek,
            pcrs_will_change,
        }
    }
}

/// How a run ended, and what became of its state.
#[derive(Debug)]
pub struct RunEnd {
    pub exit: VmExit,
    /// The `after-stop` generation recorded for the persistent state.
    pub recorded: Option<ferrovirt_storage::GenerationId>,
}

/// A run whose QEMU and swtpm are gone and whose persistent state is durable (sealed and
/// fsynced, with its directories), but not yet checked and recorded as the `after-stop`
/// generation: [`Engine::settle`] does that. Until it has, the run's runtime dir stays, so a
/// manager that dies in between leaves a stop that the next start (or adoption) finishes.
#[derive(Debug)]
#[must_use = "a durable stop is settled by Engine::settle"]
pub struct DurableStop {
    pub exit: VmExit,
    /// The seal of the run's last UEFI variables into the volume.
    sealed: Result<(), EngineError>,
    /// The fsync of the persistent state (and the fault point before it).
    synced: Result<(), EngineError>,
    /// Held until the stop is settled: offline state operations wait for it.
    _lock: Option<crate::settle_lock::SettleLock>,
}

impl DurableStop {
    /// Whether the state is durable: the stop may be reported before it is settled. When a
    /// step failed, nothing is reported before [`Engine::settle`] ran (and said what failed).
    pub fn durable(&self) -> bool {
        self.sealed.is_ok() && self.synced.is_ok()
    }
}

impl Engine {
    /// Opens the engine on a data dir: probes the accelerator (`FERROVIRT_ACCEL` overrides) and
    /// reads the firmware descriptors.
    pub async fn new(data_dir: impl Into<PathBuf>) -> Result<Self, EngineError> {
        let data_dir = data_dir.into();
        ferrovirt_storage::atomic::prepare_private_dir(&data_dir).map_err(|e| EngineError::Io {
            path: data_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let run_base = prepare_runtime_base(&data_dir)?;
        for dir in [data_dir.join("logs"), data_dir.join("localca-ephemeral")] {
            ferrovirt_storage::atomic::create_dir_private(&dir).map_err(|e| EngineError::Io {
                path: dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        let loaded = load_descriptors(&DEFAULT_SEARCH_DIRS).map_err(|e| EngineError::Io {
            path: PathBuf::from(DEFAULT_SEARCH_DIRS[1]),
            source: std::io::Error::other(e.to_string()),
        })?;
        for rejected in &loaded.rejected {
            tracing::warn!("ignoring a firmware descriptor: {rejected}");
        }
        let keyring = Keyring::for_data_dir(&data_dir)?;
        Ok(Self {
            keyring,
            run_base,
            ephemeral_localca: data_dir.join("localca-ephemeral"),
            host_paths: HostPathPolicy::for_data_dir(&data_dir, &[]),
            data_dir,
            accel: probe_accelerator().await,
            descriptors: loaded.descriptors,
            tpm_pool: None,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Sets where `hostDisk` files may lie (`serve`/`run`: `<data>/images` and each
    /// `--host-disk-root`, see [`HostPathPolicy::for_data_dir`]).
    pub fn with_host_paths(mut self, policy: HostPathPolicy) -> Self {
        self.host_paths = policy;
        self
    }

    /// Keeps `size` TPMs manufactured ahead of need (see [`crate::tpm_pool`]; 0: none).
    pub fn with_tpm_pool(mut self, size: usize) -> Self {
        self.tpm_pool =
            crate::tpm_pool::PoolService::start(&self.data_dir, self.keyring.clone(), size);
        self
    }

    /// Ready pooled TPMs (persistent, ephemeral); `None` without a pool.
    pub fn tpm_pool_ready(&self) -> Option<(usize, usize)> {
        self.tpm_pool.as_ref().map(|pool| pool.ready())
    }

    /// Where `hostDisk` files may lie.
    pub fn host_paths(&self) -> &HostPathPolicy {
        &self.host_paths
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The runtime dir of a VM's current run.
    pub fn runtime_path(&self, uuid: &VmUuid) -> PathBuf {
        self.run_base.join(uuid.as_str())
    }

    /// The serial log of a VM (every run appended).
    pub fn serial_log_path(&self, uuid: &VmUuid) -> PathBuf {
        serial_log_path(&self.data_dir, uuid)
    }

    fn state_plan<'a>(
        &'a self,
        plan: &'a VmPlan,
        runtime_dir: &'a Path,
        generations_dir: Option<&'a Path>,
    ) -> StatePlan<'a> {
        StatePlan {
            vm_name: &plan.name,
            vm_uuid: &plan.uuid,
            tpm: plan.tpm,
            firmware: plan.firmware,
            volume: plan.state_volume.as_deref(),
            generations_dir,
            runtime_dir,
            ephemeral_localca_dir: &self.ephemeral_localca,
            descriptors: &self.descriptors,
            keyring: &self.keyring,
            tpm_pool: self.tpm_pool.as_deref(),
        }
    }

    /// Prepares the state and disks and starts the VM; returns once QEMU runs the guest.
    pub async fn start(&self, plan: VmPlan) -> Result<RunningVm, EngineError> {
        let runtime_path = self.runtime_path(&plan.uuid);
        if self.recorded_run_alive(&plan.uuid) {
            return Err(EngineError::AlreadyRunning {
                name: plan.name.clone(),
                dir: runtime_path,
            });
        }
        // A leftover runtime dir of a run that is gone: its ephemeral state is garbage. A start
        // that never finished (no `run.json`) may have left swtpm and a paused QEMU behind on
        // this VM's state: they end first, so no second swtpm ever runs on the same state.
        if let Ok(leftover) = RuntimeDir::open(&runtime_path) {
            tokio::task::block_in_place(|| crate::orphans::reap_unrecorded_start(&leftover));
            // A recorded run whose processes are gone and whose stop no manager finished (killed
            // after QEMU exited): finish that stop first, so its state is checked and recorded
            // as the `after-stop` generation it is.
            let processes = tokio::task::block_in_place(|| self.processes_running(&plan.uuid))?;
            if processes.settling {
                // Never clear a runtime dir under a stop that is still being recorded.
                return Err(EngineError::StillRunning {
                    name: plan.name.clone(),
                    what: processes.what(),
                });
            }
            if leftover.read_record().is_ok() && !processes.any_running() {
                self.finish_unfollowed(&plan).await;
            }
        }
        remove_dir_if_exists(&runtime_path)?;
        let runtime = RuntimeDir::create(&runtime_path)?;
        match self.start_in(plan, runtime).await {
            Ok(running) => Ok(running),
            Err(error) => {
                let _ = std::fs::remove_dir_all(&runtime_path);
                Err(error)
            }
        }
    }

    async fn start_in(&self, plan: VmPlan, runtime: RuntimeDir) -> Result<RunningVm, EngineError> {
        let started = std::time::Instant::now();
        let state = {
            let root = runtime.root().to_path_buf();
            let generations = generations_dir(&self.data_dir, &plan)?;
            let state_plan = self.state_plan(&plan, &root, generations.as_deref());
            tokio::task::block_in_place(|| crate::state::prepare(&state_plan))?
        };
        for warning in &state.warnings {
            tracing::warn!(vm = %plan.name, "{warning}");
        }
        let state_at = started.elapsed();
        let disks = prepare_disks(
            &plan.disks,
            runtime.root(),
            &plan.name,
            &plan.uuid,
            &self.host_paths,
        )?;
        if self.accel == Accel::Tcg
            && let Some(hyperv) = &plan.hyperv
        {
            let left_off = hyperv.left_off_under_tcg();
            if !left_off.is_empty() {
                tracing::warn!(
                    vm = %plan.name,
                    "Hyper-V enlightenments {} left off: they need KVM, and QEMU runs this VM with TCG",
                    left_off.join(", ")
                );
            }
        }
        let serial_log = self.serial_log_path(&plan.uuid);
        crate::serial_log::start_run(&serial_log, crate::serial_log::MAX_BYTES).map_err(
            |source| EngineError::Io {
                path: serial_log.clone(),
                source,
            },
        )?;
        let mut machine = self.machine_config(&plan, &state, disks.disks, &runtime, serial_log);
        machine.fd_sets = disks.fd_sets;
        let swtpm = state.tpm_state_dir.clone().map(|state_dir| SwtpmConfig {
            state_dir,
            binary: None,
            extra_args: Vec::new(),
            key: state.tpm_key.clone(),
        });
        let notes = tokio::task::block_in_place(|| {
            StartNotes::of_start(&plan, &state, &machine, runtime.root())
        });
        if let Some(change) = &notes.pcrs_will_change {
            tracing::warn!(vm = %plan.name, "{}", change.message());
        }
        tracing::debug!(
            vm = %plan.name,
            state_us = state_at.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "start prepared (state, disks, serial log, notes)"
        );
        failpoint("engine.start.before-launch", runtime.root())?;
        let handle = VmHandle::start_with_fds(machine, swtpm, runtime, disks.fds).await?;
        let mut state = state;
        let vars_sync = state
            .vars_sync
            .take()
            .map(|sync| VarsSyncTask::spawn(plan.name.clone(), sync));
        if let Err(e) = failpoint("engine.start.after-running", &self.runtime_path(&plan.uuid)) {
            if let Some(sync) = &vars_sync {
                let _ = tokio::task::block_in_place(|| sync.finish());
            }
            handle.kill();
            let _ = handle.wait_exited().await;
            return Err(e);
        }
        Ok(RunningVm {
            plan,
            handle,
            state: Some(state),
            notes,
            vars_sync,
        })
    }

    /// QEMU's machine for a plan whose state and disks are prepared.
    fn machine_config(
        &self,
        plan: &VmPlan,
        state: &PreparedState,
        disks: Vec<crate::machine::Disk>,
        runtime: &RuntimeDir,
        serial_log: PathBuf,
    ) -> MachineConfig {
        MachineConfig {
            name: format!("{}_{}", plan.namespace, plan.name),
            uuid: plan.uuid.as_str().to_string(),
            smbios_serial: plan.smbios_serial.clone(),
            accel: self.accel,
            vcpus: plan.vcpus,
            memory_mib: plan.memory_mib,
            machine: MachineType::Q35 {
                smm: plan.smm || state.requires_smm,
            },
            firmware: state.firmware.clone(),
            tpm: state.tpm_model.map(|model| TpmAttachment {
                ctrl_socket: runtime.swtpm_ctrl_socket(),
                model,
            }),
            hyperv: plan.hyperv.clone(),
            disks,
            nics: plan.nics.clone(),
            serial: SerialConsole {
                socket: runtime.serial_socket(),
                log_file: serial_log,
            },
            graphics: plan.display.graphics(runtime),
            inputs: plan.display.inputs.clone(),
            qmp_socket: runtime.qmp_socket(),
            guest_agent_socket: Some(runtime.guest_agent_socket()),
            pid_file: runtime.qemu_pid_file(),
            qemu_binary: None,
            fd_sets: Vec::new(),
        }
    }

    /// Waits for the VM to end (guest poweroff, stop, crash), then makes its persistent state
    /// durable and records it, and removes the runtime dir (ephemeral state dies here).
    pub async fn wait(&self, running: &RunningVm) -> Result<RunEnd, EngineError> {
        let stop = self.wait_durable(running).await?;
        self.settle(running, stop).await
    }

    /// Stops the VM (ACPI powerdown, then quit after the grace period) and finishes it.
    pub async fn stop(&self, running: &RunningVm) -> Result<RunEnd, EngineError> {
        let exit = running.handle.stop(running.plan.grace).await?;
        let stop = self.make_durable(running, exit);
        self.settle(running, stop).await
    }

    /// Waits for the VM to end, then makes its persistent state durable: the last VARS sealed
    /// into the volume, the boot guard's note, every state file and its directory fsynced. The
    /// check and the `after-stop` record follow in [`Engine::settle`], which the caller runs
    /// next (a manager reports the stop in between: issue 16's "stop -> durable").
    pub async fn wait_durable(&self, running: &RunningVm) -> Result<DurableStop, EngineError> {
        let exit = running.handle.wait_exited().await?;
        Ok(self.make_durable(running, exit))
    }

    fn make_durable(&self, running: &RunningVm, exit: VmExit) -> DurableStop {
        let plan = &running.plan;
        let runtime_path = self.runtime_path(&plan.uuid);
        let started = std::time::Instant::now();
        // Taken before the stop can be reported; without it (an unreadable runtime dir) the
        // stop is not reported before it is settled.
        let lock =
            crate::settle_lock::SettleLock::take(&runtime_path).map_err(|source| EngineError::Io {
                path: runtime_path.clone(),
                source,
            });
        // QEMU is gone: seal its last VARS into the volume before anything reads the state
        // (nothing to write when the sealed file holds them already).
        let sealed = match &running.vars_sync {
            Some(sync) => tokio::task::block_in_place(|| sync.finish()).map_err(|e| {
                // The plain copy stays in the runtime dir: removing it would lose the changes.
                tracing::error!(vm = %plan.name, "cannot seal the UEFI variables at the stop: {e}");
                EngineError::from(crate::state::StateFault::from(e))
            }),
            None => Ok(false),
        };
        let vars_written = matches!(sealed, Ok(true));
        let sealed = sealed.map(|_| ());
        let seal_us = started.elapsed().as_micros() as u64;
        let fault = failpoint("engine.finish.before-state", &runtime_path);
        if let Some(volume) = plan.state_volume.as_deref() {
            tokio::task::block_in_place(|| crate::boot_guard::at_stop(volume, &runtime_path));
        }
        let boot_guard_us = (started.elapsed().as_micros() as u64).saturating_sub(seal_us);
        let (lock, locked) = match lock {
            Ok(lock) => (Some(lock), Ok(())),
            Err(e) => (None, Err(e)),
        };
        let synced = locked.and(fault).and_then(|()| {
            let generations = generations_dir(&self.data_dir, plan)?;
            let state_plan = self.state_plan(plan, &runtime_path, generations.as_deref());
            tokio::task::block_in_place(|| crate::state::make_durable(&state_plan))
                .map_err(EngineError::from)
        });
        // Where a stop's time to durability goes (the benchmark's "stop -> durable").
        tracing::debug!(
            vm = %plan.name,
            seal_us,
            vars_written,
            boot_guard_us,
            total_us = started.elapsed().as_micros() as u64,
            "stop durable"
        );
        DurableStop {
            exit,
            sealed,
            synced,
            _lock: lock,
        }
    }

    /// Settles a durable stop: checks the persistent state and records it as the `after-stop`
    /// generation (the known-good mark and the pruning with it), then removes the runtime dir.
    /// A start of the same VM must not begin before this returned (the controllers keep the
    /// run in their table until then; [`Engine::start`] finishes a stop no manager settled).
    pub async fn settle(
        &self,
        running: &RunningVm,
        stop: DurableStop,
    ) -> Result<RunEnd, EngineError> {
        // The lock is released when this returns: the runtime dir is gone by then.
        let DurableStop {
            exit,
            sealed,
            synced,
            _lock,
        } = stop;
        let plan = &running.plan;
        let outcome = crate::state::RunOutcome {
            started_from: running.state.as_ref().and_then(|s| s.started_from),
            succeeded: running.state.is_some() && run_succeeded(&exit),
        };
        let runtime_path = self.runtime_path(&plan.uuid);
        let recorded = match synced.and_then(|()| generations_dir(&self.data_dir, plan)) {
            Ok(generations) => {
                let state_plan = self.state_plan(plan, &runtime_path, generations.as_deref());
                tokio::task::block_in_place(|| crate::state::finish(&state_plan, outcome))
                    .map_err(EngineError::from)
            }
            Err(e) => Err(e),
        };
        // The plain VARS copy stays in the runtime dir when it could not be sealed.
        sealed?;
        let fault = failpoint("engine.finish.before-runtime-cleanup", &runtime_path);
        // The run is over whatever the state check said: its runtime dir (ephemeral state only)
        // must not block the next start. The persistent state stays where it is, untouched.
        remove_dir_if_exists(&runtime_path)?;
        fault?;
        Ok(RunEnd {
            exit,
            recorded: recorded?,
        })
    }

    /// Whether a run of this VM is recorded (`run.json`) and its QEMU still runs: a VM to adopt,
    /// never to start again (a previous manager may have ended between recording the run and
    /// reporting it).
    pub fn recorded_run_alive(&self, uuid: &VmUuid) -> bool {
        live_run_record(&self.runtime_path(uuid)).is_some()
    }

    /// Re-attaches to a run a previous manager left running (never kills it). When the run
    /// ended while no manager followed it (a manager killed during a stop, after QEMU exited),
    /// its stop is finished here first, as [`Engine::stop`] would have: the persistent state is
    /// checked and recorded as the `after-stop` generation and the runtime dir removed; the
    /// adoption still fails, saying the VM no longer runs.
    pub async fn adopt(&self, plan: VmPlan) -> Result<RunningVm, EngineError> {
        let runtime = RuntimeDir::open(self.runtime_path(&plan.uuid))?;
        let handle = match VmHandle::adopt(runtime).await {
            Ok(handle) => handle,
            Err(error) => {
                if !self.processes_running(&plan.uuid)?.any_running() {
                    self.finish_unfollowed(&plan).await;
                }
                return Err(error.into());
            }
        };
        let vars_sync = tokio::task::block_in_place(|| self.adopted_vars_sync(&plan));
        Ok(RunningVm {
            vars_sync: vars_sync.map(|sync| VarsSyncTask::spawn(plan.name.clone(), sync)),
            plan,
            handle,
            state: None,
            notes: StartNotes::default(),
        })
    }

    /// Finishes the stop of a run whose QEMU and swtpm are gone without a manager having seen
    /// them end (not judged for the known-good mark: how it ended is unknown).
    async fn finish_unfollowed(&self, plan: &VmPlan) {
        let runtime_path = self.runtime_path(&plan.uuid);
        // Offline state operations wait while this runs, as for a followed stop.
        let _lock = match crate::settle_lock::SettleLock::take(&runtime_path) {
            Ok(lock) => lock,
            Err(error) => {
                tracing::error!(vm = %plan.name, %error, "cannot lock the runtime dir of a run that ended while no manager followed it; its stop is finished at the next start");
                return;
            }
        };
        // The run's last UEFI variables are in its plain runtime copy: seal them first (kept
        // there if that fails, so nothing is lost).
        if !tokio::task::block_in_place(|| self.seal_left_vars(plan, &runtime_path)) {
            tracing::error!(vm = %plan.name, "the UEFI variables of a run that ended while no manager followed it could not be sealed; its runtime dir is kept");
            return;
        }
        let finished = match generations_dir(&self.data_dir, plan) {
            Ok(generations) => {
                let state_plan = self.state_plan(plan, &runtime_path, generations.as_deref());
                tokio::task::block_in_place(|| {
                    crate::state::finish(&state_plan, crate::state::RunOutcome::default())
                })
                .map_err(EngineError::from)
            }
            Err(e) => Err(e),
        };
        match finished {
            Ok(recorded) => tracing::info!(vm = %plan.name, generation = ?recorded.map(|g| g.0),
                "finished the stop of a run that ended while no manager followed it"),
            Err(e) => tracing::warn!(vm = %plan.name, error = %e,
                "the state of a run that ended while no manager followed it did not pass the check; the next start checks it again"),
        }
        let _ = remove_dir_if_exists(&runtime_path);
    }

    /// Seals the plain VARS copy a run left in its runtime dir into the volume; `false` when a
    /// copy that belongs sealed in the volume could not be sealed (then it must stay).
    fn seal_left_vars(&self, plan: &VmPlan, runtime_path: &Path) -> bool {
        if !runtime_path.join("VARS.fd").exists() {
            return true;
        }
        if let Some(mut sync) = self.adopted_vars_sync(plan) {
            return sync.seal_now().is_ok();
        }
        let persistent = matches!(
            plan.firmware,
            FirmwarePlan::Uefi {
                persistent: true,
                ..
            }
        );
        let sealed_in_volume = plan
            .state_volume
            .as_deref()
            .and_then(|dir| ferrovirt_storage::StateVolume::open(dir).ok())
            .and_then(|volume| volume.nvram_file(&plan.name).ok())
            .is_some_and(|file| crate::state_keys::vars_is_sealed(&file));
        !(persistent && sealed_in_volume)
    }

    /// An adopted run with sealed VARS: its plain copy is sealed at once (the previous manager
    /// may have died before its last seal) and then kept in sync.
    fn adopted_vars_sync(&self, plan: &VmPlan) -> Option<crate::state_keys::VarsSync> {
        if !matches!(
            plan.firmware,
            FirmwarePlan::Uefi {
                persistent: true,
                ..
            }
        ) {
            return None;
        }
        let plain = self.runtime_path(&plan.uuid).join("VARS.fd");
        let volume = ferrovirt_storage::StateVolume::open(plan.state_volume.as_deref()?).ok()?;
        let sealed = volume.nvram_file(&plan.name).ok()?;
        if !plain.exists() || !crate::state_keys::vars_is_sealed(&sealed) {
            return None;
        }
        let key = match crate::state_keys::unlock(&plan.name, &volume, &self.keyring) {
            Ok(Some(key)) => key,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(vm = %plan.name, "adopted run: {e}; its UEFI variables are not sealed until the key is back");
                return None;
            }
        };
        let mut sync = crate::state_keys::VarsSync::new(plain, sealed, key);
        if let Err(e) = sync.seal_now() {
            tracing::warn!(vm = %plan.name, "cannot seal the UEFI variables: {e}");
        }
        Some(sync)
    }

    /// Whether the VM's QEMU or swtpm runs (see [`vm_processes_running`]).
    pub fn processes_running(&self, uuid: &VmUuid) -> Result<VmProcesses, EngineError> {
        vm_processes_running(&self.data_dir, uuid)
    }

    /// Rolls a stopped VM's persistent state back to a generation.
    pub fn rollback(
        &self,
        plan: &VmPlan,
        generation: ferrovirt_storage::GenerationId,
    ) -> Result<ferrovirt_storage::GenerationId, EngineError> {
        rollback_state(&self.data_dir, plan, generation)
    }

    /// The generations of a VM's persistent state, oldest first.
    pub fn generations(
        &self,
        plan: &VmPlan,
    ) -> Result<Vec<ferrovirt_storage::GenerationInfo>, EngineError> {
        state_generations(&self.data_dir, plan)
    }
}

/// Whether a run ended the way [`crate::state::RunOutcome`] calls a success: QEMU exited 0 after
/// a SHUTDOWN (guest poweroff, or the stop the manager asked for) and swtpm exited 0.
fn run_succeeded(exit: &VmExit) -> bool {
    use crate::launcher::ExitReason;
    use crate::launcher::ProcessEnd;
    matches!(
        exit.reason,
        ExitReason::GuestPoweroff { .. } | ExitReason::HostShutdown { .. }
    ) && matches!(exit.qemu, ProcessEnd::Code(0))
        && exit
            .swtpm
            .as_ref()
            .is_none_or(|end| matches!(end, ProcessEnd::Code(0)))
}

/// A fault point (`ferrovirt_storage::failpoints`; nothing without the feature).
fn failpoint(name: &'static str, path: &Path) -> Result<(), EngineError> {
    ferrovirt_storage::failpoints::hit(name).map_err(|source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The directory of a VM's state generations (its per-VM store, claimed for this VM; older
/// per-volume generations moved in), when the VM keeps persistent state.
pub fn generations_dir(data_dir: &Path, plan: &VmPlan) -> Result<Option<PathBuf>, EngineError> {
    if !plan.needs_backend_storage() {
        return Ok(None);
    }
    let identity = VmIdentity {
        namespace: plan.namespace.clone(),
        name: plan.name.clone(),
        uid: plan.vm_uid.clone(),
        uuid: plan.uuid.clone(),
    };
    Ok(Some(VmStateStore::new(data_dir).open_for_vm(
        &identity,
        plan.legacy_generations_dir.as_deref(),
    )?))
}

/// A state plan for the offline operations on persistent state (list, rollback): they touch
/// neither firmware descriptors nor a runtime dir.
pub(crate) fn offline_state_plan<'a>(
    plan: &'a VmPlan,
    scratch: &'a Path,
    generations_dir: Option<&'a Path>,
    keyring: &'a Keyring,
) -> StatePlan<'a> {
    StatePlan {
        vm_name: &plan.name,
        vm_uuid: &plan.uuid,
        tpm: plan.tpm,
        firmware: plan.firmware,
        volume: plan.state_volume.as_deref(),
        generations_dir,
        runtime_dir: scratch,
        ephemeral_localca_dir: scratch,
        tpm_pool: None,
        descriptors: &[],
        keyring,
    }
}

/// The generations of a VM's persistent state, oldest first (no [`Engine`] needed: the API server
/// and the offline CLI use it too).
pub fn state_generations(
    data_dir: &Path,
    plan: &VmPlan,
) -> Result<Vec<ferrovirt_storage::GenerationInfo>, EngineError> {
    // A stop that is being settled records its `after-stop` generation within milliseconds:
    // the list shows it rather than the list before it.
    crate::settle_lock::wait_unlocked(
        &runtime_base(data_dir).join(plan.uuid.as_str()),
        SETTLE_WAIT,
    );
    let scratch = data_dir.join("run");
    let generations = generations_dir(data_dir, plan)?;
    let keyring = Keyring::for_data_dir(data_dir)?;
    Ok(crate::state::generations(&offline_state_plan(
        plan,
        &scratch,
        generations.as_deref(),
        &keyring,
    ))?)
}

/// Puts generation `generation` of a stopped VM's persistent state back; returns the generation
/// that keeps the state it replaced. Refuses while the VM's QEMU or swtpm runs on this host
/// ([`vm_processes_running`]), whatever the API status says.
pub fn rollback_state(
    data_dir: &Path,
    plan: &VmPlan,
    generation: ferrovirt_storage::GenerationId,
) -> Result<ferrovirt_storage::GenerationId, EngineError> {
    let running = vm_processes_running(data_dir, &plan.uuid)?;
    if running.any_running() {
        return Err(EngineError::StillRunning {
            name: plan.name.clone(),
            what: running.what(),
        });
    }
    let scratch = data_dir.join("run");
    let generations = generations_dir(data_dir, plan)?;
    let keyring = Keyring::for_data_dir(data_dir)?;
    Ok(crate::state::rollback(
        &offline_state_plan(plan, &scratch, generations.as_deref(), &keyring),
        generation,
    )?)
}

/// Whether a VM's processes run, as the host sees them (not as any API status says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmProcesses {
    pub qemu: bool,
    pub swtpm: bool,
    /// The last stop's state is still being checked and recorded ([`SETTLE_WAIT`] waited).
    pub settling: bool,
}

impl VmProcesses {
    /// QEMU or swtpm runs, or the last stop is not settled: the state must not be touched.
    pub fn any_running(self) -> bool {
        self.qemu || self.swtpm || self.settling
    }

    /// What runs, for a message ("VM x is running: QEMU").
    pub fn what(self) -> &'static str {
        match (self.qemu, self.swtpm) {
            (true, true) => "QEMU and swtpm",
            (true, false) => "QEMU",
            (false, true) => "swtpm",
            (false, false) => "the check and record of the state its last stop left",
        }
    }
}

/// How long an offline operation on a VM's state waits for the check and record of its last
/// stop (tens of milliseconds; a lock still held after this is reported as running).
pub const SETTLE_WAIT: Duration = Duration::from_secs(60);

/// Asks the host whether the VM's QEMU or swtpm runs: the runtime dir's `run.json` names them,
/// and a recorded process counts as running only when a live process has its pid, start time and
/// executable. A run still starting (no `run.json` yet) counts as running when a pid file names a
/// live process. This is what the state-rollback guard must ask, never a status field a client
/// can write.
pub fn vm_processes_running(data_dir: &Path, uuid: &VmUuid) -> Result<VmProcesses, EngineError> {
    let root = runtime_base(data_dir).join(uuid.as_str());
    if !root.exists() {
        return Ok(VmProcesses::default());
    }
    let runtime = RuntimeDir::open(&root)?;
    let settling = !crate::settle_lock::wait_unlocked(&root, SETTLE_WAIT);
    if runtime.run_record().exists() {
        let record = runtime.read_record()?;
        return Ok(VmProcesses {
            qemu: record.qemu.verify().is_ok(),
            swtpm: record.swtpm.as_ref().is_some_and(|s| s.verify().is_ok()),
            settling,
        });
    }
    let pid_alive = |file: PathBuf| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
            .is_some_and(|pid| crate::process::ProcessIdentity::of(pid).is_ok())
    };
    Ok(VmProcesses {
        qemu: pid_alive(runtime.qemu_pid_file()),
        swtpm: pid_alive(runtime.swtpm_pid_file()),
        settling,
    })
}

/// What a running VM's QEMU process uses, as the host counts it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VmUsage {
    /// CPU time in user and system mode (vCPUs and QEMU's own threads).
    pub cpu_seconds: f64,
    /// Resident set size.
    pub resident_bytes: u64,
}

/// The `run.json` in a VM's runtime dir when its QEMU is the live process it names (`None`: no
/// run, or it is over).
fn live_run_record(runtime_path: &Path) -> Option<crate::runtime::RunRecord> {
    let runtime = RuntimeDir::open(runtime_path).ok()?;
    let record = runtime.read_record().ok()?;
    record.qemu.verify().ok()?;
    Some(record)
}

/// The usage of the VM's QEMU when a recorded run of it is alive (`None` otherwise).
pub fn vm_usage(data_dir: &Path, uuid: &VmUuid) -> Option<VmUsage> {
    let pid = live_run_record(&runtime_base(data_dir).join(uuid.as_str()))?
        .qemu
        .pid;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: state is field 3, utime 14 and stime 15.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let ticks_per_second = rustix::param::clock_ticks_per_second().max(1);
    Some(VmUsage {
        cpu_seconds: ticks as f64 / ticks_per_second as f64,
        resident_bytes: resident_pages * rustix::param::page_size() as u64,
    })
}

/// The line the engine writes into a VM's serial log before each run (see
/// [`crate::serial_log`]).
pub const RUN_MARKER: &str = crate::serial_log::RUN_MARKER;

/// `<data>/logs/<vm-uuid>/serial.log`: the serial console of every run of a VM, appended (capped
/// and rotated, see [`crate::serial_log`]).
pub fn serial_log_path(data_dir: &Path, uuid: &VmUuid) -> PathBuf {
    data_dir.join("logs").join(uuid.as_str()).join("serial.log")
}

/// Longest name of a socket in a runtime dir (`swtpm-ctrl.sock`), with the `/` before it.
const LONGEST_SOCKET_NAME: usize = 20;

/// The file in a data dir that records its runtime base when it is not `<data>/run`: a random
/// one in the temp dir, or the one `serve --runtime-dir` chose (see [`prepare_runtime_base`] and
/// [`set_runtime_base`]).
pub const RUNTIME_BASE_RECORD: &str = "runtime-base";

fn sockets_fit(base: &Path) -> bool {
    base.as_os_str().len() + 1 + 36 + LONGEST_SOCKET_NAME <= MAX_SOCKET_PATH
}

/// A stable name for a data dir: FNV-1a of its path (stable across builds and Rust versions,
/// which std's hasher is not), so that a restarted manager finds the same runs again.
fn data_dir_hash(data_dir: &Path) -> String {
    let hash = data_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// A runtime base outside the data dir that no other user can create or enter: as root
/// `/run/ferrovirt/<hash>`, otherwise `$XDG_RUNTIME_DIR/ferrovirt/<hash>` (a per-user 0700 dir).
/// `None` where neither exists or the sockets would not fit.
fn private_system_base(data_dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let top = if rustix::process::geteuid().is_root() {
        PathBuf::from("/run")
    } else {
        PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?)
    };
    if !top.is_absolute() || !top.is_dir() {
        return None;
    }
    let parent = top.join("ferrovirt");
    let base = parent.join(data_dir_hash(data_dir));
    sockets_fit(&base).then_some((parent, base))
}

fn recorded_base(data_dir: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(data_dir.join(RUNTIME_BASE_RECORD)).ok()?;
    let path = PathBuf::from(text.trim());
    (path.is_absolute() && sockets_fit(&path)).then_some(path)
}

/// The directory under which each run gets `<vm-uuid>/`: `<data>/run` when the sockets fit in a
/// unix socket path from there; else `/run/ferrovirt/<hash>` (root) or
/// `$XDG_RUNTIME_DIR/ferrovirt/<hash>`; else the private random directory recorded in
/// `<data>/runtime-base`. Never a predictable name in a shared directory. This only computes the
/// path; [`prepare_runtime_base`] creates and checks it.
pub fn runtime_base(data_dir: &Path) -> PathBuf {
    if let Some(base) = recorded_base(data_dir).filter(|base| base.is_dir()) {
        return base;
    }
    let preferred = data_dir.join("run");
    if sockets_fit(&preferred) {
        return preferred;
    }
    if let Some((_, base)) = private_system_base(data_dir) {
        return base;
    }
    recorded_base(data_dir).unwrap_or(preferred)
}

/// Creates (or checks) the runtime base of a data dir (see [`runtime_base`]): every directory on
/// the way that ferrovirt owns is 0700 and ours (an existing one owned by someone else is
/// refused). Where only the system temp dir is left, a directory with a random name is created
/// there (mkdir fails on an existing name, so nobody can plant it) and recorded in
/// `<data>/runtime-base` for the next start.
pub fn prepare_runtime_base(data_dir: &Path) -> Result<PathBuf, EngineError> {
    let private = |path: &Path| {
        ferrovirt_storage::atomic::prepare_private_dir(path).map_err(|e| EngineError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    };
    if let Some(base) = recorded_base(data_dir).filter(|base| base.is_dir()) {
        private(&base)?;
        return Ok(base);
    }
    let preferred = data_dir.join("run");
    if sockets_fit(&preferred) {
        private(&preferred)?;
        return Ok(preferred);
    }
    if let Some((parent, base)) = private_system_base(data_dir) {
        private(&parent)?;
        private(&base)?;
        return Ok(base);
    }
    if let Some(base) = recorded_base(data_dir)
        && base.exists()
    {
        private(&base)?;
        return Ok(base);
    }
    let temp = std::env::temp_dir();
    for _ in 0..16 {
        let mut random = [0u8; 8];
        rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty()).map_err(
            |e| EngineError::Io {
                path: temp.clone(),
                source: e.into(),
            },
        )?;
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let base = temp.join(format!("ferrovirt-run-{name}"));
        if !sockets_fit(&base) {
            break;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&base) {
            Ok(()) => {
                private(&base)?;
                let record = data_dir.join(RUNTIME_BASE_RECORD);
                let text = base.as_os_str().as_encoded_bytes();
                ferrovirt_storage::atomic::write_file(&record, text, 0o600).map_err(|e| {
                    EngineError::Io {
                        path: record.clone(),
                        source: std::io::Error::other(e.to_string()),
                    }
                })?;
                return Ok(base);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(EngineError::Io { path: base, source }),
        }
    }
    Err(EngineError::Io {
        path: temp,
        source: std::io::Error::other(
            "no runtime directory whose socket paths fit in 107 bytes could be created; use a \
             shorter data dir path",
        ),
    })
}

/// Makes `base` the runtime base of a data dir (`serve --runtime-dir`, e.g. `/run/ferrovirt`,
/// a tmpfs that a reboot empties): created or checked 0700 and ours, and recorded in
/// `<data>/runtime-base`, so that every process that opens the data dir (a later `serve` without
/// the flag, `ferrovirt state rollback --data-dir`) finds the runs there. The record is used
/// whenever the directory exists.
pub fn set_runtime_base(data_dir: &Path, base: &Path) -> Result<PathBuf, EngineError> {
    let invalid = |message: String| EngineError::Io {
        path: base.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
    };
    if !base.is_absolute() {
        return Err(invalid(
            "the runtime dir must be an absolute path (e.g. /run/ferrovirt)".to_owned(),
        ));
    }
    if !sockets_fit(base) {
        return Err(invalid(format!(
            "the runtime dir is too long: its sockets' paths must fit in {MAX_SOCKET_PATH} bytes; use a shorter path (e.g. /run/ferrovirt)"
        )));
    }
    ferrovirt_storage::atomic::prepare_private_dir(data_dir).map_err(|e| EngineError::Io {
        path: data_dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    ferrovirt_storage::atomic::prepare_private_dir(base).map_err(|e| EngineError::Io {
        path: base.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    if recorded_base(data_dir).as_deref() != Some(base) {
        let record = data_dir.join(RUNTIME_BASE_RECORD);
        ferrovirt_storage::atomic::write_file(&record, base.as_os_str().as_encoded_bytes(), 0o600)
            .map_err(|e| EngineError::Io {
                path: record.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
    }
    Ok(base.to_path_buf())
}

fn remove_dir_if_exists(path: &Path) -> Result<(), EngineError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(EngineError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}
