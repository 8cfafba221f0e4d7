//! Drives nuage's network plane from the shell. The nested end-to-end test uses it inside
//! the L1 machine, where only static binaries run, until `nuaged` serves these operations
//! over its API. Every command first brings the host in line with the record (bridges,
//! forwarding, Elastic IPs on the uplink, the nftables table).
//!
//!   net DIR [--uplink DEV --pool IP[,IP...]] COMMAND ARGS...
//!     create-subnet CIDR               prints the subnet id
//!     attach SUBNET OWNER              prints the VMM's --net value and the kernel ip= entry
//!     detach SUBNET OWNER
//!     allocate-address                 prints the allocation id and the address
//!     associate-address ID PRIVATE_IP
//!     disassociate-address ID
//!     release-address ID
//!
//! Errors print one line on stderr and exit 1.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::ExitCode;

use nuage::net::plane::{NetworkPlane, PlaneConfig};

fn parse<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| format!("{what} {text:?}: {e}"))
}

fn run(args: &[String]) -> Result<String, String> {
    let [dir, rest @ ..] = args else { return Err("usage: see the source header".into()) };
    let mut config = PlaneConfig::default();
    let mut rest = rest;
    while let [flag, value, tail @ ..] = rest {
        match flag.as_str() {
            "--uplink" => config.uplink = Some(value.clone()),
            "--pool" => {
                config.address_pool =
                    value.split(',').map(|ip| parse("pool address", ip)).collect::<Result<_, _>>()?
            }
            _ => break,
        }
        rest = tail;
    }
    let [command, rest @ ..] = rest else { return Err("missing command".into()) };
    let arg = |i: usize| rest.get(i).cloned().ok_or_else(|| format!("{command}: missing argument {}", i + 1));
    let plane = NetworkPlane::open(Path::new(dir), config).map_err(|e| e.to_string())?;
    let text = |e: nuage::net::NetError| e.to_string();
    match command.as_str() {
        "create-subnet" => Ok(plane.create_subnet(parse("CIDR", &arg(0)?)?, None).map_err(text)?.id),
        "attach" => {
            // SAFETY: getuid cannot fail and touches no memory.
            let uid = unsafe { libc::getuid() };
            let interface = plane.attach(&arg(0)?, &arg(1)?, None, uid, &[]).map_err(text)?;
            let net = format!("tap={},mac={},ip={}", interface.tap, interface.mac, interface.ip);
            Ok(format!("{net} {}", interface.kernel_ip_param()))
        }
        "detach" => plane.detach(&arg(0)?, &arg(1)?).map(|()| String::new()).map_err(text),
        "allocate-address" => {
            let eip = plane.allocate_address().map_err(text)?;
            Ok(format!("{} {}", eip.id, eip.public_ip))
        }
        "associate-address" => {
            let private: Ipv4Addr = parse("address", &arg(1)?)?;
            plane.associate_address(&arg(0)?, private).map(|_| String::new()).map_err(text)
        }
        "disassociate-address" => plane.disassociate_address(&arg(0)?).map(|_| String::new()).map_err(text),
        "release-address" => plane.release_address(&arg(0)?).map(|()| String::new()).map_err(text),
        other => Err(format!("unknown command {other}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("net: {e}");
            ExitCode::FAILURE
        }
    }
}
