//! `ferrovirt kubeconfig create --user NAME [--group G ...]`: on the host of `ferrovirt serve`,
//! prints a kubeconfig for another user. By default its user is a client certificate (CN = user,
//! one O per group, as Kubernetes' x509 authenticator reads it) signed by the server's CA in
//! `<data-dir>/pki`; this never creates a CA (one made here would not be the server's). With
//! `--token` the user is a new random bearer token instead, and the line to add to the server's
//! token file (kube-apiserver's `--token-auth-file` format) goes to stderr. The server URL is
//! `--server`, else the one in `<data-dir>/admin.kubeconfig`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ferrovirt_auth::kubeconfig::{AuthInfo, Kubeconfig};
use ferrovirt_auth::pki::{CLIENT_VALIDITY, CertificateAuthority};
use ferrovirt_auth::tokens::AdminToken;

use crate::connection::{DEFAULT_DATA_DIR, admin_kubeconfig};

/// `ferrovirt kubeconfig` subcommands.
#[derive(Debug, Subcommand)]
pub enum KubeconfigCommand {
    /// Print a kubeconfig for a user, with a client certificate signed by the server's CA (run
    /// on the server's host).
    Create(CreateArgs),
}

/// Arguments of `ferrovirt kubeconfig create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The user name (the certificate's common name).
    #[arg(long = "user", value_name = "NAME")]
    pub user: String,
    /// A group of the user (the certificate's organization); repeat for several.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// The data dir of `ferrovirt serve` (its CA is in <data-dir>/pki).
    #[arg(long = "data-dir", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The server URL written into the kubeconfig (default: the one of
    /// <data-dir>/admin.kubeconfig).
    #[arg(long = "server", value_name = "URL")]
    pub server: Option<String>,
    /// Give the user a new bearer token instead of a client certificate; the line to add to the
    /// server's token file is printed to stderr.
    #[arg(long = "token")]
    pub token: bool,
}

/// Runs `ferrovirt kubeconfig ...`.
pub fn run(command: &KubeconfigCommand) -> ExitCode {
    match command {
        KubeconfigCommand::Create(args) => match create(args) {
            Ok(created) => {
                print!("{}", created.kubeconfig);
                for note in &created.notes {
                    eprintln!("{note}");
                }
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
    }
}

/// A kubeconfig (YAML) and what the user must be told on stderr.
#[derive(Debug)]
pub struct Created {
    pub kubeconfig: String,
    pub notes: Vec<String>,
}

/// Makes the kubeconfig of `args`.
pub fn create(args: &CreateArgs) -> Result<Created, String> {
    let user = args.user.trim();
    if user.is_empty() {
        return Err("--user must not be empty".to_owned());
    }
    for (flag, value) in
        std::iter::once(("--user", user)).chain(args.groups.iter().map(|g| ("--group", g.as_str())))
    {
        if value.chars().any(char::is_control) {
            return Err(format!(
                "{flag} {value:?} has control characters; use a plain name"
            ));
        }
    }
    let groups: Vec<String> = args
        .groups
        .iter()
        .map(|g| g.trim().to_owned())
        .filter(|g| !g.is_empty())
        .collect();
    let pki_dir = pki_dir(&args.data_dir);
    let ca =
        CertificateAuthority::load(&pki_dir).map_err(|e| with_permission_hint(e.to_string()))?;
    let server = server_url(args)?;
    let mut notes = Vec::new();
    let auth = if args.token {
        let token = AdminToken::generate().map_err(|e| e.to_string())?;
        notes.push(format!(
            "Add this line to the server's token file (`ferrovirt serve --token-auth-file FILE`) and restart the server; the token works only after that:\n{}",
            token_file_line(token.as_str(), user, &groups)
        ));
        AuthInfo::with_token(token.as_str())
    } else {
        let issued = ca
            .issue_client_certificate(user, &groups, CLIENT_VALIDITY)
            .map_err(|e| e.to_string())?;
        AuthInfo::with_client_certificate(&issued.cert_pem, &issued.key_pem)
    };
    if is_loopback_url(&server) {
        notes.push(format!(
            "note: the server URL {server} is a loopback address, usable on this host only; for other hosts pass --server https://HOST:PORT (HOST must be in the serving certificate: `ferrovirt serve --tls-san HOST`)"
        ));
    }
    let kubeconfig = Kubeconfig::single(&server, ca.ca_pem(), user, auth)
        .to_yaml()
        .map_err(|e| e.to_string())?;
    Ok(Created { kubeconfig, notes })
}

/// `--server`, else the admin kubeconfig's server; it must be https:// (certificates and tokens
/// are for TLS).
fn server_url(args: &CreateArgs) -> Result<String, String> {
    let server = match args
        .server
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(server) => server.trim_end_matches('/').to_owned(),
        None => {
            let path = admin_kubeconfig(&args.data_dir);
            let admin = Kubeconfig::load(&path).map_err(|e| {
                with_permission_hint(format!(
                    "{e}; pass the server URL with --server https://HOST:PORT"
                ))
            })?;
            admin
                .resolve(None)
                .map_err(|e| {
                    format!(
                        "{}: {e}; pass the server URL with --server https://HOST:PORT",
                        path.display()
                    )
                })?
                .server
        }
    };
    if !server.starts_with("https://") {
        return Err(format!(
            "the server URL {server:?} is not https://; client certificates and tokens are only for the TLS API (e.g. --server https://HOST:8443)"
        ));
    }
    Ok(server)
}

fn with_permission_hint(message: String) -> String {
    if message.contains("Permission denied") || message.contains("permission denied") {
        format!(
            "{message} (the server's keys are readable by their owner only: run this as that user, e.g. with sudo)"
        )
    } else {
        message
    }
}

fn is_loopback_url(server: &str) -> bool {
    let host = server
        .split_once("://")
        .map_or(server, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// One CSV field, quoted when it must be.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) || value.trim() != value {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// `token,user,uid[,"group1,group2"]`, the line kube-apiserver's token file has per user (the
/// uid is the user name).
pub fn token_file_line(token: &str, user: &str, groups: &[String]) -> String {
    let mut fields = vec![csv_field(token), csv_field(user), csv_field(user)];
    if !groups.is_empty() {
        fields.push(format!("\"{}\"", groups.join(",").replace('"', "\"\"")));
    }
    fields.join(",")
}

/// Where `kubeconfig create` looks for the CA (for messages and tests).
pub fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_auth::tokens::StaticTokens;

    #[test]
    fn token_lines_parse_back_as_kube_apiserver_reads_them() {
        let groups = vec!["dev".to_owned(), "ops team".to_owned()];
        let line = token_file_line("abc-123_x", "alice, the admin", &groups);
        let tokens = StaticTokens::parse(&line, "tokens.csv").unwrap();
        let user = tokens.lookup("abc-123_x").unwrap();
        assert_eq!(user.name, "alice, the admin");
        assert!(user.groups.contains(&"dev".to_owned()));
        assert!(user.groups.contains(&"ops team".to_owned()));
        assert_eq!(token_file_line("t", "bob", &[]), "t,bob,bob");
    }

    #[test]
    fn loopback_servers_are_noticed() {
        assert!(is_loopback_url("https://127.0.0.1:8443"));
        assert!(is_loopback_url("https://[::1]:8443/"));
        assert!(is_loopback_url("https://localhost:8443"));
        assert!(!is_loopback_url("https://vm-host.example:8443"));
        assert!(!is_loopback_url("https://192.0.2.7:8443"));
    }
}
