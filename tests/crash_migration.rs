//! Issue 18, crash cases of a live migration between two `ferrovirt serve` hosts (network
//! namespaces, `support/netns.rs`; KubeVirt's decentralized VMIM objects, as
//! `tests/migration_executor.rs` writes them). For every fault point of the migration path
//! (`ferrovirt_storage::failpoints::POINTS`: `migration.send.*` on the source,
//! `engine.incoming.*` on the destination) a firmware-only VM (persistent TPM + Secure Boot VARS,
//! no disk, 128 MiB) is migrated from host a to host b, and the `serve` of the side that reaches
//! the point kills itself there (`return(crash)`, a `kill -9`; that `serve` is then started
//! again on the same data dir), or holds there (`return(hold)`) while the test kills that side's
//! QEMU or swtpm of the VM (`kill -9`; every point at the full size, QEMU at two points at the
//! quick size). The two hosts settle, and the invariants are checked:
//!
//! - the guest runs on at most one host: never a QEMU of the VM on both hosts once settled;
//! - both VMIMs end in a terminal phase (`Succeeded`/`Failed`) consistent with where the guest
//!   runs (on b: both succeeded, a's copy retired: its VM deleted, its generations kept; on a:
//!   both failed), and each VM's `printableStatus` says where it runs;
//! - no QEMU or swtpm of the VM is left on the host where it does not run, nor its runtime dir;
//!   a host the guest did not move to keeps nothing of the attempt (no generation on b);
//! - host a keeps its generations (as many as before, every one verifies);
//! - a guest that ended on b after a migration that succeeded comes back on b by itself (its VM
//!   is `Always` since the take-over) and a's copy stays retired (or, when b never confirmed,
//!   halted with `MigrationNotConfirmed`); a guest that runs nowhere after a failed migration
//!   starts again on host a; then, stopped, its TPM state and VARS equal the newest generation
//!   (sha256) on the host that ran it.
//!
//! Needs the `failpoints` build (`FERROVIRT_REQUIRE_FAILPOINTS=1` makes its absence fail).
//! `FERROVIRT_RELIABILITY_REPORT_MIGRATION=FILE` receives one line per case in the crash
//! matrix's format (`point  fault  outcome  violations  seconds`) for `scripts/reliability.sh`;
//! `FERROVIRT_CRASH_MIGRATION_POINTS=a,b` runs only those points.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
#[path = "support/state_check.rs"]
mod state_check;
#[path = "support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use server::netns::TestNetwork;
use server::{Server, manifest, object, text};
use state_check::{Fault, check_retired_states_of, check_states_of, processes_using, wait_until};
use support::migration::{destination_secret_json, receive_vmim, send_vmim};

/// Which host's `serve` reaches a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

/// The points where the quick size kills QEMU too (the full size kills QEMU and swtpm at every
/// point): the source's paused QEMU while it waits for the destination's word, and the
/// destination's QEMU right after its guest resumed.
const QUICK_PROCESS_POINTS: &[&str] = &[
    "migration.send.after-switchover",
    "engine.incoming.after-resume",
];

/// Every fault point of the migration path, with the side that reaches it, in the order a
/// migration reaches them.
const CASES: &[(&str, Side)] = &[
    ("engine.incoming.waiting", Side::Destination),
    ("migration.send.after-target-ready", Side::Source),
    ("migration.send.at-pre-switchover", Side::Source),
    ("engine.incoming.before-install", Side::Destination),
    ("engine.incoming.before-record", Side::Destination),
    ("engine.incoming.before-resume", Side::Destination),
    ("migration.send.after-switchover", Side::Source),
    ("engine.incoming.after-resume", Side::Destination),
    ("migration.send.after-confirm", Side::Source),
];

/// Where the guest runs once the hosts settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Source,
    Destination,
    Nowhere,
}

/// The VM's firmware-only manifest with a fixed firmware UUID (the same on both hosts).
fn vm_yaml(name: &str, uuid: &str, run_strategy: &str, annotations: &str) -> String {
    state_check::firmware_only_vm_yaml(name)
        .replace(
            "runStrategy: Manual",
            &format!("runStrategy: {run_strategy}"),
        )
        .replace(
            &format!("  name: {name}\n"),
            &format!("  name: {name}\n  annotations: {{{annotations}}}\n"),
        )
        .replace(
            "        firmware:\n",
            &format!("        firmware:\n          uuid: {uuid}\n"),
        )
}

/// The pids of the VM's QEMU (`qemu`) or swtpm processes on a host (their command lines name
/// the host's data dir and the VM's UUID).
fn vm_processes(server: &Server, uuid: &str) -> Vec<(i32, String)> {
    processes_using(&server.data_dir())
        .into_iter()
        .filter(|(_, cmdline)| cmdline.contains(uuid))
        .collect()
}

fn qemu_count(server: &Server, uuid: &str) -> usize {
    vm_processes(server, uuid)
        .iter()
        .filter(|(_, c)| c.contains("qemu-system"))
        .count()
}

fn generation_count(server: &Server, uuid: &str) -> usize {
    let dir = server.data_dir().join("state-generations/vms").join(uuid);
    ferrovirt_storage::Generations::new(&dir)
        .list()
        .map(|l| l.len())
        .unwrap_or(0)
}

/// The files of the VM's backend-storage volume on a host outside `meta/` (its data-key record
/// and EK copies): the TPM state, the VARS, the local CA.
fn state_files(server: &Server, vm: &str) -> Vec<String> {
    let out = server.kubectl(&[
        "get",
        "pvc",
        "-l",
        &format!("persistent-state-for={vm}"),
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let Some(volume) = list["items"][0]["spec"]["volumeName"].as_str() else {
        return Vec::new();
    };
    let root = server.data_dir().join("volumes").join(volume);
    let mut found = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(&root).unwrap().display().to_string();
            if rel == "meta" {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(rel);
            }
        }
    }
    found
}

fn runtime_dir(server: &Server, uuid: &str) -> PathBuf {
    server.data_dir().join("run").join(uuid)
}

fn apply(server: &Server, file: &str, yaml: &str) {
    let path = manifest(server, file, yaml);
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct Hosts {
    a: Server,
    b: Server,
    _network: TestNetwork,
}

impl Hosts {
    fn side(&mut self, side: Side) -> &mut Server {
        match side {
            Side::Source => &mut self.a,
            Side::Destination => &mut self.b,
        }
    }

    /// One case: returns (outcome, violations).
    fn run(&mut self, case: usize, point: &str, side: Side, fault: Fault) -> (String, Vec<String>) {
        let vm = format!("mig{case}");
        let uuid = format!("6d1b7a52-0c3e-4f1a-9b2d-{case:012}");
        let migration_id = format!("crash-{case}");
        let (out_name, in_name) = (format!("{vm}-out"), format!("{vm}-in"));

        // The VM runs on host a; its receiver waits on host b.
        apply(
            &self.a,
            &format!("{vm}.yaml"),
            &vm_yaml(&vm, &uuid, "Always", ""),
        );
        apply(
            &self.b,
            &format!("{vm}.yaml"),
            &vm_yaml(
                &vm,
                &uuid,
                "WaitAsReceiver",
                "kubevirt.io/restore-run-strategy: Always",
            ),
        );
        let ready = wait_until(
            "the VM running on a, its receiver waiting on b",
            Duration::from_secs(120),
            || {
                text(&object(&self.a, "vmi", &vm), "/status/phase") == "Running"
                    && text(&object(&self.b, "vmi", &vm), "/status/phase") == "WaitingForSync"
            },
        );
        if let Err(e) = ready {
            return ("setup failed".into(), vec![e]);
        }
        let generations_before = generation_count(&self.a, &uuid);

        // The side's serve armed to crash, or to hold while the test kills a process, at the
        // point.
        let reached = std::env::temp_dir().join(format!(
            "ferrovirt-crash-migration-{}-{case}.reached",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&reached);
        {
            let server = self.side(side);
            server.terminate();
            let action = if fault == Fault::Serve {
                "crash"
            } else {
                "hold"
            };
            server.env = vec![
                (
                    "FERROVIRT_FAILPOINTS".into(),
                    format!("{point}=1*return({action})"),
                ),
                (
                    "FERROVIRT_FAILPOINTS_REACHED".into(),
                    reached.display().to_string(),
                ),
                ("FERROVIRT_FAILPOINTS_HOLD_MS".into(), "4000".into()),
            ];
            server.spawn();
        }
        let started = Instant::now();
        apply(
            &self.b,
            &format!("{in_name}.yaml"),
            &receive_vmim(&in_name, &vm, &migration_id),
        );
        apply(
            &self.a,
            &format!("{out_name}.yaml"),
            &send_vmim(&out_name, &vm, &migration_id, &self.b.url()),
        );
        let outcome = if fault == Fault::Serve {
            let crashed = self.side(side).wait_exit(Duration::from_secs(90));
            let outcome = if crashed {
                format!(
                    "crashed there after {:.1}s",
                    started.elapsed().as_secs_f64()
                )
            } else {
                "not reached".to_owned()
            };
            // The restart a crash gets (SIGKILL first if it did not crash), without faults.
            let server = self.side(side);
            server.kill();
            server.env = Vec::new();
            server.spawn();
            outcome
        } else if wait_until("the point", Duration::from_secs(90), || reached.exists()).is_err() {
            "not reached".to_owned()
        } else {
            let binary = if fault == Fault::Qemu {
                "qemu-system"
            } else {
                "swtpm"
            };
            let victims: Vec<i32> = vm_processes(self.side(side), &uuid)
                .into_iter()
                .filter(|(_, cmdline)| cmdline.contains(binary))
                .map(|(pid, _)| pid)
                .collect();
            victims.iter().for_each(|pid| state_check::sigkill(*pid));
            if victims.is_empty() {
                "no such process at this step".to_owned()
            } else {
                format!("killed there after {:.1}s", started.elapsed().as_secs_f64())
            }
        };
        let _ = std::fs::remove_file(&reached);
        let mut violations = self.check(&vm, &uuid, &out_name, &in_name, generations_before);
        if !violations.is_empty() {
            let dir = std::env::temp_dir().join("ferrovirt-crash-migration");
            let _ = std::fs::create_dir_all(&dir);
            for (host, server) in [("a", &self.a), ("b", &self.b)] {
                let kept = dir.join(format!("{point}-{}-{host}.log", fault.process()));
                let _ = std::fs::write(&kept, server.log());
                eprintln!("    serve log of host {host} kept: {}", kept.display());
            }
        }
        // Whatever happened, the next case starts from hosts where this VM does not run.
        violations.extend(self.tidy(&vm, &uuid));
        (outcome, violations)
    }

    /// Where the guest runs now (by the VMIs and the QEMU processes), and what disagrees.
    fn place(&self, vm: &str, uuid: &str) -> (Place, Vec<String>) {
        let mut violations = Vec::new();
        let (qa, qb) = (qemu_count(&self.a, uuid), qemu_count(&self.b, uuid));
        let va = text(&object(&self.a, "vmi", vm), "/status/phase");
        let vb = text(&object(&self.b, "vmi", vm), "/status/phase");
        if qa + qb > 1 {
            violations.push(format!(
                "{qa} QEMU on host a and {qb} on host b for one VM (VMI phases {va:?} / {vb:?})"
            ));
        }
        if va == "Running" && vb == "Running" {
            violations.push("the VMI is Running on both hosts".into());
        }
        let place = match (va == "Running", vb == "Running") {
            (true, _) => Place::Source,
            (false, true) => Place::Destination,
            _ => Place::Nowhere,
        };
        for (host, running, count) in [("a", va == "Running", qa), ("b", vb == "Running", qb)] {
            if running && count != 1 {
                violations.push(format!("host {host}: VMI Running with {count} QEMU"));
            }
            if !running && count != 0 {
                violations.push(format!(
                    "host {host}: {count} QEMU while its VMI is not Running"
                ));
            }
        }
        (place, violations)
    }

    fn check(
        &self,
        vm: &str,
        uuid: &str,
        out_name: &str,
        in_name: &str,
        generations_before: usize,
    ) -> Vec<String> {
        let mut violations = Vec::new();
        let terminal = |server: &Server, name: &str| {
            matches!(
                text(&object(server, "vmim", name), "/status/phase").as_str(),
                "Succeeded" | "Failed"
            )
        };
        // Settled: both migrations over, at most one QEMU, each VMI agreeing with its host.
        // A guest that runs nowhere while a VM of it says `Always` is on its way back (the VM
        // starts it again, after its back-off): not settled yet.
        let coming_back = || {
            [&self.a, &self.b]
                .iter()
                .any(|server| text(&object(server, "vm", vm), "/spec/runStrategy") == "Always")
        };
        let settled = wait_until("the hosts to settle", Duration::from_secs(150), || {
            terminal(&self.a, out_name) && terminal(&self.b, in_name) && {
                let (place, disagreements) = self.place(vm, uuid);
                disagreements.is_empty() && (place != Place::Nowhere || !coming_back())
            }
        });
        let (place, disagreements) = self.place(vm, uuid);
        if let Err(e) = settled {
            violations.push(format!(
                "{e}: source VMIM {:?}, destination VMIM {:?}",
                text(&object(&self.a, "vmim", out_name), "/status"),
                object(&self.b, "vmim", in_name).map(|o| o["status"].to_string())
            ));
        }
        violations.extend(disagreements);
        let out_phase = text(&object(&self.a, "vmim", out_name), "/status/phase");
        let in_phase = text(&object(&self.b, "vmim", in_name), "/status/phase");
        let status_a = text(&object(&self.a, "vm", vm), "/status/printableStatus");
        let status_b = text(&object(&self.b, "vm", vm), "/status/printableStatus");
        let strategy_a = text(&object(&self.a, "vm", vm), "/spec/runStrategy");
        eprintln!(
            "    settled: guest {place:?}; VMIMs {out_phase} / {in_phase}; VMs {status_a} ({strategy_a}) / {status_b}; generations a {} (before {generations_before}), b {}",
            generation_count(&self.a, uuid),
            generation_count(&self.b, uuid)
        );
        match place {
            Place::Destination => {
                if (out_phase.as_str(), in_phase.as_str()) != ("Succeeded", "Succeeded") {
                    violations.push(format!(
                        "the guest runs on b but the VMIMs are {out_phase} / {in_phase}"
                    ));
                }
                // Host a retires its copy: the VM goes once its VMI has ended. Unless the
                // destination never confirmed that its guest ran (it ended before the source
                // read it, e.g. its swtpm killed right after the resume, and b's VM started it
                // again): then a keeps its VM halted with a `MigrationNotConfirmed` Warning, as
                // designed (never resumed blind, never retired on a guess).
                let retired = wait_until("VM a retired", Duration::from_secs(60), || {
                    object(&self.a, "vm", vm).is_none()
                });
                let unconfirmed = || {
                    server::events(&self.a).iter().any(|e| {
                        e["reason"] == "MigrationNotConfirmed" && e["involvedObject"]["name"] == vm
                    }) && text(&object(&self.a, "vm", vm), "/spec/runStrategy") == "Halted"
                        && object(&self.a, "vmi", vm).is_none()
                };
                if retired.is_err() && unconfirmed() {
                    eprintln!(
                        "    host a: not confirmed by b, its VM kept halted (MigrationNotConfirmed)"
                    );
                } else if retired.is_err() || status_b != "Running" {
                    violations.push(format!(
                        "the guest runs on b but VM a is {status_a} ({strategy_a}, not retired), VM b {status_b}"
                    ));
                }
            }
            Place::Source => {
                if (out_phase.as_str(), in_phase.as_str()) != ("Failed", "Failed") {
                    violations.push(format!(
                        "the guest runs on a but the VMIMs are {out_phase} / {in_phase}"
                    ));
                }
                if status_a != "Running" || status_b == "Running" {
                    violations.push(format!(
                        "the guest runs on a but VM a is {status_a}, VM b {status_b}"
                    ));
                }
                // Host b keeps nothing of the attempt: a later migration is not refused.
                if generation_count(&self.b, uuid) != 0 {
                    violations.push(format!(
                        "host b keeps {} generations of a migration that failed",
                        generation_count(&self.b, uuid)
                    ));
                }
                if runtime_dir(&self.b, uuid).exists() {
                    violations.push("host b keeps the receiver's runtime dir".into());
                }
                let received = state_files(&self.b, vm);
                if !received.is_empty() {
                    violations.push(format!(
                        "host b's volume keeps what a failed migration wrote (a later one there is refused): {received:?}"
                    ));
                }
            }
            Place::Nowhere => {
                if !matches!(out_phase.as_str(), "Succeeded" | "Failed")
                    || !matches!(in_phase.as_str(), "Succeeded" | "Failed")
                {
                    violations.push(format!(
                        "the guest runs nowhere and the VMIMs are {out_phase} / {in_phase}"
                    ));
                }
            }
        }
        for (host, server, here) in [
            ("a", &self.a, place == Place::Source),
            ("b", &self.b, place == Place::Destination),
        ] {
            if !here {
                let left = vm_processes(server, uuid);
                if !left.is_empty() {
                    violations.push(format!("host {host}: processes left: {left:?}"));
                }
                if runtime_dir(server, uuid).exists() && place != Place::Nowhere {
                    violations.push(format!("host {host}: the VM's runtime dir is left"));
                }
            }
        }
        // The source keeps its generations.
        let after = generation_count(&self.a, uuid);
        if after < generations_before {
            violations.push(format!(
                "host a has {after} generations, {generations_before} before the migration"
            ));
        }
        // A retired copy (the guest moved) keeps its generations only; otherwise the volume's
        // state files are there too.
        let a_checked = if object(&self.a, "vm", vm).is_none() {
            check_retired_states_of(&self.a.data_dir(), uuid)
        } else {
            check_states_of(&self.a.data_dir(), uuid, false)
        };
        violations.extend(a_checked.into_iter().map(|v| format!("host a: {v}")));
        // A guest that runs nowhere after a migration that succeeded belongs to host b, whose
        // VM (runStrategy Always since the take-over) starts it again by itself, after its
        // crash-loop back-off; host a's copy stays retired (starting it there too would make two).
        if place == Place::Nowhere
            && (out_phase.as_str(), in_phase.as_str()) == ("Succeeded", "Succeeded")
        {
            if let Err(e) = wait_until(
                "the VM Running on b again",
                Duration::from_secs(150),
                || {
                    text(&object(&self.b, "vmi", vm), "/status/phase") == "Running"
                        && qemu_count(&self.b, uuid) == 1
                },
            ) {
                violations.push(format!(
                    "the migration succeeded, the guest then ended on b and does not start again there: {e}; log: {}",
                    tail(&self.b.log(), 15)
                ));
            }
            let (again, disagreements) = self.place(vm, uuid);
            violations.extend(disagreements);
            if again != Place::Destination {
                violations.push(format!("after b restarted it, the guest is at {again:?}"));
            }
            let retired = wait_until("VM a retired", Duration::from_secs(60), || {
                object(&self.a, "vm", vm).is_none()
            });
            if let Err(e) = retired {
                violations.push(format!(
                    "host a's VM is not retired after a migration that succeeded: {e}"
                ));
            }
        } else if place == Place::Nowhere {
            // A guest that runs nowhere after a failed migration starts again on the source.
            let out = self.a.cli(&["start", vm]);
            if !out.status.success() {
                violations.push(format!(
                    "the guest runs nowhere and does not start on a: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            } else if let Err(e) =
                wait_until("the VM Running on a", Duration::from_secs(90), || {
                    text(&object(&self.a, "vmi", vm), "/status/phase") == "Running"
                        && qemu_count(&self.a, uuid) == 1
                })
            {
                violations.push(format!(
                    "the guest runs nowhere and does not start again on a: {e}; log: {}",
                    tail(&self.a.log(), 15)
                ));
            }
        }
        violations
    }

    /// Stops the VM wherever it runs; then, on each host that has its state, the state equals
    /// the newest generation, and no process or runtime dir of it is left.
    fn tidy(&self, vm: &str, uuid: &str) -> Vec<String> {
        let mut violations = Vec::new();
        for (host, server) in [("a", &self.a), ("b", &self.b)] {
            if text(&object(server, "vmi", vm), "/status/phase") == "Running" {
                server.cli_ok(&["stop", vm]);
            }
            let stopped = wait_until(
                &format!("{vm} stopped on host {host}"),
                Duration::from_secs(90),
                || vm_processes(server, uuid).is_empty() && !runtime_dir(server, uuid).exists(),
            );
            if let Err(e) = stopped {
                violations.push(format!(
                    "host {host}: {e}: processes {:?}, runtime dir {}",
                    vm_processes(server, uuid),
                    runtime_dir(server, uuid).exists()
                ));
                for (pid, _) in vm_processes(server, uuid) {
                    state_check::sigkill(pid);
                }
            }
            if generation_count(server, uuid) > 0 && object(server, "vm", vm).is_some() {
                // The stop recorded the state: it is the newest generation.
                let _ = wait_until("the VMI gone", Duration::from_secs(30), || {
                    object(server, "vmi", vm).is_none()
                        || text(&object(server, "vmi", vm), "/status/phase") != "Running"
                });
                violations.extend(
                    check_states_of(&server.data_dir(), uuid, true)
                        .into_iter()
                        .map(|v| format!("host {host} after the stop: {v}")),
                );
            }
        }
        // The VM objects go, so the next case's VM is the only one that runs.
        for server in [&self.a, &self.b] {
            let _ = server.kubectl(&["delete", "vmim", "--all", "--wait=false"]);
            let _ = server.kubectl(&["delete", "vm", vm, "--wait=false"]);
        }
        violations
    }
}

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

#[test]
fn a_crash_at_every_step_of_a_live_migration_keeps_one_guest_and_its_state() {
    if !fault_points_compiled_in() {
        return;
    }
    let migration_points: Vec<&str> = ferrovirt_storage::failpoints::POINTS
        .iter()
        .copied()
        .filter(|p| p.starts_with("migration.") || p.starts_with("engine.incoming."))
        .collect();
    let listed: Vec<&str> = CASES.iter().map(|(p, _)| *p).collect();
    for point in &migration_points {
        assert!(listed.contains(point), "{point} has no crash case here");
    }
    let only: Option<Vec<String>> = std::env::var("FERROVIRT_CRASH_MIGRATION_POINTS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());

    let network = TestNetwork::create(2);
    let a = Server::start_in(&network.hosts[0], true, &[]);
    let b = Server::start_in(&network.hosts[1], true, &[]);
    apply(
        &a,
        "secret.json",
        &destination_secret_json(&std::fs::read_to_string(b.kubeconfig()).unwrap()),
    );
    let mut hosts = Hosts {
        a,
        b,
        _network: network,
    };
    let full = std::env::var("FERROVIRT_RELIABILITY_SIZE").is_ok_and(|v| v == "full");
    let mut cases = Vec::new();
    for (point, side) in CASES {
        for fault in [Fault::Serve, Fault::Qemu, Fault::Swtpm] {
            let process_case =
                full || (fault == Fault::Qemu && QUICK_PROCESS_POINTS.contains(point));
            if fault == Fault::Serve || process_case {
                cases.push((*point, *side, fault));
            }
        }
    }
    let clock = Instant::now();
    let mut report = String::new();
    let mut all = Vec::new();
    for (case, (point, side, fault)) in cases.into_iter().enumerate() {
        if only.as_ref().is_some_and(|o| !o.iter().any(|p| p == point)) {
            continue;
        }
        let started = Instant::now();
        let (outcome, violations) = hosts.run(case + 1, point, side, fault);
        let line = format!(
            "{point}\t{} ({})\t{outcome}\t{}\t{:.1}s",
            fault.name(),
            match side {
                Side::Source => "migration source",
                Side::Destination => "migration destination",
            },
            violations.len(),
            started.elapsed().as_secs_f64()
        );
        eprintln!("crash migration: {line}");
        for v in &violations {
            eprintln!("    violation: {v}");
            all.push(format!("{point} ({}): {v}", fault.process()));
        }
        let _ = writeln!(report, "{line}");
    }
    eprintln!(
        "crash migration: {:.1}s in all",
        clock.elapsed().as_secs_f64()
    );
    if let Ok(path) = std::env::var("FERROVIRT_RELIABILITY_REPORT_MIGRATION") {
        std::fs::write(path, &report).unwrap();
    }
    assert!(
        all.is_empty(),
        "{} violations:\n{}\n\nhost a log:\n{}\n\nhost b log:\n{}",
        all.len(),
        all.join("\n"),
        tail(&hosts.a.log(), 30),
        tail(&hosts.b.log(), 30)
    );
}
