//! End-to-end tests of the REST API with the real kubectl (no VM is started here): apply / get /
//! patch / delete, Status errors, watch, tables, optimistic concurrency, hostile bodies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server::{Server, fixtures, manifest};

const VMS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";

/// A minimal valid VM.
fn vm_json(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"runStrategy": "Halted",
        "template": {"spec": {"domain": {"devices": {}, "memory": {"guest": "128Mi"}}}}}})
}

#[test]
fn kubectl_apply_get_edit_delete() {
    let server = Server::start(false);
    let cirros = fixtures().join("kubevirt-examples/vm-cirros.yaml");
    let tpm_vm = fixtures().join("seeds/kubevirt-doc-persistent-tpm-vm.yaml");
    let out = server.kubectl_ok(&[
        "apply",
        "-f",
        cirros.to_str().unwrap(),
        "-f",
        tpm_vm.to_str().unwrap(),
    ]);
    assert!(
        out.contains("virtualmachine.kubevirt.io/vm-cirros created"),
        "{out}"
    );
    assert!(
        out.contains("virtualmachine.kubevirt.io/vm created"),
        "{out}"
    );

    let table = server.kubectl_ok(&["get", "vms"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "AGE", "STATUS", "READY"]);
    assert!(table.contains("vm-cirros"), "{table}");

    // Defaults come back: persistent TPM kept, firmware UUID assigned once.
    let yaml = server.kubectl_ok(&["get", "vm", "vm", "-o", "yaml"]);
    assert!(yaml.contains("persistent: true"), "{yaml}");
    let json_out: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "vm", "vm", "-o", "json"])).unwrap();
    let uuid = json_out["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(uuid.len(), 36);

    // Apply again after an edit: a merge patch, the UUID survives.
    let edited = std::fs::read_to_string(&tpm_vm)
        .unwrap()
        .replace("guest: 1Gi", "guest: 512Mi");
    let edited = manifest(&server, "edited.yaml", &edited);
    let out = server.kubectl_ok(&["apply", "-f", edited.to_str().unwrap()]);
    assert!(out.contains("configured"), "{out}");
    let after: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "vm", "vm", "-o", "json"])).unwrap();
    assert_eq!(
        after["spec"]["template"]["spec"]["domain"]["memory"]["guest"],
        "512Mi"
    );
    assert_eq!(
        after["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"],
        uuid.as_str()
    );

    // An invalid manifest: kubectl prints the server's error naming the field.
    let bad = manifest(
        &server,
        "bad.yaml",
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: bad\nspec:\n  runStrategy: Sometimes\n  template:\n    spec:\n      domain:\n        firmware:\n          bootloader:\n            efi: {}\n        features:\n          smm:\n            enabled: false\n        memory:\n          guest: 128Mi\n",
    );
    let out = server.kubectl(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spec.runStrategy"), "{stderr}");
    assert!(stderr.contains("SecureBoot requires SMM"), "{stderr}");
    let typed = manifest(
        &server,
        "typed.yaml",
        &std::fs::read_to_string(&tpm_vm)
            .unwrap()
            .replace("persistent: true", "persistent: \"yes\""),
    );
    let out = server.kubectl(&["apply", "-f", typed.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("spec.template.spec.domain.devices.tpm.persistent"),
        "{stderr}"
    );

    // A misspelt field: refused by strict field validation, naming the field.
    let typo = manifest(
        &server,
        "typo.yaml",
        &std::fs::read_to_string(&tpm_vm)
            .unwrap()
            .replace("persistent: true", "persistant: true"),
    );
    let out = server.kubectl(&["apply", "-f", typo.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr
                .contains("unknown field \"spec.template.spec.domain.devices.tpm.persistant\""),
        "{stderr}"
    );
    // Every KubeVirt example and seed is accepted by a server-side dry run.
    for dir in ["kubevirt-examples", "seeds"] {
        for entry in std::fs::read_dir(fixtures().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            // Harvester's manifest sets `tpm.model`, which KubeVirt's v1 schema does not have.
            if path.ends_with("harvester-windows11-persistent-tpm.yaml") {
                continue;
            }
            let out = server.kubectl(&["apply", "--dry-run=server", "-f", path.to_str().unwrap()]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !stderr.contains("unknown field"),
                "{}: {stderr}",
                path.display()
            );
        }
    }
    let listed = server.kubectl_ok(&["get", "vms", "-o", "name"]);
    assert_eq!(
        listed.lines().count(),
        2,
        "a server-side dry run must not store anything: {listed}"
    );

    // Feature gate off (an admin edits the KubeVirt CR): persistent TPM is refused.
    server.kubectl_ok(&[
        "patch",
        "kv",
        "kubevirt",
        "-n",
        "kubevirt",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"configuration":{"developerConfiguration":{"featureGates":[]}}}}"#,
    ]);
    let out = server.kubectl(&[
        "create",
        "-f",
        tpm_vm.to_str().unwrap(),
        "--dry-run=none",
        "-o",
        "name",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("VMPersistentState feature gate is not enabled"),
        "{stderr}"
    );

    // JSON patch through kubectl, then delete.
    server.kubectl_ok(&[
        "patch",
        "vm",
        "vm-cirros",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/x","value":"y"}]"#,
    ]);
    assert!(
        server
            .kubectl_ok(&["get", "vms", "-l", "x=y", "-o", "name"])
            .contains("vm-cirros")
    );
    let out = server.kubectl_ok(&["delete", "vm", "vm-cirros"]);
    assert!(out.contains("deleted"), "{out}");
    let out = server.kubectl(&["get", "vm", "vm-cirros"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));

    // `kubectl create namespace` (protobuf body), and deleting a namespace deletes its objects.
    server.kubectl_ok(&["create", "namespace", "team-a"]);
    server.kubectl_ok(&["-n", "team-a", "apply", "-f", cirros.to_str().unwrap()]);
    assert!(server.kubectl_ok(&["get", "vms", "-A"]).contains("team-a"));
    server.kubectl_ok(&["delete", "namespace", "team-a"]);
    assert!(!server.kubectl_ok(&["get", "vms", "-A"]).contains("team-a"));

    // Discovery: short names and the defaults created on first run.
    let resources = server.kubectl_ok(&["api-resources"]);
    assert!(
        resources
            .lines()
            .any(|l| l.starts_with("virtualmachines ") && l.contains("vm,vms")),
        "{resources}"
    );
    assert!(
        server
            .kubectl_ok(&["get", "sc"])
            .contains("local-path (default)")
    );
    let ns = server.kubectl_ok(&["get", "ns", "-o", "name"]);
    assert!(
        ns.contains("namespace/default") && ns.contains("namespace/kubevirt"),
        "{ns}"
    );
    let pvc_header = server.kubectl_ok(&["get", "pvc", "-A"]);
    assert!(
        pvc_header.is_empty() || pvc_header.contains("STATUS"),
        "{pvc_header}"
    );
}

#[test]
fn watch_streams_a_change() {
    let server = Server::start(false);
    let cirros = fixtures().join("kubevirt-examples/vm-cirros.yaml");
    server.kubectl_ok(&["apply", "-f", cirros.to_str().unwrap()]);
    let mut watch = server
        .kubectl_cmd(&["get", "vms", "-w", "--request-timeout=8s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    server.kubectl_ok(&["label", "vm", "vm-cirros", "changed=yes"]);
    let started = Instant::now();
    server.kubectl_ok(&["delete", "vm", "vm-cirros", "--wait=false"]);
    std::thread::sleep(Duration::from_millis(800));
    let _ = watch.kill();
    let mut out = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = watch.wait();
    let rows = out.lines().filter(|l| l.starts_with("vm-cirros")).count();
    assert!(
        rows >= 2,
        "expected the initial row and at least one change, got:\n{out}"
    );
    assert!(out.lines().next().unwrap().starts_with("NAME"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A raw watch from a resourceVersion replays what happened after it.
    let (code, list) = server.json("GET", VMS, None);
    assert_eq!(code, 200);
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, created) = server.json("POST", VMS, Some(&vm_json("w1")));
    assert_eq!(created["metadata"]["name"], "w1");
    let (code, body) = server.request(
        "GET",
        &format!("{VMS}?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        None,
        b"",
    );
    assert_eq!(code, 200);
    let events: Vec<Value> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "w1");
}

#[test]
fn same_resource_version_conflicts_exactly_once() {
    let server = Server::start(false);
    let (code, vm) = server.json("POST", VMS, Some(&vm_json("c1")));
    assert_eq!(code, 201, "{vm}");
    for round in 0..5 {
        let (_, current) = server.json("GET", &format!("{VMS}/c1"), None);
        let endpoint = server.endpoint();
        let writers: Vec<_> = (0..2)
            .map(|i| {
                let mut body = current.clone();
                let endpoint = endpoint.clone();
                body["metadata"]["labels"] = json!({"writer": format!("{round}-{i}")});
                std::thread::spawn(move || {
                    let bytes = serde_json::to_vec(&body).unwrap();
                    server::http_request(
                        &endpoint,
                        "PUT",
                        &format!("{VMS}/c1"),
                        Some("application/json"),
                        &bytes,
                    )
                    .unwrap()
                })
            })
            .collect();
        let mut codes: Vec<u16> = writers.into_iter().map(|w| w.join().unwrap().0).collect();
        codes.sort();
        assert_eq!(codes, [200, 409], "round {round}");
    }
    let mut stale = server.json("GET", &format!("{VMS}/c1"), None).1;
    stale["metadata"]["resourceVersion"] = json!("1");
    let (code, status) = server.json("PUT", &format!("{VMS}/c1"), Some(&stale));
    assert_eq!(code, 409);
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(status["kind"], "Status");
}

#[test]
fn hostile_bodies_never_get_500() {
    let server = Server::start(false);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"{".to_vec()),
        ("application/json", b"null".to_vec()),
        ("application/json", b"[1,2,3]".to_vec()),
        ("application/json", b"\"just a string\"".to_vec()),
        ("application/json", deep.into_bytes()),
        ("application/json", vec![0xff, 0xfe, 0x00]),
        ("application/json", br#"{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachine","metadata":{"name":"x"},"spec":{"running":"yes"}}"#.to_vec()),
        ("application/json", br#"{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachine","metadata":{"name":"UPPER_case"},"spec":{}}"#.to_vec()),
        ("application/json", br#"{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachine","metadata":{"name":"x","namespace":"other"}}"#.to_vec()),
        ("application/json", br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#.to_vec()),
        ("application/json", br#"{"metadata":{"name":"x"},"spec":{"template":{"spec":{"domain":{"memory":{"guest":"lots"}}}}}}"#.to_vec()),
        ("application/json", br#"{"metadata":{}}"#.to_vec()),
        ("application/yaml", b"a: &a [*a]\n".to_vec()),
        ("application/yaml", b"- 1\n- 2\n".to_vec()),
        ("text/plain", b"hello".to_vec()),
    ];
    for (content_type, body) in &bodies {
        let (code, out) = server.request("POST", VMS, Some(content_type), body);
        assert!(
            (400..500).contains(&code),
            "{content_type} {:?} -> {code}",
            String::from_utf8_lossy(&body[..body.len().min(60)])
        );
        let status: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        assert_eq!(
            status["kind"],
            "Status",
            "{code}: {}",
            String::from_utf8_lossy(&out)
        );
    }
    let (code, _) = server.request("POST", VMS, Some("text/plain"), b"x");
    assert_eq!(code, 415);
    // Patches: bad JSON, bad ops, wrong media type, on a missing object.
    assert_eq!(server.json("POST", VMS, Some(&vm_json("p1"))).0, 201);
    for (ct, body, expected) in [
        ("application/merge-patch+json", &b"{"[..], 400),
        (
            "application/json-patch+json",
            &br#"[{"op":"remove","path":"/nope"}]"#[..],
            422,
        ),
        ("application/apply-patch+yaml", &b"{}"[..], 415),
        (
            "application/merge-patch+json",
            &br#"{"spec":{"running":"yes"}}"#[..],
            422,
        ),
    ] {
        let (code, _) = server.request("PATCH", &format!("{VMS}/p1"), Some(ct), body);
        assert_eq!(code, expected, "{ct}");
    }
    assert_eq!(
        server
            .request(
                "PATCH",
                &format!("{VMS}/missing"),
                Some("application/merge-patch+json"),
                b"{}"
            )
            .0,
        404
    );
    assert_eq!(
        server
            .request(
                "GET",
                "/apis/kubevirt.io/v1/namespaces/default/pods",
                None,
                b""
            )
            .0,
        404
    );
    assert_eq!(
        server
            .request("GET", &format!("{VMS}?labelSelector=%21%21%21"), None, b"")
            .0,
        400
    );
    assert_eq!(
        server
            .request(
                "GET",
                &format!("{VMS}?watch=true&resourceVersion=abc"),
                None,
                b""
            )
            .0,
        422
    );
    assert_eq!(
        server
            .request(
                "DELETE",
                &format!("{VMS}/p1"),
                Some("application/json"),
                b"{{"
            )
            .0,
        400
    );
    // A body over the 3 MiB limit: 413 (4 MiB declared; one byte over the limit sent, see
    // `send_declaring`).
    let over_limit = vec![b' '; 3 * 1024 * 1024 + 1];
    let (code, _, _) = server::send_declaring(
        &server.endpoint(),
        "POST",
        VMS,
        &[("Content-Type", "application/json")],
        4 * 1024 * 1024,
        &over_limit,
    )
    .unwrap();
    assert_eq!(code, 413);
    // Creating into a missing namespace: 404.
    let (code, status) = server.json(
        "POST",
        "/apis/kubevirt.io/v1/namespaces/nope/virtualmachines",
        Some(&json!({"metadata": {"name": "a"}})),
    );
    assert_eq!(code, 404, "{status}");
    assert!(!server.log().contains("panicked"));
}
