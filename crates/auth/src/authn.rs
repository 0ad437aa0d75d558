//! Authentication: a request's credentials -> a [`UserInfo`], in kube-apiserver's order: a
//! verified client certificate, then a bearer token from the `Authorization` header, then a bearer
//! token in the WebSocket subprotocol (`base64url.bearer.authorization.k8s.io.<token>`, for
//! browsers, which cannot set headers on WebSockets).
//!
//! Anonymous requests are refused (kube-apiserver with `--anonymous-auth=false`), except on the
//! health endpoints ([`ANONYMOUS_PATHS`]), where they run as `system:anonymous`.

use std::path::Path;

use base64::Engine;

use crate::pki::CertIdentity;
use crate::tokens::{AdminToken, StaticTokens, TokenFileError};
use crate::user::UserInfo;

/// Paths anonymous requests may reach (they are then authorized like any other request, as
/// `system:anonymous` in `system:unauthenticated`).
pub const ANONYMOUS_PATHS: &[&str] = &["/healthz", "/livez", "/readyz"];

/// The WebSocket subprotocol prefix that carries a bearer token (base64url, no padding).
pub const WEBSOCKET_BEARER_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// The credentials of one request, as the HTTP layer found them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The request path (only used to let anonymous requests reach [`ANONYMOUS_PATHS`]).
    pub path: &'a str,
    /// The `Authorization` header value, if any.
    pub authorization: Option<&'a str>,
    /// The `Sec-WebSocket-Protocol` header value, for WebSocket upgrade requests only.
    pub websocket_protocol: Option<&'a str>,
    /// The identity of the client certificate, when the TLS layer verified one against the CA.
    pub client_certificate: Option<&'a CertIdentity>,
}

/// Authentication failed: kube-apiserver answers 401 with the message `Unauthorized`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Unauthorized")]
pub struct Unauthorized {
    /// Why, for the server's log (never sent to the client, as kube-apiserver does).
    pub detail: String,
}

impl Unauthorized {
    fn because(detail: impl Into<String>) -> Self {
        Unauthorized {
            detail: detail.into(),
        }
    }

    /// The 401 `Status` body.
    pub fn status(&self) -> serde_json::Value {
        crate::status::unauthorized()
    }
}

/// Turns credentials into users: the admin token, the static token file, client certificates.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    admin_token: Option<AdminToken>,
    static_tokens: StaticTokens,
}

impl Authenticator {
    /// An authenticator that knows the admin token (user `ferrovirt-admin`, group
    /// `system:masters`) and the users of a token file.
    pub fn new(admin_token: Option<AdminToken>, static_tokens: StaticTokens) -> Self {
        Authenticator {
            admin_token,
            static_tokens,
        }
    }

    /// As [`Authenticator::new`], reading `--token-auth-file` when given.
    pub fn with_token_file(
        admin_token: Option<AdminToken>,
        token_file: Option<&Path>,
    ) -> Result<Self, TokenFileError> {
        let static_tokens = match token_file {
            Some(path) => StaticTokens::load(path)?,
            None => StaticTokens::default(),
        };
        Ok(Self::new(admin_token, static_tokens))
    }

    /// The user of a request, or why it is refused (answer 401 with [`Unauthorized::status`]).
    pub fn authenticate(&self, credentials: &Credentials<'_>) -> Result<UserInfo, Unauthorized> {
        if let Some(identity) = credentials.client_certificate {
            return Ok(identity.user_info());
        }
        if let Some(token) = bearer_token(credentials.authorization) {
            return self.user_of_token(token);
        }
        if let Some(protocols) = credentials.websocket_protocol
            && let Some(token) = websocket_bearer_token(protocols)?
        {
            return self.user_of_token(&token);
        }
        if ANONYMOUS_PATHS.contains(&credentials.path) {
            return Ok(UserInfo::anonymous());
        }
        Err(Unauthorized::because(
            "no credentials: no client certificate and no bearer token (anonymous requests are refused)",
        ))
    }

    fn user_of_token(&self, token: &str) -> Result<UserInfo, Unauthorized> {
        // Check both sources fully so the timing does not tell which kind of token was tried.
        let admin = self
            .admin_token
            .as_ref()
            .is_some_and(|admin| admin.matches(token));
        let listed = self.static_tokens.lookup(token);
        if admin {
            return Ok(UserInfo::admin());
        }
        listed
            .cloned()
            .ok_or_else(|| Unauthorized::because("invalid bearer token"))
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, as
/// kube-apiserver reads it); `None` for other schemes or an empty token.
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let header = header?.trim();
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start();
    let token = token.split(' ').next().unwrap_or("");
    (!token.is_empty()).then_some(token)
}

/// The bearer token carried in a `Sec-WebSocket-Protocol` header, if one protocol is
/// `base64url.bearer.authorization.k8s.io.<base64url token>`. Two such protocols, a bad encoding
/// or an empty token are refused, as kube-apiserver does.
pub fn websocket_bearer_token(protocols: &str) -> Result<Option<String>, Unauthorized> {
    let mut found = None;
    for protocol in protocols.split(',').map(str::trim) {
        let Some(encoded) = protocol.strip_prefix(WEBSOCKET_BEARER_PREFIX) else {
            continue;
        };
        if found.is_some() {
            return Err(Unauthorized::because(
                "multiple base64.bearer.authorization tokens specified",
            ));
        }
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                Unauthorized::because("invalid base64.bearer.authorization token encoding")
            })?;
        found = Some(decoded);
    }
    Ok(found)
}

/// The `Sec-WebSocket-Protocol` value without the token protocol: what the server may select
/// from (the token must never be echoed back).
pub fn protocols_without_token(protocols: &str) -> Vec<&str> {
    protocols
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with(WEBSOCKET_BEARER_PREFIX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::{ALL_AUTHENTICATED, SYSTEM_PRIVILEGED_GROUP};

    fn authenticator() -> (Authenticator, AdminToken) {
        let admin = AdminToken::generate().unwrap();
        let tokens = StaticTokens::parse("alice-token,alice,1,\"dev\"\n", "t").unwrap();
        (Authenticator::new(Some(admin.clone()), tokens), admin)
    }

    fn at<'a>(path: &'a str) -> Credentials<'a> {
        Credentials {
            path,
            ..Credentials::default()
        }
    }

    #[test]
    fn bearer_tokens_from_headers() {
        let (authn, admin) = authenticator();
        let header = format!("Bearer {}", admin.as_str());
        let user = authn
            .authenticate(&Credentials {
                authorization: Some(&header),
                ..at("/api")
            })
            .unwrap();
        assert_eq!(user.name, "ferrovirt-admin");
        assert!(user.in_group(SYSTEM_PRIVILEGED_GROUP));
        let alice = authn
            .authenticate(&Credentials {
                authorization: Some("bearer alice-token"),
                ..at("/api")
            })
            .unwrap();
        assert_eq!(alice.groups, vec!["dev", ALL_AUTHENTICATED]);
        let wrong = authn
            .authenticate(&Credentials {
                authorization: Some("Bearer nope"),
                ..at("/healthz")
            })
            .unwrap_err();
        assert_eq!(wrong.to_string(), "Unauthorized");
        assert_eq!(wrong.status()["code"], 401);
    }

    #[test]
    fn anonymous_only_on_health_endpoints() {
        let (authn, _) = authenticator();
        assert!(authn.authenticate(&at("/healthz")).unwrap().is_anonymous());
        assert!(authn.authenticate(&at("/readyz")).unwrap().is_anonymous());
        assert!(authn.authenticate(&at("/api")).is_err());
        assert!(authn.authenticate(&at("/version")).is_err());
        // A scheme we do not read is no credential at all.
        assert!(
            authn
                .authenticate(&Credentials {
                    authorization: Some("Basic YTpi"),
                    ..at("/api")
                })
                .is_err()
        );
    }

    #[test]
    fn websocket_subprotocol_tokens() {
        let (authn, _) = authenticator();
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("alice-token");
        let header = format!("channel.k8s.io, {WEBSOCKET_BEARER_PREFIX}{encoded}");
        let user = authn
            .authenticate(&Credentials {
                websocket_protocol: Some(&header),
                ..at("/apis/x")
            })
            .unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(protocols_without_token(&header), vec!["channel.k8s.io"]);
        let twice =
            format!("{WEBSOCKET_BEARER_PREFIX}{encoded},{WEBSOCKET_BEARER_PREFIX}{encoded}");
        assert!(websocket_bearer_token(&twice).is_err());
        assert!(websocket_bearer_token(&format!("{WEBSOCKET_BEARER_PREFIX}!!")).is_err());
        assert_eq!(websocket_bearer_token("channel.k8s.io").unwrap(), None);
    }

    #[test]
    fn client_certificates_come_first() {
        let (authn, _) = authenticator();
        let identity = CertIdentity {
            user: "carol".to_owned(),
            groups: vec!["ops".to_owned()],
        };
        let user = authn
            .authenticate(&Credentials {
                client_certificate: Some(&identity),
                authorization: Some("Bearer nope"),
                ..at("/api")
            })
            .unwrap();
        assert_eq!(user.name, "carol");
        assert_eq!(user.groups, vec!["ops", ALL_AUTHENTICATED]);
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("BEARER  abc")), Some("abc"));
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(Some("Bearerabc")), None);
        assert_eq!(bearer_token(None), None);
    }
}
