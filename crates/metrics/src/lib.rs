//! What `ferrovirt serve` tells Prometheus: one registry, the metrics the other crates record into
//! (API requests by verb, resource and code with kube-apiserver's names; VM start and stop
//! latency), and those read from the host at each scrape through a [`HostView`] the server wires
//! in (VMIs per phase and per-VM CPU and memory with KubeVirt's names, open watches, state
//! generations). It owns no HTTP: the apiserver serves [`Metrics::encode`] at `/metrics`
//! behind the same authentication and RBAC as the rest of the API.

use std::fmt::Debug;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The Content-Type of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of one API request, as kube-apiserver's `apiserver_request_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub code: String,
}

/// Labels of a request's latency, as kube-apiserver's `apiserver_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestKindLabels {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
}

/// What a start was: the first of a VM with a TPM to manufacture, or any other.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StartLabels {
    /// `true` when the start manufactured the VM's TPM (its first start).
    pub first: String,
}

/// One VMI as the host sees it at a scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct VmiSample {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub node: String,
    /// The QEMU process' CPU time (user + system), when it runs.
    pub cpu_seconds: Option<f64>,
    /// The QEMU process' resident set, when it runs.
    pub resident_bytes: Option<u64>,
}

/// The state generations of one VM (kept by its firmware UUID, also after the VM is deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationSample {
    /// The owning VM's namespace and name (empty when unknown).
    pub namespace: String,
    pub name: String,
    pub uuid: String,
    pub count: u64,
    pub bytes: u64,
}

/// What a scrape reads from the host (implemented by the server over its store and data dir).
pub trait HostView: Debug + Send + Sync + 'static {
    fn vmis(&self) -> Vec<VmiSample>;
    fn open_watches(&self) -> u64;
    fn generations(&self) -> Vec<GenerationSample>;
    /// TPMs manufactured ahead of need, ready: (plain, sealed).
    fn tpm_pool_ready(&self) -> (u64, u64);
}

/// The registry and the metrics recorded into it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RequestKindLabels, Histogram>,
    start_duration: Family<StartLabels, Histogram>,
    stop_duration: Histogram,
    failed_starts: Counter,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~32 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    /// A registry with every metric registered and `host` read at each scrape.
    pub fn new(host: Arc<dyn HostView>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Counter of API requests, by verb, API group, resource and HTTP response code.",
            requests.clone(),
        );
        let request_duration = Family::<RequestKindLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "apiserver_request_duration",
            "Response latency of API requests, by verb, API group and resource (watches: until the stream ends).",
            Unit::Seconds,
            request_duration.clone(),
        );
        let start_duration = Family::<StartLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "ferrovirt_vm_start_duration",
            "Time from the engine's start of a VM to its guest running (state prepared, swtpm and QEMU up); first=true when the start manufactured the TPM.",
            Unit::Seconds,
            start_duration.clone(),
        );
        let stop_duration = latency_histogram();
        registry.register_with_unit(
            "ferrovirt_vm_stop_duration",
            "Time from a stop request to the VM's state being durable (QEMU and swtpm exited, state checked and recorded).",
            Unit::Seconds,
            stop_duration.clone(),
        );
        let failed_starts = Counter::default();
        registry.register(
            "ferrovirt_vm_start_failures",
            "Starts the engine could not complete.",
            failed_starts.clone(),
        );
        registry.register_collector(Box::new(HostCollector { host }));
        Self {
            registry,
            requests,
            request_duration,
            start_duration,
            stop_duration,
            failed_starts,
        }
    }

    /// Records one API request (`resource` is `(plural, subresource)`, empty for non-resource
    /// URLs).
    pub fn request(
        &self,
        verb: &str,
        group: &str,
        resource: (&str, &str),
        code: u16,
        elapsed: Duration,
    ) {
        let (resource, subresource) = resource;
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.to_uppercase(),
                group: group.to_owned(),
                resource: resource.to_owned(),
                subresource: subresource.to_owned(),
                code: code.to_string(),
            })
            .inc();
        self.request_duration
            .get_or_create(&RequestKindLabels {
                verb: verb.to_uppercase(),
                group: group.to_owned(),
                resource: resource.to_owned(),
                subresource: subresource.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records a completed VM start.
    pub fn vm_started(&self, first: bool, elapsed: Duration) {
        self.start_duration
            .get_or_create(&StartLabels {
                first: first.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records a start that failed.
    pub fn vm_start_failed(&self) {
        self.failed_starts.inc();
    }

    /// Records a stop that reached durability.
    pub fn vm_stopped(&self, elapsed: Duration) {
        self.stop_duration.observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text of every metric (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The process-wide metrics, for the parts of `serve` that cannot be handed them (set once by the
/// server; before that, and in tests without a server, recording is a no-op).
pub fn global() -> Option<&'static Metrics> {
    GLOBAL.get()
}

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// Installs the process-wide metrics; a second call keeps the first and returns false.
pub fn install(metrics: Metrics) -> bool {
    GLOBAL.set(metrics).is_ok()
}

/// Reads the host at each scrape.
#[derive(Debug)]
struct HostCollector {
    host: Arc<dyn HostView>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VmiLabels {
    namespace: String,
    name: String,
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    namespace: String,
    name: String,
    uuid: String,
}

impl From<&GenerationSample> for StateLabels {
    fn from(g: &GenerationSample) -> Self {
        Self {
            namespace: g.namespace.clone(),
            name: g.name.clone(),
            uuid: g.uuid.clone(),
        }
    }
}

impl Collector for HostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let vmis = self.host.vmis();
        // kubevirt_vmi_phase_count: VMIs per phase (KubeVirt also labels os/workload/flavor,
        // which ferrovirt does not know).
        let mut phases: std::collections::BTreeMap<(String, String), i64> = Default::default();
        for vmi in &vmis {
            *phases
                .entry((vmi.phase.to_lowercase(), vmi.node.clone()))
                .or_default() += 1;
        }
        let mut family = encoder.encode_descriptor(
            "kubevirt_vmi_phase_count",
            "Sum of VMIs per phase and node.",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for ((phase, node), count) in phases {
            ConstGauge::new(count).encode(family.encode_family(&PhaseLabels { phase, node })?)?;
        }

        let labels = |vmi: &VmiSample| VmiLabels {
            namespace: vmi.namespace.clone(),
            name: vmi.name.clone(),
            node: vmi.node.clone(),
        };
        let mut family = encoder.encode_descriptor(
            "kubevirt_vmi_cpu_usage_seconds",
            "Total CPU time spent in all modes (vCPUs and hypervisor: the QEMU process).",
            None,
            ConstCounter::new(0f64).metric_type(),
        )?;
        for vmi in &vmis {
            if let Some(seconds) = vmi.cpu_seconds {
                ConstCounter::new(seconds).encode(family.encode_family(&labels(vmi))?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "kubevirt_vmi_memory_resident_bytes",
            "Resident set size of the process running the domain.",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for vmi in &vmis {
            if let Some(bytes) = vmi.resident_bytes {
                let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
                ConstGauge::new(bytes).encode(family.encode_family(&labels(vmi))?)?;
            }
        }

        let watches = i64::try_from(self.host.open_watches()).unwrap_or(i64::MAX);
        ConstGauge::new(watches).encode(encoder.encode_descriptor(
            "ferrovirt_apiserver_open_watches",
            "Watches open on the API server.",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?)?;

        let (plain, sealed) = self.host.tpm_pool_ready();
        let mut family = encoder.encode_descriptor(
            "ferrovirt_tpm_pool_ready",
            "TPMs manufactured ahead of need and ready for a first start, by kind (sealed: \
             encrypted at rest with a data key of their own).",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (kind, count) in [("plain", plain), ("sealed", sealed)] {
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            ConstGauge::new(count).encode(family.encode_family(&[("kind", kind)])?)?;
        }

        let generations = self.host.generations();
        let mut family = encoder.encode_descriptor(
            "ferrovirt_state_generations",
            "Recorded TPM/EFI state generations per VM.",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for g in &generations {
            let count = i64::try_from(g.count).unwrap_or(i64::MAX);
            ConstGauge::new(count).encode(family.encode_family(&StateLabels::from(g))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "ferrovirt_state_generation_bytes",
            "Bytes held by the state generations of each VM.",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for g in &generations {
            let bytes = i64::try_from(g.bytes).unwrap_or(i64::MAX);
            ConstGauge::new(bytes).encode(family.encode_family(&StateLabels::from(g))?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct TwoVmis;

    impl HostView for TwoVmis {
        fn vmis(&self) -> Vec<VmiSample> {
            vec![
                VmiSample {
                    namespace: "default".into(),
                    name: "a".into(),
                    phase: "Running".into(),
                    node: "host".into(),
                    cpu_seconds: Some(1.5),
                    resident_bytes: Some(4096),
                },
                VmiSample {
                    namespace: "default".into(),
                    name: "b".into(),
                    phase: "Scheduling".into(),
                    node: "host".into(),
                    cpu_seconds: None,
                    resident_bytes: None,
                },
            ]
        }
        fn open_watches(&self) -> u64 {
            3
        }
        fn tpm_pool_ready(&self) -> (u64, u64) {
            (0, 2)
        }
        fn generations(&self) -> Vec<GenerationSample> {
            vec![GenerationSample {
                namespace: "default".into(),
                name: "a".into(),
                uuid: "u-1".into(),
                count: 2,
                bytes: 1000,
            }]
        }
    }

    #[test]
    fn encodes_recorded_and_scraped_metrics_with_their_names() {
        let metrics = Metrics::new(Arc::new(TwoVmis));
        let vms = ("virtualmachines", "");
        metrics.request("get", "kubevirt.io", vms, 200, Duration::from_millis(3));
        metrics.request("get", "kubevirt.io", vms, 200, Duration::from_millis(5));
        metrics.vm_started(true, Duration::from_millis(900));
        metrics.vm_stopped(Duration::from_millis(30));
        let text = metrics.encode().unwrap();
        for line in [
            r#"apiserver_request_total{verb="GET",group="kubevirt.io",resource="virtualmachines",subresource="",code="200"} 2"#,
            r#"apiserver_request_duration_seconds_count{verb="GET",group="kubevirt.io",resource="virtualmachines",subresource=""} 2"#,
            r#"ferrovirt_vm_start_duration_seconds_count{first="true"} 1"#,
            "ferrovirt_vm_stop_duration_seconds_count 1",
            r#"kubevirt_vmi_phase_count{phase="running",node="host"} 1"#,
            r#"kubevirt_vmi_phase_count{phase="scheduling",node="host"} 1"#,
            r#"kubevirt_vmi_cpu_usage_seconds_total{namespace="default",name="a",node="host"} 1.5"#,
            r#"kubevirt_vmi_memory_resident_bytes{namespace="default",name="a",node="host"} 4096"#,
            "ferrovirt_apiserver_open_watches 3",
            r#"ferrovirt_tpm_pool_ready{kind="sealed"} 2"#,
            r#"ferrovirt_tpm_pool_ready{kind="plain"} 0"#,
            r#"ferrovirt_state_generations{namespace="default",name="a",uuid="u-1"} 2"#,
            r#"ferrovirt_state_generation_bytes{namespace="default",name="a",uuid="u-1"} 1000"#,
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
        assert!(
            !text.contains(r#"name="b""#),
            "no CPU/memory for a VMI that does not run"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
