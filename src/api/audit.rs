//! The audit trail: every call that changes something is logged (tracing target
//! `nuage::audit`) with who made it: the peer's uid and pid on the Unix socket (from the
//! kernel, `SO_PEERCRED`), the client certificate's fingerprint over TLS. Reads (Describe,
//! Get, Watch) and the health and reflection services are not logged.

use std::fmt::Write as _;

use sha1::{Digest, Sha1};
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};

/// Whether the gRPC method at `path` (`/nuage.v1.Service/Method`) changes something.
pub fn changes_something(path: &str) -> bool {
    let Some(method) = path.strip_prefix("/nuage.v1.").and_then(|rest| rest.split('/').nth(1)) else {
        return false;
    };
    !["Describe", "Get", "Watch"].iter().any(|read| method.starts_with(read))
}

/// Who made the request whose extensions are `extensions`.
pub fn caller(extensions: &http::Extensions) -> String {
    if let Some(uds) = extensions.get::<UdsConnectInfo>() {
        return match &uds.peer_cred {
            Some(cred) => format!("uid {} gid {} pid {}", cred.uid(), cred.gid(), cred.pid().unwrap_or(0)),
            None => "a local caller without credentials".to_owned(),
        };
    }
    if let Some(tls) = extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        let address = tls.get_ref().remote_addr().map_or("?".to_owned(), |a| a.to_string());
        let certificate = tls.peer_certs().and_then(|certs| certs.first().map(|c| fingerprint(c.as_ref())));
        return format!("{address} certificate {}", certificate.unwrap_or_else(|| "none".to_owned()));
    }
    "an unknown caller".to_owned()
}

/// `sha1:` and the hex SHA-1 of a DER certificate, as `openssl x509 -fingerprint` shows it.
fn fingerprint(der: &[u8]) -> String {
    Sha1::digest(der).iter().fold("sha1:".to_owned(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// Logs the call to `path` by the caller in `extensions`, if it changes something.
pub fn record(path: &str, extensions: &http::Extensions) {
    if changes_something(path) {
        tracing::info!(target: "nuage::audit", method = %path, caller = %caller(extensions), "API call");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_told_from_reads() {
        for path in [
            "/nuage.v1.Instances/RunInstances",
            "/nuage.v1.Tags/DeleteTags",
            "/nuage.v1.Images/UploadImageFile",
        ] {
            assert!(changes_something(path), "{path}");
        }
        for path in [
            "/nuage.v1.Instances/DescribeInstances",
            "/nuage.v1.Instances/GetConsoleOutput",
            "/nuage.v1.Instances/WatchInstance",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(!changes_something(path), "{path}");
        }
        assert_eq!(caller(&http::Extensions::new()), "an unknown caller");
        assert_eq!(fingerprint(b"abc"), "sha1:a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
