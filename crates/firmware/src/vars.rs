//! OVMF VARS files: structural checks, crash-safe preparation from a template, and reading the
//! UEFI variables stored in them.
//!
//! Layout (edk2 PI spec `EFI_FIRMWARE_VOLUME_HEADER`, MdeModulePkg `VariableFormat.h`):
//!
//! ```text
//! 0x00  ZeroVector[16]
//! 0x10  FileSystemGuid = EFI_SYSTEM_NV_DATA_FV_GUID fff12b8d-7696-4c8b-a985-2747075b4f50
//! 0x20  FvLength u64
//! 0x28  Signature "_FVH"
//! 0x2c  Attributes u32, 0x30 HeaderLength u16, 0x32 Checksum u16 (all u16 words of the header sum
//!       to 0), 0x34 ExtHeaderOffset u16, 0x36 Reserved u8, 0x37 Revision u8, 0x38 BlockMap[]
//! HeaderLength: VARIABLE_STORE_HEADER { Signature GUID (authenticated
//!       aaf32c78-947b-439a-a180-2e144ec37792 or plain ddcf3616-3275-4164-98b6-fe85707ffe7d),
//!       Size u32, Format u8 (0x5a formatted), State u8 (0xfe healthy), Reserved u16, Reserved1 u32 }
//! then variables, each 4-byte aligned, starting with StartId 0x55AA.
//! ```
//!
//! An OVMF 4M VARS file is 540,672 bytes (FvLength 0x84000: variable store, fault-tolerant-write
//! working block and spare). Variables are little-endian; names are NUL-terminated UTF-16LE.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ferrovirt_storage::atomic::{self, PRIVATE_FILE_MODE};

/// Size of an OVMF 4M VARS file.
pub const OVMF_4M_VARS_SIZE: u64 = 540_672;

const FV_SIGNATURE: &[u8; 4] = b"_FVH";
const FV_SIGNATURE_OFFSET: usize = 0x28;
const FV_GUID_OFFSET: usize = 0x10;
const FV_LENGTH_OFFSET: usize = 0x20;
const FV_HEADER_LENGTH_OFFSET: usize = 0x30;
/// Fixed part of the FV header plus one block-map entry and the terminating entry.
const FV_MIN_HEADER_LEN: usize = 0x38 + 16;
const STORE_HEADER_LEN: usize = 28;
const VARIABLE_STORE_FORMATTED: u8 = 0x5a;
const VARIABLE_STORE_HEALTHY: u8 = 0xfe;
const VARIABLE_START_ID: u16 = 0x55aa;
const VAR_ADDED: u8 = 0x3f;
const VAR_IN_DELETED_TRANSITION: u8 = 0xfe;
/// The state edk2 gives a record once its header is written, before its name and data.
const VAR_HEADER_VALID_ONLY: u8 = 0x7f;
const AUTH_VARIABLE_HEADER_LEN: usize = 60;
const PLAIN_VARIABLE_HEADER_LEN: usize = 32;

/// A UEFI GUID (stored in the mixed-endian EFI byte order).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EfiGuid(pub [u8; 16]);

impl EfiGuid {
    /// Builds a GUID from its textual fields, e.g. `(0xfff12b8d, 0x7696, 0x4c8b, [0xa9, ...])`.
    pub const fn new(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        EfiGuid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// Parses the textual form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.split('-').collect();
        let [a, b, c, d, e] = parts.as_slice() else {
            return None;
        };
        if [a.len(), b.len(), c.len(), d.len(), e.len()] != [8, 4, 4, 4, 12]
            || !text.chars().all(|ch| ch == '-' || ch.is_ascii_hexdigit())
        {
            return None;
        }
        let d1 = u32::from_str_radix(a, 16).ok()?;
        let d2 = u16::from_str_radix(b, 16).ok()?;
        let d3 = u16::from_str_radix(c, 16).ok()?;
        let tail = format!("{d}{e}");
        let mut d4 = [0u8; 8];
        for (i, byte) in d4.iter_mut().enumerate() {
            *byte = u8::from_str_radix(tail.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self::new(d1, d2, d3, d4))
    }

    fn read(bytes: &[u8], offset: usize) -> Option<Self> {
        let slice = bytes.get(offset..offset.checked_add(16)?)?;
        let mut g = [0u8; 16];
        g.copy_from_slice(slice);
        Some(EfiGuid(g))
    }
}

impl fmt::Display for EfiGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]]),
            g[8],
            g[9],
            g[10],
            g[11],
            g[12],
            g[13],
            g[14],
            g[15]
        )
    }
}

impl fmt::Debug for EfiGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EfiGuid({self})")
    }
}

/// `EFI_SYSTEM_NV_DATA_FV_GUID`: the firmware volume holding the variable store.
pub const EFI_SYSTEM_NV_DATA_FV_GUID: EfiGuid = EfiGuid::new(
    0xfff12b8d,
    0x7696,
    0x4c8b,
    [0xa9, 0x85, 0x27, 0x47, 0x07, 0x5b, 0x4f, 0x50],
);
/// `gEfiAuthenticatedVariableGuid`: store of authenticated variables (OVMF with Secure Boot support).
pub const EFI_AUTHENTICATED_VARIABLE_GUID: EfiGuid = EfiGuid::new(
    0xaaf32c78,
    0x947b,
    0x439a,
    [0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77, 0x92],
);
/// `gEfiVariableGuid`: store of plain variables.
pub const EFI_VARIABLE_GUID: EfiGuid = EfiGuid::new(
    0xddcf3616,
    0x3275,
    0x4164,
    [0x98, 0xb6, 0xfe, 0x85, 0x70, 0x7f, 0xfe, 0x7d],
);
/// `EFI_GLOBAL_VARIABLE` (PK, KEK, Boot####, SecureBoot, ...).
pub const EFI_GLOBAL_VARIABLE_GUID: EfiGuid = EfiGuid::new(
    0x8be4df61,
    0x93ca,
    0x11d2,
    [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
);
/// `EFI_IMAGE_SECURITY_DATABASE_GUID` (db, dbx).
pub const EFI_IMAGE_SECURITY_DATABASE_GUID: EfiGuid = EfiGuid::new(
    0xd719b2cb,
    0x3d3a,
    0x4596,
    [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
);

/// Which variable header format the store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFormat {
    Authenticated,
    Plain,
}

/// What a successful check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarsInfo {
    pub path: PathBuf,
    pub size: u64,
    pub fv_length: u64,
    pub fv_header_length: u16,
    pub store_format: StoreFormat,
    /// Size of the variable store (including its header).
    pub store_size: u32,
    /// Number of live (not deleted) variables.
    pub variable_count: usize,
    /// Bytes of the store used by variable records (live and deleted).
    pub store_used: usize,
}

/// One UEFI variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfiVariable {
    pub name: String,
    pub vendor: EfiGuid,
    pub attributes: u32,
    pub data: Vec<u8>,
}

/// A variable as the store keeps it: the variable and its authentication fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVariable {
    pub variable: EfiVariable,
    /// `MonotonicCount` (authenticated stores).
    pub monotonic_count: u64,
    /// `TimeStamp`, an `EFI_TIME` (authenticated stores).
    pub timestamp: [u8; 16],
    /// `PubKeyIndex` (authenticated stores).
    pub pubkey_index: u32,
}

/// What is wrong with a VARS file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarsProblem {
    #[error("the file does not exist")]
    Missing,
    #[error("cannot read it: {0}")]
    Unreadable(String),
    #[error("it is {size} bytes but the template {template} is {template_size} bytes")]
    SizeMismatch {
        size: u64,
        template: PathBuf,
        template_size: u64,
    },
    #[error("it is only {size} bytes, too small for a firmware volume header")]
    TooSmall { size: u64 },
    #[error("it is all zero bytes (never written, or wiped)")]
    AllZero,
    #[error("no firmware volume signature \"_FVH\" at offset 0x28 (found {found:02x?})")]
    NotFirmwareVolume { found: Vec<u8> },
    #[error(
        "the firmware volume is {found}, not the NV data volume (EFI_SYSTEM_NV_DATA_FV_GUID \
         fff12b8d-7696-4c8b-a985-2747075b4f50)"
    )]
    WrongVolumeGuid { found: EfiGuid },
    #[error("firmware volume header length {length} is invalid")]
    BadHeaderLength { length: u16 },
    #[error("firmware volume header checksum is wrong (words sum to {sum:#06x}, not 0)")]
    BadHeaderChecksum { sum: u16 },
    #[error("firmware volume length {fv_length} exceeds the file size {size}")]
    FvLengthTooLarge { fv_length: u64, size: u64 },
    #[error(
        "unknown variable store signature {found} at offset {offset:#x} (expected the \
         authenticated aaf32c78-947b-439a-a180-2e144ec37792 or plain ddcf3616-3275-4164-98b6-fe85707ffe7d)"
    )]
    UnknownVariableStore { found: EfiGuid, offset: usize },
    #[error("variable store is not formatted (format byte {format:#04x}, expected 0x5a)")]
    StoreNotFormatted { format: u8 },
    #[error("variable store is not healthy (state byte {state:#04x}, expected 0xfe)")]
    StoreUnhealthy { state: u8 },
    #[error(
        "variable store size {store_size} does not fit in the firmware volume ({fv_length} bytes)"
    )]
    StoreSizeInvalid { store_size: u32, fv_length: u64 },
    #[error("variable record at offset {offset:#x} is damaged: {detail}")]
    DamagedVariable { offset: usize, detail: String },
    #[error("the template itself is unusable: {0}")]
    Template(Box<VarsProblem>),
}

impl VarsProblem {
    /// How to fix it.
    pub fn fix(&self) -> &'static str {
        match self {
            VarsProblem::Template(_) => {
                "reinstall the Debian package `ovmf` (apt-get install --reinstall ovmf), which ships \
                 the VARS templates in /usr/share/OVMF"
            }
            VarsProblem::Missing => {
                "create it from the firmware's VARS template (prepare_vars), or roll back to a \
                 previous state generation of this VM"
            }
            _ => {
                "roll back to a previous state generation of this VM (its VARS file is kept before \
                 every start); if its UEFI variables may be lost, delete the file so a fresh copy \
                 of the template is made"
            }
        }
    }
}

/// A VARS file that fails a check: the file, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OVMF VARS file {path} is unusable: {problem}; how to fix: {}", problem.fix())]
pub struct VarsError {
    pub path: PathBuf,
    pub problem: VarsProblem,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

/// The parsed structure of a VARS image.
struct Parsed {
    fv_length: u64,
    header_length: u16,
    store_format: StoreFormat,
    store_size: u32,
    variables: Vec<StoredVariable>,
    store_used: usize,
    records_start: usize,
    store_end: usize,
}

/// What [`crate::vars_write::VariableStore`] needs of a parsed image.
pub(crate) struct StoredParse {
    pub format: StoreFormat,
    pub records_start: usize,
    pub store_end: usize,
    pub variables: Vec<StoredVariable>,
}

/// Parses an image keeping each variable's authentication fields (for rewriting it).
pub(crate) fn parse_stored_variables(bytes: &[u8]) -> Result<StoredParse, VarsProblem> {
    let parsed = parse_image(bytes)?;
    Ok(StoredParse {
        format: parsed.store_format,
        records_start: parsed.records_start,
        store_end: parsed.store_end,
        variables: parsed.variables,
    })
}

fn parse_image(bytes: &[u8]) -> Result<Parsed, VarsProblem> {
    let size = bytes.len() as u64;
    if bytes.len() < FV_MIN_HEADER_LEN {
        if !bytes.is_empty() && bytes.iter().all(|b| *b == 0) {
            return Err(VarsProblem::AllZero);
        }
        return Err(VarsProblem::TooSmall { size });
    }
    let sig = &bytes[FV_SIGNATURE_OFFSET..FV_SIGNATURE_OFFSET + 4];
    if sig != FV_SIGNATURE {
        if bytes.iter().all(|b| *b == 0) {
            return Err(VarsProblem::AllZero);
        }
        return Err(VarsProblem::NotFirmwareVolume {
            found: sig.to_vec(),
        });
    }
    let fv_guid = EfiGuid::read(bytes, FV_GUID_OFFSET).ok_or(VarsProblem::TooSmall { size })?;
    if fv_guid != EFI_SYSTEM_NV_DATA_FV_GUID {
        return Err(VarsProblem::WrongVolumeGuid { found: fv_guid });
    }
    let header_length =
        u16_at(bytes, FV_HEADER_LENGTH_OFFSET).ok_or(VarsProblem::TooSmall { size })?;
    let hl = usize::from(header_length);
    if hl < FV_MIN_HEADER_LEN || hl % 2 != 0 || hl + STORE_HEADER_LEN > bytes.len() {
        return Err(VarsProblem::BadHeaderLength {
            length: header_length,
        });
    }
    let sum = bytes[..hl].chunks_exact(2).fold(0u16, |acc, w| {
        acc.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    if sum != 0 {
        return Err(VarsProblem::BadHeaderChecksum { sum });
    }
    let fv_length = u64_at(bytes, FV_LENGTH_OFFSET).ok_or(VarsProblem::TooSmall { size })?;
    if fv_length > size {
        return Err(VarsProblem::FvLengthTooLarge { fv_length, size });
    }
    let store_guid = EfiGuid::read(bytes, hl).ok_or(VarsProblem::TooSmall { size })?;
    let store_format = if store_guid == EFI_AUTHENTICATED_VARIABLE_GUID {
        StoreFormat::Authenticated
    } else if store_guid == EFI_VARIABLE_GUID {
        StoreFormat::Plain
    } else {
        return Err(VarsProblem::UnknownVariableStore {
            found: store_guid,
            offset: hl,
        });
    };
    let store_size = u32_at(bytes, hl + 16).ok_or(VarsProblem::TooSmall { size })?;
    let format = bytes[hl + 20];
    let state = bytes[hl + 21];
    if format != VARIABLE_STORE_FORMATTED {
        return Err(VarsProblem::StoreNotFormatted { format });
    }
    if state != VARIABLE_STORE_HEALTHY {
        return Err(VarsProblem::StoreUnhealthy { state });
    }
    let store_end = hl
        .checked_add(store_size as usize)
        .filter(|end| (*end as u64) <= fv_length && store_size as usize >= STORE_HEADER_LEN)
        .ok_or(VarsProblem::StoreSizeInvalid {
            store_size,
            fv_length,
        })?;
    let (variables, used_end) =
        parse_variables(bytes, hl + STORE_HEADER_LEN, store_end, store_format)?;
    Ok(Parsed {
        fv_length,
        header_length,
        store_format,
        store_size,
        variables,
        store_used: used_end.saturating_sub(hl + STORE_HEADER_LEN),
        records_start: align4(hl + STORE_HEADER_LEN).unwrap_or(hl + STORE_HEADER_LEN),
        store_end,
    })
}

fn parse_variables(
    bytes: &[u8],
    start: usize,
    store_end: usize,
    format: StoreFormat,
) -> Result<(Vec<StoredVariable>, usize), VarsProblem> {
    let header_len = match format {
        StoreFormat::Authenticated => AUTH_VARIABLE_HEADER_LEN,
        StoreFormat::Plain => PLAIN_VARIABLE_HEADER_LEN,
    };
    // (variable, state) in store order.
    let mut found: Vec<(StoredVariable, u8)> = Vec::new();
    let mut offset = align4(start).unwrap_or(start);
    while let Some(header_end) = offset.checked_add(header_len).filter(|e| *e <= store_end) {
        if u16_at(bytes, offset) != Some(VARIABLE_START_ID) {
            break;
        }
        let damaged = |detail: String| VarsProblem::DamagedVariable { offset, detail };
        let state = bytes[offset + 2];
        let attributes = u32_at(bytes, offset + 4).unwrap_or(0);
        let (name_size, data_size, guid_off) = match format {
            StoreFormat::Authenticated => (
                u32_at(bytes, offset + 36),
                u32_at(bytes, offset + 40),
                offset + 44,
            ),
            StoreFormat::Plain => (
                u32_at(bytes, offset + 8),
                u32_at(bytes, offset + 12),
                offset + 16,
            ),
        };
        let (Some(name_size), Some(data_size)) = (name_size, data_size) else {
            return Err(damaged("truncated header".into()));
        };
        // A write cut off while edk2 programmed this header (power lost, QEMU killed): edk2 writes
        // the header with its state still erased (0xff), then the state "header valid only",
        // then name and data, then "added". A header not yet added with a field still erased
        // (all ones) counts as a record with no name and no data, as edk2's NameSizeOfVariable
        // and DataSizeOfVariable count it; it is not a variable, and edk2 reclaims it at its
        // next start. (A record already added with such a field is damage.)
        let erased_field = state == 0xff
            || attributes == u32::MAX
            || name_size == u32::MAX
            || data_size == u32::MAX;
        let cut_off = erased_field && matches!(state, 0xff | VAR_HEADER_VALID_ONLY);
        let (name_size, data_size) = if cut_off {
            (0, 0)
        } else {
            (name_size, data_size)
        };
        let vendor =
            EfiGuid::read(bytes, guid_off).ok_or_else(|| damaged("truncated header".into()))?;
        let name_end = header_end
            .checked_add(name_size as usize)
            .filter(|e| *e <= store_end)
            .ok_or_else(|| damaged(format!("name size {name_size} runs past the store")))?;
        let data_end = name_end
            .checked_add(data_size as usize)
            .filter(|e| *e <= store_end)
            .ok_or_else(|| damaged(format!("data size {data_size} runs past the store")))?;
        let is_live =
            !cut_off && (state == VAR_ADDED || state == (VAR_ADDED & VAR_IN_DELETED_TRANSITION));
        if is_live {
            if name_size % 2 != 0 {
                return Err(damaged(format!("odd name size {name_size}")));
            }
            let units: Vec<u16> = bytes[header_end..name_end]
                .chunks_exact(2)
                .map(|w| u16::from_le_bytes([w[0], w[1]]))
                .take_while(|u| *u != 0)
                .collect();
            let name = String::from_utf16(&units)
                .map_err(|_| damaged("name is not valid UTF-16".into()))?;
            let (monotonic_count, timestamp, pubkey_index) = match format {
                StoreFormat::Authenticated => (
                    u64_at(bytes, offset + 8).unwrap_or(0),
                    bytes
                        .get(offset + 16..offset + 32)
                        .and_then(|t| <[u8; 16]>::try_from(t).ok())
                        .unwrap_or([0; 16]),
                    u32_at(bytes, offset + 32).unwrap_or(0),
                ),
                StoreFormat::Plain => (0, [0; 16], 0),
            };
            found.push((
                StoredVariable {
                    variable: EfiVariable {
                        name,
                        vendor,
                        attributes,
                        data: bytes[name_end..data_end].to_vec(),
                    },
                    monotonic_count,
                    timestamp,
                    pubkey_index,
                },
                state,
            ));
        }
        match align4(data_end) {
            Some(next) if next > offset => offset = next,
            _ => break,
        }
    }
    // A variable "in deleted transition" counts only when no fully added copy exists (edk2 rule).
    let fully_added: Vec<(String, EfiGuid)> = found
        .iter()
        .filter(|(_, s)| *s == VAR_ADDED)
        .map(|(v, _)| (v.variable.name.clone(), v.variable.vendor))
        .collect();
    let variables = found
        .into_iter()
        .filter(|(v, s)| {
            *s == VAR_ADDED
                || !fully_added
                    .iter()
                    .any(|(n, g)| *n == v.variable.name && *g == v.variable.vendor)
        })
        .map(|(v, _)| v)
        .collect();
    Ok((variables, offset))
}

fn read_image(path: &Path) -> Result<Vec<u8>, VarsError> {
    fs::read(path).map_err(|e| VarsError {
        path: path.to_path_buf(),
        problem: if e.kind() == io::ErrorKind::NotFound {
            VarsProblem::Missing
        } else {
            VarsProblem::Unreadable(e.to_string())
        },
    })
}

fn info_from(path: &Path, size: u64, parsed: &Parsed) -> VarsInfo {
    VarsInfo {
        path: path.to_path_buf(),
        size,
        fv_length: parsed.fv_length,
        fv_header_length: parsed.header_length,
        store_format: parsed.store_format,
        store_size: parsed.store_size,
        variable_count: parsed.variables.len(),
        store_used: parsed.store_used,
    }
}

/// Checks the VARS image in `bytes` (named `path` in errors); with `expected_size`, also its size.
pub fn check_vars_bytes(
    path: &Path,
    bytes: &[u8],
    expected_size: Option<(u64, &Path)>,
) -> Result<VarsInfo, VarsError> {
    let err = |problem| VarsError {
        path: path.to_path_buf(),
        problem,
    };
    let size = bytes.len() as u64;
    if let Some((template_size, template)) = expected_size
        && size != template_size
    {
        return Err(err(VarsProblem::SizeMismatch {
            size,
            template: template.to_path_buf(),
            template_size,
        }));
    }
    let parsed = parse_image(bytes).map_err(err)?;
    Ok(info_from(path, size, &parsed))
}

/// Checks a VM's VARS file against the firmware's template: exists, same size as the template,
/// valid firmware volume header and variable store, undamaged variable records.
pub fn check_vars(path: &Path, template: &Path) -> Result<VarsInfo, VarsError> {
    let template_size = fs::metadata(template)
        .map_err(|e| VarsError {
            path: path.to_path_buf(),
            problem: VarsProblem::Template(Box::new(if e.kind() == io::ErrorKind::NotFound {
                VarsProblem::Missing
            } else {
                VarsProblem::Unreadable(format!("{}: {e}", template.display()))
            })),
        })?
        .len();
    let bytes = read_image(path)?;
    check_vars_bytes(path, &bytes, Some((template_size, template)))
}

/// Live variables of a VARS file, in store order.
pub fn list_variables(path: &Path) -> Result<Vec<EfiVariable>, VarsError> {
    let bytes = read_image(path)?;
    list_variables_bytes(path, &bytes)
}

/// Live variables of a VARS image in memory (`path` names it in errors).
pub fn list_variables_bytes(path: &Path, bytes: &[u8]) -> Result<Vec<EfiVariable>, VarsError> {
    parse_image(bytes)
        .map(|p| p.variables.into_iter().map(|v| v.variable).collect())
        .map_err(|problem| VarsError {
            path: path.to_path_buf(),
            problem,
        })
}

/// Errors of [`prepare_vars`].
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Vars(#[from] VarsError),
    #[error("cannot copy the VARS template: {0}")]
    Copy(#[from] atomic::AtomicError),
}

/// Crash-safely copies the VARS `template` to `dest` (mode 0600) after checking the template,
/// then checks the copy.
pub fn prepare_vars(template: &Path, dest: &Path) -> Result<VarsInfo, PrepareError> {
    let bytes = read_image(template).map_err(|e| VarsError {
        path: template.to_path_buf(),
        problem: VarsProblem::Template(Box::new(e.problem)),
    })?;
    check_vars_bytes(template, &bytes, None).map_err(|e| VarsError {
        path: template.to_path_buf(),
        problem: VarsProblem::Template(Box::new(e.problem)),
    })?;
    atomic::write_file(dest, &bytes, PRIVATE_FILE_MODE)?;
    Ok(check_vars(dest, template)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trips() {
        let text = EFI_GLOBAL_VARIABLE_GUID.to_string();
        assert_eq!(EfiGuid::parse(&text), Some(EFI_GLOBAL_VARIABLE_GUID));
        assert_eq!(
            EfiGuid::parse(&text.to_uppercase()),
            Some(EFI_GLOBAL_VARIABLE_GUID)
        );
        assert_eq!(EfiGuid::parse("8be4df61-93ca-11d2-aa0d-00e098032b8"), None);
        assert_eq!(EfiGuid::parse("8be4df61+93ca-11d2-aa0d-00e098032b8c"), None);
    }
    use proptest::prelude::*;
    use std::os::unix::fs::PermissionsExt;

    const PLAIN: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
    const MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

    fn real(path: &str) -> Vec<u8> {
        fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (install the Debian package ovmf)"))
    }

    fn problem_of(bytes: &[u8]) -> VarsProblem {
        check_vars_bytes(Path::new("/t/vm_VARS.fd"), bytes, None)
            .unwrap_err()
            .problem
    }

    #[test]
    fn guid_display_matches_text_form() {
        assert_eq!(
            EFI_SYSTEM_NV_DATA_FV_GUID.to_string(),
            "fff12b8d-7696-4c8b-a985-2747075b4f50"
        );
        assert_eq!(
            EFI_AUTHENTICATED_VARIABLE_GUID.to_string(),
            "aaf32c78-947b-439a-a180-2e144ec37792"
        );
        assert_eq!(
            EFI_GLOBAL_VARIABLE_GUID.to_string(),
            "8be4df61-93ca-11d2-aa0d-00e098032b8c"
        );
    }

    #[test]
    fn real_templates_pass() {
        for path in [PLAIN, MS] {
            let info = check_vars(Path::new(path), Path::new(path)).unwrap();
            assert_eq!(info.size, OVMF_4M_VARS_SIZE);
            assert_eq!(info.fv_length, OVMF_4M_VARS_SIZE);
            assert_eq!(info.fv_header_length, 0x48);
            assert_eq!(info.store_format, StoreFormat::Authenticated);
            assert_eq!(info.store_size, 0x3ffb8);
        }
        assert_eq!(
            check_vars(Path::new(PLAIN), Path::new(PLAIN))
                .unwrap()
                .variable_count,
            0
        );
    }

    #[test]
    fn ms_template_has_secure_boot_keys() {
        let vars = list_variables(Path::new(MS)).unwrap();
        let has =
            |name: &str, guid: EfiGuid| vars.iter().any(|v| v.name == name && v.vendor == guid);
        assert!(has("PK", EFI_GLOBAL_VARIABLE_GUID), "{vars:?}");
        assert!(has("KEK", EFI_GLOBAL_VARIABLE_GUID));
        assert!(has("db", EFI_IMAGE_SECURITY_DATABASE_GUID));
        assert!(has("dbx", EFI_IMAGE_SECURITY_DATABASE_GUID));
        // The deleted CustomMode record at the start of the store is not listed.
        let db = vars.iter().find(|v| v.name == "db").unwrap();
        assert!(db.data.len() > 1000, "db holds Microsoft certificates");
        // NV + BS + RT + time-based authenticated write access.
        assert_eq!(db.attributes, 0x27);
    }

    #[test]
    fn truncated_file_is_size_mismatch() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vm_VARS.fd");
        let bytes = real(PLAIN);
        fs::write(&path, &bytes[..100_000]).unwrap();
        let err = check_vars(&path, Path::new(PLAIN)).unwrap_err();
        assert_eq!(
            err.problem,
            VarsProblem::SizeMismatch {
                size: 100_000,
                template: PLAIN.into(),
                template_size: OVMF_4M_VARS_SIZE
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string())
                && msg.contains("roll back to a previous state generation"),
            "{msg}"
        );
        // Tiny file without a template to compare against.
        assert_eq!(problem_of(&bytes[..20]), VarsProblem::TooSmall { size: 20 });
    }

    #[test]
    fn flipped_header_bytes_are_specific_errors() {
        let good = real(PLAIN);
        let mut b = good.clone();
        b[0x28] ^= 0xff;
        assert!(matches!(
            problem_of(&b),
            VarsProblem::NotFirmwareVolume { .. }
        ));
        let mut b = good.clone();
        b[0x10] ^= 0x01;
        assert!(matches!(
            problem_of(&b),
            VarsProblem::WrongVolumeGuid { .. }
        ));
        let mut b = good.clone();
        b[0x2c] ^= 0x01; // attributes: checksum no longer matches
        assert!(matches!(
            problem_of(&b),
            VarsProblem::BadHeaderChecksum { .. }
        ));
        let mut b = good.clone();
        b[0x48] ^= 0x01; // variable store GUID
        assert!(matches!(
            problem_of(&b),
            VarsProblem::UnknownVariableStore { offset: 0x48, .. }
        ));
        let mut b = good.clone();
        b[0x48 + 20] = 0xff;
        assert_eq!(
            problem_of(&b),
            VarsProblem::StoreNotFormatted { format: 0xff }
        );
        let mut b = good.clone();
        b[0x48 + 21] = 0xff;
        assert_eq!(problem_of(&b), VarsProblem::StoreUnhealthy { state: 0xff });
        let mut b = good;
        b[0x48 + 16..0x48 + 20].copy_from_slice(&0x0010_0000u32.to_le_bytes());
        assert!(matches!(
            problem_of(&b),
            VarsProblem::StoreSizeInvalid { .. }
        ));
    }

    #[test]
    fn damaged_variable_record_is_reported() {
        let mut b = real(MS);
        // Second record (the live "certdb") at 0xb8: name size field at +36 made huge.
        assert_eq!(u16_at(&b, 0xb8), Some(VARIABLE_START_ID));
        b[0xb8 + 36..0xb8 + 40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            problem_of(&b),
            VarsProblem::DamagedVariable { offset: 0xb8, .. }
        ));
    }

    #[test]
    fn a_header_cut_off_while_edk2_wrote_it_is_not_damage() {
        let good = real(MS);
        let before = list_variables_bytes(Path::new("f"), &good).unwrap();
        let end = parse_image(&good).unwrap();
        let at = end.records_start + end.store_used;
        assert_eq!(
            u16_at(&good, at),
            Some(0xffff),
            "the free area starts erased"
        );
        // edk2's step 1 cut off: the start id and attributes written, state and sizes still
        // erased (what a crash matrix run left in a VM's VARS after QEMU was killed).
        let mut torn = good.clone();
        torn[at..at + 2].copy_from_slice(&VARIABLE_START_ID.to_le_bytes());
        torn[at + 4..at + 8].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(list_variables_bytes(Path::new("f"), &torn).unwrap(), before);
        // Step 2 done (header valid only), the name size cut off: the same.
        torn[at + 2] = VAR_HEADER_VALID_ONLY;
        assert_eq!(list_variables_bytes(Path::new("f"), &torn).unwrap(), before);
        check_vars_bytes(Path::new("f"), &torn, None).unwrap();
        // A record already added with an erased size is damage.
        torn[at + 2] = VAR_ADDED;
        assert!(matches!(
            problem_of(&torn),
            VarsProblem::DamagedVariable { .. }
        ));
    }

    #[test]
    fn zero_filled_file_is_all_zero() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vm_VARS.fd");
        fs::write(&path, vec![0u8; OVMF_4M_VARS_SIZE as usize]).unwrap();
        let err = check_vars(&path, Path::new(PLAIN)).unwrap_err();
        assert_eq!(err.problem, VarsProblem::AllZero);
        assert!(err.to_string().contains("all zero bytes"));
    }

    #[test]
    fn missing_file_and_missing_template() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("vm_VARS.fd");
        let err = check_vars(&missing, Path::new(PLAIN)).unwrap_err();
        assert_eq!(err.problem, VarsProblem::Missing);
        assert!(err.to_string().contains("prepare_vars"));
        let err = check_vars(Path::new(PLAIN), &tmp.path().join("nope.fd")).unwrap_err();
        assert!(matches!(err.problem, VarsProblem::Template(_)));
        assert!(err.to_string().contains("reinstall"), "{err}");
    }

    #[test]
    fn prepare_vars_copies_template_crash_safely() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("vm_VARS.fd");
        fs::write(&dest, b"old junk").unwrap();
        let info = prepare_vars(Path::new(MS), &dest).unwrap();
        assert_eq!(info.size, OVMF_4M_VARS_SIZE);
        assert_eq!(fs::read(&dest).unwrap(), real(MS));
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A broken template is refused and the destination is untouched.
        let bad = tmp.path().join("bad_template.fd");
        fs::write(&bad, vec![0u8; 1000]).unwrap();
        let err = prepare_vars(&bad, &dest).unwrap_err();
        assert!(
            err.to_string().contains("template itself is unusable"),
            "{err}"
        );
        assert_eq!(fs::read(&dest).unwrap(), real(MS));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = check_vars_bytes(Path::new("f"), &bytes, None);
            let _ = list_variables_bytes(Path::new("f"), &bytes);
        }

        #[test]
        fn never_panics_on_mutated_real_image(
            flips in proptest::collection::vec((0usize..0x4000, any::<u8>()), 1..16),
            cut in proptest::option::of(0usize..0x4000),
        ) {
            let mut b = real(MS);
            for (off, v) in flips {
                b[off] = v;
            }
            if let Some(c) = cut {
                b.truncate(c);
            }
            let _ = check_vars_bytes(Path::new("f"), &b, None);
            let _ = list_variables_bytes(Path::new("f"), &b);
        }
    }
}
