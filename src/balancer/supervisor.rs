//! Each load balancer's `nuage-lb` process: its files under `state_dir/balancers/<id>/`
//! (`lb.json` it serves, `status.json` it writes, `lb.log`, `pid`), started in the network
//! plane's namespace in its own process group, with nothing inherited and no capability
//! but binding low ports, told of a new `lb.json` by SIGHUP, restarted when it dies (at
//! most once per [`RESTART_INTERVAL`]), stopped when its load balancer is deleted, and
//! adopted by a restarted daemon without a connection dropped.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::daemon::config::DaemonConfig;
use crate::daemon::process::{
    drop_privileges, inherit_nothing, open_log, proves_own, running_under, ProcessHandle,
    CAP_NET_BIND_SERVICE,
};
use crate::lb::config::{BalancerConfig, BalancerStatus};
use crate::state::file::{create_private_dir, read_json, write_atomic};

/// How often the reconcile loop passes when nothing wakes it.
pub const PASS_INTERVAL: Duration = Duration::from_secs(1);
/// The least time between two starts of one balancer.
pub const RESTART_INTERVAL: Duration = Duration::from_secs(5);
/// How long a stopped balancer gets to end after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

const CONFIG_FILE: &str = "lb.json";
const STATUS_FILE: &str = "status.json";
const LOG_FILE: &str = "lb.log";
const PID_FILE: &str = "pid";

/// A running balancer process.
struct Running {
    handle: ProcessHandle,
    /// Our own child (reaped through it); `None` for an adopted one.
    child: Option<Child>,
}

impl Running {
    fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => self.handle.exited(),
        }
    }

    /// Stops it: SIGTERM, then SIGKILL if it has not ended in [`STOP_TIMEOUT`].
    fn stop(mut self) {
        let _ = self.handle.signal(libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !self.exited() {
            if Instant::now() > deadline {
                let _ = self.handle.signal(libc::SIGKILL);
                if let Some(child) = &mut self.child {
                    let _ = child.wait();
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The balancer processes.
pub struct Supervisor {
    dir: PathBuf,
    binary: PathBuf,
    netns: Option<String>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    adopted: bool,
    running: HashMap<String, Running>,
    started: HashMap<String, Instant>,
}

impl Supervisor {
    /// The processes of `config`'s load balancers.
    pub fn new(config: &DaemonConfig) -> Self {
        Self {
            dir: config.state_dir.join("balancers"),
            binary: config.balancer.clone(),
            netns: config.network.netns.clone(),
            state: Mutex::default(),
        }
    }

    fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// What balancer `id` last reported.
    pub fn status(&self, id: &str) -> Option<BalancerStatus> {
        read_json(&self.dir_of(id).join(STATUS_FILE)).ok()
    }

    /// Makes the processes serve `wanted` (balancer id, configuration): each one running
    /// on its current file, the others stopped and their files removed.
    pub fn converge(&self, wanted: &[(String, BalancerConfig)]) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let adopting = !state.adopted;
        if adopting {
            state.adopted = true;
            self.adopt(&mut state);
        }
        for (id, config) in wanted {
            let changed = match self.write_config(id, config) {
                Ok(changed) => changed,
                Err(e) => {
                    warn!(balancer = %id, "cannot write its configuration: {e}");
                    continue;
                }
            };
            if let Some(running) = state.running.get_mut(id) {
                if running.exited() {
                    let status = running.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                    warn!(balancer = %id, ?status, "the balancer process ended; starting it again");
                    state.running.remove(id);
                } else {
                    // An adopted one may have missed the last change: it rereads its file.
                    if changed || adopting {
                        if let Err(e) = running.handle.signal(libc::SIGHUP) {
                            warn!(balancer = %id, "cannot signal it: {e}");
                        }
                    }
                    continue;
                }
            }
            if state.started.get(id).is_some_and(|at| at.elapsed() < RESTART_INTERVAL) {
                continue;
            }
            state.started.insert(id.clone(), Instant::now());
            match self.spawn(id) {
                Ok(running) => {
                    info!(balancer = %id, name = %config.name, "balancer process started");
                    state.running.insert(id.clone(), running);
                }
                Err(e) => warn!(balancer = %id, "cannot start the balancer process: {e}"),
            }
        }
        let gone: Vec<String> =
            state.running.keys().filter(|id| !wanted.iter().any(|(w, _)| w == *id)).cloned().collect();
        for id in gone {
            if let Some(running) = state.running.remove(&id) {
                info!(balancer = %id, "load balancer deleted: stopping its process");
                running.stop();
            }
            state.started.remove(&id);
        }
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !wanted.iter().any(|(id, _)| *id == name) && !state.running.contains_key(&name) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }

    /// Takes over the balancers a previous daemon started: those running the configured
    /// binary as the daemon's user; any other process naming a balancer's directory is
    /// reported and left alone.
    fn adopt(&self, state: &mut State) {
        for (id, pid) in running_under(&self.dir) {
            if let Err(why) = proves_own(pid, &self.binary, |_| false) {
                warn!(balancer = %id, pid, "not adopting process: {why}");
                continue;
            }
            match ProcessHandle::open(pid) {
                Ok(handle) => {
                    info!(balancer = %id, pid, "adopted the running balancer process");
                    state.running.insert(id, Running { handle, child: None });
                }
                Err(e) => warn!(balancer = %id, pid, "cannot adopt: {e}"),
            }
        }
    }

    /// Writes `config` as balancer `id`'s file unless it already holds it; true if written.
    fn write_config(&self, id: &str, config: &BalancerConfig) -> std::io::Result<bool> {
        let dir = self.dir_of(id);
        create_private_dir(&self.dir)?;
        create_private_dir(&dir)?;
        let path = dir.join(CONFIG_FILE);
        let text = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
        if std::fs::read(&path).is_ok_and(|current| current == text) {
            return Ok(false);
        }
        write_atomic(&path, &text)?;
        Ok(true)
    }

    fn spawn(&self, id: &str) -> std::io::Result<Running> {
        let dir = self.dir_of(id);
        let log = open_log(&dir.join(LOG_FILE))?;
        let netns = match &self.netns {
            Some(name) => Some(File::open(Path::new("/run/netns").join(name))?),
            None => None,
        };
        let mut command = Command::new(&self.binary);
        command.arg("--config").arg(dir.join(CONFIG_FILE)).arg("--status").arg(dir.join(STATUS_FILE));
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0);
        let namespace = netns.as_ref().map(AsRawFd::as_raw_fd);
        // SAFETY: between fork and exec the closure makes only async-signal-safe system
        // calls (close_range, setns, prctl, capset) on descriptors this process owns.
        unsafe {
            command.pre_exec(move || {
                inherit_nothing()?;
                // Into the network plane's namespace, where the bridges are and the
                // listeners must be, before the capability to change it goes.
                if let Some(fd) = namespace {
                    if libc::setns(fd, libc::CLONE_NEWNET) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                drop_privileges(&[CAP_NET_BIND_SERVICE])
            });
        }
        let child = command.spawn()?;
        let pid = child.id() as i32;
        if let Err(e) = write_atomic(&dir.join(PID_FILE), format!("{pid}\n").as_bytes()) {
            warn!(balancer = %id, "cannot write the pid file: {e}");
        }
        Ok(Running { handle: ProcessHandle::open(pid)?, child: Some(child) })
    }
}
