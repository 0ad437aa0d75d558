//! KubeVirt's dependencies between Hyper-V enlightenments (`pkg/defaults/hyperv.go` and
//! `webhooks/hyperv.go`): `synic`, `ipi` and `tlbflush` need `vpindex`, `synictimer` needs
//! `synic`, `evmcs` needs `vapic` (and the `vmx` CPU feature). The defaulter turns a missing
//! requirement on; a requirement the user switched off makes admission refuse the feature with
//! KubeVirt's message `'<feature>' requires '<requirement>', which was disabled.`

use serde_json::{Value, json};

use crate::kubevirt::{Cpu, FeatureHyperv, FeatureState};

/// The state of one switch: absent, on (present, `enabled` not false), off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Switch {
    Missing,
    On,
    Off,
}

fn switch(present: bool, enabled: Option<bool>) -> Switch {
    match (present, enabled) {
        (false, _) => Switch::Missing,
        (true, Some(false)) => Switch::Off,
        (true, _) => Switch::On,
    }
}

/// The enlightenments something can require (all plain `FeatureState`s).
#[derive(Debug, Clone, Copy)]
enum Requirement {
    VpIndex,
    SyNic,
    Vapic,
}

impl Requirement {
    fn name(self) -> &'static str {
        match self {
            Requirement::VpIndex => "vpindex",
            Requirement::SyNic => "synic",
            Requirement::Vapic => "vapic",
        }
    }

    fn slot(self, hyperv: &mut FeatureHyperv) -> &mut Option<FeatureState> {
        match self {
            Requirement::VpIndex => &mut hyperv.vpindex,
            Requirement::SyNic => &mut hyperv.synic,
            Requirement::Vapic => &mut hyperv.vapic,
        }
    }

    fn state(self, hyperv: &FeatureHyperv) -> Switch {
        let slot = match self {
            Requirement::VpIndex => &hyperv.vpindex,
            Requirement::SyNic => &hyperv.synic,
            Requirement::Vapic => &hyperv.vapic,
        };
        switch(slot.is_some(), slot.as_ref().and_then(|s| s.enabled))
    }
}

/// KubeVirt's table, leaves first: `(feature, its state, what it requires)`.
fn dependencies(hyperv: &FeatureHyperv) -> [(&'static str, Switch, Requirement); 5] {
    let state = |s: &Option<FeatureState>| switch(s.is_some(), s.as_ref().and_then(|s| s.enabled));
    [
        ("evmcs", state(&hyperv.evmcs), Requirement::Vapic),
        ("ipi", state(&hyperv.ipi), Requirement::VpIndex),
        (
            "tlbflush",
            switch(
                hyperv.tlbflush.is_some(),
                hyperv.tlbflush.as_ref().and_then(|t| t.enabled),
            ),
            Requirement::VpIndex,
        ),
        (
            "synictimer",
            switch(
                hyperv.synictimer.is_some(),
                hyperv.synictimer.as_ref().and_then(|t| t.enabled),
            ),
            Requirement::SyNic,
        ),
        ("synic", state(&hyperv.synic), Requirement::VpIndex),
    ]
}

/// The defaulter (`SetHypervFeatureDependencies`): switches on each missing requirement of an
/// enabled enlightenment, leaves first; stops at the first requirement the user switched off
/// (admission then refuses it).
pub fn set_requirements(hyperv: &mut FeatureHyperv) {
    for index in 0..5 {
        let (_, feature, requirement) = dependencies(hyperv)[index];
        if feature != Switch::On {
            continue;
        }
        match requirement.state(hyperv) {
            Switch::Missing => {
                requirement
                    .slot(hyperv)
                    .get_or_insert_with(Default::default)
                    .enabled = Some(true)
            }
            Switch::On => {}
            Switch::Off => return,
        }
    }
}

/// The enlightenments whose requirement is switched off, as `(feature, requirement)`, after the
/// defaulter ran on a copy (what KubeVirt's VMI admission sees).
pub fn unmet(hyperv: &FeatureHyperv) -> Vec<(&'static str, &'static str)> {
    let mut defaulted = hyperv.clone();
    defaulted.apply_defaults();
    set_requirements(&mut defaulted);
    dependencies(&defaulted)
        .into_iter()
        .filter(|(_, feature, requirement)| {
            *feature == Switch::On && requirement.state(&defaulted) != Switch::On
        })
        .map(|(feature, _, requirement)| (feature, requirement.name()))
        .collect()
}

/// `evmcs` needs the guest CPU's `vmx` feature: KubeVirt adds `{name: vmx, policy: require}` to
/// `cpu.features` (or sets an existing `vmx` entry's policy to `require`).
pub fn require_vmx(cpu: &mut Cpu) {
    let features = cpu
        .extra
        .entry("features".to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !features.is_array() {
        *features = Value::Array(Vec::new());
    }
    let Some(list) = features.as_array_mut() else {
        return;
    };
    match list
        .iter_mut()
        .find(|f| f.get("name").and_then(Value::as_str) == Some("vmx"))
    {
        Some(existing) => {
            if let Some(object) = existing.as_object_mut() {
                object.insert("policy".to_owned(), json!("require"));
            }
        }
        None => list.push(json!({"name": "vmx", "policy": "require"})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> Option<FeatureState> {
        Some(FeatureState::default())
    }

    fn off() -> Option<FeatureState> {
        Some(FeatureState {
            enabled: Some(false),
            ..Default::default()
        })
    }

    #[test]
    fn missing_requirements_are_switched_on_through_the_chain() {
        let mut hyperv = FeatureHyperv {
            synictimer: Some(Default::default()),
            ..Default::default()
        };
        hyperv.apply_defaults();
        set_requirements(&mut hyperv);
        assert_eq!(hyperv.synic.as_ref().and_then(|s| s.enabled), Some(true));
        assert_eq!(hyperv.vpindex.as_ref().and_then(|s| s.enabled), Some(true));
        assert!(unmet(&hyperv).is_empty());
    }

    #[test]
    fn a_disabled_requirement_is_reported() {
        let hyperv = FeatureHyperv {
            synictimer: Some(Default::default()),
            vpindex: off(),
            ipi: on(),
            ..Default::default()
        };
        assert_eq!(
            unmet(&hyperv),
            // As in KubeVirt, the defaulter stops at the first refusal: synic stays unset.
            vec![("ipi", "vpindex"), ("synictimer", "synic")]
        );
        let evmcs = FeatureHyperv {
            evmcs: on(),
            vapic: off(),
            ..Default::default()
        };
        assert_eq!(unmet(&evmcs), vec![("evmcs", "vapic")]);
    }

    #[test]
    fn vmx_is_required_for_evmcs() {
        let mut cpu = Cpu::default();
        require_vmx(&mut cpu);
        assert_eq!(
            cpu.extra["features"],
            json!([{"name": "vmx", "policy": "require"}])
        );
        cpu.extra.insert(
            "features".into(),
            json!([{"name": "vmx", "policy": "optional"}]),
        );
        require_vmx(&mut cpu);
        assert_eq!(
            cpu.extra["features"],
            json!([{"name": "vmx", "policy": "require"}])
        );
    }
}
