//! The guest agent end to end under `ferrovirt serve` (real engine, the test guest with
//! qemu-guest-agent on the `org.qemu.guest_agent.0` virtio-serial channel; one boot of ~20 s
//! under TCG): the VMI gets KubeVirt's `AgentConnected` condition, `status.guestOSInfo` and the
//! guest's address in `status.interfaces`; the `guestosinfo` subresource (kubectl and
//! `ferrovirt guestosinfo`) answers from the live agent; an online VirtualMachineSnapshot freezes
//! and thaws the guest's file systems through the agent (`Online` + `GuestAgent`, the frozen
//! time); and a stop shuts the guest down through
//! the agent (`guest-shutdown`), long before the grace period an ACPI-deaf guest would need.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use server::{Server, manifest};
use support::guest::{GuestReport, image_in_data_dir, plain_image};

/// Longer than the test waits for the stop: an ACPI shutdown (which the test guest ignores) would
/// only end at the grace period's end.
const GRACE_SECONDS: u64 = 300;

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
      terminationGracePeriodSeconds: {GRACE_SECONDS}
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

fn vmi(server: &Server, name: &str) -> Option<Value> {
    let out = server.kubectl(&["get", "vmi", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn guest_agent_reports_and_shuts_the_guest_down() {
    let server = Server::start(true);
    let name = format!("agent-{}", server.port);
    let path = manifest(&server, "vm.yaml", &vm_manifest(&server, &name));
    let applied = Instant::now();
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);

    let status = server.wait_for(
        "the AgentConnected condition, the OS and the guest's address",
        Duration::from_secs(240),
        || {
            let status = vmi(&server, &name)?["status"].clone();
            let connected = status["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "AgentConnected" && c["status"] == "True");
            (connected && status["interfaces"][0]["ipAddress"].is_string()).then_some(status)
        },
    );
    eprintln!(
        "apply -> agent connected with an address: {:?}",
        applied.elapsed()
    );
    let log = server.cli_ok(&["logs", &name]);
    let report = GuestReport::parse_last_boot(&log);
    assert_eq!(report.get("agent"), Some("started"), "{log}");
    assert!(report.errors.is_empty(), "{:?}\n{log}", report.errors);

    // status.guestOSInfo from guest-get-osinfo (the guest's /etc/os-release and uname).
    let os = &status["guestOSInfo"];
    assert_eq!(os["name"], "ferrovirt test guest", "{status}");
    assert_eq!(os["id"], "ferro-guest");
    assert!(
        os["kernelRelease"].as_str().unwrap().starts_with("6.1.0-"),
        "{os}"
    );
    assert_eq!(os["machine"], "x86_64");

    // status.interfaces: the address the guest's DHCP client got from passt.
    let lease = report.get("net-dhcp").expect("the guest reports its lease");
    let address = lease.split('/').next().unwrap();
    let interface = &status["interfaces"][0];
    assert_eq!(interface["ipAddress"], address, "{status}");
    assert_eq!(interface["name"], "default");
    assert_eq!(interface["interfaceName"], "eth0");
    assert_eq!(interface["infoSource"], "guest-agent");
    assert!(
        interface["ipAddresses"]
            .as_array()
            .unwrap()
            .contains(&Value::from(address))
    );

    // The guestosinfo subresource, live from the agent: through kubectl and the CLI.
    let raw = server.kubectl_ok(&[
        "get",
        "--raw",
        &format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/{name}/guestosinfo"
        ),
    ]);
    let info: Value = serde_json::from_str(&raw).unwrap();
    assert!(
        info["guestAgentVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("7.")),
        "{info}"
    );
    assert_eq!(info["os"]["name"], "ferrovirt test guest");
    assert!(
        info["supportedCommands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "guest-shutdown" && c["enabled"] == true),
        "{info}"
    );
    let cli: Value = serde_json::from_str(&server.cli_ok(&["guestosinfo", &name])).unwrap();
    assert_eq!(cli["os"], info["os"]);
    assert_eq!(cli["guestAgentVersion"], info["guestAgentVersion"]);

    // An online snapshot with the agent connected freezes the guest's file systems around the
    // copy (KubeVirt's indications `Online` + `GuestAgent`), reports the frozen time, and thaws:
    // the agent answers afterwards and the guest keeps running.
    let snapshot = format!(
        "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineSnapshot\nmetadata:\n  name: frozen\nspec:\n  source:\n    apiGroup: kubevirt.io\n    kind: VirtualMachine\n    name: {name}\n"
    );
    let path = manifest(&server, "snapshot.yaml", &snapshot);
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    let taken = server.wait_for("the frozen snapshot", Duration::from_secs(120), || {
        let out = server.kubectl(&["get", "vmsnapshot", "frozen", "-o", "json"]);
        let s: Value = serde_json::from_slice(&out.stdout).ok()?;
        (s["status"]["phase"] == "Failed"
            || (s["status"]["phase"] == "Succeeded"
                && s["metadata"]["annotations"]["snapshot.ferrovirt.io/size-bytes"].is_string()))
        .then_some(s)
    });
    assert_eq!(taken["status"]["phase"], "Succeeded", "{taken}");
    assert_eq!(
        taken["status"]["indications"],
        serde_json::json!(["Online", "GuestAgent"]),
        "{taken}"
    );
    let annotations = &taken["metadata"]["annotations"];
    let frozen_ms: u64 = annotations["snapshot.ferrovirt.io/frozen-ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let pause_ms: u64 = annotations["snapshot.ferrovirt.io/pause-ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(frozen_ms >= pause_ms, "{annotations}");
    eprintln!(
        "online snapshot through the agent: frozen {frozen_ms} ms, vCPUs paused {pause_ms} ms"
    );
    let after: Value = serde_json::from_str(&server.cli_ok(&["guestosinfo", &name])).unwrap();
    assert_eq!(after["os"], info["os"]);
    assert_eq!(vmi(&server, &name).unwrap()["status"]["phase"], "Running");

    // A graceful stop goes through the agent: the guest's /sbin/shutdown reports it, and the VM
    // is down long before the grace period (the test guest ignores ACPI).
    let stopping = Instant::now();
    server.cli_ok(&["stop", &name]);
    server.wait_for(
        "the VM to stop through the guest agent",
        Duration::from_secs(90),
        || (vmi(&server, &name).is_none()).then_some(()),
    );
    let stop_time = stopping.elapsed();
    eprintln!("stop through the agent -> VMI gone: {stop_time:?}");
    assert!(stop_time < Duration::from_secs(GRACE_SECONDS));
    let log = server.cli_ok(&["logs", &name]);
    let report = GuestReport::parse_last_boot(&log);
    assert!(
        report
            .get("agent-shutdown")
            .is_some_and(|args| args.contains("-P")),
        "{log}"
    );
    assert!(
        server.log().contains("shutdown through the guest agent"),
        "{}",
        server.log()
    );
    assert!(!server.log().contains("panicked"));
}
