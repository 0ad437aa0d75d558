//! `/metrics` of `ferrovirt serve` with the real engine: Prometheus text (OpenMetrics) behind the
//! API's authentication and RBAC (no credentials -> 401, a `view` user -> 403, a user bound to
//! Kubernetes' `system:monitoring` and the admin -> 200),
//! kube-apiserver's request counters that move with requests, and for one firmware-only VM with a
//! persistent TPM (no disk; OVMF runs under TCG): KubeVirt's VMI phase count, CPU and resident
//! memory of its QEMU, the first-start latency, and after a stop the stop latency and its state
//! generations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;

use std::time::Duration;

use server::{Server, cluster_role_binding, manifest, send};

const VIEWER_TOKEN: &str = "viewer-token-metrics-0123456789";

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
        devices:
          tpm:
            persistent: true
        memory:
          guest: 128Mi
"
    )
}

fn scrape(server: &Server) -> String {
    let (code, head, body) = send(&server.endpoint(), "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(head.contains("application/openmetrics-text"), "{head}");
    String::from_utf8(body).unwrap()
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[test]
fn metrics_are_protected_named_as_kubevirt_and_move_with_a_vm() {
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

    // Authentication and authorization as for every other path.
    let anonymous = server.endpoint().with_token(None);
    let (code, _, _) = send(&anonymous, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(code, 401);
    let viewer = server.endpoint().with_token(Some(VIEWER_TOKEN));
    let (code, _, body) = send(&viewer, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    // Kubernetes' `system:monitoring` role is what a scraper's user is bound to.
    let monitoring = manifest(
        &server,
        "monitoring.yaml",
        &cluster_role_binding("victor-monitoring", "system:monitoring", "victor"),
    );
    server.kubectl_ok(&["apply", "-f", monitoring.to_str().unwrap()]);
    server.wait_for(
        "the monitoring binding to apply",
        Duration::from_secs(10),
        || {
            let (code, _, _) = send(&viewer, "GET", "/metrics", &[], b"").unwrap();
            (code == 200).then_some(())
        },
    );

    // Request counters move with requests.
    let list = r#"apiserver_request_total{verb="LIST",group="kubevirt.io",resource="virtualmachines",subresource="",code="200"}"#;
    let before = sample(&scrape(&server), list).unwrap_or(0.0);
    for _ in 0..3 {
        let (code, _) = server.json("GET", "/apis/kubevirt.io/v1/virtualmachines", None);
        assert_eq!(code, 200);
    }
    let text = scrape(&server);
    assert_eq!(sample(&text, list), Some(before + 3.0), "{text}");
    assert!(text.contains("# TYPE apiserver_request_duration_seconds histogram"));
    assert!(text.ends_with("# EOF\n"));

    // One VM: phase, CPU, memory and the first start (its TPM was manufactured).
    let name = format!("metrics-{}", server.port);
    let path = manifest(&server, "vm.yaml", &vm_manifest(&name));
    server.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    server.wait_for("the VMI to run", Duration::from_secs(120), || {
        let out = server.kubectl(&["get", "vmi", &name, "-o", "jsonpath={.status.phase}"]);
        (String::from_utf8_lossy(&out.stdout) == "Running").then_some(())
    });
    let labels = format!(r#"{{namespace="default",name="{name}","#);
    let text = server.wait_for(
        "the VM's usage in the metrics",
        Duration::from_secs(30),
        || {
            let text = scrape(&server);
            sample(
                &text,
                &format!("kubevirt_vmi_cpu_usage_seconds_total{labels}"),
            )
            .is_some_and(|cpu| cpu > 0.0)
            .then_some(text)
        },
    );
    assert!(
        sample(
            &text,
            &format!("kubevirt_vmi_memory_resident_bytes{labels}")
        )
        .is_some_and(|rss| rss > 1e6),
        "{text}"
    );
    assert!(
        sample(&text, r#"kubevirt_vmi_phase_count{phase="running","#) == Some(1.0),
        "{text}"
    );
    let starts: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ferrovirt_vm_start"))
        .collect();
    assert_eq!(
        sample(
            &text,
            r#"ferrovirt_vm_start_duration_seconds_count{first="true"}"#
        ),
        Some(1.0),
        "the first start is counted once as first=\"true\":\n{}\nserver log:\n{}",
        starts.join("\n"),
        server.log()
    );

    // Stop: the stop latency and the state generations it recorded.
    let stop =
        format!("/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/{name}/stop");
    let (code, body) = server.json("PUT", &stop, None);
    assert!(code == 202 || code == 200, "{code} {body}");
    let text = server.wait_for("the stop in the metrics", Duration::from_secs(60), || {
        let text = scrape(&server);
        (sample(&text, "ferrovirt_vm_stop_duration_seconds_count") == Some(1.0)).then_some(text)
    });
    assert!(
        sample(
            &text,
            &format!(r#"ferrovirt_state_generations{{namespace="default",name="{name}","#)
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        !text.contains(&format!("kubevirt_vmi_cpu_usage_seconds_total{labels}")),
        "no usage once QEMU is gone:\n{text}"
    );
}
