//! The metadata tree as EC2 lays it out under `/latest/`: plain-text values, directories
//! listed one entry a line with subdirectories ending in `/`.

use super::InstanceMetadata;

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory's entries.
    Dir(Vec<String>),
    /// A value.
    Value(Vec<u8>),
}

fn dir(entries: &[&str]) -> Option<Node> {
    Some(Node::Dir(entries.iter().map(|e| (*e).to_owned()).collect()))
}

fn value(text: impl Into<String>) -> Option<Node> {
    Some(Node::Value(text.into().into_bytes()))
}

/// The node at `path` (an HTTP path, e.g. `/latest/meta-data/instance-id`), if any. A
/// directory answers with and without its trailing slash, as EC2's does.
pub fn lookup(m: &InstanceMetadata, path: &str) -> Option<Node> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [] => dir(&["latest"]),
        ["latest"] if m.user_data.is_empty() => dir(&["dynamic/", "meta-data/"]),
        ["latest"] => dir(&["dynamic/", "meta-data/", "user-data"]),
        ["latest", "user-data"] if !m.user_data.is_empty() => Some(Node::Value(m.user_data.clone())),
        ["latest", "meta-data", rest @ ..] => meta_data(m, rest),
        ["latest", "dynamic"] => dir(&["instance-identity/"]),
        ["latest", "dynamic", "instance-identity"] => dir(&["document"]),
        ["latest", "dynamic", "instance-identity", "document"] => value(identity_document(m)),
        _ => None,
    }
}

fn meta_data(m: &InstanceMetadata, parts: &[&str]) -> Option<Node> {
    let mac = m.mac.as_str();
    match parts {
        [] => {
            let mut entries = vec![
                "ami-id",
                "hostname",
                "instance-id",
                "instance-type",
                "local-hostname",
                "local-ipv4",
                "mac",
                "network/",
                "placement/",
            ];
            if m.public_ip.is_some() {
                entries.push("public-ipv4");
            }
            if m.key.is_some() {
                entries.push("public-keys/");
            }
            dir(&entries)
        }
        ["ami-id"] => value(&m.image_id),
        ["instance-id"] => value(&m.instance_id),
        ["instance-type"] => value(&m.instance_type),
        ["hostname"] | ["local-hostname"] => value(&m.instance_id),
        ["local-ipv4"] => value(m.private_ip.to_string()),
        ["mac"] => value(mac),
        ["public-ipv4"] => m.public_ip.and_then(|ip| value(ip.to_string())),
        ["placement"] => dir(&["availability-zone", "region"]),
        ["placement", "availability-zone"] => value(&m.availability_zone),
        ["placement", "region"] => value(&m.region),
        ["public-keys"] => m.key.as_ref().and_then(|(name, _)| value(format!("0={name}"))),
        ["public-keys", "0"] => m.key.as_ref().and_then(|_| dir(&["openssh-key"])),
        ["public-keys", "0", "openssh-key"] => m.key.as_ref().and_then(|(_, key)| value(key)),
        ["network"] => dir(&["interfaces/"]),
        ["network", "interfaces"] => dir(&["macs/"]),
        ["network", "interfaces", "macs"] => Some(Node::Dir(vec![format!("{mac}/")])),
        ["network", "interfaces", "macs", asked, rest @ ..] if *asked == mac => interface(m, rest),
        _ => None,
    }
}

fn interface(m: &InstanceMetadata, parts: &[&str]) -> Option<Node> {
    match parts {
        [] => {
            let mut entries = vec![
                "device-number",
                "local-hostname",
                "local-ipv4s",
                "mac",
                "subnet-id",
                "subnet-ipv4-cidr-block",
            ];
            if m.public_ip.is_some() {
                entries.insert(4, "public-ipv4s");
            }
            dir(&entries)
        }
        ["device-number"] => value("0"),
        ["local-hostname"] => value(&m.instance_id),
        ["local-ipv4s"] => value(m.private_ip.to_string()),
        ["mac"] => value(&m.mac),
        ["public-ipv4s"] => m.public_ip.and_then(|ip| value(ip.to_string())),
        ["subnet-id"] => value(&m.subnet_id),
        ["subnet-ipv4-cidr-block"] => value(&m.subnet_cidr),
        _ => None,
    }
}

/// `dynamic/instance-identity/document`: the instance's identity as JSON.
fn identity_document(m: &InstanceMetadata) -> String {
    let document = serde_json::json!({
        "architecture": "x86_64",
        "availabilityZone": m.availability_zone,
        "imageId": m.image_id,
        "instanceId": m.instance_id,
        "instanceType": m.instance_type,
        "privateIp": m.private_ip.to_string(),
        "region": m.region,
        "version": "2017-09-30",
    });
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::tests::instance;
    use super::*;

    fn text(m: &InstanceMetadata, path: &str) -> String {
        match lookup(m, path) {
            Some(Node::Value(bytes)) => String::from_utf8(bytes).unwrap(),
            Some(Node::Dir(entries)) => entries.join("\n"),
            None => panic!("{path}: not found"),
        }
    }

    #[test]
    fn paths_answer_as_ec2_names_them() {
        let m = instance();
        assert_eq!(text(&m, "/"), "latest");
        assert_eq!(text(&m, "/latest/"), "dynamic/\nmeta-data/\nuser-data");
        assert_eq!(text(&m, "/latest/meta-data/instance-id"), "i-0123456789abcdef0");
        assert_eq!(text(&m, "/latest/meta-data/ami-id"), "ami-1");
        assert_eq!(text(&m, "/latest/meta-data/local-ipv4"), "10.0.7.5");
        assert_eq!(text(&m, "/latest/meta-data/public-ipv4"), "192.168.50.240");
        assert_eq!(text(&m, "/latest/meta-data/placement/availability-zone"), "nuage-1a");
        assert_eq!(text(&m, "/latest/meta-data/public-keys"), "0=me");
        assert_eq!(text(&m, "/latest/meta-data/public-keys/0/"), "openssh-key");
        assert_eq!(text(&m, "/latest/meta-data/public-keys/0/openssh-key"), "ssh-ed25519 AAAA me");
        assert_eq!(text(&m, "/latest/meta-data/network/interfaces/macs/"), "02:4e:0a:00:07:05/");
        let mac = "/latest/meta-data/network/interfaces/macs/02:4e:0a:00:07:05";
        assert_eq!(text(&m, &format!("{mac}/subnet-ipv4-cidr-block")), "10.0.7.0/24");
        assert_eq!(text(&m, &format!("{mac}/public-ipv4s")), "192.168.50.240");
        assert!(text(&m, &format!("{mac}/")).contains("local-ipv4s\nmac\npublic-ipv4s"));
        assert_eq!(text(&m, "/latest/user-data"), "#!/bin/sh\necho hi\n");
        let document: serde_json::Value =
            serde_json::from_str(&text(&m, "/latest/dynamic/instance-identity/document")).unwrap();
        assert_eq!(document["instanceId"], "i-0123456789abcdef0");
        assert_eq!(document["privateIp"], "10.0.7.5");
        let listing = text(&m, "/latest/meta-data/");
        assert!(listing.lines().all(|l| !l.is_empty()));
        assert!(listing.contains("network/\nplacement/\npublic-ipv4\npublic-keys/"), "{listing}");
    }

    #[test]
    fn what_an_instance_lacks_is_not_there() {
        let m = InstanceMetadata { public_ip: None, key: None, user_data: Vec::new(), ..instance() };
        for path in [
            "/latest/user-data",
            "/latest/meta-data/public-ipv4",
            "/latest/meta-data/public-keys",
            "/latest/meta-data/public-keys/0/openssh-key",
            "/latest/meta-data/network/interfaces/macs/02:4e:0a:00:07:06/mac",
            "/latest/meta-data/nothing",
            "/latest/api/token",
            "/2009-04-04/meta-data/",
            "/latest/meta-data/instance-id/more",
        ] {
            assert_eq!(lookup(&m, path), None, "{path}");
        }
        assert_eq!(text(&m, "/latest"), "dynamic/\nmeta-data/");
        assert!(!text(&m, "/latest/meta-data").contains("public"));
    }
}
