//! The fuzz targets of ferrovirt: each takes arbitrary bytes and must neither panic nor hang,
//! whatever the input (a parser returns an error for what it refuses). The same functions run
//! under libFuzzer (`fuzz/fuzz_targets/`, nightly `cargo fuzz`) and over the committed corpus
//! (`fuzz/corpus/<target>/`) plus deterministic mutants on stable (`tests/corpus.rs`, in the
//! suite's nextest run). What each one drives:
//!
//! - `manifest`: the YAML/JSON manifest parser, KubeVirt's defaults and admission;
//! - `vars`: the edk2 variable store reader, and the writer on what the reader accepted (what it
//!   writes must read back to the same variables);
//! - `qmp`: the parser of what QEMU sends on QMP;
//! - `protobuf`: the Kubernetes protobuf decoder (reviews, namespaces);
//! - `selectors`: label selectors and field selectors;
//! - `patch`: JSON merge, JSON and strategic merge patches applied to a VM object.

use ferrovirt_api::config::ClusterConfig;
use ferrovirt_api::validation::{AdmissionContext, admit};
use ferrovirt_api::{Object, defaults, parse::parse_documents};
use serde_json::{Value, json};

pub fn manifest(data: &[u8]) {
    let Ok(objects) = parse_documents(data, "fuzz.yaml") else {
        return;
    };
    let config = ClusterConfig::embedded_default();
    let ctx = AdmissionContext::create(&config);
    for mut object in objects {
        if let Object::VirtualMachine(vm) = &mut object {
            defaults::apply_vm_defaults(vm);
        }
        let _ = admit(&object, &ctx);
    }
}

pub fn vars(data: &[u8]) {
    let path = std::path::Path::new("fuzz-VARS.fd");
    let Ok(store) = ferrovirt_firmware::VariableStore::parse(path, data.to_vec()) else {
        return;
    };
    let Ok(bytes) = store.to_bytes() else {
        return;
    };
    let again = ferrovirt_firmware::VariableStore::parse(path, bytes);
    let Ok(again) = again else {
        panic!("the writer produced a store its reader refuses: {again:?}");
    };
    let before: Vec<_> = store.variables().map(|v| &v.variable).collect();
    let after: Vec<_> = again.variables().map(|v| &v.variable).collect();
    assert_eq!(before, after, "variables changed by a write and read");
}

pub fn qmp(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ferrovirt_vmm::qmp::QmpMessage::Event(event)) =
        ferrovirt_vmm::qmp::parse_message(line)
    {
        let _ = event.kind();
    }
}

pub fn protobuf(data: &[u8]) {
    let _ = ferrovirt_apiserver::protobuf::decode_review(data);
    let _ = ferrovirt_apiserver::protobuf::decode_namespace(data);
}

pub fn selectors(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(selector) = ferrovirt_store::Selector::parse(text) {
        let _ = selector.matches_labels(Some(&json!({"app": "web", "tier": "db"})));
    }
    let _ = ferrovirt_apiserver::http::FieldSelector::parse(text);
}

pub fn patch(data: &[u8]) {
    use ferrovirt_apiserver::patch::{PatchKind, apply};
    let target = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm", "labels": {"a": "b"}, "finalizers": ["x"]},
        "spec": {
            "runStrategy": "Manual",
            "template": {"spec": {
                "domain": {"devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]}},
                "volumes": [{"name": "root", "hostDisk": {"path": "/x", "type": "Disk"}}]
            }}
        }
    });
    for kind in [PatchKind::Merge, PatchKind::Json, PatchKind::Strategic] {
        let mut object: Value = target.clone();
        let _ = apply(kind, &mut object, data);
    }
}

/// A fuzz target: arbitrary bytes in, a panic is the only failure.
pub type Target = fn(&[u8]);

/// Every target by name (the corpus directory of each is `fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("manifest", manifest),
    ("vars", vars),
    ("qmp", qmp),
    ("protobuf", protobuf),
    ("selectors", selectors),
    ("patch", patch),
];

/// A small deterministic mutator (xorshift): byte flips, insertions, deletions, duplications and
/// splices of another corpus entry. It finds shallow bugs on stable; libFuzzer finds the rest.
pub struct Mutator(u64);

impl Mutator {
    pub fn new(seed: u64) -> Self {
        Mutator(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// One mutant of `input` (`other`: another corpus entry to splice from).
    pub fn mutate(&mut self, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        let rounds = 1 + self.below(4);
        for _ in 0..rounds {
            let at = self.below(out.len() + 1);
            match self.below(6) {
                0 if !out.is_empty() => {
                    let i = self.below(out.len());
                    out[i] ^= 1 << self.below(8);
                }
                1 => {
                    let interesting: &[u8] = b"\0\xff{}[]\":,-\n #&*!|>'0123456789";
                    let byte = interesting[self.below(interesting.len())];
                    out.insert(at, byte);
                }
                2 if !out.is_empty() => {
                    let end = (at + 1 + self.below(16)).min(out.len());
                    let start = at.min(end);
                    out.drain(start..end);
                }
                3 if !out.is_empty() => {
                    let start = self.below(out.len());
                    let end = (start + 1 + self.below(32)).min(out.len());
                    let chunk = out[start..end].to_vec();
                    let at = self.below(out.len() + 1);
                    out.splice(at..at, chunk);
                }
                4 if !other.is_empty() => {
                    let start = self.below(other.len());
                    let end = (start + 1 + self.below(64)).min(other.len());
                    out.splice(at..at, other[start..end].iter().copied());
                }
                _ if !out.is_empty() => {
                    let i = self.below(out.len());
                    out[i] = self.next() as u8;
                }
                _ => out.push(self.next() as u8),
            }
        }
        out
    }
}
