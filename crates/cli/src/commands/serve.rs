//! `ferrovirt serve --data-dir DIR --listen ADDR`: the API server, controllers and engine, over
//! TLS with tokens, client certificates and RBAC (the first start writes the CA, the serving
//! certificate, the admin token and `<data-dir>/admin.kubeconfig`). Logs go to stderr through
//! `tracing` (filter with `RUST_LOG`, default `info`). Settings come from the flags, else the
//! configuration file (`--config FILE`, default `/etc/ferrovirt/config.yaml` when present; see
//! [`super::serve_config`]), else the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::serve_config::ServeFile;

/// Arguments of `ferrovirt serve`. Each flag overrides the configuration file's key (see
/// [`super::serve_config`]); the defaults apply where neither sets it.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A YAML configuration file with the settings below (keys dataDir, runtimeDir,
    /// adminKubeconfig, listen, tlsSANs, insecureHTTP, tokenAuthFile, hostDiskRoots,
    /// stateRetention, maxWatchesPerClient, stateEncryption); flags override it. Default: /etc/ferrovirt/config.yaml
    /// when it exists.
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the state lives (created 0700): ferrovirt.db, pki/, admin.kubeconfig, audit.log,
    /// volumes/, logs/. [default: /var/lib/ferrovirt]
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the VMs' sockets and pid files live (created 0700; the service uses /run/ferrovirt),
    /// recorded in the data dir. [default: <data-dir>/run]
    #[arg(long = "runtime-dir", value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// Also write the admin kubeconfig here (0600), besides <data-dir>/admin.kubeconfig (the
    /// service writes /etc/ferrovirt/admin.kubeconfig, where the client looks for it).
    #[arg(long = "admin-kubeconfig", value_name = "FILE")]
    pub admin_kubeconfig: Option<PathBuf>,
    /// Address to listen on (HTTPS; loopback by default). [default: 127.0.0.1:8080]
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Another name (DNS or IP) clients use for this server: added to the serving certificate
    /// and accepted in the Host header. Repeatable (replaces the file's tlsSANs).
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_san: Vec<String>,
    /// Serve plain HTTP instead of TLS, only on a loopback --listen address (tokens and RBAC
    /// still apply).
    #[arg(long = "insecure-http")]
    pub insecure_http: bool,
    /// A kube-apiserver static token file: lines `token,user,uid[,"group1,group2"]`.
    #[arg(long = "token-auth-file", value_name = "FILE")]
    pub token_auth_file: Option<PathBuf>,
    /// A directory whose files VMs may use as `hostDisk` (repeatable; replaces the file's
    /// hostDiskRoots); `<data-dir>/images` is always allowed.
    #[arg(long = "host-disk-root", value_name = "DIR")]
    pub host_disk_roots: Vec<PathBuf>,
    /// How long the TPM/EFI state generations of a deleted VM are kept before they are purged
    /// (`7d`, `36h`, `90m`, `1d12h`). [default: 7d]
    #[arg(
        long = "state-retention",
        value_name = "DURATION",
        value_parser = ferrovirt_storage::vm_store::parse_duration
    )]
    pub state_retention: Option<Duration>,
    /// How many watches one client (peer address) may hold open at once; more are answered
    /// with 429 TooManyRequests. [default: 64]
    #[arg(long = "max-watches-per-client", value_name = "N")]
    pub max_watches_per_client: Option<usize>,
    /// How the VMs' TPM state and UEFI variables are encrypted at rest: `local` (data keys wrapped
    /// by a key file created 0600 in <data-dir>/state-keys/), `exec:/PATH/TO/PLUGIN` (wrapped by
    /// an external KMS through the keys.ferrovirt.io/v1 exec plugin protocol), or `none` (new and
    /// plain state stays plain; for comparison). [default: local]
    #[arg(long = "state-encryption", value_name = "none|local|exec:PLUGIN")]
    pub state_encryption: Option<ferrovirt_keys::EncryptionSetting>,
    /// How many TPMs are kept manufactured ahead of need (per kind: persistent, and ephemeral
    /// once one was asked for), refilled in the background at the lowest CPU priority, so a
    /// VM's first start does not wait for swtpm_setup; 0 switches the pool off. [default: 2]
    #[arg(long = "tpm-pool-size", value_name = "N")]
    pub tpm_pool_size: Option<usize>,
    /// How many VMs are started at once (state check or TPM manufacture, swtpm and QEMU up to
    /// `Running`); more wait for a free slot. After a host reboot every `Always` VM starts
    /// together. [default: 32]
    #[arg(long = "max-concurrent-starts", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_starts: Option<u16>,
}

/// The data dir without flag or file.
pub const DEFAULT_DATA_DIR: &str = crate::connection::DEFAULT_DATA_DIR;
/// The listen address without flag or file.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The state retention without flag or file.
pub const DEFAULT_STATE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl ServeArgs {
    /// The server's configuration: each flag, else the file's key, else the default.
    pub fn resolve(&self, file: &ServeFile) -> Result<ferrovirt_server::ServeConfig, String> {
        let default_listen: SocketAddr = DEFAULT_LISTEN
            .parse()
            .map_err(|e| format!("the default listen address: {e}"))?;
        let list = |flag: &Vec<String>, key: &Option<Vec<String>>| {
            if flag.is_empty() {
                key.clone().unwrap_or_default()
            } else {
                flag.clone()
            }
        };
        Ok(ferrovirt_server::ServeConfig {
            data_dir: self
                .data_dir
                .clone()
                .or_else(|| file.data_dir.clone())
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen: self.listen.or(file.listen).unwrap_or(default_listen),
            controllers: std::env::var_os("FERROVIRT_NO_CONTROLLERS").is_none(),
            tls_sans: list(&self.tls_san, &file.tls_sans),
            insecure_http: self.insecure_http || file.insecure_http.unwrap_or(false),
            token_auth_file: self
                .token_auth_file
                .clone()
                .or_else(|| file.token_auth_file.clone()),
            host_disk_roots: if self.host_disk_roots.is_empty() {
                file.host_disk_roots.clone().unwrap_or_default()
            } else {
                self.host_disk_roots.clone()
            },
            state_retention: match self.state_retention {
                Some(retention) => retention,
                None => file.retention()?.unwrap_or(DEFAULT_STATE_RETENTION),
            },
            max_watches_per_client: self
                .max_watches_per_client
                .or(file.max_watches_per_client)
                .unwrap_or(ferrovirt_server::DEFAULT_WATCHES_PER_CLIENT),
            tpm_pool_size: self
                .tpm_pool_size
                .or(file.tpm_pool_size)
                .unwrap_or(ferrovirt_server::DEFAULT_TPM_POOL_SIZE),
            max_concurrent_starts: match self.max_concurrent_starts.map(usize::from) {
                Some(n) => n,
                None => match file.max_concurrent_starts {
                    Some(0) => {
                        return Err(
                            "maxConcurrentStarts: 0 would start no VM; set 1 or more (default 32)"
                                .into(),
                        );
                    }
                    Some(n) => n,
                    None => ferrovirt_server::DEFAULT_MAX_CONCURRENT_STARTS,
                },
            },
            runtime_dir: self
                .runtime_dir
                .clone()
                .or_else(|| file.runtime_dir.clone()),
            admin_kubeconfig: self
                .admin_kubeconfig
                .clone()
                .or_else(|| file.admin_kubeconfig.clone()),
            state_encryption: match &self.state_encryption {
                Some(setting) => setting.clone(),
                None => file
                    .state_encryption
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(|e| format!("stateEncryption: {e}"))?
                    .unwrap_or_default(),
            },
        })
    }
}

/// Runs the server until SIGTERM/SIGINT.
pub fn run(args: &ServeArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in the journal or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    let config = match ServeFile::load(args.config.as_deref()) {
        Ok((file, path)) => {
            if let Some(path) = path {
                tracing::info!(config = %path.display(), "configuration file read (flags override it)");
            }
            args.resolve(&file)
        }
        Err(e) => Err(e.to_string()),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(argv: &[&str]) -> ServeArgs {
        Cli::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))
            .unwrap()
            .serve
    }

    #[test]
    fn without_file_or_flags_the_defaults_are_todays() {
        let config = args(&[]).resolve(&ServeFile::default()).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/ferrovirt"));
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.state_retention, Duration::from_secs(7 * 86400));
        assert_eq!(
            config.max_watches_per_client,
            ferrovirt_server::DEFAULT_WATCHES_PER_CLIENT
        );
        assert!(config.tls_sans.is_empty() && config.host_disk_roots.is_empty());
        assert!(!config.insecure_http);
        assert_eq!(config.runtime_dir, None);
        assert_eq!(config.admin_kubeconfig, None);
        assert_eq!(config.token_auth_file, None);
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_the_defaults() {
        let file = ServeFile::parse(
            "dataDir: /var/lib/ferrovirt
runtimeDir: /run/ferrovirt
adminKubeconfig: /etc/ferrovirt/admin.kubeconfig
listen: 0.0.0.0:8443
tlsSANs: [a.example]
hostDiskRoots: [/srv/a]
stateRetention: 36h
maxWatchesPerClient: 8
",
        )
        .unwrap();
        let from_file = args(&[]).resolve(&file).unwrap();
        assert_eq!(from_file.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(from_file.runtime_dir, Some(PathBuf::from("/run/ferrovirt")));
        assert_eq!(
            from_file.admin_kubeconfig,
            Some(PathBuf::from("/etc/ferrovirt/admin.kubeconfig"))
        );
        assert_eq!(from_file.tls_sans, vec!["a.example".to_owned()]);
        assert_eq!(from_file.host_disk_roots, vec![PathBuf::from("/srv/a")]);
        assert_eq!(from_file.state_retention, Duration::from_secs(36 * 3600));
        assert_eq!(from_file.max_watches_per_client, 8);

        let flags = args(&[
            "--data-dir",
            "/tmp/d",
            "--runtime-dir",
            "/tmp/r",
            "--admin-kubeconfig",
            "/tmp/k",
            "--listen",
            "127.0.0.1:9000",
            "--tls-san",
            "b.example",
            "--host-disk-root",
            "/srv/b",
            "--state-retention",
            "90m",
            "--max-watches-per-client",
            "3",
        ])
        .resolve(&file)
        .unwrap();
        assert_eq!(flags.data_dir, PathBuf::from("/tmp/d"));
        assert_eq!(flags.runtime_dir, Some(PathBuf::from("/tmp/r")));
        assert_eq!(flags.admin_kubeconfig, Some(PathBuf::from("/tmp/k")));
        assert_eq!(flags.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(flags.tls_sans, vec!["b.example".to_owned()]);
        assert_eq!(flags.host_disk_roots, vec![PathBuf::from("/srv/b")]);
        assert_eq!(flags.state_retention, Duration::from_secs(90 * 60));
        assert_eq!(flags.max_watches_per_client, 3);
    }
}
