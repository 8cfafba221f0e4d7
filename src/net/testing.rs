//! Test support: network namespaces of a test's own.

use std::process::Command;

/// A network namespace of the test's own, with loopback up, deleted at the end.
pub(crate) struct Netns(pub(crate) String);

impl Netns {
    /// Creates `nuage-test-TAG-PID`.
    pub(crate) fn new(tag: &str) -> Self {
        let name = format!("nuage-test-{tag}-{}", std::process::id());
        let out = Command::new("ip").args(["netns", "add", &name]).output().unwrap();
        assert!(out.status.success(), "ip netns add (needs root): {}", String::from_utf8_lossy(&out.stderr));
        let ns = Self(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip ARGS` inside the namespace, failing the test with its message.
    pub(crate) fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip").args(["-n", &self.0]).args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}
