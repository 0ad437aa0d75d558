//! KubeVirt's VirtualMachineInstanceMigration controller for a decentralized live migration
//! between two ferrovirt hosts, as a pure function of (migration, world) -> (actions, work).
//!
//! Roles (KubeVirt's `IsDecentralizedSource` / `IsDecentralizedTarget`):
//! - source: `spec.sendTo` {`migrationID`, `connectURL`} on the host where the VMI runs;
//! - target: `spec.receive` {`migrationID`} on the host whose VMI waits as a receiver (its VM
//!   has `runStrategy: WaitAsReceiver`, the VMI `kubevirt.io/create-migration-target: "true"`).
//!
//! Phases as KubeVirt's migration controller sets them: a new source is `Synchronizing`, a new
//! target `WaitingForSync`; then `Scheduling` (source: the tunnel to the destination is being
//! opened) or `PreparingTarget` (target: the receiving QEMU and swtpm are being started),
//! `TargetReady`, `Running`, and `Succeeded` or `Failed`, each recorded in
//! `status.phaseTransitionTimestamps`. Events as KubeVirt's: `SuccessfulMigration` ("Source
//! node reported migration succeeded"), `FailedMigration` (the reason). The VMI's
//! `status.migrationState` (`migrationUid`, `mode: PreCopy`, `startTimestamp`,
//! `endTimestamp`, `completed`, `failed`, `failureReason`, `sourceNode`, `targetNode`) follows
//! the job. On the target's success the VM's run strategy becomes the one its
//! `kubevirt.io/restore-run-strategy` annotation names (KubeVirt's user guide; `Always` when
//! there is none).
//!
//! The work itself (starting the receiving QEMU, the relay and `vmm::migration::send`) is asked
//! for as [`MigrationWork`] and reported back as a [`MigrationJob`]; the reconciler only reads
//! the job, as the VMI reconciler reads the engine's run.

use ferrovirt_resources::{VMIMS, VMIS, VMS};
use serde_json::{Value, json};

use crate::action::Action;
use crate::events::EventType;
use crate::runtime::meta_str;

/// KubeVirt's migration phases.
pub mod phase {
    pub const PENDING: &str = "Pending";
    pub const SCHEDULING: &str = "Scheduling";
    pub const PREPARING_TARGET: &str = "PreparingTarget";
    pub const TARGET_READY: &str = "TargetReady";
    pub const WAITING_FOR_SYNC: &str = "WaitingForSync";
    pub const SYNCHRONIZING: &str = "Synchronizing";
    pub const RUNNING: &str = "Running";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
}

/// KubeVirt's Event reasons of the migration controller.
pub const SUCCESSFUL_MIGRATION: &str = "SuccessfulMigration";
pub const FAILED_MIGRATION: &str = "FailedMigration";
/// ferrovirt's Event reason on the source's VM kept halted because the destination did not
/// confirm (the one of a retired VM is `vm_reconciler::MIGRATED`).
pub const MIGRATION_NOT_CONFIRMED: &str = "MigrationNotConfirmed";
/// KubeVirt's annotation on a receiving VM and its `RunStrategyWaitAsReceiver`.
pub use ferrovirt_resources::migration::{MIGRATED_TO, RESTORE_RUN_STRATEGY, WAIT_AS_RECEIVER};
/// KubeVirt's annotation on a VMI that waits for an incoming migration.
pub const CREATE_MIGRATION_TARGET: &str = "kubevirt.io/create-migration-target";

/// Which side of a decentralized migration a VMIM is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Source {
        migration_id: String,
        connect_url: String,
    },
    Target {
        migration_id: String,
    },
    /// Neither `sendTo` nor `receive`: a migration within one cluster, which one ferrovirt host
    /// cannot do.
    Local,
}

impl Role {
    pub fn of(vmim: &Value) -> Self {
        let text = |p: &str| vmim.pointer(p).and_then(Value::as_str).map(str::to_owned);
        if let (Some(migration_id), Some(connect_url)) = (
            text("/spec/sendTo/migrationID"),
            text("/spec/sendTo/connectURL"),
        ) {
            return Self::Source {
                migration_id,
                connect_url,
            };
        }
        if let Some(migration_id) = text("/spec/receive/migrationID") {
            return Self::Target { migration_id };
        }
        Self::Local
    }
}

/// One progress reading of a running migration (from QMP `query-migrate`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobProgress {
    pub ram_remaining_bytes: u64,
    pub dirty_rate_bytes_per_second: u64,
    pub expected_downtime_ms: Option<u64>,
    pub disk_remaining_bytes: u64,
}

/// What the executor reports about a migration's work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationJob {
    /// Source: the tunnel to the destination is being opened; target: the receiving QEMU and
    /// swtpm are being started.
    Preparing,
    /// Source: the destination answered; target: its QEMU waits on the incoming sockets.
    TargetReady,
    /// Memory (and before it the block mirrors) moving, since `started` (RFC 3339).
    Running {
        started: String,
        progress: JobProgress,
    },
    Succeeded {
        started: String,
        ended: String,
        /// The pause of the guest at the switch-over as this side measured it (source: QEMU's
        /// `downtime`).
        downtime_ms: Option<u64>,
        total_ms: u64,
        /// When the guest stopped here (source) or ran again here (target), in milliseconds
        /// since the epoch: the destination's minus the source's is the downtime as measured
        /// across the two hosts (their clocks in sync).
        switched_unix_ms: Option<u64>,
        /// Source: why the destination did not confirm that the guest runs there (`None`: it
        /// did; always `None` on the target). The guest does not run here either way; an
        /// unconfirmed source keeps its VM, halted, instead of retiring it.
        unconfirmed: Option<String>,
    },
    Failed {
        started: Option<String>,
        ended: String,
        reason: String,
    },
}

/// Work the executor is asked to start (once; it reports back as a [`MigrationJob`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationWork {
    /// Target: start the VMI's QEMU incoming (`vmm::migration::receive`) and wait for the
    /// stream; then the run becomes the VMI's engine run.
    Receive { vmi: Value, migration_id: String },
    /// Source: relay the VMI's migration over the destination's tunnel and send.
    Send {
        vmi: Value,
        migration_id: String,
        connect_url: String,
    },
    /// The migration object is being deleted: cancel a job still running (the VM stays on the
    /// source).
    Cancel,
    /// Source, after a restart of this server in the middle of the migration (its status says
    /// it was under way, this server has no job of it): settle it from what the source QEMU
    /// says (switched over: confirm with the destination as the send would have; not: cancel
    /// what is left, the guest runs on here), never a new send.
    RecoverSend {
        vmi: Value,
        migration_id: String,
        connect_url: String,
    },
    /// Target, after a restart of this server in the middle of the migration: a receiver whose
    /// guest had resumed is adopted (the migration succeeded), any other is ended and what it
    /// received removed (the migration failed: the source keeps the VM). `volume_was_empty`:
    /// the receiver had started (phase `TargetReady` or later), which it does only on an empty
    /// volume, so what the volume holds now came with this migration.
    RecoverReceive {
        vmi: Value,
        migration_id: String,
        volume_was_empty: bool,
    },
}

/// Whether a migration whose status says `phase` was under way on this host (its executor had
/// begun), so that a reconcile that finds no job of it follows a restart of this server.
fn was_under_way(role: &Role, phase: &str) -> bool {
    match role {
        Role::Source { .. } => matches!(
            phase,
            phase::SCHEDULING | phase::TARGET_READY | phase::RUNNING
        ),
        Role::Target { .. } => matches!(
            phase,
            phase::PREPARING_TARGET | phase::TARGET_READY | phase::RUNNING
        ),
        Role::Local => false,
    }
}

/// What a migration's reconcile sees.
pub struct MigrationWorld<'a> {
    /// The VMI `spec.vmiName` names, in the migration's namespace.
    pub vmi: Option<&'a Value>,
    /// The VM of the same name.
    pub vm: Option<&'a Value>,
    pub job: Option<&'a MigrationJob>,
    /// Another unfinished migration of the same VMI exists (older than this one).
    pub other_active: bool,
    /// This host's name (the VMI's `sourceNode` / `targetNode`).
    pub node: &'a str,
    pub now: &'a str,
}

/// The outcome of one reconcile.
#[derive(Debug, Default, PartialEq)]
pub struct MigrationPlan {
    pub actions: Vec<Action>,
    pub work: Option<MigrationWork>,
}

fn is_final(phase: &str) -> bool {
    matches!(phase, phase::SUCCEEDED | phase::FAILED)
}

/// The phase a migration is in, given its role and its job.
fn phase_of(role: &Role, job: Option<&MigrationJob>) -> &'static str {
    let source = matches!(role, Role::Source { .. });
    match job {
        None if source => phase::SYNCHRONIZING,
        None => phase::WAITING_FOR_SYNC,
        Some(MigrationJob::Preparing) if source => phase::SCHEDULING,
        Some(MigrationJob::Preparing) => phase::PREPARING_TARGET,
        Some(MigrationJob::TargetReady) => phase::TARGET_READY,
        Some(MigrationJob::Running { .. }) => phase::RUNNING,
        Some(MigrationJob::Succeeded { .. }) => phase::SUCCEEDED,
        Some(MigrationJob::Failed { .. }) => phase::FAILED,
    }
}

/// The migration's status with `phase` (and its transition time when it changed).
fn status_with_phase(vmim: &Value, new_phase: &str, now: &str) -> Value {
    let mut status = vmim.get("status").cloned().unwrap_or_else(|| json!({}));
    if status.get("phase").and_then(Value::as_str) != Some(new_phase) {
        status["phase"] = json!(new_phase);
        let mut transitions = status
            .get("phaseTransitionTimestamps")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        transitions.push(json!({"phase": new_phase, "phaseTransitionTimestamp": now}));
        status["phaseTransitionTimestamps"] = Value::Array(transitions);
    }
    status
}

fn update_status(
    object: &Value,
    resource: ferrovirt_resources::ResourceDef,
    status: Value,
) -> Option<Action> {
    if object.get("status") == Some(&status) {
        return None;
    }
    let mut updated = object.clone();
    updated["status"] = status;
    Some(Action::UpdateStatus {
        resource,
        object: updated,
    })
}

fn fail(vmim: &Value, world: &MigrationWorld<'_>, message: &str) -> MigrationPlan {
    let mut status = status_with_phase(vmim, phase::FAILED, world.now);
    status["migrationState"] = json!({
        "endTimestamp": world.now, "failed": true, "failureReason": message,
    });
    let mut actions: Vec<Action> = update_status(vmim, VMIMS, status).into_iter().collect();
    actions.push(Action::event(
        vmim,
        EventType::Warning,
        FAILED_MIGRATION,
        message,
    ));
    MigrationPlan {
        actions,
        work: None,
    }
}

/// The VMI's `status.migrationState` for the job, on top of what it has.
fn migration_state(
    vmi: &Value,
    vmim: &Value,
    role: &Role,
    job: &MigrationJob,
    node: &str,
) -> Value {
    let mut state = vmi
        .pointer("/status/migrationState")
        .filter(|s| s.get("migrationUid") == vmim.pointer("/metadata/uid"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    state["migrationUid"] = json!(meta_str(vmim, "uid"));
    state["mode"] = json!("PreCopy");
    match role {
        Role::Source { connect_url, .. } => {
            state["sourceNode"] = json!(node);
            state["targetNodeAddress"] = json!(connect_url);
        }
        _ => state["targetNode"] = json!(node),
    }
    match job {
        MigrationJob::Preparing | MigrationJob::TargetReady => {}
        MigrationJob::Running { started, .. } => {
            state["startTimestamp"] = json!(started);
        }
        MigrationJob::Succeeded { started, ended, .. } => {
            state["startTimestamp"] = json!(started);
            state["endTimestamp"] = json!(ended);
            state["completed"] = json!(true);
            if !matches!(role, Role::Source { .. }) {
                state["targetNodeDomainReadyTimestamp"] = json!(ended);
            }
        }
        MigrationJob::Failed {
            started,
            ended,
            reason,
        } => {
            if let Some(started) = started {
                state["startTimestamp"] = json!(started);
            }
            state["endTimestamp"] = json!(ended);
            state["failed"] = json!(true);
            state["failureReason"] = json!(reason);
        }
    }
    state
}

/// The actions and work for one migration.
pub fn reconcile_migration(vmim: &Value, world: &MigrationWorld<'_>) -> MigrationPlan {
    let role = Role::of(vmim);
    let current = vmim
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    let job_active = world.job.is_some_and(|j| {
        !matches!(
            j,
            MigrationJob::Succeeded { .. } | MigrationJob::Failed { .. }
        )
    });
    if vmim.pointer("/metadata/deletionTimestamp").is_some() {
        return MigrationPlan {
            actions: Vec::new(),
            work: job_active.then_some(MigrationWork::Cancel),
        };
    }
    if is_final(current) {
        return MigrationPlan {
            actions: settle_vmi_state(vmim, world.vmi, current)
                .into_iter()
                .collect(),
            work: None,
        };
    }
    let vmi_name = vmim
        .pointer("/spec/vmiName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let ns = meta_str(vmim, "namespace");
    if role == Role::Local {
        return fail(
            vmim,
            world,
            "a migration within one host is not possible: set spec.sendTo {migrationID, connectURL} on the source host and spec.receive {migrationID} on the destination",
        );
    }
    if world.job.is_none() && world.other_active {
        return fail(
            vmim,
            world,
            "VMI is not eligible for migration because another migration job is in progress.",
        );
    }
    let Some(vmi) = world.vmi else {
        if job_active {
            // The VMI went while its migration's job runs (deleted by hand, or its QEMU ended
            // after the switch-over): the job settles where the guest runs, and only then the
            // status says how it ended (failing it now could start a second copy here while
            // the guest runs on the destination).
            return MigrationPlan::default();
        }
        if matches!(role, Role::Target { .. }) && world.job.is_none() {
            // The receiving VMI is created by the VM controller from the WaitAsReceiver VM.
            let status = status_with_phase(vmim, phase::WAITING_FOR_SYNC, world.now);
            return MigrationPlan {
                actions: update_status(vmim, VMIMS, status).into_iter().collect(),
                work: None,
            };
        }
        return fail(
            vmim,
            world,
            &format!("VirtualMachineInstance {ns}/{vmi_name} does not exist (spec.vmiName)"),
        );
    };
    if world.job.is_none() {
        match &role {
            Role::Source { .. } => {
                let running =
                    vmi.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
                if !running {
                    return fail(
                        vmim,
                        world,
                        &format!(
                            "VirtualMachineInstance {ns}/{vmi_name} is not running; only a running VMI can be migrated"
                        ),
                    );
                }
            }
            Role::Target { .. } => {
                let receiver = vmi
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(CREATE_MIGRATION_TARGET))
                    .and_then(Value::as_str)
                    == Some("true");
                if !receiver {
                    return fail(
                        vmim,
                        world,
                        &format!(
                            "VirtualMachineInstance {ns}/{vmi_name} does not wait for a migration: create its VirtualMachine with runStrategy: WaitAsReceiver"
                        ),
                    );
                }
            }
            Role::Local => {}
        }
    }
    if world.job.is_none() && was_under_way(&role, current) {
        // This server restarted in the middle of the migration: its job is lost, the processes
        // are not. The executor settles it (and reports a job); the status stays as it is until
        // then, so that no reconcile takes it for a new migration.
        let work = match &role {
            Role::Source {
                migration_id,
                connect_url,
            } => Some(MigrationWork::RecoverSend {
                vmi: vmi.clone(),
                migration_id: migration_id.clone(),
                connect_url: connect_url.clone(),
            }),
            Role::Target { migration_id } => Some(MigrationWork::RecoverReceive {
                vmi: vmi.clone(),
                migration_id: migration_id.clone(),
                volume_was_empty: matches!(current, phase::TARGET_READY | phase::RUNNING),
            }),
            Role::Local => None,
        };
        return MigrationPlan {
            actions: Vec::new(),
            work,
        };
    }
    let new_phase = phase_of(&role, world.job);
    let mut actions = Vec::new();
    let mut events = Vec::new();
    let mut status = status_with_phase(vmim, new_phase, world.now);
    let work = match (&role, world.job) {
        (
            Role::Source {
                migration_id,
                connect_url,
            },
            None,
        ) => Some(MigrationWork::Send {
            vmi: vmi.clone(),
            migration_id: migration_id.clone(),
            connect_url: connect_url.clone(),
        }),
        (Role::Target { migration_id }, None) => Some(MigrationWork::Receive {
            vmi: vmi.clone(),
            migration_id: migration_id.clone(),
        }),
        _ => None,
    };
    if let Some(job) = world.job {
        let state = migration_state(vmi, vmim, &role, job, world.node);
        status["migrationState"] = json!({
            "startTimestamp": state.get("startTimestamp"),
            "endTimestamp": state.get("endTimestamp"),
            "sourceNode": state.get("sourceNode"),
            "targetNode": state.get("targetNode"),
            "completed": state.get("completed"),
            "failed": state.get("failed"),
            "failureReason": state.get("failureReason"),
        });
        add_measurements(&mut status["migrationState"], &role, job);
        strip_nulls(&mut status["migrationState"]);
        let mut vmi_status = vmi.get("status").cloned().unwrap_or_else(|| json!({}));
        vmi_status["migrationState"] = state;
        actions.extend(update_status(vmi, VMIS, vmi_status));
        match job {
            MigrationJob::Succeeded {
                downtime_ms,
                total_ms,
                unconfirmed,
                ..
            } if current != phase::SUCCEEDED => {
                let measured = match downtime_ms {
                    Some(ms) => format!(" (downtime {ms} ms, total {total_ms} ms)"),
                    None => format!(" (total {total_ms} ms)"),
                };
                events.push(Action::event(
                    vmim,
                    EventType::Normal,
                    SUCCESSFUL_MIGRATION,
                    &format!("Source node reported migration succeeded{measured}"),
                ));
                match (&role, world.vm, unconfirmed) {
                    (Role::Target { .. }, Some(vm), _) => actions.extend(take_over(vm)),
                    (Role::Source { connect_url, .. }, Some(vm), None) => {
                        actions.extend(retire(vm, connect_url));
                    }
                    (Role::Source { connect_url, .. }, Some(vm), Some(detail)) => {
                        actions.extend(hand_over(vm));
                        events.push(Action::event(
                            vm,
                            EventType::Warning,
                            MIGRATION_NOT_CONFIRMED,
                            &format!(
                                "The VM was sent to {connect_url}, which did not confirm that it runs there ({detail}). It does not run on this host either: its copy here is kept, halted, with its state. Look at the destination; start the VM here only if it does not run there (two copies of one disk and TPM must never run)."
                            ),
                        ));
                    }
                    _ => {}
                }
            }
            MigrationJob::Failed { reason, .. } => {
                events.push(Action::event(
                    vmim,
                    EventType::Warning,
                    FAILED_MIGRATION,
                    reason,
                ));
            }
            _ => {}
        }
    }
    // The migration's own status last (before its Events): a write of the VMI or the VM that
    // meets a newer object stops the list and the reconcile runs again, which a final status
    // written first would cut short (the take-over or hand-over never done).
    actions.extend(update_status(vmim, VMIMS, status));
    actions.extend(events);
    MigrationPlan { actions, work }
}

fn strip_nulls(value: &mut Value) {
    if let Some(map) = value.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
}

/// ferrovirt's additions to the migration's `status.migrationState` (KubeVirt reports these as
/// the metrics `kubevirt_vmi_migration_data_remaining_bytes`,
/// `kubevirt_vmi_migration_dirty_memory_rate_bytes`; its VMIM has no fields for them): the
/// progress of a running migration and what a finished one measured.
fn add_measurements(state: &mut Value, role: &Role, job: &MigrationJob) {
    match job {
        MigrationJob::Running { progress, .. } => {
            state["memoryRemainingBytes"] = json!(progress.ram_remaining_bytes);
            state["dirtyRateBytesPerSecond"] = json!(progress.dirty_rate_bytes_per_second);
            state["diskRemainingBytes"] = json!(progress.disk_remaining_bytes);
            if let Some(ms) = progress.expected_downtime_ms {
                state["expectedDowntimeMs"] = json!(ms);
            }
        }
        MigrationJob::Succeeded {
            downtime_ms,
            total_ms,
            switched_unix_ms,
            ..
        } => {
            state["totalMs"] = json!(total_ms);
            if let Some(ms) = downtime_ms {
                state["downtimeMs"] = json!(ms);
            }
            let field = match role {
                Role::Source { .. } => "sourceStoppedUnixMs",
                _ => "targetResumedUnixMs",
            };
            if let Some(ms) = switched_unix_ms {
                state[field] = json!(ms);
            }
        }
        _ => {}
    }
}

/// Source, on a success the destination confirmed: the copy here is to be retired (the issue's
/// "the source retires its copy, kept until `--state-retention`"; KubeVirt leaves the source VM
/// to the orchestrator of a decentralized migration, which deletes it). The VM is halted (its
/// VMI ends; its finalizer waits for the run, whose stop records the last generation) and
/// marked [`MIGRATED_TO`]; the VM reconciler deletes it once the VMI is gone
/// (`vm_reconciler::retire_migrated`), never while the volume may still be written.
fn retire(vm: &Value, connect_url: &str) -> Option<Action> {
    let marked = vm
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(MIGRATED_TO))
        .is_some();
    if vm.pointer("/metadata/deletionTimestamp").is_some()
        || (marked && crate::vm::run_strategy_of(vm) == "Halted")
    {
        return None;
    }
    let mut updated = vm.clone();
    updated["spec"]["runStrategy"] = json!("Halted");
    if let Some(spec) = updated.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("running");
    }
    if !updated["metadata"]["annotations"].is_object() {
        updated["metadata"]["annotations"] = json!({});
    }
    updated["metadata"]["annotations"][MIGRATED_TO] = json!(connect_url);
    Some(Action::Update {
        resource: VMS,
        object: updated,
    })
}

/// Source, on a success the destination did not confirm: the VM no longer runs here (KubeVirt's
/// migration controller sets the decentralized source's VM to `Halted`, which deletes its
/// finished VMI); its state stays on this host as the generation its last stop recorded.
fn hand_over(vm: &Value) -> Option<Action> {
    if crate::vm::run_strategy_of(vm) == "Halted" {
        return None;
    }
    let mut updated = vm.clone();
    updated["spec"]["runStrategy"] = json!("Halted");
    if let Some(spec) = updated.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("running");
    }
    Some(Action::Update {
        resource: VMS,
        object: updated,
    })
}

/// A migration that ended `Failed` whose VMI still says it is under way (the VMI's status write
/// of that reconcile lost a conflict): the VMI's `migrationState` gets `failed` and the end, so
/// that its VM may start it again ([`crate::vm::left_by_migration`] holds a VM back only while
/// the migration has not failed).
fn settle_vmi_state(vmim: &Value, vmi: Option<&Value>, phase: &str) -> Option<Action> {
    let vmi = vmi?;
    let state = vmi.pointer("/status/migrationState")?;
    if phase != phase::FAILED
        || state.get("migrationUid") != vmim.pointer("/metadata/uid")
        || state.get("failed").and_then(Value::as_bool) == Some(true)
    {
        return None;
    }
    let mut status = vmi.get("status").cloned().unwrap_or_else(|| json!({}));
    status["migrationState"]["failed"] = json!(true);
    if let Some(ended) = vmim.pointer("/status/migrationState/endTimestamp") {
        status["migrationState"]["endTimestamp"] = ended.clone();
    }
    if let Some(reason) = vmim.pointer("/status/migrationState/failureReason") {
        status["migrationState"]["failureReason"] = reason.clone();
    }
    update_status(vmi, VMIS, status)
}

/// Target, on success: the receiving VM runs with the run strategy it is to have from now on.
fn take_over(vm: &Value) -> Option<Action> {
    if vm.pointer("/spec/runStrategy").and_then(Value::as_str) != Some(WAIT_AS_RECEIVER) {
        return None;
    }
    let strategy = vm
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(RESTORE_RUN_STRATEGY))
        .and_then(Value::as_str)
        .unwrap_or("Always")
        .to_owned();
    let mut updated = vm.clone();
    updated["spec"]["runStrategy"] = json!(strategy);
    if let Some(annotations) = updated
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(RESTORE_RUN_STRATEGY);
    }
    Some(Action::Update {
        resource: VMS,
        object: updated,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NOW: &str = "2026-12-02T12:00:00Z";

    fn source_vmim() -> Value {
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
            "metadata": {"name": "out", "namespace": "default", "uid": "u-src"},
            "spec": {"vmiName": "vm", "sendTo": {"migrationID": "m1", "connectURL": "https://10.0.0.2:8443"}}})
    }

    fn target_vmim() -> Value {
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
            "metadata": {"name": "in", "namespace": "default", "uid": "u-dst"},
            "spec": {"vmiName": "vm", "receive": {"migrationID": "m1"}}})
    }

    fn running_vmi() -> Value {
        json!({"metadata": {"name": "vm", "namespace": "default", "uid": "vmi-1"},
            "spec": {}, "status": {"phase": "Running"}})
    }

    fn receiving_vmi() -> Value {
        json!({"metadata": {"name": "vm", "namespace": "default", "uid": "vmi-2",
                "annotations": {CREATE_MIGRATION_TARGET: "true"}},
            "spec": {}, "status": {"phase": "Pending"}})
    }

    fn world<'a>(vmi: Option<&'a Value>, job: Option<&'a MigrationJob>) -> MigrationWorld<'a> {
        MigrationWorld {
            vmi,
            vm: None,
            job,
            other_active: false,
            node: "host-a",
            now: NOW,
        }
    }

    fn status_of(plan: &MigrationPlan, kind: &str) -> Value {
        plan.actions
            .iter()
            .find_map(|a| match a {
                Action::UpdateStatus { resource, object } if resource.kind == kind => {
                    Some(object["status"].clone())
                }
                _ => None,
            })
            .unwrap()
    }

    fn events(plan: &MigrationPlan) -> Vec<(String, String)> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Event {
                    reason, message, ..
                } => Some((reason.clone(), message.clone())),
                _ => None,
            })
            .collect()
    }

    fn with_status(mut object: Value, status: Value) -> Value {
        object["status"] = status;
        object
    }

    #[test]
    fn a_vmi_gone_while_its_migration_runs_waits_for_the_job() {
        let vmim = with_status(source_vmim(), json!({"phase": "Running"}));
        let job = MigrationJob::Running {
            started: NOW.into(),
            progress: JobProgress::default(),
        };
        let plan = reconcile_migration(&vmim, &world(None, Some(&job)));
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
        assert!(plan.work.is_none());
        // Without a job it is the user's mistake, said as KubeVirt says it.
        let pending = with_status(source_vmim(), json!({"phase": "Pending"}));
        let plan = reconcile_migration(&pending, &world(None, None));
        assert!(status_of(&plan, "VirtualMachineInstanceMigration")["phase"] == "Failed");
    }

    #[test]
    fn a_failed_migration_marks_a_vmi_that_still_says_under_way() {
        let vmim = with_status(
            source_vmim(),
            json!({"phase": "Failed", "migrationState": {"endTimestamp": NOW, "failed": true,
                "failureReason": "QEMU ended"}}),
        );
        let mut vmi = running_vmi();
        vmi["status"] = json!({"phase": "Failed", "migrationState": {"migrationUid": "u-src",
            "targetNodeAddress": "https://10.0.0.2:8443", "startTimestamp": NOW}});
        assert!(crate::vm::left_by_migration(&vmi));
        let plan = reconcile_migration(&vmim, &world(Some(&vmi), None));
        let status = status_of(&plan, "VirtualMachineInstance");
        assert_eq!(status["migrationState"]["failed"], true);
        assert_eq!(status["migrationState"]["failureReason"], "QEMU ended");
        let mut settled = vmi.clone();
        settled["status"] = status;
        assert!(!crate::vm::left_by_migration(&settled));
        // Once marked (or for another migration's state, or a success): nothing more.
        assert!(
            reconcile_migration(&vmim, &world(Some(&settled), None))
                .actions
                .is_empty()
        );
        let succeeded = with_status(source_vmim(), json!({"phase": "Succeeded"}));
        assert!(
            reconcile_migration(&succeeded, &world(Some(&vmi), None))
                .actions
                .is_empty()
        );
    }

    #[test]
    fn roles() {
        assert!(matches!(Role::of(&source_vmim()), Role::Source { .. }));
        assert_eq!(
            Role::of(&target_vmim()),
            Role::Target {
                migration_id: "m1".into()
            }
        );
        assert_eq!(Role::of(&json!({"spec": {"vmiName": "x"}})), Role::Local);
    }

    #[test]
    fn a_new_source_synchronizes_and_asks_to_send() {
        let vmi = running_vmi();
        let plan = reconcile_migration(&source_vmim(), &world(Some(&vmi), None));
        let status = status_of(&plan, "VirtualMachineInstanceMigration");
        assert_eq!(status["phase"], "Synchronizing");
        assert_eq!(
            status["phaseTransitionTimestamps"],
            json!([{"phase": "Synchronizing", "phaseTransitionTimestamp": NOW}])
        );
        assert_eq!(
            plan.work,
            Some(MigrationWork::Send {
                vmi: vmi.clone(),
                migration_id: "m1".into(),
                connect_url: "https://10.0.0.2:8443".into()
            })
        );
    }

    #[test]
    fn a_new_target_waits_then_asks_to_receive() {
        let none = reconcile_migration(&target_vmim(), &world(None, None));
        assert_eq!(
            status_of(&none, "VirtualMachineInstanceMigration")["phase"],
            "WaitingForSync"
        );
        assert_eq!(none.work, None);
        let vmi = receiving_vmi();
        let plan = reconcile_migration(&target_vmim(), &world(Some(&vmi), None));
        assert!(matches!(plan.work, Some(MigrationWork::Receive { .. })));
    }

    #[test]
    fn a_migration_under_way_without_a_job_is_recovered_never_started_again() {
        // A restart of this server lost the job: the status said the migration was under way.
        let vmi = running_vmi();
        for phase in ["Scheduling", "TargetReady", "Running"] {
            let vmim = with_status(source_vmim(), json!({"phase": phase}));
            let plan = reconcile_migration(&vmim, &world(Some(&vmi), None));
            assert!(
                matches!(plan.work, Some(MigrationWork::RecoverSend { .. })),
                "{phase}: {:?}",
                plan.work
            );
            assert!(plan.actions.is_empty(), "{phase}: the status stays");
        }
        let receiver = receiving_vmi();
        for (phase, empty) in [
            ("PreparingTarget", false),
            ("TargetReady", true),
            ("Running", true),
        ] {
            let vmim = with_status(target_vmim(), json!({"phase": phase}));
            let plan = reconcile_migration(&vmim, &world(Some(&receiver), None));
            match plan.work {
                Some(MigrationWork::RecoverReceive {
                    volume_was_empty, ..
                }) => assert_eq!(volume_was_empty, empty, "{phase}"),
                other => panic!("{phase}: {other:?}"),
            }
        }
        // Not yet under way: a new send or receive as before.
        let vmim = with_status(source_vmim(), json!({"phase": "Synchronizing"}));
        let plan = reconcile_migration(&vmim, &world(Some(&vmi), None));
        assert!(matches!(plan.work, Some(MigrationWork::Send { .. })));
        let vmim = with_status(target_vmim(), json!({"phase": "WaitingForSync"}));
        let plan = reconcile_migration(&vmim, &world(Some(&receiver), None));
        assert!(matches!(plan.work, Some(MigrationWork::Receive { .. })));
        // With a job, nothing is recovered.
        let vmim = with_status(source_vmim(), json!({"phase": "Running"}));
        let job = MigrationJob::Running {
            started: NOW.into(),
            progress: JobProgress::default(),
        };
        let plan = reconcile_migration(&vmim, &world(Some(&vmi), Some(&job)));
        assert_eq!(plan.work, None);
    }

    #[test]
    fn a_target_vmi_that_is_no_receiver_fails() {
        let vmi = running_vmi();
        let plan = reconcile_migration(&target_vmim(), &world(Some(&vmi), None));
        assert_eq!(
            status_of(&plan, "VirtualMachineInstanceMigration")["phase"],
            "Failed"
        );
        let ev = events(&plan);
        assert_eq!(ev[0].0, "FailedMigration");
        assert!(ev[0].1.contains("runStrategy: WaitAsReceiver"), "{ev:?}");
        assert_eq!(plan.work, None);
    }

    #[test]
    fn a_source_vmi_not_running_or_busy_fails() {
        let mut stopped = running_vmi();
        stopped["status"]["phase"] = json!("Succeeded");
        let plan = reconcile_migration(&source_vmim(), &world(Some(&stopped), None));
        assert!(events(&plan)[0].1.contains("is not running"));
        let vmi = running_vmi();
        let mut busy = world(Some(&vmi), None);
        busy.other_active = true;
        let plan = reconcile_migration(&source_vmim(), &busy);
        assert_eq!(
            events(&plan)[0].1,
            "VMI is not eligible for migration because another migration job is in progress."
        );
    }

    #[test]
    fn the_source_follows_its_job_to_success() {
        let vmi = running_vmi();
        let preparing = MigrationJob::Preparing;
        let vmim = with_status(source_vmim(), json!({"phase": "Synchronizing"}));
        let plan = reconcile_migration(&vmim, &world(Some(&vmi), Some(&preparing)));
        assert_eq!(
            status_of(&plan, "VirtualMachineInstanceMigration")["phase"],
            "Scheduling"
        );
        assert_eq!(plan.work, None, "the work is asked for once");

        let running = MigrationJob::Running {
            started: "2026-12-02T12:00:01Z".into(),
            progress: JobProgress::default(),
        };
        let plan = reconcile_migration(&vmim, &world(Some(&vmi), Some(&running)));
        let vmi_status = status_of(&plan, "VirtualMachineInstance");
        assert_eq!(
            vmi_status["migrationState"]["startTimestamp"],
            "2026-12-02T12:00:01Z"
        );
        assert_eq!(vmi_status["migrationState"]["migrationUid"], "u-src");
        assert_eq!(vmi_status["migrationState"]["sourceNode"], "host-a");
        assert_eq!(vmi_status["migrationState"]["mode"], "PreCopy");

        let done = MigrationJob::Succeeded {
            started: "2026-12-02T12:00:01Z".into(),
            ended: "2026-12-02T12:00:09Z".into(),
            downtime_ms: Some(310),
            total_ms: 8000,
            switched_unix_ms: None,
            unconfirmed: None,
        };
        let vmim = with_status(source_vmim(), json!({"phase": "Running"}));
        let plan = reconcile_migration(&vmim, &world(Some(&vmi), Some(&done)));
        let status = status_of(&plan, "VirtualMachineInstanceMigration");
        assert_eq!(status["phase"], "Succeeded");
        assert_eq!(status["migrationState"]["completed"], true);
        let state = &status_of(&plan, "VirtualMachineInstance")["migrationState"];
        assert_eq!(state["endTimestamp"], "2026-12-02T12:00:09Z");
        assert_eq!(state["completed"], true);
        assert_eq!(
            events(&plan),
            vec![(
                "SuccessfulMigration".into(),
                "Source node reported migration succeeded (downtime 310 ms, total 8000 ms)".into()
            )]
        );
        // Final: nothing more.
        let finished = with_status(source_vmim(), status);
        assert_eq!(
            reconcile_migration(&finished, &world(Some(&vmi), Some(&done))),
            MigrationPlan::default()
        );
    }

    #[test]
    fn a_failed_job_fails_the_migration_with_its_reason() {
        let vmi = running_vmi();
        let failed = MigrationJob::Failed {
            started: Some("2026-12-02T12:00:01Z".into()),
            ended: "2026-12-02T12:00:05Z".into(),
            reason: "the memory migration failed (QEMU status failed): Unable to write to socket"
                .into(),
        };
        let vmim = with_status(source_vmim(), json!({"phase": "Running"}));
        let plan = reconcile_migration(&vmim, &world(Some(&vmi), Some(&failed)));
        assert_eq!(
            status_of(&plan, "VirtualMachineInstanceMigration")["phase"],
            "Failed"
        );
        let state = &status_of(&plan, "VirtualMachineInstance")["migrationState"];
        assert_eq!(state["failed"], true);
        assert!(
            state["failureReason"]
                .as_str()
                .unwrap()
                .contains("Unable to write")
        );
        assert_eq!(events(&plan)[0].0, "FailedMigration");
    }

    #[test]
    fn the_target_takes_the_vm_over_on_success() {
        let vmi = receiving_vmi();
        let vm = json!({"metadata": {"name": "vm", "namespace": "default",
                "annotations": {RESTORE_RUN_STRATEGY: "Always"}},
            "spec": {"runStrategy": "WaitAsReceiver"}});
        let done = MigrationJob::Succeeded {
            started: "s".into(),
            ended: "e".into(),
            downtime_ms: None,
            total_ms: 1,
            switched_unix_ms: None,
            unconfirmed: None,
        };
        let vmim = with_status(target_vmim(), json!({"phase": "Running"}));
        let mut w = world(Some(&vmi), Some(&done));
        w.vm = Some(&vm);
        let plan = reconcile_migration(&vmim, &w);
        let updated = plan
            .actions
            .iter()
            .find_map(|a| match a {
                Action::Update { object, .. } => Some(object.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(updated["spec"]["runStrategy"], "Always");
        assert!(
            updated["metadata"]["annotations"]
                .get(RESTORE_RUN_STRATEGY)
                .is_none()
        );
        assert_eq!(
            status_of(&plan, "VirtualMachineInstance")["migrationState"]["targetNode"],
            "host-a"
        );
    }

    #[test]
    fn the_source_retires_its_copy_on_a_confirmed_success() {
        let vmi = running_vmi();
        let vm = json!({"metadata": {"name": "vm", "namespace": "default"},
            "spec": {"runStrategy": "Always"}});
        let done = MigrationJob::Succeeded {
            started: "s".into(),
            ended: "e".into(),
            downtime_ms: Some(42),
            total_ms: 9000,
            switched_unix_ms: Some(1_700_000_000_123),
            unconfirmed: None,
        };
        let vmim = with_status(source_vmim(), json!({"phase": "Running"}));
        let mut w = world(Some(&vmi), Some(&done));
        w.vm = Some(&vm);
        let plan = reconcile_migration(&vmim, &w);
        // The VM is halted and marked with where it runs now (the VM reconciler deletes it once
        // its VMI is gone); the VMI and VM first, the migration's final status after.
        let updated = plan
            .actions
            .iter()
            .find_map(|a| match a {
                Action::Update { object, .. } => Some(object.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(updated["spec"]["runStrategy"], "Halted");
        assert_eq!(
            updated["metadata"]["annotations"][MIGRATED_TO],
            "https://10.0.0.2:8443"
        );
        let order: Vec<String> = plan
            .actions
            .iter()
            .map(|a| match a {
                Action::Update { resource, .. } => format!("update {}", resource.kind),
                Action::UpdateStatus { resource, .. } => format!("status {}", resource.kind),
                Action::Event { reason, .. } => format!("event {reason}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            order,
            vec![
                "status VirtualMachineInstance",
                "update VirtualMachine",
                "status VirtualMachineInstanceMigration",
                "event SuccessfulMigration",
            ]
        );
        let state = &status_of(&plan, "VirtualMachineInstanceMigration")["migrationState"];
        assert_eq!(state["downtimeMs"], 42);
        assert_eq!(state["totalMs"], 9000);
        assert_eq!(state["sourceStoppedUnixMs"], 1_700_000_000_123u64);
        // A VM being deleted, or marked already, is left as it is.
        let deleting = json!({"metadata": {"name": "vm", "deletionTimestamp": "t"}});
        assert_eq!(retire(&deleting, "https://b"), None);
        assert_eq!(retire(&updated, "https://b"), None);
    }

    #[test]
    fn an_unconfirmed_source_keeps_its_vm_halted_and_says_why() {
        let vmi = running_vmi();
        let vm = json!({"metadata": {"name": "vm", "namespace": "default"},
            "spec": {"runStrategy": "Always"}});
        let done = MigrationJob::Succeeded {
            started: "s".into(),
            ended: "e".into(),
            downtime_ms: Some(42),
            total_ms: 9000,
            switched_unix_ms: None,
            unconfirmed: Some("no answer within 60s".into()),
        };
        let vmim = with_status(source_vmim(), json!({"phase": "Running"}));
        let mut w = world(Some(&vmi), Some(&done));
        w.vm = Some(&vm);
        let plan = reconcile_migration(&vmim, &w);
        let updated = plan
            .actions
            .iter()
            .find_map(|a| match a {
                Action::Update { object, .. } => Some(object.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(updated["spec"]["runStrategy"], "Halted");
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::Delete { .. }))
        );
        let warning = plan
            .actions
            .iter()
            .find_map(|a| match a {
                Action::Event {
                    reason, message, ..
                } if reason == MIGRATION_NOT_CONFIRMED => Some(message.clone()),
                _ => None,
            })
            .unwrap();
        assert!(warning.contains("no answer within 60s"), "{warning}");
        assert!(warning.contains("start the VM here only if it does not run there"));
        // A halted VM is left as it is.
        let halted = json!({"metadata": {"name": "vm"}, "spec": {"runStrategy": "Halted"}});
        assert_eq!(hand_over(&halted), None);
    }

    #[test]
    fn a_running_migration_reports_its_progress() {
        let vmi = running_vmi();
        let running = MigrationJob::Running {
            started: "s".into(),
            progress: JobProgress {
                ram_remaining_bytes: 1000,
                dirty_rate_bytes_per_second: 4096,
                expected_downtime_ms: Some(30),
                disk_remaining_bytes: 0,
            },
        };
        let vmim = with_status(source_vmim(), json!({"phase": "TargetReady"}));
        let plan = reconcile_migration(&vmim, &world(Some(&vmi), Some(&running)));
        let state = &status_of(&plan, "VirtualMachineInstanceMigration")["migrationState"];
        assert_eq!(state["memoryRemainingBytes"], 1000);
        assert_eq!(state["dirtyRateBytesPerSecond"], 4096);
        assert_eq!(state["expectedDowntimeMs"], 30);
        assert_eq!(state["startTimestamp"], "s");
    }

    #[test]
    fn deleting_cancels_an_active_job_only() {
        let mut vmim = source_vmim();
        vmim["metadata"]["deletionTimestamp"] = json!(NOW);
        let vmi = running_vmi();
        let running = MigrationJob::TargetReady;
        assert_eq!(
            reconcile_migration(&vmim, &world(Some(&vmi), Some(&running))).work,
            Some(MigrationWork::Cancel)
        );
        assert_eq!(
            reconcile_migration(&vmim, &world(Some(&vmi), None)).work,
            None
        );
    }

    #[test]
    fn a_local_migration_is_refused_with_what_to_set() {
        let vmim =
            json!({"metadata": {"name": "x", "namespace": "default"}, "spec": {"vmiName": "vm"}});
        let vmi = running_vmi();
        let plan = reconcile_migration(&vmim, &world(Some(&vmi), None));
        assert!(events(&plan)[0].1.contains("spec.sendTo"));
    }
}
