//! `ferrovirt serve --data-dir DIR --listen ADDR`: the API server, controllers and engine, over
//! TLS with tokens, client certificates and RBAC (the first start writes the CA, the serving
//! certificate, the admin token and `<data-dir>/admin.kubeconfig`). Logs go to stderr through
//! `tracing` (filter with `RUST_LOG`, default `info`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

/// Arguments of `ferrovirt serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the state lives (created 0700): ferrovirt.db, pki/, admin.kubeconfig, audit.log,
    /// volumes/, logs/.
    #[arg(
        long = "data-dir",
        value_name = "DIR",
        default_value = "/var/lib/ferrovirt"
    )]
    pub data_dir: PathBuf,
    /// Address to listen on (HTTPS; loopback by default).
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Another name (DNS or IP) clients use for this server: added to the serving certificate
    /// and accepted in the Host header. Repeatable.
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_san: Vec<String>,
    /// Serve plain HTTP instead of TLS, only on a loopback --listen address (tokens and RBAC
    /// still apply).
    #[arg(long = "insecure-http")]
    pub insecure_http: bool,
    /// A kube-apiserver static token file: lines `token,user,uid[,"group1,group2"]`.
    #[arg(long = "token-auth-file", value_name = "FILE")]
    pub token_auth_file: Option<PathBuf>,
    /// A directory whose files VMs may use as `hostDisk` (repeatable); `<data-dir>/images` is
    /// always allowed.
    #[arg(long = "host-disk-root", value_name = "DIR")]
    pub host_disk_roots: Vec<PathBuf>,
    /// How long the TPM/EFI state generations of a deleted VM are kept before they are purged
    /// (`7d`, `36h`, `90m`, `1d12h`).
    #[arg(
        long = "state-retention",
        value_name = "DURATION",
        default_value = "7d",
        value_parser = ferrovirt_storage::vm_store::parse_duration
    )]
    pub state_retention: Duration,
    /// How many watches one client (peer address) may hold open at once; more are answered
    /// with 429 TooManyRequests.
    #[arg(long = "max-watches-per-client", value_name = "N", default_value_t = ferrovirt_server::DEFAULT_WATCHES_PER_CLIENT)]
    pub max_watches_per_client: usize,
}

/// Runs the server until SIGTERM/SIGINT.
pub fn run(args: &ServeArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = ferrovirt_server::ServeConfig {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        controllers: std::env::var_os("FERROVIRT_NO_CONTROLLERS").is_none(),
        tls_sans: args.tls_san.clone(),
        insecure_http: args.insecure_http,
        token_auth_file: args.token_auth_file.clone(),
        host_disk_roots: args.host_disk_roots.clone(),
        state_retention: args.state_retention,
        max_watches_per_client: args.max_watches_per_client,
    };
    let result = runtime.block_on(ferrovirt_server::serve(config));
    // Do not wait for in-flight watches or VM monitors: the VMs run on without us.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
