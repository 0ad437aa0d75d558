//! The Hyper-V enlightenments of KubeVirt's common-instancetypes Windows preferences
//! (`windows.11`'s `hyperv` component), from a VM manifest through KubeVirt's defaults and the
//! converter to QEMU's `-cpu`, and real QEMU (TCG, paused with `-S`, no guest) accepting it:
//! QMP answers `prelaunch` and the vCPU's `hv-*` properties read back as set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::time::{Duration, Instant};

use ferrovirt_api::Object;
use ferrovirt_api::defaults::apply_vmi_defaults;
use ferrovirt_api::parse::parse_documents;
use ferrovirt_vmm::cmdline::qemu_args;
use ferrovirt_vmm::convert::{ConvertContext, plan_from_spec};
use ferrovirt_vmm::machine::*;
use ferrovirt_vmm::qmp::{QmpClient, RunState};
use ferrovirt_vmm::runtime::RuntimeDir;
use serde_json::json;

/// What a VMI with the windows.11 preference applied carries (common-instancetypes
/// `preferences/components/hyperv/hyperv.yaml`: features and clock).
const WINDOWS_VMI: &str = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: win11}
spec:
  domain:
    firmware: {uuid: 0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d}
    memory: {guest: 256Mi}
    clock:
      utc: {}
      timer:
        hpet: {present: false}
        pit: {tickPolicy: delay}
        rtc: {tickPolicy: catchup}
        hyperv: {}
    features:
      acpi: {}
      apic: {}
      hyperv:
        relaxed: {}
        vapic: {}
        vpindex: {}
        spinlocks: {spinlocks: 8191}
        synic: {}
        synictimer: {direct: {}}
        tlbflush: {}
        frequencies: {}
        reenlightenment: {}
        ipi: {}
        runtime: {}
        reset: {}
    devices:
      autoattachPodInterface: false
"#;

fn windows_plan() -> ferrovirt_vmm::engine::VmPlan {
    let Object::VirtualMachineInstance(mut vmi) =
        parse_documents(WINDOWS_VMI.as_bytes(), "win11.yaml")
            .unwrap()
            .remove(0)
    else {
        panic!("not a VMI")
    };
    apply_vmi_defaults(&mut vmi);
    let no_claims = |_: &str| None;
    plan_from_spec(
        &vmi.spec,
        &ConvertContext {
            namespace: "default",
            name: "win11",
            field_prefix: "spec",
            state_volume: None,
            claim_dir: &no_claims,
            termination_grace_period_seconds: None,
        },
    )
    .unwrap()
}

fn machine(runtime: &RuntimeDir, accel: Accel) -> MachineConfig {
    let plan = windows_plan();
    MachineConfig {
        name: "default_win11".into(),
        uuid: plan.uuid.as_str().to_string(),
        smbios_serial: None,
        accel,
        vcpus: plan.vcpus,
        memory_mib: plan.memory_mib,
        machine: MachineType::Q35 { smm: false },
        firmware: Firmware::Bios,
        tpm: None,
        hyperv: plan.hyperv,
        graphics: None,
        inputs: Vec::new(),
        disks: vec![],
        nics: vec![],
        serial: SerialConsole {
            socket: runtime.serial_socket(),
            log_file: runtime.serial_log(),
        },
        qmp_socket: runtime.qmp_socket(),
        guest_agent_socket: None,
        pid_file: runtime.qemu_pid_file(),
        qemu_binary: None,
        fd_sets: Vec::new(),
    }
}

fn cpu_option(config: &MachineConfig) -> String {
    let args: Vec<String> = qemu_args(config)
        .unwrap()
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
    let at = args
        .iter()
        .position(|a| a == "-cpu")
        .expect("a -cpu option");
    args[at + 1].clone()
}

#[test]
fn the_windows_preference_becomes_libvirts_cpu_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = RuntimeDir::create(tmp.path().join("run")).unwrap();
    // With KVM: every enlightenment, as libvirt renders KubeVirt's domain.
    assert_eq!(
        cpu_option(&machine(&runtime, Accel::Kvm)),
        "host,hv-time=on,hv-relaxed=on,hv-vapic=on,hv-spinlocks=0x1fff,hv-vpindex=on,\
         hv-runtime=on,hv-synic=on,hv-stimer=on,hv-stimer-direct=on,hv-reset=on,\
         hv-frequencies=on,hv-reenlightenment=on,hv-tlbflush=on,hv-ipi=on"
    );
    // With TCG: those that need KVM are left off, and named for the warning.
    let tcg = machine(&runtime, Accel::Tcg);
    assert_eq!(
        cpu_option(&tcg),
        "qemu64,hv-time=on,hv-relaxed=on,hv-vapic=on,hv-spinlocks=0x1fff,hv-runtime=on,\
         hv-reset=on,hv-frequencies=on,hv-reenlightenment=on"
    );
    assert_eq!(
        tcg.hyperv.unwrap().left_off_under_tcg(),
        ["vpindex", "synic", "synictimer", "tlbflush", "ipi"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_accepts_the_windows_cpu_flags_paused() {
    let tmp = tempfile::Builder::new()
        .prefix("fvhv")
        .tempdir_in("/tmp")
        .unwrap();
    let runtime = RuntimeDir::create(tmp.path().join("run")).unwrap();
    // This host runs guests with TCG (no working KVM); the engine would pick the same.
    let config = machine(&runtime, Accel::Tcg);
    let args = qemu_args(&config).unwrap();
    assert!(args.iter().any(|a| a == "-S"), "QEMU must start paused");
    let mut child =
        tokio::process::Command::from(ferrovirt_testkit::host_tool("qemu-system-x86_64"))
            .args(&args)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
    let sock = runtime.qmp_socket();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !Path::new(&sock).exists() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                pipe.read_to_string(&mut stderr).await.unwrap();
            }
            panic!("QEMU refused the command line ({status}): {stderr}\n{args:?}");
        }
        assert!(Instant::now() < deadline, "QMP socket never appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The socket file appears just before QEMU listens on it: retry a refused connect.
    let qmp = loop {
        match QmpClient::connect(&sock, Duration::from_secs(10)).await {
            Ok(qmp) => break qmp,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("QMP: {e}"),
        }
    };
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Prelaunch);
    // The vCPU has the properties the flags set.
    let cpus = qmp.execute("query-cpus-fast", None).await.unwrap();
    let path = cpus[0]["qom-path"].as_str().unwrap().to_string();
    for (property, expected) in [
        ("hv-relaxed", json!(true)),
        ("hv-vapic", json!(true)),
        ("hv-time", json!(true)),
        ("hv-runtime", json!(true)),
        ("hv-reset", json!(true)),
        ("hv-frequencies", json!(true)),
        ("hv-reenlightenment", json!(true)),
        ("hv-spinlocks", json!(0x1fff)),
        ("hv-vpindex", json!(false)),
    ] {
        let value = qmp
            .execute("qom-get", Some(json!({"path": path, "property": property})))
            .await
            .unwrap();
        assert_eq!(value, expected, "{property}");
    }
    qmp.quit().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}
