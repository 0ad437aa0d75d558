//! `ferrovirt serve`: the Kubernetes-style REST API (axum) over the store, admission through the
//! api crate, and the level-triggered controllers that turn VirtualMachines into running VMs through
//! the vmm crate.
