//! The graphical console through `ferrovirt serve` with the real engine: one VM with EFI firmware
//! and no disk (OVMF draws its screen: logo, boot manager, UEFI shell) under TCG. The
//! `vnc/screenshot` subresource, fetched by kubectl with the admin kubeconfig, is a PNG of that
//! screen that is not blank; the `vnc` WebSocket speaks RFB; a foreign `Origin` is refused (403),
//! no credentials are refused (401), a user without the vnc permission is refused (403); the CLI
//! saves the same PNG (`ferrovirt vnc screenshot`) and proxies the console to a local TCP port a
//! VNC viewer opens (`ferrovirt vnc`). The last screenshot is kept in `target/vnc-artifacts/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use server::{Server, cluster_role_binding, manifest, send};

const VIEWER_TOKEN: &str = "viewer-token-vnc-0123456789";

fn vm_manifest(name: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: Always
  template:
    spec:
      terminationGracePeriodSeconds: 1
      domain:
        firmware:
          bootloader:
            efi:
              secureBoot: false
        devices: {{}}
        memory:
          guest: 128Mi
"
    )
}

/// A decoded PNG: (width, height, whether all pixels are equal).
fn decode_png(bytes: &[u8]) -> (u32, u32, bool) {
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {:?}",
        &bytes[..bytes.len().min(64)]
    );
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let pixels = &pixels[..frame.buffer_size()];
    let step = frame.color_type.samples() * usize::from(frame.bit_depth as u8).div_ceil(8);
    let first = &pixels[..step];
    let uniform = pixels.chunks(step).all(|pixel| pixel == first);
    (frame.width, frame.height, uniform)
}

fn screenshot_path(name: &str) -> String {
    format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/{name}/vnc/screenshot"
    )
}

fn vnc_path(name: &str) -> String {
    format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/{name}/vnc"
    )
}

/// The first bytes the VNC server sends on a new connection: the RFB version.
fn read_rfb_version(stream: &mut impl Read) -> Vec<u8> {
    let mut version = [0u8; 12];
    stream.read_exact(&mut version).unwrap();
    version.to_vec()
}

#[test]
fn vnc_screenshot_websocket_and_cli_on_an_efi_vm() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), format!("{VIEWER_TOKEN},victor,1001\n")).unwrap();
    let server = Server::start_with(
        true,
        &["--token-auth-file", tokens.path().to_str().unwrap()],
    );
    let binding = manifest(
        &server,
        "binding.yaml",
        &cluster_role_binding("victor-view", "view", "victor"),
    );
    server.kubectl_ok(&["apply", "-f", binding.to_str().unwrap()]);
    let name = format!("vnc-{}", server.port);
    let path = manifest(&server, "vm.yaml", &vm_manifest(&name));
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    let started = Instant::now();
    server.wait_for("the VMI to run", Duration::from_secs(120), || {
        let out = server.kubectl(&["get", "vmi", &name, "-o", "jsonpath={.status.phase}"]);
        (String::from_utf8_lossy(&out.stdout) == "Running").then_some(())
    });
    eprintln!("apply -> Running: {:?}", started.elapsed());

    // The VNC socket is QEMU's, in the VM's private runtime dir, for its owner only.
    let vm: serde_json::Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "vm", &name, "-o", "json"])).unwrap();
    let uuid = vm["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"]
        .as_str()
        .unwrap();
    let runtime = ferrovirt_vmm_runtime_dir(&server, uuid);
    let socket = runtime.join("vnc.sock");
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket(), "{}", socket.display());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // The screenshot through kubectl (the admin kubeconfig's credentials): a PNG of OVMF's
    // screen. Until the firmware sets a video mode QEMU shows its own 640x480 placeholder ("Guest
    // has not initialized the display (yet).", not blank either): wait for the firmware's mode
    // (OVMF's bochs driver picks 1280x800) and a screen that is not blank.
    let shot = screenshot_path(&name);
    let mut placeholder_seen = false;
    let (png, width, height) = server.wait_for(
        "a screenshot of the firmware's screen that is not blank",
        Duration::from_secs(90),
        || {
            let out = server.kubectl(&["get", "--raw", &shot]);
            if !out.status.success() {
                eprintln!("screenshot: {}", String::from_utf8_lossy(&out.stderr));
                return None;
            }
            let (width, height, uniform) = decode_png(&out.stdout);
            assert!(width > 0 && height > 0);
            if (width, height) == (640, 480) {
                placeholder_seen = true;
                return None;
            }
            (!uniform).then_some((out.stdout, width, height))
        },
    );
    eprintln!("QEMU's placeholder screen seen first: {placeholder_seen}");
    assert!(width > 640 && height > 480, "{width}x{height}");
    eprintln!(
        "screenshot {width}x{height}, {} bytes, {:?} after start",
        png.len(),
        started.elapsed()
    );
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/vnc-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("efi-screen.png"), &png).unwrap();
    // No screenshot file is left in the runtime dir.
    assert!(!runtime.join("screenshot.png").exists());

    // The WebSocket speaks RFB (what virtctl vnc and noVNC read first).
    let admin = server.endpoint();
    let mut ws = server::websocket(&admin, &vnc_path(&name)).unwrap();
    ws.sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (opcode, payload) = server::ws_read_frame(&mut ws).unwrap();
    assert_eq!(opcode, 2, "a binary frame");
    assert!(
        payload.starts_with(b"RFB 003.00"),
        "{:?}",
        String::from_utf8_lossy(&payload)
    );
    drop(ws);

    // A foreign Origin: 403 before the handler; the server's own origin passes.
    let refused = server::websocket_with(
        &admin,
        &vnc_path(&name),
        &[("Origin", "https://evil.example")],
    )
    .err()
    .unwrap()
    .to_string();
    assert!(refused.contains("403"), "{refused}");
    let own = format!("https://127.0.0.1:{}", server.port);
    let mut ws =
        server::websocket_with(&admin, &vnc_path(&name), &[("Origin", own.as_str())]).unwrap();
    ws.sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert!(
        server::ws_read_frame(&mut ws)
            .unwrap()
            .1
            .starts_with(b"RFB ")
    );
    drop(ws);

    // No credentials: 401, for the WebSocket and the screenshot.
    let anonymous = admin.with_token(None);
    let refused = server::websocket(&anonymous, &vnc_path(&name))
        .err()
        .unwrap()
        .to_string();
    assert!(refused.contains("401"), "{refused}");
    assert_eq!(send(&anonymous, "GET", &shot, &[], b"").unwrap().0, 401);

    // A viewer (role view: no virtualmachineinstances/vnc): 403 for both.
    let viewer = admin.with_token(Some(VIEWER_TOKEN));
    let refused = server::websocket(&viewer, &vnc_path(&name))
        .err()
        .unwrap()
        .to_string();
    assert!(refused.contains("403"), "{refused}");
    let (code, _, body) = send(&viewer, "GET", &shot, &[], b"").unwrap();
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("virtualmachineinstances/vnc"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // The CLI: `ferrovirt vnc screenshot` saves a PNG.
    let out_png = server.dir.path().join("cli.png");
    server.cli_ok(&["vnc", "screenshot", &name, "-f", out_png.to_str().unwrap()]);
    let (w, h, _) = decode_png(&std::fs::read(&out_png).unwrap());
    assert_eq!((w, h), (width, height));

    // The CLI: `ferrovirt vnc` proxies a local TCP port to the console.
    let mut proxy = server
        .cli_cmd(&["vnc", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(proxy.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let announced: serde_json::Value = serde_json::from_str(first_line.trim()).unwrap();
    let port = u16::try_from(announced["port"].as_u64().unwrap()).unwrap();
    let mut viewer_tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    viewer_tcp
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert!(read_rfb_version(&mut viewer_tcp).starts_with(b"RFB 003.00"));
    drop(viewer_tcp);
    let _ = proxy.kill();
    let _ = proxy.wait();

    // The audit log names who opened the console.
    let audit = std::fs::read_to_string(server.data_dir().join("audit.log")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"subresource\":\"vnc\"") && l.contains("\"code\":101")),
        "no audited vnc WebSocket in:\n{audit}"
    );

    server.kubectl_ok(&["delete", "vm", &name, "--wait=false"]);
    server.wait_for(
        "the VM's runtime dir to go",
        Duration::from_secs(60),
        || (!runtime.exists()).then_some(()),
    );
}

/// The runtime dir of a VM (`<data>/run/<uuid>`, as the engine lays it out).
fn ferrovirt_vmm_runtime_dir(server: &Server, uuid: &str) -> std::path::PathBuf {
    server.data_dir().join("run").join(uuid)
}
