//! The daemon's embedded database: SQLite (bundled, so every host runs the same engine) in
//! WAL mode, with the schema migrated forward by `PRAGMA user_version`. Callers see the
//! [`InstanceStore`] trait, so another backend can take its place later.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::instance::{InstanceRecord, InstanceState, LaunchData, MetadataChange, MetadataOptions};

/// Errors of the state database.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database failed.
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// No such record.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The record is not in the state the change needs.
    #[error("{id} is {actual}, not {expected}")]
    WrongState {
        /// The instance.
        id: String,
        /// What the change needs.
        expected: String,
        /// What it is.
        actual: InstanceState,
    },
    /// A stored value no longer parses (a newer daemon wrote it, or the file was edited).
    #[error("state database: corrupt record {0}")]
    Corrupt(String),
    /// The database's files cannot be made private.
    #[error("state database file {0}")]
    File(String),
    /// A resource would carry more tags than allowed.
    #[error("{0}")]
    TagLimitExceeded(String),
}

impl StateError {
    /// `id` is in `actual`, not in one of the states `allowed`.
    pub fn wrong_state(id: &str, allowed: &[InstanceState], actual: InstanceState) -> Self {
        let expected = allowed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or ");
        Self::WrongState { id: id.to_owned(), expected, actual }
    }
}

/// Where instances are recorded.
pub trait InstanceStore: Send + Sync {
    /// Adds a new instance.
    fn insert(&self, record: &InstanceRecord) -> Result<(), StateError>;
    /// One instance.
    fn get(&self, id: &str) -> Result<InstanceRecord, StateError>;
    /// Every instance, oldest first.
    fn list(&self) -> Result<Vec<InstanceRecord>, StateError>;
    /// Moves `id` to `next` if it is in one of `from` (compare and set, so two requests
    /// racing on one instance cannot both win), recording `reason` and the VMM's `pid`.
    fn transition(
        &self,
        id: &str,
        from: &[InstanceState],
        next: InstanceState,
        reason: &str,
        pid: Option<i32>,
    ) -> Result<InstanceRecord, StateError>;
    /// Records the instance's root volume.
    fn set_root_volume(&self, id: &str, volume_id: &str) -> Result<(), StateError>;
    /// Records the instance's private address.
    fn set_private_ip(&self, id: &str, ip: Ipv4Addr) -> Result<(), StateError>;
    /// Changes how the metadata service answers instance `id`, unless it is terminated, in
    /// one transaction (two racing changes of different options both hold); returns the
    /// options now.
    fn change_metadata_options(
        &self,
        id: &str,
        change: &MetadataChange,
    ) -> Result<MetadataOptions, StateError>;
    /// Keeps what the instance was launched with, which its metadata service serves.
    fn set_launch_data(&self, id: &str, data: &LaunchData) -> Result<(), StateError>;
    /// What the instance was launched with (empty for instances launched without, or
    /// before this was kept).
    fn launch_data(&self, id: &str) -> Result<LaunchData, StateError>;
}

/// Schema versions, applied in order; the database's `user_version` says how many ran.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        image_id TEXT NOT NULL,
        instance_type TEXT NOT NULL,
        vcpus INTEGER NOT NULL,
        memory_mib INTEGER NOT NULL,
        root_volume_id TEXT NOT NULL,
        state TEXT NOT NULL,
        state_reason TEXT NOT NULL,
        pid INTEGER,
        launch_time INTEGER NOT NULL,
        seq INTEGER NOT NULL
    )",
    "ALTER TABLE instances ADD COLUMN subnet_id TEXT NOT NULL DEFAULT '';
     ALTER TABLE instances ADD COLUMN private_ip TEXT NOT NULL DEFAULT ''",
    "CREATE TABLE key_pairs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        key_type TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        public_key TEXT NOT NULL,
        create_time INTEGER NOT NULL
     );
     ALTER TABLE instances ADD COLUMN key_name TEXT NOT NULL DEFAULT ''",
    "CREATE TABLE tags (
        resource_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (resource_id, key)
     )",
    "ALTER TABLE instances ADD COLUMN http_tokens TEXT NOT NULL DEFAULT 'required';
     ALTER TABLE instances ADD COLUMN http_endpoint TEXT NOT NULL DEFAULT 'enabled';
     ALTER TABLE instances ADD COLUMN hop_limit INTEGER NOT NULL DEFAULT 1;
     CREATE TABLE launch_data (
        instance_id TEXT PRIMARY KEY,
        user_data BLOB NOT NULL,
        public_key TEXT NOT NULL
     )",
    "CREATE TABLE documents (
        name TEXT PRIMARY KEY,
        body TEXT NOT NULL
     )",
    "ALTER TABLE launch_data ADD COLUMN bundle TEXT NOT NULL DEFAULT ''",
];

/// The SQLite database.
#[derive(Debug)]
pub struct Database {
    connection: Mutex<Connection>,
}

impl Database {
    /// Opens (creating, migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let mut connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > MIGRATIONS.len() {
            return Err(StateError::Corrupt(format!(
                "schema version {version} is newer than this nuaged knows ({})",
                MIGRATIONS.len()
            )));
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = connection.transaction()?;
            tx.execute_batch(migration)?;
            tx.pragma_update(None, "user_version", index + 1)?;
            tx.commit()?;
        }
        // SQLite makes its files as the umask says; they hold every instance's record.
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StateError::File(format!("{}: {e}", path.display())))
                }
                _ => {}
            }
        }
        Ok(Self { connection: Mutex::new(connection) })
    }

    pub(super) fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written: its own
        // transaction rolls back, so the connection is still sound.
        self.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Database {
    /// Sets one text column of instance `id`.
    fn update(&self, id: &str, column: &'static str, value: &str) -> Result<(), StateError> {
        let sql = format!("UPDATE instances SET {column} = ?2 WHERE id = ?1");
        if self.connection().execute(&sql, params![id, value])? == 0 {
            return Err(StateError::NotFound(id.to_owned()));
        }
        Ok(())
    }
}

const COLUMNS: &str =
    "id, image_id, instance_type, vcpus, memory_mib, root_volume_id, state, state_reason, pid, \
     launch_time, subnet_id, private_ip, key_name, http_tokens, http_endpoint, hop_limit";

fn record(row: &Row<'_>) -> rusqlite::Result<Result<InstanceRecord, StateError>> {
    let state: String = row.get(6)?;
    let id: String = row.get(0)?;
    let Ok(state) = state.parse() else {
        return Ok(Err(StateError::Corrupt(format!("{id}: state {state:?}"))));
    };
    let private_ip: String = row.get(11)?;
    let private_ip = match private_ip.as_str() {
        "" => None,
        text => match text.parse() {
            Ok(ip) => Some(ip),
            Err(_) => return Ok(Err(StateError::Corrupt(format!("{id}: address {text:?}")))),
        },
    };
    let http_tokens: String = row.get(13)?;
    let http_endpoint: String = row.get(14)?;
    let hop_limit: u32 = row.get(15)?;
    let metadata_options = match (
        http_tokens.parse(),
        MetadataOptions::parse_endpoint(&http_endpoint),
        MetadataOptions::check_hop_limit(hop_limit),
    ) {
        (Ok(http_tokens), Ok(http_endpoint), Ok(hop_limit)) => {
            MetadataOptions { http_tokens, http_endpoint, hop_limit }
        }
        _ => return Ok(Err(StateError::Corrupt(format!("{id}: metadata options")))),
    };
    Ok(Ok(InstanceRecord {
        id,
        image_id: row.get(1)?,
        instance_type: row.get(2)?,
        vcpus: row.get(3)?,
        memory_mib: row.get(4)?,
        root_volume_id: row.get(5)?,
        state,
        state_reason: row.get(7)?,
        pid: row.get(8)?,
        launch_time: row.get(9)?,
        subnet_id: row.get(10)?,
        private_ip,
        key_name: row.get(12)?,
        metadata_options,
    }))
}

fn get(connection: &Connection, id: &str) -> Result<InstanceRecord, StateError> {
    connection
        .query_row(&format!("SELECT {COLUMNS} FROM instances WHERE id = ?1"), [id], record)
        .optional()?
        .ok_or_else(|| StateError::NotFound(id.to_owned()))?
}

impl InstanceStore for Database {
    fn insert(&self, r: &InstanceRecord) -> Result<(), StateError> {
        self.connection().execute(
            &format!(
                "INSERT INTO instances ({COLUMNS}, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 (SELECT COALESCE(MAX(seq), 0) + 1 FROM instances))"
            ),
            params![
                r.id,
                r.image_id,
                r.instance_type,
                r.vcpus,
                r.memory_mib,
                r.root_volume_id,
                r.state.as_str(),
                r.state_reason,
                r.pid,
                r.launch_time,
                r.subnet_id,
                r.private_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                r.key_name,
                r.metadata_options.http_tokens.as_str(),
                r.metadata_options.endpoint_str(),
                r.metadata_options.hop_limit
            ],
        )?;
        Ok(())
    }

    fn get(&self, id: &str) -> Result<InstanceRecord, StateError> {
        get(&self.connection(), id)
    }

    fn list(&self) -> Result<Vec<InstanceRecord>, StateError> {
        let connection = self.connection();
        let mut statement = connection.prepare(&format!("SELECT {COLUMNS} FROM instances ORDER BY seq"))?;
        let rows = statement.query_map([], record)?;
        rows.map(|row| row?).collect()
    }

    fn transition(
        &self,
        id: &str,
        from: &[InstanceState],
        next: InstanceState,
        reason: &str,
        pid: Option<i32>,
    ) -> Result<InstanceRecord, StateError> {
        let mut connection = self.connection();
        let tx = connection.transaction()?;
        let current = get(&tx, id)?;
        if !from.contains(&current.state) {
            return Err(StateError::wrong_state(id, from, current.state));
        }
        tx.execute(
            "UPDATE instances SET state = ?2, state_reason = ?3, pid = ?4 WHERE id = ?1",
            params![id, next.as_str(), reason, pid],
        )?;
        tx.commit()?;
        Ok(InstanceRecord { state: next, state_reason: reason.to_owned(), pid, ..current })
    }

    fn set_root_volume(&self, id: &str, volume_id: &str) -> Result<(), StateError> {
        self.update(id, "root_volume_id", volume_id)
    }

    fn set_private_ip(&self, id: &str, ip: Ipv4Addr) -> Result<(), StateError> {
        self.update(id, "private_ip", &ip.to_string())
    }

    fn change_metadata_options(
        &self,
        id: &str,
        change: &MetadataChange,
    ) -> Result<MetadataOptions, StateError> {
        let mut connection = self.connection();
        let tx = connection.transaction()?;
        let current = get(&tx, id)?;
        if current.state == InstanceState::Terminated {
            let live = &InstanceState::ALL[..InstanceState::ALL.len() - 1];
            return Err(StateError::wrong_state(id, live, current.state));
        }
        let options = current.metadata_options.changed(change);
        tx.execute(
            "UPDATE instances SET http_tokens = ?2, http_endpoint = ?3, hop_limit = ?4 WHERE id = ?1",
            params![id, options.http_tokens.as_str(), options.endpoint_str(), options.hop_limit],
        )?;
        tx.commit()?;
        Ok(options)
    }

    fn set_launch_data(&self, id: &str, data: &LaunchData) -> Result<(), StateError> {
        self.connection().execute(
            "INSERT OR REPLACE INTO launch_data (instance_id, user_data, public_key, bundle) \
             VALUES (?1, ?2, ?3, ?4)",
            params![id, data.user_data, data.public_key, data.bundle],
        )?;
        Ok(())
    }

    fn launch_data(&self, id: &str) -> Result<LaunchData, StateError> {
        let data = self
            .connection()
            .query_row(
                "SELECT user_data, public_key, bundle FROM launch_data WHERE instance_id = ?1",
                [id],
                |row| Ok(LaunchData { user_data: row.get(0)?, public_key: row.get(1)?, bundle: row.get(2)? }),
            )
            .optional()?;
        Ok(data.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::instance::HttpTokens;

    fn instance(id: &str) -> InstanceRecord {
        InstanceRecord {
            id: id.into(),
            image_id: "ami-1".into(),
            instance_type: "t.nano".into(),
            vcpus: 1,
            memory_mib: 128,
            root_volume_id: String::new(),
            state: InstanceState::Pending,
            state_reason: String::new(),
            pid: None,
            launch_time: 1,
            subnet_id: String::new(),
            private_ip: None,
            key_name: String::new(),
            metadata_options: MetadataOptions::default(),
        }
    }

    #[test]
    fn metadata_options_and_launch_data_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nuage.db");
        let db = Database::open(&path).unwrap();
        db.insert(&instance("i-a")).unwrap();
        db.insert(&instance("i-b")).unwrap();
        assert_eq!(db.get("i-a").unwrap().metadata_options, MetadataOptions::default());
        let options =
            MetadataOptions { http_tokens: HttpTokens::Optional, http_endpoint: false, hop_limit: 3 };
        // Two changes of different options, one after the other: both hold.
        let tokens = MetadataChange { http_tokens: Some(HttpTokens::Optional), ..Default::default() };
        let rest = MetadataChange { http_endpoint: Some(false), hop_limit: Some(3), ..Default::default() };
        db.change_metadata_options("i-a", &tokens).unwrap();
        assert_eq!(db.change_metadata_options("i-a", &rest).unwrap(), options);
        assert!(matches!(db.change_metadata_options("i-zz", &rest), Err(StateError::NotFound(_))));
        let launched = LaunchData {
            user_data: b"#!/bin/sh\0binary".to_vec(),
            public_key: "ssh-ed25519 AAAA".into(),
            bundle: "ab".repeat(32),
        };
        db.set_launch_data("i-a", &launched).unwrap();
        db.transition("i-b", &[InstanceState::Pending], InstanceState::ShuttingDown, "", None).unwrap();
        db.transition("i-b", &[InstanceState::ShuttingDown], InstanceState::Terminated, "", None).unwrap();
        let refused = db.change_metadata_options("i-b", &rest).unwrap_err();
        assert!(
            matches!(refused, StateError::WrongState { actual: InstanceState::Terminated, .. }),
            "{refused}"
        );
        assert_eq!(db.get("i-b").unwrap().metadata_options, MetadataOptions::default());
        drop(db);
        let db = Database::open(&path).unwrap();
        assert_eq!(db.get("i-a").unwrap().metadata_options, options);
        assert_eq!(db.launch_data("i-a").unwrap(), launched);
        assert_eq!(db.launch_data("i-b").unwrap(), LaunchData::default(), "none given");
        db.connection().execute("UPDATE instances SET hop_limit = 0 WHERE id = 'i-b'", []).unwrap();
        assert!(matches!(db.get("i-b"), Err(StateError::Corrupt(_))), "a hop limit outside 1-64");
    }

    #[test]
    fn records_survive_reopening_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nuage.db");
        let db = Database::open(&path).unwrap();
        for id in ["i-b", "i-a", "i-c"] {
            db.insert(&instance(id)).unwrap();
        }
        db.set_root_volume("i-a", "vol-1").unwrap();
        db.set_private_ip("i-a", "10.0.0.5".parse().unwrap()).unwrap();
        db.transition("i-a", &[InstanceState::Pending], InstanceState::Running, "launched", Some(42))
            .unwrap();
        drop(db);
        let db = Database::open(&path).unwrap();
        let ids: Vec<String> = db.list().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["i-b", "i-a", "i-c"]);
        let a = db.get("i-a").unwrap();
        assert_eq!((a.state, a.pid, a.root_volume_id.as_str()), (InstanceState::Running, Some(42), "vol-1"));
        assert_eq!(a.private_ip, Some("10.0.0.5".parse().unwrap()));
        assert!(db.insert(&instance("i-a")).is_err(), "ids are unique");
    }

    #[test]
    fn a_transition_from_the_wrong_state_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("nuage.db")).unwrap();
        db.insert(&instance("i-a")).unwrap();
        let err =
            db.transition("i-a", &[InstanceState::Running], InstanceState::Stopping, "", None).unwrap_err();
        assert!(matches!(err, StateError::WrongState { actual: InstanceState::Pending, .. }));
        assert_eq!(err.to_string(), "i-a is pending, not running");
        assert_eq!(db.get("i-a").unwrap().state, InstanceState::Pending);
        assert!(matches!(db.get("i-zz"), Err(StateError::NotFound(_))));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nuage.db");
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
        let err = Database::open(&path).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }
}
