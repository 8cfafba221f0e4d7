//! The Environments service (`aws elasticbeanstalk`): requests checked and turned into the
//! controller's terms, its records into AWS's shapes.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::environments_server::Environments as EnvironmentsApi;
use super::pb::{
    ApplicationDescription, ApplicationVersionDescription, CreateApplicationRequest,
    CreateApplicationVersionRequest, DeleteApplicationRequest, DeleteApplicationResponse,
    DeleteApplicationVersionRequest, DeleteApplicationVersionResponse, DescribeApplicationVersionsRequest,
    DescribeApplicationVersionsResponse, DescribeApplicationsRequest, DescribeApplicationsResponse,
};
use crate::environments::model::{Application, ApplicationVersion};
use crate::environments::{Environments, EnvironmentsError};

/// The largest request: a source bundle at its cap, and room for the rest.
pub const MAX_REQUEST_BYTES: usize = crate::store::bundle::MAX_BUNDLE_BYTES + (1 << 20);

/// Serves applications and their versions.
pub struct EnvironmentsService(pub Arc<Environments>);

async fn blocking<T, F>(work: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, EnvironmentsError> + Send + 'static,
    T: Send + 'static,
{
    super::off_runtime(work).await
}

fn seconds(time: u64) -> i64 {
    i64::try_from(time).unwrap_or(i64::MAX)
}

fn application(a: Application) -> ApplicationDescription {
    ApplicationDescription {
        versions: a.versions.iter().rev().map(|v| v.label.clone()).collect(),
        application_name: a.name,
        application_arn: a.arn,
        description: a.description,
        date_created: seconds(a.created),
    }
}

fn version(application: String, v: ApplicationVersion) -> ApplicationVersionDescription {
    ApplicationVersionDescription {
        application_name: application,
        version_label: v.label,
        description: v.description,
        source_bundle_format: v.bundle.format.extension().into(),
        source_bundle_sha256: v.bundle.sha256,
        source_bundle_size: v.bundle.size,
        source_bundle_entries: v.bundle.entries,
        date_created: seconds(v.created),
        status: "Processed".into(),
    }
}

#[tonic::async_trait]
impl EnvironmentsApi for EnvironmentsService {
    async fn create_application(
        &self,
        request: Request<CreateApplicationRequest>,
    ) -> Result<Response<ApplicationDescription>, Status> {
        let r = request.into_inner();
        let service = self.0.clone();
        let made = blocking(move || service.create_application(&r.application_name, &r.description)).await?;
        Ok(Response::new(application(made)))
    }

    async fn describe_applications(
        &self,
        request: Request<DescribeApplicationsRequest>,
    ) -> Result<Response<DescribeApplicationsResponse>, Status> {
        let names = request.into_inner().application_names;
        let service = self.0.clone();
        let found = blocking(move || service.applications(&names)).await?;
        Ok(Response::new(DescribeApplicationsResponse {
            applications: found.into_iter().map(application).collect(),
        }))
    }

    async fn delete_application(
        &self,
        request: Request<DeleteApplicationRequest>,
    ) -> Result<Response<DeleteApplicationResponse>, Status> {
        let name = request.into_inner().application_name;
        let service = self.0.clone();
        blocking(move || service.delete_application(&name)).await?;
        Ok(Response::new(DeleteApplicationResponse {}))
    }

    async fn create_application_version(
        &self,
        request: Request<CreateApplicationVersionRequest>,
    ) -> Result<Response<ApplicationVersionDescription>, Status> {
        let r = request.into_inner();
        let service = self.0.clone();
        let app = r.application_name.clone();
        let made = blocking(move || {
            service.create_version(&r.application_name, &r.version_label, &r.description, &r.source_bundle)
        })
        .await?;
        Ok(Response::new(version(app, made)))
    }

    async fn describe_application_versions(
        &self,
        request: Request<DescribeApplicationVersionsRequest>,
    ) -> Result<Response<DescribeApplicationVersionsResponse>, Status> {
        let r = request.into_inner();
        let service = self.0.clone();
        let found = blocking(move || {
            let name = Some(r.application_name.as_str()).filter(|n| !n.is_empty());
            service.versions(name, &r.version_labels)
        })
        .await?;
        Ok(Response::new(DescribeApplicationVersionsResponse {
            application_versions: found.into_iter().map(|(app, v)| version(app, v)).collect(),
        }))
    }

    async fn delete_application_version(
        &self,
        request: Request<DeleteApplicationVersionRequest>,
    ) -> Result<Response<DeleteApplicationVersionResponse>, Status> {
        let r = request.into_inner();
        let service = self.0.clone();
        blocking(move || service.delete_version(&r.application_name, &r.version_label)).await?;
        Ok(Response::new(DeleteApplicationVersionResponse {}))
    }
}
