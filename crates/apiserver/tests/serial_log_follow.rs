//! The serial-log subresource over a real log file (in-process router, no VM): `allRuns` starts
//! with the part rotated to `serial.log.1`; a follower whose log is truncated in place (the
//! rotation) goes on from the file's start and ends once the instance has finished.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use ferrovirt_apiserver::{AppState, router};
use ferrovirt_resources::{VMIS, VMS};
use ferrovirt_storage::VmUuid;
use ferrovirt_store::{Store, StoreOptions};
use futures_util::StreamExt;
use serde_json::json;
use tower::ServiceExt;

const UUID: &str = "2b7d1f0e-6c1a-4f0e-9d7e-3a4b5c6d7e8f";
const LOG: &str =
    "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/vm1/serial-log";

fn setup(dir: &std::path::Path) -> (Store, axum::Router, std::path::PathBuf) {
    let store = Store::open(dir.join("ferrovirt.db"), StoreOptions::default()).unwrap();
    store
        .create(
            &VMS.store_kind(),
            json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "metadata": {"name": "vm1", "namespace": "default"},
                "spec": {"runStrategy": "Manual", "template": {"spec": {"domain": {
                    "firmware": {"uuid": UUID}, "devices": {}}}}}}),
        )
        .unwrap();
    store
        .create(
            &VMIS.store_kind(),
            json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "metadata": {"name": "vm1", "namespace": "default"},
                "spec": {"domain": {"devices": {}}}, "status": {"phase": "Running"}}),
        )
        .unwrap();
    let log = ferrovirt_vmm::engine::serial_log_path(dir, &VmUuid::parse(UUID).unwrap());
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let app = router(AppState::new(store.clone(), dir.to_path_buf()));
    (store, app, log)
}

async fn body_text(app: &axum::Router, uri: &str) -> String {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn all_runs_begin_with_the_rotated_part() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, app, log) = setup(dir.path());
    let marker = ferrovirt_vmm::engine::RUN_MARKER;
    std::fs::write(
        ferrovirt_vmm::serial_log::rotated_path(&log),
        format!("{marker} (1)\nolder output\n"),
    )
    .unwrap();
    std::fs::write(&log, "rest of run 1\n").unwrap();
    let all = body_text(&app, &format!("{LOG}?allRuns=true")).await;
    assert_eq!(all, format!("{marker} (1)\nolder output\nrest of run 1\n"));
    let current = body_text(&app, LOG).await;
    assert_eq!(current, "rest of run 1\n");
}

#[tokio::test]
async fn a_follower_goes_on_from_the_start_after_a_truncating_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (store, app, log) = setup(dir.path());
    let long_line = "x".repeat(4096);
    std::fs::write(&log, format!("{long_line}\n")).unwrap();
    let response = app
        .clone()
        .oneshot(
            Request::get(format!("{LOG}?follow=true&allRuns=true"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body().into_data_stream();
    let mut received = Vec::new();
    while received.len() < long_line.len() + 1 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        received.extend_from_slice(&chunk);
    }
    // The rotation truncates the log in place; the next run's output is shorter than what was
    // already sent.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    std::fs::write(&log, "after rotation\n").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut vmi = store
        .get(&VMIS.store_kind(), Some("default"), "vm1")
        .unwrap();
    vmi["status"]["phase"] = json!("Succeeded");
    store.update_status(&VMIS.store_kind(), vmi).unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = Vec::new();
        while let Some(chunk) = stream.next().await {
            rest.extend_from_slice(&chunk.unwrap());
        }
        rest
    })
    .await
    .expect("the follower ends once the instance has finished");
    assert_eq!(String::from_utf8_lossy(&rest), "after rotation\n");
}
