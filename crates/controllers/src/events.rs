//! Kubernetes `v1` Events about objects (what `kubectl describe` and `kubectl get events` show):
//! one Event object per state change or failure, with a reason and a message.

use ferrovirt_store::now_rfc3339;

use crate::client::ObjectClient;
use serde_json::{Value, json};

use ferrovirt_resources::EVENTS;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Records an event about `involved` (a stored object). Failures are logged, never returned:
/// an event is information, not state.
pub fn record(
    client: &dyn ObjectClient,
    involved: &Value,
    event_type: EventType,
    reason: &str,
    message: &str,
) {
    let meta = |key: &str| {
        involved
            .pointer(&format!("/metadata/{key}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let name = involved
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let namespace = involved
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let now = now_rfc3339();
    let kind_type = match event_type {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    };
    match event_type {
        EventType::Normal => tracing::info!(object = name, reason, "{message}"),
        EventType::Warning => tracing::warn!(object = name, reason, "{message}"),
    }
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion").cloned().unwrap_or(Value::Null),
            "kind": involved.get("kind").cloned().unwrap_or(Value::Null),
            "name": name,
            "namespace": namespace,
            "uid": meta("uid"),
            "resourceVersion": meta("resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": kind_type,
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": "virt-controller", "host": "ferrovirt"},
        "reportingComponent": "virt-controller",
        "reportingInstance": "ferrovirt",
    });
    if let Err(error) = client.create(&EVENTS, event) {
        tracing::warn!(%error, "could not record an event");
    }
}
