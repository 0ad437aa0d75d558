//! `ferrovirt start|stop|restart NAME`: what `virtctl start|stop|restart` do: a PUT on the VM's
//! `subresources.kubevirt.io` endpoint. The controllers do the rest; the command returns at once.

use std::process::ExitCode;

use clap::Args;

use crate::client::{Client, ClientArgs};

/// The action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
        }
    }
}

/// Arguments of `ferrovirt start|stop|restart`.
#[derive(Debug, Args)]
pub struct VmActionArgs {
    /// The VirtualMachine.
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The subresource path of an action.
pub fn action_path(namespace: &str, name: &str, action: Action) -> String {
    format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}/{}",
        action.as_str()
    )
}

pub fn run(args: &VmActionArgs, action: Action) -> ExitCode {
    let result = Client::from_args(&args.client).and_then(|client| {
        client.json(
            "PUT",
            &action_path(client.namespace(), &args.name, action),
            "application/json",
            Some(("application/json", b"{}")),
        )
    });
    match result {
        Ok(_) => {
            println!("VM {} was scheduled to {}", args.name, action.as_str());
            ExitCode::SUCCESS
        }
        Err(e) => e.report(),
    }
}
