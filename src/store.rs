//! The broker's state store behind a narrow key-value interface: named
//! collections of JSON documents keyed by string.
//!
//! The embedded default is redb (ACID, crash-safe, fsync on commit). The
//! interface is deliberately small — get, put, delete, scan of one collection,
//! and an atomic batch — so that moving state to PostgreSQL when brokers run
//! side by side means one new implementation of [`StateStore`], not a rewrite.
//!
//! Invariant: every successful write is durable when the call returns.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// The collections the broker keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collection {
    /// Registered participants, by participant id.
    Participants,
    /// Connection requests, by application id.
    ConnectionRequests,
    /// Grants created from approved connection requests, by grant id.
    Grants,
}

impl Collection {
    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Collection::Participants => TableDefinition::new("participants"),
            Collection::ConnectionRequests => TableDefinition::new("connection_requests"),
            Collection::Grants => TableDefinition::new("grants"),
        }
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened (locked by another broker, unreadable, corrupt).
    #[error("cannot open state store {path}: {reason}")]
    Open {
        /// The file.
        path: String,
        /// What redb reported.
        reason: String,
    },
    /// A read or write failed.
    #[error("state store {operation} failed: {reason}")]
    Operation {
        /// What was attempted.
        operation: &'static str,
        /// What the backend reported.
        reason: String,
    },
}

/// One write in an atomic batch.
#[derive(Debug)]
pub enum Write<'a> {
    /// Insert or replace a document.
    Put(Collection, &'a str, &'a [u8]),
    /// Remove a document (absent is fine).
    Delete(Collection, &'a str),
}

/// The narrow interface every state backend implements.
pub trait StateStore: Send + Sync {
    /// One document.
    fn get(&self, collection: Collection, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every document of a collection, ordered by key.
    fn scan(&self, collection: Collection) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies the writes atomically and durably.
    fn apply(&self, writes: &[Write<'_>]) -> Result<(), StoreError>;
    /// Inserts or replaces one document.
    fn put(&self, collection: Collection, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.apply(&[Write::Put(collection, key, value)])
    }
    /// Removes one document.
    fn delete(&self, collection: Collection, key: &str) -> Result<(), StoreError> {
        self.apply(&[Write::Delete(collection, key)])
    }
}

/// The embedded redb store.
pub struct RedbStore {
    db: redb::Database,
}

impl RedbStore {
    /// Opens or creates the database file.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| open_err(e.to_string()))?;
        }
        let db = redb::Database::create(path).map_err(|e| open_err(e.to_string()))?;
        Ok(RedbStore { db })
    }
}

fn op(operation: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |e| StoreError::Operation {
        operation,
        reason: e.to_string(),
    }
}

impl StateStore for RedbStore {
    fn get(&self, collection: Collection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| op("read")(e.into()))?;
        let table = match txn.open_table(collection.table()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(op("read")(e.into())),
        };
        let value = table.get(key).map_err(|e| op("read")(e.into()))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(&self, collection: Collection) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| op("scan")(e.into()))?;
        let table = match txn.open_table(collection.table()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(op("scan")(e.into())),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| op("scan")(e.into()))? {
            let (k, v) = entry.map_err(|e| op("scan")(e.into()))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn apply(&self, writes: &[Write<'_>]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| op("write")(e.into()))?;
        for write in writes {
            match write {
                Write::Put(c, k, v) => {
                    let mut table = txn
                        .open_table(c.table())
                        .map_err(|e| op("write")(e.into()))?;
                    table.insert(*k, *v).map_err(|e| op("write")(e.into()))?;
                }
                Write::Delete(c, k) => {
                    let mut table = txn
                        .open_table(c.table())
                        .map_err(|e| op("write")(e.into()))?;
                    table.remove(*k).map_err(|e| op("write")(e.into()))?;
                }
            }
        }
        txn.commit().map_err(|e| op("commit")(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            assert_eq!(store.get(Collection::Participants, "a").unwrap(), None);
            assert!(store.scan(Collection::Grants).unwrap().is_empty());
            store.put(Collection::Participants, "a", b"{}").unwrap();
            store
                .apply(&[
                    Write::Put(Collection::Participants, "b", b"1"),
                    Write::Delete(Collection::Participants, "a"),
                ])
                .unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(
            store.scan(Collection::Participants).unwrap(),
            vec![("b".to_string(), b"1".to_vec())]
        );
    }
}
