//! Embeds the web UI: generates `$OUT_DIR/ui_assets.rs`, a table of `ui/dist/**` files as
//! `include_bytes!`. Without a built UI (no `ui/dist/index.html`, e.g. a plain `cargo build`
//! without node) a one-page placeholder saying how to build it is embedded instead, so the Rust
//! build never needs npm.

use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const PLACEHOLDER: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ferrovirt: web UI not built</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>The ferrovirt web UI was not built</h1>
<p>This binary was compiled without <code>ui/dist</code>. The REST API works (kubectl, the
ferrovirt CLI). To embed the UI, build it and then the binary:</p>
<pre>cd ui &amp;&amp; npm ci &amp;&amp; npm run build &amp;&amp; cd .. &amp;&amp; cargo build</pre>
<p>(<code>scripts/test.sh</code> does this.)</p>
</body></html>
"#;

fn collect(
    root: &Path,
    dir: &Path,
    files: &mut Vec<(String, PathBuf)>,
) -> Result<(), Box<dyn Error>> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(root, &path, files)?;
        } else {
            let relative = path
                .strip_prefix(root)?
                .to_string_lossy()
                .replace('\\', "/");
            files.push((relative, std::fs::canonicalize(&path)?));
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let dist = manifest.join("../../ui/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    let built = dist.join("index.html").is_file();
    if built {
        collect(&dist, &dist, &mut files)?;
    } else {
        let placeholder = out.join("ui-not-built.html");
        std::fs::write(&placeholder, PLACEHOLDER)?;
        files.push(("index.html".to_owned(), placeholder));
    }
    let mut code = String::new();
    writeln!(
        code,
        "/// Whether `ui/dist` was embedded (false: the placeholder page)."
    )?;
    writeln!(code, "pub const UI_BUILT: bool = {built};")?;
    writeln!(
        code,
        "/// The embedded files: path relative to `ui/dist`, content."
    )?;
    writeln!(code, "pub static UI_FILES: &[(&str, &[u8])] = &[")?;
    for (relative, path) in &files {
        writeln!(
            code,
            "    ({relative:?}, include_bytes!({:?})),",
            path.display().to_string()
        )?;
    }
    writeln!(code, "];")?;
    std::fs::write(out.join("ui_assets.rs"), code)?;
    Ok(())
}
