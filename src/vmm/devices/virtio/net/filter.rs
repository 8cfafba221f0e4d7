//! Source-address enforcement on frames a guest transmits: a guest may only speak with the
//! MAC address (and, when one is assigned, the IPv4 address) it was given, so it can neither
//! impersonate another instance nor poison the neighbours' ARP caches.
//!
//! nuage assigns no IPv6 address, so on an interface with an assigned IPv4 address a
//! guest's only IPv6 identity is the link-local address its MAC gives (modified EUI-64),
//! or none (`::`, while it checks for duplicates). Neighbour discovery must name its own MAC
//! and claim only that address, and a guest may not act as a router (advertisements,
//! redirects).

use std::net::{Ipv4Addr, Ipv6Addr};

const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPV6_HEADER: usize = 40;
const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 extension headers walked to find what a packet carries: hop-by-hop, routing,
/// fragment, destination options.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTIONS: u8 = 60;
/// Most extension headers a packet may carry before it is called malformed.
const MAX_EXTENSION_HEADERS: usize = 8;
const ICMPV6_ROUTER_ADVERTISEMENT: u8 = 134;
const ICMPV6_NEIGHBOR_SOLICITATION: u8 = 135;
const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
const ICMPV6_REDIRECT: u8 = 137;
/// Neighbour discovery options naming a link-layer address (source, target).
const ND_OPTION_SOURCE_LL: u8 = 1;
const ND_OPTION_TARGET_LL: u8 = 2;
const IPPROTO_UDP: u8 = 17;
const DHCP_CLIENT_PORT: u16 = 68;
const DHCP_SERVER_PORT: u16 = 67;

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Shorter than an Ethernet header, or a truncated IPv4/ARP header.
    Malformed,
    /// Source MAC other than the assigned one.
    SourceMac,
    /// IPv4 source (or ARP sender) other than the assigned address.
    SourceIp,
    /// VLAN-tagged: the guest may not pick its own VLAN.
    Tagged,
    /// An IPv6 router advertisement or redirect: guests are hosts, not routers.
    RouterRole,
}

/// The addresses a guest interface was assigned.
#[derive(Debug, Clone, Copy)]
pub struct SourceFilter {
    mac: [u8; 6],
    ipv4: Option<Ipv4Addr>,
}

impl SourceFilter {
    /// Allows frames from `mac`, and IPv4 from `ipv4` when given.
    pub fn new(mac: [u8; 6], ipv4: Option<Ipv4Addr>) -> Self {
        Self { mac, ipv4 }
    }

    /// Checks one Ethernet frame (without the virtio-net header).
    pub fn check(&self, frame: &[u8]) -> Result<(), Refusal> {
        let header = frame.get(..ETH_HEADER).ok_or(Refusal::Malformed)?;
        if header[6..12] != self.mac {
            return Err(Refusal::SourceMac);
        }
        let ethertype = u16::from_be_bytes([header[12], header[13]]);
        let payload = &frame[ETH_HEADER..];
        match (ethertype, self.ipv4) {
            (ETHERTYPE_VLAN | ETHERTYPE_QINQ, _) => Err(Refusal::Tagged),
            (ETHERTYPE_IPV4, Some(assigned)) => self.check_ipv4(payload, assigned),
            (ETHERTYPE_ARP, Some(assigned)) => self.check_arp(payload, assigned),
            (ETHERTYPE_IPV6, Some(_)) => self.check_ipv6(payload),
            _ => Ok(()),
        }
    }

    fn check_ipv4(&self, packet: &[u8], assigned: Ipv4Addr) -> Result<(), Refusal> {
        let header = packet.get(..20).ok_or(Refusal::Malformed)?;
        let source = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
        let dhcp = dhcp_request_of(packet);
        if source != assigned && !(source.is_unspecified() && dhcp.is_some()) {
            return Err(Refusal::SourceIp);
        }
        // A DHCP request asks for the lease of the MAC it names (chaddr, at 28..34 of the
        // message): it must be the frame's own, so no guest asks for another's address.
        match dhcp.map(|message| message.get(28..34)) {
            Some(Some(chaddr)) if chaddr != self.mac => Err(Refusal::SourceMac),
            Some(None) => Err(Refusal::Malformed),
            _ => Ok(()),
        }
    }

    /// The link-local IPv6 address of this MAC (modified EUI-64, RFC 4291 appendix A).
    fn link_local(&self) -> Ipv6Addr {
        let m = self.mac;
        let id = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
        let mut octets = [0u8; 16];
        octets[..2].copy_from_slice(&[0xfe, 0x80]);
        octets[8..].copy_from_slice(&id);
        Ipv6Addr::from(octets)
    }

    fn check_ipv6(&self, packet: &[u8]) -> Result<(), Refusal> {
        let header = packet.get(..IPV6_HEADER).ok_or(Refusal::Malformed)?;
        let source = ipv6_at(header, 8);
        let own = self.link_local();
        if source != own && !source.is_unspecified() {
            return Err(Refusal::SourceIp);
        }
        let Some(icmp) = icmpv6_of(packet)? else { return Ok(()) };
        match icmp.first() {
            Some(&(ICMPV6_ROUTER_ADVERTISEMENT | ICMPV6_REDIRECT)) => Err(Refusal::RouterRole),
            Some(&ICMPV6_NEIGHBOR_ADVERTISEMENT) => {
                // Header (8), target (16), options.
                let target = icmp.get(8..24).ok_or(Refusal::Malformed).map(|t| ipv6_at(t, 0))?;
                if target != own {
                    return Err(Refusal::SourceIp);
                }
                self.check_nd_options(icmp.get(24..).unwrap_or_default())
            }
            Some(&ICMPV6_NEIGHBOR_SOLICITATION) => {
                icmp.get(8..24).ok_or(Refusal::Malformed)?;
                self.check_nd_options(icmp.get(24..).unwrap_or_default())
            }
            _ => Ok(()),
        }
    }

    /// Link-layer addresses in neighbour discovery options must be this interface's.
    fn check_nd_options(&self, mut options: &[u8]) -> Result<(), Refusal> {
        while let [kind, units, ..] = *options {
            let len = usize::from(units) * 8;
            let option = options.get(..len).filter(|_| len > 0).ok_or(Refusal::Malformed)?;
            if matches!(kind, ND_OPTION_SOURCE_LL | ND_OPTION_TARGET_LL)
                && option.get(2..8) != Some(&self.mac[..])
            {
                return Err(Refusal::SourceMac);
            }
            options = &options[len..];
        }
        Ok(())
    }

    fn check_arp(&self, arp: &[u8], assigned: Ipv4Addr) -> Result<(), Refusal> {
        // Ethernet/IPv4 ARP: sender MAC at 8..14, sender IP at 14..18.
        let sender = arp.get(8..18).ok_or(Refusal::Malformed)?;
        if sender[..6] != self.mac {
            return Err(Refusal::SourceMac);
        }
        let ip = Ipv4Addr::new(sender[6], sender[7], sender[8], sender[9]);
        // 0.0.0.0 is an address probe (RFC 5227) before the guest claims its address.
        if ip == assigned || ip.is_unspecified() {
            Ok(())
        } else {
            Err(Refusal::SourceIp)
        }
    }
}

fn ipv6_at(bytes: &[u8], offset: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&bytes[offset..offset + 16]);
    Ipv6Addr::from(octets)
}

/// The ICMPv6 message an IPv6 packet carries after its extension headers, if it carries
/// one that starts in this packet (a later fragment carries no header).
fn icmpv6_of(packet: &[u8]) -> Result<Option<&[u8]>, Refusal> {
    let mut next = packet[6];
    let mut offset = IPV6_HEADER;
    for _ in 0..MAX_EXTENSION_HEADERS {
        let rest = packet.get(offset..).unwrap_or_default();
        match next {
            IPPROTO_ICMPV6 => return Ok(Some(rest)),
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTIONS => {
                let [header, units, ..] = *rest else { return Err(Refusal::Malformed) };
                next = header;
                offset += (usize::from(units) + 1) * 8;
            }
            IPV6_FRAGMENT => {
                let fragment = rest.get(..8).ok_or(Refusal::Malformed)?;
                if u16::from_be_bytes([fragment[2], fragment[3]]) >> 3 != 0 {
                    return Ok(None);
                }
                next = fragment[0];
                offset += 8;
            }
            _ => return Ok(None),
        }
    }
    Err(Refusal::Malformed)
}

/// The DHCP message of a client's request (UDP from port 68 to 67), if `packet` is one.
fn dhcp_request_of(packet: &[u8]) -> Option<&[u8]> {
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    let udp = packet.get(header_len..header_len + 8)?;
    let request = packet[9] == IPPROTO_UDP
        && u16::from_be_bytes([udp[0], udp[1]]) == DHCP_CLIENT_PORT
        && u16::from_be_bytes([udp[2], udp[3]]) == DHCP_SERVER_PORT;
    request.then(|| &packet[header_len + 8..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
    const OTHER_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 9];
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 7, 2);

    fn ethernet(source: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&source);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    fn ipv4(source: Ipv4Addr, protocol: u8, ports: (u16, u16)) -> Vec<u8> {
        let mut packet = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, protocol, 0, 0];
        packet.extend_from_slice(&source.octets());
        packet.extend_from_slice(&[10, 0, 7, 1]);
        packet.extend_from_slice(&ports.0.to_be_bytes());
        packet.extend_from_slice(&ports.1.to_be_bytes());
        packet.extend_from_slice(&[0, 8, 0, 0]);
        packet
    }

    /// A DHCP request from no address, naming `chaddr`.
    fn dhcp(chaddr: [u8; 6]) -> Vec<u8> {
        let mut packet = ipv4(Ipv4Addr::UNSPECIFIED, IPPROTO_UDP, (68, 67));
        let mut message = vec![1, 1, 6, 0];
        message.resize(28, 0);
        message.extend_from_slice(&chaddr);
        message.resize(240, 0);
        packet.extend_from_slice(&message);
        packet
    }

    fn arp(sender_mac: [u8; 6], sender_ip: Ipv4Addr) -> Vec<u8> {
        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 2];
        arp.extend_from_slice(&sender_mac);
        arp.extend_from_slice(&sender_ip.octets());
        arp.extend_from_slice(&[0; 10]);
        arp
    }

    #[test]
    fn assigned_addresses_pass() {
        let filter = SourceFilter::new(MAC, Some(IP));
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_IPV4, &ipv4(IP, 1, (0, 0)))), Ok(()));
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_ARP, &arp(MAC, IP))), Ok(()));
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_ARP, &arp(MAC, Ipv4Addr::UNSPECIFIED))), Ok(()));
    }

    /// An IPv6 packet from `source` carrying `next` (after `extensions`, raw) and `payload`.
    fn ipv6(source: Ipv6Addr, next: u8, extensions: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x60, 0, 0, 0, 0, 0, next, 255];
        packet.extend_from_slice(&source.octets());
        packet.extend_from_slice(&"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        packet.extend_from_slice(extensions);
        packet.extend_from_slice(payload);
        packet
    }

    /// An ICMPv6 neighbour message of `kind` for `target`, with a link-layer option.
    fn neighbour(kind: u8, target: Ipv6Addr, option: u8, mac: [u8; 6]) -> Vec<u8> {
        let mut icmp = vec![kind, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        icmp.extend_from_slice(&[option, 1]);
        icmp.extend_from_slice(&mac);
        icmp
    }

    #[test]
    fn ipv6_speaks_only_from_the_link_local_address_of_the_mac() {
        let filter = SourceFilter::new(MAC, Some(IP));
        let own: Ipv6Addr = "fe80::5054:ff:fe00:2".parse().unwrap();
        assert_eq!(filter.link_local(), own);
        let v6 = |packet: Vec<u8>| filter.check(&ethernet(MAC, ETHERTYPE_IPV6, &packet));
        assert_eq!(v6(ipv6(own, 17, &[], &[0; 8])), Ok(()));
        assert_eq!(v6(ipv6(Ipv6Addr::UNSPECIFIED, IPPROTO_ICMPV6, &[], &[143, 0, 0, 0])), Ok(()), "MLD");
        for other in ["fe80::5054:ff:fe00:9", "2001:db8::2", "fd00::1"] {
            assert_eq!(v6(ipv6(other.parse().unwrap(), 17, &[], &[0; 8])), Err(Refusal::SourceIp), "{other}");
        }
        // Neighbour discovery claims only its own address and MAC.
        let na = |target, mac| ipv6(own, IPPROTO_ICMPV6, &[], &neighbour(136, target, 2, mac));
        assert_eq!(v6(na(own, MAC)), Ok(()));
        let other: Ipv6Addr = "fe80::5054:ff:fe00:9".parse().unwrap();
        assert_eq!(v6(na(other, MAC)), Err(Refusal::SourceIp));
        assert_eq!(v6(na(own, OTHER_MAC)), Err(Refusal::SourceMac));
        let ns = |mac| ipv6(Ipv6Addr::UNSPECIFIED, IPPROTO_ICMPV6, &[], &neighbour(135, other, 1, mac));
        assert_eq!(v6(ns(MAC)), Ok(()), "duplicate address detection, or asking for a neighbour");
        assert_eq!(v6(ns(OTHER_MAC)), Err(Refusal::SourceMac));
        // No router advertisements nor redirects, even behind extension headers.
        let ra = [134, 0, 0, 0, 64, 0, 0, 0];
        assert_eq!(v6(ipv6(own, IPPROTO_ICMPV6, &[], &ra)), Err(Refusal::RouterRole));
        let hop_by_hop = [IPPROTO_ICMPV6, 0, 1, 4, 0, 0, 0, 0];
        assert_eq!(v6(ipv6(own, IPV6_HOP_BY_HOP, &hop_by_hop, &ra)), Err(Refusal::RouterRole));
        let first_fragment = [IPPROTO_ICMPV6, 0, 0, 1, 0, 0, 0, 1];
        assert_eq!(v6(ipv6(own, IPV6_FRAGMENT, &first_fragment, &ra)), Err(Refusal::RouterRole));
        assert_eq!(v6(ipv6(own, IPPROTO_ICMPV6, &[], &[137, 0, 0, 0])), Err(Refusal::RouterRole));
        // Truncated and endless extension chains are malformed.
        assert_eq!(v6(ipv6(own, IPV6_HOP_BY_HOP, &[], &[])), Err(Refusal::Malformed));
        let endless: Vec<u8> = [IPV6_DEST_OPTIONS, 0, 0, 0, 0, 0, 0, 0].repeat(9);
        assert_eq!(v6(ipv6(own, IPV6_DEST_OPTIONS, &endless, &[])), Err(Refusal::Malformed));
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_IPV6, &[0x60; 39])), Err(Refusal::Malformed));
        let zero_option = ipv6(own, IPPROTO_ICMPV6, &[], &[136, 0, 0, 0, 0, 0, 0, 0]);
        let mut zero_option = zero_option;
        zero_option.extend_from_slice(&own.octets());
        zero_option.extend_from_slice(&[2, 0]);
        assert_eq!(v6(zero_option), Err(Refusal::Malformed));
    }

    #[test]
    fn spoofed_sources_are_refused() {
        let filter = SourceFilter::new(MAC, Some(IP));
        let other_ip = Ipv4Addr::new(10, 0, 7, 99);
        assert_eq!(
            filter.check(&ethernet(OTHER_MAC, ETHERTYPE_IPV4, &ipv4(IP, 1, (0, 0)))),
            Err(Refusal::SourceMac)
        );
        assert_eq!(
            filter.check(&ethernet(MAC, ETHERTYPE_IPV4, &ipv4(other_ip, 1, (0, 0)))),
            Err(Refusal::SourceIp)
        );
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_ARP, &arp(MAC, other_ip))), Err(Refusal::SourceIp));
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_ARP, &arp(OTHER_MAC, IP))), Err(Refusal::SourceMac));
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_VLAN, &[0; 40])), Err(Refusal::Tagged));
    }

    #[test]
    fn only_dhcp_requests_may_come_from_no_address() {
        let filter = SourceFilter::new(MAC, Some(IP));
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_IPV4, &dhcp(MAC))), Ok(()));
        let other = ipv4(Ipv4Addr::UNSPECIFIED, IPPROTO_UDP, (68, 53));
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_IPV4, &other)), Err(Refusal::SourceIp));
        // Asking for another guest's lease, from its own frame address.
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_IPV4, &dhcp(OTHER_MAC))), Err(Refusal::SourceMac));
        let truncated = ipv4(Ipv4Addr::UNSPECIFIED, IPPROTO_UDP, (68, 67));
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_IPV4, &truncated)), Err(Refusal::Malformed));
    }

    #[test]
    fn truncated_frames_are_malformed() {
        let filter = SourceFilter::new(MAC, Some(IP));
        assert_eq!(filter.check(&[0; 13]), Err(Refusal::Malformed));
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_IPV4, &[0x45; 19])), Err(Refusal::Malformed));
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_ARP, &[0; 17])), Err(Refusal::Malformed));
        // A header length pointing past the packet is not a DHCP request.
        let mut odd = ipv4(Ipv4Addr::UNSPECIFIED, IPPROTO_UDP, (68, 67));
        odd[0] = 0x4f;
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_IPV4, &odd)), Err(Refusal::SourceIp));
    }

    #[test]
    fn without_an_ipv4_address_only_the_mac_is_checked() {
        let filter = SourceFilter::new(MAC, None);
        let any = Ipv4Addr::new(192, 168, 1, 1);
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_IPV4, &ipv4(any, 1, (0, 0)))), Ok(()));
        assert_eq!(
            filter.check(&ethernet(OTHER_MAC, ETHERTYPE_IPV4, &ipv4(any, 1, (0, 0)))),
            Err(Refusal::SourceMac)
        );
    }
}
