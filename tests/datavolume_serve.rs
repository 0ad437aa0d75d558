//! CDI's DataVolumes under `ferrovirt serve`, with kubectl, real qemu-img and an HTTP server of
//! this test on loopback:
//!
//! - boot test (one boot): the test guest's disk, converted to qcow2 and gzipped, is imported
//!   from `http://127.0.0.1:PORT/` (served slowly, so the progress is seen going up) with its
//!   sha256 `checksum`, reaches `Succeeded` (`100.0%`, Ready, `ImportSucceeded`), and a VM whose
//!   disk is that `dataVolume` boots from it; the import's throughput is measured unthrottled;
//! - no boot: a truncated download and a wrong checksum end `Failed` with their message and
//!   leave no `disk.img`; an image with a backing file is refused; `ferrovirt image-upload`
//!   uploads a file that lands byte for byte in the PVC's `disk.img`; `contentType: archive`
//!   unpacks a tar with its file modes and refuses one with `../`; KubeVirt's
//!   `vm-alpine-datavolume` example gets its `dataVolumeTemplates` created and owned, and (its
//!   registry source being out of one host's reach) shows `DataVolumeError`; `kubectl get dv`
//!   prints CDI's columns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use server::{Server, manifest};
use support::guest::{GuestReport, plain_image};

/// How the test's HTTP server sends a body.
#[derive(Clone, Copy)]
enum Pace {
    Fast,
    /// In 256 KiB pieces with a pause between them.
    Slow,
    /// Announces the whole length, sends half, closes.
    Truncated,
}

/// Serves `body` at `http://127.0.0.1:PORT/<anything>` on a thread; returns the URL base.
fn serve(body: Vec<u8>, pace: Pace) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                match pace {
                    Pace::Fast => {
                        let _ = stream.write_all(&body);
                    }
                    Pace::Slow => {
                        for piece in body.chunks(256 * 1024) {
                            if stream.write_all(piece).is_err() {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(60));
                        }
                    }
                    Pace::Truncated => {
                        let _ = stream.write_all(&body[..body.len() / 2]);
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

fn qemu_img(args: &[&str]) {
    let status = ferrovirt_testkit::host_tool("qemu-img")
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "qemu-img {args:?}");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn apply(server: &Server, file: &str, yaml: &str) {
    let path = manifest(server, file, yaml);
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
}

fn object(server: &Server, kind: &str, name: &str) -> Option<Value> {
    let out = server.kubectl(&["get", kind, name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn dv_yaml(name: &str, source: &str, size: &str, extra: &str) -> String {
    format!(
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: {name}\nspec:\n{extra}  source:\n{source}  storage:\n    resources:\n      requests:\n        storage: {size}\n"
    )
}

fn http_source(url: &str, checksum: Option<&str>) -> String {
    let mut s = format!("    http:\n      url: {url}\n");
    if let Some(c) = checksum {
        s.push_str(&format!("      checksum: \"{c}\"\n"));
    }
    s
}

/// Waits until the DataVolume ends (Succeeded or Failed); returns it.
fn wait_dv(server: &Server, name: &str, timeout: Duration) -> Value {
    server.wait_for(&format!("DataVolume {name} to end"), timeout, || {
        object(server, "dv", name)
            .filter(|dv| matches!(dv["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
    })
}

fn running_message(dv: &Value) -> String {
    dv["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Running"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// The volume directory of the DataVolume's PVC.
fn volume_dir(server: &Server, name: &str) -> PathBuf {
    let pvc = object(server, "pvc", name).unwrap();
    server
        .data_dir()
        .join("volumes")
        .join(pvc["spec"]["volumeName"].as_str().unwrap())
}

fn events_of(server: &Server, name: &str) -> String {
    server.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "custom-columns=REASON:.reason,MESSAGE:.message",
    ])
}

/// The import throughput the server logged for a DataVolume (MB/s).
fn logged_throughput(server: &Server, name: &str) -> Option<f64> {
    let log = server.log();
    log.lines()
        .filter(|l| l.contains("import done") && l.contains(&format!("name={name}")))
        .find_map(|l| {
            let (_, rest) = l.split_once("s (")?;
            rest.split_whitespace().next()?.parse().ok()
        })
}

#[test]
fn datavolume_http_import_guest_boot() {
    let server = Server::start(true);
    let work = tempfile::tempdir().unwrap();
    let qcow = work.path().join("guest.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        plain_image().to_str().unwrap(),
        qcow.to_str().unwrap(),
    ]);
    let body = gzip(&std::fs::read(&qcow).unwrap());
    let checksum = format!("sha256:{}", sha256(&body));
    // Exactly the guest's size: a grown disk would move the end of its GPT.
    let original_len = std::fs::metadata(plain_image()).unwrap().len();
    assert_eq!(original_len % (1024 * 1024), 0);
    let size = format!("{}Mi", original_len / (1024 * 1024));

    // Unthrottled first: the throughput of an import from loopback.
    let fast = serve(body.clone(), Pace::Fast);
    apply(
        &server,
        "fast.yaml",
        &dv_yaml(
            "fast",
            &http_source(&format!("{fast}/guest.qcow2.gz"), Some(&checksum)),
            &size,
            "",
        ),
    );
    let started = Instant::now();
    let done = wait_dv(&server, "fast", Duration::from_secs(180));
    assert_eq!(done["status"]["phase"], "Succeeded", "{done}");
    let wall = started.elapsed();
    let logged = logged_throughput(&server, "fast");
    println!(
        "import of {} bytes (qcow2.gz, virtual {} bytes) from loopback: {:.1} s wall (apply to Succeeded), importer {} MB/s",
        body.len(),
        std::fs::metadata(plain_image()).unwrap().len(),
        wall.as_secs_f64(),
        logged.map_or("?".into(), |m| format!("{m:.1}"))
    );

    // Slow: the progress is seen going up.
    let slow = serve(body.clone(), Pace::Slow);
    apply(
        &server,
        "disk.yaml",
        &dv_yaml(
            "guest-disk",
            &http_source(&format!("{slow}/guest.qcow2.gz"), Some(&checksum)),
            &size,
            "",
        ),
    );
    let mut seen: Vec<f64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let dv = loop {
        let dv = object(&server, "dv", "guest-disk").unwrap();
        if let Some(p) = dv["status"]["progress"]
            .as_str()
            .and_then(|p| p.strip_suffix('%'))
            .and_then(|p| p.parse::<f64>().ok())
            && seen.last() != Some(&p)
        {
            seen.push(p);
        }
        if matches!(dv["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
            break dv;
        }
        assert!(Instant::now() < deadline, "import did not end: {dv}");
        std::thread::sleep(Duration::from_millis(150));
    };
    assert_eq!(dv["status"]["phase"], "Succeeded", "{dv}");
    assert_eq!(dv["status"]["progress"], "100.0%");
    let in_progress: Vec<&f64> = seen.iter().filter(|p| **p > 0.0 && **p < 100.0).collect();
    assert!(
        in_progress.len() >= 2 && in_progress.windows(2).all(|w| w[0] <= w[1]),
        "progress should be seen going up: {seen:?}"
    );
    let ready = dv["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True");
    let events = events_of(&server, "guest-disk");
    assert!(
        events.contains("ImportSucceeded")
            && events.contains("Successfully imported into PVC guest-disk"),
        "{events}"
    );
    // The image is the guest's raw disk, byte for byte.
    let image = std::fs::read(volume_dir(&server, "guest-disk").join("disk.img")).unwrap();
    let original = std::fs::read(plain_image()).unwrap();
    assert!(
        image == original,
        "the imported disk differs from the guest's image"
    );
    let table = server.kubectl_ok(&["get", "dv", "guest-disk"]);
    assert!(
        table.starts_with("NAME")
            && table.contains("PHASE")
            && table.contains("PROGRESS")
            && table.contains("RESTARTS")
            && table.contains("100.0%"),
        "{table}"
    );

    // A VM whose disk is the DataVolume boots from it.
    let vm = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/demo-vm.yaml"
    ))
    .unwrap()
    .replace("name: demo", "name: dvboot")
    .replace("guest: 256Mi", "guest: 384Mi")
    .replace(
        "          hostDisk:\n            path: GUEST_IMAGE\n            type: Disk\n",
        "          dataVolume:\n            name: guest-disk\n",
    );
    assert!(vm.contains("dataVolume:"), "{vm}");
    apply(&server, "vm.yaml", &vm);
    server.cli_ok(&["start", "dvboot"]);
    let log = server.wait_for("the guest's report", Duration::from_secs(300), || {
        let out = server.cli(&["logs", "dvboot", "--all-runs"]);
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        GuestReport::parse_last_boot(&log).done.then_some(log)
    });
    let report = GuestReport::parse_last_boot(&log);
    assert!(report.errors.is_empty(), "{log}");
}

#[test]
fn datavolume_failures_upload_archive_and_templates() {
    let server = Server::start(true);
    let work = tempfile::tempdir().unwrap();
    let raw = work.path().join("small.raw");
    let mut data = vec![0u8; 3 * 1024 * 1024 + 4096];
    for (i, b) in data.iter_mut().enumerate().step_by(4093) {
        *b = (i % 251) as u8 + 1;
    }
    std::fs::write(&raw, &data).unwrap();
    let qcow = work.path().join("small.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        qcow.to_str().unwrap(),
    ]);
    let qcow_bytes = std::fs::read(&qcow).unwrap();
    let body = gzip(&qcow_bytes);

    // A truncated download.
    let truncated = serve(body.clone(), Pace::Truncated);
    apply(
        &server,
        "t.yaml",
        &dv_yaml(
            "truncated",
            &http_source(&format!("{truncated}/x.qcow2.gz"), None),
            "8Mi",
            "",
        ),
    );
    // A wrong checksum.
    let fine = serve(body.clone(), Pace::Fast);
    let wrong = format!("sha256:{}", "0".repeat(64));
    apply(
        &server,
        "c.yaml",
        &dv_yaml(
            "badsum",
            &http_source(&format!("{fine}/x.qcow2.gz"), Some(&wrong)),
            "8Mi",
            "",
        ),
    );
    // An image with a backing file.
    let top = work.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        qcow.to_str().unwrap(),
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    let backed = serve(std::fs::read(&top).unwrap(), Pace::Fast);
    apply(
        &server,
        "b.yaml",
        &dv_yaml(
            "backed",
            &http_source(&format!("{backed}/top.qcow2"), None),
            "8Mi",
            "",
        ),
    );
    for (name, expected) in [
        ("truncated", "truncated"),
        ("badsum", "checksum mismatch: expected sha256 0000"),
        ("backed", "backing file"),
    ] {
        let dv = wait_dv(&server, name, Duration::from_secs(120));
        assert_eq!(dv["status"]["phase"], "Failed", "{name}: {dv}");
        let message = running_message(&dv);
        assert!(message.contains(expected), "{name}: {message}");
        assert!(
            !volume_dir(&server, name).join("disk.img").exists(),
            "{name}"
        );
        let events = events_of(&server, name);
        assert!(
            events.contains("ImportFailed") && events.contains(expected),
            "{name}: {events}"
        );
    }

    // ferrovirt image-upload: the exact bytes.
    let out = server.cli_ok(&[
        "image-upload",
        "dv",
        "uploaded",
        "--size",
        "8Mi",
        "--image-path",
        raw.to_str().unwrap(),
        "--insecure",
    ]);
    assert!(
        out.contains("Uploading") && out.contains("completed successfully"),
        "{out}"
    );
    let dv = object(&server, "dv", "uploaded").unwrap();
    assert_eq!(dv["status"]["phase"], "Succeeded", "{dv}");
    let image = std::fs::read(volume_dir(&server, "uploaded").join("disk.img")).unwrap();
    assert_eq!(image.len(), 8 * 1024 * 1024);
    assert_eq!(&image[..data.len()], &data[..]);
    assert!(image[data.len()..].iter().all(|b| *b == 0));
    // The token names one PVC: a second upload into the finished one is refused.
    let again = server.cli(&[
        "image-upload",
        "dv",
        "uploaded",
        "--no-create",
        "--image-path",
        raw.to_str().unwrap(),
        "--wait-secs",
        "5",
    ]);
    assert!(!again.status.success());

    // contentType: archive (VM export's backend-storage PVC): modes kept; `../` refused.
    let tar = {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, bytes, mode) in [
            ("swtpm/uuid/tpm2/tpm2-00.permall", &b"tpm state"[..], 0o600),
            ("nvram/vm_VARS.fd", &b"vars"[..], 0o644),
        ] {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(mode);
            builder.append_data(&mut header, path, bytes).unwrap();
        }
        builder.into_inner().unwrap()
    };
    let archive = serve(gzip(&tar), Pace::Fast);
    apply(
        &server,
        "a.yaml",
        &dv_yaml(
            "state",
            &http_source(&format!("{archive}/state.tar.gz"), None),
            "10Mi",
            "  contentType: archive\n",
        ),
    );
    let dv = wait_dv(&server, "state", Duration::from_secs(60));
    assert_eq!(dv["status"]["phase"], "Succeeded", "{dv}");
    let dir = volume_dir(&server, "state");
    let tpm = dir.join("swtpm/uuid/tpm2/tpm2-00.permall");
    assert_eq!(std::fs::read(&tpm).unwrap(), b"tpm state");
    assert_eq!(
        std::fs::metadata(&tpm).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.join("nvram/vm_VARS.fd"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    let evil = {
        let mut header = tar::Header::new_ustar();
        let name = b"../escape";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_size(3);
        header.set_mode(0o644);
        header.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&header, &b"bad"[..]).unwrap();
        builder.into_inner().unwrap()
    };
    let evil_url = serve(evil, Pace::Fast);
    apply(
        &server,
        "e.yaml",
        &dv_yaml(
            "evil",
            &http_source(&format!("{evil_url}/evil.tar"), None),
            "10Mi",
            "  contentType: archive\n",
        ),
    );
    let dv = wait_dv(&server, "evil", Duration::from_secs(60));
    assert_eq!(dv["status"]["phase"], "Failed", "{dv}");
    assert!(running_message(&dv).contains("../escape"), "{dv}");
    assert!(
        !volume_dir(&server, "evil")
            .parent()
            .unwrap()
            .join("escape")
            .exists()
    );

    // KubeVirt's vm-alpine-datavolume example: its DataVolume is created and owned by the VM.
    let example = r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  labels:
    kubevirt.io/vm: vm-alpine-datavolume
  name: vm-alpine-datavolume
spec:
  dataVolumeTemplates:
  - metadata:
      creationTimestamp: null
      name: alpine-dv
    spec:
      pvc:
        accessModes:
        - ReadWriteOnce
        resources:
          requests:
            storage: 2Gi
        storageClassName: local
      source:
        registry:
          url: "docker://registry:5000/kubevirt/alpine-container-disk-demo:devel"
  running: false
  template:
    metadata:
      labels:
        kubevirt.io/vm: vm-alpine-datavolume
    spec:
      domain:
        devices:
          disks:
          - disk:
              bus: virtio
            name: datavolumedisk1
        resources:
          requests:
            memory: 128Mi
      terminationGracePeriodSeconds: 0
      volumes:
      - dataVolume:
          name: alpine-dv
        name: datavolumedisk1
"#;
    apply(&server, "alpine.yaml", example);
    let vm = object(&server, "vm", "vm-alpine-datavolume").unwrap();
    let dv = server.wait_for("the template's DataVolume", Duration::from_secs(30), || {
        object(&server, "dv", "alpine-dv")
    });
    let owner = &dv["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "VirtualMachine");
    assert_eq!(owner["uid"], vm["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);
    let dv = wait_dv(&server, "alpine-dv", Duration::from_secs(30));
    assert_eq!(dv["status"]["phase"], "Failed");
    assert!(
        running_message(&dv).contains("spec.source.registry"),
        "{dv}"
    );
    // Started, it does not run without its disk: DataVolumeError.
    server.cli_ok(&["start", "vm-alpine-datavolume"]);
    server.wait_for("DataVolumeError", Duration::from_secs(30), || {
        object(&server, "vm", "vm-alpine-datavolume")
            .filter(|vm| vm["status"]["printableStatus"] == "DataVolumeError")
    });
    assert!(object(&server, "vmi", "vm-alpine-datavolume").is_none());
    // Deleting the VM deletes the DataVolume it owns (garbage collector).
    server.kubectl_ok(&["delete", "vm", "vm-alpine-datavolume"]);
    server.wait_for(
        "the owned DataVolume to go",
        Duration::from_secs(30),
        || object(&server, "dv", "alpine-dv").is_none().then_some(()),
    );
}

/// An upload whose connection breaks keeps the bytes that arrived: the DataVolume stays
/// `UploadReady` saying how many, `HEAD` answers `Upload-Offset`, and `ferrovirt image-upload
/// --no-create` continues from there; the PVC's `disk.img` holds the file byte for byte.
#[test]
fn an_interrupted_upload_resumes_where_it_stopped() {
    let server = Server::start(true);
    let work = tempfile::tempdir().unwrap();
    let raw = work.path().join("resumed.raw");
    let data: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&raw, &data).unwrap();
    apply(
        &server,
        "u.yaml",
        &dv_yaml("resumed", "    upload: {}\n", "8Mi", ""),
    );
    server.wait_for("the upload DataVolume", Duration::from_secs(60), || {
        object(&server, "dv", "resumed").filter(|dv| dv["status"]["phase"] == "UploadReady")
    });
    let (code, answer) = server.json(
        "POST",
        "/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/default/uploadtokenrequests",
        Some(&serde_json::json!({
            "apiVersion": "upload.cdi.kubevirt.io/v1beta1",
            "kind": "UploadTokenRequest",
            "metadata": {"name": "resumed"},
            "spec": {"pvcName": "resumed"},
        })),
    );
    assert_eq!(code, 201, "{answer}");
    let token = answer["status"]["token"].as_str().unwrap().to_owned();

    // A client that announces the whole file, sends 1.5 MiB and goes away.
    let sent = 3 * 512 * 1024;
    {
        let mut stream = server.endpoint().connect().unwrap();
        let head = format!(
            "POST /v1beta1/upload HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            server.endpoint().authority(),
            data.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&data[..sent]).unwrap();
        stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        stream.conn.send_close_notify();
        let _ = stream.flush();
    }
    let offset = || {
        let endpoint = server::Endpoint {
            token: Some(token.clone()),
            ..server.endpoint()
        };
        let (code, head, _) = server::send(&endpoint, "HEAD", "/v1beta1/upload", &[], &[]).unwrap();
        assert!((200..300).contains(&code), "{code} {head}");
        head.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("upload-offset:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0)
    };
    server.wait_for("the kept bytes", Duration::from_secs(30), || {
        (offset() == sent).then_some(())
    });
    // The server keeps the bytes first and says so in the DataVolume's status right after.
    let dv = server.wait_for(
        "the kept bytes in the status",
        Duration::from_secs(30),
        || {
            object(&server, "dv", "resumed")
                .filter(|dv| running_message(dv).contains(&format!("{sent} bytes are kept")))
        },
    );
    assert_eq!(dv["status"]["phase"], "UploadReady", "{dv}");

    // Created already: without --no-create the CLI says what to do.
    let again = server.cli(&[
        "image-upload",
        "dv",
        "resumed",
        "--size",
        "8Mi",
        "--image-path",
        raw.to_str().unwrap(),
        "--insecure",
    ]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--no-create"),
        "{again:?}"
    );

    let out = server.cli_ok(&[
        "image-upload",
        "dv",
        "resumed",
        "--no-create",
        "--image-path",
        raw.to_str().unwrap(),
        "--insecure",
    ]);
    assert!(
        out.contains(&format!(
            "Resuming the upload at byte {sent} of {}",
            data.len()
        )) && out.contains("completed successfully"),
        "{out}"
    );
    let dv = object(&server, "dv", "resumed").unwrap();
    assert_eq!(dv["status"]["phase"], "Succeeded", "{dv}");
    let image = std::fs::read(volume_dir(&server, "resumed").join("disk.img")).unwrap();
    assert_eq!(image.len(), 8 * 1024 * 1024);
    assert!(
        image[..data.len()] == data[..],
        "disk.img differs from the uploaded file"
    );
    assert!(image[data.len()..].iter().all(|b| *b == 0));
    assert!(
        !volume_dir(&server, "resumed")
            .join(".upload.import-tmp")
            .exists()
    );
}
