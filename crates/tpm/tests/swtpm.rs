//! Integration tests with the real swtpm / swtpm_setup / swtpm_localca (Debian packages swtpm,
//! swtpm-tools). Each manufacture takes ~1 s; each check ~15 ms.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ferrovirt_tpm::check::is_der_sequence;
use ferrovirt_tpm::localca;
use ferrovirt_tpm::{
    CheckOptions, EkKind, ManufactureError, ManufactureOutcome, ManufactureRequest, STATE_FILE,
    Sha256Digest, StateError, StateKey, VmId, check_state, check_state_with, is_encrypted_state,
    manufacture, reencrypt_state,
};

struct Volume {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Volume {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        Self { _tmp: tmp, root }
    }
    fn state_dir(&self) -> PathBuf {
        self.root
            .join("vol/swtpm/0f6b7c1e-aaaa-4bbb-8ccc-123456789abc/tpm2")
    }
    fn localca_dir(&self) -> PathBuf {
        self.root.join("vol/swtpm-localca")
    }
    fn request(&self) -> ManufactureRequest {
        ManufactureRequest::new(
            self.state_dir(),
            self.localca_dir(),
            VmId::new("testvm", "0f6b7c1e-aaaa-4bbb-8ccc-123456789abc").unwrap(),
            self.root.join("run"),
        )
    }
    /// A copy of the manufactured state in a fresh dir, modified by `f`.
    fn damaged_copy(&self, name: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
        let dir = self.root.join("copies").join(name);
        fs::create_dir_all(&dir).unwrap();
        let mut bytes = fs::read(self.state_dir().join(STATE_FILE)).unwrap();
        f(&mut bytes);
        fs::write(dir.join(STATE_FILE), bytes).unwrap();
        dir
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o777
}

/// Names, sizes and mtimes of the host-wide swtpm CA and config (must never change).
fn host_wide_fingerprint() -> BTreeMap<String, (u64, Option<SystemTime>)> {
    let mut out = BTreeMap::new();
    let mut add = |p: &Path| {
        if let Ok(m) = fs::metadata(p) {
            out.insert(p.display().to_string(), (m.len(), m.modified().ok()));
        }
    };
    for p in [
        "/etc/swtpm_setup.conf",
        "/etc/swtpm-localca.conf",
        "/etc/swtpm-localca.options",
        "/var/lib/swtpm-localca",
    ] {
        add(Path::new(p));
    }
    if let Ok(entries) = fs::read_dir("/var/lib/swtpm-localca") {
        for e in entries.flatten() {
            add(&e.path());
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        add(&Path::new(&home).join(".config/swtpm_setup.conf"));
        add(&Path::new(&home).join(".config/swtpm-localca"));
    }
    out
}

#[test]
fn manufacture_creates_certified_state_once_and_check_reads_it_unchanged() {
    let host_before = host_wide_fingerprint();
    let vol = Volume::new();
    let mut req = vol.request();
    req.options.ek_cert_dir = Some(vol.root.join("vol/ek-certs"));

    let report = manufacture(&req).unwrap();
    eprintln!("manufacture: {:?}", report.duration);
    assert_eq!(report.outcome, ManufactureOutcome::Manufactured);
    assert!(report.ca_created);
    let state_file = vol.state_dir().join(STATE_FILE);
    assert_eq!(report.state_file, state_file);
    let size = fs::metadata(&state_file).unwrap().len();
    assert!((4000..9000).contains(&size), "state size {size}");
    assert_eq!(report.state_size, size);
    assert_eq!(mode(&state_file), 0o600);
    assert_eq!(mode(&vol.state_dir()), 0o700);
    // Only the state in the state dir: no staging dir, no lock file left behind.
    let names: Vec<_> = fs::read_dir(vol.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![STATE_FILE.to_owned()]);

    // The CA lives in the volume, private.
    let ca = vol.localca_dir();
    assert_eq!(mode(&ca), 0o700);
    for name in localca::CA_MATERIAL.iter().chain(&[
        localca::CERT_SERIAL,
        localca::SETUP_CONF,
        localca::LOCALCA_CONF,
    ]) {
        let p = ca.join(name);
        assert!(fs::metadata(&p).unwrap().len() > 0, "{name} empty");
        assert_eq!(mode(&p), 0o600, "{name}");
    }

    // EK certificates: RSA and ECC, DER, subject carries the vmid.
    let names: Vec<_> = report
        .ek_certificates
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["ek-rsa2048.crt", "ek-secp384r1.crt"]);
    for cert in &report.ek_certificates {
        assert!(is_der_sequence(&cert.der), "{} is DER", cert.name);
        let kept = cert.kept_at.as_ref().unwrap();
        assert_eq!(fs::read(kept).unwrap(), cert.der);
        assert_eq!(mode(kept), 0o600);
    }
    let rsa_cert = &report.ek_certificates[0].der;
    let needle = b"testvm:0f6b7c1e-aaaa-4bbb-8ccc-123456789abc";
    assert!(rsa_cert.windows(needle.len()).any(|w| w == needle));

    // Second manufacture: nothing happens.
    let digest_before = Sha256Digest::of(&fs::read(&state_file).unwrap());
    let mtime_before = fs::metadata(&state_file).unwrap().modified().unwrap();
    let again = manufacture(&req).unwrap();
    eprintln!("manufacture (already there): {:?}", again.duration);
    assert_eq!(again.outcome, ManufactureOutcome::AlreadyManufactured);
    assert_eq!(again.state_sha256, digest_before);
    assert!(again.ek_certificates.is_empty());

    // check_state reads it, finds EK and certificates, and leaves it byte-identical.
    let info = check_state(&vol.state_dir()).unwrap();
    eprintln!("check_state: {:?}", info.duration);
    assert_eq!(info.size, size);
    assert_eq!(info.sha256, digest_before);
    assert!(info.has_ek && info.has_ek_cert && info.has_platform_cert);
    assert!(info.ek_certificates.is_empty());

    let mut opts = CheckOptions::default();
    opts.read_ek_certificates = true;
    let info = check_state_with(&vol.state_dir(), &opts).unwrap();
    eprintln!("check_state + EK read: {:?}", info.duration);
    assert_eq!(info.ek_certificates.len(), 2);
    assert_eq!(info.ek_certificates[0].kind, EkKind::Rsa);
    assert_eq!(
        &info.ek_certificates[0].der, rsa_cert,
        "NV cert == swtpm_setup's file"
    );
    assert_eq!(info.ek_certificates[1].der, report.ek_certificates[1].der);

    assert_eq!(
        Sha256Digest::of(&fs::read(&state_file).unwrap()),
        digest_before
    );
    assert_eq!(
        fs::metadata(&state_file).unwrap().modified().unwrap(),
        mtime_before
    );
    assert_eq!(
        fs::read_dir(vol.state_dir()).unwrap().count(),
        1,
        "check left nothing in the state dir"
    );

    assert_eq!(
        host_wide_fingerprint(),
        host_before,
        "host-wide swtpm CA/config touched"
    );
}

#[test]
fn check_distinguishes_missing_and_corrupt_states() {
    let vol = Volume::new();
    manufacture(&vol.request()).unwrap();

    let empty_dir = vol.root.join("empty");
    fs::create_dir_all(&empty_dir).unwrap();
    assert!(matches!(
        check_state(&empty_dir),
        Err(StateError::Missing { .. })
    ));
    assert!(matches!(
        check_state(&vol.root.join("no-such-dir")),
        Err(StateError::Missing { .. })
    ));

    type Damage = Box<dyn FnOnce(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "truncated",
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() / 2)),
        ),
        ("empty-file", Box::new(|b: &mut Vec<u8>| b.clear())),
        ("magic-flipped", Box::new(|b: &mut Vec<u8>| b[20] ^= 0x55)),
        (
            "tail-magic-flipped",
            Box::new(|b: &mut Vec<u8>| {
                let n = b.len();
                b[n - 2] ^= 0x55
            }),
        ),
        (
            "garbage",
            Box::new(|b: &mut Vec<u8>| b.iter_mut().for_each(|x| *x = 0xA5)),
        ),
    ];
    for (name, damage) in cases {
        let dir = vol.damaged_copy(name, damage);
        let before = fs::read(dir.join(STATE_FILE)).unwrap();
        let started = std::time::Instant::now();
        let err = check_state(&dir).unwrap_err();
        eprintln!("{name}: {:?}: {err}", started.elapsed());
        assert!(matches!(err, StateError::Corrupt { .. }), "{name}: {err:?}");
        assert_eq!(
            fs::read(dir.join(STATE_FILE)).unwrap(),
            before,
            "{name} untouched"
        );
    }

    // The swtpm message is in the error.
    let dir = vol.damaged_copy("magic-again", |b| b[20] ^= 0x55);
    let msg = check_state(&dir).unwrap_err().to_string();
    assert!(msg.contains("Invalid magic"), "{msg}");
}

#[test]
fn check_reading_certificates_detects_a_damaged_ek_certificate() {
    let vol = Volume::new();
    let report = manufacture(&vol.request()).unwrap();
    let der = report.ek_certificates[0].der.clone();
    let dir = vol.damaged_copy("cert-damaged", |b| {
        let at = b
            .windows(der.len())
            .position(|w| w == der.as_slice())
            .expect("the EK certificate is stored verbatim in the state");
        b[at + 3] ^= 0x01; // the DER length
    });
    // swtpm alone does not notice (no checksum in an unencrypted state) ...
    assert!(check_state(&dir).is_ok());
    // ... reading the certificate does.
    let mut opts = CheckOptions::default();
    opts.read_ek_certificates = true;
    let err = check_state_with(&dir, &opts).unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
}

#[test]
fn encrypted_state_fails_closed_and_detects_any_change() {
    let vol = Volume::new();
    let key = StateKey::new([0x11; 32]);

    let mut req = vol.request();
    req.options.state_key = Some(key.clone());
    let report = manufacture(&req).unwrap();
    eprintln!("manufacture encrypted: {:?}", report.duration);

    let mut opts = CheckOptions::default();
    opts.state_key = Some(key.clone());
    let info = check_state_with(&vol.state_dir(), &opts).unwrap();
    assert!(info.has_ek_cert);

    let err = check_state(&vol.state_dir()).unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "no key: {err:?}");
    assert!(err.to_string().contains("StateKey"), "{err}");
    assert!(is_encrypted_state(
        &fs::read(vol.state_dir().join(STATE_FILE)).unwrap()
    ));

    // Re-encrypted under another key (rotation), then to plain (export), then back: the EK
    // certificates survive each step, and each result needs exactly its key.
    let work = tempfile::tempdir().unwrap();
    let other = StateKey::new([0x33; 32]);
    let rotated = reencrypt_state(
        &vol.state_dir(),
        Some(&key),
        Some(&other),
        &work.path().join("a"),
    )
    .unwrap();
    assert!(is_encrypted_state(&rotated));
    let rotated_dir = vol.root.join("rotated");
    fs::create_dir_all(&rotated_dir).unwrap();
    fs::write(rotated_dir.join(STATE_FILE), &rotated).unwrap();
    let mut with_other = CheckOptions::default();
    with_other.state_key = Some(other.clone());
    with_other.read_ek_certificates = true;
    let mut with_key = opts.clone();
    with_key.read_ek_certificates = true;
    assert_eq!(
        check_state_with(&rotated_dir, &with_other)
            .unwrap()
            .ek_certificates,
        check_state_with(&vol.state_dir(), &with_key)
            .unwrap()
            .ek_certificates
    );
    assert!(matches!(
        check_state_with(&rotated_dir, &opts),
        Err(StateError::Undecryptable { .. })
    ));
    let plain = reencrypt_state(&rotated_dir, Some(&other), None, &work.path().join("b")).unwrap();
    assert!(!is_encrypted_state(&plain));
    // An export decrypts at every request: the same state gives the same plain bytes (a resumed
    // download's range must continue the same stream).
    let decrypting = std::time::Instant::now();
    let plain_again =
        reencrypt_state(&rotated_dir, Some(&other), None, &work.path().join("b2")).unwrap();
    eprintln!("decrypt to plain (export): {:?}", decrypting.elapsed());
    assert_eq!(plain, plain_again);
    let plain_dir = vol.root.join("plain");
    fs::create_dir_all(&plain_dir).unwrap();
    fs::write(plain_dir.join(STATE_FILE), &plain).unwrap();
    assert!(check_state(&plain_dir).unwrap().has_ek_cert);
    let again = reencrypt_state(&plain_dir, None, Some(&key), &work.path().join("c")).unwrap();
    assert!(is_encrypted_state(&again));
    // A wrong old key: refused, nothing produced.
    assert!(matches!(
        reencrypt_state(
            &vol.state_dir(),
            Some(&other),
            Some(&key),
            &work.path().join("d")
        ),
        Err(StateError::Undecryptable { .. })
    ));
    // The work dirs hold no plain blob afterwards.
    for dir in ["a", "b", "b2", "c", "d"] {
        assert!(!work.path().join(dir).join("permanent.blob").exists());
    }

    let mut wrong = CheckOptions::default();
    wrong.state_key = Some(StateKey::new([0x22; 32]));
    let err = check_state_with(&vol.state_dir(), &wrong).unwrap_err();
    assert!(
        matches!(err, StateError::Undecryptable { .. }),
        "wrong key: {err:?}"
    );

    // A flipped byte in the middle of the payload: undetected without encryption, detected here.
    let dir = vol.damaged_copy("enc-flipped", |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x01
    });
    let err = check_state_with(&dir, &opts).unwrap_err();
    assert!(
        matches!(err, StateError::Undecryptable { .. }),
        "flip: {err:?}"
    );
}

#[test]
fn failed_manufacture_reports_the_log_and_leaves_no_state() {
    let vol = Volume::new();
    let mut req = vol.request();
    req.options.pcr_banks = "nosuchbank".into();
    let err = manufacture(&req).unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        matches!(err, ManufactureError::SetupFailed { .. }),
        "{err:?}"
    );
    assert!(msg.contains("testvm:"), "{msg}");
    assert!(msg.lines().count() > 1, "log lines included: {msg}");
    assert!(!vol.state_dir().join(STATE_FILE).exists());
    assert!(matches!(
        check_state(&vol.state_dir()),
        Err(StateError::Missing { .. })
    ));

    let mut req = vol.request();
    req.options.swtpm_setup = "/nonexistent/swtpm_setup".into();
    assert!(matches!(
        manufacture(&req),
        Err(ManufactureError::Spawn { .. })
    ));
}

#[test]
fn partial_ca_is_set_aside_and_concurrent_manufactures_agree() {
    let vol = Volume::new();
    let ca = vol.localca_dir();
    fs::create_dir_all(&ca).unwrap();
    fs::write(ca.join(localca::ROOT_CA_KEY), b"half-written").unwrap();

    let req = vol.request();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| manufacture(&req));
        let b = s.spawn(|| manufacture(&req));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut outcomes = [a.outcome, b.outcome];
    outcomes.sort_by_key(|o| *o == ManufactureOutcome::AlreadyManufactured);
    assert_eq!(
        outcomes,
        [
            ManufactureOutcome::Manufactured,
            ManufactureOutcome::AlreadyManufactured
        ]
    );
    assert_eq!(
        a.state_sha256, b.state_sha256,
        "both report the published state"
    );
    let info = check_state(&vol.state_dir()).unwrap();
    assert_eq!(info.sha256, a.state_sha256);
    assert_eq!(
        localca::LocalCa::at(&ca).status(),
        localca::CaStatus::Complete
    );
    let aside: Vec<_> = fs::read_dir(&ca)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".partial-"))
        .collect();
    assert!(!aside.is_empty(), "partial CA kept aside");
}

/// Durations for the report: `cargo test -p ferrovirt-tpm --test swtpm -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a check"]
fn measure_durations() {
    fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
        v.sort();
        v[v.len() / 2]
    }
    let mut manufactures = Vec::new();
    let mut vols = Vec::new();
    for _ in 0..7 {
        let vol = Volume::new();
        manufactures.push(manufacture(&vol.request()).unwrap().duration);
        vols.push(vol);
    }
    let mut checks = Vec::new();
    let mut cert_reads = Vec::new();
    let mut opts = CheckOptions::default();
    opts.read_ek_certificates = true;
    for _ in 0..21 {
        checks.push(check_state(&vols[0].state_dir()).unwrap().duration);
        cert_reads.push(
            check_state_with(&vols[0].state_dir(), &opts)
                .unwrap()
                .duration,
        );
    }
    eprintln!(
        "manufacture median {:?} (min {:?}, max {:?}); check median {:?} (max {:?}); check+EK read median {:?}",
        median(manufactures.clone()),
        manufactures.iter().min().unwrap(),
        manufactures.iter().max().unwrap(),
        median(checks.clone()),
        checks.iter().max().unwrap(),
        median(cert_reads)
    );
}

fn pem(der: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let body: Vec<String> = b64
        .as_bytes()
        .chunks(64)
        .map(|l| String::from_utf8(l.to_vec()).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        body.join("\n")
    )
}

/// Verifies `ek_der` against the CA in `ca_dir` with gnutls' certtool (a swtpm-tools dependency).
fn verify_with_certtool(ek_der: &[u8], ca_dir: &Path, scratch: &Path) -> bool {
    let chain = scratch.join("chain.pem");
    let issuer = fs::read_to_string(ca_dir.join(localca::ISSUER_CERT)).unwrap();
    fs::write(&chain, pem(ek_der) + &issuer).unwrap();
    let out = ferrovirt_testkit::host_tool("certtool")
        .arg("--verify")
        .arg("--load-ca-certificate")
        .arg(ca_dir.join(localca::ROOT_CA_CERT))
        .arg("--infile")
        .arg(&chain)
        .output()
        .unwrap();
    out.status.success()
}

#[test]
fn the_local_ca_moves_with_the_volume_and_keeps_signing() {
    let vol = Volume::new();
    let first = manufacture(&vol.request()).unwrap();
    let first_ek = first.ek_certificates[0].der.clone();
    assert!(verify_with_certtool(
        &first_ek,
        &vol.localca_dir(),
        &vol.root
    ));
    let issuer_before = fs::read(vol.localca_dir().join(localca::ISSUER_CERT)).unwrap();
    let serial_before = fs::read_to_string(vol.localca_dir().join(localca::CERT_SERIAL)).unwrap();

    // Move the volume; reset the TPM (state gone) and manufacture again from the new place.
    let moved_root = vol.root.join("moved");
    fs::rename(vol.root.join("vol"), &moved_root).unwrap();
    let moved_ca = moved_root.join("swtpm-localca");
    let moved_state = moved_root.join("swtpm/u/tpm2");
    fs::create_dir_all(&moved_state).unwrap();
    let req = ManufactureRequest::new(
        &moved_state,
        &moved_ca,
        VmId::new("testvm", "u").unwrap(),
        vol.root.join("run"),
    );
    let second = manufacture(&req).unwrap();
    assert_eq!(second.outcome, ManufactureOutcome::Manufactured);
    assert!(!second.ca_created, "the CA in the volume was reused");
    assert_eq!(
        fs::read(moved_ca.join(localca::ISSUER_CERT)).unwrap(),
        issuer_before
    );
    let serial_after = fs::read_to_string(moved_ca.join(localca::CERT_SERIAL)).unwrap();
    assert_ne!(serial_after, serial_before, "serial counter advanced");
    assert!(verify_with_certtool(
        &second.ek_certificates[0].der,
        &moved_ca,
        &vol.root
    ));
    assert!(verify_with_certtool(&first_ek, &moved_ca, &vol.root));
    let conf = fs::read_to_string(moved_ca.join(localca::LOCALCA_CONF)).unwrap();
    assert!(
        conf.contains(moved_ca.to_str().unwrap()),
        "configs rewritten: {conf}"
    );
    assert!(
        !conf.contains(&format!("{}/vol/", vol.root.display())),
        "{conf}"
    );

    // And a foreign CA does not verify it (the oracle can say no).
    let other = Volume::new();
    manufacture(&other.request()).unwrap();
    assert!(!verify_with_certtool(
        &second.ek_certificates[0].der,
        &other.localca_dir(),
        &vol.root
    ));
}

#[test]
fn check_is_bounded_and_reports_a_broken_swtpm_as_check_failure() {
    let vol = Volume::new();
    manufacture(&vol.request()).unwrap();
    let original = fs::read(vol.state_dir().join(STATE_FILE)).unwrap();

    // A swtpm that never opens its control socket: the check gives up at its timeout.
    let hang = vol.root.join("hanging-swtpm");
    fs::write(&hang, "#!/bin/sh\nexec sleep 30\n").unwrap();
    fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut opts = CheckOptions::default();
    opts.swtpm = hang;
    opts.timeout = std::time::Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = check_state_with(&vol.state_dir(), &opts).unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "bounded"
    );
    assert!(matches!(err, StateError::CheckFailed { .. }), "{err:?}");

    // A swtpm that exits at once, and one that does not exist: not a verdict on the state.
    for bin in ["/bin/false", "/nonexistent/swtpm"] {
        let mut opts = CheckOptions::default();
        opts.swtpm = bin.into();
        let err = check_state_with(&vol.state_dir(), &opts).unwrap_err();
        assert!(
            matches!(err, StateError::CheckFailed { .. }),
            "{bin}: {err:?}"
        );
    }
    assert_eq!(
        fs::read(vol.state_dir().join(STATE_FILE)).unwrap(),
        original
    );
}

#[test]
fn ek_credentials_read_offline_verify_against_the_returned_chain() {
    let vol = Volume::new();
    let report = manufacture(&vol.request()).unwrap();
    let before = fs::read(vol.state_dir().join(STATE_FILE)).unwrap();
    let creds =
        ferrovirt_tpm::read_ek_credentials(&vol.state_dir(), &vol.localca_dir(), None).unwrap();
    // The offline read works on a copy: the state is byte-identical afterwards.
    assert_eq!(fs::read(vol.state_dir().join(STATE_FILE)).unwrap(), before);
    let kinds: Vec<EkKind> = creds.certificates.iter().map(|c| c.kind).collect();
    assert_eq!(kinds, [EkKind::Rsa, EkKind::Ecc]);
    assert_eq!(creds.chain.len(), 2);
    for (cred, made) in creds.certificates.iter().zip(&report.ek_certificates) {
        // What the API returns is what swtpm_setup wrote into NV memory at manufacture.
        assert_eq!(cred.certificate.der, made.der, "{}", made.name);
        assert_eq!(cred.chain_verification, Ok(()));
        assert_eq!(
            cred.certificate.sha256.to_string(),
            Sha256Digest::of(&made.der).to_string()
        );
        assert!(
            cred.certificate
                .public_key_pem
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        // An independent verifier (gnutls) agrees, given only the returned PEMs.
        let scratch = vol.root.join(format!("verify-{:x}", cred.nv_index));
        fs::create_dir_all(&scratch).unwrap();
        let chain = scratch.join("chain.pem");
        let root = scratch.join("root.pem");
        fs::write(&chain, cred.certificate.pem.clone() + &creds.chain[0].pem).unwrap();
        fs::write(&root, &creds.chain[1].pem).unwrap();
        let out = ferrovirt_testkit::host_tool("certtool")
            .arg("--verify")
            .arg("--load-ca-certificate")
            .arg(&root)
            .arg("--infile")
            .arg(&chain)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // Against another volume's CA the same certificates do not verify.
    let other = Volume::new();
    manufacture(&other.request()).unwrap();
    let foreign_chain = ferrovirt_tpm::ek::read_chain(&other.localca_dir()).unwrap();
    let nv: Vec<_> = ferrovirt_tpm::read_ek_certificates(&vol.state_dir(), None).unwrap();
    let crossed = ferrovirt_tpm::ek::describe(&nv, foreign_chain).unwrap();
    for cred in &crossed.certificates {
        let why = cred.chain_verification.clone().unwrap_err();
        assert!(why.contains("not signed by"), "{why}");
    }
}

/// The certificate indices' public areas and the EK certificates of a state (swtpm reads a
/// private copy).
fn certificate_view(state_dir: &Path, key: Option<&StateKey>) -> ferrovirt_tpm::StateInfo {
    let mut opts = CheckOptions::default();
    opts.read_ek_certificates = true;
    opts.state_key = key.cloned();
    check_state_with(state_dir, &opts).unwrap()
}

#[test]
fn a_pooled_tpm_personalized_for_a_vm_is_what_a_manufacture_for_it_gives() {
    use ferrovirt_tpm::tpm2::{NV_WRITELOCKED, NV_WRITTEN};
    use ferrovirt_tpm::{ManufactureOptions, PoolKind, TpmPool};

    // The reference: a TPM manufactured for the VM at its start.
    let reference = Volume::new();
    manufacture(&reference.request()).unwrap();
    let reference_view = certificate_view(&reference.state_dir(), None);

    let root = tempfile::tempdir().unwrap();
    let pool = TpmPool::open(
        root.path().join("pool"),
        root.path().join("tmp"),
        ManufactureOptions::default(),
    )
    .unwrap();
    let filled = pool.fill_one(None).unwrap();
    let sealed_key = StateKey::new([0x5a; 32]);
    pool.fill_one(Some((sealed_key.clone(), b"wrapped-key".to_vec())))
        .unwrap();
    eprintln!("pool fill: {filled:?}");
    assert_eq!(pool.ready(PoolKind::Plain), 1);
    assert_eq!(pool.ready(PoolKind::Sealed), 1);

    // One claim per entry: the second finds none.
    let claimed = pool.claim(PoolKind::Plain).unwrap();
    assert!(pool.claim(PoolKind::Plain).is_none());
    assert_eq!(claimed.key_record(), None);
    let vol = Volume::new();
    let mut req = vol.request();
    req.options.ek_cert_dir = Some(vol.root.join("vol/ek-certs"));
    let report = claimed.personalize_into(&req).unwrap();
    eprintln!("pooled TPM personalized: {:?}", report.duration);
    assert!(report.from_pool);
    assert_eq!(report.outcome, ManufactureOutcome::Manufactured);
    assert!(report.ca_created);
    let names: Vec<_> = report
        .ek_certificates
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["ek-rsa2048.crt", "ek-secp384r1.crt"]);
    // The claimed entry is gone; only the state is in the state dir; the CA is the volume's.
    assert_eq!(
        fs::read_dir(root.path().join("pool/claimed"))
            .unwrap()
            .count(),
        0
    );
    let left: Vec<_> = fs::read_dir(vol.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, vec![STATE_FILE.to_owned()]);
    assert_eq!(mode(&vol.state_dir().join(STATE_FILE)), 0o600);
    for name in localca::CA_MATERIAL {
        assert_eq!(mode(&vol.localca_dir().join(name)), 0o600, "{name}");
    }

    // Same indices with the same attributes (written and write-locked) as the reference.
    let view = certificate_view(&vol.state_dir(), None);
    assert!(view.has_ek && view.has_ek_cert && view.has_platform_cert);
    let attrs = |v: &ferrovirt_tpm::StateInfo| -> Vec<(u32, u32)> {
        v.certificate_indices
            .iter()
            .map(|(i, p)| (*i, p.attributes))
            .collect()
    };
    assert_eq!(attrs(&view), attrs(&reference_view));
    for (index, attributes) in attrs(&view) {
        assert_eq!(
            attributes & (NV_WRITTEN | NV_WRITELOCKED),
            NV_WRITTEN | NV_WRITELOCKED,
            "index {index:#x} written and locked"
        );
    }
    // The certificates in NV are the ones reported, name this VM, and verify against the
    // volume's CA (not the pool's placeholder identity).
    let in_nv: Vec<_> = view.ek_certificates.iter().map(|c| c.der.clone()).collect();
    let reported: Vec<_> = report
        .ek_certificates
        .iter()
        .map(|c| c.der.clone())
        .collect();
    assert_eq!(in_nv, reported);
    let needle = b"testvm:0f6b7c1e-aaaa-4bbb-8ccc-123456789abc";
    fs::create_dir_all(vol.root.join("verify")).unwrap();
    for der in &in_nv {
        assert!(
            der.windows(needle.len()).any(|w| w == needle),
            "subject names the VM"
        );
        assert!(!der.windows(18).any(|w| w == b"ferrovirt-tpm-pool"));
        assert!(verify_with_certtool(
            der,
            &vol.localca_dir(),
            &vol.root.join("verify")
        ));
    }
    let creds =
        ferrovirt_tpm::read_ek_credentials(&vol.state_dir(), &vol.localca_dir(), None).unwrap();
    assert_eq!(creds.certificates.len(), 2);
    for credential in &creds.certificates {
        assert_eq!(credential.chain_verification, Ok(()), "{credential:?}");
    }
    // The same kinds at the same indices, and the same public key as the pooled TPM's EK
    // (the certificate certifies the TPM's own key).
    let reference_creds =
        ferrovirt_tpm::read_ek_credentials(&reference.state_dir(), &reference.localca_dir(), None)
            .unwrap();
    for (ours, theirs) in creds.certificates.iter().zip(&reference_creds.certificates) {
        assert_eq!(ours.kind, theirs.kind);
        assert_eq!(ours.nv_index, theirs.nv_index);
        assert_eq!(ours.certificate.issuer, theirs.certificate.issuer);
    }

    // A sealed entry: its state needs its own key, which the personalization keeps using.
    let sealed = pool.claim(PoolKind::Sealed).unwrap();
    assert_eq!(sealed.key_record().as_deref(), Some(&b"wrapped-key"[..]));
    let vol2 = Volume::new();
    let mut req2 = vol2.request();
    req2.options.state_key = Some(sealed_key.clone());
    let report2 = sealed.personalize_into(&req2).unwrap();
    assert!(report2.from_pool);
    let state = fs::read(vol2.state_dir().join(STATE_FILE)).unwrap();
    assert!(is_encrypted_state(&state));
    let view2 = certificate_view(&vol2.state_dir(), Some(&sealed_key));
    assert_eq!(attrs(&view2), attrs(&reference_view));
    assert!(check_state(&vol2.state_dir()).is_err(), "needs its key");

    // A volume that already has a TPM state is never touched.
    pool.fill_one(None).unwrap();
    let again = pool.claim(PoolKind::Plain).unwrap();
    let before = fs::read(vol.state_dir().join(STATE_FILE)).unwrap();
    let report3 = again.personalize_into(&req).unwrap();
    assert_eq!(report3.outcome, ManufactureOutcome::AlreadyManufactured);
    assert_eq!(fs::read(vol.state_dir().join(STATE_FILE)).unwrap(), before);
}
