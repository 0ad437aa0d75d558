//! Test support shared by the workspace's tests (a dev-dependency only): the host tools the tests
//! run (qemu-img, QEMU, certtool, kubectl, ...) are looked up on `PATH` first, so that a missing
//! tool fails the test with the tool's name, the Debian package that brings it and the set-up step
//! to run, instead of an `unwrap()` panic on `NotFound`.

use std::path::PathBuf;
use std::process::Command;

/// The Debian package (or other source) that provides each host tool the tests run.
const PROVIDERS: &[(&str, &str)] = &[
    ("qemu-img", "qemu-utils"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("swtpm", "swtpm"),
    ("swtpm_setup", "swtpm-tools"),
    ("swtpm_localca", "swtpm-tools"),
    ("certtool", "gnutls-bin"),
    ("tpm2", "tpm2-tools"),
    ("mformat", "mtools"),
    ("mcopy", "mtools"),
    ("mdir", "mtools"),
    ("mtype", "mtools"),
    ("mmd", "mtools"),
    ("mkfs.vfat", "dosfstools"),
    ("xorriso", "xorriso"),
    ("kubectl", "kubernetes-client"),
    ("chromium", "chromium"),
    ("npm", "npm (Node.js >= 20.19)"),
    ("pgrep", "procps"),
    ("virt-fw-vars", "virt-firmware from PyPI"),
    ("passt", "passt"),
    ("ip", "iproute2"),
    ("dpkg-deb", "dpkg"),
    ("systemd-analyze", "systemd"),
    ("mkfs.xfs", "xfsprogs"),
    ("mount", "mount"),
];

/// Where `tool` is on `PATH`, or `None`.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Why a tool is missing and how to get it: names the tool, its package and the set-up step.
pub fn missing_tool_message(tool: &str) -> String {
    let package = PROVIDERS
        .iter()
        .find(|(name, _)| *name == tool)
        .map_or("its package", |(_, package)| package);
    format!(
        "the host tool `{tool}` is not installed (it comes with {package}); \
         run ./scripts/setup.sh, which installs everything the tests need"
    )
}

/// A `Command` for a host tool the test needs; panics with [`missing_tool_message`] when the tool
/// is not on `PATH` (a test without its tool cannot pass, so it fails and says why).
pub fn host_tool(tool: &str) -> Command {
    match find_tool(tool) {
        Some(path) => Command::new(path),
        None => panic!("{}", missing_tool_message(tool)),
    }
}

/// Runs a host tool with `args`; panics with the command line and its stderr unless it succeeds.
pub fn run_host_tool<I, S>(tool: &str, args: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = host_tool(tool);
    command.args(args);
    match command.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("{command:?} could not run: {e}"),
    }
}

/// Checks that every `*.rs` file of a test directory is a module (`mod NAME;` on a line of its own)
/// of the one test binary whose root is `root_file` with the text `root_text`: a file left out
/// would never be built or run, silently.
pub fn assert_every_test_file_is_a_module(dir: &std::path::Path, root_file: &str, root_text: &str) {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list the test directory {}: {e}", dir.display()));
    let mut missing = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(module) = name.strip_suffix(".rs")
            && name != root_file
            && !root_text.contains(&format!("\nmod {module};\n"))
        {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "{missing:?} in {} are not modules of {root_file}: add `mod NAME;` there",
        dir.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_file_that_is_no_module_is_named() {
        let dir = std::env::temp_dir().join(format!("fv-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["root.rs", "listed.rs", "forgotten.rs"] {
            std::fs::write(dir.join(file), "").unwrap();
        }
        let caught = std::panic::catch_unwind(|| {
            assert_every_test_file_is_a_module(&dir, "root.rs", "//! root\nmod listed;\n")
        });
        let listed_all = std::panic::catch_unwind(|| {
            assert_every_test_file_is_a_module(&dir, "root.rs", "\nmod listed;\nmod forgotten;\n")
        });
        std::fs::remove_dir_all(&dir).unwrap();
        let message = caught.unwrap_err();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(
            message.contains("forgotten.rs") && !message.contains("listed.rs"),
            "{message}"
        );
        assert!(listed_all.is_ok());
    }

    #[test]
    fn finds_a_tool_every_machine_has() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("surely-not-a-tool-ferrovirt").is_none());
    }

    #[test]
    fn message_names_tool_package_and_setup() {
        let msg = missing_tool_message("qemu-img");
        assert!(msg.contains("`qemu-img`"), "{msg}");
        assert!(msg.contains("qemu-utils"), "{msg}");
        assert!(msg.contains("./scripts/setup.sh"), "{msg}");
    }

    #[test]
    #[should_panic(expected = "`surely-not-a-tool-ferrovirt` is not installed")]
    fn missing_tool_fails_with_its_name() {
        let _ = host_tool("surely-not-a-tool-ferrovirt");
    }
}
