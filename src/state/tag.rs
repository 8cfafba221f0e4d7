//! Tags: EC2's key/value labels on any resource, recorded by resource id in the daemon's
//! database, so every kind of resource (instances, images, volumes, snapshots, subnets,
//! Elastic IPs, key pairs) carries them the same way. The coming groups and environments
//! mark their instances with them.

use rusqlite::params;

use super::db::{Database, StateError};

/// Most tags one resource may carry, as EC2 allows.
pub const MAX_TAGS_PER_RESOURCE: usize = 50;

/// One tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Tag {
    /// The key, unique on its resource.
    pub key: String,
    /// The value (may be empty).
    pub value: String,
}

/// A tag to remove: by key, or only where it has this value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagKey {
    /// The key.
    pub key: String,
    /// Only where the tag has this value.
    pub value: Option<String>,
}

/// Where tags are recorded.
pub trait TagStore: Send + Sync {
    /// Puts `tags` on every resource in `resources`, replacing the values of keys they
    /// already carry; all or nothing: when one resource would carry more than
    /// [`MAX_TAGS_PER_RESOURCE`], nothing changes.
    fn set_tags(&self, resources: &[String], tags: &[Tag]) -> Result<(), StateError>;
    /// Removes the tags named in `keys` from every resource in `resources`.
    fn delete_tags(&self, resources: &[String], keys: &[TagKey]) -> Result<(), StateError>;
    /// Every tag, as (resource id, tag), by resource id and key.
    fn all_tags(&self) -> Result<Vec<(String, Tag)>, StateError>;
    /// The tags of one resource, by key.
    fn tags_of(&self, resource: &str) -> Result<Vec<Tag>, StateError>;
    /// Removes every tag of a resource that no longer exists.
    fn forget_tags(&self, resource: &str) -> Result<(), StateError>;
}

impl TagStore for Database {
    fn set_tags(&self, resources: &[String], tags: &[Tag]) -> Result<(), StateError> {
        let mut connection = self.connection();
        let tx = connection.transaction()?;
        for resource in resources {
            for tag in tags {
                tx.execute(
                    "INSERT INTO tags (resource_id, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (resource_id, key) DO UPDATE SET value = excluded.value",
                    params![resource, tag.key, tag.value],
                )?;
            }
            let count: usize =
                tx.query_row("SELECT COUNT(*) FROM tags WHERE resource_id = ?1", [resource], |row| {
                    row.get(0)
                })?;
            if count > MAX_TAGS_PER_RESOURCE {
                // Dropping the transaction rolls every resource back.
                return Err(StateError::TagLimitExceeded(format!(
                    "{resource} would carry {count} tags; at most {MAX_TAGS_PER_RESOURCE}"
                )));
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn delete_tags(&self, resources: &[String], keys: &[TagKey]) -> Result<(), StateError> {
        let mut connection = self.connection();
        let tx = connection.transaction()?;
        for resource in resources {
            for key in keys {
                match &key.value {
                    None => tx.execute(
                        "DELETE FROM tags WHERE resource_id = ?1 AND key = ?2",
                        params![resource, key.key],
                    )?,
                    Some(value) => tx.execute(
                        "DELETE FROM tags WHERE resource_id = ?1 AND key = ?2 AND value = ?3",
                        params![resource, key.key, value],
                    )?,
                };
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn all_tags(&self) -> Result<Vec<(String, Tag)>, StateError> {
        let connection = self.connection();
        let mut statement =
            connection.prepare("SELECT resource_id, key, value FROM tags ORDER BY resource_id, key")?;
        let rows =
            statement.query_map([], |row| Ok((row.get(0)?, Tag { key: row.get(1)?, value: row.get(2)? })))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn tags_of(&self, resource: &str) -> Result<Vec<Tag>, StateError> {
        let connection = self.connection();
        let mut statement =
            connection.prepare("SELECT key, value FROM tags WHERE resource_id = ?1 ORDER BY key")?;
        let rows = statement.query_map([resource], |row| Ok(Tag { key: row.get(0)?, value: row.get(1)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn forget_tags(&self, resource: &str) -> Result<(), StateError> {
        self.connection().execute("DELETE FROM tags WHERE resource_id = ?1", [resource])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(key: &str, value: &str) -> Tag {
        Tag { key: key.into(), value: value.into() }
    }

    #[test]
    fn tags_are_set_replaced_removed_and_capped_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nuage.db");
        let db = Database::open(&path).unwrap();
        let both = ["i-1".to_owned(), "vol-1".to_owned()];
        db.set_tags(&both, &[tag("Name", "web"), tag("env", "prod")]).unwrap();
        db.set_tags(&both[..1], &[tag("Name", "api")]).unwrap();
        drop(db);
        let db = Database::open(&path).unwrap();
        assert_eq!(
            db.all_tags().unwrap(),
            [
                ("i-1".to_owned(), tag("Name", "api")),
                ("i-1".to_owned(), tag("env", "prod")),
                ("vol-1".to_owned(), tag("Name", "web")),
                ("vol-1".to_owned(), tag("env", "prod")),
            ]
        );
        // Only where the value matches, or whatever the value.
        db.delete_tags(&both, &[TagKey { key: "Name".into(), value: Some("web".into()) }]).unwrap();
        db.delete_tags(&both[..1], &[TagKey { key: "env".into(), value: None }]).unwrap();
        assert_eq!(
            db.all_tags().unwrap(),
            [("i-1".to_owned(), tag("Name", "api")), ("vol-1".to_owned(), tag("env", "prod"))]
        );
        assert_eq!(db.tags_of("vol-1").unwrap(), [tag("env", "prod")]);
        let many: Vec<Tag> = (0..MAX_TAGS_PER_RESOURCE).map(|i| tag(&format!("k{i}"), "")).collect();
        let err = db.set_tags(&both, &many).unwrap_err();
        assert!(matches!(err, StateError::TagLimitExceeded(_)), "{err}");
        assert_eq!(db.all_tags().unwrap().len(), 2, "nothing changed, on either resource");
        db.forget_tags("vol-1").unwrap();
        assert_eq!(db.all_tags().unwrap(), [("i-1".to_owned(), tag("Name", "api"))]);
    }
}
