//! The snapshot store on a filesystem with reflinks: an XFS image (`reflink=1`) loop-mounted by
//! the test (as root, as the test suite runs) holds both the source files and the store; every
//! file of the snapshot is a reflink (`FICLONE`), the snapshot verifies, and changing the source
//! afterwards leaves the snapshot's copy as it was (the blocks are shared until written).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use ferrovirt_storage::SnapshotStore;
use ferrovirt_storage::snapshots::{CopyMethod, SnapshotRequest};
use ferrovirt_testkit::host_tool;
use serde_json::json;

struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn snapshots_are_reflinks_on_xfs() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("xfs.img");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::File::create(&image)
        .unwrap()
        .set_len(320 * 1024 * 1024)
        .unwrap();
    let made = host_tool("mkfs.xfs")
        .args(["-q", "-m", "reflink=1"])
        .arg(&image)
        .status()
        .unwrap();
    assert!(made.success(), "mkfs.xfs failed");
    let mounted = host_tool("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mounting an XFS image needs root and a loop device (the test suite runs as root)"
    );
    let _guard = Mounted(mnt.clone());

    let disk = mnt.join("disk.img");
    std::fs::write(&disk, vec![0x5au8; 8 * 1024 * 1024]).unwrap();
    let vars = mnt.join("VARS.fd");
    std::fs::write(&vars, vec![1u8; 540_672]).unwrap();
    let store = SnapshotStore::at(mnt.join("snapshots"));
    let vm = json!({"metadata": {"name": "vm"}});
    let manifest = store
        .take(
            "s",
            &SnapshotRequest {
                vm: &vm,
                files: vec![("disk-root".into(), disk.clone()), ("vars".into(), vars)],
                excluded: Vec::new(),
                online: false,
            },
        )
        .unwrap();
    assert!(
        manifest
            .files
            .iter()
            .all(|f| f.method == CopyMethod::Reflink),
        "{:?}",
        manifest.files
    );
    std::fs::write(&disk, vec![0xa5u8; 8 * 1024 * 1024]).unwrap();
    store.verify("s").unwrap();
    assert_eq!(
        std::fs::read(store.file_path("s", "disk-root")).unwrap()[0],
        0x5a
    );
}
