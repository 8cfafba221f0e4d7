//! Setting everything straight after a daemon start: adopting the VMMs that kept
//! running (found by their command lines, held by pidfds), finishing or undoing what a
//! crash interrupted, and putting disks a killed snapshot left paused back on their
//! volumes' current layers.

use tracing::warn;

use super::{internal, Instances};
use crate::daemon::process::{
    control_socket, disk_serial, instance_dir, proves_own, running_vmms, ProcessHandle, VmmDisk,
};
use crate::daemon::DaemonError;
use crate::state::instance::InstanceState::*;
use crate::store::volume::VolumeRecord;
use crate::store::LayerSwitch;

impl Instances {
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
            // A command line naming the instance's directory proves nothing (anyone can
            // write one): the process must show it is the VMM, or it is left alone.
            let vmm = match running.get(id) {
                None => None,
                Some(&pid) => match ProcessHandle::open(pid).and_then(|handle| {
                    let uid = proves_own(pid, &self.config.vmm, |uid| self.config.jail.holds(uid))
                        .map_err(std::io::Error::other)?;
                    Ok((handle, uid))
                }) {
                    Ok((handle, uid)) => {
                        self.adopted_jail_uid(id, uid);
                        Some((pid, handle))
                    }
                    Err(why) => {
                        warn!(instance = id, pid, "not adopting: {why}");
                        actions
                            .push(format!("left pid {pid} alone: it names {id} but is not its VMM ({why})"));
                        None
                    }
                },
            };
            match (record.state, vmm) {
                (Terminated, Some((pid, handle))) => {
                    // A VMM outliving its instance's termination has nothing to serve.
                    handle.signal(libc::SIGKILL).map_err(internal)?;
                    actions.push(format!("killed the VMM of terminated {id} (pid {pid})"));
                }
                (Terminated, None) => {}
                (state, Some((pid, handle))) => {
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
}
