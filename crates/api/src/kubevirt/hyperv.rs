//! Hyper-V enlightenments (`domain.features.hyperv`) and the clock (`domain.clock`, whose
//! `timer.hyperv` is the Hyper-V reference clock), as KubeVirt spells them.

use serde::{Deserialize, Serialize};

use crate::kubevirt::FeatureState;
use crate::meta::Extra;

/// `v1.FeatureHyperv`: each enlightenment is on when present, unless `enabled: false`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureHyperv {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relaxed: Option<FeatureState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vapic: Option<FeatureState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spinlocks: Option<FeatureSpinlocks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpindex: Option<FeatureState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<FeatureState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synic: Option<FeatureState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synictimer: Option<SyNicTimer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<FeatureState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendorid: Option<FeatureVendorId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequencies: Option<FeatureState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reenlightenment: Option<FeatureState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlbflush: Option<TlbFlush>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipi: Option<FeatureState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evmcs: Option<FeatureState>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.FeatureSpinlocks`: `spinlocks` is the retry count (KubeVirt's default 4096).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureSpinlocks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spinlocks: Option<u32>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.FeatureVendorID`: the hypervisor vendor id the guest sees (up to 12 characters).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureVendorId {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendorid: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.SyNICTimer` (QEMU's `hv-stimer`), with `direct` mode (`hv-stimer-direct`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyNicTimer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<FeatureState>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.TLBFlush` (`hv-tlbflush`), with `direct` and `extended` (`hv-tlbflush-direct`/`-ext`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlbFlush {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<FeatureState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended: Option<FeatureState>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.Clock`: the offset (`utc`, `timezone`) and the timers; only `timer` is typed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Clock {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<Timer>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.Timer`: `hpet`, `kvm`, `pit`, `rtc` are kept as written; `hyperv` is typed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperv: Option<HypervTimer>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1.HypervTimer`: KubeVirt spells its switch `present` (true when absent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HypervTimer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Whether an optional feature switch is on: present and not `enabled: false`.
pub fn switch_on(present: bool, enabled: Option<bool>) -> bool {
    present && enabled.unwrap_or(true)
}

impl FeatureHyperv {
    /// Applies KubeVirt's defaulters (`SetDefaults_FeatureState`, `_SyNICTimer`,
    /// `_FeatureSpinlocks`, `_FeatureVendorID`): every present switch gets `enabled: true`
    /// unless set, and enabled spinlocks get 4096 retries unless set.
    pub fn apply_defaults(&mut self) {
        for state in [
            &mut self.relaxed,
            &mut self.vapic,
            &mut self.vpindex,
            &mut self.runtime,
            &mut self.synic,
            &mut self.reset,
            &mut self.frequencies,
            &mut self.reenlightenment,
            &mut self.ipi,
            &mut self.evmcs,
        ]
        .into_iter()
        .flatten()
        {
            state.enabled.get_or_insert(true);
        }
        if let Some(spinlocks) = &mut self.spinlocks {
            let enabled = *spinlocks.enabled.get_or_insert(true);
            if enabled && spinlocks.spinlocks.is_none() {
                spinlocks.spinlocks = Some(DEFAULT_SPINLOCK_RETRIES);
            }
        }
        if let Some(vendor) = &mut self.vendorid {
            vendor.enabled.get_or_insert(true);
        }
        if let Some(timer) = &mut self.synictimer {
            timer.enabled.get_or_insert(true);
            if let Some(direct) = &mut timer.direct {
                direct.enabled.get_or_insert(true);
            }
        }
        if let Some(tlbflush) = &mut self.tlbflush {
            tlbflush.enabled.get_or_insert(true);
            for sub in [&mut tlbflush.direct, &mut tlbflush.extended]
                .into_iter()
                .flatten()
            {
                sub.enabled.get_or_insert(true);
            }
        }
    }
}

/// KubeVirt's default spinlock retry count (`SetDefaults_FeatureSpinlocks`).
pub const DEFAULT_SPINLOCK_RETRIES: u32 = 4096;
