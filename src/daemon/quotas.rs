//! Quotas: what one host can hold, checked before anything is made, with EC2's error
//! names. Volumes are thin (a qcow2 file grows as the guest writes), so their sizes may
//! add up to more than the disk, up to an over-commit ratio of the store's file system;
//! instances that run (or are about to) share the host's CPUs and memory the same way.
//!
//! Requests are admitted one at a time ([`Admissions`]): what an admitted request has not
//! made yet stays reserved, so two racing requests cannot both fit in room for one, and
//! is released as the record that counts it is written (under the same lock, so nothing
//! is counted twice or not at all).

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Deserialize;

use super::DaemonError;
use crate::state::db::InstanceStore;
use crate::state::instance::{InstanceRecord, InstanceState};
use crate::store::volume::VolumeRecord;
use crate::store::{disk_size, Store};
/// The limits, in the daemon's configuration (`quotas`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// The largest volume, in bytes.
    pub max_volume_bytes: u64,
    /// How many times the store's file system the volumes' sizes may add up to.
    pub volume_overcommit: f64,
    /// The most instances not terminated.
    pub max_instances: usize,
    /// How many vCPUs per host CPU the running instances may have in all.
    pub vcpus_per_cpu: u32,
    /// How many times the host's memory the running instances may have in all.
    pub memory_overcommit: f64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_volume_bytes: 16 << 40,
            volume_overcommit: 4.0,
            max_instances: 256,
            vcpus_per_cpu: 8,
            memory_overcommit: 2.0,
        }
    }
}

/// Which limit a request would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Volume sizes.
    Volume,
    /// The number of instances.
    Instance,
    /// vCPUs of running instances.
    Vcpu,
    /// Memory of running instances.
    Memory,
}

/// What the host has, as the quotas count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// Bytes of the store's file system.
    pub disk_bytes: u64,
    /// CPUs.
    pub cpus: u32,
    /// Bytes of memory.
    pub memory_bytes: u64,
}

impl Host {
    /// This host's CPUs and memory, and `disk_bytes` for the store.
    pub fn this(disk_bytes: u64) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        // SAFETY: sysconf reads a system constant.
        let (pages, page_size) =
            unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
        let memory_bytes =
            u64::try_from(pages.max(0)).unwrap_or(0) * u64::try_from(page_size.max(0)).unwrap_or(0);
        Self { disk_bytes, cpus, memory_bytes }
    }
}

fn exceeded(quota: Quota, message: String) -> Result<(), DaemonError> {
    Err(DaemonError::QuotaExceeded(quota, message))
}

/// What a request adds (or has yet to make, once admitted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claim {
    /// Instances not terminated.
    pub instances: u64,
    /// vCPUs of instances that will run.
    pub vcpus: u64,
    /// MiB of memory of instances that will run.
    pub memory_mib: u64,
    /// Bytes of volumes.
    pub volume_bytes: u64,
}

impl Claim {
    /// `count` instances of `vcpus` and `memory_mib` each, all running.
    pub fn instances(count: usize, (vcpus, memory_mib): (u32, u32)) -> Self {
        Self {
            instances: count as u64,
            vcpus: count as u64 * u64::from(vcpus),
            memory_mib: count as u64 * u64::from(memory_mib),
            volume_bytes: 0,
        }
    }

    /// Volumes of `bytes` in all.
    pub fn volumes(bytes: u64) -> Self {
        Self { volume_bytes: bytes, ..Self::default() }
    }

    /// Each count of this claim and `other` combined by `op`.
    fn each(self, other: Claim, op: fn(u64, u64) -> u64) -> Self {
        Self {
            instances: op(self.instances, other.instances),
            vcpus: op(self.vcpus, other.vcpus),
            memory_mib: op(self.memory_mib, other.memory_mib),
            volume_bytes: op(self.volume_bytes, other.volume_bytes),
        }
    }
}

/// What exists, as the quotas count it.
pub struct Usage<'a> {
    /// The host.
    pub host: Host,
    /// Every instance record.
    pub instances: &'a [InstanceRecord],
    /// Every volume record.
    pub volumes: &'a [VolumeRecord],
    /// A volume being grown, whose old size no longer counts.
    pub replaced: Option<&'a str>,
}

impl Quotas {
    /// Checks the size of one volume.
    pub fn check_volume_size(&self, size: u64) -> Result<(), DaemonError> {
        if size > self.max_volume_bytes {
            return exceeded(
                Quota::Volume,
                format!("{size} bytes; a volume may have at most {}", self.max_volume_bytes),
            );
        }
        Ok(())
    }

    /// Checks `wanted` beside `usage`; what `wanted` does not add is not checked, so a
    /// host over one limit (after a configuration change) still takes the others.
    pub fn check(&self, usage: &Usage<'_>, wanted: &Claim) -> Result<(), DaemonError> {
        let host = &usage.host;
        if wanted.instances > 0 {
            let live = usage.instances.iter().filter(|i| i.state != InstanceState::Terminated).count();
            if (live as u64).saturating_add(wanted.instances) > self.max_instances as u64 {
                return exceeded(
                    Quota::Instance,
                    format!("{live} instances and {} more; at most {}", wanted.instances, self.max_instances),
                );
            }
        }
        let running = || {
            usage.instances.iter().filter(|i| {
                matches!(i.state, InstanceState::Pending | InstanceState::Running | InstanceState::Stopping)
            })
        };
        if wanted.vcpus > 0 {
            let cpus = running().map(|i| u64::from(i.vcpus)).sum::<u64>().saturating_add(wanted.vcpus);
            let allowed = u64::from(host.cpus) * u64::from(self.vcpus_per_cpu);
            if cpus > allowed {
                return exceeded(Quota::Vcpu, format!("{cpus} vCPUs would run; this host allows {allowed}"));
            }
        }
        if wanted.memory_mib > 0 {
            let mib =
                running().map(|i| u64::from(i.memory_mib)).sum::<u64>().saturating_add(wanted.memory_mib);
            let allowed = ((host.memory_bytes >> 20) as f64 * self.memory_overcommit) as u64;
            if mib > allowed {
                return exceeded(
                    Quota::Memory,
                    format!("{mib} MiB of guest memory would run; this host allows {allowed}"),
                );
            }
        }
        // A file system that reports no size (ramfs) cannot be counted against.
        if wanted.volume_bytes > 0 && host.disk_bytes > 0 {
            let kept: u64 =
                usage.volumes.iter().filter(|v| Some(v.id.as_str()) != usage.replaced).map(|v| v.size).sum();
            let total = kept.saturating_add(wanted.volume_bytes);
            let allowed = (host.disk_bytes as f64 * self.volume_overcommit) as u64;
            if total > allowed {
                return exceeded(
                    Quota::Volume,
                    format!(
                        "volumes would add up to {total} bytes; this host allows {allowed} ({}× its disk)",
                        self.volume_overcommit
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Admits requests against the quotas one at a time, keeping what each admitted request
/// has yet to make reserved until it has made it (its records then count it).
pub struct Admissions {
    quotas: Quotas,
    db: Arc<dyn InstanceStore>,
    store: Arc<Store>,
    reserved: Mutex<Claim>,
}

impl Admissions {
    /// Admissions against `quotas`, counting the instances in `db` and volumes in `store`.
    pub fn new(quotas: Quotas, db: Arc<dyn InstanceStore>, store: Arc<Store>) -> Self {
        Self { quotas, db, store, reserved: Mutex::default() }
    }

    /// Admits a request for `wanted` (growing volume `replaced`, if any), or says which
    /// quota it would break; the answer holds `wanted` reserved.
    pub fn admit(&self, wanted: Claim, replaced: Option<&str>) -> Result<Reservation<'_>, DaemonError> {
        if wanted == Claim::default() {
            return Ok(Reservation { admissions: self, held: wanted });
        }
        let mut reserved = self.reserved();
        let usage = Usage {
            host: Host::this(disk_size(self.store.root())?),
            instances: &self.db.list()?,
            volumes: &self.store.volumes()?,
            replaced,
        };
        let after = reserved.each(wanted, u64::saturating_add);
        self.quotas.check(&usage, &after)?;
        *reserved = after;
        Ok(Reservation { admissions: self, held: wanted })
    }

    /// The claims of admitted requests; a panicking holder left them consistent.
    fn reserved(&self) -> MutexGuard<'_, Claim> {
        self.reserved.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What an admitted request has yet to make; released as its records are written, and
/// in full when dropped.
#[must_use = "the reservation ends when dropped"]
pub struct Reservation<'a> {
    admissions: &'a Admissions,
    held: Claim,
}

impl Reservation<'_> {
    /// Runs `write`, which writes the records that count `made` from now on, and releases
    /// `made` if it succeeds; admissions wait meanwhile.
    pub fn make<T, E>(&mut self, made: Claim, write: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let mut reserved = self.admissions.reserved();
        let written = write()?;
        // No more than is held, so nothing reserved by others is released.
        let made = self.held.each(made, std::cmp::min);
        *reserved = reserved.each(made, u64::saturating_sub);
        self.held = self.held.each(made, u64::saturating_sub);
        Ok(written)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut reserved = self.admissions.reserved();
        *reserved = reserved.each(self.held, u64::saturating_sub);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::volume::Parent;

    const GIB: u64 = 1 << 30;

    fn volume(id: &str, size: u64) -> VolumeRecord {
        VolumeRecord {
            id: id.into(),
            size,
            parent: Parent::None,
            attached_to: None,
            delete_on_termination: false,
            created: 0,
            deleting: false,
        }
    }

    fn instance(state: InstanceState, vcpus: u32, memory_mib: u32) -> InstanceRecord {
        InstanceRecord {
            id: "i-1".into(),
            image_id: "ami-1".into(),
            instance_type: "t".into(),
            vcpus,
            memory_mib,
            root_volume_id: String::new(),
            state,
            state_reason: String::new(),
            pid: None,
            launch_time: 0,
            subnet_id: String::new(),
            private_ip: None,
            key_name: String::new(),
            metadata_options: Default::default(),
        }
    }

    fn usage<'a>(
        host: Host,
        instances: &'a [InstanceRecord],
        volumes: &'a [VolumeRecord],
        replaced: Option<&'a str>,
    ) -> Usage<'a> {
        Usage { host, instances, volumes, replaced }
    }

    #[test]
    fn thin_volumes_may_overcommit_the_disk_up_to_the_ratio() {
        let quotas = Quotas { max_volume_bytes: 64 * GIB, volume_overcommit: 2.0, ..Quotas::default() };
        let host = Host { disk_bytes: 72 * GIB, cpus: 2, memory_bytes: 4 * GIB };
        let existing = [volume("vol-1", 100 * GIB)];
        let now = usage(host, &[], &existing, None);
        assert!(quotas.check(&now, &Claim::volumes(40 * GIB)).is_ok());
        let err = quotas.check(&now, &Claim::volumes(50 * 64 * GIB)).unwrap_err();
        assert!(matches!(err, DaemonError::QuotaExceeded(Quota::Volume, _)), "{err}");
        let err = quotas.check_volume_size(64 << 40).unwrap_err();
        assert!(
            matches!(&err, DaemonError::QuotaExceeded(Quota::Volume, m) if m.contains("at most")),
            "{err}"
        );
        // Growing a volume counts its new size instead of its old one.
        let growing = usage(host, &[], &existing, Some("vol-1"));
        assert!(quotas.check(&growing, &Claim::volumes(150 * GIB)).is_err());
        assert!(quotas.check(&growing, &Claim::volumes(60 * GIB)).is_ok());
    }

    #[test]
    fn instances_are_counted_and_running_ones_share_cpus_and_memory() {
        let quotas =
            Quotas { max_instances: 3, vcpus_per_cpu: 2, memory_overcommit: 1.0, ..Quotas::default() };
        let host = Host { disk_bytes: GIB, cpus: 2, memory_bytes: 4 * GIB };
        let existing = [
            instance(InstanceState::Running, 2, 1024),
            instance(InstanceState::Stopped, 4, 4096),
            instance(InstanceState::Terminated, 8, 8192),
        ];
        let now = usage(host, &existing, &[], None);
        assert!(quotas.check(&now, &Claim::instances(1, (2, 1024))).is_ok());
        let start = Claim { instances: 0, ..Claim::instances(1, (2, 1024)) };
        assert!(quotas.check(&now, &start).is_ok(), "a start adds no instance");
        let quota = |count, size| match quotas.check(&now, &Claim::instances(count, size)) {
            Err(DaemonError::QuotaExceeded(quota, _)) => Some(quota),
            _ => None,
        };
        assert_eq!(quota(2, (1, 256)), Some(Quota::Instance), "terminated ones do not count");
        assert_eq!(quota(1, (3, 256)), Some(Quota::Vcpu), "stopped ones do not count: 2 + 3 > 4");
        assert_eq!(quota(1, (1, 3 * 1024 + 1)), Some(Quota::Memory));
        let over = Quotas { max_instances: 1, ..quotas.clone() };
        assert!(over.check(&now, &Claim::volumes(GIB)).is_ok(), "a volume is not refused for instances");
    }

    #[test]
    fn reservations_count_until_released_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(crate::state::db::Database::open(&dir.path().join("db")).unwrap());
        let (store, _) = Store::open(&dir.path().join("store")).unwrap();
        let quotas = Quotas { max_instances: 3, ..Quotas::default() };
        let admissions = Admissions::new(quotas, db, Arc::new(store));
        let mut two = admissions.admit(Claim::instances(2, (1, 64)), None).unwrap();
        let refused = admissions.admit(Claim::instances(2, (1, 64)), None).err();
        assert!(matches!(refused, Some(DaemonError::QuotaExceeded(Quota::Instance, _))), "{refused:?}");
        let one = admissions.admit(Claim::instances(1, (1, 64)), None).unwrap();
        let failed: Result<(), &str> = two.make(Claim::instances(2, (1, 64)), || Err("no record"));
        assert!(failed.is_err());
        assert_eq!(*admissions.reserved(), Claim::instances(3, (1, 64)), "a failed write releases nothing");
        two.make(Claim::instances(5, (1, 64)), || Ok::<_, ()>(())).unwrap();
        assert_eq!(two.held, Claim::default(), "no more is released than was held");
        assert_eq!(*admissions.reserved(), Claim::instances(1, (1, 64)));
        drop(one);
        assert_eq!(*admissions.reserved(), Claim::default());
        drop(two);
        assert!(admissions.admit(Claim::instances(3, (1, 64)), None).is_ok());
    }
}
