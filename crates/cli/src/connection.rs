//! Where the client commands connect and as whom, with kubectl's rules: the kubeconfig of
//! `--kubeconfig FILE`, else the files of `$KUBECONFIG`, else `~/.kube/config`, else the admin
//! kubeconfig of the installed service (`/etc/ferrovirt/admin.kubeconfig`), else the one
//! `ferrovirt serve` writes into its default data dir; its `--context` (or current
//! context) gives the server, the CA, the token or client certificate and the namespace.
//! `--server` (or `$FERROVIRT_SERVER`) only replaces the server URL, as kubectl's `--server`
//! does. With no kubeconfig at all an explicit `--server http://...` is used without
//! credentials (the server allows that only with `--insecure-http`, on loopback).

use std::path::{Path, PathBuf};

use ferrovirt_auth::kubeconfig::{Credentials, KubeconfigError, LoadingRules};

use crate::client::{ClientArgs, ClientError};

/// The data dir `ferrovirt serve` uses without `--data-dir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/ferrovirt";

/// The admin kubeconfig's file name inside a data dir.
pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";

/// The namespace when neither `-n` nor the context names one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// `<data-dir>/admin.kubeconfig`.
pub fn admin_kubeconfig(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_KUBECONFIG)
}

/// The admin kubeconfig the installed service writes (its packaged configuration says so).
pub const SERVICE_ADMIN_KUBECONFIG: &str = "/etc/ferrovirt/admin.kubeconfig";

/// The last places credentials are looked for, in order: the installed service's admin
/// kubeconfig, then the admin kubeconfig of the default data dir.
pub fn default_fallbacks() -> Vec<PathBuf> {
    vec![
        PathBuf::from(SERVICE_ADMIN_KUBECONFIG),
        admin_kubeconfig(Path::new(DEFAULT_DATA_DIR)),
    ]
}

/// A resolved connection: the server URL, the namespace, and the kubeconfig's credentials
/// (`None`: no kubeconfig was found and `--server` was given, so requests carry no credentials).
#[derive(Debug, Clone)]
pub struct Connection {
    pub server: String,
    pub namespace: String,
    pub credentials: Option<Credentials>,
}

impl Connection {
    /// The connection `args` select, with this process's `$KUBECONFIG` and `$HOME`.
    pub fn from_args(args: &ClientArgs) -> Result<Self, ClientError> {
        let rules = LoadingRules::from_env(args.kubeconfig.clone(), default_fallbacks());
        Self::resolve(args, &rules)
    }

    /// The connection `args` select with the given loading rules.
    pub fn resolve(args: &ClientArgs, rules: &LoadingRules) -> Result<Self, ClientError> {
        let server_override = args
            .server
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end_matches('/').to_owned());
        let context = args.context.as_deref().filter(|c| !c.is_empty());
        let without_credentials = |server: String| {
            check_url(&server)?;
            Ok(Connection {
                server,
                namespace: args
                    .namespace
                    .clone()
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
                credentials: None,
            })
        };
        let (config, sources) = match rules.load() {
            Ok(found) => found,
            Err(KubeconfigError::NotFound { looked }) => {
                return match (server_override, context) {
                    (Some(server), None) => without_credentials(server),
                    _ => Err(not_found(&looked, &rules.fallbacks)),
                };
            }
            Err(e) => return Err(ClientError::Credentials(e.to_string())),
        };
        let credentials = match config.resolve(context) {
            Ok(credentials) => credentials,
            // A kubeconfig without a current context and an explicit --server: kubectl talks to
            // that server without credentials.
            Err(_) if context.is_none() && config.current_context.is_empty() => {
                if let Some(server) = server_override {
                    return without_credentials(server);
                }
                return Err(ClientError::Credentials(format!(
                    "the kubeconfig ({}) has no current-context; pass --context NAME or set one with `kubectl config use-context NAME`",
                    show_paths(&sources)
                )));
            }
            Err(e) => {
                return Err(ClientError::Credentials(format!(
                    "{e} (kubeconfig: {})",
                    show_paths(&sources)
                )));
            }
        };
        let mut credentials = credentials;
        if let Some(server) = server_override {
            credentials.server = server;
        }
        check_url(&credentials.server)?;
        Ok(Connection {
            server: credentials.server.clone(),
            namespace: args
                .namespace
                .clone()
                .or_else(|| credentials.namespace.clone())
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            credentials: Some(credentials),
        })
    }

    /// Whether the server is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.server.starts_with("https://")
    }

    /// The `Authorization` header value, when the user has a token.
    pub fn authorization_header(&self) -> Option<String> {
        self.credentials
            .as_ref()
            .and_then(Credentials::authorization_header)
    }

    /// The credentials that set up TLS: `None` for `http://`; for `https://` the kubeconfig's,
    /// checked to have a CA and no setting ferrovirt does not follow.
    pub fn tls_credentials(&self) -> Result<Option<&Credentials>, ClientError> {
        if !self.is_https() {
            return Ok(None);
        }
        let Some(credentials) = &self.credentials else {
            return Err(ClientError::Credentials(format!(
                "the server {} is https:// but no kubeconfig gives its certificate authority; pass --kubeconfig FILE or set KUBECONFIG (the server writes <data-dir>/admin.kubeconfig)",
                self.server
            )));
        };
        if credentials.tls_server_name.is_some() {
            return Err(ClientError::Credentials(format!(
                "context {:?} sets tls-server-name, which ferrovirt's client does not support; remove it and use a server URL whose host is in the server's certificate (add names with `ferrovirt serve --tls-san`)",
                credentials.context
            )));
        }
        // Refuses insecure-skip-tls-verify and a cluster without certificate-authority-data,
        // and proves the CA and client certificate parse.
        credentials
            .rustls_client_config()
            .map_err(|e| ClientError::Credentials(e.to_string()))?;
        Ok(Some(credentials))
    }
}

fn check_url(server: &str) -> Result<(), ClientError> {
    if server.starts_with("http://") || server.starts_with("https://") {
        Ok(())
    } else {
        Err(ClientError::Usage(format!(
            "the server {server:?} is not an http:// or https:// URL (e.g. https://127.0.0.1:8443)"
        )))
    }
}

fn show_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// No kubeconfig anywhere: where we looked and how to fix it; when a fallback exists but cannot
/// be read (a non-root user and the server's 0600 file) that is said too.
fn not_found(looked: &str, fallbacks: &[PathBuf]) -> ClientError {
    let unreadable = fallbacks.iter().find_map(|path| match std::fs::File::open(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Some(format!(
            "; {} exists but cannot be read ({e}): run as its owner, or copy it to ~/.kube/config",
            path.display()
        )),
        _ => None,
    });
    ClientError::Credentials(format!(
        "no kubeconfig found (looked at {looked}); pass --kubeconfig FILE, set KUBECONFIG, or run this on the host of `ferrovirt serve`, which writes <data-dir>/{ADMIN_KUBECONFIG} (default {}; the installed service also {SERVICE_ADMIN_KUBECONFIG}){}",
        admin_kubeconfig(Path::new(DEFAULT_DATA_DIR)).display(),
        unreadable.unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests;
