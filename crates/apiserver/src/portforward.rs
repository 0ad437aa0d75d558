//! KubeVirt's `portforward` subresource: a WebSocket (`plain.kubevirt.io`, binary frames, as
//! `virtctl port-forward` speaks it) relayed to one TCP port of the guest.
//!
//! `GET /apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachineinstances/NAME/portforward/PORT[/tcp]`
//! and the same under `virtualmachines/NAME` (the VM's instance). Authorized as
//! `virtualmachineinstances/portforward` (or `virtualmachines/portforward`), which KubeVirt's
//! `kubevirt.io:edit` and `admin` roles have, audited like the consoles.
//!
//! The guest's ports are never sockets in the host's network namespace: the VM's first pod card
//! has a network namespace of its own (`ferrovirt_vmm::netns`) where its passt listens for them;
//! each forwarded connection is opened to `127.0.0.1:PORT` there, from a thread that entered the
//! namespace, and relayed.

use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Response};
use ferrovirt_vmm::netns::NetNs;

use crate::app::AppState;
use crate::console::{bridge, running_vmi_runtime};
use crate::error::ApiError;

/// What a `portforward` request addresses, as written in its path.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub port: &'a str,
    pub protocol: Option<&'a str>,
    /// Addressed as `virtualmachines/NAME`.
    pub of_vm: bool,
}

/// The port of a `portforward` path: 1-65535, TCP.
pub fn parse_port(port: &str, protocol: Option<&str>) -> Result<u16, ApiError> {
    match protocol {
        None | Some("tcp") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "protocol {other:?} is not supported: ferrovirt forwards TCP only (use .../portforward/{port}/tcp or .../portforward/{port})"
            )));
        }
    }
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "port {port:?} is not a port number: give one between 1 and 65535 (.../portforward/22/tcp)"
            ))
        })
}

/// `GET .../portforward/PORT[/tcp]` with `Upgrade: websocket`.
pub async fn handler(
    state: &AppState,
    target: Target<'_>,
    ws: Option<WebSocketUpgrade>,
) -> Response {
    let port = match parse_port(target.port, target.protocol) {
        Ok(port) => port,
        Err(e) => return e.into_response(),
    };
    let Some(ws) = ws else {
        return ApiError::bad_request(
            "portforward is a WebSocket: connect with Upgrade: websocket (virtctl port-forward, ferrovirt port-forward)",
        )
        .into_response();
    };
    match connect(state, target, port).await {
        Ok(stream) => ws
            .protocols(["plain.kubevirt.io"])
            .on_upgrade(move |socket| bridge(socket, stream)),
        Err(e) => e.into_response(),
    }
}

/// Opens the guest's port through the first card's network namespace.
async fn connect(
    state: &AppState,
    target: Target<'_>,
    port: u16,
) -> Result<tokio::net::TcpStream, ApiError> {
    let kind = if target.of_vm {
        "VirtualMachine"
    } else {
        "VirtualMachineInstance"
    };
    let name = target.name;
    let runtime = running_vmi_runtime(state, target.namespace, name).await?;
    let record = runtime.read_record().map_err(|e| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("{kind} {name} has no run record yet: {e}"),
        )
    })?;
    let netns = record.netns.first().map(NetNs::named).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{kind} {name} has no pod network interface whose ports could be forwarded (spec.template.spec.domain.devices.interfaces; \
             a VM started before this server version must be restarted once)"
        ))
    })?;
    let stream = netns.connect_loopback(port).await.map_err(|e| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!(
                "cannot connect to port {port} of {kind} {name}: {e} (only the ports listed in the interface's `ports`, \
                 or 1-1023 when it lists none, are forwarded)"
            ),
        )
    })?;
    stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(stream))
        .map_err(|e| ApiError::internal(format!("forwarded connection to port {port}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_tcp_numbers() {
        assert_eq!(parse_port("22", None).unwrap(), 22);
        assert_eq!(parse_port("65535", Some("tcp")).unwrap(), 65535);
        for (port, protocol) in [
            ("0", None),
            ("65536", None),
            ("ssh", None),
            ("22", Some("udp")),
        ] {
            let error = parse_port(port, protocol).unwrap_err();
            assert_eq!(error.code, 400, "{port} {protocol:?}");
        }
    }
}
