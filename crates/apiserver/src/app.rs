//! What every handler shares: the store, the data dir (serial logs, runtime dirs, state
//! generations) and the chain of stages.

use std::path::PathBuf;
use std::sync::Arc;

use ferrovirt_store::Store;

use crate::chain::Chain;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub data_dir: PathBuf,
    pub chain: Arc<Chain>,
}

impl AppState {
    /// The state with the default chain (no authentication: the server listens on loopback).
    pub fn new(store: Store, data_dir: PathBuf) -> Self {
        Self::with_chain(store, data_dir, Chain::default())
    }

    pub fn with_chain(store: Store, data_dir: PathBuf, chain: Chain) -> Self {
        Self {
            store,
            data_dir,
            chain: Arc::new(chain),
        }
    }
}
