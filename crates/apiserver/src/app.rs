//! What every handler shares: the store, the data dir (serial logs, runtime dirs, state
//! generations) and the chain of stages.

use std::path::PathBuf;
use std::sync::Arc;

use ferrovirt_store::Store;

use crate::chain::Chain;
use crate::security::PolicyHandle;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub data_dir: PathBuf,
    pub chain: Arc<Chain>,
    /// The RBAC policy the authorization stage and `SelfSubjectAccessReview` evaluate.
    pub policy: PolicyHandle,
}

impl AppState {
    /// The state with an empty chain (no authentication): for tests of the handlers alone.
    pub fn new(store: Store, data_dir: PathBuf) -> Self {
        Self::with_chain(store, data_dir, Chain::default(), PolicyHandle::default())
    }

    /// The state with `chain` (see `security::stages`) and the RBAC policy it enforces.
    pub fn with_chain(store: Store, data_dir: PathBuf, chain: Chain, policy: PolicyHandle) -> Self {
        Self {
            store,
            data_dir,
            chain: Arc::new(chain),
            policy,
        }
    }
}
