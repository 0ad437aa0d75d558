//! The ferrovirt contender: `ferrovirt serve` as a child process, VMs through its REST API, start
//! and stop timed from the subresource request to the VM's `status.printableStatus` in a watch.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::BenchError;
use crate::http::{Api, Connection, WatchStream};

/// The VirtualMachine collection of the `default` namespace.
pub const VMS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";
/// The VMIs of the benchmark's namespace.
pub const VMIS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";

/// A running `ferrovirt serve`.
pub struct Server {
    child: Child,
    /// The admin's access (TLS + token), once the server wrote its kubeconfig.
    pub api: Api,
}

impl Server {
    /// Starts `binary serve` on a free loopback port with a fresh `data_dir`; waits for
    /// `/healthz` (answered by this child, not by a server left over on some port).
    pub async fn start(binary: &Path, data_dir: &Path) -> Result<Self, BenchError> {
        Self::start_with(binary, data_dir, &[]).await
    }

    /// [`Server::start`] with more `serve` flags (e.g. `--state-encryption none`).
    pub async fn start_with(
        binary: &Path,
        data_dir: &Path,
        extra: &[&str],
    ) -> Result<Self, BenchError> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| BenchError::Setup(format!("no free loopback port: {e}")))?;
        let _ = std::fs::remove_dir_all(data_dir);
        std::fs::create_dir_all(data_dir)
            .map_err(|e| BenchError::Setup(format!("cannot create {}: {e}", data_dir.display())))?;
        let log = std::fs::File::create(data_dir.join("serve.log"))
            .map_err(|e| BenchError::Setup(format!("cannot create serve.log: {e}")))?;
        let child = Command::new(binary)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Setup(format!("cannot run {}: {e}", binary.display())))?;
        let mut child = child;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(BenchError::Setup(format!(
                    "ferrovirt serve exited ({status}); see {}/serve.log",
                    data_dir.display()
                )));
            }
            if let Some(api) = Api::from_admin_kubeconfig(data_dir, addr)
                && let Ok(mut c) = Connection::open(&api).await
                && let Ok(r) = c.request(Method::GET, "/healthz", None, "*/*").await
                && r.status.is_success()
            {
                return Ok(Server { child, api });
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup(format!(
                    "ferrovirt serve did not answer on {addr} within 30 s (see {}/serve.log)",
                    data_dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the server (SIGTERM via `kill`, then waits). Running VMs would survive it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The benchmark's VM: q35, OVMF with Secure Boot (SMM), persistent TPM (tpm-crb is what
/// ferrovirt uses for TPM 2.0) and persistent EFI variables, 1 vCPU, 256 MiB, no disk, and no
/// network card (`autoattachPodInterface: false`) nor display (`autoattachGraphicsDevice: false`),
/// like the hand launch and the libvirt domain.
pub fn vm_manifest(name: &str, run_strategy: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "runStrategy": run_strategy,
            "template": {"spec": {
                "terminationGracePeriodSeconds": 0,
                "domain": {
                    "cpu": {"cores": 1},
                    "memory": {"guest": "256Mi"},
                    "features": {"smm": {"enabled": true}},
                    "firmware": {"bootloader": {"efi": {"secureBoot": true, "persistent": true}}},
                    "devices": {"tpm": {"persistent": true}, "autoattachPodInterface": false, "autoattachGraphicsDevice": false},
                },
            }},
        },
    })
}

/// A small VM object for the control-plane runs (runStrategy Halted: nothing boots).
pub fn halted_vm(name: &str) -> Value {
    vm_manifest(name, "Halted")
}

/// Creates a VM; an existing one is fine.
pub async fn create_vm(conn: &mut Connection, vm: &Value) -> Result<(), BenchError> {
    let reply = conn
        .request(Method::POST, VMS, Some(vm), "application/json")
        .await?;
    if reply.status.is_success() || reply.status.as_u16() == 409 {
        return Ok(());
    }
    Err(BenchError::Http(format!(
        "creating a VM: HTTP {} {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    )))
}

fn printable(object: &Value) -> &str {
    object
        .pointer("/status/printableStatus")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `PUT .../<action>` on a VM, then waits in a watch for `printableStatus == want`; the time from
/// the request to the event. The watch is opened before the clock starts.
pub async fn action_until(
    addr: &Api,
    name: &str,
    action: &str,
    want: &str,
    timeout: Duration,
) -> Result<Duration, BenchError> {
    let mut conn = Connection::open(addr).await?;
    let current = conn.get_json(&format!("{VMS}/{name}")).await?;
    let mut watch = watch_vm(addr, name, &current).await?;
    let path = format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/{name}/{action}"
    );
    let started = Instant::now();
    let reply = conn
        .request(Method::PUT, &path, Some(&json!({})), "application/json")
        .await?;
    if !reply.status.is_success() {
        return Err(BenchError::Http(format!(
            "PUT {path}: HTTP {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )));
    }
    until_printable(&mut watch, name, want, timeout).await?;
    Ok(started.elapsed())
}

/// Creates a new VM with `runStrategy: Always` (what `kubectl apply` sends) and waits in a watch
/// for `printableStatus: Running`; the time from the request to the event. The watch is opened
/// before the clock starts.
pub async fn apply_until_running(
    addr: &Api,
    name: &str,
    timeout: Duration,
) -> Result<Duration, BenchError> {
    let mut conn = Connection::open(addr).await?;
    let list = conn
        .get_json(&format!("{VMS}?fieldSelector=metadata.name%3D{name}"))
        .await?;
    let mut watch = watch_vm(addr, name, &list).await?;
    let started = Instant::now();
    create_vm(&mut conn, &vm_manifest(name, "Always")).await?;
    until_printable(&mut watch, name, "Running", timeout).await?;
    Ok(started.elapsed())
}

/// A watch of the VM `name` from the resourceVersion of `seen` (the VM, or a list).
async fn watch_vm(addr: &Api, name: &str, seen: &Value) -> Result<WatchStream, BenchError> {
    let rv = seen
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("0");
    Connection::open(addr)
        .await?
        .watch(&format!(
            "{VMS}?watch=true&fieldSelector=metadata.name%3D{name}&resourceVersion={rv}"
        ))
        .await
}

/// Reads `watch` until the VM shows `printableStatus == want`.
async fn until_printable(
    watch: &mut WatchStream,
    name: &str,
    want: &str,
    timeout: Duration,
) -> Result<(), BenchError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = tokio::time::timeout_at(deadline, watch.next_event())
            .await
            .map_err(|_| {
                BenchError::Timeout(format!("VM {name} did not reach {want} within {timeout:?}"))
            })??;
        let Some(event) = event else {
            return Err(BenchError::Http(format!("the watch of VM {name} ended")));
        };
        if let Some(object) = event.get("object")
            && printable(object) == want
        {
            return Ok(());
        }
    }
}

/// Waits until the server's TPM pool holds `want` ready entries (`<data-dir>/tpm-pool/ready`).
pub async fn wait_pool_ready(
    data_dir: &Path,
    want: usize,
    timeout: Duration,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let ready = std::fs::read_dir(data_dir.join("tpm-pool/ready"))
            .map(|d| d.count())
            .unwrap_or(0);
        if ready >= want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Timeout(format!(
                "the TPM pool holds {ready} of {want} TPMs after {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many items of `list` are named in `names` and pass `also`.
fn count_named(list: &Value, names: &[String], also: impl Fn(&Value) -> bool) -> usize {
    list.get("items")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter(|o| {
                    let name = o.pointer("/metadata/name").and_then(Value::as_str);
                    name.is_some_and(|n| names.iter().any(|x| x == n)) && also(o)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Waits (polling the list) until `names` all show `printableStatus == want`.
pub async fn wait_all(
    addr: &Api,
    names: &[String],
    want: &str,
    timeout: Duration,
) -> Result<(), BenchError> {
    let mut conn = Connection::open(addr).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let list = conn.get_json(VMS).await?;
        let ready = count_named(&list, names, |o| printable(o) == want);
        if ready == names.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!(
                "only {ready} of {} VMs reached {want} within {timeout:?}",
                names.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `PUT .../<action>` without waiting.
pub async fn action(conn: &mut Connection, name: &str, action: &str) -> Result<(), BenchError> {
    let path = format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/{name}/{action}"
    );
    let reply = conn
        .request(Method::PUT, &path, Some(&json!({})), "application/json")
        .await?;
    if reply.status.is_success() {
        Ok(())
    } else {
        Err(BenchError::Http(format!(
            "PUT {path}: HTTP {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )))
    }
}

/// Deletes a VM (a missing one is fine).
pub async fn delete_vm(conn: &mut Connection, name: &str) -> Result<(), BenchError> {
    let path = format!("{VMS}/{name}");
    let reply = conn
        .request(Method::DELETE, &path, None, "application/json")
        .await?;
    if reply.status.is_success() || reply.status.as_u16() == 404 {
        return Ok(());
    }
    Err(BenchError::Http(format!(
        "DELETE {path}: HTTP {} {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    )))
}

/// Waits (polling the list) until none of `names` exists any more.
pub async fn wait_gone(addr: &Api, names: &[String], timeout: Duration) -> Result<(), BenchError> {
    let mut conn = Connection::open(addr).await?;
    let deadline = Instant::now() + timeout;
    loop {
        // The VMs first; their VMIs go once their runs stopped (a server stopped before that
        // leaves their QEMUs running, as it should: they are adopted by its next start).
        let mut left = 0;
        for (kind, path) in [("VMs", VMS), ("VMIs", VMIS)] {
            let list = conn.get_json(path).await?;
            let count = count_named(&list, names, |_| true);
            if count > 0 {
                left = count;
                if Instant::now() > deadline {
                    return Err(BenchError::Timeout(format!(
                        "{count} of {} {kind} still exist {timeout:?} after their deletion",
                        names.len()
                    )));
                }
                break;
            }
        }
        if left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
