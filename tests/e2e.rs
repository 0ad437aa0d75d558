//! The end-to-end tests of `ferrovirt`, one test binary: each module below was a test binary of
//! its own, and linking ~30 binaries of the whole stack took most of the build (a clean 2-core
//! build spent minutes per binary). nextest still runs every test in a process of its own; select
//! one area with a filter on the module, e.g. `cargo nextest run -E 'test(/^crash_matrix::/)'`.
//! The helpers in `support/` are compiled into each module that names them.

// A module of `support/` is loaded by every test module that uses it, as when each was a binary.
#![allow(clippy::duplicate_mod)]

mod cdrom_boot;
mod cli_client;
mod cli_e2e;
mod cli_tls;
mod crash_matrix;
mod crash_migration;
mod datavolume_serve;
mod debian_guest;
mod endurance;
mod guest_agent;
mod guest_boot;
mod guest_network;
mod host_reboot;
mod instancetypes_serve;
mod io_errors_serve;
mod kubectl_api;
mod kubectl_vm;
mod metrics;
mod migrate_to_host;
mod migration_executor;
mod migration_tunnel;
mod package;
mod port_forward;
mod safe_defaults_cli;
mod security;
mod serve_admission;
mod snapshot_restore_serve;
mod state_restore_serve;
mod tpm_pool;
mod trust_serve;
mod two_hosts;
mod ui_browser;
mod validate_cli;
mod vmexport_serve;
mod vnc_console;

/// A test file in `tests/` that is not a module above would never be built or run.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    ferrovirt_testkit::assert_every_test_file_is_a_module(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"),
        "e2e.rs",
        include_str!("e2e.rs"),
    );
}
