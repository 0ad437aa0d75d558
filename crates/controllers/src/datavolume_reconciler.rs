//! The DataVolume reconciler (CDI's datavolume import, upload and clone controllers), a pure
//! function of (DataVolume, world) returning [`Action`]s:
//!
//! - a PVC of the DataVolume's name is created (owned by it, CDI's labels and annotations, the
//!   size of `spec.pvc` or `spec.storage` grown by CDI's filesystem overhead), phase `Pending`
//!   until the PVC reconciler binds it to a local-path volume;
//! - bound: an `http`, `blank` or `pvc` (clone) source starts the importer
//!   ([`Action::StartImport`]; `ImportScheduled`/`CloneScheduled`), whose progress the run's
//!   [`ImportView`] shows (`ImportInProgress`/`CloneInProgress`, `progress: "45.20%"`); an
//!   `upload` source is `UploadReady` until the upload endpoint has filled the volume;
//! - the importer's (or the upload's) outcome is recorded in the PVC's annotations
//!   (`cdi.kubevirt.io/storage.pod.phase`, the running condition's message), as CDI's importer
//!   pod leaves it, so it survives a restart of the server; from there the DataVolume is
//!   `Succeeded` or `Failed` with the message, with CDI's conditions (`Bound`, `Running`,
//!   `Ready`) and Events (`ImportSucceeded`, `ImportFailed`, ...);
//! - an import that was in progress when the server stopped (no run, phase still in progress)
//!   starts again from the beginning (`restartCount` + 1; the importer removes what the
//!   interrupted run left).

use std::time::Duration;

use ferrovirt_api::cdi::{DataVolume, DataVolumePhase, annotations, reasons};
use ferrovirt_resources::kubevirt::meta_str;
use ferrovirt_resources::{DATA_VOLUMES, PVCS};
use serde_json::{Value, json};

use crate::action::{Action, Key};
use crate::events::EventType;
use crate::storage::PVC_PROTECTION;

/// How often the status of a running import is refreshed (its progress).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The importer's run for a DataVolume, as the reconciler sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportView {
    /// Running; percent done when the source's size is known.
    Running { percent: Option<f64> },
    /// Ended: `Ok(note)` (what to say about it, e.g. the throughput), or the failure's message.
    Finished(Result<String, String>),
}

/// What a DataVolume's reconcile reads besides the DataVolume.
#[derive(Debug, Clone, Copy, Default)]
pub struct DataVolumeWorld<'a> {
    /// The PVC of the DataVolume's name.
    pub pvc: Option<&'a Value>,
    /// For a `pvc` source: the source PVC.
    pub source_pvc: Option<&'a Value>,
    /// The importer's run, if any.
    pub import: Option<&'a ImportView>,
    pub now_unix: i64,
}

/// What the importer is asked to do (resolved to files by the executor).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportJob {
    pub namespace: String,
    /// The DataVolume (and its PVC).
    pub name: String,
    /// The PVC's local-path volume.
    pub volume: String,
    pub source: JobSource,
    pub image_bytes: u64,
    pub archive: bool,
    pub checksum: Option<String>,
}

/// Where the importer reads from.
#[derive(Debug, Clone, PartialEq)]
pub enum JobSource {
    /// `source.http` as written (Secrets and ConfigMaps are read by the executor).
    Http(ferrovirt_api::cdi::HttpSource),
    Blank,
    /// The source PVC's volume (its `disk.img`).
    Clone {
        volume: String,
    },
}

/// Which of CDI's controllers a source belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Import,
    Upload,
    Clone,
}

fn text<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn annotation<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// The sources ferrovirt cannot import from, with what to use instead.
fn unsupported_source(dv: &DataVolume) -> Option<String> {
    let source = dv.spec.source.as_ref()?;
    let kind = source
        .set_sources()
        .into_iter()
        .find(|s| !matches!(*s, "http" | "upload" | "blank" | "pvc"))?;
    Some(format!(
        "spec.source.{kind}: {kind} sources are not supported by ferrovirt (a single host has no \
         registry/object-store/oVirt/VMware importer); use source.http (a URL), source.upload \
         (ferrovirt image-upload), source.blank or source.pvc"
    ))
}

fn flow_of(dv: &DataVolume) -> Flow {
    let source = dv.spec.source.as_ref();
    if source.is_some_and(|s| s.upload.is_some()) {
        Flow::Upload
    } else if source.is_some_and(|s| s.pvc.is_some()) {
        Flow::Clone
    } else {
        Flow::Import
    }
}

/// The PVC made for a DataVolume: same name and namespace, owned by it, with the DataVolume's
/// labels and annotations under CDI's own (CDI's `newPersistentVolumeClaim` copies them: a
/// manifest's DataVolume labelled `persistent-state-for: <vm>`, as KubeVirt's export writes it
/// for the backend-storage volume, gives the VM its backend-storage PVC that way).
pub fn claim_for(dv_value: &Value, dv: &DataVolume) -> Value {
    let (ns, name) = (meta_str(dv_value, "namespace"), meta_str(dv_value, "name"));
    let claim = dv.claim_spec().cloned().unwrap_or_default();
    let access_modes = claim
        .access_modes
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    let source = dv.spec.source.as_ref();
    let kind = source
        .and_then(|s| s.set_sources().into_iter().next())
        .unwrap_or("none");
    let copied = |key: &str| {
        dv_value
            .pointer(&format!("/metadata/{key}"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let mut annotations_map = copied("annotations");
    annotations_map.insert(
        annotations::CREATED_FOR_DV.into(),
        json!(meta_str(dv_value, "uid")),
    );
    annotations_map.insert(
        annotations::CONTENT_TYPE.into(),
        json!(if dv.is_archive() {
            "archive"
        } else {
            "kubevirt"
        }),
    );
    annotations_map.insert(annotations::SOURCE.into(), json!(kind));
    if let Some(http) = source.and_then(|s| s.http.as_ref()) {
        annotations_map.insert(annotations::ENDPOINT.into(), json!(http.url));
    }
    if source.is_some_and(|s| s.upload.is_some()) {
        annotations_map.insert(annotations::UPLOAD_REQUEST.into(), json!(""));
    }
    let mut spec = json!({
        "accessModes": access_modes,
        "resources": {"requests": {"storage": dv.claim_request_bytes().to_string()}},
        "volumeMode": "Filesystem",
    });
    if let Some(class) = claim.storage_class_name.as_ref().filter(|c| !c.is_empty()) {
        spec["storageClassName"] = json!(class);
    }
    let mut labels = serde_json::Map::new();
    for (key, value) in [
        ("app", "containerized-data-importer"),
        ("app.kubernetes.io/component", "storage"),
        ("app.kubernetes.io/managed-by", "cdi-controller"),
    ] {
        labels.insert(key.into(), json!(value));
    }
    labels.extend(copied("labels"));
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "annotations": annotations_map,
            "ownerReferences": [{
                "apiVersion": ferrovirt_api::cdi::CDI_API_VERSION, "kind": "DataVolume",
                "name": name, "uid": meta_str(dv_value, "uid"),
                "controller": true, "blockOwnerDeletion": true,
            }],
            "finalizers": [PVC_PROTECTION],
        },
        "spec": spec,
        "status": {"phase": "Pending"},
    })
}

/// One of CDI's conditions, keeping its transition time when its status did not change.
fn condition(
    old: &Value,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &str,
) -> Value {
    let status_text = if status { "True" } else { "False" };
    let previous = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c.get("type") == Some(&json!(type_))));
    let transition = previous
        .filter(|c| c.get("status") == Some(&json!(status_text)))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    let heartbeat = previous
        .filter(|c| {
            c.get("status") == Some(&json!(status_text))
                && c.get("reason") == Some(&json!(reason))
                && c.get("message") == Some(&json!(message))
        })
        .and_then(|c| c.get("lastHeartbeatTime").cloned())
        .unwrap_or_else(|| json!(now));
    json!({"type": type_, "status": status_text, "lastTransitionTime": transition,
        "lastHeartbeatTime": heartbeat, "reason": reason, "message": message})
}

/// The status to write.
struct Status<'a> {
    phase: DataVolumePhase,
    progress: String,
    bound: (bool, &'a str, String),
    running: (bool, &'a str, String),
    ready: (bool, &'a str, String),
    restarts: u64,
}

fn status_action(dv: &Value, status: &Status<'_>, now: &str) -> Option<Action> {
    let claim = meta_str(dv, "name");
    let new_status = json!({
        "claimName": claim,
        "phase": status.phase.as_str(),
        "progress": status.progress,
        "restartCount": status.restarts,
        "conditions": [
            condition(dv, "Bound", status.bound.0, status.bound.1, &status.bound.2, now),
            condition(dv, "Running", status.running.0, status.running.1, &status.running.2, now),
            condition(dv, "Ready", status.ready.0, status.ready.1, &status.ready.2, now),
        ],
    });
    if dv.get("status") == Some(&new_status) {
        return None;
    }
    let mut updated = dv.clone();
    updated["status"] = new_status;
    Some(Action::UpdateStatus {
        resource: DATA_VOLUMES,
        object: updated,
    })
}

fn phase_of(dv: &Value) -> &str {
    text(dv, "/status/phase")
}

fn restarts(dv: &Value) -> u64 {
    dv.pointer("/status/restartCount")
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// Writes the importer's outcome to the PVC's annotations (as CDI's importer pod's phase).
fn record_outcome(pvc: &Value, outcome: &Result<String, String>) -> Action {
    let mut updated = pvc.clone();
    if let Some(meta) = updated.get_mut("metadata").and_then(Value::as_object_mut) {
        let map = meta.entry("annotations").or_insert_with(|| json!({}));
        match outcome {
            Ok(_) => {
                map[annotations::POD_PHASE] = json!("Succeeded");
                if let Some(m) = map.as_object_mut() {
                    m.remove(annotations::RUNNING_MESSAGE);
                    m.remove(annotations::RUNNING_REASON);
                }
            }
            Err(message) => {
                map[annotations::POD_PHASE] = json!("Failed");
                map[annotations::RUNNING_MESSAGE] = json!(message);
                map[annotations::RUNNING_REASON] = json!(reasons::ERROR);
            }
        }
    }
    Action::Update {
        resource: PVCS,
        object: updated,
    }
}

/// Records an Event when the phase changes to `phase`.
fn event_on(
    dv: &Value,
    phase: DataVolumePhase,
    event_type: EventType,
    reason: &str,
    message: &str,
) -> Option<Action> {
    (phase_of(dv) != phase.as_str()).then(|| Action::event(dv, event_type, reason, message))
}

/// What to do for the DataVolume `dv`.
pub fn reconcile_data_volume(dv_value: &Value, world: &DataVolumeWorld<'_>) -> Vec<Action> {
    if dv_value.pointer("/metadata/deletionTimestamp").is_some() {
        return Vec::new(); // the garbage collector deletes the PVC it owns
    }
    let now = ferrovirt_store::format_rfc3339(world.now_unix);
    let name = meta_str(dv_value, "name");
    let ns = meta_str(dv_value, "namespace");
    let key = Key::data_volume(ns, name);
    let dv: DataVolume = match serde_json::from_value(dv_value.clone()) {
        Ok(dv) => dv,
        Err(error) => {
            let message = format!("the stored DataVolume cannot be read: {error}");
            return failed(dv_value, Flow::Import, &message, world, &now);
        }
    };
    let flow = flow_of(&dv);
    let restarts_now = restarts(dv_value);
    let pending_bound = (false, reasons::PENDING, String::new());
    if let Some(message) = unsupported_source(&dv) {
        return failed(dv_value, flow, &message, world, &now);
    }
    let Some(pvc) = world.pvc else {
        let mut actions = vec![Action::Create {
            resource: PVCS,
            object: claim_for(dv_value, &dv),
        }];
        actions.extend(status_action(
            dv_value,
            &Status {
                phase: DataVolumePhase::Pending,
                progress: "N/A".into(),
                bound: pending_bound.clone(),
                running: (false, "", String::new()),
                ready: (false, "", String::new()),
                restarts: restarts_now,
            },
            &now,
        ));
        return actions;
    };
    let ours = annotation(pvc, annotations::CREATED_FOR_DV) == Some(meta_str(dv_value, "uid"))
        || pvc
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|r| {
                r.iter().any(|r| {
                    r.get("uid").and_then(Value::as_str) == Some(meta_str(dv_value, "uid"))
                })
            });
    if !ours {
        let message = format!("Resource {name:?} already exists and is not managed by DataVolume");
        let mut actions = Vec::new();
        if phase_of(dv_value) != DataVolumePhase::Pending.as_str()
            || dv_value.get("status").is_none()
        {
            actions.push(Action::event(
                dv_value,
                EventType::Warning,
                "ErrResourceExists",
                &message,
            ));
        }
        actions.extend(status_action(
            dv_value,
            &Status {
                phase: DataVolumePhase::Pending,
                progress: "N/A".into(),
                bound: (false, "ErrResourceExists", message),
                running: (false, "", String::new()),
                ready: (false, "", String::new()),
                restarts: restarts_now,
            },
            &now,
        ));
        return actions;
    }
    let bound_volume = pvc
        .pointer("/spec/volumeName")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .filter(|_| text(pvc, "/status/phase") == "Bound");
    let Some(volume) = bound_volume else {
        return status_action(
            dv_value,
            &Status {
                phase: DataVolumePhase::Pending,
                progress: "N/A".into(),
                bound: (false, reasons::PENDING, reasons::pending(name)),
                running: (false, "", String::new()),
                ready: (false, "", String::new()),
                restarts: restarts_now,
            },
            &now,
        )
        .into_iter()
        .collect();
    };
    let bound = (true, reasons::BOUND, reasons::bound(name));
    // An outcome the importer finished but that is not on the PVC yet: record it first.
    if let Some(ImportView::Finished(outcome)) = world.import
        && annotation(pvc, annotations::POD_PHASE).is_none_or(|p| p == "Running")
    {
        return vec![record_outcome(pvc, outcome)];
    }
    let source_name = dv
        .spec
        .source
        .as_ref()
        .and_then(|s| s.pvc.as_ref())
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .unwrap_or_default();
    match annotation(pvc, annotations::POD_PHASE) {
        Some("Succeeded") => {
            let (reason, message) = match flow {
                Flow::Import => (reasons::IMPORT_SUCCEEDED, reasons::import_succeeded(name)),
                Flow::Upload => (reasons::UPLOAD_SUCCEEDED, reasons::upload_succeeded(name)),
                Flow::Clone => (
                    reasons::CLONE_SUCCEEDED,
                    reasons::clone_succeeded(&source_name, &format!("{ns}/{name}")),
                ),
            };
            let mut actions: Vec<Action> = event_on(
                dv_value,
                DataVolumePhase::Succeeded,
                EventType::Normal,
                reason,
                &message,
            )
            .into_iter()
            .collect();
            actions.extend(status_action(
                dv_value,
                &Status {
                    phase: DataVolumePhase::Succeeded,
                    progress: "100.0%".into(),
                    bound,
                    running: (false, reasons::COMPLETED, String::new()),
                    ready: (true, "", String::new()),
                    restarts: restarts_now,
                },
                &now,
            ));
            if world.import.is_some() {
                actions.push(Action::ForgetImport { key });
            }
            return actions;
        }
        Some("Failed") => {
            let message = annotation(pvc, annotations::RUNNING_MESSAGE)
                .unwrap_or("the import failed")
                .to_owned();
            let mut actions = failed(dv_value, flow, &message, world, &now);
            if world.import.is_some() {
                actions.push(Action::ForgetImport { key });
            }
            return actions;
        }
        _ => {}
    }
    match flow {
        Flow::Upload => {
            let running = annotation(pvc, annotations::POD_PHASE) == Some("Running");
            let mut actions: Vec<Action> = event_on(
                dv_value,
                DataVolumePhase::UploadReady,
                EventType::Normal,
                reasons::UPLOAD_READY,
                &reasons::upload_ready(name),
            )
            .into_iter()
            .collect();
            actions.extend(status_action(
                dv_value,
                &Status {
                    phase: DataVolumePhase::UploadReady,
                    progress: "N/A".into(),
                    bound,
                    running: (
                        true,
                        reasons::POD_RUNNING,
                        if running {
                            // An interrupted upload says how many bytes it kept (resume).
                            annotation(pvc, annotations::RUNNING_MESSAGE)
                                .unwrap_or("Upload in progress")
                                .to_owned()
                        } else {
                            String::new()
                        },
                    ),
                    ready: (false, "", String::new()),
                    restarts: restarts_now,
                },
                &now,
            ));
            actions
        }
        Flow::Import | Flow::Clone => {
            let (scheduled, in_progress) = match flow {
                Flow::Clone => (
                    DataVolumePhase::CloneScheduled,
                    DataVolumePhase::CloneInProgress,
                ),
                _ => (
                    DataVolumePhase::ImportScheduled,
                    DataVolumePhase::ImportInProgress,
                ),
            };
            match world.import {
                Some(ImportView::Running { percent }) => {
                    let progress = percent.map_or_else(|| "N/A".to_owned(), |p| format!("{p:.2}%"));
                    let (reason, message) = match flow {
                        Flow::Clone => (
                            reasons::CLONE_IN_PROGRESS,
                            reasons::clone_in_progress(&source_name, &format!("{ns}/{name}")),
                        ),
                        _ => (
                            reasons::IMPORT_IN_PROGRESS,
                            reasons::import_in_progress(name),
                        ),
                    };
                    let mut actions: Vec<Action> =
                        event_on(dv_value, in_progress, EventType::Normal, reason, &message)
                            .into_iter()
                            .collect();
                    actions.extend(status_action(
                        dv_value,
                        &Status {
                            phase: in_progress,
                            progress,
                            bound,
                            running: (true, reasons::POD_RUNNING, String::new()),
                            ready: (false, "", String::new()),
                            restarts: restarts_now,
                        },
                        &now,
                    ));
                    actions.push(Action::Requeue {
                        key,
                        after: PROGRESS_INTERVAL,
                    });
                    actions
                }
                // Recorded on the PVC first (above); nothing else to do until it is.
                Some(ImportView::Finished(_)) => Vec::new(),
                None => start_import(
                    dv_value,
                    &dv,
                    flow,
                    volume,
                    world,
                    scheduled,
                    in_progress,
                    bound,
                    &now,
                ),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn start_import(
    dv_value: &Value,
    dv: &DataVolume,
    flow: Flow,
    volume: &str,
    world: &DataVolumeWorld<'_>,
    scheduled: DataVolumePhase,
    in_progress: DataVolumePhase,
    bound: (bool, &str, String),
    now: &str,
) -> Vec<Action> {
    let (ns, name) = (meta_str(dv_value, "namespace"), meta_str(dv_value, "name"));
    let key = Key::data_volume(ns, name);
    let source = dv.spec.source.as_ref();
    let job_source = if let Some(http) = source.and_then(|s| s.http.clone()) {
        JobSource::Http(http)
    } else if let Some(pvc_source) = source.and_then(|s| s.pvc.as_ref()) {
        let ready = world.source_pvc.and_then(|p| {
            let bound = text(p, "/status/phase") == "Bound";
            let filled =
                annotation(p, annotations::POD_PHASE).is_none_or(|phase| phase == "Succeeded");
            p.pointer("/spec/volumeName")
                .and_then(Value::as_str)
                .filter(|_| bound && filled)
        });
        let Some(source_volume) = ready else {
            let message = format!(
                "source PVC {}/{} not found, not bound or not filled yet; the clone waits for it",
                pvc_source.namespace, pvc_source.name
            );
            let mut actions: Vec<Action> = event_on(
                dv_value,
                DataVolumePhase::CloneScheduled,
                EventType::Normal,
                reasons::CLONE_WITHOUT_SOURCE,
                &message,
            )
            .into_iter()
            .collect();
            actions.extend(status_action(
                dv_value,
                &Status {
                    phase: DataVolumePhase::CloneScheduled,
                    progress: "N/A".into(),
                    bound,
                    running: (false, reasons::CLONE_WITHOUT_SOURCE, message),
                    ready: (false, "", String::new()),
                    restarts: restarts(dv_value),
                },
                now,
            ));
            actions.push(Action::Requeue {
                key,
                after: Duration::from_secs(2),
            });
            return actions;
        };
        JobSource::Clone {
            volume: source_volume.to_owned(),
        }
    } else {
        JobSource::Blank
    };
    // An import that was in progress when the server stopped starts again: one more restart.
    let interrupted = phase_of(dv_value) == in_progress.as_str();
    let restarts_now = restarts(dv_value) + u64::from(interrupted);
    let (reason, message) = match flow {
        Flow::Clone => (reasons::CLONE_SCHEDULED, reasons::clone_scheduled(name)),
        _ => (reasons::IMPORT_SCHEDULED, reasons::import_scheduled(name)),
    };
    let mut actions = vec![Action::StartImport {
        key: key.clone(),
        job: ImportJob {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            volume: volume.to_owned(),
            source: job_source,
            image_bytes: dv.image_bytes(),
            archive: dv.is_archive(),
            checksum: source
                .and_then(|s| s.http.as_ref())
                .and_then(|h| h.checksum.clone())
                .filter(|c| !c.is_empty()),
        },
    }];
    actions.extend(event_on(
        dv_value,
        scheduled,
        EventType::Normal,
        reason,
        &message,
    ));
    actions.extend(status_action(
        dv_value,
        &Status {
            phase: scheduled,
            progress: "N/A".into(),
            bound,
            running: (false, reasons::PENDING, String::new()),
            ready: (false, "", String::new()),
            restarts: restarts_now,
        },
        now,
    ));
    actions
}

/// `Failed` with the message in the Running condition and a Warning Event (once).
fn failed(
    dv_value: &Value,
    flow: Flow,
    message: &str,
    world: &DataVolumeWorld<'_>,
    now: &str,
) -> Vec<Action> {
    let name = meta_str(dv_value, "name");
    let reason = match flow {
        Flow::Import => reasons::IMPORT_FAILED,
        Flow::Upload => reasons::UPLOAD_FAILED,
        Flow::Clone => reasons::CLONE_FAILED,
    };
    let headline = match flow {
        Flow::Import => reasons::import_failed(name),
        Flow::Upload => reasons::upload_failed(name),
        Flow::Clone => format!("Cloning into {name} failed"),
    };
    let bound = match world.pvc {
        Some(p) if text(p, "/status/phase") == "Bound" => {
            (true, reasons::BOUND, reasons::bound(name))
        }
        _ => (false, reasons::PENDING, String::new()),
    };
    let mut actions: Vec<Action> = event_on(
        dv_value,
        DataVolumePhase::Failed,
        EventType::Warning,
        reason,
        &format!("{headline}: {message}"),
    )
    .into_iter()
    .collect();
    actions.extend(status_action(
        dv_value,
        &Status {
            phase: DataVolumePhase::Failed,
            progress: match text(dv_value, "/status/progress") {
                "" => "N/A".to_owned(),
                kept => kept.to_owned(),
            },
            bound,
            running: (false, reasons::ERROR, message.to_owned()),
            ready: (false, "", String::new()),
            restarts: restarts(dv_value),
        },
        now,
    ));
    actions
}
