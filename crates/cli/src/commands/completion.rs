//! `ferrovirt completion bash|zsh|fish|elvish|powershell`: a shell completion script on stdout,
//! e.g. `source <(ferrovirt completion bash)`.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Arguments of `ferrovirt completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: &CompletionArgs) -> ExitCode {
    let mut command = crate::Cli::command();
    // Into memory first: clap_complete panics when its writer fails (e.g. `| head`).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "ferrovirt", &mut script);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&script).and_then(|()| stdout.flush());
    ExitCode::SUCCESS
}
