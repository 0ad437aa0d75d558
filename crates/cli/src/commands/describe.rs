//! `ferrovirt describe vm NAME`: a VirtualMachine for people: what its spec asks for (firmware,
//! TPM, which state persists), its status and conditions, its instance, the backend-storage PVC
//! that holds its TPM and UEFI state, and its events.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use ferrovirt_resources::{EVENTS, PVCS, VMIS, VMS};
use serde_json::Value;

use crate::client::{Client, ClientArgs, ClientError, with_query};
use crate::output::format_rows;
use crate::resource;

/// Arguments of `ferrovirt describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The type (only VirtualMachines: vm).
    #[arg(value_name = "TYPE")]
    pub kind: String,
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(args: &DescribeArgs) -> ExitCode {
    match describe(args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => e.report(),
    }
}

fn describe(args: &DescribeArgs) -> Result<String, ClientError> {
    if resource::resolve(&args.kind)? != VMS {
        return Err(ClientError::Usage(format!(
            "describe supports VirtualMachines only (ferrovirt describe vm NAME); use `ferrovirt get {} -o yaml`",
            args.kind
        )));
    }
    let client = Client::from_args(&args.client)?;
    let ns = client.namespace();
    let vm = client.get(&resource::item_path(&VMS, ns, &args.name))?;
    let vmi = client.get(&resource::item_path(&VMIS, ns, &args.name)).ok();
    let pvcs = client
        .get(&with_query(
            &resource::collection_path(&PVCS, Some(ns)),
            &[(
                "labelSelector",
                &format!("persistent-state-for={}", args.name),
            )],
        ))
        .ok();
    let events = client
        .get(&with_query(
            &resource::collection_path(&EVENTS, Some(ns)),
            &[(
                "fieldSelector",
                &format!("involvedObject.name={}", args.name),
            )],
        ))
        .ok();
    let items = |list: Option<Value>| -> Vec<Value> {
        list.and_then(|l| l.get("items").and_then(Value::as_array).cloned())
            .unwrap_or_default()
    };
    Ok(render(&vm, vmi.as_ref(), &items(pvcs), &items(events)))
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn or_none(text: &str) -> &str {
    if text.is_empty() { "<none>" } else { text }
}

/// `none`, `ephemeral` or `persistent`, as KubeVirt reads `devices.tpm`.
pub fn tpm_summary(domain: &Value) -> &'static str {
    match domain.pointer("/devices/tpm") {
        None | Some(Value::Null) => "none",
        Some(tpm) if tpm.get("enabled") == Some(&Value::Bool(false)) => "none",
        Some(tpm) if tpm.get("persistent") == Some(&Value::Bool(true)) => {
            "persistent (state in the backend-storage PVC)"
        }
        Some(_) => "ephemeral (a fresh TPM every start)",
    }
}

/// `BIOS`, `EFI`, `EFI + Secure Boot`, with `persistent VARS` when the UEFI variables persist.
pub fn firmware_summary(domain: &Value) -> String {
    let Some(efi) = domain.pointer("/firmware/bootloader/efi") else {
        return "BIOS".to_owned();
    };
    // KubeVirt's default: an EFI bootloader has Secure Boot unless it says otherwise.
    let secure_boot = efi.get("secureBoot") != Some(&Value::Bool(false));
    let persistent = efi.get("persistent") == Some(&Value::Bool(true));
    let mut text = if secure_boot {
        "EFI + Secure Boot".to_owned()
    } else {
        "EFI".to_owned()
    };
    text.push_str(if persistent {
        " (persistent VARS in the backend-storage PVC)"
    } else {
        " (ephemeral VARS: a fresh copy every start)"
    });
    text
}

/// The describe text.
pub fn render(vm: &Value, vmi: Option<&Value>, pvcs: &[Value], events: &[Value]) -> String {
    let mut out = String::new();
    let domain = vm
        .pointer("/spec/template/spec/domain")
        .cloned()
        .unwrap_or(Value::Null);
    let labels = vm
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let run_strategy = match vm.pointer("/spec/runStrategy").and_then(Value::as_str) {
        Some(s) => s.to_owned(),
        None => match vm.pointer("/spec/running").and_then(Value::as_bool) {
            Some(true) => "Always (spec.running: true)".to_owned(),
            Some(false) => "Halted (spec.running: false)".to_owned(),
            None => String::new(),
        },
    };
    let memory = domain
        .pointer("/memory/guest")
        .or_else(|| domain.pointer("/resources/requests/memory"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let cpu = domain
        .pointer("/cpu/cores")
        .and_then(Value::as_u64)
        .map(|c| c.to_string())
        .unwrap_or_default();
    let fields = [
        ("Name:", str_at(vm, "/metadata/name").to_owned()),
        ("Namespace:", str_at(vm, "/metadata/namespace").to_owned()),
        ("Labels:", or_none(&labels).to_owned()),
        (
            "Created:",
            str_at(vm, "/metadata/creationTimestamp").to_owned(),
        ),
        ("Run Strategy:", or_none(&run_strategy).to_owned()),
        (
            "Status:",
            or_none(str_at(vm, "/status/printableStatus")).to_owned(),
        ),
        ("CPU cores:", or_none(&cpu).to_owned()),
        ("Memory:", or_none(memory).to_owned()),
        ("Firmware:", firmware_summary(&domain)),
        (
            "Firmware UUID:",
            or_none(str_at(&domain, "/firmware/uuid")).to_owned(),
        ),
        ("TPM:", tpm_summary(&domain).to_owned()),
    ];
    for (label, value) in fields {
        let _ = writeln!(out, "{label:<16}{value}");
    }
    for (kind, pointer) in [
        ("RSA", "/status/tpm/ekCertificateSHA256/rsa"),
        ("ECC", "/status/tpm/ekCertificateSHA256/ecc"),
    ] {
        if let Some(sha) = vm.pointer(pointer).and_then(Value::as_str) {
            let label = format!("EK cert {kind}:");
            let _ = writeln!(
                out,
                "{label:<16}SHA-256 {sha} (ferrovirt tpm ek {name})",
                name = str_at(vm, "/metadata/name")
            );
        }
    }

    let _ = writeln!(out, "Instance:");
    match vmi {
        Some(vmi) => {
            let _ = writeln!(
                out,
                "  Phase:        {}\n  Node:         {}",
                or_none(str_at(vmi, "/status/phase")),
                or_none(str_at(vmi, "/status/nodeName"))
            );
        }
        None => {
            let _ = writeln!(out, "  <none> (not running)");
        }
    }

    let _ = writeln!(out, "Backend Storage:");
    if pvcs.is_empty() {
        let _ = writeln!(out, "  <none>");
    }
    for pvc in pvcs {
        let _ = writeln!(
            out,
            "  PVC {}: {}, {}, storage class {}, volume {}",
            str_at(pvc, "/metadata/name"),
            or_none(str_at(pvc, "/status/phase")),
            or_none(str_at(pvc, "/status/capacity/storage")),
            or_none(str_at(pvc, "/spec/storageClassName")),
            or_none(str_at(pvc, "/spec/volumeName")),
        );
    }

    let _ = writeln!(out, "Conditions:");
    let conditions = vm
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if conditions.is_empty() {
        let _ = writeln!(out, "  <none>");
    } else {
        let mut lines = vec![vec![
            "Type".to_owned(),
            "Status".to_owned(),
            "Reason".to_owned(),
            "Message".to_owned(),
        ]];
        for c in &conditions {
            lines.push(
                ["/type", "/status", "/reason", "/message"]
                    .iter()
                    .map(|p| str_at(c, p).to_owned())
                    .collect(),
            );
        }
        for line in format_rows(&lines).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }

    let _ = writeln!(out, "Events:");
    if events.is_empty() {
        let _ = writeln!(out, "  <none>");
    } else {
        let mut sorted = events.to_vec();
        sorted.sort_by(|a, b| event_time(a).cmp(event_time(b)));
        let mut lines = vec![vec![
            "Type".to_owned(),
            "Reason".to_owned(),
            "Last Seen".to_owned(),
            "From".to_owned(),
            "Message".to_owned(),
        ]];
        for e in &sorted {
            lines.push(vec![
                str_at(e, "/type").to_owned(),
                str_at(e, "/reason").to_owned(),
                event_time(e).to_owned(),
                str_at(e, "/source/component").to_owned(),
                str_at(e, "/message").to_owned(),
            ]);
        }
        for line in format_rows(&lines).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

fn event_time(event: &Value) -> &str {
    [
        "/lastTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .map(|p| str_at(event, p))
    .find(|t| !t.is_empty())
    .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn firmware_and_tpm_summaries() {
        assert_eq!(firmware_summary(&json!({})), "BIOS");
        assert_eq!(
            firmware_summary(&json!({"firmware": {"bootloader": {"efi": {}}}})),
            "EFI + Secure Boot (ephemeral VARS: a fresh copy every start)"
        );
        assert_eq!(
            firmware_summary(
                &json!({"firmware": {"bootloader": {"efi": {"secureBoot": false, "persistent": true}}}})
            ),
            "EFI (persistent VARS in the backend-storage PVC)"
        );
        assert_eq!(tpm_summary(&json!({"devices": {}})), "none");
        assert_eq!(
            tpm_summary(&json!({"devices": {"tpm": {}}})),
            "ephemeral (a fresh TPM every start)"
        );
        assert_eq!(
            tpm_summary(&json!({"devices": {"tpm": {"enabled": false}}})),
            "none"
        );
        assert!(
            tpm_summary(&json!({"devices": {"tpm": {"persistent": true}}}))
                .starts_with("persistent")
        );
    }

    #[test]
    fn describe_text() {
        let vm = json!({
            "metadata": {"name": "demo", "namespace": "default", "labels": {"app": "demo"}},
            "spec": {"runStrategy": "Manual", "template": {"spec": {"domain": {
                "memory": {"guest": "384Mi"},
                "firmware": {"uuid": "u-1", "bootloader": {"efi": {"secureBoot": false, "persistent": true}}},
                "devices": {"tpm": {"persistent": true}}}}}},
            "status": {"printableStatus": "Stopped",
                "tpm": {"ekCertificateSHA256": {"rsa": "ab12", "ecc": null}},
                "conditions": [
                {"type": "Ready", "status": "False", "reason": "VMINotExists", "message": "VMI does not exist"}]}
        });
        let pvc = json!({"metadata": {"name": "persistent-state-for-demo-abc"},
            "spec": {"storageClassName": "local-path", "volumeName": "pvc-1"},
            "status": {"phase": "Bound", "capacity": {"storage": "10Mi"}}});
        let event = json!({"type": "Normal", "reason": "Started", "lastTimestamp": "2026-01-01T00:00:00Z",
            "source": {"component": "virt-handler"}, "message": "VirtualMachineInstance started."});
        let text = render(&vm, None, &[pvc], &[event]);
        assert!(text.contains("Labels:         app=demo"), "{text}");
        assert!(text.contains("TPM:            persistent"), "{text}");
        assert!(
            text.contains("EK cert RSA:    SHA-256 ab12 (ferrovirt tpm ek "),
            "{text}"
        );
        assert!(!text.contains("EK cert ECC"), "{text}");
        assert!(
            text.contains("Firmware:       EFI (persistent VARS"),
            "{text}"
        );
        assert!(
            text.contains(
                "PVC persistent-state-for-demo-abc: Bound, 10Mi, storage class local-path"
            ),
            "{text}"
        );
        assert!(text.contains("Ready   False    VMINotExists"), "{text}");
        assert!(text.contains("Normal   Started"), "{text}");
        assert!(text.contains("<none> (not running)"), "{text}");
    }
}
