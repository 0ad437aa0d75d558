//! `ferrovirt logs NAME [-f] [--tail N] [--all-runs]`: the serial console output of a
//! VirtualMachine's current or last run (every run with `--all-runs`), as `kubectl logs` prints a
//! container's output. The server reads it from the VM's serial log
//! (`GET .../virtualmachines/NAME/serial-log`); `-f` keeps streaming until the VM's instance ends.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Args;

use crate::client::{Client, ClientArgs, ClientError, with_query};

/// Arguments of `ferrovirt logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The VirtualMachine.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Keep streaming new output until the VM's instance ends.
    #[arg(short = 'f', long = "follow")]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long = "tail", value_name = "N")]
    pub tail: Option<u64>,
    /// Every run of the VM, not only the current or last one.
    #[arg(long = "all-runs")]
    pub all_runs: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The serial-log path of a VM.
pub fn serial_log_path(namespace: &str, name: &str) -> String {
    format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}/serial-log"
    )
}

pub fn run(args: &LogsArgs) -> ExitCode {
    match logs(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

fn logs(args: &LogsArgs) -> Result<(), ClientError> {
    let client = Client::from_args(&args.client)?;
    let tail = args.tail.map(|t| t.to_string());
    let mut query = Vec::new();
    if args.all_runs {
        query.push(("allRuns", "true"));
    }
    if args.follow {
        query.push(("follow", "true"));
    }
    if let Some(tail) = &tail {
        query.push(("tailLines", tail.as_str()));
    }
    let path = with_query(&serial_log_path(client.namespace(), &args.name), &query);
    let mut reader = client.stream(&path, "text/plain, application/json")?;
    let mut out = std::io::stdout().lock();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if out
                    .write_all(&buffer[..n])
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    // stdout closed (e.g. `| head`): stop quietly, as kubectl does.
                    break;
                }
            }
            Err(e) => {
                return Err(ClientError::Transport {
                    server: client.base().to_owned(),
                    detail: format!("reading the log stream: {e}"),
                });
            }
        }
    }
    Ok(())
}
