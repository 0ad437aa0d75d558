//! `VirtualMachine`: the desired state (`runStrategy` or the deprecated `running`) and the template
//! of the instances it starts.

use serde::{Deserialize, Serialize};

use super::vmi::VirtualMachineInstanceTemplateSpec;
use crate::instancetype::Matcher;
use crate::meta::{Extra, ObjectMeta};

/// `kubevirt.io/v1` VirtualMachine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachine {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VirtualMachineSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.VirtualMachineSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSpec {
    /// Deprecated; mutually exclusive with `runStrategy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<VirtualMachineInstanceTemplateSpec>,
    /// The instancetype whose cpu and memory the VM's instances get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instancetype: Option<Matcher>,
    /// The preference that fills what the template leaves unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference: Option<Matcher>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.VirtualMachineRunStrategy` values KubeVirt accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStrategy {
    Always,
    RerunOnFailure,
    Manual,
    Halted,
    Once,
}

impl RunStrategy {
    /// All accepted strategies, in KubeVirt's order.
    pub const ALL: [RunStrategy; 5] = [
        RunStrategy::Halted,
        RunStrategy::Manual,
        RunStrategy::Always,
        RunStrategy::RerunOnFailure,
        RunStrategy::Once,
    ];

    /// The spelling in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStrategy::Always => "Always",
            RunStrategy::RerunOnFailure => "RerunOnFailure",
            RunStrategy::Manual => "Manual",
            RunStrategy::Halted => "Halted",
            RunStrategy::Once => "Once",
        }
    }

    /// Parses a manifest spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl VirtualMachine {
    /// The effective run strategy: `runStrategy`, else `running` (true = Always, false = Halted),
    /// else Halted. `None` when `runStrategy` holds an unknown value.
    pub fn run_strategy(&self) -> Option<RunStrategy> {
        match (&self.spec.run_strategy, self.spec.running) {
            (Some(text), _) => RunStrategy::parse(text),
            (None, Some(true)) => Some(RunStrategy::Always),
            (None, _) => Some(RunStrategy::Halted),
        }
    }
}
