//! URL paths under `/api` and `/apis` to a [`Route`]: discovery of a group/version, a collection
//! (namespaced or cluster-wide), one object, its `status`, or a KubeVirt VM/VMI subresource
//! (`start`/`stop`/`restart`, `console`, `vnc`, `vnc/screenshot`, `serial-log`, `stategenerations`, `staterollback`, `staterekey`, `tpm/ek`, `efivars`), and
//! the kept state of deleted VMs (`deletedvmstates`).

use crate::error::ApiError;
use ferrovirt_resources::{self as resources, ResourceDef, SUBRESOURCES_GROUP};

/// An action of `subresources.kubevirt.io` on a VirtualMachine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmAction {
    Start,
    Stop,
    Restart,
}

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/api/v1`, `/apis/<group>/<version>`: an APIResourceList.
    GroupVersion { group: String, version: String },
    /// `/apis/<group>`: an APIGroup.
    Group { group: String },
    /// A list/create/watch endpoint; `namespace: None` lists across namespaces.
    Collection {
        resource: ResourceDef,
        namespace: Option<String>,
    },
    /// One object.
    Item {
        resource: ResourceDef,
        namespace: Option<String>,
        name: String,
    },
    /// `.../<name>/status`.
    Status {
        resource: ResourceDef,
        namespace: Option<String>,
        name: String,
    },
    /// `PUT /apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachines/NAME/<action>`.
    VmAction {
        namespace: String,
        name: String,
        action: VmAction,
    },
    /// `GET .../virtualmachineinstances/NAME/console` (WebSocket).
    Console { namespace: String, name: String },
    /// `GET .../virtualmachineinstances/NAME/vnc` (WebSocket): the graphical console.
    Vnc { namespace: String, name: String },
    /// `GET .../virtualmachineinstances/NAME/vnc/screenshot`: a PNG of the screen.
    VncScreenshot { namespace: String, name: String },
    /// `GET .../virtualmachineinstances/NAME/migrationtunnel/ID/CHANNEL` (WebSocket): one stream
    /// of an incoming live migration (`crate::migration_tunnel`).
    MigrationTunnel {
        namespace: String,
        name: String,
        migration_id: String,
        channel: TunnelChannel,
    },
    /// `GET .../virtualmachineinstances/NAME/portforward/PORT[/PROTOCOL]` and the same under
    /// `virtualmachines` (WebSocket): a TCP connection to a port of the guest.
    PortForward {
        namespace: String,
        name: String,
        /// As written in the path (checked by the handler, which names what is wrong).
        port: String,
        protocol: Option<String>,
        /// Addressed as `virtualmachines/NAME` (the instance of that VM).
        of_vm: bool,
    },
    /// `GET .../virtualmachineinstances/NAME/guestosinfo`: what the guest agent reports.
    GuestOsInfo { namespace: String, name: String },
    /// `GET .../virtualmachines/NAME/serial-log`: the serial output of the VM's runs.
    SerialLog { namespace: String, name: String },
    /// `GET .../virtualmachines/NAME/stategenerations`: the persistent-state generations.
    StateGenerations { namespace: String, name: String },
    /// `GET .../virtualmachines/NAME/tpm/ek`: the TPM's EK certificates and their CA chain.
    TpmEndorsementKey { namespace: String, name: String },
    /// `.../virtualmachines/NAME/efivars[/NAME-GUID]`: the VM's UEFI variables.
    EfiVars {
        namespace: String,
        name: String,
        id: Option<String>,
    },
    /// `PUT /apis/subresources.kubevirt.io/v1/namespaces/NS/persistentvolumeclaims/NAME/
    /// volumeimport?format=tar.gz|gzip|raw`: fill an empty, Bound PVC with the bytes of an
    /// export's volume (ferrovirt's own upload; `ferrovirt vmexport import`).
    VolumeImport { namespace: String, name: String },
    /// `PUT .../virtualmachines/NAME/staterollback`: put a generation back.
    StateRollback { namespace: String, name: String },
    /// `PUT .../virtualmachines/NAME/staterekey`: rotate the keys of its encrypted state.
    StateRekey { namespace: String, name: String },
    /// `/apis/subresources.kubevirt.io/v1/[namespaces/NS/]deletedvmstates`: the state
    /// generations kept for deleted VMs (`namespace: None`: all namespaces).
    DeletedVmStates { namespace: Option<String> },
    /// `.../namespaces/NS/deletedvmstates/UUID`: one deleted VM's kept state (by firmware UUID).
    DeletedVmState { namespace: String, uuid: String },
}

/// The channels of one migration's tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelChannel {
    /// QEMU's migration stream.
    Memory,
    /// The NBD connections of the block mirrors.
    Blocks,
    /// The backend-storage volume's files no QEMU stream carries (`meta/`, `swtpm-localca/`):
    /// a gzipped tar the server stages in the receiver's runtime dir
    /// (`storage::volume_files`).
    VolumeFiles,
}

impl TunnelChannel {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "memory" => Some(Self::Memory),
            "blocks" => Some(Self::Blocks),
            "volume-files" => Some(Self::VolumeFiles),
            _ => None,
        }
    }

    /// The receiving QEMU's socket name in the runtime dir for a relayed channel
    /// (`vmm::migration`'s caller picks the same); `None` for the volume files, which the
    /// server takes itself.
    pub fn socket_name(self) -> Option<&'static str> {
        match self {
            Self::Memory => Some(ferrovirt_vmm::migration::MEMORY_SOCKET),
            Self::Blocks => Some(ferrovirt_vmm::migration::BLOCKS_SOCKET),
            Self::VolumeFiles => None,
        }
    }
}

fn unknown(path: &str) -> ApiError {
    ApiError::not_found(format!(
        "the server could not find the requested resource (path {path})"
    ))
}

/// Parses the path after `/api/` (`core = true`) or `/apis/`.
pub fn parse(core: bool, rest: &str) -> Result<Route, ApiError> {
    let full = if core {
        format!("/api/{rest}")
    } else {
        format!("/apis/{rest}")
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, tail) = if core {
        match segments.split_first() {
            Some((version, tail)) => ("", *version, tail),
            None => return Err(unknown(&full)),
        }
    } else {
        match segments.as_slice() {
            [group] => {
                if resources::GROUP_VERSIONS.iter().any(|(g, _)| g == group) {
                    return Ok(Route::Group {
                        group: (*group).to_owned(),
                    });
                }
                return Err(unknown(&full));
            }
            [group, version, tail @ ..] => (*group, *version, tail),
            _ => return Err(unknown(&full)),
        }
    };
    let served = if core {
        version == "v1"
    } else {
        resources::GROUP_VERSIONS
            .iter()
            .any(|(g, v)| *g == group && *v == version)
    };
    if !served {
        return Err(unknown(&full));
    }
    if group == SUBRESOURCES_GROUP {
        return match tail {
            ["deletedvmstates"] => Ok(Route::DeletedVmStates { namespace: None }),
            ["namespaces", ns, "deletedvmstates"] => Ok(Route::DeletedVmStates {
                namespace: Some((*ns).to_owned()),
            }),
            ["namespaces", ns, "deletedvmstates", uuid] => Ok(Route::DeletedVmState {
                namespace: (*ns).to_owned(),
                uuid: (*uuid).to_owned(),
            }),
            [
                "namespaces",
                ns,
                "persistentvolumeclaims",
                name,
                "volumeimport",
            ] => Ok(Route::VolumeImport {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
            }),
            ["namespaces", ns, "virtualmachines", name, "serial-log"] => Ok(Route::SerialLog {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
            }),
            [
                "namespaces",
                ns,
                "virtualmachines",
                name,
                "stategenerations",
            ] => Ok(Route::StateGenerations {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
            }),
            ["namespaces", ns, "virtualmachines", name, "tpm", "ek"] => {
                Ok(Route::TpmEndorsementKey {
                    namespace: (*ns).to_owned(),
                    name: (*name).to_owned(),
                })
            }
            ["namespaces", ns, "virtualmachines", name, "efivars"] => Ok(Route::EfiVars {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
                id: None,
            }),
            ["namespaces", ns, "virtualmachines", name, "efivars", id] => Ok(Route::EfiVars {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
                id: Some((*id).to_owned()),
            }),
            ["namespaces", ns, "virtualmachines", name, "staterollback"] => {
                Ok(Route::StateRollback {
                    namespace: (*ns).to_owned(),
                    name: (*name).to_owned(),
                })
            }
            ["namespaces", ns, "virtualmachines", name, "staterekey"] => Ok(Route::StateRekey {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
            }),
            ["namespaces", ns, "virtualmachines", name, action] => {
                let action = match *action {
                    "start" => VmAction::Start,
                    "stop" => VmAction::Stop,
                    "restart" => VmAction::Restart,
                    _ => return Err(unknown(&full)),
                };
                Ok(Route::VmAction {
                    namespace: (*ns).to_owned(),
                    name: (*name).to_owned(),
                    action,
                })
            }
            [
                "namespaces",
                ns,
                kind @ ("virtualmachineinstances" | "virtualmachines"),
                name,
                "portforward",
                port,
                protocol @ ..,
            ] if protocol.len() <= 1 => Ok(Route::PortForward {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
                port: (*port).to_owned(),
                protocol: protocol.first().map(|p| (*p).to_owned()),
                of_vm: *kind == "virtualmachines",
            }),
            ["namespaces", ns, "virtualmachineinstances", name, "console"] => Ok(Route::Console {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
            }),
            ["namespaces", ns, "virtualmachineinstances", name, "vnc"] => Ok(Route::Vnc {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
            }),
            [
                "namespaces",
                ns,
                "virtualmachineinstances",
                name,
                "migrationtunnel",
                id,
                channel,
            ] => match TunnelChannel::parse(channel) {
                Some(channel) => Ok(Route::MigrationTunnel {
                    namespace: (*ns).to_owned(),
                    name: (*name).to_owned(),
                    migration_id: (*id).to_owned(),
                    channel,
                }),
                None => Err(unknown(&full)),
            },
            [
                "namespaces",
                ns,
                "virtualmachineinstances",
                name,
                "guestosinfo",
            ] => Ok(Route::GuestOsInfo {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
            }),
            [
                "namespaces",
                ns,
                "virtualmachineinstances",
                name,
                "vnc",
                "screenshot",
            ] => Ok(Route::VncScreenshot {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
            }),
            [] => Ok(Route::GroupVersion {
                group: group.to_owned(),
                version: version.to_owned(),
            }),
            _ => Err(unknown(&full)),
        };
    }
    let find = |plural: &str| resources::find(group, version, plural).ok_or_else(|| unknown(&full));
    let namespaced_only = |resource: ResourceDef| {
        if resource.namespaced {
            Ok(resource)
        } else {
            Err(unknown(&full))
        }
    };
    match tail {
        [] => Ok(Route::GroupVersion {
            group: group.to_owned(),
            version: version.to_owned(),
        }),
        // `namespaces/NAME/...` is a namespaced path unless it addresses the Namespace itself.
        ["namespaces", ns, plural, rest @ ..] if !matches!(*plural, "status" | "finalize") => {
            let resource = namespaced_only(find(plural)?)?;
            let namespace = Some((*ns).to_owned());
            match rest {
                [] => Ok(Route::Collection {
                    resource,
                    namespace,
                }),
                [name] => Ok(Route::Item {
                    resource,
                    namespace,
                    name: (*name).to_owned(),
                }),
                [name, "status"] => Ok(Route::Status {
                    resource,
                    namespace,
                    name: (*name).to_owned(),
                }),
                _ => Err(unknown(&full)),
            }
        }
        [plural] => Ok(Route::Collection {
            resource: find(plural)?,
            namespace: None,
        }),
        [plural, name] => {
            let resource = find(plural)?;
            if resource.namespaced {
                return Err(unknown(&full));
            }
            Ok(Route::Item {
                resource,
                namespace: None,
                name: (*name).to_owned(),
            })
        }
        [plural, name, "status"] => {
            let resource = find(plural)?;
            if resource.namespaced {
                return Err(unknown(&full));
            }
            Ok(Route::Status {
                resource,
                namespace: None,
                name: (*name).to_owned(),
            })
        }
        _ => Err(unknown(&full)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_resources::{NAMESPACES, PVCS, STORAGE_CLASSES, VMS};

    #[test]
    fn namespaced_paths() {
        assert_eq!(
            parse(false, "kubevirt.io/v1/namespaces/default/virtualmachines").unwrap(),
            Route::Collection {
                resource: VMS,
                namespace: Some("default".into())
            }
        );
        assert_eq!(
            parse(
                false,
                "kubevirt.io/v1/namespaces/default/virtualmachines/vm1"
            )
            .unwrap(),
            Route::Item {
                resource: VMS,
                namespace: Some("default".into()),
                name: "vm1".into()
            }
        );
        assert_eq!(
            parse(true, "v1/namespaces/ns1/persistentvolumeclaims/p/status").unwrap(),
            Route::Status {
                resource: PVCS,
                namespace: Some("ns1".into()),
                name: "p".into()
            }
        );
    }

    #[test]
    fn cluster_paths_and_namespaces() {
        assert_eq!(
            parse(true, "v1/namespaces").unwrap(),
            Route::Collection {
                resource: NAMESPACES,
                namespace: None
            }
        );
        assert_eq!(
            parse(true, "v1/namespaces/default").unwrap(),
            Route::Item {
                resource: NAMESPACES,
                namespace: None,
                name: "default".into()
            }
        );
        assert_eq!(
            parse(true, "v1/namespaces/default/status").unwrap(),
            Route::Status {
                resource: NAMESPACES,
                namespace: None,
                name: "default".into()
            }
        );
        assert_eq!(
            parse(false, "storage.k8s.io/v1/storageclasses/local-path").unwrap(),
            Route::Item {
                resource: STORAGE_CLASSES,
                namespace: None,
                name: "local-path".into()
            }
        );
        assert_eq!(
            parse(false, "kubevirt.io/v1/virtualmachines").unwrap(),
            Route::Collection {
                resource: VMS,
                namespace: None
            }
        );
    }

    #[test]
    fn subresources_and_unknowns() {
        assert_eq!(
            parse(
                false,
                "subresources.kubevirt.io/v1/namespaces/d/virtualmachines/vm/restart"
            )
            .unwrap(),
            Route::VmAction {
                namespace: "d".into(),
                name: "vm".into(),
                action: VmAction::Restart
            }
        );
        for (text, channel) in [
            ("memory", TunnelChannel::Memory),
            ("blocks", TunnelChannel::Blocks),
            ("volume-files", TunnelChannel::VolumeFiles),
        ] {
            assert_eq!(
                parse(
                    false,
                    &format!("subresources.kubevirt.io/v1/namespaces/d/virtualmachineinstances/vm/migrationtunnel/m1/{text}")
                )
                .unwrap(),
                Route::MigrationTunnel {
                    namespace: "d".into(),
                    name: "vm".into(),
                    migration_id: "m1".into(),
                    channel
                }
            );
        }
        assert_eq!(TunnelChannel::VolumeFiles.socket_name(), None);
        assert!(
            parse(
                false,
                "subresources.kubevirt.io/v1/namespaces/d/virtualmachineinstances/vm/migrationtunnel/m1/disks"
            )
            .is_err()
        );
        assert_eq!(
            parse(
                false,
                "subresources.kubevirt.io/v1/namespaces/d/virtualmachineinstances/vm/console"
            )
            .unwrap(),
            Route::Console {
                namespace: "d".into(),
                name: "vm".into()
            }
        );
        assert_eq!(
            parse(
                false,
                "subresources.kubevirt.io/v1/namespaces/d/virtualmachineinstances/vm/vnc"
            )
            .unwrap(),
            Route::Vnc {
                namespace: "d".into(),
                name: "vm".into()
            }
        );
        assert_eq!(
            parse(
                false,
                "subresources.kubevirt.io/v1/namespaces/d/virtualmachineinstances/vm/vnc/screenshot"
            )
            .unwrap(),
            Route::VncScreenshot {
                namespace: "d".into(),
                name: "vm".into()
            }
        );
        for bad in [
            "kubevirt.io/v1/namespaces/default/storageclasses",
            "kubevirt.io/v1/virtualmachines/vm1",
            "apps/v1/deployments",
            "kubevirt.io/v2/virtualmachines",
            "harvesterhci.io/v1/virtualmachinetemplates",
            "kubevirt.io/v1/namespaces/d/virtualmachines/vm/a/b",
            "subresources.kubevirt.io/v1/namespaces/d/virtualmachineinstances/vm/vnc/other",
        ] {
            assert_eq!(parse(false, bad).unwrap_err().code, 404, "{bad}");
        }
        assert_eq!(parse(true, "").unwrap_err().code, 404);
    }
}
