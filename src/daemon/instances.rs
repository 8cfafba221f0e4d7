//! The instance life cycle: launching VMMs from images, supervising them, stopping,
//! starting and terminating, and setting everything straight after a daemon restart.
//!
//! Every step is recorded before it is taken (the instance row first, then its volume,
//! then its process), so [`Instances::recover`] can finish or undo whatever a crash
//! interrupted: no volume without an instance, no VMM without a record, no instance
//! stuck in pending.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::cidata::{self, ConfigDrive};
use super::config::DaemonConfig;
use super::process::{
    control_socket, disk_serial, instance_dir, running_vmms, tail, Launch, ProcessHandle, VmmDisk, PID_FILE,
};
use super::watch::Watch;
use super::{failpoint, DaemonError};
use crate::net::plane::NetworkPlane;
use crate::state::db::{InstanceStore, StateError};
use crate::state::id::{new_id, now};
use crate::state::instance::{InstanceRecord, InstanceState};
use crate::state::keypair::KeyPairRecord;
use crate::store::volume::{Parent, VolumeRecord};
use crate::store::{LayerSwitch, Store};
use crate::vmm::api::control;
use crate::vmm::api::ExitStatus as VmmExit;

use InstanceState::*;

/// How long a VMM gets to stop its vCPUs and flush its disks after SIGTERM before it is
/// killed.
const VMM_STOP_GRACE: Duration = Duration::from_secs(10);

/// State changes kept for watchers that fall behind; one further behind rereads the state.
const STATE_CHANGES_KEPT: usize = 256;

/// One state change, as StopInstances and friends report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The instance.
    pub id: String,
    /// Before.
    pub previous: InstanceState,
    /// After.
    pub current: InstanceState,
}

/// The most volumes RunInstances makes for each instance (with the root disk, the config
/// drive and an interface they stay within the VMM's 16 devices).
const MAX_LAUNCH_VOLUMES: usize = 8;

/// A data volume RunInstances makes for each instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchVolume {
    /// Its size in bytes (default: the snapshot's).
    pub size: Option<u64>,
    /// The snapshot it starts from (default: empty).
    pub snapshot_id: Option<String>,
    /// Keep it, detached, when the instance is terminated (by default it is deleted).
    pub keep_on_termination: bool,
}

/// An EC2-style filter of DescribeInstances: the instances whose attribute `name` has one
/// of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// One of [`FILTER_NAMES`].
    pub name: String,
    /// Any of these matches.
    pub values: Vec<String>,
}

/// The filters DescribeInstances knows, by EC2's names.
pub const FILTER_NAMES: [&str; 7] = [
    "instance-id",
    "instance-state-name",
    "image-id",
    "instance-type",
    "subnet-id",
    "private-ip-address",
    "key-name",
];

impl Filter {
    /// The attribute of `record` the filter looks at.
    fn attribute(&self, record: &InstanceRecord) -> String {
        match self.name.as_str() {
            "instance-id" => record.id.clone(),
            "instance-state-name" => record.state.as_str().to_owned(),
            "image-id" => record.image_id.clone(),
            "instance-type" => record.instance_type.clone(),
            "subnet-id" => record.subnet_id.clone(),
            "private-ip-address" => record.private_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            "key-name" => record.key_name.clone(),
            // Names are checked before filtering.
            _ => String::new(),
        }
    }
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
}

/// The instances of one daemon.
#[derive(Clone)]
pub struct Instances {
    db: Arc<dyn InstanceStore>,
    store: Arc<Store>,
    plane: Arc<NetworkPlane>,
    config: Arc<DaemonConfig>,
    /// Handles of the running VMMs, for signals that cannot hit a reused pid.
    handles: Arc<Mutex<HashMap<String, Arc<ProcessHandle>>>>,
    /// Instances being rebooted: when their VMM ends, a new one starts.
    rebooting: Arc<Mutex<HashSet<String>>>,
    /// Every state change (instance, new state), for watchers.
    changes: tokio::sync::broadcast::Sender<(String, InstanceState)>,
}

impl Instances {
    /// Instances recorded in `db`, with volumes in `store` and interfaces on `plane`.
    pub fn new(
        db: Arc<dyn InstanceStore>,
        store: Arc<Store>,
        plane: Arc<NetworkPlane>,
        config: Arc<DaemonConfig>,
    ) -> Self {
        let (changes, _) = tokio::sync::broadcast::channel(STATE_CHANGES_KEPT);
        Self { db, store, plane, config, handles: Arc::default(), rebooting: Arc::default(), changes }
    }

    /// Launches `spec.count` instances of an image, each with an interface on the subnet
    /// when one is given, and a config drive with the key pair and user data.
    pub fn run(&self, spec: &RunSpec) -> Result<Vec<InstanceRecord>, DaemonError> {
        let RunSpec { image_id, instance_type, subnet_id, private_ip, .. } = spec;
        let private_ip = *private_ip;
        let count = spec.count.max(1);
        cidata::check_user_data(&spec.user_data)?;
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
                };
                self.db.insert(&record)?;
                // Every volume before the root is recorded: a recorded root means a complete
                // set, and recovery undoes an incomplete one.
                let launched =
                    self.store.create_volume(Parent::Image(image.id.clone()), None).and_then(|volume| {
                        self.store.attach_volume(&volume.id, &record.id, true)?;
                        for wanted in &spec.volumes {
                            let parent = wanted.snapshot_id.clone().map_or(Parent::None, Parent::Snapshot);
                            let data = self.store.create_volume(parent, wanted.size)?;
                            self.store.attach_volume(&data.id, &record.id, !wanted.keep_on_termination)?;
                        }
                        Ok(volume)
                    });
                let launched = launched
                    .map_err(DaemonError::from)
                    .and_then(|volume| Ok(self.db.set_root_volume(&record.id, &volume.id)?))
                    .and_then(|()| {
                        failpoint("run-after-volume");
                        let interface = match subnet_id.as_str() {
                            "" => None,
                            subnet => Some(self.plane.attach(subnet, &record.id, private_ip, 0)?),
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

    /// Instances named in `ids` (all when empty), in `states` (any when empty).
    pub fn describe(
        &self,
        ids: &[String],
        states: &[InstanceState],
    ) -> Result<Vec<InstanceRecord>, DaemonError> {
        let all = self.db.list()?;
        for id in ids {
            if !all.iter().any(|r| &r.id == id) {
                return Err(DaemonError::State(StateError::NotFound(id.clone())));
            }
        }
        Ok(all
            .into_iter()
            .filter(|r| ids.is_empty() || ids.contains(&r.id))
            .filter(|r| states.is_empty() || states.contains(&r.state))
            .collect())
    }

    /// Instances as [`Instances::describe`] finds them, that match every filter.
    pub fn describe_filtered(
        &self,
        ids: &[String],
        states: &[InstanceState],
        filters: &[Filter],
    ) -> Result<Vec<InstanceRecord>, DaemonError> {
        if let Some(unknown) = filters.iter().find(|f| !FILTER_NAMES.contains(&f.name.as_str())) {
            return Err(DaemonError::InvalidParameter(format!(
                "filter {:?}; known: {}",
                unknown.name,
                FILTER_NAMES.join(", ")
            )));
        }
        let mut records = self.describe(ids, states)?;
        records.retain(|r| filters.iter().all(|f| f.values.contains(&f.attribute(r))));
        Ok(records)
    }

    /// Boots stopped instances again.
    pub fn start(&self, ids: &[String]) -> Result<Vec<StateChange>, DaemonError> {
        self.check_all(ids, &[Stopped, Pending, Running])?;
        ids.iter()
            .map(|id| {
                let previous = self.db.get(id)?.state;
                if previous != Stopped {
                    return Ok(StateChange { id: id.clone(), previous, current: previous });
                }
                self.transition(id, &[Stopped], Pending, "Client.UserInitiatedStart", None)?;
                let record = self.launch(id)?;
                Ok(StateChange { id: id.clone(), previous, current: record.state })
            })
            .collect()
    }

    /// Stops running instances: their guests are asked to shut down (unless `force`), and
    /// their VMMs stopped once they have not in the stop timeout. Returns once each has
    /// stopped.
    pub fn stop(&self, ids: &[String], force: bool) -> Result<Vec<StateChange>, DaemonError> {
        self.check_all(ids, &[Running, Stopping, Stopped])?;
        let mut changes = Vec::new();
        for id in ids {
            let previous = self.db.get(id)?.state;
            if previous == Running {
                self.transition(id, &[Running], Stopping, "Client.UserInitiatedShutdown", None)?;
                self.shut_down(id, !force);
            }
            changes.push(StateChange { id: id.clone(), previous, current: self.db.get(id)?.state });
        }
        Ok(changes)
    }

    /// Reboots running instances: each guest is asked to shut down as for a stop, and its
    /// instance starts again on a new VMM (same volumes and address) once it has; the
    /// instance stays running throughout. Returns once each runs on its new VMM.
    pub fn reboot(&self, ids: &[String]) -> Result<Vec<StateChange>, DaemonError> {
        self.check_all(ids, &[Running])?;
        for id in ids {
            self.lock(&self.rebooting).insert(id.clone());
            self.shut_down(id, true);
            self.lock(&self.rebooting).remove(id);
        }
        ids.iter()
            .map(|id| Ok(StateChange { id: id.clone(), previous: Running, current: self.db.get(id)?.state }))
            .collect()
    }

    /// Terminates instances: stops their VMMs and deletes their root volumes.
    pub fn terminate(&self, ids: &[String]) -> Result<Vec<StateChange>, DaemonError> {
        self.check_all(ids, &InstanceState::ALL)?;
        let mut changes = Vec::new();
        for id in ids {
            let previous = self.db.get(id)?.state;
            if !matches!(previous, ShuttingDown | Terminated) {
                self.transition(
                    id,
                    &[Pending, Running, Stopping, Stopped],
                    ShuttingDown,
                    "Client.UserInitiatedShutdown",
                    None,
                )?;
                failpoint("terminate-after-record");
                if self.handle(id).is_some() {
                    self.shut_down(id, true);
                } else {
                    self.finish_termination(id, false)?;
                }
            }
            changes.push(StateChange { id: id.clone(), previous, current: self.db.get(id)?.state });
        }
        Ok(changes)
    }

    /// The instance's console output so far (the last 64 KiB).
    pub fn console_output(&self, id: &str) -> Result<String, DaemonError> {
        self.db.get(id)?;
        let path = instance_dir(&self.config.state_dir, id).join("console.log");
        tail(&path, 64 << 10).map_err(|e| DaemonError::Internal(format!("{}: {e}", path.display())))
    }

    /// Follows the instance's console and state from now on (or from the last 64 KiB of
    /// console output, with `from_start`).
    pub fn watch(&self, id: &str, from_start: bool) -> Result<Watch, DaemonError> {
        self.db.get(id)?;
        let console = instance_dir(&self.config.state_dir, id).join("console.log");
        Ok(Watch::new(self.clone(), id, console, from_start))
    }

    /// After a daemon start: adopts the VMMs that kept running, and finishes what a crash
    /// interrupted. Returns a line per action taken.
    pub fn recover(&self) -> Result<Vec<String>, DaemonError> {
        let mut actions = Vec::new();
        let running = running_vmms(&self.config.state_dir);
        let records = self.db.list()?;
        // The adopted instances' volumes, read once: the loop below only deletes those of
        // instances it terminates.
        let volumes = self.store.volumes()?;
        let with_interfaces: Vec<String> = records
            .iter()
            .filter(|r| r.state != Terminated && !r.subnet_id.is_empty())
            .map(|r| r.id.clone())
            .collect();
        for tap in self.plane.remove_stale_taps(&with_interfaces)? {
            actions.push(format!("removed tap {tap}, which no instance claims"));
        }
        for record in &records {
            let id = &record.id;
            match (record.state, running.get(id)) {
                (Terminated, Some(&pid)) => {
                    // A VMM outliving its instance's termination has nothing to serve.
                    ProcessHandle::open(pid).and_then(|h| h.signal(libc::SIGKILL)).map_err(internal)?;
                    actions.push(format!("killed the VMM of terminated {id} (pid {pid})"));
                }
                (Terminated, None) => {}
                (state, Some(&pid)) => {
                    let handle = ProcessHandle::open(pid).map_err(internal)?;
                    if state == Pending {
                        self.transition(id, &[Pending], Running, "", Some(pid))?;
                    }
                    let stop_requested = matches!(state, Stopping | ShuttingDown);
                    self.supervise(id, handle, None);
                    self.resync_disks(id, &volumes)?;
                    if stop_requested {
                        // The request outlived the daemon that took it: carry it out.
                        self.shut_down(id, true);
                    }
                    actions.push(format!("adopted the VMM of {} (pid {pid})", record.id));
                }
                (Pending | Running | Stopping, None) => {
                    let prepared = !record.root_volume_id.is_empty()
                        && (record.subnet_id.is_empty() || record.private_ip.is_some());
                    if !prepared {
                        // RunInstances never got as far as a volume and an address: undo it.
                        self.transition(
                            id,
                            &[record.state],
                            ShuttingDown,
                            "Server.InternalError: launch interrupted",
                            None,
                        )?;
                        self.finish_termination(id, true)?;
                        actions.push(format!("undid the interrupted launch of {id}"));
                    } else {
                        let reason = "Server.InternalError: the VMM ended while nuaged was down";
                        self.transition(id, &[record.state], Stopped, reason, None)?;
                        actions.push(format!("{id} is stopped: its VMM ended while nuaged was down"));
                    }
                }
                (ShuttingDown, None) => {
                    self.finish_termination(id, false)?;
                    actions.push(format!("finished terminating {id}"));
                }
                (Stopped, None) => {}
            }
        }
        // Volumes attached to instances the record does not know (a crash between making
        // the volume and recording it is impossible: the row comes first; this catches
        // rows removed by hand) are detached, never deleted: their data may matter.
        for volume in self.store.volumes()? {
            if let Some(owner) = &volume.attached_to {
                if owner.starts_with("i-") && !records.iter().any(|r| &r.id == owner) {
                    self.store.detach_volume(&volume.id)?;
                    actions.push(format!("detached {} from unknown instance {owner}", volume.id));
                }
            }
        }
        Ok(actions)
    }

    /// Puts every disk of `id`'s adopted VMM back on its volume's current top layer and
    /// resumes it. A daemon killed in the middle of a live snapshot may have left a disk
    /// paused, or still on the file that became the snapshot; otherwise the VMM reopens
    /// the file it had, after flushing it.
    fn resync_disks(&self, id: &str, volumes: &[VolumeRecord]) -> Result<(), DaemonError> {
        let socket = control_socket(&instance_dir(&self.config.state_dir, id));
        for volume in volumes.iter().filter(|v| v.attached_to.as_deref() == Some(id)) {
            let disk = VmmDisk { socket: socket.clone(), id: disk_serial(&volume.id) };
            let path = self.store.volume_path(&volume.id)?;
            if let Err(e) = disk.pause().and_then(|()| disk.switch(&path)) {
                warn!(instance = id, volume = volume.id, "cannot put the disk on its current layer: {e}");
            }
        }
        Ok(())
    }

    /// Moves `id` from one of `from` to `next` in the database and tells the watchers.
    fn transition(
        &self,
        id: &str,
        from: &[InstanceState],
        next: InstanceState,
        reason: &str,
        pid: Option<i32>,
    ) -> Result<InstanceRecord, StateError> {
        let record = self.db.transition(id, from, next, reason, pid)?;
        // No watcher listening is no error.
        let _ = self.changes.send((id.to_owned(), next));
        Ok(record)
    }

    /// State changes from now on.
    pub(super) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(String, InstanceState)> {
        self.changes.subscribe()
    }

    /// Fails unless every id exists and is in one of `allowed`: a request naming one
    /// wrong instance changes none.
    fn check_all(&self, ids: &[String], allowed: &[InstanceState]) -> Result<(), DaemonError> {
        if ids.is_empty() {
            return Err(DaemonError::InvalidParameter("no instance ids given".into()));
        }
        for id in ids {
            let record = self.db.get(id)?;
            if !allowed.contains(&record.state) {
                return Err(DaemonError::State(StateError::wrong_state(id, allowed, record.state)));
            }
        }
        Ok(())
    }

    /// Starts the VMM of pending instance `id` and watches it.
    fn launch(&self, id: &str) -> Result<InstanceRecord, DaemonError> {
        let record = self.db.get(id)?;
        let image = self.store.image(&record.image_id)?;
        let network = match record.subnet_id.as_str() {
            "" => None,
            subnet => {
                let interface = self.plane.interface(subnet, id)?;
                Some((self.plane.open_tap(&interface)?, interface))
            }
        };
        let launch = Launch {
            vmm: &self.config.vmm,
            instance: &record,
            image: &image,
            kernel: self.store.image_file(&image, &image.kernel),
            initrd: image.initrd.as_ref().map(|name| self.store.image_file(&image, name)),
            root_volume: self.store.volume_path(&record.root_volume_id)?,
            config_drive: cidata::existing(&instance_dir(&self.config.state_dir, id)),
            dir: instance_dir(&self.config.state_dir, id),
            network,
            data_volumes: self
                .store
                .volumes()?
                .into_iter()
                .filter(|v| v.attached_to.as_deref() == Some(id) && v.id != record.root_volume_id)
                .map(|v| Ok((v.id.clone(), self.store.volume_path(&v.id)?)))
                .collect::<Result<_, DaemonError>>()?,
        };
        let child = match launch.spawn() {
            Ok(child) => child,
            Err(e) => {
                let error = DaemonError::Internal(format!("cannot start {}: {e}", self.config.vmm.display()));
                self.transition(id, &[Pending], Stopped, &error.to_string(), None)?;
                return Err(error);
            }
        };
        failpoint("launch-after-spawn");
        let mut child = child;
        wait_until_listening(&control_socket(&launch.dir), &mut child);
        let pid = child.id() as i32;
        let handle = ProcessHandle::open(pid).map_err(internal)?;
        let record = self.transition(id, &[Pending], Running, "", Some(pid))?;
        info!(instance = id, pid, "launched");
        self.supervise(id, handle, Some(child));
        Ok(record)
    }

    /// Watches VMM `handle` of instance `id` (with `child`, when this daemon started it,
    /// to learn its exit status) and records its exit.
    fn supervise(&self, id: &str, handle: ProcessHandle, child: Option<Child>) {
        let handle = Arc::new(handle);
        self.running().insert(id.to_owned(), handle.clone());
        let this = self.clone();
        let id = id.to_owned();
        std::thread::spawn(move || {
            let status = match child {
                Some(mut child) => child.wait().ok(),
                None => {
                    handle.wait();
                    None
                }
            };
            // Before the exit is handled: a reboot writes the new VMM's.
            let _ = std::fs::remove_file(instance_dir(&this.config.state_dir, &id).join(PID_FILE));
            if let Err(e) = this.record_exit(&id, status) {
                warn!(instance = id, "recording the VMM's exit failed: {e}");
            }
            // A reboot has put a new VMM's handle in place: leave that one.
            let mut handles = this.running();
            if handles.get(&id).is_some_and(|h| Arc::ptr_eq(h, &handle)) {
                handles.remove(&id);
            }
        });
    }

    fn handle(&self, id: &str) -> Option<Arc<ProcessHandle>> {
        self.running().get(id).cloned()
    }

    /// The handles of the running VMMs.
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ProcessHandle>>> {
        self.lock(&self.handles)
    }

    /// Locks one of the in-memory maps. A panic while holding one leaves it whole (each
    /// change is one insert or remove), so a poisoned lock is used as it is.
    fn lock<'a, T>(&self, mutex: &'a Mutex<T>) -> std::sync::MutexGuard<'a, T> {
        mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops the VMM of `id` and waits until its exit is recorded. Gracefully, the guest
    /// is asked first: Ctrl+Alt+Del on its keyboard makes Linux signal init, which shuts
    /// down (busybox) or reboots (systemd; either way the VMM exits), within the stop
    /// timeout. Then, or at once, SIGTERM stops the VMM itself: it stops its vCPUs,
    /// flushes its disks and exits. SIGKILL follows if even that hangs.
    fn shut_down(&self, id: &str, graceful: bool) {
        let Some(handle) = self.handle(id) else { return };
        if graceful {
            let socket = control_socket(&instance_dir(&self.config.state_dir, id));
            match control::call(&socket, &control::Request::CtrlAltDel) {
                Ok(()) if self.wait_exit(id, &handle, self.config.stop_timeout()) => {
                    info!(instance = id, "the guest shut down");
                    return;
                }
                Ok(()) => warn!(instance = id, "the guest did not shut down in time: stopping its VMM"),
                Err(e) => warn!(instance = id, "cannot ask the guest to shut down: {e}"),
            }
        }
        if let Err(e) = handle.signal(libc::SIGTERM) {
            warn!(instance = id, "SIGTERM: {e}");
        }
        if !self.wait_exit(id, &handle, VMM_STOP_GRACE) {
            warn!(instance = id, "the VMM did not stop in time: killing it");
            let _ = handle.signal(libc::SIGKILL);
            self.wait_exit(id, &handle, Duration::MAX);
        }
    }

    /// Waits up to `timeout` for the exit of VMM `handle` of `id` to be recorded (it is no
    /// longer `id`'s handle: gone, or replaced by a reboot's); false if it was not.
    fn wait_exit(&self, id: &str, handle: &Arc<ProcessHandle>, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        while self.handle(id).is_some_and(|current| Arc::ptr_eq(&current, handle)) {
            if deadline.is_some_and(|deadline| Instant::now() > deadline) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Records the exit of instance `id`'s VMM (`status` is unknown for an adopted one).
    fn record_exit(&self, id: &str, status: Option<ExitStatus>) -> Result<(), DaemonError> {
        let record = self.db.get(id)?;
        let code = status.and_then(|s| s.code());
        let vmm_exit = code.and_then(VmmExit::from_code);
        let asked_to_reboot = self.lock(&self.rebooting).contains(id);
        info!(instance = id, ?status, state = %record.state, "VMM exited");
        match record.state {
            Stopping => {
                self.transition(id, &[Stopping], Stopped, &record.state_reason, None)?;
            }
            ShuttingDown => self.finish_termination(id, false)?,
            Running if asked_to_reboot || vmm_exit == Some(VmmExit::Reboot) => {
                // A reboot, asked for or by the guest: the instance keeps running, on a new VMM.
                let reason = if asked_to_reboot {
                    "Client.UserInitiatedReboot"
                } else {
                    "Client.InstanceInitiatedReboot"
                };
                self.transition(id, &[Running], Pending, reason, None)?;
                self.launch(id)?;
            }
            Running => {
                let reason = match code {
                    _ if vmm_exit == Some(VmmExit::PowerOff) => {
                        "Client.InstanceInitiatedShutdown: the guest powered off".to_owned()
                    }
                    Some(code) => {
                        format!("Server.InternalError: nuage-vmm exited with status {code} (see vmm.log)")
                    }
                    None => "Server.InternalError: nuage-vmm ended".to_owned(),
                };
                self.transition(id, &[Running], Stopped, &reason, None)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Deletes a shutting-down instance's volumes and files and marks it terminated; with
    /// `undo_launch` (a launch that failed or was interrupted), every volume attached to it,
    /// all of which the launch made.
    fn finish_termination(&self, id: &str, undo_launch: bool) -> Result<(), DaemonError> {
        let record = self.db.get(id)?;
        if !record.subnet_id.is_empty() {
            self.plane.detach(&record.subnet_id, id)?;
        }
        let reason = record.state_reason;
        // The root volume and the volumes made at launch go with the instance; other data
        // volumes are detached and stay. A launch that failed, or was interrupted before
        // recording its root, loses every volume it made.
        for volume in self.store.volumes()? {
            if volume.attached_to.as_deref() == Some(id) {
                let made_for_it = volume.delete_on_termination || volume.id == record.root_volume_id;
                self.store.detach_volume(&volume.id)?;
                if undo_launch || made_for_it {
                    self.store.delete_volume(&volume.id)?;
                }
            }
        }
        let dir: PathBuf = instance_dir(&self.config.state_dir, id);
        let _ = std::fs::remove_file(control_socket(&dir));
        cidata::remove(&dir);
        self.transition(id, &[ShuttingDown], Terminated, &reason, None)?;
        Ok(())
    }
}

fn internal(e: std::io::Error) -> DaemonError {
    DaemonError::Internal(e.to_string())
}

/// How long a new VMM gets to start listening on its control socket before its instance is
/// called running anyway (its supervisor then reports what became of it).
const VMM_LISTEN_PATIENCE: Duration = Duration::from_secs(10);

/// Waits until the VMM `child` accepts connections on `socket`, or exits, or
/// [`VMM_LISTEN_PATIENCE`] passes. A running instance is then one whose VMM can be asked
/// for a snapshot or a shutdown at once: the VMM binds its socket while it builds the VM, a
/// moment after the process starts.
fn wait_until_listening(socket: &Path, child: &mut Child) {
    let start = Instant::now();
    while start.elapsed() < VMM_LISTEN_PATIENCE {
        if control::query_disks(socket).is_ok() || !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::warn!(socket = %socket.display(), "the VMM is not listening on its control socket yet");
}
