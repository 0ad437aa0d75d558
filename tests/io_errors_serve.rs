//! Issue 18 item 2 at the API level: a real `ferrovirt serve` whose storage fails with ENOSPC or
//! EIO (fault points returning the error, `crates/storage/src/failpoints.rs`) during a VM start,
//! a stop, a state generation record, a snapshot and a volume import. For each: the operation
//! fails with the OS error named, a Warning Event says so through the API (`kubectl get events`),
//! the previous state is intact (every generation verifies, no state file gone), and once the
//! fault is gone the same operation succeeds. Then `serve` is SIGKILLed in the middle of an
//! import: the restarted server removes the partial import and the import can be repeated.
//!
//! A firmware-only VM (persistent TPM + EFI + Secure Boot, no disk): no guest boots. Needs the
//! build with fault points (`--features ferrovirt/failpoints`); without it the test says so (and
//! fails when `FERROVIRT_REQUIRE_FAILPOINTS=1`). `FERROVIRT_RELIABILITY_SIZE=full` injects both
//! ENOSPC and EIO into every operation; the quick size (default) one of them per operation. `FERROVIRT_RELIABILITY_REPORT_API=FILE` receives
//! one line per case (`operation point fault outcome`) for `scripts/reliability.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
#[path = "support/state_check.rs"]
mod state_check;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use server::{Server, manifest};
use state_check::{check_states, check_states_with, kill_all_using, processes_using, wait_until};

const VM: &str = "iovm";
const PVC: &str = "importpvc";

const PVC_YAML: &str = "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: importpvc
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Start,
    Stop,
    Record,
    Snapshot,
    Import,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Record => "generation record",
            Op::Snapshot => "snapshot",
            Op::Import => "import",
        }
    }

    /// The fault point that fails it.
    fn point(self) -> &'static str {
        match self {
            // The start's record of the state it starts from (the state changed while stopped).
            Op::Start => "state.prepare.before-record",
            // The stop's fsync and check of the state after QEMU and swtpm exited.
            Op::Stop => "state.finish.before-check",
            // The copy of the state into a new generation (at the stop).
            Op::Record => "generations.record.copy",
            Op::Snapshot => "snapshots.publish.before-rename",
            Op::Import => "import.write-file",
        }
    }

    /// The Event that must say so: (reason, object name).
    fn event(self) -> (&'static str, &'static str) {
        match self {
            Op::Start => ("FailedCreate", VM),
            Op::Stop | Op::Record => ("Failed", VM),
            Op::Snapshot => ("VirtualMachineSnapshotFailed", ""),
            Op::Import => ("ErrImportFailed", PVC),
        }
    }
}

fn errno_text(fault: &str) -> &'static str {
    match fault {
        "enospc" => "No space left on device",
        _ => "Input/output error",
    }
}

struct Rig {
    server: Server,
    runtime_dir: PathBuf,
    _runtime_parent: tempfile::TempDir,
}

fn object(server: &Server, kind: &str, name: &str) -> Option<Value> {
    let out = server.kubectl(&["get", kind, name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The Warning Events about `name` with `reason` whose message names `text`.
fn events(server: &Server, name: &str, reason: &str, text: &str) -> Vec<String> {
    let out = server.kubectl_ok(&["get", "events", "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
        .filter(|e| e["type"] == "Warning")
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .filter(|m| m.contains(text))
        .collect()
}

impl Rig {
    fn new() -> Self {
        let runtime_parent = tempfile::Builder::new()
            .prefix("fvio")
            .tempdir_in("/tmp")
            .unwrap();
        let runtime_dir = runtime_parent.path().join("run");
        let server = Server::start_with(true, &["--runtime-dir", runtime_dir.to_str().unwrap()]);
        let vm_yaml = state_check::firmware_only_vm_yaml(VM);
        for (file, yaml) in [("vm.yaml", vm_yaml.as_str()), ("pvc.yaml", PVC_YAML)] {
            let path = manifest(&server, file, yaml);
            server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
        }
        Rig {
            server,
            runtime_dir,
            _runtime_parent: runtime_parent,
        }
    }

    fn restart_with(&mut self, faults: &str) {
        self.server.terminate();
        self.server.env = if faults.is_empty() {
            Vec::new()
        } else {
            vec![("FERROVIRT_FAILPOINTS".into(), faults.into())]
        };
        self.server.spawn();
    }

    fn status(&self) -> String {
        object(&self.server, "vm", VM)
            .and_then(|vm| vm["status"]["printableStatus"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Result<(), String> {
        let out = self.server.cli(args);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ferrovirt {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn start(&self) -> Result<(), String> {
        self.cli(&["start", VM])?;
        wait_until("VM Running", Duration::from_secs(90), || {
            self.status() == "Running"
        })
    }

    fn stop(&self) -> Result<(), String> {
        self.cli(&["stop", VM])?;
        self.wait_stopped()
    }

    fn wait_stopped(&self) -> Result<(), String> {
        wait_until(
            "VM Stopped, no QEMU or swtpm",
            Duration::from_secs(90),
            || self.status() == "Stopped" && processes_using(&self.runtime_dir).is_empty(),
        )
    }

    /// Changes a UEFI variable of the stopped VM, so that the next start records its state.
    fn change_state(&self, value: usize) -> Result<(), String> {
        let path = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/{VM}/efivars/IoErrors-1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0ff"
        );
        let body = serde_json::json!({"data": format!("{value:08x}"), "attributes": 7});
        let (code, answer) = self.server.json("PUT", &path, Some(&body));
        if (200..300).contains(&code) {
            Ok(())
        } else {
            Err(format!("efivars PUT: HTTP {code} {answer}"))
        }
    }

    fn snapshot(&self, name: &str) -> Result<(), String> {
        let yaml = format!(
            "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineSnapshot\nmetadata:\n  name: {name}\nspec:\n  source:\n    apiGroup: kubevirt.io\n    kind: VirtualMachine\n    name: {VM}\n"
        );
        let path = manifest(&self.server, &format!("{name}.yaml"), &yaml);
        self.server
            .kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
        Ok(())
    }

    /// The snapshot's phase once settled (`Succeeded` when ready, `Failed`).
    fn snapshot_settled(&self, name: &str) -> Result<bool, String> {
        let mut ready = false;
        wait_until(
            &format!("VirtualMachineSnapshot {name} ready or failed"),
            Duration::from_secs(90),
            || {
                object(&self.server, "vmsnapshot", name).is_some_and(|s| {
                    ready = s["status"]["readyToUse"] == true;
                    ready || s["status"]["phase"] == "Failed"
                })
            },
        )?;
        Ok(ready)
    }

    /// `PUT .../persistentvolumeclaims/importpvc/volumeimport?format=raw`: (HTTP code, body).
    fn import(&self, bytes: &[u8]) -> Result<(u16, String), String> {
        let path = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/default/persistentvolumeclaims/{PVC}/volumeimport?format=raw"
        );
        self.server
            .try_request("PUT", &path, Some("application/octet-stream"), bytes)
            .map(|(code, body)| (code, String::from_utf8_lossy(&body).into_owned()))
            .map_err(|e| format!("volumeimport: {e}"))
    }

    fn volume_dir(&self) -> PathBuf {
        let pvc = object(&self.server, "pvc", PVC).unwrap();
        let volume = pvc["spec"]["volumeName"].as_str().unwrap();
        self.server.data_dir().join("volumes").join(volume)
    }

    fn volume_files(&self) -> Vec<String> {
        let mut files: Vec<String> = std::fs::read_dir(self.volume_dir())
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// One case: the operation under the fault, the error, the Event, the state, the recovery.
    fn case(&mut self, op: Op, fault: &str, n: usize) -> Vec<String> {
        let mut violations = Vec::new();
        let text = errno_text(fault);
        let snapshot_name = format!("snap-{n}");
        let (reason, on) = op.event();
        let on = if op == Op::Snapshot {
            snapshot_name.as_str()
        } else {
            on
        };
        let before = events(&self.server, on, reason, text).len();
        if op == Op::Start
            && let Err(e) = self.change_state(n)
        {
            return vec![e];
        }
        self.restart_with(&format!("{}=1*return({fault})", op.point()));
        let payload = vec![u8::try_from(n).unwrap_or(7); 64 << 10];
        // The operation under the fault, and what it answered.
        match op {
            Op::Start => {
                let _ = self.cli(&["start", VM]);
            }
            Op::Stop | Op::Record => {
                if let Err(e) = self.start() {
                    return vec![format!("setup: {e}")];
                }
                let _ = self.cli(&["stop", VM]);
                if let Err(e) = wait_until("the run to end", Duration::from_secs(60), || {
                    processes_using(&self.runtime_dir).is_empty()
                }) {
                    violations.push(e);
                }
            }
            Op::Snapshot => {
                let _ = self.snapshot(&snapshot_name);
                match self.snapshot_settled(&snapshot_name) {
                    Ok(false) => {}
                    Ok(true) => violations.push("the snapshot is ready under the fault".into()),
                    Err(e) => violations.push(e),
                }
            }
            Op::Import => match self.import(&payload) {
                Ok((code, body)) if code >= 500 && body.contains(text) => {}
                Ok((code, body)) => violations.push(format!(
                    "import under {fault}: HTTP {code} {body} (wanted 5xx naming {text:?})"
                )),
                Err(e) => violations.push(e),
            },
        }
        // The Event, through the API.
        let said = wait_until(
            &format!("a Warning Event {reason} on {on} naming {text:?}"),
            Duration::from_secs(30),
            || events(&self.server, on, reason, text).len() > before,
        );
        if let Err(e) = said {
            violations.push(e);
        }
        if op == Op::Start && self.status() == "Running" {
            violations.push("the VM runs although its start failed".into());
        }
        // The previous state is intact; nothing half-written is visible.
        self.restart_with("");
        if matches!(op, Op::Start | Op::Stop | Op::Record) {
            if let Err(e) = self.wait_stopped() {
                violations.push(format!("after the fault: {e}"));
                kill_all_using(&self.runtime_dir);
            }
            violations.extend(check_states_with(&self.server.data_dir(), false));
        }
        if op == Op::Import && !self.volume_files().is_empty() {
            violations.push(format!(
                "the failed import left {:?} in the volume",
                self.volume_files()
            ));
        }
        // Recovery: the same operation succeeds once the fault is gone.
        match op {
            Op::Start | Op::Stop | Op::Record => {
                if let Err(e) = self.start().and_then(|()| self.stop()) {
                    violations.push(format!("recovery: {e}"));
                }
                violations.extend(check_states(&self.server.data_dir()));
            }
            Op::Snapshot => {
                let again = format!("{snapshot_name}-again");
                let _ = self.snapshot(&again);
                match self.snapshot_settled(&again) {
                    Ok(true) => {}
                    Ok(false) => violations.push("recovery: the next snapshot failed".into()),
                    Err(e) => violations.push(format!("recovery: {e}")),
                }
            }
            Op::Import => {
                match self.import(&payload) {
                    Ok((code, _)) if (200..300).contains(&code) => {}
                    Ok((code, body)) => {
                        violations.push(format!("recovery: import HTTP {code} {body}"));
                    }
                    Err(e) => violations.push(format!("recovery: {e}")),
                }
                let image = std::fs::read(self.volume_dir().join("disk.img")).unwrap_or_default();
                if image != payload {
                    violations.push("recovery: the imported disk.img differs from the body".into());
                }
                violations.extend(self.empty_the_volume());
            }
        }
        violations
    }

    /// Deletes and re-creates the PVC (an import fills only an empty volume).
    fn empty_the_volume(&self) -> Option<String> {
        self.server
            .kubectl_ok(&["delete", "pvc", PVC, "--wait=false"]);
        wait_until("the PVC deleted", Duration::from_secs(30), || {
            object(&self.server, "pvc", PVC).is_none()
        })
        .err()
    }

    fn recreate_pvc(&self) -> Result<(), String> {
        let path = manifest(&self.server, "pvc.yaml", PVC_YAML);
        self.server
            .kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
        wait_until("the PVC Bound", Duration::from_secs(30), || {
            object(&self.server, "pvc", PVC).is_some_and(|p| p["status"]["phase"] == "Bound")
        })
    }
}

#[test]
fn enospc_and_eio_give_a_clear_error_and_an_event_and_the_state_survives() {
    if !ferrovirt_storage::failpoints::compiled_in() {
        let required = std::env::var("FERROVIRT_REQUIRE_FAILPOINTS").is_ok_and(|v| v == "1");
        eprintln!("I/O-error test skipped: this build has no fault points");
        assert!(
            !required,
            "FERROVIRT_REQUIRE_FAILPOINTS=1 but the build has no fault points"
        );
        return;
    }
    for op in [Op::Start, Op::Stop, Op::Record, Op::Snapshot, Op::Import] {
        assert!(
            ferrovirt_storage::failpoints::POINTS.contains(&op.point()),
            "{} is not a known fault point",
            op.point()
        );
    }
    let mut rig = Rig::new();
    rig.start().unwrap();
    rig.stop().unwrap();
    assert!(check_states(&rig.server.data_dir()).is_empty());
    rig.recreate_pvc().unwrap();

    let mut report = String::new();
    let mut all = Vec::new();
    let mut n = 0;
    // `FERROVIRT_IO_ERRORS_OPS=import,snapshot` runs only those operations' cases.
    let only = std::env::var("FERROVIRT_IO_ERRORS_OPS").ok();
    let full = std::env::var("FERROVIRT_RELIABILITY_SIZE").is_ok_and(|v| v == "full");
    for op in [Op::Start, Op::Stop, Op::Record, Op::Snapshot, Op::Import] {
        if only
            .as_deref()
            .is_some_and(|only| !only.split(',').any(|o| o.trim() == op.name()))
        {
            continue;
        }
        // Quick size: one fault per operation, ENOSPC and EIO alternating; full: both.
        let faults: &[&str] = if full {
            &["enospc", "eio"]
        } else if matches!(op, Op::Stop | Op::Snapshot) {
            &["eio"]
        } else {
            &["enospc"]
        };
        for &fault in faults {
            n += 1;
            if op == Op::Import
                && object(&rig.server, "pvc", PVC).is_none()
                && let Err(e) = rig.recreate_pvc()
            {
                all.push(format!("{} / {fault}: {e}", op.name()));
                continue;
            }
            let started = Instant::now();
            let violations = rig.case(op, fault, n);
            let line = format!(
                "{}\t{fault}\t{}\t{}\t{:.1}s",
                op.name(),
                op.point(),
                violations.len(),
                started.elapsed().as_secs_f64()
            );
            eprintln!("io case (API): {line}");
            for v in &violations {
                eprintln!("    violation: {v}");
                all.push(format!("{} / {fault}: {v}", op.name()));
            }
            let _ = writeln!(report, "{line}");
        }
    }

    // kill -9 of serve in the middle of an import: the restarted server removes what it wrote
    // and the import can be repeated.
    rig.recreate_pvc().unwrap();
    let payload = vec![9u8; 64 << 10];
    rig.restart_with("import.write-file=1*return(crash)");
    let _ = rig.import(&payload);
    let crashed = rig.server.wait_exit(Duration::from_secs(30));
    rig.server.kill();
    rig.server.env = Vec::new();
    rig.server.spawn();
    let mut violations = Vec::new();
    if !crashed {
        violations.push("serve did not crash at import.write-file".to_owned());
    }
    match rig.import(&payload) {
        Ok((code, _)) if (200..300).contains(&code) => {}
        Ok((code, body)) => violations.push(format!("import after the crash: HTTP {code} {body}")),
        Err(e) => violations.push(format!("import after the crash: {e}")),
    }
    if std::fs::read(rig.volume_dir().join("disk.img")).unwrap_or_default() != payload {
        violations.push("after the crash and a new import, disk.img differs from the body".into());
    }
    if rig.volume_files().iter().any(|f| f != "disk.img") {
        violations.push(format!("left in the volume: {:?}", rig.volume_files()));
    }
    let line = format!("import\tcrash\timport.write-file\t{}\t-", violations.len());
    eprintln!("io case (API): {line}");
    for v in &violations {
        eprintln!("    violation: {v}");
        all.push(format!("import / kill -9 serve: {v}"));
    }
    let _ = writeln!(report, "{line}");

    if let Ok(path) = std::env::var("FERROVIRT_RELIABILITY_REPORT_API") {
        std::fs::write(path, &report).unwrap();
    }
    kill_all_using(&rig.runtime_dir);
    assert!(
        all.is_empty(),
        "{} violations:\n{}\n\nserve log tail:\n{}",
        all.len(),
        all.join("\n"),
        rig.server
            .log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
