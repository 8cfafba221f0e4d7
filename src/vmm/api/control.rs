//! The VMM's control socket (`api_socket`, `--api-socket`): one JSON request per connection, one JSON
//! reply. It switches a running disk to a new top layer, which is how a volume is
//! snapshotted while its instance runs, and presses Ctrl+Alt+Del, which is how the host
//! asks the guest to shut down:
//!
//! ```text
//! {"op": "pause-disk", "id": "vol-…"}                     flush and hold the disk's requests
//! {"op": "switch-disk", "id": "vol-…", "path": "…"}      put it under a new layer, then resume
//! {"op": "resume-disk", "id": "vol-…"}                    resume without switching
//! {"op": "ctrl-alt-del"}                                  press the keys on the i8042 keyboard
//! {"op": "query-disks"}                                   each disk's id and whether it is paused
//! ```
//!
//! The new layer of `switch-disk` comes with the request as a descriptor (`SCM_RIGHTS`),
//! opened by the daemon: a jailed VMM can open no file of the store itself, and the disk it
//! switches stays open below the layer. `path` only names it in messages.
//!
//! The socket is served on its own thread; a malformed or oversized request gets an error
//! reply and changes nothing.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::block::qcow2::Qcow2;
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
    /// Put the disk under the qcow2 layer sent with the request, and resume it.
    SwitchDisk {
        /// The disk's volume id.
        id: String,
        /// Where the daemon made the new layer, for messages.
        path: PathBuf,
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

/// Carries out one request, which came with `file` (the new layer of `switch-disk`);
/// returns the disks for `query-disks`.
pub fn handle(
    request: Request,
    file: Option<File>,
    targets: &ControlTargets,
) -> Result<Vec<DiskStatus>, String> {
    let disk = |id: &str| targets.disks.get(id).ok_or_else(|| format!("no disk {id:?}"));
    match request {
        Request::PauseDisk { id } => {
            disk(&id)?.pause().map_err(|e| format!("flush failed: {e}"))?;
            Ok(Vec::new())
        }
        Request::SwitchDisk { id, path } => {
            let handle = disk(&id)?;
            let file = file.ok_or("switch-disk needs the new layer's descriptor")?;
            let layer = Qcow2::layer(file, &path).map_err(|e| e.to_string())?;
            handle.stack_layer(layer)?;
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
    let reply = read_request(&stream).and_then(|(line, file)| {
        let request = serde_json::from_str::<Request>(&line).map_err(|e| format!("invalid request: {e}"))?;
        handle(request, file, targets)
    });
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

/// One request line (at most [`MAX_REQUEST`] bytes) and the descriptor sent with it, if any
/// (more than one is refused).
fn read_request(stream: &UnixStream) -> Result<(String, Option<File>), String> {
    let mut line = Vec::new();
    let mut file = None;
    let mut buf = [0u8; 1024];
    while !line.ends_with(b"\n") {
        let room = (MAX_REQUEST as usize).saturating_sub(line.len()).min(buf.len());
        if room == 0 {
            return Err(format!("the request is longer than {MAX_REQUEST} bytes"));
        }
        let (n, sent) =
            stream.recv_with_fd(&mut buf[..room]).map_err(|e| format!("cannot read the request: {e}"))?;
        file = file.or(sent);
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(line).map(|line| (line, file)).map_err(|_| "the request is not UTF-8".to_owned())
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
    exchange(socket, request, None).map(drop)
}

/// Sends `request` with the descriptor of `file` (the new layer of `switch-disk`).
pub fn call_with_file(socket: &Path, request: &Request, file: &File) -> Result<(), String> {
    exchange(socket, request, Some(file)).map(drop)
}

/// The disks of the VMM listening on `socket`.
pub fn query_disks(socket: &Path) -> Result<Vec<DiskStatus>, String> {
    exchange(socket, &Request::QueryDisks, None)
}

fn exchange(socket: &Path, request: &Request, file: Option<&File>) -> Result<Vec<DiskStatus>, String> {
    let stream = UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let text = format!("{}\n", serde_json::to_string(request).map_err(|e| e.to_string())?);
    let fds: Vec<RawFd> = file.iter().map(|file| file.as_raw_fd()).collect();
    let sent = stream.send_with_fds(&[text.as_bytes()], &fds).map_err(|e| e.to_string())?;
    (&stream).write_all(&text.as_bytes()[sent..]).map_err(|e| e.to_string())?;
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
        let r: Request = serde_json::from_str(r#"{"op": "switch-disk", "id": "v", "path": "/x"}"#).unwrap();
        assert_eq!(r, Request::SwitchDisk { id: "v".into(), path: "/x".into() });
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
        spawn(UnixListener::bind(&socket).unwrap(), ControlTargets { disks: HashMap::new(), keyboard })
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

    /// A live snapshot switches a disk to the layer sent with the request, over the disk
    /// as it was; a request without one, or with a layer that is not over anything or not
    /// the disk's size, is refused and the disk left as it was.
    #[test]
    fn a_disk_is_switched_to_the_layer_sent_with_the_request() {
        use crate::block::{self, DiskFormat};
        use crate::vmm::devices::virtio::block::VirtioBlock;
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        std::fs::write(&base, [7u8; 65536]).unwrap();
        let backend = block::open_disk(&base, DiskFormat::Raw, false, None).unwrap();
        let device = VirtioBlock::new(backend, false, "vol-1", Default::default());
        let irq = vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let irq_line = crate::vmm::devices::legacy::serial::IrqLine(irq);
        let keyboard = Arc::new(I8042::new(irq_line, crate::vmm::exit::ExitNotifier::new().unwrap()));
        let disks = HashMap::from([("vol-1".to_owned(), device.handle())]);
        let socket = dir.path().join("vmm.sock");
        spawn(UnixListener::bind(&socket).unwrap(), ControlTargets { disks, keyboard }).unwrap();
        let layer = |name: &str, size: u64, backing: Option<(&str, &str)>| {
            let path = dir.path().join(name);
            Qcow2::create(&path, size, backing).unwrap();
            (std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap(), path)
        };
        let switch = |path: &Path| Request::SwitchDisk { id: "vol-1".into(), path: path.to_owned() };
        call(&socket, &Request::PauseDisk { id: "vol-1".into() }).unwrap();

        let (good, good_path) = layer("top.qcow2", 65536, Some(("base.raw", "raw")));
        let err = call(&socket, &switch(&good_path)).unwrap_err();
        assert!(err.contains("needs the new layer's descriptor"), "{err}");
        let (alone, alone_path) = layer("alone.qcow2", 65536, None);
        let err = call_with_file(&socket, &switch(&alone_path), &alone).unwrap_err();
        assert!(err.contains("must name the disk it was made over"), "{err}");
        let (small, small_path) = layer("small.qcow2", 4096, Some(("base.raw", "raw")));
        let err = call_with_file(&socket, &switch(&small_path), &small).unwrap_err();
        assert!(err.contains("4096 bytes"), "{err}");
        assert!(query_disks(&socket).unwrap()[0].paused, "a refused switch resumes nothing");

        call_with_file(&socket, &switch(&good_path), &good).unwrap();
        assert!(!query_disks(&socket).unwrap()[0].paused);
    }
}
