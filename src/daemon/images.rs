//! Images (AMIs) as the API offers them: the store keeps them; this checks what callers
//! may name and describe.

use std::sync::Arc;

use super::describe::Describable;
use super::{by_ids, DaemonError};
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
    /// Image operations over `store`, forgetting a deregistered image's tags in `tags`.
    pub fn new(store: Arc<Store>, tags: Arc<dyn TagStore>) -> Self {
        Self { store, tags }
    }

    /// Registers an image from files on the host, copying them into the store.
    pub fn register(&self, spec: &ImageSpec, source: &ImageSource) -> Result<ImageRecord, DaemonError> {
        Self::check(spec)?;
        Ok(self.store.register_image(spec, source)?)
    }

    /// Registers an image as [`Images::register`] does, calling `report(done, total)` as
    /// its bytes are copied.
    pub fn import(
        &self,
        spec: &ImageSpec,
        source: &ImageSource,
        report: &mut dyn FnMut(u64, u64),
    ) -> Result<ImageRecord, DaemonError> {
        Self::check(spec)?;
        Ok(self.store.import_image(spec, source, report)?)
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
