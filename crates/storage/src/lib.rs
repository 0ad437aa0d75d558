//! Bytes on disk that must survive: crash-safe file writes (temp file, fsync, rename, fsync dir),
//! the local-path provisioner (a directory per volume), the backend-storage volume of a VM laid out
//! as KubeVirt lays out its `persistent-state-for-<vm>` PVC, and state generations (last-good copies
//! to roll back to), kept per VM so that they outlive its volume (`vm_store`), and the data of VM
//! snapshots, published atomically (`snapshots`).

pub mod atomic;
pub mod backend;
pub mod generations;
pub mod local_path;
pub mod names;
pub mod snapshots;
pub mod vm_store;

pub use atomic::AtomicError;
pub use backend::{BackendError, StateVolume, VmUuid};
pub use generations::{
    GenerationError, GenerationId, GenerationInfo, GenerationReason, Generations, Manifest,
};
pub use local_path::{LocalPathProvisioner, ProvisionError};
pub use names::{NameError, VolumeName};
pub use snapshots::{SnapshotManifest, SnapshotRequest, SnapshotStore, SnapshotStoreError};
pub use vm_store::{OwnerRecord, StoredVmState, VmIdentity, VmStateStore, VmStoreError};
