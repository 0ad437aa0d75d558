//! The lock a stop holds from the moment its VM's processes are gone and its state is durable
//! until that state is checked and recorded as the `after-stop` generation (issue 16: a manager
//! reports the stop in between). Whatever touches a stopped VM's state offline (a rollback, a
//! snapshot, a rekey, a change of UEFI variables, a start) first waits for it, through
//! [`crate::engine::vm_processes_running`], so it never works on a state half-way through its
//! record. An `flock(2)` on `<runtime dir>/settle.lock`: the kernel releases it when its holder
//! ends, so a manager killed in the middle leaves no lock behind (the next start settles that
//! stop).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};

const FILE: &str = "settle.lock";

/// How often [`wait_unlocked`] looks again.
const POLL: Duration = Duration::from_millis(5);

/// Held by a stop until it is settled; dropping it releases the lock.
#[derive(Debug)]
pub struct SettleLock {
    _file: File,
}

impl SettleLock {
    /// Takes the lock of a run's runtime dir (waits if someone holds it).
    pub fn take(runtime_dir: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(runtime_dir.join(FILE))?;
        flock(&file, FlockOperation::LockExclusive).map_err(io::Error::from)?;
        Ok(Self { _file: file })
    }
}

/// Waits until no stop holds the lock of `runtime_dir` (at once when there is no lock file);
/// `false` when one still held it after `timeout`, or when the lock cannot be asked about.
pub fn wait_unlocked(runtime_dir: &Path, timeout: Duration) -> bool {
    let file = match File::open(runtime_dir.join(FILE)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
        Err(_) => return false,
    };
    let deadline = Instant::now() + timeout;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockShared) {
            // Dropping the file releases the shared lock at once.
            Ok(()) => return true,
            Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(POLL);
            }
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_waited_for_and_a_released_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        assert!(wait_unlocked(dir.path(), Duration::ZERO), "no lock file");
        let lock = SettleLock::take(dir.path()).unwrap();
        assert!(!wait_unlocked(dir.path(), Duration::from_millis(20)));
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || wait_unlocked(&path, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(30));
        drop(lock);
        assert!(waiter.join().unwrap(), "released while waiting");
        assert!(wait_unlocked(dir.path(), Duration::ZERO));
    }
}
