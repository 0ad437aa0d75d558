//! The source's end of a live migration between two ferrovirt hosts: two unix sockets in the
//! source VM's runtime dir that its QEMU connects to (`migrate unix:`, the mirrors' NBD client),
//! each accepted connection relayed over its own WebSocket to the destination server's
//! `migrationtunnel` subresource (`apiserver::migration_tunnel`), over TLS with the
//! destination's CA and the credentials of a kubeconfig the source host was given for it
//! (never a new host port, never QEMU's plain TCP).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrovirt_auth::kubeconfig::Credentials;
use ferrovirt_vmm::migration::MigrationSockets;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The source-side socket names in the runtime dir (the destination's are
/// `vmm::migration::MEMORY_SOCKET` / `BLOCKS_SOCKET`).
pub const OUT_MEMORY_SOCKET: &str = "migration-out.sock";
pub const OUT_BLOCKS_SOCKET: &str = "nbd-out.sock";

/// Why the tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(
        "connectURL {url:?} is not an https:// URL with a host (the destination server, e.g. https://10.0.0.2:8443)"
    )]
    BadUrl { url: String },
    #[error("the kubeconfig for {server}: {detail}")]
    Credentials { server: String, detail: String },
    #[error("cannot reach the destination {server}: {detail}")]
    Transport { server: String, detail: String },
    #[error("the destination {server} refused the migration tunnel ({code}): {body}")]
    Refused {
        server: String,
        code: u16,
        body: String,
    },
    #[error(
        "the destination {server} did not take the volume's meta/ and swtpm-localca/: {detail}"
    )]
    VolumeFiles { server: String, detail: String },
    #[error("the destination {server} cannot receive this VM: {detail}")]
    Destination { server: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the tunnel leads: the destination server and the receiving VMI of one migration.
#[derive(Clone)]
pub struct TunnelTarget {
    /// The destination's kubeconfig context (its `server` is the migration's `connectURL`).
    pub credentials: Credentials,
    pub namespace: String,
    pub vmi: String,
    pub migration_id: String,
}

/// A TLS (or test) byte stream under the WebSocket.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// One channel of the tunnel.
pub type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Transport>>;

/// `https://HOST:PORT[/prefix]` -> (`HOST:PORT`, `HOST` without brackets, prefix).
fn split_url(url: &str) -> Option<(String, String, String)> {
    let rest = url.strip_prefix("https://")?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return None;
    }
    let has_port = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].contains(':'),
        None => authority.contains(':'),
    };
    let address = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    };
    let host = match authority.rfind(']') {
        Some(bracket) => authority[..bracket].trim_start_matches('['),
        None => authority.split(':').next().unwrap_or(authority),
    };
    Some((address, host.to_owned(), prefix.to_owned()))
}

/// A TLS connection to the destination server, with what a request on it needs.
struct Connection {
    stream: Box<dyn Transport>,
    /// `HOST:PORT` (the `Host` header and the WebSocket URL's authority).
    address: String,
    /// The path prefix of the server URL (`""` for most).
    prefix: String,
    /// The `Authorization` header of the kubeconfig's user, if it has a token.
    authorization: Option<HeaderValue>,
}

impl TunnelTarget {
    /// Connects to the destination server with the kubeconfig's CA (and client certificate).
    async fn connect(&self) -> Result<Connection, RelayError> {
        let authorization = self.authorization()?;
        let server = self.credentials.server.clone();
        let (address, host, prefix) = split_url(&server).ok_or_else(|| RelayError::BadUrl {
            url: server.clone(),
        })?;
        let credentials = |detail: String| RelayError::Credentials {
            server: server.clone(),
            detail,
        };
        let config = self
            .credentials
            .rustls_client_config()
            .map_err(|e| credentials(e.to_string()))?;
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| credentials(format!("host {host}: {e}")))?;
        let transport = |detail: String| RelayError::Transport {
            server: server.clone(),
            detail,
        };
        let tcp = tokio::net::TcpStream::connect(&address)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&config))
            .connect(server_name, tcp)
            .await
            .map_err(|e| transport(format!("TLS: {e}")))?;
        Ok(Connection {
            stream: Box::new(tls),
            address,
            prefix,
            authorization,
        })
    }

    /// The `Authorization` header of the kubeconfig's user, if it has a token.
    fn authorization(&self) -> Result<Option<HeaderValue>, RelayError> {
        self.credentials
            .authorization_header()
            .map(|value| {
                HeaderValue::from_str(&value).map_err(|_| RelayError::Credentials {
                    server: self.credentials.server.clone(),
                    detail: "the token cannot be sent in a header".into(),
                })
            })
            .transpose()
    }

    /// Opens one channel (`memory` or `blocks`) of the tunnel.
    pub async fn dial(&self, channel: &str) -> Result<Socket, RelayError> {
        let server = self.credentials.server.clone();
        let connection = self.connect().await?;
        let (address, prefix) = (&connection.address, &connection.prefix);
        let url = format!(
            "wss://{address}{prefix}/apis/subresources.kubevirt.io/v1/namespaces/{}/virtualmachineinstances/{}/migrationtunnel/{}/{channel}",
            self.namespace, self.vmi, self.migration_id
        );
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| RelayError::BadUrl {
                url: format!("{url}: {e}"),
            })?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("plain.kubevirt.io"),
        );
        if let Some(value) = connection.authorization {
            request.headers_mut().insert("Authorization", value);
        }
        match tokio_tungstenite::client_async(request, connection.stream).await {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(RelayError::Refused {
                    server: server.clone(),
                    code: response.status().as_u16(),
                    body: String::from_utf8_lossy(&response.body().clone().unwrap_or_default())
                        .chars()
                        .take(400)
                        .collect(),
                })
            }
            Err(e) => Err(RelayError::Transport {
                server,
                detail: format!("WebSocket handshake: {e}"),
            }),
        }
    }

    /// Sends the backend-storage volume's files no QEMU stream carries (`packed`, from
    /// `Engine::pack_volume_files`) through the `volume-files` channel: binary messages, then the
    /// text `end`; the destination answers `staged N` once they are in its receiver's runtime
    /// dir. Returns N.
    pub async fn send_volume_files(&self, packed: &[u8]) -> Result<usize, RelayError> {
        let server = self.credentials.server.clone();
        let broken = |detail: String| RelayError::VolumeFiles {
            server: server.clone(),
            detail,
        };
        let mut socket = self.dial("volume-files").await?;
        for chunk in packed.chunks(64 * 1024) {
            socket
                .send(Message::Binary(chunk.to_vec().into()))
                .await
                .map_err(|e| broken(e.to_string()))?;
        }
        socket
            .send(Message::Text("end".into()))
            .await
            .map_err(|e| broken(e.to_string()))?;
        let answer = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(message) = socket.next().await {
                match message {
                    Ok(Message::Text(text)) => return Ok(text.to_string()),
                    Ok(Message::Close(_)) => break,
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err("the channel closed without an answer".to_owned())
        })
        .await
        .map_err(|_| broken("no answer within 60 s".into()))?
        .map_err(broken)?;
        let _ = socket.close(None).await;
        answer
            .strip_prefix("staged ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| broken(answer.strip_prefix("error: ").unwrap_or(&answer).to_owned()))
    }

    /// The phase and reason of the receiving VMI on the destination (`None`: it does not exist
    /// there).
    pub async fn receiver_phase(&self) -> Result<Option<(String, String)>, RelayError> {
        let path = format!(
            "/apis/kubevirt.io/v1/namespaces/{}/virtualmachineinstances/{}",
            self.namespace, self.vmi
        );
        let (code, body) = self.get(&path).await?;
        match code {
            404 => Ok(None),
            200 => {
                let vmi: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| RelayError::Transport {
                        server: self.credentials.server.clone(),
                        detail: format!("GET {path}: not a VirtualMachineInstance: {e}"),
                    })?;
                let text = |pointer: &str| {
                    vmi.pointer(pointer)
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                Ok(Some((text("/status/phase"), text("/status/reason"))))
            }
            code => Err(RelayError::Refused {
                server: self.credentials.server.clone(),
                code,
                body: String::from_utf8_lossy(&body).chars().take(400).collect(),
            }),
        }
    }

    /// The phase of the destination's receiving VirtualMachineInstanceMigration of this
    /// migration (`spec.receive.migrationID` and `spec.vmiName` this target's; `None`: there is
    /// none). Its `Succeeded` says the destination resumed the guest, which outlives the VMI's
    /// `Running` when that guest ended at once.
    pub async fn receiving_migration_phase(&self) -> Result<Option<String>, RelayError> {
        let path = format!(
            "/apis/kubevirt.io/v1/namespaces/{}/virtualmachineinstancemigrations",
            self.namespace
        );
        let (code, body) = self.get(&path).await?;
        if code != 200 {
            return Err(RelayError::Refused {
                server: self.credentials.server.clone(),
                code,
                body: String::from_utf8_lossy(&body).chars().take(400).collect(),
            });
        }
        let list: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RelayError::Transport {
                server: self.credentials.server.clone(),
                detail: format!("GET {path}: not a list of migrations: {e}"),
            })?;
        let text = |item: &serde_json::Value, pointer: &str| {
            item.pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        Ok(list
            .get("items")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .find(|item| {
                text(item, "/spec/receive/migrationID").as_deref()
                    == Some(self.migration_id.as_str())
                    && text(item, "/spec/vmiName").as_deref() == Some(self.vmi.as_str())
            })
            .map(|item| text(item, "/status/phase").unwrap_or_default()))
    }

    /// Creates the receiving VM and VMIM of this migration on the destination (what KubeVirt
    /// leaves to "an orchestrator"; the source VMIM asked for it with
    /// `migration.ferrovirt.io/prepare-destination`): the VM from the source's (`source_vm`) as
    /// [`ferrovirt_resources::migration::receiver_vm`] makes it, unless a receiving VM of that
    /// name waits there already; a VM of that name that does not wait is never touched. Returns
    /// what it did, for the log.
    pub async fn prepare_receiver(&self, source_vm: &Value) -> Result<String, RelayError> {
        use ferrovirt_resources::migration::{WAIT_AS_RECEIVER, receiver_vm, receiving_migration};
        let server = self.credentials.server.clone();
        let (ns, name) = (&self.namespace, &self.vmi);
        let vms = format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachines");
        let refused = |code: u16, body: &[u8]| RelayError::Refused {
            server: server.clone(),
            code,
            body: String::from_utf8_lossy(body).chars().take(400).collect(),
        };
        let (code, body) = self.request("GET", &format!("{vms}/{name}"), None).await?;
        let mut done = Vec::new();
        match code {
            200 => {
                let existing: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if existing
                    .pointer("/spec/runStrategy")
                    .and_then(Value::as_str)
                    != Some(WAIT_AS_RECEIVER)
                {
                    return Err(RelayError::Destination {
                        server,
                        detail: format!(
                            "it has a VirtualMachine {ns}/{name} already that does not wait for a migration (runStrategy {WAIT_AS_RECEIVER}); delete it there or migrate into a namespace that has none"
                        ),
                    });
                }
                done.push(format!("VirtualMachine {name} waits there already"));
            }
            404 => {
                let vm = receiver_vm(source_vm);
                let (code, body) = self.request("POST", &vms, Some(&vm)).await?;
                if code != 201 && code != 200 {
                    return Err(refused(code, &body));
                }
                done.push(format!(
                    "created VirtualMachine {name} ({WAIT_AS_RECEIVER})"
                ));
            }
            code => return Err(refused(code, &body)),
        }
        let vmim = receiving_migration(ns, name, &self.migration_id);
        let path = format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachineinstancemigrations");
        let (code, body) = self.request("POST", &path, Some(&vmim)).await?;
        match code {
            200 | 201 => done.push(format!(
                "created VirtualMachineInstanceMigration {}",
                vmim["metadata"]["name"].as_str().unwrap_or_default()
            )),
            // A retry after a restart of this server: it exists from the first attempt.
            409 => done.push("its VirtualMachineInstanceMigration exists already".into()),
            code => return Err(refused(code, &body)),
        }
        Ok(done.join(", "))
    }

    /// One `GET` of an API path on the destination.
    async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), RelayError> {
        self.request("GET", path, None).await
    }

    /// One request on the destination's API (HTTP/1.1 over the kubeconfig's TLS), with a JSON
    /// body if given.
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), RelayError> {
        use http_body_util::BodyExt;
        let server = self.credentials.server.clone();
        let transport = |detail: String| RelayError::Transport {
            server: server.clone(),
            detail,
        };
        let Connection {
            stream,
            address,
            prefix,
            authorization,
        } = self.connect().await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| transport(format!("HTTP: {e}")))?;
        let driver = tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{prefix}{path}"))
            .header(hyper::header::HOST, address.as_str())
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(value) = authorization {
            request = request.header(hyper::header::AUTHORIZATION, value);
        }
        let payload = match body {
            Some(value) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                bytes::Bytes::from(value.to_string())
            }
            None => bytes::Bytes::new(),
        };
        let request = request
            .body(http_body_util::Full::new(payload))
            .map_err(|e| transport(format!("{method} {path}: {e}")))?;
        let answer = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| transport(format!("{method} {path}: {e}")))?;
            let code = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(format!("{method} {path}: {e}")))?
                .to_bytes();
            Ok((code, body.to_vec()))
        }
        .await;
        driver.abort();
        answer
    }
}

/// The relay of one migration: its listening sockets live until it is dropped.
pub struct Relay {
    pub sockets: MigrationSockets,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.sockets.memory);
        let _ = std::fs::remove_file(&self.sockets.blocks);
    }
}

/// Checks that the destination answers and accepts the tunnel (one `memory` dial would consume
/// the receiving QEMU's only migration connection, so the check opens a `blocks` channel, which
/// the NBD server accepts any number of times, and closes it at once).
pub async fn probe(target: &TunnelTarget) -> Result<(), RelayError> {
    let mut socket = target.dial("blocks").await?;
    let _ = socket.close(None).await;
    Ok(())
}

fn bind(path: &Path) -> Result<UnixListener, RelayError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| RelayError::Io {
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Listens on [`OUT_MEMORY_SOCKET`] and [`OUT_BLOCKS_SOCKET`] in `dir` (0600, in the 0700
/// runtime dir) and relays every connection QEMU makes to its channel of the tunnel.
pub fn listen(target: TunnelTarget, dir: &Path) -> Result<Relay, RelayError> {
    let sockets = MigrationSockets {
        memory: dir.join(OUT_MEMORY_SOCKET),
        blocks: dir.join(OUT_BLOCKS_SOCKET),
    };
    let mut tasks = Vec::new();
    for (path, channel) in [(&sockets.memory, "memory"), (&sockets.blocks, "blocks")] {
        let listener = bind(path)?;
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok((local, _)) = listener.accept().await {
                let target = target.clone();
                tokio::spawn(async move {
                    match target.dial(channel).await {
                        Ok(socket) => bridge(socket, local).await,
                        Err(e) => {
                            tracing::warn!(channel, error = %e, "migration tunnel not opened");
                        }
                    }
                });
            }
        }));
    }
    Ok(Relay { sockets, tasks })
}

/// Relays bytes between QEMU's unix connection and the WebSocket until either side closes.
async fn bridge(socket: Socket, local: UnixStream) {
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (mut local_rx, mut local_tx) = local.into_split();
    let to_ws = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match local_rx.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = buffer[..n].to_vec();
                    if ws_tx.send(Message::Binary(chunk.into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.close().await;
    };
    let to_local = async {
        while let Some(Ok(message)) = ws_rx.next().await {
            let bytes = match message {
                Message::Binary(b) => b.to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            if local_tx.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = local_tx.shutdown().await;
    };
    tokio::select! {
        () = to_ws => {}
        () = to_local => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_connect_urls() {
        assert_eq!(
            split_url("https://10.0.0.2:8443"),
            Some(("10.0.0.2:8443".into(), "10.0.0.2".into(), String::new()))
        );
        assert_eq!(
            split_url("https://host.example/prefix/"),
            Some((
                "host.example:443".into(),
                "host.example".into(),
                "/prefix".into()
            ))
        );
        assert_eq!(
            split_url("https://[::1]:9000"),
            Some(("[::1]:9000".into(), "::1".into(), String::new()))
        );
        assert_eq!(split_url("http://10.0.0.2:8443"), None);
        assert_eq!(split_url("https://"), None);
    }
}
