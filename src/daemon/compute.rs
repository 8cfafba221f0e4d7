//! The seam the controllers (load balancers, auto scaling groups, environments) drive
//! instances through. A controller acts as an API caller would, never on the store or the
//! network plane: [`Compute`] holds what it may do, the daemon implements it with the same
//! services the API calls, and a controller's unit tests put a fake in its place that keeps
//! instances in memory. Controllers mark what they launch with tags, as AWS does, and find
//! their instances again by them, so the database stays the one record of what exists.

use std::net::Ipv4Addr;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::broadcast;

use super::describe::Tagged;
use super::events::StateEvent;
use super::instances::{RunSpec, StateChange};
use super::templates::{self, LaunchTemplateData, VersionSpec, Which};
use super::{Daemon, DaemonError};
use crate::state::instance::{InstanceRecord, InstanceState};
use crate::store::bundle::Bundle;

/// A launch template's version, ready to launch.
#[derive(Debug, Clone)]
pub struct TemplateLaunch {
    /// The template's id.
    pub template_id: String,
    /// Its name.
    pub template_name: String,
    /// The version's number.
    pub version: u32,
    /// What it launches.
    pub spec: RunSpec,
}

/// What a controller may do with instances, launch templates and Elastic IPs.
pub trait Compute: Send + Sync {
    /// Version `version` of launch template `which`, as RunInstances would launch it.
    fn launch_template(&self, which: &Which, version: VersionSpec) -> Result<TemplateLaunch, DaemonError>;
    /// A version of launch template `name` that launches exactly `data`, made (with the
    /// template, if need be) unless one is there: asking again after a crash makes nothing
    /// new. Returns the template's id and the version's number.
    fn template_version_for(
        &self,
        name: &str,
        data: &LaunchTemplateData,
    ) -> Result<(String, u32), DaemonError>;
    /// Deletes launch template `name` (none: nothing happens).
    fn delete_launch_template(&self, name: &str) -> Result<(), DaemonError>;
    /// Refuses what `data` names and does not exist (image, subnet, key pair, instance
    /// type), before a controller makes anything of it.
    fn check_launch(&self, data: &LaunchTemplateData) -> Result<(), DaemonError>;
    /// Launches instances as RunInstances does, each carrying `spec.tags` from the start.
    fn run_instances(&self, spec: &RunSpec) -> Result<Vec<InstanceRecord>, DaemonError>;
    /// Terminates instances as TerminateInstances does.
    fn terminate_instances(&self, ids: &[String]) -> Result<Vec<StateChange>, DaemonError>;
    /// Every instance not terminated.
    fn live_instances(&self) -> Result<Vec<InstanceRecord>, DaemonError>;
    /// The instances not terminated that carry tag `key` (with exactly `value`, when one
    /// is given), with all their tags.
    fn instances_tagged(
        &self,
        key: &str,
        value: Option<&str>,
    ) -> Result<Vec<Tagged<InstanceRecord>>, DaemonError>;
    /// The CPU seconds instance `record`'s VMM has used (none: not running, or unknown).
    fn cpu_seconds(&self, record: &InstanceRecord) -> Option<f64>;
    /// Instance state changes from now on (a controller still rereads the state: events
    /// only say when to look).
    fn instance_events(&self) -> broadcast::Receiver<StateEvent>;
    /// Holds Elastic IP `allocation_id` for `holder` (a load balancer's ARN) and puts it
    /// on the uplink; returns the address. Holding it again for the same holder is a no-op.
    fn hold_address(&self, allocation_id: &str, holder: &str) -> Result<Ipv4Addr, DaemonError>;
    /// Ends `holder`'s hold on Elastic IP `allocation_id` (none: nothing happens).
    fn unhold_address(&self, allocation_id: &str, holder: &str) -> Result<(), DaemonError>;
    /// Every held Elastic IP, as (allocation id, holder).
    fn held_addresses(&self) -> Result<Vec<(String, String)>, DaemonError>;
    /// Keeps an application source bundle (checked to be a whole tar.gz or zip).
    fn keep_bundle(&self, bytes: &[u8]) -> Result<Bundle, DaemonError>;
    /// Every bundle kept, by SHA-256.
    fn bundles(&self) -> Result<Vec<String>, DaemonError>;
    /// Drops bundle `sha256`.
    fn drop_bundle(&self, sha256: &str) -> Result<(), DaemonError>;
}

impl Compute for Daemon {
    fn launch_template(&self, which: &Which, version: VersionSpec) -> Result<TemplateLaunch, DaemonError> {
        let (template, chosen) = self.templates.version(which, version)?;
        Ok(TemplateLaunch {
            template_id: template.id,
            template_name: template.name,
            version: chosen.number,
            spec: templates::run_spec(chosen.data, &self.key_pairs)?,
        })
    }

    fn template_version_for(
        &self,
        name: &str,
        data: &LaunchTemplateData,
    ) -> Result<(String, u32), DaemonError> {
        let Some(template) = self.templates.list()?.into_iter().find(|t| t.name == name) else {
            return Ok((self.templates.create(name, "", data.clone())?.id, 1));
        };
        if let Some(version) = template.versions.iter().rev().find(|v| v.data == *data) {
            return Ok((template.id, version.number));
        }
        let (template, version) =
            self.templates.create_version(&Which::Id(template.id), None, "", data.clone())?;
        Ok((template.id, version.number))
    }

    fn delete_launch_template(&self, name: &str) -> Result<(), DaemonError> {
        match self.templates.list()?.into_iter().find(|t| t.name == name) {
            Some(template) => self.templates.delete(&Which::Id(template.id)).map(|_| ()),
            None => Ok(()),
        }
    }

    fn check_launch(&self, data: &LaunchTemplateData) -> Result<(), DaemonError> {
        data.check(&self.config)?;
        if !data.image_id.is_empty() {
            self.images.describe(std::slice::from_ref(&data.image_id))?;
        }
        if !data.subnet_id.is_empty() && !self.network.subnets()?.iter().any(|s| s.id == data.subnet_id) {
            return Err(crate::net::NetError::NotFound(data.subnet_id.clone()).into());
        }
        if !data.key_name.is_empty() {
            self.key_pairs.get(&data.key_name)?;
        }
        Ok(())
    }

    fn run_instances(&self, spec: &RunSpec) -> Result<Vec<InstanceRecord>, DaemonError> {
        self.instances.run(spec)
    }

    fn terminate_instances(&self, ids: &[String]) -> Result<Vec<StateChange>, DaemonError> {
        self.instances.terminate(ids)
    }

    fn live_instances(&self) -> Result<Vec<InstanceRecord>, DaemonError> {
        let live: Vec<InstanceState> =
            InstanceState::ALL.into_iter().filter(|s| *s != InstanceState::Terminated).collect();
        self.instances.describe(&[], &live)
    }

    fn instances_tagged(
        &self,
        key: &str,
        value: Option<&str>,
    ) -> Result<Vec<Tagged<InstanceRecord>>, DaemonError> {
        let mut index = self.tags.index()?;
        Ok(self
            .live_instances()?
            .into_iter()
            .map(|record| Tagged { tags: index.remove(&record.id).unwrap_or_default(), record })
            .filter(|item| {
                item.tags.iter().any(|tag| tag.key == key && value.map_or(true, |v| tag.value == v))
            })
            .collect())
    }

    fn cpu_seconds(&self, record: &InstanceRecord) -> Option<f64> {
        self.instances.usage(record).map(|usage| usage.cpu_seconds)
    }

    fn instance_events(&self) -> broadcast::Receiver<StateEvent> {
        self.events.subscribe()
    }

    fn hold_address(&self, allocation_id: &str, holder: &str) -> Result<Ipv4Addr, DaemonError> {
        self.network.hold_address(allocation_id, holder)
    }

    fn unhold_address(&self, allocation_id: &str, holder: &str) -> Result<(), DaemonError> {
        self.network.unhold_address(allocation_id, holder)
    }

    fn held_addresses(&self) -> Result<Vec<(String, String)>, DaemonError> {
        self.network.held_addresses()
    }

    fn keep_bundle(&self, bytes: &[u8]) -> Result<Bundle, DaemonError> {
        self.bundles.keep(bytes)
    }

    fn bundles(&self) -> Result<Vec<String>, DaemonError> {
        self.bundles.list()
    }

    fn drop_bundle(&self, sha256: &str) -> Result<(), DaemonError> {
        self.bundles.remove(sha256)
    }
}

/// A controller's reconcile loop: one thread making passes, woken by every change the
/// controller makes ([`Reconciler::wake`]), by every instance event, and once an
/// `interval` regardless (level-triggered: whatever was missed is caught up on the next
/// pass).
pub struct Reconciler {
    wake: mpsc::Sender<()>,
    woken: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Default for Reconciler {
    fn default() -> Self {
        let (wake, woken) = mpsc::channel();
        Self { wake, woken: Mutex::new(Some(woken)) }
    }
}

impl Reconciler {
    /// Asks for a pass soon.
    pub fn wake(&self) {
        let _ = self.wake.send(());
    }

    /// Starts the loop (once; later calls do nothing) on threads named after `name`,
    /// making `pass` on `controller` until the process ends.
    pub fn start<C: Send + Sync + 'static>(
        &self,
        name: &str,
        controller: Arc<C>,
        events: broadcast::Receiver<StateEvent>,
        interval: Duration,
        pass: fn(&C),
    ) -> std::io::Result<()> {
        let Some(woken) = self.woken.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return Ok(());
        };
        let wake = self.wake.clone();
        let mut events = events;
        std::thread::Builder::new().name(format!("{name}-events")).spawn(move || loop {
            match events.blocking_recv() {
                // A lagging receiver missed events: a pass rereads everything anyway.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if wake.send(()).is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        })?;
        std::thread::Builder::new().name(format!("{name}-reconcile")).spawn(move || loop {
            pass(&controller);
            match woken.recv_timeout(interval) {
                Ok(()) => while woken.try_recv().is_ok() {},
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        })?;
        Ok(())
    }
}

/// An in-memory [`Compute`] for controllers' unit tests: instances are records in a list,
/// launched running with the next address of 10.0.0.0/24, and moved by the test.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::Mutex;

    use super::*;
    use crate::daemon::events::Events;
    use crate::net::ipam::ElasticIp;
    use crate::net::NetError;
    use crate::state::instance::MetadataOptions;
    use crate::state::tag::Tag;

    /// The fake.
    #[derive(Default)]
    pub(crate) struct FakeCompute {
        instances: Mutex<Vec<Tagged<InstanceRecord>>>,
        /// CPU seconds by instance, as the test sets them.
        cpu: Mutex<std::collections::HashMap<String, f64>>,
        /// Templates as (id, name, the data of each version from 1).
        templates: Mutex<Vec<(String, String, Vec<LaunchTemplateData>)>>,
        addresses: Mutex<Vec<ElasticIp>>,
        /// Bundles kept, by SHA-256.
        bundles: Mutex<std::collections::BTreeSet<String>>,
        events: Events,
    }

    impl FakeCompute {
        fn instances(&self) -> std::sync::MutexGuard<'_, Vec<Tagged<InstanceRecord>>> {
            self.instances.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        fn kept_bundles(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
            self.bundles.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        fn addresses(&self) -> std::sync::MutexGuard<'_, Vec<ElasticIp>> {
            self.addresses.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        /// Makes a launch template whose versions launch `images`, one each; returns its id.
        pub(crate) fn add_template(&self, name: &str, images: &[&str]) -> String {
            let id = crate::state::id::new_id("lt");
            let versions = images
                .iter()
                .map(|i| LaunchTemplateData { image_id: (*i).to_owned(), ..LaunchTemplateData::default() })
                .collect();
            self.templates.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((
                id.clone(),
                name.into(),
                versions,
            ));
            id
        }

        /// Allocates an Elastic IP (the next of 192.168.0.0/24) and returns its id.
        pub(crate) fn allocate_address(&self) -> String {
            let mut addresses = self.addresses();
            let n = u8::try_from(addresses.len() + 10).unwrap_or(u8::MAX);
            let id = crate::state::id::new_id("eipalloc");
            addresses.push(ElasticIp {
                id: id.clone(),
                public_ip: Ipv4Addr::new(192, 168, 0, n),
                private_ip: None,
                holder: None,
            });
            id
        }

        /// Sets the CPU seconds instance `id` has used.
        pub(crate) fn set_cpu_seconds(&self, id: &str, seconds: f64) {
            self.cpu.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.into(), seconds);
        }

        /// Moves instance `id` to `state`, as the daemon would, and says so.
        pub(crate) fn set_state(&self, id: &str, state: InstanceState) {
            if let Some(item) = self.instances().iter_mut().find(|i| i.record.id == id) {
                item.record.state = state;
            }
            self.events.publish(id, state);
        }
    }

    impl Compute for FakeCompute {
        fn launch_template(
            &self,
            which: &Which,
            version: VersionSpec,
        ) -> Result<TemplateLaunch, DaemonError> {
            let templates = self.templates.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (id, name, versions) = templates
                .iter()
                .find(|(id, name, _)| match which {
                    Which::Id(wanted) => id == wanted,
                    Which::Name(wanted) => name == wanted,
                })
                .ok_or_else(|| templates::TemplateError::NameNotFound(format!("{which:?}")))?;
            let latest = u32::try_from(versions.len()).unwrap_or(u32::MAX);
            let number = match version {
                VersionSpec::Latest => latest,
                VersionSpec::Default => 1,
                VersionSpec::Number(n) => n,
            };
            let data = (number >= 1)
                .then(|| versions.get(number as usize - 1))
                .flatten()
                .ok_or_else(|| templates::TemplateError::VersionNotFound(id.clone(), version.to_string()))?;
            Ok(TemplateLaunch {
                template_id: id.clone(),
                template_name: name.clone(),
                version: number,
                spec: RunSpec { image_id: data.image_id.clone(), ..RunSpec::default() },
            })
        }

        fn template_version_for(
            &self,
            name: &str,
            data: &LaunchTemplateData,
        ) -> Result<(String, u32), DaemonError> {
            let mut templates = self.templates.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let at = match templates.iter().position(|(_, n, _)| n == name) {
                Some(at) => at,
                None => {
                    templates.push((crate::state::id::new_id("lt"), name.to_owned(), Vec::new()));
                    templates.len() - 1
                }
            };
            let (id, _, versions) = &mut templates[at];
            let number = match versions.iter().position(|v| v == data) {
                Some(n) => n + 1,
                None => {
                    versions.push(data.clone());
                    versions.len()
                }
            };
            Ok((id.clone(), u32::try_from(number).unwrap_or(u32::MAX)))
        }

        fn check_launch(&self, data: &LaunchTemplateData) -> Result<(), DaemonError> {
            match data.image_id.starts_with("ami-") || data.image_id.is_empty() {
                true => Ok(()),
                false => Err(DaemonError::InvalidParameter(format!("no image {}", data.image_id))),
            }
        }

        fn delete_launch_template(&self, name: &str) -> Result<(), DaemonError> {
            self.templates
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|(_, n, _)| n != name);
            Ok(())
        }

        fn run_instances(&self, spec: &RunSpec) -> Result<Vec<InstanceRecord>, DaemonError> {
            let mut instances = self.instances();
            let mut made = Vec::new();
            for _ in 0..spec.count.max(1) {
                let n = u8::try_from(instances.len() + 2)
                    .map_err(|_| DaemonError::LimitExceeded("full".into()))?;
                let record = InstanceRecord {
                    id: crate::state::id::new_id("i"),
                    image_id: spec.image_id.clone(),
                    instance_type: spec.instance_type.clone(),
                    vcpus: 1,
                    memory_mib: 256,
                    root_volume_id: String::new(),
                    state: InstanceState::Running,
                    state_reason: String::new(),
                    pid: None,
                    launch_time: i64::from(n),
                    subnet_id: spec.subnet_id.clone(),
                    private_ip: (!spec.subnet_id.is_empty()).then_some(Ipv4Addr::new(10, 0, 0, n)),
                    key_name: String::new(),
                    metadata_options: MetadataOptions::default(),
                };
                let tags = spec.tags.iter().chain(&spec.reserved_tags).cloned().collect();
                instances.push(Tagged { record: record.clone(), tags });
                self.events.publish(&record.id, record.state);
                made.push(record);
            }
            Ok(made)
        }

        fn terminate_instances(&self, ids: &[String]) -> Result<Vec<StateChange>, DaemonError> {
            let mut changes = Vec::new();
            for id in ids {
                let previous =
                    self.instances().iter().find(|i| &i.record.id == id).map(|i| i.record.state).ok_or_else(
                        || DaemonError::State(crate::state::db::StateError::NotFound(id.clone())),
                    )?;
                self.set_state(id, InstanceState::Terminated);
                changes.push(StateChange { id: id.clone(), previous, current: InstanceState::Terminated });
            }
            Ok(changes)
        }

        fn live_instances(&self) -> Result<Vec<InstanceRecord>, DaemonError> {
            Ok(self
                .instances()
                .iter()
                .filter(|i| i.record.state != InstanceState::Terminated)
                .map(|i| i.record.clone())
                .collect())
        }

        fn instances_tagged(
            &self,
            key: &str,
            value: Option<&str>,
        ) -> Result<Vec<Tagged<InstanceRecord>>, DaemonError> {
            let wanted =
                |tags: &[Tag]| tags.iter().any(|t| t.key == key && value.map_or(true, |v| t.value == v));
            Ok(self
                .instances()
                .iter()
                .filter(|i| i.record.state != InstanceState::Terminated && wanted(&i.tags))
                .map(|i| Tagged { record: i.record.clone(), tags: i.tags.clone() })
                .collect())
        }

        fn cpu_seconds(&self, record: &InstanceRecord) -> Option<f64> {
            self.cpu.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&record.id).copied()
        }

        fn instance_events(&self) -> broadcast::Receiver<StateEvent> {
            self.events.subscribe()
        }

        fn hold_address(&self, allocation_id: &str, holder: &str) -> Result<Ipv4Addr, DaemonError> {
            let mut addresses = self.addresses();
            let address = addresses
                .iter_mut()
                .find(|a| a.id == allocation_id)
                .ok_or_else(|| NetError::AllocationNotFound(allocation_id.into()))?;
            match &address.holder {
                Some(other) if other != holder => {
                    Err(NetError::AddressInUse(format!("held by {other}")).into())
                }
                _ => {
                    address.holder = Some(holder.into());
                    Ok(address.public_ip)
                }
            }
        }

        fn unhold_address(&self, allocation_id: &str, holder: &str) -> Result<(), DaemonError> {
            let mut addresses = self.addresses();
            if let Some(address) =
                addresses.iter_mut().find(|a| a.id == allocation_id && a.holder.as_deref() == Some(holder))
            {
                address.holder = None;
            }
            Ok(())
        }

        fn held_addresses(&self) -> Result<Vec<(String, String)>, DaemonError> {
            Ok(self.addresses().iter().filter_map(|a| Some((a.id.clone(), a.holder.clone()?))).collect())
        }

        fn keep_bundle(&self, bytes: &[u8]) -> Result<Bundle, DaemonError> {
            let (format, entries) = crate::store::bundle::check(bytes)?;
            let sha256 = crate::store::bundle::sha256_hex(bytes);
            self.kept_bundles().insert(sha256.clone());
            Ok(Bundle { sha256, size: bytes.len() as u64, format, entries })
        }

        fn bundles(&self) -> Result<Vec<String>, DaemonError> {
            Ok(self.kept_bundles().iter().cloned().collect())
        }

        fn drop_bundle(&self, sha256: &str) -> Result<(), DaemonError> {
            self.kept_bundles().remove(sha256);
            Ok(())
        }
    }
}
