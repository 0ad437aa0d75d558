//! Re-encrypting a TPM state offline: plain -> encrypted (a state from before encryption at
//! rest), one key -> another (data key rotation), encrypted -> plain (export). swtpm cannot do
//! it in place (given a key it refuses a plain state), so: an swtpm with the old key (or none)
//! loads a private copy (CMD_INIT) and hands out its permanent state blob (`swtpm_ioctl --save
//! permanent`, in plain text since no migration key is set); a second swtpm with the new key (or
//! none) takes the blob (`--load permanent`) and, at CMD_INIT, writes it encrypted under the new
//! key. The blob exists only in `work`, which must be a private dir in the VM's runtime dir (or
//! another private runtime location), and is removed at once. The original is only read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::check::{STATE_FILE, StateError, VOLATILE_STATE_FILE};
use crate::fsutil;
use crate::key::StateKey;
use crate::process;

/// Where swtpm_ioctl is installed on Debian (package swtpm-tools).
pub const DEFAULT_SWTPM_IOCTL: &str = "/usr/bin/swtpm_ioctl";
const SOCKET_WAIT: Duration = Duration::from_secs(3);
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The state file in `state_dir` re-encrypted from `from` to `to` (`None`: plain), as bytes for
/// the caller to write crash-safely. `work` is a private scratch dir (removed by the caller).
pub fn reencrypt_state(
    state_dir: &Path,
    from: Option<&StateKey>,
    to: Option<&StateKey>,
    work: &Path,
) -> Result<Vec<u8>, StateError> {
    let path = state_dir.join(STATE_FILE);
    let failed = |detail: String| StateError::CheckFailed {
        path: path.clone(),
        detail,
    };
    if state_dir.join(VOLATILE_STATE_FILE).exists() {
        return Err(failed(format!(
            "{} exists (a suspended TPM); start and stop the VM once so that swtpm folds it in",
            state_dir.join(VOLATILE_STATE_FILE).display()
        )));
    }
    let state = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StateError::Missing { path });
        }
        Err(source) => return Err(StateError::Unreadable { path, source }),
    };
    let source_dir = work.join("from");
    let target_dir = work.join("to");
    for dir in [&source_dir, &target_dir] {
        fsutil::create_private_dir(dir)
            .map_err(|e| failed(format!("create {}: {e}", dir.display())))?;
    }
    fsutil::write_private_scratch_file(&source_dir.join(STATE_FILE), &state)
        .map_err(|e| failed(format!("write the private copy: {e}")))?;
    let blob = work.join("permanent.blob");

    let mut old = Swtpm::start(work, &source_dir, "from", from).map_err(&failed)?;
    if let Err(e) = old.ioctl(&["-i"]) {
        let log = old.finish();
        return Err(match from {
            Some(_) => StateError::Undecryptable {
                path,
                swtpm_log: format!("{e}\n{log}"),
            },
            None => StateError::Corrupt {
                path,
                reason:
                    "swtpm refused it at CMD_INIT (if this state is encrypted, its key is needed)"
                        .into(),
                swtpm_log: format!("{e}\n{log}"),
            },
        });
    }
    let saved = old.ioctl(&["--save".as_ref(), "permanent".as_ref(), blob.as_os_str()]);
    let _ = old.ioctl(&["-s"]);
    let old_log = old.finish();
    saved.map_err(|e| failed(format!("save the state blob: {e}\n{old_log}")))?;

    let mut new = Swtpm::start(work, &target_dir, "to", to).map_err(&failed)?;
    let loaded = new
        .ioctl(&["--load".as_ref(), "permanent".as_ref(), blob.as_os_str()])
        .and_then(|()| new.ioctl(&["-i"]));
    // The plain blob is not needed a moment longer.
    let _ = std::fs::remove_file(&blob);
    let _ = new.ioctl(&["-s"]);
    let new_log = new.finish();
    loaded.map_err(|e| failed(format!("load the state blob: {e}\n{new_log}")))?;
    std::fs::read(target_dir.join(STATE_FILE))
        .map_err(|e| failed(format!("read the re-encrypted state: {e}\n{new_log}")))
}

/// One swtpm on a scratch state dir with only a control channel, driven by swtpm_ioctl.
struct Swtpm {
    child: Child,
    ctrl: PathBuf,
    log: PathBuf,
}

impl Swtpm {
    fn start(
        work: &Path,
        state: &Path,
        name: &str,
        key: Option<&StateKey>,
    ) -> Result<Self, String> {
        let ctrl = work.join(format!("{name}.sock"));
        let log = work.join(format!("{name}.log"));
        let mut cmd = Command::new(crate::offline::DEFAULT_SWTPM);
        let mut state_arg = std::ffi::OsString::from("dir=");
        state_arg.push(state);
        state_arg.push(",mode=0600");
        let mut ctrl_arg = std::ffi::OsString::from("type=unixio,path=");
        ctrl_arg.push(&ctrl);
        ctrl_arg.push(",mode=0600");
        let mut log_arg = std::ffi::OsString::from("file=");
        log_arg.push(&log);
        log_arg.push(",level=1");
        cmd.args(["socket", "--tpm2", "--tpmstate"])
            .arg(state_arg)
            .arg("--ctrl")
            .arg(ctrl_arg)
            .arg("--log")
            .arg(log_arg);
        process::private_env(&mut cmd, work);
        if let Some(key) = key {
            cmd.arg("--key").arg(StateKey::swtpm_key_arg());
            key.attach_to(&mut cmd)
                .map_err(|e| format!("pass the key to swtpm: {e}"))?;
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| format!("spawn swtpm: {e}"))?;
        let deadline = Instant::now() + SOCKET_WAIT;
        // Ready once it listens: between swtpm's bind() and listen() a connect is refused.
        while !(ctrl.exists() && crate::socket::unix_socket_listening(&ctrl)) {
            if Instant::now() >= deadline || !matches!(child.try_wait(), Ok(None)) {
                process::kill_and_reap(&mut child);
                return Err(format!(
                    "swtpm did not open its control socket: {}",
                    process::last_lines(&process::read_lossy(&log), 8)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Self { child, ctrl, log })
    }

    fn ioctl<S: AsRef<std::ffi::OsStr>>(&mut self, args: &[S]) -> Result<(), String> {
        let mut cmd = Command::new(DEFAULT_SWTPM_IOCTL);
        cmd.arg("--unix").arg(&self.ctrl).args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("spawn swtpm_ioctl: {e}"))?;
        match process::wait_bounded(&mut child, STEP_TIMEOUT) {
            Ok(process::WaitOutcome::Exited(status)) if status.success() => Ok(()),
            Ok(process::WaitOutcome::Exited(status)) => {
                let output = child.wait_with_output().map(|o| {
                    String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr)
                });
                Err(format!(
                    "swtpm_ioctl {:?} failed ({status}): {}",
                    args.iter()
                        .map(|a| a.as_ref().to_string_lossy().into_owned())
                        .collect::<Vec<_>>(),
                    output.unwrap_or_default().trim()
                ))
            }
            Ok(process::WaitOutcome::TimedOut) => Err("swtpm_ioctl timed out".into()),
            Err(e) => Err(format!("wait for swtpm_ioctl: {e}")),
        }
    }

    /// Waits for swtpm to exit (killed after a bound) and returns its log.
    fn finish(mut self) -> String {
        let _ = process::wait_bounded(&mut self.child, Duration::from_secs(2));
        process::last_lines(&process::read_lossy(&self.log), 12)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            process::kill_and_reap(&mut self.child);
        }
    }
}
