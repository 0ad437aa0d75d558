//! The read-only view of the world a VM's reconcile sees besides the VM and its VMI: the engine's
//! run of the VM (if any), the VM's backend-storage PVCs, what choosing a storage class needs, the
//! clock and the node. The runtime builds it from the informer cache and the engine's run table;
//! tests build it by hand.

use std::sync::Arc;

use serde_json::Value;

/// The engine's run of a VMI, as the reconcilers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    /// The VMI the run belongs to (a run of an older VMI of the same name is not this VMI's).
    pub vmi_uid: String,
    pub phase: RunPhase,
    /// A graceful stop was asked for.
    pub stopping: bool,
}

pub use ferrovirt_vmm::agent::GuestReport;

/// Where a run is.
#[derive(Debug, Clone, PartialEq)]
pub enum RunPhase {
    /// The engine is starting (or adopting) the VM.
    Starting,
    /// The VM runs. `reported`: its start (or adoption) has been written to the VMI.
    Running {
        adopted: bool,
        reported: bool,
        /// The `StateRestored` message, when the start restored the state from a generation.
        restored: Option<String>,
        /// What the guest agent last reported; `None`: the agent does not answer (not
        /// connected).
        guest: Option<std::sync::Arc<GuestReport>>,
        /// What the start found about the TPM's trust (issue 15).
        trust: TrustNotes,
    },
    /// The VM ended and its state is durable: what to write to the VMI. The engine still
    /// checks and records the state (the `after-stop` generation): the run is not over, its
    /// VMI keeps its finalizer and nothing else may use the state yet.
    Ending(RunOutcome),
    /// The run is over (or never started): what to write to the VMI.
    Ended(RunOutcome),
}

/// What a start found about trust, for the VMI's and VM's status and Events: the EK
/// certificates' SHA-256 fingerprints (`status.tpm.ekCertificateSHA256`) and, when this boot
/// measures other PCR values than the last one, the `PCRsWillChange` message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustNotes {
    pub ek: Option<ferrovirt_vmm::ek::EkFingerprints>,
    pub pcrs_will_change: Option<String>,
}

impl TrustNotes {
    pub fn of_start(notes: &ferrovirt_vmm::engine::StartNotes) -> Self {
        Self {
            ek: notes.ek.clone(),
            pcrs_will_change: notes.pcrs_will_change.as_ref().map(|c| c.message()),
        }
    }
}

/// How a run ended: the VMI's final phase, the Event's reason and message.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// `Succeeded` or `Failed`.
    pub phase: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl RunOutcome {
    pub fn failed(reason: &'static str, message: String) -> Self {
        Self {
            phase: "Failed",
            reason,
            message,
        }
    }

    pub fn succeeded(message: &str) -> Self {
        Self {
            phase: "Succeeded",
            reason: "Stopped",
            message: message.to_owned(),
        }
    }
}

/// Everything a VM key's reconcile reads besides the VM and the VMI.
#[derive(Debug, Clone, Copy)]
pub struct VmWorld<'a> {
    /// The engine's run for this VM name, if any.
    pub run: Option<&'a RunView>,
    /// The PVCs labelled as this VM's backend storage (including ones being deleted).
    pub backend_pvcs: &'a [Value],
    /// The KubeVirt object (cluster configuration), if any.
    pub kubevirt: Option<&'a Value>,
    /// The StorageClasses as stored (parsed only when a backend PVC is to be created).
    pub storage_classes: &'a [Arc<Value>],
    pub now_unix: i64,
    pub node_name: &'a str,
    /// The instancetype and preference the VM refers to, and the revisions that may hold them.
    pub references: VmReferences<'a>,
    /// The DataVolumes (CDI) of the VM's namespace that its volumes or `dataVolumeTemplates`
    /// name.
    pub data_volumes: &'a [Arc<Value>],
}

/// What a VM's `spec.instancetype` and `spec.preference` point at, as the cache holds it.
#[derive(Debug, Clone, Copy, Default)]
pub struct VmReferences<'a> {
    /// The referenced instancetype object, if it exists.
    pub instancetype: Option<&'a Value>,
    /// The referenced preference object, if it exists.
    pub preference: Option<&'a Value>,
    /// The ControllerRevisions of the VM's namespace.
    pub revisions: &'a [Arc<Value>],
}

impl VmWorld<'_> {
    /// The VM's live backend-storage PVC (one being deleted is not it).
    pub fn backend_pvc(&self) -> Option<&Value> {
        self.backend_pvcs
            .iter()
            .find(|p| p.pointer("/metadata/deletionTimestamp").is_none())
    }

    pub fn now_rfc3339(&self) -> String {
        ferrovirt_store::format_rfc3339(self.now_unix)
    }
}
