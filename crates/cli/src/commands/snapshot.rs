//! `ferrovirt snapshot NAME [--name S]`, `ferrovirt restore NAME --snapshot S [--to NEW]` and
//! `ferrovirt clone NAME NEW [--tpm fresh] [--efi reset]`: what `virtctl` users write as
//! VirtualMachineSnapshot, VirtualMachineRestore and VirtualMachineClone manifests, created through
//! the API and followed until they end, printing each change of phase or condition.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use ferrovirt_resources::{VM_CLONES, VM_RESTORES, VM_SNAPSHOTS};
use serde_json::{Value, json};

use crate::client::{Client, ClientArgs, ClientError};
use crate::resource::{collection_path, item_path};

/// Arguments of `ferrovirt snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The VirtualMachine to snapshot (stopped: offline; running: online, its vCPUs paused briefly).
    #[arg(value_name = "NAME")]
    pub vm: String,
    /// The snapshot's name (default: NAME-snapshot-<time>).
    #[arg(long)]
    pub name: Option<String>,
    /// Keep the snapshot's data when the snapshot is deleted (`deletionPolicy: Retain`), and do
    /// not delete the snapshot with its VM.
    #[arg(long)]
    pub retain: bool,
    /// How long to wait for the snapshot (e.g. 5m, 90s).
    #[arg(long, default_value = "5m")]
    pub timeout: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `ferrovirt restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The VirtualMachine the snapshot was taken of (it must be stopped to restore into it).
    #[arg(value_name = "NAME")]
    pub vm: String,
    /// The VirtualMachineSnapshot to restore.
    #[arg(long)]
    pub snapshot: String,
    /// Restore into a new VirtualMachine of this name (new firmware UUID, SMBIOS serial and MAC
    /// addresses; the TPM state and UEFI variables copied) instead of NAME.
    #[arg(long = "to", value_name = "NEW")]
    pub to: Option<String>,
    /// How long to wait for the restore.
    #[arg(long, default_value = "5m")]
    pub timeout: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `ferrovirt clone`.
#[derive(Debug, Args)]
pub struct CloneArgs {
    /// The VirtualMachine to clone.
    #[arg(value_name = "NAME")]
    pub vm: String,
    /// The new VirtualMachine's name.
    #[arg(value_name = "NEW")]
    pub new: String,
    /// `copy`: the same TPM contents (secrets sealed to it, BitLocker, unlock on the clone);
    /// `fresh`: a newly manufactured TPM with its own EK certificate (golden images).
    #[arg(long, default_value = "copy", value_parser = ["copy", "fresh"])]
    pub tpm: String,
    /// `copy`: the same UEFI variables (boot entries, Secure Boot keys); `reset`: the firmware's
    /// template.
    #[arg(long, default_value = "copy", value_parser = ["copy", "reset"])]
    pub efi: String,
    /// How long to wait for the clone.
    #[arg(long, default_value = "5m")]
    pub timeout: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn timeout(text: &str) -> Result<Duration, ClientError> {
    ferrovirt_api::snapshot::parse_go_duration(text).ok_or_else(|| {
        ClientError::Usage(format!(
            "--timeout {text:?} is not a duration; write it as 90s, 5m or 1h"
        ))
    })
}

fn now_suffix() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    secs.to_string()
}

/// Polls an object until `done` says it ended; prints each new progress line.
fn follow(
    client: &Client,
    path: &str,
    limit: Duration,
    progress: impl Fn(&Value) -> String,
    done: impl Fn(&Value) -> Option<Result<String, String>>,
) -> Result<Result<String, String>, ClientError> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let object = client.get(path)?;
        let line = progress(&object);
        if line != last && !line.is_empty() {
            eprintln!("  {:>5.1}s  {line}", started.elapsed().as_secs_f64());
            last = line;
        }
        if let Some(outcome) = done(&object) {
            return Ok(outcome);
        }
        if started.elapsed() > limit {
            return Ok(Err(format!(
                "still not done after {}s; it goes on in the server: watch it with `ferrovirt get` or `kubectl get -w`",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn condition_message(object: &Value) -> String {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "True" || c["type"] == "Ready")
        .map(|c| {
            format!(
                "{}={} {}",
                c["type"].as_str().unwrap_or(""),
                c["status"].as_str().unwrap_or(""),
                c["message"].as_str().or(c["reason"].as_str()).unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn finish(outcome: Result<Result<String, String>, ClientError>) -> ExitCode {
    match outcome {
        Ok(Ok(message)) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Ok(Err(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Err(e) => e.report(),
    }
}

fn annotation<'a>(object: &'a Value, key: &str) -> &'a str {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `ferrovirt snapshot`.
pub fn run_snapshot(args: &SnapshotArgs) -> ExitCode {
    finish((|| {
        let limit = timeout(&args.timeout)?;
        let client = Client::from_args(&args.client)?;
        let ns = client.namespace().to_owned();
        let name = args
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-snapshot-{}", args.vm, now_suffix()));
        let mut body = json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1",
            "kind": "VirtualMachineSnapshot",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": args.vm}},
        });
        if args.retain {
            body["spec"]["deletionPolicy"] = json!("Retain");
        }
        client.send_json(
            "POST",
            &collection_path(&VM_SNAPSHOTS, Some(&ns)),
            "application/json",
            &body,
        )?;
        eprintln!("VirtualMachineSnapshot {name} created");
        follow(
            &client,
            &item_path(&VM_SNAPSHOTS, &ns, &name),
            limit,
            |s| {
                format!(
                    "{} {}",
                    s.pointer("/status/phase")
                        .and_then(Value::as_str)
                        .unwrap_or("Pending"),
                    condition_message(s)
                )
            },
            |s| match s.pointer("/status/phase").and_then(Value::as_str) {
                Some("Succeeded")
                    if !annotation(s, ferrovirt_api::snapshot::SIZE_ANNOTATION).is_empty() =>
                {
                    let online = s
                        .pointer("/status/indications")
                        .and_then(Value::as_array)
                        .is_some_and(|i| i.iter().any(|v| v == "Online"));
                    let pause = annotation(s, ferrovirt_api::snapshot::PAUSE_ANNOTATION);
                    Some(Ok(format!(
                        "VirtualMachineSnapshot {name} is ready: {} bytes, taken {} in {} ms{}",
                        annotation(s, ferrovirt_api::snapshot::SIZE_ANNOTATION),
                        if online { "online" } else { "offline" },
                        annotation(s, ferrovirt_api::snapshot::DURATION_ANNOTATION),
                        if pause.is_empty() {
                            String::new()
                        } else {
                            format!(", vCPUs paused {pause} ms")
                        }
                    )))
                }
                Some("Failed") => Some(Err(format!(
                    "VirtualMachineSnapshot {name} failed: {}",
                    s.pointer("/status/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("(no message)")
                ))),
                _ => None,
            },
        )
    })())
}

fn create_restore(
    client: &Client,
    ns: &str,
    name: &str,
    target: &str,
    snapshot: &str,
) -> Result<(), ClientError> {
    let body = json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1",
        "kind": "VirtualMachineRestore",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": target},
            "virtualMachineSnapshotName": snapshot,
        },
    });
    client
        .send_json(
            "POST",
            &collection_path(&VM_RESTORES, Some(ns)),
            "application/json",
            &body,
        )
        .map(drop)
}

/// `ferrovirt restore`.
pub fn run_restore(args: &RestoreArgs) -> ExitCode {
    finish((|| {
        let limit = timeout(&args.timeout)?;
        let client = Client::from_args(&args.client)?;
        let ns = client.namespace().to_owned();
        let target = args.to.clone().unwrap_or_else(|| args.vm.clone());
        let name = format!("{target}-restore-{}", now_suffix());
        create_restore(&client, &ns, &name, &target, &args.snapshot)?;
        eprintln!("VirtualMachineRestore {name} created");
        follow(
            &client,
            &item_path(&VM_RESTORES, &ns, &name),
            limit,
            condition_message,
            |r| {
                if r.pointer("/status/complete") == Some(&json!(true)) {
                    return Some(Ok(format!(
                        "VirtualMachine {target} restored from VirtualMachineSnapshot {}",
                        args.snapshot
                    )));
                }
                let failure = r
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)?
                    .iter()
                    .find(|c| c["type"] == "Failure" && c["status"] == "True")?;
                Some(Err(format!(
                    "VirtualMachineRestore {name}: {}",
                    failure["message"].as_str().unwrap_or("failed")
                )))
            },
        )
    })())
}

/// `ferrovirt clone`.
pub fn run_clone(args: &CloneArgs) -> ExitCode {
    finish((|| {
        let limit = timeout(&args.timeout)?;
        let client = Client::from_args(&args.client)?;
        let ns = client.namespace().to_owned();
        let name = format!("{}-clone-{}", args.new, now_suffix());
        let body = json!({
            "apiVersion": "clone.kubevirt.io/v1beta1",
            "kind": "VirtualMachineClone",
            "metadata": {"name": name, "namespace": ns, "annotations": {
                ferrovirt_api::clone::TPM_POLICY_ANNOTATION: args.tpm,
                ferrovirt_api::clone::EFI_POLICY_ANNOTATION: args.efi,
            }},
            "spec": {
                "source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": args.vm},
                "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": args.new},
            },
        });
        client.send_json(
            "POST",
            &collection_path(&VM_CLONES, Some(&ns)),
            "application/json",
            &body,
        )?;
        eprintln!(
            "VirtualMachineClone {name} created (tpm: {}, efi: {})",
            args.tpm, args.efi
        );
        follow(
            &client,
            &item_path(&VM_CLONES, &ns, &name),
            limit,
            |c| {
                format!(
                    "{} {}",
                    c.pointer("/status/phase")
                        .and_then(Value::as_str)
                        .unwrap_or("Pending"),
                    condition_message(c)
                )
            },
            |c| match c.pointer("/status/phase").and_then(Value::as_str) {
                Some("Succeeded") => Some(Ok(format!(
                    "VirtualMachine {} cloned from {} (new firmware UUID; TPM {}, UEFI variables {})",
                    args.new,
                    args.vm,
                    if args.tpm == "fresh" {
                        "fresh"
                    } else {
                        "copied"
                    },
                    if args.efi == "reset" {
                        "reset"
                    } else {
                        "copied"
                    }
                ))),
                Some("Failed") => Some(Err(format!(
                    "VirtualMachineClone {name} failed: {}",
                    condition_message(c)
                ))),
                _ => None,
            },
        )
    })())
}
