//! Hostile input: the parser and validator never panic, and huge, deeply nested or alias-bomb
//! inputs fail fast with an error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::time::{Duration, Instant};

use ferrovirt_api::config::ClusterConfig;
use ferrovirt_api::parse::{ParseError, parse_documents};
use ferrovirt_api::validation::{AdmissionContext, admit};
use proptest::prelude::*;

/// Parse and, when that works, admit every object: must never panic.
fn parse_and_admit(bytes: &[u8]) {
    let config = ClusterConfig::embedded_default();
    if let Ok(objects) = parse_documents(bytes, "fuzz") {
        for object in &objects {
            let _ = admit(object, &AdmissionContext::create(&config));
            let _ = object.to_json();
        }
    }
}

#[track_caller]
fn assert_fast_error(bytes: &[u8], limit: Duration) -> ParseError {
    let start = Instant::now();
    let result = parse_documents(bytes, "hostile");
    let elapsed = start.elapsed();
    assert!(elapsed < limit, "took {elapsed:?}");
    match result {
        Err(err) => err,
        Ok(objects) => panic!("accepted hostile input as {} objects", objects.len()),
    }
}

#[test]
fn fifty_megabyte_input_is_refused_quickly() {
    let mut big =
        b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  annotations:\n    a: \""
            .to_vec();
    big.resize(50 * 1024 * 1024, b'a');
    big.extend_from_slice(b"\"\n");
    let err = assert_fast_error(&big, Duration::from_secs(1));
    assert!(matches!(err, ParseError::TooLarge { .. }), "{err}");
}

#[test]
fn ten_thousand_deep_nesting_is_refused_without_stack_overflow() {
    let depth = 10_000;
    // YAML flow sequences, YAML flow mappings, YAML block mappings, and JSON.
    let flow_seq = format!("a: {}{}", "[".repeat(depth), "]".repeat(depth));
    let flow_map = format!("a: {}{}", "{a: ".repeat(depth), "}".repeat(depth));
    let mut block = String::new();
    for level in 0..depth {
        block.push_str(&" ".repeat(level));
        block.push_str("a:\n");
    }
    let json = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let json_obj = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    for input in [flow_seq, flow_map, block, json, json_obj] {
        assert_fast_error(input.as_bytes(), Duration::from_secs(5));
    }
}

#[test]
fn billion_laughs_alias_bomb_is_refused_quickly() {
    let bomb = r#"apiVersion: v1
kind: Namespace
metadata:
  name: lol
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"#;
    assert_fast_error(bomb.as_bytes(), Duration::from_secs(5));
}

#[test]
fn binary_junk_and_empty_input_do_not_panic() {
    parse_and_admit(&[0xff, 0xfe, 0x00, 0x01]);
    parse_and_admit(b"\x00\x00\x00");
    assert!(parse_documents(b"", "empty").unwrap().is_empty());
    assert!(parse_documents(b"---\n---\n", "empty").unwrap().is_empty());
}

/// YAML-ish fragments assembled into documents: keys KubeVirt uses, odd scalars, indentation.
fn yamlish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("apiVersion"),
        Just("kind"),
        Just("metadata"),
        Just("name"),
        Just("spec"),
        Just("template"),
        Just("domain"),
        Just("devices"),
        Just("tpm"),
        Just("persistent"),
        Just("enabled"),
        Just("firmware"),
        Just("bootloader"),
        Just("efi"),
        Just("secureBoot"),
        Just("disks"),
        Just("volumes"),
        Just("memory"),
        Just("guest"),
        Just("runStrategy"),
        Just("running"),
        Just("resources"),
        Just("requests"),
        Just("hostDisk"),
        Just("<<"),
    ];
    let value = prop_oneof![
        Just("kubevirt.io/v1".to_owned()),
        Just("VirtualMachine".to_owned()),
        Just("VirtualMachineInstance".to_owned()),
        Just("true".to_owned()),
        Just("null".to_owned()),
        Just("{}".to_owned()),
        Just("[]".to_owned()),
        Just("1Gi".to_owned()),
        Just("-1".to_owned()),
        Just("&x a".to_owned()),
        Just("*x".to_owned()),
        Just("!!binary aGk=".to_owned()),
        Just("- a".to_owned()),
        Just("'".to_owned()),
        Just("\"\\u0000\"".to_owned()),
        Just("[{name: a}]".to_owned()),
        Just("1e400".to_owned()),
        "[a-z0-9 :\\-\\[\\]{}]{0,12}",
    ];
    let line = (0usize..8, key, value)
        .prop_map(|(indent, k, v)| format!("{}{k}: {v}", " ".repeat(indent)));
    let separator = prop_oneof![
        Just("---".to_owned()),
        Just("- ".to_owned()),
        Just("...".to_owned())
    ];
    prop::collection::vec(prop_oneof![4 => line, 1 => separator], 0..40)
        .prop_map(|lines| lines.join("\n"))
}

/// A whole VM with fields replaced by random JSON values: exercises the typed layer and admission.
fn mutated_vm() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::json!(null)),
        Just(serde_json::json!(true)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!("x")),
        Just(serde_json::json!("1Gi")),
        Just(serde_json::json!({})),
        Just(serde_json::json!([])),
        Just(serde_json::json!(1.5e300)),
        Just(serde_json::json!({"enabled": false, "persistent": true})),
    ];
    let pointer = prop_oneof![
        Just("/spec/runStrategy"),
        Just("/spec/running"),
        Just("/metadata/name"),
        Just("/spec/template/spec/domain/devices/tpm"),
        Just("/spec/template/spec/domain/firmware"),
        Just("/spec/template/spec/domain/devices/disks/0"),
        Just("/spec/template/spec/volumes/0"),
        Just("/spec/template/spec/domain/memory/guest"),
        Just("/spec/template/spec/domain/resources"),
        Just("/spec/template/spec/domain/features"),
        Just("/spec/template/spec/domain"),
        Just("/spec"),
    ];
    prop::collection::vec((pointer, leaf), 0..6).prop_map(|edits| {
        let mut vm = serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm"},
            "spec": {"runStrategy": "Halted", "template": {"spec": {
                "domain": {"devices": {"disks": [{"name": "r", "disk": {}}], "tpm": {}},
                           "memory": {"guest": "1Gi"}, "features": {"smm": {}},
                           "firmware": {"bootloader": {"efi": {}}}, "resources": {}},
                "volumes": [{"name": "r", "persistentVolumeClaim": {"claimName": "c"}}]}}}
        });
        for (pointer, leaf) in edits {
            if let Some(slot) = vm.pointer_mut(pointer) {
                *slot = leaf;
            }
        }
        vm.to_string()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        parse_and_admit(&bytes);
    }

    #[test]
    fn yamlish_documents_never_panic(text in yamlish()) {
        parse_and_admit(text.as_bytes());
    }

    #[test]
    fn mutated_vms_never_panic(text in mutated_vm()) {
        parse_and_admit(text.as_bytes());
    }
}
