//! Expiry of Events: Kubernetes keeps an Event for `--event-ttl` (1 hour) after its last write,
//! then etcd drops it. [`expired_events`] picks the Events past that age; the server deletes them
//! periodically (the store itself keeps no clocks).

use std::time::Duration;

use serde_json::Value;

use crate::time::parse_rfc3339;

/// Kubernetes' default `--event-ttl`.
pub const EVENT_TTL: Duration = Duration::from_secs(3600);

/// The `(namespace, name)` of every Event in `events` last written more than `ttl` before
/// `now_unix` (seconds since the epoch). The last write is `lastTimestamp`, else `eventTime`
/// (events.k8s.io), else `metadata.creationTimestamp`; an Event with none of them readable is
/// expired too (it cannot be aged and would otherwise stay forever).
pub fn expired_events(now_unix: i64, events: &[Value], ttl: Duration) -> Vec<(String, String)> {
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    events
        .iter()
        .filter(|event| {
            let written = [
                "/lastTimestamp",
                "/eventTime",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .filter_map(|pointer| event.pointer(pointer).and_then(Value::as_str))
            .find_map(parse_rfc3339);
            written.is_none_or(|at| now_unix.saturating_sub(at) > ttl)
        })
        .filter_map(|event| {
            let name = event.pointer("/metadata/name").and_then(Value::as_str)?;
            let namespace = event
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            Some((namespace.to_owned(), name.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::format_rfc3339;
    use serde_json::json;

    #[test]
    fn events_older_than_the_ttl_expire() {
        let now = 1_700_000_000;
        let at = |age: i64| format_rfc3339(now - age);
        let events = vec![
            json!({"metadata": {"name": "fresh", "namespace": "a", "creationTimestamp": at(7200)},
                   "lastTimestamp": at(60)}),
            json!({"metadata": {"name": "old", "namespace": "a", "creationTimestamp": at(7200)},
                   "lastTimestamp": at(3601)}),
            json!({"metadata": {"name": "edge", "namespace": "b"}, "lastTimestamp": at(3600)}),
            json!({"metadata": {"name": "new-api", "namespace": "b"},
                   "eventTime": "2023-11-14T20:00:00.000000Z"}),
            json!({"metadata": {"name": "created-only", "creationTimestamp": at(4000)}}),
            json!({"metadata": {"name": "undated", "namespace": "c"}}),
        ];
        let expired = expired_events(now, &events, EVENT_TTL);
        let names: Vec<&str> = expired.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["old", "new-api", "created-only", "undated"]);
        assert_eq!(expired[2].0, "default");
        assert!(expired_events(now, &events[..1], EVENT_TTL).is_empty());
    }
}
