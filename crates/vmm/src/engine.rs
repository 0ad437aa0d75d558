//! The engine: one call to start a VM from a resolved [`VmPlan`], one to wait for its end, one to
//! adopt the runs a previous manager left running. It ties the state preparation ([`crate::state`])
//! to the launcher ([`crate::launcher`]).
//!
//! Data dir layout it owns (see ARCHITECTURE.md):
//! `run/<vm-uuid>/` (the runtime dir of the current run), `logs/<vm-uuid>/serial.log` (the serial
//! output of every run, appended), `localca-ephemeral/` (the CA of ephemeral TPMs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrovirt_firmware::{DEFAULT_SEARCH_DIRS, FirmwareDescriptor, load_descriptors};
use ferrovirt_storage::VmUuid;

use crate::disks::{DiskError, DiskPlan, prepare_disks};
use crate::kvm::probe_accelerator;
use crate::launcher::{LaunchError, SwtpmConfig, VmExit, VmHandle};
use crate::machine::{Accel, MachineConfig, MachineType, Nic, SerialConsole, TpmAttachment};
use crate::runtime::{MAX_SOCKET_PATH, RuntimeDir, RuntimeError};
use crate::state::{FirmwarePlan, PreparedState, StateFault, StatePlan, TpmPlan};

/// A VM run, resolved from the API object (see `crate::convert`): everything is decided.
#[derive(Debug, Clone)]
pub struct VmPlan {
    pub namespace: String,
    pub name: String,
    /// The stable `firmware.uuid`: names the runtime dir and the TPM state dir.
    pub uuid: VmUuid,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub firmware: FirmwarePlan,
    /// `domain.features.smm` enabled (Secure Boot firmware turns it on regardless).
    pub smm: bool,
    pub tpm: TpmPlan,
    pub disks: Vec<DiskPlan>,
    /// Network cards (NAT through one passt each, KubeVirt's masquerade binding).
    pub nics: Vec<Nic>,
    /// The backend-storage volume (a directory), when the TPM or EFI is persistent.
    pub state_volume: Option<PathBuf>,
    /// Where that volume's generations live.
    pub generations_dir: Option<PathBuf>,
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
}

/// A started VM and what its start did.
pub struct RunningVm {
    pub plan: VmPlan,
    pub handle: VmHandle,
    pub state: Option<PreparedState>,
}

/// How a run ended, and what became of its state.
#[derive(Debug)]
pub struct RunEnd {
    pub exit: VmExit,
    /// The `after-stop` generation recorded for the persistent state.
    pub recorded: Option<ferrovirt_storage::GenerationId>,
}

impl Engine {
    /// Opens the engine on a data dir: probes the accelerator (`FERROVIRT_ACCEL` overrides) and
    /// reads the firmware descriptors.
    pub async fn new(data_dir: impl Into<PathBuf>) -> Result<Self, EngineError> {
        let data_dir = data_dir.into();
        let run_base = runtime_base(&data_dir);
        for dir in [
            run_base.clone(),
            data_dir.join("logs"),
            data_dir.join("localca-ephemeral"),
        ] {
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
        Ok(Self {
            run_base,
            ephemeral_localca: data_dir.join("localca-ephemeral"),
            data_dir,
            accel: probe_accelerator().await,
            descriptors: loaded.descriptors,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
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

    fn state_plan<'a>(&'a self, plan: &'a VmPlan, runtime_dir: &'a Path) -> StatePlan<'a> {
        StatePlan {
            vm_name: &plan.name,
            vm_uuid: &plan.uuid,
            tpm: plan.tpm,
            firmware: plan.firmware,
            volume: plan.state_volume.as_deref(),
            generations_dir: plan.generations_dir.as_deref(),
            runtime_dir,
            ephemeral_localca_dir: &self.ephemeral_localca,
            descriptors: &self.descriptors,
        }
    }

    /// Prepares the state and disks and starts the VM; returns once QEMU runs the guest.
    pub async fn start(&self, plan: VmPlan) -> Result<RunningVm, EngineError> {
        let runtime_path = self.runtime_path(&plan.uuid);
        if let Ok(existing) = RuntimeDir::open(&runtime_path)
            && existing
                .read_record()
                .is_ok_and(|record| record.qemu.verify().is_ok())
        {
            return Err(EngineError::AlreadyRunning {
                name: plan.name.clone(),
                dir: runtime_path,
            });
        }
        // A leftover runtime dir of a run that is gone: its ephemeral state is garbage.
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
        let state = {
            let root = runtime.root().to_path_buf();
            let state_plan = self.state_plan(&plan, &root);
            tokio::task::block_in_place(|| crate::state::prepare(&state_plan))?
        };
        for warning in &state.warnings {
            tracing::warn!(vm = %plan.name, "{warning}");
        }
        let disks = prepare_disks(&plan.disks, runtime.root(), &plan.name, &plan.uuid)?;
        let serial_log = self.serial_log_path(&plan.uuid);
        if let Some(dir) = serial_log.parent() {
            std::fs::create_dir_all(dir).map_err(|source| EngineError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        append_run_marker(&serial_log)?;
        let machine = MachineConfig {
            name: format!("{}_{}", plan.namespace, plan.name),
            uuid: plan.uuid.as_str().to_string(),
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
            disks,
            nics: plan.nics.clone(),
            serial: SerialConsole {
                socket: runtime.serial_socket(),
                log_file: serial_log,
            },
            qmp_socket: runtime.qmp_socket(),
            pid_file: runtime.qemu_pid_file(),
            qemu_binary: None,
        };
        let swtpm = state.tpm_state_dir.clone().map(|state_dir| SwtpmConfig {
            state_dir,
            binary: None,
            extra_args: Vec::new(),
        });
        let handle = VmHandle::start(machine, swtpm, runtime).await?;
        Ok(RunningVm {
            plan,
            handle,
            state: Some(state),
        })
    }

    /// Waits for the VM to end (guest poweroff, stop, crash), then makes its persistent state
    /// durable and records it, and removes the runtime dir (ephemeral state dies here).
    pub async fn wait(&self, running: &RunningVm) -> Result<RunEnd, EngineError> {
        let exit = running.handle.wait_exited().await?;
        self.finish(&running.plan, exit).await
    }

    /// Stops the VM (ACPI powerdown, then quit after the grace period) and finishes it.
    pub async fn stop(&self, running: &RunningVm) -> Result<RunEnd, EngineError> {
        let exit = running.handle.stop(running.plan.grace).await?;
        self.finish(&running.plan, exit).await
    }

    async fn finish(&self, plan: &VmPlan, exit: VmExit) -> Result<RunEnd, EngineError> {
        let runtime_path = self.runtime_path(&plan.uuid);
        let recorded = {
            let state_plan = self.state_plan(plan, &runtime_path);
            tokio::task::block_in_place(|| crate::state::finish(&state_plan))
        };
        // The run is over whatever the state check said: its runtime dir (ephemeral state only)
        // must not block the next start. The persistent state stays where it is, untouched.
        remove_dir_if_exists(&runtime_path)?;
        Ok(RunEnd {
            exit,
            recorded: recorded?,
        })
    }

    /// Re-attaches to a run a previous manager left running (never kills it).
    pub async fn adopt(&self, plan: VmPlan) -> Result<RunningVm, EngineError> {
        let runtime = RuntimeDir::open(self.runtime_path(&plan.uuid))?;
        let handle = VmHandle::adopt(runtime).await?;
        Ok(RunningVm {
            plan,
            handle,
            state: None,
        })
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

/// A state plan for the offline operations on persistent state (list, rollback): they touch
/// neither firmware descriptors nor a runtime dir.
fn offline_state_plan<'a>(plan: &'a VmPlan, scratch: &'a Path) -> StatePlan<'a> {
    StatePlan {
        vm_name: &plan.name,
        vm_uuid: &plan.uuid,
        tpm: plan.tpm,
        firmware: plan.firmware,
        volume: plan.state_volume.as_deref(),
        generations_dir: plan.generations_dir.as_deref(),
        runtime_dir: scratch,
        ephemeral_localca_dir: scratch,
        descriptors: &[],
    }
}

/// The generations of a VM's persistent state, oldest first (no [`Engine`] needed: the API server
/// and the offline CLI use it too).
pub fn state_generations(
    data_dir: &Path,
    plan: &VmPlan,
) -> Result<Vec<ferrovirt_storage::GenerationInfo>, EngineError> {
    let scratch = runtime_base(data_dir);
    Ok(crate::state::generations(&offline_state_plan(
        plan, &scratch,
    ))?)
}

/// Puts generation `generation` of a stopped VM's persistent state back; returns the generation
/// that keeps the state it replaced.
pub fn rollback_state(
    data_dir: &Path,
    plan: &VmPlan,
    generation: ferrovirt_storage::GenerationId,
) -> Result<ferrovirt_storage::GenerationId, EngineError> {
    let scratch = runtime_base(data_dir);
    Ok(crate::state::rollback(
        &offline_state_plan(plan, &scratch),
        generation,
    )?)
}

/// The line the engine writes into a VM's serial log before each run, so that a reader can show
/// the current or last run alone (`ferrovirt logs`).
pub const RUN_MARKER: &str = "[ferrovirt] run started";

/// `<data>/logs/<vm-uuid>/serial.log`: the serial console of every run of a VM, appended.
pub fn serial_log_path(data_dir: &Path, uuid: &VmUuid) -> PathBuf {
    data_dir.join("logs").join(uuid.as_str()).join("serial.log")
}

fn append_run_marker(serial_log: &Path) -> Result<(), EngineError> {
    use std::io::Write;
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(serial_log)
        .and_then(|mut log| write!(log, "\r\n{RUN_MARKER} (unix time {seconds})\r\n"))
        .map_err(|source| EngineError::Io {
            path: serial_log.to_path_buf(),
            source,
        })
}

/// Longest name of a socket in a runtime dir (`swtpm-ctrl.sock`), with the `/` before it.
const LONGEST_SOCKET_NAME: usize = 20;

/// The directory under which each run gets `<vm-uuid>/`: `<data>/run` when the sockets fit in a
/// unix socket path from there, else a short directory in the system temp dir named after a
/// stable hash of the data dir (so a restarted manager finds the same runs again).
pub fn runtime_base(data_dir: &Path) -> PathBuf {
    let preferred = data_dir.join("run");
    let uuid_len = 1 + 36;
    if preferred.as_os_str().len() + uuid_len + LONGEST_SOCKET_NAME <= MAX_SOCKET_PATH {
        return preferred;
    }
    // FNV-1a: stable across builds and Rust versions (std's hasher is not).
    let hash = data_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    std::env::temp_dir().join(format!("ferrovirt-run-{hash:016x}"))
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
