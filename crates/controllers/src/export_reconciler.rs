//! KubeVirt's VirtualMachineExport controller as a pure function: the export expires (deleted)
//! at its creation + `ttlDuration`; without `spec.tokenSecretRef` it gets a Secret
//! `export-token-<export>` (owned by it, key `token`, Event `SecretCreated`) once its source can
//! be exported; its status is KubeVirt's: `phase` Pending/Ready, the `Ready` condition with
//! KubeVirt's reason and message (a running VM is `InUse`: "Virtual Machine ns/name is
//! running"), `links.internal/external` (this server's URL and CA, per-volume formats, the
//! manifests), `tokenSecretRef`, `ttlExpirationTime`, `virtualMachineName`, `serviceName`.
//! The export's bytes are served by the API server (`apiserver::export_api`), which checks the
//! same rules again at every request.

use std::time::Duration;

use ferrovirt_api::export::{self as api, ExportPhase, reason};
use ferrovirt_resources::export::{SourceState, links};
use ferrovirt_resources::{SECRETS, VM_EXPORTS};
use serde_json::{Value, json};

use crate::action::{Action, Key};
use crate::events::EventType;
use crate::runtime::meta_str;

/// Where this server serves exports: its URL (`https://host:port`) and its CA (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEndpoint {
    pub server_url: String,
    pub ca_pem: String,
}

/// What an export's reconcile sees.
pub struct ExportWorld<'a> {
    pub source: SourceState,
    /// The Secret named by `status.tokenSecretRef`/the default exists.
    pub token_secret_exists: bool,
    pub now_unix: i64,
    pub now_rfc3339: String,
    /// When the export expires, RFC 3339 and Unix (`None`: no creation time yet).
    pub expires: Option<(i64, String)>,
    pub endpoint: Option<&'a ExportEndpoint>,
    /// A fresh token, used only when the default Secret is created.
    pub fresh_token: String,
}

/// The name of the token Secret: `spec.tokenSecretRef`, else KubeVirt's default.
pub fn token_secret_name(export: &Value) -> String {
    export
        .pointer("/spec/tokenSecretRef")
        .and_then(Value::as_str)
        .map_or_else(
            || api::default_token_secret_name(meta_str(export, "name")),
            str::to_owned,
        )
}

fn condition(old: Option<&Value>, ready: bool, reason: &str, message: &str, now: &str) -> Value {
    let status = if ready { "True" } else { "False" };
    let same = old.is_some_and(|c| {
        c.get("status").and_then(Value::as_str) == Some(status)
            && c.get("reason").and_then(Value::as_str) == Some(reason)
    });
    let transition = old
        .filter(|_| same)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    let mut c = json!({
        "type": "Ready",
        "status": status,
        "reason": reason,
        "lastTransitionTime": transition,
        "lastProbeTime": null,
    });
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    c
}

/// The actions for one export.
pub fn reconcile_export(export: &Value, world: &ExportWorld<'_>) -> Vec<Action> {
    if export.pointer("/metadata/deletionTimestamp").is_some() {
        return Vec::new();
    }
    let ns = meta_str(export, "namespace");
    let name = meta_str(export, "name");
    let key = Key::Export {
        namespace: ns.to_owned(),
        name: name.to_owned(),
    };
    let mut actions = Vec::new();
    if let Some((expires, _)) = &world.expires {
        if world.now_unix >= *expires {
            return vec![Action::Delete {
                resource: VM_EXPORTS,
                namespace: Some(ns.to_owned()),
                name: name.to_owned(),
            }];
        }
        actions.push(Action::Requeue {
            key: key.clone(),
            after: Duration::from_secs(u64::try_from(expires - world.now_unix).unwrap_or(1)),
        });
    }
    let secret_name = token_secret_name(export);
    let user_secret = export.pointer("/spec/tokenSecretRef").is_some();
    let ready_source = matches!(world.source, SourceState::Ready { .. });
    if !user_secret && ready_source && !world.token_secret_exists {
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret_name,
                "namespace": ns,
                "ownerReferences": [{
                    "apiVersion": api::EXPORT_API_VERSION,
                    "kind": "VirtualMachineExport",
                    "name": name,
                    "uid": meta_str(export, "uid"),
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "type": "Opaque",
            "stringData": {api::SECRET_TOKEN_KEY: world.fresh_token},
        });
        actions.push(Action::Create {
            resource: SECRETS,
            object: secret,
        });
        actions.push(Action::event(
            export,
            EventType::Normal,
            "SecretCreated",
            &format!("Created default secret {ns}/{secret_name}"),
        ));
    }
    let old = export.get("status");
    let old_ready = old
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    let mut status = json!({
        "serviceName": format!("virt-export-{}", name.replace('.', "-")),
    });
    if user_secret || ready_source || world.token_secret_exists {
        status["tokenSecretRef"] = json!(secret_name);
    }
    if let Some((_, expires)) = &world.expires {
        status["ttlExpirationTime"] = json!(expires);
    }
    let now = world.now_rfc3339.as_str();
    match &world.source {
        SourceState::Ready { volumes, vm } => {
            let token_ready = user_secret || world.token_secret_exists;
            match (world.endpoint, token_ready) {
                (Some(endpoint), true) => {
                    status["phase"] = json!(ExportPhase::Ready);
                    status["conditions"] =
                        json!([condition(old_ready, true, reason::POD_READY, "", now)]);
                    status["links"] = json!(links(
                        &endpoint.server_url,
                        &endpoint.ca_pem,
                        ns,
                        name,
                        volumes,
                        vm.is_some()
                    ));
                }
                (None, _) => {
                    status["phase"] = json!(ExportPhase::Pending);
                    status["conditions"] = json!([condition(
                        old_ready,
                        false,
                        reason::INITIALIZING,
                        "this server serves no exports (no TLS endpoint)",
                        now
                    )]);
                }
                (Some(_), false) => {
                    status["phase"] = json!(ExportPhase::Pending);
                    status["conditions"] =
                        json!([condition(old_ready, false, reason::INITIALIZING, "", now)]);
                }
            }
            if let Some(vm) = vm {
                status["virtualMachineName"] = json!(meta_str(vm, "name"));
            }
        }
        SourceState::NotReady {
            reason,
            message,
            vm_name,
        } => {
            status["phase"] = json!(ExportPhase::Pending);
            status["conditions"] = json!([condition(old_ready, false, reason, message, now)]);
            if let Some(vm) = vm_name {
                status["virtualMachineName"] = json!(vm);
            }
        }
    }
    if old != Some(&status) {
        let mut updated = export.clone();
        updated["status"] = status;
        actions.push(Action::UpdateStatus {
            resource: VM_EXPORTS,
            object: updated,
        });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_resources::export::{ExportedVolume, VolumeContent};

    fn export(spec: Value) -> Value {
        json!({
            "apiVersion": "export.kubevirt.io/v1beta1",
            "kind": "VirtualMachineExport",
            "metadata": {"name": "e", "namespace": "default", "uid": "u1",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec,
        })
    }

    fn world(
        source: SourceState,
        secret: bool,
        endpoint: Option<&ExportEndpoint>,
    ) -> ExportWorld<'_> {
        ExportWorld {
            source,
            token_secret_exists: secret,
            now_unix: 100,
            now_rfc3339: "2026-01-01T00:01:40Z".into(),
            expires: Some((7300, "2026-01-01T02:00:00Z".into())),
            endpoint,
            fresh_token: "T0KEN".into(),
        }
    }

    fn ready_vm() -> SourceState {
        SourceState::Ready {
            volumes: vec![ExportedVolume {
                name: "persistent-state-for-vm-x1".into(),
                content: VolumeContent::Files {
                    volume: "pvc-1".into(),
                },
                claim_spec: Value::Null,
            }],
            vm: Some(json!({"metadata": {"name": "vm", "namespace": "default"}})),
        }
    }

    fn status_of(actions: &[Action]) -> Value {
        actions
            .iter()
            .find_map(|a| match a {
                Action::UpdateStatus { object, .. } => Some(object["status"].clone()),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn a_running_vm_is_in_use_with_kubevirts_message() {
        let e = export(
            json!({"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}}),
        );
        let source = SourceState::NotReady {
            reason: reason::IN_USE,
            message: "Virtual Machine default/vm is running".into(),
            vm_name: Some("vm".into()),
        };
        let endpoint = ExportEndpoint {
            server_url: "https://127.0.0.1:1".into(),
            ca_pem: "CA".into(),
        };
        let actions = reconcile_export(&e, &world(source, false, Some(&endpoint)));
        assert!(!actions.iter().any(|a| matches!(a, Action::Create { .. })));
        let status = status_of(&actions);
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["conditions"][0]["reason"], "InUse");
        assert_eq!(
            status["conditions"][0]["message"],
            "Virtual Machine default/vm is running"
        );
        assert_eq!(status["virtualMachineName"], "vm");
        assert!(status.get("links").is_none());
    }

    #[test]
    fn default_secret_then_ready_with_links() {
        let e = export(
            json!({"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}}),
        );
        let endpoint = ExportEndpoint {
            server_url: "https://10.0.0.1:6443".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n".into(),
        };
        let actions = reconcile_export(&e, &world(ready_vm(), false, Some(&endpoint)));
        let secret = actions
            .iter()
            .find_map(|a| match a {
                Action::Create { object, .. } => Some(object.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(secret["metadata"]["name"], "export-token-e");
        assert_eq!(secret["stringData"]["token"], "T0KEN");
        assert_eq!(
            secret["metadata"]["ownerReferences"][0]["kind"],
            "VirtualMachineExport"
        );
        assert_eq!(status_of(&actions)["phase"], "Pending");

        let actions = reconcile_export(&e, &world(ready_vm(), true, Some(&endpoint)));
        let status = status_of(&actions);
        assert_eq!(status["phase"], "Ready");
        assert_eq!(status["tokenSecretRef"], "export-token-e");
        assert_eq!(status["ttlExpirationTime"], "2026-01-01T02:00:00Z");
        let external = &status["links"]["external"];
        assert_eq!(external["cert"], endpoint.ca_pem.trim());
        assert_eq!(
            external["volumes"][0]["formats"],
            json!([
                {"format": "dir", "url": "https://10.0.0.1:6443/api/export.kubevirt.io/v1beta1/namespaces/default/virtualmachineexports/e/volumes/persistent-state-for-vm-x1/dir/"},
                {"format": "tar.gz", "url": "https://10.0.0.1:6443/api/export.kubevirt.io/v1beta1/namespaces/default/virtualmachineexports/e/volumes/persistent-state-for-vm-x1/disk.tar.gz"},
            ])
        );
        assert_eq!(
            external["manifests"],
            json!([
                {"type": "all", "url": "https://10.0.0.1:6443/api/export.kubevirt.io/v1beta1/namespaces/default/virtualmachineexports/e/external/manifests/all"},
                {"type": "auth-header-secret", "url": "https://10.0.0.1:6443/api/export.kubevirt.io/v1beta1/namespaces/default/virtualmachineexports/e/external/manifests/secret"},
            ])
        );
        assert_eq!(
            status["links"]["internal"]["manifests"][0]["url"],
            "https://10.0.0.1:6443/api/export.kubevirt.io/v1beta1/namespaces/default/virtualmachineexports/e/internal/manifests/all"
        );
    }

    #[test]
    fn a_user_secret_is_never_created_and_expiry_deletes() {
        let e = export(
            json!({"source": {"kind": "PersistentVolumeClaim", "name": "p"}, "tokenSecretRef": "mine"}),
        );
        let endpoint = ExportEndpoint {
            server_url: "https://h:1".into(),
            ca_pem: "CA".into(),
        };
        let actions = reconcile_export(&e, &world(ready_vm(), false, Some(&endpoint)));
        assert!(!actions.iter().any(|a| matches!(a, Action::Create { .. })));
        assert_eq!(status_of(&actions)["tokenSecretRef"], "mine");
        let mut late = world(ready_vm(), true, Some(&endpoint));
        late.now_unix = 7300;
        assert_eq!(
            reconcile_export(&e, &late),
            vec![Action::Delete {
                resource: VM_EXPORTS,
                namespace: Some("default".into()),
                name: "e".into()
            }]
        );
    }
}
