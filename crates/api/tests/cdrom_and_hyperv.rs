//! CD-ROMs (KubeVirt's defaults: sata, read-only, tray closed; its bus and tray rules) and the
//! Hyper-V enlightenments (KubeVirt's defaulter and its dependency messages).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use ferrovirt_api::config::ClusterConfig;
use ferrovirt_api::kubevirt::VirtualMachineInstance;
use ferrovirt_api::parse::parse_documents;
use ferrovirt_api::status::StatusCause;
use ferrovirt_api::validation::{AdmissionContext, admit};
use ferrovirt_api::{Object, defaults};
use serde_json::{Value, json};

const P: &str = "spec.template.spec";

fn vm(domain_extra: Value, disks: Value, volumes: Value) -> Value {
    let mut domain = json!({"devices": {"disks": disks}, "memory": {"guest": "1Gi"}});
    if let (Some(d), Some(extra)) = (domain.as_object_mut(), domain_extra.as_object()) {
        for (k, v) in extra {
            d.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm"},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": domain, "volumes": volumes}}}
    })
}

fn object(value: &Value) -> Object {
    let text = serde_json::to_string(value).unwrap();
    parse_documents(text.as_bytes(), "test.json")
        .unwrap()
        .remove(0)
}

fn causes(value: &Value) -> Vec<StatusCause> {
    match admit(
        &object(value),
        &AdmissionContext::create(&ClusterConfig::embedded_default()),
    ) {
        Ok(()) => Vec::new(),
        Err(invalid) => invalid.causes,
    }
}

fn iso_volume() -> Value {
    json!([{"name": "install", "hostDisk": {"path": "/var/lib/ferrovirt/images/x.iso", "type": "Disk"}}])
}

#[test]
fn a_cdrom_is_admitted_and_defaulted_as_kubevirt_does() {
    let value = vm(
        json!({}),
        json!([{"name": "install", "cdrom": {}, "bootOrder": 1}]),
        iso_volume(),
    );
    assert!(causes(&value).is_empty(), "{:?}", causes(&value));
    let mut vmi_value = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "vmi"},
        "spec": value["spec"]["template"]["spec"].clone(),
    });
    let Object::VirtualMachineInstance(mut vmi) = object(&vmi_value) else {
        panic!("not a VMI")
    };
    defaults::apply_vmi_defaults(&mut vmi);
    let cdrom = vmi.spec.domain.devices.disks()[0].cdrom.clone().unwrap();
    assert_eq!(cdrom.bus.as_deref(), Some("sata"));
    assert_eq!(cdrom.read_only, Some(true));
    assert_eq!(cdrom.tray.as_deref(), Some("closed"));
    // And it serializes back with KubeVirt's spelling.
    let back = serde_json::to_value::<&VirtualMachineInstance>(&vmi).unwrap();
    vmi_value = back["spec"]["domain"]["devices"]["disks"][0].clone();
    assert_eq!(
        vmi_value,
        json!({"name": "install", "cdrom": {"bus": "sata", "readonly": true, "tray": "closed"}, "bootOrder": 1})
    );
}

#[test]
fn cdrom_bus_and_tray_rules() {
    let virtio = vm(
        json!({}),
        json!([{"name": "install", "cdrom": {"bus": "virtio"}}]),
        iso_volume(),
    );
    let found = causes(&virtio);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].field,
        format!("{P}.domain.devices.disks[0].cdrom.bus")
    );
    assert_eq!(
        found[0].message,
        "Bus type virtio is invalid for CD-ROM device"
    );

    let scsi = vm(
        json!({}),
        json!([{"name": "install", "cdrom": {"bus": "scsi", "tray": "open"}}]),
        iso_volume(),
    );
    assert!(causes(&scsi).is_empty());

    let ajar = vm(
        json!({}),
        json!([{"name": "install", "cdrom": {"tray": "ajar"}}]),
        iso_volume(),
    );
    let found = causes(&ajar);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].field,
        format!("{P}.domain.devices.disks[0].cdrom.tray")
    );
    assert_eq!(
        found[0].message,
        "Unsupported value: \"ajar\": supported values: \"closed\", \"open\""
    );

    // A sata CD-ROM may be read-only; a sata hard disk may not (KubeVirt's rule).
    let sata_ro = vm(
        json!({}),
        json!([{"name": "install", "cdrom": {"bus": "sata", "readonly": true}}]),
        iso_volume(),
    );
    assert!(causes(&sata_ro).is_empty());
}

/// The hyperv component of KubeVirt's common-instancetypes Windows preferences.
fn windows_hyperv() -> Value {
    json!({
        "relaxed": {}, "vapic": {}, "vpindex": {}, "spinlocks": {"spinlocks": 8191},
        "synic": {}, "synictimer": {"direct": {}}, "tlbflush": {}, "frequencies": {},
        "reenlightenment": {}, "ipi": {}, "runtime": {}, "reset": {}
    })
}

#[test]
fn the_windows_preference_set_is_admitted() {
    let value = vm(
        json!({"features": {"hyperv": windows_hyperv()}, "clock": {"utc": {}, "timer": {"hyperv": {}, "hpet": {"present": false}}}}),
        json!([]),
        json!([]),
    );
    assert!(causes(&value).is_empty(), "{:?}", causes(&value));
}

#[test]
fn a_disabled_requirement_is_refused_with_kubevirts_message() {
    let value = vm(
        json!({"features": {"hyperv": {"synic": {}, "vpindex": {"enabled": false}}}}),
        json!([]),
        json!([]),
    );
    let found = causes(&value);
    assert_eq!(found.len(), 1, "{found:?}");
    let h = format!("{P}.domain.features.hyperv");
    assert_eq!(found[0].field, format!("{h}.synic"));
    assert_eq!(
        found[0].message,
        format!("'{h}.synic' requires '{h}.vpindex', which was disabled.")
    );

    let evmcs = vm(
        json!({"features": {"hyperv": {"evmcs": {}, "vapic": {"enabled": false}}}}),
        json!([]),
        json!([]),
    );
    let found = causes(&evmcs);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].message,
        format!("'{h}.evmcs' requires '{h}.vapic', which was disabled.")
    );
}

#[test]
fn spinlocks_vendor_id_and_passthrough() {
    let h = format!("{P}.domain.features.hyperv");
    let few = vm(
        json!({"features": {"hyperv": {"spinlocks": {"spinlocks": 100}}}}),
        json!([]),
        json!([]),
    );
    let found = causes(&few);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].field, format!("{h}.spinlocks.spinlocks"));
    assert!(
        found[0].message.contains("at least 4095"),
        "{}",
        found[0].message
    );

    let long = vm(
        json!({"features": {"hyperv": {"vendorid": {"vendorid": "thirteenchars"}}}}),
        json!([]),
        json!([]),
    );
    let found = causes(&long);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].field, format!("{h}.vendorid.vendorid"));

    let both = vm(
        json!({"features": {"hyperv": {"relaxed": {}}, "hypervPassthrough": {"enabled": true}}}),
        json!([]),
        json!([]),
    );
    let found = causes(&both);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].field, h);
    assert_eq!(
        found[0].message,
        "Cannot explicitly set hyperV features if HypervPassthrough is being used. Please use either HyperV or HypervPassthrough."
    );
}

#[test]
fn the_defaulter_fills_switches_spinlocks_and_requirements() {
    let value = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "vmi"},
        "spec": {"domain": {
            "memory": {"guest": "1Gi"}, "devices": {},
            "features": {"hyperv": {"synictimer": {"direct": {}}, "spinlocks": {}, "evmcs": {}}},
            "clock": {"timer": {"hyperv": {}}}
        }}
    });
    let Object::VirtualMachineInstance(mut vmi) = object(&value) else {
        panic!("not a VMI")
    };
    defaults::apply_vmi_defaults(&mut vmi);
    let back = serde_json::to_value::<&VirtualMachineInstance>(&vmi).unwrap();
    let domain = &back["spec"]["domain"];
    assert_eq!(
        domain["features"]["hyperv"],
        json!({
            "synictimer": {"enabled": true, "direct": {"enabled": true}},
            "synic": {"enabled": true},
            "vpindex": {"enabled": true},
            "spinlocks": {"enabled": true, "spinlocks": 4096},
            "evmcs": {"enabled": true},
            "vapic": {"enabled": true}
        })
    );
    assert_eq!(
        domain["cpu"]["features"],
        json!([{"name": "vmx", "policy": "require"}])
    );
    assert_eq!(domain["clock"]["timer"]["hyperv"], json!({"present": true}));
}
