//! The VirtualMachine controller.

use serde_json::Value;

/// The effective run strategy of a stored VM (`runStrategy`, else `running`, else Halted).
pub fn run_strategy_of(vm: &Value) -> String {
    match (
        vm.pointer("/spec/runStrategy").and_then(Value::as_str),
        vm.pointer("/spec/running").and_then(Value::as_bool),
    ) {
        (Some(s), _) => s.to_owned(),
        (None, Some(true)) => "Always".to_owned(),
        _ => "Halted".to_owned(),
    }
}

/// Whether a VMI is not finished (Pending, Scheduling, Scheduled, Running).
pub fn vmi_is_active(vmi: &Value) -> bool {
    !matches!(
        vmi.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}
