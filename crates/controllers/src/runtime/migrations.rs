//! The executor of live migrations between two hosts: it does the [`MigrationWork`] the pure
//! migration reconciler asks for and reports it back as a [`MigrationJob`] (kept here until the
//! reconciler has written it, as the run table does for engine runs).
//!
//! - Target (`MigrationWork::Receive`): the receiving VMI's run is registered in the run table
//!   (so nothing else starts it), the engine starts it incoming
//!   (`Engine::start_incoming`: state prepared empty, QEMU paused on the sockets the API server's
//!   `migrationtunnel` connects to), waits for the source's state, records the first state
//!   generation and resumes it (`Engine::finish_incoming`); from then on the run is an ordinary
//!   run of this host (stop, console, snapshots). A failure kills the receiver and removes what
//!   it had received.
//! - Source (`MigrationWork::Send`): the destination's credentials from the kubeconfig Secret the
//!   migration names ([`DESTINATION_KUBECONFIG`]), the URL from `spec.sendTo.connectURL`; the
//!   tunnel is probed until the receiver listens, then `migration_relay` relays the running VM's
//!   `vmm::migration::send`, after the volume's files no QEMU stream carries (`meta/` without
//!   the key record, `swtpm-localca/`) went through the tunnel's `volume-files` channel. After
//!   the switch-over the source QEMU stays paused until the
//!   destination says its receiving VMI runs (libvirt's confirm step); then it quits and its run
//!   ends as `Migrated` (its stop records the state as usual: the source keeps its last
//!   generation), and the source's copy is retired (the VM deleted once its VMI is gone, its
//!   generations kept for the state retention). If the destination reports its receiver failed
//!   before its guest ran, the guest resumes here and the migration fails; a VMI that ended (or
//!   went) before the source read it running counts as confirmed when the destination's
//!   receiving VMIM says `Succeeded` (written after its guest resumed there); on anything else
//!   (no answer within a minute, a VMI that ended otherwise or is gone and no succeeded
//!   receiving VMIM) the source ends as after a success but keeps its VM, halted, with a
//!   `MigrationNotConfirmed` Warning (two running copies of one disk and TPM would be worse than
//!   a stopped VM whose state is kept).
//! - Before sending, a source VMIM marked `migration.ferrovirt.io/prepare-destination` has this
//!   server create the receiving VM and VMIM on the destination
//!   (`migration_relay::TunnelTarget::prepare_receiver`), as `ferrovirt migrate` and the web UI
//!   ask: ferrovirt is then the orchestrator KubeVirt's decentralized migration leaves open.
//!   On a failure before the switch-over `send` has cancelled everything and the guest runs on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use ferrovirt_auth::kubeconfig::{Credentials, Kubeconfig};
use serde_json::Value;
use tokio::sync::Notify;

use super::{Controller, RunKey, meta_str};
use crate::action::Key;
use crate::migration_reconciler::{JobProgress, MigrationJob, MigrationWork};
use crate::migration_relay::{self, RelayError, TunnelTarget};
use crate::world::RunOutcome;

/// ferrovirt's annotation on a source VirtualMachineInstanceMigration: the name of a Secret in
/// its namespace whose `kubeconfig` key holds a kubeconfig for the destination server (its CA
/// and a user allowed to open `virtualmachineinstances/migrationtunnel` there). KubeVirt has no
/// field for this (its decentralized migration trusts a network it set up). After the switch-over
/// the source reads the receiving VMI there (`get virtualmachineinstances`) to learn that its
/// guest runs before the source's copy ends.
pub use ferrovirt_resources::migration::{DESTINATION_KUBECONFIG, KUBECONFIG_KEY};

/// How long the source waits for the destination's receiver to listen.
const TARGET_READY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a receiver waits for the whole migration.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(3600);
/// The least time between two progress reports written to the status.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

struct Entry {
    job: MigrationJob,
    cancel: Arc<Notify>,
    reported: Option<Instant>,
}

/// The migration jobs of this host, by the VMIM's key.
#[derive(Default)]
pub struct MigrationTable {
    jobs: Mutex<HashMap<Key, Entry>>,
}

impl MigrationTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &Key) -> Option<MigrationJob> {
        self.lock().get(key).map(|e| e.job.clone())
    }

    /// Registers a new job (`None`: the key has one already).
    fn begin(&self, key: &Key) -> Option<Arc<Notify>> {
        let mut jobs = self.lock();
        if jobs.contains_key(key) {
            return None;
        }
        let cancel = Arc::new(Notify::new());
        jobs.insert(
            key.clone(),
            Entry {
                job: MigrationJob::Preparing,
                cancel: cancel.clone(),
                reported: None,
            },
        );
        Some(cancel)
    }

    fn set(&self, key: &Key, job: MigrationJob) {
        if let Some(entry) = self.lock().get_mut(key) {
            entry.job = job;
        }
    }

    /// Records a progress reading; `true` when it is time to write it to the status.
    fn progress(&self, key: &Key, progress: JobProgress) -> bool {
        let mut jobs = self.lock();
        let Some(entry) = jobs.get_mut(key) else {
            return false;
        };
        if let MigrationJob::Running { started, .. } = &entry.job {
            entry.job = MigrationJob::Running {
                started: started.clone(),
                progress,
            };
        }
        let due = entry.reported.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
        if due {
            entry.reported = Some(Instant::now());
        }
        due
    }

    /// Asks a running job to stop (the migration object is being deleted).
    pub fn cancel(&self, key: &Key) {
        if let Some(entry) = self.lock().get(key) {
            entry.cancel.notify_one();
        }
    }

    pub fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }
}

/// The destination's kubeconfig Secret a source migration names (its annotation).
pub fn kubeconfig_secret_name(vmim: &Value) -> Result<String, String> {
    vmim.pointer("/metadata/annotations")
        .and_then(|a| a.get(DESTINATION_KUBECONFIG))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "metadata.annotations[{DESTINATION_KUBECONFIG}]: the source migration names no Secret with a kubeconfig for the destination; create one (kubectl create secret generic NAME --from-file={KUBECONFIG_KEY}=DEST.kubeconfig) and name it in this annotation (ferrovirt migrate does both)"
            )
        })
}

/// The destination's credentials: the kubeconfig in the Secret's `kubeconfig` key (its current
/// context), reaching the server at `connect_url` (`spec.sendTo.connectURL`).
pub fn destination_credentials(
    secret: &str,
    values: &[(String, String)],
    connect_url: &str,
) -> Result<Credentials, String> {
    let text = values
        .iter()
        .find(|(k, _)| k == KUBECONFIG_KEY)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| {
            format!(
                "Secret {secret} (annotation {DESTINATION_KUBECONFIG}) has no key {KUBECONFIG_KEY:?} holding the destination's kubeconfig"
            )
        })?;
    let config = Kubeconfig::parse(text, &format!("Secret {secret} key {KUBECONFIG_KEY}"))
        .map_err(|e| e.to_string())?;
    let mut credentials = config
        .resolve(None)
        .map_err(|e| format!("Secret {secret} key {KUBECONFIG_KEY}: {e}"))?;
    credentials.server = connect_url.trim_end_matches('/').to_owned();
    Ok(credentials)
}

fn now() -> String {
    ferrovirt_store::format_rfc3339(ferrovirt_resources::time::now_unix())
}

fn unix_ms(t: SystemTime) -> Option<u64> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
}

fn failed(started: Option<String>, reason: String) -> MigrationJob {
    MigrationJob::Failed {
        started,
        ended: now(),
        reason,
    }
}

impl Controller {
    /// Starts the work a migration's reconcile asked for (runs on the reconcile's thread; the
    /// long part runs as a task of its own and reports through the migration table).
    pub(super) fn start_migration_work(self: &Arc<Self>, key: &Key, work: MigrationWork) {
        match work {
            MigrationWork::Cancel => self.migrations.cancel(key),
            MigrationWork::Receive { vmi, migration_id } => {
                self.begin_receive(key, vmi, &migration_id)
            }
            MigrationWork::Send {
                vmi,
                migration_id,
                connect_url,
            } => self.begin_send(key, vmi, migration_id, connect_url),
            MigrationWork::RecoverSend {
                vmi,
                migration_id,
                connect_url,
            } => self.begin_recover_send(key, vmi, migration_id, connect_url),
            MigrationWork::RecoverReceive {
                vmi,
                migration_id,
                volume_was_empty,
            } => self.begin_recover_receive(key, vmi, &migration_id, volume_was_empty),
        }
    }

    /// A receiver's job and run, registered once its plan is known: `None` when the backend
    /// storage is not bound yet (looked at again shortly), the job exists already, or it failed
    /// (the VMI `taken` a run on this host, or no plan), which the job then reports.
    fn register_receiver(
        self: &Arc<Self>,
        key: &Key,
        vmi: &Value,
        taken: &str,
    ) -> Option<(Arc<Notify>, RunKey, ferrovirt_vmm::engine::VmPlan)> {
        let plan = match self.plan_for(vmi) {
            Ok(Some(plan)) => plan,
            // The backend storage is not bound yet: looked at again shortly.
            Ok(None) => {
                self.enqueue_after(key.clone(), Duration::from_millis(500));
                return None;
            }
            Err(message) => {
                if self.migrations.begin(key).is_some() {
                    self.migrations.set(key, failed(None, message));
                    self.enqueue(key.clone());
                }
                return None;
            }
        };
        let cancel = self.migrations.begin(key)?;
        let run_key: RunKey = (
            meta_str(vmi, "namespace").to_owned(),
            meta_str(vmi, "name").to_owned(),
        );
        if !self.runs.begin(
            run_key.clone(),
            meta_str(vmi, "uid"),
            plan.state_volume.clone(),
        ) {
            self.migrations.set(
                key,
                failed(
                    None,
                    format!("VirtualMachineInstance {} {taken} on this host", run_key.1),
                ),
            );
            self.enqueue(key.clone());
            return None;
        }
        Some((cancel, run_key, plan))
    }

    fn begin_receive(self: &Arc<Self>, key: &Key, vmi: Value, migration_id: &str) {
        let Some((cancel, run_key, plan)) = self.register_receiver(key, &vmi, "already runs")
        else {
            return;
        };
        let me = self.clone();
        let key = key.clone();
        let note = format!("migrated in (migration {migration_id})");
        self.runtime.spawn(async move {
            me.receive(key, run_key, plan, note, cancel).await;
        });
    }

    async fn receive(
        self: Arc<Self>,
        key: Key,
        run_key: RunKey,
        plan: ferrovirt_vmm::engine::VmPlan,
        note: String,
        cancel: Arc<Notify>,
    ) {
        let vm_key = Key::vm(&run_key.0, &run_key.1);
        let mut running = match self.engine.start_incoming(plan).await {
            Ok(running) => running,
            Err(error) => {
                let message = format!("the receiving VM could not be started: {error}");
                self.runs.ended(
                    &run_key,
                    RunOutcome::failed("FailedMigration", message.clone()),
                );
                self.migrations.set(&key, failed(None, message));
                self.enqueue(key);
                return self.enqueue(vm_key);
            }
        };
        self.migrations.set(&key, MigrationJob::TargetReady);
        self.enqueue(key.clone());
        let clock = Instant::now();
        let started: Mutex<Option<String>> = Mutex::new(None);
        let on_status = |status: &str| {
            let mut started = started.lock().unwrap_or_else(|e| e.into_inner());
            if started.is_none() && matches!(status, "active" | "completed") {
                let now = now();
                *started = Some(now.clone());
                self.migrations.set(
                    &key,
                    MigrationJob::Running {
                        started: now,
                        progress: JobProgress::default(),
                    },
                );
                self.enqueue(key.clone());
            }
        };
        let finished = tokio::select! {
            finished = self.engine.finish_incoming(&mut running, RECEIVE_TIMEOUT, on_status, &note) => {
                finished.map_err(|e| e.to_string())
            }
            () = cancel.notified() => Err("the migration was cancelled (its VirtualMachineInstanceMigration was deleted)".to_owned()),
        };
        let started = started.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match finished {
            Ok(arrival) => {
                tracing::info!(vm = %run_key.1, generation = ?arrival.generation.map(|g| g.0), "received a live migration; the VM runs here");
                let running = Arc::new(running);
                self.runs.running(&run_key, running.clone(), false, None);
                self.migrations.set(
                    &key,
                    MigrationJob::Succeeded {
                        started: started.unwrap_or_else(now),
                        ended: now(),
                        downtime_ms: None,
                        total_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
                        switched_unix_ms: unix_ms(arrival.resumed),
                        unconfirmed: None,
                    },
                );
                self.enqueue(key);
                self.enqueue(vm_key);
                self.follow_running(run_key, running).await;
            }
            Err(reason) => {
                tracing::warn!(vm = %run_key.1, %reason, "receiving a live migration failed");
                self.engine.abort_incoming(&running).await;
                let message = format!("receiving the migration failed: {reason}");
                self.runs.ended(
                    &run_key,
                    RunOutcome::failed("FailedMigration", message.clone()),
                );
                self.migrations.set(&key, failed(started, message));
                self.enqueue(key);
                self.enqueue(vm_key);
            }
        }
    }

    fn begin_send(
        self: &Arc<Self>,
        key: &Key,
        vmi: Value,
        migration_id: String,
        connect_url: String,
    ) {
        let vmi_key: RunKey = (
            meta_str(&vmi, "namespace").to_owned(),
            meta_str(&vmi, "name").to_owned(),
        );
        if self.run_not_adopted_yet(&vmi_key) {
            // Right after a restart of this server the VMI reconciler has not adopted the VM's
            // run yet (a crash before this migration's status left `Synchronizing`): looked at
            // again shortly, instead of failing a migration whose destination already waits.
            return self.enqueue_after(key.clone(), Duration::from_millis(500));
        }
        let Some(cancel) = self.migrations.begin(key) else {
            return;
        };
        let ns = meta_str(&vmi, "namespace").to_owned();
        let credentials = self.destination_of(key, &ns, &connect_url);
        let credentials = match credentials {
            Ok(c) => c,
            Err(message) => {
                self.migrations.set(key, failed(None, message));
                return self.enqueue(key.clone());
            }
        };
        let target = TunnelTarget {
            credentials,
            namespace: ns.clone(),
            vmi: meta_str(&vmi, "name").to_owned(),
            migration_id: migration_id.clone(),
        };
        let run_key: RunKey = (ns, meta_str(&vmi, "name").to_owned());
        // The source VM, when this migration asks this server to create the destination's
        // receiving VM and VMIM too.
        let prepare = match key {
            Key::Migration { name, .. } => self
                .informers
                .vmims
                .get(Some(&run_key.0), name)
                .filter(|vmim| ferrovirt_resources::migration::prepares_destination(vmim))
                .and_then(|_| self.informers.vms.get(Some(&run_key.0), &run_key.1))
                .map(|vm| (*vm).clone()),
            _ => None,
        };
        let me = self.clone();
        let key = key.clone();
        self.enqueue(key.clone());
        self.runtime.spawn(async move {
            me.send(key, run_key, target, connect_url, prepare, cancel)
                .await;
        });
    }

    /// The VMI's run is neither running nor ended in the run table: after a restart of this
    /// server, the VMI reconciler has not adopted it yet.
    fn run_not_adopted_yet(&self, run_key: &RunKey) -> bool {
        self.runs.running_vm(run_key).is_none()
            && !matches!(
                self.runs.view(run_key).map(|v| v.phase),
                Some(crate::world::RunPhase::Ended(_))
            )
    }

    /// The credentials for the destination (through the client: runs on the reconcile's thread).
    fn destination_of(
        &self,
        key: &Key,
        ns: &str,
        connect_url: &str,
    ) -> Result<Credentials, String> {
        let Key::Migration { name, .. } = key else {
            return Err("not a migration".into());
        };
        let vmim = self
            .informers
            .vmims
            .get(Some(ns), name)
            .ok_or_else(|| format!("VirtualMachineInstanceMigration {ns}/{name} is gone"))?;
        let secret = kubeconfig_secret_name(&vmim)?;
        let field = format!("metadata.annotations[{DESTINATION_KUBECONFIG}]");
        let values = crate::import_sources::secret_values(&*self.client, ns, &secret, &field)?;
        destination_credentials(&secret, &values, connect_url)
    }

    async fn send(
        self: Arc<Self>,
        key: Key,
        run_key: RunKey,
        target: TunnelTarget,
        connect_url: String,
        prepare: Option<Value>,
        cancel: Arc<Notify>,
    ) {
        let vm_key = Key::vm(&run_key.0, &run_key.1);
        let outcome = self
            .send_inner(&key, &run_key, &target, &connect_url, prepare, &cancel)
            .await;
        match outcome {
            Ok(job) => self.migrations.set(&key, job),
            Err((started, reason)) => {
                // Only a receiver that said it was ready can be waiting for a stream.
                let receiver_ready = matches!(
                    self.migrations.get(&key),
                    Some(MigrationJob::TargetReady | MigrationJob::Running { .. })
                );
                let job = self
                    .settle_failed_send(
                        &run_key,
                        &target,
                        &connect_url,
                        receiver_ready,
                        started,
                        reason,
                    )
                    .await;
                self.migrations.set(&key, job);
            }
        }
        self.enqueue(key);
        self.enqueue(vm_key);
    }

    /// A send that failed before its switch-over (`migration::send` rolls back by itself when
    /// its QEMU lives). The destination's receiver may still wait for its stream: a memory
    /// channel that closes at once ends it (and changes nothing for a receiver that ended, or
    /// that has the whole stream: its QEMU no longer listens). If the source's QEMU is gone (it
    /// died during the migration), whether the switch-over happened is not known here once the
    /// streams had begun: the destination is asked, as after a switch-over, and only its word
    /// decides (its guest runs: the migration succeeded; never a second copy started here).
    async fn settle_failed_send(
        &self,
        run_key: &RunKey,
        target: &TunnelTarget,
        connect_url: &str,
        receiver_ready: bool,
        started: Option<String>,
        reason: String,
    ) -> MigrationJob {
        if receiver_ready {
            match tokio::time::timeout(Duration::from_secs(10), target.dial("memory")).await {
                Ok(Ok(_)) => {
                    tracing::info!(vm = %run_key.1, "ended the destination's receiver, which still waited for the stream")
                }
                Ok(Err(e)) => {
                    tracing::debug!(vm = %run_key.1, error = %e, "the destination's receiver no longer takes a stream")
                }
                Err(_) => {
                    tracing::info!(vm = %run_key.1, "the destination did not answer the request to end its receiver within 10 s")
                }
            }
        }
        let source_alive = match self.runs.running_vm(run_key) {
            Some(running) => {
                running.handle.try_exited().is_none()
                    && ferrovirt_vmm::migration::status(&running.handle)
                        .await
                        .is_ok()
            }
            None => false,
        };
        if source_alive {
            tracing::warn!(vm = %run_key.1, %reason, "live migration failed; the VM keeps running here");
            return failed(
                started,
                format!("{reason}; the VM keeps running on this host"),
            );
        }
        if started.is_none() {
            // Before the streams: the destination cannot have the guest.
            tracing::warn!(vm = %run_key.1, %reason, "live migration failed and the source QEMU has ended");
            return failed(
                None,
                format!(
                    "{reason}; the source QEMU ended during the migration, before anything was sent: the VM runs on neither host and starts again here as its run strategy says (its state was recorded as it ended)"
                ),
            );
        }
        tracing::warn!(vm = %run_key.1, %reason, "the source QEMU ended during the migration; asking the destination whether its guest runs");
        let started = started.unwrap_or_else(now);
        match confirm_destination(target).await {
            Confirmation::Running => Switched::unmeasured().succeeded(started, None),
            Confirmation::Failed(destination) => failed(
                Some(started),
                format!(
                    "{reason}; the source QEMU ended during the migration and the destination did not run the VM ({destination}): it runs on neither host and starts again here as its run strategy says (its state was recorded as it ended)"
                ),
            ),
            Confirmation::Unknown(detail) => {
                tracing::warn!(vm = %run_key.1, %detail, "the source QEMU ended during the migration and the destination did not say whether its guest runs");
                Switched::unmeasured().succeeded(
                    started,
                    Some(format!(
                        "the source QEMU ended during the migration to {connect_url} and the destination did not say whether its guest runs: {detail}"
                    )),
                )
            }
        }
    }

    async fn send_inner(
        &self,
        key: &Key,
        run_key: &RunKey,
        target: &TunnelTarget,
        connect_url: &str,
        prepare: Option<Value>,
        cancel: &Notify,
    ) -> Result<MigrationJob, (Option<String>, String)> {
        let running = self.runs.running_vm(run_key).ok_or_else(|| {
            (
                None,
                format!(
                    "VirtualMachineInstance {} is not running on this host (or is stopping)",
                    run_key.1
                ),
            )
        })?;
        if let Some(source_vm) = prepare {
            let prepared = tokio::select! {
                prepared = target.prepare_receiver(&source_vm) => prepared,
                () = cancel.notified() => return Err((None, "the migration was cancelled".into())),
            };
            let done = prepared.map_err(|e| {
                let hint = match e {
                    RelayError::Refused { code: 401 | 403, .. } => {
                        " (the kubeconfig's user needs `create` on virtualmachines and virtualmachineinstancemigrations there)"
                    }
                    _ => "",
                };
                (None, format!("{e}{hint}"))
            })?;
            tracing::info!(vm = %run_key.1, %done, "prepared the destination");
        }
        // The destination answers once its receiver listens (503 before; 404 until its
        // migration object exists); credentials it refuses end the wait at once.
        let deadline = Instant::now() + TARGET_READY_TIMEOUT;
        loop {
            let probed = tokio::select! {
                probed = migration_relay::probe(target) => probed,
                () = cancel.notified() => return Err((None, "the migration was cancelled".into())),
            };
            match probed {
                Ok(()) => break,
                Err(RelayError::Refused { code, body, .. }) if code == 401 || code == 403 => {
                    return Err((
                        None,
                        format!(
                            "the destination {connect_url} refused the credentials of the kubeconfig Secret ({code}): {body}"
                        ),
                    ));
                }
                Err(RelayError::Refused {
                    code: 410, body, ..
                }) => {
                    return Err((
                        None,
                        format!(
                            "the destination {connect_url} has ended its side of migration {}: {body}",
                            target.migration_id
                        ),
                    ));
                }
                Err(RelayError::BadUrl { url }) => {
                    return Err((
                        None,
                        format!(
                            "spec.sendTo.connectURL: {url:?} is not an https:// URL of the destination server"
                        ),
                    ));
                }
                Err(e) if Instant::now() > deadline => {
                    return Err((
                        None,
                        format!(
                            "the destination's receiver was not ready within {TARGET_READY_TIMEOUT:?}: {e}"
                        ),
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        self.migrations.set(key, MigrationJob::TargetReady);
        self.enqueue(key.clone());
        fault_point("migration.send.after-target-ready").map_err(|e| (None, e))?;
        // The volume's files no QEMU stream carries (the local CA, meta/) go first: the
        // destination installs them when the migration arrives.
        let packed = tokio::task::block_in_place(|| {
            ferrovirt_vmm::engine::Engine::pack_volume_files(&running.plan)
        })
        .map_err(|e| (None, e.to_string()))?;
        if let Some(packed) = packed {
            let staged = target
                .send_volume_files(&packed)
                .await
                .map_err(|e| (None, e.to_string()))?;
            tracing::info!(vm = %run_key.1, files = staged, bytes = packed.len(), "sent the volume's meta/ and swtpm-localca/ to the destination");
        }
        let runtime_dir = self.engine.runtime_path(&running.plan.uuid);
        let relay = migration_relay::listen(target.clone(), &runtime_dir)
            .map_err(|e| (None, e.to_string()))?;
        let started = now();
        self.migrations.set(
            key,
            MigrationJob::Running {
                started: started.clone(),
                progress: JobProgress::default(),
            },
        );
        self.enqueue(key.clone());
        let clock = Instant::now();
        let progress = |p: &ferrovirt_vmm::migration::MigrationProgress| {
            let reading = JobProgress {
                ram_remaining_bytes: p.ram_remaining_bytes,
                dirty_rate_bytes_per_second: p.dirty_rate_bytes_per_second,
                expected_downtime_ms: p.expected_downtime_ms,
                disk_remaining_bytes: p.disk_remaining_bytes,
            };
            if self.migrations.progress(key, reading) {
                self.enqueue(key.clone());
            }
        };
        let sent = {
            let sending = ferrovirt_vmm::migration::send(&running.handle, &relay.sockets, progress);
            tokio::pin!(sending);
            tokio::select! {
                sent = &mut sending => sent,
                () = cancel.notified() => {
                    // `send` sees the cancelled migration or mirrors and rolls back by itself (or
                    // had completed already: then the guest runs on the destination, as any success).
                    tracing::info!(vm = %run_key.1, "cancelling the migration (its object is being deleted)");
                    ferrovirt_vmm::migration::cancel(&running.handle).await;
                    sending.await
                }
            }
        };
        drop(relay);
        let sent = sent.map_err(|e| (Some(started.clone()), e.to_string()))?;
        // Only a crash means anything after the switch-over (an injected error would end the
        // migration as failed while the destination may run the guest).
        let _ = fault_point("migration.send.after-switchover");
        tracing::info!(vm = %run_key.1, total_ms = sent.total_ms, mirror_ms = sent.mirror_ms, qemu_downtime_ms = ?sent.qemu_downtime_ms, "live migration sent; confirming with the destination");
        let measured = Switched {
            downtime_ms: sent.qemu_downtime_ms,
            total_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
            switched_unix_ms: sent.source_stopped_at.and_then(unix_ms),
        };
        Ok(self
            .settle_switched_over(run_key, &running, target, connect_url, started, measured)
            .await)
    }

    /// Source, after the switch-over (the source QEMU paused in `postmigrate` with the whole
    /// state sent): it ends only once the destination says its guest runs (libvirt's confirm
    /// step); a destination whose receiver failed before its guest ran gets the guest back here;
    /// on anything else the source ends as after a success (never two running copies).
    async fn settle_switched_over(
        &self,
        run_key: &RunKey,
        running: &ferrovirt_vmm::engine::RunningVm,
        target: &TunnelTarget,
        connect_url: &str,
        started: String,
        measured: Switched,
    ) -> MigrationJob {
        let mut unconfirmed = None;
        match confirm_destination(target).await {
            Confirmation::Running => {
                let _ = fault_point("migration.send.after-confirm");
            }
            Confirmation::Failed(reason) => {
                tracing::warn!(vm = %run_key.1, %reason, "the destination did not run the migrated VM; resuming it here");
                let message = match ferrovirt_vmm::migration::resume_source(&running.handle).await {
                    Ok(()) => format!(
                        "the destination did not run the VM after the switch-over ({reason}): it was resumed and keeps running on this host"
                    ),
                    Err(e) => format!(
                        "the destination did not run the VM after the switch-over ({reason}) and it could not be resumed on this host ({e}): it is paused here; stop and start it (its state is intact)"
                    ),
                };
                return failed(Some(started), message);
            }
            Confirmation::Unknown(detail) => {
                // Two running copies of one disk and one TPM would be worse than a stopped VM
                // whose state is kept (the source records a generation as it stops).
                tracing::warn!(vm = %run_key.1, %detail, "the destination did not confirm that the migrated VM runs; the source ends as after a success");
                unconfirmed = Some(detail);
            }
        }
        // The guest runs on the destination now: the source QEMU (paused) ends, and its run
        // ends as migrated (its stop records the state as every stop does).
        self.runs.mark_migrated(
            run_key,
            format!(
                "The VirtualMachineInstance migrated to {connect_url} (migration {}).",
                target.migration_id
            ),
        );
        if let Err(e) = running.handle.qmp().quit().await {
            tracing::warn!(vm = %run_key.1, error = %e, "the source QEMU did not take quit after the migration; it is stopped");
            let _ = running.handle.stop(Duration::from_secs(5)).await;
        }
        measured.succeeded(started, unconfirmed)
    }

    /// Source, [`MigrationWork::RecoverSend`]: registers the job once the VM's run has been
    /// adopted after the restart (looked at again until then), then settles it.
    fn begin_recover_send(
        self: &Arc<Self>,
        key: &Key,
        vmi: Value,
        migration_id: String,
        connect_url: String,
    ) {
        let ns = meta_str(&vmi, "namespace").to_owned();
        let run_key: RunKey = (ns.clone(), meta_str(&vmi, "name").to_owned());
        if self.run_not_adopted_yet(&run_key) {
            // The VMI reconciler adopts the run after the restart: looked at again shortly.
            return self.enqueue_after(key.clone(), Duration::from_millis(500));
        }
        let Some(_cancel) = self.migrations.begin(key) else {
            return;
        };
        let credentials = match self.destination_of(key, &ns, &connect_url) {
            Ok(c) => c,
            Err(message) => {
                self.migrations.set(key, failed(None, message));
                return self.enqueue(key.clone());
            }
        };
        let target = TunnelTarget {
            credentials,
            namespace: ns,
            vmi: run_key.1.clone(),
            migration_id,
        };
        let me = self.clone();
        let key = key.clone();
        self.runtime.spawn(async move {
            let job = me.recover_send(&key, &run_key, &target, &connect_url).await;
            me.migrations.set(&key, job);
            me.enqueue(key);
            me.enqueue(Key::vm(&run_key.0, &run_key.1));
        });
    }

    /// Source, after a restart in the middle of a migration: what the source QEMU says decides.
    /// Switched over (`completed`): the destination has the whole state; it is confirmed there
    /// as [`Self::send_inner`] does. Otherwise the restart cut the stream before the switch-over:
    /// what is left is cancelled, the guest resumed here, and the destination's receiver (which
    /// may still wait for a stream) is told by a memory channel that closes at once.
    async fn recover_send(
        &self,
        key: &Key,
        run_key: &RunKey,
        target: &TunnelTarget,
        connect_url: &str,
    ) -> MigrationJob {
        let restarted = "ferrovirt serve restarted in the middle of the migration";
        let Some(running) = self.runs.running_vm(run_key) else {
            return failed(
                None,
                format!(
                    "{restarted}, and VirtualMachineInstance {} no longer runs on this host",
                    run_key.1
                ),
            );
        };
        let status = match ferrovirt_vmm::migration::status(&running.handle).await {
            Ok(status) => status,
            Err(e) => {
                return failed(
                    None,
                    format!(
                        "{restarted}, and the source QEMU cannot say how far it got ({e}); the VM is left as it is on this host: stop and start it (its state is intact)"
                    ),
                );
            }
        };
        tracing::warn!(vm = %run_key.1, %status, "settling a migration interrupted by a restart of this server");
        if ferrovirt_vmm::migration::switched_over(&status) {
            self.migrations.set(
                key,
                MigrationJob::Running {
                    started: now(),
                    progress: JobProgress::default(),
                },
            );
            let measured = Switched::unmeasured();
            return self
                .settle_switched_over(run_key, &running, target, connect_url, now(), measured)
                .await;
        }
        let resumed = ferrovirt_vmm::migration::abandon(&running.handle).await;
        if let Err(e) = target.dial("memory").await.map(drop) {
            tracing::info!(vm = %run_key.1, error = %e, "could not reach the destination's receiver to end it (it may have ended already)");
        }
        match resumed {
            Ok(()) => failed(
                None,
                format!(
                    "{restarted}, before the switch-over (QEMU's migration status {status:?}): the migration was cancelled and the VM keeps running on this host"
                ),
            ),
            Err(e) => failed(
                None,
                format!(
                    "{restarted}, before the switch-over (QEMU's migration status {status:?}): the migration was cancelled but the VM could not be resumed on this host ({e}): it is paused here; stop and start it (its state is intact)"
                ),
            ),
        }
    }

    /// Target, [`MigrationWork::RecoverReceive`]: registers the job and the run, then settles
    /// the receive a restart interrupted.
    fn begin_recover_receive(
        self: &Arc<Self>,
        key: &Key,
        vmi: Value,
        migration_id: &str,
        volume_was_empty: bool,
    ) {
        let Some((_cancel, run_key, plan)) = self.register_receiver(key, &vmi, "already has a run")
        else {
            return;
        };
        let me = self.clone();
        let key = key.clone();
        let note = format!("migrated in (migration {migration_id})");
        self.runtime.spawn(async move {
            me.recover_receive(key, run_key, plan, note, volume_was_empty)
                .await;
        });
    }

    /// Target, after a restart in the middle of a receive: a receiver whose guest had resumed
    /// (its run recorded) is adopted and the migration succeeded; any other never ran its guest,
    /// so it is ended, what it received removed, and the VMI fails with `FailedMigration` (which
    /// tells the source, if it still waits for the confirmation, to resume the guest).
    async fn recover_receive(
        self: Arc<Self>,
        key: Key,
        run_key: RunKey,
        plan: ferrovirt_vmm::engine::VmPlan,
        note: String,
        volume_was_empty: bool,
    ) {
        let vm_key = Key::vm(&run_key.0, &run_key.1);
        if self.engine.incoming_was_resumed(&plan) {
            match self.engine.adopt(plan).await {
                Ok(running) => {
                    tracing::info!(vm = %run_key.1, "adopted a received VM whose migration a restart interrupted after its guest resumed");
                    let running = Arc::new(running);
                    self.runs.running(&run_key, running.clone(), true, None);
                    self.migrations
                        .set(&key, Switched::unmeasured().succeeded(now(), None));
                    self.enqueue(key);
                    self.enqueue(vm_key);
                    return self.follow_running(run_key, running).await;
                }
                Err(error) => {
                    // Its guest ran here and ended while no manager followed it (its stop was
                    // finished by the adoption: the state is recorded here). Not
                    // `FailedMigration`: the source must not resume a guest that ran here.
                    let message = format!(
                        "ferrovirt serve restarted after the received VM had resumed, and it no longer runs ({error}); its state is recorded on this host: start the VM here"
                    );
                    self.runs.ended(
                        &run_key,
                        RunOutcome::failed("MigrationInterrupted", message.clone()),
                    );
                    self.migrations.set(&key, failed(None, message));
                    self.enqueue(key);
                    return self.enqueue(vm_key);
                }
            }
        }
        self.engine
            .abort_interrupted_incoming(&plan, &note, volume_was_empty)
            .await;
        let message = "receiving the migration failed: ferrovirt serve restarted before the received VM resumed; what had arrived was removed, the VM stays on the source".to_owned();
        tracing::warn!(vm = %run_key.1, "{message}");
        self.runs.ended(
            &run_key,
            RunOutcome::failed("FailedMigration", message.clone()),
        );
        self.migrations.set(&key, failed(None, message));
        self.enqueue(key);
        self.enqueue(vm_key);
    }

    /// The world of one migration's reconcile.
    pub(super) fn reconcile_migration_key(
        self: &Arc<Self>,
        key: &Key,
        ns: &str,
        name: &str,
    ) -> Result<Vec<crate::action::Action>, super::ReconcileError> {
        let Some(vmim) = self.informers.vmims.get(Some(ns), name) else {
            // Deleted (a VMIM has no finalizer, so it is gone at once): a job still under way
            // is cancelled (the VM stays where it ran).
            self.migrations.cancel(key);
            self.migrations.forget(key);
            return Ok(Vec::new());
        };
        let vmi_name = vmim
            .pointer("/spec/vmiName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let vmi = self.informers.vmis.get(Some(ns), vmi_name);
        let vm = self.informers.vms.get(Some(ns), vmi_name);
        let job = self.migrations.get(key);
        let created = |o: &Value| {
            (
                o.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                meta_str(o, "name").to_owned(),
            )
        };
        let mine = created(&vmim);
        let other_active = self
            .informers
            .vmims
            .list(Some(ns), &[])
            .iter()
            .any(|other| {
                meta_str(other, "name") != name
                    && other.pointer("/spec/vmiName").and_then(Value::as_str) == Some(vmi_name)
                    && !matches!(
                        other.pointer("/status/phase").and_then(Value::as_str),
                        Some("Succeeded" | "Failed")
                    )
                    && created(other) < mine
            });
        let now = now();
        let world = crate::migration_reconciler::MigrationWorld {
            vmi: vmi.as_deref(),
            vm: vm.as_deref(),
            job: job.as_ref(),
            other_active,
            node: &self.node_name,
            now: &now,
        };
        let plan = crate::migration_reconciler::reconcile_migration(&vmim, &world);
        if let Some(work) = plan.work {
            self.start_migration_work(key, work);
        }
        Ok(plan.actions)
    }

    /// The migrations about the VMI `ns/name` (it appeared, changed or went).
    pub(super) fn enqueue_migrations_of(&self, ns: &str, name: &str) {
        for vmim in self.informers.vmims.list(Some(ns), &[]) {
            if vmim.pointer("/spec/vmiName").and_then(Value::as_str) == Some(name) {
                self.enqueue(Key::migration(ns, meta_str(&vmim, "name")));
            }
        }
    }
}

/// What a send measured of its switch-over (none after a restart).
struct Switched {
    downtime_ms: Option<u64>,
    total_ms: u64,
    switched_unix_ms: Option<u64>,
}

impl Switched {
    /// A switch-over this server did not watch (a restart, or a source QEMU that ended).
    fn unmeasured() -> Self {
        Self {
            downtime_ms: None,
            total_ms: 0,
            switched_unix_ms: None,
        }
    }

    /// The migration's job once the guest runs on the destination (`unconfirmed`: why the
    /// destination's word is missing).
    fn succeeded(self, started: String, unconfirmed: Option<String>) -> MigrationJob {
        MigrationJob::Succeeded {
            started,
            ended: now(),
            downtime_ms: self.downtime_ms,
            total_ms: self.total_ms,
            switched_unix_ms: self.switched_unix_ms,
            unconfirmed,
        }
    }
}

/// Reaches the fault point `name` (`storage::failpoints`; nothing without the feature).
fn fault_point(name: &str) -> Result<(), String> {
    ferrovirt_storage::failpoints::hit(name).map_err(|e| format!("fault point {name}: {e}"))
}

/// What the destination says of the receiving VMI after the source's switch-over.
#[derive(Debug, PartialEq, Eq)]
enum Confirmation {
    /// Its guest runs there.
    Running,
    /// Its receiver failed before its guest ran (the VMI `Failed` with the executor's reason
    /// `FailedMigration`): only then may the source's guest run again.
    Failed(String),
    /// Anything else: no answer within [`CONFIRM_TIMEOUT`], or a VMI that ended otherwise or is
    /// gone (its guest may have run there: resuming the source would fork the disks and TPM).
    Unknown(String),
}

/// How long the source waits for the destination to say its guest runs.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one reading of the destination may take.
const CONFIRM_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What one reading of the receiving VMI (phase, reason; `None`: no such VMI) means (`None`:
/// this reading decides nothing yet).
fn confirmation_of(vmi: Option<(&str, &str)>) -> Option<Confirmation> {
    match vmi {
        Some(("Running", _)) => Some(Confirmation::Running),
        Some(("Failed", "FailedMigration")) => Some(Confirmation::Failed(
            "its VirtualMachineInstance failed to receive it".into(),
        )),
        Some((phase @ ("Failed" | "Succeeded"), reason)) => Some(Confirmation::Unknown(format!(
            "its VirtualMachineInstance ended {phase} ({reason:?}) without saying it ran"
        ))),
        None => Some(Confirmation::Unknown(
            "its VirtualMachineInstance is gone".into(),
        )),
        Some(_) => None,
    }
}

/// What the destination's receiving VMIM (its phase; `None`: there is none) says once its VMI
/// ended without the source having read it run (`ended`, an [`Confirmation::Unknown`]): its
/// `Succeeded` is written only after the destination resumed the guest, so the guest ran there
/// (and its VM runs it again by its run strategy); `None`: nothing decided yet (its job has not
/// reported).
fn confirmation_by_receiving_migration(
    ended: Confirmation,
    receiving: Option<&str>,
) -> Option<Confirmation> {
    match receiving {
        Some("Succeeded") => Some(Confirmation::Running),
        Some("Failed") | None => Some(ended),
        Some(_) => None,
    }
}

/// Polls the destination's receiving VMI until it runs or failed (or [`CONFIRM_TIMEOUT`]); a
/// VMI that ended (or went) before it was read running is decided by the receiving VMIM.
/// A deletion of the migration object no longer stops anything here: the switch-over is done.
async fn confirm_destination(target: &TunnelTarget) -> Confirmation {
    let deadline = Instant::now() + CONFIRM_TIMEOUT;
    loop {
        let reading = tokio::time::timeout(CONFIRM_READ_TIMEOUT, target.receiver_phase()).await;
        let last = match reading {
            Ok(Ok(vmi)) => {
                let vmi = vmi.as_ref().map(|(p, r)| (p.as_str(), r.as_str()));
                match confirmation_of(vmi) {
                    Some(Confirmation::Unknown(ended)) => {
                        let receiving = tokio::time::timeout(
                            CONFIRM_READ_TIMEOUT,
                            target.receiving_migration_phase(),
                        )
                        .await;
                        let ended = Confirmation::Unknown(ended);
                        let receiving = match receiving {
                            Ok(Ok(phase)) => phase,
                            // Unreadable (e.g. no `list` on migrations there): as before.
                            Ok(Err(_)) | Err(_) => return ended,
                        };
                        if let Some(decided) =
                            confirmation_by_receiving_migration(ended, receiving.as_deref())
                        {
                            if decided == Confirmation::Running {
                                tracing::info!(vmi = %target.vmi, "the destination's receiving migration succeeded: its guest ran there (its VMI ended since)");
                            }
                            return decided;
                        }
                    }
                    Some(decided) => return decided,
                    None => {}
                }
                format!(
                    "its VirtualMachineInstance is {:?}",
                    vmi.map(|(phase, _)| phase).unwrap_or_default()
                )
            }
            Ok(Err(
                e @ RelayError::Refused {
                    code: 401 | 403, ..
                },
            )) => {
                return Confirmation::Unknown(format!(
                    "{e} (the kubeconfig's user needs `get` on virtualmachineinstances there)"
                ));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CONFIRM_READ_TIMEOUT:?}"),
        };
        if Instant::now() > deadline {
            return Confirmation::Unknown(format!("after {CONFIRM_TIMEOUT:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: dest\n  cluster:\n    server: https://10.0.0.9:8443\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: secret-token\ncontexts:\n- name: dest\n  context: {cluster: dest, user: admin}\ncurrent-context: dest\n";

    #[test]
    fn the_destination_confirms_by_its_receivers_phase() {
        assert_eq!(
            confirmation_of(Some(("Running", ""))),
            Some(Confirmation::Running)
        );
        for undecided in ["WaitingForSync", "Scheduled", "Pending", ""] {
            assert_eq!(confirmation_of(Some((undecided, ""))), None, "{undecided}");
        }
        assert!(matches!(
            confirmation_of(Some(("Failed", "FailedMigration"))),
            Some(Confirmation::Failed(_))
        ));
        // A guest that may have run there is never resumed here.
        for ended in [("Failed", "Crashed"), ("Succeeded", "")] {
            assert!(
                matches!(confirmation_of(Some(ended)), Some(Confirmation::Unknown(_))),
                "{ended:?}"
            );
        }
        assert!(matches!(
            confirmation_of(None),
            Some(Confirmation::Unknown(reason)) if reason.contains("gone")
        ));
    }

    #[test]
    fn an_ended_receiver_is_confirmed_by_its_succeeded_migration() {
        let ended = || Confirmation::Unknown("its VirtualMachineInstance is gone".into());
        assert_eq!(
            confirmation_by_receiving_migration(ended(), Some("Succeeded")),
            Some(Confirmation::Running)
        );
        // A failed or missing receiving migration decides nothing more: never resumed here.
        for receiving in [Some("Failed"), None] {
            assert_eq!(
                confirmation_by_receiving_migration(ended(), receiving),
                Some(ended()),
                "{receiving:?}"
            );
        }
        // Its job has not reported yet: asked again.
        for receiving in ["Running", "Scheduling", ""] {
            assert_eq!(
                confirmation_by_receiving_migration(ended(), Some(receiving)),
                None,
                "{receiving}"
            );
        }
    }

    #[test]
    fn the_secret_is_named_by_the_annotation() {
        let vmim =
            json!({"metadata": {"annotations": {DESTINATION_KUBECONFIG: "dest-kubeconfig"}}});
        assert_eq!(kubeconfig_secret_name(&vmim).unwrap(), "dest-kubeconfig");
        let error = kubeconfig_secret_name(&json!({"metadata": {}})).unwrap_err();
        assert!(error.contains(DESTINATION_KUBECONFIG), "{error}");
        assert!(error.contains("kubectl create secret generic"), "{error}");
    }

    #[test]
    fn credentials_come_from_the_kubeconfig_and_the_url_from_connect_url() {
        let values = vec![(KUBECONFIG_KEY.to_owned(), KUBECONFIG.to_owned())];
        let credentials =
            destination_credentials("dest", &values, "https://10.1.2.3:9443/").unwrap();
        assert_eq!(credentials.server, "https://10.1.2.3:9443");
        assert_eq!(credentials.token.as_deref(), Some("secret-token"));
        let missing = destination_credentials("dest", &[], "https://x").unwrap_err();
        assert!(missing.contains("\"kubeconfig\""), "{missing}");
        let broken = vec![(KUBECONFIG_KEY.to_owned(), "{not yaml".to_owned())];
        assert!(destination_credentials("dest", &broken, "https://x").is_err());
    }

    #[test]
    fn progress_is_written_at_most_every_second() {
        let table = MigrationTable::default();
        let key = Key::migration("default", "m");
        assert!(table.begin(&key).is_some());
        assert!(table.begin(&key).is_none(), "one job per migration");
        table.set(
            &key,
            MigrationJob::Running {
                started: "s".into(),
                progress: JobProgress::default(),
            },
        );
        let reading = JobProgress {
            ram_remaining_bytes: 5,
            ..JobProgress::default()
        };
        assert!(table.progress(&key, reading.clone()));
        assert!(!table.progress(&key, reading.clone()));
        assert_eq!(
            table.get(&key),
            Some(MigrationJob::Running {
                started: "s".into(),
                progress: reading
            })
        );
        table.forget(&key);
        assert_eq!(table.get(&key), None);
    }
}
