//! The HTTP client of the client commands (`apply`, `get`, `describe`, `delete`, `start`/`stop`/
//! `restart`, `console`, `logs`): a blocking `ureq` agent pointed at `ferrovirt serve`, with the
//! server's `Status` objects turned into [`ClientError::Status`] and printed as kubectl prints them.
//!
//! [`ClientArgs`] are the connection flags every client command takes (`--server`, `-n`).

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// The media type `kubectl get` asks for: a server-side Table, JSON as fallback.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// Largest response body read into memory (lists of many objects stay far below).
const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// The connection flags of every client command.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The ferrovirt API server.
    #[arg(
        long = "server",
        short = 's',
        value_name = "URL",
        env = "FERROVIRT_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// The namespace of namespaced objects.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,
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
        "the connection to the server {server} failed - is `ferrovirt serve` running there? (set --server or FERROVIRT_SERVER): {detail}"
    )]
    Transport { server: String, detail: String },
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
    /// Ordinary requests: bounded in time.
    agent: ureq::Agent,
    /// Watches and followed logs: no overall deadline.
    streaming: ureq::Agent,
}

impl Client {
    pub fn new(server: &str) -> Result<Self, ClientError> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Usage(format!(
                "--server {server:?} is not an http:// or https:// URL (e.g. http://127.0.0.1:8080)"
            )));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let streaming = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        Ok(Self {
            base,
            agent,
            streaming,
        })
    }

    pub fn from_args(args: &ClientArgs) -> Result<Self, ClientError> {
        Self::new(&args.server)
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn transport(&self, error: ureq::Error) -> ClientError {
        ClientError::Transport {
            server: self.base.clone(),
            detail: error.to_string(),
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
            ("GET", _) => self.agent.get(&url).header("Accept", accept).call(),
            ("DELETE", None) => self.agent.delete(&url).header("Accept", accept).call(),
            ("DELETE", Some((content_type, bytes))) => self
                .agent
                .delete(&url)
                .header("Accept", accept)
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
                builder
                    .header("Accept", accept)
                    .header("Content-Type", content_type)
                    .send(bytes)
            }
        };
        let response = result.map_err(|e| self.transport(e))?;
        let code = response.status().as_u16();
        let mut bytes = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(MAX_BODY_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| ClientError::Transport {
                server: self.base.clone(),
                detail: format!("reading the answer to {method} {path}: {e}"),
            })?;
        Ok((code, bytes))
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

    /// A streamed GET (watch, followed log): the body as a reader, after a 2xx status.
    pub fn stream(&self, path: &str, accept: &str) -> Result<impl Read + use<>, ClientError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .streaming
            .get(&url)
            .header("Accept", accept)
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

    #[test]
    fn servers_must_be_http_urls() {
        assert!(Client::new("127.0.0.1:8080").is_err());
        assert_eq!(
            Client::new("http://127.0.0.1:8080/").unwrap().base(),
            "http://127.0.0.1:8080"
        );
    }
}
