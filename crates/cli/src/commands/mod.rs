//! One module per subcommand.

pub mod apply;
pub mod audit;
pub mod completion;
pub mod console;
pub mod delete;
pub mod describe;
pub mod efi;
pub mod get;
pub mod guestosinfo;
pub mod image_upload;
pub mod kubeconfig;
pub mod logs;
pub mod migrate;
pub mod port_forward;
pub mod run;
pub mod serve;
pub mod serve_config;
pub mod snapshot;
pub mod ssh;
pub mod state;
pub mod tpm;
pub mod validate;
pub mod vm_action;
pub mod vmexport;
pub mod vnc;
