use super::*;
use ferrovirt_auth::kubeconfig::{AuthInfo, Kubeconfig};
use ferrovirt_auth::pki::{Pki, ServingNames};

use crate::client::Client;

fn ca_pem(dir: &Path) -> String {
    let names = ServingNames::new(Vec::<std::net::IpAddr>::new(), Vec::<String>::new()).unwrap();
    Pki::load_or_create(&dir.join("pki"), &names)
        .unwrap()
        .ca_pem()
        .to_owned()
}

/// A kubeconfig file at `path` for `server` with a bearer token.
fn write_kubeconfig(path: &Path, ca: &str, server: &str, token: &str) {
    Kubeconfig::single(server, ca, "someone", AuthInfo::with_token(token))
        .write(path)
        .unwrap();
}

fn args() -> ClientArgs {
    ClientArgs::default()
}

/// Rules with nothing from the environment: no $KUBECONFIG, a $HOME without ~/.kube/config.
fn rules(home: &Path) -> LoadingRules {
    LoadingRules {
        explicit: None,
        kubeconfig_env: None,
        home: Some(home.to_path_buf()),
        fallbacks: Vec::new(),
    }
}

#[test]
fn an_explicit_kubeconfig_gives_server_token_and_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_pem(dir.path());
    let path = dir.path().join("alice.kubeconfig");
    write_kubeconfig(&path, &ca, "https://127.0.0.1:8443/", "t-alice");
    let mut rules = rules(dir.path());
    rules.explicit = Some(path.clone());
    // The fallback is not looked at when a kubeconfig was found.
    let other = dir.path().join("admin.kubeconfig");
    write_kubeconfig(&other, &ca, "https://127.0.0.1:9999", "t-admin");
    rules.fallbacks = vec![other];

    let connection = Connection::resolve(&args(), &rules).unwrap();
    assert_eq!(connection.server, "https://127.0.0.1:8443");
    assert_eq!(connection.namespace, "default");
    assert_eq!(
        connection.authorization_header().as_deref(),
        Some("Bearer t-alice")
    );
    assert!(connection.tls_credentials().unwrap().is_some());
    let client = Client::new(&connection).unwrap();
    assert_eq!(client.base(), "https://127.0.0.1:8443");

    // -n wins over the context's namespace, which wins over `default`.
    let mut config = Kubeconfig::load(&path).unwrap();
    config.contexts[0].context.namespace = Some("team-a".to_owned());
    config.write(&path).unwrap();
    assert_eq!(
        Connection::resolve(&args(), &rules).unwrap().namespace,
        "team-a"
    );
    let with_namespace = ClientArgs {
        namespace: Some("team-b".to_owned()),
        ..args()
    };
    assert_eq!(
        Connection::resolve(&with_namespace, &rules)
            .unwrap()
            .namespace,
        "team-b"
    );

    // A missing explicit file is an error naming it, even with --server.
    rules.explicit = Some(dir.path().join("missing.kubeconfig"));
    let with_server = ClientArgs {
        server: Some("http://127.0.0.1:8080".to_owned()),
        ..args()
    };
    let err = Connection::resolve(&with_server, &rules).unwrap_err();
    assert!(err.to_string().contains("missing.kubeconfig"), "{err}");
}

#[test]
fn kubeconfig_env_files_are_merged_first_wins() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_pem(dir.path());
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    write_kubeconfig(&first, &ca, "https://first.example:8443", "t-first");
    let mut other = Kubeconfig::single(
        "https://second.example:8443",
        &ca,
        "bob",
        AuthInfo::with_token("t-bob"),
    );
    other.clusters[0].name = "second".to_owned();
    other.contexts[0].context.cluster = "second".to_owned();
    other.write(&second).unwrap();
    let mut rules = rules(dir.path());
    rules.kubeconfig_env = Some(format!(
        "{}:{}:{}",
        dir.path().join("absent").display(),
        first.display(),
        second.display()
    ));
    let connection = Connection::resolve(&args(), &rules).unwrap();
    assert_eq!(connection.server, "https://first.example:8443");
    // --context picks the second file's context.
    let bob = ClientArgs {
        context: Some("bob@ferrovirt".to_owned()),
        ..args()
    };
    let connection = Connection::resolve(&bob, &rules).unwrap();
    assert_eq!(connection.server, "https://second.example:8443");
    assert_eq!(
        connection.authorization_header().as_deref(),
        Some("Bearer t-bob")
    );
    let unknown = ClientArgs {
        context: Some("nobody".to_owned()),
        ..args()
    };
    let err = Connection::resolve(&unknown, &rules).unwrap_err();
    assert!(
        err.to_string()
            .contains("context was not found for specified context: nobody"),
        "{err}"
    );
}

#[test]
fn the_admin_kubeconfig_is_the_fallback_and_server_overrides_only_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_pem(dir.path());
    let admin = admin_kubeconfig(dir.path());
    write_kubeconfig(&admin, &ca, "https://127.0.0.1:8443", "t-admin");
    let mut rules = rules(dir.path());
    rules.fallbacks = vec![admin];
    let connection = Connection::resolve(&args(), &rules).unwrap();
    assert_eq!(connection.server, "https://127.0.0.1:8443");

    let with_server = ClientArgs {
        server: Some("https://vm-host.example:9443/".to_owned()),
        ..args()
    };
    let connection = Connection::resolve(&with_server, &rules).unwrap();
    assert_eq!(connection.server, "https://vm-host.example:9443");
    assert_eq!(
        connection.authorization_header().as_deref(),
        Some("Bearer t-admin")
    );
    assert_eq!(
        connection
            .credentials
            .as_ref()
            .and_then(|c| c.ca_pem.clone()),
        Some(ca.into_bytes())
    );
}

#[test]
fn without_any_kubeconfig_only_an_explicit_server_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = rules(dir.path());
    rules.fallbacks = vec![dir.path().join("data").join(ADMIN_KUBECONFIG)];

    let err = Connection::resolve(&args(), &rules)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("no kubeconfig found (looked at "), "{err}");
    assert!(err.contains(".kube/config"), "{err}");
    assert!(err.contains("data/admin.kubeconfig"), "{err}");
    assert!(
        err.contains("--kubeconfig FILE")
            && err.contains("KUBECONFIG")
            && err.contains("ferrovirt serve"),
        "{err}"
    );

    let plain = ClientArgs {
        server: Some("http://127.0.0.1:8080".to_owned()),
        ..args()
    };
    let connection = Connection::resolve(&plain, &rules).unwrap();
    assert_eq!(connection.server, "http://127.0.0.1:8080");
    assert!(connection.credentials.is_none());
    assert!(connection.authorization_header().is_none());
    assert!(Client::new(&connection).is_ok());

    // https:// without a kubeconfig has no CA to trust: refused with the fix.
    let secure = ClientArgs {
        server: Some("https://127.0.0.1:8443".to_owned()),
        ..args()
    };
    let connection = Connection::resolve(&secure, &rules).unwrap();
    let err = Client::new(&connection).unwrap_err().to_string();
    assert!(
        err.contains("no kubeconfig gives its certificate authority"),
        "{err}"
    );

    let not_a_url = ClientArgs {
        server: Some("127.0.0.1:8080".to_owned()),
        ..args()
    };
    let err = Connection::resolve(&not_a_url, &rules)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an http:// or https:// URL"), "{err}");
}

#[test]
fn clusters_without_a_ca_or_skipping_verification_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_pem(dir.path());
    let path = dir.path().join("k");
    let mut config = Kubeconfig::single(
        "https://127.0.0.1:8443",
        &ca,
        "u",
        AuthInfo::with_token("t"),
    );
    config.clusters[0].cluster.certificate_authority_data = None;
    config.write(&path).unwrap();
    let mut rules = rules(dir.path());
    rules.explicit = Some(path.clone());
    let connection = Connection::resolve(&args(), &rules).unwrap();
    let err = Client::new(&connection).unwrap_err().to_string();
    assert!(err.contains("certificate-authority-data"), "{err}");

    config.clusters[0].cluster.certificate_authority_data =
        Kubeconfig::single("x", &ca, "u", AuthInfo::default()).clusters[0]
            .cluster
            .certificate_authority_data
            .clone();
    config.clusters[0].cluster.insecure_skip_tls_verify = Some(true);
    config.write(&path).unwrap();
    let connection = Connection::resolve(&args(), &rules).unwrap();
    let err = Client::new(&connection).unwrap_err().to_string();
    assert!(err.contains("insecure-skip-tls-verify"), "{err}");
}
