//! `ferrovirt get TYPE [NAME...] [-o yaml|json|wide|name] [-A] [-l SELECTOR] [-w]`: objects as
//! kubectl prints them. Tables come from the server (`as=Table`), so the columns are the ones
//! kubectl shows for the same resource.

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

use clap::Args;
use ferrovirt_resources::ResourceDef;
use serde_json::Value;

use crate::client::{Client, ClientArgs, ClientError, TABLE_ACCEPT, with_query};
use crate::output::{Columns, OutputFormat, format_rows, list_of, to_json, to_yaml};
use crate::resource;

/// Arguments of `ferrovirt get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The type: vm(s), vmi(s), pvc, sc, kubevirt, ns, events (kubectl's names and short names).
    #[arg(value_name = "TYPE")]
    pub kind: String,
    /// Names of objects (all objects when none).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<OutputFormat>,
    /// List across all namespaces.
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// Label selector, e.g. `app=demo` or `tier in (a,b)`.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// After listing, watch for changes.
    #[arg(short = 'w', long = "watch")]
    pub watch: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(args: &GetArgs) -> ExitCode {
    match get(args) {
        Ok(code) => code,
        Err(e) => e.report(),
    }
}

struct Request<'a> {
    client: Client,
    kind: ResourceDef,
    namespace: Option<&'a str>,
    query: Vec<(&'static str, String)>,
}

impl Request<'_> {
    fn list_path(&self, extra: &[(&str, &str)]) -> String {
        let mut query: Vec<(&str, &str)> =
            self.query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        query.extend_from_slice(extra);
        with_query(
            &resource::collection_path(&self.kind, self.namespace),
            &query,
        )
    }
}

fn get(args: &GetArgs) -> Result<ExitCode, ClientError> {
    let client = Client::from_args(&args.client)?;
    let kind = resource::resolve(&args.kind)?;
    let ns = client.namespace().to_owned();
    let namespace = (kind.namespaced && !args.all_namespaces).then_some(ns.as_str());
    let mut query = Vec::new();
    if let Some(selector) = &args.selector {
        query.push(("labelSelector", selector.clone()));
    }
    let request = Request {
        client,
        kind,
        namespace,
        query,
    };
    let with_namespace = kind.namespaced && args.all_namespaces;
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    match args.output {
        None | Some(OutputFormat::Wide) => {
            let wide = args.output == Some(OutputFormat::Wide);
            let mut tables = Vec::new();
            if args.names.is_empty() {
                tables.push(request.client.get_table(&request.list_path(&[]))?);
            } else {
                for name in &args.names {
                    match request
                        .client
                        .get_table(&resource::item_path(&kind, &ns, name))
                    {
                        Ok(t) => tables.push(t),
                        Err(e) => {
                            failed = true;
                            e.report();
                        }
                    }
                }
            }
            let Some(first) = tables.first() else {
                return Ok(ExitCode::FAILURE);
            };
            let columns = Columns::from_table(first, wide, with_namespace);
            let mut lines = vec![columns.header()];
            for table in &tables {
                lines.extend(columns.rows(table));
            }
            if lines.len() == 1 && !args.watch {
                match namespace {
                    Some(ns) => eprintln!("No resources found in {ns} namespace."),
                    None => eprintln!("No resources found"),
                }
            } else {
                let _ = out.write_all(format_rows(&lines).as_bytes());
                let _ = out.flush();
            }
            if args.watch {
                let rv = first
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                watch_table(&request, &args.names, &rv, &columns, &lines)?;
            }
        }
        Some(format) => {
            let objects = if args.names.is_empty() {
                let list = request.client.get(&request.list_path(&[]))?;
                list.get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            } else {
                let mut objects = Vec::new();
                for name in &args.names {
                    match request.client.get(&resource::item_path(&kind, &ns, name)) {
                        Ok(o) => objects.push(o),
                        Err(e) => {
                            failed = true;
                            e.report();
                        }
                    }
                }
                objects
            };
            let single = args.names.len() == 1 && objects.len() == 1;
            let printed = match format {
                OutputFormat::Name => objects
                    .iter()
                    .map(|o| {
                        format!(
                            "{}/{}\n",
                            resource::display_type(&kind),
                            resource::name_of(o)
                        )
                    })
                    .collect(),
                OutputFormat::Json if single => to_json(&objects[0]),
                OutputFormat::Yaml if single => to_yaml(&objects[0]),
                OutputFormat::Json => to_json(&list_of(objects)),
                _ => to_yaml(&list_of(objects)),
            };
            if !(failed && printed.is_empty()) {
                let _ = out.write_all(printed.as_bytes());
            }
            let _ = out.flush();
            if args.watch {
                watch_objects(&request, &args.names, format)?;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The watch query of `get -w` (a single name becomes a field selector, as kubectl does).
fn watch_path(request: &Request, names: &[String], resource_version: &str) -> String {
    let selector = match names {
        [name] => format!("metadata.name={name}"),
        _ => String::new(),
    };
    let mut extra = vec![("watch", "true")];
    if !resource_version.is_empty() {
        extra.push(("resourceVersion", resource_version));
    }
    if !selector.is_empty() {
        extra.push(("fieldSelector", selector.as_str()));
    }
    request.list_path(&extra)
}

/// Streams watch events (one JSON object per line) to `each`, until the server ends the watch.
fn for_each_event(
    request: &Request,
    path: &str,
    accept: &str,
    mut each: impl FnMut(&str, &Value),
) -> Result<(), ClientError> {
    let reader = BufReader::new(request.client.stream(path, accept)?);
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        if kind == "ERROR" {
            let message = event
                .pointer("/object/message")
                .and_then(Value::as_str)
                .unwrap_or("watch failed");
            return Err(ClientError::Usage(format!("watch: {message}")));
        }
        if let Some(object) = event.get("object") {
            each(kind, object);
        }
    }
    Ok(())
}

fn watch_table(
    request: &Request,
    names: &[String],
    resource_version: &str,
    columns: &Columns,
    printed: &[Vec<String>],
) -> Result<(), ClientError> {
    let path = watch_path(request, names, resource_version);
    // Pad new rows to the widths of what is already on the screen, as kubectl's watch does.
    let widths: Vec<Vec<String>> = printed.to_vec();
    for_each_event(request, &path, TABLE_ACCEPT, |_, table| {
        let mut lines = widths.clone();
        let rows = columns.rows(table);
        let count = rows.len();
        lines.extend(rows);
        let text = format_rows(&lines);
        let new: Vec<&str> = text.lines().rev().take(count).collect();
        let mut out = std::io::stdout().lock();
        for line in new.into_iter().rev() {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    })
}

fn watch_objects(
    request: &Request,
    names: &[String],
    format: OutputFormat,
) -> Result<(), ClientError> {
    let list = request.client.get(&request.list_path(&[("limit", "1")]))?;
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let path = watch_path(request, names, &rv);
    let kind = request.kind;
    for_each_event(request, &path, "application/json", |_, object| {
        let text = match format {
            OutputFormat::Name => {
                format!(
                    "{}/{}\n",
                    resource::display_type(&kind),
                    resource::name_of(object)
                )
            }
            OutputFormat::Json => to_json(object),
            _ => format!("---\n{}", to_yaml(object)),
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    })
}
