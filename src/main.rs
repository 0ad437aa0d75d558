//! The `ferrovirt` binary: everything lives in `ferrovirt-cli`; this file only hands over.

fn main() -> std::process::ExitCode {
    ferrovirt_cli::main()
}
