//! Start latency of a VM with a persistent TPM, persistent EFI and Secure Boot (q35, OVMF, tpm-crb,
//! 256 MiB, no disk, TCG): `Engine::start` (state checks, generations, swtpm, QEMU, QMP `running`)
//! next to a hand launch of swtpm + QEMU with the same command line to QMP `running`, interleaved,
//! medians over N runs. Prints ratios (absolute times on a shared machine are noise).
//!
//!   cargo run --release -p ferrovirt-vmm --example start_latency [N]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ferrovirt_storage::{LocalPathProvisioner, VmUuid};
use ferrovirt_vmm::cmdline::qemu_args;
use ferrovirt_vmm::engine::{Engine, VmPlan};
use ferrovirt_vmm::machine::{
    Firmware, MachineConfig, MachineType, SerialConsole, TpmAttachment, TpmModel,
};
use ferrovirt_vmm::qmp::QmpClient;
use ferrovirt_vmm::state::{FirmwarePlan, TpmPlan};

type Error = Box<dyn std::error::Error>;

fn plan(data: &Path) -> Result<VmPlan, Error> {
    let volume = LocalPathProvisioner::new(data.join("volumes"))?
        .create_volume("persistent-state-for-bench")?;
    Ok(VmPlan {
        namespace: "default".into(),
        name: "bench".into(),
        uuid: VmUuid::parse("00000000-0000-4000-8000-00000000b001")?,
        vcpus: 1,
        memory_mib: 256,
        firmware: FirmwarePlan::Uefi {
            secure_boot: true,
            persistent: true,
        },
        smm: true,
        tpm: TpmPlan::Persistent,
        disks: vec![],
        nics: vec![],
        state_volume: Some(volume),
        generations_dir: Some(data.join("state-generations/persistent-state-for-bench")),
        grace: Duration::from_millis(100),
    })
}

/// swtpm + QEMU by hand, same configuration, to QMP `running`; returns the time and cleans up.
async fn hand_launch(dir: &Path) -> Result<Duration, Error> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("tpm"))?;
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.ms.fd", dir.join("VARS.fd"))?;
    let machine = MachineConfig {
        name: "hand".into(),
        uuid: "00000000-0000-4000-8000-00000000b002".into(),
        accel: ferrovirt_vmm::machine::Accel::Tcg,
        vcpus: 1,
        memory_mib: 256,
        machine: MachineType::Q35 { smm: true },
        firmware: Firmware::Uefi {
            code: "/usr/share/OVMF/OVMF_CODE_4M.ms.fd".into(),
            vars: dir.join("VARS.fd"),
            secure_boot: true,
        },
        tpm: Some(TpmAttachment {
            ctrl_socket: dir.join("swtpm.sock"),
            model: TpmModel::Crb,
        }),
        disks: vec![],
        nics: vec![],
        serial: SerialConsole {
            socket: dir.join("serial.sock"),
            log_file: dir.join("serial.log"),
        },
        qmp_socket: dir.join("qmp.sock"),
        pid_file: dir.join("qemu.pid"),
        qemu_binary: None,
    };
    let started = Instant::now();
    let mut swtpm = tokio::process::Command::new("swtpm")
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
        .spawn()?;
    while !dir.join("swtpm.sock").exists() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut qemu = tokio::process::Command::new("qemu-system-x86_64")
        .args(qemu_args(&machine)?)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let qmp = loop {
        match QmpClient::connect(&dir.join("qmp.sock"), Duration::from_secs(5)).await {
            Ok(qmp) => break qmp,
            Err(_) if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    qmp.cont().await?;
    let _ = qmp.query_status().await?;
    let elapsed = started.elapsed();
    let _ = qmp.quit().await;
    let _ = qemu.wait().await;
    let _ = swtpm.wait().await;
    Ok(elapsed)
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let data = tempfile::tempdir()?;
    let engine = Engine::new(data.path()).await?;

    let first = Instant::now();
    let running = engine.start(plan(data.path())?).await?;
    let first = first.elapsed();
    engine.stop(&running).await?;

    let (mut ours, mut hand) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        let running = engine.start(plan(data.path())?).await?;
        ours.push(started.elapsed());
        engine.stop(&running).await?;
        hand.push(hand_launch(&data.path().join("hand")).await?);
    }
    let (ours, hand) = (median(&mut ours), median(&mut hand));
    println!(
        "first start (TPM manufacture + CA): {:.0} ms",
        first.as_secs_f64() * 1e3
    );
    println!(
        "engine start, median of {runs}: {:.1} ms",
        ours.as_secs_f64() * 1e3
    );
    println!(
        "hand launch, median of {runs}: {:.1} ms",
        hand.as_secs_f64() * 1e3
    );
    println!(
        "start_ratio_vs_hand={:.2}",
        ours.as_secs_f64() / hand.as_secs_f64()
    );
    Ok(())
}
