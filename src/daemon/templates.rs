//! Launch templates: what RunInstances takes, kept under a name as numbered versions that
//! never change once made, so a group launching "version 3" a month from now launches what
//! version 3 was. One document in the daemon's database (changed by compare and set) holds
//! them all; `$Latest` is the highest number, `$Default` the one the owner chose (1 at first).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::cidata;
use super::config::DaemonConfig;
use super::instances::{LaunchVolume, RunSpec};
use super::keypairs::KeyPairs;
use super::tags::Tags;
use super::DaemonError;
use crate::state::document::{self, DocumentStore, MAX_DOCUMENT_BYTES};
use crate::state::id::{new_id, now};
use crate::state::instance::{MetadataChange, MetadataOptions};
use crate::state::tag::Tag;

/// The document the templates are kept in.
const DOCUMENT: &str = "launch-templates";
/// Templates on the host.
pub const MAX_TEMPLATES: usize = 100;
/// Versions of one template.
pub const MAX_VERSIONS: u32 = 100;
/// All templates together, in bytes as recorded: user data (16 KiB each) is what grows, and
/// the document stays well within [`MAX_DOCUMENT_BYTES`].
const MAX_TOTAL_BYTES: usize = MAX_DOCUMENT_BYTES / 2;
/// A description's length, as EC2 allows.
const MAX_DESCRIPTION_CHARS: usize = 255;

/// Why a launch template request was refused. The API maps each to EC2's error name.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// No template has this id.
    #[error("launch template {0} does not exist")]
    IdNotFound(String),
    /// No template has this name.
    #[error("launch template {0:?} does not exist")]
    NameNotFound(String),
    /// The name is taken.
    #[error("a launch template named {0:?} exists")]
    Duplicate(String),
    /// The template has no such version.
    #[error("launch template {0} has no version {1}")]
    VersionNotFound(String, String),
}

/// Which template a request names: by id (`lt-…`) or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// Its id.
    Id(String),
    /// Its name.
    Name(String),
}

impl Which {
    /// The template an id or a name names (an id given: the name is ignored, as EC2 does
    /// not allow both).
    pub fn new(id: &str, name: &str) -> Result<Self, DaemonError> {
        match (id, name) {
            ("", "") => Err(DaemonError::InvalidParameter("name a launch template by id or by name".into())),
            ("", name) => Ok(Self::Name(name.to_owned())),
            (id, "") => Ok(Self::Id(id.to_owned())),
            _ => {
                Err(DaemonError::InvalidParameter("name a launch template by id or by name, not both".into()))
            }
        }
    }
}

/// Which version of a template: a number, `$Latest` or `$Default` (the default when none
/// is given, as in EC2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionSpec {
    /// The highest number.
    Latest,
    /// The one the owner chose.
    Default,
    /// This one.
    Number(u32),
}

impl std::str::FromStr for VersionSpec {
    type Err = DaemonError;

    fn from_str(text: &str) -> Result<Self, DaemonError> {
        match text {
            "" | "$Default" => Ok(Self::Default),
            "$Latest" => Ok(Self::Latest),
            number => number.parse().ok().filter(|&n| n > 0).map(Self::Number).ok_or_else(|| {
                DaemonError::InvalidParameter(format!("version {number:?}: a number, $Latest or $Default"))
            }),
        }
    }
}

impl std::fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Latest => f.write_str("$Latest"),
            Self::Default => f.write_str("$Default"),
            Self::Number(n) => write!(f, "{n}"),
        }
    }
}

/// What a version launches: RunInstances' parameters, each empty one left to the caller
/// (or to the daemon's default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LaunchTemplateData {
    /// The image.
    pub image_id: String,
    /// The instance type.
    pub instance_type: String,
    /// The key pair.
    pub key_name: String,
    /// The subnet of the network interface.
    pub subnet_id: String,
    /// User data for cloud-init.
    #[serde(with = "base64")]
    pub user_data: Vec<u8>,
    /// Data volumes for each instance.
    pub volumes: Vec<LaunchVolume>,
    /// The interface's security groups.
    pub security_group_ids: Vec<String>,
    /// Metadata service options.
    pub metadata_options: MetadataChange,
    /// Tags each instance gets.
    pub instance_tags: Vec<Tag>,
    /// Tags each instance's volumes get.
    pub volume_tags: Vec<Tag>,
    /// The application source bundle each instance gets on a read-only disk: set by the
    /// environments controller, not by the API (EC2's templates have no such field).
    pub bundle: Option<String>,
}

impl LaunchTemplateData {
    /// These parameters with every one `over` gives put in their place (tags: both sets,
    /// `over`'s winning on a key), as a new version from a source version, or RunInstances
    /// from a template, takes them.
    pub fn overlaid(mut self, over: Self) -> Self {
        let replace = |mine: &mut String, theirs: String| {
            if !theirs.is_empty() {
                *mine = theirs;
            }
        };
        replace(&mut self.image_id, over.image_id);
        replace(&mut self.instance_type, over.instance_type);
        replace(&mut self.key_name, over.key_name);
        replace(&mut self.subnet_id, over.subnet_id);
        if !over.user_data.is_empty() {
            self.user_data = over.user_data;
        }
        if !over.volumes.is_empty() {
            self.volumes = over.volumes;
        }
        if !over.security_group_ids.is_empty() {
            self.security_group_ids = over.security_group_ids;
        }
        let (mine, theirs) = (&mut self.metadata_options, over.metadata_options);
        mine.http_tokens = theirs.http_tokens.or(mine.http_tokens);
        mine.http_endpoint = theirs.http_endpoint.or(mine.http_endpoint);
        mine.hop_limit = theirs.hop_limit.or(mine.hop_limit);
        self.instance_tags = merged(self.instance_tags, over.instance_tags);
        self.volume_tags = merged(self.volume_tags, over.volume_tags);
        self.bundle = over.bundle.or(self.bundle);
        self
    }

    /// Checks what can be checked before a launch: user data's size, tags, the instance
    /// type (the image and the rest are checked when an instance is launched, as in EC2).
    pub(crate) fn check(&self, config: &DaemonConfig) -> Result<(), DaemonError> {
        cidata::check_user_data(&self.user_data)?;
        Tags::check(&self.instance_tags)?;
        Tags::check(&self.volume_tags)?;
        if !self.instance_type.is_empty() && config.instance_type(&self.instance_type).is_none() {
            return Err(DaemonError::InvalidParameter(format!(
                "instance type {:?} is not one of this host's",
                self.instance_type
            )));
        }
        Ok(())
    }
}

/// `mine` and `theirs` together, theirs winning where both have a key.
fn merged(mine: Vec<Tag>, theirs: Vec<Tag>) -> Vec<Tag> {
    let mut tags: Vec<Tag> = mine.into_iter().filter(|t| !theirs.iter().any(|o| o.key == t.key)).collect();
    tags.extend(theirs);
    tags
}

/// One immutable version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateVersion {
    /// Its number, from 1.
    pub number: u32,
    /// What it is, for people.
    pub description: String,
    /// When it was made (seconds since the epoch).
    pub created: u64,
    /// What it launches.
    pub data: LaunchTemplateData,
}

/// A launch template and its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchTemplate {
    /// `lt-…`.
    pub id: String,
    /// Unique on the host.
    pub name: String,
    /// When it was made.
    pub created: u64,
    /// The `$Default` version.
    pub default_version: u32,
    /// Its versions, oldest first.
    pub versions: Vec<TemplateVersion>,
}

impl LaunchTemplate {
    /// The `$Latest` version's number.
    pub fn latest_version(&self) -> u32 {
        self.versions.last().map_or(0, |v| v.number)
    }

    /// The version `spec` names.
    pub fn version(&self, spec: VersionSpec) -> Result<&TemplateVersion, TemplateError> {
        let number = match spec {
            VersionSpec::Latest => self.latest_version(),
            VersionSpec::Default => self.default_version,
            VersionSpec::Number(n) => n,
        };
        self.versions
            .iter()
            .find(|v| v.number == number)
            .ok_or_else(|| TemplateError::VersionNotFound(self.id.clone(), spec.to_string()))
    }
}

/// Every template, as recorded.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Templates {
    templates: Vec<LaunchTemplate>,
}

impl Templates {
    fn find(&self, which: &Which) -> Result<&LaunchTemplate, TemplateError> {
        match which {
            Which::Id(id) => self
                .templates
                .iter()
                .find(|t| &t.id == id)
                .ok_or_else(|| TemplateError::IdNotFound(id.clone())),
            Which::Name(name) => self
                .templates
                .iter()
                .find(|t| &t.name == name)
                .ok_or_else(|| TemplateError::NameNotFound(name.clone())),
        }
    }

    fn find_mut(&mut self, which: &Which) -> Result<&mut LaunchTemplate, TemplateError> {
        let id = self.find(which)?.id.clone();
        Ok(self.templates.iter_mut().find(|t| t.id == id).unwrap_or_else(|| unreachable!("found above")))
    }

    /// Refuses a change that would leave the templates larger than their share.
    fn check_size(&self) -> Result<(), DaemonError> {
        let size = serde_json::to_string(self).map_or(usize::MAX, |body| body.len());
        if size > MAX_TOTAL_BYTES {
            return Err(DaemonError::LimitExceeded(format!(
                "launch templates may hold {MAX_TOTAL_BYTES} bytes in all; delete some"
            )));
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), DaemonError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "()./_-".contains(c);
    if !(3..=128).contains(&name.len()) || !name.chars().all(allowed) {
        return Err(DaemonError::InvalidParameter(format!(
            "launch template name {name:?}: 3 to 128 letters, digits and ( ) . / _ -"
        )));
    }
    Ok(())
}

fn check_description(description: &str) -> Result<(), DaemonError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS || description.chars().any(char::is_control) {
        return Err(DaemonError::InvalidParameter(format!(
            "a version description is at most {MAX_DESCRIPTION_CHARS} characters, none a control character"
        )));
    }
    Ok(())
}

/// The launch templates service.
pub struct LaunchTemplates {
    documents: Arc<dyn DocumentStore>,
    config: Arc<DaemonConfig>,
}

impl LaunchTemplates {
    /// Templates kept in `documents`, checked against `config`'s instance types.
    pub fn new(documents: Arc<dyn DocumentStore>, config: Arc<DaemonConfig>) -> Self {
        Self { documents, config }
    }

    fn change<T>(
        &self,
        change: impl FnMut(&mut Templates) -> Result<T, DaemonError>,
    ) -> Result<T, DaemonError> {
        document::change(self.documents.as_ref(), DOCUMENT, change)
    }

    /// Every template.
    pub fn list(&self) -> Result<Vec<LaunchTemplate>, DaemonError> {
        Ok(document::read::<Templates>(self.documents.as_ref(), DOCUMENT)?.templates)
    }

    /// The template `which` names.
    pub fn get(&self, which: &Which) -> Result<LaunchTemplate, DaemonError> {
        let templates: Templates = document::read(self.documents.as_ref(), DOCUMENT)?;
        Ok(templates.find(which)?.clone())
    }

    /// `create-launch-template`: a template whose version 1 (its default) is `data`.
    pub fn create(
        &self,
        name: &str,
        description: &str,
        data: LaunchTemplateData,
    ) -> Result<LaunchTemplate, DaemonError> {
        check_name(name)?;
        check_description(description)?;
        data.check(&self.config)?;
        let id = new_id("lt");
        self.change(|t| {
            if t.templates.iter().any(|t| t.name == name) {
                return Err(TemplateError::Duplicate(name.to_owned()).into());
            }
            if t.templates.len() >= MAX_TEMPLATES {
                return Err(DaemonError::LimitExceeded(format!("at most {MAX_TEMPLATES} launch templates")));
            }
            let created = now();
            let version =
                TemplateVersion { number: 1, description: description.into(), created, data: data.clone() };
            let template = LaunchTemplate {
                id: id.clone(),
                name: name.to_owned(),
                created,
                default_version: 1,
                versions: vec![version],
            };
            t.templates.push(template.clone());
            t.check_size()?;
            Ok(template)
        })
    }

    /// `create-launch-template-version`: the next version, `data` laid over version
    /// `source` when one is named. Earlier versions do not change.
    pub fn create_version(
        &self,
        which: &Which,
        source: Option<VersionSpec>,
        description: &str,
        data: LaunchTemplateData,
    ) -> Result<(LaunchTemplate, TemplateVersion), DaemonError> {
        check_description(description)?;
        self.change(|t| {
            let template = t.find_mut(which)?;
            let data = match source {
                Some(spec) => template.version(spec)?.data.clone().overlaid(data.clone()),
                None => data.clone(),
            };
            data.check(&self.config)?;
            let number = template.latest_version() + 1;
            if number > MAX_VERSIONS {
                return Err(DaemonError::LimitExceeded(format!(
                    "a launch template has at most {MAX_VERSIONS} versions"
                )));
            }
            let version = TemplateVersion { number, description: description.into(), created: now(), data };
            template.versions.push(version.clone());
            let template = template.clone();
            t.check_size()?;
            Ok((template, version))
        })
    }

    /// `modify-launch-template --default-version`.
    pub fn set_default_version(
        &self,
        which: &Which,
        version: VersionSpec,
    ) -> Result<LaunchTemplate, DaemonError> {
        self.change(|t| {
            let template = t.find_mut(which)?;
            template.default_version = template.version(version)?.number;
            Ok(template.clone())
        })
    }

    /// `delete-launch-template`: the template and every version go.
    pub fn delete(&self, which: &Which) -> Result<LaunchTemplate, DaemonError> {
        self.change(|t| {
            let id = t.find(which)?.id.clone();
            let position =
                t.templates.iter().position(|t| t.id == id).unwrap_or_else(|| unreachable!("found"));
            Ok(t.templates.remove(position))
        })
    }

    /// The template `which` names and its version `spec`.
    pub fn version(
        &self,
        which: &Which,
        spec: VersionSpec,
    ) -> Result<(LaunchTemplate, TemplateVersion), DaemonError> {
        let template = self.get(which)?;
        let version = template.version(spec)?.clone();
        Ok((template, version))
    }
}

/// The tag EC2 puts on an instance launched from a template: the template's id.
pub const TEMPLATE_ID_TAG: &str = "aws:ec2launchtemplate:id";
/// The tag EC2 puts on an instance launched from a template: the version's number.
pub const TEMPLATE_VERSION_TAG: &str = "aws:ec2launchtemplate:version";

/// The tags EC2 puts on an instance launched from version `version` of template `id`.
pub fn template_tags(id: &str, version: u32) -> Vec<Tag> {
    vec![
        Tag { key: TEMPLATE_ID_TAG.into(), value: id.into() },
        Tag { key: TEMPLATE_VERSION_TAG.into(), value: version.to_string() },
    ]
}

/// What RunInstances makes of launch parameters: the key pair found by name, the metadata
/// options laid over the defaults.
pub fn run_spec(data: LaunchTemplateData, key_pairs: &KeyPairs) -> Result<RunSpec, DaemonError> {
    let key_pair = match data.key_name.as_str() {
        "" => None,
        name => Some(key_pairs.get(name)?),
    };
    Ok(RunSpec {
        image_id: data.image_id,
        instance_type: data.instance_type,
        subnet_id: data.subnet_id,
        key_pair,
        user_data: data.user_data,
        volumes: data.volumes,
        tags: data.instance_tags,
        volume_tags: data.volume_tags,
        security_group_ids: data.security_group_ids,
        metadata_options: MetadataOptions::default().changed(&data.metadata_options),
        bundle: data.bundle,
        ..RunSpec::default()
    })
}

/// User data kept as base64 text in the document (a JSON array would take four times the room).
mod base64 {
    use base64ct::{Base64, Encoding};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&Base64::encode_string(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        Base64::decode_vec(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::db::Database;

    fn service(dir: &std::path::Path) -> LaunchTemplates {
        let db = Arc::new(Database::open(&dir.join("nuage.db")).unwrap());
        LaunchTemplates::new(db, Arc::new(DaemonConfig::default()))
    }

    fn data(image: &str) -> LaunchTemplateData {
        LaunchTemplateData {
            image_id: image.into(),
            user_data: b"#!/bin/sh\necho hi\n".to_vec(),
            metadata_options: MetadataChange { hop_limit: Some(2), ..MetadataChange::default() },
            ..LaunchTemplateData::default()
        }
    }

    #[test]
    fn versions_never_change_and_latest_and_default_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let templates = service(dir.path());
        let made = templates.create("web", "first", data("ami-1")).unwrap();
        let which = Which::Id(made.id.clone());
        let over = LaunchTemplateData { image_id: "ami-2".into(), ..LaunchTemplateData::default() };
        let (_, second) = templates.create_version(&which, Some(VersionSpec::Number(1)), "", over).unwrap();
        assert_eq!(second.number, 2);
        assert_eq!(second.data.image_id, "ami-2");
        assert_eq!(second.data.user_data, data("ami-1").user_data, "the source's user data is kept");
        assert_eq!(second.data.metadata_options.hop_limit, Some(2));
        let bare = templates.create_version(&which, None, "", LaunchTemplateData::default()).unwrap().1;
        assert_eq!(bare.data, LaunchTemplateData::default(), "without a source nothing is inherited");

        let by_name = Which::Name("web".into());
        assert_eq!(templates.version(&by_name, VersionSpec::Default).unwrap().1.number, 1);
        assert_eq!(templates.version(&by_name, VersionSpec::Latest).unwrap().1.number, 3);
        templates.set_default_version(&by_name, VersionSpec::Number(2)).unwrap();
        assert_eq!(templates.version(&which, VersionSpec::Default).unwrap().1, second);
        assert_eq!(templates.version(&which, VersionSpec::Number(1)).unwrap().1.data, data("ami-1"));
    }

    #[test]
    fn refusals_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let templates = service(dir.path());
        let made = templates.create("web", "", data("ami-1")).unwrap();
        let before = templates.list().unwrap();
        let which = Which::Id(made.id.clone());
        let too_big = LaunchTemplateData { user_data: vec![b'x'; 64 << 10], ..LaunchTemplateData::default() };
        let unknown_type =
            LaunchTemplateData { instance_type: "huge".into(), ..LaunchTemplateData::default() };
        let refused = [
            (templates.create("web", "", data("ami-1")).map(|_| ()), "exists"),
            (templates.create("x", "", data("ami-1")).map(|_| ()), "3 to 128"),
            (templates.create("bad name!", "", data("ami-1")).map(|_| ()), "3 to 128"),
            (templates.create_version(&which, None, "", too_big).map(|_| ()), "user data"),
            (templates.create_version(&which, None, "", unknown_type).map(|_| ()), "instance type"),
            (
                templates.create_version(&which, Some(VersionSpec::Number(9)), "", data("a")).map(|_| ()),
                "no version 9",
            ),
            (templates.set_default_version(&which, VersionSpec::Number(5)).map(|_| ()), "no version 5"),
            (templates.delete(&Which::Name("nope".into())).map(|_| ()), "does not exist"),
            (templates.delete(&Which::Id("lt-0".into())).map(|_| ()), "does not exist"),
        ];
        for (result, why) in refused {
            let err = result.unwrap_err().to_string();
            assert!(err.contains(why), "{err:?} should say {why:?}");
        }
        assert_eq!(templates.list().unwrap(), before);
        assert!("0".parse::<VersionSpec>().is_err() && "$latest".parse::<VersionSpec>().is_err());
        templates.delete(&Which::Name("web".into())).unwrap();
        assert!(templates.list().unwrap().is_empty());
    }

    #[test]
    fn a_template_has_at_most_its_cap_of_versions() {
        let dir = tempfile::tempdir().unwrap();
        let templates = service(dir.path());
        let made = templates.create("web", "", data("ami-1")).unwrap();
        let which = Which::Id(made.id);
        for _ in 1..MAX_VERSIONS {
            templates.create_version(&which, None, "", data("ami-1")).unwrap();
        }
        let err = templates.create_version(&which, None, "", data("ami-1")).unwrap_err();
        assert!(matches!(err, DaemonError::LimitExceeded(_)), "{err}");
        assert_eq!(templates.get(&which).unwrap().latest_version(), MAX_VERSIONS);
    }
}
