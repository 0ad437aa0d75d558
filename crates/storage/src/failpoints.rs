//! Named fault points for the crash matrix and the I/O-error tests (`scripts/reliability.sh`).
//!
//! Compiled in only with the `failpoints` cargo feature (the test suite's build; never the
//! packaged or release binary): without it [`hit`] is an empty inline function. With it, the
//! points are configured from `FERROVIRT_FAILPOINTS` the first time any point is reached, in the
//! `fail` crate's syntax (`name=action;name=action`), e.g.
//! `FERROVIRT_FAILPOINTS='engine.start.after-run-record=return(crash)'`. Actions:
//!
//! - `return(crash)`: the process kills itself with SIGKILL at that point (a `kill -9` there);
//! - `return(eio)` / `return(enospc)`: the operation fails with that I/O error;
//! - `return(hold)`: the point is announced (its name appended to the file
//!   `FERROVIRT_FAILPOINTS_REACHED`), then the process waits `FERROVIRT_FAILPOINTS_HOLD_MS`
//!   (default 3000) and goes on: a runner kills QEMU or swtpm at exactly that step;
//! - the `fail` crate's own `panic`, `sleep(MS)`, `pause`, `off`, and `N*`/`P%` prefixes.
//!
//! [`POINTS`] lists every point, so a runner can walk them all.

use std::io;

/// Every fault point, in the order an operation reaches them.
pub const POINTS: &[&str] = &[
    // Engine start (vmm::engine, vmm::state, vmm::launcher).
    "state.prepare.before-check",
    "state.prepare.before-record",
    "engine.start.before-launch",
    "launcher.start.after-swtpm",
    "launcher.start.before-run-record",
    "launcher.start.after-run-record",
    "engine.start.after-running",
    // Engine stop (after QEMU exited) and the state check after it.
    "engine.finish.before-state",
    "state.finish.before-check",
    "state.finish.before-record",
    "state.finish.after-record",
    "engine.finish.before-runtime-cleanup",
    // Generations (storage::generations).
    "generations.record.copy",
    "generations.record.before-rename",
    "generations.record.after-rename",
    "generations.mark-known-good",
    "generations.prune",
    "generations.prune.remove",
    "generations.restore.before-replace",
    "generations.restore.between-targets",
    // Retire of a volume whose persistence was switched off.
    "generations.retire",
    // Snapshots (storage::snapshots).
    "snapshots.publish.before-rename",
    // Sending a live migration (controllers::runtime::migrations, vmm::migration): the
    // destination's receiver answered the probe, nothing sent yet; the source QEMU paused at
    // `pre-switchover` (vCPUs stopped, the devices' state not yet sent); the switch-over done
    // (the source QEMU in `postmigrate`), the destination's confirmation not yet read; the
    // destination confirmed its guest runs, the source's run not yet marked migrated nor its
    // QEMU ended.
    "migration.send.after-target-ready",
    "migration.send.at-pre-switchover",
    "migration.send.after-switchover",
    "migration.send.after-confirm",
    // Receiving a live migration (vmm::engine::incoming): the receiver's QEMU started and
    // listening, nothing arrived yet; the stream arrived (the TPM state written by the
    // receiving swtpm), the source's volume files not yet installed; installed and the VARS
    // sealed, the arrival not yet recorded as a generation; recorded, the guest not yet resumed
    // (no run.json yet at any of these); resumed (run.json written, the guest runs), the
    // migration not yet reported as succeeded.
    "engine.incoming.waiting",
    "engine.incoming.before-install",
    "engine.incoming.before-record",
    "engine.incoming.before-resume",
    "engine.incoming.after-resume",
    // Imports into a PVC (`volumeimport`, storage::export): before each file is written.
    "import.write-file",
    // The local-path provisioner (storage::local_path): a PVC's volume created but the PVC not
    // yet bound; a deleted PVC's volume moved aside but not yet removed.
    "volumes.create.after-mkdir",
    "volumes.delete.after-move-aside",
    // A first start taking a pooled TPM (tpm::pool): claimed (renamed out of `ready/`), and
    // personalized in its staging dir but not yet published into the volume.
    "tpm.pool.after-claim",
    "tpm.pool.before-publish",
];

/// Reaches the fault point `name`: `Ok(())` unless a test configured an I/O error for it (a
/// configured crash never returns).
#[inline]
pub fn hit(name: &str) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    {
        enabled::hit(name)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        Ok(())
    }
}

/// Configures point `name` in this process (tests that run the engine in-process); `Err` when
/// the build has no fault points or the actions do not parse.
pub fn configure(name: &str, actions: &str) -> Result<(), String> {
    #[cfg(feature = "failpoints")]
    {
        fail::cfg(name, actions)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = (name, actions);
        Err("this build has no fault points (cargo feature `failpoints`)".into())
    }
}

/// Removes the configuration of point `name` (nothing without the feature).
pub fn clear(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::remove(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Whether this build has fault points (the `failpoints` feature).
pub const fn compiled_in() -> bool {
    cfg!(feature = "failpoints")
}

#[cfg(feature = "failpoints")]
mod enabled {
    use std::io;
    use std::sync::Once;

    /// The environment variable holding the configuration.
    const ENV: &str = "FERROVIRT_FAILPOINTS";

    fn configure_from_env() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let Ok(spec) = std::env::var(ENV) else {
                return;
            };
            for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                let Some((name, actions)) = item.split_once('=') else {
                    eprintln!("{ENV}: {item:?} is not NAME=ACTIONS; ignored");
                    continue;
                };
                if let Err(e) = fail::cfg(name.trim(), actions.trim()) {
                    eprintln!("{ENV}: {name}: {e}; ignored");
                }
            }
        });
    }

    fn hold(name: &str) {
        eprintln!("failpoint {name}: reached, holding");
        if let Ok(path) = std::env::var("FERROVIRT_FAILPOINTS_REACHED") {
            use std::io::Write;
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(file, "{name}");
            }
        }
        let ms = std::env::var("FERROVIRT_FAILPOINTS_HOLD_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }

    pub(super) fn hit(name: &str) -> io::Result<()> {
        configure_from_env();
        match fail::eval(name, |arg| arg) {
            None => Ok(()),
            Some(arg) => match arg.as_deref() {
                Some("crash") => {
                    eprintln!("failpoint {name}: crash (SIGKILL of this process)");
                    let _ = rustix::process::kill_process(
                        rustix::process::getpid(),
                        rustix::process::Signal::KILL,
                    );
                    // SIGKILL is not deliverable late; never continue past a crash point.
                    std::process::abort()
                }
                Some("hold") => {
                    hold(name);
                    Ok(())
                }
                Some("enospc") => Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::NOSPC.raw_os_error(),
                )),
                Some("eio") => Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::IO.raw_os_error(),
                )),
                other => Err(io::Error::other(format!(
                    "failpoint {name}: unknown return value {other:?} (crash, eio, enospc)"
                ))),
            },
        }
    }
}
