//! The vsock device: the guest's context id and where host services meet it.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The guest's vsock endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context id: 3 or more (0-2 are reserved, 2 is the host).
    pub guest_cid: u32,
    /// Unix socket the VMM listens on for host-initiated connections (`CONNECT <port>\n`);
    /// guest connections to host port P go to `<uds_path>_P`.
    pub uds_path: PathBuf,
}

/// What is wrong with the vsock configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VsockConfigError {
    /// A reserved context id.
    #[error("vsock cid {0} is reserved: use 3 or more")]
    Cid(u32),
    /// The `--vsock` syntax is wrong.
    #[error("invalid --vsock {0:?}: expected cid=N,uds=PATH")]
    Syntax(String),
}

impl VsockConfig {
    /// Checks the context id.
    pub fn validate(&self) -> Result<(), VsockConfigError> {
        if self.guest_cid < 3 || self.guest_cid == u32::MAX {
            return Err(VsockConfigError::Cid(self.guest_cid));
        }
        Ok(())
    }
}

/// Parses the `--vsock` flag: `cid=N,uds=PATH`.
impl FromStr for VsockConfig {
    type Err = VsockConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || VsockConfigError::Syntax(text.to_owned());
        let (mut cid, mut uds) = (None, None);
        for item in text.split(',') {
            match item.split_once('=').ok_or_else(syntax)? {
                ("cid", value) => cid = Some(value.parse().map_err(|_| syntax())?),
                ("uds", path) if !path.is_empty() => uds = Some(PathBuf::from(path)),
                _ => return Err(syntax()),
            }
        }
        let config = VsockConfig { guest_cid: cid.ok_or_else(syntax)?, uds_path: uds.ok_or_else(syntax)? };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_syntax() {
        let v: VsockConfig = "cid=3,uds=/run/v.sock".parse().unwrap();
        assert_eq!((v.guest_cid, v.uds_path.to_str()), (3, Some("/run/v.sock")));
        assert_eq!("cid=2,uds=/x".parse::<VsockConfig>(), Err(VsockConfigError::Cid(2)));
        for bad in ["cid=3", "uds=/x", "cid=x,uds=/x", "cid=3,uds=", "cid=3,uds=/x,port=1"] {
            assert!(bad.parse::<VsockConfig>().is_err(), "{bad:?} accepted");
        }
    }
}
