//! The libvirt contender: `virsh -c qemu:///system` (libvirtd + virtlogd, started by bench/run.sh)
//! with the equivalent domain: q35 TCG, OVMF Secure Boot (SMM, Microsoft VARS template), tpm-crb
//! with a persistent swtpm state, 256 MiB, no disk. Stop is `virsh destroy` followed by an fsync
//! of the TPM state and the VARS file (libvirt does not fsync them itself), so "durable" means
//! the same thing for all contenders.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::BenchError;
use crate::hand::OVMF_VARS;

/// One libvirt domain of the benchmark.
pub struct Domain {
    pub name: String,
    pub uuid: String,
}

async fn virsh(args: &[&str]) -> Result<String, BenchError> {
    let out = Command::new("virsh")
        .arg("-c")
        .arg("qemu:///system")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| BenchError::Setup(format!("cannot run virsh: {e}")))?;
    if !out.status.success() {
        return Err(BenchError::Setup(format!(
            "virsh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether libvirtd answers.
pub async fn available() -> bool {
    virsh(&["version"]).await.is_ok()
}

/// The domain XML.
pub fn domain_xml(name: &str, uuid: &str) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader>
    <nvram template='{OVMF_VARS}'/>
  </os>
  <features><acpi/><smm state='on'/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    <serial type='pty'/>
    <tpm model='tpm-crb'><backend type='emulator' version='2.0' persistent_state='yes'/></tpm>
  </devices>
</domain>
"
    )
}

impl Domain {
    /// Defines the domain afresh: an old one of that name is destroyed and undefined with its
    /// NVRAM and TPM state, so the first start manufactures a new TPM.
    pub async fn define(
        name: &str,
        index: u32,
        work: &std::path::Path,
    ) -> Result<Self, BenchError> {
        let uuid = format!("00000000-0000-4000-8000-{:012x}", 0xbe_0000u32 + index);
        let _ = virsh(&["destroy", name]).await;
        let _ = virsh(&["undefine", name, "--nvram"]).await;
        let domain = Domain {
            name: name.to_owned(),
            uuid,
        };
        let _ = std::fs::remove_dir_all(domain.tpm_dir());
        let _ = std::fs::remove_file(domain.nvram());
        let xml = work.join(format!("{name}.xml"));
        std::fs::write(&xml, domain_xml(name, &domain.uuid))
            .map_err(|e| BenchError::Setup(format!("cannot write {}: {e}", xml.display())))?;
        let path = xml.to_string_lossy().into_owned();
        virsh(&["define", &path]).await?;
        Ok(domain)
    }

    fn tpm_dir(&self) -> PathBuf {
        PathBuf::from(format!("/var/lib/libvirt/swtpm/{}", self.uuid))
    }

    fn nvram(&self) -> PathBuf {
        PathBuf::from(format!("/var/lib/libvirt/qemu/nvram/{}_VARS.fd", self.name))
    }

    /// `virsh start` (returns once the guest CPUs run).
    pub async fn start(&self) -> Result<Duration, BenchError> {
        let started = Instant::now();
        virsh(&["start", &self.name]).await?;
        Ok(started.elapsed())
    }

    /// `virsh destroy`, then fsync of the TPM state file, the VARS file and their directories.
    pub async fn stop(&self) -> Result<Duration, BenchError> {
        let started = Instant::now();
        virsh(&["destroy", &self.name]).await?;
        let tpm = self.tpm_dir().join("tpm2");
        for file in [
            tpm.join("tpm2-00.permall"),
            self.nvram(),
            tpm,
            PathBuf::from("/var/lib/libvirt/qemu/nvram"),
        ] {
            crate::fsync(&file)?;
        }
        Ok(started.elapsed())
    }

    /// Destroys (if running) and undefines the domain with its NVRAM and TPM state.
    pub async fn remove(self) {
        let _ = virsh(&["destroy", &self.name]).await;
        let _ = virsh(&["undefine", &self.name, "--nvram"]).await;
        let _ = std::fs::remove_dir_all(self.tpm_dir());
    }
}
