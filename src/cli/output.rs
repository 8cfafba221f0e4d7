//! Printing results: aligned tables for people, JSON for scripts.

use serde::Serialize;

use crate::api::pb::{
    Address, CreateKeyPairResponse, Image, Instance, KeyPair, Snapshot, StateChanges, Subnet, Volume,
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
fn table(header: &[&str], rows: Vec<Vec<String>>) {
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

fn json<T: Serialize>(key: &str, value: T) {
    let document = serde_json::json!({ key: value });
    // Serializing plain generated messages cannot fail.
    println!("{}", serde_json::to_string_pretty(&document).unwrap_or_default());
}

/// Prints images.
pub fn print_images(format: Format, images: Vec<Image>) {
    match format {
        Format::Json => json("Images", images),
        Format::Table => table(
            &["IMAGE ID", "NAME", "STATE", "SIZE", "CMDLINE"],
            images
                .into_iter()
                .map(|i| vec![i.image_id, i.name, i.state, i.size_bytes.to_string(), i.kernel_cmdline])
                .collect(),
        ),
    }
}

/// Prints instances.
pub fn print_instances(format: Format, instances: Vec<Instance>) {
    match format {
        Format::Json => json("Instances", instances),
        Format::Table => table(
            &["INSTANCE ID", "IMAGE ID", "TYPE", "STATE", "PRIVATE IP", "ROOT VOLUME", "REASON"],
            instances
                .into_iter()
                .map(|i| {
                    vec![
                        i.instance_id,
                        i.image_id,
                        i.instance_type,
                        i.state,
                        i.private_ip_address,
                        i.root_volume_id,
                        i.state_reason,
                    ]
                })
                .collect(),
        ),
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
pub fn print_subnets(format: Format, subnets: Vec<Subnet>) {
    match format {
        Format::Json => json("Subnets", subnets),
        Format::Table => table(
            &["SUBNET ID", "CIDR", "GATEWAY", "BRIDGE", "LEASED"],
            subnets
                .into_iter()
                .map(|s| vec![s.subnet_id, s.cidr_block, s.gateway, s.bridge, s.leased_addresses.to_string()])
                .collect(),
        ),
    }
}

/// Prints volumes.
pub fn print_volumes(format: Format, volumes: Vec<Volume>) {
    match format {
        Format::Json => json("Volumes", volumes),
        Format::Table => table(
            &["VOLUME ID", "SIZE", "STATE", "INSTANCE", "FROM", "SERIAL"],
            volumes
                .into_iter()
                .map(|v| {
                    let from = if v.snapshot_id.is_empty() { v.image_id } else { v.snapshot_id };
                    vec![v.volume_id, v.size_bytes.to_string(), v.state, v.instance_id, from, v.device_serial]
                })
                .collect(),
        ),
    }
}

/// Prints snapshots.
pub fn print_snapshots(format: Format, snapshots: Vec<Snapshot>) {
    match format {
        Format::Json => json("Snapshots", snapshots),
        Format::Table => table(
            &["SNAPSHOT ID", "VOLUME ID", "SIZE"],
            snapshots
                .into_iter()
                .map(|s| vec![s.snapshot_id, s.volume_id, s.size_bytes.to_string()])
                .collect(),
        ),
    }
}

/// Prints Elastic IPs.
pub fn print_addresses(format: Format, addresses: Vec<Address>) {
    match format {
        Format::Json => json("Addresses", addresses),
        Format::Table => table(
            &["ALLOCATION ID", "PUBLIC IP", "INSTANCE", "PRIVATE IP"],
            addresses
                .into_iter()
                .map(|a| vec![a.allocation_id, a.public_ip, a.instance_id, a.private_ip_address])
                .collect(),
        ),
    }
}

/// Prints key pairs.
pub fn print_key_pairs(format: Format, key_pairs: Vec<KeyPair>) {
    match format {
        Format::Json => json("KeyPairs", key_pairs),
        Format::Table => table(
            &["KEY NAME", "KEY PAIR ID", "TYPE", "FINGERPRINT"],
            key_pairs
                .into_iter()
                .map(|k| vec![k.key_name, k.key_pair_id, k.key_type, k.key_fingerprint])
                .collect(),
        ),
    }
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
