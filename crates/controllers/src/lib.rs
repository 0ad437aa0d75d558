//! The controller manager of `ferrovirt serve` (kube-controller-manager's part): the
//! level-triggered controllers that turn stored VirtualMachines into running VMs through the
//! engine (`ferrovirt-vmm`).
//!
//! - [`client`]: [`client::ObjectClient`], the narrow client trait (get/list/watch/create/update/
//!   update_status/delete, and list-with-version/watch-from for the informers) through which the
//!   controllers reach objects; the store implements it in-process, a Kubernetes client (kube-rs)
//!   could implement it against a real cluster.
//! - [`cache`]: the informers: per resource, a reflector (list, then watch from the list's
//!   resourceVersion, list again when the watch ends) keeping a read-only in-memory view with an
//!   owner index, and a channel of its changes for controllers to enqueue keys from.
//! - [`queue`]: the work queue (client-go's rate-limiting workqueue): de-duplicated keys, never
//!   one key on two workers, delayed adds, per-key exponential backoff.
//! - [`vm_reconciler`]: the VM reconciler (virt-controller's part), a pure function of (VM, VMI,
//!   world) returning [`action::Action`]s: create/delete the VMI, the backend PVC, the status.
//! - [`references`]: a VM's instancetype and preference: the ControllerRevisions that keep the
//!   copies it uses, its status references, the failure when one is missing (pure).
//! - [`vmi_reconciler`]: the VMI reconciler (virt-handler's part), a pure function of (VMI, the
//!   engine's run, world): start, adopt, report, stop, release.
//! - [`world`]: the read-only view a VM key's reconcile gets (run, backend PVCs, storage classes,
//!   clock, node, the VM's instancetype, preference and revisions).
//! - [`migration_relay`]: the source's end of a live migration between two hosts: unix sockets
//!   for QEMU, each connection relayed over a WebSocket to the destination server's
//!   `migrationtunnel` (TLS and credentials of the destination's kubeconfig).
//! - [`migration_reconciler`]: KubeVirt's VirtualMachineInstanceMigration controller for a
//!   decentralized migration (`spec.sendTo` / `spec.receive`) as a pure function: phases,
//!   Events, the VMI's `status.migrationState`, the receiving VM's take-over, and the work it
//!   asks for ([`migration_reconciler::MigrationWork`]), which the runtime's migration executor
//!   does (the receiver's incoming start, the sender's relay and send; see `runtime`).
//! - [`action`]: the work-queue [`action::Key`] and the actions reconcilers return.
//! - [`runtime`]: the controller manager's loop: informers -> queue -> workers -> reconcilers ->
//!   [`runtime::Controller::execute`] (the one place actions are carried out), and the engine's
//!   run table and run tasks.
//! - [`vm`]: KubeVirt's run-strategy semantics and the VM status, as pure functions.
//! - [`storage`]: the PVC reconciler (local-path binding, pvc-protection) and the storage class
//!   choice.
//! - [`snapshot_reconciler`], [`restore_reconciler`]: KubeVirt's VirtualMachineSnapshot and
//!   VirtualMachineRestore controllers as pure functions; the work (copying state and disks) is
//!   done by the executor ([`Action::TakeSnapshot`](action::Action::TakeSnapshot),
//!   [`Action::RestoreSnapshot`](action::Action::RestoreSnapshot)) through `ferrovirt_vmm::vm_snapshot`,
//!   and its outcome kept in [`jobs`] until the reconciler writes it; [`clone_reconciler`]:
//!   KubeVirt's VirtualMachineClone as a snapshot and a restore to a new VM.
//! - [`datavolume_reconciler`]: CDI's DataVolume controllers (import, upload, clone) as a pure
//!   function: the PVC, starting the importer ([`imports`]: its runs' progress and outcome), the
//!   outcome on the PVC's annotations, CDI's phases, conditions and Events.
//! - [`export_reconciler`]: KubeVirt's VirtualMachineExport controller (token Secret, TTL,
//!   status with links and conditions) as a pure function; the bytes are served by the API server.
//! - [`gc`]: the garbage collector (owner references).
//! - [`events`]: Kubernetes Events about objects.
//! - [`housekeeping`]: the periodic pass: expired Events, the state retention of deleted VMs.
//!
//! Nothing here depends on the API server: the controllers see only objects.

pub mod action;
pub mod cache;
pub mod client;
pub mod clone_reconciler;
pub mod datavolume_reconciler;
pub mod events;
pub mod export_reconciler;
pub mod gc;
pub mod housekeeping;
pub mod import_sources;
pub mod imports;
pub mod jobs;
pub mod migration_reconciler;
pub mod migration_relay;
pub mod queue;
pub mod references;
pub mod restore_reconciler;
pub mod runtime;
pub mod snapshot_reconciler;
pub mod storage;
pub mod vm;
pub mod vm_reconciler;
pub mod vmi_reconciler;
pub mod world;

pub use client::{ClientError, ObjectClient};
pub use export_reconciler::ExportEndpoint;
pub use runtime::{DEFAULT_MAX_CONCURRENT_STARTS, StartError, spawn};
