//! Elastic Beanstalk's desired state, as one document: applications and their versions
//! (each naming a source bundle the store keeps), environments and their events (see
//! [`super::environment`]). Every change is a pure function that does what was asked or
//! refuses and changes nothing.

use serde::{Deserialize, Serialize};

use super::environment::{Environment, Event};
use super::EnvironmentsError;
use crate::store::bundle::Bundle;

/// Applications on the host (AWS's default limit).
pub const MAX_APPLICATIONS: usize = 75;
/// Versions kept per application.
pub const MAX_VERSIONS: usize = 100;
/// The longest application name or version label (AWS's).
const MAX_NAME: usize = 100;
/// The longest description (AWS's).
const MAX_DESCRIPTION: usize = 200;

/// One version of an application: a source bundle, by label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationVersion {
    /// Unique in its application.
    pub label: String,
    /// Free text.
    pub description: String,
    /// The bundle it deploys.
    pub bundle: Bundle,
    /// When it was made.
    pub created: u64,
}

/// An application: a name its versions and environments share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Unique on the host.
    pub name: String,
    /// `arn:nuage:elasticbeanstalk:<region>:000000000000:application/<name>`.
    pub arn: String,
    /// Free text.
    pub description: String,
    /// When it was made.
    pub created: u64,
    /// Its versions, oldest first.
    pub versions: Vec<ApplicationVersion>,
}

/// Every application and environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Beanstalk {
    /// In the order made.
    pub applications: Vec<Application>,
    /// In the order made, the newest terminated ones kept.
    pub environments: Vec<Environment>,
    /// Every environment's events, oldest first, capped.
    pub events: Vec<Event>,
}

impl Application {
    /// Version `label`.
    pub fn version(&self, label: &str) -> Result<&ApplicationVersion, EnvironmentsError> {
        self.versions.iter().find(|v| v.label == label).ok_or_else(|| {
            EnvironmentsError::InvalidParameter(format!("No Application Version named '{label}' found."))
        })
    }
}

fn check_text(what: &str, text: &str, max: usize, empty_ok: bool) -> Result<(), EnvironmentsError> {
    let count = text.chars().count();
    if (count == 0 && !empty_ok) || count > max || text.chars().any(char::is_control) {
        let least = if empty_ok { 0 } else { 1 };
        return Err(EnvironmentsError::InvalidParameter(format!(
            "{what} {text:?}: {least} to {max} characters, no control character"
        )));
    }
    Ok(())
}

/// A name or label: also no slash (it goes into ARNs).
pub(super) fn check_name(what: &str, name: &str) -> Result<(), EnvironmentsError> {
    check_text(what, name, MAX_NAME, false)?;
    if name.contains('/') {
        return Err(EnvironmentsError::InvalidParameter(format!("{what} {name:?} may not hold a slash")));
    }
    Ok(())
}

impl Beanstalk {
    /// Application `name`.
    pub fn application(&self, name: &str) -> Result<&Application, EnvironmentsError> {
        self.applications.iter().find(|a| a.name == name).ok_or_else(|| {
            EnvironmentsError::InvalidParameter(format!("No Application named '{name}' found."))
        })
    }

    fn application_mut(&mut self, name: &str) -> Result<&mut Application, EnvironmentsError> {
        self.applications.iter_mut().find(|a| a.name == name).ok_or_else(|| {
            EnvironmentsError::InvalidParameter(format!("No Application named '{name}' found."))
        })
    }

    /// `create-application`.
    pub fn create_application(
        &mut self,
        region: &str,
        name: &str,
        description: &str,
        now: u64,
    ) -> Result<Application, EnvironmentsError> {
        check_name("application name", name)?;
        check_text("description", description, MAX_DESCRIPTION, true)?;
        if self.applications.iter().any(|a| a.name == name) {
            return Err(EnvironmentsError::InvalidParameter(format!("Application {name} already exists.")));
        }
        if self.applications.len() >= MAX_APPLICATIONS {
            return Err(EnvironmentsError::TooManyApplications(format!(
                "at most {MAX_APPLICATIONS} applications"
            )));
        }
        let application = Application {
            name: name.to_owned(),
            arn: format!("arn:nuage:elasticbeanstalk:{region}:000000000000:application/{name}"),
            description: description.to_owned(),
            created: now,
            versions: Vec::new(),
        };
        self.applications.push(application.clone());
        Ok(application)
    }

    /// `delete-application`: it and its versions go; returns the bundles no version
    /// uses any more.
    pub fn delete_application(&mut self, name: &str) -> Result<Vec<String>, EnvironmentsError> {
        let gone =
            self.application(name)?.versions.iter().map(|v| v.bundle.sha256.clone()).collect::<Vec<_>>();
        if let Some(env) = self.environments.iter().find(|e| e.is_live() && e.application == name) {
            return Err(EnvironmentsError::InvalidParameter(format!(
                "Unable to delete application {name}: environment {} uses it; terminate it first.",
                env.name
            )));
        }
        self.applications.retain(|a| a.name != name);
        Ok(self.unused(gone))
    }

    /// `create-application-version` of a bundle already kept.
    pub fn create_version(
        &mut self,
        application: &str,
        label: &str,
        description: &str,
        bundle: Bundle,
        now: u64,
    ) -> Result<ApplicationVersion, EnvironmentsError> {
        check_name("version label", label)?;
        check_text("description", description, MAX_DESCRIPTION, true)?;
        let app = self.application_mut(application)?;
        if app.versions.iter().any(|v| v.label == label) {
            return Err(EnvironmentsError::InvalidParameter(format!(
                "Application Version {label} already exists."
            )));
        }
        if app.versions.len() >= MAX_VERSIONS {
            return Err(EnvironmentsError::TooManyApplicationVersions(format!(
                "at most {MAX_VERSIONS} versions of application {application}"
            )));
        }
        let version = ApplicationVersion {
            label: label.to_owned(),
            description: description.to_owned(),
            bundle,
            created: now,
        };
        app.versions.push(version.clone());
        Ok(version)
    }

    /// `delete-application-version`: returns the bundle if no version uses it any more.
    pub fn delete_version(
        &mut self,
        application: &str,
        label: &str,
    ) -> Result<Vec<String>, EnvironmentsError> {
        if let Some(env) = self.version_in_use(application, label) {
            return Err(EnvironmentsError::InvalidParameter(format!(
                "Unable to delete application version {label}: environment {} uses it.",
                env.name
            )));
        }
        let app = self.application_mut(application)?;
        let at = app.versions.iter().position(|v| v.label == label).ok_or_else(|| {
            EnvironmentsError::InvalidParameter(format!("No Application Version named '{label}' found."))
        })?;
        let gone = app.versions.remove(at);
        Ok(self.unused(vec![gone.bundle.sha256]))
    }

    /// Whether any version uses bundle `sha256`.
    pub fn uses(&self, sha256: &str) -> bool {
        self.applications.iter().flat_map(|a| &a.versions).any(|v| v.bundle.sha256 == sha256)
    }

    /// Of `bundles`, those no version uses.
    fn unused(&self, mut bundles: Vec<String>) -> Vec<String> {
        bundles.sort();
        bundles.dedup();
        bundles.retain(|b| !self.uses(b));
        bundles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::bundle::BundleFormat;

    fn bundle(sha: char) -> Bundle {
        Bundle { sha256: sha.to_string().repeat(64), size: 10, format: BundleFormat::TarGz, entries: 1 }
    }

    #[test]
    fn names_are_checked_and_refusals_change_nothing() {
        let mut state = Beanstalk::default();
        state.create_application("r", "web", "my site", 0).unwrap();
        state.create_version("web", "v1", "", bundle('a'), 0).unwrap();
        let before = state.clone();
        let refused = [
            state.create_application("r", "web", "", 0).map(|_| ()),
            state.create_application("r", "", "", 0).map(|_| ()),
            state.create_application("r", "a/b", "", 0).map(|_| ()),
            state.create_application("r", &"x".repeat(101), "", 0).map(|_| ()),
            state.create_application("r", "other", &"d".repeat(201), 0).map(|_| ()),
            state.create_version("web", "v1", "", bundle('b'), 0).map(|_| ()),
            state.create_version("nope", "v2", "", bundle('b'), 0).map(|_| ()),
            state.create_version("web", "", "", bundle('b'), 0).map(|_| ()),
            state.delete_version("web", "v9").map(|_| ()),
            state.delete_application("nope").map(|_| ()),
        ];
        for result in refused {
            assert!(matches!(result, Err(EnvironmentsError::InvalidParameter(_))), "{result:?}");
        }
        assert_eq!(state, before);
    }

    #[test]
    fn a_bundle_is_let_go_once_no_version_uses_it() {
        let mut state = Beanstalk::default();
        state.create_application("r", "web", "", 0).unwrap();
        state.create_application("r", "api", "", 0).unwrap();
        state.create_version("web", "v1", "", bundle('a'), 0).unwrap();
        state.create_version("api", "v1", "", bundle('a'), 0).unwrap();
        state.create_version("web", "v2", "", bundle('b'), 0).unwrap();
        assert!(state.delete_version("web", "v1").unwrap().is_empty(), "api's v1 still uses it");
        assert_eq!(state.delete_application("web").unwrap(), ["b".repeat(64)]);
        assert_eq!(state.delete_application("api").unwrap(), ["a".repeat(64)]);
    }

    #[test]
    fn caps_hold() {
        let mut state = Beanstalk::default();
        for n in 0..MAX_APPLICATIONS {
            state.create_application("r", &format!("app{n}"), "", 0).unwrap();
        }
        let err = state.create_application("r", "one-more", "", 0).unwrap_err();
        assert!(matches!(err, EnvironmentsError::TooManyApplications(_)), "{err}");
        for n in 0..MAX_VERSIONS {
            state.create_version("app0", &format!("v{n}"), "", bundle('a'), 0).unwrap();
        }
        let err = state.create_version("app0", "v-more", "", bundle('a'), 0).unwrap_err();
        assert!(matches!(err, EnvironmentsError::TooManyApplicationVersions(_)), "{err}");
    }
}
