//! End-to-end: a guest on the pod network (passt) cannot reach the host's loopback services, the API
//! server's home, while it does reach other networks.
//!
//! Everything runs in network namespaces this test creates, so the proof depends on nothing of the
//! machine's own network:
//!
//! ```text
//!  netns "host" (stands in for the host)            netns "outside" (another network)
//!    lo 127.0.0.1:8080  <- the "API" listener          veth 198.18.0.2/24 (the host's gateway)
//!    veth 198.18.0.1/24, default via 198.18.0.2  <->   lo 198.19.0.1/32: the outbound server :80
//!    `ferrovirt run` -> QEMU + passt
//! ```
//!
//! The guest (the test guest, asked by a NoCloud seed to probe the network) gets its address by
//! DHCP from passt, then tries the "API" port through its default gateway (where QEMU's user
//! networking would have reached the host's 127.0.0.1) and through 10.0.2.2, and the outbound
//! server. One boot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::guest::{GuestReport, plain_image};

const API_PORT: u16 = 8080;
const OUTBOUND_ADDR: &str = "198.19.0.1";
const OUTBOUND_PORT: u16 = 80;
const API_TOKEN: &str = "ferro-host-api";
const OUTBOUND_TOKEN: &str = "ferro-outbound";

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Network namespaces (and with them their veth pair), deleted on drop, even when a test fails.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: &str) {
        // A leftover of a killed earlier run with the same pid: start clean.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        self.0.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// A TCP server in a network namespace: greets every connection with one line and counts them.
struct Server {
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(netns: &str, addr: &str, port: u16, greeting: &'static str) -> Server {
        let netns_path = format!("/run/netns/{netns}");
        let addr = format!("{addr}:{port}");
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (count, stopping) = (connections.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // This thread alone moves into the namespace; its listener stays bound there.
            let ns = std::fs::File::open(&netns_path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            let listener = TcpListener::bind(&addr).unwrap();
            listener.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.write_all(format!("{greeting}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Server {
            connections,
            stop,
            thread: Some(thread),
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connects from inside `netns` and returns the server's first line.
fn greeting_from(netns: &str, addr: &str, port: u16) -> String {
    let netns_path = format!("/run/netns/{netns}");
    let addr = format!("{addr}:{port}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns_path).unwrap();
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&ns),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut line = String::new();
        let _ = stream.read_to_string(&mut line);
        line.trim().to_string()
    })
    .join()
    .unwrap()
}

fn write_manifest(
    dir: &std::path::Path,
    name: &str,
    devices: &str,
    extra: &str,
) -> std::path::PathBuf {
    let manifest = dir.join("vm.yaml");
    let yaml = format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: Manual
  template:
    spec:
      terminationGracePeriodSeconds: 5
      domain:
        memory:
          guest: 256Mi
        firmware:
          bootloader:
            efi: {{secureBoot: false}}
        devices:
          disks:
            - name: boot
              disk: {{bus: virtio, readonly: true}}
            - name: seed
              disk: {{bus: virtio}}
{devices}
      volumes:
        - name: boot
          hostDisk:
            path: {image}
            type: Disk
        - name: seed
          cloudInitNoCloud:
            userData: |
              #ferro-net-probe
              host_port={API_PORT}
              outbound={OUTBOUND_ADDR}:{OUTBOUND_PORT}
{extra}",
        image = plain_image().display()
    );
    std::fs::write(&manifest, yaml).unwrap();
    manifest
}

/// `ferrovirt run` inside a network namespace.
fn run_in(netns: &str, manifest: &std::path::Path, data: &std::path::Path) -> Output {
    Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(env!("CARGO_BIN_EXE_ferrovirt"))
        .args(["run", "--timeout", "150", "-f"])
        .arg(manifest)
        .arg("--data-dir")
        .arg(data)
        // The guest image's directory is an allowed hostDisk root.
        .arg("--host-disk-root")
        .arg(plain_image().parent().unwrap())
        .output()
        .unwrap()
}

#[test]
fn guest_boot_network_guest_cannot_reach_the_host_but_reaches_other_networks() {
    let id = std::process::id();
    let (host, outside) = (format!("fvh{id}"), format!("fvo{id}"));
    let mut namespaces = Namespaces(Vec::new());
    namespaces.add(&host);
    namespaces.add(&outside);
    let (veth_host, veth_outside) = (format!("fvh{id}"), format!("fvo{id}"));
    ip(&[
        "-n",
        &host,
        "link",
        "add",
        &veth_host,
        "type",
        "veth",
        "peer",
        "name",
        &veth_outside,
        "netns",
        &outside,
    ]);
    ip(&[
        "-n",
        &host,
        "addr",
        "add",
        "198.18.0.1/24",
        "dev",
        &veth_host,
    ]);
    ip(&["-n", &host, "link", "set", &veth_host, "up"]);
    ip(&["-n", &host, "route", "add", "default", "via", "198.18.0.2"]);
    ip(&[
        "-n",
        &outside,
        "addr",
        "add",
        "198.18.0.2/24",
        "dev",
        &veth_outside,
    ]);
    ip(&["-n", &outside, "link", "set", &veth_outside, "up"]);
    ip(&[
        "-n",
        &outside,
        "addr",
        "add",
        &format!("{OUTBOUND_ADDR}/32"),
        "dev",
        "lo",
    ]);

    let api = Server::start(&host, "127.0.0.1", API_PORT, API_TOKEN);
    let outbound = Server::start(&outside, OUTBOUND_ADDR, OUTBOUND_PORT, OUTBOUND_TOKEN);
    // The listeners are real: the host itself reaches its loopback service, and through its
    // default route the outbound server.
    assert_eq!(greeting_from(&host, "127.0.0.1", API_PORT), API_TOKEN);
    assert_eq!(
        greeting_from(&host, OUTBOUND_ADDR, OUTBOUND_PORT),
        OUTBOUND_TOKEN
    );
    let (api_before, outbound_before) = (api.connections(), outbound.connections());
    assert_eq!((api_before, outbound_before), (1, 1));

    let data = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        data.path(),
        "netprobe",
        "          interfaces:\n            - {name: default, masquerade: {}}",
        "      networks:\n        - {name: default, pod: {}}\n",
    );
    let started = Instant::now();
    let output = run_in(&host, &manifest, data.path());
    let boot = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.contains("guest powered off"),
        "ferrovirt run failed ({:?}):\n{stderr}\n{stdout}",
        output.status
    );
    eprintln!("network-probe boot: {boot:?}");
    let report = GuestReport::parse_last_boot(&stdout);
    eprintln!("guest report: {:?}", report.facts);
    assert!(report.done, "incomplete guest report:\n{stdout}");
    assert!(
        report.errors.is_empty(),
        "guest errors: {:?}\n{stdout}",
        report.errors
    );

    // passt gave the guest the host's address and gateway.
    assert_eq!(
        report.get("net-dhcp"),
        Some("198.18.0.1/24 via 198.18.0.2"),
        "{stdout}"
    );
    // The gateway is the real gateway (no listener there), not the host's loopback; 10.0.2.2
    // (QEMU's user-mode alias of the host) leads nowhere.
    assert_eq!(
        report.get("net-host-198.18.0.2"),
        Some("closed"),
        "{stdout}"
    );
    assert_eq!(report.get("net-host-10.0.2.2"), Some("closed"), "{stdout}");
    assert_eq!(report.get("net-host"), Some("refused"), "{stdout}");
    assert_eq!(
        api.connections(),
        api_before,
        "the host's loopback service saw a connection from the guest"
    );
    // Outbound to another network works.
    assert_eq!(
        report.get("net-outbound"),
        Some(format!("ok:{OUTBOUND_TOKEN}").as_str()),
        "{stdout}"
    );
    assert!(outbound.connections() > outbound_before);
}

#[test]
fn passt_without_a_default_route_fails_the_start_with_the_reason() {
    let netns = format!("fvn{}", std::process::id());
    let mut namespaces = Namespaces(Vec::new());
    namespaces.add(&netns);
    let data = tempfile::tempdir().unwrap();
    // No interfaces: KubeVirt's autoattachPodInterface gives the VM one pod-network card.
    let manifest = write_manifest(data.path(), "noroute", "", "");
    let output = run_in(&netns, &manifest, data.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "started without a route:\n{stderr}"
    );
    assert!(stderr.contains("passt"), "{stderr}");
    assert!(stderr.contains("External interface not usable"), "{stderr}");
    assert!(stderr.contains("autoattachPodInterface: false"), "{stderr}");
}
