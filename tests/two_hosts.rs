//! The test network itself: two `ferrovirt serve` hosts in their own network namespaces reach
//! each other (the first host's server answers a request made from inside the second host) and
//! the test process reaches both with the usual helpers; nothing of theirs listens on this
//! machine's own addresses.

#[path = "support/server.rs"]
mod support;

use support::Server;
use support::netns::TestNetwork;

#[test]
fn two_servers_in_their_own_namespaces_reach_each_other() {
    let network = TestNetwork::create(2);
    let a = Server::start_in(&network.hosts[0], false, &[]);
    let b = Server::start_in(&network.hosts[1], false, &[]);

    // The test process reaches both (TLS verified for each host's address, kubectl too).
    for server in [&a, &b] {
        let (code, _) = server.request("GET", "/version", None, b"");
        assert_eq!(code, 200);
        let out = server.kubectl_ok(&["get", "namespaces", "-o", "name"]);
        assert!(out.contains("namespace/default"), "{out}");
    }

    // Host b reaches host a's server from inside its namespace, with a's admin kubeconfig.
    let out = network.hosts[1]
        .command("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(a.kubeconfig())
        .args(["get", "--raw", "/version"])
        .env("HOME", a.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl from host b to host a: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // a's port is not open on the machine's own loopback.
    assert!(std::net::TcpStream::connect(("127.0.0.1", a.port)).is_err());
}
