//! Issue 18, the crash matrix: for every fault point of a VM's start and stop, the operation runs
//! against a real `ferrovirt serve` (real QEMU, swtpm, OVMF) with a firmware-only VM (persistent
//! TPM + persistent EFI variables + Secure Boot, no disk, no network card), and a fault hits it
//! exactly there:
//!
//! - `serve`: the server kills itself with SIGKILL at the point (`return(crash)`);
//! - `qemu` / `swtpm`: the server holds at the point (`return(hold)`) while the test SIGKILLs the
//!   VM's QEMU or swtpm (when it exists at that step).
//!
//! Then a server without faults runs on the same data dir and the invariants are checked:
//! the persistent state is intact (sha256 of the volume's TPM state and VARS equal to the newest
//! generation after the VM is stopped; every generation verifies; the known-good generation
//! exists), the VM starts again and reaches Running, no QEMU or swtpm is left over or doubled, no
//! runtime dir or lock blocks the start, and the API objects agree (VM Stopped without a running
//! VMI after the stop, Running with exactly one QEMU during the run).
//!
//! Needs a build with the `failpoints` feature (`scripts/test.sh` builds with it); without it
//! the test says so and fails when `FERROVIRT_REQUIRE_FAILPOINTS=1`. Size:
//! `FERROVIRT_RELIABILITY_SIZE=quick` (default: a `serve` crash at every point, QEMU/swtpm kills
//! at a few) or `full` (every point x every fault). `FERROVIRT_RELIABILITY_REPORT=FILE` receives
//! one line per case (`point fault (operation) outcome violations seconds`) for
//! `scripts/reliability.sh`; `FERROVIRT_CRASH_MATRIX_OPS=rollback,snapshot` runs only those
//! operations' cases (start, stop, rollback, snapshot, restore).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
#[path = "support/state_check.rs"]
mod state_check;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferrovirt_storage::generations::{EntryKind, GenerationReason};
use serde_json::Value;
use server::{Server, manifest};
use state_check::{
    Fault, check_states, check_states_with, generation_stores, kill_all_using, processes_using,
    qemus, sigkill, swtpms, wait_until,
};

const VM: &str = "crashvm";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Start,
    Stop,
    /// `PUT .../staterollback` of the stopped VM to an older generation.
    Rollback,
    /// An offline VirtualMachineSnapshot of the stopped VM.
    Snapshot,
    /// A VirtualMachineRestore of the stopped VM from a snapshot taken before its state changed.
    Restore,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Rollback => "rollback",
            Op::Snapshot => "snapshot",
            Op::Restore => "restore",
        }
    }
}

/// The points of a start and of a stop (a subset of `ferrovirt_storage::failpoints::POINTS`;
/// the test checks they are all listed there).
const START_POINTS: &[&str] = &[
    "state.prepare.before-check",
    "state.prepare.before-record",
    "engine.start.before-launch",
    "launcher.start.after-swtpm",
    "launcher.start.before-run-record",
    "launcher.start.after-run-record",
    "engine.start.after-running",
];
const STOP_POINTS: &[&str] = &[
    "engine.finish.before-state",
    "state.finish.before-check",
    "state.finish.before-record",
    "generations.record.copy",
    "generations.record.before-rename",
    "generations.record.after-rename",
    "state.finish.after-record",
    "generations.mark-known-good",
    "generations.prune",
    "generations.prune.remove",
    "engine.finish.before-runtime-cleanup",
];
/// The points of a rollback and of a VirtualMachineRestore (both put a generation back).
const RESTORE_POINTS: &[&str] = &[
    "generations.restore.before-replace",
    "generations.restore.between-targets",
];
const SNAPSHOT_POINTS: &[&str] = &["snapshots.publish.before-rename"];

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

fn vm_status(server: &Server) -> String {
    object(server, "vm", VM)
        .and_then(|vm| vm["status"]["printableStatus"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn vmi_phase(server: &Server) -> String {
    object(server, "vmi", VM)
        .and_then(|vmi| vmi["status"]["phase"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Rig {
    fn new() -> Self {
        let runtime_parent = tempfile::Builder::new()
            .prefix("fvcm")
            .tempdir_in("/tmp")
            .unwrap();
        let runtime_dir = runtime_parent.path().join("run");
        let server = Server::start_with(true, &["--runtime-dir", runtime_dir.to_str().unwrap()]);
        let path = manifest(&server, "vm.yaml", &state_check::firmware_only_vm_yaml(VM));
        server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
        Rig {
            server,
            runtime_dir,
            _runtime_parent: runtime_parent,
        }
    }

    fn data(&self) -> PathBuf {
        self.server.data_dir()
    }

    /// Restarts serve (SIGTERM: the VM keeps running and is adopted) with `env`.
    fn restart_with(&mut self, env: Vec<(String, String)>) {
        self.server.terminate();
        self.server.env = env;
        self.server.spawn();
    }

    fn start_vm(&self) -> Result<(), String> {
        let out = self.server.cli(&["start", VM]);
        if !out.status.success() {
            return Err(format!(
                "ferrovirt start: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    fn stop_vm(&self) -> Result<(), String> {
        let out = self.server.cli(&["stop", VM]);
        if !out.status.success() {
            return Err(format!(
                "ferrovirt stop: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    fn wait_running(&self) -> Result<(), String> {
        wait_until("VM Running with one QEMU", Duration::from_secs(90), || {
            vm_status(&self.server) == "Running"
                && vmi_phase(&self.server) == "Running"
                && qemus(&self.runtime_dir).len() == 1
        })
    }

    fn wait_stopped(&self) -> Result<(), String> {
        wait_until(
            "VM Stopped, no QEMU or swtpm",
            Duration::from_secs(90),
            || {
                vm_status(&self.server) == "Stopped"
                    && vmi_phase(&self.server) != "Running"
                    && processes_using(&self.runtime_dir).is_empty()
            },
        )
    }

    /// The invariants after a fault (see the module docs); returns the violations.
    fn check(&mut self) -> Vec<String> {
        let mut violations = Vec::new();
        // The restarted server first finishes what the fault interrupted (a start goes on to
        // Running, a stop to Stopped): wait until the VM is in a settled state.
        let settled = wait_until("the VM to settle", Duration::from_secs(120), || {
            !matches!(
                vm_status(&self.server).as_str(),
                "" | "Starting" | "Stopping" | "Provisioning" | "WaitingForVolumeBinding"
            )
        });
        if let Err(e) = settled {
            violations.push(format!("{e} (status {:?})", vm_status(&self.server)));
        }
        // Whatever the fault left, the VM can be brought to Stopped.
        if vm_status(&self.server) == "Running" || !qemus(&self.runtime_dir).is_empty() {
            if qemus(&self.runtime_dir).len() > 1 {
                violations.push(format!(
                    "{} QEMUs for one VM",
                    qemus(&self.runtime_dir).len()
                ));
            }
            if swtpms(&self.runtime_dir).len() > 1 {
                violations.push(format!(
                    "{} swtpm on one state",
                    swtpms(&self.runtime_dir).len()
                ));
            }
            if let Err(e) = self.stop_vm() {
                violations.push(e);
            }
        }
        if let Err(e) = self.wait_stopped() {
            violations.push(format!(
                "after the fault: {e} (status {:?}, VMI {:?}, processes {:?})",
                vm_status(&self.server),
                vmi_phase(&self.server),
                processes_using(&self.runtime_dir)
            ));
            kill_all_using(&self.runtime_dir);
        }
        // What was acknowledged is intact: every generation verifies, no state file is gone. (The
        // state equals the newest generation after the next start and stop, checked below.)
        violations.extend(check_states_with(&self.data(), false));
        // The VM starts again, with one QEMU and one swtpm, and stops cleanly.
        match self.start_vm().and_then(|()| self.wait_running()) {
            Ok(()) => {
                if swtpms(&self.runtime_dir).len() != 1 {
                    violations.push(format!(
                        "restart: {} swtpm processes",
                        swtpms(&self.runtime_dir).len()
                    ));
                }
                if let Err(e) = self.stop_vm().and_then(|()| self.wait_stopped()) {
                    violations.push(format!("stop after the restart: {e}"));
                    kill_all_using(&self.runtime_dir);
                }
                violations.extend(check_states(&self.data()));
            }
            Err(e) => violations.push(format!(
                "the VM does not start again: {e} (status {:?}); serve log tail: {}",
                vm_status(&self.server),
                tail(&self.server.log(), 15)
            )),
        }
        violations
    }

    /// Changes a UEFI variable of the stopped VM (`ferrovirt efi vars set`), so that the next
    /// start checks and records the state and its stop writes a generation of its own (identical
    /// states are not recorded again): every point of the record and the prune is on the path.
    /// (The start's fast path, state unchanged since the last stop, is what the endurance run
    /// takes.)
    fn change_state(&self, value: usize) -> Result<(), String> {
        let path = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/{VM}/efivars/CrashMatrix-1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0ff"
        );
        let body = serde_json::json!({"data": format!("{value:08x}"), "attributes": 7});
        let (code, answer) = self.server.json("PUT", &path, Some(&body));
        if (200..300).contains(&code) {
            Ok(())
        } else {
            Err(format!("efivars PUT: HTTP {code} {answer}"))
        }
    }

    /// `staterekey` with a new data key (`ferrovirt state rekey --rotate-data-key`): every state
    /// file, the TPM state included, is written again under the new key.
    fn rotate_data_key(&self) -> Result<(), String> {
        let path = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/{VM}/staterekey"
        );
        let body = serde_json::json!({"newKEK": false, "rotateDataKey": true});
        let (code, answer) = self.server.json("PUT", &path, Some(&body));
        if (200..300).contains(&code) {
            Ok(())
        } else {
            Err(format!("staterekey: HTTP {code} {answer}"))
        }
    }

    /// The generation a rollback case goes back to: the oldest one whose every state file
    /// differs from the state now (so that a rollback half done shows).
    fn rollback_target(&self) -> Option<u64> {
        let store = generation_stores(&self.data()).into_iter().next()?;
        let list = ferrovirt_storage::Generations::new(&store).list().ok()?;
        let newest = list.last()?.manifest.as_ref().ok()?.clone();
        let now = |logical: &str| current_digest(&newest, logical);
        list.iter()
            .filter_map(|g| g.manifest.as_ref().ok())
            .filter(|m| !matches!(m.reason, GenerationReason::PreRestore { .. }))
            .find(|m| {
                m.entries
                    .iter()
                    .filter(|e| !e.files.is_empty())
                    .all(|e| Some(digest(m, &e.logical_name)) != now(&e.logical_name))
            })
            .map(|m| m.id.0)
    }

    fn rollback(&self, generation: u64) -> Result<(), String> {
        let path = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/{VM}/staterollback"
        );
        let body = serde_json::json!({ "generation": generation }).to_string();
        match self
            .server
            .try_request("PUT", &path, Some("application/json"), body.as_bytes())
        {
            Ok((code, _)) if (200..300).contains(&code) => Ok(()),
            Ok((code, answer)) => Err(format!(
                "staterollback: HTTP {code} {}",
                String::from_utf8_lossy(&answer)
            )),
            // The server died at the fault point while answering.
            Err(_) => Ok(()),
        }
    }

    fn snapshot(&self, name: &str) -> Result<(), String> {
        let yaml = format!(
            "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineSnapshot\nmetadata:\n  name: {name}\nspec:\n  source:\n    apiGroup: kubevirt.io\n    kind: VirtualMachine\n    name: {VM}\n"
        );
        self.apply(name, &yaml)
    }

    fn restore(&self, name: &str, snapshot: &str) -> Result<(), String> {
        let yaml = format!(
            "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineRestore\nmetadata:\n  name: {name}\nspec:\n  target:\n    apiGroup: kubevirt.io\n    kind: VirtualMachine\n    name: {VM}\n  virtualMachineSnapshotName: {snapshot}\n"
        );
        self.apply(name, &yaml)
    }

    fn apply(&self, name: &str, yaml: &str) -> Result<(), String> {
        let path = manifest(&self.server, &format!("{name}.yaml"), yaml);
        let out = self
            .server
            .kubectl(&["apply", "-f", path.to_str().unwrap()]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "kubectl apply {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// A snapshot is ready (its content verifies) or failed with a reason; never left in
    /// progress.
    fn wait_snapshot_settled(&self, name: &str) -> Result<(), String> {
        wait_until(
            &format!("VirtualMachineSnapshot {name} ready or failed"),
            Duration::from_secs(90),
            || {
                object(&self.server, "vmsnapshot", name).is_some_and(|s| {
                    s["status"]["readyToUse"] == true || s["status"]["phase"] == "Failed"
                })
            },
        )
        .map_err(|e| {
            format!(
                "{e}: {}",
                object(&self.server, "vmsnapshot", name)
                    .map(|s| s["status"].to_string())
                    .unwrap_or_default()
            )
        })
    }

    /// The snapshot's content verifies (sha256 of every file) when it is ready, and no staging
    /// directory of an interrupted take is left.
    fn check_snapshot_store(&self, name: &str) -> Vec<String> {
        let mut violations = Vec::new();
        let store = ferrovirt_storage::SnapshotStore::new(&self.data());
        if let Some(snapshot) = object(&self.server, "vmsnapshot", name)
            && snapshot["status"]["readyToUse"] == true
        {
            let content = snapshot["status"]["virtualMachineSnapshotContentName"]
                .as_str()
                .unwrap_or_default();
            if let Err(e) = store.verify(content) {
                violations.push(format!(
                    "snapshot {name} is ready but {content} does not verify: {e}"
                ));
            }
        }
        let leftovers: Vec<String> = std::fs::read_dir(store.root())
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(".tmp-"))
                    .collect()
            })
            .unwrap_or_default();
        if !leftovers.is_empty() {
            violations.push(format!("staging left in the snapshot store: {leftovers:?}"));
        }
        violations
    }

    fn wait_restore_complete(&self, name: &str) -> Result<(), String> {
        wait_until(
            &format!("VirtualMachineRestore {name} complete"),
            Duration::from_secs(90),
            || {
                object(&self.server, "vmrestore", name)
                    .is_some_and(|r| r["status"]["complete"] == true)
            },
        )
        .map_err(|e| {
            format!(
                "{e}: {}",
                object(&self.server, "vmrestore", name)
                    .map(|s| s["status"].to_string())
                    .unwrap_or_default()
            )
        })
    }

    /// One case; returns (outcome, violations). The VM is Stopped before and after.
    fn run(&mut self, op: Op, point: &str, fault: Fault, case: usize) -> (String, Vec<String>) {
        if let Err(e) = self.change_state(case) {
            return ("setup failed".into(), vec![e]);
        }
        let mut rollback_target = 0;
        match op {
            Op::Stop => {
                // The run to stop, started by a server without faults.
                if let Err(e) = self.start_vm().and_then(|()| self.wait_running()) {
                    return ("setup failed".into(), vec![e]);
                }
            }
            Op::Rollback => {
                // A new data key first: the TPM state, the VARS and the key record then differ
                // from every generation before it, so a rollback done by half (one file of each)
                // shows: the VM could not decrypt its state.
                if let Err(e) = self.rotate_data_key() {
                    return ("setup failed".into(), vec![e]);
                }
                match self.rollback_target() {
                    Some(id) => rollback_target = id,
                    None => {
                        return (
                            "setup failed".into(),
                            vec!["no generation whose every state file differs from now".into()],
                        );
                    }
                }
            }
            Op::Restore => {
                // A snapshot of the state now, then a state change for the restore to undo.
                let setup = self
                    .snapshot(&format!("base-{case}"))
                    .and_then(|()| self.wait_snapshot_settled(&format!("base-{case}")))
                    .and_then(|()| self.change_state(case + 10_000));
                if let Err(e) = setup {
                    return ("setup failed".into(), vec![e]);
                }
            }
            Op::Start | Op::Snapshot => {}
        }
        let before = newest_generation(&self.data());
        let reached = self.data().with_file_name(format!("reached-{point}"));
        let _ = std::fs::remove_file(&reached);
        let action = if fault == Fault::Serve {
            "return(crash)"
        } else {
            "return(hold)"
        };
        self.restart_with(vec![
            ("FERROVIRT_FAILPOINTS".into(), format!("{point}=1*{action}")),
            (
                "FERROVIRT_FAILPOINTS_REACHED".into(),
                reached.display().to_string(),
            ),
            ("FERROVIRT_FAILPOINTS_HOLD_MS".into(), "4000".into()),
        ]);
        let asked = match op {
            Op::Start => self.start_vm(),
            Op::Stop => self.stop_vm(),
            Op::Rollback => self.rollback(rollback_target),
            Op::Snapshot => self.snapshot(&format!("snap-{case}")),
            Op::Restore => self.restore(&format!("restore-{case}"), &format!("base-{case}")),
        };
        if let Err(e) = asked {
            return ("operation refused".into(), vec![e]);
        }
        let outcome = match fault {
            Fault::Serve => {
                if self.server.wait_exit(Duration::from_secs(30)) {
                    "crashed there".to_owned()
                } else {
                    "not reached".to_owned()
                }
            }
            Fault::Qemu | Fault::Swtpm => {
                let hit = wait_until("the point", Duration::from_secs(30), || reached.exists());
                if hit.is_err() {
                    "not reached".to_owned()
                } else {
                    let victims = if fault == Fault::Qemu {
                        qemus(&self.runtime_dir)
                    } else {
                        swtpms(&self.runtime_dir)
                    };
                    victims.iter().for_each(|pid| sigkill(*pid));
                    std::thread::sleep(Duration::from_secs(5));
                    if victims.is_empty() {
                        "no such process at this step".to_owned()
                    } else {
                        "killed there".to_owned()
                    }
                }
            }
        };
        // A server without faults on the same data dir (SIGKILL first if it still runs: the
        // restart a crash would get).
        self.server.kill();
        self.server.env = Vec::new();
        self.server.spawn();
        if outcome == "not reached" {
            // Still bring the VM to Stopped for the next case.
            let mut violations = Vec::new();
            if vm_status(&self.server) == "Running" {
                let _ = self.stop_vm();
            }
            if let Err(e) = self.wait_stopped() {
                violations.push(e);
                kill_all_using(&self.runtime_dir);
            }
            return (outcome, violations);
        }
        // The operation's own objects settle before the VM is started again (a restore needs it
        // stopped), and what a restore replaced is known before the stop below prunes.
        let mut violations = Vec::new();
        match op {
            Op::Snapshot => {
                let name = format!("snap-{case}");
                violations.extend(self.wait_snapshot_settled(&name).err());
                violations.extend(self.check_snapshot_store(&name));
            }
            Op::Restore => {
                violations.extend(self.wait_restore_complete(&format!("restore-{case}")).err())
            }
            Op::Start | Op::Stop | Op::Rollback => {}
        }
        let after_fault = manifests_since(&self.data(), before);
        violations.extend(self.check());
        if matches!(op, Op::Rollback | Op::Restore) {
            violations.extend(check_wholly_restored(&self.data(), before, &after_fault));
        }
        if !violations.is_empty() {
            // Keep the server's log of a failing case for the report.
            let dir = std::env::temp_dir().join("ferrovirt-crash-matrix");
            let _ = std::fs::create_dir_all(&dir);
            let kept = dir.join(format!("{point}-{fault:?}.log"));
            let _ = std::fs::write(&kept, self.server.log());
            eprintln!("    serve log kept: {}", kept.display());
        }
        (outcome, violations)
    }
}

/// The newest generation id of the VM (0: none).
fn newest_generation(data: &std::path::Path) -> u64 {
    generation_stores(data)
        .into_iter()
        .next()
        .and_then(|store| ferrovirt_storage::Generations::new(&store).list().ok())
        .and_then(|list| list.last().map(|g| g.id.0))
        .unwrap_or(0)
}

/// Every readable manifest of the VM's generations, by id (those newer than `since`, and every
/// generation a pre-restore among them names).
fn manifests_since(
    data: &std::path::Path,
    since: u64,
) -> BTreeMap<u64, ferrovirt_storage::Manifest> {
    let Some(store) = generation_stores(data).into_iter().next() else {
        return BTreeMap::new();
    };
    let list = ferrovirt_storage::Generations::new(&store)
        .list()
        .unwrap_or_default();
    let all: BTreeMap<u64, ferrovirt_storage::Manifest> = list
        .into_iter()
        .filter_map(|g| g.manifest.ok().map(|m| (g.id.0, m)))
        .collect();
    let mut wanted: BTreeMap<u64, ferrovirt_storage::Manifest> = all
        .range(since + 1..)
        .map(|(id, m)| (*id, m.clone()))
        .collect();
    let targets: Vec<u64> = wanted
        .values()
        .filter_map(|m| match m.reason {
            GenerationReason::PreRestore { restoring } => Some(restoring.0),
            _ => None,
        })
        .collect();
    for id in targets {
        if let Some(m) = all.get(&id) {
            wanted.insert(id, m.clone());
        }
    }
    wanted
}

/// The (file name, sha256) pairs a generation holds for one logical name.
fn digest(m: &ferrovirt_storage::Manifest, logical: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = m
        .entry(logical)
        .map(|e| {
            e.files
                .iter()
                .map(|f| {
                    let name = std::path::Path::new(&f.path)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (name, f.sha256.clone())
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The (file name, sha256) pairs of the live state at the place a generation recorded it.
fn current_digest(m: &ferrovirt_storage::Manifest, logical: &str) -> Option<Vec<(String, String)>> {
    let entry = m.entry(logical)?;
    let mut files = Vec::new();
    for f in &entry.files {
        let name = std::path::Path::new(&f.path).file_name()?;
        let path = match entry.kind {
            EntryKind::Dir => entry.original_path.join(name),
            _ => entry.original_path.clone(),
        };
        let (_, sha) = ferrovirt_storage::generations::sha256_file(&path).ok()?;
        files.push((name.to_string_lossy().into_owned(), sha));
    }
    files.sort();
    Some(files)
}

/// After a rollback or a restore was interrupted: the state the next start began from (its
/// `before-start` generation) is wholly the generation being restored or wholly the state it
/// was replacing (the pre-restore generation), never a mix of both.
fn check_wholly_restored(
    data: &std::path::Path,
    before: u64,
    after_fault: &BTreeMap<u64, ferrovirt_storage::Manifest>,
) -> Vec<String> {
    let now = manifests_since(data, before);
    let Some((&start_id, started)) = now
        .range(before + 1..)
        .find(|(_, m)| m.reason == GenerationReason::BeforeStart)
    else {
        return vec!["no before-start generation was recorded by the start after the fault".into()];
    };
    let known = |id: u64| now.get(&id).or_else(|| after_fault.get(&id));
    // The last pre-restore before that start (none: nothing was replaced).
    let Some(pre) = now
        .range(before + 1..start_id)
        .chain(after_fault.range(before + 1..start_id))
        .map(|(_, m)| m)
        .filter(|m| matches!(m.reason, GenerationReason::PreRestore { .. }))
        .max_by_key(|m| m.id)
    else {
        return Vec::new();
    };
    let GenerationReason::PreRestore { restoring } = pre.reason else {
        return Vec::new();
    };
    let Some(target) = known(restoring.0) else {
        return vec![format!(
            "generation {restoring} (being restored) is gone before the state could be compared"
        )];
    };
    let logicals: Vec<&str> = pre
        .entries
        .iter()
        .filter(|e| !e.files.is_empty())
        .map(|e| e.logical_name.as_str())
        .collect();
    let whole = |m: &ferrovirt_storage::Manifest| {
        logicals.iter().all(|l| digest(started, l) == digest(m, l))
    };
    if whole(target) || whole(pre) {
        return Vec::new();
    }
    let parts: Vec<String> = logicals
        .iter()
        .map(|l| {
            let from = if digest(started, l) == digest(target, l) {
                format!("generation {restoring} (restored)")
            } else if digest(started, l) == digest(pre, l) {
                format!("generation {} (replaced)", pre.id)
            } else {
                "neither".to_owned()
            };
            format!("{l} from {from}")
        })
        .collect();
    vec![format!(
        "the start after the fault began from a half-restored state: {}",
        parts.join(", ")
    )]
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn every_fault_point_of_start_and_stop_keeps_the_state_and_the_vm_startable() {
    if !ferrovirt_storage::failpoints::compiled_in() {
        let required = std::env::var("FERROVIRT_REQUIRE_FAILPOINTS").is_ok_and(|v| v == "1");
        eprintln!(
            "crash matrix skipped: this build has no fault points (cargo nextest run --features failpoints)"
        );
        assert!(
            !required,
            "FERROVIRT_REQUIRE_FAILPOINTS=1 but the build has no fault points"
        );
        return;
    }
    for point in START_POINTS
        .iter()
        .chain(STOP_POINTS)
        .chain(RESTORE_POINTS)
        .chain(SNAPSHOT_POINTS)
    {
        assert!(
            ferrovirt_storage::failpoints::POINTS.contains(point),
            "{point} is not a known fault point"
        );
    }
    let full = std::env::var("FERROVIRT_RELIABILITY_SIZE").is_ok_and(|v| v == "full");
    let process_fault_points: &[&str] = &[
        "launcher.start.after-swtpm",
        "launcher.start.after-run-record",
        "engine.start.after-running",
        "engine.finish.before-state",
    ];
    let mut cases = Vec::new();
    for (op, points) in [(Op::Start, START_POINTS), (Op::Stop, STOP_POINTS)] {
        for point in points {
            for fault in [Fault::Serve, Fault::Qemu, Fault::Swtpm] {
                if fault == Fault::Serve || full || process_fault_points.contains(point) {
                    cases.push((op, *point, fault));
                }
            }
        }
    }
    // Operations on the stopped VM: no QEMU or swtpm runs, so only `serve` is killed. The quick
    // size restores at one point (the one a half restore would show at).
    for point in RESTORE_POINTS {
        cases.push((Op::Rollback, *point, Fault::Serve));
        if full || *point == "generations.restore.between-targets" {
            cases.push((Op::Restore, *point, Fault::Serve));
        }
    }
    for point in SNAPSHOT_POINTS {
        cases.push((Op::Snapshot, *point, Fault::Serve));
    }

    // `FERROVIRT_CRASH_MATRIX_OPS=rollback,restore` runs only those operations' cases.
    if let Ok(only) = std::env::var("FERROVIRT_CRASH_MATRIX_OPS") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        cases.retain(|(op, _, _)| only.contains(&op.name()));
    }

    let mut rig = Rig::new();
    // Baseline: one clean run (TPM manufactured, a known-good generation).
    rig.start_vm().unwrap();
    rig.wait_running().unwrap();
    rig.stop_vm().unwrap();
    rig.wait_stopped().unwrap();
    let baseline = check_states(&rig.data());
    assert!(baseline.is_empty(), "{baseline:?}");

    let mut report = String::new();
    let mut all_violations = Vec::new();
    for (case, (op, point, fault)) in cases.into_iter().enumerate() {
        let started = Instant::now();
        let (outcome, violations) = rig.run(op, point, fault, case + 1);
        let line = format!(
            "{point}\t{} ({})\t{outcome}\t{}\t{:.1}s",
            fault.name(),
            op.name(),
            violations.len(),
            started.elapsed().as_secs_f64()
        );
        eprintln!("crash matrix: {line}");
        for v in &violations {
            eprintln!("    violation: {v}");
            all_violations.push(format!("{point} / {}: {v}", fault.name()));
        }
        let _ = writeln!(report, "{line}");
    }
    if let Ok(path) = std::env::var("FERROVIRT_RELIABILITY_REPORT") {
        std::fs::write(path, &report).unwrap();
    }
    kill_all_using(&rig.runtime_dir);
    assert!(
        all_violations.is_empty(),
        "{} violations:\n{}\n\nserve log tail:\n{}",
        all_violations.len(),
        all_violations.join("\n"),
        tail(&rig.server.log(), 40)
    );
}

/// Whether this build has fault points; without them a test that needs them is skipped (and
/// fails under `FERROVIRT_REQUIRE_FAILPOINTS=1`).
fn fault_points_compiled_in() -> bool {
    if ferrovirt_storage::failpoints::compiled_in() {
        return true;
    }
    let required = std::env::var("FERROVIRT_REQUIRE_FAILPOINTS").is_ok_and(|v| v == "1");
    eprintln!("skipped: this build has no fault points (--features ferrovirt/failpoints)");
    assert!(
        !required,
        "FERROVIRT_REQUIRE_FAILPOINTS=1 but the build has no fault points"
    );
    false
}

/// The VM's `printableStatus` ("" when it cannot be read).
fn printable_status(server: &Server, name: &str) -> String {
    object(server, "vm", name)
        .and_then(|vm| vm["status"]["printableStatus"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Waits until the VM shows `want` (for `Stopped`, also until its VMI is gone).
fn wait_printable(server: &Server, name: &str, want: &str) {
    wait_until(&format!("{name} {want}"), Duration::from_secs(120), || {
        printable_status(server, name) == want
            && (want != "Stopped" || object(server, "vmi", name).is_none())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(&server.log(), 30)));
}

/// Starts the VM, waits until it runs, stops it; the VM as it was while running.
fn run_and_stop(server: &Server, name: &str) -> Value {
    server.cli_ok(&["start", name]);
    wait_printable(server, name, "Running");
    let running = object(server, "vm", name).unwrap();
    server.cli_ok(&["stop", name]);
    wait_printable(server, name, "Stopped");
    running
}

/// The RSA EK certificate's fingerprint in a VM's status.
fn ek_fingerprint(vm: &Value) -> Value {
    vm["status"]["tpm"]["ekCertificateSHA256"]["rsa"].clone()
}

/// Restarts `serve` armed to crash (`kill -9` semantics) at `point` the first time it is reached.
/// The request that leads there may lose its answer to the crash: callers do not require it.
fn arm_crash(server: &mut Server, point: &str) {
    server.terminate();
    server.env = vec![(
        "FERROVIRT_FAILPOINTS".into(),
        format!("{point}=1*return(crash)"),
    )];
    server.spawn();
}

/// Waits for the armed `serve` to crash at `point`, then starts it again without faults.
fn restart_after_crash(server: &mut Server, point: &str) {
    assert!(
        server.wait_exit(Duration::from_secs(60)),
        "serve did not crash at {point}:\n{}",
        tail(&server.log(), 20)
    );
    server.env = Vec::new();
    server.spawn();
}

/// The VM's backend-storage PVCs (label `persistent-state-for`).
fn backend_pvcs(server: &Server, vm: &str) -> Vec<Value> {
    let out = server.kubectl_ok(&[
        "get",
        "pvc",
        "-l",
        &format!("persistent-state-for={vm}"),
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

/// `kubectl apply` of `text` (written to `file` in the test's dir).
fn apply_text(server: &Server, text: &str, file: &str) {
    let path = manifest(server, file, text);
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
}

/// Switching persistence off retires the backend-storage volume at the next start (moved to
/// `<data>/retired/`, the PVC deleted). A `kill -9` of `serve` right before the move (fault point
/// `generations.retire`) loses nothing: the restarted server retires it, every generation
/// verifies, and switching persistence on again brings the same TPM back out of the generations
/// (same EK certificate fingerprint, Event `StateRestored`).
#[test]
fn a_crash_while_a_volume_is_retired_keeps_the_tpm() {
    if !fault_points_compiled_in() {
        return;
    }
    const NAME: &str = "retirevm";
    let mut server = Server::start(true);
    let data = server.data_dir();
    let persistent = state_check::firmware_only_vm_yaml(NAME);
    let ephemeral = persistent.replace("persistent: true", "persistent: false");

    apply_text(&server, &persistent, "on.yaml");
    let first = run_and_stop(&server, NAME);
    let ek = ek_fingerprint(&first);
    assert!(ek.is_string(), "{first}");

    // Persistence off; the start that retires the volume crashes right before the move.
    apply_text(&server, &ephemeral, "off.yaml");
    arm_crash(&mut server, "generations.retire");
    // The crash may take the answer with it: the request's outcome is not what is tested.
    let _ = server.cli(&["start", NAME]);
    restart_after_crash(&mut server, "generations.retire");
    // The restarted server finishes it: the volume retired, the PVC gone, the VM running.
    wait_until("the volume retired", Duration::from_secs(120), || {
        std::fs::read_dir(data.join("retired")).is_ok_and(|d| d.count() == 1)
            && backend_pvcs(&server, NAME).is_empty()
    })
    .unwrap();
    wait_printable(&server, NAME, "Running");
    // Every generation verifies, and the retired copy holds the newest one's files unchanged.
    let stores = generation_stores(&data);
    assert_eq!(stores.len(), 1);
    let generations = ferrovirt_storage::Generations::new(&stores[0]);
    let list = generations.list().unwrap();
    for info in &list {
        generations.verify(info.id).unwrap();
    }
    let newest = list.last().unwrap().manifest.as_ref().unwrap();
    let retired = std::fs::read_dir(data.join("retired"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let volumes = data.join("volumes");
    let mut compared = 0;
    for entry in &newest.entries {
        for file in &entry.files {
            let original = match entry.kind {
                EntryKind::Dir => entry
                    .original_path
                    .join(std::path::Path::new(&file.path).file_name().unwrap()),
                _ => entry.original_path.clone(),
            };
            // <data>/volumes/<volume>/<rel> -> <data>/retired/<volume>.retired-<t>/<rel>
            let rel = original.strip_prefix(&volumes).unwrap();
            let rel: PathBuf = rel.components().skip(1).collect();
            let (_, sha) =
                ferrovirt_storage::generations::sha256_file(&retired.join(&rel)).unwrap();
            assert_eq!(sha, file.sha256, "{}", rel.display());
            compared += 1;
        }
    }
    assert!(compared >= 2, "the TPM state and the VARS were compared");
    server.cli_ok(&["stop", NAME]);
    wait_printable(&server, NAME, "Stopped");

    // Persistence on again: the same TPM comes back out of the generations.
    apply_text(&server, &persistent, "on-again.yaml");
    let again = run_and_stop(&server, NAME);
    assert_eq!(
        ek_fingerprint(&again),
        ek,
        "the TPM restored from the generations is the one from before"
    );
    let events = server.kubectl_ok(&["get", "events", "-o", "json"]);
    assert!(events.contains("StateRestored"), "{events}");
    let problems = check_states(&data);
    assert!(problems.is_empty(), "{problems:?}");
}

/// A VirtualMachineClone (KubeVirt's: a snapshot of the source, restored into the new VM, whose
/// first start puts the state into its empty volume). A `kill -9` of `serve` while the clone's
/// snapshot is published (`snapshots.publish.before-rename`) and while the clone's first start
/// restores the state (`generations.restore.before-replace`) loses nothing: the clone
/// succeeds after the restart, the new VM runs with the source's TPM (same EK fingerprint, the
/// default `copy` policy), the source still runs with it, and every generation verifies.
#[test]
fn a_crash_while_a_vm_is_cloned_leaves_source_and_clone_whole() {
    if !fault_points_compiled_in() {
        return;
    }
    const SOURCE: &str = "clonesrc";
    let mut server = Server::start(true);
    let data = server.data_dir();
    let clone_yaml = |name: &str, target: &str| {
        format!(
            "apiVersion: clone.kubevirt.io/v1beta1
kind: VirtualMachineClone
metadata:
  name: {name}
spec:
  source: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: {SOURCE}}}
  target: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: {target}}}
"
        )
    };
    let wait_clone = |server: &Server, name: &str| {
        wait_until("the clone to succeed", Duration::from_secs(120), || {
            object(server, "vmclone", name).is_some_and(|c| c["status"]["phase"] == "Succeeded")
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {:?}\n{}",
                object(server, "vmclone", name),
                tail(&server.log(), 20)
            )
        });
    };

    apply_text(
        &server,
        &state_check::firmware_only_vm_yaml(SOURCE),
        "src.yaml",
    );
    let source = run_and_stop(&server, SOURCE);
    let ek = ek_fingerprint(&source);
    assert!(ek.is_string(), "{source}");

    // 1. The crash while the clone's snapshot is published.
    arm_crash(&mut server, "snapshots.publish.before-rename");
    let path = manifest(&server, "c1.yaml", &clone_yaml("c1", "clone1"));
    let _ = server.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    restart_after_crash(&mut server, "snapshots.publish.before-rename");
    wait_clone(&server, "c1");
    let first = run_and_stop(&server, "clone1");
    assert_eq!(ek_fingerprint(&first), ek, "clone1 has the source's TPM");

    // 2. The crash while the clone's first start restores the state into its volume.
    apply_text(&server, &clone_yaml("c2", "clone2"), "c2.yaml");
    wait_clone(&server, "c2");
    arm_crash(&mut server, "generations.restore.before-replace");
    let _ = server.cli(&["start", "clone2"]);
    restart_after_crash(&mut server, "generations.restore.before-replace");
    wait_printable(&server, "clone2", "Running");
    server.cli_ok(&["stop", "clone2"]);
    wait_printable(&server, "clone2", "Stopped");
    let second = object(&server, "vm", "clone2").unwrap();
    assert_eq!(ek_fingerprint(&second), ek, "clone2 has the source's TPM");

    // The source is untouched and still runs with its TPM; every generation verifies.
    let again = run_and_stop(&server, SOURCE);
    assert_eq!(ek_fingerprint(&again), ek);
    let problems = check_states(&data);
    assert!(problems.is_empty(), "{problems:?}");
}

/// The backend-storage PVC's volume (the local-path provisioner). A `kill -9` of `serve` right
/// after a first start created the volume, before the PVC is bound
/// (`volumes.create.after-mkdir`), and right after a deleted PVC's volume was moved aside, before
/// it is removed (`volumes.delete.after-move-aside`), loses nothing: the bound volume is the one
/// created (`pvc-<uid>`, no second one), the deleted volume's leftovers are removed at the
/// restart, and the next start restores the same TPM out of the generations into a new volume.
#[test]
fn a_crash_while_a_pvc_is_bound_or_deleted_loses_nothing() {
    if !fault_points_compiled_in() {
        return;
    }
    const NAME: &str = "pvcvm";
    let mut server = Server::start(true);
    let data = server.data_dir();
    let volumes = || -> Vec<String> {
        std::fs::read_dir(data.join("volumes"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let pvc = |server: &Server| backend_pvcs(server, NAME).into_iter().next();
    // 1. The first start's volume created, the PVC not yet bound.
    apply_text(
        &server,
        &state_check::firmware_only_vm_yaml(NAME),
        "pvcvm.yaml",
    );
    arm_crash(&mut server, "volumes.create.after-mkdir");
    let _ = server.cli(&["start", NAME]);
    restart_after_crash(&mut server, "volumes.create.after-mkdir");
    wait_printable(&server, NAME, "Running");
    let bound = pvc(&server).unwrap();
    let volume = bound["spec"]["volumeName"].as_str().unwrap().to_owned();
    assert_eq!(volumes(), vec![volume.clone()], "one volume, the bound one");
    let ek = ek_fingerprint(&object(&server, "vm", NAME).unwrap());
    assert!(ek.is_string());
    server.cli_ok(&["stop", NAME]);
    wait_printable(&server, NAME, "Stopped");

    // 2. The PVC deleted: its volume moved aside, not yet removed.
    arm_crash(&mut server, "volumes.delete.after-move-aside");
    let pvc_name = bound["metadata"]["name"].as_str().unwrap().to_owned();
    // The crash may come before the answer (seen in a clean-clone run: kubectl got EOF).
    let _ = server.kubectl(&["delete", "pvc", &pvc_name, "--wait=false"]);
    restart_after_crash(&mut server, "volumes.delete.after-move-aside");
    wait_until(
        "the PVC and its volume gone",
        Duration::from_secs(60),
        || pvc(&server).is_none() && volumes().is_empty(),
    )
    .unwrap_or_else(|e| panic!("{e}: volumes {:?}", volumes()));
    // The next start restores the TPM into a new volume.
    server.cli_ok(&["start", NAME]);
    wait_printable(&server, NAME, "Running");
    let restored = object(&server, "vm", NAME).unwrap();
    assert_eq!(ek_fingerprint(&restored), ek, "the same TPM");
    server.cli_ok(&["stop", NAME]);
    wait_printable(&server, NAME, "Stopped");
    let events = server.kubectl_ok(&["get", "events", "-o", "json"]);
    assert!(events.contains("StateRestored"), "{events}");
    assert_eq!(volumes().len(), 1, "{:?}", volumes());
    let problems = check_states(&data);
    assert!(problems.is_empty(), "{problems:?}");
}

/// A VirtualMachineExport of a stopped VM's backend storage (KubeVirt's export server, the state
/// decrypted for the token's holder, as a generated `tar.gz`). `serve` killed (`kill -9`) after
/// the first half of the archive was downloaded: the restarted server serves the same export at
/// the same link, `curl -C -` resumes, and the result is byte for byte the archive downloaded in
/// one piece before the crash and after it (the archive is generated again, identically); the
/// VM's state is unchanged (every generation verifies, the state equals the newest one) and the
/// VM starts again with the same TPM. (A kill in the middle of one response cannot be made to
/// break it here: the state's files fit in the sockets' buffers, which the kernel still delivers.)
#[test]
fn a_crash_in_the_middle_of_an_export_download_changes_nothing() {
    const NAME: &str = "exportvm";
    let mut server = Server::start(true);
    let data = server.data_dir();
    apply_text(
        &server,
        &state_check::firmware_only_vm_yaml(NAME),
        "exportvm.yaml",
    );
    let ek = ek_fingerprint(&run_and_stop(&server, NAME));
    assert!(ek.is_string());

    server.cli_ok(&["vmexport", "create", "ex1", "--vm", NAME]);
    let ready = |server: &Server| {
        wait_until("the export to be Ready", Duration::from_secs(60), || {
            object(server, "vmexport", "ex1").is_some_and(|e| e["status"]["phase"] == "Ready")
        })
        .unwrap();
        object(server, "vmexport", "ex1").unwrap()
    };
    let export = ready(&server);
    let links = &export["status"]["links"]["external"];
    assert_eq!(links["volumes"][0]["formats"][1]["format"], "tar.gz");
    let url = links["volumes"][0]["formats"][1]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let work = tempfile::tempdir_in("/tmp").unwrap();
    let ca = work.path().join("ca.pem");
    std::fs::write(&ca, links["cert"].as_str().unwrap()).unwrap();
    let secret = export["status"]["tokenSecretRef"]
        .as_str()
        .unwrap()
        .to_owned();
    let encoded = server.kubectl_ok(&["get", "secret", &secret, "-o", "jsonpath={.data.token}"]);
    let token = String::from_utf8(
        std::process::Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(encoded.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap()
            .stdout,
    )
    .unwrap();
    let header = format!("x-kubevirt-export-token: {token}");
    let curl = |out: &std::path::Path, extra: &[&str]| {
        std::process::Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&ca)
            .args(["-H", &header, "-o"])
            .arg(out)
            .args(extra)
            .arg(&url)
            .spawn()
            .unwrap()
    };

    // The whole archive, then its first half; serve killed; the rest resumed after the restart.
    let before = work.path().join("before.tar.gz");
    assert!(curl(&before, &[]).wait().unwrap().success());
    let want = std::fs::read(&before).unwrap();
    assert!(want.len() > 1000, "{} bytes", want.len());
    let broken = work.path().join("state.tar.gz");
    let half = format!("0-{}", want.len() / 2 - 1);
    assert!(curl(&broken, &["-r", &half]).wait().unwrap().success());
    assert_eq!(
        std::fs::metadata(&broken).unwrap().len(),
        (want.len() / 2) as u64
    );
    server.kill();
    server.spawn();
    ready(&server);
    let resumed = curl(&broken, &["-C", "-"]).wait().unwrap();
    assert!(resumed.success());
    let after = work.path().join("after.tar.gz");
    assert!(curl(&after, &[]).wait().unwrap().success());
    assert!(
        std::fs::read(&after).unwrap() == want,
        "the archive generated again after the restart is the same"
    );
    assert!(
        std::fs::read(&broken).unwrap() == want,
        "the download resumed after the crash equals the whole archive"
    );

    // Nothing changed: the state is the newest generation, the VM starts with its TPM.
    let problems = check_states(&data);
    assert!(problems.is_empty(), "{problems:?}");
    server.kubectl_ok(&["delete", "vmexport", "ex1"]);
    assert_eq!(ek_fingerprint(&run_and_stop(&server, NAME)), ek);
}
