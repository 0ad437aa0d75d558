//! The per-run runtime directory (0700) and its `run.json` record of what runs there.
//!
//! Layout: `qmp.sock`, `swtpm-ctrl.sock`, `serial.sock`, `serial.log`, `vnc.sock` (QEMU's VNC
//! server, mode 0600), `qmp-screen.sock` (the API server's QMP monitor for screenshots), `screenshot-*.png`, `qemu.pid`, `swtpm.pid`,
//! `swtpm.log`, `qemu.log` (QEMU's stderr), `passt-<card>.log` and `run.json` (machine config, pids with start times,
//! creation time), written crash-safely (temp file, fsync, rename, fsync dir).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::machine::MachineConfig;
use crate::process::ProcessIdentity;

/// `sun_path` is 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// Runtime directory errors.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("runtime dir {path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error(
        "socket path {path} is {len} bytes; unix sockets allow at most {MAX_SOCKET_PATH}: use a shorter runtime directory"
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error(
        "runtime dir {path} is not a directory with mode 0700 (mode {mode:o}); fix or remove it"
    )]
    BadMode { path: PathBuf, mode: u32 },
    #[error(
        "runtime dir {path} belongs to uid {owner}, not to this process (uid {us}) or is not a \
         real directory; remove it"
    )]
    NotOurs { path: PathBuf, owner: u32, us: u32 },
    #[error("{path}: malformed run record: {reason}")]
    BadRecord { path: PathBuf, reason: String },
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.to_path_buf();
    move |source| RuntimeError::Io {
        path,
        action,
        source,
    }
}

/// What runs in a runtime dir, for adoption after a manager restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub machine: MachineConfig,
    pub qemu: ProcessIdentity,
    pub swtpm: Option<ProcessIdentity>,
    /// One passt per network card, in `machine.nics` order.
    #[serde(default)]
    pub passt: Vec<ProcessIdentity>,
    /// One pasta per network card (connecting the card's namespace to the host), same order.
    #[serde(default)]
    pub pasta: Vec<ProcessIdentity>,
    /// The name of each card's network namespace (under `/run/netns`), same order.
    #[serde(default)]
    pub netns: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
}

/// A VM run's private directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeDir {
    root: PathBuf,
}

impl RuntimeDir {
    /// Creates (or re-uses) `root` with mode 0700 and checks every socket path fits in `sun_path`.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        let root = root.into();
        let dir = Self { root };
        dir.check_socket_lengths()?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir.root)
            .map_err(io(&dir.root, "create"))?;
        dir.check_owner()?;
        fs::set_permissions(&dir.root, fs::Permissions::from_mode(0o700))
            .map_err(io(&dir.root, "chmod 0700"))?;
        Ok(dir)
    }

    /// A real directory (not a symlink) owned by our effective uid.
    fn check_owner(&self) -> Result<(), RuntimeError> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::symlink_metadata(&self.root).map_err(io(&self.root, "stat"))?;
        let us = rustix::process::geteuid().as_raw();
        if !meta.is_dir() || meta.uid() != us {
            return Err(RuntimeError::NotOurs {
                path: self.root.clone(),
                owner: meta.uid(),
                us,
            });
        }
        Ok(())
    }

    /// Opens an existing runtime dir (for adoption) and checks its owner and mode.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        let dir = Self { root: root.into() };
        dir.check_owner()?;
        let meta = fs::metadata(&dir.root).map_err(io(&dir.root, "stat"))?;
        let mode = meta.permissions().mode() & 0o7777;
        if !meta.is_dir() || mode != 0o700 {
            return Err(RuntimeError::BadMode {
                path: dir.root,
                mode,
            });
        }
        dir.check_socket_lengths()?;
        Ok(dir)
    }

    fn check_socket_lengths(&self) -> Result<(), RuntimeError> {
        for path in [
            self.qmp_socket(),
            self.swtpm_ctrl_socket(),
            self.serial_socket(),
            self.vnc_socket(),
            self.screen_qmp_socket(),
            self.guest_agent_socket(),
        ] {
            let len = path.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(RuntimeError::SocketPathTooLong { path, len });
            }
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.root.join("qmp.sock")
    }
    pub fn swtpm_ctrl_socket(&self) -> PathBuf {
        self.root.join("swtpm-ctrl.sock")
    }
    pub fn serial_socket(&self) -> PathBuf {
        self.root.join("serial.sock")
    }
    /// QEMU's VNC server (the graphical console), when the VM has a display.
    pub fn vnc_socket(&self) -> PathBuf {
        self.root.join("vnc.sock")
    }
    /// A second QMP monitor, for the API server's screenshots (`screendump`), so that it never
    /// waits for the engine's monitor nor the engine for it.
    pub fn screen_qmp_socket(&self) -> PathBuf {
        self.root.join("qmp-screen.sock")
    }
    /// The host end of the guest agent's virtio-serial channel (`crate::agent`).
    pub fn guest_agent_socket(&self) -> PathBuf {
        self.root.join("qga.sock")
    }
    pub fn serial_log(&self) -> PathBuf {
        self.root.join("serial.log")
    }
    pub fn qemu_pid_file(&self) -> PathBuf {
        self.root.join("qemu.pid")
    }
    pub fn swtpm_pid_file(&self) -> PathBuf {
        self.root.join("swtpm.pid")
    }
    pub fn swtpm_log(&self) -> PathBuf {
        self.root.join("swtpm.log")
    }
    pub fn qemu_log(&self) -> PathBuf {
        self.root.join("qemu.log")
    }
    /// The name of this run (the runtime dir's last component: a VM UUID or a hash), which
    /// names its cards' network namespaces.
    pub fn run_name(&self) -> String {
        self.root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// passt's output for the card `nic` (a QEMU id: no `/`).
    pub fn passt_log(&self, nic: &str) -> PathBuf {
        self.root.join(format!("passt-{nic}.log"))
    }
    pub fn run_record(&self) -> PathBuf {
        self.root.join("run.json")
    }

    /// Writes `run.json` crash-safely with mode 0600.
    pub fn write_record(&self, record: &RunRecord) -> Result<(), RuntimeError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| RuntimeError::BadRecord {
            path: self.run_record(),
            reason: e.to_string(),
        })?;
        let path = self.run_record();
        ferrovirt_storage::atomic::write_file(&path, &bytes, 0o600).map_err(|e| RuntimeError::Io {
            path,
            action: "write run record",
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Reads `run.json`.
    pub fn read_record(&self) -> Result<RunRecord, RuntimeError> {
        let path = self.run_record();
        let bytes = fs::read(&path).map_err(io(&path, "read"))?;
        serde_json::from_slice(&bytes).map_err(|e| RuntimeError::BadRecord {
            path,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::*;

    #[test]
    fn creates_0700_and_round_trips_the_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RuntimeDir::create(tmp.path().join("vm1/run")).unwrap();
        let mode = fs::metadata(dir.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let machine = MachineConfig {
            name: "x".into(),
            uuid: "u".into(),
            smbios_serial: None,
            accel: Accel::Tcg,
            vcpus: 1,
            memory_mib: 64,
            machine: MachineType::Q35 { smm: false },
            firmware: Firmware::Bios,
            tpm: None,
            hyperv: None,
            disks: vec![],
            nics: vec![],
            serial: SerialConsole {
                socket: dir.serial_socket(),
                log_file: dir.serial_log(),
            },
            graphics: None,
            inputs: Vec::new(),
            qmp_socket: dir.qmp_socket(),
            guest_agent_socket: None,
            pid_file: dir.qemu_pid_file(),
            qemu_binary: None,
            fd_sets: Vec::new(),
        };
        let record = RunRecord {
            machine,
            qemu: ProcessIdentity {
                pid: 42,
                start_time: 7,
                exe: Some("/usr/bin/qemu-system-x86_64".into()),
            },
            swtpm: None,
            passt: vec![ProcessIdentity {
                pid: 43,
                start_time: 8,
                exe: Some("/usr/bin/passt".into()),
            }],
            pasta: Vec::new(),
            netns: vec!["ferrovirt-x-0".into()],
            created_unix: 1,
        };
        dir.write_record(&record).unwrap();
        let file_mode = fs::metadata(dir.run_record()).unwrap().permissions().mode() & 0o777;
        assert_eq!(file_mode, 0o600);
        assert_eq!(
            RuntimeDir::open(dir.root()).unwrap().read_record().unwrap(),
            record
        );
        // no temp file left behind
        assert_eq!(fs::read_dir(dir.root()).unwrap().count(), 1);
    }

    #[test]
    fn too_deep_dir_is_refused_clearly() {
        let deep = PathBuf::from("/tmp").join("d".repeat(100));
        let err = RuntimeDir::create(&deep).unwrap_err();
        assert!(matches!(err, RuntimeError::SocketPathTooLong { .. }));
        assert!(
            err.to_string().contains("shorter runtime directory"),
            "{err}"
        );
        assert!(!deep.exists());
    }

    #[test]
    fn open_refuses_world_readable_dir() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            RuntimeDir::open(tmp.path()),
            Err(RuntimeError::BadMode { .. })
        ));
    }

    #[test]
    fn open_refuses_a_dir_someone_else_owns_or_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let real = RuntimeDir::create(tmp.path().join("r")).unwrap();
        std::os::unix::fs::symlink(real.root(), tmp.path().join("link")).unwrap();
        assert!(matches!(
            RuntimeDir::open(tmp.path().join("link")),
            Err(RuntimeError::NotOurs { .. })
        ));
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(real.root(), Some(65534), None).unwrap();
            assert!(matches!(
                RuntimeDir::open(real.root()),
                Err(RuntimeError::NotOurs { owner: 65534, .. })
            ));
            assert!(RuntimeDir::create(real.root()).is_err());
        }
    }

    #[test]
    fn malformed_record_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RuntimeDir::create(tmp.path().join("r")).unwrap();
        fs::write(dir.run_record(), b"{not json").unwrap();
        assert!(matches!(
            dir.read_record(),
            Err(RuntimeError::BadRecord { .. })
        ));
    }
}
