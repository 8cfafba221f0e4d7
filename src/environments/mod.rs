//! Elastic Beanstalk: the controller beside the daemon that will make a load-balanced,
//! auto-scaled application in one call. This first part keeps applications and their
//! versions ([`model::Beanstalk`], one document in the daemon's database, changed by
//! compare and set); each version names a source bundle the store keeps, reached through
//! [`Compute`] like everything else a controller does.
//!
//! A bundle is kept before the version that names it is recorded, and let go after the
//! last version naming it is deleted: a daemon killed between the two leaves a bundle no
//! version names, which the next start lets go ([`Environments::start`]).

pub mod model;

use std::sync::{Arc, Mutex, PoisonError};

use crate::daemon::compute::Compute;
use crate::daemon::{failpoint, DaemonError};
use crate::state::db::StateError;
use crate::state::document::{self, DocumentStore};
use crate::state::id::now;
use model::{Application, ApplicationVersion, Beanstalk};

/// The document applications are kept in.
const DOCUMENT: &str = "beanstalk";

/// Why an Elastic Beanstalk request was refused or failed. The API maps each to AWS's name.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentsError {
    /// A malformed or impossible request (AWS says InvalidParameterValue, also for what
    /// does not exist).
    #[error("{0}")]
    InvalidParameter(String),
    /// The applications' cap.
    #[error("{0}")]
    TooManyApplications(String),
    /// The versions' cap.
    #[error("{0}")]
    TooManyApplicationVersions(String),
    /// The daemon failed or refused (a bundle that is not an archive, a full disk).
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The database failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The Elastic Beanstalk service.
pub struct Environments {
    documents: Arc<dyn DocumentStore>,
    compute: Arc<dyn Compute>,
    region: String,
    /// Held while a bundle is kept and recorded, or let go: nothing lets a bundle go
    /// between its keeping and its recording.
    bundles: Mutex<()>,
}

impl Environments {
    /// The service over the daemon's `documents` and `compute`.
    pub fn new(documents: Arc<dyn DocumentStore>, compute: Arc<dyn Compute>, region: &str) -> Self {
        Self { documents, compute, region: region.to_owned(), bundles: Mutex::new(()) }
    }

    /// Lets go of the bundles no version names (a create or delete cut short).
    pub fn start(&self) -> Result<(), EnvironmentsError> {
        let _bundles = self.bundles.lock().unwrap_or_else(PoisonError::into_inner);
        let state = self.read()?;
        for sha256 in self.compute.bundles()? {
            if !state.uses(&sha256) {
                tracing::info!("letting go of source bundle {sha256}: no application version names it");
                self.compute.drop_bundle(&sha256)?;
            }
        }
        Ok(())
    }

    /// Every application as recorded.
    pub fn read(&self) -> Result<Beanstalk, EnvironmentsError> {
        Ok(document::read(self.documents.as_ref(), DOCUMENT)?)
    }

    fn change<T>(
        &self,
        change: impl FnMut(&mut Beanstalk) -> Result<T, EnvironmentsError>,
    ) -> Result<T, EnvironmentsError> {
        document::change(self.documents.as_ref(), DOCUMENT, change)
    }

    /// `create-application`.
    pub fn create_application(
        &self,
        name: &str,
        description: &str,
    ) -> Result<Application, EnvironmentsError> {
        self.change(|b| b.create_application(&self.region, name, description, now()))
    }

    /// `describe-applications`: those named (none: all).
    pub fn applications(&self, names: &[String]) -> Result<Vec<Application>, EnvironmentsError> {
        let state = self.read()?;
        Ok(state.applications.into_iter().filter(|a| names.is_empty() || names.contains(&a.name)).collect())
    }

    /// `delete-application`, its versions' bundles let go.
    pub fn delete_application(&self, name: &str) -> Result<(), EnvironmentsError> {
        let _bundles = self.bundles.lock().unwrap_or_else(PoisonError::into_inner);
        let unused = self.change(|b| b.delete_application(name))?;
        self.let_go(&unused);
        Ok(())
    }

    /// `create-application-version`: `bundle` kept (refused unless it is a whole tar.gz
    /// or zip), then recorded; a refused record lets the bundle go again.
    pub fn create_version(
        &self,
        application: &str,
        label: &str,
        description: &str,
        bundle: &[u8],
    ) -> Result<ApplicationVersion, EnvironmentsError> {
        let _bundles = self.bundles.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked first, so a request for no application keeps nothing.
        self.read()?.application(application)?;
        let kept = self.compute.keep_bundle(bundle)?;
        failpoint("bundle-after-keep");
        let made = self.change(|b| b.create_version(application, label, description, kept.clone(), now()));
        if made.is_err() && !self.read()?.uses(&kept.sha256) {
            self.let_go(std::slice::from_ref(&kept.sha256));
        }
        made
    }

    /// `describe-application-versions`: application `name`'s (none: every one's), those
    /// labelled in `labels` (none: all), newest first, as (application, version).
    pub fn versions(
        &self,
        name: Option<&str>,
        labels: &[String],
    ) -> Result<Vec<(String, ApplicationVersion)>, EnvironmentsError> {
        let state = self.read()?;
        if let Some(name) = name {
            state.application(name)?;
        }
        let mut found: Vec<(String, ApplicationVersion)> = state
            .applications
            .into_iter()
            .filter(|a| name.map_or(true, |n| n == a.name))
            .flat_map(|a| {
                let app = a.name;
                a.versions.into_iter().map(move |v| (app.clone(), v))
            })
            .filter(|(_, v)| labels.is_empty() || labels.contains(&v.label))
            .collect();
        found.sort_by_key(|(_, v)| std::cmp::Reverse(v.created));
        Ok(found)
    }

    /// `delete-application-version`, its bundle let go when no version names it.
    pub fn delete_version(&self, application: &str, label: &str) -> Result<(), EnvironmentsError> {
        let _bundles = self.bundles.lock().unwrap_or_else(PoisonError::into_inner);
        let unused = self.change(|b| b.delete_version(application, label))?;
        self.let_go(&unused);
        Ok(())
    }

    /// Drops `bundles` (a failure is logged: the next start tries again).
    fn let_go(&self, bundles: &[String]) {
        for sha256 in bundles {
            if let Err(e) = self.compute.drop_bundle(sha256) {
                tracing::warn!("source bundle {sha256}: {e} (let go at the next start)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::compute::fake::FakeCompute;
    use crate::state::db::Database;

    fn tar_gz() -> Vec<u8> {
        crate::store::bundle::tests::tar_gz(&[("start", b"#!/bin/sh\n")])
    }

    #[test]
    fn versions_keep_their_bundles_and_let_them_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(&dir.path().join("nuage.db")).unwrap());
        let compute = Arc::new(FakeCompute::default());
        let service = Environments::new(db.clone(), compute.clone(), "r");
        service.create_application("web", "").unwrap();
        let v1 = service.create_version("web", "v1", "first", &tar_gz()).unwrap();
        assert_eq!(compute.bundles().unwrap(), std::slice::from_ref(&v1.bundle.sha256));

        let refused = [
            service.create_version("web", "v2", "", b"not an archive").map(|_| ()),
            service.create_version("nope", "v2", "", &tar_gz()).map(|_| ()),
            service
                .create_version("web", "v1", "", &crate::store::bundle::tests::tar_gz(&[("other", b"x")]))
                .map(|_| ()),
        ];
        for result in refused {
            assert!(result.is_err());
        }
        assert_eq!(
            compute.bundles().unwrap(),
            std::slice::from_ref(&v1.bundle.sha256),
            "refusals keep nothing"
        );
        assert_eq!(service.versions(Some("web"), &[]).unwrap().len(), 1);

        // A bundle kept by a create cut short is let go at the next start.
        compute.keep_bundle(&crate::store::bundle::tests::tar_gz(&[("orphan", b"x")])).unwrap();
        service.start().unwrap();
        assert_eq!(compute.bundles().unwrap(), std::slice::from_ref(&v1.bundle.sha256));

        service.delete_version("web", "v1").unwrap();
        assert!(compute.bundles().unwrap().is_empty());
        service.delete_application("web").unwrap();
        assert!(service.applications(&[]).unwrap().is_empty());
    }
}
