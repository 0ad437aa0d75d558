//! Trust features under `ferrovirt serve` (issue 15), real engine without a guest OS (OVMF finds
//! no disk and waits): the `tpm/ek` subresource returns the EK certificates of a persistent TPM
//! while the VM is stopped, a `view` user may read it, the certificates verify against the
//! returned chain with openssl and match the fingerprints in the VM status; switching Secure Boot
//! on produces the Warning Event and condition `PCRsWillChange` (`describe vm` shows it); switching
//! `tpm.persistent` gets a `Warning:` from the API server at apply time. A UEFI variable set
//! through `efivars` while the VM is stopped (refused while it runs) is read by the next boot of
//! the test guest (one guest boot, ~20-40 s under TCG). `efi enroll --microsoft-2023` appends
//! Microsoft's 2023 KEK and db certificates offline to the Secure Boot template's keys, and the
//! Secure Boot test guest (Debian's shim, signed under the 2011 CA that stays) still boots with
//! Secure Boot on (a second guest boot).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::Value;
use server::{Server, cluster_role_binding, http_request, manifest};
use support::guest::{GuestReport, image_in_data_dir, plain_image, secure_boot_image};

const VIEWER_TOKEN: &str = "trust-viewer-token-0123456789";
const EK: &str = "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/ek1/tpm/ek";

const FERRO_VAR: &str = "FerroTest-6d8e2f1a-4b3c-4e5d-9f60-7a8b9c0d1e2f";

/// The VM with the test guest's disk (it reports the TPM and the EFI variable `FerroTest`).
fn vm_with_guest(server: &Server) -> String {
    let image = image_in_data_dir(&server.data_dir(), &plain_image());
    vm(false, true).replace("guest: 128Mi", "guest: 384Mi").replace(
        "        devices:\n",
        "        devices:\n          disks:\n          - name: boot\n            bootOrder: 1\n            disk: {bus: virtio, readonly: true}\n",
    ) + &format!(
        "      volumes:\n      - name: boot\n        hostDisk: {{path: {}, type: Disk}}\n",
        image.display()
    )
}

/// The Secure Boot VM with the Secure Boot test guest's disk (shim, GRUB and kernel signed).
fn vm_with_secure_boot_guest(server: &Server) -> String {
    let image = image_in_data_dir(&server.data_dir(), &secure_boot_image());
    vm(true, true).replace("guest: 128Mi", "guest: 384Mi").replace(
        "        devices:\n",
        "        devices:\n          disks:\n          - name: boot\n            bootOrder: 1\n            disk: {bus: virtio, readonly: true}\n",
    ) + &format!(
        "      volumes:\n      - name: boot\n        hostDisk: {{path: {}, type: Disk}}\n",
        image.display()
    )
}

fn vm(secure_boot: bool, persistent_tpm: bool) -> String {
    let smm = if secure_boot {
        "\n        features:\n          smm:\n            enabled: true"
    } else {
        ""
    };
    format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: ek1
spec:
  runStrategy: Manual
  template:
    spec:
      terminationGracePeriodSeconds: 1
      domain:{smm}
        memory:
          guest: 128Mi
        firmware:
          bootloader:
            efi:
              secureBoot: {secure_boot}
              persistent: true
        devices:
          autoattachPodInterface: false
          tpm:
            persistent: {persistent_tpm}
"
    )
}

fn object(server: &Server, kind: &str) -> Option<Value> {
    let out = server.kubectl(&["get", kind, "ek1", "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn run_once(server: &Server) -> Value {
    run_doing(server, |_| {})
}

/// Starts the VM, calls `while_running`, stops it; returns the VM as it was while running.
fn run_doing(server: &Server, while_running: impl FnOnce(&Server)) -> Value {
    server.cli_ok(&["start", "ek1"]);
    server.wait_for("the VMI to run", Duration::from_secs(120), || {
        object(server, "vmi").filter(|v| v["status"]["phase"] == "Running")
    });
    let vm = server.wait_for(
        "the VM status to be Running",
        Duration::from_secs(60),
        || object(server, "vm").filter(|v| v["status"]["printableStatus"] == "Running"),
    );
    while_running(server);
    server.cli_ok(&["stop", "ek1"]);
    server.wait_for("the VM to stop", Duration::from_secs(120), || {
        object(server, "vm")
            .filter(|v| v["status"]["printableStatus"] == "Stopped")
            .filter(|_| object(server, "vmi").is_none())
    });
    vm
}

fn events(server: &Server) -> Vec<(String, String, String)> {
    let out = server.kubectl_ok(&["get", "events", "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "ek1")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            (s("type"), s("reason"), s("message"))
        })
        .collect()
}

#[test]
fn ek_is_served_offline_and_verifies_and_the_pcr_guard_warns() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), format!("{VIEWER_TOKEN},vera,1002\n")).unwrap();
    let server = Server::start_with(
        true,
        &["--token-auth-file", tokens.path().to_str().unwrap()],
    );
    let path = manifest(&server, "ek1.yaml", &vm(false, true));
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);

    // Before the first start there is no TPM yet: 404 with what to do.
    let early = server.cli(&["tpm", "ek", "ek1"]);
    assert!(!early.status.success());

    // One run manufactures the TPM; the VM status then carries the fingerprints, also stopped.
    let running = run_once(&server);
    let rsa = running["status"]["tpm"]["ekCertificateSHA256"]["rsa"]
        .as_str()
        .expect("status.tpm.ekCertificateSHA256.rsa")
        .to_owned();
    let stopped = object(&server, "vm").unwrap();
    assert_eq!(stopped["status"]["tpm"], running["status"]["tpm"]);

    // Stopped: the CLI reads the EK through the API.
    let body: Value =
        serde_json::from_str(&server.cli_ok(&["tpm", "ek", "ek1", "-o", "json"])).unwrap();
    assert_eq!(body["kind"], "TPMEndorsementKey");
    let certs = body["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[0]["type"], "RSA");
    assert_eq!(certs[0]["nvIndex"], "0x01c00002");
    assert_eq!(certs[0]["sha256"], rsa.as_str());
    assert_eq!(
        certs[1]["sha256"],
        running["status"]["tpm"]["ekCertificateSHA256"]["ecc"]
    );
    let text = server.cli_ok(&["tpm", "ek", "ek1"]);
    assert!(text.contains(&rsa), "{text}");
    assert!(text.contains("verifies against the chain below"), "{text}");

    // openssl, given only what the API returned, verifies each EK certificate up to the root.
    let dir = tempfile::tempdir().unwrap();
    let chain = body["chain"].as_array().unwrap();
    let root = dir.path().join("root.pem");
    let issuer = dir.path().join("issuer.pem");
    std::fs::write(&root, chain[1]["pem"].as_str().unwrap()).unwrap();
    std::fs::write(&issuer, chain[0]["pem"].as_str().unwrap()).unwrap();
    for cert in certs {
        assert_eq!(cert["chainVerified"], true, "{cert}");
        let leaf = dir.path().join("leaf.pem");
        std::fs::write(&leaf, cert["pem"].as_str().unwrap()).unwrap();
        let out = std::process::Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&root)
            .arg("-untrusted")
            .arg(&issuer)
            .arg(&leaf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The public key PEM is the certificate's.
        let pubkey = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(&leaf)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&pubkey.stdout).trim(),
            cert["publicKeyPEM"].as_str().unwrap().trim()
        );
    }
    let pem = server.cli_ok(&["tpm", "ek", "ek1", "-o", "pem"]);
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 4);

    // A `view` user may read it (and nothing without a binding).
    let viewer = server.endpoint().with_token(Some(VIEWER_TOKEN));
    let (code, _) = http_request(&viewer, "GET", EK, None, b"").unwrap();
    assert_eq!(code, 403);
    let binding = manifest(
        &server,
        "binding.yaml",
        &cluster_role_binding("trust-viewer", "view", "vera"),
    );
    server.kubectl_ok(&["apply", "-f", binding.to_str().unwrap()]);
    let read = server.wait_for("the view binding", Duration::from_secs(10), || {
        let (code, body) = http_request(&viewer, "GET", EK, None, b"").unwrap();
        (code == 200).then_some(body)
    });
    let read: Value = serde_json::from_slice(&read).unwrap();
    assert_eq!(read["certificates"][0]["sha256"], rsa.as_str());

    // The same firmware again: no warning. While it runs, its UEFI variables cannot change.
    run_doing(&server, |server| {
        let out = server.cli(&["efi", "vars", "set", "ek1", FERRO_VAR, "--hex", "00"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("is running"), "{stderr}");
    });
    assert!(
        !events(&server).iter().any(|e| e.1 == "PCRsWillChange"),
        "{:?}",
        events(&server)
    );

    // Stopped: set the variable the test guest reads; its next boot sees it.
    let value = "0123456789abcdef0123456789abcdef";
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    let set = server.cli_ok(&["efi", "vars", "set", "ek1", FERRO_VAR, "--hex", &hex]);
    assert!(
        set.contains("no PCR the firmware measures changes"),
        "{set}"
    );
    assert!(set.contains("ferrovirt state rollback"), "{set}");
    let listed = server.cli_ok(&["efi", "vars", "list", "ek1"]);
    assert!(listed.contains("FerroTest"), "{listed}");
    assert_eq!(
        server
            .cli_ok(&["efi", "vars", "get", "ek1", FERRO_VAR])
            .trim(),
        hex
    );
    let path = manifest(&server, "ek1.yaml", &vm_with_guest(&server));
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    server.cli_ok(&["start", "ek1"]);
    let log = server.wait_for("the guest's report", Duration::from_secs(240), || {
        let log = server.cli_ok(&["logs", "ek1"]);
        GuestReport::parse_last_boot(&log).done.then_some(log)
    });
    let report = GuestReport::parse_last_boot(&log);
    assert_eq!(report.get("efivar"), Some(value), "{log}");
    assert_eq!(report.get("efivar-written"), None, "{log}");
    server.wait_for("the guest to power off", Duration::from_secs(120), || {
        object(&server, "vm")
            .filter(|v| v["status"]["printableStatus"] == "Stopped")
            .map(|_| ())
    });
    server.wait_for("the VMI to be final", Duration::from_secs(60), || {
        object(&server, "vmi")
            .is_none_or(|v| v["status"]["phase"] == "Succeeded")
            .then_some(())
    });
    // Deleting it works offline too.
    let deleted = server.cli_ok(&["efi", "vars", "delete", "ek1", FERRO_VAR]);
    assert!(deleted.contains("changed"), "{deleted}");

    // Own Secure Boot keys: a db certificate enrolled offline; the output names PCR7.
    let (key, cert) = (
        server.data_dir().join("db.key"),
        server.data_dir().join("db.pem"),
    );
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=ferrovirt test db", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success());
    let der = std::process::Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .unwrap()
        .stdout;
    let enrolled = server.cli_ok(&["efi", "enroll", "ek1", "--db", cert.to_str().unwrap()]);
    assert!(
        enrolled.contains("PCR7") && enrolled.contains("suspend BitLocker"),
        "{enrolled}"
    );
    let db = server.cli_ok(&[
        "efi",
        "vars",
        "get",
        "ek1",
        "db-d719b2cb-3d3a-4596-a3bc-dad00e67656f",
    ]);
    let der_hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
    assert!(db.trim().ends_with(&der_hex), "db holds the certificate");
    // --reset puts the firmware's template back (OVMF_VARS_4M.fd has no db).
    let reset = server.cli_ok(&["efi", "enroll", "ek1", "--reset"]);
    assert!(reset.contains("PCR1, PCR7"), "{reset}");
    let gone = server.cli(&[
        "efi",
        "vars",
        "get",
        "ek1",
        "db-d719b2cb-3d3a-4596-a3bc-dad00e67656f",
    ]);
    assert!(!gone.status.success());
    let generations = server.cli_ok(&["state", "list", "ek1"]);
    assert!(
        generations.contains("other"),
        "a generation recorded before the change: {generations}"
    );

    // Secure Boot on: PCRsWillChange, shown by describe.
    let path = manifest(&server, "ek1.yaml", &vm(true, true));
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    server.cli_ok(&["start", "ek1"]);
    let described = server.wait_for(
        "PCRsWillChange in describe",
        Duration::from_secs(120),
        || {
            let text = server.cli_ok(&["describe", "vm", "ek1"]);
            text.contains("PCRsWillChange").then_some(text)
        },
    );
    assert!(described.contains("PCR0, PCR1, PCR7"), "{described}");
    assert!(described.contains("Suspend BitLocker"), "{described}");
    let warned = events(&server);
    assert!(
        warned
            .iter()
            .any(|(t, r, m)| t == "Warning" && r == "PCRsWillChange" && m.contains("Secure Boot")),
        "{warned:?}"
    );
    server.cli_ok(&["stop", "ek1"]);
    server.wait_for("the VM to stop", Duration::from_secs(120), || {
        object(&server, "vmi").is_none().then_some(())
    });

    // Microsoft's 2023 certificates: appended to KEK and db through the server (the VM is
    // stopped), each DER in place, the output warns about BitLocker; a second enroll adds nothing.
    // First the Secure Boot template's keys back (PK, the 2011 KEK and db), as a Windows VM has.
    server.cli_ok(&["efi", "enroll", "ek1", "--reset"]);
    let enrolled = server.cli_ok(&["efi", "enroll", "ek1", "--microsoft-2023"]);
    assert!(
        enrolled.contains("Windows UEFI CA 2023")
            && enrolled.contains("Microsoft Corporation KEK 2K CA 2023")
            && enrolled.contains("suspend BitLocker"),
        "{enrolled}"
    );
    let certs = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/firmware/certs/microsoft-2023"
    );
    let hex_of = |file: &str| -> String {
        std::fs::read(format!("{certs}/{file}"))
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let kek = server.cli_ok(&[
        "efi",
        "vars",
        "get",
        "ek1",
        "KEK-8be4df61-93ca-11d2-aa0d-00e098032b8c",
    ]);
    assert!(
        kek.contains(&hex_of("ms-kek-2023.der")),
        "KEK holds the 2023 KEK CA"
    );
    let db = server.cli_ok(&[
        "efi",
        "vars",
        "get",
        "ek1",
        "db-d719b2cb-3d3a-4596-a3bc-dad00e67656f",
    ]);
    for file in [
        "windows-2023.der",
        "ms-uefi-2023.der",
        "ms-uefi-rom-2023.der",
    ] {
        assert!(db.contains(&hex_of(file)), "db holds {file}");
    }
    let again = server.cli_ok(&["efi", "enroll", "ek1", "--microsoft-2023"]);
    assert!(again.contains("already hold"), "{again}");

    // With them enrolled, the Secure Boot test guest boots, Secure Boot on.
    let path = manifest(&server, "ek1.yaml", &vm_with_secure_boot_guest(&server));
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    server.cli_ok(&["start", "ek1"]);
    let log = server.wait_for(
        "the Secure Boot guest's report",
        Duration::from_secs(300),
        || {
            let log = server.cli_ok(&["logs", "ek1"]);
            GuestReport::parse_last_boot(&log).done.then_some(log)
        },
    );
    let report = GuestReport::parse_last_boot(&log);
    assert_eq!(report.get("secureboot"), Some("1"), "{log}");
    server.wait_for("the guest to power off", Duration::from_secs(120), || {
        object(&server, "vm")
            .filter(|v| v["status"]["printableStatus"] == "Stopped")
            .map(|_| ())
    });
    server.wait_for("the VMI to be final", Duration::from_secs(60), || {
        object(&server, "vmi")
            .is_none_or(|v| v["status"]["phase"] == "Succeeded")
            .then_some(())
    });

    // Switching tpm.persistent (tpm-crb -> tpm-tis) is admitted with a warning.
    let path = manifest(&server, "ek1.yaml", &vm(true, false));
    let out = server.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Warning: spec.template.spec.domain.devices.tpm.persistent: this changes the guest's TPM interface from tpm-crb to tpm-tis"),
        "{stderr}"
    );
}
