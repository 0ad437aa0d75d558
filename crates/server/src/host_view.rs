//! What `/metrics` reads from the host at each scrape ([`ferrovirt_metrics::HostView`]): the
//! VMIs in the store with their QEMU's CPU time and resident memory, the API server's open
//! watches, and the state generations kept per VM.

use std::path::PathBuf;
use std::sync::Arc;

use ferrovirt_apiserver::watch_limit::WatchLimiter;
use ferrovirt_metrics::{GenerationSample, HostView, VmiSample};
use ferrovirt_resources::VMIS;
use ferrovirt_storage::backend::VmUuid;
use ferrovirt_storage::vm_store::VmStateStore;
use ferrovirt_store::{ListOptions, Store};
use serde_json::Value;

/// The server's view of its host for the metrics.
pub struct ServeHostView {
    pub store: Store,
    pub data_dir: PathBuf,
    pub watches: Arc<WatchLimiter>,
    pub node: String,
}

impl std::fmt::Debug for ServeHostView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeHostView")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

impl HostView for ServeHostView {
    fn vmis(&self) -> Vec<VmiSample> {
        let Ok(list) = self.store.list(&VMIS.store_kind(), &ListOptions::default()) else {
            return Vec::new();
        };
        list.items
            .iter()
            .map(|vmi| {
                let usage = VmUuid::parse(text(vmi, "/spec/domain/firmware/uuid"))
                    .ok()
                    .and_then(|uuid| ferrovirt_vmm::engine::vm_usage(&self.data_dir, &uuid));
                let node = match text(vmi, "/status/nodeName") {
                    "" => self.node.clone(),
                    node => node.to_owned(),
                };
                VmiSample {
                    namespace: text(vmi, "/metadata/namespace").to_owned(),
                    name: text(vmi, "/metadata/name").to_owned(),
                    phase: match text(vmi, "/status/phase") {
                        "" => "Pending".to_owned(),
                        phase => phase.to_owned(),
                    },
                    node,
                    cpu_seconds: usage.map(|u| u.cpu_seconds),
                    resident_bytes: usage.map(|u| u.resident_bytes),
                }
            })
            .collect()
    }

    fn open_watches(&self) -> u64 {
        self.watches.open_total() as u64
    }

    fn tpm_pool_ready(&self) -> (u64, u64) {
        let (plain, sealed) = ferrovirt_vmm::tpm_pool::ready_in(&self.data_dir);
        (plain as u64, sealed as u64)
    }

    fn generations(&self) -> Vec<GenerationSample> {
        VmStateStore::new(&self.data_dir)
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|stored| GenerationSample {
                namespace: stored
                    .owner
                    .as_ref()
                    .map(|o| o.namespace.clone())
                    .unwrap_or_default(),
                name: stored
                    .owner
                    .as_ref()
                    .map(|o| o.name.clone())
                    .unwrap_or_default(),
                uuid: stored.uuid.as_str().to_owned(),
                count: stored.generations as u64,
                bytes: stored.bytes,
            })
            .collect()
    }
}
