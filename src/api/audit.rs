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
        let certificate = certificate_fingerprint(extensions);
        return format!("{address} certificate {}", certificate.unwrap_or_else(|| "none".to_owned()));
    }
    "an unknown caller".to_owned()
}

/// The fingerprint of the client certificate a TLS caller presented.
pub fn certificate_fingerprint(extensions: &http::Extensions) -> Option<String> {
    let tls = extensions.get::<TlsConnectInfo<TcpConnectInfo>>()?;
    tls.peer_certs().and_then(|certs| certs.first().map(|c| fingerprint(c.as_ref())))
}

/// A certificate's SHA-1 fingerprint as the audit trail writes it, from that form or the
/// one `openssl x509 -noout -fingerprint -sha1` prints (`SHA1 Fingerprint=A9:99:…`).
pub fn parse_fingerprint(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    let hex = trimmed
        .strip_prefix("sha1:")
        .or_else(|| trimmed.strip_prefix("SHA1 Fingerprint="))
        .or_else(|| trimmed.strip_prefix("sha1 Fingerprint="))
        .unwrap_or(trimmed)
        .replace(':', "")
        .to_ascii_lowercase();
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not a SHA-1 certificate fingerprint (sha1: and 40 hex digits)"));
    }
    Ok(format!("sha1:{hex}"))
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

    #[test]
    fn fingerprints_are_read_in_both_forms() {
        let audit = "sha1:a9993e364706816aba3e25717850c26c9cd0d89d";
        assert_eq!(parse_fingerprint(audit).unwrap(), audit);
        let openssl = "SHA1 Fingerprint=A9:99:3E:36:47:06:81:6A:BA:3E:25:71:78:50:C2:6C:9C:D0:D8:9D\n";
        assert_eq!(parse_fingerprint(openssl).unwrap(), audit);
        for bad in [
            "",
            "sha1:a999",
            "sha256:a9993e364706816aba3e25717850c26c9cd0d89d",
            "sha1:zz993e364706816aba3e25717850c26c9cd0d89d",
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad:?}");
        }
    }
}
