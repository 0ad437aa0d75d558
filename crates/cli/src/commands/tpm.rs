//! `ferrovirt tpm ek NAME [-o text|json|pem]`: the endorsement credentials of a VM's persistent
//! TPM from the server's `tpm/ek` subresource (read offline from the state; the VM need not run):
//! the EK certificates (RSA, ECC), the public keys they certify, the local CA chain and SHA-256
//! fingerprints. `-o pem` prints the EK certificates then the chain, ready for
//! `openssl verify -partial_chain` or an attestation verifier's trust store.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use crate::client::{Client, ClientArgs};

/// `ferrovirt tpm` subcommands.
#[derive(Debug, Subcommand)]
pub enum TpmCommand {
    /// The EK certificates, public keys, CA chain and fingerprints of a VM's persistent TPM.
    Ek(EkArgs),
}

/// How `tpm ek` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EkOutput {
    /// A summary per certificate.
    Text,
    /// The server's TPMEndorsementKey object.
    Json,
    /// The EK certificates, then the chain (issuer, root), as PEM.
    Pem,
}

/// Arguments of `ferrovirt tpm ek`.
#[derive(Debug, Args)]
pub struct EkArgs {
    /// The VirtualMachine.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: EkOutput,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The subresource path.
pub fn ek_path(namespace: &str, name: &str) -> String {
    format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}/tpm/ek"
    )
}

pub fn run(command: &TpmCommand) -> ExitCode {
    match command {
        TpmCommand::Ek(args) => ek(args),
    }
}

fn ek(args: &EkArgs) -> ExitCode {
    let result = Client::from_args(&args.client).and_then(|client| {
        client.json(
            "GET",
            &ek_path(client.namespace(), &args.name),
            "application/json",
            None,
        )
    });
    let body = match result {
        Ok(body) => body,
        Err(e) => return e.report(),
    };
    match args.output {
        EkOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        ),
        EkOutput::Pem => print!("{}", pem_bundle(&body)),
        EkOutput::Text => print!("{}", text(&body)),
    }
    ExitCode::SUCCESS
}

fn items<'a>(body: &'a Value, key: &str) -> &'a [Value] {
    body.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn field<'a>(item: &'a Value, key: &str) -> &'a str {
    item.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Every certificate's PEM: the EK certificates, then the chain.
pub fn pem_bundle(body: &Value) -> String {
    items(body, "certificates")
        .iter()
        .chain(items(body, "chain"))
        .map(|c| field(c, "pem"))
        .collect()
}

/// The summary `-o text` prints.
pub fn text(body: &Value) -> String {
    let mut out = String::new();
    for cert in items(body, "certificates") {
        let verified = if cert.get("chainVerified") == Some(&Value::Bool(true)) {
            "verifies against the chain below".to_owned()
        } else {
            format!("DOES NOT VERIFY: {}", field(cert, "chainError"))
        };
        out += &format!(
            "EK certificate ({}, NV index {})\n  SHA-256:     {}\n  Issuer:      {}\n  Serial:      {}\n  Valid:       {} to {}\n  Public key SHA-256: {}\n  Chain:       {verified}\n",
            field(cert, "type"),
            field(cert, "nvIndex"),
            field(cert, "sha256"),
            field(cert, "issuer"),
            field(cert, "serial"),
            field(cert, "notBefore"),
            field(cert, "notAfter"),
            field(cert, "publicKeySHA256"),
        );
    }
    for ca in items(body, "chain") {
        out += &format!(
            "CA certificate ({})\n  SHA-256:     {}\n  Subject:     {}\n  Issuer:      {}\n",
            field(ca, "role"),
            field(ca, "sha256"),
            field(ca, "subject"),
            field(ca, "issuer"),
        );
    }
    out + "(-o pem prints the certificates, -o json everything including the public keys)\n"
}
