//! Quotas: what one host can hold, checked before anything is made, with EC2's error
//! names. Volumes are thin (a qcow2 file grows as the guest writes), so their sizes may
//! add up to more than the disk, up to an over-commit ratio of the store's file system;
//! instances that run (or are about to) share the host's CPUs and memory the same way.

use serde::Deserialize;

use super::DaemonError;
use crate::state::instance::{InstanceRecord, InstanceState};
use crate::store::volume::VolumeRecord;

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

impl Quotas {
    /// Checks volumes of `new` bytes each, added to `volumes` (less `replaced`, a volume
    /// being grown, whose old size no longer counts).
    pub fn check_volumes(
        &self,
        host: &Host,
        volumes: &[VolumeRecord],
        new: &[u64],
        replaced: Option<&str>,
    ) -> Result<(), DaemonError> {
        if let Some(&too_big) = new.iter().find(|&&size| size > self.max_volume_bytes) {
            return exceeded(
                Quota::Volume,
                format!("{too_big} bytes; a volume may have at most {}", self.max_volume_bytes),
            );
        }
        let kept: u64 = volumes.iter().filter(|v| Some(v.id.as_str()) != replaced).map(|v| v.size).sum();
        let total = new.iter().fold(kept, |sum, size| sum.saturating_add(*size));
        let allowed = (host.disk_bytes as f64 * self.volume_overcommit) as u64;
        // A file system that reports no size (ramfs) cannot be counted against.
        if host.disk_bytes > 0 && total > allowed {
            return exceeded(
                Quota::Volume,
                format!(
                    "volumes would add up to {total} bytes; this host allows {allowed} ({}× its disk)",
                    self.volume_overcommit
                ),
            );
        }
        Ok(())
    }

    /// Checks `new` more instances and `starting` more running ones (new or stopped
    /// ones started), of `vcpus` and `memory_mib` each, beside `instances`.
    pub fn check_instances(
        &self,
        host: &Host,
        instances: &[InstanceRecord],
        (new, starting): (usize, usize),
        (vcpus, memory_mib): (u32, u32),
    ) -> Result<(), DaemonError> {
        let live = instances.iter().filter(|i| i.state != InstanceState::Terminated).count();
        if live + new > self.max_instances {
            return exceeded(
                Quota::Instance,
                format!("{live} instances and {new} more; at most {}", self.max_instances),
            );
        }
        let running: Vec<&InstanceRecord> = instances
            .iter()
            .filter(|i| {
                matches!(i.state, InstanceState::Pending | InstanceState::Running | InstanceState::Stopping)
            })
            .collect();
        let count = starting as u64;
        let cpus = running.iter().map(|i| u64::from(i.vcpus)).sum::<u64>() + count * u64::from(vcpus);
        let allowed_cpus = u64::from(host.cpus) * u64::from(self.vcpus_per_cpu);
        if cpus > allowed_cpus {
            return exceeded(Quota::Vcpu, format!("{cpus} vCPUs would run; this host allows {allowed_cpus}"));
        }
        let mib =
            running.iter().map(|i| u64::from(i.memory_mib)).sum::<u64>() + count * u64::from(memory_mib);
        let allowed_mib = ((host.memory_bytes >> 20) as f64 * self.memory_overcommit) as u64;
        if mib > allowed_mib {
            return exceeded(
                Quota::Memory,
                format!("{mib} MiB of guest memory would run; this host allows {allowed_mib}"),
            );
        }
        Ok(())
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
        }
    }

    #[test]
    fn thin_volumes_may_overcommit_the_disk_up_to_the_ratio() {
        let quotas = Quotas { max_volume_bytes: 64 * GIB, volume_overcommit: 2.0, ..Quotas::default() };
        let host = Host { disk_bytes: 72 * GIB, cpus: 2, memory_bytes: 4 * GIB };
        let existing = [volume("vol-1", 100 * GIB)];
        assert!(quotas.check_volumes(&host, &existing, &[40 * GIB], None).is_ok());
        let fifty = vec![64 * GIB; 50];
        let err = quotas.check_volumes(&host, &existing, &fifty, None).unwrap_err();
        assert!(matches!(err, DaemonError::QuotaExceeded(Quota::Volume, _)), "{err}");
        let err = quotas.check_volumes(&host, &[], &[64 << 40], None).unwrap_err();
        assert!(
            matches!(&err, DaemonError::QuotaExceeded(Quota::Volume, m) if m.contains("at most")),
            "{err}"
        );
        // Growing a volume counts its new size instead of its old one.
        assert!(quotas.check_volumes(&host, &existing, &[144 * GIB], Some("vol-1")).is_err());
        assert!(quotas.check_volumes(&host, &existing, &[60 * GIB], Some("vol-1")).is_ok());
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
        assert!(quotas.check_instances(&host, &existing, (1, 1), (2, 1024)).is_ok());
        assert!(
            quotas.check_instances(&host, &existing, (0, 1), (2, 1024)).is_ok(),
            "a start adds no instance"
        );
        let quota = |count, size| match quotas.check_instances(&host, &existing, (count, count), size) {
            Err(DaemonError::QuotaExceeded(quota, _)) => Some(quota),
            _ => None,
        };
        assert_eq!(quota(2, (1, 256)), Some(Quota::Instance), "terminated ones do not count");
        assert_eq!(quota(1, (3, 256)), Some(Quota::Vcpu), "stopped ones do not count: 2 + 3 > 4");
        assert_eq!(quota(1, (1, 3 * 1024 + 1)), Some(Quota::Memory));
    }
}
