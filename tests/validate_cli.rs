//! End-to-end tests of `ferrovirt validate` through the built binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferrovirt");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/api/tests/fixtures")
}

fn tmp_file(name: &str, contents: &[u8]) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = stdin.map(<[u8]>::to_vec);
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        if let Some(input) = input {
            let _ = pipe.write_all(&input);
        }
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const VM_PERSISTENT_TPM: &str = "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: vm
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        devices:
          tpm:
            persistent: true
        memory:
          guest: 1Gi
";

#[test]
fn all_kubevirt_examples_and_seeds_are_valid() {
    let mut args = vec!["validate".to_owned()];
    let mut count = 0;
    for dir in ["kubevirt-examples", "seeds"] {
        let mut files: Vec<_> = std::fs::read_dir(fixtures().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            args.push("-f".into());
            args.push(file.display().to_string());
            count += 1;
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args, None);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), count, "{stdout}");
    assert!(
        stdout.contains("virtualmachine.kubevirt.io/vm-cirros valid\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("virtualmachineinstance.kubevirt.io/vmi-windows valid\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("kubevirt.kubevirt.io/kubevirt valid\n"),
        "{stdout}"
    );
}

#[test]
fn stdin_is_read_with_dash() {
    let out = run(&["validate", "-f", "-"], Some(VM_PERSISTENT_TPM.as_bytes()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "virtualmachine.kubevirt.io/vm valid\n");
}

#[test]
fn config_without_the_gate_rejects_a_persistent_tpm_kubectl_style() {
    let config = tmp_file(
        "no-gates.yaml",
        b"apiVersion: kubevirt.io/v1\nkind: KubeVirt\nmetadata:\n  name: kubevirt\n  namespace: kubevirt\nspec:\n  configuration:\n    developerConfiguration:\n      featureGates: []\n",
    );
    let vm = tmp_file("vm-ptpm.yaml", VM_PERSISTENT_TPM.as_bytes());
    let out = run(
        &[
            "validate",
            "-f",
            vm.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "The VirtualMachine \"vm\" is invalid: spec.template.spec.domain.devices.tpm.persistent: VMPersistentState feature gate is not enabled in kubevirt-config\n"
    );
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn several_causes_are_printed_as_an_aggregate() {
    let vm = VM_PERSISTENT_TPM
        .replace(
            "persistent: true",
            "persistent: true\n            enabled: false",
        )
        .replace(
            "runStrategy: Halted",
            "runStrategy: Halted\n  running: true",
        );
    let out = run(&["validate", "-f", "-"], Some(vm.as_bytes()));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "The VirtualMachine \"vm\" is invalid: [spec.template.spec.domain.devices.tpm.persistent: spec.template.spec.domain.devices.tpm.persistent is true but spec.template.spec.domain.devices.tpm.enabled is false: a disabled TPM has no state to persist; remove persistent or enable the TPM, spec.running: Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead]\n"
    );
}

#[test]
fn syntax_errors_carry_file_line_and_column() {
    let file = tmp_file(
        "broken.yaml",
        b"apiVersion: v1\nkind: Namespace\nmetadata: {name: [x\n",
    );
    let out = run(&["validate", "-f", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let prefix = format!("error: {}:", file.display());
    assert!(stderr.starts_with(&prefix), "{stderr}");
    let position: Vec<&str> = stderr[prefix.len()..].splitn(3, ':').collect();
    assert!(position[0].parse::<u32>().unwrap() >= 3, "{stderr}");
    assert!(position[1].parse::<u32>().is_ok(), "{stderr}");
}

#[test]
fn type_errors_name_the_field() {
    let vm = VM_PERSISTENT_TPM.replace("persistent: true", "persistent: maybe");
    let out = run(&["validate", "-f", "-"], Some(vm.as_bytes()));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: <stdin>: document 1 (VirtualMachine): spec.template.spec.domain.devices.tpm.persistent: invalid type"),
        "{stderr}"
    );
}

#[test]
fn hostile_inputs_fail_with_exit_code_1_quickly() {
    let mut big = b"a: \"".to_vec();
    big.resize(50 * 1024 * 1024, b'x');
    let depth = 10_000;
    let nested = format!("a: {}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    let bomb = b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n".to_vec();
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (name, input) in [
        ("50MB", big),
        ("nested", nested),
        ("bomb", bomb),
        ("junk", junk),
    ] {
        let start = Instant::now();
        let out = run(&["validate", "-f", "-"], Some(&input));
        let elapsed = start.elapsed();
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).starts_with("error: "),
            "{name}: {}",
            text(&out.stderr)
        );
        assert!(elapsed < Duration::from_secs(10), "{name} took {elapsed:?}");
    }
    let file = tmp_file("big.yaml", &vec![b'a'; 50 * 1024 * 1024]);
    let out = run(&["validate", "-f", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("limit for a manifest"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn missing_file_unknown_kind_and_empty_input() {
    let out = run(&["validate", "-f", "/nonexistent/vm.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: /nonexistent/vm.yaml: "),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        &["validate", "-f", "-"],
        Some(b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with(
        "The Deployment \"d\" is invalid: kind: ferrovirt does not serve apps/v1/Deployment"
    ));
    let out = run(&["validate", "-f", "-"], Some(b""));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: <stdin>: no objects passed to validate\n"
    );
    let out = run(&["validate"], None);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}
