//! A bound on how many VMs the engine starts at once. After a host reboot every VM whose run
//! strategy says so (`Always`, `RerunOnFailure`) is started again at the same moment; each start
//! checks the TPM/EFI state (a swtpm run), writes a generation and launches swtpm, passt and QEMU.
//! The run tasks take a slot for the engine's start and give it back when the VM is up (or the
//! start failed): at most `serve --max-concurrent-starts` (default
//! [`DEFAULT_MAX_CONCURRENT_STARTS`]) starts run together, the others wait in the run table's
//! `Starting` state. Adoption of a VM that is still running takes no slot.
//!
//! The bound is not a throughput knob: the starts share the CPU either way. It decides who waits.
//! A start that waits for a slot while earlier VMs already boot their guests competes with those
//! boots for the CPU; measured with 50 new persistent-TPM VMs created at once on 2 cores (TCG,
//! `bench/run.sh --only burst`), 4 slots took p50/p95 63/187 s to `Running` and 64 slots 27/46 s.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many VMs the engine starts at once without `--max-concurrent-starts` (the guests' boots
/// after that are not bounded).
pub const DEFAULT_MAX_CONCURRENT_STARTS: usize = 32;

/// The start slots of one engine.
#[derive(Clone)]
pub struct StartSlots {
    slots: Arc<Semaphore>,
    limit: usize,
}

impl StartSlots {
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit.max(1))),
            limit: limit.max(1),
        }
    }

    /// Waits for a free slot; the slot is given back when the returned permit is dropped.
    /// `vm` only names the VM in the log line said while waiting.
    pub async fn acquire(&self, vm: &str) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        tracing::info!(
            vm,
            limit = self.limit,
            "waiting for a start slot: {} VMs are starting already",
            self.limit
        );
        // The semaphore is never closed, so this only fails if it were: start anyway.
        self.slots.clone().acquire_owned().await.ok()
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn at_most_the_limit_starts_at_once_and_a_freed_slot_lets_the_next_one_go() {
        let slots = StartSlots::new(DEFAULT_MAX_CONCURRENT_STARTS);
        let mut held = Vec::new();
        for i in 0..DEFAULT_MAX_CONCURRENT_STARTS {
            held.push(slots.acquire(&format!("vm-{i}")).await.unwrap());
        }
        assert_eq!(slots.available(), 0);

        let waiting = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire("vm-late").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a start beyond the limit must wait");

        drop(held.pop());
        let late = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a freed slot lets the waiting start go")
            .unwrap();
        assert!(late.is_some());
        assert_eq!(slots.available(), 0, "the late start holds the freed slot");
        drop(held);
        assert_eq!(slots.available(), DEFAULT_MAX_CONCURRENT_STARTS - 1);
        drop(late);
        assert_eq!(slots.available(), DEFAULT_MAX_CONCURRENT_STARTS);
    }

    #[tokio::test]
    async fn a_limit_of_zero_still_lets_one_start_run() {
        let slots = StartSlots::new(0);
        assert!(slots.acquire("vm").await.is_some());
    }
}
