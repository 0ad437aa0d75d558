//! The Debian package (`scripts/package.sh`, cargo-deb): what it holds (paths, modes, conffiles,
//! dependencies, the maintainer scripts' systemd glue), its systemd unit (`systemd-analyze
//! verify`, and the directives the service depends on), and the packaged binary unpacked into a
//! throw-away root (`dpkg-deb -x`), started with the packaged configuration (data, runtime dir,
//! admin kubeconfig and listen address overridden by flags, as an admin's drop-in would), under a
//! `$NOTIFY_SOCKET` as systemd gives it: it says READY=1, serves the API to kubectl with the admin
//! kubeconfig it wrote (0600), serves the embedded web UI, and says STOPPING=1 on SIGTERM.
//!
//! The package is `$FERROVIRT_DEB` (scripts/test.sh builds the release package with
//! scripts/package.sh); without it, this test packages the debug binary cargo built for the tests
//! (`scripts/package.sh --ui-built --profile dev --no-build`; the web UI must be built).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrovirt_testkit::host_tool;

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The package to check: `$FERROVIRT_DEB`, else one built from the tests' debug binary.
fn package(work: &Path) -> PathBuf {
    if let Some(deb) = std::env::var_os("FERROVIRT_DEB") {
        let deb = PathBuf::from(deb);
        assert!(
            deb.is_file(),
            "FERROVIRT_DEB={} does not exist",
            deb.display()
        );
        return deb;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = work.join("deb");
    let stdout = run_ok(
        Command::new(root.join("scripts/package.sh"))
            .args(["--ui-built", "--profile", "dev", "--no-build", "-o"])
            .arg(&out)
            .current_dir(root),
    );
    PathBuf::from(stdout.lines().last().unwrap().trim())
}

/// `dpkg-deb -c` lines as (mode, owner, path).
fn listing(deb: &Path) -> Vec<(String, String, String)> {
    run_ok(host_tool("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (
                fields[0].to_owned(),
                fields[1].to_owned(),
                fields[5].trim_start_matches('.').to_owned(),
            )
        })
        .collect()
}

fn unit_value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .collect()
}

#[test]
fn the_package_installs_a_service_that_serves_the_api_with_its_configuration() {
    let work = tempfile::Builder::new()
        .prefix("fvpkg")
        .tempdir_in("/tmp")
        .unwrap();
    let deb = package(work.path());
    eprintln!(
        "package: {} ({} bytes)",
        deb.display(),
        std::fs::metadata(&deb).unwrap().len()
    );

    // Control fields: the engine's Debian packages are dependencies.
    let depends = run_ok(host_tool("dpkg-deb").arg("-f").arg(&deb).arg("Depends"));
    for needed in [
        "qemu-system-x86",
        "qemu-utils",
        "swtpm",
        "swtpm-tools",
        "ovmf",
        "passt",
        "libc6",
    ] {
        assert!(
            depends.split(',').any(|d| d.trim().starts_with(needed)),
            "Depends lacks {needed}: {depends}"
        );
    }
    assert_eq!(
        run_ok(host_tool("dpkg-deb").arg("-f").arg(&deb).arg("Package")).trim(),
        "ferrovirt"
    );

    // Contents: paths, modes, owners.
    let files = listing(&deb);
    for (path, mode) in [
        ("/usr/bin/ferrovirt", "-rwxr-xr-x"),
        ("/etc/ferrovirt/config.yaml", "-rw-r--r--"),
        ("/usr/lib/systemd/system/ferrovirt.service", "-rw-r--r--"),
        ("/usr/share/doc/ferrovirt/README.md", "-rw-r--r--"),
        ("/usr/share/doc/ferrovirt/copyright", "-rw-r--r--"),
    ] {
        let entry = files
            .iter()
            .find(|(_, _, p)| p == path)
            .unwrap_or_else(|| panic!("{path} is not in the package: {files:?}"));
        assert_eq!(entry.0, mode, "{path}");
        assert_eq!(entry.1, "0/0", "{path} belongs to root");
    }
    assert!(
        !files.iter().any(|(_, _, p)| p.starts_with("/var/")
            || p.starts_with("/run/")
            || p.ends_with("admin.kubeconfig")),
        "state, runtime dirs and credentials are made by the service, not shipped: {files:?}"
    );

    // Maintainer scripts: conffiles, systemd's glue, the purge of the generated kubeconfig.
    let control = work.path().join("control");
    run_ok(host_tool("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/ferrovirt/config.yaml"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains("deb-systemd-helper enable ferrovirt.service")
            && postinst.contains("daemon-reload"),
        "{postinst}"
    );
    let prerm = std::fs::read_to_string(control.join("prerm")).unwrap();
    assert!(
        !prerm.contains("upgrade"),
        "the service is not stopped before an upgrade: {prerm}"
    );
    let postrm = std::fs::read_to_string(control.join("postrm")).unwrap();
    assert!(
        postrm.contains("rm -f /etc/ferrovirt/admin.kubeconfig")
            && !postrm
                .lines()
                .any(|l| l.contains("rm ") && l.contains("/var/lib")),
        "{postrm}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let mode = std::fs::metadata(control.join(script))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{script}");
        run_ok(Command::new("sh").arg("-n").arg(control.join(script)));
    }

    // Unpacked into a throw-away root.
    let root = work.path().join("root");
    run_ok(host_tool("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let unit_path = root.join("usr/lib/systemd/system/ferrovirt.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for (key, value) in [
        ("Type", "notify"),
        (
            "ExecStart",
            "/usr/bin/ferrovirt serve --config /etc/ferrovirt/config.yaml",
        ),
        ("KillMode", "process"),
        ("Restart", "on-failure"),
        ("StateDirectory", "ferrovirt"),
        ("StateDirectoryMode", "0700"),
        ("RuntimeDirectory", "ferrovirt"),
        ("RuntimeDirectoryMode", "0700"),
        ("RuntimeDirectoryPreserve", "yes"),
        ("ConfigurationDirectory", "ferrovirt"),
        ("ProtectSystem", "strict"),
        ("WantedBy", "multi-user.target"),
    ] {
        assert_eq!(unit_value(&unit, key), vec![value], "{key}= in the unit");
    }
    for forbidden in [
        "MemoryDenyWriteExecute",
        "PrivateDevices",
        "RestrictNamespaces",
    ] {
        assert!(
            unit_value(&unit, forbidden).is_empty(),
            "{forbidden}= would break QEMU or passt"
        );
    }
    // systemd's own check of the unit. It looks for the ExecStart binary on this host, so a copy
    // whose ExecStart names the unpacked binary is verified; it reports problems on stderr.
    let verify_dir = work.path().join("verify");
    std::fs::create_dir_all(&verify_dir).unwrap();
    let binary = root.join("usr/bin/ferrovirt");
    std::fs::write(
        verify_dir.join("ferrovirt.service"),
        unit.replace(
            "ExecStart=/usr/bin/ferrovirt",
            &format!("ExecStart={}", binary.display()),
        ),
    )
    .unwrap();
    let verify = host_tool("systemd-analyze")
        .arg("verify")
        .arg(verify_dir.join("ferrovirt.service"))
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );

    // The packaged binary with the packaged configuration, as systemd starts it.
    let state = work.path().join("state");
    let data = state.join("lib");
    let runtime = state.join("run");
    let admin = state.join("etc-admin.kubeconfig");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let notify_path = work.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let log_path = work.path().join("serve.log");
    let started = Instant::now();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(
        Command::new(&binary)
            .arg("serve")
            .arg("--config")
            .arg(root.join("etc/ferrovirt/config.yaml"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--runtime-dir")
            .arg(&runtime)
            .arg("--admin-kubeconfig")
            .arg(&admin)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("NOTIFY_SOCKET", &notify_path)
            .env("FERROVIRT_ACCEL", "tcg")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut message = [0u8; 256];
    let n = notify
        .recv(&mut message)
        .unwrap_or_else(|e| panic!("no READY=1 within 60 s ({e}); log:\n{}", log()));
    let ready = String::from_utf8_lossy(&message[..n]).to_string();
    assert_eq!(ready.trim(), "READY=1", "log:\n{}", log());
    eprintln!("start -> READY=1: {:?}", started.elapsed());
    let serve_log = log();
    assert!(serve_log.contains("configuration file read"), "{serve_log}");
    assert!(
        !serve_log.contains("\u{1b}["),
        "no colour codes in the journal: {serve_log}"
    );

    // Ready means answering: kubectl with the admin kubeconfig the service wrote.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&admin), 0o600);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&runtime), 0o700);
    assert_eq!(
        std::fs::read_to_string(data.join("runtime-base")).unwrap(),
        runtime.to_str().unwrap()
    );
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let namespaces =
        String::from_utf8(server::kubectl_with(&admin, &home, &["get", "ns", "-o", "name"]).stdout)
            .unwrap();
    assert!(
        namespaces.lines().any(|l| l == "namespace/default"),
        "{namespaces}\nlog:\n{}",
        log()
    );
    // The same client credentials through the packaged `ferrovirt` client.
    run_ok(
        Command::new(&binary)
            .args(["get", "ns", "default"])
            .env("KUBECONFIG", &admin)
            .env("HOME", &home),
    );
    // The web UI is embedded (not the page saying it was not built).
    let endpoint = server::Endpoint::from_admin_kubeconfig(&data, port).unwrap();
    let (code, page) = server::http_request(&endpoint, "GET", "/", None, &[]).unwrap();
    let page = String::from_utf8_lossy(&page);
    assert_eq!(code, 200);
    assert!(
        page.contains("<div id=\"root\"") && !page.contains("web UI not built"),
        "{page}"
    );

    // SIGTERM (systemctl stop): STOPPING=1 and a clean exit.
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let n = notify.recv(&mut message).unwrap();
    assert_eq!(String::from_utf8_lossy(&message[..n]).trim(), "STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "{status}; log:\n{}", log());
            break;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
