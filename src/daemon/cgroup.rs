//! cgroup v2 limits per instance: each VMM runs in a cgroup of its own, under the daemon's,
//! whose `cpu.max`, `memory.max` and `pids.max` come from its instance type, so a guest
//! (or a VMM it subverted) can use no more CPU, memory or threads than it was sold. The same
//! cgroup tells what the instance uses, for metrics and scaling policies.
//!
//! Layout, below the cgroup nuaged was started in (`/` in a bare system, the service's
//! cgroup under systemd, which must delegate it): nuaged moves itself into `nuaged/` (a
//! cgroup with processes may not hand controllers to children), and each instance's VMM
//! runs in `instances/<id>/`.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The controllers every instance cgroup gets.
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];
/// The daemon's own leaf, beside `instances`.
const DAEMON_LEAF: &str = "nuaged";
/// `cpu.max`'s period, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;
/// Memory a VMM may use beyond its guest's RAM: its code, heap, thread stacks, device
/// buffers, and what the kernel charges to it (page tables, KVM's structures, the page
/// cache of its disk I/O). The boot benchmark measures 3.3 MiB resident beyond guest RAM;
/// the rest is room for the kernel's share and for I/O. The nested daemon scenario checks
/// a running VMM's peak (`memory.peak`) against the limit.
pub const MEMORY_OVERHEAD_MIB: u64 = 64;
/// Threads a VMM may have beyond one per vCPU: main, control, launcher and a worker per
/// device, with room to spare.
const EXTRA_PIDS: u64 = 32;

/// What an instance cgroup allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// vCPUs: the VMM gets this many CPUs' worth of time (its device threads included).
    pub vcpus: u32,
    /// Guest RAM, in MiB; the VMM may use [`MEMORY_OVERHEAD_MIB`] more.
    pub memory_mib: u32,
}

impl Limits {
    /// The control files and values that express these limits.
    fn files(self) -> [(&'static str, String); 4] {
        let vcpus = u64::from(self.vcpus);
        let memory = (u64::from(self.memory_mib) + MEMORY_OVERHEAD_MIB) << 20;
        [
            ("cpu.max", format!("{} {CPU_PERIOD_US}", vcpus * CPU_PERIOD_US)),
            ("memory.max", memory.to_string()),
            // The guest's RAM is the VMM's anonymous memory: swapping it out would hide an
            // overcommitted host, not relieve it.
            ("memory.swap.max", "0".to_owned()),
            ("pids.max", (vcpus + EXTRA_PIDS).to_string()),
        ]
    }
}

/// What an instance's cgroup says it used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// CPU time of every thread of the VMM, in seconds.
    pub cpu_seconds: f64,
    /// Memory charged to the VMM (guest RAM it touched included), in bytes.
    pub memory_bytes: u64,
}

/// The instance cgroups of this daemon.
#[derive(Debug)]
pub struct Cgroups {
    instances: PathBuf,
}

impl Cgroups {
    /// Sets up `instances/` below the daemon's cgroup, moving the daemon into its own leaf
    /// first when it is not the root. Fails, saying why, where cgroup v2 with the cpu,
    /// memory and pids controllers is not there to use.
    pub fn set_up() -> Result<Self, String> {
        let mount = cgroup2_mount().ok_or("no cgroup2 file system is mounted")?;
        let own =
            std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
        let own =
            own.lines().find_map(|line| line.strip_prefix("0::")).ok_or("this process is in no cgroup v2")?;
        let mut base = mount.join(own.trim_start_matches('/'));
        // After a restart the daemon already runs in its leaf.
        if base.file_name().is_some_and(|name| name == DAEMON_LEAF) {
            base.pop();
        }
        let available = read(&base.join("cgroup.controllers"))?;
        if let Some(missing) = CONTROLLERS.iter().find(|c| !available.split_whitespace().any(|a| a == **c)) {
            return Err(format!("the {missing} controller is not available in {}", base.display()));
        }
        if base != mount {
            let leaf = base.join(DAEMON_LEAF);
            make_dir(&leaf)?;
            write(&leaf.join("cgroup.procs"), "0")?;
        }
        enable_controllers(&base)?;
        let instances = base.join("instances");
        make_dir(&instances)?;
        enable_controllers(&instances)?;
        Ok(Self { instances })
    }

    /// The cgroup of instance `id`.
    pub fn path(&self, id: &str) -> PathBuf {
        self.instances.join(id)
    }

    /// Creates (or resets) instance `id`'s cgroup with `limits`; returns its `cgroup.procs`,
    /// open for the VMM to write itself into before it runs anything.
    pub fn prepare(&self, id: &str, limits: Limits) -> Result<std::fs::File, String> {
        let dir = self.path(id);
        make_dir(&dir)?;
        for (file, value) in limits.files() {
            let path = dir.join(file);
            // memory.swap.max exists only where swap is accounted.
            if file == "memory.swap.max" && !path.exists() {
                continue;
            }
            write(&path, &value)?;
        }
        let procs = dir.join("cgroup.procs");
        std::fs::OpenOptions::new().write(true).open(&procs).map_err(|e| format!("{}: {e}", procs.display()))
    }

    /// Removes instance `id`'s cgroup once its VMM is gone (a cgroup with a process left in
    /// it stays, and is reused by the next launch).
    pub fn remove(&self, id: &str) {
        let dir = self.path(id);
        if let Err(e) = std::fs::remove_dir(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(cgroup = %dir.display(), "cannot remove an instance's cgroup: {e}");
            }
        }
    }

    /// What instance `id` used, from its cgroup.
    pub fn usage(&self, id: &str) -> Option<Usage> {
        let dir = self.path(id);
        let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
        let usec: u64 = stat.lines().find_map(|l| l.strip_prefix("usage_usec "))?.trim().parse().ok()?;
        let memory = std::fs::read_to_string(dir.join("memory.current")).ok()?.trim().parse().ok()?;
        Some(Usage { cpu_seconds: usec as f64 / 1e6, memory_bytes: memory })
    }
}

/// Where the cgroup2 file system is mounted (`/sys/fs/cgroup` on a unified host, often
/// `/sys/fs/cgroup/unified` on a hybrid one).
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (fields, rest) = line.split_once(" - ")?;
        let mount_point = fields.split_whitespace().nth(4)?;
        (rest.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

fn enable_controllers(dir: &Path) -> Result<(), String> {
    let wanted: Vec<String> = CONTROLLERS.iter().map(|c| format!("+{c}")).collect();
    write(&dir.join("cgroup.subtree_control"), &wanted.join(" "))
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(format!("{}: {e}", dir.display())),
        _ => Ok(()),
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    let mut file =
        std::fs::OpenOptions::new().write(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(value.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_instance_type() {
        let files = Limits { vcpus: 2, memory_mib: 512 }.files();
        assert_eq!(files[0], ("cpu.max", "200000 100000".to_owned()));
        assert_eq!(files[1], ("memory.max", ((512 + MEMORY_OVERHEAD_MIB) << 20).to_string()));
        assert_eq!(files[2], ("memory.swap.max", "0".to_owned()));
        assert_eq!(files[3], ("pids.max", "34".to_owned()));
    }
}
