//! The Images service.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::pb::images_server::Images;
use super::pb::{
    DeregisterImageRequest, DeregisterImageResponse, DescribeImagesRequest, DescribeImagesResponse,
    FileChunk, Image, ImportImageProgress, RegisterImageRequest, UploadedFile,
};
use super::resources::{self, Query};
use super::{blocking, errors};
use crate::block::DiskFormat;
use crate::daemon::images::ImageFiles;
use crate::daemon::tags::ResourceType;
use crate::daemon::{self, Daemon, DaemonError};
use crate::state::tag::Tag;
use crate::store::image::{ImageRecord, ImageSpec};
use crate::store::{free_space, StoreError};

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

fn required(value: String, name: &str) -> Result<String, DaemonError> {
    if value.is_empty() {
        return Err(DaemonError::InvalidParameter(format!("{name} is required")));
    }
    Ok(value)
}

/// What a RegisterImage or ImportImage request asks for: the image and the files in the
/// import directory it is made from (its tag specifications are taken apart).
fn import_request(r: RegisterImageRequest) -> Result<(ImageSpec, ImageFiles), DaemonError> {
    let format: DiskFormat = if r.disk_format.is_empty() { "raw" } else { r.disk_format.as_str() }
        .parse()
        .map_err(DaemonError::InvalidParameter)?;
    let name = if r.name.is_empty() { "image".to_owned() } else { r.name };
    let spec = ImageSpec { name, description: r.description, cmdline: r.kernel_cmdline };
    daemon::images::Images::check(&spec)?;
    let files = ImageFiles {
        disk: required(r.disk_path, "disk_path")?,
        format,
        kernel: (!r.kernel_path.is_empty()).then_some(r.kernel_path),
        initrd: (!r.initrd_path.is_empty()).then_some(r.initrd_path),
    };
    if files.kernel.is_none() && files.initrd.is_some() {
        return Err(DaemonError::InvalidParameter(
            "initrd_path needs kernel_path (without both, the disk's /boot gives them)".into(),
        ));
    }
    Ok((spec, files))
}

/// Free space an upload leaves on the import directory's file system.
const UPLOAD_RESERVE_BYTES: u64 = 64 << 20;
/// How often (in bytes written) an upload checks the free space.
const UPLOAD_SPACE_CHECK_BYTES: u64 = 64 << 20;

#[tonic::async_trait]
impl Images for ImagesService {
    async fn upload_image_file(
        &self,
        request: Request<Streaming<FileChunk>>,
    ) -> Result<Response<UploadedFile>, Status> {
        let mut chunks = request.into_inner();
        let daemon = self.0.clone();
        let mut upload = {
            let daemon = daemon.clone();
            blocking(move || daemon.images.imports().begin()).await?
        };
        let file = upload.take_file().ok_or_else(|| errors::internal(&"the upload has no file"))?;
        let mut file = tokio::fs::File::from_std(file);
        let limit = daemon.config.max_upload_bytes;
        let (mut size, mut checked) = (0u64, 0u64);
        while let Some(chunk) = chunks.message().await? {
            size += chunk.data.len() as u64;
            if size > limit {
                return Err(
                    DaemonError::LimitExceeded(format!("the file is larger than {limit} bytes")).into()
                );
            }
            if size - checked >= UPLOAD_SPACE_CHECK_BYTES {
                checked = size;
                let free = free_space(daemon.images.imports().dir()).map_err(DaemonError::from)?;
                if free < UPLOAD_RESERVE_BYTES {
                    let message = format!("{free} bytes left on the import directory's file system");
                    return Err(DaemonError::Store(StoreError::NoSpace(message)).into());
                }
            }
            file.write_all(&chunk.data).await.map_err(|e| errors::internal(&e))?;
        }
        file.sync_all().await.map_err(|e| errors::internal(&e))?;
        drop(file);
        let name = blocking(move || daemon.images.imports().finish(upload)).await?;
        Ok(Response::new(UploadedFile { name, size_bytes: size }))
    }

    async fn register_image(
        &self,
        request: Request<RegisterImageRequest>,
    ) -> Result<Response<Image>, Status> {
        let mut r = request.into_inner();
        let specifications = std::mem::take(&mut r.tag_specifications);
        let make = move |daemon: &Daemon| {
            let (spec, files) = import_request(r)?;
            daemon.images.register(&spec, &files)
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
        let (spec, files) = import_request(r)?;
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
            let imported = daemon.images.import(&spec, &files, &mut report).and_then(|record| {
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
        resources::done(self.0.clone(), move |daemon| daemon.images.deregister(&id)).await
    }
}
