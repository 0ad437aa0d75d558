//! The floor: swtpm + QEMU launched by hand with the same QEMU command line ferrovirt builds
//! (`ferrovirt_vmm::cmdline::qemu_args`), to QMP `running`. The TPM state and VARS file persist in
//! one directory; the first start manufactures the TPM with Debian's default `swtpm_setup`
//! configuration (as a person or libvirt would) and copies the VARS template.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ferrovirt_vmm::cmdline::qemu_args;
use ferrovirt_vmm::machine::{
    Accel, Firmware, MachineConfig, MachineType, SerialConsole, TpmAttachment, TpmModel,
};
use ferrovirt_vmm::qmp::QmpClient;
use tokio::process::{Child, Command};

use crate::BenchError;

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
/// The Secure Boot VARS template (Microsoft keys enrolled).
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// A hand-launched VM's directory: `tpm/` (swtpm state), `VARS.fd`, sockets.
pub struct HandVm {
    dir: PathBuf,
    memory_mib: u64,
}

/// A running hand-launched VM.
pub struct HandRun {
    swtpm: Child,
    qemu: Child,
    qmp: QmpClient,
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> BenchError {
    let message = format!("{what} {}", path.display());
    move |e| BenchError::Setup(format!("{message}: {e}"))
}

impl HandVm {
    /// A fresh directory (any old state removed).
    pub fn fresh(dir: &Path) -> Result<Self, BenchError> {
        Self::fresh_with_memory(dir, 256)
    }

    /// A fresh directory for a VM of `memory_mib`.
    pub fn fresh_with_memory(dir: &Path, memory_mib: u64) -> Result<Self, BenchError> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("tpm")).map_err(io("cannot create", dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            memory_mib,
        })
    }

    fn machine(&self) -> MachineConfig {
        let dir = &self.dir;
        MachineConfig {
            name: "hand".into(),
            uuid: "00000000-0000-4000-8000-00000000b002".into(),
            smbios_serial: None,
            accel: Accel::Tcg,
            vcpus: 1,
            memory_mib: self.memory_mib,
            machine: MachineType::Q35 { smm: true },
            firmware: Firmware::Uefi {
                code: OVMF_CODE.into(),
                vars: dir.join("VARS.fd"),
                secure_boot: true,
            },
            tpm: Some(TpmAttachment {
                ctrl_socket: dir.join("swtpm.sock"),
                model: TpmModel::Crb,
            }),
            hyperv: None,
            disks: vec![],
            nics: vec![],
            serial: SerialConsole {
                socket: dir.join("serial.sock"),
                log_file: dir.join("serial.log"),
            },
            // Headless, as the benchmark's ferrovirt VM (autoattachGraphicsDevice: false) and
            // libvirt domain: the same machine on all three sides.
            graphics: None,
            inputs: Vec::new(),
            qmp_socket: dir.join("qmp.sock"),
            guest_agent_socket: None,
            pid_file: dir.join("qemu.pid"),
            qemu_binary: None,
            fd_sets: Vec::new(),
        }
    }

    /// First start: `swtpm_setup` (EK + platform certificates from the host's local CA), a copy
    /// of the VARS template, then [`HandVm::start`]; timed as a whole.
    pub async fn first_start(&self) -> Result<(Duration, HandRun), BenchError> {
        let started = Instant::now();
        let tpm = self.dir.join("tpm");
        let status = Command::new("swtpm_setup")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(&tpm)
            .args([
                "--create-ek-cert",
                "--create-platform-cert",
                "--lock-nvram",
                "--not-overwrite",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(io("cannot run swtpm_setup for", &tpm))?;
        if !status.success() {
            return Err(BenchError::Setup(format!(
                "swtpm_setup failed for {} ({status})",
                tpm.display()
            )));
        }
        std::fs::copy(OVMF_VARS, self.dir.join("VARS.fd"))
            .map_err(io("cannot copy", Path::new(OVMF_VARS)))?;
        let (_, run) = self.start().await?;
        Ok((started.elapsed(), run))
    }

    /// swtpm, then QEMU (`-S`), QMP `cont` (which answers once the guest runs).
    pub async fn start(&self) -> Result<(Duration, HandRun), BenchError> {
        let dir = &self.dir;
        for socket in ["swtpm.sock", "qmp.sock", "serial.sock"] {
            let _ = std::fs::remove_file(dir.join(socket));
        }
        let args = qemu_args(&self.machine())
            .map_err(|e| BenchError::Setup(format!("QEMU command line: {e}")))?;
        let started = Instant::now();
        let swtpm = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.join("tpm").display()))
            .arg("--ctrl")
            .arg(format!(
                "type=unixio,path={}",
                dir.join("swtpm.sock").display()
            ))
            .arg("--terminate")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(io("cannot run swtpm for", dir))?;
        while !dir.join("swtpm.sock").exists() {
            if started.elapsed() > Duration::from_secs(5) {
                return Err(BenchError::Timeout("swtpm's socket did not appear".into()));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let qemu = Command::new("qemu-system-x86_64")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(io("cannot run QEMU for", dir))?;
        let qmp = loop {
            match QmpClient::connect(&dir.join("qmp.sock"), Duration::from_secs(5)).await {
                Ok(qmp) => break qmp,
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(BenchError::Setup(format!("QMP of the hand VM: {e}"))),
            }
        };
        // `cont` answers once the guest runs (as ferrovirt's launcher, no `query-status` after).
        qmp.cont()
            .await
            .map_err(|e| BenchError::Setup(format!("QMP cont: {e}")))?;
        let elapsed = started.elapsed();
        Ok((elapsed, HandRun { swtpm, qemu, qmp }))
    }

    /// QMP `quit`, QEMU and swtpm reaped, the TPM state and VARS fsynced (and their directories):
    /// the state is durable when this returns.
    pub async fn stop(&self, mut run: HandRun) -> Result<Duration, BenchError> {
        let started = Instant::now();
        let _ = run.qmp.quit().await;
        let _ = run.qemu.wait().await;
        let _ = run.swtpm.wait().await;
        for file in [
            self.dir.join("tpm/tpm2-00.permall"),
            self.dir.join("VARS.fd"),
            self.dir.join("tpm"),
            self.dir.clone(),
        ] {
            crate::fsync(&file)?;
        }
        Ok(started.elapsed())
    }
}
