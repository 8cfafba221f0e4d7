//! Source-address enforcement on frames a guest transmits: a guest may only speak with the
//! MAC address (and, when one is assigned, the IPv4 address) it was given, so it can neither
//! impersonate another instance nor poison the neighbours' ARP caches.

use std::net::Ipv4Addr;

const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
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
            (ETHERTYPE_IPV4, Some(assigned)) => check_ipv4(payload, assigned),
            (ETHERTYPE_ARP, Some(assigned)) => self.check_arp(payload, assigned),
            _ => Ok(()),
        }
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

fn check_ipv4(packet: &[u8], assigned: Ipv4Addr) -> Result<(), Refusal> {
    let header = packet.get(..20).ok_or(Refusal::Malformed)?;
    let source = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    if source == assigned || (source.is_unspecified() && is_dhcp_request(packet)) {
        Ok(())
    } else {
        Err(Refusal::SourceIp)
    }
}

/// A DHCP client's request, sent from 0.0.0.0 before it has an address.
fn is_dhcp_request(packet: &[u8]) -> bool {
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    let Some(udp) = packet.get(header_len..header_len + 4) else { return false };
    packet[9] == IPPROTO_UDP
        && u16::from_be_bytes([udp[0], udp[1]]) == DHCP_CLIENT_PORT
        && u16::from_be_bytes([udp[2], udp[3]]) == DHCP_SERVER_PORT
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
        assert_eq!(filter.check(&ethernet(MAC, 0x86dd, &[0x60; 40])), Ok(()), "IPv6 is MAC-checked only");
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
        let dhcp = ipv4(Ipv4Addr::UNSPECIFIED, IPPROTO_UDP, (68, 67));
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_IPV4, &dhcp)), Ok(()));
        let other = ipv4(Ipv4Addr::UNSPECIFIED, IPPROTO_UDP, (68, 53));
        assert_eq!(filter.check(&ethernet(MAC, ETHERTYPE_IPV4, &other)), Err(Refusal::SourceIp));
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
