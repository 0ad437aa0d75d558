//! `ferrovirt console NAME`: the serial console of a running VirtualMachineInstance over the
//! server's WebSocket (`.../virtualmachineinstances/NAME/console`, subprotocol
//! `plain.kubevirt.io`), as `virtctl console` opens it: `wss://` with the kubeconfig's CA and
//! client certificate, its bearer token in the upgrade request's `Authorization` header, and no
//! `Origin` header (the server refuses browser origins). When stdin is a terminal it is put in raw
//! mode (restored on exit) and `Ctrl-]` detaches; piped stdin is forwarded as it comes and its end
//! leaves the console open for reading. The command ends when the console closes (the guest
//! powered off), on `Ctrl-]`, or on an error. It waits up to `--timeout` minutes for the instance
//! to run.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use rustix::termios::{OptionalActions, Termios, tcgetattr, tcsetattr};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};

use crate::client::{ClientArgs, ClientError, status_error};
use crate::connection::Connection;

/// `Ctrl-]`, the escape key of `virtctl console`.
pub const ESCAPE: u8 = 0x1d;

/// Arguments of `ferrovirt console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The VirtualMachine (its instance has the same name).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Minutes to wait for the instance to run.
    #[arg(long = "timeout", default_value_t = 5)]
    pub timeout: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The terminal's settings before raw mode, restored on drop.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode on a terminal stdin; `None` for pipes and files.
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// Input bytes up to the escape key, and whether it was pressed.
pub fn split_at_escape(bytes: &[u8]) -> (&[u8], bool) {
    match bytes.iter().position(|b| *b == ESCAPE) {
        Some(i) => (&bytes[..i], true),
        None => (bytes, false),
    }
}

/// Where the console of one instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConsoleTarget {
    /// `ws://` or `wss://host:port/apis/...`.
    url: String,
    /// `host:port` to connect to.
    address: String,
    /// The host name or IP the server's certificate must name (no brackets).
    host: String,
    tls: bool,
}

/// The URL of the `subresource` (`console`, `vnc`) of the instance `name` on `server`
/// (`http://` -> `ws://`, `https://` -> `wss://`).
#[cfg(test)]
fn console_target(
    server: &str,
    namespace: &str,
    name: &str,
    subresource: &str,
) -> Result<ConsoleTarget, ClientError> {
    subresource_target(
        server,
        namespace,
        "virtualmachineinstances",
        name,
        subresource,
    )
}

/// The URL of the `subresource` of `plural/name` (`virtualmachines`, `virtualmachineinstances`).
fn subresource_target(
    server: &str,
    namespace: &str,
    plural: &str,
    name: &str,
    subresource: &str,
) -> Result<ConsoleTarget, ClientError> {
    let uri: Uri = server
        .parse()
        .map_err(|e| ClientError::Usage(format!("the server {server:?} is not a URL: {e}")))?;
    let (scheme, default_port, tls) = match uri.scheme_str() {
        Some("http") => ("ws", 80, false),
        Some("https") => ("wss", 443, true),
        _ => {
            return Err(ClientError::Usage(format!(
                "the server {server:?} is not an http:// or https:// URL"
            )));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Usage(format!("the server {server:?} has no host")))?;
    let address = format!("{host}:{}", uri.port_u16().unwrap_or(default_port));
    let prefix = uri.path().trim_end_matches('/');
    let url = format!(
        "{scheme}://{address}{prefix}/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/{plural}/{name}/{subresource}"
    );
    Ok(ConsoleTarget {
        url,
        address,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        tls,
    })
}

pub fn run(args: &ConsoleArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(console(args));
    // The stdin thread may still be blocked in read(): do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

/// A TCP or TLS stream.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

pub(crate) type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Transport>>;

/// How to reach a console WebSocket: where, with which TLS settings and `Authorization` header.
pub(crate) struct Dialer {
    target: ConsoleTarget,
    server: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    authorization: Option<HeaderValue>,
}

impl Dialer {
    /// The dialer of the `subresource` WebSocket (`console`, `vnc`) of the instance `name`.
    pub(crate) fn new(
        connection: &Connection,
        name: &str,
        subresource: &str,
    ) -> Result<Self, ClientError> {
        Self::for_subresource(connection, "virtualmachineinstances", name, subresource)
    }

    /// The dialer of the `subresource` WebSocket of `plural/name` (`portforward/22/tcp` of a
    /// `virtualmachines` or `virtualmachineinstances` object).
    pub(crate) fn for_subresource(
        connection: &Connection,
        plural: &str,
        name: &str,
        subresource: &str,
    ) -> Result<Self, ClientError> {
        let target = subresource_target(
            &connection.server,
            &connection.namespace,
            plural,
            name,
            subresource,
        )?;
        let tls = match connection.tls_credentials()? {
            Some(credentials) if target.tls => {
                let config = credentials
                    .rustls_client_config()
                    .map_err(|e| ClientError::Credentials(e.to_string()))?;
                let server_name = ServerName::try_from(target.host.clone()).map_err(|e| {
                    ClientError::Usage(format!(
                        "the server {} has no usable host name: {e}",
                        connection.server
                    ))
                })?;
                Some((tokio_rustls::TlsConnector::from(config), server_name))
            }
            _ => None,
        };
        let authorization = connection
            .authorization_header()
            .map(|value| {
                HeaderValue::from_str(&value).map_err(|_| {
                    ClientError::Credentials(
                        "the kubeconfig's token has characters no HTTP header can carry".to_owned(),
                    )
                })
            })
            .transpose()?;
        Ok(Dialer {
            target,
            server: connection.server.clone(),
            tls,
            authorization,
        })
    }

    pub(crate) async fn connect(&self) -> Result<Socket, Retry> {
        let transport = |detail: String| {
            Retry::No(ClientError::Transport {
                server: self.server.clone(),
                detail,
            })
        };
        let url = &self.target.url;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Retry::No(ClientError::Usage(format!("console URL {url}: {e}"))))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("plain.kubevirt.io"),
        );
        if let Some(value) = &self.authorization {
            request.headers_mut().insert("Authorization", value.clone());
        }
        let tcp = tokio::net::TcpStream::connect(&self.target.address)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let stream: Box<dyn Transport> = match &self.tls {
            Some((connector, server_name)) => Box::new(
                connector
                    .connect(server_name.clone(), tcp)
                    .await
                    .map_err(|e| {
                        Retry::No(ClientError::Tls {
                            server: self.server.clone(),
                            detail: e.to_string(),
                        })
                    })?,
            ),
            None => Box::new(tcp),
        };
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let code = response.status().as_u16();
                let body = response.body().clone().unwrap_or_default();
                let error = status_error(code, &body);
                // Not running yet (no instance, still starting): worth waiting for.
                let waiting = matches!(code, 404 | 503)
                    || (code == 400 && String::from_utf8_lossy(&body).contains("is not running"));
                Err(if waiting {
                    Retry::Yes(error)
                } else {
                    Retry::No(error)
                })
            }
            Err(e) => Err(transport(format!("WebSocket handshake: {e}"))),
        }
    }
}

/// A failed connect: worth retrying (the instance is not running yet) or not.
pub(crate) enum Retry {
    Yes(ClientError),
    No(ClientError),
}

async fn console(args: &ConsoleArgs) -> Result<(), ClientError> {
    let dialer = Dialer::new(&Connection::from_args(&args.client)?, &args.name, "console")?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout.saturating_mul(60));
    let mut said_waiting = false;
    let socket = loop {
        match dialer.connect().await {
            Ok(socket) => break socket,
            Err(Retry::No(e)) => return Err(e),
            Err(Retry::Yes(e)) => {
                if Instant::now() > deadline {
                    return Err(e);
                }
                if !said_waiting {
                    eprintln!(
                        "Waiting for the VirtualMachineInstance {} to run ({e})",
                        args.name
                    );
                    said_waiting = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    eprintln!(
        "Successfully connected to {} console. The escape sequence is ^]",
        args.name
    );
    let raw_mode = RawMode::enter();
    let result = session(socket).await;
    drop(raw_mode);
    if std::io::stdout().is_terminal() {
        eprintln!();
    }
    result
}

async fn session(socket: Socket) -> Result<(), ClientError> {
    let (mut to_server, mut from_server) = socket.split();
    let (input_tx, mut input_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = [0u8; 4096];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if input_tx.blocking_send(buffer[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut input_open = true;
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            message = from_server.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    let _ = stdout.write_all(&bytes).and_then(|()| stdout.flush());
                }
                Some(Ok(Message::Text(text))) => {
                    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
                }
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(ClientError::Transport {
                        server: String::new(),
                        detail: format!("the console connection broke: {e}"),
                    });
                }
            },
            input = input_rx.recv(), if input_open => match input {
                Some(bytes) => {
                    let (before, escaped) = split_at_escape(&bytes);
                    if !before.is_empty()
                        && to_server.send(Message::Binary(before.to_vec().into())).await.is_err()
                    {
                        return Ok(());
                    }
                    if escaped {
                        let _ = to_server.send(Message::Close(None)).await;
                        return Ok(());
                    }
                }
                None => input_open = false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_detaches() {
        assert_eq!(split_at_escape(b"ls\r"), (&b"ls\r"[..], false));
        assert_eq!(split_at_escape(b"ab\x1dcd"), (&b"ab"[..], true));
    }

    #[test]
    fn console_urls() {
        let target = console_target("http://127.0.0.1:8080", "default", "demo", "console").unwrap();
        assert_eq!(
            target.url,
            "ws://127.0.0.1:8080/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/demo/console"
        );
        assert_eq!(target.address, "127.0.0.1:8080");
        assert!(!target.tls);
        assert_eq!(
            console_target("http://localhost", "d", "v", "console")
                .unwrap()
                .address,
            "localhost:80"
        );
        let secure = console_target("https://[::1]:8443/", "d", "v", "vnc").unwrap();
        assert!(secure.tls);
        assert_eq!(secure.address, "[::1]:8443");
        assert_eq!(secure.host, "::1");
        assert!(secure.url.starts_with("wss://[::1]:8443/apis/"));
        assert!(secure.url.ends_with("/virtualmachineinstances/v/vnc"));
        assert_eq!(
            console_target("https://vm-host.example", "d", "v", "console")
                .unwrap()
                .address,
            "vm-host.example:443"
        );
        assert!(console_target("ftp://x:1", "d", "v", "console").is_err());
    }
}
