//! The web UI in a real browser: starts `ferrovirt serve` (engine on: QEMU + swtpm + OVMF under
//! TCG) and runs the Playwright tests in `ui/e2e` (`npm run e2e`, headless Debian Chromium, no
//! browser download) against it. They create VMs through the form (TPM + persistent state, checked
//! with the real kubectl), edit the YAML both ways, save template versions and create 3 VMs from
//! one, start a VM and read OVMF's output in the xterm.js serial console and see its screen in the
//! noVNC console. Screenshots land in `target/ui-artifacts/`.
//!
//! The tests log in through the UI's login screen with `FERROVIRT_E2E_TOKEN` (the UI sends it as a
//! bearer header, and as a WebSocket subprotocol to the console) and call the API and kubectl with
//! it. For an https server, `FERROVIRT_E2E_CA` is its CA certificate (node and kubectl trust it;
//! Chromium ignores certificate errors in the test's browser context, the CA being a throwaway).
//!
//! Needs the UI built into the binary (`cd ui && npm ci && npm run build` before `cargo build`,
//! as `scripts/test.sh` does) and `ui/node_modules`; without them the test says why and passes,
//! unless `FERROVIRT_REQUIRE_UI_E2E=1` (set by `scripts/test.sh`) makes that a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;

use std::path::Path;
use std::time::Duration;

use server::Server;

/// The token of the `view` user in the server's `--token-auth-file` (the 403 test).
const VIEWER_TOKEN: &str = "ferrovirt-e2e-viewer-token";

/// The number after `# <label> ` in node's test runner summary.
fn summary_count(stdout: &str, label: &str) -> Option<u32> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("# {label} "))?.trim().parse().ok())
}

fn missing_prerequisite(server: &Server, ui: &Path) -> Option<String> {
    let (code, index) = server.request("GET", "/", None, b"");
    let index = String::from_utf8_lossy(&index);
    if code != 200 || index.contains("web UI was not built") {
        return Some(
            "the binary embeds no web UI (build it first: cd ui && npm ci && npm run build)".into(),
        );
    }
    if !ui.join("node_modules/playwright-core").is_dir() {
        return Some("ui/node_modules is missing (cd ui && npm ci)".into());
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    None
}

#[test]
fn web_ui_in_chromium_against_a_real_server() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ui = root.join("ui");
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), format!("{VIEWER_TOKEN},e2e-viewer,2001\n")).unwrap();
    let server = Server::start_with(
        true,
        &["--token-auth-file", tokens.path().to_str().unwrap()],
    );
    // The viewer may read (ClusterRole `view`), not create.
    let binding = server::manifest(
        &server,
        "viewer.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: e2e-viewer}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\n\
         subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: e2e-viewer}]\n",
    );
    server.kubectl_ok(&["apply", "-f", binding.to_str().unwrap()]);
    if let Some(reason) = missing_prerequisite(&server, &ui) {
        assert!(
            std::env::var("FERROVIRT_REQUIRE_UI_E2E").as_deref() != Ok("1"),
            "browser tests required but cannot run: {reason}"
        );
        eprintln!("SKIPPED the browser tests: {reason}");
        return;
    }
    let artifacts = root.join("target/ui-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let output = ferrovirt_testkit::host_tool("npm")
        .args(["run", "--silent", "e2e"])
        .current_dir(&ui)
        .env("FERROVIRT_URL", server.url())
        .env("FERROVIRT_UI_ARTIFACTS", &artifacts)
        .env("KUBECTL", server::KUBECTL)
        .env("FERROVIRT_E2E_TOKEN", server.admin_token())
        .env("FERROVIRT_E2E_USER", "ferrovirt-admin")
        .env("FERROVIRT_E2E_CA", server.data_dir().join("pki/ca.crt"))
        .env("FERROVIRT_E2E_VIEWER_TOKEN", VIEWER_TOKEN)
        .output()
        .expect("npm runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");

    // Whatever the outcome: no VM may outlive the test (serve leaves VMs running on exit).
    let (_, vms) = server.json("GET", "/apis/kubevirt.io/v1/virtualmachines", None);
    for vm in vms["items"].as_array().cloned().unwrap_or_default() {
        let ns = vm["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = vm["metadata"]["name"].as_str().unwrap_or("");
        server.json(
            "DELETE",
            &format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}"),
            None,
        );
    }
    server.wait_for("every VMI to be gone", Duration::from_secs(90), || {
        let (_, vmis) = server.json("GET", "/apis/kubevirt.io/v1/virtualmachineinstances", None);
        vmis["items"]
            .as_array()
            .is_some_and(|items| items.is_empty())
            .then_some(())
    });

    assert!(
        output.status.success(),
        "the browser tests failed ({}); output above; server log:\n{}",
        output.status,
        server.log()
    );
    // Every test runs: the 401 test (the server checks tokens) and the 403 one (viewer token).
    let passed = summary_count(&stdout, "pass").unwrap_or(0);
    assert!(
        passed >= 12
            && summary_count(&stdout, "fail") == Some(0)
            && summary_count(&stdout, "skipped") == Some(0),
        "expected at least 12 passing, no failing and no skipped browser tests:\n{stdout}"
    );
    for shot in [
        "vm-list",
        "form-tpm-persistent",
        "form-windows-11",
        "yaml-tab",
        "console",
        "vnc-console",
        "templates",
        "login",
        "login-kubeconfig-certificate",
    ] {
        let path = artifacts.join(format!("{shot}.png"));
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "screenshot {} missing or empty",
            path.display()
        );
    }
}
