//! A strict, static DHCP responder (RFC 2131) on a subnet's bridge: it answers a client
//! only when the client's MAC address holds a lease, and only with that lease's address,
//! so a guest learns its address, gateway and DNS without an agent and cannot pick
//! another. Unknown clients and malformed packets are ignored.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::{Arc, Mutex};

use super::NetError;

const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const FIXED_LEN: usize = 236;
const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;

const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

const OPT_PAD: u8 = 0;
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_END: u8 = 255;

/// What the responder tells every client of one subnet.
#[derive(Debug, Clone)]
pub struct DhcpConfig {
    /// The server's (the bridge's) address: also the router.
    pub server: Ipv4Addr,
    /// The subnet mask.
    pub mask: Ipv4Addr,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds (leases are static; clients just renew).
    pub lease_seconds: u32,
}

/// The static leases: MAC address → IPv4 address. Shared, so leases change while serving.
pub type Leases = Arc<Mutex<HashMap<[u8; 6], Ipv4Addr>>>;

/// A client message, decoded.
#[derive(Debug, PartialEq, Eq)]
struct Message {
    xid: [u8; 4],
    flags: [u8; 2],
    chaddr: [u8; 6],
    kind: u8,
    requested: Option<Ipv4Addr>,
    ciaddr: Ipv4Addr,
}

fn parse(packet: &[u8]) -> Option<Message> {
    let fixed = packet.get(..FIXED_LEN)?;
    // Ethernet clients only: htype 1, hlen 6.
    if fixed[0] != BOOTREQUEST
        || fixed[1] != 1
        || fixed[2] != 6
        || packet.get(FIXED_LEN..FIXED_LEN + 4)? != MAGIC_COOKIE
    {
        return None;
    }
    let mut kind = None;
    let mut requested = None;
    let mut options = &packet[FIXED_LEN + 4..];
    while let Some((&code, rest)) = options.split_first() {
        match code {
            OPT_PAD => options = rest,
            OPT_END => break,
            _ => {
                let (&len, rest) = rest.split_first()?;
                let value = rest.get(..usize::from(len))?;
                match (code, value) {
                    (OPT_MESSAGE_TYPE, [t]) => kind = Some(*t),
                    (OPT_REQUESTED_IP, [a, b, c, d]) => requested = Some(Ipv4Addr::new(*a, *b, *c, *d)),
                    _ => {}
                }
                options = &rest[usize::from(len)..];
            }
        }
    }
    Some(Message {
        xid: fixed[4..8].try_into().ok()?,
        flags: fixed[10..12].try_into().ok()?,
        chaddr: fixed[28..34].try_into().ok()?,
        kind: kind?,
        requested,
        ciaddr: Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15]),
    })
}

/// The reply to `message` for a client leased `ip`, or `None` to stay silent.
fn reply(message: &Message, ip: Ipv4Addr, config: &DhcpConfig) -> Option<Vec<u8>> {
    let kind = match message.kind {
        DISCOVER => OFFER,
        REQUEST => {
            let asked = message.requested.unwrap_or(message.ciaddr);
            if asked == ip {
                ACK
            } else {
                NAK
            }
        }
        _ => return None,
    };
    let mut out = vec![0u8; FIXED_LEN];
    out[0] = BOOTREPLY;
    out[1] = 1;
    out[2] = 6;
    out[4..8].copy_from_slice(&message.xid);
    out[10..12].copy_from_slice(&message.flags);
    if kind != NAK {
        out[16..20].copy_from_slice(&ip.octets());
    }
    out[20..24].copy_from_slice(&config.server.octets());
    out[28..34].copy_from_slice(&message.chaddr);
    out.extend_from_slice(&MAGIC_COOKIE);
    let mut option = |code: u8, value: &[u8]| {
        out.push(code);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    };
    option(OPT_MESSAGE_TYPE, &[kind]);
    option(OPT_SERVER_ID, &config.server.octets());
    if kind != NAK {
        option(OPT_LEASE_TIME, &config.lease_seconds.to_be_bytes());
        option(OPT_SUBNET_MASK, &config.mask.octets());
        option(OPT_ROUTER, &config.server.octets());
        if !config.dns.is_empty() {
            let dns: Vec<u8> = config.dns.iter().flat_map(|d| d.octets()).collect();
            option(OPT_DNS, &dns);
        }
    }
    out.push(OPT_END);
    Some(out)
}

/// Opens the responder's socket on `bridge`, inside network namespace `netns` if given
/// (entered on a short-lived thread, so the caller's namespace is untouched).
pub fn bind(netns: Option<&str>, bridge: &str) -> Result<UdpSocket, NetError> {
    let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVER_PORT);
    super::socket::bound_to_device(netns, bridge, libc::SOCK_DGRAM, addr, &[libc::SO_BROADCAST])
        .map(UdpSocket::from)
        .map_err(|e| NetError::Command { command: "DHCP responder bind".into(), stderr: e.to_string() })
}

/// Answers DHCP on `socket` until it fails; run it on a thread of its own.
pub fn serve(socket: &UdpSocket, leases: &Leases, config: &DhcpConfig) -> std::io::Error {
    let mut buf = [0u8; 1500];
    loop {
        let n = match socket.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return e,
        };
        let Some(message) = parse(&buf[..n]) else { continue };
        let ip = leases.lock().unwrap_or_else(|p| p.into_inner()).get(&message.chaddr).copied();
        let Some(ip) = ip else {
            tracing::debug!(mac = ?message.chaddr, "DHCP from a MAC without a lease: ignored");
            continue;
        };
        if let Some(packet) = reply(&message, ip, config) {
            // The client has no address yet: broadcast on the bridge.
            let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT);
            if let Err(e) = socket.send_to(&packet, to) {
                tracing::warn!(error = %e, "DHCP reply failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn request(kind: u8, mac: [u8; 6], requested: Option<Ipv4Addr>) -> Vec<u8> {
        let mut p = vec![0u8; FIXED_LEN];
        p[0] = BOOTREQUEST;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&[1, 2, 3, 4]);
        p[28..34].copy_from_slice(&mac);
        p.extend_from_slice(&MAGIC_COOKIE);
        p.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, kind]);
        if let Some(ip) = requested {
            p.extend_from_slice(&[OPT_REQUESTED_IP, 4]);
            p.extend_from_slice(&ip.octets());
        }
        p.push(OPT_END);
        p
    }

    fn config() -> DhcpConfig {
        DhcpConfig {
            server: Ipv4Addr::new(10, 0, 7, 1),
            mask: Ipv4Addr::new(255, 255, 255, 0),
            dns: vec![Ipv4Addr::new(10, 0, 7, 1)],
            lease_seconds: 3600,
        }
    }

    const MAC: [u8; 6] = [2, 0x4e, 10, 0, 7, 5];
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 7, 5);

    #[test]
    fn offers_and_acks_only_the_leased_address() {
        let offer = reply(&parse(&request(DISCOVER, MAC, None)).unwrap(), IP, &config()).unwrap();
        assert_eq!(offer[0], BOOTREPLY);
        assert_eq!(&offer[16..20], &IP.octets());
        assert!(offer.windows(3).any(|w| w == [OPT_MESSAGE_TYPE, 1, OFFER]));
        let ack = reply(&parse(&request(REQUEST, MAC, Some(IP))).unwrap(), IP, &config()).unwrap();
        assert!(ack.windows(3).any(|w| w == [OPT_MESSAGE_TYPE, 1, ACK]));
        let other = Ipv4Addr::new(10, 0, 7, 99);
        let nak = reply(&parse(&request(REQUEST, MAC, Some(other))).unwrap(), IP, &config()).unwrap();
        assert!(nak.windows(3).any(|w| w == [OPT_MESSAGE_TYPE, 1, NAK]));
        assert_eq!(&nak[16..20], &[0; 4]);
        assert!(reply(&parse(&request(7, MAC, None)).unwrap(), IP, &config()).is_none(), "RELEASE: silence");
    }

    #[test]
    fn malformed_packets_are_ignored() {
        let good = request(DISCOVER, MAC, None);
        assert!(parse(&good[..100]).is_none(), "truncated");
        let mut bad = good.clone();
        bad[FIXED_LEN] = 0;
        assert!(parse(&bad).is_none(), "no magic cookie");
        let mut bad = good.clone();
        bad[0] = BOOTREPLY;
        assert!(parse(&bad).is_none(), "not a request");
        let mut bad = good[..FIXED_LEN + 4].to_vec();
        bad.extend_from_slice(&[OPT_MESSAGE_TYPE, 200]);
        assert!(parse(&bad).is_none(), "option longer than the packet");
        let mut no_type = good[..FIXED_LEN + 4].to_vec();
        no_type.push(OPT_END);
        assert!(parse(&no_type).is_none(), "no message type");
    }

    /// busybox udhcpc in a client namespace, across a veth pair to the bridge in the
    /// server's namespace: the leased MAC gets its address, router and DNS; another MAC
    /// gets nothing.
    #[test]
    fn udhcpc_gets_its_lease_and_strangers_get_nothing() {
        let tag = std::process::id();
        let (server_ns, client_ns) = (format!("nuage-dhcp-s-{tag}"), format!("nuage-dhcp-c-{tag}"));
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        struct Cleanup(Vec<String>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                for ns in &self.0 {
                    let _ = Command::new("ip").args(["netns", "del", ns]).output();
                }
            }
        }
        run(&["netns", "add", &server_ns]);
        let _cleanup = Cleanup(vec![server_ns.clone(), client_ns.clone()]);
        run(&["netns", "add", &client_ns]);
        run(&["-n", &server_ns, "link", "add", "nbr-test", "type", "bridge"]);
        run(&["-n", &server_ns, "addr", "add", "10.0.7.1/24", "dev", "nbr-test"]);
        run(&["-n", &server_ns, "link", "set", "nbr-test", "up"]);
        run(&[
            "-n", &server_ns, "link", "add", "v-host", "type", "veth", "peer", "name", "v-guest", "netns",
            &client_ns,
        ]);
        run(&["-n", &server_ns, "link", "set", "v-host", "master", "nbr-test", "up"]);
        run(&["-n", &client_ns, "link", "set", "v-guest", "address", "02:4e:0a:00:07:05", "up"]);

        let socket = bind(Some(&server_ns), "nbr-test").unwrap();
        let leases: Leases = Arc::new(Mutex::new([(MAC, IP)].into_iter().collect()));
        std::thread::spawn(move || serve(&socket, &leases, &config()));

        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        let report = dir.path().join("report");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip $subnet $router $dns\" > {}\n",
                report.display()
            ),
        )
        .unwrap();
        Command::new("chmod").arg("+x").arg(&script).status().unwrap();
        let udhcpc = |extra: &[&str]| {
            let mut args = vec![
                "netns", "exec", &client_ns, "busybox", "udhcpc", "-i", "v-guest", "-n", "-q", "-t", "3",
                "-T", "1",
            ];
            args.extend_from_slice(extra);
            let script = script.to_str().unwrap().to_owned();
            Command::new("ip").args(&args).args(["-s", &script]).output().unwrap()
        };
        let out = udhcpc(&[]);
        assert!(out.status.success(), "udhcpc: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            std::fs::read_to_string(&report).unwrap().trim(),
            "10.0.7.5 255.255.255.0 10.0.7.1 10.0.7.1"
        );

        std::fs::remove_file(&report).unwrap();
        run(&["-n", &client_ns, "link", "set", "v-guest", "address", "02:4e:0a:00:07:63"]);
        let out = udhcpc(&[]);
        assert!(!out.status.success(), "a MAC without a lease must get nothing");
        assert!(!report.exists());
    }
}
