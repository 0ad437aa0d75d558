//! What ferrovirt serializes validates against KubeVirt's OpenAPI schema (swagger.json).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use ferrovirt_api::config::{default_kubevirt, default_storage_class};
use ferrovirt_api::parse::parse_documents;
use ferrovirt_api::{Object, defaults};
use serde_json::{Value, json};

fn swagger_definitions() -> Value {
    let text =
        std::fs::read_to_string(common::fixtures_dir().join("kubevirt-swagger.json")).unwrap();
    let swagger: Value = serde_json::from_str(&text).unwrap();
    swagger["definitions"].clone()
}

fn validator(definitions: &Value, definition: &str) -> jsonschema::Validator {
    let schema = json!({
        "$ref": format!("#/definitions/{definition}"),
        "definitions": definitions,
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(false)
        .build(&schema)
        .unwrap()
}

fn assert_valid(validator: &jsonschema::Validator, value: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:#?}");
}

#[test]
fn serialized_objects_match_kubevirt_openapi_schema() {
    let definitions = swagger_definitions();
    let vm_schema = validator(&definitions, "v1.VirtualMachine");
    let vmi_schema = validator(&definitions, "v1.VirtualMachineInstance");
    let kv_schema = validator(&definitions, "v1.KubeVirt");
    let mut checked = 0;
    for path in common::manifest_fixtures() {
        let bytes = std::fs::read(&path).unwrap();
        for object in parse_documents(&bytes, "f").unwrap() {
            let what = format!("{path:?}");
            match object {
                Object::VirtualMachine(mut vm) => {
                    assert_valid(&vm_schema, &serde_json::to_value(&*vm).unwrap(), &what);
                    defaults::apply_vm_defaults(&mut vm);
                    assert_valid(&vm_schema, &serde_json::to_value(&*vm).unwrap(), &what);
                }
                Object::VirtualMachineInstance(mut vmi) => {
                    assert_valid(&vmi_schema, &serde_json::to_value(&*vmi).unwrap(), &what);
                    defaults::apply_vmi_defaults(&mut vmi);
                    assert_valid(&vmi_schema, &serde_json::to_value(&*vmi).unwrap(), &what);
                }
                Object::KubeVirt(kv) => {
                    assert_valid(&kv_schema, &serde_json::to_value(&*kv).unwrap(), &what);
                }
                other => panic!("unexpected fixture kind {}", other.kind()),
            }
            checked += 1;
        }
    }
    assert!(checked >= 14);
    assert_valid(
        &kv_schema,
        &serde_json::to_value(default_kubevirt()).unwrap(),
        "embedded KubeVirt",
    );
}

#[test]
fn the_schema_check_can_fail() {
    let definitions = swagger_definitions();
    let vm_schema = validator(&definitions, "v1.VirtualMachine");
    let bad = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "spec": {"running": "yes", "template": {"spec": {"domain": {"devices": {}}}}}});
    assert!(!vm_schema.is_valid(&bad));
    let missing_template =
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "spec": {}});
    assert!(!vm_schema.is_valid(&missing_template));
}

#[test]
fn embedded_storage_class_has_kubernetes_shape() {
    let sc = serde_json::to_value(default_storage_class()).unwrap();
    assert_eq!(sc["apiVersion"], "storage.k8s.io/v1");
    assert_eq!(sc["provisioner"], "ferrovirt.io/local-path");
    assert_eq!(
        sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
}
