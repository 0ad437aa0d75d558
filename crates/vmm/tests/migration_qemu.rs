//! Live migration between two real QEMUs (TCG) with swtpm and OVMF, on one host, over two unix
//! sockets: the test guest keeps using its TPM on the destination (guest/README.md, "TPM loop").

// Test helpers outside #[test] fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrovirt_vmm::launcher::{SwtpmConfig, VmHandle};
use ferrovirt_vmm::machine::*;
use ferrovirt_vmm::migration::{self, MigrationSockets};
use ferrovirt_vmm::runtime::RuntimeDir;
use sha2::{Digest, Sha256};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

fn guest_image() -> PathBuf {
    let dir = std::env::var_os("FERROVIRT_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/guest"));
    let image = dir.join("ferro-guest.img");
    assert!(
        image.is_file(),
        "test guest image {} is missing: run guest/build.sh {}",
        image.display(),
        dir.display()
    );
    image
}

struct Side {
    base: PathBuf,
    runtime: RuntimeDir,
}

impl Side {
    fn new(base: &Path, name: &str) -> Self {
        let base = base.join(name);
        std::fs::create_dir_all(&base).unwrap();
        let runtime = RuntimeDir::create(base.join("run")).unwrap();
        Self { base, runtime }
    }

    fn vars(&self) -> PathBuf {
        self.base.join("VARS.fd")
    }
    fn disk(&self) -> PathBuf {
        self.base.join("disk.img")
    }
    fn tpm(&self) -> PathBuf {
        self.base.join("tpm")
    }

    fn machine(&self) -> MachineConfig {
        let rt = &self.runtime;
        MachineConfig {
            name: "default_migrating".into(),
            uuid: "5d1a7c2e-0f4b-4c1d-9a8e-2b3c4d5e6f70".into(),
            smbios_serial: Some("ferro-tpm-loop".into()),
            accel: Accel::Tcg,
            vcpus: 1,
            memory_mib: 256,
            machine: MachineType::Q35 { smm: false },
            firmware: Firmware::Uefi {
                code: OVMF_CODE.into(),
                vars: self.vars(),
                secure_boot: false,
            },
            tpm: Some(TpmAttachment {
                ctrl_socket: rt.swtpm_ctrl_socket(),
                model: TpmModel::Crb,
            }),
            hyperv: None,
            disks: vec![Disk {
                name: "root".into(),
                path: self.disk(),
                format: DiskFormat::Raw,
                bus: DiskBus::Virtio,
                read_only: false,
                boot_order: Some(1),
                serial: None,
                media: DiskMedia::Disk,
            }],
            nics: vec![],
            serial: SerialConsole {
                socket: rt.serial_socket(),
                log_file: rt.serial_log(),
            },
            graphics: None,
            inputs: Vec::new(),
            qmp_socket: rt.qmp_socket(),
            guest_agent_socket: Some(rt.guest_agent_socket()),
            pid_file: rt.qemu_pid_file(),
            qemu_binary: None,
            fd_sets: Vec::new(),
        }
    }

    fn swtpm(&self) -> SwtpmConfig {
        std::fs::create_dir_all(self.tpm()).unwrap();
        SwtpmConfig {
            state_dir: self.tpm(),
            binary: None,
            extra_args: vec![],
            key: None,
        }
    }

    /// swtpm with its state encrypted at rest under a data key of this side's own.
    fn swtpm_encrypted(&self, key_byte: u8) -> SwtpmConfig {
        SwtpmConfig {
            key: Some(ferrovirt_tpm::StateKey::new([key_byte; 32])),
            ..self.swtpm()
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.runtime.serial_log()).unwrap_or_default()
    }
}

/// One `FERRO: tick=N pcr16=HEX secret=HEX` line of the guest's TPM loop.
#[derive(Debug, Clone, PartialEq)]
struct Tick {
    n: u64,
    pcr16: String,
    secret: String,
}

fn ticks(log: &str) -> Vec<Tick> {
    log.lines()
        .filter_map(|line| line.split("FERRO: tick=").nth(1))
        .filter_map(|rest| {
            let mut fields = rest.trim_end_matches('\r').split(' ');
            let n = fields.next()?.parse().ok()?;
            let pcr16 = fields.next()?.strip_prefix("pcr16=")?.to_string();
            let secret = fields.next()?.strip_prefix("secret=")?.to_string();
            Some(Tick { n, pcr16, secret })
        })
        .collect()
}

/// PCR 16 after `n` extends with SHA-256("ferro-tick") from its reset value (zeros).
fn expected_pcr16(n: u64) -> String {
    let digest = Sha256::digest(b"ferro-tick");
    let mut pcr = [0u8; 32];
    for _ in 0..n {
        let mut h = Sha256::new();
        h.update(pcr);
        h.update(digest);
        pcr.copy_from_slice(&h.finalize());
    }
    pcr.iter().map(|b| format!("{b:02x}")).collect()
}

async fn wait_for_ticks(side: &Side, count: usize, timeout: Duration) -> Vec<Tick> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = ticks(&side.log());
        if found.len() >= count {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "the guest did not reach {count} TPM ticks within {timeout:?}; serial log:\n{}",
            side.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration_keeps_the_guest_and_its_tpm_running() {
    let tmp = tempfile::Builder::new()
        .prefix("fvmig")
        .tempdir_in("/tmp")
        .unwrap();
    let src = Side::new(tmp.path(), "src");
    let dst = Side::new(tmp.path(), "dst");
    std::fs::copy(OVMF_VARS, src.vars()).unwrap();
    std::fs::copy(guest_image(), src.disk()).unwrap();
    // The destination starts from what a receiver has before the mirrors: a VARS template and
    // an empty disk of the same size; an empty TPM state dir.
    std::fs::copy(OVMF_VARS, dst.vars()).unwrap();
    let size = std::fs::metadata(src.disk()).unwrap().len();
    std::fs::File::create(dst.disk())
        .unwrap()
        .set_len(size)
        .unwrap();

    let source = VmHandle::start(
        src.machine(),
        Some(src.swtpm_encrypted(0x11)),
        src.runtime.clone(),
    )
    .await
    .expect("source VM starts");
    // The boot (TCG, on a machine shared with builds) may take minutes; the migration's own
    // waits below stay short.
    let before = wait_for_ticks(&src, 2, Duration::from_secs(300)).await;
    let report = src.log();
    assert!(report.contains("FERRO: loop=started"), "{report}");

    let dest = VmHandle::start_incoming(
        dst.machine(),
        // The destination's own data key: QEMU moves swtpm's state blobs decrypted
        // (PTM_STATE_FLAG_DECRYPTED) inside the migration stream, and the destination's swtpm
        // encrypts them under its key.
        Some(dst.swtpm_encrypted(0x22)),
        dst.runtime.clone(),
        vec![],
    )
    .await
    .expect("destination QEMU starts incoming");
    assert!(
        !dst.runtime.run_record().exists(),
        "an incoming QEMU is not a recorded run until its state arrived"
    );
    let sockets = MigrationSockets {
        memory: dst.runtime.root().join("migration.sock"),
        blocks: dst.runtime.root().join("nbd.sock"),
    };
    migration::receive(&dest, &sockets).await.expect("receive");
    let mut readings = Vec::new();
    let (sent, resumed) = tokio::join!(
        migration::send(&source, &sockets, |p| readings.push(p.clone())),
        migration::finish_receive(&dest, Duration::from_secs(600)),
    );
    let sent = sent.expect("send");
    let resumed = resumed.expect("the destination resumes");
    let downtime = sent
        .source_stopped_at
        .and_then(|stopped| resumed.duration_since(stopped).ok());
    println!(
        "migration: total {} ms (mirrors {} ms), QEMU downtime {:?} ms, source stop -> destination running {:?}, {} bytes of RAM, waited {:?} ms for a TPM command in flight",
        sent.total_ms,
        sent.mirror_ms,
        sent.qemu_downtime_ms,
        downtime,
        sent.ram_transferred_bytes,
        sent.tpm_wait_ms
    );
    assert!(readings.iter().any(|p| p.status == "mirroring"));
    // The switch-over read the tpm-crb's CRB_CTRL_START (and waited while a command ran).
    assert!(sent.tpm_wait_ms.is_some());
    // A memory pass can end between two polls: any reading of the memory migration counts.
    assert!(
        readings.iter().any(|p| p.ram_total_bytes > 0),
        "{readings:?}"
    );
    assert!(dst.runtime.run_record().exists());

    // The source is paused for good: quit it, its swtpm follows.
    let status = source.qmp().query_status().await.unwrap();
    assert_eq!(
        status,
        ferrovirt_vmm::qmp::RunState::Other("postmigrate".into())
    );
    let last_on_source = ticks(&src.log()).last().cloned().unwrap();
    source.qmp().quit().await.unwrap();
    source.wait_exited().await.unwrap();

    // The guest goes on ticking on the destination: the PCR chain continues (TPM state moved,
    // not reset) and the sealed secret still unseals.
    let after = wait_for_ticks(&dst, 2, Duration::from_secs(90)).await;
    let first = &after[0];
    assert_eq!(
        first.n,
        last_on_source.n + 1,
        "source {last_on_source:?}, destination {after:?}\ndestination serial log:\n{}\ndestination QEMU log:\n{}",
        dst.log(),
        std::fs::read_to_string(dst.runtime.qemu_log()).unwrap_or_default()
    );
    for tick in before.iter().chain(&after) {
        assert_eq!(tick.pcr16, expected_pcr16(tick.n), "{tick:?}");
        assert_eq!(tick.secret, before[0].secret);
        assert_eq!(tick.secret.len(), 32);
    }

    // Disks and VARS: byte for byte the source's; the destination's swtpm wrote its state.
    assert!(std::fs::read(src.disk()).unwrap() == std::fs::read(dst.disk()).unwrap());
    let src_vars = std::fs::read(src.vars()).unwrap();
    assert!(
        src_vars != std::fs::read(OVMF_VARS).unwrap(),
        "the guest wrote a variable"
    );
    dest.qmp().stop().await.unwrap();
    assert!(src_vars == std::fs::read(dst.vars()).unwrap());
    dest.qmp().cont().await.unwrap();
    let permall = std::fs::read(dst.tpm().join("tpm2-00.permall")).unwrap();
    assert!(ferrovirt_tpm::key::is_encrypted_state(&permall));

    dest.qmp().quit().await.unwrap();
    dest.wait_exited().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_killed_mid_way_leaves_the_guest_running_on_the_source() {
    let tmp = tempfile::Builder::new()
        .prefix("fvmig")
        .tempdir_in("/tmp")
        .unwrap();
    let src = Side::new(tmp.path(), "src");
    let dst = Side::new(tmp.path(), "dst");
    std::fs::copy(OVMF_VARS, src.vars()).unwrap();
    std::fs::copy(guest_image(), src.disk()).unwrap();
    std::fs::copy(OVMF_VARS, dst.vars()).unwrap();
    let size = std::fs::metadata(src.disk()).unwrap().len();
    std::fs::File::create(dst.disk())
        .unwrap()
        .set_len(size)
        .unwrap();
    let source = VmHandle::start(src.machine(), Some(src.swtpm()), src.runtime.clone())
        .await
        .unwrap();
    wait_for_ticks(&src, 1, Duration::from_secs(300)).await;
    let dest = VmHandle::start_incoming(
        dst.machine(),
        Some(dst.swtpm()),
        dst.runtime.clone(),
        vec![],
    )
    .await
    .unwrap();
    let sockets = MigrationSockets {
        memory: dst.runtime.root().join("migration.sock"),
        blocks: dst.runtime.root().join("nbd.sock"),
    };
    migration::receive(&dest, &sockets).await.unwrap();
    // Kill the destination once the memory migration is under way.
    let killer = async {
        for _ in 0..6000 {
            let value = source.qmp().execute("query-migrate", None).await.unwrap();
            if value.get("status").and_then(|s| s.as_str()) == Some("active") {
                dest.kill();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the memory migration never became active");
    };
    let (sent, ()) = tokio::join!(migration::send(&source, &sockets, |_| {}), killer);
    let error = sent.expect_err("the migration must fail");
    println!("migration failed as expected: {error}");
    assert_eq!(
        source.qmp().query_status().await.unwrap(),
        ferrovirt_vmm::qmp::RunState::Running
    );
    let jobs = source
        .qmp()
        .execute("query-block-jobs", None)
        .await
        .unwrap();
    assert_eq!(jobs, serde_json::json!([]), "no mirror left behind");
    let count = ticks(&src.log()).len();
    let later = wait_for_ticks(&src, count + 2, Duration::from_secs(60)).await;
    for tick in &later {
        assert_eq!(tick.pcr16, expected_pcr16(tick.n), "{tick:?}");
    }
    source.qmp().quit().await.unwrap();
    source.wait_exited().await.unwrap();
}
