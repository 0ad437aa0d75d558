//! `ferrovirt vmexport create|download|delete NAME` with virtctl's flags and messages, and
//! `ferrovirt vmexport import DIR`.
//!
//! - `create`: a VirtualMachineExport of a VM (`--vm`), a VirtualMachineSnapshot (`--snapshot`)
//!   or a PVC (`--pvc`), with a token Secret `secret-<name>` as virtctl makes it.
//! - `download`: waits until the export is Ready, then downloads one volume (`--volume`, needed
//!   when there are several) as `gzip` (default: `disk.img.gz`, or `disk.tar.gz` for a volume of
//!   files) or `raw`, or with `--manifest` the manifests `all` (`--include-secret` adds the header
//!   Secret); `--all` (ferrovirt) writes every volume and the manifests into the directory
//!   `--output` for `import`. The token goes in `x-kubevirt-export-token`; the server is trusted
//!   through the export's own `cert` (`--insecure` turns that off). A progress bar on stderr; a
//!   broken download resumes where it stopped (`<output>.part` + `Range`/`If-Range`, `--retry`).
//!   An export created by `download` is deleted afterwards unless `--keep-vme`.
//! - `import DIR` (ferrovirt): creates the PVCs of the manifests' DataVolumes on the server of
//!   the current kubeconfig, fills each from the downloaded file through the PVC's
//!   `volumeimport` subresource, then creates the VM as the manifests have it (its
//!   `firmware.uuid` kept, so its TPM state under `swtpm/<uuid>/` is found).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use ferrovirt_api::export::{self as api, format as fmt};
use ferrovirt_resources::{PVCS, SECRETS, VM_EXPORTS, VMS};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::client::{Client, ClientArgs, ClientError, status_error};
use crate::resource::{collection_path, item_path};

/// `ferrovirt vmexport ...`.
#[derive(Debug, Subcommand)]
pub enum VmExportCommand {
    /// Create a VirtualMachineExport (and its token Secret).
    Create(CreateArgs),
    /// Download a volume or the manifests of an export (creating it first with --vm/--snapshot/--pvc).
    Download(DownloadArgs),
    /// Delete a VirtualMachineExport.
    Delete(DeleteArgs),
    /// Import a directory written by `download --all` into the server of the kubeconfig.
    Import(ImportArgs),
}

/// What to export (one of them).
#[derive(Debug, Clone, Default, Args)]
#[group(multiple = false)]
pub struct SourceArgs {
    /// Sets VirtualMachine as vmexport kind and specifies the vm name.
    #[arg(long)]
    pub vm: Option<String>,
    /// Sets VirtualMachineSnapshot as vmexport kind and specifies the snapshot name.
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Sets PersistentVolumeClaim as vmexport kind and specifies the PVC name.
    #[arg(long)]
    pub pvc: Option<String>,
}

impl SourceArgs {
    fn source(&self) -> Option<Value> {
        if let Some(vm) = &self.vm {
            return Some(json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm}));
        }
        if let Some(s) = &self.snapshot {
            return Some(
                json!({"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot", "name": s}),
            );
        }
        self.pvc
            .as_ref()
            .map(|p| json!({"kind": "PersistentVolumeClaim", "name": p}))
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub source: SourceArgs,
    /// The time after the export was created that it is eligible to be automatically deleted,
    /// defaults to 2 hours by the server side if not specified.
    #[arg(long)]
    pub ttl: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Specifies the output path of the volume to be downloaded (a directory with --all; `-` or
    /// absent with --manifest: standard output).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Specifies the volume to be downloaded.
    #[arg(long)]
    pub volume: Option<String>,
    /// Used to specify the format of the downloaded image. There's two options: gzip (default)
    /// and raw.
    #[arg(long, value_parser = ["gzip", "raw"])]
    pub format: Option<String>,
    /// Instead of downloading a volume, retrieve the VM manifest.
    #[arg(long)]
    pub manifest: bool,
    /// Manifest output format, defaults to Yaml. Valid options are yaml or json.
    #[arg(long = "manifest-output-format", value_parser = ["yaml", "json"])]
    pub manifest_output_format: Option<String>,
    /// When used with manifest and set to true include a secret that contains proper headers for
    /// CDI to import using the manifest.
    #[arg(long = "include-secret")]
    pub include_secret: bool,
    /// Download every volume and the manifests into the directory --output (for `import`).
    #[arg(long, conflicts_with_all = ["manifest", "volume"])]
    pub all: bool,
    /// When used with the 'download' option, specifies that the http request should be insecure.
    #[arg(long)]
    pub insecure: bool,
    /// Specifies that the vmexport object should always be retained after the download finishes.
    #[arg(long = "keep-vme")]
    pub keep_vme: bool,
    /// Specifies that the vmexport object should always be deleted after the download finishes.
    #[arg(long = "delete-vme", conflicts_with = "keep_vme")]
    pub delete_vme: bool,
    /// The time after the export was created that it is eligible to be automatically deleted.
    #[arg(long)]
    pub ttl: Option<String>,
    /// When the export server returns a transient error (or the connection breaks), retry
    /// (resuming) this number of times before giving up.
    #[arg(long, default_value_t = 0)]
    pub retry: u32,
    /// Specify maximum wait for VM export object to be ready.
    #[arg(long = "readiness-timeout", default_value = "2m")]
    pub readiness_timeout: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A directory written by `ferrovirt vmexport download NAME --all --output DIR`.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// How long to wait for each PVC to be Bound.
    #[arg(long, default_value = "2m")]
    pub timeout: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `ferrovirt vmexport ...`.
pub fn run(command: &VmExportCommand) -> ExitCode {
    let outcome = match command {
        VmExportCommand::Create(args) => create(args),
        VmExportCommand::Delete(args) => delete(args),
        VmExportCommand::Download(args) => download(args),
        VmExportCommand::Import(args) => import(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => error.report(),
    }
}

fn usage(message: impl Into<String>) -> ClientError {
    ClientError::Usage(message.into())
}

fn duration(flag: &str, text: &str) -> Result<Duration, ClientError> {
    ferrovirt_api::snapshot::parse_go_duration(text).ok_or_else(|| {
        usage(format!(
            "{flag} {text:?} is not a duration; write it as 90s, 5m or 1h"
        ))
    })
}

fn get_optional(client: &Client, path: &str) -> Result<Option<Value>, ClientError> {
    match client.get(path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates the export and virtctl's token Secret (`secret-<name>`, owned by the export).
fn create_export(
    client: &Client,
    name: &str,
    source: Value,
    ttl: Option<&str>,
) -> Result<(), ClientError> {
    let ns = client.namespace().to_owned();
    if get_optional(client, &item_path(&VM_EXPORTS, &ns, name))?.is_some() {
        return Err(usage(format!(
            "VirtualMachineExport '{ns}/{name}' already exists"
        )));
    }
    if let Some(ttl) = ttl {
        duration("--ttl", ttl)?;
    }
    let secret_name = api::virtctl_token_secret_name(name);
    let mut body = json!({
        "apiVersion": api::EXPORT_API_VERSION,
        "kind": "VirtualMachineExport",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"source": source, "tokenSecretRef": secret_name},
    });
    if let Some(ttl) = ttl {
        body["spec"]["ttlDuration"] = json!(ttl);
    }
    let created = client.send_json(
        "POST",
        &collection_path(&VM_EXPORTS, Some(&ns)),
        "application/json",
        &body,
    )?;
    let token = ferrovirt_resources::export::generate_token()
        .ok_or_else(|| usage("the OS gave no random bytes for the export token"))?;
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name,
            "namespace": ns,
            "ownerReferences": [{
                "apiVersion": api::EXPORT_API_VERSION,
                "kind": "VirtualMachineExport",
                "name": name,
                "uid": created.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or(""),
                "controller": true,
                "blockOwnerDeletion": false,
            }],
        },
        "type": "Opaque",
        "stringData": {api::SECRET_TOKEN_KEY: token},
    });
    match client.send_json(
        "POST",
        &collection_path(&SECRETS, Some(&ns)),
        "application/json",
        &secret,
    ) {
        Ok(_) => {}
        Err(ClientError::Status { code: 409, .. }) => {}
        Err(e) => return Err(e),
    }
    println!("VirtualMachineExport '{ns}/{name}' created successfully");
    Ok(())
}

fn create(args: &CreateArgs) -> Result<(), ClientError> {
    let client = Client::from_args(&args.client)?;
    let source = args.source.source().ok_or_else(|| {
        usage("need to specify export kind when attempting to create a VirtualMachineExport [--pvc|--vm|--snapshot]")
    })?;
    create_export(&client, &args.name, source, args.ttl.as_deref())
}

fn delete_export(client: &Client, name: &str) -> Result<(), ClientError> {
    let ns = client.namespace().to_owned();
    match client.json(
        "DELETE",
        &item_path(&VM_EXPORTS, &ns, name),
        "application/json",
        None,
    ) {
        Ok(_) => {
            println!("VirtualMachineExport '{ns}/{name}' deleted successfully");
            Ok(())
        }
        Err(e) if e.is_not_found() => {
            println!("VirtualMachineExport '{ns}/{name}' does not exist");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn delete(args: &DeleteArgs) -> Result<(), ClientError> {
    let client = Client::from_args(&args.client)?;
    delete_export(&client, &args.name)
}

/// Waits until the export is Ready; returns it.
fn wait_ready(client: &Client, name: &str, limit: Duration) -> Result<Value, ClientError> {
    let ns = client.namespace().to_owned();
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let export = client.get(&item_path(&VM_EXPORTS, &ns, name))?;
        let phase = export
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if phase == "Ready" {
            return Ok(export);
        }
        let message = export
            .pointer("/status/conditions/0/message")
            .and_then(Value::as_str)
            .unwrap_or("");
        let line =
            format!("waiting for VirtualMachineExport {ns}/{name} to be ready: {phase} {message}");
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if started.elapsed() > limit {
            return Err(usage(format!(
                "VirtualMachineExport {ns}/{name} was not ready within {limit:?}: {phase} {message}"
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The token of the export's Secret (`status.tokenSecretRef`).
fn export_token(client: &Client, export: &Value) -> Result<String, ClientError> {
    use base64::Engine as _;
    let ns = client.namespace().to_owned();
    let name = export
        .pointer("/status/tokenSecretRef")
        .and_then(Value::as_str)
        .ok_or_else(|| usage("the export names no token Secret (status.tokenSecretRef)"))?;
    let secret = client.get(&item_path(&SECRETS, &ns, name))?;
    let encoded = secret
        .pointer(&format!("/data/{}", api::SECRET_TOKEN_KEY))
        .and_then(Value::as_str)
        .ok_or_else(|| usage(format!("Secret {ns}/{name} has no `token` key")))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| usage(format!("Secret {ns}/{name}: the token is not base64: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|_| usage(format!("Secret {ns}/{name}: the token is not text")))
}

/// An HTTP client of the export server: it trusts the export's `cert` (or, `--insecure`,
/// nothing is verified) and sends the token header; no API credentials.
struct ExportHttp {
    agent: ureq::Agent,
    token: String,
}

impl ExportHttp {
    fn new(cert: &str, insecure: bool, token: String) -> Result<Self, ClientError> {
        let builder = TlsConfig::builder()
            .unversioned_rustls_crypto_provider(ferrovirt_auth::crypto_provider());
        let tls = if insecure {
            builder.disable_verification(true).build()
        } else {
            let mut roots = Vec::new();
            for item in ureq::tls::parse_pem(cert.as_bytes()) {
                if let Ok(PemItem::Certificate(c)) = item {
                    roots.push(Certificate::from_der(c.der()).to_owned());
                }
            }
            if roots.is_empty() {
                return Err(usage(
                    "the export's links carry no certificate to verify its server; use --insecure to download without verifying it",
                ));
            }
            builder.root_certs(RootCerts::from(roots)).build()
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .tls_config(tls)
            .build()
            .into();
        Ok(Self { agent, token })
    }

    fn get(
        &self,
        url: &str,
        accept: &str,
        range: Option<(u64, &str)>,
    ) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        let mut request = self
            .agent
            .get(url)
            .header("Accept", accept)
            .header(api::TOKEN_HEADER, &self.token);
        if let Some((offset, etag)) = range {
            request = request
                .header("Range", &format!("bytes={offset}-"))
                .header("If-Range", etag);
        }
        request.call().map_err(|e| ClientError::Transport {
            server: url.to_owned(),
            detail: e.to_string(),
        })
    }

    /// A small document (a manifest).
    fn document(&self, url: &str, accept: &str) -> Result<Vec<u8>, ClientError> {
        let response = self.get(url, accept, None)?;
        let code = response.status().as_u16();
        let mut bytes = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(64 * 1024 * 1024)
            .read_to_end(&mut bytes)
            .map_err(|e| ClientError::Transport {
                server: url.to_owned(),
                detail: e.to_string(),
            })?;
        if !(200..300).contains(&code) {
            return Err(status_error(code, &bytes));
        }
        Ok(bytes)
    }
}

fn progress_bar(total: Option<u64>, label: &str) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::no_length(),
    };
    let template = if total.is_some() {
        "{msg} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_owned());
    bar
}

fn header_text(response: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ClientError + '_ {
    move |e| usage(format!("{}: {e}", path.display()))
}

/// Downloads `url` to `output`, resuming `<output>.part` when its ETag still matches; retries a
/// broken transfer `retries` times. Returns the bytes written.
fn download_file(
    http: &ExportHttp,
    url: &str,
    output: &Path,
    retries: u32,
) -> Result<u64, ClientError> {
    let part = output.with_extension(format!(
        "{}part",
        output
            .extension()
            .map(|e| format!("{}.", e.to_string_lossy()))
            .unwrap_or_default()
    ));
    let tag_file = PathBuf::from(format!("{}.etag", part.display()));
    let mut attempt = 0;
    loop {
        let offset = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let etag = fs::read_to_string(&tag_file).ok();
        let range = etag
            .as_deref()
            .filter(|_| offset > 0)
            .map(|tag| (offset, tag.trim()));
        let outcome = (|| -> Result<u64, ClientError> {
            let response = http.get(url, "*/*", range)?;
            let code = response.status().as_u16();
            if !(200..300).contains(&code) {
                let mut bytes = Vec::new();
                let _ = response
                    .into_body()
                    .into_reader()
                    .take(1 << 20)
                    .read_to_end(&mut bytes);
                return Err(status_error(code, &bytes));
            }
            let resumed = code == 206;
            if let Some(tag) = header_text(&response, "etag") {
                fs::write(&tag_file, tag).map_err(io_err(&tag_file))?;
            }
            let length: Option<u64> =
                header_text(&response, "content-length").and_then(|l| l.parse().ok());
            let start = if resumed { offset } else { 0 };
            let mut file = fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(resumed)
                .truncate(!resumed)
                .open(&part)
                .map_err(io_err(&part))?;
            let label = output
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bar = progress_bar(length.map(|l| l + start), &label);
            bar.set_position(start);
            if resumed {
                // Not through the bar: a hidden bar (stderr not a terminal) prints nothing.
                eprintln!("resuming {label} at byte {start}");
            }
            let mut reader = bar.wrap_read(response.into_body().into_reader());
            let copied = io::copy(&mut reader, &mut file).map_err(|e| ClientError::Transport {
                server: url.to_owned(),
                detail: format!(
                    "the download broke after {} bytes: {e}",
                    start + bar.position().saturating_sub(start)
                ),
            })?;
            file.sync_all().map_err(io_err(&part))?;
            bar.finish_and_clear();
            if let Some(length) = length
                && copied != length
            {
                return Err(ClientError::Transport {
                    server: url.to_owned(),
                    detail: format!("the download ended after {copied} of {length} bytes"),
                });
            }
            Ok(start + copied)
        })();
        match outcome {
            Ok(total) => {
                fs::rename(&part, output).map_err(io_err(output))?;
                let _ = fs::remove_file(&tag_file);
                return Ok(total);
            }
            Err(error @ ClientError::Transport { .. })
            | Err(
                error @ ClientError::Status {
                    code: 500..=599, ..
                },
            ) if attempt < retries => {
                attempt += 1;
                eprintln!("{error}; retrying ({attempt}/{retries})");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(error) => return Err(error),
        }
    }
}

/// The link the client uses: external (internal when there is none).
fn link(export: &Value) -> Result<&Value, ClientError> {
    export
        .pointer("/status/links/external")
        .or_else(|| export.pointer("/status/links/internal"))
        .ok_or_else(|| {
            usage(format!(
                "unable to access the volume info from '{}/{}' VirtualMachineExport",
                export
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                export
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            ))
        })
}

fn format_url<'a>(volume: &'a Value, wanted: &str) -> Option<&'a str> {
    volume
        .get("formats")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|f| f.get("format").and_then(Value::as_str) == Some(wanted))
        .and_then(|f| f.get("url").and_then(Value::as_str))
}

/// The compressed URL of a volume: `gzip`, else `tar.gz`.
fn packed_url(volume: &Value) -> Option<(&str, &'static str)> {
    format_url(volume, fmt::GZIP)
        .map(|u| (u, "img.gz"))
        .or_else(|| format_url(volume, fmt::TAR_GZ).map(|u| (u, "tar.gz")))
}

fn manifest_url<'a>(link: &'a Value, kind: &str) -> Option<&'a str> {
    link.get("manifests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|m| m.get("type").and_then(Value::as_str) == Some(kind))
        .and_then(|m| m.get("url").and_then(Value::as_str))
}

fn download(args: &DownloadArgs) -> Result<(), ClientError> {
    let client = Client::from_args(&args.client)?;
    let ns = client.namespace().to_owned();
    let limit = duration("--readiness-timeout", &args.readiness_timeout)?;
    let existing = get_optional(&client, &item_path(&VM_EXPORTS, &ns, &args.name))?;
    let created = match (existing, args.source.source()) {
        (Some(_), Some(_)) => {
            return Err(usage(format!(
                "VirtualMachineExport '{ns}/{}' already exists",
                args.name
            )));
        }
        (Some(_), None) => false,
        (None, Some(source)) => {
            create_export(&client, &args.name, source, args.ttl.as_deref())?;
            true
        }
        (None, None) => {
            return Err(usage(format!(
                "VirtualMachineExport '{ns}/{}' does not exist; create it, or pass --vm, --snapshot or --pvc",
                args.name
            )));
        }
    };
    let result = download_ready(&client, args, limit);
    let delete_after = !args.manifest && (args.delete_vme || (created && !args.keep_vme));
    if delete_after {
        delete_export(&client, &args.name)?;
    }
    result
}

fn download_ready(
    client: &Client,
    args: &DownloadArgs,
    limit: Duration,
) -> Result<(), ClientError> {
    let export = wait_ready(client, &args.name, limit)?;
    let token = export_token(client, &export)?;
    let link = link(&export)?;
    let cert = link.get("cert").and_then(Value::as_str).unwrap_or("");
    let http = ExportHttp::new(cert, args.insecure, token.clone())?;
    let ns = client.namespace().to_owned();
    if args.manifest {
        let json_out = args.manifest_output_format.as_deref() == Some("json");
        let accept = if json_out {
            "application/json"
        } else {
            "application/yaml"
        };
        let url = manifest_url(link, api::manifest::ALL).ok_or_else(|| {
            usage(format!(
                "unable to access the manifest info from '{ns}/{}' VirtualMachineExport",
                args.name
            ))
        })?;
        let mut out = http.document(url, accept)?;
        if args.include_secret
            && let Some(url) = manifest_url(link, api::manifest::AUTH_HEADER)
        {
            out.extend(http.document(url, accept)?);
        }
        return match args.output.as_deref() {
            None => io::stdout()
                .write_all(&out)
                .map_err(|e| usage(e.to_string())),
            Some(p) if p == Path::new("-") => io::stdout()
                .write_all(&out)
                .map_err(|e| usage(e.to_string())),
            Some(path) => fs::write(path, &out).map_err(io_err(path)),
        };
    }
    let Some(output) = args.output.as_deref() else {
        return Err(usage(
            "need to specify the '--output' flag when using 'download'",
        ));
    };
    let volumes: Vec<&Value> = link
        .get("volumes")
        .and_then(Value::as_array)
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    if args.all {
        fs::create_dir_all(output).map_err(io_err(output))?;
        for volume in &volumes {
            let name = volume.get("name").and_then(Value::as_str).unwrap_or("");
            let (url, extension) = packed_url(volume)
                .ok_or_else(|| usage(format!("unable to get a valid URL for volume {name:?}")))?;
            let path = output.join(format!("{name}.{extension}"));
            let started = Instant::now();
            let bytes = download_file(&http, url, &path, args.retry)?;
            report_throughput(&path, bytes, started.elapsed());
        }
        if let Some(url) = manifest_url(link, api::manifest::ALL) {
            let manifests = http.document(url, "application/yaml")?;
            let path = output.join("manifests.yaml");
            fs::write(&path, manifests).map_err(io_err(&path))?;
        }
        println!(
            "VirtualMachineExport '{ns}/{}': {} volume(s) and manifests.yaml written to {}",
            args.name,
            volumes.len(),
            output.display()
        );
        return Ok(());
    }
    let volume = match (&args.volume, volumes.as_slice()) {
        (_, []) => {
            return Err(usage(format!(
                "unable to access the volume info from '{ns}/{}' VirtualMachineExport",
                args.name
            )));
        }
        (None, [only]) => *only,
        (None, _) => {
            return Err(usage(format!(
                "detected more than one downloadable volume in '{ns}/{}' VirtualMachineExport: Select the expected volume using the --volume flag",
                args.name
            )));
        }
        (Some(wanted), all) => all
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(wanted.as_str()))
            .copied()
            .ok_or_else(|| {
                usage(format!(
                    "volume {wanted:?} is not in '{ns}/{}' VirtualMachineExport",
                    args.name
                ))
            })?,
    };
    let url = match args.format.as_deref() {
        Some("raw") => format_url(volume, fmt::RAW).ok_or_else(|| {
            usage("this volume has no raw format (a volume of files is served as tar.gz or dir); use --format gzip")
        })?,
        _ => packed_url(volume)
            .map(|(u, _)| u)
            .ok_or_else(|| usage(format!("unable to get a valid URL from '{ns}/{}' VirtualMachineExport", args.name)))?,
    };
    let started = Instant::now();
    let bytes = download_file(&http, url, output, args.retry)?;
    report_throughput(output, bytes, started.elapsed());
    println!("Download finished succesfully");
    Ok(())
}

fn report_throughput(path: &Path, bytes: u64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-6);
    eprintln!(
        "{}: {bytes} bytes in {:.2} s ({:.1} MB/s)",
        path.display(),
        secs,
        bytes as f64 / secs / 1e6
    );
}

/// The volume name in an export URL (`.../volumes/<name>/...`).
fn volume_of_url(url: &str) -> Option<&str> {
    let rest = &url[url.find("/volumes/")? + "/volumes/".len()..];
    rest.split('/').next()
}

fn import(args: &ImportArgs) -> Result<(), ClientError> {
    let client = Client::from_args(&args.client)?;
    let ns = client.namespace().to_owned();
    let limit = duration("--timeout", &args.timeout)?;
    let manifests_path = args.dir.join("manifests.yaml");
    let text = fs::read(&manifests_path).map_err(io_err(&manifests_path))?;
    let docs = ferrovirt_api::parse::parse_values(&text, &manifests_path.display().to_string())
        .map_err(|e| usage(e.to_string()))?;
    let Some(mut vm) = docs.iter().find(|d| d["kind"] == "VirtualMachine").cloned() else {
        return Err(usage(format!(
            "{} holds no VirtualMachine",
            manifests_path.display()
        )));
    };
    vm["metadata"]["namespace"] = json!(ns);
    let vm_name = vm["metadata"]["name"].as_str().unwrap_or("").to_owned();
    if get_optional(&client, &item_path(&VMS, &ns, &vm_name))?.is_some() {
        return Err(usage(format!(
            "VirtualMachine {ns}/{vm_name} already exists on this server; delete it or import into another namespace (-n)"
        )));
    }
    for dv in docs.iter().filter(|d| d["kind"] == "DataVolume") {
        let pvc_name = dv["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let url = dv
            .pointer("/spec/source/http/url")
            .and_then(Value::as_str)
            .unwrap_or("");
        let archive = dv.pointer("/spec/contentType").and_then(Value::as_str) == Some("archive");
        let volume = volume_of_url(url).unwrap_or(&pvc_name);
        let (file, format) = if archive {
            (args.dir.join(format!("{volume}.tar.gz")), "tar.gz")
        } else {
            (args.dir.join(format!("{volume}.img.gz")), "gzip")
        };
        if !file.is_file() {
            return Err(usage(format!(
                "DataVolume {pvc_name} needs {}, which is not in {}",
                file.display(),
                args.dir.display()
            )));
        }
        let storage = dv
            .pointer("/spec/storage")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let mut pvc = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": pvc_name, "namespace": ns},
            "spec": {
                "accessModes": storage.get("accessModes").cloned().unwrap_or_else(|| json!(["ReadWriteOnce"])),
                "volumeMode": storage.get("volumeMode").cloned().unwrap_or_else(|| json!("Filesystem")),
                "resources": storage.get("resources").cloned().unwrap_or_else(|| json!({"requests": {"storage": "1Gi"}})),
            },
        });
        if let Some(labels) = dv.pointer("/metadata/labels") {
            pvc["metadata"]["labels"] = labels.clone();
        }
        client.send_json(
            "POST",
            &collection_path(&PVCS, Some(&ns)),
            "application/json",
            &pvc,
        )?;
        let path = item_path(&PVCS, &ns, &pvc_name);
        let started = Instant::now();
        loop {
            let current = client.get(&path)?;
            if current.pointer("/status/phase").and_then(Value::as_str) == Some("Bound") {
                break;
            }
            if started.elapsed() > limit {
                return Err(usage(format!(
                    "PersistentVolumeClaim {ns}/{pvc_name} was not Bound within {limit:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let size = fs::metadata(&file).map_err(io_err(&file))?.len();
        let reader = fs::File::open(&file).map_err(io_err(&file))?;
        let bar = progress_bar(Some(size), &pvc_name);
        let mut reader = bar.wrap_read(reader);
        let subresource = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/{ns}/persistentvolumeclaims/{pvc_name}/volumeimport?format={format}"
        );
        let status = client.put_reader(&subresource, "application/octet-stream", &mut reader)?;
        bar.finish_and_clear();
        println!(
            "{}",
            status
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("imported")
        );
    }
    if let Some(meta) = vm["metadata"].as_object_mut() {
        meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "labels" | "annotations"));
    }
    client.send_json(
        "POST",
        &collection_path(&VMS, Some(&ns)),
        "application/json",
        &vm,
    )?;
    println!(
        "VirtualMachine {ns}/{vm_name} imported (firmware.uuid {})",
        vm.pointer("/spec/template/spec/domain/firmware/uuid")
            .and_then(Value::as_str)
            .unwrap_or("-")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_from_urls() {
        assert_eq!(
            volume_of_url(
                "https://h:1/api/export.kubevirt.io/v1beta1/namespaces/d/virtualmachineexports/e/volumes/persistent-state-for-vm-x/disk.tar.gz"
            ),
            Some("persistent-state-for-vm-x")
        );
        assert_eq!(volume_of_url("https://h/x"), None);
    }
}
