//! QEMU firmware interop descriptors (QEMU docs/interop/firmware.json), the JSON files that
//! distributions install in `/usr/share/qemu/firmware` and admins in `/etc/qemu/firmware`.
//!
//! Search rules from the spec: files are considered in order of their file name (lower sorts
//! first = higher priority, hence the `40-`, `50-`, `60-` prefixes); a file in a directory of
//! higher precedence (`/etc/qemu/firmware` over `/usr/share/qemu/firmware`) replaces the file
//! with the same name in a lower one, and an empty file there hides it. Only `*.json` files count.
//!
//! Unknown fields, feature names, interface types and devices are kept as `Other(..)` values and
//! never make a file fail to parse; a missing required field (`mapping`, a flash `executable`) does.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Directories searched by default, highest precedence first.
pub const DEFAULT_SEARCH_DIRS: [&str; 2] = ["/etc/qemu/firmware", "/usr/share/qemu/firmware"];

/// Errors reading or parsing descriptors.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("cannot read firmware descriptor {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "firmware descriptor {path} is not valid QEMU firmware JSON: {problem} (see QEMU \
         docs/interop/firmware.json; fix or remove the file, or hide it with an empty file of \
         the same name in /etc/qemu/firmware)"
    )]
    Invalid { path: PathBuf, problem: String },
}

/// `interface-types` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceType {
    Bios,
    Uefi,
    OpenFirmware,
    UBoot,
    Other(String),
}

impl InterfaceType {
    fn parse(s: &str) -> Self {
        match s {
            "bios" => InterfaceType::Bios,
            "uefi" => InterfaceType::Uefi,
            "openfirmware" => InterfaceType::OpenFirmware,
            "uboot" => InterfaceType::UBoot,
            other => InterfaceType::Other(other.to_owned()),
        }
    }
}

/// `features` entries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    AcpiS3,
    AcpiS4,
    AmdSev,
    AmdSevEs,
    AmdSevSnp,
    IntelTdx,
    EnrolledKeys,
    RequiresSmm,
    SecureBoot,
    HostUefiVars,
    VerboseDynamic,
    VerboseStatic,
    Other(String),
}

impl Feature {
    pub fn parse(s: &str) -> Self {
        match s {
            "acpi-s3" => Feature::AcpiS3,
            "acpi-s4" => Feature::AcpiS4,
            "amd-sev" => Feature::AmdSev,
            "amd-sev-es" => Feature::AmdSevEs,
            "amd-sev-snp" => Feature::AmdSevSnp,
            "intel-tdx" => Feature::IntelTdx,
            "enrolled-keys" => Feature::EnrolledKeys,
            "requires-smm" => Feature::RequiresSmm,
            "secure-boot" => Feature::SecureBoot,
            "host-uefi-vars" => Feature::HostUefiVars,
            "verbose-dynamic" => Feature::VerboseDynamic,
            "verbose-static" => Feature::VerboseStatic,
            other => Feature::Other(other.to_owned()),
        }
    }

    /// The name as written in descriptors.
    pub fn as_str(&self) -> &str {
        match self {
            Feature::AcpiS3 => "acpi-s3",
            Feature::AcpiS4 => "acpi-s4",
            Feature::AmdSev => "amd-sev",
            Feature::AmdSevEs => "amd-sev-es",
            Feature::AmdSevSnp => "amd-sev-snp",
            Feature::IntelTdx => "intel-tdx",
            Feature::EnrolledKeys => "enrolled-keys",
            Feature::RequiresSmm => "requires-smm",
            Feature::SecureBoot => "secure-boot",
            Feature::HostUefiVars => "host-uefi-vars",
            Feature::VerboseDynamic => "verbose-dynamic",
            Feature::VerboseStatic => "verbose-static",
            Feature::Other(s) => s,
        }
    }
}

/// `mapping.mode` of a flash mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlashMode {
    /// Separate read-only code and writable VARS (the default).
    Split,
    Combined,
    Stateless,
    Other(String),
}

/// A file in a flash mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashFile {
    pub filename: PathBuf,
    /// `raw` or `qcow2`.
    pub format: String,
}

/// `mapping`: how the firmware is given to QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// `device: flash`: pflash drives.
    Flash {
        mode: FlashMode,
        executable: FlashFile,
        nvram_template: Option<FlashFile>,
    },
    /// `device: memory`: loaded with `-bios`.
    Memory { filename: PathBuf },
    /// `device: kernel`: loaded with `-kernel`.
    Kernel { filename: PathBuf },
    /// Any other device.
    Other { device: String },
}

/// A `targets` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub architecture: String,
    /// Machine type globs, e.g. `pc-q35-*`.
    pub machines: Vec<String>,
}

/// One parsed descriptor file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareDescriptor {
    /// Where it was read from.
    pub path: PathBuf,
    pub description: String,
    pub interface_types: Vec<InterfaceType>,
    pub mapping: Mapping,
    pub targets: Vec<Target>,
    pub features: Vec<Feature>,
    pub tags: Vec<String>,
}

impl FirmwareDescriptor {
    pub fn has_feature(&self, feature: &Feature) -> bool {
        self.features.contains(feature)
    }

    pub fn has_interface(&self, interface: &InterfaceType) -> bool {
        self.interface_types.contains(interface)
    }
}

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(default)]
    description: String,
    #[serde(rename = "interface-types", default)]
    interface_types: Vec<String>,
    mapping: RawMapping,
    #[serde(default)]
    targets: Vec<RawTarget>,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
struct RawMapping {
    device: String,
    mode: Option<String>,
    executable: Option<RawFlashFile>,
    #[serde(rename = "nvram-template")]
    nvram_template: Option<RawFlashFile>,
    filename: Option<PathBuf>,
}

#[derive(Deserialize)]
struct RawFlashFile {
    filename: PathBuf,
    #[serde(default = "default_format")]
    format: String,
}

fn default_format() -> String {
    "raw".to_owned()
}

#[derive(Deserialize)]
struct RawTarget {
    architecture: String,
    #[serde(default)]
    machines: Vec<String>,
}

impl From<RawFlashFile> for FlashFile {
    fn from(raw: RawFlashFile) -> Self {
        FlashFile {
            filename: raw.filename,
            format: raw.format,
        }
    }
}

/// Parses one descriptor; `path` is recorded and used in errors.
pub fn parse_descriptor(path: &Path, bytes: &[u8]) -> Result<FirmwareDescriptor, DescriptorError> {
    let invalid = |problem: String| DescriptorError::Invalid {
        path: path.to_path_buf(),
        problem,
    };
    let raw: RawDescriptor = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    let mapping = match raw.mapping.device.as_str() {
        "flash" => {
            let executable = raw
                .mapping
                .executable
                .ok_or_else(|| invalid("mapping.executable is missing (device flash)".into()))?;
            let mode = match raw.mapping.mode.as_deref() {
                None | Some("split") => FlashMode::Split,
                Some("combined") => FlashMode::Combined,
                Some("stateless") => FlashMode::Stateless,
                Some(other) => FlashMode::Other(other.to_owned()),
            };
            Mapping::Flash {
                mode,
                executable: executable.into(),
                nvram_template: raw.mapping.nvram_template.map(Into::into),
            }
        }
        "memory" | "kernel" => {
            let filename = raw.mapping.filename.ok_or_else(|| {
                invalid(format!(
                    "mapping.filename is missing (device {})",
                    raw.mapping.device
                ))
            })?;
            if raw.mapping.device == "memory" {
                Mapping::Memory { filename }
            } else {
                Mapping::Kernel { filename }
            }
        }
        other => Mapping::Other {
            device: other.to_owned(),
        },
    };
    Ok(FirmwareDescriptor {
        path: path.to_path_buf(),
        description: raw.description,
        interface_types: raw
            .interface_types
            .iter()
            .map(|s| InterfaceType::parse(s))
            .collect(),
        mapping,
        targets: raw
            .targets
            .into_iter()
            .map(|t| Target {
                architecture: t.architecture,
                machines: t.machines,
            })
            .collect(),
        features: raw.features.iter().map(|s| Feature::parse(s)).collect(),
        tags: raw.tags,
    })
}

/// Descriptors found in the search directories, in priority order, plus the files that could
/// not be parsed (reported, not fatal: one broken file must not hide the others).
#[derive(Debug, Default)]
pub struct LoadedDescriptors {
    pub descriptors: Vec<FirmwareDescriptor>,
    pub rejected: Vec<DescriptorError>,
}

/// Loads descriptors from `dirs` (highest precedence first; e.g. [`DEFAULT_SEARCH_DIRS`]).
/// Missing directories are skipped.
pub fn load_descriptors<P: AsRef<Path>>(dirs: &[P]) -> Result<LoadedDescriptors, DescriptorError> {
    // file name -> the path that wins (first directory that has it).
    let mut chosen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let dir = dir.as_ref();
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(DescriptorError::Io {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| DescriptorError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.ends_with(".json") {
                chosen.entry(name).or_insert_with(|| entry.path());
            }
        }
    }
    let mut loaded = LoadedDescriptors::default();
    for path in chosen.into_values() {
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(source) => {
                loaded.rejected.push(DescriptorError::Io { path, source });
                continue;
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            // An empty file masks a lower-precedence file of the same name.
            continue;
        }
        match parse_descriptor(&path, &bytes) {
            Ok(d) => loaded.descriptors.push(d),
            Err(e) => loaded.rejected.push(e),
        }
    }
    Ok(loaded)
}

/// Glob match with `*` (any run) and `?` (one character), as used in `machines`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/descriptors");

    #[test]
    fn parses_debian_secure_enrolled_fixture() {
        let path = Path::new(FIXTURES).join("40-edk2-x86_64-secure-enrolled.json");
        let d = parse_descriptor(&path, &fs::read(&path).unwrap()).unwrap();
        assert_eq!(d.interface_types, vec![InterfaceType::Uefi]);
        assert_eq!(
            d.mapping,
            Mapping::Flash {
                mode: FlashMode::Split,
                executable: FlashFile {
                    filename: "/usr/share/OVMF/OVMF_CODE_4M.ms.fd".into(),
                    format: "raw".into()
                },
                nvram_template: Some(FlashFile {
                    filename: "/usr/share/OVMF/OVMF_VARS_4M.ms.fd".into(),
                    format: "raw".into()
                }),
            }
        );
        assert_eq!(d.targets[0].architecture, "x86_64");
        assert_eq!(d.targets[0].machines, vec!["pc-q35-*"]);
        for f in [
            Feature::SecureBoot,
            Feature::EnrolledKeys,
            Feature::RequiresSmm,
        ] {
            assert!(d.has_feature(&f), "{f:?}");
        }
        assert!(d.description.contains("MS certs enrolled"));
    }

    #[test]
    fn unknown_fields_and_values_are_kept_not_errors() {
        let json = br#"{
            "description": "x", "interface-types": ["uefi", "future-if"],
            "mapping": {"device": "flash", "mode": "stateless",
                        "executable": {"filename": "/c.fd"}, "new-field": 1},
            "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"], "x": true}],
            "features": ["secure-boot", "quantum-boot"], "brand-new": {"a": 1}
        }"#;
        let d = parse_descriptor(Path::new("t.json"), json).unwrap();
        assert_eq!(
            d.interface_types[1],
            InterfaceType::Other("future-if".into())
        );
        assert_eq!(d.features[1], Feature::Other("quantum-boot".into()));
        match d.mapping {
            Mapping::Flash {
                mode,
                executable,
                nvram_template,
            } => {
                assert_eq!(mode, FlashMode::Stateless);
                assert_eq!(executable.format, "raw");
                assert!(nvram_template.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_mapping_is_an_error_naming_the_file() {
        let err =
            parse_descriptor(Path::new("/x/bad.json"), br#"{"description": "x"}"#).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/x/bad.json") && msg.contains("mapping"),
            "{msg}"
        );
        let err = parse_descriptor(Path::new("b.json"), br#"{"mapping": {"device": "flash"}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("mapping.executable"), "{err}");
    }

    #[test]
    fn etc_overrides_usr_share_and_empty_file_masks() {
        let tmp = tempfile::tempdir().unwrap();
        let etc = tmp.path().join("etc");
        let usr = tmp.path().join("usr");
        fs::create_dir_all(&etc).unwrap();
        fs::create_dir_all(&usr).unwrap();
        for name in [
            "40-edk2-x86_64-secure-enrolled.json",
            "50-edk2-x86_64-secure.json",
            "60-edk2-x86_64.json",
        ] {
            fs::copy(Path::new(FIXTURES).join(name), usr.join(name)).unwrap();
        }
        // Hide the enrolled one, override the plain one with a different description.
        fs::write(etc.join("40-edk2-x86_64-secure-enrolled.json"), b"").unwrap();
        let plain = fs::read_to_string(usr.join("60-edk2-x86_64.json")).unwrap();
        fs::write(
            etc.join("60-edk2-x86_64.json"),
            plain.replace("without Secure Boot", "LOCAL"),
        )
        .unwrap();
        fs::write(etc.join("10-broken.json"), b"{").unwrap();
        fs::write(etc.join("README"), b"not json").unwrap();
        let loaded = load_descriptors(&[
            etc.as_path(),
            usr.as_path(),
            tmp.path().join("missing").as_path(),
        ])
        .unwrap();
        let names: Vec<String> = loaded
            .descriptors
            .iter()
            .map(|d| d.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["50-edk2-x86_64-secure.json", "60-edk2-x86_64.json"]
        );
        assert!(loaded.descriptors[1].description.contains("LOCAL"));
        assert!(loaded.descriptors[1].path.starts_with(&etc));
        assert_eq!(loaded.rejected.len(), 1);
        assert!(loaded.rejected[0].to_string().contains("10-broken.json"));
    }

    #[test]
    fn loads_real_system_descriptors() {
        let loaded = load_descriptors(&DEFAULT_SEARCH_DIRS).unwrap();
        assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
        let names: Vec<String> = loaded
            .descriptors
            .iter()
            .map(|d| d.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in [
            "40-edk2-x86_64-secure-enrolled.json",
            "50-edk2-x86_64-secure.json",
            "60-edk2-x86_64.json",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?} (install ovmf)"
            );
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match("pc-q35-*", "pc-q35-7.2"));
        assert!(glob_match("pc-q35-*", "pc-q35-"));
        assert!(!glob_match("pc-q35-*", "pc-i440fx-7.2"));
        assert!(glob_match("pc-?35-7.*", "pc-q35-7.2"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("virt", "virt"));
        assert!(!glob_match("virt", "virt-8.0"));
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_descriptor(Path::new("fuzz.json"), &bytes);
        }

        #[test]
        fn parser_never_panics_on_json_like_input(s in r#"\{("[a-z-]{1,12}": ?("[a-z/.*-]{0,10}"|\[("[a-z-]{0,8}",?){0,3}\]|\{"device": "[a-z]{0,6}"\}|[0-9]+|null),? ?){0,6}\}"#) {
            let _ = parse_descriptor(Path::new("fuzz.json"), s.as_bytes());
        }

        #[test]
        fn glob_star_matches_everything(s in "\\PC{0,20}") {
            prop_assert!(glob_match("*", &s));
            prop_assert!(glob_match(&s.replace(['*', '?'], ""), &s.replace(['*', '?'], "")));
        }
    }
}
