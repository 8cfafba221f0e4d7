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
use super::resources::{self, Query};
use crate::block::DiskFormat;
use crate::daemon::tags::ResourceType;
use crate::daemon::{self, Daemon, DaemonError};
use crate::state::tag::Tag;
use crate::store::image::{ImageRecord, ImageSource, ImageSpec};

/// Serves the daemon's images.
pub struct ImagesService(pub Arc<Daemon>);

fn image(record: ImageRecord, tags: Vec<Tag>) -> Image {
    Image {
        image_id: record.id,
        name: record.name,
        description: record.description,
        state: record.state.as_str().into(),
        size_bytes: record.size,
        kernel_cmdline: record.cmdline,
        tags: resources::to_pb(tags),
    }
}

fn required(value: &str, name: &str) -> Result<PathBuf, DaemonError> {
    if value.is_empty() {
        return Err(DaemonError::InvalidParameter(format!("{name} is required")));
    }
    Ok(PathBuf::from(value))
}

/// What a RegisterImage or ImportImage request asks the store for (its tag
/// specifications are taken apart).
fn import_request(r: RegisterImageRequest) -> Result<(ImageSpec, ImageSource), DaemonError> {
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
    let spec = ImageSpec { name, description: r.description, cmdline: r.kernel_cmdline };
    daemon::images::Images::check(&spec)?;
    Ok((spec, source))
}

#[tonic::async_trait]
impl Images for ImagesService {
    async fn register_image(
        &self,
        request: Request<RegisterImageRequest>,
    ) -> Result<Response<Image>, Status> {
        let mut r = request.into_inner();
        let specifications = std::mem::take(&mut r.tag_specifications);
        let make = move |daemon: &Daemon| {
            let (spec, source) = import_request(r)?;
            daemon.images.register(&spec, &source)
        };
        resources::create(self.0.clone(), specifications, ResourceType::Image, make, image).await
    }

    type ImportImageStream = ReceiverStream<Result<ImportImageProgress, Status>>;

    async fn import_image(
        &self,
        request: Request<RegisterImageRequest>,
    ) -> Result<Response<Self::ImportImageStream>, Status> {
        let mut r = request.into_inner();
        let tags = resources::specified(
            std::mem::take(&mut r.tag_specifications),
            &[ResourceType::Image],
            ResourceType::Image,
        )?;
        let (spec, source) = import_request(r)?;
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
            let imported = daemon.images.import(&spec, &source, &mut report).and_then(|record| {
                let tags = resources::tag_new(&daemon, &record.id, tags)?;
                Ok(image(record, tags))
            });
            let last = match imported {
                Ok(image) => {
                    Ok(ImportImageProgress { bytes_done: copied, bytes_total: copied, image: Some(image) })
                }
                Err(e) => Err(Status::from(e)),
            };
            let _ = updates.blocking_send(last);
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn describe_images(
        &self,
        request: Request<DescribeImagesRequest>,
    ) -> Result<Response<DescribeImagesResponse>, Status> {
        let DescribeImagesRequest { image_ids, filters, max_results, next_token } = request.into_inner();
        let query = Query::new(filters, max_results, next_token);
        let find = move |daemon: &Daemon| daemon.images.describe(&image_ids);
        let (images, next_token) = resources::describe(self.0.clone(), query, find, image).await?;
        Ok(Response::new(DescribeImagesResponse { images, next_token }))
    }

    async fn deregister_image(
        &self,
        request: Request<DeregisterImageRequest>,
    ) -> Result<Response<DeregisterImageResponse>, Status> {
        let id = request.into_inner().image_id;
        let daemon = self.0.clone();
        blocking(move || daemon.images.deregister(&id)).await?;
        Ok(Response::new(DeregisterImageResponse {}))
    }
}
