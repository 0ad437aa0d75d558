//! Microsoft's 2023 Secure Boot certificates (the 2011 CAs expire in 2026), shipped as data with
//! their provenance (`certs/microsoft-2023/README.md`: PyPI virt-firmware 26.10), and their
//! enrollment into a variable store: appended to KEK and db, each in its own
//! `EFI_SIGNATURE_LIST` owned by Microsoft's GUID, the 2011 certificates kept (what
//! `virt-fw-vars --add-kek/--add-db` and Microsoft's own KEK/db updates do).

use crate::vars::{
    EFI_GLOBAL_VARIABLE_GUID, EFI_IMAGE_SECURITY_DATABASE_GUID, EfiGuid, EfiVariable,
};
use crate::vars_write::{
    ATTR_SECURE_BOOT_KEYS, VariableStore, VarsWriteError, x509_signature_list,
};

/// Microsoft's signature owner GUID.
pub const MICROSOFT_OWNER: &str = "77fa9abd-0359-4d32-bd60-28f4e78f784b";

/// One shipped certificate.
#[derive(Debug, Clone, Copy)]
pub struct Certificate {
    /// `KEK` or `db`.
    pub variable: &'static str,
    /// Its file under `certs/microsoft-2023/`.
    pub file: &'static str,
    /// Its subject's common name.
    pub common_name: &'static str,
    /// The certificate, DER.
    pub der: &'static [u8],
}

/// The four certificates.
pub const CERTIFICATES: [Certificate; 4] = [
    Certificate {
        variable: "KEK",
        file: "ms-kek-2023.der",
        common_name: "Microsoft Corporation KEK 2K CA 2023",
        der: include_bytes!("../certs/microsoft-2023/ms-kek-2023.der"),
    },
    Certificate {
        variable: "db",
        file: "windows-2023.der",
        common_name: "Windows UEFI CA 2023",
        der: include_bytes!("../certs/microsoft-2023/windows-2023.der"),
    },
    Certificate {
        variable: "db",
        file: "ms-uefi-2023.der",
        common_name: "Microsoft UEFI CA 2023",
        der: include_bytes!("../certs/microsoft-2023/ms-uefi-2023.der"),
    },
    Certificate {
        variable: "db",
        file: "ms-uefi-rom-2023.der",
        common_name: "Microsoft Option ROM UEFI CA 2023",
        der: include_bytes!("../certs/microsoft-2023/ms-uefi-rom-2023.der"),
    },
];

/// Appends the certificates a store's KEK and db do not hold yet; returns the common names
/// added (empty: nothing to do).
pub fn enroll(store: &mut VariableStore) -> Result<Vec<&'static str>, VarsWriteError> {
    let owner = EfiGuid::parse(MICROSOFT_OWNER).unwrap_or(EFI_GLOBAL_VARIABLE_GUID);
    let mut added = Vec::new();
    for (variable, vendor) in [
        ("KEK", EFI_GLOBAL_VARIABLE_GUID),
        ("db", EFI_IMAGE_SECURITY_DATABASE_GUID),
    ] {
        let current = store.get(variable, &vendor).map(|v| v.variable.clone());
        let mut data = current.as_ref().map(|v| v.data.clone()).unwrap_or_default();
        let before = data.len();
        for cert in CERTIFICATES.iter().filter(|c| c.variable == variable) {
            if data.windows(cert.der.len()).any(|w| w == cert.der) {
                continue;
            }
            data.extend(x509_signature_list(&owner, cert.der));
            added.push(cert.common_name);
        }
        if data.len() != before {
            store.set(EfiVariable {
                name: variable.to_owned(),
                vendor,
                attributes: current.map_or(ATTR_SECURE_BOOT_KEYS, |v| v.attributes),
                data,
            })?;
        }
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrolled_after_the_2011_ones_once() {
        let template = std::path::Path::new("/usr/share/OVMF/OVMF_VARS_4M.ms.fd");
        let mut store = VariableStore::open(template).unwrap();
        let old_kek = store
            .get("KEK", &EFI_GLOBAL_VARIABLE_GUID)
            .unwrap()
            .variable
            .clone();
        let added = enroll(&mut store).unwrap();
        assert_eq!(added.len(), 4, "{added:?}");
        let kek = &store
            .get("KEK", &EFI_GLOBAL_VARIABLE_GUID)
            .unwrap()
            .variable;
        assert!(
            kek.data.starts_with(&old_kek.data),
            "the 2011 KEK stays first"
        );
        assert_eq!(kek.attributes, old_kek.attributes);
        let db = &store
            .get("db", &EFI_IMAGE_SECURITY_DATABASE_GUID)
            .unwrap()
            .variable;
        for cert in &CERTIFICATES[1..] {
            assert!(db.data.windows(cert.der.len()).any(|w| w == cert.der));
        }
        // The store still encodes (fits) and a second enroll adds nothing.
        store.to_bytes().unwrap();
        assert!(enroll(&mut store).unwrap().is_empty());
    }

    #[test]
    fn microsoft_2023_certificates_are_the_shipped_ones() {
        use sha2::{Digest, Sha256};
        use x509_parser::prelude::*;
        let fingerprints = [
            "3cd3f0309edae228767a976dd40d9f4affc4fbd5218f2e8cc3c9dd97e8ac6f9d",
            "076f1fea90ac29155ebf77c17682f75f1fdd1be196da302dc8461e350a9ae330",
            "f6124e34125bee3fe6d79a574eaa7b91c0e7bd9d929c1a321178efd611dad901",
            "e5be3e64c6e66a281457ecdece0d6d0787577aad2a3a0144262c10c14ba8d8f1",
        ];
        for (cert, fingerprint) in CERTIFICATES.iter().zip(fingerprints) {
            let digest: String = Sha256::digest(cert.der)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(digest, fingerprint, "{}", cert.file);
            let (_, parsed) = X509Certificate::from_der(cert.der).unwrap();
            let subject = parsed
                .subject()
                .iter_common_name()
                .next()
                .and_then(|c| c.as_str().ok())
                .unwrap();
            assert_eq!(subject, cert.common_name, "{}", cert.file);
            assert!(
                parsed.issuer().to_string().contains("Microsoft"),
                "{}",
                cert.file
            );
            assert!(
                parsed.validity().not_before.timestamp() > 1_672_531_200,
                "{}",
                cert.file
            );
            assert!(
                parsed.validity().not_after.timestamp() > 2_000_000_000,
                "{}",
                cert.file
            );
        }
    }
}
