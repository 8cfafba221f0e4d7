//! Key pairs as the daemon records them: the public half only. A created key pair's
//! private key is handed to the caller once and never stored.

use rusqlite::{params, OptionalExtension, Row};

use super::db::{Database, StateError};

/// One key pair's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairRecord {
    /// `key-` and hex digits.
    pub id: String,
    /// The name instances are launched with.
    pub name: String,
    /// `rsa` or `ed25519`.
    pub key_type: String,
    /// The fingerprint as EC2 shows it for this kind of key.
    pub fingerprint: String,
    /// The public key, one OpenSSH `authorized_keys` line.
    pub public_key: String,
    /// Seconds since the epoch.
    pub create_time: i64,
}

/// Where key pairs are recorded.
pub trait KeyPairStore: Send + Sync {
    /// Adds a key pair; false (and nothing changed) when its name is taken.
    fn insert_key_pair(&self, record: &KeyPairRecord) -> Result<bool, StateError>;
    /// The key pair named `name`.
    fn key_pair(&self, name: &str) -> Result<Option<KeyPairRecord>, StateError>;
    /// Every key pair, by name.
    fn key_pairs(&self) -> Result<Vec<KeyPairRecord>, StateError>;
    /// Removes the key pair named `name`; false when there was none.
    fn delete_key_pair(&self, name: &str) -> Result<bool, StateError>;
}

const COLUMNS: &str = "id, name, key_type, fingerprint, public_key, create_time";

fn record(row: &Row<'_>) -> rusqlite::Result<KeyPairRecord> {
    Ok(KeyPairRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        key_type: row.get(2)?,
        fingerprint: row.get(3)?,
        public_key: row.get(4)?,
        create_time: row.get(5)?,
    })
}

impl KeyPairStore for Database {
    fn insert_key_pair(&self, r: &KeyPairRecord) -> Result<bool, StateError> {
        let inserted = self.connection().execute(
            &format!("INSERT OR IGNORE INTO key_pairs ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![r.id, r.name, r.key_type, r.fingerprint, r.public_key, r.create_time],
        )?;
        Ok(inserted == 1)
    }

    fn key_pair(&self, name: &str) -> Result<Option<KeyPairRecord>, StateError> {
        let sql = format!("SELECT {COLUMNS} FROM key_pairs WHERE name = ?1");
        Ok(self.connection().query_row(&sql, [name], record).optional()?)
    }

    fn key_pairs(&self) -> Result<Vec<KeyPairRecord>, StateError> {
        let connection = self.connection();
        let mut statement = connection.prepare(&format!("SELECT {COLUMNS} FROM key_pairs ORDER BY name"))?;
        let rows = statement.query_map([], record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_key_pair(&self, name: &str) -> Result<bool, StateError> {
        Ok(self.connection().execute("DELETE FROM key_pairs WHERE name = ?1", [name])? == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, id: &str) -> KeyPairRecord {
        KeyPairRecord {
            id: id.into(),
            name: name.into(),
            key_type: "ed25519".into(),
            fingerprint: "fp".into(),
            public_key: "ssh-ed25519 AAAA".into(),
            create_time: 1,
        }
    }

    #[test]
    fn names_are_unique_and_records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nuage.db");
        let db = Database::open(&path).unwrap();
        assert!(db.insert_key_pair(&key("b", "key-1")).unwrap());
        assert!(db.insert_key_pair(&key("a", "key-2")).unwrap());
        assert!(!db.insert_key_pair(&key("a", "key-3")).unwrap(), "a name is taken once");
        drop(db);
        let db = Database::open(&path).unwrap();
        let names: Vec<String> = db.key_pairs().unwrap().into_iter().map(|k| k.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(db.key_pair("a").unwrap().unwrap().id, "key-2");
        assert!(db.delete_key_pair("a").unwrap());
        assert!(!db.delete_key_pair("a").unwrap());
        assert_eq!(db.key_pair("a").unwrap(), None);
    }
}
