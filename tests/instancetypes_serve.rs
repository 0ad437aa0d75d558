//! End-to-end: a VM that names KubeVirt's common-instancetypes `windows.11` cluster preference and
//! has no firmware or TPM of its own, through `ferrovirt serve` (seeded preference, admission,
//! VM controller, engine) and kubectl. Its VMI gets EFI + Secure Boot + SMM + a persistent TPM
//! (crb) and the Hyper-V enlightenments, its backend-storage PVC is created, QEMU runs with them
//! (no disk: OVMF sits in its boot-failure path, a running VM without a guest OS), and the stored
//! VM keeps the reference, with the ControllerRevision the controller made recorded in its status
//! (KubeVirt's `status.preferenceRef`). One QEMU start, no guest boot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;

use std::time::Duration;

use serde_json::{Value, json};
use server::{Server, manifest};

const UUID: &str = "5f0c1b2a-3d4e-4f60-8a7b-9c0d1e2f3a4b";

fn vm_manifest(name: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: Always
  preference:
    kind: VirtualMachineClusterPreference
    name: windows.11
  template:
    spec:
      terminationGracePeriodSeconds: 1
      domain:
        firmware:
          uuid: {UUID}
        memory:
          guest: 128Mi
        devices: {{}}
"
    )
}

fn get_json(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&all)).unwrap()
}

/// The pid of this server's QEMU for the VM (by name and data dir: other tests may run a VM of
/// the same name).
fn qemu_pid(server: &Server, name: &str) -> Option<u32> {
    let out = ferrovirt_testkit::host_tool("pgrep")
        .args(["-f", &format!("guest=default_{name},")])
        .output()
        .unwrap();
    let data = server.data_dir().to_string_lossy().into_owned();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&data))
        })
}

/// The running QEMU's command line, one argument per line, with the test's temp dir replaced.
fn qemu_command_line(server: &Server, name: &str) -> String {
    let pid = qemu_pid(server, name).expect("the VM's QEMU runs");
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let data = server.data_dir().to_string_lossy().into_owned();
    // The serial the defaulter gave the VM (random) must be the guest's SMBIOS serial.
    let serial = server.kubectl_ok(&[
        "get",
        "vmi",
        name,
        "-o",
        "jsonpath={.spec.domain.firmware.serial}",
    ]);
    assert!(!serial.trim().is_empty(), "the VMI has a firmware serial");
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| {
            let arg = String::from_utf8_lossy(a)
                .replace(&data, "<data-dir>")
                .replace(
                    &format!("serial={}", serial.trim()),
                    "serial=<firmware-serial>",
                );
            // The backend-storage volume is named after the PVC's uid.
            match arg.find("/volumes/pvc-") {
                Some(at) => {
                    let start = at + "/volumes/pvc-".len();
                    let end = arg[start..].find('/').map_or(arg.len(), |e| start + e);
                    format!("{}<pvc-uid>{}", &arg[..start], &arg[end..])
                }
                None => arg,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn windows_11_preference_gives_efi_secure_boot_smm_persistent_tpm_and_hyperv() {
    let server = Server::start(true);
    let name = "win11";
    let path = manifest(&server, "vm.yaml", &vm_manifest(name));
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    server.wait_for("the VM to run", Duration::from_secs(90), || {
        let out = server.kubectl(&[
            "get",
            "vm",
            name,
            "-o",
            "jsonpath={.status.printableStatus}",
        ]);
        (String::from_utf8_lossy(&out.stdout) == "Running").then_some(())
    });

    // The VMI: what the preference brings, as KubeVirt applies it.
    let vmi = get_json(&server, &["vmi", name]);
    let domain = &vmi["spec"]["domain"];
    assert_eq!(
        domain["firmware"]["bootloader"]["efi"],
        json!({"persistent": true, "secureBoot": true}),
        "{vmi}"
    );
    assert_eq!(domain["features"]["smm"]["enabled"], true);
    assert_eq!(domain["devices"]["tpm"]["persistent"], true);
    assert_eq!(domain["features"]["hyperv"]["relaxed"]["enabled"], true);
    assert_eq!(domain["features"]["hyperv"]["spinlocks"]["spinlocks"], 8191);
    assert_eq!(domain["clock"]["timer"]["hyperv"], json!({"present": true}));
    assert_eq!(domain["clock"]["utc"], json!({}));
    assert_eq!(domain["firmware"]["uuid"], UUID);
    // The default pod interface gets the preferred model (KubeVirt adds it before applying).
    assert_eq!(domain["devices"]["interfaces"][0]["model"], "e1000e");

    // The backend-storage PVC of the persistent TPM and EFI.
    let pvcs = get_json(
        &server,
        &["pvc", "-l", &format!("persistent-state-for={name}")],
    );
    let items = pvcs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{pvcs}");
    assert_eq!(items[0]["status"]["phase"], "Bound");
    let volume = items[0]["spec"]["volumeName"].as_str().unwrap();
    assert!(
        server
            .data_dir()
            .join("volumes")
            .join(volume)
            .join(format!("swtpm/{UUID}/tpm2/tpm2-00.permall"))
            .is_file(),
        "the TPM was manufactured in the backend-storage volume"
    );

    // The stored VM keeps the reference, not an expanded copy; its status names the revision.
    let vm = get_json(&server, &["vm", name]);
    assert_eq!(
        vm["spec"]["preference"],
        json!({"kind": "VirtualMachineClusterPreference", "name": "windows.11"})
    );
    assert!(
        vm.pointer("/spec/template/spec/domain/firmware/bootloader")
            .is_none()
            && vm
                .pointer("/spec/template/spec/domain/devices/tpm")
                .is_none(),
        "{vm}"
    );
    let preference = get_json(&server, &["vmcp", "windows.11"]);
    let revision_name = format!(
        "{name}-windows.11-v1beta1-{}-{}",
        preference["metadata"]["uid"].as_str().unwrap(),
        preference["metadata"]["generation"]
    );
    assert_eq!(
        vm["status"]["preferenceRef"],
        json!({"kind": "VirtualMachineClusterPreference", "name": "windows.11",
            "controllerRevisionRef": {"name": revision_name}})
    );
    let yaml = server.kubectl_ok(&["get", "vm", name, "-o", "yaml"]);
    assert!(
        yaml.contains(
            "preference:\n    kind: VirtualMachineClusterPreference\n    name: windows.11"
        ),
        "{yaml}"
    );
    let revision = get_json(&server, &["controllerrevision", &revision_name]);
    assert_eq!(
        revision["metadata"]["ownerReferences"][0]["uid"],
        vm["metadata"]["uid"]
    );
    assert_eq!(
        revision["data"]["spec"]["firmware"],
        preference["spec"]["firmware"]
    );
    let table = server.kubectl_ok(&["get", "controllerrevisions"]);
    assert!(
        table.contains(&revision_name)
            && table.contains(&format!("virtualmachine.kubevirt.io/{name}")),
        "{table}"
    );

    // What QEMU runs with (it accepted it: the VM is Running): Secure Boot firmware with SMM, the
    // TPM (crb) through swtpm, and the Hyper-V enlightenments TCG supports.
    let command_line = qemu_command_line(&server, name);
    insta::assert_snapshot!("windows_11_qemu_command_line", command_line);

    // kubectl lists the seeded cluster preferences by KubeVirt's short name, and applies a
    // namespaced one (server-side strict validation with KubeVirt's schema).
    let listed = server.kubectl_ok(&["get", "vmcp"]);
    assert!(
        listed.contains("windows.11") && listed.contains("debian"),
        "{listed}"
    );
    let mine = manifest(
        &server,
        "pref.yaml",
        "apiVersion: instancetype.kubevirt.io/v1beta1\nkind: VirtualMachinePreference\n\
         metadata: {name: mine}\nspec: {devices: {preferredDiskBus: virtio}}\n",
    );
    let applied = server.kubectl_ok(&["apply", "-f", mine.to_str().unwrap()]);
    assert!(
        applied.contains("virtualmachinepreference.instancetype.kubevirt.io/mine created"),
        "{applied}"
    );

    // A VM naming a preference that does not exist: KubeVirt's failure, and no VMI.
    let missing = manifest(
        &server,
        "missing.yaml",
        &vm_manifest("nopref")
            .replace("name: windows.11", "name: windows.12")
            .replace(UUID, "5f0c1b2a-3d4e-4f60-8a7b-9c0d1e2f3a4c"),
    );
    server.kubectl_ok(&["apply", "-f", missing.to_str().unwrap()]);
    let failure = server.wait_for("the Failure condition", Duration::from_secs(30), || {
        let vm = get_json(&server, &["vm", "nopref"]);
        vm["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Failure")
            .cloned()
    });
    assert_eq!(failure["reason"], "FailedFindPreference");
    assert_eq!(
        failure["message"],
        "virtualmachineclusterpreferences.instancetype.kubevirt.io \"windows.12\" not found"
    );
    assert!(!server.kubectl(&["get", "vmi", "nopref"]).status.success());
    server.kubectl_ok(&["delete", "vm", "nopref"]);

    // Deleting the VM stops QEMU and swtpm (serve itself never stops VMs).
    server.kubectl_ok(&["delete", "vm", name]);
    server.wait_for("QEMU to stop", Duration::from_secs(60), || {
        qemu_pid(&server, name).is_none().then_some(())
    });
}
