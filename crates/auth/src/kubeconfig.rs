//! kubeconfig files, on both sides: the server writes `<data-dir>/admin.kubeconfig` (0600,
//! crash-safe) and prints kubeconfigs for client certificates; the client finds credentials with
//! kubectl's rules and resolves the current context into a server URL, CA, token or client
//! certificate, and a rustls client configuration.
//!
//! kubectl's loading rules ([`LoadingRules`]): an explicit `--kubeconfig` file (which must
//! exist), else every file of `$KUBECONFIG` (colon-separated; missing files skipped; merged so
//! that the first file to define a cluster, user, context or the current context wins), else
//! `~/.kube/config`. ferrovirt adds last fallbacks the caller names (the service's
//! `/etc/ferrovirt/admin.kubeconfig`, then the default data dir's `admin.kubeconfig`): the first
//! readable one is used when the rules found nothing. Relative file
//! paths inside a kubeconfig are relative to that file's directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use ferrovirt_storage::atomic::{self, AtomicError, PRIVATE_FILE_MODE};

/// Why no usable credentials were found.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("cannot read the kubeconfig {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kubeconfig {source_name} is not valid: {detail}")]
    Parse { source_name: String, detail: String },
    #[error(transparent)]
    Write(#[from] AtomicError),
    #[error("cannot encode the kubeconfig as YAML: {0}")]
    Encode(String),
    #[error(
        "no kubeconfig found (looked at {looked}); pass --kubeconfig FILE, set KUBECONFIG, or run this on the host of `ferrovirt serve`, which writes <data-dir>/admin.kubeconfig"
    )]
    NotFound { looked: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {what} {path} named by the kubeconfig: {source}")]
    ReferencedFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kubeconfig's {field} is not valid base64: {detail}")]
    Base64 { field: String, detail: String },
    #[error("cannot build the TLS client configuration: {0}")]
    Tls(String),
}

/// A kubeconfig file (`kind: Config`, `apiVersion: v1`), with kubectl's field names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion", default = "v1")]
    pub api_version: String,
    #[serde(default = "config_kind")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub clusters: Vec<NamedCluster>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub users: Vec<NamedUser>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", default)]
    pub current_context: String,
}

fn v1() -> String {
    "v1".to_owned()
}
fn config_kind() -> String {
    "Config".to_owned()
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    #[serde(default)]
    pub cluster: Cluster,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    #[serde(default)]
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NamedUser {
    pub name: String,
    #[serde(default)]
    pub user: AuthInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AuthInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(rename = "tokenFile", default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
}

impl AuthInfo {
    /// A bearer token user.
    pub fn with_token(token: &str) -> Self {
        AuthInfo {
            token: Some(token.to_owned()),
            ..AuthInfo::default()
        }
    }

    /// A client certificate user (PEM in, base64 data fields out).
    pub fn with_client_certificate(cert_pem: &str, key_pem: &str) -> Self {
        AuthInfo {
            client_certificate_data: Some(b64(cert_pem.as_bytes())),
            client_key_data: Some(b64(key_pem.as_bytes())),
            ..AuthInfo::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    #[serde(default)]
    pub context: Context,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Context {
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The cluster name in kubeconfigs ferrovirt writes.
pub const CLUSTER_NAME: &str = "ferrovirt";

impl Kubeconfig {
    /// A kubeconfig with one cluster (`ferrovirt`, the server and its CA), one user and one
    /// context `<user>@ferrovirt`, which is current.
    pub fn single(server: &str, ca_pem: &str, user_name: &str, user: AuthInfo) -> Self {
        let context = format!("{user_name}@{CLUSTER_NAME}");
        Kubeconfig {
            api_version: v1(),
            kind: config_kind(),
            clusters: vec![NamedCluster {
                name: CLUSTER_NAME.to_owned(),
                cluster: Cluster {
                    server: server.to_owned(),
                    certificate_authority_data: Some(b64(ca_pem.as_bytes())),
                    ..Cluster::default()
                },
            }],
            users: vec![NamedUser {
                name: user_name.to_owned(),
                user,
            }],
            contexts: vec![NamedContext {
                name: context.clone(),
                context: Context {
                    cluster: CLUSTER_NAME.to_owned(),
                    user: user_name.to_owned(),
                    namespace: None,
                },
            }],
            current_context: context,
        }
    }

    /// Parses YAML (or JSON). `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, KubeconfigError> {
        if text.trim().is_empty() {
            return Ok(Kubeconfig {
                api_version: v1(),
                kind: config_kind(),
                ..Kubeconfig::default()
            });
        }
        serde_saphyr::from_str(text).map_err(|e| KubeconfigError::Parse {
            source_name: source_name.to_owned(),
            detail: e.to_string(),
        })
    }

    /// Reads and parses a file; relative paths inside are made absolute against its directory.
    pub fn load(path: &Path) -> Result<Self, KubeconfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| KubeconfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        let absolute = |p: &mut Option<String>| {
            if let Some(value) = p
                && !value.is_empty()
                && Path::new(value.as_str()).is_relative()
            {
                *value = base.join(value.as_str()).display().to_string();
            }
        };
        for c in &mut config.clusters {
            absolute(&mut c.cluster.certificate_authority);
        }
        for u in &mut config.users {
            absolute(&mut u.user.token_file);
            absolute(&mut u.user.client_certificate);
            absolute(&mut u.user.client_key);
        }
        Ok(config)
    }

    /// YAML, as kubectl writes it.
    pub fn to_yaml(&self) -> Result<String, KubeconfigError> {
        serde_saphyr::to_string(self).map_err(|e| KubeconfigError::Encode(e.to_string()))
    }

    /// Writes the file crash-safely with mode 0600 (it holds credentials).
    pub fn write(&self, path: &Path) -> Result<(), KubeconfigError> {
        let yaml = self.to_yaml()?;
        atomic::write_file(path, yaml.as_bytes(), PRIVATE_FILE_MODE)?;
        Ok(())
    }

    /// Merges `other` under `self`: entries `self` already names are kept (first file wins).
    pub fn merge_from(&mut self, other: Kubeconfig) {
        for c in other.clusters {
            if !self.clusters.iter().any(|x| x.name == c.name) {
                self.clusters.push(c);
            }
        }
        for u in other.users {
            if !self.users.iter().any(|x| x.name == u.name) {
                self.users.push(u);
            }
        }
        for c in other.contexts {
            if !self.contexts.iter().any(|x| x.name == c.name) {
                self.contexts.push(c);
            }
        }
        if self.current_context.is_empty() {
            self.current_context = other.current_context;
        }
    }

    /// The credentials of `context` (or the current context).
    pub fn resolve(&self, context: Option<&str>) -> Result<Credentials, KubeconfigError> {
        let name = context
            .filter(|c| !c.is_empty())
            .unwrap_or(&self.current_context);
        if name.is_empty() {
            return Err(KubeconfigError::Invalid(
                "the kubeconfig has no current-context; set one with `kubectl config use-context NAME` or pass --context NAME".to_owned(),
            ));
        }
        let context = self
            .contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                KubeconfigError::Invalid(format!(
                    "context was not found for specified context: {name}"
                ))
            })?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == context.context.cluster)
            .ok_or_else(|| {
                KubeconfigError::Invalid(format!(
                    "cluster {:?} of context {name:?} is not in the kubeconfig",
                    context.context.cluster
                ))
            })?;
        if cluster.cluster.server.is_empty() {
            return Err(KubeconfigError::Invalid(format!(
                "cluster {:?} has no server defined",
                cluster.name
            )));
        }
        let user = if context.context.user.is_empty() {
            AuthInfo::default()
        } else {
            self.users
                .iter()
                .find(|u| u.name == context.context.user)
                .map(|u| u.user.clone())
                .ok_or_else(|| {
                    KubeconfigError::Invalid(format!(
                        "user {:?} of context {name:?} is not in the kubeconfig",
                        context.context.user
                    ))
                })?
        };
        let data_or_file = |data: &Option<String>,
                            file: &Option<String>,
                            field: &str,
                            what: &'static str|
         -> Result<Option<Vec<u8>>, KubeconfigError> {
            if let Some(data) = data.as_deref().filter(|d| !d.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| KubeconfigError::Base64 {
                        field: field.to_owned(),
                        detail: e.to_string(),
                    })?;
                return Ok(Some(decoded));
            }
            match file.as_deref().filter(|f| !f.is_empty()) {
                Some(path) => std::fs::read(path).map(Some).map_err(|source| {
                    KubeconfigError::ReferencedFile {
                        what,
                        path: PathBuf::from(path),
                        source,
                    }
                }),
                None => Ok(None),
            }
        };
        let ca_pem = data_or_file(
            &cluster.cluster.certificate_authority_data,
            &cluster.cluster.certificate_authority,
            &format!(
                "clusters[{}].cluster.certificate-authority-data",
                cluster.name
            ),
            "the certificate authority",
        )?;
        let client_cert_pem = data_or_file(
            &user.client_certificate_data,
            &user.client_certificate,
            &format!(
                "users[{}].user.client-certificate-data",
                context.context.user
            ),
            "the client certificate",
        )?;
        let client_key_pem = data_or_file(
            &user.client_key_data,
            &user.client_key,
            &format!("users[{}].user.client-key-data", context.context.user),
            "the client key",
        )?;
        if client_cert_pem.is_some() != client_key_pem.is_some() {
            return Err(KubeconfigError::Invalid(format!(
                "user {:?} has a client certificate without its key or a key without its certificate; give both client-certificate-data and client-key-data",
                context.context.user
            )));
        }
        let token = match (&user.token, &user.token_file) {
            (Some(token), _) if !token.is_empty() => Some(token.clone()),
            (_, Some(file)) if !file.is_empty() => Some(
                std::fs::read_to_string(file)
                    .map_err(|source| KubeconfigError::ReferencedFile {
                        what: "the token file",
                        path: PathBuf::from(file),
                        source,
                    })?
                    .trim()
                    .to_owned(),
            ),
            _ => None,
        };
        Ok(Credentials {
            context: name.to_owned(),
            server: cluster.cluster.server.trim_end_matches('/').to_owned(),
            ca_pem,
            tls_server_name: cluster
                .cluster
                .tls_server_name
                .clone()
                .filter(|s| !s.is_empty()),
            insecure_skip_tls_verify: cluster.cluster.insecure_skip_tls_verify.unwrap_or(false),
            token,
            client_cert_pem,
            client_key_pem,
            namespace: context.context.namespace.clone().filter(|n| !n.is_empty()),
        })
    }
}

/// Where credentials are looked for, in kubectl's order.
#[derive(Debug, Clone, Default)]
pub struct LoadingRules {
    /// `--kubeconfig FILE`.
    pub explicit: Option<PathBuf>,
    /// `$KUBECONFIG`, colon-separated.
    pub kubeconfig_env: Option<String>,
    /// `$HOME` (for `~/.kube/config`).
    pub home: Option<PathBuf>,
    /// ferrovirt's last resorts, in order, e.g. `/etc/ferrovirt/admin.kubeconfig` and
    /// `/var/lib/ferrovirt/admin.kubeconfig`: the first readable one is used.
    pub fallbacks: Vec<PathBuf>,
}

impl LoadingRules {
    /// The rules from this process's environment (`KUBECONFIG`, `HOME`).
    pub fn from_env(explicit: Option<PathBuf>, fallbacks: Vec<PathBuf>) -> Self {
        LoadingRules {
            explicit,
            kubeconfig_env: std::env::var("KUBECONFIG").ok().filter(|v| !v.is_empty()),
            home: std::env::var_os("HOME").map(PathBuf::from),
            fallbacks,
        }
    }

    /// The merged kubeconfig and the files it came from.
    pub fn load(&self) -> Result<(Kubeconfig, Vec<PathBuf>), KubeconfigError> {
        if let Some(path) = &self.explicit {
            return Ok((Kubeconfig::load(path)?, vec![path.clone()]));
        }
        let mut looked: Vec<PathBuf> = Vec::new();
        let candidates: Vec<PathBuf> = match &self.kubeconfig_env {
            Some(list) => list
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            None => self
                .home
                .iter()
                .map(|h| h.join(".kube").join("config"))
                .collect(),
        };
        let mut merged: Option<Kubeconfig> = None;
        let mut sources = Vec::new();
        for path in candidates {
            looked.push(path.clone());
            if !path.exists() {
                continue;
            }
            let config = Kubeconfig::load(&path)?;
            sources.push(path);
            match &mut merged {
                Some(m) => m.merge_from(config),
                None => merged = Some(config),
            }
        }
        if let Some(config) =
            merged.filter(|c| !c.contexts.is_empty() || !c.current_context.is_empty())
        {
            return Ok((config, sources));
        }
        for fallback in &self.fallbacks {
            looked.push(fallback.clone());
            if let Ok(config) = Kubeconfig::load(fallback) {
                return Ok((config, vec![fallback.clone()]));
            }
        }
        Err(KubeconfigError::NotFound {
            looked: looked
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// What a client needs to talk to the server of one context.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub context: String,
    /// The server URL without trailing slash, e.g. `https://127.0.0.1:8443`.
    pub server: String,
    pub ca_pem: Option<Vec<u8>>,
    pub tls_server_name: Option<String>,
    pub insecure_skip_tls_verify: bool,
    pub token: Option<String>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    pub namespace: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("context", &self.context)
            .field("server", &self.server)
            .field("has_ca", &self.ca_pem.is_some())
            .field("has_token", &self.token.is_some())
            .field("has_client_certificate", &self.client_cert_pem.is_some())
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Credentials {
    /// The `Authorization` header value, when the user has a token.
    pub fn authorization_header(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// The CA certificates (DER).
    pub fn ca_certificates(&self) -> Result<Vec<CertificateDer<'static>>, KubeconfigError> {
        let Some(pem) = &self.ca_pem else {
            return Ok(Vec::new());
        };
        CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| KubeconfigError::Tls(format!("certificate-authority: {e}")))
    }

    /// The client certificate chain and key (DER), when the user has one.
    #[allow(clippy::type_complexity)]
    pub fn client_identity(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, KubeconfigError>
    {
        let (Some(cert), Some(key)) = (&self.client_cert_pem, &self.client_key_pem) else {
            return Ok(None);
        };
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| KubeconfigError::Tls(format!("client-certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| KubeconfigError::Tls(format!("client-key: {e}")))?;
        Ok(Some((chain, key)))
    }

    /// A rustls client configuration: the kubeconfig's CA as the only root, and the client
    /// certificate when there is one. `insecure-skip-tls-verify` is refused.
    pub fn rustls_client_config(&self) -> Result<Arc<rustls::ClientConfig>, KubeconfigError> {
        if self.insecure_skip_tls_verify {
            return Err(KubeconfigError::Invalid(format!(
                "context {:?} sets insecure-skip-tls-verify, which ferrovirt does not do; give the cluster's certificate-authority-data instead",
                self.context
            )));
        }
        let cas = self.ca_certificates()?;
        if cas.is_empty() {
            return Err(KubeconfigError::Invalid(format!(
                "the cluster of context {:?} has no certificate-authority-data; copy it from <data-dir>/pki/ca.crt of the server",
                self.context
            )));
        }
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| KubeconfigError::Tls(format!("certificate-authority: {e}")))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(crate::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| KubeconfigError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let config = match self.client_identity()? {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| KubeconfigError::Tls(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests;
