//! Discovery documents kubectl reads before anything else: `/version`, `/api`, `/apis`,
//! `/api/v1`, `/apis/<group>`, `/apis/<group>/<version>`, and the OpenAPI v2 document (KubeVirt's
//! swagger definitions) that `kubectl apply` validates manifests against.

use serde_json::{Value, json};

use ferrovirt_resources::{self as resources, GROUP_VERSIONS, SUBRESOURCES_GROUP, VERBS};

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": concat!("v1.32.0-ferrovirt-", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

/// `GET /api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

fn api_group(group: &str, version: &str) -> Value {
    let gv = format!("{group}/{version}");
    json!({
        "name": group,
        "versions": [{"groupVersion": gv, "version": version}],
        "preferredVersion": {"groupVersion": gv, "version": version},
    })
}

/// `GET /apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = GROUP_VERSIONS
        .iter()
        .map(|(g, v)| api_group(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`.
pub fn group(group: &str) -> Option<Value> {
    let (g, v) = GROUP_VERSIONS.iter().find(|(g, _)| *g == group)?;
    let mut doc = api_group(g, v);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `GET /api/v1`, `GET /apis/<group>/<version>`: an APIResourceList.
pub fn resource_list(group: &str, version: &str) -> Value {
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    let mut list: Vec<Value> = Vec::new();
    for r in resources::in_group_version(group, version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            // CDI's UploadTokenRequests are answered, never stored: create only.
            "verbs": if r.plural == "uploadtokenrequests" { json!(["create"]) } else { json!(VERBS) },
            "storageVersionHash": "",
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        list.push(entry);
        if matches!(
            r.plural,
            "virtualmachines"
                | "virtualmachineinstances"
                | "persistentvolumeclaims"
                | "namespaces"
                | "virtualmachinesnapshots"
                | "virtualmachinesnapshotcontents"
                | "virtualmachinerestores"
                | "virtualmachineclones"
                | "datavolumes"
                | "virtualmachineexports"
                | "virtualmachineinstancemigrations"
        ) {
            list.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if group == SUBRESOURCES_GROUP {
        for action in ["start", "stop", "restart"] {
            list.push(json!({
                "name": format!("virtualmachines/{action}"),
                "singularName": "",
                "namespaced": true,
                "kind": "VirtualMachine",
                "verbs": ["update"],
            }));
        }
        for subresource in ["console", "vnc", "vnc/screenshot", "guestosinfo"] {
            list.push(json!({
                "name": format!("virtualmachineinstances/{subresource}"),
                "singularName": "",
                "namespaced": true,
                "kind": "VirtualMachineInstance",
                "verbs": ["get"],
            }));
        }
        // KubeVirt's port-forward (a WebSocket to `.../portforward/PORT[/PROTOCOL]`), of an
        // instance and of a VM (its instance).
        for (plural, kind) in [
            ("virtualmachineinstances", "VirtualMachineInstance"),
            ("virtualmachines", "VirtualMachine"),
        ] {
            list.push(json!({
                "name": format!("{plural}/portforward"),
                "singularName": "",
                "namespaced": true,
                "kind": kind,
                "verbs": ["get"],
            }));
        }
        // ferrovirt's own: the TPM's EK credentials and the UEFI variables of a VM.
        for (subresource, verbs) in [
            ("tpm/ek", json!(["get"])),
            ("efivars", json!(["get", "update", "delete"])),
        ] {
            list.push(json!({
                "name": format!("virtualmachines/{subresource}"),
                "singularName": "",
                "namespaced": true,
                "kind": "VirtualMachine",
                "verbs": verbs,
            }));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
}

/// KubeVirt's swagger document (OpenAPI v2), with `x-kubernetes-group-version-kind` on the
/// top-level kinds so kubectl can find the schema of each object it applies.
pub fn openapi_v2() -> Value {
    let mut doc: Value = serde_json::from_str(include_str!(
        "../../api/tests/fixtures/kubevirt-swagger.json"
    ))
    .unwrap_or_else(|_| json!({"swagger": "2.0", "info": {"title": "ferrovirt", "version": "v1"}, "paths": {}, "definitions": {}}));
    if let Some(definitions) = doc.get_mut("definitions").and_then(Value::as_object_mut) {
        for (name, kind) in [
            ("v1.VirtualMachine", "VirtualMachine"),
            ("v1.VirtualMachineInstance", "VirtualMachineInstance"),
            ("v1.KubeVirt", "KubeVirt"),
        ] {
            if let Some(def) = definitions.get_mut(name).and_then(Value::as_object_mut) {
                def.entry("x-kubernetes-group-version-kind").or_insert_with(
                    || json!([{"group": "kubevirt.io", "version": "v1", "kind": kind}]),
                );
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_name_short_names_and_verbs() {
        let list = resource_list("kubevirt.io", "v1");
        let vm = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "virtualmachines")
            .unwrap();
        assert_eq!(vm["kind"], "VirtualMachine");
        assert_eq!(vm["shortNames"], json!(["vm", "vms"]));
        assert_eq!(vm["namespaced"], true);
        assert!(vm["verbs"].as_array().unwrap().contains(&json!("watch")));
        let core = resource_list("", "v1");
        assert_eq!(core["groupVersion"], "v1");
        assert!(core["resources"].as_array().unwrap().iter().any(|r| r["name"] == "persistentvolumeclaims" && r["shortNames"] == json!(["pvc"])));
        let sub = resource_list(SUBRESOURCES_GROUP, "v1");
        assert!(
            sub["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "virtualmachines/start")
        );
    }

    #[test]
    fn openapi_marks_kinds() {
        let doc = openapi_v2();
        assert_eq!(
            doc["definitions"]["v1.VirtualMachine"]["x-kubernetes-group-version-kind"][0]["kind"],
            "VirtualMachine"
        );
    }
}
