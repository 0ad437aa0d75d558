//! The `ferrovirt` command line: `serve`, offline `validate`, and kubectl/virtctl-style client
//! commands that talk to the REST API.
//!
//! Structure: [`Cli`] parses the arguments (clap derive); [`Command`] has one variant per
//! subcommand, each implemented in its own module under `commands/`, returning an [`ExitCode`].
//! The client commands share [`connection`] (kubeconfig, context and server with kubectl's
//! rules), [`client`] (HTTP over TLS with the kubeconfig's credentials, Status errors),
//! [`resource`] (kubectl's type names) and [`output`] (tables, YAML, JSON). `kubeconfig create`
//! and `audit` run on the server's host and read its data dir.

pub mod client;
mod commands;
pub mod connection;
pub mod output;
pub mod resource;

use commands::vm_action::Action;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The `ferrovirt` command line.
#[derive(Debug, Parser)]
#[command(
    name = "ferrovirt",
    version,
    about = "A KubeVirt-compatible virtual machine manager for one host"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifests offline with KubeVirt's admission rules (no server needed).
    Validate(commands::validate::ValidateArgs),
    /// Run one VirtualMachine in the foreground with the engine alone (no server); its serial
    /// console goes to standard output.
    Run(commands::run::RunArgs),
    /// Inspect and roll back the persistent TPM/EFI state generations of a stopped VM.
    #[command(subcommand)]
    State(commands::state::StateCommand),
    /// A VM's UEFI variables: `efi vars list|get|set|delete NAME [VAR-GUID]` (set and delete
    /// need the VM stopped; they record a state generation first and name the PCRs that change).
    #[command(subcommand)]
    Efi(commands::efi::EfiCommand),
    /// The TPM's endorsement credentials: `tpm ek NAME` prints the EK certificates, public keys,
    /// CA chain and fingerprints of a VM's persistent TPM (the VM need not run).
    #[command(subcommand)]
    Tpm(commands::tpm::TpmCommand),
    /// Run the API server, the controllers and the VM engine (state in --data-dir).
    Serve(commands::serve::ServeArgs),
    /// Create or update objects from manifests (kubectl apply).
    Apply(commands::apply::ApplyArgs),
    /// List or show objects: vm, vmi, pvc, sc, kubevirt, ns, events, vmsnapshot, vmrestore,
    /// vmclone (kubectl get).
    Get(commands::get::GetArgs),
    /// Show a VirtualMachine: firmware, TPM, state persistence, status, PVC, events.
    Describe(commands::describe::DescribeArgs),
    /// Delete objects by type and name or from manifests (kubectl delete).
    Delete(commands::delete::DeleteArgs),
    /// Start a VirtualMachine (virtctl start).
    Start(commands::vm_action::VmActionArgs),
    /// Stop a VirtualMachine (virtctl stop).
    Stop(commands::vm_action::VmActionArgs),
    /// Restart a VirtualMachine (virtctl restart).
    Restart(commands::vm_action::VmActionArgs),
    /// Snapshot a VirtualMachine (its spec, persistent TPM state, UEFI variables and PVC disks):
    /// offline when stopped, online (vCPUs paused briefly) when running; waits for it.
    Snapshot(commands::snapshot::SnapshotArgs),
    /// Restore a VirtualMachineSnapshot into its stopped VM, or with --to into a new VM.
    Restore(commands::snapshot::RestoreArgs),
    /// Clone a VirtualMachine into a new one (new firmware UUID); --tpm fresh / --efi reset give
    /// the clone a new TPM identity / the firmware's default UEFI variables.
    Clone(commands::snapshot::CloneArgs),
    /// Upload a disk image into a DataVolume (virtctl image-upload): `image-upload dv NAME
    /// --size 10Gi --image-path FILE` creates it, sends the file with a progress bar and waits
    /// until the image is checked and published.
    #[command(name = "image-upload")]
    ImageUpload(commands::image_upload::ImageUploadArgs),
    /// Export a VirtualMachine, VirtualMachineSnapshot or PVC with KubeVirt's
    /// VirtualMachineExport: `vmexport create|download|delete NAME` (virtctl vmexport), and
    /// `vmexport import DIR` of a download into this server.
    #[command(subcommand)]
    Vmexport(commands::vmexport::VmExportCommand),
    /// Move a running VirtualMachine to another ferrovirt host live (KubeVirt's decentralized
    /// live migration): `migrate NAME --to DEST.kubeconfig` creates the receiver there and the
    /// sender here, shows the progress and the measured downtime.
    Migrate(commands::migrate::MigrateArgs),
    /// Attach to the serial console of a running VirtualMachine; Ctrl-] detaches (virtctl console).
    Console(commands::console::ConsoleArgs),
    /// The graphical console of a running VirtualMachine for a local VNC viewer, or a PNG of its
    /// screen with `vnc screenshot NAME -f FILE` (virtctl vnc).
    Vnc(commands::vnc::VncArgs),
    /// Forward local ports on 127.0.0.1 to TCP ports of a running guest: `port-forward vm/NAME
    /// 2222:22` (virtctl port-forward); `--stdio` relays one port on standard input/output.
    PortForward(commands::port_forward::PortForwardArgs),
    /// Log in to a guest with the local ssh through the port-forward: `ssh user@vm/NAME [-i KEY]
    /// [-c CMD]` (virtctl ssh --local-ssh).
    Ssh(commands::ssh::SshArgs),
    /// Print what the guest agent of a running VirtualMachine reports: OS, host name, agent
    /// version (virtctl guestosinfo).
    Guestosinfo(commands::guestosinfo::GuestOsInfoArgs),
    /// Print the serial console output of a VirtualMachine; -f follows it (kubectl logs).
    Logs(commands::logs::LogsArgs),
    /// Kubeconfig files for other users (run on the server's host).
    #[command(subcommand)]
    Kubeconfig(commands::kubeconfig::KubeconfigCommand),
    /// Print the audit log of `ferrovirt serve` (run on the server's host).
    Audit(commands::audit::AuditArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(commands::completion::CompletionArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version go to stdout with success; usage errors exit 2 as clap does.
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // A bug must never surface as exit code 101: report it as an ordinary failure.
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(code) => code,
        Err(_) => {
            eprintln!(
                "error: internal error in ferrovirt (this is a bug; please report it with the input that caused it)"
            );
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate(args) => commands::validate::run(&args),
        Command::Run(args) => commands::run::run(&args),
        Command::State(command) => commands::state::run(&command),
        Command::Tpm(command) => commands::tpm::run(&command),
        Command::Efi(command) => commands::efi::run(&command),
        Command::Serve(args) => commands::serve::run(&args),
        Command::Apply(args) => commands::apply::run(&args),
        Command::Get(args) => commands::get::run(&args),
        Command::Describe(args) => commands::describe::run(&args),
        Command::Delete(args) => commands::delete::run(&args),
        Command::Start(args) => commands::vm_action::run(&args, Action::Start),
        Command::Stop(args) => commands::vm_action::run(&args, Action::Stop),
        Command::Restart(args) => commands::vm_action::run(&args, Action::Restart),
        Command::Snapshot(args) => commands::snapshot::run_snapshot(&args),
        Command::ImageUpload(args) => commands::image_upload::run(&args),
        Command::Restore(args) => commands::snapshot::run_restore(&args),
        Command::Clone(args) => commands::snapshot::run_clone(&args),
        Command::Vmexport(command) => commands::vmexport::run(&command),
        Command::Migrate(args) => commands::migrate::run(&args),
        Command::Console(args) => commands::console::run(&args),
        Command::Vnc(args) => commands::vnc::run(&args),
        Command::PortForward(args) => commands::port_forward::run(&args),
        Command::Ssh(args) => commands::ssh::run(&args),
        Command::Guestosinfo(args) => commands::guestosinfo::run(&args),
        Command::Logs(args) => commands::logs::run(&args),
        Command::Kubeconfig(command) => commands::kubeconfig::run(&command),
        Command::Audit(args) => commands::audit::run(&args),
        Command::Completion(args) => commands::completion::run(&args),
    }
}
