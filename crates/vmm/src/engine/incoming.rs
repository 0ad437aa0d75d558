//! The engine's side of receiving a live migration (`crate::migration`): the destination VM
//! started paused with `-incoming defer` on state prepared by [`crate::state::prepare_incoming`]
//! (an empty TPM state dir, a template VARS), listening on its runtime dir's migration and NBD
//! sockets; once the source's state has arrived, the volume files the source sent through the
//! tunnel's `volume-files` channel (`meta/`, `swtpm-localca/`, staged in the runtime dir by the
//! API server) are moved into the volume, and the persistent state is sealed and recorded as
//! this host's first generation of the VM before the guest runs again, and the run becomes an
//! ordinary run (`run.json`, VARS sync) that [`Engine::wait`] and [`Engine::stop`] finish as
//! any other.

use std::time::{Duration, SystemTime};

use ferrovirt_storage::backend::META_DIR;
use ferrovirt_storage::volume_files;

use super::{Engine, EngineError, RunningVm, StartNotes, VarsSyncTask, remove_dir_if_exists};
use crate::disks::prepare_disks;
use crate::launcher::{SwtpmConfig, VmHandle};
use crate::migration::{self, MigrationSockets};
use crate::runtime::RuntimeDir;

/// What the arrival of a migrated VM did.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// When the guest ran again here (wall clock).
    pub resumed: SystemTime,
    /// The first state generation recorded on this host (`None`: no persistent state).
    pub generation: Option<ferrovirt_storage::GenerationId>,
}

impl Engine {
    /// Starts the destination of a live migration of `plan` and makes it listen on
    /// `migration.sock` and `nbd.sock` of its runtime dir (what the API server's
    /// `migrationtunnel` connects to). The guest does not run until [`Engine::finish_incoming`].
    pub async fn start_incoming(&self, plan: super::VmPlan) -> Result<RunningVm, EngineError> {
        let runtime_path = self.runtime_path(&plan.uuid);
        if self.recorded_run_alive(&plan.uuid) {
            return Err(EngineError::AlreadyRunning {
                name: plan.name.clone(),
                dir: runtime_path,
            });
        }
        if let Ok(leftover) = RuntimeDir::open(&runtime_path) {
            tokio::task::block_in_place(|| crate::orphans::reap_unrecorded_start(&leftover));
        }
        remove_dir_if_exists(&runtime_path)?;
        let runtime = RuntimeDir::create(&runtime_path)?;
        let generations = super::generations_dir(&self.data_dir, &plan)?;
        let prepared = {
            let state_plan = self.state_plan(&plan, &runtime_path, generations.as_deref());
            tokio::task::block_in_place(|| crate::state::prepare_incoming(&state_plan))
        };
        let result = match prepared {
            Ok(state) => self.launch_incoming(plan, state, runtime).await,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&runtime_path);
                return Err(e.into());
            }
        };
        match result {
            Ok(running) => Ok(running),
            Err((plan, error)) => {
                let state_plan = self.state_plan(&plan, &runtime_path, generations.as_deref());
                tokio::task::block_in_place(|| crate::state::discard_incoming(&state_plan, None));
                let _ = std::fs::remove_dir_all(&runtime_path);
                Err(error)
            }
        }
    }

    async fn launch_incoming(
        &self,
        plan: super::VmPlan,
        state: crate::state::PreparedState,
        runtime: RuntimeDir,
    ) -> Result<RunningVm, (super::VmPlan, EngineError)> {
        let disks = match prepare_disks(
            &plan.disks,
            runtime.root(),
            &plan.name,
            &plan.uuid,
            &self.host_paths,
        ) {
            Ok(disks) => disks,
            Err(e) => return Err((plan, e.into())),
        };
        let serial_log = self.serial_log_path(&plan.uuid);
        if let Err(source) = crate::serial_log::start_run(&serial_log, crate::serial_log::MAX_BYTES)
        {
            return Err((
                plan,
                EngineError::Io {
                    path: serial_log,
                    source,
                },
            ));
        }
        let mut machine = self.machine_config(&plan, &state, disks.disks, &runtime, serial_log);
        machine.fd_sets = disks.fd_sets;
        let swtpm = state.tpm_state_dir.clone().map(|state_dir| SwtpmConfig {
            state_dir,
            binary: None,
            extra_args: Vec::new(),
            key: state.tpm_key.clone(),
        });
        let sockets = MigrationSockets::in_dir(runtime.root());
        let handle = match VmHandle::start_incoming(machine, swtpm, runtime, disks.fds).await {
            Ok(handle) => handle,
            Err(e) => return Err((plan, e.into())),
        };
        if let Err(e) = migration::receive(&handle, &sockets).await {
            handle.kill();
            let _ = handle.wait_exited().await;
            return Err((plan, e.into()));
        }
        Ok(RunningVm {
            plan,
            handle,
            state: Some(state),
            notes: StartNotes::default(),
            vars_sync: None,
        })
    }

    /// Waits (up to `timeout`) until the source's state has arrived in `running` (started by
    /// [`Engine::start_incoming`]), calling `status` with QEMU's incoming migration status; then
    /// seals the VARS into the volume, records the persistent state as a generation (`note`: where
    /// it came from), writes `run.json` and resumes the guest. On an error the caller ends the
    /// receiver with [`Engine::abort_incoming`].
    pub async fn finish_incoming(
        &self,
        running: &mut RunningVm,
        timeout: Duration,
        status: impl FnMut(&str),
        note: &str,
    ) -> Result<Arrival, EngineError> {
        let runtime_path = self.runtime_path(&running.plan.uuid);
        super::failpoint("engine.incoming.waiting", &runtime_path)?;
        migration::wait_received(&running.handle, timeout, status).await?;
        super::failpoint("engine.incoming.before-install", &runtime_path)?;
        if let Some(volume) = &running.plan.state_volume {
            let keep_local = keep_local();
            let installed = tokio::task::block_in_place(|| {
                volume_files::install(&runtime_path, volume, &[keep_local.as_str()])
            })?;
            let _ = std::fs::remove_dir_all(runtime_path.join(volume_files::STAGING_DIR));
            tracing::debug!(vm = %running.plan.name, files = installed.len(), "installed the migrated volume files");
        }
        let mut sync = running.state.as_mut().and_then(|s| s.vars_sync.take());
        if let Some(sync) = sync.as_mut() {
            tokio::task::block_in_place(|| sync.seal_now())
                .map_err(crate::state::StateFault::from)?;
        }
        super::failpoint("engine.incoming.before-record", &runtime_path)?;
        let generations = super::generations_dir(&self.data_dir, &running.plan)?;
        let generation = {
            let state_plan = self.state_plan(&running.plan, &runtime_path, generations.as_deref());
            tokio::task::block_in_place(|| crate::state::record_arrival(&state_plan, note))?
        };
        if let Some(state) = running.state.as_mut() {
            state.recorded = generation;
            state.started_from = generation;
        }
        super::failpoint("engine.incoming.before-resume", &runtime_path)?;
        let resumed = migration::resume_received(&running.handle).await?;
        running.vars_sync = sync.map(|sync| VarsSyncTask::spawn(running.plan.name.clone(), sync));
        // The guest runs here now: only a crash means anything at this point (an injected error
        // must not make the caller end a guest that has run).
        let _ = ferrovirt_storage::failpoints::hit("engine.incoming.after-resume");
        Ok(Arrival {
            resumed,
            generation,
        })
    }

    /// Source: the files of `plan`'s backend-storage volume that no QEMU stream carries
    /// (`meta/` without this host's key record, `swtpm-localca/`) as the gzipped tar the
    /// destination's `volume-files` tunnel channel takes; `None` without a volume.
    pub fn pack_volume_files(plan: &super::VmPlan) -> Result<Option<Vec<u8>>, EngineError> {
        let Some(volume) = &plan.state_volume else {
            return Ok(None);
        };
        let keep_local = keep_local();
        Ok(Some(volume_files::pack(volume, &[keep_local.as_str()])?))
    }

    /// Ends a receiver whose migration failed: kills its QEMU and swtpm, removes what the
    /// stream wrote into the volume (it was empty: nothing of the VM's is lost), the generation
    /// recorded of it, and the runtime dir. The VM keeps running on the source (which resumes
    /// its guest when the failure came after the switch-over).
    pub async fn abort_incoming(&self, running: &RunningVm) {
        running.handle.kill();
        let _ = running.handle.wait_exited().await;
        let runtime_path = self.runtime_path(&running.plan.uuid);
        if let Ok(generations) = super::generations_dir(&self.data_dir, &running.plan) {
            let state_plan = self.state_plan(&running.plan, &runtime_path, generations.as_deref());
            let arrived = running.state.as_ref().and_then(|s| s.recorded);
            tokio::task::block_in_place(|| crate::state::discard_incoming(&state_plan, arrived));
        }
        if let Some(volume) = &running.plan.state_volume {
            let keep_local = keep_local();
            tokio::task::block_in_place(|| {
                volume_files::remove_installed(volume, &[keep_local.as_str()]);
            });
        }
        let _ = remove_dir_if_exists(&runtime_path);
    }
}

impl Engine {
    /// Whether the receiver of `plan` had resumed its guest before this manager started (its
    /// run is recorded: `run.json` is written only right before the first `cont` of a
    /// received guest, alive or not): then the guest may have run here and the arrived state is
    /// this host's, never to be discarded.
    pub fn incoming_was_resumed(&self, plan: &super::VmPlan) -> bool {
        RuntimeDir::open(self.runtime_path(&plan.uuid))
            .and_then(|runtime| runtime.read_record())
            .is_ok()
    }

    /// Ends what a receiver left when the manager that ran it ended before its guest resumed (a
    /// restart; see [`Engine::incoming_was_resumed`] first): its QEMU and swtpm (an unrecorded
    /// start, `orphans::reap_unrecorded_start`) and its runtime dir. What the stream wrote into
    /// the volume (the TPM state, the VARS, the installed volume files) and the generation of
    /// migration `note` (`record_arrival`'s) are removed only when they are this migration's:
    /// when `volume_was_empty` (the receiver had started, which `state::prepare_incoming`
    /// allows only on an empty volume) or the arrival was recorded. The source keeps the VM and
    /// its state.
    pub async fn abort_interrupted_incoming(
        &self,
        plan: &super::VmPlan,
        note: &str,
        volume_was_empty: bool,
    ) {
        let runtime_path = self.runtime_path(&plan.uuid);
        if let Ok(leftover) = RuntimeDir::open(&runtime_path) {
            let reaped =
                tokio::task::block_in_place(|| crate::orphans::reap_unrecorded_start(&leftover));
            tracing::warn!(vm = %plan.name, processes = reaped.len(), "ended the receiver of a migration interrupted by a restart");
        }
        if let Ok(generations) = super::generations_dir(&self.data_dir, plan) {
            let arrived = generations
                .as_deref()
                .map(|dir| arrival_generations(dir, note))
                .unwrap_or_default();
            if volume_was_empty || !arrived.is_empty() {
                let state_plan = self.state_plan(plan, &runtime_path, generations.as_deref());
                tokio::task::block_in_place(|| {
                    crate::state::discard_incoming(&state_plan, arrived.first().copied());
                    for extra in arrived.iter().skip(1) {
                        crate::state::discard_incoming(&state_plan, Some(*extra));
                    }
                });
                if let Some(volume) = &plan.state_volume {
                    let keep_local = keep_local();
                    tokio::task::block_in_place(|| {
                        volume_files::remove_installed(volume, &[keep_local.as_str()]);
                    });
                }
            }
        }
        let _ = remove_dir_if_exists(&runtime_path);
    }
}

/// The generations in the store `dir` that a migration's arrival recorded (`record_arrival`
/// with the note `note`).
fn arrival_generations(dir: &std::path::Path, note: &str) -> Vec<ferrovirt_storage::GenerationId> {
    ferrovirt_storage::Generations::new(dir)
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|info| {
            info.manifest.as_ref().is_ok_and(|m| {
                matches!(&m.reason, ferrovirt_storage::generations::GenerationReason::Other { note: n } if n == note)
            })
        })
        .map(|info| info.id)
        .collect()
}

/// The volume file that never leaves its host: the data-key record, wrapped by this host's
/// key-encryption key (relative to the volume root).
fn keep_local() -> String {
    format!("{META_DIR}/{}", ferrovirt_keys::STATE_KEY_FILE)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ferrovirt_storage::generations::GenerationReason;

    #[test]
    fn only_this_migrations_arrival_generations_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("generations");
        let state = dir.path().join("tpm2-00.permall");
        std::fs::write(&state, b"state").unwrap();
        let generations = ferrovirt_storage::Generations::new(&store);
        let note = |id: &str| GenerationReason::Other {
            note: format!("migrated in (migration {id})"),
        };
        let own = generations
            .record(&[("tpm", state.as_path())], note("m1"))
            .unwrap();
        std::fs::write(&state, b"state after a stop").unwrap();
        generations
            .record(&[("tpm", state.as_path())], GenerationReason::AfterStop)
            .unwrap();
        std::fs::write(&state, b"another arrival").unwrap();
        generations
            .record(&[("tpm", state.as_path())], note("m2"))
            .unwrap();
        assert_eq!(
            arrival_generations(&store, "migrated in (migration m1)"),
            vec![own]
        );
        assert!(arrival_generations(&store, "migrated in (migration m3)").is_empty());
        assert!(arrival_generations(&dir.path().join("none"), "x").is_empty());
    }
}
