//! The store's error type. Display texts are the messages the Kubernetes API server gives for
//! the same situation, so the server can put them verbatim into a `Status` object;
//! [`StoreError::http_status`] and [`StoreError::reason`] give the matching code and reason.

use std::path::PathBuf;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `virtualmachines.kubevirt.io "x" not found` (HTTP 404).
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// Qualified resource, e.g. `virtualmachines.kubevirt.io`.
        resource: String,
        name: String,
    },

    /// `virtualmachines.kubevirt.io "x" already exists` (HTTP 409).
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },

    /// The caller's `metadata.resourceVersion` is not the stored one (HTTP 409).
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        resource: String,
        name: String,
        /// The resourceVersion the object has now.
        current_rv: u64,
    },

    /// A delete precondition (uid / resourceVersion) did not hold (HTTP 409).
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": Precondition failed: {detail}"
    )]
    PreconditionFailed {
        resource: String,
        name: String,
        /// e.g. `UID in precondition: a, UID in object meta: b`.
        detail: String,
    },

    /// A watch asked for a resourceVersion older than the retained event log (HTTP 410 Gone):
    /// re-list and watch from the list's resourceVersion.
    #[error("too old resource version: {requested} ({compacted})")]
    Expired {
        requested: u64,
        /// The newest resourceVersion whose events were already dropped from the log.
        compacted: u64,
    },

    /// A watch asked for a resourceVersion the store has not reached yet (HTTP 504, as Kubernetes).
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion { requested: u64, current: u64 },

    /// A watcher fell behind the live event fan-out and events were overwritten before it read
    /// them. The watch is over: watch again from `last_rv` (the log usually still has the events)
    /// or re-list. Events are never silently skipped.
    #[error(
        "watch of {resource} fell {skipped} events behind after resourceVersion {last_rv} and was closed; watch again from resourceVersion {last_rv} or re-list"
    )]
    WatchLagged {
        resource: String,
        last_rv: u64,
        skipped: u64,
    },

    /// The object or a request parameter is malformed (HTTP 422 / 400).
    #[error("{field}: {message}")]
    Invalid {
        /// Field path, e.g. `metadata.name` or `resourceVersion`.
        field: String,
        message: String,
    },

    /// Another process holds the database (only one `ferrovirt serve` per data directory).
    #[error(
        "the object store {path} is in use by another process (only one `ferrovirt serve` may use a data directory); stop the other process or choose another data directory"
    )]
    InUse { path: PathBuf },

    /// The database file was written by a newer ferrovirt.
    #[error(
        "the object store {path} has schema version {found}, this ferrovirt supports up to {supported}; use a newer ferrovirt"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    /// A stored row does not hold valid JSON (the file was edited or damaged).
    #[error("stored object {what} is not valid JSON: {source}")]
    Corrupt {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// The database file could not be created private (mode 0600) or its mode fixed.
    #[error(
        "object store file {path}: {action}: {source}; check the data directory's owner and permissions"
    )]
    File {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The transaction holding this write (and the writes committed with it) failed as a whole
    /// (e.g. the commit: disk full, I/O error); nothing of it was written.
    #[error("object store database error while {action} (a batch of writes): {detail}")]
    BatchFailed {
        action: &'static str,
        detail: String,
    },

    /// The thread committing this write's batch panicked before reaching it; nothing of it was
    /// written.
    #[error("object store write abandoned: the thread committing it failed; try again")]
    WriteAbandoned,

    /// SQLite failed (disk full, I/O error, ...).
    #[error("object store database error while {action}: {source}")]
    Sqlite {
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// The HTTP status code the Kubernetes API server uses for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            StoreError::NotFound { .. } => 404,
            StoreError::AlreadyExists { .. }
            | StoreError::Conflict { .. }
            | StoreError::PreconditionFailed { .. } => 409,
            StoreError::Expired { .. } | StoreError::WatchLagged { .. } => 410,
            StoreError::TooLargeResourceVersion { .. } => 504,
            StoreError::Invalid { .. } => 422,
            StoreError::InUse { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::Corrupt { .. }
            | StoreError::File { .. }
            | StoreError::BatchFailed { .. }
            | StoreError::WriteAbandoned
            | StoreError::Sqlite { .. } => 500,
        }
    }

    /// The `reason` of the Kubernetes `Status` object (`metav1.StatusReason`).
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => "NotFound",
            StoreError::AlreadyExists { .. } => "AlreadyExists",
            StoreError::Conflict { .. } | StoreError::PreconditionFailed { .. } => "Conflict",
            StoreError::Expired { .. } | StoreError::WatchLagged { .. } => "Expired",
            StoreError::TooLargeResourceVersion { .. } => "Timeout",
            StoreError::Invalid { .. } => "Invalid",
            StoreError::InUse { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::Corrupt { .. }
            | StoreError::File { .. }
            | StoreError::BatchFailed { .. }
            | StoreError::WriteAbandoned
            | StoreError::Sqlite { .. } => "InternalError",
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Adds the "while ..." context to rusqlite results.
pub(crate) trait SqliteContext<T> {
    fn during(self, action: &'static str) -> Result<T, StoreError>;
}

impl<T> SqliteContext<T> for Result<T, rusqlite::Error> {
    fn during(self, action: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite { action, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_kubernetes() {
        let r = "virtualmachines.kubevirt.io".to_string();
        assert_eq!(
            StoreError::NotFound {
                resource: r.clone(),
                name: "x".into()
            }
            .to_string(),
            "virtualmachines.kubevirt.io \"x\" not found"
        );
        assert_eq!(
            StoreError::Conflict {
                resource: r,
                name: "vm1".into(),
                current_rv: 7
            }
            .to_string(),
            "Operation cannot be fulfilled on virtualmachines.kubevirt.io \"vm1\": the object has been modified; please apply your changes to the latest version and try again"
        );
        assert_eq!(
            StoreError::Expired {
                requested: 3,
                compacted: 10
            }
            .to_string(),
            "too old resource version: 3 (10)"
        );
    }
}
