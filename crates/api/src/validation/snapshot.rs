//! KubeVirt's snapshot, restore and clone admitters: the source/target reference (`apiGroup`
//! `kubevirt.io`, `kind` VirtualMachine, or for a clone's source also a VirtualMachineSnapshot),
//! a spec that never changes after creation, and ferrovirt's clone identity annotations.

use super::AdmissionContext;
use super::metadata::{NameRule, validate_object_meta};
use crate::clone::{EFI_POLICY_ANNOTATION, TPM_POLICY_ANNOTATION, VirtualMachineClone};
use crate::kubevirt::GROUP;
use crate::parse::Object;
use crate::snapshot::{
    SNAPSHOT_GROUP, TypedLocalObjectReference, VirtualMachineRestore, VirtualMachineSnapshot,
    VirtualMachineSnapshotContent, parse_go_duration,
};
use crate::status::{CauseType, StatusCause};

const SPEC_IMMUTABLE: &str = "spec in immutable after creation";

fn spec_immutable() -> StatusCause {
    StatusCause::invalid("spec", SPEC_IMMUTABLE)
}

/// A reference that must name a `kubevirt.io` VirtualMachine (or, when `allow_snapshot`, a
/// `snapshot.kubevirt.io` VirtualMachineSnapshot), with KubeVirt's messages.
fn check_reference(
    field: &str,
    reference: &TypedLocalObjectReference,
    allow_snapshot: bool,
) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let group = reference.api_group.as_deref().unwrap_or("");
    let wanted_group = match reference.kind.as_str() {
        "VirtualMachine" => GROUP,
        "VirtualMachineSnapshot" if allow_snapshot => SNAPSHOT_GROUP,
        _ => {
            causes.push(StatusCause::invalid(
                format!("{field}.kind"),
                "invalid kind",
            ));
            return causes;
        }
    };
    if group.is_empty() {
        causes.push(StatusCause::invalid(
            format!("{field}.apiGroup"),
            "missing apiGroup",
        ));
    } else if group != wanted_group {
        causes.push(StatusCause::invalid(
            format!("{field}.apiGroup"),
            "invalid apiGroup",
        ));
    }
    if reference.name.is_empty() {
        causes.push(StatusCause::new(
            CauseType::FieldValueRequired,
            format!("{field}.name"),
            "Required value: the name of the VirtualMachine",
        ));
    }
    causes
}

pub(crate) fn validate_snapshot(
    snapshot: &VirtualMachineSnapshot,
    ctx: &AdmissionContext<'_>,
) -> Vec<StatusCause> {
    let mut causes = validate_object_meta(&snapshot.metadata, NameRule::Subdomain, true);
    if let Some(Object::VirtualMachineSnapshot(old)) = ctx.old_object {
        if old.spec != snapshot.spec {
            causes.push(spec_immutable());
        }
        return causes;
    }
    causes.extend(check_reference("spec.source", &snapshot.spec.source, false));
    if let Some(deadline) = &snapshot.spec.failure_deadline
        && parse_go_duration(deadline).is_none()
    {
        causes.push(StatusCause::invalid(
            "spec.failureDeadline",
            format!(
                "Invalid value: {deadline:?}: must be a duration such as \"5m\", \"90s\" or \"1h30m\""
            ),
        ));
    }
    causes
}

pub(crate) fn validate_snapshot_content(
    content: &VirtualMachineSnapshotContent,
    ctx: &AdmissionContext<'_>,
) -> Vec<StatusCause> {
    let mut causes = validate_object_meta(&content.metadata, NameRule::Subdomain, true);
    if let Some(Object::VirtualMachineSnapshotContent(old)) = ctx.old_object
        && old.spec != content.spec
    {
        causes.push(spec_immutable());
    }
    causes
}

pub(crate) fn validate_restore(
    restore: &VirtualMachineRestore,
    ctx: &AdmissionContext<'_>,
) -> Vec<StatusCause> {
    let mut causes = validate_object_meta(&restore.metadata, NameRule::Subdomain, true);
    if let Some(Object::VirtualMachineRestore(old)) = ctx.old_object {
        if old.spec != restore.spec {
            causes.push(spec_immutable());
        }
        return causes;
    }
    causes.extend(check_reference("spec.target", &restore.spec.target, false));
    if restore.spec.virtual_machine_snapshot_name.is_empty() {
        causes.push(StatusCause::new(
            CauseType::FieldValueRequired,
            "spec.virtualMachineSnapshotName",
            "Required value: the name of the VirtualMachineSnapshot to restore",
        ));
    }
    if let Some(policy) = &restore.spec.target_readiness_policy
        && ![
            "StopTarget",
            "WaitGracePeriod",
            "FailImmediate",
            "WaitEventually",
        ]
        .contains(&policy.as_str())
    {
        causes.push(StatusCause::new(
            CauseType::FieldValueNotSupported,
            "spec.targetReadinessPolicy",
            format!(
                "Unsupported value: {policy:?}: supported values: \"StopTarget\", \"WaitGracePeriod\", \"FailImmediate\", \"WaitEventually\""
            ),
        ));
    }
    causes
}

pub(crate) fn validate_clone(
    clone: &VirtualMachineClone,
    ctx: &AdmissionContext<'_>,
) -> Vec<StatusCause> {
    let mut causes = validate_object_meta(&clone.metadata, NameRule::Subdomain, true);
    if let Some(Object::VirtualMachineClone(old)) = ctx.old_object {
        if old.spec != clone.spec {
            causes.push(spec_immutable());
        }
        return causes;
    }
    match &clone.spec.source {
        None => causes.push(StatusCause::new(
            CauseType::FieldValueRequired,
            "spec.source",
            "Source cannot be nil",
        )),
        Some(source) => causes.extend(check_reference("spec.source", source, true)),
    }
    if let Some(target) = &clone.spec.target {
        causes.extend(check_reference("spec.target", target, false));
        if let Some(source) = &clone.spec.source
            && source.kind == "VirtualMachine"
            && source.name == target.name
        {
            causes.push(StatusCause::invalid(
                "spec.target.name",
                "Target name cannot be equal to source name",
            ));
        }
    }
    if let Err(value) = clone.tpm_policy() {
        causes.push(StatusCause::new(
            CauseType::FieldValueNotSupported,
            format!("metadata.annotations[{TPM_POLICY_ANNOTATION}]"),
            format!("Unsupported value: {value:?}: supported values: \"copy\", \"fresh\""),
        ));
    }
    if let Err(value) = clone.efi_policy() {
        causes.push(StatusCause::new(
            CauseType::FieldValueNotSupported,
            format!("metadata.annotations[{EFI_POLICY_ANNOTATION}]"),
            format!("Unsupported value: {value:?}: supported values: \"copy\", \"reset\""),
        ));
    }
    for (interface, mac) in &clone.spec.new_mac_addresses {
        if !is_mac(mac) {
            causes.push(StatusCause::invalid(
                format!("spec.newMacAddresses[{interface}]"),
                format!("Invalid value: {mac:?}: must be a MAC address such as 02:00:00:00:00:01"),
            ));
        }
    }
    causes
}

fn is_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterConfig;
    use serde_json::json;

    fn fields(causes: &[StatusCause]) -> Vec<(String, String)> {
        causes
            .iter()
            .map(|c| (c.field.clone(), c.message.clone()))
            .collect()
    }

    #[test]
    fn snapshot_sources_as_kubevirt() {
        let cluster = ClusterConfig::default();
        let ctx = AdmissionContext::create(&cluster);
        let snapshot = |source: serde_json::Value| -> VirtualMachineSnapshot {
            serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"source": source}}))
                .unwrap()
        };
        let ok =
            snapshot(json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}));
        assert!(validate_snapshot(&ok, &ctx).is_empty());
        let causes = validate_snapshot(
            &snapshot(json!({"kind": "VirtualMachine", "name": "vm"})),
            &ctx,
        );
        assert_eq!(
            fields(&causes),
            [("spec.source.apiGroup".into(), "missing apiGroup".into())]
        );
        let causes = validate_snapshot(
            &snapshot(json!({"apiGroup": "x", "kind": "Pod", "name": "p"})),
            &ctx,
        );
        assert_eq!(
            fields(&causes),
            [("spec.source.kind".into(), "invalid kind".into())]
        );

        let old = Object::VirtualMachineSnapshot(Box::new(ok.clone()));
        let update = AdmissionContext::update(&cluster, &old);
        let mut changed = ok.clone();
        changed.spec.source.name = "other".into();
        assert_eq!(
            fields(&validate_snapshot(&changed, &update)),
            [("spec".into(), SPEC_IMMUTABLE.into())]
        );
        assert!(validate_snapshot(&ok, &update).is_empty());
    }

    #[test]
    fn clones_check_sources_policies_and_macs() {
        let cluster = ClusterConfig::default();
        let ctx = AdmissionContext::create(&cluster);
        let clone: VirtualMachineClone = serde_json::from_value(json!({
            "metadata": {"name": "c", "annotations": {TPM_POLICY_ANNOTATION: "new", EFI_POLICY_ANNOTATION: "reset"}},
            "spec": {"source": {"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot", "name": "s"},
                "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "b"},
                "newMacAddresses": {"default": "zz:00:00:00:00:01"}}})).unwrap();
        let got = fields(&validate_clone(&clone, &ctx));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "metadata.annotations[clone.ferrovirt.io/tpm]");
        assert_eq!(got[1].0, "spec.newMacAddresses[default]");
        let same: VirtualMachineClone = serde_json::from_value(json!({"metadata": {"name": "c"},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "a"},
                "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "a"}}}))
        .unwrap();
        assert_eq!(
            fields(&validate_clone(&same, &ctx))[0].0,
            "spec.target.name"
        );
    }
}
