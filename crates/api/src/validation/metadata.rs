//! The API server's object-metadata checks: `name` or `generateName` present and an RFC 1123
//! subdomain (or label, for namespaces), namespace a label.

use super::FieldPath;
use super::names::{dns1123_label_errors, dns1123_subdomain_errors, invalid_value};
use crate::meta::ObjectMeta;
use crate::status::{CauseType, StatusCause};

/// Which name rule the kind uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    Subdomain,
    Label,
}

pub(crate) fn validate_object_meta(
    meta: &ObjectMeta,
    rule: NameRule,
    namespaced: bool,
) -> Vec<StatusCause> {
    let path = FieldPath::new("metadata");
    let mut causes = Vec::new();
    let check = |value: &str| match rule {
        NameRule::Subdomain => dns1123_subdomain_errors(value),
        NameRule::Label => dns1123_label_errors(value),
    };
    match (&meta.name, &meta.generate_name) {
        (Some(name), _) if !name.is_empty() => {
            for err in check(name) {
                causes.push(StatusCause::invalid(
                    path.child("name").as_str(),
                    invalid_value(name, &err),
                ));
            }
        }
        (_, Some(prefix)) if !prefix.is_empty() => {
            // As apimachinery: a trailing '-' is allowed in a prefix.
            let masked = match prefix.strip_suffix('-') {
                Some(stem) => format!("{stem}a"),
                None => prefix.clone(),
            };
            for err in check(&masked) {
                causes.push(StatusCause::invalid(
                    path.child("generateName").as_str(),
                    invalid_value(prefix, &err),
                ));
            }
        }
        _ => causes.push(StatusCause::new(
            CauseType::FieldValueRequired,
            path.child("name").as_str(),
            "Required value: name or generateName is required",
        )),
    }
    if let Some(namespace) = meta.namespace.as_deref().filter(|ns| !ns.is_empty()) {
        if namespaced {
            for err in dns1123_label_errors(namespace) {
                causes.push(StatusCause::invalid(
                    path.child("namespace").as_str(),
                    invalid_value(namespace, &err),
                ));
            }
        } else {
            causes.push(StatusCause::new(
                CauseType::FieldValueForbidden,
                path.child("namespace").as_str(),
                "Forbidden: not allowed on this type",
            ));
        }
    }
    causes
}
