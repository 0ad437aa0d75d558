//! The control plane at scale: N VirtualMachine objects created through the API with C requests in
//! flight (one keep-alive connection each), lists of all of them (JSON and Table), and the
//! latency from a write to its watch event.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::BenchError;
use crate::ferro::{VMS, halted_vm};
use crate::http::{ACCEPT_TABLE, Api, Connection};
use crate::stats::Samples;

/// Results of the control-plane runs.
#[derive(Debug, Default)]
pub struct ControlResults {
    pub objects: usize,
    pub concurrency: usize,
    pub apply_wall: Duration,
    pub apply_requests: Samples,
    pub list_json: Samples,
    pub list_table: Samples,
    pub list_bytes: usize,
    pub watch: Samples,
}

impl ControlResults {
    pub fn apply_per_s(&self) -> f64 {
        self.objects as f64 / self.apply_wall.as_secs_f64().max(1e-9)
    }
}

/// Creates `objects` VMs named `cp-<i>` with `concurrency` workers.
pub async fn apply(
    addr: &Api,
    objects: usize,
    concurrency: usize,
) -> Result<(Duration, Samples), BenchError> {
    let next = Arc::new(AtomicUsize::new(0));
    // The request bodies are built before the clock starts (a client would have them ready).
    let bodies: Arc<Vec<Value>> = Arc::new(
        (0..objects)
            .map(|i| halted_vm(&format!("cp-{i}")))
            .collect(),
    );
    let mut connections = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        connections.push(Connection::open(addr).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in connections {
        let next = next.clone();
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return Ok::<_, BenchError>(latencies);
                };
                let t = Instant::now();
                let reply = conn
                    .request(Method::POST, VMS, Some(body), "application/json")
                    .await?;
                latencies.push(t.elapsed());
                if !reply.status.is_success() {
                    return Err(BenchError::Http(format!(
                        "create cp-{i}: HTTP {} {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    )));
                }
            }
        }));
    }
    let mut samples = Samples::default();
    for task in tasks {
        let latencies = task
            .await
            .map_err(|e| BenchError::Http(format!("an apply worker panicked: {e}")))??;
        samples.0.extend(latencies);
    }
    Ok((started.elapsed(), samples))
}

/// Waits until the server's resourceVersion has not moved for `quiet` (the controllers have
/// written the status of every new VM), at most `limit`.
pub async fn settle(addr: &Api, quiet: Duration, limit: Duration) -> Result<(), BenchError> {
    let mut conn = Connection::open(addr).await?;
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    loop {
        let list = conn
            .get_json("/api/v1/namespaces/default/events?limit=1")
            .await?;
        let rv = list
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if rv == last || Instant::now() > deadline {
            return Ok(());
        }
        last = rv;
        tokio::time::sleep(quiet).await;
    }
}

/// Lists the VMs `runs` times as JSON and as a Table; checks the count.
pub async fn lists(
    addr: &Api,
    expected: usize,
    runs: usize,
    results: &mut ControlResults,
) -> Result<(), BenchError> {
    let mut conn = Connection::open(addr).await?;
    for _ in 0..runs {
        for table in [false, true] {
            let accept = if table {
                ACCEPT_TABLE
            } else {
                "application/json"
            };
            let t = Instant::now();
            let reply = conn.request(Method::GET, VMS, None, accept).await?;
            let elapsed = t.elapsed();
            let list = reply.json("list VMs")?;
            let key = if table { "rows" } else { "items" };
            let count = list.get(key).and_then(Value::as_array).map_or(0, Vec::len);
            if count < expected {
                return Err(BenchError::Http(format!(
                    "the list has {count} {key}, expected at least {expected}"
                )));
            }
            if table {
                results.list_table.push(elapsed);
            } else {
                results.list_bytes = reply.body.len();
                results.list_json.push(elapsed);
            }
        }
    }
    Ok(())
}

/// `writes` sequential creates; for each, the time from sending the request to receiving its
/// ADDED event on a watch of the collection opened beforehand.
pub async fn watch_latency(addr: &Api, writes: usize) -> Result<Samples, BenchError> {
    let mut conn = Connection::open(addr).await?;
    let rv = conn
        .get_json(&format!("{VMS}?limit=1"))
        .await?
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_owned();
    let mut watch = Connection::open(addr)
        .await?
        .watch(&format!("{VMS}?watch=true&resourceVersion={rv}"))
        .await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Instant)>();
    let reader = tokio::spawn(async move {
        while let Ok(Some(event)) = watch.next_event().await {
            if event.get("type").and_then(Value::as_str) != Some("ADDED") {
                continue;
            }
            let name = event
                .pointer("/object/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if name.starts_with("wl-") && tx.send((name, Instant::now())).is_err() {
                break;
            }
        }
    });
    let mut samples = Samples::default();
    for i in 0..writes {
        let name = format!("wl-{i}");
        let sent = Instant::now();
        let reply = conn
            .request(
                Method::POST,
                VMS,
                Some(&halted_vm(&name)),
                "application/json",
            )
            .await?;
        reply.json(&format!("create {name}"))?;
        loop {
            let (got, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .map_err(|_| BenchError::Timeout(format!("no watch event for {name} in 10 s")))?
                .ok_or_else(|| BenchError::Http("the watch ended".into()))?;
            if got == name {
                samples.push(at.saturating_duration_since(sent));
                break;
            }
        }
    }
    reader.abort();
    Ok(samples)
}
