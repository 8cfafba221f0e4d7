//! The daemon's side of the metadata service ([`crate::metadata`]): which bridges it
//! listens on and who holds an address there, read from the daemon's services at every
//! request, so what a guest reads is always current (an Elastic IP just associated, the
//! options just modified).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use super::Daemon;
use crate::metadata::{InstanceMetadata, Listening, Source, ADDRESS, PORT};
use crate::net::addr::mac_for;
use crate::net::socket::listen_on_device;

/// The daemon as the metadata service's [`Source`].
pub struct MetadataSource(pub Arc<Daemon>);

impl Source for MetadataSource {
    fn subnets(&self) -> Result<Vec<Listening>, String> {
        let subnets = self.0.network.subnets().map_err(|e| e.to_string())?;
        Ok(subnets.into_iter().map(|s| Listening { subnet_id: s.id, bridge: s.bridge }).collect())
    }

    fn listen(&self, bridge: &str) -> std::io::Result<std::net::TcpListener> {
        let netns = self.0.config.network.netns.as_deref();
        listen_on_device(netns, bridge, SocketAddrV4::new(ADDRESS, PORT))
    }

    fn instance_at(&self, subnet_id: &str, ip: Ipv4Addr) -> Result<Option<InstanceMetadata>, String> {
        let daemon = &self.0;
        let text = |e: super::DaemonError| e.to_string();
        let Some((record, launch)) = daemon.instances.at_address(subnet_id, ip).map_err(text)? else {
            return Ok(None);
        };
        let subnets = daemon.network.subnets().map_err(text)?;
        let Some(subnet) = subnets.into_iter().find(|s| s.id == subnet_id) else { return Ok(None) };
        let public_ip = daemon.network.public_ip_of(ip).map_err(text)?;
        let key = (!record.key_name.is_empty() && !launch.public_key.is_empty())
            .then(|| (record.key_name.clone(), launch.public_key));
        let region = daemon.config.region.clone();
        Ok(Some(InstanceMetadata {
            instance_id: record.id,
            image_id: record.image_id,
            instance_type: record.instance_type,
            key,
            private_ip: ip,
            mac: mac_for(ip).to_string(),
            subnet_id: subnet.id,
            subnet_cidr: subnet.cidr.to_string(),
            public_ip,
            user_data: launch.user_data,
            availability_zone: format!("{region}a"),
            region,
            options: record.metadata_options,
        }))
    }
}
