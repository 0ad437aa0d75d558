//! `ferrovirt state list|rollback NAME`: the persistent-state generations of a VM (kept before each
//! start and after each clean stop), and putting one back while the VM is stopped. The state it
//! replaces is itself kept as a `pre-restore` generation.
//!
//! Through the API server (the default; the kubeconfig's server and credentials, as every client
//! command) for VMs that `ferrovirt serve` manages, or directly on a data dir (`--data-dir`) for
//! VMs that `ferrovirt run` runs.
//!
//! `ferrovirt state list --deleted` shows the generations kept for deleted VMs (for the retention
//! period, `--state-retention`, 7 days by default) and `ferrovirt state purge --uuid U` (or
//! `--expired`) removes them: the only way generations are ever deleted. Both go through the
//! server (`deletedvmstates` of `subresources.kubevirt.io`, in the namespace of `-n`; `-A` lists
//! all namespaces) unless `--data-dir` names a data dir.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ferrovirt_api::kubevirt::vm::VirtualMachine;
use ferrovirt_storage::vm_store::parse_duration;
use ferrovirt_storage::{GenerationId, OwnerRecord, VmStateStore, VmUuid};
use ferrovirt_vmm::engine::Engine;

use super::run::plan_for;
use crate::client::ClientArgs;

/// `ferrovirt state` subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List the generations of a VM's persistent state, oldest first (`--deleted`: the stores of
    /// deleted VMs, kept for the retention period).
    List(ListArgs),
    /// Remove the state generations of a deleted VM now (`--uuid`), or of every deleted VM whose
    /// retention has passed (`--expired`). The generations of a VM that exists are never removed.
    Purge(PurgeArgs),
    /// Put a generation back (the VM must be stopped).
    Rollback {
        #[command(flatten)]
        target: StateArgs,
        /// The generation to restore (see `ferrovirt state list`).
        #[arg(long)]
        generation: u64,
    },
    /// Rotate the keys of a stopped VM's encrypted state: its data key is wrapped again under
    /// the current key-encryption key (the state's generation before is kept).
    Rekey {
        #[command(flatten)]
        target: StateArgs,
        /// Make a new local key-encryption key first (state-keys/kek-N.key) and wrap under it.
        #[arg(long = "new-kek")]
        new_kek: bool,
        /// Also give the VM a new data key: its TPM state and UEFI variables are re-encrypted.
        #[arg(long = "rotate-dek")]
        rotate_dek: bool,
    },
}

fn print_rekey(name: &str, report: &serde_json::Value) {
    println!(
        "rekeyed {name}: key-encryption key {} -> {}, data key {} -> {}; the state before is kept as generation {}",
        report["oldKEK"].as_str().unwrap_or("?"),
        report["newKEK"].as_str().unwrap_or("?"),
        report["oldDataKeyID"].as_str().unwrap_or("?"),
        report["newDataKeyID"].as_str().unwrap_or("?"),
        report["generation"].as_u64().unwrap_or_default()
    );
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

/// `ferrovirt state list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The VM's name (not with --deleted).
    #[arg(required_unless_present = "deleted", conflicts_with = "deleted")]
    pub name: Option<String>,
    /// List the state generations kept for deleted VMs instead.
    #[arg(long)]
    pub deleted: bool,
    /// With --deleted through the server: every namespace.
    #[arg(short = 'A', long = "all-namespaces", requires = "deleted")]
    pub all_namespaces: bool,
    /// How long a deleted VM's generations are kept (for the EXPIRES column with --data-dir; the
    /// server uses its own --state-retention): 7d, 36h, ...
    #[arg(
        long = "state-retention",
        value_name = "DURATION",
        default_value = "7d"
    )]
    pub retention: String,
    /// Work directly on the data dir of `ferrovirt run` instead of asking the server.
    #[arg(long, value_name = "DIR", env = "FERROVIRT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server and credentials (when no --data-dir is given), and the namespace.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `ferrovirt state purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The firmware UUID of the deleted VM (see `ferrovirt state list --deleted`).
    #[arg(
        long,
        value_name = "UUID",
        required_unless_present = "expired",
        conflicts_with = "expired"
    )]
    pub uuid: Option<String>,
    /// Purge every deleted VM's generations whose retention has passed.
    #[arg(long)]
    pub expired: bool,
    /// How long a deleted VM's generations are kept (with --data-dir; the server uses its own
    /// --state-retention): 7d, 36h, ...
    #[arg(
        long = "state-retention",
        value_name = "DURATION",
        default_value = "7d"
    )]
    pub retention: String,
    /// Work directly on a data dir instead of asking the server.
    #[arg(long, value_name = "DIR", env = "FERROVIRT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server and credentials (when no --data-dir is given), and the namespace.
    #[command(flatten)]
    pub client: ClientArgs,
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
        StateCommand::Purge(args) => purge(args),
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
        StateCommand::Rekey {
            new_kek,
            rotate_dek,
            ..
        } => {
            let answer = client
                .send_json(
                    "PUT",
                    &format!("{base}/staterekey"),
                    "application/json",
                    &serde_json::json!({ "newKEK": new_kek, "rotateDataKey": rotate_dek }),
                )
                .map_err(|e| e.to_string())?;
            print_rekey(&target.name, &answer);
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

fn format_time(unix: u64) -> String {
    ferrovirt_store::format_rfc3339(i64::try_from(unix).unwrap_or(i64::MAX))
}

const DELETED_HEADER: [&str; 7] = [
    "UUID",
    "NAMESPACE",
    "NAME",
    "DELETED",
    "EXPIRES",
    "GENERATIONS",
    "BYTES",
];

fn print_deleted_row(cells: [&str; 7]) {
    println!(
        "{:<38} {:<16} {:<24} {:<21} {:<21} {:>11} {:>10}",
        cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
    );
}

/// `ferrovirt state list --deleted` through the server.
fn deleted_stores_through_server(args: &ListArgs) -> Result<(), String> {
    let client = crate::client::Client::from_args(&args.client).map_err(|e| e.to_string())?;
    let path = if args.all_namespaces {
        "/apis/subresources.kubevirt.io/v1/deletedvmstates".to_owned()
    } else {
        format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/{}/deletedvmstates",
            client.namespace()
        )
    };
    let list = client.get(&path).map_err(|e| e.to_string())?;
    print_deleted_row(DELETED_HEADER);
    for item in list["items"].as_array().into_iter().flatten() {
        let text = |key: &str| item[key].as_str().unwrap_or("").to_owned();
        let number = |key: &str| item[key].as_u64().unwrap_or_default().to_string();
        print_deleted_row([
            &text("uuid"),
            &text("namespace"),
            &text("name"),
            &text("deleted"),
            &text("expires"),
            &number("generations"),
            &number("bytes"),
        ]);
    }
    Ok(())
}

/// `ferrovirt state purge` through the server.
fn purge_through_server(args: &PurgeArgs) -> Result<(), String> {
    let client = crate::client::Client::from_args(&args.client).map_err(|e| e.to_string())?;
    let base = format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{}/deletedvmstates",
        client.namespace()
    );
    if args.expired {
        let answer = client
            .json("DELETE", &base, "application/json", None)
            .map_err(|e| e.to_string())?;
        let items = answer["items"].as_array().cloned().unwrap_or_default();
        for item in &items {
            println!(
                "purged the state generations of deleted VM {}/{} (firmware UUID {})",
                item["namespace"].as_str().unwrap_or("?"),
                item["name"].as_str().unwrap_or("?"),
                item["uuid"].as_str().unwrap_or("?")
            );
        }
        if items.is_empty() {
            println!("no deleted VM's state generations have passed their retention");
        }
        return Ok(());
    }
    let uuid = args.uuid.as_deref().unwrap_or_default();
    let uuid = VmUuid::parse(uuid).map_err(|e| format!("--uuid: {e}"))?;
    let answer = client
        .json(
            "DELETE",
            &format!("{base}/{}", uuid.as_str()),
            "application/json",
            None,
        )
        .map_err(|e| e.to_string())?;
    println!("{}", answer["message"].as_str().unwrap_or("purged"));
    Ok(())
}

fn deleted_stores(args: &ListArgs) -> Result<(), String> {
    let Some(data_dir) = args.data_dir.as_ref() else {
        return deleted_stores_through_server(args);
    };
    let retention = parse_duration(&args.retention)?;
    let stores = VmStateStore::new(data_dir)
        .list_deleted()
        .map_err(|e| e.to_string())?;
    print_deleted_row(DELETED_HEADER);
    for store in stores {
        let owner = store.owner.clone().unwrap_or_else(|| OwnerRecord {
            namespace: "?".into(),
            name: "?".into(),
            uid: None,
            firmware_uuid: store.uuid.to_string(),
            deleted_unix: None,
        });
        print_deleted_row([
            store.uuid.as_str(),
            &owner.namespace,
            &owner.name,
            &owner.deleted_unix.map(format_time).unwrap_or_default(),
            &store
                .expires_unix(retention)
                .map(format_time)
                .unwrap_or_default(),
            &store.generations.to_string(),
            &store.bytes.to_string(),
        ]);
    }
    Ok(())
}

fn purge(args: &PurgeArgs) -> Result<(), String> {
    let Some(data_dir) = args.data_dir.as_ref() else {
        return purge_through_server(args);
    };
    let store = VmStateStore::new(data_dir);
    if args.expired {
        let retention = parse_duration(&args.retention)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let purged = store
            .purge_expired(now, retention)
            .map_err(|e| e.to_string())?;
        for owner in &purged {
            println!(
                "purged the state generations of deleted VM {}/{} (firmware UUID {})",
                owner.namespace, owner.name, owner.firmware_uuid
            );
        }
        if purged.is_empty() {
            println!("no deleted VM's state generations have passed their retention");
        }
        return Ok(());
    }
    let uuid = args.uuid.as_deref().unwrap_or_default();
    let uuid = VmUuid::parse(uuid).map_err(|e| format!("--uuid: {e}"))?;
    let owner = store.purge(&uuid).map_err(|e| e.to_string())?;
    println!(
        "purged the state generations of deleted VM {}/{} (firmware UUID {uuid})",
        owner.namespace, owner.name
    );
    Ok(())
}

async fn execute(command: &StateCommand) -> Result<(), String> {
    let list_target;
    let target = match command {
        StateCommand::Purge(args) => return purge(args),
        StateCommand::List(args) if args.deleted => return deleted_stores(args),
        StateCommand::List(args) => {
            list_target = StateArgs {
                name: args.name.clone().unwrap_or_default(),
                data_dir: args.data_dir.clone(),
                client: args.client.clone(),
            };
            &list_target
        }
        StateCommand::Rollback { target, .. } | StateCommand::Rekey { target, .. } => target,
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
        StateCommand::Purge(args) => purge(args),
        StateCommand::Rollback { generation, .. } => {
            // The engine refuses while the VM's QEMU or swtpm runs (asked of the host).
            let kept = engine
                .rollback(&plan, GenerationId(*generation))
                .map_err(|e| e.to_string())?;
            println!(
                "restored generation {generation} of {}; the state it replaced is kept as generation {}",
                plan.name, kept.0
            );
            Ok(())
        }
        StateCommand::Rekey {
            new_kek,
            rotate_dek,
            ..
        } => {
            let options = ferrovirt_vmm::rekey::RekeyOptions {
                new_kek: *new_kek,
                rotate_dek: *rotate_dek,
            };
            let report =
                ferrovirt_vmm::rekey::rekey(data_dir, &plan, options).map_err(|e| e.to_string())?;
            print_rekey(
                &plan.name,
                &serde_json::json!({
                    "oldKEK": report.old_kek,
                    "newKEK": report.new_kek,
                    "oldDataKeyID": report.old_data_key,
                    "newDataKeyID": report.new_data_key,
                    "generation": report.generation.0,
                }),
            );
            Ok(())
        }
    }
}
