//! Each instance's NoCloud config drive: a small read-only FAT disk labelled `CIDATA`
//! holding `meta-data` (instance id, hostname, the key pair's public key), `user-data`
//! (what RunInstances was given) and, with a network interface, `network-config` (its
//! static address). cloud-init finds it by its label; a busybox image reads the same files
//! from the disk whose serial is `cidata`. The VMM sees it as one more `--disk`.

use std::path::{Path, PathBuf};

use super::DaemonError;
use crate::net::plane::Interface;
use crate::state::file::create_private_dir;
mod fat;

/// The disk's virtio serial, how a guest without blkid finds it.
pub const DISK_SERIAL: &str = "cidata";
/// Its file in the instance's directory.
const FILE_NAME: &str = "cidata.img";
/// EC2's limit on user data.
const MAX_USER_DATA: usize = 16 << 10;

/// What an instance's config drive says.
pub struct ConfigDrive<'a> {
    /// The instance id (also its hostname).
    pub instance_id: &'a str,
    /// Its key pair's public key (one OpenSSH line).
    pub public_key: Option<&'a str>,
    /// RunInstances' user data, as given.
    pub user_data: &'a [u8],
    /// Its network interface.
    pub interface: Option<&'a Interface>,
}

/// A YAML double-quoted string.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

impl ConfigDrive<'_> {
    fn meta_data(&self) -> String {
        let mut text = format!("instance-id: {0}\nlocal-hostname: {0}\n", self.instance_id);
        if let Some(key) = self.public_key {
            text.push_str(&format!("public-keys:\n  - {}\n", quoted(key)));
        }
        text
    }

    /// cloud-init's own version 1, matched by MAC so the guest's name for the device does
    /// not matter. Version 1's `gateway` is what every renderer writes natively: Debian's
    /// (ifupdown) renders a version 2 default *route* as a `route` command from net-tools,
    /// which its cloud images lack, and the guest then has no default route.
    fn network_config(interface: &Interface) -> String {
        format!(
            "version: 1\nconfig:\n  - type: physical\n    name: eth0\n    mac_address: {mac}\n    subnets:\n      \
             - type: static\n        address: {ip}/{prefix}\n        gateway: {gateway}\n",
            mac = quoted(&interface.mac.to_string()),
            ip = interface.ip,
            prefix = interface.subnet.cidr.prefix(),
            gateway = interface.subnet.gateway,
        )
    }

    /// Writes the drive into the instance's directory `dir` (atomically: a crash leaves the
    /// old drive or the new one) and returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, DaemonError> {
        check_user_data(self.user_data)?;
        let meta_data = self.meta_data();
        let network_config = self.interface.map(Self::network_config);
        let mut files: Vec<(&str, &[u8])> =
            vec![("meta-data", meta_data.as_bytes()), ("user-data", self.user_data)];
        if let Some(config) = &network_config {
            files.push(("network-config", config.as_bytes()));
        }
        let image = fat::build_image("CIDATA", &files).map_err(|e| DaemonError::Internal(e.to_string()))?;
        let io = |e: std::io::Error| DaemonError::Internal(format!("{}: {e}", dir.display()));
        create_private_dir(dir).map_err(io)?;
        let path = dir.join(FILE_NAME);
        crate::state::file::write_atomic(&path, &image).map_err(io)?;
        Ok(path)
    }
}

/// Refuses user data over EC2's limit.
pub fn check_user_data(user_data: &[u8]) -> Result<(), DaemonError> {
    if user_data.len() > MAX_USER_DATA {
        return Err(DaemonError::InvalidParameter(format!(
            "user data is {} bytes; at most {MAX_USER_DATA} are allowed",
            user_data.len()
        )));
    }
    Ok(())
}

/// The config drive of the instance whose directory is `dir`, if it has one.
pub fn existing(dir: &Path) -> Option<PathBuf> {
    Some(dir.join(FILE_NAME)).filter(|path| path.is_file())
}

/// Removes the config drive (it holds the user data, which may be secret).
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(FILE_NAME));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data_quotes_the_key_and_user_data_is_capped() {
        let drive = ConfigDrive {
            instance_id: "i-1",
            public_key: Some("ssh-ed25519 AAAA a \"quoted\" \\name"),
            user_data: b"#!/bin/sh\n",
            interface: None,
        };
        assert_eq!(
            drive.meta_data(),
            "instance-id: i-1\nlocal-hostname: i-1\npublic-keys:\n  - \"ssh-ed25519 AAAA a \\\"quoted\\\" \\\\name\"\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = drive.write(dir.path()).unwrap();
        assert_eq!(existing(dir.path()), Some(path.clone()));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 << 20);
        let big = vec![b'x'; MAX_USER_DATA + 1];
        let err = ConfigDrive { user_data: &big, ..drive }.write(dir.path()).unwrap_err();
        assert!(
            matches!(&err, DaemonError::InvalidParameter(m) if m.starts_with("user data is 16385 bytes")),
            "{err}"
        );
        remove(dir.path());
        assert_eq!(existing(dir.path()), None);
    }

    #[test]
    fn network_config_gives_the_address_and_gateway_by_mac() {
        let subnet = crate::net::ipam::Subnet {
            id: "subnet-1".into(),
            cidr: "10.0.7.0/24".parse().unwrap(),
            gateway: "10.0.7.1".parse().unwrap(),
            bridge: "nbr-1".into(),
        };
        let ip = "10.0.7.5".parse().unwrap();
        let interface = Interface { subnet, ip, mac: crate::net::addr::mac_for(ip), tap: "ntap-1".into() };
        assert_eq!(
            ConfigDrive::network_config(&interface),
            "version: 1\nconfig:\n  - type: physical\n    name: eth0\n    mac_address: \"02:4e:0a:00:07:05\"\n    \
             subnets:\n      - type: static\n        address: 10.0.7.5/24\n        gateway: 10.0.7.1\n"
        );
    }
}
