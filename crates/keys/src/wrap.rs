//! Wrapping a data key under a local key-encryption key: AES-256-GCM, nonce || ciphertext || tag.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::data_key::{DataKey, KEY_BYTES};
use crate::error::KeyError;

const AAD: &[u8] = b"ferrovirt-dek-wrap-v1";

fn cipher(kek: &DataKey) -> Option<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, kek.as_bytes())
        .ok()
        .map(LessSafeKey::new)
}

/// `dek` wrapped under `kek`.
pub(crate) fn wrap(kek: &DataKey, dek: &DataKey) -> Result<Vec<u8>, KeyError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| KeyError::Random)?;
    let mut body = dek.as_bytes().to_vec();
    cipher(kek)
        .ok_or(KeyError::Random)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(AAD),
            &mut body,
        )
        .map_err(|_| KeyError::Random)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// The data key inside `wrapped`, or `None` when `kek` did not wrap it (or it was changed).
pub(crate) fn unwrap(kek: &DataKey, wrapped: &[u8]) -> Option<DataKey> {
    if wrapped.len() != NONCE_LEN + KEY_BYTES + 16 {
        return None;
    }
    let (nonce, body) = wrapped.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    let mut buf = zeroize::Zeroizing::new(body.to_vec());
    let plain = cipher(kek)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(AAD),
            buf.as_mut_slice(),
        )
        .ok()?;
    DataKey::from_bytes(plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_round_trip_and_wrong_kek() {
        let kek = DataKey::generate().unwrap();
        let dek = DataKey::generate().unwrap();
        let wrapped = wrap(&kek, &dek).unwrap();
        assert!(!wrapped.windows(8).any(|w| w == &dek.as_bytes()[..8]));
        assert_eq!(unwrap(&kek, &wrapped).unwrap().as_bytes(), dek.as_bytes());
        let other = DataKey::generate().unwrap();
        assert!(unwrap(&other, &wrapped).is_none());
        let mut changed = wrapped.clone();
        changed[20] ^= 1;
        assert!(unwrap(&kek, &changed).is_none());
        assert!(unwrap(&kek, &wrapped[1..]).is_none());
    }
}
