//! Where a data dir's runs keep their sockets: `<data>/run` by default, or the directory
//! `serve --runtime-dir` chose (e.g. `/run/ferrovirt`), recorded in the data dir so that every
//! process opening it agrees, and forgotten while the directory is gone (a reboot empties /run).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use ferrovirt_vmm::engine::{
    RUNTIME_BASE_RECORD, prepare_runtime_base, runtime_base, set_runtime_base,
};

#[test]
fn a_chosen_runtime_dir_is_recorded_private_and_used_while_it_exists() {
    let dir = tempfile::Builder::new()
        .prefix("fv")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("data");
    let chosen = dir.path().join("rt");
    assert_eq!(runtime_base(&data), data.join("run"));

    assert_eq!(set_runtime_base(&data, &chosen).unwrap(), chosen);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&chosen), 0o700);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(
        std::fs::read_to_string(data.join(RUNTIME_BASE_RECORD)).unwrap(),
        chosen.to_str().unwrap()
    );
    assert_eq!(runtime_base(&data), chosen);
    assert_eq!(prepare_runtime_base(&data).unwrap(), chosen);

    // A reboot empties /run: until the directory is chosen again, the data dir's own is used.
    std::fs::remove_dir(&chosen).unwrap();
    assert_eq!(runtime_base(&data), data.join("run"));
    assert_eq!(prepare_runtime_base(&data).unwrap(), data.join("run"));
    set_runtime_base(&data, &chosen).unwrap();
    assert_eq!(runtime_base(&data), chosen);
}

#[test]
fn a_relative_or_too_long_runtime_dir_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let err = set_runtime_base(&data, std::path::Path::new("run/ferrovirt"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absolute path"), "{err}");
    let long = dir.path().join("x".repeat(80));
    let err = set_runtime_base(&data, &long).unwrap_err().to_string();
    assert!(err.contains("too long") && err.contains("107"), "{err}");
    assert!(!data.join(RUNTIME_BASE_RECORD).exists());
}
