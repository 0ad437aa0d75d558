//! A VM's instancetype and preference, as KubeVirt's VM controller keeps them
//! (`pkg/instancetype/revision`): the first time a VM refers to one, a ControllerRevision owned by
//! the VM stores a copy and `status.instancetypeRef` / `status.preferenceRef` record its name;
//! from then on the VM's instances are built from that copy, so a later change of the cluster
//! preference does not change an existing VM. A referenced object that does not exist is a
//! failure (`FailedFindInstancetype` / `FailedFindPreference`) and no VMI is started. Pure: the
//! world holds what the cache has.

use ferrovirt_api::instancetype::{MatcherRole, ReferencedSpecs};
use ferrovirt_api::kubevirt::VirtualMachine;
use ferrovirt_resources::instancetypes::{
    instancetype_spec, matcher, not_found, preference_spec, resource_of, revision_for,
    revision_in_use, status_field,
};
use ferrovirt_resources::kubevirt::meta_str;
use ferrovirt_resources::{CONTROLLER_REVISIONS, VMS};
use serde_json::{Value, json};

use crate::action::Action;
use crate::world::VmWorld;

/// Where the VM's references stand.
#[derive(Debug, Clone, PartialEq)]
pub enum ReferenceSync {
    /// The VM refers to no instancetype or preference.
    Unreferenced,
    /// A referenced object or revision is missing: KubeVirt's failure reason and message.
    Failed {
        reason: &'static str,
        message: String,
    },
    /// Revisions to store and the status references to record before anything else.
    Record(Vec<Action>),
    /// The specs to apply, from the VM's revisions.
    Ready(Box<ReferencedSpecs>),
}

fn failed_find(role: MatcherRole) -> &'static str {
    match role {
        MatcherRole::Instancetype => "FailedFindInstancetype",
        MatcherRole::Preference => "FailedFindPreference",
    }
}

/// Reads (and, the first time, records) the VM's instancetype and preference.
pub fn sync_references(vm: &Value, world: &VmWorld) -> ReferenceSync {
    let Ok(typed) = serde_json::from_value::<VirtualMachine>(vm.clone()) else {
        return ReferenceSync::Unreferenced;
    };
    if typed.spec.instancetype.is_none() && typed.spec.preference.is_none() {
        return ReferenceSync::Unreferenced;
    }
    let mut specs = ReferencedSpecs::default();
    let mut status = vm.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut creates = Vec::new();
    for role in [MatcherRole::Instancetype, MatcherRole::Preference] {
        let field = status_field(role);
        let Some(m) = matcher(&typed, role) else {
            if let Some(map) = status.as_object_mut() {
                map.remove(field);
            }
            continue;
        };
        let Some(kind) = role.resolve(m.kind.as_deref()) else {
            return ReferenceSync::Failed {
                reason: failed_find(role),
                message: format!(
                    "got unexpected kind in {}Matcher: {}",
                    if role == MatcherRole::Instancetype {
                        "Instancetype"
                    } else {
                        "Preference"
                    },
                    m.kind.as_deref().unwrap_or("")
                ),
            };
        };
        let find_revision = |name: &str| {
            world
                .references
                .revisions
                .iter()
                .find(|r| meta_str(r, "name") == name)
                .map(|r| (**r).clone())
        };
        let source = match revision_in_use(vm, role, m) {
            Some(name) => match find_revision(name) {
                Some(revision) => revision,
                None => {
                    return ReferenceSync::Failed {
                        reason: failed_find(role),
                        message: not_found(&CONTROLLER_REVISIONS, name),
                    };
                }
            },
            None => {
                let object = match role {
                    MatcherRole::Instancetype => world.references.instancetype,
                    MatcherRole::Preference => world.references.preference,
                };
                let Some(object) = object else {
                    return ReferenceSync::Failed {
                        reason: failed_find(role),
                        message: not_found(&resource_of(kind), &m.name),
                    };
                };
                let revision = revision_for(vm, object);
                match find_revision(meta_str(&revision, "name")) {
                    Some(existing) => existing,
                    None => {
                        creates.push(Action::Create {
                            resource: CONTROLLER_REVISIONS,
                            object: revision.clone(),
                        });
                        revision
                    }
                }
            }
        };
        let unreadable = || ReferenceSync::Failed {
            reason: failed_find(role),
            message: format!(
                "ControllerRevision {} does not hold a {}",
                meta_str(&source, "name"),
                kind.kind
            ),
        };
        match role {
            MatcherRole::Instancetype => match instancetype_spec(&source) {
                Some(spec) => specs.instancetype = Some(spec),
                None => return unreadable(),
            },
            MatcherRole::Preference => match preference_spec(&source) {
                Some(spec) => specs.preference = Some(spec),
                None => return unreadable(),
            },
        }
        status[field] = json!({
            "kind": kind.kind,
            "name": m.name,
            "controllerRevisionRef": {"name": meta_str(&source, "name")},
        });
    }
    if creates.is_empty() && vm.get("status").unwrap_or(&json!({})) == &status {
        return ReferenceSync::Ready(Box::new(specs));
    }
    let mut updated = vm.clone();
    updated["status"] = status;
    creates.push(Action::UpdateStatus {
        resource: VMS,
        object: updated,
    });
    ReferenceSync::Record(creates)
}
