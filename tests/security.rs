//! `ferrovirt serve` as shipped (TLS, tokens, client certificates, RBAC, request checks, audit)
//! against the real kubectl with the kubeconfig the server wrote and a raw HTTPS client for what
//! kubectl never sends (no credentials, no Content-Type, a foreign Host or Origin, plain HTTP).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::Value;
use server::{BIN, Server, cluster_role_binding, manifest, send};

const VIEWER_TOKEN: &str = "viewer-token-0123456789";
const VMS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";
const CONSOLE: &str =
    "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/vm1/console";

const VM: &str = "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: sec1
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        devices: {}
        memory:
          guest: 64Mi
";

fn server_with_viewer() -> (Server, tempfile::NamedTempFile) {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), format!("{VIEWER_TOKEN},victor,1001\n")).unwrap();
    let server = Server::start_with(
        false,
        &["--token-auth-file", tokens.path().to_str().unwrap()],
    );
    (server, tokens)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn rbac_viewer_can_read_not_write_and_can_i_answers() {
    let (server, _tokens) = server_with_viewer();
    let vm = manifest(&server, "vm.yaml", VM);
    server.kubectl_ok(&["apply", "-f", vm.to_str().unwrap()]);
    assert_eq!(
        server.kubectl_ok(&["auth", "can-i", "create", "virtualmachines"]),
        "yes\n"
    );
    let whoami = server.kubectl_ok(&["auth", "whoami"]);
    assert!(
        whoami.contains("ferrovirt-admin") && whoami.contains("system:masters"),
        "{whoami}"
    );

    // Without a binding the viewer may do nothing with VMs.
    let viewer = ["--token", VIEWER_TOKEN];
    let out = server.kubectl(&[&viewer[..], &["get", "vm", "sec1"]].concat());
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim(),
        "Error from server (Forbidden): virtualmachines.kubevirt.io \"sec1\" is forbidden: User \"victor\" cannot get resource \"virtualmachines\" in API group \"kubevirt.io\" in the namespace \"default\""
    );

    // A ClusterRoleBinding to `view`, applied with kubectl, takes effect for the next request.
    let binding = manifest(
        &server,
        "binding.yaml",
        &cluster_role_binding("victor-view", "view", "victor"),
    );
    server.kubectl_ok(&["apply", "-f", binding.to_str().unwrap()]);
    let listed = server.kubectl_ok(&["get", "clusterrolebindings", "victor-view", "-o", "wide"]);
    assert!(
        listed.contains("ClusterRole/view") && listed.contains("victor"),
        "{listed}"
    );
    let got = server.wait_for(
        "the binding to take effect",
        std::time::Duration::from_secs(10),
        || {
            let out = server.kubectl(&[&viewer[..], &["get", "vm", "sec1", "-o", "name"]].concat());
            out.status.success().then(|| text(&out.stdout))
        },
    );
    assert_eq!(got, "virtualmachine.kubevirt.io/sec1\n");
    let out = server.kubectl(&[&viewer[..], &["delete", "vm", "sec1"]].concat());
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim(),
        "Error from server (Forbidden): virtualmachines.kubevirt.io \"sec1\" is forbidden: User \"victor\" cannot delete resource \"virtualmachines\" in API group \"kubevirt.io\" in the namespace \"default\""
    );
    let can_i =
        server.kubectl(&[&viewer[..], &["auth", "can-i", "create", "virtualmachines"]].concat());
    assert_eq!(text(&can_i.stdout), "no\n");
    assert_eq!(
        server.kubectl_ok(&[&viewer[..], &["auth", "can-i", "list", "virtualmachines"]].concat()),
        "yes\n"
    );

    // The audit log has the refused delete and the admin's create; `ferrovirt audit` shows them.
    let log = std::fs::read_to_string(server.data_dir().join("audit.log")).unwrap();
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["user"]["username"] == "victor"
            && e["verb"] == "delete"
            && e["objectRef"]["resource"] == "virtualmachines"
            && e["objectRef"]["name"] == "sec1"
            && e["responseStatus"]["code"] == 403),
        "{log}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["user"]["username"] == "ferrovirt-admin"
                && e["verb"] == "create"
                && e["objectRef"]["resource"] == "virtualmachines"
                && e["responseStatus"]["code"] == 201),
        "{log}"
    );
    let data_dir = server.data_dir();
    let out = Command::new(BIN)
        .args(["audit", "--user", "victor", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    let table = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        table.lines().any(|l| l.contains("victor")
            && l.contains("delete")
            && l.contains("virtualmachines")
            && l.contains("sec1")
            && l.contains("403")),
        "{table}"
    );
}

#[test]
fn request_checks_and_anonymous_requests() {
    let server = Server::start(false);
    let admin = server.endpoint();
    let anonymous = admin.with_token(None);

    let (code, _, body) = send(&anonymous, "GET", VMS, &[], b"").unwrap();
    assert_eq!(code, 401);
    let status: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        status,
        serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                           "message":"Unauthorized","reason":"Unauthorized","code":401})
    );
    let (code, _, _) = send(&admin.with_token(Some("wrong")), "GET", VMS, &[], b"").unwrap();
    assert_eq!(code, 401);
    // Anonymous: the health checks and the UI's files (the login page), with the CSP.
    assert_eq!(
        send(&anonymous, "GET", "/healthz", &[], b"").unwrap().0,
        200
    );
    let (code, head, _) = send(&anonymous, "GET", "/", &[("Accept", "text/html")], b"").unwrap();
    assert_eq!(code, 200);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    // A console URL without credentials is 401 (the UI's check after a refused WebSocket).
    assert_eq!(send(&anonymous, "GET", CONSOLE, &[], b"").unwrap().0, 401);

    // 415: a write without a JSON/YAML/patch media type (what a cross-site form sends).
    let vm = br#"{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachine","metadata":{"name":"x"}}"#;
    let (code, _, body) = send(&admin, "POST", VMS, &[], vm).unwrap();
    assert_eq!(code, 415, "{}", text(&body));
    let (code, _, _) = send(
        &admin,
        "POST",
        VMS,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        vm,
    )
    .unwrap();
    assert_eq!(code, 415);

    // 421: a Host that does not name this server (DNS rebinding); the server's names pass.
    let (code, _, body) = send(&admin, "GET", VMS, &[("Host", "evil.example")], b"").unwrap();
    assert_eq!(code, 421, "{}", text(&body));
    let port = server.port;
    for host in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        assert_eq!(
            send(&admin, "GET", VMS, &[("Host", &host)], b"").unwrap().0,
            200,
            "{host}"
        );
    }

    // 403: the console WebSocket from a foreign Origin (no Origin is fine: kubectl, virtctl).
    let refused = server::websocket_with(&admin, CONSOLE, &[("Origin", "https://evil.example")])
        .err()
        .unwrap()
        .to_string();
    assert!(refused.contains("403"), "{refused}");
    let own = format!("https://127.0.0.1:{port}");
    let other = server::websocket_with(&admin, CONSOLE, &[("Origin", own.as_str())])
        .err()
        .unwrap()
        .to_string();
    // Past the Origin check: the VMI does not exist.
    assert!(!other.contains("403"), "{other}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    tcp.write_all(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{}", text(&answer));
    assert!(!text(&answer).contains("NamespaceList"));
}

#[test]
fn insecure_http_only_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--insecure-http",
            "--listen",
            "0.0.0.0:18080",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("FERROVIRT_NO_CONTROLLERS", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--insecure-http") && stderr.contains("loopback"),
        "{stderr}"
    );
}

#[test]
fn client_certificates_from_kubeconfig_create_and_file_modes() {
    let server = Server::start(false);
    let data_dir = server.data_dir();
    let out = Command::new(BIN)
        .args([
            "kubeconfig",
            "create",
            "--user",
            "alice",
            "--group",
            "dev",
            "--data-dir",
        ])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let alice = manifest(&server, "alice.kubeconfig", &text(&out.stdout));
    let home = server.dir.path().join("home");
    let whoami = server::kubectl_with(&alice, &home, &["auth", "whoami", "-o", "json"]);
    assert!(whoami.status.success(), "{}", text(&whoami.stderr));
    let review: Value = serde_json::from_slice(&whoami.stdout).unwrap();
    assert_eq!(review["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        review["status"]["userInfo"]["groups"],
        serde_json::json!(["dev", "system:authenticated"])
    );
    // alice has no binding: RBAC refuses her like anyone else.
    let out = server::kubectl_with(&alice, &home, &["get", "vms"]);
    assert!(text(&out.stderr).contains("User \"alice\" cannot list resource \"virtualmachines\""));

    assert_eq!(mode(&data_dir), 0o700);
    for file in [
        "admin.kubeconfig",
        "admin.token",
        "audit.log",
        "ferrovirt.db",
        "pki/ca.key",
        "pki/server.key",
    ] {
        assert_eq!(mode(&data_dir.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&data_dir.join("pki")), 0o700);
    assert!(server.log().contains(&format!(
        "admin kubeconfig: {}",
        data_dir.join("admin.kubeconfig").display()
    )));
}
