//! The instance metadata service (IMDSv2) at `169.254.169.254:80`, as EC2 guests expect
//! it: cloud-init, the AWS SDKs and `ec2-metadata` find their instance's identity, key and
//! user data there.
//!
//! It answers each caller only about itself. A caller is the instance leased the source
//! address of the connection on the subnet's bridge the connection came in on (one
//! listener per bridge, bound to it): the VMM drops frames from any other source address
//! or MAC, so a guest cannot pass for another, and nothing off the bridges reaches it.
//!
//! - [`tree`]: the paths and their values;
//! - [`token`]: the session tokens IMDSv2 reads need;
//! - [`server`]: the HTTP listeners (hyper), kept in step with the subnets.
//!
//! Like the controllers to come, it sits beside the daemon and reads through a
//! [`Source`], which the daemon implements and unit tests fake.

pub mod server;
pub mod token;
pub mod tree;

use std::net::Ipv4Addr;

use crate::state::instance::{HttpTokens, MetadataOptions};
use token::{TokenKey, MAX_TTL_SECONDS};
use tree::Node;

pub use crate::net::addr::{METADATA_ADDRESS as ADDRESS, METADATA_PORT as PORT};

/// The request header that asks for a token, with its life in seconds.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// The request header that carries a token.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// Where tokens are asked for (with PUT).
pub const TOKEN_PATH: &str = "/latest/api/token";

/// What the service tells one instance about itself, read afresh for every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceMetadata {
    /// `i-…`.
    pub instance_id: String,
    /// The image it booted.
    pub image_id: String,
    /// Its instance type's name.
    pub instance_type: String,
    /// Its key pair: name and OpenSSH public key.
    pub key: Option<(String, String)>,
    /// Its address on the subnet.
    pub private_ip: Ipv4Addr,
    /// Its interface's MAC address, `02:4e:…`.
    pub mac: String,
    /// The subnet.
    pub subnet_id: String,
    /// The subnet's CIDR block.
    pub subnet_cidr: String,
    /// The Elastic IP associated with its address.
    pub public_ip: Option<Ipv4Addr>,
    /// Its user data (empty: none).
    pub user_data: Vec<u8>,
    /// The host's availability zone.
    pub availability_zone: String,
    /// The host's region.
    pub region: String,
    /// How the service answers it.
    pub options: MetadataOptions,
}

/// One subnet the service listens on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Listening {
    /// The subnet.
    pub subnet_id: String,
    /// Its bridge.
    pub bridge: String,
}

/// Where the service learns about instances: the daemon, or a fake in tests.
pub trait Source: Send + Sync + 'static {
    /// The subnets whose bridges the service listens on.
    fn subnets(&self) -> Result<Vec<Listening>, String>;
    /// A listening socket on `bridge`'s `ADDRESS:PORT`, taking connections from it only.
    fn listen(&self, bridge: &str) -> std::io::Result<std::net::TcpListener>;
    /// The live instance leased `ip` on the subnet, if any.
    fn instance_at(&self, subnet_id: &str, ip: Ipv4Addr) -> Result<Option<InstanceMetadata>, String>;
}

/// One request, as far as the service looks at it.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The token header's value.
    pub token: Option<&'a str>,
    /// The token-TTL header's value.
    pub ttl: Option<&'a str>,
    /// Whether an `X-Forwarded-For` header came with it (a proxy's request).
    pub forwarded: bool,
}

/// The service's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body (plain text).
    pub body: Vec<u8>,
    /// A token's life, sent back in the TTL header.
    pub token_ttl: Option<u64>,
    /// The IP TTL to send this answer with (a token's hop limit); `None`: the host's
    /// default.
    pub hop_limit: Option<u8>,
}

impl Reply {
    /// A status with a line saying why.
    pub(crate) fn status(status: u16, why: &str) -> Self {
        Self { status, body: format!("{why}\n").into_bytes(), token_ttl: None, hop_limit: None }
    }

    /// A 200 with `body`.
    fn ok(body: Vec<u8>) -> Self {
        Self { status: 200, body, token_ttl: None, hop_limit: None }
    }
}

/// Answers `ask` from the instance `caller` (`None`: no live instance holds the
/// connection's source address) at `now` (seconds since the epoch), with EC2's statuses:
/// 403 while the instance's endpoint is disabled or for a proxied token request, 400 for a
/// token request without a valid TTL, 401 for a missing (where required), expired or
/// foreign token, 404 for an unknown path, 405 for other methods.
pub fn answer(ask: &Ask<'_>, caller: Option<&InstanceMetadata>, key: &TokenKey, now: u64) -> Reply {
    let Some(caller) = caller else {
        return Reply::status(403, "Forbidden: no instance holds this address");
    };
    if !caller.options.http_endpoint {
        return Reply::status(403, "Forbidden: the metadata service is disabled for this instance");
    }
    match ask.method {
        "PUT" if ask.path == TOKEN_PATH => {
            if ask.forwarded {
                return Reply::status(403, "Forbidden: a token is not given through a proxy");
            }
            let ttl = ask
                .ttl
                .and_then(|t| t.trim().parse::<u64>().ok())
                .filter(|t| (1..=MAX_TTL_SECONDS).contains(t));
            let Some(ttl) = ttl else {
                return Reply::status(
                    400,
                    &format!("Bad Request: {TTL_HEADER} must be 1 to {MAX_TTL_SECONDS}"),
                );
            };
            Reply {
                token_ttl: Some(ttl),
                hop_limit: Some(caller.options.hop_limit),
                ..Reply::ok(key.issue(&caller.instance_id, ttl, now).into_bytes())
            }
        }
        "GET" | "HEAD" => {
            match ask.token {
                Some(token) => {
                    if let Err(why) = key.check(token, &caller.instance_id, now) {
                        return Reply::status(401, &format!("Unauthorized: {why}"));
                    }
                }
                None if caller.options.http_tokens == HttpTokens::Required => {
                    return Reply::status(401, "Unauthorized: a token is required (PUT /latest/api/token)");
                }
                None => {}
            }
            match tree::lookup(caller, ask.path) {
                Some(Node::Dir(entries)) => Reply::ok(entries.join("\n").into_bytes()),
                Some(Node::Value(body)) => Reply::ok(body),
                None => Reply::status(404, "Not Found"),
            }
        }
        _ => Reply::status(405, "Method Not Allowed"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An instance with everything: key, Elastic IP, user data.
    pub(crate) fn instance() -> InstanceMetadata {
        InstanceMetadata {
            instance_id: "i-0123456789abcdef0".into(),
            image_id: "ami-1".into(),
            instance_type: "t.nano".into(),
            key: Some(("me".into(), "ssh-ed25519 AAAA me".into())),
            private_ip: Ipv4Addr::new(10, 0, 7, 5),
            mac: "02:4e:0a:00:07:05".into(),
            subnet_id: "subnet-1".into(),
            subnet_cidr: "10.0.7.0/24".into(),
            public_ip: Some(Ipv4Addr::new(192, 168, 50, 240)),
            user_data: b"#!/bin/sh\necho hi\n".to_vec(),
            availability_zone: "nuage-1a".into(),
            region: "nuage-1".into(),
            options: MetadataOptions::default(),
        }
    }

    fn get<'a>(path: &'a str, token: Option<&'a str>) -> Ask<'a> {
        Ask { method: "GET", path, token, ttl: None, forwarded: false }
    }

    fn put_token(ttl: Option<&str>) -> Ask<'_> {
        Ask { method: "PUT", path: TOKEN_PATH, token: None, ttl, forwarded: false }
    }

    #[test]
    fn a_token_opens_the_tree_to_its_instance_only() {
        let key = TokenKey::random().unwrap();
        let me = instance();
        let issued = answer(&put_token(Some("60")), Some(&me), &key, 100);
        assert_eq!((issued.status, issued.token_ttl, issued.hop_limit), (200, Some(60), Some(1)));
        let token = String::from_utf8(issued.body).unwrap();
        let read = answer(&get("/latest/meta-data/instance-id", Some(&token)), Some(&me), &key, 120);
        assert_eq!(
            (read.status, read.body.as_slice(), read.hop_limit),
            (200, me.instance_id.as_bytes(), None)
        );
        let head =
            answer(&Ask { method: "HEAD", ..get("/latest/meta-data/", Some(&token)) }, Some(&me), &key, 120);
        assert_eq!(head.status, 200);
        assert_eq!(answer(&get("/latest/meta-data/nope", Some(&token)), Some(&me), &key, 120).status, 404);
        // Another instance presenting it, or anyone after it expired.
        let other = InstanceMetadata { instance_id: "i-0000000000000000f".into(), ..instance() };
        assert_eq!(answer(&get("/latest/meta-data/", Some(&token)), Some(&other), &key, 120).status, 401);
        assert_eq!(answer(&get("/latest/meta-data/", Some(&token)), Some(&me), &key, 160).status, 401);
        assert_eq!(answer(&get("/latest/meta-data/", Some("forged")), Some(&me), &key, 120).status, 401);
    }

    #[test]
    fn ec2s_statuses_for_bad_requests() {
        let key = TokenKey::random().unwrap();
        let me = instance();
        for ttl in [None, Some(""), Some("0"), Some("21601"), Some("-5"), Some("ten")] {
            assert_eq!(answer(&put_token(ttl), Some(&me), &key, 0).status, 400, "{ttl:?}");
        }
        assert_eq!(answer(&put_token(Some("21600")), Some(&me), &key, 0).status, 200);
        let proxied = Ask { forwarded: true, ..put_token(Some("60")) };
        assert_eq!(answer(&proxied, Some(&me), &key, 0).status, 403);
        assert_eq!(
            answer(&get("/latest/meta-data/", None), Some(&me), &key, 0).status,
            401,
            "tokens required"
        );
        for method in ["POST", "DELETE", "PATCH"] {
            assert_eq!(answer(&Ask { method, ..get("/latest/", None) }, Some(&me), &key, 0).status, 405);
        }
        assert_eq!(
            answer(&Ask { method: "PUT", ..get("/latest/meta-data/", None) }, Some(&me), &key, 0).status,
            405
        );
        assert_eq!(answer(&get("/latest/", None), None, &key, 0).status, 403, "no instance at that address");
    }

    #[test]
    fn options_decide_v1_the_endpoint_and_the_hop_limit() {
        let key = TokenKey::random().unwrap();
        let v1 = InstanceMetadata {
            options: MetadataOptions {
                http_tokens: HttpTokens::Optional,
                hop_limit: 3,
                ..Default::default()
            },
            ..instance()
        };
        let plain = answer(&get("/latest/meta-data/local-ipv4", None), Some(&v1), &key, 0);
        assert_eq!((plain.status, plain.body.as_slice()), (200, &b"10.0.7.5"[..]));
        // A bad token is refused even where none is needed.
        assert_eq!(answer(&get("/latest/meta-data/", Some("bad")), Some(&v1), &key, 0).status, 401);
        assert_eq!(answer(&put_token(Some("5")), Some(&v1), &key, 0).hop_limit, Some(3));
        let off = InstanceMetadata {
            options: MetadataOptions { http_endpoint: false, ..v1.options },
            ..instance()
        };
        assert_eq!(answer(&get("/latest/meta-data/", None), Some(&off), &key, 0).status, 403);
        assert_eq!(answer(&put_token(Some("5")), Some(&off), &key, 0).status, 403);
    }
}
