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

/// A one-line summary of what a test guest's serial log says about a boot that should not have
/// happened (issue 14's rare "the guest starts again on the destination"): how many runs of QEMU
/// wrote to it (ferrovirt's run marker), how often the guest's /init began its TPM loop, and the
/// first lines that name a kernel panic, an oops, a lockup or the firmware's boot. Put first in a
/// failing assertion's message, so that a CI excerpt that keeps only its head still tells a new
/// QEMU process from a reboot inside the same one.
pub fn reboot_evidence(serial_log: &str) -> String {
    const SIGNS: [&str; 9] = [
        "Kernel panic",
        "BUG:",
        "Oops",
        "soft lockup",
        "hung_task",
        "tpm",
        "BdsDxe",
        "reboot",
        "FERRO: error=",
    ];
    let runs = serial_log
        .lines()
        .filter(|l| l.contains("[ferrovirt] run started"))
        .count();
    let loops = serial_log
        .lines()
        .filter(|l| l.contains("FERRO: loop=started"))
        .count();
    let signs: Vec<String> = serial_log
        .lines()
        .filter(|l| SIGNS.iter().any(|s| l.contains(s)))
        .take(8)
        .map(|l| l.trim_end_matches('\r').chars().take(160).collect())
        .collect();
    format!(
        "[reboot evidence: {runs} QEMU run(s) in the serial log, the TPM loop started {loops} time(s), signs: {}]",
        if signs.is_empty() {
            "none".to_owned()
        } else {
            signs.join(" | ")
        }
    )
}
