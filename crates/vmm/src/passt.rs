//! Pod-network cards: one `passt` process per card (KubeVirt's passt binding), in place of QEMU's
//! user-mode networking, whose gateway 10.0.2.2 is the host's loopback.
//!
//! - Each card's passt runs in a private network namespace of its own (`crate::netns`), which one
//!   `pasta` process (same Debian package) connects to the host's network: the guest's outbound
//!   connections leave through passt's sockets in the namespace, then pasta's sockets on the host.
//!   pasta forwards nothing into the namespace and nothing out of it (`-t none -u none -T none
//!   -U none`) and runs with `--no-map-gw`, so the namespace's gateway is the host's real gateway,
//!   never the host's loopback.
//! - passt runs with `--no-map-gw` too: no guest reaches a service on the host's loopback (the API
//!   server included), nor the namespace's. `-t PORTS`: passt listens for the guest's forwarded
//!   TCP ports ([`forwarded_tcp_ports`]) inside the namespace only, where no other process is, so
//!   no guest port is ever a socket in the host's namespace; the API server's `portforward`
//!   reaches them from a thread that entered the namespace. No UDP (`-u none`).
//! - passt and QEMU talk over a socketpair we create: passt gets one end as `--fd 3`, QEMU the other
//!   as `-netdev stream,addr.type=fd` (see [`nic_fd`]). No socket file exists that another local
//!   process could connect to, and passt (which drops to user `nobody`) needs no access to the
//!   0700 runtime dir. `--one-off`: passt exits when QEMU closes its end.
//! - pasta runs as root (`--runas 0`): Debian 12's pasta (0.0~git20230309) drops to `nobody`
//!   before it opens the target namespace otherwise, and then cannot join a namespace that root
//!   owns. It applies its seccomp filter and its own isolation all the same.
//! - Readiness: passt and pasta apply their seccomp filter as the last step of their set-up, so
//!   `Seccomp: 2` in `/proc/PID/status` means they configured themselves; before that, an exit is
//!   a start failure (e.g. `External interface not usable` on a host without a default route)
//!   reported with the log.
//!
//! What passt still allows: connections from the guest to the host's own non-loopback addresses
//! (another interface's address, or the host's external address if the guest sets it as a
//! destination) are made by pasta's sockets on the host and so reach services listening on those
//! addresses or on 0.0.0.0. Services that only listen on loopback (as `ferrovirt serve` does by
//! default) are not reachable. See ARCHITECTURE.md, "Guest networking".

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use tokio::process::Command;

/// The fd number passt finds its end of the socketpair at.
pub const PASST_FD: i32 = 3;
/// QEMU finds card `i`'s end of its socketpair at fd `FIRST_QEMU_NIC_FD + i`.
pub const FIRST_QEMU_NIC_FD: i32 = 3;
/// How long passt may take to configure itself.
pub const PASST_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The fd QEMU reads card number `index` (in `MachineConfig::nics` order) from.
pub fn nic_fd(index: usize) -> i32 {
    i32::try_from(index)
        .ok()
        .and_then(|i| FIRST_QEMU_NIC_FD.checked_add(i))
        .unwrap_or(i32::MAX)
}

/// The two ends of one card's link: passt's and QEMU's.
#[derive(Debug)]
pub struct NicLink {
    pub passt_end: OwnedFd,
    pub qemu_end: OwnedFd,
}

impl NicLink {
    /// A connected `AF_UNIX` stream socketpair, close-on-exec (only the fd mappings of the two
    /// children hand the ends on).
    pub fn new() -> std::io::Result<Self> {
        let (passt_end, qemu_end) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok(Self {
            passt_end,
            qemu_end,
        })
    }
}

/// The guest's TCP ports passt forwards from its namespace when the interface lists none
/// (KubeVirt's `interfaces[].ports`): the well-known ports. Not all ports, as KubeVirt's
/// masquerade does: passt needs two descriptors per port and the open-files limit of a host is
/// often 20,000 or less.
pub const DEFAULT_FORWARDED_TCP_PORTS: &str = "1-1023";

/// passt's `-t` specification for a card: its declared ports, else the well-known ones.
pub fn forwarded_tcp_ports(declared: &[u16]) -> String {
    if declared.is_empty() {
        return DEFAULT_FORWARDED_TCP_PORTS.to_owned();
    }
    let mut ports = declared.to_vec();
    ports.sort_unstable();
    ports.dedup();
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The arguments passt runs with (without the binary), listening for `tcp_ports` in its namespace.
pub fn passt_args(tcp_ports: &str) -> Vec<String> {
    [
        "--foreground",
        "--quiet",
        "--one-off",
        "--no-map-gw",
        "--tcp-ports",
        tcp_ports,
        "--udp-ports",
        "none",
        "--fd",
    ]
    .into_iter()
    .map(String::from)
    .chain([PASST_FD.to_string()])
    .collect()
}

/// The arguments pasta runs with to connect the namespace `netns` (a name under `/run/netns`)
/// to the host's network: nothing forwarded either way, no gateway mapped to the host.
pub fn pasta_args(netns: &str) -> Vec<String> {
    [
        "--foreground",
        "--quiet",
        "--runas",
        "0",
        "--config-net",
        "--no-map-gw",
        "--tcp-ports",
        "none",
        "--udp-ports",
        "none",
        "--tcp-ns",
        "none",
        "--udp-ns",
        "none",
        "--netns",
        netns,
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// The command that starts pasta for one card's namespace: its own process group, output
/// appended to `log`.
pub fn pasta_command(binary: &Path, netns: &str, log: File) -> Result<Command, PasstCommandError> {
    let log_clone = log.try_clone().map_err(PasstCommandError::Log)?;
    let mut command = Command::new(binary);
    command
        .args(pasta_args(netns))
        .stdin(Stdio::null())
        .stdout(log_clone)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(false);
    Ok(command)
}

/// The pasta binary: `pasta` on PATH.
pub fn pasta_binary() -> PathBuf {
    PathBuf::from("pasta")
}

/// The command that starts passt for one card: its own process group (a signal to the manager's
/// group does not reach it), stdout/stderr appended to `log`.
pub fn passt_command(
    binary: &Path,
    tcp_ports: &str,
    passt_end: OwnedFd,
    log: File,
) -> Result<Command, PasstCommandError> {
    let log_clone = log.try_clone().map_err(PasstCommandError::Log)?;
    let mut command = Command::new(binary);
    command
        .args(passt_args(tcp_ports))
        .stdin(Stdio::null())
        .stdout(log_clone)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(false);
    command
        .fd_mappings(vec![FdMapping {
            parent_fd: passt_end,
            child_fd: PASST_FD,
        }])
        .map_err(|e| PasstCommandError::FdMapping(e.to_string()))?;
    Ok(command)
}

/// Why passt's command could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PasstCommandError {
    #[error("duplicating passt's log file: {0}")]
    Log(std::io::Error),
    #[error("mapping the socketpair into passt: {0}")]
    FdMapping(String),
}

/// Whether the process has applied a seccomp filter (`Seccomp: 2` in `/proc/PID/status`): for
/// passt, the end of its set-up. `None` when the status cannot be read (the process is gone).
pub fn sandboxed(pid: i32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(status.lines().any(|line| {
        line.strip_prefix("Seccomp:")
            .is_some_and(|mode| mode.trim() == "2")
    }))
}

/// Polls [`sandboxed`] until it is true, `exited()` reports an exit, or the timeout passes.
pub async fn wait_ready(
    pid: i32,
    mut exited: impl FnMut() -> Option<String>,
) -> Result<(), PasstNotReady> {
    let deadline = Instant::now() + PASST_READY_TIMEOUT;
    loop {
        if let Some(status) = exited() {
            return Err(PasstNotReady::Exited(status));
        }
        if sandboxed(pid) == Some(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(PasstNotReady::Timeout(PASST_READY_TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How passt failed to get ready.
#[derive(Debug)]
pub enum PasstNotReady {
    Exited(String),
    Timeout(Duration),
}

/// The passt binary: `passt` on PATH.
pub fn passt_binary() -> PathBuf {
    PathBuf::from("passt")
}

/// What a failed passt start most likely means, from its log.
pub fn hint(log_text: &str) -> &'static str {
    if log_text.contains("External interface not usable")
        || log_text.contains("No external routable interface")
    {
        "passt copies the guest's address and routes from the host's interface with the default \
         route, and this host has none: add a default route, or start the VM without a pod \
         network (`autoattachPodInterface: false` and no interfaces)"
    } else {
        "see passt's log"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passt_keeps_the_guest_off_the_host() {
        let args = passt_args("22");
        assert!(args.contains(&"--no-map-gw".to_string()));
        let joined = args.join(" ");
        assert!(
            joined.contains("--tcp-ports 22 --udp-ports none"),
            "{joined}"
        );
        assert!(joined.ends_with("--fd 3"), "{joined}");
    }

    #[test]
    fn pasta_forwards_nothing_and_maps_no_gateway() {
        let joined = pasta_args("ferrovirt-x-0").join(" ");
        assert!(joined.contains("--no-map-gw"), "{joined}");
        for option in ["--tcp-ports", "--udp-ports", "--tcp-ns", "--udp-ns"] {
            assert!(joined.contains(&format!("{option} none")), "{joined}");
        }
        assert!(joined.ends_with("--netns ferrovirt-x-0"), "{joined}");
    }

    #[test]
    fn forwarded_ports_are_the_declared_ones_or_the_well_known() {
        assert_eq!(forwarded_tcp_ports(&[]), "1-1023");
        assert_eq!(forwarded_tcp_ports(&[8080, 22, 22]), "22,8080");
    }

    #[test]
    fn nic_fds_are_consecutive_from_3() {
        assert_eq!(nic_fd(0), 3);
        assert_eq!(nic_fd(2), 5);
    }

    #[test]
    fn our_own_process_is_not_passt_ready_unless_sandboxed() {
        let me = i32::try_from(std::process::id()).unwrap();
        // The test runner applies no seccomp filter.
        assert_eq!(sandboxed(me), Some(false));
        assert_eq!(sandboxed(i32::MAX), None);
    }

    #[test]
    fn no_route_hint_names_the_fix() {
        assert!(hint("ERROR:   External interface not usable").contains("default route"));
    }
}
