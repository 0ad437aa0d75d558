//! The virtual machine monitor layer (KubeVirt's virt-launcher, on one host): a VM run's runtime
//! directory, the QEMU command line, our own QMP and guest agent (`agent`) clients, starting/stopping/adopting QEMU and swtpm as
//! their parent, the graphical console (`display`: video device, tablets, VNC on a unix socket),
//! one passt per pod-network card in a network namespace of its own that pasta connects to the
//! host (`netns`: also how `portforward` reaches the guest's ports), host disks opened beneath their allowed roots (`hostpath`),
//! CD-ROM drives (`cdrom`), Hyper-V enlightenments (`hyperv`), the capped serial log
//! (`serial_log`), snapshots of a VM's state and disks, offline and online, and restoring them
//! (`vm_snapshot`), the ending of processes a start left unrecorded when its manager died
//! (`orphans`), the list of spec fields it accepts but does not act on (`ignored`), the guest
//! agent client (`agent`), and what a start tells about the TPM's trust: the EK certificates'
//! fingerprints (`ek`) and whether this boot's PCR measurements will differ from the last one's
//! (`boot_guard`); encryption at rest of the persistent state with the VM's data key
//! (`state_keys`, on `ferrovirt_keys`); TPMs manufactured ahead of need and refilled in the
//! background (`tpm_pool`).

/// The firmware crate, for callers that show or edit UEFI variables through `efi_vars`.
pub use ferrovirt_firmware as firmware;

pub mod agent;
pub mod boot_guard;
pub mod cdrom;
pub mod cmdline;
pub mod console;
pub mod convert;
pub mod disks;
pub mod display;
pub mod efi_vars;
pub mod ek;
pub mod engine;
pub mod hostpath;
pub mod hyperv;
pub mod ignored;
pub mod kvm;
pub mod launcher;
pub mod machine;
pub mod migration;
pub mod netns;
pub mod orphans;
pub mod passt;
pub mod process;
pub mod qmp;
pub mod rekey;
pub mod runtime;
pub mod serial_log;
pub mod settle_lock;
pub mod state;
pub mod state_keys;
pub mod tpm_pool;
pub mod vm_snapshot;
