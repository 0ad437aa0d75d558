//! `ferrovirt migrate NAME --to KUBECONFIG [--namespace NS]`: a live migration of a running VM to
//! another ferrovirt host with KubeVirt's decentralized live-migration objects. On the source it
//! writes a Secret with the destination's kubeconfig (one per destination host, reused:
//! `ferrovirt_resources::migration::destination_secret`) and a VirtualMachineInstanceMigration
//! with `spec.sendTo` naming it and asking the source server to prepare the destination
//! (`migration.ferrovirt.io/prepare-destination`: the server creates the VM with `runStrategy:
//! WaitAsReceiver` and the VMIM with `spec.receive` there, as the web UI's "Migrate to host..."
//! has it do). Then it follows the source's VMIM, printing the progress (memory remaining, dirty
//! rate, expected downtime), and at the end the total time and the downtime measured from the
//! source's vCPU stop to the destination's resume.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use ferrovirt_resources::migration::{
    WAIT_AS_RECEIVER, destination_secret, destination_secret_name, receiving_migration_name,
    sending_migration,
};
use ferrovirt_resources::{SECRETS, VMIMS, VMIS, VMS};
use serde_json::Value;

use crate::client::{Client, ClientArgs, ClientError};
use crate::resource::{collection_path, item_path};

/// Arguments of `ferrovirt migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The running VirtualMachine to move.
    #[arg(value_name = "NAME")]
    pub vm: String,
    /// The destination server's kubeconfig (its CA and a user allowed to create VMs and
    /// VirtualMachineInstanceMigrations there and to read its VirtualMachineInstances, which
    /// this server does to learn that the VM runs there before its own copy ends; certificates
    /// embedded as `-data`, since a copy of it is kept in a Secret on this server).
    #[arg(long = "to", value_name = "KUBECONFIG")]
    pub to: PathBuf,
    /// The destination kubeconfig's context (default: its current-context).
    #[arg(long = "to-context", value_name = "NAME")]
    pub to_context: Option<String>,
    /// How long to wait for the migration.
    #[arg(long, default_value = "30m")]
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

/// One progress line of the source's migration.
pub fn progress_line(vmim: &Value) -> String {
    let phase = vmim
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    let state = vmim
        .pointer("/status/migrationState")
        .cloned()
        .unwrap_or(Value::Null);
    let num = |key: &str| state.get(key).and_then(Value::as_u64);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut line = phase.to_owned();
    if phase == "Running" {
        if let Some(disk) = num("diskRemainingBytes").filter(|b| *b > 0) {
            line.push_str(&format!(": disks {:.1} MiB to copy", mib(disk)));
        } else if let Some(memory) = num("memoryRemainingBytes") {
            line.push_str(&format!(
                ": memory remaining {:.1} MiB, dirty rate {:.1} MiB/s",
                mib(memory),
                mib(num("dirtyRateBytesPerSecond").unwrap_or(0))
            ));
            if let Some(ms) = num("expectedDowntimeMs") {
                line.push_str(&format!(", expected downtime {ms} ms"));
            }
        }
    }
    line
}

/// What the two migrations measured: total, and the downtime from the source's vCPU stop to the
/// destination's resume (both hosts' clocks), with QEMU's own figure.
pub fn summary(source: &Value, target: Option<&Value>) -> String {
    let state = |o: &Value, key: &str| {
        o.pointer(&format!("/status/migrationState/{key}"))
            .and_then(Value::as_u64)
    };
    let mut line = String::new();
    if let Some(total) = state(source, "totalMs") {
        line.push_str(&format!("total {:.1} s", total as f64 / 1000.0));
    }
    let stopped = state(source, "sourceStoppedUnixMs");
    let resumed = target.and_then(|t| state(t, "targetResumedUnixMs"));
    if let (Some(stopped), Some(resumed)) = (stopped, resumed) {
        line.push_str(&format!(
            ", downtime {} ms (source stopped -> destination running)",
            resumed.saturating_sub(stopped)
        ));
    }
    if let Some(qemu) = state(source, "downtimeMs") {
        line.push_str(&format!(", QEMU's downtime {qemu} ms"));
    }
    line
}

fn migrate(args: &MigrateArgs) -> Result<Result<String, String>, ClientError> {
    let limit = timeout(&args.timeout)?;
    let source = Client::from_args(&args.client)?;
    let ns = source.namespace().to_owned();
    let dest_args = ClientArgs {
        kubeconfig: Some(args.to.clone()),
        context: args.to_context.clone(),
        server: None,
        namespace: Some(ns.clone()),
    };
    let connection = crate::connection::Connection::from_args(&dest_args)?;
    let dest = Client::new(&connection)?;
    let name = &args.vm;
    // The VM first, for a clear answer when there is none.
    source.get(&item_path(&VMS, &ns, name))?;
    let vmi = match source.get(&item_path(&VMIS, &ns, name)) {
        Ok(vmi) => vmi,
        Err(e) if e.is_not_found() => Value::Null,
        Err(e) => return Err(e),
    };
    if vmi.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return Ok(Err(format!(
            "VirtualMachine {ns}/{name} is not running; only a running VM migrates live (start it, or export it with `ferrovirt vmexport`)"
        )));
    }
    let kubeconfig = std::fs::read_to_string(&args.to)
        .map_err(|e| ClientError::Usage(format!("--to {}: {e}", args.to.display())))?;
    // A quick answer for what the source server would find anyway: a VM of that name on the
    // destination that does not wait for a migration is never touched.
    match dest.get(&item_path(&VMS, &ns, name)) {
        Ok(existing)
            if existing
                .pointer("/spec/runStrategy")
                .and_then(Value::as_str)
                != Some(WAIT_AS_RECEIVER) =>
        {
            return Ok(Err(format!(
                "the destination {} has a VirtualMachine {ns}/{name} already; delete it there or migrate into a namespace that has none",
                connection.server
            )));
        }
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let migration_id = format!("{name}-{stamp}");
    // The source: the destination's kubeconfig (its host's Secret, replaced if it exists) and
    // the sending migration, which has the source server create the receiver there.
    let secret = destination_secret_name(&connection.server);
    let secret_object = destination_secret(&ns, &connection.server, &kubeconfig);
    let secret_path = item_path(&SECRETS, &ns, &secret);
    match source.get(&secret_path) {
        Ok(existing) => {
            let mut replaced = secret_object;
            replaced["metadata"]["resourceVersion"] = existing
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            source.send_json("PUT", &secret_path, "application/json", &replaced)?;
        }
        Err(e) if e.is_not_found() => {
            source.send_json(
                "POST",
                &collection_path(&SECRETS, Some(&ns)),
                "application/json",
                &secret_object,
            )?;
        }
        Err(e) => return Err(e),
    }
    let sending = sending_migration(&ns, name, &migration_id, &connection.server, &secret);
    let source_name = sending["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let target_name = receiving_migration_name(&migration_id);
    source.send_json(
        "POST",
        &collection_path(&VMIMS, Some(&ns)),
        "application/json",
        &sending,
    )?;
    eprintln!("source: VirtualMachineInstanceMigration {source_name}");
    eprintln!(
        "destination {}: the source server has VirtualMachine {name} wait there as a receiver, with VirtualMachineInstanceMigration {target_name}",
        connection.server
    );
    let started = Instant::now();
    let mut last = String::new();
    let path = item_path(&VMIMS, &ns, &source_name);
    loop {
        let vmim = source.get(&path)?;
        let line = progress_line(&vmim);
        if line != last {
            eprintln!("  {:>6.1}s  {line}", started.elapsed().as_secs_f64());
            last = line;
        }
        match vmim.pointer("/status/phase").and_then(Value::as_str) {
            Some("Succeeded") => {
                let target = dest.get(&item_path(&VMIMS, &ns, &target_name)).ok();
                return Ok(Ok(format!(
                    "VirtualMachine {ns}/{name} migrated to {}: {}",
                    connection.server,
                    summary(&vmim, target.as_ref())
                )));
            }
            Some("Failed") => {
                let reason = vmim
                    .pointer("/status/migrationState/failureReason")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason recorded");
                return Ok(Err(format!(
                    "the migration failed: {reason} (`kubectl get events` on both servers tells more)"
                )));
            }
            _ => {}
        }
        if started.elapsed() > limit {
            return Ok(Err(format!(
                "still not done after {}s; it goes on in the servers: watch it with `kubectl get vmim {source_name} -w`",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `ferrovirt migrate`.
pub fn run(args: &MigrateArgs) -> ExitCode {
    match migrate(args) {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn progress_and_summary_lines() {
        let running = json!({"status": {"phase": "Running", "migrationState": {
            "memoryRemainingBytes": 10 * 1024 * 1024, "dirtyRateBytesPerSecond": 2 * 1024 * 1024,
            "expectedDowntimeMs": 40, "diskRemainingBytes": 0}}});
        assert_eq!(
            progress_line(&running),
            "Running: memory remaining 10.0 MiB, dirty rate 2.0 MiB/s, expected downtime 40 ms"
        );
        let mirroring = json!({"status": {"phase": "Running", "migrationState": {
            "diskRemainingBytes": 3 * 1024 * 1024}}});
        assert_eq!(progress_line(&mirroring), "Running: disks 3.0 MiB to copy");
        let done = json!({"status": {"phase": "Succeeded", "migrationState": {
            "totalMs": 9500, "downtimeMs": 310, "sourceStoppedUnixMs": 1000}}});
        let target = json!({"status": {"migrationState": {"targetResumedUnixMs": 1450}}});
        assert_eq!(
            summary(&done, Some(&target)),
            "total 9.5 s, downtime 450 ms (source stopped -> destination running), QEMU's downtime 310 ms"
        );
        assert_eq!(summary(&done, None), "total 9.5 s, QEMU's downtime 310 ms");
    }
}
