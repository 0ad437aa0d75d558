//! `ferrovirt delete TYPE NAME...` / `ferrovirt delete -f FILE`: deletes objects and, as kubectl,
//! waits until they are gone (finalizers done) unless `--wait=false`. Prints
//! `virtualmachine.kubevirt.io "NAME" deleted`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use ferrovirt_resources::ResourceDef;
use serde_json::Value;

use crate::client::{Client, ClientArgs, ClientError};
use crate::commands::apply::load_objects;
use crate::resource;

/// Arguments of `ferrovirt delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The type (vm, vmi, pvc, ...) followed by names; or use -f.
    #[arg(value_name = "TYPE NAME")]
    pub args: Vec<String>,
    /// Delete the objects of these manifests.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Wait until the objects are gone.
    #[arg(long = "wait", default_value_t = true, action = clap::ArgAction::Set)]
    pub wait: bool,
    /// Do not report an object that does not exist as an error.
    #[arg(long = "ignore-not-found")]
    pub ignore_not_found: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(args: &DeleteArgs) -> ExitCode {
    let client = match Client::from_args(&args.client) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let targets = match targets(args, client.namespace()) {
        Ok(t) => t,
        Err(e) => return e.report(),
    };
    let mut failed = false;
    let mut deleted = Vec::new();
    for (kind, namespace, name) in targets {
        let path = resource::item_path(&kind, &namespace, &name);
        match client.json("DELETE", &path, "application/json", None) {
            Ok(_) => {
                println!("{} \"{name}\" deleted", resource::display_type(&kind));
                deleted.push(path);
            }
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e) => {
                failed = true;
                e.report();
            }
        }
    }
    if args.wait {
        let deadline = Instant::now() + Duration::from_secs(120);
        for path in deleted {
            loop {
                match client.get(&path) {
                    Err(e) if e.is_not_found() => break,
                    Err(e) => {
                        failed = true;
                        e.report();
                        break;
                    }
                    Ok(_) if Instant::now() > deadline => {
                        failed = true;
                        eprintln!("error: timed out waiting for the deletion of {path}");
                        break;
                    }
                    Ok(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// (resource, namespace, name) of every object to delete.
fn targets(args: &DeleteArgs, ns: &str) -> Result<Vec<(ResourceDef, String, String)>, ClientError> {
    if !args.files.is_empty() {
        if !args.args.is_empty() {
            return Err(ClientError::Usage(
                "give either -f FILE or TYPE NAME..., not both".to_owned(),
            ));
        }
        return load_objects(&args.files)?
            .into_iter()
            .map(|(_, object)| {
                let kind = resource::of_object(&object)?;
                let namespace = object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(ns)
                    .to_owned();
                Ok((kind, namespace, resource::name_of(&object).to_owned()))
            })
            .collect();
    }
    let Some((kind, names)) = args.args.split_first() else {
        return Err(ClientError::Usage(
            "you must provide one or more resources by argument or filename (ferrovirt delete vm NAME, ferrovirt delete -f FILE)".to_owned(),
        ));
    };
    // `vm/NAME` as kubectl accepts it.
    if names.is_empty()
        && let Some((kind, name)) = kind.split_once('/')
    {
        return Ok(vec![(
            resource::resolve(kind)?,
            ns.to_owned(),
            name.to_owned(),
        )]);
    }
    if names.is_empty() {
        return Err(ClientError::Usage(format!(
            "resource(s) were provided, but no name was specified (ferrovirt delete {kind} NAME)"
        )));
    }
    let kind = resource::resolve(kind)?;
    Ok(names
        .iter()
        .map(|n| (kind, ns.to_owned(), n.clone()))
        .collect())
}
