//! The controllers' runtime. The informer cache ([`crate::cache`]) mirrors the objects the
//! controllers read (VMs, VMIs, PVCs, the KubeVirt object, StorageClasses); its change events and
//! a periodic resync feed one [`WorkQueue`] of [`Key`]s (a VM and its VMI share one key, a PVC has
//! its own). Workers take a key, build the world the reconcilers read from the cache and the
//! engine's run table, call the pure reconcilers ([`crate::vm_reconciler`],
//! [`crate::vmi_reconciler`], [`crate::storage`]) and carry out the [`Action`]s they return in
//! [`Controller::execute`]: the one place where the controllers write objects, record Events,
//! touch volumes, start and stop the engine. A failed reconcile is retried with the key's
//! exponential back-off; a write that meets a newer object requeues the key at once.
//!
//! Read-your-writes: after carrying out a key's writes, the worker waits (bounded) until the
//! cache has seen them, so the key's next reconcile never acts on a world older than its own
//! writes (a second backend PVC from a stale view, a status written twice).
//!
//! - `runs`: the engine's runs (the only controller state that is not in the store) and the run
//!   tasks that follow a started VM to its end.
//! - `migrations`: the executor of live migrations between two hosts (the migration
//!   reconciler's work: receive, send, cancel) and its jobs.
//! - `start_slots`: a bound on the engine starts at once (`serve --max-concurrent-starts`,
//!   default [`DEFAULT_MAX_CONCURRENT_STARTS`]; a host reboot starts every `Always` VM together).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrovirt_api::kubevirt::VirtualMachineInstance;
use ferrovirt_storage::LocalPathProvisioner;

mod migrations;
mod runs;
mod start_slots;

pub use migrations::{DESTINATION_KUBECONFIG, KUBECONFIG_KEY, MigrationTable};
pub use runs::{RunKey, RunTable, outcome_of};
pub use start_slots::{DEFAULT_MAX_CONCURRENT_STARTS, StartSlots};

use crate::action::{Action, Key};
use crate::cache::{CacheEvent, Informer};
use crate::client::{ClientError, EventKind, ObjectClient};
use crate::clone_reconciler::{self, CloneWorld};
use crate::datavolume_reconciler::{self, DataVolumeWorld, ImportJob, JobSource};
use crate::jobs::{JobOutcome, JobTable, RestoreSummary, SnapshotSummary};
use crate::queue::WorkQueue;
use crate::restore_reconciler::{self, RestoreWorld};
use crate::snapshot_reconciler::{self, SnapshotWorld};
use crate::storage::{self, PvcWorld};
use crate::world::{RunOutcome, VmReferences, VmWorld};
use crate::{vm_reconciler, vmi_reconciler};
use ferrovirt_api::instancetype::MatcherRole;
use ferrovirt_vmm::convert::{ConvertContext, plan_from_spec};
use ferrovirt_vmm::engine::{Engine, VmPlan};
use ferrovirt_vmm::hostpath::HostPathPolicy;
use ferrovirt_vmm::vm_snapshot;
use serde_json::{Value, json};

use crate::events::{EventType, record};
use crate::export_reconciler::{self, ExportEndpoint, ExportWorld};
use ferrovirt_resources::{
    CLUSTER_INSTANCETYPES, CLUSTER_PREFERENCES, CONTROLLER_REVISIONS, DATA_VOLUMES, INSTANCETYPES,
    KUBEVIRTS, PREFERENCES, PVCS, SECRETS, STORAGE_CLASSES, VM_CLONES, VM_EXPORTS, VM_RESTORES,
    VM_SNAPSHOT_CONTENTS, VM_SNAPSHOTS, VMIMS, VMIS, VMS,
};

/// How often every object is reconciled again, events or not.
pub const RESYNC: Duration = Duration::from_secs(10);

/// Workers reconciling different keys at once (a key is never reconciled twice at once).
const WORKERS: usize = 2;

/// The longest a worker waits for the cache to see its own writes.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The informers of what the controllers read.
struct Informers {
    vms: Informer,
    vmis: Informer,
    pvcs: Informer,
    kubevirts: Informer,
    storage_classes: Informer,
    snapshots: Informer,
    snapshot_contents: Informer,
    restores: Informer,
    clones: Informer,
    exports: Informer,
    instancetypes: Informer,
    cluster_instancetypes: Informer,
    preferences: Informer,
    cluster_preferences: Informer,
    revisions: Informer,
    data_volumes: Informer,
    vmims: Informer,
}

impl Informers {
    fn spawn(client: Arc<dyn ObjectClient>) -> Self {
        let informer = |resource| Informer::spawn(client.clone(), resource);
        Self {
            vms: informer(VMS),
            vmis: informer(VMIS),
            pvcs: informer(PVCS),
            kubevirts: informer(KUBEVIRTS),
            storage_classes: informer(STORAGE_CLASSES),
            snapshots: informer(VM_SNAPSHOTS),
            snapshot_contents: informer(VM_SNAPSHOT_CONTENTS),
            restores: informer(VM_RESTORES),
            clones: informer(VM_CLONES),
            exports: informer(VM_EXPORTS),
            instancetypes: informer(INSTANCETYPES),
            cluster_instancetypes: informer(CLUSTER_INSTANCETYPES),
            preferences: informer(PREFERENCES),
            cluster_preferences: informer(CLUSTER_PREFERENCES),
            revisions: informer(CONTROLLER_REVISIONS),
            data_volumes: informer(DATA_VOLUMES),
            vmims: informer(VMIMS),
        }
    }

    fn all(&self) -> [&Informer; 17] {
        [
            &self.vms,
            &self.vmis,
            &self.pvcs,
            &self.kubevirts,
            &self.storage_classes,
            &self.snapshots,
            &self.snapshot_contents,
            &self.restores,
            &self.clones,
            &self.exports,
            &self.instancetypes,
            &self.cluster_instancetypes,
            &self.preferences,
            &self.cluster_preferences,
            &self.revisions,
            &self.data_volumes,
            &self.vmims,
        ]
    }

    fn of(&self, resource: &ferrovirt_resources::ResourceDef) -> Option<&Informer> {
        self.all().into_iter().find(|i| i.resource() == resource)
    }
}

/// How often the guest agent of a running VM is asked for its report.
pub const AGENT_POLL: Duration = Duration::from_secs(5);

/// The controllers' shared state.
pub struct Controller {
    pub(crate) client: Arc<dyn ObjectClient>,
    pub(crate) engine: Engine,
    pub(crate) data_dir: PathBuf,
    pub(crate) provisioner: LocalPathProvisioner,
    runs: RunTable,
    jobs: JobTable,
    migrations: MigrationTable,
    imports: crate::imports::ImportTable,
    start_slots: StartSlots,
    informers: Informers,
    queue: WorkQueue<Key>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) node_name: String,
    /// Start and stop latencies go here (`None`: not recorded).
    metrics: Option<Arc<ferrovirt_metrics::Metrics>>,
    /// Where exports are served (`None`: plain HTTP, no exports).
    export_endpoint: Option<ExportEndpoint>,
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
    tpm_pool_size: usize,
    max_concurrent_starts: usize,
    metrics: Option<Arc<ferrovirt_metrics::Metrics>>,
    export_endpoint: Option<ExportEndpoint>,
) -> Result<(), StartError> {
    let engine = Engine::new(&data_dir)
        .await?
        .with_host_paths(host_paths)
        .with_tpm_pool(tpm_pool_size);
    tracing::info!(accel = ?engine.accel(), "engine ready");
    let provisioner =
        LocalPathProvisioner::new(data_dir.join("volumes")).map_err(|e| StartError::Volumes {
            path: data_dir.join("volumes"),
            message: e.to_string(),
        })?;
    let _ = provisioner.remove_stale();
    // What an interrupted snapshot left (a temporary directory, never a published snapshot).
    match ferrovirt_storage::SnapshotStore::new(&data_dir).remove_stale() {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "removed unfinished snapshot data"),
        Err(error) => tracing::warn!(%error, "cannot clean up unfinished snapshot data"),
    }
    let node_name = ferrovirt_resources::kubevirt::node_name();
    let informers = Informers::spawn(client.clone());
    for informer in informers.all() {
        informer.wait_synced().await;
    }
    let controller = Arc::new(Controller {
        client,
        engine,
        data_dir,
        provisioner,
        runs: RunTable::default(),
        jobs: JobTable::default(),
        migrations: MigrationTable::default(),
        imports: crate::imports::ImportTable::default(),
        start_slots: StartSlots::new(max_concurrent_starts),
        informers,
        queue: WorkQueue::new(),
        runtime: tokio::runtime::Handle::current(),
        node_name,
        metrics,
        export_endpoint,
    });
    for informer in controller.informers.all() {
        let mut events = informer.subscribe();
        let controller = controller.clone();
        let resource = *informer.resource();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                controller.on_change(&resource, &event);
            }
        });
    }
    {
        let controller = controller.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESYNC).await;
                controller.enqueue_all();
            }
        });
    }
    for _ in 0..WORKERS {
        tokio::spawn(worker(controller.clone()));
    }
    Ok(())
}

/// Takes keys off the queue and reconciles them (on a blocking thread: the client and the
/// engine's preparation block).
async fn worker(controller: Arc<Controller>) {
    while let Some(key) = controller.queue.next().await {
        let c = controller.clone();
        let k = key.clone();
        match tokio::task::spawn_blocking(move || c.reconcile(&k)).await {
            Ok(Ok(())) => controller.queue.forget(&key),
            Ok(Err(error)) => {
                let retries = controller.queue.num_requeues(&key);
                tracing::warn!(?key, %error, retries, "reconcile failed; retrying with back-off");
                controller.queue.add_rate_limited(key.clone());
            }
            Err(error) => {
                tracing::error!(?key, %error, "reconcile panicked; retrying with back-off");
                controller.queue.add_rate_limited(key.clone());
            }
        }
        controller.queue.done(&key);
    }
}

impl Controller {
    fn enqueue(&self, key: Key) {
        self.queue.add(key);
    }

    fn enqueue_after(&self, key: Key, delay: Duration) {
        self.queue.add_after(key, delay);
    }

    /// Enqueues every VM, VMI and PVC the cache holds (the resync).
    fn enqueue_all(&self) {
        for informer in [&self.informers.vms, &self.informers.vmis] {
            for key in informer.keys() {
                self.enqueue(Key::vm(&key.namespace, &key.name));
            }
        }
        for key in self.informers.pvcs.keys() {
            self.enqueue(Key::pvc(&key.namespace, &key.name));
        }
        for key in self.informers.snapshots.keys() {
            self.enqueue(Key::snapshot(&key.namespace, &key.name));
        }
        for key in self.informers.restores.keys() {
            self.enqueue(Key::restore(&key.namespace, &key.name));
        }
        for key in self.informers.clones.keys() {
            self.enqueue(Key::clone_of(&key.namespace, &key.name));
        }
        for key in self.informers.data_volumes.keys() {
            self.enqueue(Key::data_volume(&key.namespace, &key.name));
        }
        for key in self.informers.exports.keys() {
            self.enqueue(Key::export(&key.namespace, &key.name));
        }
        for key in self.informers.vmims.keys() {
            self.enqueue(Key::migration(&key.namespace, &key.name));
        }
    }

    /// The exports of a namespace (a VM, VMI, PVC or snapshot there changed).
    fn enqueue_exports(&self, ns: &str) {
        for key in self.informers.exports.keys() {
            if key.namespace == ns {
                self.enqueue(Key::export(&key.namespace, &key.name));
            }
        }
    }

    /// The VMs a DataVolume matters to: its owner, and those whose volumes name it.
    fn enqueue_for_data_volume(&self, ns: &str, name: &str, object: &Value) {
        for owner in object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if owner["kind"] == "VirtualMachine"
                && let Some(vm) = owner.get("name").and_then(Value::as_str)
            {
                self.enqueue(Key::vm(ns, vm));
            }
        }
        for vm in self.informers.vms.list(Some(ns), &[]) {
            if crate::vm::data_volume_names(&vm).iter().any(|n| n == name) {
                self.enqueue(Key::vm(ns, meta_str(&vm, "name")));
            }
        }
    }

    /// The clones that own an object (their temporary snapshot or restore changed).
    fn enqueue_owning_clones(&self, ns: &str, object: &Value) {
        for owner in object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if owner["kind"] == "VirtualMachineClone"
                && let Some(name) = owner["name"].as_str()
            {
                self.enqueue(Key::clone_of(ns, name));
            }
        }
    }

    /// The restores and in-progress snapshots about the VM `ns/name` (a VM that stopped or
    /// started lets them go on).
    fn enqueue_for_vm(&self, ns: &str, name: &str) {
        for restore in self.informers.restores.list(Some(ns), &[]) {
            if restore.pointer("/spec/target/name").and_then(Value::as_str) == Some(name) {
                self.enqueue(Key::restore(ns, meta_str(&restore, "name")));
            }
        }
        for snapshot in self.informers.snapshots.list(Some(ns), &[]) {
            if snapshot
                .pointer("/spec/source/name")
                .and_then(Value::as_str)
                == Some(name)
            {
                self.enqueue(Key::snapshot(ns, meta_str(&snapshot, "name")));
            }
        }
    }

    /// A change seen by the cache: the keys it concerns.
    fn on_change(&self, resource: &ferrovirt_resources::ResourceDef, event: &CacheEvent) {
        let o = &*event.object;
        let (ns, name) = (meta_str(o, "namespace"), meta_str(o, "name"));
        if *resource == VMS && event.kind == EventKind::Deleted {
            let now = u64::try_from(ferrovirt_resources::time::now_unix()).unwrap_or(0);
            crate::housekeeping::mark_vm_state_deleted(&self.data_dir, o, now);
        }
        if matches!(
            resource.plural,
            "virtualmachines"
                | "virtualmachineinstances"
                | "persistentvolumeclaims"
                | "virtualmachinesnapshots"
        ) {
            self.enqueue_exports(ns);
        }
        match resource.plural {
            "virtualmachines" | "virtualmachineinstances" => {
                self.enqueue(Key::vm(ns, name));
                self.enqueue_for_vm(ns, name);
                self.enqueue_migrations_of(ns, name);
            }
            "virtualmachineinstancemigrations" => self.enqueue(Key::migration(ns, name)),
            "virtualmachineexports" => self.enqueue(Key::export(ns, name)),
            "virtualmachinesnapshots" => {
                self.enqueue(Key::snapshot(ns, name));
                self.enqueue_owning_clones(ns, o);
                // Clones whose source is this snapshot.
                for clone in self.informers.clones.list(Some(ns), &[]) {
                    if clone.pointer("/spec/source/name").and_then(Value::as_str) == Some(name) {
                        self.enqueue(Key::clone_of(ns, meta_str(&clone, "name")));
                    }
                }
                for restore in self.informers.restores.list(Some(ns), &[]) {
                    if restore
                        .pointer("/spec/virtualMachineSnapshotName")
                        .and_then(Value::as_str)
                        == Some(name)
                    {
                        self.enqueue(Key::restore(ns, meta_str(&restore, "name")));
                    }
                }
            }
            "virtualmachinerestores" => {
                self.enqueue(Key::restore(ns, name));
                self.enqueue_owning_clones(ns, o);
            }
            "virtualmachineclones" => self.enqueue(Key::clone_of(ns, name)),
            "datavolumes" => {
                self.enqueue(Key::data_volume(ns, name));
                self.enqueue_for_data_volume(ns, name, o);
            }
            "virtualmachinesnapshotcontents" => {
                if let Some(snapshot) = o
                    .pointer("/spec/virtualMachineSnapshotName")
                    .and_then(Value::as_str)
                {
                    self.enqueue(Key::snapshot(ns, snapshot));
                    for restore in self.informers.restores.list(Some(ns), &[]) {
                        if restore
                            .pointer("/spec/virtualMachineSnapshotName")
                            .and_then(Value::as_str)
                            == Some(snapshot)
                        {
                            self.enqueue(Key::restore(ns, meta_str(&restore, "name")));
                        }
                    }
                }
            }
            "persistentvolumeclaims" => {
                self.enqueue(Key::pvc(ns, name));
                // The DataVolume of this PVC, and the clones whose source it is.
                if self.informers.data_volumes.get(Some(ns), name).is_some() {
                    self.enqueue(Key::data_volume(ns, name));
                }
                for dv in self.informers.data_volumes.list(None, &[]) {
                    if dv.pointer("/spec/source/pvc/name").and_then(Value::as_str) == Some(name)
                        && dv
                            .pointer("/spec/source/pvc/namespace")
                            .and_then(Value::as_str)
                            == Some(ns)
                    {
                        self.enqueue(Key::data_volume(
                            meta_str(&dv, "namespace"),
                            meta_str(&dv, "name"),
                        ));
                    }
                }
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
            // A VM's revision: its VM (the controlling owner).
            "controllerrevisions" => {
                if let Some(owner) = o
                    .pointer("/metadata/ownerReferences/0/name")
                    .and_then(Value::as_str)
                {
                    self.enqueue(Key::vm(ns, owner));
                }
            }
            // An instancetype or preference appeared or changed: VMs waiting for it may go on.
            "virtualmachineinstancetypes"
            | "virtualmachineclusterinstancetypes"
            | "virtualmachinepreferences"
            | "virtualmachineclusterpreferences" => self.enqueue_all(),
            // The cluster configuration or the storage classes changed: look at everything.
            _ if event.kind != EventKind::Added => self.enqueue_all(),
            _ => {}
        }
    }

    /// One reconcile (runs on a blocking thread): read the world, ask the reconciler, act.
    pub fn reconcile(self: &Arc<Self>, key: &Key) -> Result<(), ReconcileError> {
        let actions = match key {
            Key::Vm { namespace, name } => {
                return self.reconcile_vm_and_follow(key, namespace, name);
            }
            Key::Pvc { namespace, name } => {
                let Some(pvc) = self.informers.pvcs.get(Some(namespace), name) else {
                    return Ok(());
                };
                let world = PvcWorld {
                    volumes_in_use: self.runs.volumes_in_use(),
                };
                storage::reconcile_pvc(&pvc, &world)
            }
            Key::Snapshot { namespace, name } => self.reconcile_snapshot_key(key, namespace, name),
            Key::Restore { namespace, name } => self.reconcile_restore_key(key, namespace, name),
            Key::Clone { namespace, name } => self.reconcile_clone_key(namespace, name),
            Key::DataVolume { namespace, name } => {
                self.reconcile_data_volume_key(key, namespace, name)
            }
            Key::Export { namespace, name } => self.reconcile_export_key(namespace, name)?,
            Key::Migration { namespace, name } => {
                self.reconcile_migration_key(key, namespace, name)?
            }
        };
        self.execute(key, actions)
    }

    /// A VM key's reconcile, and when it wrote something, at once a second look from the cache
    /// that holds those writes (each write is awaited in the informer): if all that is left is
    /// to bring objects up to date (the VM's status after its VMI's phase, with their Events), it
    /// is done now instead of a queue hop later, when the write's own watch event would have
    /// asked for it: 1-3 ms of every start and stop before `printableStatus` followed the VMI.
    /// Anything else (creates, deletes, engine actions, Events alone) waits for that reconcile,
    /// which then finds the follow-up done.
    fn reconcile_vm_and_follow(
        self: &Arc<Self>,
        key: &Key,
        namespace: &str,
        name: &str,
    ) -> Result<(), ReconcileError> {
        let actions = self.reconcile_vm_key(namespace, name);
        let wrote = actions.iter().any(Action::writes_object);
        self.execute(key, actions)?;
        if !wrote {
            return Ok(());
        }
        let follow_ups = self.reconcile_vm_key(namespace, name);
        if Action::only_follow_ups(&follow_ups) {
            self.execute(key, follow_ups)?;
        }
        Ok(())
    }

    /// The backend-storage PVCs of a VM (by KubeVirt's label), from the cache.
    fn backend_pvcs(&self, ns: &str, vm_name: &str) -> Vec<Value> {
        self.informers
            .pvcs
            .list(
                Some(ns),
                &[(ferrovirt_storage::backend::PVC_LABEL_KEY, vm_name)],
            )
            .into_iter()
            .map(|p| (*p).clone())
            .collect()
    }

    /// A VM key: the VMI's actions first (the engine side), then, if the VMI reconciler had
    /// nothing to do, the VM's.
    fn reconcile_vm_key(&self, ns: &str, name: &str) -> Vec<Action> {
        let vm = self.informers.vms.get(Some(ns), name);
        let vmi = self.informers.vmis.get(Some(ns), name);
        let run = self.runs.view(&(ns.to_owned(), name.to_owned()));
        let owner = vmi
            .as_deref()
            .map(vm_owner_name)
            .unwrap_or_else(|| name.to_owned());
        let backend_pvcs = self.backend_pvcs(ns, &owner);
        let kubevirt = self.informers.kubevirts.list(None, &[]).into_iter().next();
        let storage_classes = self.informers.storage_classes.list(None, &[]);
        let referenced = |role| self.referenced(vm.as_deref(), ns, role);
        let instancetype = referenced(MatcherRole::Instancetype);
        let preference = referenced(MatcherRole::Preference);
        let refers = vm.as_deref().is_some_and(|v| {
            v.pointer("/spec/instancetype").is_some() || v.pointer("/spec/preference").is_some()
        });
        let revisions = if refers {
            self.informers.revisions.list(Some(ns), &[])
        } else {
            Vec::new()
        };
        let data_volumes: Vec<Arc<Value>> = vm
            .as_deref()
            .map(crate::vm::data_volume_names)
            .unwrap_or_default()
            .iter()
            .filter_map(|dv| self.informers.data_volumes.get(Some(ns), dv))
            .collect();
        let world = VmWorld {
            data_volumes: &data_volumes,
            run: run.as_ref(),
            backend_pvcs: &backend_pvcs,
            kubevirt: kubevirt.as_deref(),
            storage_classes: &storage_classes,
            now_unix: ferrovirt_resources::time::now_unix(),
            node_name: &self.node_name,
            references: VmReferences {
                instancetype: instancetype.as_deref(),
                preference: preference.as_deref(),
                revisions: &revisions,
            },
        };
        let actions = vmi_reconciler::reconcile_vmi(ns, name, vmi.as_deref(), &world);
        if !actions.is_empty() {
            return actions; // the VMI's writes trigger the VM's reconcile
        }
        match vm.as_deref() {
            Some(vm) => vm_reconciler::reconcile_vm(vm, vmi.as_deref(), &world),
            None => Vec::new(),
        }
    }

    fn reconcile_data_volume_key(&self, key: &Key, ns: &str, name: &str) -> Vec<Action> {
        let Some(dv) = self.informers.data_volumes.get(Some(ns), name) else {
            return Vec::new();
        };
        let pvc = self.informers.pvcs.get(Some(ns), name);
        let source_pvc = dv.pointer("/spec/source/pvc").and_then(|source| {
            let source_ns = source.get("namespace").and_then(Value::as_str)?;
            let source_name = source.get("name").and_then(Value::as_str)?;
            self.informers.pvcs.get(Some(source_ns), source_name)
        });
        let import = self.imports.view(key);
        let world = DataVolumeWorld {
            pvc: pvc.as_deref(),
            source_pvc: source_pvc.as_deref(),
            import: import.as_ref(),
            now_unix: ferrovirt_resources::time::now_unix(),
        };
        datavolume_reconciler::reconcile_data_volume(&dv, &world)
    }

    fn reconcile_snapshot_key(&self, key: &Key, ns: &str, name: &str) -> Vec<Action> {
        let Some(snapshot) = self.informers.snapshots.get(Some(ns), name) else {
            self.jobs.forget(key);
            return Vec::new();
        };
        let vm_name = snapshot
            .pointer("/spec/source/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let vm = self.informers.vms.get(Some(ns), vm_name);
        let run = self.runs.view(&(ns.to_owned(), vm_name.to_owned()));
        let content = snapshot_reconciler::content_name(meta_str(&snapshot, "uid"));
        let job = self.jobs.get(key);
        let world = SnapshotWorld {
            vm: vm.as_deref(),
            run: run.as_ref(),
            content_exists: self
                .informers
                .snapshot_contents
                .get(Some(ns), &content)
                .is_some(),
            job: job.as_ref(),
            now_unix: ferrovirt_resources::time::now_unix(),
        };
        snapshot_reconciler::reconcile_snapshot(&snapshot, &world)
    }

    fn reconcile_restore_key(&self, key: &Key, ns: &str, name: &str) -> Vec<Action> {
        let Some(restore) = self.informers.restores.get(Some(ns), name) else {
            self.jobs.forget(key);
            return Vec::new();
        };
        let text = |p: &str| restore.pointer(p).and_then(Value::as_str).unwrap_or("");
        let snapshot = self
            .informers
            .snapshots
            .get(Some(ns), text("/spec/virtualMachineSnapshotName"));
        let content = snapshot.as_deref().and_then(|s| {
            let content = s
                .pointer("/status/virtualMachineSnapshotContentName")
                .and_then(Value::as_str)?;
            self.informers.snapshot_contents.get(Some(ns), content)
        });
        let target_name = text("/spec/target/name");
        let target = self.informers.vms.get(Some(ns), target_name);
        let run = self.runs.view(&(ns.to_owned(), target_name.to_owned()));
        let job = self.jobs.get(key);
        let source_vm = content
            .as_deref()
            .and_then(|c| c.pointer("/spec/source/virtualMachine"));
        let claims: Vec<Value> = source_vm
            .into_iter()
            .chain(target.as_deref())
            .flat_map(restore_reconciler::claim_volumes)
            .filter_map(|(_, claim)| self.informers.pvcs.get(Some(ns), &claim))
            .map(|pvc| (*pvc).clone())
            .collect();
        let world = RestoreWorld {
            snapshot: snapshot.as_deref(),
            content: content.as_deref(),
            target: target.as_deref(),
            run: run.as_ref(),
            job: job.as_ref(),
            claims: &claims,
            now_unix: ferrovirt_resources::time::now_unix(),
        };
        restore_reconciler::reconcile_restore(&restore, &world)
    }

    fn reconcile_clone_key(&self, ns: &str, name: &str) -> Vec<Action> {
        let Some(clone) = self.informers.clones.get(Some(ns), name) else {
            return Vec::new();
        };
        let snapshot = self
            .informers
            .snapshots
            .get(Some(ns), &clone_reconciler::snapshot_name(&clone));
        let restore = self.informers.restores.get(
            Some(ns),
            &clone_reconciler::tmp_restore_name(meta_str(&clone, "uid")),
        );
        let world = CloneWorld {
            snapshot: snapshot.as_deref(),
            restore: restore.as_deref(),
            target_exists: self
                .informers
                .vms
                .get(Some(ns), &clone_reconciler::target_name(&clone))
                .is_some(),
            now_unix: ferrovirt_resources::time::now_unix(),
        };
        clone_reconciler::reconcile_clone(&clone, &world)
    }

    /// The world of one export: its source (from the cache and the snapshot data on disk), its
    /// token Secret (from the client), the clock, this server's endpoint.
    fn reconcile_export_key(&self, ns: &str, name: &str) -> Result<Vec<Action>, ReconcileError> {
        let Some(export) = self.informers.exports.get(Some(ns), name) else {
            return Ok(Vec::new());
        };
        let informers = &self.informers;
        let get = |resource: &ferrovirt_resources::ResourceDef, ns: &str, name: &str| {
            informers
                .of(resource)
                .and_then(|i| i.get(Some(ns), name))
                .map(|o| (*o).clone())
        };
        let backend = |ns: &str, vm: &str| -> Vec<Value> { self.backend_pvcs(ns, vm) };
        let lookup = ferrovirt_resources::export::ObjectsLookup {
            get: &get,
            backend_pvcs: &backend,
            data_dir: &self.data_dir,
        };
        let source = ferrovirt_resources::export::resolve(&export, &lookup);
        let secret = export_reconciler::token_secret_name(&export);
        let token_secret_exists =
            crate::client::optional(self.client.get(&SECRETS, Some(ns), &secret))?.is_some();
        let now_unix = ferrovirt_resources::time::now_unix();
        let expires = ferrovirt_resources::export::expires_unix(&export)
            .map(|t| (t, ferrovirt_store::format_rfc3339(t)));
        let world = ExportWorld {
            source,
            token_secret_exists,
            now_unix,
            now_rfc3339: ferrovirt_store::format_rfc3339(now_unix),
            expires,
            endpoint: self.export_endpoint.as_ref(),
            fresh_token: ferrovirt_resources::export::generate_token().ok_or_else(|| {
                ReconcileError::Other("the OS gave no random bytes for an export token".into())
            })?,
        };
        Ok(export_reconciler::reconcile_export(&export, &world))
    }

    /// Takes a snapshot of the VM `vm` (online through its run, offline otherwise).
    fn take_snapshot(&self, vm: &Value, content: &str, online: bool, freeze: bool) -> JobOutcome {
        match self.snapshot_job(vm, content, online, freeze) {
            Ok(summary) => JobOutcome::Snapshot(Ok(summary)),
            Err(fault @ vm_snapshot::SnapshotFault::Freeze(_)) => {
                JobOutcome::QuiesceFailed(fault.to_string())
            }
            Err(fault) => {
                JobOutcome::Snapshot(Err(format!("failed to take the snapshot: {fault}")))
            }
        }
    }

    fn snapshot_job(
        &self,
        vm: &Value,
        content: &str,
        online: bool,
        freeze: bool,
    ) -> Result<SnapshotSummary, vm_snapshot::SnapshotFault> {
        let key = (
            meta_str(vm, "namespace").to_owned(),
            meta_str(vm, "name").to_owned(),
        );
        let taken = if online {
            let running =
                self.runs
                    .running_vm(&key)
                    .ok_or_else(|| vm_snapshot::SnapshotFault::Stopping {
                        name: key.1.clone(),
                    })?;
            let agent = freeze
                .then(|| running.handle.record().machine.guest_agent_socket.clone())
                .flatten();
            self.runtime.block_on(vm_snapshot::take_online(
                &self.data_dir,
                &running,
                content,
                vm,
                agent.as_deref(),
            ))
        } else {
            let plan = self
                .plan_for_vm(vm)
                .map_err(|message| vm_snapshot::SnapshotFault::Plan { message })?;
            vm_snapshot::take_offline(&self.data_dir, &plan, content, vm)
        }?;
        let manifest = &taken.manifest;
        Ok(SnapshotSummary {
            size_bytes: manifest.total_bytes(),
            duration_ms: u64::try_from(taken.duration.as_millis()).unwrap_or(u64::MAX),
            pause_ms: manifest.pause_ms,
            online: manifest.online,
            included: taken.parts.included.clone(),
            excluded: manifest
                .excluded
                .iter()
                .map(|e| (e.volume.clone(), e.reason.clone()))
                .collect(),
            created_unix: i64::try_from(manifest.created_unix_secs).unwrap_or(0),
            has_tpm: manifest.file(ferrovirt_vmm::state::TPM_STATE).is_some(),
            has_vars: manifest.file(ferrovirt_vmm::state::VARS).is_some(),
            frozen_ms: taken
                .frozen
                .map(|f| u64::try_from(f.as_millis()).unwrap_or(u64::MAX)),
        })
    }

    /// Restores the snapshot data `content` into the stopped VM `target`.
    fn restore_snapshot(
        &self,
        target: &Value,
        content: &str,
        policy: vm_snapshot::StatePolicy,
    ) -> Result<RestoreSummary, String> {
        let plan = self.plan_for_vm(target)?;
        let report = vm_snapshot::restore_state(&self.data_dir, &plan, content, policy)
            .map_err(|e| format!("failed to restore the snapshot: {e}"))?;
        Ok(RestoreSummary {
            imported_generation: report.imported.map(|g| g.0),
            pre_restore_generation: report.pre_restore.map(|g| g.0),
            disks: report.disks,
        })
    }

    /// The engine plan of a VM that is not running (its backend volume, if it has one bound).
    fn plan_for_vm(&self, vm: &Value) -> Result<VmPlan, String> {
        let vmi = json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {
                "name": meta_str(vm, "name"),
                "namespace": meta_str(vm, "namespace"),
                "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                    "name": meta_str(vm, "name"), "uid": meta_str(vm, "uid")}],
            },
            "spec": vm.pointer("/spec/template/spec").cloned().unwrap_or_else(|| json!({})),
        });
        self.plan_with(&vmi, false)?
            .ok_or_else(|| "the VM cannot be planned".to_owned())
    }

    /// The instancetype or preference a VM's matcher names, from the cache.
    fn referenced(&self, vm: Option<&Value>, ns: &str, role: MatcherRole) -> Option<Arc<Value>> {
        let field = match role {
            MatcherRole::Instancetype => "/spec/instancetype",
            MatcherRole::Preference => "/spec/preference",
        };
        let matcher = vm?.pointer(field)?;
        let kind = role.resolve(matcher.get("kind").and_then(Value::as_str))?;
        let name = matcher.get("name").and_then(Value::as_str)?;
        let resource = ferrovirt_resources::instancetypes::resource_of(kind);
        let informer = self.informers.of(&resource)?;
        informer.get(resource.namespaced.then_some(ns), name)
    }

    fn observe_write(&self, resource: &ferrovirt_resources::ResourceDef, written: &Value) {
        let namespace = Some(meta_str(written, "namespace")).filter(|n| !n.is_empty());
        self.await_observed(
            resource,
            namespace,
            meta_str(written, "name"),
            Some(written),
        );
    }

    /// Waits (bounded) until the cache holds `written` (or a newer version of it), or, for a
    /// delete (`written: None`), until the object is gone or marked for deletion.
    fn await_observed(
        &self,
        resource: &ferrovirt_resources::ResourceDef,
        namespace: Option<&str>,
        name: &str,
        written: Option<&Value>,
    ) {
        let Some(informer) = self.informers.of(resource) else {
            return;
        };
        let version = |o: &Value| meta_str(o, "resourceVersion").parse::<u64>().ok();
        let wanted = written.and_then(version);
        let seen = || match (informer.get(namespace, name), written) {
            (None, None) => true,
            (Some(o), None) => o.pointer("/metadata/deletionTimestamp").is_some(),
            // Gone: a write that released the last finalizer of a deleted object deletes it;
            // any other write is not in the cache yet.
            (None, Some(w)) => w.pointer("/metadata/deletionTimestamp").is_some(),
            (Some(o), Some(_)) => match (version(&o), wanted) {
                (Some(have), Some(want)) => have >= want,
                _ => true,
            },
        };
        if !informer.wait_until(std::time::Instant::now() + OBSERVE_TIMEOUT, |_| seen()) {
            tracing::debug!(
                resource = resource.plural,
                name,
                "the cache has not seen a write yet"
            );
        }
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
                    self.client.create(&resource, object).map(|created| {
                        self.observe_write(&resource, &created);
                    })
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
                    self.observe_write(&resource, &created);
                }),
                Action::Update { resource, object } => {
                    self.client.update(&resource, object).map(|updated| {
                        self.observe_write(&resource, &updated);
                    })
                }
                Action::UpdateStatus { resource, object } => self
                    .client
                    .update_status(&resource, object)
                    .map(|updated| self.observe_write(&resource, &updated)),
                Action::Delete {
                    resource,
                    namespace,
                    name,
                } => match self.client.delete(&resource, namespace.as_deref(), &name) {
                    Ok(()) | Err(ClientError::NotFound(_)) => {
                        self.await_observed(&resource, namespace.as_deref(), &name, None);
                        Ok(())
                    }
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
                Action::TakeSnapshot {
                    key,
                    vm,
                    content,
                    online,
                    freeze,
                } => {
                    let outcome = self.take_snapshot(&vm, &content, online, freeze);
                    if let JobOutcome::Snapshot(Err(message)) | JobOutcome::QuiesceFailed(message) =
                        &outcome
                    {
                        tracing::warn!(?key, message, "snapshot failed");
                    }
                    self.jobs.finish(key.clone(), outcome);
                    self.enqueue(key);
                    Ok(())
                }
                Action::RestoreSnapshot {
                    key,
                    target,
                    content,
                    policy,
                } => {
                    let outcome = self.restore_snapshot(&target, &content, policy);
                    if let Err(message) = &outcome {
                        tracing::warn!(?key, message, "restore failed");
                    }
                    self.jobs.finish(key.clone(), JobOutcome::Restore(outcome));
                    self.enqueue(key);
                    Ok(())
                }
                Action::DeleteSnapshotData { content } => {
                    ferrovirt_storage::SnapshotStore::new(&self.data_dir)
                        .delete(&content)
                        .map_err(|e| ReconcileError::Other(e.to_string()))?;
                    Ok(())
                }
                Action::ForgetJob { key } => {
                    self.jobs.forget(&key);
                    Ok(())
                }
                Action::StartImport { key, job } => {
                    self.start_import(key, job);
                    Ok(())
                }
                Action::ForgetImport { key } => {
                    self.imports.forget(&key);
                    Ok(())
                }
            };
            match written {
                Ok(()) => {}
                Err(
                    ClientError::Conflict(_)
                    | ClientError::NotFound(_)
                    | ClientError::AlreadyExists(_),
                ) => {
                    // The reconciler read an older world: again from the newer one.
                    self.enqueue(key.clone());
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Starts the importer for a DataVolume on a thread of its own; the key is requeued when it
    /// ends (the reconciler requeues itself for the progress meanwhile).
    fn start_import(self: &Arc<Self>, key: Key, job: ImportJob) {
        let Some(progress) = self.imports.begin(key.clone()) else {
            return; // already running
        };
        let request = self.import_request(&job);
        let controller = self.clone();
        let thread_key = key.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("import-{}", job.name))
            .spawn(move || {
                // A panic inside the importer (a library's bug) must not leave the DataVolume
                // `ImportInProgress` for ever: it becomes the run's failure.
                let outcome = request.and_then(|request| {
                    catching_panics(|| ferrovirt_importer::run(&request, progress))?
                        .map(|summary| {
                            let note = format!(
                                "read {} bytes in {:.1} s ({:.1} MB/s)",
                                summary.read_bytes,
                                summary.seconds,
                                summary.throughput_mb_s()
                            );
                            tracing::info!(namespace = %job.namespace, name = %job.name, %note, "import done");
                            note
                        })
                        .map_err(|e| e.to_string())
                });
                if let Err(message) = &outcome {
                    tracing::warn!(namespace = %job.namespace, name = %job.name, message, "import failed");
                }
                controller.imports.finish(&key, outcome);
                controller.enqueue(key);
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start an importer thread");
            self.imports.finish(
                &thread_key,
                Err(format!("cannot start the importer's thread: {error}")),
            );
            self.enqueue(thread_key);
        }
    }

    /// The importer's request for a job: the volume paths, and the http source's Secrets and
    /// ConfigMap read through the client.
    fn import_request(&self, job: &ImportJob) -> Result<ferrovirt_importer::ImportRequest, String> {
        let volume = self
            .provisioner
            .volume_path(&job.volume)
            .map_err(|e| e.to_string())?;
        let source = match &job.source {
            JobSource::Blank => ferrovirt_importer::Source::Blank,
            JobSource::Clone { volume } => ferrovirt_importer::Source::File(
                self.provisioner
                    .volume_path(volume)
                    .map_err(|e| e.to_string())?
                    .join(ferrovirt_api::cdi::DISK_IMAGE_NAME),
            ),
            JobSource::Http(http) => ferrovirt_importer::Source::Http(
                crate::import_sources::http_request(&*self.client, &job.namespace, http)?,
            ),
        };
        let checksum = match &job.checksum {
            Some(text) => Some(ferrovirt_api::cdi::Checksum::parse(text)?),
            None => None,
        };
        Ok(ferrovirt_importer::ImportRequest {
            source,
            volume,
            image_bytes: job.image_bytes,
            archive: job.archive,
            checksum,
        })
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
        // A run recorded by a previous manager that ended before it reported the start: the
        // guest runs, so it is adopted, never started a second time.
        let adopt = adopt || self.engine.recorded_run_alive(&plan.uuid);
        let result = if adopt {
            self.engine.adopt(plan).await
        } else {
            let _slot = self.start_slots.acquire(&key.1).await;
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
                    if let Some(metrics) = &self.metrics {
                        metrics.vm_start_failed();
                    }
                    format!("failed to start the VM: {error}")
                };
                self.runs
                    .ended(&key, RunOutcome::failed("FailedCreate", message));
                return self.enqueue(vm_key);
            }
        };
        if !adopt {
            tracing::info!(vm = %key.1, elapsed_ms = started.elapsed().as_millis() as u64, "VM started");
            if let Some(metrics) = &self.metrics {
                let first = running
                    .state
                    .as_ref()
                    .is_some_and(|s| s.manufactured.is_some());
                metrics.vm_started(first, started.elapsed());
            }
        }
        let restored = match (
            running.state.as_ref().and_then(|s| s.restored.as_ref()),
            running.plan.state_volume.as_ref(),
        ) {
            (Some(restored), Some(volume)) => Some(restored.message(volume)),
            _ => None,
        };
        self.runs.running(&key, running.clone(), adopt, restored);
        self.enqueue(vm_key);
        self.follow_running(key, running).await;
    }

    /// Follows a running VM until it ends (guest agent polls meanwhile), then records how it
    /// ended in the run table and asks for a reconcile.
    pub(super) async fn follow_running(
        self: Arc<Self>,
        key: RunKey,
        running: Arc<ferrovirt_vmm::engine::RunningVm>,
    ) {
        let vm_key = Key::vm(&key.0, &key.1);
        let poller = running
            .handle
            .record()
            .machine
            .guest_agent_socket
            .clone()
            .map(|socket| {
                let me = self.clone();
                let key = key.clone();
                let running = running.clone();
                self.runtime
                    .spawn(async move { me.poll_guest_agent(key, socket, running).await })
            });
        // Issue 16's "stop -> durable": once QEMU and swtpm are gone and the state is sealed
        // and fsynced, the end is reported (the VM reads `Stopped`); the check and the
        // `after-stop` record follow while the run stays in the table, so nothing else (a new
        // start, a restore, a snapshot, the PVC's deletion, the VMI's release) uses the state
        // before they are done. A manager killed in between leaves a stop the next start
        // finishes (`Engine::start`).
        let durable = self.engine.wait_durable(&running).await;
        if let Some(poller) = poller {
            poller.abort();
        }
        let end = match durable {
            Ok(stop) => {
                if stop.durable() {
                    if let (Some(asked), Some(metrics)) =
                        (self.runs.stop_asked(&key), &self.metrics)
                    {
                        metrics.vm_stopped(asked.elapsed());
                    }
                    let outcome = self
                        .runs
                        .migrated(&key)
                        .unwrap_or_else(|| outcome_of(&stop.exit.reason, self.runs.stopping(&key)));
                    self.runs.ending(&key, outcome);
                    self.enqueue(vm_key.clone());
                }
                self.engine.settle(&running, stop).await
            }
            Err(error) => Err(error),
        };
        let outcome = match (&end, self.runs.migrated(&key)) {
            (_, Some(migrated)) => migrated,
            (Ok(end), None) => outcome_of(&end.exit.reason, self.runs.stopping(&key)),
            (Err(error), None) => RunOutcome::failed(
                "Failed",
                format!("The VirtualMachineInstance ended with an error: {error}"),
            ),
        };
        self.runs.ended(&key, outcome);
        self.enqueue(vm_key);
    }

    /// Asks the guest agent what it sees (OS, interfaces) every [`AGENT_POLL`] while the run
    /// lasts (as virt-handler's agent poller), and requeues the VM when the answer changes (the
    /// VMI reconciler writes it: `AgentConnected`, `guestOSInfo`, `interfaces`).
    async fn poll_guest_agent(
        self: Arc<Self>,
        key: RunKey,
        socket: PathBuf,
        running: Arc<ferrovirt_vmm::engine::RunningVm>,
    ) {
        loop {
            let report =
                ferrovirt_vmm::agent::report(&socket, ferrovirt_vmm::agent::DEFAULT_TIMEOUT)
                    .await
                    .ok()
                    .map(Arc::new);
            running.handle.note_guest_agent(report.is_some());
            if self.runs.set_guest(&key, report) {
                self.enqueue(Key::vm(&key.0, &key.1));
            }
            tokio::time::sleep(AGENT_POLL).await;
        }
    }

    /// The engine plan of a VMI; `Ok(None)` while its backend storage is not bound yet.
    fn plan_for(&self, vmi: &Value) -> Result<Option<VmPlan>, String> {
        self.plan_with(vmi, true)
    }

    /// The engine plan of a VMI; without `require_volume`, a backend storage that is not bound
    /// yet leaves `state_volume` empty instead of `Ok(None)`.
    fn plan_with(&self, vmi: &Value, require_volume: bool) -> Result<Option<VmPlan>, String> {
        let typed: VirtualMachineInstance = serde_json::from_value(vmi.clone())
            .map_err(|e| format!("the stored VMI cannot be read: {e}"))?;
        let ns = meta_str(vmi, "namespace");
        let owner = vm_owner_name(vmi);
        let state_volume = if typed.spec.needs_backend_storage() {
            let pvc = self
                .backend_pvcs(ns, &owner)
                .into_iter()
                .find(|p| p.pointer("/metadata/deletionTimestamp").is_none());
            match pvc.as_ref().and_then(vmi_reconciler::bound_volume) {
                Some(volume) => Some((
                    self.provisioner
                        .volume_path(volume)
                        .map_err(|e| e.to_string())?,
                    self.data_dir.join("state-generations").join(volume),
                )),
                None if require_volume => return Ok(None),
                None => None,
            }
        } else {
            None
        };
        let claim_dir = |claim: &str| -> Option<PathBuf> {
            let pvc = self.informers.pvcs.get(Some(ns), claim)?;
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
/// Runs an importer, turning a panic (a library's bug) into the run's failure with its message.
fn catching_panics<T>(run: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!(
            "the importer stopped on an internal error ({what}); delete and re-create the DataVolume to try again, and report the error"
        )
    })
}

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

#[cfg(test)]
mod tests {
    use super::catching_panics;

    #[test]
    fn a_panicking_importer_is_a_failed_run_with_the_message() {
        let failed = catching_panics(|| -> Result<(), String> { panic!("WebPki is disabled") });
        let message = failed.unwrap_err();
        assert!(message.contains("WebPki is disabled"), "{message}");
        assert!(message.contains("re-create the DataVolume"), "{message}");
        assert_eq!(catching_panics(|| 7), Ok(7));
    }
}
