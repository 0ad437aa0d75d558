//! Strict field validation (`?fieldValidation=Strict`, what kubectl sends by default): fields the
//! KubeVirt OpenAPI schema does not know are refused with 400, as the Kubernetes API server does
//! (`strict decoding error: unknown field "spec.foo"`). Checked for the kubevirt.io kinds, whose
//! schema ships with ferrovirt (KubeVirt's swagger definitions); `status` is not checked.

use std::sync::OnceLock;

use serde_json::{Map, Value};

fn definitions() -> &'static Map<String, Value> {
    static DEFINITIONS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFINITIONS.get_or_init(|| {
        let mut definitions = crate::discovery::openapi_v2()
            .get("definitions")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        // CDI's http source has gained `checksum` and `insecureSkipVerify` since the CDI API
        // KubeVirt's swagger embeds.
        if let Some(properties) = definitions
            .get_mut("v1beta1.DataVolumeSourceHTTP")
            .and_then(|d| d.get_mut("properties"))
            .and_then(Value::as_object_mut)
        {
            properties.insert("checksum".into(), serde_json::json!({"type": "string"}));
            properties.insert(
                "insecureSkipVerify".into(),
                serde_json::json!({"type": "boolean"}),
            );
        }
        definitions
    })
}

fn resolve(schema: &Value) -> Option<&'static Value> {
    let reference = schema.get("$ref")?.as_str()?;
    definitions().get(reference.strip_prefix("#/definitions/")?)
}

/// Unknown field paths of an object of `kind` (empty for kinds without a schema here).
pub fn unknown_fields(kind: &str, object: &Value) -> Vec<String> {
    if kind == "VirtualMachineTemplateVersion" {
        // Harvester's own fields are open; the VM a version holds is checked like a VM's spec.
        let mut unknown = Vec::new();
        if let (Some(spec), Some(schema)) = (
            object.pointer("/spec/vm/spec"),
            definitions().get("v1.VirtualMachineSpec"),
        ) {
            walk(spec, schema, "spec.vm.spec", &mut unknown, 0);
        }
        unknown.sort();
        return unknown;
    }
    if kind == "DataVolume" {
        // CDI's spec as KubeVirt's swagger carries it (the `dataVolumeTemplates` entries).
        let mut unknown = Vec::new();
        if let (Some(spec), Some(schema)) = (
            object.get("spec"),
            definitions().get("v1beta1.DataVolumeSpec"),
        ) {
            walk(spec, schema, "spec", &mut unknown, 0);
        }
        unknown.sort();
        return unknown;
    }
    let definition = match kind {
        "VirtualMachine" => "v1.VirtualMachine",
        "VirtualMachineInstance" => "v1.VirtualMachineInstance",
        "KubeVirt" => "v1.KubeVirt",
        "VirtualMachineInstancetype" => "v1beta1.VirtualMachineInstancetype",
        "VirtualMachineClusterInstancetype" => "v1beta1.VirtualMachineClusterInstancetype",
        "VirtualMachinePreference" => "v1beta1.VirtualMachinePreference",
        "VirtualMachineClusterPreference" => "v1beta1.VirtualMachineClusterPreference",
        _ => return Vec::new(),
    };
    let Some(schema) = definitions().get(definition) else {
        return Vec::new();
    };
    let mut unknown = Vec::new();
    walk(object, schema, "", &mut unknown, 0);
    unknown.sort();
    unknown
}

fn walk(value: &Value, schema: &Value, path: &str, unknown: &mut Vec<String>, depth: usize) {
    if depth > 64 {
        return;
    }
    let schema = match resolve(schema) {
        Some(resolved) => resolved,
        None => schema,
    };
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, child) in map {
                    if path.is_empty() && key == "status" {
                        continue;
                    }
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match properties.get(key) {
                        Some(child_schema) => {
                            walk(child, child_schema, &child_path, unknown, depth + 1)
                        }
                        None => unknown.push(child_path),
                    }
                }
            } else if let Some(values) =
                schema.get("additionalProperties").filter(|v| v.is_object())
            {
                for (key, child) in map {
                    walk(child, values, &format!("{path}.{key}"), unknown, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(
                        item,
                        item_schema,
                        &format!("{path}[{i}]"),
                        unknown,
                        depth + 1,
                    );
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields_with_paths() {
        let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "a", "labels": {"x": "y"}, "bogus": 1},
            "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {
                "devices": {"tpm": {"persistent": true, "persistant": true}, "disks": [{"name": "d", "disk": {"bus": "virtio"}, "typo": 1}]},
                "memory": {"guest": "1Gi"}}}}},
            "status": {"anything": true}});
        assert_eq!(
            unknown_fields("VirtualMachine", &vm),
            [
                "metadata.bogus",
                "spec.template.spec.domain.devices.disks[0].typo",
                "spec.template.spec.domain.devices.tpm.persistant",
            ]
        );
        assert!(unknown_fields("PersistentVolumeClaim", &vm).is_empty());
        let version = json!({"spec": {"templateId": "default/t", "imageId": "x",
            "vm": {"metadata": {"labels": {}}, "spec": {"runStrategy": "Halted", "templte": {}}}}});
        assert_eq!(
            unknown_fields("VirtualMachineTemplateVersion", &version),
            ["spec.vm.spec.templte"]
        );
    }
}
