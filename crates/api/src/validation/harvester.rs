//! Harvester's VM templates: object metadata, a version's `spec.templateId` (`ns/name`, in the
//! version's namespace), and the VM a version holds, admitted with the VirtualMachine rules under
//! `spec.vm.spec` (so a template can never hold a VM that would be refused when created).

use super::metadata::{NameRule, validate_object_meta};
use super::vm::validate_vm_spec;
use super::{AdmissionContext, FieldPath};
use crate::harvester::{VirtualMachineTemplate, VirtualMachineTemplateVersion, split_id};
use crate::parse::Object;
use crate::status::{CauseType, StatusCause};

pub(crate) fn validate_template(template: &VirtualMachineTemplate) -> Vec<StatusCause> {
    let mut causes = validate_object_meta(&template.metadata, NameRule::Subdomain, true);
    let id = &template.spec.default_version_id;
    if !id.is_empty() && split_id(id, "").is_none() {
        causes.push(StatusCause::invalid(
            "spec.defaultVersionId",
            format!("Invalid value: {id:?}: must be \"<namespace>/<version name>\""),
        ));
    }
    causes
}

pub(crate) fn validate_template_version(
    version: &VirtualMachineTemplateVersion,
    ctx: &AdmissionContext<'_>,
) -> Vec<StatusCause> {
    let mut causes = validate_object_meta(&version.metadata, NameRule::Subdomain, true);
    let namespace = version.metadata.namespace.as_deref().unwrap_or("default");
    let id = &version.spec.template_id;
    if id.is_empty() {
        causes.push(StatusCause::new(
            CauseType::FieldValueRequired,
            "spec.templateId",
            "Required value: the template this version belongs to, as \"<namespace>/<template name>\"",
        ));
    } else {
        match split_id(id, namespace) {
            None => causes.push(StatusCause::invalid(
                "spec.templateId",
                format!("Invalid value: {id:?}: must be \"<namespace>/<template name>\""),
            )),
            Some((ns, _)) if ns != namespace => causes.push(StatusCause::invalid(
                "spec.templateId",
                format!(
                    "Invalid value: {id:?}: the template must be in the version's namespace {namespace:?}"
                ),
            )),
            Some(_) => {}
        }
    }
    let old_spec = match ctx.old_object {
        Some(Object::VirtualMachineTemplateVersion(old)) => old.spec.vm.as_ref().map(|vm| &vm.spec),
        _ => None,
    };
    let vm_spec_path = FieldPath::new("spec").children(&["vm", "spec"]);
    match &version.spec.vm {
        Some(vm) => causes.extend(validate_vm_spec(&vm_spec_path, &vm.spec, old_spec, ctx)),
        None => causes.push(StatusCause::new(
            CauseType::FieldValueRequired,
            "spec.vm",
            "Required value: the virtual machine (metadata and spec) the version creates",
        )),
    }
    causes
}

#[cfg(test)]
mod tests {
    use crate::config::ClusterConfig;
    use crate::parse::Object;
    use crate::validation::{AdmissionContext, admit};
    use serde_json::json;

    fn version(vm_spec: serde_json::Value, template_id: &str) -> Object {
        Object::from_value(
            json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "VirtualMachineTemplateVersion",
                "metadata": {"name": "t-1", "namespace": "default"},
                "spec": {"templateId": template_id, "vm": {"spec": vm_spec}}}),
            "test",
            1,
        )
        .unwrap()
    }

    fn fields(object: &Object, cluster: &ClusterConfig) -> Vec<String> {
        match admit(object, &AdmissionContext::create(cluster)) {
            Ok(()) => Vec::new(),
            Err(invalid) => invalid.causes.into_iter().map(|c| c.field).collect(),
        }
    }

    #[test]
    fn the_vm_of_a_version_gets_the_vm_rules_under_spec_vm_spec() {
        let spec = json!({"runStrategy": "Halted", "template": {"spec": {"domain": {
            "devices": {"tpm": {"persistent": true}}, "resources": {"requests": {"memory": "128Mi"}}}}}});
        let object = version(spec.clone(), "default/t");
        assert_eq!(
            fields(&object, &ClusterConfig::default()),
            ["spec.vm.spec.template.spec.domain.devices.tpm.persistent"]
        );
        assert!(fields(&object, &ClusterConfig::embedded_default()).is_empty());
        let no_template = version(json!({"runStrategy": "Halted"}), "default/t");
        assert_eq!(
            fields(&no_template, &ClusterConfig::embedded_default()),
            ["spec.vm.spec.template"]
        );
    }

    #[test]
    fn template_ids_are_checked() {
        let spec = json!({"runStrategy": "Halted", "template": {"spec": {"domain": {
            "devices": {}, "resources": {"requests": {"memory": "128Mi"}}}}}});
        let cluster = ClusterConfig::embedded_default();
        assert_eq!(
            fields(&version(spec.clone(), ""), &cluster),
            ["spec.templateId"]
        );
        assert_eq!(
            fields(&version(spec.clone(), "other/t"), &cluster),
            ["spec.templateId"]
        );
        assert_eq!(
            fields(&version(spec.clone(), "a/b/c"), &cluster),
            ["spec.templateId"]
        );
        assert!(fields(&version(spec, "t"), &cluster).is_empty());
    }
}
