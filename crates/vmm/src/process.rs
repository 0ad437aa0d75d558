//! Process identity and supervision primitives: `/proc/PID/stat` start times and `/proc/PID/exe`
//! (defence against pid reuse: a recorded process is the live one only when both match), pidfds
//! for processes we did not spawn, and waiting for their exit without being the parent.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::process::{Pid, PidfdFlags, Signal};
use serde::{Deserialize, Serialize};

/// Errors from process inspection.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("process {pid} does not exist (or /proc/{pid}/stat is unreadable): {reason}")]
    Gone { pid: i32, reason: String },
    #[error("/proc/{pid}/stat is malformed: {reason}")]
    MalformedStat { pid: i32, reason: String },
    #[error(
        "pid {pid} was reused: recorded start time {recorded}, now {actual} (the original process exited)"
    )]
    Reused {
        pid: i32,
        recorded: u64,
        actual: u64,
    },
    #[error(
        "pid {pid} runs {actual}, not the recorded {recorded} (the original process exited and \
         the pid was reused)"
    )]
    OtherExecutable {
        pid: i32,
        recorded: String,
        actual: String,
    },
    #[error("invalid pid {0}")]
    InvalidPid(i32),
    #[error("pidfd for process {pid}: {reason}")]
    Pidfd { pid: i32, reason: String },
}

/// A pid plus its start time (clock ticks since boot, field 22 of /proc/PID/stat), unique over
/// the host's uptime even when pids are reused, and the executable it runs (`/proc/PID/exe`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: i32,
    pub start_time: u64,
    /// The executable; absent in records of older versions (then the start time alone decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<PathBuf>,
}

/// The executable of a live process, without the ` (deleted)` the kernel appends once the file
/// was replaced (a package upgrade while the VM runs must not make it look like another process).
pub fn executable_of(pid: i32) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = link.to_str()?;
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(text),
    ))
}

/// Parses field 22 (starttime) of a /proc/PID/stat line. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_start_time(stat: &str) -> Result<u64, String> {
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or("no ')' after the command name")?;
    // after ")" come fields 3.. ; starttime is field 22 => index 19 in this list.
    let field = after
        .split_whitespace()
        .nth(19)
        .ok_or("fewer than 22 fields")?;
    field
        .parse::<u64>()
        .map_err(|e| format!("starttime {field:?}: {e}"))
}

impl ProcessIdentity {
    /// Reads the identity of a live process.
    pub fn of(pid: i32) -> Result<Self, ProcessError> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| {
            ProcessError::Gone {
                pid,
                reason: e.to_string(),
            }
        })?;
        let start_time = parse_start_time(&stat)
            .map_err(|reason| ProcessError::MalformedStat { pid, reason })?;
        Ok(Self {
            pid,
            start_time,
            exe: executable_of(pid),
        })
    }

    /// Checks that the pid still names this very process: alive, same start time, and (when
    /// recorded) the same executable.
    pub fn verify(&self) -> Result<(), ProcessError> {
        let now = Self::of(self.pid)?;
        if now.start_time != self.start_time {
            return Err(ProcessError::Reused {
                pid: self.pid,
                recorded: self.start_time,
                actual: now.start_time,
            });
        }
        if let Some(recorded) = &self.exe
            && now.exe.as_deref() != Some(recorded.as_path())
        {
            return Err(ProcessError::OtherExecutable {
                pid: self.pid,
                recorded: recorded.display().to_string(),
                actual: now.exe.as_deref().map_or_else(
                    || "an unreadable executable".into(),
                    |e: &Path| e.display().to_string(),
                ),
            });
        }
        Ok(())
    }

    /// Opens a pidfd and then re-verifies the start time, so the fd surely refers to this process.
    pub fn open_pidfd(&self) -> Result<OwnedFd, ProcessError> {
        let pid = Pid::from_raw(self.pid).ok_or(ProcessError::InvalidPid(self.pid))?;
        // Verify first: a vanished pid then gets the clear "does not exist" error.
        self.verify()?;
        let fd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(|e| match e {
            rustix::io::Errno::SRCH => ProcessError::Gone {
                pid: self.pid,
                reason: "exited".into(),
            },
            e => ProcessError::Pidfd {
                pid: self.pid,
                reason: e.to_string(),
            },
        })?;
        self.verify()?;
        Ok(fd)
    }

    /// Opens a pidfd for an unreaped child of this process: its pid cannot name another process
    /// until it is reaped, so nothing is verified. (A verify here could fail for a child that
    /// re-executes itself, as passt and pasta do into `passt.avx2`, between the two reads.)
    pub fn open_pidfd_of_unreaped_child(&self) -> Result<OwnedFd, ProcessError> {
        let pid = Pid::from_raw(self.pid).ok_or(ProcessError::InvalidPid(self.pid))?;
        rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(|e| ProcessError::Pidfd {
            pid: self.pid,
            reason: e.to_string(),
        })
    }

    /// Whether the process is a zombie (exited, not yet reaped) or gone.
    pub fn is_dead_or_zombie(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Err(_) => true,
            Ok(stat) => {
                let state = stat
                    .rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().next());
                matches!(state, Some("Z") | Some("X"))
                    || parse_start_time(&stat).ok() != Some(self.start_time)
            }
        }
    }
}

/// Sends a signal through a pidfd (no pid-reuse race).
pub fn pidfd_signal(fd: &OwnedFd, signal: Signal) -> Result<(), rustix::io::Errno> {
    rustix::process::pidfd_send_signal(fd, signal)
}

/// Waits until the process behind `fd` has exited (the pidfd becomes readable at exit).
pub async fn pidfd_exited(fd: &OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let dup = fd.as_fd().try_clone_to_owned()?;
    // `with_interest` is deprecated because a `T: AsRawFd` may not own its fd; an `OwnedFd` does,
    // so the I/O-safety concern does not apply and we stay free of `unsafe`.
    #[allow(deprecated)]
    let async_fd = tokio::io::unix::AsyncFd::with_interest(dup, tokio::io::Interest::READABLE)?;
    let _guard = async_fd.readable().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_with_odd_command_names() {
        let line = "1234 (we ird) (name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50";
        assert_eq!(parse_start_time(line), Ok(987654));
        assert!(parse_start_time("1 (x) S 1").is_err());
        assert!(parse_start_time("no paren").is_err());
    }

    #[test]
    fn own_identity_verifies() {
        let me = ProcessIdentity::of(std::process::id() as i32).unwrap();
        assert_eq!(me.exe.as_deref(), std::env::current_exe().ok().as_deref());
        me.verify().unwrap();
        let fake = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(matches!(fake.verify(), Err(ProcessError::Reused { .. })));
        // Same pid and start time, but another executable recorded: not this process.
        let other = ProcessIdentity {
            exe: Some("/usr/bin/qemu-system-x86_64".into()),
            ..me.clone()
        };
        let err = other.verify().unwrap_err();
        assert!(matches!(err, ProcessError::OtherExecutable { .. }), "{err}");
        // Records of older versions carry no executable: the start time decides.
        ProcessIdentity {
            exe: None,
            ..me.clone()
        }
        .verify()
        .unwrap();
        assert!(!me.is_dead_or_zombie());
    }

    #[tokio::test]
    async fn pidfd_sees_exit() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let id = ProcessIdentity::of(child.id() as i32).unwrap();
        let fd = id.open_pidfd().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), pidfd_exited(&fd))
            .await
            .unwrap()
            .unwrap();
        assert!(id.is_dead_or_zombie());
        child.wait().unwrap();
    }
}
