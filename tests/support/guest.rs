//! The test guest (built by `guest/build.sh` from Debian packages) and the report it prints on its
//! serial console: one `FERRO: key=value` line per fact, ending with `FERRO: done`.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where `scripts/test.sh` builds the guest images (`FERROVIRT_GUEST_DIR`), else `.cache/guest`.
pub fn guest_dir() -> PathBuf {
    std::env::var_os("FERROVIRT_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/guest"))
}

/// The plain guest: a unified kernel image on an EFI system partition.
pub fn plain_image() -> PathBuf {
    image("ferro-guest.img")
}

/// The Secure Boot guest: Debian's signed shim, GRUB and kernel.
pub fn secure_boot_image() -> PathBuf {
    image("ferro-guest-sb.img")
}

fn image(file: &str) -> PathBuf {
    let path = guest_dir().join(file);
    assert!(
        path.is_file(),
        "test guest image {} is missing: run guest/build.sh {} (scripts/test.sh does)",
        path.display(),
        guest_dir().display()
    );
    path
}

/// What one boot of the test guest reported.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GuestReport {
    pub facts: BTreeMap<String, String>,
    pub errors: Vec<String>,
    pub done: bool,
}

impl GuestReport {
    /// Parses the `FERRO:` lines of the last boot found in a serial log.
    pub fn parse_last_boot(log: &str) -> GuestReport {
        let boots: Vec<&str> = log.split("FERRO: boot").collect();
        let last = boots.last().copied().unwrap_or_default();
        let mut report = GuestReport::default();
        for line in last.lines() {
            let Some(rest) = line.trim_end_matches('\r').split("FERRO: ").nth(1) else {
                continue;
            };
            if rest == "done" {
                report.done = true;
            } else if let Some(error) = rest.strip_prefix("error=") {
                report.errors.push(error.to_string());
            } else if let Some((key, value)) = rest.split_once('=') {
                report.facts.insert(key.to_string(), value.to_string());
            }
        }
        report
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.facts.get(key).map(String::as_str)
    }

    /// How many boots a serial log holds.
    pub fn count_boots(log: &str) -> usize {
        log.matches("FERRO: boot").count()
    }
}

/// Puts `image` into `<data_dir>/images/` (the allowed host-disk root of a `ferrovirt serve` that
/// has no `--host-disk-root`): a hard link, or a copy across filesystems. Returns its path there.
pub fn image_in_data_dir(data_dir: &std::path::Path, image: &std::path::Path) -> PathBuf {
    let images = data_dir.join("images");
    std::fs::create_dir_all(&images).expect("create <data>/images");
    let target = images.join(image.file_name().expect("image file name"));
    if !target.exists() && std::fs::hard_link(image, &target).is_err() {
        std::fs::copy(image, &target).expect("copy the guest image into <data>/images");
    }
    target
}
