//! The VMM's control socket (`api_socket`, `--api-socket`): one JSON request per connection, one JSON
//! reply. It switches a running disk to a new top layer, which is how a volume is
//! snapshotted while its instance runs, and presses Ctrl+Alt+Del, which is how the host
//! asks the guest to shut down:
//!
//! ```text
//! {"op": "pause-disk", "id": "vol-…"}                     flush and hold the disk's requests
//! {"op": "switch-disk", "id": "vol-…", "path": "…", "format": "qcow2"}   reopen, then resume
//! {"op": "resume-disk", "id": "vol-…"}                    resume without switching
//! {"op": "ctrl-alt-del"}                                  press the keys on the i8042 keyboard
//! {"op": "query-disks"}                                   each disk's id and whether it is paused
//! ```
//!
//! The socket is served on its own thread; a malformed or oversized request gets an error
//! reply and changes nothing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::block::qcow2::ChainPolicy;
use crate::block::{self, DiskFormat};
use crate::vmm::devices::legacy::i8042::I8042;
use crate::vmm::devices::virtio::block::DiskHandle;
use crate::vmm::seccomp::ThreadKind;

/// Longest request accepted.
const MAX_REQUEST: u64 = 4096;

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Flush the disk and hold its requests.
    PauseDisk {
        /// The disk's volume id.
        id: String,
    },
    /// Open `path` as the disk's backend and resume it.
    SwitchDisk {
        /// The disk's volume id.
        id: String,
        /// The new top layer.
        path: PathBuf,
        /// Its format.
        format: DiskFormat,
    },
    /// Resume a paused disk unchanged.
    ResumeDisk {
        /// The disk's volume id.
        id: String,
    },
    /// Press Ctrl+Alt+Del: the guest's init is asked to shut down (or reboot).
    CtrlAltDel,
    /// Report the disks.
    QueryDisks,
}

/// One disk, as `query-disks` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStatus {
    /// The volume id.
    pub id: String,
    /// Whether its requests are held back.
    pub paused: bool,
}

/// What control requests act on.
pub struct ControlTargets {
    /// The disks, by volume id.
    pub disks: HashMap<String, DiskHandle>,
    /// The keyboard controller.
    pub keyboard: Arc<I8042>,
    /// Where new layers and their backing files must lie ([`VmConfig::disk_root`]).
    ///
    /// [`VmConfig::disk_root`]: crate::vmm::api::config::VmConfig::disk_root
    pub disk_root: Option<PathBuf>,
}

/// A control reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The disks (`query-disks`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskStatus>,
}

/// Carries out one request; returns the disks for `query-disks`.
pub fn handle(request: Request, targets: &ControlTargets) -> Result<Vec<DiskStatus>, String> {
    let disk = |id: &str| targets.disks.get(id).ok_or_else(|| format!("no disk {id:?}"));
    match request {
        Request::PauseDisk { id } => {
            disk(&id)?.pause().map_err(|e| format!("flush failed: {e}"))?;
            Ok(Vec::new())
        }
        Request::SwitchDisk { id, path, format } => {
            let handle = disk(&id)?;
            let root = targets.disk_root.as_deref();
            if let Some(root) = root {
                // The new layer itself, as its backing files below.
                let resolved = path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))?;
                ChainPolicy::confined_to(root)
                    .check_confined(&resolved)
                    .map_err(|reason| format!("{}: {reason}", path.display()))?;
            }
            let backend = block::open_disk(&path, format, false, root).map_err(|e| e.to_string())?;
            handle.switch(backend)?;
            handle.resume();
            tracing::info!(disk = id, path = %path.display(), "disk switched to a new layer");
            Ok(Vec::new())
        }
        Request::ResumeDisk { id } => {
            disk(&id)?.resume();
            Ok(Vec::new())
        }
        Request::CtrlAltDel => {
            targets.keyboard.press_ctrl_alt_del();
            tracing::info!("Ctrl+Alt+Del pressed");
            Ok(Vec::new())
        }
        Request::QueryDisks => {
            let mut disks: Vec<DiskStatus> = targets
                .disks
                .iter()
                .map(|(id, handle)| DiskStatus { id: id.clone(), paused: handle.is_paused() })
                .collect();
            disks.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(disks)
        }
    }
}

fn serve_one(stream: UnixStream, targets: &ControlTargets) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let reply = match BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line) {
        Err(e) => Err(format!("cannot read the request: {e}")),
        Ok(_) => serde_json::from_str::<Request>(&line)
            .map_err(|e| format!("invalid request: {e}"))
            .and_then(|request| handle(request, targets)),
    };
    let reply = match reply {
        Ok(disks) => Reply { ok: true, error: None, disks },
        Err(e) => {
            tracing::warn!(error = %e, "control request refused");
            Reply { ok: false, error: Some(e), disks: Vec::new() }
        }
    };
    if let Ok(text) = serde_json::to_string(&reply) {
        let _ = (&stream).write_all(format!("{text}\n").as_bytes());
    }
}

/// Serves `listener` on a thread of its own for the life of the process.
pub fn spawn(listener: UnixListener, targets: ControlTargets) -> std::io::Result<()> {
    crate::vmm::threads::spawn(ThreadKind::Control, "control".into(), move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => serve_one(stream, &targets),
                Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
            }
        }
    })?;
    Ok(())
}

/// Sends `request` to the VMM listening on `socket`.
pub fn call(socket: &Path, request: &Request) -> Result<(), String> {
    exchange(socket, request).map(drop)
}

/// The disks of the VMM listening on `socket`.
pub fn query_disks(socket: &Path) -> Result<Vec<DiskStatus>, String> {
    exchange(socket, &Request::QueryDisks)
}

fn exchange(socket: &Path, request: &Request) -> Result<Vec<DiskStatus>, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let text = serde_json::to_string(request).map_err(|e| e.to_string())?;
    stream.write_all(format!("{text}\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(|e| e.to_string())?;
    let reply: Reply = serde_json::from_str(&line).map_err(|e| format!("invalid reply {line:?}: {e}"))?;
    match reply {
        Reply { ok: true, disks, .. } => Ok(disks),
        Reply { error, .. } => Err(error.unwrap_or_else(|| "refused".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_strict_json() {
        let r: Request = serde_json::from_str(r#"{"op": "pause-disk", "id": "vol-1"}"#).unwrap();
        assert_eq!(r, Request::PauseDisk { id: "vol-1".into() });
        let r: Request =
            serde_json::from_str(r#"{"op": "switch-disk", "id": "v", "path": "/x", "format": "qcow2"}"#)
                .unwrap();
        assert!(matches!(r, Request::SwitchDisk { format: DiskFormat::Qcow2, .. }));
        let r: Request = serde_json::from_str(r#"{"op": "ctrl-alt-del"}"#).unwrap();
        assert_eq!(r, Request::CtrlAltDel);
        for bad in [
            r#"{"op": "reboot"}"#,
            r#"{"op": "pause-disk"}"#,
            r#"{"op": "pause-disk", "id": "v", "x": 1}"#,
            "{",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_socket_answers_and_refuses_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vmm.sock");
        let irq = vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let irq_line = crate::vmm::devices::legacy::serial::IrqLine(irq.try_clone().unwrap());
        let keyboard = Arc::new(I8042::new(irq_line, crate::vmm::exit::ExitNotifier::new().unwrap()));
        spawn(
            UnixListener::bind(&socket).unwrap(),
            ControlTargets { disks: HashMap::new(), keyboard, disk_root: None },
        )
        .unwrap();
        let err = call(&socket, &Request::PauseDisk { id: "vol-x".into() }).unwrap_err();
        assert!(err.contains("no disk"), "{err}");
        call(&socket, &Request::CtrlAltDel).unwrap();
        assert_eq!(query_disks(&socket).unwrap(), []);
        assert!(irq.read().is_ok(), "the keys reached the keyboard controller");
        let mut raw = UnixStream::connect(&socket).unwrap();
        raw.write_all(b"not json\n").unwrap();
        let mut reply = String::new();
        BufReader::new(raw).read_line(&mut reply).unwrap();
        assert!(reply.contains("invalid request"), "{reply}");
    }

    /// A live snapshot may switch a disk only to a layer inside the disk root, and only to
    /// one whose backing chain stays there.
    #[test]
    fn layers_outside_the_disk_root_are_refused() {
        use crate::block::qcow2::Qcow2;
        use crate::vmm::devices::virtio::block::VirtioBlock;
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let outside = dir.path().join("outside.raw");
        std::fs::write(&outside, [0u8; 4096]).unwrap();
        let backend = block::open_disk(&outside, DiskFormat::Raw, false, None).unwrap();
        let device = VirtioBlock::new(backend, false, "vol-1", Default::default());
        let irq = vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let irq_line = crate::vmm::devices::legacy::serial::IrqLine(irq);
        let keyboard = Arc::new(I8042::new(irq_line, crate::vmm::exit::ExitNotifier::new().unwrap()));
        let disks = HashMap::from([("vol-1".to_owned(), device.handle())]);
        let targets = ControlTargets { disks, keyboard, disk_root: Some(store.clone()) };
        let switch =
            |path: &Path, format| Request::SwitchDisk { id: "vol-1".into(), path: path.to_owned(), format };
        let err = handle(switch(&outside, DiskFormat::Raw), &targets).unwrap_err();
        assert!(err.contains("outside"), "{err}");
        let escape = store.join("escape.qcow2");
        let secret = outside.to_str().unwrap();
        Qcow2::create(&escape, 4096, Some((secret, "raw"))).unwrap();
        let err = handle(switch(&escape, DiskFormat::Qcow2), &targets).unwrap_err();
        assert!(err.contains("outside"), "{err}");
    }
}
