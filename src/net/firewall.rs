//! Egress NAT and isolation with nftables, through `nft -j` (JSON in, never text parsed):
//! one table, `inet nuage`, replaced as a whole in one atomic batch each time the policy
//! changes, so it never holds a half-applied policy and a restart simply applies it again.
//!
//! - subnet egress is masqueraded behind the host's own address;
//! - instances reach no port of the host itself: from a bridge, the host takes only
//!   answers to its own connections, ICMP, DHCP and the metadata service (its `input`
//!   chain drops the rest);
//! - traffic between two subnets is dropped;
//! - an associated Elastic IP's traffic is translated both ways (DNAT in, SNAT out); the
//!   host holds the address on its uplink (see [`super::link::Links::add_address`]), so
//!   it answers ARP for it.

use std::io::Write;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::addr::{Ipv4Cidr, METADATA_ADDRESS, METADATA_PORT};
use super::NetError;

/// The nftables table nuage owns.
pub const TABLE: &str = "nuage";

/// IP protocol numbers, given to nft as numbers: a name needs `/etc/protocols`, which a
/// minimal host (a container, an initramfs) may lack.
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// What the firewall enforces.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Each subnet and its bridge.
    pub subnets: Vec<(Ipv4Cidr, String)>,
    /// Associated Elastic IPs: (public, private).
    pub elastic_ips: Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    /// Instances with ingress rules (security groups): routed traffic to them is dropped
    /// unless a rule allows it or it answers their own connections.
    pub ingress: Vec<(std::net::Ipv4Addr, Vec<Allow>)>,
}

/// The protocols an ingress rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
    /// Every protocol (EC2's `-1`).
    All,
}

/// One ingress rule (a security group's permission): `protocol`, to the ports `ports`
/// (TCP and UDP; `None`: every port), from `source`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Allow {
    /// The protocol.
    pub protocol: Protocol,
    /// The first and last destination port allowed (TCP, UDP).
    pub ports: Option<(u16, u16)>,
    /// Where the traffic may come from.
    pub source: Ipv4Cidr,
}

impl Allow {
    fn expr(&self, instance: std::net::Ipv4Addr) -> Vec<Value> {
        let mut expr = vec![address_is("daddr", instance)];
        if self.source.prefix() > 0 {
            expr.push(json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                "right": {"prefix": {"addr": self.source.network().to_string(), "len": self.source.prefix()}}}}));
        }
        let number = match self.protocol {
            Protocol::Tcp => Some(IPPROTO_TCP),
            Protocol::Udp => Some(IPPROTO_UDP),
            Protocol::Icmp => Some(IPPROTO_ICMP),
            Protocol::All => None,
        };
        if let Some(number) = number {
            expr.push(json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": number}}));
        }
        if let (Some((first, last)), Protocol::Tcp | Protocol::Udp) = (self.ports, self.protocol) {
            let right = if first == last { json!(first) } else { json!({"range": [first, last]}) };
            expr.push(json!({"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": right}}));
        }
        expr.push(json!({"accept": null}));
        expr
    }
}

fn address_is(field: &str, ip: std::net::Ipv4Addr) -> Value {
    json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": field}}, "right": ip.to_string()}})
}

fn table() -> Value {
    json!({"family": "inet", "name": TABLE})
}

fn chain(name: &str, kind: &str, hook: &str, priority: i32) -> Value {
    json!({"add": {"chain": {"family": "inet", "table": TABLE, "name": name, "type": kind, "hook": hook,
        "prio": priority, "policy": "accept"}}})
}

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": "inet", "table": TABLE, "chain": chain, "expr": expr}}})
}

fn name_is(key: &str, op: &str, name: &str) -> Value {
    json!({"match": {"op": op, "left": {"meta": {"key": key}}, "right": name}})
}

impl Policy {
    /// The nftables batch that installs this policy, replacing the table.
    pub fn batch(&self) -> Value {
        let mut commands = vec![
            // Add (a no-op when it exists), delete, add: the table is rebuilt in one batch.
            json!({"add": {"table": table()}}),
            json!({"delete": {"table": table()}}),
            json!({"add": {"table": table()}}),
            chain("prerouting", "nat", "prerouting", -100),
            chain("postrouting", "nat", "postrouting", 100),
            chain("input", "filter", "input", 0),
            chain("forward", "filter", "forward", 0),
        ];
        // Elastic IPs first: their SNAT must win over the subnet's masquerade.
        for (public, private) in &self.elastic_ips {
            let dnat = json!({"dnat": {"family": "ip", "addr": private.to_string()}});
            commands.push(rule("prerouting", vec![address_is("daddr", *public), dnat]));
            let snat = json!({"snat": {"family": "ip", "addr": public.to_string()}});
            commands.push(rule("postrouting", vec![address_is("saddr", *private), snat]));
        }
        if !self.ingress.is_empty() {
            let state = json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}});
            commands.push(rule("forward", vec![state, json!({"accept": null})]));
        }
        for (instance, allows) in &self.ingress {
            for allow in allows {
                commands.push(rule("forward", allow.expr(*instance)));
            }
            commands.push(rule("forward", vec![address_is("daddr", *instance), json!({"drop": null})]));
        }
        for (cidr, bridge) in &self.subnets {
            let source = json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                "right": {"prefix": {"addr": cidr.network().to_string(), "len": cidr.prefix()}}}});
            commands.push(rule(
                "postrouting",
                vec![source, name_is("oifname", "!=", bridge), json!({"masquerade": null})],
            ));
            // What instances may send the host itself; everything else from the bridge is
            // dropped (the API, SSH, any service the host runs).
            let from_bridge = || name_is("iifname", "==", bridge);
            let answers = json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}});
            let icmp = json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}},
                "right": {"set": [IPPROTO_ICMP, IPPROTO_ICMPV6]}}});
            let dhcp = json!({"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 67}});
            let metadata = [
                address_is("daddr", METADATA_ADDRESS),
                json!({"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": METADATA_PORT}}),
            ];
            for allowed in [vec![answers], vec![icmp], vec![dhcp], metadata.to_vec()] {
                let mut expr = vec![from_bridge()];
                expr.extend(allowed);
                expr.push(json!({"accept": null}));
                commands.push(rule("input", expr));
            }
            commands.push(rule("input", vec![from_bridge(), json!({"drop": null})]));
            for (_, other) in self.subnets.iter().filter(|(_, b)| b != bridge) {
                commands.push(rule(
                    "forward",
                    vec![
                        name_is("iifname", "==", bridge),
                        name_is("oifname", "==", other),
                        json!({"drop": null}),
                    ],
                ));
            }
        }
        json!({"nftables": commands})
    }
}

/// Applies policies in one network namespace.
#[derive(Debug, Clone, Default)]
pub struct Firewall {
    netns: Option<String>,
}

impl Firewall {
    /// The firewall of namespace `netns` (`None`: the process's own).
    pub fn new(netns: Option<String>) -> Self {
        Self { netns }
    }

    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, program]);
                command
            }
            None => Command::new(program),
        }
    }

    /// Installs `policy`, replacing the previous one atomically.
    pub fn apply(&self, policy: &Policy) -> Result<(), NetError> {
        let batch = policy.batch().to_string();
        let failed = |stderr: String| NetError::Command { command: "nft -j -f -".into(), stderr };
        let mut child = self
            .command("nft")
            .args(["-j", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("{e} (is the nftables package installed?)")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(batch.as_bytes()).map_err(|e| failed(e.to_string()))?;
        }
        let out = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            return Err(failed(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
        }
        Ok(())
    }

    /// Turns on IPv4 forwarding, which routing instance traffic needs.
    pub fn enable_forwarding(&self) -> Result<(), NetError> {
        let out = self
            .command("sysctl")
            .args(["-q", "-w", "net.ipv4.ip_forward=1"])
            .output()
            .map_err(|e| NetError::Command { command: "sysctl".into(), stderr: e.to_string() })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(NetError::Command { command: "sysctl -w net.ipv4.ip_forward=1".into(), stderr });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `args` with `ip`, failing the test with its message.
    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs a shell command inside namespace `ns`; returns whether it succeeded.
    fn in_ns(ns: &str, script: &str) -> bool {
        Command::new("ip").args(["netns", "exec", ns, "bash", "-c", script]).status().unwrap().success()
    }

    /// Three namespaces: a host with subnet bridge nbr-fw (10.0.7.1/24) and uplink
    /// (192.168.50.1/24), a guest (10.0.7.5) on the bridge, and a LAN host (192.168.50.2)
    /// with no route to the subnet.
    struct Topology {
        host: String,
        guest: String,
        lan: String,
    }

    impl Topology {
        fn new(tag: &str) -> Self {
            let id = std::process::id();
            let net = Self {
                host: format!("nuage-{tag}-h-{id}"),
                guest: format!("nuage-{tag}-g-{id}"),
                lan: format!("nuage-{tag}-l-{id}"),
            };
            let (host, guest, lan) = (&net.host, &net.guest, &net.lan);
            for ns in [host, guest, lan] {
                ip(&["netns", "add", ns]);
                ip(&["-n", ns, "link", "set", "lo", "up"]);
            }
            ip(&["-n", host, "link", "add", "nbr-fw", "type", "bridge"]);
            ip(&["-n", host, "addr", "add", "10.0.7.1/24", "dev", "nbr-fw"]);
            ip(&["-n", host, "link", "set", "nbr-fw", "up"]);
            ip(&["-n", host, "link", "add", "vg", "type", "veth", "peer", "name", "eth0", "netns", guest]);
            ip(&["-n", host, "link", "set", "vg", "master", "nbr-fw", "up"]);
            ip(&["-n", guest, "addr", "add", "10.0.7.5/24", "dev", "eth0"]);
            ip(&["-n", guest, "link", "set", "eth0", "up"]);
            ip(&["-n", guest, "route", "add", "default", "via", "10.0.7.1"]);
            ip(&["-n", host, "link", "add", "uplink", "type", "veth", "peer", "name", "lan0", "netns", lan]);
            ip(&["-n", host, "addr", "add", "192.168.50.1/24", "dev", "uplink"]);
            ip(&["-n", host, "link", "set", "uplink", "up"]);
            ip(&["-n", lan, "addr", "add", "192.168.50.2/24", "dev", "lan0"]);
            ip(&["-n", lan, "link", "set", "lan0", "up"]);
            net
        }
    }

    impl Drop for Topology {
        fn drop(&mut self) {
            for ns in [&self.host, &self.guest, &self.lan] {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }

    /// Serves `reply` on TCP `port` inside `ns` for a few seconds.
    fn serve(ns: &str, port: u16, reply: &str) -> std::process::Child {
        let script = format!("echo {reply} | busybox nc -l -p {port}");
        Command::new("ip")
            .args(["netns", "exec", ns, "timeout", "8", "bash", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// What TCP `addr` `port` answers from inside `ns` (empty: nothing).
    fn fetch(ns: &str, addr: &str, port: u16) -> String {
        let port = port.to_string();
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "timeout", "3", "busybox", "nc", addr, &port])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// What TCP `addr` `port` answers from inside `ns` once it answers `expected`, trying
    /// for up to 5 s: a listener just started may not listen yet on a busy host (a refused
    /// try leaves it waiting).
    fn fetch_until(ns: &str, addr: &str, port: u16, expected: &str) -> String {
        let start = std::time::Instant::now();
        loop {
            let got = fetch(ns, addr, port);
            if got == expected || start.elapsed() > std::time::Duration::from_secs(5) {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn stop(mut child: std::process::Child) {
        // SIGTERM reaches `timeout`, which passes it on to the listener.
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
    }

    #[test]
    fn the_batch_is_one_replaceable_table() {
        let policy = Policy {
            subnets: vec![
                ("10.0.7.0/24".parse().unwrap(), "nbr-a".into()),
                ("10.0.8.0/24".parse().unwrap(), "nbr-b".into()),
            ],
            elastic_ips: Vec::new(),
            ingress: Vec::new(),
        };
        let text = policy.batch().to_string();
        assert!(text.starts_with(r#"{"nftables":[{"add":{"table""#));
        assert_eq!(text.matches("masquerade").count(), 2);
        assert_eq!(
            text.matches(r#""chain":"input""#).count(),
            10,
            "four kinds let in (answers, ICMP, DHCP, the metadata service), the rest dropped, per bridge"
        );
        assert_eq!(text.matches(r#""chain":"forward""#).count(), 2, "a to b and b to a");
        // Protocols by number: a name needs /etc/protocols, which the nested harness's
        // initramfs (like many minimal hosts) lacks, and nft then refuses the whole batch.
        let allow =
            Allow { protocol: Protocol::Tcp, ports: Some((22, 22)), source: "10.0.0.0/8".parse().unwrap() };
        let with_ingress = Policy { ingress: vec![("10.0.7.5".parse().unwrap(), vec![allow])], ..policy };
        let text = with_ingress.batch().to_string();
        assert!(!text.contains(r#""l4proto"}},"op":"==","right":""#), "no protocol by name: {text}");
        assert!(text.contains(r#""l4proto"}},"op":"==","right":6}"#), "{text}");
        assert!(text.contains(r#""l4proto"}},"op":"==","right":{"set":[1,58]}}"#), "{text}");
    }

    /// Host, guest and LAN namespaces: the guest reaches the LAN (which has no route back
    /// to the subnet) only through masquerading, and no TCP port of the host (the API's or
    /// any other), while pings and the host's own connections still get their answers.
    #[test]
    fn subnets_are_masqueraded_and_kept_from_the_api() {
        let net = Topology::new("nat");
        let (host, guest, lan) = (net.host.clone(), net.guest.clone(), net.lan.clone());
        let firewall = Firewall::new(Some(host.clone()));
        firewall.enable_forwarding().unwrap();
        let ping_lan = "busybox ping -c 1 -W 2 192.168.50.2 >/dev/null 2>&1";
        assert!(!in_ns(&guest, ping_lan), "without NAT the LAN cannot answer");
        let policy = Policy {
            subnets: vec![("10.0.7.0/24".parse().unwrap(), "nbr-fw".into())],
            elastic_ips: Vec::new(),
            ingress: Vec::new(),
        };
        firewall.apply(&policy).unwrap();
        firewall.apply(&policy).unwrap(); // re-applying replaces, never duplicates
        assert!(in_ns(&guest, ping_lan), "masqueraded egress reaches the LAN");

        // Listeners on the host: neither the API's port nor any other is reachable from
        // the guest, on the bridge's address or the uplink's; the host's own connections to
        // the guest and pings still work.
        let (api, other) = (serve(&host, 8443, "api"), serve(&host, 8444, "other"));
        std::thread::sleep(std::time::Duration::from_millis(300));
        for target in ["10.0.7.1/8443", "10.0.7.1/8444", "192.168.50.1/8444"] {
            let script = format!("timeout 2 bash -c 'echo > /dev/tcp/{target}'");
            assert!(!in_ns(&guest, &script), "{target} is dropped");
        }
        assert!(
            in_ns(&guest, "busybox ping -c 1 -W 2 10.0.7.1 >/dev/null 2>&1"),
            "the gateway answers pings"
        );
        let service = serve(&guest, 9100, "guest-service");
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(
            fetch_until(&host, "10.0.7.5", 9100, "guest-service"),
            "guest-service",
            "the host's own connections are answered"
        );
        stop(service);
        stop(api);
        stop(other);
        let rules = Command::new("ip")
            .args(["netns", "exec", &host, "nft", "-j", "list", "table", "inet", TABLE])
            .output()
            .unwrap();
        let listed: Value = serde_json::from_slice(&rules.stdout).unwrap();
        let count =
            listed["nftables"].as_array().unwrap().iter().filter(|item| item.get("rule").is_some()).count();
        assert_eq!(
            count, 6,
            "one masquerade, four input kinds let in (the metadata service too), one drop: {listed}"
        );

        // An Elastic IP on the uplink reaches the guest's service from the LAN.
        let public: std::net::Ipv4Addr = "192.168.50.10".parse().unwrap();
        let links = crate::net::link::Links::new(Some(host.clone()));
        links.add_address("uplink", public).unwrap();
        links.add_address("uplink", public).unwrap();
        let with_eip = Policy { elastic_ips: vec![(public, "10.0.7.5".parse().unwrap())], ..policy.clone() };
        firewall.apply(&with_eip).unwrap();
        let server = serve(&guest, 9000, "from-guest");
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(
            fetch_until(&lan, "192.168.50.10", 9000, "from-guest"),
            "from-guest",
            "the Elastic IP leads to the guest"
        );
        stop(server);
        firewall.apply(&policy).unwrap();
        links.remove_address("uplink", public).unwrap();
        let server = serve(&guest, 9000, "from-guest");
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(fetch(&lan, "192.168.50.10", 9000), "", "disassociated, it leads nowhere");
        stop(server);
    }

    /// Ingress rules let only the allowed port in from the allowed source, while the
    /// instance's own connections still get their answers.
    #[test]
    fn ingress_rules_admit_only_what_they_allow() {
        let net = Topology::new("sg");
        ip(&["-n", &net.lan, "route", "add", "10.0.7.0/24", "via", "192.168.50.1"]);
        let firewall = Firewall::new(Some(net.host.clone()));
        firewall.enable_forwarding().unwrap();
        let instance = "10.0.7.5".parse().unwrap();
        let allow = Allow {
            protocol: Protocol::Tcp,
            ports: Some((9001, 9001)),
            source: "192.168.50.0/24".parse().unwrap(),
        };
        let range = Allow {
            protocol: Protocol::Tcp,
            ports: Some((9003, 9005)),
            source: "0.0.0.0/0".parse().unwrap(),
        };
        let elsewhere =
            Allow { protocol: Protocol::All, ports: None, source: "172.16.0.0/12".parse().unwrap() };
        let policy = Policy { ingress: vec![(instance, vec![allow, range, elsewhere])], ..Policy::default() };
        firewall.apply(&policy).unwrap();
        let (open, closed) = (serve(&net.guest, 9001, "open"), serve(&net.guest, 9002, "closed"));
        let in_range = serve(&net.guest, 9004, "in range");
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(fetch_until(&net.lan, "10.0.7.5", 9001, "open"), "open");
        assert_eq!(fetch_until(&net.lan, "10.0.7.5", 9004, "in range"), "in range");
        assert_eq!(fetch(&net.lan, "10.0.7.5", 9002), "", "not allowed");
        assert!(!in_ns(&net.lan, "busybox ping -c 1 -W 1 10.0.7.5 >/dev/null 2>&1"), "ICMP not allowed");
        assert!(
            in_ns(&net.guest, "busybox ping -c 1 -W 2 192.168.50.2 >/dev/null 2>&1"),
            "replies to the instance pass"
        );
        stop(open);
        stop(closed);
        stop(in_range);
    }
}
