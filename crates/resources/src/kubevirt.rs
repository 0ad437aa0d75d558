//! KubeVirt object semantics read by both the API server (the `start`/`stop` subresources, the
//! serial log, state rollback) and the controllers: the effective run strategy of a VM and the
//! phases of a VMI, over stored objects.

use serde_json::Value;

/// The finalizer KubeVirt puts on VMIs: the instance stays until its VM process is gone.
pub const VMI_FINALIZER: &str = "foregroundDeleteVirtualMachine";

/// A string of `metadata` (`""` when absent).
pub fn meta_str<'a>(object: &'a Value, key: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

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

/// The phase of a VMI (`""` before any status).
pub fn phase(vmi: &Value) -> &str {
    vmi.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Whether an object is being deleted.
pub fn deleting(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
}

/// Whether a VMI has finished (Succeeded or Failed).
pub fn is_final(vmi: &Value) -> bool {
    matches!(phase(vmi), "Succeeded" | "Failed")
}

/// Whether a VMI is not finished (Pending, Scheduling, Scheduled, Running).
pub fn vmi_is_active(vmi: &Value) -> bool {
    !is_final(vmi)
}

/// This host's name: the node of every VMI it runs (`status.nodeName`) and the `node` label of
/// its metrics; `localhost` when the kernel does not say.
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn run_strategies_and_phases() {
        assert_eq!(
            run_strategy_of(&json!({"spec": {"running": true}})),
            "Always"
        );
        assert_eq!(run_strategy_of(&json!({"spec": {}})), "Halted");
        let vmi = json!({"metadata": {"name": "a"}, "status": {"phase": "Failed"}});
        assert!(is_final(&vmi) && !vmi_is_active(&vmi));
        assert_eq!(meta_str(&vmi, "name"), "a");
        assert_eq!(meta_str(&vmi, "uid"), "");
    }
}
