//! Hyper-V enlightenments on QEMU's `-cpu`, as KubeVirt gets them through libvirt: KubeVirt's
//! converter copies `domain.features.hyperv` and `clock.timer.hyperv` into the domain XML, and
//! libvirt's `qemuBuildCpuCommandLine` renders each enabled one as `hv-<name>=on` in a fixed
//! order (`hv-time` first, from the clock; then relaxed, vapic, spinlocks, vpindex, runtime,
//! synic, stimer, stimer-direct, reset, vendor-id, frequencies, reenlightenment, tlbflush,
//! tlbflush-direct, tlbflush-ext, ipi, evmcs). A switch that is off is simply not rendered.
//!
//! Under TCG: Hyper-V's synthetic MSRs and VP index are provided by KVM. QEMU 7.2 (Debian 12)
//! refuses `hv-vpindex` without KVM ("kernel doesn't allow setting HyperV VP_INDEX"; fixed in
//! QEMU 8.2), and `hv-evmcs` is meaningless without VMX. So under TCG the enlightenments that
//! need KVM's in-kernel Hyper-V support (vpindex and what builds on it: synic, stimer,
//! tlbflush, ipi; and evmcs) are left off, and [`Hyperv::left_off_under_tcg`] names them for a
//! warning; the others are passed as with KVM.

use serde::{Deserialize, Serialize};

/// The enlightenments of one VM, defaults resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hyperv {
    /// `clock.timer.hyperv` (QEMU's `hv-time`, the reference TSC page).
    pub time: bool,
    pub relaxed: bool,
    pub vapic: bool,
    /// Spinlock retries (`hv-spinlocks=0x...`), when enabled.
    pub spinlocks: Option<u32>,
    pub vpindex: bool,
    pub runtime: bool,
    pub synic: bool,
    /// `synictimer` (`hv-stimer`).
    pub stimer: bool,
    /// `synictimer.direct`.
    pub stimer_direct: bool,
    pub reset: bool,
    /// `vendorid.vendorid`, when enabled.
    pub vendor_id: Option<String>,
    pub frequencies: bool,
    pub reenlightenment: bool,
    pub tlbflush: bool,
    pub tlbflush_direct: bool,
    pub tlbflush_extended: bool,
    pub ipi: bool,
    pub evmcs: bool,
}

/// Why the enlightenments cannot be put on a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HypervError {
    #[error(
        "hyperv.vendorid {0:?} must be 1 to 12 printable ASCII characters without spaces or commas"
    )]
    VendorId(String),
}

impl Hyperv {
    /// Whether anything is switched on.
    pub fn any(&self) -> bool {
        !self.flags(true).is_empty()
    }

    /// The enlightenments this VM asks for that are left off under TCG.
    pub fn left_off_under_tcg(&self) -> Vec<&'static str> {
        [
            ("vpindex", self.vpindex),
            ("synic", self.synic),
            ("synictimer", self.stimer),
            ("tlbflush", self.tlbflush),
            ("ipi", self.ipi),
            ("evmcs", self.evmcs),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }

    /// The `-cpu` properties in libvirt's order; with `kvm: false` without those needing KVM.
    pub fn flags(&self, kvm: bool) -> Vec<String> {
        let on = |enabled: bool, name: &str| enabled.then(|| format!("hv-{name}=on"));
        [
            on(self.time, "time"),
            on(self.relaxed, "relaxed"),
            on(self.vapic, "vapic"),
            self.spinlocks
                .map(|retries| format!("hv-spinlocks={retries:#x}")),
            on(kvm && self.vpindex, "vpindex"),
            on(self.runtime, "runtime"),
            on(kvm && self.synic, "synic"),
            on(kvm && self.stimer, "stimer"),
            on(kvm && self.stimer && self.stimer_direct, "stimer-direct"),
            on(self.reset, "reset"),
            self.vendor_id
                .as_ref()
                .map(|vendor| format!("hv-vendor-id={vendor}")),
            on(self.frequencies, "frequencies"),
            on(self.reenlightenment, "reenlightenment"),
            on(kvm && self.tlbflush, "tlbflush"),
            on(
                kvm && self.tlbflush && self.tlbflush_direct,
                "tlbflush-direct",
            ),
            on(
                kvm && self.tlbflush && self.tlbflush_extended,
                "tlbflush-ext",
            ),
            on(kvm && self.ipi, "ipi"),
            on(kvm && self.evmcs, "evmcs"),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Checks what goes into an option value unescaped.
    pub fn check(&self) -> Result<(), HypervError> {
        if let Some(vendor) = &self.vendor_id {
            let ok = !vendor.is_empty()
                && vendor.chars().count() <= 12
                && vendor.chars().all(|c| c.is_ascii_graphic() && c != ',');
            if !ok {
                return Err(HypervError::VendorId(vendor.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_switches_and_kvm_only_ones_under_tcg() {
        let hyperv = Hyperv {
            relaxed: true,
            vpindex: true,
            synic: true,
            stimer_direct: true,
            ..Default::default()
        };
        assert_eq!(
            hyperv.flags(true),
            ["hv-relaxed=on", "hv-vpindex=on", "hv-synic=on"]
        );
        assert_eq!(hyperv.flags(false), ["hv-relaxed=on"]);
        assert_eq!(hyperv.left_off_under_tcg(), ["vpindex", "synic"]);
        assert!(Hyperv::default().flags(true).is_empty());
    }

    #[test]
    fn vendor_ids_that_would_break_the_option_are_refused() {
        for bad in ["", "a,b", "with space", "thirteenchars"] {
            let hyperv = Hyperv {
                vendor_id: Some(bad.into()),
                ..Default::default()
            };
            assert!(hyperv.check().is_err(), "{bad}");
        }
    }
}
