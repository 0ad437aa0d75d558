//! Manifests in, typed objects out: bytes (YAML, single or multi-document, or JSON) -> documents
//! -> [`Object`] chosen by `apiVersion`/`kind`. Syntax errors carry line and column; type errors
//! carry the field path. Input size, nesting depth and alias expansion are bounded, so hostile
//! input fails fast instead of exhausting memory or the stack.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cdi::{CDI_API_VERSION, DataVolume, UPLOAD_API_VERSION, UploadTokenRequest};
use crate::clone::{CLONE_API_VERSION, VirtualMachineClone};
use crate::core::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, StorageClass};
use crate::export::{EXPORT_API_VERSION, VirtualMachineExport};
use crate::harvester::{
    HARVESTER_API_VERSION, VirtualMachineTemplate, VirtualMachineTemplateVersion,
};
use crate::instancetype::{
    API_VERSION as INSTANCETYPE_API_VERSION, CLUSTER_INSTANCETYPE_KIND, CLUSTER_PREFERENCE_KIND,
    INSTANCETYPE_KIND, PREFERENCE_KIND, VirtualMachineInstancetype, VirtualMachinePreference,
};
use crate::kubevirt::{
    API_VERSION, API_VERSION_V1ALPHA3, GROUP, KubeVirt, VirtualMachine, VirtualMachineInstance,
};
use crate::meta::ObjectMeta;
use crate::snapshot::{
    SNAPSHOT_API_VERSION, VirtualMachineRestore, VirtualMachineSnapshot,
    VirtualMachineSnapshotContent,
};

/// Largest manifest accepted (the Kubernetes API server refuses requests above 3 MiB).
pub const MAX_INPUT_BYTES: usize = 8 * 1024 * 1024;
/// Deepest nesting accepted (KubeVirt manifests nest about 12 levels).
pub const MAX_DEPTH: usize = 64;
/// Most YAML events an alias may replay in one input (defuses "billion laughs" alias bombs).
pub const MAX_ALIAS_REPLAYED_EVENTS: usize = 10_000;
/// Most documents accepted in one input.
pub const MAX_DOCUMENTS: usize = 1024;

/// Why an input could not be turned into objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The input is larger than [`MAX_INPUT_BYTES`].
    #[error(
        "{source_name}: input is {size} bytes, more than the {limit}-byte limit for a manifest; split it into several files"
    )]
    TooLarge {
        source_name: String,
        size: usize,
        limit: usize,
    },
    /// Not valid UTF-8 text.
    #[error(
        "{source_name}:{line}:{column}: input is not valid UTF-8 text (YAML and JSON manifests must be UTF-8)"
    )]
    NotUtf8 {
        source_name: String,
        line: usize,
        column: usize,
    },
    /// YAML/JSON syntax error, or a nesting/alias limit hit.
    #[error("{source_name}:{line}:{column}: {message}")]
    Syntax {
        source_name: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A syntax error without a position (rare; e.g. a budget hit reported at end of input).
    #[error("{source_name}: {message}")]
    SyntaxNoLocation {
        source_name: String,
        message: String,
    },
    /// A document is not a mapping (e.g. a bare string or a list).
    #[error(
        "{source_name}: document {document}: expected an object with apiVersion and kind, found {found}"
    )]
    NotAnObject {
        source_name: String,
        document: usize,
        found: String,
    },
    /// A document lacks `apiVersion` or `kind`.
    #[error(
        "{source_name}: document {document}: Object '{field}' is missing; every manifest needs apiVersion and kind (e.g. apiVersion: kubevirt.io/v1, kind: VirtualMachine)"
    )]
    MissingTypeMeta {
        source_name: String,
        document: usize,
        field: &'static str,
    },
    /// A field has the wrong type (e.g. `running: "yes"`).
    #[error("{source_name}: document {document} ({kind}): {path}: {message}")]
    Type {
        source_name: String,
        document: usize,
        kind: String,
        path: String,
        message: String,
    },
}

/// A manifest of a kind ferrovirt does not serve, kept as written.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownObject {
    pub api_version: String,
    pub kind: String,
    pub raw: Value,
}

/// A typed object, chosen by `apiVersion` and `kind`.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    VirtualMachine(Box<VirtualMachine>),
    VirtualMachineInstance(Box<VirtualMachineInstance>),
    KubeVirt(Box<KubeVirt>),
    StorageClass(Box<StorageClass>),
    PersistentVolumeClaim(Box<PersistentVolumeClaim>),
    Namespace(Box<Namespace>),
    ConfigMap(Box<ConfigMap>),
    Secret(Box<Secret>),
    VirtualMachineTemplate(Box<VirtualMachineTemplate>),
    VirtualMachineTemplateVersion(Box<VirtualMachineTemplateVersion>),
    VirtualMachineSnapshot(Box<VirtualMachineSnapshot>),
    VirtualMachineSnapshotContent(Box<VirtualMachineSnapshotContent>),
    VirtualMachineRestore(Box<VirtualMachineRestore>),
    VirtualMachineClone(Box<VirtualMachineClone>),
    /// CDI's `cdi.kubevirt.io/v1beta1` DataVolume.
    DataVolume(Box<DataVolume>),
    /// CDI's `upload.cdi.kubevirt.io/v1beta1` UploadTokenRequest.
    UploadTokenRequest(Box<UploadTokenRequest>),
    VirtualMachineExport(Box<VirtualMachineExport>),
    /// `VirtualMachineInstancetype` or `VirtualMachineClusterInstancetype`.
    Instancetype(Box<VirtualMachineInstancetype>),
    /// `VirtualMachinePreference` or `VirtualMachineClusterPreference`.
    Preference(Box<VirtualMachinePreference>),
    Unknown(Box<UnknownObject>),
}

impl Object {
    /// The object's `kind`.
    pub fn kind(&self) -> &str {
        match self {
            Object::VirtualMachine(o) => &o.kind,
            Object::VirtualMachineInstance(o) => &o.kind,
            Object::KubeVirt(o) => &o.kind,
            Object::StorageClass(o) => &o.kind,
            Object::PersistentVolumeClaim(o) => &o.kind,
            Object::Namespace(o) => &o.kind,
            Object::ConfigMap(o) => &o.kind,
            Object::Secret(o) => &o.kind,
            Object::VirtualMachineTemplate(o) => &o.kind,
            Object::VirtualMachineTemplateVersion(o) => &o.kind,
            Object::VirtualMachineSnapshot(o) => &o.kind,
            Object::VirtualMachineSnapshotContent(o) => &o.kind,
            Object::VirtualMachineRestore(o) => &o.kind,
            Object::VirtualMachineClone(o) => &o.kind,
            Object::DataVolume(o) => &o.kind,
            Object::UploadTokenRequest(o) => &o.kind,
            Object::VirtualMachineExport(o) => &o.kind,
            Object::Instancetype(o) => &o.kind,
            Object::Preference(o) => &o.kind,
            Object::Unknown(o) => &o.kind,
        }
    }

    /// The object's `apiVersion`.
    pub fn api_version(&self) -> &str {
        match self {
            Object::VirtualMachine(o) => &o.api_version,
            Object::VirtualMachineInstance(o) => &o.api_version,
            Object::KubeVirt(o) => &o.api_version,
            Object::StorageClass(o) => &o.api_version,
            Object::PersistentVolumeClaim(o) => &o.api_version,
            Object::Namespace(o) => &o.api_version,
            Object::ConfigMap(o) => &o.api_version,
            Object::Secret(o) => &o.api_version,
            Object::VirtualMachineTemplate(o) => &o.api_version,
            Object::VirtualMachineTemplateVersion(o) => &o.api_version,
            Object::VirtualMachineSnapshot(o) => &o.api_version,
            Object::VirtualMachineSnapshotContent(o) => &o.api_version,
            Object::VirtualMachineRestore(o) => &o.api_version,
            Object::VirtualMachineClone(o) => &o.api_version,
            Object::DataVolume(o) => &o.api_version,
            Object::UploadTokenRequest(o) => &o.api_version,
            Object::VirtualMachineExport(o) => &o.api_version,
            Object::Instancetype(o) => &o.api_version,
            Object::Preference(o) => &o.api_version,
            Object::Unknown(o) => &o.api_version,
        }
    }

    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        self.api_version()
            .split_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
    }

    /// The metadata, for known kinds.
    pub fn metadata(&self) -> Option<&ObjectMeta> {
        match self {
            Object::VirtualMachine(o) => Some(&o.metadata),
            Object::VirtualMachineInstance(o) => Some(&o.metadata),
            Object::KubeVirt(o) => Some(&o.metadata),
            Object::StorageClass(o) => Some(&o.metadata),
            Object::PersistentVolumeClaim(o) => Some(&o.metadata),
            Object::Namespace(o) => Some(&o.metadata),
            Object::ConfigMap(o) => Some(&o.metadata),
            Object::Secret(o) => Some(&o.metadata),
            Object::VirtualMachineTemplate(o) => Some(&o.metadata),
            Object::VirtualMachineTemplateVersion(o) => Some(&o.metadata),
            Object::VirtualMachineSnapshot(o) => Some(&o.metadata),
            Object::VirtualMachineSnapshotContent(o) => Some(&o.metadata),
            Object::VirtualMachineRestore(o) => Some(&o.metadata),
            Object::VirtualMachineClone(o) => Some(&o.metadata),
            Object::DataVolume(o) => Some(&o.metadata),
            Object::UploadTokenRequest(o) => Some(&o.metadata),
            Object::VirtualMachineExport(o) => Some(&o.metadata),
            Object::Instancetype(o) => Some(&o.metadata),
            Object::Preference(o) => Some(&o.metadata),
            Object::Unknown(_) => None,
        }
    }

    /// The object's name (`metadata.name`), `""` when unset.
    pub fn name(&self) -> &str {
        match self {
            Object::Unknown(o) => o
                .raw
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or(""),
            other => other
                .metadata()
                .map(ObjectMeta::name_or_empty)
                .unwrap_or(""),
        }
    }

    /// kubectl's resource prefix: `virtualmachine.kubevirt.io`, `persistentvolumeclaim`, ...
    pub fn resource_prefix(&self) -> String {
        let kind = self.kind().to_lowercase();
        match self.group() {
            "" => kind,
            group => format!("{kind}.{group}"),
        }
    }

    /// The object as JSON, as ferrovirt stores and serves it.
    pub fn to_json(&self) -> Result<Value, serde_json::Error> {
        match self {
            Object::VirtualMachine(o) => serde_json::to_value(o),
            Object::VirtualMachineInstance(o) => serde_json::to_value(o),
            Object::KubeVirt(o) => serde_json::to_value(o),
            Object::StorageClass(o) => serde_json::to_value(o),
            Object::PersistentVolumeClaim(o) => serde_json::to_value(o),
            Object::Namespace(o) => serde_json::to_value(o),
            Object::ConfigMap(o) => serde_json::to_value(o),
            Object::Secret(o) => serde_json::to_value(o),
            Object::VirtualMachineTemplate(o) => serde_json::to_value(o),
            Object::VirtualMachineTemplateVersion(o) => serde_json::to_value(o),
            Object::VirtualMachineSnapshot(o) => serde_json::to_value(o),
            Object::VirtualMachineSnapshotContent(o) => serde_json::to_value(o),
            Object::VirtualMachineRestore(o) => serde_json::to_value(o),
            Object::VirtualMachineClone(o) => serde_json::to_value(o),
            Object::DataVolume(o) => serde_json::to_value(o),
            Object::UploadTokenRequest(o) => serde_json::to_value(o),
            Object::VirtualMachineExport(o) => serde_json::to_value(o),
            Object::Instancetype(o) => serde_json::to_value(o),
            Object::Preference(o) => serde_json::to_value(o),
            Object::Unknown(o) => Ok(o.raw.clone()),
        }
    }

    /// Types one JSON document (`document` numbers it in error messages, from 1).
    pub fn from_value(
        value: Value,
        source_name: &str,
        document: usize,
    ) -> Result<Self, ParseError> {
        let found = match &value {
            Value::Object(_) => None,
            Value::Array(_) => Some("a list"),
            Value::String(_) => Some("a string"),
            Value::Number(_) => Some("a number"),
            Value::Bool(_) => Some("a boolean"),
            Value::Null => Some("null"),
        };
        if let Some(found) = found {
            return Err(ParseError::NotAnObject {
                source_name: source_name.to_owned(),
                document,
                found: found.to_owned(),
            });
        }
        let text_field = |field: &str| value.get(field).and_then(Value::as_str).unwrap_or("");
        let api_version = text_field("apiVersion").to_owned();
        let kind = text_field("kind").to_owned();
        let missing = if api_version.is_empty() {
            Some("apiVersion")
        } else if kind.is_empty() {
            Some("kind")
        } else {
            None
        };
        if let Some(field) = missing {
            return Err(ParseError::MissingTypeMeta {
                source_name: source_name.to_owned(),
                document,
                field,
            });
        }
        let kubevirt = api_version == API_VERSION || api_version == API_VERSION_V1ALPHA3;
        let ctx = TypeContext {
            source_name,
            document,
            kind: &kind,
        };
        Ok(match (kubevirt, api_version.as_str(), kind.as_str()) {
            (true, _, "VirtualMachine") => Object::VirtualMachine(ctx.typed(value)?),
            (true, _, "VirtualMachineInstance") => {
                Object::VirtualMachineInstance(ctx.typed(value)?)
            }
            (true, _, "KubeVirt") => Object::KubeVirt(ctx.typed(value)?),
            (_, "storage.k8s.io/v1", "StorageClass") => Object::StorageClass(ctx.typed(value)?),
            (_, "v1", "PersistentVolumeClaim") => Object::PersistentVolumeClaim(ctx.typed(value)?),
            (_, "v1", "Namespace") => Object::Namespace(ctx.typed(value)?),
            (_, "v1", "ConfigMap") => Object::ConfigMap(ctx.typed(value)?),
            (_, "v1", "Secret") => Object::Secret(ctx.typed(value)?),
            (_, HARVESTER_API_VERSION, "VirtualMachineTemplate") => {
                Object::VirtualMachineTemplate(ctx.typed(value)?)
            }
            (_, HARVESTER_API_VERSION, "VirtualMachineTemplateVersion") => {
                Object::VirtualMachineTemplateVersion(ctx.typed(value)?)
            }
            (_, SNAPSHOT_API_VERSION, "VirtualMachineSnapshot") => {
                Object::VirtualMachineSnapshot(ctx.typed(value)?)
            }
            (_, SNAPSHOT_API_VERSION, "VirtualMachineSnapshotContent") => {
                Object::VirtualMachineSnapshotContent(ctx.typed(value)?)
            }
            (_, SNAPSHOT_API_VERSION, "VirtualMachineRestore") => {
                Object::VirtualMachineRestore(ctx.typed(value)?)
            }
            (_, CLONE_API_VERSION, "VirtualMachineClone") => {
                Object::VirtualMachineClone(ctx.typed(value)?)
            }
            (_, CDI_API_VERSION, "DataVolume") => Object::DataVolume(ctx.typed(value)?),
            (_, UPLOAD_API_VERSION, "UploadTokenRequest") => {
                Object::UploadTokenRequest(ctx.typed(value)?)
            }
            (_, EXPORT_API_VERSION, "VirtualMachineExport") => {
                Object::VirtualMachineExport(ctx.typed(value)?)
            }
            (_, INSTANCETYPE_API_VERSION, INSTANCETYPE_KIND | CLUSTER_INSTANCETYPE_KIND) => {
                Object::Instancetype(ctx.typed(value)?)
            }
            (_, INSTANCETYPE_API_VERSION, PREFERENCE_KIND | CLUSTER_PREFERENCE_KIND) => {
                Object::Preference(ctx.typed(value)?)
            }
            _ => Object::Unknown(Box::new(UnknownObject {
                api_version,
                kind,
                raw: value,
            })),
        })
    }
}

struct TypeContext<'a> {
    source_name: &'a str,
    document: usize,
    kind: &'a str,
}

impl TypeContext<'_> {
    fn typed<T: DeserializeOwned>(&self, value: Value) -> Result<Box<T>, ParseError> {
        serde_path_to_error::deserialize(value)
            .map(Box::new)
            .map_err(|err| ParseError::Type {
                source_name: self.source_name.to_owned(),
                document: self.document,
                kind: self.kind.to_owned(),
                path: err.path().to_string(),
                message: err.inner().to_string(),
            })
    }
}

/// Parses a manifest (YAML, one or more documents, or JSON) into typed objects. `kind: List`
/// documents are expanded into their `items`. Empty documents are skipped.
pub fn parse_documents(bytes: &[u8], source_name: &str) -> Result<Vec<Object>, ParseError> {
    let values = parse_values(bytes, source_name)?;
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| Object::from_value(value, source_name, index + 1))
        .collect()
}

/// Parses a manifest into JSON documents without typing them (`kind: List` expanded).
pub fn parse_values(bytes: &[u8], source_name: &str) -> Result<Vec<Value>, ParseError> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(ParseError::TooLarge {
            source_name: source_name.to_owned(),
            size: bytes.len(),
            limit: MAX_INPUT_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|err| {
        let (line, column) = line_column(&bytes[..err.valid_up_to()]);
        ParseError::NotUtf8 {
            source_name: source_name.to_owned(),
            line,
            column,
        }
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let documents = if looks_like_json(text) {
        parse_json(text, source_name)?
    } else {
        parse_yaml(text, source_name)?
    };
    let mut out = Vec::with_capacity(documents.len());
    for document in documents {
        expand_list(document, &mut out);
    }
    Ok(out)
}

fn looks_like_json(text: &str) -> bool {
    text.trim_start().starts_with(['{', '[']) && !text.lines().any(|l| l.trim_end() == "---")
}

fn parse_json(text: &str, source_name: &str) -> Result<Vec<Value>, ParseError> {
    let mut documents = Vec::new();
    for item in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        match item {
            Ok(value) => {
                if depth_exceeds(&value, MAX_DEPTH) {
                    return Err(ParseError::SyntaxNoLocation {
                        source_name: source_name.to_owned(),
                        message: format!("document nests deeper than {MAX_DEPTH} levels"),
                    });
                }
                documents.push(value);
            }
            Err(err) => {
                return Err(ParseError::Syntax {
                    source_name: source_name.to_owned(),
                    line: err.line(),
                    column: err.column(),
                    message: strip_position(&err.to_string()),
                });
            }
        }
        if documents.len() > MAX_DOCUMENTS {
            return Err(ParseError::SyntaxNoLocation {
                source_name: source_name.to_owned(),
                message: format!("more than {MAX_DOCUMENTS} documents in one input"),
            });
        }
    }
    Ok(documents)
}

fn parse_yaml(text: &str, source_name: &str) -> Result<Vec<Value>, ParseError> {
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = MAX_ALIAS_REPLAYED_EVENTS;
    alias_limits.max_replay_stack_depth = 16;
    alias_limits.max_alias_expansions_per_anchor = 1_000;
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_documents: MAX_DOCUMENTS,
            max_aliases: 10_000,
            max_anchors: 10_000,
            max_events: 1_000_000,
            max_nodes: 500_000,
        },
        alias_limits: alias_limits,
        with_snippet: false,
    };
    serde_saphyr::from_multiple_with_options::<Value>(text, options).map_err(|err| {
        let message = strip_position(&err.to_string());
        match err.location() {
            Some(loc) if loc.line() > 0 => ParseError::Syntax {
                source_name: source_name.to_owned(),
                line: usize::try_from(loc.line()).unwrap_or(usize::MAX),
                column: usize::try_from(loc.column()).unwrap_or(usize::MAX),
                message,
            },
            _ => ParseError::SyntaxNoLocation {
                source_name: source_name.to_owned(),
                message,
            },
        }
    })
}

/// Drops a trailing " at line L column C" the libraries append (we print `FILE:L:C:` instead).
fn strip_position(message: &str) -> String {
    let message = message.lines().next().unwrap_or("").trim();
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

fn depth_exceeds(value: &Value, limit: usize) -> bool {
    // Iterative, so a hostile document cannot overflow the stack here.
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        if depth > limit {
            return true;
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    false
}

fn expand_list(document: Value, out: &mut Vec<Value>) {
    let is_list = document.get("kind").and_then(Value::as_str) == Some("List")
        && document.get("items").is_some_and(Value::is_array);
    if !is_list {
        out.push(document);
        return;
    }
    if let Value::Object(mut map) = document
        && let Some(Value::Array(items)) = map.remove("items")
    {
        out.extend(items);
    }
}

/// 1-based line and column of the end of `prefix`.
fn line_column(prefix: &[u8]) -> (usize, usize) {
    let line = prefix.iter().filter(|b| **b == b'\n').count() + 1;
    let column = prefix.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    (line, column)
}

/// The API group of KubeVirt objects (re-exported for callers matching on groups).
pub const KUBEVIRT_GROUP: &str = GROUP;

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: vm\nspec:\n  runStrategy: Halted\n  template:\n    spec:\n      domain:\n        devices: {}\n";

    #[test]
    fn yaml_multi_document_and_kinds() {
        let text = format!(
            "{VM}---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: pvc\n---\napiVersion: example.com/v1\nkind: Thing\n"
        );
        let objects = parse_documents(text.as_bytes(), "t.yaml").unwrap();
        assert_eq!(objects.len(), 3);
        assert!(matches!(objects[0], Object::VirtualMachine(_)));
        assert!(matches!(objects[1], Object::PersistentVolumeClaim(_)));
        assert!(matches!(objects[2], Object::Unknown(_)));
        assert_eq!(objects[0].resource_prefix(), "virtualmachine.kubevirt.io");
        assert_eq!(objects[1].resource_prefix(), "persistentvolumeclaim");
    }

    #[test]
    fn json_input_and_list_expansion() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}]}"#;
        let objects = parse_documents(text.as_bytes(), "t.json").unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].name(), "a");
    }

    #[test]
    fn yaml_syntax_error_has_line_and_column() {
        let err = parse_documents(b"apiVersion: v1\nkind: [unclosed\n", "bad.yaml").unwrap_err();
        match err {
            ParseError::Syntax { line, .. } => assert!(line >= 2, "{err}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn json_syntax_error_has_line_and_column() {
        let err = parse_documents(b"{\n  \"a\": @\n}", "bad.json").unwrap_err();
        assert!(matches!(err, ParseError::Syntax { line: 2, .. }), "{err:?}");
        assert!(err.to_string().starts_with("bad.json:2:"), "{err}");
    }

    #[test]
    fn type_error_names_the_field_path() {
        let text = VM.replace("runStrategy: Halted", "running: yes-please");
        let err = parse_documents(text.as_bytes(), "t.yaml").unwrap_err();
        match err {
            ParseError::Type { path, .. } => assert_eq!(path, "spec.running"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_kind_and_non_objects_are_errors() {
        let err = parse_documents(b"apiVersion: v1\n", "t.yaml").unwrap_err();
        assert!(matches!(
            err,
            ParseError::MissingTypeMeta { field: "kind", .. }
        ));
        let err = parse_documents(b"just a string\n", "t.yaml").unwrap_err();
        assert!(matches!(err, ParseError::NotAnObject { .. }));
    }

    #[test]
    fn not_utf8_reports_position() {
        let err = parse_documents(b"a: b\nc: \xff\n", "t.yaml").unwrap_err();
        assert_eq!(
            err,
            ParseError::NotUtf8 {
                source_name: "t.yaml".into(),
                line: 2,
                column: 4
            }
        );
    }
}
