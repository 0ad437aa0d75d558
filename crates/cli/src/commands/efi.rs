//! `ferrovirt efi vars list|get|set|delete NAME [VAR-GUID]`: a VM's UEFI variables through the
//! server's `efivars` subresource (its persistent VARS file). Changes need the VM stopped, record
//! a state generation first and print which PCRs the next boot measures differently.
//! `ferrovirt efi enroll NAME --pk/--kek/--db/--dbx FILE` writes a user's own Secure Boot keys the
//! same way (one `EFI_SIGNATURE_LIST` per certificate, attributes 0x27).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use ferrovirt_vmm::firmware::EfiGuid;
use ferrovirt_vmm::firmware::vars_write::{ATTR_SECURE_BOOT_KEYS, x509_signature_list};

use crate::client::{Client, ClientArgs, ClientError};

/// `ferrovirt efi` subcommands.
#[derive(Debug, Subcommand)]
pub enum EfiCommand {
    /// List, show, set or delete UEFI variables of a VM (persistent EFI only).
    #[command(subcommand)]
    Vars(VarsCommand),
    /// Enroll your own Secure Boot keys (X.509 certificates, PEM or DER) into a stopped VM's
    /// VARS: each given one replaces PK, KEK, db or dbx. Changes PCR7: suspend BitLocker first.
    Enroll(EnrollArgs),
}

/// `ferrovirt efi vars` subcommands.
#[derive(Debug, Subcommand)]
pub enum VarsCommand {
    /// NAME, GUID, attributes and size of every variable.
    List(VmArg),
    /// One variable's data (hex, or raw bytes with --raw).
    Get {
        #[command(flatten)]
        target: VarArgs,
        /// Print the data as raw bytes instead of hex.
        #[arg(long)]
        raw: bool,
    },
    /// Set a variable (the VM must be stopped).
    Set {
        #[command(flatten)]
        target: VarArgs,
        /// The data as hex digits.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        hex: Option<String>,
        /// The data from a file.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Attributes (default: the variable's, else 7 = NV+BS+RT), e.g. 7 or 0x27.
        #[arg(long)]
        attrs: Option<String>,
    },
    /// Delete a variable (the VM must be stopped).
    Delete(VarArgs),
}

#[derive(Debug, Args)]
pub struct VmArg {
    /// The VirtualMachine.
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct VarArgs {
    /// The VirtualMachine.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The variable, as NAME-GUID (e.g. SecureBootEnable-f0a30bc7-af08-4556-99c4-001009c93a44).
    #[arg(value_name = "VAR-GUID")]
    pub variable: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn path(namespace: &str, name: &str, id: Option<&str>) -> String {
    let base = format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}/efivars"
    );
    match id {
        Some(id) => format!("{base}/{id}"),
        None => base,
    }
}

fn parse_attrs(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    text.len()
        .is_multiple_of(2)
        .then(|| {
            (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten()
}

pub fn run(command: &EfiCommand) -> ExitCode {
    let vars = match command {
        EfiCommand::Vars(vars) => vars,
        EfiCommand::Enroll(args) => {
            return match enroll(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => e.report(),
            };
        }
    };
    let result = match vars {
        VarsCommand::List(vm) => list(vm),
        VarsCommand::Get { target, raw } => get(target, *raw),
        VarsCommand::Set {
            target,
            hex,
            file,
            attrs,
        } => set(target, hex.as_deref(), file.as_deref(), attrs.as_deref()),
        VarsCommand::Delete(target) => delete(target),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

fn list(vm: &VmArg) -> Result<(), ClientError> {
    let client = Client::from_args(&vm.client)?;
    let body = client.json(
        "GET",
        &path(client.namespace(), &vm.name, None),
        "application/json",
        None,
    )?;
    println!(
        "{:<32} {:<36} {:>10} {:>6}",
        "NAME", "GUID", "ATTRIBUTES", "SIZE"
    );
    for item in body["items"].as_array().map_or(&[][..], Vec::as_slice) {
        println!(
            "{:<32} {:<36} {:>#10x} {:>6}",
            item["name"].as_str().unwrap_or(""),
            item["guid"].as_str().unwrap_or(""),
            item["attributes"].as_u64().unwrap_or(0),
            item["size"].as_u64().unwrap_or(0),
        );
    }
    Ok(())
}

fn get(target: &VarArgs, raw: bool) -> Result<(), ClientError> {
    let client = Client::from_args(&target.client)?;
    let body = client.json(
        "GET",
        &path(client.namespace(), &target.name, Some(&target.variable)),
        "application/json",
        None,
    )?;
    let data = body["data"].as_str().unwrap_or("");
    if raw {
        use std::io::Write;
        let bytes = unhex(data).unwrap_or_default();
        let _ = std::io::stdout().write_all(&bytes);
    } else {
        println!("{data}");
    }
    Ok(())
}

fn report_change(body: &Value) {
    println!("{}", body["message"].as_str().unwrap_or("changed"));
}

fn set(
    target: &VarArgs,
    hex: Option<&str>,
    file: Option<&std::path::Path>,
    attrs: Option<&str>,
) -> Result<(), ClientError> {
    let data = match (hex, file) {
        (Some(hex), _) => unhex(hex.trim()).ok_or_else(|| {
            ClientError::Usage(format!("--hex {hex:?}: not an even number of hex digits"))
        })?,
        (None, Some(file)) => std::fs::read(file).map_err(|e| {
            ClientError::Usage(format!("--file {}: cannot read: {e}", file.display()))
        })?,
        (None, None) => {
            return Err(ClientError::Usage(
                "give the data with --hex or --file".to_owned(),
            ));
        }
    };
    let attributes = match attrs {
        Some(text) => Some(parse_attrs(text).ok_or_else(|| {
            ClientError::Usage(format!("--attrs {text:?}: a number such as 7 or 0x27"))
        })?),
        None => None,
    };
    let hex_data: String = data.iter().map(|b| format!("{b:02x}")).collect();
    let body = serde_json::to_vec(&json!({"data": hex_data, "attributes": attributes}))
        .unwrap_or_default();
    let client = Client::from_args(&target.client)?;
    let answer = client.json(
        "PUT",
        &path(client.namespace(), &target.name, Some(&target.variable)),
        "application/json",
        Some(("application/json", &body)),
    )?;
    report_change(&answer);
    Ok(())
}

fn delete(target: &VarArgs) -> Result<(), ClientError> {
    let client = Client::from_args(&target.client)?;
    let answer = client.json(
        "DELETE",
        &path(client.namespace(), &target.name, Some(&target.variable)),
        "application/json",
        None,
    )?;
    report_change(&answer);
    Ok(())
}

/// Arguments of `ferrovirt efi enroll`.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The VirtualMachine (stopped).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Platform Key: an X.509 certificate (PEM or DER file).
    #[arg(long, value_name = "FILE")]
    pub pk: Option<std::path::PathBuf>,
    /// Key Exchange Key certificate (replaces KEK).
    #[arg(long, value_name = "FILE")]
    pub kek: Option<std::path::PathBuf>,
    /// Allowed-signatures certificate (replaces db).
    #[arg(long, value_name = "FILE")]
    pub db: Option<std::path::PathBuf>,
    /// Forbidden-signatures certificate (replaces dbx).
    #[arg(long, value_name = "FILE")]
    pub dbx: Option<std::path::PathBuf>,
    /// First put the firmware's VARS template back (all variables, boot entries and keys as the
    /// first start had them); then any keys given are enrolled.
    #[arg(long)]
    pub reset: bool,
    /// Add Microsoft's 2023 certificates (the 2011 CAs expire in 2026): the KEK 2K CA 2023 to KEK,
    /// the Windows UEFI CA 2023, the Microsoft UEFI CA 2023 and the Option ROM UEFI CA 2023 to db;
    /// appended, the 2011 ones stay. Suspend BitLocker in the guest before its next start.
    #[arg(long = "microsoft-2023", conflicts_with_all = ["kek", "db"])]
    pub microsoft_2023: bool,
    /// The owner GUID written with each certificate.
    #[arg(long, default_value = OWNER_GUID)]
    pub owner: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// ferrovirt's default signature owner GUID.
const OWNER_GUID: &str = "6d8e2f1a-4b3c-4e5d-9f60-7a8b9c0d1e30";
const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
const IMAGE_SECURITY: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";

/// A certificate file as DER (PEM `CERTIFICATE` blocks are decoded; the first one is used).
fn certificate_der(path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ClientError::Usage(format!("{}: cannot read: {e}", path.display())))?;
    if bytes.starts_with(b"-----BEGIN") {
        let block = pem::parse(&bytes).map_err(|e| {
            ClientError::Usage(format!("{}: not a PEM certificate: {e}", path.display()))
        })?;
        if block.tag() != "CERTIFICATE" {
            return Err(ClientError::Usage(format!(
                "{}: a PEM {} block, not a CERTIFICATE",
                path.display(),
                block.tag()
            )));
        }
        return Ok(block.into_contents());
    }
    if bytes.first() != Some(&0x30) {
        return Err(ClientError::Usage(format!(
            "{}: neither a PEM nor a DER X.509 certificate",
            path.display()
        )));
    }
    Ok(bytes)
}

fn enroll(args: &EnrollArgs) -> Result<(), ClientError> {
    let owner = EfiGuid::parse(&args.owner)
        .ok_or_else(|| ClientError::Usage(format!("--owner {:?}: not a GUID", args.owner)))?;
    // db and dbx first, PK last: the order a firmware in setup mode needs (offline it is the
    // same file, but a reader sees keys appear in the usual order).
    let wanted = [
        ("db", IMAGE_SECURITY, &args.db),
        ("dbx", IMAGE_SECURITY, &args.dbx),
        ("KEK", GLOBAL, &args.kek),
        ("PK", GLOBAL, &args.pk),
    ];
    if !args.reset && !args.microsoft_2023 && wanted.iter().all(|(_, _, f)| f.is_none()) {
        return Err(ClientError::Usage(
            "give --reset, --microsoft-2023 or at least one of --pk, --kek, --db, --dbx".to_owned(),
        ));
    }
    let lists: Vec<(&str, &str, Vec<u8>)> = wanted
        .iter()
        .filter_map(|(name, guid, file)| file.as_ref().map(|f| (name, guid, f)))
        .map(|(name, guid, file)| {
            certificate_der(file).map(|der| (*name, *guid, x509_signature_list(&owner, &der)))
        })
        .collect::<Result<_, _>>()?;
    let client = Client::from_args(&args.client)?;
    if args.reset {
        let answer = client.json(
            "DELETE",
            &path(client.namespace(), &args.name, None),
            "application/json",
            None,
        )?;
        report_change(&answer);
    }
    if args.microsoft_2023 {
        enroll_microsoft_2023(&client, &args.name)?;
    }
    for (name, guid, list) in lists {
        let hex_data: String = list.iter().map(|b| format!("{b:02x}")).collect();
        let body =
            serde_json::to_vec(&json!({"data": hex_data, "attributes": ATTR_SECURE_BOOT_KEYS}))
                .unwrap_or_default();
        let answer = client.json(
            "PUT",
            &path(
                client.namespace(),
                &args.name,
                Some(&format!("{name}-{guid}")),
            ),
            "application/json",
            Some(("application/json", &body)),
        )?;
        report_change(&answer);
    }
    Ok(())
}

/// `PUT .../efivars` `{"enroll": "microsoft-2023"}`: the server appends Microsoft's 2023 KEK and db
/// certificates (`ferrovirt_firmware::microsoft_2023`) and answers what it added.
fn enroll_microsoft_2023(client: &Client, vm: &str) -> Result<(), ClientError> {
    let body = serde_json::to_vec(&json!({"enroll": "microsoft-2023"})).unwrap_or_default();
    let answer = client.json(
        "PUT",
        &path(client.namespace(), vm, None),
        "application/json",
        Some(("application/json", &body)),
    )?;
    report_change(&answer);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_and_hex() {
        assert_eq!(parse_attrs("7"), Some(7));
        assert_eq!(parse_attrs("0x27"), Some(0x27));
        assert_eq!(parse_attrs("x"), None);
        assert_eq!(unhex("00ff"), Some(vec![0, 255]));
        assert_eq!(unhex("0"), None);
    }
}
