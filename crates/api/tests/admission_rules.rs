//! One negative case (at least) per admission rule, each asserting the exact message and field
//! path; plus the positive counterparts that show the rule does not over-reach.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use ferrovirt_api::config::ClusterConfig;
use ferrovirt_api::parse::parse_documents;
use ferrovirt_api::status::{CauseType, StatusCause};
use ferrovirt_api::validation::{AdmissionContext, admit};
use ferrovirt_api::{Object, defaults};
use serde_json::{Value, json};

const P: &str = "spec.template.spec";

fn base_vm() -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm"},
        "spec": {
            "runStrategy": "Halted",
            "template": {"spec": {
                "domain": {
                    "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
                    "memory": {"guest": "1Gi"}
                },
                "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": "pvc"}}]
            }}
        }
    })
}

fn base_vmi() -> Value {
    let mut vm = base_vm();
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "vmi"},
        "spec": vm["spec"]["template"]["spec"].take(),
    })
}

fn object(value: &Value) -> Object {
    let text = serde_json::to_string(value).unwrap();
    parse_documents(text.as_bytes(), "test.json")
        .unwrap()
        .remove(0)
}

fn causes_with(value: &Value, config: &ClusterConfig) -> Vec<StatusCause> {
    match admit(&object(value), &AdmissionContext::create(config)) {
        Ok(()) => Vec::new(),
        Err(invalid) => invalid.causes,
    }
}

fn causes(value: &Value) -> Vec<StatusCause> {
    causes_with(value, &ClusterConfig::embedded_default())
}

fn vm_with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut vm = base_vm();
    edit(&mut vm);
    vm
}

fn tmpl(vm: &mut Value) -> &mut Value {
    &mut vm["spec"]["template"]["spec"]
}

#[track_caller]
fn assert_cause(causes: &[StatusCause], field: &str, message: &str) {
    assert!(
        causes
            .iter()
            .any(|c| c.field == field && c.message == message),
        "expected cause\n  field: {field}\n  message: {message}\ngot: {causes:#?}"
    );
}

#[track_caller]
fn assert_only_cause(causes: &[StatusCause], field: &str, message: &str) {
    assert_eq!(causes.len(), 1, "{causes:#?}");
    assert_cause(causes, field, message);
}

#[test]
fn base_objects_are_valid() {
    assert_eq!(causes(&base_vm()), vec![]);
    assert_eq!(causes(&base_vmi()), vec![]);
}

#[test]
fn object_name_must_be_a_dns1123_subdomain() {
    let vm = vm_with(|vm| vm["metadata"]["name"] = json!("Bad_Name"));
    assert_only_cause(
        &causes(&vm),
        "metadata.name",
        "Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    );
    let long = "a".repeat(254);
    let vm = vm_with(|vm| vm["metadata"]["name"] = json!(long));
    assert_cause(
        &causes(&vm),
        "metadata.name",
        &format!("Invalid value: \"{long}\": must be no more than 253 characters"),
    );
}

#[test]
fn name_or_generate_name_is_required() {
    let vm = vm_with(|vm| vm["metadata"] = json!({}));
    let c = causes(&vm);
    assert_only_cause(
        &c,
        "metadata.name",
        "Required value: name or generateName is required",
    );
    assert_eq!(c[0].reason_type, CauseType::FieldValueRequired);
    let vm = vm_with(|vm| vm["metadata"] = json!({"generateName": "vm-"}));
    assert_eq!(causes(&vm), vec![]);
    let vm = vm_with(|vm| vm["metadata"] = json!({"generateName": "VM-"}));
    assert_eq!(causes(&vm)[0].field, "metadata.generateName");
}

#[test]
fn every_disk_needs_a_volume_of_its_name() {
    let vm = vm_with(|vm| tmpl(vm)["volumes"][0]["name"] = json!("other"));
    assert_only_cause(
        &causes(&vm),
        &format!("{P}.domain.devices.disks[0].name"),
        &format!("{P}.domain.devices.disks[0].Name 'root' not found."),
    );
}

#[test]
fn disk_names_are_unique() {
    let vm = vm_with(|vm| {
        tmpl(vm)["domain"]["devices"]["disks"] =
            json!([{"name": "root", "disk": {}}, {"name": "root", "disk": {}}])
    });
    assert_only_cause(
        &causes(&vm),
        &format!("{P}.domain.devices.disks[1].name"),
        &format!(
            "{P}.domain.devices.disks[1] and {P}.domain.devices.disks[0] must not have the same Name."
        ),
    );
}

#[test]
fn volume_names_are_unique_and_have_one_source() {
    let vm = vm_with(|vm| {
        tmpl(vm)["volumes"] = json!([
            {"name": "root", "persistentVolumeClaim": {"claimName": "a"}},
            {"name": "root", "persistentVolumeClaim": {"claimName": "b"}}
        ])
    });
    assert_only_cause(
        &causes(&vm),
        &format!("{P}.volumes[1].name"),
        &format!("{P}.volumes[1] and {P}.volumes[0] must not have the same Name."),
    );
    let vm = vm_with(|vm| tmpl(vm)["volumes"][0]["emptyDisk"] = json!({"capacity": "1Gi"}));
    assert_only_cause(
        &causes(&vm),
        &format!("{P}.volumes[0]"),
        &format!("{P}.volumes[0] must have exactly one source type set"),
    );
    let vm = vm_with(|vm| tmpl(vm)["volumes"][0] = json!({"name": "root"}));
    assert_only_cause(
        &causes(&vm),
        &format!("{P}.volumes[0]"),
        &format!("{P}.volumes[0] must have exactly one source type set"),
    );
}

#[test]
fn memory_must_be_present() {
    let expected = format!(
        "no memory requested, at least one of '{P}.domain.memory.guest', '{P}.domain.memory.hugepages.pageSize' or '{P}.domain.resources.requests.memory' must be set"
    );
    let vm = vm_with(|vm| {
        tmpl(vm)["domain"].as_object_mut().unwrap().remove("memory");
    });
    let c = causes(&vm);
    assert_only_cause(&c, "", &expected);
    assert_eq!(c[0].reason_type, CauseType::FieldValueRequired);
    // Requests or hugepages satisfy it.
    let vm = vm_with(|vm| {
        let domain = &mut tmpl(vm)["domain"];
        domain.as_object_mut().unwrap().remove("memory");
        domain["resources"] = json!({"requests": {"memory": "512Mi"}});
    });
    assert_eq!(causes(&vm), vec![]);
    let mut vmi = base_vmi();
    vmi["spec"]["domain"]["memory"] = json!({});
    assert_only_cause(
        &causes(&vmi),
        "",
        "no memory requested, at least one of 'spec.domain.memory.guest', 'spec.domain.memory.hugepages.pageSize' or 'spec.domain.resources.requests.memory' must be set",
    );
}

#[test]
fn secure_boot_requires_smm() {
    let message = format!(
        "{P}.domain has EFI SecureBoot enabled. SecureBoot requires SMM, which is currently disabled."
    );
    // efi: {} means secureBoot true.
    let vm = vm_with(|vm| tmpl(vm)["domain"]["firmware"] = json!({"bootloader": {"efi": {}}}));
    assert_only_cause(&causes(&vm), &format!("{P}.domain"), &message);
    let vm = vm_with(|vm| {
        tmpl(vm)["domain"]["firmware"] = json!({"bootloader": {"efi": {"secureBoot": true}}});
        tmpl(vm)["domain"]["features"] = json!({"smm": {"enabled": false}});
    });
    assert_only_cause(&causes(&vm), &format!("{P}.domain"), &message);
    // smm: {} is enabled; secureBoot false needs no SMM.
    let vm = vm_with(|vm| {
        tmpl(vm)["domain"]["firmware"] = json!({"bootloader": {"efi": {}}});
        tmpl(vm)["domain"]["features"] = json!({"smm": {}});
    });
    assert_eq!(causes(&vm), vec![]);
    let vm = vm_with(|vm| {
        tmpl(vm)["domain"]["firmware"] = json!({"bootloader": {"efi": {"secureBoot": false}}})
    });
    assert_eq!(causes(&vm), vec![]);
}

#[test]
fn bios_and_efi_are_mutually_exclusive() {
    let vm = vm_with(|vm| {
        tmpl(vm)["domain"]["firmware"] =
            json!({"bootloader": {"efi": {"secureBoot": false}, "bios": {}}})
    });
    assert_only_cause(
        &causes(&vm),
        &format!("{P}.domain.firmware.bootloader"),
        &format!(
            "{P}.domain.firmware.bootloader has both EFI and BIOS configured, but they are mutually exclusive."
        ),
    );
}

fn config_without_gates() -> ClusterConfig {
    ClusterConfig::default()
}

#[test]
fn persistent_tpm_needs_the_vm_persistent_state_gate() {
    let vm = vm_with(|vm| tmpl(vm)["domain"]["devices"]["tpm"] = json!({"persistent": true}));
    assert_eq!(causes(&vm), vec![]);
    assert_only_cause(
        &causes_with(&vm, &config_without_gates()),
        &format!("{P}.domain.devices.tpm.persistent"),
        "VMPersistentState feature gate is not enabled in kubevirt-config",
    );
    // A VMI reports its own path.
    let mut vmi = base_vmi();
    vmi["spec"]["domain"]["devices"]["tpm"] = json!({"persistent": true});
    assert_only_cause(
        &causes_with(&vmi, &config_without_gates()),
        "spec.domain.devices.tpm.persistent",
        "VMPersistentState feature gate is not enabled in kubevirt-config",
    );
    // tpm: {} and persistent: false need no gate.
    let vm = vm_with(|vm| tmpl(vm)["domain"]["devices"]["tpm"] = json!({"persistent": false}));
    assert_eq!(causes_with(&vm, &config_without_gates()), vec![]);
}

#[test]
fn persistent_efi_needs_the_vm_persistent_state_gate() {
    let vm = vm_with(|vm| {
        tmpl(vm)["domain"]["firmware"] = json!({"bootloader": {"efi": {"persistent": true}}});
        tmpl(vm)["domain"]["features"] = json!({"smm": {}});
    });
    assert_eq!(causes(&vm), vec![]);
    assert_only_cause(
        &causes_with(&vm, &config_without_gates()),
        &format!("{P}.domain.firmware.bootloader.efi.persistent"),
        "VMPersistentState feature gate is not enabled in kubevirt-config",
    );
}

#[test]
fn persistent_tpm_on_a_disabled_tpm_is_a_contradiction() {
    let vm = vm_with(|vm| {
        tmpl(vm)["domain"]["devices"]["tpm"] = json!({"enabled": false, "persistent": true})
    });
    assert_only_cause(
        &causes(&vm),
        &format!("{P}.domain.devices.tpm.persistent"),
        &format!(
            "{P}.domain.devices.tpm.persistent is true but {P}.domain.devices.tpm.enabled is false: a disabled TPM has no state to persist; remove persistent or enable the TPM"
        ),
    );
    let vm = vm_with(|vm| tmpl(vm)["domain"]["devices"]["tpm"] = json!({"enabled": false}));
    assert_eq!(causes(&vm), vec![]);
}

#[test]
fn host_disk_rules_and_gate() {
    let host_disk =
        |hd: Value| vm_with(|vm| tmpl(vm)["volumes"][0] = json!({"name": "root", "hostDisk": hd}));
    let good =
        host_disk(json!({"path": "/var/data/disk.img", "type": "DiskOrCreate", "capacity": "1Gi"}));
    assert_eq!(causes(&good), vec![]);
    assert_only_cause(
        &causes_with(&good, &config_without_gates()),
        &format!("{P}.volumes[0].hostDisk"),
        "HostDisk feature gate is not enabled",
    );
    let no_path = host_disk(json!({"type": "Disk"}));
    assert_only_cause(
        &causes(&no_path),
        &format!("{P}.volumes[0].hostDisk.path"),
        &format!("{P}.volumes[0].hostDisk.path is required for hostDisk volume"),
    );
    let bad_type = host_disk(json!({"path": "/x", "type": "Block"}));
    assert_only_cause(
        &causes(&bad_type),
        &format!("{P}.volumes[0].hostDisk.type"),
        &format!(
            "{P}.volumes[0].hostDisk.type has invalid value 'Block', allowed are 'Disk' or 'DiskOrCreate'"
        ),
    );
    let capacity = host_disk(json!({"path": "/x", "type": "Disk", "capacity": "1Gi"}));
    assert_only_cause(
        &causes(&capacity),
        &format!("{P}.volumes[0].hostDisk.capacity"),
        &format!(
            "{P}.volumes[0].hostDisk.capacity is allowed to pass only with {P}.volumes[0].hostDisk.type equal to 'DiskOrCreate'"
        ),
    );
}

#[test]
fn running_and_run_strategy() {
    let both = vm_with(|vm| vm["spec"]["running"] = json!(true));
    assert_only_cause(
        &causes(&both),
        "spec.running",
        "Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead",
    );
    let neither = vm_with(|vm| {
        vm["spec"].as_object_mut().unwrap().remove("runStrategy");
    });
    assert_only_cause(
        &causes(&neither),
        "spec.running",
        "RunStrategy must be specified",
    );
    let only_running = vm_with(|vm| {
        vm["spec"].as_object_mut().unwrap().remove("runStrategy");
        vm["spec"]["running"] = json!(false);
    });
    assert_eq!(causes(&only_running), vec![]);
    let bad = vm_with(|vm| vm["spec"]["runStrategy"] = json!("Sometimes"));
    assert_only_cause(
        &causes(&bad),
        "spec.runStrategy",
        "Invalid RunStrategy (Sometimes)",
    );
    let no_template = vm_with(|vm| {
        vm["spec"].as_object_mut().unwrap().remove("template");
    });
    assert_only_cause(
        &causes(&no_template),
        "spec.template",
        "missing virtual machine template.",
    );
}

#[test]
fn resource_requests_and_limits() {
    let resources = |r: Value| vm_with(|vm| tmpl(vm)["domain"]["resources"] = r);
    let neg = resources(json!({"requests": {"memory": "-1Gi"}}));
    assert_only_cause(
        &causes(&neg),
        &format!("{P}.domain.resources.requests.memory"),
        &format!(
            "{P}.domain.resources.requests.memory '-1Gi': must be greater than or equal to 0."
        ),
    );
    let tiny = resources(json!({"requests": {"memory": "512Ki"}}));
    assert_only_cause(
        &causes(&tiny),
        &format!("{P}.domain.resources.requests.memory"),
        &format!(
            "{P}.domain.resources.requests.memory '512Ki': must be greater than or equal to 1M."
        ),
    );
    let neg_limit = resources(json!({"limits": {"memory": "-1"}}));
    assert_only_cause(
        &causes(&neg_limit),
        &format!("{P}.domain.resources.limits.memory"),
        &format!("{P}.domain.resources.limits.memory '-1': must be greater than or equal to 0."),
    );
    let over = resources(json!({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}));
    assert_only_cause(
        &causes(&over),
        &format!("{P}.domain.resources.requests.memory"),
        &format!(
            "{P}.domain.resources.requests.memory '2Gi' is greater than {P}.domain.resources.limits.memory '1Gi'"
        ),
    );
    let cpu_neg = resources(json!({"requests": {"cpu": "-500m"}}));
    assert_only_cause(
        &causes(&cpu_neg),
        &format!("{P}.domain.resources.requests.cpu"),
        &format!("{P}.domain.resources.requests.cpu '-500m': must be greater than or equal to 0."),
    );
    let cpu_limit_neg = resources(json!({"limits": {"cpu": "-1"}}));
    assert_only_cause(
        &causes(&cpu_limit_neg),
        &format!("{P}.domain.resources.limits.cpu"),
        &format!("{P}.domain.resources.limits.cpu '-1': must be greater than or equal to 0."),
    );
    let cpu_over = resources(json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}));
    assert_only_cause(
        &causes(&cpu_over),
        &format!("{P}.domain.resources.requests.cpu"),
        &format!(
            "{P}.domain.resources.requests.cpu '2' is greater than {P}.domain.resources.limits.cpu '1500m'"
        ),
    );
    let malformed = vm_with(|vm| tmpl(vm)["domain"]["memory"]["guest"] = json!("1GB"));
    assert_only_cause(
        &causes(&malformed),
        &format!("{P}.domain.memory.guest"),
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got \"1GB\")",
    );
}

#[test]
fn disk_targets_buses_and_boot_order() {
    let disk = |d: Value| vm_with(|vm| tmpl(vm)["domain"]["devices"]["disks"][0] = d);
    let two_targets = disk(json!({"name": "root", "disk": {}, "cdrom": {}}));
    assert_only_cause(
        &causes(&two_targets),
        &format!("{P}.domain.devices.disks[0]"),
        &format!("{P}.domain.devices.disks[0] can only have a single target type defined"),
    );
    let ide = disk(json!({"name": "root", "disk": {"bus": "ide"}}));
    assert_only_cause(
        &causes(&ide),
        &format!("{P}.domain.devices.disks[0].disk.bus"),
        "IDE bus is not supported",
    );
    let unknown = disk(json!({"name": "root", "disk": {"bus": "floppy"}}));
    assert_only_cause(
        &causes(&unknown),
        &format!("{P}.domain.devices.disks[0].disk.bus"),
        &format!(
            "{P}.domain.devices.disks[0] is set with an unrecognized bus floppy, must be one of: [virtio scsi sata usb]"
        ),
    );
    let cdrom_virtio = disk(json!({"name": "root", "cdrom": {"bus": "virtio"}}));
    assert_only_cause(
        &causes(&cdrom_virtio),
        &format!("{P}.domain.devices.disks[0].cdrom.bus"),
        "Bus type virtio is invalid for CD-ROM device",
    );
    let sata_ro = disk(json!({"name": "root", "disk": {"bus": "sata", "readonly": true}}));
    assert_only_cause(
        &causes(&sata_ro),
        &format!("{P}.domain.devices.disks[0].disk.bus"),
        "sata hard-disks do not support read-only.",
    );
    let zero = disk(json!({"name": "root", "disk": {}, "bootOrder": 0}));
    assert_only_cause(
        &causes(&zero),
        &format!("{P}.domain.devices.disks[0].bootOrder"),
        &format!("{P}.domain.devices.disks[0] must have a boot order > 0, if supplied"),
    );
    let dup = vm_with(|vm| {
        tmpl(vm)["domain"]["devices"]["disks"] =
            json!([{"name": "a", "bootOrder": 1}, {"name": "b", "bootOrder": 1}]);
        tmpl(vm)["volumes"] = json!([
            {"name": "a", "persistentVolumeClaim": {"claimName": "a"}},
            {"name": "b", "persistentVolumeClaim": {"claimName": "b"}}
        ]);
    });
    assert_only_cause(
        &causes(&dup),
        &format!("{P}.domain.devices.disks[1].bootOrder"),
        &format!(
            "Boot order for {P}.domain.devices.disks[1].bootOrder already set for a different device."
        ),
    );
}

#[test]
fn disk_serial_cache_io_and_name() {
    let disk = |d: Value| vm_with(|vm| tmpl(vm)["domain"]["devices"]["disks"][0] = d);
    let serial = disk(json!({"name": "root", "serial": "a b"}));
    assert_only_cause(
        &causes(&serial),
        &format!("{P}.domain.devices.disks[0].serial"),
        &format!(
            "{P}.domain.devices.disks[0] must be made up of the following characters [A-Za-z0-9_.+-], if specified"
        ),
    );
    let long_serial = disk(json!({"name": "root", "serial": "a".repeat(37)}));
    assert_only_cause(
        &causes(&long_serial),
        &format!("{P}.domain.devices.disks[0].serial"),
        &format!(
            "{P}.domain.devices.disks[0] must be less than or equal to 36 in length, if specified"
        ),
    );
    let cache = disk(json!({"name": "root", "cache": "unsafe"}));
    assert_only_cause(
        &causes(&cache),
        &format!("{P}.domain.devices.disks[0].cache"),
        &format!("{P}.domain.devices.disks[0].cache has invalid value unsafe"),
    );
    let io = disk(json!({"name": "root", "io": "uring"}));
    assert_only_cause(
        &causes(&io),
        &format!("{P}.domain.devices.disks[0].io"),
        &format!(
            "Disk IO mode for {P}.domain.devices.disks is not supported. Supported modes are: native, threads."
        ),
    );
    let name = vm_with(|vm| {
        tmpl(vm)["domain"]["devices"]["disks"][0]["name"] = json!("Root");
        tmpl(vm)["volumes"][0]["name"] = json!("Root");
    });
    assert_only_cause(
        &causes(&name),
        &format!("{P}.domain.devices.disks[0].name"),
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
    );
}

#[test]
fn hostname_subdomain_start_strategy_architecture() {
    let vm = vm_with(|vm| tmpl(vm)["hostname"] = json!("a.b"));
    assert_only_cause(
        &causes(&vm),
        &format!("{P}.hostname"),
        &format!(
            "{P}.hostname does not conform to the kubernetes DNS_LABEL rules : must not contain dots"
        ),
    );
    let vm = vm_with(|vm| tmpl(vm)["subdomain"] = json!("-x"));
    assert_eq!(causes(&vm)[0].field, format!("{P}.subdomain"));
    assert!(causes(&vm)[0].message.starts_with(&format!("{P}.subdomain does not conform to the kubernetes DNS_SUBDOMAIN rules : a lowercase RFC 1123 subdomain")));
    let vm = vm_with(|vm| tmpl(vm)["startStrategy"] = json!("Later"));
    assert_only_cause(
        &causes(&vm),
        &format!("{P}.startStrategy"),
        &format!("{P}.startStrategy is set with an unrecognized option: Later"),
    );
    let vm = vm_with(|vm| tmpl(vm)["startStrategy"] = json!("Paused"));
    assert_eq!(causes(&vm), vec![]);
    let vm = vm_with(|vm| tmpl(vm)["architecture"] = json!("s390x"));
    assert_only_cause(
        &causes(&vm),
        &format!("{P}.architecture"),
        "unsupported architecture: s390x; ferrovirt runs amd64 guests only",
    );
}

#[test]
fn container_disk_path_and_pvc_claim_name() {
    let vm = vm_with(|vm| {
        tmpl(vm)["volumes"][0] =
            json!({"name": "root", "containerDisk": {"image": "x", "path": "a/../b"}})
    });
    assert_only_cause(
        &causes(&vm),
        &format!("{P}.volumes[0].containerDisk"),
        &format!(
            "{P}.volumes[0].containerDisk must be an absolute path to a file without relative components"
        ),
    );
    let vm = vm_with(|vm| {
        tmpl(vm)["volumes"][0] =
            json!({"name": "root", "containerDisk": {"image": "x", "path": "/"}})
    });
    assert_only_cause(
        &causes(&vm),
        &format!("{P}.volumes[0].containerDisk"),
        &format!("{P}.volumes[0].containerDisk must not point to root"),
    );
    let vm = vm_with(|vm| tmpl(vm)["volumes"][0]["persistentVolumeClaim"]["claimName"] = json!(""));
    assert_only_cause(
        &causes(&vm),
        &format!("{P}.volumes[0].persistentVolumeClaim.claimName"),
        &format!("{P}.volumes[0].persistentVolumeClaim.claimName is a required field"),
    );
}

#[test]
fn firmware_uuid_is_immutable_on_update() {
    let mut old = object(&base_vm());
    if let Object::VirtualMachine(vm) = &mut old {
        defaults::apply_vm_defaults(vm);
    }
    let old_uuid = match &old {
        Object::VirtualMachine(vm) => vm
            .spec
            .template
            .as_ref()
            .unwrap()
            .spec
            .firmware_uuid()
            .unwrap()
            .to_owned(),
        _ => unreachable!(),
    };
    let config = ClusterConfig::embedded_default();
    let changed = vm_with(|vm| {
        tmpl(vm)["domain"]["firmware"] = json!({"uuid": "11111111-2222-3333-4444-555555555555"})
    });
    let err = admit(&object(&changed), &AdmissionContext::update(&config, &old)).unwrap_err();
    assert_only_cause(
        &err.causes,
        &format!("{P}.domain.firmware.uuid"),
        &format!(
            "Invalid value: \"11111111-2222-3333-4444-555555555555\": field is immutable once set (was \"{old_uuid}\"): the firmware UUID keys the VM's persistent TPM state"
        ),
    );
    let same = vm_with(|vm| tmpl(vm)["domain"]["firmware"] = json!({"uuid": old_uuid}));
    assert!(admit(&object(&same), &AdmissionContext::update(&config, &old)).is_ok());
    // A manifest re-applied without the UUID keeps the stored one.
    let mut reapplied = object(&base_vm());
    if let (Object::VirtualMachine(new), Object::VirtualMachine(old_vm)) = (&mut reapplied, &old) {
        defaults::carry_over_firmware_identity(new, old_vm);
    }
    assert!(admit(&reapplied, &AdmissionContext::update(&config, &old)).is_ok());
}

#[test]
fn unknown_kinds_and_status_json() {
    let unknown = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
    let err = admit(
        &object(&unknown),
        &AdmissionContext::create(&ClusterConfig::default()),
    )
    .unwrap_err();
    assert_eq!(err.causes[0].field, "kind");
    assert!(
        err.causes[0]
            .message
            .starts_with("ferrovirt does not serve apps/v1/Deployment")
    );

    let vm = vm_with(|vm| tmpl(vm)["domain"]["devices"]["tpm"] = json!({"persistent": true}));
    let err = admit(
        &object(&vm),
        &AdmissionContext::create(&ClusterConfig::default()),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "The VirtualMachine \"vm\" is invalid: {P}.domain.devices.tpm.persistent: VMPersistentState feature gate is not enabled in kubevirt-config"
        )
    );
    let status = err.to_status_json();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 422);
    assert_eq!(status["details"]["kind"], "VirtualMachine");
    assert_eq!(status["details"]["group"], "kubevirt.io");
    assert_eq!(status["details"]["name"], "vm");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        format!("{P}.domain.devices.tpm.persistent")
    );
}

#[test]
fn cluster_objects() {
    let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "x"}});
    assert_only_cause(&causes(&sc), "provisioner", "Required value");
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "p"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}}});
    assert_eq!(causes(&pvc), vec![]);
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}});
    assert_only_cause(
        &causes(&ns),
        "metadata.name",
        "Invalid value: \"a.b\": must not contain dots",
    );
}

#[test]
fn host_disk_paths_must_lie_under_an_allowed_root() {
    use ferrovirt_api::validation::HostPathPolicy;
    let policy = HostPathPolicy::for_data_dir(
        std::path::Path::new("/var/lib/ferrovirt"),
        &["/srv/images".into()],
    );
    let config = ClusterConfig::embedded_default();
    let with_path = |path: &str| {
        vm_with(|vm| {
            tmpl(vm)["volumes"][0] =
                json!({"name": "root", "hostDisk": {"path": path, "type": "Disk"}})
        })
    };
    let admit_with = |value: &Value| match admit(
        &object(value),
        &AdmissionContext::create(&config).with_host_paths(&policy),
    ) {
        Ok(()) => Vec::new(),
        Err(invalid) => invalid.causes,
    };
    assert!(admit_with(&with_path("/var/lib/ferrovirt/images/root.qcow2")).is_empty());
    assert!(admit_with(&with_path("/srv/images/a/b.img")).is_empty());
    assert_only_cause(
        &admit_with(&with_path("/etc/shadow")),
        &format!("{P}.volumes[0].hostDisk.path"),
        "\"/etc/shadow\" is not under an allowed host-disk root (allowed roots: \
         /var/lib/ferrovirt/images, /srv/images); put the image under one of them, or start the \
         server with --host-disk-root DIR naming its directory",
    );
    let escaping = admit_with(&with_path("/srv/images/../../etc/shadow"));
    assert_eq!(escaping[0].field, format!("{P}.volumes[0].hostDisk.path"));
    assert!(escaping[0].message.contains("'..'"), "{escaping:?}");
    // Without a policy (offline `ferrovirt validate`) the path is not judged.
    assert!(causes(&with_path("/etc/shadow")).is_empty());
    // A VMI's field path starts at `spec`.
    let mut vmi = base_vmi();
    vmi["spec"]["volumes"][0] =
        json!({"name": "root", "hostDisk": {"path": "/root/x.img", "type": "Disk"}});
    let vmi_causes = admit_with(&vmi);
    assert_eq!(vmi_causes.len(), 1, "{vmi_causes:?}");
    assert_eq!(vmi_causes[0].field, "spec.volumes[0].hostDisk.path");
}

#[test]
fn two_vms_may_not_share_a_firmware_uuid() {
    use ferrovirt_api::validation::FirmwareUuidOwner;
    let uuid = "11111111-2222-4333-8444-555555555555";
    let config = ClusterConfig::embedded_default();
    let vm = vm_with(|vm| tmpl(vm)["domain"]["firmware"] = json!({"uuid": uuid}));
    let others = vec![
        FirmwareUuidOwner::from_vm_json(&json!({
            "metadata": {"name": "other", "namespace": "team-a"},
            "spec": {"template": {"spec": {"domain": {"firmware": {"uuid": uuid.to_uppercase()}}}}}
        }))
        .unwrap(),
    ];
    let err = admit(
        &object(&vm),
        &AdmissionContext::create(&config).with_firmware_uuids_in_use(&others),
    )
    .unwrap_err();
    assert_eq!(err.causes.len(), 1, "{:?}", err.causes);
    assert_eq!(err.causes[0].reason_type, CauseType::FieldValueDuplicate);
    assert_cause(
        &err.causes,
        &format!("{P}.domain.firmware.uuid"),
        &format!(
            "Duplicate value: \"{uuid}\": VirtualMachine team-a/other already has this firmware \
             UUID; it keys the VM's persistent TPM state, so two VMs cannot share it. Remove the \
             field to get a generated UUID, or choose another one"
        ),
    );
    // The VM's own stored copy is not a duplicate (an update lists it too).
    let itself = vec![FirmwareUuidOwner {
        namespace: "default".into(),
        name: "vm".into(),
        uuid: uuid.into(),
    }];
    assert!(
        admit(
            &object(&vm),
            &AdmissionContext::create(&config).with_firmware_uuids_in_use(&itself),
        )
        .is_ok()
    );
}

#[test]
fn a_bound_claim_keeps_its_volume_name() {
    let pvc = |volume: Option<&str>, size: &str| {
        let mut value = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}},
                     "storageClassName": "local-path", "volumeMode": "Filesystem"}
        });
        if let Some(volume) = volume {
            value["spec"]["volumeName"] = json!(volume);
        }
        object(&value)
    };
    let config = ClusterConfig::embedded_default();
    let update =
        |new: &Object, old: &Object| match admit(new, &AdmissionContext::update(&config, old)) {
            Ok(()) => Vec::new(),
            Err(invalid) => invalid.causes,
        };
    let bound = pvc(Some("pvc-1"), "10Mi");
    // Binding sets volumeName once; growing the request stays allowed.
    assert!(update(&bound, &pvc(None, "10Mi")).is_empty());
    assert!(update(&pvc(Some("pvc-1"), "20Mi"), &bound).is_empty());
    let moved = update(&pvc(Some("pvc-2"), "10Mi"), &bound);
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0].reason_type, CauseType::FieldValueForbidden);
    assert_eq!(moved[0].field, "spec");
    assert_eq!(
        moved[0].message,
        "Forbidden: spec is immutable after creation except resources.requests and \
         volumeAttributesClassName for bound claims\n  changed: spec.volumeName: \"pvc-1\" -> \"pvc-2\""
    );
    let cleared = update(&pvc(None, "10Mi"), &bound);
    assert!(
        cleared[0]
            .message
            .ends_with("spec.volumeName: \"pvc-1\" -> \"\""),
        "{cleared:?}"
    );
}
