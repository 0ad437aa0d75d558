//! What a reconciler asks for: [`Action`]s, carried out in one place
//! ([`crate::runtime::Controller::execute`]): object writes through the
//! [`crate::client::ObjectClient`], Events, and the local-path volumes of PVCs. A reconciler that
//! returns actions is a plain function, tested as a table (given objects -> expected actions).

use ferrovirt_resources::ResourceDef;
use serde_json::Value;

use crate::events::EventType;

/// One thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create {
        resource: ResourceDef,
        object: Value,
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
    /// Delete a volume directory and its state generations.
    DeleteVolume { volume: String },
}
