//! What the reliability tests check on the host after every operation: the persistent state of
//! every VM against its newest generation, and the processes left running.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The processes (not zombies, not `ferrovirt serve`) whose command line names `dir`, with their
/// command lines.
pub fn processes_using(dir: &Path) -> Vec<(i32, String)> {
    let needle = dir.to_str().unwrap();
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            if status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
            {
                return None;
            }
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            // `serve` names its runtime dir too (`--runtime-dir`): it is not a VM's process.
            let is_serve = cmdline.contains("/ferrovirt serve ");
            (cmdline.contains(needle) && !is_serve).then_some((pid, cmdline))
        })
        .collect()
}

pub fn qemus(dir: &Path) -> Vec<i32> {
    processes_using(dir)
        .into_iter()
        .filter(|(_, c)| c.contains("qemu-system"))
        .map(|(pid, _)| pid)
        .collect()
}

pub fn swtpms(dir: &Path) -> Vec<i32> {
    processes_using(dir)
        .into_iter()
        .filter(|(_, c)| c.starts_with("swtpm ") || c.contains("/swtpm "))
        .map(|(pid, _)| pid)
        .collect()
}

pub fn sigkill(pid: i32) {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    );
}

pub fn kill_all_using(dir: &Path) {
    for (pid, _) in processes_using(dir) {
        sigkill(pid);
    }
}

/// Every VM's generation store (`<data>/state-generations/vms/<uuid>`), once no stop is
/// between its report and its record ([`wait_for_settled_stops`]).
pub fn generation_stores(data: &Path) -> Vec<PathBuf> {
    wait_for_settled_stops(data);
    let mut stores: Vec<PathBuf> = std::fs::read_dir(data.join("state-generations/vms"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    stores.sort();
    stores
}

/// Waits until no stop of the server on `data` is between its report and its record: a VM reads
/// `Stopped` once its state is durable, and the `after-stop` generation follows within
/// milliseconds under `<runtime dir>/settle.lock` (`ferrovirt_vmm::settle_lock`), which the API's
/// own state operations wait for too.
pub fn wait_for_settled_stops(data: &Path) {
    let base = ferrovirt_vmm::engine::runtime_base(data);
    let Ok(entries) = std::fs::read_dir(&base) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let settled = ferrovirt_vmm::settle_lock::wait_unlocked(
            &entry.path(),
            std::time::Duration::from_secs(60),
        );
        if !settled {
            // The checks that follow say what is wrong with its state.
            eprintln!(
                "{}: a stop still unsettled after 60 s",
                entry.path().display()
            );
        }
    }
}

/// For every VM: every generation verifies, the known-good generation (if marked) exists, and
/// the state files hold exactly what the newest generation recorded (sha256; call while the VMs
/// are stopped). Returns the violations.
pub fn check_states(data: &Path) -> Vec<String> {
    check_states_with(data, true)
}

/// [`check_states`]; `match_newest: false` checks only that every generation verifies and the
/// state files the newest one holds exist (after a crash inside a stop, the state a stopped VM
/// left is recorded by the next start, which checks it: it may differ from every generation
/// until then).
pub fn check_states_with(data: &Path, match_newest: bool) -> Vec<String> {
    let mut violations = Vec::new();
    let stores = generation_stores(data);
    if stores.is_empty() {
        violations.push("no generation store".into());
    }
    for dir in stores {
        violations.extend(check_store(&dir, match_newest));
    }
    violations
}

/// [`check_states`] for one VM (`uuid`) only: its store must exist.
pub fn check_states_of(data: &Path, uuid: &str, match_newest: bool) -> Vec<String> {
    wait_for_settled_stops(data);
    let dir = data.join("state-generations/vms").join(uuid);
    if !dir.is_dir() {
        return vec![format!("{}: no generation store", dir.display())];
    }
    check_store(&dir, match_newest)
}

/// For a VM whose volume is gone (a copy retired after a migration, a deleted VM): its
/// generations (at least one) verify, the known-good one exists.
pub fn check_retired_states_of(data: &Path, uuid: &str) -> Vec<String> {
    wait_for_settled_stops(data);
    let dir = data.join("state-generations/vms").join(uuid);
    let mut violations = Vec::new();
    let list = verify_generations(&dir, &mut violations);
    if list.is_empty() {
        violations.push(format!("{}: no generation", dir.display()));
    }
    violations
}

/// Every generation of a store verifies, and its known-good one exists; returns the list.
fn verify_generations(
    dir: &Path,
    violations: &mut Vec<String>,
) -> Vec<ferrovirt_storage::generations::GenerationInfo> {
    let generations = ferrovirt_storage::Generations::new(dir);
    let list = generations.list().unwrap_or_default();
    for info in &list {
        if let Err(e) = generations.verify(info.id) {
            violations.push(format!("generation {} does not verify: {e}", info.id));
        }
    }
    if dir.join("known-good.json").exists() && generations.known_good().is_none() {
        violations.push(format!(
            "{}: known-good.json names a generation that is gone",
            dir.display()
        ));
    }
    list
}

/// The checks of [`check_states_with`] for one VM's generation store.
fn check_store(dir: &Path, match_newest: bool) -> Vec<String> {
    let mut violations = Vec::new();
    let list = verify_generations(dir, &mut violations);
    let Some(newest) = list.last().and_then(|g| g.manifest.as_ref().ok()) else {
        violations.push(format!("{}: no readable generation", dir.display()));
        return violations;
    };
    for entry in &newest.entries {
        for file in &entry.files {
            let path = match entry.kind {
                ferrovirt_storage::generations::EntryKind::Dir => entry
                    .original_path
                    .join(Path::new(&file.path).file_name().unwrap()),
                _ => entry.original_path.clone(),
            };
            let found = ferrovirt_storage::generations::sha256_file(&path)
                .map(|(_, sha)| sha)
                .unwrap_or_else(|e| e.to_string());
            if !match_newest {
                if !path.is_file() {
                    violations.push(format!("{} is gone", path.display()));
                }
                continue;
            }
            if found != file.sha256 {
                violations.push(format!(
                    "{} differs from the newest generation {} ({:?})",
                    path.display(),
                    newest.id,
                    newest.reason
                ));
            }
        }
    }
    violations
}

/// Resident set size (kB) and open descriptors of a process.
pub fn rss_kb_and_fds(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

/// The reliability tests' VM: firmware only (persistent TPM + persistent Secure Boot VARS, SMM, no
/// disk, no network), `runStrategy: Manual`, a 1 s grace period.
pub fn firmware_only_vm_yaml(name: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: Manual
  template:
    spec:
      terminationGracePeriodSeconds: 1
      domain:
        features:
          smm:
            enabled: true
        firmware:
          bootloader:
            efi:
              secureBoot: true
              persistent: true
        devices:
          autoattachPodInterface: false
          tpm:
            persistent: true
        memory:
          guest: 128Mi
"
    )
}

/// Polls `check` every 100 ms until it holds; an error naming `what` after `timeout`.
pub fn wait_until(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if check() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(format!("{what} not within {timeout:?}"))
}

/// What a crash case kills at its fault point: `serve` (it kills itself there), or, while `serve`
/// holds there, the VM's QEMU or swtpm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Serve,
    Qemu,
    Swtpm,
}

impl Fault {
    /// The process killed: `serve`, `qemu` or `swtpm`.
    pub fn process(self) -> &'static str {
        match self {
            Fault::Serve => "serve",
            Fault::Qemu => "qemu",
            Fault::Swtpm => "swtpm",
        }
    }

    /// As the reliability reports name it: `kill -9 serve`.
    pub fn name(self) -> String {
        format!("kill -9 {}", self.process())
    }
}
