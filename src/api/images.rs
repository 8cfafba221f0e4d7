//! The Images service.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::blocking;
use super::pb::images_server::Images;
use super::pb::{
    DeregisterImageRequest, DeregisterImageResponse, DescribeImagesRequest, DescribeImagesResponse, Image,
    ImportImageProgress, RegisterImageRequest,
};
use crate::block::DiskFormat;
use crate::daemon::{Daemon, DaemonError};
use crate::store::image::{ImageRecord, ImageSource, ImageSpec, ImageState};

/// Serves images from the daemon's store.
pub struct ImagesService(pub Arc<Daemon>);

fn image(record: ImageRecord) -> Image {
    Image {
        image_id: record.id,
        name: record.name,
        description: record.description,
        state: match record.state {
            ImageState::Pending => "pending",
            ImageState::Available => "available",
            ImageState::Failed => "failed",
        }
        .into(),
        size_bytes: record.size,
        kernel_cmdline: record.cmdline,
    }
}

fn required(value: &str, name: &str) -> Result<PathBuf, DaemonError> {
    if value.is_empty() {
        return Err(DaemonError::InvalidParameter(format!("{name} is required")));
    }
    Ok(PathBuf::from(value))
}

/// Longest image name and description, as EC2 allows them.
const MAX_NAME_CHARS: usize = 128;
const MAX_DESCRIPTION_CHARS: usize = 255;
/// Longest kernel command line: x86 Linux takes 2048 bytes, its terminating NUL included.
const MAX_CMDLINE_BYTES: usize = 2047;

/// Refuses text longer than `max_chars` or holding control characters (a NUL would cut a
/// kernel command line short; every record is shown back to other callers).
fn bounded(value: &str, field: &str, max_chars: usize) -> Result<(), DaemonError> {
    if value.chars().count() > max_chars {
        return Err(DaemonError::InvalidParameter(format!("{field} is longer than {max_chars} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(DaemonError::InvalidParameter(format!("{field} holds a control character")));
    }
    Ok(())
}

/// What a RegisterImage or ImportImage request asks the store for.
fn import_request(r: RegisterImageRequest) -> Result<(ImageSpec, ImageSource), DaemonError> {
    bounded(&r.name, "name", MAX_NAME_CHARS)?;
    bounded(&r.description, "description", MAX_DESCRIPTION_CHARS)?;
    if r.kernel_cmdline.len() > MAX_CMDLINE_BYTES {
        return Err(DaemonError::InvalidParameter(format!(
            "kernel_cmdline is longer than {MAX_CMDLINE_BYTES} bytes"
        )));
    }
    bounded(&r.kernel_cmdline, "kernel_cmdline", MAX_CMDLINE_BYTES)?;
    let format: DiskFormat = if r.disk_format.is_empty() { "raw" } else { r.disk_format.as_str() }
        .parse()
        .map_err(DaemonError::InvalidParameter)?;
    let source = ImageSource::Disk {
        disk: required(&r.disk_path, "disk_path")?,
        format,
        kernel: required(&r.kernel_path, "kernel_path")?,
        initrd: (!r.initrd_path.is_empty()).then(|| PathBuf::from(&r.initrd_path)),
    };
    let name = if r.name.is_empty() { "image".to_owned() } else { r.name };
    Ok((ImageSpec { name, description: r.description, cmdline: r.kernel_cmdline }, source))
}

#[tonic::async_trait]
impl Images for ImagesService {
    async fn register_image(
        &self,
        request: Request<RegisterImageRequest>,
    ) -> Result<Response<Image>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let record = blocking(move || {
            let (spec, source) = import_request(r)?;
            Ok(daemon.store.register_image(&spec, &source)?)
        })
        .await?;
        Ok(Response::new(image(record)))
    }

    type ImportImageStream = ReceiverStream<Result<ImportImageProgress, Status>>;

    async fn import_image(
        &self,
        request: Request<RegisterImageRequest>,
    ) -> Result<Response<Self::ImportImageStream>, Status> {
        let (spec, source) = import_request(request.into_inner())?;
        let daemon = self.0.clone();
        let (updates, stream) = tokio::sync::mpsc::channel(16);
        tokio::task::spawn_blocking(move || {
            // A caller that hangs up does not stop the import: it finishes, or fails
            // cleanly, either way leaving the store whole.
            let mut copied = 0;
            let mut report = |bytes_done, bytes_total| {
                copied = bytes_total;
                let _ =
                    updates.blocking_send(Ok(ImportImageProgress { bytes_done, bytes_total, image: None }));
            };
            let last = match daemon.store.import_image(&spec, &source, &mut report) {
                Ok(record) => {
                    let done = ImportImageProgress {
                        bytes_done: copied,
                        bytes_total: copied,
                        image: Some(image(record)),
                    };
                    Ok(done)
                }
                Err(e) => Err(Status::from(DaemonError::from(e))),
            };
            let _ = updates.blocking_send(last);
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn describe_images(
        &self,
        request: Request<DescribeImagesRequest>,
    ) -> Result<Response<DescribeImagesResponse>, Status> {
        let ids = request.into_inner().image_ids;
        let daemon = self.0.clone();
        let records = blocking(move || {
            if ids.is_empty() {
                return Ok(daemon.store.images()?);
            }
            ids.iter().map(|id| Ok(daemon.store.image(id)?)).collect()
        })
        .await?;
        Ok(Response::new(DescribeImagesResponse { images: records.into_iter().map(image).collect() }))
    }

    async fn deregister_image(
        &self,
        request: Request<DeregisterImageRequest>,
    ) -> Result<Response<DeregisterImageResponse>, Status> {
        let id = request.into_inner().image_id;
        let daemon = self.0.clone();
        blocking(move || Ok(daemon.store.deregister_image(&id)?)).await?;
        Ok(Response::new(DeregisterImageResponse {}))
    }
}
