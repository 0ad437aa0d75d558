//! Live migration of one running VM from a source QEMU to a destination QEMU (what KubeVirt's
//! virt-launcher asks libvirt to do), over two unix sockets the caller connects: the memory
//! stream and the block stream (NBD). The caller relays them (e.g. through an authenticated
//! tunnel between two hosts); this module never opens a network port.
//!
//! The flow, as libvirt's non-shared-storage migration:
//! 1. Destination ([`receive`]): QEMU started with `-incoming defer`
//!    (`VmHandle::start_incoming`), swtpm with an empty state dir; `nbd-server-start` on the
//!    block socket, every writable block node (disks, the VARS pflash) exported writable,
//!    `migrate-incoming` on the memory socket.
//! 2. Source ([`send`]): `drive-mirror` of every writable node to its export
//!    (`copy-mode: write-blocking`, so once ready every guest write reaches both); once all are
//!    ready, `migrate` with `pause-before-switchover`; progress from `query-migrate`. At
//!    `pre-switchover` (vCPUs stopped) the mirrors are ended (`block-job-cancel` of a ready
//!    mirror completes it: the destination holds a point-in-time copy), then `migrate-continue`.
//!    The vTPM's state travels in the memory stream (QEMU's tpm-emulator fetches swtpm's state
//!    blobs on the source and hands them to the destination's swtpm, which writes its state dir).
//! 3. Destination ([`finish_receive`]): once its `query-migrate` says `completed`,
//!    `nbd-server-stop`, `run.json` written, `cont`.
//!
//! On any failure of [`send`] the mirrors and the migration are cancelled and the source guest
//! is resumed if the migration had paused it: the VM keeps running where it was.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::launcher::{LaunchError, VmHandle};
use crate::machine::{Firmware, MachineConfig};
use crate::qmp::{QmpClient, QmpError, RunState};

/// The memory stream's socket name in a runtime dir.
pub const MEMORY_SOCKET: &str = "migration.sock";
/// The NBD server's socket name in a runtime dir.
pub const BLOCKS_SOCKET: &str = "nbd.sock";

/// How often `query-migrate` and `query-block-jobs` are polled.
pub const POLL: Duration = Duration::from_millis(250);
/// How long the block mirrors may take to become ready (first full copy of every disk).
pub const MIRROR_READY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the memory migration may take before it is cancelled.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(900);
/// The longest pause QEMU aims for at the switch-over (`downtime-limit`, milliseconds).
pub const DOWNTIME_LIMIT_MS: u64 = 300;

/// Errors of a migration (the caller turns them into the VMIM's failure reason).
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("QMP: {0}")]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("block mirror of {node} failed: {reason}")]
    Mirror { node: String, reason: String },
    #[error("block mirrors were not ready after {0:?}")]
    MirrorTimeout(Duration),
    #[error("the memory migration failed (QEMU status {status}): {reason}")]
    Failed { status: String, reason: String },
    #[error("the memory migration did not complete within {0:?}; cancelled")]
    Timeout(Duration),
    #[error("the TPM was still executing a command {0:?} after the source paused; cancelled")]
    TpmBusy(Duration),
    #[error("the destination QEMU is in state {0:?} after cont, expected running")]
    NotRunning(RunState),
}

/// The two unix sockets of one migration on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSockets {
    /// QEMU's migration stream (`migrate unix:` / `migrate-incoming unix:`).
    pub memory: PathBuf,
    /// The destination's NBD server (`nbd-server-start`), the source's mirror target.
    pub blocks: PathBuf,
}

impl MigrationSockets {
    /// The sockets named [`MEMORY_SOCKET`] and [`BLOCKS_SOCKET`] in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            memory: dir.join(MEMORY_SOCKET),
            blocks: dir.join(BLOCKS_SOCKET),
        }
    }
}

/// The block nodes of a machine that the guest can write and that therefore must be mirrored:
/// the VARS pflash and every writable disk (per-run disks included, whose content the guest may
/// have changed). Node names are `crate::cmdline`'s.
pub fn writable_nodes(machine: &MachineConfig) -> Vec<String> {
    let mut nodes = Vec::new();
    if let Firmware::Uefi { .. } = machine.firmware {
        nodes.push("pflash1-format".to_string());
    }
    for disk in &machine.disks {
        if !disk.read_only && disk.media == crate::machine::DiskMedia::Disk {
            nodes.push(format!("disk-{}-format", disk.name));
        }
    }
    nodes
}

/// One `query-migrate` reading, as `ferrovirt migrate` prints it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationProgress {
    /// QEMU's status: `setup`, `active`, `pre-switchover`, `device`, `completed`, `failed`, ...;
    /// `mirroring` while the disks are copied before the memory migration starts.
    pub status: String,
    pub ram_total_bytes: u64,
    pub ram_remaining_bytes: u64,
    pub ram_transferred_bytes: u64,
    /// Pages dirtied per second (`ram.dirty-pages-rate`) times the page size.
    pub dirty_rate_bytes_per_second: u64,
    /// QEMU's estimate of the pause at the switch-over.
    pub expected_downtime_ms: Option<u64>,
    /// Bytes the block mirrors still have to copy.
    pub disk_remaining_bytes: u64,
    /// Memory passes so far.
    pub dirty_sync_count: u64,
}

impl MigrationProgress {
    fn from_query(value: &Value) -> Self {
        let ram = value.get("ram").cloned().unwrap_or(Value::Null);
        let num = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0);
        let page = num(&ram, "page-size").max(1);
        Self {
            status: value
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("none")
                .to_string(),
            ram_total_bytes: num(&ram, "total"),
            ram_remaining_bytes: num(&ram, "remaining"),
            ram_transferred_bytes: num(&ram, "transferred"),
            dirty_rate_bytes_per_second: num(&ram, "dirty-pages-rate").saturating_mul(page),
            expected_downtime_ms: value.get("expected-downtime").and_then(Value::as_u64),
            disk_remaining_bytes: 0,
            dirty_sync_count: num(&ram, "dirty-sync-count"),
        }
    }
}

/// What a finished send measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendOutcome {
    /// From the first mirror to `completed`.
    pub total_ms: u64,
    /// The mirrors' first full copy.
    pub mirror_ms: u64,
    /// QEMU's own figure: how long the source's vCPUs were stopped (`downtime`).
    pub qemu_downtime_ms: Option<u64>,
    /// When the source's vCPUs stopped for the switch-over (its `STOP` event, wall clock).
    pub source_stopped_at: Option<SystemTime>,
    pub ram_transferred_bytes: u64,
    /// How long the switch-over waited for a TPM command in flight to complete (`None`: no
    /// tpm-crb; `Some(0)`: none was in flight).
    pub tpm_wait_ms: Option<u64>,
}

fn mirror_job(node: &str) -> String {
    format!("migrate-{node}")
}

/// Destination, step 1: exports the writable nodes on an NBD server at `sockets.blocks` and
/// waits for the memory stream on `sockets.memory`. `dest` was started with
/// `VmHandle::start_incoming`.
pub async fn receive(dest: &VmHandle, sockets: &MigrationSockets) -> Result<(), MigrationError> {
    let qmp = dest.qmp();
    for socket in [&sockets.blocks, &sockets.memory] {
        let _ = std::fs::remove_file(socket);
    }
    qmp.execute(
        "migrate-set-capabilities",
        Some(json!({"capabilities": [{"capability": "events", "state": true}]})),
    )
    .await?;
    qmp.execute(
        "nbd-server-start",
        // SocketAddressLegacy: the path under `data`.
        Some(json!({"addr": {"type": "unix", "data": {"path": path_str(&sockets.blocks)}}})),
    )
    .await?;
    for node in writable_nodes(&dest.record().machine) {
        qmp.execute(
            "nbd-server-add",
            Some(json!({"device": node, "name": node, "writable": true})),
        )
        .await?;
    }
    qmp.execute(
        "migrate-incoming",
        Some(json!({"uri": format!("unix:{}", path_str(&sockets.memory))})),
    )
    .await?;
    Ok(())
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Destination, step 2: waits until the incoming migration completed (or failed), stops the NBD
/// server, records the run and resumes the guest. Returns the wall-clock time the guest ran
/// again. On failure the caller kills the destination and removes what it wrote.
pub async fn finish_receive(
    dest: &VmHandle,
    timeout: Duration,
) -> Result<SystemTime, MigrationError> {
    wait_received(dest, timeout, |_| {}).await?;
    resume_received(dest).await
}

/// Destination: waits until the incoming migration completed (or failed), calling `status`
/// with QEMU's migration status at every poll, then stops the NBD server. The guest stays
/// paused: its state (disks, VARS, the vTPM's) is all here and may be recorded before
/// [`resume_received`].
pub async fn wait_received(
    dest: &VmHandle,
    timeout: Duration,
    mut status: impl FnMut(&str),
) -> Result<(), MigrationError> {
    let qmp = dest.qmp();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(exit) = dest.try_exited() {
            return Err(MigrationError::Failed {
                status: "exited".into(),
                reason: format!("the destination QEMU exited: {:?}", exit.reason),
            });
        }
        let value = qmp.execute("query-migrate", None).await?;
        let now = value
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("none");
        status(now);
        match now {
            "completed" => break,
            "failed" | "cancelled" => {
                return Err(MigrationError::Failed {
                    status: now.into(),
                    reason: error_desc(&value),
                });
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(MigrationError::Timeout(timeout));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    qmp.execute("nbd-server-stop", None).await?;
    Ok(())
}

/// Destination, after [`wait_received`]: records the run (`run.json`) and resumes the guest;
/// returns the wall-clock time it ran again.
pub async fn resume_received(dest: &VmHandle) -> Result<SystemTime, MigrationError> {
    let qmp = dest.qmp();
    dest.write_record()?;
    qmp.cont().await?;
    let resumed = SystemTime::now();
    match qmp.query_status().await? {
        RunState::Running => Ok(resumed),
        other => Err(MigrationError::NotRunning(other)),
    }
}

/// Source, after a switch-over the destination did not survive (it reported its receiver failed
/// before its guest ran): resumes the guest here. QEMU's `cont` takes back the disks it handed
/// over at the end of the migration (`bdrv_activate_all`); swtpm kept its state throughout.
pub async fn resume_source(source: &VmHandle) -> Result<(), MigrationError> {
    let qmp = source.qmp();
    qmp.cont().await?;
    match qmp.query_status().await? {
        RunState::Running => Ok(()),
        other => Err(MigrationError::NotRunning(other)),
    }
}

fn error_desc(value: &Value) -> String {
    value
        .get("error-desc")
        .and_then(Value::as_str)
        .unwrap_or("no reason given by QEMU")
        .to_string()
}

/// Source: mirrors the writable nodes to the destination's NBD server, then migrates memory and
/// device state (the vTPM's included) to `sockets.memory`, calling `progress` at every poll.
/// On success the source QEMU is paused in `postmigrate` (the caller quits it); on failure the
/// guest runs on the source as before.
pub async fn send(
    source: &VmHandle,
    sockets: &MigrationSockets,
    mut progress: impl FnMut(&MigrationProgress),
) -> Result<SendOutcome, MigrationError> {
    let qmp = source.qmp();
    let nodes = writable_nodes(&source.record().machine);
    let crb = source
        .record()
        .machine
        .tpm
        .as_ref()
        .is_some_and(|tpm| tpm.model == crate::machine::TpmModel::Crb);
    let mut tpm_wait_ms = None;
    let started = Instant::now();
    let mut events = qmp.subscribe();
    let result = async {
        for node in &nodes {
            let target = format!("nbd+unix:///{node}?socket={}", path_str(&sockets.blocks));
            qmp.execute(
                "drive-mirror",
                Some(json!({
                    "job-id": mirror_job(node), "device": node, "target": target,
                    "format": "raw", "mode": "existing", "sync": "full",
                    "copy-mode": "write-blocking", "auto-dismiss": false,
                })),
            )
            .await?;
        }
        wait_mirrors_ready(qmp, &nodes, &mut progress).await?;
        let mirror_ms = millis(started.elapsed());
        qmp.execute(
            "migrate-set-capabilities",
            Some(json!({"capabilities": [
                {"capability": "events", "state": true},
                {"capability": "pause-before-switchover", "state": true},
            ]})),
        )
        .await?;
        qmp.execute(
            "migrate-set-parameters",
            Some(json!({"downtime-limit": DOWNTIME_LIMIT_MS, "max-bandwidth": 1u64 << 40})),
        )
        .await?;
        qmp.execute(
            "migrate",
            Some(json!({"uri": format!("unix:{}", path_str(&sockets.memory))})),
        )
        .await?;
        let deadline = Instant::now() + MIGRATION_TIMEOUT;
        let mut switched = false;
        let completed = loop {
            let value = qmp.execute("query-migrate", None).await?;
            let reading = MigrationProgress::from_query(&value);
            progress(&reading);
            match reading.status.as_str() {
                "completed" => break value,
                "failed" | "cancelled" => {
                    return Err(MigrationError::Failed {
                        status: reading.status,
                        reason: error_desc(&value),
                    });
                }
                "pre-switchover" if !switched => {
                    // vCPUs are stopped: nothing writes the disks any more; end the mirrors
                    // (a ready mirror's cancel completes it), then let the switch-over go on.
                    ferrovirt_storage::failpoints::hit("migration.send.at-pre-switchover")
                        .map_err(|e| MigrationError::Failed {
                            status: "pre-switchover".into(),
                            reason: format!("fault point: {e}"),
                        })?;
                    if crb {
                        tpm_wait_ms = Some(wait_crb_idle(qmp).await?);
                    }
                    end_mirrors(qmp, &nodes).await?;
                    qmp.execute("migrate-continue", Some(json!({"state": "pre-switchover"})))
                        .await?;
                    switched = true;
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(MigrationError::Timeout(MIGRATION_TIMEOUT));
            }
            let poll = if reading.status == "pre-switchover" || switched {
                Duration::from_millis(5)
            } else {
                POLL
            };
            tokio::time::sleep(poll).await;
        };
        let mut source_stopped_at = None;
        while let Ok(event) = events.try_recv() {
            if event.name == "STOP" {
                source_stopped_at = Some(
                    SystemTime::UNIX_EPOCH
                        + Duration::from_secs(u64::try_from(event.timestamp.seconds).unwrap_or(0))
                        + Duration::from_micros(
                            u64::try_from(event.timestamp.microseconds).unwrap_or(0),
                        ),
                );
            }
        }
        let reading = MigrationProgress::from_query(&completed);
        Ok(SendOutcome {
            total_ms: millis(started.elapsed()),
            mirror_ms,
            qemu_downtime_ms: completed.get("downtime").and_then(Value::as_u64),
            source_stopped_at,
            ram_transferred_bytes: reading.ram_transferred_bytes,
            tpm_wait_ms,
        })
    }
    .await;
    if let Err(e) = &result {
        tracing::warn!(vm = %source.record().machine.name, error = %e, "migration failed; the VM stays on the source");
        roll_back(qmp, &nodes).await;
    }
    result
}

/// QEMU's status of the outgoing (or incoming) migration of `vm` (`query-migrate`'s `status`:
/// `none` when it never migrated, `completed` after a switch-over, `active`, `pre-switchover`,
/// `failed`, ...).
pub async fn status(vm: &VmHandle) -> Result<String, MigrationError> {
    let value = vm.qmp().execute("query-migrate", None).await?;
    Ok(value
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("none")
        .to_string())
}

/// Source, when the manager that ran a [`send`] ended before the switch-over (a restart): cancels
/// what is left of the migration and the mirrors and resumes the guest if the migration had
/// paused it (as a failed [`send`] does). Never call it after a switch-over (status
/// `completed`): the destination may run the guest. Errors when the guest does not run after.
pub async fn abandon(source: &VmHandle) -> Result<(), MigrationError> {
    let qmp = source.qmp();
    roll_back(qmp, &writable_nodes(&source.record().machine)).await;
    match qmp.query_status().await? {
        RunState::Running => Ok(()),
        other => Err(MigrationError::NotRunning(other)),
    }
}

/// Whether an outgoing migration's QEMU status (see [`status`]) says the switch-over happened:
/// the destination got the whole state, so only it may run the guest unless it says it failed.
pub fn switched_over(status: &str) -> bool {
    status == "completed"
}

/// Source: asks a [`send`] under way to stop (the migration object was deleted): cancels the
/// memory migration and the block mirrors; `send` then fails and rolls back as on any failure
/// (the guest keeps running here).
pub async fn cancel(source: &VmHandle) {
    let qmp = source.qmp();
    let _ = qmp.execute("migrate_cancel", None).await;
    for node in writable_nodes(&source.record().machine) {
        let _ = qmp
            .execute(
                "block-job-cancel",
                Some(json!({"device": mirror_job(&node), "force": true})),
            )
            .await;
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

async fn block_jobs(qmp: &QmpClient) -> Result<Vec<Value>, QmpError> {
    Ok(qmp
        .execute("query-block-jobs", None)
        .await?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn job_named<'a>(jobs: &'a [Value], node: &str) -> Option<&'a Value> {
    let id = mirror_job(node);
    jobs.iter()
        .find(|job| job.get("device").and_then(Value::as_str) == Some(id.as_str()))
}

async fn wait_mirrors_ready(
    qmp: &QmpClient,
    nodes: &[String],
    progress: &mut impl FnMut(&MigrationProgress),
) -> Result<(), MigrationError> {
    let deadline = Instant::now() + MIRROR_READY_TIMEOUT;
    loop {
        let jobs = block_jobs(qmp).await?;
        let mut ready = true;
        let mut remaining = 0u64;
        for node in nodes {
            let Some(job) = job_named(&jobs, node) else {
                return Err(MigrationError::Mirror {
                    node: node.clone(),
                    reason: "its job ended before it was ready".into(),
                });
            };
            if let Some(error) = job.get("error").and_then(Value::as_str) {
                return Err(MigrationError::Mirror {
                    node: node.clone(),
                    reason: error.to_string(),
                });
            }
            if job.get("status").and_then(Value::as_str) == Some("concluded") {
                return Err(MigrationError::Mirror {
                    node: node.clone(),
                    reason: "its job concluded before it was ready (the destination went away?)"
                        .into(),
                });
            }
            let len = job.get("len").and_then(Value::as_u64).unwrap_or(0);
            let offset = job.get("offset").and_then(Value::as_u64).unwrap_or(0);
            remaining += len.saturating_sub(offset);
            ready &= job.get("ready").and_then(Value::as_bool).unwrap_or(false);
        }
        progress(&MigrationProgress {
            status: "mirroring".into(),
            disk_remaining_bytes: remaining,
            ..MigrationProgress::default()
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(MigrationError::MirrorTimeout(MIRROR_READY_TIMEOUT));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Where QEMU's tpm-crb maps its registers (`TPM_CRB_ADDR_BASE`) and its `CRB_CTRL_START`
/// register (offset 0x4c; bit 0: a command is being executed by the backend).
const CRB_CTRL_START: u64 = 0xfed4_0000 + 0x4c;
/// How long the switch-over waits for a TPM command in flight.
const TPM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Source, at `pre-switchover` (vCPUs stopped, the final RAM pass not yet made): waits until
/// the tpm-crb has no command in flight at swtpm, and returns how long that took.
///
/// Why: QEMU sends the final dirty RAM before the devices' state, and tpm-crb's `pre_save`
/// finishes a command in flight (`tpm_backend_finish_sync`) only then, writing the response
/// into the CRB's command buffer, which is RAM (`tpm-crb-cmd`) already sent. The destination
/// would get `CRB_CTRL_START` cleared but the guest's own command where the response should
/// be: the guest's command fails or hangs. While migration is paused here QEMU's main loop
/// runs, so the completion lands in RAM that the final pass then sends.
async fn wait_crb_idle(qmp: &QmpClient) -> Result<u64, MigrationError> {
    let started = Instant::now();
    loop {
        let start = read_phys_u32(qmp, CRB_CTRL_START).await?;
        if start & 1 == 0 {
            let waited = millis(started.elapsed());
            if waited > 0 {
                tracing::info!(
                    waited_ms = waited,
                    "switch-over waited for a TPM command in flight"
                );
            }
            return Ok(waited);
        }
        if started.elapsed() > TPM_IDLE_TIMEOUT {
            return Err(MigrationError::TpmBusy(TPM_IDLE_TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Reads one 32-bit word of guest-physical address space (MMIO included) through HMP's `xp`.
async fn read_phys_u32(qmp: &QmpClient, address: u64) -> Result<u32, MigrationError> {
    let out = qmp
        .execute(
            "human-monitor-command",
            Some(json!({"command-line": format!("xp /1wx {address:#x}")})),
        )
        .await?;
    let text = out.as_str().unwrap_or_default();
    parse_xp_word(text).ok_or_else(|| MigrationError::Failed {
        status: "pre-switchover".into(),
        reason: format!("cannot read the TPM's CRB_CTRL_START register: HMP said {text:?}"),
    })
}

/// `00000000fed4004c: 0x00000001` -> 1.
fn parse_xp_word(text: &str) -> Option<u32> {
    let value = text.split(": ").nth(1)?.trim();
    u32::from_str_radix(value.strip_prefix("0x")?, 16).ok()
}

/// Ends the ready mirrors with their final sync and waits until each job has concluded without
/// error, then dismisses them.
async fn end_mirrors(qmp: &QmpClient, nodes: &[String]) -> Result<(), MigrationError> {
    for node in nodes {
        qmp.execute(
            "block-job-cancel",
            Some(json!({"device": mirror_job(node)})),
        )
        .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = block_jobs(qmp).await?;
        let mut all_done = true;
        for node in nodes {
            let Some(job) = job_named(&jobs, node) else {
                continue;
            };
            if let Some(error) = job.get("error").and_then(Value::as_str) {
                return Err(MigrationError::Mirror {
                    node: node.clone(),
                    reason: error.to_string(),
                });
            }
            all_done &= job.get("status").and_then(Value::as_str) == Some("concluded");
        }
        if all_done {
            break;
        }
        if Instant::now() > deadline {
            return Err(MigrationError::MirrorTimeout(Duration::from_secs(60)));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for node in nodes {
        qmp.execute("job-dismiss", Some(json!({"id": mirror_job(node)})))
            .await?;
    }
    Ok(())
}

/// After a failure: cancel the migration and the mirrors, resume the guest if the migration
/// paused it. Best effort: each step is tried whatever the previous one said.
async fn roll_back(qmp: &QmpClient, nodes: &[String]) {
    let _ = qmp.execute("migrate_cancel", None).await;
    // A migration paused at pre-switchover must be told to go on before it can fail out.
    for _ in 0..200 {
        match qmp.execute("query-migrate", None).await {
            Ok(value) => match value.get("status").and_then(Value::as_str) {
                Some("active" | "setup" | "pre-switchover" | "device" | "cancelling") => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                _ => break,
            },
            Err(_) => break,
        }
    }
    for node in nodes {
        let _ = qmp
            .execute(
                "block-job-cancel",
                Some(json!({"device": mirror_job(node), "force": true})),
            )
            .await;
    }
    for _ in 0..200 {
        let Ok(jobs) = block_jobs(qmp).await else {
            break;
        };
        let mut pending = false;
        for node in nodes {
            if let Some(job) = job_named(&jobs, node) {
                if job.get("status").and_then(Value::as_str) == Some("concluded") {
                    let _ = qmp
                        .execute("job-dismiss", Some(json!({"id": mirror_job(node)})))
                        .await;
                } else {
                    pending = true;
                }
            }
        }
        if !pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if let Ok(state) = qmp.query_status().await
        && state != RunState::Running
        && !matches!(state, RunState::Shutdown)
        && let Err(e) = qmp.cont().await
    {
        tracing::error!(error = %e, "could not resume the source guest after a failed migration");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_from_query_migrate() {
        let value = json!({"status": "active", "expected-downtime": 41,
            "ram": {"total": 1000, "remaining": 400, "transferred": 600,
                    "dirty-pages-rate": 3, "page-size": 4096, "dirty-sync-count": 2}});
        let p = MigrationProgress::from_query(&value);
        assert_eq!(p.status, "active");
        assert_eq!(p.ram_remaining_bytes, 400);
        assert_eq!(p.dirty_rate_bytes_per_second, 3 * 4096);
        assert_eq!(p.expected_downtime_ms, Some(41));
        assert_eq!(p.dirty_sync_count, 2);
        let empty = MigrationProgress::from_query(&json!({}));
        assert_eq!(parse_xp_word("00000000fed4004c: 0x00000001\r\n"), Some(1));
        assert_eq!(parse_xp_word("garbage"), None);
        assert_eq!(empty.status, "none");
        assert_eq!(empty.ram_total_bytes, 0);
    }

    #[test]
    fn only_a_completed_migration_switched_over() {
        assert!(switched_over("completed"));
        for status in [
            "none",
            "setup",
            "active",
            "pre-switchover",
            "device",
            "cancelling",
            "cancelled",
            "failed",
        ] {
            assert!(!switched_over(status), "{status}");
        }
    }
}
