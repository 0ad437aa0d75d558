//! The CLI against a small TLS API server made here with ferrovirt-auth's PKI (a CA in a temp data
//! dir, the serving certificate it signs): the kubeconfig's CA is trusted and nothing else, the
//! bearer token goes on requests, streams and the console's WebSocket upgrade, a client
//! certificate from `ferrovirt kubeconfig create` is presented and accepted, `--server` replaces
//! only the URL, and `ferrovirt audit` reads a log written by ferrovirt-auth's `AuditLog`.
//!
//! The server answers only what these tests ask, and only to an allowed caller: the bearer token
//! `t-admin`, or a client certificate verified against the CA for user `alice` in group `dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ferrovirt_auth::UserInfo;
use ferrovirt_auth::audit::{AuditLog, Event, ObjectReference, Rotation};
use ferrovirt_auth::kubeconfig::{AuthInfo, Kubeconfig};
use ferrovirt_auth::pki::{CertIdentity, Pki, ServingNames};

const BIN: &str = env!("CARGO_BIN_EXE_ferrovirt");
const TOKEN: &str = "t-admin";
const VMS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";
const SERIAL_LOG: &str =
    "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/demo/serial-log";
const CONSOLE: &str =
    "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/demo/console";

/// Who the TLS layer verified, per connection.
#[derive(Clone)]
struct Peer(Arc<Option<CertIdentity>>);

fn allowed(peer: &Peer, headers: &HeaderMap) -> bool {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
    bearer == Some(&format!("Bearer {TOKEN}"))
        || peer
            .0
            .as_ref()
            .as_ref()
            .is_some_and(|id| id.user == "alice" && id.groups == ["dev"])
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [("content-type", "application/json")],
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#,
    )
        .into_response()
}

fn router(peer: Peer) -> Router {
    let list_peer = peer.clone();
    let log_peer = peer.clone();
    Router::new()
        .route(
            VMS,
            get(move |headers: HeaderMap| async move {
                if !allowed(&list_peer, &headers) {
                    return unauthorized();
                }
                (
                    [("content-type", "application/json")],
                    r#"{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachineList","metadata":{"resourceVersion":"1"},"items":[]}"#,
                )
                    .into_response()
            }),
        )
        .route(
            SERIAL_LOG,
            get(move |headers: HeaderMap| async move {
                if !allowed(&log_peer, &headers) {
                    return unauthorized();
                }
                ([("content-type", "text/plain")], "boot ok\n").into_response()
            }),
        )
        .route(
            CONSOLE,
            get(move |headers: HeaderMap, ws: WebSocketUpgrade| async move {
                if !allowed(&peer, &headers) {
                    return unauthorized();
                }
                if headers.contains_key("origin") {
                    return (StatusCode::FORBIDDEN, "an Origin header was sent").into_response();
                }
                ws.protocols(["plain.kubevirt.io"])
                    .on_upgrade(|mut socket| async move {
                        let _ = socket
                            .send(Message::Binary(b"console ok\n".to_vec().into()))
                            .await;
                        let _ = socket.send(Message::Close(None)).await;
                    })
            }),
        )
}

/// Serves the API over TLS with `pki` on a free loopback port, in a background thread.
fn serve(pki: &Pki) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config().unwrap());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A refused handshake (the wrong-CA test) just ends the connection.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let peer = Peer(Arc::new(CertIdentity::from_peer(
                        tls.get_ref().1.peer_certificates(),
                    )));
                    let service = hyper_util::service::TowerToHyperService::new(router(peer));
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
    });
    port
}

/// A data dir like `ferrovirt serve` leaves: `pki/` and `admin.kubeconfig` (token user).
struct Site {
    dir: tempfile::TempDir,
    pki: Pki,
    port: u16,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let names = ServingNames::new(Vec::<IpAddr>::new(), Vec::<String>::new()).unwrap();
        let pki = Pki::load_or_create(&dir.path().join("data").join("pki"), &names).unwrap();
        let port = serve(&pki);
        let site = Site { dir, pki, port };
        site.write_kubeconfig(&site.admin_kubeconfig(), site.pki.ca_pem(), TOKEN);
        site
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn admin_kubeconfig(&self) -> PathBuf {
        self.data_dir().join("admin.kubeconfig")
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn write_kubeconfig(&self, path: &Path, ca_pem: &str, token: &str) {
        Kubeconfig::single(&self.url(), ca_pem, "someone", AuthInfo::with_token(token))
            .write(path)
            .unwrap();
    }

    /// The CLI with a clean environment: no $KUBECONFIG, no $FERROVIRT_SERVER, an empty $HOME.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("FERROVIRT_SERVER")
            .env("HOME", self.dir.path().join("home"))
            .stdin(Stdio::null());
        command
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed ({:?}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn empty_list(stdout: &str) {
    let list: serde_json::Value = serde_json::from_str(stdout).unwrap();
    assert_eq!(list["items"], serde_json::json!([]), "{stdout}");
}

#[test]
fn the_kubeconfig_ca_and_token_reach_the_tls_server() {
    let site = Site::new();
    let admin = site.admin_kubeconfig();
    let admin = admin.to_str().unwrap();

    // --kubeconfig: the CA is trusted and the token accepted.
    empty_list(&ok(&site.cli(&[
        "get",
        "vms",
        "-o",
        "json",
        "--kubeconfig",
        admin,
    ])));
    // $KUBECONFIG, with a missing file first (skipped, as kubectl does).
    let missing = site.dir.path().join("missing");
    let out = site
        .command(&["get", "vms", "-o", "json"])
        .env(
            "KUBECONFIG",
            format!("{}:{admin}", missing.to_str().unwrap()),
        )
        .output()
        .unwrap();
    empty_list(&ok(&out));
    // --server replaces only the URL: `localhost` (a SAN of the serving certificate) with the
    // kubeconfig's CA and token, the kubeconfig's own server being unreachable.
    let elsewhere = site.dir.path().join("elsewhere.kubeconfig");
    Kubeconfig::single(
        "https://127.0.0.1:1",
        site.pki.ca_pem(),
        "someone",
        AuthInfo::with_token(TOKEN),
    )
    .write(&elsewhere)
    .unwrap();
    let out = site
        .command(&[
            "get",
            "vms",
            "-o",
            "json",
            "--kubeconfig",
            elsewhere.to_str().unwrap(),
        ])
        .env(
            "FERROVIRT_SERVER",
            format!("https://localhost:{}", site.port),
        )
        .output()
        .unwrap();
    empty_list(&ok(&out));

    // A streamed request (logs) and the console's WebSocket upgrade carry the token too; the
    // console sends no Origin header (the test server answers 403 to one).
    assert_eq!(
        ok(&site.cli(&["logs", "demo", "-f", "--kubeconfig", admin])),
        "boot ok\n"
    );
    assert_eq!(
        ok(&site.cli(&["console", "demo", "--timeout", "0", "--kubeconfig", admin])),
        "console ok\n"
    );

    // A wrong token: the server's 401, as kubectl prints it.
    let wrong = site.dir.path().join("wrong-token.kubeconfig");
    site.write_kubeconfig(&wrong, site.pki.ca_pem(), "t-wrong");
    let stderr = failed(&site.cli(&["get", "vms", "--kubeconfig", wrong.to_str().unwrap()]));
    assert_eq!(stderr, "Error from server (Unauthorized): Unauthorized\n");
    let stderr = failed(&site.cli(&[
        "console",
        "demo",
        "--timeout",
        "0",
        "--kubeconfig",
        wrong.to_str().unwrap(),
    ]));
    assert!(stderr.contains("Unauthorized"), "{stderr}");
}

#[test]
fn a_server_signed_by_another_ca_is_refused() {
    let site = Site::new();
    let other_dir = tempfile::tempdir().unwrap();
    let names = ServingNames::new(Vec::<IpAddr>::new(), Vec::<String>::new()).unwrap();
    let other = Pki::load_or_create(other_dir.path(), &names).unwrap();
    let foreign = site.dir.path().join("foreign.kubeconfig");
    site.write_kubeconfig(&foreign, other.ca_pem(), TOKEN);
    let foreign = foreign.to_str().unwrap();

    let stderr = failed(&site.cli(&["get", "vms", "--kubeconfig", foreign]));
    assert!(
        stderr.starts_with(&format!(
            "error: Unable to connect to the server {}: the TLS handshake failed",
            site.url()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("certificate-authority-data"), "{stderr}");
    // Both CAs are named ferrovirt-ca, so rustls finds the issuer by name and the signature
    // does not verify (two ferrovirt hosts look just like this).
    assert!(
        stderr.contains("invalid peer certificate: BadSignature"),
        "{stderr}"
    );
    let stderr = failed(&site.cli(&["logs", "demo", "-f", "--kubeconfig", foreign]));
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");
    let stderr = failed(&site.cli(&["console", "demo", "--timeout", "0", "--kubeconfig", foreign]));
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");
}

#[test]
fn kubeconfig_create_issues_a_client_certificate_the_server_accepts() {
    let site = Site::new();
    let data_dir = site.data_dir();
    let out = site.cli(&[
        "kubeconfig",
        "create",
        "--user",
        "alice",
        "--group",
        "dev",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    let yaml = ok(&out);
    // The server URL comes from the admin kubeconfig (loopback: a note says so on stderr).
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    let config = Kubeconfig::parse(&yaml, "stdout").unwrap();
    let credentials = config.resolve(None).unwrap();
    assert_eq!(credentials.context, "alice@ferrovirt");
    assert_eq!(credentials.server, site.url());
    assert_eq!(
        credentials.ca_pem.as_deref(),
        Some(site.pki.ca_pem().as_bytes())
    );
    assert!(credentials.token.is_none());
    // CN = alice, O = dev, signed by the server's CA.
    let (chain, _key) = credentials.client_identity().unwrap().unwrap();
    let identity = CertIdentity::from_der(&chain[0]).unwrap().unwrap();
    assert_eq!(identity.user, "alice");
    assert_eq!(identity.groups, ["dev"]);
    let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(site.pki.ca_der()).unwrap();
    cert.verify_signature(Some(ca.public_key())).unwrap();
    assert!(cert.validity().is_valid());
    // ...and the server's TLS layer accepts it: the CLI presents it and gets the list as alice.
    let alice = site.dir.path().join("alice.kubeconfig");
    std::fs::write(&alice, &yaml).unwrap();
    empty_list(&ok(&site.cli(&[
        "get",
        "vms",
        "-o",
        "json",
        "--kubeconfig",
        alice.to_str().unwrap(),
    ])));
    // Another user's certificate is valid but not allowed here: 401 from the server, so the
    // acceptance above was the certificate's doing.
    let bob_yaml = ok(&site.cli(&[
        "kubeconfig",
        "create",
        "--user",
        "bob",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--server",
        &format!("https://localhost:{}", site.port),
    ]));
    let bob = site.dir.path().join("bob.kubeconfig");
    std::fs::write(&bob, &bob_yaml).unwrap();
    let stderr = failed(&site.cli(&["get", "vms", "--kubeconfig", bob.to_str().unwrap()]));
    assert!(stderr.contains("Unauthorized"), "{stderr}");

    // --token: a bearer token user, and the token-file line on stderr.
    let out = site.cli(&[
        "kubeconfig",
        "create",
        "--user",
        "carol",
        "--group",
        "ops",
        "--token",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    let credentials = Kubeconfig::parse(&ok(&out), "stdout")
        .unwrap()
        .resolve(None)
        .unwrap();
    let token = credentials.token.unwrap();
    assert!(credentials.client_cert_pem.is_none());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{token},carol,carol,\"ops\"")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Never a new CA: a data dir without one is an error, and stays without one.
    let empty = site.dir.path().join("empty");
    let stderr = failed(&site.cli(&[
        "kubeconfig",
        "create",
        "--user",
        "alice",
        "--data-dir",
        empty.to_str().unwrap(),
        "--server",
        "https://127.0.0.1:8443",
    ]));
    assert!(stderr.contains("no CA in"), "{stderr}");
    assert!(!empty.exists());
}

#[test]
fn without_a_kubeconfig_the_error_says_where_it_looked() {
    let site = Site::new();
    for fallback in [
        Path::new("/etc/ferrovirt/admin.kubeconfig"),
        Path::new("/var/lib/ferrovirt/admin.kubeconfig"),
    ] {
        if fallback.exists() {
            eprintln!(
                "skipped: {} exists on this host and would be used",
                fallback.display()
            );
            return;
        }
    }
    let stderr = failed(&site.cli(&["get", "vms"]));
    assert!(
        stderr.starts_with("error: no kubeconfig found (looked at "),
        "{stderr}"
    );
    assert!(
        stderr.contains(".kube/config")
            && stderr
                .contains("/etc/ferrovirt/admin.kubeconfig, /var/lib/ferrovirt/admin.kubeconfig"),
        "{stderr}"
    );
    assert!(stderr.contains("--kubeconfig FILE"), "{stderr}");
    // https:// without a kubeconfig: no CA to trust.
    let stderr = failed(&site.cli(&["get", "vms", "--server", &site.url()]));
    assert!(
        stderr.contains("no kubeconfig gives its certificate authority"),
        "{stderr}"
    );
}

#[test]
fn audit_prints_the_log_written_by_the_audit_log() {
    let site = Site::new();
    let data_dir = site.data_dir();
    let log = AuditLog::open(&data_dir.join("audit.log"), Rotation::default()).unwrap();
    let event = |user: &str, verb: &str, sub: &str, code: u16| {
        Event::new(
            &UserInfo::authenticated(user, "", Vec::new()),
            verb,
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/web",
            time_now(),
        )
        .object(ObjectReference {
            resource: "virtualmachines".to_owned(),
            namespace: "default".to_owned(),
            name: "web".to_owned(),
            api_group: "kubevirt.io".to_owned(),
            api_version: "v1".to_owned(),
            subresource: sub.to_owned(),
            ..ObjectReference::default()
        })
        .response(code, "", "")
    };
    log.append(&event("alice", "create", "", 201)).unwrap();
    log.append(&event("bob", "update", "start", 200)).unwrap();
    let dir = data_dir.to_str().unwrap();

    let table = ok(&site.cli(&["audit", "--data-dir", dir]));
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "TIME",
            "USER",
            "VERB",
            "RESOURCE",
            "NAMESPACE",
            "NAME",
            "CODE"
        ]
    );
    assert_eq!(
        lines[1][1..],
        [
            "alice",
            "create",
            "virtualmachines",
            "default",
            "web",
            "201"
        ]
    );
    assert_eq!(
        lines[2][1..],
        [
            "bob",
            "update",
            "virtualmachines/start",
            "default",
            "web",
            "200"
        ]
    );
    let json = ok(&site.cli(&[
        "audit",
        "--data-dir",
        dir,
        "--resource",
        "virtualmachines/start",
        "--since",
        "1h",
        "-o",
        "json",
    ]));
    assert_eq!(json.lines().count(), 1, "{json}");
    let event: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(event["user"]["username"], "bob");

    let stderr = failed(&site.cli(&["audit", "--data-dir", site.dir.path().to_str().unwrap()]));
    assert!(stderr.contains("there is no audit log at"), "{stderr}");
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}
