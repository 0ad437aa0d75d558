//! `ferrovirt-bench`: ferrovirt side by side with a hand launch of swtpm + QEMU and with libvirt
//! (start and stop latency of a VM with persistent TPM + EFI + Secure Boot, interleaved A B C,
//! medians), the memory of the managers, the control plane at scale (10,000 VM objects) and a
//! burst of new VMs started at once next to as many hand launches in parallel.
//! Prints a table and `key=value` lines. Run it through `bench/run.sh` (sets up libvirt, builds).
//!
//!   ferrovirt-bench [--ferrovirt PATH] [--work DIR] [--runs N] [--objects N] [--concurrency N]
//!                   [--mem-vms N] [--burst N] [--no-libvirt] [--no-plain]
//!                   [--only start|mem|control|burst]
//!
//! ferrovirt runs with encryption at rest (its default); a second server with
//! `--state-encryption none` runs the same VM in the same interleaved rounds (`--no-plain` leaves
//! it out), so the cost of encryption is measured side by side. A third server with
//! `--tpm-pool-size 0` gives the first start without the TPM pool (manufacture at start) beside
//! the default server's pooled one, and `apply -> Running` of a new VM on both.
//!
//! Modules: [`http`] (client), [`ferro`], [`hand`], [`libvirt`] (the contenders), [`control`]
//! (control plane), [`burst`], [`mem`] (smaps_rollup), [`stats`].

mod burst;
mod control;
mod ferro;
mod hand;
mod http;
mod libvirt;
mod mem;
mod stats;

use std::path::{Path, PathBuf};
use std::time::Duration;

use stats::{Samples, ms};

/// Why a benchmark step failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("setup: {0}")]
    Setup(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("timeout: {0}")]
    Timeout(String),
    #[error("usage: {0}")]
    Usage(String),
}

/// fsync of a file or directory (opened read-only).
pub fn fsync(path: &Path) -> Result<(), BenchError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| BenchError::Setup(format!("cannot fsync {}: {e}", path.display())))
}

struct Options {
    ferrovirt: PathBuf,
    work: PathBuf,
    runs: usize,
    objects: usize,
    concurrency: usize,
    mem_vms: usize,
    burst: usize,
    libvirt: bool,
    /// Also measure a ferrovirt server with `--state-encryption none`.
    plain: bool,
    only: Option<String>,
}

fn parse_options() -> Result<Options, BenchError> {
    let mut o = Options {
        ferrovirt: PathBuf::from("target/release/ferrovirt"),
        work: PathBuf::from("/var/tmp/ferrovirt-bench"),
        runs: 11,
        objects: 10_000,
        concurrency: 32,
        mem_vms: 10,
        burst: 50,
        libvirt: true,
        plain: true,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| BenchError::Usage(format!("{name} needs a value")))
        };
        let number = |name: &str, v: String| {
            v.parse::<usize>()
                .map_err(|_| BenchError::Usage(format!("{name} needs a number, not {v:?}")))
        };
        match arg.as_str() {
            "--ferrovirt" => o.ferrovirt = PathBuf::from(value("--ferrovirt")?),
            "--work" => o.work = PathBuf::from(value("--work")?),
            "--runs" => o.runs = number("--runs", value("--runs")?)?,
            "--objects" => o.objects = number("--objects", value("--objects")?)?,
            "--concurrency" => o.concurrency = number("--concurrency", value("--concurrency")?)?,
            "--mem-vms" => o.mem_vms = number("--mem-vms", value("--mem-vms")?)?,
            "--burst" => o.burst = number("--burst", value("--burst")?)?,
            "--no-libvirt" => o.libvirt = false,
            "--no-plain" => o.plain = false,
            "--only" => o.only = Some(value("--only")?),
            other => return Err(BenchError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    o.ferrovirt = std::fs::canonicalize(&o.ferrovirt).map_err(|e| {
        BenchError::Usage(format!(
            "{}: {e} (build it with cargo build --release)",
            o.ferrovirt.display()
        ))
    })?;
    Ok(o)
}

/// Start/stop results of one contender.
#[derive(Default)]
struct Lifecycle {
    first_start: Duration,
    first_stop: Duration,
    start: Samples,
    stop: Samples,
}

/// What a user waits for when a VM is new: the first start of an existing VM and `kubectl apply`
/// of a new one (runStrategy Always) -> printableStatus Running, with and without the TPM pool.
#[derive(Default)]
struct FirstStarts {
    pooled_apply: Duration,
    manufactured_start: Duration,
    manufactured_apply: Duration,
}

#[derive(Default)]
struct Results {
    ferro: Lifecycle,
    /// ferrovirt with `--state-encryption none`.
    ferro_plain: Option<Lifecycle>,
    /// First starts with the TPM pool (the default server) and without it (`--tpm-pool-size 0`).
    first: FirstStarts,
    hand: Lifecycle,
    libvirt: Option<Lifecycle>,
    ferro_idle: mem::Memory,
    ferro_busy: mem::Memory,
    ferro_10k: mem::Memory,
    libvirt_idle: Option<mem::Memory>,
    libvirt_busy: Option<mem::Memory>,
    control: Option<control::ControlResults>,
    burst: Option<burst::BurstResults>,
}

fn libvirt_memory() -> mem::Memory {
    mem::of_named("libvirtd") + mem::of_named("virtlogd")
}

const TIMEOUT: Duration = Duration::from_secs(60);
/// The server's default `--tpm-pool-size`.
const POOL_SIZE: usize = 2;
/// How long the first fill of the pool may take (~1-2 s per TPM at the lowest priority).
const POOL_WAIT: Duration = Duration::from_secs(120);

/// Start and stop latency, interleaved: ferrovirt, hand, libvirt, ferrovirt, ...
async fn lifecycle(
    o: &Options,
    server: &ferro::Server,
    plain: Option<&ferro::Server>,
    nopool: &ferro::Server,
    r: &mut Results,
) -> Result<(), BenchError> {
    let a = &server.api;
    let mut conn = http::Connection::open(a).await?;
    ferro::create_vm(&mut conn, &ferro::vm_manifest("bench", "Halted")).await?;
    let n = &nopool.api;
    ferro::create_vm(
        &mut http::Connection::open(n).await?,
        &ferro::vm_manifest("bench", "Halted"),
    )
    .await?;
    let p = plain.map(|s| &s.api);
    if let Some(p) = p {
        let mut conn = http::Connection::open(p).await?;
        ferro::create_vm(&mut conn, &ferro::vm_manifest("bench", "Halted")).await?;
    }
    let hand_vm = hand::HandVm::fresh(&o.work.join("hand"))?;
    let domain = if o.libvirt {
        Some(libvirt::Domain::define("ferrovirt-bench", 0, &o.work).await?)
    } else {
        None
    };

    // One uncounted start of another VM on each server first: a server's first VM pays
    // one-time costs (QEMU and OVMF into the page cache, its first PVC and VMI) that are not a
    // VM's first start; every later round is warm too.
    eprintln!("warm-up starts (not counted) ...");
    for api in [Some(a), Some(n), p].into_iter().flatten() {
        ferro::create_vm(
            &mut http::Connection::open(api).await?,
            &ferro::vm_manifest("warm-up", "Halted"),
        )
        .await?;
        ferro::action_until(api, "warm-up", "start", "Running", TIMEOUT).await?;
        ferro::action_until(api, "warm-up", "stop", "Stopped", TIMEOUT).await?;
    }
    eprintln!("first starts (a pooled TPM; without the pool, TPM manufacture) ...");
    ferro::wait_pool_ready(&o.work.join("data"), POOL_SIZE, POOL_WAIT).await?;
    r.ferro.first_start = ferro::action_until(a, "bench", "start", "Running", TIMEOUT).await?;
    r.ferro.first_stop = ferro::action_until(a, "bench", "stop", "Stopped", TIMEOUT).await?;
    r.first.manufactured_start =
        ferro::action_until(n, "bench", "start", "Running", TIMEOUT).await?;
    ferro::action_until(n, "bench", "stop", "Stopped", TIMEOUT).await?;
    ferro::wait_pool_ready(&o.work.join("data"), POOL_SIZE, POOL_WAIT).await?;
    r.first.pooled_apply = ferro::apply_until_running(a, "bench-apply", TIMEOUT).await?;
    ferro::action_until(a, "bench-apply", "stop", "Stopped", TIMEOUT).await?;
    r.first.manufactured_apply = ferro::apply_until_running(n, "bench-apply", TIMEOUT).await?;
    ferro::action_until(n, "bench-apply", "stop", "Stopped", TIMEOUT).await?;
    if let Some(p) = p {
        let mut l = Lifecycle {
            first_start: ferro::action_until(p, "bench", "start", "Running", TIMEOUT).await?,
            ..Lifecycle::default()
        };
        l.first_stop = ferro::action_until(p, "bench", "stop", "Stopped", TIMEOUT).await?;
        r.ferro_plain = Some(l);
    }
    let (t, run) = hand_vm.first_start().await?;
    r.hand.first_start = t;
    r.hand.first_stop = hand_vm.stop(run).await?;
    if let Some(d) = &domain {
        let mut l = Lifecycle {
            first_start: d.start().await?,
            ..Lifecycle::default()
        };
        l.first_stop = d.stop().await?;
        r.libvirt = Some(l);
    }

    for i in 0..o.runs {
        eprintln!("start/stop round {}/{} ...", i + 1, o.runs);
        r.ferro
            .start
            .push(ferro::action_until(a, "bench", "start", "Running", TIMEOUT).await?);
        r.ferro
            .stop
            .push(ferro::action_until(a, "bench", "stop", "Stopped", TIMEOUT).await?);
        if let (Some(p), Some(l)) = (p, r.ferro_plain.as_mut()) {
            l.start
                .push(ferro::action_until(p, "bench", "start", "Running", TIMEOUT).await?);
            l.stop
                .push(ferro::action_until(p, "bench", "stop", "Stopped", TIMEOUT).await?);
        }
        let (t, run) = hand_vm.start().await?;
        r.hand.start.push(t);
        r.hand.stop.push(hand_vm.stop(run).await?);
        if let (Some(d), Some(l)) = (&domain, r.libvirt.as_mut()) {
            l.start.push(d.start().await?);
            l.stop.push(d.stop().await?);
        }
    }
    if let Some(d) = domain {
        d.remove().await;
    }
    Ok(())
}

/// RSS/PSS of the managers idle and with `mem_vms` VMs running.
async fn memory(o: &Options, server: &ferro::Server, r: &mut Results) -> Result<(), BenchError> {
    let pid = server.pid().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.ferro_idle = mem::of_pid(pid);
    let mut conn = http::Connection::open(&server.api).await?;
    let names: Vec<String> = (0..o.mem_vms).map(|i| format!("mem-{i}")).collect();
    eprintln!("ferrovirt: starting {} VMs ...", names.len());
    for name in &names {
        ferro::create_vm(&mut conn, &ferro::vm_manifest(name, "Halted")).await?;
        ferro::action(&mut conn, name, "start").await?;
    }
    ferro::wait_all(&server.api, &names, "Running", Duration::from_secs(180)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.ferro_busy = mem::of_pid(pid);
    for name in &names {
        ferro::action(&mut conn, name, "stop").await?;
    }
    ferro::wait_all(&server.api, &names, "Stopped", Duration::from_secs(120)).await?;

    if o.libvirt {
        r.libvirt_idle = Some(libvirt_memory());
        eprintln!("libvirt: starting {} domains ...", o.mem_vms);
        let mut domains = Vec::new();
        for i in 0..o.mem_vms {
            let d =
                libvirt::Domain::define(&format!("ferrovirt-bench-mem-{i}"), 1 + i as u32, &o.work)
                    .await?;
            d.start().await?;
            domains.push(d);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        r.libvirt_busy = Some(libvirt_memory());
        for d in domains {
            d.remove().await;
        }
    }
    Ok(())
}

async fn control_plane(o: &Options, r: &mut Results) -> Result<(), BenchError> {
    let server = ferro::Server::start(&o.ferrovirt, &o.work.join("cp-data")).await?;
    let a = &server.api;
    eprintln!(
        "control plane: {} VMs, {} in flight ...",
        o.objects, o.concurrency
    );
    let mut c = control::ControlResults {
        objects: o.objects,
        concurrency: o.concurrency,
        ..control::ControlResults::default()
    };
    let (wall, requests) = control::apply(a, o.objects, o.concurrency).await?;
    c.apply_wall = wall;
    c.apply_requests = requests;
    eprintln!("control plane: waiting for the controllers to settle ...");
    control::settle(a, Duration::from_secs(2), Duration::from_secs(120)).await?;
    control::lists(a, o.objects, 10, &mut c).await?;
    c.watch = control::watch_latency(a, 200).await?;
    r.ferro_10k = mem::of_pid(server.pid().unwrap_or(0));
    r.control = Some(c);
    server.stop().await;
    Ok(())
}

/// The burst: ferrovirt first (its own server and data dir), then the hand launches.
async fn burst_of_vms(o: &Options, r: &mut Results) -> Result<(), BenchError> {
    let mut b = burst::BurstResults {
        count: o.burst,
        ..burst::BurstResults::default()
    };
    let server = ferro::Server::start(&o.ferrovirt, &o.work.join("burst-data")).await?;
    eprintln!("burst: {} new VMs at once (ferrovirt) ...", o.burst);
    let result = burst::ferrovirt(&server, o.burst, &mut b).await;
    server.stop().await;
    result?;
    eprintln!("burst: {} hand launches in parallel ...", o.burst);
    burst::hand(&o.work, o.burst, &mut b).await?;
    r.burst = Some(b);
    Ok(())
}

fn row(what: &str, ferro: String, hand: String, libvirt: String, goal: &str) {
    println!("| {what:<34} | {ferro:>12} | {hand:>12} | {libvirt:>12} | {goal:<28} |");
}

fn f1(d: Duration) -> String {
    format!("{:.1} ms", ms(d))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn report(o: &Options, r: &Results) {
    let lv = |f: &dyn Fn(&Lifecycle) -> String| r.libvirt.as_ref().map_or("-".to_owned(), f);
    println!();
    println!(
        "ferrovirt-bench: start/stop medians over {} interleaved runs (ferrovirt, hand, libvirt); TCG, q35, OVMF Secure Boot, tpm-crb, persistent TPM + EFI, 256 MiB, no disk",
        r.ferro.start.len()
    );
    println!();
    row(
        "measure",
        "ferrovirt".into(),
        "hand".into(),
        "libvirt".into(),
        "goal",
    );
    println!(
        "|{:-<36}|{:-<14}|{:-<14}|{:-<14}|{:-<30}|",
        "", "", "", "", ""
    );
    let fs = r.ferro.start.median();
    let hs = r.hand.start.median();
    let ls = r.libvirt.as_ref().map(|l| l.start.median());
    let fstop = r.ferro.stop.median();
    let lstop = r.libvirt.as_ref().map(|l| l.stop.median());
    if !r.ferro.start.is_empty() {
        row(
            "first start (pooled TPM)",
            f1(r.ferro.first_start),
            f1(r.hand.first_start),
            lv(&|l| f1(l.first_start)),
            "<= 2x warm start",
        );
        row(
            "first start (TPM manufacture)",
            f1(r.first.manufactured_start),
            "".into(),
            "".into(),
            "(--tpm-pool-size 0)",
        );
        row(
            "new VM: apply -> Running (pool)",
            f1(r.first.pooled_apply),
            "".into(),
            "".into(),
            "<= 150 ms",
        );
        row(
            "new VM: apply -> Running (no pool)",
            f1(r.first.manufactured_apply),
            "".into(),
            "".into(),
            "(--tpm-pool-size 0)",
        );
        row(
            "first stop -> durable",
            f1(r.ferro.first_stop),
            f1(r.hand.first_stop),
            lv(&|l| f1(l.first_stop)),
            "",
        );
        row(
            "start, median",
            f1(fs),
            f1(hs),
            lv(&|l| f1(l.start.median())),
            "<= 1.1x hand, <= 0.2x libvirt",
        );
        row(
            "start, p90",
            f1(r.ferro.start.percentile(90.0)),
            f1(r.hand.start.percentile(90.0)),
            lv(&|l| f1(l.start.percentile(90.0))),
            "",
        );
        row(
            "stop -> durable, median",
            f1(fstop),
            f1(r.hand.stop.median()),
            lv(&|l| f1(l.stop.median())),
            "<= 3x hand",
        );
        row(
            "stop -> durable, p90",
            f1(r.ferro.stop.percentile(90.0)),
            f1(r.hand.stop.percentile(90.0)),
            lv(&|l| f1(l.stop.percentile(90.0))),
            "",
        );
    }
    if let Some(p) = &r.ferro_plain {
        println!();
        println!(
            "encryption at rest (same rounds): ferrovirt's default vs --state-encryption none"
        );
        println!();
        println!(
            "| {:<34} | {:>12} | {:>12} |",
            "measure", "encrypted", "plain"
        );
        println!("|{:-<36}|{:-<14}|{:-<14}|", "", "", "");
        let pair = |what: &str, e: Duration, p: Duration| {
            println!("| {what:<34} | {:>12} | {:>12} |", f1(e), f1(p));
        };
        pair(
            "first start (pooled TPM)",
            r.ferro.first_start,
            p.first_start,
        );
        pair("first stop -> durable", r.ferro.first_stop, p.first_stop);
        pair("start, median", fs, p.start.median());
        pair(
            "start, p90",
            r.ferro.start.percentile(90.0),
            p.start.percentile(90.0),
        );
        pair("stop -> durable, median", fstop, p.stop.median());
        pair(
            "stop -> durable, p90",
            r.ferro.stop.percentile(90.0),
            p.stop.percentile(90.0),
        );
        println!();
    }
    let mb = |m: mem::Memory| format!("{:.1}/{:.1}", m.rss_mb(), m.pss_mb());
    if r.ferro_idle.rss_kib > 0 {
        row(
            "manager RSS/PSS MB, idle",
            mb(r.ferro_idle),
            "0".into(),
            r.libvirt_idle.map_or("-".into(), mb),
            "RSS <= 15 MB",
        );
        row(
            &format!("manager RSS/PSS MB, {} VMs", o.mem_vms),
            mb(r.ferro_busy),
            "0".into(),
            r.libvirt_busy.map_or("-".into(), mb),
            "",
        );
    }
    if let Some(c) = &r.control {
        row(
            &format!("apply {} VMs ({} in flight)", c.objects, c.concurrency),
            format!("{:.0}/s", c.apply_per_s()),
            "".into(),
            "".into(),
            ">= 10000 objects/s",
        );
        row(
            "  per create p50 / p99",
            format!(
                "{:.2}/{:.2}",
                ms(c.apply_requests.percentile(50.0)),
                ms(c.apply_requests.percentile(99.0))
            ),
            "".into(),
            "".into(),
            "ms",
        );
        row(
            &format!("list {} VMs (JSON), median", c.objects),
            f1(c.list_json.median()),
            "".into(),
            "".into(),
            "<= 20 ms",
        );
        row(
            &format!("list {} VMs (Table), median", c.objects),
            f1(c.list_table.median()),
            "".into(),
            "".into(),
            "<= 50 ms",
        );
        row(
            "write -> watch event p50 / p99",
            format!(
                "{:.2}/{:.2}",
                ms(c.watch.percentile(50.0)),
                ms(c.watch.percentile(99.0))
            ),
            "".into(),
            "".into(),
            "ms; p99 <= 5 ms",
        );
        row(
            &format!("manager RSS/PSS MB, {} objects", c.objects),
            mb(r.ferro_10k),
            "".into(),
            "".into(),
            "RSS <= 64 MB",
        );
    }
    if let Some(b) = &r.burst {
        row(
            &format!("burst of {} new VMs: p50 to Running", b.count),
            f1(b.ferro.median()),
            f1(b.hand.median()),
            "".into(),
            "",
        );
        row(
            "  p95 to Running",
            f1(b.ferro.percentile(95.0)),
            f1(b.hand.percentile(95.0)),
            "".into(),
            "<= 2x hand",
        );
        row(
            "  all Running (wall)",
            f1(b.ferro_wall),
            f1(b.hand_wall),
            "".into(),
            "",
        );
        row(
            "  manager peak RSS MB / CPU s",
            format!(
                "{:.1}/{:.2}",
                b.ferro_peak_rss_kib as f64 / 1024.0,
                b.ferro_cpu.as_secs_f64()
            ),
            "".into(),
            "".into(),
            "",
        );
    }
    println!();
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    if !r.ferro.start.is_empty() {
        let vs_hand = ratio(fs, hs);
        println!("start_ferrovirt_ms={:.1}", ms(fs));
        println!("start_hand_ms={:.1}", ms(hs));
        println!(
            "start_ratio_vs_hand={vs_hand:.2}  # goal <= 1.1 (issue 16): {}",
            verdict(vs_hand <= 1.1)
        );
        if let Some(ls) = ls {
            let v = ratio(fs, ls);
            println!("start_libvirt_ms={:.1}", ms(ls));
            println!(
                "start_ratio_vs_libvirt={v:.2}  # goal <= 0.2: {}",
                verdict(v <= 0.2)
            );
        }
        let first_vs_warm = ratio(r.ferro.first_start, fs);
        println!("first_start_ferrovirt_ms={:.1}", ms(r.ferro.first_start));
        println!(
            "first_start_ratio_vs_warm={first_vs_warm:.2}  # goal <= 2: {}",
            verdict(first_vs_warm <= 2.0)
        );
        println!(
            "first_start_manufacture_ms={:.1}",
            ms(r.first.manufactured_start)
        );
        println!(
            "apply_to_running_ms={:.1}  # goal <= 150: {}",
            ms(r.first.pooled_apply),
            verdict(ms(r.first.pooled_apply) <= 150.0)
        );
        println!(
            "apply_to_running_no_pool_ms={:.1}",
            ms(r.first.manufactured_apply)
        );
        println!("first_start_hand_ms={:.1}", ms(r.hand.first_start));
        if let Some(l) = &r.libvirt {
            println!("first_start_libvirt_ms={:.1}", ms(l.first_start));
        }
        println!("stop_durable_ferrovirt_ms={:.1}", ms(fstop));
        println!("stop_durable_hand_ms={:.1}", ms(r.hand.stop.median()));
        let stop_vs_hand = ratio(fstop, r.hand.stop.median());
        println!(
            "stop_ratio_vs_hand={stop_vs_hand:.2}  # goal <= 3 (issue 16): {}",
            verdict(stop_vs_hand <= 3.0)
        );
        if let Some(lstop) = lstop {
            println!("stop_durable_libvirt_ms={:.1}", ms(lstop));
            println!("stop_ratio_vs_libvirt={:.2}", ratio(fstop, lstop));
        }
        if let Some(p) = &r.ferro_plain {
            println!("start_ferrovirt_plain_ms={:.1}", ms(p.start.median()));
            println!("stop_durable_ferrovirt_plain_ms={:.1}", ms(p.stop.median()));
            println!("first_start_ferrovirt_plain_ms={:.1}", ms(p.first_start));
            println!(
                "encryption_start_cost_ms={:.1}",
                ms(fs) - ms(p.start.median())
            );
            println!(
                "encryption_stop_cost_ms={:.1}",
                ms(fstop) - ms(p.stop.median())
            );
        }
    }
    if r.ferro_idle.rss_kib > 0 {
        println!(
            "idle_rss_mb={:.1}  # goal <= 15: {}",
            r.ferro_idle.rss_mb(),
            verdict(r.ferro_idle.rss_mb() <= 15.0)
        );
        println!("idle_pss_mb={:.1}", r.ferro_idle.pss_mb());
        println!("busy_rss_mb={:.1}", r.ferro_busy.rss_mb());
        println!("busy_pss_mb={:.1}", r.ferro_busy.pss_mb());
        if let (Some(i), Some(b)) = (r.libvirt_idle, r.libvirt_busy) {
            println!("libvirt_idle_rss_mb={:.1}", i.rss_mb());
            println!("libvirt_busy_rss_mb={:.1}", b.rss_mb());
        }
    }
    if let Some(c) = &r.control {
        println!(
            "apply_per_s={:.0}  # goal >= 10000 (issue 16): {}",
            c.apply_per_s(),
            verdict(c.apply_per_s() >= 10_000.0)
        );
        println!("apply_p50_ms={:.2}", ms(c.apply_requests.percentile(50.0)));
        println!("apply_p99_ms={:.2}", ms(c.apply_requests.percentile(99.0)));
        let list = ms(c.list_json.median());
        println!(
            "list_10k_ms={list:.1}  # goal <= 20 (issue 16): {}",
            verdict(list <= 20.0)
        );
        let table = ms(c.list_table.median());
        println!(
            "list_10k_table_ms={table:.1}  # goal <= 50 (issue 16): {}",
            verdict(table <= 50.0)
        );
        println!("list_10k_bytes={}", c.list_bytes);
        println!("watch_p50_ms={:.2}", ms(c.watch.percentile(50.0)));
        let watch_p99 = ms(c.watch.percentile(99.0));
        println!(
            "watch_p99_ms={watch_p99:.2}  # goal <= 5 (issue 16): {}",
            verdict(watch_p99 <= 5.0)
        );
        let rss = r.ferro_10k.rss_mb();
        println!(
            "rss_10k_objects_mb={rss:.1}  # goal <= 64 (issue 16): {}",
            verdict(rss <= 64.0)
        );
    }
    if let Some(b) = &r.burst {
        let (f95, h95) = (b.ferro.percentile(95.0), b.hand.percentile(95.0));
        println!("burst_vms={}", b.count);
        println!("burst_p50_ms={:.1}", ms(b.ferro.median()));
        println!(
            "burst_p95_ms={:.1}  # goal <= 2x hand ({:.1}): {}",
            ms(f95),
            2.0 * ms(h95),
            verdict(f95 <= h95 * 2)
        );
        println!("burst_hand_p50_ms={:.1}", ms(b.hand.median()));
        println!("burst_hand_p95_ms={:.1}", ms(h95));
        println!(
            "burst_peak_rss_mb={:.1}",
            b.ferro_peak_rss_kib as f64 / 1024.0
        );
        println!("burst_cpu_s={:.2}", b.ferro_cpu.as_secs_f64());
    }
}

async fn run(o: Options) -> Result<(), BenchError> {
    std::fs::create_dir_all(&o.work)
        .map_err(|e| BenchError::Setup(format!("cannot create {}: {e}", o.work.display())))?;
    let mut o = o;
    if o.libvirt && !libvirt::available().await {
        eprintln!("warning: libvirtd does not answer on qemu:///system; libvirt is left out");
        o.libvirt = false;
    }
    let mut r = Results::default();
    let want = |part: &str| o.only.as_deref().is_none_or(|only| only == part);
    if want("start") || want("mem") {
        let server = ferro::Server::start(&o.ferrovirt, &o.work.join("data")).await?;
        let plain = if o.plain && want("start") {
            Some(
                ferro::Server::start_with(
                    &o.ferrovirt,
                    &o.work.join("data-plain"),
                    &["--state-encryption", "none"],
                )
                .await?,
            )
        } else {
            None
        };
        let nopool = ferro::Server::start_with(
            &o.ferrovirt,
            &o.work.join("data-nopool"),
            &["--tpm-pool-size", "0"],
        )
        .await?;
        let result = async {
            if want("mem") {
                // Idle is measured first, before any VM ran.
                memory(&o, &server, &mut r).await?;
            }
            if want("start") {
                lifecycle(&o, &server, plain.as_ref(), &nopool, &mut r).await?;
            }
            Ok::<_, BenchError>(())
        }
        .await;
        server.stop().await;
        nopool.stop().await;
        if let Some(plain) = plain {
            plain.stop().await;
        }
        result?;
    }
    if want("control") {
        control_plane(&o, &mut r).await?;
    }
    if want("burst") && o.burst > 0 {
        burst_of_vms(&o, &mut r).await?;
    }
    report(&o, &r);
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let result = match parse_options() {
        Ok(o) => run(o).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
