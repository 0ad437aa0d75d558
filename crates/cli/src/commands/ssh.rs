//! `ferrovirt ssh [USER@]TYPE/NAME[.NAMESPACE]`: the local OpenSSH client, connected to the
//! guest through the `portforward` subresource, as `virtctl ssh --local-ssh` runs it: `ssh` with
//! a `ProxyCommand` of `ferrovirt port-forward --stdio TYPE/NAME.NAMESPACE PORT` (this same binary,
//! with the same kubeconfig, context and server), so nothing listens on any local port. The host
//! key is remembered under `HostKeyAlias TYPE/NAME.NAMESPACE`. ssh's exit code is ours.

use std::process::ExitCode;

use clap::Args;

use crate::client::{ClientArgs, ClientError};
use crate::commands::port_forward::GuestTarget;

/// Arguments of `ferrovirt ssh`.
#[derive(Debug, Args)]
pub struct SshArgs {
    /// `[USER@]vm/NAME[.NAMESPACE]` (or `vmi/...`), as virtctl ssh.
    #[arg(value_name = "[USER@]TYPE/NAME[.NAMESPACE]")]
    pub destination: String,
    /// The user to log in as (instead of USER@).
    #[arg(short = 'l', long = "username", value_name = "USER")]
    pub username: Option<String>,
    /// The guest's SSH port.
    #[arg(short = 'p', long = "port", default_value_t = 22)]
    pub port: u16,
    /// The private key to log in with (ssh -i).
    #[arg(short = 'i', long = "identity-file", value_name = "FILE")]
    pub identity_file: Option<std::path::PathBuf>,
    /// A command to run instead of a login shell.
    #[arg(short = 'c', long = "command", value_name = "COMMAND")]
    pub command: Option<String>,
    /// More options for the local ssh (repeatable), e.g.
    /// `--local-ssh-opts="-o StrictHostKeyChecking=no"`.
    #[arg(
        long = "local-ssh-opts",
        value_name = "OPTS",
        allow_hyphen_values = true
    )]
    pub local_ssh_opts: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(args: &SshArgs) -> ExitCode {
    match ssh_command(args).and_then(|mut command| {
        command.status().map_err(|e| {
            ClientError::Usage(format!(
                "cannot run ssh: {e} (install the openssh-client package)"
            ))
        })
    }) {
        Ok(status) => status
            .code()
            .and_then(|code| u8::try_from(code).ok())
            .map_or(ExitCode::FAILURE, ExitCode::from),
        Err(e) => e.report(),
    }
}

/// The ssh command line `ferrovirt ssh` runs.
pub fn ssh_command(args: &SshArgs) -> Result<std::process::Command, ClientError> {
    let (user, target_text) = match args.destination.split_once('@') {
        Some((user, rest)) => (Some(user.to_owned()), rest),
        None => (None, args.destination.as_str()),
    };
    let user = args.username.clone().or(user);
    let target = GuestTarget::parse(target_text)?;
    let namespace = match &target.namespace {
        Some(namespace) => namespace.clone(),
        None => target.connection(&args.client)?.namespace,
    };
    let kind = if target.plural == "virtualmachines" {
        "vm"
    } else {
        "vmi"
    };
    let alias = format!("{kind}/{}.{namespace}", target.name);
    let exe = std::env::current_exe()
        .map_err(|e| ClientError::Usage(format!("cannot find the ferrovirt binary: {e}")))?;
    let mut proxy = vec![
        shell_quote(&exe.to_string_lossy()),
        "port-forward".to_owned(),
        "--stdio".to_owned(),
        shell_quote(&alias),
        args.port.to_string(),
    ];
    if let Some(kubeconfig) = &args.client.kubeconfig {
        proxy.push("--kubeconfig".into());
        proxy.push(shell_quote(&kubeconfig.to_string_lossy()));
    }
    if let Some(context) = &args.client.context {
        proxy.push("--context".into());
        proxy.push(shell_quote(context));
    }
    if let Some(server) = &args.client.server {
        proxy.push("--server".into());
        proxy.push(shell_quote(server));
    }
    let mut command = std::process::Command::new("ssh");
    command
        .arg("-o")
        .arg(format!("ProxyCommand={}", proxy.join(" ")))
        .arg("-o")
        .arg(format!("HostKeyAlias={alias}"));
    if let Some(key) = &args.identity_file {
        command.arg("-i").arg(key);
    }
    if let Some(user) = &user {
        command.arg("-l").arg(user);
    }
    for options in &args.local_ssh_opts {
        command.args(options.split_whitespace());
    }
    // The host name is only a label here: the ProxyCommand is the connection.
    command.arg(format!("{}.{namespace}", target.name));
    if let Some(remote) = &args.command {
        command.arg("--").arg(remote);
    }
    Ok(command)
}

/// `text` in single quotes for the shell ssh runs the ProxyCommand with.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        ssh: SshArgs,
    }

    #[test]
    fn the_ssh_command_goes_through_port_forward() {
        let cli = Cli::try_parse_from([
            "ssh",
            "debian@vm/guest.prod",
            "-i",
            "/k/id",
            "-c",
            "uname -a",
            "--local-ssh-opts=-o StrictHostKeyChecking=no",
            "--kubeconfig",
            "/k/it's.kubeconfig",
        ])
        .unwrap();
        let command = ssh_command(&cli.ssh).unwrap();
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let proxy = &args[1];
        assert!(proxy.starts_with("ProxyCommand='"), "{proxy}");
        assert!(
            proxy.ends_with(
                "port-forward --stdio 'vm/guest.prod' 22 --kubeconfig '/k/it'\\''s.kubeconfig'"
            ),
            "{proxy}"
        );
        assert_eq!(args[3], "HostKeyAlias=vm/guest.prod");
        let rest = args[4..].join(" ");
        assert_eq!(
            rest,
            "-i /k/id -l debian -o StrictHostKeyChecking=no guest.prod -- uname -a"
        );
    }
}
