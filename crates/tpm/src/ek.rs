//! The TPM's endorsement credentials as an attestation verifier wants them: the EK certificates
//! (RSA and ECC) read out of the TPM's NV memory, the EK public keys they certify, the chain of the
//! local CA that issued them (`swtpm-localca/`: `issuercert.pem` signed by
//! `swtpm-localca-rootca-cert.pem`), SHA-256 fingerprints, and whether each certificate verifies
//! against that chain.
//!
//! Reading is offline: [`read_ek_credentials`] copies the state and starts a throw-away swtpm on the
//! copy (see [`crate::check`]), never on the live state, so it works for a stopped VM. The EK
//! certificate is written once at manufacture (`--lock-nvram`), so a copy taken while the VM runs
//! holds the same certificates.

use std::fs;
use std::path::{Path, PathBuf};

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::check::{EkCertificate, EkKind, Sha256Digest, StateError, read_ek_certificates};
use crate::key::StateKey;
use crate::localca::{ISSUER_CERT, ROOT_CA_CERT};

/// Why the endorsement credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EkError {
    /// The TPM state could not be read (missing, corrupt, undecryptable).
    #[error(transparent)]
    State(#[from] StateError),
    /// The TPM holds no EK certificate (manufactured without `--create-ek-cert`).
    #[error(
        "the TPM state in {state_dir} holds no EK certificate in NV index 0x01c00002 (RSA) or \
         0x01c00016 (ECC); it was not manufactured by ferrovirt or KubeVirt"
    )]
    NoCertificate {
        /// The TPM state dir.
        state_dir: PathBuf,
    },
    /// A CA file of the local CA could not be read.
    #[error("local CA certificate {path}: cannot read: {source}")]
    CaUnreadable {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A certificate is not a well-formed X.509 certificate.
    #[error("{what} is not a well-formed X.509 certificate: {reason}")]
    BadCertificate {
        /// Which certificate.
        what: String,
        /// What the parser said.
        reason: String,
    },
}

/// One certificate, ready to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// DER.
    pub der: Vec<u8>,
    /// PEM (`CERTIFICATE`).
    pub pem: String,
    /// SHA-256 of the DER: the certificate's fingerprint.
    pub sha256: Sha256Digest,
    /// Subject, RFC 4514 text (empty for an EK certificate: its identity is in the SAN).
    pub subject: String,
    /// Issuer, RFC 4514 text.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Validity start, RFC 3339-like text as x509-parser prints it.
    pub not_before: String,
    /// Validity end.
    pub not_after: String,
    /// The certified public key, PEM (`PUBLIC KEY`, SubjectPublicKeyInfo).
    pub public_key_pem: String,
    /// SHA-256 of the SubjectPublicKeyInfo DER.
    pub public_key_sha256: Sha256Digest,
}

/// An EK certificate with its place in the TPM and its verdict against the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkCredential {
    /// RSA or ECC.
    pub kind: EkKind,
    /// The NV index it was read from.
    pub nv_index: u32,
    /// The certificate.
    pub certificate: CertificateInfo,
    /// `Ok` when it verifies against [`EkCredentials::chain`] up to the self-signed root, else
    /// the first failing link.
    pub chain_verification: Result<(), String>,
}

/// Everything [`read_ek_credentials`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkCredentials {
    /// The EK certificates, RSA first.
    pub certificates: Vec<EkCredential>,
    /// The issuing chain, issuer first, root last.
    pub chain: Vec<CertificateInfo>,
}

/// Reads the EK certificates of the TPM in `state_dir` offline and the chain of the local CA in
/// `localca_dir`, and verifies each certificate against the chain.
pub fn read_ek_credentials(
    state_dir: &Path,
    localca_dir: &Path,
    state_key: Option<StateKey>,
) -> Result<EkCredentials, EkError> {
    let certificates = read_ek_certificates(state_dir, state_key)?;
    if certificates.is_empty() {
        return Err(EkError::NoCertificate {
            state_dir: state_dir.to_path_buf(),
        });
    }
    let chain = read_chain(localca_dir)?;
    describe(&certificates, chain)
}

/// The local CA's chain in `localca_dir`: the issuer (intermediate) then the root.
pub fn read_chain(localca_dir: &Path) -> Result<Vec<CertificateInfo>, EkError> {
    [ISSUER_CERT, ROOT_CA_CERT]
        .iter()
        .map(|file| {
            let path = localca_dir.join(file);
            let text = fs::read(&path).map_err(|source| EkError::CaUnreadable {
                path: path.clone(),
                source,
            })?;
            let block = pem::parse(&text).map_err(|e| EkError::BadCertificate {
                what: path.display().to_string(),
                reason: e.to_string(),
            })?;
            certificate_info(block.contents(), &path.display().to_string())
        })
        .collect()
}

/// Describes `certificates` (as read from NV) and verifies each against `chain`.
pub fn describe(
    certificates: &[EkCertificate],
    chain: Vec<CertificateInfo>,
) -> Result<EkCredentials, EkError> {
    let mut credentials = Vec::new();
    for cert in certificates {
        let what = format!("the EK certificate in NV index 0x{:08x}", cert.nv_index);
        let certificate = certificate_info(&cert.der, &what)?;
        let chain_verification = verify_chain(&cert.der, &chain);
        credentials.push(EkCredential {
            kind: cert.kind,
            nv_index: cert.nv_index,
            certificate,
            chain_verification,
        });
    }
    credentials.sort_by_key(|c| c.kind != EkKind::Rsa);
    Ok(EkCredentials {
        certificates: credentials,
        chain,
    })
}

/// Parses one DER certificate into what is shown.
pub fn certificate_info(der: &[u8], what: &str) -> Result<CertificateInfo, EkError> {
    let cert = parse(der, what)?;
    let spki = cert.public_key().raw;
    Ok(CertificateInfo {
        der: der.to_vec(),
        pem: pem_text("CERTIFICATE", der),
        sha256: Sha256Digest::of(der),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        not_before: cert.validity().not_before.to_string(),
        not_after: cert.validity().not_after.to_string(),
        public_key_pem: pem_text("PUBLIC KEY", spki),
        public_key_sha256: Sha256Digest::of(spki),
    })
}

/// PEM with Unix line endings, as openssl writes it.
fn pem_text(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn parse<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, EkError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(EkError::BadCertificate {
            what: what.to_owned(),
            reason: "trailing bytes after the certificate".to_owned(),
        }),
        Err(e) => Err(EkError::BadCertificate {
            what: what.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Verifies `leaf` against `chain` (issuer first): each signature by the next certificate's key,
/// names chained, the last one self-signed.
fn verify_chain(leaf: &[u8], chain: &[CertificateInfo]) -> Result<(), String> {
    let mut current = parse(leaf, "the EK certificate").map_err(|e| e.to_string())?;
    let mut current_name = "the EK certificate".to_owned();
    for (i, link) in chain.iter().enumerate() {
        let issuer = parse(&link.der, "a CA certificate").map_err(|e| e.to_string())?;
        let issuer_name = if i + 1 == chain.len() {
            "the local CA's root certificate"
        } else {
            "the local CA's issuer certificate"
        };
        if current.issuer() != issuer.subject() {
            return Err(format!(
                "{current_name} names issuer \"{}\", but {issuer_name} is \"{}\"",
                current.issuer(),
                issuer.subject()
            ));
        }
        current
            .verify_signature(Some(issuer.public_key()))
            .map_err(|e| format!("{current_name} is not signed by {issuer_name}: {e}"))?;
        current = issuer;
        current_name = issuer_name.to_owned();
    }
    if current.issuer() != current.subject() {
        return Err(format!(
            "the chain ends at {current_name}, which is not self-signed"
        ));
    }
    current
        .verify_signature(None)
        .map_err(|e| format!("{current_name}'s self-signature does not verify: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_what_it_was() {
        let err = certificate_info(&[0x30, 0x00], "the test blob").unwrap_err();
        assert!(err.to_string().starts_with("the test blob is not"), "{err}");
    }

    #[test]
    fn an_empty_chain_needs_a_self_signed_leaf() {
        // Without a chain the leaf itself must be a self-signed root; a parse failure says so.
        assert!(verify_chain(&[0x30, 0x00], &[]).is_err());
    }
}
