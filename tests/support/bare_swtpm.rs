//! A bare swtpm (no key, as KubeVirt's or any other host's swtpm would run) on a private copy of
//! a TPM state file: does it take the state?

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a running swtpm must stay up to count as having taken the state (with
/// `not-need-init` it initializes libtpms from the state before anything else, and exits at once
/// when it cannot).
const SETTLE: Duration = Duration::from_secs(2);

/// `Ok(())` when a bare swtpm initializes from a copy of `state_file` (then it is stopped);
/// `Err(its log)` when it exits refusing it.
pub fn takes_state(state_file: &Path) -> Result<(), String> {
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(state_file, copy.path().join("tpm2-00.permall")).unwrap();
    let log = copy.path().join("swtpm.log");
    let ctrl = copy.path().join("ctrl.sock");
    let mut child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--flags", "not-need-init", "--tpmstate"])
        .arg(format!("dir={}", copy.path().display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", ctrl.display()))
        .arg("--log")
        .arg(format!("file={},level=1", log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(!status.success(), "swtpm exited 0 at once: {said}");
            return Err(said);
        }
        if started.elapsed() > SETTLE && ctrl.exists() {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("swtpm neither exited nor opened its control socket in 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop = Command::new("swtpm_ioctl")
        .arg("--unix")
        .arg(&ctrl)
        .arg("-s")
        .output()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(stop.status.success(), "swtpm_ioctl -s: {stop:?}");
    assert!(status.success(), "swtpm after -s: {status}");
    Ok(())
}
