//! KubeVirt's VirtualMachineExport admitter: on create, the source's kind (`VirtualMachine`,
//! `VirtualMachineSnapshot`, `PersistentVolumeClaim`), its name and API group, with KubeVirt's
//! messages; a `ttlDuration` that parses; on update, a spec that does not change.

use super::AdmissionContext;
use super::metadata::{NameRule, validate_object_meta};
use crate::export::{VirtualMachineExport, source_kind};
use crate::kubevirt::GROUP;
use crate::parse::Object;
use crate::snapshot::{SNAPSHOT_GROUP, parse_go_duration};
use crate::status::StatusCause;

pub(crate) fn validate_export(
    export: &VirtualMachineExport,
    ctx: &AdmissionContext<'_>,
) -> Vec<StatusCause> {
    let mut causes = validate_object_meta(&export.metadata, NameRule::Subdomain, true);
    if let Some(Object::VirtualMachineExport(old)) = ctx.old_object {
        if old.spec != export.spec {
            causes.push(StatusCause::invalid(
                "spec",
                "spec in immutable after creation",
            ));
        }
        return causes;
    }
    let source = &export.spec.source;
    let group = source.api_group.as_deref().unwrap_or("");
    let (label, wanted_group) = match source.kind.as_str() {
        source_kind::PVC => ("PVC", ""),
        source_kind::SNAPSHOT => ("VMSnapshot", SNAPSHOT_GROUP),
        source_kind::VM => ("VM", GROUP),
        _ => {
            causes.push(StatusCause::invalid("spec.source.kind", "invalid kind"));
            return causes;
        }
    };
    if source.name.is_empty() {
        causes.push(StatusCause::invalid(
            "spec.source.name",
            format!("{label} name must not be empty"),
        ));
    }
    if group != wanted_group {
        let message = if wanted_group.is_empty() {
            format!("{label} API group must be missing or blank")
        } else {
            format!("{label} API group must be {wanted_group}")
        };
        causes.push(StatusCause::invalid("spec.source.APIGroup", message));
    }
    if let Some(ttl) = &export.spec.ttl_duration
        && parse_go_duration(ttl).is_none()
    {
        causes.push(StatusCause::invalid(
            "spec.ttlDuration",
            format!(
                "Invalid value: {ttl:?}: must be a duration such as \"2h\", \"30m\" or \"1h30m\""
            ),
        ));
    }
    if export.spec.token_secret_ref.as_deref() == Some("") {
        causes.push(StatusCause::invalid(
            "spec.tokenSecretRef",
            "Invalid value: \"\": name a Secret with a `token` key, or leave the field out and the \
             controller creates one",
        ));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;
    use crate::parse::parse_documents;
    use crate::validation::admit;

    fn causes(yaml: &str) -> Vec<(String, String)> {
        let docs = parse_documents(yaml.as_bytes(), "t.yaml").unwrap();
        let cluster = ClusterConfig::default();
        match admit(&docs[0], &AdmissionContext::create(&cluster)) {
            Ok(()) => vec![],
            Err(invalid) => invalid
                .causes
                .into_iter()
                .map(|c| (c.field, c.message))
                .collect(),
        }
    }

    #[test]
    fn kubevirt_messages_for_sources() {
        let ok = "apiVersion: export.kubevirt.io/v1beta1\nkind: VirtualMachineExport\nmetadata: {name: e, namespace: default}\nspec:\n  source: {apiGroup: kubevirt.io, kind: VirtualMachine, name: vm}\n  ttlDuration: 1h\n";
        assert!(causes(ok).is_empty());
        let pvc = "apiVersion: export.kubevirt.io/v1beta1\nkind: VirtualMachineExport\nmetadata: {name: e}\nspec:\n  source: {apiGroup: kubevirt.io, kind: PersistentVolumeClaim, name: \"\"}\n";
        assert_eq!(
            causes(pvc),
            vec![
                (
                    "spec.source.name".into(),
                    "PVC name must not be empty".into()
                ),
                (
                    "spec.source.APIGroup".into(),
                    "PVC API group must be missing or blank".into()
                )
            ]
        );
        let snap = "apiVersion: export.kubevirt.io/v1beta1\nkind: VirtualMachineExport\nmetadata: {name: e}\nspec:\n  source: {kind: VirtualMachineSnapshot, name: s}\n  ttlDuration: soon\n";
        let found = causes(snap);
        assert_eq!(
            found[0].1,
            "VMSnapshot API group must be snapshot.kubevirt.io"
        );
        assert_eq!(found[1].0, "spec.ttlDuration");
        let kind = "apiVersion: export.kubevirt.io/v1beta1\nkind: VirtualMachineExport\nmetadata: {name: e}\nspec:\n  source: {kind: Pod, name: p}\n";
        assert_eq!(
            causes(kind),
            vec![("spec.source.kind".into(), "invalid kind".into())]
        );
    }
}
