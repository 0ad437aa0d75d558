//! KubeVirt's `guestosinfo` subresource of a running VMI: what its guest agent reports, asked
//! live over the VM's agent channel (`ferrovirt_vmm::agent`), in KubeVirt's
//! `VirtualMachineInstanceGuestAgentInfo` shape (`guestAgentVersion`, `supportedCommands`,
//! `hostname`, `os`, `timezone`, `fsFreezeStatus`). Authorized as
//! `virtualmachineinstances/guestosinfo` (in `kubevirt.io:view`).

use axum::Json;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::console::running_vmi_runtime;
use crate::error::ApiError;

/// `GET .../virtualmachineinstances/NAME/guestosinfo`.
pub async fn guestosinfo(state: &AppState, namespace: &str, name: &str) -> Response {
    let runtime = match running_vmi_runtime(state, namespace, name).await {
        Ok(runtime) => runtime,
        Err(e) => return e.into_response(),
    };
    match ferrovirt_vmm::agent::guest_agent_info(
        &runtime.guest_agent_socket(),
        ferrovirt_vmm::agent::DEFAULT_TIMEOUT,
    )
    .await
    {
        Ok(mut info) => {
            info["apiVersion"] = "kubevirt.io/v1".into();
            info["kind"] = "VirtualMachineInstanceGuestAgentInfo".into();
            Json(info).into_response()
        }
        // KubeVirt's virt-api answers 409 when the VMI's agent is not connected.
        Err(e) => ApiError::new(
            409,
            "Conflict",
            format!("VMI does not have guest agent connected: {e}"),
        )
        .into_response(),
    }
}
