//! Upload tokens, as CDI's `UploadTokenRequest` hands them out: a short-lived token that lets
//! its bearer upload into one PVC of one namespace, and nothing else. CDI signs a JWT with the
//! upload proxy's key; here the token is `base64url(claims).base64url(HMAC-SHA256(claims))`
//! under a key made at each start of the server (tokens do not outlive it), valid for
//! [`TOKEN_LIFETIME_SECONDS`] (CDI's five minutes) to start an upload.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// How long a token may start an upload (CDI: 5 minutes).
pub const TOKEN_LIFETIME_SECONDS: i64 = 5 * 60;

/// What a token allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadClaims {
    pub namespace: String,
    pub pvc: String,
    /// Unix seconds after which the token starts nothing.
    pub expires: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadTokenError {
    #[error("the upload token is malformed")]
    Malformed,
    #[error("the upload token's signature is not this server's")]
    BadSignature,
    #[error("the upload token has expired; ask for a new one (create an UploadTokenRequest)")]
    Expired,
    #[error("cannot make an upload token key: {0}")]
    Key(String),
}

/// Issues and verifies upload tokens.
pub struct UploadTokenSigner {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for UploadTokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UploadTokenSigner")
    }
}

impl UploadTokenSigner {
    /// A signer with a fresh random key.
    pub fn random() -> Result<Self, UploadTokenError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| UploadTokenError::Key(e.to_string()))?;
        Ok(Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
        })
    }

    /// A signer whose tokens verify nowhere (a random key thrown away after use).
    pub fn unusable() -> Self {
        let secret: Vec<u8> = format!("{:?}", std::time::Instant::now()).into_bytes();
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
        }
    }

    /// A token for uploading into `namespace/pvc`, valid from `now` for the token lifetime.
    pub fn issue(&self, namespace: &str, pvc: &str, now: i64) -> String {
        let claims = UploadClaims {
            namespace: namespace.to_owned(),
            pvc: pvc.to_owned(),
            expires: now + TOKEN_LIFETIME_SECONDS,
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let tag = ring::hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The claims of a token this signer issued that has not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<UploadClaims, UploadTokenError> {
        let (payload, tag) = token.split_once('.').ok_or(UploadTokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| UploadTokenError::Malformed)?;
        ring::hmac::verify(&self.key, payload.as_bytes(), &tag)
            .map_err(|_| UploadTokenError::BadSignature)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| UploadTokenError::Malformed)?;
        let claims: UploadClaims =
            serde_json::from_slice(&bytes).map_err(|_| UploadTokenError::Malformed)?;
        if now > claims.expires {
            return Err(UploadTokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_key_pvc_and_time() {
        let signer = UploadTokenSigner::random().unwrap();
        let token = signer.issue("default", "disk", 1000);
        let claims = signer.verify(&token, 1001).unwrap();
        assert_eq!(
            (claims.namespace.as_str(), claims.pvc.as_str()),
            ("default", "disk")
        );
        assert_eq!(
            signer.verify(&token, 1000 + TOKEN_LIFETIME_SECONDS + 1),
            Err(UploadTokenError::Expired)
        );
        let other = UploadTokenSigner::random().unwrap();
        assert_eq!(
            other.verify(&token, 1001),
            Err(UploadTokenError::BadSignature)
        );
        // A changed claim breaks the signature.
        let (payload, tag) = token.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&UploadClaims {
                namespace: "default".into(),
                pvc: "other".into(),
                expires: i64::MAX,
            })
            .unwrap(),
        );
        assert_ne!(forged, payload);
        assert_eq!(
            signer.verify(&format!("{forged}.{tag}"), 1001),
            Err(UploadTokenError::BadSignature)
        );
        assert_eq!(signer.verify("junk", 0), Err(UploadTokenError::Malformed));
    }
}
