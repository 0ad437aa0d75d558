//! Our own small asynchronous client of the QEMU guest agent (qemu-ga), reached through the
//! `org.qemu.guest_agent.0` virtio-serial channel whose host end is a unix socket in the run's
//! runtime dir ([`crate::runtime::RuntimeDir::guest_agent_socket`], 0600).
//!
//! The protocol is QMP-like JSON lines without a greeting. The channel carries no session: a
//! reply of an earlier client may still be in it, and the agent may be absent altogether (the
//! guest has not started it, or has none). Every connection therefore starts with
//! `guest-sync-delimited`: a 0xFF byte resets the agent's parser, the agent answers with a 0xFF
//! byte and `{"return": ID}`; everything before that is discarded. Without an answer within the
//! timeout the agent counts as not connected.
//!
//! QEMU's socket takes one client at a time: [`connect`] serializes the users of one process
//! (the controllers' poller, the `guestosinfo` subresource, a graceful stop) on a lock per
//! socket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// How long one exchange (the handshake, or one command) may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything that can go wrong talking to the guest agent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the guest agent socket {path}: {reason} (is the VM running?)")]
    Connect { path: PathBuf, reason: String },
    #[error(
        "the guest agent did not answer {what} within {after:?} (is qemu-guest-agent running in the guest?)"
    )]
    Timeout { what: String, after: Duration },
    #[error("guest agent command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("the guest agent channel closed")]
    Disconnected,
    #[error("guest agent protocol error: {0}")]
    Protocol(String),
    #[error("guest agent I/O error: {0}")]
    Io(String),
}

/// `guest-get-osinfo` (QGA's `GuestOSInfo`; every field optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct OsInfo {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub pretty_name: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub version_id: Option<String>,
    #[serde(default)]
    pub kernel_release: Option<String>,
    #[serde(default)]
    pub kernel_version: Option<String>,
    #[serde(default)]
    pub machine: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub variant_id: Option<String>,
}

/// One address of a guest interface (`GuestIpAddress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAddress {
    /// `ipv4` or `ipv6`.
    #[serde(rename = "ip-address-type")]
    pub family: String,
    #[serde(rename = "ip-address")]
    pub address: String,
    pub prefix: u32,
}

/// One interface of `guest-network-get-interfaces` (`GuestNetworkInterface`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub name: String,
    #[serde(rename = "hardware-address", default)]
    pub hardware_address: Option<String>,
    #[serde(rename = "ip-addresses", default)]
    pub ip_addresses: Vec<IpAddress>,
}

/// One command of `guest-info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupportedCommand {
    pub name: String,
    pub enabled: bool,
}

/// `guest-info`: the agent's version and commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub version: String,
    #[serde(rename = "supported_commands", default)]
    pub supported_commands: Vec<SupportedCommand>,
}

/// `guest-get-host-name`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct HostName {
    #[serde(rename = "host-name")]
    host_name: String,
}

/// `guest-get-timezone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timezone {
    #[serde(default)]
    pub zone: Option<String>,
    pub offset: i64,
}

/// The shutdown modes of `guest-shutdown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    Powerdown,
    Reboot,
    Halt,
}

/// One lock per agent socket in this process (QEMU serves one client per socket at a time).
static CHANNELS: std::sync::Mutex<BTreeMap<PathBuf, Arc<Mutex<()>>>> =
    std::sync::Mutex::new(BTreeMap::new());

/// Waits for this process's turn on the agent socket `socket`.
async fn channel_turn(socket: &Path) -> OwnedMutexGuard<()> {
    let lock = {
        let mut channels = CHANNELS.lock().unwrap_or_else(|e| e.into_inner());
        // Forget the locks of sockets nobody waits for (runs that ended).
        channels.retain(|_, lock| Arc::strong_count(lock) > 1);
        channels.entry(socket.to_path_buf()).or_default().clone()
    };
    lock.lock_owned().await
}

static SYNC_IDS: AtomicU64 = AtomicU64::new(1);

/// A synchronized session with a guest agent; holds the process's agent lock until dropped.
pub struct AgentClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
    _turn: OwnedMutexGuard<()>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Connects to the agent socket and synchronizes (`guest-sync-delimited`); `timeout` bounds the
/// handshake and each later command.
pub async fn connect(socket: &Path, timeout: Duration) -> Result<AgentClient, AgentError> {
    let turn = channel_turn(socket).await;
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| AgentError::Connect {
            path: socket.to_path_buf(),
            reason: e.to_string(),
        })?;
    let (read, write) = stream.into_split();
    let mut client = AgentClient {
        reader: BufReader::new(read),
        writer: write,
        timeout,
        _turn: turn,
    };
    client.sync().await?;
    Ok(client)
}

impl AgentClient {
    async fn sync(&mut self) -> Result<(), AgentError> {
        let id = SYNC_IDS.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1000;
        let mut request = vec![0xFF];
        request.extend_from_slice(
            json!({"execute": "guest-sync-delimited", "arguments": {"id": id}})
                .to_string()
                .as_bytes(),
        );
        request.push(b'\n');
        let after = self.timeout;
        let exchange = async {
            self.writer
                .write_all(&request)
                .await
                .map_err(|e| AgentError::Io(e.to_string()))?;
            loop {
                // Everything up to the agent's 0xFF is left over from earlier sessions.
                loop {
                    let byte = self.reader.read_u8().await.map_err(eof)?;
                    if byte == 0xFF {
                        break;
                    }
                }
                let line = self.read_line().await?;
                let reply: Value = match serde_json::from_str(&line) {
                    Ok(reply) => reply,
                    Err(_) => continue,
                };
                if reply.get("return").and_then(Value::as_u64) == Some(id) {
                    return Ok(());
                }
            }
        };
        tokio::time::timeout(after, exchange)
            .await
            .map_err(|_| AgentError::Timeout {
                what: "guest-sync-delimited".into(),
                after,
            })?
    }

    async fn read_line(&mut self) -> Result<String, AgentError> {
        let mut line = Vec::new();
        let read = self
            .reader
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| AgentError::Io(e.to_string()))?;
        if read == 0 {
            return Err(AgentError::Disconnected);
        }
        // A 0xFF of a later sync never precedes a reply; drop stray ones defensively.
        line.retain(|b| *b != 0xFF);
        String::from_utf8(line)
            .map(|l| l.trim().to_owned())
            .map_err(|e| AgentError::Protocol(format!("reply is not UTF-8: {e}")))
    }

    /// Runs one command and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, AgentError> {
        let mut request = json!({"execute": command});
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        let after = self.timeout;
        let exchange = async {
            self.writer
                .write_all(line.as_bytes())
                .await
                .map_err(|e| AgentError::Io(e.to_string()))?;
            loop {
                let reply = self.read_line().await?;
                if reply.is_empty() {
                    continue;
                }
                let reply: Value = serde_json::from_str(&reply).map_err(|e| {
                    AgentError::Protocol(format!("reply is not JSON ({e}): {reply:.200}"))
                })?;
                if let Some(error) = reply.get("error") {
                    let text = |key: &str| {
                        error
                            .get(key)
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned()
                    };
                    return Err(AgentError::Command {
                        command: command.to_owned(),
                        class: text("class"),
                        desc: text("desc"),
                    });
                }
                return reply.get("return").cloned().ok_or_else(|| {
                    AgentError::Protocol(format!("reply without return: {reply:.200}"))
                });
            }
        };
        tokio::time::timeout(after, exchange)
            .await
            .map_err(|_| AgentError::Timeout {
                what: command.to_owned(),
                after,
            })?
    }

    async fn typed<T: DeserializeOwned>(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<T, AgentError> {
        let value = self.execute(command, arguments).await?;
        serde_json::from_value(value)
            .map_err(|e| AgentError::Protocol(format!("{command}: unexpected reply: {e}")))
    }

    /// `guest-ping`.
    pub async fn ping(&mut self) -> Result<(), AgentError> {
        self.execute("guest-ping", None).await.map(drop)
    }

    /// `guest-info`.
    pub async fn info(&mut self) -> Result<AgentInfo, AgentError> {
        self.typed("guest-info", None).await
    }

    /// `guest-get-osinfo`.
    pub async fn os_info(&mut self) -> Result<OsInfo, AgentError> {
        self.typed("guest-get-osinfo", None).await
    }

    /// `guest-get-host-name`.
    pub async fn host_name(&mut self) -> Result<String, AgentError> {
        self.typed::<HostName>("guest-get-host-name", None)
            .await
            .map(|h| h.host_name)
    }

    /// `guest-get-timezone`.
    pub async fn timezone(&mut self) -> Result<Timezone, AgentError> {
        self.typed("guest-get-timezone", None).await
    }

    /// `guest-network-get-interfaces`.
    pub async fn network_interfaces(&mut self) -> Result<Vec<NetworkInterface>, AgentError> {
        self.typed("guest-network-get-interfaces", None).await
    }

    /// `guest-fsfreeze-freeze`: the number of file systems frozen.
    pub async fn fsfreeze_freeze(&mut self) -> Result<u64, AgentError> {
        self.typed("guest-fsfreeze-freeze", None).await
    }

    /// `guest-fsfreeze-thaw`: the number of file systems thawed.
    pub async fn fsfreeze_thaw(&mut self) -> Result<u64, AgentError> {
        self.typed("guest-fsfreeze-thaw", None).await
    }

    /// `guest-fsfreeze-status`: `thawed` or `frozen`.
    pub async fn fsfreeze_status(&mut self) -> Result<String, AgentError> {
        self.typed("guest-fsfreeze-status", None).await
    }

    /// `guest-shutdown`. A successful shutdown sends no reply (the guest goes down), so this
    /// waits a moment only for an error reply (e.g. the command is disabled).
    pub async fn shutdown(mut self, mode: ShutdownMode) -> Result<(), AgentError> {
        let mode = match mode {
            ShutdownMode::Powerdown => "powerdown",
            ShutdownMode::Reboot => "reboot",
            ShutdownMode::Halt => "halt",
        };
        let line = format!(
            "{}\n",
            json!({"execute": "guest-shutdown", "arguments": {"mode": mode}})
        );
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| AgentError::Io(e.to_string()))?;
        match tokio::time::timeout(Duration::from_millis(500), self.read_line()).await {
            Ok(Ok(reply)) => match serde_json::from_str::<Value>(&reply) {
                Ok(reply) if reply.get("error").is_some() => Err(AgentError::Command {
                    command: "guest-shutdown".into(),
                    class: reply
                        .pointer("/error/class")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    desc: reply
                        .pointer("/error/desc")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                }),
                _ => Ok(()),
            },
            // No reply (the guest is going down) or the channel closed with it.
            Ok(Err(_)) | Err(_) => Ok(()),
        }
    }
}

fn eof(e: std::io::Error) -> AgentError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        AgentError::Disconnected
    } else {
        AgentError::Io(e.to_string())
    }
}

/// What the guest agent reports about a running guest (what the VMI's status shows).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestReport {
    pub os: OsInfo,
    pub interfaces: Vec<NetworkInterface>,
}

/// Asks the agent for the OS and the interfaces; `Err` when it does not answer (not connected).
pub async fn report(socket: &Path, timeout: Duration) -> Result<GuestReport, AgentError> {
    let mut client = connect(socket, timeout).await?;
    let os = client.os_info().await?;
    let interfaces = client.network_interfaces().await?;
    Ok(GuestReport { os, interfaces })
}

/// KubeVirt's `VirtualMachineInstanceGuestAgentInfo` (the `guestosinfo` subresource) from a
/// live agent: version, supported commands, host name, OS, time zone.
pub async fn guest_agent_info(socket: &Path, timeout: Duration) -> Result<Value, AgentError> {
    let mut client = connect(socket, timeout).await?;
    let info = client.info().await?;
    let host_name = client.host_name().await.ok();
    let os = client.os_info().await?;
    let timezone = client.timezone().await.ok();
    let fs_freeze = client.fsfreeze_status().await.ok();
    let mut value = json!({
        "guestAgentVersion": info.version,
        "supportedCommands": info.supported_commands.iter()
            .map(|c| json!({"name": c.name, "enabled": c.enabled}))
            .collect::<Vec<_>>(),
        "os": os_info_json(&os),
    });
    if let Some(host_name) = host_name {
        value["hostname"] = json!(host_name);
    }
    if let Some(tz) = timezone {
        value["timezone"] = json!(format!("{}, {}", tz.zone.unwrap_or_default(), tz.offset));
    }
    if let Some(status) = fs_freeze {
        value["fsFreezeStatus"] = json!(status);
    }
    Ok(value)
}

/// KubeVirt's `VirtualMachineInstanceGuestOSInfo` (the VMI's `status.guestOSInfo`).
pub fn os_info_json(os: &OsInfo) -> Value {
    let mut value = serde_json::Map::new();
    for (key, field) in [
        ("id", &os.id),
        ("name", &os.name),
        ("prettyName", &os.pretty_name),
        ("version", &os.version),
        ("versionId", &os.version_id),
        ("kernelRelease", &os.kernel_release),
        ("kernelVersion", &os.kernel_version),
        ("machine", &os.machine),
    ] {
        if let Some(text) = field {
            value.insert(key.to_owned(), json!(text));
        }
    }
    Value::Object(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixListener;

    /// A fake agent end over a real unix socket: answers sync after some stale bytes, then one
    /// command; checks the client's framing.
    #[tokio::test]
    async fn sync_skips_stale_replies_and_commands_decode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read);
            let mut first = Vec::new();
            lines.read_until(b'\n', &mut first).await.unwrap();
            assert_eq!(first[0], 0xFF, "a sync starts with 0xFF");
            let sync: Value = serde_json::from_slice(&first[1..]).unwrap();
            assert_eq!(sync["execute"], "guest-sync-delimited");
            let id = sync["arguments"]["id"].as_u64().unwrap();
            write
                .write_all(b"{\"return\": {}}\n\xff{\"return\": 7}\n")
                .await
                .unwrap();
            write
                .write_all(format!("\u{0}\u{ff}{{\"return\": {id}}}\n").as_bytes())
                .await
                .unwrap();
            // Rust strings cannot hold a raw 0xFF byte: send it alone.
            write.write_all(&[0xFF]).await.unwrap();
            write
                .write_all(format!("{{\"return\": {id}}}\n").as_bytes())
                .await
                .unwrap();
            let mut command = String::new();
            lines.read_line(&mut command).await.unwrap();
            assert!(command.contains("guest-get-osinfo"), "{command}");
            write
                .write_all(b"{\"return\": {\"id\": \"debian\", \"pretty-name\": \"Debian 12\", \"kernel-release\": \"6.1\"}}\n")
                .await
                .unwrap();
            command.clear();
            lines.read_line(&mut command).await.unwrap();
            write
                .write_all(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"disabled\"}}\n")
                .await
                .unwrap();
        });
        let mut client = connect(&path, Duration::from_secs(5)).await.unwrap();
        let os = client.os_info().await.unwrap();
        assert_eq!(os.id.as_deref(), Some("debian"));
        assert_eq!(
            os_info_json(&os),
            json!({"id": "debian", "prettyName": "Debian 12", "kernelRelease": "6.1"})
        );
        let error = client.ping().await.unwrap_err();
        assert!(
            matches!(&error, AgentError::Command { class, .. } if class == "GenericError"),
            "{error}"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_channel_is_not_connected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let _server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(stream);
        });
        let error = connect(&path, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(error, AgentError::Timeout { .. }), "{error}");
    }
}
