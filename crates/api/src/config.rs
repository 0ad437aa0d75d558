//! The cluster configuration: the embedded defaults (a KubeVirt object with the `VMPersistentState`
//! and `HostDisk` feature gates, and a default `local-path` StorageClass for backend storage), and
//! [`ClusterConfig`], the view of a KubeVirt object that admission and controllers read.

use std::collections::BTreeMap;

use crate::core::{DEFAULT_CLASS_ANNOTATION, StorageClass};
use crate::kubevirt::{
    API_VERSION, DeveloperConfiguration, KubeVirt, KubeVirtConfiguration, KubeVirtSpec,
};
use crate::meta::ObjectMeta;

/// Feature gate enabling persistent TPM and EFI state (backend storage).
pub const VM_PERSISTENT_STATE_GATE: &str = "VMPersistentState";
/// Feature gate enabling `hostDisk` volumes.
pub const HOST_DISK_GATE: &str = "HostDisk";
/// Feature gate enabling KubeVirt's decentralized live migration (`runStrategy: WaitAsReceiver`,
/// `VirtualMachineInstanceMigration` `spec.sendTo` / `spec.receive`).
pub const DECENTRALIZED_LIVE_MIGRATION_GATE: &str = "DecentralizedLiveMigration";
/// Name and namespace of the embedded KubeVirt object (as KubeVirt's operator installs it).
pub const DEFAULT_KUBEVIRT_NAME: &str = "kubevirt";
/// Namespace of the embedded KubeVirt object.
pub const DEFAULT_KUBEVIRT_NAMESPACE: &str = "kubevirt";
/// Name of the embedded default StorageClass.
pub const DEFAULT_STORAGE_CLASS_NAME: &str = "local-path";
/// Provisioner of the embedded default StorageClass.
pub const DEFAULT_PROVISIONER: &str = "ferrovirt.io/local-path";

/// The embedded KubeVirt object: feature gates `VMPersistentState`, `HostDisk` and
/// `DecentralizedLiveMigration` enabled.
pub fn default_kubevirt() -> KubeVirt {
    KubeVirt {
        api_version: API_VERSION.to_owned(),
        kind: "KubeVirt".to_owned(),
        metadata: ObjectMeta {
            name: Some(DEFAULT_KUBEVIRT_NAME.to_owned()),
            namespace: Some(DEFAULT_KUBEVIRT_NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        spec: KubeVirtSpec {
            configuration: Some(KubeVirtConfiguration {
                vm_state_storage_class: None,
                developer_configuration: Some(DeveloperConfiguration {
                    feature_gates: Some(vec![
                        VM_PERSISTENT_STATE_GATE.to_owned(),
                        HOST_DISK_GATE.to_owned(),
                        DECENTRALIZED_LIVE_MIGRATION_GATE.to_owned(),
                    ]),
                    extra: Default::default(),
                }),
                extra: Default::default(),
            }),
            extra: Default::default(),
        },
        status: None,
        extra: Default::default(),
    }
}

/// The embedded default StorageClass `local-path` (cluster default, used for backend storage).
pub fn default_storage_class() -> StorageClass {
    StorageClass {
        api_version: "storage.k8s.io/v1".to_owned(),
        kind: "StorageClass".to_owned(),
        metadata: ObjectMeta {
            name: Some(DEFAULT_STORAGE_CLASS_NAME.to_owned()),
            annotations: Some(BTreeMap::from([(
                DEFAULT_CLASS_ANNOTATION.to_owned(),
                "true".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        provisioner: DEFAULT_PROVISIONER.to_owned(),
        parameters: None,
        reclaim_policy: Some("Delete".to_owned()),
        volume_binding_mode: Some("WaitForFirstConsumer".to_owned()),
        allow_volume_expansion: None,
        extra: Default::default(),
    }
}

/// What admission and controllers read from the KubeVirt object.
///
/// `Default` is an empty configuration (no feature gates), as a KubeVirt object without
/// `configuration`; [`ClusterConfig::embedded_default`] is ferrovirt's shipped configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `spec.configuration.developerConfiguration.featureGates`.
    pub feature_gates: Vec<String>,
    /// `spec.configuration.vmStateStorageClass`.
    pub vm_state_storage_class: Option<String>,
}

impl ClusterConfig {
    /// The view of a KubeVirt object.
    pub fn from_kubevirt(kubevirt: &KubeVirt) -> Self {
        let configuration = kubevirt.spec.configuration.as_ref();
        Self {
            feature_gates: configuration
                .and_then(|c| c.developer_configuration.as_ref())
                .and_then(|d| d.feature_gates.clone())
                .unwrap_or_default(),
            vm_state_storage_class: configuration.and_then(|c| c.vm_state_storage_class.clone()),
        }
    }

    /// The configuration of [`default_kubevirt`].
    pub fn embedded_default() -> Self {
        Self::from_kubevirt(&default_kubevirt())
    }

    /// Whether a feature gate is listed.
    pub fn is_enabled(&self, gate: &str) -> bool {
        self.feature_gates.iter().any(|g| g == gate)
    }

    /// `VMPersistentState` is enabled.
    pub fn vm_persistent_state_enabled(&self) -> bool {
        self.is_enabled(VM_PERSISTENT_STATE_GATE)
    }

    /// `DecentralizedLiveMigration` is enabled.
    pub fn decentralized_live_migration_enabled(&self) -> bool {
        self.is_enabled(DECENTRALIZED_LIVE_MIGRATION_GATE)
    }

    /// `HostDisk` is enabled.
    pub fn host_disk_enabled(&self) -> bool {
        self.is_enabled(HOST_DISK_GATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_enables_persistent_state_and_host_disk() {
        let config = ClusterConfig::embedded_default();
        assert!(config.vm_persistent_state_enabled());
        assert!(config.host_disk_enabled());
        assert!(!ClusterConfig::default().vm_persistent_state_enabled());
        assert!(default_storage_class().is_default_class());
    }
}
