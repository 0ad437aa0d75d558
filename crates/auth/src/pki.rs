//! The PKI of `ferrovirt serve`: a CA made at first start, the serving certificate it signs (its
//! subject alternative names are the loopback addresses, `localhost`, every listen address and
//! every `--tls-san`; a change of that set, a certificate close to expiry or one not signed by the
//! CA makes a new one, the CA stays), client certificates for `ferrovirt kubeconfig create`
//! (CN = user, one O per group: what Kubernetes' x509 authenticator reads), the rustls server
//! configuration that asks for (but does not require) a client certificate verified against the
//! CA, and the identity of a verified client certificate.
//!
//! Files, in the directory given (e.g. `<data-dir>/pki/`, mode 0700): `ca.crt`, `ca.key` (0600),
//! `server.crt`, `server.key` (0600), each written crash-safely. Keys are ECDSA P-256.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SigningKey,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use ferrovirt_storage::atomic::{self, AtomicError, PRIVATE_FILE_MODE};

use crate::user::UserInfo;

/// How long the CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a serving certificate is valid.
pub const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A serving certificate with less than this left is renewed at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The default validity of client certificates.
pub const CLIENT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates are valid from this long before they were made (clock skew).
const BACKDATE: Duration = Duration::from_secs(3600);

const CA_COMMON_NAME: &str = "ferrovirt-ca";
const SERVER_COMMON_NAME: &str = "ferrovirt-apiserver";

/// Why the PKI cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Io(#[from] AtomicError),
    #[error("cannot generate a key or certificate: {0}")]
    Generate(String),
    #[error("{path} is not a usable {what}: {detail}; {fix}")]
    Invalid {
        path: PathBuf,
        what: &'static str,
        detail: String,
        fix: &'static str,
    },
    #[error(
        "{present} exists but {missing} is missing; restore {missing} from a backup, or remove {present} too to make a new CA (then every kubeconfig and client certificate must be issued again)"
    )]
    CaHalfPresent { present: PathBuf, missing: PathBuf },
    #[error(
        "--tls-san {value:?} is neither an IP address nor a DNS name (letters, digits, '-', '.', a leading '*.' allowed)"
    )]
    BadSan { value: String },
    #[error(
        "no CA in {dir} (ca.crt and ca.key are missing); `ferrovirt serve` makes it at first start: pass the --data-dir of the server, or start the server once"
    )]
    NoCa { dir: PathBuf },
    #[error("client certificate user name is empty; give --user NAME")]
    EmptyUser,
    #[error("cannot build the TLS configuration: {0}")]
    Tls(String),
    #[error("the certificate is not valid X.509 DER: {0}")]
    BadCertificate(String),
}

/// The names the serving certificate is valid for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServingNames {
    pub ips: BTreeSet<IpAddr>,
    pub dns: BTreeSet<String>,
}

impl ServingNames {
    /// `127.0.0.1`, `::1`, `localhost`, each listen address (the unspecified `0.0.0.0` and `::`
    /// are skipped: name the host with `--tls-san`) and each extra SAN (IP or DNS name).
    pub fn new(
        listen: impl IntoIterator<Item = IpAddr>,
        extra: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Self, PkiError> {
        let mut names = ServingNames::default();
        names.ips.insert(IpAddr::from([127, 0, 0, 1]));
        names.ips.insert(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]));
        names.dns.insert("localhost".to_owned());
        for ip in listen {
            if !ip.is_unspecified() {
                names.ips.insert(ip);
            }
        }
        for value in extra {
            let value = value.as_ref().trim();
            if let Ok(ip) = value.parse::<IpAddr>() {
                names.ips.insert(ip);
            } else if is_dns_name(value) {
                names.dns.insert(value.to_ascii_lowercase());
            } else {
                return Err(PkiError::BadSan {
                    value: value.to_owned(),
                });
            }
        }
        Ok(names)
    }

    fn san_types(&self) -> Result<Vec<SanType>, PkiError> {
        let mut sans: Vec<SanType> = self.ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        for name in &self.dns {
            let ia5 = name.clone().try_into().map_err(|_| PkiError::BadSan {
                value: name.clone(),
            })?;
            sans.push(SanType::DnsName(ia5));
        }
        Ok(sans)
    }
}

fn is_dns_name(value: &str) -> bool {
    let body = value.strip_prefix("*.").unwrap_or(value);
    !body.is_empty()
        && body.len() <= 253
        && body.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The file names inside the PKI directory.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    pub dir: PathBuf,
}

impl PkiPaths {
    pub fn new(dir: &Path) -> Self {
        PkiPaths {
            dir: dir.to_path_buf(),
        }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

/// What [`Pki::load_or_create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PkiChanges {
    pub ca_created: bool,
    pub server_certificate_issued: bool,
}

/// The loaded PKI: the CA (with its key) and the serving certificate.
pub struct Pki {
    paths: PkiPaths,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    ca_key: KeyPair,
    server_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
    changes: PkiChanges,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.paths.dir)
            .field("changes", &self.changes)
            .finish_non_exhaustive()
    }
}

/// A client certificate and its key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

fn generate_error(e: impl std::fmt::Display) -> PkiError {
    PkiError::Generate(e.to_string())
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn read_text(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| PkiError::Invalid {
                path: path.to_path_buf(),
                what: "PEM file",
                detail: "not UTF-8 text".to_owned(),
                fix: "restore it from a backup or remove it",
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AtomicError::Io {
            operation: "read",
            path: path.to_path_buf(),
            source: e,
        }
        .into()),
    }
}

fn cert_der_from_pem(path: &Path, pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Invalid {
        path: path.to_path_buf(),
        what: "PEM certificate",
        detail: e.to_string(),
        fix: "restore it from a backup or remove it",
    })
}

fn ca_params(not_before: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before - BACKDATE;
    params.not_after = not_before + CA_VALIDITY;
    params
}

impl Pki {
    /// Loads the PKI in `dir`, creating what is missing: the CA at first start, the serving
    /// certificate when it is missing, for other names than `names`, expiring within
    /// [`RENEW_BEFORE`], not signed by the CA or not matching its key.
    pub fn load_or_create(dir: &Path, names: &ServingNames) -> Result<Self, PkiError> {
        let paths = PkiPaths::new(dir);
        atomic::create_dir_private(dir)?;
        std::fs::set_permissions(
            dir,
            std::fs::Permissions::from_mode(atomic::PRIVATE_DIR_MODE),
        )
        .map_err(|e| AtomicError::Io {
            operation: "set permissions of",
            path: dir.to_path_buf(),
            source: e,
        })?;
        let (ca_pem, ca_key, ca_created) = load_or_create_ca(&paths)?;
        let ca_der = cert_der_from_pem(&paths.ca_cert(), &ca_pem)?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, &ca_key).map_err(|e| PkiError::Invalid {
            path: paths.ca_cert(),
            what: "CA certificate",
            detail: e.to_string(),
            fix: "restore it from a backup, or remove ca.crt and ca.key to make a new CA",
        })?;
        let existing = existing_server_cert(&paths, &ca_der, names)?;
        let (server_der, server_key_der, issued) = match existing {
            Some((der, key)) => (der, key, false),
            None => {
                let key = KeyPair::generate().map_err(generate_error)?;
                let mut params = CertificateParams::default();
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, SERVER_COMMON_NAME);
                params.distinguished_name = dn;
                params.subject_alt_names = names.san_types()?;
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                params.use_authority_key_identifier_extension = true;
                let start = now();
                params.not_before = start - BACKDATE;
                params.not_after = start + SERVER_VALIDITY;
                let cert = params.signed_by(&key, &issuer).map_err(generate_error)?;
                // Key first: a crash before the certificate is written leaves a key that does
                // not match the old certificate, which the next start detects and replaces.
                atomic::write_file(
                    &paths.server_key(),
                    key.serialize_pem().as_bytes(),
                    PRIVATE_FILE_MODE,
                )?;
                atomic::write_file(&paths.server_cert(), cert.pem().as_bytes(), 0o644)?;
                (cert.der().clone(), key.serialize_der(), true)
            }
        };
        Ok(Pki {
            paths,
            ca_pem,
            ca_der,
            ca_key,
            server_der,
            server_key_der,
            changes: PkiChanges {
                ca_created,
                server_certificate_issued: issued,
            },
        })
    }

    /// The CA certificate, PEM (what kubeconfigs carry as `certificate-authority-data`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The serving certificate, DER.
    pub fn server_der(&self) -> &CertificateDer<'static> {
        &self.server_der
    }

    /// The file paths.
    pub fn paths(&self) -> &PkiPaths {
        &self.paths
    }

    /// What this start created.
    pub fn changes(&self) -> PkiChanges {
        self.changes
    }

    /// A rustls server configuration serving the certificate and verifying client certificates
    /// against the CA when a client sends one (clients without one may still use a bearer token).
    /// No ALPN protocols are set: add `h2`/`http/1.1` to `alpn_protocols` to match the server.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, PkiError> {
        let provider = crate::crypto_provider();
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| PkiError::Tls(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server_der.clone()], key)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        Ok(Arc::new(config))
    }

    /// Issues a client certificate for `user` in `groups` (CN = user, one O per group), valid
    /// for `valid_for`, signed by the CA.
    pub fn issue_client_certificate(
        &self,
        user: &str,
        groups: &[String],
        valid_for: Duration,
    ) -> Result<ClientCertificate, PkiError> {
        issue_client_certificate(&self.ca_der, &self.ca_key, user, groups, valid_for)
    }
}

/// The CA alone, loaded from an existing PKI directory without creating or changing anything:
/// what `ferrovirt kubeconfig create` signs client certificates with on the server's host.
pub struct CertificateAuthority {
    paths: PkiPaths,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    ca_key: KeyPair,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("dir", &self.paths.dir)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads `ca.crt` and `ca.key` from `dir`; [`PkiError::NoCa`] when there is no CA yet (this
    /// never makes one: a CA made here would not be the one the server trusts).
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let paths = PkiPaths::new(dir);
        let (ca_pem, ca_key) = load_existing_ca(&paths)?.ok_or_else(|| PkiError::NoCa {
            dir: dir.to_path_buf(),
        })?;
        let ca_der = cert_der_from_pem(&paths.ca_cert(), &ca_pem)?;
        Ok(CertificateAuthority {
            paths,
            ca_pem,
            ca_der,
            ca_key,
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// As [`Pki::issue_client_certificate`].
    pub fn issue_client_certificate(
        &self,
        user: &str,
        groups: &[String],
        valid_for: Duration,
    ) -> Result<ClientCertificate, PkiError> {
        issue_client_certificate(&self.ca_der, &self.ca_key, user, groups, valid_for)
    }
}

fn issue_client_certificate(
    ca_der: &CertificateDer<'static>,
    ca_key: &KeyPair,
    user: &str,
    groups: &[String],
    valid_for: Duration,
) -> Result<ClientCertificate, PkiError> {
    if user.trim().is_empty() {
        return Err(PkiError::EmptyUser);
    }
    let key = KeyPair::generate().map_err(generate_error)?;
    let start = now();
    let der = client_certificate_der(
        ca_der,
        ca_key,
        &key,
        user,
        groups,
        start - BACKDATE,
        start + valid_for,
    )?;
    let cert_pem = pem_encode("CERTIFICATE", &der);
    Ok(ClientCertificate {
        cert_pem,
        key_pem: key.serialize_pem(),
    })
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The CA when both files are there; `None` when ca.crt is missing (ca.key may be there).
fn load_existing_ca(paths: &PkiPaths) -> Result<Option<(String, KeyPair)>, PkiError> {
    let cert_pem = read_text(&paths.ca_cert())?;
    let key_pem = read_text(&paths.ca_key())?;
    match (cert_pem, key_pem) {
        (Some(cert), Some(key)) => {
            let key = KeyPair::from_pem(&key).map_err(|e| bad_ca_key(paths, e.to_string()))?;
            let der = cert_der_from_pem(&paths.ca_cert(), &cert)?;
            let spki = parse_cert(&der)
                .map_err(|e| PkiError::Invalid {
                    path: paths.ca_cert(),
                    what: "CA certificate",
                    detail: e.to_string(),
                    fix: "restore it from a backup, or remove ca.crt and ca.key to make a new CA",
                })?
                .public_key()
                .raw
                .to_vec();
            if spki != key.subject_public_key_info() {
                return Err(bad_ca_key(paths, "it is not the key of ca.crt".to_owned()));
            }
            Ok(Some((cert, key)))
        }
        (Some(_), None) => Err(PkiError::CaHalfPresent {
            present: paths.ca_cert(),
            missing: paths.ca_key(),
        }),
        (None, _) => Ok(None),
    }
}

fn bad_ca_key(paths: &PkiPaths, detail: String) -> PkiError {
    PkiError::Invalid {
        path: paths.ca_key(),
        what: "CA key",
        detail,
        fix: "restore it from a backup, or remove ca.crt and ca.key to make a new CA",
    }
}

fn load_or_create_ca(paths: &PkiPaths) -> Result<(String, KeyPair, bool), PkiError> {
    if let Some((cert, key)) = load_existing_ca(paths)? {
        return Ok((cert, key, false));
    }
    // A key without a certificate is what a crash between the two writes leaves: no
    // certificate was ever signed with it, so it gets its certificate now.
    let key = match read_text(&paths.ca_key())? {
        Some(pem) => KeyPair::from_pem(&pem).map_err(|e| bad_ca_key(paths, e.to_string()))?,
        None => {
            let key = KeyPair::generate().map_err(generate_error)?;
            atomic::write_file(
                &paths.ca_key(),
                key.serialize_pem().as_bytes(),
                PRIVATE_FILE_MODE,
            )?;
            key
        }
    };
    let cert = ca_params(now()).self_signed(&key).map_err(generate_error)?;
    let pem = cert.pem();
    atomic::write_file(&paths.ca_cert(), pem.as_bytes(), 0o644)?;
    Ok((pem, key, true))
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| PkiError::BadCertificate(e.to_string()))
}

/// The existing serving certificate and key (PKCS#8 DER), when they are still right.
fn existing_server_cert(
    paths: &PkiPaths,
    ca_der: &CertificateDer<'static>,
    names: &ServingNames,
) -> Result<Option<(CertificateDer<'static>, Vec<u8>)>, PkiError> {
    let (Some(cert_pem), Some(key_pem)) = (
        read_text(&paths.server_cert())?,
        read_text(&paths.server_key())?,
    ) else {
        return Ok(None);
    };
    let Ok(der) = cert_der_from_pem(&paths.server_cert(), &cert_pem) else {
        return Ok(None);
    };
    let Ok(key) = KeyPair::from_pem(&key_pem) else {
        return Ok(None);
    };
    let ca = parse_cert(ca_der)?;
    let Ok(cert) = parse_cert(&der) else {
        return Ok(None);
    };
    let signed_by_ca = cert.verify_signature(Some(ca.public_key())).is_ok();
    let key_matches = cert.public_key().raw == key.subject_public_key_info().as_slice();
    let remaining = cert.validity().not_after.timestamp() - now().unix_timestamp();
    let fresh = remaining > RENEW_BEFORE.as_secs() as i64;
    let same_names = certificate_names(&cert) == *names;
    if signed_by_ca && key_matches && fresh && same_names {
        let der = der.clone().into_owned();
        Ok(Some((der, key.serialize_der())))
    } else {
        Ok(None)
    }
}

fn certificate_names(cert: &X509Certificate<'_>) -> ServingNames {
    let mut names = ServingNames::default();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => {
                    names.dns.insert((*dns).to_owned());
                }
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        names.ips.insert(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        names.ips.insert(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    names
}

/// Reads the SANs of a serving certificate (for tests and diagnostics).
pub fn serving_names_of(der: &[u8]) -> Result<ServingNames, PkiError> {
    Ok(certificate_names(&parse_cert(der)?))
}

// OIDs for the client certificate.
const OID_ECDSA_WITH_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
const OID_COMMON_NAME: &[u64] = &[2, 5, 4, 3];
const OID_ORGANIZATION: &[u64] = &[2, 5, 4, 10];
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
const OID_AUTHORITY_KEY_ID: &[u64] = &[2, 5, 29, 35];
const OID_CLIENT_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 2];

fn write_time(writer: yasna::DERWriter<'_>, at: OffsetDateTime) {
    // RFC 5280: UTCTime through 2049, GeneralizedTime from 2050.
    if at.year() < 2050 {
        writer.write_utctime(&yasna::models::UTCTime::from_datetime(at));
    } else {
        writer.write_generalized_time(&yasna::models::GeneralizedTime::from_datetime(at));
    }
}

fn write_extension(writer: yasna::DERWriter<'_>, oid: &[u64], critical: bool, value: &[u8]) {
    writer.write_sequence(|w| {
        w.next()
            .write_oid(&yasna::models::ObjectIdentifier::from_slice(oid));
        if critical {
            w.next().write_bool(true);
        }
        w.next().write_bytes(value);
    });
}

/// A client certificate's DER, built field by field: rcgen keeps one value per attribute type in
/// a subject, and Kubernetes needs one O per group.
fn client_certificate_der(
    ca_der: &CertificateDer<'static>,
    ca_key: &KeyPair,
    key: &KeyPair,
    user: &str,
    groups: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Vec<u8>, PkiError> {
    if ca_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(PkiError::Generate(
            "the CA key is not ECDSA P-256, which client certificates are signed with".to_owned(),
        ));
    }
    // DER times have whole seconds.
    let whole_seconds = |at: OffsetDateTime| {
        OffsetDateTime::from_unix_timestamp(at.unix_timestamp()).map_err(generate_error)
    };
    let (not_before, not_after) = (whole_seconds(not_before)?, whole_seconds(not_after)?);
    let ca = parse_cert(ca_der)?;
    let issuer = ca.subject().as_raw().to_vec();
    let authority_key_id = ca
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(generate_error)?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    let spki = key.subject_public_key_info();
    let signature_algorithm = |w: yasna::DERWriter<'_>| {
        w.write_sequence(|w| {
            w.next()
                .write_oid(&yasna::models::ObjectIdentifier::from_slice(
                    OID_ECDSA_WITH_SHA256,
                ));
        })
    };
    let name_attribute = |w: yasna::DERWriter<'_>, oid: &[u64], value: &str| {
        w.write_set(|w| {
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(oid));
                w.next().write_utf8_string(value);
            })
        })
    };
    let basic_constraints = yasna::construct_der(|w| w.write_sequence(|_| {}));
    let key_usage = yasna::construct_der(|w| w.write_bitvec_bytes(&[0x80], 1));
    let ext_key_usage = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next()
                .write_oid(&yasna::models::ObjectIdentifier::from_slice(
                    OID_CLIENT_AUTH,
                ));
        })
    });
    let authority = authority_key_id.map(|id| {
        yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next()
                    .write_tagged_implicit(yasna::Tag::context(0), |w| w.write_bytes(&id));
            })
        })
    });
    let tbs = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next()
                .write_tagged(yasna::Tag::context(0), |w| w.write_u8(2));
            w.next().write_bigint_bytes(&serial, true);
            signature_algorithm(w.next());
            w.next().write_der(&issuer);
            w.next().write_sequence(|w| {
                write_time(w.next(), not_before);
                write_time(w.next(), not_after);
            });
            w.next().write_sequence(|w| {
                for group in groups {
                    name_attribute(w.next(), OID_ORGANIZATION, group);
                }
                name_attribute(w.next(), OID_COMMON_NAME, user);
            });
            w.next().write_der(&spki);
            w.next().write_tagged(yasna::Tag::context(3), |w| {
                w.write_sequence(|w| {
                    write_extension(w.next(), OID_BASIC_CONSTRAINTS, true, &basic_constraints);
                    write_extension(w.next(), OID_KEY_USAGE, true, &key_usage);
                    write_extension(w.next(), OID_EXT_KEY_USAGE, false, &ext_key_usage);
                    if let Some(authority) = &authority {
                        write_extension(w.next(), OID_AUTHORITY_KEY_ID, false, authority);
                    }
                })
            });
        })
    });
    let signature = ca_key.sign(&tbs).map_err(generate_error)?;
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_der(&tbs);
            signature_algorithm(w.next());
            w.next().write_bitvec_bytes(&signature, signature.len() * 8);
        })
    }))
}

/// The identity in a client certificate, as Kubernetes' x509 authenticator reads it: the user is
/// the subject's common name, the groups its organizations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

impl CertIdentity {
    /// The identity in a certificate (DER). `Ok(None)` when the subject has no common name
    /// (Kubernetes then tries the other authenticators). Only call this for certificates the TLS
    /// layer verified against the CA.
    pub fn from_der(der: &[u8]) -> Result<Option<Self>, PkiError> {
        let cert = parse_cert(der)?;
        let subject = cert.subject();
        let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| {
            attr.as_str()
                .map(str::to_owned)
                .map_err(|e| PkiError::BadCertificate(e.to_string()))
        };
        // Go keeps the last common name and every organization, in order.
        let user = match subject.iter_common_name().last() {
            Some(cn) => text(cn)?,
            None => return Ok(None),
        };
        if user.is_empty() {
            return Ok(None);
        }
        let groups = subject
            .iter_organization()
            .map(text)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(CertIdentity { user, groups }))
    }

    /// The identity of a TLS peer whose chain rustls verified (`ServerConnection::peer_certificates`).
    /// `None` without a certificate or without a usable common name.
    pub fn from_peer(certificates: Option<&[CertificateDer<'_>]>) -> Option<Self> {
        let leaf = certificates?.first()?;
        Self::from_der(leaf).ok().flatten()
    }

    /// The user: CN, O groups plus `system:authenticated`.
    pub fn user_info(&self) -> UserInfo {
        UserInfo::authenticated(self.user.clone(), "", self.groups.clone())
    }
}

#[cfg(test)]
mod tests;
