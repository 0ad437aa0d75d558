//! `ferrovirt serve`: the wiring, and nothing more. It prepares the private data dir, opens the
//! store (seeded with the defaults and the default RBAC roles and bindings), loads or creates the
//! PKI, the admin token and `<data-dir>/admin.kubeconfig` (`ferrovirt-auth`), keeps the RBAC
//! policy current from the store's watch ([`rbac_objects`]), hands the store to the controller
//! manager (`ferrovirt-controllers`, which starts the engine) and to the garbage collector as
//! their [`ferrovirt_controllers::ObjectClient`], builds the API server's router
//! (`ferrovirt-apiserver`) with its security stages, and serves it over TLS (HTTP/2 and
//! HTTP/1.1; plain HTTP only with `--insecure-http` on loopback) until SIGTERM/SIGINT. Under
//! systemd (`Type=notify`) it says `READY=1` once the API is served ([`notify`]).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use ferrovirt_apiserver::chain::RequestMetrics;
use ferrovirt_apiserver::request::ClientCertificates;
use ferrovirt_apiserver::security::{self, PolicyHandle, SecurityConfig, authorities_of};
use ferrovirt_apiserver::watch_limit::WatchLimiter;
use ferrovirt_apiserver::{AppState, Chain, router};
use ferrovirt_auth::Authenticator;
use ferrovirt_auth::audit::{AuditLog, Rotation};
use ferrovirt_auth::kubeconfig::{AuthInfo, Kubeconfig};
use ferrovirt_auth::pki::{Pki, ServingNames};
use ferrovirt_auth::tokens::AdminToken;
use ferrovirt_auth::user::ADMIN_USER;
use ferrovirt_controllers::ObjectClient;
use ferrovirt_metrics::Metrics;
use ferrovirt_store::{Store, StoreError, StoreOptions};
use ferrovirt_vmm::hostpath::HostPathPolicy;

pub use ferrovirt_apiserver::watch_limit::DEFAULT_WATCHES_PER_CLIENT;
/// TPMs kept manufactured ahead of need without `--tpm-pool-size`.
pub const DEFAULT_TPM_POOL_SIZE: usize = 2;
/// VMs started at once without `--max-concurrent-starts`.
pub use ferrovirt_controllers::DEFAULT_MAX_CONCURRENT_STARTS;

pub mod host_view;
pub mod notify;
pub mod rbac_objects;

/// The database file in the data dir.
pub const DATABASE_FILE: &str = "ferrovirt.db";
/// The admin kubeconfig in the data dir (0600): what `kubectl --kubeconfig` and `ferrovirt` use.
pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";
/// The admin token in the data dir (0600; also inside the admin kubeconfig).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The audit log in the data dir (0600).
pub const AUDIT_LOG: &str = "audit.log";
/// The PKI directory in the data dir (0700: CA, serving certificate and their keys).
pub const PKI_DIR: &str = "pki";

/// What `ferrovirt serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Run the controllers and the engine (tests of the API alone switch them off).
    pub controllers: bool,
    /// More names (DNS or IP) for the serving certificate and the `Host` check (`--tls-san`).
    pub tls_sans: Vec<String>,
    /// Plain HTTP instead of TLS (`--insecure-http`): only on a loopback address. Tokens and RBAC
    /// still apply.
    pub insecure_http: bool,
    /// A kube-apiserver style static token file (`--token-auth-file`).
    pub token_auth_file: Option<PathBuf>,
    /// Where `hostDisk` paths may lie besides `<data-dir>/images` (`--host-disk-root`).
    pub host_disk_roots: Vec<PathBuf>,
    /// How long the state generations of a deleted VM are kept (`--state-retention`).
    pub state_retention: Duration,
    /// How many watches one client may hold open (`--max-watches-per-client`).
    pub max_watches_per_client: usize,
    /// How many TPMs are kept manufactured ahead of need (`--tpm-pool-size`; 0: none).
    pub tpm_pool_size: usize,
    /// How many VMs the engine starts at once (`--max-concurrent-starts`).
    pub max_concurrent_starts: usize,
    /// Where the runs' runtime dirs (sockets, pid files) live instead of `<data-dir>/run`
    /// (`--runtime-dir`; the service's `/run/ferrovirt`), recorded in the data dir.
    pub runtime_dir: Option<PathBuf>,
    /// Another place the admin kubeconfig is written to (0600), besides
    /// `<data-dir>/admin.kubeconfig` (`--admin-kubeconfig`; the service's
    /// `/etc/ferrovirt/admin.kubeconfig`, where the client looks for credentials).
    pub admin_kubeconfig: Option<PathBuf>,
    /// How VM state is encrypted at rest (`--state-encryption none|local|exec:PLUGIN`; default
    /// local), recorded in the data dir for every reader of it.
    pub state_encryption: ferrovirt_keys::EncryptionSetting,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot prepare the data directory: {0}")]
    DataDir(#[from] ferrovirt_storage::atomic::AtomicError),
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
    #[error(
        "--insecure-http serves the API without TLS and is only allowed on a loopback address, not on --listen {0}; drop --insecure-http (TLS is the default) or listen on 127.0.0.1 / ::1"
    )]
    InsecureBeyondLoopback(SocketAddr),
    #[error("the server's certificates: {0}")]
    Pki(#[from] ferrovirt_auth::pki::PkiError),
    #[error("the admin token: {0}")]
    AdminToken(#[from] ferrovirt_auth::tokens::AdminTokenError),
    #[error("--token-auth-file: {0}")]
    TokenFile(#[from] ferrovirt_auth::tokens::TokenFileError),
    #[error("the admin kubeconfig: {0}")]
    Kubeconfig(#[from] ferrovirt_auth::kubeconfig::KubeconfigError),
    #[error("--state-encryption: {0}")]
    StateEncryption(String),
    #[error("the audit log: {0}")]
    Audit(#[from] ferrovirt_auth::audit::AuditError),
    #[error("--runtime-dir: {0}")]
    RuntimeDir(#[source] ferrovirt_vmm::engine::EngineError),
    #[error("the controllers could not start: {0}")]
    Controllers(#[from] ferrovirt_controllers::StartError),
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// Opens the store in `data_dir` (created 0700) and creates the embedded defaults and the
/// default RBAC roles and bindings on first run (see `ferrovirt_resources::cluster::seed_defaults`).
pub fn open_store(data_dir: &Path) -> Result<Store, ServeError> {
    ferrovirt_storage::atomic::prepare_private_dir(data_dir)?;
    let store = Store::open(data_dir.join(DATABASE_FILE), StoreOptions::default())?;
    ferrovirt_resources::cluster::seed_defaults(&store)?;
    rbac_objects::seed_defaults(&store)?;
    Ok(store)
}

/// The `https://` (or `http://`) URL clients on this host use: the listen address, or loopback
/// when it listens on all addresses.
pub fn client_url(listen: SocketAddr, scheme: &str) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ip => ip,
    };
    format!("{scheme}://{}", SocketAddr::new(ip, listen.port()))
}

/// Writes `<data-dir>/admin.kubeconfig` (0600) for the admin token.
fn write_admin_kubeconfig(
    config: &ServeConfig,
    listen: SocketAddr,
    ca_pem: Option<&str>,
    token: &AdminToken,
) -> Result<PathBuf, ServeError> {
    let scheme = if ca_pem.is_some() { "https" } else { "http" };
    let mut kubeconfig = Kubeconfig::single(
        &client_url(listen, scheme),
        ca_pem.unwrap_or_default(),
        ADMIN_USER,
        AuthInfo::with_token(token.as_str()),
    );
    if ca_pem.is_none() {
        for cluster in &mut kubeconfig.clusters {
            cluster.cluster.certificate_authority_data = None;
        }
    }
    let path = config.data_dir.join(ADMIN_KUBECONFIG);
    kubeconfig.write(&path)?;
    match &config.admin_kubeconfig {
        Some(copy) => {
            kubeconfig.write(copy)?;
            Ok(copy.clone())
        }
        None => Ok(path),
    }
}

/// Everything a request's `Host` may say: every certificate name and listen address, with the port.
fn authorities(names: &ServingNames, listen: SocketAddr, scheme: &str) -> HashSet<String> {
    let port = listen.port();
    let mut hosts: Vec<String> = names.ips.iter().map(IpAddr::to_string).collect();
    hosts.extend(names.dns.iter().cloned());
    hosts.push(listen.ip().to_string());
    hosts
        .iter()
        .flat_map(|host| authorities_of(host, port, scheme))
        .collect()
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

/// Runs the server until SIGTERM/SIGINT. Running VMs are left running (they are adopted by the
/// next `serve`).
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    if config.insecure_http && !config.listen.ip().is_loopback() {
        return Err(ServeError::InsecureBeyondLoopback(config.listen));
    }
    let host_paths = host_path_policy(&config.data_dir, &config.host_disk_roots)?;
    let store = open_store(&config.data_dir)?;
    record_state_encryption(&config)?;
    if let Some(runtime_dir) = &config.runtime_dir {
        ferrovirt_vmm::engine::set_runtime_base(&config.data_dir, runtime_dir)
            .map_err(ServeError::RuntimeDir)?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(config.listen);
    let names = ServingNames::new([local.ip()], &config.tls_sans)?;
    let pki = if config.insecure_http {
        None
    } else {
        Some(Pki::load_or_create(&config.data_dir.join(PKI_DIR), &names)?)
    };
    let scheme = if pki.is_some() { "https" } else { "http" };
    let (admin_token, _) = AdminToken::load_or_create(&config.data_dir.join(ADMIN_TOKEN_FILE))?;
    let kubeconfig =
        write_admin_kubeconfig(&config, local, pki.as_ref().map(Pki::ca_pem), &admin_token)?;
    let authenticator =
        Authenticator::with_token_file(Some(admin_token), config.token_auth_file.as_deref())?;
    let policy = PolicyHandle::default();
    rbac_objects::keep_policy_current(store.clone(), policy.clone())?;
    let audit = AuditLog::open(&config.data_dir.join(AUDIT_LOG), Rotation::default())?;
    let watches = Arc::new(WatchLimiter::new(config.max_watches_per_client));
    let metrics = Arc::new(Metrics::new(Arc::new(host_view::ServeHostView {
        store: store.clone(),
        data_dir: config.data_dir.clone(),
        watches: watches.clone(),
        node: ferrovirt_resources::kubevirt::node_name(),
    })));
    let mut stages = security::stages(SecurityConfig {
        authenticator,
        policy: policy.clone(),
        authorities: authorities(&names, local, scheme),
        scheme,
        audit: Some(audit),
    });
    stages.push(Arc::new(RequestMetrics(metrics.clone())));
    let chain = Chain::new(stages);

    let client: Arc<dyn ObjectClient> = Arc::new(store.clone());
    ferrovirt_controllers::gc::spawn(client.clone());
    ferrovirt_controllers::housekeeping::spawn(
        client.clone(),
        config.data_dir.clone(),
        config.state_retention,
    );
    if config.controllers {
        // Exports are served by this server over TLS; its URL and CA go into their links.
        let export_endpoint = pki
            .as_ref()
            .map(|pki| ferrovirt_controllers::ExportEndpoint {
                server_url: client_url(local, scheme),
                ca_pem: pki.ca_pem().to_owned(),
            });
        ferrovirt_controllers::spawn(
            client,
            config.data_dir.clone(),
            host_paths.clone(),
            config.tpm_pool_size,
            config.max_concurrent_starts,
            Some(metrics.clone()),
            export_endpoint,
        )
        .await?;
    }
    let mut state = AppState::with_chain(store, config.data_dir.clone(), chain, policy)
        .with_host_paths(host_paths)
        .with_state_retention(config.state_retention)
        .with_metrics(metrics);
    state.watches = watches;
    tracing::info!(listen = %local, url = %client_url(local, scheme), data_dir = %config.data_dir.display(), "ferrovirt API server ready");
    tracing::info!("admin kubeconfig: {}", kubeconfig.display());
    let app = router(state);
    // The listener is bound and every part is up: connections from now on are answered.
    notify::ready();
    match pki {
        Some(pki) => {
            let mut tls = (*pki.server_config()?).clone();
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            tokio::select! {
                () = serve_tls(listener, acceptor, app) => {}
                () = shutdown_signal() => log_shutdown(),
            }
        }
        None => {
            tracing::warn!(listen = %local, "--insecure-http: the API is served without TLS (tokens and RBAC still apply)");
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            // TCP_NODELAY as on the TLS listener (serve_tls): no ~40 ms Nagle wait on a watch
            // event that follows another write.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, "TCP_NODELAY refused");
                }
            });
            tokio::select! {
                result = axum::serve(listener, app) => result.map_err(ServeError::Http)?,
                () = shutdown_signal() => log_shutdown(),
            }
        }
    }
    Ok(())
}

fn log_shutdown() {
    notify::stopping();
    tracing::info!("shutting down; running VMs keep running and are adopted by the next start");
}

/// Accepts TLS connections forever; each request carries the peer address and the client
/// certificate chain rustls verified against the CA (for the authentication stage).
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // As Go's net/http (kube-apiserver) does: without it, a small write (a watch event, a
        // short answer) after another one waits for the client's delayed ACK (Nagle), ~40 ms.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "TCP_NODELAY refused");
        }
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(error) => {
                    tracing::debug!(%peer, %error, "TLS handshake refused");
                    return;
                }
            };
            let certificates = ClientCertificates(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .map(|chain| chain.iter().map(|c| c.to_vec()).collect())
                    .unwrap_or_default(),
            );
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.extensions_mut().insert(certificates.clone());
                    let app = app.clone();
                    async move {
                        use tower::ServiceExt;
                        app.oneshot(request.map(axum::body::Body::new)).await
                    }
                },
            );
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
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

/// Records `--state-encryption` in the data dir (the engine, the API server and the CLI's
/// `--data-dir` commands read it from there); an exec plugin must be an executable file.
fn record_state_encryption(config: &ServeConfig) -> Result<(), ServeError> {
    if let ferrovirt_keys::EncryptionSetting::Exec(plugin) = &config.state_encryption {
        use std::os::unix::fs::PermissionsExt;
        let executable = std::fs::metadata(plugin)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if !executable {
            return Err(ServeError::StateEncryption(format!(
                "exec:{}: the KMS plugin is not an executable file",
                plugin.display()
            )));
        }
    }
    ferrovirt_keys::Keyring::record(&config.data_dir, config.state_encryption.clone())
        .map_err(|e| ServeError::StateEncryption(e.to_string()))?;
    tracing::info!(state_encryption = %config.state_encryption, "state encryption at rest");
    Ok(())
}
