//! The KubeVirt-compatible API model: typed `kubevirt.io/v1` VirtualMachine,
//! VirtualMachineInstance and KubeVirt objects, KubeVirt's `snapshot.kubevirt.io` snapshots, snapshot contents and
//! restores, `clone.kubevirt.io` clones and `export.kubevirt.io` exports, Harvester's `harvesterhci.io/v1beta1` VM templates
//! and template versions, CDI's `cdi.kubevirt.io/v1beta1` DataVolumes and
//! `upload.cdi.kubevirt.io/v1beta1` UploadTokenRequests, `instancetype.kubevirt.io/v1beta1` instancetypes and preferences (and how
//! they are applied to a VM), the Kubernetes objects they lean on (metadata,
//! StorageClass, PersistentVolumeClaim), parsing of YAML/JSON manifests, KubeVirt's defaults and its
//! admission validation (same rules, messages and field paths). Fields ferrovirt does not act on are
//! kept as written, so what a user applies comes back unchanged. Nothing here touches disk, processes
//! or the network.

pub mod cdi;
pub mod clone;
pub mod config;
pub mod core;
pub mod defaults;
pub mod export;
pub mod harvester;
pub mod hyperv_dependencies;
pub mod instancetype;
pub mod kubevirt;
pub mod meta;
pub mod parse;
pub mod quantity;
pub mod snapshot;
pub mod status;
pub mod validation;

pub use config::ClusterConfig;
pub use parse::{Object, ParseError, parse_documents};
pub use status::{CauseType, Invalid, StatusCause};
pub use validation::{AdmissionContext, admit};
