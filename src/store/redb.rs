//! The embedded state store: one redb file, one table per collection.
//!
//! redb commits with fsync (its default durability), so a write is durable
//! when `apply` returns; a write transaction dropped before its commit
//! leaves nothing. Keys are `&str`, ordered by redb as Rust orders `str`.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{Collection, StateStore, StoreError, Write, check_key};

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

fn table(collection: Collection) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(collection.name())
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
        let table = match txn.open_table(table(collection)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(op("read")(e.into())),
        };
        let value = table.get(key).map_err(|e| op("read")(e.into()))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(&self, collection: Collection) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| op("scan")(e.into()))?;
        let table = match txn.open_table(table(collection)) {
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
        // A `?` below drops `txn` uncommitted, which aborts it: nothing of
        // the batch is kept.
        let txn = self.db.begin_write().map_err(|e| op("write")(e.into()))?;
        for write in writes {
            match write {
                Write::Put(c, k, v) => {
                    check_key(k)?;
                    let mut table = txn
                        .open_table(table(*c))
                        .map_err(|e| op("write")(e.into()))?;
                    table.insert(*k, *v).map_err(|e| op("write")(e.into()))?;
                }
                Write::Delete(c, k) => {
                    check_key(k)?;
                    let mut table = txn
                        .open_table(table(*c))
                        .map_err(|e| op("write")(e.into()))?;
                    table.remove(*k).map_err(|e| op("write")(e.into()))?;
                }
            }
        }
        txn.commit().map_err(|e| op("commit")(e.into()))
    }
}
