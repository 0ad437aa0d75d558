//! `ferrovirt validate -f FILE [-f FILE...] [--config KUBEVIRT_CR.yaml]`: offline admission.
//! Prints `virtualmachine.kubevirt.io/NAME valid` per valid object; kubectl-style errors otherwise.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use ferrovirt_api::config::ClusterConfig;
use ferrovirt_api::parse::{MAX_INPUT_BYTES, parse_documents};
use ferrovirt_api::validation::{AdmissionContext, admit};
use ferrovirt_api::{Object, defaults};

/// Arguments of `ferrovirt validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Manifest file (YAML, multi-document YAML or JSON); `-` reads standard input. Repeatable.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// A KubeVirt object (YAML/JSON) whose feature gates to use instead of the embedded defaults.
    #[arg(long = "config", value_name = "KUBEVIRT_CR.yaml")]
    pub config: Option<PathBuf>,
}

/// Why an input could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("{name}: {source}")]
    Io { name: String, source: io::Error },
    #[error(
        "{name}: input is more than {limit} bytes, the limit for a manifest; split it into several files"
    )]
    TooLarge { name: String, limit: usize },
}

pub(crate) fn display_name(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Reads at most the manifest limit plus one byte, so a huge input is refused without loading it.
pub(crate) fn read_input(path: &Path) -> Result<Vec<u8>, ReadError> {
    let name = display_name(path);
    let limit = MAX_INPUT_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    let result = if path.as_os_str() == "-" {
        io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    result.map_err(|source| ReadError::Io {
        name: name.clone(),
        source,
    })?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(ReadError::TooLarge {
            name,
            limit: MAX_INPUT_BYTES,
        });
    }
    Ok(bytes)
}

pub(crate) fn load_config(path: &Path) -> Result<ClusterConfig, String> {
    let name = display_name(path);
    let bytes = read_input(path).map_err(|e| e.to_string())?;
    let objects = parse_documents(&bytes, &name).map_err(|e| e.to_string())?;
    let mut kubevirts = objects.iter().filter_map(|o| match o {
        Object::KubeVirt(kv) => Some(kv),
        _ => None,
    });
    match (kubevirts.next(), kubevirts.next()) {
        (Some(kv), None) => Ok(ClusterConfig::from_kubevirt(kv)),
        (None, _) => Err(format!(
            "{name}: no KubeVirt object (apiVersion: kubevirt.io/v1, kind: KubeVirt) found; --config needs one"
        )),
        (Some(_), Some(_)) => Err(format!(
            "{name}: more than one KubeVirt object; --config needs exactly one"
        )),
    }
}

/// Runs `ferrovirt validate`.
pub fn run(args: &ValidateArgs) -> ExitCode {
    let stdout = io::stdout();
    let stderr = io::stderr();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    let config = match &args.config {
        Some(path) => match load_config(path) {
            Ok(config) => config,
            Err(message) => {
                let _ = writeln!(err, "error: {message}");
                return ExitCode::FAILURE;
            }
        },
        None => ClusterConfig::embedded_default(),
    };
    let ctx = AdmissionContext::create(&config);
    let mut failed = false;
    for path in &args.files {
        let name = display_name(path);
        let bytes = match read_input(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                failed = true;
                continue;
            }
        };
        let objects = match parse_documents(&bytes, &name) {
            Ok(objects) => objects,
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                failed = true;
                continue;
            }
        };
        if objects.is_empty() {
            let _ = writeln!(err, "error: {name}: no objects passed to validate");
            failed = true;
            continue;
        }
        for mut object in objects {
            if let Object::VirtualMachine(vm) = &mut object {
                defaults::apply_vm_defaults(vm);
            }
            match admit(&object, &ctx) {
                Ok(()) => {
                    let _ = writeln!(out, "{}/{} valid", object.resource_prefix(), object.name());
                }
                Err(invalid) => {
                    let _ = writeln!(err, "{invalid}");
                    failed = true;
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
