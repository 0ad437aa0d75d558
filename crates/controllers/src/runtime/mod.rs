//! Level-triggered controllers: one reconcile per key (a VM and its VMI share one key, a PVC has
//! its own), triggered by store watch events and a periodic resync, processed one at a time.
//!
//! - `vm`: KubeVirt's run-strategy semantics and the VM status (pure functions).
//! - `storage`: backend-storage PVCs (create, bind to a local-path volume, retire, delete).
//! - this module: the queue, the VM/VMI reconcile and the engine runs (start, stop, exit, adopt).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ferrovirt_api::defaults::apply_instance_spec_defaults;
use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_storage::LocalPathProvisioner;
use ferrovirt_store::now_rfc3339;
use futures_util::StreamExt;

mod backend_storage;

use crate::action::Action;
use crate::client::{ClientError, EventKind, ObjectClient, optional};
use crate::storage::{self, PvcWorld};
use ferrovirt_vmm::convert::{ConvertContext, plan_from_spec};
use ferrovirt_vmm::engine::{Engine, RunningVm, VmPlan};
use ferrovirt_vmm::hostpath::HostPathPolicy;
use ferrovirt_vmm::launcher::ExitReason;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::events::{EventType, record};
use crate::vm::{self, Decision, VMI_FINALIZER};
use ferrovirt_resources::{KUBEVIRTS, PVCS, VMIS, VMS};

/// How often every object is reconciled again, events or not.
pub const RESYNC: Duration = Duration::from_secs(10);

/// What a reconcile is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A VM and/or the VMI of the same name.
    Vm { namespace: String, name: String },
    /// A PersistentVolumeClaim.
    Pvc { namespace: String, name: String },
}

enum RunState {
    Starting,
    Running(Arc<RunningVm>),
}

struct Run {
    vmi_uid: String,
    state: RunState,
    stopping: bool,
    /// The backend-storage volume the run uses (a PVC is not deleted under a running VM).
    volume: Option<PathBuf>,
}

/// The controllers' shared state.
pub struct Controller {
    pub(crate) client: Arc<dyn ObjectClient>,
    pub(crate) engine: Engine,
    pub(crate) data_dir: PathBuf,
    pub(crate) provisioner: LocalPathProvisioner,
    runs: Mutex<HashMap<(String, String), Run>>,
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

/// Why a reconcile failed (it is retried at the next resync).
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
        runs: Mutex::new(HashMap::new()),
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
        let mut seen = HashSet::new();
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
    fn runs(&self) -> MutexGuard<'_, HashMap<(String, String), Run>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enqueue(&self, key: Key) {
        let _ = self.queue.send(key);
    }

    fn enqueue_vm(&self, namespace: &str, name: &str) {
        self.enqueue(Key::Vm {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }

    fn enqueue_after(self: &Arc<Self>, key: Key, delay: Duration) {
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
                    "virtualmachines" | "virtualmachineinstances" => self.enqueue_vm(ns, name),
                    "persistentvolumeclaims" => {
                        self.enqueue(Key::Pvc {
                            namespace: ns.to_owned(),
                            name: name.to_owned(),
                        });
                        if let Some(vm) = o
                            .pointer(&format!(
                                "/metadata/labels/{}",
                                ferrovirt_storage::backend::PVC_LABEL_KEY
                            ))
                            .and_then(Value::as_str)
                        {
                            self.enqueue_vm(ns, vm);
                        }
                    }
                    _ => self.enqueue_all(),
                }
            }
        }
    }

    /// One reconcile (runs on a blocking thread).
    pub fn reconcile(self: &Arc<Self>, key: &Key) -> Result<(), ReconcileError> {
        match key {
            Key::Vm { namespace, name } => self.reconcile_vm(namespace, name),
            Key::Pvc { namespace, name } => {
                let Some(pvc) = optional(self.client.get(&PVCS, Some(namespace), name))? else {
                    return Ok(());
                };
                let world = PvcWorld {
                    volumes_in_use: self.volumes_in_use(),
                };
                let actions = storage::reconcile_pvc(&pvc, &world);
                self.execute(key, actions)
            }
        }
    }

    fn reconcile_vm(self: &Arc<Self>, ns: &str, name: &str) -> Result<(), ReconcileError> {
        let vmi = optional(self.client.get(&VMIS, Some(ns), name))?;
        if let Some(vmi) = &vmi {
            self.reconcile_instance(vmi)?;
        }
        let Some(vm) = optional(self.client.get(&VMS, Some(ns), name))? else {
            return Ok(());
        };
        if vm::deleting(&vm) {
            return self.write_vm_status(&vm, vmi.as_ref(), false, None);
        }
        // A VMI of another (older) VM with the same name is not ours.
        let vmi = vmi.filter(|v| owned_by(v, meta_str(&vm, "uid")));
        let backoff = self.backoff_remaining(&vm);
        if let Some(remaining) = backoff {
            self.enqueue_after(
                Key::Vm {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                },
                remaining + Duration::from_millis(100),
            );
        }
        let mut failure = None;
        match vm::decide(&vm, vmi.as_ref(), backoff.is_some()) {
            // Nothing was written to the VM: it is current. The VMI is read again only if there
            // is one (`reconcile_instance` may have just written it); at scale most VMs have none.
            Decision::Nothing => {
                let vmi = match vmi {
                    Some(_) => optional(self.client.get(&VMIS, Some(ns), name))?
                        .filter(|v| owned_by(v, meta_str(&vm, "uid"))),
                    None => None,
                };
                return self.write_vm_status(&vm, vmi.as_ref(), backoff.is_some(), None);
            }
            Decision::PopRequest => {
                let mut updated = vm.clone();
                if let Some(list) = updated
                    .pointer_mut("/status/stateChangeRequests")
                    .and_then(Value::as_array_mut)
                    && !list.is_empty()
                {
                    list.remove(0);
                }
                self.client.update_status(&VMS, updated)?;
                return Ok(()); // the status write triggers the next reconcile
            }
            Decision::DeleteInstance => {
                if let Some(vmi) = &vmi {
                    if vmi.pointer("/status/phase").and_then(Value::as_str) == Some("Failed") {
                        self.note_start_failure(&vm, vmi)?;
                    }
                    match self.client.delete(&VMIS, Some(ns), name) {
                        Ok(_) | Err(ClientError::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                    record(
                        &*self.client,
                        &vm,
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!(
                            "Stopped the virtual machine by deleting the virtual machine instance {}",
                            meta_str(vmi, "uid")
                        ),
                    );
                }
            }
            Decision::CreateInstance => match self.create_instance(&vm) {
                Ok(()) => {}
                Err(message) => {
                    record(
                        &*self.client,
                        &vm,
                        EventType::Warning,
                        "FailedCreate",
                        &message,
                    );
                    failure = Some(message);
                }
            },
        }
        let vm = self.client.get(&VMS, Some(ns), name)?;
        let vmi = optional(self.client.get(&VMIS, Some(ns), name))?
            .filter(|v| owned_by(v, meta_str(&vm, "uid")));
        let backoff = self.backoff_remaining(&vm).is_some();
        self.write_vm_status(&vm, vmi.as_ref(), backoff, failure.as_deref())
    }

    fn write_vm_status(
        &self,
        vm: &Value,
        vmi: Option<&Value>,
        backoff: bool,
        failure: Option<&str>,
    ) -> Result<(), ReconcileError> {
        let mut status = vm::vm_status(vm, vmi, backoff, failure, &now_rfc3339());
        if vmi.is_some_and(|v| vm::phase(v) == "Running")
            && let Some(obj) = status.as_object_mut()
        {
            obj.remove("startFailure");
        }
        if let Some(volumes) = vmi.and_then(|v| v.pointer("/status/volumeStatus")) {
            status["volumeStatus"] = volumes.clone();
        }
        if vm.get("status") == Some(&status) {
            return Ok(());
        }
        let mut updated = vm.clone();
        updated["status"] = status;
        match self.client.update_status(&VMS, updated) {
            Ok(_) | Err(ClientError::Conflict(_)) | Err(ClientError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Time left before a crash-looping VM may start again.
    fn backoff_remaining(&self, vm: &Value) -> Option<Duration> {
        let retry_after = vm
            .pointer("/status/startFailure/retryAfterTimestamp")
            .and_then(Value::as_str)
            .and_then(ferrovirt_resources::time::parse_rfc3339)?;
        let now = ferrovirt_resources::time::now_unix();
        (retry_after > now).then(|| Duration::from_secs((retry_after - now) as u64))
    }

    /// Records a failed run in `status.startFailure` (exponential backoff, as KubeVirt).
    fn note_start_failure(&self, vm: &Value, vmi: &Value) -> Result<(), ReconcileError> {
        let vmi_uid = meta_str(vmi, "uid");
        if vm
            .pointer("/status/startFailure/lastFailedVMIUID")
            .and_then(Value::as_str)
            == Some(vmi_uid)
        {
            return Ok(());
        }
        let count = vm
            .pointer("/status/startFailure/consecutiveFailCount")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            + 1;
        let delay = (5u64 << count.min(6)).min(300);
        let retry =
            ferrovirt_store::format_rfc3339(ferrovirt_resources::time::now_unix() + delay as i64);
        let mut updated = vm.clone();
        let status = updated
            .as_object_mut()
            .map(|o| o.entry("status").or_insert_with(|| json!({})));
        if let Some(status) = status {
            status["startFailure"] = json!({
                "consecutiveFailCount": count,
                "lastFailedVMIUID": vmi_uid,
                "retryAfterTimestamp": retry,
            });
        }
        self.client.update_status(&VMS, updated)?;
        Ok(())
    }

    /// Creates the VMI of a VM (with its backend storage ready first).
    fn create_instance(&self, vm: &Value) -> Result<(), String> {
        let typed: VirtualMachine = serde_json::from_value(vm.clone())
            .map_err(|e| format!("the stored VM cannot be read: {e}"))?;
        let template = typed.spec.template.clone().unwrap_or_default();
        let mut spec = template.spec.clone();
        apply_instance_spec_defaults(&mut spec);
        let (ns, name) = (meta_str(vm, "namespace"), meta_str(vm, "name"));
        if spec.needs_backend_storage() {
            self.ensure_backend_pvc(vm).map_err(|e| e.to_string())?;
        } else {
            self.retire_backend_pvc(vm).map_err(|e| e.to_string())?;
        }
        let template_meta = template.metadata.clone().unwrap_or_default();
        let mut labels = template_meta.labels.clone().unwrap_or_default();
        labels.insert("kubevirt.io/vm".into(), name.to_owned());
        let vmi = json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": labels,
                "annotations": template_meta.annotations.clone().unwrap_or_default(),
                "ownerReferences": [{
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": name,
                    "uid": meta_str(vm, "uid"), "controller": true, "blockOwnerDeletion": true,
                }],
                "finalizers": [VMI_FINALIZER],
            },
            "spec": spec,
            "status": {"phase": "Pending"},
        });
        let created = self
            .client
            .create(&VMIS, vmi)
            .map_err(|e| format!("cannot create the VirtualMachineInstance: {e}"))?;
        record(
            &*self.client,
            vm,
            EventType::Normal,
            "SuccessfulCreate",
            &format!(
                "Started the virtual machine by creating the new virtual machine instance {}",
                meta_str(&created, "name")
            ),
        );
        Ok(())
    }

    /// The engine side of a VMI: start it, stop it when it is being deleted, release it.
    fn reconcile_instance(self: &Arc<Self>, vmi: &Value) -> Result<(), ReconcileError> {
        let (ns, name, uid) = (
            meta_str(vmi, "namespace"),
            meta_str(vmi, "name"),
            meta_str(vmi, "uid"),
        );
        let key = (ns.to_owned(), name.to_owned());
        let mut runs = self.runs();
        if vm::deleting(vmi) {
            match runs.get_mut(&key) {
                Some(run) => {
                    if let RunState::Running(running) = &run.state
                        && !run.stopping
                        && run.vmi_uid == uid
                    {
                        run.stopping = true;
                        let running = running.clone();
                        record(
                            &*self.client,
                            vmi,
                            EventType::Normal,
                            "ShuttingDown",
                            "Signaled Graceful Shutdown",
                        );
                        self.runtime.spawn(async move {
                            let grace = running.plan.grace;
                            if let Err(error) = running.handle.stop(grace).await {
                                tracing::warn!(%error, "stopping the VM failed");
                            }
                        });
                    }
                }
                None => {
                    drop(runs);
                    self.release_vmi(vmi)?;
                }
            }
            return Ok(());
        }
        if runs.contains_key(&key) || vm::is_final(vmi) {
            return Ok(());
        }
        let adopt = vm::phase(vmi) == "Running";
        let plan = match self.plan_for(vmi) {
            Ok(Some(plan)) => plan,
            Ok(None) => return Ok(()), // backend storage not bound yet
            Err(message) => {
                drop(runs);
                record(
                    &*self.client,
                    vmi,
                    EventType::Warning,
                    "FailedCreate",
                    &message,
                );
                self.set_vmi_phase(vmi, "Failed", Some(("FailedCreate", &message)))?;
                return Ok(());
            }
        };
        runs.insert(
            key.clone(),
            Run {
                vmi_uid: uid.to_owned(),
                state: RunState::Starting,
                stopping: false,
                volume: plan.state_volume.clone(),
            },
        );
        drop(runs);
        if !adopt {
            self.set_vmi_phase(vmi, "Scheduled", None)?;
        }
        let me = self.clone();
        let vmi = vmi.clone();
        self.runtime
            .spawn(async move { me.run_instance(vmi, plan, adopt).await });
        Ok(())
    }

    /// Removes the VMI finalizer: the VMI disappears.
    fn release_vmi(&self, vmi: &Value) -> Result<(), ReconcileError> {
        let mut updated = vmi.clone();
        if let Some(finalizers) = updated
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            finalizers.retain(|f| f.as_str() != Some(VMI_FINALIZER));
        }
        match self.client.update(&VMIS, updated) {
            Ok(_) | Err(ClientError::NotFound(_)) | Err(ClientError::Conflict(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn set_vmi_phase(
        &self,
        vmi: &Value,
        phase: &str,
        reason: Option<(&str, &str)>,
    ) -> Result<(), ReconcileError> {
        let ns = meta_str(vmi, "namespace");
        let name = meta_str(vmi, "name");
        let Some(mut current) = optional(self.client.get(&VMIS, Some(ns), name))? else {
            return Ok(());
        };
        if meta_str(&current, "uid") != meta_str(vmi, "uid") {
            return Ok(());
        }
        let now = now_rfc3339();
        let mut status = current.get("status").cloned().unwrap_or_else(|| json!({}));
        status["phase"] = json!(phase);
        let ready = phase == "Running";
        status["conditions"] = json!([{"type": "Ready", "status": if ready { "True" } else { "False" },
            "lastProbeTime": null, "lastTransitionTime": now}]);
        if phase != "Pending" {
            status["nodeName"] = json!(self.node_name);
        }
        if let Some((reason, message)) = reason {
            status["reason"] = json!(reason);
            status["message"] = json!(message);
        }
        let transitions = status.as_object_mut().map(|s| {
            s.entry("phaseTransitionTimestamps")
                .or_insert_with(|| json!([]))
        });
        if let Some(Value::Array(list)) = transitions {
            list.push(json!({"phase": phase, "phaseTransitionTimestamp": now}));
        }
        if ready {
            status["volumeStatus"] = self.backend_volume_status(&current);
        }
        current["status"] = status;
        match self.client.update_status(&VMIS, current) {
            Ok(_) | Err(ClientError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The engine plan of a VMI; `Ok(None)` while its backend storage is not bound yet.
    fn plan_for(&self, vmi: &Value) -> Result<Option<VmPlan>, String> {
        let typed: VirtualMachineInstance = serde_json::from_value(vmi.clone())
            .map_err(|e| format!("the stored VMI cannot be read: {e}"))?;
        let ns = meta_str(vmi, "namespace");
        let owner = vm_owner_name(vmi);
        let state_volume = if typed.spec.needs_backend_storage() {
            match self.backend_pvc(ns, &owner).map_err(|e| e.to_string())? {
                Some(pvc) => match pvc.pointer("/spec/volumeName").and_then(Value::as_str) {
                    Some(volume) if !volume.is_empty() => Some((
                        self.provisioner
                            .volume_path(volume)
                            .map_err(|e| e.to_string())?,
                        self.data_dir.join("state-generations").join(volume),
                    )),
                    _ => return Ok(None),
                },
                None if owner_is_vm(vmi) => return Ok(None),
                None => {
                    return Err(format!(
                        "VirtualMachineInstance {} needs backend storage (persistent TPM or EFI); create it through a VirtualMachine",
                        meta_str(vmi, "name")
                    ));
                }
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

    /// Starts (or adopts) a VM and follows it until it ends.
    async fn run_instance(self: Arc<Self>, vmi: Value, plan: VmPlan, adopt: bool) {
        let key = (
            meta_str(&vmi, "namespace").to_owned(),
            meta_str(&vmi, "name").to_owned(),
        );
        let started = std::time::Instant::now();
        let result = if adopt {
            self.engine.adopt(plan).await
        } else {
            self.engine.start(plan).await
        };
        let running = match result {
            Ok(running) => Arc::new(running),
            Err(error) => {
                self.runs().remove(&key);
                let message = if adopt {
                    format!(
                        "the VM is no longer running (it ended while ferrovirt was not running): {error}"
                    )
                } else {
                    format!("failed to start the VM: {error}")
                };
                record(
                    &*self.client,
                    &vmi,
                    EventType::Warning,
                    "FailedCreate",
                    &message,
                );
                let _ = self.set_vmi_phase(&vmi, "Failed", Some(("FailedCreate", &message)));
                self.enqueue_vm(&key.0, &key.1);
                return;
            }
        };
        if let Some(run) = self.runs().get_mut(&key) {
            run.state = RunState::Running(running.clone());
        }
        if adopt {
            record(
                &*self.client,
                &vmi,
                EventType::Normal,
                "Adopted",
                "VirtualMachineInstance adopted after a ferrovirt restart.",
            );
        } else {
            tracing::info!(vm = %key.1, elapsed_ms = started.elapsed().as_millis() as u64, "VM started");
            let _ = self.set_vmi_phase(&vmi, "Running", None);
            record(
                &*self.client,
                &vmi,
                EventType::Normal,
                "Started",
                "VirtualMachineInstance started.",
            );
            if let (Some(restored), Some(volume)) = (
                running.state.as_ref().and_then(|s| s.restored.as_ref()),
                running.plan.state_volume.as_ref(),
            ) {
                record(
                    &*self.client,
                    &vmi,
                    EventType::Normal,
                    "StateRestored",
                    &restored.message(volume),
                );
            }
        }
        self.enqueue_vm(&key.0, &key.1);
        let end = self.engine.wait(&running).await;
        let stopping = self.runs().remove(&key).is_some_and(|r| r.stopping);
        let (phase, reason, message) = match &end {
            Ok(end) => match &end.exit.reason {
                ExitReason::GuestPoweroff { .. } => (
                    "Succeeded",
                    "Stopped",
                    "The VirtualMachineInstance was shut down.".to_owned(),
                ),
                ExitReason::HostShutdown { .. } | ExitReason::Unobserved => (
                    "Succeeded",
                    "Stopped",
                    "The VirtualMachineInstance was shut down.".to_owned(),
                ),
                ExitReason::Killed { .. } if stopping => (
                    "Succeeded",
                    "Stopped",
                    "The VirtualMachineInstance was killed after its grace period.".to_owned(),
                ),
                other => (
                    "Failed",
                    "Crashed",
                    format!("The VirtualMachineInstance crashed: {other:?}"),
                ),
            },
            Err(error) => (
                "Failed",
                "Failed",
                format!("The VirtualMachineInstance ended with an error: {error}"),
            ),
        };
        record(
            &*self.client,
            &vmi,
            if phase == "Failed" {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason,
            &message,
        );
        let _ = self.set_vmi_phase(&vmi, phase, Some((reason, &message)));
        self.enqueue_vm(&key.0, &key.1);
        // A PVC deleted while this VM ran waits for it: look at it again now.
        self.enqueue_pvcs_of(&key.0, &vm_owner_name(&vmi));
    }

    fn enqueue_pvcs_of(&self, ns: &str, vm_name: &str) {
        let selector = ferrovirt_resources::cluster::backend_pvc_selector_text(vm_name);
        if let Ok(list) = self.client.list(&PVCS, Some(ns), Some(&selector)) {
            for pvc in list {
                self.enqueue(Key::Pvc {
                    namespace: ns.to_owned(),
                    name: meta_str(&pvc, "name").to_owned(),
                });
            }
        }
    }

    /// The VMI's `volumeStatus` entry for the backend storage.
    fn backend_volume_status(&self, vmi: &Value) -> Value {
        let ns = meta_str(vmi, "namespace");
        let owner = vm_owner_name(vmi);
        match self.backend_pvc(ns, &owner) {
            Ok(Some(pvc))
                if vmi.pointer("/spec/domain/devices/tpm/persistent") == Some(&json!(true))
                    || vmi.pointer("/spec/domain/firmware/bootloader/efi/persistent")
                        == Some(&json!(true)) =>
            {
                let claim = meta_str(&pvc, "name");
                json!([{
                    "name": claim,
                    "target": "",
                    "phase": "Ready",
                    "reason": "PVCReady",
                    "persistentVolumeClaimInfo": {
                        "claimName": claim,
                        "accessModes": pvc.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
                        "capacity": pvc.pointer("/status/capacity").cloned().unwrap_or(json!({})),
                        "requests": pvc.pointer("/spec/resources/requests").cloned().unwrap_or(json!({})),
                        "volumeMode": "Filesystem",
                    },
                }])
            }
            _ => json!([]),
        }
    }

    /// Carries out a reconciler's actions, in order. A write that meets a changed or deleted
    /// object stops there and the key is reconciled again from fresh objects.
    pub fn execute(&self, key: &Key, actions: Vec<Action>) -> Result<(), ReconcileError> {
        for action in actions {
            let written = match action {
                Action::Create { resource, object } => {
                    self.client.create(&resource, object).map(drop)
                }
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

    /// The volumes running VMs use (by volume name).
    fn volumes_in_use(&self) -> HashSet<String> {
        self.runs()
            .values()
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

fn owned_by(vmi: &Value, vm_uid: &str) -> bool {
    match vmi
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
    {
        Some(refs) if !refs.is_empty() => refs
            .iter()
            .any(|r| r.get("uid").and_then(Value::as_str) == Some(vm_uid)),
        _ => false,
    }
}

fn owner_is_vm(vmi: &Value) -> bool {
    vmi.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("kind") == Some(&json!("VirtualMachine")))
        })
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
