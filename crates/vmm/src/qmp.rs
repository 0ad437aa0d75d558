//! Our own small asynchronous QMP (QEMU Machine Protocol) client.
//!
//! One connection = one background reader task that routes replies to the waiting `execute` call by
//! `id` and publishes asynchronous events on a broadcast channel. A malformed line or a closed stream
//! fails every pending and future command with a typed error; nothing panics.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// Default bound for one command round trip and for the greeting.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that can go wrong talking QMP.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to the QMP socket {path}: {reason} (is QEMU running with -qmp on it?)")]
    Connect { path: String, reason: String },
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP connection closed: {0}")]
    Disconnected(String),
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    #[error("QMP {what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("QMP I/O error: {0}")]
    Io(String),
}

/// QEMU's run state as reported by `query-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Prelaunch,
    Shutdown,
    InternalError,
    GuestPanicked,
    IoError,
    Suspended,
    Watchdog,
    /// Any other state QEMU may report (migration, debug, colo, ...).
    Other(String),
}

impl RunState {
    /// Parses QEMU's `status` string.
    pub fn from_qmp(status: &str) -> Self {
        match status {
            "running" => Self::Running,
            "paused" => Self::Paused,
            "prelaunch" => Self::Prelaunch,
            "shutdown" => Self::Shutdown,
            "internal-error" => Self::InternalError,
            "guest-panicked" => Self::GuestPanicked,
            "io-error" => Self::IoError,
            "suspended" => Self::Suspended,
            "watchdog" => Self::Watchdog,
            other => Self::Other(other.to_string()),
        }
    }
}

/// QMP event timestamp (wall clock of the QEMU host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
pub struct QmpTimestamp {
    pub seconds: i64,
    pub microseconds: i64,
}

/// One asynchronous QMP event (SHUTDOWN, POWERDOWN, RESET, STOP, RESUME, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
    pub timestamp: QmpTimestamp,
}

/// The well-known events, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QmpEventKind {
    /// QEMU is shutting down; `guest` says whether the guest asked for it.
    Shutdown {
        guest: bool,
        reason: String,
    },
    Powerdown,
    Reset {
        guest: bool,
        reason: String,
    },
    Stop,
    Resume,
    Other,
}

impl QmpEvent {
    /// Decodes the event name and the fields we use.
    pub fn kind(&self) -> QmpEventKind {
        let guest = self
            .data
            .get("guest")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let reason = self
            .data
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match self.name.as_str() {
            "SHUTDOWN" => QmpEventKind::Shutdown { guest, reason },
            "POWERDOWN" => QmpEventKind::Powerdown,
            "RESET" => QmpEventKind::Reset { guest, reason },
            "STOP" => QmpEventKind::Stop,
            "RESUME" => QmpEventKind::Resume,
            _ => QmpEventKind::Other,
        }
    }
}

type Reply = Result<Value, QmpError>;

#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, (String, oneshot::Sender<Reply>)>,
    /// Set once the connection is dead; every later command fails with it.
    closed: Option<QmpError>,
}

/// A connected QMP session (capabilities already negotiated).
pub struct QmpClient {
    writer: tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
    events: broadcast::Sender<QmpEvent>,
    reader: JoinHandle<()>,
    /// `true` once the reader has seen the end of the connection (every event read before).
    closed: tokio::sync::watch::Receiver<bool>,
    timeout: Duration,
    greeting: Value,
}

impl Drop for QmpClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for QmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl QmpClient {
    /// Connects to a QMP unix socket, reads the greeting and negotiates capabilities.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let stream =
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| QmpError::Connect {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
        let (read, write) = stream.into_split();
        Self::handshake(read, write, timeout).await
    }

    /// Runs the QMP handshake over any byte stream (a socket, or QEMU's stdio for `-qmp stdio`).
    pub async fn handshake<R, W>(read: R, write: W, timeout: Duration) -> Result<Self, QmpError>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let mut lines = BufReader::new(read).lines();
        let greeting_line = tokio::time::timeout(timeout, lines.next_line())
            .await
            .map_err(|_| QmpError::Timeout {
                what: "greeting".into(),
                after: timeout,
            })?
            .map_err(|e| QmpError::Io(e.to_string()))?
            .ok_or_else(|| QmpError::Disconnected("closed before the greeting".into()))?;
        let greeting: Value = serde_json::from_str(&greeting_line).map_err(|e| {
            QmpError::Protocol(format!("greeting is not JSON ({e}): {greeting_line:.200}"))
        })?;
        let Some(greeting) = greeting.get("QMP").cloned() else {
            return Err(QmpError::Protocol(format!(
                "first line is not a QMP greeting: {greeting_line:.200}"
            )));
        };
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (events, _) = broadcast::channel(256);
        let (pending_for_reader, events_for_reader) = (pending.clone(), events.clone());
        let (closed_tx, closed) = tokio::sync::watch::channel(false);
        let reader = tokio::spawn(async move {
            read_loop(lines, pending_for_reader, events_for_reader).await;
            let _ = closed_tx.send(true);
        });
        let client = Self {
            writer: tokio::sync::Mutex::new(Box::new(write)),
            pending,
            next_id: AtomicU64::new(1),
            events,
            reader,
            closed,
            timeout,
            greeting,
        };
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    /// The `QMP` object of the greeting (QEMU version, capabilities).
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    /// A new receiver of all events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.subscribe()
    }

    /// Resolves once the reader has read the connection to its end (so every event QEMU sent
    /// was published), or after `limit`; `true` when it did.
    pub async fn wait_closed(&self, limit: Duration) -> bool {
        let mut closed = self.closed.clone();
        matches!(
            tokio::time::timeout(limit, closed.wait_for(|c| *c)).await,
            Ok(Ok(_))
        )
    }

    /// True once the connection is known to be dead.
    pub fn is_closed(&self) -> bool {
        self.pending
            .lock()
            .map(|p| p.closed.is_some())
            .unwrap_or(true)
    }

    /// Executes one command and returns its `return` value.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self
                .pending
                .lock()
                .map_err(|_| QmpError::Protocol("internal lock poisoned".into()))?;
            if let Some(err) = &pending.closed {
                return Err(err.clone());
            }
            pending.waiters.insert(id, (command.to_string(), tx));
        }
        let mut message = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        let mut line = message.to_string();
        line.push('\n');
        let result = tokio::time::timeout(self.timeout, async {
            {
                let mut writer = self.writer.lock().await;
                writer
                    .write_all(line.as_bytes())
                    .await
                    .map_err(|e| QmpError::Io(e.to_string()))?;
                writer
                    .flush()
                    .await
                    .map_err(|e| QmpError::Io(e.to_string()))?;
            }
            rx.await
                .map_err(|_| QmpError::Disconnected("reader stopped".into()))?
        })
        .await;
        match result {
            Ok(reply) => reply,
            Err(_) => {
                if let Ok(mut pending) = self.pending.lock() {
                    pending.waiters.remove(&id);
                }
                Err(QmpError::Timeout {
                    what: format!("command {command}"),
                    after: self.timeout,
                })
            }
        }
    }

    /// `query-status`.
    pub async fn query_status(&self) -> Result<RunState, QmpError> {
        let value = self.execute("query-status", None).await?;
        let status = value
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| QmpError::Protocol(format!("query-status without status: {value}")))?;
        Ok(RunState::from_qmp(status))
    }

    /// `cont`: resume a paused (or `-S` prelaunch) guest.
    pub async fn cont(&self) -> Result<(), QmpError> {
        self.execute("cont", None).await.map(drop)
    }

    /// `stop`: pause the guest.
    pub async fn stop(&self) -> Result<(), QmpError> {
        self.execute("stop", None).await.map(drop)
    }

    /// `system_powerdown`: ACPI power button.
    pub async fn system_powerdown(&self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).await.map(drop)
    }

    /// `system_reset`: hard reset.
    pub async fn system_reset(&self) -> Result<(), QmpError> {
        self.execute("system_reset", None).await.map(drop)
    }

    /// `quit`: QEMU exits at once. A connection closed before the reply counts as success.
    pub async fn quit(&self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QmpError::Disconnected(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    class: String,
    desc: String,
}

/// One line QEMU sent on the QMP socket.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpMessage {
    /// An asynchronous event.
    Event(QmpEvent),
    /// The reply to the command with our numeric `id`.
    Reply { id: u64, body: ReplyBody },
    /// Neither an event nor a reply we can route (no numeric id).
    Unroutable(Value),
}

/// What a reply says.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyBody {
    Return(Value),
    Error {
        class: String,
        desc: String,
    },
    /// A reply that is neither (the message says why).
    Malformed(String),
}

/// Parses one non-empty line from QEMU (the reader's only parser; `fuzz/` feeds it hostile
/// input). Malformed JSON is a protocol error that ends the connection.
pub fn parse_message(line: &str) -> Result<QmpMessage, QmpError> {
    let message: Value = serde_json::from_str(line)
        .map_err(|e| QmpError::Protocol(format!("malformed JSON from QEMU ({e}): {line:.200}")))?;
    if let Some(name) = message.get("event").and_then(Value::as_str) {
        let timestamp = message
            .get("timestamp")
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .unwrap_or_default();
        return Ok(QmpMessage::Event(QmpEvent {
            name: name.to_string(),
            data: message.get("data").cloned().unwrap_or(Value::Null),
            timestamp,
        }));
    }
    let Some(id) = message.get("id").and_then(Value::as_u64) else {
        return Ok(QmpMessage::Unroutable(message));
    };
    let body = if let Some(ret) = message.get("return") {
        ReplyBody::Return(ret.clone())
    } else if let Some(err) = message.get("error") {
        match serde_json::from_value::<ErrorBody>(err.clone()) {
            Ok(body) => ReplyBody::Error {
                class: body.class,
                desc: body.desc,
            },
            Err(_) => ReplyBody::Malformed(format!("malformed error reply: {err}")),
        }
    } else {
        ReplyBody::Malformed(format!("reply with neither return nor error: {message}"))
    };
    Ok(QmpMessage::Reply { id, body })
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut lines: tokio::io::Lines<BufReader<R>>,
    pending: Arc<Mutex<Pending>>,
    events: broadcast::Sender<QmpEvent>,
) {
    let failure = loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break QmpError::Disconnected("QEMU closed the connection".into()),
            Err(e) => break QmpError::Io(e.to_string()),
        };
        if line.trim().is_empty() {
            continue;
        }
        let (id, body) = match parse_message(&line) {
            Err(e) => break e,
            Ok(QmpMessage::Event(event)) => {
                tracing::debug!(event = %event.name, data = %event.data, "QMP event");
                // No receiver is fine.
                let _ = events.send(event);
                continue;
            }
            Ok(QmpMessage::Unroutable(message)) => {
                // Replies without our numeric id (QEMU echoes what we send) cannot be routed.
                tracing::warn!(%message, "QMP message without id or event ignored");
                continue;
            }
            Ok(QmpMessage::Reply { id, body }) => (id, body),
        };
        let Ok(mut guard) = pending.lock() else {
            return;
        };
        let Some((command, waiter)) = guard.waiters.remove(&id) else {
            continue; // its caller timed out
        };
        drop(guard);
        let reply = match body {
            ReplyBody::Return(value) => Ok(value),
            ReplyBody::Error { class, desc } => Err(QmpError::Command {
                command,
                class,
                desc,
            }),
            ReplyBody::Malformed(problem) => Err(QmpError::Protocol(problem)),
        };
        let _ = waiter.send(reply);
    };
    if let Ok(mut guard) = pending.lock() {
        for (_, (_, waiter)) in guard.waiters.drain() {
            let _ = waiter.send(Err(failure.clone()));
        }
        guard.closed = Some(failure);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;

    /// A fake QEMU: sends the greeting, answers capabilities, then runs `script` on each command.
    async fn fake_peer(
        script: impl Fn(Value) -> Vec<String> + Send + 'static,
    ) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(format!("{GREETING}\n").as_bytes())
                .await
                .unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                let request: Value = serde_json::from_str(&line).unwrap();
                let out = if request["execute"] == "qmp_capabilities" {
                    vec![json!({"return": {}, "id": request["id"]}).to_string()]
                } else {
                    script(request)
                };
                for l in out {
                    if w.write_all(format!("{l}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        });
        (dir, path)
    }

    #[tokio::test]
    async fn events_interleaved_with_replies_are_routed() {
        let (_dir, path) = fake_peer(|req| {
            vec![
                r#"{"event": "STOP", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}"#
                    .into(),
                json!({"return": {"status": "paused", "running": false}, "id": req["id"]})
                    .to_string(),
                r#"{"event": "RESUME", "timestamp": {"seconds": 3, "microseconds": 4}}"#.into(),
            ]
        })
        .await;
        let client = QmpClient::connect(&path, DEFAULT_TIMEOUT).await.unwrap();
        let mut events = client.subscribe();
        assert_eq!(client.query_status().await.unwrap(), RunState::Paused);
        let stop = events.recv().await.unwrap();
        assert_eq!(stop.kind(), QmpEventKind::Stop);
        assert_eq!(
            stop.timestamp,
            QmpTimestamp {
                seconds: 1,
                microseconds: 2
            }
        );
        assert_eq!(events.recv().await.unwrap().kind(), QmpEventKind::Resume);
    }

    #[tokio::test]
    async fn replies_out_of_order_match_by_id() {
        // Answers each command only when the second arrives, in reverse order.
        let held = Arc::new(Mutex::new(Vec::<Value>::new()));
        let (_dir, path) = fake_peer(move |req| {
            let mut held = held.lock().unwrap();
            held.push(req);
            if held.len() < 2 {
                return vec![];
            }
            held.drain(..)
                .rev()
                .map(|r| json!({"return": {"echo": r["execute"]}, "id": r["id"]}).to_string())
                .collect()
        })
        .await;
        let client = QmpClient::connect(&path, DEFAULT_TIMEOUT).await.unwrap();
        let (a, b) = tokio::join!(
            client.execute("first", None),
            client.execute("second", None)
        );
        assert_eq!(a.unwrap()["echo"], "first");
        assert_eq!(b.unwrap()["echo"], "second");
    }

    #[tokio::test]
    async fn error_reply_is_typed() {
        let (_dir, path) = fake_peer(|req| {
            vec![
                json!({"error": {"class": "CommandNotFound", "desc": "nope"}, "id": req["id"]})
                    .to_string(),
            ]
        })
        .await;
        let client = QmpClient::connect(&path, DEFAULT_TIMEOUT).await.unwrap();
        match client.execute("bogus", None).await {
            Err(QmpError::Command {
                command,
                class,
                desc,
            }) => {
                assert_eq!(
                    (command.as_str(), class.as_str(), desc.as_str()),
                    ("bogus", "CommandNotFound", "nope")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn malformed_json_fails_pending_and_later_commands() {
        let (_dir, path) = fake_peer(|_| vec!["{this is not json".into()]).await;
        let client = QmpClient::connect(&path, DEFAULT_TIMEOUT).await.unwrap();
        assert!(matches!(
            client.execute("x", None).await,
            Err(QmpError::Protocol(_))
        ));
        assert!(client.is_closed());
        assert!(matches!(
            client.execute("y", None).await,
            Err(QmpError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn the_end_of_the_connection_is_awaited_not_polled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(format!("{GREETING}\n").as_bytes())
                .await
                .unwrap();
            let request: Value =
                serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
            let reply = json!({"return": {}, "id": request["id"]});
            w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
            // What QEMU sends as it quits, then the end of the connection.
            let _ = close_rx.await;
            let shutdown = r#"{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}, "timestamp": {"seconds": 5, "microseconds": 6}}"#;
            w.write_all(format!("{shutdown}\n").as_bytes())
                .await
                .unwrap();
        });
        let client = QmpClient::connect(&path, DEFAULT_TIMEOUT).await.unwrap();
        let mut events = client.subscribe();
        assert!(!client.wait_closed(Duration::from_millis(50)).await);
        close_tx.send(()).unwrap();
        let started = std::time::Instant::now();
        assert!(client.wait_closed(Duration::from_secs(10)).await);
        assert!(started.elapsed() < Duration::from_secs(5));
        // Every event sent before the end was published first.
        assert!(matches!(
            events.try_recv().map(|e| e.kind()),
            Ok(QmpEventKind::Shutdown { guest: false, .. })
        ));
        assert!(client.is_closed());
    }

    #[tokio::test]
    async fn peer_closing_is_a_disconnect() {
        let (_dir, path) = fake_peer(|_| panic!("peer dies")).await;
        let client = QmpClient::connect(&path, DEFAULT_TIMEOUT).await.unwrap();
        assert!(matches!(
            client.execute("x", None).await,
            Err(QmpError::Disconnected(_))
        ));
        // quit treats a closed connection as success
        assert!(client.quit().await.is_ok());
    }

    #[tokio::test]
    async fn silent_peer_times_out() {
        let (_dir, path) = fake_peer(|_| vec![]).await;
        let client = QmpClient::connect(&path, Duration::from_millis(200))
            .await
            .unwrap();
        assert!(matches!(
            client.execute("x", None).await,
            Err(QmpError::Timeout { .. })
        ));
    }

    #[tokio::test]
    async fn non_qmp_greeting_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"hello\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        assert!(matches!(
            QmpClient::connect(&path, DEFAULT_TIMEOUT).await,
            Err(QmpError::Protocol(_))
        ));
    }
}
