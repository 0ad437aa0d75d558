//! A burst of new VMs: `count` persistent-TPM VMs (firmware only, 128 MiB) created at once with
//! `runStrategy: Always`, each timed from its create request to `printableStatus: Running`, with
//! the manager's peak RSS and CPU time over the burst; and the same number of hand launches
//! (`swtpm_setup`, VARS copy, swtpm + QEMU to QMP `running`) started in parallel. Every VM is new,
//! so both sides manufacture a TPM for each.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::BenchError;
use crate::ferro::{self, VMS};
use crate::hand::HandVm;
use crate::http::Connection;
use crate::mem;
use crate::stats::Samples;

/// What one burst measured.
#[derive(Debug, Default)]
pub struct BurstResults {
    pub count: usize,
    /// Create request -> Running, per VM.
    pub ferro: Samples,
    /// Launch -> QMP running, per hand-launched VM.
    pub hand: Samples,
    /// The manager's highest RSS during the burst (KiB).
    pub ferro_peak_rss_kib: u64,
    /// The manager's CPU time (user + system) spent from the first create to the last Running.
    pub ferro_cpu: Duration,
    pub ferro_wall: Duration,
    pub hand_wall: Duration,
}

/// A burst VM: the benchmark's VM with 128 MiB, started on creation.
fn burst_vm(name: &str) -> Value {
    let mut vm = ferro::vm_manifest(name, "Always");
    vm["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = Value::from("128Mi");
    vm
}

/// User + system CPU time of a process from `/proc/PID/stat` (`None` if it is gone).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux/x86-64.
    Some(Duration::from_millis(ticks * 10))
}

/// The ferrovirt side: `count` VMs created at once on `server`, then deleted again.
pub async fn ferrovirt(
    server: &ferro::Server,
    count: usize,
    r: &mut BurstResults,
) -> Result<(), BenchError> {
    let api = &server.api;
    let pid = server.pid().unwrap_or(0);
    let names: Vec<String> = (0..count).map(|i| format!("burst-{i}")).collect();
    let list = Connection::open(api).await?.get_json(VMS).await?;
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_owned();
    let mut watch = Connection::open(api)
        .await?
        .watch(&format!("{VMS}?watch=true&resourceVersion={rv}"))
        .await?;

    // Peak RSS, sampled every 20 ms while the burst runs.
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(mem::of_pid(pid).rss_kib, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let cpu_before = cpu_time(pid).unwrap_or_default();
    let burst_started = Instant::now();
    let mut created: HashMap<String, Instant> = HashMap::new();
    let mut creators = Vec::new();
    for name in &names {
        let (api, name) = (api.clone(), name.clone());
        creators.push(tokio::spawn(async move {
            let mut conn = Connection::open(&api).await?;
            let at = Instant::now();
            ferro::create_vm(&mut conn, &burst_vm(&name)).await?;
            Ok::<_, BenchError>((name, at))
        }));
    }
    for creator in creators {
        let (name, at) = creator
            .await
            .map_err(|e| BenchError::Setup(format!("create task: {e}")))??;
        created.insert(name, at);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let mut running: HashMap<String, Instant> = HashMap::new();
    while running.len() < count {
        let event = tokio::time::timeout_at(deadline, watch.next_event())
            .await
            .map_err(|_| {
                BenchError::Timeout(format!(
                    "only {} of {count} burst VMs reached Running within 600 s",
                    running.len()
                ))
            })??
            .ok_or_else(|| BenchError::Http("the watch of the burst ended".into()))?;
        let Some(object) = event.get("object") else {
            continue;
        };
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let status = object
            .pointer("/status/printableStatus")
            .and_then(Value::as_str)
            .unwrap_or("");
        if status == "Running" && created.contains_key(name) && !running.contains_key(name) {
            running.insert(name.to_owned(), Instant::now());
        }
    }
    r.ferro_wall = burst_started.elapsed();
    r.ferro_cpu = cpu_time(pid).unwrap_or_default().saturating_sub(cpu_before);
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    r.ferro_peak_rss_kib = peak.load(Ordering::Relaxed);
    for name in &names {
        if let (Some(done), Some(at)) = (running.get(name), created.get(name)) {
            r.ferro.push(done.saturating_duration_since(*at));
        }
    }

    let mut conn = Connection::open(api).await?;
    for name in &names {
        ferro::delete_vm(&mut conn, name).await?;
    }
    ferro::wait_gone(api, &names, Duration::from_secs(300)).await
}

/// The hand side: `count` new VMs launched in parallel, then stopped.
pub async fn hand(work: &Path, count: usize, r: &mut BurstResults) -> Result<(), BenchError> {
    let mut vms = Vec::new();
    for i in 0..count {
        vms.push(Arc::new(HandVm::fresh_with_memory(
            &work.join(format!("burst-hand-{i}")),
            128,
        )?));
    }
    let started = Instant::now();
    let mut launches = Vec::new();
    for vm in &vms {
        let vm = vm.clone();
        launches.push(tokio::spawn(async move { vm.first_start().await }));
    }
    let mut runs = Vec::new();
    for launch in launches {
        let (took, run) = launch
            .await
            .map_err(|e| BenchError::Setup(format!("launch task: {e}")))??;
        r.hand.push(took);
        runs.push(run);
    }
    r.hand_wall = started.elapsed();
    for (vm, run) in vms.iter().zip(runs) {
        vm.stop(run).await?;
    }
    for i in 0..count {
        let _ = std::fs::remove_dir_all(work.join(format!("burst-hand-{i}")));
    }
    Ok(())
}
