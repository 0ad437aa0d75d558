//! `ferrovirt apply -f FILE`: create or update every object of the manifests, as kubectl's
//! client-side apply does. The manifest is recorded in the `kubectl.kubernetes.io/last-applied-
//! configuration` annotation; an existing object gets a JSON merge patch that sets what the
//! manifest sets and removes what the previous apply set but this one no longer does. Prints
//! `virtualmachine.kubevirt.io/NAME created|configured|unchanged`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use ferrovirt_api::parse::parse_values;
use serde_json::{Map, Value};

use crate::client::{Client, ClientArgs, ClientError, with_query};
use crate::commands::validate::{display_name, read_input};
use crate::resource;

/// The annotation kubectl keeps the applied manifest in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Arguments of `ferrovirt apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest file (YAML, multi-document YAML or JSON); `-` reads standard input. Repeatable.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Field validation by the server: `strict` refuses fields KubeVirt's schema does not have
    /// (the default, as kubectl); `ignore` leaves it to admission.
    #[arg(long = "validate", value_enum, default_value_t = Validate::Strict)]
    pub validate: Validate,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `--validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Validate {
    Strict,
    Ignore,
}

/// Keys sorted at every level, as kubectl (Go) serializes the last-applied configuration.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// What apply did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// Every object of the files, as JSON (a `kind: List` is expanded), with the name of its file.
pub fn load_objects(files: &[PathBuf]) -> Result<Vec<(String, Value)>, ClientError> {
    let mut objects = Vec::new();
    for path in files {
        let name = display_name(path);
        let bytes = read_input(path).map_err(|e| ClientError::Usage(e.to_string()))?;
        let values = parse_values(&bytes, &name).map_err(|e| ClientError::Usage(e.to_string()))?;
        for value in values {
            if value.get("kind").and_then(Value::as_str) == Some("List") {
                let items = value.get("items").and_then(Value::as_array);
                for item in items.into_iter().flatten() {
                    objects.push((name.clone(), item.clone()));
                }
            } else if !value.is_null() {
                objects.push((name.clone(), value));
            }
        }
    }
    if objects.is_empty() {
        return Err(ClientError::Usage("no objects passed to apply".to_owned()));
    }
    Ok(objects)
}

pub fn run(args: &ApplyArgs) -> ExitCode {
    let client = match Client::from_args(&args.client) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let objects = match load_objects(&args.files) {
        Ok(o) => o,
        Err(e) => return e.report(),
    };
    let mut failed = false;
    for (file, object) in objects {
        match apply_one(&client, client.namespace(), object, args.validate) {
            Ok((what, outcome)) => println!("{what} {}", outcome.as_str()),
            Err((
                verb,
                ClientError::Status {
                    reason, message, ..
                },
            )) => {
                failed = true;
                eprintln!("Error from server ({reason}): error when {verb} \"{file}\": {message}");
            }
            Err((_, e)) => {
                failed = true;
                eprintln!("error: {file}: {e}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

type ApplyError = (&'static str, ClientError);

/// Applies one object; returns `type/name` and what happened.
fn apply_one(
    client: &Client,
    default_namespace: &str,
    mut object: Value,
    validate: Validate,
) -> Result<(String, Outcome), ApplyError> {
    let query: &[(&str, &str)] = match validate {
        Validate::Strict => &[("fieldValidation", "Strict")],
        Validate::Ignore => &[],
    };
    let kind = resource::of_object(&object).map_err(|e| ("applying", e))?;
    let name = resource::name_of(&object).to_owned();
    if name.is_empty() {
        return Err((
            "applying",
            ClientError::Usage(
                "an object has no metadata.name (apply cannot use generateName)".to_owned(),
            ),
        ));
    }
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(default_namespace)
        .to_owned();
    if kind.namespaced {
        object["metadata"]["namespace"] = Value::String(namespace.clone());
    }
    let what = format!("{}/{name}", resource::display_type(&kind));
    // What kubectl records: the manifest with its annotations (an empty map when it has none)
    // minus the record itself, keys sorted, a final newline. Both tools then agree on "unchanged".
    let manifest = {
        let mut m = object.clone();
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            let annotations = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(map) = annotations.as_object_mut() {
                map.remove(LAST_APPLIED);
            }
        }
        m
    };
    let recorded = format!("{}\n", sorted(&manifest));
    let mut desired = manifest.clone();
    set_annotation(&mut desired, LAST_APPLIED, &recorded);

    let path = resource::item_path(&kind, &namespace, &name);
    let current = match client.get(&path) {
        Ok(current) => current,
        Err(e) if e.is_not_found() => {
            let collection = with_query(&resource::collection_path(&kind, Some(&namespace)), query);
            client
                .send_json("POST", &collection, "application/json", &desired)
                .map_err(|e| ("creating", e))?;
            return Ok((what, Outcome::Created));
        }
        Err(e) => return Err(("retrieving current configuration of", e)),
    };
    let previous: Option<Value> = current
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str(text).ok());
    let patch = apply_patch(previous.as_ref(), &desired);
    let mut merged = current.clone();
    merge_patch(&mut merged, &patch);
    if merged == current {
        return Ok((what, Outcome::Unchanged));
    }
    client
        .send_json(
            "PATCH",
            &with_query(&path, query),
            "application/merge-patch+json",
            &patch,
        )
        .map_err(|e| ("patching", e))?;
    Ok((what, Outcome::Configured))
}

fn set_annotation(object: &mut Value, key: &str, value: &str) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(map) = annotations.as_object_mut() {
        map.insert(key.to_owned(), Value::String(value.to_owned()));
    }
}

/// The merge patch of an apply: everything `desired` sets, and `null` for every field the previous
/// apply set that `desired` no longer has (recursively through objects; arrays are replaced).
pub fn apply_patch(previous: Option<&Value>, desired: &Value) -> Value {
    match (previous, desired) {
        (Some(Value::Object(old)), Value::Object(new)) => {
            let mut patch = Map::new();
            for (key, value) in new {
                patch.insert(key.clone(), apply_patch(old.get(key), value));
            }
            for key in old.keys() {
                if !new.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            Value::Object(patch)
        }
        (_, value) => value.clone(),
    }
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_patch_removes_what_the_last_apply_set() {
        let previous = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"runStrategy": "Manual", "x": [1]}});
        let desired =
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"runStrategy": "Always"}});
        let patch = apply_patch(Some(&previous), &desired);
        assert_eq!(
            patch,
            json!({"metadata": {"labels": {"a": "1", "b": null}}, "spec": {"runStrategy": "Always", "x": null}})
        );
        // Without a previous apply, the patch is the manifest itself.
        assert_eq!(apply_patch(None, &desired), desired);
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target =
            json!({"a": "b", "c": {"d": "e", "f": "g"}, "status": {"phase": "Running"}});
        merge_patch(
            &mut target,
            &json!({"a": "z", "c": {"f": null}, "n": [1, 2]}),
        );
        assert_eq!(
            target,
            json!({"a": "z", "c": {"d": "e"}, "n": [1, 2], "status": {"phase": "Running"}})
        );
    }

    #[test]
    fn the_record_has_sorted_keys_as_kubectl_writes_it() {
        let value = json!({"spec": {"b": 1, "a": [{"y": 1, "x": 2}]}, "kind": "K"});
        assert_eq!(
            sorted(&value).to_string(),
            r#"{"kind":"K","spec":{"a":[{"x":2,"y":1}],"b":1}}"#
        );
    }

    #[test]
    fn an_unchanged_manifest_patches_nothing() {
        let desired = json!({"metadata": {"name": "x", "annotations": {LAST_APPLIED: "{}"}}, "spec": {"a": 1}});
        let mut current = desired.clone();
        current["metadata"]["uid"] = json!("u");
        current["spec"]["firmwareDefaulted"] = json!(true);
        let mut merged = current.clone();
        merge_patch(&mut merged, &apply_patch(Some(&desired), &desired));
        assert_eq!(merged, current);
    }
}
