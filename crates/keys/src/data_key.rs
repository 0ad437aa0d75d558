//! The per-VM data key (DEK): 256 random bits, zeroed when dropped, never printed.

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::KeyError;

/// Bytes of an AES-256 key.
pub const KEY_BYTES: usize = 32;

/// A data key (DEK): AES-256, for swtpm's `--key` and for sealed files.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; KEY_BYTES]>);

/// A short public name of a key: the first 8 bytes of SHA-256 over a label and the key, hex.
/// Says which key a file or record needs without revealing it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub String);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl DataKey {
    /// A new random key (the system's CSPRNG).
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .map_err(|_| KeyError::Random)?;
        Ok(Self(bytes))
    }

    /// A key from exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: [u8; KEY_BYTES] = bytes
            .try_into()
            .map_err(|_| KeyError::KeyLength { found: bytes.len() })?;
        Ok(Self(Zeroizing::new(array)))
    }

    /// The raw key (for swtpm and the ciphers only).
    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    /// The key's public name.
    pub fn id(&self) -> KeyId {
        key_id(b"ferrovirt-dek-id-v1", self.as_bytes())
    }
}

pub(crate) fn key_id(label: &[u8], key: &[u8]) -> KeyId {
    let digest = Sha256::new()
        .chain_update(label)
        .chain_update(key)
        .finalize();
    KeyId(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_and_debug_hides_them() {
        let a = DataKey::generate().unwrap();
        let b = DataKey::generate().unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.id(), b.id());
        let printed = format!("{a:?}");
        assert!(printed.starts_with("DataKey("), "{printed}");
        let hex: String = a.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!printed.contains(&hex[..16]));
    }

    #[test]
    fn wrong_length_is_refused() {
        assert!(matches!(
            DataKey::from_bytes(&[0u8; 16]),
            Err(KeyError::KeyLength { found: 16 })
        ));
    }
}
