//! The typed request: every HTTP request is parsed here **once** into an [`ApiRequest`], and
//! nothing after this module reads a header, the path or the query string again.
//!
//! An [`ApiRequest`] carries:
//! - the Kubernetes request attributes ([`RequestAttributes`], the API server's `RequestInfo`):
//!   whether it is a resource request, the verb as Kubernetes names it (`get`, `list`, `watch`,
//!   `create`, `update`, `patch`, `delete`, `deletecollection`; a lower-case HTTP method for
//!   non-resource URLs), apiGroup, apiVersion, resource, subresource, namespace, name and path:
//!   what RBAC authorizes and what the audit log records;
//! - what it addresses ([`Target`]): a served resource (from [`crate::route`]), a discovery or
//!   OpenAPI document, a health check or a file of the web UI;
//! - how it is encoded: the body's media type, the wanted output ([`Accepted`]: JSON, YAML,
//!   `meta.k8s.io` Table, protobuf, HTML), `fieldValidation`, `dryRun`, the other query parameters;
//! - what the security stages read: the `Host` and `Origin` headers, whether it asks for a
//!   WebSocket, the bearer token, the connection ([`Connection`]: peer address, client
//!   certificates), and the slot for the authenticated user ([`UserInfo`]), filled in by an
//!   authentication stage of [`crate::chain`].

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};

use crate::error::ApiError;
use crate::route::{self, Route};

/// Query parameters of a request.
pub type Params = HashMap<String, String>;

/// Kubernetes' request attributes (`k8s.io/apiserver/pkg/endpoints/request.RequestInfo`),
/// derived from the method, path and query alone, for every request, served resource or not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestAttributes {
    /// `/api/v1/...` and `/apis/<group>/<version>/...` with a resource; discovery, OpenAPI,
    /// health checks and the UI are non-resource URLs.
    pub is_resource_request: bool,
    /// The URL path, e.g. `/apis/kubevirt.io/v1/namespaces/default/virtualmachines/vm1`.
    pub path: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`; for a
    /// non-resource URL the lower-case HTTP method (`get`, `post`, ...).
    pub verb: String,
    /// `""` for the core group.
    pub api_group: String,
    pub api_version: String,
    /// `""` for cluster-scoped resources and non-resource URLs.
    pub namespace: String,
    /// Plural, e.g. `virtualmachines`.
    pub resource: String,
    /// e.g. `status`, `start`, `console` (`""` for none).
    pub subresource: String,
    /// `""` for collections.
    pub name: String,
}

impl RequestAttributes {
    /// Kubernetes' `RequestInfoFactory`: the attributes of any request.
    pub fn new(method: &Method, path: &str, params: &Params) -> Self {
        let http_verb = method.as_str().to_ascii_lowercase();
        let non_resource = || Self {
            is_resource_request: false,
            path: path.to_owned(),
            verb: http_verb.clone(),
            ..Self::default()
        };
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (api_group, api_version, mut parts) = match segments.as_slice() {
            // KubeVirt's export proxy: `/api/export.kubevirt.io/<version>/namespaces/...`.
            ["api", group @ "export.kubevirt.io", version, rest @ ..] if !rest.is_empty() => {
                (*group, *version, rest)
            }
            ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
            ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
            _ => return non_resource(),
        };
        let mut namespace = "";
        if parts[0] == "namespaces" && parts.len() > 1 {
            namespace = parts[1];
            if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
                parts = &parts[2..];
            }
        }
        let resource = parts[0];
        let name = parts.get(1).copied().unwrap_or("");
        let subresource = parts.get(2).copied().unwrap_or("");
        let watch = params.get("watch").is_some_and(|w| w == "true" || w == "1");
        let verb = match (method, name.is_empty()) {
            (&Method::GET | &Method::HEAD, _) if watch => "watch",
            (&Method::GET | &Method::HEAD, true) => "list",
            (&Method::GET | &Method::HEAD, false) => "get",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, true) => "deletecollection",
            (&Method::DELETE, false) => "delete",
            _ => http_verb.as_str(),
        };
        Self {
            is_resource_request: true,
            path: path.to_owned(),
            verb: verb.to_owned(),
            api_group: api_group.to_owned(),
            api_version: api_version.to_owned(),
            namespace: namespace.to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// The user a request acts for (Kubernetes' `user.Info`), set by the authentication stage.
pub use ferrovirt_auth::UserInfo;

/// What the client accepts in return (the `Accept` header, read once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepted {
    /// A `meta.k8s.io` Table (`application/json;as=Table;g=meta.k8s.io`: `kubectl get`).
    pub table: bool,
    /// JSON (also: no `Accept` at all, or `*/*`).
    pub json: bool,
    pub yaml: bool,
    pub protobuf: bool,
    /// `text/html` (a browser navigating the web UI).
    pub html: bool,
}

impl Accepted {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut accepted = Self::default();
        let mut any = false;
        for value in headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            any = true;
            for media in value.split(',') {
                let params: Vec<&str> = media.split(';').map(str::trim).collect();
                let base = params.first().copied().unwrap_or("");
                if params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io") {
                    accepted.table = true;
                }
                accepted.json |= base.contains("json") || base == "*/*";
                accepted.yaml |= base.contains("yaml");
                accepted.protobuf |= base.contains("protobuf");
                accepted.html |= base.contains("text/html");
            }
            accepted.json |= value.contains("json") || value.contains("*/*");
        }
        if !any {
            accepted.json = true;
        }
        accepted
    }

    /// The output for API objects: a Table when asked for, else JSON (YAML and protobuf clients
    /// are answered with JSON, as before; only `/openapi/v2` refuses a client without JSON).
    pub fn output(&self) -> Output {
        if self.table {
            Output::Table
        } else {
            Output::Json
        }
    }
}

/// How API objects are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Table,
}

/// `fieldValidation` of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Unknown fields are dropped silently (also: absent).
    Ignore,
    Warn,
    /// Unknown fields are refused with 400 (kubectl's default once it reads our OpenAPI v3).
    Strict,
}

/// What the connection says about the client, for authentication and audit.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// The peer, when the server was started with connect info.
    pub remote_addr: Option<SocketAddr>,
    /// The client's certificate chain (DER, leaf first) when a TLS acceptor verified one and put
    /// a [`ClientCertificates`] extension on the request.
    pub client_certificates: Vec<Vec<u8>>,
}

/// The request extension a TLS acceptor inserts with the verified client certificate chain.
#[derive(Debug, Clone, Default)]
pub struct ClientCertificates(pub Vec<Vec<u8>>);

/// What a request addresses.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A path under `/api/` or `/apis/` (see [`Route`]).
    Api(Route),
    /// `/version`.
    Version,
    /// `/api`: the core API versions.
    CoreVersions,
    /// `/apis`: the group list.
    GroupList,
    /// `/openapi/v2`.
    OpenApiV2,
    /// `/openapi/v3`.
    OpenApiV3Root,
    /// `/openapi/v3/<group-version path>`.
    OpenApiV3(String),
    /// `/healthz`, `/readyz`, `/livez`.
    Health,
    /// `/metrics` (Prometheus; authenticated and authorized like every other path).
    Metrics,
    /// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews` (`kubectl auth can-i`).
    SelfSubjectAccessReview,
    /// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews` (`kubectl auth whoami`, the UI).
    SelfSubjectReview,
    /// CDI's upload proxy paths (`/v1beta1/upload`, `/v1beta1/upload-async`): an image upload
    /// authorized by an upload token (an `UploadTokenRequest`'s), not by a user's credentials.
    Upload { asynchronous: bool },
    /// Anything else: a file or page of the web UI (or a 404 under the API prefixes).
    Ui(String),
    /// A path of KubeVirt's export proxy (`/api/export.kubevirt.io/...`): authenticated by the
    /// export's token only ([`ApiRequest::export_token`]).
    Export(crate::export_path::ExportTarget),
    /// A request that cannot be served as asked (unknown API path, malformed query): the error is
    /// answered after the chain's stages have seen the request.
    Invalid(ApiError),
}

/// One request, parsed once.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    pub attributes: RequestAttributes,
    pub target: Target,
    pub params: Params,
    /// The body's media type without parameters, lower-cased (`""` when absent).
    pub content_type: String,
    pub accepted: Accepted,
    pub output: Output,
    pub field_validation: FieldValidation,
    /// `dryRun` was given: admission only, nothing stored.
    pub dry_run: bool,
    /// The `Host` header (or the URI's authority).
    pub host: Option<String>,
    /// The `Origin` header (browsers send it; WebSocket checks read it).
    pub origin: Option<String>,
    /// An `Upgrade: websocket` request.
    pub websocket: bool,
    /// The token of `Authorization: Bearer <token>`.
    pub bearer_token: Option<BearerToken>,
    /// `Sec-WebSocket-Protocol` (a browser's WebSocket carries its bearer token there).
    pub websocket_protocol: Option<String>,
    /// `User-Agent`, for the audit log.
    pub user_agent: Option<String>,
    pub connection: Connection,
    /// The authenticated user: `None` until an authentication stage sets it.
    pub user: Option<UserInfo>,
    /// The export token (`x-kubevirt-export-token` header, else the query parameter of that
    /// name), for export paths only.
    pub export_token: Option<BearerToken>,
    /// `Range` and `If-Range` (resumable downloads of exports).
    pub range: Option<String>,
    pub if_range: Option<String>,
    /// `Upload-Offset` (the IETF resumable-uploads draft's header): where a resumed image
    /// upload continues.
    pub upload_offset: Option<String>,
}

/// A bearer token; its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(pub String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The request's media type without parameters, lower-cased (`""` when absent).
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// What a path addresses.
fn target_of(path: &str) -> Target {
    match path {
        "/version" | "/version/" => return Target::Version,
        "/api" | "/api/" => return Target::CoreVersions,
        "/apis" | "/apis/" => return Target::GroupList,
        "/openapi/v2" => return Target::OpenApiV2,
        "/openapi/v3" => return Target::OpenApiV3Root,
        "/healthz" | "/readyz" | "/livez" => return Target::Health,
        "/metrics" => return Target::Metrics,
        ferrovirt_api::cdi::UPLOAD_PATH_SYNC => {
            return Target::Upload {
                asynchronous: false,
            };
        }
        ferrovirt_api::cdi::UPLOAD_PATH_ASYNC => return Target::Upload { asynchronous: true },
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" => {
            return Target::SelfSubjectAccessReview;
        }
        "/apis/authentication.k8s.io/v1/selfsubjectreviews" => return Target::SelfSubjectReview,
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/openapi/v3/") {
        return Target::OpenApiV3(rest.to_owned());
    }
    if path.starts_with(crate::export_path::PREFIX) {
        return match crate::export_path::parse(path) {
            Some(export) => Target::Export(export),
            None => Target::Invalid(ApiError::not_found(format!(
                "the server could not find the requested resource (path {path})"
            ))),
        };
    }
    let api = if let Some(rest) = path.strip_prefix("/api/") {
        Some(route::parse(true, rest))
    } else {
        path.strip_prefix("/apis/")
            .map(|rest| route::parse(false, rest))
    };
    match api {
        Some(Ok(route)) => Target::Api(route),
        Some(Err(error)) => Target::Invalid(error),
        None => Target::Ui(path.to_owned()),
    }
}

impl ApiRequest {
    /// Parses a request's head (the body stays with the caller).
    pub fn from_parts(parts: &Parts) -> Self {
        let headers = &parts.headers;
        let path = parts.uri.path();
        let (params, query_error) = match parts.uri.query() {
            None => (Params::new(), None),
            Some(query) => match serde_urlencoded::from_str::<Params>(query) {
                Ok(params) => (params, None),
                Err(e) => (
                    Params::new(),
                    Some(ApiError::bad_request(format!("invalid query: {e}"))),
                ),
            },
        };
        let mut target = target_of(path);
        if let Some(error) = query_error {
            target = Target::Invalid(error);
        }
        let accepted = Accepted::from_headers(headers);
        let field_validation = match params.get("fieldValidation").map(String::as_str) {
            Some("Strict") => FieldValidation::Strict,
            Some("Warn") => FieldValidation::Warn,
            _ => FieldValidation::Ignore,
        };
        let bearer_token = ferrovirt_auth::authn::bearer_token(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )
        .map(|t| BearerToken(t.to_owned()));
        let websocket = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let connection = Connection {
            remote_addr: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            client_certificates: parts
                .extensions
                .get::<ClientCertificates>()
                .map(|c| c.0.clone())
                .unwrap_or_default(),
        };
        let export_token = matches!(target, Target::Export(_))
            .then(|| {
                headers
                    .get(ferrovirt_api::export::TOKEN_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .or_else(|| params.get(ferrovirt_api::export::TOKEN_HEADER).cloned())
            })
            .flatten()
            .map(BearerToken);
        Self {
            method: parts.method.clone(),
            attributes: RequestAttributes::new(&parts.method, path, &params),
            target,
            dry_run: params.contains_key("dryRun"),
            params,
            content_type: media_type(headers),
            output: accepted.output(),
            accepted,
            field_validation,
            host: header_text(headers, header::HOST)
                .or_else(|| parts.uri.authority().map(|a| a.to_string())),
            origin: header_text(headers, header::ORIGIN),
            websocket,
            bearer_token,
            websocket_protocol: header_text(headers, header::SEC_WEBSOCKET_PROTOCOL),
            user_agent: header_text(headers, header::USER_AGENT),
            connection,
            user: None,
            export_token,
            range: header_text(headers, header::RANGE),
            if_range: header_text(headers, header::IF_RANGE),
            upload_offset: header_text(
                headers,
                header::HeaderName::from_static(crate::upload::UPLOAD_OFFSET),
            ),
        }
    }

    /// A query flag given as `true` or `1`.
    pub fn flag(&self, name: &str) -> bool {
        self.params
            .get(name)
            .is_some_and(|f| f == "true" || f == "1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parse(method: &str, uri: &str, headers: &[(&str, &str)]) -> ApiRequest {
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let (parts, ()) = builder.body(()).unwrap().into_parts();
        ApiRequest::from_parts(&parts)
    }

    #[test]
    fn table_negotiation() {
        let r = parse(
            "GET",
            "/api/v1/namespaces",
            &[(
                "accept",
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
            )],
        );
        assert_eq!(r.output, Output::Table);
        let r = parse(
            "GET",
            "/api/v1/namespaces",
            &[("accept", "application/json")],
        );
        assert_eq!(r.output, Output::Json);
        let r = parse(
            "GET",
            "/openapi/v2",
            &[(
                "accept",
                "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
            )],
        );
        assert!(!r.accepted.json && r.accepted.protobuf);
        assert!(parse("GET", "/openapi/v2", &[]).accepted.json);
    }

    /// verb, apiGroup, resource, subresource, namespace, name.
    type Expected<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

    /// The attributes Kubernetes' RequestInfoFactory gives the same requests (what RBAC reads).
    #[test]
    fn kubernetes_request_attributes() {
        let cases: &[(&str, &str, Expected)] = &[
            // method, path -> (verb, group, resource, subresource, namespace, name)
            (
                "GET",
                "/api/v1/namespaces/default/persistentvolumeclaims",
                ("list", "", "persistentvolumeclaims", "", "default", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/persistentvolumeclaims?watch=true",
                ("watch", "", "persistentvolumeclaims", "", "default", ""),
            ),
            (
                "GET",
                "/apis/kubevirt.io/v1/virtualmachines",
                ("list", "kubevirt.io", "virtualmachines", "", "", ""),
            ),
            (
                "POST",
                "/apis/kubevirt.io/v1/namespaces/d/virtualmachines",
                ("create", "kubevirt.io", "virtualmachines", "", "d", ""),
            ),
            (
                "PUT",
                "/apis/kubevirt.io/v1/namespaces/d/virtualmachines/vm/status",
                (
                    "update",
                    "kubevirt.io",
                    "virtualmachines",
                    "status",
                    "d",
                    "vm",
                ),
            ),
            (
                "PATCH",
                "/apis/kubevirt.io/v1/namespaces/d/virtualmachines/vm",
                ("patch", "kubevirt.io", "virtualmachines", "", "d", "vm"),
            ),
            (
                "DELETE",
                "/apis/kubevirt.io/v1/namespaces/d/virtualmachines/vm",
                ("delete", "kubevirt.io", "virtualmachines", "", "d", "vm"),
            ),
            (
                "DELETE",
                "/apis/kubevirt.io/v1/namespaces/d/virtualmachines",
                (
                    "deletecollection",
                    "kubevirt.io",
                    "virtualmachines",
                    "",
                    "d",
                    "",
                ),
            ),
            (
                "PUT",
                "/apis/subresources.kubevirt.io/v1/namespaces/d/virtualmachines/vm/start",
                (
                    "update",
                    "subresources.kubevirt.io",
                    "virtualmachines",
                    "start",
                    "d",
                    "vm",
                ),
            ),
            (
                "GET",
                "/apis/subresources.kubevirt.io/v1/namespaces/d/virtualmachineinstances/vm/console",
                (
                    "get",
                    "subresources.kubevirt.io",
                    "virtualmachineinstances",
                    "console",
                    "d",
                    "vm",
                ),
            ),
            // As kube-apiserver and KubeVirt's virt-api: the subresource is the segment after
            // the name, so a screenshot is authorized as `virtualmachineinstances/vnc`.
            (
                "GET",
                "/apis/subresources.kubevirt.io/v1/namespaces/d/virtualmachineinstances/vm/vnc/screenshot",
                (
                    "get",
                    "subresources.kubevirt.io",
                    "virtualmachineinstances",
                    "vnc",
                    "d",
                    "vm",
                ),
            ),
            (
                "GET",
                "/api/v1/namespaces/kubevirt",
                ("get", "", "namespaces", "", "kubevirt", "kubevirt"),
            ),
            (
                "PUT",
                "/api/v1/namespaces/kubevirt/status",
                ("update", "", "namespaces", "status", "kubevirt", "kubevirt"),
            ),
        ];
        for (method, uri, (verb, group, resource, sub, ns, name)) in cases {
            let r = parse(method, uri, &[]);
            let a = &r.attributes;
            assert!(a.is_resource_request, "{uri}");
            assert_eq!(
                (
                    a.verb.as_str(),
                    a.api_group.as_str(),
                    a.resource.as_str(),
                    a.subresource.as_str(),
                    a.namespace.as_str(),
                    a.name.as_str()
                ),
                (*verb, *group, *resource, *sub, *ns, *name),
                "{method} {uri}"
            );
        }
        for uri in [
            "/api",
            "/apis",
            "/apis/kubevirt.io/v1",
            "/api/v1",
            "/openapi/v3",
            "/healthz",
            "/",
            "/assets/x.js",
        ] {
            let r = parse("GET", uri, &[]);
            assert!(!r.attributes.is_resource_request, "{uri}");
            assert_eq!(r.attributes.verb, "get");
            assert_eq!(r.attributes.path, uri);
        }
    }

    #[test]
    fn targets_and_flags() {
        let r = parse(
            "PATCH",
            "/apis/kubevirt.io/v1/namespaces/d/virtualmachines/vm?fieldValidation=Strict&dryRun=All",
            &[
                (
                    "content-type",
                    "application/merge-patch+json; charset=utf-8",
                ),
                ("authorization", "Bearer abc"),
                ("host", "127.0.0.1:8080"),
            ],
        );
        assert!(matches!(r.target, Target::Api(Route::Item { .. })));
        assert_eq!(r.field_validation, FieldValidation::Strict);
        assert!(r.dry_run);
        assert_eq!(r.content_type, "application/merge-patch+json");
        assert_eq!(r.bearer_token, Some(BearerToken("abc".into())));
        assert!(!format!("{r:?}").contains("abc"));
        assert_eq!(r.host.as_deref(), Some("127.0.0.1:8080"));
        assert!(r.user.is_none());
        assert!(
            matches!(parse("GET", "/apis/nope.io/v1/things", &[]).target, Target::Invalid(e) if e.code == 404)
        );
        assert_eq!(
            parse("GET", "/openapi/v3/apis/kubevirt.io/v1", &[]).target,
            Target::OpenApiV3("apis/kubevirt.io/v1".into())
        );
        assert_eq!(
            parse("GET", "/vms/x", &[]).target,
            Target::Ui("/vms/x".into())
        );
        let ws = parse(
            "GET",
            "/apis/subresources.kubevirt.io/v1/namespaces/d/virtualmachineinstances/v/console",
            &[
                ("upgrade", "websocket"),
                ("origin", "http://127.0.0.1:8080"),
            ],
        );
        assert!(ws.websocket);
        assert_eq!(ws.origin.as_deref(), Some("http://127.0.0.1:8080"));
    }
}
