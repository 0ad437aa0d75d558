//! The engine's pool of TPMs manufactured ahead of need (`serve --tpm-pool-size`, see
//! `ferrovirt_tpm::pool`): where it lives (`<data-dir>/tpm-pool`), which kind a start takes
//! (a persistent TPM under encryption at rest takes a sealed entry, whose data key becomes
//! the VM's; otherwise a plain one), and the background thread that refills it at the lowest
//! CPU priority. A start that finds the pool empty, or whose claim fails, manufactures as
//! before: the pool only ever makes a first start faster.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use ferrovirt_keys::{DataKey, Keyring, WrappedKey};
use ferrovirt_tpm::{ClaimedTpm, ManufactureOptions, PoolKind, StateKey, TpmPool};

/// The pool dir inside the data dir.
pub const POOL_DIR: &str = "tpm-pool";
/// How long the filler waits after a failed fill before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// How often an idle filler looks whether the engine still exists.
const IDLE_WAKE: Duration = Duration::from_secs(5);
/// How long after a claim the filler waits before it refills: the start that claimed is still
/// launching its VM, which should not share the CPU with a manufacture.
const REFILL_DELAY: Duration = Duration::from_secs(2);

/// Ready pooled TPMs in `data_dir`'s pool: (plain, sealed).
pub fn ready_in(data_dir: &Path) -> (usize, usize) {
    ferrovirt_tpm::pool::ready_in(&data_dir.join(POOL_DIR))
}

/// The pool and what refills it.
#[derive(Debug)]
pub struct PoolService {
    pool: TpmPool,
    keyring: Keyring,
    size: usize,
    demand: Mutex<Demand>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Demand {
    /// An ephemeral TPM was asked for: keep plain entries for them too.
    ephemeral: bool,
    /// When a start last asked the pool for a TPM.
    last_claim: Option<Instant>,
}

/// A claimed entry, with the data key its state is encrypted with (sealed entries).
pub struct Claim {
    pub tpm: ClaimedTpm,
    pub key: Option<(DataKey, WrappedKey)>,
}

impl PoolService {
    /// Opens the pool of `data_dir` and starts its filler; `None` (logged) when `size` is 0
    /// or the pool cannot be opened.
    pub fn start(data_dir: &Path, keyring: Keyring, size: usize) -> Option<Arc<Self>> {
        if size == 0 {
            return None;
        }
        let pool = match TpmPool::open(
            data_dir.join(POOL_DIR),
            data_dir.join(POOL_DIR).join("tmp"),
            ManufactureOptions::default(),
        ) {
            Ok(pool) => pool,
            Err(error) => {
                tracing::warn!(%error, "the TPM pool is off: first starts manufacture their TPM");
                return None;
            }
        };
        let service = Arc::new(Self {
            pool,
            keyring,
            size,
            demand: Mutex::new(Demand::default()),
            wake: Condvar::new(),
        });
        let weak = Arc::downgrade(&service);
        let spawned = std::thread::Builder::new()
            .name("tpm-pool".into())
            .spawn(move || fill_loop(weak));
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the TPM pool's filler");
            return None;
        }
        Some(service)
    }

    /// The kind a persistent TPM takes under this keyring.
    fn persistent_kind(&self) -> PoolKind {
        if self.keyring.encrypts() {
            PoolKind::Sealed
        } else {
            PoolKind::Plain
        }
    }

    /// Ready entries for persistent and ephemeral TPMs.
    pub fn ready(&self) -> (usize, usize) {
        (
            self.pool.ready(self.persistent_kind()),
            self.pool.ready(PoolKind::Plain),
        )
    }

    /// An entry for a persistent TPM (with its unwrapped data key when sealed); `None` when
    /// the pool has none or the entry's key cannot be unwrapped (the entry is then dropped).
    pub fn claim_persistent(&self, record_path: &Path) -> Option<Claim> {
        let kind = self.persistent_kind();
        self.note_claim(false);
        let tpm = self.pool.claim(kind);
        self.wake.notify_all();
        let tpm = tpm?;
        let key = match kind {
            PoolKind::Plain => None,
            PoolKind::Sealed => {
                let bytes = tpm.key_record()?;
                let unwrapped = serde_json::from_slice::<WrappedKey>(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|record| {
                        self.keyring
                            .unwrap(&record, record_path)
                            .map(|key| (key, record))
                            .map_err(|e| e.to_string())
                    });
                match unwrapped {
                    Ok(pair) => Some(pair),
                    Err(error) => {
                        tracing::warn!(%error, "a pooled TPM's data key cannot be unwrapped; the entry is dropped");
                        return None;
                    }
                }
            }
        };
        Some(Claim { tpm, key })
    }

    /// An entry for an ephemeral TPM (plain); asks the filler to keep some from now on.
    pub fn claim_ephemeral(&self) -> Option<ClaimedTpm> {
        self.note_claim(true);
        let tpm = self.pool.claim(PoolKind::Plain);
        self.wake.notify_all();
        tpm
    }

    fn note_claim(&self, ephemeral: bool) {
        if let Ok(mut demand) = self.demand.lock() {
            demand.ephemeral |= ephemeral;
            demand.last_claim = Some(Instant::now());
        }
    }

    /// How long the filler should still hold back after the last claim.
    fn refill_wait(&self) -> Duration {
        self.demand
            .lock()
            .ok()
            .and_then(|d| d.last_claim)
            .map(|at| REFILL_DELAY.saturating_sub(at.elapsed()))
            .unwrap_or_default()
    }

    /// What the filler should make next, if anything.
    fn next_fill(&self) -> Option<PoolKind> {
        let persistent = self.persistent_kind();
        if self.pool.ready(persistent) < self.size {
            return Some(persistent);
        }
        let ephemeral = self.demand.lock().map(|d| d.ephemeral).unwrap_or(false);
        (ephemeral && self.pool.ready(PoolKind::Plain) < self.size).then_some(PoolKind::Plain)
    }

    fn fill(&self, kind: PoolKind) -> Result<Duration, String> {
        let seal = match kind {
            PoolKind::Plain => None,
            PoolKind::Sealed => {
                let (key, record) = self.keyring.new_data_key().map_err(|e| e.to_string())?;
                let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
                Some((StateKey::new(*key.as_bytes()), bytes))
            }
        };
        self.pool.fill_one(seal).map_err(|e| e.to_string())
    }

    /// Waits until a claim wakes the filler or `IDLE_WAKE` passes.
    fn idle(&self) {
        if let Ok(guard) = self.demand.lock() {
            let _ = self.wake.wait_timeout(guard, IDLE_WAKE);
        }
    }
}

/// Refills the pool for as long as the engine exists.
fn fill_loop(service: Weak<PoolService>) {
    loop {
        let Some(pool) = service.upgrade() else {
            return;
        };
        let wait = pool.refill_wait();
        if !wait.is_zero() {
            drop(pool);
            std::thread::sleep(wait);
            continue;
        }
        match pool.next_fill() {
            None => pool.idle(),
            Some(kind) => match pool.fill(kind) {
                Ok(took) => {
                    let (persistent, ephemeral) = pool.ready();
                    tracing::debug!(
                        ?kind,
                        took_ms = took.as_millis() as u64,
                        persistent,
                        ephemeral,
                        "manufactured a pooled TPM"
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot manufacture a pooled TPM; trying again in 30 s");
                    drop(pool);
                    std::thread::sleep(RETRY_AFTER);
                }
            },
        }
    }
}
