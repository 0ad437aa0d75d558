//! `ferrovirt vnc NAME`: the graphical console of a running VirtualMachineInstance for a local
//! VNC viewer, as `virtctl vnc --proxy-only` offers it: a TCP listener on 127.0.0.1 (a free port
//! unless `--port`), its port printed as `{"port":N}` on standard output with how to connect on
//! standard error, and every viewer that connects relayed over its own `vnc` WebSocket (the same
//! dialing, TLS and credentials as `ferrovirt console`). It runs until Ctrl-C.
//!
//! `ferrovirt vnc screenshot NAME -f FILE`: the PNG of the screen (`vnc/screenshot`), as
//! `virtctl vnc screenshot` saves it (`-f -`: standard output).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use crate::client::{Client, ClientArgs, ClientError, status_error};
use crate::commands::console::{Dialer, Retry};
use crate::commands::port_forward::{AtLocalEnd, relay};
use crate::connection::Connection;

/// The first bytes of a PNG file.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Arguments of `ferrovirt vnc`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct VncArgs {
    #[command(subcommand)]
    pub command: Option<VncCommand>,
    /// The VirtualMachine (its instance has the same name).
    #[arg(value_name = "NAME", required = true)]
    pub name: Option<String>,
    /// The local port to listen on (127.0.0.1 only; 0: a free port).
    #[arg(long = "port", default_value_t = 0)]
    pub port: u16,
    /// Minutes to wait for the instance to run.
    #[arg(long = "timeout", default_value_t = 5)]
    pub timeout: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `ferrovirt vnc` subcommands.
#[derive(Debug, Subcommand)]
pub enum VncCommand {
    /// Save a PNG of the screen of a running VirtualMachine (virtctl vnc screenshot).
    Screenshot(ScreenshotArgs),
}

/// Arguments of `ferrovirt vnc screenshot`.
#[derive(Debug, Args)]
pub struct ScreenshotArgs {
    /// The VirtualMachine (its instance has the same name).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where to write the PNG (`-`: standard output).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(args: &VncArgs) -> ExitCode {
    let result = match (&args.command, &args.name) {
        (Some(VncCommand::Screenshot(screenshot_args)), _) => screenshot(screenshot_args),
        (None, Some(name)) => proxy_blocking(args, name),
        (None, None) => Err(ClientError::Usage(
            "name the VirtualMachine: ferrovirt vnc NAME, or ferrovirt vnc screenshot NAME -f FILE"
                .into(),
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

fn screenshot(args: &ScreenshotArgs) -> Result<(), ClientError> {
    let client = Client::from_args(&args.client)?;
    let path = format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{}/virtualmachineinstances/{}/vnc/screenshot",
        client.namespace(),
        args.name
    );
    let (code, body) = client.raw("GET", &path, "image/png", None)?;
    if !(200..300).contains(&code) {
        return Err(status_error(code, &body));
    }
    if !body.starts_with(PNG_SIGNATURE) {
        return Err(ClientError::Decode {
            what: format!("GET {path}"),
            detail: "the answer is not a PNG image".into(),
        });
    }
    let written = if args.file.as_os_str() == "-" {
        std::io::stdout()
            .write_all(&body)
            .and_then(|()| std::io::stdout().flush())
    } else {
        std::fs::write(&args.file, &body)
    };
    written.map_err(|e| {
        ClientError::Usage(format!(
            "cannot write the screenshot to {}: {e}",
            args.file.display()
        ))
    })
}

fn proxy_blocking(args: &VncArgs, name: &str) -> Result<(), ClientError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ClientError::Usage(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(proxy(args, name))
}

/// Connects once (waiting up to `--timeout` for the instance to run), so that a wrong name or
/// missing permission is reported before any viewer connects.
async fn wait_until_reachable(
    dialer: &Dialer,
    name: &str,
    timeout: u64,
) -> Result<(), ClientError> {
    let deadline = Instant::now() + Duration::from_secs(timeout.saturating_mul(60));
    let mut said_waiting = false;
    loop {
        match dialer.connect().await {
            Ok(mut socket) => {
                let _ = socket.close(None).await;
                return Ok(());
            }
            Err(Retry::No(e)) => return Err(e),
            Err(Retry::Yes(e)) => {
                if Instant::now() > deadline {
                    return Err(e);
                }
                if !said_waiting {
                    eprintln!("Waiting for the VirtualMachineInstance {name} to run ({e})");
                    said_waiting = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn proxy(args: &VncArgs, name: &str) -> Result<(), ClientError> {
    let dialer = std::sync::Arc::new(Dialer::new(
        &Connection::from_args(&args.client)?,
        name,
        "vnc",
    )?);
    wait_until_reachable(&dialer, name, args.timeout).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| {
            ClientError::Usage(format!(
                "cannot listen on 127.0.0.1:{}: {e} (choose another --port, or 0 for a free one)",
                args.port
            ))
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| ClientError::Usage(format!("the listener has no address: {e}")))?
        .port();
    println!("{{\"port\":{port}}}");
    let _ = std::io::stdout().flush();
    eprintln!(
        "VNC proxy for {name} on 127.0.0.1:{port}: connect a VNC viewer there (e.g. \
         `remote-viewer vnc://127.0.0.1:{port}`, `vncviewer 127.0.0.1::{port}`); Ctrl-C ends it."
    );
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((viewer, _)) => {
                    let dialer = dialer.clone();
                    tokio::spawn(async move {
                        match dialer.connect().await {
                            Ok(socket) => relay(viewer, socket, AtLocalEnd::Close).await,
                            Err(Retry::Yes(e) | Retry::No(e)) => {
                                eprintln!("error: cannot open the VNC console: {e}");
                            }
                        }
                    });
                }
                Err(e) => eprintln!("error: accepting a viewer: {e}"),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        vnc: VncArgs,
    }

    #[test]
    fn proxy_and_screenshot_parse() {
        let proxy = Cli::try_parse_from(["vnc", "demo", "--port", "5901"]).unwrap();
        assert_eq!(proxy.vnc.name.as_deref(), Some("demo"));
        assert_eq!(proxy.vnc.port, 5901);
        assert!(proxy.vnc.command.is_none());
        let shot = Cli::try_parse_from(["vnc", "screenshot", "demo", "-f", "out.png"]).unwrap();
        match shot.vnc.command {
            Some(VncCommand::Screenshot(args)) => {
                assert_eq!(args.name, "demo");
                assert_eq!(args.file, PathBuf::from("out.png"));
            }
            None => panic!("no screenshot subcommand"),
        }
        assert!(Cli::try_parse_from(["vnc"]).is_err());
        assert!(Cli::try_parse_from(["vnc", "screenshot", "demo"]).is_err());
    }
}
