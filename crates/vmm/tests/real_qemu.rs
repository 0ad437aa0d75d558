//! Tests against real QEMU (TCG) and swtpm: no guest OS, just firmware.

// Test helpers outside #[test] fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrovirt_vmm::launcher::{ExitReason, ProcessEnd, SwtpmConfig, VmHandle};
use ferrovirt_vmm::machine::*;
use ferrovirt_vmm::qmp::{QmpClient, QmpEventKind, RunState};
use ferrovirt_vmm::runtime::RuntimeDir;

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

struct Fixture {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    runtime: RuntimeDir,
}

fn fixture() -> Fixture {
    let tmp = tempfile::Builder::new()
        .prefix("fv")
        .tempdir_in("/tmp")
        .unwrap();
    let base = tmp.path().to_path_buf();
    let runtime = RuntimeDir::create(base.join("run")).unwrap();
    Fixture {
        _tmp: tmp,
        base,
        runtime,
    }
}

fn machine(f: &Fixture, firmware: Firmware, smm: bool, tpm: Option<TpmModel>) -> MachineConfig {
    let rt = &f.runtime;
    MachineConfig {
        name: "default_test".into(),
        uuid: "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d".into(),
        smbios_serial: None,
        accel: Accel::Tcg,
        vcpus: 1,
        memory_mib: 128,
        machine: MachineType::Q35 { smm },
        firmware,
        tpm: tpm.map(|model| TpmAttachment {
            ctrl_socket: rt.swtpm_ctrl_socket(),
            model,
        }),
        hyperv: None,
        disks: vec![],
        nics: vec![],
        serial: SerialConsole {
            socket: rt.serial_socket(),
            log_file: rt.serial_log(),
        },
        graphics: None,
        inputs: Vec::new(),
        qmp_socket: rt.qmp_socket(),
        guest_agent_socket: Some(rt.guest_agent_socket()),
        pid_file: rt.qemu_pid_file(),
        qemu_binary: None,
        fd_sets: Vec::new(),
    }
}

fn uefi(f: &Fixture, code: &str, vars_template: &str, secure_boot: bool) -> Firmware {
    let vars = f.base.join("VARS.fd");
    std::fs::copy(vars_template, &vars).unwrap();
    Firmware::Uefi {
        code: code.into(),
        vars,
        secure_boot,
    }
}

fn swtpm(f: &Fixture) -> SwtpmConfig {
    let state_dir = f.base.join("tpm");
    std::fs::create_dir_all(&state_dir).unwrap();
    SwtpmConfig {
        state_dir,
        binary: None,
        extra_args: vec![],
        key: None,
    }
}

/// Reaped: no /proc entry at all (a zombie would still have one).
async fn assert_reaped(pid: i32) {
    for _ in 0..300 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    panic!("pid {pid} not reaped: {stat}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qmp_client_against_real_qemu() {
    let f = fixture();
    let sock = f.runtime.qmp_socket();
    let mut child =
        tokio::process::Command::from(ferrovirt_testkit::host_tool("qemu-system-x86_64"))
            .args([
                "-accel",
                "tcg",
                "-machine",
                "q35",
                "-nodefaults",
                "-display",
                "none",
                "-S",
                "-qmp",
            ])
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "QMP socket never appeared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The socket file appears at bind(), a moment before QEMU listens: a refused connection in
    // that moment is retried until the deadline.
    let qmp = loop {
        match QmpClient::connect(&sock, Duration::from_secs(10)).await {
            Ok(qmp) => break qmp,
            Err(error) if Instant::now() < deadline => {
                eprintln!("QMP not listening yet ({error}); retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("QMP never accepted a connection: {error}"),
        }
    };
    assert_eq!(qmp.greeting()["version"]["qemu"]["major"], 7);
    let mut events = qmp.subscribe();
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Prelaunch);
    qmp.cont().await.unwrap();
    assert_eq!(events.recv().await.unwrap().kind(), QmpEventKind::Resume);
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Running);
    qmp.stop().await.unwrap();
    assert_eq!(events.recv().await.unwrap().kind(), QmpEventKind::Stop);
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Paused);
    let err = qmp.execute("no-such-command", None).await.unwrap_err();
    assert!(err.to_string().contains("CommandNotFound"), "{err}");
    qmp.system_reset().await.unwrap();
    assert!(matches!(
        events.recv().await.unwrap().kind(),
        QmpEventKind::Reset { guest: false, .. }
    ));
    qmp.quit().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bios_start_running_stop_quits_after_grace() {
    let f = fixture();
    let config = machine(&f, Firmware::Bios, false, None);
    let vm = VmHandle::start(config, None, f.runtime.clone())
        .await
        .unwrap();
    assert_eq!(vm.qmp().query_status().await.unwrap(), RunState::Running);
    let pid = vm.record().qemu.pid;
    // Own process group: a Ctrl-C/SIGTERM to the manager's group does not reach the VM.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let pgrp: i32 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pgrp, pid);
    assert_eq!(
        std::fs::metadata(f.runtime.run_record())
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap(),
        0o600
    );
    // The guest agent's channel: a socket only the owner can open (it can shut the guest down).
    assert_eq!(
        std::fs::metadata(f.runtime.guest_agent_socket())
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap(),
        0o600
    );
    // No agent answers in a guest without an OS: a sync times out, it does not hang or succeed.
    let error =
        ferrovirt_vmm::agent::connect(&f.runtime.guest_agent_socket(), Duration::from_millis(300))
            .await
            .unwrap_err();
    assert!(
        matches!(error, ferrovirt_vmm::agent::AgentError::Timeout { .. }),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(f.runtime.qemu_pid_file())
            .unwrap()
            .trim(),
        pid.to_string()
    );
    // SeaBIOS without a disk has no ACPI OS: powerdown is ignored, quit follows the grace.
    let begun = Instant::now();
    let exit = vm.stop(Duration::from_millis(300)).await.unwrap();
    assert!(begun.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        exit.reason,
        ExitReason::HostShutdown {
            reason: "host-qmp-quit".into()
        }
    );
    assert_eq!(exit.qemu, ProcessEnd::Code(0));
    assert_eq!(exit.swtpm, None);
    assert_reaped(pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uefi_with_swtpm_connects_and_swtpm_exits_after_qemu() {
    let f = fixture();
    let firmware = uefi(&f, OVMF_CODE, OVMF_VARS, false);
    let config = machine(&f, firmware, false, Some(TpmModel::Crb));
    let tpm = swtpm(&f);
    let vm = VmHandle::start(config, Some(tpm.clone()), f.runtime.clone())
        .await
        .unwrap();
    let tpms = vm.qmp().execute("query-tpm", None).await.unwrap();
    assert_eq!(tpms[0]["model"], "tpm-crb", "{tpms}");
    assert_eq!(tpms[0]["options"]["type"], "emulator", "{tpms}");
    let swtpm_pid = vm.record().swtpm.as_ref().unwrap().pid;
    let qemu_pid = vm.record().qemu.pid;
    // Let the firmware talk to the TPM (CMD_INIT + TPM2_Startup), then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let exit = vm.stop(Duration::from_millis(200)).await.unwrap();
    assert_eq!(
        exit.reason,
        ExitReason::HostShutdown {
            reason: "host-qmp-quit".into()
        }
    );
    assert_eq!(exit.swtpm, Some(ProcessEnd::Code(0)));
    assert!(
        tpm.state_dir.join("tpm2-00.permall").exists(),
        "TPM state not written"
    );
    assert_reaped(qemu_pid).await;
    assert_reaped(swtpm_pid).await;
    let serial = std::fs::read_to_string(f.runtime.serial_log()).unwrap_or_default();
    eprintln!("serial log: {} bytes", serial.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_qemu_is_reported_and_swtpm_follows() {
    let f = fixture();
    let config = machine(&f, Firmware::Bios, false, Some(TpmModel::Tis));
    let vm = VmHandle::start(config, Some(swtpm(&f)), f.runtime.clone())
        .await
        .unwrap();
    let qemu_pid = vm.record().qemu.pid;
    let swtpm_pid = vm.record().swtpm.as_ref().unwrap().pid;
    // An outside kill (OOM killer, admin): by pid, not through the handle.
    let pid = rustix::process::Pid::from_raw(qemu_pid).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(15), vm.wait_exited())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.reason, ExitReason::Killed { signal: 9 });
    assert!(matches!(exit.swtpm, Some(ProcessEnd::Code(_))), "{exit:?}");
    assert_reaped(qemu_pid).await;
    assert_reaped(swtpm_pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_after_manager_restart_keeps_vm_running() {
    let f = fixture();
    let config = machine(&f, Firmware::Bios, false, Some(TpmModel::Crb));
    let vm = VmHandle::start(config, Some(swtpm(&f)), f.runtime.clone())
        .await
        .unwrap();
    let record = vm.record().clone();
    drop(vm); // the manager "restarts": dropping must not kill the VM
    tokio::time::sleep(Duration::from_millis(300)).await;
    record.qemu.verify().unwrap();
    record.swtpm.as_ref().unwrap().verify().unwrap();
    assert!(
        record
            .qemu
            .exe
            .as_ref()
            .unwrap()
            .ends_with("qemu-system-x86_64"),
        "{:?}",
        record.qemu.exe
    );

    // A run.json whose pid and start time match but whose executable does not is not adopted.
    let mut forged = record.clone();
    forged.qemu.exe = Some("/usr/bin/swtpm".into());
    f.runtime.write_record(&forged).unwrap();
    let refused = VmHandle::adopt(RuntimeDir::open(f.runtime.root()).unwrap())
        .await
        .err()
        .unwrap();
    assert!(
        refused.to_string().contains("not the recorded"),
        "{refused}"
    );
    f.runtime.write_record(&record).unwrap();

    let adopted = VmHandle::adopt(RuntimeDir::open(f.runtime.root()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        adopted.qmp().query_status().await.unwrap(),
        RunState::Running
    );
    assert_eq!(adopted.record(), &record);
    assert_eq!(adopted.start_to_running(), None);
    // A second start in the same runtime dir is refused while the VM lives.
    let again = VmHandle::start(record.machine.clone(), Some(swtpm(&f)), f.runtime.clone()).await;
    assert!(again.is_err());
    let exit = adopted.stop(Duration::from_millis(200)).await.unwrap();
    // Not our child any more: the status is unobserved, the SHUTDOWN event still tells why.
    assert_eq!(
        exit.reason,
        ExitReason::HostShutdown {
            reason: "host-qmp-quit".into()
        }
    );
    assert_eq!(exit.qemu, ProcessEnd::Unobserved);
    assert_eq!(exit.swtpm, Some(ProcessEnd::Unobserved));
    assert_reaped(record.qemu.pid).await;
    assert_reaped(record.swtpm.unwrap().pid).await;
    // Adopting a dead run fails clearly.
    let err = VmHandle::adopt(RuntimeDir::open(f.runtime.root()).unwrap())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_boot_smm_two_disks_command_line_is_accepted_by_qemu() {
    let f = fixture();
    let firmware = uefi(
        &f,
        "/usr/share/OVMF/OVMF_CODE_4M.ms.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
        true,
    );
    let mut config = machine(&f, firmware, true, Some(TpmModel::Crb));
    let root = f.base.join("root.qcow2");
    ferrovirt_testkit::run_host_tool(
        "qemu-img",
        [
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            root.as_os_str(),
            "64M".as_ref(),
        ],
    );
    let seed = f.base.join("seed.img");
    std::fs::write(&seed, vec![0u8; 1024 * 1024]).unwrap();
    config.disks = vec![
        Disk {
            name: "rootdisk".into(),
            path: root,
            format: DiskFormat::Qcow2,
            bus: DiskBus::Virtio,
            read_only: false,
            boot_order: Some(1),
            serial: Some("root1".into()),
            media: DiskMedia::Disk,
        },
        Disk {
            name: "cloudinit".into(),
            path: seed,
            format: DiskFormat::Raw,
            bus: DiskBus::Scsi,
            read_only: true,
            boot_order: None,
            serial: None,
            media: DiskMedia::Disk,
        },
    ];
    let vm = VmHandle::start(config, Some(swtpm(&f)), f.runtime.clone())
        .await
        .unwrap();
    let blocks = vm
        .qmp()
        .execute("query-named-block-nodes", None)
        .await
        .unwrap();
    let names: Vec<&str> = blocks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["node-name"].as_str())
        .collect();
    for node in [
        "pflash0-format",
        "pflash1-format",
        "disk-rootdisk-format",
        "disk-cloudinit-format",
    ] {
        assert!(names.contains(&node), "{node} missing from {names:?}");
    }
    let exit = vm.stop(Duration::from_millis(100)).await.unwrap();
    assert_eq!(exit.qemu, ProcessEnd::Code(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_failing_at_startup_is_reported_with_its_log() {
    let f = fixture();
    let firmware = Firmware::Uefi {
        code: "/nonexistent/CODE.fd".into(),
        vars: f.base.join("v.fd"),
        secure_boot: false,
    };
    let config = machine(&f, firmware, false, Some(TpmModel::Crb));
    let err = VmHandle::start(config, Some(swtpm(&f)), f.runtime.clone())
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("exited during startup") && text.contains("CODE.fd"),
        "{text}"
    );
    // swtpm started first and must not be left behind
    let swtpm_pid: i32 = std::fs::read_to_string(f.runtime.swtpm_pid_file())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_reaped(swtpm_pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_console_attaches() {
    let f = fixture();
    let config = machine(&f, Firmware::Bios, false, None);
    let vm = VmHandle::start(config, None, f.runtime.clone())
        .await
        .unwrap();
    let (socket, _log) = vm.serial_paths();
    let _stream = ferrovirt_vmm::console::attach(socket).await.unwrap();
    vm.stop(Duration::from_millis(50)).await.unwrap();
}

/// Start-to-running with swtpm + OVMF (fresh VARS copy, fresh TPM state) over 10 runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_start_to_running_with_swtpm_and_ovmf() {
    let mut samples = Vec::new();
    for _ in 0..10 {
        let f = fixture();
        let firmware = uefi(&f, OVMF_CODE, OVMF_VARS, false);
        let config = machine(&f, firmware, false, Some(TpmModel::Crb));
        let vm = VmHandle::start(config, Some(swtpm(&f)), f.runtime.clone())
            .await
            .unwrap();
        samples.push(vm.start_to_running().unwrap());
        vm.stop(Duration::ZERO).await.unwrap();
    }
    samples.sort();
    let median = (samples[4] + samples[5]) / 2;
    eprintln!(
        "start-to-running (swtpm + OVMF, TCG): median {median:?}, min {:?}, max {:?}",
        samples[0], samples[9]
    );
    assert!(median < Duration::from_secs(2), "median {median:?}");
}
