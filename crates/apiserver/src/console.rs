//! The serial console of a running VMI as a WebSocket (what `virtctl console` opens): binary
//! frames both ways, bridged to the VM's serial unix socket in its runtime dir.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use ferrovirt_storage::VmUuid;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use ferrovirt_resources::VMIS;

use crate::app::AppState;
use crate::error::ApiError;

/// The runtime dir of a running VMI (its console sockets are there).
pub(crate) async fn running_vmi_runtime(
    state: &AppState,
    namespace: &str,
    name: &str,
) -> Result<ferrovirt_vmm::runtime::RuntimeDir, ApiError> {
    let vmi =
        crate::handlers::get(state, VMIS, Some(namespace.to_owned()), name.to_owned()).await?;
    if vmi.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return Err(ApiError::bad_request(format!(
            "VirtualMachineInstance {name} is not running"
        )));
    }
    let uuid = vmi
        .pointer("/spec/domain/firmware/uuid")
        .and_then(Value::as_str)
        .and_then(|u| VmUuid::parse(u).ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "VirtualMachineInstance {name} has no firmware UUID"
            ))
        })?;
    ferrovirt_vmm::runtime::RuntimeDir::open(
        ferrovirt_vmm::engine::runtime_base(&state.data_dir).join(uuid.as_str()),
    )
    .map_err(|e| {
        ApiError::bad_request(format!(
            "VirtualMachineInstance {name} has no runtime dir: {e}"
        ))
    })
}

/// `GET .../virtualmachineinstances/NAME/console` with `Upgrade: websocket`.
pub async fn handler(
    state: &AppState,
    namespace: &str,
    name: &str,
    ws: Option<WebSocketUpgrade>,
) -> Response {
    let ws = match ws {
        Some(ws) => ws,
        None => {
            return ApiError::bad_request(
                "the console is a WebSocket: connect with Upgrade: websocket",
            )
            .into_response();
        }
    };
    let socket_path = match running_vmi_runtime(state, namespace, name).await {
        Ok(runtime) => runtime.serial_socket(),
        Err(e) => return e.into_response(),
    };
    let serial = ferrovirt_vmm::console::attach(&socket_path).await;
    relay_or_unavailable(ws, serial, "attach to the serial console", &socket_path)
}

/// Upgrades to a WebSocket relaying the connected unix socket (KubeVirt's `plain.kubevirt.io`
/// subprotocol), or answers 503 naming what could not be reached.
pub(crate) fn relay_or_unavailable<E: std::fmt::Display>(
    ws: WebSocketUpgrade,
    connected: Result<tokio::net::UnixStream, E>,
    what: &str,
    socket_path: &std::path::Path,
) -> Response {
    match connected {
        Ok(stream) => ws
            .protocols(["plain.kubevirt.io"])
            .on_upgrade(move |socket| bridge(socket, stream)),
        Err(e) => ApiError::new(
            503,
            "ServiceUnavailable",
            format!("cannot {what} {}: {e}", socket_path.display()),
        )
        .into_response(),
    }
}

/// Relays binary frames between a WebSocket and a byte stream (a unix socket, a forwarded TCP
/// connection) until either side closes.
pub(crate) async fn bridge<S>(socket: WebSocket, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (mut serial_rx, mut serial_tx) = tokio::io::split(stream);
    let to_ws = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match serial_rx.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = axum::body::Bytes::copy_from_slice(&buffer[..n]);
                    if ws_tx.send(Message::Binary(chunk)).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.close().await;
    };
    let to_serial = async {
        while let Some(Ok(message)) = ws_rx.next().await {
            let bytes = match message {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            if serial_tx.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = serial_tx.shutdown().await;
    };
    tokio::select! {
        () = to_ws => {}
        () = to_serial => {}
    }
}
