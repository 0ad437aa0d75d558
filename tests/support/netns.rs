//! Several "hosts" on this machine for tests that need more than one server (export to another
//! host, migration): each host is a network namespace of its own, and all of them, plus the test
//! process's namespace, sit on one private /24 joined by a bridge that lives in a third, otherwise
//! empty namespace. So the hosts reach each other and the test reaches each of them, while no
//! traffic leaves this machine and nothing listens in the test's (the machine's) namespace.
//!
//! ```text
//!  test process (root ns) 10.X.Y.1 --veth--+
//!  host a (netns)         10.X.Y.2 --veth--+-- br0 (switch netns)
//!  host b (netns)         10.X.Y.3 --veth--+
//! ```
//!
//! Everything is removed on drop (deleting a namespace deletes its veth ends, and with them the
//! peers). Needs root, as the rest of the end-to-end tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// One test host: a network namespace with one address on the test network.
#[derive(Clone, Debug)]
pub struct NetHost {
    /// The namespace's name (`ip netns exec NAME ...`).
    pub name: String,
    /// Its address, reachable from the test process and from the other hosts.
    pub ip: IpAddr,
}

impl NetHost {
    /// A command that runs inside this host's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// A TCP port free on this host's address (asked inside its namespace).
    pub fn free_port(&self) -> u16 {
        let out = self
            .command("python3")
            .args([
                "-c",
                &format!(
                    "import socket; s=socket.socket(); s.bind(('{}', 0)); print(s.getsockname()[1])",
                    self.ip
                ),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "free port in {}: {out:?}", self.name);
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

/// A private network of test hosts; removed on drop.
pub struct TestNetwork {
    pub hosts: Vec<NetHost>,
    /// The test process's address on that network.
    pub gateway: IpAddr,
    switch: String,
    namespaces: Vec<String>,
}

impl TestNetwork {
    /// `count` hosts (at most 200) on a fresh /24.
    pub fn create(count: usize) -> Self {
        assert!((1..=200).contains(&count));
        let serial = NETWORKS.fetch_add(1, Ordering::SeqCst);
        // Unique among concurrent test processes: the pid and a per-process serial number choose
        // the /24 (10.64.0.0 - 10.191.255.0) and the names.
        let id = (std::process::id().wrapping_mul(4).wrapping_add(serial)) % 32768;
        let (x, y) = (64 + (id >> 8) as u8, (id & 0xff) as u8);
        let prefix = format!("fv{id}");
        let switch = format!("{prefix}s");
        let mut network = TestNetwork {
            hosts: Vec::new(),
            gateway: IpAddr::V4(Ipv4Addr::new(10, x, y, 1)),
            switch: switch.clone(),
            namespaces: Vec::new(),
        };
        // A leftover of a killed run with the same id would make `add` fail: remove it first.
        for ns in std::iter::once(switch.clone()).chain((0..count).map(|i| format!("{prefix}h{i}")))
        {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{prefix}t")])
            .output();

        ip(&["netns", "add", &switch]);
        network.namespaces.push(switch.clone());
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "dev", "br0", "up"]);

        // The test process's leg.
        let root_end = format!("{prefix}t");
        ip(&[
            "link", "add", &root_end, "type", "veth", "peer", "name", "to-test", "netns", &switch,
        ]);
        ip(&[
            "-n", &switch, "link", "set", "dev", "to-test", "master", "br0", "up",
        ]);
        ip(&["addr", "add", &format!("10.{x}.{y}.1/24"), "dev", &root_end]);
        ip(&["link", "set", "dev", &root_end, "up"]);

        for i in 0..count {
            let name = format!("{prefix}h{i}");
            ip(&["netns", "add", &name]);
            network.namespaces.push(name.clone());
            let port = format!("to-host{i}");
            ip(&[
                "-n", &name, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &switch,
            ]);
            ip(&[
                "-n", &switch, "link", "set", "dev", &port, "master", "br0", "up",
            ]);
            let address = Ipv4Addr::new(10, x, y, 2 + i as u8);
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &name, "link", "set", "dev", "eth0", "up"]);
            ip(&["-n", &name, "link", "set", "dev", "lo", "up"]);
            network.hosts.push(NetHost {
                name,
                ip: IpAddr::V4(address),
            });
        }
        network
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
