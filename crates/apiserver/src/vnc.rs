//! The graphical console of a running VMI (KubeVirt's `vnc` and `vnc/screenshot` subresources):
//! the WebSocket `virtctl vnc` and the web UI's noVNC open, binary frames relayed to QEMU's VNC
//! server on the VM's `vnc.sock` (RFB, no password: the stages in front decide who gets here),
//! and a PNG of the current screen, as `virtctl vnc screenshot` saves it.
//!
//! Both are authorized as the subresource `virtualmachineinstances/vnc` (kube-apiserver's and
//! KubeVirt's virt-api's request attributes take the first segment after the name).

use axum::extract::ws::WebSocketUpgrade;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ferrovirt_vmm::display::ScreenshotError;

use crate::app::AppState;
use crate::console::{relay_or_unavailable, running_vmi_runtime};
use crate::error::ApiError;

/// `GET .../virtualmachineinstances/NAME/vnc` with `Upgrade: websocket`.
pub async fn handler(
    state: &AppState,
    namespace: &str,
    name: &str,
    ws: Option<WebSocketUpgrade>,
) -> Response {
    let Some(ws) = ws else {
        return ApiError::bad_request(
            "the VNC console is a WebSocket: connect with Upgrade: websocket (virtctl vnc, ferrovirt vnc)",
        )
        .into_response();
    };
    let runtime = match running_vmi_runtime(state, namespace, name).await {
        Ok(runtime) => runtime,
        Err(e) => return e.into_response(),
    };
    let socket_path = runtime.vnc_socket();
    if !socket_path.exists() {
        return no_display(name).into_response();
    }
    let vnc = tokio::net::UnixStream::connect(&socket_path).await;
    relay_or_unavailable(ws, vnc, "connect to the VNC server", &socket_path)
}

fn no_display(name: &str) -> ApiError {
    ApiError::bad_request(format!(
        "VirtualMachineInstance {name} has no display (spec.domain.devices.autoattachGraphicsDevice is false): \
         remove that setting and restart the VM to get a VNC console"
    ))
}

/// `GET .../virtualmachineinstances/NAME/vnc/screenshot`: `image/png`.
pub async fn screenshot(state: &AppState, namespace: &str, name: &str) -> Response {
    let runtime = match running_vmi_runtime(state, namespace, name).await {
        Ok(runtime) => runtime,
        Err(e) => return e.into_response(),
    };
    match ferrovirt_vmm::display::screenshot(&runtime).await {
        Ok(png) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            png,
        )
            .into_response(),
        Err(ScreenshotError::NoDisplay) => no_display(name).into_response(),
        Err(e @ ScreenshotError::Qmp { .. }) => {
            ApiError::new(503, "ServiceUnavailable", e.to_string()).into_response()
        }
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}
