//! The outcomes of the snapshot and restore jobs the executor ran, kept in memory until their
//! reconciler has written them (as the run table does for engine runs): status and Events stay
//! the reconciler's, the executor only does the work.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::action::Key;

/// A snapshot that was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub size_bytes: u64,
    pub duration_ms: u64,
    /// The vCPU pause of an online snapshot.
    pub pause_ms: Option<u64>,
    pub online: bool,
    pub included: Vec<String>,
    /// `(volume, reason)`.
    pub excluded: Vec<(String, String)>,
    pub created_unix: i64,
    /// Whether the TPM state and the VARS are in the snapshot.
    pub has_tpm: bool,
    pub has_vars: bool,
    /// How long the guest's file systems were frozen through the guest agent (`None`: no agent
    /// connected, the snapshot is crash-consistent).
    pub frozen_ms: Option<u64>,
}

/// A restore that was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSummary {
    pub imported_generation: Option<u64>,
    pub pre_restore_generation: Option<u64>,
    pub disks: Vec<String>,
}

/// How a job ended (`Err`: the message for the status and the Event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Snapshot(Result<SnapshotSummary, String>),
    /// Freezing the guest through its agent failed (KubeVirt's `QuiesceFailed`): nothing was
    /// taken; the snapshot stays in progress and is tried again until its `failureDeadline`.
    QuiesceFailed(String),
    Restore(Result<RestoreSummary, String>),
}

/// The finished jobs by key.
#[derive(Debug, Default)]
pub struct JobTable {
    jobs: Mutex<HashMap<Key, JobOutcome>>,
}

impl JobTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, JobOutcome>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, key: &Key) -> Option<JobOutcome> {
        self.lock().get(key).cloned()
    }

    pub fn finish(&self, key: Key, outcome: JobOutcome) {
        self.lock().insert(key, outcome);
    }

    pub fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }
}
