use super::*;
use proptest::prelude::*;
use std::os::unix::fs::PermissionsExt;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

#[test]
fn admin_kubeconfig_is_written_0600_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.kubeconfig");
    let config = Kubeconfig::single(
        "https://127.0.0.1:8443",
        CA,
        "ferrovirt-admin",
        AuthInfo::with_token("tok"),
    );
    config.write(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("current-context: ferrovirt-admin@ferrovirt"),
        "{text}"
    );
    assert!(text.contains("certificate-authority-data:"), "{text}");
    let back = Kubeconfig::load(&path).unwrap();
    assert_eq!(back, config);
    let creds = back.resolve(None).unwrap();
    assert_eq!(creds.server, "https://127.0.0.1:8443");
    assert_eq!(creds.ca_pem.as_deref(), Some(CA.as_bytes()));
    assert_eq!(creds.authorization_header().as_deref(), Some("Bearer tok"));
    assert!(creds.client_cert_pem.is_none());
    assert!(!format!("{creds:?}").contains("tok\""));
}

/// A kubeconfig as kubectl writes it, with files next to it.
#[test]
fn reads_kubectl_files_with_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), CA).unwrap();
    std::fs::write(dir.path().join("token"), "from-file\n").unwrap();
    let text = "apiVersion: v1\nkind: Config\npreferences: {}\nclusters:\n- cluster:\n    certificate-authority: ca.crt\n    server: https://vmhost:8443/\n  name: c\ncontexts:\n- context:\n    cluster: c\n    namespace: team-a\n    user: u\n  name: ctx\ncurrent-context: ctx\nusers:\n- name: u\n  user:\n    tokenFile: token\n";
    let path = dir.path().join("config");
    std::fs::write(&path, text).unwrap();
    let creds = Kubeconfig::load(&path).unwrap().resolve(None).unwrap();
    assert_eq!(creds.server, "https://vmhost:8443");
    assert_eq!(creds.ca_pem.as_deref(), Some(CA.as_bytes()));
    assert_eq!(creds.token.as_deref(), Some("from-file"));
    assert_eq!(creds.namespace.as_deref(), Some("team-a"));
}

#[test]
fn loading_rules_follow_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let mut first = Kubeconfig::single("https://a:1", CA, "alice", AuthInfo::with_token("ta"));
    first.current_context = String::new();
    first.write(&a).unwrap();
    let mut second = Kubeconfig::single("https://b:2", CA, "bob", AuthInfo::with_token("tb"));
    // Same cluster name: the first file's wins.
    second.contexts.push(NamedContext {
        name: "alice@ferrovirt".into(),
        context: Context {
            cluster: "ferrovirt".into(),
            user: "bob".into(),
            namespace: None,
        },
    });
    second.write(&b).unwrap();
    let fallback = dir.path().join("admin.kubeconfig");
    Kubeconfig::single(
        "https://fallback:3",
        CA,
        "admin",
        AuthInfo::with_token("tf"),
    )
    .write(&fallback)
    .unwrap();

    let env_list = format!(
        "{}:{}:{}",
        a.display(),
        dir.path().join("missing").display(),
        b.display()
    );
    let rules = LoadingRules {
        kubeconfig_env: Some(env_list),
        fallbacks: vec![fallback.clone()],
        ..LoadingRules::default()
    };
    let (merged, sources) = rules.load().unwrap();
    assert_eq!(sources, vec![a.clone(), b.clone()]);
    // current-context comes from b (a has none); the context alice@ferrovirt from a; cluster from a.
    assert_eq!(merged.current_context, "bob@ferrovirt");
    let alice = merged.resolve(Some("alice@ferrovirt")).unwrap();
    assert_eq!(alice.server, "https://a:1");
    assert_eq!(alice.token.as_deref(), Some("ta"));
    let bob = merged.resolve(None).unwrap();
    assert_eq!(bob.server, "https://a:1");
    assert_eq!(bob.token.as_deref(), Some("tb"));
    assert!(
        merged
            .resolve(Some("nope"))
            .unwrap_err()
            .to_string()
            .contains("context was not found for specified context: nope")
    );

    // Explicit wins over everything, and must exist.
    let explicit = LoadingRules {
        explicit: Some(b.clone()),
        ..rules.clone()
    };
    assert_eq!(explicit.load().unwrap().1, vec![b.clone()]);
    let missing = LoadingRules {
        explicit: Some(dir.path().join("missing")),
        ..rules.clone()
    };
    assert!(matches!(missing.load(), Err(KubeconfigError::Read { .. })));

    // ~/.kube/config when KUBECONFIG is unset; the fallback when nothing is found.
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".kube")).unwrap();
    let home_rules = LoadingRules {
        home: Some(home.clone()),
        fallbacks: vec![fallback.clone()],
        ..LoadingRules::default()
    };
    let (config, sources) = home_rules.load().unwrap();
    assert_eq!(sources, vec![fallback.clone()]);
    assert_eq!(config.resolve(None).unwrap().server, "https://fallback:3");
    std::fs::copy(&a, home.join(".kube").join("config")).unwrap();
    let mut with_current = Kubeconfig::load(&a).unwrap();
    with_current.current_context = "alice@ferrovirt".into();
    with_current
        .write(&home.join(".kube").join("config"))
        .unwrap();
    assert_eq!(
        home_rules.load().unwrap().1,
        vec![home.join(".kube").join("config")]
    );

    // Several fallbacks: the first readable one wins (/etc/ferrovirt before the data dir's).
    let etc = dir.path().join("etc-admin.kubeconfig");
    let fallbacks_rules = LoadingRules {
        home: Some(dir.path().join("nohome")),
        fallbacks: vec![etc.clone(), fallback.clone()],
        ..LoadingRules::default()
    };
    assert_eq!(fallbacks_rules.load().unwrap().1, vec![fallback.clone()]);
    Kubeconfig::single("https://etc:4", CA, "admin", AuthInfo::with_token("te"))
        .write(&etc)
        .unwrap();
    let (config, sources) = fallbacks_rules.load().unwrap();
    assert_eq!(sources, vec![etc.clone()]);
    assert_eq!(config.resolve(None).unwrap().server, "https://etc:4");

    let nothing = LoadingRules {
        home: Some(dir.path().join("nohome")),
        fallbacks: vec![dir.path().join("nofallback")],
        ..LoadingRules::default()
    };
    let err = nothing.load().unwrap_err().to_string();
    assert!(
        err.contains("no kubeconfig found")
            && err.contains("nofallback")
            && err.contains("--kubeconfig"),
        "{err}"
    );
}

#[test]
fn resolution_errors_say_what_is_missing() {
    let mut config = Kubeconfig::single("https://x:1", CA, "u", AuthInfo::with_token("t"));
    config.current_context = String::new();
    assert!(
        config
            .resolve(None)
            .unwrap_err()
            .to_string()
            .contains("no current-context")
    );
    let mut half = Kubeconfig::single(
        "https://x:1",
        CA,
        "u",
        AuthInfo {
            client_certificate_data: Some(b64(b"x")),
            ..AuthInfo::default()
        },
    );
    assert!(
        half.resolve(None)
            .unwrap_err()
            .to_string()
            .contains("without its key")
    );
    half.users[0].user.client_key_data = Some("%%%".into());
    assert!(
        half.resolve(None)
            .unwrap_err()
            .to_string()
            .contains("client-key-data")
    );
    let mut insecure = Kubeconfig::single("https://x:1", CA, "u", AuthInfo::default());
    insecure.clusters[0].cluster.insecure_skip_tls_verify = Some(true);
    assert!(
        insecure
            .resolve(None)
            .unwrap()
            .rustls_client_config()
            .is_err()
    );
    let mut no_ca = Kubeconfig::single("https://x:1", CA, "u", AuthInfo::default());
    no_ca.clusters[0].cluster.certificate_authority_data = None;
    assert!(
        no_ca
            .resolve(None)
            .unwrap()
            .rustls_client_config()
            .unwrap_err()
            .to_string()
            .contains("certificate-authority-data")
    );
    assert!(matches!(
        Kubeconfig::parse("clusters: [", "x"),
        Err(KubeconfigError::Parse { .. })
    ));
    assert_eq!(Kubeconfig::parse("", "x").unwrap().kind, "Config");
    assert!(
        Kubeconfig::parse("clusters: null\nusers: null\ncontexts: null\n", "x")
            .unwrap()
            .clusters
            .is_empty()
    );
}

#[test]
fn client_certificate_kubeconfig_gives_a_working_rustls_config() {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::Pki::load_or_create(
        dir.path(),
        &crate::pki::ServingNames::new(Vec::new(), Vec::<String>::new()).unwrap(),
    )
    .unwrap();
    let cert = pki
        .issue_client_certificate("carol", &["ops".into()], crate::pki::CLIENT_VALIDITY)
        .unwrap();
    let config = Kubeconfig::single(
        "https://127.0.0.1:8443",
        pki.ca_pem(),
        "carol",
        AuthInfo::with_client_certificate(&cert.cert_pem, &cert.key_pem),
    );
    let back = Kubeconfig::parse(&config.to_yaml().unwrap(), "printed").unwrap();
    let creds = back.resolve(None).unwrap();
    assert!(creds.client_identity().unwrap().is_some());
    assert!(
        creds
            .rustls_client_config()
            .unwrap()
            .client_auth_cert_resolver
            .has_certs()
    );
}

fn text() -> impl Strategy<Value = String> {
    // Printable text including YAML's special characters.
    "[ -~]{0,24}"
}

fn arb_config() -> impl Strategy<Value = Kubeconfig> {
    (
        proptest::collection::vec(
            (
                text(),
                text(),
                proptest::option::of(text()),
                proptest::option::of(any::<bool>()),
            ),
            0..3,
        ),
        proptest::collection::vec(
            (
                text(),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
            ),
            0..3,
        ),
        proptest::collection::vec((text(), text(), text(), proptest::option::of(text())), 0..3),
        text(),
    )
        .prop_map(|(clusters, users, contexts, current)| Kubeconfig {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: clusters
                .into_iter()
                .map(|(name, server, ca, insecure)| NamedCluster {
                    name,
                    cluster: Cluster {
                        server,
                        certificate_authority_data: ca,
                        insecure_skip_tls_verify: insecure,
                        ..Cluster::default()
                    },
                })
                .collect(),
            users: users
                .into_iter()
                .map(|(name, token, cert, key)| NamedUser {
                    name,
                    user: AuthInfo {
                        token,
                        client_certificate_data: cert,
                        client_key_data: key,
                        ..AuthInfo::default()
                    },
                })
                .collect(),
            contexts: contexts
                .into_iter()
                .map(|(name, cluster, user, namespace)| NamedContext {
                    name,
                    context: Context {
                        cluster,
                        user,
                        namespace,
                    },
                })
                .collect(),
            current_context: current,
        })
}

proptest! {
    /// Whatever we write, we read back identically.
    #[test]
    fn yaml_round_trip(config in arb_config()) {
        let yaml = config.to_yaml().unwrap();
        let back = Kubeconfig::parse(&yaml, "generated").unwrap();
        prop_assert_eq!(back, config);
    }

    /// Arbitrary input never panics, and resolution of what parses never panics either.
    #[test]
    fn arbitrary_text_never_panics(input in "(?s).{0,300}") {
        if let Ok(config) = Kubeconfig::parse(&input, "fuzz") {
            let _ = config.resolve(None);
        }
    }
}
