//! Where image files come from through the API: one private directory (0700, the
//! daemon's), holding files uploaded over the API and files the operator put there. A
//! caller names a file in it, never a path on the host: a name is one plain path
//! component, and what it names must be a regular file, not a link, FIFO or device (it is
//! opened with `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat` before anything reads
//! it). Only root and the daemon can write there, so what was checked stays what is read.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::DaemonError;
use crate::state::file::create_private_dir;
use crate::state::id::new_id;

/// Uploads' names start with this; a registration consumes the uploads it names.
const UPLOAD_PREFIX: &str = "upload-";
/// An upload being written; renamed to its name once complete.
const PART_SUFFIX: &str = ".part";
/// Longest file name accepted.
const MAX_NAME_BYTES: usize = 255;
/// Most uploads kept (finished or not) until registrations use them.
const MAX_PENDING_UPLOADS: usize = 16;

/// The import directory.
#[derive(Debug)]
pub struct Imports {
    dir: PathBuf,
}

/// A file being uploaded; removed unless [`Imports::finish`] keeps it.
pub struct Upload {
    name: String,
    part: PathBuf,
    file: Option<File>,
}

impl Upload {
    /// The file to write the upload's bytes to (taken once).
    pub fn take_file(&mut self) -> Option<File> {
        self.file.take()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.part);
    }
}

impl Imports {
    /// Opens (creating) the import directory at `dir`, private to the daemon, and removes
    /// what unfinished uploads and unregistered uploads left: an upload lives until the
    /// registration that names it, within one daemon's life.
    pub fn open(dir: &Path) -> io::Result<Self> {
        create_private_dir(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(UPLOAD_PREFIX) {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(Self { dir: dir.to_owned() })
    }

    /// The file `name` names, checked as the module says; an error names what is wrong.
    pub fn resolve(&self, name: &str, what: &str) -> Result<PathBuf, DaemonError> {
        let invalid = |why: &str| {
            Err(DaemonError::InvalidParameter(format!(
                "{what} {name:?}: {why} (give a file name in the daemon's import directory, or a local file to upload)"
            )))
        };
        let plain = !name.is_empty()
            && name.len() <= MAX_NAME_BYTES
            && name != "."
            && name != ".."
            && !name.contains('/')
            && !name.chars().any(char::is_control);
        if !plain {
            return invalid("not a plain file name");
        }
        let path = self.dir.join(name);
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return invalid("no such file"),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return invalid("a symbolic link"),
            Err(e) => return Err(DaemonError::Internal(format!("{}: {e}", path.display()))),
        };
        let kind = file
            .metadata()
            .map_err(|e| DaemonError::Internal(format!("{}: {e}", path.display())))?
            .file_type();
        if kind.is_fifo()
            || kind.is_char_device()
            || kind.is_block_device()
            || kind.is_socket()
            || !kind.is_file()
        {
            return invalid("not a regular file");
        }
        Ok(path)
    }

    /// Begins an upload: a new private file the caller's bytes go to.
    pub fn begin(&self) -> Result<Upload, DaemonError> {
        let pending = fs::read_dir(&self.dir)
            .map_err(|e| DaemonError::Internal(format!("{}: {e}", self.dir.display())))?
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(UPLOAD_PREFIX))
            .count();
        if pending >= MAX_PENDING_UPLOADS {
            return Err(DaemonError::LimitExceeded(format!(
                "{pending} uploads wait for a registration; at most {MAX_PENDING_UPLOADS}"
            )));
        }
        let name = new_id(UPLOAD_PREFIX.trim_end_matches('-'));
        let part = self.dir.join(format!("{name}{PART_SUFFIX}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&part)
            .map_err(|e| DaemonError::Internal(format!("{}: {e}", part.display())))?;
        Ok(Upload { name, part, file: Some(file) })
    }

    /// Completes an upload whose bytes are written and synced; returns its name.
    pub fn finish(&self, upload: Upload) -> Result<String, DaemonError> {
        let done = self.dir.join(&upload.name);
        fs::rename(&upload.part, &done)
            .map_err(|e| DaemonError::Internal(format!("{}: {e}", done.display())))?;
        Ok(upload.name.clone())
    }

    /// Removes the uploads among `names`, which a registration has used (files the
    /// operator put there stay).
    pub fn consume(&self, names: &[&str]) {
        for name in names {
            if name.starts_with(UPLOAD_PREFIX) && self.resolve(name, "upload").is_ok() {
                let _ = fs::remove_file(self.dir.join(name));
            }
        }
    }

    /// The directory, for free-space checks.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn only_plain_regular_files_inside_are_taken() {
        let dir = tempfile::tempdir().unwrap();
        let imports = Imports::open(&dir.path().join("imports")).unwrap();
        let mode = fs::metadata(imports.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        fs::write(imports.dir().join("disk.raw"), b"disk").unwrap();
        assert_eq!(imports.resolve("disk.raw", "disk").unwrap(), imports.dir().join("disk.raw"));
        std::os::unix::fs::symlink("/etc/shadow", imports.dir().join("link")).unwrap();
        let fifo = std::ffi::CString::new(imports.dir().join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/null", imports.dir().join("device-link")).unwrap();
        fs::create_dir(imports.dir().join("directory")).unwrap();
        for (name, why) in [
            ("/etc/shadow", "not a plain file name"),
            ("../imports/disk.raw", "not a plain file name"),
            ("..", "not a plain file name"),
            ("", "not a plain file name"),
            ("missing", "no such file"),
            ("link", "a symbolic link"),
            ("device-link", "a symbolic link"),
            ("fifo", "not a regular file"),
            ("directory", "not a regular file"),
        ] {
            let err = imports.resolve(name, "disk").unwrap_err();
            assert!(matches!(&err, DaemonError::InvalidParameter(m) if m.contains(why)), "{name}: {err}");
        }
    }

    #[test]
    fn uploads_appear_when_finished_and_go_when_used_or_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imports");
        let imports = Imports::open(&path).unwrap();
        let mut abandoned = imports.begin().unwrap();
        abandoned.take_file().unwrap().write_all(b"half").unwrap();
        drop(abandoned);
        let mut upload = imports.begin().unwrap();
        upload.take_file().unwrap().write_all(b"whole").unwrap();
        let name = imports.finish(upload).unwrap();
        assert!(name.starts_with(UPLOAD_PREFIX));
        let file = imports.resolve(&name, "disk").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"whole");
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(&path).unwrap().count(), 1, "the abandoned part is gone");
        fs::write(path.join("operator.raw"), b"kept").unwrap();
        imports.consume(&[&name, "operator.raw"]);
        assert!(imports.resolve(&name, "disk").is_err());
        assert!(imports.resolve("operator.raw", "disk").is_ok(), "the operator's files stay");
        let mut left = imports.begin().unwrap();
        left.take_file().unwrap().write_all(b"x").unwrap();
        let unregistered = imports.finish(left).unwrap();
        drop(imports);
        let imports = Imports::open(&path).unwrap();
        assert!(imports.resolve(&unregistered, "disk").is_err(), "a restart clears unregistered uploads");
    }
}
