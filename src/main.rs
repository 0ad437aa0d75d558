//! The `ferrovirt` binary: everything lives in `ferrovirt-cli`; this file only hands over.

/// mimalloc instead of glibc's malloc: `serve` allocates from many tokio threads, and glibc's
/// per-thread arenas kept several times the live heap resident (10,000 VM objects: ~80 MB live,
/// 480 MB RSS); mimalloc returns freed pages to the system (see bench/run.sh's control plane).
/// Built without transparent huge pages (Cargo.toml: feature `no_thp`) and told to return freed
/// memory at once ([`return_freed_memory_at_once`]): see there for what each saves.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (`mi_option_t` in mimalloc 3's `mimalloc.h`: the 16th
/// option; libmimalloc-sys 0.1.49 builds mimalloc 3.3).
const MI_OPTION_PURGE_DELAY: core::ffi::c_int = 15;

// SAFETY (of the declaration): the signature is `mimalloc.h`'s
// `void mi_option_set(mi_option_t option, long value)`, `mi_option_t` being a C enum (an `int`);
// the symbol is in the static mimalloc library that libmimalloc-sys links into this binary.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn mi_option_set(option: core::ffi::c_int, value: core::ffi::c_long);
}

/// Makes mimalloc return freed pages to the system as soon as it notices them (`purge_delay` 0)
/// instead of 1 s later. mimalloc purges only when the thread owning the memory allocates or
/// frees again, and most of `serve`'s threads are tokio blocking-pool threads that sit idle
/// between bursts: with the default, what a burst freed stayed resident. Measured with
/// ferrovirt-bench `--only control`, 10,000 VMs (the same build, the options given through
/// `MIMALLOC_*` variables): RSS 142-237 MB by default, 114 MB with purge_delay 0, 165 MB without
/// THP, 73-97 MB with both; apply/s and list latencies within the runs' noise.
fn return_freed_memory_at_once() {
    // SAFETY: `mi_option_set` stores an integer in mimalloc's option table; it checks the option
    // index itself (ignores any outside the table) and has no other precondition. It runs first
    // in `main`, before this program starts any thread, so no allocation races with the store.
    #[allow(unsafe_code)]
    unsafe {
        mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}

fn main() -> std::process::ExitCode {
    return_freed_memory_at_once();
    ferrovirt_cli::main()
}
