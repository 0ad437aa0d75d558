//! VirtualMachineExport between `ferrovirt serve` hosts, each in its own network namespace
//! (`support/netns.rs`), with the real engine and the counting test guest (three boots):
//!
//! 1. on host a, boot 1 of the VM writes a TPM secret and an EFI variable; an export created while
//!    it runs is Pending with KubeVirt's `InUse` "Virtual Machine default/NAME is running", and
//!    Ready once the guest powered off (links, formats, manifests, tokenSecretRef, TTL);
//! 2. the export is refused without its token, with a wrong one, and with the admin's bearer
//!    token alone (401); its `tar.gz` holds KubeVirt's layout (`./meta/`,
//!    `./swtpm/<uuid>/tpm2/tpm2-00.permall`, `./swtpm-localca/`, `./nvram/<vm>_VARS.fd`) in
//!    plain text although both hosts encrypt state at rest (the default): a bare swtpm takes the
//!    exported TPM state and refuses the one on disk, the exported VARS shows the variable names
//!    the sealed one on disk hides, the wrapped key record is left out, and the files on disk are
//!    not changed by the export; `dir/` lists and serves the same plain files; a broken download
//!    resumes (Range); the manifests `all` carry the VM with its `firmware.uuid` and an archive
//!    DataVolume with the export's CA ConfigMap and header Secret; an export of an offline
//!    VirtualMachineSnapshot of the VM serves the plain state too;
//! 3. `vmexport download --all` + `vmexport import` on host b: boot 2 there reads the secret and
//!    the variable boot 1 wrote on host a, and the imported plain state is encrypted at rest on
//!    host b from that start on (under host b's own key);
//!    3b. host c applies the manifests `all` with kubectl (KubeVirt's path: DataVolumes whose
//!    `http` sources point at host a's export): boot 3 there reads the same secret and variable;
//! 4. an export past its `ttlDuration` is refused and deleted.
//!
//! A second test (no boot) measures the export's throughput (raw and gzip) of a 256 MiB disk
//! image between the test process and a host.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use server::netns::TestNetwork;
use server::{Server, manifest, send};
use support::bare_swtpm;
use support::guest::{GuestReport, plain_image};

const VM: &str = "moving";

fn vm_manifest(image: &Path) -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/demo-vm.yaml"
    ))
    .unwrap()
    .replace("name: demo", &format!("name: {VM}"))
    .replace("guest: 256Mi", "guest: 384Mi")
    .replace("GUEST_IMAGE", &image.display().to_string())
    // The test hosts have no default route, which passt needs; the guest needs no network.
    .replace(
        "        devices:\n",
        "        devices:\n          autoattachPodInterface: false\n",
    )
}

fn object(server: &Server, kind: &str, name: &str) -> Option<Value> {
    let out = server.kubectl(&["get", kind, name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn powered_off(server: &Server, name: &str) -> bool {
    let vmi = object(server, "vmi", name)
        .and_then(|v| v["status"]["phase"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let vm = object(server, "vm", name)
        .and_then(|v| v["status"]["printableStatus"].as_str().map(str::to_owned))
        .unwrap_or_default();
    vmi == "Succeeded" && vm == "Stopped"
}

/// Waits for the guest's report of its last boot and its power-off.
fn finish_boot(server: &Server, name: &str, before: usize) -> GuestReport {
    let log = server.wait_for("the guest's report", Duration::from_secs(300), || {
        let out = server.cli(&["logs", name, "--all-runs"]);
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        (GuestReport::count_boots(&log) > before && GuestReport::parse_last_boot(&log).done)
            .then_some(log)
    });
    server.wait_for("the guest to power off", Duration::from_secs(240), || {
        powered_off(server, name).then_some(())
    });
    let report = GuestReport::parse_last_boot(&log);
    assert!(report.errors.is_empty(), "{log}");
    report
}

/// The path of an export URL on its server.
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    rest[rest.find('/').unwrap()..].to_owned()
}

fn token_of(server: &Server, secret: &str) -> String {
    let out = server.kubectl_ok(&["get", "secret", secret, "-o", "jsonpath={.data.token}"]);
    let decoded = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(out.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(decoded.stdout).unwrap()
}

/// GET an export path with these headers and no API credentials: (code, body).
fn export_get(server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let (code, _, body) = send(
        &server.endpoint().with_token(None),
        "GET",
        path,
        headers,
        b"",
    )
    .unwrap();
    (code, body)
}

/// The wrapped data key's record in a backend-storage volume.
const STATE_KEY_RECORD: &str = "meta/ferrovirt/state-key.json";

/// A variable OVMF writes at every boot, and the one the test guest writes.
const PLAIN_VARIABLES: [&str; 2] = ["BootOrder", "FerroTest"];

fn holds_variable_name(vars: &[u8], name: &str) -> bool {
    let utf16: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    vars.windows(utf16.len()).any(|w| w == utf16.as_slice())
}

/// An exported state is plain: a bare swtpm takes the TPM state, the VARS is an unsealed
/// firmware volume whose variable names are readable.
fn check_plain_state(permall: &Path, vars: &[u8]) {
    bare_swtpm::takes_state(permall).unwrap_or_else(|log| {
        panic!("a bare swtpm refused the exported TPM state {permall:?}: {log}")
    });
    assert!(!vars.starts_with(b"FVSEALD1"));
    assert_eq!(vars.len(), 540_672, "the 4M OVMF VARS size");
    for name in PLAIN_VARIABLES {
        assert!(
            holds_variable_name(vars, name),
            "{name} not in the exported VARS"
        );
    }
}

/// The backend-storage PVC of a VM on a host.
fn pvc_of(server: &Server, vm: &str) -> String {
    let out = server.kubectl_ok(&[
        "get",
        "pvc",
        "-l",
        &format!("persistent-state-for={vm}"),
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    out.trim().to_owned()
}

fn volume_dir(server: &Server, pvc: &str) -> std::path::PathBuf {
    let pvc = object(server, "pvc", pvc).unwrap();
    server
        .data_dir()
        .join("volumes")
        .join(pvc["spec"]["volumeName"].as_str().unwrap())
}

#[test]
fn export_then_import_on_another_host_keeps_tpm_and_efi_state() {
    let network = TestNetwork::create(3);
    let images = tempfile::tempdir_in("/tmp").unwrap();
    let image = images.path().join("ferro-guest.img");
    if std::fs::hard_link(plain_image(), &image).is_err() {
        std::fs::copy(plain_image(), &image).unwrap();
    }
    let root = images.path().to_str().unwrap();
    // Both hosts encrypt state at rest (the default), each with its own key-encryption key.
    let a = Server::start_in(&network.hosts[0], true, &["--host-disk-root", root]);
    let b = Server::start_in(&network.hosts[1], true, &["--host-disk-root", root]);
    let c = Server::start_in(&network.hosts[2], true, &["--host-disk-root", root]);
    let vm_file = manifest(&a, "vm.yaml", &vm_manifest(&image));
    a.kubectl_ok(&["apply", "-f", vm_file.to_str().unwrap()]);

    // 1. Boot 1 on host a; an export made meanwhile waits: the VM runs.
    a.cli_ok(&["start", VM]);
    a.wait_for("the VMI to run", Duration::from_secs(120), || {
        object(&a, "vmi", VM).filter(|v| v["status"]["phase"] == "Running")
    });
    let created = a.cli_ok(&["vmexport", "create", "e1", "--vm", VM]);
    assert!(
        created.contains("VirtualMachineExport 'default/e1' created successfully"),
        "{created}"
    );
    let pending = a.wait_for(
        "the export to see the VM running",
        Duration::from_secs(30),
        || {
            object(&a, "vmexport", "e1")
                .filter(|e| e["status"]["conditions"][0]["reason"] == "InUse")
        },
    );
    assert_eq!(pending["status"]["phase"], "Pending");
    assert_eq!(
        pending["status"]["conditions"][0]["message"],
        format!("Virtual Machine default/{VM} is running")
    );
    let first = finish_boot(&a, VM, 0);
    let secret = first.get("tpm-secret-written").unwrap().to_owned();
    let efivar = first.get("efivar-written").unwrap().to_owned();

    let export = a.wait_for("the export to be Ready", Duration::from_secs(60), || {
        object(&a, "vmexport", "e1").filter(|e| e["status"]["phase"] == "Ready")
    });
    let status = &export["status"];
    assert_eq!(status["tokenSecretRef"], "secret-e1");
    assert_eq!(status["virtualMachineName"], VM);
    assert!(status["ttlExpirationTime"].is_string());
    let external = &status["links"]["external"];
    assert!(
        external["cert"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let volume = &external["volumes"][0];
    let pvc = volume["name"].as_str().unwrap().to_owned();
    assert!(
        pvc.starts_with(&format!("persistent-state-for-{VM}")),
        "{pvc}"
    );
    let formats: Vec<&str> = volume["formats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["format"].as_str().unwrap())
        .collect();
    assert_eq!(formats, ["dir", "tar.gz"]);
    let archive_url = volume["formats"][1]["url"].as_str().unwrap().to_owned();
    let dir_url = volume["formats"][0]["url"].as_str().unwrap().to_owned();
    assert!(archive_url.starts_with(&format!(
        "https://{}:{}/api/export.kubevirt.io/v1beta1/namespaces/default/virtualmachineexports/e1/volumes/{pvc}/disk.tar.gz",
        network.hosts[0].ip, a.port
    )));
    let manifest_types: Vec<&str> = external["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(manifest_types, ["all", "auth-header-secret"]);

    // The state at rest on host a is encrypted; what the export serves below must not change it.
    let volume_root = volume_dir(&a, &pvc);
    let uuid =
        object(&a, "vm", VM).unwrap()["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"]
            .as_str()
            .unwrap()
            .to_owned();
    let permall = format!("swtpm/{uuid}/tpm2/tpm2-00.permall");
    let vars = format!("nvram/{VM}_VARS.fd");
    let at_rest = |file: &str| std::fs::read(volume_root.join(file)).unwrap();
    let (permall_at_rest, vars_at_rest) = (at_rest(&permall), at_rest(&vars));
    let refused = bare_swtpm::takes_state(&volume_root.join(&permall))
        .expect_err("a bare swtpm took the TPM state at rest");
    assert!(
        refused.contains("Could not initialize libtpms"),
        "{refused}"
    );
    assert!(vars_at_rest.starts_with(b"FVSEALD1"));
    for name in PLAIN_VARIABLES {
        assert!(!holds_variable_name(&vars_at_rest, name), "{name} at rest");
    }
    assert!(volume_root.join(STATE_KEY_RECORD).is_file());

    // 2. Only the export's token opens it.
    let token = token_of(&a, "secret-e1");
    assert_eq!(token.len(), 20);
    let archive = path_of(&archive_url);
    assert_eq!(export_get(&a, &archive, &[]).0, 401);
    assert_eq!(
        export_get(
            &a,
            &archive,
            &[("x-kubevirt-export-token", "AAAAAAAAAAAAAAAAAAAA")]
        )
        .0,
        401
    );
    let admin = format!("Bearer {}", a.admin_token());
    assert_eq!(
        export_get(&a, &archive, &[("Authorization", &admin)]).0,
        401
    );
    let asked = Instant::now();
    let (code, by_query) = export_get(
        &a,
        &format!("{archive}?x-kubevirt-export-token={token}"),
        &[],
    );
    assert_eq!(code, 200);
    eprintln!(
        "the state's tar.gz, decrypted for the export: {} bytes in {:?}",
        by_query.len(),
        asked.elapsed()
    );

    // The archive holds KubeVirt's layout with the volume's state in plain text.
    let unpacked = tempfile::tempdir_in("/tmp").unwrap();
    let tarball = unpacked.path().join("state.tar.gz");
    std::fs::write(&tarball, &by_query).unwrap();
    let listing = std::process::Command::new("tar")
        .args(["tzf", tarball.to_str().unwrap()])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout).into_owned();
    for expected in [
        "./meta/".to_owned(),
        format!("./swtpm/{uuid}/tpm2/tpm2-00.permall"),
        "./swtpm-localca/".to_owned(),
        format!("./nvram/{VM}_VARS.fd"),
    ] {
        assert!(
            names.lines().any(|l| l == expected),
            "{expected} not in\n{names}"
        );
    }
    assert!(
        !names.contains("state-key"),
        "the wrapped key record is exported:\n{names}"
    );
    let out = std::process::Command::new("tar")
        .args([
            "xzf",
            tarball.to_str().unwrap(),
            "-C",
            unpacked.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let plain_vars = std::fs::read(unpacked.path().join(&vars)).unwrap();
    check_plain_state(&unpacked.path().join(&permall), &plain_vars);
    let header = [("x-kubevirt-export-token", token.as_str())];
    let (code, html) = export_get(&a, &path_of(&dir_url), &header);
    assert_eq!(code, 200);
    let html = String::from_utf8_lossy(&html);
    assert!(html.contains("<a href=\"swtpm/\">swtpm/</a>"), "{html}");
    let (code, body) = export_get(&a, &format!("{}{vars}", path_of(&dir_url)), &header);
    assert_eq!(code, 200);
    assert_eq!(body, plain_vars);
    let (code, body) = export_get(&a, &format!("{}{permall}", path_of(&dir_url)), &header);
    assert_eq!(code, 200);
    assert_eq!(body, std::fs::read(unpacked.path().join(&permall)).unwrap());
    let (code, _) = export_get(
        &a,
        &format!("{}{STATE_KEY_RECORD}", path_of(&dir_url)),
        &header,
    );
    assert_eq!(code, 404);
    // A range of the generated tar.gz is the same bytes as that part of the whole.
    let (code, head, part) = send(
        &a.endpoint().with_token(None),
        "GET",
        &archive,
        &[("x-kubevirt-export-token", &token), ("Range", "bytes=100-")],
        b"",
    )
    .unwrap();
    assert_eq!(code, 206, "{head}");
    assert_eq!(part, by_query[100..]);

    // A broken download resumes (the CLI keeps <output>.part and asks for the rest).
    let downloads = tempfile::tempdir_in("/tmp").unwrap();
    let whole = downloads.path().join("state.tar.gz");
    a.cli_ok(&[
        "vmexport",
        "download",
        "e1",
        "--volume",
        &pvc,
        "--output",
        whole.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&whole).unwrap(), by_query);
    let broken = downloads.path().join("again.tar.gz");
    let part_file = downloads.path().join("again.tar.gz.part");
    std::fs::write(&part_file, &by_query[..by_query.len() / 2]).unwrap();
    let etag = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("etag: ")
                .or_else(|| l.strip_prefix("ETag: "))
        })
        .unwrap()
        .trim()
        .to_owned();
    std::fs::write(downloads.path().join("again.tar.gz.part.etag"), &etag).unwrap();
    let out = a.cli(&[
        "vmexport",
        "download",
        "e1",
        "--volume",
        &pvc,
        "--output",
        broken.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resuming"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&broken).unwrap(), by_query);

    // The manifests a KubeVirt cluster applies.
    let manifests = a.cli_ok(&[
        "vmexport",
        "download",
        "e1",
        "--manifest",
        "--include-secret",
    ]);
    for expected in [
        "kind: ConfigMap",
        "name: export-ca-cm-e1",
        "kind: VirtualMachine",
        &uuid,
        "kind: DataVolume",
        &format!("name: persistent-state-for-{VM}"),
        "contentType: archive",
        "certConfigMap: export-ca-cm-e1",
        "- header-secret-e1",
        &format!("persistent-state-for: {VM}"),
        "disk.tar.gz",
        "kind: Secret",
        &format!("x-kubevirt-export-token:{token}"),
    ] {
        assert!(
            manifests.contains(expected),
            "{expected:?} not in\n{manifests}"
        );
    }

    // An export of an offline snapshot of the VM serves its state in plain text too.
    let said = a.cli_ok(&["snapshot", VM, "--name", "s1"]);
    assert!(
        said.contains("VirtualMachineSnapshot s1 is ready"),
        "{said}"
    );
    a.cli_ok(&["vmexport", "create", "e2", "--snapshot", "s1"]);
    let snapshot_export = a.wait_for(
        "the snapshot's export to be Ready",
        Duration::from_secs(60),
        || object(&a, "vmexport", "e2").filter(|e| e["status"]["phase"] == "Ready"),
    );
    let snapshot_volume = snapshot_export["status"]["links"]["external"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["formats"][1]["format"] == "tar.gz")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let snapshot_tar = downloads.path().join("snapshot.tar.gz");
    a.cli_ok(&[
        "vmexport",
        "download",
        "e2",
        "--volume",
        &snapshot_volume,
        "--output",
        snapshot_tar.to_str().unwrap(),
    ]);
    let snapshot_dir = downloads.path().join("snapshot");
    std::fs::create_dir_all(&snapshot_dir).unwrap();
    let out = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&snapshot_tar)
        .arg("-C")
        .arg(&snapshot_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let snapshot_vars = std::fs::read(snapshot_dir.join(&vars)).unwrap();
    check_plain_state(&snapshot_dir.join(&permall), &snapshot_vars);
    assert_eq!(snapshot_vars, plain_vars);

    // Exporting changed nothing at rest.
    assert_eq!(at_rest(&permall), permall_at_rest);
    assert_eq!(at_rest(&vars), vars_at_rest);

    // 3. Download everything, import on host b, boot there.
    let bundle = downloads.path().join("bundle");
    a.cli_ok(&[
        "vmexport",
        "download",
        "e1",
        "--all",
        "--output",
        bundle.to_str().unwrap(),
    ]);
    assert!(bundle.join("manifests.yaml").is_file());
    let imported = b.cli_ok(&["vmexport", "import", bundle.to_str().unwrap()]);
    assert!(imported.contains(&uuid), "{imported}");
    let on_b = object(&b, "vm", VM).unwrap();
    assert_eq!(
        on_b["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"],
        uuid.as_str()
    );
    b.cli_ok(&["start", VM]);
    let second = finish_boot(&b, VM, 0);
    assert_eq!(second.get("tpm-secret"), Some(secret.as_str()));
    assert_eq!(second.get("efivar"), Some(efivar.as_str()));
    eprintln!(
        "host b read the TPM secret {secret} and the EFI variable {efivar} written on host a"
    );
    // The imported plain state is encrypted at rest on host b now (its own data key and KEK).
    let b_root = volume_dir(&b, &pvc_of(&b, VM));
    let refused = bare_swtpm::takes_state(&b_root.join(&permall))
        .expect_err("a bare swtpm took host b's TPM state at rest");
    assert!(
        refused.contains("Could not initialize libtpms"),
        "{refused}"
    );
    let b_vars = std::fs::read(b_root.join(&vars)).unwrap();
    assert!(b_vars.starts_with(b"FVSEALD1"));
    for name in PLAIN_VARIABLES {
        assert!(!holds_variable_name(&b_vars, name), "{name} at rest on b");
    }
    assert!(b_root.join(STATE_KEY_RECORD).is_file());

    // 3b. The same through the manifests `all` (what a KubeVirt cluster applies): host c applies
    // them with kubectl alone; its DataVolume imports the state volume over HTTPS from host a's
    // export (`contentType: archive`, the export's CA from the ConfigMap, the token from the
    // header Secret); the VM keeps its firmware.uuid, and boot 3 there reads the same state.
    let all = manifest(&c, "all.yaml", &manifests);
    c.kubectl_ok(&["apply", "-f", all.to_str().unwrap()]);
    let state_dv = format!("persistent-state-for-{VM}");
    let imported_dv = c.wait_for(
        "host c's state DataVolume to be imported from host a",
        Duration::from_secs(180),
        || {
            object(&c, "dv", &state_dv)
                .filter(|d| matches!(d["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        },
    );
    assert_eq!(
        imported_dv["status"]["phase"],
        "Succeeded",
        "{}\n{}",
        imported_dv["status"],
        c.log_digest()
    );
    let on_c = object(&c, "vm", VM).unwrap();
    assert_eq!(
        on_c["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"],
        uuid.as_str()
    );
    c.cli_ok(&["start", VM]);
    let third = finish_boot(&c, VM, 0);
    assert_eq!(third.get("tpm-secret"), Some(secret.as_str()));
    assert_eq!(third.get("efivar"), Some(efivar.as_str()));
    eprintln!("host c (manifests `all`) read the same TPM secret and EFI variable");

    // 4. An export past its TTL is refused, then deleted.
    // (A TTL long enough for the steps before the first request on a loaded 2-core machine.)
    a.cli_ok(&["vmexport", "create", "short", "--vm", VM, "--ttl", "20s"]);
    let created_at = Instant::now();
    let short = a.wait_for(
        "the short export to be Ready",
        Duration::from_secs(30),
        || object(&a, "vmexport", "short").filter(|e| e["status"]["phase"] == "Ready"),
    );
    let url = short["status"]["links"]["external"]["volumes"][0]["formats"][1]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let short_token = token_of(&a, "secret-short");
    let short_header = [("x-kubevirt-export-token", short_token.as_str())];
    assert_eq!(export_get(&a, &path_of(&url), &short_header).0, 200);
    std::thread::sleep(Duration::from_secs(21).saturating_sub(created_at.elapsed()));
    let (code, _) = export_get(&a, &path_of(&url), &short_header);
    assert!(code == 410 || code == 404, "expired export answered {code}");
    a.wait_for(
        "the expired export to be deleted",
        Duration::from_secs(30),
        || object(&a, "vmexport", "short").is_none().then_some(()),
    );
}

#[test]
fn export_throughput_of_a_disk_image() {
    let network = TestNetwork::create(1);
    let a = Server::start_in(&network.hosts[0], true, &[]);
    let pvc = manifest(
        &a,
        "pvc.yaml",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: big\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n",
    );
    a.kubectl_ok(&["apply", "-f", pvc.to_str().unwrap()]);
    a.wait_for("the PVC to be Bound", Duration::from_secs(30), || {
        object(&a, "pvc", "big").filter(|p| p["status"]["phase"] == "Bound")
    });
    // 256 MiB: half a repeating pattern, half zeros (a disk image is neither random nor empty).
    let image = volume_dir(&a, "big").join("disk.img");
    let mut data = Vec::with_capacity(256 << 20);
    let mut x: u32 = 12345;
    while data.len() < 128 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.resize(256 << 20, 0);
    std::fs::write(&image, &data).unwrap();
    a.cli_ok(&["vmexport", "create", "disk", "--pvc", "big"]);
    let export = a.wait_for("the export to be Ready", Duration::from_secs(30), || {
        object(&a, "vmexport", "disk").filter(|e| e["status"]["phase"] == "Ready")
    });
    let formats: Vec<&str> = export["status"]["links"]["external"]["volumes"][0]["formats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["format"].as_str().unwrap())
        .collect();
    assert_eq!(formats, ["raw", "gzip"]);
    assert!(
        export["status"]["links"]["external"]
            .get("manifests")
            .is_none()
    );
    let out_dir = tempfile::tempdir_in("/tmp").unwrap();
    for format in ["raw", "gzip"] {
        let output = out_dir.path().join(format!("disk.{format}"));
        let started = Instant::now();
        a.cli_ok(&[
            "vmexport",
            "download",
            "disk",
            "--format",
            format,
            "--output",
            output.to_str().unwrap(),
        ]);
        let elapsed = started.elapsed().as_secs_f64();
        let size = std::fs::metadata(&output).unwrap().len();
        eprintln!(
            "export of a 256 MiB image as {format}: {size} bytes in {elapsed:.2} s = {:.1} MB/s of image",
            (256u64 << 20) as f64 / elapsed / 1e6
        );
        if format == "raw" {
            assert_eq!(std::fs::read(&output).unwrap(), data);
        } else {
            let gunzip = std::process::Command::new("gzip")
                .args(["-dc", output.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                gunzip.stdout == data,
                "the gzip download does not decompress to the image"
            );
        }
    }
}
