//! Starts, supervises, stops and adopts one VM run: swtpm, then QEMU, as their parent.
//!
//! - Both run in their own process group, so a SIGINT/SIGTERM to the manager's group does not
//!   reach them; dropping a [`VmHandle`] never kills the VM (the manager may restart and
//!   [`VmHandle::adopt`] it from `run.json`).
//! - Our children are reaped through `tokio::process::Child::wait`; adopted processes are watched
//!   through pidfds opened after checking their start time (pid-reuse safe).
//! - After QEMU exits the monitor waits for swtpm (`--terminate`) to exit, so the TPM state is
//!   flushed before [`VmHandle::wait_exited`] resolves. Fsyncing the state dir is the caller's job.
//! - Each network card has its own network namespace (`crate::netns`), a pasta connecting it to
//!   the host and a passt inside it (started before QEMU, same process group rules, recorded in
//!   `run.json`; passt exits when QEMU closes its socket and is killed if it lingers; the
//!   namespace is then deleted and pasta, which exits with it, reaped).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use rustix::process::Signal;
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::cmdline::{CmdlineError, qemu_args};
use crate::machine::{MachineConfig, Nic};
use crate::netns::NetNs;
use crate::passt::{self, NicLink, PasstNotReady};
use crate::process::{ProcessError, ProcessIdentity, pidfd_exited, pidfd_signal};
use crate::qmp::{QmpClient, QmpError, QmpEvent, QmpEventKind, RunState};
use crate::runtime::{RunRecord, RuntimeDir, RuntimeError};

/// How long swtpm's control socket and QEMU's QMP socket may take to appear.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `quit` may take before SIGKILL.
pub const QUIT_GRACE: Duration = Duration::from_secs(5);
/// How long swtpm may take to exit after QEMU is gone before it is killed.
pub const SWTPM_EXIT_GRACE: Duration = Duration::from_secs(10);
/// QMP command timeout used by the launcher.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a card's passt may take to exit after QEMU is gone before it is killed.
pub const PASST_EXIT_GRACE: Duration = Duration::from_secs(2);

/// Errors while starting, adopting or stopping a VM.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("machine.tpm and the swtpm config must be given together (tpm: {tpm}, swtpm: {swtpm})")]
    TpmMismatch { tpm: bool, swtpm: bool },
    #[error("runtime dir {dir} still has a live QEMU (pid {pid}); stop or adopt it instead")]
    AlreadyRunning { dir: PathBuf, pid: i32 },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} exited during startup ({status}); its log {log} ends with: {tail}")]
    EarlyExit {
        program: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{what} did not appear within {after:?}; see {log}")]
    SocketTimeout {
        what: String,
        after: Duration,
        log: PathBuf,
    },
    #[error("QMP: {0}")]
    Qmp(#[from] QmpError),
    #[error("cannot adopt: {0}")]
    Adopt(#[from] ProcessError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the VM monitor task stopped unexpectedly")]
    MonitorGone,
    #[error(
        "network card {nic}: passt (the card's user-mode network, KubeVirt's passt binding) \
         failed to start: {reason}; {hint}; its log {log} ends with: {tail}"
    )]
    Passt {
        nic: String,
        reason: String,
        hint: &'static str,
        log: PathBuf,
        tail: String,
    },
}

/// How to run swtpm for this VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwtpmConfig {
    /// The TPM state directory (`tpm2-00.permall`), e.g. in the persistent-state volume.
    pub state_dir: PathBuf,
    /// `swtpm` on PATH when `None`.
    pub binary: Option<PathBuf>,
    /// Extra arguments.
    pub extra_args: Vec<OsString>,
    /// The key of an encrypted state: given to swtpm through a pipe (`--key fd=3`), never a file.
    pub key: Option<ferrovirt_tpm::StateKey>,
}

/// What a launch does once QEMU is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launch {
    /// Resume the guest (`cont`): a normal start.
    Resume,
    /// Stay paused and wait for a migration stream (`-incoming defer`).
    Incoming,
}

/// How a process ended, as far as we could observe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessEnd {
    Code(i32),
    Signal(i32),
    /// Not our child (adopted): the exit status is unavailable.
    Unobserved,
    /// Did not exit within the grace period and was SIGKILLed.
    KilledAfterGrace,
}

impl From<ExitStatus> for ProcessEnd {
    fn from(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => ProcessEnd::Code(code),
            (None, Some(signal)) => ProcessEnd::Signal(signal),
            (None, None) => ProcessEnd::Unobserved,
        }
    }
}

/// Why QEMU exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (QMP SHUTDOWN with `guest: true`), e.g. `reason: guest-shutdown`.
    GuestPoweroff { reason: String },
    /// The host ended it cleanly: `host-qmp-quit`, `host-signal`, ...
    HostShutdown { reason: String },
    /// SIGKILL.
    Killed { signal: i32 },
    /// Non-zero exit or a fatal signal other than SIGKILL.
    Crashed {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Adopted, no SHUTDOWN event seen, no exit status available.
    Unobserved,
}

/// The end of a VM run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExit {
    pub reason: ExitReason,
    pub qemu: ProcessEnd,
    /// `None` without a TPM.
    pub swtpm: Option<ProcessEnd>,
    /// One per network card.
    pub passt: Vec<ProcessEnd>,
}

fn exit_reason(end: ProcessEnd, shutdown: Option<(bool, String)>) -> ExitReason {
    match (end, shutdown) {
        (ProcessEnd::Signal(9), _) | (ProcessEnd::KilledAfterGrace, _) => {
            ExitReason::Killed { signal: 9 }
        }
        (ProcessEnd::Signal(signal), _) => ExitReason::Crashed {
            code: None,
            signal: Some(signal),
        },
        (ProcessEnd::Code(code), _) if code != 0 => ExitReason::Crashed {
            code: Some(code),
            signal: None,
        },
        (_, Some((true, reason))) => ExitReason::GuestPoweroff { reason },
        (_, Some((false, reason))) => ExitReason::HostShutdown { reason },
        (ProcessEnd::Code(_), None) => ExitReason::HostShutdown {
            reason: "exit 0 without SHUTDOWN event".into(),
        },
        (ProcessEnd::Unobserved, None) => ExitReason::Unobserved,
    }
}

/// A process we supervise: our child, or an adopted one known by its pidfd.
struct Supervised {
    identity: ProcessIdentity,
    pidfd: OwnedFd,
    child: Option<Child>,
}

impl Supervised {
    fn spawned(child: Child, program: &str) -> Result<Self, LaunchError> {
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| LaunchError::Spawn {
                program: program.to_string(),
                source: std::io::Error::other("no pid after spawn"),
            })?;
        // Our unreaped child: its pid cannot be reused yet. Its executable may still change (passt
        // re-executes itself), so the identity is read again once it is set up.
        let identity = ProcessIdentity::of(pid)?;
        let pidfd = identity.open_pidfd_of_unreaped_child()?;
        Ok(Self {
            identity,
            pidfd,
            child: Some(child),
        })
    }

    async fn wait(&mut self) -> ProcessEnd {
        match &mut self.child {
            Some(child) => match child.wait().await {
                Ok(status) => status.into(),
                Err(_) => ProcessEnd::Unobserved,
            },
            None => {
                let _ = pidfd_exited(&self.pidfd).await;
                ProcessEnd::Unobserved
            }
        }
    }

    /// Reads the identity again once the process is set up: passt and pasta re-execute
    /// themselves (`/usr/bin/passt.avx2` on x86_64), so the executable recorded at the spawn
    /// would not match at adoption. Same pid and start time; still our unreaped child.
    fn refresh_identity(&mut self) {
        if let Ok(identity) = ProcessIdentity::of(self.identity.pid) {
            self.identity = identity;
        }
    }

    fn signal(&self, signal: Signal) {
        let _ = pidfd_signal(&self.pidfd, signal);
    }

    fn try_exited(&mut self) -> Option<String> {
        match &mut self.child {
            Some(child) => child.try_wait().ok().flatten().map(|s| s.to_string()),
            None => None,
        }
    }

    fn dup_pidfd(&self) -> Result<OwnedFd, LaunchError> {
        self.pidfd.try_clone().map_err(|source| LaunchError::Io {
            path: "pidfd".into(),
            source,
        })
    }
}

/// The processes that serve one QEMU: its swtpm and the network of each card.
struct Companions {
    swtpm: Option<Supervised>,
    passt: Vec<CardNetwork>,
}

/// One pod-network card's network: its namespace, the pasta connecting that namespace to the
/// host and the passt inside it. `None` for a process that was gone at adoption, and for both
/// processes' namespace in runs recorded before namespaces existed.
struct CardNetwork {
    netns: Option<NetNs>,
    pasta: Option<Supervised>,
    passt: Option<Supervised>,
}

impl CardNetwork {
    /// Kills both processes, reaps them and deletes the namespace (a failed start).
    async fn abort(self) {
        for mut process in [self.passt, self.pasta].into_iter().flatten() {
            process.signal(Signal::KILL);
            let _ = process.wait().await;
        }
        if let Some(netns) = self.netns
            && let Err(e) = netns.delete().await
        {
            tracing::warn!(error = %e, "cannot delete a card's network namespace");
        }
    }

    /// After QEMU is gone: waits for passt (killed after the grace), deletes the namespace, and
    /// waits for pasta, which exits when its namespace is deleted (killed after the grace too).
    async fn finish(self) -> ProcessEnd {
        let passt_end = match self.passt {
            Some(process) => end_within(process, PASST_EXIT_GRACE, "passt").await,
            None => ProcessEnd::Unobserved,
        };
        if let Some(netns) = self.netns
            && let Err(e) = netns.delete().await
        {
            tracing::warn!(error = %e, "cannot delete a card's network namespace");
        }
        if let Some(pasta) = self.pasta {
            pasta.signal(Signal::TERM);
            let _ = end_within(pasta, PASST_EXIT_GRACE, "pasta").await;
        }
        passt_end
    }
}

/// Waits up to `grace` for a process to end, then kills and reaps it.
async fn end_within(mut process: Supervised, grace: Duration, program: &str) -> ProcessEnd {
    match tokio::time::timeout(grace, process.wait()).await {
        Ok(end) => end,
        Err(_) => {
            tracing::warn!(
                pid = process.identity.pid,
                "{program} did not exit after QEMU; killing it"
            );
            process.signal(Signal::KILL);
            let _ = process.wait().await;
            ProcessEnd::KilledAfterGrace
        }
    }
}

/// A running VM.
pub struct VmHandle {
    runtime: RuntimeDir,
    record: RunRecord,
    qmp: Arc<QmpClient>,
    qemu_pidfd: OwnedFd,
    exit: watch::Receiver<Option<VmExit>>,
    monitor: JoinHandle<()>,
    /// Rotates the serial log while the VM runs.
    log_cap: JoinHandle<()>,
    start_to_running: Option<Duration>,
    /// Whether the guest agent answered when last asked (`note_guest_agent`); a stop goes
    /// through it only then.
    agent_connected: std::sync::atomic::AtomicBool,
}

impl Drop for VmHandle {
    /// Never kills the VM: only stops watching it (children are reaped by tokio later).
    fn drop(&mut self) {
        self.monitor.abort();
        self.log_cap.abort();
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // passt reports every line it could not send to the (absent) syslog: noise.
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with("Failed to send"))
        .rev()
        .take(5)
        .collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

fn open_log(path: &Path) -> Result<File, LaunchError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| LaunchError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn remove_stale_socket(path: &Path) -> Result<(), LaunchError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| LaunchError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// Makes a socket QEMU created readable and writable by its owner only (mode 0600).
fn restrict_socket(path: &Path) -> Result<(), LaunchError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        LaunchError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

async fn wait_for_socket(
    path: &Path,
    process: &mut Supervised,
    program: &str,
    log: &Path,
) -> Result<(), LaunchError> {
    let deadline = Instant::now() + SOCKET_TIMEOUT;
    loop {
        // The file exists from bind(); connects are refused until listen(), which a loaded host
        // can delay (QEMU then fails with "Connection refused" on swtpm's socket). Connecting to
        // test it is not an option: swtpm (--terminate) would end when that connection closes.
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
            && ferrovirt_tpm::socket::unix_socket_listening(path)
        {
            return Ok(());
        }
        if let Some(status) = process.try_exited() {
            return Err(LaunchError::EarlyExit {
                program: program.into(),
                status,
                log: log.to_path_buf(),
                tail: log_tail(log),
            });
        }
        if Instant::now() > deadline {
            return Err(LaunchError::SocketTimeout {
                what: path.display().to_string(),
                after: SOCKET_TIMEOUT,
                log: log.to_path_buf(),
            });
        }
        // Tokio's timer has a millisecond's resolution: a 2 ms poll cost a start ~1 ms more per
        // wait on average (the hand launch polls every 1 ms too).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Kills what a failed start left behind, and reaps it.
async fn abort_start(qemu: Option<Supervised>, swtpm: Option<Supervised>, cards: Vec<CardNetwork>) {
    for mut process in [qemu, swtpm].into_iter().flatten() {
        process.signal(Signal::KILL);
        let _ = process.wait().await;
    }
    for card in cards {
        card.abort().await;
    }
}

/// The descriptor number swtpm finds its control socket at (the state key, when there is one, is on
/// `ferrovirt_tpm::key::KEY_FD`, 3).
const SWTPM_CTRL_FD: i32 = 4;

/// Binds and listens on swtpm's control socket here, before swtpm runs (mode 0600): QEMU can
/// connect as soon as it starts, and swtpm accepts the connection when it is ready, so the start
/// never waits for swtpm's socket to appear (4-7 ms of every start) and a slow swtpm can no
/// longer make QEMU's connect fail with "Connection refused".
fn listen_ctrl_socket(path: &Path) -> Result<OwnedFd, LaunchError> {
    remove_stale_socket(path)?;
    let listener =
        std::os::unix::net::UnixListener::bind(path).map_err(|source| LaunchError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    restrict_socket(path)?;
    Ok(OwnedFd::from(listener))
}

fn swtpm_command(
    config: &SwtpmConfig,
    runtime: &RuntimeDir,
    ctrl: OwnedFd,
) -> Result<Command, LaunchError> {
    let program = config
        .binary
        .clone()
        .unwrap_or_else(|| PathBuf::from("swtpm"));
    let mut state = OsString::from("dir=");
    state.push(&config.state_dir);
    state.push(",mode=0600");
    let mut log = OsString::from("file=");
    log.push(runtime.swtpm_log());
    log.push(",level=1");
    let mut pid = OsString::from("file=");
    pid.push(runtime.swtpm_pid_file());
    let mut command = Command::new(&program);
    // No --flags startup-*: QEMU sends CMD_INIT and the firmware sends TPM2_Startup (as libvirt).
    command
        .arg("socket")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(state)
        .arg("--ctrl")
        .arg(format!("type=unixio,fd={SWTPM_CTRL_FD}"))
        .arg("--log")
        .arg(log)
        .arg("--pid")
        .arg(pid)
        .arg("--terminate")
        .args(&config.extra_args);
    let io = |source| LaunchError::Io {
        path: config.state_dir.clone(),
        source,
    };
    let mut mappings = vec![FdMapping {
        parent_fd: ctrl,
        child_fd: SWTPM_CTRL_FD,
    }];
    if let Some(key) = &config.key {
        let pipe = key.pipe().map_err(io)?;
        command
            .arg("--key")
            .arg(ferrovirt_tpm::StateKey::swtpm_key_arg());
        mappings.push(FdMapping {
            parent_fd: pipe,
            child_fd: ferrovirt_tpm::key::KEY_FD,
        });
    }
    command
        .fd_mappings(mappings)
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let log_file = open_log(&runtime.swtpm_log())?;
    let log_clone = log_file.try_clone().map_err(|source| LaunchError::Io {
        path: runtime.swtpm_log(),
        source,
    })?;
    command
        .stdin(Stdio::null())
        .stdout(log_clone)
        .stderr(log_file)
        .process_group(0)
        .kill_on_drop(false);
    Ok(command)
}

/// Starts one card's network and waits until it is ready: its namespace, pasta connecting it to
/// the host, then passt inside it; returns them with QEMU's end of the link.
async fn start_card_network(
    runtime: &RuntimeDir,
    index: usize,
    nic: &Nic,
) -> Result<(CardNetwork, OwnedFd), LaunchError> {
    let log = runtime.passt_log(&nic.name);
    let failed = |reason: String| LaunchError::Passt {
        nic: nic.name.clone(),
        hint: passt::hint(&std::fs::read_to_string(&log).unwrap_or_default()),
        reason,
        log: log.clone(),
        tail: log_tail(&log),
    };
    if !rustix::process::geteuid().is_root() {
        return start_host_passt(&log, failed).await;
    }
    let netns = NetNs::for_card(&runtime.run_name(), index);
    netns.create().await.map_err(|e| failed(e.to_string()))?;
    let mut card = CardNetwork {
        netns: Some(netns.clone()),
        pasta: None,
        passt: None,
    };
    let started = async {
        let mut pasta_command =
            passt::pasta_command(&passt::pasta_binary(), netns.name(), open_log(&log)?)
                .map_err(|e| failed(e.to_string()))?;
        let child = pasta_command.spawn().map_err(|e| {
            failed(format!(
                "cannot run {}: {e} (install the `passt` package)",
                passt::pasta_binary().display()
            ))
        })?;
        let mut pasta = Supervised::spawned(child, "pasta")?;
        let ready = passt::wait_ready(pasta.identity.pid, || pasta.try_exited()).await;
        pasta.refresh_identity();
        card.pasta = Some(pasta);
        ready.map_err(|not_ready| failed(format!("pasta: {}", not_ready_reason(not_ready))))?;

        let link = NicLink::new().map_err(|e| failed(format!("socketpair: {e}")))?;
        let tcp_ports = passt::forwarded_tcp_ports(&nic.forwarded_tcp_ports);
        let command = passt::passt_command(
            &passt::passt_binary(),
            &tcp_ports,
            link.passt_end,
            open_log(&log)?,
        )
        .map_err(|e| failed(e.to_string()))?;
        // The command (and our copy of passt's end) is dropped on that thread after the spawn:
        // passt then sees QEMU's close as the end of the link.
        let child = netns.spawn(command).await.map_err(|e| {
            failed(format!(
                "cannot run {} in network namespace {}: {e} (install the `passt` package)",
                passt::passt_binary().display(),
                netns.name()
            ))
        })?;
        let mut process = Supervised::spawned(child, "passt")?;
        let ready = passt::wait_ready(process.identity.pid, || process.try_exited()).await;
        process.refresh_identity();
        card.passt = Some(process);
        ready.map_err(|not_ready| failed(not_ready_reason(not_ready)))?;
        Ok(link.qemu_end)
    }
    .await;
    match started {
        Ok(qemu_end) => Ok((card, qemu_end)),
        Err(e) => {
            card.abort().await;
            Err(e)
        }
    }
}

/// Without root no network namespace can be made: passt runs in the host's namespace and
/// forwards no port (`-t none`; `portforward` then says the VM has no forwardable interface).
async fn start_host_passt(
    log: &Path,
    failed: impl Fn(String) -> LaunchError,
) -> Result<(CardNetwork, OwnedFd), LaunchError> {
    let link = NicLink::new().map_err(|e| failed(format!("socketpair: {e}")))?;
    let mut command = passt::passt_command(
        &passt::passt_binary(),
        "none",
        link.passt_end,
        open_log(log)?,
    )
    .map_err(|e| failed(e.to_string()))?;
    let child = command.spawn().map_err(|e| {
        failed(format!(
            "cannot run {}: {e} (install the `passt` package)",
            passt::passt_binary().display()
        ))
    })?;
    // Closes our copy of passt's end: passt then sees QEMU's close as the end of the link.
    drop(command);
    let mut process = Supervised::spawned(child, "passt")?;
    let ready = passt::wait_ready(process.identity.pid, || process.try_exited()).await;
    process.refresh_identity();
    let card = CardNetwork {
        netns: None,
        pasta: None,
        passt: Some(process),
    };
    match ready {
        Ok(()) => Ok((card, link.qemu_end)),
        Err(not_ready) => {
            card.abort().await;
            Err(failed(not_ready_reason(not_ready)))
        }
    }
}

/// A fault point of the start (`ferrovirt_storage::failpoints`; nothing without the feature).
fn failpoint(name: &'static str) -> Result<(), LaunchError> {
    ferrovirt_storage::failpoints::hit(name).map_err(|source| LaunchError::Spawn {
        program: format!("failpoint {name}"),
        source,
    })
}

fn not_ready_reason(not_ready: PasstNotReady) -> String {
    match not_ready {
        PasstNotReady::Exited(status) => format!("it exited ({status})"),
        PasstNotReady::Timeout(after) => format!("it was not ready after {after:?}"),
    }
}

impl VmHandle {
    /// Starts swtpm (if any) and QEMU, connects QMP, resumes the guest and returns once QMP
    /// reports `running`. On any failure everything started is killed and reaped.
    pub async fn start(
        machine: MachineConfig,
        swtpm: Option<SwtpmConfig>,
        runtime: RuntimeDir,
    ) -> Result<Self, LaunchError> {
        Self::start_with_fds(machine, swtpm, runtime, Vec::new()).await
    }

    /// [`VmHandle::start`], with descriptors QEMU inherits at the given numbers (the fd sets of
    /// `machine.fd_sets`); no other process gets them.
    pub async fn start_with_fds(
        machine: MachineConfig,
        swtpm: Option<SwtpmConfig>,
        runtime: RuntimeDir,
        fds: Vec<(i32, OwnedFd)>,
    ) -> Result<Self, LaunchError> {
        Self::launch(machine, swtpm, runtime, fds, Launch::Resume).await
    }

    /// The destination of a live migration (`crate::migration`): swtpm (with an empty state dir:
    /// QEMU's tpm-emulator hands it the source's state blobs) and QEMU with `-incoming defer`,
    /// paused; `run.json` is not written yet. Nothing is resumed: `migration::receive` and
    /// `migration::finish_receive` do that once the source's state has arrived.
    pub async fn start_incoming(
        machine: MachineConfig,
        swtpm: Option<SwtpmConfig>,
        runtime: RuntimeDir,
        fds: Vec<(i32, OwnedFd)>,
    ) -> Result<Self, LaunchError> {
        Self::launch(machine, swtpm, runtime, fds, Launch::Incoming).await
    }

    async fn launch(
        machine: MachineConfig,
        swtpm: Option<SwtpmConfig>,
        runtime: RuntimeDir,
        fds: Vec<(i32, OwnedFd)>,
        launch: Launch,
    ) -> Result<Self, LaunchError> {
        let started = Instant::now();
        if machine.tpm.is_some() != swtpm.is_some() {
            return Err(LaunchError::TpmMismatch {
                tpm: machine.tpm.is_some(),
                swtpm: swtpm.is_some(),
            });
        }
        if let Ok(previous) = runtime.read_record()
            && previous.qemu.verify().is_ok()
        {
            return Err(LaunchError::AlreadyRunning {
                dir: runtime.root().into(),
                pid: previous.qemu.pid,
            });
        }
        let mut args = qemu_args(&machine)?;
        if launch == Launch::Incoming {
            args.push("-incoming".into());
            args.push("defer".into());
        }
        for socket in [&machine.qmp_socket, &machine.serial.socket] {
            remove_stale_socket(socket)?;
        }
        if let Some(graphics) = &machine.graphics {
            remove_stale_socket(&graphics.vnc_socket)?;
            remove_stale_socket(&graphics.screen_qmp_socket)?;
        }
        if let Some(socket) = &machine.guest_agent_socket {
            remove_stale_socket(socket)?;
        }

        // Where a start's time goes (the "start steps" debug line): each mark is the time since
        // `started` at the end of a step.
        let checked_at = started.elapsed();
        let mut swtpm_process = None;
        if let (Some(config), Some(tpm)) = (&swtpm, &machine.tpm) {
            let ctrl = listen_ctrl_socket(&tpm.ctrl_socket)?;
            let mut command = swtpm_command(config, &runtime, ctrl)?;
            let child = command.spawn().map_err(|source| LaunchError::Spawn {
                program: "swtpm".into(),
                source,
            })?;
            // Our copy of the listening socket goes with the command: swtpm holds the only one,
            // so a swtpm that dies takes the socket with it and QEMU's connect fails at once.
            drop(command);
            swtpm_process = Some(Supervised::spawned(child, "swtpm")?);
        }
        let swtpm_at = started.elapsed();

        let mut passt_processes = Vec::new();
        let mut nic_fds = Vec::new();
        for (index, nic) in machine.nics.iter().enumerate() {
            match start_card_network(&runtime, index, nic).await {
                Ok((card, qemu_end)) => {
                    passt_processes.push(card);
                    nic_fds.push(FdMapping {
                        parent_fd: qemu_end,
                        child_fd: passt::nic_fd(index),
                    });
                }
                Err(e) => {
                    abort_start(None, swtpm_process, passt_processes).await;
                    return Err(e);
                }
            }
        }

        let network_at = started.elapsed();
        let qemu_log = match open_log(&runtime.qemu_log()) {
            Ok(f) => f,
            Err(e) => {
                abort_start(None, swtpm_process, passt_processes).await;
                return Err(e);
            }
        };
        if let Err(e) = failpoint("launcher.start.after-swtpm") {
            abort_start(None, swtpm_process, passt_processes).await;
            return Err(e);
        }
        let mut command = Command::new(machine.qemu_binary());
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(qemu_log)
            .process_group(0);
        // Disk descriptors (from 64, `disks::FIRST_PASSED_FD`) and the network cards' socket
        // ends (from 3, `passt::nic_fd`) reach QEMU at the numbers its command line names.
        let mut mappings = nic_fds;
        mappings.extend(fds.into_iter().map(|(child_fd, parent_fd)| FdMapping {
            parent_fd,
            child_fd,
        }));
        // No mapping, no hook: `fd_mappings` always installs a pre-exec hook, and a command with
        // one is spawned by fork + exec instead of posix_spawn (a copy of the manager's page
        // tables on every start of a VM without passed disks or cards).
        let mapped = if mappings.is_empty() {
            Ok(&mut command)
        } else {
            command.fd_mappings(mappings)
        };
        let qemu_process = match mapped {
            Err(collision) => Err(LaunchError::Spawn {
                program: machine.qemu_binary().display().to_string(),
                source: std::io::Error::other(format!("disk and network card fds: {collision}")),
            }),
            Ok(command) => match command.spawn() {
                Ok(child) => Supervised::spawned(child, "qemu"),
                Err(source) => Err(LaunchError::Spawn {
                    program: machine.qemu_binary().display().to_string(),
                    source,
                }),
            },
        };
        // Closes our copies of QEMU's link ends: only QEMU holds them now.
        drop(command);
        let mut qemu_process = match qemu_process {
            Ok(p) => p,
            Err(e) => {
                abort_start(None, swtpm_process, passt_processes).await;
                return Err(e);
            }
        };
        let spawned_at = started.elapsed();
        let mut socket_at = spawned_at;
        let connected = async {
            wait_for_socket(
                &machine.qmp_socket,
                &mut qemu_process,
                "qemu",
                &runtime.qemu_log(),
            )
            .await?;
            socket_at = started.elapsed();
            // The socket file exists from bind(); until QEMU calls listen() connects are refused.
            let deadline = Instant::now() + SOCKET_TIMEOUT;
            loop {
                match QmpClient::connect(&machine.qmp_socket, QMP_TIMEOUT).await {
                    Ok(qmp) => break Ok::<_, LaunchError>(qmp),
                    Err(QmpError::Connect { .. })
                        if Instant::now() < deadline && qemu_process.try_exited().is_none() =>
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(e) => break Err(e.into()),
                }
            }
        }
        .await;
        let qmp_at = started.elapsed();
        let qmp = match connected {
            Ok(qmp) => Arc::new(qmp),
            Err(e) => {
                // QEMU may have exited on its own (bad args, swtpm refused): report its log.
                let exited = tokio::time::timeout(Duration::from_secs(2), async {
                    loop {
                        if let Some(status) = qemu_process.try_exited() {
                            return status;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await
                .ok();
                // swtpm may have ended first (a state it refused): QEMU's exit then only says
                // that the TPM went away; swtpm's log says why.
                let swtpm_ended = swtpm_process.as_mut().and_then(Supervised::try_exited);
                let e = match (swtpm_ended, exited) {
                    (Some(status), _) => LaunchError::EarlyExit {
                        program: "swtpm".into(),
                        status,
                        log: runtime.swtpm_log(),
                        tail: log_tail(&runtime.swtpm_log()),
                    },
                    (None, Some(status)) => LaunchError::EarlyExit {
                        program: "qemu".into(),
                        status,
                        log: runtime.qemu_log(),
                        tail: log_tail(&runtime.qemu_log()),
                    },
                    (None, None) => e,
                };
                abort_start(Some(qemu_process), swtpm_process, passt_processes).await;
                return Err(e);
            }
        };
        // QEMU made its sockets before it listened on QMP; the VNC server has no password, so
        // its socket is the owner's alone (the runtime dir is 0700 too).
        if let Some(graphics) = &machine.graphics
            && let Err(e) = restrict_socket(&graphics.vnc_socket)
        {
            abort_start(Some(qemu_process), swtpm_process, passt_processes).await;
            return Err(e);
        }
        // The guest agent's channel can shut the guest down and freeze its file systems.
        if let Some(socket) = &machine.guest_agent_socket
            && let Err(e) = restrict_socket(socket)
        {
            abort_start(Some(qemu_process), swtpm_process, passt_processes).await;
            return Err(e);
        }
        let events = qmp.subscribe();
        let record = RunRecord {
            machine,
            qemu: qemu_process.identity.clone(),
            swtpm: swtpm_process.as_ref().map(|p| p.identity.clone()),
            passt: passt_processes
                .iter()
                .filter_map(|card| card.passt.as_ref().map(|p| p.identity.clone()))
                .collect(),
            pasta: passt_processes
                .iter()
                .filter_map(|card| card.pasta.as_ref().map(|p| p.identity.clone()))
                .collect(),
            netns: passt_processes
                .iter()
                .filter_map(|card| card.netns.as_ref().map(|n| n.name().to_owned()))
                .collect(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let mut recorded_at = qmp_at;
        let resumed = async {
            // An incoming QEMU is recorded only once its guest state has arrived
            // (`migration::finish_receive`): until then it is an unfinished start, which the
            // next start ends (`crate::orphans`), never a run to adopt.
            if launch == Launch::Incoming {
                return Ok(());
            }
            failpoint("launcher.start.before-run-record")?;
            runtime.write_record(&record)?;
            recorded_at = started.elapsed();
            failpoint("launcher.start.after-run-record")?;
            // `cont` answers once the guest runs (QEMU's `qmp_cont` starts the VM before it
            // replies, and refuses what it cannot start): no `query-status` after it. Under TCG
            // that round trip waited for the vCPU thread to let go of QEMU's big lock, 1-4 ms.
            qmp.cont().await?;
            Ok(())
        }
        .await;
        if let Err(e) = resumed {
            abort_start(Some(qemu_process), swtpm_process, passt_processes).await;
            return Err(e);
        }
        let start_to_running = started.elapsed();
        let us = |d: Duration| d.as_micros() as u64;
        tracing::debug!(
            vm = %record.machine.name,
            checks_us = us(checked_at),
            swtpm_us = us(swtpm_at - checked_at),
            network_us = us(network_at - swtpm_at),
            qemu_spawn_us = us(spawned_at - network_at),
            qmp_socket_us = us(socket_at - spawned_at),
            qmp_connect_us = us(qmp_at - socket_at),
            record_us = us(recorded_at - qmp_at),
            cont_us = us(start_to_running - recorded_at),
            "start steps"
        );
        tracing::info!(vm = %record.machine.name, ?start_to_running, "VM running");
        Self::supervise(
            runtime,
            record,
            qmp,
            qemu_process,
            Companions {
                swtpm: swtpm_process,
                passt: passt_processes,
            },
            events,
            Some(start_to_running),
        )
    }

    /// Re-attaches to a VM started by an earlier manager: checks the recorded pids are the same
    /// live processes (start time), opens pidfds and reconnects QMP. Never kills the VM.
    pub async fn adopt(runtime: RuntimeDir) -> Result<Self, LaunchError> {
        let record = runtime.read_record()?;
        let qemu_pidfd = match record.qemu.open_pidfd() {
            Ok(pidfd) => pidfd,
            Err(e) => {
                // The run ended while no manager watched it: its cards' namespaces go too (their
                // pasta exits when its namespace is deleted).
                for name in &record.netns {
                    if let Err(e) = NetNs::named(name.clone()).delete().await {
                        tracing::warn!(error = %e, "cannot delete an ended run's network namespace");
                    }
                }
                return Err(e.into());
            }
        };
        let qemu = Supervised {
            identity: record.qemu.clone(),
            pidfd: qemu_pidfd,
            child: None,
        };
        let swtpm = match record.swtpm.clone() {
            Some(identity) => match identity.open_pidfd() {
                Ok(pidfd) => Some(Supervised {
                    identity,
                    pidfd,
                    child: None,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "adopted VM's swtpm is gone; the guest's TPM will fail");
                    None
                }
            },
            None => None,
        };
        let adopt = |identity: Option<&ProcessIdentity>, program: &str| {
            identity.and_then(|identity| match identity.open_pidfd() {
                Ok(pidfd) => Some(Supervised {
                    identity: identity.clone(),
                    pidfd,
                    child: None,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "adopted VM's {program} is gone; its network card is down");
                    None
                }
            })
        };
        let passt = (0..record.passt.len().max(record.netns.len()))
            .map(|i| CardNetwork {
                netns: record.netns.get(i).map(NetNs::named),
                pasta: adopt(record.pasta.get(i), "pasta"),
                passt: adopt(record.passt.get(i), "passt"),
            })
            .collect();
        let qmp = Arc::new(QmpClient::connect(&record.machine.qmp_socket, QMP_TIMEOUT).await?);
        let events = qmp.subscribe();
        let mut state = qmp.query_status().await?;
        // ferrovirt pauses a guest only inside one of its own operations: before the first `cont`
        // of a start (QEMU runs with -S; run.json is written before `cont`) and during an online
        // snapshot. A manager that ended inside one left the guest paused, and nobody else would
        // resume it: the run is recorded, so its start is over, and it must run.
        if matches!(state, RunState::Prelaunch | RunState::Paused) {
            tracing::warn!(vm = %record.machine.name, ?state,
                "the earlier manager left this VM paused (it ended inside a start or a snapshot); resuming it");
            qmp.cont().await?;
            state = qmp.query_status().await?;
        }
        tracing::info!(vm = %record.machine.name, ?state, "adopted VM");
        Self::supervise(
            runtime,
            record,
            qmp,
            qemu,
            Companions { swtpm, passt },
            events,
            None,
        )
    }

    fn supervise(
        runtime: RuntimeDir,
        record: RunRecord,
        qmp: Arc<QmpClient>,
        mut qemu: Supervised,
        companions: Companions,
        mut events: broadcast::Receiver<QmpEvent>,
        start_to_running: Option<Duration>,
    ) -> Result<Self, LaunchError> {
        let Companions { swtpm, passt } = companions;
        let qemu_pidfd = qemu.dup_pidfd()?;
        let (exit_tx, exit) = watch::channel(None);
        let qmp_for_monitor = qmp.clone();
        let monitor = tokio::spawn(async move {
            let mut shutdown: Option<(bool, String)> = None;
            let note = |event: QmpEvent, shutdown: &mut Option<(bool, String)>| {
                if let QmpEventKind::Shutdown { guest, reason } = event.kind() {
                    *shutdown = Some((guest, reason));
                }
            };
            let qemu_end = loop {
                tokio::select! {
                    end = qemu.wait() => break end,
                    event = events.recv() => match event {
                        Ok(event) => note(event, &mut shutdown),
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        // QMP closed: QEMU is exiting; keep waiting for the process.
                        Err(broadcast::error::RecvError::Closed) => break qemu.wait().await,
                    },
                }
            };
            // The SHUTDOWN event may still be in flight on the socket: let the reader reach EOF
            // (at once, QEMU is gone; before, a 10 ms poll here was most of a stop's latency).
            qmp_for_monitor
                .wait_closed(Duration::from_millis(500))
                .await;
            while let Ok(event) = events.try_recv() {
                note(event, &mut shutdown);
            }
            let swtpm_end = match swtpm {
                None => None,
                Some(mut swtpm) => Some(
                    match tokio::time::timeout(SWTPM_EXIT_GRACE, swtpm.wait()).await {
                        Ok(end) => end,
                        Err(_) => {
                            tracing::error!(
                                pid = swtpm.identity.pid,
                                "swtpm did not exit after QEMU; killing it"
                            );
                            swtpm.signal(Signal::KILL);
                            let _ = swtpm.wait().await;
                            ProcessEnd::KilledAfterGrace
                        }
                    },
                ),
            };
            let mut passt_ends = Vec::new();
            for card in passt {
                passt_ends.push(card.finish().await);
            }
            let exit = VmExit {
                reason: exit_reason(qemu_end, shutdown),
                qemu: qemu_end,
                swtpm: swtpm_end,
                passt: passt_ends,
            };
            tracing::info!(?exit, "VM exited");
            let _ = exit_tx.send(Some(exit));
        });
        let log_cap = crate::serial_log::spawn_cap(
            record.machine.serial.log_file.clone(),
            crate::serial_log::MAX_BYTES,
        );
        Ok(Self {
            runtime,
            record,
            qmp,
            qemu_pidfd,
            exit,
            monitor,
            log_cap,
            start_to_running,
            agent_connected: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Records whether the guest agent answers (the controllers' poller asks it every few
    /// seconds); a graceful stop uses the agent only while it does, as KubeVirt's.
    pub fn note_guest_agent(&self, connected: bool) {
        self.agent_connected
            .store(connected, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes `run.json`: from now on this run is adopted after a manager restart.
    pub fn write_record(&self) -> Result<(), LaunchError> {
        Ok(self.runtime.write_record(&self.record)?)
    }

    /// The QMP session.
    pub fn qmp(&self) -> &QmpClient {
        &self.qmp
    }

    /// What runs (config, pids and start times).
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    pub fn runtime(&self) -> &RuntimeDir {
        &self.runtime
    }

    /// Time from `start` being called to QMP reporting `running` (`None` when adopted).
    pub fn start_to_running(&self) -> Option<Duration> {
        self.start_to_running
    }

    /// Serial console socket and log.
    pub fn serial_paths(&self) -> (&Path, &Path) {
        (
            &self.record.machine.serial.socket,
            &self.record.machine.serial.log_file,
        )
    }

    /// The exit, if it already happened.
    pub fn try_exited(&self) -> Option<VmExit> {
        self.exit.borrow().clone()
    }

    /// Resolves once QEMU has exited and swtpm (if any) has exited after it.
    pub async fn wait_exited(&self) -> Result<VmExit, LaunchError> {
        let mut rx = self.exit.clone();
        let value = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| LaunchError::MonitorGone)?;
        value.clone().ok_or(LaunchError::MonitorGone)
    }

    /// `guest-shutdown` through the guest agent; `None` when there is no channel or the agent
    /// does not answer (then ACPI is the way).
    async fn shutdown_through_agent(&self) -> Option<()> {
        let socket = self.record.machine.guest_agent_socket.as_ref()?;
        if !self
            .agent_connected
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        let outcome = async {
            let client = crate::agent::connect(socket, crate::agent::DEFAULT_TIMEOUT).await?;
            client.shutdown(crate::agent::ShutdownMode::Powerdown).await
        }
        .await;
        match outcome {
            Ok(()) => {
                tracing::info!(vm = %self.record.machine.name, "shutdown through the guest agent");
                Some(())
            }
            Err(e) => {
                tracing::info!(vm = %self.record.machine.name, reason = %e, "guest agent not answering; ACPI powerdown");
                None
            }
        }
    }

    /// SIGKILLs QEMU (through its pidfd); swtpm follows on its own (`--terminate`).
    pub fn kill(&self) {
        let _ = pidfd_signal(&self.qemu_pidfd, Signal::KILL);
    }

    /// A graceful shutdown as KubeVirt's: through the guest agent when it is connected
    /// ([`Self::note_guest_agent`]) and answers (`guest-shutdown`), else ACPI powerdown; wait up to `grace`; then QMP `quit` (up to
    /// [`QUIT_GRACE`]); then SIGKILL.
    pub async fn stop(&self, grace: Duration) -> Result<VmExit, LaunchError> {
        if let Some(exit) = self.try_exited() {
            return Ok(exit);
        }
        // No grace period (`terminationGracePeriodSeconds: 0`): no guest is asked, QEMU quits
        // at once (KubeVirt kills the domain at once too).
        if !grace.is_zero() {
            if self.shutdown_through_agent().await.is_none()
                && let Err(e) = self.qmp.system_powerdown().await
            {
                tracing::warn!(error = %e, "system_powerdown failed");
            }
            if let Ok(exit) = tokio::time::timeout(grace, self.wait_exited()).await {
                return exit;
            }
            tracing::info!(vm = %self.record.machine.name, ?grace, "guest ignored powerdown; quitting QEMU");
        }
        if let Err(e) = self.qmp.quit().await {
            tracing::warn!(error = %e, "quit failed");
        }
        if let Ok(exit) = tokio::time::timeout(QUIT_GRACE, self.wait_exited()).await {
            return exit;
        }
        tracing::warn!(vm = %self.record.machine.name, "QEMU ignored quit; SIGKILL");
        self.kill();
        self.wait_exited().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reasons() {
        assert_eq!(
            exit_reason(ProcessEnd::Signal(9), None),
            ExitReason::Killed { signal: 9 }
        );
        assert_eq!(
            exit_reason(ProcessEnd::Code(0), Some((true, "guest-shutdown".into()))),
            ExitReason::GuestPoweroff {
                reason: "guest-shutdown".into()
            }
        );
        assert_eq!(
            exit_reason(ProcessEnd::Code(0), Some((false, "host-qmp-quit".into()))),
            ExitReason::HostShutdown {
                reason: "host-qmp-quit".into()
            }
        );
        assert_eq!(
            exit_reason(ProcessEnd::Code(1), None),
            ExitReason::Crashed {
                code: Some(1),
                signal: None
            }
        );
        assert_eq!(
            exit_reason(ProcessEnd::Signal(11), None),
            ExitReason::Crashed {
                code: None,
                signal: Some(11)
            }
        );
        assert_eq!(
            exit_reason(ProcessEnd::Unobserved, None),
            ExitReason::Unobserved
        );
    }
}
