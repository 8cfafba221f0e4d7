//! Images (AMIs) as the API offers them: the store keeps them; this checks what callers
//! may name and describe, and takes image files only from the import directory.

use std::sync::Arc;

use super::describe::Describable;
use super::imports::Imports;
use super::{by_ids, DaemonError};
use crate::block::DiskFormat;
use crate::state::tag::TagStore;
use crate::store::image::{ImageRecord, ImageSource, ImageSpec};
use crate::store::Store;

/// Longest image name and description, as EC2 allows them.
const MAX_NAME_CHARS: usize = 128;
const MAX_DESCRIPTION_CHARS: usize = 255;
/// Longest kernel command line: x86 Linux takes 2048 bytes, its terminating NUL included.
const MAX_CMDLINE_BYTES: usize = 2047;

/// The daemon's image operations.
#[derive(Clone)]
pub struct Images {
    store: Arc<Store>,
    tags: Arc<dyn TagStore>,
    imports: Arc<Imports>,
}

/// The files an image is registered from: names in the import directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFiles {
    /// The root disk.
    pub disk: String,
    /// Its format.
    pub format: DiskFormat,
    /// The kernel; none: the disk's own `/boot` gives the kernel and initrd.
    pub kernel: Option<String>,
    /// The initrd, if any (with a kernel).
    pub initrd: Option<String>,
}

impl ImageFiles {
    fn names(&self) -> Vec<&str> {
        [Some(self.disk.as_str()), self.kernel.as_deref(), self.initrd.as_deref()]
            .into_iter()
            .flatten()
            .collect()
    }
}

impl Describable for ImageRecord {
    const FILTERS: &'static [&'static str] = &["image-id", "name", "state"];

    fn id(&self) -> &str {
        &self.id
    }

    fn attribute(&self, name: &str) -> String {
        match name {
            "image-id" => self.id.clone(),
            "name" => self.name.clone(),
            _ => self.state.as_str().to_owned(),
        }
    }
}

impl Images {
    /// Image operations over `store`, taking files from `imports`, forgetting a
    /// deregistered image's tags in `tags`.
    pub fn new(store: Arc<Store>, tags: Arc<dyn TagStore>, imports: Imports) -> Self {
        Self { store, tags, imports: Arc::new(imports) }
    }

    /// The import directory, where uploads go.
    pub fn imports(&self) -> &Imports {
        &self.imports
    }

    /// Registers an image from files in the import directory, copying them into the store.
    pub fn register(&self, spec: &ImageSpec, files: &ImageFiles) -> Result<ImageRecord, DaemonError> {
        self.import(spec, files, &mut |_, _| {})
    }

    /// Registers an image as [`Images::register`] does, calling `report(done, total)` as
    /// its bytes are copied. The uploads it names are used up once it is registered.
    pub fn import(
        &self,
        spec: &ImageSpec,
        files: &ImageFiles,
        report: &mut dyn FnMut(u64, u64),
    ) -> Result<ImageRecord, DaemonError> {
        Self::check(spec)?;
        let disk = self.imports.resolve(&files.disk, "disk")?;
        let source = match &files.kernel {
            Some(kernel) => ImageSource::Disk {
                disk,
                format: files.format,
                kernel: self.imports.resolve(kernel, "kernel")?,
                initrd: files
                    .initrd
                    .as_deref()
                    .map(|name| self.imports.resolve(name, "initrd"))
                    .transpose()?,
            },
            None => ImageSource::DiskWithBoot { disk, format: files.format },
        };
        let record = self.store.import_image(spec, &source, report)?;
        self.imports.consume(&files.names());
        Ok(record)
    }

    /// The images named in `ids`, or all when none is named.
    pub fn describe(&self, ids: &[String]) -> Result<Vec<ImageRecord>, DaemonError> {
        by_ids(ids, || self.store.images(), |id| self.store.image(id))
    }

    /// Deregisters an image no volume is made from.
    pub fn deregister(&self, id: &str) -> Result<(), DaemonError> {
        self.store.deregister_image(id)?;
        Ok(self.tags.forget_tags(id)?)
    }

    /// Refuses text longer than EC2 allows or holding control characters (a NUL would
    /// cut a kernel command line short; every record is shown back to other callers).
    /// Registering checks too; a streamed import checks first, so that a refusal is the
    /// call's answer rather than its stream's last message.
    pub fn check(spec: &ImageSpec) -> Result<(), DaemonError> {
        bounded(&spec.name, "name", MAX_NAME_CHARS)?;
        bounded(&spec.description, "description", MAX_DESCRIPTION_CHARS)?;
        if spec.cmdline.len() > MAX_CMDLINE_BYTES {
            return Err(DaemonError::InvalidParameter(format!(
                "kernel_cmdline is longer than {MAX_CMDLINE_BYTES} bytes"
            )));
        }
        bounded(&spec.cmdline, "kernel_cmdline", MAX_CMDLINE_BYTES)
    }
}

fn bounded(value: &str, field: &str, max_chars: usize) -> Result<(), DaemonError> {
    if value.chars().count() > max_chars {
        return Err(DaemonError::InvalidParameter(format!("{field} is longer than {max_chars} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(DaemonError::InvalidParameter(format!("{field} holds a control character")));
    }
    Ok(())
}
