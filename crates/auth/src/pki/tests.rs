use super::*;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use std::os::unix::fs::PermissionsExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn names(extra: &[&str]) -> ServingNames {
    ServingNames::new(
        ["10.1.2.3".parse().unwrap(), "0.0.0.0".parse().unwrap()],
        extra,
    )
    .unwrap()
}

#[test]
fn first_start_creates_the_pki_with_private_modes() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let pki = Pki::load_or_create(&pki_dir, &names(&["vm-host.example"])).unwrap();
    assert_eq!(
        pki.changes(),
        PkiChanges {
            ca_created: true,
            server_certificate_issued: true
        }
    );
    let paths = pki.paths();
    assert_eq!(mode(&pki_dir), 0o700);
    assert_eq!(mode(&paths.ca_key()), 0o600);
    assert_eq!(mode(&paths.server_key()), 0o600);
    assert!(paths.ca_cert().exists() && paths.server_cert().exists());

    let sans = serving_names_of(pki.server_der()).unwrap();
    let expected: BTreeSet<IpAddr> = ["127.0.0.1", "::1", "10.1.2.3"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(sans.ips, expected);
    assert_eq!(
        sans.dns,
        ["localhost", "vm-host.example"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );

    // Second start: nothing changes.
    let again = Pki::load_or_create(&pki_dir, &names(&["vm-host.example"])).unwrap();
    assert_eq!(
        again.changes(),
        PkiChanges {
            ca_created: false,
            server_certificate_issued: false
        }
    );
    assert_eq!(again.server_der(), pki.server_der());
    assert_eq!(again.ca_pem(), pki.ca_pem());

    // Another SAN set: a new serving certificate from the same CA.
    let changed = Pki::load_or_create(&pki_dir, &names(&["other.example"])).unwrap();
    assert_eq!(
        changed.changes(),
        PkiChanges {
            ca_created: false,
            server_certificate_issued: true
        }
    );
    assert_eq!(changed.ca_pem(), pki.ca_pem());
    assert!(
        serving_names_of(changed.server_der())
            .unwrap()
            .dns
            .contains("other.example")
    );
}

#[test]
fn damaged_pki_files_are_reported_or_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &names(&[])).unwrap();
    let paths = pki.paths().clone();

    // A server key that does not match the certificate (a crash between the two writes) is
    // replaced.
    std::fs::write(
        paths.server_key(),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let repaired = Pki::load_or_create(dir.path(), &names(&[])).unwrap();
    assert!(repaired.changes().server_certificate_issued);

    // A CA certificate without its key is an error that says what to do.
    std::fs::remove_file(paths.ca_key()).unwrap();
    let err = Pki::load_or_create(dir.path(), &names(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ca.key is missing") && err.contains("restore"),
        "{err}"
    );

    // A CA key without its certificate (crash at first start) gets its certificate.
    let dir2 = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    std::fs::write(dir2.path().join("ca.key"), key.serialize_pem()).unwrap();
    let made = Pki::load_or_create(dir2.path(), &names(&[])).unwrap();
    assert!(made.changes().ca_created);

    assert!(ServingNames::new(Vec::<IpAddr>::new(), ["bad name!"]).is_err());
    assert!(ServingNames::new(Vec::<IpAddr>::new(), ["*.apps.example"]).is_ok());
}

#[test]
fn client_certificates_carry_user_and_every_group() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &names(&[])).unwrap();
    let groups = vec![
        "dev".to_owned(),
        "ops".to_owned(),
        "system:masters".to_owned(),
    ];
    let issued = pki
        .issue_client_certificate("alice", &groups, CLIENT_VALIDITY)
        .unwrap();
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
    let identity = CertIdentity::from_der(&der).unwrap().unwrap();
    assert_eq!(
        identity,
        CertIdentity {
            user: "alice".to_owned(),
            groups: groups.clone()
        }
    );
    let user = identity.user_info();
    assert_eq!(user.name, "alice");
    assert!(user.in_group("system:authenticated") && user.in_group("ops"));

    // Signed by the CA, valid now, a client-auth end entity.
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let (_, ca) = X509Certificate::from_der(pki.ca_der()).unwrap();
    cert.verify_signature(Some(ca.public_key())).unwrap();
    assert!(cert.validity().is_valid());
    assert_eq!(cert.issuer(), ca.subject());
    assert!(
        pki.issue_client_certificate(" ", &[], CLIENT_VALIDITY)
            .is_err()
    );
    // Far-future validity switches to GeneralizedTime and still parses.
    let long = pki
        .issue_client_certificate("bob", &[], Duration::from_secs(40 * 365 * 24 * 3600))
        .unwrap();
    let der = CertificateDer::from_pem_slice(long.cert_pem.as_bytes()).unwrap();
    assert_eq!(
        CertIdentity::from_der(&der).unwrap().unwrap().groups,
        Vec::<String>::new()
    );
}

/// Connects to `addr` with the CA as the only root and optionally a client certificate; sends a
/// line, returns the server's answer.
async fn client_round_trip(
    addr: std::net::SocketAddr,
    ca: &CertificateDer<'static>,
    client: Option<&ClientCertificate>,
    server_name: &str,
) -> Result<String, String> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(crate::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"hello\n").await.map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

#[tokio::test]
async fn tls_handshake_over_loopback_with_and_without_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &names(&[])).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let identity = CertIdentity::from_peer(tls.get_ref().1.peer_certificates());
            let mut line = [0u8; 6];
            if tls.read_exact(&mut line).await.is_err() {
                continue;
            }
            let answer = match identity {
                Some(id) => format!("user={} groups={}", id.user, id.groups.join(",")),
                None => "anonymous".to_owned(),
            };
            let _ = tls.write_all(answer.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });

    // Without a client certificate: the handshake succeeds, no identity.
    let answer = client_round_trip(addr, pki.ca_der(), None, "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(answer, "anonymous");
    // By name and over the IPv4 SAN.
    assert_eq!(
        client_round_trip(addr, pki.ca_der(), None, "localhost")
            .await
            .unwrap(),
        "anonymous"
    );

    // With a certificate from the CA: the verified identity.
    let cert = pki
        .issue_client_certificate(
            "alice",
            &["dev".to_owned(), "ops".to_owned()],
            CLIENT_VALIDITY,
        )
        .unwrap();
    let answer = client_round_trip(addr, pki.ca_der(), Some(&cert), "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(answer, "user=alice groups=dev,ops");

    // A certificate from another CA is refused by the server.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Pki::load_or_create(other_dir.path(), &names(&[])).unwrap();
    let foreign = other
        .issue_client_certificate("mallory", &["system:masters".to_owned()], CLIENT_VALIDITY)
        .unwrap();
    let refused = client_round_trip(addr, pki.ca_der(), Some(&foreign), "127.0.0.1").await;
    assert!(
        refused.is_err() || refused.as_deref() == Ok(""),
        "{refused:?}"
    );

    // A client that trusts another CA refuses our server; a name not in the SANs is refused.
    assert!(
        client_round_trip(addr, other.ca_der(), None, "127.0.0.1")
            .await
            .is_err()
    );
    assert!(
        client_round_trip(addr, pki.ca_der(), None, "not-a-san.example")
            .await
            .is_err()
    );
    server.abort();
}

#[test]
fn the_certificate_authority_loads_without_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    // Nothing there: an error that says how to fix it, and still nothing there.
    let err = CertificateAuthority::load(&pki_dir).unwrap_err();
    assert!(matches!(err, PkiError::NoCa { .. }), "{err}");
    assert!(err.to_string().contains("--data-dir"), "{err}");
    assert!(!pki_dir.exists());

    let pki = Pki::load_or_create(&pki_dir, &names(&[])).unwrap();
    let ca = CertificateAuthority::load(&pki_dir).unwrap();
    assert_eq!(ca.ca_pem(), pki.ca_pem());
    let issued = ca
        .issue_client_certificate("carol", &["dev".to_owned()], CLIENT_VALIDITY)
        .unwrap();
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let (_, ca_cert) = X509Certificate::from_der(pki.ca_der()).unwrap();
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();

    // Half a CA is refused, not repaired.
    std::fs::remove_file(pki_dir.join("ca.key")).unwrap();
    assert!(matches!(
        CertificateAuthority::load(&pki_dir).unwrap_err(),
        PkiError::CaHalfPresent { .. }
    ));
}
