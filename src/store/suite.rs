//! What every [`StateStore`] must do, written once over `&dyn StateStore`
//! and run for each backend by `store_suite!`: for redb in `tests.rs`, for
//! PostgreSQL in `tests/store.rs`, which includes this file (its server is a
//! child process, and the library starts none).

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;

use crate::store::{Collection, MAX_KEY_BYTES, StateStore, Write};

/// Where one test keeps its state: each `open` opens that same state anew,
/// as a broker does after a restart.
pub trait Place {
    /// Opens the store.
    fn open(&self) -> Arc<dyn StateStore>;
}

/// One `#[test]` per case of this suite, for the [`Place`] that `$place`
/// builds afresh for each test. `$($suite)::+` is the path of this module
/// where the macro is used.
macro_rules! store_suite {
    ($($suite:ident)::+, $place:expr) => {
        #[test]
        fn an_empty_store_reads_nothing() {
            let place = $place;
            $($suite)::+::an_empty_store_reads_nothing(&*place.open());
        }

        #[test]
        fn documents_survive_reopen() {
            let place = $place;
            $($suite)::+::documents_survive_reopen(&place);
        }

        #[test]
        fn collections_are_separate() {
            let place = $place;
            $($suite)::+::collections_are_separate(&*place.open());
        }

        #[test]
        fn scan_is_ordered_by_key_bytes() {
            let place = $place;
            $($suite)::+::scan_is_ordered_by_key_bytes(&*place.open());
        }

        #[test]
        fn a_batch_applies_in_order() {
            let place = $place;
            $($suite)::+::a_batch_applies_in_order(&*place.open());
        }

        #[test]
        fn a_failing_batch_leaves_nothing() {
            let place = $place;
            $($suite)::+::a_failing_batch_leaves_nothing(&*place.open());
        }

        #[test]
        fn keys_either_backend_cannot_hold_are_refused() {
            let place = $place;
            $($suite)::+::keys_either_backend_cannot_hold_are_refused(&*place.open());
        }

        #[test]
        fn large_and_binary_documents_round_trip() {
            let place = $place;
            $($suite)::+::large_and_binary_documents_round_trip(&*place.open());
        }

        #[test]
        fn concurrent_writers_lose_nothing_and_readers_see_whole_batches() {
            let place = $place;
            $($suite)::+::concurrent_writers_lose_nothing_and_readers_see_whole_batches(place.open());
        }
    };
}

fn doc(store: &dyn StateStore, c: Collection, key: &str) -> Option<Vec<u8>> {
    store.get(c, key).unwrap()
}

fn keys(store: &dyn StateStore, c: Collection) -> Vec<String> {
    store.scan(c).unwrap().into_iter().map(|(k, _)| k).collect()
}

pub fn an_empty_store_reads_nothing(store: &dyn StateStore) {
    for c in Collection::ALL {
        assert_eq!(doc(store, c, "a"), None, "{c:?}");
        assert!(store.scan(c).unwrap().is_empty(), "{c:?}");
    }
    // Removing what is not there is fine, and so is an empty batch.
    store.delete(Collection::Grants, "absent").unwrap();
    store.apply(&[]).unwrap();
    assert!(store.scan(Collection::Grants).unwrap().is_empty());
}

pub fn documents_survive_reopen(place: &dyn Place) {
    {
        let store = place.open();
        store.put(Collection::Participants, "a", b"{}").unwrap();
        store
            .apply(&[
                Write::Put(Collection::Participants, "b", b"1"),
                Write::Delete(Collection::Participants, "a"),
                Write::Put(
                    Collection::ConnectionRequests,
                    "MC-2026-0001",
                    b"{\"state\":1}",
                ),
                Write::Put(Collection::Grants, "g", b"[]"),
            ])
            .unwrap();
    }
    let store = place.open();
    assert_eq!(
        store.scan(Collection::Participants).unwrap(),
        vec![("b".to_string(), b"1".to_vec())]
    );
    assert_eq!(
        doc(&*store, Collection::ConnectionRequests, "MC-2026-0001"),
        Some(b"{\"state\":1}".to_vec())
    );
    assert_eq!(doc(&*store, Collection::Grants, "g"), Some(b"[]".to_vec()));
    // And it takes writes again after the reopen.
    store.put(Collection::Participants, "c", b"2").unwrap();
    assert_eq!(keys(&*store, Collection::Participants), ["b", "c"]);
}

pub fn collections_are_separate(store: &dyn StateStore) {
    for (i, c) in Collection::ALL.into_iter().enumerate() {
        store.put(c, "same", i.to_string().as_bytes()).unwrap();
    }
    for (i, c) in Collection::ALL.into_iter().enumerate() {
        assert_eq!(doc(store, c, "same"), Some(i.to_string().into_bytes()));
    }
    store
        .delete(Collection::ConnectionRequests, "same")
        .unwrap();
    assert_eq!(doc(store, Collection::ConnectionRequests, "same"), None);
    assert_eq!(
        doc(store, Collection::Participants, "same"),
        Some(b"0".to_vec())
    );
    assert_eq!(doc(store, Collection::Grants, "same"), Some(b"2".to_vec()));
}

pub fn scan_is_ordered_by_key_bytes(store: &dyn StateStore) {
    // Mixed case, digits, punctuation, prefixes and multi-byte UTF-8: a
    // locale-aware collation would order several of these differently.
    let inserted = [
        "b", "a", "B", "a-1", "a1", "a/b", "Z", "é", "ü", "~", "0", "10", "9", "ab", "aa", "a b",
        "日本", "a", "_x", "A",
    ];
    for (i, k) in inserted.iter().enumerate() {
        store
            .put(Collection::Participants, k, i.to_string().as_bytes())
            .unwrap();
    }
    let mut expected: Vec<String> = inserted.iter().map(|k| k.to_string()).collect();
    expected.sort();
    expected.dedup();
    let scanned = store.scan(Collection::Participants).unwrap();
    assert_eq!(
        scanned.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        expected
    );
    // "a" was put twice: the later value is the one kept.
    assert_eq!(
        doc(store, Collection::Participants, "a"),
        Some(b"17".to_vec())
    );
}

pub fn a_batch_applies_in_order(store: &dyn StateStore) {
    store
        .put(Collection::Grants, "deleted-then-put", b"0")
        .unwrap();
    store
        .apply(&[
            Write::Put(Collection::Grants, "twice", b"1"),
            Write::Put(Collection::Grants, "twice", b"2"),
            Write::Put(Collection::Grants, "put-then-deleted", b"x"),
            Write::Delete(Collection::Grants, "put-then-deleted"),
            Write::Delete(Collection::Grants, "deleted-then-put"),
            Write::Put(Collection::Grants, "deleted-then-put", b"3"),
            Write::Delete(Collection::Grants, "never-there"),
        ])
        .unwrap();
    assert_eq!(
        store.scan(Collection::Grants).unwrap(),
        vec![
            ("deleted-then-put".to_string(), b"3".to_vec()),
            ("twice".to_string(), b"2".to_vec()),
        ]
    );
}

pub fn a_failing_batch_leaves_nothing(store: &dyn StateStore) {
    store.put(Collection::Participants, "kept", b"old").unwrap();
    store
        .put(Collection::ConnectionRequests, "existing", b"r")
        .unwrap();
    let too_long = "k".repeat(MAX_KEY_BYTES + 1);
    // Each batch fails at its last write, after the others were written
    // inside its transaction.
    for bad in ["", "nul\0key", too_long.as_str()] {
        let err = store
            .apply(&[
                Write::Put(Collection::Participants, "kept", b"new"),
                Write::Put(Collection::Participants, "added", b"1"),
                Write::Delete(Collection::ConnectionRequests, "existing"),
                Write::Put(Collection::Grants, "g", b"1"),
                Write::Put(Collection::Grants, bad, b"1"),
            ])
            .unwrap_err();
        assert!(err.to_string().contains("key"), "{err}");
        assert_eq!(
            store.scan(Collection::Participants).unwrap(),
            vec![("kept".to_string(), b"old".to_vec())],
            "{bad:?}"
        );
        assert_eq!(
            doc(store, Collection::ConnectionRequests, "existing"),
            Some(b"r".to_vec())
        );
        assert!(store.scan(Collection::Grants).unwrap().is_empty());
    }
    // The store takes the next batch as usual.
    store
        .apply(&[
            Write::Put(Collection::Participants, "kept", b"new"),
            Write::Delete(Collection::ConnectionRequests, "existing"),
        ])
        .unwrap();
    assert_eq!(
        doc(store, Collection::Participants, "kept"),
        Some(b"new".to_vec())
    );
    assert_eq!(doc(store, Collection::ConnectionRequests, "existing"), None);
}

pub fn keys_either_backend_cannot_hold_are_refused(store: &dyn StateStore) {
    let longest = "é".repeat(MAX_KEY_BYTES / 2);
    assert_eq!(longest.len(), MAX_KEY_BYTES);
    store.put(Collection::Participants, &longest, b"1").unwrap();
    assert_eq!(
        doc(store, Collection::Participants, &longest),
        Some(b"1".to_vec())
    );
    let too_long = format!("{longest}x");
    for bad in ["", "a\0b", too_long.as_str()] {
        assert!(
            store.put(Collection::Participants, bad, b"1").is_err(),
            "{bad:?}"
        );
        assert!(
            store.delete(Collection::Participants, bad).is_err(),
            "{bad:?}"
        );
        // A key that cannot be stored is never found.
        assert_eq!(doc(store, Collection::Participants, bad), None, "{bad:?}");
    }
    assert_eq!(keys(store, Collection::Participants), [longest]);
}

pub fn large_and_binary_documents_round_trip(store: &dyn StateStore) {
    // 16 MiB of every byte value (not UTF-8), from a fixed xorshift.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let large: Vec<u8> = (0..16 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    store
        .put(Collection::ConnectionRequests, "large", &large)
        .unwrap();
    store
        .put(Collection::ConnectionRequests, "empty", b"")
        .unwrap();
    let all_bytes: Vec<u8> = (0..=255).collect();
    store
        .put(Collection::ConnectionRequests, "bytes", &all_bytes)
        .unwrap();
    assert!(doc(store, Collection::ConnectionRequests, "large") == Some(large.clone()));
    assert_eq!(
        doc(store, Collection::ConnectionRequests, "empty"),
        Some(Vec::new())
    );
    assert_eq!(
        doc(store, Collection::ConnectionRequests, "bytes"),
        Some(all_bytes)
    );
    let scanned = store.scan(Collection::ConnectionRequests).unwrap();
    assert_eq!(scanned.len(), 3);
    assert!(scanned[2].0 == "large" && scanned[2].1 == large);
    // Replacing it with a small one leaves nothing of it.
    store
        .put(Collection::ConnectionRequests, "large", b"{}")
        .unwrap();
    assert_eq!(
        doc(store, Collection::ConnectionRequests, "large"),
        Some(b"{}".to_vec())
    );
}

pub fn concurrent_writers_lose_nothing_and_readers_see_whole_batches(store: Arc<dyn StateStore>) {
    const WRITERS: usize = 4;
    const BATCHES: usize = 40;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut scans = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || scans == 0 {
                // Each writer's pair is written by one batch: a scan sees
                // both halves with the same value, or neither.
                let docs: std::collections::HashMap<String, Vec<u8>> = store
                    .scan(Collection::Participants)
                    .unwrap()
                    .into_iter()
                    .collect();
                for w in 0..WRITERS {
                    assert_eq!(
                        docs.get(&format!("w{w}-left")),
                        docs.get(&format!("w{w}-right")),
                        "writer {w}: half a batch seen"
                    );
                }
                scans += 1;
            }
            scans
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..BATCHES {
                    let value = i.to_string();
                    let (left, right, own) = (
                        format!("w{w}-left"),
                        format!("w{w}-right"),
                        format!("w{w}-{i:03}"),
                    );
                    store
                        .apply(&[
                            Write::Put(Collection::Participants, &left, value.as_bytes()),
                            Write::Put(Collection::Grants, &own, value.as_bytes()),
                            Write::Put(Collection::Participants, &right, value.as_bytes()),
                        ])
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.join().unwrap() > 0);
    let last = (BATCHES - 1).to_string().into_bytes();
    for w in 0..WRITERS {
        assert_eq!(
            doc(&*store, Collection::Participants, &format!("w{w}-left")),
            Some(last.clone())
        );
    }
    assert_eq!(
        store.scan(Collection::Grants).unwrap().len(),
        WRITERS * BATCHES
    );
}
