//! Staged registry changes: run a change against a scratch copy of the
//! registry, keep what it would write, and apply it later in one step.
//!
//! The admin API must not change anything before the change's audit record is
//! durable (a 503 `audit.unavailable` means nothing changed), yet it must know
//! whether the change is valid before it audits it as accepted. So a change
//! runs first on a scratch registry: the same methods, the same validation,
//! reading the same store, but writing into a recorder instead of the store
//! and publishing its snapshot only to the scratch. [`Registry::commit`] then
//! applies the recorded writes and the new snapshot — only if nothing changed
//! the registry since the change was staged, so a commit never overwrites a
//! change it did not see.
//!
//! Invariant: staging has no effect outside the scratch; committing is one
//! atomic store batch followed by one snapshot swap.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use super::{Registry, RegistryError, RegistrySnapshot};
use crate::store::{Collection, StateStore, StoreError, Write};

/// A validated change, not yet applied.
pub struct StagedChange<T> {
    base: Arc<RegistrySnapshot>,
    next: Arc<RegistrySnapshot>,
    writes: Vec<OwnedWrite>,
    value: T,
}

enum OwnedWrite {
    Put(Collection, String, Vec<u8>),
    Delete(Collection, String),
}

/// Reads from the real store, records writes instead of making them.
struct Recorder {
    store: Arc<dyn StateStore>,
    writes: Mutex<Vec<OwnedWrite>>,
}

impl StateStore for Recorder {
    fn get(&self, collection: Collection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(collection, key)
    }

    fn scan(&self, collection: Collection) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.store.scan(collection)
    }

    fn apply(&self, writes: &[Write<'_>]) -> Result<(), StoreError> {
        let mut recorded = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        for w in writes {
            recorded.push(match w {
                Write::Put(c, k, v) => OwnedWrite::Put(*c, (*k).to_string(), v.to_vec()),
                Write::Delete(c, k) => OwnedWrite::Delete(*c, (*k).to_string()),
            });
        }
        Ok(())
    }
}

impl Registry {
    /// Runs `change` on a scratch copy of the registry and returns what it
    /// would do, without doing it. Errors are the change's own (invalid
    /// document, unknown participant, certificate taken, ...).
    pub fn stage<T>(
        &self,
        change: impl FnOnce(&Registry) -> Result<T, RegistryError>,
    ) -> Result<StagedChange<T>, RegistryError> {
        let base = self.snapshot();
        let recorder = Arc::new(Recorder {
            store: self.store.clone(),
            writes: Mutex::new(Vec::new()),
        });
        let scratch = Registry {
            store: recorder.clone(),
            anchors: self.anchors.clone(),
            snapshot: ArcSwap::new(base.clone()),
            write_lock: Mutex::new(()),
            // The scratch follows nothing: it lives for one change.
            feed: None,
        };
        let value = change(&scratch)?;
        let next = scratch.snapshot();
        drop(scratch);
        let writes = std::mem::take(
            &mut *recorder
                .writes
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        Ok(StagedChange {
            base,
            next,
            writes,
            value,
        })
    }

    /// Applies a staged change: its writes in one atomic batch, then its
    /// snapshot. Refused (nothing applied) if the registry changed since the
    /// change was staged.
    pub fn commit<T>(&self, staged: StagedChange<T>) -> Result<T, RegistryError> {
        self.commit_with(staged, &[])
    }

    /// Like [`Registry::commit`], writing `also` in the same atomic batch:
    /// a connection request approved with the registration of its
    /// applicant is stored together with the participant, or neither is.
    pub fn commit_with<T>(
        &self,
        staged: StagedChange<T>,
        also: &[Write<'_>],
    ) -> Result<T, RegistryError> {
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&self.snapshot.load(), &staged.base) {
            return Err(RegistryError::Invalid(
                "the registry changed while this change waited for its audit record; send it again"
                    .to_string(),
            ));
        }
        let writes: Vec<Write<'_>> = staged
            .writes
            .iter()
            .map(|w| match w {
                OwnedWrite::Put(c, k, v) => Write::Put(*c, k, v),
                OwnedWrite::Delete(c, k) => Write::Delete(*c, k),
            })
            .chain(also.iter().map(|w| match w {
                Write::Put(c, k, v) => Write::Put(*c, k, v),
                Write::Delete(c, k) => Write::Delete(*c, k),
            }))
            .collect();
        if !writes.is_empty() {
            self.store.apply(&writes)?;
        }
        self.snapshot.store(staged.next);
        Ok(staged.value)
    }
}
