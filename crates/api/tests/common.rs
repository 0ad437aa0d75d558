//! Helpers shared by the integration tests: fixture loading.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every manifest fixture (KubeVirt examples and the completed seed snippets), sorted.
pub fn manifest_fixtures() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["kubevirt-examples", "seeds"] {
        let entries = std::fs::read_dir(fixtures_dir().join(dir)).expect("fixture dir");
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 14, "fixtures missing: {files:?}");
    files
}
