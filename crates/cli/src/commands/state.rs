//! `ferrovirt state list|rollback NAME --data-dir DIR`: the persistent-state generations of a VM
//! (kept before each start and after each clean stop), and putting one back while the VM is
//! stopped. The state it replaces is itself kept as a `pre-restore` generation.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ferrovirt_api::kubevirt::vm::VirtualMachine;
use ferrovirt_storage::GenerationId;
use ferrovirt_vmm::engine::Engine;

use super::run::plan_for;

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
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The data dir the VM runs from.
    #[arg(long, value_name = "DIR", env = "FERROVIRT_DATA_DIR")]
    pub data_dir: PathBuf,
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

fn load(target: &StateArgs) -> Result<VirtualMachine, String> {
    let record = target
        .data_dir
        .join("local")
        .join(&target.namespace)
        .join(format!("{}.json", target.name));
    let bytes = std::fs::read(&record).map_err(|e| {
        format!(
            "no VM {}/{} in {} ({}: {e}); check the name, --namespace and --data-dir",
            target.namespace,
            target.name,
            target.data_dir.display(),
            record.display()
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: unreadable: {e}", record.display()))
}

async fn execute(command: &StateCommand) -> Result<(), String> {
    let target = match command {
        StateCommand::List(target) | StateCommand::Rollback { target, .. } => target,
    };
    let vm = load(target)?;
    let plan = plan_for(&vm, &target.data_dir)?;
    let engine = Engine::new(&target.data_dir)
        .await
        .map_err(|e| e.to_string())?;
    match command {
        StateCommand::List(_) => {
            println!(
                "{:<12} {:<20} {:<14} FILES",
                "GENERATION", "CREATED", "REASON"
            );
            for info in engine.generations(&plan).map_err(|e| e.to_string())? {
                match &info.manifest {
                    Ok(m) => {
                        let files: Vec<String> = m
                            .entries
                            .iter()
                            .map(|e| format!("{}:{:?}", e.logical_name, e.kind).to_lowercase())
                            .collect();
                        let reason = serde_json::to_value(&m.reason)
                            .ok()
                            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(String::from))
                            .unwrap_or_default();
                        println!(
                            "{:<12} {:<20} {:<14} {}",
                            info.id,
                            m.created_unix_secs,
                            reason,
                            files.join(" ")
                        );
                    }
                    Err(why) => println!("{:<12} unreadable: {why}", info.id),
                }
            }
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
                "restored generation {generation} of {}; the state it replaced is kept as generation {kept}",
                plan.name
            );
            Ok(())
        }
    }
}
