//! The destination's end of a live migration between two ferrovirt hosts: a WebSocket on
//! `GET /apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachineinstances/NAME/
//! migrationtunnel/MIGRATION-ID/CHANNEL` (`CHANNEL`: `memory` or `blocks`), relayed to the
//! receiving QEMU's unix socket of that channel in the VMI's runtime dir
//! (`vmm::migration`: `migration.sock`, `nbd.sock`); and `volume-files`, which the server takes
//! itself: the source's `meta/` and `swtpm-localca/` as one gzipped tar in binary messages ended
//! by a text message `end`, unpacked (checked entry by entry, at most
//! `storage::volume_files::MAX_PACKED_BYTES`) into the receiver's runtime dir, where the engine
//! moves them into the volume once the migration has arrived. The answer is a text message:
//! `staged N` or `error: WHAT`.
//!
//! It is an ordinary request through the one router entry and the chain: TLS, authentication
//! (the source server presents the destination's kubeconfig credentials), RBAC on
//! `virtualmachineinstances/migrationtunnel` (`kubevirt.io:admin` and `:edit`, as KubeVirt's
//! `virtualmachines/migrate`), audit. No host port is opened for a migration. Only a VMI that
//! waits as a receiver (`kubevirt.io/create-migration-target: "true"`) and a
//! VirtualMachineInstanceMigration in its namespace with `spec.receive.migrationID` equal to
//! `MIGRATION-ID` and `spec.vmiName` equal to `NAME` open a tunnel.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use ferrovirt_resources::{VMIMS, VMIS};
use ferrovirt_storage::VmUuid;
use ferrovirt_store::ListOptions;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;

use crate::app::AppState;
use crate::error::ApiError;
use crate::route::TunnelChannel;

/// KubeVirt's annotation on a VMI that waits for an incoming migration.
pub const CREATE_MIGRATION_TARGET: &str = "kubevirt.io/create-migration-target";

async fn receiving_runtime(
    state: &AppState,
    namespace: &str,
    name: &str,
    migration_id: &str,
) -> Result<std::path::PathBuf, ApiError> {
    let vmi =
        crate::handlers::get(state, VMIS, Some(namespace.to_owned()), name.to_owned()).await?;
    let receiver = vmi
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(CREATE_MIGRATION_TARGET))
        .and_then(Value::as_str)
        == Some("true");
    if !receiver {
        return Err(ApiError::bad_request(format!(
            "VirtualMachineInstance {name} is not waiting for a migration (no {CREATE_MIGRATION_TARGET}: \"true\"); \
             create its VirtualMachine with runStrategy: WaitAsReceiver"
        )));
    }
    let ns = namespace.to_owned();
    let migrations = crate::handlers::blocking(&state.store, move |s| {
        s.list(
            &VMIMS.store_kind(),
            &ListOptions {
                namespace: Some(ns),
                ..ListOptions::default()
            },
        )
    })
    .await?;
    let receiving: Vec<&Value> = migrations
        .items
        .iter()
        .filter(|m| {
            m.pointer("/spec/receive/migrationID")
                .and_then(Value::as_str)
                == Some(migration_id)
                && m.pointer("/spec/vmiName").and_then(Value::as_str) == Some(name)
        })
        .collect();
    let finished = |m: &&Value| {
        matches!(
            m.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
    };
    if !receiving.is_empty() && receiving.iter().all(finished) {
        // The source stops waiting for this receiver (a restart of this server may have ended
        // it): 410, not the 404 it waits through while the object is not yet created.
        return Err(ApiError::new(
            410,
            "Gone",
            format!(
                "this host's VirtualMachineInstanceMigration receiving migration {migration_id} for VirtualMachineInstance {name} \
                 has ended (see its status and Events); create new migration objects on both hosts to try again"
            ),
        ));
    }
    if !receiving.iter().any(|m| !finished(m)) {
        return Err(ApiError::not_found(format!(
            "no unfinished VirtualMachineInstanceMigration in namespace {namespace} receives migration {migration_id} \
             for VirtualMachineInstance {name} (spec.receive.migrationID, spec.vmiName)"
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
    Ok(ferrovirt_vmm::engine::runtime_base(&state.data_dir).join(uuid.as_str()))
}

/// `GET .../virtualmachineinstances/NAME/migrationtunnel/ID/CHANNEL` with `Upgrade: websocket`.
pub async fn handler(
    state: &AppState,
    namespace: &str,
    name: &str,
    migration_id: &str,
    channel: TunnelChannel,
    ws: Option<WebSocketUpgrade>,
) -> Response {
    let Some(ws) = ws else {
        return ApiError::bad_request(
            "the migration tunnel is a WebSocket: connect with Upgrade: websocket",
        )
        .into_response();
    };
    let runtime = match receiving_runtime(state, namespace, name, migration_id).await {
        Ok(runtime) => runtime,
        Err(e) => return e.into_response(),
    };
    let Some(socket_name) = channel.socket_name() else {
        return ws
            .protocols(["plain.kubevirt.io"])
            .on_upgrade(move |socket| take_volume_files(socket, runtime));
    };
    let socket_path = runtime.join(socket_name);
    let connected = tokio::net::UnixStream::connect(&socket_path).await;
    crate::console::relay_or_unavailable(
        ws,
        connected,
        "reach the receiving QEMU's migration socket",
        &socket_path,
    )
}

/// The `volume-files` channel: reads the packed files up to the text message `end`, stages them
/// in `runtime` and answers `staged N` (or `error: WHAT`, and nothing is staged).
async fn take_volume_files(mut socket: WebSocket, runtime: std::path::PathBuf) {
    let answer = match read_packed(&mut socket).await {
        Ok(packed) => {
            let staged = tokio::task::spawn_blocking(move || {
                ferrovirt_storage::volume_files::stage(&packed, &runtime)
            })
            .await;
            match staged {
                Ok(Ok(files)) => format!("staged {}", files.len()),
                Ok(Err(e)) => format!("error: {e}"),
                Err(e) => format!("error: staging the volume files failed: {e}"),
            }
        }
        Err(reason) => format!("error: {reason}"),
    };
    if answer.starts_with("error") {
        tracing::warn!(%answer, "a migration's volume files were refused");
    }
    let _ = socket.send(Message::Text(answer.into())).await;
    let _ = socket.close().await;
}

async fn read_packed(socket: &mut WebSocket) -> Result<Vec<u8>, String> {
    let limit = ferrovirt_storage::volume_files::MAX_PACKED_BYTES;
    let mut packed = Vec::new();
    while let Some(message) = socket.next().await {
        match message.map_err(|e| format!("the volume files' stream broke: {e}"))? {
            Message::Binary(bytes) => {
                if packed.len() + bytes.len() > limit {
                    return Err(format!(
                        "the volume files are more than {limit} bytes (a state volume's meta/ and swtpm-localca/ hold KiBs)"
                    ));
                }
                packed.extend_from_slice(&bytes);
            }
            Message::Text(text) if text.as_str() == "end" => return Ok(packed),
            Message::Close(_) => break,
            _ => {}
        }
    }
    Err("the volume files' stream ended before its text message \"end\"".into())
}
