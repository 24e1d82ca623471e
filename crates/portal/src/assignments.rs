//! Which official may use which of their organisation's grants: decided by
//! the organisation's administrators in the portal, kept in one JSON file
//! written atomically.
//!
//! Invariants:
//! - nothing is allowed that is not written down: an official with no
//!   assignment may use no grant (a new official starts with none);
//! - an administrator changes the assignments of their own organisation's
//!   officials only, and only to grants their organisation holds (checked by
//!   the caller, `admin.rs`, against the grants and the officials);
//! - a change is on disk (fsynced) before it takes effect; if it cannot be
//!   written, nothing changes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// organisation → official's IDNP → grant ids.
type Table = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The assignments of every organisation the portal serves.
pub struct Assignments {
    path: Option<PathBuf>,
    table: Mutex<Table>,
}

impl Assignments {
    /// Assignments kept in `path` (read now; a missing file is none yet).
    pub fn open(path: &Path) -> Result<Assignments, String> {
        let table = match std::fs::read_to_string(path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Table::new(),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        Ok(Assignments {
            path: Some(path.to_path_buf()),
            table: Mutex::new(table),
        })
    }

    /// Assignments held in memory only (tests).
    pub fn in_memory() -> Assignments {
        Assignments {
            path: None,
            table: Mutex::new(Table::new()),
        }
    }

    /// Whether the official `idnp` of `organisation` may use `grant`.
    pub fn allowed(&self, organisation: &str, idnp: &str, grant: &str) -> bool {
        self.lock()
            .get(organisation)
            .and_then(|officials| officials.get(idnp))
            .is_some_and(|grants| grants.contains(grant))
    }

    /// The grants of each official of `organisation`.
    pub fn of(&self, organisation: &str) -> BTreeMap<String, BTreeSet<String>> {
        self.lock().get(organisation).cloned().unwrap_or_default()
    }

    /// Replaces the assignments of `organisation`'s officials named in
    /// `officials` (others of the organisation keep theirs); durable before
    /// it takes effect.
    pub fn replace(
        &self,
        organisation: &str,
        officials: BTreeMap<String, BTreeSet<String>>,
    ) -> Result<(), String> {
        let mut table = self.lock();
        let mut next = table.clone();
        let entry = next.entry(organisation.to_owned()).or_default();
        for (idnp, grants) in officials {
            entry.insert(idnp, grants);
        }
        if let Some(path) = &self.path {
            let bytes = serde_json::to_vec_pretty(&next).map_err(|e| e.to_string())?;
            mconnect_sdk::adapter::write_atomic(path, &bytes)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        *table = next;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn set(grants: &[&str]) -> BTreeSet<String> {
        grants.iter().map(|g| g.to_string()).collect()
    }

    #[test]
    fn nothing_is_allowed_until_written_and_a_change_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("assignments.json");
        let a = Assignments::open(&path).unwrap();
        assert!(!a.allowed("apl-cahul", "2000000000015", "g1"));
        a.replace(
            "apl-cahul",
            BTreeMap::from([("2000000000015".to_string(), set(&["g1"]))]),
        )
        .unwrap();
        assert!(a.allowed("apl-cahul", "2000000000015", "g1"));
        assert!(!a.allowed("apl-cahul", "2000000000015", "g2"));
        assert!(
            !a.allowed("apl-balti", "2000000000015", "g1"),
            "per organisation"
        );
        let reopened = Assignments::open(&path).unwrap();
        assert!(reopened.allowed("apl-cahul", "2000000000015", "g1"));
        // Replacing one official leaves the others of the organisation.
        reopened
            .replace(
                "apl-cahul",
                BTreeMap::from([("2000000000048".to_string(), set(&["g2"]))]),
            )
            .unwrap();
        assert!(reopened.allowed("apl-cahul", "2000000000015", "g1"));
        assert!(reopened.allowed("apl-cahul", "2000000000048", "g2"));
    }

    #[test]
    fn a_change_that_cannot_be_written_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("assignments.json");
        let a = Assignments::open(&path).unwrap();
        let refused = a.replace(
            "apl-cahul",
            BTreeMap::from([("2000000000015".to_string(), set(&["g1"]))]),
        );
        assert!(refused.is_err());
        assert!(!a.allowed("apl-cahul", "2000000000015", "g1"));
        std::fs::write(dir.path().join("bad.json"), "{not json").unwrap();
        assert!(Assignments::open(&dir.path().join("bad.json")).is_err());
    }
}
