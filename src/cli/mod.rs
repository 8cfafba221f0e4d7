//! `nuage`: the command-line client. Subcommands mirror the API with the names `aws ec2`
//! users know; output is a table for people or JSON (`--output json`) for scripts.

mod autoscaling;
mod doctor;
mod elasticbeanstalk;
mod elbv2;
mod launch_templates;
mod output;

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::api::pb::addresses_client::AddressesClient;
use crate::api::pb::images_client::ImagesClient;
use crate::api::pb::instance_event::Event;
use crate::api::pb::instances_client::InstancesClient;
use crate::api::pb::key_pairs_client::KeyPairsClient;
use crate::api::pb::security_groups_client::SecurityGroupsClient;
use crate::api::pb::snapshots_client::SnapshotsClient;
use crate::api::pb::subnets_client::SubnetsClient;
use crate::api::pb::tags_client::TagsClient;
use crate::api::pb::volumes_client::VolumesClient;
use crate::api::pb::{
    AllocateAddressRequest, AllocationId, AssociateAddressRequest, AttachVolumeRequest, CreateKeyPairRequest,
    CreateSubnetRequest, CreateVolumeRequest, DeleteKeyPairRequest, DeleteSnapshotRequest,
    DeleteSubnetRequest, DeregisterImageRequest, DescribeAddressesRequest, DescribeImagesRequest,
    DescribeInstancesRequest, DescribeKeyPairsRequest, DescribeSnapshotsRequest, DescribeSubnetsRequest,
    DescribeVolumesRequest, FileChunk, Filter, GetConsoleOutputRequest, ImportKeyPairRequest, InstanceIds,
    LaunchVolume, ModifyVolumeRequest, RegisterImageRequest, RunInstancesRequest, VolumeId,
    WatchInstanceRequest,
};
use crate::api::pb::{
    CreateSecurityGroupRequest, CreateSnapshotRequest, CreateTagsRequest, DeleteSecurityGroupRequest,
    DeleteTagsRequest, DescribeSecurityGroupsRequest, DescribeTagsRequest, IngressRequest, IpPermission,
    MetadataOptions, ModifyInstanceAttributeRequest, ModifyInstanceMetadataOptionsRequest, Tag, TagKey,
    TagSpecification,
};
use crate::api::server::{connect, connect_tls};
use output::{
    print_addresses, print_changes, print_created_key_pair, print_images, print_instances, print_key_pairs,
    print_metadata_options, print_security_groups, print_snapshots, print_subnets, print_tags, print_volumes,
    Format,
};

/// Bytes in the GiB that `--size` counts in, as EC2's does.
pub(crate) const GIB: u64 = 1 << 30;

/// The nuage command-line client.
#[derive(Debug, Parser)]
#[command(name = "nuage", version, about = "EC2-style commands for a nuaged host")]
pub struct Cli {
    /// The daemon's API: its Unix socket, or https://HOST:PORT (with the --tls-* files).
    #[arg(long, global = true, env = "NUAGE_ENDPOINT", default_value = "/run/nuage/nuaged.sock")]
    endpoint: String,
    /// For an https endpoint: the CA (PEM) that signed the daemon's certificate.
    #[arg(long, global = true, env = "NUAGE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// For an https endpoint: this client's certificate (PEM).
    #[arg(long, global = true, env = "NUAGE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// For an https endpoint: this client's private key (PEM).
    #[arg(long, global = true, env = "NUAGE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// How to print results.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Auto Scaling groups and their activities (`aws autoscaling`).
    Autoscaling {
        #[command(subcommand)]
        command: autoscaling::AutoScaling,
    },
    /// Applications and their versions (`aws elasticbeanstalk`).
    Elasticbeanstalk {
        #[command(subcommand)]
        command: elasticbeanstalk::ElasticBeanstalk,
    },
    /// Load balancers, target groups, targets and listeners (`aws elbv2`).
    Elbv2 {
        #[command(subcommand)]
        command: elbv2::Elbv2,
    },
    #[command(flatten)]
    LaunchTemplates(launch_templates::TemplateCommand),
    /// Checks this host: KVM (and whether it is hardware-backed), tun, bridge, iproute2,
    /// nftables, free disk, the daemon. Exits 1 if something nuage needs is missing.
    Doctor {
        /// The daemon's state directory, whose free space is checked.
        #[arg(long, default_value = "/var/lib/nuage")]
        state_dir: PathBuf,
    },
    /// Registers a disk and its kernel as an image.
    RegisterImage {
        /// The root disk: a local file, which is uploaded, or the name of a file the
        /// operator put in the daemon's import directory.
        #[arg(long)]
        disk: PathBuf,
        /// raw or qcow2.
        #[arg(long, default_value = "raw")]
        disk_format: String,
        /// The kernel (bzImage or ELF vmlinux), given as the disk is. Without one, the
        /// disk's own /boot gives the kernel and initrd (a distribution's cloud disk).
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// The initrd, given as the disk is (with --kernel).
        #[arg(long, requires = "kernel")]
        initrd: Option<PathBuf>,
        /// A name.
        #[arg(long, default_value = "image")]
        name: String,
        /// What the image is, for people (up to 255 characters).
        #[arg(long, default_value = "")]
        description: String,
        /// The kernel command line instances boot with (without one, a disk with its own
        /// /boot boots root= the partition holding it).
        #[arg(long, default_value = "")]
        kernel_cmdline: String,
        #[command(flatten)]
        tagging: TagArgs,
    },
    /// Lists images.
    DescribeImages {
        /// Only these.
        #[arg(long = "image-ids", num_args = 1..)]
        image_ids: Vec<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Removes an image.
    DeregisterImage {
        /// The image.
        #[arg(long)]
        image_id: String,
    },
    /// Launches instances of an image.
    RunInstances {
        /// The image (or the launch template's).
        #[arg(long, default_value = "", required_unless_present = "launch_template")]
        image_id: String,
        /// LaunchTemplateId=lt-…|LaunchTemplateName=NAME[,Version=N|$Latest|$Default]: launch
        /// what the template says; the other options given replace its values.
        #[arg(long, value_parser = launch_templates::parse_specification)]
        launch_template: Option<crate::api::pb::LaunchTemplateSpecification>,
        /// The instance type (default: the daemon's first).
        #[arg(long, default_value = "")]
        instance_type: String,
        /// How many.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Give each a network interface on this subnet.
        #[arg(long, default_value = "")]
        subnet_id: String,
        /// The interface's address (one instance only; default: the next free one).
        #[arg(long, default_value = "")]
        private_ip_address: String,
        /// The key pair whose public key the instances get.
        #[arg(long, default_value = "")]
        key_name: String,
        /// User data for cloud-init: text, or file://PATH.
        #[arg(long)]
        user_data: Option<String>,
        /// A data volume for each instance: size=GIB and/or snapshot-id=snap-…, and
        /// keep=true to keep it when the instance is terminated (repeatable).
        #[arg(long = "volume", value_parser = parse_launch_volume)]
        volumes: Vec<LaunchVolume>,
        /// The security groups of each interface (default: the `default` group).
        #[arg(long = "security-group-ids", num_args = 1..)]
        security_group_ids: Vec<String>,
        /// How the metadata service at 169.254.169.254 answers them:
        /// HttpTokens=required|optional,HttpEndpoint=enabled|disabled,HttpPutResponseHopLimit=N
        /// (any of the three; default required, enabled, 1).
        #[arg(long, value_parser = parse_metadata_options)]
        metadata_options: Option<MetadataOptions>,
        #[command(flatten)]
        tagging: TagArgs,
    },
    /// Changes how the metadata service answers an instance, at once (also while it runs).
    ModifyInstanceMetadataOptions {
        /// The instance.
        #[arg(long)]
        instance_id: String,
        /// required (IMDSv2 only) or optional (token-less reads too).
        #[arg(long, default_value = "")]
        http_tokens: String,
        /// enabled or disabled.
        #[arg(long, default_value = "")]
        http_endpoint: String,
        /// The IP TTL of a token's answer, 1 to 64.
        #[arg(long, default_value_t = 0)]
        http_put_response_hop_limit: u32,
    },
    /// Puts an instance's interface in exactly these security groups.
    ModifyInstanceAttribute {
        /// The instance.
        #[arg(long)]
        instance_id: String,
        /// Its security groups from now on (1 to 5).
        #[arg(long = "groups", num_args = 1.., required = true)]
        groups: Vec<String>,
    },
    /// Lists instances.
    DescribeInstances {
        /// Only these.
        #[arg(long = "instance-ids", num_args = 1..)]
        instance_ids: Vec<String>,
        /// Only those in these states.
        #[arg(long = "states", num_args = 1..)]
        states: Vec<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Stops instances.
    StopInstances {
        /// The instances.
        #[arg(long = "instance-ids", num_args = 1.., required = true)]
        instance_ids: Vec<String>,
        /// Stop the VMMs at once instead of asking the guests to shut down.
        #[arg(long)]
        force: bool,
    },
    /// Reboots running instances (the guest is asked to shut down, then started again).
    RebootInstances {
        /// The instances.
        #[arg(long = "instance-ids", num_args = 1.., required = true)]
        instance_ids: Vec<String>,
    },
    /// Starts stopped instances.
    StartInstances {
        /// The instances.
        #[arg(long = "instance-ids", num_args = 1.., required = true)]
        instance_ids: Vec<String>,
    },
    /// Terminates instances.
    TerminateInstances {
        /// The instances.
        #[arg(long = "instance-ids", num_args = 1.., required = true)]
        instance_ids: Vec<String>,
    },
    /// Creates a subnet and its bridge.
    CreateSubnet {
        /// Its network, e.g. 10.0.7.0/24.
        #[arg(long)]
        cidr_block: String,
        /// The host's address on it (default: the first host address).
        #[arg(long, default_value = "")]
        gateway: String,
        #[command(flatten)]
        tagging: TagArgs,
    },
    /// Lists subnets.
    DescribeSubnets {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Deletes a subnet no instance has an address in.
    DeleteSubnet {
        /// The subnet.
        #[arg(long)]
        subnet_id: String,
    },
    /// Creates a volume: empty, or from a snapshot or an image.
    CreateVolume {
        /// Size in GiB (default: that of the snapshot or image).
        #[arg(long)]
        size: Option<u64>,
        /// From this snapshot.
        #[arg(long, default_value = "")]
        snapshot_id: String,
        /// From this image's disk.
        #[arg(long, default_value = "")]
        image_id: String,
        #[command(flatten)]
        tagging: TagArgs,
    },
    /// Lists volumes.
    DescribeVolumes {
        /// Only these.
        #[arg(long = "volume-ids", num_args = 1..)]
        volume_ids: Vec<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Attaches a volume to a stopped instance (a disk from its next start).
    AttachVolume {
        /// The volume.
        #[arg(long)]
        volume_id: String,
        /// The instance.
        #[arg(long)]
        instance_id: String,
    },
    /// Detaches a data volume from a stopped instance.
    DetachVolume {
        /// The volume.
        #[arg(long)]
        volume_id: String,
    },
    /// Deletes a detached volume.
    DeleteVolume {
        /// The volume.
        #[arg(long)]
        volume_id: String,
    },
    /// Grows a detached volume.
    ModifyVolume {
        /// The volume.
        #[arg(long)]
        volume_id: String,
        /// The new size in GiB.
        #[arg(long)]
        size: u64,
    },
    /// Snapshots a volume, also while its instance runs.
    CreateSnapshot {
        /// The volume.
        #[arg(long)]
        volume_id: String,
        #[command(flatten)]
        tagging: TagArgs,
    },
    /// Lists snapshots.
    DescribeSnapshots {
        /// Only these.
        #[arg(long = "snapshot-ids", num_args = 1..)]
        snapshot_ids: Vec<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Deletes a snapshot nothing depends on.
    DeleteSnapshot {
        /// The snapshot.
        #[arg(long)]
        snapshot_id: String,
    },
    /// Allocates an Elastic IP from the host's pool.
    AllocateAddress {
        #[command(flatten)]
        tagging: TagArgs,
    },
    /// Lists Elastic IPs.
    DescribeAddresses {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Points an Elastic IP at an instance on a subnet.
    AssociateAddress {
        /// The Elastic IP.
        #[arg(long)]
        allocation_id: String,
        /// The instance.
        #[arg(long)]
        instance_id: String,
    },
    /// Detaches an Elastic IP from its instance.
    DisassociateAddress {
        /// The Elastic IP.
        #[arg(long)]
        allocation_id: String,
    },
    /// Returns a disassociated Elastic IP to the pool.
    ReleaseAddress {
        /// The Elastic IP.
        #[arg(long)]
        allocation_id: String,
    },
    /// Makes a security group without rules.
    CreateSecurityGroup {
        /// Its name, unique on the host.
        #[arg(long)]
        group_name: String,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        tagging: TagArgs,
    },
    /// Lists security groups and their rules.
    DescribeSecurityGroups {
        /// Only these.
        #[arg(long = "group-ids", num_args = 1..)]
        group_ids: Vec<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Lets traffic in to a security group's instances.
    AuthorizeSecurityGroupIngress {
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// Stops letting traffic in that a rule let in.
    RevokeSecurityGroupIngress {
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// Deletes a security group no instance is in.
    DeleteSecurityGroup {
        /// The group.
        #[arg(long)]
        group_id: String,
    },
    /// Makes an SSH key pair and prints its private key, which nuage does not keep
    /// (`nuage create-key-pair --key-name k > k.pem`).
    CreateKeyPair {
        /// Its name.
        #[arg(long)]
        key_name: String,
        /// rsa or ed25519.
        #[arg(long, default_value = "rsa")]
        key_type: String,
        #[command(flatten)]
        tagging: TagArgs,
    },
    /// Records an OpenSSH public key as a key pair.
    ImportKeyPair {
        /// Its name.
        #[arg(long)]
        key_name: String,
        /// The public key line, or file://PATH (e.g. file://~/.ssh/id_ed25519.pub).
        #[arg(long)]
        public_key_material: String,
        #[command(flatten)]
        tagging: TagArgs,
    },
    /// Lists key pairs.
    DescribeKeyPairs {
        /// Only these.
        #[arg(long = "key-names", num_args = 1..)]
        key_names: Vec<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Deletes a key pair (instances keep the key they got).
    DeleteKeyPair {
        /// Its name.
        #[arg(long)]
        key_name: String,
    },
    /// Puts tags on resources (any kind: i-, ami-, vol-, snap-, subnet-, eipalloc-, key-).
    CreateTags {
        /// The resources.
        #[arg(long = "resources", num_args = 1.., required = true)]
        resources: Vec<String>,
        /// The tags: Key=KEY,Value=VALUE (repeatable, or several after one --tags).
        #[arg(long = "tags", num_args = 1.., required = true, value_parser = parse_tag)]
        tags: Vec<Tag>,
    },
    /// Removes tags from resources.
    DeleteTags {
        /// The resources.
        #[arg(long = "resources", num_args = 1.., required = true)]
        resources: Vec<String>,
        /// The tags: Key=KEY (whatever its value) or Key=KEY,Value=VALUE.
        #[arg(long = "tags", num_args = 1.., required = true, value_parser = parse_tag_key)]
        tags: Vec<TagKey>,
    },
    /// Lists tags (filters: resource-id, resource-type, key, value).
    DescribeTags {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Prints a shell completion script (`nuage completions bash > /etc/bash_completion.d/nuage`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Prints an instance's console output.
    GetConsoleOutput {
        /// The instance.
        #[arg(long)]
        instance_id: String,
        /// Keep printing as the guest writes, with state changes on stderr, until the
        /// instance is terminated.
        #[arg(long)]
        follow: bool,
    },
}

/// What every describe command takes: filters and a page.
#[derive(Debug, clap::Args)]
struct ListArgs {
    /// EC2-style filters, all of which must match: Name=NAME,Values=V1,V2 (the
    /// resource's own names, tag:KEY and tag-key; * and ? are wildcards).
    #[arg(long = "filters", num_args = 1.., value_parser = parse_filter)]
    filters: Vec<Filter>,
    /// At most this many (5 to 1000), with a NextToken for the rest.
    #[arg(long, default_value_t = 0)]
    max_results: u32,
    /// The NextToken of the previous page.
    #[arg(long, default_value = "")]
    next_token: String,
}

/// What every create command takes: tags for what it makes.
#[derive(Debug, clap::Args)]
struct TagArgs {
    /// Tags for what the call makes, the aws CLI's shorthand:
    /// ResourceType=TYPE,Tags=[{Key=KEY,Value=VALUE},...] (repeatable).
    #[arg(long = "tag-specifications", num_args = 1.., value_parser = parse_tag_specification)]
    tag_specifications: Vec<TagSpecification>,
}

/// Parses `Key=KEY,Value=VALUE` (a missing Value is empty).
fn parse_tag(text: &str) -> Result<Tag, String> {
    let TagKey { key, value } = parse_tag_key(text)?;
    Ok(Tag { key, value: value.unwrap_or_default() })
}

/// Parses `Key=KEY` or `Key=KEY,Value=VALUE`.
fn parse_tag_key(text: &str) -> Result<TagKey, String> {
    let bad = || format!("{text:?}: expected Key=KEY[,Value=VALUE]");
    let rest = text.strip_prefix("Key=").ok_or_else(bad)?;
    Ok(match rest.split_once(",Value=") {
        Some((key, value)) => TagKey { key: key.to_owned(), value: Some(value.to_owned()) },
        None => TagKey { key: rest.to_owned(), value: None },
    })
}

/// Parses `ResourceType=TYPE,Tags=[{Key=KEY,Value=VALUE},...]`.
fn parse_tag_specification(text: &str) -> Result<TagSpecification, String> {
    let bad = || format!("{text:?}: expected ResourceType=TYPE,Tags=[{{Key=KEY,Value=VALUE}},...]");
    let rest = text.strip_prefix("ResourceType=").ok_or_else(bad)?;
    let (resource_type, tags) = rest.split_once(",Tags=[").ok_or_else(bad)?;
    let tags = tags.strip_suffix(']').ok_or_else(bad)?;
    let tags = tags
        .split("},")
        .map(|tag| tag.trim_start_matches('{').trim_end_matches('}'))
        .filter(|tag| !tag.is_empty())
        .map(parse_tag)
        .collect::<Result<_, _>>()?;
    Ok(TagSpecification { resource_type: resource_type.to_owned(), tags })
}

/// Parses `--filters Name=NAME,Values=V1,V2`, the aws CLI's shorthand.
fn parse_filter(text: &str) -> Result<Filter, String> {
    let bad = || format!("{text:?}: expected Name=NAME,Values=VALUE[,VALUE...]");
    let rest = text.strip_prefix("Name=").ok_or_else(bad)?;
    let (name, values) = rest.split_once(",Values=").ok_or_else(bad)?;
    Ok(Filter { name: name.to_owned(), values: values.split(',').map(str::to_owned).collect() })
}

/// One ingress rule, as `aws ec2 authorize-security-group-ingress` takes it.
#[derive(Debug, clap::Args)]
struct RuleArgs {
    /// The group.
    #[arg(long)]
    group_id: String,
    /// tcp, udp, icmp or -1 (every protocol).
    #[arg(long, default_value = "tcp", allow_hyphen_values = true)]
    protocol: String,
    /// A port or a range (`8000-8010`); default: every port.
    #[arg(long, value_parser = parse_ports)]
    port: Option<(i32, i32)>,
    /// Where the traffic may come from (repeatable).
    #[arg(long = "cidr", required = true)]
    cidrs: Vec<String>,
}

impl RuleArgs {
    fn request(self) -> IngressRequest {
        let (from_port, to_port) = self.port.unwrap_or((-1, -1));
        let permission =
            IpPermission { ip_protocol: self.protocol, from_port, to_port, ip_ranges: self.cidrs };
        IngressRequest { group_id: self.group_id, ip_permissions: vec![permission] }
    }
}

/// Parses `--port 22` or `--port 8000-8010`.
fn parse_ports(text: &str) -> Result<(i32, i32), String> {
    let number = |t: &str| {
        t.parse::<u16>().map(i32::from).map_err(|_| format!("{text:?}: expected PORT or FIRST-LAST"))
    };
    match text.split_once('-') {
        Some((first, last)) => Ok((number(first)?, number(last)?)),
        None => number(text).map(|port| (port, port)),
    }
}

/// Parses `--metadata-options HttpTokens=…,HttpEndpoint=…,HttpPutResponseHopLimit=N` (any
/// of the three); the daemon checks the values.
fn parse_metadata_options(text: &str) -> Result<MetadataOptions, String> {
    let mut options = MetadataOptions::default();
    for item in text.split(',') {
        let bad = || {
            format!("{item:?}: expected HttpTokens=required|optional, HttpEndpoint=enabled|disabled or HttpPutResponseHopLimit=N")
        };
        match item.split_once('=').ok_or_else(bad)? {
            ("HttpTokens", tokens) => options.http_tokens = tokens.to_owned(),
            ("HttpEndpoint", endpoint) => options.http_endpoint = endpoint.to_owned(),
            ("HttpPutResponseHopLimit", limit) => {
                options.http_put_response_hop_limit = limit.parse().map_err(|_| bad())?
            }
            _ => return Err(bad()),
        }
    }
    Ok(options)
}

/// Parses `--volume size=GIB,snapshot-id=snap-…,keep=true` (any of the three).
fn parse_launch_volume(text: &str) -> Result<LaunchVolume, String> {
    let mut volume = LaunchVolume::default();
    for item in text.split(',') {
        let bad = || format!("{item:?}: expected size=GIB, snapshot-id=ID or keep=true|false");
        match item.split_once('=').ok_or_else(bad)? {
            ("size", gib) => {
                let gib: u64 = gib.parse().map_err(|_| bad())?;
                volume.size_bytes = gib.checked_mul(GIB).ok_or_else(bad)?;
            }
            ("snapshot-id", id) => volume.snapshot_id = id.to_owned(),
            ("keep", keep) => volume.keep_on_termination = keep.parse().map_err(|_| bad())?,
            _ => return Err(bad()),
        }
    }
    Ok(volume)
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
struct ProgressBar {
    what: &'static str,
    drawn: bool,
}

impl ProgressBar {
    fn new(what: &'static str) -> Self {
        Self { what, drawn: false }
    }

    fn show(&mut self, done: u64, total: u64) {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() || total == 0 {
            return;
        }
        const WIDTH: u64 = 30;
        let filled = (done.min(total) * WIDTH / total) as usize;
        eprint!(
            "\r{}: [{}{}] {:3}% {}/{} MiB",
            self.what,
            "#".repeat(filled),
            " ".repeat(WIDTH as usize - filled),
            done.min(total) * 100 / total,
            done >> 20,
            total >> 20
        );
        self.drawn = true;
    }

    fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

/// The text of an argument given as text or as `file://PATH` (`fileb://` too, as the aws
/// CLI spells binary files); `~/` at the start of PATH is the home directory.
pub(crate) fn text_or_file(value: &str) -> anyhow::Result<Vec<u8>> {
    let Some(path) = value.strip_prefix("file://").or_else(|| value.strip_prefix("fileb://")) else {
        return Ok(value.as_bytes().to_vec());
    };
    let path = match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    };
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// Bytes per upload message (the API takes messages up to 4 MiB).
const UPLOAD_CHUNK: usize = 1 << 20;

/// The name in the daemon's import directory of an image file given as `path`: a local
/// regular file is uploaded (with a progress bar); anything else is taken as the name of
/// a file the operator put in the import directory.
async fn image_file(
    images: &mut ImagesClient<tonic::transport::Channel>,
    path: &std::path::Path,
    what: &'static str,
) -> anyhow::Result<String> {
    let name =
        || path.to_str().map(str::to_owned).with_context(|| format!("{} is not UTF-8", path.display()));
    let file = match std::fs::File::open(path) {
        Ok(file) if file.metadata().is_ok_and(|m| m.is_file()) => file,
        _ => return name(),
    };
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (chunks, stream) = tokio::sync::mpsc::channel(4);
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Read;
        let mut file = file;
        let mut bar = ProgressBar::new(what);
        let mut sent = 0u64;
        loop {
            let mut data = vec![0u8; UPLOAD_CHUNK];
            let n = file.read(&mut data)?;
            if n == 0 {
                bar.finish();
                return Ok(());
            }
            data.truncate(n);
            sent += n as u64;
            bar.show(sent, total);
            if chunks.blocking_send(FileChunk { data }).is_err() {
                // The daemon refused the upload; its answer says why.
                return Ok(());
            }
        }
    });
    let uploaded = images.upload_image_file(tokio_stream::wrappers::ReceiverStream::new(stream)).await;
    reader.await.context("reading the file")?.with_context(|| format!("reading {}", path.display()))?;
    Ok(uploaded?.into_inner().name)
}

impl Cli {
    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<()> {
        if let Command::Doctor { state_dir } = &self.command {
            if !doctor::run(std::path::Path::new(&self.endpoint), state_dir) {
                anyhow::bail!("this host lacks what nuage needs (see FAIL above)");
            }
            return Ok(());
        }
        if let Command::Completions { shell } = self.command {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "nuage", &mut std::io::stdout());
            return Ok(());
        }
        let channel = if self.endpoint.starts_with("https://") {
            let (Some(ca), Some(cert), Some(key)) = (&self.tls_ca, &self.tls_cert, &self.tls_key) else {
                anyhow::bail!("an https endpoint needs --tls-ca, --tls-cert and --tls-key");
            };
            connect_tls(&self.endpoint, ca, cert, key).await?
        } else {
            connect(std::path::Path::new(&self.endpoint)).await?
        };
        let format = match self.output {
            OutputFormat::Table => Format::Table,
            OutputFormat::Json => Format::Json,
        };
        let command = match self.command {
            Command::Elbv2 { command } => return elbv2::run(command, channel, format).await,
            Command::Autoscaling { command } => return autoscaling::run(command, channel, format).await,
            Command::Elasticbeanstalk { command } => {
                return elasticbeanstalk::run(command, channel, format).await
            }
            Command::LaunchTemplates(command) => {
                return launch_templates::run(command, channel, format).await
            }
            command => command,
        };
        let mut images = ImagesClient::new(channel.clone());
        let mut instances = InstancesClient::new(channel.clone());
        let mut subnets = SubnetsClient::new(channel.clone());
        let mut volumes = VolumesClient::new(channel.clone());
        let mut snapshots = SnapshotsClient::new(channel.clone());
        let mut addresses = AddressesClient::new(channel.clone());
        let mut key_pairs = KeyPairsClient::new(channel.clone());
        let mut security_groups = SecurityGroupsClient::new(channel.clone());
        let mut tags = TagsClient::new(channel);
        let gib = |size: u64| size.checked_mul(GIB).context("the size is too large");
        let ids = |instance_ids| InstanceIds { instance_ids, force: false };
        match command {
            Command::RegisterImage {
                disk,
                disk_format,
                kernel,
                initrd,
                name,
                description,
                kernel_cmdline,
                tagging,
            } => {
                let request = RegisterImageRequest {
                    name,
                    description,
                    disk_path: image_file(&mut images, &disk, "uploading the disk").await?,
                    disk_format,
                    kernel_path: match &kernel {
                        Some(kernel) => image_file(&mut images, kernel, "uploading the kernel").await?,
                        None => String::new(),
                    },
                    initrd_path: match &initrd {
                        Some(initrd) => image_file(&mut images, initrd, "uploading the initrd").await?,
                        None => String::new(),
                    },
                    kernel_cmdline,
                    tag_specifications: tagging.tag_specifications,
                };
                let mut updates = images.import_image(request).await?.into_inner();
                let mut bar = ProgressBar::new("importing the disk");
                while let Some(update) = updates.message().await? {
                    bar.show(update.bytes_done, update.bytes_total);
                    if let Some(image) = update.image {
                        bar.finish();
                        print_images(format, vec![image], "");
                    }
                }
            }
            Command::DescribeImages { image_ids, list } => {
                let ListArgs { filters, max_results, next_token } = list;
                let request = DescribeImagesRequest { image_ids, filters, max_results, next_token };
                let response = images.describe_images(request).await?.into_inner();
                print_images(format, response.images, &response.next_token);
            }
            Command::DeregisterImage { image_id } => {
                images.deregister_image(DeregisterImageRequest { image_id }).await?;
            }
            Command::RunInstances {
                image_id,
                instance_type,
                count,
                subnet_id,
                private_ip_address,
                key_name,
                user_data,
                volumes,
                security_group_ids,
                metadata_options,
                launch_template,
                tagging,
            } => {
                let user_data = user_data.as_deref().map(text_or_file).transpose()?.unwrap_or_default();
                let request = RunInstancesRequest {
                    image_id,
                    instance_type,
                    count,
                    subnet_id,
                    private_ip_address,
                    key_name,
                    user_data,
                    volumes,
                    tag_specifications: tagging.tag_specifications,
                    security_group_ids,
                    metadata_options,
                    launch_template,
                };
                print_instances(format, instances.run_instances(request).await?.into_inner().instances, "");
            }
            Command::ModifyInstanceAttribute { instance_id, groups } => {
                let request = ModifyInstanceAttributeRequest { instance_id, groups };
                instances.modify_instance_attribute(request).await?;
            }
            Command::ModifyInstanceMetadataOptions {
                instance_id,
                http_tokens,
                http_endpoint,
                http_put_response_hop_limit,
            } => {
                let options = MetadataOptions { http_tokens, http_endpoint, http_put_response_hop_limit };
                let request = ModifyInstanceMetadataOptionsRequest { instance_id, options: Some(options) };
                let response = instances.modify_instance_metadata_options(request).await?.into_inner();
                print_metadata_options(format, response);
            }
            Command::DescribeInstances { instance_ids, states, list } => {
                let ListArgs { filters, max_results, next_token } = list;
                let request =
                    DescribeInstancesRequest { instance_ids, states, filters, max_results, next_token };
                let response = instances.describe_instances(request).await?.into_inner();
                print_instances(format, response.instances, &response.next_token);
            }
            Command::StopInstances { instance_ids, force } => {
                let request = InstanceIds { instance_ids, force };
                print_changes(format, instances.stop_instances(request).await?.into_inner());
            }
            Command::RebootInstances { instance_ids } => {
                print_changes(format, instances.reboot_instances(ids(instance_ids)).await?.into_inner());
            }
            Command::StartInstances { instance_ids } => {
                print_changes(format, instances.start_instances(ids(instance_ids)).await?.into_inner());
            }
            Command::TerminateInstances { instance_ids } => {
                print_changes(format, instances.terminate_instances(ids(instance_ids)).await?.into_inner());
            }
            Command::CreateSubnet { cidr_block, gateway, tagging } => {
                let tag_specifications = tagging.tag_specifications;
                let request = CreateSubnetRequest { cidr_block, gateway, tag_specifications };
                print_subnets(format, vec![subnets.create_subnet(request).await?.into_inner()], "");
            }
            Command::DescribeSubnets { list } => {
                let ListArgs { filters, max_results, next_token } = list;
                let request = DescribeSubnetsRequest { filters, max_results, next_token };
                let response = subnets.describe_subnets(request).await?.into_inner();
                print_subnets(format, response.subnets, &response.next_token);
            }
            Command::DeleteSubnet { subnet_id } => {
                subnets.delete_subnet(DeleteSubnetRequest { subnet_id }).await?;
            }
            Command::CreateVolume { size, snapshot_id, image_id, tagging } => {
                let size_bytes = size.map(gib).transpose()?.unwrap_or(0);
                let tag_specifications = tagging.tag_specifications;
                let request = CreateVolumeRequest { size_bytes, snapshot_id, image_id, tag_specifications };
                print_volumes(format, vec![volumes.create_volume(request).await?.into_inner()], "");
            }
            Command::DescribeVolumes { volume_ids, list } => {
                let ListArgs { filters, max_results, next_token } = list;
                let request = DescribeVolumesRequest { volume_ids, filters, max_results, next_token };
                let response = volumes.describe_volumes(request).await?.into_inner();
                print_volumes(format, response.volumes, &response.next_token);
            }
            Command::AttachVolume { volume_id, instance_id } => {
                let request = AttachVolumeRequest { volume_id, instance_id };
                print_volumes(format, vec![volumes.attach_volume(request).await?.into_inner()], "");
            }
            Command::DetachVolume { volume_id } => {
                print_volumes(
                    format,
                    vec![volumes.detach_volume(VolumeId { volume_id }).await?.into_inner()],
                    "",
                );
            }
            Command::DeleteVolume { volume_id } => {
                volumes.delete_volume(VolumeId { volume_id }).await?;
            }
            Command::ModifyVolume { volume_id, size } => {
                let request = ModifyVolumeRequest { volume_id, size_bytes: gib(size)? };
                print_volumes(format, vec![volumes.modify_volume(request).await?.into_inner()], "");
            }
            Command::CreateSnapshot { volume_id, tagging } => {
                let request =
                    CreateSnapshotRequest { volume_id, tag_specifications: tagging.tag_specifications };
                print_snapshots(format, vec![snapshots.create_snapshot(request).await?.into_inner()], "");
            }
            Command::DescribeSnapshots { snapshot_ids, list } => {
                let ListArgs { filters, max_results, next_token } = list;
                let request = DescribeSnapshotsRequest { snapshot_ids, filters, max_results, next_token };
                let response = snapshots.describe_snapshots(request).await?.into_inner();
                print_snapshots(format, response.snapshots, &response.next_token);
            }
            Command::DeleteSnapshot { snapshot_id } => {
                snapshots.delete_snapshot(DeleteSnapshotRequest { snapshot_id }).await?;
            }
            Command::AllocateAddress { tagging } => {
                let request = AllocateAddressRequest { tag_specifications: tagging.tag_specifications };
                print_addresses(format, vec![addresses.allocate_address(request).await?.into_inner()], "");
            }
            Command::DescribeAddresses { list } => {
                let ListArgs { filters, max_results, next_token } = list;
                let request = DescribeAddressesRequest { filters, max_results, next_token };
                let response = addresses.describe_addresses(request).await?.into_inner();
                print_addresses(format, response.addresses, &response.next_token);
            }
            Command::AssociateAddress { allocation_id, instance_id } => {
                let request = AssociateAddressRequest { allocation_id, instance_id };
                print_addresses(format, vec![addresses.associate_address(request).await?.into_inner()], "");
            }
            Command::DisassociateAddress { allocation_id } => {
                let request = AllocationId { allocation_id };
                print_addresses(
                    format,
                    vec![addresses.disassociate_address(request).await?.into_inner()],
                    "",
                );
            }
            Command::ReleaseAddress { allocation_id } => {
                addresses.release_address(AllocationId { allocation_id }).await?;
            }
            Command::CreateSecurityGroup { group_name, description, tagging } => {
                let tag_specifications = tagging.tag_specifications;
                let request = CreateSecurityGroupRequest { group_name, description, tag_specifications };
                let group = security_groups.create_security_group(request).await?.into_inner();
                print_security_groups(format, vec![group], "");
            }
            Command::DescribeSecurityGroups { group_ids, list } => {
                let ListArgs { filters, max_results, next_token } = list;
                let request = DescribeSecurityGroupsRequest { group_ids, filters, max_results, next_token };
                let response = security_groups.describe_security_groups(request).await?.into_inner();
                print_security_groups(format, response.security_groups, &response.next_token);
            }
            Command::AuthorizeSecurityGroupIngress { rule } => {
                let group =
                    security_groups.authorize_security_group_ingress(rule.request()).await?.into_inner();
                print_security_groups(format, vec![group], "");
            }
            Command::RevokeSecurityGroupIngress { rule } => {
                let group = security_groups.revoke_security_group_ingress(rule.request()).await?.into_inner();
                print_security_groups(format, vec![group], "");
            }
            Command::DeleteSecurityGroup { group_id } => {
                security_groups.delete_security_group(DeleteSecurityGroupRequest { group_id }).await?;
            }
            Command::CreateKeyPair { key_name, key_type, tagging } => {
                let tag_specifications = tagging.tag_specifications;
                let request = CreateKeyPairRequest { key_name, key_type, tag_specifications };
                let response = key_pairs.create_key_pair(request).await?.into_inner();
                print_created_key_pair(format, response);
            }
            Command::ImportKeyPair { key_name, public_key_material, tagging } => {
                let material = String::from_utf8(text_or_file(&public_key_material)?)
                    .context("the public key is not text")?;
                let tag_specifications = tagging.tag_specifications;
                let request =
                    ImportKeyPairRequest { key_name, public_key_material: material, tag_specifications };
                print_key_pairs(format, vec![key_pairs.import_key_pair(request).await?.into_inner()], "");
            }
            Command::DescribeKeyPairs { key_names, list } => {
                let ListArgs { filters, max_results, next_token } = list;
                let request = DescribeKeyPairsRequest { key_names, filters, max_results, next_token };
                let response = key_pairs.describe_key_pairs(request).await?.into_inner();
                print_key_pairs(format, response.key_pairs, &response.next_token);
            }
            Command::DeleteKeyPair { key_name } => {
                key_pairs.delete_key_pair(DeleteKeyPairRequest { key_name }).await?;
            }
            Command::CreateTags { resources, tags: wanted } => {
                tags.create_tags(CreateTagsRequest { resources, tags: wanted }).await?;
            }
            Command::DeleteTags { resources, tags: unwanted } => {
                tags.delete_tags(DeleteTagsRequest { resources, tags: unwanted }).await?;
            }
            Command::DescribeTags { list } => {
                let ListArgs { filters, max_results, next_token } = list;
                let response =
                    tags.describe_tags(DescribeTagsRequest { filters, max_results, next_token }).await?;
                let response = response.into_inner();
                print_tags(format, response.tags, &response.next_token);
            }
            Command::Doctor { .. }
            | Command::Completions { .. }
            | Command::Elbv2 { .. }
            | Command::Autoscaling { .. }
            | Command::Elasticbeanstalk { .. }
            | Command::LaunchTemplates(_) => {
                unreachable!("handled before")
            }
            Command::GetConsoleOutput { instance_id, follow: true } => {
                let request = WatchInstanceRequest { instance_id, from_start: true };
                let mut events = instances.watch_instance(request).await?.into_inner();
                let mut stdout = std::io::stdout();
                while let Some(event) = events.message().await? {
                    match event.event {
                        Some(Event::Console(bytes)) => {
                            stdout
                                .write_all(&bytes)
                                .and_then(|()| stdout.flush())
                                .context("writing the console")?;
                        }
                        Some(Event::State(change)) => {
                            eprintln!("[nuage] {} is {}", change.instance_id, change.current_state)
                        }
                        None => {}
                    }
                }
            }
            Command::GetConsoleOutput { instance_id, follow: false } => {
                let response = instances.get_console_output(GetConsoleOutputRequest { instance_id }).await?;
                print!("{}", response.into_inner().output);
            }
        }
        Ok(())
    }
}
