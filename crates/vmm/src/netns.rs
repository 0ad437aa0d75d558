//! A pod-network card's private network namespace: where its passt runs and listens for the
//! guest's forwarded ports, so that no guest port is ever a socket in the host's namespace.
//!
//! - The namespace is a named one (`ip netns add ferrovirt-<run>-<card>`, a bind mount under
//!   `/run/netns`), so that pasta (which connects it to the host's network for the guest's
//!   outbound traffic) can join it by name, and so that it outlives a restart of the manager:
//!   the adopted run finds it again by the same name. It is deleted when the run ends.
//! - Processes are started in it, and forwarded connections opened in it, from a thread of our own
//!   that entered it (`setns`, [`rustix::thread::move_into_link_name_space`]) and then ends: the
//!   namespace of a thread is its own, so no other thread (and no thread of tokio's pools) ever
//!   runs in it. A socket keeps the namespace it was created in, so the connected stream is then
//!   used from any thread.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::thread::LinkNameSpaceType;

/// Where `ip netns` keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// How long a forwarded connection may take to be accepted inside the namespace.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A named network namespace of one card of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNs {
    name: String,
}

/// What failed with a card's network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error(
        "`ip netns {action} {name}` failed: {detail} (install iproute2; ferrovirt must run as root to give guests reachable ports)"
    )]
    Ip {
        action: &'static str,
        name: String,
        detail: String,
    },
    #[error("cannot enter the network namespace {path}: {source}")]
    Enter {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(std::io::Error),
    #[error("the thread working in network namespace {0} ended without an answer")]
    Thread(String),
}

impl NetNs {
    /// The namespace of card `index` of the run whose runtime dir is named `run` (a VM UUID or a
    /// hash; only its first 16 characters are used, so the name stays short).
    pub fn for_card(run: &str, index: usize) -> Self {
        let run: String = run
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect();
        Self {
            name: format!("ferrovirt-{run}-{index}"),
        }
    }

    /// A namespace known by its name (from a run record).
    pub fn named(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// Creates the namespace (a stale one of the same name, left by a run that ended with its
    /// manager, is deleted first: nothing of a live run is named after a dead one).
    pub async fn create(&self) -> Result<(), NetNsError> {
        if self.exists() {
            self.delete().await?;
        }
        self.ip("add").await
    }

    /// Deletes the namespace (nothing to do when it is gone).
    pub async fn delete(&self) -> Result<(), NetNsError> {
        if !self.exists() {
            return Ok(());
        }
        self.ip("delete").await
    }

    async fn ip(&self, action: &'static str) -> Result<(), NetNsError> {
        let output = tokio::process::Command::new("ip")
            .args(["netns", action, &self.name])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| NetNsError::Ip {
                action,
                name: self.name.clone(),
                detail: e.to_string(),
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(NetNsError::Ip {
                action,
                name: self.name.clone(),
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    /// Runs `work` on a new thread that first entered this namespace; the thread ends with it.
    async fn inside<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, NetNsError> + Send + 'static,
    ) -> Result<T, NetNsError> {
        let path = self.path();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("ferrovirt-netns".into())
            .spawn(move || {
                let entered = std::fs::File::open(&path).and_then(|ns| {
                    rustix::thread::move_into_link_name_space(
                        ns.as_fd(),
                        Some(LinkNameSpaceType::Network),
                    )
                    .map_err(std::io::Error::from)
                });
                let result = match entered {
                    Ok(()) => work(),
                    Err(source) => Err(NetNsError::Enter { path, source }),
                };
                let _ = tx.send(result);
            })
            .map_err(NetNsError::Io)?;
        rx.await
            .map_err(|_| NetNsError::Thread(self.name.clone()))?
    }

    /// Spawns `command` inside the namespace (the child inherits the namespace of the thread
    /// that forks it). tokio's child handling needs the runtime: the thread enters it first.
    pub async fn spawn(
        &self,
        mut command: tokio::process::Command,
    ) -> Result<tokio::process::Child, NetNsError> {
        let runtime = tokio::runtime::Handle::current();
        self.inside(move || {
            let _entered = runtime.enter();
            command.spawn().map_err(NetNsError::Io)
        })
        .await
    }

    /// A TCP connection to `127.0.0.1:port` inside the namespace, where passt listens for the
    /// guest's forwarded ports.
    pub async fn connect_loopback(&self, port: u16) -> Result<TcpStream, NetNsError> {
        self.inside(move || {
            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(NetNsError::Io)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_per_card() {
        let ns = NetNs::for_card("0b5e7a34-6f0c-4c41-9a3b-5d8f0e2c1a77", 1);
        assert_eq!(ns.name(), "ferrovirt-0b5e7a346f0c4c41-1");
        assert_eq!(
            ns.path(),
            PathBuf::from("/run/netns/ferrovirt-0b5e7a346f0c4c41-1")
        );
        // Nothing from the run's name can leave the directory.
        assert_eq!(NetNs::for_card("../../x", 0).name(), "ferrovirt-x-0");
    }
}
