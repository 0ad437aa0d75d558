//! A `ferrovirt serve` child on a free loopback port with a temporary data dir, the real kubectl
//! pointed at it with the admin kubeconfig the server wrote (`--kubeconfig <data>/admin.kubeconfig`,
//! private HOME), and a tiny HTTPS/1.1 + WebSocket client for what kubectl cannot send (concurrent
//! writers, hostile bodies, the console): TLS with the server's CA, the admin bearer token.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::rustls;

/// Test hosts as network namespaces (`Server::start_in`).
#[path = "netns.rs"]
pub mod netns;

pub const BIN: &str = env!("CARGO_BIN_EXE_ferrovirt");
pub const KUBECTL: &str = "/usr/bin/kubectl";

/// A running server.
pub struct Server {
    /// The address it listens on: 127.0.0.1, or its network namespace's address
    /// ([`Server::start_in`]).
    pub host: IpAddr,
    pub port: u16,
    /// The network namespace it runs in (`None`: the test's own).
    pub netns: Option<String>,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub controllers: bool,
    /// More `serve` flags (`--token-auth-file ...`).
    pub extra_args: Vec<String>,
    /// More environment for the next `spawn` (e.g. `FERROVIRT_FAILPOINTS`).
    pub env: Vec<(String, String)>,
}

/// How the test client reaches the server: the port, the TLS trust (the server's CA from the
/// admin kubeconfig) and the bearer token (`None`: anonymous).
#[derive(Clone)]
pub struct Endpoint {
    pub host: IpAddr,
    pub port: u16,
    pub tls: Arc<rustls::ClientConfig>,
    pub token: Option<String>,
}

/// The TLS stream of the test client.
pub type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

impl Endpoint {
    /// The endpoint of a data dir's admin kubeconfig (`None` until the server wrote it).
    pub fn from_admin_kubeconfig(data_dir: &Path, port: u16) -> Option<Self> {
        Self::from_admin_kubeconfig_at(data_dir, IpAddr::from([127, 0, 0, 1]), port)
    }

    /// The same for a server listening on `host`.
    pub fn from_admin_kubeconfig_at(data_dir: &Path, host: IpAddr, port: u16) -> Option<Self> {
        let path = data_dir.join("admin.kubeconfig");
        let config = ferrovirt_auth::kubeconfig::Kubeconfig::load(&path).ok()?;
        let credentials = config.resolve(None).ok()?;
        Some(Endpoint {
            host,
            port,
            tls: credentials.rustls_client_config().ok()?,
            token: credentials.token.clone(),
        })
    }

    /// The same server as another user (`None`: no credentials).
    pub fn with_token(&self, token: Option<&str>) -> Self {
        Endpoint {
            token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    /// `host:port` as a `Host` header says it.
    pub fn authority(&self) -> String {
        std::net::SocketAddr::new(self.host, self.port).to_string()
    }

    /// A TLS connection to the server (the certificate verified for its address).
    pub fn connect(&self) -> std::io::Result<Stream> {
        let tcp = TcpStream::connect((self.host, self.port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        let name = rustls::pki_types::ServerName::IpAddress(self.host.into());
        let connection =
            rustls::ClientConnection::new(self.tls.clone(), name).map_err(std::io::Error::other)?;
        Ok(rustls::StreamOwned::new(connection, tcp))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// The admin kubeconfig `serve` wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("admin.kubeconfig")
    }

    /// The admin token `serve` created.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// How the test client reaches this server as the admin.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::from_admin_kubeconfig_at(&self.data_dir(), self.host, self.port)
            .expect("the server wrote a usable admin.kubeconfig")
    }

    /// Runs the `ferrovirt` CLI against this server (KUBECONFIG: the admin kubeconfig).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_cmd(args).output().unwrap()
    }

    pub fn cli_cmd(&self, args: &[&str]) -> Command {
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", &home)
            .env_remove("FERROVIRT_SERVER");
        cmd
    }

    /// Runs the `ferrovirt` CLI against this server; it must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "ferrovirt {args:?} failed: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Starts a server; `controllers: false` serves the API alone (no engine).
    pub fn start(controllers: bool) -> Self {
        Self::start_with(controllers, &[])
    }

    /// Starts a server with more `serve` flags.
    pub fn start_with(controllers: bool, extra_args: &[&str]) -> Self {
        Self::start_at(
            None,
            IpAddr::from([127, 0, 0, 1]),
            free_port(),
            controllers,
            extra_args,
        )
    }

    /// Starts a server inside a test host's network namespace (`super::netns`), listening on
    /// its address: reachable from the test process and from the other hosts of its network,
    /// with the same helpers (kubectl, CLI, HTTP) as a loopback server.
    pub fn start_in(host: &netns::NetHost, controllers: bool, extra_args: &[&str]) -> Self {
        Self::start_at(
            Some(host.name.clone()),
            host.ip,
            host.free_port(),
            controllers,
            extra_args,
        )
    }

    fn start_at(
        netns: Option<String>,
        host: IpAddr,
        port: u16,
        controllers: bool,
        extra_args: &[&str],
    ) -> Self {
        // A short path keeps the runtime dirs' unix sockets under <data>/run (sun_path holds 107
        // bytes; deeper data dirs fall back to the temp dir).
        let dir = tempfile::Builder::new()
            .prefix("fv")
            .tempdir_in("/tmp")
            .unwrap();
        let mut server = Server {
            host,
            port,
            netns,
            dir,
            child: None,
            controllers,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
        };
        server.spawn();
        server
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The backend-storage volume directory of a VM (its `persistent-state-for` PVC's bound
    /// volume under the data dir).
    pub fn state_volume_dir(&self, vm: &str) -> PathBuf {
        let out = self.kubectl_ok(&[
            "get",
            "pvc",
            "-l",
            &format!("persistent-state-for={vm}"),
            "-o",
            "json",
        ]);
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        let volume = list["items"][0]["spec"]["volumeName"]
            .as_str()
            .unwrap_or_else(|| panic!("no bound backend-storage PVC for {vm}: {out}"));
        self.data_dir().join("volumes").join(volume)
    }

    /// (Re)starts the serve process on the same port and data dir.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .unwrap();
        let mut cmd = match &self.netns {
            Some(netns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", netns, BIN]);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.args(["serve", "--data-dir"])
            .arg(self.data_dir())
            .args([
                "--listen",
                &std::net::SocketAddr::new(self.host, self.port).to_string(),
            ])
            .args(&self.extra_args)
            // No TPM pool unless a test asks for one: each pool fill costs ~1 s of CPU, and
            // the suite starts hundreds of servers on two cores (tests/tpm_pool.rs tests it).
            .args(
                (!self.extra_args.iter().any(|a| a == "--tpm-pool-size"))
                    .then_some(["--tpm-pool-size", "0"])
                    .into_iter()
                    .flatten(),
            )
            .env("FERROVIRT_ACCEL", "tcg")
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log);
        if !self.controllers {
            cmd.env("FERROVIRT_NO_CONTROLLERS", "1");
        }
        self.child = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(endpoint) =
                Endpoint::from_admin_kubeconfig_at(&self.data_dir(), self.host, self.port)
                && let Ok((200, _)) = http_request(&endpoint, "GET", "/version", None, &[])
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("ferrovirt serve did not come up; log:\n{}", self.log());
    }

    /// SIGTERM, and wait for the process to end.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not exit within 10 s of SIGTERM");
        }
    }

    /// The serve process's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `timeout` for the serve process to end by itself (a crash); true when it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.as_mut().map(|c| c.try_wait()) {
                None => return true,
                Some(Ok(Some(_))) => {
                    self.child = None;
                    return true;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        false
    }

    /// SIGKILL, as a crash or a power cut ends it (no shutdown path runs).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// The server log in short, for a failure message (CI shows the start of a failure's output):
    /// its warnings and errors first, then its last lines.
    pub fn log_digest(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let alarms: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        format!(
            "warnings and errors ({} of {}):\n{}\nlast {} of {} lines:\n{}",
            alarms.len().min(30),
            alarms.len(),
            alarms[alarms.len().saturating_sub(30)..].join("\n"),
            tail.len(),
            lines.len(),
            tail.join("\n")
        )
    }

    pub fn url(&self) -> String {
        format!(
            "https://{}",
            std::net::SocketAddr::new(self.host, self.port)
        )
    }

    /// Runs kubectl against this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().unwrap()
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut cmd = ferrovirt_testkit::host_tool("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .env("HOME", &home)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST");
        cmd
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Polls `check` (every 200 ms) until it returns Some or the timeout passes.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check() {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; server log, in short:\n{}",
                    self.log_digest()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// One HTTP/1.1 request: (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        self.try_request(method, path, content_type, body).unwrap()
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        http_request(&self.endpoint(), method, path, content_type, body)
    }

    pub fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let (code, out) = self.request(method, path, Some("application/json"), &bytes);
        (
            code,
            serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A VM's QEMU, swtpm and passt run in process groups of their own (they outlive a manager
        // by design): end this server's, so that a failed test leaves nothing running on a
        // deleted data dir to slow down the tests after it.
        let mut dirs = vec![
            self.dir.path().to_path_buf(),
            ferrovirt_vmm::engine::runtime_base(&self.data_dir()),
        ];
        let mut args = self.extra_args.iter();
        while let Some(arg) = args.next() {
            if arg == "--runtime-dir"
                && let Some(dir) = args.next()
            {
                dirs.push(PathBuf::from(dir));
            }
        }
        end_processes_naming(&dirs);
    }
}

/// SIGKILL to every process (but this one) whose command line names one of `dirs`, until none is
/// left (5 s at most).
fn end_processes_naming(dirs: &[PathBuf]) {
    let needles: Vec<String> = dirs
        .iter()
        .filter_map(|d| d.to_str())
        .map(|d| format!("{}/", d.trim_end_matches('/')))
        .collect();
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        let left: Vec<u32> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != me)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                    let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
                    needles.iter().any(|n| cmdline.contains(n.as_str()))
                })
            })
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in left {
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal HTTPS/1.1 client (Connection: close; chunked bodies decoded), with the endpoint's
/// bearer token.
pub fn http_request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let headers: Vec<(&str, &str)> = content_type
        .map(|ct| ("Content-Type", ct))
        .into_iter()
        .collect();
    send(endpoint, method, path, &headers, body).map(|(code, _, body)| (code, body))
}

/// One request with extra headers (a `Host` given here replaces `127.0.0.1:<port>`): (status,
/// response head, body).
pub fn send(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    send_declaring(endpoint, method, path, headers, body.len(), body)
}

/// Like [`send`], but the request head declares `declared_len` body bytes while only `body` is
/// sent (then the response is read). For a body over the server's limit: the server answers 413
/// once it has read one byte too many; sending no more than that keeps unread bytes out of its
/// socket, whose close would otherwise reset the connection and drop the answer (TLS makes that
/// race likely).
pub fn send_declaring(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    declared_len: usize,
    body: &[u8],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut stream = endpoint.connect()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {declared_len}\r\n"
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {}\r\n", endpoint.authority()));
    }
    if let Some(token) = &endpoint.token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // The server may answer (413) before reading everything: ignore a reset while writing.
    let _ = stream.write_all(body);
    let _ = stream.flush();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP response head"))?;
    let head = String::from_utf8_lossy(&response[..text_end]).to_string();
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let mut payload = response[text_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        payload = dechunk(&payload);
    }
    Ok((code, head, payload))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = pos + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// Opens a WebSocket (bearer token in the header, `extra` headers such as `Origin`) and returns
/// the TLS stream after the 101 response; anything else is an error with the response head.
pub fn websocket_with(
    endpoint: &Endpoint,
    path: &str,
    extra: &[(&str, &str)],
) -> std::io::Result<Stream> {
    let mut stream = endpoint.connect()?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: plain.kubevirt.io\r\n",
        endpoint.authority()
    );
    if let Some(token) = &endpoint.token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (k, v) in extra {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(std::io::Error::other(format!("no upgrade: {head}")));
    }
    Ok(stream)
}

/// Opens a WebSocket as the endpoint's user.
pub fn websocket(endpoint: &Endpoint, path: &str) -> std::io::Result<Stream> {
    websocket_with(endpoint, path, &[])
}

/// Reads one WebSocket frame from the server: (opcode, payload).
pub fn ws_read_frame(stream: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    stream.read_exact(&mut h)?;
    let opcode = h[0] & 0x0f;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        stream.read_exact(&mut b)?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        stream.read_exact(&mut b)?;
        len = u64::from_be_bytes(b);
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload)?;
    Ok((opcode, payload))
}

/// Sends one masked binary frame (clients must mask).
pub fn ws_send_binary(stream: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x82u8];
    assert!(payload.len() < 126);
    frame.push(0x80 | payload.len() as u8);
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame)?;
    stream.flush()
}

/// The Events of the server's default namespace (`kubectl get events -o json`), oldest first by
/// resourceVersion; none when kubectl fails.
pub fn events(server: &Server) -> Vec<serde_json::Value> {
    let out = server.kubectl(&["get", "events", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut events: Vec<serde_json::Value> = list["items"].as_array().cloned().unwrap_or_default();
    events.sort_by_key(|e| {
        e["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
    });
    events
}

/// The object `kind`/`name` as `kubectl get -o json` shows it, `None` when there is none.
pub fn object(server: &Server, kind: &str, name: &str) -> Option<serde_json::Value> {
    let out = server.kubectl(&["get", kind, name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The string at `pointer` of an object from [`object`] (`""` when there is none).
pub fn text(object: &Option<serde_json::Value>, pointer: &str) -> String {
    object
        .as_ref()
        .and_then(|o| o.pointer(pointer))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The fixtures of the api crate.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/api/tests/fixtures")
}

/// Writes a manifest into the server's temp dir and returns its path.
/// A ClusterRoleBinding named `name` of the ClusterRole `role` to the user `user` (YAML).
pub fn cluster_role_binding(name: &str, role: &str, user: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {name}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {role}
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: {user}
"
    )
}

pub fn manifest(server: &Server, name: &str, text: &str) -> PathBuf {
    let path = server.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// kubectl with another kubeconfig (a user's), HOME private.
pub fn kubectl_with(kubeconfig: &Path, home: &Path, args: &[&str]) -> Output {
    std::fs::create_dir_all(home).unwrap();
    ferrovirt_testkit::host_tool("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap()
}
