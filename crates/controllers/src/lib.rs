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
//! - [`runtime`]: the work queue (one key per VM/VMI pair or PVC, fed by watches and a resync),
//!   the VM/VMI reconcile and the engine runs (start, stop, exit, adopt).
//! - [`vm`]: KubeVirt's run-strategy semantics and the VM status, as pure functions.
//! - [`storage`]: backend-storage PVCs (storage class choice, local-path binding, retirement,
//!   pvc-protection).
//! - [`gc`]: the garbage collector (owner references).
//! - [`events`]: Kubernetes Events about objects.
//! - [`housekeeping`]: the periodic pass: expired Events, the state retention of deleted VMs.
//!
//! Nothing here depends on the API server: the controllers see only objects.

pub mod action;
pub mod cache;
pub mod client;
pub mod events;
pub mod gc;
pub mod housekeeping;
pub mod queue;
pub mod runtime;
pub mod storage;
pub mod vm;
pub mod vm_reconciler;
pub mod vmi_reconciler;
pub mod world;

pub use client::{ClientError, ObjectClient};
pub use runtime::{StartError, spawn};
