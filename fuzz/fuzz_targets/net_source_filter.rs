//! Frames a hostile guest transmits: the source filter parses Ethernet, ARP and IPv4
//! headers of any length and content without panicking, and never lets a frame through
//! whose source MAC is not the assigned one.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use nuage::vmm::devices::virtio::net::filter::SourceFilter;

const MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];

fuzz_target!(|frame: &[u8]| {
    for ipv4 in [None, Some(Ipv4Addr::new(10, 0, 7, 2))] {
        if SourceFilter::new(MAC, ipv4).check(frame).is_ok() {
            assert_eq!(frame[6..12], MAC);
        }
    }
});
