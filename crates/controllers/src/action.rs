//! What a reconciler asks for: [`Action`]s, carried out in one place
//! ([`crate::runtime::Controller::execute`]): object writes through the
//! [`crate::client::ObjectClient`], Events, the local-path volumes of PVCs, the engine (start,
//! stop) and the work queue. A reconciler that returns actions is a plain function, tested as a
//! table (given objects -> expected actions).

use std::time::Duration;

use ferrovirt_resources::ResourceDef;
use serde_json::Value;

use crate::events::EventType;

/// What a reconcile is about: the key of the work queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A VM and/or the VMI of the same name.
    Vm { namespace: String, name: String },
    /// A PersistentVolumeClaim.
    Pvc { namespace: String, name: String },
    /// A VirtualMachineSnapshot.
    Snapshot { namespace: String, name: String },
    /// A VirtualMachineRestore.
    Restore { namespace: String, name: String },
    /// A VirtualMachineClone.
    Clone { namespace: String, name: String },
    /// A DataVolume (CDI).
    DataVolume { namespace: String, name: String },
    /// A VirtualMachineExport.
    Export { namespace: String, name: String },
    /// A VirtualMachineInstanceMigration.
    Migration { namespace: String, name: String },
}

impl Key {
    pub fn vm(namespace: &str, name: &str) -> Self {
        Self::Vm {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn snapshot(namespace: &str, name: &str) -> Self {
        Self::Snapshot {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn restore(namespace: &str, name: &str) -> Self {
        Self::Restore {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn clone_of(namespace: &str, name: &str) -> Self {
        Self::Clone {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn data_volume(namespace: &str, name: &str) -> Self {
        Self::DataVolume {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn export(namespace: &str, name: &str) -> Self {
        Self::Export {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn migration(namespace: &str, name: &str) -> Self {
        Self::Migration {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn pvc(namespace: &str, name: &str) -> Self {
        Self::Pvc {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create {
        resource: ResourceDef,
        object: Value,
    },
    /// Create an object named by `generateName` and record an Event about `involved` naming it:
    /// `message` with `{name}` replaced by the name the object got.
    CreateAndRecord {
        resource: ResourceDef,
        object: Value,
        involved: Value,
        reason: String,
        message: String,
    },
    /// Replace the object (its `metadata.resourceVersion` is the precondition).
    Update {
        resource: ResourceDef,
        object: Value,
    },
    UpdateStatus {
        resource: ResourceDef,
        object: Value,
    },
    Delete {
        resource: ResourceDef,
        namespace: Option<String>,
        name: String,
    },
    /// An Event about `involved`.
    Event {
        involved: Value,
        event_type: EventType,
        reason: String,
        message: String,
    },
    /// Create the local-path volume directory (idempotent).
    ProvisionVolume { volume: String },
    /// Delete a volume directory (the VM's state generations stay).
    DeleteVolume { volume: String },
    /// Persistence switched off: move the volume under `<data>/retired/` (recoverable) and
    /// record an Event about `vm` saying where it went.
    RetireVolume {
        volume: String,
        vm: Value,
        pvc_name: String,
    },
    /// Start (or, `adopt`, re-attach to) the VM of a VMI on the engine; its progress and end
    /// come back as the run's [`crate::vmi_reconciler::RunView`] and a new reconcile.
    StartEngine { vmi: Value, adopt: bool },
    /// Stop the running VM of the VMI with this uid gracefully (its grace period, then kill).
    StopEngine {
        namespace: String,
        name: String,
        vmi_uid: String,
    },
    /// The run's start or adoption has been reported (its Events and phase are written).
    MarkRunReported { namespace: String, name: String },
    /// The run has ended and its end is written: forget it.
    ForgetRun { namespace: String, name: String },
    /// Reconcile a key again after a delay.
    Requeue { key: Key, after: Duration },
    /// Snapshot the VM `vm` into the snapshot data `content` (`<data>/snapshots/<content>/`):
    /// online (pausing the running VM's vCPUs) or offline. The outcome is kept as the job of
    /// `key` for its next reconcile ([`crate::jobs::JobOutcome`]). `freeze`: the guest agent is
    /// connected, the guest's file systems are frozen around the copy (online only).
    TakeSnapshot {
        key: Key,
        vm: Value,
        content: String,
        online: bool,
        freeze: bool,
    },
    /// Restore the snapshot data `content` into the stopped VM `target`, TPM state and VARS as
    /// `policy` says; the outcome is kept as the job of `key`.
    RestoreSnapshot {
        key: Key,
        target: Value,
        content: String,
        policy: ferrovirt_vmm::vm_snapshot::StatePolicy,
    },
    /// Delete the snapshot data `content` (idempotent).
    DeleteSnapshotData { content: String },
    /// The outcome of `key`'s job is written: forget it.
    ForgetJob { key: Key },
    /// Fill a DataVolume's volume with the importer (a thread of its own); its progress and
    /// outcome come back as the key's [`crate::datavolume_reconciler::ImportView`].
    StartImport {
        key: Key,
        job: crate::datavolume_reconciler::ImportJob,
    },
    /// The import's outcome is recorded on the PVC: forget the run.
    ForgetImport { key: Key },
}

impl Action {
    /// An Event about `involved`.
    pub fn event(involved: &Value, event_type: EventType, reason: &str, message: &str) -> Self {
        Self::Event {
            involved: involved.clone(),
            event_type,
            reason: reason.to_owned(),
            message: message.to_owned(),
        }
    }

    /// Whether the action writes an object through the client (its informer will report it).
    pub fn writes_object(&self) -> bool {
        matches!(
            self,
            Self::Create { .. }
                | Self::CreateAndRecord { .. }
                | Self::Update { .. }
                | Self::UpdateStatus { .. }
                | Self::Delete { .. }
        )
    }

    /// Whether a list of actions only brings objects up to date with what was just written:
    /// object updates and their Events, at least one update, nothing else (no create, delete,
    /// engine or job action). Such a list may follow a write in the same reconcile.
    pub fn only_follow_ups(actions: &[Action]) -> bool {
        let updates = |a: &Action| matches!(a, Self::Update { .. } | Self::UpdateStatus { .. });
        actions.iter().any(updates)
            && actions
                .iter()
                .all(|a| updates(a) || matches!(a, Self::Event { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_resources::{VMIS, VMS};
    use serde_json::json;

    #[test]
    fn follow_ups_are_updates_with_their_events_and_nothing_else() {
        let vm = json!({"metadata": {"name": "vm"}});
        let status = Action::UpdateStatus {
            resource: VMS,
            object: vm.clone(),
        };
        let event = Action::event(&vm, EventType::Normal, "Started", "started");
        let delete = Action::Delete {
            resource: VMIS,
            namespace: Some("default".into()),
            name: "vm".into(),
        };
        assert!(status.writes_object() && delete.writes_object());
        assert!(!event.writes_object());
        assert!(Action::only_follow_ups(&[status.clone(), event.clone()]));
        assert!(!Action::only_follow_ups(std::slice::from_ref(&event)));
        assert!(!Action::only_follow_ups(&[status, delete]));
        assert!(!Action::only_follow_ups(&[]));
    }
}
