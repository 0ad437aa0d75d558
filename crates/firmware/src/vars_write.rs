//! Writing an OVMF VARS file (issue 15, "UEFI variables in Rust"): the live variables of an edk2
//! variable store, editable (set, delete) and written back as a compacted store, as edk2's own
//! reclaim does: every live variable once, in store order, state `VAR_ADDED`, 4-byte aligned, the
//! rest of the store erased (0xff). The firmware volume header, the store header and what follows
//! the store in the volume (the fault-tolerant-write working block and spare area) are kept byte
//! for byte.
//!
//! Authenticated stores keep each variable's `MonotonicCount`, `TimeStamp` and `PubKeyIndex`. A
//! variable written here with `EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS` (PK, KEK, db,
//! dbx) gets the current time as its `TimeStamp`, as an enrollment tool does, so that a later
//! authenticated update from the guest must carry a later time.
//!
//! Offline only: a VARS file must not be written while QEMU has it open.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ferrovirt_storage::atomic::{self, PRIVATE_FILE_MODE};

pub use crate::vars::StoredVariable;
use crate::vars::{
    EfiGuid, EfiVariable, StoreFormat, VarsError, VarsProblem, parse_stored_variables,
};

/// `EFI_VARIABLE_NON_VOLATILE`.
pub const ATTR_NON_VOLATILE: u32 = 0x1;
/// `EFI_VARIABLE_BOOTSERVICE_ACCESS`.
pub const ATTR_BOOTSERVICE_ACCESS: u32 = 0x2;
/// `EFI_VARIABLE_RUNTIME_ACCESS`.
pub const ATTR_RUNTIME_ACCESS: u32 = 0x4;
/// `EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS`.
pub const ATTR_TIME_BASED_AUTHENTICATED_WRITE_ACCESS: u32 = 0x20;
/// NV + BS + RT: what an ordinary variable a guest can read at runtime has.
pub const ATTR_DEFAULT: u32 = ATTR_NON_VOLATILE | ATTR_BOOTSERVICE_ACCESS | ATTR_RUNTIME_ACCESS;
/// The attributes the UEFI spec defines (bits 0-6); others are refused.
const ATTR_KNOWN: u32 = 0x7f;

const VARIABLE_START_ID: u16 = 0x55aa;
const VAR_ADDED: u8 = 0x3f;
const AUTH_HEADER_LEN: usize = 60;
const PLAIN_HEADER_LEN: usize = 32;

/// Why a change cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarsWriteError {
    /// The file could not be read or parsed.
    #[error(transparent)]
    Vars(#[from] VarsError),
    /// The variables do not fit the store.
    #[error(
        "the variable store of {path} holds {capacity} bytes of variables; these need {needed}: \
         delete variables (ferrovirt efi vars delete) or reset the VARS file to its template"
    )]
    StoreFull {
        path: PathBuf,
        needed: usize,
        capacity: usize,
    },
    /// A variable's name or attributes cannot be stored.
    #[error("variable {name}: {reason}")]
    InvalidVariable { name: String, reason: String },
    /// Writing the file failed.
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// A parsed VARS image whose variables can be changed and written back.
#[derive(Debug, Clone)]
pub struct VariableStore {
    path: PathBuf,
    image: Vec<u8>,
    format: StoreFormat,
    /// Where variable records begin and the store ends in `image`.
    records_start: usize,
    store_end: usize,
    variables: Vec<StoredVariable>,
}

impl VariableStore {
    /// Reads and parses the VARS file at `path`.
    pub fn open(path: &Path) -> Result<Self, VarsWriteError> {
        let image = std::fs::read(path).map_err(|e| VarsError {
            path: path.to_path_buf(),
            problem: if e.kind() == std::io::ErrorKind::NotFound {
                VarsProblem::Missing
            } else {
                VarsProblem::Unreadable(e.to_string())
            },
        })?;
        Self::parse(path, image)
    }

    /// Parses a VARS image (`path` names it in errors).
    pub fn parse(path: &Path, image: Vec<u8>) -> Result<Self, VarsWriteError> {
        let parsed = parse_stored_variables(&image).map_err(|problem| VarsError {
            path: path.to_path_buf(),
            problem,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            format: parsed.format,
            records_start: parsed.records_start,
            store_end: parsed.store_end,
            variables: parsed.variables,
            image,
        })
    }

    /// The live variables, in store order.
    pub fn variables(&self) -> impl Iterator<Item = &StoredVariable> {
        self.variables.iter()
    }

    /// One variable.
    pub fn get(&self, name: &str, vendor: &EfiGuid) -> Option<&StoredVariable> {
        self.variables
            .iter()
            .find(|v| v.variable.name == name && v.variable.vendor == *vendor)
    }

    /// Sets a variable (replaces its data and attributes, or adds it at the end). A
    /// time-based authenticated variable gets the current time as its timestamp.
    pub fn set(&mut self, variable: EfiVariable) -> Result<(), VarsWriteError> {
        let invalid = |reason: &str| VarsWriteError::InvalidVariable {
            name: variable.name.clone(),
            reason: reason.to_owned(),
        };
        if variable.name.is_empty() || variable.name.contains('\0') {
            return Err(invalid("a name must be non-empty and without NUL"));
        }
        if variable.attributes & !ATTR_KNOWN != 0 {
            return Err(invalid(&format!(
                "attributes {:#x} has bits the UEFI specification does not define (known: 0x7f)",
                variable.attributes
            )));
        }
        if variable.attributes & ATTR_NON_VOLATILE == 0 {
            return Err(invalid(
                "a VARS file holds only non-volatile variables: the attributes need 0x1 (NV)",
            ));
        }
        if variable.attributes & ATTR_RUNTIME_ACCESS != 0
            && variable.attributes & ATTR_BOOTSERVICE_ACCESS == 0
        {
            return Err(invalid(
                "runtime access (0x4) needs boot-service access (0x2) too",
            ));
        }
        if self.format == StoreFormat::Plain
            && variable.attributes & ATTR_TIME_BASED_AUTHENTICATED_WRITE_ACCESS != 0
        {
            return Err(invalid(
                "this VARS file has a plain (not authenticated) store and cannot hold time-based \
                 authenticated variables; use the Secure Boot firmware's VARS template",
            ));
        }
        let timestamp = if variable.attributes & ATTR_TIME_BASED_AUTHENTICATED_WRITE_ACCESS != 0 {
            efi_time_now()
        } else {
            [0; 16]
        };
        match self
            .variables
            .iter_mut()
            .find(|v| v.variable.name == variable.name && v.variable.vendor == variable.vendor)
        {
            Some(existing) => {
                existing.variable = variable;
                existing.timestamp = timestamp;
            }
            None => self.variables.push(StoredVariable {
                variable,
                monotonic_count: 0,
                timestamp,
                pubkey_index: 0,
            }),
        }
        Ok(())
    }

    /// Deletes a variable; `false` if it did not exist.
    pub fn delete(&mut self, name: &str, vendor: &EfiGuid) -> bool {
        let before = self.variables.len();
        self.variables
            .retain(|v| !(v.variable.name == name && v.variable.vendor == *vendor));
        self.variables.len() != before
    }

    /// The image with the store rewritten (compacted).
    pub fn to_bytes(&self) -> Result<Vec<u8>, VarsWriteError> {
        let mut records = Vec::new();
        for stored in &self.variables {
            self.encode(stored, &mut records);
        }
        let capacity = self.store_end - self.records_start;
        if records.len() > capacity {
            return Err(VarsWriteError::StoreFull {
                path: self.path.clone(),
                needed: records.len(),
                capacity,
            });
        }
        let mut image = self.image.clone();
        let region = &mut image[self.records_start..self.store_end];
        region.fill(0xff);
        region[..records.len()].copy_from_slice(&records);
        Ok(image)
    }

    /// Writes the store to `path` crash-safely (temp file, fsync, rename, fsync dir; 0600).
    pub fn write(&self, path: &Path) -> Result<(), VarsWriteError> {
        let bytes = self.to_bytes()?;
        atomic::write_file(path, &bytes, PRIVATE_FILE_MODE).map_err(|e| VarsWriteError::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    fn encode(&self, stored: &StoredVariable, out: &mut Vec<u8>) {
        let v = &stored.variable;
        let mut name: Vec<u8> = v.name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        name.extend_from_slice(&[0, 0]);
        let name_size = u32::try_from(name.len()).unwrap_or(u32::MAX);
        let data_size = u32::try_from(v.data.len()).unwrap_or(u32::MAX);
        let start = out.len();
        out.extend_from_slice(&VARIABLE_START_ID.to_le_bytes());
        out.push(VAR_ADDED);
        out.push(0);
        out.extend_from_slice(&v.attributes.to_le_bytes());
        match self.format {
            StoreFormat::Authenticated => {
                out.extend_from_slice(&stored.monotonic_count.to_le_bytes());
                out.extend_from_slice(&stored.timestamp);
                out.extend_from_slice(&stored.pubkey_index.to_le_bytes());
            }
            StoreFormat::Plain => {}
        }
        out.extend_from_slice(&name_size.to_le_bytes());
        out.extend_from_slice(&data_size.to_le_bytes());
        out.extend_from_slice(&v.vendor.0);
        debug_assert_eq!(
            out.len() - start,
            match self.format {
                StoreFormat::Authenticated => AUTH_HEADER_LEN,
                StoreFormat::Plain => PLAIN_HEADER_LEN,
            }
        );
        out.extend_from_slice(&name);
        out.extend_from_slice(&v.data);
        while !out.len().is_multiple_of(4) {
            out.push(0xff);
        }
    }
}

/// `EFI_CERT_X509_GUID`: a signature list of X.509 certificates (DER).
pub const EFI_CERT_X509_GUID: EfiGuid = EfiGuid::new(
    0xa5c059a1,
    0x94e4,
    0x4aa7,
    [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
);
/// PK, KEK, db and dbx as OVMF stores them: NV + BS + RT + time-based authenticated write.
pub const ATTR_SECURE_BOOT_KEYS: u32 = ATTR_DEFAULT | ATTR_TIME_BASED_AUTHENTICATED_WRITE_ACCESS;

/// One `EFI_SIGNATURE_LIST` holding one X.509 certificate (DER) owned by `owner`: what PK, KEK, db
/// and dbx hold (UEFI 2.10 section 32.4.1): SignatureType, SignatureListSize,
/// SignatureHeaderSize (0), SignatureSize, then one `EFI_SIGNATURE_DATA` (owner GUID + DER).
pub fn x509_signature_list(owner: &EfiGuid, der: &[u8]) -> Vec<u8> {
    let signature_size = 16 + der.len();
    let list_size = 28 + signature_size;
    let mut list = Vec::with_capacity(list_size);
    list.extend_from_slice(&EFI_CERT_X509_GUID.0);
    list.extend_from_slice(&u32::try_from(list_size).unwrap_or(u32::MAX).to_le_bytes());
    list.extend_from_slice(&0u32.to_le_bytes());
    list.extend_from_slice(
        &u32::try_from(signature_size)
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    list.extend_from_slice(&owner.0);
    list.extend_from_slice(der);
    list
}

/// The current time as an `EFI_TIME` (UTC: TimeZone 0, Daylight 0, no nanoseconds).
pub fn efi_time_now() -> [u8; 16] {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    efi_time(secs)
}

/// `EFI_TIME` of a Unix time: Year u16, Month, Day, Hour, Minute, Second, Pad1, Nanosecond u32,
/// TimeZone i16, Daylight, Pad2.
pub fn efi_time(unix_secs: u64) -> [u8; 16] {
    let days = i64::try_from(unix_secs / 86_400).unwrap_or(0);
    let rem = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut t = [0u8; 16];
    t[0..2].copy_from_slice(&u16::try_from(year).unwrap_or(0).to_le_bytes());
    t[2] = month as u8;
    t[3] = day as u8;
    t[4] = (rem / 3600) as u8;
    t[5] = ((rem % 3600) / 60) as u8;
    t[6] = (rem % 60) as u8;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efi_time_of_known_dates() {
        let t = efi_time(0);
        assert_eq!((u16::from_le_bytes([t[0], t[1]]), t[2], t[3]), (1970, 1, 1));
        // 2026-12-02T03:04:05Z
        let t = efi_time(1_796_180_645);
        assert_eq!(
            (
                u16::from_le_bytes([t[0], t[1]]),
                t[2],
                t[3],
                t[4],
                t[5],
                t[6]
            ),
            (2026, 12, 2, 3, 4, 5)
        );
        // 2024-02-29T23:59:59Z (leap day)
        let t = efi_time(1_709_251_199);
        assert_eq!(
            (u16::from_le_bytes([t[0], t[1]]), t[2], t[3], t[4]),
            (2024, 2, 29, 23)
        );
    }
}
