//! KubeVirt's `validateVolumes`: unique names, exactly one source, `hostDisk` rules and its
//! feature gate, `emptyDisk` capacity, `persistentVolumeClaim.claimName`, `containerDisk.path`.

use std::collections::HashMap;

use super::FieldPath;
use crate::config::ClusterConfig;
use crate::kubevirt::Volume;
use crate::status::{CauseType, StatusCause};

pub(crate) fn validate_volumes(
    field: &FieldPath,
    volumes: &[Volume],
    config: &ClusterConfig,
) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (idx, volume) in volumes.iter().enumerate() {
        let path = field.index(idx);
        match names.get(volume.name.as_str()) {
            Some(other_idx) => causes.push(StatusCause::invalid(
                path.child("name").as_str(),
                format!(
                    "{path} and {} must not have the same Name.",
                    field.index(*other_idx)
                ),
            )),
            None => {
                names.insert(volume.name.as_str(), idx);
            }
        }
        if let Some(data_volume) = &volume.data_volume {
            let name = data_volume
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or("");
            if name.is_empty() {
                causes.push(StatusCause::new(
                    CauseType::FieldValueRequired,
                    path.child("name").as_str(),
                    "DataVolume 'name' must be set",
                ));
            }
        }
        if volume.source_count() != 1 {
            causes.push(StatusCause::invalid(
                path.as_str(),
                format!("{path} must have exactly one source type set"),
            ));
        }
        if let Some(host_disk) = &volume.host_disk {
            if !config.host_disk_enabled() {
                causes.push(StatusCause::invalid(
                    path.child("hostDisk").as_str(),
                    "HostDisk feature gate is not enabled",
                ));
            }
            let path_field = path.children(&["hostDisk", "path"]);
            if host_disk.path.is_empty() {
                causes.push(StatusCause::new(
                    CauseType::FieldValueNotFound,
                    path_field.as_str(),
                    format!("{path_field} is required for hostDisk volume"),
                ));
            }
            let type_field = path.children(&["hostDisk", "type"]);
            if host_disk.disk_type != "Disk" && host_disk.disk_type != "DiskOrCreate" {
                causes.push(StatusCause::invalid(
                    type_field.as_str(),
                    format!(
                        "{type_field} has invalid value '{}', allowed are 'Disk' or 'DiskOrCreate'",
                        host_disk.disk_type
                    ),
                ));
            }
            let has_capacity = host_disk.capacity.as_ref().is_some_and(|c| !c.is_zero());
            if host_disk.disk_type == "Disk" && has_capacity {
                let capacity_field = path.children(&["hostDisk", "capacity"]);
                causes.push(StatusCause::invalid(
                    capacity_field.as_str(),
                    format!("{capacity_field} is allowed to pass only with {type_field} equal to 'DiskOrCreate'"),
                ));
            }
            if let Some(capacity) = &host_disk.capacity
                && let Err(err) = capacity.value()
            {
                causes.push(StatusCause::invalid(
                    path.children(&["hostDisk", "capacity"]).as_str(),
                    err.to_string(),
                ));
            }
        }
        if let Some(empty_disk) = &volume.empty_disk
            && let Err(err) = empty_disk.capacity.value()
        {
            causes.push(StatusCause::invalid(
                path.children(&["emptyDisk", "capacity"]).as_str(),
                err.to_string(),
            ));
        }
        if let Some(pvc) = &volume.persistent_volume_claim
            && pvc.claim_name.is_empty()
        {
            let claim_field = path.children(&["persistentVolumeClaim", "claimName"]);
            causes.push(StatusCause::new(
                CauseType::FieldValueRequired,
                claim_field.as_str(),
                format!("{claim_field} is a required field"),
            ));
        }
        if let Some(container_path) = volume
            .container_disk
            .as_ref()
            .and_then(|c| c.get("path"))
            .and_then(|p| p.as_str())
            .filter(|p| !p.is_empty())
        {
            let cd_field = path.child("containerDisk");
            if container_path == "/" {
                causes.push(StatusCause::invalid(
                    cd_field.as_str(),
                    format!("{cd_field} must not point to root"),
                ));
            } else if !is_clean_absolute(container_path) {
                causes.push(StatusCause::invalid(
                    cd_field.as_str(),
                    format!(
                        "{cd_field} must be an absolute path to a file without relative components"
                    ),
                ));
            }
        }
    }
    causes
}

/// Go's `filepath.Join("/", p) == strings.TrimSuffix(p, "/")`.
fn is_clean_absolute(path: &str) -> bool {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    trimmed.starts_with('/')
        && !trimmed[1..]
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
}
