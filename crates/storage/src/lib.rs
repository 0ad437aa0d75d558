//! Bytes on disk that must survive: crash-safe file writes (temp file, fsync, rename, fsync dir),
//! the local-path provisioner (a directory per volume), the backend-storage volume of a VM laid out
//! as KubeVirt lays out its `persistent-state-for-<vm>` PVC, and state generations (last-good copies
//! to roll back to), kept per VM so that they outlive its volume (`vm_store`), and the data of VM
//! snapshots, published atomically (`snapshots`), and the bytes of a volume export and import (`export`:
//! KubeVirt's `raw`, `gzip`, `dir` and `tar.gz` formats, the one reader of exported files), and the
//! volume files a live migration carries beside QEMU's streams (`volume_files`). `failpoints` holds the named fault points the
//! reliability tests inject crashes and I/O errors through (compiled in only with the `failpoints`
//! feature).

pub mod atomic;
pub mod backend;
pub mod export;
pub mod failpoints;
pub mod generations;
pub mod local_path;
pub mod names;
pub mod snapshots;
pub mod vm_store;
pub mod volume_files;

pub use atomic::AtomicError;
pub use backend::{BackendError, StateVolume, VmUuid};
pub use generations::{
    GenerationError, GenerationId, GenerationInfo, GenerationReason, Generations, Manifest,
};
pub use local_path::{LocalPathProvisioner, ProvisionError};
pub use names::{NameError, VolumeName};
pub use snapshots::{SnapshotManifest, SnapshotRequest, SnapshotStore, SnapshotStoreError};
pub use vm_store::{OwnerRecord, StoredVmState, VmIdentity, VmStateStore, VmStoreError};
