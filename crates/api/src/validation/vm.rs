//! VirtualMachine and VirtualMachineInstance admission: metadata, run strategy, the template or
//! instance spec, mandatory memory, and the immutability of `firmware.uuid` on update.

use super::instancetype::validate_matcher;
use super::metadata::{NameRule, validate_object_meta};
use super::spec::{validate_instance_spec, validate_memory_present};
use super::{AdmissionContext, FieldPath};
use crate::instancetype::MatcherRole;
use crate::instancetype::apply::apply_to_instance_spec;
use crate::kubevirt::{
    RunStrategy, VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceSpec,
    VirtualMachineSpec,
};
use crate::parse::Object;
use crate::status::{CauseType, StatusCause};

pub(crate) fn validate_vm(vm: &VirtualMachine, ctx: &AdmissionContext<'_>) -> Vec<StatusCause> {
    let mut causes = validate_object_meta(&vm.metadata, NameRule::Subdomain, true);
    let old_spec = match ctx.old_object {
        Some(Object::VirtualMachine(old)) => Some(&old.spec),
        _ => None,
    };
    causes.extend(validate_vm_spec(
        &FieldPath::new("spec"),
        &vm.spec,
        old_spec,
        ctx,
    ));
    causes.extend(super::cdi::validate_data_volume_templates(&vm.spec));
    if let Some(template) = &vm.spec.template {
        let spec_path = "spec.template.spec";
        if let Some(policy) = ctx.host_paths {
            causes.extend(super::host_paths::validate_host_disk_paths(
                spec_path,
                &template.spec,
                policy,
            ));
        }
        causes.extend(super::uniqueness::validate_firmware_uuid_unique(
            spec_path,
            vm.metadata.namespace.as_deref().unwrap_or("default"),
            vm.metadata.name.as_deref().unwrap_or_default(),
            &template.spec,
            ctx.firmware_uuids_in_use,
        ));
    }
    causes
}

/// The rules for a VirtualMachine's spec at `spec_path` (`spec` of a VM, `spec.vm.spec` of a
/// Harvester template version); `old_spec` is the stored spec on update.
pub(crate) fn validate_vm_spec(
    spec_path: &FieldPath,
    spec: &VirtualMachineSpec,
    old_spec: Option<&VirtualMachineSpec>,
    ctx: &AdmissionContext<'_>,
) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let Some(template) = &spec.template else {
        causes.push(StatusCause::new(
            CauseType::FieldValueRequired,
            spec_path.child("template").as_str(),
            "missing virtual machine template.",
        ));
        return causes;
    };
    let template_spec_path = spec_path.children(&["template", "spec"]);
    for (role, matcher) in [
        (MatcherRole::Instancetype, &spec.instancetype),
        (MatcherRole::Preference, &spec.preference),
    ] {
        if let Some(matcher) = matcher {
            causes.extend(validate_matcher(spec_path, role, matcher));
        }
    }
    // As KubeVirt's VM admitter: the referenced instancetype and preference are applied to a copy
    // of the template; conflicts are refused, and the result is what gets validated.
    let mut applied = template.spec.clone();
    if let Some(references) = ctx.references {
        let conflicts = apply_to_instance_spec(
            template_spec_path.as_str(),
            references.instancetype.as_ref(),
            references.preference.as_ref(),
            &mut applied,
        );
        if !conflicts.is_empty() {
            causes.extend(conflicts);
            return causes;
        }
    }
    causes.extend(validate_instance_spec(
        &template_spec_path,
        &applied,
        ctx.cluster,
    ));
    causes.extend(validate_run_strategy(spec_path, spec, ctx.cluster));
    // KubeVirt checks mandatory memory only when the VMI is created; ferrovirt checks the template
    // at VM admission already, so a VM that could never start is refused up front. With an
    // instancetype the memory is the instancetype's (a missing one is reported by the VM
    // controller, as KubeVirt does).
    if spec.instancetype.is_none() {
        causes.extend(validate_memory_present(&template_spec_path, &applied));
    }
    if let Some(old_template) = old_spec.and_then(|old| old.template.as_ref()) {
        causes.extend(validate_uuid_unchanged(
            &template_spec_path,
            &old_template.spec,
            &template.spec,
        ));
    }
    causes
}

pub(crate) fn validate_vmi(
    vmi: &VirtualMachineInstance,
    ctx: &AdmissionContext<'_>,
) -> Vec<StatusCause> {
    let mut causes = validate_object_meta(&vmi.metadata, NameRule::Subdomain, true);
    let spec_path = FieldPath::new("spec");
    causes.extend(validate_instance_spec(&spec_path, &vmi.spec, ctx.cluster));
    causes.extend(validate_memory_present(&spec_path, &vmi.spec));
    if let Some(Object::VirtualMachineInstance(old)) = ctx.old_object {
        causes.extend(validate_uuid_unchanged(&spec_path, &old.spec, &vmi.spec));
    }
    if let Some(policy) = ctx.host_paths {
        causes.extend(super::host_paths::validate_host_disk_paths(
            spec_path.as_str(),
            &vmi.spec,
            policy,
        ));
    }
    causes
}

fn validate_run_strategy(
    spec_path: &FieldPath,
    spec: &VirtualMachineSpec,
    cluster: &crate::config::ClusterConfig,
) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let running = spec.running;
    let strategy = spec.run_strategy.as_deref();
    if running.is_some() && strategy.is_some() {
        causes.push(StatusCause::invalid(
            spec_path.child("running").as_str(),
            "Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead",
        ));
    }
    if running.is_none() && strategy.is_none() {
        causes.push(StatusCause::invalid(
            spec_path.child("running").as_str(),
            "RunStrategy must be specified",
        ));
    }
    if strategy == Some(WAIT_AS_RECEIVER) {
        // KubeVirt's: a receiver of a decentralized live migration, behind its feature gate.
        if !cluster.decentralized_live_migration_enabled() {
            causes.push(StatusCause::invalid(
                spec_path.child("runStrategy").as_str(),
                format!(
                    "Invalid RunStrategy ({WAIT_AS_RECEIVER}), {} feature gate is not enabled in kubevirt resource",
                    crate::config::DECENTRALIZED_LIVE_MIGRATION_GATE
                ),
            ));
        }
    } else if let Some(strategy) = strategy
        && RunStrategy::parse(strategy).is_none()
    {
        causes.push(StatusCause::invalid(
            spec_path.child("runStrategy").as_str(),
            format!("Invalid RunStrategy ({strategy})"),
        ));
    }
    causes
}

/// KubeVirt's `RunStrategyWaitAsReceiver`: the VM's instance waits for an incoming live migration.
pub const WAIT_AS_RECEIVER: &str = "WaitAsReceiver";

/// `firmware.uuid` keys the persistent TPM state: once set it must not change or disappear.
fn validate_uuid_unchanged(
    spec_path: &FieldPath,
    old: &VirtualMachineInstanceSpec,
    new: &VirtualMachineInstanceSpec,
) -> Vec<StatusCause> {
    match (old.firmware_uuid(), new.firmware_uuid()) {
        (Some(old_uuid), new_uuid) if Some(old_uuid) != new_uuid => {
            let path = spec_path.children(&["domain", "firmware", "uuid"]);
            vec![StatusCause::invalid(
                path.as_str(),
                format!(
                    "Invalid value: {:?}: field is immutable once set (was {old_uuid:?}): the firmware UUID keys the VM's persistent TPM state",
                    new_uuid.unwrap_or("")
                ),
            )]
        }
        _ => Vec::new(),
    }
}
