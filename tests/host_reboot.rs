//! A host reboot, simulated: `ferrovirt serve` and every QEMU it started are killed with SIGKILL
//! (nothing of theirs runs a shutdown path) and the runtime dir is emptied (a tmpfs such as
//! /run/ferrovirt does not survive a reboot). The next `serve` on the same data dir brings back
//! the VMs whose run strategy says so (`Always`, `RerunOnFailure`, as KubeVirt does after a node
//! failure) with new QEMU processes (and a new swtpm on the persistent TPM state that no clean
//! stop recorded), and leaves a `Halted` VM off. The VMs have no disk and BIOS
//! firmware (SeaBIOS stops at "No bootable device": a running VM that costs little CPU) and no
//! network card, so nothing depends on the host's network.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use server::{Server, manifest};

/// A VM without disk or network card; `tpm`: with a persistent TPM (swtpm runs beside QEMU, and
/// its state was never recorded by a clean stop when the host goes down).
fn vm(name: &str, run_strategy: &str, tpm: bool) -> String {
    let tpm = if tpm {
        "
          tpm:
            persistent: true"
    } else {
        ""
    };
    format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: {run_strategy}
  template:
    spec:
      terminationGracePeriodSeconds: 1
      domain:
        devices:
          autoattachPodInterface: false{tpm}
        memory:
          guest: 64Mi
"
    )
}

fn printable_status(server: &Server, name: &str) -> String {
    let out = server.kubectl(&[
        "get",
        "vm",
        name,
        "-o",
        "jsonpath={.status.printableStatus}",
    ]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The processes whose command line names `dir` (QEMU names its runtime dir: QMP, serial and pid
/// file paths), with their command lines.
fn processes_using(dir: &Path) -> Vec<(i32, String)> {
    let needle = dir.to_str().unwrap();
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmdline.contains(needle).then_some((pid, cmdline))
        })
        .collect()
}

fn qemu_of(dir: &Path, name: &str) -> Option<i32> {
    processes_using(dir)
        .into_iter()
        .find(|(_, cmdline)| {
            cmdline.contains("qemu-system") && cmdline.contains(&format!("guest=default_{name},"))
        })
        .map(|(pid, _)| pid)
}

fn swtpm_of(dir: &Path) -> Option<i32> {
    processes_using(dir)
        .into_iter()
        .find(|(_, cmdline)| cmdline.starts_with("swtpm ") || cmdline.contains("/swtpm "))
        .map(|(pid, _)| pid)
}

/// SIGKILL to every process using `dir`, and wait until they are gone.
fn kill_all_using(dir: &Path) {
    for _ in 0..100 {
        let left = processes_using(dir);
        if left.is_empty() {
            return;
        }
        for (pid, _) in left {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid).unwrap(),
                rustix::process::Signal::KILL,
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("processes survived SIGKILL: {:?}", processes_using(dir));
}

/// Kills what the test started even when it fails half-way.
struct KillOnDrop(Vec<PathBuf>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for dir in &self.0 {
            for (pid, _) in processes_using(dir) {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid).unwrap(),
                    rustix::process::Signal::KILL,
                );
            }
        }
    }
}

#[test]
fn after_a_host_reboot_always_and_rerun_on_failure_vms_come_back_and_halted_ones_stay_off() {
    // The service's layout: the runs' sockets in a runtime dir outside the data dir.
    let runtime_parent = tempfile::Builder::new()
        .prefix("fvrt")
        .tempdir_in("/tmp")
        .unwrap();
    let runtime_dir = runtime_parent.path().join("run");
    let mut server = Server::start_with(true, &["--runtime-dir", runtime_dir.to_str().unwrap()]);
    let _cleanup = KillOnDrop(vec![server.data_dir(), runtime_dir.clone()]);

    let vms = [
        ("always", "Always", true),
        ("rerun", "RerunOnFailure", false),
        ("halted", "Halted", false),
    ];
    for (name, strategy, tpm) in vms {
        let path = manifest(&server, &format!("{name}.yaml"), &vm(name, strategy, tpm));
        server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    }
    server.wait_for(
        "the Always and RerunOnFailure VMs to run",
        Duration::from_secs(120),
        || {
            (printable_status(&server, "always") == "Running"
                && printable_status(&server, "rerun") == "Running")
                .then_some(())
        },
    );
    assert_eq!(printable_status(&server, "halted"), "Stopped");
    let before: Vec<i32> = ["always", "rerun"]
        .iter()
        .map(|name| qemu_of(&runtime_dir, name).expect("QEMU runs in the chosen runtime dir"))
        .collect();
    assert!(qemu_of(&runtime_dir, "halted").is_none());
    let swtpm_before = swtpm_of(&runtime_dir).expect("swtpm of the Always VM runs");
    assert!(
        server.data_dir().join("runtime-base").is_file(),
        "the data dir records its runtime dir"
    );

    // The reboot: everything killed, nothing shut down, /run emptied.
    server.kill();
    kill_all_using(&runtime_dir);
    kill_all_using(&server.data_dir());
    std::fs::remove_dir_all(&runtime_dir).unwrap();

    server.spawn();
    let after: Vec<i32> = server.wait_for(
        "the Always and RerunOnFailure VMs to run again",
        Duration::from_secs(120),
        || {
            let running = printable_status(&server, "always") == "Running"
                && printable_status(&server, "rerun") == "Running";
            let pids: Option<Vec<i32>> = ["always", "rerun"]
                .iter()
                .map(|name| qemu_of(&runtime_dir, name))
                .collect();
            pids.filter(|_| running)
        },
    );
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old, new, "a new QEMU, not the killed one");
    }
    let swtpm_after = swtpm_of(&runtime_dir).expect("a new swtpm for the Always VM");
    assert_ne!(swtpm_before, swtpm_after);
    // The Halted VM stays off.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(printable_status(&server, "halted"), "Stopped");
    assert!(qemu_of(&runtime_dir, "halted").is_none());
    let vmis = server.kubectl_ok(&["get", "vmi", "-o", "name"]);
    assert!(!vmis.contains("halted"), "{vmis}");
    // What the admin sees: the lost run is an Event, not a silent restart.
    let events = server.kubectl_ok(&["get", "events", "-o", "json"]);
    assert!(
        events.contains("it ended while ferrovirt was not running"),
        "{events}"
    );

    // Stop them (the server is the parent and reaps them).
    for name in ["always", "rerun"] {
        let (code, _) = server.request(
            "PUT",
            &format!(
                "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/{name}/stop"
            ),
            Some("application/json"),
            b"{}",
        );
        assert_eq!(code, 202, "stop {name}");
    }
    server.wait_for("the VMs to stop", Duration::from_secs(60), || {
        (qemu_of(&runtime_dir, "always").is_none() && qemu_of(&runtime_dir, "rerun").is_none())
            .then_some(())
    });
}
