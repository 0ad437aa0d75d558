//! The OpenAPI v3 documents (`/openapi/v3/<api|apis/group>/<version>`), one per served
//! group/version, as kube-apiserver publishes them: every path the REST API serves for each kind
//! (collection, all namespaces, object, `status`) with its path parameters declared, the query
//! parameters the handlers read, request bodies and responses with schemas. KubeVirt's kinds get
//! KubeVirt's own schemas (the definitions of its swagger document, with everything they
//! reference); kinds KubeVirt does not define get an object schema that names the kind and keeps
//! unknown fields. kubectl reads these documents (`explain`, apply's patch computation, and the
//! `fieldValidation` parameter that tells it the server validates), and generated clients and
//! API fuzzers (schemathesis) need them to be valid OpenAPI.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use ferrovirt_resources::{self as resources, GROUP_VERSIONS, ResourceDef};

/// Where KubeVirt's swagger keeps a schema, and where an OpenAPI v3 document keeps it.
const V2_REF: &str = "#/definitions/";
const V3_REF: &str = "#/components/schemas/";
const OBJECT_META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.ListMeta";
const STATUS: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions";

/// The content types a PATCH accepts (see [`crate::patch`]).
const PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// KubeVirt's swagger definitions, parsed once.
fn kubevirt_definitions() -> &'static Map<String, Value> {
    static DEFINITIONS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFINITIONS.get_or_init(|| {
        serde_json::from_str::<Value>(include_str!(
            "../../api/tests/fixtures/kubevirt-swagger.json"
        ))
        .ok()
        .and_then(|doc| doc.get("definitions").and_then(Value::as_object).cloned())
        .unwrap_or_default()
    })
}

/// `GET /openapi/v3`: one entry per served group/version, each URL carrying a hash of its
/// document (clients such as kubectl cache the documents by it, so it must change with them).
pub fn root() -> Value {
    let mut paths = Map::new();
    for (group, version) in std::iter::once(("", "v1")).chain(GROUP_VERSIONS) {
        let path = if group.is_empty() {
            format!("api/{version}")
        } else {
            format!("apis/{group}/{version}")
        };
        let hash = built(group, version)
            .map(|doc| doc.hash.as_str())
            .unwrap_or_default();
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

/// FNV-1a of the bytes, as 16 hex digits (stable across builds, unlike std's hasher).
fn content_hash(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016X}")
}

/// `GET /openapi/v3/<api|apis/group>/<version>`: the JSON of the document at that path, if one
/// is served.
pub fn document_at(path: &str) -> Option<&'static [u8]> {
    let doc = match path
        .trim_matches('/')
        .split('/')
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["api", v] => built("", v),
        ["apis", g, v] => built(g, v),
        _ => None,
    }?;
    Some(&doc.json)
}

/// The document of `group`/`version` (`""` = the core group).
pub fn group_version_document(group: &str, version: &str) -> Option<&'static Value> {
    built(group, version).map(|doc| &doc.value)
}

/// One group/version's document, its JSON and the hash of that JSON: built once, as they never
/// change while the server runs (kubectl asks for them before most commands).
struct Document {
    value: Value,
    json: Vec<u8>,
    hash: String,
}

fn built(group: &str, version: &str) -> Option<&'static Document> {
    static DOCUMENTS: OnceLock<HashMap<(String, String), Document>> = OnceLock::new();
    let documents = DOCUMENTS.get_or_init(|| {
        std::iter::once(("", "v1"))
            .chain(GROUP_VERSIONS)
            .map(|(g, v)| {
                let value = build(g, v);
                let json = serde_json::to_vec(&value).unwrap_or_default();
                let hash = content_hash(&json);
                ((g.to_owned(), v.to_owned()), Document { value, json, hash })
            })
            .collect()
    });
    documents.get(&(group.to_owned(), version.to_owned()))
}

/// Builds the document of one group/version from what discovery lists for it: each resource,
/// its `status` where discovery lists one, and the KubeVirt subresources.
fn build(group: &str, version: &str) -> Value {
    let mut schemas = SchemaSet::default();
    for name in [OBJECT_META, LIST_META, STATUS, DELETE_OPTIONS] {
        schemas.include(name);
    }
    let listed = crate::discovery::resource_list(group, version);
    let listed: Vec<&Value> = listed["resources"]
        .as_array()
        .map(|list| list.iter().collect())
        .unwrap_or_default();
    let status_listed = |plural: &str| {
        listed
            .iter()
            .any(|entry| entry["name"] == format!("{plural}/status").as_str())
    };
    let mut paths = Map::new();
    for resource in resources::in_group_version(group, version) {
        let kind_schema = schemas.kind(&resource);
        let list_schema = schemas.list(&resource, &kind_schema);
        let with_status = status_listed(resource.plural);
        for (path, item) in resource_paths(&resource, &kind_schema, &list_schema, with_status) {
            paths.insert(path, item);
        }
    }
    for entry in &listed {
        for (path, item) in subresource_paths(group, version, entry) {
            paths.insert(path, item);
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "ferrovirt", "version": version},
        "paths": paths,
        "components": {"schemas": schemas.into_map()},
    })
}

/// The paths of a subresource discovery lists: one, but KubeVirt's `portforward` is addressed as
/// `.../portforward/{port}` and `.../portforward/{port}/{protocol}` (as in KubeVirt's document).
fn subresource_paths(group: &str, version: &str, entry: &Value) -> Vec<(String, Value)> {
    let Some((path, item)) = subresource_path(group, version, entry) else {
        return Vec::new();
    };
    if !path.ends_with("/portforward") {
        return vec![(path, item)];
    }
    let port = json!({"name": "port", "in": "path", "required": true,
        "description": "The target port for portforward on the VirtualMachineInstance.",
        "schema": {"type": "string"}});
    let protocol = json!({"name": "protocol", "in": "path", "required": true,
        "description": "The protocol for portforward on the VirtualMachineInstance (tcp).",
        "schema": {"type": "string"}});
    let with = |extra: &[&Value], suffix: &str, id_suffix: &str| {
        let mut item = item.clone();
        if let Some(parameters) = item["parameters"].as_array_mut() {
            parameters.extend(extra.iter().map(|p| (*p).clone()));
        }
        if let Some(id) = item["get"]["operationId"].as_str() {
            item["get"]["operationId"] = json!(format!("{id}{id_suffix}"));
        }
        (format!("{path}{suffix}"), item)
    };
    vec![
        with(&[&port], "/{port}", ""),
        with(&[&port, &protocol], "/{port}/{protocol}", "WithProtocol"),
    ]
}

/// A KubeVirt subresource (`virtualmachines/start`, `virtualmachineinstances/vnc`, ...) that
/// discovery lists in the subresources group: `update` is a PUT, `get` a GET (the WebSocket ones
/// answer a plain GET with a Status saying to upgrade).
fn subresource_path(group: &str, version: &str, entry: &Value) -> Option<(String, Value)> {
    if group != resources::SUBRESOURCES_GROUP {
        return None;
    }
    let (plural, subresource) = entry["name"].as_str()?.split_once('/')?;
    let kind = entry["kind"].as_str()?;
    let parameters = [
        path_parameter("namespace", "The object's namespace."),
        path_parameter("name", "The object's name."),
    ];
    let id_suffix: String = subresource
        .split(['/', '-'])
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect::<String>()
            })
        })
        .collect();
    let mut item = json!({"parameters": parameters});
    let verbs = entry["verbs"].as_array()?;
    let gvk = json!({"group": group, "version": version, "kind": kind});
    for verb in verbs.iter().filter_map(Value::as_str) {
        let (method, action) = match verb {
            "update" => ("put", "put"),
            "get" => ("get", "get"),
            "delete" => ("delete", "delete"),
            _ => continue,
        };
        item[method] = json!({
            "operationId": format!("v1{}{kind}{id_suffix}", match method { "put" => "Put", "delete" => "Delete", _ => "Get" }),
            "description": format!("The `{subresource}` subresource of a {kind}."),
            "responses": {
                "200": {"description": "OK"},
                "202": {"description": "Accepted"},
                "default": {"description": "A Kubernetes Status naming what was wrong.",
                            "content": {"application/json": {"schema": schema_ref(STATUS)}}},
            },
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        });
    }
    Some((
        format!("/apis/{group}/{version}/namespaces/{{namespace}}/{plural}/{{name}}/{subresource}"),
        item,
    ))
}

/// The schemas one document carries: KubeVirt's definitions that its kinds reference (in OpenAPI
/// v3's place for them) and the schemas made here.
#[derive(Default)]
struct SchemaSet {
    schemas: BTreeMap<String, Value>,
}

impl SchemaSet {
    /// Adds a KubeVirt definition and everything it references; false when KubeVirt has none of
    /// that name.
    fn include(&mut self, name: &str) -> bool {
        let definitions = kubevirt_definitions();
        if !definitions.contains_key(name) {
            return false;
        }
        let mut pending = vec![name.to_owned()];
        while let Some(next) = pending.pop() {
            if self.schemas.contains_key(&next) {
                continue;
            }
            let Some(definition) = definitions.get(&next) else {
                continue;
            };
            let mut schema = definition.clone();
            rewrite_refs(&mut schema, &mut pending);
            self.schemas.insert(next, schema);
        }
        true
    }

    /// The schema name of a kind: KubeVirt's definition for the kinds of KubeVirt's groups (e.g.
    /// `v1.VirtualMachine`, `v1beta1.VirtualMachineSnapshot`), otherwise an object schema made
    /// here that names the kind and keeps its fields. Either carries the kind's
    /// `x-kubernetes-group-version-kind`.
    fn kind(&mut self, resource: &ResourceDef) -> String {
        let gvk =
            json!([{"group": resource.group, "version": resource.version, "kind": resource.kind}]);
        // export.kubevirt.io/v1beta1 has the fields of KubeVirt's v1 definition (v1 only adds
        // backups), which is the one KubeVirt's swagger carries.
        let kubevirt_name = if resource.group == ferrovirt_resources::EXPORT_GROUP {
            format!("v1.{}", resource.kind)
        } else {
            format!("{}.{}", resource.version, resource.kind)
        };
        let name = if resource.group.ends_with("kubevirt.io") && self.include(&kubevirt_name) {
            kubevirt_name
        } else {
            let name = generic_name(resource);
            self.schemas.insert(
                name.clone(),
                json!({
                    "description": format!("{} ({}). Its fields are kept as sent.", resource.kind, resource.api_version()),
                    "type": "object",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"$ref": format!("{V3_REF}{OBJECT_META}")},
                    },
                    "x-kubernetes-preserve-unknown-fields": true,
                }),
            );
            // CDI's DataVolume: its spec is the one KubeVirt's dataVolumeTemplates reference.
            if resource.kind == "DataVolume"
                && self.include("v1beta1.DataVolumeSpec")
                && let Some(properties) = self
                    .schemas
                    .get_mut(&name)
                    .and_then(|s| s.get_mut("properties"))
                    .and_then(Value::as_object_mut)
            {
                properties.insert(
                    "spec".into(),
                    json!({"$ref": format!("{V3_REF}v1beta1.DataVolumeSpec")}),
                );
            }
            name
        };
        if let Some(schema) = self.schemas.get_mut(&name).and_then(Value::as_object_mut) {
            schema.insert("x-kubernetes-group-version-kind".into(), gvk);
        }
        name
    }

    /// The schema of a kind's list (`<Kind>List`).
    fn list(&mut self, resource: &ResourceDef, kind_schema: &str) -> String {
        let name = format!("{kind_schema}List");
        self.schemas.insert(
            name.clone(),
            json!({
                "description": format!("A list of {}.", resource.kind),
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"$ref": format!("{V3_REF}{LIST_META}")},
                    "items": {"type": "array", "items": {"$ref": format!("{V3_REF}{kind_schema}")}},
                },
                "x-kubernetes-group-version-kind": [{
                    "group": resource.group, "version": resource.version, "kind": resource.list_kind(),
                }],
            }),
        );
        name
    }

    fn into_map(self) -> Map<String, Value> {
        self.schemas.into_iter().collect()
    }
}

/// `io.k8s.api.core.v1.PersistentVolumeClaim`, `io.k8s.api.rbac.v1.Role`, ...: Kubernetes' way
/// of naming a kind's schema, for the kinds that have no KubeVirt definition.
fn generic_name(resource: &ResourceDef) -> String {
    let group = match resource.group {
        "" => "core".to_owned(),
        g => g
            .strip_suffix(".k8s.io")
            .or_else(|| g.strip_suffix(".authorization.k8s.io"))
            .map_or_else(|| g.replace('.', "_"), str::to_owned),
    };
    format!("io.k8s.api.{group}.{}.{}", resource.version, resource.kind)
}

/// Makes a KubeVirt definition valid OpenAPI 3.0: `$ref`s point at OpenAPI v3's place for
/// schemas (each referenced name is queued), and JSON Schema's type lists become 3.0's forms
/// (`["string", "null"]` -> `nullable`, int-or-string -> `anyOf` with Kubernetes' marker), and a
/// `default` its own `enum` does not allow (KubeVirt's `""` for access modes) is dropped.
fn rewrite_refs(value: &mut Value, referenced: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let (Some(Value::Array(allowed)), Some(default)) =
                (object.get("enum"), object.get("default"))
                && !allowed.contains(default)
            {
                object.remove("default");
            }
            if let Some(Value::Array(types)) = object.get("type").cloned() {
                let nullable = types.iter().any(|t| t == "null");
                let types: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
                if nullable {
                    object.insert("nullable".into(), Value::Bool(true));
                }
                match types.as_slice() {
                    [one] => {
                        object.insert("type".into(), one.clone());
                    }
                    many => {
                        object.remove("type");
                        object.insert("x-kubernetes-int-or-string".into(), Value::Bool(true));
                        let alternatives = many.iter().map(|t| json!({"type": t})).collect();
                        object.insert("anyOf".into(), Value::Array(alternatives));
                    }
                }
            }
            if let Some(Value::String(target)) = object.get_mut("$ref")
                && let Some(name) = target.strip_prefix(V2_REF)
            {
                referenced.push(name.to_owned());
                *target = format!("{V3_REF}{name}");
            }
            for child in object.values_mut() {
                rewrite_refs(child, referenced);
            }
        }
        Value::Array(items) => {
            for child in items {
                rewrite_refs(child, referenced);
            }
        }
        _ => {}
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{V3_REF}{name}")})
}

fn path_parameter(name: &str, what: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": what, "schema": {"type": "string"}})
}

fn query(name: &str, kind: &str, what: &str) -> Value {
    json!({"name": name, "in": "query", "description": what, "schema": {"type": kind, "uniqueItems": true}})
}

fn write_parameters() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "string",
            "`All`: admit the request without storing it.",
        ),
        query(
            "fieldManager",
            "string",
            "The name of the actor making the change.",
        ),
        query(
            "fieldValidation",
            "string",
            "`Ignore`, `Warn` or `Strict`: what to do with fields the schema does not know.",
        ),
    ]
}

fn list_parameters() -> Vec<Value> {
    vec![
        query(
            "labelSelector",
            "string",
            "Only objects whose labels match (e.g. `app=web,tier!=db`).",
        ),
        query(
            "fieldSelector",
            "string",
            "Only objects whose fields match (`metadata.name`, `metadata.namespace`).",
        ),
        query(
            "limit",
            "integer",
            "At most this many objects; `metadata.continue` fetches the rest.",
        ),
        query(
            "continue",
            "string",
            "The `metadata.continue` token of the previous page.",
        ),
        query(
            "resourceVersion",
            "string",
            "With `watch=true`, the resourceVersion to watch from.",
        ),
        query(
            "timeoutSeconds",
            "integer",
            "End a watch after this many seconds.",
        ),
    ]
}

/// Responses: the object (or list) on success, a Kubernetes `Status` otherwise.
fn responses(success: &[(&str, &str)], schema: &str) -> Value {
    let mut out = Map::new();
    for (code, what) in success {
        out.insert(
            (*code).into(),
            json!({"description": what, "content": {"application/json": {"schema": schema_ref(schema)}}}),
        );
    }
    out.insert(
        "default".into(),
        json!({"description": "A Kubernetes Status naming what was wrong (401, 403, 404, 409, 422, ...).",
               "content": {"application/json": {"schema": schema_ref(STATUS)}}}),
    );
    Value::Object(out)
}

fn body(schema: &str, content_types: &[&str]) -> Value {
    let content: Map<String, Value> = content_types
        .iter()
        .map(|t| ((*t).to_owned(), json!({"schema": schema_ref(schema)})))
        .collect();
    json!({"required": true, "content": content})
}

/// An operation with kube-apiserver's extensions (`x-kubernetes-action`, the kind).
fn operation(
    id: String,
    action: &str,
    resource: &ResourceDef,
    parameters: Vec<Value>,
    request_body: Option<Value>,
    responses: Value,
) -> Value {
    let mut op = json!({
        "operationId": id,
        "parameters": parameters,
        "responses": responses,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": resource.group, "version": resource.version, "kind": resource.kind},
    });
    if let Some(request_body) = request_body {
        op["requestBody"] = request_body;
    }
    op
}

/// The paths of one kind: collection (+ all namespaces for namespaced kinds), object, status.
fn resource_paths(
    resource: &ResourceDef,
    kind: &str,
    list: &str,
    with_status: bool,
) -> Vec<(String, Value)> {
    let prefix = if resource.group.is_empty() {
        format!("/api/{}", resource.version)
    } else {
        format!("/apis/{}/{}", resource.group, resource.version)
    };
    let scope = if resource.namespaced {
        "Namespaced"
    } else {
        ""
    };
    let k = resource.kind;
    let namespace = path_parameter("namespace", "The object's namespace.");
    let name = path_parameter("name", "The object's name.");
    let (collection, scope_parameters) = if resource.namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", resource.plural),
            vec![namespace],
        )
    } else {
        (format!("{prefix}/{}", resource.plural), vec![])
    };
    let object = format!("{collection}/{{name}}");
    let object_parameters: Vec<Value> = scope_parameters
        .iter()
        .cloned()
        .chain(std::iter::once(name))
        .collect();

    let mut delete_collection_params = list_parameters();
    delete_collection_params.extend([
        query("dryRun", "string", "`All`: admit without deleting."),
        query(
            "propagationPolicy",
            "string",
            "`Orphan`, `Background` or `Foreground`.",
        ),
    ]);
    let collection_item = json!({
        "parameters": scope_parameters,
        "get": operation(format!("list{scope}{k}"), "list", resource, list_parameters(), None,
            responses(&[("200", "OK")], list)),
        "post": operation(format!("create{scope}{k}"), "post", resource, write_parameters(),
            Some(body(kind, &["application/json", "application/yaml"])),
            responses(&[("200", "OK"), ("201", "Created"), ("202", "Accepted")], kind)),
        "delete": operation(format!("deletecollection{scope}{k}"), "deletecollection", resource,
            delete_collection_params, None, responses(&[("200", "OK")], STATUS)),
    });

    let delete_params = vec![
        query("dryRun", "string", "`All`: admit without deleting."),
        query(
            "gracePeriodSeconds",
            "integer",
            "Seconds before the object is deleted.",
        ),
        query(
            "propagationPolicy",
            "string",
            "`Orphan`, `Background` or `Foreground`.",
        ),
    ];
    let mut patch_params = write_parameters();
    patch_params.push(query(
        "force",
        "boolean",
        "Server-side apply: take fields other managers own.",
    ));
    let object_item = |suffix: &str, verb_suffix: &str, with_delete: bool| {
        let mut item = json!({
            "parameters": object_parameters,
            "get": operation(format!("read{scope}{k}{verb_suffix}"), "get", resource, vec![], None,
                responses(&[("200", "OK")], kind)),
            "put": operation(format!("replace{scope}{k}{verb_suffix}"), "put", resource, write_parameters(),
                Some(body(kind, &["application/json", "application/yaml"])),
                responses(&[("200", "OK"), ("201", "Created")], kind)),
            "patch": operation(format!("patch{scope}{k}{verb_suffix}"), "patch", resource, patch_params.clone(),
                Some(json!({"required": true, "content": PATCH_TYPES.iter()
                    .map(|t| ((*t).to_owned(), json!({"schema": {"type": "object"}})))
                    .collect::<Map<String, Value>>()})),
                responses(&[("200", "OK"), ("201", "Created")], kind)),
        });
        if with_delete {
            item["delete"] = operation(
                format!("delete{scope}{k}"),
                "delete",
                resource,
                delete_params.clone(),
                None,
                responses(&[("200", "OK"), ("202", "Accepted")], STATUS),
            );
        }
        (format!("{object}{suffix}"), item)
    };

    let mut paths = vec![(collection, collection_item), object_item("", "", true)];
    if with_status {
        paths.push(object_item("/status", "Status", false));
    }
    if resource.namespaced {
        paths.push((
            format!("{prefix}/{}", resource.plural),
            json!({"get": operation(format!("list{k}ForAllNamespaces"), "list", resource, list_parameters(), None,
                responses(&[("200", "OK")], list))}),
        ));
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_documents() -> Vec<&'static Value> {
        std::iter::once(("", "v1"))
            .chain(GROUP_VERSIONS)
            .filter_map(|(g, v)| group_version_document(g, v))
            .collect()
    }

    /// Every `{param}` in a path is declared as a required path parameter of that path.
    #[test]
    fn every_path_parameter_is_declared() {
        for doc in all_documents() {
            for (path, item) in doc["paths"].as_object().unwrap() {
                let declared: Vec<&str> = item["parameters"]
                    .as_array()
                    .map(|p| {
                        p.iter()
                            .filter(|p| p["in"] == "path" && p["required"] == true)
                            .filter_map(|p| p["name"].as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                let used: Vec<&str> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                    .collect();
                let mut d = declared.clone();
                d.sort_unstable();
                let mut u = used.clone();
                u.sort_unstable();
                assert_eq!(d, u, "{path}");
            }
        }
    }

    /// Every `$ref` resolves inside the document, and operation ids are unique.
    #[test]
    fn references_resolve_and_operation_ids_are_unique() {
        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(o) => {
                    if let Some(Value::String(r)) = o.get("$ref") {
                        out.push(r);
                    }
                    o.values().for_each(|c| refs(c, out));
                }
                Value::Array(a) => a.iter().for_each(|c| refs(c, out)),
                _ => {}
            }
        }
        for doc in all_documents() {
            let mut found = vec![];
            refs(doc, &mut found);
            assert!(!found.is_empty());
            for r in found {
                let name = r.strip_prefix(V3_REF).unwrap_or_else(|| panic!("{r}"));
                assert!(
                    doc["components"]["schemas"].get(name).is_some(),
                    "{r} missing"
                );
            }
            let mut ids = std::collections::HashSet::new();
            for item in doc["paths"].as_object().unwrap().values() {
                for (method, op) in item.as_object().unwrap() {
                    if method == "parameters" {
                        continue;
                    }
                    let id = op["operationId"].as_str().unwrap();
                    assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
                }
            }
        }
    }

    #[test]
    fn kubevirt_kinds_carry_kubevirts_schema_and_kind() {
        let doc = group_version_document("kubevirt.io", "v1").unwrap();
        let vm = &doc["components"]["schemas"]["v1.VirtualMachine"];
        assert_eq!(
            vm["x-kubernetes-group-version-kind"][0]["kind"],
            "VirtualMachine"
        );
        assert_eq!(
            vm["properties"]["spec"]["$ref"],
            "#/components/schemas/v1.VirtualMachineSpec"
        );
        assert!(doc["components"]["schemas"]["v1.DomainSpec"].is_object());
        let create =
            &doc["paths"]["/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachines"]["post"];
        assert_eq!(
            create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/v1.VirtualMachine"
        );
        let core = group_version_document("", "v1").unwrap();
        let pvc = &core["components"]["schemas"]["io.k8s.api.core.v1.PersistentVolumeClaim"];
        assert_eq!(pvc["x-kubernetes-preserve-unknown-fields"], true);
        assert!(
            core["paths"]["/api/v1/namespaces/{name}"]["get"].is_object(),
            "cluster-scoped kinds have no namespace in their path"
        );
        assert!(core["paths"]["/api/v1/persistentvolumeclaims"]["get"].is_object());
        assert!(core["paths"]["/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}/status"]["put"].is_object());
        let sub = group_version_document(resources::SUBRESOURCES_GROUP, "v1").unwrap();
        let start = &sub["paths"]["/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}/start"];
        assert_eq!(start["put"]["operationId"], "v1PutVirtualMachineStart");
        let screenshot = &sub["paths"]["/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances/{name}/vnc/screenshot"];
        assert_eq!(
            screenshot["get"]["operationId"],
            "v1GetVirtualMachineInstanceVncScreenshot"
        );
    }
}
