//! Instancetypes, preferences and a VM's matchers: the objects' required fields (KubeVirt's CRD
//! schema: `spec.cpu.guest`, `spec.memory.guest`), the matchers' kinds, and the VM's template with
//! its instancetype and preference applied (conflicts refused with KubeVirt's message).

use super::FieldPath;
use super::metadata::{NameRule, validate_object_meta};
use crate::instancetype::{
    CLUSTER_INSTANCETYPE_KIND, CLUSTER_PREFERENCE_KIND, Matcher, MatcherRole,
    VirtualMachineInstancetype, VirtualMachinePreference,
};
use crate::status::{CauseType, StatusCause};

pub(crate) fn validate_instancetype(object: &VirtualMachineInstancetype) -> Vec<StatusCause> {
    let cluster = object.kind == CLUSTER_INSTANCETYPE_KIND;
    let mut causes = validate_object_meta(&object.metadata, NameRule::Subdomain, !cluster);
    if object.spec.cpu.guest == 0 {
        causes.push(StatusCause::new(
            CauseType::FieldValueRequired,
            "spec.cpu.guest",
            "Required value: the number of vCPUs (at least 1)",
        ));
    }
    match &object.spec.memory.guest {
        None => causes.push(StatusCause::new(
            CauseType::FieldValueRequired,
            "spec.memory.guest",
            "Required value: the guest memory, e.g. 2Gi",
        )),
        Some(guest) if guest.validate().is_err() || guest.is_zero() => {
            causes.push(StatusCause::new(
                CauseType::FieldValueInvalid,
                "spec.memory.guest",
                format!(
                    "Invalid value: {:?}: must be a positive quantity, e.g. 2Gi",
                    guest.as_str()
                ),
            ))
        }
        Some(_) => {}
    }
    causes
}

pub(crate) fn validate_preference(object: &VirtualMachinePreference) -> Vec<StatusCause> {
    let cluster = object.kind == CLUSTER_PREFERENCE_KIND;
    validate_object_meta(&object.metadata, NameRule::Subdomain, !cluster)
}

/// A VM's `spec.instancetype` or `spec.preference`: a name, a kind of the role, and no
/// `inferFromVolume` (ferrovirt has no DataVolumes/DataSources to infer from).
pub(crate) fn validate_matcher(
    spec_path: &FieldPath,
    role: MatcherRole,
    matcher: &Matcher,
) -> Vec<StatusCause> {
    let path = spec_path.child(role.field());
    let mut causes = Vec::new();
    if matcher.infer_from_volume.is_some() || matcher.infer_from_volume_failure_policy.is_some() {
        let field = if matcher.infer_from_volume.is_some() {
            "inferFromVolume"
        } else {
            "inferFromVolumeFailurePolicy"
        };
        causes.push(StatusCause::new(
            CauseType::FieldValueNotSupported,
            path.child(field).as_str(),
            format!(
                "ferrovirt does not infer the {} from a volume; name it with {} (and kind)",
                role.field(),
                path.child("name")
            ),
        ));
    } else if matcher.name.is_empty() {
        causes.push(StatusCause::new(
            CauseType::FieldValueRequired,
            path.child("name").as_str(),
            format!("Required value: the name of the {}", role.field()),
        ));
    }
    if role.resolve(matcher.kind.as_deref()).is_none() {
        let [namespaced, cluster] = role.kinds();
        causes.push(StatusCause::new(
            CauseType::FieldValueNotSupported,
            path.child("kind").as_str(),
            format!(
                "Unsupported value: {:?}: supported values: \"{cluster}\", \"{namespaced}\"",
                matcher.kind.as_deref().unwrap_or("")
            ),
        ));
    }
    causes
}
