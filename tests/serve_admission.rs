//! `ferrovirt serve`'s admission of what only this host can judge, through the real kubectl (no
//! VM is started): `hostDisk` paths outside `<data>/images` and the `--host-disk-root`s (also
//! through a symlink out of a root) are refused with their field path and the roots; a bound
//! PVC's `volumeName` cannot be patched; two VMs cannot share a `firmware.uuid`; one client
//! cannot hold more than `--max-watches-per-client` watches.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use server::{Server, manifest};

fn host_disk_vm(name: &str, path: &str) -> String {
    format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        devices:
          disks:
            - name: boot
              disk:
                bus: virtio
        resources:
          requests:
            memory: 64Mi
      volumes:
        - name: boot
          hostDisk:
            path: {path}
            type: Disk
"#
    )
}

fn apply(server: &Server, name: &str, text: &str) -> std::process::Output {
    let path = manifest(server, &format!("{name}.yaml"), text);
    server.kubectl(&["apply", "-f", path.to_str().unwrap()])
}

#[test]
fn host_disks_outside_the_roots_are_refused_at_apply() {
    let roots = tempfile::tempdir().unwrap();
    let root = roots.path().join("disks");
    std::fs::create_dir(&root).unwrap();
    let root_text = root.to_str().unwrap().to_owned();
    let server = Server::start_with(false, &["--host-disk-root", &root_text]);
    let images = server.data_dir().join("images");

    // Outside every root.
    let outside = roots.path().join("outside.img");
    std::fs::write(&outside, b"not a root").unwrap();
    let out = apply(
        &server,
        "outside",
        &host_disk_vm("outside", outside.to_str().unwrap()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("spec.template.spec.volumes[0].hostDisk.path"),
        "{stderr}"
    );
    assert!(stderr.contains(&root_text), "the roots are named: {stderr}");
    assert!(
        stderr.contains(images.to_str().unwrap()),
        "<data>/images is named: {stderr}"
    );

    // A symlink inside a root that leads out of it.
    let escape = root.join("escape.img");
    std::os::unix::fs::symlink(&outside, &escape).unwrap();
    let out = apply(
        &server,
        "escape",
        &host_disk_vm("escape", escape.to_str().unwrap()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("spec.template.spec.volumes[0].hostDisk.path"),
        "{stderr}"
    );

    // A file inside the root, and one under <data>/images, are accepted.
    let inside = root.join("disk.img");
    std::fs::write(&inside, b"a disk").unwrap();
    assert_eq!(
        server.kubectl_ok(&[
            "apply",
            "-f",
            manifest(
                &server,
                "inside.yaml",
                &host_disk_vm("inside", inside.to_str().unwrap())
            )
            .to_str()
            .unwrap()
        ]),
        "virtualmachine.kubevirt.io/inside created\n"
    );
    std::fs::create_dir_all(&images).unwrap();
    let in_images = images.join("guest.img");
    std::fs::write(&in_images, b"a disk").unwrap();
    let out = apply(
        &server,
        "images",
        &host_disk_vm("images", in_images.to_str().unwrap()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An update moving the disk out of the roots is refused too.
    let out = apply(
        &server,
        "inside-moved",
        &host_disk_vm("inside", outside.to_str().unwrap()),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("spec.template.spec.volumes[0].hostDisk.path")
    );
}

#[test]
fn a_bound_pvc_keeps_its_volume_name_and_firmware_uuids_are_unique() {
    let server = Server::start(false);
    let pvc = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: claim
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 10Mi
  volumeName: pv-one
"#;
    server.kubectl_ok(&[
        "apply",
        "-f",
        manifest(&server, "pvc.yaml", pvc).to_str().unwrap(),
    ]);
    let out = server.kubectl(&[
        "patch",
        "pvc",
        "claim",
        "--type=merge",
        "-p",
        r#"{"spec":{"volumeName":"pv-two"}}"#,
        "-v=6",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("422"), "a 422 answer: {stderr}");
    assert!(
        stderr.contains("is invalid: spec: Forbidden"),
        "the field is spec: {stderr}"
    );
    let (code, stored) = server.json(
        "GET",
        "/api/v1/namespaces/default/persistentvolumeclaims/claim",
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(stored["spec"]["volumeName"], "pv-one");

    // Two VMs with one firmware UUID: the second is refused, naming the first.
    let uuid = "5d307ca9-b3ef-428c-8861-06e72d69f223";
    let vm = |name: &str| {
        format!(
            r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        firmware:
          uuid: {uuid}
        devices: {{}}
        resources:
          requests:
            memory: 64Mi
"#
        )
    };
    assert!(apply(&server, "first", &vm("first")).status.success());
    let out = apply(&server, "second", &vm("second"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("spec.template.spec.domain.firmware.uuid")
            && stderr.contains("VirtualMachine default/first"),
        "{stderr}"
    );
    // The VM itself may keep its UUID (an update).
    assert!(apply(&server, "first-again", &vm("first")).status.success());
}

fn watch(server: &Server) -> Child {
    server
        .kubectl_cmd(&["get", "vms", "--watch", "--request-timeout=0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn one_client_cannot_hold_more_watches_than_the_limit() {
    let server = Server::start_with(false, &["--max-watches-per-client", "2"]);
    let mut open: Vec<Child> = (0..2).map(|_| watch(&server)).collect();
    // Both watches are up once the server counts them: a third one is refused at once.
    std::thread::sleep(Duration::from_secs(3));
    for child in &mut open {
        assert!(
            child.try_wait().unwrap().is_none(),
            "a watch within the limit ended"
        );
    }
    let mut third = watch(&server);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = third.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the third watch was not refused");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(third.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("TooManyRequests") || stderr.contains("too many open watches"),
        "{stderr}"
    );
    // A slot freed is usable again.
    let mut first = open.remove(0);
    first.kill().unwrap();
    first.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let mut again = watch(&server);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        again.try_wait().unwrap().is_none(),
        "a watch after a freed slot ended"
    );
    for mut child in open.into_iter().chain([again]) {
        let _ = child.kill();
        let _ = child.wait();
    }
}
