//! Tags as the API offers them: checked (EC2's limits, on resources that exist), recorded
//! in the database, shown on every resource a Describe returns, and listed by
//! DescribeTags. A resource's kind is read from its id's prefix, as EC2 does.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::describe::{describe, Describable, Filter, Listing, Page, TagIndex};
use super::keypairs::KeyPairError;
use super::DaemonError;
use crate::net::plane::NetworkPlane;
use crate::net::NetError;
use crate::state::db::InstanceStore;
use crate::state::keypair::KeyPairStore;
use crate::state::tag::{Tag, TagKey, TagStore, MAX_TAGS_PER_RESOURCE};
use crate::store::Store;

/// Longest tag key and value, in characters, as EC2 allows them.
const MAX_KEY_CHARS: usize = 128;
const MAX_VALUE_CHARS: usize = 256;
/// Most resources one CreateTags or DeleteTags names.
const MAX_RESOURCES_PER_CALL: usize = 1000;

/// The kinds of resource that carry tags, by EC2's resource type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    /// `i-…`.
    Instance,
    /// `ami-…`.
    Image,
    /// `vol-…`.
    Volume,
    /// `snap-…`.
    Snapshot,
    /// `subnet-…`.
    Subnet,
    /// `eipalloc-…`.
    ElasticIp,
    /// `key-…`.
    KeyPair,
    /// `sg-…`.
    SecurityGroup,
}

impl ResourceType {
    const ALL: [(ResourceType, &'static str, &'static str); 8] = [
        (ResourceType::Instance, "instance", "i-"),
        (ResourceType::Image, "image", "ami-"),
        (ResourceType::Volume, "volume", "vol-"),
        (ResourceType::Snapshot, "snapshot", "snap-"),
        (ResourceType::Subnet, "subnet", "subnet-"),
        (ResourceType::ElasticIp, "elastic-ip", "eipalloc-"),
        (ResourceType::KeyPair, "key-pair", "key-"),
        (ResourceType::SecurityGroup, "security-group", "sg-"),
    ];

    /// The kind of the resource with id `id`.
    pub fn of(id: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, _, prefix)| id.starts_with(prefix)).map(|(kind, _, _)| *kind)
    }

    /// The kind EC2 calls `name` in tag specifications and DescribeTags.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, known, _)| *known == name).map(|(kind, _, _)| *kind)
    }

    /// EC2's name for the kind.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(kind, _, _)| *kind == self).map_or("", |(_, name, _)| name)
    }
}

/// One tag of one resource, as DescribeTags lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagDescription {
    /// The resource.
    pub resource_id: String,
    /// Its kind.
    pub resource_type: ResourceType,
    /// The tag.
    pub tag: Tag,
    /// The resource id and the key: the order pages follow.
    position: String,
}

impl Describable for TagDescription {
    const FILTERS: &'static [&'static str] = &["resource-id", "resource-type", "key", "value"];

    fn id(&self) -> &str {
        &self.position
    }

    fn attribute(&self, name: &str) -> String {
        match name {
            "resource-id" => self.resource_id.clone(),
            "resource-type" => self.resource_type.name().to_owned(),
            "key" => self.tag.key.clone(),
            _ => self.tag.value.clone(),
        }
    }
}

/// The daemon's tag operations.
#[derive(Clone)]
pub struct Tags {
    tags: Arc<dyn TagStore>,
    instances: Arc<dyn InstanceStore>,
    key_pairs: Arc<dyn KeyPairStore>,
    store: Arc<Store>,
    plane: Arc<NetworkPlane>,
}

impl Tags {
    /// Tag operations recorded in `tags`, on the resources the others hold.
    pub fn new(
        tags: Arc<dyn TagStore>,
        instances: Arc<dyn InstanceStore>,
        key_pairs: Arc<dyn KeyPairStore>,
        store: Arc<Store>,
        plane: Arc<NetworkPlane>,
    ) -> Self {
        Self { tags, instances, key_pairs, store, plane }
    }

    /// Puts `tags` on every resource in `resources`; all or nothing.
    pub fn create(&self, resources: &[String], tags: &[Tag]) -> Result<(), DaemonError> {
        Self::check(tags)?;
        self.check_resources(resources)?;
        Ok(self.tags.set_tags(resources, tags)?)
    }

    /// Removes the tags named in `keys` from every resource in `resources`.
    pub fn delete(&self, resources: &[String], keys: &[TagKey]) -> Result<(), DaemonError> {
        if keys.len() > MAX_TAGS_PER_RESOURCE {
            return Err(DaemonError::InvalidParameter(format!(
                "at most {MAX_TAGS_PER_RESOURCE} tags per call"
            )));
        }
        if let Some(key) = keys.iter().find(|k| is_reserved(&k.key)) {
            return Err(DaemonError::InvalidParameter(format!(
                "tag key {:?}: the aws: prefix is reserved",
                key.key
            )));
        }
        self.check_resources(resources)?;
        Ok(self.tags.delete_tags(resources, keys)?)
    }

    /// The tags matching `filters` (resource-id, resource-type, key, value), a page of them.
    pub fn describe(&self, filters: &[Filter], page: &Page) -> Result<Listing<TagDescription>, DaemonError> {
        let records = self
            .tags
            .all_tags()?
            .into_iter()
            .filter_map(|(resource_id, tag)| {
                let resource_type = ResourceType::of(&resource_id)?;
                let position = format!("{resource_id}\t{}", tag.key);
                Some(TagDescription { resource_id, resource_type, tag, position })
            })
            .collect();
        describe(records, filters, page, &TagIndex::new())
    }

    /// Every resource's tags, for a Describe.
    pub fn index(&self) -> Result<TagIndex, DaemonError> {
        let mut index = TagIndex::new();
        for (resource, tag) in self.tags.all_tags()? {
            index.entry(resource).or_default().push(tag);
        }
        Ok(index)
    }

    /// The tags of one resource.
    pub fn of(&self, resource: &str) -> Result<Vec<Tag>, DaemonError> {
        Ok(self.tags.tags_of(resource)?)
    }

    /// The page of `records` matching `filters`, with their tags.
    pub fn list<T: Describable>(
        &self,
        records: Vec<T>,
        filters: &[Filter],
        page: &Page,
    ) -> Result<Listing<T>, DaemonError> {
        describe(records, filters, page, &self.index()?)
    }

    /// Checks tags against EC2's limits: 1 to 50 per call, keys 1 to 128 characters and
    /// not `aws:…` (reserved), values up to 256, no control characters, no key twice.
    pub fn check(tags: &[Tag]) -> Result<(), DaemonError> {
        Self::check_keys(tags, false)
    }

    /// Checks the tags nuage itself puts on what it makes: EC2's limits, every key `aws:…`.
    pub fn check_reserved(tags: &[Tag]) -> Result<(), DaemonError> {
        Self::check_keys(tags, true)
    }

    fn check_keys(tags: &[Tag], reserved: bool) -> Result<(), DaemonError> {
        let invalid = |why: String| Err(DaemonError::InvalidParameter(why));
        if tags.len() > MAX_TAGS_PER_RESOURCE {
            return invalid(format!("{} tags; at most {MAX_TAGS_PER_RESOURCE}", tags.len()));
        }
        let mut keys = BTreeSet::new();
        for tag in tags {
            let key_chars = tag.key.chars().count();
            if key_chars == 0 || key_chars > MAX_KEY_CHARS {
                return invalid(format!("tag key {:?} must be 1 to {MAX_KEY_CHARS} characters", tag.key));
            }
            if is_reserved(&tag.key) != reserved {
                return invalid(format!("tag key {:?}: the aws: prefix is reserved", tag.key));
            }
            if tag.value.chars().count() > MAX_VALUE_CHARS {
                return invalid(format!(
                    "the value of tag {:?} is longer than {MAX_VALUE_CHARS} characters",
                    tag.key
                ));
            }
            if tag.key.chars().chain(tag.value.chars()).any(char::is_control) {
                return invalid(format!("tag {:?} holds a control character", tag.key));
            }
            if !keys.insert(&tag.key) {
                return invalid(format!("tag key {:?} given twice", tag.key));
            }
        }
        Ok(())
    }

    /// Removes the tags of a resource that was deleted.
    pub fn forget(&self, resource: &str) -> Result<(), DaemonError> {
        Ok(self.tags.forget_tags(resource)?)
    }

    /// Fails unless every resource exists (the error names the first that does not).
    fn check_resources(&self, resources: &[String]) -> Result<(), DaemonError> {
        if resources.is_empty() || resources.len() > MAX_RESOURCES_PER_CALL {
            return Err(DaemonError::InvalidParameter(format!(
                "name 1 to {MAX_RESOURCES_PER_CALL} resources, not {}",
                resources.len()
            )));
        }
        for id in resources {
            match ResourceType::of(id) {
                None => return Err(DaemonError::InvalidParameter(format!("{id:?} is not a resource id"))),
                Some(ResourceType::Instance) => drop(self.instances.get(id)?),
                Some(ResourceType::Image) => drop(self.store.image(id)?),
                Some(ResourceType::Volume) => drop(self.store.volume(id)?),
                Some(ResourceType::Snapshot) => drop(self.store.snapshot(id)?),
                Some(ResourceType::Subnet) => drop(self.plane.ipam().subnet(id)?),
                Some(ResourceType::ElasticIp) => {
                    if !self.plane.ipam().elastic_ips()?.iter().any(|eip| &eip.id == id) {
                        return Err(NetError::AllocationNotFound(id.clone()).into());
                    }
                }
                Some(ResourceType::SecurityGroup) => {
                    if !self.plane.security_groups()?.iter().any(|group| &group.id == id) {
                        return Err(NetError::GroupNotFound(id.clone()).into());
                    }
                }
                Some(ResourceType::KeyPair) => {
                    if !self.key_pairs.key_pairs()?.iter().any(|key| &key.id == id) {
                        return Err(KeyPairError::NotFound(id.clone()).into());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether `key` is one of the `aws:` keys nuage keeps for itself.
fn is_reserved(key: &str) -> bool {
    key.get(..4).is_some_and(|prefix| prefix.eq_ignore_ascii_case("aws:"))
}
