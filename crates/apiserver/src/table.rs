//! `meta.k8s.io/v1` Table output: the columns `kubectl get` prints, as KubeVirt's CRD printer
//! columns and Kubernetes' built-in printers define them.

use serde_json::{Value, json};

use ferrovirt_api::snapshot::SIZE_ANNOTATION as SNAPSHOT_SIZE_ANNOTATION;
use ferrovirt_resources::ResourceDef;
use ferrovirt_resources::time::{now_unix, parse_rfc3339};

struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    priority: u8,
    cell: Cell,
}

/// How a cell is computed: from the object and the time now (seconds since the epoch).
type Cell = fn(&Value, i64) -> Value;

impl Column {
    const fn of(kind: &'static str, name: &'static str, cell: Cell) -> Self {
        Self {
            name,
            kind,
            format: "",
            priority: 0,
            cell,
        }
    }

    const fn string(name: &'static str, cell: Cell) -> Self {
        Self::of("string", name, cell)
    }

    const fn date(name: &'static str, cell: Cell) -> Self {
        Self::of("date", name, cell)
    }

    const fn integer(name: &'static str, cell: Cell) -> Self {
        Self::of("integer", name, cell)
    }

    const fn boolean(name: &'static str, cell: Cell) -> Self {
        Self::of("boolean", name, cell)
    }

    /// The object's name column (`format: name`, what kubectl keys rows by).
    const fn name_of(name: &'static str, cell: Cell) -> Self {
        Self {
            format: "name",
            ..Self::string(name, cell)
        }
    }

    /// Shown only with `-o wide` (priority 1).
    const fn wide(self) -> Self {
        self.priority(1)
    }

    /// A priority above 0: kubectl shows the column only with `-o wide`.
    const fn priority(self, priority: u8) -> Self {
        Self { priority, ..self }
    }
}

fn text(v: Option<&Value>) -> Value {
    match v {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Bool(b)) => Value::String(b.to_string()),
        Some(Value::Number(n)) => Value::String(n.to_string()),
        _ => Value::String(String::new()),
    }
}

fn name(o: &Value, _: i64) -> Value {
    text(o.pointer("/metadata/name"))
}

fn age(o: &Value, now: i64) -> Value {
    let age = o
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
        .map(|created| human_duration(now - created))
        .unwrap_or_else(|| "<unknown>".to_owned());
    Value::String(age)
}

/// The age of an RFC 3339 time, as the CRD table converter prints `date` columns.
fn age_of(time: Option<&Value>, now: i64) -> Value {
    match time.and_then(Value::as_str).and_then(parse_rfc3339) {
        Some(t) => Value::String(human_duration(now - t)),
        None => Value::String(String::new()),
    }
}

fn condition_status(o: &Value, kind: &str) -> Value {
    let status = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        })
        .and_then(|c| c.get("status"));
    text(status)
}

const VM_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::date("Age", age),
    Column::string("Status", |o, _| text(o.pointer("/status/printableStatus"))),
    Column::string("Ready", |o, _| condition_status(o, "Ready")),
];

const VMI_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::date("Age", age),
    Column::string("Phase", |o, _| text(o.pointer("/status/phase"))),
    Column::string("IP", |o, _| {
        text(o.pointer("/status/interfaces/0/ipAddress"))
    }),
    Column::string("NodeName", |o, _| text(o.pointer("/status/nodeName"))),
    Column::string("Ready", |o, _| condition_status(o, "Ready")),
    Column::string("Live-Migratable", |o, _| {
        condition_status(o, "LiveMigratable")
    })
    .wide(),
    Column::string("Paused", |o, _| condition_status(o, "Paused")).wide(),
];

fn access_modes(o: &Value) -> Value {
    let modes = o
        .pointer("/status/accessModes")
        .or_else(|| o.pointer("/spec/accessModes"))
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(Value::as_str)
                .map(|m| match m {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    other => other,
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    Value::String(modes)
}

const PVC_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::string("Status", |o, _| text(o.pointer("/status/phase"))),
    Column::string("Volume", |o, _| text(o.pointer("/spec/volumeName"))),
    Column::string("Capacity", |o, _| {
        text(o.pointer("/status/capacity/storage"))
    }),
    Column::string("Access Modes", |o, _| access_modes(o)),
    Column::string("StorageClass", |o, _| {
        text(o.pointer("/spec/storageClassName"))
    }),
    Column::string("Age", age),
    Column::string("VolumeMode", |o, _| text(o.pointer("/spec/volumeMode"))).wide(),
];

fn event_object(o: &Value, _: i64) -> Value {
    let kind = o
        .pointer("/involvedObject/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = o
        .pointer("/involvedObject/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    Value::String(format!("{}/{name}", kind.to_lowercase()))
}

fn event_last_seen(o: &Value, now: i64) -> Value {
    let seen = o
        .get("lastTimestamp")
        .and_then(Value::as_str)
        .or_else(|| o.get("eventTime").and_then(Value::as_str))
        .and_then(parse_rfc3339)
        .map(|t| human_duration(now - t))
        .unwrap_or_else(|| "<unknown>".to_owned());
    Value::String(seen)
}

const EVENT_COLUMNS: &[Column] = &[
    Column::string("Last Seen", event_last_seen),
    Column::string("Type", |o, _| text(o.get("type"))),
    Column::string("Reason", |o, _| text(o.get("reason"))),
    Column::string("Object", event_object),
    Column::string("Message", |o, _| text(o.get("message"))),
];

const NAMESPACE_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::string("Status", |o, _| {
        let phase = text(o.pointer("/status/phase"));
        if phase == "" {
            Value::String("Active".into())
        } else {
            phase
        }
    }),
    Column::string("Age", age),
];

const STORAGE_CLASS_COLUMNS: &[Column] = &[
    Column::name_of("Name", |o, _| {
        let name = o
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let default = o
            .pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
            .and_then(Value::as_str)
            == Some("true");
        Value::String(if default {
            format!("{name} (default)")
        } else {
            name.to_owned()
        })
    }),
    Column::string("Provisioner", |o, _| text(o.get("provisioner"))),
    Column::string("ReclaimPolicy", |o, _| text(o.get("reclaimPolicy"))),
    Column::string("VolumeBindingMode", |o, _| text(o.get("volumeBindingMode"))),
    Column::string("AllowVolumeExpansion", |o, _| {
        Value::String(
            o.get("allowVolumeExpansion")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
        )
    }),
    Column::string("Age", age),
];

const KUBEVIRT_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::date("Age", age),
    Column::string("Phase", |o, _| text(o.pointer("/status/phase"))),
];

/// Harvester's printer columns for VirtualMachineTemplate.
const TEMPLATE_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::string("VERSION_ID", |o, _| {
        text(o.pointer("/spec/defaultVersionId"))
    }),
    Column::string("DESCRIPTION", |o, _| text(o.pointer("/spec/description"))).priority(10),
    Column::integer("VERSION_DEFAULT", |o, _| {
        text(o.pointer("/status/defaultVersion"))
    })
    .priority(8),
    Column::integer("VERSION_LATEST", |o, _| {
        text(o.pointer("/status/latestVersion"))
    })
    .priority(8),
    Column::date("AGE", age),
];

/// Harvester's printer columns for VirtualMachineTemplateVersion.
const TEMPLATE_VERSION_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::string("TEMPLATE_ID", |o, _| text(o.pointer("/spec/templateId"))),
    Column::string("DESCRIPTION", |o, _| text(o.pointer("/spec/description"))).priority(10),
    Column::integer("VERSION", |o, _| text(o.pointer("/status/version"))),
    Column::date("AGE", age),
];

/// A snapshot's size on disk, from ferrovirt's annotation, in binary units (`12.5Mi`).
fn snapshot_size(o: &Value, _: i64) -> Value {
    let bytes = o
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(SNAPSHOT_SIZE_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok());
    match bytes {
        None => Value::String(String::new()),
        Some(bytes) => Value::String(human_bytes(bytes)),
    }
}

/// `1536` -> `1.5Ki`, `0` -> `0`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["Ki", "Mi", "Gi", "Ti", "Pi"];
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text}{}", UNITS[unit])
}

/// KubeVirt's printer columns for VirtualMachineSnapshot, with ferrovirt's SIZE.
const VM_SNAPSHOT_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::string("SourceKind", |o, _| text(o.pointer("/spec/source/kind"))),
    Column::string("SourceName", |o, _| text(o.pointer("/spec/source/name"))),
    Column::string("Phase", |o, _| text(o.pointer("/status/phase"))),
    Column::boolean("ReadyToUse", |o, _| text(o.pointer("/status/readyToUse"))),
    Column::date("CreationTime", |o, now| {
        age_of(o.pointer("/status/creationTime"), now)
    }),
    Column::string("Size", snapshot_size),
    Column::string("Error", |o, _| text(o.pointer("/status/error/message"))),
];

/// KubeVirt's printer columns for VirtualMachineSnapshotContent.
const VM_SNAPSHOT_CONTENT_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::boolean("ReadyToUse", |o, _| text(o.pointer("/status/readyToUse"))),
    Column::date("CreationTime", |o, now| {
        age_of(o.pointer("/status/creationTime"), now)
    }),
    Column::string("Error", |o, _| text(o.pointer("/status/error/message"))),
];

/// KubeVirt's printer columns for VirtualMachineRestore.
const VM_RESTORE_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::string("TargetKind", |o, _| text(o.pointer("/spec/target/kind"))),
    Column::string("TargetName", |o, _| text(o.pointer("/spec/target/name"))),
    Column::boolean("Complete", |o, _| text(o.pointer("/status/complete"))),
    Column::date("RestoreTime", |o, now| {
        age_of(o.pointer("/status/restoreTime"), now)
    }),
    Column::string("Error", |o, _| failure_message(o)),
];

/// KubeVirt's printer columns for VirtualMachineClone.
const VM_CLONE_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::string("Phase", |o, _| text(o.pointer("/status/phase"))),
    Column::string("SourceVirtualMachine", |o, _| {
        text(o.pointer("/spec/source/name"))
    }),
    Column::string("TargetVirtualMachine", |o, _| {
        text(o.pointer("/spec/target/name"))
    }),
];

/// CDI's DataVolume CRD printer columns: NAME, PHASE, PROGRESS, RESTARTS, AGE.
const DATA_VOLUME_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::string("Phase", |o, _| text(o.pointer("/status/phase"))),
    Column::string("Progress", |o, _| text(o.pointer("/status/progress"))),
    Column::integer("Restarts", |o, _| {
        o.pointer("/status/restartCount")
            .cloned()
            .unwrap_or(json!(0))
    }),
    Column::date("Age", age),
];

/// KubeVirt's printer columns for VirtualMachineExport.
const VM_EXPORT_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::string("SourceKind", |o, _| text(o.pointer("/spec/source/kind"))),
    Column::string("SourceName", |o, _| text(o.pointer("/spec/source/name"))),
    Column::string("Phase", |o, _| text(o.pointer("/status/phase"))),
];

/// KubeVirt's printer columns for VirtualMachineInstanceMigration (its CRD: Phase, VMI).
const VMIM_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::string("Phase", |o, _| text(o.pointer("/status/phase"))),
    Column::string("VMI", |o, _| text(o.pointer("/spec/vmiName"))),
];

/// The message of a `Failure` condition that is `True` (empty otherwise).
fn failure_message(o: &Value) -> Value {
    let message = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| {
            c.get("type").and_then(Value::as_str) == Some("Failure")
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
        .and_then(|c| c.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    Value::String(message.to_owned())
}

/// Kubernetes' columns for Role and ClusterRole.
const ROLE_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::date("Created At", |o, _| {
        text(o.pointer("/metadata/creationTimestamp"))
    }),
];

/// The subjects of a binding of one kind, joined by `, ` (`namespace/name` for service accounts).
fn subjects(o: &Value, kind: &str) -> Value {
    let names: Vec<String> = o
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|s| s.get("kind").and_then(Value::as_str) == Some(kind))
        .map(|s| {
            let name = s.get("name").and_then(Value::as_str).unwrap_or("");
            match s.get("namespace").and_then(Value::as_str) {
                Some(ns) if kind == "ServiceAccount" => format!("{ns}/{name}"),
                _ => name.to_owned(),
            }
        })
        .collect();
    Value::String(names.join(", "))
}

/// Kubernetes' columns for RoleBinding and ClusterRoleBinding.
const BINDING_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::string("Role", |o, _| {
        let kind = o
            .pointer("/roleRef/kind")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = o
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        Value::String(format!("{kind}/{name}"))
    }),
    Column::string("Age", age),
    Column::string("Users", |o, _| subjects(o, "User")).wide(),
    Column::string("Groups", |o, _| subjects(o, "Group")).wide(),
    Column::string("ServiceAccounts", |o, _| subjects(o, "ServiceAccount")).wide(),
];

/// kubectl's ControllerRevision columns: NAME, CONTROLLER (`kind.group/name` of the controlling
/// owner), REVISION, AGE.
const CONTROLLER_REVISION_COLUMNS: &[Column] = &[
    Column::name_of("Name", name),
    Column::string("Controller", |o, _| {
        let owner = o
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| {
                refs.iter()
                    .find(|r| r.get("controller") == Some(&json!(true)))
            });
        Value::String(owner.map_or_else(String::new, |r| {
            let field = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
            let group = field("apiVersion").split_once('/').map_or("", |(g, _)| g);
            let kind = field("kind").to_lowercase();
            if group.is_empty() {
                format!("{kind}/{}", field("name"))
            } else {
                format!("{kind}.{group}/{}", field("name"))
            }
        }))
    }),
    Column::integer("Revision", |o, _| {
        o.get("revision").cloned().unwrap_or(json!(0))
    }),
    Column::date("Age", age),
];

fn columns(resource: &ResourceDef) -> &'static [Column] {
    match resource.plural {
        "roles" | "clusterroles" => ROLE_COLUMNS,
        "rolebindings" | "clusterrolebindings" => BINDING_COLUMNS,
        "virtualmachinetemplates" => TEMPLATE_COLUMNS,
        "virtualmachinetemplateversions" => TEMPLATE_VERSION_COLUMNS,
        "virtualmachinesnapshots" => VM_SNAPSHOT_COLUMNS,
        "virtualmachinesnapshotcontents" => VM_SNAPSHOT_CONTENT_COLUMNS,
        "virtualmachinerestores" => VM_RESTORE_COLUMNS,
        "virtualmachineclones" => VM_CLONE_COLUMNS,
        "datavolumes" => DATA_VOLUME_COLUMNS,
        "virtualmachineexports" => VM_EXPORT_COLUMNS,
        "virtualmachineinstancemigrations" => VMIM_COLUMNS,
        "virtualmachines" => VM_COLUMNS,
        "virtualmachineinstances" => VMI_COLUMNS,
        "persistentvolumeclaims" => PVC_COLUMNS,
        "events" => EVENT_COLUMNS,
        "namespaces" => NAMESPACE_COLUMNS,
        "storageclasses" => STORAGE_CLASS_COLUMNS,
        // KubeVirt's instancetype CRDs declare no printer columns: NAME, AGE.
        "virtualmachineinstancetypes"
        | "virtualmachineclusterinstancetypes"
        | "virtualmachinepreferences"
        | "virtualmachineclusterpreferences" => &KUBEVIRT_COLUMNS[..2],
        "controllerrevisions" => CONTROLLER_REVISION_COLUMNS,
        _ => KUBEVIRT_COLUMNS,
    }
}

/// One row of a table: the cells and the object's metadata (`PartialObjectMetadata`).
fn row(resource: &ResourceDef, object: &Value, now: i64) -> Value {
    let cells: Vec<Value> = columns(resource)
        .iter()
        .map(|c| (c.cell)(object, now))
        .collect();
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or(Value::Null),
        },
    })
}

/// The parts of a VM or VMI that its columns and the row's `PartialObjectMetadata` read.
#[derive(serde::Deserialize)]
struct MetadataAndStatus {
    #[serde(default)]
    metadata: Value,
    #[serde(default)]
    status: Option<Value>,
}

/// Parses a stored object (JSON text) for a Table row. For VMs and VMIs, whose columns read only
/// `metadata` and `status`, the rest (the spec, most of a VM) is skipped unparsed: a Table of
/// 10,000 VMs spent most of its time building and dropping their full JSON trees.
pub fn parse_for_table(resource: &ResourceDef, text: &str) -> Option<Value> {
    let (object, used) = next_for_table(resource, text.as_bytes()).ok()?;
    // Nothing after the value but whitespace, as `serde_json::from_str` requires.
    text.get(used..)
        .is_some_and(|rest| rest.trim().is_empty())
        .then_some(object)
}

/// Parses the first JSON value of `bytes` as [`parse_for_table`] does; also returns how many
/// bytes it took.
fn next_for_table(
    resource: &ResourceDef,
    bytes: &[u8],
) -> Result<(Value, usize), serde_json::Error> {
    match resource.plural {
        "virtualmachines" | "virtualmachineinstances" => {
            let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter();
            let parts: MetadataAndStatus = next_value(&mut stream)?;
            let mut object = serde_json::Map::new();
            object.insert("metadata".into(), parts.metadata);
            if let Some(status) = parts.status {
                object.insert("status".into(), status);
            }
            Ok((Value::Object(object), stream.byte_offset()))
        }
        _ => {
            let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter();
            let object: Value = next_value(&mut stream)?;
            Ok((object, stream.byte_offset()))
        }
    }
}

fn next_value<'de, T: serde::Deserialize<'de>>(
    stream: &mut serde_json::StreamDeserializer<'de, serde_json::de::SliceRead<'de>, T>,
) -> Result<T, serde_json::Error> {
    match stream.next() {
        Some(result) => result,
        None => Err(serde::de::Error::custom("no JSON value")),
    }
}

/// A Table of a list's items given as the inside of a JSON array (`{..},{..}`, as
/// `Store::list_json_items` writes them), as the chunks of a response body: the same JSON as
/// [`table`] of the items parsed with [`parse_for_table`], but built one row at a time. A Table of
/// 10,000 VMs held every parsed object, every row and the whole serialized Table at once (~75 MB
/// of heap at its peak); this holds the items' text, one object and the rows' text.
/// `Err` when an item is not JSON (the store writes only JSON, so only a damaged file can).
pub fn table_of_items(
    resource: &ResourceDef,
    items: &[u8],
    resource_version: Option<String>,
    continue_token: Option<String>,
) -> Result<[Vec<u8>; 3], serde_json::Error> {
    let now = now_unix();
    let mut rows = Vec::with_capacity(items.len() / 2);
    let mut rest = items;
    loop {
        let start = rest
            .iter()
            .position(|b| !matches!(b, b',' | b' ' | b'\n' | b'\r' | b'\t'))
            .unwrap_or(rest.len());
        rest = &rest[start..];
        if rest.is_empty() {
            break;
        }
        let (object, used) = next_for_table(resource, rest)?;
        rest = &rest[used..];
        if !rows.is_empty() {
            rows.push(b',');
        }
        serde_json::to_writer(&mut rows, &row(resource, &object, now))?;
    }
    // The envelope is `table` of no rows, cut where its (empty) rows go: `"rows":[]` cannot occur
    // inside one of its strings (a quote in a string is escaped) and comes before
    // `columnDefinitions` (the keys keep their insertion order).
    let envelope = serde_json::to_vec(&table(
        resource,
        &[],
        resource_version,
        continue_token,
        true,
    ))?;
    const EMPTY_ROWS: &[u8] = b"\"rows\":[]";
    let at = envelope
        .windows(EMPTY_ROWS.len())
        .position(|w| w == EMPTY_ROWS)
        .ok_or_else(|| serde::ser::Error::custom("a Table without rows"))?;
    let cut = at + EMPTY_ROWS.len() - 1;
    let suffix = envelope[cut..].to_vec();
    let mut prefix = envelope;
    prefix.truncate(cut);
    Ok([prefix, rows, suffix])
}

/// The column definitions.
fn column_definitions(resource: &ResourceDef) -> Vec<Value> {
    columns(resource)
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.kind, "format": c.format, "description": "", "priority": c.priority})
        })
        .collect()
}

/// A Table of `objects`; `with_columns` false omits the column definitions (watch events after the
/// first, as the Kubernetes API server does).
pub fn table(
    resource: &ResourceDef,
    objects: &[Value],
    resource_version: Option<String>,
    continue_token: Option<String>,
    with_columns: bool,
) -> Value {
    let now = now_unix();
    let mut metadata = serde_json::Map::new();
    if let Some(rv) = resource_version {
        metadata.insert("resourceVersion".into(), Value::String(rv));
    }
    if let Some(token) = continue_token {
        metadata.insert("continue".into(), Value::String(token));
    }
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "rows": objects.iter().map(|o| row(resource, o, now)).collect::<Vec<_>>(),
    });
    table["columnDefinitions"] = if with_columns {
        Value::Array(column_definitions(resource))
    } else {
        Value::Null
    };
    table
}

/// kubectl's short ages: `45s`, `5m3s`, `17m`, `3h4m`, `20h`, `3d4h`, `40d`, `2y10d`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        let rem = s % 60;
        return if rem == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rem}s")
        };
    }
    if m < 180 {
        return format!("{m}m");
    }
    let h = m / 60;
    if h < 8 {
        let rem = m % 60;
        return if rem == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rem}m")
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    let d = h / 24;
    if h < 192 {
        let rem = h % 24;
        return if rem == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{rem}h")
        };
    }
    if d < 365 * 2 {
        return format!("{d}d");
    }
    let y = d / 365;
    if y < 8 {
        let rem = d % 365;
        return if rem == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{rem}d")
        };
    }
    format!("{y}y")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_resources::{PVCS, VMS};

    #[test]
    fn rfc3339_and_ages() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-21T20:15:39Z"), Some(1_795_292_139));
        assert_eq!(
            parse_rfc3339("2026-11-21T20:15:39.123456Z"),
            Some(1_795_292_139)
        );
        assert_eq!(
            parse_rfc3339("2026-11-21T21:15:39+01:00"),
            Some(1_795_292_139)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(303), "5m3s");
        assert_eq!(human_duration(17 * 60), "17m");
        assert_eq!(human_duration(3 * 3600 + 240), "3h4m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(human_duration(40 * 86400), "40d");
    }

    #[test]
    fn snapshot_restore_and_clone_rows() {
        let now = parse_rfc3339("2026-01-01T00:10:00Z").unwrap();
        let snapshot = json!({"metadata": {"name": "s", "annotations": {SNAPSHOT_SIZE_ANNOTATION: "1572864"}},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}},
            "status": {"phase": "Succeeded", "readyToUse": true, "creationTime": "2026-01-01T00:00:00Z"}});
        let snapshots = ferrovirt_resources::VM_SNAPSHOTS;
        assert_eq!(
            row(&snapshots, &snapshot, now)["cells"],
            json!([
                "s",
                "VirtualMachine",
                "vm",
                "Succeeded",
                "true",
                "10m",
                "1.5Mi",
                ""
            ])
        );
        let restore = json!({"metadata": {"name": "r"},
            "spec": {"target": {"kind": "VirtualMachine", "name": "vm"}, "virtualMachineSnapshotName": "s"},
            "status": {"complete": false, "conditions": [{"type": "Failure", "status": "True",
                "message": "VirtualMachine \"vm\" is not stopped"}]}});
        assert_eq!(
            row(&ferrovirt_resources::VM_RESTORES, &restore, now)["cells"],
            json!([
                "r",
                "VirtualMachine",
                "vm",
                "false",
                "",
                "VirtualMachine \"vm\" is not stopped"
            ])
        );
        let clone = json!({"metadata": {"name": "c"}, "spec": {"source": {"name": "a"}, "target": {"name": "b"}},
            "status": {"phase": "Succeeded"}});
        assert_eq!(
            row(&ferrovirt_resources::VM_CLONES, &clone, now)["cells"],
            json!(["c", "Succeeded", "a", "b"])
        );
        assert_eq!(human_bytes(512), "512");
        assert_eq!(human_bytes(2048), "2Ki");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5Gi");
    }

    #[test]
    fn vm_and_pvc_rows() {
        let vm = json!({"metadata": {"name": "vm1", "creationTimestamp": "1970-01-01T00:00:00Z"},
            "status": {"printableStatus": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        let t = table(&VMS, &[vm], Some("5".into()), None, true);
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Age", "Status", "Ready"]);
        assert_eq!(t["rows"][0]["cells"][0], "vm1");
        assert_eq!(t["rows"][0]["cells"][2], "Running");
        assert_eq!(t["rows"][0]["cells"][3], "True");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "vm1");
        assert_eq!(t["metadata"]["resourceVersion"], "5");

        let pvc = json!({"metadata": {"name": "p"}, "spec": {"volumeName": "pvc-1", "accessModes": ["ReadWriteOnce"], "storageClassName": "local-path"},
            "status": {"phase": "Bound", "capacity": {"storage": "10Mi"}}});
        let t = table(&PVCS, &[pvc], None, None, false);
        assert!(t["columnDefinitions"].is_null());
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "Bound");
        assert_eq!(cells[2], "pvc-1");
        assert_eq!(cells[3], "10Mi");
        assert_eq!(cells[4], "RWO");
        assert_eq!(cells[5], "local-path");
    }

    #[test]
    fn rows_from_the_parts_parsed_for_a_table_equal_rows_from_whole_objects() {
        use ferrovirt_resources::{EVENTS, VMIS};
        let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "namespace": "default", "creationTimestamp": "1970-01-01T00:00:00Z",
                         "labels": {"app": "a"}, "resourceVersion": "7"},
            "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {"devices": {}}}}},
            "status": {"printableStatus": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        let vmi = json!({"metadata": {"name": "vm1"}, "spec": {"domain": {}},
            "status": {"phase": "Running", "nodeName": "n1", "interfaces": [{"ipAddress": "10.0.0.1"}]}});
        let no_status = json!({"metadata": {"name": "vm2"}, "spec": {"runStrategy": "Halted"}});
        let pvc = json!({"metadata": {"name": "p"}, "spec": {"volumeName": "pvc-1"}, "status": {"phase": "Bound"}});
        let event = json!({"metadata": {"name": "e"}, "reason": "Started", "message": "m", "type": "Normal",
            "involvedObject": {"kind": "VirtualMachine", "name": "vm1"}});
        for (resource, object) in [
            (VMS, vm),
            (VMIS, vmi),
            (VMS, no_status),
            (PVCS, pvc),
            (EVENTS, event),
        ] {
            let parsed = parse_for_table(&resource, &object.to_string()).unwrap();
            let whole = table(&resource, std::slice::from_ref(&object), None, None, true);
            let partial = table(&resource, std::slice::from_ref(&parsed), None, None, true);
            assert_eq!(whole["rows"], partial["rows"], "{}", resource.plural);
            if matches!(
                resource.plural,
                "virtualmachines" | "virtualmachineinstances"
            ) {
                assert!(parsed.get("spec").is_none(), "the spec is not parsed");
            }
        }
        assert!(parse_for_table(&VMS, "{not json").is_none());
        assert!(parse_for_table(&VMS, r#"{"metadata":{}} x"#).is_none());
        assert!(parse_for_table(&VMS, " {\"metadata\":{}}\n").is_some());
    }

    #[test]
    fn a_table_of_items_is_the_table_of_the_parsed_items() {
        use ferrovirt_resources::EVENTS;
        // No creationTimestamp: the ages do not depend on when each table is built.
        let vms = [
            json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "metadata": {"name": "a", "namespace": "default", "labels": {"x": "\"rows\":[]"}},
                "spec": {"runStrategy": "Halted"},
                "status": {"printableStatus": "Stopped", "conditions": [{"type": "Ready", "status": "False"}]}}),
            json!({"metadata": {"name": "b", "namespace": "default"}, "spec": {}}),
        ];
        let events = [
            json!({"metadata": {"name": "e"}, "reason": "Started", "type": "Normal",
                "involvedObject": {"kind": "VirtualMachine", "name": "a"}}),
        ];
        for (resource, objects, token) in [
            (VMS, &vms[..], None),
            (VMS, &vms[..], Some("next".to_string())),
            (VMS, &[][..], None),
            (EVENTS, &events[..], None),
        ] {
            let items = objects
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let chunks =
                table_of_items(&resource, items.as_bytes(), Some("9".into()), token.clone())
                    .unwrap();
            let parsed: Vec<Value> = objects
                .iter()
                .map(|o| parse_for_table(&resource, &o.to_string()).unwrap())
                .collect();
            let expected =
                serde_json::to_vec(&table(&resource, &parsed, Some("9".into()), token, true))
                    .unwrap();
            assert_eq!(
                String::from_utf8(chunks.concat()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
        assert!(table_of_items(&VMS, b"{\"metadata\":{}},{not json", None, None).is_err());
    }
}
