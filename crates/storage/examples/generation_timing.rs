//! Measures record / verify / restore / prune of a realistic state (6 KB TPM state, 540,672-byte
//! VARS) in a directory given as the first argument (default: a temp dir under /tmp).
//! `cargo run --release -p ferrovirt-storage --example generation_timing [DIR]`

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ferrovirt_storage::generations::{GenerationReason, Generations};

fn main() -> Result<(), Box<dyn Error>> {
    let base = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("fv-gen-timing-{}", std::process::id()))
        });
    let tpm = base.join("vol/swtpm/uuid/tpm2");
    std::fs::create_dir_all(&tpm)?;
    std::fs::write(tpm.join("tpm2-00.permall"), vec![7u8; 6 * 1024])?;
    std::fs::write(tpm.join(".lock"), b"")?;
    let vars = base.join("vol/nvram/vm_VARS.fd");
    std::fs::create_dir_all(base.join("vol/nvram"))?;
    std::fs::write(&vars, vec![0xffu8; 540_672])?;
    let gens = Generations::new(base.join("generations"));
    let sources: [(&str, &Path); 2] = [("tpm", &tpm), ("vars", &vars)];
    let rounds = 20u32;
    let t = Instant::now();
    let mut last = None;
    for _ in 0..rounds {
        last = Some(gens.record(&sources, GenerationReason::BeforeStart)?);
    }
    println!(
        "record (incl. verify): {:.1} ms each",
        t.elapsed().as_secs_f64() * 1e3 / f64::from(rounds)
    );
    let id = last.ok_or("no generation")?;
    let t = Instant::now();
    gens.verify(id)?;
    println!("verify: {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
    let t = Instant::now();
    gens.restore(id, &sources)?;
    println!(
        "restore (incl. pre-restore record): {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let report = gens.prune(3)?;
    println!(
        "prune to 3: {:.1} ms, removed {}",
        t.elapsed().as_secs_f64() * 1e3,
        report.removed.len()
    );
    std::fs::remove_dir_all(&base)?;
    Ok(())
}
