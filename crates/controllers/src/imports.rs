//! The importer's runs (one per DataVolume being filled), kept in memory like the engine's run
//! table: the executor starts a run on a thread of its own and records its progress and outcome
//! here; the DataVolume reconciler reads them as an
//! [`ImportView`](crate::datavolume_reconciler::ImportView) and writes status, the PVC's
//! annotations and Events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferrovirt_importer::Progress;

use crate::action::Key;
use crate::datavolume_reconciler::ImportView;

#[derive(Debug)]
struct Entry {
    progress: Arc<Progress>,
    outcome: Option<Result<String, String>>,
}

/// The runs by DataVolume key.
#[derive(Debug, Default)]
pub struct ImportTable {
    runs: Mutex<HashMap<Key, Entry>>,
}

impl ImportTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a new run; `None` when one is already there (never two importers on a volume).
    pub fn begin(&self, key: Key) -> Option<Arc<Progress>> {
        let mut runs = self.lock();
        if runs.contains_key(&key) {
            return None;
        }
        let progress = Progress::new();
        runs.insert(
            key,
            Entry {
                progress: progress.clone(),
                outcome: None,
            },
        );
        Some(progress)
    }

    pub fn finish(&self, key: &Key, outcome: Result<String, String>) {
        if let Some(entry) = self.lock().get_mut(key) {
            entry.outcome = Some(outcome);
        }
    }

    pub fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }

    pub fn view(&self, key: &Key) -> Option<ImportView> {
        self.lock().get(key).map(|entry| match &entry.outcome {
            Some(outcome) => ImportView::Finished(outcome.clone()),
            None => ImportView::Running {
                percent: entry.progress.percent(),
            },
        })
    }
}
