//! `ferrovirt image-upload dv NAME --size 10Gi --image-path FILE` (virtctl's `image-upload`):
//! creates a DataVolume with an `upload` source (unless `--no-create`), waits until it is
//! `UploadReady`, asks for an upload token (`UploadTokenRequest`), sends the file to the upload
//! path of the server (or `--uploadproxy-url`) with a progress bar, and waits until the server
//! has checked and published the image (`Succeeded`).
//!
//! Resume: before sending, and after a broken connection, it asks the endpoint how many bytes it
//! kept (`HEAD`, `Upload-Offset`) and sends the rest from there; run again with `--no-create`
//! after an interruption and the upload continues where it stopped.

use std::io::{Seek, SeekFrom};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use ferrovirt_resources::{DATA_VOLUMES, UPLOAD_TOKEN_REQUESTS};
use serde_json::{Value, json};

use crate::client::{Client, ClientArgs, ClientError};
use crate::resource::{collection_path, item_path};

/// Arguments of `ferrovirt image-upload`.
#[derive(Debug, Args)]
pub struct ImageUploadArgs {
    /// `dv` (a DataVolume; `pvc` is taken as its PVC, as virtctl's `pvc` target).
    #[arg(value_name = "KIND", value_parser = ["dv", "pvc"])]
    pub kind: String,
    /// The DataVolume's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The image to upload (raw, qcow2, vmdk, vhdx, vdi, ISO, optionally .gz or .xz).
    #[arg(long = "image-path")]
    pub image_path: std::path::PathBuf,
    /// The DataVolume's size (e.g. 10Gi); needed unless --no-create.
    #[arg(long)]
    pub size: Option<String>,
    /// Upload into an existing DataVolume instead of creating one.
    #[arg(long = "no-create")]
    pub no_create: bool,
    /// The access mode of the PVC (ReadWriteOnce, ReadOnlyMany, ReadWriteMany).
    #[arg(long = "access-mode")]
    pub access_mode: Option<String>,
    /// The storage class of the PVC.
    #[arg(long = "storage-class")]
    pub storage_class: Option<String>,
    /// The URL of the upload endpoint (default: the API server's).
    #[arg(long = "uploadproxy-url")]
    pub uploadproxy_url: Option<String>,
    /// Do not verify the upload endpoint's TLS certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Accepted for virtctl's sake: ferrovirt binds every PVC at once (no WaitForFirstConsumer).
    #[arg(long = "force-bind")]
    pub force_bind: bool,
    /// How long to wait for the DataVolume to be ready for the upload, in seconds.
    #[arg(long = "wait-secs", default_value_t = 300)]
    pub wait_secs: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// How many broken connections an upload resumes after before it gives up.
const MAX_INTERRUPTIONS: u64 = 5;

fn phase(dv: &Value) -> &str {
    dv.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn running_message(dv: &Value) -> String {
    dv.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Running"))
        .and_then(|c| c.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// Waits until the DataVolume's phase is one of `wanted` (or `Failed`).
fn wait_for(
    client: &Client,
    path: &str,
    wanted: &[&str],
    limit: Duration,
) -> Result<Value, ClientError> {
    let started = Instant::now();
    loop {
        let dv = client.get(path)?;
        if wanted.contains(&phase(&dv)) || phase(&dv) == "Failed" {
            return Ok(dv);
        }
        if started.elapsed() > limit {
            return Err(ClientError::Usage(format!(
                "timed out after {}s waiting for the DataVolume (phase {:?}); raise --wait-secs",
                limit.as_secs(),
                phase(&dv)
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn upload(args: &ImageUploadArgs) -> Result<(), ClientError> {
    let client = Client::from_args(&args.client)?;
    let ns = client.namespace().to_owned();
    let dv_path = item_path(&DATA_VOLUMES, &ns, &args.name);
    let file = std::fs::File::open(&args.image_path).map_err(|e| {
        ClientError::Usage(format!(
            "cannot read --image-path {}: {e}",
            args.image_path.display()
        ))
    })?;
    let length = file
        .metadata()
        .map(|m| m.len())
        .map_err(|e| ClientError::Usage(format!("{}: {e}", args.image_path.display())))?;
    if !args.no_create {
        let size = args.size.as_deref().ok_or_else(|| {
            ClientError::Usage(
                "when creating the DataVolume, --size is required (e.g. --size 10Gi)".into(),
            )
        })?;
        let mut storage = json!({"resources": {"requests": {"storage": size}}});
        if let Some(mode) = &args.access_mode {
            storage["accessModes"] = json!([mode]);
        }
        if let Some(class) = &args.storage_class {
            storage["storageClassName"] = json!(class);
        }
        let dv = json!({
            "apiVersion": ferrovirt_api::cdi::CDI_API_VERSION,
            "kind": "DataVolume",
            "metadata": {"name": args.name, "namespace": ns},
            "spec": {"source": {"upload": {}}, "storage": storage},
        });
        match client.send_json(
            "POST",
            &collection_path(&DATA_VOLUMES, Some(&ns)),
            "application/json",
            &dv,
        ) {
            Ok(_) => {}
            Err(ClientError::Status { code: 409, .. }) => {
                return Err(ClientError::Usage(format!(
                    "DataVolume {ns}/{} already exists: add --no-create to upload into it (an \
                     interrupted upload continues where it stopped)",
                    args.name
                )));
            }
            Err(error) => return Err(error),
        }
        println!("DataVolume {ns}/{} created", args.name);
    }
    let ready = wait_for(
        &client,
        &dv_path,
        &["UploadReady"],
        Duration::from_secs(args.wait_secs),
    )?;
    if phase(&ready) == "Failed" {
        return Err(ClientError::Usage(format!(
            "DataVolume {} failed: {}",
            args.name,
            running_message(&ready)
        )));
    }
    println!(
        "Waiting for PVC {} upload pod to be ready...\nPod now ready",
        args.name
    );
    let token_request = json!({
        "apiVersion": ferrovirt_api::cdi::UPLOAD_API_VERSION,
        "kind": "UploadTokenRequest",
        "metadata": {"name": args.name, "namespace": ns},
        "spec": {"pvcName": args.name},
    });
    let answer = client.send_json(
        "POST",
        &collection_path(&UPLOAD_TOKEN_REQUESTS, Some(&ns)),
        "application/json",
        &token_request,
    )?;
    let token = answer
        .pointer("/status/token")
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::Usage("the server gave no upload token".into()))?;
    let base = args
        .uploadproxy_url
        .clone()
        .unwrap_or_else(|| client.base().to_owned());
    let url = format!(
        "{}{}",
        base.trim_end_matches('/'),
        ferrovirt_api::cdi::UPLOAD_PATH_SYNC
    );
    println!("Uploading data to {base}\n");
    let bar = indicatif::ProgressBar::new(length);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bytes}/{total_bytes} [{wide_bar}] {percent}% {binary_bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut interruptions = 0;
    loop {
        let kept = client.upload_offset(&url, token, args.insecure)?;
        // More than this file holds: what was kept is another file's; start again.
        let offset = if kept <= length { kept } else { 0 };
        if offset > 0 {
            bar.suspend(|| {
                println!(
                    "Resuming the upload at byte {offset} of {length} (kept from an interrupted upload)"
                );
            });
        }
        let mut from = &file;
        from.seek(SeekFrom::Start(offset))
            .map_err(|e| ClientError::Usage(format!("{}: {e}", args.image_path.display())))?;
        bar.set_position(offset);
        match client.upload(
            &url,
            token,
            bar.wrap_read(from),
            length,
            offset,
            args.insecure,
        ) {
            Ok((code, _)) if (200..300).contains(&code) => break,
            // The server still finishes the broken connection's bytes: ask again.
            Ok((409, _)) if interruptions < MAX_INTERRUPTIONS => {}
            Ok((code, body)) => {
                bar.abandon();
                return Err(ClientError::Usage(format!(
                    "the upload was refused ({code}): {}",
                    String::from_utf8_lossy(&body).trim()
                )));
            }
            Err(error @ ClientError::Transport { .. }) if interruptions < MAX_INTERRUPTIONS => {
                bar.suspend(|| eprintln!("the upload was interrupted ({error}); resuming"));
            }
            Err(error) => {
                bar.abandon();
                return Err(error);
            }
        }
        interruptions += 1;
        std::thread::sleep(Duration::from_millis(500 * interruptions));
    }
    bar.finish();
    println!(
        "\nUploading data completed successfully, waiting for processing to complete, you can hit ctrl-c without interrupting the progress"
    );
    let done = wait_for(
        &client,
        &dv_path,
        &["Succeeded"],
        Duration::from_secs(args.wait_secs.max(60)),
    )?;
    if phase(&done) != "Succeeded" {
        return Err(ClientError::Usage(format!(
            "processing the upload failed: {}",
            running_message(&done)
        )));
    }
    println!("Processing completed successfully");
    println!(
        "Uploading {} completed successfully",
        args.image_path.display()
    );
    Ok(())
}

/// Runs `ferrovirt image-upload`.
pub fn run(args: &ImageUploadArgs) -> ExitCode {
    match upload(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => error.report(),
    }
}

/// Reads `reader` to the end (for tests of the progress wrapper).
#[cfg(test)]
fn drain(mut reader: impl std::io::Read) -> usize {
    let mut sink = Vec::new();
    reader.read_to_end(&mut sink).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_progress_bar_passes_every_byte() {
        let bar = indicatif::ProgressBar::hidden();
        let data = vec![7u8; 100_000];
        assert_eq!(super::drain(bar.wrap_read(&data[..])), 100_000);
        assert_eq!(bar.position(), 100_000);
    }
}
