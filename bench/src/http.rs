//! A small HTTPS/1.1 client for the ferrovirt API as `serve` ships it (TLS with the CA of
//! `<data-dir>/admin.kubeconfig`, the admin bearer token on every request): one keep-alive
//! connection per [`Connection`] (so N concurrent workers are N connections, as N kubectl clients
//! would be), JSON requests, and a line-by-line reader for watch streams.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::BenchError;

/// `Accept` header that asks for a `meta.k8s.io/v1` Table (what `kubectl get` asks for).
pub const ACCEPT_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// Where the API server is and how to talk to it: the address, the TLS trust and the token.
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    authorization: Arc<str>,
}

impl Api {
    /// The admin's access from the kubeconfig `serve` wrote (`None` until it is there).
    pub fn from_admin_kubeconfig(data_dir: &Path, addr: SocketAddr) -> Option<Self> {
        let config =
            ferrovirt_auth::kubeconfig::Kubeconfig::load(&data_dir.join("admin.kubeconfig"))
                .ok()?;
        let credentials = config.resolve(None).ok()?;
        Some(Api {
            addr,
            tls: tokio_rustls::TlsConnector::from(credentials.rustls_client_config().ok()?),
            authorization: credentials.authorization_header()?.into(),
        })
    }
}

/// One keep-alive HTTPS/1.1 connection to the API server.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    authorization: Arc<str>,
}

/// A response: status and whole body.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON, or an error naming the request when the status is not 2xx.
    pub fn json(&self, what: &str) -> Result<Value, BenchError> {
        if !self.status.is_success() {
            return Err(BenchError::Http(format!(
                "{what}: HTTP {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| BenchError::Http(format!("{what}: the body is not JSON: {e}")))
    }
}

impl Connection {
    /// Opens a connection (TCP_NODELAY, like every HTTP client) and its TLS session.
    pub async fn open(api: &Api) -> Result<Self, BenchError> {
        let addr = api.addr;
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| BenchError::Http(format!("cannot connect to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let stream = api
            .tls
            .connect(name, stream)
            .await
            .map_err(|e| BenchError::Http(format!("TLS handshake with {addr}: {e}")))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BenchError::Http(format!("HTTP handshake with {addr}: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            addr,
            authorization: api.authorization.clone(),
        })
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        accept: &str,
    ) -> Result<hyper::Response<Incoming>, BenchError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("authorization", &*self.authorization)
            .header("accept", accept);
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| BenchError::Http(format!("bad request {path}: {e}")))?;
        self.sender
            .ready()
            .await
            .map_err(|e| BenchError::Http(format!("connection lost before {path}: {e}")))?;
        self.sender
            .send_request(request)
            .await
            .map_err(|e| BenchError::Http(format!("{path}: {e}")))
    }

    /// A request with an optional JSON body; reads the whole response.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        accept: &str,
    ) -> Result<Reply, BenchError> {
        let body = body.map(|b| b.to_string().into_bytes());
        let response = self.send(method, path, body, accept).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| BenchError::Http(format!("reading the body of {path}: {e}")))?
            .to_bytes();
        Ok(Reply { status, body })
    }

    /// `GET path` as JSON.
    pub async fn get_json(&mut self, path: &str) -> Result<Value, BenchError> {
        self.request(Method::GET, path, None, "application/json")
            .await?
            .json(&format!("GET {path}"))
    }

    /// Opens a watch (the path must carry `watch=true`); the connection is used up by it.
    pub async fn watch(mut self, path: &str) -> Result<WatchStream, BenchError> {
        let response = self
            .send(Method::GET, path, None, "application/json")
            .await?;
        if !response.status().is_success() {
            return Err(BenchError::Http(format!(
                "watch {path}: HTTP {}",
                response.status()
            )));
        }
        Ok(WatchStream {
            body: response.into_body(),
            buffer: BytesMut::new(),
        })
    }
}

/// The events of a watch, one JSON line each.
pub struct WatchStream {
    body: Incoming,
    buffer: BytesMut,
}

impl WatchStream {
    /// The next event (`{"type": ..., "object": ...}`); `None` when the server closed the watch.
    pub async fn next_event(&mut self) -> Result<Option<Value>, BenchError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                let line = &line[..end];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| BenchError::Http(format!("a watch event is not JSON: {e}")));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(BenchError::Http(format!("watch stream: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buffer.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
            }
        }
    }
}
