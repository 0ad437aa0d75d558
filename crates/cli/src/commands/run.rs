//! `ferrovirt run -f VM.yaml --data-dir DIR`: runs one VirtualMachine in the foreground with the
//! engine alone (no server), like `docker run` for a KubeVirt manifest. Its serial console goes to
//! standard output; the command ends when the guest powers off (exit 0), on Ctrl-C or SIGTERM
//! (graceful stop, exit 0) or after `--timeout` seconds (graceful stop, exit 124).
//!
//! The VM's persistent state is kept in the data dir exactly as under `ferrovirt serve`: a
//! backend-storage volume `volumes/persistent-state-for-<vm>/` in KubeVirt's layout, its
//! generations, and the defaulted manifest in `local/<namespace>/<name>.json` so that the VM keeps
//! its `firmware.uuid` (and so its TPM) from one run to the next.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use ferrovirt_api::config::ClusterConfig;
use ferrovirt_api::kubevirt::vm::VirtualMachine;
use ferrovirt_api::parse::parse_documents;
use ferrovirt_api::validation::{AdmissionContext, admit};
use ferrovirt_api::{Object, defaults};
use ferrovirt_storage::LocalPathProvisioner;
use ferrovirt_storage::backend::legacy_pvc_name;
use ferrovirt_vmm::convert::{ConvertContext, plan_from_spec};
use ferrovirt_vmm::engine::{Engine, VmPlan};
use ferrovirt_vmm::hostpath::{HostPathPolicy, check_host_disk_paths};
use ferrovirt_vmm::launcher::ExitReason;

use super::validate::{display_name, load_config, read_input};

/// Arguments of `ferrovirt run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A manifest with one VirtualMachine (YAML or JSON); `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// Where VM state, volumes and logs are kept.
    #[arg(long, value_name = "DIR", env = "FERROVIRT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// A KubeVirt object whose feature gates to use instead of the embedded defaults.
    #[arg(long = "config", value_name = "KUBEVIRT_CR.yaml")]
    pub config: Option<PathBuf>,
    /// Stop the VM gracefully after this many seconds (exit code 124).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Do not copy the serial console to standard output.
    #[arg(long)]
    pub quiet: bool,
    /// A directory under which `hostDisk` paths may lie, besides `<data-dir>/images`
    /// (repeatable). Paths are resolved beneath it without following a symlink out of it.
    #[arg(long = "host-disk-root", value_name = "DIR")]
    pub host_disk_roots: Vec<PathBuf>,
}

/// The `hostDisk` policy of `ferrovirt run`: `<data-dir>/images` and each `--host-disk-root`
/// (made absolute, so that the roots in messages are the ones the engine opens).
pub fn host_path_policy(data_dir: &Path, roots: &[PathBuf]) -> Result<HostPathPolicy, String> {
    let absolute = |path: &Path| {
        std::path::absolute(path).map_err(|e| format!("--host-disk-root {}: {e}", path.display()))
    };
    let roots = roots
        .iter()
        .map(|r| absolute(r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HostPathPolicy::for_data_dir(&absolute(data_dir)?, &roots))
}

/// Runs `ferrovirt run`.
pub fn run(args: &RunArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_vm(args)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load_vm(args: &RunArgs) -> Result<(VirtualMachine, ClusterConfig), String> {
    let config = match &args.config {
        Some(path) => load_config(path)?,
        None => ClusterConfig::embedded_default(),
    };
    let name = display_name(&args.file);
    let bytes = read_input(&args.file).map_err(|e| e.to_string())?;
    let objects = parse_documents(&bytes, &name).map_err(|e| e.to_string())?;
    let mut vms = objects.into_iter().filter_map(|o| match o {
        Object::VirtualMachine(vm) => Some(*vm),
        _ => None,
    });
    match (vms.next(), vms.next()) {
        (Some(vm), None) => Ok((vm, config)),
        (None, _) => Err(format!(
            "{name}: no VirtualMachine (apiVersion: kubevirt.io/v1, kind: VirtualMachine) found"
        )),
        (Some(_), Some(_)) => Err(format!(
            "{name}: more than one VirtualMachine; `ferrovirt run` runs exactly one"
        )),
    }
}

fn record_path(data_dir: &Path, namespace: &str, name: &str) -> PathBuf {
    data_dir
        .join("local")
        .join(namespace)
        .join(format!("{name}.json"))
}

/// Defaults and admits the VM against the one kept from earlier runs, and keeps the result.
fn admit_and_record(
    mut vm: VirtualMachine,
    config: &ClusterConfig,
    data_dir: &Path,
    host_paths: &HostPathPolicy,
) -> Result<VirtualMachine, String> {
    let namespace = vm
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = vm.metadata.name.clone().unwrap_or_default();
    let record = record_path(data_dir, &namespace, &name);
    let old = match std::fs::read(&record) {
        Ok(bytes) => Some(
            serde_json::from_slice::<VirtualMachine>(&bytes)
                .map_err(|e| format!("{}: unreadable: {e}", record.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", record.display())),
    };
    if let Some(old) = &old {
        defaults::carry_over_firmware_identity(&mut vm, old);
    }
    defaults::apply_vm_defaults(&mut vm);
    let object = Object::VirtualMachine(Box::new(vm));
    let old_object = old.map(|vm| Object::VirtualMachine(Box::new(vm)));
    let ctx = match &old_object {
        Some(old) => AdmissionContext::update(config, old),
        None => AdmissionContext::create(config),
    }
    .with_host_paths(host_paths);
    admit(&object, &ctx).map_err(|invalid| invalid.to_string())?;
    let Object::VirtualMachine(vm) = object else {
        return Err("internal error: the VM changed kind".into());
    };
    // The paths resolved on this host: a symlink out of a root is refused before anything runs.
    if let Some(template) = &vm.spec.template {
        let causes = check_host_disk_paths("spec.template.spec", &template.spec, host_paths);
        if !causes.is_empty() {
            return Err(ferrovirt_api::Invalid {
                kind: "VirtualMachine".into(),
                group: "kubevirt.io".into(),
                name: name.clone(),
                causes,
            }
            .to_string());
        }
    }
    let bytes = serde_json::to_vec_pretty(&vm).map_err(|e| e.to_string())?;
    if let Some(dir) = record.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    ferrovirt_storage::atomic::write_file(&record, &bytes, 0o600).map_err(|e| e.to_string())?;
    Ok(*vm)
}

/// Resolves the VM into an engine plan, provisioning (or retiring) its backend-storage volume.
pub fn plan_for(vm: &VirtualMachine, data_dir: &Path) -> Result<VmPlan, String> {
    let namespace = vm.metadata.namespace.as_deref().unwrap_or("default");
    let name = vm.metadata.name.as_deref().unwrap_or_default();
    let template = vm
        .spec
        .template
        .as_ref()
        .ok_or("spec.template: a VirtualMachine needs a template")?;
    // KubeVirt's SetDefaultVolumeDisk: a volume without a disk still becomes one (or is refused).
    let mut spec = template.spec.clone();
    defaults::set_default_volume_disks(&mut spec);
    let spec = &spec;
    for field in ferrovirt_vmm::ignored::ignored_fields(spec, "spec.template.spec") {
        eprintln!("warning: {field}: ferrovirt does not act on this field; the VM runs without it");
    }
    let volume_name = legacy_pvc_name(name);
    let provisioner =
        LocalPathProvisioner::new(data_dir.join("volumes")).map_err(|e| e.to_string())?;
    let state_volume = if spec.needs_backend_storage() {
        let dir = provisioner
            .create_volume(&volume_name)
            .map_err(|e| e.to_string())?;
        Some((dir, data_dir.join("state-generations").join(&volume_name)))
    } else {
        retire_unused_volume(&provisioner, &volume_name, data_dir)?;
        None
    };
    let no_claims = |_: &str| None;
    let ctx = ConvertContext {
        namespace,
        name,
        field_prefix: "spec.template.spec",
        state_volume,
        claim_dir: &no_claims,
        termination_grace_period_seconds: spec
            .extra
            .get("terminationGracePeriodSeconds")
            .and_then(|v| v.as_u64()),
    };
    plan_from_spec(spec, &ctx).map_err(|e| {
        format!(
            "The VirtualMachine {name:?} cannot run on this host: {}: {}",
            e.field, e.message
        )
    })
}

/// Persistence was switched off: keep the old state as a recoverable copy instead of deleting it.
fn retire_unused_volume(
    provisioner: &LocalPathProvisioner,
    volume_name: &str,
    data_dir: &Path,
) -> Result<(), String> {
    let Ok(dir) = provisioner.existing_volume(volume_name) else {
        return Ok(());
    };
    let archive = data_dir.join("retired");
    let kept = ferrovirt_storage::generations::retire(&dir, &archive).map_err(|e| e.to_string())?;
    eprintln!(
        "note: persistent state is switched off for this VM; its previous TPM/EFI state was kept \
         at {} (move it back to {} to use it again)",
        kept.display(),
        dir.display()
    );
    Ok(())
}

async fn run_vm(args: &RunArgs) -> Result<ExitCode, String> {
    let (vm, config) = load_vm(args)?;
    ferrovirt_storage::atomic::prepare_private_dir(&args.data_dir).map_err(|e| e.to_string())?;
    let host_paths = host_path_policy(&args.data_dir, &args.host_disk_roots)?;
    let vm = admit_and_record(vm, &config, &args.data_dir, &host_paths)?;
    let plan = plan_for(&vm, &args.data_dir)?;
    let engine = Engine::new(&args.data_dir)
        .await
        .map_err(|e| e.to_string())?
        .with_host_paths(host_paths);
    let serial_log = engine.serial_log_path(&plan.uuid);
    let log_start = std::fs::metadata(&serial_log).map(|m| m.len()).unwrap_or(0);
    let running = engine.start(plan).await.map_err(|e| e.to_string())?;
    eprintln!(
        "started {} (uuid {}, {}, QEMU running after {} ms); serial log {}",
        running.plan.name,
        running.plan.uuid.as_str(),
        engine.accel().as_qemu(),
        running
            .handle
            .start_to_running()
            .map(|d| d.as_millis())
            .unwrap_or_default(),
        serial_log.display()
    );
    if let Some(state) = &running.state {
        if let (Some(restored), Some(volume)) = (&state.restored, &running.plan.state_volume) {
            eprintln!("StateRestored: {}", restored.message(volume));
        }
        for warning in &state.warnings {
            eprintln!("warning: {warning}");
        }
    }
    let position = Arc::new(AtomicU64::new(log_start));
    let tail = (!args.quiet).then(|| tokio::spawn(tail_log(serial_log.clone(), position.clone())));

    let timeout = async {
        match args.timeout {
            Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
            None => std::future::pending().await,
        }
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let (end, code) = tokio::select! {
        end = engine.wait(&running) => (end, ExitCode::SUCCESS),
        _ = tokio::signal::ctrl_c() => (engine.stop(&running).await, ExitCode::SUCCESS),
        _ = sigterm.recv() => (engine.stop(&running).await, ExitCode::SUCCESS),
        _ = timeout => (engine.stop(&running).await, ExitCode::from(124)),
    };
    // Let the tail print what the guest wrote last.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(tail) = tail {
        tail.abort();
        let _ = tail.await;
        copy_new_bytes(&serial_log, &position);
    }
    let end = end.map_err(|e| e.to_string())?;
    let how = match &end.exit.reason {
        ExitReason::GuestPoweroff { reason } => format!("guest powered off ({reason})"),
        ExitReason::HostShutdown { reason } => format!("stopped ({reason})"),
        ExitReason::Killed { signal } => format!("killed (signal {signal})"),
        ExitReason::Crashed { code, signal } => {
            format!("QEMU crashed (exit code {code:?}, signal {signal:?})")
        }
        ExitReason::Unobserved => "ended".into(),
    };
    match end.recorded {
        Some(generation) => eprintln!(
            "{}: {how}; persistent state checked and kept as generation {generation}",
            running.plan.name
        ),
        None => eprintln!("{}: {how}", running.plan.name),
    }
    Ok(match end.exit.reason {
        ExitReason::Crashed { .. } | ExitReason::Killed { .. } => ExitCode::FAILURE,
        _ => code,
    })
}

/// Copies bytes appended to the serial log to standard output, from `position` on.
fn copy_new_bytes(path: &Path, position: &AtomicU64) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return;
    };
    if file
        .seek(SeekFrom::Start(position.load(Ordering::SeqCst)))
        .is_err()
    {
        return;
    }
    let mut buffer = Vec::new();
    if let Ok(n) = file.read_to_end(&mut buffer) {
        position.fetch_add(n as u64, Ordering::SeqCst);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&buffer);
        let _ = out.flush();
    }
}

async fn tail_log(path: PathBuf, position: Arc<AtomicU64>) {
    loop {
        copy_new_bytes(&path, &position);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
