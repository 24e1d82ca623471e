//! The store suite (`suite.rs`) on the embedded redb store; the same suite
//! runs on PostgreSQL in `tests/store.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::suite::Place;
use super::{Backend, RedbStore, StateStore};

/// A redb file in a directory of its own.
struct RedbPlace {
    dir: tempfile::TempDir,
}

impl RedbPlace {
    fn new() -> RedbPlace {
        RedbPlace {
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl Place for RedbPlace {
    fn open(&self) -> Arc<dyn StateStore> {
        Arc::new(RedbStore::open(&self.dir.path().join("state.redb")).unwrap())
    }
}

mod on_redb {
    use super::RedbPlace;
    use crate::store::suite::Place;

    store_suite!(crate::store::suite, RedbPlace::new());
}

#[test]
fn open_picks_the_configured_backend() {
    let place = RedbPlace::new();
    let path = place.dir.path().join("nested/state.redb");
    let store = super::open(&Backend::Embedded(path.clone())).unwrap();
    store
        .put(super::Collection::Participants, "a", b"1")
        .unwrap();
    assert!(path.is_file());
}

#[test]
fn redb_refuses_a_second_open_of_the_same_file() {
    // One broker per embedded store: a second one on the same file fails at
    // start instead of sharing it.
    let place = RedbPlace::new();
    let _first = place.open();
    let path = place.dir.path().join("state.redb");
    let err = RedbStore::open(&path).err().unwrap();
    assert!(err.to_string().contains("cannot open state store"), "{err}");
}
