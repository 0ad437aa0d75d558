//! The importer against a real HTTP server on loopback (a thread of this test) and the real
//! qemu-img: qcow2.gz and xz images become the exact raw bytes, a truncated download, a wrong
//! checksum and a backing file fail with their message and leave no `disk.img`, archives keep
//! their modes and refuse `../`.

// Test helpers outside #[test] fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ferrovirt_api::cdi::Checksum;
use ferrovirt_importer::{HttpRequest, ImportError, ImportRequest, Progress, Source};
use sha2::Digest;

/// Serves `body` once per connection; `announce` is the Content-Length sent (a larger one than
/// the body makes a truncated download).
fn serve(body: Vec<u8>, announce: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
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
                "HTTP/1.1 200 OK\r\nContent-Length: {announce}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}/image")
}

fn qemu_img(args: &[&str]) {
    let status = ferrovirt_testkit::host_tool("qemu-img")
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "qemu-img {args:?}");
}

/// A raw image with recognisable data at a few offsets, and its qcow2 conversion.
fn images(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let raw_path = dir.join("src.raw");
    let mut raw = vec![0u8; 4 * 1024 * 1024];
    for (i, chunk) in raw.chunks_mut(65536).enumerate().step_by(3) {
        chunk[..16].copy_from_slice(format!("block {i:010}").as_bytes());
    }
    std::fs::write(&raw_path, &raw).unwrap();
    let qcow_path = dir.join("src.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw_path.to_str().unwrap(),
        qcow_path.to_str().unwrap(),
    ]);
    (raw, std::fs::read(qcow_path).unwrap())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn request(url: String, volume: &Path, checksum: Option<&str>) -> ImportRequest {
    ImportRequest {
        source: Source::Http(HttpRequest {
            url,
            ..HttpRequest::default()
        }),
        volume: volume.to_owned(),
        image_bytes: 8 * 1024 * 1024,
        archive: false,
        checksum: checksum.map(|c| Checksum::parse(c).unwrap()),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn qcow2_gz_over_http_becomes_the_raw_image() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, qcow) = images(dir.path());
    let body = gzip(&qcow);
    let checksum = format!("sha256:{}", sha256_hex(&body));
    let url = serve(body.clone(), body.len());
    let volume = dir.path().join("vol");
    let progress = Progress::new();
    let summary =
        ferrovirt_importer::run(&request(url, &volume, Some(&checksum)), progress.clone()).unwrap();
    assert_eq!(summary.format, Some(ferrovirt_importer::Format::Qcow2));
    assert_eq!(summary.read_bytes, body.len() as u64);
    assert_eq!(progress.percent(), Some(100.0));
    let image = std::fs::read(volume.join("disk.img")).unwrap();
    // Grown to the requested size; the image's own bytes first.
    assert_eq!(image.len(), 8 * 1024 * 1024);
    assert_eq!(&image[..raw.len()], &raw[..]);
    assert!(image[raw.len()..].iter().all(|b| *b == 0));
    // No temporary file left.
    let names: Vec<String> = std::fs::read_dir(&volume)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["disk.img".to_owned()]);
}

#[test]
fn xz_raw_image_and_file_source() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, _) = images(dir.path());
    let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 1);
    encoder.write_all(&raw).unwrap();
    let xz = encoder.finish().unwrap();
    let path = dir.path().join("img.raw.xz");
    std::fs::write(&path, &xz).unwrap();
    let volume = dir.path().join("vol");
    let summary = ferrovirt_importer::run(
        &ImportRequest {
            source: Source::File(path),
            volume: volume.clone(),
            image_bytes: 0,
            archive: false,
            checksum: None,
        },
        Progress::new(),
    )
    .unwrap();
    assert_eq!(summary.format, Some(ferrovirt_importer::Format::Raw));
    assert_eq!(std::fs::read(volume.join("disk.img")).unwrap(), raw);
}

#[test]
fn truncated_download_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, qcow) = images(dir.path());
    let body = gzip(&qcow);
    let half = body[..body.len() / 2].to_vec();
    let url = serve(half, body.len());
    let volume = dir.path().join("vol");
    let error = ferrovirt_importer::run(&request(url, &volume, None), Progress::new()).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("truncated"), "{message}");
    assert!(!volume.join("disk.img").exists());
    assert_eq!(std::fs::read_dir(&volume).unwrap().count(), 0);
}

#[test]
fn bad_checksum_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (_, qcow) = images(dir.path());
    let url = serve(qcow.clone(), qcow.len());
    let volume = dir.path().join("vol");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let error =
        ferrovirt_importer::run(&request(url, &volume, Some(&wrong)), Progress::new()).unwrap_err();
    assert!(
        matches!(error, ImportError::ChecksumMismatch { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("checksum mismatch: expected sha256 000")
    );
    assert!(!volume.join("disk.img").exists());
}

#[test]
fn image_with_a_backing_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    let top = dir.path().join("top.qcow2");
    qemu_img(&["create", "-f", "qcow2", base.to_str().unwrap(), "1M"]);
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    let body = std::fs::read(&top).unwrap();
    let url = serve(body.clone(), body.len());
    let volume = dir.path().join("vol");
    let error = ferrovirt_importer::run(&request(url, &volume, None), Progress::new()).unwrap_err();
    assert!(error.to_string().contains("backing file"), "{error}");
    assert!(!volume.join("disk.img").exists());
}

#[test]
fn too_large_image_is_refused_with_cdis_message() {
    let dir = tempfile::tempdir().unwrap();
    let (_, qcow) = images(dir.path());
    let url = serve(qcow.clone(), qcow.len());
    let volume = dir.path().join("vol");
    let mut small = request(url, &volume, None);
    small.image_bytes = 1024 * 1024;
    let error = ferrovirt_importer::run(&small, Progress::new()).unwrap_err();
    assert!(
        error.to_string().starts_with(
            "Virtual image size 4194304 is larger than the reported available storage"
        ),
        "{error}"
    );
}

fn tar_with(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data, mode) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(tar::EntryType::Regular);
        // Written raw so that a hostile path is not normalized away by the builder.
        let name = header.as_old_mut();
        name.name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn archive_keeps_modes_and_refuses_parent_paths() {
    let dir = tempfile::tempdir().unwrap();
    let tar = tar_with(&[
        ("swtpm/tpm2/tpm2-00.permall", b"tpm state", 0o600),
        ("nvram/vm_VARS.fd", b"vars", 0o644),
    ]);
    let path = dir.path().join("state.tar.gz");
    std::fs::write(&path, gzip(&tar)).unwrap();
    let volume = dir.path().join("vol");
    let archive = |source: &Path| ImportRequest {
        source: Source::File(source.to_owned()),
        volume: volume.clone(),
        image_bytes: 0,
        archive: true,
        checksum: None,
    };
    ferrovirt_importer::run(&archive(&path), Progress::new()).unwrap();
    let state = volume.join("swtpm/tpm2/tpm2-00.permall");
    assert_eq!(std::fs::read(&state).unwrap(), b"tpm state");
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(volume.join("nvram/vm_VARS.fd"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    let evil = tar_with(&[("ok.txt", b"fine", 0o644), ("../escape.txt", b"bad", 0o644)]);
    let evil_path = dir.path().join("evil.tar");
    std::fs::write(&evil_path, evil).unwrap();
    let error = ferrovirt_importer::run(&archive(&evil_path), Progress::new()).unwrap_err();
    assert!(error.to_string().contains("../escape.txt"), "{error}");
    assert!(!dir.path().join("escape.txt").exists());
    assert!(
        !volume.join("ok.txt").exists(),
        "nothing of a refused archive is published"
    );
    // The first archive's files are still there.
    assert!(state.exists());
}
