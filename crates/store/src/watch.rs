//! Watch streams: a backlog (the current objects for a watch from resourceVersion 0, or the
//! logged events after the requested resourceVersion) followed by live events from the store's
//! broadcast fan-out.
//!
//! Lag policy: live events go through a bounded `tokio::sync::broadcast` channel. A watcher that
//! falls more than the channel capacity behind gets one [`StoreError::WatchLagged`] (carrying the
//! last resourceVersion it saw) and then the stream ends; it must watch again from that
//! resourceVersion (replayed from the persistent event log) or re-list. Events are never skipped
//! silently.
//!
//! Label selectors follow the Kubernetes watch cache: a MODIFIED event whose object starts
//! matching is delivered as ADDED, one that stops matching as DELETED (with the new object).

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::error::StoreError;
use crate::kind::ResourceKind;
use crate::selector::Selector;

/// The `type` of a watch event, serialized as Kubernetes does (`ADDED`, `MODIFIED`, `DELETED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
}

impl WatchEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchEventType::Added => "ADDED",
            WatchEventType::Modified => "MODIFIED",
            WatchEventType::Deleted => "DELETED",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "ADDED" => Some(WatchEventType::Added),
            "MODIFIED" => Some(WatchEventType::Modified),
            "DELETED" => Some(WatchEventType::Deleted),
            _ => None,
        }
    }
}

/// One event as a watch delivers it; serializes to Kubernetes' `{"type":..,"object":..}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub event_type: WatchEventType,
    /// The object after the change (for DELETED: its last state, carrying the deletion's
    /// resourceVersion).
    pub object: Value,
}

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Only this namespace (`None`: all namespaces, or a cluster-scoped kind).
    pub namespace: Option<String>,
    /// Only objects whose labels match.
    pub label_selector: Selector,
    /// `None` or `Some(0)`: start with every current object as ADDED, then live events.
    /// `Some(rv)`: every event after `rv` (from the event log), then live events;
    /// [`StoreError::Expired`] when the log no longer reaches back to `rv`.
    pub resource_version: Option<u64>,
}

/// A write as the store logged and broadcast it. The object is kept as the JSON text the store
/// wrote (not parsed): the live channel retains its last `watch_buffer` events, and 4,096 parsed
/// objects held ~10x the memory of their text; each watcher parses only the events of its kind.
#[derive(Debug)]
pub(crate) struct LogEvent {
    pub rv: u64,
    pub group: String,
    pub resource: String,
    /// `""` for cluster-scoped objects.
    pub namespace: String,
    pub event_type: WatchEventType,
    /// The object as stored (JSON).
    pub data: Box<str>,
    /// Labels before a MODIFIED write.
    pub prev_labels: Option<Value>,
}

/// Which events a watch wants and how they look to it.
#[derive(Debug, Clone)]
pub(crate) struct WatchFilter {
    pub kind: ResourceKind,
    pub namespace: Option<String>,
    pub selector: Selector,
}

impl WatchFilter {
    /// The event as this watcher sees it, or `None` when it is not for this watcher.
    pub fn translate(&self, event: &LogEvent) -> Option<Result<WatchEvent, StoreError>> {
        if event.group != self.kind.group || event.resource != self.kind.resource {
            return None;
        }
        if let Some(ns) = &self.namespace
            && event.namespace != *ns
        {
            return None;
        }
        let object: Value = match serde_json::from_str(&event.data) {
            Ok(object) => object,
            Err(source) => {
                return Some(Err(StoreError::Corrupt {
                    what: format!("event {}", event.rv),
                    source,
                }));
            }
        };
        let event_type = if self.selector.is_empty() {
            event.event_type
        } else {
            let now = self.selector.matches_object(&object);
            match event.event_type {
                WatchEventType::Added | WatchEventType::Deleted if now => event.event_type,
                WatchEventType::Added | WatchEventType::Deleted => return None,
                WatchEventType::Modified => {
                    let before = self.selector.matches_labels(event.prev_labels.as_ref());
                    match (before, now) {
                        (true, true) => WatchEventType::Modified,
                        (false, true) => WatchEventType::Added,
                        (true, false) => WatchEventType::Deleted,
                        (false, false) => return None,
                    }
                }
            }
        };
        Some(Ok(WatchEvent { event_type, object }))
    }
}

/// A running watch. Read it with [`Watch::next`] (async) or [`Watch::blocking_next`].
/// `None` means the stream is over (the store was dropped, or after a lag error).
#[derive(Debug)]
pub struct Watch {
    filter: WatchFilter,
    backlog: VecDeque<WatchEvent>,
    live: broadcast::Receiver<Arc<LogEvent>>,
    /// The newest resourceVersion this watch has seen (delivered or filtered out).
    last_rv: u64,
    finished: bool,
}

enum Step {
    Deliver(Result<WatchEvent, StoreError>),
    Skip,
    End,
}

impl Watch {
    pub(crate) fn new(
        filter: WatchFilter,
        backlog: VecDeque<WatchEvent>,
        live: broadcast::Receiver<Arc<LogEvent>>,
        start_rv: u64,
    ) -> Self {
        Self {
            filter,
            backlog,
            live,
            last_rv: start_rv,
            finished: false,
        }
    }

    /// The newest resourceVersion this watch has passed (useful for BOOKMARK events and for
    /// resuming after [`StoreError::WatchLagged`]). Only meaningful once the backlog is drained.
    pub fn resource_version(&self) -> u64 {
        self.last_rv
    }

    /// Number of backlog events not yet returned.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// The next event, waiting for a live one if needed.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        if let Some(event) = self.backlog.pop_front() {
            return Some(Ok(event));
        }
        while !self.finished {
            let received = self.live.recv().await;
            match self.step(received) {
                Step::Deliver(result) => return Some(result),
                Step::Skip => {}
                Step::End => return None,
            }
        }
        None
    }

    /// Like [`Watch::next`], blocking the thread. Must not be called inside an async runtime.
    pub fn blocking_next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        if let Some(event) = self.backlog.pop_front() {
            return Some(Ok(event));
        }
        while !self.finished {
            let received = self.live.blocking_recv();
            match self.step(received) {
                Step::Deliver(result) => return Some(result),
                Step::Skip => {}
                Step::End => return None,
            }
        }
        None
    }

    /// An event that is ready now, without waiting (`None`: nothing pending or stream over).
    pub fn try_next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        if let Some(event) = self.backlog.pop_front() {
            return Some(Ok(event));
        }
        while !self.finished {
            let received = match self.live.try_recv() {
                Ok(event) => Ok(event),
                Err(broadcast::error::TryRecvError::Empty) => return None,
                Err(broadcast::error::TryRecvError::Closed) => Err(RecvError::Closed),
                Err(broadcast::error::TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
            };
            match self.step(received) {
                Step::Deliver(result) => return Some(result),
                Step::Skip => {}
                Step::End => return None,
            }
        }
        None
    }

    fn step(&mut self, received: Result<Arc<LogEvent>, RecvError>) -> Step {
        match received {
            Ok(event) => {
                if event.rv <= self.last_rv {
                    return Step::Skip;
                }
                self.last_rv = event.rv;
                match self.filter.translate(&event) {
                    Some(out) => Step::Deliver(out),
                    None => Step::Skip,
                }
            }
            Err(RecvError::Lagged(skipped)) => {
                self.finished = true;
                Step::Deliver(Err(StoreError::WatchLagged {
                    resource: self.filter.kind.qualified_name(),
                    last_rv: self.last_rv,
                    skipped,
                }))
            }
            Err(RecvError::Closed) => {
                self.finished = true;
                Step::End
            }
        }
    }
}
