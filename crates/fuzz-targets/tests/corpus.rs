//! The fuzz targets on stable: every committed corpus entry, then `FERROVIRT_FUZZ_MUTATIONS`
//! (default 2,000) deterministic mutants per target, through the same functions libFuzzer runs.
//! A panic fails the test and names the target and the input (written to
//! `fuzz/artifacts/<target>/crash-<n>`). Prints `fuzz-summary <target> <executions> <crashes>`
//! lines, and writes them to the file `FERROVIRT_RELIABILITY_REPORT_FUZZ` names when it is set
//! (`scripts/reliability.sh`'s table reads them).

use std::path::{Path, PathBuf};

use ferrovirt_fuzz_targets::{Mutator, TARGETS};

/// `fuzz/` at the repository's root: the corpus and the crash artifacts of cargo-fuzz.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    entries
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

fn run_one(target: &str, f: fn(&[u8]), input: &[u8], crashes: &mut Vec<String>) {
    let result = std::panic::catch_unwind(|| f(input));
    if result.is_err() {
        let dir = fuzz_dir().join("artifacts").join(target);
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("crash-{}", crashes.len()));
        let _ = std::fs::write(&path, input);
        crashes.push(format!(
            "{target}: panicked on {} ({} bytes)",
            path.display(),
            input.len()
        ));
    }
}

#[test]
fn targets_survive_the_corpus_and_its_mutants() {
    let mutations: usize = std::env::var("FERROVIRT_FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut crashes = Vec::new();
    let mut summary = String::new();
    for (seed, (target, f)) in TARGETS.iter().enumerate() {
        let entries = corpus(target);
        assert!(!entries.is_empty(), "corpus/{target} is empty");
        let mut executions = 0usize;
        for input in &entries {
            run_one(target, *f, input, &mut crashes);
            executions += 1;
        }
        let mut mutator = Mutator::new(0x9e37_79b9_7f4a_7c15 ^ seed as u64);
        for i in 0..mutations {
            let base = &entries[i % entries.len()];
            let other = &entries[(i * 7 + 3) % entries.len()];
            let input = mutator.mutate(base, other);
            run_one(target, *f, &input, &mut crashes);
            executions += 1;
        }
        let line = format!("fuzz-summary {target} {executions} {}", crashes.len());
        println!("{line}");
        summary.push_str(&line);
        summary.push('\n');
    }
    if let Ok(path) = std::env::var("FERROVIRT_RELIABILITY_REPORT_FUZZ")
        && let Err(e) = std::fs::write(&path, &summary)
    {
        panic!("FERROVIRT_RELIABILITY_REPORT_FUZZ={path}: {e}");
    }
    assert!(
        crashes.is_empty(),
        "{} crashes:\n{}",
        crashes.len(),
        crashes.join("\n")
    );
}
