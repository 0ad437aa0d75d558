//! The security stages of the chain, in the order [`stages`] returns them:
//!
//! 1. [`Audit`]: no `admit`; its `completed` (run last) appends one `audit.k8s.io/v1` event to
//!    `<data-dir>/audit.log` for every write and every read of a VM's console, serial log or
//!    state generations (`ferrovirt_auth::audit::should_audit`), with the user, verb, object and
//!    response code, including refused requests (401, 403, 415, 421).
//! 2. [`Authentication`]: a verified client certificate, else a bearer token (header or
//!    WebSocket subprotocol) -> [`ApiRequest::user`]; none -> 401. Anonymous paths: the health
//!    checks (`/healthz`, `/livez`, `/readyz`) and the web UI's static files (the login page is
//!    one of them; they hold no data). Everything else needs credentials. It runs before the
//!    request checks so that the audit log names who was refused.
//! 3. [`RequestChecks`]: what protects browsers: the `Host` must name this server (421), a
//!    WebSocket's `Origin`, when sent, must be the server's own origin (403), and a write must
//!    carry a JSON, YAML or patch media type (415), so a cross-site form cannot post.
//! 4. [`Authorization`]: RBAC as Kubernetes evaluates it ([`RbacPolicy`], held in memory in a
//!    [`PolicyHandle`] and swapped whole when the roles change); a denial is kube-apiserver's 403.
//!
//! All of them only read memory (the audit log writes one line to an append-only file under a
//! mutex), so they do not block the async threads.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use ferrovirt_auth::audit::{AuditLog, Event, ObjectReference, should_audit};
use ferrovirt_auth::pki::CertIdentity;
use ferrovirt_auth::rbac::Forbidden;
use ferrovirt_auth::{Attributes, Authenticator, Credentials, RbacPolicy, UserInfo};

use crate::chain::Stage;
use crate::error::ApiError;
use crate::request::{ApiRequest, Target};

/// The RBAC policy in force, replaced whole (never edited) when roles or bindings change.
#[derive(Clone)]
pub struct PolicyHandle(Arc<RwLock<Arc<RbacPolicy>>>);

impl Default for PolicyHandle {
    /// Kubernetes' and KubeVirt's default roles and bindings.
    fn default() -> Self {
        Self::new(RbacPolicy::bootstrap())
    }
}

impl PolicyHandle {
    pub fn new(policy: RbacPolicy) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(policy))))
    }

    /// The policy now (a cheap `Arc` clone; the lock is held only for the clone).
    pub fn current(&self) -> Arc<RbacPolicy> {
        match self.0.read() {
            Ok(policy) => policy.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `policy` in force for the requests that follow.
    pub fn replace(&self, policy: RbacPolicy) {
        let policy = Arc::new(policy);
        match self.0.write() {
            Ok(mut slot) => *slot = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }
}

/// What the security stages need to know about the server.
pub struct SecurityConfig {
    pub authenticator: Authenticator,
    pub policy: PolicyHandle,
    /// `host:port` forms a request's `Host` may take (lower case; IPv6 in brackets).
    pub authorities: HashSet<String>,
    /// `https` or `http`: the scheme of the server's own origin.
    pub scheme: &'static str,
    pub audit: Option<AuditLog>,
}

/// The security stages, in chain order.
pub fn stages(config: SecurityConfig) -> Vec<Arc<dyn Stage>> {
    let mut stages: Vec<Arc<dyn Stage>> = Vec::new();
    if let Some(log) = config.audit {
        stages.push(Arc::new(Audit { log }));
    }
    let origins = config
        .authorities
        .iter()
        .map(|authority| format!("{}://{authority}", config.scheme))
        .collect();
    stages.push(Arc::new(Authentication {
        authenticator: config.authenticator,
    }));
    stages.push(Arc::new(RequestChecks {
        authorities: config.authorities,
        origins,
    }));
    stages.push(Arc::new(Authorization {
        policy: config.policy,
    }));
    stages
}

/// The `host:port` strings naming `host` on `port` (`[::1]:8443` for IPv6), plus the bare host
/// when `port` is the scheme's default.
pub fn authorities_of(host: &str, port: u16, scheme: &str) -> Vec<String> {
    let host = host.to_ascii_lowercase();
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let mut forms = vec![format!("{host}:{port}")];
    if (scheme == "https" && port == 443) || (scheme == "http" && port == 80) {
        forms.push(host);
    }
    forms
}

/// Media types a write may carry (Kubernetes' JSON, YAML and patch types).
const WRITE_MEDIA_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/x-yaml",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
    // kubectl's typed clients (namespaces, access reviews); decoded where supported, else 415.
    "application/vnd.kubernetes.protobuf",
];

/// Host, Origin and Content-Type checks (421, 403, 415).
pub struct RequestChecks {
    authorities: HashSet<String>,
    origins: HashSet<String>,
}

impl Stage for RequestChecks {
    fn name(&self) -> &'static str {
        "request-checks"
    }

    fn admit(&self, request: &mut ApiRequest) -> Result<(), ApiError> {
        if let Some(host) = &request.host
            && !self.authorities.contains(&host.to_ascii_lowercase())
        {
            return Err(ApiError::new(
                421,
                "MisdirectedRequest",
                format!(
                    "the Host header {host:?} does not name this server; use one of the names in its certificate (add more with `ferrovirt serve --tls-san NAME`)"
                ),
            ));
        }
        if request.websocket
            && let Some(origin) = &request.origin
            && !self.origins.contains(&origin.to_ascii_lowercase())
        {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "WebSocket from the foreign origin {origin:?} refused: only pages served by this server may open its consoles"
                ),
            ));
        }
        // Only what accepts writes is checked; other paths answer 404/405 to any write anyway.
        let write = matches!(request.method, Method::POST | Method::PUT | Method::PATCH)
            && matches!(
                request.target,
                Target::Api(_) | Target::SelfSubjectAccessReview | Target::SelfSubjectReview
            );
        // A volume import's body is the volume's bytes (a tar.gz, gzip or raw image).
        let volume_import = matches!(
            request.target,
            Target::Api(crate::route::Route::VolumeImport { .. })
        );
        if write && !volume_import && !WRITE_MEDIA_TYPES.contains(&request.content_type.as_str()) {
            return Err(ApiError::unsupported_media_type(&request.content_type));
        }
        Ok(())
    }
}

/// Credentials -> [`ApiRequest::user`], or 401.
pub struct Authentication {
    authenticator: Authenticator,
}

impl Stage for Authentication {
    fn name(&self) -> &'static str {
        "authentication"
    }

    fn admit(&self, request: &mut ApiRequest) -> Result<(), ApiError> {
        let certificate = request
            .connection
            .client_certificates
            .first()
            .and_then(|der| CertIdentity::from_der(der).ok().flatten());
        let authorization = request
            .bearer_token
            .as_ref()
            .map(|token| format!("Bearer {}", token.0));
        let credentials = Credentials {
            path: &request.attributes.path,
            authorization: authorization.as_deref(),
            websocket_protocol: request
                .websocket_protocol
                .as_deref()
                .filter(|_| request.websocket),
            client_certificate: certificate.as_ref(),
        };
        match self.authenticator.authenticate(&credentials) {
            Ok(user) => {
                request.user = Some(user);
                Ok(())
            }
            // Export paths are opened by the export's token alone (checked by the handler).
            _ if matches!(request.target, Target::Export(_)) => {
                request.user = Some(UserInfo::anonymous());
                Ok(())
            }
            // The UI's files are public: the login page is one of them. An upload carries an
            // upload token instead of a user's: its handler verifies it.
            Err(_) if matches!(request.target, Target::Ui(_) | Target::Upload { .. }) => {
                request.user = Some(UserInfo::anonymous());
                Ok(())
            }
            Err(refused) => {
                tracing::debug!(path = %request.attributes.path, reason = %refused.detail, "unauthorized");
                Err(ApiError::new(401, "Unauthorized", "Unauthorized"))
            }
        }
    }
}

/// The RBAC attributes of a request by `user`.
pub fn attributes_of(request: &ApiRequest, user: UserInfo) -> Attributes {
    let a = &request.attributes;
    Attributes {
        user,
        verb: a.verb.clone(),
        resource_request: a.is_resource_request,
        api_group: a.api_group.clone(),
        api_version: a.api_version.clone(),
        resource: a.resource.clone(),
        subresource: a.subresource.clone(),
        namespace: a.namespace.clone(),
        name: a.name.clone(),
        path: a.path.clone(),
    }
}

/// RBAC: 403 unless a role bound to the user allows the request.
pub struct Authorization {
    policy: PolicyHandle,
}

impl Stage for Authorization {
    fn name(&self) -> &'static str {
        "authorization"
    }

    fn admit(&self, request: &mut ApiRequest) -> Result<(), ApiError> {
        // An upload's token was issued to a user RBAC allowed to create UploadTokenRequests
        // (`upload.cdi.kubevirt.io`), for one PVC; the upload handler checks it.
        if matches!(
            request.target,
            Target::Ui(_) | Target::Upload { .. } | Target::Export(_)
        ) {
            return Ok(());
        }
        let user = request.user.clone().unwrap_or_else(UserInfo::anonymous);
        let attributes = attributes_of(request, user);
        let decision = self.policy.current().authorize(&attributes);
        if decision.allowed {
            return Ok(());
        }
        let forbidden = Forbidden::new(&attributes, &decision.reason);
        let details = forbidden.status().get("details").cloned();
        Err(ApiError {
            details,
            ..ApiError::new(403, "Forbidden", forbidden.message)
        })
    }
}

/// Appends the audited requests to the audit log.
pub struct Audit {
    log: AuditLog,
}

impl Stage for Audit {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn completed(&self, request: &ApiRequest, status: StatusCode, elapsed: Duration) {
        let a = &request.attributes;
        // Access reviews are questions, not writes: kube-apiserver's default policy skips them too.
        let review = matches!(
            request.target,
            Target::SelfSubjectAccessReview | Target::SelfSubjectReview
        );
        // Every export request is recorded: volume bytes (TPM state, VARS) leave the host.
        let export = matches!(request.target, Target::Export(_));
        if !export && (!a.is_resource_request || review || !should_audit(&a.verb, &a.subresource)) {
            return;
        }
        let user = request.user.clone().unwrap_or_else(UserInfo::anonymous);
        let received = time::OffsetDateTime::now_utc() - elapsed;
        let mut event = Event::new(&user, &a.verb, &a.path, received).object(ObjectReference {
            resource: a.resource.clone(),
            namespace: a.namespace.clone(),
            name: a.name.clone(),
            api_group: a.api_group.clone(),
            api_version: a.api_version.clone(),
            subresource: a.subresource.clone(),
            ..ObjectReference::default()
        });
        if let Some(peer) = request.connection.remote_addr {
            event = event.source(peer.ip(), request.user_agent.as_deref());
        }
        let event = event.response(
            status.as_u16(),
            status.canonical_reason().unwrap_or_default(),
            "",
        );
        if let Err(error) = self.log.append(&event) {
            tracing::error!(%error, "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_bracket_ipv6_and_drop_default_ports() {
        assert_eq!(
            authorities_of("::1", 8443, "https"),
            vec!["[::1]:8443".to_owned()]
        );
        assert_eq!(
            authorities_of("LocalHost", 443, "https"),
            vec!["localhost:443".to_owned(), "localhost".to_owned()]
        );
    }
}
