//! Files on disk (JSON records, config drives), replaced atomically and durably: written to a temporary file,
//! synced, renamed over the old one, and the directory synced, so a crash at any point
//! leaves either the old record or the new one. Everything the daemon keeps is private to
//! its user: files 0600, directories 0700, set when they are made (not left to the umask)
//! and repaired when the daemon opens its state.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Makes a directory's entries (renames, creations, removals) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `value` as JSON, atomically and durably.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    write_atomic(path, &serde_json::to_vec_pretty(value).map_err(io::Error::other)?)
}

/// Replaces `path` with `bytes`, atomically and durably. A new file is private to the
/// daemon's user (mode 0600).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // A name of its own per write: two writers of one record never share a temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = Path::new(&tmp);
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Creates directory `path` and its missing parents, each private (0700).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Takes every permission for group and others off what lies under `root` (`root`
/// included; symbolic links are not followed); returns how many entries it changed.
pub fn make_private(root: &Path) -> io::Result<usize> {
    let mut changed = 0;
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7700))?;
            changed += 1;
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(changed)
}

/// Reads a JSON record.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<T> {
    serde_json::from_slice(&fs::read(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_made_private_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        create_private_dir(&root.join("a/b")).unwrap();
        for path in [&root, &root.join("a"), &root.join("a/b")] {
            assert_eq!(fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o700, "{}", path.display());
        }
        let open = root.join("a/b/open.log");
        fs::write(&open, b"x").unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
        let image = root.join("a/image");
        fs::write(&image, b"x").unwrap();
        fs::set_permissions(&image, fs::Permissions::from_mode(0o444)).unwrap();
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        assert_eq!(make_private(&root).unwrap(), 3);
        assert_eq!(fs::metadata(&open).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(&image).unwrap().permissions().mode() & 0o777,
            0o400,
            "read-only stays read-only"
        );
        assert_eq!(fs::metadata(root.join("a")).unwrap().permissions().mode() & 0o777, 0o700);
        assert_ne!(
            fs::metadata("/etc/passwd").unwrap().permissions().mode() & 0o004,
            0,
            "links are not followed"
        );
        assert_eq!(make_private(&root).unwrap(), 0);
    }

    #[test]
    fn records_round_trip_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        write_json(&path, &vec![1, 2, 3]).unwrap();
        write_json(&path, &vec![4]).unwrap();
        assert_eq!(read_json::<Vec<i32>>(&path).unwrap(), vec![4]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        fs::write(&path, b"{broken").unwrap();
        assert_eq!(read_json::<Vec<i32>>(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
