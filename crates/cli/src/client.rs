//! The HTTP client of the client commands (`apply`, `get`, `describe`, `delete`, `start`/`stop`/
//! `restart`, `console`, `logs`, `state`): a blocking `ureq` agent pointed at `ferrovirt serve`,
//! with the server's `Status` objects turned into [`ClientError::Status`] and printed as kubectl
//! prints them.
//!
//! [`ClientArgs`] are the connection flags every client command takes (`--kubeconfig`,
//! `--context`, `--server`, `-n`); [`crate::connection`] turns them into a server URL and
//! credentials with kubectl's rules. Over `https://` the client trusts only the kubeconfig's CA and
//! presents its client certificate; its bearer token goes on every request and stream.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::connection::Connection;

/// The media type `kubectl get` asks for: a server-side Table, JSON as fallback.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// Largest response body read into memory (lists of many objects stay far below).
const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// The connection flags of every client command, as kubectl's.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientArgs {
    /// The kubeconfig file (default: the files of $KUBECONFIG, else ~/.kube/config, else
    /// /var/lib/ferrovirt/admin.kubeconfig, which `ferrovirt serve` writes).
    #[arg(long = "kubeconfig", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long = "context", value_name = "NAME")]
    pub context: Option<String>,
    /// The API server URL, overriding the kubeconfig's (without a kubeconfig: plain
    /// http://127.0.0.1:PORT of a server started with --insecure-http).
    #[arg(
        long = "server",
        short = 's',
        value_name = "URL",
        env = "FERROVIRT_SERVER"
    )]
    pub server: Option<String>,
    /// The namespace of namespaced objects (default: the context's namespace, else `default`).
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a Kubernetes `Status` failure (or another non-2xx answer).
    #[error("Error from server ({reason}): {message}")]
    Status {
        code: u16,
        reason: String,
        message: String,
    },
    #[error(
        "the connection to the server {server} failed - is `ferrovirt serve` running there? (check the kubeconfig's server, or --server / FERROVIRT_SERVER): {detail}"
    )]
    Transport { server: String, detail: String },
    #[error(
        "Unable to connect to the server {server}: the TLS handshake failed: {detail}; check that the kubeconfig belongs to this server (its certificate-authority-data must be the server's <data-dir>/pki/ca.crt)"
    )]
    Tls { server: String, detail: String },
    /// No usable credentials (kubeconfig missing, unreadable or incomplete).
    #[error("{0}")]
    Credentials(String),
    #[error("the server's answer to {what} is not valid JSON: {detail}")]
    Decode { what: String, detail: String },
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// Whether this is the server's 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Status { code: 404, .. })
    }

    /// Prints the error as kubectl does (`Error from server (...)` or `error: ...`) and returns
    /// exit code 1.
    pub fn report(&self) -> ExitCode {
        match self {
            ClientError::Status { .. } => eprintln!("{self}"),
            _ => eprintln!("error: {self}"),
        }
        ExitCode::FAILURE
    }
}

/// The reason of an HTTP code when the body is not a Status (as client-go names them).
fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    }
}

/// A `ClientError::Status` from a failed answer's code and body.
pub fn status_error(code: u16, body: &[u8]) -> ClientError {
    let status: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        status
            .as_ref()
            .and_then(|s| s.get(name))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    ClientError::Status {
        code,
        reason: field("reason").unwrap_or_else(|| reason_for(code).to_owned()),
        message: field("message").unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            if text.is_empty() {
                format!("the server answered HTTP {code}")
            } else {
                text
            }
        }),
    }
}

/// Characters escaped in a query value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `path?k=v&...` with the values percent-encoded.
pub fn with_query(path: &str, query: &[(&str, &str)]) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let pairs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    namespace: String,
    /// `Bearer <token>` when the kubeconfig's user has a token.
    authorization: Option<String>,
    /// Ordinary requests: bounded in time.
    agent: ureq::Agent,
    /// Watches and followed logs: no overall deadline.
    streaming: ureq::Agent,
}

/// The TLS settings of a connection: only the kubeconfig's CA is trusted (no system roots), and
/// its client certificate is presented when it has one.
fn tls_config(connection: &Connection) -> Result<TlsConfig, ClientError> {
    let builder =
        TlsConfig::builder().unversioned_rustls_crypto_provider(ferrovirt_auth::crypto_provider());
    let Some(credentials) = connection.tls_credentials()? else {
        // Plain http://: no root is trusted, so nothing can be reached over https by accident.
        return Ok(builder
            .root_certs(RootCerts::Specific(Default::default()))
            .build());
    };
    let invalid =
        |e: ferrovirt_auth::kubeconfig::KubeconfigError| ClientError::Credentials(e.to_string());
    let roots: Vec<Certificate<'static>> = credentials
        .ca_certificates()
        .map_err(invalid)?
        .iter()
        .map(|der| Certificate::from_der(der).to_owned())
        .collect();
    let client_cert = match (&credentials.client_cert_pem, &credentials.client_key_pem) {
        (Some(cert_pem), Some(key_pem)) => {
            let bad = |what: &str, e: ureq::Error| {
                ClientError::Credentials(format!(
                    "the kubeconfig's {what} of context {:?} is not usable PEM: {e}",
                    credentials.context
                ))
            };
            let mut chain = Vec::new();
            for item in ureq::tls::parse_pem(cert_pem) {
                if let PemItem::Certificate(cert) =
                    item.map_err(|e| bad("client-certificate", e))?
                {
                    chain.push(cert);
                }
            }
            let key = PrivateKey::from_pem(key_pem).map_err(|e| bad("client-key", e))?;
            Some(ClientCert::new_with_certs(&chain, key))
        }
        _ => None,
    };
    Ok(builder
        .root_certs(RootCerts::from(roots))
        .client_cert(client_cert)
        .build())
}

/// Whether a transport error is the TLS handshake failing (unknown CA, wrong name, refused
/// client certificate), as opposed to no server listening.
fn is_tls_failure(error: &ureq::Error) -> bool {
    match error {
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) => true,
        ureq::Error::Io(e) => e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()),
        _ => false,
    }
}

impl Client {
    /// A client of the resolved connection.
    pub fn new(connection: &Connection) -> Result<Self, ClientError> {
        let base = connection.server.trim_end_matches('/').to_owned();
        let tls = tls_config(connection)?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(120)))
            .tls_config(tls.clone())
            .build()
            .into();
        let streaming = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .tls_config(tls)
            .build()
            .into();
        Ok(Self {
            base,
            namespace: connection.namespace.clone(),
            authorization: connection.authorization_header(),
            agent,
            streaming,
        })
    }

    /// A client of the server and credentials `args` select (kubectl's loading rules).
    pub fn from_args(args: &ClientArgs) -> Result<Self, ClientError> {
        Self::new(&Connection::from_args(args)?)
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The namespace of namespaced objects (`-n`, else the context's, else `default`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn transport(&self, error: ureq::Error) -> ClientError {
        if is_tls_failure(&error) {
            return ClientError::Tls {
                server: self.base.clone(),
                detail: error.to_string(),
            };
        }
        ClientError::Transport {
            server: self.base.clone(),
            detail: error.to_string(),
        }
    }

    /// A request builder with `Accept` and the `Authorization` header.
    fn authorized<B>(
        &self,
        request: ureq::RequestBuilder<B>,
        accept: &str,
    ) -> ureq::RequestBuilder<B> {
        let request = request.header("Accept", accept);
        match &self.authorization {
            Some(value) => request.header("Authorization", value),
            None => request,
        }
    }

    /// One request; returns (status code, body). Non-2xx answers are returned, not errors.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        accept: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let url = format!("{}{path}", self.base);
        let result = match (method, body) {
            ("GET", _) => self.authorized(self.agent.get(&url), accept).call(),
            ("DELETE", None) => self.authorized(self.agent.delete(&url), accept).call(),
            ("DELETE", Some((content_type, bytes))) => self
                .authorized(self.agent.delete(&url), accept)
                .header("Content-Type", content_type)
                .force_send_body()
                .send(bytes),
            (method, body) => {
                let (content_type, bytes) = body.unwrap_or(("application/json", b"{}"));
                let builder = match method {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    other => {
                        return Err(ClientError::Usage(format!(
                            "internal: unsupported HTTP method {other}"
                        )));
                    }
                };
                self.authorized(builder, accept)
                    .header("Content-Type", content_type)
                    .send(bytes)
            }
        };
        let response = result.map_err(|e| self.transport(e))?;
        read_answer(response, self.base.clone(), || {
            format!("reading the answer to {method} {path}")
        })
    }

    /// A request whose 2xx answer is JSON; other answers become [`ClientError::Status`].
    pub fn json(
        &self,
        method: &str,
        path: &str,
        accept: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Value, ClientError> {
        let (code, bytes) = self.raw(method, path, accept, body)?;
        if !(200..300).contains(&code) {
            return Err(status_error(code, &bytes));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            what: format!("{method} {path}"),
            detail: e.to_string(),
        })
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.json("GET", path, "application/json", None)
    }

    pub fn get_table(&self, path: &str) -> Result<Value, ClientError> {
        self.json("GET", path, TABLE_ACCEPT, None)
    }

    /// A JSON body sent with `method` (POST, PUT, PATCH with `content_type`).
    pub fn send_json(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<Value, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Usage(e.to_string()))?;
        self.json(
            method,
            path,
            "application/json",
            Some((content_type, &bytes)),
        )
    }

    /// The agent for an upload endpoint (`insecure`: no certificate check, virtctl's flag).
    fn upload_agent(&self, insecure: bool) -> ureq::Agent {
        if !insecure {
            return self.streaming.clone();
        }
        let tls = TlsConfig::builder()
            .unversioned_rustls_crypto_provider(ferrovirt_auth::crypto_provider())
            .disable_verification(true)
            .build();
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .tls_config(tls)
            .build()
            .into()
    }

    /// `POST`s an image to a CDI upload endpoint with an upload token; `offset` > 0 resumes an
    /// interrupted upload there (`Upload-Offset`; `body` starts at that byte). The status and
    /// body of the answer.
    pub fn upload(
        &self,
        url: &str,
        token: &str,
        mut body: impl Read,
        length: u64,
        offset: u64,
        insecure: bool,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let mut request = self
            .upload_agent(insecure)
            .post(url)
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", length.saturating_sub(offset).to_string());
        if offset > 0 {
            request = request.header("Upload-Offset", offset.to_string());
        }
        let response = request
            .send(ureq::SendBody::from_reader(&mut body))
            .map_err(|e| self.transport(e))?;
        read_answer(response, url.to_owned(), || {
            "reading the answer to the upload".to_owned()
        })
    }

    /// How many bytes of an interrupted upload the endpoint kept (`HEAD`, `Upload-Offset`); 0
    /// when none (or when the endpoint does not resume uploads).
    pub fn upload_offset(
        &self,
        url: &str,
        token: &str,
        insecure: bool,
    ) -> Result<u64, ClientError> {
        let response = self
            .upload_agent(insecure)
            .head(url)
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .map_err(|e| self.transport(e))?;
        let code = response.status().as_u16();
        if !(200..300).contains(&code) {
            let (_, bytes) = read_answer(response, url.to_owned(), || {
                "reading the answer to HEAD of the upload".to_owned()
            })?;
            return Err(status_error(code, &bytes));
        }
        Ok(response
            .headers()
            .get("upload-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// A `PUT` whose body is streamed from `reader` (a volume import); the JSON answer.
    pub fn put_reader(
        &self,
        path: &str,
        content_type: &str,
        reader: &mut dyn Read,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .authorized(self.streaming.put(&url), "application/json")
            .header("Content-Type", content_type)
            .send(ureq::SendBody::from_reader(reader))
            .map_err(|e| self.transport(e))?;
        let (code, bytes) = read_answer(response, self.base.clone(), || {
            format!("reading the answer to PUT {path}")
        })?;
        if !(200..300).contains(&code) {
            return Err(status_error(code, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            what: format!("PUT {path}"),
            detail: e.to_string(),
        })
    }

    /// A streamed GET (watch, followed log): the body as a reader, after a 2xx status.
    pub fn stream(&self, path: &str, accept: &str) -> Result<impl Read + use<>, ClientError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .authorized(self.streaming.get(&url), accept)
            .call()
            .map_err(|e| self.transport(e))?;
        let code = response.status().as_u16();
        let reader = response.into_body().into_reader();
        if !(200..300).contains(&code) {
            let mut bytes = Vec::new();
            let _ = reader.take(1024 * 1024).read_to_end(&mut bytes);
            return Err(status_error(code, &bytes));
        }
        Ok(reader)
    }
}

/// The status and the body (at most [`MAX_BODY_BYTES`]) of an answer; `what` names the request
/// in a transport error.
fn read_answer(
    response: ureq::http::Response<ureq::Body>,
    server: String,
    what: impl FnOnce() -> String,
) -> Result<(u16, Vec<u8>), ClientError> {
    let code = response.status().as_u16();
    let mut bytes = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(MAX_BODY_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| ClientError::Transport {
            server,
            detail: format!("{}: {e}", what()),
        })?;
    Ok((code, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_become_kubectl_messages() {
        let body = br#"{"kind":"Status","status":"Failure","reason":"NotFound","code":404,
            "message":"virtualmachines.kubevirt.io \"x\" not found"}"#;
        let error = status_error(404, body);
        assert!(error.is_not_found());
        assert_eq!(
            error.to_string(),
            "Error from server (NotFound): virtualmachines.kubevirt.io \"x\" not found"
        );
        let plain = status_error(503, b"busy");
        assert_eq!(
            plain.to_string(),
            "Error from server (ServiceUnavailable): busy"
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            with_query("/x", &[("labelSelector", "app=demo,tier in (a,b)")]),
            "/x?labelSelector=app%3Ddemo%2Ctier%20in%20%28a%2Cb%29"
        );
        assert_eq!(with_query("/x", &[]), "/x");
    }
}
