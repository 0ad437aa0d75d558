//! CDI's DataVolume webhook (`pkg/apiserver/webhooks/datavolume-validate.go` and `util.go`):
//! the same rules, messages and (CDI's own Go-named) field paths: `spec.PVC`, `spec.source`,
//! `spec.source.HTTP.url`, ...; the spec never changes after creation. And KubeVirt's
//! `ValidateDataVolumeTemplate` for a VM's `spec.dataVolumeTemplates`.

use super::metadata::{NameRule, validate_object_meta};
use super::{AdmissionContext, FieldPath};
use crate::cdi::{Checksum, DataVolume, DataVolumeSpec, UploadTokenRequest};
use crate::kubevirt::VirtualMachineSpec;
use crate::parse::Object;
use crate::status::{CauseType, StatusCause};

const MIB: i128 = 1024 * 1024;

/// KubeVirt's `DataVolumeTemplateSpec` as the VM carries it: metadata + a DataVolume spec.
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct TemplateEntry {
    #[serde(default)]
    metadata: crate::meta::ObjectMeta,
    #[serde(default)]
    spec: DataVolumeSpec,
}

pub(crate) fn validate_data_volume(
    dv: &DataVolume,
    ctx: &AdmissionContext<'_>,
) -> Vec<StatusCause> {
    let mut causes = validate_object_meta(&dv.metadata, NameRule::Subdomain, true);
    if let Some(Object::DataVolume(old)) = ctx.old_object {
        if old.spec != dv.spec {
            causes.push(StatusCause::invalid(
                "DataVolume.Spec",
                "Cannot update DataVolume Spec",
            ));
        }
        return causes;
    }
    if let Some(name) = dv.metadata.name.as_deref()
        && name.len() > 253
    {
        causes.push(StatusCause::invalid(
            "",
            "Name cannot be longer than 253 characters",
        ));
    }
    causes.extend(validate_spec(&FieldPath::new("spec"), &dv.spec));
    causes
}

/// CDI's `validateDataVolumeSpec`, returning early where CDI does.
pub(crate) fn validate_spec(field: &FieldPath, spec: &DataVolumeSpec) -> Vec<StatusCause> {
    let invalid = |path: String, message: String| vec![StatusCause::invalid(path, message)];
    if spec.pvc.is_none() && spec.storage.is_none() {
        return invalid(
            field.child("PVC").to_string(),
            "Missing Data volume PVC".into(),
        );
    }
    if spec.pvc.is_some() && spec.storage.is_some() {
        return invalid(
            field.children(&["PVC", "Storage"]).to_string(),
            "Duplicate storage definition, both target storage and target pvc defined".into(),
        );
    }
    let Some(source) = &spec.source else {
        if spec.source_ref.is_some() {
            return invalid(
                field.child("sourceRef").to_string(),
                "DataSource sourceRefs are not supported by ferrovirt (no DataSources are served); \
                 use source.http, source.upload, source.blank or source.pvc"
                    .into(),
            );
        }
        return invalid(
            field.child("source").to_string(),
            "Data volume should have either Source or SourceRef, or be externally populated".into(),
        );
    };
    let sources = source.set_sources();
    if sources.is_empty() {
        return invalid(
            field.child("source").to_string(),
            "Missing Data volume source".into(),
        );
    }
    if sources.len() > 1 {
        return invalid(
            field.child("source").to_string(),
            "Multiple Data volume sources".into(),
        );
    }
    if let Some(content_type) = spec.content_type.as_deref()
        && !matches!(content_type, "" | "kubevirt" | "archive")
    {
        return invalid(
            field.child("contentType").to_string(),
            "ContentType not one of: kubevirt, archive".into(),
        );
    }
    let archive = spec.content_type.as_deref() == Some("archive");
    if let Some(http) = &source.http {
        let url_field = field.children(&["source", "HTTP", "url"]).to_string();
        let source_field = field.child("source");
        if http.url.is_empty() {
            return invalid(url_field, format!("{source_field} source URL is empty"));
        }
        match http.url.split_once("://") {
            Some(("http" | "https", rest)) if !rest.is_empty() => {}
            Some(("http" | "https", _)) | None => {
                return invalid(
                    url_field,
                    format!("{source_field} Invalid source URL: {}", http.url),
                );
            }
            Some(_) => {
                return invalid(
                    url_field,
                    format!("{source_field} Invalid source URL scheme: {}", http.url),
                );
            }
        }
        if let Some(checksum) = http.checksum.as_deref().filter(|c| !c.is_empty())
            && let Err(error) = Checksum::parse(checksum)
        {
            return invalid(
                field.children(&["source", "HTTP", "checksum"]).to_string(),
                format!("Invalid checksum format: {error}"),
            );
        }
        for (i, header) in http.extra_headers.iter().enumerate() {
            if !header.contains(':') {
                return invalid(
                    format!("{field}.source.http.extraHeaders[{i}]"),
                    format!(
                        "extra header {header:?} is not a header line; write it as 'Name: value'"
                    ),
                );
            }
        }
    }
    if source.blank.is_some() && archive {
        return invalid(
            field.child("contentType").to_string(),
            "SourceType cannot be blank and the contentType be archive".into(),
        );
    }
    if let Some(pvc) = &source.pvc
        && (pvc.namespace.is_empty() || pvc.name.is_empty())
    {
        let pvc_field = field.children(&["source", "PVC"]).to_string();
        return invalid(
            pvc_field.clone(),
            format!("{pvc_field} source PVC is not valid"),
        );
    }
    // Size: `Storage` may leave it out only for a clone (the source's size).
    let (name, claim) = match (&spec.pvc, &spec.storage) {
        (Some(pvc), _) => ("PVC", pvc),
        (None, Some(storage)) => ("Storage", storage),
        (None, None) => return Vec::new(),
    };
    let size_field = field
        .children(&[name, "resources", "requests", "size"])
        .to_string();
    let size = claim.resources.as_ref().and_then(|r| r.request("storage"));
    match size.map(|q| q.value()) {
        Some(Ok(bytes)) if bytes <= 0 => {
            return invalid(
                size_field,
                format!("{name} size can't be equal or less than zero"),
            );
        }
        Some(Ok(bytes)) if bytes < MIB => {
            return invalid(size_field, format!("{name} size should be at least 1MiB"));
        }
        Some(Ok(_)) => {}
        Some(Err(error)) => return invalid(size_field, error.to_string()),
        None if name == "PVC" || source.pvc.is_none() => {
            return invalid(size_field, format!("{name} size is missing"));
        }
        None => {}
    }
    if let Some(modes) = &claim.access_modes {
        let modes_field = field.children(&[name, "accessModes"]).to_string();
        if name == "PVC" && modes.is_empty() {
            return invalid(
                modes_field,
                "Required value: at least 1 access mode is required".into(),
            );
        }
        if name == "PVC" && modes.len() > 1 {
            return invalid(modes_field, "PVC multiple accessModes".into());
        }
        for mode in modes {
            if !matches!(
                mode.as_str(),
                "ReadOnlyMany" | "ReadWriteMany" | "ReadWriteOnce" | "ReadWriteOncePod"
            ) {
                return invalid(
                    modes_field,
                    format!(
                        "Unsupported value: \"{mode}\": supported values: \"ReadOnlyMany\", \
                         \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\""
                    ),
                );
            }
        }
    }
    if claim.volume_mode.as_deref() == Some("Block") {
        return invalid(
            field.children(&[name, "volumeMode"]).to_string(),
            "volumeMode Block is not supported by ferrovirt's local-path volumes; use Filesystem \
             (the image is the volume's disk.img)"
                .into(),
        );
    }
    Vec::new()
}

/// KubeVirt's `ValidateDataVolumeTemplate` (field `spec.dataVolumeTemplate[i]`, as KubeVirt
/// spells it), then CDI's spec rules on each entry.
pub(crate) fn validate_data_volume_templates(spec: &VirtualMachineSpec) -> Vec<StatusCause> {
    let Some(templates) = spec.extra.get("dataVolumeTemplates") else {
        return Vec::new();
    };
    let Some(templates) = templates.as_array() else {
        return vec![StatusCause::invalid(
            "spec.dataVolumeTemplates",
            "dataVolumeTemplates must be a list",
        )];
    };
    let volumes = spec
        .template
        .as_ref()
        .and_then(|t| t.spec.volumes.as_deref())
        .unwrap_or(&[]);
    let field = FieldPath::new("spec").child("dataVolumeTemplate");
    let mut causes = Vec::new();
    for (idx, raw) in templates.iter().enumerate() {
        let path = field.index(idx);
        let entry: TemplateEntry = match serde_json::from_value(raw.clone()) {
            Ok(entry) => entry,
            Err(error) => {
                causes.push(StatusCause::invalid(path.as_str(), error.to_string()));
                continue;
            }
        };
        let name = entry.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            let name_field = FieldPath::new("spec").child("name");
            causes.push(StatusCause::new(
                CauseType::FieldValueRequired,
                name_field.as_str(),
                format!(
                    "'name' field must not be empty for DataVolumeTemplate entry {name_field}."
                ),
            ));
            continue;
        }
        if entry.spec.pvc.is_none() && entry.spec.storage.is_none() {
            causes.push(StatusCause::invalid(
                path.children(&["PVC", "Storage"]).as_str(),
                "Missing Data volume PVC or Storage",
            ));
            continue;
        }
        let spec_causes = validate_spec(&path.child("spec"), &entry.spec);
        if !spec_causes.is_empty() {
            causes.extend(spec_causes);
            continue;
        }
        let referenced = volumes.iter().any(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name == name)
                || v.data_volume
                    .as_ref()
                    .and_then(|d| d.get("name"))
                    .and_then(|n| n.as_str())
                    == Some(name.as_str())
        });
        if !referenced {
            causes.push(StatusCause::new(
                CauseType::FieldValueRequired,
                path.as_str(),
                format!(
                    "DataVolumeTemplate entry {path} must be referenced in the VMI template's 'volumes' list"
                ),
            ));
        }
    }
    causes
}

/// A Secret: its name, and `data` values that are base64 (Kubernetes' decoding rule).
pub(crate) fn validate_secret(secret: &crate::core::Secret) -> Vec<StatusCause> {
    use base64::Engine as _;
    let mut causes = validate_object_meta(&secret.metadata, NameRule::Subdomain, true);
    for (key, value) in secret.data.iter().flatten() {
        if base64::engine::general_purpose::STANDARD
            .decode(value)
            .is_err()
        {
            causes.push(StatusCause::invalid(
                format!("data[{key}]"),
                "illegal base64 data; put plain text under stringData instead",
            ));
        }
    }
    causes
}

pub(crate) fn validate_upload_token_request(request: &UploadTokenRequest) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    if request.spec.pvc_name.is_empty() {
        causes.push(StatusCause::new(
            CauseType::FieldValueRequired,
            "spec.pvcName",
            "Required value: the name of the PVC (the DataVolume) to upload to",
        ));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_documents;

    fn dv(yaml: &str) -> DataVolume {
        match parse_documents(yaml.as_bytes(), "t").unwrap().remove(0) {
            Object::DataVolume(dv) => *dv,
            other => panic!("{other:?}"),
        }
    }

    fn causes(yaml: &str) -> Vec<(String, String)> {
        let cluster = crate::ClusterConfig::default();
        validate_data_volume(&dv(yaml), &AdmissionContext::create(&cluster))
            .into_iter()
            .map(|c| (c.field, c.message))
            .collect()
    }

    const HEAD: &str = "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {name: d, namespace: default}\n";

    #[test]
    fn cdi_messages_and_field_paths() {
        let ok = format!(
            "{HEAD}spec:\n  source: {{http: {{url: 'https://example.org/a.qcow2'}}}}\n  storage: {{resources: {{requests: {{storage: 1Gi}}}}}}\n"
        );
        assert_eq!(causes(&ok), vec![]);
        let no_pvc = format!("{HEAD}spec:\n  source: {{blank: {{}}}}\n");
        assert_eq!(
            causes(&no_pvc),
            vec![("spec.PVC".into(), "Missing Data volume PVC".into())]
        );
        let bad_scheme = format!(
            "{HEAD}spec:\n  source: {{http: {{url: 'ftp://x/y'}}}}\n  pvc: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
        );
        assert_eq!(
            causes(&bad_scheme),
            vec![(
                "spec.source.HTTP.url".into(),
                "spec.source Invalid source URL scheme: ftp://x/y".into()
            )]
        );
        let two = format!(
            "{HEAD}spec:\n  source: {{blank: {{}}, upload: {{}}}}\n  storage: {{resources: {{requests: {{storage: 1Gi}}}}}}\n"
        );
        assert_eq!(
            causes(&two),
            vec![("spec.source".into(), "Multiple Data volume sources".into())]
        );
        let small = format!(
            "{HEAD}spec:\n  source: {{blank: {{}}}}\n  storage: {{resources: {{requests: {{storage: 1Ki}}}}}}\n"
        );
        assert_eq!(
            causes(&small),
            vec![(
                "spec.Storage.resources.requests.size".into(),
                "Storage size should be at least 1MiB".into()
            )]
        );
        let checksum = format!(
            "{HEAD}spec:\n  source: {{http: {{url: 'http://h/i', checksum: 'sha256:12'}}}}\n  storage: {{resources: {{requests: {{storage: 1Gi}}}}}}\n"
        );
        assert_eq!(causes(&checksum)[0].0, "spec.source.HTTP.checksum");
        let archive_blank = format!(
            "{HEAD}spec:\n  contentType: archive\n  source: {{blank: {{}}}}\n  storage: {{resources: {{requests: {{storage: 1Gi}}}}}}\n"
        );
        assert_eq!(
            causes(&archive_blank)[0].1,
            "SourceType cannot be blank and the contentType be archive"
        );
    }
}
