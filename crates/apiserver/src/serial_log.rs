//! The serial console output of a VirtualMachine (what `ferrovirt logs` prints, as `kubectl
//! logs` prints a container's output): `GET /apis/subresources.kubevirt.io/v1/namespaces/NS/
//! virtualmachines/NAME/serial-log[?follow=true][&tailLines=N]` streams
//! the current or last run of the VM from `<data-dir>/logs/<firmware-uuid>/serial.log` (every run
//! appended, each after the engine's run marker line) as `text/plain`; `allRuns=true` streams them
//! all (the part rotated to `serial.log.1` first). With `follow=true` the stream goes on while the VM's instance is active and ends
//! once it has finished and the rest of the file is sent; when the log rotates (it is truncated in
//! place) the follower goes on from its start. A missing VM or log is a 404 Status.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ferrovirt_storage::VmUuid;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use ferrovirt_resources::kubevirt::vmi_is_active;
use ferrovirt_resources::{VMIS, VMS};

use crate::app::AppState;
use crate::error::ApiError;
use crate::request::ApiRequest;

/// How much of the end of the log `tailLines` looks at.
const TAIL_WINDOW_BYTES: u64 = 8 * 1024 * 1024;
/// How often a followed log is checked for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

async fn locate(state: &AppState, namespace: &str, name: &str) -> Result<PathBuf, ApiError> {
    let vm = crate::handlers::get(state, VMS, Some(namespace.to_owned()), name.to_owned()).await?;
    let uuid = vm
        .pointer("/spec/template/spec/domain/firmware/uuid")
        .and_then(Value::as_str)
        .and_then(|u| VmUuid::parse(u).ok())
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "VirtualMachine {name} has no spec.template.spec.domain.firmware.uuid, so it has no serial log"
            ))
        })?;
    let path = ferrovirt_vmm::engine::serial_log_path(&state.data_dir, &uuid);
    if !path.is_file() {
        return Err(ApiError::not_found(format!(
            "VirtualMachine {name} has no serial log yet: it has not run ({} does not exist)",
            path.display()
        )));
    }
    Ok(path)
}

/// The offset where the last `lines` lines of `tail` (the file's end, starting at `base`) begin.
pub fn tail_offset(tail: &[u8], base: u64, lines: usize) -> u64 {
    if lines == 0 {
        return base + tail.len() as u64;
    }
    // A final newline ends the last line; it does not start another one.
    let body = tail.strip_suffix(b"\n").unwrap_or(tail);
    let mut seen = 0;
    for (i, byte) in body.iter().enumerate().rev() {
        if *byte == b'\n' {
            seen += 1;
            if seen == lines {
                return base + i as u64 + 1;
            }
        }
    }
    base
}

/// The offset where the last run begins: the line after the last run marker in `tail` (the
/// file's end, starting at `base`), or `base` when there is none.
pub fn last_run_offset(tail: &[u8], base: u64) -> u64 {
    let marker = ferrovirt_vmm::engine::RUN_MARKER.as_bytes();
    let Some(at) = tail.windows(marker.len()).rposition(|w| w == marker) else {
        return base;
    };
    match tail[at..].iter().position(|b| *b == b'\n') {
        Some(newline) => base + (at + newline + 1) as u64,
        None => base + tail.len() as u64,
    }
}

async fn start_offset(
    file: &mut tokio::fs::File,
    tail_lines: Option<usize>,
    all_runs: bool,
) -> std::io::Result<u64> {
    if all_runs && tail_lines.is_none() {
        return Ok(0);
    }
    let size = file.metadata().await?.len();
    let base = size.saturating_sub(TAIL_WINDOW_BYTES);
    file.seek(SeekFrom::Start(base)).await?;
    let mut tail = Vec::new();
    file.take(size - base).read_to_end(&mut tail).await?;
    let run_start = if all_runs {
        base
    } else {
        last_run_offset(&tail, base)
    };
    Ok(match tail_lines {
        Some(lines) => tail_offset(&tail, base, lines).max(run_start),
        None => run_start,
    })
}

async fn instance_active(state: &AppState, namespace: &str, name: &str) -> bool {
    crate::handlers::get(state, VMIS, Some(namespace.to_owned()), name.to_owned())
        .await
        .is_ok_and(|vmi| vmi_is_active(&vmi))
}

/// `GET .../virtualmachines/NAME/serial-log`.
pub async fn handler(
    state: &AppState,
    request: &ApiRequest,
    namespace: String,
    name: String,
) -> Response {
    let follow = request.flag("follow");
    let all_runs = request.flag("allRuns");
    let tail_lines = match request.params.get("tailLines").map(|t| t.parse::<usize>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return ApiError::bad_request("tailLines must be a non-negative integer")
                .into_response();
        }
    };
    let path = match locate(state, &namespace, &name).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            return ApiError::not_found(format!("cannot open {}: {e}", path.display()))
                .into_response();
        }
    };
    let mut position = match start_offset(&mut file, tail_lines, all_runs).await {
        Ok(p) => p,
        Err(e) => {
            return ApiError::internal(format!("cannot read {}: {e}", path.display()))
                .into_response();
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let state = state.clone();
    // All runs: the part rotated away (`serial.log.1`) comes first.
    let rotated =
        (all_runs && tail_lines.is_none()).then(|| ferrovirt_vmm::serial_log::rotated_path(&path));
    tokio::spawn(async move {
        if let Some(rotated) = rotated
            && let Ok(older) = tokio::fs::read(&rotated).await
            && !older.is_empty()
            && tx.send(Bytes::from(older)).await.is_err()
        {
            return;
        }
        let mut buffer = vec![0u8; 64 * 1024];
        let mut finishing = false;
        loop {
            // The log is truncated in place when it rotates: a file now shorter than what was
            // sent is read again from its start.
            if let Ok(meta) = file.metadata().await
                && meta.len() < position
            {
                position = 0;
            }
            if file.seek(SeekFrom::Start(position)).await.is_err() {
                return;
            }
            let n = match file.read(&mut buffer).await {
                Ok(n) => n,
                Err(_) => return,
            };
            if n > 0 {
                position += n as u64;
                if tx.send(Bytes::copy_from_slice(&buffer[..n])).await.is_err() {
                    return;
                }
                continue;
            }
            if !follow || finishing {
                return;
            }
            // At the end: once the instance has finished, send what is left and stop.
            if !instance_active(&state, &namespace, &name).await {
                finishing = true;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_POLL) => {}
                () = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .map(Ok::<Bytes, std::convert::Infallible>);
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_offsets() {
        let log = b"one\ntwo\nthree\n";
        assert_eq!(tail_offset(log, 0, 1), 8);
        assert_eq!(tail_offset(log, 0, 2), 4);
        assert_eq!(tail_offset(log, 0, 3), 0);
        assert_eq!(tail_offset(log, 0, 10), 0);
        assert_eq!(tail_offset(log, 0, 0), 14);
        assert_eq!(tail_offset(b"a\nno newline", 100, 1), 102);
    }

    #[test]
    fn last_run_starts_after_the_last_marker() {
        let marker = ferrovirt_vmm::engine::RUN_MARKER;
        let log = format!("\r\n{marker} (1)\r\nboot one\n\r\n{marker} (2)\r\nboot two\n");
        let offset = last_run_offset(log.as_bytes(), 10) as usize - 10;
        assert_eq!(&log[offset..], "boot two\n");
        assert_eq!(last_run_offset(b"no marker at all\n", 7), 7);
    }
}
