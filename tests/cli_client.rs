//! The client commands against `ferrovirt serve` without the engine (fast): apply's
//! created/configured/unchanged, get's tables and formats, kubectl-style errors, delete, completion.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use server::{BIN, Server, manifest};

const VM: &str = "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: web
  labels:
    app: web
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        firmware:
          bootloader:
            efi:
              persistent: true
        features:
          smm: {}
        devices:
          tpm:
            persistent: true
        memory:
          guest: 128Mi
";

#[test]
fn apply_get_delete_like_kubectl() {
    let server = Server::start(false);
    let path = manifest(&server, "vm.yaml", VM);
    let path = path.to_str().unwrap();
    assert_eq!(
        server.cli_ok(&["apply", "-f", path]),
        "virtualmachine.kubevirt.io/web created\n"
    );
    assert_eq!(
        server.cli_ok(&["apply", "-f", path]),
        "virtualmachine.kubevirt.io/web unchanged\n"
    );
    // From stdin, with a label changed and one removed: configured, and the old label is gone.
    let changed = VM.replace("    app: web\n", "    tier: front\n");
    let mut child = server
        .cli_cmd(&["apply", "-f", "-", "--server", &server.url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(changed.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "virtualmachine.kubevirt.io/web configured\n"
    );
    let vm: Value =
        serde_json::from_str(&server.cli_ok(&["get", "vm", "web", "-o", "json"])).unwrap();
    assert_eq!(
        vm["metadata"]["labels"],
        serde_json::json!({"tier": "front"})
    );
    // kubectl agrees with what we applied (same last-applied annotation).
    let kubectl = server.kubectl_ok(&[
        "apply",
        "-f",
        &manifest(&server, "c.yaml", &changed).display().to_string(),
    ]);
    assert!(kubectl.contains("unchanged"), "{kubectl}");

    // Tables with the server's columns.
    let table = server.cli_ok(&["get", "vms"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "AGE", "STATUS", "READY"]);
    assert!(lines.next().unwrap().starts_with("web "), "{table}");
    let all = server.cli_ok(&["get", "vm", "-A"]);
    assert!(all.starts_with("NAMESPACE   NAME"), "{all}");
    assert!(all.contains("default     web"), "{all}");
    assert_eq!(
        server.cli_ok(&["get", "virtualmachines", "-o", "name"]),
        "virtualmachine.kubevirt.io/web\n"
    );
    assert_eq!(
        server.cli_ok(&["get", "vm", "-l", "tier=front", "-o", "name"]),
        "virtualmachine.kubevirt.io/web\n"
    );
    let yaml = server.cli_ok(&["get", "vm", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("runStrategy: Halted") && yaml.contains("kind: VirtualMachine"),
        "{yaml}"
    );
    let sc = server.cli_ok(&["get", "sc"]);
    assert!(sc.contains("local-path (default)"), "{sc}");
    let describe = server.cli_ok(&["describe", "vm", "web"]);
    assert!(
        describe.contains("TPM:            persistent"),
        "{describe}"
    );
    assert!(
        describe.contains("Firmware:       EFI + Secure Boot (persistent VARS"),
        "{describe}"
    );

    // Errors as kubectl prints them, exit 1.
    let out = server.cli(&["get", "vm", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error from server (NotFound): virtualmachines.kubevirt.io \"nope\" not found\n"
    );
    let out = server.cli(&["logs", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("Error from server (NotFound):"));
    let out = server.cli(&["stop", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Error from server (Conflict): VM web is not running")
    );
    let invalid = manifest(
        &server,
        "bad.yaml",
        &VM.replace("guest: 128Mi", "guest: lots"),
    );
    let out = server.cli(&["apply", "-f", invalid.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("Error from server ("), "{stderr}");
    let unknown = manifest(
        &server,
        "unknown.yaml",
        &VM.replace("guest: 128Mi", "guest: 128Mi\n          colour: blue"),
    );
    let out = server.cli(&[
        "apply",
        "--validate",
        "strict",
        "-f",
        unknown.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Error from server (BadRequest)") && stderr.contains("colour"),
        "{stderr}"
    );
    let out = server.cli(&["get", "pods"]);
    assert_eq!(out.status.code(), Some(1));
    let out = server
        .cli_cmd(&["get", "vms", "--server", "https://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https://127.0.0.1:1"));

    assert_eq!(
        server.cli_ok(&["delete", "-f", path]),
        "virtualmachine.kubevirt.io \"web\" deleted\n"
    );
    let out = server.cli(&["get", "vms"]);
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "No resources found in default namespace.\n"
    );
}

#[test]
fn completion_scripts() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("ferrovirt") && script.contains("console"),
            "{shell}"
        );
    }
}
