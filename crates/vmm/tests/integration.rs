//! The engine's tests against real QEMU, swtpm and OVMF, one test binary (each module was a binary
//! of its own; linking them was most of a clean build). nextest still runs every test in a process
//! of its own; one area: `cargo nextest run -p ferrovirt-vmm -E 'test(/^migration_qemu::/)'`.

mod encryption;
mod engine_state;
mod full_disk;
mod hyperv_qemu;
mod migration_qemu;
mod real_qemu;
mod runtime_base;
mod trust;
mod vm_snapshot;

/// A test file in `tests/` that is not a module above would never be built or run.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    ferrovirt_testkit::assert_every_test_file_is_a_module(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"),
        "integration.rs",
        include_str!("integration.rs"),
    );
}
