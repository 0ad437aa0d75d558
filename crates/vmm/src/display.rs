//! The graphical console of a run, decided from the spec as KubeVirt's converter does on x86_64:
//! unless `devices.autoattachGraphicsDevice: false`, a video device (`vga` for BIOS, `bochs` for
//! EFI: KubeVirt's `AddGraphicsDevice`) whose screen QEMU serves over VNC on a unix socket in the
//! runtime dir; and the tablets of `devices.inputs`. Also the screenshot of a running VM
//! (`screenshot`, for the `vnc/screenshot` subresource).
//!
//! Departure from KubeVirt: when a display is attached and `devices.inputs` lists nothing,
//! ferrovirt adds one USB tablet (KubeVirt adds none unless asked, and a VNC viewer's pointer
//! then drifts from the guest's PS/2 mouse). Listing inputs, or switching the display off, turns
//! that off.

use std::path::PathBuf;
use std::time::Duration;

use ferrovirt_api::kubevirt::vmi::VirtualMachineInstanceSpec;
use serde::{Deserialize, Serialize};

use crate::convert::Unsupported;
use crate::machine::{Graphics, InputBus, InputDevice, VideoModel};
use crate::qmp::QmpClient;
use crate::runtime::RuntimeDir;
use crate::state::FirmwarePlan;

/// The display and pointing devices of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisplayPlan {
    /// The video device; `None`: no display and no VNC (`autoattachGraphicsDevice: false`).
    pub video: Option<VideoModel>,
    pub inputs: Vec<InputDevice>,
}

/// The name of the tablet ferrovirt adds when a display is attached and no inputs are listed.
pub const DEFAULT_TABLET: &str = "tablet";

impl DisplayPlan {
    /// The display part of a [`crate::machine::MachineConfig`] for a run in `runtime`.
    pub fn graphics(&self, runtime: &RuntimeDir) -> Option<Graphics> {
        self.video.map(|video| Graphics {
            video,
            vnc_socket: runtime.vnc_socket(),
            screen_qmp_socket: runtime.screen_qmp_socket(),
        })
    }
}

/// Converts `domain.devices.autoattachGraphicsDevice` and `domain.devices.inputs` (admitted:
/// tablets on `usb` or `virtio`); `field_prefix` prefixes field paths in errors.
pub fn plan_display(
    spec: &VirtualMachineInstanceSpec,
    firmware: &FirmwarePlan,
    field_prefix: &str,
) -> Result<DisplayPlan, Unsupported> {
    let devices = &spec.domain.devices;
    let video = devices.graphics_attached().then_some(match firmware {
        FirmwarePlan::Bios => VideoModel::Vga,
        FirmwarePlan::Uefi { .. } => VideoModel::Bochs,
    });
    let mut inputs = Vec::new();
    for (index, input) in devices.inputs().iter().enumerate() {
        let field = format!("{field_prefix}.domain.devices.inputs[{index}]");
        if input.input_type != "tablet" {
            return Err(Unsupported {
                field: format!("{field}.type"),
                message: "Input device can have only tablet type.".into(),
            });
        }
        let bus = match input.bus.as_deref() {
            None | Some("" | "usb") => InputBus::Usb,
            Some("virtio") => InputBus::Virtio,
            Some(_) => {
                return Err(Unsupported {
                    field: format!("{field}.bus"),
                    message: "Input device can have only virtio or usb bus.".into(),
                });
            }
        };
        inputs.push(InputDevice {
            name: input.name.clone(),
            bus,
        });
    }
    if video.is_some() && inputs.is_empty() {
        inputs.push(InputDevice {
            name: DEFAULT_TABLET.into(),
            bus: InputBus::Usb,
        });
    }
    Ok(DisplayPlan { video, inputs })
}

/// Why a screenshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ScreenshotError {
    #[error("the VM has no display (devices.autoattachGraphicsDevice is false): no screen to take")]
    NoDisplay,
    #[error("screenshot through {socket}: {source}")]
    Qmp {
        socket: PathBuf,
        source: crate::qmp::QmpError,
    },
    #[error("screenshot file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How long a screenshot may take (connect, `screendump`, read).
pub const SCREENSHOT_TIMEOUT: Duration = Duration::from_secs(10);

/// One screenshot at a time per process: the screenshot monitor serves one client.
static SCREENSHOTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A PNG of the VM's current screen (what `virtctl vnc screenshot` saves): QMP `screendump`
/// (`format: png`, QEMU 7.1+) on the run's screenshot monitor into the runtime dir, read back and
/// removed.
pub async fn screenshot(runtime: &RuntimeDir) -> Result<Vec<u8>, ScreenshotError> {
    let socket = runtime.screen_qmp_socket();
    if !socket.exists() {
        return Err(ScreenshotError::NoDisplay);
    }
    let _one_at_a_time = SCREENSHOTS.lock().await;
    let qmp_error = |source| ScreenshotError::Qmp {
        socket: socket.clone(),
        source,
    };
    let qmp = QmpClient::connect(&socket, SCREENSHOT_TIMEOUT)
        .await
        .map_err(qmp_error)?;
    let path = runtime.root().join("screenshot.png");
    let io_error = |source| ScreenshotError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error(e)),
        _ => {}
    }
    let filename = path
        .to_str()
        .ok_or_else(|| io_error(std::io::Error::other("the runtime dir's path is not UTF-8")))?;
    qmp.execute(
        "screendump",
        Some(serde_json::json!({"filename": filename, "format": "png"})),
    )
    .await
    .map_err(qmp_error)?;
    let png = std::fs::read(&path).map_err(io_error);
    let _ = std::fs::remove_file(&path);
    png
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(devices: serde_json::Value) -> VirtualMachineInstanceSpec {
        serde_json::from_value(serde_json::json!({"domain": {"devices": devices}})).unwrap()
    }

    const EFI: FirmwarePlan = FirmwarePlan::Uefi {
        secure_boot: false,
        persistent: false,
    };

    #[test]
    fn vga_for_bios_bochs_for_efi_with_a_usb_tablet_by_default() {
        let bios = plan_display(&spec(serde_json::json!({})), &FirmwarePlan::Bios, "spec").unwrap();
        assert_eq!(bios.video, Some(VideoModel::Vga));
        assert_eq!(
            bios.inputs,
            [InputDevice {
                name: "tablet".into(),
                bus: InputBus::Usb
            }]
        );
        let efi = plan_display(&spec(serde_json::json!({})), &EFI, "spec").unwrap();
        assert_eq!(efi.video, Some(VideoModel::Bochs));
    }

    #[test]
    fn autoattach_false_means_no_display_and_listed_inputs_replace_the_default() {
        let off = plan_display(
            &spec(serde_json::json!({"autoattachGraphicsDevice": false})),
            &EFI,
            "spec",
        )
        .unwrap();
        assert_eq!(off, DisplayPlan::default());
        let listed = plan_display(
            &spec(
                serde_json::json!({"inputs": [{"name": "t1", "type": "tablet", "bus": "virtio"}]}),
            ),
            &EFI,
            "spec",
        )
        .unwrap();
        assert_eq!(
            listed.inputs,
            [InputDevice {
                name: "t1".into(),
                bus: InputBus::Virtio
            }]
        );
        let bad = plan_display(
            &spec(serde_json::json!({"inputs": [{"name": "k", "type": "keyboard"}]})),
            &EFI,
            "spec.template.spec",
        )
        .unwrap_err();
        assert_eq!(
            bad.field,
            "spec.template.spec.domain.devices.inputs[0].type"
        );
    }
}
