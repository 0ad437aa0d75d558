//! The HTTP(S) side of an import: a blocking ureq agent on rustls whose roots are the
//! `certConfigMap`'s `ca.pem` when there is one (then the only CA trusted for that URL), else the
//! system's CA bundle ([`SYSTEM_CA_BUNDLE`], Debian's `ca-certificates`, as CDI's importer uses
//! the system's pool), basic authentication from `secretRef`, `extraHeaders` and
//! `secretExtraHeaders` as header lines.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::ImportError;

/// What to fetch and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    pub url: String,
    /// `(name, value)` pairs, from `extraHeaders` and `secretExtraHeaders`.
    pub headers: Vec<(String, String)>,
    /// `(accessKeyId, secretKey)` from `secretRef`.
    pub basic_auth: Option<(String, String)>,
    /// PEM certificates (the certConfigMap's `ca.pem`).
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_skip_verify: bool,
}

/// Splits a header line `Name: value`.
pub fn parse_header_line(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split_once(':')?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    Some((name.to_owned(), value.trim().to_owned()))
}

/// The system's CA certificates (Debian's `ca-certificates`), trusted for an https source
/// without a `certConfigMap`.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The certificates of a PEM text; `what` names it in errors.
fn pem_certificates(pem: &[u8], what: &str) -> Result<Vec<Certificate<'static>>, ImportError> {
    let mut roots = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => {
                roots.push(Certificate::from_der(cert.der()).to_owned())
            }
            Ok(_) => {}
            Err(e) => {
                return Err(ImportError::Source(format!("{what} cannot be read: {e}")));
            }
        }
    }
    if roots.is_empty() {
        return Err(ImportError::Source(format!("{what} holds no certificate")));
    }
    Ok(roots)
}

/// The roots an https source is verified against: the certConfigMap's, else the system's.
/// ureq's own default (webpki-roots) is not built in and must never be reached: it panics.
fn root_certs(
    request: &HttpRequest,
    system_bundle: &std::path::Path,
) -> Result<RootCerts, ImportError> {
    let roots = match &request.ca_pem {
        Some(pem) => pem_certificates(pem, "the certConfigMap's ca.pem")?,
        None => {
            let pem = std::fs::read(system_bundle).map_err(|e| {
                ImportError::Source(format!(
                    "{}: no certConfigMap names a CA for this https URL and the system's CA \
                     certificates cannot be read from {} ({e}); give spec.source.http.certConfigMap \
                     or install ca-certificates",
                    request.url,
                    system_bundle.display()
                ))
            })?;
            pem_certificates(
                &pem,
                &format!("the system's CA bundle {}", system_bundle.display()),
            )?
        }
    };
    Ok(RootCerts::new_with_certs(&roots))
}

fn tls_config(request: &HttpRequest) -> Result<TlsConfig, ImportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut builder = TlsConfig::builder().unversioned_rustls_crypto_provider(provider);
    if request.insecure_skip_verify {
        builder = builder.disable_verification(true);
    }
    if !request.insecure_skip_verify {
        // Also for an http:// URL: it may redirect to https.
        let roots = match root_certs(request, std::path::Path::new(SYSTEM_CA_BUNDLE)) {
            Ok(roots) => roots,
            // Without the system's bundle, an http:// URL still works; a redirect to https
            // then fails verification (nothing trusted) instead of reaching ureq's default.
            Err(_) if request.ca_pem.is_none() && !request.url.starts_with("https:") => {
                RootCerts::new_with_certs(&[])
            }
            Err(e) => return Err(e),
        };
        builder = builder.root_certs(roots);
    }
    Ok(builder.build())
}

/// An open download: the body and its length when the server said it.
pub struct Download {
    pub body: Box<dyn Read + Send>,
    pub length: Option<u64>,
}

/// Opens `request.url` (GET).
pub fn open(request: &HttpRequest) -> Result<Download, ImportError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls_config(request)?)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(300)))
        .http_status_as_error(false)
        .max_redirects(5)
        .build()
        .into();
    let mut call = agent.get(&request.url);
    for (name, value) in &request.headers {
        call = call.header(name.as_str(), value.as_str());
    }
    if let Some((user, password)) = &request.basic_auth {
        call = call.header("Authorization", basic_auth(user, password));
    }
    let response = call
        .call()
        .map_err(|e| ImportError::Source(format!("GET {}: {e}", request.url)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(ImportError::Source(format!(
            "GET {}: the server answered {status}",
            request.url
        )));
    }
    let length = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = response
        .into_body()
        .into_with_config()
        .limit(u64::MAX)
        .reader();
    Ok(Download {
        body: Box::new(body),
        length,
    })
}

fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener that accepts TCP connections and closes them: the TLS handshake fails.
    fn closing_listener() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(4) {
                drop(stream);
            }
        });
        port
    }

    #[test]
    fn https_without_a_ca_uses_the_system_bundle_and_fails_cleanly() {
        // Once panicked inside ureq ("WebPki is disabled"): no roots were configured.
        let port = closing_listener();
        let request = HttpRequest {
            url: format!("https://127.0.0.1:{port}/disk.img"),
            ..HttpRequest::default()
        };
        let error = open(&request)
            .err()
            .expect("a closed connection is an error");
        assert!(error.to_string().contains(&request.url), "{error}");
        // Without a readable bundle: the message says what to do.
        let missing = root_certs(&request, std::path::Path::new("/nonexistent/ca.crt"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            missing.contains("certConfigMap") && missing.contains("ca-certificates"),
            "{missing}"
        );
        // A ca.pem without certificates is refused with its name.
        let request = HttpRequest {
            ca_pem: Some(b"not a certificate".to_vec()),
            ..request
        };
        let refused = tls_config(&request).err().unwrap().to_string();
        assert!(refused.contains("ca.pem"), "{refused}");
    }

    #[test]
    fn header_lines_and_basic_auth() {
        assert_eq!(
            parse_header_line("X-Auth: abc: def"),
            Some(("X-Auth".into(), "abc: def".into()))
        );
        assert_eq!(parse_header_line("no colon"), None);
        assert_eq!(parse_header_line(": v"), None);
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_auth("a", "b"), "Basic YTpi");
    }
}
