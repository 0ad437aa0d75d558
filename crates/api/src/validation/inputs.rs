//! KubeVirt's `validateInputDevices`: a VMI's `domain.devices.inputs` are tablets on the `usb` or
//! `virtio` bus, with KubeVirt's messages.

use super::FieldPath;
use crate::kubevirt::Input;
use crate::status::StatusCause;

/// Causes for `inputs` (`field` is the instance spec's path).
pub(crate) fn validate_input_devices(
    field: &FieldPath,
    inputs: &[Input],
    causes: &mut Vec<StatusCause>,
) {
    let path = field.children(&["domain", "devices", "inputs"]);
    for (idx, input) in inputs.iter().enumerate() {
        if !matches!(input.bus.as_deref(), None | Some("" | "usb" | "virtio")) {
            causes.push(StatusCause::invalid(
                path.index(idx).child("bus").as_str(),
                "Input device can have only virtio or usb bus.",
            ));
        }
        if input.input_type != "tablet" {
            causes.push(StatusCause::invalid(
                path.index(idx).child("type").as_str(),
                "Input device can have only tablet type.",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(input_type: &str, bus: Option<&str>) -> Input {
        Input {
            name: "tablet".into(),
            input_type: input_type.into(),
            bus: bus.map(str::to_owned),
            ..Input::default()
        }
    }

    #[test]
    fn usb_and_virtio_tablets_pass_others_are_refused_with_kubevirts_messages() {
        let field = FieldPath::new("spec.template.spec");
        let mut causes = Vec::new();
        validate_input_devices(
            &field,
            &[
                input("tablet", None),
                input("tablet", Some("usb")),
                input("tablet", Some("virtio")),
            ],
            &mut causes,
        );
        assert!(causes.is_empty(), "{causes:?}");
        validate_input_devices(&field, &[input("keyboard", Some("ps2"))], &mut causes);
        let rendered: Vec<String> = causes.iter().map(StatusCause::render).collect();
        assert_eq!(
            rendered,
            [
                "spec.template.spec.domain.devices.inputs[0].bus: Input device can have only virtio or usb bus.",
                "spec.template.spec.domain.devices.inputs[0].type: Input device can have only tablet type.",
            ]
        );
    }
}
