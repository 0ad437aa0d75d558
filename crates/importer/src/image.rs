//! From a downloaded (already decompressed) file to the volume's `disk.img`: the format is the
//! one its magic says ([`crate::sniff`]), qemu-img is told it (`-f`), images with a backing file,
//! an external data file or extents in other files are refused (`qemu-img info --output=json`
//! answers from the header only), then the image is converted to raw into a temporary file that
//! is synced and renamed over `disk.img`, so no half image is ever in use.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::ImportError;
use crate::sniff::Format;

/// What `qemu-img info` said about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: Format,
    pub virtual_size: u64,
}

fn qemu_img(args: &[&std::ffi::OsStr]) -> Result<String, ImportError> {
    let output = Command::new("qemu-img").args(args).output().map_err(|e| {
        ImportError::Tool(format!("cannot run qemu-img (apt install qemu-utils): {e}"))
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(ImportError::Format(format!(
            "qemu-img refused the image: {}",
            stderr.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Checks an image of `format` at `path`: what qemu-img reads from its header, never following
/// a backing file. Refuses backing files, external data files and extents in other files.
pub fn inspect(path: &Path, format: Format) -> Result<ImageInfo, ImportError> {
    let Some(name) = format.qemu_img_name() else {
        return Err(ImportError::Format(format!(
            "{format:?} is not a disk image format ferrovirt converts"
        )));
    };
    let text = qemu_img(&[
        "info".as_ref(),
        "--output=json".as_ref(),
        "-f".as_ref(),
        name.as_ref(),
        path.as_os_str(),
    ])?;
    let info: Value = serde_json::from_str(&text)
        .map_err(|e| ImportError::Tool(format!("qemu-img info gave no JSON: {e}")))?;
    if let Some(backing) = info.get("backing-filename").and_then(Value::as_str) {
        return Err(ImportError::Format(format!(
            "the image has a backing file ({backing:?}); images that refer to other files are \
             refused: flatten it first (qemu-img convert -O qcow2 in.qcow2 out.qcow2)"
        )));
    }
    if let Some(data_file) = info
        .pointer("/format-specific/data/data-file")
        .and_then(Value::as_str)
    {
        return Err(ImportError::Format(format!(
            "the image keeps its data in an external file ({data_file:?}); such images are refused"
        )));
    }
    if let Some(extents) = info
        .pointer("/format-specific/data/extents")
        .and_then(Value::as_array)
    {
        let own = path.to_string_lossy();
        if extents
            .iter()
            .any(|e| e.get("filename").and_then(Value::as_str) != Some(own.as_ref()))
        {
            return Err(ImportError::Format(
                "the VMDK image has extents in other files; only self-contained (monolithic) \
                 VMDK images are imported"
                    .into(),
            ));
        }
    }
    let virtual_size = info
        .get("virtual-size")
        .and_then(Value::as_u64)
        .ok_or_else(|| ImportError::Format("qemu-img reports no virtual size".into()))?;
    Ok(ImageInfo {
        format,
        virtual_size,
    })
}

/// The temporary name `disk.img` is written under before its rename (in the same directory).
pub fn temp_image(volume: &Path) -> PathBuf {
    volume.join(".disk.img.import-tmp")
}

/// Converts the checked image at `source` to raw at `volume/disk.img` (through a temporary file,
/// synced, renamed, the directory synced), grown (sparse) to `min_size` when that is larger.
/// A raw source is renamed, not copied.
pub fn publish_raw(
    source: &Path,
    info: &ImageInfo,
    volume: &Path,
    min_size: u64,
) -> Result<PathBuf, ImportError> {
    let tmp = temp_image(volume);
    let _ = std::fs::remove_file(&tmp);
    match info.format {
        Format::Raw | Format::Iso => {
            std::fs::rename(source, &tmp).map_err(|e| ImportError::io(&tmp, e))?;
        }
        other => {
            let name = other.qemu_img_name().unwrap_or("raw");
            qemu_img(&[
                "convert".as_ref(),
                "-f".as_ref(),
                name.as_ref(),
                "-O".as_ref(),
                "raw".as_ref(),
                "-t".as_ref(),
                "none".as_ref(),
                source.as_os_str(),
                tmp.as_os_str(),
            ])
            .map_err(|e| match e {
                ImportError::Format(m) if m.contains("No space left") => ImportError::NoSpace(m),
                other => other,
            })?;
            let _ = std::fs::remove_file(source);
        }
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&tmp)
        .map_err(|e| ImportError::io(&tmp, e))?;
    let len = file.metadata().map_err(|e| ImportError::io(&tmp, e))?.len();
    // ISO images keep their size (a CD-ROM must not grow); disks fill what was asked for.
    if len < min_size && info.format != Format::Iso {
        file.set_len(min_size)
            .map_err(|e| ImportError::from_write(&tmp, e))?;
    }
    file.sync_all()
        .map_err(|e| ImportError::from_write(&tmp, e))?;
    drop(file);
    let image = volume.join(ferrovirt_api::cdi::DISK_IMAGE_NAME);
    std::fs::rename(&tmp, &image).map_err(|e| ImportError::io(&image, e))?;
    ferrovirt_storage::atomic::fsync_dir(volume).map_err(|e| ImportError::Io(e.to_string()))?;
    Ok(image)
}
