//! Every KubeVirt example and completed seed manifest passes admission and round-trips
//! (parse -> serialize -> parse) with no field lost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use ferrovirt_api::config::ClusterConfig;
use ferrovirt_api::parse::{parse_documents, parse_values};
use ferrovirt_api::validation::{AdmissionContext, admit};
use ferrovirt_api::{Object, defaults};

#[test]
fn every_fixture_passes_admission_with_the_embedded_configuration() {
    let config = ClusterConfig::embedded_default();
    for path in common::manifest_fixtures() {
        let bytes = std::fs::read(&path).unwrap();
        let objects = parse_documents(&bytes, &path.display().to_string()).unwrap();
        assert!(!objects.is_empty(), "{path:?}");
        for mut object in objects {
            assert!(
                !matches!(object, Object::Unknown(_)),
                "{path:?}: unknown kind"
            );
            if let Object::VirtualMachine(vm) = &mut object {
                defaults::apply_vm_defaults(vm);
            }
            if let Err(invalid) = admit(&object, &AdmissionContext::create(&config)) {
                panic!("{path:?}: {invalid}");
            }
        }
    }
}

#[test]
fn every_fixture_round_trips_without_losing_a_field() {
    for path in common::manifest_fixtures() {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.display().to_string();
        let raw = parse_values(&bytes, &name).unwrap();
        let objects = parse_documents(&bytes, &name).unwrap();
        assert_eq!(raw.len(), objects.len());
        for (raw, object) in raw.iter().zip(&objects) {
            let serialized = object.to_json().unwrap();
            assert_eq!(
                &serialized, raw,
                "{path:?}: serialization changed the manifest"
            );
            // And again through text: JSON and YAML.
            let json_text = serde_json::to_string(&serialized).unwrap();
            let again = parse_documents(json_text.as_bytes(), "again.json").unwrap();
            assert_eq!(again.len(), 1);
            assert_eq!(&again[0], object, "{path:?}: JSON round trip");
            let yaml_text = serde_saphyr::to_string(&serialized).unwrap();
            let again = parse_documents(yaml_text.as_bytes(), "again.yaml").unwrap();
            assert_eq!(&again[0], object, "{path:?}: YAML round trip");
        }
    }
}

#[test]
fn defaults_only_add_fields() {
    for path in common::manifest_fixtures() {
        let bytes = std::fs::read(&path).unwrap();
        for object in parse_documents(&bytes, "f").unwrap() {
            let Object::VirtualMachine(mut vm) = object else {
                continue;
            };
            let before = serde_json::to_value(&*vm).unwrap();
            defaults::apply_vm_defaults(&mut vm);
            let mut after = serde_json::to_value(&*vm).unwrap();
            // Remove exactly the defaulted fields; what remains is the original manifest.
            let spec = after.pointer_mut("/spec/template/spec").unwrap();
            let had_arch = before.pointer("/spec/template/spec/architecture").is_some();
            if !had_arch {
                spec.as_object_mut().unwrap().remove("architecture");
            }
            let domain = spec.get_mut("domain").unwrap().as_object_mut().unwrap();
            if before
                .pointer("/spec/template/spec/domain/machine")
                .is_none()
            {
                domain.remove("machine");
            }
            let firmware = domain.get_mut("firmware").unwrap().as_object_mut().unwrap();
            assert!(firmware.remove("uuid").is_some());
            assert!(firmware.remove("serial").is_some());
            if firmware.is_empty()
                && before
                    .pointer("/spec/template/spec/domain/firmware")
                    .is_none()
            {
                domain.remove("firmware");
            }
            assert_eq!(after, before, "{path:?}");
        }
    }
}

#[test]
fn extra_tpm_keys_and_explicit_false_survive() {
    let text = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: vm\nspec:\n  runStrategy: Halted\n  template:\n    spec:\n      domain:\n        devices:\n          tpm:\n            persistent: false\n            futureKey: {nested: [1, 2]}\n        memory: {guest: 1Gi}\n        firmware:\n          bootloader:\n            efi: {}\n";
    let objects = parse_documents(text.as_bytes(), "t").unwrap();
    let json = objects[0].to_json().unwrap();
    assert_eq!(
        json.pointer("/spec/template/spec/domain/devices/tpm")
            .unwrap(),
        &serde_json::json!({"persistent": false, "futureKey": {"nested": [1, 2]}})
    );
    assert_eq!(
        json.pointer("/spec/template/spec/domain/firmware/bootloader/efi")
            .unwrap(),
        &serde_json::json!({})
    );
}

#[test]
fn harvester_fixture_exposes_the_engine_view() {
    let bytes =
        std::fs::read(common::fixtures_dir().join("seeds/harvester-windows11-persistent-tpm.yaml"))
            .unwrap();
    let objects = parse_documents(&bytes, "h").unwrap();
    let Object::VirtualMachine(vm) = &objects[0] else {
        panic!("not a VM")
    };
    let spec = &vm.spec.template.as_ref().unwrap().spec;
    assert_eq!(
        spec.tpm_mode(),
        ferrovirt_api::kubevirt::TpmMode::Persistent
    );
    assert_eq!(
        spec.efi_mode(),
        Some(ferrovirt_api::kubevirt::EfiMode {
            secure_boot: true,
            persistent: true
        })
    );
    assert!(spec.needs_backend_storage());
    assert_eq!(
        spec.domain.devices.tpm.as_ref().unwrap().extra.get("model"),
        Some(&serde_json::json!("tpm-crb"))
    );
}

#[test]
fn seed_kubevirt_cr_becomes_a_cluster_config() {
    let bytes =
        std::fs::read(common::fixtures_dir().join("seeds/kubevirt-doc-kubevirt-cr.yaml")).unwrap();
    let objects = parse_documents(&bytes, "k").unwrap();
    let Object::KubeVirt(kv) = &objects[0] else {
        panic!("not KubeVirt")
    };
    let config = ClusterConfig::from_kubevirt(kv);
    assert!(config.vm_persistent_state_enabled());
    assert!(!config.host_disk_enabled());
    assert_eq!(config.vm_state_storage_class.as_deref(), Some("nfs-csi"));
}
