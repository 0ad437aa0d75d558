//! The controllers' runtime: watches feed a work queue of [`Key`]s (a VM and its VMI share one
//! key, a PVC has its own) plus a periodic resync; one worker takes a key, builds the world the
//! reconcilers read, calls the pure reconcilers ([`crate::vm_reconciler`],
//! [`crate::vmi_reconciler`], [`crate::storage`]) and carries out the [`Action`]s they return in
//! [`Controller::execute`]: the one place where the controllers write objects, record Events,
//! touch volumes, start and stop the engine.
//!
//! - `runs`: the engine's runs (the only controller state that is not in the store) and the run
//!   tasks that follow a started VM to its end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrovirt_api::core::StorageClass;
use ferrovirt_api::kubevirt::VirtualMachineInstance;
use ferrovirt_storage::LocalPathProvisioner;
use futures_util::StreamExt;

mod runs;

pub use runs::{RunKey, RunTable, outcome_of};

use crate::action::{Action, Key};
use crate::client::{ClientError, EventKind, ObjectClient, optional};
use crate::storage::{self, PvcWorld};
use crate::world::{RunOutcome, VmWorld};
use crate::{vm_reconciler, vmi_reconciler};
use ferrovirt_vmm::convert::{ConvertContext, plan_from_spec};
use ferrovirt_vmm::engine::{Engine, VmPlan};
use ferrovirt_vmm::hostpath::HostPathPolicy;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::events::{EventType, record};
use ferrovirt_resources::{KUBEVIRTS, PVCS, STORAGE_CLASSES, VMIS, VMS};

/// How often every object is reconciled again, events or not.
pub const RESYNC: Duration = Duration::from_secs(10);

/// The controllers' shared state.
pub struct Controller {
    pub(crate) client: Arc<dyn ObjectClient>,
    pub(crate) engine: Engine,
    pub(crate) data_dir: PathBuf,
    pub(crate) provisioner: LocalPathProvisioner,
    runs: RunTable,
    pub(crate) queue: mpsc::UnboundedSender<Key>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) node_name: String,
}

/// Why the controllers could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the engine could not start: {0}")]
    Engine(#[from] ferrovirt_vmm::engine::EngineError),
    #[error("the volumes directory {path} cannot be used: {message}")]
    Volumes { path: PathBuf, message: String },
}

/// Why a reconcile failed (it is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Other(String),
}

pub(crate) fn meta_str<'a>(object: &'a Value, key: &str) -> &'a str {
    object
        .pointer(&format!("/metadata/{key}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Starts the engine, the controllers' watches, the resync ticker and the worker.
pub async fn spawn(
    client: Arc<dyn ObjectClient>,
    data_dir: PathBuf,
    host_paths: HostPathPolicy,
) -> Result<(), StartError> {
    let engine = Engine::new(&data_dir).await?.with_host_paths(host_paths);
    tracing::info!(accel = ?engine.accel(), "engine ready");
    let provisioner =
        LocalPathProvisioner::new(data_dir.join("volumes")).map_err(|e| StartError::Volumes {
            path: data_dir.join("volumes"),
            message: e.to_string(),
        })?;
    let _ = provisioner.remove_stale();
    let (tx, rx) = mpsc::unbounded_channel();
    let node_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    let controller = Arc::new(Controller {
        client,
        engine,
        data_dir,
        provisioner,
        runs: RunTable::default(),
        queue: tx,
        runtime: tokio::runtime::Handle::current(),
        node_name,
    });
    for resource in [VMS, VMIS, PVCS, KUBEVIRTS] {
        let controller = controller.clone();
        tokio::spawn(async move { controller.watch_kind(resource).await });
    }
    {
        let controller = controller.clone();
        tokio::spawn(async move {
            loop {
                controller.enqueue_all();
                tokio::time::sleep(RESYNC).await;
            }
        });
    }
    tokio::spawn(worker(controller, rx));
    Ok(())
}

async fn worker(controller: Arc<Controller>, mut rx: mpsc::UnboundedReceiver<Key>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(key) = rx.try_recv() {
            batch.push(key);
        }
        let mut seen = std::collections::HashSet::new();
        batch.retain(|k| seen.insert(k.clone()));
        for key in batch {
            let c = controller.clone();
            let k = key.clone();
            let result = tokio::task::spawn_blocking(move || c.reconcile(&k)).await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(?key, %error, "reconcile failed; retrying at the next resync")
                }
                Err(error) => tracing::error!(?key, %error, "reconcile panicked"),
            }
        }
    }
}

impl Controller {
    fn enqueue(&self, key: Key) {
        let _ = self.queue.send(key);
    }

    fn enqueue_after(self: &Arc<Self>, key: Key, delay: Duration) {
        if delay.is_zero() {
            return self.enqueue(key);
        }
        let me = self.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            me.enqueue(key);
        });
    }

    /// Enqueues every VM, VMI and PVC (names only: the objects are read by the reconcile).
    fn enqueue_all(&self) {
        for resource in [VMS, VMIS] {
            if let Ok(keys) = self.client.list_names(&resource) {
                for (namespace, name) in keys {
                    self.enqueue(Key::Vm { namespace, name });
                }
            }
        }
        if let Ok(keys) = self.client.list_names(&PVCS) {
            for (namespace, name) in keys {
                self.enqueue(Key::Pvc { namespace, name });
            }
        }
    }

    async fn watch_kind(self: Arc<Self>, resource: ferrovirt_resources::ResourceDef) {
        loop {
            let mut watch = match self.client.watch(&resource) {
                Ok(w) => w,
                Err(error) => {
                    tracing::warn!(%error, "controller watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(Ok(event)) = watch.next().await {
                let o = &event.object;
                let (ns, name) = (meta_str(o, "namespace"), meta_str(o, "name"));
                if resource == VMS && event.kind == EventKind::Deleted {
                    let now = u64::try_from(ferrovirt_resources::time::now_unix()).unwrap_or(0);
                    crate::housekeeping::mark_vm_state_deleted(&self.data_dir, o, now);
                }
                match resource.plural {
                    "virtualmachines" | "virtualmachineinstances" => {
                        self.enqueue(Key::vm(ns, name))
                    }
                    "persistentvolumeclaims" => {
                        self.enqueue(Key::pvc(ns, name));
                        if let Some(vm) = o
                            .pointer(&format!(
                                "/metadata/labels/{}",
                                ferrovirt_storage::backend::PVC_LABEL_KEY
                            ))
                            .and_then(Value::as_str)
                        {
                            self.enqueue(Key::vm(ns, vm));
                        }
                    }
                    _ => self.enqueue_all(),
                }
            }
        }
    }

    /// One reconcile (runs on a blocking thread): read the world, ask the reconciler, act.
    pub fn reconcile(self: &Arc<Self>, key: &Key) -> Result<(), ReconcileError> {
        let actions = match key {
            Key::Vm { namespace, name } => self.reconcile_vm_key(namespace, name)?,
            Key::Pvc { namespace, name } => {
                let Some(pvc) = optional(self.client.get(&PVCS, Some(namespace), name))? else {
                    return Ok(());
                };
                let world = PvcWorld {
                    volumes_in_use: self.runs.volumes_in_use(),
                };
                storage::reconcile_pvc(&pvc, &world)
            }
        };
        self.execute(key, actions)
    }

    /// A VM key: the VMI's actions first (the engine side), then, if the VMI reconciler had
    /// nothing to do, the VM's.
    fn reconcile_vm_key(&self, ns: &str, name: &str) -> Result<Vec<Action>, ReconcileError> {
        let vm = optional(self.client.get(&VMS, Some(ns), name))?;
        let vmi = optional(self.client.get(&VMIS, Some(ns), name))?;
        let run = self.runs.view(&(ns.to_owned(), name.to_owned()));
        let owner = vmi
            .as_ref()
            .map(vm_owner_name)
            .unwrap_or_else(|| name.to_owned());
        let selector = ferrovirt_resources::cluster::backend_pvc_selector_text(&owner);
        let backend_pvcs = self.client.list(&PVCS, Some(ns), Some(&selector))?;
        let wants_pvc = vm.is_some() && backend_pvcs.is_empty();
        let kubevirt = if wants_pvc {
            self.client.list(&KUBEVIRTS, None, None)?.into_iter().next()
        } else {
            None
        };
        let storage_classes: Vec<StorageClass> = if wants_pvc {
            self.client
                .list(&STORAGE_CLASSES, None, None)?
                .into_iter()
                .filter_map(|c| serde_json::from_value(c).ok())
                .collect()
        } else {
            Vec::new()
        };
        let world = VmWorld {
            run: run.as_ref(),
            backend_pvcs: &backend_pvcs,
            kubevirt: kubevirt.as_ref(),
            storage_classes: &storage_classes,
            now_unix: ferrovirt_resources::time::now_unix(),
            node_name: &self.node_name,
        };
        let actions = vmi_reconciler::reconcile_vmi(ns, name, vmi.as_ref(), &world);
        if !actions.is_empty() {
            return Ok(actions); // the VMI's writes trigger the VM's reconcile
        }
        Ok(match &vm {
            Some(vm) => vm_reconciler::reconcile_vm(vm, vmi.as_ref(), &world),
            None => Vec::new(),
        })
    }

    /// Carries out a reconciler's actions, in order. A write that meets a changed or deleted
    /// object stops there and the key is reconciled again from fresh objects.
    pub fn execute(
        self: &Arc<Self>,
        key: &Key,
        actions: Vec<Action>,
    ) -> Result<(), ReconcileError> {
        for action in actions {
            let written = match action {
                Action::Create { resource, object } => {
                    self.client.create(&resource, object).map(drop)
                }
                Action::CreateAndRecord {
                    resource,
                    object,
                    involved,
                    reason,
                    message,
                } => self.client.create(&resource, object).map(|created| {
                    let message = message.replace("{name}", meta_str(&created, "name"));
                    record(
                        &*self.client,
                        &involved,
                        EventType::Normal,
                        &reason,
                        &message,
                    );
                }),
                Action::Update { resource, object } => {
                    self.client.update(&resource, object).map(drop)
                }
                Action::UpdateStatus { resource, object } => {
                    self.client.update_status(&resource, object).map(drop)
                }
                Action::Delete {
                    resource,
                    namespace,
                    name,
                } => match self.client.delete(&resource, namespace.as_deref(), &name) {
                    Err(ClientError::NotFound(_)) => Ok(()),
                    other => other,
                },
                Action::Event {
                    involved,
                    event_type,
                    reason,
                    message,
                } => {
                    record(&*self.client, &involved, event_type, &reason, &message);
                    Ok(())
                }
                Action::ProvisionVolume { volume } => {
                    self.provisioner
                        .create_volume(&volume)
                        .map_err(|e| ReconcileError::Other(e.to_string()))?;
                    Ok(())
                }
                Action::DeleteVolume { volume } => {
                    self.provisioner
                        .delete_volume(&volume)
                        .map_err(|e| ReconcileError::Other(e.to_string()))?;
                    // The VM's state generations (`state-generations/vms/<uuid>/`) stay: the
                    // next start restores the last one into a new volume.
                    tracing::info!(volume, "deleted the volume of a deleted PVC");
                    Ok(())
                }
                Action::RetireVolume {
                    volume,
                    vm,
                    pvc_name,
                } => {
                    self.retire_volume(&volume, &vm, &pvc_name)?;
                    Ok(())
                }
                Action::StartEngine { vmi, adopt } => {
                    self.start_engine(vmi, adopt);
                    Ok(())
                }
                Action::StopEngine {
                    namespace,
                    name,
                    vmi_uid,
                } => {
                    if let Some(running) = self.runs.stop(&(namespace, name), &vmi_uid) {
                        self.runtime.spawn(async move {
                            let grace = running.plan.grace;
                            if let Err(error) = running.handle.stop(grace).await {
                                tracing::warn!(%error, "stopping the VM failed");
                            }
                        });
                    }
                    Ok(())
                }
                Action::MarkRunReported { namespace, name } => {
                    self.runs.mark_reported(&(namespace, name));
                    self.enqueue(key.clone()); // the VM's status follows
                    Ok(())
                }
                Action::ForgetRun { namespace, name } => {
                    self.runs.forget(&(namespace, name));
                    self.enqueue(key.clone());
                    Ok(())
                }
                Action::Requeue { key, after } => {
                    self.enqueue_after(key, after);
                    Ok(())
                }
            };
            match written {
                Ok(()) => {}
                Err(ClientError::Conflict(_) | ClientError::NotFound(_)) => {
                    self.enqueue(key.clone());
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Persistence switched off: archive the volume under `<data>/retired/`.
    fn retire_volume(
        &self,
        volume: &str,
        vm: &Value,
        pvc_name: &str,
    ) -> Result<(), ReconcileError> {
        let Ok(path) = self.provisioner.volume_path(volume) else {
            return Ok(());
        };
        if !path.exists() {
            return Ok(());
        }
        let archive = self.data_dir.join("retired");
        std::fs::create_dir_all(&archive)
            .map_err(|e| ReconcileError::Other(format!("{}: {e}", archive.display())))?;
        let retired = ferrovirt_storage::generations::retire(&path, &archive)
            .map_err(|e| ReconcileError::Other(e.to_string()))?;
        record(
            &*self.client,
            vm,
            EventType::Normal,
            "RetiredBackendStorage",
            &format!(
                "Persistent TPM/EFI state is no longer requested: the volume of PVC {pvc_name} was moved to {} (recoverable) and the PVC is deleted",
                retired.display()
            ),
        );
        Ok(())
    }

    /// Registers the run of a VMI and starts the task that follows it; a VMI that cannot run
    /// here is recorded as a run that ended before it began.
    fn start_engine(self: &Arc<Self>, vmi: Value, adopt: bool) {
        let key: RunKey = (
            meta_str(&vmi, "namespace").to_owned(),
            meta_str(&vmi, "name").to_owned(),
        );
        let uid = meta_str(&vmi, "uid").to_owned();
        let plan = match self.plan_for(&vmi) {
            Ok(Some(plan)) => plan,
            Ok(None) => {
                // The backend storage is not bound yet (the reconciler saw it bound: a race).
                return self.enqueue_after(Key::vm(&key.0, &key.1), Duration::from_millis(200));
            }
            Err(message) => {
                self.runs.refuse(
                    key.clone(),
                    &uid,
                    RunOutcome::failed("FailedCreate", message),
                );
                return self.enqueue(Key::vm(&key.0, &key.1));
            }
        };
        if !self
            .runs
            .begin(key.clone(), &uid, plan.state_volume.clone())
        {
            return;
        }
        let me = self.clone();
        self.runtime
            .spawn(async move { me.follow_run(key, plan, adopt).await });
    }

    /// Starts (or adopts) a VM and follows it until it ends, recording each step in the run
    /// table and asking for a reconcile (which writes it to the VMI).
    async fn follow_run(self: Arc<Self>, key: RunKey, plan: VmPlan, adopt: bool) {
        let vm_key = Key::vm(&key.0, &key.1);
        let started = std::time::Instant::now();
        let result = if adopt {
            self.engine.adopt(plan).await
        } else {
            self.engine.start(plan).await
        };
        let running = match result {
            Ok(running) => Arc::new(running),
            Err(error) => {
                let message = if adopt {
                    format!(
                        "the VM is no longer running (it ended while ferrovirt was not running): {error}"
                    )
                } else {
                    format!("failed to start the VM: {error}")
                };
                self.runs
                    .ended(&key, RunOutcome::failed("FailedCreate", message));
                return self.enqueue(vm_key);
            }
        };
        if !adopt {
            tracing::info!(vm = %key.1, elapsed_ms = started.elapsed().as_millis() as u64, "VM started");
        }
        let restored = match (
            running.state.as_ref().and_then(|s| s.restored.as_ref()),
            running.plan.state_volume.as_ref(),
        ) {
            (Some(restored), Some(volume)) => Some(restored.message(volume)),
            _ => None,
        };
        self.runs.running(&key, running.clone(), adopt, restored);
        self.enqueue(vm_key.clone());
        let end = self.engine.wait(&running).await;
        let outcome = match &end {
            Ok(end) => outcome_of(&end.exit.reason, self.runs.stopping(&key)),
            Err(error) => RunOutcome::failed(
                "Failed",
                format!("The VirtualMachineInstance ended with an error: {error}"),
            ),
        };
        self.runs.ended(&key, outcome);
        self.enqueue(vm_key);
    }

    /// The engine plan of a VMI; `Ok(None)` while its backend storage is not bound yet.
    fn plan_for(&self, vmi: &Value) -> Result<Option<VmPlan>, String> {
        let typed: VirtualMachineInstance = serde_json::from_value(vmi.clone())
            .map_err(|e| format!("the stored VMI cannot be read: {e}"))?;
        let ns = meta_str(vmi, "namespace");
        let owner = vm_owner_name(vmi);
        let state_volume = if typed.spec.needs_backend_storage() {
            let selector = ferrovirt_resources::cluster::backend_pvc_selector_text(&owner);
            let pvc = self
                .client
                .list(&PVCS, Some(ns), Some(&selector))
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|p| p.pointer("/metadata/deletionTimestamp").is_none());
            match pvc.as_ref().and_then(vmi_reconciler::bound_volume) {
                Some(volume) => Some((
                    self.provisioner
                        .volume_path(volume)
                        .map_err(|e| e.to_string())?,
                    self.data_dir.join("state-generations").join(volume),
                )),
                None => return Ok(None),
            }
        } else {
            None
        };
        let claim_dir = |claim: &str| -> Option<PathBuf> {
            let pvc = self.client.get(&PVCS, Some(ns), claim).ok()?;
            let volume = pvc.pointer("/spec/volumeName").and_then(Value::as_str)?;
            self.provisioner.volume_path(volume).ok()
        };
        let grace = typed
            .spec
            .extra
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_u64);
        let ctx = ConvertContext {
            namespace: ns,
            name: meta_str(vmi, "name"),
            field_prefix: "spec",
            state_volume,
            claim_dir: &claim_dir,
            termination_grace_period_seconds: grace,
        };
        let mut plan = plan_from_spec(&typed.spec, &ctx)
            .map_err(|u| format!("cannot run this VirtualMachineInstance here: {u}"))?;
        plan.vm_uid = vm_owner_uid(vmi);
        Ok(Some(plan))
    }
}

/// The `metadata.uid` of the VirtualMachine a VMI belongs to (`None` for a standalone VMI).
fn vm_owner_uid(vmi: &Value) -> Option<String> {
    vmi.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("kind") == Some(&json!("VirtualMachine")))
        .and_then(|r| r.get("uid").and_then(Value::as_str))
        .map(str::to_owned)
}

/// The VM a VMI belongs to (its own name for a standalone VMI).
fn vm_owner_name(vmi: &Value) -> String {
    vmi.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter()
                .find(|r| r.get("kind") == Some(&json!("VirtualMachine")))
        })
        .and_then(|r| r.get("name").and_then(Value::as_str))
        .unwrap_or_else(|| meta_str(vmi, "name"))
        .to_owned()
}
