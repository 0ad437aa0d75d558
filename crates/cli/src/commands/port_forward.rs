//! `ferrovirt port-forward TYPE/NAME[.NAMESPACE] [LOCAL:]REMOTE...`: TCP ports of a running guest
//! on the client's 127.0.0.1, as `virtctl port-forward` offers them (its syntax: `vm/NAME` or
//! `vmi/NAME`, `2222:22`, `22` for the same port on both sides, `0:22` for a free local one).
//! Every accepted connection gets its own `portforward/REMOTE/tcp` WebSocket (the same dialing,
//! TLS and credentials as `ferrovirt console`). It listens on 127.0.0.1 only, never on another
//! address, and runs until Ctrl-C.
//!
//! `--stdio`: one port, relayed between standard input/output and the guest, once (what ssh's
//! `ProxyCommand` runs; `ferrovirt ssh` uses it).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{ClientArgs, ClientError};
use crate::commands::console::{Dialer, Retry, Socket};
use crate::connection::Connection;

/// Arguments of `ferrovirt port-forward`.
#[derive(Debug, Args)]
pub struct PortForwardArgs {
    /// `vm/NAME`, `vmi/NAME` (also `virtualmachine/...`, `virtualmachineinstance/...`), with an
    /// optional `.NAMESPACE` as in virtctl.
    #[arg(value_name = "TYPE/NAME[.NAMESPACE]")]
    pub target: String,
    /// `[LOCAL:]REMOTE`: the guest's port REMOTE on 127.0.0.1:LOCAL (LOCAL 0: a free port).
    #[arg(value_name = "[LOCAL:]REMOTE", required = true)]
    pub ports: Vec<String>,
    /// Relay standard input and output to the one given port instead of listening (for ssh's
    /// ProxyCommand).
    #[arg(long = "stdio")]
    pub stdio: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A VM or VMI named on the command line (`vm/NAME[.NAMESPACE]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestTarget {
    /// `virtualmachines` or `virtualmachineinstances`.
    pub plural: &'static str,
    pub name: String,
    pub namespace: Option<String>,
}

impl GuestTarget {
    /// Parses virtctl's `TYPE/NAME[.NAMESPACE]`.
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        let usage = |why: &str| {
            ClientError::Usage(format!(
                "{text:?}: {why}; name the guest as vm/NAME or vmi/NAME, optionally with .NAMESPACE (vm/testvm.default)"
            ))
        };
        let (kind, rest) = text
            .split_once('/')
            .ok_or_else(|| usage("no TYPE/ before the name"))?;
        let plural = match kind.to_ascii_lowercase().as_str() {
            "vm" | "vms" | "virtualmachine" | "virtualmachines" => "virtualmachines",
            "vmi" | "vmis" | "virtualmachineinstance" | "virtualmachineinstances" => {
                "virtualmachineinstances"
            }
            _ => return Err(usage("the TYPE is neither vm nor vmi")),
        };
        let (name, namespace) = match rest.split_once('.') {
            Some((name, namespace)) => (name, Some(namespace.to_owned())),
            None => (rest, None),
        };
        if name.is_empty() || namespace.as_deref() == Some("") {
            return Err(usage("the name or namespace is empty"));
        }
        Ok(Self {
            plural,
            name: name.to_owned(),
            namespace,
        })
    }

    /// The connection with the target's namespace, when it names one.
    pub fn connection(&self, args: &ClientArgs) -> Result<Connection, ClientError> {
        let mut connection = Connection::from_args(args)?;
        if let Some(namespace) = &self.namespace {
            connection.namespace.clone_from(namespace);
        }
        Ok(connection)
    }

    fn dialer(&self, connection: &Connection, remote: u16) -> Result<Dialer, ClientError> {
        Dialer::for_subresource(
            connection,
            self.plural,
            &self.name,
            &format!("portforward/{remote}/tcp"),
        )
    }
}

/// One `[LOCAL:]REMOTE` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPair {
    pub local: u16,
    pub remote: u16,
}

impl PortPair {
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        let port = |part: &str, zero_ok: bool| {
            part.parse::<u16>()
                .ok()
                .filter(|p| zero_ok || *p > 0)
                .ok_or_else(|| {
                    ClientError::Usage(format!(
                        "{text:?} is not [LOCAL:]REMOTE: ports are numbers 1-65535 (LOCAL may be 0 for a free port), e.g. 2222:22"
                    ))
                })
        };
        match text.split_once(':') {
            Some((local, remote)) => Ok(Self {
                local: port(local, true)?,
                remote: port(remote, false)?,
            }),
            None => {
                let remote = port(text, false)?;
                Ok(Self {
                    local: remote,
                    remote,
                })
            }
        }
    }
}

pub fn run(args: &PortForwardArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ClientError::Usage(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| {
            let result = runtime.block_on(forward(args));
            // The stdin reader may still be blocked in read(): do not wait for it.
            runtime.shutdown_background();
            result
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

async fn forward(args: &PortForwardArgs) -> Result<(), ClientError> {
    let target = GuestTarget::parse(&args.target)?;
    let pairs = args
        .ports
        .iter()
        .map(|p| PortPair::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let connection = target.connection(&args.client)?;
    if args.stdio {
        let [pair] = pairs.as_slice() else {
            return Err(ClientError::Usage(
                "--stdio relays exactly one port: give one REMOTE port".into(),
            ));
        };
        let socket = connect(&target.dialer(&connection, pair.remote)?).await?;
        relay(
            tokio::io::join(tokio::io::stdin(), tokio::io::stdout()),
            socket,
            AtLocalEnd::AwaitGuest,
        )
        .await;
        return Ok(());
    }
    let mut listeners = tokio::task::JoinSet::new();
    for pair in pairs {
        let dialer = std::sync::Arc::new(target.dialer(&connection, pair.remote)?);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", pair.local))
            .await
            .map_err(|e| {
                ClientError::Usage(format!(
                    "cannot listen on 127.0.0.1:{}: {e} (choose another local port, or 0 for a free one)",
                    pair.local
                ))
            })?;
        let local = listener
            .local_addr()
            .map_err(|e| ClientError::Usage(format!("the listener has no address: {e}")))?;
        eprintln!("Forwarding from {local} -> {}", pair.remote);
        let _ = std::io::stderr().flush();
        listeners.spawn(accept_loop(listener, dialer));
    }
    tokio::select! {
        _ = listeners.join_next() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, dialer: std::sync::Arc<Dialer>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                let dialer = dialer.clone();
                tokio::spawn(async move {
                    match connect(&dialer).await {
                        Ok(socket) => relay(client, socket, AtLocalEnd::Close).await,
                        Err(e) => eprintln!("error: cannot forward a connection: {e}"),
                    }
                });
            }
            Err(e) => eprintln!("error: accepting a connection: {e}"),
        }
    }
}

async fn connect(dialer: &Dialer) -> Result<Socket, ClientError> {
    dialer.connect().await.map_err(|retry| match retry {
        Retry::Yes(e) | Retry::No(e) => e,
    })
}

/// What the end of the local input means: WebSocket has no half-close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtLocalEnd {
    /// A local client closed its connection: close the forward.
    Close,
    /// Standard input ended (a request was sent, as `nc` does it): keep relaying the guest's
    /// answer until the guest closes; ssh ends its ProxyCommand itself.
    AwaitGuest,
}

/// Relays bytes between a local stream and a WebSocket of the API (`portforward`, `vnc`) until
/// either closes.
pub(crate) async fn relay(
    local: impl AsyncRead + AsyncWrite + Send,
    socket: Socket,
    at_end: AtLocalEnd,
) {
    let (mut local_rx, mut local_tx) = tokio::io::split(local);
    let (mut to_server, mut from_server) = socket.split();
    let upstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match local_rx.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = buffer[..n].to_vec();
                    if to_server.send(Message::Binary(chunk.into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        if at_end == AtLocalEnd::AwaitGuest {
            std::future::pending::<()>().await;
        }
        let _ = to_server.send(Message::Close(None)).await;
    };
    let downstream = async {
        while let Some(Ok(message)) = from_server.next().await {
            let bytes = match message {
                Message::Binary(bytes) => bytes.to_vec(),
                Message::Text(text) => text.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            if local_tx.write_all(&bytes).await.is_err() {
                break;
            }
            let _ = local_tx.flush().await;
        }
        let _ = local_tx.shutdown().await;
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_virtctl_names_them() {
        let vm = GuestTarget::parse("vm/testvm").unwrap();
        assert_eq!(vm.plural, "virtualmachines");
        assert_eq!(vm.name, "testvm");
        assert_eq!(vm.namespace, None);
        let vmi = GuestTarget::parse("vmi/testvm.prod").unwrap();
        assert_eq!(vmi.plural, "virtualmachineinstances");
        assert_eq!(vmi.namespace.as_deref(), Some("prod"));
        for bad in ["testvm", "pod/x", "vm/", "vm/x."] {
            assert!(GuestTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_pairs_parse_as_virtctl_writes_them() {
        assert_eq!(
            PortPair::parse("2222:22").unwrap(),
            PortPair {
                local: 2222,
                remote: 22
            }
        );
        assert_eq!(
            PortPair::parse("8080").unwrap(),
            PortPair {
                local: 8080,
                remote: 8080
            }
        );
        assert_eq!(PortPair::parse("0:22").unwrap().local, 0);
        for bad in ["22:0", "x", "70000", "1:2:3", ""] {
            assert!(PortPair::parse(bad).is_err(), "{bad}");
        }
    }
}
