//! The engine's runs, one per VM name: what the engine is doing with a VMI (starting, running,
//! ended), the only controller state that is not in the store. The reconcilers see a run as a
//! [`RunView`]; the run tasks (one per started VM, following it until it ends) move it along and
//! ask for a reconcile at each step.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ferrovirt_vmm::engine::RunningVm;
use ferrovirt_vmm::launcher::ExitReason;

use crate::world::{GuestReport, RunOutcome, RunPhase, RunView, TrustNotes};

/// A VM's place in the table: (namespace, name).
pub type RunKey = (String, String);

enum RunState {
    Starting,
    Running {
        vm: Arc<RunningVm>,
        adopted: bool,
        reported: bool,
        restored: Option<String>,
        guest: Option<Arc<GuestReport>>,
    },
    /// The VM ended and its state is durable; the engine checks and records it (the
    /// `after-stop` generation) before the run is over: its volume stays in use, no new run of
    /// the name begins, and the VMI keeps its finalizer until then.
    Ending(RunOutcome),
    Ended(RunOutcome),
}

struct Run {
    vmi_uid: String,
    state: RunState,
    /// When a stop was asked for (`Some`: the run is stopping); the stop -> durable latency is
    /// measured from here.
    stop_asked: Option<Instant>,
    /// The backend-storage volume the run uses (a PVC is not deleted under a running VM).
    volume: Option<PathBuf>,
    /// The guest was migrated to another host: the run's end is this (the Event's message).
    migrated: Option<String>,
}

/// The runs of this host's engine.
#[derive(Default)]
pub struct RunTable {
    runs: Mutex<HashMap<RunKey, Run>>,
}

impl RunTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<RunKey, Run>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The run of a VM name, as the reconcilers see it.
    pub fn view(&self, key: &RunKey) -> Option<RunView> {
        let runs = self.lock();
        let run = runs.get(key)?;
        let phase = match &run.state {
            RunState::Starting => RunPhase::Starting,
            RunState::Running {
                vm,
                adopted,
                reported,
                restored,
                guest,
                ..
            } => RunPhase::Running {
                adopted: *adopted,
                reported: *reported,
                restored: restored.clone(),
                guest: guest.clone(),
                trust: TrustNotes::of_start(&vm.notes),
            },
            RunState::Ending(outcome) => RunPhase::Ending(outcome.clone()),
            RunState::Ended(outcome) => RunPhase::Ended(outcome.clone()),
        };
        Some(RunView {
            vmi_uid: run.vmi_uid.clone(),
            phase,
            stopping: run.stop_asked.is_some(),
        })
    }

    /// The running VM of a name (not one that is stopping), for an online snapshot.
    pub fn running_vm(&self, key: &RunKey) -> Option<Arc<RunningVm>> {
        let runs = self.lock();
        let run = runs.get(key).filter(|r| r.stop_asked.is_none())?;
        match &run.state {
            RunState::Running { vm, .. } => Some(vm.clone()),
            _ => None,
        }
    }

    /// Registers a starting run; `false` if the name has a run already.
    pub fn begin(&self, key: RunKey, vmi_uid: &str, volume: Option<PathBuf>) -> bool {
        let mut runs = self.lock();
        if runs.contains_key(&key) {
            return false;
        }
        runs.insert(
            key,
            Run {
                vmi_uid: vmi_uid.to_owned(),
                state: RunState::Starting,
                stop_asked: None,
                volume,
                migrated: None,
            },
        );
        true
    }

    /// A run that could not begin (no plan): recorded as ended so its end is reported.
    pub fn refuse(&self, key: RunKey, vmi_uid: &str, outcome: RunOutcome) {
        self.lock().insert(
            key,
            Run {
                vmi_uid: vmi_uid.to_owned(),
                state: RunState::Ended(outcome),
                stop_asked: None,
                volume: None,
                migrated: None,
            },
        );
    }

    pub fn running(
        &self,
        key: &RunKey,
        vm: Arc<RunningVm>,
        adopted: bool,
        restored: Option<String>,
    ) {
        if let Some(run) = self.lock().get_mut(key) {
            run.state = RunState::Running {
                vm,
                adopted,
                reported: false,
                restored,
                guest: None,
            };
        }
    }

    pub fn ended(&self, key: &RunKey, outcome: RunOutcome) {
        if let Some(run) = self.lock().get_mut(key) {
            run.state = RunState::Ended(outcome);
            run.volume = None;
        }
    }

    /// The VM ended and its state is durable, not yet checked and recorded: its end may be
    /// reported, the run is not over ([`RunTable::ended`] follows).
    pub fn ending(&self, key: &RunKey, outcome: RunOutcome) {
        if let Some(run) = self.lock().get_mut(key) {
            run.state = RunState::Ending(outcome);
        }
    }

    /// Records what the guest agent reports (`None`: not connected) for the run of `vmi_uid`;
    /// `true` when it changed.
    pub fn set_guest(&self, key: &RunKey, report: Option<Arc<GuestReport>>) -> bool {
        if let Some(run) = self.lock().get_mut(key)
            && let RunState::Running { guest, .. } = &mut run.state
            && *guest != report
        {
            *guest = report;
            return true;
        }
        false
    }

    pub fn mark_reported(&self, key: &RunKey) {
        if let Some(run) = self.lock().get_mut(key)
            && let RunState::Running { reported, .. } = &mut run.state
        {
            *reported = true;
        }
    }

    /// Forgets an ended run (a run still going, or ending, is kept).
    pub fn forget(&self, key: &RunKey) {
        let mut runs = self.lock();
        if runs
            .get(key)
            .is_some_and(|r| matches!(r.state, RunState::Ended(_)))
        {
            runs.remove(key);
        }
    }

    /// Marks the run of this VMI as stopping and returns its VM (`None`: not running, or
    /// stopping already).
    pub fn stop(&self, key: &RunKey, vmi_uid: &str) -> Option<Arc<RunningVm>> {
        let mut runs = self.lock();
        let run = runs
            .get_mut(key)
            .filter(|r| r.vmi_uid == vmi_uid && r.stop_asked.is_none())?;
        match &run.state {
            RunState::Running { vm, .. } => {
                run.stop_asked = Some(Instant::now());
                Some(vm.clone())
            }
            _ => None,
        }
    }

    /// The guest now runs on another host (a live migration's switch-over is done): the run is
    /// stopping (its VMI's deletion does not stop it again) and ends as migrated.
    pub fn mark_migrated(&self, key: &RunKey, message: String) {
        if let Some(run) = self.lock().get_mut(key) {
            run.stop_asked.get_or_insert_with(Instant::now);
            run.migrated = Some(message);
        }
    }

    /// How the run ends when its guest was migrated away (`None`: it was not).
    pub fn migrated(&self, key: &RunKey) -> Option<RunOutcome> {
        let runs = self.lock();
        let message = runs.get(key)?.migrated.clone()?;
        Some(RunOutcome {
            phase: "Succeeded",
            reason: "Migrated",
            message,
        })
    }

    pub fn stopping(&self, key: &RunKey) -> bool {
        self.stop_asked(key).is_some()
    }

    /// When the run was asked to stop (`None`: it was not).
    pub fn stop_asked(&self, key: &RunKey) -> Option<Instant> {
        self.lock().get(key).and_then(|r| r.stop_asked)
    }

    /// The volumes of runs that are not over (by volume name).
    pub fn volumes_in_use(&self) -> HashSet<String> {
        self.lock()
            .values()
            .filter(|r| !matches!(r.state, RunState::Ended(_)))
            .filter_map(|r| {
                r.volume
                    .as_deref()?
                    .file_name()?
                    .to_str()
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// How a run that the engine followed to its end ended (`stopping`: a stop was asked for).
pub fn outcome_of(exit: &ExitReason, stopping: bool) -> RunOutcome {
    match exit {
        ExitReason::GuestPoweroff { .. }
        | ExitReason::HostShutdown { .. }
        | ExitReason::Unobserved => {
            RunOutcome::succeeded("The VirtualMachineInstance was shut down.")
        }
        ExitReason::Killed { .. } if stopping => {
            RunOutcome::succeeded("The VirtualMachineInstance was killed after its grace period.")
        }
        other => RunOutcome::failed(
            "Crashed",
            format!("The VirtualMachineInstance crashed: {other:?}"),
        ),
    }
}
