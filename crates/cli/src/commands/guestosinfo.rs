//! `ferrovirt guestosinfo NAME`: what the guest agent of a running VirtualMachine reports (the
//! `guestosinfo` subresource: agent version and commands, host name, OS, time zone), printed as
//! JSON as `virtctl guestosinfo` prints it.

use std::process::ExitCode;

use clap::Args;

use crate::client::{Client, ClientArgs, ClientError};

/// Arguments of `ferrovirt guestosinfo`.
#[derive(Debug, Args)]
pub struct GuestOsInfoArgs {
    /// The VirtualMachine (its instance has the same name).
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(args: &GuestOsInfoArgs) -> ExitCode {
    match guestosinfo(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

fn guestosinfo(args: &GuestOsInfoArgs) -> Result<(), ClientError> {
    let client = Client::from_args(&args.client)?;
    let path = format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{}/virtualmachineinstances/{}/guestosinfo",
        client.namespace(),
        args.name
    );
    let info = client.get(&path)?;
    let text = serde_json::to_string_pretty(&info).map_err(|e| ClientError::Decode {
        what: format!("GET {path}"),
        detail: e.to_string(),
    })?;
    println!("{text}");
    Ok(())
}
