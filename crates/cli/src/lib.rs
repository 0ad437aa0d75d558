//! The `ferrovirt` command line: `serve`, offline `validate`, and kubectl/virtctl-style client
//! commands that talk to the REST API.

use std::process::ExitCode;

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
