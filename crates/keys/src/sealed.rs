//! The format of a sealed file (the UEFI variable store at rest): authenticated encryption with
//! AES-256-GCM under the VM's data key.
//!
//! ```text
//! 0   8   magic "FVSEALD1"
//! 8   8   the data key's id (first 8 bytes of its SHA-256 name, see `DataKey::id`)
//! 16  12  nonce (random, new for every seal)
//! 28  ..  ciphertext, then the 16-byte GCM tag
//! ```
//!
//! The associated data is the 16-byte header and the file's purpose (e.g. `uefi-vars`), so a
//! sealed file cannot be passed off as another kind of file, and any changed byte (header,
//! nonce, ciphertext or tag) makes [`open`] refuse it.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::data_key::DataKey;

/// The magic at the start of every sealed file.
pub const MAGIC: &[u8; 8] = b"FVSEALD1";
const ID_LEN: usize = 8;
const HEADER_LEN: usize = MAGIC.len() + ID_LEN;
const TAG_LEN: usize = 16;
/// Bytes a sealed file has beyond its plain content.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// Why a sealed file could not be opened (or sealed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// Not a sealed file at all (no magic): a plain file, or something else.
    #[error("not a sealed file (no FVSEALD1 header)")]
    NotSealed,
    /// The file is shorter than a header, nonce and tag.
    #[error("truncated sealed file ({len} bytes)")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// Sealed with another data key.
    #[error("sealed with data key {found}, not with this VM's data key {expected}")]
    OtherKey {
        /// The key id in the file.
        found: String,
        /// The id of the key tried.
        expected: String,
    },
    /// Authentication failed: the file was changed (or its purpose is another).
    #[error("authentication failed: the sealed file was changed or damaged")]
    Tampered,
    /// The cipher could not be set up or the random source failed.
    #[error("the cipher failed")]
    Cipher,
}

/// Whether `bytes` start like a sealed file.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

fn cipher(key: &DataKey) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&AES_256_GCM, key.as_bytes())
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Cipher)
}

fn raw_id(key: &DataKey) -> [u8; ID_LEN] {
    let mut id = [0u8; ID_LEN];
    let hex = key.id().0;
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    id
}

fn aad(header: &[u8], purpose: &str) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(purpose.as_bytes());
    aad
}

/// Seals `plain` for `purpose` under `key` (a fresh random nonce every time).
pub fn seal(key: &DataKey, purpose: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| SealError::Cipher)?;
    let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&raw_id(key));
    out.extend_from_slice(&nonce);
    let aad = aad(&out[..HEADER_LEN], purpose);
    let mut body = plain.to_vec();
    cipher(key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut body,
        )
        .map_err(|_| SealError::Cipher)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens a sealed file: its plain content, or why not (never a partial or unauthenticated one).
pub fn open(key: &DataKey, purpose: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if !is_sealed(sealed) {
        return Err(SealError::NotSealed);
    }
    if sealed.len() < OVERHEAD {
        return Err(SealError::Truncated { len: sealed.len() });
    }
    let (header, rest) = sealed.split_at(HEADER_LEN);
    let id = &header[MAGIC.len()..];
    if id != raw_id(key) {
        return Err(SealError::OtherKey {
            found: id.iter().map(|b| format!("{b:02x}")).collect(),
            expected: key.id().0,
        });
    }
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Tampered)?;
    let mut buf = Zeroizing::new(body.to_vec());
    let plain_len = cipher(key)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(header, purpose)),
            buf.as_mut_slice(),
        )
        .map_err(|_| SealError::Tampered)?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_plaintext() {
        let key = DataKey::generate().unwrap();
        let plain = b"BootOrder BootOrder BootOrder".repeat(10);
        let sealed = seal(&key, "uefi-vars", &plain).unwrap();
        assert_eq!(sealed.len(), plain.len() + OVERHEAD);
        assert!(!sealed.windows(9).any(|w| w == b"BootOrder"));
        assert_eq!(open(&key, "uefi-vars", &sealed).unwrap().as_slice(), plain);
        // A fresh nonce each time.
        assert_ne!(seal(&key, "uefi-vars", &plain).unwrap(), sealed);
    }

    #[test]
    fn every_changed_byte_is_refused() {
        let key = DataKey::generate().unwrap();
        let sealed = seal(&key, "uefi-vars", b"some variables").unwrap();
        for i in 0..sealed.len() {
            let mut changed = sealed.clone();
            changed[i] ^= 0x01;
            assert!(open(&key, "uefi-vars", &changed).is_err(), "byte {i}");
        }
        assert_eq!(
            open(&key, "other-purpose", &sealed).unwrap_err(),
            SealError::Tampered
        );
        assert_eq!(
            open(&key, "uefi-vars", &sealed[..20]).unwrap_err(),
            SealError::Truncated { len: 20 }
        );
        assert_eq!(
            open(&key, "uefi-vars", b"plain VARS file").unwrap_err(),
            SealError::NotSealed
        );
    }

    #[test]
    fn another_key_is_named() {
        let key = DataKey::generate().unwrap();
        let other = DataKey::generate().unwrap();
        let sealed = seal(&key, "uefi-vars", b"x").unwrap();
        match open(&other, "uefi-vars", &sealed) {
            Err(SealError::OtherKey { found, expected }) => {
                assert_eq!(found, key.id().0);
                assert_eq!(expected, other.id().0);
            }
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        #[test]
        fn open_never_panics(buf in proptest::collection::vec(0u8..=255, 0..80)) {
            let key = DataKey::from_bytes(&[7u8; 32]).unwrap();
            let mut input = MAGIC.to_vec();
            input.extend_from_slice(&buf);
            let _ = open(&key, "p", &input);
            let _ = open(&key, "p", &buf);
        }
    }
}
