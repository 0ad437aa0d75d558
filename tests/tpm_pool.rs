//! The TPM pool under `ferrovirt serve --tpm-pool-size 1` (issue 16), real engine without a
//! guest OS: the pool fills in the background; a persistent TPM's first start takes the pooled
//! TPM (the server says so) and gets what a manufacture would give it (EK certificates naming
//! this VM, verifying against the VM's own CA, the state encrypted at rest with the data key
//! the entry brought); the pool refills; the VM starts again from that state; an ephemeral
//! TPM's first start manufactures (no plain entry was asked for yet), after which the pool keeps
//! one and the next start takes it. A `kill -9` of `serve` right after the claim and right
//! before the personalized state is published (fault points) loses nothing: the restarted
//! server cleans the claimed entry up and the VM's next start gets a TPM of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
#[path = "support/state_check.rs"]
mod state_check;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use server::{Server, manifest};

/// The reliability tests' firmware-only VM, its TPM persistent or not (EFI persistent).
fn vm(name: &str, persistent_tpm: bool) -> String {
    state_check::firmware_only_vm_yaml(name).replace(
        "tpm:\n            persistent: true",
        &format!("tpm:\n            persistent: {persistent_tpm}"),
    )
}

fn object(server: &Server, kind: &str, name: &str) -> Option<Value> {
    let out = server.kubectl(&["get", kind, name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn start_and_stop(server: &Server, name: &str) {
    server.cli_ok(&["start", name]);
    server.wait_for("the VM to run", Duration::from_secs(120), || {
        object(server, "vm", name).filter(|v| v["status"]["printableStatus"] == "Running")
    });
    server.cli_ok(&["stop", name]);
    server.wait_for("the VM to stop", Duration::from_secs(120), || {
        object(server, "vm", name)
            .filter(|v| v["status"]["printableStatus"] == "Stopped")
            .filter(|_| object(server, "vmi", name).is_none())
    });
}

/// Ready entries of the pool whose profile says `kind` (plain or sealed).
fn ready(data_dir: &Path, kind: &str) -> usize {
    std::fs::read_dir(data_dir.join("tpm-pool/ready"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("profile"))
                        .is_ok_and(|p| p.contains(&format!("kind={kind}")))
                })
                .count()
        })
        .unwrap_or(0)
}

fn pool_takes(log: &str, vm: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("took a pooled TPM") && l.contains(&format!("vm=\"{vm}\"")))
        .count()
}

#[test]
fn first_starts_take_a_pooled_tpm_made_this_vms() {
    let server = Server::start_with(true, &["--tpm-pool-size", "1"]);
    let data = server.data_dir();
    server.wait_for("the pool to fill", Duration::from_secs(120), || {
        (ready(&data, "sealed") == 1).then_some(())
    });
    assert_eq!(
        ready(&data, "plain"),
        0,
        "plain entries only once asked for"
    );

    // A persistent TPM's first start takes it.
    let path = manifest(&server, "pooled.yaml", &vm("pooled", true));
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    start_and_stop(&server, "pooled");
    assert_eq!(pool_takes(&server.log(), "pooled"), 1, "{}", server.log());
    let uuid =
        object(&server, "vm", "pooled").unwrap()["spec"]["template"]["spec"]["domain"]["firmware"]
            ["uuid"]
            .as_str()
            .unwrap()
            .to_owned();
    let body: Value =
        serde_json::from_str(&server.cli_ok(&["tpm", "ek", "pooled", "-o", "json"])).unwrap();
    let certs = body["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2, "{body}");
    for cert in certs {
        assert_eq!(cert["chainVerified"], true, "{cert}");
        let pem = cert["pem"].as_str().unwrap();
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-text"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(pem.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("pooled:{uuid}")), "{text}");
        assert!(!text.contains("ferrovirt-tpm-pool"), "{text}");
    }
    // Encrypted at rest with the data key the entry brought (its record is in the volume).
    let volume = server.state_volume_dir("pooled");
    let record = volume.join("meta/ferrovirt/state-key.json");
    assert!(record.exists(), "the data key's record is in the volume");
    let state = std::fs::read_dir(volume.join("swtpm"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("tpm2/tpm2-00.permall");
    let bytes = std::fs::read(&state).unwrap();
    assert!(ferrovirt_tpm::is_encrypted_state(&bytes), "state encrypted");

    // The pool refills; the VM starts again from its state (no second take).
    server.wait_for("the pool to refill", Duration::from_secs(120), || {
        (ready(&data, "sealed") == 1).then_some(())
    });
    start_and_stop(&server, "pooled");
    assert_eq!(pool_takes(&server.log(), "pooled"), 1);

    // Ephemeral TPMs: the first start manufactures and asks for plain entries; the next takes one.
    let path = manifest(&server, "eph.yaml", &vm("eph", false));
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    start_and_stop(&server, "eph");
    assert_eq!(pool_takes(&server.log(), "eph"), 0);
    server.wait_for("a plain entry", Duration::from_secs(120), || {
        (ready(&data, "plain") == 1).then_some(())
    });
    start_and_stop(&server, "eph");
    assert_eq!(pool_takes(&server.log(), "eph"), 1, "{}", server.log());
}

#[test]
fn a_crash_while_a_pooled_tpm_is_personalized_leaves_no_half_tpm() {
    if !ferrovirt_storage::failpoints::compiled_in() {
        let required = std::env::var("FERROVIRT_REQUIRE_FAILPOINTS").is_ok_and(|v| v == "1");
        eprintln!("skipped: this build has no fault points (--features ferrovirt/failpoints)");
        assert!(
            !required,
            "FERROVIRT_REQUIRE_FAILPOINTS=1 but the build has no fault points"
        );
        return;
    }
    let mut server = Server::start_with(true, &["--tpm-pool-size", "1"]);
    let data = server.data_dir();
    for (i, point) in ["tpm.pool.after-claim", "tpm.pool.before-publish"]
        .into_iter()
        .enumerate()
    {
        assert!(ferrovirt_storage::failpoints::POINTS.contains(&point));
        let name = format!("crash{i}");
        server.wait_for("the pool to fill", Duration::from_secs(120), || {
            (ready(&data, "sealed") == 1).then_some(())
        });
        server.terminate();
        server.env = vec![(
            "FERROVIRT_FAILPOINTS".into(),
            format!("{point}=1*return(crash)"),
        )];
        server.spawn();
        let path = manifest(&server, &format!("{name}.yaml"), &vm(&name, true));
        server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
        // The crash may take the answer with it.
        let _ = server.cli(&["start", &name]);
        assert!(
            server.wait_exit(Duration::from_secs(60)),
            "serve did not crash at {point}:\n{}",
            server.log()
        );
        server.env = Vec::new();
        server.spawn();
        // The claimed entry is gone; no TPM state was published by the crashed start.
        server.wait_for("the claimed entry removed", Duration::from_secs(30), || {
            (std::fs::read_dir(data.join("tpm-pool/claimed"))
                .unwrap()
                .count()
                == 0)
                .then_some(())
        });
        // The VM runs (the controller retries the start) with a TPM of its own.
        server.wait_for("the VM to run", Duration::from_secs(120), || {
            object(&server, "vm", &name).filter(|v| v["status"]["printableStatus"] == "Running")
        });
        server.cli_ok(&["stop", &name]);
        server.wait_for("the VM to stop", Duration::from_secs(120), || {
            object(&server, "vm", &name).filter(|v| v["status"]["printableStatus"] == "Stopped")
        });
        let body: Value =
            serde_json::from_str(&server.cli_ok(&["tpm", "ek", &name, "-o", "json"])).unwrap();
        for cert in body["certificates"].as_array().unwrap() {
            assert_eq!(cert["chainVerified"], true, "{point}: {cert}");
        }
        let problems = state_check::check_states(&data);
        assert!(problems.is_empty(), "{point}: {problems:?}");
    }
}
