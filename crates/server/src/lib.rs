//! `ferrovirt serve`: the wiring, and nothing more. It opens the store (seeded with the defaults
//! on first run), hands it to the controller manager (`ferrovirt-controllers`, which starts the
//! engine) and to the garbage collector as their [`ferrovirt_controllers::ObjectClient`], builds
//! the API server's router (`ferrovirt-apiserver`) with its chain of stages, and serves it until
//! SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferrovirt_apiserver::{AppState, Chain, router};
use ferrovirt_controllers::ObjectClient;
use ferrovirt_store::{Store, StoreError, StoreOptions};
use ferrovirt_vmm::hostpath::HostPathPolicy;

pub use ferrovirt_apiserver::watch_limit::DEFAULT_WATCHES_PER_CLIENT;

/// The database file in the data dir.
pub const DATABASE_FILE: &str = "ferrovirt.db";

/// What `ferrovirt serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Run the controllers and the engine (tests of the API alone switch them off).
    pub controllers: bool,
    /// Where `hostDisk` paths may lie besides `<data-dir>/images` (`--host-disk-root`).
    pub host_disk_roots: Vec<PathBuf>,
    /// How long the state generations of a deleted VM are kept (`--state-retention`).
    pub state_retention: Duration,
    /// How many watches one client may hold open (`--max-watches-per-client`).
    pub max_watches_per_client: usize,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the data directory {path} cannot be used: {message}")]
    PrivateDataDir { path: PathBuf, message: String },
    #[error("--host-disk-root {path}: {source}")]
    HostDiskRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the controllers could not start: {0}")]
    Controllers(#[from] ferrovirt_controllers::StartError),
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// Opens the store in `data_dir` and creates the embedded defaults on first run (see
/// `ferrovirt_resources::cluster::seed_defaults`).
pub fn open_store(data_dir: &Path) -> Result<Store, ServeError> {
    std::fs::create_dir_all(data_dir).map_err(|source| ServeError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    ferrovirt_storage::atomic::prepare_private_dir(data_dir).map_err(|e| {
        ServeError::PrivateDataDir {
            path: data_dir.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    let store = Store::open(data_dir.join(DATABASE_FILE), StoreOptions::default())?;
    ferrovirt_resources::cluster::seed_defaults(&store)?;
    Ok(store)
}

/// The `hostDisk` policy: `<data-dir>/images` and each `--host-disk-root`, as absolute paths.
pub fn host_path_policy(data_dir: &Path, roots: &[PathBuf]) -> Result<HostPathPolicy, ServeError> {
    let absolute = |path: &Path| {
        std::path::absolute(path).map_err(|source| ServeError::HostDiskRoot {
            path: path.to_path_buf(),
            source,
        })
    };
    let roots = roots
        .iter()
        .map(|r| absolute(r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HostPathPolicy::for_data_dir(&absolute(data_dir)?, &roots))
}

/// The stages of the API server's chain (none yet besides the request log: the server listens
/// on loopback without authentication).
fn chain() -> Chain {
    Chain::new(Vec::new())
}

/// Runs the server until SIGTERM/SIGINT. Running VMs are left running (they are adopted by the
/// next `serve`).
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let host_paths = host_path_policy(&config.data_dir, &config.host_disk_roots)?;
    let store = open_store(&config.data_dir)?;
    let client: Arc<dyn ObjectClient> = Arc::new(store.clone());
    ferrovirt_controllers::gc::spawn(client.clone());
    ferrovirt_controllers::housekeeping::spawn(
        client.clone(),
        config.data_dir.clone(),
        config.state_retention,
    );
    if config.controllers {
        ferrovirt_controllers::spawn(client, config.data_dir.clone(), host_paths.clone()).await?;
    }
    let state = AppState::with_chain(store, config.data_dir.clone(), chain())
        .with_host_paths(host_paths)
        .with_state_retention(config.state_retention)
        .with_watch_limit(config.max_watches_per_client);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(config.listen);
    if !local.ip().is_loopback() {
        tracing::warn!(listen = %local, "listening beyond loopback: the API has no authentication; anyone who reaches this address controls the VMs");
    }
    tracing::info!(listen = %local, data_dir = %config.data_dir.display(), "ferrovirt API server ready");
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app);
    tokio::select! {
        result = server => result.map_err(ServeError::Http)?,
        () = shutdown_signal() => {
            tracing::info!("shutting down; running VMs keep running and are adopted by the next start");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
