//! Launching: RunInstances checks everything it can first, then records each instance
//! before making its volumes, address and config drive, and undoes a launch that fails on
//! the way; every start (run, start, reboot) ends in [`Instances::launch`], which starts
//! the VMM, supervises it and waits until it listens, in the instance's turn (a racing
//! termination finishes before or after, never during).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::supervision::Vmm;
use super::{internal, lock, Instances};
use crate::daemon::cgroup::Limits;
use crate::daemon::cidata::{self, ConfigDrive};
use crate::daemon::process::{control_socket, instance_dir, Launch, ProcessHandle};
use crate::daemon::quotas::Claim;
use crate::daemon::tags::Tags;
use crate::daemon::{failpoint, DaemonError};
use crate::state::db::StateError;
use crate::state::id::{new_id, now};
use crate::state::instance::{InstanceRecord, InstanceState::*, LaunchData, MetadataOptions};
use crate::state::keypair::KeyPairRecord;
use crate::state::tag::Tag;
use crate::store::volume::Parent;
use crate::vmm::api::control;

/// The most volumes RunInstances makes for each instance (with the root disk, the config
/// drive and an interface they stay within the VMM's 16 devices).
const MAX_LAUNCH_VOLUMES: usize = 8;

/// A data volume RunInstances makes for each instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LaunchVolume {
    /// Its size in bytes (default: the snapshot's).
    pub size: Option<u64>,
    /// The snapshot it starts from (default: empty).
    pub snapshot_id: Option<String>,
    /// Keep it, detached, when the instance is terminated (by default it is deleted).
    pub keep_on_termination: bool,
}

/// What RunInstances asks for.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    /// The image to boot.
    pub image_id: String,
    /// A configured instance type's name.
    pub instance_type: String,
    /// How many instances (0 means 1).
    pub count: u32,
    /// The subnet of each instance's interface (empty: none).
    pub subnet_id: String,
    /// The interface's address (one instance only; default: the next free one).
    pub private_ip: Option<Ipv4Addr>,
    /// The key pair whose public key the instances get.
    pub key_pair: Option<KeyPairRecord>,
    /// User data for the guest (cloud-init's `user-data`).
    pub user_data: Vec<u8>,
    /// Data volumes made for each instance, its disks after the root disk.
    pub volumes: Vec<LaunchVolume>,
    /// Tags each instance carries from the start (a group's instances are counted by them).
    pub tags: Vec<Tag>,
    /// `aws:` tags the daemon or a controller puts on each instance beside `tags`
    /// (`aws:autoscaling:groupName`); callers can neither set nor remove them.
    pub reserved_tags: Vec<Tag>,
    /// Tags its volumes carry, root and data.
    pub volume_tags: Vec<Tag>,
    /// The security groups of its interface (1 to 5; none: the default group). Only with
    /// a subnet.
    pub security_group_ids: Vec<String>,
    /// How its metadata service answers it.
    pub metadata_options: MetadataOptions,
    /// The application source bundle (by SHA-256) each instance finds on a read-only
    /// disk: how an environment's instances get their application.
    pub bundle: Option<String>,
}

impl Instances {
    /// Launches `spec.count` instances of an image, each with an interface on the subnet
    /// when one is given, and a config drive with the key pair and user data.
    pub fn run(&self, spec: &RunSpec) -> Result<Vec<InstanceRecord>, DaemonError> {
        let RunSpec { image_id, instance_type, subnet_id, private_ip, .. } = spec;
        let private_ip = *private_ip;
        let count = spec.count.max(1);
        cidata::check_user_data(&spec.user_data)?;
        Tags::check(&spec.tags)?;
        Tags::check_reserved(&spec.reserved_tags)?;
        if let Some(sha256) = &spec.bundle {
            self.store.bundle_disk(sha256)?;
        }
        Tags::check(&spec.volume_tags)?;
        let instance_tags: Vec<Tag> = spec.tags.iter().chain(&spec.reserved_tags).cloned().collect();
        if instance_tags.len() > crate::state::tag::MAX_TAGS_PER_RESOURCE {
            return Err(DaemonError::InvalidParameter(format!(
                "{} tags with those nuage adds; at most {}",
                instance_tags.len(),
                crate::state::tag::MAX_TAGS_PER_RESOURCE
            )));
        }
        if subnet_id.is_empty() && private_ip.is_some() {
            return Err(DaemonError::InvalidParameter("a private address needs a subnet".into()));
        }
        if count > 1 && private_ip.is_some() {
            return Err(DaemonError::InvalidParameter(
                "one private address cannot go to several instances".into(),
            ));
        }
        if !subnet_id.is_empty() {
            self.plane.ipam().subnet(subnet_id)?;
        }
        let groups = self.launch_groups(subnet_id, &spec.security_group_ids)?;
        if count > self.config.max_count {
            return Err(DaemonError::InvalidParameter(format!(
                "count {count} is more than the {} one call may launch",
                self.config.max_count
            )));
        }
        let kind = self.config.instance_type(instance_type).ok_or_else(|| {
            let known: Vec<&str> = self.config.instance_types.iter().map(|t| t.name.as_str()).collect();
            DaemonError::InvalidParameter(format!(
                "instance type {instance_type:?}; known: {}",
                known.join(", ")
            ))
        })?;
        let image = self.store.image(image_id)?;
        self.check_launch_volumes(&spec.volumes)?;
        let mut sizes = vec![image.size];
        for volume in &spec.volumes {
            let parent = volume.snapshot_id.clone().map_or(Parent::None, Parent::Snapshot);
            sizes.push(self.store.volume_size(&parent, volume.size)?);
        }
        for &size in &sizes {
            self.config.quotas.check_volume_size(size)?;
        }
        // Reserved for the whole call; each record made releases its part.
        let wanted = Claim {
            volume_bytes: sizes.iter().sum::<u64>().saturating_mul(u64::from(count)),
            ..Claim::instances(count as usize, (kind.vcpus, kind.memory_mib))
        };
        let mut admitted = self.admissions.admit(wanted, None)?;
        (0..count)
            .map(|_| {
                let record = InstanceRecord {
                    id: new_id("i"),
                    image_id: image.id.clone(),
                    instance_type: kind.name.clone(),
                    vcpus: kind.vcpus,
                    memory_mib: kind.memory_mib,
                    root_volume_id: String::new(),
                    state: Pending,
                    state_reason: String::new(),
                    pid: None,
                    launch_time: now() as i64,
                    subnet_id: subnet_id.to_owned(),
                    private_ip: None,
                    key_name: spec.key_pair.as_ref().map(|k| k.name.clone()).unwrap_or_default(),
                    metadata_options: spec.metadata_options,
                };
                admitted
                    .make(Claim::instances(1, (kind.vcpus, kind.memory_mib)), || self.db.insert(&record))?;
                // Tagged before anything else is made: whoever counts instances by their
                // tags never sees this one without them.
                if !instance_tags.is_empty() {
                    self.tags.set_tags(std::slice::from_ref(&record.id), &instance_tags)?;
                }
                // Every volume before the root is recorded: a recorded root means a complete
                // set, and recovery undoes an incomplete one.
                // The volumes made, the root first.
                let root = Claim::volumes(image.size);
                let launched = admitted
                    .make(root, || self.store.create_volume(Parent::Image(image.id.clone()), None))
                    .and_then(|volume| {
                        self.store.attach_volume(&volume.id, &record.id, true)?;
                        let mut made = vec![volume.id];
                        for (wanted, &size) in spec.volumes.iter().zip(&sizes[1..]) {
                            let parent = wanted.snapshot_id.clone().map_or(Parent::None, Parent::Snapshot);
                            let data = admitted.make(Claim::volumes(size), || {
                                self.store.create_volume(parent, wanted.size)
                            })?;
                            self.store.attach_volume(&data.id, &record.id, !wanted.keep_on_termination)?;
                            made.push(data.id);
                        }
                        Ok(made)
                    });
                let launched = launched
                    .map_err(DaemonError::from)
                    .and_then(|made| {
                        if !spec.volume_tags.is_empty() {
                            self.tags.set_tags(&made, &spec.volume_tags)?;
                        }
                        let public_key = spec.key_pair.as_ref().map(|k| k.public_key.clone());
                        let launch = LaunchData {
                            user_data: spec.user_data.clone(),
                            public_key: public_key.unwrap_or_default(),
                            bundle: spec.bundle.clone().unwrap_or_default(),
                        };
                        if launch != LaunchData::default() {
                            self.db.set_launch_data(&record.id, &launch)?;
                        }
                        Ok(self.db.set_root_volume(&record.id, &made[0])?)
                    })
                    .and_then(|()| {
                        failpoint("run-after-volume");
                        let interface = match subnet_id.as_str() {
                            "" => None,
                            subnet => Some(self.plane.attach(subnet, &record.id, private_ip, 0, &groups)?),
                        };
                        if let Some(interface) = &interface {
                            self.db.set_private_ip(&record.id, interface.ip)?;
                        }
                        ConfigDrive {
                            instance_id: &record.id,
                            public_key: spec.key_pair.as_ref().map(|k| k.public_key.as_str()),
                            user_data: &spec.user_data,
                            interface: interface.as_ref(),
                        }
                        .write(&instance_dir(&self.config.state_dir, &record.id))?;
                        self.launch(&record.id)
                    });
                launched.inspect_err(|e| self.abandon(&record.id, e))
            })
            .collect()
    }

    /// The security groups a launch's interfaces go in: those named (which must exist),
    /// else the default group; none without a subnet, where naming any is refused.
    fn launch_groups(&self, subnet_id: &str, named: &[String]) -> Result<Vec<String>, DaemonError> {
        if subnet_id.is_empty() {
            if !named.is_empty() {
                return Err(DaemonError::InvalidParameter("security groups need a subnet".into()));
            }
            return Ok(Vec::new());
        }
        if named.is_empty() {
            return Ok(vec![self.plane.default_security_group()?]);
        }
        self.plane.check_security_groups(named)?;
        Ok(named.to_vec())
    }

    /// Checks RunInstances' volumes before anything is made.
    fn check_launch_volumes(&self, volumes: &[LaunchVolume]) -> Result<(), DaemonError> {
        if volumes.len() > MAX_LAUNCH_VOLUMES {
            return Err(DaemonError::InvalidParameter(format!(
                "{} volumes; at most {MAX_LAUNCH_VOLUMES} per instance",
                volumes.len()
            )));
        }
        for volume in volumes {
            match (&volume.snapshot_id, volume.size) {
                (None, None | Some(0)) => {
                    return Err(DaemonError::InvalidParameter("an empty volume needs a size".into()))
                }
                (Some(snapshot), size) => {
                    let snapshot = self.store.snapshot(snapshot)?;
                    if size.is_some_and(|size| size < snapshot.size) {
                        return Err(DaemonError::InvalidParameter(format!(
                            "a volume from {} needs at least its {} bytes",
                            snapshot.id, snapshot.size
                        )));
                    }
                }
                (None, Some(_)) => {}
            }
        }
        Ok(())
    }

    /// Terminates an instance whose launch failed, deleting what it got so far.
    fn abandon(&self, id: &str, error: &DaemonError) {
        let reason = format!("Server.InternalError: launch failed: {error}");
        let undone = self
            .transition(id, &[Pending, Stopped], ShuttingDown, &reason, None)
            .map_err(DaemonError::from)
            .and_then(|_| self.finish_termination(id, true));
        if let Err(e) = undone {
            warn!(instance = id, "undoing a failed launch: {e}");
        }
    }

    /// Starts the VMM of pending instance `id` and watches it.
    pub(super) fn launch(&self, id: &str) -> Result<InstanceRecord, DaemonError> {
        let turn = self.turn(id);
        let _turn = lock(&turn);
        let record = self.db.get(id)?;
        if record.state != Pending {
            // A racing terminate took its turn first.
            return Err(StateError::wrong_state(id, &[Pending], record.state).into());
        }
        let image = self.store.image(&record.image_id)?;
        let network = match record.subnet_id.as_str() {
            "" => None,
            subnet => {
                let interface = self.plane.interface(subnet, id)?;
                Some((self.plane.open_tap(&interface)?, interface))
            }
        };
        // A VMM that cannot start leaves its instance stopped, saying why.
        let not_started = |message: String| {
            let error = DaemonError::Internal(message);
            match self.transition(id, &[Pending], Stopped, &error.to_string(), None) {
                Ok(_) => error,
                Err(e) => e.into(),
            }
        };
        let limits = Limits { vcpus: record.vcpus, memory_mib: record.memory_mib };
        let cgroup = match self.cgroups.as_ref().map(|cgroups| cgroups.prepare(id, limits)).transpose() {
            Ok(cgroup) => cgroup,
            Err(e) => return Err(not_started(format!("cannot set up the instance's cgroup: {e}"))),
        };
        let launch = Launch {
            vmm: &self.config.vmm,
            cgroup,
            instance: &record,
            image: &image,
            kernel: self.store.image_file(&image, &image.kernel),
            initrd: image.initrd.as_ref().map(|name| self.store.image_file(&image, name)),
            root_volume: self.store.volume_path(&record.root_volume_id)?,
            store_root: self.store.root().to_owned(),
            config_drive: cidata::existing(&instance_dir(&self.config.state_dir, id)),
            bundle_disk: match self.db.launch_data(id)?.bundle.as_str() {
                "" => None,
                sha256 => Some(self.store.bundle_disk(sha256)?),
            },
            dir: instance_dir(&self.config.state_dir, id),
            network,
            data_volumes: self
                .store
                .volumes()?
                .into_iter()
                .filter(|v| v.attached_to.as_deref() == Some(id) && v.id != record.root_volume_id)
                .map(|v| Ok((v.id.clone(), self.store.volume_path(&v.id)?)))
                .collect::<Result<_, DaemonError>>()?,
            jail_uid: match self.jail_uid(id) {
                Ok(uid) => uid,
                Err(e) => return Err(not_started(e)),
            },
        };
        let child = match launch.spawn() {
            Ok(child) => child,
            Err(e) => return Err(not_started(format!("cannot start {}: {e}", self.config.vmm.display()))),
        };
        failpoint("launch-after-spawn");
        let mut child = child;
        let pid = child.id() as i32;
        // Not reaped yet, so the pid is still this child's.
        let handle = match ProcessHandle::open(pid) {
            Ok(handle) => handle,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(internal(e));
            }
        };
        // Supervised before it is called running: a stop or terminate racing this launch
        // finds the VMM to stop, and an early exit is recorded (the instance stops).
        let vmm = self.supervise(id, handle, Some(child));
        wait_until_listening(&control_socket(&launch.dir), &vmm);
        match self.transition(id, &[Pending], Running, "", Some(pid)) {
            Ok(record) => {
                info!(instance = id, pid, "launched");
                Ok(record)
            }
            // The VMM ended as it started: its exit stopped the instance, with the reason.
            Err(StateError::WrongState { actual: Stopped, .. }) => {
                let reason = self.db.get(id)?.state_reason;
                Err(DaemonError::Internal(format!("the VMM did not start: {reason}")))
            }
            Err(e) => {
                // Another request moved the instance on meanwhile: this VMM must not run.
                let _ = vmm.process.signal(libc::SIGKILL);
                Err(e.into())
            }
        }
    }
}

impl Instances {
    /// The user instance `id`'s VMM is jailed as (none with the jail off): the one it
    /// holds, or the lowest no other instance holds.
    fn jail_uid(&self, id: &str) -> Result<Option<u32>, String> {
        let jail = &self.config.jail;
        if !jail.enabled {
            return Ok(None);
        }
        let mut uids = lock(&self.jail_uids);
        if let Some(&uid) = uids.get(id) {
            return Ok(Some(uid));
        }
        let taken: HashSet<u32> = uids.values().copied().collect();
        let uid = (0..jail.uids)
            .filter_map(|n| jail.first_uid.checked_add(n))
            .find(|uid| !taken.contains(uid))
            .ok_or_else(|| format!("all {} users of the VMMs' jails are taken", jail.uids))?;
        uids.insert(id.to_owned(), uid);
        Ok(Some(uid))
    }

    /// Records that adopted instance `id`'s VMM runs as `uid`, when that is a jail's user.
    pub(super) fn adopted_jail_uid(&self, id: &str, uid: u32) {
        if self.config.jail.holds(uid) {
            lock(&self.jail_uids).insert(id.to_owned(), uid);
        }
    }
}

/// How long a new VMM gets to start listening on its control socket before its instance is
/// called running anyway (its supervisor then reports what became of it).
const VMM_LISTEN_PATIENCE: Duration = Duration::from_secs(10);

/// Waits until `vmm` accepts connections on `socket`, or exits, or
/// [`VMM_LISTEN_PATIENCE`] passes. A running instance is then one whose VMM can be asked
/// for a snapshot or a shutdown at once: the VMM binds its socket while it builds the VM, a
/// moment after the process starts.
fn wait_until_listening(socket: &Path, vmm: &Vmm) {
    let start = Instant::now();
    while start.elapsed() < VMM_LISTEN_PATIENCE {
        if control::query_disks(socket).is_ok() || vmm.process.exited() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::warn!(socket = %socket.display(), "the VMM is not listening on its control socket yet");
}
