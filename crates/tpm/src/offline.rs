//! An offline swtpm on a private copy of a TPM state: started as our child with a control and a
//! data socket in a private temp dir, killed and reaped on drop. The original state is never
//! opened for writing.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ctrl::{CtrlChannel, TpmResult};
use crate::key::StateKey;
use crate::process::{self, WaitOutcome};
use crate::tpm2::TpmChannel;

/// Where swtpm is installed on Debian.
pub const DEFAULT_SWTPM: &str = "/usr/bin/swtpm";

/// A failure to run the offline swtpm (not a verdict on the state).
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// Spawning, connecting or an I/O step failed.
    #[error("offline swtpm: cannot {action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// A running offline swtpm whose state dir is `work/state`.
#[derive(Debug)]
pub struct OfflineSwtpm {
    child: Child,
    ctrl: CtrlChannel,
    server_socket: PathBuf,
    log_file: PathBuf,
    stderr_file: PathBuf,
    deadline: Instant,
}

impl OfflineSwtpm {
    /// The state dir swtpm uses inside `work`.
    pub fn state_dir(work: &Path) -> PathBuf {
        work.join("state")
    }

    /// Starts swtpm on `work/state` (which the caller filled) and connects its control channel.
    pub fn start(
        swtpm: &Path,
        work: &Path,
        key: Option<&StateKey>,
        deadline: Instant,
    ) -> Result<Self, OfflineError> {
        Self::start_on(swtpm, work, &Self::state_dir(work), key, deadline)
    }

    /// Starts swtpm on the state in `state` (a private dir of the caller's; swtpm writes to
    /// it), with its sockets and log in `work` (a short path: a socket path holds 107 bytes).
    pub fn start_on(
        swtpm: &Path,
        work: &Path,
        state: &Path,
        key: Option<&StateKey>,
        deadline: Instant,
    ) -> Result<Self, OfflineError> {
        let io = |action: &str| {
            let action = action.to_owned();
            move |source| OfflineError::Io { action, source }
        };
        let ctrl_socket = work.join("ctrl.sock");
        let server_socket = work.join("srv.sock");
        let log_file = work.join("swtpm.log");
        let stderr_file = work.join("swtpm.stderr");
        let mut cmd = Command::new(swtpm);
        cmd.arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(kv("dir", state, ",mode=0600"))
            .arg("--ctrl")
            .arg(kv("type=unixio,path", &ctrl_socket, ",mode=0600"))
            .arg("--server")
            .arg(kv("type=unixio,path", &server_socket, ",mode=0600"))
            .arg("--log")
            .arg(kv("file", &log_file, ",level=1"));
        process::private_env(&mut cmd, work);
        if let Some(key) = key {
            cmd.arg("--key").arg(StateKey::swtpm_key_arg());
            key.attach_to(&mut cmd)
                .map_err(io("pass the state key to swtpm"))?;
        }
        let stderr = File::create(&stderr_file).map_err(io("create the stderr file"))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let mut child = cmd
            .spawn()
            .map_err(io(&format!("spawn {}", swtpm.display())))?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let ctrl = match CtrlChannel::connect(&ctrl_socket, remaining, || {
            matches!(child.try_wait(), Ok(None))
        }) {
            Ok(ctrl) => ctrl,
            Err(e) => {
                process::kill_and_reap(&mut child);
                let detail = process::last_lines(
                    &(process::read_lossy(&stderr_file) + &process::read_lossy(&log_file)),
                    10,
                );
                return Err(OfflineError::Io {
                    action: format!("connect to swtpm's control socket (swtpm said: {detail})"),
                    source: e,
                });
            }
        };
        Ok(Self {
            child,
            ctrl,
            server_socket,
            log_file,
            stderr_file,
            deadline,
        })
    }

    /// CMD_INIT (flags 0: keep a volatile state if there is one): loads the state.
    pub fn init(&mut self) -> Result<TpmResult, OfflineError> {
        self.ctrl.init(0).map_err(|source| OfflineError::Io {
            action: "send CMD_INIT".to_owned(),
            source,
        })
    }

    /// Opens the TPM data channel.
    pub fn data_channel(&self) -> Result<TpmChannel, OfflineError> {
        TpmChannel::connect(&self.server_socket, self.remaining()).map_err(|source| {
            OfflineError::Io {
                action: "connect to swtpm's data socket".to_owned(),
                source,
            }
        })
    }

    /// If swtpm exits within `grace`, its exit status (used after a failed control command).
    pub fn exited_within(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        match process::wait_bounded_no_kill(&mut self.child, grace) {
            Ok(Some(status)) => Some(status),
            _ => None,
        }
    }

    /// swtpm's log and stderr so far.
    pub fn log(&self) -> String {
        process::read_lossy(&self.log_file) + &process::read_lossy(&self.stderr_file)
    }

    /// CMD_GET_INFO (see [`CtrlChannel::get_info`]).
    pub fn get_info(&mut self, flags: u64) -> Result<(TpmResult, String), OfflineError> {
        self.ctrl
            .get_info(flags)
            .map_err(|source| OfflineError::Io {
                action: "send CMD_GET_INFO".to_owned(),
                source,
            })
    }

    /// CMD_SHUTDOWN, then waits (bounded) for swtpm to exit: whether it exited cleanly (status
    /// 0) in time; it is killed if it did not exit.
    pub fn shutdown_clean(mut self) -> bool {
        let _ = self.ctrl.shutdown();
        let remaining = self.remaining().max(Duration::from_millis(200));
        match process::wait_bounded(&mut self.child, remaining) {
            Ok(WaitOutcome::Exited(status)) => status.success(),
            _ => {
                process::kill_and_reap(&mut self.child);
                false
            }
        }
    }

    /// CMD_SHUTDOWN, then waits (bounded) for swtpm to exit; kills it if it does not.
    pub fn shutdown(self) {
        let _ = self.shutdown_clean();
    }

    fn remaining(&self) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(50))
    }
}

impl Drop for OfflineSwtpm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            process::kill_and_reap(&mut self.child);
        }
    }
}

/// `key=<path><suffix>` as one OsString (paths need not be UTF-8).
fn kv(key: &str, path: &Path, suffix: &str) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(format!("{key}="));
    s.push(path.as_os_str());
    s.push(suffix);
    s
}
