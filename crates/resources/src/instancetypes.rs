//! A VirtualMachine's instancetype and preference as both sides of `serve` find them: the
//! resource a matcher names, the copy kept in a ControllerRevision (KubeVirt's layout: the whole
//! object in `data`, labels `instancetype.kubevirt.io/object-*`), the VM's status references
//! (`status.instancetypeRef` / `status.preferenceRef`), and Kubernetes' NotFound wording.

use ferrovirt_api::instancetype::{
    InstancetypeSpec, Matcher, MatcherRole, PreferenceSpec, ReferencedKind, ReferencedSpecs,
    VERSION, revision_name,
};
use ferrovirt_api::kubevirt::VirtualMachine;
use ferrovirt_store::Store;
use serde_json::{Value, json};

use crate::catalogue::{
    CLUSTER_INSTANCETYPES, CLUSTER_PREFERENCES, CONTROLLER_REVISIONS, INSTANCETYPES, PREFERENCES,
    ResourceDef,
};

/// The served resource of a resolved matcher kind.
pub fn resource_of(kind: ReferencedKind) -> ResourceDef {
    match (kind.kind.contains("Instancetype"), kind.cluster) {
        (true, true) => CLUSTER_INSTANCETYPES,
        (true, false) => INSTANCETYPES,
        (false, true) => CLUSTER_PREFERENCES,
        (false, false) => PREFERENCES,
    }
}

/// The VM's matcher of `role`.
pub fn matcher(vm: &VirtualMachine, role: MatcherRole) -> Option<&Matcher> {
    match role {
        MatcherRole::Instancetype => vm.spec.instancetype.as_ref(),
        MatcherRole::Preference => vm.spec.preference.as_ref(),
    }
}

/// The status field of a role's reference.
pub fn status_field(role: MatcherRole) -> &'static str {
    match role {
        MatcherRole::Instancetype => "instancetypeRef",
        MatcherRole::Preference => "preferenceRef",
    }
}

/// The ControllerRevision a VM uses for `role`: `revisionName` of the matcher, else the one its
/// status records for the same kind and name (KubeVirt's order).
pub fn revision_in_use<'a>(
    vm: &'a Value,
    role: MatcherRole,
    matcher: &'a Matcher,
) -> Option<&'a str> {
    if let Some(name) = matcher.revision_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(name);
    }
    let status_ref = vm.get("status")?.get(status_field(role))?;
    let resolved = role.resolve(matcher.kind.as_deref())?;
    let same = status_ref.get("name").and_then(Value::as_str) == Some(matcher.name.as_str())
        && status_ref.get("kind").and_then(Value::as_str) == Some(resolved.kind);
    same.then(|| {
        status_ref
            .pointer("/controllerRevisionRef/name")
            .and_then(Value::as_str)
    })
    .flatten()
}

/// Kubernetes' NotFound message: `virtualmachineclusterpreferences.instancetype.kubevirt.io "x" not found`.
pub fn not_found(resource: &ResourceDef, name: &str) -> String {
    format!("{} {name:?} not found", resource.qualified())
}

/// The ControllerRevision keeping `object` (an instancetype or preference) for the VM, as
/// KubeVirt's `revision.CreateControllerRevision` builds it.
pub fn revision_for(vm: &Value, object: &Value) -> Value {
    let text = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (vm_name, vm_uid) = (text(vm, "/metadata/name"), text(vm, "/metadata/uid"));
    let (name, uid, kind) = (
        text(object, "/metadata/name"),
        text(object, "/metadata/uid"),
        text(object, "/kind"),
    );
    let generation = object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let mut data = object.clone();
    if let Some(meta) = data.get_mut("metadata").and_then(Value::as_object_mut) {
        for drop in [
            "labels",
            "annotations",
            "finalizers",
            "ownerReferences",
            "managedFields",
            "namespace",
        ] {
            meta.remove(drop);
        }
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": revision_name(&vm_name, &name, &uid, generation),
            "namespace": text(vm, "/metadata/namespace"),
            "labels": {
                "instancetype.kubevirt.io/object-generation": generation.to_string(),
                "instancetype.kubevirt.io/object-kind": kind,
                "instancetype.kubevirt.io/object-name": name,
                "instancetype.kubevirt.io/object-uid": uid,
                "instancetype.kubevirt.io/object-version": VERSION,
            },
            "ownerReferences": [{
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": vm_name,
                "uid": vm_uid, "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "data": data,
        "revision": 0,
    })
}

/// The instancetype spec of an object or of a ControllerRevision holding one.
pub fn instancetype_spec(object_or_revision: &Value) -> Option<InstancetypeSpec> {
    let object = object_or_revision.get("data").unwrap_or(object_or_revision);
    serde_json::from_value(object.get("spec")?.clone()).ok()
}

/// The preference spec of an object or of a ControllerRevision holding one.
pub fn preference_spec(object_or_revision: &Value) -> Option<PreferenceSpec> {
    let object = object_or_revision.get("data").unwrap_or(object_or_revision);
    serde_json::from_value(object.get("spec")?.clone()).ok()
}

/// What the API server's admission applies to a VM: the revision it uses, else the live object
/// (a missing one is left out; the VM controller reports it, as KubeVirt's admission ignores it).
pub fn find_referenced(store: &Store, vm: &Value) -> ReferencedSpecs {
    let Ok(typed) = serde_json::from_value::<VirtualMachine>(vm.clone()) else {
        return ReferencedSpecs::default();
    };
    let ns = vm
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let find = |role: MatcherRole| -> Option<Value> {
        let matcher = matcher(&typed, role)?;
        if let Some(revision) = revision_in_use(vm, role, matcher) {
            return store
                .get(&CONTROLLER_REVISIONS.store_kind(), Some(ns), revision)
                .ok();
        }
        let resource = resource_of(role.resolve(matcher.kind.as_deref())?);
        let namespace = resource.namespaced.then_some(ns);
        store
            .get(&resource.store_kind(), namespace, &matcher.name)
            .ok()
    };
    ReferencedSpecs {
        instancetype: find(MatcherRole::Instancetype)
            .as_ref()
            .and_then(instancetype_spec),
        preference: find(MatcherRole::Preference)
            .as_ref()
            .and_then(preference_spec),
    }
}
