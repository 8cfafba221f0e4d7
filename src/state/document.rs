//! Whole records kept as one JSON document each (the balancers' resources), changed by
//! compare and set: a writer reads the document, makes its change and replaces it only if
//! nobody replaced it meanwhile, so two callers racing on it never lose a change.

use rusqlite::OptionalExtension;

use super::db::{Database, StateError};

/// The largest document (a balancer record at its caps is well below).
pub const MAX_DOCUMENT_BYTES: usize = 16 << 20;

/// Where documents are kept.
pub trait DocumentStore: Send + Sync {
    /// Document `name`, if there is one.
    fn document(&self, name: &str) -> Result<Option<String>, StateError>;
    /// Replaces document `name` with `body` if it still reads `expected` (`None`: there
    /// is none yet); false (and nothing changed) when it does not.
    fn replace_document(&self, name: &str, expected: Option<&str>, body: &str) -> Result<bool, StateError>;
}

impl DocumentStore for Database {
    fn document(&self, name: &str) -> Result<Option<String>, StateError> {
        let connection = self.connection();
        Ok(connection
            .query_row("SELECT body FROM documents WHERE name = ?1", [name], |row| row.get(0))
            .optional()?)
    }

    fn replace_document(&self, name: &str, expected: Option<&str>, body: &str) -> Result<bool, StateError> {
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(StateError::Corrupt(format!(
                "document {name} would exceed {MAX_DOCUMENT_BYTES} bytes"
            )));
        }
        let mut connection = self.connection();
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: Option<String> = tx
            .query_row("SELECT body FROM documents WHERE name = ?1", [name], |row| row.get(0))
            .optional()?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO documents (name, body) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET body = ?2",
            [name, body],
        )?;
        tx.commit()?;
        Ok(true)
    }
}

/// Document `name` read as a `D` (none yet: `D::default()`).
pub fn read<D>(store: &dyn DocumentStore, name: &str) -> Result<D, StateError>
where
    D: serde::de::DeserializeOwned + Default,
{
    parse(name, store.document(name)?.as_deref())
}

/// Applies `change` to document `name` and keeps the result, rereading and trying again
/// while other writers get in first; a refusal (`Err` from `change`) keeps nothing.
pub fn change<D, T, E>(
    store: &dyn DocumentStore,
    name: &str,
    mut change: impl FnMut(&mut D) -> Result<T, E>,
) -> Result<T, E>
where
    D: serde::Serialize + serde::de::DeserializeOwned + Default,
    E: From<StateError>,
{
    loop {
        let current = store.document(name)?;
        let mut document: D = parse(name, current.as_deref())?;
        let result = change(&mut document)?;
        let body =
            serde_json::to_string(&document).map_err(|e| StateError::Corrupt(format!("{name}: {e}")))?;
        if store.replace_document(name, current.as_deref(), &body)? {
            return Ok(result);
        }
    }
}

fn parse<D: serde::de::DeserializeOwned + Default>(name: &str, body: Option<&str>) -> Result<D, StateError> {
    match body {
        None => Ok(D::default()),
        Some(body) => serde_json::from_str(body).map_err(|e| StateError::Corrupt(format!("{name}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_writer_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nuage.db");
        let db = Database::open(&path).unwrap();
        assert_eq!(db.document("elb").unwrap(), None);
        assert!(db.replace_document("elb", None, "{\"v\":1}").unwrap());
        assert!(!db.replace_document("elb", None, "{\"v\":2}").unwrap(), "it exists now");
        assert!(!db.replace_document("elb", Some("{}"), "{\"v\":2}").unwrap(), "stale");
        assert!(db.replace_document("elb", Some("{\"v\":1}"), "{\"v\":2}").unwrap());
        drop(db);
        let db = Database::open(&path).unwrap();
        assert_eq!(db.document("elb").unwrap().as_deref(), Some("{\"v\":2}"));
    }
}
