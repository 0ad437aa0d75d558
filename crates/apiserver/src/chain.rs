//! The handler chain every request goes through, in kube-apiserver's order:
//!
//! ```text
//!  HTTP request
//!    -> parse once            request::ApiRequest::from_parts (attributes, target, encoding)
//!    -> stages, in order      Stage::admit: request checks, authentication, authorization, ...
//!    -> handler               dispatch::dispatch -> handlers, console, ... (admission, store)
//!    -> encode                encode / error: JSON, Table, Status
//!    -> stages, in reverse    Stage::completed: audit log, request log
//! ```
//!
//! The router has exactly one entry (`dispatch::entry`) for every path, so no route can bypass the stages:
//! the REST API, watch streams, the console WebSocket, serial-log, the state subresources,
//! discovery, OpenAPI, health checks and the web UI's files all pass here.
//!
//! `ferrovirt serve` runs [`crate::security::stages`]: audit (in [`Stage::completed`]: user,
//! verb, resource, name, namespace and the response code), authentication (sets
//! [`ApiRequest::user`] from [`crate::request::Connection::client_certificates`] or
//! [`ApiRequest::bearer_token`]; 401), request checks (415 for a write without a JSON/YAML/patch
//! media type, 421 for a `Host` that does not name the server, 403 for a WebSocket from a foreign
//! `Origin`) and RBAC authorization (reads [`ApiRequest::attributes`]; 403). Each is one `Stage`
//! in [`Chain::new`]'s list; no handler knows about them.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use crate::error::ApiError;
use crate::request::ApiRequest;

/// One stage of the chain.
///
/// `admit` runs before the handler, in chain order, and may fill in the request (authentication
/// sets `user`) or end it with a Status (401, 403, 415, 421, ...): later stages and the handler
/// then do not run, but every stage's `completed` still sees the outcome. Stages run on the async
/// threads: they must not block (read in-memory state, not files or the store).
pub trait Stage: Send + Sync {
    /// A short name for logs (`authentication`, `audit`, ...).
    fn name(&self) -> &'static str;

    /// Checks the request before it is handled.
    fn admit(&self, request: &mut ApiRequest) -> Result<(), ApiError> {
        let _ = request;
        Ok(())
    }

    /// Sees the request's outcome once the response head is known (the audit log's place).
    fn completed(&self, request: &ApiRequest, status: StatusCode, elapsed: Duration) {
        let _ = (request, status, elapsed);
    }
}

/// The stages, in order.
#[derive(Clone)]
pub struct Chain {
    stages: Vec<Arc<dyn Stage>>,
}

impl Default for Chain {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Chain {
    /// A chain of `stages` (in order) followed by the request log.
    pub fn new(stages: Vec<Arc<dyn Stage>>) -> Self {
        let mut all = stages;
        all.push(Arc::new(RequestLog));
        Self { stages: all }
    }

    /// The names of the stages, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// Runs every stage's `admit`; the first error ends the request.
    pub fn admit(&self, request: &mut ApiRequest) -> Result<(), ApiError> {
        self.stages.iter().try_for_each(|s| s.admit(request))
    }

    /// Tells every stage (last first) how the request ended.
    pub fn completed(&self, request: &ApiRequest, status: StatusCode, elapsed: Duration) {
        for stage in self.stages.iter().rev() {
            stage.completed(request, status, elapsed);
        }
    }
}

/// The last stage: a debug line per request (method, path, status, time).
struct RequestLog;

impl Stage for RequestLog {
    fn name(&self) -> &'static str {
        "request-log"
    }

    fn completed(&self, request: &ApiRequest, status: StatusCode, elapsed: Duration) {
        tracing::debug!(
            method = %request.method,
            path = %request.attributes.path,
            verb = %request.attributes.verb,
            status = status.as_u16(),
            elapsed_us = elapsed.as_micros() as u64,
            "request"
        );
    }
}

/// Counts every request and its latency into the server's metrics (`apiserver_request_total`,
/// `apiserver_request_duration_seconds`).
pub struct RequestMetrics(pub std::sync::Arc<ferrovirt_metrics::Metrics>);

impl Stage for RequestMetrics {
    fn name(&self) -> &'static str {
        "request-metrics"
    }

    fn completed(&self, request: &ApiRequest, status: StatusCode, elapsed: Duration) {
        let a = &request.attributes;
        self.0.request(
            &a.verb,
            &a.api_group,
            (&a.resource, &a.subresource),
            status.as_u16(),
            elapsed,
        );
    }
}
