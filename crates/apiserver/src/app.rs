//! What every handler shares: the store, the data dir (serial logs, runtime dirs, state
//! generations) and the chain of stages.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ferrovirt_api::validation::HostPathPolicy;
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
    /// Where `hostDisk` paths may lie (`<data>/images` and each `--host-disk-root`).
    pub host_paths: Arc<HostPathPolicy>,
    /// Held while a VirtualMachine is admitted and written: the `firmware.uuid` uniqueness check
    /// lists the other VMs, so two concurrent writes must not both pass it.
    pub vm_writes: Arc<Mutex<()>>,
    /// How long a deleted VM's state generations are kept (`--state-retention`).
    pub state_retention: std::time::Duration,
    /// Open watches per client (the limit of [`crate::handlers`]' watch).
    pub watches: Arc<crate::watch_limit::WatchLimiter>,
    /// What `/metrics` serves (`None`: the endpoint answers 404).
    pub metrics: Option<Arc<ferrovirt_metrics::Metrics>>,
    /// Issues and checks the tokens of CDI's UploadTokenRequests (a key per server start).
    pub upload_tokens: Arc<ferrovirt_auth::upload_token::UploadTokenSigner>,
}

/// A signer with a random key; without randomness (never on Linux) uploads are refused instead.
fn upload_signer() -> ferrovirt_auth::upload_token::UploadTokenSigner {
    match ferrovirt_auth::upload_token::UploadTokenSigner::random() {
        Ok(signer) => signer,
        Err(error) => {
            tracing::error!(%error, "no upload token key");
            ferrovirt_auth::upload_token::UploadTokenSigner::unusable()
        }
    }
}

impl AppState {
    /// The state with an empty chain (no authentication): for tests of the handlers alone.
    pub fn new(store: Store, data_dir: PathBuf) -> Self {
        Self::with_chain(store, data_dir, Chain::default(), PolicyHandle::default())
    }

    /// The state with `chain` (see `security::stages`) and the RBAC policy it enforces.
    pub fn with_chain(store: Store, data_dir: PathBuf, chain: Chain, policy: PolicyHandle) -> Self {
        let host_paths = HostPathPolicy::for_data_dir(&data_dir, &[]);
        Self {
            store,
            data_dir,
            chain: Arc::new(chain),
            policy,
            host_paths: Arc::new(host_paths),
            vm_writes: Arc::new(Mutex::new(())),
            state_retention: ferrovirt_storage::vm_store::DEFAULT_RETENTION,
            watches: Arc::new(crate::watch_limit::WatchLimiter::new(
                crate::watch_limit::DEFAULT_WATCHES_PER_CLIENT,
            )),
            metrics: None,
            upload_tokens: Arc::new(upload_signer()),
        }
    }

    /// The same state serving `metrics` at `/metrics`.
    pub fn with_metrics(mut self, metrics: Arc<ferrovirt_metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The same state with `retention` as the state retention of deleted VMs.
    pub fn with_state_retention(mut self, retention: std::time::Duration) -> Self {
        self.state_retention = retention;
        self
    }

    /// The same state with at most `limit` open watches per client.
    pub fn with_watch_limit(mut self, limit: usize) -> Self {
        self.watches = Arc::new(crate::watch_limit::WatchLimiter::new(limit));
        self
    }

    /// The same state with `policy` as the `hostDisk` roots.
    pub fn with_host_paths(mut self, policy: HostPathPolicy) -> Self {
        self.host_paths = Arc::new(policy);
        self
    }
}
