//! `ferrovirt state list|rollback NAME`: the persistent-state generations of a VM (kept before each
//! start and after each clean stop), and putting one back while the VM is stopped. The state it
//! replaces is itself kept as a `pre-restore` generation.
//!
//! Through the API server (the default; the kubeconfig's server and credentials, as every client
//! command) for VMs that `ferrovirt serve` manages, or directly on a data dir (`--data-dir`) for
//! VMs that `ferrovirt run` runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ferrovirt_api::kubevirt::vm::VirtualMachine;
use ferrovirt_storage::GenerationId;
use ferrovirt_vmm::engine::Engine;

use super::run::plan_for;
use crate::client::ClientArgs;

/// `ferrovirt state` subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List the generations of a VM's persistent state, oldest first.
    List(StateArgs),
    /// Put a generation back (the VM must be stopped).
    Rollback {
        #[command(flatten)]
        target: StateArgs,
        /// The generation to restore (see `ferrovirt state list`).
        #[arg(long)]
        generation: u64,
    },
}

/// Which VM.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The VM's name.
    pub name: String,
    /// Work directly on the data dir of `ferrovirt run` instead of asking the server.
    #[arg(long, value_name = "DIR", env = "FERROVIRT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server and credentials (when no --data-dir is given), and the namespace.
    #[command(flatten)]
    pub client: ClientArgs,
}

impl StateArgs {
    /// The namespace of the VM in a `ferrovirt run` data dir (`-n`, else `default`).
    fn local_namespace(&self) -> &str {
        self.client
            .namespace
            .as_deref()
            .unwrap_or(crate::connection::DEFAULT_NAMESPACE)
    }
}

/// One generation, as listed.
struct Row {
    generation: u64,
    created: u64,
    reason: String,
    files: String,
}

fn print_rows(rows: &[Row]) {
    println!(
        "{:<12} {:<12} {:<14} FILES",
        "GENERATION", "CREATED", "REASON"
    );
    for row in rows {
        println!(
            "{:<12} {:<12} {:<14} {}",
            row.generation, row.created, row.reason, row.files
        );
    }
}

/// Through the API server.
fn through_server(command: &StateCommand, target: &StateArgs) -> Result<(), String> {
    let client = crate::client::Client::from_args(&target.client).map_err(|e| e.to_string())?;
    let base = format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{}/virtualmachines/{}",
        client.namespace(),
        target.name
    );
    match command {
        StateCommand::List(_) => {
            let list = client
                .get(&format!("{base}/stategenerations"))
                .map_err(|e| e.to_string())?;
            let rows: Vec<Row> = list
                .get("items")
                .and_then(|i| i.as_array())
                .map(|items| {
                    items
                        .iter()
                        .map(|item| Row {
                            generation: item["generation"].as_u64().unwrap_or_default(),
                            created: item["created"].as_u64().unwrap_or_default(),
                            reason: item["reason"].as_str().unwrap_or("unreadable").to_owned(),
                            files: item["files"]
                                .as_array()
                                .map(|files| {
                                    files
                                        .iter()
                                        .map(|f| {
                                            format!(
                                                "{}:{}",
                                                f["name"].as_str().unwrap_or("?"),
                                                f["kind"].as_str().unwrap_or("?")
                                            )
                                        })
                                        .collect::<Vec<_>>()
                                        .join(" ")
                                })
                                .unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            print_rows(&rows);
            Ok(())
        }
        StateCommand::Rollback { generation, .. } => {
            let answer = client
                .send_json(
                    "PUT",
                    &format!("{base}/staterollback"),
                    "application/json",
                    &serde_json::json!({ "generation": generation }),
                )
                .map_err(|e| e.to_string())?;
            println!(
                "restored generation {generation} of {}; the state it replaced is kept as generation {}",
                target.name,
                answer["preRestore"].as_u64().unwrap_or_default()
            );
            Ok(())
        }
    }
}

/// Runs `ferrovirt state ...`.
pub fn run(command: &StateCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load(target: &StateArgs, data_dir: &std::path::Path) -> Result<VirtualMachine, String> {
    let record = data_dir
        .join("local")
        .join(target.local_namespace())
        .join(format!("{}.json", target.name));
    let bytes = std::fs::read(&record).map_err(|e| {
        format!(
            "no VM {}/{} in {} ({}: {e}); check the name, --namespace and --data-dir",
            target.local_namespace(),
            target.name,
            data_dir.display(),
            record.display()
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: unreadable: {e}", record.display()))
}

async fn execute(command: &StateCommand) -> Result<(), String> {
    let target = match command {
        StateCommand::List(target) | StateCommand::Rollback { target, .. } => target,
    };
    let Some(data_dir) = &target.data_dir else {
        return through_server(command, target);
    };
    let vm = load(target, data_dir)?;
    let plan = plan_for(&vm, data_dir)?;
    let engine = Engine::new(data_dir).await.map_err(|e| e.to_string())?;
    match command {
        StateCommand::List(_) => {
            let rows: Vec<Row> = engine
                .generations(&plan)
                .map_err(|e| e.to_string())?
                .iter()
                .map(|info| match &info.manifest {
                    Ok(m) => Row {
                        generation: info.id.0,
                        created: m.created_unix_secs,
                        reason: serde_json::to_value(&m.reason)
                            .ok()
                            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(String::from))
                            .unwrap_or_default(),
                        files: m
                            .entries
                            .iter()
                            .map(|e| format!("{}:{:?}", e.logical_name, e.kind).to_lowercase())
                            .collect::<Vec<_>>()
                            .join(" "),
                    },
                    Err(why) => Row {
                        generation: info.id.0,
                        created: 0,
                        reason: format!("unreadable: {why}"),
                        files: String::new(),
                    },
                })
                .collect();
            print_rows(&rows);
            Ok(())
        }
        StateCommand::Rollback { generation, .. } => {
            if engine.runtime_path(&plan.uuid).join("run.json").exists() {
                return Err(format!(
                    "the VM {} seems to be running ({}); stop it before rolling back",
                    plan.name,
                    engine.runtime_path(&plan.uuid).display()
                ));
            }
            let kept = engine
                .rollback(&plan, GenerationId(*generation))
                .map_err(|e| e.to_string())?;
            println!(
                "restored generation {generation} of {}; the state it replaced is kept as generation {}",
                plan.name, kept.0
            );
            Ok(())
        }
    }
}
