//! The virtual machine monitor layer (KubeVirt's virt-launcher, on one host): a VM run's runtime
//! directory, the QEMU command line, our own QMP client, starting/stopping/adopting QEMU and swtpm as
//! their parent, and one passt per pod-network card.

pub mod cmdline;
pub mod console;
pub mod convert;
pub mod disks;
pub mod engine;
pub mod kvm;
pub mod launcher;
pub mod machine;
pub mod passt;
pub mod process;
pub mod qmp;
pub mod runtime;
pub mod state;
