//! The TPM's endorsement credentials over the API (issue 15, kubevirt#17379):
//!
//! `GET /apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachines/NAME/tpm/ek` answers
//! `{"kind": "TPMEndorsementKey", "apiVersion": "subresources.kubevirt.io/v1", "certificates":
//! [{"type": "RSA"|"ECC", "nvIndex", "pem", "sha256", "subject", "issuer", "serial", "notBefore",
//! "notAfter", "publicKeyPEM", "publicKeySHA256", "chainVerified", "chainError"}], "chain":
//! [{"role": "issuer"|"root", "pem", "sha256", "subject", "issuer", ...}]}`: the EK certificates
//! read out of the TPM's NV memory by an offline swtpm on a copy of the state (the VM may be
//! stopped or running), the public keys they certify, and the chain of the volume's local CA.
//!
//! Request attributes (for RBAC): group `subresources.kubevirt.io`, resource `virtualmachines`,
//! subresource `tpm` (the segment after the name, as kube-apiserver computes it), verb `get`; the
//! `view`, `edit` and `admin` roles grant it (a verifier needs to read it, nothing is secret).

use axum::Json;
use axum::response::{IntoResponse, Response};
use ferrovirt_vmm::ek::{CertificateInfo, EkAccessError, EkCredentials, EkKind, ek_credentials};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::ApiError;

/// `GET .../virtualmachines/NAME/tpm/ek`.
pub async fn endorsement_key(state: &AppState, namespace: &str, name: &str) -> Response {
    let plan = match crate::state_api::state_plan(state, namespace, name).await {
        Ok(plan) => plan,
        Err(e) => return e.into_response(),
    };
    let data_dir = state.data_dir.clone();
    let read = tokio::task::spawn_blocking(move || {
        let keyring = ferrovirt_keys::Keyring::for_data_dir(&data_dir).map_err(|e| {
            EkAccessError::Keys(ferrovirt_vmm::state_keys::StateKeyError::Unlock {
                vm: plan.name.clone(),
                source: Box::new(e),
            })
        })?;
        let credentials = ek_credentials(
            &plan.name,
            &plan.uuid,
            plan.tpm,
            plan.state_volume.as_deref(),
            &keyring,
        )?;
        Ok::<_, EkAccessError>((credentials, encryption(plan.state_volume.as_deref())))
    })
    .await;
    match read {
        Ok(Ok((credentials, encryption))) => {
            let mut body = body(&credentials);
            body["stateEncryption"] = encryption;
            Json(body).into_response()
        }
        Ok(Err(e @ EkAccessError::Keys(_))) => ApiError::conflict(e.to_string()).into_response(),
        Ok(Err(
            e @ (EkAccessError::NoPersistentTpm { .. } | EkAccessError::NotManufactured { .. }),
        )) => ApiError::not_found(e.to_string()).into_response(),
        Ok(Err(e)) => ApiError::internal(e.to_string()).into_response(),
        Err(e) => ApiError::internal(format!("EK read task failed: {e}")).into_response(),
    }
}

/// Whether the VM's state is encrypted at rest, and with which keys (ids only, never a key).
pub(crate) fn encryption(volume: Option<&std::path::Path>) -> Value {
    let record = volume
        .and_then(|v| ferrovirt_storage::StateVolume::open(v).ok())
        .map(|v| ferrovirt_vmm::state_keys::record_path(&v))
        .and_then(|path| ferrovirt_keys::WrappedKey::read(&path).ok().flatten());
    match record {
        Some(record) => json!({
            "encrypted": true,
            "provider": record.provider,
            "kekID": record.kek_id,
            "dataKeyID": record.data_key_id,
        }),
        None => json!({"encrypted": false}),
    }
}

fn certificate(info: &CertificateInfo) -> Value {
    json!({
        "pem": info.pem,
        "sha256": info.sha256.to_string(),
        "subject": info.subject,
        "issuer": info.issuer,
        "serial": info.serial,
        "notBefore": info.not_before,
        "notAfter": info.not_after,
        "publicKeyPEM": info.public_key_pem,
        "publicKeySHA256": info.public_key_sha256.to_string(),
    })
}

/// The response body.
pub fn body(credentials: &EkCredentials) -> Value {
    let certificates: Vec<Value> = credentials
        .certificates
        .iter()
        .map(|c| {
            let mut item = certificate(&c.certificate);
            item["type"] = json!(match c.kind {
                EkKind::Rsa => "RSA",
                EkKind::Ecc => "ECC",
            });
            item["nvIndex"] = json!(format!("0x{:08x}", c.nv_index));
            item["chainVerified"] = json!(c.chain_verification.is_ok());
            if let Err(why) = &c.chain_verification {
                item["chainError"] = json!(why);
            }
            item
        })
        .collect();
    let last = credentials.chain.len().saturating_sub(1);
    let chain: Vec<Value> = credentials
        .chain
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut item = certificate(c);
            item["role"] = json!(if i == last { "root" } else { "issuer" });
            item
        })
        .collect();
    json!({
        "kind": "TPMEndorsementKey",
        "apiVersion": "subresources.kubevirt.io/v1",
        "certificates": certificates,
        "chain": chain,
    })
}
