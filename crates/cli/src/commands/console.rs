//! `ferrovirt console NAME`: the serial console of a running VirtualMachineInstance over the
//! server's WebSocket (`.../virtualmachineinstances/NAME/console`, subprotocol
//! `plain.kubevirt.io`), as `virtctl console` opens it. When stdin is a terminal it is put in raw
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
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};

use crate::client::{ClientArgs, ClientError, status_error};

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

/// `ws://host:port/apis/...` and `host:port` of the console of `name`.
fn console_target(
    server: &str,
    namespace: &str,
    name: &str,
) -> Result<(String, String), ClientError> {
    let uri: Uri = server
        .parse()
        .map_err(|e| ClientError::Usage(format!("--server {server:?} is not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(ClientError::Usage(format!(
            "the console needs a plain http:// server URL (got {server})"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Usage(format!("--server {server:?} has no host")))?;
    let address = format!("{host}:{}", uri.port_u16().unwrap_or(80));
    let prefix = uri.path().trim_end_matches('/');
    let url = format!(
        "ws://{address}{prefix}/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances/{name}/console"
    );
    Ok((url, address))
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

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(url: &str, address: &str, server: &str) -> Result<Socket, Retry> {
    let transport = |detail: String| {
        Retry::No(ClientError::Transport {
            server: server.to_owned(),
            detail,
        })
    };
    let mut request = url
        .into_client_request()
        .map_err(|e| Retry::No(ClientError::Usage(format!("console URL {url}: {e}"))))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("plain.kubevirt.io"),
    );
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| transport(e.to_string()))?;
    match tokio_tungstenite::client_async(request, tcp).await {
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

enum Retry {
    Yes(ClientError),
    No(ClientError),
}

async fn console(args: &ConsoleArgs) -> Result<(), ClientError> {
    let (url, address) = console_target(&args.client.server, &args.client.namespace, &args.name)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout.saturating_mul(60));
    let mut said_waiting = false;
    let socket = loop {
        match connect(&url, &address, &args.client.server).await {
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
        let (url, address) = console_target("http://127.0.0.1:8080", "default", "demo").unwrap();
        assert_eq!(
            url,
            "ws://127.0.0.1:8080/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/demo/console"
        );
        assert_eq!(address, "127.0.0.1:8080");
        assert_eq!(
            console_target("http://localhost", "d", "v").unwrap().1,
            "localhost:80"
        );
        assert!(console_target("https://x:1", "d", "v").is_err());
    }
}
