//! Processes of a start that never finished: a manager killed (`kill -9`, power loss of the
//! manager alone) after it spawned swtpm and a paused QEMU but before it wrote `run.json`
//! leaves them running in their own process group, on the VM's TPM state. The next start must not
//! run a second swtpm on the same state beside them, so it ends them first.
//!
//! This is safe because of the launcher's order: `run.json` is written before QEMU is told to
//! `cont`, so a QEMU without a record has never run a guest instruction, and its swtpm has seen
//! no command from a guest (the persistent state on disk is the last durable one). A process is
//! only ever killed when its pid file names it *and* its command line names this runtime dir, so a
//! reused pid of an unrelated process is left alone.

use std::path::Path;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::process::{ProcessIdentity, pidfd_signal};
use crate::runtime::RuntimeDir;

/// How long to wait for a killed process to be gone.
const GONE_WITHIN: Duration = Duration::from_secs(5);

/// A process of an unfinished start that was ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// `qemu` or `swtpm`.
    pub program: &'static str,
    pub pid: i32,
}

/// Ends the QEMU and swtpm of an unrecorded start in `runtime` (QEMU first, so swtpm is never
/// left without the QEMU that talks to it while the QEMU lives), returning what it ended. A pid
/// file naming no live process, or a process that is not this run's, is skipped.
pub fn reap_unrecorded_start(runtime: &RuntimeDir) -> Vec<Reaped> {
    let mut reaped = Vec::new();
    for (program, pid_file) in [
        ("qemu", runtime.qemu_pid_file()),
        ("swtpm", runtime.swtpm_pid_file()),
    ] {
        let Some(identity) = process_of_this_run(&pid_file, runtime.root()) else {
            continue;
        };
        let pid = identity.pid;
        match identity.open_pidfd() {
            Ok(fd) => {
                if let Err(errno) = pidfd_signal(&fd, Signal::KILL) {
                    tracing::warn!(
                        program,
                        pid,
                        "could not kill a process of an unfinished start: {errno}"
                    );
                    continue;
                }
            }
            Err(_) => continue,
        }
        let deadline = Instant::now() + GONE_WITHIN;
        while !identity.is_dead_or_zombie() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::warn!(
            program,
            pid,
            dir = %runtime.root().display(),
            "ended a {program} left by a start that did not finish (the manager stopped before recording it)"
        );
        reaped.push(Reaped { program, pid });
    }
    reaped
}

/// The live process a pid file names, if its command line names `root` (the runtime dir).
fn process_of_this_run(pid_file: &Path, root: &Path) -> Option<ProcessIdentity> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if pid <= 1 {
        return None;
    }
    let identity = ProcessIdentity::of(pid).ok()?;
    if identity.is_dead_or_zombie() {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let root = root.as_os_str().as_encoded_bytes();
    cmdline
        .windows(root.len())
        .any(|window| window == root)
        .then_some(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn spawn(args: &[&str]) -> std::process::Child {
        Command::new(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    #[test]
    fn ends_the_processes_its_pid_files_name_when_they_belong_to_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = RuntimeDir::create(dir.path().join("run")).unwrap();
        let log = runtime.root().join("qemu.log");
        std::fs::write(&log, "").unwrap();
        // Stand-ins whose command lines name the runtime dir, as QEMU's and swtpm's do.
        let mut qemu = spawn(&["tail", "-f", log.to_str().unwrap()]);
        let mut swtpm = spawn(&["tail", "-f", log.to_str().unwrap()]);
        std::fs::write(runtime.qemu_pid_file(), format!("{}\n", qemu.id())).unwrap();
        std::fs::write(runtime.swtpm_pid_file(), format!("{}\n", swtpm.id())).unwrap();

        let reaped = reap_unrecorded_start(&runtime);

        assert_eq!(
            reaped.iter().map(|r| r.program).collect::<Vec<_>>(),
            ["qemu", "swtpm"]
        );
        assert!(qemu.wait().is_ok_and(|s| !s.success()));
        assert!(swtpm.wait().is_ok_and(|s| !s.success()));
    }

    #[test]
    fn leaves_alone_a_process_that_is_not_the_runs() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = RuntimeDir::create(dir.path().join("run")).unwrap();
        // A pid file that names an unrelated process (a reused pid).
        let mut other = spawn(&["sleep", "30"]);
        std::fs::write(runtime.qemu_pid_file(), format!("{}\n", other.id())).unwrap();
        std::fs::write(runtime.swtpm_pid_file(), "not a pid\n").unwrap();

        assert!(reap_unrecorded_start(&runtime).is_empty());
        assert!(other.try_wait().unwrap().is_none(), "still running");
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
