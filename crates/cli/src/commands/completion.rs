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
    clap_complete::generate(
        args.shell,
        &mut command,
        "ferrovirt",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}
