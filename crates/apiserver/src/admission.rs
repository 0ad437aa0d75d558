//! What happens to an object between the request body and the store: type meta and namespace
//! checked against the URL, typed by the api crate, KubeVirt's defaults applied, and admitted with
//! `ferrovirt_api::admit` (the same verdicts and messages as `ferrovirt validate`).

use ferrovirt_api::defaults::{
    apply_vm_defaults, apply_vmi_defaults, carry_over_firmware_identity,
};
use ferrovirt_api::instancetype::ReferencedSpecs;
use ferrovirt_api::parse::ParseError;
use ferrovirt_api::validation::{FirmwareUuidOwner, HostPathPolicy};
use ferrovirt_api::{AdmissionContext, ClusterConfig, Invalid, Object, StatusCause, admit};
use ferrovirt_store::{ListOptions, Store};
use ferrovirt_vmm::hostpath::check_host_disk_paths;
use serde_json::{Value, json};

use crate::error::ApiError;
use ferrovirt_resources::ResourceDef;
pub use ferrovirt_resources::cluster::cluster_config;

/// Checks `apiVersion`/`kind`/namespace against the URL and fills them in when absent.
pub fn check_type_and_namespace(
    resource: &ResourceDef,
    namespace: Option<&str>,
    object: &mut Value,
) -> Result<(), ApiError> {
    let Some(map) = object.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object with apiVersion, kind and metadata",
        ));
    };
    let expected_version = resource.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), json!(expected_version));
        }
        Some(v) if v == expected_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected_version})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), json!(resource.kind));
        }
        Some(k) if k == resource.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                resource.kind
            )));
        }
    }
    let metadata = map.entry("metadata").or_insert_with(|| json!({}));
    let Some(metadata) = metadata.as_object_mut() else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    if resource.namespaced {
        let url_ns = namespace.unwrap_or("default");
        match metadata.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                metadata.insert("namespace".into(), json!(url_ns));
            }
            Some(ns) if ns == url_ns => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
    } else {
        metadata.remove("namespace");
    }
    Ok(())
}

fn typed(object: &Value) -> Result<Object, ApiError> {
    Object::from_value(object.clone(), "request body", 1).map_err(|err| match err {
        ParseError::Type {
            kind, path, message, ..
        } => {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            ApiError {
                details: Some(json!({"name": name, "kind": kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": message, "field": path}]})),
                ..ApiError::invalid(format!("The {kind} {name:?} is invalid: {path}: {message}"))
            }
        }
        other => ApiError::bad_request(other.to_string()),
    })
}

/// The Invalid (422) error of an object typed here as JSON (RBAC objects, migrations), with the
/// field path, as Kubernetes words it.
fn rbac_invalid(resource: &ResourceDef, object: &Value, field: &str, message: String) -> ApiError {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    ApiError {
        details: Some(
            json!({"name": name, "group": resource.group, "kind": resource.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]}),
        ),
        ..ApiError::invalid(format!(
            "{}.{} {name:?} is invalid: {field}: {message}",
            resource.kind, resource.group
        ))
    }
}

/// KubeVirt's checks of a VirtualMachineInstanceMigration (its migration-create admitter):
/// `spec.vmiName` is required, and `sendTo` and `receive` together must name one migration.
/// Stored as written otherwise (its status is the controllers').
fn admit_migration(resource: &ResourceDef, object: Value) -> Result<Value, ApiError> {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
    if text("/spec/vmiName").unwrap_or("").is_empty() {
        return Err(rbac_invalid(
            resource,
            &object,
            "spec.vmiName",
            "vmiName is missing".into(),
        ));
    }
    if let (Some(send), Some(receive)) = (
        text("/spec/sendTo/migrationID"),
        text("/spec/receive/migrationID"),
    ) && send != receive
    {
        return Err(rbac_invalid(
            resource,
            &object,
            "spec",
            format!("sendTo migrationID {send} does not match receive migrationID {receive}"),
        ));
    }
    Ok(object)
}

/// Checks a Role, ClusterRole, RoleBinding or ClusterRoleBinding the way the RBAC evaluator will
/// read it (its types from `ferrovirt_auth::rbac`): it must parse, and a binding must name a
/// `Role` or `ClusterRole` (a ClusterRoleBinding only a ClusterRole) and only `User`, `Group` or
/// `ServiceAccount` subjects.
fn admit_rbac(resource: &ResourceDef, object: Value) -> Result<Value, ApiError> {
    use ferrovirt_auth::rbac::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, Subject};
    let parse_error = |e: serde_json::Error| {
        rbac_invalid(
            resource,
            &object,
            "(body)",
            format!("{e}; see `kubectl explain {}`", resource.plural),
        )
    };
    let check_binding = |role_kind: &str, subjects: &[Subject], cluster: bool| {
        let kinds: &[&str] = if cluster {
            &["ClusterRole"]
        } else {
            &["Role", "ClusterRole"]
        };
        if !kinds.contains(&role_kind) {
            return Err(rbac_invalid(
                resource,
                &object,
                "roleRef.kind",
                format!(
                    "Unsupported value: {role_kind:?}: supported values: {}",
                    kinds.join(", ")
                ),
            ));
        }
        for (i, subject) in subjects.iter().enumerate() {
            if !["User", "Group", "ServiceAccount"].contains(&subject.kind.as_str()) {
                return Err(rbac_invalid(
                    resource,
                    &object,
                    &format!("subjects[{i}].kind"),
                    format!(
                        "Unsupported value: {:?}: supported values: \"ServiceAccount\", \"User\", \"Group\"",
                        subject.kind
                    ),
                ));
            }
        }
        Ok(())
    };
    match resource.plural {
        "roles" => {
            serde_json::from_value::<Role>(object.clone()).map_err(parse_error)?;
        }
        "clusterroles" => {
            serde_json::from_value::<ClusterRole>(object.clone()).map_err(parse_error)?;
        }
        "rolebindings" => {
            let b = serde_json::from_value::<RoleBinding>(object.clone()).map_err(parse_error)?;
            check_binding(&b.role_ref.kind, &b.subjects, false)?;
        }
        _ => {
            let b = serde_json::from_value::<ClusterRoleBinding>(object.clone())
                .map_err(parse_error)?;
            check_binding(&b.role_ref.kind, &b.subjects, true)?;
        }
    }
    Ok(object)
}

/// What admission sees besides the object: the cluster configuration, the `hostDisk` roots and
/// the `firmware.uuid`s of the stored VirtualMachines.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionInputs<'a> {
    pub cluster: &'a ClusterConfig,
    pub host_paths: &'a HostPathPolicy,
    pub firmware_uuids_in_use: &'a [FirmwareUuidOwner],
    /// The instancetype and preference a VM refers to (`ferrovirt_resources::instancetypes::
    /// find_referenced`).
    pub references: &'a ReferencedSpecs,
}

impl<'a> AdmissionInputs<'a> {
    fn context(&self, old: Option<&'a Object>) -> AdmissionContext<'a> {
        match old {
            Some(old) => AdmissionContext::update(self.cluster, old),
            None => AdmissionContext::create(self.cluster),
        }
        .with_host_paths(self.host_paths)
        .with_firmware_uuids_in_use(self.firmware_uuids_in_use)
        .with_references(self.references)
    }
}

/// The `firmware.uuid` of every stored VirtualMachine (for the uniqueness rule).
pub fn firmware_uuid_owners(store: &Store) -> Vec<FirmwareUuidOwner> {
    store
        .list(
            &ferrovirt_resources::VMS.store_kind(),
            &ListOptions::default(),
        )
        .map(|list| {
            list.items
                .iter()
                .filter_map(FirmwareUuidOwner::from_vm_json)
                .collect()
        })
        .unwrap_or_default()
}

/// Admits the typed object: KubeVirt's rules, then the `hostDisk` paths resolved on this host (a
/// symlink out of a root is refused here, not at the start).
fn admit_typed(
    object: &Object,
    ctx: &AdmissionContext<'_>,
    policy: &HostPathPolicy,
) -> Result<(), ApiError> {
    admit(object, ctx)?;
    let (spec_path, spec, kind, group, name) = match object {
        Object::VirtualMachine(vm) => match &vm.spec.template {
            Some(template) => (
                "spec.template.spec",
                &template.spec,
                "VirtualMachine",
                "kubevirt.io",
                vm.metadata.name.clone(),
            ),
            None => return Ok(()),
        },
        Object::VirtualMachineInstance(vmi) => (
            "spec",
            &vmi.spec,
            "VirtualMachineInstance",
            "kubevirt.io",
            vmi.metadata.name.clone(),
        ),
        _ => return Ok(()),
    };
    let causes: Vec<StatusCause> = check_host_disk_paths(spec_path, spec, policy);
    if causes.is_empty() {
        return Ok(());
    }
    Err(Invalid {
        kind: kind.into(),
        group: group.into(),
        name: name.unwrap_or_default(),
        causes,
    }
    .into())
}

/// KubeVirt's restore admitter on the target: a VirtualMachine that exists must be stopped.
/// `running: true` is refused with `VirtualMachine "x" is not stopped`, a run strategy that starts
/// the VM by itself (`Always`, `RerunOnFailure`) with `VirtualMachine "x" run strategy has to be
/// Halted` (field `spec.target`). `Manual` passes: the controller waits until nothing runs. A
/// target that does not exist is a new VM.
pub fn check_restore_target(store: &Store, restore: &Value) -> Result<(), ApiError> {
    let text = |p: &str| restore.pointer(p).and_then(Value::as_str).unwrap_or("");
    let (namespace, target) = (text("/metadata/namespace"), text("/spec/target/name"));
    let Ok(vm) = store.get(
        &ferrovirt_resources::VMS.store_kind(),
        Some(namespace),
        target,
    ) else {
        return Ok(());
    };
    let message = match ferrovirt_resources::kubevirt::run_strategy_of(&vm).as_str() {
        "Halted" | "Manual" => return Ok(()),
        _ if vm.pointer("/spec/running") == Some(&json!(true)) => {
            format!("VirtualMachine {target:?} is not stopped")
        }
        _ => format!("VirtualMachine {target:?} run strategy has to be Halted"),
    };
    Err(Invalid {
        kind: "VirtualMachineRestore".into(),
        group: "snapshot.kubevirt.io".into(),
        name: text("/metadata/name").to_owned(),
        causes: vec![StatusCause::invalid("spec.target", message)],
    }
    .into())
}

/// Secrets and ConfigMaps (`None` for other kinds): a Secret's `stringData` is merged into
/// `data` (base64) as kube-apiserver does, and every `data` value must be base64; a ConfigMap's
/// `data` must map names to strings. Both are stored as written otherwise.
fn admit_core_data(resource: &ResourceDef, object: &Value) -> Option<Result<Value, ApiError>> {
    use base64::Engine as _;
    let invalid = |field: &str, message: String| {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        ApiError {
            details: Some(json!({"name": name, "kind": resource.kind,
                "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]})),
            ..ApiError::invalid(format!(
                "{} {name:?} is invalid: {field}: {message}",
                resource.kind
            ))
        }
    };
    match resource.plural {
        "secrets" => {
            let mut object = object.clone();
            let mut data = object
                .get("data")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (key, value) in &data {
                let valid = value.as_str().is_some_and(|text| {
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .is_ok()
                });
                if !valid {
                    return Some(Err(invalid(
                        &format!("data[{key}]"),
                        "must be base64-encoded bytes (put plain text under stringData)".into(),
                    )));
                }
            }
            if let Some(strings) = object.get("stringData").and_then(Value::as_object) {
                for (key, value) in strings {
                    let Some(text) = value.as_str() else {
                        return Some(Err(invalid(
                            &format!("stringData[{key}]"),
                            "must be a string".into(),
                        )));
                    };
                    data.insert(
                        key.clone(),
                        json!(base64::engine::general_purpose::STANDARD.encode(text)),
                    );
                }
            }
            if let Some(map) = object.as_object_mut() {
                map.remove("stringData");
                if !data.is_empty() {
                    map.insert("data".into(), Value::Object(data));
                }
                map.entry("type").or_insert_with(|| json!("Opaque"));
            }
            Some(Ok(object))
        }
        "configmaps" => {
            if let Some(data) = object.get("data").and_then(Value::as_object)
                && let Some((key, _)) = data.iter().find(|(_, v)| !v.is_string())
            {
                return Some(Err(invalid(
                    &format!("data[{key}]"),
                    "must be a string".into(),
                )));
            }
            Some(Ok(object.clone()))
        }
        _ => None,
    }
}

/// Types, defaults and admits an object being created; returns the JSON to store.
pub fn admit_create(
    resource: &ResourceDef,
    object: Value,
    inputs: &AdmissionInputs<'_>,
) -> Result<Value, ApiError> {
    // Events and ControllerRevisions are the controllers' records, stored as written.
    if resource.plural == "events" || resource.plural == "controllerrevisions" {
        return Ok(object);
    }
    if resource.group == ferrovirt_resources::RBAC_GROUP {
        return admit_rbac(resource, object);
    }
    if let Some(admitted) = admit_core_data(resource, &object) {
        return admitted;
    }
    if resource.plural == ferrovirt_resources::VMIMS.plural {
        return admit_migration(resource, object);
    }
    let mut typed_object = typed(&object)?;
    match &mut typed_object {
        Object::VirtualMachine(vm) => apply_vm_defaults(vm),
        Object::VirtualMachineInstance(vmi) => apply_vmi_defaults(vmi),
        _ => {}
    }
    admit_typed(&typed_object, &inputs.context(None), inputs.host_paths)?;
    typed_object
        .to_json()
        .map_err(|e| ApiError::internal(format!("could not serialize the object: {e}")))
}

/// Types, defaults and admits an object replacing `old`; returns the JSON to store.
pub fn admit_update(
    resource: &ResourceDef,
    object: Value,
    old: &Value,
    inputs: &AdmissionInputs<'_>,
) -> Result<Value, ApiError> {
    // Events and ControllerRevisions are the controllers' records, stored as written.
    if resource.plural == "events" || resource.plural == "controllerrevisions" {
        return Ok(object);
    }
    if resource.group == ferrovirt_resources::RBAC_GROUP {
        return admit_rbac(resource, object);
    }
    if let Some(admitted) = admit_core_data(resource, &object) {
        return admitted;
    }
    if resource.plural == ferrovirt_resources::VMIMS.plural {
        return admit_migration(resource, object);
    }
    let mut typed_object = typed(&object)?;
    let old_typed = typed(old).ok();
    if let (Object::VirtualMachine(new), Some(Object::VirtualMachine(old))) =
        (&mut typed_object, &old_typed)
    {
        carry_over_firmware_identity(new, old);
        apply_vm_defaults(new);
    }
    admit_typed(
        &typed_object,
        &inputs.context(old_typed.as_ref()),
        inputs.host_paths,
    )?;
    typed_object
        .to_json()
        .map_err(|e| ApiError::internal(format!("could not serialize the object: {e}")))
}

/// The TPM interface a VM spec gives its guest, as KubeVirt ties it to persistence: `tpm-crb`
/// for `tpm.persistent: true`, `tpm-tis` otherwise; `None` without a TPM.
fn tpm_interface(vm: &Value) -> Option<&'static str> {
    let tpm = vm.pointer("/spec/template/spec/domain/devices/tpm")?;
    if tpm.get("enabled") == Some(&Value::Bool(false)) {
        return None;
    }
    Some(if tpm.get("persistent") == Some(&Value::Bool(true)) {
        "tpm-crb"
    } else {
        "tpm-tis"
    })
}

/// The warning (Kubernetes' `Warning:` header) for an update of a VirtualMachine that switches
/// `tpm.persistent` and with it the guest's TPM interface: BitLocker asks for its recovery key
/// at the next start (kubevirt#15701). The update is admitted.
pub fn tpm_switch_warning(old: &Value, new: &Value) -> Option<String> {
    let (before, after) = (tpm_interface(old)?, tpm_interface(new)?);
    if before == after {
        return None;
    }
    let lost = if after == "tpm-tis" {
        " and the TPM's state is no longer kept (a new, empty TPM at every start)"
    } else {
        ""
    };
    Some(format!(
        "spec.template.spec.domain.devices.tpm.persistent: this changes the guest's TPM interface \
         from {before} to {after} at the next start{lost}; BitLocker and other TPM-sealed secrets \
         will ask for their recovery key: suspend BitLocker in the guest before restarting it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_tpm_persistence_is_warned_about() {
        let vm = |tpm: Value| json!({"spec": {"template": {"spec": {"domain": {"devices": {"tpm": tpm}}}}}});
        let persistent = vm(json!({"persistent": true}));
        let ephemeral = vm(json!({}));
        let warning = tpm_switch_warning(&persistent, &ephemeral).unwrap();
        assert!(warning.contains("from tpm-crb to tpm-tis"), "{warning}");
        assert!(warning.contains("no longer kept"), "{warning}");
        assert!(warning.contains("suspend BitLocker"), "{warning}");
        let warning = tpm_switch_warning(&ephemeral, &persistent).unwrap();
        assert!(warning.contains("from tpm-tis to tpm-crb"), "{warning}");
        assert_eq!(tpm_switch_warning(&persistent, &persistent), None);
        assert_eq!(
            tpm_switch_warning(&persistent, &vm(json!({"enabled": false}))),
            None
        );
        assert_eq!(tpm_switch_warning(&json!({}), &persistent), None);
    }
    use ferrovirt_resources::{STORAGE_CLASSES, VMS};

    #[test]
    fn type_meta_and_namespace_are_checked() {
        let mut vm = json!({"metadata": {"name": "a"}});
        check_type_and_namespace(&VMS, Some("ns1"), &mut vm).unwrap();
        assert_eq!(vm["apiVersion"], "kubevirt.io/v1");
        assert_eq!(vm["kind"], "VirtualMachine");
        assert_eq!(vm["metadata"]["namespace"], "ns1");
        let mut other = json!({"metadata": {"name": "a", "namespace": "x"}});
        assert_eq!(
            check_type_and_namespace(&VMS, Some("ns1"), &mut other)
                .unwrap_err()
                .code,
            400
        );
        let mut wrong = json!({"kind": "Pod", "metadata": {"name": "a"}});
        assert_eq!(
            check_type_and_namespace(&VMS, Some("ns1"), &mut wrong)
                .unwrap_err()
                .code,
            400
        );
        let mut sc = json!({"metadata": {"name": "a", "namespace": "x"}});
        check_type_and_namespace(&STORAGE_CLASSES, None, &mut sc).unwrap();
        assert!(sc["metadata"].get("namespace").is_none());
        assert_eq!(
            check_type_and_namespace(&VMS, None, &mut json!([1]))
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn a_vm_setting_what_its_instancetype_sets_is_refused_with_kubevirts_message() {
        let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "a", "namespace": "default"},
            "spec": {"runStrategy": "Always",
                "instancetype": {"name": "u1.large"},
                "preference": {"name": "windows.11"},
                "template": {"spec": {"domain": {"cpu": {"sockets": 4}, "devices": {}}}}}});
        let references = ReferencedSpecs {
            instancetype: serde_json::from_value(
                json!({"cpu": {"guest": 2}, "memory": {"guest": "8Gi"}}),
            )
            .ok(),
            preference: None,
        };
        let (policy, cluster) = (HostPathPolicy::default(), ClusterConfig::embedded_default());
        let inputs = AdmissionInputs {
            cluster: &cluster,
            host_paths: &policy,
            firmware_uuids_in_use: &[],
            references: &references,
        };
        let err = admit_create(&VMS, vm.clone(), &inputs).unwrap_err();
        assert_eq!(err.code, 422);
        let causes = err.details.unwrap()["causes"].clone();
        assert_eq!(
            causes,
            json!([{"reason": "FieldValueInvalid",
                "message": "VM field(s) spec.template.spec.domain.cpu.sockets conflicts with selected instance type",
                "field": "spec.template.spec.domain.cpu.sockets"}])
        );
        // Without the conflicting field the VM is admitted (its memory is the instancetype's), and
        // what is stored is the reference, not an expanded copy.
        let mut fine = vm.clone();
        fine["spec"]["template"]["spec"]["domain"]["cpu"] = json!({});
        let stored = admit_create(&VMS, fine, &inputs).unwrap();
        assert_eq!(stored["spec"]["preference"], json!({"name": "windows.11"}));
        assert!(
            stored
                .pointer("/spec/template/spec/domain/memory")
                .is_none()
        );
        // A matcher naming a kind of the other role is refused with the field path.
        let mut wrong = vm.clone();
        wrong["spec"]["preference"]["kind"] = json!("VirtualMachineInstancetype");
        wrong["spec"]["template"]["spec"]["domain"]["cpu"] = json!({});
        let err = admit_create(&VMS, wrong, &inputs).unwrap_err();
        assert_eq!(
            err.details.unwrap()["causes"][0]["field"],
            "spec.preference.kind"
        );
    }

    #[test]
    fn admission_rejects_with_field_paths() {
        let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "a", "namespace": "default"},
            "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {
                "devices": {"tpm": {"persistent": true}}, "resources": {"requests": {"memory": "128Mi"}}}}}}});
        let policy = HostPathPolicy::default();
        let (plain, embedded) = (ClusterConfig::default(), ClusterConfig::embedded_default());
        let none = ReferencedSpecs::default();
        let inputs = |cluster: &'static str| AdmissionInputs {
            cluster: if cluster == "embedded" {
                &embedded
            } else {
                &plain
            },
            host_paths: &policy,
            firmware_uuids_in_use: &[],
            references: &none,
        };
        let err = admit_create(&VMS, vm.clone(), &inputs("plain")).unwrap_err();
        assert_eq!(err.code, 422);
        let causes = err.details.unwrap()["causes"].clone();
        assert!(
            causes
                .to_string()
                .contains("spec.template.spec.domain.devices.tpm.persistent"),
            "{causes}"
        );
        let admitted = admit_create(&VMS, vm, &inputs("embedded")).unwrap();
        assert!(
            admitted
                .pointer("/spec/template/spec/domain/firmware/uuid")
                .is_some()
        );
        let bad_type = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "a"}, "spec": {"running": "yes"}});
        let err = admit_create(&VMS, bad_type, &inputs("plain")).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.contains("spec.running"), "{}", err.message);
    }
}
