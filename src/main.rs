//! The `ferrovirt` binary: everything lives in `ferrovirt-cli`; this file only hands over.

/// mimalloc instead of glibc's malloc: `serve` allocates from many tokio threads, and glibc's
/// per-thread arenas kept several times the live heap resident (10,000 VM objects: ~80 MB live,
/// 480 MB RSS); mimalloc returns freed pages to the system (see bench/run.sh's control plane).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ferrovirt_cli::main()
}
