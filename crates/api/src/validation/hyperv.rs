//! `domain.features.hyperv`: KubeVirt's dependency rules (`webhooks/hyperv.go`) with its
//! messages, the conflict with `hypervPassthrough`, and the two values libvirt would refuse at
//! start (a spinlock retry count under 4095, a vendor id over 12 characters), refused here with
//! the field path instead.

use super::FieldPath;
use crate::hyperv_dependencies::unmet;
use crate::kubevirt::DomainSpec;
use crate::status::StatusCause;

/// libvirt's minimum spinlock retry count.
pub const MIN_SPINLOCK_RETRIES: u32 = 4095;
/// The longest Hyper-V vendor id (12 characters, CPUID's three registers).
pub const MAX_VENDOR_ID_CHARS: usize = 12;

pub(crate) fn validate_hyperv(
    domain_field: &FieldPath,
    domain: &DomainSpec,
    causes: &mut Vec<StatusCause>,
) {
    let Some(features) = &domain.features else {
        return;
    };
    let Some(hyperv) = &features.hyperv else {
        return;
    };
    let field = domain_field.children(&["features", "hyperv"]);
    for (feature, requirement) in unmet(hyperv) {
        causes.push(StatusCause::invalid(
            field.child(feature).as_str(),
            format!(
                "'{}' requires '{}', which was disabled.",
                field.child(feature),
                field.child(requirement)
            ),
        ));
    }
    if features.extra.contains_key("hypervPassthrough") {
        causes.push(StatusCause::invalid(
            field.as_str(),
            "Cannot explicitly set hyperV features if HypervPassthrough is being used. Please use either HyperV or HypervPassthrough.",
        ));
    }
    if let Some(spinlocks) = &hyperv.spinlocks
        && spinlocks.enabled != Some(false)
        && let Some(retries) = spinlocks.spinlocks
        && retries < MIN_SPINLOCK_RETRIES
    {
        let path = field.children(&["spinlocks", "spinlocks"]);
        causes.push(StatusCause::invalid(
            path.as_str(),
            format!(
                "{path} is {retries}: the Hyper-V spinlock retry count must be at least \
                 {MIN_SPINLOCK_RETRIES} (KubeVirt's default is 4096; Windows preferences use 8191)"
            ),
        ));
    }
    if let Some(vendor) = &hyperv.vendorid
        && vendor.enabled != Some(false)
    {
        let path = field.children(&["vendorid", "vendorid"]);
        match vendor.vendorid.as_deref() {
            None | Some("") => causes.push(StatusCause::invalid(
                path.as_str(),
                format!("{path} is required when the vendor id is enabled; set up to {MAX_VENDOR_ID_CHARS} characters, e.g. KVMKVMKVM"),
            )),
            Some(id)
                if id.chars().count() > MAX_VENDOR_ID_CHARS
                    || !id.chars().all(|c| c.is_ascii_graphic() && c != ',') =>
            {
                causes.push(StatusCause::invalid(
                    path.as_str(),
                    format!("{path} {id:?} must be at most {MAX_VENDOR_ID_CHARS} printable ASCII characters without spaces or commas"),
                ))
            }
            Some(_) => {}
        }
    }
}
