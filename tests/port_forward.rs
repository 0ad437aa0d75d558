//! Reaching a guest's TCP port end to end under `ferrovirt serve` (real engine, the test guest in
//! agent mode, which serves HTTP on port 80 with busybox httpd; one boot of ~20-60 s under TCG):
//!
//! - the guest's port is never a socket in the host's network namespace: no listener on port 80
//!   appears in the host's `/proc/net/tcp*`; the card's passt runs in the network namespace
//!   `/run/netns/ferrovirt-...` (pasta connects it to the host);
//! - `ferrovirt port-forward vm/NAME 0:80` listens on 127.0.0.1 only and relays an HTTP request
//!   to the guest's httpd through the `portforward` WebSocket; `--stdio` (ssh's ProxyCommand)
//!   does the same over standard input/output, addressed as `vmi/NAME.default`;
//! - the subresource is audited and refuses a port that is not a number;
//! - after a restart of `serve`, the adopted run still forwards (passt and pasta adopted);
//! - a stop deletes the namespace and ends pasta.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use server::{Server, manifest};
use support::guest::{GuestReport, image_in_data_dir, plain_image};

fn vm_manifest(server: &Server, name: &str) -> String {
    let image = image_in_data_dir(&server.data_dir(), &plain_image());
    format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: Always
  template:
    spec:
      terminationGracePeriodSeconds: 60
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
      volumes:
        - name: boot
          hostDisk:
            path: {image}
            type: Disk
        - name: seed
          cloudInitNoCloud:
            userData: |
              #ferro-agent
",
        image = image.display()
    )
}

/// Whether anything listens on TCP `port` in the host's network namespace (IPv4 or IPv6).
fn host_listens_on(port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3 && fields[1].ends_with(&wanted) && fields[3] == "0A"
            })
    })
}

fn http_get(stream: &mut (impl Read + Write)) -> String {
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\nHost: guest\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Starts `ferrovirt port-forward` and returns it with the local address it printed.
fn start_forward(server: &Server, args: &[&str]) -> (Child, String) {
    let mut child = server
        .cli_cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let address = line
        .strip_prefix("Forwarding from ")
        .and_then(|rest| rest.split(" -> ").next())
        .unwrap_or_else(|| panic!("port-forward printed {line:?}"))
        .to_owned();
    (child, address)
}

fn forwarded_get(server: &Server, name: &str) -> String {
    let (mut forward, address) =
        start_forward(server, &["port-forward", &format!("vm/{name}"), "0:80"]);
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let answer = http_get(&mut stream);
    forward.kill().unwrap();
    forward.wait().unwrap();
    answer
}

#[test]
fn port_forward_reaches_the_guest_without_a_host_port() {
    let mut server = Server::start(true);
    let name = format!("fwd-{}", server.port);
    let path = manifest(&server, "vm.yaml", &vm_manifest(&server, &name));
    let applied = Instant::now();
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    server.wait_for(
        "the guest to serve HTTP on port 80",
        Duration::from_secs(300),
        || {
            let log = server.cli(&["logs", &name]);
            let report = GuestReport::parse_last_boot(&String::from_utf8_lossy(&log.stdout));
            report.get("http").map(str::to_owned)
        },
    );
    eprintln!("apply -> guest serving HTTP: {:?}", applied.elapsed());
    let log = server.cli_ok(&["logs", &name]);
    let report = GuestReport::parse_last_boot(&log);
    assert!(report.errors.is_empty(), "{:?}\n{log}", report.errors);

    // The guest's port is no socket of the host's namespace; passt runs in the card's own.
    assert!(
        !host_listens_on(80),
        "something listens on port 80 in the host's network namespace"
    );
    let vmi: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "vmi", &name, "-o", "json"])).unwrap();
    let uuid = vmi["spec"]["domain"]["firmware"]["uuid"].as_str().unwrap();
    let run =
        std::fs::read_to_string(server.data_dir().join("run").join(uuid).join("run.json")).unwrap();
    let record: Value = serde_json::from_str(&run).unwrap();
    let netns = record["netns"][0].as_str().unwrap().to_owned();
    assert!(netns.starts_with("ferrovirt-"), "{record}");
    assert!(std::path::Path::new("/run/netns").join(&netns).exists());
    let pasta_pid = record["pasta"][0]["pid"].as_i64().unwrap();
    let passt_pid = record["passt"][0]["pid"].as_i64().unwrap();
    let ns_of = |pid: i64| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(
        ns_of(pasta_pid),
        host_ns,
        "pasta runs in the host's namespace"
    );
    assert_ne!(
        ns_of(passt_pid),
        host_ns,
        "passt runs in the card's namespace"
    );

    // port-forward on 127.0.0.1 only, relayed to the guest's httpd.
    let started = Instant::now();
    let answer = forwarded_get(&server, &name);
    eprintln!(
        "port-forward: HTTP GET through the forward: {:?}",
        started.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("ferro-guest-http "), "{answer}");

    // --stdio, as ssh's ProxyCommand runs it, addressed as vmi/NAME.NAMESPACE.
    let mut stdio = server
        .cli_cmd(&[
            "port-forward",
            "--stdio",
            &format!("vmi/{name}.default"),
            "80",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    stdio
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .unwrap();
    let out = stdio.wait_with_output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.contains("ferro-guest-http "),
        "{answer}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A port that is not a number is refused, naming it; every forward is audited.
    let refused = server.kubectl(&[
        "get",
        "--raw",
        &format!("/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/{name}/portforward/ssh"),
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not a port number"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let audit = server.cli_ok(&[
        "audit",
        "--data-dir",
        server.data_dir().to_str().unwrap(),
        "--name",
        &name,
    ]);
    assert!(audit.contains("portforward"), "{audit}");

    // A restarted server adopts the run, its passt and pasta, and forwards again.
    server.terminate();
    server.spawn();
    let answer = server.wait_for(
        "the adopted VM to forward again",
        Duration::from_secs(60),
        || {
            let answer = forwarded_get(&server, &name);
            answer.contains("ferro-guest-http ").then_some(answer)
        },
    );
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

    // A stop deletes the namespace and ends pasta.
    server.cli_ok(&["stop", &name]);
    server.wait_for("the VMI to go", Duration::from_secs(120), || {
        (!server.kubectl(&["get", "vmi", &name]).status.success()).then_some(())
    });
    server.wait_for("the namespace to go", Duration::from_secs(20), || {
        (!std::path::Path::new("/run/netns").join(&netns).exists()).then_some(())
    });
    server.wait_for("pasta to end", Duration::from_secs(20), || {
        (!std::path::Path::new(&format!("/proc/{pasta_pid}")).exists()).then_some(())
    });
    assert!(!server.log().contains("panicked"));
}
