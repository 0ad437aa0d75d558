//! Throughput figures of the store alone (ignored by default; run in release):
//! `cargo test --release -p ferrovirt-store --test perf -- --ignored --nocapture`
//! Targets: create 10,000 small objects at >= 5,000/s; list 10,000 in well under 50 ms.

// Test code: helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ferrovirt_store::{
    Durability, ListOptions, ResourceKind, Selector, Store, StoreOptions, WatchOptions,
};
use serde_json::json;

fn vms() -> ResourceKind {
    ResourceKind::new("kubevirt.io", "virtualmachines", true)
}

fn small_vm(i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": format!("vm-{i:05}"), "namespace": "default",
                     "labels": {"app": "bench", "shard": format!("s{}", i % 10)}},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {
            "devices": {"tpm": {"persistent": true}},
            "firmware": {"bootloader": {"efi": {"persistent": true}}},
            "resources": {"requests": {"memory": "128Mi"}}}}}}
    })
}

fn create_many(durability: Durability, count: usize) -> (Store, tempfile::TempDir, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability,
        ..Default::default()
    };
    let store = Store::open(dir.path().join("store.db"), options).unwrap();
    let start = Instant::now();
    for i in 0..count {
        store.create(&vms(), small_vm(i)).unwrap();
    }
    (store, dir, start.elapsed())
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

#[test]
#[ignore = "benchmark; run with --release -- --ignored --nocapture"]
fn store_throughput() {
    let full_count = 2_000;
    let (_full_store, _full_dir, full) = create_many(Durability::Full, full_count);
    println!(
        "create (synchronous=FULL):   {full_count} objects in {:?} = {:.0}/s",
        full,
        per_second(full_count, full)
    );

    let count = 10_000;
    let (store, _dir, normal) = create_many(Durability::Normal, count);
    println!(
        "create (synchronous=NORMAL): {count} objects in {:?} = {:.0}/s",
        normal,
        per_second(count, normal)
    );

    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let list = store.list(&vms(), &ListOptions::default()).unwrap();
        best = best.min(start.elapsed());
        assert_eq!(list.items.len(), count);
    }
    println!("list {count} (parsed to Value): best of 5 {best:?}");

    let mut best_raw = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let list = store.list_raw(&vms(), &ListOptions::default()).unwrap();
        best_raw = best_raw.min(start.elapsed());
        assert_eq!(list.items.len(), count);
    }
    println!("list_raw {count} (stored JSON text): best of 5 {best_raw:?}");
    let list = store.list_raw(&vms(), &ListOptions::default()).unwrap();
    let start = Instant::now();
    let body = serde_json::to_string(&json!({"kind": "VirtualMachineList"}))
        .unwrap()
        .len()
        + serde_json::to_string(&list.items).unwrap().len();
    println!(
        "serialize list_raw response ({body} bytes): {:?}",
        start.elapsed()
    );

    let selected = ListOptions {
        label_selector: Selector::parse("shard=s3").unwrap(),
        ..Default::default()
    };
    let start = Instant::now();
    let list = store.list_raw(&vms(), &selected).unwrap();
    println!(
        "list_raw with selector shard=s3 ({} of {count}): {:?}",
        list.items.len(),
        start.elapsed()
    );

    let start = Instant::now();
    for i in 0..count {
        store
            .get(&vms(), Some("default"), &format!("vm-{i:05}"))
            .unwrap();
    }
    let gets = start.elapsed();
    println!("get {count}: {gets:?} = {:.0}/s", per_second(count, gets));

    let start = Instant::now();
    let mut watch = store.watch(&vms(), WatchOptions::default()).unwrap();
    println!(
        "watch from 0 ({} initial ADDED): {:?}",
        watch.backlog_len(),
        start.elapsed()
    );
    assert_eq!(watch.backlog_len(), count);
    drop(watch.try_next());

    let start = Instant::now();
    let mut watch = store
        .watch(
            &vms(),
            WatchOptions {
                resource_version: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    println!(
        "watch from rv 1 (replay {} logged events): {:?}",
        watch.backlog_len(),
        start.elapsed()
    );
    drop(watch.try_next());

    let start = Instant::now();
    for i in 0..count {
        let mut object = store
            .get(&vms(), Some("default"), &format!("vm-{i:05}"))
            .unwrap();
        object["spec"]["runStrategy"] = json!("Always");
        store.update(&vms(), object).unwrap();
    }
    let updates = start.elapsed();
    println!(
        "get+update {count}: {updates:?} = {:.0}/s",
        per_second(count, updates)
    );

    assert!(per_second(count, normal) >= 5_000.0, "create below 5,000/s");
    assert!(
        best_raw < Duration::from_millis(50),
        "list_raw of 10,000 not under 50 ms"
    );
}

#[test]
#[ignore = "benchmark"]
fn json_parse_cost() {
    let texts: Vec<String> = (0..10_000).map(|i| small_vm(i).to_string()).collect();
    println!("object size {} bytes", texts[0].len());
    let start = Instant::now();
    let values: Vec<serde_json::Value> = texts
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    println!("parse 10k to Value: {:?}", start.elapsed());
    let start = Instant::now();
    let raws: Vec<Box<serde_json::value::RawValue>> = texts
        .iter()
        .map(|t| serde_json::value::RawValue::from_string(t.clone()).unwrap())
        .collect();
    println!("parse 10k to RawValue: {:?}", start.elapsed());
    let start = Instant::now();
    let copies: Vec<String> = texts.to_vec();
    println!("copy 10k strings: {:?}", start.elapsed());
    let start = Instant::now();
    let out = serde_json::to_string(&values).unwrap();
    println!(
        "serialize 10k Values: {:?} ({} bytes)",
        start.elapsed(),
        out.len()
    );
    drop((raws, copies));
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (clock ticks of
/// 10 ms); on a shared machine a steadier measure of the work done than wall time.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

#[test]
#[ignore = "benchmark; run with --release -- --ignored --nocapture"]
fn concurrent_creates() {
    // As the API server sees them: 32 requests in flight, each on its own (blocking) thread.
    let count = 10_000;
    let threads = 32;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store.db"), StoreOptions::default()).unwrap();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu = process_cpu();
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (store, next) = (store.clone(), next.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        return latencies;
                    }
                    let t = Instant::now();
                    store.create(&vms(), small_vm(i)).unwrap();
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let wall = start.elapsed();
    let cpu = process_cpu().saturating_sub(cpu);
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    println!(
        "create {count} with {threads} threads: {wall:?} = {:.0}/s, CPU {cpu:?} ({:.1} µs/create), p50 {:?}, p99 {:?}",
        per_second(count, wall),
        cpu.as_secs_f64() * 1e6 / count as f64,
        at(0.5),
        at(0.99)
    );
    assert_eq!(store.current_resource_version(), count as u64);
}
