//! The instance core: the service the API (and the controllers to come) drive to run,
//! start, stop, reboot, terminate and describe instances.
//!
//! - [`lifecycle`]: the table of which request moves which state where, and what follows a
//!   VMM's end; pure, and tested as such;
//! - `launch`: RunInstances' checks and preparation, and starting a VMM;
//! - `supervision`: a thread per VMM that records its end; stopping a VMM;
//! - `recovery`: adopting running VMMs and finishing interrupted work after a restart;
//! - `filters`: DescribeInstances' own filter names.
//!
//! Every step is recorded before it is taken (the instance row first, then its volume,
//! then its process), so [`Instances::recover`] can finish or undo whatever a crash
//! interrupted: no volume without an instance, no VMM without a record, no instance
//! stuck in pending. Each state change is published on [`crate::daemon::events`].

mod filters;
mod launch;
pub mod lifecycle;
mod recovery;
mod supervision;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use launch::{LaunchVolume, RunSpec};
use lifecycle::Request;
use supervision::Vmm;

use super::cgroup::{Cgroups, Usage};
use super::cidata;
use super::config::DaemonConfig;
use super::events::Events;
use super::process::{self, console_log, console_tail, control_socket, instance_dir};
use super::quotas::{Admissions, Claim};
use super::watch::Watch;
use super::{failpoint, DaemonError};
use crate::net::plane::NetworkPlane;
use crate::state::db::{InstanceStore, StateError};
use crate::state::instance::{InstanceRecord, InstanceState, LaunchData, MetadataChange, MetadataOptions};
use crate::state::tag::TagStore;
use crate::store::Store;

use InstanceState::*;

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

/// The instances of one daemon.
#[derive(Clone)]
pub struct Instances {
    db: Arc<dyn InstanceStore>,
    store: Arc<Store>,
    plane: Arc<NetworkPlane>,
    /// Where the tags of volumes deleted with their instance are forgotten.
    tags: Arc<dyn TagStore>,
    config: Arc<DaemonConfig>,
    /// Where launches and starts are admitted against the quotas.
    admissions: Arc<Admissions>,
    /// The running VMMs, held by pidfds so that a signal cannot hit a reused pid.
    vmms: Arc<Mutex<HashMap<String, Arc<Vmm>>>>,
    /// Instances being rebooted: when their VMM ends, a new one starts.
    rebooting: Arc<Mutex<HashSet<String>>>,
    /// Quick guest-initiated reboots in a row, per instance (see `supervision`).
    reboot_loops: Arc<Mutex<HashMap<String, u32>>>,
    /// One lock per instance, held while its VMM is launched or its termination finished,
    /// so a start and a terminate racing on it take turns.
    turns: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
    /// Where every state change is published.
    events: Events,
    /// The instances' cgroups, where cgroup v2 can hold them.
    cgroups: Option<Arc<Cgroups>>,
    /// The user each instance's VMM is jailed as, held from its first launch until it
    /// is terminated (see [`crate::daemon::config::JailUsers`]).
    jail_uids: Arc<Mutex<HashMap<String, u32>>>,
}

impl Instances {
    /// Instances recorded in `db`, with volumes in `store` and interfaces on `plane`,
    /// admitted through `admissions`, publishing their state changes to `events`.
    pub fn new(
        db: Arc<dyn InstanceStore>,
        store: Arc<Store>,
        plane: Arc<NetworkPlane>,
        tags: Arc<dyn TagStore>,
        config: Arc<DaemonConfig>,
        admissions: Arc<Admissions>,
        events: Events,
    ) -> Self {
        let (vmms, rebooting, reboot_loops, turns, jail_uids) = Default::default();
        let cgroups = None;
        Self {
            db,
            store,
            plane,
            tags,
            config,
            admissions,
            vmms,
            rebooting,
            reboot_loops,
            turns,
            events,
            cgroups,
            jail_uids,
        }
    }

    /// Runs every VMM in a cgroup of `cgroups`, limited as its instance type says.
    pub fn with_cgroups(mut self, cgroups: Arc<Cgroups>) -> Self {
        self.cgroups = Some(cgroups);
        self
    }

    /// What running instance `record`'s VMM uses: from its cgroup, or from `/proc` where
    /// instances have none.
    pub fn usage(&self, record: &InstanceRecord) -> Option<Usage> {
        match &self.cgroups {
            Some(cgroups) => cgroups.usage(&record.id),
            None => record.pid.and_then(process::usage),
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

    /// Boots stopped instances again.
    pub fn start(&self, ids: &[String]) -> Result<Vec<StateChange>, DaemonError> {
        let runs = |record: &InstanceRecord| Claim {
            instances: 0,
            ..Claim::instances(1, (record.vcpus, record.memory_mib))
        };
        self.apply(ids, Request::Start, runs, |id| self.launch(id).map(drop))
    }

    /// Stops running instances: their guests are asked to shut down (unless `force`), and
    /// their VMMs stopped once they have not in the stop timeout. Returns once each has
    /// stopped.
    pub fn stop(&self, ids: &[String], force: bool) -> Result<Vec<StateChange>, DaemonError> {
        self.apply(
            ids,
            Request::Stop,
            |_| Claim::default(),
            |id| {
                self.shut_down(id, !force);
                Ok(())
            },
        )
    }

    /// Reboots running instances: each guest is asked to shut down as for a stop, and its
    /// instance starts again on a new VMM (same volumes and address) once it has; the
    /// instance stays running throughout. Returns once each runs on its new VMM.
    pub fn reboot(&self, ids: &[String]) -> Result<Vec<StateChange>, DaemonError> {
        self.check_all(ids, Request::Reboot)?;
        for id in ids {
            lock(&self.rebooting).insert(id.clone());
            self.shut_down(id, true);
            lock(&self.rebooting).remove(id);
        }
        ids.iter()
            .map(|id| Ok(StateChange { id: id.clone(), previous: Running, current: self.db.get(id)?.state }))
            .collect()
    }

    /// Terminates instances: stops their VMMs and deletes their root volumes.
    pub fn terminate(&self, ids: &[String]) -> Result<Vec<StateChange>, DaemonError> {
        self.apply(
            ids,
            Request::Terminate,
            |_| Claim::default(),
            |id| {
                failpoint("terminate-after-record");
                if self.vmm(id).is_some() {
                    self.shut_down(id, true);
                    Ok(())
                } else {
                    self.finish_termination(id, false)
                }
            },
        )
    }

    /// Checks that every instance in `ids` accepts `request`; then, one by one, each in a
    /// state the request moves is admitted with what it `needs` under the quotas, moved
    /// (recorded first) and acted on by `act`. Reports each instance's state before and
    /// after.
    fn apply(
        &self,
        ids: &[String],
        request: Request,
        needs: impl Fn(&InstanceRecord) -> Claim,
        act: impl Fn(&str) -> Result<(), DaemonError>,
    ) -> Result<Vec<StateChange>, DaemonError> {
        self.check_all(ids, request)?;
        ids.iter()
            .map(|id| {
                let record = self.db.get(id)?;
                let previous = record.state;
                if let Some((next, reason)) = request.moves(previous) {
                    let needed = needs(&record);
                    let mut admitted = self.admissions.admit(needed, None)?;
                    // The new state counts what was needed from then on.
                    let moved = admitted
                        .make(needed, || self.transition(id, &request.moves_from(), next, reason, None));
                    match moved {
                        Ok(_) => act(id)?,
                        // A racing caller moved it first, to where this request has
                        // nothing to do (a second terminate): as if this one came after.
                        Err(StateError::WrongState { actual, .. })
                            if request.accepted_in().contains(&actual) && request.moves(actual).is_none() => {
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(StateChange { id: id.clone(), previous, current: self.db.get(id)?.state })
            })
            .collect()
    }

    /// Changes how the metadata service answers instance `id` (in any state but
    /// terminated); the service reads the options at every request, so a running guest
    /// sees the change at once.
    pub fn modify_metadata_options(
        &self,
        id: &str,
        change: &MetadataChange,
    ) -> Result<MetadataOptions, DaemonError> {
        Ok(self.db.change_metadata_options(id, change)?)
    }

    /// The instance whose VMM may run (pending, running, stopping) holding `ip` on subnet
    /// `subnet_id`, with what it was launched with.
    pub fn at_address(
        &self,
        subnet_id: &str,
        ip: Ipv4Addr,
    ) -> Result<Option<(InstanceRecord, LaunchData)>, DaemonError> {
        let found = self.db.list()?.into_iter().find(|r| {
            r.subnet_id == subnet_id
                && r.private_ip == Some(ip)
                && matches!(r.state, Pending | Running | Stopping)
        });
        match found {
            Some(record) => {
                let launch = self.db.launch_data(&record.id)?;
                Ok(Some((record, launch)))
            }
            None => Ok(None),
        }
    }

    /// The instance's console output so far (the last 64 KiB).
    pub fn console_output(&self, id: &str) -> Result<String, DaemonError> {
        self.db.get(id)?;
        let path = console_log(&instance_dir(&self.config.state_dir, id));
        console_tail(&path, 64 << 10).map_err(|e| DaemonError::Internal(format!("{}: {e}", path.display())))
    }

    /// Follows the instance's console and state from now on (or from the last 64 KiB of
    /// console output, with `from_start`).
    pub fn watch(&self, id: &str, from_start: bool) -> Result<Watch, DaemonError> {
        self.db.get(id)?;
        let console = console_log(&instance_dir(&self.config.state_dir, id));
        Ok(Watch::new(self.db.clone(), self.events.subscribe(), id, console, from_start))
    }

    /// Moves `id` from one of `from` to `next` in the database and publishes the change.
    fn transition(
        &self,
        id: &str,
        from: &[InstanceState],
        next: InstanceState,
        reason: &str,
        pid: Option<i32>,
    ) -> Result<InstanceRecord, StateError> {
        let record = self.db.transition(id, from, next, reason, pid)?;
        self.events.publish(id, next);
        Ok(record)
    }

    /// Fails unless every id exists and is in a state `request` accepts: a request naming
    /// one wrong instance changes none.
    fn check_all(&self, ids: &[String], request: Request) -> Result<(), DaemonError> {
        let allowed = request.accepted_in();
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

    /// Deletes a shutting-down instance's volumes and files and marks it terminated; with
    /// `undo_launch` (a launch that failed or was interrupted), every volume attached to it,
    /// all of which the launch made.
    fn finish_termination(&self, id: &str, undo_launch: bool) -> Result<(), DaemonError> {
        let turn = self.turn(id);
        let _turn = lock(&turn);
        let record = self.db.get(id)?;
        if record.state == Terminated {
            return Ok(()); // a racing caller finished it
        }
        lock(&self.jail_uids).remove(id);
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
                    self.tags.forget_tags(&volume.id)?;
                }
            }
        }
        let dir: PathBuf = instance_dir(&self.config.state_dir, id);
        let _ = std::fs::remove_file(control_socket(&dir));
        cidata::remove(&dir);
        self.transition(id, &[ShuttingDown], Terminated, &reason, None)?;
        lock(&self.turns).remove(id);
        Ok(())
    }

    /// The lock of instance `id`'s launches and termination.
    fn turn(&self, id: &str) -> Arc<Mutex<()>> {
        lock(&self.turns).entry(id.to_owned()).or_default().clone()
    }
}

fn internal(e: std::io::Error) -> DaemonError {
    DaemonError::Internal(e.to_string())
}

/// Locks one of the in-memory maps or flags. A panic while holding one leaves it whole
/// (each change is one insert, remove or store), so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
