//! What a VirtualMachineExport means, for both halves of `serve`: which volumes it exports
//! ([`resolve`]: KubeVirt's rules for a VM, VirtualMachineSnapshot or PVC source, with its
//! conditions and messages, and a running VM exported only through a snapshot), the formats and
//! URLs of each volume and the manifests (`status.links`, [`links`]), when it expires
//! ([`expires_unix`]), and the manifests `all` and `auth-header-secret` a KubeVirt cluster (or
//! another ferrovirt) applies to import it ([`manifests_all`], [`header_secret`]): the VM as it
//! is (its `firmware.uuid` kept, so the TPM directory `swtpm/<uuid>/` matches), DataVolumes whose
//! `http` sources point at the export with the CA ConfigMap and the header Secret, and for the
//! backend-storage volume a DataVolume of `contentType: archive` named and labelled as KubeVirt
//! finds a VM's backend PVC (`persistent-state-for-<vm>`, label `persistent-state-for: <vm>`).

use ferrovirt_api::export::{
    self as api, EXPORT_API_VERSION, ExportLink, ExportLinks, ExportManifest, ExportVolume,
    ExportVolumeFormat, format, manifest, paths, reason, source_kind,
};
use ferrovirt_api::snapshot::parse_go_duration;
use ferrovirt_storage::backend::{PVC_LABEL_KEY, PVC_SIZE, legacy_pvc_name};
use serde_json::{Value, json};

use crate::kubevirt::{is_final, meta_str};
use crate::time::parse_rfc3339;

/// Where an exported volume's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeContent {
    /// A filesystem PVC holding a disk image (`disk.img`, KubeVirt's content type `kubevirt`):
    /// served as `raw` and `gzip`. `volume` is the local-path volume (`spec.volumeName`).
    DiskImage { volume: String },
    /// A filesystem PVC of files (the backend-storage PVC): served as `dir` and `tar.gz`.
    Files { volume: String },
    /// A disk image kept in a snapshot (`<data>/snapshots/<content>/data/disk-<disk>`).
    SnapshotDisk { content: String, disk: String },
    /// The backend-storage volume of a snapshot, laid out from its `tpm-state` and `vars`
    /// files (`swtpm/<uuid>/tpm2/tpm2-00.permall`, `nvram/<vm>_VARS.fd`).
    SnapshotState {
        content: String,
        vm_name: String,
        uuid: String,
    },
}

impl VolumeContent {
    /// KubeVirt's formats for this content, in its order.
    pub fn formats(&self) -> &'static [&'static str] {
        match self {
            VolumeContent::DiskImage { .. } | VolumeContent::SnapshotDisk { .. } => {
                &[format::RAW, format::GZIP]
            }
            VolumeContent::Files { .. } | VolumeContent::SnapshotState { .. } => {
                &[format::DIR, format::TAR_GZ]
            }
        }
    }

    /// True for the backend-storage volume (imported with `contentType: archive`).
    pub fn is_archive(&self) -> bool {
        matches!(
            self,
            VolumeContent::Files { .. } | VolumeContent::SnapshotState { .. }
        )
    }
}

/// One volume of an export, named as its PVC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedVolume {
    pub name: String,
    pub content: VolumeContent,
    /// The PVC's `spec` (access modes, volume mode, size) for the DataVolume of the manifests.
    pub claim_spec: Value,
}

/// What an export's source gives now.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceState {
    /// Exportable: the volumes, and the VM (as it was for a snapshot) when the source has one.
    Ready {
        volumes: Vec<ExportedVolume>,
        vm: Option<Value>,
    },
    /// Not (yet) exportable: KubeVirt's Ready condition reason and message; `vm_name` for
    /// `status.virtualMachineName`.
    NotReady {
        reason: &'static str,
        message: String,
        vm_name: Option<String>,
    },
}

/// The objects [`resolve`] reads (the controllers' cache, or the store).
pub trait ExportLookup {
    fn vm(&self, namespace: &str, name: &str) -> Option<Value>;
    fn vmi(&self, namespace: &str, name: &str) -> Option<Value>;
    fn pvc(&self, namespace: &str, name: &str) -> Option<Value>;
    /// The PVCs with the label `persistent-state-for: <vm>`.
    fn backend_pvcs(&self, namespace: &str, vm: &str) -> Vec<Value>;
    fn snapshot(&self, namespace: &str, name: &str) -> Option<Value>;
    /// The files a snapshot content holds (`tpm-state`, `vars`, `disk-<disk>`) and the VM as
    /// it was, from its manifest; `None` when the data is missing.
    fn snapshot_data(&self, content: &str) -> Option<(Vec<String>, Value)>;
}

fn bound_volume(pvc: &Value) -> Option<String> {
    (pvc.pointer("/status/phase").and_then(Value::as_str) == Some("Bound"))
        .then(|| pvc.pointer("/spec/volumeName").and_then(Value::as_str))
        .flatten()
        .map(str::to_owned)
}

/// The PVC names a VM's template uses (`persistentVolumeClaim.claimName`, `dataVolume.name`),
/// with their volume name.
fn claim_volumes(vm: &Value) -> Vec<(String, String)> {
    vm.pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let claim = v
                .pointer("/persistentVolumeClaim/claimName")
                .or_else(|| v.pointer("/dataVolume/name"))
                .and_then(Value::as_str)?;
            Some((
                v.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                claim.to_owned(),
            ))
        })
        .collect()
}

/// True when the VM keeps a TPM or EFI state in backend storage.
pub fn needs_backend_storage(vm: &Value) -> bool {
    let domain = vm.pointer("/spec/template/spec/domain");
    let tpm = domain
        .and_then(|d| d.pointer("/devices/tpm/persistent"))
        .and_then(Value::as_bool)
        == Some(true);
    let efi = domain
        .and_then(|d| d.pointer("/firmware/bootloader/efi/persistent"))
        .and_then(Value::as_bool)
        == Some(true);
    tpm || efi
}

fn firmware_uuid(vm: &Value) -> String {
    vm.pointer("/spec/template/spec/domain/firmware/uuid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The source's volumes, or why it cannot be exported now (KubeVirt's reasons and messages).
pub fn resolve(export: &Value, lookup: &dyn ExportLookup) -> SourceState {
    let ns = meta_str(export, "namespace");
    let kind = export
        .pointer("/spec/source/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = export
        .pointer("/spec/source/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match kind {
        source_kind::VM => resolve_vm(ns, name, lookup),
        source_kind::SNAPSHOT => resolve_snapshot(ns, name, lookup),
        _ => resolve_pvc(ns, name, lookup),
    }
}

fn resolve_vm(ns: &str, name: &str, lookup: &dyn ExportLookup) -> SourceState {
    let vm_name = Some(name.to_owned());
    let Some(vm) = lookup.vm(ns, name) else {
        return SourceState::NotReady {
            reason: reason::VM_NOT_FOUND,
            message: format!("Virtual Machine {ns}/{name} not found"),
            vm_name,
        };
    };
    let mut volumes = Vec::new();
    let mut populated = true;
    for (_, claim) in claim_volumes(&vm) {
        match lookup.pvc(ns, &claim) {
            Some(pvc) => match bound_volume(&pvc) {
                Some(volume) => volumes.push(ExportedVolume {
                    name: claim,
                    content: VolumeContent::DiskImage { volume },
                    claim_spec: pvc.get("spec").cloned().unwrap_or(Value::Null),
                }),
                None => populated = false,
            },
            None => populated = false,
        }
    }
    if needs_backend_storage(&vm) {
        match lookup.backend_pvcs(ns, name).first() {
            Some(pvc) => match bound_volume(pvc) {
                Some(volume) => volumes.push(ExportedVolume {
                    name: meta_str(pvc, "name").to_owned(),
                    content: VolumeContent::Files { volume },
                    claim_spec: pvc.get("spec").cloned().unwrap_or(Value::Null),
                }),
                None => populated = false,
            },
            // KubeVirt waits for the backend PVC (created at the VM's first start).
            None => populated = false,
        }
    }
    if volumes.is_empty() && populated {
        return SourceState::NotReady {
            reason: reason::NO_VOLUME_VM,
            message: format!("Virtual Machine {ns}/{name} has no volumes"),
            vm_name,
        };
    }
    if !populated {
        return SourceState::NotReady {
            reason: reason::VOLUMES_NOT_POPULATED,
            message: format!("Not all volumes in the Virtual Machine {ns}/{name} are populated"),
            vm_name,
        };
    }
    if let Some(vmi) = lookup.vmi(ns, name)
        && !is_final(&vmi)
    {
        return SourceState::NotReady {
            reason: reason::IN_USE,
            message: format!("Virtual Machine {ns}/{name} is running"),
            vm_name,
        };
    }
    SourceState::Ready {
        volumes,
        vm: Some(vm),
    }
}

fn resolve_snapshot(ns: &str, name: &str, lookup: &dyn ExportLookup) -> SourceState {
    let not_found = |vm_name| SourceState::NotReady {
        reason: reason::VM_SNAPSHOT_NOT_FOUND,
        message: format!("VirtualMachineSnapshot {ns}/{name} not found"),
        vm_name,
    };
    let Some(snapshot) = lookup.snapshot(ns, name) else {
        return not_found(None);
    };
    let vm_name = snapshot
        .pointer("/spec/source/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let ready = snapshot
        .pointer("/status/readyToUse")
        .and_then(Value::as_bool)
        == Some(true);
    let content = snapshot
        .pointer("/status/virtualMachineSnapshotContentName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let data = (!content.is_empty())
        .then(|| lookup.snapshot_data(content))
        .flatten();
    let (true, Some((files, vm))) = (ready, data) else {
        return SourceState::NotReady {
            reason: "NotAllPVCsCreated",
            message: format!("VirtualMachineSnapshot {ns}/{name} is not ready to use"),
            vm_name,
        };
    };
    let vm_name_text = vm_name.clone().unwrap_or_default();
    let mut volumes = Vec::new();
    for (volume, claim) in claim_volumes(&vm) {
        if files.iter().any(|f| *f == format!("disk-{volume}")) {
            volumes.push(ExportedVolume {
                name: claim,
                content: VolumeContent::SnapshotDisk {
                    content: content.to_owned(),
                    disk: volume,
                },
                claim_spec: Value::Null,
            });
        }
    }
    if files.iter().any(|f| f == "tpm-state" || f == "vars") {
        volumes.push(ExportedVolume {
            name: legacy_pvc_name(&vm_name_text),
            content: VolumeContent::SnapshotState {
                content: content.to_owned(),
                vm_name: vm_name_text.clone(),
                uuid: firmware_uuid(&vm),
            },
            claim_spec: Value::Null,
        });
    }
    if volumes.is_empty() {
        return SourceState::NotReady {
            reason: reason::NO_VOLUME_SNAPSHOT,
            message: format!(
                "VirtualMachineSnapshot {ns}/{name} does not contain any volume snapshots"
            ),
            vm_name,
        };
    }
    SourceState::Ready {
        volumes,
        vm: Some(vm),
    }
}

fn resolve_pvc(ns: &str, name: &str, lookup: &dyn ExportLookup) -> SourceState {
    let Some(pvc) = lookup.pvc(ns, name) else {
        return SourceState::NotReady {
            reason: reason::PVC_NOT_FOUND,
            message: format!("pvc {ns}/{name} not found"),
            vm_name: None,
        };
    };
    let Some(volume) = bound_volume(&pvc) else {
        return SourceState::NotReady {
            reason: reason::PVC_PENDING,
            message: format!("pvc {ns}/{name} is not bound"),
            vm_name: None,
        };
    };
    let backend = pvc
        .pointer(&format!("/metadata/labels/{PVC_LABEL_KEY}"))
        .and_then(Value::as_str);
    if let Some(vm) = backend
        && let Some(vmi) = lookup.vmi(ns, vm)
        && !is_final(&vmi)
    {
        return SourceState::NotReady {
            reason: reason::IN_USE,
            message: format!("pvc {ns}/{name} is in use"),
            vm_name: None,
        };
    }
    // A PVC is "in use" while a running VM mounts it; KubeVirt checks the pods using it.
    let content = if backend.is_some() {
        VolumeContent::Files { volume }
    } else {
        VolumeContent::DiskImage { volume }
    };
    SourceState::Ready {
        volumes: vec![ExportedVolume {
            name: name.to_owned(),
            content,
            claim_spec: pvc.get("spec").cloned().unwrap_or(Value::Null),
        }],
        vm: None,
    }
}

/// When the export expires: its creation plus `ttlDuration` (KubeVirt's default 2 h).
pub fn expires_unix(export: &Value) -> Option<i64> {
    let created = export
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)?;
    let ttl = export
        .pointer("/spec/ttlDuration")
        .and_then(Value::as_str)
        .and_then(parse_go_duration)
        .map_or(api::DEFAULT_TTL_SECONDS, |d| d.as_secs());
    Some(created + i64::try_from(ttl).unwrap_or(i64::MAX / 2))
}

/// The URL of a volume in a format, below `base` (`https://host:port` + the export's prefix).
pub fn volume_url(base: &str, volume: &str, fmt: &str) -> String {
    let path = match fmt {
        format::RAW => paths::raw(volume),
        format::GZIP => paths::gzip(volume),
        format::DIR => paths::dir(volume),
        _ => paths::archive(volume),
    };
    format!("{base}{path}")
}

/// `status.links`: the same server for `internal` and `external` (one host), its CA as `cert`,
/// each volume's formats, and the manifests when the source has a VM.
pub fn links(
    server_url: &str,
    cert: &str,
    namespace: &str,
    name: &str,
    volumes: &[ExportedVolume],
    has_vm: bool,
) -> ExportLinks {
    let base = format!(
        "{}{}",
        server_url.trim_end_matches('/'),
        paths::export_base(namespace, name)
    );
    let link = |which: &str| ExportLink {
        cert: cert.trim().to_owned(),
        volumes: volumes
            .iter()
            .map(|v| ExportVolume {
                name: v.name.clone(),
                formats: v
                    .content
                    .formats()
                    .iter()
                    .map(|f| ExportVolumeFormat {
                        format: (*f).to_owned(),
                        url: volume_url(&base, &v.name, f),
                    })
                    .collect(),
            })
            .collect(),
        manifests: if has_vm {
            vec![
                ExportManifest {
                    manifest_type: manifest::ALL.to_owned(),
                    url: format!("{base}{}", paths::manifests_all(which)),
                },
                ExportManifest {
                    manifest_type: manifest::AUTH_HEADER.to_owned(),
                    url: format!("{base}{}", paths::manifests_secret(which)),
                },
            ]
        } else {
            Vec::new()
        },
    };
    ExportLinks {
        internal: Some(link("internal")),
        external: Some(link("external")),
    }
}

/// The Secret of the manifest `auth-header-secret`: the header CDI adds to its requests.
pub fn header_secret(export: &str, namespace: Option<&str>, token: &str) -> Value {
    let mut metadata = json!({"name": api::header_secret_name(export)});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "stringData": {"token": format!("{}:{token}", api::TOKEN_HEADER)},
    })
}

/// The DataVolume `spec.storage` for a volume (the PVC's access modes, volume mode and size).
fn storage_of(volume: &ExportedVolume) -> Value {
    let spec = &volume.claim_spec;
    let size = spec
        .pointer("/resources/requests/storage")
        .cloned()
        .unwrap_or_else(|| {
            json!(if volume.content.is_archive() {
                PVC_SIZE
            } else {
                "1Gi"
            })
        });
    json!({
        "accessModes": spec.get("accessModes").cloned().unwrap_or_else(|| json!(["ReadWriteOnce"])),
        "volumeMode": spec.get("volumeMode").cloned().unwrap_or_else(|| json!("Filesystem")),
        "resources": {"requests": {"storage": size}},
    })
}

/// The manifests `all` of an export: the CA ConfigMap, the VM (status and server-set metadata
/// dropped, `firmware.uuid` kept, its `dataVolumeTemplates` pointed at the export), a
/// DataVolume for every other exported PVC, and for the backend-storage volume a DataVolume of
/// `contentType: archive` from the `tar.gz` URL. `base` is the server URL + the export prefix.
pub fn manifests_all(
    export: &str,
    base: &str,
    cert: &str,
    vm: &Value,
    volumes: &[ExportedVolume],
) -> Vec<Value> {
    let ca_name = api::ca_config_map_name(export);
    let header = api::header_secret_name(export);
    let http =
        |url: String| json!({"url": url, "certConfigMap": ca_name, "secretExtraHeaders": [header]});
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": ca_name},
        "data": {"ca.pem": cert.trim()},
    });
    let mut clean = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": meta_str(vm, "name"), "namespace": meta_str(vm, "namespace")},
        "spec": vm.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    for key in ["labels", "annotations"] {
        if let Some(value) = vm.pointer(&format!("/metadata/{key}")) {
            clean["metadata"][key] = value.clone();
        }
    }
    let templates: Vec<String> = clean
        .pointer("/spec/dataVolumeTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| meta_str(t, "name").to_owned())
        .collect();
    if let Some(list) = clean
        .pointer_mut("/spec/dataVolumeTemplates")
        .and_then(Value::as_array_mut)
    {
        for template in list.iter_mut() {
            let name = meta_str(template, "name").to_owned();
            if volumes.iter().any(|v| v.name == name) {
                template["spec"]["source"] =
                    json!({"http": http(volume_url(base, &name, format::GZIP))});
            }
        }
    }
    let mut out = vec![config_map, clean];
    for volume in volumes {
        if templates.contains(&volume.name) {
            continue;
        }
        let mut dv = json!({
            "apiVersion": "cdi.kubevirt.io/v1beta1",
            "kind": "DataVolume",
            "metadata": {"name": volume.name, "namespace": meta_str(vm, "namespace")},
            "spec": {"storage": storage_of(volume)},
        });
        if volume.content.is_archive() {
            let vm_name = meta_str(vm, "name");
            dv["metadata"]["name"] = json!(legacy_pvc_name(vm_name));
            dv["metadata"]["labels"] = json!({PVC_LABEL_KEY: vm_name});
            dv["spec"]["contentType"] = json!("archive");
            dv["spec"]["source"] =
                json!({"http": http(volume_url(base, &volume.name, format::TAR_GZ))});
        } else {
            dv["spec"]["source"] =
                json!({"http": http(volume_url(base, &volume.name, format::GZIP))});
        }
        out.push(dv);
    }
    out
}

/// Kubernetes' `v1` List of objects (KubeVirt's JSON answer of the manifests).
pub fn as_list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items})
}

/// The export's `apiVersion`, for owner references.
pub const API_VERSION: &str = EXPORT_API_VERSION;

/// The files and the VM of the snapshot content `content` under `<data_dir>/snapshots/`.
pub fn snapshot_data_on_disk(
    data_dir: &std::path::Path,
    content: &str,
) -> Option<(Vec<String>, Value)> {
    let manifest = ferrovirt_storage::SnapshotStore::new(data_dir)
        .manifest(content)
        .ok()?;
    let files = manifest
        .files
        .iter()
        .map(|f| f.logical_name.clone())
        .collect();
    Some((files, manifest.vm))
}

/// An [`ExportLookup`] over two functions (get one object; list a VM's backend PVCs) and the
/// data directory (snapshot data): the controllers pass their cache, the API server its store.
pub struct ObjectsLookup<'a> {
    pub get: &'a dyn Fn(&crate::ResourceDef, &str, &str) -> Option<Value>,
    pub backend_pvcs: &'a dyn Fn(&str, &str) -> Vec<Value>,
    pub data_dir: &'a std::path::Path,
}

impl ExportLookup for ObjectsLookup<'_> {
    fn vm(&self, namespace: &str, name: &str) -> Option<Value> {
        (self.get)(&crate::VMS, namespace, name)
    }
    fn vmi(&self, namespace: &str, name: &str) -> Option<Value> {
        (self.get)(&crate::VMIS, namespace, name)
    }
    fn pvc(&self, namespace: &str, name: &str) -> Option<Value> {
        (self.get)(&crate::PVCS, namespace, name)
    }
    fn backend_pvcs(&self, namespace: &str, vm: &str) -> Vec<Value> {
        (self.backend_pvcs)(namespace, vm)
    }
    fn snapshot(&self, namespace: &str, name: &str) -> Option<Value> {
        (self.get)(&crate::VM_SNAPSHOTS, namespace, name)
    }
    fn snapshot_data(&self, content: &str) -> Option<(Vec<String>, Value)> {
        snapshot_data_on_disk(self.data_dir, content)
    }
}

/// A new export token as KubeVirt makes them (`GenerateVMExportToken`: 20 characters from
/// `[0-9A-Za-z]`, uniformly from the OS's random source); `None` when it has none.
pub fn generate_token() -> Option<String> {
    let alphabet = api::TOKEN_ALPHABET;
    let limit = (256 / alphabet.len()) * alphabet.len();
    let mut token = String::with_capacity(api::TOKEN_LENGTH);
    while token.len() < api::TOKEN_LENGTH {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).ok()?;
        for byte in bytes {
            let byte = usize::from(byte);
            if byte < limit && token.len() < api::TOKEN_LENGTH {
                token.push(char::from(alphabet[byte % alphabet.len()]));
            }
        }
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> Value {
        json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "win11", "namespace": "default", "uid": "u-1",
                         "resourceVersion": "42", "labels": {"app": "desk"},
                         "managedFields": []},
            "spec": {
                "runStrategy": "Halted",
                "template": {"spec": {
                    "domain": {
                        "firmware": {"uuid": "5fbd5eb0-7f19-4f64-8712-0b56dd1c3a9d",
                                     "bootloader": {"efi": {"persistent": true}}},
                        "devices": {"tpm": {"persistent": true},
                                    "disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
                    },
                    "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": "win11-root"}}],
                }},
            },
            "status": {"printableStatus": "Stopped"},
        })
    }

    fn volumes() -> Vec<ExportedVolume> {
        vec![
            ExportedVolume {
                name: "win11-root".into(),
                content: VolumeContent::DiskImage {
                    volume: "pvc-a".into(),
                },
                claim_spec: json!({"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                                   "resources": {"requests": {"storage": "64Gi"}}}),
            },
            ExportedVolume {
                name: "persistent-state-for-win11-x7k2p".into(),
                content: VolumeContent::Files {
                    volume: "pvc-b".into(),
                },
                claim_spec: json!({"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                                   "resources": {"requests": {"storage": "10Mi"}}}),
            },
        ]
    }

    #[test]
    fn manifests_all_as_a_kubevirt_cluster_applies_them() {
        let base = "https://10.0.0.2:6443/api/export.kubevirt.io/v1beta1/namespaces/default/virtualmachineexports/e1";
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let mut items = manifests_all("e1", base, cert, &vm(), &volumes());
        items.push(header_secret("e1", None, "0123456789abcdefABCD"));
        let text = serde_json::to_string_pretty(&as_list(items)).unwrap_or_default();
        insta::assert_snapshot!(text);
    }

    #[test]
    fn links_of_a_vm_export() {
        let links = links(
            "https://10.0.0.2:6443",
            "CA",
            "default",
            "e1",
            &volumes(),
            true,
        );
        let text = serde_json::to_string_pretty(&links).unwrap_or_default();
        insta::assert_snapshot!(text);
    }

    #[test]
    fn tokens_are_kubevirts_shape() {
        let token = generate_token().unwrap_or_default();
        assert_eq!(token.len(), 20);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(Some(token), generate_token());
    }
}
