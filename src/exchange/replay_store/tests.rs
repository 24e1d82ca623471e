//! The embedded replay store over a real audit log in a temporary directory.

use std::sync::Arc;
use std::time::SystemTime;

use super::*;
use crate::audit::{AuditConfig, AuditRecord, TreeHeadSigner};

struct NoSigner;

impl TreeHeadSigner for NoSigner {
    fn keyid(&self) -> String {
        "test".to_string()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        Ok(crate::crypto::sha256(message).to_vec())
    }
}

fn open(dir: &std::path::Path) -> AuditLog {
    match AuditLog::open(AuditConfig::new(dir), Arc::new(NoSigner)) {
        Ok((log, _)) => log,
        Err(e) => panic!("open failed: {e}"),
    }
}

fn now() -> i64 {
    crate::exchange::unix_now()
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// An exchange record of `client` that used up `used`.
fn record(client: &str, used: &[&str]) -> AuditRecord {
    AuditRecord {
        request_id: used.first().map(|s| s.to_string()),
        consumer: Some(client.to_string()),
        replay_ids: ids(used),
        ..AuditRecord::management(
            "exchange",
            "asp-rsp/person-by-idnp",
            SystemTime::now(),
            std::time::Instant::now(),
        )
    }
}

/// Claims, appends the record and settles, as the exchange does.
async fn exchange(store: &EmbeddedReplayStore, log: &AuditLog, client: &str, used: &[&str]) {
    let used_ids = ids(used);
    assert_eq!(store.claim(client, &used_ids, now()), Ok(()));
    let seq = log.append(record(client, used)).await.unwrap_or(u64::MAX);
    store.settle(client, &used_ids, Settled::Recorded(seq), now());
}

#[tokio::test]
async fn an_id_is_used_once_per_client_and_a_refused_claim_uses_up_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = open(dir.path());
    let store = EmbeddedReplayStore::new(log.clone(), 100);
    exchange(&store, &log, "apl-cahul", &["r1", "nonce:n1"]).await;
    assert_eq!(
        store.claim("apl-cahul", &ids(&["r1"]), now()),
        Err(ReplayRefusal::Replayed)
    );
    assert_eq!(
        store.claim("apl-cahul", &ids(&["r2", "nonce:n1"]), now()),
        Err(ReplayRefusal::Replayed),
        "the nonce is a second single-use id"
    );
    // r2 was part of a refused claim: still free.
    assert_eq!(store.claim("apl-cahul", &ids(&["r2"]), now()), Ok(()));
    // Another client may use the same id.
    assert_eq!(store.claim("apl-orhei", &ids(&["r1"]), now()), Ok(()));
    // Once indexed (and a lookup has seen that), ids leave memory and are
    // found in the index.
    log.sync_index().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.claim("apl-cahul", &ids(&["r3"]), now()), Ok(()));
    assert_eq!(
        store.claim("apl-cahul", &ids(&["r1"]), now()),
        Err(ReplayRefusal::Replayed)
    );
    assert_eq!(
        store.held(),
        3,
        "r2, r3 and apl-orhei's r1 are still running"
    );
    // 24 hours later the id may be used again.
    assert_eq!(
        store.claim("apl-cahul", &ids(&["r1"]), now() + REPLAY_WINDOW_SECS + 1),
        Ok(())
    );
}

#[tokio::test]
async fn used_ids_survive_a_reopen_also_when_the_index_had_not_seen_them() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = open(dir.path());
    let store = EmbeddedReplayStore::new(log.clone(), 100);
    exchange(&store, &log, "apl-cahul", &["r1"]).await;
    drop(store);
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
    // Take the id out of the index, as a crash before the indexer's commit
    // would have: the index is behind and must catch up from the segments.
    std::fs::remove_file(dir.path().join("index.redb")).unwrap_or_else(|e| panic!("{e}"));
    let log = open(dir.path());
    let store = EmbeddedReplayStore::new(log.clone(), 100);
    log.sync_index().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.claim("apl-cahul", &ids(&["r1"]), now()),
        Err(ReplayRefusal::Replayed)
    );
    assert_eq!(store.claim("apl-cahul", &ids(&["r2"]), now()), Ok(()));
}

#[tokio::test]
async fn claims_wait_for_the_index_to_cover_the_log_as_opened() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = open(dir.path());
    log.append(record("apl-cahul", &["r1"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(dir.path().join("index.redb")).unwrap_or_else(|e| panic!("{e}"));
    let log = open(dir.path());
    let store = EmbeddedReplayStore::new(log.clone(), 100);
    // Whatever the indexer thread managed meanwhile, an answer is either a
    // refusal to answer or the truth; never a grant.
    match store.claim("apl-cahul", &ids(&["r1"]), now()) {
        Err(ReplayRefusal::Unavailable(_)) | Err(ReplayRefusal::Replayed) => {}
        Ok(()) => panic!("a used id was granted before the index caught up"),
    }
}

#[tokio::test]
async fn a_full_front_refuses_instead_of_forgetting() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = open(dir.path());
    let store = EmbeddedReplayStore::new(log.clone(), 2);
    assert_eq!(store.claim("c", &ids(&["a"]), now()), Ok(()));
    assert_eq!(store.claim("c", &ids(&["b"]), now()), Ok(()));
    // Both exchanges still running: nothing may be dropped.
    assert!(matches!(
        store.claim("c", &ids(&["x"]), now()),
        Err(ReplayRefusal::Unavailable(_))
    ));
    assert_eq!(store.held(), 2);
    // Recorded but not yet indexed: still held, still refusing.
    let seq = log
        .append(record("c", &["a"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store.settle("c", &ids(&["a"]), Settled::Recorded(seq), now());
    // An exchange that ended without a record keeps its id for 24 hours.
    store.settle("c", &ids(&["b"]), Settled::Unrecorded, now());
    assert_eq!(
        store.claim("c", &ids(&["b"]), now()),
        Err(ReplayRefusal::Replayed)
    );
    // Once the index covers "a" it leaves memory and makes room.
    log.sync_index().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.claim("c", &ids(&["x"]), now()), Ok(()));
    assert_eq!(store.held(), 2, "b (unrecorded) and x");
    // Full again: even a used id gets no answer but a refusal.
    assert!(store.claim("c", &ids(&["a"]), now()).is_err());
    // A day later the unrecorded id leaves memory too.
    let later = now() + REPLAY_WINDOW_SECS + 1;
    store.settle("c", &ids(&["x"]), Settled::Unrecorded, later);
    assert_eq!(store.claim("c", &ids(&["b"]), later), Ok(()));
}

#[tokio::test]
async fn concurrent_claims_of_one_id_grant_exactly_one() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = open(dir.path());
    let store = Arc::new(EmbeddedReplayStore::new(log.clone(), 100));
    let mut threads = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        threads.push(std::thread::spawn(move || {
            store.claim("c", &ids(&["same"]), now()).is_ok()
        }));
    }
    let granted = threads
        .into_iter()
        .map(|t| t.join().unwrap_or(false))
        .filter(|ok| *ok)
        .count();
    assert_eq!(granted, 1);
}

#[tokio::test]
async fn a_released_claim_frees_its_ids_and_only_a_pending_one_is_released() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = open(dir.path());
    let store = EmbeddedReplayStore::new(log.clone(), 100);
    let both = ids(&["r1", "nonce:1"]);
    assert_eq!(store.claim("apl-a", &both, now()), Ok(()));
    assert_eq!(
        store.claim("apl-a", &ids(&["r1"]), now()),
        Err(ReplayRefusal::Replayed)
    );
    // The cluster refused it: taken back, as if never claimed.
    store.release("apl-a", &both);
    assert_eq!(store.held(), 0);
    assert_eq!(store.claim("apl-a", &both, now()), Ok(()));
    // Once settled, a release changes nothing: the id stays used.
    store.settle("apl-a", &both, Settled::Unrecorded, now());
    store.release("apl-a", &both);
    assert_eq!(
        store.claim("apl-a", &ids(&["r1"]), now()),
        Err(ReplayRefusal::Replayed)
    );
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
}
