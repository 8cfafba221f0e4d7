//! Printing results: aligned tables for people, JSON for scripts.

use serde::Serialize;

use crate::api::pb::{
    Address, CreateKeyPairResponse, Image, Instance, KeyPair, ModifyInstanceMetadataOptionsResponse,
    SecurityGroup, Snapshot, StateChanges, Subnet, Tag, TagDescription, Volume,
};

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub enum Format {
    /// Aligned columns under a header.
    Table,
    /// One JSON document.
    Json,
}

/// Prints rows under `header`, each column as wide as its widest cell.
pub(super) fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

pub(super) fn json<T: Serialize>(key: &str, value: T) {
    json_page(key, value, "");
}

/// Prints `{key: value}`, with `NextToken` when there is a next page.
fn json_page<T: Serialize>(key: &str, value: T, next_token: &str) {
    let mut document = serde_json::json!({ key: value });
    if !next_token.is_empty() {
        document["NextToken"] = next_token.into();
    }
    // Serializing plain generated messages cannot fail.
    println!("{}", serde_json::to_string_pretty(&document).unwrap_or_default());
}

/// In a table, where the next page starts, on stderr (stdout keeps only rows).
fn table_next_token(next_token: &str) {
    if !next_token.is_empty() {
        eprintln!("NextToken: {next_token}");
    }
}

/// The value of the resource's `Name` tag, as EC2's consoles show it.
fn name_tag(tags: &[Tag]) -> String {
    tags.iter().find(|t| t.key == "Name").map(|t| t.value.clone()).unwrap_or_default()
}

/// Prints one page of a listing: a table, or JSON under `key`.
fn page<T: Serialize>(
    format: Format,
    key: &str,
    items: Vec<T>,
    next_token: &str,
    header: &[&str],
    row: impl Fn(T) -> Vec<String>,
) {
    match format {
        Format::Json => json_page(key, items, next_token),
        Format::Table => {
            table(header, items.into_iter().map(row).collect());
            table_next_token(next_token);
        }
    }
}

/// Prints images.
pub fn print_images(format: Format, images: Vec<Image>, next_token: &str) {
    page(format, "Images", images, next_token, &["IMAGE ID", "NAME", "STATE", "SIZE", "CMDLINE"], |i| {
        vec![i.image_id, i.name, i.state, i.size_bytes.to_string(), i.kernel_cmdline]
    });
}

/// Prints instances.
pub fn print_instances(format: Format, instances: Vec<Instance>, next_token: &str) {
    let header =
        ["INSTANCE ID", "NAME", "IMAGE ID", "TYPE", "STATE", "PRIVATE IP", "GROUPS", "ROOT VOLUME", "REASON"];
    page(format, "Instances", instances, next_token, &header, |i| {
        vec![
            i.instance_id,
            name_tag(&i.tags),
            i.image_id,
            i.instance_type,
            i.state,
            i.private_ip_address,
            i.security_group_ids.join(","),
            i.root_volume_id,
            i.state_reason,
        ]
    });
}

/// Prints an instance's metadata options after a change.
pub fn print_metadata_options(format: Format, changed: ModifyInstanceMetadataOptionsResponse) {
    match format {
        Format::Json => json("InstanceMetadataOptions", changed),
        Format::Table => {
            let options = changed.instance_metadata_options.unwrap_or_default();
            table(
                &["INSTANCE ID", "HTTP TOKENS", "HTTP ENDPOINT", "HOP LIMIT"],
                vec![vec![
                    changed.instance_id,
                    options.http_tokens,
                    options.http_endpoint,
                    options.http_put_response_hop_limit.to_string(),
                ]],
            )
        }
    }
}

/// Prints state changes.
pub fn print_changes(format: Format, changes: StateChanges) {
    match format {
        Format::Json => json("StateChanges", changes.changes),
        Format::Table => table(
            &["INSTANCE ID", "PREVIOUS", "CURRENT"],
            changes
                .changes
                .into_iter()
                .map(|c| vec![c.instance_id, c.previous_state, c.current_state])
                .collect(),
        ),
    }
}

/// Prints subnets.
pub fn print_subnets(format: Format, subnets: Vec<Subnet>, next_token: &str) {
    let header = ["SUBNET ID", "NAME", "CIDR", "GATEWAY", "BRIDGE", "LEASED"];
    page(format, "Subnets", subnets, next_token, &header, |s| {
        vec![
            s.subnet_id,
            name_tag(&s.tags),
            s.cidr_block,
            s.gateway,
            s.bridge,
            s.leased_addresses.to_string(),
        ]
    });
}

/// Prints volumes.
pub fn print_volumes(format: Format, volumes: Vec<Volume>, next_token: &str) {
    let header = ["VOLUME ID", "NAME", "SIZE", "STATE", "INSTANCE", "FROM", "SERIAL"];
    page(format, "Volumes", volumes, next_token, &header, |v| {
        let from = if v.snapshot_id.is_empty() { v.image_id } else { v.snapshot_id };
        let name = name_tag(&v.tags);
        vec![v.volume_id, name, v.size_bytes.to_string(), v.state, v.instance_id, from, v.device_serial]
    });
}

/// Prints snapshots.
pub fn print_snapshots(format: Format, snapshots: Vec<Snapshot>, next_token: &str) {
    page(format, "Snapshots", snapshots, next_token, &["SNAPSHOT ID", "NAME", "VOLUME ID", "SIZE"], |s| {
        vec![s.snapshot_id, name_tag(&s.tags), s.volume_id, s.size_bytes.to_string()]
    });
}

/// Prints Elastic IPs.
pub fn print_addresses(format: Format, addresses: Vec<Address>, next_token: &str) {
    let header = ["ALLOCATION ID", "NAME", "PUBLIC IP", "INSTANCE", "PRIVATE IP"];
    page(format, "Addresses", addresses, next_token, &header, |a| {
        vec![a.allocation_id, name_tag(&a.tags), a.public_ip, a.instance_id, a.private_ip_address]
    });
}

/// Prints security groups, a rule a line in the RULES column's text.
pub fn print_security_groups(format: Format, groups: Vec<SecurityGroup>, next_token: &str) {
    let header = ["GROUP ID", "NAME", "DESCRIPTION", "RULES"];
    page(format, "SecurityGroups", groups, next_token, &header, |g| {
        let rules: Vec<String> = g
            .ip_permissions
            .iter()
            .map(|p| {
                let ports = match (p.from_port, p.to_port) {
                    (-1, -1) => "all".to_owned(),
                    (from, to) if from == to => from.to_string(),
                    (from, to) => format!("{from}-{to}"),
                };
                format!("{} {ports} from {}", p.ip_protocol, p.ip_ranges.join(","))
            })
            .collect();
        vec![g.group_id, g.group_name, g.description, rules.join("; ")]
    });
}

/// Prints key pairs.
pub fn print_key_pairs(format: Format, key_pairs: Vec<KeyPair>, next_token: &str) {
    let header = ["KEY NAME", "KEY PAIR ID", "TYPE", "FINGERPRINT"];
    page(format, "KeyPairs", key_pairs, next_token, &header, |k| {
        vec![k.key_name, k.key_pair_id, k.key_type, k.key_fingerprint]
    });
}

/// Prints tags.
pub fn print_tags(format: Format, tags: Vec<TagDescription>, next_token: &str) {
    page(format, "Tags", tags, next_token, &["RESOURCE ID", "RESOURCE TYPE", "KEY", "VALUE"], |t| {
        vec![t.resource_id, t.resource_type, t.key, t.value]
    });
}

/// Prints a new key pair: as a table, the private key alone on stdout (so it can be
/// redirected to a file) and its name and fingerprint on stderr.
pub fn print_created_key_pair(format: Format, created: CreateKeyPairResponse) {
    match format {
        Format::Json => {
            // Serializing plain generated messages cannot fail.
            println!("{}", serde_json::to_string_pretty(&created).unwrap_or_default());
        }
        Format::Table => {
            if let Some(key) = &created.key_pair {
                eprintln!("{} {} {}", key.key_name, key.key_pair_id, key.key_fingerprint);
            }
            print!("{}", created.key_material);
        }
    }
}
