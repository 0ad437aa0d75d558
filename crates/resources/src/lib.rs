//! What the API serves and what both sides of `ferrovirt serve` agree on, with no HTTP and no
//! controller loop in it (kube-rs' `kube-core` plays this part there): the catalogue of served
//! resources ([`catalogue`]: group, version, plural, kind, scope, short names), the KubeVirt object
//! semantics the API server and the controllers both read ([`kubevirt`]: run strategy, VMI
//! phases, finalizers), the cluster configuration and the objects a fresh store is seeded with
//! ([`cluster`]), what a VirtualMachineExport exports, its links and manifests ([`export`]), how a VM's instancetype and preference are found ([`instancetypes`]), the objects of a
//! live migration between hosts that the CLI, the UI and the controllers all write ([`migration`]), and
//! Kubernetes timestamps ([`time`]).
//!
//! Both `ferrovirt-apiserver` and `ferrovirt-controllers` depend on this crate; it depends on
//! neither.

pub mod catalogue;
pub mod cluster;
pub mod export;
pub mod instancetypes;
pub mod kubevirt;
pub mod migration;
pub mod time;

pub use catalogue::*;
