//! End to end over both crates: provision a state volume, lay it out as KubeVirt does, make the
//! VM's VARS from the real OVMF template, record a generation, damage the VARS, detect it with
//! `check_vars`, and roll back.

use std::fs;
use std::path::Path;

use ferrovirt_firmware::descriptor::{DEFAULT_SEARCH_DIRS, load_descriptors};
use ferrovirt_firmware::select::{Architecture, FirmwareRequest, select_uefi};
use ferrovirt_firmware::vars::{VarsProblem, check_vars, list_variables, prepare_vars};
use ferrovirt_storage::backend::{StateVolume, VmUuid, pvc_generate_name};
use ferrovirt_storage::generations::{GenerationReason, Generations};
use ferrovirt_storage::local_path::LocalPathProvisioner;

#[test]
fn damaged_vars_is_detected_and_rolled_back() {
    let data = tempfile::tempdir().unwrap();
    let prov = LocalPathProvisioner::new(data.path().join("volumes")).unwrap();
    let volume_name = format!("{}x7k2p", pvc_generate_name("win11"));
    let root = prov.create_volume(&volume_name).unwrap();
    let vol = StateVolume::open(&root).unwrap();
    let uuid = VmUuid::parse("5f1f8a3c-2b6e-4c7d-9a0b-1c2d3e4f5a6b").unwrap();
    vol.ensure_layout("win11", &uuid).unwrap();

    let loaded = load_descriptors(&DEFAULT_SEARCH_DIRS).unwrap();
    let fw = select_uefi(
        &loaded.descriptors,
        &FirmwareRequest {
            secure_boot: true,
            arch: Architecture::X86_64,
            machine: "q35".into(),
        },
    )
    .unwrap();
    let vars = vol.nvram_file("win11").unwrap();
    prepare_vars(&fw.vars_template, &vars).unwrap();
    fs::write(vol.tpm_state_file(&uuid), b"pretend swtpm state").unwrap();

    let gens = Generations::new(data.path().join("state-generations").join(&volume_name))
        .with_vm_uuid(uuid.as_str());
    let tpm_dir = vol.tpm_state_dir(&uuid);
    let sources: [(&str, &Path); 2] = [("tpm", &tpm_dir), ("vars", &vars)];
    let good = gens
        .record(&sources, GenerationReason::BeforeStart)
        .unwrap();

    // A crash zeroes the VARS file.
    fs::write(
        &vars,
        vec![0u8; fs::metadata(&fw.vars_template).unwrap().len() as usize],
    )
    .unwrap();
    let err = check_vars(&vars, &fw.vars_template).unwrap_err();
    assert_eq!(err.problem, VarsProblem::AllZero);

    let outcome = gens.restore(good, &sources).unwrap();
    check_vars(&vars, &fw.vars_template).unwrap();
    assert!(
        list_variables(&vars)
            .unwrap()
            .iter()
            .any(|v| v.name == "PK")
    );
    assert_eq!(
        fs::read(vol.tpm_state_file(&uuid)).unwrap(),
        b"pretend swtpm state"
    );
    // The zeroed file is kept in the pre-restore generation, never deleted.
    let pre = gens.verify(outcome.pre_restore).unwrap();
    assert_eq!(pre.entries[1].files[0].size, 540_672);
    // The volume itself holds only KubeVirt's layout.
    let mut top: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, vec!["meta", "nvram", "swtpm", "swtpm-localca"]);
}
