//! Drives a nuage storage store from the shell. The nested end-to-end test uses it inside
//! the L1 machine, where only static binaries run, until `nuaged` serves these operations
//! over its API.
//!
//!   store ROOT register-image DISK FORMAT KERNEL [INITRD]   prints the image id
//!   store ROOT image-file IMAGE NAME                        prints a file's path (kernel, initrd)
//!   store ROOT create-volume image|snapshot|none ID|- [SIZE] prints the volume id
//!   store ROOT volume-path VOLUME                           prints the qcow2 file's path
//!   store ROOT snapshot VOLUME [VMM_SOCKET DISK_ID]         prints the snapshot id; with a
//!                                                           socket, the volume is in use by
//!                                                           that running VMM as disk DISK_ID
//!
//! Errors print one line on stderr and exit 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nuage::block::DiskFormat;
use nuage::daemon::process::VmmDisk;
use nuage::store::image::ImageSpec;
use nuage::store::{ImageSource, Parent, Store, StoreError};

fn run(args: &[String]) -> Result<String, String> {
    let [root, command, rest @ ..] = args else { return Err("usage: see the source header".into()) };
    let (store, report) = Store::open(Path::new(root)).map_err(|e| e.to_string())?;
    for action in report.actions {
        eprintln!("store: recovered: {action}");
    }
    let arg = |i: usize| rest.get(i).cloned().ok_or_else(|| format!("{command}: missing argument {}", i + 1));
    let text = |e: StoreError| e.to_string();
    match command.as_str() {
        "register-image" => {
            let format: DiskFormat = arg(1)?.parse()?;
            let source = ImageSource::Disk {
                disk: PathBuf::from(arg(0)?),
                format,
                kernel: PathBuf::from(arg(2)?),
                initrd: rest.get(3).map(PathBuf::from),
            };
            let spec = ImageSpec { name: "image".into(), description: String::new(), cmdline: String::new() };
            Ok(store.register_image(&spec, &source).map_err(text)?.id)
        }
        "image-file" => {
            let image = store.image(&arg(0)?).map_err(text)?;
            Ok(store.image_file(&image, &arg(1)?).display().to_string())
        }
        "create-volume" => {
            let parent = match (arg(0)?.as_str(), arg(1)?) {
                ("image", id) => Parent::Image(id),
                ("snapshot", id) => Parent::Snapshot(id),
                ("none", _) => Parent::None,
                (other, _) => return Err(format!("unknown source kind {other}")),
            };
            let size = rest.get(2).map(|s| s.parse::<u64>().map_err(|e| format!("size: {e}"))).transpose()?;
            Ok(store.create_volume(parent, size).map_err(text)?.id)
        }
        "volume-path" => Ok(store.volume_path(&arg(0)?).map_err(text)?.display().to_string()),
        "snapshot" => match (rest.get(1), rest.get(2)) {
            (Some(socket), Some(disk)) => {
                let vmm = VmmDisk { socket: PathBuf::from(socket), id: disk.clone() };
                Ok(store.create_snapshot_live(&arg(0)?, &vmm).map_err(text)?.id)
            }
            _ => Ok(store.create_snapshot(&arg(0)?).map_err(text)?.id),
        },
        other => Err(format!("unknown command {other}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("store: {e}");
            ExitCode::FAILURE
        }
    }
}
