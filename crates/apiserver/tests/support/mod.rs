//! The in-process router as `ferrovirt serve` builds it: the real security stages (request
//! checks, authentication, RBAC with the default roles, audit to `<dir>/audit.log`), with one
//! test user in `system:masters` known by its token. Requests act as that admin through
//! [`as_admin`]; leaving it out is an anonymous request.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use ferrovirt_apiserver::security::{self, PolicyHandle, SecurityConfig};
use ferrovirt_apiserver::{AppState, Chain};
use ferrovirt_auth::Authenticator;
use ferrovirt_auth::audit::{AuditLog, Rotation};
use ferrovirt_auth::tokens::StaticTokens;
use ferrovirt_store::Store;

/// The token of the test admin (`test-admin` in `system:masters`).
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The state with the security stages of `serve`.
pub fn secured_state(store: Store, dir: &std::path::Path) -> AppState {
    let tokens = StaticTokens::parse(
        &format!("{ADMIN_TOKEN},test-admin,1,\"system:masters\"\n"),
        "test tokens",
    )
    .unwrap();
    let policy = PolicyHandle::default();
    let chain = Chain::new(security::stages(SecurityConfig {
        authenticator: Authenticator::new(None, tokens),
        policy: policy.clone(),
        authorities: HashSet::from(["localhost:8443".to_owned()]),
        scheme: "https",
        audit: Some(AuditLog::open(&dir.join("audit.log"), Rotation::default()).unwrap()),
    }));
    AppState::with_chain(store, dir.to_path_buf(), chain, policy)
}

/// `request` with the admin's bearer token.
pub fn as_admin(mut request: Request<Body>) -> Request<Body> {
    request.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {ADMIN_TOKEN}")).unwrap(),
    );
    request
}
